"""How our images compare with real PrIMuS ones: the same incipits engraved here, and camera-damage measures.

    engraved_sizes          for every real incipit, the size of our engraving and of the real PNG
    nearest_font            the font a staff image was engraved in, as far as its opening's look tells
    height_ratios           for every real incipit, our engraving's height / the real PNG's
    is_justified            whether a staff image is as wide as the page between its margins
    photo_measures          blur, paper, ink, noise, tilt and bend of the staff, bend of its stems, its faintest line
                            and its line spacing in a (distorted) image
    ends_with_barline       whether a staff image shows a barline at its right end
    stem_ink                how much ink a photo's stems hold across, in pixels of its clean image's ink
    staff_gaps              stretches of columns where the staff's lines are not drawn (damage that streaks them)

Used by tests/test_synth_realism.py and bench/bench_realism.py against the real development set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .engrave import FONTS, PAGE_MARGIN, PAGE_WIDTH, Engraver, EngravingFailed, font_for
from .pae_source import MalformedPae, verovio_input


def engraved_sizes(real_dev: Path, limit: int | None = None) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """Incipit id -> ((height, width) of our engraving of its `regular_pae.pae`, (height, width) of its real PNG).

    The incipits are read and engraved as `supersmm synth --from-pae` reads and engraves them (pae_source.py,
    engrave.font_for); incipits that Verovio cannot load are left out.
    """
    engraver, sizes = Engraver(), {}
    folders = sorted(path.parent for path in Path(real_dev).glob("*/regular_pae.pae"))[:limit]
    for folder in folders:
        try:
            pae = verovio_input((folder / "regular_pae.pae").read_text(encoding="utf-8"))
            ours, _ = engraver.engrave(pae, font_for(folder.name), xml_id_seed=0)
        except (MalformedPae, EngravingFailed):
            continue
        real = cv2.imread(str(folder / f"{folder.name}.png"), cv2.IMREAD_GRAYSCALE)
        sizes[folder.name] = (ours.shape[:2], real.shape[:2])
    return sizes


def nearest_font(gray: np.ndarray, drawn_pae: str, engraver: Engraver) -> str:
    """Which of FONTS engraves `drawn_pae` (Verovio input of what the image draws) most like the image: the
    opening of the staff (clef, signatures, the first notes) compared at one height, a few columns of shift
    allowed. Verovio's versions differ in spacing, so only the glyphs' look can tell."""
    opening = _opening(gray)

    def likeness(font: str) -> float:
        ours = _opening(engraver.engrave(drawn_pae, font, xml_id_seed=0)[0])
        return max(float(np.corrcoef(np.roll(ours, shift, axis=1)[:, 8:-8].ravel(), opening[:, 8:-8].ravel())[0, 1])
                   for shift in range(-6, 7))

    return max(FONTS, key=likeness)


def _opening(gray: np.ndarray, height: int = 100, width: int = 120) -> np.ndarray:
    scaled = cv2.resize(gray, (max(width, round(gray.shape[1] * height / gray.shape[0])), height),
                        interpolation=cv2.INTER_AREA)
    return scaled[:, :width].astype(np.float32)


def height_ratios(real_dev: Path, limit: int | None = None) -> dict[str, float]:
    """Incipit id -> height of our engraving of its `regular_pae.pae` / height of its real PNG."""
    return {name: ours[0] / real[0] for name, (ours, real) in engraved_sizes(real_dev, limit).items()}


def is_justified(width: int) -> bool:
    """Whether a staff image this wide was stretched (or squeezed) to the page's width between its margins."""
    return width >= PAGE_WIDTH - 2 * PAGE_MARGIN


