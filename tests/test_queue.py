"""The chunk queue with real workers: chunk by chunk, one trainer per run, runs taking turns, control requests."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from supersmm_tasks import broker, chunk_queue, lease, run_keys, run_state, run_summary, runs, tasks
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.run_status import RunStatus
from supersmm_tasks.testing import Workers

RECEIVED = re.compile(r"^\[(?P<time>[^\]]+?): INFO/MainProcess\] Task (?P<run>\w+): epochs (?P<epochs>\d+-\d+)\[.*\] received",
                      re.MULTILINE)


SUPERSEDED = re.compile(r"succeeded in .*'outcome': 'superseded'")


def received_chunks(*workers) -> list[tuple[str, str]]:
    """(run, epochs) of every chunk the workers received, in time order (from their logs)."""
    found = [(m["time"], m["run"], m["epochs"]) for worker in workers for m in RECEIVED.finditer(worker.log())]
    return [(run, epochs) for _, run, epochs in sorted(found)]


def first_receipts(*workers) -> list[tuple[str, str]]:
    """received_chunks without repeats: a loaded machine can starve a 3 s lease's heartbeat, and the reconciler then
    queues that chunk again, as designed (the copy is fenced and trains nothing)."""
    return list(dict.fromkeys(received_chunks(*workers)))


def outcome(worker, task_id: str) -> str | None:
    """The outcome a chunk task returned, from the worker's log."""
    found = re.search(re.escape(f"[{task_id}] succeeded in") + r".*'outcome': '(\w+)'", worker.log())
    return found[1] if found else None


