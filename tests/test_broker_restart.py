"""A broker that dies in the middle of a chunk: SIGKILLed and restarted with its append-only file, or
restarted empty. The run's files on disk are the truth, so either way the run completes by itself with
exactly one CSV row per epoch (real Redis, a real worker, the tiny model on engraved incipits)."""
from __future__ import annotations

import time

import pytest

from test_selfheal import training_epoch


@pytest.mark.parametrize("comes_back", ["with_its_aof", "empty"])
def test_a_broker_killed_mid_chunk_loses_no_epoch(training_home, workers, redis_server, comes_back):
    training_home.enqueue("crashed", epochs=4, chunk=2)
    worker = workers.start("worker")
    training_home.wait_for(lambda: training_epoch(training_home, "crashed", worker, at_least=2), 240,
                           "a trainer in the middle of epoch 2 (chunk 1)", [worker], run="crashed")
    redis_server.crash()
    if comes_back == "empty":
        redis_server.wipe()
    time.sleep(1)
    redis_server.start()

    state = training_home.wait_until_finished("crashed", 300, [worker])
    assert state["status"] == "completed" and state["last_completed_epoch"] == 4
    assert training_home.csv_epochs("crashed") == [1, 2, 3, 4]
    if comes_back == "empty":
        assert "stopped without writing" in worker.log()  # its lease went with the data: it wrote nothing more
