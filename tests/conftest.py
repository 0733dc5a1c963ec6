"""Shared fixtures: a real Redis server process and real `celery worker` subprocesses (started by
supersmm_tasks.testing, the harness that bench/ uses too).

    redis_server   a redis-server on a free loopback port with an append-only file; restart() / stop() / crash() / wipe()
    supersmm_env   SUPERSMM_HOME in a temporary folder, SUPERSMM_BROKER_URL on redis_server, short lease
                   and reconciler intervals; returns the environment for subprocesses
    workers        workers.start(name) starts `celery -A supersmm_tasks worker`; Worker.kill() is SIGKILL
    engraved_primus / tiny_corpus   data roots of real engraved incipits, made once per session
    detected_home  a context in which SUPERSMM_HOME is a fresh folder with a data root detected
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from supersmm_tasks.testing import RedisServer, Workers, wait_for

# The real PrIMuS incipits of the development set, read in place (the corpus is its authors': never copied
# into the project). `.ci/run` sets the variable to ../shared/primus-real-dev; where it is unset, the tests
# that need real incipits skip and say so.
REAL_DEV_VARIABLE = "SUPERSMM_REAL_DEV"
REAL_DEV = Path(os.environ[REAL_DEV_VARIABLE]).resolve() if os.environ.get(REAL_DEV_VARIABLE) else None
DEV_SAMPLE_ID = "000051652-1_1_1"  # E flat major, beamed eighths, a printed natural: the development set's example


def _real_sample_id(real_dev: Path | None) -> str:
    """The incipit that the tests of one real sample read: DEV_SAMPLE_ID, or in another set of real incipits (the
    variable may name one) the first of them, so that those tests check the set they are given."""
    if real_dev is None or not real_dev.is_dir() or (real_dev / DEV_SAMPLE_ID).is_dir():
        return DEV_SAMPLE_ID
    return min(folder.name for folder in real_dev.iterdir() if (folder / f"{folder.name}.png").is_file())


REAL_SAMPLE_ID = _real_sample_id(REAL_DEV)
REAL_SAMPLE = REAL_DEV / REAL_SAMPLE_ID if REAL_DEV else None


def require_real_dev() -> Path:
    """The real development set's folder, or a skip that says how to get it."""
    if REAL_DEV is None:
        pytest.skip(f"{REAL_DEV_VARIABLE} is unset: point it at shared/primus-real-dev (as .ci/run does)")
    if not REAL_DEV.is_dir():
        pytest.fail(f"{REAL_DEV_VARIABLE}={REAL_DEV} is not a folder")
    return REAL_DEV


def needs(count: int, least: int, what: str) -> None:
    """Skip a comparison or a share that the given set of real incipits is too small for (the development set,
    129 incipits and 30 photos, is large enough for every one)."""
    if count < least:
        pytest.skip(f"{count} {what} in this set of real incipits: this check needs at least {least}")


ENOUGH_INCIPITS = 50  # for a share of the set (label matches, rules restored): one incipit is 2% of it


@pytest.fixture
def real_dev() -> Path:
    """The folder of the real PrIMuS development set (one `<id>/` folder per incipit)."""
    return require_real_dev()


@pytest.fixture
def real_sample() -> Path:
    """The folder of one real PrIMuS incipit of the development set."""
    return require_real_dev() / REAL_SAMPLE_ID


# A test that uses one of these fixtures, directly or through another, is an integration test: it trains
# through the queue or starts `celery worker` processes, drives a browser (test_dashboard's `browser`) or
# reads with a run trained for a minute.
INTEGRATION_FIXTURES = {"workers", "training_home", "browser", "learned_run", "learned_agnostic_run",
                        "learned_via_agnostic_run"}


def pytest_collection_modifyitems(items):
    """Mark the tests that use an integration fixture, so that a new one joins the slow tier by itself."""
    for item in items:
        if INTEGRATION_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.integration)


