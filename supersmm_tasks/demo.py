"""`supersmm demo`: the newcomer's one command, from nothing to a trained model and where to look at it.

1. engrave a small synthetic corpus (clean PNGs and camera JPEGs) into `data/demo/`,
2. detect it (dataset `demo`: its split, config and train / continue scripts),
3. train run `demo` (the tiny CRNN) chunk by chunk on the embedded broker with a worker of its own,
4. print the validation SER, one validation image read by the model against its truth, that reading as
   music (engraved again, and as MusicXML), and what to run next.

The demo keeps to its time (DEMO_SECONDS, engraving to result) on a slower machine too: its run has a time
budget (`--max-minutes`), so once two epochs show the machine's pace, the worker fits the epoch budget to the
epochs that fit and the learning-rate schedule ends with them. Run it again in the same folder and it reuses the
corpus and continues the same run for a few more epochs.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

from . import paths
from .errors import SupersmmError

RUN_NAME = "demo"
CORPUS_FOLDER = "demo"
# Enough music for four minutes of training to read staves at under 10% SER on the two cores of 2026-12-04 (8.6%
# in 229 s, all ten epochs; 1,400 incipits gave 5.9% in 272 s, too near the five minutes): agnostic labels (a
# symbol and its place on the staff) are what `tiny` learns fastest, and its reading is also shown as music.
DEMO_SAMPLES = 1200
DEMO_EPOCHS = 10  # the most; fewer where they would not fit in DEMO_SECONDS
DEMO_CHUNK = 5
# The whole demo, engraving to the printed result; RESULT_SECONDS of it are kept for showing the result (6 s on
# two cores). On the 2-core machine of 2026-12-06 (half the matrix speed of the one above) an epoch takes 25-45 s:
# ten of them made the demo last 7.5 minutes (8.7% val SER); with the epochs that fit, 4.8 minutes (10.7%).
DEMO_SECONDS = 285
RESULT_SECONDS = 15
OVERHEAD_SECONDS = 15  # of training outside its epochs: the worker's start, each chunk's loading, each checkpoint
DEMO_SEED = 0
DEMO_ENCODING = "agnostic"
# A run of a few epochs ends better on one cycle than on the recipe's cosine (schedule.py): `tiny`, the demo's
# 1,200 incipits, 7 epochs, seeds 0 and 1: 8.5% and 8.6% val SER against 9.4% and 9.4% (2-core AMD, 2026-12-06).
# Its rate stays near the peak for longer and ends at a thousandth of it.
DEMO_SCHEDULE = "onecycle"
TRAIN_ON_MINUTES = 60  # what the next steps offer to train on for
MIN_SAMPLES = 10  # a train, a validation and a test sample at the very least, and a few to learn from


def run_demo(home: Path | None = None, samples: int = DEMO_SAMPLES, epochs: int = DEMO_EPOCHS,
             chunk: int = DEMO_CHUNK, seed: int = DEMO_SEED, seconds: float = DEMO_SECONDS) -> int:
    """The whole demo in `home` (default: SUPERSMM_HOME or the current folder), training at most `epochs`
    epochs and no more than fit in `seconds` from now; returns the exit code."""
    deadline = time.monotonic() + seconds - RESULT_SECONDS
    if samples < MIN_SAMPLES or epochs < 1 or chunk < 1:
        raise SupersmmError(f"the demo needs at least {MIN_SAMPLES} samples, 1 epoch and 1 epoch per chunk "
                            f"(got samples={samples}, epochs={epochs}, chunk={chunk})")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices would bury the demo's lines
    with _home(home):
        say(f"SuperSMM demo in {paths.home()}")
        corpus = engrave_corpus(samples, seed)
        dataset = detect_corpus(corpus)
        code = train(dataset, epochs, chunk, seed, deadline)
        if code != 0:
            say(f"training stopped before the end (exit {code}); run `supersmm demo` again to continue")
            return code
        show_result()
        show_next_steps(home is not None)
    return 0


def say(line: str = "") -> None:
    print(line, flush=True)


@contextmanager
def _home(home: Path | None):
    """SUPERSMM_HOME set to `home` for this call and the worker it starts."""
    if home is None:
        yield
        return
    before = os.environ.get("SUPERSMM_HOME")
    os.environ["SUPERSMM_HOME"] = str(Path(home).resolve())
    try:
        yield
    finally:
        if before is None:
            del os.environ["SUPERSMM_HOME"]
        else:
            os.environ["SUPERSMM_HOME"] = before


def engrave_corpus(samples: int, seed: int) -> Path:
    """`data/demo/` with `samples` engraved incipits; kept as it is when an earlier demo already wrote them."""
    from .synth.corpus_writer import generate_corpus, sample_id

    folder = paths.data_root() / CORPUS_FOLDER
    present = all((folder / sample_id(seed, i) / f"{sample_id(seed, i)}.semantic").is_file() for i in range(samples))
    if present:
        say(f"[1/4] corpus {folder} is already there ({samples} incipits)")
        return folder
    say(f"[1/4] engraving {samples} synthetic incipits (clean PNG and camera JPEG) into {folder}")
    generate_corpus(folder, samples, seed=seed, camera=True, progress=True)
    return folder


def detect_corpus(folder: Path) -> str:
    """Detect the demo corpus only (a real PrIMuS next to it is left for `supersmm detect`); its dataset name."""
    from .corpus import find_corpora
    from .detect import detect_corpus as detect_one

    say("[2/4] detecting it: validating every sample, freezing the train / val / test split")
    corpus = next((c for c in find_corpora(folder.parent) if c.path == folder.resolve()), None)
    if corpus is None:
        raise SupersmmError(f"no corpus found in {folder} after engraving it")
    report = detect_one(corpus)
    if not report.usable:
        raise SupersmmError(f"the demo corpus {folder} cannot be trained on: {'; '.join(report.notes)}")
    counts = ", ".join(f"{split} {count}" for split, count in report.split_counts.items())
    say(f"      dataset {report.name}: {report.valid} of {report.samples} samples valid ({counts})")
    return report.name


def train(dataset: str, epochs: int, chunk: int, seed: int, deadline: float) -> int:
    """Train (or continue) run `demo` for `epochs` more epochs, or as many as fit before `deadline` (a
    time.monotonic()), `chunk` epochs per Celery task."""
    from . import run_state
    from .run_status import RunStatus
    from .runs import train_foreground
    from .training_log import read_rows

    target, spent = epochs, 0.0
    # What a run is made with; a continued run keeps what it was made with (an older demo's schedule included).
    new_run = {"model": "tiny", "encoding": DEMO_ENCODING, "schedule": DEMO_SCHEDULE, "seed": seed}
    if paths.config_path(RUN_NAME).is_file():
        new_run = {}
        state = run_state.read_state(RUN_NAME)
        if state["status"] == RunStatus.CANCELLED:
            raise SupersmmError(f"run {RUN_NAME} in {paths.home()} was cancelled, and the demo trains only that run: "
                                "run the demo in another folder (SUPERSMM_HOME=DIR supersmm demo)")
        done = state["last_completed_epoch"] or 0
        target = (done + epochs if state["status"] == RunStatus.COMPLETED
                  else max(state["max_total_epochs"], epochs, done + 1))  # a budget must leave an epoch to train
        rows = [row for row in read_rows(RUN_NAME) if int(row["epoch"]) == done]
        spent = float(rows[-1]["cumulative_time_sec"]) if rows else 0.0
        say(f"[3/4] continuing run {RUN_NAME} from epoch {done} to {target} at most, as many as fit in the "
            f"demo's time (chunks of {chunk} epochs)")
    else:
        say(f"[3/4] training run {RUN_NAME} (tiny CRNN) for {target} epochs at most, as many as fit in the demo's "
            f"time, in chunks of {chunk}, each chunk a Celery task on the embedded broker")
    # The run's time budget counts its epochs' own time; the worker's start and each chunk's loading are not in it.
    training_seconds = max(1.0, deadline - time.monotonic() - OVERHEAD_SECONDS)
    return train_foreground(RUN_NAME, dataset=dataset, **new_run, max_total_epochs=target, max_epochs_per_run=chunk,
                            patience=0, max_minutes=round((spent + training_seconds) / 60, 2))


def show_result() -> None:
    """Validation SER of the best checkpoint, and one validation incipit as read by the model."""
    from .agnostic_to_semantic import as_semantic
    from .corpus import load_dataset
    from .evaluate import edit_distance, evaluate_run, predict
    from .render import write_svg
    from .score import write_score
    from .run_config import load_run_config

    result = evaluate_run(RUN_NAME, split="val")
    say(f"[4/4] run {RUN_NAME}, best checkpoint (epoch {result['epoch']}) on {result['samples']} validation "
        f"incipits: symbol error rate {result['ser']:.1f}%, sequence error rate {result['sequence_error']:.1f}%")
    config = load_run_config(RUN_NAME)
    example = load_dataset(config.dataset).examples("val", config.encoding)[0]
    (prediction,) = predict(RUN_NAME, [example.image_path])
    say(f"      {example.image_path}")
    say(f"      truth: {' '.join(example.tokens)}")
    if not prediction:
        say("      read:  (nothing yet: a few epochs are not enough to read music; train on and watch the dashboard)")
        return
    say(f"      read:  {' '.join(prediction)}")
    errors = edit_distance(prediction, example.tokens)
    say(f"      {errors} symbol error{'s' if errors != 1 else ''} in {len(example.tokens)} "
        f"(insertions, deletions and substitutions)")
    try:
        music = as_semantic(prediction, config.encoding)
        if music is not prediction:
            say(f"      as music: {' '.join(music)}")
        svg = write_svg(music, paths.run_dir(RUN_NAME) / "demo_prediction.svg")
        score = write_score([music], paths.run_dir(RUN_NAME) / "demo_prediction.musicxml")
        say(f"      what the model read, engraved again by Verovio: {svg}")
        say(f"      and as a score (MusicXML, opens in MuseScore): {score}")
    except SupersmmError as error:
        say(f"      (no score of it: {error})")


def show_next_steps(home_given: bool) -> None:
    from .run_config import load_run_config

    prefix = f"SUPERSMM_HOME={paths.home()} " if home_given else ""
    # The demo's run keeps to the demo's time: training on needs more minutes as well as more epochs.
    minutes = math.ceil((load_run_config(RUN_NAME).max_minutes or 0) + TRAIN_ON_MINUTES)
    say()
    say("Next:")
    say(f"  {prefix}supersmm dashboard          # live dashboard on http://127.0.0.1:8050/")
    say(f"  {prefix}supersmm status {RUN_NAME}")
    say(f"  {prefix}supersmm train {RUN_NAME} --max-total-epochs 200 --max-minutes {minutes}"
        f"   # train on for up to {TRAIN_ON_MINUTES} more minutes; Ctrl-C pauses, running it again resumes")
    say(f"  {prefix}supersmm demo                # again: continues the same run, up to {DEMO_EPOCHS} more epochs")

