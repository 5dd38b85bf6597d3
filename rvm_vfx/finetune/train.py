"""The training loop: the unfolded network, BatchNorm frozen, fitted to the shot's keyframes.

Each step takes one keyframe (with its predecessor when that is a keyframe too, for the temporal term),
runs the plate frames before it without gradients to warm the recurrent state as a render would, then
the keyframe step with gradients, at the render's downsample ratio and through its refiner. BatchNorm
stays in eval mode: a handful of frames would otherwise replace statistics learnt from a large
dataset. The schedule is fixed by the iteration count (cosine decay), so the same seed trains the
same weights; the time limit only caps it.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..model import MattingNetwork
from . import augment
from .data import Shot
from .losses import FOREGROUND_WEIGHT, alpha_loss, foreground_hold

#: Adam's step size, measured on dev clips (docs/finetune.md): the largest that keeps the loss falling steadily.
LEARNING_RATE = 2e-4
#: Train each keyframe without a keyframe before it as a two-frame clip of itself and a moved copy.
MOTION_PAIRS = True
#: Parameters left as they are.
FROZEN_PREFIXES: tuple[str, ...] = ()
#: The share of the steps over which the learning rate ramps up.
WARMUP_SHARE = 0.1
#: The smoothing of the loss that picks the best weights (a step's loss depends on its random crop).
LOSS_SMOOTHING = 0.9
#: How often (steps) the best weights so far are considered for keeping.
KEEP_EVERY = 5

TrainCallback = Callable[[int, float], None]


@dataclass
class Targets:
    """What a keyframe is trained towards: its roto, and the base network's foreground on its plate frame."""

    alpha: dict[int, torch.Tensor]  # frame -> 1×H×W
    foreground: dict[int, torch.Tensor]  # frame -> 3×H×W (model space)


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]
    iterations: int
    losses: list[float] = field(default_factory=list)
    best_iteration: int = 0
    best_loss: float = math.nan
    stopped: str | None = None  # None, "stop" (a signal) or "time_limit"


