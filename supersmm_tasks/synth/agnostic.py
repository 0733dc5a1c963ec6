"""MEI -> PrIMuS agnostic tokens: what is drawn, and where on the staff, without its musical meaning.

A position names a staff line (L1 bottom .. L5 top, L0 / L6 the first ledger lines) or a space
(S0 below L1 .. S5 above L5). Token order and positions follow the converter that made PrIMuS
(MEI2GraphicSymbols of the PrIMuS authors' im3 library), checked on real PrIMuS files
(tests/test_real_labels.py): for a note, `fermata.above-S6`, then `slur.end` if a tie arrives, the
accidental, the note (`beamedRight/Both/Left<n>` inside a beam, n = its own number of beams), its
dots in a space, then `slur.start` if a tie leaves it; rests sit on L3 (a whole rest on L4) with
their dots on S3; multi-measure rest counts are written digit by digit on S5; time signature
numbers on L4 and L2, also where the meter changes after a barline; a key change after a barline is the
new key's accidentals, as at the start (none for C major: the converter labels no naturals that cancel the
old key, though Verovio draws them, and the symbols as drawn have them); a clef change is drawn where it
stands and moves the positions after it.

Which accidentals are drawn is decided the way an engraver does, from the semantic pitches (see
mei.py), not from what Verovio printed: a note gets one when its alteration differs from the one in
force at its staff place (the key signature, or the last note at that place in the measure). So a
B flat after a printed natural in E flat major gets `accidental.flat`, as in PrIMuS. The key
signature positions are those Verovio draws (`KEY_SIGNATURE_POSITIONS`).
"""
from __future__ import annotations

from .mei import ClefChange, Event, KeyChange, MeterChange, MultiRest, read_incipit
from .notation import CLEF_BOTTOM_LINE, KEY_SIGNATURES, STEPS, Note, Rest, key_alterations

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
ACCIDENTAL_NAMES = {1: "sharp", -1: "flat", 0: "natural"}
BEAMS = {"eighth": 1, "sixteenth": 2, "thirty_second": 3, "sixty_fourth": 4, "hundred_twenty_eighth": 5}


def position_name(position: int) -> str:
    return f"L{position // 2 + 1}" if position % 2 == 0 else f"S{(position + 1) // 2}"


def mei_to_agnostic(mei_text: str, drawn: bool = False) -> list[str]:
    """PrIMuS's agnostic label of an MEI; with `drawn`, the symbols as drawn: an accidental only where the MEI
    prints one (labelling.py gives PrIMuS's label back from them)."""
    incipit = read_incipit(mei_text)
    tokens = [_clef(incipit.clef)] + _key_signature(incipit.clef, incipit.key)
    tokens += _meter(incipit.meter)
    writer = _EventWriter(incipit.clef, incipit.key or "CM", drawn)
    for measure in incipit.measures:
        writer.new_measure()
        for event in measure.events:
            tokens += writer.event(event)
        tokens += ["barline-L1"] if measure.barline else []
    return tokens


def _clef(clef: str) -> str:
    return f"clef.{clef[0]}-L{clef[1]}"


def _key_signature(clef: str, key: str | None, drawn_as: str | None = None) -> list[str]:
    """The accidentals of a key signature where `clef` draws them (`drawn_as="natural"`: the naturals cancelling it)."""
    fifths = KEY_SIGNATURES[key] if key else 0
    sharps, flats = KEY_SIGNATURE_POSITIONS[clef]
    positions, name = (sharps, "sharp") if fifths > 0 else (flats, "flat")
    return [f"accidental.{drawn_as or name}-{position_name(p)}" for p in positions[: abs(fifths)]]


def _meter(meter: str) -> list[str]:
    if meter in ("C", "C/"):
        return [f"metersign.{meter}-L3"]
    count, unit = meter.split("/")
    return [f"digit.{count}-L4", f"digit.{unit}-L2"]


class _EventWriter:
    def __init__(self, clef: str, key: str, drawn: bool):
        self.clef = clef
        self.key = key
        self.in_key = key_alterations(key)
        self.drawn = drawn
        self.in_force: dict[tuple[str, int], int] = {}  # alteration at each staff place, this measure

    def new_measure(self) -> None:
        self.in_force = {}

    def event(self, event: Event) -> list[str]:
        symbol = event.symbol
        if isinstance(symbol, Note):
            return self._note(symbol, event)
        if isinstance(symbol, Rest):
            rest_token = f"rest.{symbol.duration}-{'L4' if symbol.duration == 'whole' else 'L3'}"
            return (["fermata.above-S6"] if symbol.fermata else []) + [rest_token] + ["dot-S3"] * symbol.dots
        if isinstance(symbol, MultiRest):
            return [f"digit.{digit}-S5" for digit in str(symbol.count)] + ["multirest-L3"]
        if isinstance(symbol, MeterChange):
            return _meter(symbol.meter)
        if isinstance(symbol, KeyChange):
            if self.drawn and symbol.key == "CM":  # Verovio draws naturals where the old key's accidentals were
                tokens = _key_signature(self.clef, self.key, drawn_as="natural")
            else:
                tokens = _key_signature(self.clef, symbol.key)
            self.key, self.in_key = symbol.key, key_alterations(symbol.key)
            return tokens
        if isinstance(symbol, ClefChange):
            self.clef = symbol.clef
            return [_clef(symbol.clef)]
        raise TypeError(f"no agnostic form for {symbol!r}")

    def _note(self, note: Note, event: Event) -> list[str]:
        position = STEPS.index(note.step) + 7 * note.octave - CLEF_BOTTOM_LINE[self.clef]
        where = position_name(position)
        tokens = ["fermata.above-S6"] if note.fermata else []
        if event.tie_ends:
            tokens.append(f"slur.end-{where}")
        place = (note.step, note.octave)
        labelled = not self.drawn and note.alter != self.in_force.get(place, self.in_key[note.step])
        if event.accidental_printed or labelled:
            tokens.append(f"accidental.{ACCIDENTAL_NAMES[note.alter]}-{where}")
        self.in_force[place] = note.alter
        kind = "gracenote" if note.grace else "note"
        shape = f"beamed{event.beam_role}{BEAMS.get(note.duration, 0)}" if event.beam_role else note.duration
        tokens.append(f"{kind}.{shape}-{where}")
        tokens += [f"dot-{position_name(position | 1)}"] * note.dots  # a dot sits in a space
        if event.tie_starts:
            tokens.append(f"slur.start-{where}")
        return tokens
