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
once the message has gone a lease TTL unclaimed, and a marker whose message is nowhere (lost with
a Redis that failed over or came back empty) once it has been missing for a while.

Every key below may be lost (a failover loses the last writes; a Redis may come back empty): the
run's files on disk are the truth, and a run with neither lease nor marker is queued again. One pass
of the reconciler costs a few Redis commands whatever the number of runs (one MGET for all leases
and markers), so it does not grow with the cluster.

The Redis keys are named in run_keys.py.
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
from celery.utils.imports import symbol_by_name

from . import broker, paths, run_state
from .celery_app import app
from .errors import ChunkInterrupted, SupersmmError
from .lease import FIRST_TOKEN_LUA, Lease, LeaseLost, ttl_seconds
from .lease import holder as lease_holder
from .run_keys import RECONCILER_LOCK, control_key, fence_key, lease_key, pending_key, progress_key, route_key
from .shutdown import raise_if_stopping

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = ("queued", "running")
CONTROL_REQUESTS = ("paused", "cancelled")
RECONCILE_INTERVAL_VARIABLE = "SUPERSMM_RECONCILE_INTERVAL"
DEFAULT_RECONCILE_INTERVAL_S = 2.0
FAULT_VARIABLE = "SUPERSMM_FAULT"
UNSENT_MARKER_GRACE_S = 10.0  # a marker whose message was not sent by then belongs to a dead sender
MISSING_MESSAGE_GRACE_S = 30.0  # a marker older than this is looked for in the queues; absent, it is stale
MGET_BATCH = 1000
PROGRESS_EVERY_S = 1.0
# Where kombu's Redis transport keeps the messages that workers took and have not acknowledged yet.
KOMBU_UNACKED, KOMBU_UNACKED_INDEX = "unacked", "unacked_index"


# The marker is a JSON string (so that one MGET reads every run's marker); Lua reads its task id.
_MARKER_TASK_ID = """
local function marker_task_id(key)
  local marker = redis.call('GET', key)
  if not marker then return false end
  return cjson.decode(marker)['task_id']
end
"""

