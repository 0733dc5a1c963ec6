"""Finding corpora and validating samples, on copies of the real PrIMuS sample (some corrupted on purpose)."""
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from conftest import REAL_SAMPLE_ID, add_sample, require_real_dev

from supersmm_tasks.corpus import Example, check_sample, find_corpora, read_drawn_label, read_label


def only_corpus(data_root: Path):
    corpora = find_corpora(data_root)
    assert len(corpora) == 1, [c.name for c in corpora]
    return corpora[0]


def checked(folder: Path):
    corpus = only_corpus(folder.parent.parent)
    return check_sample(corpus, folder)


def test_reads_the_real_sample_exactly(tmp_path):
    folder = add_sample(tmp_path / "primus")
    corpus = only_corpus(tmp_path)
    sample = check_sample(corpus, folder)

    assert (corpus.name, corpus.camera, corpus.sample_folders) == ("primus", False, [folder])
    assert (sample.width, sample.height) == Image.open(folder / f"{REAL_SAMPLE_ID}.png").size  # 1226 x 155 in the dev set
    assert (sample.encodings, sample.problems) == (("semantic", "agnostic"), [])
    line = (require_real_dev() / REAL_SAMPLE_ID / f"{REAL_SAMPLE_ID}.semantic").read_text("utf-8")
    assert line.endswith("\t")
    assert read_label(folder / f"{REAL_SAMPLE_ID}.semantic", "semantic") == line[:-1].split("\t")


def test_crlf_bom_and_missing_trailing_tab_are_accepted(tmp_path):
    folder = add_sample(tmp_path / "primus")
    label = folder / f"{REAL_SAMPLE_ID}.semantic"
    tokens = label.read_text("utf-8").split("\t")[:-1]
    label.write_bytes(b"\xef\xbb\xbf" + "\t".join(tokens).encode() + b"\r\n")

    assert read_label(label, "semantic") == tokens
    assert checked(folder).problems == []


def truncate_png(folder):
    png = folder / f"{folder.name}.png"
    png.write_bytes(png.read_bytes()[:-200])


def empty_semantic(folder):
    (folder / f"{folder.name}.semantic").write_bytes(b"")


def unknown_token(folder):
    label = folder / f"{folder.name}.semantic"
    tokens = label.read_text("utf-8").split("\t")
    tokens[4] = "note-H9_quarter"
    label.write_text("\t".join(tokens), "utf-8")


def latin1_semantic(folder):
    (folder / f"{folder.name}.semantic").write_bytes("clef-G2\tnote-C4_quarter\t\xe9".encode("latin-1"))


def no_labels(folder):
    for encoding in ("semantic", "agnostic"):
        (folder / f"{folder.name}.{encoding}").unlink()


def no_image(folder):
    (folder / f"{folder.name}.png").unlink()


def unknown_drawn_token(folder):
    drawn = (folder / f"{folder.name}.agnostic").read_text("utf-8").replace("barline-L1", "barline-L9", 1)
    (folder / f"{folder.name}.drawn.agnostic").write_text(drawn, "utf-8")


@pytest.mark.parametrize("damage, reason, usable", [
    (truncate_png, ".png: truncated PNG (no IEND chunk at the end)", ()),
    (empty_semantic, ".semantic: empty label", ("agnostic",)),
    (unknown_token, ".semantic: unknown semantic token 'note-H9_quarter' (token 5)", ("agnostic",)),
    (latin1_semantic, ".semantic: not UTF-8 (byte 0xe9 at offset 24)", ("agnostic",)),
    (no_labels, ".semantic and .agnostic: no label file", ()),
    (no_image, ".png: image missing", ()),
    (unknown_drawn_token, ".drawn.agnostic: unknown agnostic token 'barline-L9'", ("semantic",)),
])
def test_a_damaged_sample_is_reported_with_a_precise_reason(tmp_path, damage, reason, usable):
    folder = add_sample(tmp_path / "primus", "s1")
    damage(folder)
    sample = checked(folder)

    assert f"s1/s1{reason}" in sample.problems[0]
    assert sample.encodings == usable
    if usable:
        assert sample.problems[-1] == f"usable with --encoding {usable[0]} only"


