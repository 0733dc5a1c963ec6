"""A worker trains at a lower CPU priority than the user's own commands, from its first instruction.

Training is a batch job of hours; `supersmm enqueue`, `status`, the dashboard and the broker beside it
are what a person waits for. A worker therefore runs at the niceness SUPERSMM_WORKER_NICE (default 10;
0 keeps the priority it was given). Nothing is slower when the machine has nothing else to do:
niceness only decides who runs first when the cores are busy.

On Linux the scheduler first shares the CPU fairly between sessions (autogroups) and applies a process's
niceness only inside its session, so a worker that leads a session of its own (a service, the worker of
`supersmm train`, the tests' workers) gives its session the same niceness. A worker started from a
terminal leaves the terminal's session as it is. The kernel lets a user without CAP_SYS_ADMIN change
one session's niceness per 0.1 s, machine-wide: a worker started beside others retries until its turn.

Celery's own start costs about 0.6 s of CPU before the app is loaded, so `supersmm worker` and
`python -m supersmm_tasks.worker_priority celery ARGS` lower the priority before Celery is imported: a
worker that starts beside running ones takes its turn behind their handovers, not ahead of them.
"""
from __future__ import annotations

import errno
import os
import random
import sys
import time
from pathlib import Path

from .errors import SupersmmError

NICE_VARIABLE = "SUPERSMM_WORKER_NICE"
DEFAULT_NICE = 10
AUTOGROUP = Path("/proc/self/autogroup")
AUTOGROUP_RETRY_S = 10.0  # 50 workers started at once take 5 s of turns


def worker_niceness() -> int:
    """SUPERSMM_WORKER_NICE as a niceness of 0-19; SupersmmError for anything else."""
    value = os.environ.get(NICE_VARIABLE, "").strip()
    if not value:
        return DEFAULT_NICE
    try:
        niceness = int(value)
    except ValueError:
        niceness = -1
    if not 0 <= niceness <= 19:
        raise SupersmmError(f"{NICE_VARIABLE}={value!r}: give a niceness from 0 (as started) to 19 (lowest)")
    return niceness


def lower_worker_priority() -> int:
    """Bring this process (and its threads to come) and, when it leads its session, the session down to
    worker_niceness(); a priority already lower is kept. The niceness reached."""
    reached = os.nice(max(0, worker_niceness() - os.nice(0)))
    if os.getsid(0) == os.getpid() and AUTOGROUP.exists() and _autogroup_niceness() < reached:
        _set_autogroup_niceness(reached)
    return reached


def _autogroup_niceness() -> int:
    """The niceness of this process's session ("/autogroup-42 nice 10"); -1 where it cannot be read."""
    try:
        return int(AUTOGROUP.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return -1


def _set_autogroup_niceness(niceness: int) -> None:
    deadline = time.monotonic() + AUTOGROUP_RETRY_S
    while True:
        try:
            AUTOGROUP.write_text(str(niceness))
            return
        except OSError as error:
            # EAGAIN: another session's niceness changed within the last 0.1 s. Anything else is a kernel
            # without autogroups, or one that refuses: the process niceness stands.
            if error.errno != errno.EAGAIN or time.monotonic() >= deadline:
                return
            time.sleep(random.uniform(0.05, 0.15))


def main(argv: list[str]) -> None:
    """`python -m supersmm_tasks.worker_priority celery -A APP worker ...`: the command at the worker's niceness."""
    if not argv or argv[0] != "celery":
        raise SystemExit("usage: python -m supersmm_tasks.worker_priority celery -A APP worker [options]")
    try:
        lower_worker_priority()
    except SupersmmError as error:
        raise SystemExit(f"supersmm: error: {error}") from None
    from celery.__main__ import main as celery_main

    sys.argv = argv
    celery_main()


if __name__ == "__main__":
    main(sys.argv[1:])
