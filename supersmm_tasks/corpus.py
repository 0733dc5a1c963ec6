"""Finding PrIMuS / Camera-PrIMuS corpora under the data root and validating every sample.

A sample is a folder `<id>/` holding `<id>.png`, `<id>.semantic`, `<id>.agnostic`, `<id>.mei` and, in
Camera-PrIMuS, `<id>_distorted.jpg`; a corpus this project engraved adds `<id>.drawn.agnostic`, the symbols
its image draws, which agnostic networks learn instead of the label (labelling.py). The folder that holds the
samples is a corpus; the official archives add one level (`package_aa/` + `package_ab/` for PrIMuS, `Corpus/`
for Camera-PrIMuS).

Naming and image rules (what `supersmm detect` reports):
- the official PrIMuS archive (`package_aa/`, `package_ab/`) is `primus`, the official Camera-PrIMuS archive
  (`Corpus/`) is `camera_primus`; samples lying directly in the data root are `primus` (or `camera_primus` when
  they only have distorted images); any other corpus folder gives its own name, lower-cased, with every run of
  characters outside [a-z0-9_] turned into `_` (`Camera-PrIMuS` -> `camera_primus`).
- a corpus uses the `<id>_distorted.jpg` images (for training, validation and test) when its samples have them
  and either its name starts with `camera` or it has no clean `.png` at all; otherwise it uses `<id>.png`.
  So `supersmm synth data/primus --camera` gives `primus` on the clean PNGs, and
  `supersmm synth data/camera_primus --camera` gives `camera_primus` on the distorted JPEGs.
- a name stays with the folder an earlier detect gave it to (read from `datasets/<name>.json`) while that folder
  exists: another corpus that would take it (`data/Corp` next to `data/corp`) gets `<name>_2`, so that a run never
  switches corpus under its dataset's name.

A sample folder's name is its id and must be 1-40 characters of a-z, 0-9, _ and - (`paths.validate_sample_id`; all
PrIMuS ids are): ids are written one per line into the split files and TAB-separated into the index, so a sample
with any other name is refused with its reason.

Every image is decoded in full by the decoder training uses, and its stored size must lie within the
stated `ImageLimits` (set with SUPERSMM_IMAGE_LIMITS, e.g. `max_width=6000,max_aspect=40`): an image that
training cannot decode, or whose shape would blow up a batch, is refused with its reason. A sample folder or
file that resolves (through symlinks) outside the data root is refused too.

Nothing here ever writes inside a corpus.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import threading
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path

from . import paths
from .durable import write_atomically
from .errors import SupersmmError
from .splits import read_ids
from .vocabulary import ENCODINGS, token_index

CLEAN_IMAGE_SUFFIX = ".png"
CAMERA_IMAGE_SUFFIX = "_distorted.jpg"
SAMPLE_FILE_SUFFIXES = (CLEAN_IMAGE_SUFFIX, CAMERA_IMAGE_SUFFIX, ".semantic", ".agnostic", ".mei")
DRAWN_LABEL_SUFFIX = ".drawn.agnostic"  # the agnostic symbols as the image draws them (labelling.py), optional
OFFICIAL_ARCHIVE_FOLDERS = {"package_aa": "primus", "package_ab": "primus", "Corpus": "camera_primus"}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_END = b"\xff\xd9"
JPEG_TAIL_SEARCH_BYTES = 1024  # some writers pad after the end-of-image marker


@dataclass(frozen=True)
class Example:
    """One training sample: its image and the tokens of its label in one encoding.

    `width` and `height` are the image's stored size (read from its header at detect time), or None when unknown.
    `drawn`: the agnostic symbols its image draws, where the corpus has them (`<id>.drawn.agnostic`).
    """

    id: str
    image_path: str
    tokens: list[str]
    width: int | None = None
    height: int | None = None
    drawn: list[str] | None = None

    @property
    def target(self) -> list[str]:
        """What a network learns to write for this image: the symbols drawn where known, else the label."""
        return self.drawn if self.drawn is not None else self.tokens


# ---------------------------------------------------------------- finding corpora


@dataclass
class Corpus:
    name: str
    path: Path
    camera: bool
    sample_folders: list[Path]
    notes: list[str] = field(default_factory=list)
    data_root: Path | None = None  # resolved; nothing a sample reads may lie outside it

    @property
    def image_suffix(self) -> str:
        return CAMERA_IMAGE_SUFFIX if self.camera else CLEAN_IMAGE_SUFFIX


def sanitise_name(folder_name: str) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", folder_name.lower()).strip("_")[:40]
    return name or "corpus"


def find_corpora(data_root: Path) -> list[Corpus]:
    """Every corpus under `data_root`, sorted by path, each with notes about what was skipped inside it.

    A top-level folder of the data root without any sample is reported as an empty corpus.
    """
    skipped: list[tuple[Path, str]] = []
    groups: dict[tuple[Path, str | None], list[Path]] = {}
    for folder in _sample_folders(data_root, skipped):
        archive = OFFICIAL_ARCHIVE_FOLDERS.get(folder.parent.name)
        corpus_folder = folder.parent.parent if archive else folder.parent
        groups.setdefault((corpus_folder, archive), []).append(folder)

    corpora = [_corpus(folder, archive, samples, data_root) for (folder, archive), samples in groups.items()]
    for folder in _top_level_folders(data_root):
        if not any(_related(corpus.path, folder) for corpus in corpora):
            corpora.append(Corpus(sanitise_name(folder.name), folder, camera=False, sample_folders=[]))
    for corpus in corpora:
        corpus.data_root = data_root.resolve()
    corpora.sort(key=lambda corpus: str(corpus.path))
    _make_names_unique(corpora)
    for where, note in skipped if corpora else []:
        _closest_corpus(corpora, where).notes.append(note)
    return corpora


def _related(one: Path, other: Path) -> bool:
    return one == other or one in other.parents or other in one.parents


def _closest_corpus(corpora: list[Corpus], where: Path) -> Corpus:
    """The corpus whose folder holds `where` most closely (the first corpus when none does)."""
    holders = [corpus for corpus in corpora if corpus.path == where or corpus.path in where.parents]
    return max(holders, key=lambda corpus: len(corpus.path.parts)) if holders else corpora[0]


def _sample_folders(data_root: Path, skipped: list[tuple[Path, str]]):
    """Yields sample folders depth-first in sorted order; follows symlinks but never enters a folder twice,
    nor a folder that lies outside the data root (a sample folder there is yielded, to be refused)."""
    visited: set[tuple[int, int]] = set()
    resolved_root = data_root.resolve()
    pending = [data_root]
    while pending:
        folder = pending.pop()
        try:
            status = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as error:
            skipped.append((folder, f"{folder}: cannot be read ({error.strerror or error}), skipped"))
            continue
        if (status.st_dev, status.st_ino) in visited:
            skipped.append((folder, f"{folder}: already scanned through another path (symlink loop), skipped"))
            continue
        visited.add((status.st_dev, status.st_ino))

        if any(entry.name == folder.name + suffix for entry in entries for suffix in SAMPLE_FILE_SUFFIXES):
            yield folder
            continue
        if not is_inside(folder, resolved_root):
            skipped.append((folder, f"{folder}: resolves to {folder.resolve()}, outside the data root {resolved_root}; "
                                    f"skipped"))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() and not os.path.exists(entry.path):
                skipped.append((folder, f"{entry.path}: broken or looping symlink, skipped"))
            elif entry.is_dir():
                subfolders.append(Path(entry.path))
        pending.extend(reversed(subfolders))


def is_inside(path: Path, resolved_root: Path) -> bool:
    """Whether `path`, symlinks resolved, is `resolved_root` or lies below it."""
    resolved = path.resolve()
    return resolved == resolved_root or resolved_root in resolved.parents


def _top_level_folders(data_root: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(data_root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _corpus(folder: Path, archive: str | None, sample_folders: list[Path], data_root: Path) -> Corpus:
    has_clean = any((s / (s.name + CLEAN_IMAGE_SUFFIX)).exists() for s in sample_folders)
    has_camera = any((s / (s.name + CAMERA_IMAGE_SUFFIX)).exists() for s in sample_folders)
    if archive:
        name = archive
    elif folder == data_root:
        name = "camera_primus" if has_camera and not has_clean else "primus"
    else:
        name = sanitise_name(folder.name)
    camera = has_camera and (name.startswith("camera") or not has_clean)
    return Corpus(name, folder, camera, sample_folders)


def _make_names_unique(corpora: list[Corpus]) -> None:
    """Gives every corpus a name of its own. A name that an earlier `supersmm detect` gave to a folder that still
    exists stays with that folder, so that a run never switches corpus under its dataset's name: a new corpus that
    would take it gets `<name>_2` (or `_3`, ...) instead."""
    earlier = _earlier_names()
    taken: dict[str, Path] = {}
    for corpus in corpora:
        if corpus.path in earlier:
            corpus.name = earlier[corpus.path]
            taken[corpus.name] = corpus.path
    reserved = {name: folder for folder, name in earlier.items()}
    for corpus in corpora:
        if taken.get(corpus.name) == corpus.path:
            continue
        wanted, number = corpus.name, 1
        while corpus.name in taken or corpus.name in reserved:
            number += 1
            corpus.name = f"{wanted[:37]}_{number}"
        if corpus.name != wanted:
            holder = f"{reserved[wanted]} (named by an earlier detect)" if wanted in reserved else taken[wanted]
            corpus.notes.append(f"name {wanted!r} is taken by {holder}; this corpus is {corpus.name!r}")
        taken[corpus.name] = corpus.path


def _earlier_names() -> dict[Path, str]:
    """{corpus folder: dataset name} from the configs an earlier `supersmm detect` wrote, for folders that still
    exist (a corpus moved elsewhere may take its old name again). A config that cannot be read is skipped here;
    loading that dataset says what is wrong with it."""
    earlier: dict[Path, str] = {}
    for config_path in sorted(paths.datasets_dir().glob("*.json")):
        try:
            config = json.loads(config_path.read_text("utf-8"))
            name, folder = config["name"], Path(config["path"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if name == config_path.stem and folder.is_dir():
            earlier.setdefault(folder, name)
    return earlier


# ---------------------------------------------------------------- validating samples


class SampleProblem(Exception):
    """Why one file of a sample cannot be used; the message names the file."""


class MissingLabel(SampleProblem):
    """The sample has no label file for this encoding."""


@dataclass
class CheckedSample:
    id: str
    folder: str  # relative to the corpus folder, POSIX style
    width: int | None
    height: int | None
    encodings: tuple[str, ...]  # the encodings this sample can be trained with
    problems: list[str]


def check_sample(corpus: Corpus, folder: Path) -> CheckedSample:
    """Validates the sample in `folder` for the corpus's image kind and for every encoding.

    A sample with a good image is usable with each encoding whose label is good. A missing label file of one
    encoding is no defect (the sample is just not usable with that encoding); a broken one is.
    """
    sample_id = folder.name
    relative = folder.relative_to(corpus.path).as_posix()
    refused = _bad_id(sample_id, relative) or _outside_the_data_root(corpus, folder, relative)
    if refused:
        return CheckedSample(sample_id, relative, None, None, (), refused)
    problems: list[str] = []
    width = height = None
    try:
        width, height = check_image(folder / (sample_id + corpus.image_suffix), relative)
    except SampleProblem as problem:
        problems.append(str(problem))

    encodings, missing = [], []
    for encoding in ENCODINGS:
        try:
            read_label(folder / f"{sample_id}.{encoding}", encoding, relative)
            if encoding == "agnostic":
                read_drawn_label(folder / (sample_id + DRAWN_LABEL_SUFFIX), relative)
            encodings.append(encoding)
        except MissingLabel:
            missing.append(encoding)
        except SampleProblem as problem:
            problems.append(str(problem))
    if len(missing) == len(ENCODINGS):
        problems.append(f"{relative}/{sample_id}.{' and .'.join(ENCODINGS)}: no label file")
    if width is None:
        encodings = []
    elif encodings and problems:
        problems.append(f"usable with --encoding {' / '.join(encodings)} only")
    return CheckedSample(sample_id, relative, width, height, tuple(encodings), problems)


def _bad_id(sample_id: str, relative: str) -> list[str]:
    """Why the folder's name cannot be a sample id, [] when it can: ids are written one per line into split files
    and TAB-separated into the index, and name files, so only the project's id characters are accepted."""
    try:
        paths.validate_sample_id(sample_id)
    except paths.InvalidName:
        return [f"{relative!r}: not a sample id (1-40 characters of a-z, 0-9, _ and -, as PrIMuS's ids are); "
                f"refused: rename the folder and its files"]
    return []


