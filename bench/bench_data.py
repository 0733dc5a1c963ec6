"""Data benchmarks: how fast `supersmm detect` validates samples, and how much our input pipeline speeds up training.

- `detect_rate`: sample folders validated per second by `detect()` (labels read, every image decoded in full),
  on copies of engraved synthetic samples.
- `pipeline_speedup`: time of one training epoch the way the reference trainer (tf-end-to-end) ran it - each
  image read and resized with OpenCV inside the loop, batches of 16 in random order padded with 0 to their widest
  image, the padded width as every sample's sequence length for CTC, nothing prefetched, the CRNN built from
  Keras' stock BatchNormalization and LSTM - divided by the time of the same epoch fed by `EpochBatches` to our
  CRNN (fused batch norm, LSTM input projected once per sequence). Both run side by side (interleaved) in this
  process on the same engraved samples, model geometry and batch size. On a CPU the step's cost grows with the
  padded width, so bucketing by width gains the most; the faster layers, caching and prefetch add to it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf

from supersmm_tasks.corpus import load_dataset
from supersmm_tasks.detect import detect
from supersmm_tasks.model import PRESETS, build_model, ctc_loss
from supersmm_tasks.pipeline import EpochBatches
from supersmm_tasks.synth import generate_corpus
from supersmm_tasks.vocabulary import blank_index, encode, load_vocabulary

DETECT_RATE_GOAL = 250  # every image decoded in full (1-3 ms of CPU each): all of PrIMuS in 6 minutes on 2 cores
SPEEDUP_GOAL = 2.0
ENCODING = "semantic"
# The `tiny` CRNN, not the reference's `paper` one: on two CPU cores one paper step on 16 images takes 8-16 s,
# which would make this comparison last half an hour; both sides share the model, so it compares the feeding.
PRESET = PRESETS["tiny"]
BATCH_SIZE = 16  # the reference trainer's
HEIGHT = PRESET.height
MEASURED_EPOCHS = 2


def run(quick: bool) -> list[dict]:
    engraved_count, folder_count, warm_up_epochs = (96, 1000, 2) if quick else (128, 2000, 5)
    with tempfile.TemporaryDirectory(prefix="supersmm-bench-data-") as scratch:
        scratch = Path(scratch)
        previous_home = os.environ.get("SUPERSMM_HOME")
        os.environ["SUPERSMM_HOME"] = str(scratch / "home")
        try:
            engraved = scratch / "corpora" / "engraved"
            generate_corpus(engraved, engraved_count, seed=11, progress=False)
            rate = detect_rate(engraved, scratch / "copies", folder_count)
            epoch_seconds = pipeline_speedup(engraved, warm_up_epochs)
        finally:
            if previous_home is None:
                os.environ.pop("SUPERSMM_HOME")
            else:
                os.environ["SUPERSMM_HOME"] = previous_home
    speedup = epoch_seconds["naive"] / epoch_seconds["ours"]
    return [
        {"name": "detect_rate", "value": round(rate), "unit": "samples/s", "goal": f">= {DETECT_RATE_GOAL}",
         "ok": rate >= DETECT_RATE_GOAL, "samples": folder_count},
        {"name": "pipeline_speedup", "value": round(speedup, 2), "unit": "x", "goal": f">= {SPEEDUP_GOAL}",
         "ok": speedup >= SPEEDUP_GOAL, "samples": engraved_count,
         "speedup_with_stock_layers": round(epoch_seconds["naive"] / epoch_seconds["ours_stock_layers"], 2),
         **{f"epoch_seconds_{name}": round(seconds, 2) for name, seconds in epoch_seconds.items()}},
    ]


# ---------------------------------------------------------------- detect


def detect_rate(engraved: Path, copies: Path, folder_count: int) -> float:
    """Samples per second of a full `detect()` over `folder_count` copies of the engraved samples."""
    samples = sorted(engraved.iterdir())
    for number in range(folder_count):
        source = samples[number % len(samples)]
        copy_id = f"copy{number:06d}"
        (copies / "primus" / copy_id).mkdir(parents=True)
        for file in source.iterdir():
            shutil.copyfile(file, copies / "primus" / copy_id / file.name.replace(source.name, copy_id))
    started = time.perf_counter()
    [report] = detect(copies)
    seconds = time.perf_counter() - started
    assert report.samples == folder_count
    return folder_count / seconds


# ---------------------------------------------------------------- the input pipeline against a naive one


def pipeline_speedup(engraved: Path, warm_up_epochs: int) -> dict[str, float]:
    """Seconds of one epoch (the best of the measured epochs) fed and stepped three ways: `ours` (our pipeline
    and layers), `ours_stock_layers` (our pipeline, Keras' stock layers) and `naive` (the reference's way)."""
    detect(engraved.parent)  # the dataset `engraved`
    examples = [e for split in ("train", "val", "test") for e in load_dataset("engraved").examples(split, ENCODING)]
    our_step, stock_step = training_step(), training_step(stock_layers=True)
    our_batches = EpochBatches(examples, encoding=ENCODING, height=HEIGHT, batch_size=BATCH_SIZE, seed=0, training=True)

    def fed_by_us(step):
        def epoch_of(epoch: int):
            for batch in our_batches.epoch(epoch):  # as train_chunk feeds its epochs
                step(batch["image"], PRESET.frames(batch["image_width"]), batch["label"], batch["label_length"])
        return epoch_of

    def naive(epoch: int):
        for image, logit_length, label, label_length in naive_batches(examples, seed=epoch):
            stock_step(image, logit_length // PRESET.width_reduction, label, label_length)  # whole frames only

    # Warm-up epochs trace the step, fill the image cache and the page cache, and let TensorFlow meet the batch
    # shapes of a long run: ours come from a small set (widths and label lengths rounded up), while the naive
    # batches are as wide as their widest image, so they keep bringing new shapes, as in the reference trainer.
    ways = {"ours": fed_by_us(our_step), "ours_stock_layers": fed_by_us(stock_step), "naive": naive}
    times = {name: [] for name in ways}
    for epoch in range(warm_up_epochs + MEASURED_EPOCHS):  # interleaved: all see the same load on a shared machine
        for name, way in ways.items():
            times[name].append(timed(way, epoch))
    return {name: min(seconds[warm_up_epochs:]) for name, seconds in times.items()}


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def training_step(stock_layers: bool = False):
    """One Adam step of the `tiny` CRNN on a batch, with each sample's own number of output frames; with
    `stock_layers` the model is built from Keras' own BatchNormalization and LSTM, as the reference's was."""
    layers = dict(batch_norm=keras.layers.BatchNormalization, lstm=keras.layers.LSTM) if stock_layers else {}
    model = build_model(PRESET, len(load_vocabulary(ENCODING)), seed=0, **layers)
    optimizer = keras.optimizers.Adam(PRESET.learning_rate)
    signature = [tf.TensorSpec([None, HEIGHT, None, 1], tf.float32), tf.TensorSpec([None], tf.int32),
                 tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)]

    @tf.function(input_signature=signature)
    def step(image, logit_length, label, label_length):
        with tf.GradientTape() as tape:
            logits = model(image, training=True)
            loss = tf.reduce_mean(ctc_loss(logits, label, label_length, logit_length, blank_index(ENCODING)))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


def naive_batches(examples, seed: int):
    """Batches the way the reference trainer (tf-end-to-end `primus.py`) made them: each image read with
    OpenCV, resized to the model's height and normalised inside the loop, the batch padded with 0 to its
    widest image, one sequence length (that width) for every sample of the batch."""
    order = np.random.default_rng(seed).permutation(len(examples))
    for start in range(0, len(order), BATCH_SIZE):
        chosen = [examples[i] for i in order[start:start + BATCH_SIZE]]
        images = []
        for example in chosen:
            image = cv2.imread(example.image_path, cv2.IMREAD_GRAYSCALE)
            image = cv2.resize(image, (int(HEIGHT * image.shape[1] / image.shape[0]), HEIGHT))
            images.append((255.0 - image) / 255.0)
        widest = max(image.shape[1] for image in images)
        batch = np.zeros((len(chosen), HEIGHT, widest, 1), np.float32)
        for row, image in enumerate(images):
            batch[row, :, :image.shape[1], 0] = image
        longest = max(len(e.tokens) for e in chosen)
        labels = np.full((len(chosen), longest), -1, np.int32)
        for row, example in enumerate(chosen):
            labels[row, :len(example.tokens)] = encode(example.tokens, ENCODING)
        yield (tf.constant(batch), tf.fill([len(chosen)], widest), tf.constant(labels),
               tf.constant([len(e.tokens) for e in chosen], tf.int32))
