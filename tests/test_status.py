"""`supersmm status` answers at once: it reads the run's files and Redis keys without Celery or TensorFlow."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

STATUS_AND_ITS_IMPORTS = """
import json, sys
from supersmm_tasks import cli
cli.main(["status", "--json"])
print(json.dumps(sorted(module for module in ("celery", "kombu", "tensorflow") if module in sys.modules)))
"""


def test_status_imports_neither_celery_nor_tensorflow(training_home):
    training_home.create("light", epochs=4, chunk=2)

    shown = subprocess.run([sys.executable, "-c", STATUS_AND_ITS_IMPORTS], capture_output=True, text=True,
                           timeout=120, env=training_home.env)

    assert shown.returncode == 0, shown.stderr
    table, _, imported = shown.stdout.strip().rpartition("\n")
    [row] = json.loads(table)
    assert (row["run"], row["status"], row["last_completed_epoch"]) == ("light", "queued", 0)
    assert json.loads(imported) == []


def test_status_with_a_broker_that_does_not_answer_shows_the_run_files_and_says_so_in_one_line(training_home):
    from supersmm_tasks.broker import free_loopback_port

    training_home.create("offline", epochs=4, chunk=2)
    port = free_loopback_port()

    shown = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "status", "--json"], capture_output=True,
                           text=True, timeout=120, env={**training_home.env, "SUPERSMM_BROKER_URL": f"redis://:s3cret@127.0.0.1:{port}/0"})

    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(shown.stdout)
    assert (row["run"], row["status"], row["last_completed_epoch"]) == ("offline", "queued", 0)
    [warning] = shown.stderr.strip().splitlines()
    assert warning.startswith(f"supersmm: warning: broker redis://:***@127.0.0.1:{port}/0 is unreachable")
    assert "shown from the run files alone" in warning and "s3cret" not in warning


def test_status_with_a_broker_that_refuses_the_password_is_one_error_line(training_home, redis_server):
    training_home.create("locked", epochs=4, chunk=2)
    redis_server.client().config_set("requirepass", "right")
    wrong = redis_server.url.replace("redis://", "redis://:wrong@")

    shown = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "status"], capture_output=True, text=True,
                           timeout=120, env={**training_home.env, "SUPERSMM_BROKER_URL": wrong})

    assert shown.returncode == 1 and shown.stdout == ""
    [line] = shown.stderr.strip().splitlines()
    assert line.startswith("supersmm: error: broker redis://:***@127.0.0.1:") and "refused the password" in line


def test_one_damaged_run_is_one_warning_line_and_the_others_are_shown_without_a_lock_taken(training_home):
    """A run whose config lost its dataset (and whose state, rebuilt from it, is gone) and a CSV row edited by hand
    leave every other run in the table; status, a reader, creates no lock file (a read-only SUPERSMM_HOME)."""
    from supersmm_tasks import paths, training_log

    for name in ("whole", "damaged", "edited"):
        training_home.create(name, epochs=4, chunk=2)
    paths.config_path("damaged").write_text('{"run": "damaged"}')
    paths.state_path("damaged").unlink()
    blank = {column: "" for column in training_log.COLUMNS}
    for epoch, val_ser in ((1, "abc"), (2, "12.5")):
        training_log.append_row(blank | {"run": "edited", "dataset": "primus", "epoch": epoch, "val_ser": val_ser})
    lock = Path(str(paths.training_log_csv()) + ".lock")
    lock.unlink(missing_ok=True)

    shown = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "status", "--json"], capture_output=True,
                           text=True, timeout=120, env=training_home.env)
    enqueued = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "enqueue", "damaged"], capture_output=True,
                              text=True, timeout=120, env=training_home.env)

    assert shown.returncode == 0, shown.stderr
    rows = {row["run"]: row for row in json.loads(shown.stdout)}
    assert sorted(rows) == ["edited", "whole"] and rows["edited"]["best_val_ser"] == 12.5
    [warning] = shown.stderr.strip().splitlines()
    assert warning.startswith("supersmm: warning: run damaged not shown: cannot read ")
    assert warning.endswith("config.json: it lacks a valid dataset, max_total_epochs, max_epochs_per_run")
    assert not lock.exists()
    assert enqueued.returncode == 1 and "Traceback" not in enqueued.stderr
    assert enqueued.stderr.strip().splitlines()[-1].endswith("it lacks a valid dataset, max_total_epochs, "
                                                             "max_epochs_per_run")


def test_the_eta_of_the_last_row_is_shown_only_while_the_run_is_active_under_the_budget_it_was_made_for():
    from supersmm_tasks.run_summary import eta

    row = {"max_total_epochs": "6", "est_completion_time": "2026-12-07T22:58:06+00:00"}
    assert eta({"status": "running", "max_total_epochs": 6}, row) == "2026-12-07T22:58:06+00:00"
    assert eta({"status": "running", "max_total_epochs": 6}, {**row, "max_total_epochs": 6.0}) is not None  # pandas
    assert eta({"status": "queued", "max_total_epochs": 9}, row) is None  # the budget was raised since
    assert eta({"status": "completed", "max_total_epochs": 6}, row) is None
    assert eta({"status": "running", "max_total_epochs": 6}, {**row, "max_total_epochs": ""}) is None
    assert eta({"status": "running", "max_total_epochs": 6}, None) is None
