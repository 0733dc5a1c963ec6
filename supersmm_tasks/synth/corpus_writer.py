"""Writes a corpus in the PrIMuS layout, one process per core: random incipits, or given ones.

Sample `index` of corpus `seed` is drawn from its own random stream, derived from (seed, index)
alone, so the corpus is the same bytes whatever the number of workers. A random sample is kept only
if Verovio's MEI converts back to exactly the drawn tokens: no image is written with a wrong label.
A given incipit (`generate_from_pae`) is labelled from Verovio's MEI as PrIMuS labels it; its ids
and random streams come from its own line, so the same file gives the same bytes. Beside PrIMuS's
agnostic label, each sample gets the symbols its image draws (`<id>.drawn.agnostic`, see labelling.py).
"""
from __future__ import annotations

import os
import random
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..corpus import DRAWN_LABEL_SUFFIX
from ..durable import remove_abandoned_folders, write_folder_atomically
from ..errors import SupersmmError
from ..paths import InvalidName, validate_sample_id
from ..vocabulary import load_vocabulary
from .agnostic import mei_to_agnostic
from .camera import camera_jpeg
from .engrave import FONTS, Engraver, EngravingFailed, font_for, png_bytes
from .mei import UnsupportedMei, mei_to_semantic, unlabelled_drawing
from .music import IncipitWriter, drawn_final_barline, printed_return_to_key
from .pae import semantic_to_pae, with_labelled_ties
from .pae_source import MalformedPae, drawn_verovio_input, verovio_input

ATTEMPTS_PER_SAMPLE = 20


@dataclass(frozen=True)
class SynthReport:
    out: Path
    count: int
    seconds: float
    with_agnostic: int
    camera: bool
    workers: int
    failed: tuple[tuple[str, str], ...] = ()  # (id, reason) of given incipits that could not be written

    @property
    def rate(self) -> float:
        """Incipits written per second."""
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def sample_id(seed: int, index: int) -> str:
    """The folder and file name stem of sample `index` of the corpus drawn with `seed`."""
    return f"synth{seed}-{index:06d}"


