"""The shared `logs/training_log.csv`: one row per (run, epoch), written by many processes at once.

Every change happens under a file lock. A last line cut short by a crash is dropped before anything
is appended, so the file stays parseable; `reconcile_run` makes a run's rows match its checkpoints.
"""
from __future__ import annotations

import csv
import io
import os
from datetime import datetime, timedelta, timezone

import psutil
from filelock import FileLock

from . import paths
from .durable import DiskFull, is_disk_full, write_atomically
from .errors import SupersmmError

COLUMNS = (
    "timestamp", "run", "dataset", "epoch", "max_total_epochs", "loss",
    "val_loss", "val_ser", "val_sequence_error", "epoch_time_sec", "cumulative_time_sec", "samples_per_sec",
    "learning_rate", "batch_size", "dataset_size", "remaining_epochs", "est_completion_time", "worker", "chunk",
    "checkpoint_path", "memory_mb",
)
TEXT_COLUMNS = ("timestamp", "run", "dataset", "est_completion_time", "worker", "checkpoint_path")
NUMBER_COLUMNS = tuple(c for c in COLUMNS if c not in TEXT_COLUMNS)
HEADER = ",".join(COLUMNS) + "\n"
RUN_COLUMN, EPOCH_COLUMN = COLUMNS.index("run"), COLUMNS.index("epoch")


def epoch_row(run: str, config, epoch: int, metrics: dict, *, cumulative_time_sec: float, recent_epoch_times,
              learning_rate: float, worker: str, chunk: int, checkpoint_path) -> dict:
    """The row of `run`'s finished epoch: its metrics (loss, val_loss, val_ser, val_sequence_error,
    epoch_time_sec, samples_per_sec, dataset_size), settings of `config`, the time so far and the ETA from
    the mean of the recent epoch times, where it ran, its checkpoint and this process's memory."""
    remaining = config.max_total_epochs - epoch
    now = datetime.now(timezone.utc)
    eta = now + timedelta(seconds=remaining * sum(recent_epoch_times) / len(recent_epoch_times))
    return {
        "timestamp": now.isoformat(timespec="seconds"), "run": run, "dataset": config.dataset,
        "epoch": epoch, "max_total_epochs": config.max_total_epochs, **metrics,
        "cumulative_time_sec": round(cumulative_time_sec, 3),
        "learning_rate": learning_rate, "batch_size": config.batch_size,
        "remaining_epochs": remaining, "est_completion_time": eta.isoformat(timespec="seconds"),
        "worker": worker, "chunk": chunk, "checkpoint_path": str(checkpoint_path),
        "memory_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
    }


def _lock() -> FileLock:
    return FileLock(str(paths.training_log_csv()) + ".lock", timeout=120)


