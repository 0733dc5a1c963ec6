"""The one atomic file write: checkpoints, state, config, the CSV, dataset configs and indexes, the
train / continue scripts, and the scores and SVGs `supersmm predict` and `supersmm score` write all go through it;
and the atomic folder write of a synthetic sample and a dataset's frozen split.

A file is written to a temporary name, fsynced and renamed, and its folder fsynced, so a crash at any
instant leaves the old or the complete new file. Light: the commands that answer at once import it.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import psutil

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
        _write_synced(temporary, data)
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if is_disk_full(error):
            raise DiskFull(path) from None
        raise


def _write_synced(path: Path, data: bytes | memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_fully(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_folder_atomically(folder: Path, files: dict[str, bytes]) -> None:
    """Make `folder` hold `files` (name -> bytes), all of them or none: they are written into a hidden folder
    beside it, which is then renamed into place (a folder already there is moved aside first, then deleted).
    A crash leaves the new folder whole, or no folder of that name, and hidden leftovers that
    remove_abandoned_folders deletes. A full disk raises DiskFull naming `folder`."""
    folder = Path(folder)
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    replaced = folder.with_name(f".{folder.name}.{os.getpid()}.old.tmp")
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        for name, data in files.items():
            _write_synced(temporary / name, data)
        fsync_directory(temporary)
        if folder.exists():
            os.rename(folder, replaced)
        try:
            os.rename(temporary, folder)
        except BaseException:  # Ctrl-C too: the old folder goes back
            if os.path.lexists(replaced):
                os.rename(replaced, folder)
            raise
        fsync_directory(folder.parent)
    except BaseException as error:  # Ctrl-C too: nothing half-written stays
        shutil.rmtree(temporary, ignore_errors=True)
        if is_disk_full(error):
            raise DiskFull(folder, intact="nothing of it was written") from None
        raise
    if replaced.is_dir() and not replaced.is_symlink():
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        replaced.unlink(missing_ok=True)


_ABANDONED_FOLDER = re.compile(r"\..+\.(?P<pid>\d+)(\.old)?\.tmp")  # write_folder_atomically's hidden folders


def remove_abandoned_folders(parent: Path) -> list[Path]:
    """Delete the hidden folders that write_folder_atomically left in `parent` when its process died (or that
    this process left); those of live processes are writes under way."""
    removed = []
    for entry in Path(parent).glob(".*.tmp"):
        match = _ABANDONED_FOLDER.fullmatch(entry.name)
        if match and entry.is_dir() and (int(match["pid"]) == os.getpid() or not psutil.pid_exists(int(match["pid"]))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


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
    """A full disk or quota stopped the atomic write of `path`; what it replaced is intact."""

    def __init__(self, path: Path, intact: str = "the previous file is intact"):
        super().__init__(f"disk full while writing {path}: free some space and try again; {intact}")
        self.path, self.intact = path, intact

    def __reduce__(self):  # rebuilt from its arguments where a worker process hands it back (synth --workers)
        return DiskFull, (self.path, self.intact)


def fsync_directory(folder: Path) -> None:
    """Make a rename or a new file in `folder` survive a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
