"""The ``rvm-worker`` command: ``watch`` a root and render what is dropped there, or print its ``status``.

Exit codes: 0 stopped cleanly (SIGTERM included: the job in hand is left resumable), 2 bad settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rvm_vfx.errors import InputError

EXIT_OK, EXIT_BAD_SETTINGS = 0, 2


def _watch_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "root": args.root,
        "output_root": args.output_root,
        "allow_input_roots": args.allow_input_root,
        "models_dir": args.models_dir,
        "default_checkpoint": args.default_checkpoint,
        "settle": args.settle,
        "snapshot_every": args.snapshot_every,
        "heartbeat_timeout": args.heartbeat_timeout,
        "worker_id": args.worker_id,
        "dask_scheduler": args.dask_scheduler,
        "chunk_size": args.chunk_size,
        "preroll": args.preroll,
        "chunk_retries": args.chunk_retries,
        "max_frames": args.max_frames,
        "rescan_interval": args.rescan_interval,
        "torch_threads": args.torch_threads,
        "log_file": args.log_file,
    }


def setup_logging(log_file: Path, verbose: bool) -> None:
    """The worker's own log: its file (kept) and stderr (for the service manager's journal)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in (logging.FileHandler(log_file, encoding="utf-8"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    for noisy in ("watchdog", "distributed", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_watch(args: argparse.Namespace) -> int:
    from .config import build_config
    from .layout import Layout
    from .worker import Worker

    config = build_config(_watch_overrides(args), args.config)
    layout = Layout(config.root)
    layout.ensure()
    setup_logging(config.log_file or layout.logs / f"worker-{config.worker_id}.log", args.verbose)
    return Worker(config).run()


def cmd_status(args: argparse.Namespace) -> int:
    from .layout import Layout
    from .status import collect, format_table, workers

    layout = Layout(Path(args.root))
    if not layout.root.is_dir():
        raise InputError(f"{layout.root}: not a folder")
    rows = collect(layout)
    if args.json:
        print(json.dumps({"jobs": rows, "workers": workers(layout)}, indent=2, default=str))
    else:
        print(format_table(rows, workers(layout)))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvm-worker", description="rvm-vfx farm render worker")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    watch = sub.add_parser("watch", help="watch ROOT/incoming and render what is dropped there")
    watch.add_argument("root", nargs="?", help="the watch root (holds incoming/ active/ done/ failed/)")
    watch.add_argument("--config", help="TOML settings file (also $RVM_WORKER_CONFIG); flags override it")
    watch.add_argument("--output-root", help="where outputs go; relative ticket outputs resolve here")
    watch.add_argument(
        "--allow-input-root", action="append", default=None, help="a folder plates may come from (repeatable)"
    )
    watch.add_argument("--models-dir", help="the only folder checkpoints are loaded from")
    watch.add_argument("--default-checkpoint", help="checkpoint (name in the models dir) for tickets naming none")
    watch.add_argument("--settle", type=float, help="seconds a dropped folder must stay unchanged (default 10)")
    watch.add_argument("--snapshot-every", type=int, help="state snapshot every N frames (default 10)")
    watch.add_argument("--heartbeat-timeout", type=float, help="seconds before a silent job is taken over (60)")
    watch.add_argument("--worker-id", help="this worker's name (default host-pid)")
    watch.add_argument("--dask-scheduler", help="render chunks on this Dask scheduler, e.g. tcp://farm:8786")
    watch.add_argument("--chunk-size", type=int, help="frames per Dask chunk (default 100)")
    watch.add_argument("--preroll", type=int, help="pre-roll frames before each chunk after the first (15)")
    watch.add_argument("--chunk-retries", type=int, help="Dask retries of a chunk that raised (default 2)")
    watch.add_argument("--max-frames", type=int, help="largest frame count a ticket may ask for (100000)")
    watch.add_argument("--rescan-interval", type=float, help="seconds between rescans of the folders (5)")
    watch.add_argument("--torch-threads", type=int, help="CPU threads for torch in local mode (default: torch's)")
    watch.add_argument("--log-file", help="the worker's own log (default ROOT/logs/worker-<id>.log)")
    watch.set_defaults(func=cmd_watch)

    status = sub.add_parser("status", help="print the jobs under ROOT and their progress")
    status.add_argument("root")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"rvm-worker: error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS


if __name__ == "__main__":
    sys.exit(main())
