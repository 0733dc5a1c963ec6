"""What the dashboard shows, read from the run files only: `logs/training_log.csv` and each run's folder.

The dashboard never talks to the broker, so it keeps working while Redis or every worker is down; a run
whose files have not changed for a while although its status says running is flagged stale instead.
Every reader here survives files that are missing, empty or being written at this very moment.
"""
from __future__ import annotations

import io
import math
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import paths
from ..errors import SupersmmError
from ..run_config import stored_config
from ..run_state import peek_state
from ..run_status import RunStatus
from ..run_summary import best_val_ser, eta, worker
from ..training_log import COLUMNS, NUMBER_COLUMNS

# A running run is flagged stale when nothing it writes has changed for this long, or for three of its
# epochs when those are slower.
STALE_AFTER_SECONDS = 600
LOG_TAIL_BYTES = 32 * 1024


class TrainingLog:
    """`logs/training_log.csv` as a DataFrame, parsed again only when the file changes."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._signature = None
        self._table = _empty_table()
        self._problem = None

    def read(self) -> tuple[pd.DataFrame, str | None]:
        """The rows and, when the file cannot be used, one line that says why (shown on the page)."""
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                return _empty_table(), None
            except OSError as error:
                return _empty_table(), _cannot_read(self.path, error)
            signature = (stat.st_mtime_ns, stat.st_size)
            if signature != self._signature:
                try:
                    raw = self.path.read_bytes()
                except OSError as error:
                    # Not remembered: a file made readable again (chmod) keeps its signature.
                    return _empty_table(), _cannot_read(self.path, error)
                self._table, self._problem = _parse_training_log(self.path, raw)
                self._signature = signature
            return self._table, self._problem


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype="object") for column in COLUMNS})


def _parse_training_log(path: Path, raw: bytes) -> tuple[pd.DataFrame, str | None]:
    # A trainer may be appending right now: a last line without its newline is not finished yet.
    complete = raw[: raw.rfind(b"\n") + 1]
    if not complete.strip():
        return _empty_table(), None
    # The header is read as the first row, so it alone sets how many fields a row has: a row with more
    # fields is skipped. (Read as a header, a first row with more fields would turn its first fields into
    # an index and shift every column, making up runs from other columns.) A row with fewer fields gets
    # empty values for the missing ones, as csv.DictReader gives the rest of the project.
    try:
        table = pd.read_csv(io.BytesIO(complete), header=None, dtype=str, keep_default_na=False, on_bad_lines="skip")
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        return _empty_table(), f"{path}: unreadable ({error})"
    header = list(table.iloc[0])
    repeated = sorted({column for column in header if header.count(column) > 1})
    if repeated:
        return _empty_table(), f"{path}: column {', '.join(repeated)} repeated in the header"
    table = table.iloc[1:].set_axis(header, axis="columns")
    missing = [column for column in ("run", "epoch") if column not in table.columns]
    if missing:
        return _empty_table(), f"{path}: no column {', '.join(missing)} in the header"
    for column in COLUMNS:
        if column not in table.columns:
            table[column] = ""
    for column in NUMBER_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table = table[table["run"].str.fullmatch(paths.RUN_NAME_PATTERN.pattern) & table["epoch"].notna()]
    table = table.drop_duplicates(subset=["run", "epoch"], keep="last").sort_values(["run", "epoch"])
    return table.reset_index(drop=True), None


def read_config(name: str) -> dict:
    """The run's config as stored, {} when it is missing or unreadable."""
    try:
        return stored_config(name)
    except SupersmmError:
        return {}


def log_tail(name: str, max_bytes: int = LOG_TAIL_BYTES) -> tuple[str, str | None]:
    """The last lines of the run's `training_output.log` (whole lines only) and, when the log exists but
    cannot be read, one line that says why (the tail is then empty)."""
    path = paths.log_path(name)
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - max_bytes))
            tail = log.read()
    except FileNotFoundError:
        return "", None
    except OSError as error:
        return "", _cannot_read(path, error)
    if size > max_bytes:
        tail = tail[tail.find(b"\n") + 1:]
    return tail.decode("utf-8", errors="replace"), None


