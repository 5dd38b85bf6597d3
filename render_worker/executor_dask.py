"""Render a job as pre-rolled chunks on a Dask distributed cluster.

Dask is the scheduler: it places chunks on workers (a ``GPU`` resource when the job asks for CUDA),
reruns a chunk whose worker died, and retries one that raised (``retries``). The watcher only plans
the chunks, submits them, turns their progress files into the job's status and collects the result.
Chunks write straight into the shared output; each resumes from its own snapshots, so a retried
or resubmitted chunk redoes at most the frames since its last snapshot. A chunk that finished leaves
``done.json`` and is not submitted again when the job is resumed.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from rvm_vfx.errors import InputError, OutputError, RvmError
from rvm_vfx.spec.job import parse_cuts
from rvm_vfx.spec.progress import PROGRESS as PROGRESS_EVENT
from rvm_vfx.spec.progress import START, WARNING, event

from .chunk_task import DONE, PROGRESS, render_chunk
from .chunks import Chunk, chunk_job, chunk_resources, plan_chunks
from .claim import Claim
from .executor_local import Outcome, ProgressSink
from .fsutil import atomic_write_json, read_json_quiet
from .layout import STATE, STOP_PREFIX
from .ticket import Ticket
from .train_task import PROGRESS as TRAIN_PROGRESS
from .train_task import train_task

log = logging.getLogger(__name__)
POLL_S = 0.25
STOP_GRACE_S = 120.0  # how long SIGTERM waits for chunks to finish their frame and snapshot


class ChunkError(RvmError):
    """A chunk failed after Dask's retries; ``kind`` keeps whether it was the ticket's fault."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _kind(error: BaseException) -> str:
    """Whether a task's failure was the ticket's fault, the output's, or ours (the job's failure cause)."""
    return "input" if isinstance(error, InputError) else "output" if isinstance(error, OutputError) else "internal"


