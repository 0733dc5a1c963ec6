"""Crashes and damage: SIGKILL at a random moment, damaged checkpoints, a full disk, lost state and CSV lines.

After each, the run continues from its last complete epoch and ends exactly where an undisturbed run ends.
"""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import final_arrays
from supersmm_tasks import durable, paths, run_state, run_summary
from supersmm_tasks.checkpoint import checkpoint_epochs, load_checkpoint
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.training import train_chunk
from supersmm_tasks.training_log import read_rows

pytestmark = pytest.mark.integration  # every test trains, some in killed subprocesses

EPOCHS = 4
# Columns that depend on the training only (not on clocks, processes or file names).
RESULT_COLUMNS = ("epoch", "max_total_epochs", "loss", "val_loss", "val_ser", "val_sequence_error",
                  "learning_rate", "batch_size", "dataset_size", "remaining_epochs")
TRAINER_SCRIPT = """
import sys
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.training import train_chunk

def report(update):
    print(update["epoch"], update.get("batch", "end"), flush=True)

train_chunk(sys.argv[1], ChunkSpan(1, int(sys.argv[2]), 1), on_progress=report)
"""


@pytest.fixture(scope="module")
def straight(engraved_home):
    """The reference: run `straight`, trained without any disturbance."""
    new_run("straight")
    assert train_chunk("straight", ChunkSpan(1, EPOCHS, 1)).last_completed_epoch == EPOCHS
    return "straight"


def new_run(name: str):
    return create_or_update_run(name, "primus", model="tiny", batch_size=4, max_total_epochs=EPOCHS)


def results(name: str) -> list[tuple]:
    return [tuple(row[c] for c in RESULT_COLUMNS) for row in read_rows(name)]


def max_difference(left: list[np.ndarray], right: list[np.ndarray]) -> float:
    assert len(left) == len(right)
    return max(float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0 for a, b in zip(left, right))


def test_a_run_killed_at_a_random_moment_resumes_bit_for_bit(engraved_home, straight):
    new_run("killed")
    lines_per_epoch = int(read_rows("straight")[0]["dataset_size"]) // 4 + 1  # its batches, then the epoch's end
    # After the first epoch's end (its checkpoint is written before that line), so that there is a run to resume.
    kill_after = random.randrange(lines_per_epoch, EPOCHS * lines_per_epoch - 1)
    delay = random.uniform(0, 0.3)
    moment = f"killed after progress line {kill_after} + {delay:.3f} s"

    trainer = subprocess.Popen([sys.executable, "-c", TRAINER_SCRIPT, "killed", str(EPOCHS)],
                               stdout=subprocess.PIPE, text=True)
    for _ in range(kill_after):
        assert trainer.stdout.readline(), f"trainer ended early ({moment})"
    time.sleep(delay)  # the trainer runs on into whatever comes next: a batch, a checkpoint, a CSV row
    os.kill(trainer.pid, signal.SIGKILL)
    trainer.wait()
    assert checkpoint_epochs(paths.checkpoints_dir("killed")), f"no checkpoint to resume from ({moment})"

    result = train_chunk("killed", ChunkSpan(1, EPOCHS, 1))

    assert result.last_completed_epoch == EPOCHS, moment
    assert results("killed") == results("straight"), moment
    assert max_difference(final_arrays("killed"), final_arrays("straight")) == 0.0, moment


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(engraved_home, straight):
    new_run("damaged")
    train_chunk("damaged", ChunkSpan(1, 3, 1))
    newest = paths.run_dir("damaged") / "checkpoints" / "epoch_000003.npz"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    paused = train_chunk("damaged", ChunkSpan(1, EPOCHS, 1), should_stop=lambda: "paused")

    assert paused.last_completed_epoch == 2
    assert run_state.read_state("damaged")["checkpoint"].endswith("epoch_000002.npz")
    assert [r[0] for r in results("damaged")] == ["1", "2"]
    assert "epoch_000003.npz is damaged" in (paths.run_dir("damaged") / "logs" / "training_output.log").read_text()

    train_chunk("damaged", ChunkSpan(1, EPOCHS, 1))
    assert results("damaged") == results("straight")
    assert max_difference(final_arrays("damaged"), final_arrays("straight")) == 0.0


