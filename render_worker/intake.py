"""Deciding when something dropped into ``incoming/`` is complete, so a half-copied plate is never taken.

* A ticket (``*.json``) is complete when it arrived by rename (watchdog's moved event), or when it
  already parses as a JSON object (a prefix of a JSON object never does), or when it has not changed
  for the settle time (it is then taken, and fails with a parse error if it is still broken).
* A folder is complete when its files (names, sizes, mtimes, recursively) have not changed for the
  settle time, it holds at least one file and none of them has a temporary name.
* A symlink (to a ticket or to a folder) is taken at once and never followed: claiming it moves the
  link, and the job is filed under ``failed/`` because links are refused; its target is not touched.

watchdog's created and moved events wake the worker at once; a rescan every ``rescan_interval``
catches what events miss (NFS and SMB deliver none for other machines' writes).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from rvm_vfx.spec.job import MAX_JOB_BYTES  # the contract alone: no engine (torch, OpenImageIO) to read it

from .fsutil import is_temporary_name
from .layout import DROP_TICKET

log = logging.getLogger(__name__)
Signature = tuple[object, ...]


@dataclass
class _Seen:
    signature: Signature
    stable_since: float
    first_seen: float
    renamed: bool = False


@dataclass(frozen=True)
class Ready:
    """A complete item, with what orders it: higher priority first, then first come."""

    path: Path
    priority: int
    first_seen: float


def _file_signature(path: Path) -> Signature | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return ("file", st.st_size, st.st_mtime_ns, stat.S_IFMT(st.st_mode))


def _folder_signature(path: Path) -> tuple[Signature | None, bool]:
    """(signature, has_temporary_file); signature None when the folder vanished."""
    entries: list[tuple[str, int, int]] = []
    temporary = False
    try:
        for dirpath, dirnames, filenames in os.walk(path, onerror=None):
            dirnames[:] = [d for d in dirnames if not is_temporary_name(d)]
            for name in filenames:
                if is_temporary_name(name):
                    temporary = True
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    temporary = True  # renamed away under us: certainly still changing
                    continue
                entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    except OSError:
        return None, False
    if not path.is_dir():
        return None, False
    return ("folder", tuple(sorted(entries))), temporary


def _parses_as_object(path: Path) -> bool:
    try:
        if path.stat().st_size > MAX_JOB_BYTES:
            return True  # complete or not, it will be refused for its size
        return isinstance(json.loads(path.read_bytes()), dict)
    except (OSError, ValueError):
        return False


def peek_priority(path: Path) -> int:
    """The ticket's ``priority`` (0 when absent or unreadable); the ticket is validated properly later."""
    ticket = path / DROP_TICKET if path.is_dir() else path
    try:
        if ticket.is_symlink() or not ticket.is_file() or ticket.stat().st_size > MAX_JOB_BYTES:
            return 0
        data = json.loads(ticket.read_bytes())
    except (OSError, ValueError):
        return 0
    value = data.get("priority") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Intake:
    """Tracks items in ``incoming/`` until they are complete. Thread-safe for watchdog's callbacks."""

    def __init__(self, incoming: Path, settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.incoming = incoming
        self.settle = settle
        self.clock = clock
        self.wake = threading.Event()
        self._seen: dict[str, _Seen] = {}
        self._renamed: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ watchdog side

    def note_event(self, path: str, renamed: bool) -> None:
        """Record that something under ``incoming/`` appeared; wake the worker."""
        try:
            rel = Path(path).relative_to(self.incoming)
        except ValueError:
            return
        if not rel.parts:
            return
        with self._lock:
            if renamed and len(rel.parts) == 1:
                self._renamed.add(rel.parts[0])
        self.wake.set()

    # ------------------------------------------------------------------ worker side

    @property
    def pending(self) -> bool:
        """Whether something is waiting to settle (the worker then looks again soon)."""
        with self._lock:
            return bool(self._seen)

    def ready(self) -> list[Ready]:
        """Rescan ``incoming/`` and return the complete items, best first."""
        now = self.clock()
        with self._lock:
            renamed, self._renamed = self._renamed, set()
        try:
            names = sorted(os.listdir(self.incoming))
        except FileNotFoundError:
            return []
        out: list[Ready] = []
        present = set()
        for name in names:
            if is_temporary_name(name):
                continue
            path = self.incoming / name
            link = path.is_symlink()
            is_dir = path.is_dir() and not link
            if not is_dir and not name.lower().endswith(".json") and not (link and path.is_dir()):
                continue  # stray files (notes, thumbnails) are left alone
            present.add(name)
            temporary = False
            if is_dir:
                signature, temporary = _folder_signature(path)
            else:
                signature = _file_signature(path)
            if signature is None:
                continue
            with self._lock:
                seen = self._seen.get(name)
                if seen is None or seen.signature != signature:
                    first = seen.first_seen if seen else now
                    seen = self._seen[name] = _Seen(signature, now, first, renamed=seen.renamed if seen else False)
                if name in renamed:
                    seen.renamed = True
            if link:  # made in one step, and refused once claimed: nothing to wait for, nothing to read
                out.append(Ready(path, 0, seen.first_seen))
            elif self._complete(path, is_dir, signature, temporary, seen, now):
                out.append(Ready(path, peek_priority(path), seen.first_seen))
        with self._lock:
            for gone in set(self._seen) - present:
                del self._seen[gone]
        return sorted(out, key=lambda r: (-r.priority, r.first_seen, r.path.name))

    def _complete(
        self, path: Path, is_dir: bool, signature: Signature, temporary: bool, seen: _Seen, now: float
    ) -> bool:
        settled = now - seen.stable_since >= self.settle
        if is_dir:
            files = signature[1]
            return settled and not temporary and bool(files)
        return seen.renamed or settled or _parses_as_object(path)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._seen.pop(path.name, None)


class IntakeEvents(FileSystemEventHandler):
    """watchdog handler: created and moved events under ``incoming/`` wake the worker."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    def on_created(self, event: FileSystemEvent) -> None:
        self.intake.note_event(os.fsdecode(event.src_path), renamed=False)

    def on_moved(self, event: FileSystemEvent) -> None:
        self.intake.note_event(os.fsdecode(event.dest_path), renamed=True)
