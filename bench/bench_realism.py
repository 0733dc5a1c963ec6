"""How close the synthetic corpus is to real PrIMuS, measured on the real development set (SUPERSMM_REAL_DEV).

    synth_tv_max          the largest total variation distance between 900 synthetic incipits and the real
                          labels, over token family, note duration, dots, clef, key signature and meter
    synth_distinct_ratio  distinct tokens per 100 incipits, synthetic / real
    image_height_ratio    median, over the real incipits, of our engraving's height / the real PNG's; with it the
                          median width ratio where the real staff is not justified to the page, and the share of
                          incipits justified (or not) in both
    real_ser_agnostic     SER on the real PNGs of a `tiny` model trained only on a synthetic corpus
    real_ser_semantic     the same with semantic labels
    real_ser_camera       SER on the 30 real Camera-PrIMuS `_distorted.jpg` of a model trained on `--camera`
    real_ser_semantic_via_agnostic  the agnostic model's reading of the real PNGs turned into semantic tokens
                          (agnostic_to_semantic), scored against the real semantic labels
Each SER figure also gives the same model's val SER on its synthetic corpus, and how long it took. The
models train and predict through the project's own code (generate_corpus, detect, train_chunk, predict).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from supersmm_tasks.synth.music import random_incipit
from supersmm_tasks.synth.realism import engraved_sizes, is_justified
from supersmm_tasks.synth.statistics import distances, distinct_per_100, read_semantic_labels

TV_GOAL, DISTINCT_RANGE, HEIGHT_RANGE = 0.15, (0.8, 1.25), (0.95, 1.05)
SYNTHETIC_INCIPITS = 900  # for the label statistics: distinct tokens per 100 of 300 moved by +-0.07 with the seed
SER_GOALS = {"agnostic": 5.0, "semantic": 8.0, "camera": 10.0}  # issue 11

# Runs in a fresh process with SUPERSMM_HOME set: engraves a corpus, trains run `real` on it in one chunk,
# and prints one JSON line: its synthetic val SER, and its SER on the real images given.
TRAIN_AND_READ_REAL = """
import json, sys, time
from pathlib import Path
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.detect import detect
from supersmm_tasks.evaluate import error_rates, evaluate_run, predict
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.synth import generate_corpus
from supersmm_tasks.training import train_chunk

samples, epochs, encoding, camera, real_dev = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", Path(sys.argv[5])
started = time.monotonic()
dataset = "camera_primus" if camera else "primus"
generate_corpus(Path("data") / dataset, samples, seed=11, camera=camera, progress=False)
detect()
create_or_update_run("real", dataset, model="tiny", encoding=encoding, max_total_epochs=epochs)
train_chunk("real", ChunkSpan(1, epochs, 1))
val_ser = evaluate_run("real", "val")["ser"]
suffix = "_distorted.jpg" if camera else ".png"
folders = sorted(f for f in real_dev.iterdir() if (f / f"{f.name}{suffix}").exists() and (f / f"{f.name}.{encoding}").exists())
truths = [(f / f"{f.name}.{encoding}").read_text().split() for f in folders]
predictions = predict("real", [str(f / f"{f.name}{suffix}") for f in folders])
real_ser, real_sequence_error = error_rates(predictions, truths)
result = {"val_ser": val_ser, "real_ser": real_ser, "real_sequence_error": real_sequence_error,
          "real_images": len(folders), "seconds": time.monotonic() - started}
if encoding == "agnostic":  # the same reading turned into music the way a semantic run does, against the real semantic labels
    from supersmm_tasks.agnostic_to_semantic import agnostic_to_semantic

    semantic_truths = [(f / f"{f.name}.semantic").read_text().split() for f in folders]
    music = [agnostic_to_semantic(p, strict=False) for p in predictions]
    result["real_ser_as_semantic"] = error_rates(music, semantic_truths)[0]
