"""A run's `training_state.txt`, its human-readable log and their rotating backups.

Every state and log write of a run goes through here. The state file is `key: value` lines, written
atomically. A missing or unreadable state file is rebuilt from the run's config, its newest verified
checkpoint (the epoch, the best epoch) and the newest readable backup in `backups/`, which holds what no
checkpoint says: the run's status and who set it (STATUS_FIELDS; completed, paused, cancelled or failed stay
so). A version of the state is therefore copied into `backups/`, where the last few rotate, when those fields
differ from the newest backup's: the backups are the run's last status changes, not its last epochs.
Only whoever changes the run writes the rebuilt state; readers (`supersmm status`, the dashboard) see it
without writing. The state's best epoch also decides which checkpoint serves the run (best, else newest).
Where each file lies is paths.py's.
"""
from __future__ import annotations

import math
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

from . import paths, run_config, run_status  # run_config imports this module too: its names are looked up at call time
from .durable import DiskFull, is_disk_full, write_atomically
from .errors import SupersmmError

FIELD_ORDER = (
    "run", "dataset", "status", "last_completed_epoch", "max_total_epochs", "max_epochs_per_run",
    "checkpoint", "best_epoch", "best_val_ser", "stop_reason", "worker", "chunk", "error", "updated_at",
)
REQUIRED_FIELDS = ("run", "dataset", "status", "last_completed_epoch", "max_total_epochs", "max_epochs_per_run")
INT_FIELDS = ("last_completed_epoch", "max_total_epochs", "max_epochs_per_run", "best_epoch", "chunk")
FLOAT_FIELDS = ("best_val_ser",)
STATUS_FIELDS = ("status", "stop_reason", "worker", "chunk", "error")  # what a rebuild takes from the newest backup
STATE_BACKUPS_KEPT = 5
LOG_BACKUPS_KEPT = 3


class UnreadableState(ValueError):
    pass


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def best_checkpoint_candidates(name: str) -> list[Path]:
    """The run's checkpoint files in the order to use them: the best by val SER, then newest first.

    The one rule of "best checkpoint, else newest" (evaluation, prediction, export and the dashboard).
    """
    from .checkpoint import checkpoint_epochs, checkpoint_path  # NumPy: not for enqueue

    folder = paths.checkpoints_dir(name)
    best_epoch = peek_state(name).get("best_epoch")
    newest_first = [epoch for epoch in reversed(checkpoint_epochs(folder)) if epoch != best_epoch]
    return [checkpoint_path(folder, epoch) for epoch in ([best_epoch] if best_epoch else []) + newest_first]


def best_checkpoint(name: str):
    """The first of `best_checkpoint_candidates` that exists and verifies, loaded; None when none does."""
    from .checkpoint import CorruptCheckpoint, load_checkpoint  # NumPy: not for enqueue

    for path in best_checkpoint_candidates(name):
        try:
            return load_checkpoint(path)
        except CorruptCheckpoint:
            continue
    return None


def list_runs() -> list[str]:
    """Names of the runs that exist: run folders holding a config.json."""
    return [name for name in paths.run_names() if paths.config_path(name).is_file()]


def parse_state(text: str) -> dict:
    state = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, separator, value = line.partition(":")
        if not separator:
            raise UnreadableState(f"line {number} is not 'key: value'")
        state[key.strip()] = value.strip()
    missing = [key for key in REQUIRED_FIELDS if key not in state]
    if missing:
        raise UnreadableState(f"missing {', '.join(missing)}")
    try:
        state["status"] = run_status.RunStatus(state["status"])
    except ValueError:
        raise UnreadableState(f"unknown status {state['status']!r}") from None
    try:
        for key in INT_FIELDS:
            state[key] = int(state[key]) if state.get(key) not in (None, "") else None
        for key in FLOAT_FIELDS:
            state[key] = float(state[key]) if state.get(key) not in (None, "") else None
            if state[key] is not None and not math.isfinite(state[key]):
                raise UnreadableState(f"{key} is {state[key]}")
    except ValueError as error:
        raise UnreadableState(str(error)) from None
    return state


def format_state(state: dict) -> str:
    keys = [k for k in FIELD_ORDER if k in state] + sorted(k for k in state if k not in FIELD_ORDER)
    lines = []
    for key in keys:
        value = "" if state[key] is None else str(state[key])
        lines.append(f"{key}: {' '.join(value.split())}")  # one line per key, whatever the value held
    return "\n".join(lines) + "\n"


def read_state(name: str, repair: bool = True) -> dict:
    """The run's state; rebuilt if the file is missing or unreadable, and then rewritten unless `repair` is
    False (readers that must not write: a rebuild belongs to whoever changes the run)."""
    state, problem = _read_or_rebuild(name)
    if problem and repair:
        write_atomically(paths.state_path(name), format_state(state).encode())
        _log_rebuild(name, state, problem)
    return state


def _read_or_rebuild(name: str) -> tuple[dict, str | None]:
    """(the run's state, None), or (the state rebuilt from its files, why the file could not serve)."""
    path = paths.state_path(name)
    try:
        return parse_state(path.read_text("utf-8")), None
    except (OSError, UnicodeDecodeError, UnreadableState) as problem:
        reason = "missing" if isinstance(problem, FileNotFoundError) else f"unreadable ({problem})"
    return rebuild_state(name), reason


def _log_rebuild(name: str, rebuilt: dict, reason: str) -> None:
    if reason != "missing" or rebuilt["last_completed_epoch"]:
        append_log(name, f"state file {paths.state_path(name)} was {reason}; rebuilt from checkpoints: "
                         f"epoch {rebuilt['last_completed_epoch']}, status {rebuilt['status']}")


