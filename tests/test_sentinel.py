"""A broker that fails over: a Redis master, a replica and three Sentinels (real Debian processes).

Workers, the CLI, the reconciler and the leases reach the master through
`sentinel://host:port;sentinel://host:port;...`; the master is SIGKILLed in the middle of a chunk, the
Sentinels promote the replica, and the run completes by itself with exactly one CSV row per epoch.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from supersmm_tasks.broker import free_loopback_port
from supersmm_tasks.testing import redis_server_binary
from test_selfheal import training_epoch

pytestmark = pytest.mark.integration  # a master, a replica and three Sentinels, each a real process

MASTER_NAME = "supersmm_master"  # not the default, so that SUPERSMM_SENTINEL_MASTER is what finds it
PASSWORD = "sentinel-s3cret"  # the master's and the replica's; the Sentinels have none
SENTINEL_PASSWORD = "watchers-s3cret"  # the Sentinels' own, in the test that gives them one


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (redis.RedisError, OSError):
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class SentinelGroup:
    """A master, a replica of it and three Sentinels watching them, all on loopback."""

    def __init__(self, folder: Path, sentinel_password: str | None = None):
        self.folder = folder
        self.sentinel_password = sentinel_password  # the Sentinels' own requirepass, when they take one
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports = {name: free_loopback_port() for name in ("master", "replica", "s1", "s2", "s3")}

    def start(self) -> None:
        self._redis("master")
        self._redis("replica", "--replicaof", "127.0.0.1", str(self.ports["master"]))
        replica = self.client("replica")
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 30, "the replica to sync")
        for name in ("s1", "s2", "s3"):
            config = self.folder / f"{name}.conf"
            config.write_text("\n".join([
                f"port {self.ports[name]}", "bind 127.0.0.1", f"dir {self.folder}",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.ports['master']} 2",
                f"sentinel auth-pass {MASTER_NAME} {PASSWORD}",
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
                f"sentinel failover-timeout {MASTER_NAME} 10000",
                *([f"requirepass {self.sentinel_password}"] if self.sentinel_password else []),
            ]) + "\n")
            self.processes[name] = subprocess.Popen([sentinel_binary(), str(config)],
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in ("s1", "s2", "s3"):
            sentinel = self.client(name)
            wait_until(lambda: sentinel.sentinel_master(MASTER_NAME)["num-other-sentinels"] == 2, 30,
                       f"sentinel {name} to see the two others")

    def _redis(self, name: str, *options: str) -> None:
        data = self.folder / name
        data.mkdir()
        self.processes[name] = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.ports[name]), "--bind", "127.0.0.1", "--dir", str(data),
             "--appendonly", "yes", "--save", "", "--requirepass", PASSWORD, "--masterauth", PASSWORD, *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.client(name).ping(), 10, f"redis {name}")

    def client(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], decode_responses=True, socket_timeout=2,
                           password=self.sentinel_password if name.startswith("s") else PASSWORD)

    @property
    def url(self) -> str:
        """The broker URL of the recipe in the README: the master's password in the first Sentinel's URL."""
        first, *others = (f"127.0.0.1:{self.ports[name]}" for name in ("s1", "s2", "s3"))
        return ";".join([f"sentinel://:{PASSWORD}@{first}", *(f"sentinel://{other}" for other in others)])

    def master_port(self) -> int:
        return int(self.client("s1").sentinel_get_master_addr_by_name(MASTER_NAME)[1])

    def kill_master(self) -> None:
        self.processes["master"].kill()
        self.processes["master"].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def sentinel_binary() -> str:
    found = shutil.which("redis-sentinel")
    if not found:
        pytest.fail("redis-sentinel is not installed (apt-get install redis-sentinel; .ci/run does)")
    return found


@pytest.fixture
def sentinels(tmp_path, training_home, monkeypatch, request):
    """The Sentinel group, with this test's SUPERSMM_BROKER_URL pointing at it (its Sentinels take the password
    the test's `sentinel_password` mark gives, if any)."""
    mark = request.node.get_closest_marker("sentinel_password")
    group = SentinelGroup(tmp_path / "sentinel", mark.args[0] if mark else None)
    group.folder.mkdir()
    group.start()
    for key, value in (("SUPERSMM_BROKER_URL", group.url), ("SUPERSMM_SENTINEL_MASTER", MASTER_NAME)):
        monkeypatch.setenv(key, value)
        training_home.env[key] = value
    yield group
    group.stop()


