"""The live dashboard, served by a real `serve()` process and read by real headless Chromium.

The run files are written with the project's own writers (`training_log.append_row`, the state format of
`run_state`), exactly as a trainer leaves them.
"""
from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from supersmm_tasks import paths, run_state, training_log
from supersmm_tasks.broker import free_loopback_port
from supersmm_tasks.dashboard.previews import token_diff
from supersmm_tasks.dashboard.server import STATIC_DIR, serve
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.testing import headless_chromium

# XML namespace names are identifiers that browsers never fetch.
NAMESPACE_URLS = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink")


# ------------------------------------------------------------------ run files as a trainer writes them

def epoch_row(run: str, epoch: int, max_epochs: int, chunk: int, worker: str = "celery@trainer", **changes) -> dict:
    moment = datetime.now(timezone.utc) - timedelta(minutes=10 - epoch)
    row = {
        "timestamp": moment.isoformat(timespec="seconds"), "run": run, "dataset": "primus", "epoch": epoch,
        "max_total_epochs": max_epochs, "loss": round(40 / epoch, 3), "val_loss": round(44 / epoch, 3),
        "val_ser": round(90 / epoch, 2), "val_sequence_error": 100, "epoch_time_sec": 12.5,
        "cumulative_time_sec": 12.5 * epoch, "samples_per_sec": 21.5, "learning_rate": 0.001, "batch_size": 4,
        "dataset_size": 40, "remaining_epochs": max_epochs - epoch,
        "est_completion_time": (moment + timedelta(minutes=5)).isoformat(timespec="seconds"), "worker": worker,
        "chunk": chunk, "checkpoint_path": f"model/{run}_model/checkpoints/epoch_{epoch:06d}.npz", "memory_mb": 700,
    }
    return {**row, **changes}


def write_state(run: str, status: str, epoch: int, max_epochs: int, updated_at: datetime | None = None) -> None:
    state = {
        "run": run, "dataset": "primus", "status": status, "last_completed_epoch": epoch,
        "max_total_epochs": max_epochs, "max_epochs_per_run": 2, "checkpoint": "", "worker": "celery@trainer",
        "updated_at": (updated_at or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
    }
    path = paths.state_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_state.format_state(state))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERSMM_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def two_epoch_run(home):
    """Run `tiny` at epoch 2 of 3, still running, with a log that holds markup."""
    for epoch in (1, 2):
        training_log.append_row(epoch_row("tiny", epoch, 3, chunk=epoch))
    write_state("tiny", "running", 2, 3)
    run_state.append_log("tiny", "epoch 2 done <script>window.injected = 1</script> <b>bold?</b>")
    return "tiny"


# ------------------------------------------------------------------ a real server and a real browser

def get(url: str, credentials: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def start_server(home: Path, *, username: str | None = None, password: str | None = None):
    port = free_loopback_port()
    code = f"from supersmm_tasks.dashboard import serve; serve(port={port}, username={username!r}, password={password!r})"
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "SUPERSMM_HOME": str(home)})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, base
        except OSError:
            assert process.poll() is None, "the dashboard server exited"
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the dashboard server did not start listening")


@pytest.fixture
def server(home):
    process, base = start_server(home)
    yield base
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture
def browser():
    with headless_chromium() as driver:
        yield driver


def wait_for(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))


def run_row_text(driver, run: str) -> str:
    # Read in one script: the page swaps a row's cells when they change, so a cell found by one
    # WebDriver call may be gone (stale) by the next.
    return driver.execute_script(
        "const row = document.querySelector(`#runs tbody tr[data-run=\"${arguments[0]}\"]`);"
        "return row ? row.innerText : '';",
        run,
    )


