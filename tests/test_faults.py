"""SUPERSMM_FAULT: names are checked (a typo stops the worker at its start), slow_batches works without Celery."""
from __future__ import annotations

import time

import pytest

from supersmm_tasks import faults
from supersmm_tasks.errors import SupersmmError


def test_an_unknown_fault_name_is_refused(monkeypatch):
    monkeypatch.setenv(faults.FAULT_VARIABLE, "slow_batches,after_chekpoint")

    with pytest.raises(SupersmmError, match="unknown fault after_chekpoint"):
        faults.injected()


def test_slow_batches_slows_every_progress_report_outside_celery(monkeypatch):
    heard = []
    monkeypatch.setenv(faults.FAULT_VARIABLE, "")
    assert faults.applied(heard.append) == heard.append

    monkeypatch.setenv(faults.FAULT_VARIABLE, "slow_batches")
    started = time.monotonic()
    report = faults.applied(heard.append)
    report({"batch": 1})
    report({"batch": 2})

    assert time.monotonic() - started >= 2 * faults.SLOW_BATCH_S
    assert heard == [{"batch": 1}, {"batch": 2}]


def test_a_worker_with_an_unknown_fault_stops_at_its_start_with_one_line(workers):
    worker = workers.start("typo", wait=False, SUPERSMM_FAULT="before_clam")

    assert worker.process.wait(timeout=120) == 1
    assert "supersmm: error: SUPERSMM_FAULT: unknown fault before_clam" in worker.log()
    assert "Traceback" not in worker.log()


@pytest.mark.parametrize("options", [["--concurrency", "2"], ["--pool", "solo"], ["--autoscale", "2,1"]])
def test_a_worker_asked_for_another_pool_stops_at_its_start_with_one_line(supersmm_env, options):
    import subprocess
    import sys

    started = subprocess.run([sys.executable, "-m", "celery", "-A", "supersmm_tasks", "worker", *options],
                             capture_output=True, text=True, timeout=120, env=supersmm_env)

    assert started.returncode == 1
    lines = (started.stdout + started.stderr).strip().splitlines()
    assert lines[-1].startswith("supersmm: error: a worker trains one chunk at a time (--pool threads --concurrency 1")
    assert "start more workers instead" in lines[-1] and "Traceback" not in started.stderr


def test_a_worker_asked_for_a_custom_pool_it_cannot_import_stops_with_one_line(supersmm_env):
    import subprocess
    import sys

    env = {key: value for key, value in supersmm_env.items() if key != "CELERY_CUSTOM_WORKER_POOL"}
    started = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "worker", "--pool", "custom"],
                             capture_output=True, text=True, timeout=120, env=env)

    assert started.returncode == 1
    assert started.stderr.strip().splitlines() == [
        "supersmm: error: the worker cannot start: No module named 'custom' (a worker trains with --pool threads, "
        "its default)"]
