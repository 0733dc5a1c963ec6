"""The shared logs/training_log.csv: exact columns, repair of a cut-off line, many writers, reconciliation."""
import csv
import json
import subprocess
import sys

import pytest

from supersmm_tasks import paths
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.training_log import COLUMNS, append_row, read_rows, reconcile_run

CONTRACT_COLUMNS = (
    "timestamp, run, dataset, epoch, max_total_epochs, loss, val_loss, val_ser, val_sequence_error, epoch_time_sec, "
    "cumulative_time_sec, samples_per_sec, learning_rate, batch_size, dataset_size, remaining_epochs, "
    "est_completion_time, worker, chunk, checkpoint_path, memory_mb"
).split(", ")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERSMM_HOME", str(tmp_path))
    return tmp_path


def row(run: str, epoch: int, **values) -> dict:
    return {column: "" for column in COLUMNS} | {"run": run, "dataset": "primus", "epoch": epoch,
                                                   "loss": 1.0 / epoch, "worker": "w, with comma"} | values


def epochs_of(run: str) -> list[int]:
    return [int(r["epoch"]) for r in read_rows(run)]


def test_the_file_has_exactly_the_contract_columns_in_order(home):
    append_row(row("a", 1))

    with open(paths.training_log_csv(), newline="") as log:
        header, first = list(csv.reader(log))
    assert header == CONTRACT_COLUMNS
    assert dict(zip(header, first))["worker"] == "w, with comma"


def test_a_partial_last_line_is_dropped_before_the_next_row(home):
    append_row(row("a", 1))
    append_row(row("a", 2))
    path = paths.training_log_csv()
    path.write_bytes(path.read_bytes()[:-17])  # a crash in the middle of writing epoch 2

    assert epochs_of("a") == [1]
    append_row(row("a", 2))

    assert epochs_of("a") == [1, 2]
    assert all(len(r) == len(COLUMNS) for r in csv.reader(path.open(newline="")))


def test_a_full_disk_while_appending_a_row_names_the_csv_and_the_next_row_cuts_the_partial_one(home, monkeypatch):
    import builtins
    import errno

    from supersmm_tasks import training_log

    append_row(row("a", 1))

    def half_then_disk_full(descriptor, *args, **kwargs):
        log = builtins.open(descriptor, *args, **kwargs)
        if not isinstance(descriptor, int):  # a read, not the append
            return log

        class HalfWritten:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                log.close()

            def write(self, text):
                log.write(text[: len(text) // 2])
                log.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

        return HalfWritten()

    monkeypatch.setattr(training_log, "open", half_then_disk_full, raising=False)
    with pytest.raises(SupersmmError) as raised:
        append_row(row("a", 2))
    monkeypatch.delattr(training_log, "open")

    assert str(raised.value) == (f"disk full while writing {paths.training_log_csv()}: free some space and try again; "
                                 f"its complete rows are intact")
    assert not paths.training_log_csv().read_bytes().endswith(b"\n")  # half a row on disk
    assert epochs_of("a") == [1]
    append_row(row("a", 2))  # space freed
    assert epochs_of("a") == [1, 2]
    assert all(len(r) == len(COLUMNS) for r in csv.reader(paths.training_log_csv().open(newline="")))


def test_rows_of_two_processes_writing_at_once_all_arrive_whole(home):
    writer = (
        "import sys\n"
        "from supersmm_tasks.training_log import COLUMNS, append_row\n"
        "run = sys.argv[1]\n"
        "for epoch in range(1, 151):\n"
        "    append_row({c: 'x' * 200 for c in COLUMNS} | {'run': run, 'epoch': epoch})\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", writer, run]) for run in ("left", "right")]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]

    assert epochs_of("left") == list(range(1, 151))
    assert epochs_of("right") == list(range(1, 151))
    assert len(read_rows()) == 300


def test_reconcile_keeps_one_row_per_committed_epoch_and_leaves_other_runs_alone(home):
    for epoch in (1, 2, 2, 4, 5):  # a duplicate of 2, no 3, and 4-5 beyond the committed epoch
        append_row(row("a", epoch))
    append_row(row("b", 7))
    stored = {3: row("a", 3, loss=0.25)}

    changes = reconcile_run("a", committed_epoch=3, row_for=stored.get)

    assert epochs_of("a") == [1, 2, 3]
    assert read_rows("a")[2]["loss"] == "0.25"
    assert epochs_of("b") == [7]
    assert len(changes) == 4  # one duplicate and two rows beyond 3 dropped, one row restored
    assert reconcile_run("a", committed_epoch=3, row_for=stored.get) == []


def test_reconcile_tells_a_run_from_runs_and_datasets_whose_names_contain_it(home):
    for epoch in (1, 2, 3):
        append_row(row("a", epoch, dataset="a_b"))
        append_row(row("a_b", epoch, dataset="a"))
        append_row(row("b", epoch, dataset="a", worker="a,a"))

    assert reconcile_run("a", 2, row_for=lambda epoch: None) == ["dropped row of epoch 3"]
    assert (epochs_of("a"), epochs_of("a_b"), epochs_of("b")) == ([1, 2], [1, 2, 3], [1, 2, 3])


def test_reconcile_sees_rows_that_other_processes_appended_or_rewrote_since_its_last_look(home):
    """Each chunk start reads only the rows appended since the process last looked: rows added by another
    process, a duplicate among them, and a file that another process rewrote are all seen."""
    write = "import sys, json\nfrom supersmm_tasks.training_log import append_row\nappend_row(json.loads(sys.argv[1]))\n"
    append_row(row("a", 1))
    assert reconcile_run("a", 1, row_for=lambda epoch: None) == []

    for epoch in (2, 2):  # a zombie's second row of epoch 2, from another process
        subprocess.run([sys.executable, "-c", write, json.dumps(row("a", epoch))], check=True)
    assert reconcile_run("a", 2, row_for=lambda epoch: None) == ["dropped row of epoch 2"]
    assert epochs_of("a") == [1, 2]
    assert reconcile_run("a", 2, row_for=lambda epoch: None) == []

    rows = paths.training_log_csv().read_text().splitlines(keepends=True)
    paths.training_log_csv().write_text("".join(rows[:2]) + rows[2].replace(",a,", ",b,", 1))  # same size, in place
    assert reconcile_run("a", 2, row_for={2: row("a", 2)}.get) == ["restored row of epoch 2 from its checkpoint"]
    assert (epochs_of("a"), epochs_of("b")) == ([1, 2], [2])


def test_a_file_with_other_columns_is_refused_with_a_clear_message(home):
    paths.training_log_csv().parent.mkdir(parents=True)
    paths.training_log_csv().write_text("time,run,epoch\n1,a,1\n")

    with pytest.raises(SupersmmError, match="expected columns"):
        append_row(row("a", 2))
