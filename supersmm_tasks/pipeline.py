"""The tf.data input pipeline: images and labels of a list of Examples, batched for CTC training.

Every image becomes grayscale with ink towards 1 and background 0, resized to the model's height keeping its
aspect ratio. Each batch keeps every sample's own width and label length (CTC needs them per sample) and is padded
to a multiple of WIDTH_MULTIPLE pixels and LABEL_MULTIPLE tokens, so a traced training step sees few shapes.

Training batches are bucketed by width: the epoch's shuffled order is cut into groups of BUCKET_BATCHES batches,
each group is sorted by width and cut into batches, and the batches are shuffled. Everything random is drawn from
(seed, epoch), so an epoch has the same batches in the same order in any process. With `curriculum`, the first
CURRICULUM_EPOCHS read the same batches from the narrowest to the widest: short staves are short label sequences,
from which CTC learns to align symbols at all, and a network that starts there leaves CTC's all-blank plateau
within its first epoch (where one shuffled epoch leaves it reading almost nothing). Evaluation batches are in order
of width (stable), the same every time.

The pipeline of a cached example set is built once (`EpochBatches`); an epoch only sets the order it reads in.
With `augment`, every training image is augmented on the fly (augment.py) from a seed of (seed, epoch, example).

Decoded images are cached in memory (one uint8 strip per example set) when they fit; see `ImageCache`.

An image that no longer decodes (it changed since `supersmm detect` checked it) is left out, not fatal: a cached
set leaves it out of every epoch (`EpochBatches.skipped` says which and why), a set decoded per epoch drops it
from that epoch's batches (the trainer counts the samples it saw). Only a set of which more than half fails is
an error.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import psutil
import tensorflow as tf
from PIL import Image

from .augment import augmented, sample_seeds
from .corpus import Example
from .errors import SupersmmError
from .vocabulary import encode

# The dataset functions below need no AutoGraph (no Python control flow on tensors); without it, tracing never
# re-reads their source, which may have changed on disk since the module was imported.
not_converted = tf.autograph.experimental.do_not_convert

DEFAULT_HEIGHT = 128
WIDTH_MULTIPLE = 32  # the `paper` model downsamples width by 16
LABEL_MULTIPLE = 8
BUCKET_BATCHES = 32
# `tiny` on the demo's 1,200 incipits, 6 epochs, two seeds: 11.4% and 10.2% val SER with one such epoch, against
# 14.1% and 12.0% without; a second one added nothing (2026-12-06).
CURRICULUM_EPOCHS = 1
CACHE_MEMORY_FRACTION = 0.25  # of the memory available when a cache is built
MOST_OF_A_SET = 0.5  # more images of a set than this failing to decode is an error, not a skip


# ---------------------------------------------------------------- one image


def resized_width(width: int, height: int, target_height: int) -> int:
    return max(1, round(width * target_height / height))


def fits_ctc(tokens: list[str], width: int, height: int, preset) -> bool:
    """Whether the image has enough frames for its label: CTC needs one per token plus a blank
    between each pair of equal neighbours."""
    frames = preset.frames(resized_width(width, height, preset.height))
    repeats = sum(a == b for a, b in zip(tokens, tokens[1:]))
    return frames >= len(tokens) + repeats


def ctc_fitting(examples: list[Example], preset) -> tuple[list[Example], list[Example]]:
    """(the examples whose image can hold their label under CTC, those too narrow for it): training leaves the
    second out, and evaluation with it, so that both score the same staves."""
    fitting, too_narrow = [], []
    for example in examples:
        fits = example.width is None or fits_ctc(example.target, example.width, example.height, preset)
        (fitting if fits else too_narrow).append(example)
    return fitting, too_narrow


def decode_grayscale(data: tf.Tensor) -> tf.Tensor:
    """PNG or JPEG bytes -> [h, w, 1] float32 gray levels 0..255, transparent pixels shown on white."""
    def from_jpeg():
        return tf.cast(tf.io.decode_jpeg(data, channels=1), tf.float32)

    def from_png():
        # Decoded with its own channels: asking libpng for 4 fills alpha with 1, not 255, on 1-bit PNGs.
        image = tf.cast(tf.io.decode_png(data), tf.float32)
        channels = tf.shape(image)[-1]
        has_alpha = channels % 2 == 0  # gray + alpha, or RGBA
        color = image[..., :channels - tf.cast(has_alpha, tf.int32)]
        gray = tf.cond(tf.shape(color)[-1] == 3, lambda: tf.image.rgb_to_grayscale(color), lambda: color)
        alpha = tf.cond(has_alpha, lambda: image[..., -1:] / 255.0, lambda: tf.ones_like(gray))
        return gray * alpha + 255.0 * (1.0 - alpha)

    gray = tf.cond(tf.io.is_jpeg(data), from_jpeg, from_png)
    gray.set_shape([None, None, 1])
    return gray


def ink_image(data: tf.Tensor, height: int, width: tf.Tensor) -> tf.Tensor:
    """Image bytes -> [height, width] uint8 ink (255 = full ink, 0 = background)."""
    return _ink(decode_grayscale(data), height, width)


def _ink(gray: tf.Tensor, height: int, width) -> tf.Tensor:
    resized = tf.image.resize(gray, [height, width], method="bilinear", antialias=True)
    ink = 255.0 - tf.clip_by_value(resized[..., 0], 0.0, 255.0)
    return tf.cast(tf.round(ink), tf.uint8)


def staff_input(data: tf.Tensor, preset) -> tuple[tf.Tensor, tf.Tensor]:
    """PNG or JPEG bytes of one staff -> (the model's input [1, height, frames * width_reduction, 1], frames): the
    image as training prepares it (resized_width, ink_image), background after its last column up to a whole
    frame. For graphs (a SavedModel's signature): the sizes are tensors."""
    gray = decode_grayscale(data)
    shape = tf.shape(gray)
    width = tf.maximum(1, tf.cast(tf.round(
        tf.cast(shape[1], tf.float64) * preset.height / tf.cast(shape[0], tf.float64)), tf.int32))
    frames = preset.frames(width)
    ink = tf.pad(_ink(gray, preset.height, width), [[0, 0], [0, frames * preset.width_reduction - width]])
    return tf.cast(ink, tf.float32)[tf.newaxis, :, :, tf.newaxis] / 255.0, frames


def load_image(path: str, height: int = DEFAULT_HEIGHT) -> np.ndarray:
    """Any PNG or JPEG (any size, gray or colour) -> [height, width, 1] float32, ink towards 1, as in training."""
    try:
        gray = decode_grayscale(tf.io.read_file(str(path)))
        ink = _ink(gray, height, resized_width(int(gray.shape[1]), int(gray.shape[0]), height))
    except tf.errors.OpError as error:
        raise SupersmmError(f"cannot read image {path}: {short_error(error)}") from None
    return (ink.numpy().astype(np.float32) / 255.0)[..., np.newaxis]


def short_error(error: tf.errors.OpError) -> str:
    """TensorFlow's error message without the op and function names around it."""
    return re.sub(r"\{\{.*?\}\}\s*", "", error.message).split(" [Op:")[0].split("\n")[0]


# ---------------------------------------------------------------- the order of an epoch


def batch_order(widths: np.ndarray, batch_size: int, seed: int, epoch: int, training: bool,
                shortest_first: bool = False) -> np.ndarray:
    """Example indices in batch order: consecutive runs of `batch_size` are the batches (the last may be short).
    `shortest_first`: the training batches in order of their widest image instead of shuffled."""
    if not training:
        return np.argsort(widths, kind="stable")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(widths))
    group = batch_size * BUCKET_BATCHES
    for start in range(0, len(order), group):
        chunk = order[start:start + group]
        order[start:start + group] = chunk[np.argsort(widths[chunk], kind="stable")]
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    short = [batches.pop()] if len(batches[-1]) < batch_size else []
    if shortest_first:
        return np.concatenate(sorted(batches, key=lambda batch: widths[batch].max()) + short)
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))] + short)


