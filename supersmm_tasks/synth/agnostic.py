"""MEI -> PrIMuS agnostic tokens: what is drawn, and where on the staff, without its musical meaning.

A position names a staff line (L1 bottom .. L5 top, L0 / L6 the first ledger lines) or a space
(S0 below L1 .. S5 above L5). Token order and positions follow the converter that made PrIMuS
(MEI2GraphicSymbols of the PrIMuS authors' im3 library): for a note, `fermata.above-S6`, then
`slur.end` if a tie arrives, the printed accidental, the note (`beamedRight/Both/Left<n>` inside a
beam, n = its own number of beams), its dots in a space, then `slur.start` if a tie leaves it; rests
sit on L3 (a whole rest on L4) with their dots on S3; multi-measure rest counts are written digit by
digit on S5; time signature numbers on L4 and L2. Two things are taken from what Verovio drew rather
than recomputed: the key signature positions (`KEY_SIGNATURE_POSITIONS`) and which accidentals are
printed (the MEI's written `accid`). An incipit that needs a token outside the agnostic vocabulary
gets None instead of a guess.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from ..vocabulary import load_vocabulary
from .mei import NS, XML_ID, control_targets, score_header
from .notation import CLEF_BOTTOM_LINE, DURATION_BY_MEI, KEY_SIGNATURES, STEPS

# Staff positions (0 = bottom line, 1 = first space ...) of the key signature accidentals, in drawing
# order, as Verovio 6.4.1 places them for each clef: (sharps, flats). tests/test_synth.py checks
# this table against Verovio's own SVG.
KEY_SIGNATURE_POSITIONS = {
    "G1": ((6, 3, 7, 4, 1, 5, 2), (2, 5, 1, 4, 0, 3, -1)),
    "G2": ((8, 5, 9, 6, 3, 7, 4), (4, 7, 3, 6, 2, 5, 1)),
    "C1": ((3, 0, 4, 1, 5, 2, 6), (6, 2, 5, 1, 4, 0, 3)),
    "C2": ((5, 2, 6, 3, 7, 4, 8), (1, 4, 0, 3, 6, 2, 5)),
    "C3": ((7, 4, 8, 5, 2, 6, 3), (3, 6, 2, 5, 1, 4, 0)),
    "C4": ((2, 6, 3, 7, 4, 8, 5), (5, 8, 4, 7, 3, 6, 2)),
    "C5": ((4, 1, 5, 2, 6, 3, 7), (7, 3, 6, 2, 5, 1, 4)),
    "F3": ((4, 1, 5, 2, 6, 3, 7), (7, 3, 6, 2, 5, 1, 4)),
    "F4": ((6, 3, 7, 4, 1, 5, 2), (2, 5, 1, 4, 0, 3, -1)),
    "F5": ((8, 5, 9, 6, 3, 7, 4), (4, 7, 3, 6, 9, 5, 8)),
}
ACCIDENTAL_NAMES = {"s": "sharp", "f": "flat", "n": "natural"}
BEAMS = {"eighth": 1, "sixteenth": 2, "thirty_second": 3, "sixty_fourth": 4, "hundred_twenty_eighth": 5}


class NotDerivable(Exception):
    """The incipit holds a construct whose agnostic form is not known exactly."""


def position_name(position: int) -> str:
    return f"L{position // 2 + 1}" if position % 2 == 0 else f"S{(position + 1) // 2}"


def mei_to_agnostic(mei_text: str) -> list[str] | None:
    """The agnostic tokens of an incipit, or None where some construct cannot be derived exactly."""
    try:
        tokens = _agnostic_tokens(ET.fromstring(mei_text.encode("utf-8")))
    except NotDerivable:
        return None
    vocabulary = frozenset(load_vocabulary("agnostic"))
    return tokens if all(token in vocabulary for token in tokens) else None


def _agnostic_tokens(root: ET.Element) -> list[str]:
    score = root.find(f".//{NS}score")
    clef, key, meter = score_header(score.find(f"{NS}scoreDef"))
    if clef not in KEY_SIGNATURE_POSITIONS:
        raise NotDerivable(f"clef {clef}")
    tokens = [f"clef.{clef[0]}-L{clef[1]}"] + _key_signature(clef, key) + _meter(meter)
    tie_starts, fermatas = control_targets(score)
    writer = _EventWriter(CLEF_BOTTOM_LINE[clef], tie_starts, fermatas)
    for measure in score.iter(f"{NS}measure"):
        for layer in measure.iter(f"{NS}layer"):
            for child in layer:
                tokens += writer.element(child)
        if measure.get("right") != "invis":
            tokens.append("barline-L1")
    return tokens


def _key_signature(clef: str, key: str | None) -> list[str]:
    fifths = KEY_SIGNATURES[key] if key else 0
    sharps, flats = KEY_SIGNATURE_POSITIONS[clef]
    positions, name = (sharps, "sharp") if fifths > 0 else (flats, "flat")
    return [f"accidental.{name}-{position_name(p)}" for p in positions[: abs(fifths)]]


def _meter(meter: str | None) -> list[str]:
    if meter is None:
        return []
    if meter in ("C", "C/"):
        return [f"metersign.{meter}-L3"]
    count, unit = meter.split("/")
    return [f"digit.{count}-L4", f"digit.{unit}-L2"]


class _EventWriter:
    def __init__(self, bottom_line: int, tie_starts: set[str], fermatas: set[str]):
        self.bottom_line = bottom_line
        self.tie_starts = tie_starts
        self.fermatas = fermatas
        self.tie_open_at: int | None = None  # staff position of a tie waiting for its second note

    def element(self, element: ET.Element, beam_role: str | None = None) -> list[str]:
        tag = element.tag.removeprefix(NS)
        if tag == "beam":
            notes = list(element)
            if any(note.tag != f"{NS}note" for note in notes):
                raise NotDerivable("a beam over something other than notes")
            roles = ["Right"] + ["Both"] * (len(notes) - 2) + ["Left"]
            return [token for note, role in zip(notes, roles) for token in self.element(note, role)]
        if tag == "note":
            return self._note(element, beam_role)
        if tag == "rest":
            return self._rest(element)
        if tag == "multiRest":
            return [f"digit.{digit}-S5" for digit in element.get("num")] + ["multirest-L3"]
        raise NotDerivable(f"<{tag}>")

    def _note(self, note: ET.Element, beam_role: str | None) -> list[str]:
        position = STEPS.index(note.get("pname").upper()) + 7 * int(note.get("oct")) - self.bottom_line
        where = position_name(position)
        duration = DURATION_BY_MEI[note.get("dur")]
        accid = note.find(f"{NS}accid")
        printed = note.get("accid") or (accid.get("accid") if accid is not None else None)
        tokens = ["fermata.above-S6"] if note.get(XML_ID) in self.fermatas else []
        if self.tie_open_at is not None:
            if self.tie_open_at != position:
                raise NotDerivable("a tie between notes at different staff positions")
            tokens.append(f"slur.end-{where}")
            self.tie_open_at = None
        if printed:
            tokens.append(f"accidental.{ACCIDENTAL_NAMES[printed]}-{where}")
        kind = "gracenote" if note.get("grace") else "note"
        shape = f"beamed{beam_role}{BEAMS[duration]}" if beam_role else duration
        tokens.append(f"{kind}.{shape}-{where}")
        tokens += [f"dot-{position_name(position | 1)}"] * int(note.get("dots", 0))  # a dot sits in a space
        if note.get(XML_ID) in self.tie_starts:
            tokens.append(f"slur.start-{where}")
            self.tie_open_at = position
        return tokens

    def _rest(self, rest: ET.Element) -> list[str]:
        duration = DURATION_BY_MEI[rest.get("dur")]
        fermata = ["fermata.above-S6"] if rest.get(XML_ID) in self.fermatas else []
        rest_token = f"rest.{duration}-{'L4' if duration == 'whole' else 'L3'}"
        return fermata + [rest_token] + ["dot-S3"] * int(rest.get("dots", 0))
