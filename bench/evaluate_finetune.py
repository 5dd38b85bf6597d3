"""Does ``rvm-vfx finetune`` help? The pretrained network against the fine-tuned one on test clips with exact truth.

For each clip (a P3M portrait moved over a background, ``rvm_vfx.quality.testclip``, 48 frames at
512x288) this script writes the clip, takes its true alpha at the keyframes as the artist's roto,
fine-tunes with the bare command's defaults (``FinetuneSettings`` with only the keyframes set), and
runs both the pretrained and the fine-tuned network over the whole clip exactly as a render does
(``MattingSession`` at the auto ratio, state carried from frame 0). Scores are over the frames that
were *not* keyframes: alpha MAD and dtSSD (x1e3, as ``rvm_vfx.quality.metrics``), and foreground MAD
where the true alpha is non-zero.

    .venv/bin/python bench/evaluate_finetune.py --out /tmp/ft_eval --keyframes 3 --json results.json
    .venv/bin/python bench/evaluate_finetune.py --out /tmp/ft_eval --keyframes 1 --clips 0,1

The clips' portraits and backgrounds are listed in ``CLIPS``; ``DEV_CLIPS`` are the ones used while
choosing the learning rate and budget, kept out of the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rvm_vfx.finetune import FinetuneRequest, FinetuneSettings, finetune  # noqa: E402
from rvm_vfx.quality.metrics import dtssd, fgr_mad, load_fgr, load_matte, mad  # noqa: E402
from rvm_vfx.quality.testclip import Motion, make_testclip  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TFJS = ROOT.parent / "shared" / "models" / "rvm_mobilenetv3_tfjs" / "model.json"
FRAMES = 48


@dataclass(frozen=True)
class Clip:
    portrait: str
    background: str
    motion: str
    amplitude: float
    background_motion: str = "static"
    background_amplitude: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.portrait}_{Path(self.background).stem}_{self.motion}"


#: The table's clips: six portraits never used while tuning, over the four backgrounds, each with motion.
CLIPS = (
    Clip("p_51c916fc", "rw_01.jpg", "pan", 0.1),
    Clip("p_71bcce3a", "rw_03.jpg", "shake", 0.02, "pan", 0.05),
    Clip("p_818e689d", "test_bg.jpg", "zoom", 0.2),
    Clip("p_bac3c1ff", "rw_02.jpg", "pan", 0.1, "shake", 0.01),
    Clip("p_bd6af989", "rw_01.jpg", "shake", 0.02),
    Clip("p_d684dae3", "rw_03.jpg", "pan", 0.1),
)
#: Used to pick the learning rate and the budget; not in the table.
DEV_CLIPS = (
    Clip("p_09ba26b4", "rw_02.jpg", "pan", 0.1),
    Clip("p_22fc0130", "test_bg.jpg", "shake", 0.02, "pan", 0.05),
)


def keyframes_for(count: int) -> list[int]:
    """First, middle, last (3); the middle frame (1)."""
    return {1: [FRAMES // 2], 3: [0, FRAMES // 2, FRAMES - 1]}[count]


def build(clip: Clip, folder: Path) -> Path:
    if not (folder / "clip.json").exists():
        make_testclip(
            DATA / "portraits" / "image" / f"{clip.portrait}.jpg",
            DATA / "portraits" / "alpha" / f"{clip.portrait}.png",
            DATA / "backgrounds" / clip.background,
            folder,
            frames=FRAMES,
            motion=Motion(clip.motion, clip.amplitude, 7),
            background_motion=Motion(clip.background_motion, clip.background_amplitude, 11),
            overwrite=True,
        )
    return folder


def write_keyframes(folder: Path, frames: list[int]) -> str:
    keys = folder / f"keys{len(frames)}"
    keys.mkdir(exist_ok=True)
    for frame in frames:
        target = keys / f"{frame:04d}.png"
        if not target.exists():
            target.write_bytes((folder / "pha" / f"{frame:04d}.png").read_bytes())
    return str(keys / "####.png")


def run_network(checkpoint: str, folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(alphas, foregrounds) of every frame, as the render computes them (plate read + colour as a render)."""
    import torch

    from rvm_vfx.color import ColorPipeline
    from rvm_vfx.sequence import open_source
    from rvm_vfx.session import MattingSession
    from rvm_vfx.weights import load_model

    session = MattingSession(load_model(checkpoint), "auto")
    color = ColorPipeline()
    source = open_source(str(folder / "com" / "####.png"))
    alphas, fgrs = [], []
    for frame in source.frames():
        plate = source.read(frame)
        space = color.resolve_input_space(None, plate.colorspace, plate.is_float)
        rgb, _ = color.to_model(plate.rgb, space)
        fgr, pha = session.step(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None])
        alphas.append(pha[0, 0].numpy())
        fgrs.append(fgr[0].permute(1, 2, 0).numpy())
    return alphas, fgrs


def score(alphas, fgrs, folder: Path, keyframes: list[int]) -> dict[str, float]:
    true_a = [load_matte(folder / "pha" / f"{i:04d}.png") for i in range(FRAMES)]
    true_f = [load_fgr(folder / "fgr" / f"{i:04d}.png") for i in range(FRAMES)]
    others = [i for i in range(FRAMES) if i not in keyframes]
    out = {
        "mad": float(np.mean([mad(alphas[i], true_a[i]) for i in others])),
        "dtssd": float(np.mean([dtssd(alphas[i], true_a[i], alphas[i - 1], true_a[i - 1]) for i in others if i > 0])),
        "fgr_mad": float(np.mean([fgr_mad(fgrs[i], true_f[i], true_a[i]) for i in others])),
        "keyframe_mad": float(np.mean([mad(alphas[i], true_a[i]) for i in keyframes])),
    }
    return {k: round(v, 4) for k, v in out.items()}


