"""A musical model of RISM incipits as PrIMuS holds them, written directly as PrIMuS semantic tokens.

An incipit is a clef, a key signature (none at all for C major, as PrIMuS writes it), a meter and a
few measures; a third of them open with a multi-measure rest, many with a rest. Each measure is
filled event by event with durations drawn from real frequencies, an event starting only where its
length fits the beat (so sixteenths come in groups and barlines always respect the meter). The
melody moves mostly by step or repeats its note, leaps now and then, and drifts back towards the
middle of the staff; accidentals follow the key, with a few chromatic ones carried to the end of
their measure. Ties, fermatas and grace notes are rare, as in PrIMuS.

How it was fitted: every categorical choice (clef, key, meter, duration, dots, multirest length,
melodic interval) is the count seen in the 129 real incipits of the development set plus a small
pseudo-count for every value of the PrIMuS vocabulary (a Dirichlet prior), so rare symbols stay
reachable and nothing is copied from a single incipit; rates (rests, ties, fermatas, chromatic notes,
multirests, incipit length) are the real ones, rounded. `statistics.py` measures the result.
Every token is checked against the real PrIMuS vocabulary.
"""
from __future__ import annotations

import random
from fractions import Fraction

from ..vocabulary import load_vocabulary
from .notation import (
    CLEF_BOTTOM_LINE, STEPS, Note, Rest, beat_length, dotted_length, key_alterations, meter_length,
)

# Counts in the 129 real incipits; every other value of the vocabulary gets the pseudo-count.
CLEF_COUNTS = {"C1": 68, "G2": 41, "F4": 7, "C4": 5, "G1": 4, "C3": 4, "C2": 0, "C5": 0, "F3": 0, "F5": 0}
CLEF_PSEUDO_COUNT = 1.0
KEY_COUNTS = {"CM": 54, "FM": 20, "BbM": 12, "EbM": 11, "DM": 11, "GM": 9, "AM": 6, "AbM": 4, "EM": 2} | {
    key: 0 for key in ("BM", "F#M", "C#M", "DbM", "GbM")}
KEY_PSEUDO_COUNT = 0.5
METER_COUNTS = {"C": 82, "C/": 23, "3/4": 6, "6/8": 5, "2/4": 3, "2/2": 3, "3/2": 2, "12/8": 2, "9/8": 1, "6/4": 1,
                "3/1": 1} | {meter: 0 for meter in ("4/4", "3/8", "2/1", "4/2", "5/4", "2/8", "6/16", "9/16")}
