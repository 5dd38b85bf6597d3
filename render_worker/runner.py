"""One claimed job from start to finish: validate, render (resumably), report, file it under done/ or failed/.

Whatever happens inside, the job ends in exactly one of three places: ``done/`` with its report,
``failed/`` with a report naming the cause, or still in ``active/`` (stopped on SIGTERM, or taken
over by another worker) ready to resume. The worker itself never dies of a job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import socket
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

from rvm_vfx.errors import InputError, OutputError, disk_full_detail, is_no_space, write_error
from rvm_vfx.spec.frames import format_frame, format_frames
from rvm_vfx.spec.names import parse_temporary_frame_name
from rvm_vfx.spec.progress import PROGRESS, START, TRAIN, VALIDATION, WARNING

from .chunks import device_resources
from .claim import Claim, Heartbeat
from .config import WorkerConfig
from .executor_local import Outcome, ProgressSink
from .finetune_ticket import finetune_report, install_trained
from .fsutil import atomic_write_json
from .layout import HEARTBEAT, LOG, REPORT, RUNS, Layout
from .status import StatusFile
from .ticket import Ticket, load_ticket
from .timeline_ticket import TimelineTicket, render_timeline_ticket
from .train_task import finished_training, training_spec

log = logging.getLogger(__name__)
_PROBE_BYTES = 64 * 1024


class Executor(Protocol):
    mode: str

    def run(self, ticket: Ticket, claim: Claim, stop: threading.Event, progress: ProgressSink) -> Outcome: ...

    def train(
        self, spec: dict[str, Any], resources: dict[str, float] | None, stop: threading.Event, progress: ProgressSink
    ) -> dict[str, Any]: ...

    def state_dirs(self, job_dir: Path) -> list[Path]: ...

    def close(self) -> None: ...


def classify(exc: BaseException) -> str:
    """The cause a wrangler acts on: the ticket's fault, the output (full or unwritable), or ours."""
    kind = getattr(exc, "kind", None)
    if is_no_space(exc):
        return "disk full"
    if isinstance(kind, str):
        return kind
    if isinstance(exc, InputError):
        return "input"
    if isinstance(exc, OutputError | OSError):
        return "output"
    return "internal"


