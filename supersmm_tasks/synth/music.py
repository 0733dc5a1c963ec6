"""A musical model of RISM-like incipits, written directly as PrIMuS semantic tokens.

An incipit is a clef, a key signature, a meter and a few measures. Each measure's rhythm is drawn by
splitting its beats (so barlines always respect the meter), then a melody walks over the staff,
mostly by step, now and then beyond the ledger lines, with chromatic accidentals, ties, grace notes,
fermatas, rests and multi-measure rests. Every token is checked against the real PrIMuS vocabulary.
"""
from __future__ import annotations

import random
from fractions import Fraction

from ..vocabulary import load_vocabulary
from .notation import (
    CLEF_BOTTOM_LINE, KEY_SIGNATURES, STEPS, Note, Rest, beat_length, dotted_length, key_alterations, meter_length,
)

CLEF_WEIGHTS = {"G2": 30, "F4": 14, "C1": 10, "C3": 10, "C4": 9, "G1": 5, "C2": 6, "C5": 5, "F3": 5, "F5": 5}
METER_WEIGHTS = {
    "C": 12, "C/": 8, "2/4": 10, "3/4": 12, "4/4": 6, "6/8": 8, "3/8": 6, "2/2": 5, "3/2": 5, "6/4": 3,
    "9/8": 3, "12/8": 3, "2/1": 3, "4/2": 2, "3/1": 2, "5/4": 1, "2/8": 1, "6/16": 1, "9/16": 1,
}
TARGET_TOKENS = (12, 38)  # an incipit is planned to about this many tokens: a few measures, as in PrIMuS
SHORTEST = Fraction(1, 64)
MULTIREST_COUNTS = (2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 19, 23, 24, 32)
LOWEST_POSITION, HIGHEST_POSITION = -6, 14  # staff positions: 0 is the bottom line, 8 the top line

# Where the melody's next pitch is missing from the vocabulary for its duration: the nearest one that is not.
_DRIFTS = [0] + [sign * distance for distance in range(1, 30) for sign in (1, -1)]
_MELODIC_STEPS = (-5, -4, -3, -2, -2, -1, -1, -1, -1, 0, 1, 1, 1, 1, 2, 2, 3, 4, 5)


