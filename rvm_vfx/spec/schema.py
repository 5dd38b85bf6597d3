"""Versions of the job format, and the upgrades that bring an older ticket to the current one.

A ticket written by an older plugin, or waiting in a farm folder through an upgrade, must still render.
Each change to the format that an old ticket cannot simply be read as adds one function here, from
version N to N + 1, and bumps ``SCHEMA_VERSION``; ``upgrade`` runs the chain. A ticket without a
``schema_version`` is version 1, the format from before versions were written down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import InputError
from .fields import TYPE_NAMES

SCHEMA_VERSION = 2
FIELD = "schema_version"

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 only starts writing the version down; every version 1 field means what it meant."""
    return {**data, FIELD: 2}


#: ``UPGRADES[n]`` turns a version ``n`` job dict into a version ``n + 1`` one, never changing its argument.
UPGRADES: Mapping[int, Upgrade] = {1: _v1_to_v2}


def version_of(data: Mapping[str, Any]) -> int:
    """The schema version a job dict is written in (1 when it says none)."""
    version = data.get(FIELD, 1)
    if isinstance(version, bool) or not isinstance(version, int):
        got = TYPE_NAMES.get(type(version), type(version).__name__)
        raise InputError(f"job field '{FIELD}': expected integer, got {got} ({version!r})")
    if version < 1:
        raise InputError(f"job field '{FIELD}': must be >= 1, got {version}")
    if version > SCHEMA_VERSION:
        raise InputError(
            f"job field '{FIELD}': version {version} is newer than this rvm-vfx reads (up to {SCHEMA_VERSION}); "
            "update rvm-vfx"
        )
    return version


def upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """A job dict in the current version; ``data`` itself is left as it was."""
    current = dict(data)
    for version in range(version_of(data), SCHEMA_VERSION):
        current = UPGRADES[version](current)
    return current
