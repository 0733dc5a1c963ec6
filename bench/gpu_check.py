"""The GPU check behind bench/gpu_check.sh: what a machine with an NVIDIA GPU does with the `paper` model.

1. speed: `paper` trains for STEPS steps with mixed precision (float16 compute) and Keras' LSTM, which runs on
   cuDNN there; samples/s and the share of the GPU's measured float16 matmul peak;
2. exact resume: a run with --deterministic trained in one chunk, and the same run trained as two chunks in two
   processes, end with the same weights and the same CSV results;
3. portability: that run's checkpoint, written on the GPU, loads in a process that sees no GPU and reads an image
   there as the GPU did: the same logits (within LOGIT_TOLERANCE) and the same tokens.
It prints one JSON line per part and a last line {"ok": ...}; exit status 0 when every part passed.
`--cpu` runs the same parts on a CPU with small sizes (tests use it); without it, no GPU is an error.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "bench"))

# samples engraved, speed steps and how many of the narrowest samples they train on (None: all), the resume
# check's batch size, the matmul measuring the float16 peak
SIZES = {
    "gpu": {"samples": 400, "steps": 300, "speed_samples": None, "batch_size": 16, "matmul": 4096},
    # a CPU emulates float16 slowly: a batch padded to a page-wide staff takes minutes a step there
    "cpu": {"samples": 12, "steps": 2, "speed_samples": 4, "batch_size": 4, "matmul": 256},
}
RESULT_COLUMNS = ("epoch", "loss", "val_loss", "val_ser", "learning_rate")

TRAIN_SCRIPT = """
import sys
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.training import train_chunk
train_chunk(sys.argv[1], ChunkSpan(int(sys.argv[2]), int(sys.argv[3]), 1))
"""

READ_SCRIPT = """
import json, sys
import keras
import numpy as np
import tensorflow as tf
from supersmm_tasks import paths
from supersmm_tasks.evaluate import best_model
from supersmm_tasks.model import PRESETS
from supersmm_tasks.recognizer import Recognizer, serving_function
from supersmm_tasks.run_config import load_run_config
run, image, logits_path = sys.argv[1:4]
config = load_run_config(run)
read_staff = serving_function(best_model(config)[0], PRESETS[config.model])
np.save(logits_path, read_staff(tf.constant(open(image, "rb").read()))["logits"].numpy())
model = keras.models.load_model(paths.best_model_path(run))  # the .keras file a user would share
print(json.dumps({"tokens": Recognizer.load(run).read(image), "gpus": len(tf.config.list_logical_devices("GPU")),
                  "keras_model_outputs": int(model.output_shape[-1])}))
