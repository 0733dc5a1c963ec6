"""Faults that tests inject with SUPERSMM_FAULT (comma-separated names), to prove that a run heals.

    before_claim      kill the worker between taking a chunk's message and claiming its run
    after_checkpoint  kill the worker between a chunk's last checkpoint and the queueing of the next chunk
    slow_batches      make every batch 0.2 s longer, so that a test can catch a trainer mid-epoch on any
                      machine (also when train_chunk is called directly, without Celery)

An unknown name is an error, raised when a worker starts, so that a typo cannot silently test nothing.
"""
from __future__ import annotations

import os
import signal
import time

from .errors import SupersmmError

FAULT_VARIABLE = "SUPERSMM_FAULT"
KILLS = ("before_claim", "after_checkpoint")
SLOW_BATCHES = "slow_batches"
SLOW_BATCH_S = 0.2


def injected() -> set[str]:
    """The fault names SUPERSMM_FAULT asks for; SupersmmError for a name that is no fault."""
    names = {name.strip() for name in os.environ.get(FAULT_VARIABLE, "").split(",") if name.strip()}
    unknown = names - {*KILLS, SLOW_BATCHES}
    if unknown:
        raise SupersmmError(f"{FAULT_VARIABLE}: unknown fault {', '.join(sorted(unknown))}; "
                            f"known: {', '.join((*KILLS, SLOW_BATCHES))}")
    return names


def kill_point(name: str) -> None:
    """Die here with SIGKILL, as in a power cut, when the fault `name` is injected."""
    assert name in KILLS, name
    if name in injected():
        os.kill(os.getpid(), signal.SIGKILL)


def slowed(on_progress):
    """on_progress, made SLOW_BATCH_S longer per call when slow_batches is injected."""
    if SLOW_BATCHES not in injected():
        return on_progress

    def slow_progress(progress: dict) -> None:
        time.sleep(SLOW_BATCH_S)
        if on_progress is not None:
            on_progress(progress)

    return slow_progress