def test_a_full_disk_fails_the_chunk_cleanly_and_the_run_continues_later(engraved_home, straight, monkeypatch):
    new_run("full")
    train_chunk("full", ChunkSpan(1, 1, 1))
    write = durable._write_fully

    def disk_fills_during_big_writes(fd, data):
        if len(data) < 100_000:  # state and log files still fit
            return write(fd, data)
        write(fd, data[: len(data) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable, "_write_fully", disk_fills_during_big_writes)
    with pytest.raises(SupersmmError, match=r"disk full while training run 'full' \(.*epoch_000002.*\): free some space, "
                                            "then continue the run"):
        train_chunk("full", ChunkSpan(1, EPOCHS, 1))

    folder = paths.run_dir("full") / "checkpoints"
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".npz") == ["epoch_000001.npz"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    state = run_state.read_state("full")
    assert (state["last_completed_epoch"], state["status"]) == (1, "failed") and "disk full" in state["error"]
    assert load_checkpoint(state["checkpoint"]).epoch == 1
    assert [r[0] for r in results("full")] == ["1"]

    monkeypatch.setattr(durable, "_write_fully", write)  # space freed
    assert train_chunk("full", ChunkSpan(1, EPOCHS, 1)).last_completed_epoch == EPOCHS
    assert results("full") == results("straight")


def test_a_lost_state_file_is_rebuilt_from_the_checkpoints(engraved_home):
    new_run("lost")
    train_chunk("lost", ChunkSpan(1, 1, 1))
    train_chunk("lost", ChunkSpan(1, 2, 1))
    state_file = paths.run_dir("lost") / "training_state.txt"

    for damage in (lambda: state_file.write_bytes(b"\x00\xffnot a state"), state_file.unlink,
                   lambda: state_file.write_bytes(b"")):
        damage()
        state = run_state.read_state("lost")
        assert (state["last_completed_epoch"], state["dataset"], state["max_total_epochs"]) == (2, "primus", EPOCHS)
        assert state["checkpoint"].endswith("epoch_000002.npz")
        assert run_state.parse_state(state_file.read_text()) == state

    assert train_chunk("lost", ChunkSpan(1, 3, 1)).epochs_trained == 1
    assert train_chunk("lost", ChunkSpan(1, 4, 1)).epochs_trained == 1
    assert [r[0] for r in results("lost")] == ["1", "2", "3", "4"]
    assert "was unreadable" in (paths.run_dir("lost") / "logs" / "training_output.log").read_text()


def test_backups_rotate_and_stay_bounded(engraved_home):
    new_run("backed")
    train_chunk("backed", ChunkSpan(1, 1, 1))
    for _ in range(4):  # redelivered chunks: no training, but state writes and a log backup each
        assert train_chunk("backed", ChunkSpan(1, 1, 1)).epochs_trained == 0
    for number in range(run_state.STATE_BACKUPS_KEPT + 1):  # status changes: a state backup each
        run_state.write_state("backed", worker=f"worker{number}")

    backups = sorted(p.name for p in paths.backups_dir("backed").iterdir())
    assert backups == [f"training_output.{n}.log" for n in range(1, run_state.LOG_BACKUPS_KEPT + 1)] + \
        [f"training_state.{n}.txt" for n in range(1, run_state.STATE_BACKUPS_KEPT + 1)]
    kept = [run_state.parse_state((paths.backups_dir("backed") / f"training_state.{n}.txt").read_text())
            for n in range(1, run_state.STATE_BACKUPS_KEPT + 1)]
    assert [state["worker"] for state in kept] == [f"worker{n}" for n in range(run_state.STATE_BACKUPS_KEPT, 0, -1)]
    assert all(state["last_completed_epoch"] == 1 for state in kept)


def test_a_state_backup_is_written_when_the_status_fields_differ_from_the_newest_backup(engraved_home):
    new_run("changes")
    newest = paths.backups_dir("changes") / "training_state.1.txt"
    second = paths.backups_dir("changes") / "training_state.2.txt"
    run_state.write_state("changes", status="running", worker="w1", chunk=1)
    first_running = newest.read_text()
    assert run_state.parse_state(first_running)["status"] == "running"

    run_state.write_state("changes", last_completed_epoch=1, best_val_ser=50.0)  # an epoch: no status field changed
    assert newest.read_text() == first_running
    assert run_state.parse_state(second.read_text())["status"] == "queued"  # nothing rotated either

    newest.write_text("damaged")  # a backup cut short by a crash, or edited by hand
    run_state.write_state("changes", last_completed_epoch=2)
    repaired = run_state.parse_state(newest.read_text())
    assert (repaired["status"], repaired["worker"], repaired["last_completed_epoch"]) == ("running", "w1", 2)

    run_state.write_state("changes", status="paused", stop_reason="paused by request")
    assert run_state.parse_state(newest.read_text())["status"] == "paused"
    assert run_state.parse_state(second.read_text())["last_completed_epoch"] == 2


def test_a_csv_row_lost_in_a_crash_is_restored_from_its_checkpoint(engraved_home):
    new_run("rows")
    train_chunk("rows", ChunkSpan(1, 1, 1))
    before = results("rows")
    csv_file = paths.training_log_csv()
    text = csv_file.read_text()
    csv_file.write_text(text[: text.rstrip("\n").rfind("\n") + 1] + "2026-01-01T00:00:00+00:00,rows,pri")

    assert train_chunk("rows", ChunkSpan(1, 1, 1)).epochs_trained == 0

    assert results("rows") == before
    assert csv_file.read_text().endswith("\n")


def test_a_rebuilt_state_keeps_the_runs_status_and_status_writes_nothing(engraved_home, straight):
    state_file = paths.state_path("straight")
    log_file = paths.log_path("straight")
    original, log_before = state_file.read_text(), log_file.read_text()
    assert run_state.parse_state(original)["status"] == "completed"
    try:
        state_file.unlink()
        shown = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "status", "straight", "--json"],
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        [row] = json.loads(shown.stdout)
        assert (row["status"], row["last_completed_epoch"], row["eta"]) == ("completed", EPOCHS, "")
        assert not state_file.exists() and log_file.read_text() == log_before  # a reader writes nothing
        assert run_state.read_state("straight")["status"] == "completed"  # the owner's read repairs it
    finally:
        state_file.write_text(original)

    new_run("held")
    train_chunk("held", ChunkSpan(1, 1, 1))
    for status in ("paused", "cancelled", "failed"):
        run_state.write_state("held", status=status)
        paths.state_path("held").unlink()
        assert run_summary.status_rows("held")[0]["status"] == status
        assert run_state.peek_state("held")["status"] == status
        assert not paths.state_path("held").exists()
        assert run_state.read_state("held")["status"] == status