def test_a_run_survives_the_master_being_killed_mid_chunk(training_home, workers, sentinels):
    from supersmm_tasks import broker, lease

    assert training_home.enqueue("failover", epochs=4, chunk=2).startswith("queued run failover")
    first_master = sentinels.master_port()
    worker = workers.start("worker")
    training_home.wait_for(lambda: training_epoch(training_home, "failover", worker, at_least=2), 240,
                           "a trainer in the middle of epoch 2 (chunk 1)", [worker], run="failover")
    sentinels.kill_master()
    wait_until(lambda: sentinels.master_port() != first_master, 60, "the Sentinels to promote the replica")
    assert sentinels.master_port() == sentinels.ports["replica"]

    state = training_home.wait_until_finished("failover", 300, [worker])
    assert state["status"] == "completed" and state["last_completed_epoch"] == 4
    assert training_home.csv_epochs("failover") == [1, 2, 3, 4]
    training_home.wait_for(lambda: lease.holder(broker.client(), "failover") is None, 60,
                           "the trainer to release its lease on the new master", [worker])

    # The CLI reaches the new master through the same URL.
    status = subprocess.run([sys.executable, "-m", "supersmm_tasks.cli", "status", "failover"],
                            capture_output=True, text=True, timeout=120, env=training_home.env)
    assert status.returncode == 0, status.stderr
    assert "completed" in status.stdout and "4/4" in status.stdout


def test_celery_reads_the_sentinel_list_and_the_master_name(sentinels, training_home):
    shown = subprocess.run(
        [sys.executable, "-c", "from supersmm_tasks import app; c = app.conf; "
         "print(c.broker_url); print(c.broker_transport_options['master_name']); "
         "print(c.result_backend_transport_options['master_name'])"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **training_home.env})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [sentinels.url, MASTER_NAME, MASTER_NAME]


@pytest.mark.sentinel_password(SENTINEL_PASSWORD)
def test_sentinels_that_take_a_password_carry_a_run_given_supersmm_sentinel_password(training_home, workers, sentinels,
                                                                                      monkeypatch):
    command = [sys.executable, "-m", "supersmm_tasks.cli", "status"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, env=training_home.env)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and "SUPERSMM_SENTINEL_PASSWORD" in lines[0], refused.stderr
    assert PASSWORD not in refused.stderr

    monkeypatch.setenv("SUPERSMM_SENTINEL_PASSWORD", SENTINEL_PASSWORD)
    training_home.env["SUPERSMM_SENTINEL_PASSWORD"] = SENTINEL_PASSWORD
    assert training_home.enqueue("guarded", epochs=2, chunk=1).startswith("queued run guarded")
    worker = workers.start("worker")
    state = training_home.wait_until_finished("guarded", 300, [worker])
    assert state["status"] == "completed" and training_home.csv_epochs("guarded") == [1, 2]

    # What the worker tells anyone who asks (Flower's worker page, `celery inspect stats`) names no password.
    stats = subprocess.run([sys.executable, "-m", "celery", "-A", "supersmm_tasks", "inspect", "stats", "--json"],
                           capture_output=True, text=True, timeout=120, env=training_home.env)
    assert stats.returncode == 0, stats.stderr
    assert '"sentinel_kwargs"' in stats.stdout and SENTINEL_PASSWORD not in stats.stdout + stats.stderr
