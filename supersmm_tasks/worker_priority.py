"""A worker trains at a lower CPU priority than the user's own commands.

Training is a batch job of hours; `supersmm enqueue`, `status`, the dashboard and the broker beside it
are what a person waits for. A worker therefore raises its niceness when it starts (SUPERSMM_WORKER_NICE,
default 10; 0 keeps the priority it was given). Nothing is slower when the machine has nothing else to
do: niceness only decides who runs first when the cores are busy.

On Linux the scheduler first shares the CPU fairly between sessions (autogroups) and applies a process's
niceness only inside its session, so a worker that leads a session of its own (a service, the worker of
`supersmm train`, the tests' workers) gives its session the same niceness. A worker started from a
terminal leaves the terminal's session as it is.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import SupersmmError

NICE_VARIABLE = "SUPERSMM_WORKER_NICE"
DEFAULT_NICE = 10
AUTOGROUP = Path("/proc/self/autogroup")


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
    """Raise this process's niceness (and its threads' to come) by worker_niceness(); the niceness reached."""
    niceness = worker_niceness()
    if niceness == 0:
        return os.nice(0)
    reached = os.nice(niceness)
    if os.getsid(0) == os.getpid() and AUTOGROUP.exists():
        try:
            AUTOGROUP.write_text(str(reached))
        except OSError:  # a kernel without autogroups, or one that refuses: the process niceness stands
            pass
    return reached
