"""What the newcomer gets: the full default `supersmm demo` in an empty folder, as a user runs it.

    demo_seconds   how long it takes, engraving to the printed result
    demo_val_ser   the validation SER it prints for the model it trained
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO_GOAL_SECONDS = 300
DEMO_GOAL_SER = 10.0  # issue 11: the demo's model reads its validation staves
REPOSITORY = Path(__file__).resolve().parents[1]


def run(quick: bool) -> list[dict]:
    # The demo is the newcomer's first contact: quick or not, it is measured at its default size.
    with tempfile.TemporaryDirectory(prefix="supersmm-bench-demo-") as home:
        env = {key: value for key, value in os.environ.items()
               if key not in ("SUPERSMM_BROKER_URL", "SUPERSMM_RESULT_BACKEND", "SUPERSMM_DATA_ROOT")}
        env["SUPERSMM_HOME"] = home
        started = time.perf_counter()
        try:
            demo = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "demo"], cwd=home, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            seconds = time.perf_counter() - started
            epochs = _epochs_trained(Path(home))
        finally:
            subprocess.run([sys.executable, "-c", "from supersmm_tasks import broker; broker.stop_embedded()"],
                           cwd=REPOSITORY, env=env, check=False)
    figure = {"name": "demo_seconds", "value": round(seconds, 1), "unit": "s", "goal": f"< {DEMO_GOAL_SECONDS}",
              "ok": demo.returncode == 0 and seconds < DEMO_GOAL_SECONDS}
    if demo.returncode != 0:
        figure["error"] = demo.stdout[-2000:]
    printed = re.search(r"symbol error rate ([0-9.]+)%", demo.stdout)
    ser = float(printed.group(1)) if printed else None
    return [figure, {"name": "demo_val_ser", "value": ser, "unit": f"% ({epochs})", "goal": f"<= {DEMO_GOAL_SER}",
                     "ok": ser is not None and ser <= DEMO_GOAL_SER}]


def _epochs_trained(home: Path) -> str:
    """How many epochs the demo fitted in its time, how long they took, and each one's val SER (its CSV log)."""
    import pandas as pd

    log = home / "logs" / "training_log.csv"
    if not log.is_file():
        return "no epoch trained"
    rows = pd.read_csv(log)
    return (f"{len(rows)} epochs of {rows['epoch_time_sec'].median():.1f} s (median); val SER by epoch "
            f"{', '.join(f'{ser:.1f}' for ser in rows['val_ser'])}")