def save_screenshot(driver, name: str) -> None:
    folder = os.environ.get("SUPERSMM_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


# ------------------------------------------------------------------ the page

def test_page_shows_the_run_and_updates_itself_without_reload(two_epoch_run, server, browser):
    browser.get(server + "/")
    wait_for(browser, lambda d: "2 / 3" in run_row_text(d, "tiny"))
    assert "running" in run_row_text(browser, "tiny")
    wait_for(browser, lambda d: len(d.find_elements("css selector", "#chart circle.point.loss")) == 2)
    browser.execute_script("window.loadedOnce = 'yes'")

    training_log.append_row(epoch_row("tiny", 3, 3, chunk=3, worker="celery@other"))
    write_state("tiny", "completed", 3, 3)

    wait_for(browser, lambda d: "3 / 3" in run_row_text(d, "tiny") and "completed" in run_row_text(d, "tiny"))
    wait_for(browser, lambda d: len(d.find_elements("css selector", "#chart circle.point.loss")) == 3)
    assert browser.execute_script("return window.loadedOnce") == "yes", "the page reloaded"
    assert "30.00 %" in run_row_text(browser, "tiny")  # best val SER: 90 / 3
    assert browser.find_elements("css selector", "#chart line.boundary.chunk")
    assert browser.find_elements("css selector", "#chart line.boundary.resumed")  # another worker took over

    log = browser.find_element("id", "log")
    assert "<script>window.injected = 1</script>" in log.text
    assert not log.find_elements("css selector", "script, b")
    assert browser.execute_script("return window.injected") is None
    save_screenshot(browser, "dashboard.png")


def test_rows_stay_in_place_across_refreshes_and_a_click_selects_a_run(two_epoch_run, server, browser):
    training_log.append_row(epoch_row("other", 1, 5, chunk=1))
    write_state("other", "running", 1, 5)
    browser.get(server + "/")
    wait_for(browser, lambda d: "1 / 5" in run_row_text(d, "other"))
    row_of = "return document.querySelector(`#runs tbody tr[data-run='${arguments[0]}']`)"
    browser.execute_script(row_of + ".kept = 'yes'", "other")

    training_log.append_row(epoch_row("other", 2, 5, chunk=1))
    write_state("other", "running", 2, 5)
    wait_for(browser, lambda d: "2 / 5" in run_row_text(d, "other"))
    assert browser.execute_script(row_of + ".kept", "other") == "yes", "the row was replaced, not updated"

    browser.execute_script(row_of + ".cells[0].click()", "other")
    wait_for(browser, lambda d: d.find_element("id", "run-name").text == "other")
    assert browser.current_url.endswith("#run=other")
    assert browser.execute_script(row_of + ".classList.contains('selected')", "other")
    assert not browser.execute_script(row_of + ".classList.contains('selected')", "tiny")


def test_page_loads_nothing_from_outside_the_server(two_epoch_run, server, browser):
    browser.get(server + "/")
    wait_for(browser, lambda d: "2 / 3" in run_row_text(d, "tiny"))
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    loaded.append(browser.current_url)
    assert len(loaded) >= 5  # the page, its CSS, two scripts, the API
    assert all(url.startswith(server + "/") for url in loaded), loaded


def test_shipped_assets_name_no_outside_host(server):
    status, page = get(server + "/")
    assert status == 200
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.decode())
    assert {"/static/dashboard.js", "/static/chart.js", "/static/style.css"} <= set(assets)
    texts = [page.decode()] + [get(server + asset)[1].decode() for asset in assets]
    for text in texts:
        for url in re.findall(r"https?://[^\s\"'`)<>]+", text):
            assert url in NAMESPACE_URLS or re.match(r"https?://(127\.0\.0\.1|localhost)[:/]", url), url
    assert {path.name for path in STATIC_DIR.iterdir()} >= {"index.html", "dashboard.js", "chart.js", "style.css"}


# ------------------------------------------------------------------ the JSON API

def test_half_written_csv_line_is_ignored_until_complete(two_epoch_run, server):
    csv_path = paths.training_log_csv()
    with open(csv_path, "a") as csv_file:
        csv_file.write("2026-11-25T17:00:00+00:00,tiny,primus,3,3,0.5")  # a trainer is still writing this
    status, body = get(server + "/api/runs")
    assert status == 200
    (run,) = json.loads(body)["runs"]
    assert run["name"] == "tiny" and run["epoch"] == 2 and run["best_val_ser"] == 45.0
    status, body = get(server + "/api/runs/tiny")
    assert status == 200 and json.loads(body)["history"]["epoch"] == [1, 2]


def test_missing_empty_and_foreign_csv(home, server):
    status, body = get(server + "/api/runs")
    assert status == 200 and json.loads(body)["runs"] == []

    paths.training_log_csv().parent.mkdir(parents=True, exist_ok=True)
    paths.training_log_csv().write_text("")
    assert json.loads(get(server + "/api/runs")[1])["runs"] == []

    paths.training_log_csv().write_text("this,is,not\nthe,training,log\n")
    answer = json.loads(get(server + "/api/runs")[1])
    assert answer["runs"] == [] and "training_log.csv" in answer["problem"]


def test_unreadable_training_log_is_one_problem_line_and_runs_still_listed(two_epoch_run, server):
    csv_path = paths.training_log_csv()
    rows = csv_path.read_bytes()
    csv_path.unlink()
    csv_path.mkdir()  # a folder where the file should be: reading it fails as an unreadable file does
    for url in ("/api/runs", "/api/runs/tiny"):
        status, body = get(server + url)
        assert status == 200, (url, body)
        answer = json.loads(body)
        assert "training_log.csv" in answer["problem"] and "directory" in answer["problem"], answer["problem"]
    runs = json.loads(get(server + "/api/runs")[1])["runs"]
    assert [(run["name"], run["status"], run["epoch"]) for run in runs] == [("tiny", "running", 2)]  # from its folder

    csv_path.rmdir()
    csv_path.write_bytes(rows)
    answer = json.loads(get(server + "/api/runs/tiny")[1])
    assert answer["problem"] is None and answer["history"]["epoch"] == [1, 2]


