"""Given Plaine & Easie incipits -> the input Verovio reads, for `supersmm synth --from-pae`.

Two spellings of one incipit on one line are accepted:
- PrIMuS's `regular_pae.pae`: `%G-2@3/4$bBEAü ''4B8{EB'''C''B}/` (clef after `%`, meter after `@`,
  key after `$`, always there but maybe empty; a `ü`, a space, then the music);
- RISM's fields joined on one line: `@clef:G-2@keysig:bBEA@timesig:3/4@data:''4B8{EB'''C''B}/`
  (spaces or tabs may separate the fields; `@key:` is another name for `@keysig:`).

Where Verovio today reads an incipit differently from the Verovio that made PrIMuS, the input is
given as PrIMuS has it: an editorial key accidental in brackets (`bBEA[D]`) counts; of several
meters (`c; 3/2`, the meters the work goes through) the first is the incipit's; and a tie (`+`) is
kept only where PrIMuS's labels have it (`primus_ties`). That Verovio drew every tie of the source, so the
image is engraved from `drawn_verovio_input`, which keeps them all.
"""
from __future__ import annotations

import re

from .mei import primus_tie_pairs

_PRIMUS_FORM = re.compile(r"%(?P<clef>[^@$\s]+)(?:@(?P<timesig>[^$]*))?\$(?P<keysig>[^\sü]*)ü?\s+(?P<data>\S.*)")
_RISM_FIELD = re.compile(r"@(clef|keysig|key|timesig|data):")


class MalformedPae(ValueError):
    """Text that is neither of the two accepted spellings of a Plaine & Easie incipit."""


def verovio_input(pae: str) -> str:
    """The `@clef:/@keysig:/@timesig:/@data:` text that Verovio loads for one incipit's labels."""
    return with_primus_ties(drawn_verovio_input(pae))


def drawn_verovio_input(pae: str) -> str:
    """The same text with every tie of the source: what the Verovio that made PrIMuS drew."""
    fields = _fields(pae.strip())
    if not fields.get("clef"):
        raise MalformedPae("no clef")
    if not fields.get("data"):
        raise MalformedPae("no music (@data)")
    keysig = fields.get("keysig", "").replace("[", "").replace("]", "")
    timesig = fields.get("timesig", "").split(";")[0].strip()
    return f"@clef:{fields['clef']}\n@keysig:{keysig}\n@timesig:{timesig}\n@data:{fields['data']}\n"


def with_primus_ties(verovio_text: str) -> str:
    """Verovio's input text with only the ties that PrIMuS labels (see `primus_ties`)."""
    head, data = verovio_text.split("@data:", 1)
    return f"{head}@data:{primus_ties(data)}"


def _fields(pae: str) -> dict[str, str]:
    primus = _PRIMUS_FORM.fullmatch(pae)
    if primus:
        return {name: (value or "").strip() for name, value in primus.groupdict().items()}
    parts = _RISM_FIELD.split(pae)
    if parts[0].strip() or len(parts) < 3:
        raise MalformedPae("neither PrIMuS's %clef@meter$key form nor RISM's @clef:...@data:... form")
    fields = {}
    for name, value in zip(parts[1::2], parts[2::2]):
        name = "keysig" if name == "key" else name
        if name in fields:
            raise MalformedPae(f"@{name}: given twice")
        fields[name] = value.strip()
    return fields


def primus_ties(data: str) -> str:
    """The music with only the ties that PrIMuS labels.

    The Verovio that engraved PrIMuS marked a tie (`+` after a note) on every note from the last
    octave mark, duration or barline before it up to the tied note: `/FD+/4D` became F `tie="i"`,
    D `"m"`, D `"t"`. Its converter then paired marked notes of the same pitch (see
    mei.py `_ties`), so that one has no tie at all. A `+` is kept where this pairs the tied note with
    the next one, which is every tie whose note has its own octave or duration written before it.
    """
    notes = _scanned_notes(data)
    starts, ends = [False] * len(notes), [False] * len(notes)
    for index, (_, segment_start, tied, _) in enumerate(notes):
        if tied and index + 1 < len(notes):
            starts[segment_start:index + 1] = [True] * (index + 1 - segment_start)
            ends[segment_start + 1:index + 2] = [True] * (index + 1 - segment_start)
    marks = [{(True, False): "i", (True, True): "m", (False, True): "t"}.get(both) for both in zip(starts, ends)]
    pairs = primus_tie_pairs([(pitch, mark) for (pitch, _, _, _), mark in zip(notes, marks)])
    kept = {start for start, end in pairs if end == start + 1}
    drop = {offset for index, (_, _, tied, offset) in enumerate(notes) if tied and index not in kept}
    return "".join(char for offset, char in enumerate(data) if offset not in drop)


def _scanned_notes(data: str) -> list[tuple[tuple[str, int], int, bool, int | None]]:
    """Per note: (pitch, index of the first note of its segment, tied?, offset of its `+`)."""
    notes: list[list] = []
    octave, segment_start, offset = 4, 0, 0
    while offset < len(data):
        char = data[offset]
        if char in "@$%":  # a meter, key or clef change runs to the next space
            end = data.find(" ", offset)
            offset = len(data) if end < 0 else end
            continue
        if char in "',":
            end = offset
            while end < len(data) and data[end] == char:
                end += 1
            octave = 3 + end - offset if char == "'" else 4 - (end - offset)
            offset = end
            segment_start = len(notes)
            continue
        if char.isdigit() or char == "/":
            segment_start = len(notes)
        elif char in "ABCDEFG":
            notes.append([(char, octave), segment_start, False, None])
        elif char == "+" and notes:
            notes[-1][2:] = [True, offset]
        offset += 1
    return [tuple(note) for note in notes]
