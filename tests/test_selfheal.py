"""Runs heal by themselves: real workers killed with SIGKILL or stopped with SIGSTOP, Redis restarted.

Every test ends with the contract's promise: the run completes and logs/training_log.csv holds
epochs 1..N exactly once each.
"""
from __future__ import annotations

import os
import random
import signal
import time

import numpy as np

from supersmm_tasks import broker, chunk_queue, lease, paths, stall
from supersmm_tasks.checkpoint import latest_valid_checkpoint


def training_epoch(home, name: str, worker, at_least: int = 1) -> int | None:
    """The epoch `worker` is in the middle of (a batch done, not finished), if any."""
    progress = home.progress(name)
    if lease.holder(broker.client(), name) != worker.hostname:
        return None
    if progress.get("epoch", 0) >= at_least and progress.get("batch", 0) >= 1 and "val_ser" not in progress:
        return progress["epoch"]
    return None


def final_weights(name: str) -> list[np.ndarray]:
    return latest_valid_checkpoint(paths.checkpoints_dir(name)).model_arrays


def test_killed_three_times_mid_epoch_the_run_ends_with_the_weights_of_an_uninterrupted_run(training_home, workers):
    from supersmm_tasks.chunk import ChunkSpan
    from supersmm_tasks.training import train_chunk

    seed = random.randrange(1 << 30)
    moments = random.Random(seed)
    training_home.enqueue("healed", epochs=4, chunk=2)
    worker = workers.start("first")
    for kill in range(3):
        training_home.wait_for(lambda: training_epoch(training_home, "healed", worker, at_least=kill + 1),
                               240, f"kill {kill + 1}: a trainer mid-epoch (seed {seed})", [worker], run="healed")
        time.sleep(moments.uniform(0, 2))
        worker.kill()
        worker = workers.start(f"after_kill_{kill + 1}")
    state = training_home.wait_until_finished("healed", 300, [worker])

    assert state["status"] == "completed" and state["last_completed_epoch"] == 4
    assert training_home.csv_epochs("healed") == [1, 2, 3, 4]

    worker.kill()  # the reference run trains here, in one call, and no worker may pick it up
    training_home.create("uninterrupted", epochs=4, chunk=4)
    train_chunk("uninterrupted", ChunkSpan(1, 4, 1))
    for healed, reference in zip(final_weights("healed"), final_weights("uninterrupted"), strict=True):
        assert np.array_equal(healed, reference)


def test_when_the_holder_dies_the_other_worker_takes_over(training_home, workers):
    training_home.enqueue("takeover", epochs=4, chunk=2)
    first, second = workers.start("first"), workers.start("second")
    holder = training_home.wait_for(
        lambda: next((w for w in (first, second) if training_epoch(training_home, "takeover", w, at_least=2)), None),
        240, "a trainer in epoch 2", [first, second], run="takeover")
    survivor = second if holder is first else first
    holder.kill()

    state = training_home.wait_until_finished("takeover", 240, [survivor])
    assert state["status"] == "completed"
    assert training_home.csv_epochs("takeover") == [1, 2, 3, 4]
    assert {row["worker"] for row in training_home.csv_rows("takeover")[-2:]} == {survivor.hostname}


def test_a_kill_between_checkpoint_and_the_next_chunk_heals(training_home, workers):
    training_home.enqueue("fault", epochs=4, chunk=2)
    doomed = workers.start("doomed", SUPERSMM_FAULT="after_checkpoint,slow_batches")
    training_home.wait_for(lambda: doomed.process.poll() is not None, 240, "the fault to kill the worker", [doomed])
    assert doomed.process.returncode == -signal.SIGKILL
    assert training_home.state("fault")["last_completed_epoch"] == 2

    healer = workers.start("healer")
    state = training_home.wait_until_finished("fault", 240, [healer])
    assert state["status"] == "completed"
    assert training_home.csv_epochs("fault") == [1, 2, 3, 4]


def test_a_kill_between_taking_a_chunk_and_claiming_its_run_heals(training_home, workers):
    training_home.enqueue("untaken", epochs=2, chunk=2)
    doomed = workers.start("doomed", SUPERSMM_FAULT="before_claim")
    training_home.wait_for(lambda: doomed.process.poll() is not None, 240, "the fault to kill the worker", [doomed])
    assert doomed.process.returncode == -signal.SIGKILL
    # The dead worker took the chunk's message (unacknowledged until visibility_timeout, 30 days) and the
    # run's marker still names that message.
    assert training_home.state("untaken")["status"] == "queued"
    assert chunk_queue.pending_chunk(broker.client(), "untaken")

    healer = workers.start("healer")
    state = training_home.wait_until_finished("untaken", 240, [healer])
    assert state["status"] == "completed"
    assert training_home.csv_epochs("untaken") == [1, 2]


def test_a_stalled_trainer_writes_nothing_once_another_holds_the_run(training_home, workers):
    training_home.enqueue("stalled", epochs=4, chunk=4)
    stalled = workers.start("stalled")
    training_home.wait_for(lambda: training_epoch(training_home, "stalled", stalled, at_least=2), 240,
                           "a trainer in epoch 2", [stalled], run="stalled")
    os.killpg(stalled.process.pid, signal.SIGSTOP)
    try:
        successor = workers.start("successor")
        training_home.wait_for(lambda: lease.holder(broker.client(), "stalled") == successor.hostname, 120,
                               "the successor to take the run", [successor])
    finally:
        os.killpg(stalled.process.pid, signal.SIGCONT)

    state = training_home.wait_until_finished("stalled", 240, [stalled, successor])
    assert state["status"] == "completed"
    training_home.wait_for(lambda: "stopped without writing" in stalled.log(), 120,
                           "the stalled trainer to notice it lost the run", [stalled])
    assert training_home.csv_epochs("stalled") == [1, 2, 3, 4]


def test_a_hung_trainer_ends_its_worker_and_the_run_heals_elsewhere(training_home, workers):
    training_home.enqueue("hung", epochs=3, chunk=3)
    hung = workers.start("hung", SUPERSMM_FAULT="hang_in_epoch_2", SUPERSMM_STALL_LIMIT="4")
    training_home.wait_for(lambda: hung.process.poll() is not None, 240, "the stall watch to end the hung worker",
                           [hung], run="hung")

    assert hung.process.returncode == stall.EXIT_STALLED
    assert "run hung: the chunk made no progress for" in hung.log()
    assert "faulty_progress" in hung.log()  # where the training was stuck
    assert training_home.state("hung")["last_completed_epoch"] == 1
    healer = workers.start("healer")
    state = training_home.wait_until_finished("hung", 240, [healer])
    assert state["status"] == "completed"
    assert training_home.csv_epochs("hung") == [1, 2, 3]


def test_a_redis_restart_mid_run_does_not_stop_the_run(training_home, workers, redis_server):
    training_home.enqueue("restart", epochs=4, chunk=2)
    worker = workers.start("worker")
    training_home.wait_for(lambda: training_epoch(training_home, "restart", worker, at_least=2), 240,
                           "a trainer in epoch 2", [worker], run="restart")
    redis_server.restart(down_for_s=2)

    state = training_home.wait_until_finished("restart", 300, [worker])
    assert state["status"] == "completed"
    assert training_home.csv_epochs("restart") == [1, 2, 3, 4]
