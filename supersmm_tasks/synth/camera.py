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
    ragged ink strokes a row thicker (for 30% of the photos a column wider too), their edges frayed: each pixel
               swapped with a random one up to 0.5-1.5 pixels away (GraphicsMagick's spread); the real photos hold as
               much dark ink as their PNGs and half again as much gray around it
    smear      sideways over 2-4 pixels, or for 30% of the photos 7-11: the real ones' stems hold 2.3-3.7
               pixels of ink across, spread 4-8 pixels wide, and their widest stems are their faintest (a long
               smear, not ink that spreads: their noteheads widen with them, 1.8-2.4 times in a fifth of the photos)
    blur       then a Gaussian of 0.4-0.8 pixels, or for a fifth of the photos 0.8-1.6 (the real ones have a long
               tail of blurred photos: a tenth hold two thirds more mid-gray than ink pixels)
    bands      damage local to a few columns, before the rest: in 5 of the 30 real photos the clef is lost in
               faded diagonal streaks, two bands of them (as if each column were shifted up further than the one
               before: the staff lines turn into streaks), and so in 17% of ours; a band of such streaks in the
               middle of the staff in 2 of 30; and in 4 of 30 a stretch where the notes are faded and slanted while
               the staff lines stay
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
WIDER_STROKE_SHARE = 0.3  # strokes a column wider too
SMEAR_PIXELS = (2, 4)  # length of the sideways motion blur
LONG_SMEAR_SHARE = 0.3
LONG_SMEAR_PIXELS = (7, 11)  # stems and barlines faint and wide
PAPER_DARKENING_SD = 4.0  # gray levels below white
NOISE_SD = (0.3, 1.2)
STREAKED_START_SHARE = 0.17  # 5 of the 30 real photos
STREAKED_START_COLUMN = (8, 20)  # the real ones keep stubs of the staff lines left of the streaks
STREAKED_MIDDLE_SHARE = 0.07  # 2 of 30
START_STREAK_WIDTH = (12, 26)  # pixels, each of its two teeth: the real staff lines are gone for 33-43 pixels
MIDDLE_STREAK_WIDTH = (25, 50)  # pixels: gone for 26-49 in the real ones
STREAK_SLOPE = (1.4, 2.2)  # rows per column: streaks at 55-65 degrees
SLANTED_SHARE = 0.15  # 4 of 30
SLANT_WIDTH = (0.08, 0.18)  # of the image's width
SLANT_SLOPE = (0.3, 0.8)  # columns per row
FADE = (0.3, 0.65)  # how much of the ink's depth a damaged band keeps


def camera_jpeg(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """JPEG bytes of a photographed copy of a clean grayscale engraving (uint8, white paper)."""
    ok, jpeg = cv2.imencode(".jpg", _photographed(gray, rng), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the distorted image as JPEG")
    return jpeg.tobytes()


def _photographed(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gray = _locally_damaged(gray, rng)
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
    if rng.random() < WIDER_STROKE_SHARE:  # ink is dark: a minimum filter (erosion) widens it
        page = cv2.erode(page, np.ones((1, 2), np.uint8), borderType=cv2.BORDER_REPLICATE)
    smear_range = LONG_SMEAR_PIXELS if rng.random() < LONG_SMEAR_SHARE else SMEAR_PIXELS
    smear = int(rng.integers(smear_range[0], smear_range[1] + 1))
    page = cv2.blur(page, (smear, 1), borderType=cv2.BORDER_REPLICATE)
    sigma = rng.uniform(*(HEAVY_BLUR_SIGMA if rng.random() < HEAVY_BLUR_SHARE else BLUR_SIGMA))
    tone = cv2.GaussianBlur(page, (0, 0), sigmaX=float(sigma)).astype(np.float32)
    paper = 255 - abs(float(rng.normal(0, PAPER_DARKENING_SD)))
    tone *= paper / 255
    tone += _sensor_noise(tone.shape, sigma=float(rng.uniform(*NOISE_SD)), seed=int(rng.integers(2**31)))
    return np.clip(tone, 0, 255, out=tone).astype(np.uint8)


def _locally_damaged(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Streaked and slanted bands, each on some of the photos (see the module's docstring)."""
    width = gray.shape[1]
    if rng.random() < STREAKED_START_SHARE:  # two teeth of the saw side by side, over the clef
        start = int(rng.integers(*STREAKED_START_COLUMN))
        for _ in range(2):
            band = int(rng.integers(*START_STREAK_WIDTH))
            gray = _streaked(gray, start, band, slope=float(rng.uniform(*STREAK_SLOPE)), fade=float(rng.uniform(*FADE)))
            start += band
    if rng.random() < STREAKED_MIDDLE_SHARE:
        band = int(rng.integers(*MIDDLE_STREAK_WIDTH))
        gray = _streaked(gray, int(rng.integers(0, max(1, width - band))), band,
                         slope=float(rng.uniform(*STREAK_SLOPE)), fade=float(rng.uniform(*FADE)))
    if rng.random() < SLANTED_SHARE:
        band = int(rng.uniform(*SLANT_WIDTH) * width)
        gray = _slanted(gray, int(rng.integers(0, max(1, width - band))), band,
                        slope=float(rng.uniform(*SLANT_SLOPE) * rng.choice([-1, 1])), fade=float(rng.uniform(*FADE)))
    return gray


def _streaked(gray: np.ndarray, start: int, width: int, slope: float, fade: float) -> np.ndarray:
    """Columns start..start+width each shifted `slope` rows further up than the one before, the staff repeating
    above and below it (a tooth of a saw): staff lines become faded diagonal streaks."""
    height = gray.shape[0]
    end = min(gray.shape[1], start + width)
    columns = np.arange(start, end, dtype=np.float32)
    map_x = np.tile(columns, (height, 1))
    map_y = np.arange(height, dtype=np.float32)[:, None] + (slope * (columns - start))[None, :]
    band = cv2.remap(gray, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP).astype(np.float32)
    page = gray.copy()
    page[:, start:end] = (255 - fade * (255 - band)).astype(np.uint8)
    return page


def _slanted(gray: np.ndarray, start: int, width: int, slope: float, fade: float) -> np.ndarray:
    """Columns start..start+width: what stands on the staff slanted (each row shifted sideways in proportion to
    its height) and faded, the staff lines kept as they were."""
    height = gray.shape[0]
    end = min(gray.shape[1], start + width)
    staff_rows = (gray < 128).mean(axis=1) > 0.5
    rows = np.arange(height, dtype=np.float32)
    map_x = (np.arange(start, end, dtype=np.float32)[None, :] + slope * (rows[:, None] - height / 2)).astype(np.float32)
    map_y = np.ascontiguousarray(np.tile(rows[:, None], (1, end - start)))
    band = cv2.remap(gray, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    band = 255 - fade * (255 - band)
    band[staff_rows] = gray[staff_rows, start:end]
    page = gray.copy()
    page[:, start:end] = band.astype(np.uint8)
    return page


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
