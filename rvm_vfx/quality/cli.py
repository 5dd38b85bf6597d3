"""Quality commands (``make-testclip``, ``evaluate``), kept apart from the render commands.

They share the main command's exit codes: 0 done, 2 bad input (a missing file, mismatched frame
counts: the user's to fix), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: Per-motion default amplitudes: a visible but plausible move over a 48-frame clip.
DEFAULT_AMPLITUDE = {"static": 0.0, "pan": 0.1, "zoom": 0.2, "shake": 0.02}


def cmd_make_testclip(args: argparse.Namespace) -> int:
    from .testclip import Motion, make_testclip, parse_size

    def motion(kind: str, amplitude: float | None) -> Motion:
        return Motion(kind, DEFAULT_AMPLITUDE[kind] if amplitude is None else amplitude, args.seed)

    info = make_testclip(
        args.portrait_image,
        args.portrait_alpha,
        args.background,
        args.out,
        frames=args.frames,
        size=parse_size(args.size),
        motion=motion(args.motion, args.amplitude),
        background_motion=motion(args.background_motion, args.background_amplitude),
        fmt=args.format,
        start_frame=args.start_frame,
        overwrite=args.overwrite,
        second_person=tuple(args.second_person) if args.second_person else None,
        second_scale=args.second_scale,
        second_offset=args.second_offset,
        # Its own shake pattern: two people do not shake in step.
        second_motion=Motion(
            args.second_motion,
            DEFAULT_AMPLITUDE[args.second_motion] if args.second_amplitude is None else args.second_amplitude,
            args.seed + 1,
        ),
        holdout_grow=args.holdout_grow,
    )
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width, height = info["size"]  # type: ignore[misc]
        layers = "com,pha,fgr,bgr,holdout" if args.second_person else "com,pha,fgr,bgr"
        print(f"wrote {args.frames} frames, {width}×{height}, to {args.out}/{{{layers}}}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import Curve, evaluate_paths, format_table, parse_metrics, plot_curves

    names = parse_metrics(args.metrics)
    result = evaluate_paths(args.pred, args.true, names, pred_fgr=args.pred_fgr, true_fgr=args.true_fgr)
    if args.plot:
        plotted = tuple(n for n in ("pha_mad", "pha_dtssd") if n in result.per_frame)
        if not plotted:
            from ..errors import InputError

            raise InputError("--plot shows MAD and dtSSD: include mad or dtssd in --metrics")
        plot_curves({args.pred: Curve(result.true_frames, result.per_frame)}, args.plot, plotted, title=args.true)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result))
    return 0


def add_commands(sub: Any) -> None:
    """Register the evaluation sub-commands on the main parser's sub-parsers."""
    clip = sub.add_parser(
        "make-testclip",
        help="composite a portrait and its matte over a background: a clip with exact ground-truth alpha",
        description=(
            "Writes OUT/com (the composite), OUT/pha (its exact alpha), OUT/fgr and OUT/bgr, frame by frame. "
            "com = fgr*pha + bgr*(1-pha) in sRGB-encoded values, from the 8-bit layers, as the matting "
            "benchmarks build their clips."
        ),
    )
    clip.add_argument("portrait_image", help="portrait photo (JPEG/PNG/...)")
    clip.add_argument("portrait_alpha", help="its alpha matte, same size")
    clip.add_argument("background", help="background: an image, or a video (one video frame per clip frame)")
    clip.add_argument("out", help="output folder")
    clip.add_argument("--frames", type=int, default=48, help="number of frames (default 48)")
    clip.add_argument("--motion", choices=tuple(DEFAULT_AMPLITUDE), default="pan", help="portrait motion")
    clip.add_argument(
        "--amplitude",
        type=float,
        help="motion size: travel each way (pan) or peak offset (shake) as a fraction of the frame width, "
        "growth over the clip (zoom); default pan 0.1, zoom 0.2, shake 0.02",
    )
    clip.add_argument("--background-motion", choices=tuple(DEFAULT_AMPLITUDE), default="static")
    clip.add_argument("--background-amplitude", type=float, help="as --amplitude, for the background")
    clip.add_argument("--seed", type=int, default=0, help="shake pattern (default 0)")
    clip.add_argument("--size", default="512x288", help="WIDTHxHEIGHT, or 'background' (default 512x288)")
    clip.add_argument(
        "--format", choices=("png", "exr"), default="png", help="png: 8-bit sRGB; exr: half, scene-linear"
    )
    clip.add_argument("--start-frame", type=int, default=0, help="number of the first frame (default 0)")
    clip.add_argument(
        "--second-person",
        nargs=2,
        metavar=("IMAGE", "ALPHA"),
        help="a second portrait standing in the background; its visible matte goes to OUT/holdout (a hold-out matte)",
    )
    clip.add_argument(
        "--second-scale", type=float, default=0.6, help="their height relative to the main person's (default 0.6)"
    )
    clip.add_argument(
        "--second-offset",
        type=float,
        help="their centre, in frame widths right of the frame's centre (negative: left); "
        "default: the middle of the wider side the main person leaves free",
    )
    clip.add_argument("--second-motion", choices=tuple(DEFAULT_AMPLITUDE), default="static", help="its motion")
    clip.add_argument("--second-amplitude", type=float, help="as --amplitude, for the second person")
    clip.add_argument(
        "--holdout-grow",
        type=int,
        default=0,
        metavar="PX",
        help="write OUT/holdout as a roto artist draws it: solid, grown PX pixels around the second person, "
        "stopping at the main one (default 0: their exact soft visible matte)",
    )
    clip.add_argument("--overwrite", action="store_true", help="replace an existing clip in OUT")
    clip.add_argument("--json", action="store_true", help="print the clip description (also in OUT/clip.json)")
    clip.set_defaults(func=cmd_make_testclip)

    ev = sub.add_parser(
        "evaluate",
        help="per-frame and mean matte metrics (MAD, MSE, Grad, Conn, dtSSD) against ground truth",
        description=(
            "Scores a predicted alpha sequence against the true one, paired in sorted frame order. PRED may be "
            "our RGBA EXR output (its A channel is used) or an alpha image sequence; TRUE an alpha sequence. "
            "Units as in the RVM paper: MAD, MSE x1e3; Grad, Conn x1e-3; dtSSD x1e2."
        ),
    )
    ev.add_argument("pred", help="predicted sequence: folder, pattern (out/matte.####.exr) or one frame")
    ev.add_argument("true", help="ground-truth alpha sequence")
    ev.add_argument("--pred-fgr", help="predicted foreground sequence (also score fgr MAD/MSE)")
    ev.add_argument("--true-fgr", help="ground-truth foreground sequence")
    ev.add_argument("--metrics", help="comma list of mad, mse, grad, conn, dtssd (default: all)")
    ev.add_argument("--json", action="store_true", help="print per-frame and mean values as JSON")
    ev.add_argument("--plot", metavar="PNG", help="write a plot of MAD and dtSSD over frames")
    ev.set_defaults(func=cmd_evaluate)
