"""The threaded pipeline: how much I/O it runs at once, and that threading never changes a pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenEXR
import pytest
import torch

from rvm_vfx import frame_pipeline
from rvm_vfx.color import ColorPipeline
from rvm_vfx.frame_io import read_image
from rvm_vfx.job import Job
from rvm_vfx.render import LARGE_FRAME_PIXELS, IOPlan, io_plan, render
from rvm_vfx.session import MattingSession
from rvm_vfx.weights import load_model

from .conftest import TFJS_MODEL
from .plates import portrait_clip, write_sequence

HD = 1920 * 1080
UHD = 3840 * 2160


def test_cpu_plan_overlaps_io_without_more_threads_than_it_needs() -> None:
    for cores in (2, 64):
        assert io_plan("cpu", HD, cores) == IOPlan(read_threads=2, write_threads=2, read_ahead=3, write_behind=3)
        assert io_plan("cpu", UHD, cores) == IOPlan(read_threads=2, write_threads=2, read_ahead=1, write_behind=1)


@pytest.mark.parametrize(
    ("cores", "pixels", "expected"),
    [
        (2, HD, IOPlan(2, 2, 3, 3)),
        (16, HD, IOPlan(8, 8, 9, 9)),
        (16, UHD, IOPlan(8, 8, 4, 4)),
        (6, HD, IOPlan(3, 3, 4, 4)),
        (6, UHD, IOPlan(3, 3, 1, 1)),
        (128, LARGE_FRAME_PIXELS, IOPlan(8, 8, 9, 9)),  # the limit itself still counts as small
    ],
)
def test_accelerator_plan_gives_io_half_the_cores(cores: int, pixels: int, expected: IOPlan) -> None:
    assert io_plan("cuda", pixels, cores) == expected
    assert io_plan("mps", pixels, cores) == expected


def _plain_loop(pattern: str, frames: list[int]) -> list[np.ndarray]:
    """The render's arithmetic frame by frame on one thread, as half RGBA like the EXR holds."""
    color = ColorPipeline()
    session = MattingSession(load_model(TFJS_MODEL), "auto")
    out = []
    for frame in frames:
        plate = read_image(pattern.replace("####", f"{frame:04d}"))
        space = color.resolve_input_space(None, plate.colorspace, plate.is_float)
        model_rgb, _ = color.to_model(plate.rgb, space)
        fgr, pha = session.step(torch.from_numpy(model_rgb).permute(2, 0, 1)[None])
        rgba = color.compose_foreground(
            plate.rgb, model_rgb, fgr[0].permute(1, 2, 0).numpy(), pha[0, 0].numpy(), space, color.scene_linear
        )
        out.append(rgba.astype(np.float16))
    return out


@pytest.mark.parametrize("plan", [None, IOPlan(4, 3, 5, 2)], ids=["cpu-plan", "wide-plan"])
def test_threaded_render_equals_a_plain_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan: IOPlan) -> None:
    composites, _ = portrait_clip(8, 192, 112)
    pattern = write_sequence(tmp_path / "plate", "plate", composites)
    if plan is not None:  # what a GPU node would run: more threads and frames in flight than the CPU plan
        monkeypatch.setattr(frame_pipeline, "io_plan", lambda device_type, pixels, cores=None: plan)
    job = Job(input=pattern, output=str(tmp_path / "out" / "m.####.exr"), checkpoint=str(TFJS_MODEL), warmup=0)
    report = render(job)  # no warm-up: the plain loop is the network on each frame in order, nothing before
    assert report.frames_written == list(range(1001, 1009))

    expected = _plain_loop(pattern, report.frames_written)
    for frame, want in zip(report.frames_written, expected, strict=True):
        with OpenEXR.File(str(tmp_path / "out" / f"m.{frame}.exr"), separate_channels=True) as exr:
            channels = exr.channels()
            got = np.stack([np.array(channels[c].pixels) for c in "RGBA"], axis=-1)
        assert got.dtype == np.float16
        assert np.array_equal(got, want), f"frame {frame} differs from the plain loop"
