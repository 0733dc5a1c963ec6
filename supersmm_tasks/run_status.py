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

# Why a run completed when it used up a budget (its state's stop_reason); more epochs, or minutes, let it go on.
EPOCH_BUDGET_USED = "max_total_epochs"
TIME_BUDGET_USED = "max_minutes"
BUDGET_STOP_REASONS = (EPOCH_BUDGET_USED, TIME_BUDGET_USED)

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
        _check_move(run, state, to)
        if guard is not None:
            guard()
        return {"status": to}

    return run_state.write_state(run, change=checked_move, **fields)


def stop_as_requested(run: str, guard, current_request) -> dict | None:
    """Move an active run to the paused or cancelled its user asks for now: the state as written, or None, with
    nothing written, when no request stands any more (a `supersmm resume` withdrew it).

    current_request() reads the request under the run's state lock, after guard(): resume withdraws a pause and
    looks at the status under that lock, so it either finds the run paused (and queues it) or leaves its trainer
    no request to apply; a cancel that replaced a pause is the one applied.
    """
    from . import run_state

    def requested_move(state: dict) -> dict:
        if guard is not None:
            guard()
        request = current_request()
        if request not in CONTROL_REQUESTS:
            raise _Withdrawn
        request = RunStatus(request)
        _check_move(run, state, request)
        return {"status": request, "stop_reason": f"{request} by request"}

    try:
        return run_state.write_state(run, change=requested_move)
    except _Withdrawn:
        return None


class _Withdrawn(Exception):
    pass


def may_move(current: RunStatus | str, to: RunStatus) -> bool:
    return to in ALLOWED_MOVES[RunStatus(current)]


def _check_move(run: str, state: dict, to: RunStatus) -> None:
    current = RunStatus(state["status"])
    if not may_move(current, to):
        raise SupersmmError(f"run {run}: its status cannot move from {current} to {to}")
