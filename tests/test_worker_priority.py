"""A worker trains behind the user's own commands: every thread at SUPERSMM_WORKER_NICE, and its session too."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.testing import wait_for
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
def test_supersmm_worker_runs_at_the_worker_niceness(supersmm_env, tmp_path):
    log_path = tmp_path / "supersmm_worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "supersmm_tasks.cli", "worker", "-n", "cli@%h",
                                   "--without-mingle", "--without-gossip"], env=supersmm_env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "ready." in log_path.read_text(errors="replace"), timeout_s=120, what="supersmm worker ready")

        assert thread_niceness(worker.pid) == {DEFAULT_NICE}
        assert autogroup_niceness(worker.pid) in (DEFAULT_NICE, None)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

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


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="needs Linux's autogroups")
def test_workers_started_together_each_bring_their_session_down(tmp_path):
    """Without CAP_SYS_ADMIN the kernel changes one session's niceness per 0.1 s, machine-wide: workers started
    at the same moment wait for their turn instead of staying ahead of the others."""
    moment = time.time() + 3  # after every child's Python has started
    probe = ("import sys, time; from supersmm_tasks import worker_priority as w; "
             f"time.sleep(max(0, {moment} - time.time())); w.lower_worker_priority(); "
             "print(open('/proc/self/autogroup').read().split()[-1])")
    # As root, without CAP_SYS_ADMIN, as any other user is (and the rate limit applies).
    without_admin = ["setpriv", "--bounding-set", "-sys_admin"] if os.geteuid() == 0 and shutil.which("setpriv") else []
    children = [subprocess.Popen([*without_admin, sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True,
                                 start_new_session=True, env={**os.environ, NICE_VARIABLE: "10"}) for _ in range(4)]

    sessions = [int(child.communicate(timeout=60)[0]) for child in children]

    assert sessions == [10, 10, 10, 10]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads niceness from Linux's /proc")
def test_the_launcher_lowers_the_priority_before_celery_loads_the_app(tmp_path):
    """`python -m supersmm_tasks.worker_priority celery ...` (how `supersmm train` and the tests start workers;
    `supersmm worker` does the same): Celery's start already runs at the worker's niceness."""
    seen = tmp_path / "seen.txt"
    (tmp_path / "probe_app.py").write_text(
        "import os\nfrom pathlib import Path\nfrom celery import Celery\n"
        f"Path({str(seen)!r}).write_text(str(os.nice(0)) + ' ' + Path('/proc/self/autogroup').read_text().split()[-1])\n"
        "app = Celery('probe_app')\n")
    launched = subprocess.run([sys.executable, "-m", "supersmm_tasks.worker_priority", "celery", "-A", "probe_app", "report"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120, start_new_session=True,
                              env={**os.environ, "PYTHONPATH": str(tmp_path), NICE_VARIABLE: "12"})

    assert launched.returncode == 0, launched.stderr
    assert seen.read_text() == "12 12"  # the process and its session, before any worker signal


def test_the_launcher_refuses_a_bad_niceness_with_one_line():
    launched = subprocess.run([sys.executable, "-m", "supersmm_tasks.worker_priority", "celery", "--version"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, NICE_VARIABLE: "20"})

    assert launched.returncode == 1
    assert launched.stderr.strip() == (f"supersmm: error: {NICE_VARIABLE}='20': give a niceness from 0 (as started) "
                                       "to 19 (lowest)")


@pytest.mark.parametrize("target, reached", [("10", 10), ("5", 8)])
def test_a_worker_started_lower_is_brought_to_the_niceness_not_past_it(target, reached):
    """SUPERSMM_WORKER_NICE is the niceness a worker trains at, not a step: one started at 8 goes to 10, not 18,
    and stays at 8 where 5 is asked (a process cannot raise its own priority)."""
    probe = "import os; from supersmm_tasks import worker_priority as w; w.lower_worker_priority(); print(os.nice(0))"
    launched = subprocess.run(["nice", "-n", "8", sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=60, env={**os.environ, NICE_VARIABLE: target})

    assert int(launched.stdout) == reached, launched.stderr