print(json.dumps(result))
"""


def run(quick: bool) -> list[dict]:
    real_dev = os.environ.get("SUPERSMM_REAL_DEV")
    if not real_dev:
        return [{"name": "realism", "value": None, "unit": "", "goal": "runs", "ok": False,
                 "error": "SUPERSMM_REAL_DEV is unset: point it at shared/primus-real-dev"}]
    real_dev = Path(real_dev)
    figures = corpus_figures(real_dev) + [image_height_ratio(real_dev)]
    samples, epochs = (300, 10) if quick else (8000, 16)  # 4,000: photos read 9.9%, 8,000: 8.3% (2026-12-05)
    for name in ("agnostic", "semantic", "camera"):
        figures += real_ser(name, real_dev, samples, epochs)
    return figures


def corpus_figures(real_dev: Path) -> list[dict]:
    started = time.perf_counter()
    rng = random.Random(0)
    ours = [random_incipit(rng) for _ in range(SYNTHETIC_INCIPITS)]
    real = read_semantic_labels(real_dev)
    tv = distances(ours, real)
    worst = max(tv, key=tv.get)
    ratio = distinct_per_100(ours) / distinct_per_100(real)
    seconds = round(time.perf_counter() - started, 1)
    return [
        {"name": "synth_tv_max", "value": round(tv[worst], 3),
         "unit": f"TV distance, largest ({worst}); {SYNTHETIC_INCIPITS} synthetic vs {len(real)} real incipits",
         "goal": f"<= {TV_GOAL}", "ok": tv[worst] <= TV_GOAL,
         "distances": {family: round(value, 3) for family, value in tv.items()}, "seconds": seconds},
        {"name": "synth_distinct_ratio", "value": round(ratio, 3), "unit": "distinct tokens per 100 incipits, "
         "synthetic / real", "goal": f"{DISTINCT_RANGE[0]}-{DISTINCT_RANGE[1]}",
         "ok": DISTINCT_RANGE[0] <= ratio <= DISTINCT_RANGE[1], "seconds": seconds},
    ]


def image_height_ratio(real_dev: Path) -> dict:
    import statistics

    started = time.perf_counter()
    sizes = engraved_sizes(real_dev)
    median = statistics.median(ours[0] / real[0] for ours, real in sizes.values())
    unjustified = [ours[1] / real[1] for ours, real in sizes.values() if not is_justified(real[1])]
    justified_alike = [is_justified(ours[1]) == is_justified(real[1]) for ours, real in sizes.values()]
    return {"name": "image_height_ratio", "value": round(median, 3),
            "unit": f"median height ours / real PNG, {len(sizes)} real incipits engraved from their PAE",
            "goal": f"{HEIGHT_RANGE[0]}-{HEIGHT_RANGE[1]}", "ok": HEIGHT_RANGE[0] <= median <= HEIGHT_RANGE[1],
            "width_ratio_unjustified": round(statistics.median(unjustified), 3),
            "justified_alike": round(sum(justified_alike) / len(justified_alike), 3),
            "seconds": round(time.perf_counter() - started, 1)}


def real_ser(name: str, real_dev: Path, samples: int, epochs: int) -> list[dict]:
    """real_ser_NAME; for the agnostic model also real_ser_semantic_via_agnostic: its reading turned into music
    (agnostic_to_semantic), scored against the real semantic labels with the semantic goal."""
    camera = name == "camera"
    encoding = "agnostic" if camera else name
    suffix = "_distorted.jpg" if camera else ".png"
    if not any((folder / f"{folder.name}{suffix}").is_file() for folder in real_dev.iterdir()):
        return [{"name": f"real_ser_{name}", "value": None, "unit": "% SER", "goal": f"<= {SER_GOALS[name]}",
                 "ok": False, "reason": f"no real {'photos' if camera else 'PNGs'} (*{suffix}) in {real_dev}"}]
    result = _train_and_read_real(samples, epochs, encoding, camera, real_dev)
    goal = SER_GOALS[name]
    corpus = f"{samples} {'--camera ' if camera else ''}synthetic incipits, {epochs} epochs, {encoding}"
    images = f"{result['real_images']} real {'photos' if camera else 'PNGs'}"
    figures = [{"name": f"real_ser_{name}", "value": round(result["real_ser"], 1),
                "unit": f"% SER on {images} ({corpus}; synthetic val SER {result['val_ser']:.1f}%; "
                        f"{result['seconds'] / 60:.1f} min)",
                "goal": f"<= {goal}", "ok": result["real_ser"] <= goal, "val_ser": round(result["val_ser"], 1),
                "real_sequence_error": round(result["real_sequence_error"], 1),
                "minutes": round(result["seconds"] / 60, 1)}]
    if name == "agnostic":
        music_ser, goal = result["real_ser_as_semantic"], SER_GOALS["semantic"]
        figures.append({"name": "real_ser_semantic_via_agnostic", "value": round(music_ser, 1),
                        "unit": f"% semantic SER on {images} of the real_ser_agnostic model's reading turned into "
                                "music (agnostic_to_semantic, leaving out what it cannot read)", "goal": f"<= {goal}", "ok": music_ser <= goal})
    return figures


def _train_and_read_real(samples: int, epochs: int, encoding: str, camera: bool, real_dev: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="supersmm-bench-realism-") as home:
        env = {key: value for key, value in os.environ.items() if key != "SUPERSMM_DATA_ROOT"}
        env["SUPERSMM_HOME"] = home
        done = subprocess.run(
            [sys.executable, "-c", TRAIN_AND_READ_REAL, str(samples), str(epochs), encoding, str(int(camera)),
             str(real_dev)], cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
