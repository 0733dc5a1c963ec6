"""PrIMuS semantic tokens -> Plaine & Easie code, the input RISM incipits (and Verovio) use.

Every note is written with its octave and duration spelled out, so nothing depends on Plaine &
Easie's sticky values. `with_labelled_ties` gives the ties PrIMuS would have labelled: the Verovio that made
it misplaced ties after notes that carry their octave and duration over from the notes before.
A clef, key signature or meter inside the incipit is written as a change there.
Accidentals are printed as PrIMuS's labels read them: see `_MeasureWriter._pitch`. Notes of eighth
length and shorter are beamed by beat.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction

from .notation import (
    DURATIONS, KEY_SIGNATURES, SHARP_ORDER, FLAT_ORDER, Note, Rest, beat_length, dotted_length, key_alterations,
    parse_note, parse_rest,
)
from .pae_source import primus_ties

PAE_ACCIDENTAL = {1: "x", -1: "b", 0: "n"}
PAE_CLEF = {name: f"{name[0]}-{name[1]}" for name in ("G1", "G2", "C1", "C2", "C3", "C4", "C5", "F3", "F4", "F5")}
PAE_METER = {"C": "c", "C/": "c/"}
BEAMABLE = {"eighth", "sixteenth", "thirty_second", "sixty_fourth", "hundred_twenty_eighth"}


class UnsupportedToken(ValueError):
    """A semantic token that this converter does not know how to write in Plaine & Easie."""


def semantic_to_pae(tokens: list[str], final_barline: bool | None = None,
                    prints_return_to_key: Callable[[], bool] | None = None) -> str:
    """The Plaine & Easie incipit (Verovio's `@clef:/@keysig:/@timesig:/@data:` form) of a token list.

    Two habits of a source are drawn but not labelled by PrIMuS, so either way the engraving has the same labels:
    - `final_barline`: whether the source ends with a barline (`/`); by default, where the tokens end with one
      (PrIMuS labels a final barline where the last measure is full);
    - `prints_return_to_key`: asked at each note that returns to the key signature's pitch after another
      alteration of its place in the measure, whether the source prints its accidental (by default, always).
      PrIMuS labels the accidental either way.
    """
    clef, key, meter, body = _split_header(tokens)
    data = _MeasureWriter(key, meter, prints_return_to_key or (lambda: True)).write(body)
    if final_barline is not None:
        data = data.removesuffix("/") + ("/" if final_barline else "")
    timesig = PAE_METER.get(meter, meter) if meter else ""
    return f"@clef:{PAE_CLEF[clef]}\n@keysig:{_pae_key(key)}\n@timesig:{timesig}\n@data:{data}\n"


def with_labelled_ties(pae: str) -> str:
    """A `semantic_to_pae` text with only the ties that PrIMuS would label, had a source written it.

    Sources write a duration or an octave only where it changes (of the 1,373 such marks in the 129 real
    development incipits, 6 repeat the one in force), and PrIMuS labels no tie whose note has no mark of its
    own since the last barline (pae_source.primus_ties), though its image draws it. So the marks are thinned
    out as a source writes them, and the ties PrIMuS keeps there are kept here.
    """
    head, data = pae.split("@data:", 1)
    ties = iter(labelled_ties(pae))
    return head + "@data:" + "".join(char for char in data if char != "+" or next(ties))


def labelled_ties(pae: str) -> list[bool]:
    """Whether PrIMuS would label each tie (`+`) of a `semantic_to_pae` text, in order (see with_labelled_ties)."""
    as_written = as_sources_write(pae.split("@data:", 1)[1])
    labelled = primus_ties(as_written)
    kept, position = [], 0  # `labelled` is `as_written` less some "+"
    for char in as_written:
        survives = position < len(labelled) and labelled[position] == char
        position += survives
        if char == "+":
            kept.append(survives)
    return kept


_PAE_PIECE = re.compile(r"[%$@][^ ]* |=\d*|\d+\.*|'+|,+|.", re.DOTALL)


def as_sources_write(data: str) -> str:
    """The music with each duration and octave mark dropped where it repeats the one in force."""
    out, duration, octave, grace = [], None, None, False
    for piece in _PAE_PIECE.findall(data):
        if piece[0].isdigit() and not grace:
            if piece == duration:
                continue
            duration = piece
        elif piece[0] in "',":
            if piece == octave:
                continue
            octave = piece
        grace = piece in ("g", "q")  # an appoggiatura's own duration (`q8`) is kept and changes nothing
        out.append(piece)
    return "".join(out)


def _split_header(tokens: list[str]) -> tuple[str, str | None, str | None, list[str]]:
    header = {}
    index = 0
    for family in ("clef", "keySignature", "timeSignature"):
        if index < len(tokens) and tokens[index].startswith(family + "-"):
            header[family] = tokens[index].split("-", 1)[1]
            index += 1
    if header.get("clef") not in PAE_CLEF:
        raise UnsupportedToken(f"an incipit must start with one of the ten PrIMuS clefs, not {tokens[:1]}")
    if header.get("keySignature", "CM") not in KEY_SIGNATURES:
        raise UnsupportedToken(f"unknown key signature {header['keySignature']!r}")
    return header["clef"], header.get("keySignature"), header.get("timeSignature"), tokens[index:]


def _pae_key(key: str | None) -> str:
    """No key signature token or keySignature-CM: no key signature."""
    if key is None:
        return ""
    fifths = KEY_SIGNATURES[key]
    if fifths > 0:
        return "x" + SHARP_ORDER[:fifths]
    return "b" + FLAT_ORDER[: -fifths] if fifths < 0 else ""


def _pae_octave(octave: int) -> str:
    return "'" * (octave - 3) if octave >= 4 else "," * (4 - octave)


class _MeasureWriter:
    def __init__(self, key: str | None, meter: str | None, prints_return_to_key: Callable[[], bool]):
        self.in_key = key_alterations(key or "CM")
        self.prints_return_to_key = prints_return_to_key
        self.beat = beat_length(meter) if meter else Fraction(1, 4)
        self._new_measure()

    def _new_measure(self):
        self.in_force: dict[tuple[str, int], int] = {}  # alteration of each staff place so far in this measure
        self.onset = Fraction(0)
        self.beam: list[str] = []
        self.beam_beat: Fraction | None = None

    def write(self, body: list[str]) -> str:
        out: list[str] = []
        last_was_note = False
        for token in body:
            note = parse_note(token)
            rest = parse_rest(token)
            if token == "barline":
                out += self._close_beam() + ["/"]
                self._new_measure()
                continue
            if token == "tie":
                if not last_was_note:
                    raise UnsupportedToken("a tie must follow a note")
                (self.beam or out)[-1] += "+"
                last_was_note = False
                continue
            if token.startswith(("clef-", "keySignature-", "timeSignature-")):
                out += self._close_beam() + [self._change(token)]
            elif token.startswith("multirest-"):
                out += self._close_beam() + ["=" + token.split("-", 1)[1]]
            elif rest is not None:
                out += self._close_beam() + [_with_fermata(rest.fermata, self._rest(rest))]
                self.onset += dotted_length(rest.duration, rest.dots)
            elif note is not None:
                out += self._note(note)
            else:
                raise UnsupportedToken(f"no Plaine & Easie for semantic token {token!r}")
            last_was_note = note is not None and not note.grace
        return "".join(out + self._close_beam())

    def _change(self, token: str) -> str:
        """Plaine & Easie's in-line clef (%), key signature ($) or meter (@) change, ended by a space."""
        family, value = token.split("-", 1)
        if family == "clef" and value in PAE_CLEF:
            return f"%{PAE_CLEF[value]} "
        if family == "keySignature" and value in KEY_SIGNATURES:
            self.in_key = key_alterations(value)
            return f"${_pae_key(value)} "
        if family == "timeSignature":
            self.beat = beat_length(value)
            return f"@{PAE_METER.get(value, value)} "
        raise UnsupportedToken(f"no Plaine & Easie for semantic token {token!r}")

    def _note(self, note: Note) -> list[str]:
        written = _with_fermata(note.fermata, self._pitch(note))
        if note.grace:
            return self._close_beam() + [("g" if note.duration == "eighth" else "q" + self._duration(note)) + written]
        beat_index = self.onset // self.beat
        self.onset += dotted_length(note.duration, note.dots)
        written = self._duration(note) + written
        if note.duration not in BEAMABLE:
            return self._close_beam() + [written]
        closed = self._close_beam() if beat_index != self.beam_beat else []
        self.beam.append(written)
        self.beam_beat = beat_index
        return closed

    def _close_beam(self) -> list[str]:
        group, self.beam, self.beam_beat = self.beam, [], None
        return ["{" + "".join(group) + "}"] if len(group) > 1 else group

    def _duration(self, note: Note) -> str:
        return DURATIONS[note.duration][2] + "." * note.dots

    def _rest(self, rest: Rest) -> str:
        return DURATIONS[rest.duration][2] + "." * rest.dots + "-"

    def _pitch(self, note: Note) -> str:
        """Octave, printed accidental (if one is needed) and note name.

        PrIMuS labels a note without a printed accidental with the key signature's pitch, so every
        note off the key gets its accidental, also after the same one earlier in the measure; a note of
        the key where an earlier note of the measure changed its place gets one where the source prints it
        (PrIMuS's agnostic label has it either way).
        """
        place = (note.step, note.octave)
        accidental = ""
        if note.alter != self.in_key[note.step]:
            accidental = PAE_ACCIDENTAL[note.alter]
        elif note.alter != self.in_force.get(place, note.alter) and self.prints_return_to_key():
            accidental = PAE_ACCIDENTAL[note.alter]
        self.in_force[place] = note.alter
        return _pae_octave(note.octave) + accidental + note.step


def _with_fermata(fermata: bool, written: str) -> str:
    return f"({written})" if fermata else written
