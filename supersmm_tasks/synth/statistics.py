"""How a corpus of semantic labels is distributed, to compare synthetic incipits with real PrIMuS ones.

Each distribution maps a value to its share (shares sum to 1):

    token family    the part of each token before `-` (note, rest, barline, clef, keySignature, tie, ...)
    note duration   the duration of each note (`quarter`, `eighth`, ...), dots and fermata left off
    dots            0, 1 or 2, for each note and rest
    clef / key / meter   one value per incipit; `none` where the incipit has no such token
                    (PrIMuS writes C major with no keySignature token)

`barred_in_breves` tells an incipit whose measures are twice its meter's length (early music in C/).

`total_variation` is half the L1 distance of two distributions (0 = the same, 1 = disjoint), and
`distinct_per_100` the number of different tokens that 100 incipits of a corpus hold (averaged over
seeded draws), the measure of vocabulary spread that the issue compares.
"""
from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path

from .notation import dotted_length, meter_length, parse_note, parse_rest

NONE = "none"
FAMILIES = ("token family", "note duration", "dots", "clef", "key", "meter")


def read_semantic_labels(folder: Path) -> list[list[str]]:
    """The semantic label of every `<id>/<id>.semantic` under `folder`, in id order."""
    return [path.read_text(encoding="utf-8").split() for path in sorted(Path(folder).glob("*/*.semantic"))]


def distributions(incipits: list[list[str]]) -> dict[str, dict[str, float]]:
    """The six distributions of FAMILIES over a list of semantic label sequences."""
    families, durations, dots = Counter(), Counter(), Counter()
    clefs, keys, meters = Counter(), Counter(), Counter()
    for tokens in incipits:
        families.update(token.split("-", 1)[0] for token in tokens)
        for token in tokens:
            note, rest = parse_note(token), parse_rest(token)
            if note is not None and not note.grace:
                durations[note.duration] += 1
            if note is not None or rest is not None:
                dots[str((note or rest).dots)] += 1
        clefs[_heading_value(tokens, "clef")] += 1
        keys[_heading_value(tokens, "keySignature")] += 1
        meters[_heading_value(tokens, "timeSignature")] += 1
    counts = (families, durations, dots, clefs, keys, meters)
    return {name: _shares(counter) for name, counter in zip(FAMILIES, counts)}


def barred_in_breves(tokens: list[str]) -> bool:
    """Whether a measure of the incipit that ends with a barline is twice its meter's length or longer."""
    meter = _heading_value(tokens, "timeSignature")
    if meter == NONE:
        return False
    length, longest = 0, 0
    for token in tokens:
        symbol = parse_note(token) or parse_rest(token)
        if token == "barline":
            length, longest = 0, max(longest, length)
        elif symbol is not None and not getattr(symbol, "grace", False):
            length += dotted_length(symbol.duration, symbol.dots)
    return longest >= 2 * meter_length(meter)


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    return 0.5 * sum(abs(p.get(value, 0.0) - q.get(value, 0.0)) for value in set(p) | set(q))


def distances(ours: list[list[str]], real: list[list[str]]) -> dict[str, float]:
    """Total variation distance between the two corpora for each distribution of FAMILIES."""
    mine, theirs = distributions(ours), distributions(real)
    return {name: total_variation(mine[name], theirs[name]) for name in FAMILIES}


def distinct_per_100(incipits: list[list[str]], draws: int = 50, seed: int = 0) -> float:
    """Different tokens in 100 incipits drawn without replacement, averaged over `draws` seeded draws."""
    if len(incipits) < 100:
        raise ValueError(f"distinct tokens per 100 incipits needs at least 100 incipits, got {len(incipits)}")
    rng = random.Random(seed)
    total = sum(len({token for tokens in rng.sample(incipits, 100) for token in tokens}) for _ in range(draws))
    return total / draws


def _heading_value(tokens: list[str], family: str) -> str:
    """The heading's clef, key or meter (a change inside the music is not the incipit's)."""
    heading = itertools.takewhile(lambda token: token.startswith(("clef-", "keySignature-", "timeSignature-")), tokens)
    return next((token.split("-", 1)[1] for token in heading if token.startswith(family + "-")), NONE)


def _shares(counter: Counter) -> dict[str, float]:
    total = sum(counter.values())
    return {value: count / total for value, count in counter.items()} if total else {}
