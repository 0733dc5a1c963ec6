"""Label benchmarks against real PrIMuS: the development set's real incipits, from their Plaine & Easie.

- `label_match_semantic` / `label_match_agnostic`: of the incipits in $SUPERSMM_REAL_DEV, the fraction
  whose `regular_pae.pae`, engraved by this project's pipeline (`pae_source` -> Verovio -> MEI) and
  labelled by its converters, gives exactly the real `.semantic` / `.agnostic` file, token for token.
  The full run and --quick are the same (129 incipits take seconds). Without the variable both figures
  say ok=false and why.
"""
from __future__ import annotations

import os
from pathlib import Path

from supersmm_tasks.synth.agnostic import mei_to_agnostic
from supersmm_tasks.synth.engrave import Engraver, EngravingFailed
from supersmm_tasks.synth.mei import UnsupportedMei, mei_to_semantic
from supersmm_tasks.synth.pae_source import MalformedPae, verovio_input

GOALS = {"semantic": 0.97, "agnostic": 0.95}


def run(quick: bool) -> list[dict]:
    real_dev = os.environ.get("SUPERSMM_REAL_DEV")
    if not real_dev or not Path(real_dev).is_dir():
        reason = "SUPERSMM_REAL_DEV is unset or not a folder: point it at shared/primus-real-dev"
        return [{"name": f"label_match_{kind}", "value": None, "unit": "fraction", "goal": f">= {goal}",
                 "ok": False, "reason": reason} for kind, goal in GOALS.items()]
    folders = sorted(folder for folder in Path(real_dev).iterdir() if folder.is_dir())
    matches = {kind: [] for kind in GOALS}
    engraver = Engraver()
    for folder in folders:
        labels = _labels_from_pae(engraver, (folder / "regular_pae.pae").read_text("utf-8"))
        for kind in GOALS:
            real = (folder / f"{folder.name}.{kind}").read_text("utf-8").rstrip("\n").rstrip("\t").split("\t")
            if labels[kind] == real:
                matches[kind].append(folder.name)
    return [
        {"name": f"label_match_{kind}", "value": round(len(matches[kind]) / len(folders), 4), "unit": "fraction",
         "goal": f">= {goal}", "ok": len(matches[kind]) / len(folders) >= goal, "incipits": len(folders),
         "misses": sorted(folder.name for folder in folders if folder.name not in matches[kind])}
        for kind, goal in GOALS.items()
    ]


def _labels_from_pae(engraver: Engraver, pae: str) -> dict[str, list[str] | None]:
    try:
        mei = engraver.load(verovio_input(pae))
        return {"semantic": mei_to_semantic(mei), "agnostic": mei_to_agnostic(mei)}
    except (MalformedPae, EngravingFailed, UnsupportedMei):
        return {"semantic": None, "agnostic": None}


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
