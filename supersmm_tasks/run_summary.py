"""What a run's summary says, by one set of rules: `supersmm status` and the dashboard's runs table.

Both read the run's state file and its rows of `logs/training_log.csv`:
- best val SER: the one the state names (that of the best checkpoint), else the lowest in the CSV;
- ETA: the last CSV row's estimate while the run is queued or running, else none;
- worker: for a queued or running run, who trains it now: the lease's holder when the broker was
  asked, else (the dashboard never asks it) the worker the state names while running; for any
  other run, the worker that trained it last (the state's, else the last CSV row's).

`supersmm status` imports neither Celery nor TensorFlow: the lease and the control request are read
through lease.py and chunk_queue.py.
"""
from __future__ import annotations

import math
import os

import redis

from . import broker, chunk_queue, paths, run_state, training_log
from .errors import SupersmmError
from .lease import holder as lease_holder
from .run_status import ACTIVE, RunStatus



# --- the rules -----------------------------------------------------------------------------------

def best_val_ser(state: dict, lowest_csv_val_ser: float | None) -> float | None:
    best = state.get("best_val_ser")
    return best if best is not None else lowest_csv_val_ser


def eta(state: dict, last_row) -> str | None:
    """`last_row`: the run's last CSV row (a mapping of column to value), None when it has none. Its estimate
    holds for the budget it was made under: none is shown once the run's budget changed."""
    if state.get("status") not in ACTIVE or last_row is None:
        return None
    try:
        same_budget = int(float(last_row["max_total_epochs"])) == int(state["max_total_epochs"])
    except (TypeError, ValueError, KeyError):
        same_budget = False
    return (last_row["est_completion_time"] or None) if same_budget else None


def worker(state: dict, last_row, holder: str | None = None) -> str | None:
    """`holder`: the lease's holder when the broker was asked ("" for nobody), None when it was not."""
    status = state.get("status")
    if status in ACTIVE:
        if holder is not None:
            return holder or None
        return (state.get("worker") or None) if status == RunStatus.RUNNING else None
    return state.get("worker") or (last_row["worker"] if last_row is not None else None) or None


# --- supersmm status -----------------------------------------------------------------------------

def status_rows(name: str | None = None, warn=lambda line: None) -> list[dict]:
    """One row per run: the keys of training_state.txt plus best_val_ser, eta and worker. A configured broker
    that does not answer leaves the rows as the files tell them, with one line to `warn`."""
    names = run_state.list_runs()
    if name is not None:
        if name not in names:
            raise SupersmmError(f"no run named {name!r} in {paths.models_dir()}")
        names = [name]
    connection = _connection_if_broker_up(warn)
    rows = []
    for run in names:
        try:
            rows.append(_status_row(connection, run))
        except SupersmmError as error:
            if name is not None:
                raise
            warn(f"run {run} not shown: {error}")  # one damaged run does not hide the others
    return rows


def _connection_if_broker_up(warn) -> redis.Redis | None:
    """The broker when it is configured and answers, or when the embedded one runs; None otherwise (a configured
    broker that cannot be used at all, a bad URL or a refused password, raises SupersmmError).

    Without a running embedded broker no worker can hold a lease, so there is nothing to ask it.
    """
    if os.environ.get(broker.BROKER_URL_VARIABLE):
        try:
            return broker.connect()  # a URL the project cannot use, or a refused password, is an error here too
        except broker.BrokerUnreachable as error:
            warn(f"{error}; shown from the run files alone: the worker is the one the state names, and pause or "
                 "cancel requests are not shown")
            return None
    url = broker.embedded_url_if_running()
    return broker.client(url) if url else None


def _status_row(connection: redis.Redis | None, name: str) -> dict:
    state = run_state.read_state(name, repair=False)
    rows = training_log.read_rows(name)
    last_row = rows[-1] if rows else None
    holder = (lease_holder(connection, name) or "") if connection is not None else ""
    row = {
        **state,
        "best_val_ser": best_val_ser(state, min(_val_sers(rows), default=None)),
        "eta": eta(state, last_row) or "",
        "worker": worker(state, last_row, holder) or "",
    }
    request = chunk_queue.read_control(connection, name) if connection is not None else None
    if request and state["status"] in ACTIVE:
        row["requested"] = request
    return row


def _val_sers(rows: list[dict]) -> list[float]:
    """The rows' val SERs that are numbers (a row edited by hand may hold anything)."""
    found = []
    for row in rows:
        try:
            value = float(row["val_ser"])
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            found.append(value)
    return found


STATUS_COLUMNS = (
    ("run", "run"), ("dataset", "dataset"), ("status", "status"), ("epoch", "epoch"),
    ("best_val_ser", "best val SER"), ("eta", "ETA"), ("worker", "worker"),
)


def format_status_table(rows: list[dict]) -> str:
    if not rows:
        return f"no runs yet in {paths.models_dir()} (start one with `supersmm enqueue NAME`)"
    table = [[title for _, title in STATUS_COLUMNS]]
    for row in rows:
        cells = {
            **row,
            "status": row["status"] + (f" ({row['requested']} requested)" if row.get("requested") else ""),
            "epoch": f"{row['last_completed_epoch']}/{row['max_total_epochs']}",
            "best_val_ser": "" if row.get("best_val_ser") is None else f"{float(row['best_val_ser']):.2f}%",
        }
        table.append(["" if cells.get(key) is None else str(cells[key]) for key, _ in STATUS_COLUMNS])
    widths = [max(len(line[i]) for line in table) for i in range(len(STATUS_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table)
