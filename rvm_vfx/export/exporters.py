"""Writing the exports: ONNX (state as inputs and outputs), TorchScript (the official call), Cattery.

Each file is written to a temporary name beside its destination and renamed, so a failed export never
leaves a half file under the name a pipeline looks for; an existing file is replaced only when asked.
"""

from __future__ import annotations

import copy
import io
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..errors import InputError, OutputError, RvmError, write_error
from ..model import STATE_CHANNELS, MattingNetwork
from ..session import network_for_precision
from .cattery import CatteryMatting
from .frame import STATE_STRIDES, FixedRatioFrame, RecurrentFrame, state_shapes

FORMATS = ("onnx", "torchscript", "cattery")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
#: ONNX Runtime (1.18+) and TensorRT (8.6+) both implement every operator of opset 17 this graph uses.
ONNX_OPSET = 17
#: The official RVM ONNX files' names: a loop written for them carries over. Inputs and outputs cannot share
#: names in an ONNX graph, hence the i/o suffixes.
ONNX_INPUTS = ("src", "r1i", "r2i", "r3i", "r4i")
ONNX_OUTPUTS = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")
#: Where the TorchScript exports describe themselves (``torch.jit.load(path, _extra_files=...)`` reads it).
DESCRIPTION_FILE = "rvm_vfx.json"
# The example frame an ONNX graph is traced with. Its size is not baked in (every size-dependent value is
# read with Shape); an odd size at 1/16 checks that the graph keeps the rounding of the strided layers.
_TRACE_HEIGHT, _TRACE_WIDTH = 144, 256


@dataclass(frozen=True)
class ExportReport:
    """What was written, for the command's message and for a pipeline's records."""

    path: Path
    format: str
    precision: str
    variant: str
    refiner: str
    downsample_ratio: float | None  # None: chosen at each call (TorchScript)
    seconds: float


def check_ratio(fmt: str, downsample_ratio: float | None) -> float | None:
    """The ratio each format takes: a number in (0, 1] for ONNX, a knob's default for Cattery, none for TorchScript."""
    if fmt == "torchscript":
        if downsample_ratio is not None:
            raise InputError(
                "--downsample: a TorchScript export takes the ratio at each call, "
                "model(src, r1, r2, r3, r4, downsample_ratio), as the official one does; "
                "--downsample is for --format onnx (baked in) and cattery (the knob's default)"
            )
        return None
    if downsample_ratio is None:
        return 0.25 if fmt == "onnx" else 0.0
    if fmt == "cattery" and downsample_ratio == 0:
        return 0.0  # the knob's "automatic" value
    if not 0 < downsample_ratio <= 1:
        raise InputError(f"--downsample: expected a number in (0, 1], got {downsample_ratio:g}")
    return float(downsample_ratio)