METER_PSEUDO_COUNT = 0.3
# Early music in C/ (and a little in C) is often barred in breves: measures twice the meter's length. 12 of the 23
# real C/ incipits and 5 of the 81 in C are; PrIMuS labels their final barline by the meter all the same (none
# after a full breve measure), while their sources draw one.
BREVE_MEASURE_SHARE = {"C/": 12 / 23, "C": 5 / 81}
# How often each (duration, dots) is drawn where it fits the measure's grid. Fitted by simulation: starting
# from the real counts of notes and rests in the incipits barred in the meter's measures (1,782 of them) plus
# pseudo-counts (2 per plain value, 0.3 per dotted, 0.1 per double-dotted one), each weight was multiplied by
# (target / drawn share) ** 0.8 over 3,000 incipits until the drawn shares matched (TV under 0.01). Long values
# get large weights because they rarely fit; a floor of 0.003 (0.0003 for sixty-fourths, which come in runs)
# keeps every value reachable.
LENGTH_WEIGHTS = {
    ("double_whole", 1): 22.3, ("double_whole", 0): 50.0, ("whole", 1): 1.4, ("whole", 0): 1.33,
    ("half", 1): 0.518, ("half", 0): 3.86, ("quarter", 2): 0.003, ("quarter", 1): 1.17, ("quarter", 0): 3.83,
    ("eighth", 2): 0.003, ("eighth", 1): 0.23, ("eighth", 0): 3.01, ("sixteenth", 1): 0.0045, ("sixteenth", 0): 1.07,
    ("thirty_second", 1): 0.003, ("thirty_second", 0): 0.0491, ("sixty_fourth", 0): 0.0014,
}
# Incipits barred in breves are slow music, fitted the same way to their own real counts (of 226 notes and rests:
# half 94, whole 53, quarter 44, eighth 15, dotted half 9, double whole 7; drawn TV 0.02); a dotted double whole
# never fits.
BREVE_LENGTH_WEIGHTS = {
    ("double_whole", 1): 1.0, ("double_whole", 0): 3.81, ("whole", 1): 1.2, ("whole", 0): 11.3,
    ("half", 1): 2.17, ("half", 0): 12.6, ("quarter", 2): 0.018, ("quarter", 1): 0.133, ("quarter", 0): 3.11,
    ("eighth", 2): 0.0044, ("eighth", 1): 0.024, ("eighth", 0): 0.616, ("sixteenth", 1): 0.0099, ("sixteenth", 0): 0.04,
    ("thirty_second", 1): 0.0043, ("thirty_second", 0): 0.0198, ("sixty_fourth", 0): 0.0098,
}
REST_SHARE = {"whole": 0.07, "half": 0.13, "quarter": 0.13, "eighth": 0.085, "sixteenth": 0.04}
OPENING_REST_SHARE = 0.3  # the first event after the header (or after an opening multirest) is a rest
SAME_LENGTH_BONUS = 2.0  # runs of equal values, as in real melodies
# Multi-measure rests: 48 of the 129 real incipits open with one, hardly any has one later.
OPENING_MULTIREST_SHARE = 0.37
LATER_MULTIREST_SHARE = 0.01
MULTIREST_COUNTS = {1: 11, 2: 8, 3: 4, 4: 8, 5: 3, 7: 2, 8: 2, 10: 1, 11: 2, 12: 2, 13: 2, 14: 1, 15: 1, 19: 1, 23: 1,
                    24: 2}
MULTIREST_PRIOR = 1.0  # spread over every multirest of the vocabulary as 1/n
# Tokens per incipit: mean 22.6, sd 4.3 in the real ones; planned 1.4 shorter, as the last measure overshoots.
LENGTH_MEAN, LENGTH_SD, LENGTH_RANGE = 21.2, 4.3, (12, 40)
UPBEAT_SHARE = 0.25
ENDS_MID_MEASURE_SHARE = 0.45
BREVE_ENDS_MID_MEASURE_SHARE = 11 / 17  # of the real incipits barred in breves
# The image's final barline is the source's closing `/`, the label's follows the meter (mei.py). The real sources
# close all 70 incipits whose last measure is complete (as long as their other measures, labelled or not: 6 of
# them are barred in breves); of those that stop inside a measure, 5 of the 7 whose label has a final barline and
# 5 of the 52 whose label has none.
# keyed by (the last measure is complete, the label ends with a barline)
DRAWN_FINAL_BARLINE_SHARE = {(True, True): 70 / 70, (True, False): 70 / 70, (False, True): 5 / 7,
                             (False, False): 5 / 52}
# A note back at the key signature's pitch after another alteration of its place in the measure: its accidental
# is in the agnostic label, but the real sources print it for 2 of the 14 such notes.
PRINTED_RETURN_TO_KEY_SHARE = 2 / 14
# Ties drawn: 0.40 per real incipit, of which PrIMuS labels 0.31 (pae.with_labelled_ties); these shares draw 0.37,
# of which 0.29 are labelled.
TIE_SHARE_LAST_IN_MEASURE, TIE_SHARE_ELSEWHERE = 0.08, 0.015
FERMATA_SHARE = 0.004
GRACE_NOTE_SHARE = 0.003
CHROMATIC_SHARE = 0.035
# Melodic intervals in staff steps, either direction: 0 repeats the note (20% of real intervals), 1 a step.
INTERVAL_COUNTS = {0: 335, 1: 896, 2: 211, 3: 119, 4: 71, 5: 35, 6: 7, 7: 19, 8: 1, 9: 1}
INTERVAL_PSEUDO_COUNT = 1.0
# Staff positions (0 the bottom line, 8 the top one): real notes lie around 5.4, sd 2.7, from -4 to 14.
CENTRE, START_SD = 5.4, 2.0
LOWEST_POSITION, HIGHEST_POSITION = -6, 14
TOWARDS_CENTRE_PER_STEP = 0.12  # how much more likely the melody moves back towards the centre, per step away

