"""`supersmm detect` on bad input: folder names that are no sample ids, a damaged frozen split, a full disk.

Each case gives one clear line and loses nothing; the samples are copies of the real PrIMuS sample.
"""
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import a_dead_pid, add_sample
import pytest

from supersmm_tasks import detect as detection, durable
from supersmm_tasks.corpus import load_dataset, read_index
from supersmm_tasks.errors import SupersmmError

GOOD_SAMPLES = 10


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERSMM_HOME", str(tmp_path))
    monkeypatch.delenv("SUPERSMM_DATA_ROOT", raising=False)
    return tmp_path


def good_corpus(home: Path, name: str = "primus") -> Path:
    corpus = home / "data" / name
    for number in range(GOOD_SAMPLES):
        add_sample(corpus, f"s{number}")
    return corpus


def datasets_files(home: Path) -> dict:
    """Every file under datasets/ (the lock file aside) with its bytes."""
    return {p.relative_to(home).as_posix(): p.read_bytes() for p in sorted((home / "datasets").rglob("*"))
            if p.is_file() and p.name != ".detect.lock"}


def supersmm_detect(home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["supersmm", "detect", "--data-root", str(home / "data")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "SUPERSMM_HOME": str(home)})


# ---------------------------------------------------------------- folder names that are no sample ids


def test_folders_whose_names_are_no_sample_ids_are_listed_invalid_and_never_indexed_nor_split(home):
    corpus = good_corpus(home)
    add_sample(corpus, "Bad Id!")
    add_sample(corpus, "tab\tid")

    [report] = detection.detect()

    assert (report.samples, report.valid) == (GOOD_SAMPLES + 2, GOOD_SAMPLES)
    reasons = {entry["id"]: entry["reason"] for entry in report.invalid}
    assert sorted(reasons) == ["Bad Id!", "tab\tid"]
    assert reasons["Bad Id!"] == ("'Bad Id!': not a sample id (1-40 characters of a-z, 0-9, _ and -, as PrIMuS's "
                                  "ids are); refused: rename the folder and its files")
    assert sum(report.split_counts.values()) == GOOD_SAMPLES
    good = {f"s{number}" for number in range(GOOD_SAMPLES)}
    assert set(read_index(home / "datasets" / "primus.index.tsv")) == good
    dataset = load_dataset("primus")  # what `supersmm enqueue` reads
    assert set(sum((dataset.split_ids(split) for split in ("train", "val", "test")), [])) == good

    [again] = detection.detect()  # no drift reported for samples that never entered the split
    assert (again.notes, again.split_counts) == ([], report.split_counts)


def test_a_split_file_is_read_one_id_per_line(home):
    good_corpus(home)
    detection.detect()
    train = home / "datasets" / "primus.split" / "train.txt"
    ids = train.read_text("utf-8").split()
    train.write_text("\r\n".join(ids[:-1] + ["Bad Id!"]) + "\r\n\n", "utf-8")  # as an earlier version could leave it

    [report] = detection.detect()

    split = home / "datasets" / "primus.split"
    assert report.notes == [f"1 usable samples are not in the frozen split and are left out (delete {split} to draw a "
                            f"new split)", "1 samples of the frozen split are no longer usable and are left out"]
    assert load_dataset("primus").split_ids("train")[-1] == "Bad Id!"


def garbage_train(split: Path) -> None:
    (split / "train.txt").write_bytes(b"garbage\x00\n")

# ---------------------------------------------------------------- a damaged frozen split


def break_split_json(split: Path) -> None:
    (split / "split.json").write_text("{bad\n")


def remove_split_json(split: Path) -> None:
    (split / "split.json").unlink()


def remove_val(split: Path) -> None:
    (split / "val.txt").unlink()


def latin1_test(split: Path) -> None:
    (split / "test.txt").write_bytes("s\xe9\n".encode("latin-1"))


