"""Run every benchmark and print one JSON object per figure (name, value, unit, goal, ok).

    python bench/run.py [--quick] [--only synth,data]

Each `bench/bench_*.py` module has `run(quick: bool) -> list[dict]`. Ratios are measured side by side in
one run, so they mean something on a shared machine. Results also go to `bench/results.json`: a full run
replaces it; `--only` replaces the figures of the groups it ran and keeps the others, each figure saying
when and how (`measured_at`, `quick`) it was measured.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def device_description() -> str:
    import psutil

    description = f"{os.cpu_count()} CPU cores ({cpu_model()}), {psutil.virtual_memory().total / 2**30:.0f} GiB"
    try:
        import tensorflow as tf

        gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                for g in tf.config.list_physical_devices("GPU")]
        if gpus:
            description += ", GPU: " + ", ".join(gpus)
    except Exception:  # TensorFlow missing or no GPU details: the CPU description stands
        pass
    return description


def cpu_model() -> str:
    """The processor's name where Linux tells it (timings differ by far between 2-core machines), else its kind."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.partition(':')[2].strip()}, {platform.machine()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes; finishes within 20 minutes on 2 cores")
    parser.add_argument("--only", help="comma-separated module names without the bench_ prefix, e.g. synth,data")
    args = parser.parse_args()

    sys.path.insert(0, str(BENCH_DIR.parent))
    wanted = set(args.only.split(",")) if args.only else None
    modules = sorted(BENCH_DIR.glob("bench_*.py"))
    if wanted:
        modules = [m for m in modules if m.stem.removeprefix("bench_") in wanted]

    started = time.time()
    device = device_description()
    print(json.dumps({"name": "device", "value": device, "unit": "", "goal": "", "ok": True}), flush=True)
    results = []
    for path in modules:
        try:
            figures = load_module(path).run(args.quick)
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            figures = [{"name": path.stem, "value": None, "unit": "", "goal": "runs", "ok": False,
                        "error": f"{type(error).__name__}: {error}"}]
        for figure in figures:
            figure = {**figure, "group": path.stem.removeprefix("bench_"), "quick": args.quick,
                      "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device}
            print(json.dumps(figure), flush=True)
            results.append(figure)

    summary = {"device": device, "quick": args.quick, "seconds": round(time.time() - started, 1),
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
    if wanted:
        summary = _merged_into_last(summary, {path.stem.removeprefix("bench_") for path in modules})
    (BENCH_DIR / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(r.get("ok") for r in results) else 1


def _merged_into_last(summary: dict, groups: set[str]) -> dict:
    """The last results with the figures of `groups` replaced by this run's."""
    try:
        last = json.loads((BENCH_DIR / "results.json").read_text())
    except (OSError, ValueError):
        return summary
    names = {figure["name"] for figure in summary["results"]}
    kept = [figure for figure in last.get("results", [])
            if figure.get("group") not in groups and figure["name"] not in names]
    return {**summary, "results": kept + summary["results"], "partial_run": sorted(groups)}


if __name__ == "__main__":
    sys.exit(main())
