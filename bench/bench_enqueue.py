"""How long `supersmm enqueue` takes while workers train: the time a sweep of many runs costs.

- enqueue_seconds_p50 / _p95: wall time of the real command (a new process, as a user or a sweep script runs
  it) creating and queueing a new run, while two workers train two other runs; 12 runs (6 with --quick).
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from supersmm_tasks.testing import wait_for

BENCH_DIR = Path(__file__).resolve().parent
GOAL_S = 0.5


def _bench_queue():
    spec = importlib.util.spec_from_file_location("bench_queue", BENCH_DIR / "bench_queue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(quick: bool) -> list[dict]:
    queue = _bench_queue()
    count = 6 if quick else 12
    with queue.bench_home() as home:
        busy = [home.workers.start(f"busy{number}", wait=False) for number in range(2)]
        for number, worker in enumerate(busy):
            home.enqueue(f"training{number}", epochs=10_000, chunk=5_000)
        for number in range(2):
            wait_for(lambda: home.progress(f"training{number}").get("batch", 0) >= 1, 300,
                           f"run training{number} to train")
        seconds = [timed_enqueue(f"sweep{number:03d}") for number in range(count)]
        trained_meanwhile = all(worker.is_running() for worker in busy)
    p50, p95 = queue.percentile(seconds, 50), queue.percentile(seconds, 95)
    return [
        {"name": "enqueue_seconds_p50", "value": round(p50, 3), "unit": "s", "goal": f"<= {GOAL_S}",
         "ok": p50 <= GOAL_S and trained_meanwhile, "runs": count, "busy_workers": len(busy)},
        {"name": "enqueue_seconds_p95", "value": round(p95, 3), "unit": "s", "goal": f"<= {2 * GOAL_S}",
         "ok": p95 <= 2 * GOAL_S and trained_meanwhile, "runs": count, "busy_workers": len(busy)},
    ]


def timed_enqueue(name: str) -> float:
    """Seconds of one `supersmm enqueue NAME` creating a new run (tiny model, 3 epochs)."""
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-m", "supersmm_tasks.cli", "enqueue", name, "--dataset", "primus", "--model", "tiny",
         "--batch-size", "4", "--max-total-epochs", "3"],
        capture_output=True, text=True, cwd=BENCH_DIR.parent)
    seconds = time.perf_counter() - started
    if finished.returncode != 0 or not finished.stdout.startswith(f"queued run {name}"):
        raise RuntimeError(f"bench_enqueue: `supersmm enqueue {name}` failed: {(finished.stderr or finished.stdout).strip()}")
    return seconds


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(BENCH_DIR.parent))
    for figure in run(quick="--quick" in sys.argv):
        print(json.dumps(figure))
