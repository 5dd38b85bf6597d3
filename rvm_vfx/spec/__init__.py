"""The contract between the engine, the worker, the CLI and the plugins: standard library only, Python 3.9.

The Job and its fields (``job``, ``fields``, ``schema``), frame ranges and sequence patterns (``frames``),
the JSON progress protocol (``progress``), shot fine-tuning's settings (``finetune``), exit codes
(``exits``) and the names every edge must spell alike (``names``). The engine and the worker import it
as ``rvm_vfx.spec``; the Nuke plugin and the Blender add-on run in their hosts' own Pythons, where
neither torch nor the engine can be imported, so each carries an exact copy written by
``tools/vendor_spec.py`` (a test keeps the copies equal). Hence: nothing here imports anything but the
standard library and its own modules, relatively.
"""

from __future__ import annotations

from .errors import InputError, RvmError
from .exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, exit_code
from .finetune import FinetuneSettings
from .frames import format_frame, format_frames, parse_frames
from .job import FIELDS, MAX_JOB_BYTES, OUTPUT_FIELDS, PATH_FIELDS, PIXEL_FIELDS, Job, fingerprint
from .progress import Event, EventWriter, parse_line
from .schema import SCHEMA_VERSION, upgrade

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_OK",
    "FIELDS",
    "MAX_JOB_BYTES",
    "OUTPUT_FIELDS",
    "PATH_FIELDS",
    "PIXEL_FIELDS",
    "SCHEMA_VERSION",
    "Event",
    "EventWriter",
    "FinetuneSettings",
    "InputError",
    "Job",
    "RvmError",
    "exit_code",
    "fingerprint",
    "format_frame",
    "format_frames",
    "parse_frames",
    "parse_line",
    "upgrade",
]