def autocast_for(device: torch.device, precision: str) -> Any:
    """fp16 and bf16 run the network under autocast (weights stay float32; the refiner opts out itself)."""
    if precision == "fp16":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def run_window(
    network: MattingNetwork,
    frames: torch.Tensor,
    warm_count: int,
    ratio: float,
    autocast: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fgr, pha) of the last ``len(frames) - warm_count`` frames (T×C×H×W), the first ``warm_count`` run
    without gradients to carry the state in."""
    state: list[torch.Tensor | None] = [None] * 4
    with autocast:
        if warm_count:
            with torch.no_grad():
                _fgr, _pha, *state = network(frames[None, :warm_count], downsample_ratio=ratio)
        fgr, pha, *_ = network(frames[None, warm_count:], *state, downsample_ratio=ratio)
    return fgr[0].float(), pha[0].float()


def segment_of(keyframe: int, keyframes: set[int]) -> list[int]:
    """The frames trained with gradients for one keyframe: it, and the frame before when that is a keyframe."""
    return [keyframe - 1, keyframe] if keyframe - 1 in keyframes else [keyframe]


def window_frames(shot: Shot, keyframe: int, keyframes: set[int]) -> tuple[list[int], int]:
    """(the frames of one step, how many of them only warm the state): the segment's first frame's warm-up."""
    segment = segment_of(keyframe, keyframes)
    warm = shot.warm[segment[0]]
    return warm + segment, len(warm)


def trainable(network: MattingNetwork) -> list[torch.nn.Parameter]:
    """The parameters training changes (the others get no gradient, so backward stops where they begin)."""
    chosen = []
    for name, parameter in network.named_parameters():
        learn = not name.startswith(FROZEN_PREFIXES)
        parameter.requires_grad_(learn)
        if learn:
            chosen.append(parameter)
    return chosen


def learning_rate_factor(step: int, iterations: int) -> float:
    """Linear warm-up, then cosine decay to 0 at the last step.

    Adam's first updates are about ``lr`` on every weight whatever the gradient's size: on a pretrained network
    fed a few tiny losses that is a random jolt, so the rate ramps up while the moment estimates settle.
    """
    warmup = max(1, round(iterations * WARMUP_SHARE))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(step, iterations) / iterations))


def train(
    network: MattingNetwork,
    shot: Shot,
    keyframes: list[int],
    targets: Targets,
    *,
    iterations: int,
    ratio: float,
    seed: int,
    device: torch.device,
    precision: str,
    deadline: float,
    stop: threading.Event,
    on_step: TrainCallback | None = None,
) -> TrainResult:
    """Fit ``network`` (in place) to ``keyframes`` of ``shot``; returns the best weights seen."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network.eval()  # BatchNorm statistics stay the base network's
    trained = trainable(network)
    optimizer = torch.optim.Adam(trained, lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, iterations))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    autocast = autocast_for(device, precision)
    keyset = set(keyframes)
    height, width = shot.size
    result = TrainResult(state={}, iterations=0)
    smoothed: float | None = None
    order: list[int] = []
    for step in range(1, iterations + 1):
        if stop.is_set():
            result.stopped = "stop"
            break
        if time.monotonic() >= deadline:
            result.stopped = "time_limit"
            break
        if not order:  # every keyframe once per epoch, in a seeded order
            order = [keyframes[i] for i in rng.permutation(len(keyframes))]
        keyframe = order.pop()
        frames, warm_count = window_frames(shot, keyframe, keyset)
        change = augment.draw(rng, height, width)
        views = [change] * len(frames)
        if MOTION_PAIRS and len(frames) - warm_count == 1:
            # No keyframe before this one: a second view of it, moved a few pixels, makes a two-frame clip whose
            # true motion is known, so the temporal term can teach edges to follow motion without flicker.
            frames, views = frames + [keyframe], views + [augment.moved(rng, change, height, width)]
        plates = torch.cat([v.geometry(shot.frames[f][None]) for f, v in zip(frames, views, strict=True)])
        plates = change.colour(plates).to(device)
        pairs = list(zip(frames, views, strict=True))[warm_count:]
        true_alpha = torch.cat([v.geometry(targets.alpha[f][None]) for f, v in pairs]).to(device)
        held_fgr = change.colour(torch.cat([v.geometry(targets.foreground[f][None]) for f, v in pairs])).to(device)
        fgr, pha = run_window(network, plates, warm_count, ratio, autocast)
        loss = alpha_loss(pha, true_alpha) + FOREGROUND_WEIGHT * foreground_hold(fgr, held_fgr, true_alpha)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        value = float(loss.detach())
        result.losses.append(value)
        result.iterations = step
        smoothed = value if smoothed is None else LOSS_SMOOTHING * smoothed + (1 - LOSS_SMOOTHING) * value
        if step % KEEP_EVERY == 0 or step == iterations:
            _keep_if_best(result, network, step, smoothed)
        if on_step is not None:
            on_step(step, value)
    if result.iterations and result.best_iteration != result.iterations and smoothed is not None:
        _keep_if_best(result, network, result.iterations, smoothed)
    if not result.state:
        result.state = copy.deepcopy(network.state_dict())
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return result


def _keep_if_best(result: TrainResult, network: MattingNetwork, step: int, smoothed: float) -> None:
    if result.state and not smoothed < result.best_loss:
        return
    result.state = {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}
    result.best_iteration = step
    result.best_loss = smoothed


@torch.no_grad()
def predict(
    network: MattingNetwork, shot: Shot, keyframe: int, ratio: float, device: torch.device, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fgr 3×H×W, pha 1×H×W) of a keyframe, its warm-up frames run first, on the whole frame (as a render)."""
    frames = shot.warm[keyframe] + [keyframe]
    plates = torch.stack([shot.frames[f] for f in frames]).to(device)
    network.eval()
    fgr, pha = run_window(network, plates, len(frames) - 1, ratio, autocast_for(device, precision))
    return fgr[-1].cpu(), pha[-1].cpu()


def base_targets(
    network: MattingNetwork, shot: Shot, ratio: float, device: torch.device, precision: str
) -> tuple[Targets, dict[int, torch.Tensor]]:
    """The targets of every keyframe, and the base network's alpha on each (for the 'before' of validation)."""
    alpha: dict[int, torch.Tensor] = {}
    foreground: dict[int, torch.Tensor] = {}
    before: dict[int, torch.Tensor] = {}
    for keyframe in shot.keyframes:
        fgr, pha = predict(network, shot, keyframe.frame, ratio, device, precision)
        alpha[keyframe.frame] = keyframe.alpha[None]
        foreground[keyframe.frame] = fgr
        before[keyframe.frame] = pha
    return Targets(alpha, foreground), before
