"""Exit codes of the ``rvm-vfx`` command: part of the interface the plugins and the farm rely on."""

from __future__ import annotations

from .errors import InputError

EXIT_OK = 0
#: Anything that is not the user's to fix: an output that cannot be written, a crash, a stop on request.
EXIT_FAILED = 1
#: Bad input or arguments (an ``InputError``): the message says what to change.
EXIT_BAD_INPUT = 2

MEANINGS = {
    EXIT_OK: "done",
    EXIT_FAILED: "failed (output, internal error, or stopped before the end)",
    EXIT_BAD_INPUT: "bad input: a file, frame, field or argument to fix",
}


def exit_code(error: BaseException) -> int:
    """The exit code a failure ends the command with."""
    return EXIT_BAD_INPUT if isinstance(error, InputError) else EXIT_FAILED
