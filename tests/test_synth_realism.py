"""The synthetic corpus against the real PrIMuS development set: label statistics, image geometry, ink and
camera damage, each measured on the real files (read in place through SUPERSMM_REAL_DEV)."""
from __future__ import annotations

import collections
import glob
import io
import random
import statistics as stats
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import needs
from supersmm_tasks.synth import generate_corpus
from supersmm_tasks.synth.camera import camera_jpeg
from supersmm_tasks.synth.engrave import FONTS, Engraver
from supersmm_tasks.synth.music import random_incipit
from supersmm_tasks.synth.notation import parse_note
from supersmm_tasks.synth.pae import as_sources_write, semantic_to_pae, with_labelled_ties
from supersmm_tasks.synth.pae_source import drawn_verovio_input
from supersmm_tasks.synth.rasterize import staff_line_runs
from supersmm_tasks.synth.realism import (
    engraved_sizes, ends_with_barline, height_ratios, is_justified, nearest_font, photo_measures, staff_gaps, stem_ink,
    stroke_width,
)
from supersmm_tasks.synth.statistics import (
    FAMILIES, barred_in_breves, distances, distinct_per_100, distributions, read_semantic_labels, total_variation,
)


@pytest.fixture(scope="module")
def real_labels(real_dev_folder) -> list[list[str]]:
    return read_semantic_labels(real_dev_folder)


@pytest.fixture(scope="module")
def real_dev_folder() -> Path:
    from conftest import require_real_dev

    return require_real_dev()


@pytest.fixture(scope="module")
def synthetic_labels() -> list[list[str]]:
    rng = random.Random(7)
    return [random_incipit(rng) for _ in range(900)]  # distinct tokens per 100 of 300 moved by +-0.07 with the seed


# --- labels ------------------------------------------------------------------------------------

def test_statistics_read_the_real_labels(real_labels, real_dev_folder):
    count = len([folder for folder in real_dev_folder.iterdir() if (folder / f"{folder.name}.semantic").is_file()])
    assert len(real_labels) == count > 0
    real = distributions(real_labels)
    assert set(real) == set(FAMILIES) and all(abs(sum(shares.values()) - 1) < 1e-9 for shares in real.values())
    first_clefs = collections.Counter(tokens[0] for tokens in real_labels)  # every PrIMuS label opens with its clef
    assert real["clef"] == {token.removeprefix("clef-"): n / count for token, n in first_clefs.items()}  # C1 68/129
    in_c_major = sum(not any(token.startswith("keySignature-") for token in tokens) for tokens in real_labels)
    assert real["key"].get("none", 0) == pytest.approx(in_c_major / count)  # C major: no key token (54 of 129)
    assert "CM" not in real["key"]
    assert max(real["note duration"], key=real["note duration"].get) == "eighth"
    assert total_variation(real["meter"], real["meter"]) == 0
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1
    needs(count, 100, "incipits")
    distinct = len({token for tokens in real_labels for token in tokens})  # 291 in the development set
    assert 200 < distinct_per_100(real_labels) < distinct


def test_synthetic_incipits_are_distributed_like_real_ones(synthetic_labels, real_labels):
    needs(len(real_labels), 100, "incipits")
    for family, distance in distances(synthetic_labels, real_labels).items():
        assert distance <= 0.15, f"{family}: total variation {distance:.3f} from the real incipits"
    ratio = distinct_per_100(synthetic_labels) / distinct_per_100(real_labels)
    assert 0.8 <= ratio <= 1.25, f"distinct tokens per 100 incipits: {ratio:.2f} x the real ones"


def test_early_music_is_barred_in_breves_as_often_and_as_slowly_as_in_the_real_incipits(synthetic_labels, real_labels):
    """12 of the 23 real incipits in C/ (and 5 of the 81 in C) have measures of a breve, and they are slow music."""
    needs(len(real_labels), 100, "incipits")
    def breve_share(labels, meter):
        in_meter = [tokens for tokens in labels if f"timeSignature-{meter}" in tokens]
        return np.mean([barred_in_breves(tokens) for tokens in in_meter])

    def long_note_share(labels):
        notes = [note for tokens in labels for note in map(parse_note, tokens) if note is not None and not note.grace]
        return np.mean([note.duration in ("half", "whole", "double_whole") for note in notes])

    assert breve_share(real_labels, "C/") >= 0.4 and breve_share(real_labels, "C") <= 0.1
    assert abs(breve_share(synthetic_labels, "C/") - breve_share(real_labels, "C/")) <= 0.15
    assert 0 < breve_share(synthetic_labels, "C") <= 0.12
    real_slow, our_slow = (long_note_share([tokens for tokens in labels if barred_in_breves(tokens)])
                           for labels in (real_labels, synthetic_labels))
    assert real_slow >= 0.6 and abs(our_slow - real_slow) <= 0.1, (our_slow, real_slow)


