"""The RVM Matte node's "Train on keyframes": the roto written as EXR, ``finetune`` run, then the render with
the trained checkpoint; its progress, its cancel and its refusals.

Against the Nuke 15 stand-in (``tests/nuke_stub``) and the protocol-speaking fake engine, whose ``finetune``
reports steps and a loss and records the command it was given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .nuke_stub import plugin_module
from .nuke_stub.fake_nuke import seen
from .test_nuke_glue import fake, make_shot, no_engine_outlives_its_test, node, studio_config, use_fake_engine

__all__ = ["fake", "no_engine_outlives_its_test", "node", "studio_config", "use_fake_engine"]  # fixtures

jobs = plugin_module("rvm_nuke.jobs")
training = plugin_module("rvm_nuke.training")


@pytest.fixture
def train_node(node):
    """The training glue, imported once the stand-in ``nuke`` is in place (it uses ``node``'s)."""
    return plugin_module("rvm_nuke.train_node")


def _shot_with_roto(fake, node, tmp_path, config, keyframes="1001,1003", steps=4):
    plate, group = make_shot(fake, node, tmp_path, config)
    roto = fake.nodes.Roto(name="Roto1")
    roto.setInput(0, plate)
    group.setInput(node._input_number(group, training.KEYFRAMES_INPUT), roto)
    group["keyframe_list"].setValue(keyframes)
    group["train_iterations"].setValue(steps)
    return group


def _out(tmp_path: Path) -> Path:
    return tmp_path / "comp" / "rvm" / "RVMMatte1"


def test_the_node_has_a_keyframes_input_and_the_training_knobs(fake, node, tmp_path, studio_config):
    _, group = make_shot(fake, node, tmp_path, studio_config)
    assert group.node(training.KEYFRAMES_INPUT).Class() == "Input"
    assert node._input_number(group, training.KEYFRAMES_INPUT) == 1 + len(jobs.MATTES)  # after the plate and mattes
    knobs = ("keyframe_list", "train_iterations", "train_time_limit")
    assert [group[name].value() for name in knobs] == ["", 150, 10]  # the engine's defaults
    assert "rvm_nuke.node.on_train(nuke.thisNode())" in group["train"].command()
    names = list(group.knobs())
    assert names.index("reload") < names.index("keyframe_list") < names.index("train") < names.index("status")


def test_train_writes_the_roto_trains_then_renders_with_the_trained_weights(
    fake, node, train_node, tmp_path, studio_config, use_fake_engine
):
    launched = use_fake_engine("ok")
    group = _shot_with_roto(fake, node, tmp_path, studio_config)
    group["engine_python"].setValue("/venvs/rvm/bin/python")
    writes = []

    def render_hook(write, first, last):
        knobs = {k: write[k].value() for k in ("file", "file_type", "channels", "datatype", "raw")}
        writes.append((knobs, write.input(0), first, last))

    fake.render_hook = render_hook
    result = train_node.train_on_keyframes(group, background=False)
    assert result.ok and fake.messages == [] and launched == ["/venvs/rvm/bin/python"]

    out = _out(tmp_path)
    pattern = jobs.slash(str(out / "keyframes" / "RVMMatte1.keyframes.####.exr"))
    trained = jobs.slash(str(out / "RVMMatte1.trained.pth"))
    # The keyframes input's alpha, written at the keyframes only, from the group's own keyframes Input.
    roto_knobs = {"file": pattern, "file_type": "exr", "channels": "alpha", "datatype": "16 bit half", "raw": True}
    assert writes == [
        (roto_knobs, group.node(training.KEYFRAMES_INPUT), 1001, 1001),
        (roto_knobs, group.node(training.KEYFRAMES_INPUT), 1003, 1003),
    ]
    assert all(w in fake.deleted for w, *_ in fake.executed)  # the precomp Write is gone afterwards
    job = json.loads((out / "RVMMatte1.rvm-job.json").read_text())
    command = json.loads((out / "fake-finetune.json").read_text())["arguments"]
    assert command == [
        "finetune", job["input"], pattern, trained, "--frames", "1001-1003", "--iterations", "4",
        "--ocio-config", job["ocio_config"], "--input-colorspace", "ACEScg", "--progress", "json", "--overwrite",
    ]  # fmt: skip
    # The render ran with the trained checkpoint: its job names it, and its frames are on disk.
    assert job["checkpoint"] == trained
    assert sorted(p.name for p in out.glob("RVMMatte1.1*.exr")) == [f"RVMMatte1.{f}.exr" for f in (1001, 1002, 1003)]
    assert group.node(node.SWITCH_NAME)["which"].value() == 1
    assert group["status"].value().startswith(f"trained 4 step(s), loss 0.1250, weights {trained}; rendered 3 frame")
    messages = seen(fake.progress_tasks[0]).messages
    assert "training: step 2 of 4, loss 0.2500, about 2 s left" in messages
    assert "training: held-out keyframe 1001: MAD 12.5 before, 6.25 after" in messages
    assert "frame 1002 (2 of 3), 2.50 fps, about 0 s left" in messages  # then the render's own progress


def test_cancel_during_training_renders_nothing(fake, node, train_node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("wait")
    group = _shot_with_roto(fake, node, tmp_path, studio_config)
    fake.cancel_after_progress = 5  # the precomp's start, 2 frames and done, then the first training step
    result = train_node.train_on_keyframes(group, background=False)
    assert result.status == "cancelled" and not result.killed  # the engine stopped when asked
    assert fake.messages == []
    assert group["status"].value() == "cancelled: training stopped after 1 step(s); nothing was rendered"
    out = _out(tmp_path)
    assert not list(out.glob("RVMMatte1.1*.exr")) and group.node(node.SWITCH_NAME)["which"].value() == 0
    assert (out / "RVMMatte1.trained.pth").read_bytes() == b"trained weights"  # the best weights so far are kept


def test_a_training_error_is_a_message_and_nothing_is_rendered(
    fake, node, train_node, tmp_path, studio_config, use_fake_engine
):
    use_fake_engine("error")
    group = _shot_with_roto(fake, node, tmp_path, studio_config)
    result = train_node.train_on_keyframes(group, background=False)
    assert result.status == "error"
    pattern = jobs.slash(str(_out(tmp_path) / "keyframes" / "RVMMatte1.keyframes.####.exr"))
    assert fake.messages == [
        f"RVM Matte RVMMatte1: the render failed.\n\ntraining failed: {pattern}: keyframe 1002 is 64x48; the plate "
        "is 96x64"
    ]
    assert not list(_out(tmp_path).glob("RVMMatte1.1*.exr"))


@pytest.mark.parametrize(
    ("keyframes", "connect", "message"),
    [
        ("1001", False, "Connect the roto (any node with the keyframes' matte in alpha, e.g. a Roto) to the "
                        "'keyframes' input of RVMMatte1."),
        ("", True, "knob 'keyframes': list the frames whose roto to learn, e.g. 1001,1024"),
        ("1001,1009", True, "knob 'keyframes': frame 1009 is not in the frame range 1001-1003"),
        ("1001-x", True, "knob 'keyframes': "),
    ],
)  # fmt: skip
def test_refusals_come_before_any_work(fake, node, tmp_path, studio_config, use_fake_engine, keyframes, connect,
                                       message):  # fmt: skip
    launched = use_fake_engine("ok")
    if connect:
        group = _shot_with_roto(fake, node, tmp_path, studio_config, keyframes=keyframes)
    else:
        _, group = make_shot(fake, node, tmp_path, studio_config)
        group["keyframe_list"].setValue(keyframes)
    assert node.on_train(group) is None
    [shown] = fake.messages
    assert shown.startswith(f"RVM Matte RVMMatte1: {message}"), shown
    assert launched == [] and fake.executed == [] and not _out(tmp_path).exists()


def test_steps_out_of_the_engines_range_are_refused_with_its_message(fake, node, tmp_path, studio_config,
                                                                      use_fake_engine):  # fmt: skip
    use_fake_engine("ok")
    group = _shot_with_roto(fake, node, tmp_path, studio_config, steps=0)
    node.on_train(group)
    [shown] = fake.messages
    assert shown.startswith("RVM Matte RVMMatte1: training: finetune field 'iterations': ")
    assert fake.executed == []


def test_a_second_click_while_training_is_refused(fake, node, tmp_path, studio_config, use_fake_engine):
    use_fake_engine("ok")
    group = _shot_with_roto(fake, node, tmp_path, studio_config)
    node._RUNNING[group.fullName()] = node._Run()
    node.on_train(group)
    assert fake.messages == ["RVM Matte RVMMatte1: RVMMatte1 is already rendering; cancel it in the progress "
                             "dialog first."]  # fmt: skip


def test_train_on_keyframes_end_to_end_with_the_real_engine(fake, node, train_node, tmp_path, studio_config):
    """Real ``rvm-vfx finetune`` then ``render`` through the glue; a stand-in Write writes the Roto's alpha."""
    import numpy as np
    import OpenImageIO as oiio

    from .conftest import TFJS_MODEL
    from .test_nuke_glue import _read_exr, _write_plate

    plate = _write_plate(tmp_path / "plates", range(1001, 1004))
    _, group = make_shot(fake, node, tmp_path, studio_config, file=plate,
                         colorspace="default (sRGB Encoded Rec.709 (sRGB))")  # fmt: skip
    for name, value in (("engine_python", sys.executable), ("checkpoint", str(TFJS_MODEL)), ("device", "cpu")):
        group[name].setValue(value)
    out = _out(tmp_path)
    assert node.render_matte(group, background=False).ok  # the base network's matte, to compare with
    base = {f: _read_exr(str(out / f"RVMMatte1.{f}.exr"))[1][..., 3] for f in (1001, 1002, 1003)}

    roto = fake.nodes.Roto(name="Roto1")
    group.setInput(node._input_number(group, training.KEYFRAMES_INPUT), roto)
    group["keyframe_list"].setValue("1001,1003")
    group["train_iterations"].setValue(3)
    box = np.zeros((96, 128, 1), np.float32)
    box[24:72, 32:96] = 1.0  # the artist's roto: a box, far from the network's matte of a person

    def nuke_renders_the_roto(write, first, last):
        """What Nuke would write for ``channels alpha``: one channel named A, half float."""
        assert write["channels"].value() == "alpha"
        for frame in range(first, last + 1):
            spec = oiio.ImageSpec(128, 96, 1, oiio.HALF)
            spec.channelnames = ("A",)
            buf = oiio.ImageBuf(spec)
            buf.set_pixels(oiio.ROI(0, 128, 0, 96, 0, 1, 0, 1), box)
            path = write["file"].value().replace("####", str(frame))
            assert buf.write(path), buf.geterror()

    fake.render_hook = nuke_renders_the_roto
    fake.answers.append(True)  # "Replace them?": the base network's frames are there
    result = train_node.train_on_keyframes(group, background=False)
    assert result.ok, (result.message, fake.messages)
    trained = out / "RVMMatte1.trained.pth"
    sidecar = json.loads(trained.with_suffix(".json").read_text())
    assert sidecar["keyframes"]["frames"] == [1001, 1003] and sidecar["iterations"]["done"] == 3
    job = json.loads((out / "RVMMatte1.rvm-job.json").read_text())
    assert job["checkpoint"] == jobs.slash(str(trained))
    tuned = {f: _read_exr(str(out / f"RVMMatte1.{f}.exr"))[1][..., 3] for f in (1001, 1002, 1003)}
    assert max(float(np.abs(tuned[f] - base[f]).max()) for f in tuned) > 1e-3  # the trained weights made it
    # 3 training steps, then one step of each of the 2 leave-one-out folds: the dialog counts all 5, the status
    # tells the training's own steps and loss.
    loss = sidecar["loss_curve"][-1]
    assert group["status"].value().startswith(f"trained 3 step(s), loss {loss:.4f}, weights ")
    messages = seen(fake.progress_tasks[-1]).messages
    assert any(m.startswith("training: step 5 of 5, loss ") for m in messages)
