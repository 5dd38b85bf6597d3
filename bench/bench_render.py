"""End-to-end throughput (EXR in, EXR out) against the network alone, and peak memory at UHD.

    python bench/bench_render.py                 # 1920×1080, 24 frames, ratio 0.25
    python bench/bench_render.py --frames 48 --json bench/results/render.json
    python bench/bench_render.py --uhd-memory    # also peak RSS of a 3840×2160 render (subprocess)
    python bench/bench_render.py --device cuda --precision fp16   # a GPU node

Both figures come from the same frames in the same run: the network alone (`MattingSession.step` on
frames already decoded and in model space, timed before and after the render and averaged), and the
whole render (read, colour, network, colour, premultiply, write) through `rvm_vfx.render.render`. The
ratio says how well reading and writing hide behind the network. Last, each stage is run on its own
for its CPU cost per frame: where the network already fills every core (a CPU render), that budget,
not the threading, bounds the ratio, and the script prints the bound. Beside the stages, each frame is
also read and written with the bare `OpenEXR` package (the plate in, the same output pixels out, ZIP), and
the CPU side outside the network is printed as a multiple of that I/O floor. Figures, not pass/fail: compare
only runs on the same machine and load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import torch
from bench_model import machine_info  # the scripts run from bench/, which Python puts on sys.path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RVM_VFX_SHARED", ROOT.parent / "shared"))
CHECKPOINT = SHARED / "models" / "rvm_mobilenetv3_tfjs" / "model.json"
PORTRAIT = SHARED / "data" / "portraits"
BACKGROUND = SHARED / "data" / "backgrounds" / "rw_02.jpg"


def _resize(path: Path, width: int, height: int) -> np.ndarray:
    buf = oiio.ImageBuf(str(path))
    return oiio.ImageBufAlgo.resize(buf, roi=oiio.ROI(0, width, 0, height, 0, 1, 0, buf.nchannels)).get_pixels(
        oiio.FLOAT
    )


def make_plate(folder: Path, frames: int, width: int, height: int) -> str:
    """A scene-linear ACEScg half-float EXR shot: a portrait sliding over a background."""
    from rvm_vfx.color import ColorPipeline

    image = _resize(PORTRAIT / "image" / "p_818e689d.jpg", width, height)
    alpha = _resize(PORTRAIT / "alpha" / "p_818e689d.png", width, height)
    background = _resize(BACKGROUND, width, height)
    color = ColorPipeline()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        shift = (i - frames // 2) * max(1, width // 200)
        comp = np.roll(image, shift, 1) * np.roll(alpha, shift, 1) + background * (1 - np.roll(alpha, shift, 1))
        linear = color.convert(comp.astype(np.float32), "sRGB - Texture", "ACEScg")
        spec = oiio.ImageSpec(width, height, 3, "half")
        spec.attribute("compression", "zip")
        out = oiio.ImageOutput.create("exr")
        out.open(str(folder / f"plate.{1001 + i}.exr"), spec)
        out.write_image(linear)
        out.close()
    return str(folder / "plate.####.exr")


STAGES = ("decode", "to_model", "network", "compose", "encode")
#: Every stage but the network: the CPU side a GPU render waits on.
OUTSIDE_NETWORK = tuple(stage for stage in STAGES if stage != "network")


def bare_openexr_cpu_ms(plate_path: str, rgba: np.ndarray, out_path: str) -> tuple[float, float]:
    """CPU ms of the I/O floor for one frame: the `OpenEXR` package alone reading the plate, and writing the output.

    The output is the render's own frame (same pixels as half, same ZIP compression), so its encode cost is
    the same work the render's writer does; nothing else (no metadata, no colour) is included. The read and
    the write come apart, so decode and encode each have their own floor.
    """
    import OpenEXR

    halves = torch.from_numpy(rgba).half().numpy()  # no copy when the frame is half already
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    start = time.process_time()
    with OpenEXR.File(plate_path) as plate:
        plate.channels()
    read = time.process_time()
    OpenEXR.File(header, {"RGBA": halves}).write(out_path)
    return 1000 * (read - start), 1000 * (time.process_time() - read)


def stage_costs(
    pattern: str, frames: int, ratio: float, model: torch.nn.Module, device: str = "cpu", precision: str = "fp32"
) -> dict[str, dict[str, float]]:
    """CPU and wall milliseconds per frame of each stage of a render, run one after another.

    CPU time is the process's (every thread: OpenEXR's and torch's pools included), so the figures add
    up to what one frame costs the machine. On a machine whose cores are all busy, as in a CPU render,
    this sum and not the overlap decides the end-to-end rate: end-to-end can reach at most
    ``network / sum`` of the network-only rate, however the work is threaded. On a GPU the network's
    wall time is the figure to hold the CPU stages against.
    """
    from rvm_vfx.color import ColorPipeline
    from rvm_vfx.frame_io import read_image, write_exr
    from rvm_vfx.session import MattingSession

    color = ColorPipeline()
    session = MattingSession(model, ratio, device=device, precision=precision)
    cpu_totals = dict.fromkeys(STAGES, 0.0)
    wall_totals = dict.fromkeys(STAGES, 0.0)
    bare_totals = [0.0, 0.0]  # read, write
    with tempfile.TemporaryDirectory() as out:
        marks: list[tuple[float, float]] = []

        def mark() -> None:
            marks.append((time.process_time(), time.perf_counter()))

        for i in range(frames + 1):  # frame 0 warms up kernels and caches: not counted
            marks.clear()
            mark()
            plate_path = pattern.replace("####", str(1001 + i % frames))
            plate = read_image(plate_path)
            mark()
            rgb, _ = color.to_model(plate.rgb, "ACEScg")
            mark()
            fgr, pha = session.step(torch.from_numpy(rgb).permute(2, 0, 1)[None])  # returns on the CPU: synced
            mark()
            rgba = color.compose_foreground(  # straight into halves, as the render's writer does
                plate.rgb, rgb, fgr[0].permute(1, 2, 0).numpy(), pha[0, 0].numpy(), "ACEScg", "ACEScg", np.float16
            )
            mark()
            write_exr(str(Path(out) / "m.exr"), rgba, plate.header, "ACEScg", {"rvm:bench": 1})
            mark()
            bare = bare_openexr_cpu_ms(plate_path, rgba, str(Path(out) / "bare.exr"))
            if i:
                bare_totals = [total + ms for total, ms in zip(bare_totals, bare, strict=True)]
                for stage, (before, after) in zip(STAGES, pairwise(marks), strict=True):
                    cpu_totals[stage] += after[0] - before[0]
                    wall_totals[stage] += after[1] - before[1]
    return {
        "cpu_ms": {stage: 1000 * seconds / frames for stage, seconds in cpu_totals.items()},
        "wall_ms": {stage: 1000 * seconds / frames for stage, seconds in wall_totals.items()},
        "bare_openexr_cpu_ms": sum(bare_totals) / frames,
        "bare_openexr_read_write_cpu_ms": [total / frames for total in bare_totals],
    }


def bench_hd(
    frames: int, width: int, height: int, ratio: float, device: str = "cpu", precision: str = "fp32"
) -> dict[str, object]:
    from rvm_vfx.allocator import retain_freed_memory
    from rvm_vfx.color import ColorPipeline
    from rvm_vfx.frame_io import read_image
    from rvm_vfx.job import Job
    from rvm_vfx.render import render
    from rvm_vfx.session import MattingSession
    from rvm_vfx.weights import load_model

    retain_freed_memory()  # what render() does first; done here so the network-only run gets it too
    model = load_model(CHECKPOINT)
    with tempfile.TemporaryDirectory() as tmp:
        pattern = make_plate(Path(tmp) / "plate", frames, width, height)
        color = ColorPipeline()
        tensors = []
        for i in range(frames):
            plate = read_image(pattern.replace("####", str(1001 + i)))
            rgb, _ = color.to_model(plate.rgb, "ACEScg")
            tensors.append(torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous())
        session = MattingSession(model, ratio, device=device, precision=precision)
        session.step(tensors[0])  # first frame builds kernels and state: not timed in either run

        def network_only() -> float:
            session.reset()
            start = time.perf_counter()
            for tensor in tensors:
                session.step(tensor)
            return frames / (time.perf_counter() - start)

        # The network alone is timed before and after the render and the two are averaged: on a shared
        # or virtual machine the speed drifts by tens of percent within a minute, and bracketing the
        # render keeps that drift out of the ratio (both runs are reported so it shows).
        before = network_only()
        job = Job(
            input=pattern,
            output=str(Path(tmp) / "out" / "m.####.exr"),
            checkpoint=str(CHECKPOINT),
            downsample=ratio,
            device=device,
            precision=precision,
            # The pipeline against the network alone on the same frames: the default warm-up would add its
            # frames' network steps to the render only (8 on a 12-frame bench: 24 % of network-alone, not 43 %).
            warmup=0,
        )
        report = render(job, model=model)
        after = network_only()
        tensors.clear()
        model_fps = (before + after) / 2
        costs = stage_costs(pattern, frames, ratio, model, device, precision)
        stages = costs["cpu_ms"]
        device_path = None
        if device != "cpu":  # what the render runs there: colour and compositing on the device (rvm_vfx.device_color)
            from bench_device_colour import device_stage_costs

            device_path = device_stage_costs(pattern, frames, ratio, model, device, precision)
        return {
            "device_path_stage_ms": device_path,
            "frames": frames,
            "model_only_fps": model_fps,
            "model_only_fps_runs": [before, after],
            "end_to_end_fps": report.fps,
            "ratio": report.fps / model_fps,
            "stage_cpu_ms": stages,
            "stage_wall_ms": costs["wall_ms"],
            "ratio_bound": stages["network"] / sum(stages.values()),
            "bare_openexr_cpu_ms": costs["bare_openexr_cpu_ms"],
            "bare_openexr_read_write_cpu_ms": costs["bare_openexr_read_write_cpu_ms"],
            "outside_network_cpu_ms": sum(stages[stage] for stage in OUTSIDE_NETWORK),
        }


def uhd_peak_memory(frames: int, device: str = "cpu", precision: str = "fp32") -> dict[str, float]:
    """Render 3840×2160 in a fresh process so its peak RSS (and GPU memory) is the render's alone."""
    code = f"""
import resource, sys, tempfile, json
from pathlib import Path
import torch
sys.path.insert(0, {str(ROOT / "bench")!r})
from bench_render import make_plate, CHECKPOINT
from rvm_vfx.job import Job
from rvm_vfx.render import render
with tempfile.TemporaryDirectory() as tmp:
    pattern = make_plate(Path(tmp) / "plate", {frames}, 3840, 2160)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = render(Job(input=pattern, output=str(Path(tmp) / "o" / "m.####.exr"), checkpoint=str(CHECKPOINT),
                        downsample=0.125, device={device!r}, precision={precision!r}, warmup=0))
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(json.dumps({{"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_before_render_mb": before / 1024, "fps": report.fps, "peak_gpu_mb": gpu}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from rvm_vfx.session import pick_device

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="as rvm-vfx matte")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="as rvm-vfx matte")
    parser.add_argument("--uhd-memory", action="store_true", help="also measure peak RSS of a 4K render")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    device = pick_device(args.device)
    result: dict[str, object] = {"machine": machine_info(device), "device": str(device), "precision": args.precision}
    hd = bench_hd(args.frames, width, height, args.ratio, device.type, args.precision)
    result["hd"] = hd
    print(
        f"{width}×{height} @ {args.ratio} on {device} ({args.precision}): model only {hd['model_only_fps']:.2f} fps "
        f"({' and '.join(f'{fps:.2f}' for fps in hd['model_only_fps_runs'])} before and after), "
        f"end to end (EXR→EXR) {hd['end_to_end_fps']:.2f} fps = {hd['ratio']:.0%} of model-only"
    )
    stages = hd["stage_cpu_ms"]
    print(
        "CPU ms per frame, stage by stage: "
        + ", ".join(f"{name} {ms:.0f}" for name, ms in stages.items())
        + f" (sum {sum(stages.values()):.0f})"
    )
    outside, bare = hd["outside_network_cpu_ms"], hd["bare_openexr_cpu_ms"]
    print(
        f"outside the network {outside:.0f} CPU ms per frame; bare OpenEXR read of the plate plus write of the "
        f"same output frame {bare:.0f} ms; ratio {outside / bare:.2f}×"
    )
    bare_read, bare_write = hd["bare_openexr_read_write_cpu_ms"]
    print(
        f"decode {stages['decode']:.0f} CPU ms against a bare OpenEXR read of {bare_read:.0f}; "
        f"encode {stages['encode']:.0f} against a bare write of {bare_write:.0f}"
    )
    if device.type == "cpu":
        print(f"with every core busy, end to end can reach at most {hd['ratio_bound']:.0%} of model-only here")
    else:
        print("wall ms per frame, stage by stage: " + ", ".join(f"{k} {v:.0f}" for k, v in hd["stage_wall_ms"].items()))
        for kind, figures in hd["device_path_stage_ms"].items():
            print(
                f"device colour path (the render's on {device}), {kind} per frame: "
                + ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
            )
    if args.uhd_memory:
        uhd = uhd_peak_memory(6, device.type, args.precision)
        result["uhd"] = uhd
        gpu = f", peak GPU memory {uhd['peak_gpu_mb']:.0f} MB" if uhd.get("peak_gpu_mb") is not None else ""
        print(f"3840×2160 @ 0.125: peak RSS {uhd['peak_rss_mb']:.0f} MB{gpu}, {uhd['fps']:.2f} fps")
    print(json.dumps(result["machine"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