def evaluate_clip(clip: Clip, out: Path, counts: list[int], iterations: int | None) -> list[dict]:
    folder = build(clip, out / clip.name)
    base_outputs = run_network(str(TFJS), folder)
    rows = []
    for count in counts:
        frames = keyframes_for(count)
        settings = {"keyframes": write_keyframes(folder, frames), "checkpoint": str(TFJS)}
        if iterations is not None:
            settings["iterations"] = iterations
        ckpt = folder / f"finetuned{count}.pth"
        started = time.monotonic()
        report = finetune(
            FinetuneRequest(str(folder / "com" / "####.png"), str(ckpt), FinetuneSettings(**settings), overwrite=True)
        )
        seconds = time.monotonic() - started
        before = score(*base_outputs, folder, frames)
        after = score(*run_network(str(ckpt), folder), folder, frames)
        rows.append(
            {
                "clip": clip.name,
                "keyframes": frames,
                "before": before,
                "after": after,
                "iterations": report.iterations,
                "seconds": round(seconds, 1),
                "stopped": report.stopped,
                "validation": report.validation,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def change(before: float, after: float) -> str:
    return f"{100.0 * (after - before) / before:+.1f} %"


def table(rows: list[dict]) -> str:
    lines = [
        "| clip | keyframes | MAD before | MAD after | change | dtSSD before | dtSSD after | change | "
        "fgr MAD before | fgr MAD after | change | iterations | time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, a = r["before"], r["after"]
        lines.append(
            f"| {r['clip']} | {','.join(map(str, r['keyframes']))} | {b['mad']:.2f} | {a['mad']:.2f} | "
            f"{change(b['mad'], a['mad'])} | {b['dtssd']:.2f} | {a['dtssd']:.2f} | {change(b['dtssd'], a['dtssd'])} | "
            f"{b['fgr_mad']:.2f} | {a['fgr_mad']:.2f} | {change(b['fgr_mad'], a['fgr_mad'])} | {r['iterations']} | "
            f"{r['seconds']:.0f} s |"
        )
    for count in sorted({len(r["keyframes"]) for r in rows}):
        group = [r for r in rows if len(r["keyframes"]) == count]
        mean = {
            side: {m: float(np.mean([r[side][m] for r in group])) for m in ("mad", "dtssd", "fgr_mad")}
            for side in ("before", "after")
        }
        b, a = mean["before"], mean["after"]
        lines.append(
            f"| **mean, {count} keyframe{'s' if count > 1 else ''}** | | {b['mad']:.2f} | {a['mad']:.2f} | "
            f"{change(b['mad'], a['mad'])} | {b['dtssd']:.2f} | {a['dtssd']:.2f} | {change(b['dtssd'], a['dtssd'])} | "
            f"{b['fgr_mad']:.2f} | {a['fgr_mad']:.2f} | {change(b['fgr_mad'], a['fgr_mad'])} | | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (clips, keyframes, checkpoints)")
    parser.add_argument("--keyframes", default="3,1", help="keyframe counts to run: 3, 1 or 3,1 (default)")
    parser.add_argument("--clips", default="0,1,2,3", help="indices into CLIPS (default 0,1,2,3)")
    parser.add_argument("--dev", action="store_true", help="run the tuning clips (DEV_CLIPS) instead")
    parser.add_argument("--iterations", type=int, help="override the default budget (tuning only)")
    parser.add_argument("--lr", type=float, help="override the learning rate (tuning only)")
    parser.add_argument("--no-pairs", action="store_true", help="no moved keyframe pairs (tuning only)")
    parser.add_argument("--freeze", help="parameter prefixes left unchanged, comma-separated (tuning only)")
    parser.add_argument("--fgr-weight", type=float, help="override the foreground hold's weight (tuning only)")
    parser.add_argument("--scale", type=float, help="override the scale jitter, +-fraction (tuning only)")
    parser.add_argument("--no-validation", action="store_true", help="skip the leave-one-out folds (tuning only)")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args(argv)
    if args.lr is not None:
        from rvm_vfx.finetune import train

        train.LEARNING_RATE = args.lr
    if args.no_pairs:
        from rvm_vfx.finetune import train

        train.MOTION_PAIRS = False
    if args.freeze is not None:
        from rvm_vfx.finetune import train

        train.FROZEN_PREFIXES = tuple(args.freeze.split(","))
    if args.fgr_weight is not None:
        from rvm_vfx.finetune import losses, train

        losses.FOREGROUND_WEIGHT = train.FOREGROUND_WEIGHT = args.fgr_weight
    if args.scale is not None:
        from rvm_vfx.finetune import augment

        augment.SCALE_RANGE = (1.0 - args.scale, 1.0 + args.scale)
    if args.no_validation:
        from rvm_vfx.finetune import run

        run.FOLD_SHARE = 0.0
    pool = DEV_CLIPS if args.dev else CLIPS
    clips = [pool[int(i)] for i in args.clips.split(",")]
    counts = [int(c) for c in args.keyframes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [row for clip in clips for row in evaluate_clip(clip, args.out, counts, args.iterations)]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