@dataclass(frozen=True)
class PhotoMeasures:
    blur: float  # mid-gray pixels (100-199) per ink pixel (< 128): 0 for a two-tone image
    paper: float  # median gray of the paper (pixels > 200)
    ink: float  # 2nd percentile of gray
    noise: float  # standard deviation of the paper around its 5x5 median
    tilt_degrees: float  # slope of the top staff line
    bend_pixels: float  # standard deviation of the top staff line around that slope
    dark_pixels: int  # pixels darker than 128
    gray_pixels: int  # pixels darker than 192
    texture: float  # mean absolute difference between neighbouring pixels of a row: frayed edges raise it
    stroke_bend: float | None  # median over tall vertical strokes (stems, barlines) of their sideways wander, pixels
    faintest_line: float | None  # how dark the staff's faintest line is, as a share of its darkest: 1 when all are alike
    line_spacing: float | None  # the staff's line spacing as a share of the image's height: how tall the staff is
                                # once the image is scaled to a model's height
    stroke_width: float  # mean length of a row's dark runs (< 150) of 2-39 pixels: stems, noteheads and symbols
                         # across, without staff lines and beams; a sideways smear widens them


def photo_measures(gray: np.ndarray) -> PhotoMeasures:
    image = gray.astype(np.float32)
    ink = int((image < 128).sum())
    paper = image > 200
    around = cv2.medianBlur(gray, 5).astype(np.float32)
    tilt, bend = _top_staff_line(gray)
    faintest_line, line_spacing = _staff_lines(gray)
    return PhotoMeasures(
        blur=float(((image >= 100) & (image < 200)).sum() / max(ink, 1)), paper=float(np.median(image[paper])),
        ink=float(np.percentile(image, 2)), noise=float(np.std((image - around)[paper])),
        tilt_degrees=tilt, bend_pixels=bend, dark_pixels=ink, gray_pixels=int((image < 192).sum()),
        texture=float(np.abs(np.diff(image, axis=1)).mean()),
        stroke_bend=_stroke_bend(gray), faintest_line=faintest_line, line_spacing=line_spacing,
        stroke_width=stroke_width(gray),
    )


def ends_with_barline(gray: np.ndarray, last_columns: int = 8) -> bool:
    """Whether one of the image's last columns is dark from its top staff line to its bottom one."""
    dark = gray < 128
    staff_rows = np.flatnonzero(dark.mean(axis=1) > 0.5)
    if staff_rows.size == 0:
        return False
    span = dark[staff_rows.min():staff_rows.max() + 1, -last_columns:]
    return bool((span.mean(axis=0) >= 0.95).any())


def stroke_width(gray: np.ndarray, shortest: int = 2, longest: int = 39) -> float:
    """PhotoMeasures.stroke_width of a grayscale image."""
    dark = np.pad((gray < 150).astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(dark, axis=1).ravel()  # rows padded: a run never joins the next row's
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    runs = runs[(runs >= shortest) & (runs <= longest)]
    return float(runs.mean()) if runs.size else 0.0


def stem_ink(photo: np.ndarray, clean: np.ndarray) -> float | None:
    """Median over the clean image's stems of the ink the photo holds across one row of the stem, in pixels of the
    clean image's full ink (None where no stem is found). A clean 2-pixel stem holds 2: blur spreads it wider and
    fainter without adding to it, while ink that spreads (a thicker stroke) adds to it.

    A stem is a clean column dark for 30 rows or more; its rows counted are those with paper 3 and 6 pixels to both
    sides (no notehead or staff line), the middle half of them, and they are read in the photo at the same place
    (its damage moves strokes by a few pixels: the darkest column near the stem is taken as its centre)."""
    depth = 255.0 - float(clean.min())
    dark = clean < 128
    inks = []
    for column in _stem_columns(dark):
        rows = [row for row in np.flatnonzero(dark[:, column])
                if (clean[row, [column - 6, column - 3, column + 3, column + 6]] > 200).all()]
        for row in rows[len(rows) // 4: 3 * len(rows) // 4: 4]:
            if row >= photo.shape[0] or column + 15 > photo.shape[1]:
                continue
            across = 255.0 - photo[row, column - 14:column + 15].astype(np.float32)
            across -= np.median(np.r_[across[:3], across[-3:]])  # the paper's own gray
            if across[6:23].max() < 15:  # the stem is not on this row of the photo
                continue
            inks.append(across[3:26].clip(0).sum() / depth)
    return float(np.median(inks)) if inks else None


def staff_gaps(gray: np.ndarray, min_columns: int = 20, run: int = 15) -> list[tuple[int, int]]:
    """(first column, width) of each stretch of at least `min_columns` columns where fewer than 5 rows are dark
    in horizontal runs of `run` pixels: where the staff's lines are not drawn. A clean staff has none."""
    dark = (gray < 150).astype(np.uint8)
    lines = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((1, run), np.uint8))  # horizontal runs only
    missing = np.r_[0, (lines.sum(axis=0) < 5).astype(np.int8), 0]
    edges = np.diff(missing)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(start), int(end - start)) for start, end in zip(starts, ends) if end - start >= min_columns]


