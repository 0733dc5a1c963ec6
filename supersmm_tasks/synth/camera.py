"""Camera-like damage for a clean engraving, like the `_distorted.jpg` images of Camera-PrIMuS.

Camera-PrIMuS made its images by distorting each PrIMuS PNG with image filters (GraphicsMagick) so
that it looks photographed. The steps and ranges here are measured on the 30 real `_distorted.jpg`
of the development set against their clean PNGs (tests/test_synth_realism.py compares the two):

    chop       0.5-4.5% of the rows (1-6 of a ~140-row staff) cut out of the clean image at a random height
               (GraphicsMagick's chop): where they cross a staff line, the line fades or vanishes along the
               whole staff, as one does in about a fifth of the real photos (under 0.85 of the darkest line's
               depth; 0.35 in the faintest)
    rotation   a slant of 0.6 degrees' standard deviation (at most 1.5), on a canvas grown to hold it (a
               2,000-pixel staff gets ~20 rows taller at 0.6 degrees): the real photos are as much taller
               than their PNGs as their slant makes them, so their staff is as tall in the scaled image
    wave       the staff bends up and down by a few pixels over a long wavelength, and its stems and barlines
               bend sideways by 1.5-3 pixels over about their own length (the real ones curve like brackets)
    ragged ink strokes a row thicker, their edges frayed: each pixel swapped with a random one up to 0.5-1.5
               pixels away (GraphicsMagick's spread); the real photos hold as much dark ink as their PNGs
               and half again as much gray around it
    wide ink   for a fifth of the photos, ink spread sideways by 4-6 pixels: in a fifth of the real ones strokes
               and noteheads are 1.8-2.4 times as wide as in their PNG (the rest 1.1-1.7), and a model that
               never saw such wide heads reads their quarters as halves
    blur       smeared sideways over 2-6 pixels (stems look doubled in the real photos), then a Gaussian
               of 0.4-0.8 pixels, or for a fifth of the photos 0.8-1.6 (the real ones have a long tail of
               blurred photos: a tenth hold two thirds more mid-gray than ink pixels)
    light      even: the paper stays near white (243-255), the ink a dark gray
    noise      faint sensor noise, then a grayscale JPEG of quality 75, as every real one is

Every random choice comes from the generator passed in, so the bytes depend only on its seed.
"""
from __future__ import annotations

import cv2
import numpy as np

JPEG_QUALITY = 75
CHOP_SHARE = (0.005, 0.045)  # of the rows: 1-6 rows of a PrIMuS staff image (~140 rows)
ROTATION_SD_DEGREES = 0.6  # most real photos are slanted a little, few over a degree
MAX_ROTATION_DEGREES = 1.5
WAVE_AMPLITUDE = (0.5, 4.0)  # pixels
WAVE_LENGTH = (0.6, 2.5)  # times the image width
SIDEWAYS_WAVE_AMPLITUDE = (1.5, 3.0)  # pixels
SIDEWAYS_WAVE_LENGTH = (0.4, 1.0)  # times the image height
SIDEWAYS_WAVE_MARGIN = 1  # pixels added left and right: the real photos are at most 5 pixels wider than their PNGs
BLUR_SIGMA = (0.4, 0.8)
HEAVY_BLUR_SHARE = 0.2  # the real photos have a long tail of blurred ones
HEAVY_BLUR_SIGMA = (0.8, 1.6)
SPREAD_PIXELS = (0.5, 1.5)
SMEAR_PIXELS = (2, 6)  # length of the sideways motion blur
WIDE_INK_SHARE = 0.2
WIDE_INK_PIXELS = (5, 7)  # columns of the minimum filter: ink spread sideways by 4-6 pixels
PAPER_DARKENING_SD = 4.0  # gray levels below white
NOISE_SD = (0.3, 1.2)


