"""ChunkSpan: a run's next chunk sits on the fixed grid of max_epochs_per_run epochs."""
from __future__ import annotations

import pytest

from supersmm_tasks.chunk import ChunkSpan


def state(done: int | None, total: int = 10, per_run: int = 4) -> dict:
    return {"last_completed_epoch": done, "max_total_epochs": total, "max_epochs_per_run": per_run}


@pytest.mark.parametrize("done, span", [
    (None, ChunkSpan(1, 4, 1)), (0, ChunkSpan(1, 4, 1)),
    (1, ChunkSpan(2, 4, 1)),   # a chunk cut short is finished by its successor, under the same number
    (4, ChunkSpan(5, 8, 2)), (8, ChunkSpan(9, 10, 3)),   # the last chunk ends at the budget
    (10, None),
])
def test_the_next_chunk_is_on_the_grid(done, span):
    assert ChunkSpan.next_of(state(done)) == span


def test_a_span_shows_its_epochs_as_first_last():
    assert ChunkSpan(5, 8, 2).epochs == "5-8"
