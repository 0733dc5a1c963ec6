"""`supersmm demo`: the newcomer's one command, from nothing to a trained model and where to look at it.

1. engrave a small synthetic corpus (clean PNGs and camera JPEGs) into `data/demo/`,
2. detect it (dataset `demo`: its split, config and train / continue scripts),
3. train run `demo` (the tiny CRNN) chunk by chunk on the embedded broker with a worker of its own,
4. print the validation SER, one validation image read by the model against its truth, that reading as
   music (engraved again, and as MusicXML), and what to run next.

The demo keeps to its time (DEMO_SECONDS, engraving to result) on a slower machine too: once two epochs show
the machine's pace, the run's epoch budget is lowered to the epochs that fit, and its learning-rate schedule
ends with them from the next chunk on. Run it again in the same folder and it reuses the corpus and continues
the same run for a few more epochs.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from . import paths
from .errors import SupersmmError

RUN_NAME = "demo"
CORPUS_FOLDER = "demo"
# Enough music for four minutes of training to read staves at under 10% SER on the two cores of 2026-12-04 (8.6%
# in 229 s, all ten epochs; 1,400 incipits gave 5.9% in 272 s, too near the five minutes): agnostic labels (a
# symbol and its place on the staff) are what `tiny` learns fastest, and its reading is also shown as music.
DEMO_SAMPLES = 1200
DEMO_EPOCHS = 10  # the most; fewer where they would not fit in DEMO_SECONDS
DEMO_CHUNK = 2  # a lowered budget takes effect from the next chunk
# The whole demo, engraving to the printed result; RESULT_SECONDS of it are kept for showing the result (6 s on
# two cores). On the 2-core machine of 2026-12-06 (half the matrix speed of the one above) an epoch takes about
# 40 s: ten of them made the demo last 7.5 minutes (8.7% val SER), the five that fit 4.3 minutes (13.0%).
DEMO_SECONDS = 285
RESULT_SECONDS = 15
DEMO_SEED = 0
DEMO_ENCODING = "agnostic"
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

    target, done = epochs, 0
    if paths.config_path(RUN_NAME).is_file():
        state = run_state.read_state(RUN_NAME)
        done = state["last_completed_epoch"] or 0
        target = done + epochs if state["status"] == RunStatus.COMPLETED else max(state["max_total_epochs"], epochs)
        say(f"[3/4] continuing run {RUN_NAME} from epoch {done} to {target} at most, as many as fit in the "
            f"demo's time (chunks of {chunk} epochs)")
    else:
        say(f"[3/4] training run {RUN_NAME} (tiny CRNN) for {target} epochs at most, as many as fit in the demo's "
            f"time, in chunks of {chunk}, each chunk a Celery task on the embedded broker")
    fitter = EpochBudgetFitter(done, target, deadline)
    fitter.start()
    try:
        return train_foreground(RUN_NAME, dataset=dataset, model="tiny", encoding=DEMO_ENCODING,
                                max_total_epochs=target, max_epochs_per_run=chunk, seed=seed, patience=0)
    finally:
        fitter.stop()


def epochs_that_fit(done: int, epoch_seconds: float, seconds_left: float, most: int) -> int:
    """The epoch budget once `done` epochs are trained: as many more as `seconds_left` holds at `epoch_seconds`
    each, at least the one under way, at most `most`."""
    return max(done + 1, min(most, done + int(seconds_left // epoch_seconds)))


class EpochBudgetFitter(threading.Thread):
    """Watches the run train and lowers its epoch budget to what fits before the deadline.

    The pace is the wall time between epochs finishing (chunk changes included), counted from the first epoch of
    this call, which also starts the worker and traces the model: the first fit comes after the second epoch.
    That is late enough for the schedule too: fitted to five epochs from the first one on, the demo's model read
    15.5% instead of 13.0% (its rate decays before the model has learnt the staves' shapes). The budget is only
    ever lowered, so the worker rebuilds its schedule once or twice, not every epoch."""

    def __init__(self, done: int, most: int, deadline: float):
        super().__init__(name="demo-epoch-budget", daemon=True)
        self.done, self.most, self.deadline = done, most, deadline
        self.stopping = threading.Event()

    def run(self) -> None:
        from . import run_state
        from .run_config import create_or_update_run

        first = None  # (epoch, time.monotonic()) when this call's first epoch was seen finished
        budget = self.most
        while not self.stopping.wait(0.5):
            done = run_state.peek_state(RUN_NAME).get("last_completed_epoch") or 0
            if done <= self.done:
                continue
            now, self.done = time.monotonic(), done
            if first is None:
                first = (done, now)
                continue
            epoch_seconds = (now - first[1]) / (done - first[0])
            fitted = epochs_that_fit(done, epoch_seconds, self.deadline - now, self.most)
            if fitted < budget:
                budget = fitted
                create_or_update_run(RUN_NAME, max_total_epochs=budget)
                tqdm.write(f"      {budget} epochs fit in the demo's time at {epoch_seconds:.0f} s an epoch")

    def stop(self) -> None:
        self.stopping.set()
        self.join()


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
    prefix = f"SUPERSMM_HOME={paths.home()} " if home_given else ""
    say()
    say("Next:")
    say(f"  {prefix}supersmm dashboard          # live dashboard on http://127.0.0.1:8050/")
    say(f"  {prefix}supersmm status {RUN_NAME}")
    say(f"  {prefix}supersmm train {RUN_NAME} --max-total-epochs 200   # train on; Ctrl-C pauses, running it again resumes")
    say(f"  {prefix}supersmm demo                # again: continues the same run, up to {DEMO_EPOCHS} more epochs")