def _cannot_read(path: Path, error: OSError) -> str:
    return f"{path}: cannot read it ({error.strerror or error})"


def run_names(table: pd.DataFrame) -> list[str]:
    """Every run that has a folder under `model/` or a row in the CSV."""
    return sorted(set(table["run"].unique()) | set(paths.run_names()))


def run_summary(name: str, rows: pd.DataFrame, now: datetime | None = None) -> dict:
    """One line of the runs table: from the state file where it exists, from the CSV where it does not
    (best val SER, ETA and worker by the rules of run_summary.py, as `supersmm status`)."""
    now = now or datetime.now(timezone.utc)
    state = peek_state(name)
    last = rows.iloc[-1] if len(rows) else None
    status = state.get("status") or "unknown"
    epoch = _integer(state.get("last_completed_epoch"))
    if epoch is None and last is not None:
        epoch = int(last["epoch"])
    max_epochs = _integer(state.get("max_total_epochs"))
    if max_epochs is None and last is not None:
        max_epochs = _number(last["max_total_epochs"])
    last_activity = _latest_activity(name, state, last)
    quiet_seconds = (now - last_activity).total_seconds() if last_activity else None
    epoch_seconds = _number(last["epoch_time_sec"]) if last is not None else None
    stale_after = max(STALE_AFTER_SECONDS, 3 * (epoch_seconds or 0))
    return {
        "name": name,
        "dataset": state.get("dataset") or (last["dataset"] if last is not None else None) or None,
        "status": status,
        "epoch": epoch,
        "max_total_epochs": int(max_epochs) if max_epochs is not None else None,
        "best_val_ser": _number(best_val_ser(state, _number(rows["val_ser"].min()) if len(rows) else None)),
        "samples_per_sec": _number(last["samples_per_sec"]) if last is not None else None,
        "eta": eta(state, last),
        "worker": worker(state, last),
        "last_update": last_activity.isoformat() if last_activity else None,
        "stale": status == RunStatus.RUNNING and quiet_seconds is not None and quiet_seconds > stale_after,
    }


def run_history(rows: pd.DataFrame) -> dict:
    """Loss and val SER per epoch, and where chunks begin (a resumption when a worker picked the run up again)."""
    history = {column: [_number(v) for v in rows[column]] for column in ("loss", "val_loss", "val_ser")}
    history["epoch"] = [int(epoch) for epoch in rows["epoch"]]
    chunk_starts = []
    previous = None
    for row in rows.itertuples(index=False):
        if previous is not None and row.chunk != previous.chunk:
            chunk_starts.append({
                "epoch": int(row.epoch),
                "chunk": _number(row.chunk),
                "resumed": _looks_resumed(previous, row),
            })
        previous = row
    history["chunk_starts"] = chunk_starts
    return history


def _looks_resumed(previous, row) -> bool:
    """A chunk that did not follow straight on: another worker, or a pause of several epochs in between."""
    if previous.worker and row.worker and previous.worker != row.worker:
        return True
    gap = _seconds_between(previous.timestamp, row.timestamp)
    epoch_seconds = row.epoch_time_sec if not math.isnan(row.epoch_time_sec) else 0
    return gap is not None and gap - epoch_seconds > max(60, 3 * epoch_seconds)


def _latest_activity(name: str, state: dict, last) -> datetime | None:
    moments = [_parse_time(state.get("updated_at"))]
    if last is not None:
        moments.append(_parse_time(last["timestamp"]))
    try:
        moments.append(datetime.fromtimestamp(paths.log_path(name).stat().st_mtime, timezone.utc))
    except OSError:  # no log yet, or one that cannot be reached (log_tail says why)
        pass
    moments = [moment for moment in moments if moment]
    return max(moments) if moments else None


def _parse_time(text) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _seconds_between(start, end) -> float | None:
    start, end = _parse_time(start), _parse_time(end)
    return (end - start).total_seconds() if start and end else None


def _number(value) -> float | None:
    """A JSON-safe number: None for NaN, missing or unparsable values."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def _integer(text) -> int | None:
    number = _number(text)
    return int(number) if number is not None else None
