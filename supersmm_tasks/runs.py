"""What the CLI does to runs: enqueue, train in the foreground, pause, resume, cancel (status: run_summary.py).

Every function returns what the CLI prints and raises SupersmmError for what the user can fix.
Changes to an idle run's state happen while holding the run's lease, as a trainer would, so a
worker that picks the run up at the same moment never interleaves its writes with ours.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import redis

from . import broker, chunk_queue, paths, run_keys, run_state, stall
from .errors import SupersmmError
from .lease import Lease, ttl_seconds
from .lease import holder as lease_holder
from .run_config import create_or_update_run, load_run_config
from .run_status import ACTIVE, ENDED, TIME_BUDGET_USED, RunStatus, may_move, transition

FOREGROUND_ROUTE_TTL_S = 10  # shorter than a lease: when `supersmm train` dies, its route is gone before its lease
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # `timeout`, `kill`, a closed terminal
CLI_HOLDER = "cli:"  # a run's lease held by a command of ours, not a trainer: `cli:HOST:PID`
OTHER_COMMAND_WAIT_S = 120  # a pause or cancel waits this long for another command's change of the run
ORPHAN_STOP_S = 30  # an orphaned foreground worker stops within seconds; a dead one's lease expires within a TTL


# --- enqueue and train ---------------------------------------------------------------------------

def enqueue(name: str, dataset: str | None = None, priority: int | None = None, **overrides) -> str:
    """Create run NAME or continue it, and queue its next chunk; returns at once with one line to print."""
    connection = _connect_to_send()
    return _enqueue(connection, name, dataset, priority=priority, **overrides)


def _connect_to_send() -> redis.Redis:
    """The broker, answering; and the result backend's URL checked too, which Celery reads only when the first
    chunk is sent: after the run was created."""
    connection = broker.connect()
    broker.result_backend_url()
    return connection


def _enqueue(connection: redis.Redis, name: str, dataset: str | None, **overrides) -> str:
    settings = {key: value for key, value in overrides.items() if value is not None}
    busy = _activity(connection, name)
    if busy:
        if dataset is not None or settings:
            raise SupersmmError(f"run {name} {busy}: pause it (`supersmm pause {name}`) before changing its settings")
        return f"run {name} {busy}; nothing queued"
    with _idle_run_lease(connection, name) as held:
        if held is None:
            return f"run {name} {_activity(connection, name) or 'was just picked up by a worker'}; nothing queued"
        if paths.config_path(name).is_file() and run_state.read_state(name)["status"] == RunStatus.CANCELLED:
            raise SupersmmError(f"run {name} was cancelled; start a new run under another name")  # nothing changed
        create_or_update_run(name, dataset, **settings)
        state = run_state.read_state(name)
        if state["status"] == RunStatus.COMPLETED:
            config = load_run_config(name)
            longer = (f"--max-minutes {config.max_minutes * 2:g}" if state.get("stop_reason") == TIME_BUDGET_USED
                      else f"--max-total-epochs {max(state['max_total_epochs'], state['last_completed_epoch']) * 2}")
            return (f"run {name} is complete ({state['last_completed_epoch']}/{state['max_total_epochs']} epochs, "
                    f"{state.get('stop_reason') or 'done'}); to train longer: supersmm enqueue {name} {longer}")
        chunk_queue.clear_control(connection, name)
        if state["status"] != RunStatus.QUEUED:
            state = transition(name, RunStatus.QUEUED, guard=held.guard, error="")
    # A worker's reconciler may queue the chunk between our lease's release and this line: the run is
    # queued all the same, by its one marker.
    marker = chunk_queue.queue_next_chunk(connection, name) or chunk_queue.pending_chunk(connection, name)
    if not marker:
        return f"run {name} {_activity(connection, name) or 'is queued'}"
    return (f"queued run {name}: epochs {chunk_queue.marker_epochs(marker)} of {state['max_total_epochs']} "
            f"on queue {marker['queue']}")


def _activity(connection: redis.Redis, name: str) -> str:
    """'is training on WORKER' / 'is queued (epochs a-b)' when a trainer or a chunk message is live, else ''."""
    worker = lease_holder(connection, name)
    if worker and run_state.peek_state(name).get("status") in ENDED:
        # The trainer that ended the run wrote its last state and lets go of the lease right after (or died).
        worker = _wait_for_release(connection, name, within_s=ttl_seconds())
    if worker:
        return f"is training on {worker}"
    marker = chunk_queue.pending_chunk(connection, name)
    if marker:
        return f"is queued (epochs {chunk_queue.marker_epochs(marker)} on queue {marker.get('queue')})"
    return ""


@contextmanager
def _idle_run_lease(connection: redis.Redis, name: str):
    """The run's lease for a CLI change, or None when a worker holds it."""
    held = Lease.acquire(connection, name, worker=f"{CLI_HOLDER}{socket.gethostname()}:{os.getpid()}")
    if held is not None:
        held.start_heartbeat()  # creating a run on a large corpus may take longer than one TTL
    try:
        yield held
    finally:
        if held is not None:
            held.release()


