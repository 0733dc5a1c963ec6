"""bench/gpu_check.sh, run with --cpu: every part of the GPU check works end to end on this machine's CPU."""
import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # subprocesses that import TensorFlow; the first trains `paper`

REPOSITORY = Path(__file__).resolve().parents[1]


def test_the_gpu_check_passes_on_the_cpu():  # about 4 minutes on two cores
    done = subprocess.run(["bash", str(REPOSITORY / "bench" / "gpu_check.sh"), "--cpu"], capture_output=True,
                          text=True, timeout=1800)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    parts = {line.get("part"): line for line in lines}

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert lines[-1] == {"ok": True, "device": "CPU (--cpu)"}
    assert parts["speed"]["mixed_precision"] and parts["speed"]["samples_per_sec"] > 0
    assert parts["speed"]["share_of_peak"] > 0  # of float16 matmul, which a CPU runs slowly
    assert parts["exact_resume"]["max_weight_difference"] == 0.0 and parts["exact_resume"]["same_csv_results"]
    reading = parts["read_on_cpu"]
    assert reading["gpus_seen_by_reader"] == 0 and reading["same_tokens"] and reading["keras_model_outputs"] > 1
    assert reading["frames"] > 0 and reading["max_logit_difference"] == 0.0  # CPU and CPU: the very same numbers


def test_without_a_gpu_the_check_says_so_in_one_line():
    done = subprocess.run(["bash", str(REPOSITORY / "bench" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert json.loads(done.stdout.strip().splitlines()[-1])["ok"] is False
