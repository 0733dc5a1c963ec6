"""Camera-like damage for a clean engraving, in the spirit of Camera-PrIMuS `_distorted.jpg` images.

A photographed page: the staff is seen at a slant (perspective and rotation), slightly out of focus,
under uneven light on off-white paper, with sensor noise, saved as a low-quality JPEG.
Every random choice comes from the generator passed in, so the bytes depend only on its seed.
"""
from __future__ import annotations

import cv2
import numpy as np

PAPER_MARGIN = 0.12  # white border added around the strip before warping, as a fraction of its height


def camera_jpeg(clean_png: bytes, rng: np.random.Generator) -> bytes:
    gray = cv2.imdecode(np.frombuffer(clean_png, np.uint8), cv2.IMREAD_GRAYSCALE)
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
    color = _uneven_light(page.astype(np.float32) / 255.0, rng)
    color += rng.normal(0.0, rng.uniform(0.01, 0.04), size=color.shape).astype(np.float32)
    return np.clip(color * 255.0, 0, 255).astype(np.uint8)


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


def _uneven_light(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grayscale page (0..1) -> BGR photo lit by a soft gradient on tinted paper."""
    height, width = page.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(-1, 1, size=2)
    gradient = (xs / width - 0.5) * direction[0] + (ys / height - 0.5) * direction[1]
    light = 1.0 - rng.uniform(0.1, 0.35) * (gradient - gradient.min()) / (np.ptp(gradient) + 1e-6)
    paper_tint = np.float32(rng.uniform(0.85, 1.0, size=3))
    ink_level = np.float32(rng.uniform(0.05, 0.25))
    tone = ink_level + (1.0 - ink_level) * page
    return (tone * light)[:, :, None] * paper_tint[None, None, :]
