"""train_chunk on real engraved incipits with the tiny model: run files, budgets, stopping, guard, learning."""
import csv
import json
from datetime import datetime

import numpy as np
import pytest
import tensorflow as tf

from supersmm_tasks import paths, run_state
from supersmm_tasks.checkpoint import load_checkpoint
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.run_config import create_or_update_run, epoch_budget, load_run_config
from supersmm_tasks.training import train_chunk
from supersmm_tasks.training_log import COLUMNS, read_rows


class LeaseLost(Exception):
    pass


@pytest.fixture(scope="module")
def shared(engraved_home):
    """Run `shared` (5 epochs): a first chunk of epochs 1-3, the same chunk redelivered, then 4-5."""
    new_run("shared", max_total_epochs=5)
    updates = []
    first = train_chunk("shared", ChunkSpan(1, 3, 1), on_progress=updates.append, worker="w1")
    redelivered = train_chunk("shared", ChunkSpan(1, 3, 1), worker="w2")
    last = train_chunk("shared", ChunkSpan(4, 5, 2), worker="w1")
    return {"first": first, "redelivered": redelivered, "last": last, "updates": updates}


def new_run(name: str, **settings):
    return create_or_update_run(name, "primus", **({"model": "tiny", "batch_size": 4} | settings))


def epochs_logged(name: str) -> list[int]:
    return [int(row["epoch"]) for row in read_rows(name)]


@pytest.mark.parametrize("n_train, expected", [
    (1, (10_000, 500)), (200, (10_000, 500)), (201, (9950, 498)), (1000, (2000, 100)),
    (2000, (1000, 50)), (3999, (500, 50)), (4000, (500, 50)), (78_755, (500, 50)),
])
def test_epoch_budget_follows_the_contract_at_its_edges(n_train, expected):
    assert epoch_budget(n_train) == expected


def test_a_new_run_gets_a_full_config_and_a_queued_state(engraved_home):
    config = create_or_update_run("fresh", "primus", model="tiny")

    stored = json.loads((paths.run_dir("fresh") / "config.json").read_text())
    train_ids = (engraved_home / "datasets" / "primus.split" / "train.txt").read_text().split()
    assert stored["dataset_path"] == str(paths.data_root() / "primus")
    assert set(stored["split_files"]) == {"train", "val", "test"}
    assert (stored["train_samples"], stored["model"], stored["batch_size"]) == (len(train_ids), "tiny", 4)
    assert (config.max_total_epochs, config.max_epochs_per_run) == epoch_budget(len(train_ids)) == (10_000, 500)
    state = run_state.read_state("fresh")
    assert (state["status"], state["last_completed_epoch"], state["max_total_epochs"]) == ("queued", 0, 10_000)


def test_an_existing_run_takes_new_budgets_but_refuses_a_new_model(engraved_home):
    new_run("changed")

    create_or_update_run("changed", max_total_epochs=7, max_epochs_per_run=3, patience=2)
    assert run_state.read_state("changed")["max_total_epochs"] == 7
    assert load_run_config("changed").patience == 2
    with pytest.raises(SupersmmError, match="cannot change"):
        create_or_update_run("changed", model="paper")
    with pytest.raises(SupersmmError, match="dataset"):
        create_or_update_run("changed", dataset="camera_primus")


@pytest.mark.parametrize("name", ["Bad-Name", "../escape", "x" * 41, ""])
def test_bad_run_names_are_refused_in_one_line(engraved_home, name):
    with pytest.raises(SupersmmError, match="invalid run name"):
        create_or_update_run(name, "primus")


def test_a_missing_dataset_or_run_is_a_clear_error(engraved_home):
    with pytest.raises(SupersmmError, match="not detected"):
        create_or_update_run("orphan", "no_such_data")
    with pytest.raises(SupersmmError, match="does not exist"):
        train_chunk("never_made", ChunkSpan(1, 1, 1))


