"""Training: checkpoint speed, worker memory over many chunks, whether `tiny` learns, and compute efficiency.

    checkpoint_save_seconds  one full checkpoint of the paper model (weights, Adam state, seeds), written durably
    worker_rss_growth        RSS of one process after its last chunk / after its 2nd chunk (1 epoch per chunk)
    tiny_val_ser             best val SER / first epoch's val SER of `tiny` on 300 clean synthetic incipits in 20 epochs,
                             agnostic encoding
    tiny_val_ser_10min       best val SER of `tiny` (our recipe: the preset's defaults, so cosine schedule, batch 4, no
                             augmentation, a first epoch from short staves to long) after 10 minutes of training on
                             2,000 clean synthetic incipits, agnostic labels; `tiny_val_ser_semantic_10min` the same
                             with semantic labels (read through agnostic symbols, as `tiny` does by default), scored
                             on the semantic labels
    reference_val_ser_10min  the reference trainer's recipe (constant Adam 1e-3, batch 16, no augmentation, every epoch
                             shuffled) on the same data and time, agnostic; ours must be at most half of it
    *_without_ties           the same best weights' val SER with tie tokens left out of reading and label: PrIMuS
                             labels only some of the ties it draws, by how its source text was written
    recipe_time_to_reference_10min  minutes our recipe takes to reach the reference's best val SER / the minutes
                             the reference took
    finetune_real_ser        the 10-minute agnostic model fine-tuned on the real PrIMuS development set (its train
                             split), read on that set's real validation staves, against the same model before
    flops_fraction           FLOP/s of the paper model's training step / this machine's float32 matmul FLOP/s
    onednn_epoch_speedup     mean epoch time of `tiny` (after its first, which traces the model) with TensorFlow's
                             oneDNN kernels off / on (on is this project's default: supersmm_tasks/__init__.py)
    curriculum_val_ser_ratio best val SER of `tiny` after 5 epochs on 1,200 clean incipits (a short run, as the demo's)
                             with its first epoch from short staves to long (the default) / with every epoch shuffled,
                             side by side
--quick trains 2 minutes on 400 incipits instead of 10 on 2,000, fine-tunes 1 minute instead of 3, and compares the
curriculum in 3 epochs on 300 incipits.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]

# Runs in a fresh process with SUPERSMM_HOME set: makes a corpus, trains run `bench` chunk by chunk and
# prints one JSON line with the RSS after each chunk and the val SER of each epoch.
TRAINING_SCRIPT = """
import json, sys, time
from pathlib import Path
import psutil
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.detect import detect
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.synth import generate_corpus
from supersmm_tasks.training import train_chunk
from supersmm_tasks.training_log import read_rows

