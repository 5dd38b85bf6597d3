"""Render a job in this process: the model stays loaded between jobs, and state snapshots go in the job folder.

In-process rather than a ``rvm-vfx render`` subprocess: loading weights and converting the network
costs more than a short job, and a crash of the whole worker is already survivable (the job's
heartbeat goes stale, a restart resumes from the last snapshot).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .claim import Claim
from .layout import STATE
from .ticket import Ticket
from .train_task import train

ProgressSink = Callable[[dict[str, Any]], None]


@dataclass
class Outcome:
    """What an executor hands back: the engine's report (as a dict) plus whether it stopped early."""

    report: dict[str, Any]
    stopped: bool
    frames_written: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class LocalExecutor:
    mode = "local"

    def run(self, ticket: Ticket, claim: Claim, stop: threading.Event, progress: ProgressSink) -> Outcome:
        from rvm_vfx.render import cached_model, render

        model, sha256 = cached_model(str(ticket.checkpoint))
        report = render(
            ticket.job,
            model=model,
            checkpoint_sha256=sha256,
            progress=progress,
            stop=stop,
            state_dir=claim.job_dir / STATE,
        )
        return Outcome(report=report.to_dict(), stopped=report.stopped, frames_written=list(report.frames_written))

    def train(self, spec: dict[str, Any], resources: dict[str, float] | None, stop: threading.Event,
              progress: ProgressSink) -> dict[str, Any]:  # fmt: skip
        """A ticket's fine-tuning, in this process (``resources`` are the cluster's business)."""
        return train(spec, stop, progress)

    def state_dirs(self, job_dir: Path) -> list[Path]:
        return [job_dir / STATE]

    def close(self) -> None:
        pass