def train_foreground(name: str, dataset: str | None = None, priority: int | None = None, **overrides) -> int:
    """Enqueue run NAME and train it with a worker of our own, showing progress until the run ends.

    Ctrl-C pauses the run at the end of the current epoch and stops the worker; a later call
    continues from there. SIGTERM or a closed terminal stop the worker at once (mid-epoch, writing
    nothing); a worker whose `supersmm train` was killed outright stops by itself, and a later call
    waits for it and takes over. Returns the exit code: 0 when the run ended, 130 when interrupted
    (128 + the signal when terminated), 1 otherwise.
    """
    check_worker_settings()  # our worker would refuse to start: say why before anything is queued
    connection = _connect_to_send()
    holder = lease_holder(connection, name)
    if holder and _orphaned_foreground_worker(holder, name):
        print(f"run {name}: waiting for {holder}, the worker of a `supersmm train` that was killed, to stop",
              file=sys.stderr)
        holder = _wait_for_release(connection, name, within_s=2 * ttl_seconds() + ORPHAN_STOP_S)  # stops, or expires
    if holder:
        raise SupersmmError(f"run {name} is training on {holder}; watch it with `supersmm status {name}`")
    queue = _foreground_queue(name, os.getpid())
    route = _ForegroundRoute(connection, name, queue, priority)
    other = route.claim()
    if other:
        raise SupersmmError(f"run {name} is being trained by another `supersmm train` ({other}); "
                            f"watch it with `supersmm status {name}`")
    _forget_queues_of_killed_calls(connection, name)
    worker = None
    previous_handlers = {number: signal.signal(number, _exit_on_signal) for number in STOPPING_SIGNALS}
    try:
        marker = chunk_queue.pending_chunk(connection, name)
        if marker and marker.get("queue") != queue:
            chunk_queue.withdraw_pending_chunk(connection, name)  # its message waits elsewhere; ours replaces it
        print(_enqueue(connection, name, dataset, priority=priority, **overrides), file=sys.stderr)
        state = run_state.read_state(name)
        if state["status"] not in ACTIVE:
            return 0 if state["status"] == RunStatus.COMPLETED else 1
        worker, log_path = _start_foreground_worker(name, queue)
        return _follow(connection, name, worker, log_path)
    finally:
        route.stop()
        if worker is not None:
            _stop_worker(worker)
        chunk_queue.forget_queue(connection, queue)
        for number, handler in previous_handlers.items():
            signal.signal(number, handler)


def _foreground_queue_prefix(name: str) -> str:
    return f"supersmm_train_{name}_"  # then the pid of the `supersmm train` call


def _foreground_queue(name: str, pid: int) -> str:
    return f"{_foreground_queue_prefix(name)}{pid}"


