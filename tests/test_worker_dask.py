"""The watcher on a Dask LocalCluster (2 worker processes, 127.0.0.1 only): chunks, seams, a killed worker."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from render_worker.chunks import plan_chunks

from .dask_cluster import local_cluster
from .test_worker_helpers import (
    WorkerProcess,
    drop_ticket,
    farm_args,
    jobs_in,
    make_models_dir,
    make_plate,
    read_alpha,
    reference_render,
    wait_for,
    wait_for_job,
)

FRAMES, CHUNK, PREROLL = 40, 10, 15
# Loose absolute bounds on top of the per-plate one (the engine's own pre-roll figure): the render
# issue measured a mean below 2e-3 at a chunk's first frame with 15 frames of pre-roll; this smaller,
# faster-moving plate gives up to ~2.5e-3 mean and a few edge pixels up to ~0.3 (measured 3.07e-3 and
# 0.228, the same to 1e-8 under oneDNN AVX2 / AVX-512 / AMX and ATen avx2 / default: pre-roll, not rounding).
SEAM_MEAN_BOUND = 5e-3
SEAM_MAX_BOUND = 0.5


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with local_cluster() as address:
        yield address


def _chunk_to_kill(state: Path, to_go: int = 2) -> tuple[int, int] | None:
    """(chunk, Dask worker pid) of a chunk mid-way: a snapshot written, ``to_go``+ frames left, not finished."""
    if not state.parent.is_dir():
        raise AssertionError("the job finished before a chunk could be caught mid-way")
    for progress in sorted(state.glob("chunk-*/progress.json")):
        try:
            data = json.loads(progress.read_text())
        except (OSError, ValueError):
            continue
        folder = progress.parent
        if (
            data.get("event") == "progress"
            and data["done"] <= data["total"] - 2
            and not (folder / "done.json").exists()
        ):
            if any(folder.glob("snapshot.*.pt")):
                return data["chunk"], data["pid"]
    return None


def test_chunks_on_a_local_cluster_with_a_killed_worker(tmp_path: Path, cluster: str) -> None:
    plates, out, root = tmp_path / "plates", tmp_path / "out", tmp_path / "root"
    pattern = make_plate(plates / "shot", FRAMES)
    models = make_models_dir(tmp_path / "models")
    args = farm_args(out, plates, models, "--dask-scheduler", cluster, "--chunk-size", str(CHUNK),
                     "--preroll", str(PREROLL))  # fmt: skip
    watcher = WorkerProcess(root, "w-dask", *args, settings={"--snapshot-every": 2})
    try:
        watcher.wait_ready()
        drop_ticket(
            root,
            "chunked",
            {"input": "shot/plate.####.png", "output": "chunked/m.####.exr", "checkpoint": "rvm", "device": "cpu"},
        )
        job_dir = wait_for(lambda: jobs_in(root, "active", "chunked-"), "the claim", procs=(watcher,))[0]
        killed, pid = wait_for(lambda: _chunk_to_kill(job_dir / "state"), "a chunk half done", procs=(watcher,))
        os.kill(pid, signal.SIGKILL)  # the Dask worker process running that chunk
        job = wait_for_job(root, "chunked", procs=(watcher,))
    finally:
        watcher.stop()
    assert job.parent.name == "done", (job / "report.json").read_text()
    report = json.loads((job / "report.json").read_text())
    assert report["mode"] == "dask" and len(report["chunks"]) == FRAMES // CHUNK
    retried = report["chunks"][killed]
    assert retried["resumed_from"] is not None, retried  # rerun by Dask, resumed from the chunk's snapshot
    assert sorted(p.name for p in (out / "chunked").iterdir()) == [f"m.{f}.exr" for f in range(1001, 1001 + FRAMES)]

    # Seams: the chunked render against the uninterrupted single-machine one, and the bound: what the
    # engine's own pre-roll gives on this plate (a single-machine render started at the seam with pre-roll).
    reference = reference_render(pattern, tmp_path / "single")
    chunks = plan_chunks(list(range(1001, 1001 + FRAMES)), CHUNK, PREROLL)
    seams, bounds = {}, {}
    for chunk in chunks:
        first = chunk.frames[0]
        ours = {f: read_alpha(out / "chunked" / f"m.{f}.exr") for f in chunk.frames}
        single = {f: read_alpha(reference / f"m.{f}.exr") for f in chunk.frames}
        if first - PREROLL <= 1001 and chunk.index != killed:  # pre-roll reaches the plate's start: same computation
            assert all(np.array_equal(ours[f], single[f]) for f in chunk.frames), chunk
            continue
        alone = reference_render(pattern, tmp_path / chunk.name, frames=chunk.frames_text, preroll=chunk.preroll)
        for f in chunk.frames:  # a Dask chunk (the killed and retried one included) is the engine's chunk, exactly
            np.testing.assert_array_equal(ours[f], read_alpha(alone / f"m.{f}.exr"))
        if first - PREROLL <= 1001:
            continue
        diff = np.abs(ours[first] - single[first])
        seams[first] = (float(diff.max()), float(diff.mean()))
        engine = np.abs(read_alpha(alone / f"m.{first}.exr") - single[first])
        bounds[first] = (float(engine.max()), float(engine.mean()))
    print(
        f"chunk seams, pre-roll {PREROLL}, (max, mean) |alpha diff| vs the single-machine render:",
        seams,
        "; engine pre-roll figure on this plate:",
        bounds,
        f"; killed chunk {killed} resumed after frame {retried['resumed_from']}",
    )
    assert seams, "no seam was measured"
    for first, (worst, mean) in seams.items():
        # Exact: every frame of the chunk equals the engine's own chunk (asserted above), so its seam is the
        # engine's pre-roll figure, bit for bit (was a 1.1x + 1e-3 slack that could hide nothing).
        assert (worst, mean) == bounds[first], first
        assert mean < SEAM_MEAN_BOUND and worst < SEAM_MAX_BOUND, (first, worst, mean)


def _inodes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in folder.glob("m.*.exr")}


def test_sigterm_stops_the_chunks_and_a_restart_finishes(tmp_path: Path, cluster: str) -> None:
    plates, out, root = tmp_path / "plates", tmp_path / "out", tmp_path / "root"
    make_plate(plates / "shot", 30, 128, 96)  # slower frames: SIGTERM must land while a chunk is mid-way
    models = make_models_dir(tmp_path / "models")
    args = farm_args(out, plates, models, "--dask-scheduler", cluster, "--chunk-size", str(CHUNK),
                     "--preroll", str(PREROLL))  # fmt: skip
    first = WorkerProcess(root, "w-dask-a", *args, settings={"--snapshot-every": 2})
    try:
        first.wait_ready()
        drop_ticket(root, "termed", {"input": "shot/plate.####.png", "output": "termed/m.####.exr",
                                     "checkpoint": "rvm", "device": "cpu"})  # fmt: skip
        job_dir = wait_for(lambda: jobs_in(root, "active", "termed-"), "the claim", procs=(first,))[0]
        wait_for(lambda: _chunk_to_kill(job_dir / "state", to_go=4), "a chunk half done", procs=(first,))
        assert first.terminate() == 0
    finally:
        first.stop()
    assert job_dir.is_dir() and json.loads((job_dir / "status.json").read_text())["state"] == "stopped"
    assert json.loads((job_dir / "heartbeat.json").read_text()).get("released") is True
    finished_before = {p.parent.name for p in (job_dir / "state").glob("chunk-*/done.json")}
    before = _inodes(out / "termed")
    assert len(before) < 30

    second = WorkerProcess(root, "w-dask-b", *args, settings={"--snapshot-every": 2})
    try:
        job = wait_for_job(root, "termed", procs=(second,))
    finally:
        second.stop()
    assert job.parent.name == "done", (job / "report.json").read_text()
    report = json.loads((job / "report.json").read_text())
    assert [r["outcome"] for r in report["runs"]] == ["stopped", "done"]
    rerun = {f"chunk-{c['chunk']:04d}" for c in report["chunks"] if c["worker"] and not c["stopped"]}
    resumed = [c for c in report["chunks"] if c["resumed_from"] is not None]
    after = _inodes(out / "termed")
    assert sorted(after) == [f"m.{f}.exr" for f in range(1001, 1031)]
    for chunk in plan_chunks(list(range(1001, 1031)), CHUNK, PREROLL):
        if chunk.name in finished_before:  # finished before SIGTERM: not submitted again, frames untouched
            assert all(after[f"m.{f}.exr"] == before[f"m.{f}.exr"] for f in chunk.frames)
    print(f"SIGTERM: chunks done before {sorted(finished_before)}, resumed after restart:",
          [(c["chunk"], c["resumed_from"]) for c in resumed])  # fmt: skip
    assert resumed, "no chunk resumed from a snapshot"
    assert rerun
