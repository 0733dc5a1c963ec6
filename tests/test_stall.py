"""The stall watch: a chunk silent for SUPERSMM_STALL_LIMIT ends its process; one that shows signs of life does not.

Each case runs in a child process of its own, as the watch ends the whole process.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from supersmm_tasks import stall
from supersmm_tasks.errors import SupersmmError

REPO = Path(__file__).resolve().parents[1]

CHUNKS = """
import logging, sys, threading, time
from supersmm_tasks import stall

def train_half_a_second():
    time.sleep(0.5)

def chunk(run, half_seconds, alive):
    with stall.watching(run):
        for _ in range(half_seconds):
            train_half_a_second()
            if alive:
                stall.alive()

logging.basicConfig(level=logging.INFO)
mode, half_seconds = sys.argv[1], int(sys.argv[2])
if mode == "holding_the_log":  # stuck inside a log handler: the watch cannot log, and exits all the same
    logging.getLogger().handlers[0].acquire()
chunks = [("quiet", mode != "alive")] + ([("busy", False)] if mode == "beside_a_busy_one" else [])
threads = [threading.Thread(target=chunk, args=(run, half_seconds, not silent)) for run, silent in chunks]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("chunks ended")
"""


def run_chunks(tmp_path, mode: str, half_seconds: int) -> subprocess.CompletedProcess:
    script = tmp_path / "chunks.py"
    script.write_text(CHUNKS)
    return subprocess.run([sys.executable, str(script), mode, str(half_seconds)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, stall.STALL_LIMIT_VARIABLE: "1.5", "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("mode", ["silent", "beside_a_busy_one"])
def test_a_silent_chunk_ends_its_process_and_says_where_it_was_stuck(tmp_path, mode):
    ended = run_chunks(tmp_path, mode, half_seconds=40)

    assert ended.returncode == stall.EXIT_STALLED
    assert "chunks ended" not in ended.stdout
    assert "run quiet: the chunk made no progress for" in ended.stderr
    assert "in train_half_a_second" in ended.stderr  # the stuck thread's stack
    assert "run busy" not in ended.stderr


def test_a_chunk_that_shows_signs_of_life_runs_past_the_limit(tmp_path):
    ended = run_chunks(tmp_path, "alive", half_seconds=16)

    assert ended.returncode == 0, ended.stderr
    assert "chunks ended" in ended.stdout


def test_a_worker_whose_log_cannot_be_written_still_exits(tmp_path):
    ended = run_chunks(tmp_path, "holding_the_log", half_seconds=80)

    assert ended.returncode == stall.EXIT_STALLED
    assert "chunks ended" not in ended.stdout


def test_a_bad_limit_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv(stall.STALL_LIMIT_VARIABLE, "soon")

    with pytest.raises(SupersmmError, match="SUPERSMM_STALL_LIMIT='soon': give a number of seconds above 0"):
        stall.limit_seconds()