def _outside_the_data_root(corpus: Corpus, folder: Path, relative: str) -> list[str]:
    """Why the sample is refused for lying (through symlinks) outside the data root, [] when it does not."""
    root = corpus.data_root or corpus.path.resolve()
    if not is_inside(folder, root):
        return [f"{relative}: the sample folder resolves to {folder.resolve()}, outside the data root {root}; refused"]
    names = [folder.name + suffix for suffix in SAMPLE_FILE_SUFFIXES]
    return [f"{relative}/{name}: resolves to {(folder / name).resolve()}, outside the data root {root}; refused"
            for name in names if (folder / name).is_symlink() and not is_inside(folder / name, root)]


# ---------------------------------------------------------------- what images training can take


@dataclass(frozen=True)
class ImageLimits:
    """The stored image sizes a sample may have. PrIMuS incipits are about 600-2000 x 110-200 pixels
    (aspect ratio 4-17); a batch is as wide as its widest image at the model's height, so one very long
    or very flat image makes every batch it lands in slow and huge."""

    min_height: int = 16
    max_height: int = 1024
    min_width: int = 16
    max_width: int = 8192
    min_aspect: float = 0.5  # width / height
    max_aspect: float = 64.0
    max_pixels: int = 4_000_000

    def problem(self, width: int, height: int) -> str | None:
        """Why an image of this size is refused, or None."""
        aspect = width / height
        if not self.min_height <= height <= self.max_height:
            return f"height {height} px outside {self.min_height}-{self.max_height} px"
        if not self.min_width <= width <= self.max_width:
            return f"width {width} px outside {self.min_width}-{self.max_width} px"
        if not self.min_aspect <= aspect <= self.max_aspect:
            return f"aspect ratio (width/height) {aspect:.3g} outside {self.min_aspect:g}-{self.max_aspect:g}"
        if width * height > self.max_pixels:
            return f"{width * height} pixels, more than {self.max_pixels}"
        return None

    def describe(self) -> str:
        return (f"height {self.min_height}-{self.max_height} px, width {self.min_width}-{self.max_width} px, "
                f"aspect ratio (width/height) {self.min_aspect:g}-{self.max_aspect:g}, "
                f"at most {self.max_pixels} pixels (set with {IMAGE_LIMITS_VARIABLE})")


