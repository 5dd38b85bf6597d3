"""A ticket's ``"finetune": {...}`` stage: train the network on the shot's roto keyframes, then render with it.

``{"input": "shot/plate.####.exr", "output": ..., "finetune": {"keyframes": "shot/roto.####.exr",
"iterations": 150}}`` is checked, before anything runs, like the rest of the ticket: every setting by
``rvm_vfx.spec.finetune`` (a wrong one named as ``finetune field 'X'``), the keyframes (pattern and every
file of it, symlinks resolved) inside an allowed input root, an OCIO config as the Job's, the base weights
from the models dir. Settings the Job also has (device, precision, plate colour and layer, downsample) are
the Job's unless the stage says otherwise: training reads the plate as the render does.

Where it ends up: the trained checkpoint and its JSON sidecar in the job folder (``finetune/``, so in
``done/`` with the job) and, copied atomically, in ``<models-dir>/trained/<job id>.pth`` where a later
ticket can name it as ``"checkpoint": "trained/<job id>.pth"``; the render uses that copy.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rvm_vfx.errors import InputError
from rvm_vfx.sequence import ImageSequence
from rvm_vfx.spec.finetune import PATH_SETTINGS, FinetuneSettings
from rvm_vfx.spec.frames import format_frames
from rvm_vfx.spec.job import Job

from .config import WorkerConfig
from .fsutil import inside
from .train_task import TRAIN_DIR

#: The ticket's key for the stage.
FINETUNE = "finetune"
#: Settings the Job declares too: unless the stage gives its own, it trains as the Job renders.
INHERITED = ("device", "precision", "ocio_config", "input_colorspace", "layer", "start_frame", "downsample")
#: The folder under the models dir where trained checkpoints are filed for later tickets.
TRAINED_DIR = "trained"
#: How a bad setting is named: ``ticket field 'finetune': finetune field 'time_limit': ...``.
_SOURCE = f"ticket field '{FINETUNE}'"


@dataclass(frozen=True)
class FinetuneStage:
    """A checked stage: the settings with absolute, confined paths (``checkpoint`` the base weights), the plate
    it trains on (the Job's input) and the keyframes found."""

    settings: FinetuneSettings
    plate: str
    keyframes: tuple[int, ...]

    def trained_name(self, job_id: str) -> str:
        """The checkpoint's file name, in the job folder and under ``<models-dir>/trained/``: unique per job."""
        return f"{job_id}.pth"


def check_finetune(
    raw: Any, job: Job, ticket_checkpoint: str | None, config: WorkerConfig, input_base: Path | None,
    input_roots: list[Path],
) -> FinetuneStage:  # fmt: skip
    """The ticket's stage, validated and confined; ``job`` is the placed Job, ``ticket_checkpoint`` its
    checkpoint as the ticket gave it (the default base weights)."""
    from .ticket import _PLACE, _Places, resolve_checkpoint  # one set of path rules for every field of a ticket

    if not isinstance(raw, dict):
        raise InputError(f"ticket field 'finetune': expected a JSON object, got {type(raw).__name__}")
    base = raw.get("checkpoint")
    if base is not None and ticket_checkpoint is not None and base != ticket_checkpoint:
        raise InputError(
            f"ticket field 'finetune.checkpoint': {base!r} differs from the ticket's 'checkpoint' "
            f"{ticket_checkpoint!r}; the render uses the trained weights, so name the base weights once"
        )
    merged = {**{name: getattr(job, name) for name in INHERITED if name not in raw}, **raw}
    merged["checkpoint"] = base if base is not None else ticket_checkpoint
    settings = FinetuneSettings.from_dict(merged, source=_SOURCE)
    places = _Places(
        input_base or (config.allow_input_roots[0] if config.allow_input_roots else None),
        input_roots,
        config.models_dir,
        config.output_root,
    )
    changes: dict[str, Any] = {}
    for name, kind in PATH_SETTINGS.items():
        value, place = getattr(settings, name), _PLACE[kind]
        if value and place is not None:
            changes[name] = place(f"finetune.{name}", value, places)
    changes["checkpoint"] = str(resolve_checkpoint(settings.checkpoint, config, field="finetune.checkpoint"))
    settings = FinetuneSettings.from_dict({**settings.to_dict(), **changes}, source=_SOURCE)
    keyframes = _keyframes(settings.keyframes, input_roots)
    return FinetuneStage(settings=settings, plate=job.input, keyframes=keyframes)


def _keyframes(pattern: str, input_roots: list[Path]) -> tuple[int, ...]:
    """The keyframes on disk, each file inside an input root (a symlinked matte may point anywhere)."""
    try:
        sequence = ImageSequence(pattern)
        frames = sequence.frames()
    except InputError as exc:
        raise InputError(f"ticket field 'finetune.keyframes': {exc}") from None
    if not frames:
        raise InputError(f"ticket field 'finetune.keyframes': {pattern}: no keyframe on disk")
    for frame in frames:
        if not inside(sequence.path(frame), input_roots):
            raise InputError(
                f"ticket field 'finetune.keyframes': keyframe {sequence.path(frame)} resolves outside the allowed "
                "input roots"
            )
    return tuple(frames)


def install_trained(checkpoint: Path, sidecar: Path, models_dir: Path) -> Path:
    """Copy a trained checkpoint and its sidecar into ``<models-dir>/trained/``; returns the checkpoint's copy.

    Each file lands by one rename from a hidden temporary, the sidecar first: whoever sees the checkpoint
    (a worker resolving a later ticket) sees it whole and its sidecar beside it.
    """
    folder = models_dir / TRAINED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for source in (sidecar, checkpoint):
        target = folder / source.name
        temporary = folder / f".{source.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    return folder / checkpoint.name


def finetune_report(stage: FinetuneStage, trained: dict[str, Any]) -> dict[str, Any]:
    """The job report's ``finetune`` entry: what was trained on, where the weights are, how training went."""
    installed = Path(trained["installed"])
    return {
        "keyframes": format_frames(list(stage.keyframes)),
        "base_checkpoint": stage.settings.checkpoint,
        "checkpoint": str(installed),
        "sidecar": str(installed.with_suffix(".json")),
        # In the job folder, which moves to done/: relative to it.
        "files": [f"{TRAIN_DIR}/{Path(trained[key]).name}" for key in ("checkpoint", "sidecar")],
        "settings": stage.settings.to_dict(),
        "training": trained.get("report", {}),
    }
