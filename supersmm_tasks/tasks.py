"""The chunk task (one chunk of epochs of one run) and the reconciler that heals orphaned runs.

A run has at most one chunk message that counts: the one named by its pending marker. The task
that carries it claims the run's lease and deletes the marker in one atomic step; any other copy
(a redelivery, a double enqueue, a message of a paused or re-routed run) finds a marker that is
not its own and does nothing. When a chunk ends the trainer releases the lease and queues the
next chunk at the back of the run's queue, so runs sharing a pool take turns.

A worker that dies leaves a run whose status says queued/running, with no lease (it expires)
and no pending marker. Every worker runs a reconciler thread that finds such runs and queues
their next chunk; a Redis lock lets one worker act per interval, and the marker makes a double
enqueue impossible anyway. A worker that dies after taking a chunk's message but before claiming
the run leaves a marker whose message sits unacknowledged; the reconciler replaces that marker
once the message has gone a lease TTL unclaimed.

Redis keys of run R:
    supersmm:run:R:lease     who trains R now and with which fencing token (lease.py)
    supersmm:run:R:fence     R's fencing-token counter (lease.py)
    supersmm:run:R:pending   the chunk message queued for R: task_id, queue, queued_at, sent
    supersmm:run:R:control   "paused" or "cancelled" when the user asked for it
    supersmm:run:R:route     queue and priority overriding the run's config (`supersmm train`)
    supersmm:run:R:progress  the trainer's latest progress report (JSON)
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import threading
import time

import redis
from celery.signals import worker_ready, worker_shutdown

from . import broker, run_state
from .celery_app import app
from .errors import ChunkInterrupted, SupersmmError
from .lease import Lease, LeaseLost, fence_key, lease_key, ttl_seconds
from .lease import holder as lease_holder
from .shutdown import raise_if_stopping

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = ("queued", "running")
CONTROL_REQUESTS = ("paused", "cancelled")
RECONCILE_INTERVAL_VARIABLE = "SUPERSMM_RECONCILE_INTERVAL"
DEFAULT_RECONCILE_INTERVAL_S = 2.0
FAULT_VARIABLE = "SUPERSMM_FAULT"
UNSENT_MARKER_GRACE_S = 10.0  # a marker whose message was not sent by then belongs to a dead sender
PROGRESS_EVERY_S = 1.0
RECONCILER_LOCK = "supersmm:reconciler:lock"
# Where kombu's Redis transport keeps the messages that workers took and have not acknowledged yet.
KOMBU_UNACKED, KOMBU_UNACKED_INDEX = "unacked", "unacked_index"


def pending_key(run: str) -> str:
    return f"supersmm:run:{run}:pending"


def control_key(run: str) -> str:
    return f"supersmm:run:{run}:control"


def route_key(run: str) -> str:
    return f"supersmm:run:{run}:route"


def progress_key(run: str) -> str:
    return f"supersmm:run:{run}:progress"


# Set the pending marker to a new chunk unless another live marker or a trainer is there.
# ARGV: new task id, queue, now, the stale task id it may replace ('' for none)
_MARK_PENDING = """
local current = redis.call('HGET', KEYS[1], 'task_id')
if current and current ~= ARGV[4] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'queue', ARGV[2], 'queued_at', ARGV[3], 'sent', '0')
return 1
"""

# The chunk named by the marker takes the lease (a new fencing token) and consumes the marker.
# Returns the token, 0 when someone holds the lease, -1 when the marker names another chunk.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'task_id') ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], token .. '|' .. ARGV[3], 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
return token
"""

# The marker may already be claimed (deleted) by a fast worker: never recreate it.
_MARK_SENT = """
if redis.call('HGET', KEYS[1], 'task_id') == ARGV[1] then return redis.call('HSET', KEYS[1], 'sent', '1') end
return 0
"""

_DELETE_MARKER_IF_MINE = """
if redis.call('HGET', KEYS[1], 'task_id') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def worker_redis() -> redis.Redis:
    """The Redis this process's Celery app uses as its broker (never starts an embedded one)."""
    return broker.client(app.conf.broker_url)


# --- where and what the next chunk is ----------------------------------------------------------

