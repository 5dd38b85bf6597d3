"""Resuming from a state folder keeps old frames only when nothing that changes a pixel has changed.

Every field the spec marks as pixel-changing (``PIXEL_FIELDS``: the plate, the range, the model, the
colour, the encoding, the outputs and their mode) must send a resumed render back to its first frame;
the farm-only fields (name, priority, ...) must not.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.color import BUILTIN_CONFIG, ColorPipeline
from rvm_vfx.errors import InputError
from rvm_vfx.job import Job
from rvm_vfx.render import RenderReport, render
from rvm_vfx.resume_state import StateFolder
from rvm_vfx.spec.job import FIELDS, PIXEL_FIELDS, fingerprint

from .conftest import TFJS_MODEL
from .plates import portrait_clip

FRAMES = [1001, 1002, 1003]


def _write_plate(folder: Path) -> str:
    """Three ACEScg half EXRs whose portrait is in both the beauty and a ``diffuse`` layer."""
    composites, _ = portrait_clip(len(FRAMES), 96, 64, step=3)
    color = ColorPipeline()
    folder.mkdir(parents=True)
    for frame, srgb in zip(FRAMES, composites, strict=True):
        linear = color.convert(srgb, "sRGB - Texture", "ACEScg")
        pixels = np.ascontiguousarray(np.concatenate([linear, linear * 0.5], -1), dtype=np.float32)
        spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], 6, "half")
        spec.channelnames = ("R", "G", "B", "diffuse.R", "diffuse.G", "diffuse.B")
        spec.attribute("oiio:ColorSpace", "ACEScg")
        path = folder / f"plate.{frame}.exr"
        out = oiio.ImageOutput.create(str(path))
        assert out.open(str(path), spec), out.geterror()
        assert out.write_image(pixels), out.geterror()
        out.close()
    return str(folder / "plate.####.exr")


def _changed_values(tmp_path: Path) -> dict[str, Any]:
    """A second value for every pixel field that still renders the little plate (and its three frames)."""
    return {
        "input": str(tmp_path / "copy" / "plate.####.exr"),
        "output": str(tmp_path / "out" / "other.####.exr"),
        "frames": "1001-1003",  # the same frames as None (all), but said differently
        "layer": "diffuse",
        "start_frame": 7,
        "missing": "hold",
        "checkpoint": str(tmp_path / "weights" / TFJS_MODEL.name),  # the same weights under another name
        "downsample": 0.5,
        "device": "cpu",
        "precision": "bf16",
        "ocio_config": BUILTIN_CONFIG,  # what None means here, spelled out
        "input_colorspace": "lin_rec709",
        "output_colorspace": "lin_rec709",
        "compression": "piz",
        "output_mode": "alpha",
        # The interrupted job writes both extra outputs (``_extras``); the changed one writes one of them no more.
        "alpha_output": None,
        "fg_output": None,
        "preroll": 2,
        "warmup": 2,
        "passes": "bidirectional",
        "postroll": 1,  # beyond the plate's end: clamped, yet a different job
        "cuts": "1002",  # a cut (listed) where the default detects none: frame 1002 starts afresh
        # The plate copy works as a matte (RGB, no A: its R channel by default).
        "garbage_matte": str(tmp_path / "copy" / "plate.####.exr"),
        "garbage_channel": "G",
        "invert_garbage": True,
        "core_matte": str(tmp_path / "copy" / "plate.####.exr"),
        "core_channel": "G",
        "invert_core": True,
        "holdout_matte": str(tmp_path / "copy" / "plate.####.exr"),
        "holdout_channel": "G",
        "invert_holdout": True,
    }


def _extras(tmp_path: Path) -> dict[str, str]:
    return {
        "alpha_output": str(tmp_path / "out" / "a.####.exr"),
        "fg_output": str(tmp_path / "out" / "fg.####.exr"),
    }


#: A second value for every field that must not cost a resumed render its frames (all but the pixel fields).
OTHER_VALUES: dict[str, Any] = {
    "name": "sh010 v2",
    "priority": 5,
    "metadata": {"host": "nuke"},
    "snapshot_every": 2,
    "overwrite": False,  # the frames are this job's own, so they are not "existing output"
}


def test_every_field_has_a_case(tmp_path: Path) -> None:
    """A new field must get a second value here, or this suite would not cover it."""
    assert sorted(_changed_values(tmp_path)) == sorted(PIXEL_FIELDS)
    assert sorted({*PIXEL_FIELDS, *OTHER_VALUES, "schema_version"}) == sorted(f.name for f in FIELDS)


# ----------------------------------------------------------------------------- the state folder alone


def _claimed(folder: Path) -> tuple[Job, Path]:
    """A state folder claimed by a job writing all three outputs, holding a (stand-in) snapshot."""
    job = Job(input=str(folder / "plate.####.exr"), output=str(folder / "m.####.exr"), **_extras(folder))
    state = folder / "state"
    assert StateFolder(state, job).claim() is False  # a new folder is nobody's yet
    (state / "snapshot.4.pt").write_bytes(b"state after output index 4")
    assert StateFolder(state, job).claim() is True
    return job, state


@pytest.mark.parametrize("name", PIXEL_FIELDS)
def test_a_state_folder_is_another_jobs_after_any_pixel_field_changes(tmp_path: Path, name: str) -> None:
    job, state = _claimed(tmp_path)
    changed = dataclasses.replace(job, **{name: _changed_values(tmp_path)[name]})
    assert StateFolder(state, changed).claim() is False
    assert not list(state.glob("snapshot.*")), "the old job's snapshot must not seed the changed one"
    marker = json.loads((state / "render.json").read_text())
    assert marker == {"fingerprint": fingerprint(changed), "job": changed.to_dict()}
    assert marker["fingerprint"] != fingerprint(job)


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_a_state_folder_stays_the_jobs_when_a_farm_field_changes(tmp_path: Path, name: str) -> None:
    job, state = _claimed(tmp_path)
    assert StateFolder(state, dataclasses.replace(job, **{name: OTHER_VALUES[name]})).claim() is True
    assert [p.name for p in state.glob("snapshot.*")] == ["snapshot.4.pt"]


# ----------------------------------------------------------------------------- whole renders


class _StopBefore(threading.Event):
    """A stop request that arrives as the render is about to start its ``frames``-th frame (counting from 0).

    The render asks once before each frame; a request timed by a progress event could come after the
    last frame on a slow machine, where three tiny frames leave no margin.
    """

    def __init__(self, frames: int) -> None:
        super().__init__()
        self._asked = 0
        self._frames = frames

    def is_set(self) -> bool:
        self._asked += 1
        return self._asked > self._frames


def _interrupted(folder: Path, **changes: Any) -> tuple[Job, Path, RenderReport]:
    """A job stopped after its first two frames, with a snapshot per written frame in its state folder."""
    plate = _write_plate(folder / "plate")
    copy = folder / "copy"
    copy.mkdir()
    for frame in FRAMES:
        (copy / f"plate.{frame}.exr").write_bytes((folder / "plate" / f"plate.{frame}.exr").read_bytes())
    (folder / "weights").symlink_to(TFJS_MODEL.parent, target_is_directory=True)
    job = Job(
        input=plate,
        output=str(folder / "out" / "m.####.exr"),
        checkpoint=str(TFJS_MODEL),
        snapshot_every=1,
        overwrite=True,  # starting over replaces the old frames rather than refusing them
        **{**_extras(folder), **changes},
    )
    state = folder / "state"
    first = render(job, stop=_StopBefore(FRAMES.index(1003)), state_dir=state)
    assert first.stopped and first.frames_written == [1001, 1002]
    assert sorted(p.name for p in state.glob("snapshot.*")) == ["snapshot.0.pt", "snapshot.1.pt"]
    return job, state, first


@pytest.fixture(autouse=True)
def _builtin_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIO", raising=False)


@pytest.fixture(scope="module")
def _pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Job, Path, RenderReport, Path]:
    """One interrupted render, kept aside: each test gets it back as it was, at the same paths."""
    root = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OCIO", raising=False)
        job, state, first = _interrupted(root / "job")
    shutil.copytree(root / "job", root / "pristine", symlinks=True)
    return job, state, first, root


@pytest.fixture
def interrupted(_pristine: tuple[Job, Path, RenderReport, Path]) -> tuple[Job, Path, RenderReport]:
    job, state, first, root = _pristine
    shutil.rmtree(root / "job")
    shutil.copytree(root / "pristine", root / "job", symlinks=True)
    return job, state, first


@pytest.mark.parametrize("name", PIXEL_FIELDS)
def test_a_changed_pixel_field_starts_over(interrupted: tuple[Job, Path, RenderReport], name: str) -> None:
    job, state, _ = interrupted
    changed = dataclasses.replace(job, **{name: _changed_values(state.parent)[name]})
    again = render(changed, state_dir=state)
    assert again.resumed_from is None
    assert again.frames_written == FRAMES  # every frame rendered again, none kept from the old job


@pytest.mark.parametrize("name", ["alpha_output", "fg_output"])
def test_an_added_extra_output_starts_over(tmp_path: Path, name: str) -> None:
    job, state, _ = _interrupted(tmp_path, **{name: None})
    again = render(dataclasses.replace(job, **{name: _extras(tmp_path)[name]}), state_dir=state)
    assert again.resumed_from is None
    assert again.frames_written == FRAMES


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_a_changed_farm_field_resumes(interrupted: tuple[Job, Path, RenderReport], name: str) -> None:
    job, state, first = interrupted
    again = render(dataclasses.replace(job, **{name: OTHER_VALUES[name]}), state_dir=state)
    assert first.frames_written == [1001, 1002]
    assert again.resumed_from == 1002
    assert again.frames_written == [1003]


def test_a_changed_pixel_field_without_overwrite_refuses_the_old_frames(
    interrupted: tuple[Job, Path, RenderReport],
) -> None:
    job, state, _ = interrupted
    changed = dataclasses.replace(job, output_mode="alpha", overwrite=False)
    first = state.parent / "out" / "m.1001.exr"
    message = f"output exists: {first} (2 of 3 frames: 1001-1002); use --overwrite to replace"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        render(changed, state_dir=state)
