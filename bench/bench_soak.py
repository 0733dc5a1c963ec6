"""Soak: runs that train through random worker kills and Redis restarts end exactly as undisturbed runs end.

Full run only (skipped under --quick; 2.5 minutes on an idle 2-core machine, about 20 under load). Four runs
(seeds 0-3, tiny model, the bench's 20-incipit corpus) train on three workers. At random moments drawn from a
fixed seed, either a worker is SIGKILLed (and replaced) or Redis is stopped and started again on the same port
and append-only file. At the end every run's CSV rows are compared with those of the same run trained in one go
in this process.

- soak_kills, soak_redis_restarts: the disturbances that happened.
- soak_rows_lost / soak_rows_duplicated: epochs missing from / repeated in logs/training_log.csv (all runs).
- soak_runs_exact: runs whose loss, val loss, val SER and val sequence error equal the undisturbed run's,
  epoch by epoch.
"""
from __future__ import annotations

import importlib.util
import random
import sys
import time
from pathlib import Path


BENCH_DIR = Path(__file__).resolve().parent
RUNS = 4
WORKERS = 3
EPOCHS, CHUNK = 16, 4
SCHEDULE_SEED = 15
PAUSE_BETWEEN_S = (15.0, 45.0)  # between two disturbances
REDIS_DOWN_S = (0.5, 4.0)
REDIS_RESTART_SHARE = 0.3
TIMEOUT_S = 45 * 60
RESULT_COLUMNS = ("epoch", "loss", "val_loss", "val_ser", "val_sequence_error")


def _bench_queue():
    spec = importlib.util.spec_from_file_location("bench_queue", BENCH_DIR / "bench_queue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


queue = _bench_queue()


def run(quick: bool) -> list[dict]:
    if quick:
        return []  # a soak needs its full length to mean anything
    with soak_home() as home:
        names = [f"soak{seed}" for seed in range(RUNS)]
        expected = {name: undisturbed(seed) for seed, name in enumerate(names)}
        for seed, name in enumerate(names):
            home.enqueue(name, seed)
        kills, restarts = disturb_until_done(home, names)
        rows = {name: home.rows(name) for name in names}
    epochs = {name: [int(row["epoch"]) for row in rows[name]] for name in names}
    lost = sum(len(set(range(1, EPOCHS + 1)) - set(epochs[name])) for name in names)
    duplicated = sum(len(epochs[name]) - len(set(epochs[name])) for name in names)
    exact = sum(results(rows[name]) == expected[name] for name in names)
    return [
        {"name": "soak_kills", "value": kills, "unit": "kills", "goal": ">= 1", "ok": kills >= 1},
        {"name": "soak_redis_restarts", "value": restarts, "unit": "restarts", "goal": ">= 1", "ok": restarts >= 1},
        {"name": "soak_rows_lost", "value": lost, "unit": "rows", "goal": "0", "ok": lost == 0},
        {"name": "soak_rows_duplicated", "value": duplicated, "unit": "rows", "goal": "0", "ok": duplicated == 0},
        {"name": "soak_runs_exact", "value": exact, "unit": "runs", "goal": f"{RUNS}", "ok": exact == RUNS,
         "epochs_per_run": EPOCHS, "workers": WORKERS},
    ]


def results(rows: list[dict]) -> list[tuple]:
    return [tuple(row[column] for column in RESULT_COLUMNS) for row in rows]


def undisturbed(seed: int) -> list[tuple]:
    """The CSV results of the run with this seed trained in one go, in this process."""
    from supersmm_tasks.chunk import ChunkSpan
    from supersmm_tasks.run_config import create_or_update_run
    from supersmm_tasks.training import train_chunk
    from supersmm_tasks.training_log import read_rows

    name = f"reference{seed}"
    create_or_update_run(name, "primus", **run_settings(seed))
    train_chunk(name, ChunkSpan(1, EPOCHS, 1))
    return results(read_rows(name))


def run_settings(seed: int) -> dict:
    return dict(model="tiny", batch_size=4, seed=seed, max_total_epochs=EPOCHS, max_epochs_per_run=CHUNK)


def disturb_until_done(home: "SoakHome", names: list[str]) -> tuple[int, int]:
    """Kill workers and restart Redis at seeded random moments until every run is over; (kills, restarts)."""
    moments = random.Random(SCHEDULE_SEED)
    workers = [home.workers.start(f"soak_w{number}", wait=False) for number in range(WORKERS)]
    kills = restarts = 0
    deadline = time.monotonic() + TIMEOUT_S
    while not home.all_finished(names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench_soak: runs not finished after {TIMEOUT_S} s")
        if not home.wait_or_finish(names, moments.uniform(*PAUSE_BETWEEN_S)):
            break
        if moments.random() < REDIS_RESTART_SHARE:
            home.restart_redis(moments.uniform(*REDIS_DOWN_S))
            restarts += 1
        else:
            victim = workers.pop(moments.randrange(len(workers)))
            victim.kill()
            kills += 1
            workers.append(home.workers.start(f"soak_w{WORKERS + kills}", wait=False))
    return kills, restarts


class SoakHome(queue.BenchHome):
    """The bench's home, whose Redis process the soak restarts."""

    def restart_redis(self, down_s: float) -> None:
        self.redis.restart(down_for_s=down_s)

    def enqueue(self, name: str, seed: int) -> None:
        from supersmm_tasks import runs

        runs.enqueue(name, dataset="primus", **run_settings(seed))

    def rows(self, name: str) -> list[dict]:
        from supersmm_tasks.training_log import read_rows

        return read_rows(name)

    def all_finished(self, names: list[str]) -> bool:
        from supersmm_tasks import run_state

        return all(run_state.read_state(name, repair=False)["status"] not in ("queued", "running") for name in names)

    def wait_or_finish(self, names: list[str], seconds: float) -> bool:
        """Wait `seconds`; False when every run finished meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.all_finished(names):
                return False
            time.sleep(0.5)
        return True


def soak_home():
    """The queue bench's home on a Redis that syncs its append-only file at every write, which the soak restarts."""
    return queue.bench_home(SoakHome, ("--appendfsync", "always"), prefix="supersmm_bench_soak_")


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(BENCH_DIR.parent))
    for figure in run(quick="--quick" in sys.argv):
        print(json.dumps(figure))
