"""The training of a ticket's ``finetune`` stage: one function on plain data, run in the worker or on a Dask worker.

Like a chunk (``chunk_task``), it talks to the watcher only through files in the job folder, under
``finetune/``: ``progress.json`` (the last ``train`` event), ``train.log``, and ``done.json`` once the
checkpoint and its sidecar are written. A finished training is never redone: a later attempt of the job
(its render stopped, or its worker killed while rendering) finds ``done.json`` and goes straight to the
render. An unfinished one (its worker killed, or SIGTERM) starts again from the base weights, so the
checkpoint is the same for a seed whatever happened to the attempts before it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rvm_vfx.spec.progress import TRAIN

from .chunk_task import _dask_worker_address, _stop_requested, task_log_and_stop
from .fsutil import atomic_write_json, read_json_quiet

#: Under the job folder: the training's checkpoint, sidecar and files (kept with the job in done/).
TRAIN_DIR = "finetune"
DONE = "done.json"
PROGRESS = "progress.json"
LOG = "train.log"
#: How often (seconds) progress.json is rewritten; the last step is always written.
_WRITE_EVERY_S = 0.2

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)  # our own lines reach train.log whatever the Dask worker's root level is

Sink = Callable[[dict[str, Any]], None]


def finished_training(job_dir: Path) -> dict[str, Any] | None:
    """The result of this job's finished training, when its checkpoint and sidecar are still there."""
    result = read_json_quiet(job_dir / TRAIN_DIR / DONE)
    if not isinstance(result, dict):
        return None
    files = [result.get("checkpoint"), result.get("sidecar")]
    return result if all(isinstance(f, str) and os.path.isfile(f) for f in files) else None


def training_spec(
    plate: str, settings: dict[str, Any], job_dir: Path, name: str, generation: int
) -> dict[str, Any]:  # fmt: skip
    """What ``train`` needs, as plain data (so Dask pickles nothing but dicts)."""
    folder = job_dir / TRAIN_DIR
    return {
        "plate": plate,
        "settings": settings,
        "out": str(folder / name),
        "job_dir": str(job_dir),
        "generation": generation,
    }


def train(spec: dict[str, Any], stop: threading.Event, progress: Sink) -> dict[str, Any]:
    """Train from the base weights into ``spec["out"]`` (and its sidecar); ``done.json`` marks it finished.

    Stopped (``stop`` set), the engine still writes its best checkpoint so far, but the result says
    ``stopped`` and no ``done.json`` is written: the next attempt trains again, fully. The time limit
    reached is no stop: training ends with its best weights, as the ticket asked.
    """
    from rvm_vfx.finetune import FinetuneRequest, finetune
    from rvm_vfx.spec.finetune import FinetuneSettings

    out = Path(spec["out"])
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (out, out.with_suffix(".json")):  # a killed attempt's leftovers: this one starts afresh
        stale.unlink(missing_ok=True)
    settings = FinetuneSettings.from_dict(spec["settings"], source="finetune")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "worker": _dask_worker_address()}
    log.info("training on %s from %s into %s on %s", spec["plate"], settings.checkpoint, out, info)
    # overwrite: a stopped attempt of an earlier generation may still write its best weights after the unlink.
    request = FinetuneRequest(plate=spec["plate"], out=str(out), settings=settings, overwrite=True)
    report = finetune(request, progress=progress, stop=stop)
    result = {
        **info,
        "checkpoint": str(out),
        "sidecar": str(out.with_suffix(".json")),
        "report": report.to_dict(),
        "stopped": report.stopped == "stop",  # a time limit reached ends training as planned: it is finished
    }
    if not result["stopped"]:
        atomic_write_json(folder / DONE, result)
    log.info("training %s", "stopped" if result["stopped"] else "done")
    return result


def train_task(spec: dict[str, Any]) -> dict[str, Any]:
    """``train`` on a Dask worker: stopped by the watcher's ``stop.<generation>`` file (or a takeover), its
    progress written to ``progress.json`` for the watcher to show."""
    job_dir = Path(spec["job_dir"])
    folder = Path(spec["out"]).parent
    if _stop_requested(job_dir, spec["generation"]):
        return {"stopped": True}
    folder.mkdir(parents=True, exist_ok=True)
    with task_log_and_stop(folder / LOG, job_dir, spec["generation"]) as stop:
        return train(spec, stop, progress_file(folder / PROGRESS))


def progress_file(path: Path) -> Sink:
    """A sink that keeps the latest ``train`` event in ``path`` (rewritten at most every ``_WRITE_EVERY_S``)."""
    last = [0.0]

    def sink(event: dict[str, Any]) -> None:
        if event.get("event") != TRAIN:
            return
        now = time.monotonic()
        final = event.get("iteration") == event.get("total")
        if not final and now - last[0] < _WRITE_EVERY_S:
            return
        last[0] = now
        try:
            atomic_write_json(path, {**event, "pid": os.getpid(), "updated_at": time.time()})
        except OSError:
            pass

    return sink
