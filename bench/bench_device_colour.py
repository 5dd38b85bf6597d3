"""The colour work of a render on the network's device (``rvm_vfx.device_color``) against the CPU path.

    python bench/bench_device_colour.py                  # CPU: both paths' to_model and compose, interleaved
    python bench/bench_device_colour.py --repeats 15 --json bench/results/device_colour.json
    python bench/bench_device_colour.py --device cuda    # a GPU node: also the device path's stages

On the CPU, each 1080p frame's ``to_model`` and compose run through OCIO and the premultiply strips (the CPU
path, what a CPU render uses) and through the torch ops (the device path, run on the CPU only to compare),
alternately, ``--repeats`` times on the same plate and one saved network output; best and median CPU-ms
(every thread of the process) are printed. ``bench_render.py --device cuda`` prints the device path's stages
(``device_stage_costs``) beside the CPU path's. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import machine_info  # noqa: E402  (bench/ is the scripts' folder)
from bench_render import CHECKPOINT, STAGES, make_plate  # noqa: E402

SPACE = "ACEScg"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_stage_costs(
    pattern: str, frames: int, ratio: float, model: torch.nn.Module, device: str, precision: str = "fp32"
) -> dict[str, dict[str, float]]:
    """CPU and wall ms per frame of each stage of the device path, as ``bench_render.stage_costs`` times the CPU
    path's: decode, to_model (upload, convert, count and clip on the device), network (outputs left there),
    compose (on the device, the half RGBA back through pinned memory), encode. Each stage ends synchronised."""
    from rvm_vfx.color import ColorPipeline
    from rvm_vfx.device_color import DeviceColor
    from rvm_vfx.frame_io import read_image, write_exr
    from rvm_vfx.session import MattingSession

    color = ColorPipeline()
    session = MattingSession(model, ratio, device=device, precision=precision)
    colour = DeviceColor(color, SPACE, session.device)
    cpu_totals = dict.fromkeys(STAGES, 0.0)
    wall_totals = dict.fromkeys(STAGES, 0.0)
    with tempfile.TemporaryDirectory() as out:
        for i in range(frames + 1):  # frame 0 builds the transforms and warms kernels: not counted
            marks = [(time.process_time(), time.perf_counter())]
            plate = read_image(pattern.replace("####", str(1001 + i % frames)))
            marks.append((time.process_time(), time.perf_counter()))
            frame, _ = colour.to_model(plate.rgb, SPACE)  # type: ignore[misc]  # ACEScg is supported
            marks.append((time.process_time(), time.perf_counter()))
            fgr, pha = session.step(frame.network_input(), on_device=True)
            _sync(session.device)
            marks.append((time.process_time(), time.perf_counter()))
            rgba = colour.compose(frame, fgr, pha)
            marks.append((time.process_time(), time.perf_counter()))
            write_exr(str(Path(out) / "m.exr"), rgba, plate.header, SPACE, {"rvm:bench": 1})
            marks.append((time.process_time(), time.perf_counter()))
            if i:
                for stage, (before, after) in zip(STAGES, pairwise(marks), strict=True):
                    cpu_totals[stage] += after[0] - before[0]
                    wall_totals[stage] += after[1] - before[1]
    return {
        "cpu_ms": {stage: 1000 * seconds / frames for stage, seconds in cpu_totals.items()},
        "wall_ms": {stage: 1000 * seconds / frames for stage, seconds in wall_totals.items()},
    }


def interleaved_cpu_ms(pattern: str, repeats: int, ratio: float) -> dict[str, dict[str, float]]:
    """Best and median CPU-ms of to_model and compose, the CPU path's and the torch ops' on the CPU, alternated."""
    from rvm_vfx.color import ColorPipeline
    from rvm_vfx.device_color import DeviceColor
    from rvm_vfx.frame_io import read_image
    from rvm_vfx.session import MattingSession
    from rvm_vfx.weights import load_model

    color = ColorPipeline()
    cpu = torch.device("cpu")
    colour = DeviceColor(color, SPACE, cpu)
    plate = read_image(pattern.replace("####", "1001"))
    model_rgb, _ = color.to_model(plate.rgb, SPACE)
    session = MattingSession(load_model(CHECKPOINT), ratio)
    fgr, pha = session.step(torch.from_numpy(model_rgb).permute(2, 0, 1)[None])
    fgr_np, pha_np = fgr[0].permute(1, 2, 0).numpy(), pha[0, 0].numpy()
    frame, _ = colour.to_model(plate.rgb, SPACE)  # type: ignore[misc]  # builds the transforms: not timed

    runs = {
        "to_model cpu path (OCIO)": lambda: color.to_model(plate.rgb, SPACE),
        "to_model torch ops on the CPU": lambda: colour.to_model(plate.rgb, SPACE),
        "compose cpu path": lambda: color.compose_foreground(
            plate.rgb, model_rgb, fgr_np, pha_np, SPACE, SPACE, np.float16
        ),
        "compose torch ops on the CPU": lambda: colour.compose(frame, fgr, pha),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.process_time()
            run()
            times[name].append(1000 * (time.process_time() - start))
    return {name: {"best": min(ms), "median": statistics.median(ms)} for name, ms in times.items()}


def main() -> None:
    from rvm_vfx.session import pick_device
    from rvm_vfx.weights import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--frames", type=int, default=8, help="device path stages: frames timed")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    device = pick_device(args.device)
    result: dict[str, object] = {"machine": machine_info(device), "size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        pattern = make_plate(Path(tmp) / "plate", max(args.frames, 1), width, height)
        paths = interleaved_cpu_ms(pattern, args.repeats, args.ratio)
        result["interleaved_cpu_ms"] = paths
        print(f"{width}×{height}, CPU-ms per frame, {args.repeats} interleaved runs (best / median):")
        for name, ms in paths.items():
            print(f"  {name:32s} {ms['best']:7.1f} / {ms['median']:7.1f}")
        if device.type != "cpu":
            stages = device_stage_costs(
                pattern, args.frames, args.ratio, load_model(CHECKPOINT), device.type, args.precision
            )
            result["device_path_stages"] = stages
            for kind in ("cpu_ms", "wall_ms"):
                print(
                    f"device path on {device} ({args.precision}), {kind} per frame: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in stages[kind].items())
                )
    print(json.dumps(result["machine"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
