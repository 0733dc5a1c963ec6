"""Flower on the project's app: a real Flower process lists the workers and every chunk, behind basic auth, on loopback."""
from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import psutil
import pytest

CREDENTIALS = "watcher:s3cret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, credentials: str | None = CREDENTIALS):
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def flower(training_home, tmp_path):
    port = free_port()
    log_path = tmp_path / "flower.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "supersmm_tasks", "flower", f"--port={port}",
             f"--basic-auth={CREDENTIALS}"],
            env=training_home.env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def answering():
        try:
            get_json(f"{base}/api/workers?refresh=false")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    training_home.wait_for(answering, 60, f"Flower on port {port}\n{log_path}")
    yield base, process
    process.terminate()
    process.wait(timeout=30)


def test_flower_lists_workers_and_every_chunk_behind_basic_auth(training_home, workers, flower):
    base, process = flower
    training_home.enqueue("watched", epochs=2, chunk=1)
    worker = workers.start("worker")
    assert training_home.wait_until_finished("watched", 240, [worker])["status"] == "completed"

    listed_workers = training_home.wait_for(lambda: get_json(f"{base}/api/workers?refresh=1"), 60, "Flower's worker list")
    assert worker.hostname in listed_workers

    def chunks_seen():
        seen = get_json(f"{base}/api/tasks")
        names = sorted(task["name"] for task in seen.values() if task.get("state") == "SUCCESS")
        return names if names == ["watched: epochs 1-1", "watched: epochs 2-2"] else None

    training_home.wait_for(chunks_seen, 60, "Flower to list both chunks as succeeded")
    assert all(task_id.startswith("watched:") for task_id in get_json(f"{base}/api/tasks"))

    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(f"{base}/api/tasks", credentials=None)
    assert refused.value.code == 401

    listening = [c.laddr.ip for c in psutil.Process(process.pid).net_connections(kind="inet") if c.status == "LISTEN"]
    assert listening and set(listening) == {"127.0.0.1"}
