"""Every Redis key that SuperSMM keeps for a run, named in one place.

Each key may be lost (a failover loses the last writes; a Redis may come back empty): the run's
files on disk are the truth, and the reconciler rebuilds what a lost key meant.

Redis keys of run R:
    supersmm:run:R:lease       who trains R now and with which fencing token (lease.py)
    supersmm:run:R:fence       R's fencing-token counter (lease.py)
    supersmm:run:R:next_chunk  the pending marker: JSON of the chunk message queued for R (chunk_queue.py)
    supersmm:run:R:control     "paused" or "cancelled" when the user asked for it (chunk_queue.py)
    supersmm:run:R:route       queue and priority overriding the run's config (`supersmm train`, runs.py)
    supersmm:run:R:progress    the trainer's latest progress report (JSON, tasks.py)
and one shared key:
    supersmm:reconciler:lock   lets one worker's reconciler act per interval (reconciler.py)

This module imports nothing heavy, so that `supersmm status` reads a run's keys without Celery.
"""
from __future__ import annotations

RECONCILER_LOCK = "supersmm:reconciler:lock"


def _key(run: str, what: str) -> str:
    return f"supersmm:run:{run}:{what}"


def lease_key(run: str) -> str:
    return _key(run, "lease")


def fence_key(run: str) -> str:
    return _key(run, "fence")


def pending_key(run: str) -> str:
    return _key(run, "next_chunk")


def control_key(run: str) -> str:
    return _key(run, "control")


def route_key(run: str) -> str:
    return _key(run, "route")


def progress_key(run: str) -> str:
    return _key(run, "progress")
