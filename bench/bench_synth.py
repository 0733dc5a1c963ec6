"""Synthetic corpus benchmarks.

- `synth_rate`: engraved incipits written per second by `generate_corpus` on all cores (PNG, MEI, labels).
- `synth_camera_rate`: the same with camera damage (`_distorted.jpg` as well).
- `roundtrip_fraction`: of 500 random incipits, the fraction whose tokens come back unchanged through
  Plaine & Easie -> Verovio -> MEI -> semantic (the check that every written label is right).
Rates include starting the worker processes, as a user waits for them too. They are wall-clock rates, so
other work on the machine lowers them; `cpu_ms_per_incipit` (this process and its workers) shows the cost
that does not depend on that.
"""
from __future__ import annotations

import resource
import tempfile
from pathlib import Path

from supersmm_tasks.synth import generate_corpus
from supersmm_tasks.synth.roundtrip import round_trip_fraction

RATE_GOAL = 20
CAMERA_RATE_GOAL = 10
ROUNDTRIP_GOAL = 0.99
ROUNDTRIP_INCIPITS = 500


def run(quick: bool) -> list[dict]:
    clean_samples, camera_samples = (200, 100) if quick else (1000, 500)
    with tempfile.TemporaryDirectory(prefix="supersmm-bench-synth-") as scratch:
        clean, clean_cpu = _timed(Path(scratch) / "clean", clean_samples, seed=1, camera=False)
        camera, camera_cpu = _timed(Path(scratch) / "camera", camera_samples, seed=2, camera=True)
    fraction = round_trip_fraction(ROUNDTRIP_INCIPITS, seed=3)
    return [
        {"name": "synth_rate", "value": round(clean.rate, 1), "unit": "incipits/s", "goal": f">= {RATE_GOAL}",
         "ok": clean.rate >= RATE_GOAL, "samples": clean.count, "workers": clean.workers,
         "with_agnostic": clean.with_agnostic, "cpu_ms_per_incipit": clean_cpu},
        {"name": "synth_camera_rate", "value": round(camera.rate, 1), "unit": "incipits/s",
         "goal": f">= {CAMERA_RATE_GOAL}", "ok": camera.rate >= CAMERA_RATE_GOAL, "samples": camera.count,
         "workers": camera.workers, "cpu_ms_per_incipit": camera_cpu},
        {"name": "roundtrip_fraction", "value": round(fraction, 4), "unit": "fraction",
         "goal": f">= {ROUNDTRIP_GOAL}", "ok": fraction >= ROUNDTRIP_GOAL, "incipits": ROUNDTRIP_INCIPITS},
    ]


def _timed(out: Path, samples: int, seed: int, camera: bool):
    """The report of one corpus, and the CPU milliseconds per incipit of this process and its workers."""
    before = _cpu_seconds()
    report = generate_corpus(out, samples, seed=seed, camera=camera, progress=False)
    return report, round((_cpu_seconds() - before) * 1000 / samples, 1)


def _cpu_seconds() -> float:
    # Workers count under RUSAGE_CHILDREN once the pool has joined them, which generate_corpus does.
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
