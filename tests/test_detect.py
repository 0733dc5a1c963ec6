"""`supersmm detect`: dataset configs, frozen splits and train scripts, on copies of the real PrIMuS sample."""
import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import REAL_SAMPLE_ID, add_sample, require_real_dev
import pytest

from supersmm_tasks import detect as detection
from supersmm_tasks.corpus import load_dataset
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.vocabulary import published_split

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERSMM_HOME", str(tmp_path))
    monkeypatch.delenv("SUPERSMM_DATA_ROOT", raising=False)
    return tmp_path


def tree(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_detect_writes_config_split_and_scripts_but_never_inside_the_corpus(home):
    corpus = home / "data" / "primus"
    for number in range(20):
        add_sample(corpus, f"s{number:02d}")
    before = tree(corpus)

    [report] = detection.detect()

    assert tree(corpus) == before
    assert report.to_json() == {"name": "primus", "path": str(corpus), "samples": 20, "valid": 20, "invalid": []}
    assert report.split_counts == {"train": 16, "val": 2, "test": 2}
    dataset = load_dataset("primus")
    ids = {split: [e.id for e in dataset.examples(split, "semantic")] for split in ("train", "val", "test")}
    assert sorted(sum(ids.values(), [])) == [f"s{number:02d}" for number in range(20)]
    example = dataset.examples("train", "agnostic")[0]
    assert example.image_path == str(corpus / example.id / f"{example.id}.png")
    assert example.tokens == (require_real_dev() / REAL_SAMPLE_ID / f"{REAL_SAMPLE_ID}.agnostic").read_text("utf-8").split()
    assert (home / "scripts" / "train_primus.sh").read_text() == detection.train_script("primus")
    assert os.access(home / "scripts" / "continue_primus_training.sh", os.X_OK)


def test_the_split_never_moves_when_samples_come_and_go(home):
    corpus = home / "data" / "mine"
    for number in range(10):
        add_sample(corpus, f"s{number}")
    detection.detect()
    first = {split: load_dataset("mine").split_ids(split) for split in ("train", "val", "test")}

    for number in range(10, 15):
        add_sample(corpus, f"s{number}")
    shutil.rmtree(corpus / first["train"][0])
    [report] = detection.detect()

    assert {split: load_dataset("mine").split_ids(split) for split in first} == first
    assert "5 usable samples are not in the frozen split" in report.notes[0]
    assert "1 samples of the frozen split are no longer usable" in report.notes[1]
    assert first["train"][0] not in [e.id for e in load_dataset("mine").examples("train", "semantic")]


def test_published_primus_ids_get_the_published_fold(home):
    train_ids, test_ids = (sorted(ids)[:count] for ids, count in zip(published_split(), (18, 4)))
    for sample_id in train_ids[:9]:
        add_sample(home / "data" / "PrIMuS" / "package_aa", sample_id)
    for sample_id in train_ids[9:] + test_ids:
        add_sample(home / "data" / "PrIMuS" / "package_ab", sample_id)

    [report] = detection.detect()
    dataset = load_dataset("primus")

    assert report.name == "primus" and report.valid == 22
    assert dataset.split_ids("test") == test_ids
    assert sorted(dataset.split_ids("train") + dataset.split_ids("val")) == train_ids
    assert len(dataset.split_ids("val")) == 2
    assert json.loads(dataset.config_path.read_text())["split"]["source"] == "published PrIMuS fold"


def test_camera_primus_trains_and_validates_on_the_distorted_images(home):
    for number in range(6):
        add_sample(home / "data" / "Camera-PrIMuS" / "Corpus", f"c{number}", distorted=True)

    [report] = detection.detect()
    dataset = load_dataset("camera_primus")

    assert (report.name, report.camera) == ("camera_primus", True)
    for split in ("train", "val", "test"):
        assert all(e.image_path.endswith(f"{e.id}_distorted.jpg") for e in dataset.examples(split, "semantic"))
    # Photos: even `tiny`, which trains clean engravings without augmentation, augments here unless told not to.
    assert create_or_update_run("photos", "camera_primus", model="tiny").augment
    assert not create_or_update_run("photos_plain", "camera_primus", model="tiny", augment=False).augment


def test_duplicate_ids_and_broken_samples_are_listed_and_left_out(home):
    corpus = home / "data" / "PrIMuS"
    for number in range(5):
        add_sample(corpus / "package_aa", f"s{number}")
    add_sample(corpus / "package_ab", "s0")
    (add_sample(corpus / "package_ab", "bad") / "bad.semantic").write_bytes(b"")

    [report] = detection.detect()

    assert (report.samples, report.valid) == (7, 5)
    assert report.invalid == [
        {"id": "bad", "reason": "package_ab/bad/bad.semantic: empty label; usable with --encoding agnostic only"},
        {"id": "s0", "reason": "package_ab/s0: duplicate id, already found in package_aa/s0; this copy is left out"},
    ]
    dataset = load_dataset("primus")
    for encoding, expected in (("semantic", ["s0", "s1", "s2", "s3", "s4"]), ("agnostic", ["bad", "s0", "s1", "s2",
                                                                                          "s3", "s4"])):
        assert sorted(e.id for split in ("train", "val", "test") for e in dataset.examples(split, encoding)) == expected
    table = detection.format_table([report])
    assert table.splitlines()[1].split()[:6] == ["primus", "png", "7", "5", "2", "4/1/1"]
    assert "primus: invalid bad: package_ab/bad/bad.semantic: empty label" in table


def test_nothing_usable_is_an_error_and_one_usable_dataset_is_enough(home):
    with pytest.raises(SupersmmError, match="data root .*/data does not exist"):
        detection.detect()
    (home / "data").mkdir()
    with pytest.raises(SupersmmError, match="no corpus under"):
        detection.detect()
    for number in range(3):
        (add_sample(home / "data" / "broken", f"b{number}") / f"b{number}.png").write_bytes(b"")
    with pytest.raises(SupersmmError, match=r"broken: 0 of 3 samples valid \(first problem: b0/b0.png: not a PNG"):
        detection.detect()

    (home / "data" / "empty").mkdir()
    for number in range(3):
        add_sample(home / "data" / "good", f"g{number}")
    reports = {report.name: report for report in detection.detect()}

    assert {name: report.usable for name, report in reports.items()} == {"broken": False, "empty": False,
                                                                          "good": True}
    assert sorted(p.name for p in (home / "datasets").glob("*.json")) == ["good.json"]
    with pytest.raises(SupersmmError, match="dataset 'broken' is not detected yet"):
        load_dataset("broken")


def test_the_scripts_work_from_any_folder_and_hold_no_machine_path(home, tmp_path_factory):
    for number in range(3):
        add_sample(home / "data" / "primus", f"s{number}")
    detection.detect()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    train, resume = detection.script_paths("primus")

    assert str(home) not in train.read_text() + resume.read_text()
    refused = subprocess.run([str(resume)], cwd=elsewhere, capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr == f"no run primus to continue in {home}: start it with scripts/train_primus.sh\n"
    helped = subprocess.run([str(train), "--help"], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "Usage: supersmm train" in helped.stdout


def test_the_repository_carries_the_generated_primus_scripts():
    assert (REPOSITORY / "scripts" / "train_primus.sh").read_text() == detection.train_script("primus")
    assert (REPOSITORY / "scripts" / "continue_primus_training.sh").read_text() == detection.continue_script("primus")


@pytest.mark.integration
def test_detect_json_command_prints_the_contract_object(home):
    for number in range(3):
        add_sample(home / "corpora" / "primus", f"s{number}")
    (home / "corpora" / "primus" / "s1" / "s1.semantic").write_text("clef-G2\tnot-a-token\t")

    result = subprocess.run(["supersmm", "detect", "--data-root", str(home / "corpora"), "--json"], cwd=home,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{
        "name": "primus", "path": str(home / "corpora" / "primus"), "samples": 3, "valid": 2,
        "invalid": [{"id": "s1", "reason": "s1/s1.semantic: unknown semantic token 'not-a-token' (token 2); "
                                           "usable with --encoding agnostic only"}]}]


def test_a_split_frozen_for_another_corpus_of_the_same_name_is_never_reused(home):
    for number in range(4):
        add_sample(home / "data" / "primus", f"old{number}")
    detection.detect()
    frozen = load_dataset("primus").split_ids("train")
    shutil.rmtree(home / "data" / "primus")
    for number in range(4):
        add_sample(home / "data" / "primus", f"new{number}")

    with pytest.raises(SupersmmError, match="primus: 4 of 4 samples valid"):
        detection.detect()
    assert load_dataset("primus").split_ids("train") == frozen


def test_a_damaged_dataset_config_is_one_clear_error(home):
    for number in range(3):
        add_sample(home / "data" / "primus", f"s{number}")
    detection.detect()
    (home / "datasets" / "primus.index.tsv").write_text("id\tfolder\nbroken")

    with pytest.raises(SupersmmError, match=r"dataset 'primus' .* is incomplete or damaged .*run `supersmm detect`"):
        load_dataset("primus")
    detection.detect()
    assert len(load_dataset("primus").samples) == 3
