"""The queue's figures: how fast a run heals after its worker is SIGKILLed, and what chunking costs.

- takeover_seconds_p95 / _p50: from SIGKILL of the training worker to the first training step of the
  other worker that took the run over (production lease TTL and reconciler interval), over 5 kills
  (3 with --quick).
- work_lost_epochs: the most training redone after one kill, in epochs (the killed epoch's finished
  batches; everything up to the last finished epoch is kept).
- fit_overhead: samples/s of a run trained chunk by chunk (two chunks) through a real worker and broker,
  over samples/s of the same model, batches and epochs in one plain Keras `model.fit` script that validates
  and saves a ModelCheckpoint every epoch; alternated, best of each. Epochs are a few hundred incipits, so
  the fixed work of an epoch weighs against its training as it does in a real run (PrIMuS: 70k per epoch).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from supersmm_tasks.testing import RedisServer, Workers, redis_folder, wait_for

REPO = Path(__file__).resolve().parents[1]
FIT_DATASET = "fit"  # a corpus of a few hundred incipits, so an epoch outweighs its fixed per-epoch work
FIT_MODEL = "tiny"


def run(quick: bool) -> list[dict]:
    kills = 3 if quick else 5
    with bench_home() as home:
        takeovers, lost = measure_takeovers(home, kills)
        chunked, plain = measure_fit_overhead(home, quick)
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
def bench_home(home_class: type | None = None, redis_options: tuple[str, ...] = (),
               prefix: str = "supersmm_bench_queue_"):
    """A temporary SUPERSMM_HOME with a tiny engraved corpus, on its own redis-server; workers started in it are
    killed at the end. `home_class` (BenchHome or a subclass) makes the home from the folder and the server."""
    with redis_folder(prefix, *redis_options) as (folder, redis_server):
        os.environ.update(SUPERSMM_HOME=str(folder / "home"), SUPERSMM_BROKER_URL=redis_server.url,
                          SUPERSMM_DATA_ROOT=str(folder / "data"))
        home = (home_class or BenchHome)(folder, redis_server)
        try:
            home.prepare_corpus()
            yield home
        finally:
            home.workers.kill_all()


class BenchHome:
    def __init__(self, folder: Path, redis_server: RedisServer):
        self.folder = folder
        self.redis = redis_server
        self.workers = Workers(folder, dict(os.environ))

    def prepare_corpus(self) -> None:
        from supersmm_tasks.detect import detect
        from supersmm_tasks.synth import generate_corpus

        generate_corpus(self.folder / "data" / "primus", 20, seed=0, progress=False)
        detect()

    def prepare_fit_corpus(self, samples: int) -> None:
        from supersmm_tasks.detect import detect
        from supersmm_tasks.synth import generate_corpus

        generate_corpus(self.folder / "data" / FIT_DATASET, samples, seed=1, progress=False)
        detect()

    def enqueue(self, name: str, epochs: int, chunk: int, dataset: str = "primus", model: str = "tiny",
                batch_size: int | None = 4) -> None:
        from supersmm_tasks import runs

        runs.enqueue(name, dataset=dataset, model=model, batch_size=batch_size, max_total_epochs=epochs,
                     max_epochs_per_run=chunk)

    def progress(self, name: str) -> dict:
        from supersmm_tasks import broker, run_keys

        return json.loads(broker.client().get(run_keys.progress_key(name)) or "{}")


# --- takeover after SIGKILL ----------------------------------------------------------------------

def measure_takeovers(home: BenchHome, kills: int) -> tuple[list[float], list[float]]:
    """Two workers share a long run; the one training it is killed `kills` times (and replaced)."""
    from supersmm_tasks import run_state

    home.enqueue("takeover", epochs=10_000, chunk=5_000)
    live = {w.hostname: w for w in (home.workers.start("a0", wait=False), home.workers.start("b0", wait=False))}
    moments = random.Random(0)
    takeovers, lost = [], []
    for number in range(1, kills + 1):
        wait_for(lambda: mid_epoch(home.progress("takeover"), live), 300, "a trainer mid-epoch")
        time.sleep(moments.uniform(0, 1))
        at_kill = wait_for(lambda: mid_epoch(home.progress("takeover"), live), 300, "a trainer mid-epoch")
        victim = live.pop(at_kill["worker"])
        killed_at = time.monotonic()
        victim.kill()
        replacement = home.workers.start(f"replacement{number}", wait=False)
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

def measure_fit_overhead(home: BenchHome, quick: bool) -> tuple[float, float]:
    """(samples/s chunk by chunk through a worker, samples/s of one plain model.fit process), the best of
    alternating rounds.

    Both sides start in a fresh process that has already imported TensorFlow, and their clock runs from the
    moment training is asked for to the end of the last epoch: loading the dataset, building the model,
    tracing and every epoch's validation and checkpoint are in it. The run is the `tiny` model at its own
    batch size; the plain script validates and saves a ModelCheckpoint every epoch, as any long training does.
    """
    samples, epochs, rounds = (150, 4, 1) if quick else (300, 6, 2)
    home.prepare_fit_corpus(samples)
    home.workers.kill_all()
    chunked, plain = [], []
    for number in range(rounds):  # alternated: both see the same load on a shared machine
        plain.append(plain_fit_samples_per_second(home, epochs))
        chunked.append(chunked_samples_per_second(home, f"throughput{number}", epochs))
    return max(chunked), max(plain)


def chunked_samples_per_second(home: BenchHome, run: str, epochs: int) -> float:
    from supersmm_tasks import run_state
    from supersmm_tasks.training_log import read_rows

    worker = home.workers.start(run, wait=False).wait_ready(timeout_s=120)  # ready once TensorFlow is imported
    started = time.monotonic()
    home.enqueue(run, epochs=epochs, chunk=max(1, epochs // 2), dataset=FIT_DATASET, model=FIT_MODEL,
                 batch_size=None)  # the preset's, as the plain script uses
    wait_for(lambda: run_state.read_state(run)["status"] == "completed", 1800, "the chunked run", poll_s=0.1)
    elapsed = time.monotonic() - started
    worker.kill()
    return sum(int(row["dataset_size"]) for row in read_rows(run)) / elapsed


def plain_fit_samples_per_second(home: BenchHome, epochs: int) -> float:
    """The samples/s that `python bench/bench_queue.py --plain-fit` prints, run in a fresh process."""
    done = subprocess.run(
        [sys.executable, __file__, "--plain-fit", FIT_DATASET, str(epochs), str(home.folder / "plain_fit")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"bench_queue: the plain model.fit process failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.split()[-1])


def plain_fit(dataset_name: str, epochs: int, folder: Path) -> float:
    """A user's plain Keras script: the same CRNN, data, batches and CTC loss as the run, trained by one
    Model.fit with validation and a ModelCheckpoint every epoch. Returns training samples per second."""
    import keras
    import tensorflow as tf

    from supersmm_tasks import pipeline
    from supersmm_tasks.corpus import load_dataset
    from supersmm_tasks.model import PRESETS, build_model, ctc_loss, logit_lengths
    from supersmm_tasks.vocabulary import load_vocabulary

    preset = PRESETS[FIT_MODEL]
    # What a run of the preset trains by default: semantic labels (read through agnostic symbols where the preset
    # says so), its augmentation.
    encoding = "agnostic" if preset.semantic_via_agnostic else "semantic"
    started = time.monotonic()
    blank = len(load_vocabulary(encoding))
    dataset = load_dataset(dataset_name)
    train_examples = dataset.examples("train", encoding)

    def batches(examples, training: bool) -> tf.data.Dataset:
        return pipeline.epoch_batches(examples, encoding=encoding, height=preset.height,
                                      batch_size=preset.batch_size, seed=0, epoch=0, training=training,
                                      augment=training and preset.augment)

    class CTCModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.crnn = build_model(preset, blank, seed=0)

        def call(self, inputs, training=False):
            return self.crnn(inputs["image"], training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            lengths = logit_lengths(x["image_width"], preset)
            return tf.reduce_mean(ctc_loss(y_pred, x["label"], x["label_length"], lengths, blank))

    keras.utils.set_random_seed(0)
    model = CTCModel()
    model.compile(optimizer=keras.optimizers.Adam(preset.learning_rate))
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = keras.callbacks.ModelCheckpoint(str(folder / "epoch_{epoch:03d}.keras"))
    model.fit(batches(train_examples, True), validation_data=batches(dataset.examples("val", encoding), False),
              epochs=epochs, callbacks=[checkpoint], verbose=0)
    return epochs * len(train_examples) / (time.monotonic() - started)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--plain-fit"]:
        import tensorflow  # noqa: F401  (imported before the clock starts, as the worker has it)

        print(plain_fit(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
    else:
        for figure in run(quick="--quick" in sys.argv):
            print(json.dumps(figure))
