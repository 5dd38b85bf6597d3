"""``finetune()``: a shot's keyframes in, a checkpoint in the official layout and its JSON sidecar out.

    load + check keyframes and plate -> base predictions -> train -> OUT.pth -> leave-one-out folds -> OUT.json

The checkpoint is the trained, unfolded network's own state_dict: every key, shape and dtype of the
official layout, so ``load_model`` and the official code load it strictly, and the render folds it
for inference as it folds any checkpoint. It is written before validation runs, so a stop during
validation loses nothing but the remaining folds.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import InputError, OutputError, write_error
from ..model import auto_downsample_ratio
from ..quality.metrics import mad
from ..session import pick_device
from ..spec.finetune import FinetuneSettings
from ..spec.progress import START, TRAIN, VALIDATION, WARNING, event
from ..weights import load_model, resolve_checkpoint, save_checkpoint, sha256_of
from . import augment, losses, train
from .data import WARM_FRAMES, Shot, load_shot

ProgressCallback = Callable[[Mapping[str, Any]], None]

#: Each leave-one-out fold trains with this share of the run's iterations divided by the number of folds, so
#: validation costs about half of the training itself. Its "after" therefore understates what the full run
#: does for a frame it never saw; it answers whether training on the other keyframes helps this one.
FOLD_SHARE = 0.5


@dataclass
class FinetuneRequest:
    """A fine-tuning run: the plate, where the checkpoint goes (``OUT.pth``; ``OUT.json`` beside it), the settings."""

    plate: str
    out: str
    settings: FinetuneSettings
    overwrite: bool = False

    @property
    def sidecar(self) -> str:
        return str(Path(self.out).with_suffix(".json"))


@dataclass
class FinetuneReport:
    """What a run did; ``to_dict`` is what ``done`` (or ``cancelled``) carries."""

    checkpoint: str
    sidecar: str
    iterations: int
    planned: int
    loss: float
    elapsed_s: float
    stopped: str | None
    validation: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.iterations,
            "total": self.planned,
            "checkpoint": self.checkpoint,
            "sidecar": self.sidecar,
            "loss": self.loss,
            "elapsed_s": round(self.elapsed_s, 3),
            "stopped": self.stopped,
            "validation": self.validation,
            "warnings": self.warnings,
        }


class _Reporter:
    """Sends progress events (if anyone listens) and keeps the warnings for the report."""

    def __init__(self, progress: ProgressCallback | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.warnings: list[str] = []

    def send(self, kind: str, **fields: Any) -> None:
        if self.progress is not None:
            self.progress(event(kind, **fields))

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.send(WARNING, message=message)

    def step(self, phase: str, loss: float) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * max(0, self.total - self.done)
        self.send(
            TRAIN,
            iteration=self.done,
            total=self.total,
            loss=round(loss, 6),
            eta_s=round(eta, 1),
            elapsed_s=round(elapsed, 2),
            phase=phase,
        )


def fold_iterations(iterations: int, keyframes: int) -> int:
    """The iterations of each leave-one-out fold (none with fewer than two keyframes)."""
    if keyframes < 2 or FOLD_SHARE <= 0:
        return 0
    return max(1, math.ceil(iterations * FOLD_SHARE / keyframes))


def check_destination(request: FinetuneRequest) -> None:
    """Refuse, before any work, to replace a checkpoint or sidecar without ``overwrite``, or to write into nothing."""
    for path in (request.out, request.sidecar):
        if os.path.exists(path) and not request.overwrite:
            raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    if Path(request.out).suffix.lower() != ".pth":
        raise InputError(f"{request.out}: the checkpoint is written as a .pth state_dict; name it OUT.pth")
    parent = Path(request.out).resolve().parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{parent}: is not a folder")


def _check_precision(device: torch.device, precision: str) -> None:
    if precision == "fp16" and device.type == "cpu":
        raise InputError("finetune field 'precision': fp16 needs a GPU (cuda or mps); on the CPU use fp32 or bf16")


def finetune(
    request: FinetuneRequest,
    *,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> FinetuneReport:
    """Train the base network on the shot's keyframes and write ``OUT.pth`` and ``OUT.json``.

    ``stop`` set (SIGTERM in the CLI) ends training at the next step; the best weights so far are still written.
    """
    started = time.monotonic()
    stop = stop or threading.Event()
    settings = request.settings
    check_destination(request)
    device = pick_device(settings.device)
    _check_precision(device, settings.precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_path = resolve_checkpoint(settings.checkpoint)
    base_sha = sha256_of(base_path)
    base = load_model(base_path)
    shot = load_shot(request.plate, settings)
    height, width = shot.size
    ratio = auto_downsample_ratio(height, width) if settings.downsample == "auto" else float(settings.downsample)
    keyframes = shot.keyframe_numbers
    per_fold = fold_iterations(settings.iterations, len(keyframes))
    reporter = _Reporter(progress, settings.iterations + per_fold * len(keyframes))
    for message in shot.warnings:
        reporter.warn(message)
    reporter.send(START, total=reporter.total, output=request.out)
    deadline = started + settings.time_limit * 60.0
    base = base.to(device)
    targets, before = train.base_targets(base, shot, ratio, device, settings.precision)
    network = _copy_of(base)
    result = train.train(
        network,
        shot,
        keyframes,
        targets,
        iterations=settings.iterations,
        ratio=ratio,
        seed=settings.seed,
        device=device,
        precision=settings.precision,
        deadline=deadline,
        stop=stop,
        on_step=lambda _step, loss: reporter.step("train", loss),
    )
    train_s = time.monotonic() - started
    if result.stopped == "time_limit":
        reporter.warn(
            f"time limit of {settings.time_limit:g} min reached after {result.iterations} of "
            f"{settings.iterations} iterations; the best weights so far are written"
        )
    _write_checkpoint(result.state, request.out)
    validation: list[dict[str, Any]] = []
    if per_fold and result.stopped is None:
        validation = _validate(base, shot, targets, before, per_fold, ratio, device, settings, deadline, stop, reporter)
    elif len(keyframes) < 2:
        pass  # nothing to hold out
    else:
        reporter.warn("leave-one-out validation skipped: training was stopped before it could run")
    elapsed = time.monotonic() - started
    stopped = result.stopped or ("stop" if stop.is_set() else None)
    sidecar = _sidecar(
        request, shot, base_path, base_sha, ratio, result, validation, train_s, elapsed, per_fold, device
    )
    sidecar["warnings"] = reporter.warnings
    sidecar["stopped"] = stopped
    _write_json(request.sidecar, sidecar)
    return FinetuneReport(
        checkpoint=request.out,
        sidecar=request.sidecar,
        iterations=result.iterations,
        planned=settings.iterations,
        loss=result.best_loss,
        elapsed_s=elapsed,
        stopped=stopped,
        validation=validation,
        warnings=reporter.warnings,
    )


def _copy_of(network: torch.nn.Module) -> Any:
    import copy

    return copy.deepcopy(network)


def _validate(
    base: Any,
    shot: Shot,
    targets: train.Targets,
    before: dict[int, torch.Tensor],
    iterations: int,
    ratio: float,
    device: torch.device,
    settings: FinetuneSettings,
    deadline: float,
    stop: threading.Event,
    reporter: _Reporter,
) -> list[dict[str, Any]]:
    """Train once per keyframe on the others (``iterations`` each) and score the one held out, before and after."""
    keyframes = shot.keyframe_numbers
    results = []
    for held in keyframes:
        network = _copy_of(base)
        fold = train.train(
            network,
            shot,
            [k for k in keyframes if k != held],
            targets,
            iterations=iterations,
            ratio=ratio,
            seed=settings.seed + 1 + held,
            device=device,
            precision=settings.precision,
            deadline=deadline,
            stop=stop,
            on_step=lambda _step, loss: reporter.step("validation", loss),
        )
        if fold.stopped is not None:
            reporter.warn(f"leave-one-out validation stopped at keyframe {held} ({fold.stopped})")
            break
        network.load_state_dict(fold.state)
        _fgr, after = train.predict(network, shot, held, ratio, device, settings.precision)
        truth = targets.alpha[held][0].numpy()
        mad_before = round(mad(before[held][0].numpy(), truth), 4)
        mad_after = round(mad(after[0].numpy(), truth), 4)
        entry = {"keyframe": held, "mad_before": mad_before, "mad_after": mad_after, "iterations": fold.iterations}
        results.append(entry)
        reporter.send(VALIDATION, **entry)
        if mad_after > mad_before:
            reporter.warn(
                f"keyframe {held}: training on the other keyframes made it worse (MAD x1e3 {mad_before:g} -> "
                f"{mad_after:g}); the shot may need more keyframes near it"
            )
    return results


def _write_checkpoint(state: dict[str, torch.Tensor], out: str) -> None:
    try:
        save_checkpoint(state, out)
    except (OSError, RuntimeError) as exc:
        raise write_error(out, "cannot write checkpoint", exc) from exc


def _write_json(path: str, data: dict[str, Any]) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, "cannot write sidecar", exc) from exc


def _sidecar(
    request: FinetuneRequest,
    shot: Shot,
    base_path: Path,
    base_sha: str,
    ratio: float,
    result: train.TrainResult,
    validation: list[dict[str, Any]],
    train_s: float,
    elapsed: float,
    per_fold: int,
    device: torch.device,
) -> dict[str, Any]:
    settings = request.settings
    return {
        "rvm_vfx": __version__,
        "checkpoint": os.path.abspath(request.out),
        "sha256": sha256_of(request.out),
        "base_checkpoint": {"path": str(base_path), "sha256": base_sha},
        "plate": request.plate,
        "keyframes": {
            "pattern": settings.keyframes,
            "frames": shot.keyframe_numbers,
            "files": [k.path for k in shot.keyframes],
        },
        "settings": settings.to_dict(),
        "size": [shot.size[1], shot.size[0]],
        "downsample_ratio": ratio,
        "device": str(device),
        "torch": torch.__version__,
        "input_colorspaces": shot.colorspaces,
        "iterations": {"done": result.iterations, "planned": settings.iterations, "best": result.best_iteration},
        "time": {"train_s": round(train_s, 3), "total_s": round(elapsed, 3)},
        "device_peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "loss_curve": [round(v, 6) for v in result.losses],
        "best_loss": result.best_loss,
        "validation": {"iterations_per_fold": per_fold, "keyframes": validation},
        "training": {
            "learning_rate": train.LEARNING_RATE,
            "schedule": "Adam, cosine decay over the planned iterations",
            "warm_frames": WARM_FRAMES,
            "losses": "L1 + Laplacian pyramid on alpha, temporal where keyframes are consecutive, foreground hold",
            "temporal_weight": losses.TEMPORAL_WEIGHT,
            "foreground_weight": losses.FOREGROUND_WEIGHT,
            "augmentation": {
                "crop": augment.CROP_RANGE,
                "scale": augment.SCALE_RANGE,
                "gain": augment.GAIN_RANGE,
                "gamma": augment.GAMMA_RANGE,
                "flip": "horizontal, p=0.5",
            },
        },
    }


__all__ = ["FinetuneReport", "FinetuneRequest", "finetune", "fold_iterations"]
