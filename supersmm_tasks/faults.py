"""Faults that tests inject with SUPERSMM_FAULT (comma-separated names), to prove that a run heals.

    before_claim      kill the worker between taking a chunk's message and claiming its run
    after_checkpoint  kill the worker between a chunk's last checkpoint and the queueing of the next chunk
    slow_batches      make every batch 0.2 s longer, so that a test can catch a trainer mid-epoch on any
                      machine (also when train_chunk is called directly, without Celery)
    hang_in_epoch_2   stop the training for good at epoch 2's first batch, its process running on (a deadlock,
                      a GPU that stopped answering)

An unknown name is an error, raised when a worker starts, so that a typo cannot silently test nothing.
"""
from __future__ import annotations

import os
import signal
import threading
import time

from .errors import SupersmmError

FAULT_VARIABLE = "SUPERSMM_FAULT"
KILLS = ("before_claim", "after_checkpoint")
SLOW_BATCHES = "slow_batches"
SLOW_BATCH_S = 0.2
HANG = "hang_in_epoch_2"


def injected() -> set[str]:
    """The fault names SUPERSMM_FAULT asks for; SupersmmError for a name that is no fault."""
    names = {name.strip() for name in os.environ.get(FAULT_VARIABLE, "").split(",") if name.strip()}
    unknown = names - {*KILLS, SLOW_BATCHES, HANG}
    if unknown:
        raise SupersmmError(f"{FAULT_VARIABLE}: unknown fault {', '.join(sorted(unknown))}; "
                            f"known: {', '.join((*KILLS, SLOW_BATCHES, HANG))}")
    return names


def kill_point(name: str) -> None:
    """Die here with SIGKILL, as in a power cut, when the fault `name` is injected."""
    assert name in KILLS, name
    if name in injected():
        os.kill(os.getpid(), signal.SIGKILL)


def applied(on_progress):
    """on_progress as the injected faults change it: SLOW_BATCH_S longer per call (slow_batches), never
    returning from epoch 2's first batch (hang_in_epoch_2)."""
    names = injected()
    if not names & {SLOW_BATCHES, HANG}:
        return on_progress

    def faulty_progress(progress: dict) -> None:
        if SLOW_BATCHES in names:
            time.sleep(SLOW_BATCH_S)
        if HANG in names and progress.get("epoch") == 2 and progress.get("batch") == 1:
            threading.Event().wait()  # for good
        if on_progress is not None:
            on_progress(progress)

    return faulty_progress
