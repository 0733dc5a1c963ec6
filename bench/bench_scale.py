"""The cluster at scale: many worker processes and runs on one Redis, with the training replaced by a stand-in.

Everything is real except the training step: `celery worker` processes running the project's chunk
task (pending marker, claim, lease, heartbeat, fencing, reconciler, run state, CSV log, checkpoint files)
with `bench/scale_worker.py`'s stand-in, which sleeps 5 ms per epoch and writes a checkpoint of a few
bytes (see that module for how it is plugged in). Two sizes, each on its own redis-server, every run
10 chunks of 1 epoch: 5 workers x 50 runs, then 50 workers x 500 runs, during which 10% of the workers
are SIGKILLed at random moments and replaced. --quick: 3 x 15, then 15 x 150.

Figures (the large size unless named otherwise):
- scale_workers, scale_runs, scale_chunks_per_second;
- scale_overhead_ms_p50 / _p95: what a chunk costs besides its training, from one chunk's end to the
  start of the next chunk its worker trains (release the lease, queue the run's next chunk, acknowledge,
  take the next message, claim its run, read the state), while chunks were waiting. The time from a
  chunk's end to the next chunk *of the same run* adds the run's turn behind the other runs (ten per
  worker here, by design: runs sharing a pool take turns); it is reported as scale_run_turn_ms_p50/_p95,
  next to what fair turns alone explain ((runs - workers) / chunks per second);
- all of these from the moment every worker, ready, is told to take the runs' queue (every run is queued
  before) until fewer runs than workers are left;
- scale_overhead_growth: overhead p95 large / small;
- scale_cpu_ms_per_chunk and its growth large / small: the CPU time a chunk costs the machine (the worker
  processes, from /proc, over the chunks they ended, and redis-server, over every chunk), in the same window:
  what the work of a chunk grows by with the cluster, where the overhead's wall time also holds the wait for a
  core (with 5 ms chunks, 50 workers keep the 2 cores busy);
- scale_redis_commands_per_chunk (Redis INFO commandstats, all clients, from the first enqueue to the
  last chunk) and its growth large / small;
- reconcile_pass_ms: the CPU time of one reconciler pass over all runs (median of 5, taken mid-run; its
  wall time, longer on a busy machine, is given next to it);
- scale_lost_chunks (epochs without a CSV row once every run completed) and scale_duplicate_rows;
- scale_csv_check_ms and its growth: what each chunk start's check of its run's CSV rows (training_log.reconcile_run,
  under the lock every worker shares) costs in a CSV of 50,000 rows, when other workers appended CSV_APPENDED rows
  since this process last looked, against the same in a CSV of 5,000 rows (the first look of a process reads the
  whole file; it is given next to them);
- scale_overhead_ms_p95_unsaturated and scale_overhead_growth_unsaturated: both sizes again with the stand-in at
  UNSATURATED_STEP_S a chunk, where the 50 workers' handovers no longer keep this machine's 2 cores saturated
  (with 5 ms chunks, each handover waits for a core behind the other processes: that, not the handover's own
  work, is what grows with the workers there).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

from bench.bench_queue import percentile
from supersmm_tasks.testing import Worker, Workers, redis_folder

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
EPOCHS = 10
KILLED_FRACTION = 0.1
STARTS_AT_ONCE = 8  # worker processes started together (2 cores: each start takes a second of CPU)
HOLDING_QUEUE = "scale_holding"  # the workers wait on it, empty, until every one of them is ready
UNSATURATED_STEP_S = 2.0  # 50 workers then hand over ~25 chunks a second, about a quarter of 2 cores
CSV_ROWS = (5_000, 50_000)  # 500 and 5,000 runs of 10 epochs
CSV_APPENDED = 50  # rows other workers append between two chunk starts of one worker (50 workers, 1-epoch chunks)


def run(quick: bool) -> list[dict]:
    sizes = ((3, 15), (15, 150)) if quick else ((5, 50), (50, 500))
    kills = max(1, round(sizes[1][0] * KILLED_FRACTION))
    small_csv, large_csv = (csv_check_ms(rows) for rows in CSV_ROWS)  # first, on a machine at rest
    with corpus() as data_root:
        small = measure(data_root, *sizes[0], kills=0)
        large = measure(data_root, *sizes[1], kills=kills)
        calm_small = measure(data_root, *sizes[0], kills=0, step_s=UNSATURATED_STEP_S)
        calm_large = measure(data_root, *sizes[1], kills=kills, step_s=UNSATURATED_STEP_S)
    overhead_growth = large["overhead_p95"] / small["overhead_p95"]
    calm_growth = calm_large["overhead_p95"] / calm_small["overhead_p95"]
    commands_growth = large["commands_per_chunk"] / small["commands_per_chunk"]
    cpu_growth = large["cpu_ms_per_chunk"] / small["cpu_ms_per_chunk"]
    calm_cpu_growth = calm_large["cpu_ms_per_chunk"] / calm_small["cpu_ms_per_chunk"]
    return [
        figure("scale_workers", large["workers"], "processes", ">= 50", large["workers"] >= (15 if quick else 50),
               killed=large["killed"]),
        figure("scale_runs", large["runs"], "runs", ">= 500", large["runs"] >= (150 if quick else 500),
               chunks=large["chunks"]),
        figure("scale_chunks_per_second", round(large["chunks_per_second"], 1), "chunks/s", "report", True,
               small=round(small["chunks_per_second"], 1), measured_for_s=round(large["seconds"], 1)),
        figure("scale_overhead_ms_p50", round(large["overhead_p50"], 1), "ms", "report", True,
               small=round(small["overhead_p50"], 1)),
        figure("scale_overhead_ms_p95", round(large["overhead_p95"], 1), "ms", "<= 100", large["overhead_p95"] <= 100,
               small=round(small["overhead_p95"], 1)),
        figure("scale_overhead_growth", round(overhead_growth, 2), "ratio", "<= 1.5", overhead_growth <= 1.5),
        figure("scale_cpu_ms_per_chunk", round(large["cpu_ms_per_chunk"], 1), "ms", "report", True,
               workers=round(large["worker_cpu_ms_per_chunk"], 1), redis=round(large["redis_cpu_ms_per_chunk"], 2),
               small=round(small["cpu_ms_per_chunk"], 1), small_workers=round(small["worker_cpu_ms_per_chunk"], 1),
               small_redis=round(small["redis_cpu_ms_per_chunk"], 2)),
        figure("scale_cpu_per_chunk_growth", round(cpu_growth, 2), "ratio", "report", True,
               unsaturated=round(calm_cpu_growth, 2), unsaturated_small=round(calm_small["cpu_ms_per_chunk"], 1),
               unsaturated_large=round(calm_large["cpu_ms_per_chunk"], 1)),
        figure("scale_run_turn_ms_p50", round(large["turn_p50"], 1), "ms", "report", True,
               fair_turn_ms=round(large["fair_turn"], 1)),
        figure("scale_run_turn_ms_p95", round(large["turn_p95"], 1), "ms", "report", True,
               small=round(small["turn_p95"], 1)),
        figure("scale_redis_commands_per_chunk", round(large["commands_per_chunk"], 1), "commands", "report", True,
               small=round(small["commands_per_chunk"], 1), top=large["top_commands"]),
        figure("scale_redis_commands_growth", round(commands_growth, 2), "ratio", "<= 1.2", commands_growth <= 1.2),
        figure("reconcile_pass_ms", round(large["reconcile_cpu_ms"], 1), "ms", "report", True,
               wall_ms=round(large["reconcile_wall_ms"], 1), runs=large["runs"]),
        figure("scale_lost_chunks", small["lost"] + large["lost"], "chunks", "0", small["lost"] + large["lost"] == 0),
        figure("scale_duplicate_rows", small["duplicates"] + large["duplicates"], "rows", "0",
               small["duplicates"] + large["duplicates"] == 0),
        figure("scale_csv_check_ms", round(large_csv["steady"], 2), "ms", "report", True, rows=CSV_ROWS[1],
               appended_since=CSV_APPENDED, first_look_ms=round(large_csv["first"], 1),
               small=round(small_csv["steady"], 2), small_rows=CSV_ROWS[0]),
        figure("scale_csv_check_growth", round(large_csv["steady"] / small_csv["steady"], 2), "ratio", "report", True,
               rows_growth=CSV_ROWS[1] // CSV_ROWS[0]),
        figure("scale_overhead_ms_p95_unsaturated", round(calm_large["overhead_p95"], 1), "ms", "<= 100",
               calm_large["overhead_p95"] <= 100, step_s=UNSATURATED_STEP_S, p50=round(calm_large["overhead_p50"], 1),
               small=round(calm_small["overhead_p95"], 1), chunks_per_second=round(calm_large["chunks_per_second"], 1),
               lost=calm_small["lost"] + calm_large["lost"], duplicates=calm_small["duplicates"] + calm_large["duplicates"]),
        figure("scale_overhead_growth_unsaturated", round(calm_growth, 2), "ratio", "<= 1.5", calm_growth <= 1.5,
               step_s=UNSATURATED_STEP_S),
    ]


def figure(name, value, unit, goal, ok, **details) -> dict:
    return {"name": name, "value": value, "unit": unit, "goal": goal, "ok": bool(ok), **details}


# --- one size --------------------------------------------------------------------------------------

def measure(data_root: Path, worker_count: int, run_count: int, kills: int, step_s: float | None = None) -> dict:
    """Train run_count runs of EPOCHS one-epoch chunks on worker_count stand-in workers (each epoch `step_s`, else
    the stand-in's default); the figures of it.

    Every run is queued and every worker started (on a holding queue that nothing is sent to), then every
    worker is told at once to take the runs' queue: the figures are taken from that moment to the moment fewer
    runs than workers are left, while chunks wait for every worker. (Taking chunks as soon as it is ready, the
    first workers drained the runs while the others started behind them, at the workers' niceness.) The stand-in's
    first epoch in each worker lasts a random part of a step longer, so that the workers' chunks do not end in
    step."""
    total = run_count * EPOCHS
    with scale_home(data_root, step_s) as home:
        names = [f"scale_{number:04d}" for number in range(run_count)]
        home.detect()
        home.redis().config_resetstat()
        home.enqueue(names)
        home.start_workers(worker_count, queue=HOLDING_QUEUE)
        ready_at, done_at_ready = home.open_gate(), home.chunks_done()
        kill_at = sorted(done_at_ready + random.uniform(0.1, 0.8) * (total - done_at_ready) for _ in range(kills))
        reconcile_times, cpu_samples = [], []
        while True:
            cpu_samples.append(home.cpu_sample())
            done = home.chunks_done()
            # A worker killed between a chunk's last write and its timing line leaves that chunk untimed.
            if done >= total - kills and home.all_completed(names):
                break
            if time.time() - ready_at > home.timeout_s(run_count, worker_count):
                raise RuntimeError(f"{run_count} runs did not complete within {home.timeout_s(run_count, worker_count):.0f} s "
                                   f"({done} chunks done); worker logs in {home.folder}")
            if kill_at and done >= kill_at[0]:
                kill_at.pop(0)
                home.kill_and_replace_one()
            if len(reconcile_times) < 5 and done >= done_at_ready + 0.4 * (total - done_at_ready):
                reconcile_times.append(home.time_reconcile_pass())
            time.sleep(0.5)
        commands = home.commands()
        rows = home.csv_rows()
        timings = home.timings()
    expected = {(name, epoch) for name in names for epoch in range(1, EPOCHS + 1)}
    seen = [(row["run"], int(row["epoch"])) for row in rows]
    completions = sorted(t["end"] for t in timings if t["chunk"] == EPOCHS)
    saturated_until = completions[max(0, run_count - worker_count - 1)]
    overhead = worker_gaps(timings, ready_at, saturated_until)
    if not overhead:
        raise RuntimeError(f"{worker_count} workers x {run_count} runs: no worker went from one chunk to the next while "
                           f"every worker was busy ({saturated_until - ready_at:.1f} s): nothing to measure")
    turns = run_gaps(timings)
    rate = sum(ready_at <= t["end"] <= saturated_until for t in timings) / (saturated_until - ready_at)
    cpu = cpu_per_chunk(cpu_samples, timings, ready_at, saturated_until)
    return {
        "workers": worker_count, "runs": run_count, "chunks": len(timings), "killed": kills,
        "seconds": saturated_until - ready_at, "chunks_per_second": rate,
        "overhead_p50": percentile(overhead, 50), "overhead_p95": percentile(overhead, 95),
        "turn_p50": percentile(turns, 50), "turn_p95": percentile(turns, 95),
        "fair_turn": 1000 * (run_count - worker_count) / rate,
        "commands_per_chunk": sum(commands.values()) / total,
        "cpu_ms_per_chunk": cpu["workers"] + cpu["redis"], "worker_cpu_ms_per_chunk": cpu["workers"],
        "redis_cpu_ms_per_chunk": cpu["redis"],
        "top_commands": dict(sorted(commands.items(), key=lambda item: -item[1])[:8]),
        "reconcile_cpu_ms": statistics.median(cpu for cpu, _ in reconcile_times),
        "reconcile_wall_ms": statistics.median(wall for _, wall in reconcile_times),
        "lost": len(expected - set(seen)), "duplicates": len(seen) - len(set(seen)),
    }


def csv_check_ms(rows: int, looks: int = 50) -> dict:
    """ms of one chunk start's CSV check (reconcile_run of a run whose rows are all there) in a CSV of `rows`
    rows: the first look of a process, then the median of `looks` later ones, each after other workers
    appended CSV_APPENDED rows."""
    from supersmm_tasks import paths, training_log

    with tempfile.TemporaryDirectory(prefix="supersmm_bench_csv_") as folder, \
            patch.dict(os.environ, {"SUPERSMM_HOME": folder}):
        path = paths.training_log_csv()
        path.parent.mkdir(parents=True)
        with open(path, "w", encoding="utf-8") as log:
            log.write(training_log.HEADER + "".join(_csv_row(number) for number in range(rows)))

        def look() -> float:
            started = time.perf_counter()
            changes = training_log.reconcile_run("scale_0000", EPOCHS, row_for=lambda epoch: None)
            if changes:
                raise RuntimeError(f"the CSV check changed a complete run's rows: {changes}")
            return 1000 * (time.perf_counter() - started)

        first, later = look(), []
        for number in range(looks):
            with open(path, "a", encoding="utf-8") as log:  # as other workers' append_row would
                start = rows + number * CSV_APPENDED
                log.write("".join(_csv_row(row) for row in range(start, start + CSV_APPENDED)))
            later.append(look())
        return {"first": first, "steady": statistics.median(later)}


def _csv_row(number: int) -> str:
    """Row `number` of a CSV of runs scale_0000, scale_0001, ... of EPOCHS epochs each, filled as the stand-in's."""
    from supersmm_tasks import training_log

    run, epoch = f"scale_{number // EPOCHS:04d}", number % EPOCHS + 1
    values = {column: "" for column in training_log.COLUMNS} | {
        "timestamp": "2026-12-07T00:00:00+00:00", "run": run, "dataset": "primus", "epoch": epoch,
        "max_total_epochs": EPOCHS, "loss": 1.0, "val_loss": 1.0, "val_ser": 50.0, "val_sequence_error": 100.0,
        "worker": "scale1@host", "chunk": epoch, "checkpoint_path": f"/cluster/home/model/{run}_model/checkpoints/epoch_{epoch:06d}.npz"}
    return training_log.format_row(values)


def worker_gaps(timings: list[dict], since: float, until: float) -> list[float]:
    """ms from each chunk's end to the start of its worker's next chunk, within [since, until].
    A worker's first gap is left out: it includes opening the worker's connection for sending."""
    gaps = []
    by_worker: dict[str, list[dict]] = {}
    for timing in timings:
        by_worker.setdefault(timing["pid"], []).append(timing)
    for chunks in by_worker.values():
        chunks.sort(key=lambda t: t["start"])
        gaps += [1000 * (after["start"] - before["end"]) for before, after in zip(chunks[1:], chunks[2:])
                 if before["end"] >= since and after["start"] <= until]
    return gaps


def cpu_per_chunk(samples: list[dict], timings: list[dict], since: float, until: float) -> dict:
    """CPU ms per chunk within [since, until], of the workers ({"workers": ...}: those running from the window's
    first sample to its last, over the chunks they ended in between) and of redis-server ({"redis": ...}, over
    every chunk ended in between)."""
    inside = [sample for sample in samples if since <= sample["at"] <= until]
    first, last = (inside[0], inside[-1]) if len(inside) > 1 else (samples[0], samples[-1])  # a window under 0.5 s
    kept = {pid for pid in first["workers"] if pid in last["workers"]}
    ended = [t for t in timings if first["at"] <= t["end"] <= last["at"]]
    worker_chunks = sum(int(t["pid"]) in kept for t in ended)
    worker_cpu = sum(last["workers"][pid] - first["workers"][pid] for pid in kept)
    return {"workers": 1000 * worker_cpu / worker_chunks, "redis": 1000 * (last["redis"] - first["redis"]) / len(ended)}


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, None once it is gone."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return None
    return times.user + times.system


def run_gaps(timings: list[dict]) -> list[float]:
    """ms from each chunk's end to the start of the next chunk of the same run."""
    by_run: dict[str, dict[int, dict]] = {}
    for timing in timings:
        by_run.setdefault(timing["run"], {})[timing["chunk"]] = timing
    return [1000 * (chunks[number + 1]["start"] - chunks[number]["end"])
            for chunks in by_run.values() for number in chunks if number + 1 in chunks]


# --- the setting -----------------------------------------------------------------------------------

@contextmanager
def corpus():
    """A data root with a dozen engraved incipits (runs need a detected dataset; the stand-in never reads it)."""
    from supersmm_tasks.synth import generate_corpus

    folder = Path(tempfile.mkdtemp(prefix="supersmm_bench_scale_data_"))
    try:
        generate_corpus(folder / "primus", 12, seed=0, workers=1, progress=False)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def scale_home(data_root: Path, step_s: float | None = None):
    """A SUPERSMM_HOME on its own redis-server (append-only file, as a cluster's Redis would run)."""
    with redis_folder("supersmm_bench_scale_", "--maxclients", "10000") as (folder, redis_server):
        home = ScaleHome(folder, redis_server.url, data_root, step_s)
        os.environ.update(home.env)
        try:
            yield home
        finally:
            home.workers.kill_all()


class ScaleHome:
    def __init__(self, folder: Path, url: str, data_root: Path, step_s: float | None = None):
        self.folder = folder
        self.url = url
        self.step_s = step_s or 0.0
        self.redis_pid: int | None = None
        self.timings_dir = folder / "timings"
        self.timings_dir.mkdir()
        self.env = {
            "SUPERSMM_HOME": str(folder / "home"), "SUPERSMM_BROKER_URL": url, "SUPERSMM_DATA_ROOT": str(data_root),
            "SUPERSMM_SCALE_TIMINGS": str(self.timings_dir),
        }
        if step_s:
            self.env["SUPERSMM_SCALE_STEP_S"] = str(step_s)
        self.workers = Workers(folder, {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join([str(BENCH), str(REPO)])},
                               app="scale_worker", cwd=folder)

    def redis(self):
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)

    def detect(self) -> None:
        from supersmm_tasks.detect import detect

        detect()

    def enqueue(self, names: list[str]) -> None:
        """Create every run and queue its first chunk, as `supersmm enqueue NAME --max-total-epochs 10
        --max-epochs-per-run 1` does."""
        from supersmm_tasks import runs

        for name in names:
            runs.enqueue(name, dataset="primus", model="tiny", max_total_epochs=EPOCHS, max_epochs_per_run=1)

    def start_workers(self, count: int, queue: str | None = None) -> None:
        for first in range(0, count, STARTS_AT_ONCE):
            batch = [self.start_worker(queue) for _ in range(min(STARTS_AT_ONCE, count - first))]
            for worker in batch:
                worker.wait_ready(timeout_s=180)

    def start_worker(self, queue: str | None = None) -> Worker:
        """A worker on `queue`, else on the runs' queue (celeryconfig's default)."""
        return self.workers.start(f"scale{len(self.workers.started) + 1}", queues=queue, wait=False)

    def open_gate(self) -> float:
        """Tell every running worker to take the runs' queue too (Celery's add_consumer, one broadcast); when.

        Through an app like the project's on this size's broker: the project's app keeps the broker of the first
        size it served."""
        from celery import Celery

        from supersmm_tasks.celery_app import app

        workers = [worker.hostname for worker in self.workers.running()]
        gate = Celery("scale_gate")
        gate.config_from_object(app.conf)  # the same transport options (the names of the control channels)
        gate.conf.broker_url = self.url
        opened_at = time.time()
        try:
            replies = gate.control.add_consumer(app.conf.task_default_queue, destination=workers, reply=True, timeout=30)
        finally:
            gate.close()
        if len(replies) < len(workers):
            raise RuntimeError(f"{len(replies)} of {len(workers)} workers took the runs' queue; logs in {self.folder}")
        return opened_at

    def kill_and_replace_one(self) -> None:
        random.choice(self.workers.running()).kill()
        self.start_worker()

    def timeout_s(self, run_count: int, worker_count: int) -> float:
        return 600 + 4 * run_count + 2 * EPOCHS * run_count * self.step_s / worker_count

    def timings(self) -> list[dict]:
        found = []
        for path in self.timings_dir.glob("*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    found.append({**json.loads(line), "pid": path.stem})
                except ValueError:
                    continue  # a line cut short by a SIGKILL
        return found

    def chunks_done(self) -> int:
        return sum(path.read_bytes().count(b"\n") for path in self.timings_dir.glob("*.jsonl"))

    def first_chunk_start(self) -> float:
        return min(t["start"] for t in self.timings())

    def all_completed(self, names: list[str]) -> bool:
        from supersmm_tasks.run_state import peek_state

        return all(peek_state(name).get("status") == "completed" for name in names)

    def time_reconcile_pass(self) -> tuple[float, float]:
        """(CPU ms, wall ms) of one reconciler pass over every run, as a worker's reconciler thread makes it."""
        from supersmm_tasks import broker, reconciler

        started, cpu_started = time.perf_counter(), time.process_time()
        reconciler.reconcile_once(broker.client(self.url))
        return 1000 * (time.process_time() - cpu_started), 1000 * (time.perf_counter() - started)

    def cpu_sample(self) -> dict:
        """{"at": now, "workers": {pid: CPU s}, "redis": CPU s} of the running workers and the redis-server."""
        if self.redis_pid is None:
            self.redis_pid = int(self.redis().info("server")["process_id"])
        at = time.time()
        workers = {worker.process.pid: process_cpu_s(worker.process.pid) for worker in self.workers.running()}
        return {"at": at, "workers": {pid: cpu for pid, cpu in workers.items() if cpu is not None},
                "redis": process_cpu_s(self.redis_pid)}

    def commands(self) -> dict[str, int]:
        stats = self.redis().info("commandstats")
        return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}

    def csv_rows(self) -> list[dict]:
        from supersmm_tasks import training_log

        return training_log.read_rows()
