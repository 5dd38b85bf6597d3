"""Network throughput: ms per frame, batch 1, recurrent state carried: the official code vs the engine's path.

    python bench/bench_model.py                      # CPU, float32, the three standard plate sizes
    python bench/bench_model.py --precision bf16     # also bf16 autocast, with its alpha error vs fp32
    python bench/bench_model.py --device cuda --fp16 # GPU, also half precision
    python bench/bench_model.py --json bench/results/cpu.json

Each size is run as a shot: ``--warmup`` frames (not timed) then ``--frames`` timed frames, the
recurrent state carried from frame to frame as a render does, under ``torch.inference_mode``. The
variants run interleaved, one frame each in turn, so a busy machine slows them alike: ``official`` is the
official forward pass on the same weights (``bench/official_forward.py``), ``plain`` the network as loaded,
``optimized`` the engine's path (``MattingSession``'s network). The figures are the median and the best
ms/frame; the speed-up is official ÷ optimized, and ``max |dpha|`` the largest alpha difference between
the two on the last frame. The JSON keeps every frame's time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RVM_VFX_SHARED", ROOT.parent / "shared"))
DEFAULT_CHECKPOINT = SHARED / "models" / "rvm_mobilenetv3_tfjs" / "model.json"
GOLDEN_SRC = SHARED / "reference" / "golden_tfjs" / "synth_src.npy"

# (width, height, downsample ratio): a preview plate at full network resolution, HD and UHD at the
# ratio that brings them near the 512-pixel scale the network was trained at.
SIZES = [(512, 288, 1.0), (1920, 1080, 0.25), (3840, 2160, 0.125)]
# bf16 keeps 8 bits of mantissa: its error is reported against this bound, not asserted.
ALPHA_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- machine


def machine_info(device: torch.device) -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from rvm_vfx.render import usable_cores

    info: dict[str, object] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": usable_cores(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


# --------------------------------------------------------------------------- running


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """fp16 converts the weights (as the official fp16 exports do); bf16 runs under autocast instead."""
    return model.half() if precision == "fp16" else model


def _input_dtype(precision: str) -> torch.dtype:
    return torch.float16 if precision == "fp16" else torch.float32


def time_shots(
    models: dict[str, torch.nn.Module],
    src: torch.Tensor,
    ratio: float,
    frames: int,
    warmup: int,
    precision: str,
    device: torch.device,
) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Per model, milliseconds for each of ``frames`` frames after ``warmup``, and its last alpha.

    The models take turns frame by frame, each carrying its own recurrent state, so that other work on
    the machine lands on all of them alike instead of on whichever happened to run during it.
    """
    states: dict[str, list[torch.Tensor | None]] = {name: [None] * 4 for name in models}
    times: dict[str, list[float]] = {name: [] for name in models}
    alphas: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), _precision_context(precision, device):
        for i in range(warmup + frames):
            for name, model in models.items():
                _sync(device)
                start = time.perf_counter()
                _, pha, *states[name] = model(src, *states[name], downsample_ratio=ratio)
                _sync(device)
                if i >= warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
                alphas[name] = pha
    return times, {name: pha.float().cpu() for name, pha in alphas.items()}


