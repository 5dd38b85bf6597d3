"""Job: the one description of a render request, under the engine's public name.

The Job and everything that follows from its fields live in the contract, ``rvm_vfx.spec.job``, which the
plugins carry a copy of; this module is that same Job for the engine, the CLI and the worker, so that
``from rvm_vfx.job import Job`` keeps working and still loads nothing but the standard library.
"""

from __future__ import annotations

from .spec.job import (
    COMPRESSIONS,
    DEVICES,
    FIELDS,
    FIELDS_BY_NAME,
    MAX_JOB_BYTES,
    MISSING_MODES,
    OUTPUT_FIELDS,
    OUTPUT_MODES,
    PATH_FIELDS,
    PIXEL_FIELDS,
    PRECISIONS,
    Job,
    fields_of_kind,
    fingerprint,
    read_limited,
)

__all__ = [
    "COMPRESSIONS",
    "DEVICES",
    "FIELDS",
    "FIELDS_BY_NAME",
    "MAX_JOB_BYTES",
    "MISSING_MODES",
    "OUTPUT_FIELDS",
    "OUTPUT_MODES",
    "PATH_FIELDS",
    "PIXEL_FIELDS",
    "PRECISIONS",
    "Job",
    "fields_of_kind",
    "fingerprint",
    "read_limited",
]
