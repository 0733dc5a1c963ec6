"""PrIMuS's labels from the symbols a staff draws: the two labelling rules a model cannot see on the image.

A PrIMuS image shows every tie and every accidental of its source, but its agnostic label leaves some ties out
and adds some naturals (both checked on the real development set, tests/test_labelling.py):

- PrIMuS labels a tie only where its note carries a duration or octave mark of its own in the source
  (synth/pae.py `with_labelled_ties`): the Verovio that made PrIMuS misplaced the others;
- a note drawn plain on a staff place that an earlier accidental of its measure altered is labelled with the
  key signature's accidental for that place (usually a natural), though none is printed.

So this project's corpus writes, beside each PrIMuS label `<id>.agnostic`, the symbols as drawn
(`<id>.drawn.agnostic`), and networks learn those; `primus_labels` turns their reading into PrIMuS's label.
On PrIMuS's own labels it changes nothing but the rare tie that a source marked twice.
"""
from __future__ import annotations

import re

from .agnostic_to_semantic import (
    ALTERATIONS, agnostic_to_semantic, cancelled_key_length, key_change_at, staff_position,
)
from .errors import SupersmmError
from .synth import pae
from .synth.agnostic import ACCIDENTAL_NAMES
from .synth.notation import CLEF_BOTTOM_LINE, KEY_BY_FIFTHS, STEPS, key_alterations

_PLACED = re.compile(r"^(?P<symbol>.*)-(?P<place>[LS]-?\d+)$")


def read_as(reading: list[str], encoding: str) -> list[str]:
    """An agnostic network's reading as the tokens of `encoding`: PrIMuS's agnostic label, or the music it
    shows (agnostic_to_semantic, leaving out what cannot be read)."""
    labels = primus_labels(reading)
    return labels if encoding == "agnostic" else agnostic_to_semantic(labels, strict=False)


def primus_labels(drawn: list[str]) -> list[str]:
    """The agnostic tokens PrIMuS labels a staff with, from the agnostic tokens of what it draws."""
    return with_labelled_naturals(with_labelled_ties(drawn))


def with_labelled_ties(drawn: list[str]) -> list[str]:
    """The tokens less the ties PrIMuS leaves unlabelled. Where the reading cannot be written as music, or its
    tie marks do not pair up, every tie is kept: the rule needs the durations and octaves around each tie."""
    starts = [index for index, token in enumerate(drawn) if token.startswith("slur.start-")]
    ends = [index for index, token in enumerate(drawn) if token.startswith("slur.end-")]
    if not starts:
        return drawn
    try:
        music = pae.semantic_to_pae(agnostic_to_semantic(drawn, strict=False))
    except (SupersmmError, KeyError, ValueError):  # pae.UnsupportedToken is a ValueError
        return drawn
    kept = pae.labelled_ties(music)
    if not len(starts) == len(ends) == len(kept):
        return drawn
    dropped = {index for tie, keep in enumerate(kept) if not keep for index in (starts[tie], ends[tie])}
    return [token for index, token in enumerate(drawn) if index not in dropped]


def with_labelled_naturals(drawn: list[str]) -> list[str]:
    """The tokens with the key's accidental labelled before each plain note whose staff place an earlier
    accidental of the measure altered otherwise (the rule of synth/agnostic.py, on what is drawn)."""
    out, index = [], 0
    clef = "G2"
    if drawn and drawn[0].startswith("clef."):
        clef = _clef(drawn[0], clef)
        out.append(drawn[0])
        index = 1
    fifths = 0
    while index < len(drawn) and drawn[index].startswith("accidental."):  # the key signature
        fifths += 1 if drawn[index].startswith("accidental.sharp") else -1
        out.append(drawn[index])
        index += 1
    key = KEY_BY_FIFTHS.get(fifths, "CM")
    in_key = key_alterations(key)
    in_force: dict[int, int] = {}  # staff position -> alteration, this measure
    printed_at = None  # the staff position of an accidental printed just before a note
    while index < len(drawn):
        token = drawn[index]
        placed = _PLACED.match(token)
        if token.startswith("clef."):
            clef = _clef(token, clef)
        elif token.startswith("barline"):
            in_force = {}
            if change := key_change_at(drawn, index + 1, clef):  # a key change after the barline
                key, key_accidentals = change
                in_key = key_alterations(key)
                out += drawn[index:index + 1 + key_accidentals]
                index += 1 + key_accidentals
                continue
            if naturals := cancelled_key_length(drawn, index + 1, clef, key):  # a change to C major: not labelled
                key, in_key = "CM", key_alterations("CM")
                out.append(token)
                index += 1 + naturals
                continue
        elif token.startswith("accidental.") and placed:
            printed_at = staff_position(placed["place"])
            in_force[printed_at] = ALTERATIONS[placed["symbol"].split(".")[1]]
        elif token.startswith(("note.", "gracenote.")) and placed:
            position = staff_position(placed["place"])
            key_alteration = in_key[STEPS[(position + CLEF_BOTTOM_LINE[clef]) % 7]]
            if printed_at != position and in_force.get(position, key_alteration) != key_alteration:
                out.append(f"accidental.{ACCIDENTAL_NAMES[key_alteration]}-{placed['place']}")
                in_force[position] = key_alteration
            printed_at = None
        out.append(token)
        index += 1
    return out


def _clef(token: str, otherwise: str) -> str:
    placed = _PLACED.match(token)
    clef = token[5] + placed["place"][1:] if placed else otherwise
    return clef if clef in CLEF_BOTTOM_LINE else otherwise