TEST_LEASE_TTL_S = "3"
TEST_RECONCILE_INTERVAL_S = "1"


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis", "--appendfsync", "always")  # every write survives a crash()
    server.folder.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def supersmm_env(tmp_path, redis_server, monkeypatch) -> dict:
    """This test's SUPERSMM_HOME and broker, in os.environ and in the returned dict (for subprocesses)."""
    home = tmp_path / "home"
    home.mkdir()
    settings = {
        "SUPERSMM_HOME": str(home),
        "SUPERSMM_BROKER_URL": redis_server.url,
        "SUPERSMM_LEASE_TTL": TEST_LEASE_TTL_S,
        "SUPERSMM_RECONCILE_INTERVAL": TEST_RECONCILE_INTERVAL_S,
        "SUPERSMM_FAULT": "slow_batches",  # epochs long enough to be caught mid-way, however fast the machine
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SUPERSMM_RESULT_BACKEND", raising=False)
    monkeypatch.delenv("SUPERSMM_DATA_ROOT", raising=False)
    return {**os.environ, **settings}


@pytest.fixture
def workers(tmp_path, supersmm_env) -> Workers:
    """workers.start(name, queues=None, wait=True, **extra_env) -> a ready Worker; all are killed after the test."""
    started = Workers(tmp_path, supersmm_env)
    yield started
    started.kill_all()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A data root holding `primus/`: 20 real Verovio-engraved synthetic incipits (16 train, 2 val, 2 test)."""
    from supersmm_tasks.synth import generate_corpus

    data_root = tmp_path_factory.mktemp("data")
    generate_corpus(data_root / "primus", 20, seed=0, progress=False)
    return data_root


def a_dead_pid() -> int:
    """The pid of a process that has ended (for leftovers of a process killed while writing)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def add_sample(corpus: Path, sample_id: str = REAL_SAMPLE_ID, distorted: bool = False) -> Path:
    """A copy of the real sample's corpus files under `corpus` (a test's scratch folder), renamed to
    `sample_id`; `distorted` adds a JPEG photo of its image."""
    from PIL import Image

    sample = require_real_dev() / REAL_SAMPLE_ID
    folder = corpus / sample_id
    folder.mkdir(parents=True)
    for extension in (".png", ".semantic", ".agnostic", ".mei"):
        shutil.copyfile(sample / f"{REAL_SAMPLE_ID}{extension}", folder / f"{sample_id}{extension}")
    if distorted:
        Image.open(sample / f"{REAL_SAMPLE_ID}.png").convert("RGB").save(
            folder / f"{sample_id}_distorted.jpg", quality=80)
    return folder


@pytest.fixture(scope="session")
def engraved_primus(tmp_path_factory) -> Path:
    """A data root holding `primus/`: 24 clean engraved incipits, made once per session (tests only read it)."""
    from supersmm_tasks.synth import generate_corpus

    data_root = tmp_path_factory.mktemp("engraved")
    generate_corpus(data_root / "primus", 24, seed=0, workers=2, progress=False)
    return data_root


@pytest.fixture(scope="module")
def engraved_home(tmp_path_factory, engraved_primus) -> Path:
    """A SUPERSMM_HOME with the 24 engraved incipits detected as `primus`, one per test module; each test
    uses its own run names."""
    with detected_home(tmp_path_factory.mktemp("home"), engraved_primus) as home:
        yield home


def final_arrays(run: str) -> list:
    """The weights and the optimizer's state in the checkpoint that the run's state names."""
    from supersmm_tasks import run_state
    from supersmm_tasks.checkpoint import load_checkpoint

    stored = load_checkpoint(run_state.read_state(run)["checkpoint"])
    return stored.model_arrays + stored.optimizer_arrays


EPOCH_IN_ANOTHER_PROCESS = """
import hashlib, json, sys
from supersmm_tasks.corpus import Example
from supersmm_tasks.pipeline import epoch_batches
examples = [Example(**e) for e in json.load(open(sys.argv[1]))]
print(json.dumps([{summary} for b in epoch_batches(examples, **json.loads(sys.argv[2]))]))
"""


def epoch_in_another_process(examples, folder: Path, summary: str, **options) -> subprocess.CompletedProcess:
    """A fresh Python process that builds epoch_batches(examples, **options) and prints, as its last line,
    the JSON list of `summary` (an expression of one batch `b`, which may use hashlib) over the batches."""
    examples_file = folder / "examples.json"
    examples_file.write_text(json.dumps([e.__dict__ for e in examples]))
    program = EPOCH_IN_ANOTHER_PROCESS.format(summary=summary)
    return subprocess.run([sys.executable, "-c", program, str(examples_file), json.dumps(options)],
                          capture_output=True, text=True, timeout=180)


@contextmanager
def detected_home(home: Path, data_root: Path):
    """SUPERSMM_HOME=home with `data_root` detected, for as long as the context lasts."""
    from supersmm_tasks.detect import detect

    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SUPERSMM_HOME", str(home))
        environment.setenv("SUPERSMM_DATA_ROOT", str(data_root))
        detect()
        yield home


class TrainingHome:
    """A SUPERSMM_HOME with the tiny corpus detected: create runs, read what they wrote, wait for it."""

    def __init__(self, env: dict):
        self.env = env

    def enqueue(self, name: str, epochs: int, chunk: int, **options) -> str:
        """Create run NAME (tiny model) and queue its first chunk, as `supersmm enqueue` does."""
        from supersmm_tasks import runs

        return runs.enqueue(name, dataset="primus", model="tiny", batch_size=4,
                            max_total_epochs=epochs, max_epochs_per_run=chunk, **options)

    def create(self, name: str, epochs: int, chunk: int) -> None:
        """Create run NAME with the same settings as enqueue() but queue nothing."""
        from supersmm_tasks.run_config import create_or_update_run

        create_or_update_run(name, "primus", model="tiny", batch_size=4,
                             max_total_epochs=epochs, max_epochs_per_run=chunk)

    def state(self, name: str) -> dict:
        from supersmm_tasks import run_state

        return run_state.read_state(name)

    def csv_rows(self, name: str) -> list[dict]:
        from supersmm_tasks import training_log

        return training_log.read_rows(name)

    def csv_epochs(self, name: str) -> list[int]:
        return [int(row["epoch"]) for row in self.csv_rows(name)]

    def progress(self, name: str) -> dict:
        """The trainer's latest progress report of the run ({} before the first)."""
        import json

        from supersmm_tasks import broker, run_keys

        return json.loads(broker.client().get(run_keys.progress_key(name)) or "{}")

    def wait_for(self, condition, timeout_s: float, what: str, workers=(), run: str | None = None):
        """Poll condition() until it returns something truthy; fail with the workers' logs on timeout,
        or at once when `run` has failed."""
        def holds():
            result = condition()
            if not result and run is not None and self.state(run)["status"] == "failed":
                pytest.fail(f"run {run} failed while waiting for {what}: {self.state(run)['error']}")
            return result

        try:
            return wait_for(holds, timeout_s, what, poll_s=0.2)
        except TimeoutError as timeout:
            logs = "\n".join(f"--- {w.name}:\n{w.log()[-4000:]}" for w in workers)
            pytest.fail(f"{timeout}\n{logs}")

    def wait_until_finished(self, name: str, timeout_s: float, workers=()) -> dict:
        self.wait_for(lambda: self.state(name)["status"] not in ("queued", "running"), timeout_s,
                      f"run {name} to finish", workers)
        return self.state(name)


@pytest.fixture
def training_home(supersmm_env, tiny_corpus, monkeypatch) -> TrainingHome:
    from supersmm_tasks.detect import detect

    monkeypatch.setenv("SUPERSMM_DATA_ROOT", str(tiny_corpus))
    supersmm_env["SUPERSMM_DATA_ROOT"] = str(tiny_corpus)
    detect()
    return TrainingHome(supersmm_env)


LEARNED_COPIES, LEARNED_EPOCHS = 32, 20


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory) -> Path:
    """A SUPERSMM_HOME whose semantic run `run` (tiny model, its network trained on the semantic labels) has learned
    to read the real sample: trained for 20 epochs on 32 copies of it (about a minute), so that it reads that staff
    as a staff, clef first. Tests set SUPERSMM_HOME to the returned folder themselves."""
    return learn_the_real_sample(tmp_path_factory, "semantic", semantic_via_agnostic=False)