def golden_alpha(model: torch.nn.Module, frames: torch.Tensor, ratio: float, precision: str) -> np.ndarray:
    """Alpha of the golden clip, run in order with the state carried, as float32."""
    device = next(model.parameters()).device
    rec: list[torch.Tensor | None] = [None] * 4
    out = []
    with torch.inference_mode(), _precision_context(precision, device):
        for t in range(frames.shape[0]):
            src = frames[t : t + 1].to(device=device, dtype=_input_dtype(precision))
            _, pha, *rec = model(src, *rec, downsample_ratio=ratio)
            out.append(pha.float().cpu())
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="weights (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per size (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write every figure and frame time here")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: also run under bf16 autocast and report its alpha error vs fp32 (default: %(default)s)",
    )
    parser.add_argument("--fp16", action="store_true", help="also run in half precision (CUDA only)")
    parser.add_argument("--no-optimize", action="store_true", help="skip the optimize_for_inference copy")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--sizes",
        default=",".join(f"{w}x{h}@{r:g}" for w, h, r in SIZES),
        help="comma-separated WxH@RATIO (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this torch")
    if args.fp16 and args.device != "cuda":
        parser.error("--fp16 needs --device cuda (half-precision convolutions on CPU are not a deployment target)")
    if args.frames < 1 or args.warmup < 0:
        parser.error("--frames must be at least 1 and --warmup at least 0")
    try:
        args.sizes = [_parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(f"--sizes: {exc}")
    return args


def _parse_size(text: str) -> tuple[int, int, float]:
    try:
        dims, ratio = text.strip().split("@")
        width, height = dims.lower().split("x")
        return int(width), int(height), float(ratio)
    except ValueError:
        raise ValueError(f"{text!r} is not WxH@RATIO, e.g. 1920x1080@0.25") from None


def _table(rows: list[dict[str, object]], names: list[str]) -> str:
    header = ["size", "ratio", "precision", *(f"{n} ms" for n in names)]
    compared = "official_ms" in rows[0] and "optimized_ms" in rows[0]
    if compared:
        header += ["speed-up", "best speed-up", "max |dpha|"]
    lines = []
    for r in rows:
        line = [f"{r['width']}x{r['height']}", f"{r['ratio']:g}", str(r["precision"])]
        line += [f"{r[f'{n}_ms']:.1f} ({r[f'{n}_best_ms']:.1f})" for n in names]
        if compared:
            line += [f"{r['speedup']:.2f}x", f"{r['best_speedup']:.2f}x", f"{r['max_abs_alpha_vs_official']:.1e}"]
        lines.append(line)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    from official_forward import OfficialForward

    from rvm_vfx.allocator import retain_freed_memory
    from rvm_vfx.model.batchnorm_folding import optimize_for_inference
    from rvm_vfx.session import network_for_precision
    from rvm_vfx.weights import load_model

    def engine_network(model: torch.nn.Module, device: torch.device, precision: str) -> torch.nn.Module:
        """What ``MattingSession`` runs: the inference copy with the precision's weights."""
        return network_for_precision(optimize_for_inference(model), device, precision)

    # A render tunes the allocator before its first frame (rvm_vfx.render); the official code would run
    # with glibc's defaults, but one process has one allocator, so every variant gets the render's.
    retain_freed_memory()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precisions = ["fp32"] + (["bf16"] if args.precision == "bf16" else []) + (["fp16"] if args.fp16 else [])

    base = load_model(args.checkpoint, device=device)
    # The engine's path is the session's network: BatchNorm folded, channels-last, weights for the precision.
    variants: dict[str, Callable[[str], torch.nn.Module]] = {
        "official": lambda p: OfficialForward(_prepare(load_model(args.checkpoint, device=device), p)),
        "plain": lambda p: _prepare(load_model(args.checkpoint, device=device), p),
    }
    if not args.no_optimize:
        variants["optimized"] = lambda p: engine_network(load_model(args.checkpoint, device=device), device, p)

    info = machine_info(device)
    print(f"checkpoint: {args.checkpoint}")
    print(f"model: {base.variant} / {base.refiner_name}, device {device}")
    for key, value in info.items():
        print(f"{key}: {value}")
    print(
        f"{args.frames} timed frames after {args.warmup} warm-up frames per size, variants interleaved; "
        "median (best) ms/frame\n",
        flush=True,
    )

    rows: list[dict[str, object]] = []
    generator = torch.Generator().manual_seed(0)
    for width, height, ratio in args.sizes:
        frame = torch.rand(1, 3, height, width, generator=generator)
        for precision in precisions:
            row: dict[str, object] = {"width": width, "height": height, "ratio": ratio, "precision": precision}
            models = {name: make(precision) for name, make in variants.items()}
            src = frame.to(device=device, dtype=_input_dtype(precision))
            times, alphas = time_shots(models, src, ratio, args.frames, args.warmup, precision, device)
            for name, frame_times in times.items():
                row[f"{name}_ms"] = statistics.median(frame_times)
                row[f"{name}_best_ms"] = min(frame_times)
                row[f"{name}_frame_ms"] = [round(t, 3) for t in frame_times]
            if "optimized" in models:
                row["speedup"] = row["official_ms"] / row["optimized_ms"]
                row["best_speedup"] = row["official_best_ms"] / row["optimized_best_ms"]
                row["max_abs_alpha_vs_official"] = float((alphas["optimized"] - alphas["official"]).abs().max())
            del models
            rows.append(row)
            summary = ", ".join(f"{name} {row[f'{name}_ms']:.1f}" for name in variants)
            print(f"  {width}x{height} @{ratio:g} {precision}: {summary} ms", flush=True)

    print()
    print(_table(rows, list(variants)))

    accuracy: dict[str, dict[str, object]] = {}
    reduced = [p for p in precisions if p != "fp32"]
    if reduced:
        golden = torch.from_numpy(np.load(GOLDEN_SRC))
        print(f"\nalpha error vs fp32 on {GOLDEN_SRC.name} ({golden.shape[0]} frames, state carried):")
        for precision in reduced:
            for name, make in variants.items():
                errors, means = {}, {}
                for ratio in (1.0, 0.5):
                    reference = golden_alpha(make("fp32"), golden, ratio, "fp32")
                    reduced_alpha = golden_alpha(make(precision), golden, ratio, precision)
                    difference = np.abs(reduced_alpha - reference)
                    errors[f"{ratio:g}"] = float(difference.max())
                    means[f"{ratio:g}"] = float(difference.mean())
                worst = max(errors.values())
                under = worst < ALPHA_TOLERANCE
                accuracy[f"{precision}/{name}"] = {
                    "max_abs_alpha_error": errors,
                    "mean_abs_alpha_error": means,
                    "under_1e-3": under,
                }
                per_ratio = ", ".join(f"ratio {r}: max {e:.2e} (mean {means[r]:.1e})" for r, e in errors.items())
                verdict = "under" if under else "NOT under"
                print(f"  {precision} {name}: |alpha - fp32| {per_ratio}; max {verdict} {ALPHA_TOLERANCE:g}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "checkpoint": str(args.checkpoint),
            "model": {"variant": base.variant, "refiner": base.refiner_name},
            "device": str(device),
            "machine": info,
            "frames": args.frames,
            "warmup": args.warmup,
            "statistic": "median ms/frame",
            "results": rows,
            "accuracy": accuracy,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
