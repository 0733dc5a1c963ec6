"""Semantic labels -> MusicXML, MIDI and MEI, read back by independent readers (music21's parsers, Verovio).

The expected notes and rests are worked out here from the tokens alone, not by the code under test.
"""
import os
import random
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import music21
import pytest
import verovio

from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.corpus import read_label
from supersmm_tasks.score import check_staff, read_label_file, write_score
from supersmm_tasks.synth.music import random_incipit
from supersmm_tasks.synth.notation import dotted_length, meter_length, parse_note, parse_rest

SYNTHETIC_INCIPITS = 500


def expected_notes_and_rests(staves: list[list[str]]) -> list[tuple]:
    """("note", step, alter, octave, quarter length) per note, a tie to the same pitch joining two notes into one
    and a grace note lasting 0; ("rest", quarter length) per rest, a bar's length for each bar of a multirest."""
    found, bar, tie = [], Fraction(1), False
    for tokens in staves:  # a tie at the end of a staff reaches into the next one
        for token in tokens:
            note, rest = parse_note(token), parse_rest(token)
            if token == "tie":
                tie = True
            elif token.startswith("timeSignature-"):
                bar = meter_length(token.split("-", 1)[1])
            elif token.startswith("multirest-"):
                found += [("rest", bar * 4)] * int(token.split("-", 1)[1])
            elif rest is not None:
                found.append(("rest", dotted_length(rest.duration, rest.dots) * 4))
            elif note is not None:
                length = Fraction(0) if note.grace else dotted_length(note.duration, note.dots) * 4
                if tie and found[-1][1:4] == (note.step, note.alter, note.octave):
                    length += found.pop()[-1]
                found.append(("note", note.step, note.alter, note.octave, length))
                tie = False
    return found


def musicxml_notes_and_rests(path: Path) -> list[tuple]:
    """What music21's MusicXML parser reads, a note that a tie continues joined to the one before.

    (music21's own stripTies() loses the middle of a chain of three tied notes.)"""
    found = []
    for item in music21.converter.parse(path).recurse().notesAndRests:
        length = Fraction(item.duration.quarterLength).limit_denominator(1024)
        if item.isRest:
            found.append(("rest", length))
            continue
        pitch = ("note", item.pitch.step, int(item.pitch.alter), item.pitch.octave)
        if item.tie is not None and item.tie.type in ("stop", "continue") and found[-1][:4] == pitch:
            length += found.pop()[-1]
        found.append((*pitch, length))
    return found


def midi_pitches(path: Path) -> list[int]:
    """The key numbers of the MIDI file's note-ons, in file order."""
    midi = music21.midi.MidiFile()
    midi.open(str(path))
    midi.read()
    midi.close()
    return [event.pitch for track in midi.tracks for event in track.events
            if event.type == music21.midi.ChannelVoiceMessages.NOTE_ON and event.velocity]


def midi_notes(path: Path) -> list[tuple]:
    """(key number, start, end) per note of the MIDI file, in quarter notes, in the order they start; end is None
    for a note that no note-off (or note-on of velocity 0) ends."""
    midi = music21.midi.MidiFile()
    midi.open(str(path))
    midi.read()
    midi.close()
    found = []
    for track in midi.tracks:
        tick, sounding = 0, {}
        for event in track.events:
            if isinstance(event, music21.midi.DeltaTime):
                tick += event.time
            elif event.type == music21.midi.ChannelVoiceMessages.NOTE_ON and event.velocity:
                sounding[event.pitch] = len(found)
                found.append((event.pitch, Fraction(tick, midi.ticksPerQuarterNote), None))
            elif event.type in (music21.midi.ChannelVoiceMessages.NOTE_OFF,
                                music21.midi.ChannelVoiceMessages.NOTE_ON) and event.pitch in sounding:
                index = sounding.pop(event.pitch)
                found[index] = (*found[index][:2], Fraction(tick, midi.ticksPerQuarterNote))
    return found


