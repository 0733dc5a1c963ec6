"""`supersmm train` killed in any way, and workers stopped with SIGTERM: nothing keeps training behind the user's
back, the run's files stay intact, and `supersmm train NAME` continues the run to exactly where an undisturbed
run ends. Real `supersmm train` and `celery worker` processes, real signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from supersmm_tasks import broker, lease, paths
from supersmm_tasks.checkpoint import load_checkpoint
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.run_status import ACTIVE
from supersmm_tasks.training import train_chunk

EPOCHS = 3
SETTINGS = ["--dataset", "primus", "--model", "tiny", "--batch-size", "4", "--max-total-epochs", str(EPOCHS),
            "--max-epochs-per-run", str(EPOCHS)]
# Columns that depend on the training only (not on clocks, processes or file names).
RESULT_COLUMNS = ("epoch", "loss", "val_loss", "val_ser", "val_sequence_error", "learning_rate", "dataset_size")


def train_command(name: str, *settings: str) -> list[str]:
    return [sys.executable, "-m", "supersmm_tasks.cli", "train", name, *settings]


def results(training_home, name: str) -> list[tuple]:
    return [tuple(row[column] for column in RESULT_COLUMNS) for row in training_home.csv_rows(name)]


def undisturbed(training_home) -> list[tuple]:
    """The rows of the same run trained in one go, in this process."""
    create_or_update_run("undisturbed", "primus", model="tiny", batch_size=4, max_total_epochs=EPOCHS,
                         max_epochs_per_run=EPOCHS)
    train_chunk("undisturbed", ChunkSpan(1, EPOCHS, 1))
    return results(training_home, "undisturbed")


def foreground_workers(parent_pid: int) -> list[psutil.Process]:
    """The worker processes that `supersmm train` with this pid started."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(f"_{parent_pid}@" in argument for argument in process.info["cmdline"] or ()):
            found.append(process)
    return found


