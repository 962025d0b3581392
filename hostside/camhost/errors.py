"""The one exception type camhost commands raise for a user-facing failure, and how its
messages name a camhost command for the user to run."""
import shlex
import sys

# the exit code of a write that failed after erasing began: the flash may be partly written
EXIT_STATE_UNKNOWN = 4


class CamhostError(Exception):
    """A failure with a message that says what went wrong and what to do next."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


def camhost_command(*argv):
    """A camhost command line runnable as printed: this Python, not a `camhost` on PATH."""
    return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "camhost") + argv)
