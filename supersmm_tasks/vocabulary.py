"""The PrIMuS token vocabularies that ship with the package.

A token's index is its 0-based line number; the CTC blank is `len(vocabulary)`.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

ENCODINGS = ("semantic", "agnostic")


@lru_cache(maxsize=None)
def load_vocabulary(encoding: str) -> tuple[str, ...]:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    text = resources.files(__package__).joinpath("vocabularies").joinpath(f"{encoding}.txt").read_text("utf-8")
    return tuple(line for line in text.splitlines() if line)


@lru_cache(maxsize=None)
def token_index(encoding: str) -> dict[str, int]:
    return {token: i for i, token in enumerate(load_vocabulary(encoding))}


def blank_index(encoding: str) -> int:
    return len(load_vocabulary(encoding))


def encode(tokens: list[str], encoding: str) -> list[int]:
    """Token strings to indices; raises KeyError naming the first unknown token."""
    index = token_index(encoding)
    try:
        return [index[t] for t in tokens]
    except KeyError as missing:
        raise KeyError(f"unknown {encoding} token {missing.args[0]!r}") from None


@lru_cache(maxsize=None)
def published_split() -> tuple[frozenset[str], frozenset[str]]:
    """The published PrIMuS fold (train ids, test ids) of the reference implementation."""
    folder = resources.files(__package__).joinpath("vocabularies")
    train = frozenset(folder.joinpath("primus_train.txt").read_text("utf-8").split())
    test = frozenset(folder.joinpath("primus_test.txt").read_text("utf-8").split())
    return train, test
