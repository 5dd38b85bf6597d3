"""``status.json`` per job, kept current while it renders, and ``rvm-worker status`` that reads them.

Status lives in a file, not in a server, so that it survives the worker, works across machines on
shared storage, and can be read by a wrangler's script or a file browser.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_json, is_temporary_name, read_json_quiet
from .layout import HEARTBEAT, REPORT, STATUS, Layout

MIN_INTERVAL = 0.25  # progress may come every few milliseconds on a GPU; the file need not


class StatusFile:
    """The job's ``status.json``: state changes are written at once, progress at most 4 times a second."""

    def __init__(self, job_dir: Path, job_id: str, worker: str, generation: int) -> None:
        self.path = job_dir / STATUS
        self._lock = threading.Lock()
        self._last_write = 0.0
        previous = read_json_quiet(self.path)
        self.data: dict[str, Any] = {
            "job_id": job_id,
            "state": "claimed",
            "worker": worker,
            "generation": generation,
            "frames_done": 0,
            "frames_total": None,
            "fps": None,
            "eta_s": None,
            "warnings": list(previous.get("warnings", [])) if isinstance(previous, dict) else [],
            "started_at": time.time(),
        }

    def update(self, force: bool = True, **fields: Any) -> None:
        with self._lock:
            self.data.update(fields)
            now = time.monotonic()
            if not force and now - self._last_write < MIN_INTERVAL:
                return
            self._last_write = now
            self.data["updated_at"] = time.time()
            snapshot = dict(self.data)
            try:
                atomic_write_json(self.path, snapshot)
            except OSError:
                pass  # status is advisory; a full or flaky share must not fail the render

    def warn(self, message: str) -> None:
        with self._lock:
            if message in self.data["warnings"]:
                return
            self.data["warnings"].append(message)
        self.update()


# --------------------------------------------------------------------------- reading (rvm-worker status)


def collect(layout: Layout) -> list[dict[str, Any]]:
    """One row per job in the tree: incoming items, then active, done and failed jobs."""
    rows: list[dict[str, Any]] = []
    if layout.incoming.is_dir():
        for item in sorted(layout.incoming.iterdir()):
            if is_temporary_name(item.name):
                continue
            rows.append({"area": "incoming", "job_id": item.name, "state": "waiting"})
    now = time.time()
    for area, folder in layout.areas().items():
        if not folder.is_dir():
            continue
        for job_dir in sorted(folder.iterdir()):
            if not job_dir.is_dir():
                continue
            status = read_json_quiet(job_dir / STATUS) or {}
            row: dict[str, Any] = {"area": area, "job_id": job_dir.name, **status}
            report = read_json_quiet(job_dir / REPORT)
            if isinstance(report, dict):
                row.setdefault("reason", report.get("reason"))
            beat = job_dir / HEARTBEAT
            if area == "active" and beat.exists():
                row["heartbeat_age_s"] = round(now - beat.stat().st_mtime, 1)
            rows.append(row)
    return rows


def workers(layout: Layout) -> list[dict[str, Any]]:
    if not layout.workers.is_dir():
        return []
    found = [read_json_quiet(p) for p in sorted(layout.workers.glob("*.json"))]
    return [w for w in found if isinstance(w, dict)]


def format_table(rows: list[dict[str, Any]], worker_rows: list[dict[str, Any]]) -> str:
    """A plain table for a terminal: job, state, frames, speed, time left, worker, note."""
    lines = [f"{'JOB':<44} {'STATE':<9} {'FRAMES':>11} {'FPS':>6} {'ETA':>7}  {'WORKER':<20} NOTE"]
    for row in rows:
        total = row.get("frames_total")
        frames = f"{row.get('frames_done', 0)}/{total}" if total else "-"
        fps = f"{row['fps']:.2f}" if isinstance(row.get("fps"), (int, float)) else "-"
        eta = f"{row['eta_s']:.0f}s" if isinstance(row.get("eta_s"), (int, float)) else "-"
        note = row.get("reason") or ""
        if not note and row.get("heartbeat_age_s") is not None and row.get("state") not in ("done", "failed"):
            note = f"heartbeat {row['heartbeat_age_s']}s ago"
        if row.get("warnings"):
            note = (note + "; " if note else "") + f"{len(row['warnings'])} warning(s)"
        state = row.get("state", "?") if row["area"] != "incoming" else "waiting"
        worker = str(row.get("worker", "-"))[:20]
        lines.append(f"{row['job_id'][:44]:<44} {state:<9} {frames:>11} {fps:>6} {eta:>7}  {worker:<20} {note}")
    if worker_rows:
        lines.append("")
        lines.append(f"{'WORKER':<32} {'STATE':<8} JOB")
        for w in worker_rows:
            lines.append(f"{str(w.get('worker'))[:32]:<32} {str(w.get('state')):<8} {w.get('job') or ''}")
    return "\n".join(lines)
