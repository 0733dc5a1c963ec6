"""Data benchmarks: how fast `supersmm detect` validates samples, and how much our input pipeline speeds up training.

- `detect_rate`: sample folders validated per second by `detect()`, on copies of engraved synthetic samples.
- `pipeline_speedup`: time of one training epoch of the CRNN fed the way the reference trainer (tf-end-to-end)
  fed it - each image read and resized with OpenCV inside the loop, batches of 16 in random order padded with 0
  to their widest image, the padded width as every sample's sequence length for CTC, nothing prefetched -
  divided by the time of the same epoch fed by `EpochBatches`. Both run side by side (interleaved) in this
  process on the same engraved samples, model and batch size. On a CPU the step's cost grows with the padded
  width, so most of the gain comes from bucketing by width; caching and prefetch remove the loading.
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

DETECT_RATE_GOAL = 1000
SPEEDUP_GOAL = 2.0
ENCODING = "semantic"
# The `tiny` CRNN, not the reference's `paper` one: on two CPU cores one paper step on 16 images takes 8-16 s,
# which would make this comparison last half an hour; both sides share the model, so it compares the feeding.
PRESET = PRESETS["tiny"]
BATCH_SIZE = 16  # the reference trainer's
HEIGHT, WIDTH_REDUCTION = PRESET.height, PRESET.width_reduction
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
            speedup, ours, naive = pipeline_speedup(engraved, warm_up_epochs)
        finally:
            if previous_home is None:
                os.environ.pop("SUPERSMM_HOME")
            else:
                os.environ["SUPERSMM_HOME"] = previous_home
    return [
        {"name": "detect_rate", "value": round(rate), "unit": "samples/s", "goal": f">= {DETECT_RATE_GOAL}",
         "ok": rate >= DETECT_RATE_GOAL, "samples": folder_count},
        {"name": "pipeline_speedup", "value": round(speedup, 2), "unit": "x", "goal": f">= {SPEEDUP_GOAL}",
         "ok": speedup >= SPEEDUP_GOAL, "epoch_seconds_ours": round(ours, 2), "epoch_seconds_naive": round(naive, 2),
         "samples": engraved_count},
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


def pipeline_speedup(engraved: Path, warm_up_epochs: int) -> tuple[float, float, float]:
    """(naive epoch time / our epoch time, our time, naive time), each the best of the measured epochs."""
    detect(engraved.parent)  # the dataset `engraved`
    examples = [e for split in ("train", "val", "test") for e in load_dataset("engraved").examples(split, ENCODING)]
    train_step = training_step()
    our_batches = EpochBatches(examples, encoding=ENCODING, height=HEIGHT, batch_size=BATCH_SIZE, seed=0, training=True)

    def ours(epoch: int):
        for batch in our_batches.epoch(epoch):  # as train_chunk feeds its epochs
            train_step(batch["image"], batch["image_width"] // WIDTH_REDUCTION, batch["label"], batch["label_length"])

    def naive(epoch: int):
        for image, logit_length, label, label_length in naive_batches(examples, seed=epoch):
            train_step(image, logit_length // WIDTH_REDUCTION, label, label_length)

    # Warm-up epochs trace the step, fill the image cache and the page cache, and let TensorFlow meet the batch
    # shapes of a long run: ours come from a small set (widths and label lengths rounded up), while the naive
    # batches are as wide as their widest image, so they keep bringing new shapes, as in the reference trainer.
    ours_times, naive_times = [], []
    for epoch in range(warm_up_epochs + MEASURED_EPOCHS):  # interleaved: both see the same load on a shared machine
        ours_times.append(timed(ours, epoch))
        naive_times.append(timed(naive, epoch))
    ours_time, naive_time = min(ours_times[warm_up_epochs:]), min(naive_times[warm_up_epochs:])
    return naive_time / ours_time, ours_time, naive_time


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def training_step():
    """One Adam step of the `tiny` CRNN on a batch, with each sample's own number of output frames."""
    model = build_model(PRESET, len(load_vocabulary(ENCODING)), seed=0)
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