@pytest.mark.parametrize("damage, problem", [
    (break_split_json, "split.json: not valid (Expecting property name enclosed in double quotes"),
    (remove_split_json, "split.json: No such file or directory"),
    (remove_val, "val.txt: No such file or directory"),
    (latin1_test, "test.txt: not UTF-8"),
    (garbage_train, "train.txt: not valid (1 ids where split.json counts "),
])
def test_a_damaged_frozen_split_stops_detect_with_one_line_before_anything_is_rewritten(home, damage, problem):
    good_corpus(home, "alpha")
    corpus = good_corpus(home, "beta")
    detection.detect()
    split = home / "datasets" / "beta.split"
    damage(split)
    add_sample(corpus, "new1")  # would change beta's index and config
    add_sample(home / "data" / "alpha", "new1")  # alpha comes first in path order
    before = datasets_files(home)

    with pytest.raises(SupersmmError) as raised:
        detection.detect()

    message = str(raised.value)
    assert message.startswith(f"frozen split {split} is incomplete or damaged ({problem}")
    assert message.endswith(f"; restore it, or delete {split} to draw a new split")
    assert datasets_files(home) == before

    result = supersmm_detect(home)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(split) in result.stderr
    assert datasets_files(home) == before


def test_deleting_a_damaged_split_draws_a_new_one(home):
    good_corpus(home)
    detection.detect()
    remove_split_json(home / "datasets" / "primus.split")
    with pytest.raises(SupersmmError):
        detection.detect()

    for file in (home / "datasets" / "primus.split").iterdir():
        file.unlink()
    (home / "datasets" / "primus.split").rmdir()
    [report] = detection.detect()
    assert sum(report.split_counts.values()) == GOOD_SAMPLES


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_while_freezing_the_split_names_the_folder_and_leaves_no_temporary_folder(home, monkeypatch):
    good_corpus(home)
    datasets = home / "datasets"
    datasets.mkdir()
    abandoned = datasets / f".primus.split.{a_dead_pid()}.tmp"  # left by a detect killed while writing
    abandoned.mkdir()
    (abandoned / "train.txt").write_text("s1\n")
    write = durable._write_fully

    def disk_full_at_split_json(fd, data):
        if bytes(data).startswith(b"{"):  # the split's description, written after its id lists
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(fd, data)

    monkeypatch.setattr(durable, "_write_fully", disk_full_at_split_json)
    for _ in range(2):
        with pytest.raises(SupersmmError) as raised:
            detection.detect()
        assert str(raised.value) == (f"disk full while writing the frozen split {datasets / 'primus.split'}: "
                                     f"free some space and try again; nothing was written")
        assert sorted(p.name for p in datasets.iterdir()) == [".detect.lock"]

    monkeypatch.setattr(durable, "_write_fully", write)  # space freed
    [report] = detection.detect()
    assert sum(report.split_counts.values()) == GOOD_SAMPLES


def test_a_full_disk_while_writing_the_index_names_the_file_and_keeps_the_previous_one(home, monkeypatch):
    corpus = good_corpus(home)
    detection.detect()
    index = home / "datasets" / "primus.index.tsv"
    before = index.read_bytes()
    add_sample(corpus, "new1")

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable, "_write_fully", disk_full)
    with pytest.raises(SupersmmError) as raised:
        detection.detect()

    assert str(raised.value) == f"disk full while writing {index}: free some space and try again; the previous file " \
                                f"is intact"
    assert index.read_bytes() == before
    assert not [p for p in (home / "datasets").iterdir() if p.name.endswith(".tmp")]
    assert json.loads((home / "datasets" / "primus.json").read_text())["valid"] == GOOD_SAMPLES


# ---------------------------------------------------------------- names stay with their corpus


def test_a_dataset_name_stays_with_the_folder_an_earlier_detect_gave_it_to(home):
    corpus = good_corpus(home, "corp")
    detection.detect()
    shutil.copytree(corpus, home / "data" / "Corp")  # sorts first, and would take the name `corp`

    reports = {report.name: report for report in detection.detect()}

    assert {name: report.path for name, report in reports.items()} == {"corp": corpus, "corp_2": home / "data" / "Corp"}
    assert reports["corp_2"].notes == [f"name 'corp' is taken by {corpus} (named by an earlier detect); this corpus "
                                       f"is 'corp_2'"]
    assert (load_dataset("corp").path, load_dataset("corp_2").path) == (corpus, home / "data" / "Corp")


def test_a_corpus_moved_elsewhere_takes_its_name_again(home):
    corpus = good_corpus(home, "corp")
    detection.detect()
    frozen = load_dataset("corp").split_ids("train")
    moved = home / "elsewhere" / "corp"
    shutil.move(corpus, moved)

    [report] = detection.detect(home / "elsewhere")

    assert (report.name, report.path, report.notes) == ("corp", moved, [])
    assert load_dataset("corp").split_ids("train") == frozen
