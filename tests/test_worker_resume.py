"""Crash safety with real processes: kill -9 mid-render, SIGTERM mid-render, and restarts that resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from render_worker.runner import read_runs

from .test_worker_helpers import (
    WorkerProcess,
    drop_ticket,
    farm_args,
    jobs_in,
    make_models_dir,
    make_plate,
    read_alpha,
    reference_render,
    status_of,
    wait_for,
    wait_for_job,
)

FRAMES = 24
SNAPSHOT_EVERY = 4


def _frame_files(out: Path) -> dict[int, tuple[int, int]]:
    """frame -> (inode, mtime_ns): a frame rewritten by a later run gets a new inode (atomic rename)."""
    found = {}
    for path in out.glob("m.*.exr"):
        frame = int(path.name.split(".")[1])
        st = path.stat()
        found[frame] = (st.st_ino, st.st_mtime_ns)
    return found


def _on_disk(out: Path, frame: int, job_dir: Path) -> bool:
    """Frame written (by this run); fails at once if the job already finished, i.e. the moment was missed."""
    if not job_dir.is_dir():
        raise AssertionError(f"the job finished before frame {frame} could be caught")
    return (out / "resume" / f"m.{frame}.exr").exists()


def _snapshot_frames(job_dir: Path) -> list[int]:
    names = [p.name for p in (job_dir / "state").glob("snapshot.*.pt")]
    return sorted(1001 + int(re.match(r"snapshot\.(\d+)\.pt", n).group(1)) for n in names)


def test_kill9_then_sigterm_then_restart_gives_the_uninterrupted_render(tmp_path: Path) -> None:
    plates, out, root = tmp_path / "plates", tmp_path / "out", tmp_path / "root"
    pattern = make_plate(plates / "shot", FRAMES, 160, 112)  # big enough that SIGTERM lands mid-render
    models = make_models_dir(tmp_path / "models")
    args = farm_args(out, plates, models)
    settings = {"--snapshot-every": SNAPSHOT_EVERY}
    figures: dict[str, object] = {}

    # Run 1: killed with SIGKILL once frame 1009 is on disk (frames and snapshots are watched, not the clock).
    first = WorkerProcess(root, "w-first", *args, settings=settings)
    first.wait_ready()
    drop_ticket(
        root,
        "resume",
        {"input": "shot/plate.####.png", "output": "resume/m.####.exr", "checkpoint": "rvm", "device": "cpu"},
    )
    job_dir = wait_for(lambda: jobs_in(root, "active", "resume-"), "the job to be claimed", procs=(first,))[0]
    wait_for(lambda: _on_disk(out, 1009, job_dir), "frame 1009", procs=(first,))
    first.kill9()
    at_kill = _frame_files(out / "resume")
    snapshots = _snapshot_frames(job_dir)
    figures["killed_with_frames"] = len(at_kill)
    figures["snapshot_at_kill"] = snapshots[-1]
    assert snapshots and len(at_kill) >= 9 and len(at_kill) < FRAMES

    # Run 2: a new worker (same machine, owner's pid gone: taken over at once) is SIGTERMed mid-render.
    second = WorkerProcess(root, "w-second", *args, settings=settings)
    wait_for(lambda: _on_disk(out, 1016, job_dir), "frame 1016", procs=(second,))
    assert second.terminate() == 0  # a clean exit: the frame in flight finished, snapshot written
    assert job_dir.is_dir(), "a stopped job stays in active/"
    status = status_of(job_dir)
    assert status["state"] == "stopped" and status["worker"] == "w-second"
    runs = read_runs(job_dir)
    assert [r["outcome"] for r in runs] == ["stopped"]  # the killed run never got to write its line
    second_run = runs[0]
    # Resumed from the newest snapshot that existed at the kill: nothing before it was redone.
    assert second_run["resumed_from"] == snapshots[-1]
    at_term = _frame_files(out / "resume")
    for frame in range(1001, snapshots[-1] + 1):
        assert at_term[frame] == at_kill[frame], f"frame {frame} was rendered again"
    stopped_at = max(at_term)
    assert stopped_at < 1000 + FRAMES, "the render finished before SIGTERM reached it"
    figures["redone_after_kill"] = sorted(f for f in at_kill if f > snapshots[-1])
    figures["stopped_after"] = stopped_at
    assert _snapshot_frames(job_dir)[-1] == stopped_at  # SIGTERM snapshots at the last written frame

    # Run 3: finishes from where SIGTERM left it, redoing nothing.
    third = WorkerProcess(root, "w-third", *args, settings=settings)
    job = wait_for_job(root, "resume", procs=(third,))
    third.stop()
    assert job.parent.name == "done", (job / "report.json").read_text()
    report = json.loads((job / "report.json").read_text())
    assert [r["outcome"] for r in report["runs"]] == ["stopped", "done"]
    assert report["runs"][1]["resumed_from"] == stopped_at
    assert report["runs"][1]["frames_written"] == f"{stopped_at + 1}-{1000 + FRAMES}"
    final = _frame_files(out / "resume")
    assert sorted(final) == list(range(1001, 1001 + FRAMES))
    for frame in range(1001, stopped_at + 1):
        assert final[frame] == at_term[frame], f"frame {frame} was rendered again"
    assert not list((out / "resume").glob(".*")), "a temporary frame was left behind"

    reference = reference_render(pattern, tmp_path / "reference")
    worst = 0.0
    for frame in range(1001, 1001 + FRAMES):
        ours, theirs = read_alpha(out / "resume" / f"m.{frame}.exr"), read_alpha(reference / f"m.{frame}.exr")
        worst = max(worst, float(np.abs(ours - theirs).max()))
    figures["max_alpha_diff_vs_uninterrupted"] = worst
    print("resume figures:", figures)
    assert worst == 0.0
