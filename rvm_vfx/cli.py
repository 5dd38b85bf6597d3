"""The ``rvm-vfx`` command: a thin layer that turns flags into a Job and reports progress.

Exit codes are part of the interface the plugins and the farm rely on: 0 done, 2 bad input or
arguments (the user can fix it), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .errors import InputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


# --------------------------------------------------------------------------- progress reporting


class JsonProgress:
    """One JSON object a line on stdout, flushed at once: the plugins' subprocess protocol."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.stream.write(json.dumps(event) + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


class BarProgress:
    """A terminal progress bar with frames per second and time left."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar: Any = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.bar = self._tqdm(total=event["total"], initial=0, unit="frame", dynamic_ncols=True, file=sys.stderr)
        elif kind == "progress" and self.bar is not None:
            self.bar.n = event["done"]
            self.bar.set_postfix_str(f"frame {event['frame']}", refresh=False)
            self.bar.refresh()
        elif kind == "warning":
            (self.bar.write if self.bar else print)(f"warning: {event['message']}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def make_progress(mode: str) -> Callable[[dict[str, Any]], None] | Any:
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "none"
    if mode == "json":
        return JsonProgress()
    if mode == "bar":
        return BarProgress()
    return None


# --------------------------------------------------------------------------- commands


def _job_from_matte_args(args: argparse.Namespace) -> Any:
    from .job import Job

    downsample: str | float = args.downsample
    if downsample != "auto":
        try:
            downsample = float(downsample)
        except ValueError:
            raise InputError(f"--downsample: expected 'auto' or a number in (0, 1], got {args.downsample!r}") from None
    return Job(
        input=args.input,
        output=args.output,
        frames=args.frames,
        layer=args.layer,
        start_frame=args.start_frame,
        missing=args.missing,
        checkpoint=args.checkpoint,
        downsample=downsample,
        device=args.device,
        precision=args.precision,
        ocio_config=args.ocio_config,
        input_colorspace=args.input_colorspace,
        output_colorspace=args.output_colorspace,
        compression=args.compression,
        output_mode=args.output_mode,
        alpha_output=args.alpha_output,
        fg_output=args.fg_output,
        preroll=args.preroll,
        overwrite=args.overwrite,
        snapshot_every=args.snapshot_every if args.state_dir else 0,
    )


def _run_job(job: Any, progress_mode: str, state_dir: str | None = None) -> int:
    from .render import render

    progress = make_progress(progress_mode)
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        # Finish the frame in flight (frames are written atomically), then stop cleanly.
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = render(job, progress=progress, stop=stop, state_dir=state_dir)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if progress is not None and hasattr(progress, "close"):
            progress.close()
    summary = report.to_dict()
    if report.stopped:
        if isinstance(progress, JsonProgress):
            progress({"event": "cancelled", **summary})
        else:
            print(f"stopped after {summary['done']} of {summary['total']} frames", file=sys.stderr)
        return EXIT_FAILED
    if isinstance(progress, JsonProgress):
        progress({"event": "done", **summary})
    elif progress_mode != "none":
        rate = f"{summary['elapsed_s']:.1f} s ({summary['fps']:.2f} fps)"
        frames = "frame" if summary["done"] == 1 else "frames"
        print(f"done: {summary['done']} {frames} in {rate} -> {job.output}", file=sys.stderr)
    return EXIT_OK


def cmd_matte(args: argparse.Namespace) -> int:
    return _run_job(_job_from_matte_args(args), args.progress, args.state_dir)


def cmd_render(args: argparse.Namespace) -> int:
    from .job import Job

    job = Job.from_json(args.job)
    return _run_job(job, args.progress, args.state_dir)


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .color import BUILTIN_CONFIG, ColorPipeline, load_config
    from .weights import default_checkpoint

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    import OpenImageIO
    import PyOpenColorIO

    checkpoint = default_checkpoint()
    info: dict[str, object] = {
        "rvm-vfx": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "OpenImageIO": OpenImageIO.__version__,
        "OpenColorIO": PyOpenColorIO.__version__,
        "devices": devices,
        "ocio_config": os.environ.get("OCIO") or BUILTIN_CONFIG,
    }
    # info is what a TD runs to find out why renders fail, so a broken $OCIO is reported, not fatal.
    try:
        pipeline = ColorPipeline(load_config())
        info["scene_linear"] = pipeline.scene_linear
        info["model_space"] = pipeline.model_space
    except InputError as exc:
        info["ocio_error"] = str(exc)
    info["default_checkpoint"] = str(checkpoint)
    info["default_checkpoint_exists"] = checkpoint.exists()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>26}: {', '.join(value) if isinstance(value, list) else value}")
    return EXIT_OK


def cmd_download_weights(args: argparse.Namespace) -> int:
    from .weights import download_weights

    path = download_weights(args.dest)
    print(path)
    return EXIT_OK


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from .weights import convert_weights

    variant, refiner = convert_weights(args.src, args.out)
    print(f"wrote {args.out} ({variant}, {refiner})")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvm-vfx", description="Robust Video Matting for VFX pipelines")
    parser.add_argument("--version", action="version", version=f"rvm-vfx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    progress_help = "progress display: bar (terminal), json (one object a line, for plugins), none; default auto"

    matte = sub.add_parser("matte", help="matte a plate into premultiplied EXR frames")
    matte.add_argument("input", help="plate: name.####.exr, name.%%04d.exr, name.$F4.exr, a folder, or a video")
    matte.add_argument("output", help="output EXR pattern, e.g. out/matte.####.exr")
    matte.add_argument("--frames", help="frame range, e.g. 1001-1100 or 1001-1050,1060-1100 (default: all)")
    matte.add_argument("--layer", help="EXR layer to read (default: rgba)")
    matte.add_argument("--start-frame", type=int, default=1, help="number of a video's first frame (default 1)")
    matte.add_argument("--missing", choices=("error", "hold"), default="error", help="missing frames: fail or hold")
    matte.add_argument("--checkpoint", help="weights: .pth, .torchscript or TF.js model.json (default: cached)")
    matte.add_argument("--downsample", default="auto", help="downsample ratio: auto or a number in (0, 1]")
    matte.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    matte.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    matte.add_argument("--ocio-config", help="OCIO config (default: $OCIO, else the built-in CG config)")
    matte.add_argument("--input-colorspace", help="plate colour space (default: file metadata, else by type)")
    matte.add_argument("--output-colorspace", help="output colour space (default: the scene_linear role)")
    matte.add_argument("--compression", default="zip", help="EXR compression: zip zips piz dwaa dwab none ...")
    matte.add_argument("--output-mode", choices=("premultiplied", "alpha"), default="premultiplied")
    matte.add_argument("--preroll", type=int, default=0, help="frames run before the first one to warm the state")
    matte.add_argument("--alpha-output", help="also write alpha-only EXRs to this pattern")
    matte.add_argument("--fg-output", help="also write the straight (unpremultiplied) foreground to this pattern")
    matte.add_argument("--overwrite", action="store_true", help="replace existing output frames")
    matte.add_argument("--state-dir", help="folder for resume snapshots: run again with it to resume")
    matte.add_argument("--snapshot-every", type=int, default=10, help="frames between snapshots (default 10)")
    matte.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto", help=progress_help)
    matte.set_defaults(func=cmd_matte)

    render = sub.add_parser("render", help="render a job file (JSON)")
    render.add_argument("job", help="job JSON file")
    render.add_argument("--state-dir", help="folder for resume snapshots")
    render.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto", help=progress_help)
    render.set_defaults(func=cmd_render)

    info = sub.add_parser("info", help="versions, devices, OCIO config, default checkpoint")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    download = sub.add_parser("download-weights", help="fetch the official rvm_mobilenetv3.pth into the cache")
    download.add_argument("--dest", help="where to save (default: the user cache)")
    download.set_defaults(func=cmd_download_weights)

    convert = sub.add_parser("convert-weights", help="write any readable weights as an official-layout .pth")
    convert.add_argument("src")
    convert.add_argument("out")
    convert.set_defaults(func=cmd_convert_weights)

    from .quality.cli import add_commands as add_quality_commands

    add_quality_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    json_mode = getattr(args, "progress", None) == "json"
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message and an exit code
        code = EXIT_BAD_INPUT if isinstance(exc, InputError) else EXIT_FAILED
        if json_mode:
            JsonProgress()({"event": "error", "error": {"type": type(exc).__name__, "message": str(exc)}})
        else:
            print(f"rvm-vfx: error: {exc}", file=sys.stderr)
        logging.getLogger(__name__).debug("traceback", exc_info=True)  # shown with --verbose
        return code


if __name__ == "__main__":
    sys.exit(main())
