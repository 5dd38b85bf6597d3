"""The error every contract check raises: one class, so that each edge can tell "fix your input" apart.

``rvm_vfx.errors`` re-exports these (the engine's ``InputError`` is this class), and a vendored copy in a
plugin has its own, which the plugin turns into its host's message box. The CLI exits 2 on it and the
worker files the job as the ticket's fault.
"""

from __future__ import annotations


class RvmError(Exception):
    """Base class for every error rvm-vfx raises on purpose."""


class InputError(RvmError, ValueError):
    """Bad input: a file, frame, field or argument the user supplied. Message names the culprit."""
