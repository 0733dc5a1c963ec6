"""Flower on the project's app: a real Flower process lists the workers and every chunk, behind basic auth, on loopback."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from supersmm_tasks.broker import free_loopback_port

pytestmark = pytest.mark.integration  # a real Flower process on real workers

README = Path(__file__).resolve().parents[1] / "README.md"

CREDENTIALS = "watcher:s3cret"


def get_json(url: str, credentials: str | None = CREDENTIALS):
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def start_flower(env: dict, log_path, *options: str) -> tuple[str, subprocess.Popen]:
    """A real Flower on the project's app and a free loopback port, once it answers HTTP."""
    port = free_loopback_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "supersmm_tasks", "flower", f"--port={port}",
                                    *options], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/healthcheck", timeout=5).close()
            return base, process
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    process.kill()
    pytest.fail(f"Flower on port {port} did not answer:\n{log_path.read_text(errors='replace')[-3000:]}")


def stop_flower(process: subprocess.Popen) -> None:
    """SIGTERM, as a service manager stops Flower; a second one, then SIGKILL, if it goes on.

    Flower's SIGTERM handler raises SystemExit in whatever frame the main thread runs; where that frame is a
    weakref callback, Python prints "Exception ignored" and Flower carries on (seen in CI: it then outlived the
    test, retrying its lost broker for minutes). A second SIGTERM lands elsewhere.
    """
    for _ in range(2):
        process.terminate()
        try:
            process.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait(timeout=30)


def flower_heard_workers(base: str) -> set[str]:
    """The workers Flower knows from their events (its workers page; `/api/workers` asks the workers instead)."""
    return {worker["hostname"] for worker in get_json(f"{base}/workers?json=1")["data"]}


def status_without_credentials(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def flower(training_home, tmp_path):
    base, process = start_flower(training_home.env, tmp_path / "flower.log", f"--basic-auth={CREDENTIALS}")
    yield base, process
    stop_flower(process)


def test_flower_lists_workers_and_every_chunk_behind_basic_auth(training_home, workers, flower):
    base, process = flower
    worker = workers.start("worker")
    # Flower lists tasks from the events it hears, and an event sent before it listens is gone: once it lists the
    # worker from the worker's own events, it hears every chunk's.
    training_home.wait_for(lambda: worker.hostname in flower_heard_workers(base), 120, "Flower to hear the worker")
    training_home.enqueue("watched", epochs=2, chunk=1)
    assert training_home.wait_until_finished("watched", 240, [worker])["status"] == "completed"

    listed_workers = training_home.wait_for(lambda: get_json(f"{base}/api/workers?refresh=1"), 60, "Flower's worker list")
    assert worker.hostname in listed_workers

    listed = {}

    def chunks_seen():
        listed.update(get_json(f"{base}/api/tasks"))
        names = sorted(task["name"] for task in listed.values() if task.get("state") == "SUCCESS")
        return names if names == ["watched: epochs 1-1", "watched: epochs 2-2"] else None

    try:
        training_home.wait_for(chunks_seen, 60, "Flower to list both chunks as succeeded")
    except pytest.fail.Exception as timeout:
        pytest.fail(f"{timeout}; it lists {[(task['name'], task.get('state')) for task in listed.values()]}")
    assert all(task_id.startswith("watched:") for task_id in get_json(f"{base}/api/tasks"))

    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(f"{base}/api/tasks", credentials=None)
    assert refused.value.code == 401

    listening = [c.laddr.ip for c in psutil.Process(process.pid).net_connections(kind="inet") if c.status == "LISTEN"]
    assert listening and set(listening) == {"127.0.0.1"}


def test_without_basic_auth_flower_guards_only_its_api_as_the_readme_says(supersmm_env, tmp_path):
    base, process = start_flower(supersmm_env, tmp_path / "flower_open.log")
    try:
        assert status_without_credentials(f"{base}/api/workers") == 401
        assert status_without_credentials(f"{base}/workers") == 200  # the HTML pages answer anyone
    finally:
        stop_flower(process)

    readme = README.read_text("utf-8")
    # Every documented start of Flower sets a password: on its line, or exported before it (kept out of `ps`).
    for start in re.finditer(r"^celery -A supersmm_tasks flower.*$", readme, re.MULTILINE):
        assert "--basic-auth=" in start.group() or "\nexport FLOWER_BASIC_AUTH=" in readme[:start.start()], start.group()
    assert re.search(r"^celery -A supersmm_tasks flower", readme, re.MULTILINE)
    assert "without `--basic-auth`, only Flower's `/api` is protected" in " ".join(readme.split())


@pytest.mark.parametrize("given_in", ["environment", "option"])
def test_with_basic_auth_flower_guards_its_html_pages_too(supersmm_env, tmp_path, given_in):
    if given_in == "environment":  # as the README sets it
        base, process = start_flower({**supersmm_env, "FLOWER_BASIC_AUTH": CREDENTIALS}, tmp_path / "flower_auth.log")
    else:
        base, process = start_flower(supersmm_env, tmp_path / "flower_auth.log", f"--basic-auth={CREDENTIALS}")
    try:
        assert status_without_credentials(f"{base}/workers") == 401
        assert status_without_credentials(f"{base}/api/workers") == 401
    finally:
        stop_flower(process)