def format_row(row: dict) -> str:
    """One CSV line of `row` (every column of COLUMNS), quoted where a value needs it."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"training log row lacks {', '.join(missing)}")
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return line.getvalue()


def _read_text_repaired() -> str:
    """The file's text without a partial last line, which a crash left and which is cut from the file too (the
    caller holds the lock); header checked."""
    text, cut = _whole_lines()
    if cut:
        write_atomically(paths.training_log_csv(), text.encode())
    return text


def _whole_lines() -> tuple[str, bool]:
    """(the file's text without a partial last line, whether there was one); header checked."""
    path = paths.training_log_csv()
    try:
        text = path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return "", False
    whole = text[: text.rfind("\n") + 1]
    if whole and not whole.startswith(HEADER):
        raise SupersmmError(
            f"{path} does not start with the expected columns ({HEADER.strip()}): move it aside and retry"
        )
    return whole, whole != text


def _has_header_and_whole_lines(path) -> bool:
    """Whether the file starts with the header and ends a line, read from its two ends only: a long
    run appends every epoch and must not re-read the whole file each time (the caller holds the lock)."""
    try:
        with open(path, "rb") as log:
            head = log.read(len(HEADER))
            log.seek(-1, os.SEEK_END)
            return head == HEADER.encode() and log.read(1) == b"\n"
    except OSError:  # missing, or too short to seek back from its end
        return False


def append_row(row: dict) -> None:
    """Append one epoch's row (callers append each (run, epoch) once; see reconcile_run)."""
    path = paths.training_log_csv()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = format_row(row)
    # Every worker appends here, so the lock is held for the write only and the fsync follows it. The
    # file is opened under the lock: a repair renames a new file over it, and must see our row.
    descriptor = None
    try:
        with _lock():
            prefix = "" if _has_header_and_whole_lines(path) or _read_text_repaired() else HEADER
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            with open(descriptor, "a", encoding="utf-8", closefd=False) as log:
                log.write(prefix + line)
        os.fsync(descriptor)
    except OSError as error:
        if is_disk_full(error):  # a row cut short is left out by readers and cut by the next writer
            raise DiskFull(path, intact="its complete rows are intact") from None
        raise
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _fields_if_of(run: str, line: str) -> list[str] | None:
    """The line's fields when it is a row of `run`, else None. Other runs' rows are skipped without parsing
    them: a run's name is never quoted, and it follows the timestamp, which has no comma."""
    if f",{run}," not in line:
        return None
    fields = next(csv.reader([line]), None)
    return fields if fields and len(fields) > EPOCH_COLUMN and fields[RUN_COLUMN] == run else None


class _EpochIndex:
    """Which epochs each run has rows for in one CSV file, brought up to date by reading only the rows
    appended since the last look. Every chunk start asks it: reading the whole file instead, under the lock
    every worker shares, cost each chunk time in proportion to every row of every run ever trained.

    Between rewrites the file only grows (append_row); a rewrite renames a new file over it. The index
    starts again when the file is another one (device, inode, or the bytes before where it stopped)."""

    TAIL = 64
    LARGEST_EPOCH = 10**6  # beyond it a row is left to the full read (one bit per epoch)

    def __init__(self):
        self._forget()

    def _forget(self, file: tuple | None = None) -> None:
        self.file = file  # (device, inode) of the file read
        self.offset = 0   # bytes read, whole lines only
        self.tail = b""   # the last bytes read
        self.epochs: dict[str, int] = {}  # run -> one bit per epoch that has a row
        self.repeated: set[str] = set()   # runs with two rows of one epoch

    def is_exactly(self, path, run: str, committed_epoch: int) -> bool:
        """Whether the file holds one row of run for each epoch 1..committed_epoch and no other (the caller
        holds the lock). False also when the index cannot tell (a cut-off last line, a row it cannot read)."""
        try:
            with open(path, "rb") as log:
                self._catch_up(log)
        except FileNotFoundError:
            self._forget()
        except (OSError, ValueError):
            self._forget()
            return False
        every_epoch = (1 << (committed_epoch + 1)) - 2  # bits 1..committed_epoch
        return self.epochs.get(run, 0) == every_epoch and run not in self.repeated

    def _catch_up(self, log) -> None:
        status = os.fstat(log.fileno())
        file = (status.st_dev, status.st_ino)
        start = max(0, self.offset - len(self.tail))
        if file != self.file or status.st_size < self.offset or os.pread(log.fileno(), self.offset - start, start) != self.tail:
            self._forget(file)
        log.seek(self.offset)
        appended = log.read(status.st_size - self.offset)
        if not appended:
            return
        if not appended.endswith(b"\n"):
            raise ValueError("a cut-off last line")
        lines = appended.splitlines()
        if self.offset == 0:
            if lines[0] + b"\n" != HEADER.encode():
                raise ValueError("not this file's header")
            lines = lines[1:]
        for line in lines:
            _, run, _, epoch, _ = line.split(b",", 4)  # timestamp, run and dataset never hold a comma
            run, epoch = run.decode(), int(epoch)
            if not 0 < epoch <= self.LARGEST_EPOCH:
                raise ValueError(f"epoch {epoch}")
            seen = self.epochs.get(run, 0)
            if seen & 1 << epoch:
                self.repeated.add(run)
            self.epochs[run] = seen | 1 << epoch
        self.offset += len(appended)
        self.tail = (self.tail + appended)[-self.TAIL:]


_indexes: dict[str, _EpochIndex] = {}


def read_rows(run: str | None = None) -> list[dict]:
    """All complete rows (of one run if given), as dicts of strings, in file order. A reader takes no lock and
    writes nothing (`supersmm status` on a read-only SUPERSMM_HOME, the dashboard): a row being appended, or
    cut short by a crash, is left out until a writer makes it whole or cuts it."""
    text, _ = _whole_lines()
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r for r in rows if run is None or r["run"] == run]


def reconcile_run(run: str, committed_epoch: int, row_for) -> list[str]:
    """Make `run`'s rows exactly one per epoch 1..committed_epoch, keeping other runs' rows as they are.

    Rows beyond the committed epoch and duplicates are dropped; a missing row is re-written from
    row_for(epoch) (the row stored in that epoch's checkpoint, or None). Returns what changed.
    """
    path = paths.training_log_csv()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock():
        if _indexes.setdefault(str(path), _EpochIndex()).is_exactly(path, run, committed_epoch):
            return []
        text = _read_text_repaired()
        lines = text.splitlines(keepends=True)[1:]
        kept, seen, changes = [], set(), []
        for line in lines:
            fields = _fields_if_of(run, line)
            if fields is None:
                kept.append(line)
                continue
            epoch = int(fields[EPOCH_COLUMN])
            if epoch > committed_epoch or epoch in seen:
                changes.append(f"dropped row of epoch {epoch}")
                continue
            seen.add(epoch)
            kept.append(line)
        lost = []
        for epoch in sorted(set(range(1, committed_epoch + 1)) - seen):
            row = row_for(epoch)
            if row is None:
                lost.append(epoch)
            else:
                kept.append(format_row(row))
                changes.append(f"restored row of epoch {epoch} from its checkpoint")
        if lost:
            changes.append(f"rows of {len(lost)} epochs (first {lost[0]}, last {lost[-1]}) are missing "
                           "and their checkpoints are gone")
        if len(kept) != len(lines) or any(c.startswith("dropped") for c in changes):
            write_atomically(path, (HEADER + "".join(kept)).encode())
        return changes