def test_a_best_model_the_last_chunk_did_not_export_is_exported_when_the_run_resumes(engraved_home):
    import keras

    from supersmm_tasks.run_config import load_run_config
    from supersmm_tasks.training import RunWriter, restore_run

    new_run("unexported")
    train_chunk("unexported", ChunkSpan(1, 1, 1))
    best = paths.best_model_path("unexported")
    newest = paths.checkpoints_dir("unexported") / "epoch_000001.npz"
    assert run_state.read_state("unexported")["best_epoch"] == 1 and best.is_file()
    # Killed between epoch 1's checkpoint and its export: the model on disk is older than that checkpoint.
    os.utime(best, ns=(newest.stat().st_mtime_ns - 10**9,) * 2)
    stale = best.stat().st_mtime_ns

    restore_run(load_run_config("unexported"), RunWriter("unexported"), "worker", 2)

    assert best.stat().st_mtime_ns > stale and best.stat().st_mtime_ns >= newest.stat().st_mtime_ns
    assert keras.models.load_model(best, compile=False) is not None


def test_a_diverged_epoch_fails_the_run_and_writes_nothing_of_it(engraved_home, monkeypatch):
    from supersmm_tasks.trainer import TRAINERS, Trainer

    new_run("diverged")
    train_chunk("diverged", ChunkSpan(1, 1, 1))
    original = Trainer.__init__

    def diverging(self, *arguments, **options):  # a model whose loss turns into NaN at its first step
        original(self, *arguments, **options)
        self.train_step = lambda *batch: np.float32("nan")

    monkeypatch.setattr(Trainer, "__init__", diverging)
    TRAINERS.clear()  # the next chunk builds its trainer, as a worker that did not train the run before does

    with pytest.raises(SupersmmError, match=r"epoch 2: the training loss became nan \(the model diverged\)"):
        train_chunk("diverged", ChunkSpan(2, 2, 2))

    state = run_state.read_state("diverged")
    assert (state["status"], state["last_completed_epoch"]) == ("failed", 1) and "diverged" in state["error"]
    assert sorted(p.name for p in paths.checkpoints_dir("diverged").glob("*.npz")) == ["epoch_000001.npz"]
    assert [row["epoch"] for row in read_rows("diverged")] == ["1"]