def test_unreadable_run_log_leaves_an_empty_tail_and_a_note(two_epoch_run, server):
    log = paths.log_path("tiny")
    log.unlink()
    log.mkdir()  # a folder where the log should be
    status, body = get(server + "/api/runs/tiny")
    assert status == 200, body
    detail = json.loads(body)
    assert detail["log_tail"] == ""
    assert str(log) in detail["log_problem"] and "directory" in detail["log_problem"], detail["log_problem"]
    assert detail["history"]["epoch"] == [1, 2]
    assert get(server + "/api/runs")[0] == 200


def test_row_with_extra_fields_is_skipped_and_never_shifts_columns(home, server):
    csv_path = paths.training_log_csv()
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text("run,epoch\nfoo,1,2,3,4\nbar,2\nbaz,3,9\n")
    runs = json.loads(get(server + "/api/runs")[1])["runs"]
    assert [(run["name"], run["epoch"]) for run in runs] == [("bar", 2)]

    # The same with the trainer's own columns: the first row's extra fields must not become an index.
    good = training_log.format_row(epoch_row("tiny", 1, 3, chunk=1))
    longer = training_log.format_row(epoch_row("tiny", 2, 3, chunk=1)).rstrip("\n") + ",x,y,z,w\n"
    csv_path.write_text(training_log.HEADER + longer + good)
    runs = json.loads(get(server + "/api/runs")[1])["runs"]
    assert [(run["name"], run["epoch"], run["max_total_epochs"]) for run in runs] == [("tiny", 1, 3)]


def test_run_with_csv_rows_only_is_listed(home, server):
    training_log.append_row(epoch_row("orphan", 1, 10, chunk=1))
    status, body = get(server + "/api/runs")
    (run,) = json.loads(body)["runs"]
    assert (run["name"], run["status"], run["epoch"], run["max_total_epochs"]) == ("orphan", "unknown", 1, 10)
    status, body = get(server + "/api/runs/orphan/previews")
    assert status == 200 and json.loads(body)["status"] == "no checkpoint"


def test_running_run_without_news_is_flagged_stale(home, server):
    long_ago = datetime.now(timezone.utc) - timedelta(hours=2)
    write_state("quiet", "running", 0, 5, updated_at=long_ago)
    os.utime(paths.state_path("quiet"), (long_ago.timestamp(), long_ago.timestamp()))
    write_state("fresh", "running", 0, 5)
    runs = {run["name"]: run for run in json.loads(get(server + "/api/runs")[1])["runs"]}
    assert runs["quiet"]["stale"] is True
    assert runs["fresh"]["stale"] is False


def test_each_prediction_shown_offers_its_musicxml_for_download(learned_run, browser):
    """The run has learned to read the real sample, so its validation predictions are scores."""
    import music21

    process, base = start_server(learned_run)
    try:
        browser.get(base + "/#run=run")
        links = wait_for(browser, lambda d: d.find_elements("css selector", "#previews a.download-score"), timeout=180)
        cards = browser.find_elements("css selector", "#previews figure.preview")
        assert len(links) == len(cards) > 0
        url = links[0].get_attribute("href")
        assert links[0].get_attribute("download").endswith(".musicxml")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"] == "application/vnd.recordare.musicxml+xml"
            assert re.fullmatch(r'attachment; filename="[A-Za-z0-9_-]+\.musicxml"',
                                response.headers["Content-Disposition"])
            score = music21.converter.parseData(response.read(), format="musicxml")
        assert list(score.recurse().notes)
        save_screenshot(browser, "dashboard_previews.png")
        for path in ("/api/runs/run/previews/0/..%2Fscore.musicxml", "/api/runs/run/previews/0/score.musicxml%00",
                     "/api/runs/run/previews/0/score.xml", "/api/runs/run/previews/999/score.musicxml",
                     "/api/runs/..%2Frun/previews/0/score.musicxml"):
            assert 400 <= get(base + path)[0] < 500, path
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize("path", [
    "/api/runs/Bad-Name", "/api/runs/..%2F..%2Fetc%2Fpasswd", "/api/runs/%2e%2e", "/api/runs/" + "a" * 41,
    "/api/runs/Bad-Name/previews", "/api/runs/UPPER/previews/0/image",
])
def test_bad_run_name_in_url_is_refused(home, server, path):
    status, body = get(server + path)
    assert 400 <= status < 500
    assert "root:" not in body.decode(errors="replace")


