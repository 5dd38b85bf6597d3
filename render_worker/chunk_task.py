"""The function a Dask worker runs for one chunk: render its frames, resumably, into the shared output.

It runs on a farm node, so it talks to the watcher only through files in the job folder (shared
storage): ``progress.json`` and ``chunk.log`` in its own state folder, ``done.json`` when finished.
It stops (finishing the frame in flight and snapshotting) when the watcher asks with
``stop.<generation>``, when another watcher took the job over, or when the job folder moved away.
The model is loaded once per worker process (``cached_model``) and kept for every later chunk.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rvm_vfx.spec.progress import PROGRESS as PROGRESS_EVENT
from rvm_vfx.spec.progress import START

from .fsutil import atomic_write_json
from .layout import CLAIM_PREFIX, STOP_PREFIX

POLL_S = 0.1
DONE = "done.json"
PROGRESS = "progress.json"
LOG = "chunk.log"

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)  # our own lines reach chunk.log whatever the Dask worker's root level is


class _ThreadFilter(logging.Filter):
    """This task's thread and the engine's reader/writer threads: not other tasks' lines (one task
    per worker thread is the farm setup; with several, engine warnings may land in a neighbour's log)."""

    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.ident or str(record.threadName).startswith(("rvm-read", "rvm-write"))


def _dask_worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return ""


def _stop_requested(job_dir: Path, generation: int) -> bool:
    """The watcher asked (SIGTERM, a failed sibling), another watcher took over, or the job moved away."""
    fence = job_dir / f"{CLAIM_PREFIX}{generation + 1}"
    request = job_dir / f"{STOP_PREFIX}{generation}"
    return request.exists() or fence.exists() or not job_dir.is_dir()


def _watch_for_stop(job_dir: Path, generation: int, stop: threading.Event, halt: threading.Event) -> None:
    while not halt.wait(POLL_S):
        if _stop_requested(job_dir, generation):
            stop.set()
            return


@contextmanager
def task_log_and_stop(log_path: Path, job_dir: Path, generation: int) -> Iterator[threading.Event]:
    """This task's log lines into ``log_path``, and an event set once the watcher asks the task to stop (the
    same for a chunk and for a training: both run on Dask workers that the watcher reaches only by files)."""
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ThreadFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    stop, halt = threading.Event(), threading.Event()
    watcher = threading.Thread(target=_watch_for_stop, args=(job_dir, generation, stop, halt), daemon=True)
    watcher.start()
    try:
        yield stop
    finally:
        halt.set()
        root.removeHandler(handler)
        handler.close()


def render_chunk(spec: dict[str, Any]) -> dict[str, Any]:
    """Render one chunk described by plain data (so Dask pickles nothing but dicts)."""
    from rvm_vfx.job import Job
    from rvm_vfx.render import cached_model, render

    job = Job.from_dict(spec["job"], source=f"chunk {spec['chunk']}")
    state_dir = Path(spec["state_dir"])
    job_dir = Path(spec["job_dir"])
    info = {"chunk": spec["chunk"], "pid": os.getpid(), "host": socket.gethostname(), "worker": _dask_worker_address()}
    if _stop_requested(job_dir, spec["generation"]):  # queued behind a SIGTERM or a takeover: nothing to do
        return {**info, "report": {}, "stopped": True, "frames": []}
    state_dir.mkdir(parents=True, exist_ok=True)
    last_write = [0.0]

    def progress(event: dict[str, Any]) -> None:
        if event.get("event") not in (START, PROGRESS_EVENT):
            return
        now = time.monotonic()
        if event.get("event") == PROGRESS_EVENT and event["done"] < event["total"] and now - last_write[0] < 0.05:
            return
        last_write[0] = now
        try:
            atomic_write_json(state_dir / PROGRESS, {**info, **event, "updated_at": time.time()})
        except OSError:
            pass

    with task_log_and_stop(state_dir / LOG, job_dir, spec["generation"]) as stop:
        log.info("chunk %s frames %s pre-roll %s on %s", spec["chunk"], job.frames, job.preroll, info)
        model, sha256 = cached_model(spec["checkpoint"])
        report = render(job, model=model, checkpoint_sha256=sha256, progress=progress, stop=stop, state_dir=state_dir)
        result = {**info, "report": report.to_dict(), "stopped": report.stopped, "frames": list(report.frames_written)}
        if not report.stopped:
            atomic_write_json(state_dir / DONE, result)
        log.info("chunk %s %s", spec["chunk"], "stopped" if report.stopped else "done")
        return result
