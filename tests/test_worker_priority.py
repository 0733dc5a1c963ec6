"""A worker trains behind the user's own commands: every thread at SUPERSMM_WORKER_NICE, and its session too."""
from __future__ import annotations

from pathlib import Path

import pytest

from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.worker_priority import DEFAULT_NICE, NICE_VARIABLE, worker_niceness


def thread_niceness(pid: int) -> set[int]:
    """The niceness of every thread of process pid (field 19 of /proc/PID/task/TID/stat)."""
    found = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        fields = stat.read_text().rpartition(")")[2].split()
        found.add(int(fields[16]))
    return found


def autogroup_niceness(pid: int) -> int | None:
    path = Path(f"/proc/{pid}/autogroup")
    return int(path.read_text().split()[-1]) if path.exists() else None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads thread niceness from Linux's /proc")
def test_a_worker_lowers_its_priority_and_its_sessions(workers):
    worker = workers.start("behind")

    assert thread_niceness(worker.process.pid) == {DEFAULT_NICE}
    assert autogroup_niceness(worker.process.pid) in (DEFAULT_NICE, None)  # None: a kernel without autogroups
    assert f"training at niceness {DEFAULT_NICE}" in worker.log()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads thread niceness from Linux's /proc")
def test_niceness_zero_keeps_the_priority_a_worker_was_given(workers):
    worker = workers.start("as_started", **{NICE_VARIABLE: "0"})

    assert thread_niceness(worker.process.pid) == {0}


def test_a_bad_niceness_stops_the_worker_at_its_start_with_one_line(workers):
    worker = workers.start("bad_nice", wait=False, **{NICE_VARIABLE: "-5"})

    assert worker.process.wait(timeout=120) == 1
    assert f"supersmm: error: {NICE_VARIABLE}='-5': give a niceness from 0" in worker.log()
    assert "Traceback" not in worker.log()


@pytest.mark.parametrize("value", ["20", "ten", "1.5"])
def test_worker_niceness_refuses_what_is_no_niceness(monkeypatch, value):
    monkeypatch.setenv(NICE_VARIABLE, value)

    with pytest.raises(SupersmmError, match=NICE_VARIABLE):
        worker_niceness()


def test_worker_niceness_defaults_to_ten(monkeypatch):
    monkeypatch.delenv(NICE_VARIABLE, raising=False)
    assert worker_niceness() == DEFAULT_NICE == 10
    monkeypatch.setenv(NICE_VARIABLE, "3")
    assert worker_niceness() == 3