def _stem_columns(dark: np.ndarray, min_rows: int = 30) -> list[int]:
    """Columns of a clean image's stems (one per stem, 3 pixels or more apart), away from its left and right edges."""
    columns, last = [], -10
    for column in np.flatnonzero(dark.sum(axis=0) >= min_rows):
        if 14 <= column < dark.shape[1] - 15 and column - last > 3:
            columns.append(int(column))
        last = column
    return columns


def _stroke_bend(gray: np.ndarray, min_rows: int = 40, max_columns: int = 14) -> float | None:
    """Median over the image's tall vertical strokes of the standard deviation, in pixels, of each stroke's
    centre around the straight line through it (None where no stroke is found): 0 for an engraving."""
    dark = (gray < 150).astype(np.uint8)
    vertical = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((9, 1), np.uint8))  # keeps vertical runs only
    vertical = cv2.dilate(vertical, np.ones((1, 3), np.uint8))  # joins a stroke across one-pixel sideways steps
    count, labels, stats, _ = cv2.connectedComponentsWithStats(vertical, connectivity=8)
    wanders = []
    for label in range(1, count):
        left, top, width, height, _ = stats[label]
        if height < min_rows or width > max_columns:
            continue
        rows, columns = np.nonzero(labels[top:top + height, left:left + width] == label)
        along = np.unique(rows)
        centres = np.array([columns[rows == row].mean() for row in along])
        wanders.append((centres - np.polyval(np.polyfit(along, centres, 1), along)).std())
    return float(np.median(wanders)) if wanders else None


def _staff_lines(gray: np.ndarray, band: int = 48, lines: int = 5, gap: int = 5) -> tuple[float | None, float | None]:
    """(faintest line's depth / the darkest one's, line spacing as a share of the image's height), each the median
    over narrow bands of columns (None where no band shows five lines). A band's row profile is the median over
    its columns, which keeps the staff lines (they cross every column) and drops notes and stems; its five deepest
    peaks, at least `gap` rows apart, are the lines, and a band is narrow enough for a tilted staff to stay in its
    rows."""
    shares, spacings = [], []
    for left in range(0, gray.shape[1] - band + 1, band):
        depth = 255.0 - np.median(gray[:, left:left + band], axis=1)
        depth -= np.median(depth)
        peaks = []
        for row in np.argsort(depth)[::-1]:
            if depth[row] <= 0 or len(peaks) == lines:
                break
            if all(abs(row - peak) > gap for peak in peaks):
                peaks.append(row)
        if len(peaks) == lines:
            shares.append(depth[peaks[-1]] / depth[peaks[0]])
            spacings.append((max(peaks) - min(peaks)) / (lines - 1) / gray.shape[0])
    if not shares:
        return None, None
    return float(np.median(shares)), float(np.median(spacings))


def _top_staff_line(gray: np.ndarray, band: int = 100) -> tuple[float, float]:
    """(slope in degrees, spread in pixels) of where the staff's lines lie, band by band across the image."""
    centres, xs = [], []
    for left in range(0, gray.shape[1] - band, band):
        rows = np.flatnonzero((gray[:, left:left + band] < 128).mean(axis=1) > 0.5)
        if rows.size:
            centres.append(rows.mean())
            xs.append(left + band / 2)
    if len(xs) < 4:
        return 0.0, 0.0
    slope, offset = np.polyfit(xs, centres, 1)
    residual = np.asarray(centres) - (slope * np.asarray(xs) + offset)
    return float(np.degrees(np.arctan(slope))), float(residual.std())