def test_synthetic_incipits_have_real_length_and_melodic_motion(synthetic_labels, real_labels):
    needs(len(real_labels), 100, "incipits")
    ours, real = (stats.mean(map(len, labels)) for labels in (synthetic_labels, real_labels))
    assert abs(ours - real) < 2, (ours, real)
    assert distributions(synthetic_labels)["token family"]["note"] > 0.5
    from supersmm_tasks.synth.notation import STEPS

    def steps_share(labels):
        intervals = []
        for tokens in labels:
            pitches = [STEPS.index(n.step) + 7 * n.octave for n in map(parse_note, tokens) if n and not n.grace]
            intervals += [abs(b - a) for a, b in zip(pitches, pitches[1:])]
        return sum(interval <= 1 for interval in intervals) / len(intervals)

    assert abs(steps_share(synthetic_labels) - steps_share(real_labels)) < 0.05
    assert steps_share(real_labels) > 0.7  # steps and repeated notes far more than leaps


# --- images ------------------------------------------------------------------------------------

def test_our_engravings_of_the_real_incipits_are_as_tall_as_the_real_pngs(real_dev_folder):
    ratios = height_ratios(real_dev_folder)
    assert len(ratios) >= 0.9 * len(list(real_dev_folder.glob("*/regular_pae.pae")))  # 129 of 129 in the dev set
    assert 0.95 <= stats.median(ratios.values()) <= 1.05



def test_real_primus_images_come_in_the_three_fonts_in_about_equal_parts(real_dev_folder):
    needs(len(list(real_dev_folder.glob("*/regular_pae.pae"))), 100, "incipits")
    engraver, fonts = Engraver(), collections.Counter()
    for folder in sorted(path.parent for path in real_dev_folder.glob("*/regular_pae.pae")):
        real = cv2.imread(str(folder / f"{folder.name}.png"), cv2.IMREAD_GRAYSCALE)
        fonts[nearest_font(real, drawn_verovio_input((folder / "regular_pae.pae").read_text("utf-8")), engraver)] += 1

    assert set(fonts) == set(FONTS)
    # in about equal parts (37, 32 and 31% of the development set): within four standard deviations of a third
    spread = 4 * (fonts.total() * 2 / 9) ** 0.5
    assert all(abs(count - fonts.total() / 3) <= spread for count in fonts.values()), fonts


def test_long_staves_fill_the_page_and_the_others_are_spaced_as_in_the_real_pngs(real_dev_folder):
    needs(len(list(real_dev_folder.glob("*/regular_pae.pae"))), 100, "incipits")
    sizes = engraved_sizes(real_dev_folder)
    real_widths = [real[1] for _, real in sizes.values()]
    # PrIMuS's rule, on its own files: a staff is either justified to the page (2000 columns between the margins,
    # 2002-2003 with the ink's edges) or well short of it (Verovio justifies one that fills 80% of it).
    justified = [width for width in real_widths if is_justified(width)]
    assert len(justified) >= 0.1 * len(real_widths)
    assert all(width <= 2004 for width in justified)
    assert not [width for width in real_widths if 1750 < width < 2000]
    # Ours: the same staves justified, and the others as wide as the real ones.
    agree = [is_justified(ours[1]) == is_justified(real[1]) for ours, real in sizes.values()]
    assert sum(agree) >= 0.95 * len(agree)
    natural = [ours[1] / real[1] for ours, real in sizes.values() if not is_justified(real[1])]
    assert 0.98 <= stats.median(natural) <= 1.02

def staff_line_thickness(pngs) -> collections.Counter:
    """How many staff lines of the images are how many pixels thick."""
    return collections.Counter(rows for path in pngs
                               for _, rows in staff_line_runs(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) < 128))