# Set the pending marker to a new chunk unless another live marker or a trainer is there.
# ARGV: new task id, the new marker (JSON), the stale task id it may replace ('' for none)
_MARK_PENDING = _MARKER_TASK_ID + """
local current = marker_task_id(KEYS[1])
if current and current ~= ARGV[3] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# The chunk named by the marker takes the lease (a new fencing token) and consumes the marker.
# Returns the token, 0 when someone holds the lease, -1 when the marker names another chunk.
_CLAIM = _MARKER_TASK_ID + FIRST_TOKEN_LUA + """
if marker_task_id(KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local token = next_token(KEYS[3])
redis.call('SET', KEYS[2], token .. '|' .. ARGV[3], 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
return token
"""

# The marker may already be claimed (deleted) by a fast worker: never recreate it. ARGV: task id, marker.
_MARK_SENT = _MARKER_TASK_ID + """
if marker_task_id(KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') and 1 end
return 0
"""

_DELETE_MARKER_IF_MINE = _MARKER_TASK_ID + """
if marker_task_id(KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def worker_redis() -> redis.Redis:
    """The Redis this process's Celery app uses as its broker (never starts an embedded one)."""
    return broker.client(app.conf.broker_url)


def chunk_trainer():
    """The function that trains a chunk: celeryconfig's `supersmm_train_chunk` ("module:function")."""
    return symbol_by_name(app.conf.supersmm_train_chunk)


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
    return configured_route(run)


def configured_route(run: str) -> tuple[str, int]:
    """The queue and priority in the run's config."""
    config = json.loads(paths.config_path(run).read_text("utf-8"))
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
    marker = {"task_id": task_id, "queue": queue, "queued_at": time.time(), "sent": False}
    marked = run_script(connection, _MARK_PENDING, [pending_key(run), lease_key(run)],
                        [task_id, json.dumps(marker), replacing])
    if not marked:
        return None
    # Sent through the broker of this moment's environment and without waiting on the result
    # backend: one process may serve several homes (tests, benchmarks). A pool per URL keeps one
    # connection for all sends. Progress reaches the backend through update_state(); outcomes
    # reach Flower through events.
    with _producer_pool(broker.broker_url()).acquire(block=True) as producer:
        train_chunk_task.apply_async(
            args=(run, first, last), task_id=task_id, queue=queue, priority=priority,
            shadow=f"{run}: epochs {first}-{last}", producer=producer, ignore_result=True)
    run_script(connection, _MARK_SENT, [pending_key(run)], [task_id, json.dumps({**marker, "sent": True})])
    return task_id


_producer_pools: dict = {}


def _producer_pool(url: str):
    """kombu's producer pool for a broker URL, made once per process (connections stay open between sends)."""
    if url not in _producer_pools:
        from kombu.pools import producers

        # The transport options of this URL, not of the one the process started with (celeryconfig's).
        options = dict(app.conf.broker_transport_options)
        if broker.is_sentinel(url):
            options["master_name"] = broker.sentinel_master()
        _producer_pools[url] = producers[app.connection_for_write(url, transport_options=options)]
    return _producer_pools[url]


def run_script(connection: redis.Redis, source: str, keys: list, args: list):
    """Run a Lua script by its hash (redis-py loads it again where a Redis restarted empty)."""
    if source not in _scripts:
        _scripts[source] = connection.register_script(source)
    return _scripts[source](keys=keys, args=args, client=connection)


_scripts: dict[str, object] = {}


def parse_marker(stored: str | None) -> dict:
    """A pending marker as stored ({} when none, or unreadable): task_id, queue, queued_at, sent."""
    try:
        marker = json.loads(stored) if stored else {}
    except ValueError:
        return {}
    return marker if isinstance(marker, dict) and "task_id" in marker else {}


def pending_chunk(connection: redis.Redis, run: str) -> dict:
    """The run's pending marker ({} when none): task_id, queue, queued_at, sent."""
    return parse_marker(connection.get(pending_key(run)))


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
        # A Redis that failed over may have lost our claim and kept our marker: without this, the
        # run would keep a marker whose message is gone. A newer marker is left alone.
        _delete_marker_if_mine(connection, run, self.request.id)
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
    ttl_s = ttl_seconds()
    deadline = time.monotonic() + 2 * ttl_s
    while True:
        token = int(run_script(connection, _CLAIM, [pending_key(run), lease_key(run), fence_key(run)],
                               [task_id, int(ttl_s * 1000), worker]))
        if token > 0:
            return Lease(connection, run, token, ttl_s)
        if token < 0:
            return None
        if time.monotonic() >= deadline:
            _delete_marker_if_mine(connection, run, task_id)
            return None
        time.sleep(0.5)


def _delete_marker_if_mine(connection: redis.Redis, run: str, task_id: str) -> None:
    try:
        run_script(connection, _DELETE_MARKER_IF_MINE, [pending_key(run)], [task_id])
    except redis.RedisError as error:  # the reconciler deals with a marker left behind
        logger.warning("run %s: could not withdraw the marker of chunk %s (%s)", run, task_id, error)


def _train_holding_lease(task, connection: redis.Redis, lease: Lease, run: str, worker: str) -> str:
    """Train the run's next chunk; returns "continue" when another chunk should follow, else the run's new status."""
    train_chunk = chunk_trainer()  # TensorFlow loads in workers only, and only when they train
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
    train_chunk(
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
    """Queue the next chunk of every run that should be training but has no trainer and no live chunk message.

    One MGET reads every run's lease and marker, and a run's state and config files are parsed again
    only when they changed, so a pass over a busy cluster costs a few commands and one stat per file.
    """
    runs = run_state.list_runs()
    leases, markers = _leases_and_markers(connection, runs)
    messages = MessageSnapshot(connection)
    requeued = []
    for run in runs:
        if leases[run] is not None:
            continue
        marker = parse_marker(markers[run])
        stale = _stale_marker(connection, run, marker, messages) if marker else ""
        if stale is None:
            continue
        try:
            status = _parsed_if_changed(paths.state_path(run), lambda: run_state.read_state(run)["status"])
        except SupersmmError as error:
            logger.warning("reconciler: skipping run %s: %s", run, error)
            continue
        if status in ACTIVE_STATUSES and queue_next_chunk(connection, run, replacing=stale):
            requeued.append(run)
    return requeued


_parsed: dict = {}


def _parsed_if_changed(path, parse):
    """parse(), or what it returned last time for this path if the file has not changed since (same inode,
    size and modification time; every write of a run file renames a new file into place)."""
    try:
        stat = path.stat()
        before = stat.st_ino, stat.st_size, stat.st_mtime_ns
    except FileNotFoundError:
        before = None
    cached = _parsed.get(path)
    if before is not None and cached is not None and cached[0] == before:
        return cached[1]
    value = parse()
    _parsed[path] = (before, value)  # a change during parse() shows at the next look
    return value


def _leases_and_markers(connection: redis.Redis, runs: list[str]) -> tuple[dict, dict]:
    """{run: lease value or None}, {run: stored marker or None}, read with one MGET per thousand keys."""
    keys = [key for run in runs for key in (lease_key(run), pending_key(run))]
    values = []
    for start in range(0, len(keys), MGET_BATCH):
        values += connection.mget(keys[start:start + MGET_BATCH])
    return dict(zip(runs, values[0::2])), dict(zip(runs, values[1::2]))


def _stale_marker(connection: redis.Redis, run: str, marker: dict, messages: "MessageSnapshot") -> str | None:
    """The marker's task id when no live message answers it; None when it is live.

    Called for runs that nobody holds. A message taken by a worker but unclaimed for a lease TTL was
    taken by a worker that died (a live one claims the run within milliseconds); a message in no
    queue and unacknowledged by no worker was lost with its Redis, or by a worker killed between
    taking it and recording that it did.
    """
    age = time.time() - float(marker.get("queued_at") or 0)
    if not marker.get("sent"):
        return marker["task_id"] if age > UNSENT_MARKER_GRACE_S else None
    configured_queue = _parsed_if_changed(paths.config_path(run), lambda: configured_route(run)[0])
    if marker.get("queue") != configured_queue and marker.get("queue") != run_route(connection, run)[0]:
        return marker["task_id"]  # re-routed: a `supersmm train` that ended, or a changed --queue
    taken_at = messages.taken_at(marker["task_id"])
    if taken_at is not None and time.time() - taken_at > ttl_seconds():
        return marker["task_id"]
    if taken_at is None and age > MISSING_MESSAGE_GRACE_S and messages.nowhere(marker["task_id"], marker["queue"]):
        return marker["task_id"]
    return None


class MessageSnapshot:
    """The chunk messages in kombu's Redis structures, read at most once per reconciler pass.

    Unacknowledged messages are in the hash `unacked` (delivery tag -> [message, exchange, routing key])
    with their delivery times in the sorted set `unacked_index`; queued ones in one list per queue and
    priority step (`supersmm`, `supersmm:1`, ...).
    """

    def __init__(self, connection: redis.Redis):
        self.connection = connection
        self._taken: dict[str, float] | None = None
        self._queued: dict[str, set[str]] = {}

    def taken_at(self, task_id: str) -> float | None:
        """When a worker took the message of chunk task_id from its queue, if it has not acknowledged it yet."""
        if self._taken is None:
            pipe = self.connection.pipeline(transaction=True)
            pipe.hgetall(KOMBU_UNACKED)
            pipe.zrange(KOMBU_UNACKED_INDEX, 0, -1, withscores=True)
            stored, index = pipe.execute()
            delivered = dict(index)
            self._taken = {}
            for tag, message in stored.items():
                task = _message_task_id(message, unacked=True)
                if task and tag in delivered:
                    self._taken[task] = delivered[tag]
        return self._taken.get(task_id)

    def nowhere(self, task_id: str, queue: str) -> bool:
        """Whether chunk task_id's message is neither in its queue nor taken (one read of the queue's lists)."""
        if queue not in self._queued:
            names = [queue] + [f"{queue}:{step}" for step in range(1, 10)]
            pipe = self.connection.pipeline(transaction=True)
            for name in names:
                pipe.lrange(name, 0, -1)
            pipe.hgetall(KOMBU_UNACKED)
            *lists, unacked = pipe.execute()
            found = {_message_task_id(message) for messages in lists for message in messages}
            found |= {_message_task_id(message, unacked=True) for message in unacked.values()}
            self._queued[queue] = found
        return task_id not in self._queued[queue]


def _message_task_id(stored: str, unacked: bool = False) -> str | None:
    """The task id in a kombu message as stored in Redis, or None when it is not a message of a task."""
    try:
        message = json.loads(stored)
        if unacked:
            message = message[0]
        return message.get("headers", {}).get("id")
    except (ValueError, LookupError, TypeError, AttributeError):
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
    # Import the trainer (TensorFlow) now rather than when a chunk arrives: a takeover starts training sooner.
    threading.Thread(target=chunk_trainer, name="supersmm-warm-up", daemon=True).start()


@worker_shutdown.connect
def _stop_worker_threads(**_) -> None:
    _reconciler_stop.set()
