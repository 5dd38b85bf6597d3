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
    fields: dict = {"cuts": "none", "passes": "bidirectional", **changes}
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
    with pytest.raises(ValueError, match="^unknown combination 'max' \\(known: mean, memory\\)$"):
        combine(ones, zeros, 1, 1, mode="max")


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