def generate_corpus(out: Path, samples: int, seed: int = 0, camera: bool = False,
                    workers: int | None = None, progress: bool = True) -> SynthReport:
    """Writes `samples` engraved incipits under `out` (`out/<id>/<id>.png`, `.semantic`, `.mei`, ...)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise SupersmmError(f"number of samples must be a whole number >= 1, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SupersmmError(f"seed must be a whole number >= 0, got {seed!r}")
    out = _usable_output_folder(Path(out))
    workers = max(1, min(workers or len(os.sched_getaffinity(0)), samples))
    started = time.perf_counter()
    jobs = [(str(out), seed, index, camera) for index in range(samples)]
    results = _run(_write_sample, jobs, workers, progress, f"synth {out.name}", out)
    return SynthReport(out=out, count=samples, seconds=time.perf_counter() - started,
                       with_agnostic=sum(results), camera=camera, workers=workers)


def generate_from_pae(out: Path, pae_file: Path, camera: bool = False, workers: int | None = None,
                      progress: bool = True) -> SynthReport:
    """Engraves the incipits of `pae_file` (`ID<TAB>PAE` lines) into `out/<ID>/`, as PrIMuS would.

    A malformed line stops everything before anything is written; an incipit that Verovio cannot
    engrave or that has no semantic label is left out and listed in the report with its reason.
    """
    incipits = read_pae_file(Path(pae_file))
    out = _usable_output_folder(Path(out))
    workers = max(1, min(workers or len(os.sched_getaffinity(0)), len(incipits)))
    started = time.perf_counter()
    jobs = [(str(out), sample, pae, camera) for sample, pae in incipits]
    results = _run(_write_given_sample, jobs, workers, progress, f"synth {out.name}", out)
    failed = tuple((sample, reason) for (sample, _), (reason, _) in zip(incipits, results) if reason)
    return SynthReport(out=out, count=len(incipits) - len(failed), seconds=time.perf_counter() - started,
                       with_agnostic=sum(agnostic for _, agnostic in results), camera=camera, workers=workers,
                       failed=failed)


def read_pae_file(path: Path) -> list[tuple[str, str]]:
    """(id, PAE) of every `ID<TAB>PAE` line; blank lines are skipped; a bad line is one clear error."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError as error:
        raise SupersmmError(f"cannot read the incipits file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise SupersmmError(f"the incipits file {path} is not UTF-8 text") from None
    incipits, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        sample, tab, pae = line.partition("\t")
        if not tab or not pae.strip():
            raise SupersmmError(f"{where}: expected ID<TAB>PAE, got {line[:60]!r}")
        try:
            validate_sample_id(sample)
            verovio_input(pae)
        except (InvalidName, MalformedPae) as error:
            raise SupersmmError(f"{where}: {error}") from None
        if sample in seen:
            raise SupersmmError(f"{where}: the id {sample!r} is given twice")
        seen.add(sample)
        incipits.append((sample, pae.strip()))
    if not incipits:
        raise SupersmmError(f"{path} holds no incipit (one ID<TAB>PAE line per incipit)")
    return incipits


def _run(write, jobs: list, workers: int, progress: bool, description: str, out: Path) -> list:
    bar = tqdm(total=len(jobs), disable=not progress, file=sys.stderr, unit="incipit", desc=description)
    results = []
    try:
        with bar:
            if workers == 1:
                _load_engraver()
                for job in jobs:
                    results.append(write(job))
                    bar.update()
            else:
                # spawn, not fork: the caller may hold threads (TensorFlow, Celery) that fork would copy mid-lock
                spawn = get_context("spawn")
                with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_start_pool_worker) as pool:
                    for result in pool.map(write, jobs, chunksize=4):
                        results.append(result)
                        bar.update()
    except OSError as error:  # a full disk, a folder removed or made read-only while writing
        raise SupersmmError(f"could not write the corpus to {out}: {error.strerror or error}") from None
    return results