# ---------------------------------------------------------------- decoded images kept in memory


class ImageCache:
    """Decoded, resized images of whole example sets, each set as one [height, sum of widths] uint8 strip.

    A set is cached only if it fits next to the sets already cached within CACHE_MEMORY_FRACTION of the memory
    available; the least recently used sets make room first.
    """

    def __init__(self, sets: int = 4):
        self.sets = sets
        self.strips: OrderedDict[tuple, tuple[tf.Variable, np.ndarray, dict[int, str]]] = OrderedDict()

    def strip(self, image_paths: list[str], widths: np.ndarray, height: int) \
            -> tuple[tf.Variable, np.ndarray, dict[int, str]] | None:
        """(strip, offset of each image in it, {index: why} of the images that did not decode), or None when
        the set does not fit in memory."""
        key = (height, tuple(image_paths), widths.tobytes())
        if key in self.strips:
            self.strips.move_to_end(key)
            return self.strips[key]
        size = height * int(widths.sum())
        while self.strips and self._cached_bytes() + 2 * size > self._budget():
            self.strips.popitem(last=False)
        if 2 * size > self._budget():  # building the strip holds it twice for a moment
            return None
        self.strips[key] = _decode_strip(image_paths, widths, height)
        while len(self.strips) > self.sets:
            self.strips.popitem(last=False)
        return self.strips[key]

    def _cached_bytes(self) -> int:
        return sum(int(strip.shape[0] * strip.shape[1]) for strip, _, _ in self.strips.values())

    def _budget(self) -> int:
        return int((psutil.virtual_memory().available + self._cached_bytes()) * CACHE_MEMORY_FRACTION)


