"""Reading images with a trained model, from a run of this project or from a folder `supersmm export` wrote.

    recognizer = Recognizer.load("primus")            # a run's name (its best checkpoint) or an export folder
    recognizer.read("staff.png")                      # ["clef-G2", "keySignature-DM", "timeSignature-C", ...]
    recognizer.read_page("page.png")                  # one token list per staff, top first
    recognizer.score("page.png", "page.musicxml")     # the staves as one score: .musicxml / .xml, .mid or .mei

Both kinds run the same function: image bytes in, logits and their lengths out (`serving_function`), which is
what the export saves; decoding is greedy (best path), as `supersmm predict` has always done.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from . import pipeline
from .corpus import JPEG_SIGNATURE, PNG_SIGNATURE
from .errors import SupersmmError
from .model import greedy_decode

EXPORT_SETTINGS = "supersmm.json"
EXPORT_VOCABULARY = "vocabulary.txt"


def serving_function(model, preset):
    """A traced function: PNG or JPEG bytes of one staff -> {"logits": [1, T, V + 1], "logit_lengths": [1]},
    the image prepared exactly as training prepares it (gray, ink towards 1, the preset's height, aspect kept,
    background after its last column up to a whole frame)."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="image")])
    def read_staff(image):
        pixels, frames = pipeline.staff_input(image, preset)
        return {"logits": model(pixels, training=False), "logit_lengths": tf.reshape(frames, [1])}

    return read_staff


class Recognizer:
    def __init__(self, read_staff, vocabulary: list[str], encoding: str, source: str, network_encoding: str | None = None):
        """`vocabulary`: the tokens the network writes, in `network_encoding`; `encoding`: the tokens `read` returns
        (semantic, for a semantic run that reads through agnostic symbols)."""
        self._read_staff = read_staff
        self.vocabulary = vocabulary
        self.encoding = encoding
        self.network_encoding = network_encoding or encoding
        self.source = source

    @classmethod
    def load(cls, run_or_export: str | Path) -> "Recognizer":
        """A run of this SUPERSMM_HOME by name, or a folder that `supersmm export` wrote."""
        folder = Path(run_or_export)
        if (folder / "saved_model.pb").is_file():
            return cls._from_export(folder)
        from .paths import InvalidName, validate_run_name

        try:
            name = validate_run_name(str(run_or_export))
        except InvalidName:
            raise SupersmmError(
                f"{run_or_export} is neither a run's name nor a folder written by supersmm export") from None
        return cls._from_run(name)

    @classmethod
    def _from_run(cls, name: str) -> "Recognizer":
        from .evaluate import best_model
        from .model import PRESETS
        from .run_config import load_run_config
        from .vocabulary import load_vocabulary

        config = load_run_config(name)
        model, _ = best_model(config)
        read_staff = serving_function(model, PRESETS[config.model])
        return cls(read_staff, list(load_vocabulary(config.network_encoding)), config.encoding, f"run {name}",
                   config.network_encoding)

    @classmethod
    def _from_export(cls, folder: Path) -> "Recognizer":
        try:
            settings = json.loads((folder / EXPORT_SETTINGS).read_text("utf-8"))
            vocabulary = (folder / EXPORT_VOCABULARY).read_text("utf-8").splitlines()
        except (OSError, ValueError) as error:
            raise SupersmmError(f"{folder} is not a complete export: {error}") from None
        loaded = tf.saved_model.load(str(folder))
        return cls(loaded.signatures["serving_default"], vocabulary, settings["encoding"], f"export {folder}",
                   settings.get("network_encoding"))

    # ------------------------------------------------------------ reading

    def read(self, image: str | Path | bytes) -> list[str]:
        """The tokens of one staff image (PNG or JPEG, any size, gray or colour), read whole."""
        return self._tokens(_image_bytes(image), _shown(image))

    def read_page(self, image: str | Path | bytes) -> list[list[str]]:
        """One token list per staff of the image, top first; an image of one staff is read whole, as `read` does."""
        data, shown = _image_bytes(image), _shown(image)
        try:
            gray = pipeline.decode_grayscale(tf.constant(data)).numpy()[..., 0]
        except tf.errors.OpError as error:
            raise SupersmmError(f"cannot read image {shown}: {pipeline.short_error(error)}") from None
        from .staves import find_staves

        staves = find_staves(np.round(gray).astype(np.uint8))
        if len(staves) == 1:
            return [self._tokens(data, shown)]
        return [self._tokens(_png(staff), f"{shown} (staff {number})") for number, staff in enumerate(staves, 1)]

    def score(self, image: str | Path | bytes, path: str | Path) -> Path:
        """Reads the image's staves and writes them as one score; the format follows the suffix of `path`."""
        from .score import write_score

        return write_score(self.semantic(self.read_page(image)), Path(path))

    def semantic(self, staves: list[list[str]]) -> list[list[str]]:
        """The staves this model read as semantic tokens (pitches and durations): an agnostic model's reading
        is turned into them by agnostic_to_semantic; SupersmmError where it cannot be."""
        from .agnostic_to_semantic import as_semantic

        return [as_semantic(tokens, self.encoding) for tokens in staves]

    def _tokens(self, data: bytes, shown: str) -> list[str]:
        try:
            out = self._read_staff(image=tf.constant(data))
        except tf.errors.OpError as error:
            raise SupersmmError(f"cannot read image {shown}: {pipeline.short_error(error)}") from None
        blank = len(self.vocabulary)
        (indices,) = greedy_decode(out["logits"].numpy(), out["logit_lengths"].numpy(), blank)
        tokens = [self.vocabulary[index] for index in indices]
        if self.network_encoding == "semantic":
            return tokens
        from .labelling import read_as

        return read_as(tokens, self.encoding)  # as validation scores it


def _image_bytes(image: str | Path | bytes) -> bytes:
    """The image's bytes, once they are known to be a PNG or JPEG (TensorFlow's PNG decoder also takes GIF, BMP and
    WebP, and gives some of them in shapes a model cannot read)."""
    if isinstance(image, bytes):
        data = image
    else:
        try:
            data = Path(image).read_bytes()
        except FileNotFoundError:
            raise SupersmmError(f"image {image} does not exist") from None
        except IsADirectoryError:
            raise SupersmmError(f"image {image} is a folder, not an image") from None
    if not data.startswith((PNG_SIGNATURE, JPEG_SIGNATURE)):
        raise SupersmmError(f"cannot read image {_shown(image)}: not a PNG or JPEG"
                            + (" (the file is empty)" if not data else ""))
    return data


def _shown(image) -> str:
    return "(bytes)" if isinstance(image, bytes) else str(image)


def _png(gray: np.ndarray) -> bytes:
    return cv2.imencode(".png", gray)[1].tobytes()