samples, epochs, epochs_per_chunk = map(int, sys.argv[1:4])
encoding, settings = sys.argv[4], json.loads(sys.argv[5])
generate_corpus(Path("data/primus"), samples, seed=0, progress=False)
detect()
create_or_update_run("bench", "primus", model="tiny", encoding=encoding, max_total_epochs=epochs, **settings)
rss_mb = []
started = time.monotonic()
for last in range(epochs_per_chunk, epochs + 1, epochs_per_chunk):
    train_chunk("bench", ChunkSpan(last - epochs_per_chunk + 1, last, last // epochs_per_chunk))
    rss_mb.append(psutil.Process().memory_info().rss / 2**20)
rows = read_rows("bench")
print(json.dumps({"rss_mb": rss_mb, "val_ser": [float(r["val_ser"]) for r in rows],
                  "epoch_seconds": [float(r["epoch_time_sec"]) for r in rows], "seconds": time.monotonic() - started}))
"""


# Runs in a fresh process with SUPERSMM_HOME set: trains run NAME of `tiny` on DATASET for MINUTES of
# training (train + validation, as the CSV's cumulative_time_sec counts them), one epoch per chunk; prints one JSON
# line with the val SER of each epoch and the minutes. The time is the run's own budget (`--max-minutes`, the
# epoch budget left at its default): after every epoch the worker fits the epochs to the minutes left, so the
# schedule ends with the time and the run completes at the last epoch that fits, as any user's run would.
# Reference settings: learning rate 1e-3 (not a run option, so written into the run's config).
TIMED_SCRIPT = """
import json, sys, time
from supersmm_tasks import paths, run_state
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.training import train_chunk
from supersmm_tasks.training_log import read_rows

name, dataset, encoding, minutes, recipe = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
settings = json.loads(sys.argv[6])
create_or_update_run(name, dataset, model="tiny", encoding=encoding, max_minutes=minutes, **settings)
if recipe == "reference":
    path = paths.config_path(name)
    path.write_text(json.dumps({**json.loads(path.read_text()), "learning_rate": 1e-3}))
epoch, started = 0, time.monotonic()
while run_state.read_state(name)["status"] != "completed":
    epoch += 1
    train_chunk(name, ChunkSpan(epoch, epoch, epoch))  # one epoch per chunk
rows = read_rows(name)
result = {"val_ser": [float(r["val_ser"]) for r in rows], "minutes": float(rows[-1]["cumulative_time_sec"]) / 60,
          "epoch_minutes": [float(r["cumulative_time_sec"]) / 60 for r in rows],
          "wall_minutes": (time.monotonic() - started) / 60}
if encoding == "agnostic":  # the best weights read the validation staves again, once with ties and once without
    from supersmm_tasks.corpus import load_dataset
    from supersmm_tasks.evaluate import error_rates, predict
    val = load_dataset(dataset).examples("val", "agnostic")
    readings = predict(name, [example.image_path for example in val])
    untied = lambda tokens: [token for token in tokens if not token.startswith("slur.")]
    result["read_ser"] = error_rates(readings, [example.tokens for example in val])[0]
    result["read_ser_without_ties"] = error_rates([untied(r) for r in readings], [untied(e.tokens) for e in val])[0]
print(json.dumps(result))
"""
REFERENCE_SETTINGS = {"batch_size": 16, "schedule": "constant", "augment": False, "curriculum": False}


def run(quick: bool) -> list[dict]:
    from supersmm_tasks.trainer import Trainer

    paper = Trainer(_paper_config())
    figures = [checkpoint_save_seconds(paper), flops_fraction(paper, quick)]
    chunks = 6 if quick else 10
    memory = train_in_subprocess(samples=40, epochs=chunks, epochs_per_chunk=1)
    growth = memory["rss_mb"][-1] / memory["rss_mb"][1]
    figures.append({"name": "worker_rss_growth", "value": round(growth, 3), "unit": f"RSS chunk {chunks} / chunk 2",
                    "goal": "<= 1.05", "ok": growth <= 1.05})
    figures.append(tiny_learning("tiny_val_ser", "agnostic"))
    figures.append(onednn_epoch_speedup(quick))
    figures.append(curriculum_val_ser_ratio(quick))
    return figures + ten_minutes_of_training(*((400, 2, 1) if quick else (2000, 10, 3)))


def ten_minutes_of_training(samples: int, minutes: float, finetune_minutes: float) -> list[dict]:
    """Our recipe and the reference's on the same synthetic incipits and time, then fine-tuning on real staves."""
    with tempfile.TemporaryDirectory(prefix="supersmm-bench-recipe-") as home:
        env = _home_env(home)
        subprocess.run([sys.executable, "-c", CORPUS_SCRIPT, str(samples)], cwd=home, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        timed = lambda *args: _timed_training(home, env, *args)  # noqa: E731 - the same home for every run
        ours = timed("ours", "synthetic", "agnostic", minutes, "ours", {})
        semantic = timed("ours_semantic", "synthetic", "semantic", minutes, "ours", {})
        reference = timed("reference", "synthetic", "agnostic", minutes, "reference", REFERENCE_SETTINGS)
        figures = [
            _best_figure("tiny_val_ser_10min", ours, samples, "agnostic, our recipe", "<= 3", 3.0),
            _best_figure("tiny_val_ser_semantic_10min", semantic, samples, "semantic, our recipe", "<= 5", 5.0),
            _best_figure("reference_val_ser_10min", reference, samples,
                         "agnostic, constant Adam 1e-3, batch 16, no augmentation", "report", None),
        ]
        ratio = min(ours["val_ser"]) / max(min(reference["val_ser"]), 1e-9)
        figures.append({"name": "recipe_vs_reference_10min", "value": round(ratio, 3),
                        "unit": "our best val SER / the reference's, same data and time", "goal": "<= 0.5",
                        "ok": ratio <= 0.5})
        figures += [_without_ties_figure("tiny_val_ser_10min_without_ties", ours),
                    _without_ties_figure("reference_val_ser_10min_without_ties", reference),
                    _time_to_reference_figure(ours, reference)]
        figures.append(_finetune_on_real(home, env, finetune_minutes))
    return figures


CORPUS_SCRIPT = """
import sys
from pathlib import Path
from supersmm_tasks.detect import detect
from supersmm_tasks.synth import generate_corpus
generate_corpus(Path("data/synthetic"), int(sys.argv[1]), seed=0, progress=False)  # the real set is `primus`
detect()
"""


def _home_env(home: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "SUPERSMM_DATA_ROOT"}
    env["SUPERSMM_HOME"] = home
    return env


def _timed_training(home: str, env: dict, name: str, dataset: str, encoding: str, minutes: float, recipe: str,
                    settings: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", TIMED_SCRIPT, name, dataset, encoding, str(minutes), recipe,
                           json.dumps(settings)], cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _best_figure(name: str, learning: dict, samples: int, what: str, goal: str, limit: float | None) -> dict:
    ser = learning["val_ser"]
    best = min(ser)
    return {"name": name, "value": round(best, 2),
            "unit": f"% best val SER ({what}; {samples} clean incipits, {len(ser)} epochs in "
                    f"{learning['minutes']:.1f} min of training, best at epoch {ser.index(best) + 1})",
            "goal": goal, "ok": True if limit is None else best <= limit,
            "minutes": round(learning["wall_minutes"], 1)}


def _without_ties_figure(name: str, learning: dict) -> dict:
    """PrIMuS draws every tie of its source but labels some only (synth/pae.py): how the best weights read the
    validation staves with the tie tokens (`slur.start`, `slur.end`) left out of both reading and label."""
    return {"name": name, "value": round(learning["read_ser_without_ties"], 2),
            "unit": f"% val SER without tie tokens (the best weights' reading, {learning['read_ser']:.2f}% with them)",
            "goal": "report", "ok": True}


def _time_to_reference_figure(ours: dict, reference: dict) -> dict:
    """The minutes our recipe takes to read as well as the reference's best / the minutes the reference took."""
    target = min(reference["val_ser"])
    reference_minutes = reference["epoch_minutes"][reference["val_ser"].index(target)]
    ours_minutes = next((minutes for ser, minutes in zip(ours["val_ser"], ours["epoch_minutes"]) if ser <= target), None)
    if ours_minutes is None:
        return {"name": "recipe_time_to_reference_10min", "value": None, "goal": "report", "ok": True,
                "unit": f"our recipe never read as well as the reference's best ({target:.2f}%)"}
    return {"name": "recipe_time_to_reference_10min", "value": round(ours_minutes / reference_minutes, 3),
            "goal": "report", "ok": True,
            "unit": f"minutes our recipe takes to reach the reference's best val SER ({target:.2f}%): "
                    f"{ours_minutes:.1f} / the reference's {reference_minutes:.1f}"}


# With a data root given: detects the real development set in place (its folder is the data root; detect writes
# nothing inside it). Then prints the val SER of run RUN's best weights on the validation staves of DATASET.
READ_REAL_SCRIPT = """
import json, sys
from pathlib import Path
from supersmm_tasks.detect import detect
from supersmm_tasks.evaluate import evaluate_run
run, dataset = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    (report,) = detect(Path(sys.argv[3]))
    dataset = report.name
result = evaluate_run(run, split="val", dataset=dataset)
print(json.dumps({"dataset": dataset, "ser": result["ser"], "samples": result["samples"]}))
"""


def _finetune_on_real(home: str, env: dict, minutes: float) -> dict:
    real = os.environ.get("SUPERSMM_REAL_DEV")
    if not real:
        return {"name": "finetune_real_ser", "value": None, "unit": "% real val SER", "goal": "below the pretrained",
                "ok": False, "error": "SUPERSMM_REAL_DEV is unset: point it at shared/primus-real-dev"}
    before = _read_real(home, env, "ours", "", real)
    tuned = _timed_training(home, env, "finetuned", before["dataset"], "agnostic", minutes, "ours",
                            {"init_from": "ours"})
    after = _read_real(home, env, "finetuned", before["dataset"])
    return {"name": "finetune_real_ser", "value": round(after["ser"], 2),
            "unit": f"% real val SER after fine-tuning {tuned['minutes']:.1f} min on the real dev set's train split "
                    f"({len(tuned['val_ser'])} epochs; {after['samples']} real validation staves; the model "
                    f"pretrained on synthetic only: {before['ser']:.1f}%)",
            "goal": "< the pretrained model's", "ok": after["ser"] < before["ser"],
            "minutes": round(tuned["wall_minutes"], 1)}


def _read_real(home: str, env: dict, run: str, dataset: str, data_root: str | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", READ_REAL_SCRIPT, run, dataset, *([data_root] if data_root else [])],
                          cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"reading the real staves failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tiny_learning(name: str, encoding: str, samples: int = 300, epochs: int = 20) -> dict:
    """How far `tiny` gets in `epochs` epochs on `samples` clean incipits: best / first val SER (< 0.5)."""
    learning = train_in_subprocess(samples=samples, epochs=epochs, epochs_per_chunk=epochs, encoding=encoding)
    ser, minutes = learning["val_ser"], learning["seconds"] / 60
    unit = (f"{encoding}, {samples} incipits, {epochs} epochs in {minutes:.1f} min: first val SER {ser[0]:.1f}%, "
            f"best {min(ser):.1f}% at epoch {ser.index(min(ser)) + 1}")
    ratio = min(ser) / ser[0]
    return {"name": name, "value": round(ratio, 3), "unit": f"best / first val SER ({unit})", "goal": "< 0.5",
            "ok": ratio < 0.5}


def onednn_epoch_speedup(quick: bool) -> dict:
    """TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI or newer; this project turns
    them on everywhere. The same run trained side by side with them off and on."""
    samples, epochs = (200, 2) if quick else (600, 4)
    off, on = (train_in_subprocess(samples, epochs, epochs, "agnostic", onednn=flag) for flag in ("0", "1"))
    pace = {flag: float(np.mean(run["epoch_seconds"][1:])) for flag, run in (("off", off), ("on", on))}
    ratio = pace["off"] / pace["on"]
    return {"name": "onednn_epoch_speedup", "value": round(ratio, 3),
            "unit": f"s per epoch of tiny, oneDNN off / on ({pace['off']:.1f} / {pace['on']:.1f}; {samples} incipits, "
                    f"epochs 2-{epochs}; best val SER {min(off['val_ser']):.1f}% / {min(on['val_ser']):.1f}%)",
            "goal": ">= 1.0", "ok": ratio >= 1.0}


def curriculum_val_ser_ratio(quick: bool) -> dict:
    """A short run, as the demo's, with its first epoch from short staves to long against all epochs shuffled."""
    samples, epochs = (300, 3) if quick else (1200, 5)
    shuffled, curriculum = (train_in_subprocess(samples, epochs, epochs, "agnostic", settings={"curriculum": flag})
                            for flag in (False, True))
    best = {"shuffled": min(shuffled["val_ser"]), "curriculum": min(curriculum["val_ser"])}
    ratio = best["curriculum"] / best["shuffled"]
    first = f"{curriculum['val_ser'][0]:.1f}% / {shuffled['val_ser'][0]:.1f}%"
    return {"name": "curriculum_val_ser_ratio", "value": round(ratio, 3),
            "unit": f"best val SER of tiny, first epoch short to long / shuffled ({best['curriculum']:.1f}% / "
                    f"{best['shuffled']:.1f}%; {samples} incipits, {epochs} epochs; after the first: {first})",
            "goal": "< 1.0", "ok": ratio < 1.0}


def train_in_subprocess(samples: int, epochs: int, epochs_per_chunk: int, encoding: str = "semantic",
                        onednn: str | None = None, settings: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="supersmm-bench-training-") as home:
        env = {**_home_env(home), **({"TF_ENABLE_ONEDNN_OPTS": onednn} if onednn else {})}
        done = subprocess.run(
            [sys.executable, "-c", TRAINING_SCRIPT, str(samples), str(epochs), str(epochs_per_chunk), encoding,
             json.dumps(settings or {})],
            cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    if done.returncode != 0:
        raise RuntimeError(f"training subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def checkpoint_save_seconds(trainer) -> dict:
    from supersmm_tasks.checkpoint import save_checkpoint

    timings = []
    with tempfile.TemporaryDirectory(prefix="supersmm-bench-checkpoint-") as folder:
        for epoch in (1, 2, 3):
            started = time.perf_counter()
            save_checkpoint(Path(folder), epoch, *trainer.state_arrays(), meta={"epoch": epoch})
            timings.append(time.perf_counter() - started)
        size_mb = (Path(folder) / "epoch_000003.npz").stat().st_size / 2**20
    seconds = float(np.median(timings))
    return {"name": "checkpoint_save_seconds", "value": round(seconds, 3), "unit": f"s (paper model, {size_mb:.0f} MB)",
            "goal": "< 2", "ok": seconds < 2}


def flops_fraction(trainer, quick: bool) -> dict:
    import tensorflow as tf

    peak = matmul_flops_per_second(tf)
    batch = trainer.config.batch_size  # the paper's 16: at 4 the per-step cost of the LSTMs' weight gradients dominates
    width = 512 if quick else 1024
    image = tf.random.uniform([batch, trainer.preset.height, width, 1], seed=1)
    image_width = tf.fill([batch], width)
    label = tf.tile(tf.range(20, dtype=tf.int32)[tf.newaxis], [batch, 1])
    label_length = tf.fill([batch], 20)
    trainer.train_step(image, image_width, label, label_length)  # trace
    steps = 2 if quick else 4
    started = time.perf_counter()
    for _ in range(steps):
        float(trainer.train_step(image, image_width, label, label_length))
    seconds = (time.perf_counter() - started) / steps
    achieved = batch * training_flops_per_sample(trainer.preset, trainer.blank + 1, width) / seconds
    fraction = achieved / peak
    return {"name": "flops_fraction", "value": round(fraction, 3),
            "unit": f"paper training {achieved / 1e9:.1f} GFLOP/s / matmul peak {peak / 1e9:.1f} GFLOP/s",
            "goal": ">= 0.35", "ok": fraction >= 0.35}


def matmul_flops_per_second(tf, size: int = 2048, repeats: int = 5) -> float:
    a = tf.random.uniform([size, size], seed=2)
    b = tf.random.uniform([size, size], seed=3)
    tf.matmul(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        tf.matmul(a, b).numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def training_flops_per_sample(preset, classes: int, width: int) -> float:
    """Multiply-adds x 2 of one forward pass (convolutions, LSTMs, dense), x 3 for forward + backward."""
    flops, height, channels = 0.0, preset.height, 1
    for filters, (pool_h, pool_w) in zip(preset.conv_filters, preset.pool_sizes):
        flops += 2 * height * width * 9 * channels * filters
        channels, height, width = filters, height // pool_h, width // pool_w
    features, frames = height * channels, width
    for _ in range(preset.lstm_layers):
        flops += 2 * 2 * frames * 4 * preset.lstm_units * (features + preset.lstm_units)  # two directions
        features = 2 * preset.lstm_units
    flops += 2 * frames * features * classes
    return 3 * flops


def _paper_config():
    """A RunConfig of the paper model on the semantic vocabulary (nothing is written to disk)."""
    from supersmm_tasks.run_config import RunConfig

    return RunConfig(
        run="bench", dataset="none", dataset_path="", dataset_config="", split_files={}, split_seed=None,
        camera=False, encoding="semantic", model="paper", height=128, batch_size=16, learning_rate=1e-3, seed=0,
        deterministic=True, train_samples=0, max_total_epochs=1, max_epochs_per_run=1, patience=0, queue=None,
        priority=None, created_at="",
    )
