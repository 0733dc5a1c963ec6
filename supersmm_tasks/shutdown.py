"""A worker asked to stop ends its chunk within seconds, at a safe point, instead of finishing it.

Celery's warm shutdown (SIGTERM, Ctrl-C) waits for the running task, and a chunk may last days. So the
shutdown sets a flag that the chunk's callbacks read at every batch and epoch boundary: the chunk then
ends mid-epoch, writing nothing (the last checkpoint, state and CSV row stay as they were), the lease is
released, and the run is taken over from its last checkpoint like the run of a crashed worker.

The foreground worker of `supersmm train` also watches its parent (SUPERSMM_PARENT_PID): when the parent
is gone, whatever killed it, the worker stops itself the same way.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

from celery.signals import worker_ready, worker_shutting_down

from .errors import ChunkInterrupted

logger = logging.getLogger(__name__)

PARENT_VARIABLE = "SUPERSMM_PARENT_PID"
PARENT_POLL_S = 0.5

_stopping = threading.Event()


def raise_if_stopping() -> None:
    """Called by a chunk's callbacks: ends the chunk at once when the worker is shutting down."""
    if _stopping.is_set():
        raise ChunkInterrupted("the worker is shutting down")


@worker_shutting_down.connect
def _on_shutting_down(**_) -> None:
    _stopping.set()


@worker_ready.connect
def _watch_parent(**_) -> None:
    parent = os.environ.get(PARENT_VARIABLE)
    if parent:
        threading.Thread(target=_stop_when_orphaned, args=(int(parent),), name="supersmm-parent-watch",
                         daemon=True).start()


def _stop_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    logger.warning("parent process %d is gone: stopping this worker", parent)
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown, which sets the flag above
