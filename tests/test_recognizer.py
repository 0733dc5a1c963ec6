"""Scores out of `supersmm predict`, pages of several staves in, and the model out (`supersmm export`, Recognizer),
with a real tiny model that has learned to read a real PrIMuS staff."""
import os
import re
import subprocess
import sys
from pathlib import Path

import music21
import numpy as np
import pytest
from PIL import Image

from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.recognizer import Recognizer
from supersmm_tasks.staves import find_staves
from test_score import expected_notes_and_rests, musicxml_notes_and_rests, verovio_loads
from test_staves import compose_page, tight

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(learned_run, monkeypatch):
    monkeypatch.setenv("SUPERSMM_HOME", str(learned_run))
    return learned_run


@pytest.fixture
def staff_png(real_sample) -> Path:
    return real_sample / f"{real_sample.name}.png"


def messages(result: subprocess.CompletedProcess) -> list[str]:
    """What supersmm itself said on stderr (TensorFlow's native start-up lines are not ours to silence)."""
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("supersmm:")]


def supersmm(*arguments, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", *map(str, arguments)], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPOSITORY)})


def test_predict_writes_a_score_of_a_real_dev_png_beside_the_tokens(home, staff_png, tmp_path):
    result = supersmm("predict", "run", staff_png, "--score-dir", tmp_path / "scores")

    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    tokens = line.split("\t")
    assert tokens[0].startswith("clef-")
    musicxml = tmp_path / "scores" / f"{staff_png.stem}.musicxml"
    assert music21.converter.parse(musicxml).parts  # music21 reads it
    assert musicxml_notes_and_rests(musicxml) == expected_notes_and_rests([tokens])

    for score_format in ("mid", "mei"):
        result = supersmm("predict", "run", staff_png, "--score-dir", tmp_path / "scores",
                          "--score-format", score_format)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "scores" / f"{staff_png.stem}.mid").read_bytes().startswith(b"MThd")
    assert verovio_loads((tmp_path / "scores" / f"{staff_png.stem}.mei").read_text("utf-8"))


def test_a_page_of_stacked_real_staves_is_read_staff_by_staff_into_one_score(home, staff_png, real_dev, tmp_path):
    pngs = [path for path in sorted(real_dev.glob("*/*-*.png")) if path != staff_png]
    others = [pngs[len(pngs) // 3], pngs[2 * len(pngs) // 3]]  # two more from across the set
    staves = [np.array(Image.open(path).convert("L")) for path in [staff_png, *others]]
    page = tmp_path / "page.png"
    Image.fromarray(compose_page(staves, gaps=[60, 45, 45], lefts=[50, 50, 50])).save(page)
    # The staff as the page reading cuts it: all of its PNG's ink (with at most a pixel of paper more or less than
    # its PNG: PrIMuS's crop), read on its own.
    cut = find_staves(np.array(Image.open(page).convert("L")))[0]
    assert np.array_equal(tight(cut), tight(staves[0]))
    first = tmp_path / "first.png"
    Image.fromarray(cut).save(first)

    result = supersmm("predict", "run", page, "--score-dir", tmp_path)
    alone = supersmm("predict", "run", first)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0] == alone.stdout.strip()  # the page is read staff by staff
    musicxml = (tmp_path / "page.musicxml").read_text("utf-8")
    assert musicxml.count('new-system="yes"') == 2 and musicxml.count("<part ") == 1


def test_an_agnostic_run_writes_the_score_of_what_it_read(learned_agnostic_run, staff_png, tmp_path, monkeypatch):
    from supersmm_tasks.agnostic_to_semantic import agnostic_to_semantic

    monkeypatch.setenv("SUPERSMM_HOME", str(learned_agnostic_run))
    result = supersmm("predict", "run", staff_png, "--score-dir", tmp_path / "scores")

    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    tokens = line.split("\t")
    assert tokens[0].startswith("clef.")  # it prints what it reads: agnostic tokens
    musicxml = tmp_path / "scores" / f"{staff_png.stem}.musicxml"
    assert musicxml_notes_and_rests(musicxml) == expected_notes_and_rests([agnostic_to_semantic(tokens)])

    rendered = supersmm("predict", "run", staff_png, "--render", tmp_path / "read.svg")
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout == result.stdout and (tmp_path / "read.svg").read_text("utf-8").lstrip().startswith("<")


def test_an_agnostic_reading_that_is_no_music_is_one_line_and_no_score(learned_agnostic_run, monkeypatch):
    monkeypatch.setenv("SUPERSMM_HOME", str(learned_agnostic_run))
    recognizer = Recognizer.load("run")

    with pytest.raises(SupersmmError, match="token 2 'dot-S3': cannot be read here"):
        recognizer.semantic([["clef.G-L2", "dot-S3"]])


def test_two_images_of_the_same_name_would_overwrite_each_others_score(home, staff_png, tmp_path):
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / staff_png.name
    copy.write_bytes(staff_png.read_bytes())

    result = supersmm("predict", "run", staff_png, copy, "--score-dir", tmp_path / "scores")

    assert result.returncode == 1 and "same name" in messages(result)[0]
    assert not (tmp_path / "scores").exists()


def test_an_image_that_cannot_be_read_is_one_line_and_the_images_after_it_are_read(home, staff_png, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")

    both = supersmm("predict", "run", staff_png, not_an_image, staff_png)
    alone = supersmm("predict", "run", staff_png)

    assert both.returncode == 1 and alone.returncode == 0
    assert messages(both) == [f"supersmm: error: cannot read image {not_an_image}: not a PNG or JPEG"]
    assert both.stdout == alone.stdout * 2


def readme_code(export: Path) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", (export / "README.md").read_text("utf-8"), re.S)
    return code


def test_an_exported_model_reads_like_predict_in_a_process_without_supersmm(home, staff_png, tmp_path):
    export = tmp_path / "exported"
    result = supersmm("export", "run", export)
    assert result.returncode == 0, result.stderr
    assert {"saved_model.pb", "vocabulary.txt", "README.md", "supersmm.json"} <= {p.name for p in export.iterdir()}
    predicted = supersmm("predict", "run", staff_png).stdout.strip()

    # The README's own example, run from the folder that holds the export, in a Python that cannot import us.
    script = readme_code(export).replace('"staff.png"', repr(str(staff_png))) + (
        "\nimport sys\nassert not [m for m in sys.modules if m.startswith('supersmm')], 'supersmm was imported'\n")
    fresh = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                           timeout=300, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})

    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert fresh.stdout.strip() == predicted and predicted.startswith("clef-")


