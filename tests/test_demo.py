"""`supersmm demo` end to end (real Verovio corpus, embedded Redis, a real Celery worker, real TensorFlow),
run twice in the same folder, and the dashboard's validation previews of the model it trained.
"""
from __future__ import annotations

import json
import re
import time

import pytest

from supersmm_tasks import broker, paths, run_state, runs, training_log
from supersmm_tasks.demo import DEMO_SCHEDULE, RESULT_SECONDS, RUN_NAME, run_demo
from supersmm_tasks.errors import SupersmmError

from test_dashboard import get, start_server

pytestmark = pytest.mark.integration  # engraves a corpus and trains a run

SAMPLES = 30


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUPERSMM_HOME", str(home))
        patch.delenv("SUPERSMM_BROKER_URL", raising=False)
        patch.delenv("SUPERSMM_DATA_ROOT", raising=False)
        yield home
        broker.stop_embedded()


@pytest.fixture(scope="module")
def first_demo(demo_home):
    """The first demo in an empty folder: 30 incipits, 2 epochs in chunks of 1."""
    return run_demo(samples=SAMPLES, epochs=2, chunk=1)


def epochs_in_csv() -> list[tuple[int, int]]:
    return [(int(row["epoch"]), int(row["chunk"])) for row in training_log.read_rows(RUN_NAME)]


def test_demo_engraves_detects_trains_and_reports(demo_home, first_demo, capfd):
    assert first_demo == 0
    corpus = demo_home / "data" / "demo"
    samples = sorted(folder for folder in corpus.iterdir() if folder.is_dir())
    assert len(samples) == SAMPLES
    assert all((s / f"{s.name}.png").is_file() and (s / f"{s.name}_distorted.jpg").is_file() for s in samples)
    assert (demo_home / "datasets" / "demo.json").is_file()
    assert (demo_home / "scripts" / "train_demo.sh").is_file()

    state = run_state.read_state(RUN_NAME)
    assert (state["status"], state["last_completed_epoch"], state["max_total_epochs"]) == ("completed", 2, 2)
    assert json.loads(paths.config_path(RUN_NAME).read_text())["schedule"] == DEMO_SCHEDULE == "onecycle"
    assert [epoch for epoch, _ in epochs_in_csv()] == [1, 2]
    assert len({chunk for _, chunk in epochs_in_csv()}) == 2  # one Celery task per epoch


def test_demo_again_reuses_the_corpus_and_continues_the_run(demo_home, first_demo, capfd):
    corpus_files = {p: p.stat().st_mtime_ns for p in (demo_home / "data" / "demo").rglob("*")}
    # A run made by an older demo, on the recipe's cosine schedule, goes on with it (a run's schedule is fixed).
    config = paths.config_path(RUN_NAME)
    config.write_text(json.dumps({**json.loads(config.read_text()), "schedule": "cosine"}))
    assert run_demo(samples=SAMPLES, epochs=1, chunk=1) == 0
    out = capfd.readouterr().out
    assert "already there" in out and "continuing run demo from epoch 2 to 3" in out
    assert "symbol error rate" in out and "truth:" in out and "supersmm dashboard" in out
    assert {p: p.stat().st_mtime_ns for p in (demo_home / "data" / "demo").rglob("*")} == corpus_files
    assert [epoch for epoch, _ in epochs_in_csv()] == [1, 2, 3]
    assert run_state.read_state(RUN_NAME)["status"] == "completed"
    assert json.loads(config.read_text())["schedule"] == "cosine"


def test_dashboard_shows_predictions_of_the_demo_model(demo_home, first_demo):
    process, base = start_server(demo_home)
    try:
        deadline = time.monotonic() + 180
        previews = {"status": "computing"}
        while previews["status"] == "computing" and time.monotonic() < deadline:
            time.sleep(1)
            status, body = get(base + f"/api/runs/{RUN_NAME}/previews")
            assert status == 200
            previews = json.loads(body)
        assert previews["status"] == "ready" and previews["error"] is None, previews
        first = previews["images"][0]
        truth = [token for part in first["diff"] for token in part["truth"]]
        assert truth and truth[0].startswith("clef.")  # the demo trains agnostic labels (clef.C-L1, ...)
        status, image = get(base + first["image_url"])
        assert status == 200 and image.startswith(b"\x89PNG")
        if first["engraving_url"]:
            status, svg = get(base + first["engraving_url"])
            assert status == 200 and b"<svg" in svg
        else:
            assert first["engraving_problem"]
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_demo_fits_its_epochs_to_its_time(demo_home, first_demo, capfd):
    """Where the epochs asked do not fit in the demo's time, the worker lowers the run's epoch budget to what fits
    in its time budget, and the run ends there, completed."""
    before = run_state.read_state(RUN_NAME)["last_completed_epoch"]
    assert run_demo(samples=SAMPLES, epochs=8, chunk=1, seconds=RESULT_SECONDS) == 0  # no time to train
    assert "symbol error rate" in capfd.readouterr().out
    state = run_state.read_state(RUN_NAME)
    assert state["status"] == "completed"
    assert before <= state["last_completed_epoch"] == state["max_total_epochs"] < before + 8
    assert [epoch for epoch, _ in epochs_in_csv()] == list(range(1, state["last_completed_epoch"] + 1))
    log = paths.log_path(RUN_NAME).read_text("utf-8")
    assert re.search(rf"{state['max_total_epochs']} epochs fit in the run's [0-9.]+ minutes of training", log), log


def test_the_train_on_command_the_demo_offers_trains_its_completed_run_on(demo_home, first_demo, capfd):
    """The demo's run completes at its time budget (max_minutes): the command offered next must give it more
    time as well as more epochs, or it trains nothing."""
    from click.testing import CliRunner

    from supersmm_tasks.cli import cli
    from supersmm_tasks.demo import show_next_steps

    run_demo(samples=SAMPLES, epochs=8, chunk=1, seconds=RESULT_SECONDS)  # completed at its time budget
    assert run_state.read_state(RUN_NAME)["stop_reason"] == "max_minutes"
    capfd.readouterr()
    show_next_steps(home_given=False)
    [offered] = [line.split("#")[0].split() for line in capfd.readouterr().out.splitlines()
                 if line.strip().startswith(f"supersmm train {RUN_NAME} ")]

    queued = CliRunner().invoke(cli, ["enqueue", *offered[2:]])  # as `supersmm train` queues it, without a worker

    assert queued.exit_code == 0, queued.output
    assert "is complete" not in queued.output
    assert run_state.read_state(RUN_NAME)["status"] == "queued"
    runs.cancel(RUN_NAME)


@pytest.mark.parametrize("arguments", [{"samples": 2}, {"epochs": 0}, {"chunk": 0}])
def test_demo_refuses_sizes_it_cannot_train_on(tmp_path, arguments):
    with pytest.raises(SupersmmError):
        run_demo(home=tmp_path, **arguments)
    assert not (tmp_path / "data").exists()