def test_unknown_run_and_unknown_path_are_404(home, server):
    assert get(server + "/api/runs/nobody")[0] == 404
    assert get(server + "/api/runs/nobody/previews/0/image")[0] == 404
    assert get(server + "/static/../server.py")[0] in (403, 404)
    assert get(server + "/static/%00")[0] == get(server + "/static/style.css%00")[0] == 404
    assert get(server + "/nothing/here")[0] == 404


def test_basic_auth_when_a_password_is_set(home):
    process, base = start_server(home, username="ops", password="s3cret")
    try:
        assert get(base + "/api/runs")[0] == 401
        assert get(base + "/", "ops:wrong")[0] == 401
        assert get(base + "/static/dashboard.js", "ops:wrong")[0] == 401
        assert get(base + "/api/runs", "ops:s3cret")[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_flower_link_reaches_the_page_without_its_credentials(home, monkeypatch):
    monkeypatch.setenv("SUPERSMM_FLOWER_URL", "http://admin:flowerpw@127.0.0.1:5555/flower/")
    monkeypatch.setenv("SUPERSMM_TENSORBOARD_URL", "https://viewer:tbpw@[::1]:6006")
    process, base = start_server(home)
    try:
        status, body = get(base + "/api/config")
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert status == 200
    assert json.loads(body)["links"] == {"flower": "http://127.0.0.1:5555/flower/", "tensorboard": "https://[::1]:6006"}
    assert b"flowerpw" not in body and b"tbpw" not in body and b"admin" not in body


def test_bad_flower_link_is_one_line_without_the_password(home):
    environment = {**os.environ, "SUPERSMM_HOME": str(home), "SUPERSMM_FLOWER_URL": "ftp://admin:flowerpw@h"}
    command = [sys.executable, "-m", "supersmm_tasks.cli", "dashboard", "--port", str(free_loopback_port())]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    assert "SUPERSMM_FLOWER_URL" in finished.stderr and "http://" in finished.stderr, finished.stderr
    assert "flowerpw" not in finished.stdout + finished.stderr
    assert "Traceback" not in finished.stderr


def test_refuses_non_loopback_address_without_password():
    with pytest.raises(SupersmmError, match="password") as refused:
        serve(host="0.0.0.0", port=free_loopback_port())
    # A password given on the command line shows in `ps`: the message points to the environment.
    assert "SUPERSMM_DASHBOARD_PASSWORD" in str(refused.value) and "or --password" not in str(refused.value)


def test_token_diff_marks_what_was_misread():
    truth = ["clef-G2", "note-C4_quarter", "note-D4_quarter", "barline"]
    read = ["clef-G2", "note-C4_half", "note-D4_quarter", "barline", "barline"]
    assert token_diff(truth, read) == [
        {"op": "equal", "truth": ["clef-G2"], "prediction": ["clef-G2"]},
        {"op": "replace", "truth": ["note-C4_quarter"], "prediction": ["note-C4_half"]},
        {"op": "equal", "truth": ["note-D4_quarter", "barline"], "prediction": ["note-D4_quarter", "barline"]},
        {"op": "insert", "truth": [], "prediction": ["barline"]},
    ]


# ------------------------------------------------------------------ the prediction engraved again

# The label of PrIMuS incipit 000051652-1_2_1 (shared/primus-reference/example/).
PRIMUS_EXAMPLE_TOKENS = (
    "clef-C1 keySignature-EbM timeSignature-2/4 multirest-23 barline rest-quarter rest-eighth note-Bb4_eighth barline "
    "note-Bb4_quarter. note-G4_eighth barline note-Eb5_quarter. note-D5_eighth barline note-C5_eighth note-C5_eighth "
    "rest-quarter barline"
).split()


def test_render_svg_engraves_every_note_of_a_real_primus_incipit(tmp_path):
    import xml.etree.ElementTree as ElementTree

    from supersmm_tasks.render import render_svg, write_svg

    tokens = PRIMUS_EXAMPLE_TOKENS
    svg = ElementTree.fromstring(render_svg(tokens))
    classes = [element.get("class", "").split() for element in svg.iter()]
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert sum("note" in c for c in classes) == sum(t.startswith("note-") for t in tokens) == 7
    assert sum("rest" in c for c in classes) == sum(t.startswith("rest-") for t in tokens) == 3
    assert sum("mRest" in c or "multiRest" in c for c in classes) == 1

    written = write_svg(tokens, tmp_path / "prediction.svg")
    assert ElementTree.parse(written).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    with pytest.raises(SupersmmError, match="cannot engrave"):
        write_svg(["note-C4_quarter"], tmp_path / "headless.svg")  # no clef: nothing to engrave it on
    assert not (tmp_path / "headless.svg").exists()
