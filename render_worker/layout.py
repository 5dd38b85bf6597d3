"""The folders under a watch root, and the files inside one job's folder.

Everything a worker knows about a job lives in the job's folder, which moves as a whole
(``active/`` -> ``done/`` or ``failed/``) by one rename. Another worker, ``rvm-worker status`` or a
person with a file browser can read the state of the farm from the tree alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Files inside a job folder.
TICKET = "ticket.json"  # a dropped ticket, renamed here on claim
DROP = "drop"  # a dropped folder of frames, renamed here on claim
DROP_TICKET = "job.json"  # optional ticket inside a dropped folder
STATUS = "status.json"
HEARTBEAT = "heartbeat.json"
REPORT = "report.json"
RUNS = "runs.jsonl"  # one line per attempt: who ran it, from where it resumed, what it wrote
LOG = "job.log"
STATE = "state"  # engine snapshots (local) or one folder per chunk (Dask)
STOP_PREFIX = "stop."  # stop.<generation>: asks that generation's Dask chunks to stop
CLAIM_PREFIX = "claim."  # claim.<generation>: created exclusively by the job's owner of that generation


@dataclass(frozen=True)
class Layout:
    """``ROOT/{incoming,active,done,failed,logs,workers}``."""

    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def active(self) -> Path:
        return self.root / "active"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    def ensure(self) -> None:
        for folder in (self.incoming, self.active, self.done, self.failed, self.logs, self.workers):
            folder.mkdir(parents=True, exist_ok=True)

    def areas(self) -> dict[str, Path]:
        return {"active": self.active, "done": self.done, "failed": self.failed}
