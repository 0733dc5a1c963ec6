"""PrIMuS semantic tokens -> a score: MusicXML and MIDI written by music21, MEI by Verovio.

A score holds one or more staves (the lines of a page, in reading order); each staff is one token list as
the corpus and `supersmm predict` write them. Every token is checked before anything is written, and the
first that is unknown or out of place is named with its position.

How the constructs are carried over: clefs, key signatures and meters (C and C/ as their symbols) go where
they stand; notes keep their sounding pitch, duration, dots and fermata; a grace note of eighth length is an
acciaccatura (slashed), any other an appoggiatura, as PrIMuS engraves them (in MIDI it takes its time from the
note it leads to); `tie` joins the notes either side, over barlines and changes of clef, key and meter, and one
that ends a staff reaches into the next (or stays open where the score ends: an incipit is cut off there);
`multirest-N` is N bars of rest (written as one multi-measure rest); `barline` ends a measure, and so does the
end of each staff. MEI comes from the project's Plaine & Easie writer (synth/pae.py) through Verovio, as the
synthetic corpus is engraved.
"""
from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import music21

from .durable import write_atomically
from .errors import SupersmmError
from .synth.notation import (
    CLEF_BOTTOM_LINE, KEY_SIGNATURES, Note, meter_length, parse_note, parse_rest,
)

FORMAT_OF_SUFFIX = {".musicxml": "musicxml", ".xml": "musicxml", ".mid": "mid", ".mei": "mei"}
SUFFIX_OF_FORMAT = {"musicxml": ".musicxml", "mid": ".mid", "mei": ".mei"}

MUSIC21_DURATION = {
    "quadruple_whole": "longa", "double_whole": "breve", "whole": "whole", "half": "half", "quarter": "quarter",
    "eighth": "eighth", "sixteenth": "16th", "thirty_second": "32nd", "sixty_fourth": "64th",
    "hundred_twenty_eighth": "128th",
}
MUSIC21_METER = {"C": "common", "C/": "cut"}
_METER = re.compile(r"C/?|[1-9]\d?/[1-9]\d?")
_MULTIREST = re.compile(r"[1-9]\d{0,3}")  # PrIMuS's longest is 1111 bars; each bar is a measure of the score
ACCIACCATURA_LENGTH = Fraction(1, 8)  # quarter notes: a slashed grace note is played as a thirty-second


# ---------------------------------------------------------------- reading and checking labels


def read_label_file(path: Path) -> list[str]:
    """The tokens of a semantic label file (tab-separated, as PrIMuS writes them)."""
    try:
        return Path(path).read_text("utf-8-sig").split()  # a BOM, as detect and training take it
    except FileNotFoundError:
        raise SupersmmError(f"label file {path} does not exist") from None
    except UnicodeDecodeError:
        raise SupersmmError(f"label file {path} is not UTF-8 text") from None


def check_staff(tokens: list[str]) -> None:
    """Raises SupersmmError naming the first token (1-based) that a semantic staff cannot hold there."""
    if not tokens:
        raise SupersmmError("the staff has no tokens")
    for index, token in enumerate(tokens):
        problem = _token_problem(token)
        if problem is None and index == 0 and not token.startswith("clef-"):
            problem = "a staff starts with a clef"
        if problem is None and token == "tie":
            problem = _tie_problem(tokens, index)
        if problem:
            raise SupersmmError(f"token {index + 1} {token!r}: {problem}")


def _tie_problem(tokens: list[str], index: int) -> str | None:
    """A tie follows a note and reaches the next one, over barlines and clef, key and meter changes if need be.

    A tie that nothing follows is the start of one: an incipit is cut off where the music goes on, and a page's
    staff ends where the next one takes over."""
    before = parse_note(tokens[index - 1]) if index > 0 else None
    following = [token for token in tokens[index + 1:] if not _passed_by_ties(token)]
    after = parse_note(following[0]) if following else None
    if before is None or before.grace:
        return "a tie must follow a note"
    if following and (after is None or after.grace):
        return "a tie must be followed by a note"
    return None