def sounding_pitches(staves: list[list[str]]) -> list[int]:
    notes = [found for found in expected_notes_and_rests(staves) if found[0] == "note"]
    return [music21.pitch.Pitch(step=step, octave=octave, accidental=alter or None).midi
            for _, step, alter, octave, _ in notes]


def verovio_loads(mei: str) -> bool:
    verovio.enableLog(verovio.LOG_OFF)
    toolkit = verovio.toolkit()
    toolkit.setOptions({"inputFrom": "mei"})
    return toolkit.loadData(mei)


def assert_every_format_holds(staves: list[list[str]], folder: Path, name: str) -> None:
    musicxml = write_score(staves, folder / f"{name}.musicxml")
    assert musicxml_notes_and_rests(musicxml) == expected_notes_and_rests(staves), name
    midi = write_score(staves, folder / f"{name}.mid")
    assert midi_pitches(midi) == sounding_pitches(staves), name
    assert all(end is not None and end > start for _, start, end in midi_notes(midi)), name
    mei = write_score(staves, folder / f"{name}.mei")
    notes = sum(parse_note(token) is not None for tokens in staves for token in tokens)
    assert verovio_loads(mei.read_text("utf-8")), name
    assert mei.read_text("utf-8").count("<note ") == notes, name


def real_labels(real_dev: Path) -> dict[str, list[str]]:
    return {folder.name: read_label_file(folder / f"{folder.name}.semantic")
            for folder in sorted(real_dev.iterdir()) if (folder / f"{folder.name}.semantic").is_file()}


@pytest.mark.integration
def test_all_real_dev_labels_become_musicxml_midi_and_mei_that_hold_them(real_dev, tmp_path):
    labels = real_labels(real_dev)
    assert labels, f"no labels in {real_dev}"
    for sample_id, tokens in labels.items():
        assert_every_format_holds([tokens], tmp_path, sample_id)


MUSICXML_TYPE = {"quadruple_whole": "long", "double_whole": "breve", "whole": "whole", "half": "half",
                 "quarter": "quarter", "eighth": "eighth", "sixteenth": "16th", "thirty_second": "32nd",
                 "sixty_fourth": "64th", "hundred_twenty_eighth": "128th"}


@pytest.mark.integration
def test_real_rests_and_fermatas_are_written_as_primus_draws_them(real_dev, tmp_path):
    """Each rest token is a rest of its own written length (a whole rest beside notes, in the overfull bars some
    incipits have, is no bar of rest), only a multirest's bars are measure rests, and every fermata stands above
    the staff, as PrIMuS's images show them."""
    labels = real_labels(real_dev)
    rests_checked = 0
    for sample_id, tokens in labels.items():
        expected = []
        for token in tokens:
            if token.startswith("multirest-"):
                expected += [("bar of rest",)] * int(token.split("-", 1)[1])
            elif (rest := parse_rest(token)) is not None:
                expected.append(("rest", MUSICXML_TYPE[rest.duration]))
        musicxml = ET.parse(write_score([tokens], tmp_path / f"{sample_id}.musicxml")).getroot()
        written = [("bar of rest",) if note.find("rest").get("measure") == "yes" else ("rest", note.findtext("type"))
                   for note in musicxml.iter("note") if note.find("rest") is not None]
        assert written == expected, sample_id
        assert [fermata.get("type") for fermata in musicxml.iter("fermata")] == (
            ["upright"] * sum("fermata" in token for token in tokens)), sample_id
        rests_checked += len(expected)
    assert rests_checked > 0  # the development set has 5 incipits with a whole rest beside notes, and 8 fermatas


@pytest.mark.integration
def test_synthetic_incipits_become_musicxml_midi_and_mei_that_hold_them(tmp_path):
    rng = random.Random(13)
    for index in range(SYNTHETIC_INCIPITS):
        assert_every_format_holds([random_incipit(rng)], tmp_path, f"synthetic{index}")


