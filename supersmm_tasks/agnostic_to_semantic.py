"""Agnostic tokens -> semantic tokens: what a staff says musically, from what is drawn on it.

A model trained on agnostic labels (a symbol and its place on the staff) learns far faster than one trained
on semantic labels, where one token joins a pitch that depends on a clef and a key far to its left with a
duration. The agnostic reading holds everything the semantic one needs, so it is turned into semantic
tokens by the rules an engraver reads a staff with, the inverse of synth/agnostic.py:

- the clef fixes the pitch of each line and space; a clef change moves them from where it stands;
- the accidentals between the clef and the meter are the key signature (C major has no key token);
- a note's alteration is its own accidental, else the one in force at its staff place: the last
  accidental at that place in the measure, else the key signature's;
- a note's duration is its head's, or its number of beams inside a beam; dots follow it;
- `slur.start` after a note is a `tie` (its `slur.end` before the next note says it again);
- a fermata precedes its note;
- digits on S5 before `multirest` count its measures; digits on L4 and L2 are a meter.

Checked on the real PrIMuS development set: the real `.agnostic` of each incipit gives its real
`.semantic` (tests/test_agnostic_to_semantic.py).
"""
from __future__ import annotations

import re

from .errors import SupersmmError
from .synth.agnostic import BEAMS
from .synth.notation import CLEF_BOTTOM_LINE, KEY_BY_FIFTHS, KEY_SIGNATURES, STEPS, Note, Rest, key_alterations

_TOKEN = re.compile(r"(?P<symbol>[a-z]+)(?:\.(?P<kind>[A-Za-z0-9_/]+))?-(?P<place>[LS]-?\d+)")
_BEAMED = re.compile(r"beamed(?:Right|Both|Left)(?P<beams>\d)")
DURATION_BY_BEAMS = {beams: duration for duration, beams in BEAMS.items()}
ALTERATIONS = {"sharp": 1, "flat": -1, "natural": 0}


def staff_position(place: str) -> int:
    """0 for the bottom line L1, 1 for the space above it (S1), -1 for the space below (S0) ..."""
    number = int(place[1:])
    return 2 * (number - 1) if place[0] == "L" else 2 * number - 1


def agnostic_to_semantic(tokens: list[str], strict: bool = True) -> list[str]:
    """The semantic tokens of a staff read as `tokens`; SupersmmError naming the first token that cannot be read.

    strict=False leaves out the tokens that cannot be read instead: how a model's reading, which may be wrong
    in places, becomes the music it most likely shows (each token left out then counts as one error).
    """
    return _Reader(tokens, strict).read()


def as_semantic(tokens: list[str], encoding: str) -> list[str]:
    """A staff read in `encoding` as semantic tokens: the music a score is written from."""
    return tokens if encoding == "semantic" else agnostic_to_semantic(tokens)


class _Reader:
    def __init__(self, tokens: list[str], strict: bool = True):
        self.tokens = tokens
        self.strict = strict
        self.out: list[str] = []
        self.bottom_line = CLEF_BOTTOM_LINE["G2"]
        self.in_key = key_alterations("CM")
        self.in_force: dict[int, int] = {}  # diatonic index -> alteration, this measure
        self.pending_accidental: int | None = None
        self.pending_fermata = False
        self.pending_digits: list[str] = []
        self.meter_digits: list[str] = []
        self.heading = True  # between the first clef and the first meter or note: accidentals are the key

    def read(self) -> list[str]:
        for number, token in enumerate(self.tokens, 1):  # numbered from 1, as score.py names semantic tokens
            match = _TOKEN.fullmatch(token)
            if match is None:
                if self.strict:
                    raise SupersmmError(f"token {number} {token!r}: not an agnostic token")
                continue
            try:
                self._read(match)
            except (KeyError, ValueError, IndexError):
                if self.strict:
                    raise SupersmmError(f"token {number} {token!r}: cannot be read here") from None
        try:
            self._flush_meter()
        except ValueError:
            if self.strict:
                raise SupersmmError(f"the meter's digits {' '.join(self.tokens[-2:])!r} do not make a meter") from None
        return self.out

    def _read(self, match) -> None:
        symbol, kind, place = match["symbol"], match["kind"], match["place"]
        if symbol != "digit":
            self._flush_meter()
        if symbol == "barline":
            self.out.append("barline")
            self.in_force = {}
        elif symbol == "clef":
            self._clef(kind, place)
        elif symbol == "accidental":
            if self.heading and self.out and self.out[-1].startswith(("clef-", "keySignature-")):
                self._key_accidental(kind)
            else:
                self.pending_accidental = ALTERATIONS[kind]
        elif symbol == "digit":
            (self.pending_digits if place == "S5" else self.meter_digits).append(kind)
        elif symbol == "metersign":
            self.heading = False
            self.out.append(f"timeSignature-{kind}")
        elif symbol == "multirest":
            self.out.append(f"multirest-{''.join(self.pending_digits)}")
            self.pending_digits = []
        elif symbol in ("note", "gracenote"):
            self._note(symbol == "gracenote", kind, place)
        elif symbol == "rest":
            self._rest(kind)
        elif symbol == "dot":
            self._dot()
        elif symbol == "fermata":
            self.pending_fermata = True
        elif symbol == "slur":
            if kind == "start":  # `slur.end` before the next note says the same again
                self.out.append("tie")
        else:
            raise ValueError(symbol)

    def _clef(self, kind: str, place: str) -> None:
        clef = f"{kind}{place[1:]}"
        self.bottom_line = CLEF_BOTTOM_LINE[clef]
        self.out.append(f"clef-{clef}")

    def _key_accidental(self, kind: str) -> None:
        more = self.out[-1].startswith("keySignature-")  # one more accidental of the same key signature
        fifths = KEY_SIGNATURES[self.out[-1].removeprefix("keySignature-")] if more else 0
        key = KEY_BY_FIFTHS[fifths + (1 if kind == "sharp" else -1)]
        if more:
            self.out.pop()
        self.out.append(f"keySignature-{key}")
        self.in_key = key_alterations(key)

    def _flush_meter(self) -> None:
        digits, self.meter_digits = self.meter_digits, []
        if digits:
            count, unit = digits
            self.out.append(f"timeSignature-{count}/{unit}")
            self.heading = False

    def _note(self, grace: bool, kind: str, place: str) -> None:
        self.heading = False
        beamed = _BEAMED.fullmatch(kind)
        duration = DURATION_BY_BEAMS.get(int(beamed["beams"]), "quarter") if beamed else kind
        index = self.bottom_line + staff_position(place)
        step, octave = STEPS[index % 7], index // 7
        if self.pending_accidental is not None:
            self.in_force[index] = self.pending_accidental
        alter = self.in_force.get(index, self.in_key[step])
        note = Note(step=step, alter=alter, octave=octave, duration=duration, fermata=self.pending_fermata,
                    grace=grace)
        self.out.append(note.token())
        self.pending_accidental, self.pending_fermata = None, False

    def _rest(self, duration: str) -> None:
        self.heading = False
        self.out.append(Rest(duration=duration, fermata=self.pending_fermata).token())
        self.pending_fermata = False

    def _dot(self) -> None:
        last = self.out[-1]
        if not last.startswith(("note-", "gracenote-", "rest-")):
            raise ValueError("a dot after no note or rest")
        if last.endswith("_fermata"):
            self.out[-1] = last.removesuffix("_fermata") + "._fermata"
        else:
            self.out[-1] = last + "."
