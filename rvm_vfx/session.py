"""MattingSession: a loaded network plus its recurrent memory across a frame range.

RVM's quality comes from what it remembers of earlier frames (r1..r4). The session owns that memory,
so a render can carry it across thousands of frames, drop it where a shot changes size, and save and
restore it exactly so that a resumed render writes the very frames an uninterrupted one would.
It is also where speed lives: the network is converted once to its inference form, and every step
reuses the same layout and dtype.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from contextlib import nullcontext, suppress
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, write_error
from .model import MattingNetwork, auto_downsample_ratio
from .model.batchnorm_folding import optimize_for_inference
from .spec.job import DEVICES

log = logging.getLogger(__name__)

# The torch dtype of each of the Job's precisions (``spec.job.PRECISIONS``, the same keys in the same order).
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SNAPSHOT_VERSION = 1

#: The smallest image (height, width) the network takes. Every stride-2 step of both encoders (3×3
#: convolutions, ResNet's max pool) and the decoder's 2×2 ceil-mode average pools map a side of n to
#: ceil(n / 2), never to 0; the LR-ASPP and squeeze-excite pools are global; the decoder crops its ×2
#: upsampling to the skip's size; the refiners' 3×3 box filters are zero-padded. So one pixel is enough,
#: as running every variant and refiner on 1×N and N×1 images confirms; what fails is a ratio so small
#: that the bilinear downsample rounds a side to 0.
MIN_NETWORK_INPUT = (1, 1)


def network_input_size(height: int, width: int, ratio: float) -> tuple[int, int]:
    """The (height, width) the network runs at: ``F.interpolate``'s rule, floor(side × ratio) in doubles."""
    if ratio == 1:
        return height, width
    return math.floor(float(height) * ratio), math.floor(float(width) * ratio)


def smallest_ratio(height: int, width: int, significant: int = 3) -> float:
    """The smallest ratio, rounded up to ``significant`` digits, at which the network can take this plate."""
    need_h, need_w = MIN_NETWORK_INPUT
    exact = max(Fraction(need_h, height), Fraction(need_w, width))
    if exact >= 1:
        return 1.0
    scale = 10 ** (significant - 1 - math.floor(math.log10(exact)))
    steps = math.ceil(exact * scale)
    # Rounding in binary may leave a side a hair under a whole pixel: step up until the network's own rule agrees.
    while True:
        ratio = min(steps / scale, 1.0)
        size = network_input_size(height, width, ratio)
        if size[0] >= need_h and size[1] >= need_w:
            return ratio
        steps += 1


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA device is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' was requested but MPS is not available")
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; expected {', '.join(DEVICES[:-1])} or {DEVICES[-1]}")
    return torch.device(device)


def _decimal(value: float) -> str:
    """A ratio as an artist types it: shortest round-trip digits, never in exponent form (0.00001, not 1e-05)."""
    return format(Decimal(repr(float(value))), "f")