def _other_foreground_call(connection: redis.Redis, name: str) -> tuple[str, str | None]:
    """(the route's queue as seen, "" for none; 'process PID on HOST' of the `supersmm train NAME` behind it when that
    call lives, else None). A route is refreshed while its call lives; one on this machine whose process is gone
    is not waited for."""
    deadline = time.monotonic() + FOREGROUND_ROUTE_TTL_S + 1
    while True:
        queue, host = connection.hmget(run_keys.route_key(name), "queue", "host")
        if not queue:
            return "", None
        pid = queue.removeprefix(_foreground_queue_prefix(name))
        if host == socket.gethostname() and pid.isdigit() and (int(pid) == os.getpid() or
                                                                not psutil.pid_exists(int(pid))):
            return queue, None  # killed outright (or our pid before a restart): its route expires within seconds
        if host != socket.gethostname() and time.monotonic() < deadline:
            time.sleep(0.5)  # maybe killed outright: a route that is not refreshed expires
            continue
        return queue, f"process {pid} on {host or 'another machine'}"


def _forget_queues_of_killed_calls(connection: redis.Redis, name: str) -> None:
    """Delete the private queues (and kombu's bindings of them) that earlier `supersmm train NAME` calls left
    when they were killed outright: no other call lives (_other_foreground_call), and this one's queue is not
    made yet."""
    prefix = _foreground_queue_prefix(name)
    queues = {chunk_queue.queue_of_key(key) for key in connection.scan_iter(match=f"*{prefix}*", count=1000)}
    for queue in (queue for queue in queues if queue.removeprefix(prefix).isdigit()):
        chunk_queue.forget_queue(connection, queue)


def _exit_on_signal(number: int, _frame) -> None:
    raise SystemExit(128 + number)  # unwinds through train_foreground's cleanup, which stops the worker


def _foreground_worker_prefix(name: str) -> str:
    return f"train_{name}_"  # then the pid of the `supersmm train` call, @ the host


def _orphaned_foreground_worker(holder: str, name: str) -> bool:
    """Whether `holder` is the worker of a `supersmm train NAME` on this machine whose process is gone."""
    prefix, _, host = holder.partition("@")
    parent = prefix.removeprefix(_foreground_worker_prefix(name))
    if host != socket.gethostname() or parent == prefix or not parent.isdigit():
        return False
    return not psutil.pid_exists(int(parent))


