"""What "Train on keyframes" decides, free of Nuke: the keyframes, where their roto and the weights go, the commands.

The RVM Matte node's ``keyframes`` input carries the artist's roto in alpha (a Roto node, a Read of
painted mattes). On "Train on keyframes" the node writes that alpha at the frames of its keyframe list
as EXR (a precomp Write, like the plate's), runs ``rvm-vfx finetune`` on the plate with those mattes,
then renders the matte with the trained checkpoint. Everything about that which can be decided without
Nuke is decided here, from the engine's own contract (``vendor.rvm_spec.finetune``), so a setting the
engine would refuse is refused before any work, with the engine's message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .jobs import KnobSpec, PluginError, safe_name, slash
from .vendor.rvm_spec import InputError, parse_frames
from .vendor.rvm_spec.finetune import FIELDS_BY_NAME, FinetuneSettings, finetune_arguments

#: The node's input that carries the roto (after the plate and the issue-13 matte inputs).
KEYFRAMES_INPUT = "keyframes"
#: The Job fields that training takes as the render has them: it must read the plate as the render does.
SHARED_FIELDS = ("checkpoint", "downsample", "device", "precision", "ocio_config", "input_colorspace", "layer",
                 "start_frame", "frames")  # fmt: skip


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


#: The knobs of training, in panel order after the node's own (``node.add_knobs`` makes them from this table).
KNOBS = (
    KnobSpec("keyframe_list", "string", "keyframes", "", (),
             "Frames whose roto (the 'keyframes' input's alpha) the network learns, e.g. 1001,1024,1048. "
             "They must be frames of the frame range."),
    KnobSpec("train_iterations", "int", "training steps", FIELDS_BY_NAME["iterations"].default, (),
             _sentence(FIELDS_BY_NAME["iterations"].help)),
    KnobSpec("train_time_limit", "int", "time limit (min)", int(FIELDS_BY_NAME["time_limit"].default), (),
             _sentence(FIELDS_BY_NAME["time_limit"].help)),
    KnobSpec("train", "button", "Train on keyframes", None, (),
             "Write the keyframes' roto, fine-tune the network on this shot, then render the matte with it."),
)  # fmt: skip


def keyframe_frames(text: str, frames: str) -> list[int]:
    """The keyframe list knob as frames, each one a frame the render covers (so the plate has it)."""
    if not str(text or "").strip():
        raise PluginError("knob 'keyframes': list the frames whose roto to learn, e.g. 1001,1024")
    try:
        keyframes = parse_frames(str(text).replace(" ", ""))
    except InputError as exc:
        raise PluginError(f"knob 'keyframes': {exc}") from None
    rendered = set(parse_frames(frames))
    outside = [frame for frame in keyframes if frame not in rendered]
    if outside:
        raise PluginError(f"knob 'keyframes': frame {outside[0]} is not in the frame range {frames}")
    return keyframes


def keyframes_pattern(output: str, node_name: str) -> str:
    """Where the roto is written for training: beside the matte, as the plate's precomp is."""
    return slash(os.path.join(os.path.dirname(output), "keyframes", f"{safe_name(node_name)}.keyframes.####.exr"))


def trained_checkpoint(output: str, node_name: str) -> str:
    """The trained weights (and ``.json`` sidecar beside them): beside the matte they made."""
    return slash(os.path.join(os.path.dirname(output), f"{safe_name(node_name)}.trained.pth"))


def keyframes_write_knobs(pattern: str) -> list[tuple[str, Any]]:
    """The Write of the roto: its alpha alone, half-float EXR, raw (a matte is data, never converted)."""
    return [
        ("file", pattern),
        ("file_type", "exr"),
        ("channels", "alpha"),
        ("datatype", "16 bit half"),
        ("compression", "Zip (1 scanline)"),
        ("raw", True),
        ("create_directories", True),
    ]


def finetune_settings(job: Mapping[str, Any], settings: Mapping[str, Any], keyframes: str) -> FinetuneSettings:
    """The training's settings: the render's plate reading and weights, the node's steps and time limit."""
    values = {name: job[name] for name in SHARED_FIELDS if job.get(name) is not None}
    values.update(keyframes=keyframes, iterations=settings["train_iterations"],
                  time_limit=settings["train_time_limit"])  # fmt: skip
    try:
        return FinetuneSettings.from_dict(values, source="training")
    except InputError as exc:
        raise PluginError(str(exc)) from None


def finetune_command(launcher: list[str], job: Mapping[str, Any], settings: FinetuneSettings, out: str) -> list[str]:
    """``<engine> finetune PLATE KEYFRAMES OUT.pth ... --progress json --overwrite``: a new training replaces
    the node's last one (it is the artist's button, pressed again after a better roto)."""
    return [*launcher, *finetune_arguments(job["input"], out, settings, progress="json", overwrite=True)]


def trained_job(job: Mapping[str, Any], checkpoint: str) -> dict[str, Any]:
    """The render's Job with the trained weights."""
    return {**job, "checkpoint": checkpoint}