"""
LOGIT_TOLERANCE = 1e-3  # of the largest logit: cuDNN's LSTM and ours sum in other orders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run every part on the CPU, at small sizes")
    arguments = parser.parse_args(argv)
    sizes = SIZES["cpu" if arguments.cpu else "gpu"]
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus and not arguments.cpu:
        print(json.dumps({"ok": False, "error": "no GPU visible to TensorFlow (nvidia-smi, CUDA, pip install -e '.[gpu]')"}))
        return 1
    results = []
    with tempfile.TemporaryDirectory(prefix="supersmm-gpu-check-") as home:
        os.environ["SUPERSMM_HOME"] = home
        os.environ.pop("SUPERSMM_DATA_ROOT", None)
        examples = engrave(sizes["samples"])
        for part in (lambda: speed(examples, sizes["steps"], sizes["speed_samples"], sizes["matmul"]),
                     lambda: exact_resume(home, sizes["batch_size"]),
                     lambda: read_on_cpu(home, examples[0].image_path)):
            result = part()
            print(json.dumps(result), flush=True)
            results.append(result)
    ok = all(result["ok"] for result in results)
    print(json.dumps({"ok": ok, "device": gpus[0].name if gpus else "CPU (--cpu)"}))
    return 0 if ok else 1


def engrave(samples: int):
    from supersmm_tasks.corpus import load_dataset
    from supersmm_tasks.detect import detect
    from supersmm_tasks.synth import generate_corpus

    generate_corpus(Path(os.environ["SUPERSMM_HOME"]) / "data" / "primus", samples, seed=0, progress=False)
    detect()
    return load_dataset("primus").examples("train", "semantic")


def speed(examples, steps: int, narrowest: int | None, matmul_size: int) -> dict:
    """Samples/s of `paper` training with mixed precision, and its FLOP/s over the float16 matmul peak.

    With `narrowest`, it trains on that many of the narrowest samples only."""
    import tensorflow as tf
    from bench_training import _paper_config, training_flops_per_sample
    from supersmm_tasks import pipeline
    from supersmm_tasks.trainer import Trainer

    trainer = Trainer(_paper_config(), mixed_precision=True)
    usable, _ = pipeline.ctc_fitting(examples, trainer.preset)
    usable = sorted(usable, key=lambda example: example.width)[:narrowest]
    batches = pipeline.EpochBatches(usable, encoding="semantic", height=trainer.preset.height,
                                    batch_size=trainer.config.batch_size, seed=0, training=True, augment=True)
    warm_up = next(iter(batches.epoch(0)))
    trainer.train_step(warm_up["image"], warm_up["image_width"], warm_up["label"], warm_up["label_length"])
    done, samples, flops, epoch, started = 0, 0, 0.0, 1, time.perf_counter()
    while done < steps:
        for batch in batches.epoch(epoch):
            loss = trainer.train_step(batch["image"], batch["image_width"], batch["label"], batch["label_length"])
            samples += int(batch["image"].shape[0])
            flops += int(batch["image"].shape[0]) * training_flops_per_sample(
                trainer.preset, trainer.blank + 1, int(batch["image"].shape[2]))
            done += 1
            if done == steps:
                break
        epoch += 1
    float(loss)  # waits for the last step
    seconds = time.perf_counter() - started
    peak = float16_matmul_peak(tf, matmul_size)
    return {"part": "speed", "ok": bool(samples and float(loss) == float(loss)), "steps": done,
            "samples_per_sec": float(f"{samples / seconds:.3g}"), "tflops": round(flops / seconds / 1e12, 3),
            "peak_tflops": round(peak / 1e12, 1), "share_of_peak": round(flops / seconds / peak, 3),
            "mixed_precision": trainer.model.get_layer("conv1").compute_dtype == "float16",
            "cudnn_lstm": bool(tf.config.list_logical_devices("GPU"))}


def float16_matmul_peak(tf, size: int = 4096, repeats: int = 10) -> float:
    """FLOP/s of a large float16 matmul on the default device: what the chip can give this kind of work."""
    a = tf.random.uniform([size, size], dtype=tf.float32, seed=2)
    a, b = tf.cast(a, tf.float16), tf.cast(tf.transpose(a), tf.float16)
    tf.matmul(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        product = tf.matmul(a, b)
    product.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def exact_resume(home: str, batch_size: int) -> dict:
    """The same --deterministic run in one chunk and in two chunks of two processes: equal weights and rows."""
    import numpy as np
    from supersmm_tasks import run_state
    from supersmm_tasks.checkpoint import load_checkpoint
    from supersmm_tasks.run_config import create_or_update_run
    from supersmm_tasks.training_log import read_rows

    for name in ("whole", "resumed"):
        create_or_update_run(name, "primus", model="paper", batch_size=batch_size, max_total_epochs=2,
                             deterministic=True)
    for name, first, last in (("whole", 1, 2), ("resumed", 1, 1), ("resumed", 2, 2)):
        subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, name, str(first), str(last)], cwd=home, check=True)
    arrays = [load_checkpoint(run_state.read_state(name)["checkpoint"]) for name in ("whole", "resumed")]
    difference = max(float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
                     for a, b in zip(arrays[0].model_arrays + arrays[0].optimizer_arrays,
                                     arrays[1].model_arrays + arrays[1].optimizer_arrays, strict=True))
    rows = [[tuple(row[c] for c in RESULT_COLUMNS) for row in read_rows(name)] for name in ("whole", "resumed")]
    return {"part": "exact_resume", "ok": difference == 0.0 and rows[0] == rows[1], "max_weight_difference": difference,
            "same_csv_results": rows[0] == rows[1]}


def read_on_cpu(home: str, image: str) -> dict:
    """The GPU-written checkpoint read here and in a process that sees no GPU: the same logits and tokens."""
    import numpy as np

    readings, logits = [], []
    for where, devices in (("here", os.environ.get("CUDA_VISIBLE_DEVICES")), ("cpu", "")):
        env = dict(os.environ)
        if devices is None:
            env.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            env["CUDA_VISIBLE_DEVICES"] = devices
        logits_path = Path(home) / f"logits-{where}.npy"
        done = subprocess.run([sys.executable, "-c", READ_SCRIPT, "whole", image, str(logits_path)], cwd=home,
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return {"part": "read_on_cpu", "ok": False, "error": done.stderr[-2000:]}
        readings.append(json.loads(done.stdout.strip().splitlines()[-1]))
        logits.append(np.load(logits_path))
    (here, on_cpu), (logits_here, logits_on_cpu) = readings, logits
    same_shape = logits_here.shape == logits_on_cpu.shape
    difference = float(np.max(np.abs(logits_here - logits_on_cpu))) if same_shape else float("inf")
    scale = max(1.0, float(np.max(np.abs(logits_here))))
    return {"part": "read_on_cpu",
            "ok": on_cpu["gpus"] == 0 and difference <= LOGIT_TOLERANCE * scale and on_cpu["tokens"] == here["tokens"],
            "gpus_seen_by_reader": on_cpu["gpus"], "frames": int(logits_here.shape[1]),
            "max_logit_difference": difference, "largest_logit": scale, "same_tokens": on_cpu["tokens"] == here["tokens"],
            "tokens_read": len(on_cpu["tokens"]), "keras_model_outputs": on_cpu["keras_model_outputs"]}


if __name__ == "__main__":
    sys.exit(main())
