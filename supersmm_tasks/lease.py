"""One trainer per run: a short Redis lease, a heartbeat that renews it, and a fencing token.

Each acquisition takes a new token from a per-run counter (INCR). A counter lost with its Redis (a
failover, a Redis restarted empty) starts again from the Redis clock in milliseconds, above every token
handed out before. A counter rolled back instead (a replica promoted without the last writes, an
append-only file that lost its last second) can hand out a token again, so a holder is known by its token
and a random nonce of its own: the lease key holds `TOKEN.NONCE|WORKER` and expires unless renewed.
`Lease.guard()` runs before every checkpoint, state or CSV write: atomically, it checks that the lease is
still this holder's and extends it, so a holder that was paused (SIGSTOP), cut off or superseded writes
nothing.

One heartbeat thread per process renews every lease the process keeps (a worker holds one at a time), so
taking and handing over a run neither starts nor joins a thread: under load, each of those waits for
the other thread to get a core.
"""
from __future__ import annotations

import os
import secrets
import threading
import time

import redis

from .errors import SupersmmError
from .run_keys import fence_key, lease_key

DEFAULT_TTL_S = 10.0
LEASE_TTL_VARIABLE = "SUPERSMM_LEASE_TTL"

# The lease's Redis value, `TOKEN.NONCE|WORKER`, is written and checked by these Lua functions alone (the scripts
# of chunk_queue.py that take or hand over a lease with a message use them too; `holder` reads the worker part).
#   take_lease(lease, counter, ttl_ms, nonce, worker): when nobody holds the lease, take it with the next fencing
#     token from `counter` and return the token; else 0. A missing counter starts at the clock in milliseconds
#     (13 digits: Lua writes numbers of up to 14 digits exactly).
#   holding(lease): the TOKEN.NONCE of whoever holds the lease, or nil.
#   release(lease, holding): delete the lease if that holder (TOKEN.NONCE) holds it; 1 if deleted, else 0.
LEASE_LUA = """
local function next_token(counter)
  if redis.call('EXISTS', counter) == 0 then
    local now = redis.call('TIME')
    redis.call('SET', counter, now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000)))
  end
  return redis.call('INCR', counter)
end

local function take_lease(lease, counter, ttl_ms, nonce, worker)
  if redis.call('EXISTS', lease) == 1 then return 0 end
  local token = next_token(counter)
  redis.call('SET', lease, token .. '.' .. nonce .. '|' .. worker, 'PX', ttl_ms)
  return token
end

local function holding(lease)
  local value = redis.call('GET', lease)
  return value and string.match(value, '^([^|]*)|')
end

local function release(lease, holder)
  if holding(lease) == holder then return redis.call('DEL', lease) end
  return 0
end
"""

_ACQUIRE = LEASE_LUA + "return take_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[3], ARGV[2])"

# Extend the lease only when this holder (TOKEN.NONCE) still holds it: 1 if extended, else 0.
_RENEW = LEASE_LUA + """
if holding(KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE = LEASE_LUA + "return release(KEYS[1], ARGV[1])"


class LeaseLost(SupersmmError):
    """This process no longer holds the run's lease: another trainer may own the run now."""


def ttl_seconds() -> float:
    return seconds_setting(LEASE_TTL_VARIABLE, DEFAULT_TTL_S)


def seconds_setting(variable: str, default: float) -> float:
    """A duration from the environment: `variable`'s positive number of seconds, else `default`."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise SupersmmError(f"{variable}={text!r}: give a number of seconds above 0 (default {default:g})")
    return seconds


def new_nonce() -> str:
    """A holder's own part of its lease value: tokens alone may repeat after a Redis rolled back."""
    return secrets.token_hex(8)


def holder(connection: redis.Redis, run: str) -> str | None:
    """Who holds the run's lease now (the worker name given at acquisition), or None."""
    value = connection.get(lease_key(run))
    return value.partition("|")[2] if value else None


