"""A run's status, the moves it may make, and the one function that moves it.

The status is the `status:` line of training_state.txt. Every change of it goes through transition(),
which refuses a move the table below does not allow, so the whole rule is read here:

    from        may move to
    queued      running, paused, cancelled, failed
    running     running (next chunk), queued (its trainer is gone), paused, cancelled, completed, failed
    paused      queued (resume), running (trained directly), cancelled, failed
    failed      queued (enqueue again), running (trained directly), cancelled, failed
    completed   queued (a larger epoch budget)
    cancelled   nothing: a cancelled run stays cancelled

A state rebuilt from a run's files (run_state.rebuild_state) is not a move: it restores the status the
files last held. This module imports neither Celery nor TensorFlow.
"""
from __future__ import annotations

from enum import Enum

from .errors import SupersmmError


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value  # the state file and the CLI show the plain word


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)  # a trainer has the run, or will
CONTROL_REQUESTS = (RunStatus.PAUSED, RunStatus.CANCELLED)  # what the user may ask of an active run
ENDED = (RunStatus.COMPLETED, RunStatus.CANCELLED)  # no trainer will take the run again by itself

ALLOWED_MOVES: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset({RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.PAUSED, RunStatus.CANCELLED,
                                  RunStatus.COMPLETED, RunStatus.FAILED}),
    RunStatus.PAUSED: frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.FAILED: frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.COMPLETED: frozenset({RunStatus.QUEUED}),
    RunStatus.CANCELLED: frozenset(),
}


def transition(run: str, to: RunStatus, guard=None, **fields) -> dict:
    """Move run's status to `to`, writing `fields` with it; the state as written.

    Refuses (SupersmmError, nothing written) a move the table does not allow from the status the state file
    holds at the write: the check, guard() and the write happen under the run's state lock, so no other write
    comes between them. guard(), the lease's fence, is called right before the write and raises to stop it.
    """
    from . import run_state  # run_state parses the status into RunStatus: it imports this module

    to = RunStatus(to)

    def checked_move(state: dict) -> dict:
        current = RunStatus(state["status"])
        if to not in ALLOWED_MOVES[current]:
            raise SupersmmError(f"run {run}: its status cannot move from {current} to {to}")
        if guard is not None:
            guard()
        return {"status": to}

    return run_state.write_state(run, change=checked_move, **fields)


class _Withdrawn(Exception):
    pass


def stop_as_requested(run: str, request: RunStatus, guard, current_request) -> dict | None:
    """Move an active run to the paused or cancelled its user asked for: the state as written, or None, with
    nothing written, when the request was withdrawn since it was read (`supersmm resume`).

    current_request() reads the request again under the run's state lock, where resume withdraws it and looks at
    the status: a resume either finds the run paused (and queues it) or leaves its trainer no request to apply.
    """
    def still_requested() -> None:
        if guard is not None:
            guard()
        if current_request() not in CONTROL_REQUESTS:
            raise _Withdrawn

    try:
        return transition(run, request, guard=still_requested, stop_reason=f"{RunStatus(request)} by request")
    except _Withdrawn:
        return None