IMAGE_LIMITS_VARIABLE = "SUPERSMM_IMAGE_LIMITS"


def image_limits() -> ImageLimits:
    """The limits in force: the defaults, with SUPERSMM_IMAGE_LIMITS (`name=value,...`) over them."""
    given = os.environ.get(IMAGE_LIMITS_VARIABLE, "").strip()
    if not given:
        return ImageLimits()
    types = {f.name: f.type for f in fields(ImageLimits)}
    settings = {}
    for item in given.split(","):
        name, _, value = (part.strip() for part in item.partition("="))
        if name not in types:
            raise SupersmmError(f"{IMAGE_LIMITS_VARIABLE}: unknown limit {name!r}; use {', '.join(types)}")
        try:
            settings[name] = (float if types[name] == "float" else int)(value)
        except ValueError:
            raise SupersmmError(f"{IMAGE_LIMITS_VARIABLE}: {name} must be a number, got {value!r}") from None
        if not 0 < settings[name] < math.inf:  # a limit of 0 (or nan) would refuse every image of the corpus
            raise SupersmmError(f"{IMAGE_LIMITS_VARIABLE}: {name} must be a number above 0, got {value!r}")
    limits = ImageLimits(**settings)
    for low, high in (("min_height", "max_height"), ("min_width", "max_width"), ("min_aspect", "max_aspect")):
        if getattr(limits, low) > getattr(limits, high):
            raise SupersmmError(f"{IMAGE_LIMITS_VARIABLE}: {low} {getattr(limits, low):g} is above "
                                f"{high} {getattr(limits, high):g}")
    return limits