def peek_state(name: str) -> dict:
    """The state as the run's files say, never written; {} when the run has no readable config either
    (for the dashboard and evaluation)."""
    try:
        return read_state(name, repair=False)
    except SupersmmError:
        return {}


def write_state(name: str, change=None, **fields) -> dict:
    """Merge `fields` into the state, stamp updated_at and write it atomically; back it up when its status fields
    differ from the newest backup's (also when that backup is missing or unreadable, or a crash cut the last one).

    `change(state)`, when given, is called on the state as read under the lock and returns more fields to
    merge, or raises to write nothing: run_status.transition checks its move there, so that no other write
    comes between the status it checked and the one it writes. The read and the write hold the run's state
    lock: a worker recording an epoch and a user changing the run's budget at the same moment each keep the
    fields they wrote. A state file that is missing or unreadable is rebuilt and written with the fields, never
    before `change` has passed."""
    paths.state_path(name).parent.mkdir(parents=True, exist_ok=True)
    with state_lock(name):
        stored, problem = _read_or_rebuild(name)
        if change is not None:
            fields = {**fields, **change(stored)}
        state = {**stored, **fields, "updated_at": now_iso()}
        written = format_state(state)
        write_atomically(paths.state_path(name), written.encode())
        if problem:
            _log_rebuild(name, stored, problem)
        if _status_of(parse_state(written)) != _status_of(_read_backup(name, 1)):
            _rotate(paths.backups_dir(name), "training_state", ".txt", STATE_BACKUPS_KEPT, source=paths.state_path(name))
    return state


def state_lock(name: str) -> FileLock:
    """The lock every state write holds from its read to its write (`with state_lock(name): ...`). It is not
    re-entrant: nothing inside may write the state."""
    return FileLock(str(paths.state_path(name)) + ".lock", timeout=120)


def rebuild_state(name: str) -> dict:
    """A state from what survives: config.json, the newest verified checkpoint, the newest backup."""
    config = run_config.stored_config(name)
    state = {
        "run": name, "dataset": config["dataset"], "status": run_status.RunStatus.QUEUED, "last_completed_epoch": 0,
        "max_total_epochs": config["max_total_epochs"], "max_epochs_per_run": config["max_epochs_per_run"],
        "checkpoint": "",
    }
    backup = _newest_readable_backup(name)
    if backup:
        for key in STATUS_FIELDS:
            if key in backup:
                state[key] = backup[key]
    checkpoint = _newest_checkpoint(name)
    if checkpoint:
        state.update(
            last_completed_epoch=checkpoint.epoch,
            checkpoint=str(checkpoint.path),
            best_epoch=checkpoint.meta["best_epoch"],
            best_val_ser=checkpoint.meta["best_val_ser"],
        )
    if state["last_completed_epoch"] >= state["max_total_epochs"]:
        state.update(status=run_status.RunStatus.COMPLETED,
                     stop_reason=state.get("stop_reason") or run_status.EPOCH_BUDGET_USED)
    elif state["status"] == run_status.RunStatus.RUNNING:
        state["status"] = run_status.RunStatus.QUEUED  # whoever was training is gone; the run waits for its next chunk
    return state


def _newest_checkpoint(name: str):
    """The run's newest verified checkpoint, or None; NumPy loads only when there are checkpoints to read
    (a run being created, as by `supersmm enqueue`, has none)."""
    if not paths.checkpoints_dir(name).is_dir():
        return None
    from .checkpoint import latest_valid_checkpoint

    return latest_valid_checkpoint(paths.checkpoints_dir(name))


def _newest_readable_backup(name: str) -> dict | None:
    for number in range(1, STATE_BACKUPS_KEPT + 1):
        backup = _read_backup(name, number)
        if backup is not None:
            return backup
    return None


def _read_backup(name: str, number: int) -> dict | None:
    """Backup `number` (1 is the newest) of the run's state, None when it is missing or unreadable."""
    try:
        return parse_state((paths.backups_dir(name) / f"training_state.{number}.txt").read_text("utf-8"))
    except (OSError, UnicodeDecodeError, UnreadableState):
        return None


def _status_of(state: dict | None) -> tuple | None:
    return tuple(state.get(key) for key in STATUS_FIELDS) if state is not None else None


def _rotate(folder: Path, stem: str, suffix: str, kept: int, source: Path) -> None:
    """Shift stem.1 -> stem.2 ... (dropping the oldest) and copy `source` to stem.1."""
    if not source.is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(kept - 1, 0, -1):
        older = folder / f"{stem}.{number}{suffix}"
        if older.exists():
            os.replace(older, folder / f"{stem}.{number + 1}{suffix}")
    copy = folder / f".{stem}.1{suffix}.tmp"
    try:
        shutil.copyfile(source, copy)
    except OSError as error:
        copy.unlink(missing_ok=True)
        if is_disk_full(error):
            raise DiskFull(copy) from None
        raise
    os.replace(copy, folder / f"{stem}.1{suffix}")


def append_log(name: str, message: str) -> None:
    """One timestamped line in the run's logs/training_output.log."""
    path = paths.log_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{now_iso()} {message}\n")
    except OSError as error:
        if is_disk_full(error):
            raise DiskFull(path, intact="its earlier lines are intact") from None
        raise


def backup_log(name: str) -> None:
    """Keep a rotating copy of training_output.log (called once per chunk)."""
    _rotate(paths.backups_dir(name), "training_output", ".log", LOG_BACKUPS_KEPT, source=paths.log_path(name))
