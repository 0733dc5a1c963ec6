"""A few validation images of a run with ground truth, prediction and the prediction engraved again.

Predicting needs TensorFlow and the run's model, which takes seconds: a single background thread does it,
and the result is kept until the run's checkpoint changes. A request never waits for it.
"""
from __future__ import annotations

import difflib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SupersmmError
from ..run_state import best_checkpoint_candidates

PREVIEW_COUNT = 4
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass
class PreviewImage:
    id: str
    truth: list[str]
    prediction: list[str]
    image: bytes
    image_type: str
    errors: int  # token edit distance between truth and prediction
    engraving: str | None  # SVG of the prediction, None when it could not be engraved
    engraving_problem: str | None
    score: bytes | None = None  # MusicXML of the prediction, None when it is no score
    score_problem: str | None = None

    def to_json(self, index: int, url_prefix: str) -> dict:
        return {
            "id": self.id,
            "image_url": f"{url_prefix}/{index}/image",
            "engraving_url": f"{url_prefix}/{index}/engraving.svg" if self.engraving else None,
            "engraving_problem": self.engraving_problem,
            "score_url": f"{url_prefix}/{index}/score.musicxml" if self.score else None,
            "score_problem": self.score_problem,
            "diff": token_diff(self.truth, self.prediction),
            "errors": self.errors,
            "truth_length": len(self.truth),
        }


@dataclass
class Previews:
    checkpoint: str
    images: list[PreviewImage] = field(default_factory=list)
    error: str | None = None


def token_diff(truth: list[str], prediction: list[str]) -> list[dict]:
    """Token-level differences as difflib opcodes: [{"op": "equal"|"replace"|"delete"|"insert", "truth", "prediction"}]."""
    matcher = difflib.SequenceMatcher(a=truth, b=prediction, autojunk=False)
    return [
        {"op": op, "truth": truth[a0:a1], "prediction": prediction[b0:b1]}
        for op, a0, a1, b0, b1 in matcher.get_opcodes()
    ]


def checkpoint_key(name: str) -> str | None:
    """Names the checkpoint that predictions come from (the best one, else the newest); None while there is none."""
    for path in best_checkpoint_candidates(name):
        try:
            return f"{path.name}@{path.stat().st_mtime_ns}"
        except FileNotFoundError:
            continue
    return None


class PreviewCache:
    """Previews per run, computed off the request path and reused while the checkpoint stays the same."""

    def __init__(self, count: int = PREVIEW_COUNT):
        self.count = count
        self._lock = threading.Lock()
        self._done: dict[str, Previews] = {}
        self._computing: dict[str, str] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-previews")

    def lookup(self, name: str) -> tuple[str, Previews | None]:
        """("ready" | "computing" | "no checkpoint", the latest previews if any); starts work when needed."""
        key = checkpoint_key(name)
        with self._lock:
            done = self._done.get(name)
            if key is None:
                return "no checkpoint", None
            if done and done.checkpoint == key:
                return "ready", done
            if self._computing.get(name) != key:
                self._computing[name] = key
                self._executor.submit(self._compute, name, key)
            return "computing", done

    def image(self, name: str, index: int) -> PreviewImage | None:
        with self._lock:
            done = self._done.get(name)
        if done is None or not 0 <= index < len(done.images):
            return None
        return done.images[index]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _compute(self, name: str, key: str) -> None:
        try:
            previews = Previews(key, compute_previews(name, self.count))
        except SupersmmError as error:
            previews = Previews(key, error=str(error))
        except Exception as error:  # shown on the page; the dashboard must outlive a broken run
            previews = Previews(key, error=f"{type(error).__name__}: {error}")
        with self._lock:
            self._done[name] = previews
            if self._computing.get(name) == key:
                del self._computing[name]


def compute_previews(name: str, count: int) -> list[PreviewImage]:
    """Predict the first `count` validation images of the run with its best checkpoint."""
    from ..corpus import load_dataset
    from ..evaluate import edit_distance, predict
    from ..run_config import load_run_config

    config = load_run_config(name)
    examples = load_dataset(config.dataset).examples("val", config.encoding)[:count]
    predictions = predict(name, [example.image_path for example in examples])
    images = []
    for example, prediction in zip(examples, predictions):
        image_path = Path(example.image_path)
        music, problem = _as_semantic(prediction, config.encoding)
        if music is None:
            engraving, score, score_problem = None, None, problem
        else:
            engraving, problem = _engrave(music)
            score, score_problem = _musicxml(music)
        images.append(PreviewImage(
            id=example.id,
            truth=list(example.tokens),
            prediction=list(prediction),
            errors=edit_distance(prediction, example.tokens),
            image=image_path.read_bytes(),
            image_type=IMAGE_TYPES.get(image_path.suffix.lower(), "application/octet-stream"),
            engraving=engraving,
            engraving_problem=problem,
            score=score,
            score_problem=score_problem,
        ))
    return images


def _as_semantic(prediction: list[str], encoding: str) -> tuple[list[str] | None, str | None]:
    """(the prediction as semantic tokens, None), or (None, why it cannot be read as music)."""
    from ..agnostic_to_semantic import as_semantic

    try:
        return as_semantic(prediction, encoding), None
    except SupersmmError as error:
        return None, f"not readable as music: {error}"


def _engrave(tokens: list[str]) -> tuple[str | None, str | None]:
    """(SVG, None) or (None, why not)."""
    from ..render import render_svg

    try:
        return render_svg(tokens), None
    except Exception as error:  # a prediction is arbitrary model output: one that cannot be engraved hides nothing else
        return None, str(error)


def _musicxml(tokens: list[str]) -> tuple[bytes | None, str | None]:
    """(MusicXML, None) or (None, why the prediction is no score)."""
    from ..score import score_bytes

    try:
        return score_bytes([tokens], "musicxml"), None
    except SupersmmError as error:
        return None, f"no MusicXML: {error}"