class Lease:
    """The lease on one run held with one fencing token; renewed by the process's heartbeat while in use."""

    def __init__(self, connection: redis.Redis, run: str, token: int, nonce: str, ttl_s: float):
        self.connection = connection
        self.run = run
        self.token = token
        self.holding = f"{token}.{nonce}"  # what the lease key holds before `|WORKER` while it is ours
        self.ttl_ms = int(ttl_s * 1000)
        self._renew = connection.register_script(_RENEW)
        self._release = connection.register_script(_RELEASE)
        self._lost = threading.Event()
        self._given_up = False

    @classmethod
    def acquire(cls, connection: redis.Redis, run: str, worker: str, ttl_s: float | None = None) -> "Lease | None":
        """The run's lease with a fresh fencing token, or None when someone else holds it."""
        ttl_s, nonce = ttl_s or ttl_seconds(), new_nonce()
        token = connection.register_script(_ACQUIRE)(
            keys=[lease_key(run), fence_key(run)], args=[int(ttl_s * 1000), worker, nonce])
        return cls(connection, run, int(token), nonce, ttl_s) if token else None

    def guard(self) -> None:
        """Raise LeaseLost unless this token still holds the lease; on success the lease has a full TTL left."""
        if self._lost.is_set():
            raise LeaseLost(f"run {self.run}: lease token {self.token} was lost; another trainer may own the run")
        if not self._renew_once():
            self._lost.set()
            raise LeaseLost(f"run {self.run}: lease token {self.token} is no longer the holder; not writing")

    def start_heartbeat(self) -> None:
        """Have this process's heartbeat renew the lease every third of its TTL until it is given up."""
        _heartbeat.keep(self)

    def release(self) -> None:
        """Stop renewing the lease and delete it (a no-op once given up)."""
        if self.give_up():
            try:
                self._release(keys=[lease_key(self.run)], args=[self.holding])
            except redis.RedisError:
                pass  # an unreleased lease simply expires

    def give_up(self) -> bool:
        """Stop renewing the lease, for the caller to delete it (release, or a script that uses LEASE_LUA's release);
        False when it was given up before. A renewal already under way may still land: it extends the lease
        only while this holder (token and nonce) holds it, and the caller's delete follows."""
        _heartbeat.drop(self)
        first, self._given_up = not self._given_up, True
        return first

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @property
    def renewal_interval_s(self) -> float:
        return self.ttl_ms / 1000 / 3

    def _renew_once(self) -> bool:
        """True when renewed; False when another token holds (or nobody holds) the lease.

        Redis being briefly unreachable is retried until the lease would have expired anyway.
        """
        deadline = time.monotonic() + self.ttl_ms / 1000
        while True:
            try:
                return bool(self._renew(keys=[lease_key(self.run)], args=[self.holding, self.ttl_ms]))
            except redis.RedisError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.5)


class _Heartbeat:
    """The thread that renews the leases this process keeps, each every third of its TTL, in turn (one whose
    Redis is unreachable is retried for up to its TTL before the next is renewed)."""

    def __init__(self):
        self._due: dict[Lease, float] = {}  # lease -> when it is next renewed (time.monotonic())
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def keep(self, lease: Lease) -> None:
        with self._changed:
            self._due[lease] = time.monotonic() + lease.renewal_interval_s
            if self._thread is None or not self._thread.is_alive():  # started on first use, again should it die
                self._thread = threading.Thread(target=self._renew_forever, name="supersmm-lease-heartbeat",
                                                daemon=True)
                self._thread.start()
            self._changed.notify()

    def drop(self, lease: Lease) -> None:
        with self._changed:
            self._due.pop(lease, None)

    def _renew_forever(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                due = [lease for lease, at in self._due.items() if at <= now]
                if not due:
                    self._changed.wait(min(self._due.values(), default=now + 60) - now)
                    continue
            for lease in due:
                renewed = lease._renew_once()
                with self._changed:
                    if lease not in self._due:
                        continue  # given up meanwhile: what the renewal found does not matter any more
                    if renewed:
                        self._due[lease] = time.monotonic() + lease.renewal_interval_s
                    else:
                        del self._due[lease]
                        lease._lost.set()

    def _forget_in_forked_child(self) -> None:
        """A forked child keeps none of its parent's leases, and has neither its thread nor, maybe, a free lock."""
        self.__init__()


_heartbeat = _Heartbeat()
os.register_at_fork(after_in_child=_heartbeat._forget_in_forked_child)
