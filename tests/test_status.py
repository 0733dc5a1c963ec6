"""`supersmm status` answers at once: it reads the run's files and Redis keys without Celery or TensorFlow."""
from __future__ import annotations

import json
import subprocess
import sys

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