def _passed_by_ties(token: str) -> bool:
    return token == "barline" or token.startswith(("clef-", "keySignature-", "timeSignature-"))


def _token_problem(token: str) -> str | None:
    """Why `token` is not a semantic token, or None when it is one."""
    family, _, value = token.partition("-")
    if token in ("barline", "tie") or parse_note(token) or parse_rest(token):
        return None
    if family == "clef":
        return None if value in CLEF_BOTTOM_LINE else f"unknown clef (one of {', '.join(sorted(CLEF_BOTTOM_LINE))})"
    if family == "keySignature":
        return None if value in KEY_SIGNATURES else "unknown key signature"
    if family == "timeSignature":
        return None if _METER.fullmatch(value) else "unknown meter"
    if family == "multirest":
        return None if _MULTIREST.fullmatch(value) else "a multirest counts 1 to 9999 bars"
    return "not a PrIMuS semantic token"


def check_staves(staves: list[list[str]]) -> None:
    if not staves:
        raise SupersmmError("a score needs at least one staff")
    for number, tokens in enumerate(staves, start=1):
        try:
            check_staff(tokens)
        except SupersmmError as error:
            raise SupersmmError(f"staff {number}, {error}" if len(staves) > 1 else str(error)) from None


# ---------------------------------------------------------------- music21


def to_music21(staves: list[list[str]], title: str = "") -> music21.stream.Score:
    """One part, each staff a system of its own."""
    check_staves(staves)
    writer = _PartWriter()
    for number, tokens in enumerate(staves):
        writer.staff(tokens, new_system=number > 0)
    _engrave(writer.part)
    score = music21.stream.Score([writer.part])
    score.insert(0, music21.metadata.Metadata(title=title))
    return score


class _PartWriter:
    def __init__(self):
        self.part = music21.stream.Part()
        self.bar_length = Fraction(1)  # whole notes; a bar of rest before any meter is a whole rest
        self.measure: music21.stream.Measure | None = None
        self.measures_appended = 0
        self.last_note: music21.note.Note | None = None
        self.tie_open = False  # a tie token came after the last note
        self.first_of_staff = True

    def staff(self, tokens: list[str], new_system: bool) -> None:
        self._open_measure()
        self.first_of_staff = True
        if new_system:
            self.measure.insert(0, music21.layout.SystemLayout(isNew=True))
        for token in tokens:
            self._token(token)
        self._close_measure()

    def _open_measure(self) -> None:
        self.measure = music21.stream.Measure(number=self.measures_appended + 1)

    def _close_measure(self) -> None:
        """Appends the measure if it holds anything. A measure shorter than its meter is an upbeat (at the start
        of the staff) or cut short; saying so keeps writers from filling it up with rests."""
        if len(self.measure.elements):
            missing = self.bar_length * 4 - Fraction(self.measure.duration.quarterLength)
            if missing > 0 and self.first_of_staff:
                self.measure.paddingLeft = missing
            elif missing > 0:
                self.measure.paddingRight = missing
            self.part.append(self.measure)
            self.measures_appended += 1
            self.first_of_staff = False
        self._open_measure()

    def _token(self, token: str) -> None:
        family, _, value = token.partition("-")
        if token == "barline":
            self._close_measure()
        elif token == "tie":
            self.last_note.tie = music21.tie.Tie("continue" if self.last_note.tie else "start")
            self.tie_open = True
        elif family == "clef":
            self.measure.append(music21.clef.clefFromString(value))
        elif family == "keySignature":
            self.measure.append(music21.key.KeySignature(KEY_SIGNATURES[value]))
        elif family == "timeSignature":
            self.measure.append(music21.meter.TimeSignature(MUSIC21_METER.get(value, value)))
            self.bar_length = meter_length(value)
        elif family == "multirest":
            self.tie_open = False  # the tie ended the staff before: nothing continues it
            self._multirest(int(value))
        elif token.startswith("rest-"):
            self.tie_open = False
            rest = parse_rest(token)
            written = music21.note.Rest(duration=_duration(rest.duration, rest.dots))
            written.fullMeasure = False  # a whole rest beside notes is that rest, not a bar of rest (multirest's)
            self.measure.append(_with_fermata(written, rest.fermata))
        else:
            self.measure.append(self._note(parse_note(token)))

    def _note(self, note: Note) -> music21.note.Note:
        pitch = music21.pitch.Pitch(step=note.step, octave=note.octave, accidental=note.alter or None)
        written = _with_fermata(music21.note.Note(pitch, duration=_duration(note.duration, note.dots)), note.fermata)
        if note.grace:
            return written.getGrace(appoggiatura=note.duration != "eighth")
        if self.tie_open and written.pitch == self.last_note.pitch:
            written.tie = music21.tie.Tie("stop")
        elif self.tie_open:  # PrIMuS has a few "ties" between different pitches: slurs, musically
            self.last_note.tie = None if self.last_note.tie.type == "start" else music21.tie.Tie("stop")
            self.part.insert(0, music21.spanner.Slur(self.last_note, written))
        self.last_note, self.tie_open = written, False
        return written

    def _multirest(self, bars: int) -> None:
        if any(isinstance(e, music21.note.GeneralNote) for e in self.measure.elements):
            self._close_measure()  # a multirest fills bars of its own
        rests = []
        for bar in range(bars):
            if bar:
                self._close_measure()
            rest = music21.note.Rest(quarterLength=self.bar_length * 4)
            rest.fullMeasure = True
            self.measure.append(rest)
            rests.append(rest)
        if bars > 1:
            self.part.insert(0, music21.spanner.MultiMeasureRest(rests))


