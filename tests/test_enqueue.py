"""`supersmm enqueue` stays light: it creates and queues a run without importing TensorFlow."""
from __future__ import annotations

import subprocess
import sys

import pytest

from supersmm_tasks.run_config import load_run_config

# Runs the real command, then says on stderr whether TensorFlow was imported on the way.
ENQUEUE_AND_REPORT = """
import atexit, sys
atexit.register(lambda: print("tensorflow imported:", "tensorflow" in sys.modules, file=sys.stderr))
from supersmm_tasks.cli import main
main(sys.argv[1:])
"""


def enqueue_command(*arguments: str) -> list[str]:
    return [sys.executable, "-c", ENQUEUE_AND_REPORT, "enqueue", *arguments]


def test_enqueue_creates_and_queues_a_run_without_importing_tensorflow(training_home):
    created = subprocess.run(enqueue_command("sweep", "--dataset", "primus", "--model", "tiny", "--batch-size", "4",
                                             "--max-total-epochs", "3", "--no-curriculum"),
                             env=training_home.env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("queued run sweep: epochs 1-3 of 3"), created.stdout
    assert "tensorflow imported: False" in created.stderr
    assert training_home.state("sweep")["status"] == "queued"
    assert load_run_config("sweep").curriculum is False

    again = subprocess.run(enqueue_command("sweep", "--max-total-epochs", "6"), env=training_home.env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "is queued (epochs 1-3" in again.stderr
    assert "tensorflow imported: False" in again.stderr


def test_enqueue_reports_the_run_queued_when_a_reconciler_queues_it_first(training_home, monkeypatch):
    """A worker's reconciler may queue a new run's chunk between the CLI's lease release and its own send."""
    from supersmm_tasks import broker, chunk_queue, reconciler
    from supersmm_tasks.lease import Lease

    release = Lease.release

    def release_then_reconcile(lease):
        release(lease)
        assert reconciler.reconcile_once(broker.client()) == ["raced"]

    monkeypatch.setattr(Lease, "release", release_then_reconcile)
    assert training_home.enqueue("raced", epochs=3, chunk=3) == "queued run raced: epochs 1-3 of 3 on queue supersmm"
    assert chunk_queue.marker_epochs(chunk_queue.pending_chunk(broker.client(), "raced")) == "1-3"


def test_enqueue_takes_a_time_budget_in_minutes_and_refuses_one_that_is_not(training_home):
    import json

    from supersmm_tasks import paths

    refused = subprocess.run(enqueue_command("timed", "--dataset", "primus", "--max-minutes", "0"),
                             env=training_home.env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--max-minutes" in refused.stderr and "Traceback" not in refused.stderr
    created = subprocess.run(enqueue_command("timed", "--dataset", "primus", "--model", "tiny", "--max-minutes", "2.5"),
                             env=training_home.env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    config = json.loads(paths.config_path("timed").read_text())
    assert config["max_minutes"] == 2.5 and config["curriculum"] is True  # on unless told otherwise


def test_enqueue_refuses_budgets_and_queues_that_cannot_work_in_one_line_and_creates_nothing(training_home):
    from supersmm_tasks import paths

    for option, value in (("--max-minutes", "inf"), ("--max-total-epochs", "1000000000000"), ("--queue", "gpu,cpu"),
                          ("--seed", "-1"), ("--seed", str(2**32))):
        refused = subprocess.run(enqueue_command("bounded", "--dataset", "primus", option, value),
                                 env=training_home.env, capture_output=True, text=True, timeout=120)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 1 and lines[0].startswith(f"supersmm: error: {option}"), refused.stderr
        assert "Traceback" not in refused.stderr
    assert not paths.run_dir("bounded").exists()


def test_a_refused_enqueue_of_a_cancelled_run_changes_nothing(training_home):
    from supersmm_tasks import paths, runs
    from supersmm_tasks.errors import SupersmmError

    training_home.create("stopped", epochs=4, chunk=2)
    runs.cancel("stopped")
    before = {path: path.read_bytes() for path in (paths.config_path("stopped"), paths.state_path("stopped"))}

    try:
        runs.enqueue("stopped", max_total_epochs=77, patience=4)
    except SupersmmError as error:
        assert "run stopped was cancelled" in str(error)
    else:
        raise AssertionError("a cancelled run was enqueued")

    assert {path: path.read_bytes() for path in before} == before


def test_enqueue_queues_a_chunk_over_a_unix_socket_url_as_the_contract_spells_it(training_home, tmp_path, monkeypatch):
    from supersmm_tasks import broker, chunk_queue, reconciler
    from supersmm_tasks.testing import RedisServer

    socket_path = tmp_path / "redis.sock"
    server = RedisServer(tmp_path / "socket_redis", "--unixsocket", str(socket_path), "--unixsocketperm", "700")
    server.folder.mkdir()
    server.start()
    try:
        url = f"unix://{socket_path}"
        monkeypatch.setenv("SUPERSMM_BROKER_URL", url)
        env = {**training_home.env, "SUPERSMM_BROKER_URL": url}
        created = subprocess.run(enqueue_command("socketed", "--dataset", "primus", "--model", "tiny"),
                                 env=env, capture_output=True, text=True, timeout=120)
        assert created.returncode == 0, created.stderr

        connection = broker.client(url)
        marker = chunk_queue.pending_chunk(connection, "socketed")
        assert marker and not reconciler.MessageSnapshot(connection).nowhere(marker["task_id"], marker["queue"])
    finally:
        server.stop()


def test_a_full_disk_while_creating_a_run_leaves_no_run_and_the_next_enqueue_creates_it_whole(training_home,
                                                                                               monkeypatch):
    import builtins
    import errno

    from supersmm_tasks import paths
    from supersmm_tasks.errors import SupersmmError

    real_open = builtins.open

    def disk_full_at_the_log(file, *args, **kwargs):
        if str(file).endswith("training_output.log"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", disk_full_at_the_log)
    with pytest.raises(SupersmmError) as raised:
        training_home.create("full", epochs=4, chunk=2)
    monkeypatch.setattr(builtins, "open", real_open)

    assert str(raised.value) == (f"disk full while writing {paths.log_path('full')}: free some space and try again; "
                                 f"its earlier lines are intact")
    assert not paths.run_dir("full").exists() and "full" not in paths.run_names()
    training_home.create("full", epochs=4, chunk=2)
    assert "run created on dataset primus" in paths.log_path("full").read_text("utf-8")
    assert training_home.state("full")["status"] == "queued"


def test_a_result_backend_that_cannot_be_used_is_refused_before_the_run_is_created(training_home):
    from supersmm_tasks import paths

    env = {**training_home.env, "SUPERSMM_RESULT_BACKEND": "amqp://user:s3cret@elsewhere//"}
    refused = subprocess.run(enqueue_command("backed", "--dataset", "primus"), env=env, capture_output=True, text=True,
                             timeout=120)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and "SUPERSMM_RESULT_BACKEND" in lines[0] and "cannot be used" in lines[0]
    assert "s3cret" not in refused.stderr and "Traceback" not in refused.stderr
    assert not paths.run_dir("backed").exists()


def test_a_cancel_asked_while_another_command_changes_the_run_waits_for_it_and_is_not_lost(training_home):
    import threading
    import time

    from supersmm_tasks import broker, chunk_queue, run_state, runs
    from supersmm_tasks.lease import Lease

    training_home.create("contested", epochs=4, chunk=2)
    connection = broker.client()
    enqueueing = Lease.acquire(connection, "contested", worker="cli:elsewhere:1")  # an enqueue holds the run...

    def enqueue_ends():
        time.sleep(1.0)
        chunk_queue.clear_control(connection, "contested")  # ...and clears the requests it found, as enqueue does
        enqueueing.release()

    ending = threading.Thread(target=enqueue_ends)
    ending.start()
    said = runs.cancel("contested")
    ending.join()

    assert said == "run contested cancelled at epoch 0/4"
    assert run_state.read_state("contested")["status"] == "cancelled"


def test_an_epoch_budget_that_leaves_nothing_to_train_is_refused_and_changes_nothing(training_home):
    from supersmm_tasks import paths, run_state, runs
    from supersmm_tasks.errors import SupersmmError

    training_home.create("trained", epochs=8, chunk=2)
    run_state.write_state("trained", status="paused", last_completed_epoch=6)  # the scene: paused at epoch 6
    before = paths.config_path("trained").read_bytes()

    try:
        runs.enqueue("trained", max_total_epochs=5)
    except SupersmmError as error:
        assert str(error) == "run 'trained' has trained 6 epochs: --max-total-epochs 5 leaves none to train; " \
                             "give more than 6"
    else:
        raise AssertionError("a budget below the trained epochs was taken")

    assert paths.config_path("trained").read_bytes() == before
    assert run_state.read_state("trained")["status"] == "paused"

    training_home.create("finished", epochs=2, chunk=2)
    run_state.write_state("finished", status="completed", last_completed_epoch=2, stop_reason="max_total_epochs")
    with pytest.raises(SupersmmError, match="^run 'finished' has trained 2 epochs: --max-total-epochs 1 leaves none"):
        runs.enqueue("finished", max_total_epochs=1)  # it would read 2/1, and the hint would offer 2 epochs more
    assert runs.enqueue("finished", max_total_epochs=2) == ("run finished is complete (2/2 epochs, max_total_epochs); "
                                                            "to train longer: supersmm enqueue finished "
                                                            "--max-total-epochs 4")


def test_a_resume_that_meets_the_pause_being_applied_queues_the_run_again(training_home, monkeypatch):
    from supersmm_tasks import broker, chunk_queue, run_state, runs

    training_home.create("resumed", epochs=4, chunk=2)
    run_state.write_state("resumed", status="running", last_completed_epoch=1)  # the scene: a trainer has it
    chunk_queue.request_control(broker.client(), "resumed", "paused")
    asked = chunk_queue.read_control

    def trainer_applies_the_pause_meanwhile(connection, name):
        request = asked(connection, name)
        run_state.write_state(name, status="paused")  # the trainer's epoch boundary, between resume's two steps
        return request

    monkeypatch.setattr(chunk_queue, "read_control", trainer_applies_the_pause_meanwhile)
    said = runs.resume("resumed")

    assert said.startswith("queued run resumed: epochs 2-2"), said
    assert run_state.read_state("resumed")["status"] == "queued"
    assert chunk_queue.pending_chunk(broker.client(), "resumed")["first_epoch"] == 2


def test_a_resume_between_the_trainer_reading_the_pause_and_applying_it_lets_the_run_go_on(training_home):
    from supersmm_tasks import broker, chunk_queue, paths, runs
    from supersmm_tasks.chunk import ChunkSpan
    from supersmm_tasks.training import train_chunk

    training_home.create("resumed", epochs=3, chunk=3)
    chunk_queue.request_control(broker.client(), "resumed", "paused")
    said = []

    def request_read_then_resumed():  # the trainer's should_stop, with `supersmm resume` right after its first read
        request = chunk_queue.read_control(broker.client(), "resumed")
        if not said:
            said.append(runs.resume("resumed"))
        return request

    result = train_chunk("resumed", ChunkSpan(1, 3, 1), should_stop=request_read_then_resumed)

    assert said == ["pause of run resumed withdrawn; it goes on"]
    assert (result.status, result.last_completed_epoch) == ("completed", 3)
    assert training_home.csv_epochs("resumed") == [1, 2, 3]
    assert "pause withdrawn at epoch 0: training goes on" in paths.log_path("resumed").read_text()


def test_a_cancel_that_replaces_a_pause_the_trainer_has_read_is_the_one_applied(training_home):
    from supersmm_tasks import broker, chunk_queue, run_state
    from supersmm_tasks.chunk import ChunkSpan
    from supersmm_tasks.training import train_chunk

    training_home.create("switched", epochs=3, chunk=3)
    chunk_queue.request_control(broker.client(), "switched", "paused")

    def request_read_then_cancelled():  # `supersmm cancel` right after the trainer read the pause
        request = chunk_queue.read_control(broker.client(), "switched")
        chunk_queue.request_control(broker.client(), "switched", "cancelled")
        return request

    result = train_chunk("switched", ChunkSpan(1, 3, 1), should_stop=request_read_then_cancelled)

    assert result.status == "cancelled" and run_state.read_state("switched")["stop_reason"] == "cancelled by request"


def test_a_resume_does_not_withdraw_a_cancel_that_replaced_the_pause(training_home, monkeypatch):
    from supersmm_tasks import broker, chunk_queue, runs

    training_home.create("kept", epochs=4, chunk=2)
    chunk_queue.request_control(broker.client(), "kept", "paused")
    asked = chunk_queue.read_control

    def cancelled_right_after(connection, name):  # `supersmm cancel` between resume's look and its withdrawal
        request = asked(connection, name)
        chunk_queue.request_control(connection, name, "cancelled")
        return request

    monkeypatch.setattr(chunk_queue, "read_control", cancelled_right_after)
    said = runs.resume("kept")

    assert said == "run kept is queued, not paused; nothing to do"
    assert asked(broker.client(), "kept") == "cancelled"


@pytest.mark.parametrize("variable, value", [
    ("SUPERSMM_STALL_LIMIT", "abc"), ("SUPERSMM_WORKER_NICE", "abc"), ("SUPERSMM_RECONCILE_INTERVAL", "-1"),
    ("SUPERSMM_FAULT", "typo"),
])
def test_train_with_a_setting_its_worker_would_refuse_says_so_and_queues_nothing(training_home, variable, value):
    from supersmm_tasks import paths

    refused = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "train", "eager", "--dataset", "primus",
                              "--model", "tiny"], env={**training_home.env, variable: value}, capture_output=True,
                             text=True, timeout=120)

    assert refused.returncode == 1
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("supersmm")]
    assert line.startswith("supersmm: error: ") and variable in line and "Traceback" not in refused.stderr
    assert not paths.config_path("eager").exists()


@pytest.mark.parametrize("arguments, message", [
    (("detect", "--data-root", ""), "Invalid value for '--data-root': give a folder, not an empty string "
                                    "(see `supersmm detect --help`)"),
    (("enqueue", "nameless", "--dataset", ""), "Invalid value for '--dataset': give a name, not an empty string "
                                              "(see `supersmm enqueue --help`)"),
    (("enqueue", "../x"), "Invalid value for 'NAME': invalid run name '../x'"),
    (("enqueue", "x", "--bogus"), "No such option '--bogus'"),
])
def test_a_usage_error_is_one_line_and_an_empty_name_or_folder_is_refused(training_home, arguments, message):
    refused = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", *arguments], env=training_home.env,
                             capture_output=True, text=True, timeout=120, cwd=training_home.env["SUPERSMM_HOME"])

    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert line.startswith(f"supersmm: error: {message}")


def test_the_current_folder_is_a_data_root_like_any_other(training_home):
    looked = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "detect", "--data-root", "."],
                            env=training_home.env, capture_output=True, text=True, timeout=120,
                            cwd=training_home.env["SUPERSMM_HOME"])

    assert looked.returncode == 1
    assert looked.stderr.strip().splitlines()[-1].startswith(  # it looked in the current folder, SUPERSMM_HOME
        f"supersmm: error: no usable dataset under {training_home.env['SUPERSMM_HOME']}: ")