def chunk_span(state: dict) -> tuple[int, int, int] | None:
    """(first_epoch, last_epoch, chunk number) of the run's next chunk, or None when no epoch is left.

    Chunks sit on a fixed grid of max_epochs_per_run epochs, so a chunk cut short by a crash is
    finished by its successor and chunk numbers stay the same whatever happened.
    """
    first = (state["last_completed_epoch"] or 0) + 1
    if first > state["max_total_epochs"]:
        return None
    size = state["max_epochs_per_run"]
    chunk = (first - 1) // size + 1
    return first, min(chunk * size, state["max_total_epochs"]), chunk


def chunk_task_id(run: str, first: int, last: int) -> str:
    return f"{run}:{first}-{last}:{secrets.token_hex(4)}"


def run_route(connection: redis.Redis, run: str) -> tuple[str, int]:
    """The queue and priority of the run's chunks: a live `supersmm train` override, else the run's config."""
    override = connection.hgetall(route_key(run))
    if override:
        return override["queue"], int(override["priority"])
    config = json.loads(run_state.config_path(run).read_text("utf-8"))
    priority = config.get("priority")
    return (config.get("queue") or app.conf.task_default_queue,
            app.conf.task_default_priority if priority is None else int(priority))


def queue_next_chunk(connection: redis.Redis, run: str, replacing: str = "") -> str | None:
    """Queue the run's next chunk; its task id, or None when a chunk is already pending or a trainer holds the run.

    `replacing` names a pending marker known to be stale (the reconciler's case).
    """
    span = chunk_span(run_state.read_state(run))
    if span is None:
        return None
    first, last, _ = span
    queue, priority = run_route(connection, run)
    task_id = chunk_task_id(run, first, last)
    marked = connection.register_script(_MARK_PENDING)(
        keys=[pending_key(run), lease_key(run)], args=[task_id, queue, time.time(), replacing])
    if not marked:
        return None
    # Sent through the broker of this moment's environment, not the app's cached pool, and without
    # waiting on the result backend: one process may serve several homes (tests, benchmarks).
    # Progress reaches the backend through update_state(); outcomes reach Flower through events.
    with app.connection_for_write(broker.broker_url()) as sender:
        train_chunk_task.apply_async(
            args=(run, first, last), task_id=task_id, queue=queue, priority=priority,
            shadow=f"{run}: epochs {first}-{last}", connection=sender, ignore_result=True)
    connection.register_script(_MARK_SENT)(keys=[pending_key(run)], args=[task_id])
    return task_id


def pending_chunk(connection: redis.Redis, run: str) -> dict:
    """The run's pending marker ({} when none): task_id, queue, queued_at, sent."""
    return connection.hgetall(pending_key(run))


def withdraw_pending_chunk(connection: redis.Redis, run: str) -> None:
    """Make the queued message of the run stale: it will find no marker and do nothing."""
    connection.delete(pending_key(run))


def read_control(connection: redis.Redis, run: str) -> str | None:
    """"paused" or "cancelled" when the user asked for it, else None (also when Redis is unreachable)."""
    try:
        request = connection.get(control_key(run))
    except redis.RedisError:
        return None
    return request if request in CONTROL_REQUESTS else None


# --- the chunk task ------------------------------------------------------------------------------

@app.task(bind=True, name="supersmm_tasks.train_chunk")
def train_chunk_task(self, run: str, first_epoch: int, last_epoch: int) -> dict:
    """Train epochs first_epoch..last_epoch of run (the run's state decides the exact range), then queue the next chunk."""
    connection = worker_redis()
    worker = self.request.hostname or socket.gethostname()
    _fault_point("before_claim")
    lease = _claim(connection, run, self.request.id, worker)
    if lease is None:
        logger.info("chunk %s is not the run's pending chunk (a duplicate or stale copy): nothing to do", self.request.id)
        return {"run": run, "outcome": "stale"}
    lease.start_heartbeat()
    try:
        outcome = _train_holding_lease(self, connection, lease, run, worker)
        if outcome == "continue":
            _fault_point("after_checkpoint")
    except LeaseLost as lost:
        logger.warning("%s: stopped without writing", lost)
        return {"run": run, "outcome": "superseded"}
    except ChunkInterrupted:
        logger.warning("run %s: chunk stopped mid-epoch because the worker is shutting down; the run goes on "
                       "from its last checkpoint", run)
        return {"run": run, "outcome": "interrupted"}
    finally:
        lease.release()
    if outcome == "continue":
        queue_next_chunk(connection, run)
    return {"run": run, "first_epoch": first_epoch, "last_epoch": last_epoch, "outcome": outcome}