def _engrave(part: music21.stream.Part) -> None:
    """Beams by the meter and accidentals where the key and the measure need them.

    The writers are told not to redo the notation: theirs would re-bar the music by the meter, splitting the
    notes of the overfull measures some real incipits have, and filling short ones with rests.
    """
    for measure in part.getElementsByClass("Measure"):
        if not measure.notes:
            continue  # nothing to beam (a multirest's bars: thousands of them cost seconds each hundred)
        try:
            music21.stream.makeNotation.makeBeams(measure, inPlace=True)
        except (music21.stream.StreamException, music21.meter.MeterException):
            pass  # a measure longer than its meter cannot be beamed by it; its notes keep their flags
    music21.stream.makeNotation.makeAccidentalsInMeasureStream(part, cautionaryNotImmediateRepeat=False)


def _duration(name: str, dots: int) -> music21.duration.Duration:
    return music21.duration.Duration(type=MUSIC21_DURATION[name], dots=dots)


def _with_fermata(written, fermata: bool):
    if fermata:
        upright = music21.expressions.Fermata()
        upright.type = "upright"  # above the staff, as PrIMuS draws them (music21's default is inverted, below)
        written.expressions.append(upright)
    return written


# ---------------------------------------------------------------- MEI through Plaine & Easie and Verovio


def to_mei(staves: list[list[str]]) -> str:
    """Verovio's MEI of the staves, read from the Plaine & Easie the synthetic corpus is engraved from.

    Plaine & Easie has one staff: the staves follow each other, each opening with its own clef, key and meter.
    """
    from .synth.engrave import EngravingFailed
    from .synth.pae import UnsupportedToken, semantic_to_pae

    check_staves(staves)
    joined = [token for number, tokens in enumerate(staves)
              for token in (tokens if tokens[-1] == "barline" or number == len(staves) - 1 else tokens + ["barline"])]
    try:
        return _engraver().load(semantic_to_pae(joined))
    except (UnsupportedToken, EngravingFailed) as error:
        raise SupersmmError(f"cannot write MEI: {error}") from None


@lru_cache(maxsize=1)
def _engraver():
    """One Verovio toolkit per process: making one loads its fonts."""
    from .synth.engrave import Engraver

    return Engraver()


# ---------------------------------------------------------------- files