def _usable_output_folder(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise SupersmmError(f"cannot write the corpus to {out}: it exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        remove_abandoned_folders(out)  # samples of an earlier synth that was cut off
    except OSError as error:
        raise SupersmmError(f"cannot write the corpus to {out}: {error.strerror or error}") from None
    return out.resolve()


_engraver: Engraver | None = None


def _start_pool_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core
    _load_engraver()


def _load_engraver() -> None:
    global _engraver
    _engraver = _engraver or Engraver()


def _write_sample(job: tuple[str, int, int, bool]) -> bool:
    """Draws, engraves, checks and writes one sample; returns whether it got an `.agnostic` file."""
    out, seed, index, camera = job
    streams = np.random.SeedSequence([seed, index]).generate_state(4)
    rng = random.Random(int(streams[0]) << 32 | int(streams[1]))
    tokens, gray, drawn, mei = _checked_engraving(rng, font=FONTS[index % len(FONTS)],
                                                  xml_id_seed=int(streams[2]) >> 1)
    name = sample_id(seed, index)
    return _write_files(Path(out) / name, gray, drawn, mei, tokens, camera_seed=int(streams[3]) if camera else None)


def _write_given_sample(job: tuple[str, str, str, bool]) -> tuple[str | None, bool]:
    """Engraves, labels and writes one given incipit: (why it was left out or None, has `.agnostic`)."""
    out, sample, pae, camera = job
    stream = zlib.crc32(sample.encode("utf-8"))  # this incipit's own ids and camera damage
    try:
        gray, drawn, mei = _engraved(drawn_verovio_input(pae), verovio_input(pae), font_for(sample),
                                     xml_id_seed=stream >> 1)
        semantic = mei_to_semantic(mei)
    except (EngravingFailed, UnsupportedMei) as error:
        return f"cannot be engraved or labelled: {error}", False
    unlabelled = unlabelled_drawing(drawn)
    if unlabelled:
        return f"cannot be labelled as drawn: {unlabelled}", False
    unknown = sorted(set(semantic) - set(load_vocabulary("semantic")))
    if unknown:
        return f"its semantic label needs tokens outside the vocabulary: {' '.join(unknown)}", False
    folder = Path(out) / sample
    extra = {"regular_pae.pae": (pae + "\n").encode("utf-8")}
    return None, _write_files(folder, gray, drawn, mei, semantic, stream if camera else None, extra)


def _write_files(folder: Path, gray: np.ndarray, drawn_mei: str, mei: str, semantic: list[str],
                 camera_seed: int | None, extra: dict[str, bytes] | None = None) -> bool:
    """Writes one sample's files (`drawn_mei`: what the image draws, `mei`: as PrIMuS labels it); returns whether
    it got agnostic labels."""
    name = folder.name
    agnostic, drawn = mei_to_agnostic(mei), mei_to_agnostic(drawn_mei, drawn=True)
    if not set(agnostic) | set(drawn) <= set(load_vocabulary("agnostic")):
        agnostic = None  # it trains semantic only
    files = {
        f"{name}.png": png_bytes(gray),
        f"{name}.semantic": _label_line(semantic),
        f"{name}.mei": mei.encode("utf-8"),
        **(extra or {}),
    }
    if agnostic is not None:
        files[f"{name}.agnostic"] = _label_line(agnostic)
        files[name + DRAWN_LABEL_SUFFIX] = _label_line(drawn)
    if camera_seed is not None:
        files[f"{name}_distorted.jpg"] = camera_jpeg(gray, np.random.default_rng(camera_seed))
    write_folder_atomically(folder, files)  # a sample cut off (a full disk, Ctrl-C) leaves no folder
    return agnostic is not None


def _checked_engraving(rng: random.Random, font: str, xml_id_seed: int) -> tuple[list[str], np.ndarray, str, str]:
    """(semantic label, image, MEI of what it draws, MEI as PrIMuS labels it) of a random incipit."""
    for _ in range(ATTEMPTS_PER_SAMPLE):
        writer = IncipitWriter(rng)
        tokens = writer.tokens()
        pae = semantic_to_pae(tokens, final_barline=drawn_final_barline(rng, writer.ends_with_full_measure, tokens),
                              prints_return_to_key=lambda: printed_return_to_key(rng))
        try:
            gray, drawn = _engraver.engrave(pae, font, xml_id_seed)
            if mei_to_semantic(drawn) != tokens:
                continue
            mei = _labels_mei(drawn, pae, with_labelled_ties(pae), xml_id_seed)
            return mei_to_semantic(mei), gray, drawn, mei
        except (EngravingFailed, UnsupportedMei):
            continue
    raise RuntimeError(f"no incipit survived the MEI round trip in {ATTEMPTS_PER_SAMPLE} attempts")


def _engraved(drawn_pae: str, labelled_pae: str, font: str, xml_id_seed: int) -> tuple[np.ndarray, str, str]:
    """(image with every tie the source has, its MEI, MEI with the ties PrIMuS labels): PrIMuS's image and MEI."""
    gray, drawn = _engraver.engrave(drawn_pae, font, xml_id_seed)
    return gray, drawn, _labels_mei(drawn, drawn_pae, labelled_pae, xml_id_seed)


def _labels_mei(drawn_mei: str, drawn_pae: str, labelled_pae: str, xml_id_seed: int) -> str:
    return drawn_mei if labelled_pae == drawn_pae else _engraver.load(labelled_pae, xml_id_seed)


def _label_line(tokens: list[str]) -> bytes:
    """One line of TAB-separated tokens with a trailing TAB, as in PrIMuS."""
    return ("\t".join(tokens) + "\t").encode("utf-8")
