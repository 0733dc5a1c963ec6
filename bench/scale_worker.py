"""The scale benchmark's workers: the project's Celery app, training with a stand-in.

    celery -A scale_worker worker      (with bench/ on PYTHONPATH)

runs the real chunk task of `supersmm_tasks.tasks` (pending marker, claim, lease and its heartbeat,
fencing, the reconciler thread, the next chunk queued at the end: chunk_queue.py, reconciler.py) with one setting changed:
celeryconfig's `supersmm_train_chunk` names `standin_train_chunk` below instead of
`supersmm_tasks.training:train_chunk`. The stand-in keeps train_chunk's contract and its writes, in its
order, through the project's own modules (checkpoint, training_log, run_state): it lines the CSV and
the state up with the newest checkpoint, then for every epoch sleeps STEP_S where training would be
(a worker process's first epoch a random part of STEP_S more, see _step) and writes a checkpoint of a few bytes, the epoch's CSV row, the state and a log line, each after
guard(). TensorFlow is never imported, so a worker stays small.

SUPERSMM_SCALE_STEP_S changes the sleep (default 0.005 s): a longer one shows what the figures are
when the machine's CPUs are not the limit. Each chunk also appends one JSON line {run, chunk, worker, start, end} (wall-clock seconds) to
$SUPERSMM_SCALE_TIMINGS/<pid>.jsonl, from which the benchmark measures the time between chunks.
"""
from __future__ import annotations

import json
import os
import random
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from supersmm_tasks import paths, run_state, training_log
from supersmm_tasks.celery_app import app
from supersmm_tasks.chunk import ChunkResult, ChunkSpan
from supersmm_tasks.checkpoint import (
    CorruptCheckpoint, checkpoint_path, latest_valid_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint,
)
from supersmm_tasks.run_status import RunStatus, stop_as_requested, transition

app.conf.supersmm_train_chunk = "scale_worker:standin_train_chunk"

TIMINGS_VARIABLE = "SUPERSMM_SCALE_TIMINGS"
STEP_VARIABLE = "SUPERSMM_SCALE_STEP_S"
STEP_S = float(os.environ.get(STEP_VARIABLE) or 0.005)  # the stand-in for an epoch's training
CHECKPOINTS_KEPT = 3


def standin_train_chunk(name: str, span: ChunkSpan, *, guard=None, should_stop=None, on_progress=None,
                        worker: str | None = None) -> ChunkResult:
    """train_chunk's writes without its training: see the module's docstring."""
    started = time.time()
    guard = guard or (lambda: None)
    worker = worker or socket.gethostname()
    chunk = span.chunk
    folder = paths.checkpoints_dir(name)
    state = run_state.read_state(name)
    if state["status"] in (RunStatus.COMPLETED, RunStatus.CANCELLED):
        return _result(state, epochs_trained=0)
    newest = latest_valid_checkpoint(folder)
    done = newest.epoch if newest else 0
    guard()
    training_log.reconcile_run(name, done, row_for=lambda epoch: _stored_row(folder, epoch))
    state = transition(name, RunStatus.RUNNING, guard=guard, last_completed_epoch=done, worker=worker, chunk=chunk,
                       checkpoint=str(newest.path) if newest else "", error="", stop_reason="")
    status, reason, stopped = RunStatus.RUNNING, "", None
    for epoch in range(done + 1, min(span.last_epoch, state["max_total_epochs"]) + 1):
        if should_stop and should_stop() and (stopped := stop_as_requested(name, guard, should_stop)):
            break
        _step()
        row = _row(name, state, epoch, worker, chunk, checkpoint_path(folder, epoch))
        guard()
        path = save_checkpoint(folder, epoch, [np.full(4, epoch, np.float32)], [], meta={"epoch": epoch, "row": row})
        guard()
        training_log.append_row(row)
        guard()
        run_state.write_state(name, last_completed_epoch=epoch, checkpoint=str(path))
        guard()
        prune_checkpoints(folder, CHECKPOINTS_KEPT)
        run_state.append_log(name, f"epoch {epoch}/{state['max_total_epochs']} (stand-in) on {worker}")
        if on_progress:
            on_progress(row)
    else:
        if min(span.last_epoch, state["max_total_epochs"]) >= state["max_total_epochs"]:
            status, reason = RunStatus.COMPLETED, "max_total_epochs"
        elif should_stop and should_stop():  # asked during the chunk's last epoch
            stopped = stop_as_requested(name, guard, should_stop)
    state = stopped or transition(name, status, guard=guard, stop_reason=reason)
    _record_timing(name, chunk, worker, started, time.time())
    return _result(state, epochs_trained=state["last_completed_epoch"] - done)


_first_step_of_process = True


def _step() -> None:
    """Sleep where an epoch's training would be. A process's first epoch sleeps a random part of a step more: the
    benchmark starts all of a size's workers at one moment, and chunks of one exact length would keep their ends
    in step (all the workers' handovers within milliseconds of each other, every step), as the workers of a
    cluster, started apart, do not."""
    global _first_step_of_process
    extra = STEP_S * random.random() if _first_step_of_process else 0.0
    _first_step_of_process = False
    time.sleep(STEP_S + extra)


def _result(state: dict, epochs_trained: int) -> ChunkResult:
    return ChunkResult(run=state["run"], last_completed_epoch=state["last_completed_epoch"], status=state["status"],
                       stop_reason=state.get("stop_reason") or None, best_val_ser=state.get("best_val_ser"),
                       best_epoch=state.get("best_epoch"), epochs_trained=epochs_trained)


def _stored_row(folder: Path, epoch: int) -> dict | None:
    try:
        return load_checkpoint(checkpoint_path(folder, epoch)).meta["row"]
    except CorruptCheckpoint:
        return None


def _row(name: str, state: dict, epoch: int, worker: str, chunk: int | None, path: Path) -> dict:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    row = {column: "" for column in training_log.COLUMNS}
    row.update(timestamp=now, run=name, dataset=state["dataset"], epoch=epoch,
               max_total_epochs=state["max_total_epochs"], loss=1.0, val_loss=1.0, val_ser=50.0,
               val_sequence_error=100.0, epoch_time_sec=STEP_S, remaining_epochs=state["max_total_epochs"] - epoch,
               est_completion_time=now, worker=worker, chunk=chunk, checkpoint_path=str(path))
    return row


def _record_timing(run: str, chunk: int | None, worker: str, start: float, end: float) -> None:
    folder = os.environ.get(TIMINGS_VARIABLE)
    if not folder:
        return
    line = json.dumps({"run": run, "chunk": chunk, "worker": worker, "start": start, "end": end}) + "\n"
    with open(Path(folder) / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as timings:
        timings.write(line)
