"""Colour transforms and compositing as torch ops on the network's device (CUDA, MPS; the CPU in tests).

On a GPU node the network takes a few milliseconds a frame and the CPU side is the render: OCIO's conversion
into the network's space (one matrix and the sRGB curve over 6 M values, single-threaded) and the compose
(residual, output conversion, premultiply into halves) cost about 50 CPU-ms a 1080p frame between them. Here
the plate is uploaded once, converted, counted and clipped on the device and handed to the network without a
CPU copy; the network's outputs stay there and only the half RGBA the writer encodes comes back.

A transform is built from the ops of OCIO's own optimised processor for the pair of spaces (matrices, the
exponent curves with and without a linear toe, log-camera and log-affine curves, ranges), so it is the
config's transform, not a second copy of it. It is used only after agreeing with OCIO's CPU processor on a
probe set (a grid plus far out-of-range values, ``TOLERANCE_ABS`` + ``TOLERANCE_REL`` × |value|); an op it
does not know (LUTs, fixed functions, the PQ display) or a disagreement gives None, and the frame takes the
CPU path. Never used silently when it disagrees.

Cases kept on the CPU path, whose frame loop passes numpy arrays: garbage / core / hold-out mattes (applied
to the network's outputs on the CPU), the bidirectional pass (its blend and backward store), the straight
foreground (``fg_output``, which divides float32 colour), and any frame whose spaces need an unsupported op.
CPU sessions keep the CPU path: on this project's 2-core machine the torch ops cost more CPU-ms than OCIO
and the premultiply strips (bench/README.md, "Device colour").
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PyOpenColorIO as ocio
import torch

from rvm_vfx.color import ColorPipeline
from rvm_vfx.compositing import SOLID_ALPHA_RAMP
from rvm_vfx.cuts import Signature, sample_stride, signature_of_sample

__all__ = [
    "TOLERANCE_ABS",
    "TOLERANCE_REL",
    "DeviceColor",
    "DeviceFrame",
    "DeviceTransform",
    "build_transform",
    "difference_from_ocio",
]

log = logging.getLogger(__name__)

#: How far each op of a device transform may stray from the same op run by OCIO's CPU processor: ``ABS + REL * m``
#: per value, ``m`` the pixel's largest magnitude in OCIO's result. REL covers OCIO's own pow and exp, SSE
#: approximations up to 2.8e-5 relative (measured: its 1.0 ** 2.2 is 1.0000223), torch's float32 pow / exp / log
#: (within 1 ulp on the CPU, 2 on CUDA) and the reassociated 3×3 matrix sums, whose error scales with the pixel's
#: largest value, not with a channel that cancels near 0. An implementation error (a wrong branch, gamma,
#: direction or matrix) is far past it.
TOLERANCE_ABS = 1e-5
TOLERANCE_REL = 5e-5
#: The whole chain against OCIO's processor for the pair, relative as above: a later op amplifies an earlier one's
#: approximation (ACEScct to sRGB: OCIO's approximate exp, then a matrix that cancels to near 0, then the sRGB toe's
#: slope of 12.92 gives 1e-3 on values of 20, 6e-5 of them, measured), so the chain is held to what that allows;
#: it catches ops in a wrong order or a missing one.
CHAIN_TOLERANCE_REL = 1e-2

#: OCIO results compared: past this a value is no colour (an ACEScct code of 1000 decodes past float range, where
#: OCIO's approximate exp and torch's overflow differently) and no plate or network input holds it.
_COMPARED_MAGNITUDE = 1e20

#: Smallest positive normal float32: where OCIO's log ops clamp their argument.
_FLT_MIN = float(np.finfo(np.float32).tiny)

Op = Callable[[torch.Tensor], torch.Tensor]


def _probe_values() -> np.ndarray:
    """Values a transform is checked on: every combination of an axis running from far negative to the half
    maximum (shadows and the curves' breaks densely), plus a fine ramp over [-0.1, 1.1] on all channels."""
    axis = np.array(
        [-65504, -1000, -10, -1, -0.25, -0.01, -1e-4, 0, 1e-6, 1e-4, 1e-3, 3e-3, 0.005, 0.0078125, 0.01, 0.02,
         0.03, 0.04, 0.05, 0.1, 0.18, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1, 1.1, 1.5, 2, 4, 16, 100, 1000, 65504],
        dtype=np.float32,
    )  # fmt: skip
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    ramp = np.repeat(np.linspace(-0.1, 1.1, 1201, dtype=np.float32)[:, None], 3, axis=1)
    return np.ascontiguousarray(np.concatenate([grid, ramp]))


_PROBE = _probe_values()


class DeviceTransform:
    """One pair of spaces' OCIO transform as torch ops on ``device``; ``max_error`` is the largest difference of an op
    from OCIO's the probe found, relative to the pixel's largest value where that is over 1, absolute below."""

    def __init__(self, ops: list[Op], device: torch.device, max_error: float = 0.0) -> None:
        self.ops = ops
        self.device = device
        self.max_error = max_error

    @property
    def identity(self) -> bool:
        return not self.ops

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb`` (…×3 float32 on the device) converted; a new tensor, the input is never written."""
        out = rgb
        for op in self.ops:
            out = op(out)
        return out if out is not rgb else rgb.clone()


def build_transform(color: ColorPipeline, src: str, dst: str, device: torch.device) -> DeviceTransform | None:
    """The ``src`` → ``dst`` transform on ``device``, or None where an op is unknown or it disagrees with OCIO."""
    spaces = color.spaces
    src = spaces.validate_space(src, field="source colour space")
    dst = spaces.validate_space(dst, field="destination colour space")
    if src == dst:
        return DeviceTransform([], device)
    ops: list[Op] = []
    error = 0.0
    for transform in color.converter.optimized_ops(src, dst):
        op = _op_for(transform, device)
        if op is None:
            log.info("device colour: %s -> %s has a %s, left to OCIO", src, dst, type(transform).__name__)
            return None
        op_error = _op_disagreement(color, transform, op, device)
        if op_error is None:
            log.info(
                "device colour: %s -> %s: its %s disagrees with OCIO past the tolerance, left to OCIO",
                src,
                dst,
                type(transform).__name__,
            )
            return None
        error = max(error, op_error)
        ops.append(op)
    candidate = DeviceTransform(ops, device, error)
    want = color.converter.convert(_PROBE, src, dst)
    if difference_from_ocio(_on_probe(candidate, device), want, CHAIN_TOLERANCE_REL) is None:
        log.info("device colour: %s -> %s disagrees with OCIO past the tolerance, left to OCIO", src, dst)
        return None
    return candidate


def _on_probe(op: Op, device: torch.device) -> np.ndarray:
    return op(torch.from_numpy(_PROBE).to(device)).cpu().numpy()


def _op_disagreement(color: ColorPipeline, transform: ocio.Transform, op: Op, device: torch.device) -> float | None:
    """``difference_from_ocio`` of one op against OCIO's CPU processor for that op alone, over the probe set."""
    want = _PROBE.copy()
    color.config.getProcessor(transform).getDefaultCPUProcessor().applyRGB(want)
    return difference_from_ocio(_on_probe(op, device), want)


def difference_from_ocio(got: np.ndarray, want: np.ndarray, rel: float = TOLERANCE_REL) -> float | None:
    """How far ``got`` (…×3) is from OCIO's ``want``: None past ``TOLERANCE_ABS + rel × m`` anywhere (``m`` the
    pixel's largest magnitude in ``want``; results past ``_COMPARED_MAGNITUDE`` are not compared), else the largest
    difference relative to ``max(m, 1)``."""
    want, got = want.astype(np.float64), got.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.max(np.abs(want), axis=-1, keepdims=True)
        compared = np.isfinite(scale[..., 0]) & (scale[..., 0] < _COMPARED_MAGNITUDE)
        diff = np.abs(got - want)[compared]
        within = diff <= TOLERANCE_ABS + rel * scale[compared]  # NaN or Inf from the device: False
    if not within.all():
        return None
    return float((diff / np.maximum(scale[compared], 1.0)).max(initial=0.0))


# --------------------------------------------------------------------------- OCIO ops as torch ops


def _op_for(transform: ocio.Transform, device: torch.device) -> Op | None:
    inverse = transform.getDirection() == ocio.TRANSFORM_DIR_INVERSE
    if isinstance(transform, ocio.MatrixTransform):
        return _matrix(transform, inverse, device)
    if isinstance(transform, ocio.ExponentWithLinearTransform):
        return _exponent_with_linear(transform, inverse, device)
    if isinstance(transform, ocio.ExponentTransform):
        return _exponent(transform, inverse, device)
    if isinstance(transform, ocio.LogCameraTransform):
        return _log_camera(transform, inverse, device)
    if isinstance(transform, ocio.LogAffineTransform):
        return _log_affine(transform, inverse, device)
    if isinstance(transform, ocio.RangeTransform):
        return _range(transform, inverse, device)
    return None


def _vector(values: list[float], device: torch.device) -> torch.Tensor | float:
    """A per-channel parameter: one number when the three channels share it (the usual case), which halves the
    cost of a pow on the CPU and saves a broadcast on any device."""
    rgb = [float(v) for v in values[:3]]
    if rgb[0] == rgb[1] == rgb[2]:
        return float(np.float32(rgb[0]))
    return torch.tensor(rgb, dtype=torch.float32, device=device)


def _rgb_only(values: list[float], neutral: float) -> bool:
    """The alpha entry of a per-channel parameter leaves alpha alone (a transform of RGB cannot use it)."""
    return len(values) < 4 or values[3] == neutral


def _matrix(transform: ocio.MatrixTransform, inverse: bool, device: torch.device) -> Op | None:
    full = np.array(transform.getMatrix(), dtype=np.float64).reshape(4, 4)
    offset = np.array(transform.getOffset(), dtype=np.float64)
    if not (np.array_equal(full[3], [0, 0, 0, 1]) and np.array_equal(full[:3, 3], [0, 0, 0]) and offset[3] == 0):
        return None  # alpha mixed into colour: not a transform of RGB alone
    matrix, shift = full[:3, :3], offset[:3]
    if inverse:
        matrix = np.linalg.inv(matrix)
        shift = -matrix @ shift
    rows = torch.tensor(matrix.T, dtype=torch.float32, device=device)
    add = torch.tensor(shift, dtype=torch.float32, device=device)
    # One (N×3)·(3×3) product over the pixels: a broadcast (H×W×3)·(3×3) runs as H small products, 4× slower.
    if not shift.any():
        return lambda rgb: (rgb.reshape(-1, 3) @ rows).reshape(rgb.shape)
    return lambda rgb: torch.addmm(add, rgb.reshape(-1, 3), rows).reshape(rgb.shape)


def _exponent(transform: ocio.ExponentTransform, inverse: bool, device: torch.device) -> Op | None:
    values = list(transform.getValue())
    style = transform.getNegativeStyle()
    if not _rgb_only(values, 1.0) or style == ocio.NEGATIVE_LINEAR:
        return None
    power = _vector([1.0 / v for v in values] if inverse else values, device)
    if style == ocio.NEGATIVE_MIRROR:
        return lambda rgb: torch.sign(rgb) * torch.pow(torch.abs(rgb), power)
    if style == ocio.NEGATIVE_PASS_THRU:
        return lambda rgb: torch.where(rgb >= 0, torch.pow(torch.clamp(rgb, min=0.0), power), rgb)
    return lambda rgb: torch.pow(torch.clamp(rgb, min=0.0), power)  # NEGATIVE_CLAMP


def _exponent_with_linear(
    transform: ocio.ExponentWithLinearTransform, inverse: bool, device: torch.device
) -> Op | None:
    """OCIO's moncurve: forward (encoded to linear) ``((x + o) / (1 + o)) ** g`` above a break, a line below it
    meeting the curve with the same slope; inverse the other way."""
    gammas, offsets = list(transform.getGamma()), list(transform.getOffset())
    style = transform.getNegativeStyle()
    if not (_rgb_only(gammas, 1.0) and _rgb_only(offsets, 0.0)) or style not in (
        ocio.NEGATIVE_LINEAR,
        ocio.NEGATIVE_MIRROR,
    ):
        return None
    gammas, offsets = gammas[:3], offsets[:3]
    if any(g <= 1.0 or o <= 0.0 for g, o in zip(gammas, offsets, strict=True)):
        return None
    encoded_break = [o / (g - 1.0) for g, o in zip(gammas, offsets, strict=True)]
    linear_break = [(o * g / ((g - 1.0) * (1.0 + o))) ** g for g, o in zip(gammas, offsets, strict=True)]
    slope = [lb / eb for lb, eb in zip(linear_break, encoded_break, strict=True)]  # linear per encoded
    g, o = _vector(gammas, device), _vector(offsets, device)
    scale, shift = (
        _vector([1.0 / (1.0 + x) for x in offsets], device),
        _vector([x / (1.0 + x) for x in offsets], device),
    )
    if inverse:
        brk, line = _vector(linear_break, device), _vector([1.0 / s for s in slope], device)
        one_plus, inv_g = _vector([1.0 + x for x in offsets], device), _vector([1.0 / x for x in gammas], device)

        def curve(x: torch.Tensor) -> torch.Tensor:
            return torch.where(x > brk, one_plus * torch.pow(torch.clamp(x, min=0.0), inv_g) - o, x * line)
    else:
        brk, line = _vector(encoded_break, device), _vector(slope, device)

        def curve(x: torch.Tensor) -> torch.Tensor:
            return torch.where(x > brk, torch.pow(torch.clamp(x * scale + shift, min=0.0), g), x * line)

    if style == ocio.NEGATIVE_MIRROR:
        return lambda rgb: torch.sign(rgb) * curve(torch.abs(rgb))
    return curve


@dataclass(frozen=True)
class _LogParams:
    base: float
    log_slope: list[float]
    log_offset: list[float]
    lin_slope: list[float]
    lin_offset: list[float]


def _log_params(transform: ocio.LogAffineTransform | ocio.LogCameraTransform) -> _LogParams | None:
    params = _LogParams(
        float(transform.getBase()),
        list(transform.getLogSideSlopeValue()),
        list(transform.getLogSideOffsetValue()),
        list(transform.getLinSideSlopeValue()),
        list(transform.getLinSideOffsetValue()),
    )
    if params.base <= 0 or params.base == 1 or any(v == 0 for v in params.log_slope + params.lin_slope):
        return None
    return params


def _log_curve(p: _LogParams, inverse: bool, device: torch.device) -> Op:
    """``log_slope * log_base(lin_slope * x + lin_offset) + log_offset`` (OCIO clamps the argument at FLT_MIN)."""
    log_slope = _vector([s / math.log(p.base) for s in p.log_slope], device)
    log_offset, lin_slope, lin_offset = (_vector(v, device) for v in (p.log_offset, p.lin_slope, p.lin_offset))
    if inverse:
        ln_base = math.log(p.base)
        log_side = _vector(p.log_slope, device)
        return lambda y: (torch.exp((y - log_offset) / log_side * ln_base) - lin_offset) / lin_slope
    return lambda x: log_slope * torch.log(torch.clamp(x * lin_slope + lin_offset, min=_FLT_MIN)) + log_offset


def _log_affine(transform: ocio.LogAffineTransform, inverse: bool, device: torch.device) -> Op | None:
    params = _log_params(transform)
    return None if params is None else _log_curve(params, inverse, device)


def _log_camera(transform: ocio.LogCameraTransform, inverse: bool, device: torch.device) -> Op | None:
    """A log curve above ``linSideBreak`` and a line below it (its slope given, or the curve's at the break)."""
    params = _log_params(transform)
    if params is None:
        return None
    breaks = list(transform.getLinSideBreakValue())[:3]
    logs = [
        ls * math.log(ms * b + mo, params.base) + lo
        for ls, ms, mo, lo, b in zip(
            params.log_slope, params.lin_slope, params.lin_offset, params.log_offset, breaks, strict=False
        )
    ]
    if transform.isLinearSlopeValueSet():
        slopes = list(transform.getLinearSlopeValue())[:3]
    else:
        slopes = [
            ls * ms / ((ms * b + mo) * math.log(params.base))
            for ls, ms, mo, b in zip(params.log_slope, params.lin_slope, params.lin_offset, breaks, strict=False)
        ]
    if any(s == 0 for s in slopes):
        return None
    curve = _log_curve(params, inverse, device)
    lin_break, log_break = _vector(breaks, device), _vector(logs, device)
    slope = _vector(slopes, device)
    intercept = _vector([lb - s * b for lb, s, b in zip(logs, slopes, breaks, strict=True)], device)
    if inverse:
        return lambda y: torch.where(y > log_break, curve(y), (y - intercept) / slope)
    return lambda x: torch.where(x > lin_break, curve(x), x * slope + intercept)


def _range(transform: ocio.RangeTransform, inverse: bool, device: torch.device) -> Op | None:
    """OCIO's range: an affine map of [min in, max in] onto [min out, max out], clamped there unless told not to."""
    bounds = [
        (transform.getMinInValue() if transform.hasMinInValue() else None),
        (transform.getMaxInValue() if transform.hasMaxInValue() else None),
        (transform.getMinOutValue() if transform.hasMinOutValue() else None),
        (transform.getMaxOutValue() if transform.hasMaxOutValue() else None),
    ]
    lo_in, hi_in, lo_out, hi_out = bounds
    if inverse:
        lo_in, hi_in, lo_out, hi_out = lo_out, hi_out, lo_in, hi_in
    if (lo_in is None) != (lo_out is None) or (hi_in is None) != (hi_out is None):
        return None
    if lo_in is not None and hi_in is not None:
        if hi_in == lo_in:
            return None
        scale = (hi_out - lo_out) / (hi_in - lo_in)
        offset = lo_out - scale * lo_in
    elif lo_in is not None:
        scale, offset = 1.0, lo_out - lo_in
    elif hi_in is not None:
        scale, offset = 1.0, hi_out - hi_in
    else:
        return lambda rgb: rgb
    clamp = transform.getStyle() == ocio.RANGE_CLAMP
    low = lo_out if clamp else None
    high = hi_out if clamp else None

    def affine(rgb: torch.Tensor) -> torch.Tensor:
        out = rgb * scale + offset if (scale, offset) != (1.0, 0.0) else rgb.clone()
        return torch.clamp(out, min=low, max=high) if (low, high) != (None, None) else out

    return affine


# --------------------------------------------------------------------------- frames on the device


@dataclass
class DeviceFrame:
    """A plate frame on the device: its pixels as read (float32, H×W×3) and the network's input made from them.

    Stands where the CPU path's numpy network input does in the frame loop (``shape``, its network tensor)."""

    plate: torch.Tensor
    model: torch.Tensor
    space: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.model.shape)

    def network_input(self) -> torch.Tensor:
        """1×3×H×W, a view of ``model`` laid out as the CPU path's ``from_numpy(...).permute`` is."""
        return self.model.permute(2, 0, 1)[None]

    def signature(self) -> Signature:
        """The cut signature of the network input; only the sample it is made from leaves the device."""
        stride = sample_stride(*self.model.shape[:2])
        return signature_of_sample(self.model[::stride, ::stride].cpu().numpy())