class MattingSession:
    """Feeds consecutive frames through the network, keeping r1..r4 between calls.

    ``step`` takes frames already in model space (sRGB-encoded, [0, 1], N×3×H×W, consecutive
    frames of one shot) and returns ``(fgr, pha)`` as float32 tensors on the CPU.
    """

    def __init__(
        self,
        model: MattingNetwork,
        downsample_ratio: str | float = "auto",
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        optimize: bool = True,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}; expected fp32, fp16 or bf16")
        if isinstance(downsample_ratio, str) and downsample_ratio != "auto":
            raise InputError(f"downsample ratio must be 'auto' or a number in (0, 1], got {downsample_ratio!r}")
        if not isinstance(downsample_ratio, str) and not 0 < float(downsample_ratio) <= 1:
            raise InputError(f"downsample ratio must be in (0, 1], got {downsample_ratio}")
        self.device = pick_device(device) if isinstance(device, str) else device
        if precision == "fp16" and self.device.type == "cpu":
            raise InputError("precision fp16 needs a GPU (cuda or mps); on the CPU use fp32 or bf16")
        self.precision = precision
        self.downsample_ratio = downsample_ratio
        self.variant = model.variant
        self.refiner = model.refiner_name
        network = optimize_for_inference(model) if optimize else model.eval()
        self.network = network_for_precision(network, self.device, precision)
        self._input_dtype = torch.float16 if precision == "fp16" else torch.float32
        self._on_warning = on_warning
        self._state: list[torch.Tensor | None] = [None] * 4
        self.frame_size: tuple[int, int] | None = None
        self.frames_seen = 0

    # ------------------------------------------------------------------ stepping

    def ratio_for(self, height: int, width: int) -> float:
        if self.downsample_ratio == "auto":
            return auto_downsample_ratio(height, width)
        return float(self.downsample_ratio)

    def _check_ratio(self, size: tuple[int, int], ratio: float) -> None:
        """Refuse, before any network call, a ratio that would leave the network an empty image.

        Checked per plate size, since the same ratio suits one plate and not a smaller one; the message
        names the smallest ratio that works, so an artist does not have to work it out.
        """
        height, width = size
        net_h, net_w = network_input_size(height, width, ratio)
        need_h, need_w = MIN_NETWORK_INPUT
        if net_h >= need_h and net_w >= need_w:
            return
        which = "the automatic downsample ratio" if self.downsample_ratio == "auto" else "downsample ratio"
        raise InputError(
            f"{which} {_decimal(ratio)} is too small for this {width}×{height} plate: the network's input would "
            f"be {net_w}×{net_h} pixels and it needs at least {need_w}×{need_h}; "
            f"use {_decimal(smallest_ratio(height, width))} or more"
        )

    def _autocast(self) -> Any:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def step(self, src: torch.Tensor, on_device: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Matte ``src`` (N×3×H×W consecutive frames) and advance the recurrent state by N frames; ``on_device``
        leaves the float32 outputs on the session's device (``rvm_vfx.device_color`` composes there)."""
        if src.ndim != 4 or src.shape[1] != 3:
            raise ValueError(f"step expects N×3×H×W frames, got shape {tuple(src.shape)}")
        size = (int(src.shape[2]), int(src.shape[3]))
        if self.frame_size is not None and size != self.frame_size:
            self._warn(
                f"frame size changed from {self.frame_size[1]}×{self.frame_size[0]} to {size[1]}×{size[0]}: "
                "recurrent state reset"
            )
            self.reset()
        ratio = self.ratio_for(*size)
        if size != self.frame_size:
            self._check_ratio(size, ratio)
        self.frame_size = size
        frames = src.to(device=self.device, dtype=self._input_dtype, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            if frames.shape[0] == 1:
                fgr, pha, *state = self.network(frames, *self._state, downsample_ratio=ratio)
            else:  # one clip of N frames: the same computation as N single steps
                fgr, pha, *state = self.network(frames[None], *self._state, downsample_ratio=ratio)
                fgr, pha = fgr[0], pha[0]
        self._state = state
        self.frames_seen += int(src.shape[0])
        if on_device:
            return fgr.float(), pha.float()
        return fgr.float().cpu(), pha.float().cpu()

    def reset(self) -> None:
        """Forget earlier frames: the next step starts as on the first frame of a shot."""
        self._state = [None] * 4
        self.frame_size = None
        self.frames_seen = 0

    def _warn(self, message: str) -> None:
        log.warning(message)
        if self._on_warning is not None:
            self._on_warning(message)

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here, as plain tensors and numbers (no pickled code)."""
        return {
            "version": SNAPSHOT_VERSION,
            "variant": self.variant,
            "refiner": self.refiner,
            "frame_size": list(self.frame_size) if self.frame_size else None,
            "frames_seen": self.frames_seen,
            "state": [None if s is None else s.detach().to("cpu", copy=True) for s in self._state],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        if snap.get("version") != SNAPSHOT_VERSION:
            raise InputError(f"snapshot version {snap.get('version')!r} is not {SNAPSHOT_VERSION}")
        if (snap.get("variant"), snap.get("refiner")) != (self.variant, self.refiner):
            raise InputError(
                f"snapshot was taken with {snap.get('variant')}/{snap.get('refiner')}, "
                f"this session runs {self.variant}/{self.refiner}"
            )
        self._state = [None if s is None else s.to(device=self.device, dtype=self._input_dtype) for s in snap["state"]]
        self.frame_size = tuple(snap["frame_size"]) if snap["frame_size"] else None  # type: ignore[assignment]
        self.frames_seen = int(snap["frames_seen"])


def network_for_precision(network: MattingNetwork, device: torch.device, precision: str) -> MattingNetwork:
    """The network on ``device`` with the weights ``precision`` runs.

    fp16 runs the weights in half (GPUs), except the refiner's: the guided filter cannot hold its local
    variances in half, and the network runs it in float32 (see ``MattingNetwork.forward``). bf16 keeps float32
    weights and uses autocast, so the accuracy-critical ops stay float32.
    """
    network = network.to(device=device, dtype=torch.float16 if precision == "fp16" else torch.float32)
    network.refiner.float()
    return network


def save_snapshot(path: str | os.PathLike[str], snap: dict[str, Any]) -> None:
    """Write a snapshot atomically, so a crash mid-save leaves the previous one intact.

    Torch writes through a Python file so that a full disk keeps its errno (given a path, torch's zip
    writer says only "unexpected pos"). A failed write leaves no partial file and becomes an OutputError
    naming the snapshot, and on a full disk the space left there.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(snap, handle)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise write_error(path, "cannot write snapshot", exc) from exc


def load_snapshot(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Snapshots are read weights-only: a tampered file cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable snapshot is simply unusable
        raise InputError(f"{path}: unreadable snapshot: {exc}") from exc