def test_our_staff_lines_are_as_thick_as_the_real_pngs(real_dev_folder, tmp_path):
    real_pngs = sorted(real_dev_folder.glob("*/*.png"))
    real = staff_line_thickness(real_pngs)
    assert sum(real.values()) >= 5 * 0.9 * len(real_pngs)  # five lines a staff
    generate_corpus(tmp_path, 12, seed=3, workers=2, progress=False)
    ours = staff_line_thickness(sorted(tmp_path.glob("*/*.png")))
    assert sum(ours.values()) >= 5 * 12
    (real_rows, _), (our_rows, _) = real.most_common(1)[0], ours.most_common(1)[0]
    assert our_rows == real_rows, (ours, real)
    assert ours[our_rows] / sum(ours.values()) >= 0.9


def _semantic(folder: Path) -> list[str]:
    return (folder / f"{folder.name}.semantic").read_text("utf-8").split()


def drawn_final_barline_shares(folders) -> dict[bool, float]:
    """Share of images that show a final barline, by whether their label ends with a barline."""
    drawn: dict[bool, list[bool]] = {True: [], False: []}
    for folder in folders:
        labelled = _semantic(folder)[-1] == "barline"
        drawn[labelled].append(ends_with_barline(cv2.imread(str(folder / f"{folder.name}.png"), cv2.IMREAD_GRAYSCALE)))
    needs(min(map(len, drawn.values())), 20, "images with (or without) a final barline token")
    return {labelled: sum(shown) / len(shown) for labelled, shown in drawn.items()}


def test_the_final_barline_is_drawn_as_the_source_says_and_labelled_as_the_meter_says(real_dev_folder, tmp_path):
    """PrIMuS draws a final barline where the Plaine & Easie source ends with `/` and labels one where the last
    measure is full: a model must learn that a drawn final barline after an unfilled measure has no token."""
    real_folders = sorted(folder for folder in real_dev_folder.iterdir() if folder.is_dir())
    for folder in real_folders:  # the detector reads the real images as their sources say
        image = cv2.imread(str(folder / f"{folder.name}.png"), cv2.IMREAD_GRAYSCALE)
        assert ends_with_barline(image) == (folder / "regular_pae.pae").read_text("utf-8").strip().endswith("/"), folder
    real = drawn_final_barline_shares(real_folders)
    generate_corpus(tmp_path, 240, seed=5, workers=2, progress=False)
    our_folders = sorted(folder for folder in tmp_path.iterdir() if folder.is_dir())
    ours = drawn_final_barline_shares(our_folders)
    assert abs(ours[False] - real[False]) <= 0.12, (ours, real)  # real: 11 of 58 unlabelled ones are drawn
    assert ours[True] >= 0.9 and real[True] >= 0.9, (ours, real)
    # Most of those are incipits barred in breves whose last breve is complete: drawn, but not the meter's length.
    real_breves, our_breves = (
        drawn_unlabelled_share([folder for folder in folders if barred_in_breves(_semantic(folder))])
        for folders in (real_folders, our_folders))
    assert real_breves >= 0.3 and abs(our_breves - real_breves) <= 0.25, (our_breves, real_breves)


def drawn_unlabelled_share(folders) -> float:
    """Share of the images that show a final barline while their label ends without one."""
    needs(len(folders), 10, "incipits barred in breves")
    return np.mean([_semantic(folder)[-1] != "barline" and ends_with_barline(
        cv2.imread(str(folder / f"{folder.name}.png"), cv2.IMREAD_GRAYSCALE)) for folder in folders])


def test_ties_are_drawn_as_the_source_has_them_and_labelled_as_primus_reads_them(real_dev_folder, real_labels):
    """The Verovio that made PrIMuS drew every tie of the source, but PrIMuS labels none whose note carries its
    duration and octave over from the notes before (pae_source.primus_ties): of the 52 ties the real sources
    draw, the real labels have 42. A model trained on images whose every tie is labelled reads the others."""
    needs(len(real_labels), 100, "incipits")
    real_music = [drawn_verovio_input((folder / "regular_pae.pae").read_text("utf-8")).split("@data:")[1]
                  for folder in sorted(real_dev_folder.iterdir()) if folder.is_dir()]
    # What lets us find PrIMuS's ties in our incipits, written with every mark: the sources write a duration or
    # an octave only where it changes (6 of the 1,373 marks of the real incipits repeat the one in force).
    assert sum(len(music) - len(as_sources_write(music)) for music in real_music) <= 12
    real_drawn = sum(music.count("+") for music in real_music)
    real_labelled = sum(tokens.count("tie") for tokens in real_labels)
    assert real_labelled < real_drawn
    rng = random.Random(13)
    ours = [semantic_to_pae(random_incipit(rng)) for _ in range(3000)]
    ours_drawn = sum(pae.count("+") for pae in ours)
    ours_labelled = sum(with_labelled_ties(pae).count("+") for pae in ours)
    assert abs(ours_drawn / len(ours) - real_drawn / len(real_music)) <= 0.08, (ours_drawn, real_drawn)
    assert abs(ours_labelled / ours_drawn - real_labelled / real_drawn) <= 0.1, (ours_labelled, real_labelled)


