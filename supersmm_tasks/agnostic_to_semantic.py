"""Agnostic tokens -> semantic tokens: what a staff says musically, from what is drawn on it.

A model trained on agnostic labels (a symbol and its place on the staff) learns far faster than one trained
on semantic labels, where one token joins a pitch that depends on a clef and a key far to its left with a
duration. The agnostic reading holds everything the semantic one needs, so it is turned into semantic
tokens by the rules an engraver reads a staff with, the inverse of synth/agnostic.py:

- the clef fixes the pitch of each line and space; a clef change moves them from where it stands;
- the accidentals between the clef and the meter are the key signature (C major has no key token);
  after a barline, sharps or flats where the clef in force draws a key's are a key change (a single
  one before a note at its own place is that note's accidental; a change to C major draws nothing,
  so it cannot be read);
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
from typing import NamedTuple

from .errors import SupersmmError
from .synth.agnostic import BEAMS, KEY_SIGNATURE_POSITIONS
from .synth.notation import CLEF_BOTTOM_LINE, KEY_BY_FIFTHS, KEY_SIGNATURES, STEPS, Note, Rest, key_alterations

_TOKEN = re.compile(r"(?P<symbol>[a-z]+)(?:\.(?P<kind>[A-Za-z0-9_/]+))?-(?P<place>[LS]-?\d+)")
_BEAMED = re.compile(r"beamed(?:Right|Both|Left)(?P<beams>\d)")
DURATION_BY_BEAMS = {beams: duration for duration, beams in BEAMS.items()}
ALTERATIONS = {"sharp": 1, "flat": -1, "natural": 0}


class _Token(NamedTuple):
    """A token of the reading, numbered from 1, and a digit's value."""
    number: int
    text: str
    value: str = ""


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


def key_change_at(tokens: list[str], index: int, clef: str) -> tuple[str, int] | None:
    """The new key and the number of its accidentals that tokens[index] on (the first after a barline) draw:
    sharps (or flats) in the order and at the places `clef` draws a key's; None where they draw none. The encoding
    cannot tell the last of them from the accidental of a note right after it on its place, and a key change is
    the rarer of the two: such an accidental is read as the note's."""
    run = _placed_run(tokens, index)
    kind = run[0]["kind"] if run and run[0]["symbol"] == "accidental" else None
    if kind not in ("sharp", "flat") or clef not in KEY_SIGNATURE_POSITIONS:
        return None
    drawn = _accidentals_at(run, kind, KEY_SIGNATURE_POSITIONS[clef][kind == "flat"])
    drawn -= _owned_by_next_note(run, drawn)
    return (KEY_BY_FIFTHS[drawn if kind == "sharp" else -drawn], drawn) if drawn else None


def cancelled_key_length(tokens: list[str], index: int, clef: str, key: str) -> int:
    """How many naturals from tokens[index] on (the first after a barline) cancel the whole of `key`'s signature,
    where `clef` draws it: how Verovio draws a change to C major (PrIMuS's label has none of them); else 0."""
    fifths = KEY_SIGNATURES.get(key, 0)
    if fifths == 0 or clef not in KEY_SIGNATURE_POSITIONS:
        return 0
    places = KEY_SIGNATURE_POSITIONS[clef][fifths < 0][:abs(fifths)]
    run = _placed_run(tokens, index)
    drawn = _accidentals_at(run, "natural", places)
    return drawn if drawn == len(places) and not _owned_by_next_note(run, drawn) else 0


def _placed_run(tokens: list[str], index: int) -> list[re.Match]:
    """The matches of tokens[index:] up to the first that is no agnostic token, enough for a key and a note."""
    run = []
    for token in tokens[index:index + 9]:
        if (match := _TOKEN.fullmatch(token)) is None:
            break
        run.append(match)
    return run


def _accidentals_at(run: list[re.Match], kind: str, places: tuple[int, ...]) -> int:
    """How many of the run's first tokens are `kind` accidentals standing at `places`, in their order."""
    drawn = 0
    while drawn < min(len(run), len(places)) and run[drawn]["symbol"] == "accidental" \
            and run[drawn]["kind"] == kind and staff_position(run[drawn]["place"]) == places[drawn]:
        drawn += 1
    return drawn


def _owned_by_next_note(run: list[re.Match], drawn: int) -> bool:
    """Whether the last of the first `drawn` accidentals stands right before a note on its own place."""
    after = run[drawn] if 0 < drawn < len(run) else None
    return after is not None and after["symbol"] in ("note", "gracenote") and after["place"] == run[drawn - 1]["place"]


