"""Given Plaine & Easie (`synth --from-pae`): both spellings, PrIMuS's readings of RISM habits, and what
the labels make of constructs that the development set does not show."""
from __future__ import annotations

import pytest

from supersmm_tasks.synth.agnostic import mei_to_agnostic
from supersmm_tasks.synth.engrave import Engraver
from supersmm_tasks.synth.mei import UnsupportedMei, mei_to_semantic
from supersmm_tasks.synth.pae_source import MalformedPae, verovio_input


@pytest.fixture(scope="module")
def engraver() -> Engraver:
    return Engraver()


def semantic_of(engraver: Engraver, data: str, keysig: str = "", timesig: str = "2/4") -> list[str]:
    return mei_to_semantic(engraver.load(verovio_input(f"@clef:G-2@keysig:{keysig}@timesig:{timesig}@data:{data}")))


def test_primus_and_rism_spellings_give_the_same_verovio_input():
    primus = "%G-2@3/4$bBEAü ''4B8{EB'''C''B}/"
    rism = "@clef:G-2 @keysig:bBEA\t@timesig:3/4 @data:''4B8{EB'''C''B}/"
    expected = "@clef:G-2\n@keysig:bBEA\n@timesig:3/4\n@data:''4B8{EB'''C''B}/\n"
    assert verovio_input(primus) == verovio_input(rism) == expected
    assert verovio_input("@clef:C-1@key:xF@timesig:c@data:4C/") == "@clef:C-1\n@keysig:xF\n@timesig:c\n@data:4C/\n"


def test_bracketed_key_accidentals_count_and_the_first_of_several_meters_is_the_incipits():
    assert "@keysig:bBEAD\n" in verovio_input("%G-2@c$bBEA[D]ü 4C/")
    assert "@timesig:c\n" in verovio_input("%G-2@c; c; 3/2$ü 4C/")


def test_plaine_easie_of_primus_is_read_as_verovio_wants_it():
    assert verovio_input("%C-1@c$bBEAü =4/2-'8G/\n") == "@clef:C-1\n@keysig:bBEA\n@timesig:c\n@data:=4/2-'8G/\n"
    assert "@timesig:c\n" in verovio_input("%G-2@c; c; 3/2$ü 4''EG/")


@pytest.mark.parametrize("text, reason", [
    ("just words", "neither"),
    ("@clef:G-2@timesig:c", "no music"),
    ("@keysig:xF@data:4C/", "no clef"),
    ("@clef:G-2@clef:F-4@data:4C/", "given twice"),
])
def test_text_in_neither_spelling_is_refused_with_the_reason(text, reason):
    with pytest.raises(MalformedPae, match=reason):
        verovio_input(text)


def test_ties_that_primus_has_are_kept_and_those_old_verovio_lost_are_dropped(engraver):
    # `8C+C`: the tied note has its own duration, old Verovio tied it to the next C as written
    assert semantic_of(engraver, "8C+C4D/") == [
        "clef-G2", "timeSignature-2/4", "note-C4_eighth", "tie", "note-C4_eighth", "note-D4_quarter", "barline"]
    # `FD+/4D`: old Verovio marked F and D, PrIMuS paired no two notes of one pitch, so no tie anywhere
    data = verovio_input("%G-2@2/4$ü '4FD+/4D")
    assert "+" not in data
    assert "tie" not in mei_to_semantic(engraver.load(data))


def test_a_grace_group_gives_grace_notes_and_double_accidentals_are_refused(engraver):
    tokens = semantic_of(engraver, "qq8CDr4E-/")
    assert tokens[2:5] == ["gracenote-C4_eighth", "gracenote-D4_eighth", "note-E4_quarter"]
    assert tokens[-1] == "barline"  # grace notes take no time: E and the rest fill the 2/4 measure
    with pytest.raises(UnsupportedMei, match="double"):
        semantic_of(engraver, "4xxC4D/")
    with pytest.raises(UnsupportedMei, match="no time signature"):  # PrIMuS's converter needs one
        semantic_of(engraver, "4CD/", timesig="")


def test_a_meter_change_is_a_token_after_the_barline_in_both_encodings(engraver):
    mei = engraver.load(verovio_input("%G-2@2/4$ü 4CC/@3/4 4DDD/"))
    assert mei_to_semantic(mei)[3:6] == ["note-C4_quarter", "barline", "timeSignature-3/4"]
    assert mei_to_agnostic(mei)[5:8] == ["barline-L1", "digit.3-L4", "digit.4-L2"]


def test_a_clef_change_is_a_token_where_it_stands_and_moves_the_positions_after_it(engraver):
    mei = engraver.load(verovio_input("%G-2@2/4$ü 4CC/%F-4 4DD/"))
    assert mei_to_semantic(mei)[5:8] == ["clef-F4", "note-D4_quarter", "note-D4_quarter"]
    # D4, above middle C: the space over the first ledger line above the F clef
    assert mei_to_agnostic(mei)[6:9] == ["clef.F-L4", "note.quarter-S6", "note.quarter-S6"]
    with pytest.raises(UnsupportedMei, match="clef G3"):
        mei_to_semantic(engraver.load(verovio_input("@clef:G-3@data:4C/")))
