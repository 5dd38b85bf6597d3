"""The ``export`` command: a checkpoint out as ONNX, TorchScript or a Cattery-ready TorchScript.

Exit codes as every command's: 0 written, 2 bad input (a checkpoint that is not one, a ratio out of
range), 1 anything else (the output exists, cannot be written, the onnx package is missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMAT_HELP = (
    "onnx: one frame a call, r1i..r4i in and r1o..r4o out, the ratio baked in; torchscript: the official call "
    "model(src, r1, r2, r3, r4, downsample_ratio); cattery: for Nuke's CatFileCreator, one image in, RGBA out, "
    "the state kept inside between consecutive frames"
)


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None


def cmd_export(args: argparse.Namespace) -> int:
    from ..weights import load_model
    from .exporters import check_destination, check_precision, check_ratio, export
    from .frame import state_shapes

    # Checked before the weights load, so a wrong flag costs nothing.
    ratio = check_ratio(args.format, args.downsample)
    check_precision(args.format, args.precision)
    check_destination(Path(args.out), args.overwrite)
    model = load_model(args.checkpoint)
    report = export(model, args.out, args.format, args.downsample, args.precision, args.overwrite)
    what = f"{report.format} ({report.variant}, {report.refiner}, {report.precision}"
    if ratio is not None:
        what += f", downsample ratio {'auto' if ratio == 0 else f'{ratio:g}'}"
    print(f"wrote {report.path}: {what}) in {report.seconds:.1f} s", file=sys.stderr)
    if args.format == "onnx" and ratio:
        shapes = state_shapes(1080, 1920, ratio, report.variant)
        listed = ", ".join(f"r{i}i {list(shape)}" for i, shape in enumerate(shapes, start=1))
        print(f"a 1920x1080 plate's first frame passes zeros of {listed}", file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    """Register ``export`` on the main parser's sub-parsers."""
    export = sub.add_parser(
        "export",
        help="write a checkpoint as ONNX, TorchScript or a Nuke Cattery-ready TorchScript",
        description=FORMAT_HELP,
    )
    export.add_argument(
        "checkpoint", help="weights: a .pth, an official .torchscript, or a TF.js model.json or its folder"
    )
    export.add_argument("out", help="file to write (.onnx, .pt)")
    export.add_argument("--format", required=True, choices=("onnx", "torchscript", "cattery"), help=FORMAT_HELP)
    export.add_argument(
        "--downsample",
        type=_ratio,
        metavar="R",
        help="onnx: the ratio baked into the graph (default 0.25: HD; 0.125 for 4K); cattery: the knob's "
        "default (default 0: the long side to 512 px); not for torchscript, which takes it at each call",
    )
    export.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="fp16: half weights and states for GPUs (the guided filter stays fp32); default fp32",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    export.set_defaults(func=cmd_export)