class _Reader:
    def __init__(self, tokens: list[str], strict: bool = True):
        self.tokens = tokens
        self.strict = strict
        self.out: list[str] = []
        self.clef = "G2"
        self.in_key = key_alterations("CM")
        self.in_force: dict[int, int] = {}  # diatonic index -> alteration, this measure
        self.pending_accidental: int | None = None
        self.pending_fermata = False
        self.count_digits: list[_Token] = []  # on S5: the measures of the multirest that follows them
        self.meter_count: _Token | None = None  # on L4: a meter's count, waiting for its unit on L2
        self.heading = True  # between the first clef and the first meter or note: accidentals are the key
        self.key_accidentals_left = 0  # of a key change inside the music, after its first

    def read(self) -> list[str]:
        for number, token in enumerate(self.tokens, 1):  # numbered from 1, as score.py names semantic tokens
            match = _TOKEN.fullmatch(token)
            if match is None:
                self._unreadable([_Token(number, token)], "not an agnostic token")
                continue
            if match["symbol"] != "digit":
                self._drop_unfinished_meter()
            if match["symbol"] not in ("digit", "multirest"):
                self._drop_unused_count()
            try:
                self._read(number, match)
            except (KeyError, ValueError, IndexError):
                self._unreadable([_Token(number, token)], "cannot be read here")
        self._drop_unfinished_meter()
        self._drop_unused_count()
        return self.out

    def _unreadable(self, tokens: list[_Token], why: str) -> None:
        """Strict: the error naming `tokens`. Otherwise they are left out, having added nothing to the reading."""
        if self.strict:
            numbers = f"{tokens[0].number}" if len(tokens) == 1 else f"{tokens[0].number}-{tokens[-1].number}"
            quoted = " ".join(token.text for token in tokens)
            raise SupersmmError(f"token{'s' * (len(tokens) > 1)} {numbers} {quoted!r}: {why}")

    def _drop_unfinished_meter(self) -> None:
        if self.meter_count is not None:
            self._unreadable([self.meter_count], "a meter's count with no unit below it (on L2): not a meter")
        self.meter_count = None

    def _drop_unused_count(self) -> None:
        if self.count_digits:
            self._unreadable(self.count_digits, "a multirest's count (digits on S5) with no multirest after it")
        self.count_digits = []

    def _read(self, number: int, match) -> None:
        symbol, kind, place = match["symbol"], match["kind"], match["place"]
        if symbol == "barline":
            self.out.append("barline")
            self.in_force = {}
        elif symbol == "clef":
            self._clef(kind, place)
        elif symbol == "accidental":
            if self.heading and self.out and self.out[-1].startswith(("clef-", "keySignature-")):
                self._key_accidental(kind)
            elif self.key_accidentals_left:
                self.key_accidentals_left -= 1
            elif self.out[-1:] == ["barline"] and (change := key_change_at(self.tokens, number - 1, self.clef)):
                self._key_change(*change)
            else:
                self.pending_accidental = ALTERATIONS[kind]
        elif symbol == "digit":
            self._digit(_Token(number, match.string, kind), place)
        elif symbol == "metersign":
            self.heading = False
            self.out.append(f"timeSignature-{kind}")
        elif symbol == "multirest":
            self._multirest(number, match.string)
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
        if clef not in CLEF_BOTTOM_LINE:
            raise KeyError(clef)  # a clef PrIMuS does not have: cannot be read
        self.clef = clef
        self.out.append(f"clef-{clef}")

    def _key_accidental(self, kind: str) -> None:
        more = self.out[-1].startswith("keySignature-")  # one more accidental of the same key signature
        fifths = KEY_SIGNATURES[self.out[-1].removeprefix("keySignature-")] if more else 0
        key = KEY_BY_FIFTHS[fifths + (1 if kind == "sharp" else -1)]
        if more:
            self.out.pop()
        self.out.append(f"keySignature-{key}")
        self.in_key = key_alterations(key)

    def _key_change(self, key: str, drawn: int) -> None:
        self.out.append(f"keySignature-{key}")
        self.in_key = key_alterations(key)
        self.key_accidentals_left = drawn - 1

    def _digit(self, digit: _Token, place: str) -> None:
        """Digits on S5 count a multirest's measures; a meter is its count on L4 over its unit on L2."""
        if place == "S5":
            self.count_digits.append(digit)
        elif place == "L4":
            self._drop_unfinished_meter()
            self.meter_count = digit
        elif place == "L2" and self.meter_count is None:
            self._unreadable([digit], "a meter's unit with no count above it (on L4): not a meter")
        elif place == "L2":
            self.out.append(f"timeSignature-{self.meter_count.value}/{digit.value}")
            self.meter_count, self.heading = None, False
        else:
            raise ValueError(place)

    def _multirest(self, number: int, token: str) -> None:
        count, self.count_digits = "".join(digit.value for digit in self.count_digits), []
        if count[:1] in ("", "0"):  # no digits, or a count that is not one
            self._unreadable([_Token(number, token)], "a multirest needs its count of measures before it (on S5)")
        else:
            self.out.append(f"multirest-{count}")

    def _note(self, grace: bool, kind: str, place: str) -> None:
        self.heading = False
        beamed = _BEAMED.fullmatch(kind)
        duration = DURATION_BY_BEAMS.get(int(beamed["beams"]), "quarter") if beamed else kind
        index = CLEF_BOTTOM_LINE[self.clef] + staff_position(place)
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