def undrawn_accidental_share(folders) -> float:
    """Share of the agnostic labels' note accidentals that the MEI (the image) does not print."""
    mei_ns = "{http://www.music-encoding.org/ns/mei}"
    labelled = undrawn = 0
    for folder in folders:
        agnostic_path = folder / f"{folder.name}.agnostic"
        if not agnostic_path.exists():
            continue
        agnostic = agnostic_path.read_text("utf-8").split()
        notes = list(ET.fromstring((folder / f"{folder.name}.mei").read_text("utf-8")).iter(f"{mei_ns}note"))
        note_indices = [index for index, token in enumerate(agnostic) if token.startswith(("note.", "gracenote."))]
        assert len(notes) == len(note_indices), folder.name
        for note, index in zip(notes, note_indices):
            before = index - 1
            while before >= 0 and agnostic[before].startswith("slur."):
                before -= 1
            # a note's accidental, not the last of a key signature (which follows the clef or another accidental)
            if before > 0 and agnostic[before].startswith("accidental.") and \
                    not agnostic[before - 1].startswith(("clef.", "accidental.")):
                labelled += 1
                undrawn += not (note.get("accid") or any(accid.get("accid") for accid in note.iter(f"{mei_ns}accid")))
    needs(labelled, 50, "labelled note accidentals")
    return undrawn / labelled


def test_accidentals_are_labelled_and_drawn_as_in_primus(real_dev_folder, tmp_path):
    """PrIMuS labels a note at a place altered earlier in its measure with the key's pitch and its accidental,
    which the real sources mostly leave undrawn (the alteration carries): 12 of the 84 labelled note accidentals
    of the real incipits are not in the image. A model trained on images that draw every labelled accidental
    drops those."""
    real = undrawn_accidental_share(sorted(folder for folder in real_dev_folder.iterdir() if folder.is_dir()))
    generate_corpus(tmp_path, 400, seed=9, workers=2, progress=False)
    ours = undrawn_accidental_share(sorted(folder for folder in tmp_path.iterdir() if folder.is_dir()))
    assert abs(ours - real) <= 0.08, (ours, real)


def test_png_ink_is_two_tone_and_one_bit_like_the_real_pngs(real_dev_folder, tmp_path):
    real_inks = []
    for path in sorted(real_dev_folder.glob("*/*.png")):
        image = Image.open(path)
        assert image.mode == "P" and len(image.getcolors()) == 2  # 1-bit palette: paper and one ink
        real_inks.append(min(color for _, color in Image.open(path).convert("L").getcolors()))
    generate_corpus(tmp_path, 12, seed=3, workers=2, progress=False)
    for path in sorted(tmp_path.glob("*/*.png")):
        with Image.open(path) as image:
            assert image.mode == "P" and path.read_bytes()[24] == 1  # IHDR bit depth
            tones = sorted(color for _, color in image.convert("L").getcolors())
        assert len(tones) == 2 and tones[1] == 255
        assert min(real_inks) - 5 <= tones[0] <= max(real_inks) + 5, (tones, min(real_inks), max(real_inks))
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        inside = [gray[1], gray[-2], gray[:, 1], gray[:, -2]]
        assert (border == 255).all() and all((line < 255).any() for line in inside)  # cropped to the ink, 1 pixel round


FAINT_LINE = 0.85  # a staff line this much lighter than the staff's darkest one is faded