class JobRunner:
    def __init__(self, config: WorkerConfig, layout: Layout, executor: Executor) -> None:
        self.config = config
        self.layout = layout
        self.executor = executor

    def run(self, claim: Claim, stop: threading.Event) -> str:
        """Run the job; returns ``done``, ``failed``, ``stopped`` or ``lost``."""
        job_dir = claim.job_dir
        handler = _attach_job_log(job_dir / LOG, self.config.worker_id)
        status = StatusFile(job_dir, claim.job_id, self.config.worker_id, claim.generation)
        record: dict[str, Any] = {
            "worker": self.config.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "generation": claim.generation,
            "started_at": time.time(),
            "mode": self.executor.mode,
        }
        ticket: Ticket | TimelineTicket | None = None
        heartbeat = Heartbeat(claim, self.config.heartbeat_interval, on_lost=stop.set)
        try:
            with heartbeat:
                log.info("job %s: generation %d on worker %s", claim.job_id, claim.generation, self.config.worker_id)
                status.update(state="validating")
                t0 = time.monotonic()
                try:
                    ticket = load_ticket(job_dir, self.config)
                    record["validate_s"] = round(time.monotonic() - t0, 3)
                    if isinstance(ticket, TimelineTicket):
                        status.update(state="rendering", frames_total=len(ticket.frames), name=ticket.name)
                        outcome = render_timeline_ticket(ticket, self.executor, claim, stop, self._progress(status))
                    elif ticket.finetune is not None:
                        ticket, outcome = self._train_then_render(ticket, claim, stop, status, record)
                    else:
                        outcome = self._render(ticket, claim, stop, status)
                except Exception as exc:  # noqa: BLE001 - every failure of a job is filed, the worker goes on
                    if heartbeat.lost or claim.superseded():
                        return self._lost(claim, record, f"{type(exc).__name__}: {exc}")
                    log.error("job %s failed: %s", claim.job_id, exc, exc_info=classify(exc) == "internal")
                    self._finish_failed(claim, ticket, status, record, exc, heartbeat)
                    return "failed"
                record["render_s"] = round(time.monotonic() - t0 - record["validate_s"] - record.get("train_s", 0), 3)
                if heartbeat.lost or claim.superseded():
                    return self._lost(claim, record, "taken over by another worker")
                if outcome.stopped:
                    self._finish_stopped(claim, status, record, outcome, heartbeat)
                    return "stopped"
                self._finish_done(claim, ticket, status, record, outcome, heartbeat)
                return "done"
        finally:
            _detach_job_log(handler)

    def _render(self, ticket: Ticket, claim: Claim, stop: threading.Event, status: StatusFile) -> Outcome:
        status.update(
            state="rendering",
            frames_total=len(ticket.frames),
            name=ticket.name,
            input=ticket.job.input,
            output=ticket.job.output,
            mode=self.executor.mode,
        )
        log.info("rendering %s -> %s (%d frames)", ticket.job.input, ticket.job.output, len(ticket.frames))
        return self.executor.run(ticket, claim, stop, self._progress(status))

    def _train_then_render(
        self, ticket: Ticket, claim: Claim, stop: threading.Event, status: StatusFile, record: dict[str, Any]
    ) -> tuple[Ticket, Outcome]:
        """The ticket's fine-tuning (unless an earlier attempt finished it), then its render with those weights."""
        stage = ticket.finetune
        assert stage is not None
        trained = self._train(ticket, claim, stop, status, record)
        if trained is None:
            return ticket, Outcome(report={}, stopped=True)
        checkpoint = Path(trained["installed"])
        ticket = dataclasses.replace(
            ticket, checkpoint=checkpoint, job=dataclasses.replace(ticket.job, checkpoint=str(checkpoint))
        )
        outcome = self._render(ticket, claim, stop, status)
        outcome.extra["finetune"] = finetune_report(stage, trained)
        return ticket, outcome

    def _train(
        self, ticket: Ticket, claim: Claim, stop: threading.Event, status: StatusFile, record: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The trained checkpoint, filed into the models dir; None when training was stopped (it starts over)."""
        stage = ticket.finetune
        assert stage is not None and self.config.models_dir is not None  # a ticket with a stage has both
        result = finished_training(claim.job_dir)
        if result is not None:
            record["finetune"] = "kept"
            log.info("training finished in an earlier attempt: %s", result["checkpoint"])
        else:
            status.update(
                state="training", name=ticket.name, input=ticket.job.input, output=ticket.job.output,
                keyframes=format_frames(stage.keyframes), mode=self.executor.mode,
            )  # fmt: skip
            log.info("training on %s with keyframes %s", stage.plate, format_frames(stage.keyframes))
            t0 = time.monotonic()
            spec = training_spec(
                stage.plate, stage.settings.to_dict(), claim.job_dir, stage.trained_name(claim.job_id), claim.generation
            )
            resources = device_resources(stage.settings.device)
            result = self.executor.train(spec, resources, stop, self._training_progress(status))
            record["train_s"] = round(time.monotonic() - t0, 3)
            for message in result.get("report", {}).get("warnings", []):  # from a Dask worker, seen only now
                status.warn(message)
            if result.get("stopped"):
                record["finetune"] = "stopped"
                log.info("training stopped; the next attempt trains again")
                return None
            record["finetune"] = "trained"
        installed = install_trained(Path(result["checkpoint"]), Path(result["sidecar"]), self.config.models_dir)
        return {**result, "installed": str(installed)}

    # ------------------------------------------------------------------ progress

    def _progress(self, status: StatusFile) -> ProgressSink:
        def sink(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == START:
                status.update(
                    frames_total=event.get("total"), resumed_from=event.get("resumed_from"), chunks=event.get("chunks")
                )
                if event.get("resumed_from") is not None:
                    log.info("resuming after frame %s", event["resumed_from"])
            elif kind == PROGRESS:
                fields = {
                    "frames_done": event["done"],
                    "frames_total": event["total"],
                    "fps": event.get("fps"),
                    "eta_s": event.get("eta_s"),
                }
                if "chunks_done" in event:
                    fields["chunks_done"] = event["chunks_done"]
                status.update(force=event["done"] >= event["total"], **fields)
            elif kind == WARNING:  # the engine logs it too (into job.log); status collects it
                status.warn(event["message"])

        return sink

    def _training_progress(self, status: StatusFile) -> ProgressSink:
        """Training's events: its steps and loss in status.json; its start and end are not the render's frames."""

        def sink(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == TRAIN:
                status.update(
                    force=event["iteration"] >= event["total"],
                    train_iteration=event["iteration"],
                    train_total=event["total"],
                    loss=event.get("loss"),
                    eta_s=event.get("eta_s"),
                )
            elif kind == VALIDATION:
                log.info(
                    "held-out keyframe %s: MAD %s before training, %s after",
                    event.get("keyframe"), event.get("mad_before"), event.get("mad_after"),
                )  # fmt: skip
            elif kind == WARNING:
                status.warn(event["message"])

        return sink

    # ------------------------------------------------------------------ endings

    def _runs(self, claim: Claim, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Append this attempt to the job's runs and return them all: the report adds up every attempt."""
        record["ended_at"] = time.time()
        try:
            with open(claim.job_dir / RUNS, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, default=str) + "\n")
            return read_runs(claim.job_dir)
        except (OSError, ValueError):
            return [record]

    def _lost(self, claim: Claim, record: dict[str, Any], why: str) -> str:
        log.warning("job %s: %s; leaving it to its new owner", claim.job_id, why)
        record.update(outcome="lost", reason=why)
        if claim.job_dir.is_dir():
            self._runs(claim, record)
        return "lost"

    def _finish_stopped(
        self, claim: Claim, status: StatusFile, record: dict[str, Any], outcome: Outcome, heartbeat: Heartbeat
    ) -> None:
        record.update(
            outcome="stopped",
            resumed_from=outcome.report.get("resumed_from"),
            frames_written=format_frames(outcome.frames_written, limit=1000),
        )
        self._runs(claim, record)
        status.update(state="stopped", eta_s=None)
        log.info(
            "job %s stopped after %d frames this run; it resumes from its last snapshot",
            claim.job_id,
            len(outcome.frames_written),
        )
        heartbeat.release()

    def _finish_done(
        self,
        claim: Claim,
        ticket: Ticket,
        status: StatusFile,
        record: dict[str, Any],
        outcome: Outcome,
        heartbeat: Heartbeat,
    ) -> None:
        remove_temporary_frames(ticket)
        for folder in self.executor.state_dirs(claim.job_dir):
            remove_snapshots(folder)
        record.update(
            outcome="done",
            resumed_from=outcome.report.get("resumed_from"),
            frames_written=format_frames(outcome.frames_written, limit=1000),
        )
        runs = self._runs(claim, record)
        report = self._report(claim, ticket, status, runs, outcome, "done")
        log.info("job %s done: %d frames in %.1f s", claim.job_id, len(ticket.frames), report["timings"]["total_s"])
        self._file(claim, status, report, heartbeat, self.layout.done)

    def _finish_failed(
        self,
        claim: Claim,
        ticket: Ticket | None,
        status: StatusFile,
        record: dict[str, Any],
        exc: BaseException,
        heartbeat: Heartbeat,
    ) -> None:
        reason, cause = str(exc), classify(exc)
        if ticket is not None:
            remove_temporary_frames(ticket)
            if cause == "output":
                out = ticket.out_dir if isinstance(ticket, TimelineTicket) else Path(ticket.job.output).parent
                found = diagnose_output(out)
                if found is not None:
                    cause, detail = found
                    reason = f"{reason} [{detail}]"
        record.update(outcome="failed", reason=reason, cause=cause)
        runs = self._runs(claim, record)
        report = self._report(claim, ticket, status, runs, None, "failed")
        report.update(reason=reason, cause=cause, error_type=type(exc).__name__)
        self._file(claim, status, report, heartbeat, self.layout.failed)

    def _report(
        self,
        claim: Claim,
        ticket: Ticket | None,
        status: StatusFile,
        runs: list[dict[str, Any]],
        outcome: Outcome | None,
        state: str,
    ) -> dict[str, Any]:
        first = min((r.get("started_at", time.time()) for r in runs), default=time.time())
        now = time.time()
        render_s = sum(r.get("render_s", 0) or 0 for r in runs)
        frames_total = len(ticket.frames) if ticket else None
        report: dict[str, Any] = {
            "job_id": claim.job_id,
            "state": state,
            "worker": self.config.worker_id,
            "mode": self.executor.mode,
            "frames_total": frames_total,
            "timings": {
                "first_started_at": first,
                "finished_at": now,
                "total_s": round(now - first, 3),
                "render_s": round(render_s, 3),
                "fps": round(frames_total / render_s, 3) if frames_total and render_s and state == "done" else None,
            },
            "warnings": list(status.data.get("warnings", [])),
            "runs": runs,
        }
        if isinstance(ticket, TimelineTicket):
            report.update(ticket.report_fields())
        elif ticket is not None:
            job = ticket.job
            report["job"] = job.to_dict()
            report["outputs"] = {
                "frames": format_frames(ticket.frames, limit=1000),
                "count": len(ticket.frames),
                **job.outputs(),
                "first": format_frame(job.output, ticket.frames[0]),
                "last": format_frame(job.output, ticket.frames[-1]),
            }
        if outcome is not None:
            report["render"] = {k: v for k, v in outcome.report.items() if k != "outputs"}
            report["warnings"] += [w for w in outcome.report.get("warnings", []) if w not in report["warnings"]]
            report.update(outcome.extra)
        return report

    def _file(self, claim: Claim, status: StatusFile, report: dict[str, Any], heartbeat: Heartbeat, area: Path) -> None:
        """Write the report, then move the whole job folder in one rename (unless we lost it meanwhile)."""
        heartbeat.stop()
        if claim.superseded():
            log.warning("job %s was taken over while finishing; leaving it", claim.job_id)
            return
        self._write_report(claim, report)
        (claim.job_dir / HEARTBEAT).unlink(missing_ok=True)  # a filed job has no owner to watch
        if report["state"] == "done":
            status.update(frames_done=report["frames_total"], fps=report["timings"]["fps"], force=False)
        status.update(state=report["state"], reason=report.get("reason"), eta_s=None)
        dest = area / claim.job_id
        if dest.exists():
            dest = area / f"{claim.job_id}-{int(time.time())}"
        os.rename(claim.job_dir, dest)
        log.info("job %s -> %s/", claim.job_id, area.name)

    def _write_report(self, claim: Claim, report: dict[str, Any]) -> None:
        """On a full watch root the job's own snapshots (no use once it is filed) make room for its report.

        Raises OutputError when even then it cannot be written: the job then stays in ``active/``, and
        is taken up again once its heartbeat is stale and the disk has room.
        """
        path = claim.job_dir / REPORT
        try:
            atomic_write_json(path, report)
            return
        except OSError as exc:
            if not is_no_space(exc):
                raise write_error(path, "cannot write the job's report", exc) from exc
        for folder in self.executor.state_dirs(claim.job_dir):
            remove_snapshots(folder)
        try:
            atomic_write_json(path, report)
        except OSError as exc:
            raise write_error(path, "cannot write the job's report", exc) from exc


