"""Claiming jobs so that each is rendered by exactly one worker, also across machines.

* A new item is claimed by renaming it from ``incoming/`` into a fresh ``active/<job-id>/``. A rename
  is atomic on every POSIX file system, NFS and SMB included: when two workers race, exactly one
  rename finds the source and the other gets ``FileNotFoundError``.
* The owner keeps ``heartbeat.json`` fresh. A job whose heartbeat is older than the timeout (or whose
  owner process is gone from this very machine, or who released it on SIGTERM) may be taken over.
* Ownership has a generation number: the owner of generation ``g`` created ``claim.<g>`` with
  ``O_CREAT | O_EXCL``, which only one process can do. Taking over means creating ``claim.<g+1>``,
  so two workers that both see a stale heartbeat cannot both win. The old owner, should it only have
  been slow, sees ``claim.<g+1>`` at its next beat and stops: a fence, not just a timer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rvm_vfx.errors import OutputError, write_error

from .fsutil import atomic_write_json, pid_alive, read_json_quiet
from .layout import CLAIM_PREFIX, DROP, HEARTBEAT, TICKET

log = logging.getLogger(__name__)
_CLAIM_RE = re.compile(re.escape(CLAIM_PREFIX) + r"(\d+)$")


def new_job_id(item_name: str) -> str:
    """Readable and unique: the dropped name, the claim time and a random part."""
    stem = item_name[:-5] if item_name.lower().endswith(".json") else item_name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:60] or "job"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def owner_info(worker_id: str, generation: int) -> dict[str, Any]:
    return {"worker": worker_id, "host": socket.gethostname(), "pid": os.getpid(), "generation": generation}


@dataclass
class Claim:
    """This worker's ownership of one job folder, at one generation."""

    job_dir: Path
    worker_id: str
    generation: int

    @property
    def job_id(self) -> str:
        return self.job_dir.name

    def superseded(self) -> bool:
        """True once another worker took the job over (or the folder was moved away)."""
        return (self.job_dir / f"{CLAIM_PREFIX}{self.generation + 1}").exists() or not self.job_dir.is_dir()


def _create_exclusive(path: Path, data: dict[str, Any]) -> bool:
    """Create a claim file that only one process can create; False when another process has.

    A claim whose contents cannot be written (a full disk still has an inode for the empty file) is
    removed again and raises OutputError: an empty claim would name no owner and fence nobody.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise write_error(path, "cannot create claim", exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({**data, "time": time.time()}, handle)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise write_error(path, "cannot write claim", exc) from exc
    return True


def claim_item(item: Path, active: Path, worker_id: str) -> Claim | None:
    """Move a complete incoming item into ``active/<job-id>/``; None when another worker got it first."""
    try:
        mode = item.lstat().st_mode
    except FileNotFoundError:
        return None
    job_dir = active / new_job_id(item.name)
    try:
        job_dir.mkdir()
    except OSError as exc:
        raise write_error(job_dir, "cannot make the job folder", exc) from exc
    # A link to a folder is filed like a dropped folder, so that it is refused as one (never followed).
    folder = stat.S_ISDIR(mode) or (stat.S_ISLNK(mode) and item.is_dir())
    dest = job_dir / (DROP if folder else TICKET)
    try:
        os.rename(item, dest)
    except FileNotFoundError:
        job_dir.rmdir()
        return None
    except OSError:
        job_dir.rmdir()
        raise
    try:
        _create_exclusive(job_dir / f"{CLAIM_PREFIX}0", owner_info(worker_id, 0))
    except OutputError:
        _unclaim(item, dest)
        raise
    log.info("claimed %s as %s", item.name, job_dir.name)
    return Claim(job_dir, worker_id, 0)


def _unclaim(item: Path, dest: Path) -> None:
    """Put an item whose claim could not be written back where it was dropped, to be taken when it can be.

    Should that fail (or a new item of the same name be there now), the folder stays in ``active/``
    without a claim, which the takeover scan treats as abandoned after the heartbeat timeout.
    """
    try:
        if not os.path.lexists(item):
            os.rename(dest, item)
            dest.parent.rmdir()
    except OSError as exc:
        log.warning("%s stays in %s unclaimed: %s", item.name, dest.parent, exc)


def current_generation(job_dir: Path) -> int:
    """The newest claim generation in a job folder; -1 when none was written (a crash mid-claim)."""
    try:
        names = os.listdir(job_dir)
    except OSError:
        return -1
    found = [int(m.group(1)) for n in names if (m := _CLAIM_RE.match(n))]
    return max(found, default=-1)


def _age(path: Path, now: float) -> float | None:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return None


def staleness(job_dir: Path, timeout: float, now: float | None = None) -> str | None:
    """Why this job may be taken over (a short reason), or None while its owner is alive."""
    now = time.time() if now is None else now
    generation = current_generation(job_dir)
    owner = read_json_quiet(job_dir / f"{CLAIM_PREFIX}{generation}") if generation >= 0 else None
    beat = read_json_quiet(job_dir / HEARTBEAT)
    if isinstance(beat, dict) and beat.get("generation") == generation:
        if beat.get("released"):
            return "released by its worker"
        age = _age(job_dir / HEARTBEAT, now)
    elif generation >= 0:
        age = _age(job_dir / f"{CLAIM_PREFIX}{generation}", now)
    else:
        age = _age(job_dir, now)
    if isinstance(owner, dict) and owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid):
            return f"its worker (pid {pid}) on this machine is gone"
    if age is not None and age > timeout:
        return f"heartbeat {age:.0f} s old"
    return None


def try_takeover(job_dir: Path, worker_id: str, timeout: float) -> Claim | None:
    """Take over a job whose owner is dead; None when it is alive or another worker won the race."""
    reason = staleness(job_dir, timeout)
    if reason is None:
        return None
    if not ((job_dir / TICKET).exists() or (job_dir / DROP).exists()):
        # A claim that crashed between making the folder and the rename: nothing to render.
        try:
            job_dir.rmdir()
        except OSError:
            pass
        return None
    generation = current_generation(job_dir) + 1
    if not _create_exclusive(job_dir / f"{CLAIM_PREFIX}{generation}", owner_info(worker_id, generation)):
        return None
    log.info("took over %s (generation %d): %s", job_dir.name, generation, reason)
    return Claim(job_dir, worker_id, generation)


class Heartbeat:
    """Keeps ``heartbeat.json`` fresh while a job runs; calls ``on_lost`` if another worker fenced us off."""

    def __init__(self, claim: Claim, interval: float, on_lost: Callable[[], None]) -> None:
        self.claim = claim
        self.interval = interval
        self.on_lost = on_lost
        self.lost = False
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{claim.job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def beat(self, released: bool = False) -> None:
        if self.claim.superseded():
            if not self.lost:
                self.lost = True
                log.warning("job %s was taken over by another worker; stopping", self.claim.job_id)
                self.on_lost()
            return
        data = {**owner_info(self.claim.worker_id, self.claim.generation), "time": time.time()}
        if released:
            data["released"] = True
        try:
            atomic_write_json(self.claim.job_dir / HEARTBEAT, data)
        except OSError as exc:  # shared storage hiccup: the next beat tries again
            log.warning("heartbeat for %s not written: %s", self.claim.job_id, exc)

    def _run(self) -> None:
        while not self._halt.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()

    def release(self) -> None:
        """Say "take this job now": used when stopping on SIGTERM with the job resumable."""
        self.stop()
        self.beat(released=True)