class DeviceColor:
    """A render's colour work on the network's device: ``to_model`` on the readers, ``compose`` on the writers.

    Transforms are built once per pair of spaces (None remembered too), under a lock, as the reader threads
    meet them.
    """

    def __init__(self, color: ColorPipeline, output_space: str, device: torch.device) -> None:
        self.color = color
        self.output_space = color.validate_space(output_space, field="output_colorspace")
        self.device = device
        self._lock = threading.Lock()
        self._transforms: dict[tuple[str, str], DeviceTransform | None] = {}

    def transform(self, src: str, dst: str) -> DeviceTransform | None:
        key = (src, dst)
        with self._lock:
            if key not in self._transforms:
                self._transforms[key] = build_transform(self.color, src, dst, self.device)
            return self._transforms[key]

    def _needed(self, plate_space: str) -> list[tuple[str, str]]:
        """Every pair of spaces a frame in ``plate_space`` goes through, reading and composing."""
        model, work = self.color.model_space, self.color.working_space_for(plate_space)
        return [(plate_space, model), (model, work), (plate_space, work), (work, self.output_space)]

    def supports(self, plate_space: str) -> bool:
        plate_space = self.color.validate_space(plate_space, field="plate colour space")
        return all(self.transform(src, dst) is not None for src, dst in self._needed(plate_space))

    def to_model(self, rgb: np.ndarray, space: str) -> tuple[DeviceFrame, float] | None:
        """The plate (float32 or half, H×W×3) on the device and in the network's clipped space, with the fraction of
        values clipped (as ``ColorConverter.to_model`` counts it); None when its spaces need the CPU path."""
        space = self.color.validate_space(space, field="plate colour space")
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or not self.supports(space):
            return None
        plate = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        if plate.dtype != torch.float32:
            plate = plate.float()
        model = self.transform(space, self.color.model_space)(plate)  # type: ignore[misc]  # supports() said so
        if model.numel() == 0:
            return DeviceFrame(plate, model, space), 0.0
        outside = int(torch.count_nonzero((model < 0.0) | (model > 1.0)).item())
        model.clamp_(0.0, 1.0)
        return DeviceFrame(plate, model, space), outside / model.numel()

    def compose(self, frame: DeviceFrame, fgr: torch.Tensor, pha: torch.Tensor) -> np.ndarray:
        """``compose_foreground``'s premultiplied RGBA as half (H×W×4) from the network's ``fgr`` (1×3×H×W) and
        ``pha`` (1×1×H×W) on the device; the only thing that comes back to the CPU.

        The same rule, computed densely (on a GPU a gather of the edge pixels costs more than the frame): the
        residual in the working space faded in over ``SOLID_ALPHA_RAMP`` below alpha 1, the plate itself
        wherever the weight is 0 (solid foreground is the plate bit for bit), alpha never transformed,
        float32 products rounded to the nearest half, ties to even.
        """
        color, space = self.color, frame.space
        work = color.working_space_for(space)
        to_work = self.transform(color.model_space, work)
        assert to_work is not None  # noqa: S101 - to_model gave this frame a DeviceFrame only if all are there
        alpha = pha[0, 0].float()[..., None]
        base = frame.plate if space == work else self.transform(space, work)(frame.plate)  # type: ignore[misc]
        weight = torch.clamp((1.0 - alpha) / SOLID_ALPHA_RAMP, 0.0, 1.0)
        soft = (alpha > 0.0) & (alpha < 1.0) & (weight > 0.0)
        residual = to_work(fgr[0].float().permute(1, 2, 0)) - to_work(frame.model)
        colour = torch.where(soft, base + weight * residual, base)
        if work != self.output_space:
            colour = self.transform(work, self.output_space)(colour)  # type: ignore[misc]
        rgba = torch.empty(colour.shape[:-1] + (4,), dtype=torch.float16, device=self.device)
        rgba[..., :3] = colour * alpha
        rgba[..., 3:] = alpha
        return _to_host(rgba)


def _to_host(pixels: torch.Tensor) -> np.ndarray:
    """``pixels`` as a numpy array: itself on the CPU; on CUDA through pinned memory, waiting for that copy alone."""
    if pixels.device.type == "cpu":
        return pixels.numpy()
    if pixels.device.type != "cuda":
        return pixels.cpu().numpy()
    host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=True)
    host.copy_(pixels, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    done.synchronize()
    return host.numpy()
