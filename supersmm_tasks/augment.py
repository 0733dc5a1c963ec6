"""Online augmentation of training images: each epoch shows every staff a little differently.

An image is the pipeline's [height, width] uint8 ink (255 = full ink, 0 = background). In this order:
- at CAMERA_RATE, the camera damage of `supersmm synth --camera` (perspective, blur, uneven light, noise, JPEG),
  to staves of at least CAMERA_MIN_SIDE_PX each way;
- an affine warp: horizontal and vertical scale, a slight rotation and shear, a small vertical shift;
- ink thickness: strokes blended towards a dilated (bolder) or eroded (thinner) copy;
- blur, faded ink (lower contrast) and sensor noise.
The width stays as it is (content only shrinks horizontally), so a label that fits the image under CTC still fits.

Every draw is stateless, from a per-sample seed the pipeline makes from (run seed, epoch, sample): an epoch's
augmented images are the same in every process, and a resumed run sees exactly the images it would have seen.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import tensorflow as tf

from .synth.camera import camera_jpeg

CAMERA_RATE = 0.15
CAMERA_MIN_SIDE_PX = 64  # a staff narrower than this (a short incipit at a small height) is not photographed
SCALE_X = (0.88, 1.0)
SCALE_Y = (0.95, 1.05)  # about 1: a real photo's staff is as tall as in its PNG
ROTATION_DEGREES = 1.5
SHEAR = 0.15           # horizontal shift per unit of height
SHIFT_Y = 0.03         # of the height
INK = (-0.5, 0.7)      # < 0: towards thinner strokes, > 0: towards bolder ones (share of the blend)
BLUR = (0.0, 0.8)      # share of a 3x3 Gaussian blur
CONTRAST = (0.75, 1.0)
NOISE_SIGMA = (0.0, 0.06)  # of full ink
AUGMENT_STREAM = 7     # keeps augmentation seeds apart from the batch order's draws


def sample_seeds(seed: int, epoch: int, count: int) -> np.ndarray:
    """[count, 2] int64: the augmentation seed of each example of an epoch (row = example index)."""
    return np.random.default_rng([seed, epoch, AUGMENT_STREAM]).integers(0, 2**31 - 1, size=(count, 2))


def augmented(ink: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[H, W] uint8 ink -> the same shape, augmented as the module docstring says, drawn from seed [2] int64."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=10)

    def uniform(index, bounds):
        return tf.random.stateless_uniform([], seeds[index], bounds[0], bounds[1])

    image = tf.cond(uniform(0, (0.0, 1.0)) < CAMERA_RATE, lambda: camera_damaged(ink, seeds[1]), lambda: ink)
    image = tf.cast(image, tf.float32)[tf.newaxis, :, :, tf.newaxis] / 255.0
    image = _warped(image, uniform(2, SCALE_X), uniform(3, SCALE_Y),
                    uniform(4, (-ROTATION_DEGREES, ROTATION_DEGREES)) * math.pi / 180, uniform(5, (-SHEAR, SHEAR)),
                    uniform(6, (-SHIFT_Y, SHIFT_Y)))
    image = _inked(image, uniform(7, INK))
    blurred = tf.nn.depthwise_conv2d(image, _GAUSSIAN_3X3, strides=[1, 1, 1, 1], padding="SAME")
    share = uniform(8, BLUR)
    image = (1.0 - share) * image + share * blurred
    contrast_and_noise = tf.random.experimental.stateless_split(seeds[9], num=2)
    image *= tf.random.stateless_uniform([], contrast_and_noise[0], *CONTRAST)
    sigma = tf.random.stateless_uniform([], contrast_and_noise[1], *NOISE_SIGMA)
    image += sigma * tf.random.stateless_normal(tf.shape(image), contrast_and_noise[1])
    return tf.cast(tf.round(tf.clip_by_value(image[0, :, :, 0], 0.0, 1.0) * 255.0), tf.uint8)


_GAUSSIAN_3X3 = tf.constant(np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25]), tf.float32)[:, :, tf.newaxis, tf.newaxis]


def _warped(image, scale_x, scale_y, angle, shear, shift_y):
    """The image scaled, rotated and sheared about its centre: [1, H, W, 1] float32, background 0."""
    height = tf.cast(tf.shape(image)[1], tf.float32)
    width = tf.cast(tf.shape(image)[2], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # The transform maps each output pixel (x, y) to where it is read in the input: the inverse of
    # scale -> shear -> rotation, all about the centre.
    a = (cos + shear * sin) / scale_x
    b = (sin - shear * cos) / scale_x
    c = -sin / scale_y
    d = cos / scale_y
    centre_x, centre_y = width / 2.0, height / 2.0
    offset_y = shift_y * height
    transform = tf.stack([a, b, centre_x - a * centre_x - b * (centre_y + offset_y),
                          c, d, centre_y - c * centre_x - d * (centre_y + offset_y), 0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image, transforms=transform[tf.newaxis], output_shape=tf.shape(image)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")


def _inked(image, amount):
    """Strokes bolder (amount > 0: towards a 3x3 dilation) or thinner (amount < 0: towards a 2x2 erosion)."""
    bolder = tf.nn.max_pool2d(image, 3, 1, "SAME")
    thinner = -tf.nn.max_pool2d(-image, 2, 1, "SAME")
    return tf.where(amount > 0, image + amount * (bolder - image), image + amount * (image - thinner))


def camera_damaged(ink: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[H, W] uint8 ink photographed as `synth --camera` does, at the same size."""
    damaged = tf.numpy_function(_photographed_ink, [ink, seed], tf.uint8, stateful=False)
    return tf.reshape(damaged, tf.shape(ink))


def _photographed_ink(ink: np.ndarray, seed: np.ndarray) -> np.ndarray:
    height, width = ink.shape
    if min(height, width) < CAMERA_MIN_SIDE_PX:
        return ink  # the camera's warp cannot map so small a picture (OpenCV's remap fails on it)
    jpeg = camera_jpeg(255 - ink, np.random.default_rng((seed % 2**32).tolist()))
    photo = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    # The photo holds the staff inside a margin of paper, at a slant: all of it is shrunk back to the
    # image's size, since cutting the margin off again would cut off the ends of a tilted staff.
    return 255 - cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