def _wait_for_release(connection: redis.Redis, name: str, within_s: float) -> str | None:
    """The lease's holder once it is gone (None), or after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while (holder := lease_holder(connection, name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return holder


# Replace the route with (ARGV: queue, priority, host, TTL s), or delete it where the queue given is '', only where
# it still holds the queue looked at (ARGV[1], '' for none): 1 if done, else 0.
_CLAIM_ROUTE = """
if (redis.call('HGET', KEYS[1], 'queue') or '') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '' then return 1 end
redis.call('HSET', KEYS[1], 'queue', ARGV[2], 'priority', ARGV[3], 'host', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class _ForegroundRoute:
    """Routes the run's chunks to this call's private queue for as long as this process lives."""

    def __init__(self, connection: redis.Redis, name: str, queue: str, priority: int | None):
        self.connection = connection
        self.run, self.key = name, run_keys.route_key(name)
        self.fields = {"queue": queue, "priority": 0 if priority is None else priority, "host": socket.gethostname()}
        self._claim_script = connection.register_script(_CLAIM_ROUTE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, daemon=True)

    def claim(self) -> str | None:
        """Route the run to this call unless another live call has it ('process PID on HOST' of that one). The
        route is written only where it still holds what was looked at: of two calls started at once, one wins."""
        while True:
            seen, other = _other_foreground_call(self.connection, self.run)
            if other:
                return other
            if self._replace(seen):
                self._thread.start()
                return None

    def _replace(self, seen: str) -> bool:
        return bool(self._claim_script(keys=[self.key], args=[
            seen, self.fields["queue"], self.fields["priority"], self.fields["host"], FOREGROUND_ROUTE_TTL_S]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        try:  # ours only: a call that took over once ours expired (Redis down meanwhile) keeps its route
            self._claim_script(keys=[self.key], args=[self.fields["queue"], "", "", "", 0])
        except redis.RedisError:
            pass  # it expires by itself

    def _refresh(self) -> None:
        """Keep the route while it is ours, and write it again where it is gone (a Redis restarted empty); one that
        another call took meanwhile (ours expired while Redis was out of reach) is left to it."""
        while not self._stop.wait(FOREGROUND_ROUTE_TTL_S / 3):
            try:
                if not (self._replace(self.fields["queue"]) or self._replace("")):
                    return
            except redis.RedisError:
                pass  # Redis is restarting; the worker copes, and so do we next time round


def _start_foreground_worker(name: str, queue: str) -> tuple[subprocess.Popen, Path]:
    from .shutdown import PARENT_VARIABLE  # it imports Celery's signals: not at the top, for `supersmm status`

    log_path = paths.foreground_worker_log(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "supersmm_tasks.worker_priority",  # at the worker's niceness from its start
               "celery", "-A", "supersmm_tasks", "worker", "-Q", queue,
               "-n", f"{_foreground_worker_prefix(name)}{os.getpid()}@%h", "--loglevel", "INFO"]
    environment = {**os.environ, PARENT_VARIABLE: str(os.getpid())}  # it stops when we are gone
    with open(log_path, "ab") as log:
        # Its own session: Ctrl-C reaches only us, and we decide how the worker stops.
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=environment)
    return worker, log_path


def _follow(connection: redis.Redis, name: str, worker: subprocess.Popen, log_path: Path) -> int:
    """Show a progress bar until the run leaves queued/running; Ctrl-C pauses it."""
    from tqdm import tqdm

    state = run_state.read_state(name)
    bar = tqdm(total=state["max_total_epochs"], initial=state["last_completed_epoch"] or 0,
               desc=name, unit="epoch", dynamic_ncols=True)
    interrupted = False
    try:
        while True:
            try:
                time.sleep(0.5)
                state = run_state.read_state(name)
                _update_bar(bar, connection, name, state)
                if state["status"] not in ACTIVE:
                    break
                if worker.poll() is not None:
                    bar.close()
                    print(_worker_ended_line(name, worker.returncode, log_path), file=sys.stderr)
                    return 1
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                chunk_queue.request_control(connection, name, RunStatus.PAUSED)
                bar.write("pausing at the end of this epoch (Ctrl-C again to stop at once; the run then resumes from its last epoch)")
    except KeyboardInterrupt:
        worker.kill()
        bar.close()
        return 130
    bar.close()
    print(_final_line(name, state), file=sys.stderr)
    if interrupted:
        return 130
    return 0 if state["status"] == RunStatus.COMPLETED else 1


def _update_bar(bar, connection: redis.Redis, name: str, state: dict) -> None:
    bar.n = state["last_completed_epoch"] or 0
    bar.total = state["max_total_epochs"]  # a budget changed while training
    progress = json.loads(connection.get(run_keys.progress_key(name)) or "{}")
    postfix = {}
    if "loss" in progress:
        postfix["loss"] = f"{float(progress['loss']):.3f}"
    if state.get("best_val_ser") is not None:
        postfix["best val SER"] = f"{state['best_val_ser']:.2f}%"
    bar.set_postfix(postfix, refresh=False)
    bar.refresh()


def _worker_ended_line(name: str, exit_code: int, log_path: Path) -> str:
    if exit_code == stall.EXIT_STALLED:
        return (f"the worker's training hung (no progress for {stall.limit_seconds():g} s, {stall.STALL_LIMIT_VARIABLE}) "
                f"and it exited; `supersmm train {name}` continues the run from its last epoch; see {log_path}")
    return f"the worker stopped unexpectedly (exit {exit_code}); see {log_path}"


def _final_line(name: str, state: dict) -> str:
    line = f"run {name} {state['status']} at epoch {state['last_completed_epoch']}/{state['max_total_epochs']}"
    if state.get("stop_reason"):
        line += f" ({state['stop_reason']})"
    if state.get("error"):
        line += f": {state['error']}"
    return line


def _stop_worker(worker: subprocess.Popen) -> None:
    """Warm shutdown (the worker is idle by now); SIGKILL if it does not exit in time."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


# --- workers -------------------------------------------------------------------------------------

def check_worker_settings() -> None:
    """SupersmmError naming the first bad setting a worker reads (fault names, the lease TTL, the reconcile interval,
    the stall limit, the niceness): a worker refuses to start with it."""
    from . import faults, reconciler
    from .worker_priority import worker_niceness

    faults.injected()
    ttl_seconds(), reconciler.reconcile_interval(), stall.limit_seconds(), worker_niceness()


def run_worker(celery_args: list[str]) -> int:
    """Run a Celery worker with the project's configuration (celeryconfig.py); `celery worker` options pass through."""
    from .celery_app import app

    argv = ["worker", *celery_args]
    if not any(arg in ("-l", "--loglevel") or arg.startswith("--loglevel=") for arg in celery_args):
        argv += ["--loglevel", "INFO"]
    try:
        app.worker_main(argv)
    except ImportError as error:  # `--pool custom` without its module fails inside Celery's option parsing
        pool_given = any(arg in ("-P", "--pool") or arg.startswith("--pool=") for arg in celery_args)
        hint = " (a worker trains with --pool threads, its default)" if pool_given else ""
        raise SupersmmError(f"the worker cannot start: {error}{hint}") from None
    return 0


# --- pause, resume, cancel -----------------------------------------------------------------------

def pause(name: str) -> str:
    """Hold the run at its next epoch boundary (at once when no worker trains it)."""
    return _request_stop(name, RunStatus.PAUSED)


def cancel(name: str) -> str:
    """Stop the run for good, at its next epoch boundary (at once when no worker trains it)."""
    return _request_stop(name, RunStatus.CANCELLED)


def _request_stop(name: str, request: RunStatus) -> str:
    _require_run(name)
    connection = broker.connect()
    deadline = time.monotonic() + OTHER_COMMAND_WAIT_S
    while True:
        state = run_state.read_state(name)
        if not may_move(state["status"], request):
            return f"run {name} is {state['status']}; nothing to do"
        chunk_queue.request_control(connection, name, request)
        with _idle_run_lease(connection, name) as held:
            if held is not None:
                chunk_queue.withdraw_pending_chunk(connection, name)
                transition(name, request, guard=held.guard)
                return f"run {name} {request} at epoch {state['last_completed_epoch']}/{state['max_total_epochs']}"
        holder = lease_holder(connection, name)
        if not (holder or "").startswith(CLI_HOLDER):
            return f"run {name} will be {request} at the end of its current epoch (training on {holder or 'a worker'})"
        # Another command (an enqueue) is changing the run and would clear our request: ask again after it.
        if _wait_for_release(connection, name, within_s=deadline - time.monotonic()):
            raise SupersmmError(f"run {name} is being changed by another command ({holder}); try again when it ends")


def resume(name: str) -> str:
    """Let a paused run go on: queue its next chunk (or withdraw a pause not yet applied)."""
    _require_run(name)
    connection = broker.connect()
    state = run_state.read_state(name)
    if state["status"] == RunStatus.PAUSED:
        return _enqueue(connection, name, None)
    if state["status"] in ACTIVE and chunk_queue.read_control(connection, name) == RunStatus.PAUSED:
        with run_state.state_lock(name):  # where a trainer reads the request again before it writes paused
            withdrawn = chunk_queue.withdraw_control(connection, name, RunStatus.PAUSED)
            paused = run_state.read_state(name)["status"] == RunStatus.PAUSED
        if not withdrawn:  # a cancel replaced the pause, or another command cleared it: look again
            return resume(name)
        if paused:  # its trainer applied the pause meanwhile
            return _enqueue(connection, name, None)
        return f"pause of run {name} withdrawn; it goes on"
    return f"run {name} is {state['status']}, not paused; nothing to do"


def _require_run(name: str) -> None:
    if not paths.config_path(name).is_file():
        raise SupersmmError(f"no run named {name!r} in {paths.models_dir()}")
