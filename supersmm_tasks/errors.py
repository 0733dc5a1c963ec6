"""The one exception type that the CLI turns into a single clear line on stderr."""


class SupersmmError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable broker, a full disk.

    The message says what went wrong and where, in one line, without a traceback.
    """
