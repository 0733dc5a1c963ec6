"""Where everything lives: one place that turns SUPERSMM_HOME and a run's name into paths.

No user string becomes a path without passing `validate_run_name`, `validate_dataset_name` or
`validate_sample_id`.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from .errors import SupersmmError

HOME_VARIABLE = "SUPERSMM_HOME"
RUN_NAME_PATTERN = re.compile(r"[a-z0-9_]{1,40}")
SAMPLE_ID_PATTERN = re.compile(r"[a-z0-9_-]{1,40}")  # also PrIMuS's own ids, `000051650-1_1_1`


class InvalidName(SupersmmError, ValueError):
    """A run or dataset name that could escape its folder or break a file name: one line for the user."""


def validate_run_name(name: str) -> str:
    if not isinstance(name, str) or not RUN_NAME_PATTERN.fullmatch(name):
        raise InvalidName(f"invalid run name {name!r}: use 1-40 characters of a-z, 0-9 and _")
    return name


def validate_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not RUN_NAME_PATTERN.fullmatch(name):
        raise InvalidName(f"invalid dataset name {name!r}: use 1-40 characters of a-z, 0-9 and _")
    return name


def validate_sample_id(sample: str) -> str:
    """The id of a given incipit, which names its folder and files in a corpus."""
    if not isinstance(sample, str) or not SAMPLE_ID_PATTERN.fullmatch(sample):
        raise InvalidName(f"invalid incipit id {sample!r}: use 1-40 characters of a-z, 0-9, _ and -")
    return sample


def home() -> Path:
    """SUPERSMM_HOME, else the current folder."""
    folder = os.environ.get(HOME_VARIABLE)
    if folder and os.path.isabs(folder):
        return _resolved(folder, "")
    try:
        current = os.getcwd()
    except FileNotFoundError:
        raise SupersmmError(f"the current folder no longer exists: go to another or set {HOME_VARIABLE}") from None
    return _resolved(folder or current, current)


@functools.lru_cache(maxsize=16)
def _resolved(folder: str, relative_to: str) -> Path:
    """`folder` made absolute, `~` expanded, links followed; remembered, as every path of a chunk starts here."""
    return (Path(relative_to) / Path(folder).expanduser()).resolve()


def data_root() -> Path:
    configured = os.environ.get("SUPERSMM_DATA_ROOT")
    return Path(configured).expanduser().resolve() if configured else home() / "data"


def models_dir() -> Path:
    return home() / "model"


def logs_dir() -> Path:
    return home() / "logs"


def scripts_dir() -> Path:
    return home() / "scripts"


def datasets_dir() -> Path:
    """Per-dataset configs and frozen splits written by `supersmm detect` (never inside a corpus)."""
    return home() / "datasets"


def dataset_config_path(name: str) -> Path:
    return datasets_dir() / f"{validate_dataset_name(name)}.json"


def dataset_index_path(name: str) -> Path:
    """Every usable sample of the dataset with its folder, image size and encodings (detect.py)."""
    return datasets_dir() / f"{validate_dataset_name(name)}.index.tsv"


def dataset_split_dir(name: str) -> Path:
    """The dataset's split, drawn once and frozen (splits.py)."""
    return datasets_dir() / f"{validate_dataset_name(name)}.split"


def detect_lock_path() -> Path:
    return datasets_dir() / ".detect.lock"


def run_dir(name: str) -> Path:
    return models_dir() / f"{validate_run_name(name)}_model"


def run_names() -> list[str]:
    """Every run that has a folder under model/ (NAME_model, NAME a valid run name), sorted."""
    try:
        folders = list(models_dir().iterdir())
    except FileNotFoundError:
        return []
    names = (folder.name.removesuffix("_model") for folder in folders
             if folder.is_dir() and folder.name.endswith("_model"))
    return sorted(name for name in names if RUN_NAME_PATTERN.fullmatch(name))


# --- one run's files, all under run_dir(name) (the contract's table) ---------------------------------

def state_path(name: str) -> Path:
    return run_dir(name) / "training_state.txt"


def config_path(name: str) -> Path:
    return run_dir(name) / "config.json"


def checkpoints_dir(name: str) -> Path:
    return run_dir(name) / "checkpoints"


def init_checkpoint_path(name: str) -> Path:
    """A fine-tuned run's copy of the checkpoint it starts from (its source prunes its own as it trains on)."""
    return run_dir(name) / "init_checkpoint.npz"


def best_model_path(name: str) -> Path:
    """The Keras file of the run's best model, written next to its checkpoints."""
    return checkpoints_dir(name) / "best.keras"


def backups_dir(name: str) -> Path:
    return run_dir(name) / "backups"


def log_path(name: str) -> Path:
    """The run's human-readable log."""
    return run_dir(name) / "logs" / "training_output.log"


def tensorboard_dir(name: str) -> Path:
    return run_dir(name) / "tensorboard"


def training_log_csv() -> Path:
    return logs_dir() / "training_log.csv"


def foreground_worker_log(name: str) -> Path:
    """The log of the worker that `supersmm train NAME` starts beside it."""
    return private_state_dir() / "logs" / f"train_{validate_run_name(name)}_worker.log"


def private_state_dir() -> Path:
    """Files of the embedded broker and other machinery that users do not need to read."""
    return home() / ".supersmm"
