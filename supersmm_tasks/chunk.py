"""One chunk of a run: the epochs it spans (decided once, when it is queued) and what training it did.

Chunks sit on a fixed grid of max_epochs_per_run epochs, so a chunk cut short by a crash is finished by
its successor and chunk numbers stay the same whatever happened. The span travels in the chunk's
message as plain numbers and is trusted from there on: neither the task nor train_chunk recomputes it.
Plain Python: no Celery, no TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass

from .run_status import RunStatus


@dataclass(frozen=True)
class ChunkSpan:
    first_epoch: int
    last_epoch: int
    chunk: int

    @classmethod
    def next_of(cls, state: dict) -> "ChunkSpan | None":
        """The span of the run's next chunk, from its state; None when no epoch is left."""
        first = (state["last_completed_epoch"] or 0) + 1
        if first > state["max_total_epochs"]:
            return None
        size = state["max_epochs_per_run"]
        chunk = (first - 1) // size + 1
        return cls(first, min(chunk * size, state["max_total_epochs"]), chunk)

    @property
    def epochs(self) -> str:
        """"first-last", as the CLI and the task's name show it."""
        return f"{self.first_epoch}-{self.last_epoch}"


@dataclass
class ChunkResult:
    run: str
    last_completed_epoch: int
    status: RunStatus  # running when epochs remain, else completed / paused / cancelled
    stop_reason: str | None
    best_val_ser: float | None
    best_epoch: int | None
    epochs_trained: int
