"""The ``finetune`` command: ``rvm-vfx finetune PLATE KEYFRAMES OUT.pth [settings]``.

The settings' flags come from their declarations in ``rvm_vfx.spec.finetune``. Exit codes as every
command's: 0 written, 2 bad input (a keyframe or setting to fix), 1 anything else, and 1 when stopped
(SIGTERM, SIGINT, after writing the best checkpoint so far).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ..spec.exits import EXIT_FAILED, EXIT_OK
from ..spec.finetune import FIELDS, PROGRESS_MODES, FinetuneSettings
from ..spec.progress import CANCELLED, DONE, START, TRAIN, VALIDATION, WARNING, EventWriter, event


class TrainBar:
    """A terminal progress bar: iterations, loss and time left; validation results and warnings as lines."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar: Any = None

    def _write(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text, file=sys.stderr)

    def __call__(self, message: dict[str, Any]) -> None:
        kind = message.get("event")
        if kind == START:
            self.bar = self._tqdm(total=message["total"], unit="it", dynamic_ncols=True, file=sys.stderr)
        elif kind == TRAIN and self.bar is not None:
            self.bar.n = message["iteration"]
            self.bar.set_postfix_str(f"{message.get('phase', 'train')} loss {message['loss']:.4f}", refresh=False)
            self.bar.refresh()
        elif kind == VALIDATION:
            self._write(
                f"held-out keyframe {message['keyframe']}: MAD x1e3 {message['mad_before']:.2f} -> "
                f"{message['mad_after']:.2f}"
            )
        elif kind == WARNING:
            self._write(f"warning: {message['message']}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _settings(args: argparse.Namespace) -> FinetuneSettings:
    from ..cli import downsample_value

    values = {f.name: getattr(args, f.name) for f in FIELDS if f.flag}
    values["downsample"] = downsample_value(args.downsample)
    return FinetuneSettings(**values)


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..cli import make_progress
    from .run import FinetuneRequest, finetune

    request = FinetuneRequest(args.plate, args.out, _settings(args), overwrite=args.overwrite)
    progress = TrainBar() if args.progress == "bar" or (args.progress == "auto" and sys.stderr.isatty()) else None
    if progress is None:
        progress = make_progress(args.progress if args.progress != "bar" else "none")
    stop = threading.Event()

    def request_stop(_signum: int, _frame: Any) -> None:
        stop.set()  # the step in flight finishes, then the best weights so far are written

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = finetune(request, progress=progress, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if hasattr(progress, "close"):
            progress.close()
    summary = report.to_dict()
    if isinstance(progress, EventWriter):
        progress(event(CANCELLED if report.stopped == "stop" else DONE, **summary))
    elif args.progress != "none":
        if not isinstance(progress, TrainBar):  # the bar showed these as they came
            for entry in report.validation:
                print(
                    f"held-out keyframe {entry['keyframe']}: MAD x1e3 {entry['mad_before']:.2f} -> "
                    f"{entry['mad_after']:.2f}",
                    file=sys.stderr,
                )
            for message in report.warnings:
                print(f"warning: {message}", file=sys.stderr)
        what = "stopped" if report.stopped == "stop" else "done"
        print(
            f"{what}: {report.iterations} of {report.planned} iterations in {report.elapsed_s:.1f} s, "
            f"loss {report.loss:.4f} -> {report.checkpoint} (+ {report.sidecar})",
            file=sys.stderr,
        )
    return EXIT_FAILED if report.stopped == "stop" else EXIT_OK


def add_commands(sub: Any) -> None:
    """Register ``finetune`` on the main parser's sub-parsers."""
    from ..cli import _flag_options

    parser = sub.add_parser(
        "finetune",
        help="fine-tune the network on a shot from a few roto keyframes; writes OUT.pth and OUT.json",
    )
    parser.add_argument("plate", help="plate: anything matte reads (sequence pattern, folder, video)")
    for f in FIELDS:
        if f.flag == "keyframes":
            parser.add_argument("keyframes", help=f.help.replace("%", "%%"))
    parser.add_argument("out", help="checkpoint to write (OUT.pth; OUT.json is written beside it)")
    for f in FIELDS:
        if f.flag and f.flag.startswith("-"):
            options = _flag_options(f)
            if f.types == (float,) or f.name == "time_limit":
                options["type"] = float
            parser.add_argument(f.flag, **options)
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="auto", help="bar, json (one event a line), none")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT.pth and OUT.json")
    parser.set_defaults(func=cmd_finetune)