def test_a_corpus_without_drawn_symbols_trains_on_its_labels_and_one_with_them_on_them(tmp_path):
    folder = add_sample(tmp_path / "primus", "s1")
    label = read_label(folder / "s1.agnostic", "agnostic")
    assert (checked(folder).problems, read_drawn_label(folder / "s1.drawn.agnostic")) == ([], None)
    assert Example("s1", "s1.png", label).target == label
    drawn = label[:-1]
    (folder / "s1.drawn.agnostic").write_text("\t".join(drawn) + "\t", "utf-8")
    assert (checked(folder).problems, read_drawn_label(folder / "s1.drawn.agnostic")) == ([], drawn)
    assert Example("s1", "s1.png", label, drawn=drawn).target == drawn


def test_a_missing_label_of_one_encoding_is_no_defect(tmp_path):
    folder = add_sample(tmp_path / "primus", "s1")
    (folder / "s1.agnostic").unlink()
    sample = checked(folder)
    assert (sample.encodings, sample.problems) == (("semantic",), [])


def test_truncated_jpeg_of_a_camera_corpus_is_detected(tmp_path):
    folder = add_sample(tmp_path / "camera_primus", "s1", distorted=True)
    jpeg = folder / "s1_distorted.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    corpus = only_corpus(tmp_path)

    assert corpus.camera
    assert check_sample(corpus, folder).problems[0] == "s1/s1_distorted.jpg: truncated JPEG (no end-of-image marker)"


def test_official_archive_layouts_and_folder_names(tmp_path):
    add_sample(tmp_path / "PrIMuS" / "package_aa", "a1")
    add_sample(tmp_path / "PrIMuS" / "package_ab", "b1")
    add_sample(tmp_path / "downloads" / "Corpus", "c1", distorted=True)
    add_sample(tmp_path / "My Scans-2", "m1")
    add_sample(tmp_path / "only_photos", "p1", distorted=True)
    (tmp_path / "only_photos" / "p1" / "p1.png").unlink()
    add_sample(tmp_path / "synthetic" / "primus", "s1", distorted=True)

    found = {corpus.name: corpus for corpus in find_corpora(tmp_path)}

    assert sorted(found) == ["camera_primus", "my_scans_2", "only_photos", "primus", "primus_2"]
    assert (found["primus"].path, len(found["primus"].sample_folders)) == (tmp_path / "PrIMuS", 2)
    assert (found["camera_primus"].path, found["camera_primus"].camera) == (tmp_path / "downloads", True)
    assert found["only_photos"].camera
    # a synthetic corpus written with --camera into a folder named primus trains on the clean PNGs
    assert (found["primus_2"].path, found["primus_2"].camera) == (tmp_path / "synthetic" / "primus", False)
    assert "taken by" in found["primus_2"].notes[0]


def test_samples_straight_in_the_data_root_are_primus(tmp_path):
    add_sample(tmp_path, "s1")
    corpus = only_corpus(tmp_path)
    assert (corpus.name, corpus.path) == ("primus", tmp_path)


def test_an_empty_corpus_folder_is_found_with_no_samples(tmp_path):
    (tmp_path / "primus" / "package_aa").mkdir(parents=True)
    corpus = only_corpus(tmp_path)
    assert (corpus.name, corpus.sample_folders) == ("primus", [])


def test_symlink_loops_are_skipped_with_a_note(tmp_path):
    add_sample(tmp_path / "primus" / "package_aa", "a1")
    os.symlink("..", tmp_path / "primus" / "package_aa" / "up")
    os.symlink("self", tmp_path / "primus" / "self")
    corpus = only_corpus(tmp_path)

    assert [folder.name for folder in corpus.sample_folders] == ["a1"]
    assert any("symlink loop" in note and note.startswith(str(tmp_path / "primus" / "package_aa" / "up"))
               for note in corpus.notes)
    assert any(note == f"{tmp_path / 'primus' / 'self'}: broken or looping symlink, skipped" for note in corpus.notes)


def zero_the_middle_of_idat(png: Path) -> None:
    """Zero 100 bytes in the middle of the first IDAT chunk; signature, header and IEND stay intact."""
    data = bytearray(png.read_bytes())
    start = data.index(b"IDAT") + 4
    middle = start + int.from_bytes(data[start - 8:start - 4], "big") // 2
    data[middle - 50:middle + 50] = bytes(100)
    png.write_bytes(bytes(data))


