"""The Nuke node's garbage, core and hold-out inputs, and its warm-up and passes knobs (issue 13).

Knobs to Job against the engine's own ``rvm_vfx.job.Job``; the glue against the stand-in ``nuke``
(``tests/nuke_stub``), whose Writes are rendered here by a small model of what Nuke writes (``NukeWrites``)
so that the precomped EXRs themselves (channel names, pixel values) are checked; and one render through the
real engine, where a garbage matte must clear the alpha exactly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.job import Job
from rvm_vfx.spec.job import FIELDS_BY_NAME, PASSES

from . import test_nuke_glue as glue
from .conftest import TFJS_MODEL
from .nuke_stub.fake_nuke import frame_range, seen
from .test_nuke_glue import _read_exr, _write_plate, contract, jobs, make_shot

# The glue tests' fixtures (the stand-in nuke, the node module, the fake engine, the OCIO config), shared.
fake, node, use_fake_engine, studio_config = glue.fake, glue.node, glue.use_fake_engine, glue.studio_config
no_engine_outlives_its_test = glue.no_engine_outlives_its_test

SCRIPT = "/shows/demo/sh010/comp/sh010_comp_v003.nk"
W, H = 8, 4


def read_plate() -> Any:
    return jobs.Source(input="/plates/sh010/plate.####.exr", first=1001, last=1010, colorspace="ACEScg")


def knob(name: str) -> Any:
    return next(k for k in jobs.KNOBS if k.name == name)


# ------------------------------------------------------------------------------------------ knobs to Job


def test_the_new_knobs_are_the_engines_fields():
    """Defaults, choices and help are the contract's, read from the vendored spec, never a copy."""
    warmup, passes = knob("warmup"), knob("passes")
    assert (warmup.kind, warmup.default) == ("int", FIELDS_BY_NAME["warmup"].default)
    assert warmup.tooltip == "Frames of the shot played in reverse before its first frame to warm the state."
    assert (passes.kind, passes.default, passes.choices) == ("enum", "forward", PASSES)
    for name in jobs.MATTES:
        channel, invert = knob(f"{name}_channel"), knob(f"invert_{name}")
        assert (channel.kind, channel.default) == ("channel", "none")  # Nuke's "no channel": the engine's None
        assert FIELDS_BY_NAME[f"{name}_channel"].help[:1].upper() + FIELDS_BY_NAME[f"{name}_channel"].help[1:] in (
            channel.tooltip
        )
        assert (invert.kind, invert.default) == ("bool", FIELDS_BY_NAME[f"invert_{name}"].default)
    assert knob("core_channel").tooltip == (
        "Core matte sequence: alpha forced to 1 where it is 1. From the node's 'core' input, when one is "
        "connected. Core matte's channel (default: A, else the only channel, else R). 'none' leaves that choice "
        "to the engine."
    )
    assert jobs.MATTES == ("garbage", "core", "holdout")


def test_a_job_without_mattes_keeps_the_engines_defaults():
    job = jobs.build_job({}, read_plate(), node_name="N", script_path=SCRIPT)
    assert Job.from_dict(job).to_dict() == job
    for field in ("warmup", "passes", *(f"{m}_{s}" for m in jobs.MATTES for s in ("matte", "channel"))):
        assert job[field] == FIELDS_BY_NAME[field].default, field
    assert not any(job[f"invert_{m}"] for m in jobs.MATTES)


