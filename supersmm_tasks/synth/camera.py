"""Camera-like damage for a clean engraving, in the spirit of Camera-PrIMuS `_distorted.jpg` images.

A photographed page: the staff is seen at a slant (perspective and rotation), slightly out of focus,
under uneven light on off-white paper, with sensor noise, saved as a low-quality JPEG.
Every random choice comes from the generator passed in, so the bytes depend only on its seed.
"""
from __future__ import annotations

import cv2
import numpy as np

PAPER_MARGIN = 0.12  # white border added around the strip before warping, as a fraction of its height


def camera_jpeg(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """JPEG bytes of a photographed copy of a clean grayscale engraving (uint8, white paper)."""
    photo = _photographed(gray, rng)
    ok, jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 70))])
    if not ok:
        raise RuntimeError("OpenCV could not encode the distorted image as JPEG")
    return jpeg.tobytes()


def _photographed(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    margin = int(PAPER_MARGIN * gray.shape[0]) + 4
    page = cv2.copyMakeBorder(gray, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=255)
    page = _perspective_and_rotation(page, rng)
    page = cv2.GaussianBlur(page, (0, 0), sigmaX=float(rng.uniform(0.5, 1.6)))
    ink = rng.uniform(0.05, 0.25)  # printed black is never quite black in a photo
    tone = page.astype(np.float32)
    tone *= 1 - ink
    tone += 255 * ink
    tone *= _uneven_light(page.shape, rng)
    tone += _sensor_noise(page.shape, sigma=255 * rng.uniform(0.01, 0.04), seed=int(rng.integers(2**31)))
    gray = np.clip(tone, 0, 255, out=tone).astype(np.uint8)
    paper_tint = rng.uniform(0.85, 1.0, size=3)
    return cv2.merge([cv2.convertScaleAbs(gray, alpha=float(channel)) for channel in paper_tint])


def _perspective_and_rotation(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = page.shape
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    jitter = rng.uniform(-1, 1, size=(4, 2)) * np.float32([0.02 * width, 0.08 * height])
    angle = np.deg2rad(rng.uniform(-2.5, 2.5))
    centre = np.float32([width / 2, height / 2])
    rotation = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    seen = (corners - centre) @ rotation.T + centre + jitter.astype(np.float32)
    transform = cv2.getPerspectiveTransform(corners, seen.astype(np.float32))
    return cv2.warpPerspective(page, transform, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def _uneven_light(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A soft light gradient across the page: 1 where it is fully lit, down to 0.65 in the shadow."""
    height, width = shape
    slope_x, slope_y = rng.uniform(-1, 1, size=2)
    across = slope_x * np.linspace(-0.5, 0.5, width, dtype=np.float32)
    down = slope_y * np.linspace(-0.5, 0.5, height, dtype=np.float32)
    gradient = down[:, None] + across[None, :]
    shadow = np.float32(rng.uniform(0.1, 0.35)) / (np.float32(abs(slope_x) + abs(slope_y)) + np.float32(1e-6))
    return 1.0 - shadow * (gradient - gradient.min())


def _sensor_noise(shape: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
    noise = np.empty(shape, np.float32)
    cv2.setRNGSeed(seed)
    cv2.randn(noise, 0.0, sigma)
    return noise
