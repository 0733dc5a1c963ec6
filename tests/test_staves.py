"""Finding the staves of a page: pages composed of engraved incipits (margins, slight skew), real staves stacked."""
import random

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import needs

from supersmm_tasks.staves import find_staves, group_staves, ink_of, rotate, skew_degrees, staff_line_rows
from supersmm_tasks.synth.engrave import Engraver
from supersmm_tasks.synth.music import random_incipit
from supersmm_tasks.synth.pae import semantic_to_pae


@pytest.fixture(scope="module")
def engraved_staves() -> list[np.ndarray]:
    """Five synthetic incipits engraved by Verovio, as gray images of different widths."""
    engraver, rng = Engraver(), random.Random(3)
    return [engraver.engrave(semantic_to_pae(random_incipit(rng)), "Leipzig", index)[0] for index in range(5)]


def compose_page(staves: list[np.ndarray], gaps: list[int], lefts: list[int], margin: int = 80) -> np.ndarray:
    """The staves one below the other on white paper: `gaps[i]` rows before staff i, `lefts[i]` columns left of it."""
    width = max(left + staff.shape[1] for left, staff in zip(lefts, staves)) + margin
    height = sum(staff.shape[0] for staff in staves) + sum(gaps) + margin
    page = np.full((height, width), 255, np.uint8)
    row = 0
    for staff, gap, left in zip(staves, gaps, lefts):
        row += gap
        page[row:row + staff.shape[0], left:left + staff.shape[1]] = staff
        row += staff.shape[0]
    return page


def tight(image: np.ndarray) -> np.ndarray:
    """The image cut to its ink."""
    rows, columns = np.flatnonzero(ink_of(image).any(axis=1)), np.flatnonzero(ink_of(image).any(axis=0))
    return image[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]


def ink_agreement(crop: np.ndarray, original: np.ndarray) -> float:
    """The smaller of: the share of the crop's ink within a pixel of the original's, and the other way round
    (the crop scaled to the original's size)."""
    scaled = np.array(Image.fromarray(crop).resize(original.shape[::-1], Image.BILINEAR))
    a, b = ink_of(scaled), ink_of(original)
    near = np.ones((3, 3), np.uint8)
    a_near, b_near = cv2.dilate(a, near).astype(bool), cv2.dilate(b, near).astype(bool)
    return min((a.astype(bool) & b_near).sum() / a.sum(), (b.astype(bool) & a_near).sum() / b.sum())


def test_a_page_of_engraved_incipits_gives_back_each_staff_in_order(engraved_staves):
    page = compose_page(engraved_staves, gaps=[120, 40, 70, 25, 55], lefts=[60, 90, 60, 200, 75])

    crops = find_staves(page)

    assert len(crops) == len(engraved_staves)
    for crop, original in zip(crops, engraved_staves):
        assert np.array_equal(tight(crop), tight(original))
        assert crop.shape[0] - tight(crop).shape[0] <= 2 and crop.shape[1] - tight(crop).shape[1] <= 2


@pytest.mark.parametrize("degrees", [-2.0, 0.7, 1.5])
def test_a_slightly_skewed_page_is_turned_upright_first(engraved_staves, degrees):
    page = rotate(compose_page(engraved_staves, gaps=[150, 60, 80, 50, 60], lefts=[150] * 5), degrees, 255)

    assert skew_degrees(ink_of(page)) == pytest.approx(-degrees, abs=0.1)
    crops = find_staves(page)
    assert len(crops) == len(engraved_staves)
    for crop, original in zip(crops, map(tight, engraved_staves)):
        assert abs(crop.shape[1] - original.shape[1]) <= 0.02 * original.shape[1]
        assert abs(crop.shape[0] - original.shape[0]) <= 0.1 * original.shape[0]
        assert ink_agreement(tight(crop), original) > 0.95


def test_real_dev_staves_stacked_are_found_again(real_dev):
    paths = sorted(real_dev.glob("*/*-*.png"))
    paths = paths[::max(1, len(paths) // 6)][:6]  # six staves from across the set
    needs(len(paths), 2, "staff images")
    originals = [np.array(Image.open(path).convert("L")) for path in paths]
    page = compose_page(originals, gaps=[40] + [20] * (len(originals) - 1), lefts=[40] * len(originals))

    crops = find_staves(page)

    assert len(crops) == len(originals)
    for crop, original in zip(crops, originals):
        assert np.array_equal(tight(crop), tight(original))
        assert abs(crop.shape[0] - original.shape[0]) <= 2 and abs(crop.shape[1] - original.shape[1]) <= 2


def test_the_real_staves_reaching_furthest_from_their_lines_are_cut_whole_from_a_crowded_page(real_dev):
    """The staff whose ink reaches furthest above its lines (000100005-1_1_1 in the development set: 4.3 spaces)
    and the one reaching furthest below, stacked close: each crop has all of its ink and none of its neighbours'."""
    def reach(path):
        ink = ink_of(np.array(Image.open(path).convert("L")))
        (staff,) = group_staves(staff_line_rows(ink))
        rows = np.flatnonzero(ink.any(axis=1))
        return (staff.top_line - rows[0]) / staff.spacing, (rows[-1] - staff.bottom_line) / staff.spacing

    reaches = {path: reach(path) for path in sorted(real_dev.glob("*/*-*.png"))}
    needs(len(reaches), 3, "staff images")
    highest = max(reaches, key=lambda path: reaches[path][0])
    lowest = max(reaches, key=lambda path: reaches[path][1])
    middle = next(path for path in reaches if path not in (highest, lowest))
    originals = [np.array(Image.open(path).convert("L")) for path in (lowest, highest, middle, lowest)]

    crops = find_staves(compose_page(originals, gaps=[40, 15, 15, 15], lefts=[40] * 4))

    assert len(crops) == len(originals)
    for crop, original in zip(crops, originals):
        assert np.array_equal(tight(crop), tight(original))


def test_a_single_staff_is_read_whole_and_untouched(real_sample, engraved_staves):
    real = np.array(Image.open(real_sample / f"{real_sample.name}.png").convert("L"))

    for staff in (real, engraved_staves[0]):
        (found,) = find_staves(staff)
        assert found is staff


def test_a_blank_page_is_one_image():
    blank = np.full((300, 400), 255, np.uint8)

    (found,) = find_staves(blank)
    assert found is blank
