"""Fine-tuning cost: seconds per training step, the whole run's time, and its peak memory.

    python bench/bench_finetune.py                                  # CPU: 512x288 and 1920x1080, 20 steps each
    python bench/bench_finetune.py --sizes 512x288 --iterations 150  # the bare command's budget
    python bench/bench_finetune.py --device cuda --precision fp16    # GPU (also bf16, fp32)
    python bench/bench_finetune.py --json bench/results/finetune.json

Each size gets a test clip (a P3M portrait panning over a photo, ``rvm_vfx.quality.testclip``) with two
keyframes, and ``rvm-vfx finetune`` runs on it as a subprocess, exactly as an artist runs it (auto
ratio, the default losses and warm-up), with ``--progress json``. Reported per size: the median
seconds per step (from the ``train`` events' ``elapsed_s``, after the first step, which builds
kernels), the time from start to the checkpoint, the leave-one-out folds' share, and the peak
resident memory of the process (``wait4``'s ``ru_maxrss``) and, on CUDA, the peak allocated GPU memory
(from the sidecar). Figures, not pass/fail: compare only runs on the same machine under the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RVM_VFX_SHARED", ROOT.parent / "shared"))
CHECKPOINT = SHARED / "models" / "rvm_mobilenetv3_tfjs" / "model.json"
DATA = SHARED / "data"
SIZES = ((512, 288), (1920, 1080))
FRAMES = 12
KEYFRAMES = (3, 9)

sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def make_clip(folder: Path, size: tuple[int, int]) -> tuple[str, str]:
    from rvm_vfx.quality.testclip import Motion, make_testclip

    make_testclip(
        DATA / "portraits" / "image" / "p_09ba26b4.jpg",
        DATA / "portraits" / "alpha" / "p_09ba26b4.png",
        DATA / "backgrounds" / "rw_02.jpg",
        folder,
        frames=FRAMES,
        size=size,
        motion=Motion("pan", 0.1),
        overwrite=True,
    )
    keys = folder / "keys"
    keys.mkdir()
    for frame in KEYFRAMES:
        (keys / f"{frame:04d}.png").write_bytes((folder / "pha" / f"{frame:04d}.png").read_bytes())
    return str(folder / "com" / "####.png"), str(keys / "####.png")


def run(plate: str, keys: str, out: Path, args: argparse.Namespace) -> dict[str, object]:
    command = [
        sys.executable, "-m", "rvm_vfx", "finetune", plate, keys, str(out), "--checkpoint", str(args.checkpoint),
        "--iterations", str(args.iterations), "--device", args.device, "--precision", args.precision,
        "--progress", "json", "--overwrite",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert process.stdout is not None
    events = [json.loads(line) for line in process.stdout if line.startswith("{")]
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"finetune failed ({process.returncode}): {events[-1] if events else 'no output'}")
    train = [e for e in events if e["event"] == "train" and e.get("phase") == "train"]
    folds = [e for e in events if e["event"] == "train" and e.get("phase") == "validation"]
    steps = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(train, train[1:], strict=False)]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    return {
        "step_s_median": round(statistics.median(steps), 3) if steps else None,
        "step_s_all": [round(s, 3) for s in steps],
        "train_s": sidecar["time"]["train_s"],
        "total_s": sidecar["time"]["total_s"],
        "process_wall_s": round(wall, 1),
        "validation_steps": len(folds),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "device_peak_memory_mib": (
            round(sidecar["device_peak_memory_bytes"] / 2**20, 1) if sidecar.get("device_peak_memory_bytes") else None
        ),
        "downsample_ratio": sidecar["downsample_ratio"],
    }


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="*", type=parse_size, default=list(SIZES), help="WIDTHxHEIGHT ...")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the run (default: torch's own)")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    machine = {
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print(json.dumps(machine))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in args.sizes:
            folder = Path(tmp) / f"{width}x{height}"
            plate, keys = make_clip(folder, (width, height))
            row = {"size": f"{width}x{height}", "device": args.device, "precision": args.precision,
                   "iterations": args.iterations, **run(plate, keys, folder / "out.pth", args)}  # fmt: skip
            results.append(row)
            shown = {k: v for k, v in row.items() if k != "step_s_all"}
            print(json.dumps(shown), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
