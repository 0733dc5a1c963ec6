"""MEI (as written by Verovio, old and new) -> the incipit as PrIMuS's converter reads it -> semantic tokens.

The semantic tokens are the independent check of the labels: the generator's tokens go to Plaine &
Easie, Verovio engraves them, and the MEI that Verovio reports must convert back to the very same
tokens. The rules are those of the converter that made PrIMuS, fitted on real PrIMuS incipits
(tests/test_real_labels.py checks them on the development set):

- a note's pitch is its printed accidental, else the key signature: a printed accidental does not
  carry to later notes of the measure (real `note-B4_eighth note-Bb4_eighth` after one printed
  natural in E flat major), and Verovio's gestural accidentals are ignored;
- C major has no key signature token;
- `tie` follows a note only when its tie reaches a later note of the same pitch (old Verovio marked
  runs of notes `tie="i"`, `"m"`, `"t"`; a mark that meets no note of its pitch gives no token);
- a whole-measure rest (`mRest`) is `multirest-1`;
- a key or meter change inside the incipit is a `keySignature` (`keySignature-CM` too: the converter
  writes every key signature it meets inside the music) or `timeSignature` token after the barline,
  key before meter as in the heading, and the notes after it read the new key; a clef change is a
  `clef` token where it stands;
- every measure ends with a barline except the last, which has one only when it fills its meter
  exactly (PrIMuS ignores whether the source ended with `/`); so an incipit without a time
  signature has no PrIMuS label.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from fractions import Fraction

from .notation import (
    CLEF_BOTTOM_LINE, DURATION_BY_MEI, KEY_BY_FIFTHS, Note, Rest, dotted_length, key_alterations, meter_length,
)

NS = "{http://www.music-encoding.org/ns/mei}"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
MEI_ALTER = {"s": 1, "f": -1, "n": 0}
METER_SYMBOL = {"common": "C", "cut": "C/"}
UNSUPPORTED = ("chord", "space", "tuplet", "beatRpt", "mRpt", "keySig")


class UnsupportedMei(ValueError):
    """MEI that uses something the semantic encoding (or this converter) has no token for."""


@dataclass(frozen=True)
class MultiRest:
    count: int

    def token(self) -> str:
        return f"multirest-{self.count}"


@dataclass(frozen=True)
class MeterChange:
    meter: str

    def token(self) -> str:
        return f"timeSignature-{self.meter}"


@dataclass(frozen=True)
class KeyChange:
    key: str

    def token(self) -> str:
        return f"keySignature-{self.key}"


@dataclass(frozen=True)
class ClefChange:
    clef: str

    def token(self) -> str:
        return f"clef-{self.clef}"


@dataclass(frozen=True)
class Event:
    """One symbol of a measure, with what the agnostic encoding also needs to know about it."""
    symbol: Note | Rest | MultiRest | KeyChange | MeterChange | ClefChange
    beam_role: str | None = None  # "Right", "Both" or "Left" for a note inside a beam
    accidental_printed: bool = False  # the MEI prints one, even where the key signature already gives it
    tie_starts: bool = False
    tie_ends: bool = False


@dataclass(frozen=True)
class Measure:
    events: list[Event]
    barline: bool  # whether it ends with one: all but the last do, the last when it fills its meter


@dataclass
class Incipit:
    clef: str
    key: str | None  # None for C major: PrIMuS writes no key token for it
    meter: str
    measures: list[Measure] = field(default_factory=list)


def mei_to_semantic(mei_text: str) -> list[str]:
    incipit = read_incipit(mei_text)
    tokens = [f"clef-{incipit.clef}"] + ([f"keySignature-{incipit.key}"] if incipit.key else [])
    tokens.append(f"timeSignature-{incipit.meter}")
    for measure in incipit.measures:
        for event in measure.events:
            tokens.append(event.symbol.token())
            if event.tie_starts:
                tokens.append("tie")
        if measure.barline:
            tokens.append("barline")
    return tokens


def unlabelled_drawing(mei_text: str) -> str | None:
    """What an engraving draws that PrIMuS's tokens cannot say, else None: a clef with an octave mark (PAE's
    `%g-2`: an 8 under the clef and every note an octave off the plain clef's place) or a meter drawn as one
    number (PAE's `@3`, where PrIMuS's time signatures name a count and a unit). A given MEI is still labelled
    as PrIMuS would (mei_to_semantic reads neither mark); this is for the images we draw."""
    for element in ET.fromstring(mei_text.encode("utf-8")).iter():
        tag = element.tag.removeprefix(NS)
        octave_mark = element.get("dis") if tag == "clef" else element.get("clef.dis")
        if octave_mark:
            shape = element.get("shape") or element.get("clef.shape")
            line = element.get("line") or element.get("clef.line")
            return f"the clef {shape}{line} drawn with an octave mark ({octave_mark}): PrIMuS has no token for it"
        form, count = (element.get("form"), element.get("count")) if tag == "meterSig" else (
            element.get("meter.form"), element.get("meter.count"))
        if form == "num":
            return (f"the meter drawn as the one number {count}: PrIMuS's time signatures have a count and a unit "
                    f"(@{count}/1 draws both)")
    return None


def read_incipit(mei_text: str) -> Incipit:
    score = ET.fromstring(mei_text.encode("utf-8")).find(f".//{NS}score")
    if score is None:
        raise UnsupportedMei("no <score> in the MEI")
    header = score.find(f"{NS}scoreDef")
    clef, key, meter = score_header(header)
    if meter is None:  # PrIMuS's converter needs the meter to place the last barline, and labels none without
        raise UnsupportedMei("no time signature")
    incipit = Incipit(clef, None if key == "CM" else key, meter)
    tie_starts, tie_ends = _ties(score)
    fermatas = _fermata_targets(score)
    reader = _MeasureReader(key_alterations(key or "CM"), tie_starts, tie_ends, fermatas)
    meter_in_force, changed_to, key_changed_to = meter, None, None
    read: list[tuple[list[Event], bool]] = []  # each measure's events, and whether they fill its meter exactly
    for element in score.iter():
        tag = element.tag.removeprefix(NS)
        if tag == "scoreDef" and element is not header:  # a change, drawn where the next measure starts
            if _changes_clef(element):
                raise UnsupportedMei("a clef change given in a scoreDef inside the incipit")
            new_key, new_meter = _key_name(_key_signature(element)), _meter_name(_meter_attributes(element))
            if not read:  # a change inside the first measure: Verovio draws it as the heading's, in its place
                incipit.key = (None if new_key == "CM" else new_key) if new_key else incipit.key
                incipit.meter = meter_in_force = new_meter or incipit.meter
                reader.in_key = key_alterations(incipit.key or "CM")
                continue
            key_changed_to = new_key or key_changed_to
            changed_to = new_meter or changed_to
        elif tag == "measure":
            events = [Event(KeyChange(key_changed_to))] if key_changed_to else []
            events += [Event(MeterChange(changed_to))] if changed_to else []
            if key_changed_to:
                reader.in_key = key_alterations(key_changed_to)
            meter_in_force, changed_to, key_changed_to = changed_to or meter_in_force, None, None
            events += reader.events(element)
            read.append((events, _length(events, meter_in_force) == meter_length(meter_in_force)))
    last = len(read) - 1
    incipit.measures = [Measure(events, barline=index < last or fills) for index, (events, fills) in enumerate(read)]
    return incipit


def score_header(score_def: ET.Element) -> tuple[str, str | None, str | None]:
    """(clef, key, meter) as semantic token values; key and meter are None where the score has none."""
    staff_def = score_def.find(f".//{NS}staffDef")
    clef_element = staff_def.find(f"{NS}clef")
    shape, line = (clef_element.get("shape"), clef_element.get("line")) if clef_element is not None else (
        staff_def.get("clef.shape"), staff_def.get("clef.line"))
    return _clef_name(shape, line), _key_name(_key_signature(score_def)), _meter_name(_meter_attributes(score_def))


def _clef_name(shape: str | None, line: str | None) -> str:
    if f"{shape}{line}" not in CLEF_BOTTOM_LINE:
        raise UnsupportedMei(f"the clef {shape}{line} (PrIMuS has G1, G2, C1-C5, F3-F5)")
    return f"{shape}{line}"


def _key_signature(score_def: ET.Element) -> str | None:
    """The MEI key signature (`1s`, `3f`, `0`) a scoreDef gives, as an element (today's Verovio) or an
    attribute (the Verovio that made PrIMuS); None where it gives none."""
    key_element = score_def.find(f".//{NS}keySig")
    if key_element is None:
        return score_def.get("key.sig")
    if key_element.get("sig") is None and len(key_element):
        raise UnsupportedMei("a key signature given accidental by accidental")
    return key_element.get("sig")


def _changes_clef(score_def: ET.Element) -> bool:
    names = {name.removeprefix(NS) for name in (element.tag for element in score_def.iter())}
    attributes = {name for element in score_def.iter() for name in element.attrib}
    return bool(names & {"clef", "staffDef"} or "clef.shape" in attributes)


def _meter_attributes(score_def: ET.Element) -> dict:
    meter_element = score_def.find(f".//{NS}meterSig")
    if meter_element is not None:
        return meter_element.attrib
    return {name.split(".", 1)[1]: value for name, value in score_def.attrib.items() if name.startswith("meter.")}


def _key_name(signature: str | None) -> str | None:
    if signature is None:
        return None
    if signature == "0":
        return "CM"
    count, sign = int(signature[:-1]), signature[-1]
    fifths = count if sign == "s" else -count
    if fifths not in KEY_BY_FIFTHS:  # PrIMuS's semantic vocabulary goes from 6 flats to 7 sharps
        raise UnsupportedMei(f"a key signature of {count} {'sharps' if sign == 's' else 'flats'} has no semantic token")
    return KEY_BY_FIFTHS[fifths]


def _meter_name(meter: dict) -> str | None:
    if "sym" in meter:
        return METER_SYMBOL[meter["sym"]]
    if "count" in meter:
        return f"{meter['count']}/{meter['unit']}"
    return None


def _pitch(note: ET.Element) -> tuple[str, int]:
    return note.get("pname"), int(note.get("oct"))


def _ties(score: ET.Element) -> tuple[set[str], set[str]]:
    """xml:ids of the notes a tie leaves and of those it reaches, only between notes of the same pitch.

    New Verovio writes `<tie startid endid>`. Old Verovio (the one that made PrIMuS) marks notes with
    `tie="i"` (starts), `"m"` (ends and starts) and `"t"` (ends), often on notes of other pitches. As
    in PrIMuS, a note marked "m" or "t" ends the tie of the latest note marked to start one at its
    pitch; an "m" that ends none starts none, and a start that nothing ends gives no tie at all.
    """
    notes = {note.get(XML_ID): note for note in score.iter(f"{NS}note")}
    starts, ends = set(), set()
    for tie in score.iter(f"{NS}tie"):
        start, end = notes.get(tie.get("startid", "").lstrip("#")), notes.get(tie.get("endid", "").lstrip("#"))
        if start is not None and end is not None and _pitch(start) == _pitch(end):
            starts.add(start.get(XML_ID))
            ends.add(end.get(XML_ID))
    in_order = list(notes.values())
    for start, end in primus_tie_pairs([(_pitch(note), note.get("tie")) for note in in_order]):
        starts.add(in_order[start].get(XML_ID))
        ends.add(in_order[end].get(XML_ID))
    return starts, ends


def primus_tie_pairs(marked: list[tuple[object, str | None]]) -> list[tuple[int, int]]:
    """(start, end) indexes of the ties PrIMuS reads from notes given as (pitch, tie mark or None)."""
    open_ties: dict[object, int] = {}  # pitch -> the latest note marked to start a tie there
    pairs = []
    for index, (pitch, mark) in enumerate(marked):
        if mark in ("m", "t") and pitch in open_ties:
            pairs.append((open_ties.pop(pitch), index))
            if mark == "m":
                open_ties[pitch] = index
        elif mark == "i":
            open_ties[pitch] = index
    return pairs


def _fermata_targets(score: ET.Element) -> set[str]:
    """xml:ids of the notes and rests under a fermata."""
    fermatas = {fermata.get("startid", "").lstrip("#") for fermata in score.iter(f"{NS}fermata")}
    return fermatas | {event.get(XML_ID) for event in score.iter() if event.get("fermata") is not None}


class _MeasureReader:
    def __init__(self, in_key: dict[str, int], tie_starts: set[str], tie_ends: set[str], fermatas: set[str]):
        self.in_key = in_key
        self.tie_starts = tie_starts
        self.tie_ends = tie_ends
        self.fermatas = fermatas

    def events(self, measure: ET.Element) -> list[Event]:
        return [event for layer in measure.iter(f"{NS}layer") for child in layer
                for event in self._element(child, measure)]

    def _element(self, element: ET.Element, measure: ET.Element, beam_role: str | None = None,
                 grace: bool = False) -> list[Event]:
        """The events of one layer child; `grace` inside a `graceGrp` (`qq...r`), whose notes have no @grace."""
        tag = element.tag.removeprefix(NS)
        if tag == "beam":
            children = list(element)
            roles = ["Right"] + ["Both"] * (len(children) - 2) + ["Left"]  # by place: a rest in the beam takes one
            return [event for child, role in zip(children, roles)
                    for event in self._element(child, measure, role, grace)]
        if tag == "graceGrp":
            return [event for child in element for event in self._element(child, measure, grace=True)]
        if tag == "note":
            return [self._note(element, beam_role, grace or element.get("grace") is not None)]
        if tag == "rest":
            fermata = element.get(XML_ID) in self.fermatas
            return [Event(Rest(_duration(element), int(element.get("dots", 0)), fermata))]
        if tag == "multiRest":
            return [Event(MultiRest(int(element.get("num"))))]
        if tag == "mRest":
            return [Event(MultiRest(1))]
        if tag == "clef":
            return [Event(ClefChange(_clef_name(element.get("shape"), element.get("line"))))]
        if tag in UNSUPPORTED:
            raise UnsupportedMei(f"<{tag}> in measure {measure.get('n') or measure.get(XML_ID)}")
        return []  # not a symbol on the staff (an annotation, say)

    def _note(self, note: ET.Element, beam_role: str | None, grace: bool) -> Event:
        step, octave = note.get("pname").upper(), int(note.get("oct"))
        written = _printed_accidental(note)
        if written is not None and written not in MEI_ALTER:
            raise UnsupportedMei(f"the accidental {written!r} (PrIMuS has no double sharps or flats)")
        alter = MEI_ALTER[written] if written else self.in_key[step]
        note_id = note.get(XML_ID)
        symbol = Note(step, alter, octave, _duration(note), int(note.get("dots", 0)), note_id in self.fermatas, grace)
        return Event(symbol, beam_role, accidental_printed=written is not None,
                     tie_starts=note_id in self.tie_starts, tie_ends=note_id in self.tie_ends)


def _printed_accidental(note: ET.Element) -> str | None:
    """The MEI value ("s", "f", "n") of the accidental printed next to a note, if any."""
    accid = note.find(f"{NS}accid")
    return note.get("accid") or (accid.get("accid") if accid is not None else None)


def _length(events: list[Event], meter: str) -> Fraction:
    """How much of the meter the symbols of a measure take: grace notes none, a multirest its measures."""
    total = Fraction(0)
    for symbol in (event.symbol for event in events):
        if isinstance(symbol, Rest) or isinstance(symbol, Note) and not symbol.grace:
            total += dotted_length(symbol.duration, symbol.dots)
        elif isinstance(symbol, MultiRest):
            total += symbol.count * meter_length(meter)
    return total


def _duration(event: ET.Element) -> str:
    duration = event.get("dur")
    if duration not in DURATION_BY_MEI:
        raise UnsupportedMei(f"a duration of {duration!r}")
    return DURATION_BY_MEI[duration]
