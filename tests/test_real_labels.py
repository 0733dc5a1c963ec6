"""The labels are PrIMuS's own: checked token by token on the real incipits of the development set.

(a) From each real `.mei` (written by the Verovio that made PrIMuS) the converters give the real
    `.semantic` and `.agnostic` files exactly.
(b) Each real `regular_pae.pae`, engraved by this project's pipeline (today's Verovio, the corpus
    writer's options), gives the real labels for at least 97% (semantic) / 95% (agnostic) of the
    incipits; the ones that cannot match are named below with the reason.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import ENOUGH_INCIPITS, needs, require_real_dev
from supersmm_tasks.synth.agnostic import mei_to_agnostic
from supersmm_tasks.synth.engrave import FONTS, Engraver
from supersmm_tasks.synth.mei import mei_to_semantic
from supersmm_tasks.synth.notation import parse_note
from supersmm_tasks.synth.pae_source import verovio_input

# Real labels that today's Verovio cannot reproduce: a tie that the Verovio that made PrIMuS joined between
# two notes that are not neighbours (it marked every note from the last octave mark or duration up to the
# tied one, and PrIMuS's converter paired marked notes of the same pitch). PrIMuS labels a tie that no
# engraving of the source can draw, between notes of two pitches (ties_notes_of_two_pitches). The two of the
# development set:
NOT_REPRODUCIBLE = {
    "211010582-1_5_1": "`1'A+G/G+A/`: PrIMuS ties the first A to the A of the next measure, two notes on",
    "211010614-1_1_1": "`2DE+/ED+/D`: PrIMuS ties the D to the D of the next measure, past two Es",
}


def ties_notes_of_two_pitches(tokens: list[str]) -> bool:
    """Whether a semantic label has a `tie` from a note to a next note of another pitch, past any barline, clef,
    key or meter between them (see NOT_REPRODUCIBLE)."""
    def pitch(token):
        note = parse_note(token)
        return (note.step, note.alter, note.octave) if note else None

    for index, token in enumerate(tokens):
        if token != "tie" or index == 0 or pitch(tokens[index - 1]) is None:
            continue
        after = (other for other in tokens[index + 1:]
                 if other != "barline" and not other.startswith(("clef-", "keySignature-", "timeSignature-")))
        following = pitch(next(after, ""))
        if following is not None and following != pitch(tokens[index - 1]):
            return True
    return False


def not_reproducible(folder: Path) -> bool:
    return ties_notes_of_two_pitches(real_labels(folder)[0])


def read_labels(path: Path) -> list[str]:
    return path.read_text("utf-8").rstrip("\n").rstrip("\t").split("\t")


def incipit_folders(real_dev: Path) -> list[Path]:
    folders = sorted(folder for folder in real_dev.iterdir() if folder.is_dir())
    assert folders, f"no incipit folders in {real_dev}"
    return folders


def named_incipit(real_dev: Path, name: str) -> Path:
    """A named incipit of the development set; skipped where the folder holds another set of real incipits."""
    if not (real_dev / name).is_dir():
        pytest.skip(f"{name} is not in {real_dev}")
    return real_dev / name


def real_labels(folder: Path) -> tuple[list[str], list[str]]:
    return read_labels(folder / f"{folder.name}.semantic"), read_labels(folder / f"{folder.name}.agnostic")


@pytest.fixture(scope="module")
def engraved_from_pae() -> dict[str, str]:
    """Incipit id -> the MEI this project's pipeline makes from its real `regular_pae.pae`."""
    engraver = Engraver()
    return {folder.name: engraver.load(verovio_input((folder / "regular_pae.pae").read_text("utf-8")))
            for folder in incipit_folders(require_real_dev())}


def test_labels_from_the_real_mei_are_the_real_labels(real_dev):
    for folder in incipit_folders(real_dev):
        mei = (folder / f"{folder.name}.mei").read_text("utf-8")
        semantic, agnostic = real_labels(folder)
        assert mei_to_semantic(mei) == semantic, folder.name
        assert mei_to_agnostic(mei) == agnostic, folder.name