def camera_jpeg(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """JPEG bytes of a photographed copy of a clean grayscale engraving (uint8, white paper)."""
    ok, jpeg = cv2.imencode(".jpg", _photographed(gray, rng), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the distorted image as JPEG")
    return jpeg.tobytes()


def _photographed(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    fewest, most = (max(1, round(share * gray.shape[0])) for share in CHOP_SHARE)
    page = _chopped(gray, rows=int(rng.integers(fewest, most + 1)), at=float(rng.random()))
    slant = np.clip(rng.normal(0, ROTATION_SD_DEGREES), -MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)
    page = _rotated(page, float(slant))
    page = _waved(page, amplitude=float(rng.uniform(*WAVE_AMPLITUDE)),
                  wavelength=float(rng.uniform(*WAVE_LENGTH)) * page.shape[1], phase=float(rng.uniform(0, 2 * np.pi)))
    sideways = _waved(np.ascontiguousarray(page.T), amplitude=float(rng.uniform(*SIDEWAYS_WAVE_AMPLITUDE)),
                      wavelength=float(rng.uniform(*SIDEWAYS_WAVE_LENGTH)) * page.shape[0],
                      phase=float(rng.uniform(0, 2 * np.pi)),  # rows shifted sideways: columns of the transposed page
                      margin=SIDEWAYS_WAVE_MARGIN)
    page = np.ascontiguousarray(sideways.T)
    page = _ragged(page, radius=float(rng.uniform(*SPREAD_PIXELS)), rng=rng)
    if rng.random() < WIDE_INK_SHARE:  # ink is dark: a minimum filter (erosion) widens it
        page = cv2.erode(page, np.ones((1, int(rng.integers(WIDE_INK_PIXELS[0], WIDE_INK_PIXELS[1] + 1))), np.uint8),
                         borderType=cv2.BORDER_REPLICATE)
    smear = int(rng.integers(SMEAR_PIXELS[0], SMEAR_PIXELS[1] + 1))
    page = cv2.blur(page, (smear, 1), borderType=cv2.BORDER_REPLICATE)
    sigma = rng.uniform(*(HEAVY_BLUR_SIGMA if rng.random() < HEAVY_BLUR_SHARE else BLUR_SIGMA))
    tone = cv2.GaussianBlur(page, (0, 0), sigmaX=float(sigma)).astype(np.float32)
    paper = 255 - abs(float(rng.normal(0, PAPER_DARKENING_SD)))
    tone *= paper / 255
    tone += _sensor_noise(tone.shape, sigma=float(rng.uniform(*NOISE_SD)), seed=int(rng.integers(2**31)))
    return np.clip(tone, 0, 255, out=tone).astype(np.uint8)


def _chopped(gray: np.ndarray, rows: int, at: float) -> np.ndarray:
    """The image without `rows` consecutive rows, starting at fraction `at` of the rows that can start such a band."""
    first = int(at * (gray.shape[0] - rows + 1))
    return np.delete(gray, np.s_[first:first + rows], axis=0)


def _rotated(gray: np.ndarray, degrees: float) -> np.ndarray:
    """The image turned by `degrees` on a white canvas just large enough to hold all of it."""
    height, width = gray.shape
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(turn[0, 0]), abs(turn[0, 1])
    new_width, new_height = int(np.ceil(width * cos + height * sin)), int(np.ceil(width * sin + height * cos))
    turn[0, 2] += (new_width - width) / 2
    turn[1, 2] += (new_height - height) / 2
    return cv2.warpAffine(gray, turn, (new_width, new_height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def _waved(gray: np.ndarray, amplitude: float, wavelength: float, phase: float, margin: int | None = None) -> np.ndarray:
    """Each column shifted up or down along a sine, on a canvas `margin` rows taller at the top and at the bottom
    (by default the amplitude, as GraphicsMagick's wave)."""
    margin = int(np.ceil(amplitude)) if margin is None else margin
    page = cv2.copyMakeBorder(gray, margin, margin, 0, 0, cv2.BORDER_CONSTANT, value=255)
    height, width = page.shape
    shift = amplitude * np.sin(2 * np.pi * np.arange(width, dtype=np.float32) / wavelength + phase)
    map_x = np.tile(np.arange(width, dtype=np.float32), (height, 1))
    map_y = np.arange(height, dtype=np.float32)[:, None] + shift[None, :].astype(np.float32)
    return cv2.remap(page, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def _ragged(gray: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Strokes one row thicker, then every pixel taken from a random place up to `radius` pixels away."""
    thick = cv2.erode(gray, np.ones((2, 1), np.uint8), borderType=cv2.BORDER_REPLICATE)  # ink is dark: erode grows it
    height, width = gray.shape
    jitter = rng.uniform(-radius, radius, (2, height, width)).astype(np.float32)
    map_x = np.arange(width, dtype=np.float32)[None, :] + jitter[0]
    map_y = np.arange(height, dtype=np.float32)[:, None] + jitter[1]
    return cv2.remap(thick, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def _sensor_noise(shape: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
    noise = np.empty(shape, np.float32)
    cv2.setRNGSeed(seed)
    cv2.randn(noise, 0.0, sigma)
    return noise