def test_mattes_warmup_and_passes_reach_the_job():
    mattes = [
        jobs.MatteSource("garbage", "/plates/sh010/garbage.####.png", invert=True),
        jobs.MatteSource("holdout", "/comp/rvm/N/precomp/N.holdout.####.exr", "A", pick="mask.a", precomp=True),
    ]
    settings = {"warmup": 8, "passes": "bidirectional"}
    job = jobs.build_job(settings, read_plate(), node_name="N", script_path=SCRIPT, mattes=mattes, farm=True)
    engine_job = Job.from_dict(job)
    assert engine_job.to_dict() == job
    assert (engine_job.warmup, engine_job.passes) == (8, "bidirectional")
    assert (job["garbage_matte"], job["garbage_channel"], job["invert_garbage"]) == (
        "/plates/sh010/garbage.####.png",
        None,
        True,
    )
    assert (job["holdout_matte"], job["holdout_channel"], job["invert_holdout"]) == (
        "/comp/rvm/N/precomp/N.holdout.####.exr",
        "A",
        False,
    )
    assert (job["core_matte"], job["core_channel"], job["invert_core"]) == (None, None, False)


def test_bad_warmup_and_passes_are_refused_with_the_engines_message():
    with pytest.raises(jobs.PluginError) as error:
        jobs.build_job({"warmup": -2}, read_plate(), node_name="N", script_path=SCRIPT)
    assert str(error.value) == "job field 'warmup': must be >= 0, got -2"
    with pytest.raises(jobs.PluginError) as error:
        jobs.build_job({"passes": "sideways"}, read_plate(), node_name="N", script_path=SCRIPT)
    assert str(error.value) == "job field 'passes': expected one of forward, bidirectional, got 'sideways'"