def check_precision(fmt: str, precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise InputError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if fmt == "cattery" and precision != "fp32":
        raise InputError(
            "--precision fp16: a Cattery model is exported in fp32; Nuke's Inference node runs it in half "
            "itself when its 'Optimize for Speed and Memory' knob is on"
        )
    return PRECISIONS[precision]


def check_destination(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give the file to write")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: exists; use --overwrite to replace it")
    if not out.parent.is_dir():
        raise OutputError(f"{out.parent}: no such folder")


def recurrent_frame(model: MattingNetwork, dtype: torch.dtype = torch.float32) -> RecurrentFrame:
    """A copy of ``model`` as one recurrent step, its weights held as the engine's session holds them for
    ``dtype``: half for fp16 except the refiner's, which stay float32 (``session.network_for_precision``)."""
    precision = "fp16" if dtype == torch.float16 else "fp32"
    net = network_for_precision(copy.deepcopy(model).eval(), torch.device("cpu"), precision)
    frame = RecurrentFrame(net).eval()
    for parameter in frame.parameters():
        parameter.requires_grad_(False)
    return frame


def _write_atomically(out: Path, data: bytes) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(out, "could not write the export", exc) from exc


def _description(model: MattingNetwork, fmt: str, precision: str, downsample_ratio: float | None) -> dict[str, str]:
    """Facts a caller needs and cannot read off the file's signature: the state layout, the ratio, the weights."""
    return {
        "rvm_vfx:version": __version__,
        "rvm_vfx:format": fmt,
        "rvm_vfx:variant": model.variant,
        "rvm_vfx:refiner": model.refiner_name,
        "rvm_vfx:precision": precision,
        "rvm_vfx:downsample_ratio": "per call" if downsample_ratio is None else f"{downsample_ratio:g}",
        "rvm_vfx:state_channels": ",".join(str(c) for c in STATE_CHANNELS[model.variant]),
        "rvm_vfx:state_size": (
            "r1..r4 at ceil(h/s) x ceil(w/s) for s = "
            + ", ".join(str(s) for s in STATE_STRIDES)
            + ", where h x w = floor(H*ratio) x floor(W*ratio); zeros on a shot's first frame"
        ),
    }


# --------------------------------------------------------------------------- ONNX


def onnx_bytes(model: MattingNetwork, downsample_ratio: float, dtype: torch.dtype = torch.float32) -> bytes:
    """The ONNX graph of one recurrent step at a fixed ratio, dynamic in batch, height and width.

    The TorchScript-based exporter (``dynamo=False``). torch 2.13's default, torch.export-based one gives
    the same graph here but needs ``onnxscript`` (and ``onnx_ir``, ``sympy``) and took 26 s against 2 s;
    this one needs only ``onnx`` and works from torch 2.1 on. torch has deprecated it: dropping it later
    means ``dynamo=True`` here and ``onnxscript`` in the ``export`` extra.
    """
    graph = FixedRatioFrame(recurrent_frame(model, dtype), downsample_ratio).eval()
    src = torch.zeros(1, 3, _TRACE_HEIGHT, _TRACE_WIDTH, dtype=dtype)
    states = [
        torch.zeros(s, dtype=dtype) for s in state_shapes(_TRACE_HEIGHT, _TRACE_WIDTH, downsample_ratio, model.variant)
    ]
    dynamic = {name: {0: "batch", 2: "height", 3: "width"} for name in ("src", "fgr", "pha")}
    for i, (inp, out) in enumerate(zip(ONNX_INPUTS[1:], ONNX_OUTPUTS[2:], strict=True), start=1):
        dynamic[inp] = dynamic[out] = {0: "batch", 2: f"r{i}_height", 3: f"r{i}_width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The exporter announces its own deprecation on every call; the choice is explained above.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad():
            torch.onnx.export(
                graph,
                (src, *states),
                buffer,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=list(ONNX_INPUTS),
                output_names=list(ONNX_OUTPUTS),
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
    return buffer.getvalue()


def _with_metadata(data: bytes, description: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_from_string(data)
    for key, value in description.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise RvmError("ONNX export needs the onnx package: pip install 'rvm-vfx[export]'") from None


# --------------------------------------------------------------------------- TorchScript


def inline_calls(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Inline every call and fold constants, in place, so the file names only long-standing aten ops.

    Scripted ``F.interpolate`` carries torch's whole Python implementation into the archive, with branches
    for every mode, some of whose ops (``_upsample_lanczos2d_aa``) older runtimes, Nuke's among them, do
    not know; with the mode a constant, those branches fold away. Weights stay parameters (no freezing),
    so the module still moves to a GPU and to half precision.
    """
    for submodule in module.modules():
        for name in submodule._c._method_names():
            graph = submodule._c._get_method(name).graph
            torch._C._jit_pass_inline(graph)
            torch._C._jit_pass_constant_propagation(graph)
            torch._C._jit_pass_dce(graph)
    return module


def torchscript_module(model: MattingNetwork, dtype: torch.dtype = torch.float32) -> torch.jit.ScriptModule:
    """The official call, ``model(src, r1, r2, r3, r4, downsample_ratio)``, states None on a first frame."""
    return inline_calls(torch.jit.script(recurrent_frame(model, dtype)))


def cattery_module(model: MattingNetwork, downsample_ratio: float) -> torch.jit.ScriptModule:
    """``forward(image) -> rgba`` with ``frame`` and ``downsample_ratio`` attributes for Nuke's knobs."""
    return inline_calls(torch.jit.script(CatteryMatting(recurrent_frame(model), downsample_ratio).eval()))


def _script_bytes(module: torch.jit.ScriptModule, description: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files={DESCRIPTION_FILE: json.dumps(description, indent=2)})
    return buffer.getvalue()


# --------------------------------------------------------------------------- one entry point


def export(
    model: MattingNetwork,
    out: str | os.PathLike[str],
    fmt: str,
    downsample_ratio: float | None = None,
    precision: str = "fp32",
    overwrite: bool = False,
) -> ExportReport:
    """Write ``model`` as ``fmt`` to ``out``; arguments are checked before anything is computed."""
    if fmt not in FORMATS:
        raise InputError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    ratio = check_ratio(fmt, downsample_ratio)
    dtype = check_precision(fmt, precision)
    out = Path(out)
    check_destination(out, overwrite)
    if fmt == "onnx":
        _require_onnx()
    start = time.perf_counter()
    description = _description(model, fmt, precision, ratio)
    if fmt == "onnx":
        assert ratio is not None
        data = _with_metadata(onnx_bytes(model, ratio, dtype), description)
    elif fmt == "torchscript":
        data = _script_bytes(torchscript_module(model, dtype), description)
    else:
        assert ratio is not None
        data = _script_bytes(cattery_module(model, ratio), description)
    _write_atomically(out, data)
    return ExportReport(out, fmt, precision, model.variant, model.refiner_name, ratio, time.perf_counter() - start)
