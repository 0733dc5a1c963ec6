"""The frozen train / val / test split of a dataset.

A dataset's split is drawn once, the first time `supersmm detect` finds it usable, and written to
`datasets/<name>.split/{train,val,test}.txt` (one id per line) plus `split.json` (how it was drawn). After that it
never moves: every run and every resume reads the same files, and detecting again never rewrites them.
Samples that become valid later are not added (a run's epoch must not change under it); detect reports how many
valid samples lie outside the split. Delete the `.split` folder to draw a new split for all of them.

How it is drawn:
- when every id belongs to the published PrIMuS fold (`vocabulary.published_split()`), test is the published test
  ids and train the published training ids (Camera-PrIMuS uses the same ids);
- otherwise a seeded 10% of the ids is the test split;
- validation is a seeded 10% of the training ids; every split gets at least one sample.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from . import durable, paths
from .errors import SupersmmError
from .vocabulary import published_split

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0
TEST_FRACTION = 0.1
VAL_FRACTION = 0.1
MIN_SAMPLES = len(SPLITS)


def split_files(name: str) -> dict[str, Path]:
    return {split: paths.dataset_split_dir(name) / f"{split}.txt" for split in SPLITS}


def load_split(name: str) -> dict[str, list[str]] | None:
    """The frozen split of dataset `name`, or None if none was drawn yet.

    A split folder with a file missing or damaged (split.json included) is one clear error that says what to do.
    """
    folder = paths.dataset_split_dir(name)
    if not folder.is_dir():
        return None
    files = split_files(name)
    split = {split_name: read_ids(file) for split_name, file in files.items()}
    description = split_description(name)  # checked here too: detect finds a damaged split before writing anything
    for split_name, file in files.items():
        recorded = description.get(split_name)  # the number of ids written (absent in hand-made ones)
        if isinstance(recorded, int) and recorded != len(split[split_name]):
            raise _damaged(folder, file, ValueError(f"{len(split[split_name])} ids where split.json counts {recorded}"))
    return split


def read_ids(file: Path) -> list[str]:
    """The ids of one split file (`<split>.txt` in the split folder): one per line, blank lines skipped."""
    try:
        text = file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _damaged(file.parent, file, error) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_description(name: str) -> dict:
    """How the frozen split was drawn (split.json): at least `source` and `seed`."""
    folder = paths.dataset_split_dir(name)
    file = folder / "split.json"
    try:
        description = json.loads(file.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise _damaged(folder, file, error) from None
    if not isinstance(description, dict) or not {"source", "seed"} <= description.keys():
        raise _damaged(folder, file, ValueError("not a JSON object with 'source' and 'seed'"))
    return description


def _damaged(folder: Path, file: Path, error: Exception) -> SupersmmError:
    if isinstance(error, OSError):
        problem = error.strerror or str(error)
    elif isinstance(error, UnicodeDecodeError):
        problem = "not UTF-8"
    else:
        problem = f"not valid ({error})"
    return SupersmmError(f"frozen split {folder} is incomplete or damaged ({file.name}: {problem}); restore it, "
                         f"or delete {folder} to draw a new split")


def freeze_split(name: str, ids: list[str], seed: int = SPLIT_SEED) -> tuple[dict[str, list[str]], bool]:
    """The dataset's split: the frozen one if it exists, else a new one drawn from `ids` and written.

    Returns (split, created). Needs at least MIN_SAMPLES ids to draw a new one.
    """
    existing = load_split(name)
    if existing is not None:
        return existing, False
    split, source = draw_split(ids, seed)
    _write_split(name, split, {"source": source, "seed": seed, **{s: len(split[s]) for s in SPLITS}})
    return split, True


def draw_split(ids: list[str], seed: int) -> tuple[dict[str, list[str]], str]:
    if len(ids) < MIN_SAMPLES:
        raise ValueError(f"a split needs at least {MIN_SAMPLES} samples, got {len(ids)}")
    published_train, published_test = published_split()
    test = sorted(set(ids) & published_test)
    training = sorted(set(ids) & published_train)
    if len(test) + len(training) == len(ids) and test and len(training) >= 2:
        source = "published PrIMuS fold"
    else:
        test, training = _seeded_part(ids, TEST_FRACTION, seed)
        source = f"seeded {TEST_FRACTION:.0%} test"
    val, train = _seeded_part(training, VAL_FRACTION, seed)
    return {"train": train, "val": val, "test": test}, source


def _seeded_part(ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(part, rest): a seeded `fraction` of `ids` (at least one, leaving at least one), both sorted."""
    shuffled = sorted(ids)
    random.Random(seed).shuffle(shuffled)
    size = min(max(1, round(len(ids) * fraction)), len(ids) - 1)
    return sorted(shuffled[:size]), sorted(shuffled[size:])


def _write_split(name: str, split: dict[str, list[str]], description: dict) -> None:
    """Writes the split's folder whole or not at all (durable.write_folder_atomically): a full disk is one clear
    error naming the folder. Folders left by processes killed while writing are removed first."""
    final = paths.dataset_split_dir(name)
    durable.remove_abandoned_folders(final.parent)
    files = {f"{split_name}.txt": "".join(f"{i}\n" for i in ids).encode() for split_name, ids in split.items()}
    files["split.json"] = (json.dumps(description, indent=2) + "\n").encode()
    try:
        durable.write_folder_atomically(final, files)
    except durable.DiskFull:
        raise SupersmmError(f"disk full while writing the frozen split {final}: free some space and try "
                            f"again; nothing was written") from None
    except OSError as error:
        raise SupersmmError(f"cannot write the frozen split {final} ({error.strerror or error}: "
                            f"{error.filename or final})") from None