def test_every_construct_reaches_the_musicxml():
    tokens = ["clef-C3", "keySignature-EbM", "timeSignature-C/", "gracenote-D4_eighth", "note-Eb4_half_fermata",
              "note-A4_quarter.", "note-A4_eighth", "tie", "barline", "note-A4_half", "rest-quarter_fermata",
              "note-Ab4_sixteenth", "note-G4_sixteenth", "note-F4_eighth", "barline", "multirest-3", "barline",
              "gracenote-G4_quarter", "note-F#4_whole", "barline"]
    score = music21.converter.parseData(write_score_bytes([tokens], ".musicxml"), format="musicxml")
    part = score.parts[0]
    measures = part.getElementsByClass("Measure")

    assert [type(c).__name__ for c in part.recurse().getElementsByClass("Clef")] == ["AltoClef"]
    assert part.recurse().getElementsByClass("KeySignature")[0].sharps == -3
    assert part.recurse().getElementsByClass("TimeSignature")[0].symbol == "cut"
    notes = list(part.recurse().notes)
    assert notes[0].duration.isGrace and notes[0].duration.slash  # an acciaccatura, as PrIMuS engraves it
    assert notes[-2].duration.isGrace and not notes[-2].duration.slash  # an appoggiatura
    assert any(isinstance(e, music21.expressions.Fermata) for e in notes[1].expressions)
    rests = list(part.recurse().getElementsByClass("Rest"))
    assert any(isinstance(e, music21.expressions.Fermata) for e in rests[0].expressions)
    assert [n.tie.type if n.tie else None for n in notes[2:5]] == [None, "start", "stop"]
    assert len(measures) == 1 + 1 + 3 + 1  # the multirest is three bars of rest
    assert sum(1 for _ in part.recurse().getElementsByClass("MultiMeasureRest")) == 1
    assert notes[-1].pitch.accidental.name == "sharp" and notes[-1].pitch.accidental.displayStatus


def write_score_bytes(staves, suffix: str) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return write_score(staves, Path(folder) / f"score{suffix}").read_bytes()


def test_several_staves_form_one_score_with_a_system_each(tmp_path):
    rng = random.Random(5)
    staves = [random_incipit(rng) for _ in range(3)]

    musicxml = write_score(staves, tmp_path / "page.musicxml")

    assert musicxml_notes_and_rests(musicxml) == expected_notes_and_rests(staves)
    assert musicxml.read_text("utf-8").count('new-system="yes"') == 2
    assert verovio_loads(write_score(staves, tmp_path / "page.mei").read_text("utf-8"))


@pytest.mark.parametrize("tokens, message", [
    (["clef-G2", "note-H4_quarter"], "token 2 'note-H4_quarter': not a PrIMuS semantic token"),
    (["clef-G2", "note-C4_quarter", "barline", "clef-G7"], "token 4 'clef-G7': unknown clef"),
    (["note-C4_quarter"], "token 1 'note-C4_quarter': a staff starts with a clef"),
    (["clef-G2", "tie", "note-C4_quarter"], "token 2 'tie': a tie must follow a note"),
    (["clef-G2", "note-C4_quarter", "tie", "rest-quarter"], "token 3 'tie': a tie must be followed by a note"),
    (["clef-G2", "note-C4_quarter", "tie", "timeSignature-C", "gracenote-C4_eighth", "note-C4_quarter"],
     "token 3 'tie': a tie must be followed by a note"),
    (["clef-G2", "keySignature-HM"], "token 2 'keySignature-HM': unknown key signature"),
    (["clef-G2", "timeSignature-3/x"], "token 2 'timeSignature-3/x': unknown meter"),
    (["clef-G2", "multirest-0"], "token 2 'multirest-0': a multirest counts"),
    (["clef-G2", "multirest-10000"], "token 2 'multirest-10000': a multirest counts 1 to 9999 bars"),
])
def test_unknown_or_misplaced_tokens_are_named_with_their_position_and_nothing_is_written(tokens, message, tmp_path):
    for suffix in (".musicxml", ".mid", ".mei"):
        with pytest.raises(SupersmmError, match=message.replace("(", r"\(")):
            write_score([tokens], tmp_path / f"bad{suffix}")
    assert not list(tmp_path.iterdir())


