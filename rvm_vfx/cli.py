"""The ``rvm-vfx`` command: a thin layer that turns flags into a Job and reports progress.

Exit codes (``rvm_vfx.spec.exits``) and the JSON progress lines (``rvm_vfx.spec.progress``) are part of
the interface the plugins and the farm rely on: 0 done, 2 bad input or arguments (the user can fix it),
1 anything else. The ``matte`` command's flags are the Job's fields that declare one.
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
from .spec.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, exit_code
from .spec.fields import JobField
from .spec.job import FIELDS
from .spec.progress import CANCELLED, CUT, DONE, PROGRESS, START, WARNING, EventWriter, error_event, event

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "build_parser", "exit_code", "main"]


# --------------------------------------------------------------------------- progress reporting


class BarProgress:
    """A terminal progress bar with frames per second and time left."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar: Any = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == START:
            self.close()  # a bidirectional render starts a bar per pass
            name = event.get("pass")
            self.bar = self._tqdm(
                total=event["total"],
                initial=0,
                unit="frame",
                dynamic_ncols=True,
                file=sys.stderr,
                desc=f"{name} pass" if name else None,
            )
        elif kind == PROGRESS and self.bar is not None:
            self.bar.n = event["done"]
            self.bar.set_postfix_str(f"frame {event['frame']}", refresh=False)
            self.bar.refresh()
        elif kind == WARNING:
            (self.bar.write if self.bar else print)(f"warning: {event['message']}", file=sys.stderr)
        elif kind == CUT:
            text = f"cut at frame {event['frame']}: shot {event.get('shot', '?')} starts, state reset"
            (self.bar.write if self.bar else print)(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def make_progress(mode: str) -> Callable[[dict[str, Any]], None] | Any:
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "none"
    if mode == "json":
        return EventWriter(sys.stdout)
    if mode == "bar":
        return BarProgress()
    return None


# --------------------------------------------------------------------------- commands


def downsample_value(text: str) -> str | float:
    """``--downsample``'s text as the Job's field holds it: ``auto`` or a number."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--downsample: expected 'auto' or a number in (0, 1], got {text!r}") from None


def _job_from_matte_args(args: argparse.Namespace) -> Any:
    from .job import Job

    values = {f.name: getattr(args, f.name) for f in FIELDS if f.flag}
    values["downsample"] = downsample_value(args.downsample)
    values["snapshot_every"] = args.snapshot_every if args.state_dir else 0
    return Job(**values)


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
        if isinstance(progress, EventWriter):
            progress(event(CANCELLED, **summary))
        else:
            print(f"stopped after {summary['done']} of {summary['total']} frames", file=sys.stderr)
        return EXIT_FAILED
    if isinstance(progress, EventWriter):
        progress(event(DONE, **summary))
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

# Where a flag differs from its field. On the command line snapshots go only into a --state-dir, which asks
# for them, so they are on by default there; a Job (a ticket, a plugin's) takes none unless it says so.
_FLAG_OVERRIDES: dict[str, dict[str, Any]] = {
    "snapshot_every": {"default": 10, "help": "frames between snapshots (default 10)"},
}
# Choice fields whose values the parser leaves to the Job: ten compression names would swamp the usage line,
# and the Job's message (exit 2) lists them.
_CHOICES_LEFT_TO_THE_JOB = frozenset({"compression"})


def _flag_options(field: JobField) -> dict[str, Any]:
    """argparse's options for one Job field: its help, and for a flag its default, type and choices."""
    options: dict[str, Any] = {"help": field.help.replace("%", "%%")}  # argparse formats help with %
    if not field.flag or not field.flag.startswith("-"):
        return options  # a positional: required, a string
    options["dest"] = field.name
    if field.types == (bool,):
        options["action"] = "store_true"
    else:
        options["default"] = field.default_value()
        if field.types == (int,):
            options["type"] = int
        if field.choices and field.name not in _CHOICES_LEFT_TO_THE_JOB:
            options["choices"] = field.choices
    return {**options, **_FLAG_OVERRIDES.get(field.name, {})}


def _add_job_flags(parser: argparse.ArgumentParser) -> None:
    """A flag (or positional) for every Job field that declares one, in the order the fields are declared."""
    for field in FIELDS:
        if field.flag:
            parser.add_argument(field.flag, **_flag_options(field))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvm-vfx", description="Robust Video Matting for VFX pipelines")
    parser.add_argument("--version", action="version", version=f"rvm-vfx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    progress_help = "progress display: bar (terminal), json (one object a line, for plugins), none; default auto"

    matte = sub.add_parser("matte", help="matte a plate into premultiplied EXR frames")
    _add_job_flags(matte)
    matte.add_argument("--state-dir", help="folder for resume snapshots: run again with it to resume")
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

    from .editorial.cli import add_commands as add_editorial_commands
    from .export.cli import add_commands as add_export_commands
    from .finetune.cli import add_commands as add_finetune_commands
    from .quality.cli import add_commands as add_quality_commands

    add_quality_commands(sub)
    add_export_commands(sub)
    add_editorial_commands(sub)
    add_finetune_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    json_mode = getattr(args, "progress", None) == "json"
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message and an exit code
        code = exit_code(exc)
        if json_mode:
            EventWriter(sys.stdout)(error_event(exc))
        else:
            print(f"rvm-vfx: error: {exc}", file=sys.stderr)
        logging.getLogger(__name__).debug("traceback", exc_info=True)  # shown with --verbose
        return code


if __name__ == "__main__":
    sys.exit(main())
