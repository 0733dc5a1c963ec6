"""The Celery side of a chunk: the task that trains one chunk of a run, and the worker's start and stop.

The protocol the task follows (pending marker, claim, next chunk) lives in chunk_queue.py, the healing
of orphaned runs in reconciler.py, the faults tests inject in faults.py; what trains the chunk is
celeryconfig's `supersmm_train_chunk` (training.train_chunk, or the scale benchmark's stand-in).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time

from celery import concurrency
from celery.signals import worker_init, worker_ready, worker_shutdown
from celery.utils.imports import symbol_by_name

from . import chunk_queue, faults, reconciler, run_state, stall
from .celery_app import app
from .chunk import ChunkSpan
from .errors import ChunkInterrupted, SupersmmError
from .lease import LeaseLost
from .run_keys import progress_key
from .run_status import ACTIVE, RunStatus, stop_as_requested
from .runs import check_worker_settings
from .shutdown import raise_if_stopping
from .worker_priority import NICE_VARIABLE, lower_worker_priority

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0


def chunk_trainer():
    """The function that trains a chunk: celeryconfig's `supersmm_train_chunk` ("module:function")."""
    return symbol_by_name(app.conf.supersmm_train_chunk)


@app.task(bind=True, name=chunk_queue.CHUNK_TASK)
def train_chunk_task(self, run: str, first_epoch: int, last_epoch: int, chunk: int) -> dict:
    """Train the chunk of run that was queued with this span, then queue the next chunk if epochs remain."""
    span = ChunkSpan(first_epoch, last_epoch, chunk)
    connection = chunk_queue.worker_redis()
    worker = self.request.hostname or socket.gethostname()
    faults.kill_point("before_claim")
    claim = chunk_queue.claim(connection, run, self.request.id, worker)
    if claim is None:
        logger.info("chunk %s is not the run's pending chunk (a duplicate or stale copy): nothing to do", self.request.id)
        return {"run": run, "outcome": "stale"}
    lease = claim.lease
    lease.start_heartbeat()
    try:
        with stall.watching(run):
            status = _train_holding_lease(connection, claim, run, span, worker)
        if status == RunStatus.RUNNING:
            faults.kill_point("after_checkpoint")
            chunk_queue.queue_next_chunk(connection, run, handing_over=lease)
    except LeaseLost as lost:
        logger.warning("%s: stopped without writing", lost)
        # A Redis that failed over may have lost our claim and kept our marker: without this, the
        # run would keep a marker whose message is gone. A newer marker is left alone.
        chunk_queue.delete_marker_if_mine(connection, run, self.request.id)
        return {"run": run, "outcome": "superseded"}
    except ChunkInterrupted:
        logger.warning("run %s: chunk stopped mid-epoch because the worker is shutting down; the run goes on "
                       "from its last checkpoint", run)
        return {"run": run, "outcome": "interrupted"}
    finally:
        lease.release()  # a no-op once handed over with the next chunk
    outcome = "continue" if status == RunStatus.RUNNING else str(status)
    return {"run": run, "first_epoch": first_epoch, "last_epoch": last_epoch, "outcome": outcome}


def _train_holding_lease(connection, claim: chunk_queue.Claim, run: str, span: ChunkSpan, worker: str) -> RunStatus:
    """Train the chunk; the run's status after it (running when epochs remain)."""
    train_chunk = chunk_trainer()  # loaded when the worker started (_prepare_worker)
    status = run_state.read_state(run)["status"]
    if status not in ACTIVE:
        return status
    lease = claim.lease
    if claim.control:
        stopped = stop_as_requested(run, lease.guard, lambda: chunk_queue.read_control(connection, run))
        if stopped:
            return stopped["status"]
    report = _progress_reporter(connection, run, span, worker)
    report({"epoch": span.first_epoch, "batch": 0})

    def guard() -> None:
        stall.alive()  # a write is about to be made
        lease.guard()

    # train_chunk records its own failures in the run's state (status failed, with the reason).
    result = train_chunk(run, span, guard=guard, on_progress=report, worker=worker,
                         should_stop=lambda: raise_if_stopping() or chunk_queue.read_control(connection, run))
    return RunStatus(result.status)