class IncipitWriter:
    """Draws one incipit; `tokens()` is the only public entry point."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.vocabulary = frozenset(load_vocabulary("semantic"))
        self.clef = _weighted(rng, CLEF_WEIGHTS)
        self.key = rng.choice(sorted(KEY_SIGNATURES))
        self.meter = _weighted(rng, METER_WEIGHTS)
        self.in_key = key_alterations(self.key)
        self.position = rng.randint(1, 7)
        self.tied_from: Note | None = None  # the note that the next one continues

    def tokens(self) -> list[str]:
        key = [] if self.key == "CM" else [f"keySignature-{self.key}"]  # PrIMuS writes no key token for C major
        tokens = [f"clef-{self.clef}"] + key + [f"timeSignature-{self.meter}"]
        measures = self._measure_rhythms(target=self.rng.randint(*TARGET_TOKENS) - len(tokens))
        ends_mid_measure = self._cut_like_an_incipit(measures)
        for index, measure in enumerate(measures):
            next_measure = measures[index + 1] if index + 1 < len(measures) else None
            tokens += self._realise_measure(measure, next_measure)
            if next_measure is not None or not (ends_mid_measure or _is_multirest(measure)):
                tokens.append("barline")  # as in PrIMuS: the last measure has one only when its meter is filled
        unknown = [token for token in tokens if token not in self.vocabulary]
        if unknown:  # a bug in this model, never a user error: stop before writing a wrong label
            raise AssertionError(f"generated tokens outside the semantic vocabulary: {unknown}")
        return tokens

    # rhythm -------------------------------------------------------------------------------------
    def _measure_rhythms(self, target: int) -> list[list[Fraction] | int]:
        """A list of measures: each a list of note lengths, or an int (a multi-measure rest)."""
        measures: list[list[Fraction] | int] = []
        planned = 0
        while planned < target:
            if self.rng.random() < 0.07 and (not measures or isinstance(measures[-1], list)):
                measures.append(self.rng.choice(MULTIREST_COUNTS))
                planned += 2
                continue
            rhythm = self._measure_rhythm()
            if measures and planned + len(rhythm) > target + 8:
                rhythm = self._measure_rhythm(calm=True)
            measures.append(rhythm)
            planned += len(rhythm) + 1
        return measures

    def _cut_like_an_incipit(self, measures: list) -> bool:
        """Maybe start with an upbeat and stop mid-measure, as many incipits do; True if it stops mid-measure."""
        if isinstance(measures[0], list) and len(measures[0]) > 1 and self.rng.random() < 0.25:
            measures[0] = measures[0][self.rng.randint(1, len(measures[0]) - 1):]
        if len(measures) > 1 and isinstance(measures[-1], list) and len(measures[-1]) > 1 and self.rng.random() < 0.35:
            measures[-1] = measures[-1][: self.rng.randint(1, len(measures[-1]) - 1)]
            return True
        return False

    def _measure_rhythm(self, calm: bool = False) -> list[Fraction]:
        length, beat = meter_length(self.meter), beat_length(self.meter)
        if self.rng.random() < 0.08 and _expressible(length):
            return [length]
        beats = [beat] * int(length / beat)
        lengths: list[Fraction] = []
        while beats:
            if len(beats) >= 2 and self.rng.random() < 0.2 and _expressible(beats[0] + beats[1]):
                lengths.append(beats.pop(0) + beats.pop(0))
            else:
                lengths += self._split_beat(beats.pop(0), depth=1 if calm else 0)
        return lengths

    def _split_beat(self, length: Fraction, depth: int) -> list[Fraction]:
        """A beat (or a part of one) as note lengths: split less and less often the deeper it goes."""
        keep = 0.45 + 0.17 * depth + (0.25 if length <= Fraction(1, 16) else 0)
        if _expressible(length) and (length / 2 < SHORTEST or self.rng.random() < keep):
            return [length]
        if length.numerator == 3:  # a dotted value: long-short, or three equal parts
            long_short = [length * 2 / 3, length / 3]
            if self.rng.random() < 0.4 and all(map(_expressible, long_short)):
                return long_short
            return self._split_beat_in(length, 3, depth)
        shape = self.rng.random()
        double_dotted, dotted = [length * 7 / 8, length / 8], [length * 3 / 4, length / 4]
        if shape < 0.15 and all(map(_expressible, double_dotted)):
            return double_dotted
        if shape < 0.4 and all(map(_expressible, dotted)):
            return dotted
        return self._split_beat_in(length, 2, depth)

    def _split_beat_in(self, length: Fraction, parts: int, depth: int) -> list[Fraction]:
        pieces: list[Fraction] = []
        for _ in range(parts):
            pieces += self._split_beat(length / parts, depth + 1)
        return pieces

    # melody -------------------------------------------------------------------------------------
    def _realise_measure(self, measure: list[Fraction] | int, next_measure) -> list[str]:
        if isinstance(measure, int):
            return [f"multirest-{measure}"]
        tokens: list[str] = []
        altered_in_measure: dict[tuple[str, int], int] = {}
        for index, length in enumerate(measure):
            is_last = index + 1 == len(measure)
            next_length = measure[index + 1] if not is_last else _first_length(next_measure)
            duration, dots = _duration_of(length)
            rest = self._rest(duration, dots)
            if self.tied_from is None and rest is not None and self.rng.random() < 0.12:
                tokens.append(rest.token())
                continue
            note = self.tied_from and self._same_pitch(self.tied_from, duration, dots)
            if note is None:
                if self.rng.random() < 0.06:
                    tokens += self._grace_note_tokens()
                note = self._next_note(duration, dots, altered_in_measure)
            tokens.append(note.token())
            self.tied_from = None
            if next_length is not None and self.rng.random() < 0.08:
                next_duration, next_dots = _duration_of(next_length)
                if self._same_pitch(note, next_duration, next_dots) is not None:
                    tokens.append("tie")
                    self.tied_from = note
        return tokens

    def _rest(self, duration: str, dots: int) -> Rest | None:
        for rest in (Rest(duration, dots, fermata=self.rng.random() < 0.04), Rest(duration, dots)):
            if rest.token() in self.vocabulary:
                return rest
        return None

    def _same_pitch(self, note: Note, duration: str, dots: int) -> Note | None:
        tied = Note(note.step, note.alter, note.octave, duration, dots)
        return tied if tied.token() in self.vocabulary else None

    def _next_note(self, duration: str, dots: int, altered_in_measure: dict) -> Note:
        self.position = _clamped_walk(self.position + self.rng.choice(_MELODIC_STEPS))
        fermata = self.rng.random() < 0.04
        for drift in _DRIFTS:  # the nearest pitch that the vocabulary has with this duration
            note = self._pitch_at(self.position + drift, duration, dots, fermata, altered_in_measure)
            for candidate in (note, Note(note.step, note.alter, note.octave, duration, dots)):
                if candidate.token() in self.vocabulary:
                    altered_in_measure[(note.step, note.octave)] = note.alter
                    return candidate
        raise AssertionError(f"no note of duration {duration}{'.' * dots} in the vocabulary for clef {self.clef}")

    def _pitch_at(self, position: int, duration, dots, fermata, altered_in_measure) -> Note:
        diatonic = CLEF_BOTTOM_LINE[self.clef] + position
        step, octave = STEPS[diatonic % 7], diatonic // 7
        alter = altered_in_measure.get((step, octave), self.in_key[step])
        if self.rng.random() < 0.06:
            alter = self.rng.choice([a for a in (-1, 0, 1) if a != alter])
        return Note(step, alter, octave, duration, dots, fermata)

    def _grace_note_tokens(self) -> list[str]:
        diatonic = CLEF_BOTTOM_LINE[self.clef] + self.position + self.rng.choice((-2, -1, 1, 2))
        step, octave = STEPS[diatonic % 7], diatonic // 7
        duration = self.rng.choice(("eighth", "eighth", "sixteenth", "quarter", "thirty_second"))
        grace = Note(step, self.in_key[step], octave, duration, grace=True)
        return [grace.token()] if grace.token() in self.vocabulary else []


def random_incipit(rng: random.Random) -> list[str]:
    """One incipit as PrIMuS semantic tokens, every one of them in the real vocabulary."""
    return IncipitWriter(rng).tokens()


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    names = sorted(weights)
    return rng.choices(names, weights=[weights[name] for name in names])[0]


def _clamped_walk(position: int) -> int:
    if position < LOWEST_POSITION:
        return LOWEST_POSITION + (LOWEST_POSITION - position)
    if position > HIGHEST_POSITION:
        return HIGHEST_POSITION - (position - HIGHEST_POSITION)
    return position


def _is_multirest(measure) -> bool:
    return isinstance(measure, int) and measure > 1


def _first_length(measure) -> Fraction | None:
    return measure[0] if isinstance(measure, list) and measure else None


def _expressible(length: Fraction) -> bool:
    try:
        _duration_of(length)
    except KeyError:
        return False
    return True


def _lengths_with_many_pitches() -> dict[Fraction, tuple[str, int]]:
    """Note length -> (duration, dots) for the values that PrIMuS has with many pitches (not sixteenth..)."""
    vocabulary = load_vocabulary("semantic")
    lengths = {}
    for name in ("double_whole", "whole", "half", "quarter", "eighth", "sixteenth", "thirty_second", "sixty_fourth"):
        for dots in (0, 1, 2):
            suffix = f"_{name}{'.' * dots}"
            if sum(token.startswith("note-") and token.endswith(suffix) for token in vocabulary) >= 20:
                lengths[dotted_length(name, dots)] = (name, dots)
    return lengths


_LENGTHS = _lengths_with_many_pitches()


def _duration_of(length: Fraction) -> tuple[str, int]:
    """(duration name, dots) of a note length; KeyError if no single note has that length."""
    return _LENGTHS[length]