@pytest.mark.integration
def test_a_chunk_writes_every_run_file(shared):
    assert (shared["first"].status, shared["first"].last_completed_epoch) == ("running", 3)
    rows = read_rows("shared")
    with open(paths.training_log_csv(), newline="") as log:
        assert tuple(next(csv.reader(log))) == COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    train_size = int(rows[0]["dataset_size"])
    for row in rows:
        assert datetime.fromisoformat(row["timestamp"]).utcoffset() is not None
        assert datetime.fromisoformat(row["est_completion_time"]).utcoffset() is not None
        assert 0 <= float(row["val_ser"]) <= 100 and 0 <= float(row["val_sequence_error"]) <= 100
        assert (row["batch_size"], row["max_total_epochs"]) == ("4", "5")
        assert float(row["memory_mb"]) > 100 and float(row["loss"]) > 0
        assert row["checkpoint_path"].endswith(f"epoch_{int(row['epoch']):06d}.npz")
    assert [(r["worker"], r["chunk"], r["remaining_epochs"]) for r in rows] == [
        ("w1", "1", "4"), ("w1", "1", "3"), ("w1", "1", "2"), ("w1", "2", "1"), ("w1", "2", "0")]

    batches = [u for u in shared["updates"] if "batch" in u]
    per_epoch = -(-train_size // 4)
    assert [u["batch"] for u in batches] == list(range(1, per_epoch + 1)) * 3
    assert {u["batches"] for u in batches} == {per_epoch}
    assert [u["epoch"] for u in shared["updates"] if "val_ser" in u] == [1, 2, 3]

    log = (paths.run_dir("shared") / "logs" / "training_output.log").read_text()
    assert all(f"epoch {e}/5" in log for e in range(1, 6))
    assert (paths.run_dir("shared") / "checkpoints" / "best.keras").is_file()


@pytest.mark.integration
def test_tensorboard_gets_loss_val_ser_and_learning_rate(shared):
    tags = set()
    for events in (paths.run_dir("shared") / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags |= {value.tag for value in event.summary.value}
    assert {"loss", "val_ser", "val_loss", "learning_rate"} <= tags


@pytest.mark.integration
def test_checkpoints_keep_the_last_three_plus_the_best(shared):
    best = run_state.read_state("shared")["best_epoch"]
    kept = sorted(p.name for p in (paths.run_dir("shared") / "checkpoints").glob("epoch_*.npz"))
    assert kept == sorted({f"epoch_{e:06d}.npz" for e in (3, 4, 5, best)})


@pytest.mark.integration
def test_a_redelivered_chunk_trains_only_what_is_missing(shared):
    assert (shared["redelivered"].epochs_trained, shared["redelivered"].last_completed_epoch) == (0, 3)
    assert (shared["last"].epochs_trained, shared["last"].last_completed_epoch) == (2, 5)


@pytest.mark.integration
def test_the_run_completes_at_its_epoch_budget(shared):
    assert (shared["last"].status, shared["last"].stop_reason) == ("completed", "max_total_epochs")
    state = run_state.read_state("shared")
    assert (state["status"], state["last_completed_epoch"]) == ("completed", 5)
    assert train_chunk("shared", ChunkSpan(6, 8, 1)).epochs_trained == 0


@pytest.mark.integration
def test_a_budget_lowered_during_an_epoch_ends_the_run_there_and_its_last_row_says_so(engraved_home):
    create_or_update_run("lowered", "primus", model="tiny", batch_size=4, max_total_epochs=6)

    def lower_during_epoch_3(progress: dict) -> None:
        if progress.get("epoch") == 3 and progress.get("batch") == 1:
            create_or_update_run("lowered", max_total_epochs=3)

    result = train_chunk("lowered", ChunkSpan(1, 6, 1), on_progress=lower_during_epoch_3)

    rows = read_rows("lowered")
    assert (result.status, result.last_completed_epoch) == ("completed", 3)
    assert [(row["epoch"], row["max_total_epochs"], row["remaining_epochs"]) for row in rows] == [
        ("1", "6", "5"), ("2", "6", "4"), ("3", "3", "0")]


@pytest.mark.integration
def test_a_checkpoint_write_cut_off_by_a_crash_leaves_no_file_behind_once_the_run_goes_on(engraved_home):
    create_or_update_run("cut", "primus", model="tiny", batch_size=4, max_total_epochs=2)
    train_chunk("cut", ChunkSpan(1, 1, 1))
    folder = paths.checkpoints_dir("cut")
    cut_off = folder / ".epoch_000002.npz.424242.tmp"  # a worker SIGKILLed while it wrote epoch 2's checkpoint
    cut_off.write_bytes(b"\0" * 100_000)

    train_chunk("cut", ChunkSpan(2, 2, 2))

    assert not cut_off.exists()
    assert sorted(path.name for path in folder.iterdir()) == ["best.keras", "epoch_000001.npz", "epoch_000002.npz"]
    assert "removed .epoch_000002.npz.424242.tmp, a write that a crash cut off" in paths.log_path("cut").read_text()


@pytest.mark.integration
def test_batch_norm_statistics_are_learned_and_saved(shared):
    stored = load_checkpoint(run_state.read_state("shared")["checkpoint"])

    named = zip(stored.meta["model_variables"], stored.model_arrays, strict=True)
    moving = {name: array for name, array in named if "moving_" in name}
    assert len(moving) == 8  # mean and variance of 4 batch norms
    assert all(np.abs(a).max() > 0 for n, a in moving.items() if n.endswith("moving_mean"))
    assert all(np.abs(a - 1).max() > 0 for n, a in moving.items() if n.endswith("moving_variance"))


@pytest.mark.integration
def test_patience_stops_the_run_when_val_ser_stops_improving(engraved_home):
    new_run("patient", max_total_epochs=12, patience=2)

    result = train_chunk("patient", ChunkSpan(1, 12, 1))

    ser = [float(row["val_ser"]) for row in read_rows("patient")]
    assert len(ser) < 12, f"val SER improved at every one of 12 epochs, so patience was never tested: {ser}"
    assert (result.status, result.best_epoch) == ("completed", int(np.argmin(ser)) + 1)
    assert "early stop" in result.stop_reason
    assert min(ser[-2:]) >= min(ser[:-2]) and len(ser) == result.best_epoch + 2
    state = run_state.read_state("patient")
    assert (state["status"], state["best_epoch"]) == ("completed", result.best_epoch)


@pytest.mark.integration
def test_each_chunk_sets_op_determinism_as_its_run_asks(engraved_home):
    from tensorflow.python.framework import config as tf_config

    new_run("loose", max_total_epochs=2, deterministic=False)
    new_run("strict", max_total_epochs=1, deterministic=True)

    assert train_chunk("loose", ChunkSpan(1, 1, 1)).last_completed_epoch == 1
    assert not tf_config.is_op_determinism_enabled()
    train_chunk("strict", ChunkSpan(1, 1, 1))
    assert tf_config.is_op_determinism_enabled()
    assert train_chunk("loose", ChunkSpan(2, 2, 1)).status == "completed"
    assert not tf_config.is_op_determinism_enabled()
    assert epochs_logged("loose") == [1, 2]
    tf_config.enable_op_determinism()  # as the other tests expect


@pytest.mark.integration
def test_a_run_that_leaves_determinism_open_gets_it_from_the_machine_that_trains(engraved_home, monkeypatch):
    from tensorflow.python.framework import config as tf_config
    from supersmm_tasks import training

    config = new_run("open", max_total_epochs=1)
    assert config.deterministic is None and load_run_config("open").deterministic is None
    tf_config.disable_op_determinism()
    train_chunk("open", ChunkSpan(1, 1, 1))  # this machine has no GPU
    assert tf_config.is_op_determinism_enabled()
    assert "deterministic)" in paths.log_path("open").read_text()

    monkeypatch.setattr(training, "gpu_present", lambda: True)
    assert not training.deterministic(config)
    assert training.deterministic(new_run("strict_on_gpu", deterministic=True))


@pytest.mark.integration
def test_pause_and_cancel_requests_stop_at_an_epoch_boundary(engraved_home):
    new_run("controlled", max_total_epochs=5)
    answers = iter([None, "paused", "paused"])  # epoch 1's start; epoch 2's start, read again as the pause is written

    paused = train_chunk("controlled", ChunkSpan(1, 5, 1), should_stop=lambda: next(answers))

    assert (paused.status, paused.last_completed_epoch) == ("paused", 1)
    assert run_state.read_state("controlled")["status"] == "paused"
    cancelled = train_chunk("controlled", ChunkSpan(2, 5, 1), should_stop=lambda: "cancelled")
    assert (cancelled.status, cancelled.last_completed_epoch) == ("cancelled", 1)
    assert train_chunk("controlled", ChunkSpan(2, 5, 1)).epochs_trained == 0  # a cancelled run stays cancelled
    assert epochs_logged("controlled") == [1]


@pytest.mark.integration
def test_a_guard_that_fails_stops_every_further_write(engraved_home):
    new_run("guarded", max_total_epochs=3)
    train_chunk("guarded", ChunkSpan(1, 1, 1))
    calls = []

    def guard():
        calls.append(snapshot(engraved_home))
        if len(calls) == 6:  # among the writes that end epoch 2
            raise LeaseLost("another worker owns the run")

    with pytest.raises(LeaseLost):
        train_chunk("guarded", ChunkSpan(2, 3, 1), guard=guard)

    assert snapshot(engraved_home) == calls[-1]
    assert run_state.read_state("guarded")["status"] != "failed"


def snapshot(home) -> dict:
    return {str(p): p.read_bytes() for p in sorted((home / "model").rglob("*")) + [home / "logs" / "training_log.csv"]
            if p.is_file()}


@pytest.mark.integration
def test_the_tiny_model_learns(shared):
    """Cheap evidence that training works: CTC loss on training and validation data falls fast.
    Val SER itself needs a few hundred steps to leave 100%; bench/bench_training.py measures it."""
    rows = read_rows("shared")
    loss = [float(r["loss"]) for r in rows]
    val_loss = [float(r["val_loss"]) for r in rows]

    assert loss[-1] < 0.6 * loss[0], f"training loss per epoch: {loss}"
    # On the two or three validation staves of a 24-incipit corpus it falls by 5-10% while the schedule's rate is
    # high (epochs 1-3) and then holds.
    assert val_loss[0] > val_loss[1] > val_loss[2], f"validation loss per epoch: {val_loss}"
    assert min(val_loss) < 0.95 * val_loss[0], f"validation loss per epoch: {val_loss}"


@pytest.mark.integration
def test_mixed_precision_computes_in_float16_and_its_checkpoints_move_to_float32(tmp_path):
    """The GPU's path, run on the CPU: float16 layers, float32 weights and CTC loss, a scaled loss; a checkpoint
    carries the weights, Adam's state and the loss scale to a float32 trainer and back."""
    from conftest import REAL_SAMPLE_ID, require_real_dev
    from supersmm_tasks.checkpoint import save_checkpoint
    from supersmm_tasks.pipeline import WIDTH_MULTIPLE, load_image
    from supersmm_tasks.run_config import RunConfig
    from supersmm_tasks.trainer import Trainer
    from supersmm_tasks.vocabulary import encode

    config = RunConfig(
        run="mixed", dataset="none", dataset_path="", dataset_config="", split_files={}, split_seed=None,
        camera=False, encoding="semantic", model="tiny", height=64, batch_size=1, learning_rate=3e-3, seed=0,
        deterministic=True, train_samples=0, max_total_epochs=1, max_epochs_per_run=1, patience=0, queue=None,
        priority=None, created_at="")
    sample = require_real_dev() / REAL_SAMPLE_ID
    image = load_image(sample / f"{REAL_SAMPLE_ID}.png", 64)[np.newaxis]
    width = image.shape[2]
    image = np.pad(image, [(0, 0), (0, 0), (0, -width % WIDTH_MULTIPLE), (0, 0)])  # as batches pad it
    tokens = (sample / f"{REAL_SAMPLE_ID}.semantic").read_text("utf-8").split()
    batch = (tf.constant(image), tf.constant([width]), tf.constant([encode(tokens, "semantic")]),
             tf.constant([len(tokens)]))

    mixed = Trainer(config, mixed_precision=True)
    initial_scale, initial = mixed.loss_scale, [v.numpy() for v in mixed.model.trainable_variables]
    losses = [mixed.train_step(*batch) for _ in range(8)]  # steps whose scaled gradients overflow are skipped

    assert mixed.model.get_layer("conv1").compute_dtype == "float16"
    assert {v.dtype for v in mixed.model.trainable_variables} == {"float32"}
    assert all(loss.dtype == tf.float32 and np.isfinite(loss.numpy()) and loss.numpy() > 0 for loss in losses)
    assert 1 < mixed.loss_scale < initial_scale  # lowered until float16 gradients fit
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(initial, mixed.model.trainable_variables))

    path = save_checkpoint(tmp_path, 1, *mixed.state_arrays(), meta=mixed.loss_scale_meta)
    on_cpu = Trainer(config, mixed_precision=False)
    on_cpu.restore(load_checkpoint(path))
    assert on_cpu.loss_scale is None and np.isfinite(float(on_cpu.train_step(*batch)))
    back_on_gpu = Trainer(config, mixed_precision=True)
    back_on_gpu.restore(load_checkpoint(path))
    assert back_on_gpu.loss_scale == mixed.loss_scale
    assert int(back_on_gpu.optimizer.step_counter.numpy()) == int(mixed.optimizer.step_counter.numpy()) > 0
    for restored, saved in zip(back_on_gpu.state_arrays(), mixed.state_arrays(), strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(restored, saved, strict=True))


def test_epochs_in_time_fits_the_minutes_left_at_the_recent_pace(engraved_home):
    from dataclasses import replace

    from supersmm_tasks.training import Progress, epochs_in_time

    config = replace(new_run("fitted", max_total_epochs=30), max_minutes=3.0)
    assert config.epoch_cap == 30
    after_two = Progress(epoch=2, cumulative_time_sec=50.0, recent_epoch_times=(30.0, 20.0))
    assert epochs_in_time(config, after_two) == 2 + 6  # 130 s left at 20 s an epoch (the first also traced)
    assert epochs_in_time(replace(config, max_total_epochs=4), after_two) == 8  # fitted up again, under the cap
    assert epochs_in_time(replace(config, epoch_cap=5), after_two) == 5  # never above the cap
    assert epochs_in_time(replace(config, max_minutes=0.5), after_two) == 2  # time is up: the run ends here
    assert epochs_in_time(replace(config, max_minutes=None, max_total_epochs=4), after_two) == 4
    assert epochs_in_time(config, Progress(epoch=1, cumulative_time_sec=30.0, recent_epoch_times=(30.0,))) == 30
    later = Progress(epoch=9, cumulative_time_sec=170.0, recent_epoch_times=(10.0, 10.0, 20.0, 20.0, 20.0))
    assert epochs_in_time(config, later) == 9 + 0  # the recent pace is 16 s: 10 s left hold no epoch
    assert epochs_in_time(replace(config, max_minutes=4.0), later) == 9 + 4  # 70 s left


def test_a_new_time_budget_fits_again_under_the_epoch_budget_given(engraved_home):
    from supersmm_tasks.run_config import fit_epoch_budget

    config = new_run("retimed", max_total_epochs=40, max_minutes=5)
    assert (config.max_minutes, config.max_total_epochs, config.epoch_cap) == (5, 40, 40)
    fitted = fit_epoch_budget("retimed", 12)  # as a worker does
    assert (fitted.max_total_epochs, fitted.epoch_cap) == (12, 40)
    assert run_state.read_state("retimed")["max_total_epochs"] == 12
    assert create_or_update_run("retimed", max_minutes=5).max_total_epochs == 12  # the same time: the fit stands
    assert create_or_update_run("retimed", max_minutes=10).max_total_epochs == 40  # the next epoch fits it again
    changed = create_or_update_run("retimed", max_minutes=20, max_total_epochs=50)
    assert (changed.max_total_epochs, changed.epoch_cap) == (50, 50)
    fit_epoch_budget("retimed", 30)
    capped = create_or_update_run("retimed", max_total_epochs=30)  # the fitted budget, given: now the cap too
    assert (capped.max_total_epochs, capped.epoch_cap) == (30, 30)
    assert paths.log_path("retimed").read_text("utf-8").rstrip().endswith("settings changed: epoch_cap=30")
    for bad in (0, -1, "ten", True):
        with pytest.raises(SupersmmError, match="--max-minutes"):
            create_or_update_run("retimed", max_minutes=bad)


@pytest.mark.integration
def test_a_run_keeps_to_its_minutes_and_its_schedule_ends_with_them(engraved_home):
    """Two epochs show the pace; a time budget of 4.5 more of them fits the epoch budget of 30 to 6 at the next
    chunk's start, and the learning rate, which spanned 30 epochs, comes to the end of its cosine with the run."""
    config = new_run("timed", max_total_epochs=30)
    train_chunk("timed", ChunkSpan(1, 2, 1))
    rows = read_rows("timed")
    seconds = float(rows[-1]["cumulative_time_sec"]) + 4.5 * float(rows[-1]["epoch_time_sec"])
    create_or_update_run("timed", max_minutes=seconds / 60)

    result = train_chunk("timed", ChunkSpan(3, 30, 2))

    state = run_state.read_state("timed")
    log = paths.log_path("timed").read_text("utf-8")
    assert "6 epochs fit in the run's" in log  # at the chunk's start: 2 + 4 whole epochs
    assert (result.status, result.stop_reason, state["status"]) == ("completed", "max_minutes", "completed")
    assert 3 <= state["last_completed_epoch"] == state["max_total_epochs"] <= 10  # fitted again as epochs went
    rows = read_rows("timed")
    assert epochs_logged("timed") == list(range(1, state["last_completed_epoch"] + 1))
    assert [int(row["max_total_epochs"]) for row in rows[:2]] == [30, 30]
    assert all(int(row["max_total_epochs"]) <= 10 for row in rows[2:])
    assert float(rows[1]["learning_rate"]) > 0.9 * config.learning_rate  # near its peak while 30 epochs were planned
    # At the end of its cosine (2% of the peak), or an epoch before it where the last epoch ran slow (under 15%).
    assert float(rows[-1]["learning_rate"]) < 0.15 * config.learning_rate

    create_or_update_run("timed", max_minutes=2 * seconds / 60)  # more time: the run goes on, fitted again
    state = run_state.read_state("timed")
    assert (state["status"], state["max_total_epochs"]) == ("queued", 30)


def test_a_checkpoint_that_cannot_be_read_is_never_taken_for_damaged_nor_deleted(tmp_path):
    import numpy as np

    from supersmm_tasks.checkpoint import checkpoint_path, latest_valid_checkpoint, save_checkpoint

    for epoch in (1, 2):
        save_checkpoint(tmp_path, epoch, [np.full(3, epoch, np.float32)], [], meta={})
    damaged = checkpoint_path(tmp_path, 3)
    damaged.write_bytes(b"PK\x03\x04 cut short")  # a crash or a bad disk: damaged, deleted by the trainer
    unreadable = checkpoint_path(tmp_path, 4)
    unreadable.mkdir()  # reading it fails with an OSError, as a disk or NFS error would
    deleted = []

    with pytest.raises(SupersmmError, match=r"cannot read checkpoint .*epoch_000004\.npz: .*nothing was deleted"):
        latest_valid_checkpoint(tmp_path, on_corrupt=lambda path, reason: deleted.append(path))
    assert deleted == [] and unreadable.is_dir()

    unreadable.rmdir()
    newest = latest_valid_checkpoint(tmp_path, on_corrupt=lambda path, reason: deleted.append(path))
    assert newest.epoch == 2 and deleted == [damaged]
