"""SER, sequence error rate and prediction with a run's best checkpoint, on real engraved incipits."""
import math
import shutil

import pytest
from PIL import Image

from conftest import detected_home
from supersmm_tasks.corpus import load_dataset
from supersmm_tasks.detect import detect

from supersmm_tasks import paths, run_state
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.evaluate import edit_distance, error_rates, evaluate_run, predict
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.training import train_chunk
from supersmm_tasks.training_log import read_rows


@pytest.fixture(scope="module")
def trained(engraved_home):
    """Run `run`: the tiny model after 3 epochs on 24 engraved incipits."""
    create_or_update_run("run", "primus", model="tiny", batch_size=4, max_total_epochs=3)
    train_chunk("run", ChunkSpan(1, 3, 1))
    return engraved_home


@pytest.mark.parametrize("predicted, truth, distance", [
    ([], [], 0), (["a"], [], 1), ([], ["a", "b"], 2), (["a", "b", "c"], ["a", "c"], 1),
    (["a", "x", "c"], ["a", "b", "c"], 1), (["b", "a"], ["a", "b"], 2), (["k", "i", "t", "t", "e", "n"],
                                                                         ["s", "i", "t", "t", "i", "n", "g"], 3),
])
def test_edit_distance(predicted, truth, distance):
    assert edit_distance(predicted, truth) == distance


def test_error_rates_are_percentages_over_all_symbols_and_sequences():
    ser, sequence_error = error_rates([["a", "b"], ["c"], []], [["a", "b"], ["d"], ["e", "f"]])

    assert ser == pytest.approx(100 * 3 / 5)
    assert sequence_error == pytest.approx(100 * 2 / 3)


@pytest.mark.integration
def test_evaluating_the_best_checkpoint_reproduces_its_val_ser(trained):
    state = run_state.read_state("run")
    best_row = next(r for r in read_rows("run") if int(r["epoch"]) == state["best_epoch"])

    result = evaluate_run("run", split="val")

    val_ids = (trained / "datasets" / "primus.split" / "val.txt").read_text().split()
    assert (result["epoch"], result["samples"]) == (state["best_epoch"], len(val_ids))
    assert result["ser"] == pytest.approx(float(best_row["val_ser"]))
    assert result["sequence_error"] == pytest.approx(float(best_row["val_sequence_error"]))


@pytest.mark.integration
def test_a_val_staff_too_narrow_for_its_label_is_left_out_of_evaluation_as_of_validation(engraved_primus,
                                                                                        tmp_path):
    data_root = tmp_path / "data"
    shutil.copytree(engraved_primus / "primus", data_root / "primus")
    with detected_home(tmp_path / "home", data_root):
        narrowed = load_dataset("primus").examples("val", "semantic")[0]
        narrow = math.ceil(0.6 * narrowed.height)  # an image detect still takes (at least half as wide as high)
        Image.open(narrowed.image_path).crop((0, 0, narrow, narrowed.height)).save(narrowed.image_path)
        detect()
        create_or_update_run("narrow", "primus", model="tiny", batch_size=4, max_total_epochs=2)
        train_chunk("narrow", ChunkSpan(1, 2, 1))
        state = run_state.read_state("narrow")
        best_row = next(r for r in read_rows("narrow") if int(r["epoch"]) == state["best_epoch"])

        result = evaluate_run("narrow", split="val")

    val_count = len(load_dataset_ids(tmp_path / "home", "val"))
    assert (result["samples"], result["too_narrow"]) == (val_count - 1, 1)
    assert result["ser"] == pytest.approx(float(best_row["val_ser"]))


def load_dataset_ids(home, split: str) -> list[str]:
    return (home / "datasets" / "primus.split" / f"{split}.txt").read_text().split()


@pytest.mark.integration
def test_test_split_and_beam_search(trained):
    greedy = evaluate_run("run", split="test")
    beam = evaluate_run("run", split="test", beam_width=4)

    test_ids = (trained / "datasets" / "primus.split" / "test.txt").read_text().split()
    assert greedy["samples"] == beam["samples"] == len(test_ids)
    assert 0 <= beam["ser"] <= 100 and beam["decoder"] == "beam 4"
    with pytest.raises(SupersmmError, match="unknown split"):
        evaluate_run("run", split="train")


@pytest.mark.integration
def test_predict_reads_png_and_jpeg_of_any_size_and_colour(trained, tmp_path):
    sample = sorted((paths.data_root() / "primus").iterdir())[0]
    png = sample / f"{sample.name}.png"
    colour_jpeg = tmp_path / "photo.jpg"
    with Image.open(png) as image:
        image.convert("RGB").resize((image.width * 2, image.height * 2)).save(colour_jpeg, quality=95)

    predictions = predict("run", [str(png), str(colour_jpeg)])

    assert len(predictions) == 2
    assert all(isinstance(token, str) for tokens in predictions for token in tokens)


@pytest.mark.integration
def test_bad_images_and_missing_runs_are_clear_errors(trained, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")

    with pytest.raises(SupersmmError, match="broken.png"):
        predict("run", [str(broken)])
    with pytest.raises(SupersmmError, match="does not exist"):
        predict("run", [str(tmp_path / "missing.png")])
    with pytest.raises(SupersmmError, match="does not exist"):
        evaluate_run("no_such_run")


@pytest.mark.integration
def test_a_run_without_checkpoints_cannot_be_evaluated(trained):
    create_or_update_run("untrained", "primus", model="tiny")

    with pytest.raises(SupersmmError, match="no checkpoint"):
        evaluate_run("untrained")
    assert paths.run_dir("untrained").is_dir()


@pytest.mark.integration
def test_evaluating_never_writes_the_runs_state(trained):
    state_file = paths.state_path("run")
    saved = state_file.read_bytes()
    state_file.unlink()
    try:
        assert predict("run", [str(next((paths.data_root() / "primus").rglob("*.png")))])
        # The state is rebuilt in memory from its newest backup, which still names the best checkpoint.
        best = dict(line.split(": ", 1) for line in saved.decode().splitlines() if ": " in line)["best_epoch"]
        assert evaluate_run("run", split="val")["epoch"] == int(best)
        assert not state_file.exists()  # a missing state is rebuilt by whoever trains the run, not by a reader
    finally:
        state_file.write_bytes(saved)