def score_format(path: Path) -> str:
    """musicxml, mid or mei, from the file name's suffix."""
    try:
        return FORMAT_OF_SUFFIX[Path(path).suffix.lower()]
    except KeyError:
        raise SupersmmError(
            f"cannot tell the score format of {path}: name it .musicxml, .xml, .mid or .mei") from None


def score_bytes(staves: list[list[str]], kind: str, title: str = "") -> bytes:
    """The staves as one score file of `kind` (musicxml, mid or mei)."""
    if kind == "mei":
        return to_mei(staves).encode("utf-8")
    score = to_music21(staves, title)
    return _musicxml_bytes(score) if kind == "musicxml" else _midi_bytes(score)


def write_score(staves: list[list[str]], path: Path) -> Path:
    """Writes the staves as one score to `path` (format by suffix), whole or not at all."""
    path = Path(path)
    content = score_bytes(staves, score_format(path), title=path.stem)
    try:
        write_atomically(path, content)
    except OSError as error:
        raise SupersmmError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def _musicxml_bytes(score: music21.stream.Score) -> bytes:
    exporter = music21.musicxml.m21ToXml.GeneralObjectExporter(score)
    exporter.makeNotation = False  # see _engrave
    return exporter.parse()


def _midi_bytes(score: music21.stream.Score) -> bytes:
    played = _grace_notes_timed(_tied_notes_joined(score))
    return music21.midi.translate.music21ObjectToMidiFile(played).writestr()


def _tied_notes_joined(score: music21.stream.Score) -> music21.stream.Stream:
    """The score flattened, each chain of tied notes one note as long as the chain (a single MIDI note).

    music21 joins ties itself when it writes MIDI, but its stripTies() splits a chain of three notes in two.
    """
    flat = score.flatten()
    chain_start = None
    for note in list(flat.notes):
        if note.tie is not None and note.tie.type in ("continue", "stop") and chain_start is not None:
            chain_start.quarterLength += note.quarterLength
            flat.remove(note)
        else:
            chain_start = note if note.tie is not None and note.tie.type == "start" else None
        if note.tie is not None and note.tie.type == "stop":
            chain_start = None
    for note in flat.notes:
        note.tie = None
    return flat


def _grace_notes_timed(flat: music21.stream.Stream) -> music21.stream.Stream:
    """Each grace note given a length of its own, taken from the start of the note it leads to, as players do.

    A grace note takes no time in the score; written so to MIDI, its note-off comes before its note-on at the
    same tick, and the note never ends.
    """
    graces = []
    for item in list(flat.notesAndRests):
        if item.duration.isGrace:
            graces.append(item)
        elif graces:
            _play_graces_before(flat, graces, item)
            graces = []
    if graces:  # the score ends on them: they are played after its end
        _play_graces_before(flat, graces, None)
    return flat


def _play_graces_before(flat: music21.stream.Stream, graces: list, following) -> None:
    """The grace notes one after the other from where `following` (a note or rest, or None) starts: each its
    written length (an acciaccatura a thirty-second), all together at most half of `following`, which then
    starts after them."""
    share = Fraction(following.quarterLength) / 2 / len(graces) if following is not None else None
    start = Fraction(graces[0].offset)
    for grace in graces:
        length = _grace_length(grace) if share is None else min(_grace_length(grace), share)
        grace.duration = music21.duration.Duration(quarterLength=length)
        flat.setElementOffset(grace, start)
        start += length
    if following is not None:
        following.quarterLength = Fraction(following.quarterLength) - (start - Fraction(following.offset))
        flat.setElementOffset(following, start)


def _grace_length(grace: music21.note.Note) -> Fraction:
    if grace.duration.slash:
        return ACCIACCATURA_LENGTH
    return Fraction(music21.duration.Duration(type=grace.duration.type, dots=grace.duration.dots).quarterLength)


def label_file_to_score(labels: Path, out: Path) -> Path:
    """`supersmm score IN OUT`."""
    score_format(out)
    tokens = read_label_file(labels)
    try:
        check_staff(tokens)
    except SupersmmError as error:
        raise SupersmmError(f"{labels}: {error}") from None
    return write_score([tokens], out)