def test_labels_from_the_real_pae_engraved_here_match_real_primus(real_dev, engraved_from_pae):
    folders = incipit_folders(real_dev)
    semantic_misses, agnostic_misses = set(), set()
    for folder in folders:
        mei = engraved_from_pae[folder.name]
        semantic, agnostic = real_labels(folder)
        if mei_to_semantic(mei) != semantic:
            semantic_misses.add(folder.name)
        if mei_to_agnostic(mei) != agnostic:
            agnostic_misses.add(folder.name)
    explained = {folder.name for folder in folders if not_reproducible(folder)}
    assert semantic_misses <= explained, f"unexplained semantic misses: {semantic_misses - explained}"
    assert agnostic_misses <= explained, f"unexplained agnostic misses: {agnostic_misses - explained}"
    needs(len(folders), ENOUGH_INCIPITS, "incipits")
    assert 1 - len(semantic_misses) / len(folders) >= 0.97
    assert 1 - len(agnostic_misses) / len(folders) >= 0.95


def test_the_named_exceptions_are_still_real_misses(real_dev, engraved_from_pae):
    """The list above is no blanket tolerance: each entry is an incipit that really differs."""
    for name in NOT_REPRODUCIBLE:
        semantic, _ = real_labels(named_incipit(real_dev, name))
        assert ties_notes_of_two_pitches(semantic), name
        assert mei_to_semantic(engraved_from_pae[name]) != semantic, f"{name} now matches: drop it from the list"


@pytest.mark.parametrize("name, rule", [
    ("000051652-1_1_1", "a printed natural does not carry: the next B is the key's B flat"),
    ("000051653-1_1_1", "a whole-measure rest is multirest-1"),
    ("000051660-1_1_1", "a printed sharp does not carry: C sharp, then C"),
    ("000051779-1_1_1", "no tie where old Verovio's tie marks meet no note of the same pitch"),
    ("000100008-1_1_2", "a meter change is a timeSignature token after the barline"),
    ("000100011-1_1_1", "no final barline after an unfilled last measure"),
    ("211010586-1_10_1", "a final barline after a filled last measure, even with none in the source"),
])
def test_each_primus_rule_holds_on_the_incipit_that_shows_it(real_dev, engraved_from_pae, name, rule):
    semantic, agnostic = real_labels(named_incipit(real_dev, name))
    mei = engraved_from_pae[name]
    assert (mei_to_semantic(mei), mei_to_agnostic(mei)) == (semantic, agnostic), rule


def test_c_major_has_no_key_token(real_dev, engraved_from_pae):
    in_c_major = [folder.name for folder in incipit_folders(real_dev)
                  if not any(token.startswith("keySignature-") for token in real_labels(folder)[0])]
    if not in_c_major:
        pytest.skip(f"no incipit in C major in {real_dev}")
    for name in in_c_major:
        assert not any(token.startswith("keySignature-") for token in mei_to_semantic(engraved_from_pae[name])), name


def test_agnostic_accidentals_are_drawn_for_the_measure_in_force(real_dev, engraved_from_pae):
    # E flat major, `nBB-BBB`: a natural, then a flat for the key's B flat, then none until the measure ends
    agnostic = mei_to_agnostic(engraved_from_pae[named_incipit(real_dev, "000051652-1_1_1").name])
    measure = agnostic[agnostic.index("barline-L1", 10) + 1:]
    assert measure[:5] == ["accidental.natural-L4", "note.eighth-L4", "accidental.flat-L4", "note.eighth-L4",
                           "rest.eighth-L3"]


def test_every_multirest_is_engraved_with_its_number_as_in_primus(real_dev):
    """The Verovio that made PrIMuS wrote a one-measure rest as `<multiRest num="1">` and drew its "1" above the
    staff (labelled `digit.1-S5`); today's writes an `mRest` and draws no number, unless the engraver rewrites it."""
    engraver, checked = Engraver(), 0
    for folder in incipit_folders(real_dev):
        real_counts = re.findall(r'<multiRest\b[^>]*\bnum="(\d+)"', (folder / f"{folder.name}.mei").read_text("utf-8"))
        if not real_counts:
            continue
        _, mei = engraver.engrave(verovio_input((folder / "regular_pae.pae").read_text("utf-8")), FONTS[0], 0)
        assert "<mRest" not in mei, folder.name
        assert re.findall(r'<multiRest\b[^>]*\bnum="(\d+)"', mei) == real_counts, folder.name
        drawn_digits = [len(multirest.findall(".//*[@class='multiRestNum']/*"))
                        for multirest in ET.fromstring(engraver.toolkit.renderToSVG(1)).iter()
                        if multirest.get("class") == "multiRest"]
        assert drawn_digits == [len(count) for count in real_counts], folder.name
        checked += 1
    if not checked:
        pytest.skip(f"no incipit with a multirest in {real_dev}")