class DaskExecutor:
    mode = "dask"

    def __init__(self, address: str, chunk_size: int, preroll: int, retries: int) -> None:
        self.address = address
        self.chunk_size = chunk_size
        self.preroll = preroll
        self.retries = retries
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from distributed import Client

            self._client = Client(self.address, timeout="30s", set_as_default=False)
            log.info("connected to Dask scheduler %s", self.address)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def state_dirs(self, job_dir: Path) -> list[Path]:
        return [job_dir / STATE]

    # ------------------------------------------------------------------ a ticket's fine-tuning

    def train(self, spec: dict[str, Any], resources: dict[str, float] | None, stop: threading.Event,
              progress: ProgressSink) -> dict[str, Any]:  # fmt: skip
        """The training as one task on one Dask worker (a ``GPU`` slot for CUDA); Dask reruns it where its
        worker died, and ``retries`` times where it raised. SIGTERM asks it to stop through the stop file."""
        job_dir = Path(spec["job_dir"])
        name = f"rvm-{job_dir.name}-g{spec['generation']}-finetune"
        future = self.client().submit(train_task, spec, key=name, retries=self.retries, resources=resources, pure=False)
        progress_path = Path(spec["out"]).parent / TRAIN_PROGRESS
        shown: Any = None
        deadline: float | None = None  # once stopped: how long the task may take to write its best checkpoint
        while not future.done():
            current = read_json_quiet(progress_path)
            if isinstance(current, dict) and current != shown:
                shown = current
                progress({k: v for k, v in current.items() if k not in ("pid", "updated_at")})
            if deadline is None and stop.is_set():
                deadline = time.monotonic() + STOP_GRACE_S
                atomic_write_json(job_dir / f"{STOP_PREFIX}{spec['generation']}", {"time": time.time()})
            if deadline is not None and time.monotonic() > deadline:
                future.cancel()
                return {"stopped": True}
            time.sleep(POLL_S)
        if future.status == "finished":
            return future.result()
        error = future.exception() if future.status == "error" else RuntimeError(f"training {future.status}")
        message = f"training failed after {self.retries} retries: {type(error).__name__}: {error}"
        raise ChunkError(message, _kind(error)) from error

    # ------------------------------------------------------------------ one job

    def run(self, ticket: Ticket, claim: Claim, stop: threading.Event, progress: ProgressSink) -> Outcome:
        job = ticket.job
        chunks = plan_chunks(
            ticket.frames,
            self.chunk_size,
            self.preroll,
            job.preroll,
            parse_cuts(job.cuts) or (),
            job.postroll,
            job.passes == "bidirectional",
        )
        state = claim.job_dir / STATE
        finished: dict[int, dict[str, Any]] = {}
        for chunk in chunks:
            result = read_json_quiet(state / chunk.name / DONE)
            if isinstance(result, dict):
                finished[chunk.index] = result
        total = len(ticket.frames)
        progress(event(START, total=total, chunks=len(chunks), output=job.output))
        log.info(
            "%d chunks of up to %d frames, pre-roll %d; %d already done",
            len(chunks),
            self.chunk_size,
            self.preroll,
            len(finished),
        )
        client = self.client()
        futures: dict[Any, Chunk] = {}
        for chunk in chunks:
            if chunk.index in finished:
                continue
            spec = {
                "job": chunk_job(job, chunk).to_dict(),
                "checkpoint": str(ticket.checkpoint),
                "state_dir": str(state / chunk.name),
                "job_dir": str(claim.job_dir),
                "generation": claim.generation,
                "chunk": chunk.index,
            }
            future = client.submit(
                render_chunk,
                spec,
                key=f"rvm-{claim.job_id}-g{claim.generation}-{chunk.name}",
                retries=self.retries,
                resources=chunk_resources(job),
                pure=False,
            )
            futures[future] = chunk
        started = time.monotonic()
        done_before = sum(len(r.get("frames", [])) for r in finished.values())
        stopped = False
        while futures:
            for future in [f for f in futures if f.done()]:
                chunk = futures.pop(future)
                finished[chunk.index] = self._collect(future, chunk, claim, futures)
                for message in finished[chunk.index].get("report", {}).get("warnings", []):
                    progress(event(WARNING, message=message))
            self._report_progress(chunks, finished, state, total, done_before, started, progress)
            if stop.is_set() and futures:
                stopped = True
                self._stop_chunks(claim, futures, finished)
                break
            stop.wait(POLL_S)
        self._report_progress(chunks, finished, state, total, done_before, started, progress)
        stopped = stopped or any(r.get("stopped") for r in finished.values())
        return self._outcome(chunks, finished, total, started, stopped)

    def _collect(self, future: Any, chunk: Chunk, claim: Claim, others: dict[Any, Chunk]) -> dict[str, Any]:
        if future.status == "finished":
            return future.result()
        error = future.exception() if future.status == "error" else RuntimeError(f"chunk {future.status}")
        # One chunk failed for good: ask the others to stop at their next frame, then fail the job.
        self._write_stop(claim)
        for other in others:
            other.cancel()
        where = f"chunk {chunk.index} (frames {chunk.frames_text})"
        message = f"{where} failed after {self.retries} retries: {type(error).__name__}: {error}"
        raise ChunkError(message, _kind(error)) from error

    def _write_stop(self, claim: Claim) -> None:
        try:
            atomic_write_json(claim.job_dir / f"{STOP_PREFIX}{claim.generation}", {"time": time.time()})
        except OSError as exc:
            log.warning("could not ask chunks to stop: %s", exc)

    def _stop_chunks(self, claim: Claim, futures: dict[Any, Chunk], finished: dict[int, dict[str, Any]]) -> None:
        """SIGTERM: running chunks finish their frame, snapshot and return; queued ones return at once."""
        self._write_stop(claim)
        deadline = time.monotonic() + STOP_GRACE_S
        while futures and time.monotonic() < deadline:
            for future in [f for f in futures if f.done()]:
                chunk = futures.pop(future)
                if future.status == "finished":
                    finished[chunk.index] = future.result()
            time.sleep(POLL_S)
        for future in futures:
            future.cancel()

    def _report_progress(
        self,
        chunks: list[Chunk],
        finished: dict[int, dict[str, Any]],
        state: Path,
        total: int,
        done_before: int,
        started: float,
        progress: ProgressSink,
    ) -> None:
        done = 0
        for chunk in chunks:
            if chunk.index in finished and not finished[chunk.index].get("stopped"):
                done += len(chunk.frames)
                continue
            current = read_json_quiet(state / chunk.name / PROGRESS)
            if isinstance(current, dict) and isinstance(current.get("done"), int):
                done += current["done"]
        elapsed = time.monotonic() - started
        rate = max(0, done - done_before) / elapsed if elapsed > 0 else 0.0
        eta = round((total - done) / rate, 1) if rate > 0 else None
        chunks_done = sum(1 for r in finished.values() if not r.get("stopped"))
        progress(event(PROGRESS_EVENT, done=done, total=total, fps=round(rate, 3), eta_s=eta, chunks_done=chunks_done))

    def _outcome(
        self, chunks: list[Chunk], finished: dict[int, dict[str, Any]], total: int, started: float, stopped: bool
    ) -> Outcome:
        frames: list[int] = []
        outputs: list[str] = []
        warnings: list[str] = []
        cuts: list[int] = []
        per_chunk = []
        for chunk in chunks:
            result = finished.get(chunk.index)
            if result is None:
                continue
            report = result.get("report", {})
            frames += result.get("frames", [])
            outputs += report.get("outputs", [])
            warnings += [w for w in report.get("warnings", []) if w not in warnings]
            cuts += report.get("cuts", [])
            per_chunk.append(
                {
                    "chunk": chunk.index,
                    "frames": chunk.frames_text,
                    "preroll": chunk.preroll,
                    "postroll": chunk.postroll,
                    "worker": result.get("worker"),
                    "host": result.get("host"),
                    "resumed_from": report.get("resumed_from"),
                    "elapsed_s": report.get("elapsed_s"),
                    "stopped": result.get("stopped", False),
                }
            )
        elapsed = time.monotonic() - started
        report = {
            "total": total,
            "done": len(set(frames)),
            "outputs": outputs,
            "warnings": warnings,
            "elapsed_s": round(elapsed, 3),
            "stopped": stopped,
            "cuts": sorted(set(cuts)),
        }
        return Outcome(report=report, stopped=stopped, frames_written=sorted(set(frames)), extra={"chunks": per_chunk})
