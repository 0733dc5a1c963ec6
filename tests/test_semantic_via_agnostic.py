"""Semantic runs that read through agnostic symbols (the `tiny` default): the network trains on the agnostic labels,
its reading becomes semantic tokens (agnostic_to_semantic), and every score of the run is a score of music."""
import json
import os
import shutil

import pytest

from conftest import REAL_SAMPLE_ID, add_sample, detected_home
from supersmm_tasks import paths, run_state
from supersmm_tasks.checkpoint import load_checkpoint
from supersmm_tasks.corpus import load_dataset
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.evaluate import error_rates, evaluate_run, predict
from supersmm_tasks.run_config import create_or_update_run, load_run_config
from supersmm_tasks.training_log import read_rows
from supersmm_tasks.vocabulary import load_vocabulary


@pytest.fixture
def home(learned_via_agnostic_run, monkeypatch):
    """The session's semantic `tiny` run that memorised the real sample (conftest.learned_via_agnostic_run)."""
    monkeypatch.setenv("SUPERSMM_HOME", str(learned_via_agnostic_run))
    return learned_via_agnostic_run


def test_a_tiny_semantic_run_trains_on_agnostic_symbols_and_is_scored_on_music(home):
    config = load_run_config("run")
    assert (config.encoding, config.semantic_via_agnostic, config.network_encoding) == ("semantic", True, "agnostic")
    checkpoint = load_checkpoint(run_state.best_checkpoint("run").path)
    (outputs,) = [array.shape[-1] for path, array in zip(checkpoint.meta["model_variables"], checkpoint.model_arrays)
                  if path.endswith("token_logits/kernel")]
    assert outputs == len(load_vocabulary("agnostic")) + 1
    assert "semantic (read through agnostic symbols) labels" in paths.log_path("run").read_text("utf-8")

    examples = load_dataset("primus").examples("val", "semantic")
    readings = predict("run", [example.image_path for example in examples])
    semantic = set(load_vocabulary("semantic"))
    assert readings[0][0].startswith("clef-") and all(set(reading) <= semantic for reading in readings)
    # The CSV's val SER, evaluate and predict all score the same readings as music against the semantic labels.
    best = min(read_rows("run"), key=lambda row: float(row["val_ser"]))
    ser, _ = error_rates(readings, [example.tokens for example in examples])
    assert float(best["val_ser"]) == pytest.approx(ser, abs=1e-6)
    assert evaluate_run("run")["ser"] == pytest.approx(ser, abs=1e-6)
    assert ser < 30  # it has learned the staff: a reading of nothing scores 100


def test_the_export_of_such_a_run_writes_agnostic_tokens_and_reads_semantic_ones_with_supersmm(home, tmp_path,
                                                                                           real_sample):
    from supersmm_tasks.export import export_run
    from supersmm_tasks.recognizer import Recognizer

    out = export_run("run", tmp_path / "exported")
    settings = json.loads((out / "supersmm.json").read_text("utf-8"))
    assert (settings["encoding"], settings["network_encoding"]) == ("semantic", "agnostic")
    assert (out / "vocabulary.txt").read_text("utf-8").splitlines() == list(load_vocabulary("agnostic"))
    assert "writes its PrIMuS agnostic tokens" in (out / "README.md").read_text("utf-8")
    image = real_sample / f"{REAL_SAMPLE_ID}.png"
    assert Recognizer.load(out).read(image) == Recognizer.load("run").read(image)


def test_the_choice_is_fixed_per_run_and_checked_where_it_cannot_hold(home):
    direct = create_or_update_run("direct", "primus", model="tiny", semantic_via_agnostic=False)
    assert direct.network_encoding == "semantic"
    assert create_or_update_run("paper_run", "primus").network_encoding == "semantic"  # the paper's way
    with pytest.raises(SupersmmError, match="was created with semantic_via_agnostic False"):
        create_or_update_run("direct", semantic_via_agnostic=True)
    with pytest.raises(SupersmmError, match="is for runs with semantic labels"):
        create_or_update_run("agnostic_run", "primus", model="tiny", encoding="agnostic", semantic_via_agnostic=True)
    with pytest.raises(SupersmmError, match="writes agnostic tokens, this run's would write semantic ones"):
        create_or_update_run("tuned", "primus", init_from="run", semantic_via_agnostic=False)
    assert create_or_update_run("tuned", "primus", init_from="run").network_encoding == "agnostic"


def test_a_corpus_without_agnostic_labels_is_one_line_that_names_the_way_out(tmp_path):
    data_root = tmp_path / "data"
    for number in range(6):
        folder = add_sample(data_root / "primus", f"{number:09d}-1_1_1")
        os.remove(folder / f"{folder.name}.agnostic")
    with detected_home(tmp_path / "home", data_root):
        with pytest.raises(SupersmmError, match="no valid agnostic training samples .*--direct-semantic"):
            create_or_update_run("via", "primus", model="tiny")
        assert create_or_update_run("direct", "primus", model="tiny", semantic_via_agnostic=False).train_samples > 0
    shutil.rmtree(data_root)
