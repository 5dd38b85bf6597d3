"""Small file-system helpers every part of the worker leans on.

Shared storage is read by other workers and by ``rvm-worker status`` while we write, so every file
we own is replaced atomically (write a hidden temporary, then rename): a reader sees the old file or
the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Names that copy tools, editors and browsers give a file while it is still being written.
TEMPORARY_SUFFIXES = (
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".crdownload",
    ".download",
    ".filepart",
    ".!sync",
    ".swp",
    "~",
)
# Hidden files that are not in-flight copies (Finder litter); any other dot-file counts as temporary,
# because rsync and most copy tools write ``.name.XXXXXX`` and rename it at the end.
HARMLESS_HIDDEN = frozenset({".DS_Store"})


def is_temporary_name(name: str) -> bool:
    """True for a file name that says "still being written"."""
    if name in HARMLESS_HIDDEN:
        return False
    lowered = name.lower()
    return name.startswith(".") or name.startswith("~$") or lowered.endswith(TEMPORARY_SUFFIXES)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that no reader ever sees a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json_quiet(path: Path, limit: int = 1 << 20) -> Any:
    """The JSON in ``path``, or None when it is missing, too big or unreadable: for status, not tickets."""
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def real(path: str | os.PathLike[str]) -> Path:
    """The path with every symlink resolved and ``..`` applied, also when its tail does not exist yet."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def inside(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]]) -> bool:
    """Whether ``path``, symlinks resolved, lies in (or is) one of ``roots`` (also resolved)."""
    target = real(path)
    for root in roots:
        base = real(root)
        if target == base or base in target.parents:
            return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a killed child that its parent has not reaped yet is still "there" for kill(0)
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
