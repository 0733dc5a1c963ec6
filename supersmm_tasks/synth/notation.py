"""Musical facts shared by the generator and the converters: durations, keys, clefs, semantic tokens.

A pitch is written as PrIMuS writes it in the semantic encoding: the sounding pitch, with the key
signature and earlier accidentals of the measure already applied (`note-Bb4_eighth` in E flat major,
whether or not a flat is printed next to the note).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

STEPS = "CDEFGAB"

# semantic name: (length in whole notes, MEI @dur, Plaine & Easie duration code)
DURATIONS: dict[str, tuple[Fraction, str, str]] = {
    "quadruple_whole": (Fraction(4), "long", "0"),
    "double_whole": (Fraction(2), "breve", "9"),
    "whole": (Fraction(1), "1", "1"),
    "half": (Fraction(1, 2), "2", "2"),
    "quarter": (Fraction(1, 4), "4", "4"),
    "eighth": (Fraction(1, 8), "8", "8"),
    "sixteenth": (Fraction(1, 16), "16", "6"),
    "thirty_second": (Fraction(1, 32), "32", "3"),
    "sixty_fourth": (Fraction(1, 64), "64", "5"),
    "hundred_twenty_eighth": (Fraction(1, 128), "128", "7"),
}
DURATION_BY_MEI = {mei: name for name, (_, mei, _) in DURATIONS.items()}

# keySignature token name: number of sharps (> 0) or flats (< 0)
KEY_SIGNATURES = {
    "CM": 0, "GM": 1, "DM": 2, "AM": 3, "EM": 4, "BM": 5, "F#M": 6, "C#M": 7,
    "FM": -1, "BbM": -2, "EbM": -3, "AbM": -4, "DbM": -5, "GbM": -6,
}
KEY_BY_FIFTHS = {fifths: name for name, fifths in KEY_SIGNATURES.items()}
SHARP_ORDER = "FCGDAEB"
FLAT_ORDER = "BEADGCF"

# clef token name: diatonic index (octave * 7 + step) of the pitch on the bottom staff line
CLEF_BOTTOM_LINE = {
    "G1": 4 * 7 + 4,  # G4
    "G2": 4 * 7 + 2,  # E4
    "C1": 4 * 7 + 0,  # C4
    "C2": 3 * 7 + 5,  # A3
    "C3": 3 * 7 + 3,  # F3
    "C4": 3 * 7 + 1,  # D3
    "C5": 2 * 7 + 6,  # B2
    "F3": 2 * 7 + 6,  # B2
    "F4": 2 * 7 + 4,  # G2
    "F5": 2 * 7 + 2,  # E2
}

ALTER_SIGN = {1: "#", -1: "b", 0: ""}
ALTER_BY_SIGN = {"#": 1, "b": -1, "": 0}

_DURATION_PATTERN = "|".join(sorted(DURATIONS, key=len, reverse=True))
_NOTE_TOKEN = re.compile(
    rf"(?P<kind>note|gracenote)-(?P<step>[A-G])(?P<sign>[#b]?)(?P<octave>\d)_"
    rf"(?P<duration>{_DURATION_PATTERN})(?P<dots>\.{{0,2}})(?P<fermata>_fermata)?"
)
_REST_TOKEN = re.compile(rf"rest-(?P<duration>{_DURATION_PATTERN})(?P<dots>\.{{0,2}})(?P<fermata>_fermata)?")


@dataclass(frozen=True)
class Note:
    step: str
    alter: int
    octave: int
    duration: str
    dots: int = 0
    fermata: bool = False
    grace: bool = False

    def token(self) -> str:
        kind = "gracenote" if self.grace else "note"
        fermata = "_fermata" if self.fermata else ""
        return f"{kind}-{self.step}{ALTER_SIGN[self.alter]}{self.octave}_{self.duration}{'.' * self.dots}{fermata}"


@dataclass(frozen=True)
class Rest:
    duration: str
    dots: int = 0
    fermata: bool = False

    def token(self) -> str:
        return f"rest-{self.duration}{'.' * self.dots}{'_fermata' if self.fermata else ''}"


def parse_note(token: str) -> Note | None:
    match = _NOTE_TOKEN.fullmatch(token)
    if match is None:
        return None
    return Note(
        step=match["step"], alter=ALTER_BY_SIGN[match["sign"]], octave=int(match["octave"]),
        duration=match["duration"], dots=len(match["dots"]), fermata=bool(match["fermata"]),
        grace=match["kind"] == "gracenote",
    )


def parse_rest(token: str) -> Rest | None:
    match = _REST_TOKEN.fullmatch(token)
    if match is None:
        return None
    return Rest(duration=match["duration"], dots=len(match["dots"]), fermata=bool(match["fermata"]))


def key_alterations(key: str) -> dict[str, int]:
    """Step name -> alteration that the key signature gives it (0 for untouched steps)."""
    fifths = KEY_SIGNATURES[key]
    order, sign = (SHARP_ORDER, 1) if fifths > 0 else (FLAT_ORDER, -1)
    touched = set(order[: abs(fifths)])
    return {step: sign if step in touched else 0 for step in STEPS}


def dotted_length(duration: str, dots: int) -> Fraction:
    base = DURATIONS[duration][0]
    return base * (2 - Fraction(1, 2**dots))


def meter_length(time_signature: str) -> Fraction:
    """Length of one measure in whole notes for a timeSignature token value ("3/4", "C", "C/")."""
    if time_signature in ("C", "C/"):  # common time (4/4) and cut time (2/2)
        return Fraction(1)
    count, unit = time_signature.split("/")
    return Fraction(int(count), int(unit))


def beat_length(time_signature: str) -> Fraction:
    """The beat that beams group notes by: dotted in compound meters (6/8, 9/8, 12/16 ...)."""
    if time_signature == "C":
        return Fraction(1, 4)
    if time_signature == "C/":
        return Fraction(1, 2)
    count, unit = (int(part) for part in time_signature.split("/"))
    if unit >= 8 and count % 3 == 0 and count > 3:
        return Fraction(3, unit)
    return Fraction(1, unit)