def test_every_token_of_the_primus_semantic_vocabulary_is_accepted(real_dev):
    vocabulary = real_dev.parent / "primus-reference" / "vocabulary_semantic.txt"
    if not vocabulary.is_file():
        pytest.skip(f"{vocabulary} is missing (shared/primus-reference holds it)")
    tokens = vocabulary.read_text("utf-8").split()

    assert len(tokens) == 1781 and "multirest-1111" in tokens
    for token in tokens:
        check_staff(["clef-G2", "note-C4_quarter", token, "note-C4_quarter"])


@pytest.mark.parametrize("staves, ties", [
    ([["clef-G2", "timeSignature-C", "note-C5_half", "tie", "barline", "timeSignature-3/4", "note-C5_quarter"]],
     ["start", "stop"]),
    ([["clef-G2", "note-C5_half", "tie", "barline", "keySignature-DM", "timeSignature-2/4", "note-C5_quarter"]],
     ["start", "stop"]),
    ([["clef-G2", "note-C5_half", "tie", "clef-F4", "note-C5_quarter", "barline"]], ["start", "stop"]),
    ([["clef-G2", "timeSignature-C", "note-C5_half", "note-B4_half", "tie", "barline"]], [None, "start"]),
    ([["clef-G2", "timeSignature-C", "note-C5_whole", "tie"], ["clef-G2", "note-C5_half", "rest-half"]],
     ["start", "stop"]),
    ([["clef-G2", "timeSignature-C", "note-C5_whole", "tie"], ["clef-G2", "rest-half", "note-C5_half"]],
     ["start", None]),
], ids=["over a meter change", "over a key and a meter change", "over a clef change", "open where the incipit ends",
        "into the next staff", "open where the next staff starts with a rest"])
def test_a_tie_reaches_its_note_over_changes_of_meter_key_and_clef(staves, ties, tmp_path):
    assert_every_format_holds(staves, tmp_path, "tied")

    notes = music21.converter.parse(tmp_path / "tied.musicxml").recurse().notes
    assert [note.tie.type if note.tie else None for note in notes] == ties


def test_a_grace_note_sounds_briefly_in_midi_taking_its_time_from_the_note_it_leads_to(tmp_path):
    tokens = ["clef-G2", "timeSignature-C", "note-C5_half", "gracenote-E5_quarter", "note-D5_half", "barline",
              "gracenote-F5_eighth", "note-G5_quarter"]

    midi = write_score([tokens], tmp_path / "grace.mid")

    assert midi_notes(midi) == [(72, 0, 2), (76, 2, 3), (74, 3, 4), (77, 4, Fraction(33, 8)), (79, Fraction(33, 8), 5)]


def test_every_note_of_the_real_incipits_with_grace_notes_ends_in_midi(real_dev, tmp_path):
    graced = {name: tokens for name, tokens in real_labels(real_dev).items()
              if any(token.startswith("gracenote-") for token in tokens)}  # 000051660-1_2_1 in the dev set
    if not graced:
        pytest.skip(f"no incipit with a grace note in {real_dev}")

    for name, tokens in graced.items():
        notes = midi_notes(write_score([tokens], tmp_path / f"{name}.mid"))
        assert [pitch for pitch, _, _ in notes] == sounding_pitches([tokens]), name
        assert all(end is not None and end > start for _, start, end in notes), (name, notes)


