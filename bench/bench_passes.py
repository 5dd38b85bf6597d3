"""What the bidirectional pass costs: render time and peak memory against forward-only, at two shot lengths.

    python bench/bench_passes.py                          # 960×540, 24 and 72 frames, ~10 min on 2 shared cores
    python bench/bench_passes.py --size 1920x1080 --frames 24,96 --json bench/results/passes_cost.json

Each render runs in a fresh process (``rvm_vfx.render.render`` on a half-float EXR plate made beforehand by
``bench_render.make_plate``), so its peak RSS is the render's alone; the rise over the process's RSS before the
render is what the render itself holds. Expect about twice the time (two network passes plus a half-float
frame written and read back per frame) and the same memory whatever the shot's length: one frame of each pass
is in memory at a time, the backward results wait on disk (``--state-dir`` or a temporary folder beside the
output). Figures, not pass/fail: compare only runs on the same machine and load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_model import machine_info  # the scripts run from bench/, which Python puts on sys.path
from bench_render import CHECKPOINT, ROOT, make_plate

CHILD = """
import json, resource, sys
from rvm_vfx.job import Job
from rvm_vfx.render import render
pattern, out, passes, warmup, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import torch
torch.set_num_threads(threads)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
job = Job(input=pattern, output=out, checkpoint={checkpoint!r}, passes=passes, warmup=warmup, cuts="none")
report = render(job)
print(json.dumps({{"elapsed_s": report.elapsed_s, "fps": report.fps, "frames": len(report.frames_written),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_render_mb": before / 1024}}))
"""


def run_one(pattern: str, out: Path, passes: str, warmup: int, threads: int) -> dict[str, float]:
    code = CHILD.format(checkpoint=str(CHECKPOINT))
    argv = [sys.executable, "-c", code, pattern, str(out / "m.####.exr"), passes, str(warmup), str(threads)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="960x540")
    parser.add_argument("--frames", default="24,72", help="shot lengths")
    parser.add_argument("--warmup", type=int, default=8, help="the warm-up of the bidirectional renders")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    lengths = [int(v) for v in args.frames.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in lengths:
            pattern = make_plate(Path(tmp) / f"plate{length}", length, width, height)
            for passes, warmup in (("forward", 0), ("bidirectional", args.warmup)):
                figures = run_one(pattern, Path(tmp) / f"out-{passes}-{length}", passes, warmup, args.threads)
                rows.append({"frames": length, "passes": passes, "warmup": warmup, **figures})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    machine = machine_info(torch.device("cpu"))
    print(f"{width}×{height}, {machine['cpu']}, torch {machine['torch']}, {args.threads} thread(s)")
    print("| frames | passes | warm-up | time s | fps | peak RSS MB | RSS rise in render MB | time vs forward |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["frames"] == row["frames"] and r["passes"] == "forward")
        rise = row["peak_rss_mb"] - row["rss_before_render_mb"]
        print(
            f"| {row['frames']} | {row['passes']} | {row['warmup']} | {row['elapsed_s']:.1f} | {row['fps']:.2f} | "
            f"{row['peak_rss_mb']:.0f} | {rise:.0f} | {row['elapsed_s'] / base['elapsed_s']:.2f}× |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": [width, height], "machine": machine, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