# Where the melody's next pitch is missing from the vocabulary for its duration: the nearest one that is not.
_DRIFTS = [0] + [sign * distance for distance in range(1, 30) for sign in (1, -1)]


class IncipitWriter:
    """Draws one incipit; `tokens()` is the only public entry point."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.vocabulary = frozenset(load_vocabulary("semantic"))
        self.clef = _weighted(rng, _smoothed(CLEF_COUNTS, CLEF_PSEUDO_COUNT))
        self.key = _weighted(rng, _smoothed(KEY_COUNTS, KEY_PSEUDO_COUNT))
        self.meter = _weighted(rng, _smoothed(METER_COUNTS, METER_PSEUDO_COUNT))
        breves = self.meter in BREVE_MEASURE_SHARE and rng.random() < BREVE_MEASURE_SHARE[self.meter]
        self.measure_length = meter_length(self.meter) * (2 if breves else 1)
        self.length_choices = _BREVE_LENGTH_CHOICES if breves else _LENGTH_CHOICES
        self.ends_mid_measure_share = BREVE_ENDS_MID_MEASURE_SHARE if breves else ENDS_MID_MEASURE_SHARE
        self.ends_with_full_measure: bool | None = None  # known once tokens() has run
        self.in_key = key_alterations(self.key)
        self.position = _clamped(round(rng.gauss(CENTRE, START_SD)))
        self.tied_from: Note | None = None  # the note that the next one continues

    def tokens(self) -> list[str]:
        key = [] if self.key == "CM" else [f"keySignature-{self.key}"]  # PrIMuS writes no key token for C major
        tokens = [f"clef-{self.clef}"] + key + [f"timeSignature-{self.meter}"]
        target = min(max(round(self.rng.gauss(LENGTH_MEAN, LENGTH_SD)), LENGTH_RANGE[0]), LENGTH_RANGE[1])
        measures = self._measures(target - len(tokens))
        ends_mid_measure = self._cut_like_an_incipit(measures)
        for index, measure in enumerate(measures):
            next_measure = measures[index + 1] if index + 1 < len(measures) else None
            tokens += self._realise_measure(measure, next_measure, opening=index == 0 or isinstance(measures[index - 1], int))
            if next_measure is not None or _fills(measure, meter_length(self.meter)):
                tokens.append("barline")  # as in PrIMuS: the last measure has one only when its meter is filled
        self.ends_with_full_measure = not ends_mid_measure and not _is_multirest(measures[-1])
        unknown = [token for token in tokens if token not in self.vocabulary]
        if unknown:  # a bug in this model, never a user error: stop before writing a wrong label
            raise AssertionError(f"generated tokens outside the semantic vocabulary: {unknown}")
        return tokens

    # rhythm -------------------------------------------------------------------------------------
    def _measures(self, target: int) -> list[list[Fraction] | int]:
        """A list of measures: each a list of event lengths, or an int (a multi-measure rest)."""
        measures: list[list[Fraction] | int] = []
        planned = 0
        if self.rng.random() < OPENING_MULTIREST_SHARE:
            measures.append(self._multirest_count())
            planned += 2
        while planned < target:
            if self.rng.random() < LATER_MULTIREST_SHARE and measures and isinstance(measures[-1], list):
                measures.append(self._multirest_count())
                planned += 2
                continue
            rhythm = self._measure_rhythm()
            measures.append(rhythm)
            planned += len(rhythm) + 1
        return measures

    def _multirest_count(self) -> int:
        return int(_weighted(self.rng, _MULTIREST_WEIGHTS))

    def _cut_like_an_incipit(self, measures: list) -> bool:
        """Maybe start with an upbeat and stop mid-measure, as many incipits do; True if it stops mid-measure."""
        if isinstance(measures[0], list) and len(measures[0]) > 1 and self.rng.random() < UPBEAT_SHARE:
            measures[0] = measures[0][self.rng.randint(1, len(measures[0]) - 1):]
        last = measures[-1]
        can_cut = len(measures) > 1 and isinstance(last, list) and len(last) > 1
        if can_cut and self.rng.random() < self.ends_mid_measure_share:
            measures[-1] = last[: self.rng.randint(1, len(last) - 1)]
            return True
        return False

    def _measure_rhythm(self) -> list[Fraction]:
        """Event lengths that fill one measure, each starting on a multiple of min(its length, the beat)."""
        length, beat = _ticks(self.measure_length), _ticks(beat_length(self.meter))
        lengths: list[Fraction] = []
        onset = 0
        while onset < length:
            previous = lengths[-1] if lengths else None
            options = {
                value: weight * (SAME_LENGTH_BONUS if value == previous else 1)
                for value, ticks, undotted, weight in self.length_choices
                if ticks <= length - onset and onset % min(undotted, beat) == 0
            }
            if not options:  # nothing fits the grid (an odd meter): the shortest value that fits
                options = {min(value for value, ticks, _, _ in self.length_choices if ticks <= length - onset): 1.0}
            value = _weighted(self.rng, options)
            lengths.append(value)
            onset += _ticks(value)
        return lengths

    # melody -------------------------------------------------------------------------------------
    def _realise_measure(self, measure: list[Fraction] | int, next_measure, opening: bool) -> list[str]:
        if isinstance(measure, int):
            return [f"multirest-{measure}"]
        tokens: list[str] = []
        for index, length in enumerate(measure):
            is_last = index + 1 == len(measure)
            next_length = measure[index + 1] if not is_last else _first_length(next_measure)
            duration, dots = _duration_of(length)
            rest = self._rest(duration, dots)
            rest_share = OPENING_REST_SHARE if opening and index == 0 else REST_SHARE.get(duration, 0.0)
            if self.tied_from is None and rest is not None and self.rng.random() < rest_share:
                tokens.append(rest.token())
                continue
            note = self.tied_from and self._same_pitch(self.tied_from, duration, dots)
            if note is None:
                if self.rng.random() < GRACE_NOTE_SHARE:
                    tokens += self._grace_note_tokens()
                note = self._next_note(duration, dots)
            tokens.append(note.token())
            self.tied_from = None
            tie_share = TIE_SHARE_LAST_IN_MEASURE if is_last else TIE_SHARE_ELSEWHERE
            if next_length is not None and self.rng.random() < tie_share:
                next_duration, next_dots = _duration_of(next_length)
                if self._same_pitch(note, next_duration, next_dots) is not None:
                    tokens.append("tie")
                    self.tied_from = note
        return tokens

    def _rest(self, duration: str, dots: int) -> Rest | None:
        for rest in (Rest(duration, dots, fermata=self.rng.random() < FERMATA_SHARE), Rest(duration, dots)):
            if rest.token() in self.vocabulary:
                return rest
        return None

    def _same_pitch(self, note: Note, duration: str, dots: int) -> Note | None:
        tied = Note(note.step, note.alter, note.octave, duration, dots)
        return tied if tied.token() in self.vocabulary else None

    def _next_note(self, duration: str, dots: int) -> Note:
        self.position = _clamped(self.position + self._interval())
        fermata = self.rng.random() < FERMATA_SHARE
        for drift in _DRIFTS:  # the nearest pitch that the vocabulary has with this duration
            note = self._pitch_at(self.position + drift, duration, dots, fermata)
            for candidate in (note, Note(note.step, note.alter, note.octave, duration, dots)):
                if candidate.token() in self.vocabulary:
                    return candidate
        raise AssertionError(f"no note of duration {duration}{'.' * dots} in the vocabulary for clef {self.clef}")

    def _interval(self) -> int:
        """Staff steps to the next note: mostly a step or the same note, more often back towards the centre."""
        size = int(_weighted(self.rng, _INTERVAL_WEIGHTS))
        away = self.position - CENTRE
        towards = min(0.95, 0.5 + TOWARDS_CENTRE_PER_STEP * abs(away))
        direction = -1 if away > 0 else 1
        return size * (direction if self.rng.random() < towards else -direction)

    def _pitch_at(self, position: int, duration, dots, fermata) -> Note:
        """The note at a staff position: the key's pitch, or now and then another alteration. As PrIMuS labels it, an
        alteration does not carry to later notes of its measure (mei.py): a note back at an altered place is the
        key's pitch (14 of 14 such notes of the real incipits), usually drawn without an accidental (pae.py)."""
        diatonic = CLEF_BOTTOM_LINE[self.clef] + position
        step, octave = STEPS[diatonic % 7], diatonic // 7
        alter = self.in_key[step]
        if self.rng.random() < CHROMATIC_SHARE:
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


