"""The chunk queue protocol: which chunk message of a run counts, who may train it, where it goes.

A run has at most one chunk message that counts: the one named by its pending marker. The task that
carries it claims the run's lease and deletes the marker in one atomic step; any other copy (a
redelivery, a double enqueue, a message of a paused or re-routed run) finds a marker that is not its
own and does nothing. When a chunk ends the trainer hands the run over: one step releases its lease and
marks the next chunk pending, whose message then goes to the back of the run's queue, so runs sharing a
pool take turns.

The marker is JSON: task_id, queue, priority, queued_at, and the chunk's span (first_epoch,
last_epoch, chunk). Every key may be lost (a failover loses the last writes; a Redis may come back empty): the
run's files on disk are the truth, and the reconciler (reconciler.py) queues again a run that should
train and has neither lease nor marker. The keys are named in run_keys.py.

Celery is imported only to send a chunk, so that `supersmm status` reads the keys without it.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass

import redis

from . import broker, paths, run_config, run_state
from .chunk import ChunkSpan
from .errors import SupersmmError
from .lease import LEASE_LUA, Lease, new_nonce, ttl_seconds
from .run_keys import control_key, fence_key, lease_key, pending_key, route_key
from .run_status import CONTROL_REQUESTS, RunStatus

logger = logging.getLogger(__name__)

# kombu's Redis transport: the binding tables of an exchange (Celery names a queue's exchange as the queue)
KOMBU_BINDING_PREFIXES = ("_kombu.binding.", "_kombu.binding_permanent.")
CHUNK_TASK = "supersmm_tasks.train_chunk"  # the Celery task that trains a chunk (tasks.py)
CLAIM_RETRY_S = 0.5

# The marker is a JSON string (so that one MGET reads every run's marker); Lua reads its task id. One that
# cannot be read counts as no marker, as parse_marker has it: a new marker replaces it.
_MARKER_TASK_ID = """
local function marker_task_id(key)
  local marker = redis.call('GET', key)
  if not marker then return false end
  local readable, decoded = pcall(cjson.decode, marker)
  if not readable or type(decoded) ~= 'table' then return false end
  return decoded['task_id'] or false
