"""The watch loop: wake on watchdog events (or the periodic rescan), claim the best job, run it, repeat.

One job at a time per worker process: a farm node runs one worker per GPU, and with Dask one
watcher feeds the whole cluster. The loop only claims and files tickets; rendering is the
executor's (in this process, or Dask's cluster).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

from rvm_vfx.errors import OutputError

from .claim import Claim, claim_item, try_takeover
from .config import WorkerConfig
from .executor_local import LocalExecutor
from .fsutil import atomic_write_json
from .intake import Intake, IntakeEvents
from .layout import Layout
from .runner import Executor, JobRunner

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.layout = Layout(config.root)
        self.intake = Intake(self.layout.incoming, config.settle)
        self.executor = self._make_executor()
        self.runner = JobRunner(config, self.layout, self.executor)
        self.stopping = threading.Event()
        self._job_stop: threading.Event | None = None
        self._next_takeover_scan = 0.0
        self.started_at = time.time()

    def _make_executor(self) -> Executor:
        if self.config.dask_scheduler:
            from .executor_dask import DaskExecutor

            return DaskExecutor(
                self.config.dask_scheduler, self.config.chunk_size, self.config.preroll, self.config.chunk_retries
            )
        return LocalExecutor()

    # ------------------------------------------------------------------ control

    def request_stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: finish the frame in flight, snapshot, leave the job resumable, exit."""
        if not self.stopping.is_set():
            log.info("stop requested")
        self.stopping.set()
        if self._job_stop is not None:
            self._job_stop.set()
        self.intake.wake.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():

            def handler(signum: int, _frame: FrameType | None) -> None:
                self.request_stop()

            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)

    def announce(self, state: str, job: str | None = None) -> None:
        """``workers/<id>.json``: who is on the farm and what it is doing (for ``rvm-worker status``)."""
        data = {
            "worker": self.config.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": state,
            "job": job,
            "mode": self.executor.mode,
            "started_at": self.started_at,
            "updated_at": time.time(),
        }
        try:
            atomic_write_json(self.layout.workers / f"{self.config.worker_id}.json", data)
        except OSError as exc:
            log.warning("cannot write worker presence file: %s", exc)

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        from watchdog.observers import Observer

        self.layout.ensure()
        self.config.output_root.mkdir(parents=True, exist_ok=True)
        if self.config.torch_threads and self.executor.mode == "local":
            import torch

            torch.set_num_threads(self.config.torch_threads)
        self._install_signals()
        if self.executor.mode == "dask":
            try:  # fail now, before claiming anything, rather than fail every job
                self.executor.client()  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - any connection failure ends the worker with its message
                log.error("cannot reach the Dask scheduler %s: %s", self.config.dask_scheduler, exc)
                return 1
        observer = Observer()
        observer.schedule(IntakeEvents(self.intake), str(self.layout.incoming), recursive=True)
        observer.start()
        log.info("worker %s watching %s (%s mode)", self.config.worker_id, self.layout.root, self.executor.mode)
        self.announce("idle")
        try:
            while not self.stopping.is_set():
                self.intake.wake.clear()
                if self.step():
                    continue
                self.intake.wake.wait(self._tick())
        finally:
            observer.stop()
            observer.join()
            self.executor.close()
            self.announce("stopped")
            log.info("worker %s stopped", self.config.worker_id)
        return 0

    def _tick(self) -> float:
        """How long to sleep: short while something settles, the rescan interval otherwise."""
        if self.intake.pending:
            return min(self.config.rescan_interval, max(0.05, self.config.settle / 4))
        return self.config.rescan_interval

    def step(self) -> bool:
        """Claim and run one job; False when there was nothing to do."""
        claim = self.next_claim()
        if claim is None:
            return False
        self._job_stop = threading.Event()
        if self.stopping.is_set():
            self._job_stop.set()
        self.announce("busy", claim.job_id)
        try:
            self.runner.run(claim, self._job_stop)
        except OutputError as exc:  # e.g. a full watch root: the job stays in active/, resumable, the worker goes on
            log.error("job %s could not be filed; it stays in active/ to be taken up again: %s", claim.job_id, exc)
        except Exception:  # noqa: BLE001 - e.g. failed/ unwritable: the job stays in active/, the worker goes on
            log.exception("job %s could not be filed", claim.job_id)
        finally:
            self._job_stop = None
            self.announce("stopped" if self.stopping.is_set() else "idle")
        return True

    def next_claim(self) -> Claim | None:
        """Abandoned jobs first (they were claimed earlier), then complete new items, best first."""
        if self.stopping.is_set():
            return None
        now = time.monotonic()
        if now >= self._next_takeover_scan:
            self._next_takeover_scan = now + min(self.config.rescan_interval, self.config.heartbeat_timeout / 2)
            for job_dir in sorted(self.layout.active.iterdir()) if self.layout.active.is_dir() else []:
                if job_dir.is_dir() and not job_dir.name.startswith("."):
                    try:
                        claim = try_takeover(job_dir, self.config.worker_id, self.config.heartbeat_timeout)
                    except (OSError, OutputError) as exc:  # a full watch root: try again at the next scan
                        log.error("cannot take over %s: %s", job_dir.name, exc)
                        continue
                    if claim is not None:
                        return claim
        for ready in self.intake.ready():
            try:
                claim = claim_item(ready.path, self.layout.active, self.config.worker_id)
            except (OSError, OutputError) as exc:
                log.error("cannot claim %s: %s", ready.path.name, exc)
                continue
            self.intake.forget(ready.path)
            if claim is not None:
                return claim
        return None