def _claim(connection: redis.Redis, run: str, task_id: str, worker: str) -> Lease | None:
    """The run's lease for this chunk, or None when the chunk is stale.

    A lease still held means the previous holder is finishing or dying; its lease expires within
    one TTL, so wait that long before giving the chunk back to the reconciler.
    """
    claim = connection.register_script(_CLAIM)
    ttl_s = ttl_seconds()
    deadline = time.monotonic() + 2 * ttl_s
    while True:
        token = int(claim(keys=[pending_key(run), lease_key(run), fence_key(run)],
                          args=[task_id, int(ttl_s * 1000), worker]))
        if token > 0:
            return Lease(connection, run, token, ttl_s)
        if token < 0:
            return None
        if time.monotonic() >= deadline:
            connection.register_script(_DELETE_MARKER_IF_MINE)(keys=[pending_key(run)], args=[task_id])
            return None
        time.sleep(0.5)


def _train_holding_lease(task, connection: redis.Redis, lease: Lease, run: str, worker: str) -> str:
    """Train the run's next chunk; returns "continue" when another chunk should follow, else the run's new status."""
    from . import training  # TensorFlow loads in workers only, and only when they train

    state = run_state.read_state(run)
    if state["status"] not in ACTIVE_STATUSES:
        return state["status"]
    request = read_control(connection, run)
    if request:
        lease.guard()
        run_state.write_state(run, status=request)
        return request
    span = chunk_span(state)
    if span is None:
        lease.guard()
        run_state.write_state(run, status="completed", stop_reason="max_total_epochs")
        return "completed"
    first, last, chunk = span
    report = _progress_reporter(task, connection, run, first, last, worker)
    report({"epoch": first, "batch": 0})
    # train_chunk records its own failures in the run's state (status failed, with the reason).
    training.train_chunk(
        run, first, last, guard=lease.guard, should_stop=lambda: raise_if_stopping() or read_control(connection, run),
        on_progress=report, worker=worker, chunk=chunk)
    return _after_chunk(connection, lease, run)


def _after_chunk(connection: redis.Redis, lease: Lease, run: str) -> str:
    state = run_state.read_state(run)
    request = read_control(connection, run)
    if request and state["status"] in ACTIVE_STATUSES:
        lease.guard()
        state = run_state.write_state(run, status=request)
    if state["status"] in ACTIVE_STATUSES and chunk_span(state) is not None:
        return "continue"
    return state["status"]


def _progress_reporter(task, connection: redis.Redis, run: str, first: int, last: int, worker: str):
    """on_progress for train_chunk: the task's PROGRESS state (Flower) and the run's progress key, at most once a second."""
    last_sent, last_epoch = 0.0, None

    def report(progress: dict) -> None:
        nonlocal last_sent, last_epoch
        raise_if_stopping()
        _fault_point("slow_batches")
        epoch_done = "val_ser" in progress or "val_loss" in progress
        epoch_started = progress.get("epoch") != last_epoch
        if not (epoch_done or epoch_started) and time.monotonic() - last_sent < PROGRESS_EVERY_S:
            return
        last_sent, last_epoch = time.monotonic(), progress.get("epoch")
        meta = {"run": run, "worker": worker, "first_epoch": first, "last_epoch": last, **progress}
        try:
            task.update_state(state="PROGRESS", meta=meta)
            connection.set(progress_key(run), json.dumps(meta, default=float), ex=3600)
        except Exception as error:  # a progress report is never worth stopping the training for
            logger.warning("run %s: progress report not sent (%s)", run, error)

    return report


