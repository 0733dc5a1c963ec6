"""The one exception type that the CLI turns into a single clear line on stderr."""


class SupersmmError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable broker, a full disk.

    The message says what went wrong and where, in one line, without a traceback.
    """


class ChunkInterrupted(Exception):
    """Raised from a training callback when the worker is stopping: the chunk ends where it is, mid-epoch,
    writing nothing more and recording no failure; the run resumes from its last checkpoint."""
