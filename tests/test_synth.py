"""`supersmm synth`: the musical model, the label converters against real PrIMuS files and Verovio,
and whole corpora written to disk (layout, determinism, camera damage, bad output folders)."""
from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import a_dead_pid
from test_real_labels import ties_notes_of_two_pitches
from supersmm_tasks.agnostic_to_semantic import agnostic_to_semantic
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.labelling import primus_labels
from supersmm_tasks.synth import generate_corpus, sample_id
from supersmm_tasks.synth.agnostic import KEY_SIGNATURE_POSITIONS, mei_to_agnostic
from supersmm_tasks.synth.engrave import Engraver
from supersmm_tasks.synth.mei import mei_to_semantic
from supersmm_tasks.synth.music import IncipitWriter, drawn_final_barline, random_incipit
from supersmm_tasks.synth.notation import KEY_SIGNATURES
from supersmm_tasks.synth.pae_source import verovio_input
from supersmm_tasks.synth.pae import UnsupportedToken, as_sources_write, semantic_to_pae, with_labelled_ties
from supersmm_tasks.synth.roundtrip import round_trip_fraction
from supersmm_tasks.synth.statistics import barred_in_breves
from supersmm_tasks.vocabulary import load_vocabulary

ALL_CLEFS = {"G1", "G2", "C1", "C2", "C3", "C4", "C5", "F3", "F4", "F5"}
DURATIONS = ("double_whole", "whole", "half", "quarter", "eighth", "sixteenth", "thirty_second", "sixty_fourth")


def read_labels(path: Path) -> list[str]:
    text = path.read_text("utf-8")
    assert "\n" not in text.rstrip("\n") and text.endswith("\t"), f"{path.name} is not one TAB-terminated line"
    return text.rstrip("\t").split("\t")


@pytest.fixture(scope="module")
def incipits() -> list[list[str]]:
    rng = random.Random(2024)
    return [random_incipit(rng) for _ in range(300)]


# --- the musical model -------------------------------------------------------------------------

def test_every_generated_token_is_in_the_real_semantic_vocabulary(incipits):
    vocabulary = set(load_vocabulary("semantic"))
    assert len(vocabulary) == 1781
    assert {token for incipit in incipits for token in incipit} <= vocabulary


def test_incipits_cover_clefs_keys_meters_durations_and_ornaments():
    """Rare symbols stay reachable: 3,000 incipits (a small corpus) hold every clef, key, duration and ornament."""
    rng = random.Random(2024)
    tokens = Counter(token for _ in range(3000) for token in random_incipit(rng))
    families = lambda prefix: {t.split("-", 1)[1] for t in tokens if t.startswith(prefix)}  # noqa: E731
    assert families("clef-") == ALL_CLEFS
    assert families("keySignature-") == set(KEY_SIGNATURES) - {"CM"}  # C major: no key token, as in PrIMuS
    meters = families("timeSignature-")
    assert len(meters) >= 12 and {"C", "C/"} <= meters
    for duration in DURATIONS:
        assert any(re.fullmatch(rf"note-\w+?\d_{duration}\.?\.?(_fermata)?", t) for t in tokens), duration
    assert any(t.startswith("note-") and ".." in t for t in tokens)
    assert any(t.startswith("gracenote-") for t in tokens)
    assert any(t.endswith("_fermata") for t in tokens)
    assert any(t.startswith("multirest-") for t in tokens)
    assert any(t.startswith("rest-") for t in tokens)
    assert tokens["tie"] > 0 and tokens["barline"] > 0
    assert any("#" in t for t in tokens) and any(re.match(r"note-[A-G]b", t) for t in tokens)