def _fault_point(name: str) -> None:
    """Faults that tests inject with SUPERSMM_FAULT (comma-separated): `after_checkpoint` kills the worker
    between a checkpoint and the queueing of the next chunk, `before_claim` between taking a chunk's
    message and claiming its run, to prove that the run heals; `slow_batches` makes every batch 0.2 s
    longer, so that a test can catch a trainer mid-epoch on any machine."""
    if name not in os.environ.get(FAULT_VARIABLE, "").split(","):
        return
    if name == "slow_batches":
        time.sleep(0.2)
    else:
        os.kill(os.getpid(), signal.SIGKILL)


# --- the reconciler ------------------------------------------------------------------------------

def reconcile_interval() -> float:
    return float(os.environ.get(RECONCILE_INTERVAL_VARIABLE) or DEFAULT_RECONCILE_INTERVAL_S)


def reconcile_once(connection: redis.Redis) -> list[str]:
    """Queue the next chunk of every run that should be training but has no trainer and no live chunk message."""
    requeued = []
    for run in run_state.list_runs():
        try:
            state = run_state.read_state(run)
        except SupersmmError as error:
            logger.warning("reconciler: skipping run %s: %s", run, error)
            continue
        if state["status"] not in ACTIVE_STATUSES or lease_holder(connection, run) is not None:
            continue
        stale = _stale_marker(connection, run)
        if stale is None:
            continue
        if queue_next_chunk(connection, run, replacing=stale):
            requeued.append(run)
    return requeued


def _stale_marker(connection: redis.Redis, run: str) -> str | None:
    """The task id of a pending marker that no live message answers ('' when there is no marker); None when it is live.

    Called for runs that nobody holds: a message taken by a worker but unclaimed for a lease TTL was
    taken by a worker that died (a live one claims the run within milliseconds).
    """
    marker = pending_chunk(connection, run)
    if not marker:
        return ""
    never_sent = marker.get("sent") != "1" and time.time() - float(marker["queued_at"]) > UNSENT_MARKER_GRACE_S
    rerouted = marker.get("queue") != run_route(connection, run)[0]
    taken_at = _taken_at(connection, marker["task_id"]) if marker.get("sent") == "1" else None
    taken_by_the_dead = taken_at is not None and time.time() - taken_at > ttl_seconds()
    return marker["task_id"] if never_sent or rerouted or taken_by_the_dead else None


def _taken_at(connection: redis.Redis, task_id: str) -> float | None:
    """When a worker took the message of chunk task_id from its queue, if it has not acknowledged it yet."""
    for delivery_tag, stored in connection.hscan_iter(KOMBU_UNACKED):
        try:
            message = json.loads(stored)[0]
        except (ValueError, LookupError, TypeError):
            continue  # not a message of ours
        if isinstance(message, dict) and message.get("headers", {}).get("id") == task_id:
            return connection.zscore(KOMBU_UNACKED_INDEX, delivery_tag)
    return None


def _reconcile_forever(stop: threading.Event, worker: str) -> None:
    interval = reconcile_interval()
    while True:
        try:
            broker.restart_embedded_if_crashed()
            connection = worker_redis()
            if connection.set(RECONCILER_LOCK, worker, nx=True, px=int(interval * 900)):
                for run in reconcile_once(connection):
                    logger.warning("run %s had no trainer and no queued chunk: queued its next chunk", run)
        except Exception:  # the reconciler must outlive a Redis restart or an unreadable run folder
            logger.exception("reconciler pass failed")
        if stop.wait(interval):
            return


_reconciler_stop = threading.Event()


@worker_ready.connect
def _start_worker_threads(sender=None, **_) -> None:
    worker = getattr(sender, "hostname", None) or socket.gethostname()
    threading.Thread(target=_reconcile_forever, args=(_reconciler_stop, worker),
                     name="supersmm-reconciler", daemon=True).start()
    # Import TensorFlow now rather than when a chunk arrives: a takeover starts training sooner.
    threading.Thread(target=_import_training, name="supersmm-warm-up", daemon=True).start()


def _import_training() -> None:
    from . import training  # noqa: F401


@worker_shutdown.connect
def _stop_worker_threads(**_) -> None:
    _reconciler_stop.set()