@pytest.mark.parametrize(
    ("klass", "file", "pick", "reason"),
    [
        ("Read", "/plates/sh010/garbage.####.png", "none", None),  # read as it is
        ("Read", "/plates/sh010/garbage.####.png", "rgba.red", "channel rgba.red is picked"),
        ("Read", "/plates/sh010/garbage.mov", "none", "the Read shows a movie"),
        ("Read", "/plates/sh010/garbage.0001.png", "none", "the Read shows a single image, not a sequence"),
        ("Roto", "", "none", "it is a Roto node, not a Read"),
    ],
)
def test_a_matte_is_precomped_unless_a_plain_read_shows_it_as_it_is(klass, file, pick, reason):
    knobs = {"file": file, "first": 1001, "last": 1010}
    settings = {"core_channel": pick, "invert_core": True}
    matte = jobs.matte_source(
        "core", klass, knobs, settings, output="/comp/rvm/N/N.####.exr", node_name="N", script_path=SCRIPT
    )
    assert matte.invert is True and matte.reason == (reason or "")
    if reason is None:
        assert (matte.input, matte.channel, matte.precomp) == (file, None, False)
        return
    assert (matte.input, matte.precomp) == ("/comp/rvm/N/precomp/N.core.####.exr", True)
    # A picked channel is copied into the precomp's alpha, the only channel it writes; without one, every channel.
    assert matte.channel == (None if pick == "none" else "A")
    write = dict(jobs.matte_precomp_write_knobs(matte))
    assert write == {
        "file": matte.input, "file_type": "exr", "channels": "all" if pick == "none" else "alpha",
        "datatype": "16 bit half", "compression": "Zip (1 scanline)", "raw": True, "create_directories": True,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------ the glue


class NukeWrites:
    """What Nuke writes when the precomp's Writes render, for the few node classes the precomps use.

    ``images[node]`` is a node's output at frame 1001 as {Nuke channel: HxW array}; with ``by_frame`` frame f
    is that times (f - 1000), so a frame rendered from the wrong frame shows. An Input is the Group's input of
    its number, a Copy puts channel ``from0`` of its input 1 into ``to0`` of its input 0, Dots pass through. A
    Write with channels ``alpha`` writes A, with ``all`` every channel, the rgba layer as R, G, B, A and others
    by their full names, as Nuke's EXR writer names them. ``rendered`` lists (Write, frame) as rendered, and
    ``upstream`` each Write's input, looked at while the Writes still exist.
    """

    EXR_NAMES = {"rgba.red": "R", "rgba.green": "G", "rgba.blue": "B", "rgba.alpha": "A"}

    def __init__(self, group: Any, images: dict[Any, dict[str, np.ndarray]], by_frame: bool = True) -> None:
        self.group, self.images, self.by_frame = group, images, by_frame
        self.rendered: list[tuple[str, int]] = []
        self.upstream: dict[str, Any] = {}

    def stream(self, source: Any, frame: int) -> dict[str, np.ndarray]:
        klass = source.Class()
        if klass == "Input":
            return self.stream(self.group.input(int(source["number"].value())), frame)
        if klass == "Dot":
            return self.stream(source.input(0), frame)
        if klass == "Copy":
            out = dict(self.stream(source.input(0), frame))
            out[source["to0"].value()] = self.stream(source.input(1), frame)[source["from0"].value()]
            return out
        scale = frame - 1000 if self.by_frame else 1
        return {name: plane * scale for name, plane in self.images[source].items()}

    def __call__(self, write: Any, first: int, last: int) -> None:
        self.upstream[write.name()] = write.input(0)
        for frame in range(first, last + 1):
            self.rendered.append((write.name(), frame))
            stream = self.stream(write.input(0), frame)
            wanted = write["channels"].value()
            names = ["rgba.alpha"] if wanted == "alpha" else sorted(stream, key=self._order)
            planes = np.stack([stream[n] for n in names], axis=-1).astype(np.float32)
            height, width = planes.shape[:2]
            spec = oiio.ImageSpec(width, height, len(names), oiio.HALF)
            spec.channelnames = tuple(self.EXR_NAMES.get(n, n) for n in names)
            buf = oiio.ImageBuf(spec)
            buf.set_pixels(oiio.ROI(0, width, 0, height, 0, 1, 0, len(names)), planes)
            assert buf.write(contract.format_frame(write["file"].value(), frame)), buf.geterror()

    @classmethod
    def _order(cls, name: str) -> tuple[int, str]:
        return (list(cls.EXR_NAMES).index(name), "") if name in cls.EXR_NAMES else (4, name)


def ramp(step: float) -> np.ndarray:
    """Values on a 1/8 grid, so half-float EXRs hold them exactly."""
    return (np.arange(W * H, dtype=np.float32).reshape(H, W) % 8) * step


def matte_shot(fake, node, tmp_path, studio_config):
    """A plate Read, a garbage Read (read as it is), a Roto on core (channel picked), a Grade on holdout."""
    plate, group = make_shot(fake, node, tmp_path, studio_config)
    garbage = fake.nodes.Read(name="GarbageRead", first=1001, last=1003)
    garbage["file"].setValue(jobs.slash(str(tmp_path / "plates" / "garbage.####.png")))
    roto = fake.nodes.Roto(name="Roto1")
    grade = fake.nodes.Grade(name="Grade1")
    dot = fake.nodes.Dot(name="Dot1")
    dot.setInput(0, grade)
    for name, upstream in (("garbage", garbage), ("core", roto), ("holdout", dot)):
        assert group.setInput(int(group.node(name)["number"].value()), upstream)
    group["core_channel"].setValue("mask.matte")
    group["invert_core"].setValue(True)
    images = {
        roto: {"rgba.alpha": np.ones((H, W), np.float32) / 8, "mask.matte": ramp(1 / 32)},
        grade: {c: ramp(k / 64) for k, c in enumerate(("rgba.red", "rgba.green", "rgba.blue", "rgba.alpha"), 1)},
    }
    return group, images


def test_the_node_has_a_matte_input_and_knobs_for_each(fake, node, tmp_path, studio_config):
    _, group = make_shot(fake, node, tmp_path, studio_config)
    numbers = {name: group.node(name)["number"].value() for name in (node.INPUT_NAME, *jobs.MATTES)}
    assert numbers == {"Input": 0, "garbage": 1, "core": 2, "holdout": 3}
    for number, name in enumerate(jobs.MATTES, 1):
        channel = group[f"{name}_channel"]
        assert channel._api_class == "Channel_Knob" and channel.value() == "none"  # the class it was made as
        assert seen(channel).input == number  # its menu lists the channels of its own input
        assert group[f"invert_{name}"].value() is False
    assert group["warmup"].value() == FIELDS_BY_NAME["warmup"].default and group["passes"].values() == list(PASSES)
    # Nothing connected: the Job has no mattes, and nothing is precomped.
    plan = node.make_plan(group)
    assert plan.mattes == [] and plan.job["garbage_matte"] is None and node.prepare_precomp(group, plan) is None


def test_a_node_made_before_the_matte_inputs_still_renders(fake, node, tmp_path, studio_config):
    """A script saved with an older node has one Input: no mattes, and no error."""
    _, group = make_shot(fake, node, tmp_path, studio_config)
    for name in jobs.MATTES:
        fake.delete(group.node(name))
    plan = node.make_plan(group)
    assert plan.mattes == [] and plan.job["core_matte"] is None


def test_matte_inputs_are_read_or_precomped_and_reach_the_job(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("ok")
    group, images = matte_shot(fake, node, tmp_path, studio_config)
    group["warmup"].setValue(6)
    group["passes"].setValue("bidirectional")
    fake.render_hook = writes = NukeWrites(group, images)
    result = node.render_matte(group, background=False)
    assert result.ok and fake.messages == [], (result.message, fake.messages)

    out = jobs.slash(str(tmp_path / "comp" / "rvm" / "RVMMatte1"))
    job = json.loads(Path(out, "RVMMatte1.rvm-job.json").read_text())
    assert Job.from_dict(job).to_dict() == job
    assert (job["warmup"], job["passes"]) == (6, "bidirectional")
    assert (job["garbage_matte"], job["garbage_channel"], job["invert_garbage"]) == (
        jobs.slash(str(tmp_path / "plates" / "garbage.####.png")),  # a plain Read: its own files
        None,
        False,
    )
    assert (job["core_matte"], job["core_channel"], job["invert_core"]) == (
        f"{out}/precomp/RVMMatte1.core.####.exr",
        "A",
        True,
    )
    assert (job["holdout_matte"], job["holdout_channel"]) == (f"{out}/precomp/RVMMatte1.holdout.####.exr", None)

    # Two Writes, each frame of the range once, rendered frame by frame; then gone with their Copy.
    assert [(first, last) for _, first, last in fake.executed] == [(f, f) for f in (1001, 1001, 1002, 1002, 1003, 1003)]
    assert writes.rendered == [
        (name, frame) for frame in (1001, 1002, 1003) for name in ("PrecompWrite_core", "PrecompWrite_holdout")
    ]
    copy = writes.upstream["PrecompWrite_core"]
    assert (copy.Class(), copy["from0"].value(), copy["to0"].value()) == ("Copy", "mask.matte", "rgba.alpha")
    assert copy.input(0) is copy.input(1) is group.node("core")
    assert writes.upstream["PrecompWrite_holdout"] is group.node("holdout")
    assert all(w in fake.deleted for w, _, _ in fake.executed) and copy in fake.deleted
    assert [n.name() for n in group.nodes() if n.name().startswith(node.PRECOMP_NAME)] == []

    # The precomped EXRs: the core's picked channel alone, as A; the hold-out's every channel, as they were.
    for frame in (1001, 1003):
        scale = frame - 1000
        channels, pixels = _read_exr(contract.format_frame(job["core_matte"], frame))
        assert channels == ("A",)
        np.testing.assert_array_equal(pixels[..., 0], ramp(1 / 32) * scale)  # exact: 1/8-grid values in half
        channels, pixels = _read_exr(contract.format_frame(job["holdout_matte"], frame))
        assert channels == ("R", "G", "B", "A")
        for k in range(4):
            np.testing.assert_array_equal(pixels[..., k], ramp((k + 1) / 64) * scale)
    assert group["status"].value().startswith("rendered 3 frame(s)")


def test_the_status_names_every_precomp(fake, node, tmp_path, studio_config):
    group, _ = matte_shot(fake, node, tmp_path, studio_config)
    precomp = node.prepare_precomp(group, node.make_plan(group))
    assert precomp.reason == (
        "the core input: it is a Roto node, not a Read; the holdout input: it is a Grade node, not a Read"
    )
    assert precomp.frames == [1001, 1002, 1003]
    node.delete_precomp(precomp)


def test_a_failed_matte_precomp_names_its_input(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("ok")
    group, images = matte_shot(fake, node, tmp_path, studio_config)
    writes = NukeWrites(group, images)

    def fails_on_the_holdout(write, first, last):
        if write.name() == "PrecompWrite_holdout" and first == 1002:
            raise RuntimeError("Grade1: out of memory")
        writes(write, first, last)

    fake.render_hook = fails_on_the_holdout
    node.on_render(group).join()
    assert fake.messages == [
        "RVM Matte RVMMatte1: the render failed.\n\nThe precomp of the holdout input (it is a Grade node, "
        "not a Read) did not finish: frame 1002: Grade1: out of memory"
    ]
    assert node._RUNNING == {} and [n for n in group.nodes() if n.name().startswith(node.PRECOMP_NAME)] == []


def test_a_plate_precomp_and_matte_precomps_share_one_pass(fake, node, tmp_path, studio_config, use_fake_engine):
    """The plate's precomp (with its pre-roll) and a matte's (the rendered frames only) in one progress bar."""
    use_fake_engine("ok")
    plate, group = make_shot(fake, node, tmp_path, studio_config, first=1001, last=1004)
    grade = fake.nodes.Grade(name="PlateGrade")
    grade.setInput(0, plate)
    frame_range(grade, 1001, 1004)
    group.setInput(0, grade)
    roto = fake.nodes.Roto(name="Roto1")
    group.setInput(int(group.node("garbage")["number"].value()), roto)
    group["frame_range"].setValue("1003-1004")
    group["preroll"].setValue(2)
    precomp = node.prepare_precomp(group, node.make_plan(group))
    assert [(p.write.name(), p.frames) for p in precomp.parts] == [
        ("PrecompWrite", [1001, 1002, 1003, 1004]),
        ("PrecompWrite_garbage", [1003, 1004]),
    ]
    assert precomp.reason == "the input is a Grade node, not a Read; the garbage input: it is a Roto node, not a Read"
    node.delete_precomp(precomp)
    fake.render_hook = writes = NukeWrites(group, {})
    writes.stream = lambda source, frame: {"rgba.alpha": np.zeros((H, W), np.float32)}
    assert node.render_matte(group, background=False).ok
    assert writes.rendered == [
        ("PrecompWrite", 1001), ("PrecompWrite", 1002), ("PrecompWrite", 1003), ("PrecompWrite_garbage", 1003),
        ("PrecompWrite", 1004), ("PrecompWrite_garbage", 1004),
    ]  # fmt: skip
    task = seen(fake.progress_tasks[-1])
    assert "precomp: frame 1003 (3 of 4)" in task.messages


def test_send_to_farm_precomps_the_mattes_then_the_ticket_names_them(fake, node, tmp_path, studio_config,
                                                                    monkeypatch):  # fmt: skip
    watch = tmp_path / "farm"
    watch.mkdir()
    monkeypatch.setenv("RVM_VFX_WATCH_FOLDER", str(watch))
    group, images = matte_shot(fake, node, tmp_path, studio_config)
    group["invert_garbage"].setValue(True)
    fake.render_hook = NukeWrites(group, images)
    job_id = node.send_to_farm(group, background=False)
    ticket = json.loads((watch / "incoming" / f"{job_id}.json").read_text())
    assert Job.from_dict(ticket).to_dict() == ticket
    out = jobs.slash(str(tmp_path / "comp" / "rvm" / "RVMMatte1"))
    assert (ticket["garbage_matte"], ticket["invert_garbage"]) == (
        jobs.slash(str(tmp_path / "plates" / "garbage.####.png")),
        True,
    )
    assert (ticket["core_matte"], ticket["core_channel"]) == (f"{out}/precomp/RVMMatte1.core.####.exr", "A")
    for frame in (1001, 1002, 1003):  # every precomp frame is on disk before the ticket is written
        assert os.path.isfile(contract.format_frame(ticket["core_matte"], frame))
        assert os.path.isfile(contract.format_frame(ticket["holdout_matte"], frame))


# ------------------------------------------------------------------------------- real engine, end to end


def test_a_garbage_matte_clears_the_alpha_through_the_real_engine(fake, node, tmp_path, studio_config):
    """Real ``python -m rvm_vfx render``: a garbage Read (read as it is) and a core Roto (precomped, channel picked)."""
    frames = range(1001, 1004)
    plate = _write_plate(tmp_path / "plates", frames)
    read, group = make_shot(
        fake, node, tmp_path, studio_config, file=plate, colorspace="default (sRGB Encoded Rec.709 (sRGB))"
    )
    group["engine_python"].setValue(sys.executable)
    group["checkpoint"].setValue(str(TFJS_MODEL))
    group["device"].setValue("cpu")
    # Garbage: the left quarter of the frame, as a single-channel PNG sequence beside the plate.
    garbage = np.zeros((96, 128), np.float32)
    garbage[:, :32] = 1.0
    for frame in frames:
        spec = oiio.ImageSpec(128, 96, 1, oiio.UINT8)
        buf = oiio.ImageBuf(spec)
        buf.set_pixels(oiio.ROI(0, 128, 0, 96, 0, 1, 0, 1), garbage[..., None])
        assert buf.write(str(tmp_path / "plates" / f"garbage.{frame}.png")), buf.geterror()
    garbage_read = fake.nodes.Read(name="GarbageRead", first=1001, last=1003)
    garbage_read["file"].setValue(jobs.slash(str(tmp_path / "plates" / "garbage.####.png")))
    group.setInput(int(group.node("garbage")["number"].value()), garbage_read)
    # Core: a Roto whose mask.matte channel covers the bottom-right block; precomped by the stand-in Write.
    roto = fake.nodes.Roto(name="Roto1")
    core = np.zeros((96, 128), np.float32)
    core[64:, 96:] = 1.0
    group.setInput(int(group.node("core")["number"].value()), roto)
    group["core_channel"].setValue("mask.matte")
    fake.render_hook = NukeWrites(group, {roto: {"rgba.alpha": np.zeros_like(core), "mask.matte": core}}, False)
    result = node.render_matte(group, background=False)
    assert result.ok, (result.message, fake.messages)
    out = tmp_path / "comp" / "rvm" / "RVMMatte1"
    job = Job.from_json(out / "RVMMatte1.rvm-job.json")
    assert job.garbage_matte == jobs.slash(str(tmp_path / "plates" / "garbage.####.png"))
    assert (job.core_matte, job.core_channel) == (jobs.slash(str(out / "precomp" / "RVMMatte1.core.####.exr")), "A")
    for frame in frames:
        channels, pixels = _read_exr(str(out / f"RVMMatte1.{frame}.exr"))
        assert channels == ("R", "G", "B", "A")
        alpha = pixels[..., 3]
        assert np.all(alpha[:, :32] == 0.0) and np.all(pixels[:, :32, :3] == 0.0)  # garbage: exactly nothing
        assert np.all(alpha[64:, 96:] == 1.0)  # core: exactly solid
        assert 0.0 < alpha[:, 32:].mean() < 1.0  # elsewhere the network's matte
