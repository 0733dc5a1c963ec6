"""The stall watch: a chunk silent for SUPERSMM_STALL_LIMIT ends its process; one that shows signs of life does not.

Each chunk runs in a child process of its own, as the watch ends the whole process.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from supersmm_tasks import stall
from supersmm_tasks.errors import SupersmmError

CHUNK = """
import logging, sys, time
from supersmm_tasks import stall

def train_half_a_second():
    time.sleep(0.5)

logging.basicConfig(level=logging.INFO)
with stall.watching("quiet"):
    for _ in range(int(sys.argv[1])):
        train_half_a_second()
        if sys.argv[2] == "alive":
            stall.alive()
print("chunk ended")
"""


def run_chunk(tmp_path, half_seconds: int, signs: str) -> subprocess.CompletedProcess:
    script = tmp_path / "chunk.py"
    script.write_text(CHUNK)
    return subprocess.run([sys.executable, str(script), str(half_seconds), signs], capture_output=True, text=True,
                          timeout=60, env={**os.environ, stall.STALL_LIMIT_VARIABLE: "1.5"})


def test_a_silent_chunk_ends_its_process_and_says_where_it_was_stuck(tmp_path):
    ended = run_chunk(tmp_path, half_seconds=40, signs="silent")

    assert ended.returncode == stall.EXIT_STALLED
    assert "chunk ended" not in ended.stdout
    assert "run quiet: the chunk made no progress for" in ended.stderr
    assert "in train_half_a_second" in ended.stderr  # the stuck thread's stack


def test_a_chunk_that_shows_signs_of_life_runs_past_the_limit(tmp_path):
    ended = run_chunk(tmp_path, half_seconds=16, signs="alive")

    assert ended.returncode == 0, ended.stderr
    assert "chunk ended" in ended.stdout


def test_a_bad_limit_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv(stall.STALL_LIMIT_VARIABLE, "soon")

    with pytest.raises(SupersmmError, match="SUPERSMM_STALL_LIMIT='soon': give a number of seconds above 0"):
        stall.limit_seconds()
