"""The ``timeline`` command: an OpenTimelineIO edit's clips matted, and the edit written back with the mattes.

Exit codes as every command's, with one addition a pipeline script needs: a timeline some of whose clips
could not be matted (missing media, a failed render) exits 1 *after* the other clips' mattes and the
timeline are written, with a message naming those clips. 2 is bad input that stopped everything before
the first frame (an unreadable timeline, no such track, outputs that exist).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ..spec.exits import EXIT_OK
from ..spec.job import FIELDS_BY_NAME
from ..spec.progress import DONE, EventWriter

#: The Job fields a timeline passes to every clip's Job (a timeline ticket's settings add the farm's own to them,
#: ``render_worker.timeline_ticket.CLIP_OPTIONS``). The plate, output, frames and start frame come from each
#: clip; pre-roll is what handles are for.
CLIP_FIELDS = (
    "layer",
    "checkpoint",
    "downsample",
    "device",
    "precision",
    "ocio_config",
    "input_colorspace",
    "output_colorspace",
    "compression",
    "output_mode",
    "warmup",
    "passes",
    "overwrite",
)


def cmd_timeline(args: argparse.Namespace) -> int:
    from ..cli import downsample_value, make_progress
    from .timeline import TimelineIncomplete, render_timeline

    options: dict[str, Any] = {name: getattr(args, name) for name in CLIP_FIELDS}
    options["downsample"] = downsample_value(args.downsample)
    progress = make_progress(args.progress)
    json_mode = isinstance(progress, EventWriter)
    quiet = json_mode or args.progress == "none"  # "none" as for matte: errors only (the last one names the clips)
    notify = None if quiet else (lambda line: print(line, file=sys.stderr))
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stop.set()  # the frame in flight finishes (frames are written atomically); the timeline is written

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = render_timeline(
            args.timeline,
            args.out_dir,
            track=args.track,
            handles=args.handles,
            options=options,
            progress=_one_bar_per_clip(progress) if progress is not None and not json_mode else progress,
            stop=stop,
            notify=notify,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not result.complete:
        problems = "; ".join(result.problems())
        raise TimelineIncomplete(
            f"{len(result.rendered)} of {result.clips} clips matted, timeline written to {result.otio_path}; "
            f"not matted: {problems}"
        )
    return EXIT_OK


def _one_bar_per_clip(bar: Any) -> Any:
    """The terminal bar closed at each clip's end, so the next clip starts a bar of its own."""

    def show(message: dict[str, Any]) -> None:
        if message.get("event") == DONE:
            bar.close()
            bar.bar = None
        else:
            bar(message)

    return show


def add_commands(sub: Any) -> None:
    """Register ``timeline`` on the main parser's sub-parsers."""
    from ..cli import _flag_options  # the matte command's flags, so both spell and check them alike

    timeline = sub.add_parser(
        "timeline",
        help="matte every clip of an OpenTimelineIO track, one shot each, and write the edit with the mattes",
        description="Each clip whose media is an image sequence or a movie is rendered as a job of its own "
        "(its source range plus handles) into OUT_DIR/<clip>/<clip>.####.exr; OUT_DIR/<IN's name>.otio is the "
        "timeline with a 'RVM matte' track above the clips' track. Clips with missing media are reported and "
        "the rest still render (exit 1 then, after writing).",
    )
    timeline.add_argument("timeline", help="the edit: an .otio file")
    timeline.add_argument("out_dir", help="folder for the mattes (one folder per clip) and the new .otio")
    timeline.add_argument("--track", help="the video track to matte (default: the lowest video track)")
    timeline.add_argument(
        "--handles", type=int, default=0, metavar="N", help="frames rendered before and after each clip (default 0)"
    )
    for name in CLIP_FIELDS:
        field = FIELDS_BY_NAME[name]
        timeline.add_argument(field.flag, **_flag_options(field))
    timeline.add_argument(
        "--progress",
        choices=("auto", "bar", "json", "none"),
        default="auto",
        help="progress display: bar (terminal), json (one object a line: each clip's start ... done), none",
    )
    timeline.set_defaults(func=cmd_timeline)