_tracing = threading.Lock()


def _decoded_shape():
    """The training pipeline's decoder as one function traced once, whatever the threads: path -> [h, w, c]."""
    with _tracing:
        return _traced_decoder()


@cache
def _traced_decoder():
    """The decoding ops of pipeline.decode_grayscale, with its arguments, without its conversion to gray
    levels (which cannot fail and would double the time)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    @tf.autograph.experimental.do_not_convert
    def decoded_shape(path):
        data = tf.io.read_file(path)
        return tf.cond(tf.io.is_jpeg(data), lambda: tf.shape(tf.io.decode_jpeg(data, channels=1)),
                       lambda: tf.shape(tf.io.decode_png(data)))

    return decoded_shape.get_concrete_function()


def check_decodes(path: Path, shown: str) -> None:
    """Decode the whole image as training will; a damaged file (bad data inside an intact frame) fails here."""
    import tensorflow as tf

    try:
        _decoded_shape()(tf.constant(str(path)))
    except tf.errors.OpError as error:
        # A traced function's error lists where each op was defined; the decoder's own words come last.
        lines = [line.strip() for line in error.message.split(" [[")[0].splitlines() if line.strip()]
        reason = lines[-1] if lines else "unreadable"
        raise SampleProblem(f"{shown}: does not decode ({reason})") from None


def check_image(path: Path, where: str = "", limits: ImageLimits | None = None) -> tuple[int, int]:
    """The image's (width, height), after checking it is a complete PNG or JPEG of a size within `limits`
    (the ones in force by default) that decodes in full."""
    from PIL import Image  # here, not at the top: queueing a run reads its dataset without PIL

    shown = f"{where}/{path.name}" if where else str(path)
    try:
        with open(path, "rb") as file:
            head = file.read(24)
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - JPEG_TAIL_SEARCH_BYTES))
            tail = file.read()
        if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
            kind, size = "PNG", struct.unpack(">II", head[16:24])
        else:
            with Image.open(path) as image:  # reads the header only
                kind, size = image.format, image.size
    except FileNotFoundError:
        raise SampleProblem(f"{shown}: image missing") from None
    except Image.UnidentifiedImageError:
        raise SampleProblem(f"{shown}: not a PNG or JPEG image (empty or unreadable)") from None
    except OSError as error:
        raise SampleProblem(f"{shown}: cannot be read ({error.strerror or error})") from None
    if kind == "PNG" and not tail.endswith(PNG_END):
        raise SampleProblem(f"{shown}: truncated PNG (no IEND chunk at the end)")
    if kind == "JPEG" and JPEG_END not in tail:
        raise SampleProblem(f"{shown}: truncated JPEG (no end-of-image marker)")
    if kind not in ("PNG", "JPEG"):
        raise SampleProblem(f"{shown}: {kind} image, expected PNG or JPEG")
    if min(size) < 1:
        raise SampleProblem(f"{shown}: image has no pixels")
    too_odd = (limits or image_limits()).problem(*size)
    if too_odd:
        raise SampleProblem(f"{shown}: {size[0]}x{size[1]} image refused: {too_odd}")
    check_decodes(path, shown)
    return size


def read_label(path: Path, encoding: str, where: str = "") -> list[str]:
    """The tokens of a label file: TAB-separated, trailing TAB optional, LF or CRLF, all in the vocabulary."""
    shown = f"{where}/{path.name}" if where else str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingLabel(f"{shown}: label file missing") from None
    except OSError as error:
        raise SampleProblem(f"{shown}: cannot be read ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SampleProblem(f"{shown}: not UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start})") from None
    tokens = text.split()
    if not tokens:
        raise SampleProblem(f"{shown}: empty label")
    known = token_index(encoding)
    for position, token in enumerate(tokens, start=1):
        if token not in known:
            raise SampleProblem(f"{shown}: unknown {encoding} token {token!r} (token {position})")
    return tokens


def read_drawn_label(path: Path, where: str = "") -> list[str] | None:
    """The tokens of an optional `<id>.drawn.agnostic` file, None where there is none."""
    try:
        return read_label(path, "agnostic", where)
    except MissingLabel:
        return None


# ---------------------------------------------------------------- a detected dataset


@dataclass
class IndexedSample:
    id: str
    folder: str
    width: int
    height: int
    encodings: tuple[str, ...]


INDEX_HEADER = "id\tfolder\twidth\theight\tencodings"


def write_index(path: Path, samples: list[IndexedSample]) -> None:
    lines = [INDEX_HEADER] + [f"{s.id}\t{s.folder}\t{s.width}\t{s.height}\t{','.join(s.encodings)}" for s in samples]
    write_atomically(path, ("\n".join(lines) + "\n").encode())


def read_index(path: Path) -> dict[str, IndexedSample]:
    samples = {}
    for line in path.read_text("utf-8").splitlines()[1:]:
        sample_id, folder, width, height, encodings = line.split("\t")
        samples[sample_id] = IndexedSample(sample_id, folder, int(width), int(height), tuple(encodings.split(",")))
    return samples


@dataclass
class Dataset:
    """A detected dataset: its corpus folder, image kind, sample index and frozen split (from datasets/<name>.json)."""

    name: str
    path: Path
    camera: bool
    config_path: Path
    split_files: dict[str, Path]
    split_seed: int | None
    samples: dict[str, IndexedSample]

    @property
    def image_suffix(self) -> str:
        return CAMERA_IMAGE_SUFFIX if self.camera else CLEAN_IMAGE_SUFFIX

    def split_ids(self, split: str) -> list[str]:
        if split not in self.split_files:
            raise SupersmmError(f"unknown split {split!r}: use one of {', '.join(self.split_files)}")
        return read_ids(self.split_files[split])

    def count(self, split: str, encoding: str) -> int:
        """How many of the split's samples detection found valid for `encoding` (no label file is read)."""
        return sum(encoding in self.samples[i].encodings for i in self.split_ids(split) if i in self.samples)

    def examples(self, split: str, encoding: str) -> list[Example]:
        """The split's samples that are valid for `encoding`, with their labels read from the corpus now."""
        if encoding not in ENCODINGS:
            raise SupersmmError(f"unknown encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
        examples = []
        for sample_id in self.split_ids(split):
            sample = self.samples.get(sample_id)
            if sample is None or encoding not in sample.encodings:
                continue
            folder = self.path / sample.folder
            try:
                tokens = read_label(folder / f"{sample_id}.{encoding}", encoding, str(folder))
                drawn = read_drawn_label(folder / (sample_id + DRAWN_LABEL_SUFFIX), str(folder)) \
                    if encoding == "agnostic" else None
            except SampleProblem as problem:
                raise SupersmmError(f"{problem} (changed since detection: run `supersmm detect`)") from None
            image = folder / (sample_id + self.image_suffix)
            examples.append(Example(sample_id, str(image), tokens, sample.width, sample.height, drawn))
        return examples


def load_dataset(name: str) -> Dataset:
    """The dataset `name` as the last `supersmm detect` left it."""
    config_path = paths.dataset_config_path(name)
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except FileNotFoundError:
        raise SupersmmError(f"dataset {name!r} is not detected yet ({config_path} missing): run `supersmm detect`") \
            from None
    except (OSError, ValueError) as error:
        raise SupersmmError(f"{config_path} is unreadable ({error}): run `supersmm detect` again") from None
    folder = config_path.parent
    try:
        return Dataset(
            name=config["name"],
            path=Path(config["path"]),
            camera=config["camera"],
            config_path=config_path,
            split_files={split: folder / file for split, file in config["split"]["files"].items()},
            split_seed=config["split"]["seed"],
            samples=read_index(folder / config["index"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SupersmmError(f"dataset {name!r} ({config_path}) is incomplete or damaged ({error!r}): "
                            f"run `supersmm detect` again") from None