@pytest.fixture(scope="session")
def learned_agnostic_run(tmp_path_factory) -> Path:
    """The same as learned_run with agnostic labels."""
    return learn_the_real_sample(tmp_path_factory, "agnostic")


@pytest.fixture(scope="session")
def learned_via_agnostic_run(tmp_path_factory) -> Path:
    """The same as learned_run as `tiny` makes semantic runs by default: its network reads agnostic symbols."""
    return learn_the_real_sample(tmp_path_factory, "semantic")


def learn_the_real_sample(tmp_path_factory, encoding: str, **settings) -> Path:
    from supersmm_tasks.chunk import ChunkSpan
    from supersmm_tasks.run_config import create_or_update_run
    from supersmm_tasks.training import train_chunk

    require_real_dev()
    data_root = tmp_path_factory.mktemp("learned_data")
    for copy in range(LEARNED_COPIES):
        add_sample(data_root / "primus", f"{copy:09d}-1_1_1")
    with detected_home(tmp_path_factory.mktemp("learned_home"), data_root) as home:
        # Memorising one staff: the plain recipe, as augmentation and a decaying rate would only slow it down.
        create_or_update_run("run", "primus", model="tiny", batch_size=4, max_total_epochs=LEARNED_EPOCHS,
                             augment=False, schedule="constant", encoding=encoding, **settings)
        train_chunk("run", ChunkSpan(1, LEARNED_EPOCHS, 1))
    return home