def remove_snapshots(state: Path) -> None:
    """A finished job needs no resume points (they are large at 4K); its logs and markers stay."""
    for snapshot in state.rglob("snapshot.*.pt"):
        snapshot.unlink(missing_ok=True)
    for folder in sorted((p for p in state.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def remove_temporary_frames(ticket: Ticket | TimelineTicket) -> None:
    """Remove this job's temporary frame files left by a killed writer: no half frame outlives a job."""
    if isinstance(ticket, TimelineTicket):
        for _, clip in ticket.clips:
            remove_temporary_frames(clip)
        return
    wanted: dict[str, set[str]] = defaultdict(set)
    for pattern in ticket.job.outputs().values():
        for frame in ticket.frames:
            folder, base = os.path.split(format_frame(pattern, frame))
            wanted[folder].add(base)
    for folder, bases in wanted.items():
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            temporary = parse_temporary_frame_name(name)  # (the frame it stands for, its writer's pid)
            if temporary is not None and temporary[0] in bases:
                try:
                    os.unlink(os.path.join(folder, name))
                    log.info("removed leftover temporary frame %s", name)
                except OSError:
                    pass


def diagnose_output(folder: Path) -> tuple[str, str] | None:
    """Why an output could not be written, when the message does not say (OpenImageIO drops errno).

    A probe write gets the operating system's own error; a file system with less than two frames'
    (or 1 MiB) space left counts as full even when the small probe still fits. Never raises: it only
    adds to a failure being filed (on a read-only mount even removing the absent probe fails).
    """
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    probe = folder / f".rvm-worker-probe.{os.getpid()}.tmp"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * _PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "disk full", str(disk_full_detail(folder, code=exc.errno))
        return "output", f"output folder not writable: {exc.strerror or exc}"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    try:
        frames = [p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix == ".exr"]
    except OSError:
        frames = []
    detail = disk_full_detail(folder, needed=max(2 * max(frames, default=0), 1 << 20))
    return ("disk full", detail) if detail else None


class _JobLogHandler(logging.FileHandler):
    """``job.log``: advisory like ``status.json``, so a full or flaky share does not print a traceback per line."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not isinstance(sys.exc_info()[1], OSError):
            super().handleError(record)


def _attach_job_log(path: Path, worker_id: str) -> logging.Handler | None:
    try:
        handler = _JobLogHandler(path, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(f"%(asctime)s {worker_id} %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler


def _detach_job_log(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()


def read_runs(job_dir: Path) -> list[dict[str, Any]]:
    """The attempts recorded for a job, oldest first (a line that is not an object is skipped)."""
    path = job_dir / RUNS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        data = json.loads(line) if line.strip() else None
        if isinstance(data, dict):
            out.append(data)
    return out