def test_a_run_trains_chunk_by_chunk_and_reports_its_status(training_home, workers):
    assert training_home.enqueue("chunks", epochs=4, chunk=2) == "queued run chunks: epochs 1-2 of 4 on queue supersmm"
    with pytest.raises(SupersmmError, match="pause it"):
        training_home.enqueue("chunks", epochs=8, chunk=2)
    assert runs.enqueue("chunks").startswith("run chunks is queued (epochs 1-2")
    worker = workers.start("worker")

    training_home.wait_for(lambda: lease.holder(broker.client(), "chunks"), 120, "a trainer", [worker])
    row = run_summary.status_rows("chunks")[0]
    assert {"run", "dataset", "status", "last_completed_epoch", "max_total_epochs", "best_val_ser", "eta",
            "worker"} <= set(row)
    assert row["worker"] == worker.hostname

    state = training_home.wait_until_finished("chunks", 240, [worker])
    assert state["status"] == "completed"
    assert training_home.csv_epochs("chunks") == [1, 2, 3, 4]
    assert first_receipts(worker) == [("chunks", "1-2"), ("chunks", "3-4")]
    assert "is complete (4/4 epochs" in runs.enqueue("chunks")
    header, line = run_summary.format_status_table(run_summary.status_rows()).splitlines()
    assert header.split()[:4] == ["run", "dataset", "status", "epoch"]
    assert line.split()[:4] == ["chunks", "primus", "completed", "4/4"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads a process's libraries from Linux's /proc")
def test_a_worker_is_ready_only_once_its_trainer_is_loaded(workers):
    worker = workers.start("loaded")  # returns at its "ready." line

    libraries = Path(f"/proc/{worker.process.pid}/maps").read_text()
    assert "_pywrap_tensorflow_internal" in libraries  # no import of TensorFlow beside its first chunk's claim


def test_a_trainer_that_cannot_load_stops_the_worker_at_its_start_with_one_line(tmp_path, supersmm_env):
    (tmp_path / "unloadable_trainer.py").write_text(
        "from supersmm_tasks.celery_app import app\n\napp.conf.supersmm_train_chunk = 'no_such_trainer:train_chunk'\n")
    workers = Workers(tmp_path, {**supersmm_env, "PYTHONPATH": str(tmp_path)}, app="unloadable_trainer")
    worker = workers.start("unloadable", wait=False)
    try:
        assert worker.process.wait(timeout=120) == 1
    finally:
        workers.kill_all()
    assert ("supersmm: error: cannot load the chunk trainer 'no_such_trainer:train_chunk': "
            "No module named 'no_such_trainer'") in worker.log()
    assert "Traceback" not in worker.log()


def test_a_run_just_completed_is_reported_complete_while_its_trainer_lets_it_go(training_home):
    training_home.create("ending", epochs=2, chunk=2)
    run_state.write_state("ending", status=RunStatus.COMPLETED, last_completed_epoch=2, stop_reason="max_total_epochs")
    trainer = lease.Lease.acquire(broker.client(), "ending", worker="trainer@host")  # wrote the state, not yet let go
    letting_go = threading.Timer(1.0, trainer.release)
    letting_go.start()
    try:
        assert runs.enqueue("ending").startswith("run ending is complete (2/2 epochs, max_total_epochs)")
    finally:
        letting_go.join()
    assert lease.holder(broker.client(), "ending") is None


def test_duplicate_chunk_messages_start_no_second_trainer(training_home, workers):
    training_home.enqueue("dup", epochs=2, chunk=1)
    cli_token = int(broker.client().get(run_keys.fence_key("dup")))
    pending = chunk_queue.pending_chunk(broker.client(), "dup")["task_id"]
    # The same message delivered twice, and a second chunk enqueued by hand for the same epochs.
    with tasks.app.connection_for_write(broker.broker_url()) as sender:
        for task_id in (pending, "dup:1-1:byhand"):
            tasks.train_chunk_task.apply_async(args=("dup", 1, 1, 1), task_id=task_id, connection=sender,
                                               ignore_result=True, shadow="dup: epochs 1-1")
    first, second = workers.start("first"), workers.start("second")

    state = training_home.wait_until_finished("dup", 240, [first, second])
    assert state["status"] == "completed"
    assert training_home.csv_epochs("dup") == [1, 2]
    assert training_home.wait_for(lambda: outcome(first, "dup:1-1:byhand") or outcome(second, "dup:1-1:byhand"),
                                  60, "the hand-made chunk to run") == "stale"
    # Fencing tokens: one for the CLI creating the run, one per chunk that trained, and one per trainer that lost
    # the run and wrote nothing (a loaded machine can starve a 3 s lease's heartbeat, and the redelivered copy
    # then takes the run, as designed). That a held lease is never taken is test_broker's to check.
    superseded = sum(len(SUPERSEDED.findall(worker.log())) for worker in (first, second))
    assert int(broker.client().get(run_keys.fence_key("dup"))) == cli_token + 2 + superseded


def test_three_runs_on_two_workers_take_turns_chunk_by_chunk(training_home, workers):
    for name in ("run_a", "run_b", "run_c"):
        training_home.enqueue(name, epochs=2, chunk=1)
    first, second = workers.start("first"), workers.start("second")
    for name in ("run_a", "run_b", "run_c"):
        assert training_home.wait_until_finished(name, 300, [first, second])["status"] == "completed"
        assert training_home.csv_epochs(name) == [1, 2]

    order = first_receipts(first, second)
    assert sorted(order[:3]) == [("run_a", "1-1"), ("run_b", "1-1"), ("run_c", "1-1")]
    assert sorted(order[3:]) == [("run_a", "2-2"), ("run_b", "2-2"), ("run_c", "2-2")]


def test_a_run_with_a_higher_priority_goes_first(training_home, workers):
    training_home.enqueue("later", epochs=1, chunk=1, priority=9)
    training_home.enqueue("sooner", epochs=1, chunk=1, priority=0)
    worker = workers.start("worker")
    for name in ("later", "sooner"):
        training_home.wait_until_finished(name, 240, [worker])
    assert first_receipts(worker) == [("sooner", "1-1"), ("later", "1-1")]


def test_pause_resume_and_cancel(training_home, workers):
    training_home.enqueue("dropped", epochs=2, chunk=2)
    assert runs.cancel("dropped") == "run dropped cancelled at epoch 0/2"
    with pytest.raises(SupersmmError, match="cancelled"):
        runs.enqueue("dropped")
    training_home.enqueue("held", epochs=3, chunk=3)
    worker = workers.start("worker")

    training_home.wait_for(lambda: training_home.progress("held").get("batch", 0) >= 1, 240, "training", [worker],
                           run="held")
    assert runs.pause("held").startswith("run held will be paused at the end of its current epoch")
    paused = training_home.wait_until_finished("held", 120, [worker])
    assert paused["status"] == "paused" and paused["last_completed_epoch"] < 3
    # The worker writes "paused" while it still holds the lease, then lets go of it.
    training_home.wait_for(lambda: lease.holder(broker.client(), "held") is None, 10,
                           "the paused run's lease to be released", [worker])

    assert runs.resume("held").startswith("queued run held")
    assert training_home.wait_until_finished("held", 240, [worker])["status"] == "completed"
    assert training_home.csv_epochs("held") == [1, 2, 3]
    assert training_home.state("dropped")["status"] == "cancelled" and training_home.csv_epochs("dropped") == []


def test_a_request_standing_when_a_chunk_claims_its_run_is_obeyed_before_training(training_home, workers):
    # A pause that reached Redis between two holders (after one released the run, before the next claimed it):
    # the claim reads it in the same step and the chunk trains nothing.
    training_home.enqueue("between", epochs=2, chunk=1)
    chunk_queue.request_control(broker.client(), "between", RunStatus.PAUSED)
    worker = workers.start("worker")
    paused = training_home.wait_until_finished("between", 120, [worker])
    assert paused["status"] == "paused" and paused["last_completed_epoch"] == 0
    assert training_home.csv_epochs("between") == []
    assert lease.holder(broker.client(), "between") is None


def test_train_in_the_foreground_stops_on_ctrl_c_and_continues_later(training_home):
    command = [sys.executable, "-m", "supersmm_tasks.cli", "train", "fg", "--dataset", "primus", "--model", "tiny",
               "--batch-size", "4", "--max-total-epochs", "3", "--max-epochs-per-run", "3"]
    # Ctrl-C as a terminal sends it, also where the tests themselves run in the background (a shell starts
    # background jobs with SIGINT ignored, and a child inherits that).
    first = subprocess.Popen(command, env=training_home.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def training_batches():  # past the model's tracing: a batch trained, or an epoch's result reported
        progress = training_home.progress("fg")
        return progress.get("batch", 0) >= 1 or "val_ser" in progress

    try:
        training_home.wait_for(lambda: training_batches() or first.poll() is not None, 240, "foreground training")
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 130, stderr
    assert training_home.state("fg")["status"] == "paused"

    second = subprocess.run(command[:5], env=training_home.env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "run fg completed at epoch 3/3" in second.stderr
    assert training_home.csv_epochs("fg") == [1, 2, 3]