def _progress_reporter(connection, run: str, span: ChunkSpan, worker: str):
    """on_progress for train_chunk: a sign of life for the stall watch, and the run's progress key (`supersmm
    train`'s bar) at most once a second. The key holds what the epoch reported so far (the last training
    batch's loss stays while it validates). It is not also stored as a Celery state: a chunk's result is not kept
    (chunk_queue sends it with ignore_result), Flower shows the states of the task events, and storing one cost
    every report two round trips."""
    last_sent, epoch_so_far = 0.0, {}

    def report(progress: dict) -> None:
        nonlocal last_sent, epoch_so_far
        stall.alive()
        raise_if_stopping()
        epoch_done = "val_ser" in progress or "val_loss" in progress
        epoch_started = progress.get("epoch") != epoch_so_far.get("epoch")
        epoch_so_far = {**({} if epoch_started else epoch_so_far), **progress}
        if not (epoch_done or epoch_started) and time.monotonic() - last_sent < PROGRESS_EVERY_S:
            return
        last_sent = time.monotonic()
        meta = {"run": run, "worker": worker, "first_epoch": span.first_epoch, "last_epoch": span.last_epoch,
                **epoch_so_far}
        try:
            connection.set(progress_key(run), json.dumps(meta, default=float), ex=3600)
        except Exception as error:  # a progress report is never worth stopping the training for
            logger.warning("run %s: progress report not sent (%s)", run, error)

    return report


# --- the worker --------------------------------------------------------------------------------------

@worker_init.connect
def _prepare_worker(sender=None, **_) -> None:
    """Refuse another pool, unknown fault names and bad durations; train behind the user's own commands
    (worker_priority.py); load the trainer.

    The trainer (TensorFlow) loads before the worker takes its first chunk. Loaded beside a chunk that has
    just claimed its run, the import took the worker's CPU for longer than the lease's heartbeat could
    wait on a busy machine: the lease expired and the run's chunk was queued a second time.
    """
    try:
        if sender is not None:
            _one_chunk_at_a_time(sender)
        check_worker_settings()
        lower_worker_priority()
    except SupersmmError as error:  # one line, as `supersmm` prints its errors
        raise SystemExit(f"supersmm: error: {error}") from None
    try:
        chunk_trainer()
    except (ImportError, AttributeError, ValueError) as error:
        raise SystemExit(f"supersmm: error: cannot load the chunk trainer {app.conf.supersmm_train_chunk!r}: "
                         f"{error}") from None


def _one_chunk_at_a_time(worker) -> None:
    """A worker process trains one chunk at a time, in a thread beside Celery's consumer (celeryconfig.py): the
    trainer it keeps between chunks, Keras's session and seed, and its stall watch are the process's own."""
    pool = concurrency.get_implementation(worker.pool_cls)
    autoscale = worker.options.get("autoscale")  # Celery sizes the pool from it after this signal
    if pool is not concurrency.get_implementation("threads") or str(worker.concurrency) != "1" or autoscale:
        path = f"{pool.__module__}:{pool.__qualname__}"
        name = next((alias for alias, where in concurrency.ALIASES.items() if where == path), path)
        asked = f"--pool {name} --concurrency {worker.concurrency}" + (f" --autoscale {autoscale}" if autoscale else "")
        raise SupersmmError(f"a worker trains one chunk at a time (--pool threads --concurrency 1, as celeryconfig.py "
                            f"sets), not {asked}: start more workers instead")


@worker_ready.connect
def _start_worker_threads(sender=None, **_) -> None:
    logger.info("training at niceness %d (%s)", os.nice(0), NICE_VARIABLE)  # logging is set up by now
    reconciler.start(getattr(sender, "hostname", None) or socket.gethostname())


@worker_shutdown.connect
def _stop_worker_threads(**_) -> None:
    reconciler.stop()
