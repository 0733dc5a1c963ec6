"""train_chunk on real engraved incipits with the tiny model: run files, budgets, stopping, guard, learning."""
import csv
import json
from datetime import datetime

import numpy as np
import pytest
import tensorflow as tf

from supersmm_tasks import paths, run_state
from supersmm_tasks.checkpoint import load_checkpoint
from supersmm_tasks.detect import detect
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.run_config import create_or_update_run, epoch_budget, load_run_config
from supersmm_tasks.synth import generate_corpus
from supersmm_tasks.training import train_chunk
from supersmm_tasks.training_log import COLUMNS, read_rows


class LeaseLost(Exception):
    pass


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A SUPERSMM_HOME with 24 clean engraved incipits detected as `primus`; each test uses its own run name."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SUPERSMM_HOME", str(home))
        environment.setenv("SUPERSMM_DATA_ROOT", str(home / "data"))
        generate_corpus(home / "data" / "primus", 24, seed=0, workers=2, progress=False)
        detect()
        yield home


@pytest.fixture(scope="module")
def shared(home):
    """Run `shared` (5 epochs): a first chunk of epochs 1-3, the same chunk redelivered, then 4-5."""
    new_run("shared", max_total_epochs=5)
    updates = []
    first = train_chunk("shared", 1, 3, on_progress=updates.append, worker="w1", chunk=1)
    redelivered = train_chunk("shared", 1, 3, worker="w2", chunk=1)
    last = train_chunk("shared", 4, 5, worker="w1", chunk=2)
    return {"first": first, "redelivered": redelivered, "last": last, "updates": updates}


def new_run(name="run", **settings):
    return create_or_update_run(name, "primus", **({"model": "tiny", "batch_size": 4} | settings))


def epochs_logged(name="run") -> list[int]:
    return [int(row["epoch"]) for row in read_rows(name)]


@pytest.mark.parametrize("n_train, expected", [
    (1, (10_000, 500)), (200, (10_000, 500)), (201, (9950, 498)), (1000, (2000, 100)),
    (2000, (1000, 50)), (3999, (500, 50)), (4000, (500, 50)), (78_755, (500, 50)),
])
def test_epoch_budget_follows_the_contract_at_its_edges(n_train, expected):
    assert epoch_budget(n_train) == expected


def test_a_new_run_gets_a_full_config_and_a_queued_state(home):
    config = create_or_update_run("fresh", "primus", model="tiny")

    stored = json.loads((paths.run_dir("fresh") / "config.json").read_text())
    assert stored["dataset_path"] == str(home.parent / "data0" / "primus") or stored["dataset_path"].endswith("primus")
    assert set(stored["split_files"]) == {"train", "val", "test"}
    assert (stored["train_samples"], stored["model"], stored["batch_size"]) == (32, "tiny", 16)
    assert (config.max_total_epochs, config.max_epochs_per_run) == epoch_budget(32)
    state = run_state.read_state("fresh")
    assert (state["status"], state["last_completed_epoch"], state["max_total_epochs"]) == ("queued", 0, 10_000)


def test_an_existing_run_takes_new_budgets_but_refuses_a_new_model(home):
    new_run()

    create_or_update_run("run", max_total_epochs=7, max_epochs_per_run=3, patience=2)
    assert run_state.read_state("run")["max_total_epochs"] == 7
    assert load_run_config("run").patience == 2
    with pytest.raises(SupersmmError, match="cannot change"):
        create_or_update_run("run", model="paper")
    with pytest.raises(SupersmmError, match="dataset"):
        create_or_update_run("run", dataset="camera_primus")


@pytest.mark.parametrize("name", ["Bad-Name", "../escape", "x" * 41, ""])
def test_bad_run_names_are_refused_in_one_line(home, name):
    with pytest.raises(SupersmmError, match="invalid run name"):
        create_or_update_run(name, "primus")


def test_a_missing_dataset_or_run_is_a_clear_error(home):
    with pytest.raises(SupersmmError, match="not detected"):
        create_or_update_run("run", "no_such_data")
    with pytest.raises(SupersmmError, match="does not exist"):
        train_chunk("never_made", 1, 1)


