"""The bidirectional pass (``passes`` bidirectional): backward results kept on disk, combined per frame forward.

Checked against the network run by hand in the engine's orders, for the combination and the resume after
``kill -9`` in either pass (a real subprocess, killed when it reports a given frame of that pass).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rvm_vfx.color import ColorPipeline
from rvm_vfx.frame_pipeline import FramePipeline
from rvm_vfx.job import Job
from rvm_vfx.passes import COMBINE, BackwardStore, combine, memory_weight
from rvm_vfx.render import cached_model, render
from rvm_vfx.render_report import Reporter
from rvm_vfx.sequence import open_source
from rvm_vfx.session import MattingSession

from .conftest import TFJS_MODEL
from .plates import portrait_clip
from .test_warmup import read_pixels, rendered, write_plate

ROOT = Path(__file__).resolve().parents[1]
FRAMES = list(range(1001, 1011))


@pytest.fixture(autouse=True)
def _builtin_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIO", raising=False)


@pytest.fixture
def plate(tmp_path: Path) -> str:
    composites, _ = portrait_clip(len(FRAMES), 96, 64, step=4)
    return write_plate(tmp_path / "plate", composites, FRAMES)


def _job(plate: str, out: Path, **changes: object) -> Job:
    fields: dict = {"cuts": "none", "passes": "bidirectional", "warmup": 0, **changes}
    return Job(input=plate, output=str(out / "m.####.exr"), checkpoint=str(TFJS_MODEL), **fields)


# ----------------------------------------------------------------------------- the parts


def test_the_mean_is_the_average_and_memory_weighting_favours_the_warmer_pass() -> None:
    ones = (np.ones((2, 2, 3), np.float32), np.ones((2, 2), np.float32))
    zeros = (np.zeros((2, 2, 3), np.float32), np.zeros((2, 2), np.float32))
    fgr, pha = combine(ones, zeros, 1, 1, mode="mean")
    assert fgr.dtype == pha.dtype == np.float32
    assert np.all(fgr == 0.5) and np.all(pha == 0.5)
    _, pha = combine(ones, zeros, 30, 0, mode="memory")  # the backward pass has seen nothing of the shot yet
    assert np.all(pha == 1.0)
    _, pha = combine(ones, zeros, 3, 3, mode="memory")
    assert np.all(pha == 0.5)
    expected = memory_weight(2) / (memory_weight(2) + memory_weight(10))
    _, pha = combine(ones, zeros, 2, 10, mode="memory")
    assert np.allclose(pha, expected, rtol=0, atol=1e-7)  # float32 rounding of the weight
    with pytest.raises(ValueError, match="^unknown combination 'max' \\(known: mean, memory, agreement\\)$"):
        combine(ones, zeros, 1, 1, mode="max")


def test_agreement_averages_where_the_passes_agree_and_takes_the_lower_alpha_where_they_do_not() -> None:
    pha_f = np.array([[0.50, 0.90, 0.10]], np.float32)
    pha_b = np.array([[0.55, 0.20, 0.80]], np.float16)  # as the store keeps it
    fgr_f = np.full((1, 3, 3), 0.25, np.float32)
    fgr_b = np.full((1, 3, 3), 0.75, np.float16)
    fgr, pha = combine((fgr_f, pha_f), (fgr_b, pha_b), 10, 10, mode="agreement")
    assert pha.dtype == fgr.dtype == np.float32
    assert pha[0, 0] == np.float32(0.5) * (np.float32(0.5) + np.float32(np.float16(0.55)))
    assert pha[0, 1] == np.float32(np.float16(0.20)) and pha[0, 2] == np.float32(0.10)
    assert fgr[0, 0].tolist() == [0.5, 0.5, 0.5]  # agreeing: the mean foreground
    assert fgr[0, 1].tolist() == [0.75, 0.75, 0.75] and fgr[0, 2].tolist() == [0.25, 0.25, 0.25]  # the pass taken


def test_the_store_keeps_half_floats_and_a_torn_file_is_not_whole(tmp_path: Path) -> None:
    store = BackwardStore(tmp_path / "b")
    fgr = np.full((4, 5, 3), 0.1, np.float32)
    pha = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    assert store.write(1001, fgr, pha, 7) == [str(tmp_path / "b" / "backward.1001.npy")]
    back_fgr, back_pha, seen = store.read(1001)
    assert back_fgr.dtype == np.float16 and seen == 7
    assert np.array_equal(back_pha, pha.astype(np.float16)) and np.array_equal(back_fgr, fgr.astype(np.float16))
    path = store.path(1001)
    path.write_bytes(path.read_bytes()[:100])
    assert store.is_whole(1001) is False and store.is_whole(1002) is False
    assert store.finished() is None
    store.finish([1040, 1012])
    assert store.finished() == [1012, 1040]


# ----------------------------------------------------------------------------- a render


def test_each_frame_combines_the_forward_and_backward_runs(plate: str, tmp_path: Path) -> None:
    job = _job(plate, tmp_path / "out", alpha_output=str(tmp_path / "out" / "a.####.exr"))
    report = render(job)
    assert report.frames_written == FRAMES
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".rvm-backward-")]  # removed

    model, _ = cached_model(str(TFJS_MODEL))
    pipeline = FramePipeline(job, model, ColorPipeline(), Reporter(None), None)
    source = open_source(plate)
    inputs = {f: torch.from_numpy(pipeline.read(source, f, f)[1]).permute(2, 0, 1)[None] for f in FRAMES}
    source.close()

    def run(order: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
        session = MattingSession(model, "auto")
        results = {}
        for f in order:
            fgr, pha = session.step(inputs[f])
            results[f] = (fgr[0].permute(1, 2, 0).numpy(), pha[0, 0].numpy(), session.frames_seen)
        return results

    forward, backward = run(FRAMES), run(FRAMES[::-1])
    for frame in FRAMES:
        back = backward[frame]
        half = (back[0].astype(np.float16), back[1].astype(np.float16))  # as the store keeps them
        _, pha = combine(forward[frame][:2], half, forward[frame][2], back[2], COMBINE)
        written = read_pixels(tmp_path / "out" / f"a.{frame}.exr")[..., 0]
        # The alpha file is half floats: the combined alpha rounded once more (1/2048 relative), plus the
        # oneDNN kernels' reassociated sums between the session run here and the render's.
        assert np.abs(written - pha).max() < 2e-3, frame
    forward_only = render(_job(plate, tmp_path / "fwd", passes="forward"))
    assert not np.array_equal(
        rendered(tmp_path / "out", FRAMES), rendered(tmp_path / "fwd", forward_only.frames_written)
    )


def test_progress_names_each_pass_and_a_completed_render_removes_its_backward_frames(
    plate: str, tmp_path: Path
) -> None:
    events: list[dict] = []
    render(_job(plate, tmp_path / "out", snapshot_every=2), progress=events.append, state_dir=tmp_path / "state")
    starts = [(e["pass"], e["first"], e["last"], e["total"]) for e in events if e["event"] == "start"]
    assert starts == [("backward", 1010, 1001, 10), ("forward", 1001, 1010, 10)]
    passes = [(e["pass"], e["frame"], e["done"]) for e in events if e["event"] == "progress"]
    assert passes == [("backward", f, i + 1) for i, f in enumerate(FRAMES[::-1])] + [
        ("forward", f, i + 1) for i, f in enumerate(FRAMES)
    ]
    assert not (tmp_path / "state" / "backward").exists()


def test_the_passes_agree_on_detected_cuts(tmp_path: Path) -> None:
    first, _ = portrait_clip(5, 96, 64, step=4)
    second, _ = portrait_clip(5, 96, 64, step=4, portrait="p_22fc0130", background="rw_03.jpg")
    pattern = write_plate(tmp_path / "plate", [*first, *second], FRAMES)
    events: list[dict] = []
    detected = render(_job(pattern, tmp_path / "auto", cuts="auto", warmup=2), progress=events.append)
    listed = render(_job(pattern, tmp_path / "list", cuts="1006", warmup=2))
    assert detected.cuts == listed.cuts == [1006]
    assert [(e["frame"], e["shot"]) for e in events if e["event"] == "cut"] == [(1006, 1)]
    assert np.array_equal(rendered(tmp_path / "auto", FRAMES), rendered(tmp_path / "list", FRAMES))


# ----------------------------------------------------------------------------- kill -9 and resume


def _matte(plate: str, out: Path, state: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rvm_vfx",
        "matte",
        plate,
        str(out / "m.####.exr"),
        "--checkpoint",
        str(TFJS_MODEL),
        "--passes",
        "bidirectional",
        "--warmup",
        "2",
        "--cuts",
        "none",
        "--snapshot-every",
        "1",
        "--state-dir",
        str(state),
        "--progress",
        "json",
        *extra,
    ]


def _kill_at(command: list[str], render_pass: str, done: int) -> list[dict]:
    """Run ``command`` and SIGKILL it as soon as it reports ``done`` frames of ``render_pass``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    seen: list[dict] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        seen.append(event)
        if event["event"] == "progress" and event.get("pass") == render_pass and event["done"] >= done:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, seen[-3:]
    return seen


