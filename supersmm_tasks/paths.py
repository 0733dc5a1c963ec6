"""Where everything lives: one place that turns SUPERSMM_HOME and a run's name into paths.

No user string becomes a path without passing `validate_run_name`, `validate_dataset_name` or
`validate_sample_id`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

RUN_NAME_PATTERN = re.compile(r"[a-z0-9_]{1,40}")
SAMPLE_ID_PATTERN = re.compile(r"[a-z0-9_-]{1,40}")  # also PrIMuS's own ids, `000051650-1_1_1`


class InvalidName(ValueError):
    """A run or dataset name that could escape its folder or break a file name."""


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
    return Path(os.environ.get("SUPERSMM_HOME") or os.getcwd()).expanduser().resolve()


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


def run_dir(name: str) -> Path:
    return models_dir() / f"{validate_run_name(name)}_model"


def training_log_csv() -> Path:
    return logs_dir() / "training_log.csv"


def private_state_dir() -> Path:
    """Files of the embedded broker and other machinery that users do not need to read."""
    return home() / ".supersmm"
