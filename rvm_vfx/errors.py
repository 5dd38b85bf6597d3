"""Exception types shared by the engine, the CLI, the worker and the plugins, and the words for a full disk.

The split matters to callers: an ``InputError`` is the user's to fix (bad file, bad field, bad
argument; the CLI exits 2 and the worker files the job under ``failed/``), anything else is ours.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# The two classes every edge tells apart live in the contract, so a plugin's vendored copy and the engine
# raise the same kind of error for the same mistake; the engine's own kinds below derive from them.
from .spec.errors import InputError, RvmError

__all__ = [
    "CheckpointError",
    "ColorSpaceError",
    "ImageReadError",
    "InputError",
    "MissingFramesError",
    "OutputError",
    "RvmError",
    "disk_full_detail",
    "is_no_space",
    "write_error",
]


class CheckpointError(InputError):
    """A weights file that is not a usable RVM checkpoint."""


class ImageReadError(InputError):
    """A plate frame that cannot be read (missing, truncated, wrong channels, ...)."""


class MissingFramesError(InputError):
    """Frames of a requested range are absent from the sequence on disk."""


class ColorSpaceError(InputError):
    """A colour space name the OCIO config does not know."""


class OutputError(RvmError):
    """An output cannot be written (exists without overwrite, unwritable folder, disk full)."""


# --------------------------------------------------------------------------- full disks

# Words a full disk leaves in messages that lost their errno: the C library's (OpenImageIO passes only
# text on) and torch's zip writer, which checks its own position after a short write ("unexpected pos").
_NO_SPACE_WORDS = ("no space left", "disk quota", "unexpected pos")


def _no_space_errno(exc: BaseException) -> int | None:
    """ENOSPC or EDQUOT when either is anywhere in the chain of causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return None


def is_no_space(exc: BaseException) -> bool:
    """Whether a failure is a full disk or quota: ENOSPC or EDQUOT in the chain, or the words in the message."""
    return _no_space_errno(exc) is not None or any(words in str(exc).lower() for words in _NO_SPACE_WORDS)


def disk_full_detail(path: str | os.PathLike[str], needed: int | None = None, code: int = errno.ENOSPC) -> str | None:
    """The system's own words for a full disk, and what the file system holding ``path`` has left.

    For example ``No space left on device: 12 KiB free of 2048 KiB on the file system of /farm/active``.
    ``path`` need not exist (a removed temporary file): the nearest existing folder above it is asked.
    With ``needed``, None unless less than that many bytes are free, that is unless a full disk explains
    a failure whose message does not say (OpenImageIO's bare "write failed").
    """
    folder = Path(os.path.abspath(os.fspath(path)))
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None if needed is not None else os.strerror(code)
    if needed is not None and usage.free >= needed:
        return None
    return (
        f"{os.strerror(code)}: {usage.free // 1024} KiB free of {usage.total // 1024} KiB "
        f"on the file system of {folder}"
    )


def write_error(path: str | os.PathLike[str], action: str, exc: BaseException) -> OutputError:
    """The OutputError for a failed write of ``path``: a full disk says so with the space left, else the cause."""
    if is_no_space(exc):
        return OutputError(f"{path}: {action}: {disk_full_detail(path, code=_no_space_errno(exc) or errno.ENOSPC)}")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return OutputError(f"{path}: {action}: {reason}")
