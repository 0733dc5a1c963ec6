"""The reconciler: it queues again every run that should train but has no trainer and no live chunk message.

A worker that dies leaves a run whose status says queued/running, with no lease (it expires) and no
pending marker. Every worker runs a reconciler thread that finds such runs and queues their next
chunk; a Redis lock lets one worker act per interval, and the marker makes a double enqueue impossible
anyway. A worker that dies after taking a chunk's message but before claiming the run leaves a marker
whose message sits unacknowledged; the reconciler replaces that marker once the message has gone a
lease TTL unclaimed, and a marker whose message is nowhere (lost with a Redis that failed over or came
back empty, or never sent by a worker that died right after setting the marker) once it has been missing
for a while.

One pass costs a few Redis commands whatever the number of runs (one MGET for all leases and markers),
so it does not grow with the cluster.
"""
from __future__ import annotations

import json
import logging
import threading
import time

import redis

from . import broker, chunk_queue, paths, run_state
from .lease import seconds_setting, ttl_seconds
from .run_keys import RECONCILER_LOCK, lease_key, pending_key
from .run_status import ACTIVE

logger = logging.getLogger(__name__)

RECONCILE_INTERVAL_VARIABLE = "SUPERSMM_RECONCILE_INTERVAL"
DEFAULT_RECONCILE_INTERVAL_S = 2.0
MISSING_MESSAGE_GRACE_S = 30.0  # a marker older than this is looked for in the queues; absent, it is stale
MGET_BATCH = 1000
# Where kombu's Redis transport keeps the messages that workers took and have not acknowledged yet.
KOMBU_UNACKED, KOMBU_UNACKED_INDEX = "unacked", "unacked_index"


def reconcile_interval() -> float:
    return seconds_setting(RECONCILE_INTERVAL_VARIABLE, DEFAULT_RECONCILE_INTERVAL_S)


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
        try:  # a run whose files cannot be used is skipped, not the pass: the other runs still heal
            if _heal(connection, run, chunk_queue.parse_marker(markers[run]), messages):
                requeued.append(run)
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # the broker's trouble, not the run's: the reconciler's loop says so once and tries again
        except Exception as error:
            logger.warning("reconciler: skipping run %s: %s", run, error)
    return requeued


def _heal(connection: redis.Redis, run: str, marker: dict | None, messages: "MessageSnapshot") -> bool:
    """Queue the next chunk of a run nobody holds when it should train and has no live chunk; whether it did."""
    stale = _stale_marker(connection, run, marker, messages) if marker else ""
    if stale is None:
        return False
    # Read only: the reconciler holds no lease, and a state it rebuilt would be a write without one.
    status = _parsed_if_changed(paths.state_path(run), lambda: run_state.read_state(run, repair=False)["status"])
    return status in ACTIVE and chunk_queue.queue_next_chunk(connection, run, replacing=stale) is not None


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
    taking it and recording that it did, or never sent by a sender that died after setting the marker.
    """
    age = time.time() - float(marker.get("queued_at") or 0)
    configured_queue = _parsed_if_changed(paths.config_path(run), lambda: chunk_queue.configured_route(run)[0])
    if marker.get("queue") != configured_queue and marker.get("queue") != chunk_queue.overriding_queue(connection, run):
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
            names = chunk_queue.queue_lists(queue)
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


# --- the thread every worker runs ------------------------------------------------------------------

_stop = threading.Event()


def start(worker: str) -> None:
    """Start this process's reconciler thread (at most one acts per interval across all workers)."""
    threading.Thread(target=_reconcile_forever, args=(_stop, worker), name="supersmm-reconciler",
                     daemon=True).start()


def stop() -> None:
    _stop.set()


def _reconcile_forever(stop: threading.Event, worker: str) -> None:
    interval = reconcile_interval()
    while True:
        try:
            broker.restart_embedded_if_crashed()
            connection = chunk_queue.worker_redis()
            if connection.set(RECONCILER_LOCK, worker, nx=True, px=int(interval * 900)):
                for run in reconcile_once(connection):
                    logger.warning("run %s had no trainer and no queued chunk: queued its next chunk", run)
        except Exception:  # the reconciler must outlive a Redis restart or an unreadable run folder
            logger.exception("reconciler pass failed")
        if stop.wait(interval):
            return
