"""Exception types shared by the engine, the CLI, the worker and the plugins.

The split matters to callers: an ``InputError`` is the user's to fix (bad file, bad field, bad
argument; the CLI exits 2 and the worker files the job under ``failed/``), anything else is ours.
"""

from __future__ import annotations


class RvmError(Exception):
    """Base class for every error rvm-vfx raises on purpose."""


class InputError(RvmError, ValueError):
    """Bad input: a file, frame, field or argument the user supplied. Message names the culprit."""


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