def wait_until_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return alive


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_supersmm_train_killed_mid_epoch_leaves_no_worker_and_continues_exactly(training_home, kill):
    first = subprocess.Popen(train_command("fg", *SETTINGS), env=training_home.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        training_home.wait_for(lambda: (training_home.progress("fg").get("epoch", 0) >= 2
                                        and training_home.progress("fg").get("batch", 0) >= 1) or first.poll() is not None,
                               300, "foreground training in epoch 2")
        workers = foreground_workers(first.pid)
        assert workers, "no foreground worker found"
        os.killpg(first.pid, kill)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert not wait_until_gone(workers, 30), "the worker of the killed `supersmm train` is still running"
    state = training_home.state("fg")
    assert state["status"] in ACTIVE and state["last_completed_epoch"] < EPOCHS
    assert training_home.csv_epochs("fg") == list(range(1, state["last_completed_epoch"] + 1))

    second = subprocess.run(train_command("fg"), env=training_home.env, capture_output=True, text=True, timeout=400)

    assert second.returncode == 0, second.stderr
    assert f"run fg completed at epoch {EPOCHS}/{EPOCHS}" in second.stderr
    assert results(training_home, "fg") == undisturbed(training_home)
    # Each `supersmm train` deletes its own queue once its worker stops; one SIGKILLed cannot, and the next
    # `supersmm train` of the run deletes it.
    assert set(broker.client().scan_iter("*supersmm_train_fg_*")) == set()


def test_sigterm_stops_a_training_worker_within_seconds_with_its_run_intact(training_home, workers):
    training_home.enqueue("long", epochs=200, chunk=200)
    worker = workers.start("w1")
    training_home.wait_for(lambda: training_home.progress("long").get("epoch", 0) >= 2
                           and training_home.progress("long").get("batch", 0) >= 1, 300, "training in epoch 2",
                           [worker])
    os.killpg(worker.process.pid, signal.SIGTERM)
    stopped_at = time.monotonic()
    worker.process.wait(timeout=60)
    assert time.monotonic() - stopped_at < 15, worker.log()[-3000:]  # the chunk had 198 epochs to go

    state = training_home.state("long")
    assert state["status"] == "running" and state["last_completed_epoch"] >= 1
    assert training_home.csv_epochs("long") == list(range(1, state["last_completed_epoch"] + 1))
    assert load_checkpoint(state["checkpoint"]).epoch == state["last_completed_epoch"]
    assert lease.holder(broker.client(), "long") is None
    assert "chunk stopped mid-epoch because the worker is shutting down" in worker.log()
    assert "chunk failed" not in paths.log_path("long").read_text()


def test_supersmm_train_whose_training_hangs_says_so_and_continues_on_the_next_call(training_home):
    hanging = {**training_home.env, "SUPERSMM_FAULT": "hang_in_epoch_2", "SUPERSMM_STALL_LIMIT": "4"}
    first = subprocess.run(train_command("stuck", *SETTINGS), env=hanging, capture_output=True, text=True,
                           timeout=400)

    assert first.returncode == 1
    assert "the worker's training hung (no progress for 4 s, SUPERSMM_STALL_LIMIT) and it exited; " \
           "`supersmm train stuck` continues the run from its last epoch" in first.stderr
    assert training_home.csv_epochs("stuck") == [1]

    second = subprocess.run(train_command("stuck"), env=training_home.env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr
    assert f"run stuck completed at epoch {EPOCHS}/{EPOCHS}" in second.stderr
    assert training_home.csv_epochs("stuck") == [1, 2, 3]


def test_the_queues_of_killed_calls_of_a_run_are_deleted_and_no_other_runs(redis_server):
    from supersmm_tasks.runs import _forget_queues_of_killed_calls

    client = redis_server.client()
    left = ["supersmm_train_fg_123", "supersmm_train_fg_123:3", "_kombu.binding.supersmm_train_fg_123",
            "_kombu.binding_permanent.supersmm_train_fg_123"]
    others = ["supersmm_train_fg_2_456", "_kombu.binding.supersmm_train_fg_2_456", "supersmm", "run:fg:lease"]
    for key in left + others:
        client.set(key, "x") if key.endswith("lease") else client.rpush(key, "x")

    _forget_queues_of_killed_calls(client, "fg")

    assert sorted(client.keys("*")) == sorted(others)


def test_a_second_supersmm_train_of_a_run_is_refused_while_the_first_lives(training_home):
    import socket

    from supersmm_tasks import run_keys

    # The route a live `supersmm train busy` keeps (this test's own process stands for it) and its queue.
    client = broker.client()
    client.hset(run_keys.route_key("busy"), mapping={"queue": f"supersmm_train_busy_{os.getpid()}", "priority": 0,
                                                     "host": socket.gethostname()})
    client.rpush(f"supersmm_train_busy_{os.getpid()}", "a chunk")

    second = subprocess.run(train_command("busy", *SETTINGS), env=training_home.env, capture_output=True, text=True,
                            timeout=120)

    assert second.returncode == 1
    assert second.stderr.strip() == (f"supersmm: error: run busy is being trained by another `supersmm train` "
                                     f"(process {os.getpid()} on {socket.gethostname()}); watch it with "
                                     "`supersmm status busy`")
    assert client.llen(f"supersmm_train_busy_{os.getpid()}") == 1  # its queue is left alone


def test_a_route_left_by_this_very_pid_is_not_another_call(redis_server):
    import socket

    from supersmm_tasks import run_keys
    from supersmm_tasks.runs import _other_foreground_call

    client = redis_server.client()  # a container restarted within seconds: same host name, same pid (1)
    client.hset(run_keys.route_key("again"), mapping={"queue": f"supersmm_train_again_{os.getpid()}",
                                                      "host": socket.gethostname()})

    assert _other_foreground_call(client, "again") == (f"supersmm_train_again_{os.getpid()}", None)


def test_of_two_supersmm_train_calls_started_at_once_only_one_takes_the_run(training_home, monkeypatch):
    """The second call looks at the route between the first one's look and its write: it must not take the run."""
    import socket

    from supersmm_tasks import run_keys, runs

    client = broker.client()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands for the first call
    looked = runs._other_foreground_call

    def the_other_call_writes_its_route_just_after_our_look(connection, name):
        seen = looked(connection, name)
        if not client.exists(run_keys.route_key(name)):
            client.hset(run_keys.route_key(name), mapping={
                "queue": f"supersmm_train_{name}_{other.pid}", "priority": 0, "host": socket.gethostname()})
        return seen

    monkeypatch.setattr(runs, "_other_foreground_call", the_other_call_writes_its_route_just_after_our_look)
    try:
        with pytest.raises(SupersmmError, match=rf"run twice is being trained by another `supersmm train` "
                                                rf"\(process {other.pid} on "):
            runs.train_foreground("twice", dataset="primus", model="tiny", max_total_epochs=1)
        assert client.hget(run_keys.route_key("twice"), "queue") == f"supersmm_train_twice_{other.pid}"
        assert not paths.config_path("twice").exists()  # nothing created, nothing queued
    finally:
        other.kill()
        other.wait()


def test_a_call_keeps_and_deletes_its_own_route_only(redis_server):
    from supersmm_tasks import run_keys
    from supersmm_tasks.runs import FOREGROUND_ROUTE_TTL_S, _ForegroundRoute

    client = redis_server.client()
    key, refreshed = run_keys.route_key("handed"), FOREGROUND_ROUTE_TTL_S / 3 + 1
    ours = _ForegroundRoute(client, "handed", f"supersmm_train_handed_{os.getpid()}", priority=None)
    assert ours.claim() is None
    client.delete(key)  # a Redis restarted empty: the route is written again
    time.sleep(refreshed)
    assert client.hget(key, "queue") == f"supersmm_train_handed_{os.getpid()}"
    client.hset(key, "queue", "supersmm_train_handed_1")  # ours expired while Redis was away; another took over
    time.sleep(refreshed)
    ours.stop()
    assert client.hget(key, "queue") == "supersmm_train_handed_1"

    again = _ForegroundRoute(client, "alone", f"supersmm_train_alone_{os.getpid()}", priority=None)
    assert again.claim() is None
    again.stop()
    assert not client.exists(run_keys.route_key("alone"))
