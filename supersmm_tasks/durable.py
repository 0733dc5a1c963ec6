"""The one atomic file write: checkpoints, state, config, the CSV, dataset configs and indexes, the
train / continue scripts, the files of each synthetic sample, and the scores and SVGs `supersmm predict` and
`supersmm score` write all go through it.

A file is written to a temporary name, fsynced and renamed, and its folder fsynced, so a crash at any
instant leaves the old or the complete new file. Standard library only: light commands import it.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from .errors import SupersmmError


def _write_fully(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_atomically(path: Path, data: bytes | memoryview) -> None:
    """Replace `path` with `data` so that a crash at any instant leaves the old or the new file.

    The folder is created when missing. A full disk raises DiskFull and leaves the old file untouched.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two processes never share one: _UNFINISHED
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_fully(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if is_disk_full(error):
            raise DiskFull(path) from None
        raise


def is_disk_full(error: BaseException) -> bool:
    """A full disk or quota: DiskFull from our writes, or an OSError from anyone's."""
    return isinstance(error, DiskFull) or (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))


_UNFINISHED = re.compile(r"\..+\.\d+\.tmp")  # write_atomically's temporary names


def remove_unfinished_writes(folder: Path) -> list[Path]:
    """Delete what writes cut off by a crash (SIGKILL, power loss) left in `folder`: their temporary files, each up
    to a whole checkpoint; the files they were to replace are intact. Only for a folder one process writes at a
    time (a run's checkpoints, under the run's lease): another's write under way would lose its file."""
    removed = []
    for temporary in Path(folder).glob(".*.tmp"):
        if _UNFINISHED.fullmatch(temporary.name):
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


class DiskFull(SupersmmError):
    """A full disk or quota stopped the atomic write of `path`; the previous file is intact."""

    def __init__(self, path: Path):
        super().__init__(f"disk full while writing {path}: free some space and try again; the previous file is intact")
        self.path = path


def fsync_directory(folder: Path) -> None:
    """Make a rename or a new file in `folder` survive a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
