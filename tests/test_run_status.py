"""A run's status moves only as the table allows, on a real run folder: allowed moves write, others write nothing."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import add_sample, detected_home
from supersmm_tasks import paths, run_state
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.lease import LeaseLost
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.run_status import ALLOWED_MOVES, RunStatus, transition

ALLOWED = [(start, to) for start, targets in ALLOWED_MOVES.items() for to in sorted(targets)]
FORBIDDEN = [(start, to) for start in RunStatus for to in RunStatus if to not in ALLOWED_MOVES[start]]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """Run `moves` created on a corpus of four copies of the real sample."""
    data_root = tmp_path_factory.mktemp("status_data")
    for copy in range(4):
        add_sample(data_root / "primus", f"{copy:09d}-1_1_1")
    with detected_home(tmp_path_factory.mktemp("status_home"), data_root):
        create_or_update_run("moves", "primus", model="tiny")
        yield "moves"


def start_at(run: str, status: RunStatus) -> bytes:
    """Put the run in `status` (as a test sets a scene, not a move) and return the state file's bytes."""
    run_state.write_state(run, status=status, error="")
    return paths.state_path(run).read_bytes()


def test_a_new_run_starts_queued(run):
    assert run_state.read_state(run)["status"] == RunStatus.QUEUED
    assert "status: queued\n" in paths.state_path(run).read_text()


@pytest.mark.parametrize("start, to", ALLOWED, ids=[f"{a}-{b}" for a, b in ALLOWED])
def test_an_allowed_move_writes_the_status_and_its_fields(run, start, to):
    start_at(run, start)
    guarded = []

    written = transition(run, to, guard=lambda: guarded.append(True), error="why")

    assert written["status"] == to and guarded == [True]
    state = run_state.read_state(run)
    assert (state["status"], state["error"]) == (to, "why")
    assert f"status: {to.value}\n" in paths.state_path(run).read_text()


@pytest.mark.parametrize("start, to", FORBIDDEN, ids=[f"{a}-{b}" for a, b in FORBIDDEN])
def test_a_forbidden_move_is_refused_and_writes_nothing(run, start, to):
    before = start_at(run, start)
    guarded = []

    with pytest.raises(SupersmmError, match=f"run {run}: its status cannot move from {start.value} to {to.value}"):
        transition(run, to, guard=lambda: guarded.append(True), error="why")

    assert paths.state_path(run).read_bytes() == before and guarded == []


def test_a_failed_guard_writes_nothing(run):
    before = start_at(run, RunStatus.RUNNING)

    def lost():
        raise LeaseLost("another worker owns the run")

    with pytest.raises(LeaseLost):
        transition(run, RunStatus.COMPLETED, guard=lost, stop_reason="max_total_epochs")

    assert paths.state_path(run).read_bytes() == before


# Holds the run's state lock, then sets the status to cancelled, as another writer of the run would.
CANCEL_HOLDING_THE_LOCK = """
import sys, time
from filelock import FileLock
from supersmm_tasks import paths, run_state
from supersmm_tasks.durable import write_atomically
name = sys.argv[1]
with FileLock(str(paths.state_path(name)) + ".lock"):
    print("holding", flush=True)
    time.sleep(1.0)
    state = run_state.read_state(name)
    state["status"] = "cancelled"
    write_atomically(paths.state_path(name), run_state.format_state(state).encode())
"""


def test_a_move_is_checked_against_the_status_another_writer_left_while_it_waited(run):
    start_at(run, RunStatus.RUNNING)
    holder = subprocess.Popen([sys.executable, "-c", CANCEL_HOLDING_THE_LOCK, run], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        guarded = []

        # Checked before the lock, running -> completed would pass, and overwrite the cancel once the lock came.
        with pytest.raises(SupersmmError, match=f"run {run}: its status cannot move from cancelled to completed"):
            transition(run, RunStatus.COMPLETED, guard=lambda: guarded.append(True), stop_reason="max_total_epochs")
    finally:
        assert holder.wait(timeout=30) == 0

    assert run_state.read_state(run)["status"] == RunStatus.CANCELLED and guarded == []


def test_a_missing_state_file_is_rebuilt_by_the_move_itself_and_only_after_the_guard(run):
    start_at(run, RunStatus.RUNNING)
    paths.state_path(run).unlink()

    def lost():
        assert not paths.state_path(run).exists()  # nothing was written before the fence said yes
        raise LeaseLost("another worker owns the run")

    with pytest.raises(LeaseLost):
        transition(run, RunStatus.FAILED, guard=lost, error="why")  # rebuilt, the run is queued: its trainer is gone
    assert not paths.state_path(run).exists()

    written = transition(run, RunStatus.RUNNING, guard=lambda: None, chunk=3)

    state = run_state.read_state(run)
    assert (written["status"], state["status"], state["chunk"]) == (RunStatus.RUNNING, RunStatus.RUNNING, 3)
    assert state["max_total_epochs"] == written["max_total_epochs"] and state["run"] == run


def test_statuses_are_the_words_of_the_state_file_and_the_contract():
    assert [status.value for status in RunStatus] == [
        "queued", "running", "paused", "completed", "cancelled", "failed"]
    assert f"{RunStatus.PAUSED}" == str(RunStatus.PAUSED) == "paused" and RunStatus.PAUSED == "paused"


def test_a_full_disk_while_backing_up_the_state_is_one_line_and_leaves_no_temporary_file(run, monkeypatch):
    import errno
    import shutil

    start_at(run, RunStatus.RUNNING)

    def disk_full(source, target):
        with open(target, "wb") as partial:
            partial.write(b"status: pa")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(SupersmmError, match=r"disk full while writing .*training_state\.1\.txt\.tmp: free some space"):
        transition(run, RunStatus.PAUSED)

    assert not list(paths.backups_dir(run).glob(".*.tmp"))