end
"""

# Set the pending marker to a new chunk unless another live marker or a trainer is there; a trainer that
# hands its run over releases its lease in the same step, so the run is never seen with neither.
# KEYS: marker, lease, route. ARGV: new task id, the new marker (JSON, with the queue and priority of the
# run's config), the stale task id it may replace ('' for none), the lease holder (TOKEN.NONCE) to release ('' for none).
# Returns {1, queue, priority} when marked (a live `supersmm train` route overrides the config's), else {0}.
_QUEUE_NEXT = _MARKER_TASK_ID + LEASE_LUA + """
if ARGV[4] ~= '' then release(KEYS[2], ARGV[4]) end
local current = marker_task_id(KEYS[1])
if current and current ~= ARGV[3] then return {0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
local marker = cjson.decode(ARGV[2])
local route = redis.call('HMGET', KEYS[3], 'queue', 'priority')
if route[1] then
  marker['queue'] = route[1]
  marker['priority'] = tonumber(route[2]) or marker['priority']
end
redis.call('SET', KEYS[1], cjson.encode(marker))
return {1, marker['queue'], marker['priority']}
"""

# The chunk named by the marker takes the lease (a new fencing token) and consumes the marker.
# Returns {token, the user's control request or ''}: token 0 when someone holds the lease, -1 when the
# marker names another chunk. (The request comes along to save the trainer a round trip at every handover.)
_CLAIM = _MARKER_TASK_ID + LEASE_LUA + """
if marker_task_id(KEYS[1]) ~= ARGV[1] then return {-1, ''} end
local token = take_lease(KEYS[2], KEYS[3], ARGV[2], ARGV[4], ARGV[3])
if token == 0 then return {0, ''} end
redis.call('DEL', KEYS[1])
return {token, redis.call('GET', KEYS[4]) or ''}
"""

_DELETE_MARKER_IF_MINE = _MARKER_TASK_ID + """
if marker_task_id(KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _celery_app():
    from .celery_app import app

    return app


def worker_redis() -> redis.Redis:
    """The Redis this process's Celery app uses as its broker (never starts an embedded one)."""
    return broker.client(_celery_app().conf.broker_url)


# --- where the next chunk goes --------------------------------------------------------------------

def overriding_queue(connection: redis.Redis, run: str) -> str | None:
    """The queue of a live `supersmm train` of the run, which its chunks go to instead of the configured one."""
    return connection.hget(route_key(run), "queue")


def configured_route(run: str) -> tuple[str, int]:
    """The queue and priority in the run's config; SupersmmError naming the file where they cannot be used."""
    conf = _celery_app().conf
    config = run_config.stored_config(run)
    queue, priority = config.get("queue"), config.get("priority")
    if queue is not None and not (isinstance(queue, str) and queue.strip()):
        raise SupersmmError(f"{paths.config_path(run)}: queue {queue!r} is not a queue name")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= 9):
        raise SupersmmError(f"{paths.config_path(run)}: priority {priority!r} is not a whole number from 0 to 9")
    return queue or conf.task_default_queue, conf.task_default_priority if priority is None else priority


# --- the pending marker and the chunk's message ------------------------------------------------------

def queue_next_chunk(connection: redis.Redis, run: str, replacing: str = "", handing_over: Lease | None = None
                     ) -> dict | None:
    """Queue the run's next chunk; its marker, or None when a chunk is already pending, a trainer holds
    the run or no epoch is left.

    `replacing` names a pending marker known to be stale (the reconciler's case). `handing_over` is the
    lease of the trainer whose chunk just ended: it is released in the same step as the marker is set.
    """
    span = ChunkSpan.next_of(run_state.read_state(run, repair=False))  # the reconciler calls it without a lease
    if span is None:
        return None
    queue, priority = configured_route(run)
    task_id = f"{run}:{span.epochs}:{secrets.token_hex(4)}"
    marker = {"task_id": task_id, "queue": queue, "priority": priority,
              "queued_at": round(time.time(), 3),  # milliseconds: Lua's JSON keeps 14 digits
              "first_epoch": span.first_epoch, "last_epoch": span.last_epoch, "chunk": span.chunk}
    releasing = handing_over.holding if handing_over is not None and handing_over.give_up() else ""
    marked, *route = run_script(connection, _QUEUE_NEXT, [pending_key(run), lease_key(run), route_key(run)],
                                [task_id, json.dumps(marker), replacing, releasing])
    if not marked:
        return None
    marker["queue"], marker["priority"] = route[0], int(route[1])
    _send_chunk(run, span, task_id, marker["queue"], marker["priority"])
    return marker


def _send_chunk(run: str, span: ChunkSpan, task_id: str, queue: str, priority: int) -> None:
    """The chunk's message, carrying its span as plain numbers.

    Sent through the broker of this moment's environment and without waiting on the result backend:
    one process may serve several homes (tests, benchmarks). A pool per URL keeps one connection for
    all sends. Its result is not stored: progress goes to the run's progress key, outcomes reach Flower
    through events.
    """
    with _producer_pool(broker.broker_url()).acquire(block=True) as producer:
        _celery_app().send_task(
            CHUNK_TASK, args=(run, span.first_epoch, span.last_epoch, span.chunk), task_id=task_id, queue=queue,
            priority=priority, shadow=f"{run}: epochs {span.epochs}", producer=producer, ignore_result=True)


_producer_pools: dict = {}
_producer_pools_lock = threading.Lock()  # a worker's chunk and its reconciler thread may send at the same moment


def _producer_pool(url: str):
    """kombu's producer pool for a broker URL, made once per process (connections stay open between sends)."""
    with _producer_pools_lock:
        if url not in _producer_pools:
            from kombu.pools import producers

            app = _celery_app()
            # The transport options of this URL, not of the one the process started with (celeryconfig's).
            options = dict(app.conf.broker_transport_options)
            if broker.is_sentinel(url):
                options.update(broker.sentinel_transport_options())
            _producer_pools[url] = producers[app.connection_for_write(url, transport_options=options)]
        return _producer_pools[url]


def queue_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps a queue's messages in: one per priority step (celeryconfig's `sep` and
    `priority_steps`)."""
    return [queue] + [f"{queue}:{step}" for step in range(1, 10)]


def queue_of_key(key: str) -> str:
    """The queue whose list (queue_lists) or kombu binding table a Redis key is; the key itself for any other."""
    for prefix in KOMBU_BINDING_PREFIXES:
        key = key.removeprefix(prefix)
    return key.split(":")[0]


def forget_queue(connection: redis.Redis, queue: str) -> None:
    """Delete a queue nobody consumes any more (a `supersmm train`'s own, once its worker has stopped) and kombu's
    binding of it. A message left in it is stale: the run's marker names a route that has ended, and the
    reconciler queues the chunk again on the run's own queue."""
    try:
        connection.delete(*queue_lists(queue), *(prefix + queue for prefix in KOMBU_BINDING_PREFIXES))
    except redis.RedisError as error:  # a queue left behind costs a few bytes
        logger.warning("queue %s not deleted (%s)", queue, error)


def run_script(connection: redis.Redis, source: str, keys: list, args: list):
    """Run a Lua script by its hash (redis-py loads it again where a Redis restarted empty)."""
    if source not in _scripts:
        _scripts[source] = connection.register_script(source)
    return _scripts[source](keys=keys, args=args, client=connection)


_scripts: dict[str, object] = {}


def parse_marker(stored: str | None) -> dict:
    """A pending marker as stored ({} when none, or unreadable)."""
    try:
        marker = json.loads(stored) if stored else {}
    except ValueError:
        return {}
    return marker if isinstance(marker, dict) and "task_id" in marker else {}


def pending_chunk(connection: redis.Redis, run: str) -> dict:
    """The run's pending marker ({} when none)."""
    return parse_marker(connection.get(pending_key(run)))


def marker_epochs(marker: dict) -> str:
    """"first-last" of the chunk a marker names."""
    return f"{marker.get('first_epoch')}-{marker.get('last_epoch')}"


def withdraw_pending_chunk(connection: redis.Redis, run: str) -> None:
    """Make the queued message of the run stale: it will find no marker and do nothing."""
    connection.delete(pending_key(run))


def delete_marker_if_mine(connection: redis.Redis, run: str, task_id: str) -> None:
    try:
        run_script(connection, _DELETE_MARKER_IF_MINE, [pending_key(run)], [task_id])
    except redis.RedisError as error:  # the reconciler deals with a marker left behind
        logger.warning("run %s: could not withdraw the marker of chunk %s (%s)", run, task_id, error)


# --- claiming a run for a chunk ----------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    lease: Lease
    control: RunStatus | None  # the user's pause or cancel request standing when the run was claimed


def claim(connection: redis.Redis, run: str, task_id: str, worker: str) -> Claim | None:
    """The run's lease for chunk task_id with the user's standing control request, or None when the chunk
    is stale.

    A lease still held means the previous holder is finishing or dying; its lease expires within
    one TTL, so wait that long before giving the chunk back to the reconciler.
    """
    ttl_s, nonce = ttl_seconds(), new_nonce()
    deadline = time.monotonic() + 2 * ttl_s
    while True:
        token, control = run_script(connection, _CLAIM,
                                    [pending_key(run), lease_key(run), fence_key(run), control_key(run)],
                                    [task_id, int(ttl_s * 1000), worker, nonce])
        token = int(token)
        if token > 0:
            return Claim(Lease(connection, run, token, nonce, ttl_s), _control_request(control))
        if token < 0:
            return None
        if time.monotonic() >= deadline:
            delete_marker_if_mine(connection, run, task_id)
            return None
        time.sleep(CLAIM_RETRY_S)


# --- the user's control requests (pause, cancel) ----------------------------------------------------

def request_control(connection: redis.Redis, run: str, request: RunStatus) -> None:
    """Ask the run's trainer to stop at its next epoch boundary, paused or cancelled."""
    connection.set(control_key(run), RunStatus(request).value)


def clear_control(connection: redis.Redis, run: str) -> None:
    connection.delete(control_key(run))


def withdraw_control(connection: redis.Redis, run: str, request: RunStatus) -> bool:
    """Delete the run's request if it is still `request` (a cancel that replaced a pause stays); True if deleted."""
    return bool(run_script(connection, _WITHDRAW_CONTROL, [control_key(run)], [RunStatus(request).value]))


_WITHDRAW_CONTROL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def read_control(connection: redis.Redis, run: str) -> RunStatus | None:
    """PAUSED or CANCELLED when the user asked for it, else None (also when Redis is unreachable)."""
    try:
        return _control_request(connection.get(control_key(run)))
    except redis.RedisError:
        return None


def _control_request(stored: str | None) -> RunStatus | None:
    return RunStatus(stored) if stored in CONTROL_REQUESTS else None
