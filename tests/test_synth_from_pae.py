"""`supersmm synth OUT --from-pae FILE`, run as a real subprocess on the development set's real PAE:
the PrIMuS layout, PrIMuS's labels, both spellings of an incipit, determinism, and bad input."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_real_dev
from test_real_labels import incipit_folders, not_reproducible, read_labels

PRIMUS_FORM = re.compile(r"%(?P<clef>[^@$]+)@(?P<timesig>[^$]*)\$(?P<keysig>[^ü]*)ü (?P<data>.*)")


def synth(*arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "synth", *map(str, arguments)],
                          capture_output=True, text=True, env=environment, timeout=600)


def rism_form(primus_pae: str) -> str:
    """The same incipit as RISM writes it, its fields joined on one line."""
    fields = PRIMUS_FORM.fullmatch(primus_pae.strip())
    return f"@clef:{fields['clef']}@keysig:{fields['keysig']}@timesig:{fields['timesig']}@data:{fields['data']}"


@pytest.fixture(scope="module")
def dev_lines() -> list[tuple[str, str]]:
    """(id, PAE) of every dev incipit: every third one in RISM's spelling, the others in PrIMuS's."""
    folders = incipit_folders(require_real_dev())
    lines = []
    for index, folder in enumerate(folders):
        pae = (folder / "regular_pae.pae").read_text("utf-8").strip()
        lines.append((folder.name, rism_form(pae) if index % 3 == 0 else pae))
    return lines


@pytest.fixture(scope="module")
def dev_corpus(tmp_path_factory, dev_lines) -> tuple[Path, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("from_pae")
    pae_file = folder / "dev.tsv"
    pae_file.write_text("".join(f"{sample}\t{pae}\n" for sample, pae in dev_lines), "utf-8")
    result = synth(folder / "corpus", "--from-pae", pae_file, "--workers", "2")
    return folder / "corpus", result


def test_every_dev_incipit_is_written_in_the_primus_layout_with_primus_labels(dev_corpus, dev_lines):
    corpus, result = dev_corpus
    assert result.returncode == 0, result.stderr
    assert f"wrote {len(dev_lines)} incipits" in result.stdout
    real = require_real_dev()
    for sample, pae in dev_lines:
        folder = corpus / sample
        assert {path.name for path in folder.iterdir()} == {
            f"{sample}.png", f"{sample}.semantic", f"{sample}.agnostic", f"{sample}.drawn.agnostic", f"{sample}.mei",
            "regular_pae.pae"}
        assert (folder / "regular_pae.pae").read_text("utf-8") == pae + "\n"
        assert (folder / f"{sample}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if not_reproducible(real / sample):
            continue
        for suffix in (".semantic", ".agnostic"):
            assert read_labels(folder / f"{sample}{suffix}") == read_labels(real / sample / f"{sample}{suffix}"), sample


def test_given_incipits_are_engraved_in_the_three_fonts_as_primus_ones_are(dev_corpus, dev_lines):
    import collections

    import cv2

    from supersmm_tasks.synth.engrave import FONTS, Engraver, font_for
    from supersmm_tasks.synth.pae_source import drawn_verovio_input
    from supersmm_tasks.synth.realism import nearest_font

    corpus, _ = dev_corpus
    engraver, fonts = Engraver(), collections.Counter()
    for sample, pae in dev_lines:
        image = cv2.imread(str(corpus / sample / f"{sample}.png"), cv2.IMREAD_GRAYSCALE)
        font = nearest_font(image, drawn_verovio_input(pae), engraver)  # as the real images' fonts are told
        assert font == font_for(sample), sample
        fonts[font] += 1

    # in about equal parts: each font's count within four standard deviations of a third (0.18-0.49 of 129)
    spread = 4 * (fonts.total() * 2 / 9) ** 0.5
    assert set(fonts) == set(FONTS) and all(abs(count - fonts.total() / 3) <= spread for count in fonts.values()), fonts


def test_the_same_file_gives_the_same_bytes_with_any_number_of_workers(dev_corpus, dev_lines, tmp_path):
    corpus, _ = dev_corpus
    pae_file = tmp_path / "some.tsv"
    chosen = dev_lines[:12]
    pae_file.write_text("".join(f"{sample}\t{pae}\n" for sample, pae in chosen), "utf-8")
    assert synth(tmp_path / "again", "--from-pae", pae_file, "--workers", "1").returncode == 0
    for sample, _ in chosen:
        for path in (corpus / sample).iterdir():
            assert (tmp_path / "again" / sample / path.name).read_bytes() == path.read_bytes(), path.name


def test_camera_adds_the_distorted_image(dev_lines, tmp_path):
    pae_file = tmp_path / "two.tsv"
    pae_file.write_text("".join(f"{sample}\t{pae}\n" for sample, pae in dev_lines[:2]), "utf-8")
    result = synth(tmp_path / "camera", "--from-pae", pae_file, "--camera")
    assert result.returncode == 0, result.stderr
    for sample, _ in dev_lines[:2]:
        assert (tmp_path / "camera" / sample / f"{sample}_distorted.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_an_incipit_that_cannot_be_labelled_is_listed_and_the_others_are_written(dev_lines, tmp_path):
    pae_file = tmp_path / "mixed.tsv"
    sample, pae = dev_lines[1]
    pae_file.write_text(f"chords\t@clef:G-2@keysig:@timesig:4/4@data:4C^E^G/\n"
                        f"flats7\t%G-2@c$bBEADGCFü '4C/\n"  # PrIMuS has no key of 7 flats
                        f"tenor\t%g-2@c$ü '2GA/1C/\n"  # drawn with an 8 under the clef, every note an octave up
                        f"triple\t%C-1@3$ü '2GAB/1C/\n"  # drawn as one "3", where PrIMuS's tokens say 3/1
                        f"{sample}\t{pae}\n", "utf-8")
    result = synth(tmp_path / "mixed", "--from-pae", pae_file)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^chords: cannot be engraved or labelled: <chord>", result.stderr, re.MULTILINE)
    assert re.search(r"^flats7: cannot be engraved or labelled: a key signature of 7 flats has no semantic token$",
                     result.stderr, re.MULTILINE)
    assert re.search(r"^tenor: cannot be labelled as drawn: the clef G2 drawn with an octave mark \(8\)",
                     result.stderr, re.MULTILINE)
    assert re.search(r"^triple: cannot be labelled as drawn: the meter drawn as the one number 3", result.stderr,
                     re.MULTILINE)
    assert "wrote 1 incipits" in result.stdout and "4 left out" in result.stdout and "Traceback" not in result.stderr
    assert not any((tmp_path / "mixed" / left_out).exists() for left_out in ("chords", "flats7", "tenor", "triple"))
    assert (tmp_path / "mixed" / sample / f"{sample}.semantic").is_file()


@pytest.mark.parametrize("content, message", [
    ("good\t%G-2@c$ü 4C/\nno tab here\n", r"line 2: expected ID<TAB>PAE"),
    ("good\t%G-2@c$ü 4C/\n\n../escape\t%G-2@c$ü 4C/\n", r"line 3: invalid incipit id '\.\./escape'"),
    ("Upper\t%G-2@c$ü 4C/\n", r"line 1: invalid incipit id 'Upper'"),
    ("twice\t%G-2@c$ü 4C/\ntwice\t%G-2@c$ü 4D/\n", r"line 2: the id 'twice' is given twice"),
    ("nopae\tjust words\n", r"line 1: neither PrIMuS's"),
    ("nodata\t@clef:G-2@keysig:@timesig:c\n", r"line 1: no music"),
    ("", r"holds no incipit"),
])
def test_a_malformed_line_is_named_with_its_number_and_nothing_is_written(tmp_path, content, message):
    pae_file = tmp_path / "bad.tsv"
    pae_file.write_text(content, "utf-8")
    result = synth(tmp_path / "out", "--from-pae", pae_file)
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_samples_and_from_pae_are_one_or_the_other(tmp_path):
    result = synth(tmp_path / "out", "--samples", "2", "--from-pae", tmp_path / "x.tsv")
    assert result.returncode != 0 and "either --samples N" in result.stderr
    assert "either --samples N" in synth(tmp_path / "out").stderr


def test_a_tie_that_primus_does_not_label_is_still_drawn(tmp_path):
    """`'4FD+/4D`: the Verovio that made PrIMuS drew the tie but marked it on F and D, so PrIMuS labels none
    (tests/test_pae_source.py); its image has the tie all the same, as the real PNGs do."""
    from supersmm_tasks.synth.engrave import font_for

    names = ("tied_2", "untied_2")
    assert font_for(names[0]) == font_for(names[1])  # engraved in one font, so that only the tie differs
    pae_file = tmp_path / "ties.tsv"
    pae_file.write_text(f"{names[0]}\t%G-2@2/4$ü '4FD+/4D/\n{names[1]}\t%G-2@2/4$ü '4FD/4D/\n", "utf-8")
    assert synth(tmp_path / "out", "--from-pae", pae_file, "--workers", "1").returncode == 0
    sample = {name: tmp_path / "out" / name / name for name in names}
    for suffix in (".semantic", ".agnostic"):
        tied, untied = (Path(f"{sample[name]}{suffix}").read_text("utf-8") for name in names)
        assert tied == untied and "tie" not in tied and "slur" not in tied
    tied, untied = (np.array(Image.open(f"{sample[name]}.png")) for name in names)
    assert tied.shape == untied.shape and (tied != untied).sum() > 50  # the arc


def test_incipits_written_without_an_agnostic_label_are_counted_in_the_report(tmp_path):
    pae_file = tmp_path / "long.tsv"
    pae_file.write_text("longa\t%G-2@c$ü '0C/\n", "utf-8")  # a quadruple whole note: no agnostic token draws it
    result = synth(tmp_path / "long", "--from-pae", pae_file)
    assert result.returncode == 0, result.stderr
    assert "wrote 1 incipits" in result.stdout and "1 without an agnostic label" in result.stdout
    assert (tmp_path / "long" / "longa" / "longa.semantic").is_file()
    assert not (tmp_path / "long" / "longa" / "longa.agnostic").exists()
