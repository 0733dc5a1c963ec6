"""MEI (as written by Verovio, old and new) -> PrIMuS semantic tokens.

This is the independent check of the labels: the generator's tokens go to Plaine & Easie, Verovio
engraves them, and the MEI that Verovio reports must convert back to the very same tokens.
A note's pitch is its sounding pitch: printed accidental, else Verovio's gestural one, else the
accidental printed earlier in the measure, else the key signature (old MEI has no gestural ones).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from .notation import DURATION_BY_MEI, KEY_BY_FIFTHS, Note, Rest, key_alterations

NS = "{http://www.music-encoding.org/ns/mei}"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
MEI_ALTER = {"s": 1, "f": -1, "n": 0}
METER_SYMBOL = {"common": "C", "cut": "C/"}


class UnsupportedMei(ValueError):
    """MEI that uses something the semantic encoding (or this converter) has no token for."""


def mei_to_semantic(mei_text: str) -> list[str]:
    root = ET.fromstring(mei_text.encode("utf-8"))
    score = root.find(f".//{NS}score")
    if score is None:
        raise UnsupportedMei("no <score> in the MEI")
    clef, key, meter = score_header(score.find(f"{NS}scoreDef"))
    tokens = [f"clef-{clef}"] + ([f"keySignature-{key}"] if key else []) + ([f"timeSignature-{meter}"] if meter else [])
    in_key = key_alterations(key or "CM")
    tie_starts, fermatas = control_targets(score)
    for measure in score.iter(f"{NS}measure"):
        tokens += _measure_tokens(measure, in_key, tie_starts, fermatas)
        if measure.get("right") != "invis":
            tokens.append("barline")
    return tokens


def score_header(score_def: ET.Element) -> tuple[str, str | None, str | None]:
    """(clef, key, meter) as semantic token values; key and meter are None where the score has none."""
    staff_def = score_def.find(f".//{NS}staffDef")
    clef_element = staff_def.find(f"{NS}clef")
    shape, line = (clef_element.get("shape"), clef_element.get("line")) if clef_element is not None else (
        staff_def.get("clef.shape"), staff_def.get("clef.line"))
    key_element = score_def.find(f"{NS}keySig")
    signature = key_element.get("sig") if key_element is not None else score_def.get("key.sig")
    meter_element = score_def.find(f"{NS}meterSig")
    meter_source = meter_element.attrib if meter_element is not None else {
        name.split(".", 1)[1]: value for name, value in score_def.attrib.items() if name.startswith("meter.")}
    return f"{shape}{line}", _key_name(signature), _meter_name(meter_source)


def control_targets(score: ET.Element) -> tuple[set[str], set[str]]:
    """xml:ids of the notes that start a tie, and of the notes and rests under a fermata."""
    tie_starts = {tie.get("startid", "").lstrip("#") for tie in score.iter(f"{NS}tie")}
    tie_starts |= {note.get(XML_ID) for note in score.iter(f"{NS}note") if note.get("tie") in ("i", "m")}
    fermatas = {fermata.get("startid", "").lstrip("#") for fermata in score.iter(f"{NS}fermata")}
    fermatas |= {event.get(XML_ID) for event in score.iter() if event.get("fermata") is not None}
    return tie_starts, fermatas


def _key_name(signature: str | None) -> str | None:
    if signature is None:
        return None
    if signature == "0":
        return "CM"
    count, sign = int(signature[:-1]), signature[-1]
    return KEY_BY_FIFTHS[count if sign == "s" else -count]


def _meter_name(meter: dict) -> str | None:
    if "sym" in meter:
        return METER_SYMBOL[meter["sym"]]
    if "count" in meter:
        return f"{meter['count']}/{meter['unit']}"
    return None


def _measure_tokens(measure: ET.Element, in_key: dict[str, int], tie_starts: set, fermatas: set) -> list[str]:
    printed: dict[tuple[str, int], int] = {}
    tokens = []
    for layer in measure.iter(f"{NS}layer"):
        for event in layer.iter():
            tag = event.tag.removeprefix(NS)
            event_id = event.get(XML_ID)
            fermata = event_id in fermatas
            if tag == "note":
                tokens.append(_note(event, fermata, in_key, printed).token())
                if event_id in tie_starts:
                    tokens.append("tie")
            elif tag == "rest":
                tokens.append(Rest(_duration(event), int(event.get("dots", 0)), fermata).token())
            elif tag == "multiRest":
                tokens.append(f"multirest-{event.get('num')}")
            elif tag in ("chord", "mRest", "space", "tuplet", "beatRpt", "mRpt"):
                raise UnsupportedMei(f"<{tag}> in measure {measure.get('n') or measure.get(XML_ID)}")
    return tokens


def _note(note: ET.Element, fermata: bool, in_key: dict[str, int], printed: dict) -> Note:
    step, octave = note.get("pname").upper(), int(note.get("oct"))
    accid = note.find(f"{NS}accid")
    written = note.get("accid") or (accid.get("accid") if accid is not None else None)
    gestural = note.get("accid.ges") or (accid.get("accid.ges") if accid is not None else None)
    place = (step, octave)
    if written is not None:
        printed[place] = MEI_ALTER[written]
        alter = MEI_ALTER[written]
    elif gestural is not None:
        alter = MEI_ALTER[gestural]
    else:
        alter = printed.get(place, in_key[step])
    dots = int(note.get("dots", 0))
    return Note(step, alter, octave, _duration(note), dots, fermata, grace=note.get("grace") is not None)


def _duration(event: ET.Element) -> str:
    return DURATION_BY_MEI[event.get("dur")]