def _decode_strip(image_paths: list[str], widths: np.ndarray, height: int) \
        -> tuple[tf.Variable, np.ndarray, dict[int, str]]:
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    strip = np.zeros((height, int(widths.sum())), np.uint8)

    @not_converted
    def decode(path, width):
        return ink_image(tf.io.read_file(path), height, width)

    decoded = _untuned(tf.data.Dataset.from_tensor_slices((image_paths, widths.astype(np.int32))).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    images = iter(decoded)
    failed = {}
    for index, (offset, width) in enumerate(zip(offsets, widths)):
        try:
            strip[:, offset:offset + width] = next(images).numpy()
        except tf.errors.OpError as error:  # the iterator goes on with the next image
            failed[index] = short_error(error)
    if len(failed) > MOST_OF_A_SET * len(image_paths):
        first = min(failed)
        raise SupersmmError(f"{len(failed)} of {len(image_paths)} images do not decode (first: {image_paths[first]}: "
                            f"{failed[first]}): they changed since detection; run `supersmm detect`")
    # A variable, not a constant: tf.data copies every constant a dataset captures, each epoch.
    with tf.device("/CPU:0"):
        return tf.Variable(strip, trainable=False), offsets, failed


IMAGE_CACHE = ImageCache()


# ---------------------------------------------------------------- the batches of an epoch


class EpochBatches:
    """The batches of one example set, epoch after epoch: dict(image=[B,H,W,1] float32, image_width=[B] int32,
    label=[B,L] int32 padded with -1, label_length=[B] int32).

    Cached images: the tf.data pipeline is built, and its functions traced, once; each epoch only sets the order
    in which it reads the strip. Images decoded from their files (`cache=False`, or a set too big for the cache):
    each epoch builds its pipeline from plain tensors, because under op determinism TensorFlow runs any pipeline
    with a stateful function (a variable read) one element at a time, without prefetch: cheap for slices of a
    strip, costly for decoding.
    """

    def __init__(self, examples: list[Example], *, encoding: str, height: int = DEFAULT_HEIGHT, batch_size: int,
                 seed: int, training: bool, cache: bool = True, augment: bool = False, curriculum: bool = False):
        if not examples:
            raise SupersmmError("no examples to make batches of (is the split empty for this encoding?)")
        self.widths = np.array([resized_width(*_stored_size(example), height) for example in examples], np.int64)
        self.batch_size, self.seed, self.training = batch_size, seed, training
        self.augment = augment and training
        self.curriculum = curriculum and training
        looks = augmented if self.augment else _as_stored
        labels, label_lengths = _label_matrix(examples, encoding)
        image_paths = [example.image_path for example in examples]
        strip = IMAGE_CACHE.strip(image_paths, self.widths, height) if cache else None
        self.kept = np.arange(len(examples))  # the examples the batches draw from
        self.skipped: list[tuple[str, str]] = []  # (image path, why) of the images left out
        if strip is None:
            self.files = (np.array(image_paths), self.widths.astype(np.int32), labels, label_lengths,
                          np.arange(len(examples), dtype=np.int32))

            @not_converted
            def decoded_sample(path, width, label, label_length, index, augment_seed):
                image = looks(ink_image(tf.io.read_file(path), height, width), augment_seed)
                return _padded_sample(image, width, label, label_length, index)

            self.decoded_sample = decoded_sample
            return
        self.files = None
        if strip[2]:
            self.kept = np.array([index for index in range(len(examples)) if index not in strip[2]])
            self.skipped = [(image_paths[index], why) for index, why in sorted(strip[2].items())]

        # Variables, not constants: tf.data copies every constant a dataset captures, for every iterator.
        with tf.device("/CPU:0"):
            self.order = tf.Variable(self.kept.astype(np.int32), trainable=False)
            self.augment_seeds = tf.Variable(np.zeros((len(examples), 2), np.int64), trainable=False)
            widths = tf.Variable(self.widths.astype(np.int32), trainable=False)
            labels = tf.Variable(labels, trainable=False)
            label_lengths = tf.Variable(label_lengths, trainable=False)
            offsets = tf.Variable(strip[1], trainable=False)

        @not_converted
        def sample(position):
            index = self.order[position]
            width, offset = widths[index], offsets[index]
            image = looks(strip[0][:, offset:offset + tf.cast(width, tf.int64)], self.augment_seeds[index])
            return _padded_sample(image, width, labels[index], label_lengths[index], index)

        self.dataset = _batched(tf.data.Dataset.range(len(self.kept)).map(sample), batch_size)

    def __len__(self) -> int:
        """The number of examples in an epoch (at most; see the module's note on images that fail)."""
        return len(self.kept)

    def epoch(self, epoch: int) -> tf.data.Dataset:
        """The batches of this epoch; iterate over them before asking for the next epoch's."""
        shortest_first = self.curriculum and epoch <= CURRICULUM_EPOCHS
        order = self.kept[batch_order(self.widths[self.kept], self.batch_size, self.seed, epoch, self.training,
                                      shortest_first)]
        seeds = sample_seeds(self.seed, epoch, len(self.widths))
        if self.files is None:
            self.order.assign(order.astype(np.int32))
            self.augment_seeds.assign(seeds)
            return self.dataset
        in_order = tf.data.Dataset.from_tensor_slices(tuple(column[order] for column in (*self.files, seeds)))
        decoded = in_order.map(self.decoded_sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return _batched(decoded.ignore_errors(), self.batch_size)


def _as_stored(image, augment_seed):
    return image


def _padded_sample(image, width, label, label_length, index):
    """One sample as the batches want it: the image padded to a multiple of WIDTH_MULTIPLE columns, the label
    (padded with -1) cut to a multiple of LABEL_MULTIPLE tokens, and which of the examples it is."""
    image = tf.pad(image, [[0, 0], [0, _round_up(width, WIDTH_MULTIPLE) - width]])
    return image, width, label[:_round_up(label_length, LABEL_MULTIPLE)], label_length, index


def _batched(samples: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    batches = (samples.padded_batch(batch_size, padding_values=(np.uint8(0), 0, -1, 0, 0))
               .map(_as_model_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .prefetch(tf.data.AUTOTUNE))
    return _untuned(batches)


def epoch_batches(examples: list[Example], *, encoding: str, height: int = DEFAULT_HEIGHT, batch_size: int, seed: int,
                  epoch: int, training: bool, cache: bool = True, augment: bool = False,
                  curriculum: bool = False) -> tf.data.Dataset:
    """One epoch of batches (see EpochBatches)."""
    return EpochBatches(examples, encoding=encoding, height=height, batch_size=batch_size, seed=seed,
                        training=training, cache=cache, augment=augment, curriculum=curriculum).epoch(epoch)


def _untuned(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset, deterministic and without autotuning, where AUTOTUNE means one call per core. The tuning
    thread sleeps for up to seconds between rounds, and the end of an iterator (every epoch) waits for it."""
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return dataset.with_options(options)


@not_converted
def _as_model_input(image, width, label, label_length, index) -> dict[str, tf.Tensor]:
    return {"image": tf.cast(image, tf.float32)[..., tf.newaxis] / 255.0, "image_width": width, "label": label,
            "label_length": label_length, "index": index}


def _round_up(value, multiple: int):
    return (value + multiple - 1) // multiple * multiple


def _stored_size(example: Example) -> tuple[int, int]:
    if example.width and example.height:
        return example.width, example.height
    try:
        with Image.open(example.image_path) as image:
            return image.size
    except OSError as error:
        raise SupersmmError(f"cannot read image {example.image_path}: {error}") from None


def _label_matrix(examples: list[Example], encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """[N, L] int32 token indices padded with -1 (L a multiple of LABEL_MULTIPLE) and [N] int32 lengths."""
    lengths = np.array([len(example.target) for example in examples], np.int32)
    matrix = np.full((len(examples), _round_up(int(lengths.max()), LABEL_MULTIPLE)), -1, np.int32)
    for row, example in enumerate(examples):
        try:
            matrix[row, :lengths[row]] = encode(example.target, encoding)
        except KeyError as error:
            raise SupersmmError(f"{example.image_path}: {error.args[0]}") from None
    return matrix, lengths