def drawn_final_barline(rng: random.Random, ends_with_full_measure: bool, tokens: list[str]) -> bool:
    """Whether the source of an incipit closes it with a barline (see DRAWN_FINAL_BARLINE_SHARE)."""
    return rng.random() < DRAWN_FINAL_BARLINE_SHARE[(ends_with_full_measure, tokens[-1] == "barline")]


def printed_return_to_key(rng: random.Random) -> bool:
    """Whether the source prints the accidental of a note back at the key's pitch (PRINTED_RETURN_TO_KEY_SHARE)."""
    return rng.random() < PRINTED_RETURN_TO_KEY_SHARE


def _smoothed(counts: dict, pseudo_count: float) -> dict:
    return {value: count + pseudo_count for value, count in counts.items()}


def _weighted(rng: random.Random, weights: dict):
    """One key of `weights`, drawn in proportion to its value (dicts keep their order, so draws repeat)."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _clamped(position: int) -> int:
    return min(max(position, LOWEST_POSITION), HIGHEST_POSITION)


def _fills(measure: list[Fraction] | int, length: Fraction) -> bool:
    """Whether a measure's events add up to `length`, as PrIMuS's converter counts them: a multirest of n measures
    as n meters, so a one-measure rest fills it and a longer one never does."""
    return measure == 1 if isinstance(measure, int) else sum(measure) == length


def _is_multirest(measure) -> bool:
    return isinstance(measure, int) and measure > 1


def _first_length(measure) -> Fraction | None:
    return measure[0] if isinstance(measure, list) and measure else None


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


TICKS_PER_WHOLE = 64  # lengths are counted in sixty-fourths while a measure is filled: Fractions are slow


def _ticks(length: Fraction) -> int:
    return int(length * TICKS_PER_WHOLE)


def _length_choices(weights: dict) -> list[tuple[Fraction, int, int, float]]:
    """(length, its ticks, the ticks of its undotted value, weight), in a fixed order."""
    return [(length, _ticks(length), _ticks(dotted_length(name, 0)), weights[(name, dots)])
            for length, (name, dots) in sorted(_LENGTHS.items())]


_LENGTH_CHOICES = _length_choices(LENGTH_WEIGHTS)
_BREVE_LENGTH_CHOICES = _length_choices(BREVE_LENGTH_WEIGHTS)
_MULTIREST_WEIGHTS = {
    count: MULTIREST_COUNTS.get(count, 0) + MULTIREST_PRIOR / count
    for count in (int(token.split("-")[1]) for token in load_vocabulary("semantic") if token.startswith("multirest-"))
}
_INTERVAL_WEIGHTS = _smoothed(INTERVAL_COUNTS, INTERVAL_PSEUDO_COUNT)


def _duration_of(length: Fraction) -> tuple[str, int]:
    """(duration name, dots) of a note length; KeyError if no single note has that length."""
    return _LENGTHS[length]