def test_a_png_damaged_in_its_middle_is_refused_because_it_does_not_decode(tmp_path):
    folder = add_sample(tmp_path / "primus", "s1")
    zero_the_middle_of_idat(folder / "s1.png")
    sample = checked(folder)

    assert sample.problems[0].startswith("s1/s1.png: does not decode (")
    assert sample.encodings == ()


@pytest.mark.parametrize("size, reason", [
    ((1500, 1), "1500x1 image refused: height 1 px outside 16-1024 px"),
    ((30000, 200), "30000x200 image refused: width 30000 px outside 16-8192 px"),
    ((3000, 40), "3000x40 image refused: aspect ratio (width/height) 75 outside 0.5-64"),
    ((3000, 1000), "3000x1000 image refused: 3000000 pixels, more than 2000000"),
])
def test_images_of_shapes_training_cannot_take_are_refused_with_the_limit(tmp_path, monkeypatch, size, reason):
    from PIL import Image

    monkeypatch.setenv("SUPERSMM_IMAGE_LIMITS", "max_pixels=2000000")
    folder = add_sample(tmp_path / "primus", "s1")
    Image.new("L", size, 255).save(folder / "s1.png")
    sample = checked(folder)
    assert sample.problems[0] == f"s1/s1.png: {reason}"
    assert sample.encodings == ()

    monkeypatch.setenv("SUPERSMM_IMAGE_LIMITS", "min_height=1,max_width=40000,max_aspect=2000,max_pixels=7000000")
    assert checked(folder).problems == []


@pytest.mark.parametrize("given, message", [
    ("max_widht=10", "unknown limit 'max_widht'"),
    ("max_height=ten", "max_height must be a number, got 'ten'"),
    ("min_height=0,max_height=0", "min_height must be a number above 0, got '0'"),
    ("max_width=-1", "max_width must be a number above 0, got '-1'"),
    ("max_aspect=nan", "max_aspect must be a number above 0, got 'nan'"),
    ("min_width=900,max_width=800", "min_width 900 is above max_width 800"),
])
def test_bad_image_limits_are_one_clear_error_before_detect_rewrites_anything(engraved_home, monkeypatch, given,
                                                                               message):
    """Limits that no image could meet would have emptied every dataset's index, and the runs on it with them."""
    from supersmm_tasks import paths
    from supersmm_tasks.detect import detect
    from supersmm_tasks.errors import SupersmmError

    index = {path: path.read_bytes() for path in paths.datasets_dir().iterdir() if path.is_file()}
    monkeypatch.setenv("SUPERSMM_IMAGE_LIMITS", given)
    with pytest.raises(SupersmmError, match=re.escape(f"SUPERSMM_IMAGE_LIMITS: {message}")):
        detect()
    assert {path: path.read_bytes() for path in index} == index


def test_sample_folders_and_files_that_resolve_outside_the_data_root_are_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    add_sample(outside, "far")
    root = tmp_path / "data"
    add_sample(root / "primus", "near")
    inside_link = add_sample(root / "primus", "linked")
    os.symlink(outside / "far", root / "primus" / "far")
    (inside_link / "linked.semantic").unlink()
    os.symlink(outside / "far" / "far.semantic", inside_link / "linked.semantic")
    (root / "primus" / "alias").mkdir()
    os.symlink(root / "primus" / "near" / "near.png", root / "primus" / "alias" / "alias.png")  # inside: fine
    for extension in (".semantic", ".agnostic"):
        (root / "primus" / "alias" / f"alias{extension}").write_bytes((root / "primus" / "near" /
                                                                       f"near{extension}").read_bytes())
    corpus = only_corpus(root)
    problems = {folder.name: check_sample(corpus, folder).problems for folder in corpus.sample_folders}

    assert problems["near"] == [] and problems["alias"] == []
    assert problems["far"] == [f"far: the sample folder resolves to {outside / 'far'}, outside the data root "
                               f"{root}; refused"]
    assert problems["linked"] == [f"linked/linked.semantic: resolves to {outside / 'far' / 'far.semantic'}, "
                                  f"outside the data root {root}; refused"]
