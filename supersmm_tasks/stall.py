"""A worker whose chunk stops making progress ends as a crashed worker does, so that its run heals elsewhere.

A trainer can hang without dying: a deadlock, a GPU that stopped answering, a hard-mounted NFS share that
does not come back. Its heartbeat thread would go on renewing the run's lease, and the run would never move
again. So the chunk task reports every sign of life to this module (a batch trained or validated, a write
about to be made), and a watch thread ends the worker when a chunk has shown none for SUPERSMM_STALL_LIMIT
seconds (default 30 minutes): it logs where the training is stuck and exits with EXIT_STALLED. The lease then
expires like a killed worker's, a reconciler queues the run again, and another worker resumes it from its
last checkpoint; whatever supervises the worker (systemd, Kubernetes, a shell loop) starts it again.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from contextlib import contextmanager

from .lease import seconds_setting

logger = logging.getLogger(__name__)

STALL_LIMIT_VARIABLE = "SUPERSMM_STALL_LIMIT"
DEFAULT_STALL_LIMIT_S = 30 * 60.0
EXIT_STALLED = 75  # EX_TEMPFAIL: a supervisor that restarts the worker is right to
LONGEST_CHECK_INTERVAL_S = 30.0
LOGGING_GRACE_S = 10.0  # the exit waits no longer for the log line: a log on the hung share would hold it for good


def limit_seconds() -> float:
    return seconds_setting(STALL_LIMIT_VARIABLE, DEFAULT_STALL_LIMIT_S)


class _Watch:
    """The chunks this process trains (one per training thread), when each last showed a sign of life, and the
    thread that ends the process once one has shown none for its limit."""

    def __init__(self):
        self._lock = threading.Lock()
        self._chunks: dict[int, list] = {}  # training thread -> [run, limit (s), last sign of life (monotonic)]
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, run: str):
        """Watch the chunk of `run` that the calling thread trains, until the block ends."""
        chunk = [run, limit_seconds(), time.monotonic()]
        with self._lock:
            self._chunks[threading.get_ident()] = chunk
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch_forever, name="supersmm-stall-watch", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._chunks.pop(threading.get_ident(), None)

    def alive(self) -> None:
        """A sign of life of the chunk the calling thread trains."""
        chunk = self._chunks.get(threading.get_ident())
        if chunk is not None:
            chunk[2] = time.monotonic()

    def _watch_forever(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                limits = [limit for _, limit, _ in self._chunks.values()] or [LONGEST_CHECK_INTERVAL_S]
                for trainer_thread, (run, limit, alive_at) in self._chunks.items():
                    if now - alive_at >= limit:
                        # Under the lock: the chunk can neither end nor hand its thread to another chunk meanwhile.
                        _end_stalled_worker(run, now - alive_at, trainer_thread)
            time.sleep(min(min(limits) / 4, LONGEST_CHECK_INTERVAL_S))

    def _forget_in_forked_child(self) -> None:
        self.__init__()


def _end_stalled_worker(run: str, silent_s: float, trainer_thread: int) -> None:
    exit_anyway = threading.Timer(LOGGING_GRACE_S, os._exit, args=(EXIT_STALLED,))
    exit_anyway.daemon = True
    exit_anyway.start()
    frame = sys._current_frames().get(trainer_thread)
    stack = "".join(traceback.format_stack(frame)) if frame else "(the training thread is gone)\n"
    logger.critical("run %s: the chunk made no progress for %.0f s (%s); this worker exits (code %d) so that its "
                    "lease expires and another worker resumes the run from its last checkpoint. The training was "
                    "stuck here:\n%s", run, silent_s, STALL_LIMIT_VARIABLE, EXIT_STALLED, stack)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_STALLED)  # the stuck thread cannot be stopped; a warm shutdown would wait for it for good


_watch = _Watch()
os.register_at_fork(after_in_child=_watch._forget_in_forked_child)
watching = _watch.watching
alive = _watch.alive
