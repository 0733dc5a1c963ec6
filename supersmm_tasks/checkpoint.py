"""Saving, verifying and loading checkpoints.

A checkpoint is one plain `.npz` file, `checkpoints/epoch_000012.npz`, holding
- `model/0000`...: every model variable in `model.variables` order (weights, batch-norm moving
  statistics and the dropout / LSTM seed-generator states, so a resumed run draws the same masks),
- `optimizer/0000`...: every optimizer variable (iteration counter, Adam moments),
- `meta`: JSON with the epoch, the counters, the metrics and the epoch's CSV row,
- `sha256`: a checksum over all of the above, so a truncated or damaged file is never loaded.

Checkpoints are written with durable.write_atomically, so a reader sees the old file or the complete new
one. This module needs NumPy only, so the CLI can read checkpoint metadata without TensorFlow.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .durable import write_atomically
from .errors import SupersmmError

CHECKPOINT_NAME = re.compile(r"epoch_(\d{6})\.npz")


class CorruptCheckpoint(Exception):
    """A checkpoint file that is truncated, damaged or does not match its checksum."""


@dataclass
class Checkpoint:
    path: Path
    epoch: int
    meta: dict
    model_arrays: list[np.ndarray]
    optimizer_arrays: list[np.ndarray]


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:06d}.npz"


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def save_checkpoint(folder: Path, epoch: int, model_arrays, optimizer_arrays, meta: dict) -> Path:
    """Write epoch `epoch`'s checkpoint durably and return its path."""
    arrays = {f"model/{i:04d}": np.asarray(a) for i, a in enumerate(model_arrays)}
    arrays.update({f"optimizer/{i:04d}": np.asarray(a) for i, a in enumerate(optimizer_arrays)})
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "epoch": epoch}).encode(), dtype=np.uint8)
    arrays["sha256"] = np.frombuffer(_checksum(arrays).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, epoch)
    write_atomically(path, buffer.getbuffer())
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify a checkpoint; raises CorruptCheckpoint if it is damaged in any way (or gone), and
    SupersmmError if it cannot be read (a disk or network error: the file may well be whole)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{path}: gone") from None
    except OSError as error:  # never taken for damage: a damaged checkpoint is deleted
        raise SupersmmError(f"cannot read checkpoint {path}: {error.strerror or error}; nothing was deleted, "
                            "continue the run once the file can be read") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except MemoryError:
        raise
    except Exception as error:  # a damaged zip fails in many ways (BadZipFile, EOFError, ValueError, ...)
        raise CorruptCheckpoint(f"{path}: {type(error).__name__}: {error}") from None
    expected = arrays.pop("sha256", np.zeros(0, np.uint8)).tobytes().decode(errors="replace")
    if "meta" not in arrays or _checksum(arrays) != expected:
        raise CorruptCheckpoint(f"{path}: checksum mismatch")
    meta = json.loads(arrays.pop("meta").tobytes())
    return Checkpoint(
        path=Path(path),
        epoch=int(meta["epoch"]),
        meta=meta,
        model_arrays=[arrays[k] for k in sorted(arrays) if k.startswith("model/")],
        optimizer_arrays=[arrays[k] for k in sorted(arrays) if k.startswith("optimizer/")],
    )


def restore_variables(variables, arrays, path: Path) -> None:
    """Assign stored arrays to variables (model or optimizer), refusing any mismatch in count or shape."""
    if len(variables) != len(arrays):
        raise SupersmmError(f"checkpoint {path} holds {len(arrays)} arrays, the model has {len(variables)} variables")
    for variable, value in zip(variables, arrays):
        if tuple(variable.shape) != value.shape:
            raise SupersmmError(f"checkpoint {path}: {variable.path} has shape {value.shape}, "
                                f"the model expects {tuple(variable.shape)}")
    for variable, value in zip(variables, arrays):
        variable.assign(value)


def checkpoint_epochs(folder: Path) -> list[int]:
    """Epochs that have a checkpoint file in `folder`, oldest first (not yet verified)."""
    if not folder.is_dir():
        return []
    found = (CHECKPOINT_NAME.fullmatch(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def latest_valid_checkpoint(folder: Path, on_corrupt=None) -> Checkpoint | None:
    """The newest checkpoint that verifies; on_corrupt(path, reason) hears of each damaged newer one."""
    for epoch in reversed(checkpoint_epochs(folder)):
        path = checkpoint_path(folder, epoch)
        try:
            return load_checkpoint(path)
        except CorruptCheckpoint as error:
            if on_corrupt is not None:
                on_corrupt(path, str(error))
    return None


def prune_checkpoints(folder: Path, keep_last: int, keep_epochs=()) -> None:
    """Delete all checkpoints but the newest `keep_last` and those of `keep_epochs` (the best one)."""
    epochs = checkpoint_epochs(folder)
    keep = set(epochs[-keep_last:]) | {e for e in keep_epochs if e}
    for epoch in epochs:
        if epoch not in keep:
            checkpoint_path(folder, epoch).unlink(missing_ok=True)