def test_recognizer_reads_and_scores_with_a_run_or_an_export(home, staff_png, tmp_path):
    from supersmm_tasks.evaluate import predict
    from supersmm_tasks.export import export_run

    export = export_run("run", tmp_path / "exported")
    from_run, from_export = Recognizer.load("run"), Recognizer.load(export)

    (expected,) = predict("run", [str(staff_png)])
    assert from_run.read(staff_png) == from_export.read(staff_png.read_bytes()) == expected
    assert from_export.read_page(staff_png) == [expected]
    score = from_export.score(staff_png, tmp_path / "staff.musicxml")
    assert musicxml_notes_and_rests(score) == expected_notes_and_rests([expected])
    with pytest.raises(SupersmmError, match="already exists"):
        export_run("run", export)
    with pytest.raises(SupersmmError, match="neither a run's name nor a folder"):
        Recognizer.load(tmp_path / "nothing here")
    with pytest.raises(SupersmmError, match="does not exist"):
        from_export.read(tmp_path / "missing.png")


def test_images_other_than_png_or_jpeg_and_damaged_ones_are_one_plain_line(home, staff_png, tmp_path):
    recognizer = Recognizer.load("run")
    for kind in ("WEBP", "BMP", "GIF"):
        other = tmp_path / f"staff.{kind.lower()}"
        Image.open(staff_png).save(other, kind)
        with pytest.raises(SupersmmError, match=f"^cannot read image {re.escape(str(other))}: not a PNG or JPEG$"):
            recognizer.read_page(other)
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(staff_png.read_bytes()[:200])
    with pytest.raises(SupersmmError, match="^cannot read image .*damaged.png: ") as raised:
        recognizer.read(damaged)
    assert "{{" not in str(raised.value) and "function_node" not in str(raised.value)


def test_an_export_goes_into_the_empty_folder_the_user_is_in_and_a_bad_place_is_one_line(home, staff_png, tmp_path,
                                                                                       monkeypatch):
    from supersmm_tasks.export import export_run

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    export_run("run", Path("."))
    assert Recognizer.load(here).read(staff_png) == Recognizer.load("run").read(staff_png)
    assert not list(tmp_path.glob(".*partial")) and not (here / ".partial").exists()

    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(SupersmmError, match="^cannot write .*a_file/model: "):
        export_run("run", tmp_path / "a_file" / "model")