def run_supersmm(*arguments, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", *map(str, arguments)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.integration
def test_score_command_writes_the_format_its_suffix_names(real_sample, tmp_path):
    labels = real_sample / f"{real_sample.name}.semantic"
    for name in ("score.musicxml", "score.xml", "score.mid", "score.mei"):
        result = run_supersmm("score", labels, tmp_path / name)
        assert result.returncode == 0, result.stderr
    assert musicxml_notes_and_rests(tmp_path / "score.xml") == expected_notes_and_rests([read_label_file(labels)])
    assert (tmp_path / "score.mid").read_bytes().startswith(b"MThd")
    assert "<mei" in (tmp_path / "score.mei").read_text("utf-8")


@pytest.mark.integration
def test_score_command_reports_a_bad_token_in_one_line_and_writes_nothing(tmp_path):
    labels = tmp_path / "bad.semantic"
    labels.write_text("clef-G2\ttimeSignature-C\tnote-C4_quarter\tnote-C4_quaver\t")

    result = run_supersmm("score", labels, tmp_path / "out.musicxml")
    unknown_format = run_supersmm("score", labels, tmp_path / "out.pdf")

    assert result.returncode == 1
    assert result.stderr.strip() == f"supersmm: error: {labels}: token 4 'note-C4_quaver': not a PrIMuS semantic token"
    assert unknown_format.returncode == 1 and "name it .musicxml, .xml, .mid or .mei" in unknown_format.stderr
    assert len(unknown_format.stderr.strip().splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.semantic"]


def test_a_file_system_error_is_one_line_naming_the_file_and_supersmm_home_when_it_is_no_folder(tmp_path):
    folder_as_labels = run_supersmm("score", tmp_path, tmp_path / "out.mid")
    a_file = tmp_path / "home_is_a_file"
    a_file.write_text("")
    home_is_a_file = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "status"], capture_output=True,
                                    text=True, timeout=300, env={**os.environ, "SUPERSMM_HOME": str(a_file)})

    assert folder_as_labels.returncode == 1
    assert folder_as_labels.stderr.strip() == f"supersmm: error: {tmp_path}: Is a directory"
    assert home_is_a_file.returncode == 1
    assert home_is_a_file.stderr.strip() == (f"supersmm: error: {a_file / 'model'}: Not a directory "
                                             f"(SUPERSMM_HOME {a_file} is not a folder)")


def test_a_current_folder_that_no_longer_exists_is_one_line(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (f"import os; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); "
              "from supersmm_tasks.cli import main; main(['status'])")
    environment = {key: value for key, value in os.environ.items() if key != "SUPERSMM_HOME"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=environment)

    assert result.returncode == 1
    assert result.stderr.strip() == "supersmm: error: the current folder no longer exists: go to another or set " \
                                    "SUPERSMM_HOME"


@pytest.mark.integration
def test_musescore_converts_exported_musicxml_to_pdf(real_dev, tmp_path):
    musescore = shutil.which("musescore3") or shutil.which("mscore3")
    if musescore is None:
        pytest.skip("MuseScore 3 is not installed (apt-get install musescore3; .ci/run installs it)")
    labels = real_labels(real_dev)
    kinds = {"a multirest": lambda tokens: any(token.startswith("multirest-") for token in tokens),
             "a meter change": lambda tokens: sum(token.startswith("timeSignature-") for token in tokens) > 1,
             "a grace note": lambda tokens: any(token.startswith("gracenote-") for token in tokens),
             "a whole rest beside notes (an overfull bar)": lambda tokens: "rest-whole" in tokens and any(
                 token.startswith("note-") for token in tokens)}
    chosen = {next((name for name, tokens in labels.items() if has(tokens)), None) for has in kinds.values()} - {None}
    assert chosen, f"none of {', '.join(kinds)} in {real_dev}"
    for name in sorted(chosen):
        musicxml = write_score([labels[name]], tmp_path / f"{name}.musicxml")
        pdf = tmp_path / f"{name}.pdf"
        result = subprocess.run([musescore, "-o", str(pdf), str(musicxml)], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert pdf.read_bytes().startswith(b"%PDF")


def test_a_label_file_with_a_byte_order_mark_reads_as_detect_and_training_read_it(real_sample, tmp_path):
    labels = real_sample / f"{real_sample.name}.semantic"
    marked = tmp_path / "marked.semantic"
    marked.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())

    assert read_label_file(marked) == read_label_file(labels) == read_label(labels, "semantic")
