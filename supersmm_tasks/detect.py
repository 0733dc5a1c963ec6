"""`supersmm detect`: find the corpora, validate every sample (every image decoded in full and within the
stated size limits, see corpus.py), and write what training needs.

For each usable dataset NAME it writes (never inside the corpus):
- `datasets/NAME.json`: the corpus folder, its image kind, counts, invalid samples and the split files;
- `datasets/NAME.index.tsv`: every usable sample with its folder, image size and usable encodings;
- `datasets/NAME.split/`: the frozen split (see splits.py), drawn only the first time;
- `scripts/train_NAME.sh` and `scripts/continue_NAME_training.sh`.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from filelock import FileLock

from . import paths, splits
from .corpus import (
    Corpus, IndexedSample, check_sample, find_corpora, image_limits, write_index,
)
from .durable import write_atomically
from .errors import SupersmmError

INVALID_SHOWN_PER_DATASET = 10
CHECKING_THREADS = 8


@dataclass
class DatasetReport:
    name: str
    path: Path
    samples: int  # sample folders seen
    valid: int  # good image, no broken label file, at least one good label
    invalid: list[dict]  # {"id", "reason"} of every other sample; some are still usable with one encoding
    camera: bool = False
    split_counts: dict[str, int] | None = None  # None: nothing written, the dataset cannot be trained on
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.split_counts is not None

    def to_json(self) -> dict:
        return {"name": self.name, "path": str(self.path), "samples": self.samples, "valid": self.valid,
                "invalid": self.invalid}


def detect(data_root: Path | None = None) -> list[DatasetReport]:
    """Detects every dataset under the data root; raises SupersmmError only when none can be trained on."""
    root = Path(data_root).expanduser().resolve() if data_root else paths.data_root()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise SupersmmError(f"data root {root} {problem}: put corpora there or pass --data-root DIR")
    image_limits()  # refuses bad SUPERSMM_IMAGE_LIMITS before any work
    corpora = find_corpora(root)
    if not corpora:
        raise SupersmmError(f"no corpus under {root}: expected sample folders <id>/ holding <id>.png and "
                            f"<id>.semantic (PrIMuS layout)")
    paths.datasets_dir().mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.detect_lock_path())):
        for corpus in corpora:  # a damaged frozen split stops detect before any dataset is rewritten
            splits.load_split(corpus.name)
        reports = [detect_corpus(corpus) for corpus in corpora]
    if not any(report.usable for report in reports):
        summary = "; ".join(f"{r.name}: {r.valid} of {r.samples} samples valid" +
                            (f" (first problem: {r.invalid[0]['reason']})" if r.invalid else "") for r in reports)
        raise SupersmmError(f"no usable dataset under {root}: {summary}")
    return reports


def detect_corpus(corpus: Corpus) -> DatasetReport:
    report = DatasetReport(corpus.name, corpus.path, len(corpus.sample_folders), 0, [], corpus.camera,
                           notes=list(corpus.notes))
    usable = _check_samples(corpus, report)
    usable_ids = {sample.id for sample in usable}
    frozen = splits.load_split(corpus.name)
    if frozen is None and len(usable) < splits.MIN_SAMPLES:
        report.notes.append("no sample folders (<id>/<id>.png) found here" if not corpus.sample_folders else
                            f"needs at least {splits.MIN_SAMPLES} usable samples for a train/val/test split, "
                            f"has {len(usable)}; nothing written")
        return report
    if frozen is not None and usable and not usable_ids & {i for ids in frozen.values() for i in ids}:
        report.notes.append(f"the frozen split {paths.dataset_split_dir(corpus.name)} holds none of these samples "
                            f"(it belongs to another corpus of this name); delete it to draw a new one")
        return report

    split, created = splits.freeze_split(corpus.name, sorted(usable_ids))
    if not created:
        _note_split_drift(report, split, usable_ids)
    config = json.dumps(_config(report, split), indent=2) + "\n"  # reads split.json: fails before any write
    # Written even when nothing is usable any more, so that training sees the corpus as it is now.
    write_index(paths.dataset_index_path(corpus.name), usable)
    write_atomically(paths.dataset_config_path(corpus.name), config.encode())
    write_scripts(corpus.name)
    if usable:
        report.split_counts = {name: len(usable_ids.intersection(ids)) for name, ids in split.items()}
    return report


def _check_samples(corpus: Corpus, report: DatasetReport) -> list[IndexedSample]:
    """Validates every sample; fills the report's counts and returns the usable samples (first of duplicates)."""
    first_seen: dict[str, str] = {}
    usable = []
    with ThreadPoolExecutor(CHECKING_THREADS) as pool:  # reading and decoding images release the GIL
        checked = list(pool.map(partial(check_sample, corpus), corpus.sample_folders))
    for sample in checked:
        if sample.id in first_seen:
            report.invalid.append({"id": sample.id, "reason": f"{sample.folder}: duplicate id, already found in "
                                                              f"{first_seen[sample.id]}; this copy is left out"})
            continue
        first_seen[sample.id] = sample.folder
        if sample.problems:
            report.invalid.append({"id": sample.id, "reason": "; ".join(sample.problems)})
        else:
            report.valid += 1
        if sample.encodings:
            usable.append(IndexedSample(sample.id, sample.folder, sample.width, sample.height, sample.encodings))
    return usable