@pytest.mark.parametrize("render_pass", ["backward", "forward"])
def test_a_render_killed_in_either_pass_resumes_bit_identical(plate: str, tmp_path: Path, render_pass: str) -> None:
    state = tmp_path / "state"
    _kill_at(_matte(plate, tmp_path / "out", state), render_pass, 2)
    if render_pass == "backward":
        assert sorted(p.name for p in (state / "backward").glob("backward.*.npy"))  # some kept, not all
        assert not (state / "backward" / "done.json").exists()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    again = subprocess.run(_matte(plate, tmp_path / "out", state), capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines()]
    resumed = {e["pass"]: e["resumed_from"] for e in events if e["event"] == "start"}
    if render_pass == "backward":
        assert resumed["backward"] in (1010, 1009, 1008, 1007)  # it went on from a snapshot
    else:
        assert "backward" not in resumed and resumed["forward"] is not None  # the backward pass was done
    whole = subprocess.run(
        _matte(plate, tmp_path / "whole", tmp_path / "state2"), capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert whole.returncode == 0, whole.stderr
    assert np.array_equal(rendered(tmp_path / "out", FRAMES), rendered(tmp_path / "whole", FRAMES))


# ----------------------------------------------------------------------------- farm chunks


def test_bidirectional_chunks_get_post_roll_after_them() -> None:
    from render_worker.chunks import chunk_job, plan_chunks

    chunks = plan_chunks(list(range(1001, 1031)), 12, 15, 2, (1025,), job_postroll=3, bidirectional=True)
    assert [(c.frames_text, c.preroll, c.postroll) for c in chunks] == [
        ("1001-1012", 2, 15),
        ("1013-1024", 15, 0),  # the next chunk starts a shot: nothing after the cut warms this one
        ("1025-1030", 0, 3),  # the last keeps the job's own post-roll
    ]
    forward = plan_chunks(list(range(1001, 1031)), 12, 15, 2, (1025,), job_postroll=3)
    assert {c.postroll for c in forward} == {3}  # a forward job's post-roll is left as it is (unused)
    job = Job(input="p.####.exr", output="o/m.####.exr", passes="bidirectional", postroll=3)
    assert chunk_job(job, chunks[0]).postroll == 15 and chunk_job(job, chunks[0]).frames == "1001-1012"


CHUNKED, CHUNK, ROLL = 30, 10, 15


def test_bidirectional_chunks_on_a_local_cluster_have_seams_within_the_pre_roll_figures(tmp_path: Path) -> None:
    from render_worker.chunks import plan_chunks

    from .dask_cluster import local_cluster
    from .test_worker_helpers import (
        WorkerProcess,
        drop_ticket,
        farm_args,
        make_models_dir,
        make_plate,
        read_alpha,
        reference_render,
        wait_for_job,
    )

    plates, out, root = tmp_path / "plates", tmp_path / "out", tmp_path / "root"
    pattern = make_plate(plates / "shot", CHUNKED)
    models = make_models_dir(tmp_path / "models")
    fields = {"passes": "bidirectional", "warmup": 4, "cuts": "none"}
    with local_cluster() as scheduler:
        args = farm_args(out, plates, models, "--dask-scheduler", scheduler, "--chunk-size",
                         str(CHUNK), "--preroll", str(ROLL))  # fmt: skip
        watcher = WorkerProcess(root, "w-bidir", *args)
        try:
            watcher.wait_ready()
            ticket = {"input": "shot/plate.####.png", "output": "bi/m.####.exr", "checkpoint": "rvm", "device": "cpu"}
            drop_ticket(root, "bi", {**ticket, **fields})
            job = wait_for_job(root, "bi", procs=(watcher,))
        finally:
            watcher.stop()
    assert job.parent.name == "done", (job / "report.json").read_text()
    report = json.loads((job / "report.json").read_text())
    assert [(c["frames"], c["preroll"], c["postroll"]) for c in report["chunks"]] == [
        ("1001-1010", 0, ROLL),
        ("1011-1020", ROLL, ROLL),
        ("1021-1030", ROLL, 0),
    ]
    frames = list(range(1001, 1001 + CHUNKED))
    single = reference_render(pattern, tmp_path / "single", **fields)
    forward_single = reference_render(pattern, tmp_path / "fsingle", warmup=4, cuts="none")
    seams, figures = {}, {}
    for chunk in plan_chunks(frames, CHUNK, ROLL, 0, (), 0, True):
        alone = reference_render(
            pattern, tmp_path / chunk.name, frames=chunk.frames_text, preroll=chunk.preroll, postroll=chunk.postroll,
            **fields,
        )  # fmt: skip
        for f in chunk.frames:  # a Dask chunk is the engine's own chunk render, exactly
            np.testing.assert_array_equal(read_alpha(out / "bi" / f"m.{f}.exr"), read_alpha(alone / f"m.{f}.exr"))
        for f in (chunk.frames[0], chunk.frames[-1]):
            if chunk.index == 0 and f == chunk.frames[0] or chunk.index == 2 and f == chunk.frames[-1]:
                continue  # the shot's own ends: there is nothing before or after them to miss
            diff = np.abs(read_alpha(out / "bi" / f"m.{f}.exr") - read_alpha(single / f"m.{f}.exr"))
            seams[f] = (float(diff.max()), float(diff.mean()))
        if chunk.preroll:
            # The figure to meet: a forward-only chunk with the same pre-roll against its uninterrupted render.
            first = chunk.frames[0]
            fchunk = reference_render(
                pattern, tmp_path / f"f{chunk.name}", frames=chunk.frames_text, preroll=chunk.preroll, warmup=4,
                cuts="none",
            )  # fmt: skip
            diff = np.abs(read_alpha(fchunk / f"m.{first}.exr") - read_alpha(forward_single / f"m.{first}.exr"))
            figures[first] = (float(diff.max()), float(diff.mean()))
    print("bidirectional chunk seams (max, mean |alpha diff|):", seams, "; forward pre-roll figures:", figures)
    worst_figure = max(m for _, m in figures.values())
    assert len(seams) == 4
    for frame, (worst, mean) in seams.items():
        # Each side of a seam misses only what a pre-roll (or post-roll) of ROLL frames misses, on half the weight.
        assert mean <= worst_figure, (frame, mean, figures)
        assert worst < 0.5, frame