def test_a_chunk_writes_every_run_file(home):
    new_run(max_total_epochs=5)
    updates = []

    result = train_chunk("run", 1, 2, on_progress=updates.append, worker="w1", chunk=1)

    assert (result.status, result.last_completed_epoch, result.epochs_trained) == ("running", 2, 2)
    state = run_state.read_state("run")
    assert (state["status"], state["last_completed_epoch"], state["worker"]) == ("running", 2, "w1")
    assert load_checkpoint(state["checkpoint"]).epoch == 2
    with open(paths.training_log_csv(), newline="") as log:
        assert tuple(next(csv.reader(log))) == COLUMNS
    rows = read_rows("run")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert datetime.fromisoformat(row["timestamp"]).utcoffset() is not None
        assert datetime.fromisoformat(row["est_completion_time"]).utcoffset() is not None
        assert 0 <= float(row["val_ser"]) <= 100 and 0 <= float(row["val_sequence_error"]) <= 100
        assert (row["worker"], row["chunk"], row["dataset_size"], row["batch_size"]) == ("w1", "1", "32", "4")
        assert float(row["memory_mb"]) > 100 and float(row["loss"]) > 0
    assert rows[1]["remaining_epochs"] == "3"
    batches = [u for u in updates if "batch" in u]
    assert [u["batch"] for u in batches[:8]] == list(range(1, 9)) and batches[0]["batches"] == 8
    assert [u["epoch"] for u in updates if "val_ser" in u] == [1, 2]
    log = (paths.run_dir("run") / "logs" / "training_output.log").read_text()
    assert "epoch 1/5" in log and "epoch 2/5" in log
    assert (paths.run_dir("run") / "checkpoints" / "best.keras").is_file()


def test_tensorboard_gets_loss_val_ser_and_learning_rate(home):
    new_run(max_total_epochs=1)
    train_chunk("run", 1, 1)

    tags = set()
    for events in (paths.run_dir("run") / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags |= {value.tag for value in event.summary.value}
    assert {"loss", "val_ser", "val_loss", "learning_rate"} <= tags


def test_checkpoints_keep_the_last_three_plus_the_best(home):
    new_run(max_total_epochs=6)
    train_chunk("run", 1, 6)

    best = run_state.read_state("run")["best_epoch"]
    kept = sorted(p.name for p in (paths.run_dir("run") / "checkpoints").glob("epoch_*.npz"))
    assert kept == sorted({f"epoch_{e:06d}.npz" for e in (4, 5, 6, best)})


def test_a_redelivered_chunk_trains_only_what_is_missing(home):
    new_run(max_total_epochs=4)
    train_chunk("run", 1, 2)

    assert train_chunk("run", 1, 2).epochs_trained == 0
    result = train_chunk("run", 1, 3)

    assert (result.epochs_trained, result.last_completed_epoch) == (1, 3)
    assert epochs_logged() == [1, 2, 3]


def test_the_run_completes_at_its_epoch_budget(home):
    new_run(max_total_epochs=2)

    result = train_chunk("run", 1, 50)

    assert (result.status, result.stop_reason, result.last_completed_epoch) == ("completed", "max_total_epochs", 2)
    assert run_state.read_state("run")["status"] == "completed"
    assert train_chunk("run", 3, 4).epochs_trained == 0


def test_patience_stops_the_run_when_val_ser_stops_improving(home):
    new_run(max_total_epochs=12, patience=2)

    result = train_chunk("run", 1, 12)

    ser = [float(row["val_ser"]) for row in read_rows("run")]
    stopped = len(ser) < 12
    assert stopped, "val SER improved at every one of 12 epochs: this data cannot show patience"
    assert (result.status, result.best_epoch) == ("completed", int(np.argmin(ser)) + 1)
    assert "early stop" in result.stop_reason
    assert min(ser[-2:]) >= min(ser[:-2]) and len(ser) == result.best_epoch + 2
    state = run_state.read_state("run")
    assert (state["status"], state["best_epoch"]) == ("completed", result.best_epoch)


def test_pause_and_cancel_requests_stop_at_an_epoch_boundary(home):
    new_run(max_total_epochs=5)
    answers = iter([None, "paused"])

    paused = train_chunk("run", 1, 5, should_stop=lambda: next(answers))

    assert (paused.status, paused.last_completed_epoch) == ("paused", 1)
    assert run_state.read_state("run")["status"] == "paused"
    cancelled = train_chunk("run", 2, 5, should_stop=lambda: "cancelled")
    assert (cancelled.status, cancelled.last_completed_epoch) == ("cancelled", 1)
    assert train_chunk("run", 2, 5).epochs_trained == 0  # a cancelled run stays cancelled
    assert epochs_logged() == [1]


def test_a_guard_that_fails_stops_every_further_write(home):
    new_run(max_total_epochs=3)
    train_chunk("run", 1, 1)
    calls = []

    def guard():
        calls.append(snapshot(home))
        if len(calls) == 6:  # somewhere among the writes of epoch 2
            raise LeaseLost("another worker owns the run")

    with pytest.raises(LeaseLost):
        train_chunk("run", 2, 3, guard=guard)

    assert snapshot(home) == calls[-1]
    assert run_state.read_state("run")["status"] != "failed"


def snapshot(home) -> dict:
    return {str(p): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file() and "datasets" not in p.parts}


def test_the_tiny_model_learns(home):
    new_run(max_total_epochs=15, batch_size=4)

    train_chunk("run", 1, 15)

    ser = [float(row["val_ser"]) for row in read_rows("run")]
    assert min(ser) < 0.8 * ser[0], f"val SER per epoch: {ser}"
