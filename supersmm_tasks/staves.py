"""Finding the staves of a page of monophonic music, by horizontal projection.

A page (or a photo of one) is turned upright first: the angle, within MAX_SKEW_DEGREES, whose rotation makes the
rows of ink the most uneven is the one that lays the staff lines flat. Staff lines are then the long horizontal
runs of ink (an opening with a kernel far longer than any beam or ledger line), a staff is five of them at an even
spacing, and each staff is cut out with the margins a PrIMuS image has around its staff, never reaching past half
way to its neighbours, then trimmed to its ink as PrIMuS crops its images. Staves come in reading order, top first.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_SKEW_DEGREES = 5.0
COARSE_STEP_DEGREES, FINE_STEP_DEGREES = 0.5, 0.05
LINES_PER_STAFF = 5
EVEN_SPACING = 1.35  # the widest gap of a staff's four may be this many times its narrowest
# A PrIMuS image is cropped to its ink, which mostly reaches 1 to 3 staff spaces above and below the staff (ledger
# lines, stems, beams; 4.3 at most in the 129 real PNGs of the development set, and PrIMuS's notes go 4 spaces
# past the staff, S8 and S-3 in its vocabulary, with a fermata over them further), with a pixel of paper left,
# above and below it and, in most (82 of the 129), none to its right.
MARGIN_SPACES = 5.5
PAPER_PIXELS = 1


@dataclass(frozen=True)
class Staff:
    top_line: float     # rows of the upright page
    bottom_line: float

    @property
    def spacing(self) -> float:
        return (self.bottom_line - self.top_line) / (LINES_PER_STAFF - 1)


def ink_of(gray: np.ndarray) -> np.ndarray:
    """uint8 0/1: 1 where the page is darker than Otsu's threshold between paper and ink."""
    _, ink = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    return ink


def rotate(image: np.ndarray, degrees: float, fill: float) -> np.ndarray:
    """`image` turned counter-clockwise by `degrees` about its centre, same size, `fill` where nothing was."""
    height, width = image.shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=fill)


def skew_degrees(ink: np.ndarray) -> float:
    """The rotation that lays the staff lines flat: their rows then hold the most ink, the rows between the least."""
    weights = ink.astype(np.float32)  # rotated as fractions of ink, not rounded back to 0 or 1

    def unevenness(degrees: float) -> float:
        rows = rotate(weights, degrees, 0).sum(axis=1, dtype=np.float64)
        return float(np.square(rows).sum())

    coarse = COARSE_STEP_DEGREES * np.arange(-round(MAX_SKEW_DEGREES / COARSE_STEP_DEGREES),
                                             round(MAX_SKEW_DEGREES / COARSE_STEP_DEGREES) + 1)
    best = max(coarse, key=unevenness)
    fine = best + FINE_STEP_DEGREES * np.arange(-round(COARSE_STEP_DEGREES / FINE_STEP_DEGREES),
                                                round(COARSE_STEP_DEGREES / FINE_STEP_DEGREES) + 1)
    return float(max(fine, key=unevenness))


def staff_line_rows(ink: np.ndarray) -> list[float]:
    """Centre rows of the long horizontal lines of an upright page.

    The ink is thickened by a row up and down first: a line that was drawn or photographed a little askew steps
    from row to row, and must still be one unbroken run."""
    length = max(40, ink.shape[1] // 6)
    thick = cv2.dilate(ink, np.ones((3, 1), np.uint8))
    lines = cv2.morphologyEx(thick, cv2.MORPH_OPEN, np.ones((1, length), np.uint8))
    on = lines.any(axis=1)
    centres, start = [], None
    for row, line in enumerate(np.append(on, False)):
        if line and start is None:
            start = row
        elif not line and start is not None:
            centres.append((start + row - 1) / 2)
            start = None
    return centres


def group_staves(line_rows: list[float]) -> list[Staff]:
    """Five lines in a row at an even spacing make a staff; lines that fit no staff are left out."""
    staves, index = [], 0
    while index + LINES_PER_STAFF <= len(line_rows):
        lines = line_rows[index:index + LINES_PER_STAFF]
        gaps = np.diff(lines)
        if gaps.min() >= 2 and gaps.max() <= EVEN_SPACING * gaps.min():
            staves.append(Staff(lines[0], lines[-1]))
            index += LINES_PER_STAFF
        else:
            index += 1
    return staves


def find_staves(gray: np.ndarray) -> list[np.ndarray]:
    """The staves of a grayscale page (uint8, paper light), each cut out as a PrIMuS-like gray image, top first.

    Fewer than two staves found: the page is one staff, returned whole and untouched.
    """
    ink = ink_of(gray)
    degrees = skew_degrees(ink)
    upright = rotate(gray, degrees, 255) if degrees else gray
    upright_ink = ink_of(upright) if degrees else ink
    staves = group_staves(staff_line_rows(upright_ink))
    if len(staves) < 2:
        return [gray]
    splits = [_split_row(upright_ink, upper, lower) for upper, lower in zip(staves, staves[1:])]
    crops = []
    for index, staff in enumerate(staves):
        above = splits[index - 1] if index else None
        below = splits[index] if index < len(splits) else None
        top, bottom = _band(staff, above, below, len(gray))
        crops.append(_trim_to_ink(upright[top:bottom], upright_ink[top:bottom]))
    return crops


def _split_row(ink: np.ndarray, upper: Staff, lower: Staff) -> int:
    """The row between two staves where one ends and the next begins: the middle of the widest run of rows without
    ink between them, else the row with the least ink (ledger lines and stems of both may reach past halfway)."""
    first, last = int(np.ceil(upper.bottom_line)) + 1, int(np.floor(lower.top_line))
    counts = ink[first:last].sum(axis=1)
    if len(counts) == 0:
        return int(round((upper.bottom_line + lower.top_line) / 2))
    empty = np.flatnonzero(counts == 0)
    if len(empty) == 0:
        return first + int(np.argmin(counts))
    runs = np.split(empty, np.flatnonzero(np.diff(empty) > 1) + 1)
    widest = max(runs, key=len)
    return first + int(widest[len(widest) // 2])


def _band(staff: Staff, above: int | None, below: int | None, height: int) -> tuple[int, int]:
    """The rows of a staff's crop: up to MARGIN_SPACES past its outer lines, and not past the split from a
    neighbouring staff."""
    margin = MARGIN_SPACES * staff.spacing
    top = staff.top_line - margin if above is None else max(staff.top_line - margin, above)
    bottom = staff.bottom_line + margin if below is None else min(staff.bottom_line + margin, below)
    return max(0, int(round(top))), min(height, int(round(bottom)) + 1)


def _trim_to_ink(band: np.ndarray, band_ink: np.ndarray) -> np.ndarray:
    rows, columns = np.flatnonzero(band_ink.any(axis=1)), np.flatnonzero(band_ink.any(axis=0))
    top, left = max(0, rows[0] - PAPER_PIXELS), max(0, columns[0] - PAPER_PIXELS)
    return band[top: rows[-1] + PAPER_PIXELS + 1, left: columns[-1] + 1]