def test_camera_damage_is_within_what_the_real_camera_primus_images_show(real_dev_folder):
    photos = sorted(glob.glob(str(real_dev_folder / "*" / "*_distorted.jpg")))
    needs(len(photos), 20, "Camera-PrIMuS photos")  # 30 in the development set
    real, ours, real_stem_ink, our_stem_ink = [], [], [], []
    for index, photo in enumerate(photos):
        clean = cv2.imread(photo.replace("_distorted.jpg", ".png"), cv2.IMREAD_GRAYSCALE)
        jpeg = camera_jpeg(clean, np.random.default_rng(index))
        with Image.open(photo) as theirs, Image.open(io.BytesIO(jpeg)) as mine:
            assert mine.mode == theirs.mode == "L"  # grayscale JPEGs
            assert mine.quantization == theirs.quantization  # the same JPEG quality
        theirs_gray = cv2.imread(photo, cv2.IMREAD_GRAYSCALE)
        mine_gray = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
        real.append((photo_measures(theirs_gray), theirs_gray.shape, clean))
        ours.append((photo_measures(mine_gray), mine_gray.shape, clean))
        real_stem_ink.append(stem_ink(theirs_gray, clean))
        our_stem_ink.append(stem_ink(mine_gray, clean))

    def spread(rows, value):
        values = [value(*row) for row in rows]
        return np.percentile(values, 10), np.median(values), np.percentile(values, 90)

    checks = {
        "blur": lambda m, shape, clean: m.blur,
        "paper": lambda m, shape, clean: m.paper,
        "ink": lambda m, shape, clean: m.ink,
        "|tilt|": lambda m, shape, clean: abs(m.tilt_degrees),
        "height growth": lambda m, shape, clean: shape[0] / clean.shape[0],
        "width growth": lambda m, shape, clean: shape[1] - clean.shape[1],
        # ink kept dark and spread gray around it, as shares of the clean PNG's ink: strokes thicken and fray
        "dark ink": lambda m, shape, clean: m.dark_pixels / (clean < 128).sum(),
        "gray ink": lambda m, shape, clean: m.gray_pixels / (clean < 128).sum(),
        "texture": lambda m, shape, clean: m.texture,
        "stroke width": lambda m, shape, clean: m.stroke_width / stroke_width(clean),
    }
    for name, value in checks.items():
        low, real_median, high = spread(real, value)
        _, our_median, our_high = spread(ours, value)
        assert low <= our_median <= high, f"{name}: our median {our_median:.2f}, real 10-90% {low:.2f}-{high:.2f}"
    # A model reads the photo scaled to its height: the staff must fill as much of it as in a real photo. A real
    # photo is as much taller than its PNG as its slant makes it (a slant of a degree, ~35 rows on a 2,000-pixel
    # staff); ours were ~6% taller at the median, with slants spread evenly up to 1.3 degrees.
    (_, real_growth, _), (_, our_growth, _) = (spread(rows, checks["height growth"]) for rows in (real, ours))
    assert abs(our_growth / real_growth - 1) <= 0.04, \
        f"height growth: our median {our_growth:.3f}, real {real_growth:.3f}"
    real_spacing = np.median([m.line_spacing for m, _, _ in real if m.line_spacing is not None])
    our_spacing = np.median([m.line_spacing for m, _, _ in ours if m.line_spacing is not None])
    assert abs(our_spacing / real_spacing - 1) <= 0.08, \
        f"staff line spacing / photo height: our median {our_spacing:.4f}, real {real_spacing:.4f}"
    # A model trained on our photos must also have seen the blurred tail of the real ones.
    (_, _, real_blur_high), (_, _, our_blur_high) = spread(real, checks["blur"]), spread(ours, checks["blur"])
    assert abs(our_blur_high - real_blur_high) <= 0.2 * real_blur_high, \
        f"blur: our 90% {our_blur_high:.2f}, real {real_blur_high:.2f}"
    # And the wide tail: in a fifth of the real photos strokes and noteheads are about twice as wide as in their
    # PNG (a model that never saw such wide heads reads quarters as halves).
    (_, _, real_width_high), (_, _, our_width_high) = (spread(rows, checks["stroke width"]) for rows in (real, ours))
    assert abs(our_width_high - real_width_high) <= 0.15 * real_width_high, \
        f"stroke width: our 90% {our_width_high:.2f}, real {real_width_high:.2f}"
    # Stems and barlines curve in the real photos (a clean engraving's are straight: 0). Photos where no tall
    # stroke survives the damage are left out.
    real_bends = [m.stroke_bend for m, _, _ in real if m.stroke_bend is not None]
    our_bends = [m.stroke_bend for m, _, _ in ours if m.stroke_bend is not None]
    assert len(real_bends) >= 0.6 * len(photos) and len(our_bends) >= 0.6 * len(photos)
    low, high = np.percentile(real_bends, [10, 90])
    assert low <= np.median(our_bends) <= high, \
        f"stroke bend: our median {np.median(our_bends):.2f}, real 10-90% {low:.2f}-{high:.2f}"
    # In about a fifth of the real photos one staff line is fainter than the others, or gone (a clean PNG's are
    # alike: 1). Two photos of ours per clean PNG, for a share that one photo more or less does not decide.
    our_faintest = [m.faintest_line for m, _, _ in ours] + [
        photo_measures(cv2.imdecode(np.frombuffer(camera_jpeg(clean, np.random.default_rng(1000 + index)), np.uint8),
                                    cv2.IMREAD_GRAYSCALE)).faintest_line for index, (_, _, clean) in enumerate(real)]
    real_share, our_share = (np.mean([m < FAINT_LINE for m in values if m is not None])
                             for values in ([m.faintest_line for m, _, _ in real], our_faintest))
    assert real_share >= 0.1 and real_share / 2 <= our_share <= 2 * real_share, \
        f"a staff line under {FAINT_LINE} of the darkest: in {our_share:.0%} of our photos, {real_share:.0%} of the real"
    # A stem of the real photos holds 2.3-3.7 pixels of full ink across (its clean PNG's: 2-3), however wide it is
    # spread: the real photos smear their strokes sideways rather than thicken them. Ours once widened the ink of a
    # fifth of the photos instead (6.4 pixels at our 90%), teaching a model solid heads that no real photo has.
    real_ink = [ink for ink in real_stem_ink if ink is not None]
    our_ink = [ink for ink in our_stem_ink if ink is not None]
    assert len(real_ink) >= 0.8 * len(photos) and len(our_ink) >= 0.8 * len(photos)
    low, high = np.percentile(real_ink, [10, 90])
    assert low <= np.median(our_ink) <= high, \
        f"stem ink: our median {np.median(our_ink):.2f}, real 10-90% {low:.2f}-{high:.2f}"
    assert np.percentile(our_ink, 90) <= 1.15 * high, \
        f"stem ink: our 90% {np.percentile(our_ink, 90):.2f}, real {high:.2f}"