def test_incipits_have_primus_like_length_and_fill_their_measures(incipits):
    lengths = sorted(len(incipit) for incipit in incipits)
    assert lengths[len(lengths) // 2] in range(15, 35)
    assert lengths[0] >= 6 and lengths[-1] <= 60
    for incipit in incipits:
        assert incipit[0].startswith("clef-")
        assert any(t.startswith("timeSignature-") for t in incipit[1:3])


def test_an_incipit_barred_in_breves_ends_its_last_breve_unlabelled_but_drawn():
    """PrIMuS labels the final barline by the meter (C/: a whole note), while the source closes a complete breve."""
    rng, closed = random.Random(3), 0
    for _ in range(400):
        writer = IncipitWriter(rng)
        tokens = writer.tokens()
        if not (barred_in_breves(tokens) and writer.ends_with_full_measure):
            continue
        closed += 1
        assert tokens[-1] != "barline", tokens
        assert drawn_final_barline(rng, writer.ends_with_full_measure, tokens)
    assert closed >= 5


def test_same_seed_same_incipit_and_different_seeds_differ():
    assert random_incipit(random.Random(5)) == random_incipit(random.Random(5))
    assert random_incipit(random.Random(5)) != random_incipit(random.Random(6))


# --- the labels, checked against a real PrIMuS file and Verovio -----------------------------------

# The converters against every real incipit of the development set: tests/test_real_labels.py.

def test_real_primus_labels_go_through_our_plaine_and_easie_and_verovio_and_back(real_dev):
    """Every real label, written as Plaine & Easie and engraved, is read back unchanged (but for PrIMuS's ties
    between notes of two pitches, test_real_labels.NOT_REPRODUCIBLE); its agnostic label is the real one but for
    the beams (ours beam by the beat, where a source may leave eighths unbeamed) and the courtesy accidentals a
    source prints, which a semantic label does not record (3 of the 129 development incipits), and notes a source
    beams with no beam of their own (beamed half notes, 1 of them), which ours leave unbeamed."""
    flags = {"1": "eighth", "2": "sixteenth", "3": "thirty_second", "4": "sixty_fourth"}

    def unbeamed(tokens):
        return [re.sub(r"beamed(?:Right|Both|Left)([1-4])", lambda m: flags[m[1]], token) for token in tokens]

    def without_accidentals(tokens):
        return [token for token in tokens if not token.startswith("accidental.")]

    engraver, checked = Engraver(), 0
    for folder in sorted(path for path in real_dev.iterdir() if (path / f"{path.name}.semantic").is_file()):
        tokens = read_labels(folder / f"{folder.name}.semantic")
        if ties_notes_of_two_pitches(tokens):
            continue
        mei = engraver.load(semantic_to_pae(tokens))
        assert mei_to_semantic(mei) == tokens, folder.name
        ours, real = unbeamed(mei_to_agnostic(mei)), unbeamed(read_labels(folder / f"{folder.name}.agnostic"))
        if not any(re.search(r"beamed(?:Right|Both|Left)0-", token) for token in real):
            assert without_accidentals(ours) == without_accidentals(real), folder.name
        checked += 1

    assert checked


def test_500_incipits_come_back_unchanged_from_verovio():
    assert round_trip_fraction(500, seed=11) >= 0.99


def test_a_changed_label_no_longer_matches_verovio():
    tokens = random_incipit(random.Random(3))
    mei = Engraver().load(semantic_to_pae(tokens))
    index = next(i for i, t in enumerate(tokens) if t.startswith("note-"))
    changed = tokens[:index] + [tokens[index].replace("_", "_x", 1)] + tokens[index + 1:]
    assert mei_to_semantic(mei) == tokens != changed


@pytest.mark.parametrize("tokens", [
    ["clef-G2", "timeSignature-C", "note-C4_trill"],
    ["timeSignature-C", "note-C4_quarter"],
    ["clef-G2", "tie", "note-C4_quarter"],
    ["clef-G2", "rest-quarter", "tie", "note-C4_quarter"],
])
def test_plaine_easie_refuses_what_it_cannot_write(tokens):
    with pytest.raises(UnsupportedToken):
        semantic_to_pae(tokens)


def test_key_signature_positions_are_where_verovio_draws_them():
    toolkit = Engraver().toolkit
    for clef, (sharps, flats) in KEY_SIGNATURE_POSITIONS.items():
        for signature, expected in (("xFCGDAEB", sharps), ("bBEADGCF", flats)):
            toolkit.loadData(f"@clef:{clef[0]}-{clef[1]}\n@keysig:{signature}\n@timesig:4/4\n@data:4C/\n")
            svg = toolkit.renderToSVG(1)
            lines = [int(y) for y in re.findall(r'<path d="M0 (\d+) L', svg)[:5]]
            drawn = svg[svg.index('class="keySig"'):svg.index('class="meterSig"')]
            half_space = (max(lines) - min(lines)) / 8
            heights = re.findall(r"translate\(\d+, (\d+)\)", drawn)
            positions = [round((max(lines) - int(y)) / half_space) for y in heights]
            assert tuple(positions) == expected, (clef, signature)


def test_a_key_change_inside_the_incipit_is_labelled_after_its_barline_and_the_notes_read_the_new_key():
    """PrIMuS's converter writes every key signature it meets inside the music: a `keySignature` token after the
    barline (C major too), the new key's accidentals where the clef draws them (no naturals that cancel the old
    key), and the notes after it in the new key."""
    mei = Engraver().load(verovio_input("%G-2@3/4$bB ''4D8BB4G/$xF 4A8FF4G/$ 4G8BB4F/"))

    assert mei_to_semantic(mei) == [
        "clef-G2", "keySignature-FM", "timeSignature-3/4", "note-D5_quarter", "note-Bb5_eighth", "note-Bb5_eighth",
        "note-G5_quarter", "barline", "keySignature-GM", "note-A5_quarter", "note-F#5_eighth", "note-F#5_eighth",
        "note-G5_quarter", "barline", "keySignature-CM", "note-G5_quarter", "note-B5_eighth", "note-B5_eighth",
        "note-F5_quarter", "barline"]
    assert mei_to_agnostic(mei) == [
        "clef.G-L2", "accidental.flat-L3", "digit.3-L4", "digit.4-L2", "note.quarter-L4", "note.eighth-S6",
        "note.eighth-S6", "note.quarter-S5", "barline-L1", "accidental.sharp-L5", "note.quarter-L6", "note.eighth-L5",
        "note.eighth-L5", "note.quarter-S5", "barline-L1", "note.quarter-S5", "note.eighth-S6", "note.eighth-S6",
        "note.quarter-L5", "barline-L1"]
    # Verovio draws naturals where the old key's accidentals were only for a change to C major; the symbols as
    # drawn have them, PrIMuS's label not
    assert mei_to_agnostic(mei, drawn=True)[14:16] == ["barline-L1", "accidental.natural-L5"]
    assert mei_to_semantic(Engraver().load(semantic_to_pae(mei_to_semantic(mei)))) == mei_to_semantic(mei)
    # what it draws (the labels networks learn) gives PrIMuS's label back, and the music
    assert primus_labels(mei_to_agnostic(mei, drawn=True)) == mei_to_agnostic(mei)
    assert agnostic_to_semantic(mei_to_agnostic(mei))[:14] == mei_to_semantic(mei)[:14]  # C major draws nothing


def test_a_change_inside_the_first_measure_is_the_heading_as_verovio_draws_it():
    """Verovio moves a change to the start of its measure: in the first, the heading shows only the new key or
    meter, so that is the label's heading too."""
    for pae, heading in (("%G-2@2/4$bB ''4D$xF 4F/4G4F/", ["clef-G2", "keySignature-GM", "timeSignature-2/4"]),
                         ("%G-2@2/4$bB ''4D@3/4 4F4E/", ["clef-G2", "keySignature-FM", "timeSignature-3/4"])):
        engraver = Engraver()
        semantic = mei_to_semantic(engraver.load(verovio_input(pae)))
        assert semantic[:4] == heading + ["note-D5_quarter"], pae
        assert not [token for token in semantic[3:] if token.startswith(("keySignature-", "timeSignature-"))], pae
        svg = engraver.toolkit.renderToSVG(1)
        assert svg.count('class="keySig"') == svg.count('class="meterSig"') == 1, pae  # one heading drawn


def test_a_key_change_written_as_the_verovio_that_made_primus_wrote_it_is_read_alike():
    """That Verovio gave a change as a `key.sig` attribute of a scoreDef between two measures (as the development
    set's meter change, 000100008-1_1_2); today's gives a keySig element."""
    mei = """<mei xmlns="http://www.music-encoding.org/ns/mei"><music><body><mdiv><score>
      <scoreDef key.sig="2s" meter.count="2" meter.unit="4"><staffGrp>
        <staffDef n="1" lines="5" clef.shape="C" clef.line="1"/></staffGrp></scoreDef>
      <section>
        <measure n="1"><staff n="1"><layer n="1"><note dur="4" oct="5" pname="c"/><note dur="4" oct="4" pname="f"/>
        </layer></staff></measure>
        <scoreDef key.sig="1f"/>
        <measure n="2"><staff n="1"><layer n="1"><note dur="4" oct="4" pname="b"/><note dur="4" oct="5" pname="c"/>
        </layer></staff></measure>
      </section></score></mdiv></body></music></mei>"""

    assert mei_to_semantic(mei) == ["clef-C1", "keySignature-DM", "timeSignature-2/4", "note-C#5_quarter",
                                    "note-F#4_quarter", "barline", "keySignature-FM", "note-Bb4_quarter",
                                    "note-C5_quarter", "barline"]
    assert mei_to_agnostic(mei)[7:] == ["barline-L1", "accidental.flat-L4", "note.quarter-L4", "note.quarter-S4",
                                        "barline-L1"]


def test_own_rasterizer_draws_what_cairosvg_draws():
    import io

    import cairosvg
    from PIL import Image

    from supersmm_tasks.synth.rasterize import svg_to_gray

    engraver = Engraver()
    rng = random.Random(8)
    for font in ("Leipzig", "Bravura", "Gootville"):
        engraver.engrave(semantic_to_pae(random_incipit(rng)), font, 0)
        svg = engraver.toolkit.renderToSVG(1)
        ours = svg_to_gray(svg).astype(int)
        reference_png = cairosvg.svg2png(bytestring=svg.encode(), background_color="white")
        reference = np.array(Image.open(io.BytesIO(reference_png)).convert("L"))
        assert ours.shape == reference.shape
        assert (ours < 128).sum() > 0.02 * ours.size  # there is music on it
        assert np.abs(ours - reference).mean() < 0.5
        assert (np.abs(ours - reference) > 96).mean() < 0.001


# --- whole corpora ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    report = generate_corpus(out, samples=9, seed=4, camera=True, workers=2, progress=False)
    assert report.count == 9 and report.out == out.resolve() and report.camera
    return out


def test_corpus_has_the_primus_layout_with_checked_labels(corpus):
    ids = sorted(p.name for p in corpus.iterdir())
    assert ids == [sample_id(4, i) for i in range(9)]
    with_agnostic = 0
    for name in ids:
        folder = corpus / name
        mei = (folder / f"{name}.mei").read_text("utf-8")
        assert mei_to_semantic(mei) == read_labels(folder / f"{name}.semantic")
        if (folder / f"{name}.agnostic").exists():
            with_agnostic += 1
            assert read_labels(folder / f"{name}.agnostic") == mei_to_agnostic(mei)
            assert set(read_labels(folder / f"{name}.agnostic")) <= set(load_vocabulary("agnostic"))
            drawn = read_labels(folder / f"{name}.drawn.agnostic")
            assert set(drawn) <= set(load_vocabulary("agnostic"))
            assert primus_labels(drawn) == read_labels(folder / f"{name}.agnostic")
        clean = cv2.imread(str(folder / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        assert 80 <= clean.shape[0] <= 320 and clean.shape[1] > 200
        assert (clean < 128).mean() > 0.02
        photo = cv2.imread(str(folder / f"{name}_distorted.jpg"), cv2.IMREAD_UNCHANGED)
        assert photo.ndim == 2  # grayscale, like Camera-PrIMuS
        # A slanted copy on a grown canvas, less a few cut rows: the real photos are 2 rows shorter to 57 taller
        assert clean.shape[0] - 8 <= photo.shape[0] <= clean.shape[0] * 1.5 and photo.shape[1] >= clean.shape[1]
        resized = cv2.resize(photo, clean.shape[::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(resized.astype(int) - clean).mean() > 10
    assert with_agnostic >= 3


def test_the_drawn_symbols_show_every_tie_and_only_the_printed_accidentals(tmp_path):
    generate_corpus(tmp_path, samples=80, seed=0, workers=2, progress=False)
    more_ties = more_naturals = 0
    for folder in sorted(tmp_path.iterdir()):
        if not (folder / f"{folder.name}.agnostic").exists():
            continue
        drawn = read_labels(folder / f"{folder.name}.drawn.agnostic")
        label = read_labels(folder / f"{folder.name}.agnostic")
        assert primus_labels(drawn) == label, folder.name
        count = lambda tokens, kind: sum(token.startswith(kind) for token in tokens)
        more_ties += count(drawn, "slur.start") > count(label, "slur.start")
        more_naturals += count(label, "accidental.natural") > count(drawn, "accidental.natural")
    assert more_ties and more_naturals, (more_ties, more_naturals)


def test_corpus_is_the_same_bytes_whatever_the_number_of_workers(corpus, tmp_path):
    again = tmp_path / "again"
    generate_corpus(again, samples=9, seed=4, camera=True, workers=1, progress=False)
    files = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in files:
        assert (corpus / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_another_seed_gives_another_corpus(corpus, tmp_path):
    generate_corpus(tmp_path, samples=1, seed=5, camera=False, workers=1, progress=False)
    other = tmp_path / sample_id(5, 0) / f"{sample_id(5, 0)}.semantic"
    assert other.read_text() != (corpus / sample_id(4, 0) / f"{sample_id(4, 0)}.semantic").read_text()
    assert not (tmp_path / sample_id(5, 0) / f"{sample_id(5, 0)}_distorted.jpg").exists()


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    generate_corpus(tmp_path, samples=1, seed=6, workers=1, progress=True)
    captured = capsys.readouterr()
    assert "1/1" in captured.err and captured.out == ""


def test_unusable_output_or_sample_count_is_one_clear_error(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    with pytest.raises(SupersmmError, match="taken"):
        generate_corpus(a_file, samples=1, progress=False)
    with pytest.raises(SupersmmError, match="taken"):
        generate_corpus(a_file / "inside", samples=1, progress=False)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(SupersmmError, match="samples"):
            generate_corpus(tmp_path / "out", samples=bad, progress=False)
    with pytest.raises(SupersmmError, match="seed"):
        generate_corpus(tmp_path / "out", samples=1, seed=-1, progress=False)
    assert a_file.read_text() == "not a folder"


def test_a_sample_cut_off_by_a_full_disk_leaves_no_folder_and_the_next_synth_writes_it_whole(tmp_path, monkeypatch):
    import errno
    import pickle

    from supersmm_tasks import durable

    write, written = durable._write_fully, []

    def disk_fills_at_the_second_file_of_the_second_sample(fd, data):
        written.append(len(data))
        if len(written) == 7:  # a sample without camera damage has 5 files: png, semantic, mei, agnostic, drawn
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(fd, data)

    abandoned = tmp_path / f".{sample_id(7, 2)}.{a_dead_pid()}.tmp"  # a synth killed while writing
    abandoned.mkdir()
    (abandoned / "half.png").write_bytes(b"\x89PNG")
    monkeypatch.setattr(durable, "_write_fully", disk_fills_at_the_second_file_of_the_second_sample)
    with pytest.raises(SupersmmError) as raised:
        generate_corpus(tmp_path, samples=3, seed=7, workers=1, progress=False)

    assert str(raised.value) == (f"disk full while writing {tmp_path / sample_id(7, 1)}: free some space and try "
                                 f"again; nothing of it was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == [sample_id(7, 0)]  # whole, and nothing hidden left
    assert len(list((tmp_path / sample_id(7, 0)).iterdir())) == 5
    # A worker process hands the error back pickled (synth --workers 2): it reads the same.
    assert str(pickle.loads(pickle.dumps(raised.value))) == str(raised.value)

    monkeypatch.setattr(durable, "_write_fully", write)  # space freed
    generate_corpus(tmp_path, samples=3, seed=7, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [sample_id(7, index) for index in range(3)]
    assert all(len(list((tmp_path / sample_id(7, index)).iterdir())) == 5 for index in range(3))


def test_ties_are_labelled_where_a_source_writing_only_changed_marks_would_have_them_labelled():
    # `4''D+4''D` in the first measure: D carries its marks over from C as a source writes it, so PrIMuS has no tie;
    # after the barline D starts afresh, and `8'E` changes both marks: those two ties are labelled.
    pae = "@clef:G-2\n@keysig:\n@timesig:2/4\n@data:4''C4''D+4''D/4''D+4''D8'E+8'E\n"
    assert as_sources_write("4''C4''D+4''D/4''D+4''D8'E+8'E") == "4''CD+D/D+D8'E+E"
    assert with_labelled_ties(pae) == pae.replace("4''D+", "4''D", 1)
    assert with_labelled_ties(pae.replace("4''C", "8''C")) == pae.replace("4''C", "8''C")  # D has its own duration


def test_staves_are_justified_to_the_page_as_in_primus_and_a_long_one_is_squeezed_onto_it():
    from supersmm_tasks.synth.realism import is_justified

    engraver = Engraver()
    measure = ["note-C5_quarter", "note-D5_quarter", "note-E5_quarter", "note-F5_quarter", "barline"]
    widths, heights = {}, {}
    for measures in (2, 5, 8):  # 730 columns by nature; 1,650 (stretched); 2,570 (squeezed)
        tokens = ["clef-G2", "keySignature-CM", "timeSignature-4/4"] + measure * measures
        image, _ = engraver.engrave(semantic_to_pae(tokens), "Leipzig", 0)
        heights[measures], widths[measures] = image.shape
    assert not is_justified(widths[2]) and widths[2] < widths[5]
    assert is_justified(widths[5]) and is_justified(widths[8])
    assert widths[8] == widths[5]  # squeezed to the page
    assert heights[8] == heights[5] == heights[2]  # one staff, not two systems
