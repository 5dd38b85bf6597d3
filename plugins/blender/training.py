"""What "Train on keyframes" asks of the engine, free of ``bpy``: the settings, the command, how its progress reads.

The add-on's training runs ``<engine python> -m rvm_vfx finetune PLATE KEYFRAMES OUT.pth ... --progress json``
(the arguments are the vendored contract's ``finetune_arguments``), then the matte's render with
``OUT.pth`` as its checkpoint. The training takes the plate exactly as the render reads it (the render
Job's frames, colour, downsample, device, precision and base weights), so a setting the engine would
refuse is refused here first with the engine's own message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .engine import EngineProcess, RunState, _format_eta
from .jobspec import JobSpecError
from .vendor.rvm_spec import InputError, parse_frames
from .vendor.rvm_spec.finetune import FinetuneSettings, finetune_arguments
from .vendor.rvm_spec.job import Job
from .vendor.rvm_spec.progress import TRAIN, Event

__all__ = ["FinetuneProcess", "TrainState", "finetune_settings", "keyframe_list", "trained_checkpoint"]

#: The render Job's fields that training takes as they are.
SHARED_FIELDS = ("checkpoint", "downsample", "device", "precision", "ocio_config", "input_colorspace", "layer",
                 "start_frame", "frames")  # fmt: skip


def keyframe_list(text: str) -> list[int]:
    """The keyframes setting (scene frames: ``1,12,24`` or ``1-3``)."""
    if not text.strip():
        raise JobSpecError("list the scene frames of the Mask's keyframes in Keyframes (e.g. 1,12,24)")
    try:
        return parse_frames(text.replace(" ", ""))
    except InputError as exc:
        raise JobSpecError(f"Keyframes: {exc}") from None


def trained_checkpoint(output: str, stem: str) -> str:
    """Where the trained weights (and their ``.json``) go: beside the matte they make, named after the plate."""
    return os.path.join(os.path.dirname(output), f"{stem}_trained.pth")


def keyframes_pattern(output: str, stem: str) -> str:
    """Where a Mask's keyframes are rendered for the engine: beside the matte, numbered like the plate."""
    return os.path.join(os.path.dirname(output), "keyframes", f"{stem}_keyframes.####.exr")


def finetune_settings(job: Job, keyframes: str, iterations: int, time_limit: float) -> FinetuneSettings:
    """The training of the render ``job`` on ``keyframes``, refused with the engine's message when it would be."""
    values = {name: getattr(job, name) for name in SHARED_FIELDS if getattr(job, name) is not None}
    values.update(keyframes=keyframes, iterations=iterations, time_limit=time_limit)
    try:
        return FinetuneSettings.from_dict(values, source="training")
    except InputError as exc:
        raise JobSpecError(str(exc)) from None


@dataclass
class TrainState(RunState):
    """A training's progress: steps (not frames) and the loss."""

    #: The training's own steps and their latest loss (leave-one-out folds count in ``done`` and ``total`` only).
    loss: float | None = None
    steps: int = 0

    def apply(self, event: Event) -> None:
        if event.kind == TRAIN:
            self.done = event.iteration or self.done
            self.total = event.total or self.total
            self.eta_s = event.eta_s
            if event.fields.get("phase", "train") == "train":
                self.steps += 1
                self.loss = event.loss if event.loss is not None else self.loss
            return
        super().apply(event)

    def status_line(self) -> str:
        if not self.total:
            return "RVM Matte: training: starting the engine (loading the model and the keyframes)…  Esc to cancel"
        parts = [f"RVM Matte: training step {self.done}/{self.total}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eta_s is not None and self.done < self.total:
            parts.append(f"ETA {_format_eta(self.eta_s)}")
        return " · ".join(parts) + "  Esc to cancel"


class FinetuneProcess(EngineProcess):
    """``rvm-vfx finetune`` as the engine subprocess: started, followed, cancelled and explained as a render is."""

    def __init__(self, python: str, plate: str, out: str, settings: FinetuneSettings) -> None:
        super().__init__(python, out)  # runs in the checkpoint's folder, as a render runs in its job's
        self.out = os.path.abspath(out)
        self.command = [
            self.python, "-m", "rvm_vfx",
            *finetune_arguments(plate, self.out, settings, progress="json", overwrite=True),
        ]  # fmt: skip
        self.state = TrainState()