def _note_split_drift(report: DatasetReport, split: dict[str, list[str]], usable_ids: set[str]) -> None:
    in_split = {sample_id for ids in split.values() for sample_id in ids}
    outside = len(usable_ids - in_split)
    gone = len(in_split - usable_ids)
    if outside:
        report.notes.append(f"{outside} usable samples are not in the frozen split and are left out "
                            f"(delete {paths.dataset_split_dir(report.name)} to draw a new split)")
    if gone:
        report.notes.append(f"{gone} samples of the frozen split are no longer usable and are left out")


def _config(report: DatasetReport, split: dict[str, list[str]]) -> dict:
    datasets = paths.datasets_dir()
    description = splits.split_description(report.name)
    return {
        "name": report.name,
        "path": str(report.path),
        "camera": report.camera,
        "images": "<id>_distorted.jpg" if report.camera else "<id>.png",
        "detected_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "samples": report.samples,
        "valid": report.valid,
        "invalid": report.invalid,
        "index": paths.dataset_index_path(report.name).relative_to(datasets).as_posix(),
        "split": {
            "source": description["source"],
            "seed": description["seed"],
            "files": {split_name: file.relative_to(datasets).as_posix()
                      for split_name, file in splits.split_files(report.name).items()},
            "counts": {name: len(ids) for name, ids in split.items()},  # as frozen; some may be unusable now
        },
    }


# ---------------------------------------------------------------- train / continue scripts

SCRIPT_PREAMBLE = """#!/bin/sh
# {purpose} (written by `supersmm detect`).
# Works from any directory: SUPERSMM_HOME is the folder above this script. Options are passed on to
# `supersmm train`, e.g. --max-total-epochs 100 --batch-size 16.
cd "$(dirname "$0")/.." || exit 1
SUPERSMM_HOME=$(pwd)
export SUPERSMM_HOME
"""


def train_script(name: str) -> str:
    return SCRIPT_PREAMBLE.format(purpose=f"Train (or continue) the run {name} on the dataset {name}") + \
        f"exec supersmm train {name} \"$@\"\n"


def continue_script(name: str) -> str:
    return SCRIPT_PREAMBLE.format(purpose=f"Continue the existing run {name}") + (
        f"if [ ! -f model/{name}_model/training_state.txt ]; then\n"
        f"    echo \"no run {name} to continue in $SUPERSMM_HOME: start it with scripts/train_{name}.sh\" >&2\n"
        f"    exit 1\n"
        f"fi\n"
        f"exec supersmm train {name} \"$@\"\n")


def script_paths(name: str) -> tuple[Path, Path]:
    folder = paths.scripts_dir()
    return folder / f"train_{name}.sh", folder / f"continue_{name}_training.sh"


def write_scripts(name: str) -> None:
    paths.validate_dataset_name(name)
    for path, text in zip(script_paths(name), (train_script(name), continue_script(name))):
        if not path.is_file() or path.read_text("utf-8") != text:
            write_atomically(path, text.encode())
        path.chmod(0o755)


# ---------------------------------------------------------------- the table `supersmm detect` prints


def format_table(reports: list[DatasetReport]) -> str:
    header = ("dataset", "images", "samples", "valid", "invalid", "train/val/test", "path")
    rows = [header] + [(
        r.name,
        ("jpg" if r.camera else "png") if r.samples else "-",
        str(r.samples),
        str(r.valid),
        str(len(r.invalid)),
        "/".join(str(r.split_counts[s]) for s in splits.SPLITS) if r.usable else "not usable",
        str(r.path),
    ) for r in reports]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    for report in reports:
        lines += _details(report)
    lines.append(f"images accepted: {image_limits().describe()}")
    return "\n".join(lines)


def _details(report: DatasetReport) -> list[str]:
    lines = [f"{report.name}: {note}" for note in report.notes]
    for entry in report.invalid[:INVALID_SHOWN_PER_DATASET]:
        lines.append(f"{report.name}: invalid {entry['id']}: {entry['reason']}")
    hidden = len(report.invalid) - INVALID_SHOWN_PER_DATASET
    if hidden > 0:
        lines.append(f"{report.name}: ... and {hidden} more invalid samples (see `supersmm detect --json`)")
    if report.usable:
        train, resume = script_paths(report.name)
        lines.append(f"{report.name}: train with {train}, continue with {resume}")
    return lines