def test_camera_bands_lose_the_staff_lines_as_often_and_as_wide_as_the_real_photos(real_dev_folder):
    """In 5 of the 30 real photos the clef is lost in diagonal streaks (the staff lines are gone just after the
    image's left edge), in 2 a band in the middle of the staff; a clean PNG never lacks its staff lines."""
    photos = sorted(glob.glob(str(real_dev_folder / "*" / "*_distorted.jpg")))
    needs(len(photos), 20, "Camera-PrIMuS photos")
    cleans = [cv2.imread(photo.replace("_distorted.jpg", ".png"), cv2.IMREAD_GRAYSCALE) for photo in photos]
    assert all(staff_gaps(clean) == [] for clean in cleans)
    real = [staff_gaps(cv2.imread(photo, cv2.IMREAD_GRAYSCALE)) for photo in photos]
    ours = [staff_gaps(cv2.imdecode(np.frombuffer(camera_jpeg(clean, np.random.default_rng(seed * 100 + index)),
                                                  np.uint8), cv2.IMREAD_GRAYSCALE))
            for seed in range(4) for index, clean in enumerate(cleans)]  # four photos per PNG, for steadier shares

    def share(photos_gaps, where):
        return np.mean([any(where(start) for start, _ in gaps) for gaps in photos_gaps])

    at_start, in_middle = (lambda start: start < 60), (lambda start: start >= 60)
    assert share(real, at_start) >= 0.1 and share(real, in_middle) > 0
    for name, where in (("at the start", at_start), ("in the middle", in_middle)):
        assert share(real, where) / 2 <= share(ours, where) <= 2 * share(real, where), \
            f"staff lines gone {name}: in {share(ours, where):.0%} of our photos, {share(real, where):.0%} of the real"
    real_width, our_width = (np.median([width for gaps in photos_gaps for _, width in gaps])
                             for photos_gaps in (real, ours))
    assert abs(our_width / real_width - 1) <= 0.3, \
        f"staff lines gone for {our_width} columns in ours, {real_width} in the real"
