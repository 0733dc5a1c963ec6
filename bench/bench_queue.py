"""The queue's figures: how fast a run heals after its worker is SIGKILLed, and what chunking costs.

- takeover_seconds_p95 / _p50: from SIGKILL of the training worker to the first training step of the
  other worker that took the run over (production lease TTL and reconciler interval), over 5 kills
  (3 with --quick).
- work_lost_epochs: the most training redone after one kill, in epochs (the killed epoch's finished
  batches; everything up to the last finished epoch is kept).
- fit_overhead: samples/s of a run trained chunk by chunk through a real worker and broker, over
  samples/s of the same model on the same data in one plain Keras `model.fit`, same epochs, side by side.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(quick: bool) -> list[dict]:
    kills = 3 if quick else 5
    fit_epochs = 4 if quick else 10
    with bench_home() as home:
        takeovers, lost = measure_takeovers(home, kills)
        chunked, plain = measure_fit_overhead(home, fit_epochs)
    ratio = chunked / plain
    return [
        {"name": "takeover_seconds_p95", "value": round(percentile(takeovers, 95), 1), "unit": "s",
         "goal": "<= 30", "ok": percentile(takeovers, 95) <= 30},
        {"name": "takeover_seconds_p50", "value": round(percentile(takeovers, 50), 1), "unit": "s",
         "goal": "<= 30", "ok": percentile(takeovers, 50) <= 30},
        {"name": "work_lost_epochs", "value": round(max(lost), 2), "unit": "epochs", "goal": "<= 1",
         "ok": max(lost) <= 1},
        {"name": "fit_overhead", "value": round(ratio, 3), "unit": "ratio", "goal": ">= 0.97", "ok": ratio >= 0.97},
    ]


def percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * percent / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- the setting: a home, a Redis, a corpus, workers ----------------------------------------------

@contextmanager
def bench_home():
    """A temporary SUPERSMM_HOME with a tiny engraved corpus, on its own redis-server; workers started in it are killed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="supersmm_bench_queue_"))
    port = free_port()
    redis_server = subprocess.Popen(
        [shutil.which("redis-server") or redis_binary(), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(folder), "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = dict(os.environ)
    os.environ.update(SUPERSMM_HOME=str(folder / "home"), SUPERSMM_BROKER_URL=f"redis://127.0.0.1:{port}/0",
                      SUPERSMM_DATA_ROOT=str(folder / "data"))
    home = BenchHome(folder)
    try:
        home.prepare_corpus()
        yield home
    finally:
        for worker in home.workers:
            kill(worker)
        redis_server.terminate()
        redis_server.wait()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(folder, ignore_errors=True)


class BenchHome:
    def __init__(self, folder: Path):
        self.folder = folder
        self.workers: list[subprocess.Popen] = []

    def prepare_corpus(self) -> None:
        from supersmm_tasks.detect import detect
        from supersmm_tasks.synth import generate_corpus

        generate_corpus(self.folder / "data" / "primus", 20, seed=0, progress=False)
        detect()

    def start_worker(self, name: str) -> subprocess.Popen:
        log = open(self.folder / f"worker_{name}.log", "ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "supersmm_tasks", "worker", "-n", f"{name}@%h",
             "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        worker.hostname = f"{name}@{socket.gethostname()}"
        self.workers.append(worker)
        return worker

    def enqueue(self, name: str, epochs: int, chunk: int) -> None:
        from supersmm_tasks import runs

        runs.enqueue(name, dataset="primus", model="tiny", batch_size=4, max_total_epochs=epochs,
                     max_epochs_per_run=chunk)

    def progress(self, name: str) -> dict:
        from supersmm_tasks import broker, tasks

        return json.loads(broker.client().get(tasks.progress_key(name)) or "{}")


def kill(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(poll_s)
    raise TimeoutError(f"bench_queue: timed out after {timeout_s} s waiting for {what}")


# --- takeover after SIGKILL ----------------------------------------------------------------------

def measure_takeovers(home: BenchHome, kills: int) -> tuple[list[float], list[float]]:
    """Two workers share a long run; the one training it is killed `kills` times (and replaced)."""
    from supersmm_tasks import run_state

    home.enqueue("takeover", epochs=10_000, chunk=5_000)
    live = {w.hostname: w for w in (home.start_worker("a0"), home.start_worker("b0"))}
    moments = random.Random(0)
    takeovers, lost = [], []
    for number in range(1, kills + 1):
        wait_for(lambda: mid_epoch(home.progress("takeover"), live), 300, "a trainer mid-epoch")
        time.sleep(moments.uniform(0, 1))
        at_kill = wait_for(lambda: mid_epoch(home.progress("takeover"), live), 300, "a trainer mid-epoch")
        victim = live.pop(at_kill["worker"])
        killed_at = time.monotonic()
        kill(victim)
        replacement = home.start_worker(f"replacement{number}")
        live[replacement.hostname] = replacement
        resumed = wait_for(lambda: trained_by_other(home.progress("takeover"), victim.hostname), 300,
                           "another worker to train the run")
        takeovers.append(time.monotonic() - killed_at)
        lost.append(work_lost(at_kill, resumed))
    from supersmm_tasks import runs

    runs.cancel("takeover")
    wait_for(lambda: run_state.read_state("takeover")["status"] == "cancelled", 300, "the run to stop")
    return takeovers, lost


def mid_epoch(progress: dict, workers: dict) -> dict | None:
    training = progress.get("worker") in workers and progress.get("batch", 0) >= 1 and "val_ser" not in progress
    return progress if training else None


def trained_by_other(progress: dict, victim: str) -> dict | None:
    return progress if progress.get("worker") not in (None, victim) and progress.get("batch", 0) >= 1 else None


def work_lost(at_kill: dict, resumed: dict) -> float:
    """Epochs of training the kill threw away: where the victim was minus where the successor started."""
    victim_position = at_kill["epoch"] - 1 + at_kill["batch"] / at_kill["batches"]
    return victim_position - (resumed["epoch"] - 1)


# --- chunked training against plain model.fit ----------------------------------------------------

def measure_fit_overhead(home: BenchHome, epochs: int) -> tuple[float, float]:
    """(samples/s chunk by chunk through a worker, samples/s of one model.fit) over the same epochs."""
    chunked = chunked_samples_per_second(home, epochs)
    plain = model_fit_samples_per_second(epochs)
    return chunked, plain


def chunked_samples_per_second(home: BenchHome, epochs: int) -> float:
    from supersmm_tasks import run_state

    for worker in home.workers:
        kill(worker)
    worker = home.start_worker("throughput")
    wait_for(lambda: "ready." in (home.folder / "worker_throughput.log").read_text(errors="replace"), 120,
             "the worker to start", poll_s=0.2)
    time.sleep(10)  # let its warm-up import TensorFlow, as a long-running worker has
    started = time.monotonic()
    home.enqueue("throughput", epochs=epochs, chunk=max(1, epochs // 2))
    wait_for(lambda: run_state.read_state("throughput")["status"] == "completed", 1800, "the chunked run",
             poll_s=0.1)
    elapsed = time.monotonic() - started
    kill(worker)
    return epochs * train_samples() / elapsed


def model_fit_samples_per_second(epochs: int) -> float:
    """The same tiny CRNN, data and CTC loss, trained by keras Model.fit with validation every epoch."""
    import keras
    import tensorflow as tf

    from supersmm_tasks import pipeline
    from supersmm_tasks.corpus import load_dataset
    from supersmm_tasks.model import PRESETS, build_model, ctc_loss, logit_lengths
    from supersmm_tasks.vocabulary import load_vocabulary

    preset = PRESETS["tiny"]
    blank = len(load_vocabulary("semantic"))
    dataset = load_dataset("primus")

    def batches(split: str, training: bool) -> tf.data.Dataset:
        examples = dataset.examples(split, "semantic")
        return pipeline.epoch_batches(examples, encoding="semantic", height=preset.height, batch_size=4, seed=0,
                                      epoch=0, training=training)

    class CTCModel(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            lengths = logit_lengths(x["image_width"], preset)
            return tf.reduce_mean(ctc_loss(y_pred, x["label"], x["label_length"], lengths, blank))

        def call(self, inputs, training=False):
            return self.crnn(inputs["image"], training=training)

    keras.utils.set_random_seed(0)
    model = CTCModel()
    model.crnn = build_model(preset, blank, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(preset.learning_rate))
    train, val = batches("train", True), batches("val", False)
    started = time.monotonic()
    model.fit(train, validation_data=val, epochs=epochs, shuffle=False, verbose=0)
    return epochs * train_samples() / (time.monotonic() - started)


def train_samples() -> int:
    from supersmm_tasks.corpus import load_dataset

    return len(load_dataset("primus").examples("train", "semantic"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_binary() -> str:
    from supersmm_tasks.broker import redis_server_binary

    return redis_server_binary()


if __name__ == "__main__":
    for figure in run(quick="--quick" in sys.argv):
        print(json.dumps(figure))
