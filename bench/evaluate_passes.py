"""Warm start and the bidirectional pass against the forward-only default, on clips with exact ground truth.

    python bench/evaluate_passes.py            # the documented run (docs/quality.md), ~15 min on 2 shared cores
    python bench/evaluate_passes.py --quick    # smoke run: 2 clips of 16 frames

Clips: ``--clips`` portrait × background pairs of ``shared/data`` (every portrait; backgrounds in turn), each
``--frames`` frames at ``--size``, built in memory by :mod:`rvm_vfx.quality.testclip` with a pan, zoom or
shake in turn (``bench/evaluate_quality.py``'s clips). Each clip is one shot, run through
:class:`rvm_vfx.session.MattingSession` in the orders the engine uses (imported from :mod:`rvm_vfx.passes`,
not re-implemented): ``warm_sources`` for the warm-up before frame 0 (forward) and its mirror before the
last frame (backward), ``combine`` for the two passes, the backward results rounded to half floats as
``BackwardStore`` keeps them, and each pass's ``frames_seen`` as the engine's memory count.

Configurations: forward cold (warm-up 0, today's default), forward with each warm-up in ``--warmups``, and
bidirectional with each combination in ``rvm_vfx.passes.COMBINE_MODES`` at each warm-up. Scores: the RVM
paper's MAD (×1e3) and dtSSD (×1e2), per frame, averaged per clip and over all clips. The tables go between
the markers of ``--doc`` (the rest of the file is left as written), every per-frame value to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_model import machine_info  # the scripts run from bench/, which Python puts on sys.path
from evaluate_quality import DEFAULT_CHECKPOINT, RESULTS, ROOT, SHARED, all_clips, build_clip, score

sys.path.insert(0, str(ROOT))

from rvm_vfx.passes import COMBINE_MODES, combine, warm_sources  # noqa: E402  (after the path, for a checkout)

MARK_START = "<!-- passes-results:start -->"
MARK_END = "<!-- passes-results:end -->"
SCORED = ("pha_mad", "pha_dtssd")
FIRST, SETTLED = 10, 15  # the "first 10 frames" and "frames 15+"


def pick_clips(data: Path, count: int) -> list[Any]:
    """``count`` clips: portrait i over background i, i+1, ... in turn, so portraits, backgrounds and moves vary."""
    clips = all_clips(data)
    portraits = sorted({c.portrait for c in clips})
    backgrounds = sorted({c.background for c in clips})
    by_pair = {(c.portrait, c.background): c for c in clips}
    chosen = []
    for k in range(count):
        portrait = portraits[k % len(portraits)]
        background = backgrounds[(k % len(portraits) + k // len(portraits)) % len(backgrounds)]
        chosen.append(by_pair[(portrait, background)])
    return chosen


def run_pass(session: Any, sources: Sequence[torch.Tensor], order: list[int], written: set[int]) -> dict[int, Any]:
    """Step ``order`` (frame indices) from a fresh state; (fgr, pha, frames seen) of each frame in ``written``."""
    session.reset()
    results = {}
    for index in order:
        fgr, pha = session.step(sources[index])
        if index in written:
            results[index] = (fgr[0].permute(1, 2, 0).numpy().copy(), pha[0, 0].numpy().copy(), session.frames_seen)
    return results


def forward_order(frames: int, warmup: int) -> list[int]:
    return warm_sources(0, warmup, +1, frames - 1) + list(range(frames))


def backward_order(frames: int, warmup: int) -> list[int]:
    return warm_sources(frames - 1, warmup, -1, 0) + list(range(frames - 1, -1, -1))


def evaluate_clip(spec: Any, size: tuple[int, int], frames: int, session: Any, warmups: list[int]) -> dict[str, Any]:
    clip = build_clip(spec, size, frames)
    sources = [torch.from_numpy(f.com).permute(2, 0, 1)[None].float().div_(255.0) for f in clip]
    trues = [f.pha.astype(np.float32) / np.float32(255) for f in clip]
    every = set(range(frames))
    configs: dict[str, Any] = {}
    started = time.perf_counter()
    cold = run_pass(session, sources, forward_order(frames, 0), every)
    configs["forward"] = score([cold[i][1] for i in range(frames)], trues, SCORED)
    for warmup in warmups:
        forward = run_pass(session, sources, forward_order(frames, warmup), every) if warmup else cold
        configs[f"forward warm {warmup}"] = score([forward[i][1] for i in range(frames)], trues, SCORED)
        backward = run_pass(session, sources, backward_order(frames, warmup), every)
        for mode in COMBINE_MODES:
            alphas = []
            for i in range(frames):
                stored = (backward[i][0].astype(np.float16), backward[i][1].astype(np.float16))  # as BackwardStore
                alphas.append(combine(forward[i][:2], stored, forward[i][2], backward[i][2], mode)[1])
            configs[f"bidirectional {mode} warm {warmup}"] = score(alphas, trues, SCORED)
    return {"clip": spec.name, "move": list(spec.move), "configs": configs, "seconds": time.perf_counter() - started}


# --------------------------------------------------------------------------- summaries


def clip_figures(per_frame: dict[str, list[float]]) -> dict[str, float]:
    mad = per_frame["pha_mad"]
    return {
        "mad": float(np.mean(mad)),
        "dtssd": float(np.mean(per_frame["pha_dtssd"])),
        "mad_first": float(np.mean(mad[:FIRST])),
        "mad_settled": float(np.mean(mad[SETTLED:])),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per configuration: the mean over clips of each clip's figures (every clip has the same frame count)."""
    names = list(results[0]["configs"])
    summary = {}
    for name in names:
        figures = [clip_figures(r["configs"][name]) for r in results]
        summary[name] = {k: float(np.mean([f[k] for f in figures])) for k in figures[0]}
        summary[name]["first_over_settled"] = summary[name]["mad_first"] / summary[name]["mad_settled"]
    return summary


def warmup_winner(summary: dict[str, dict[str, float]], warmups: list[int]) -> int | None:
    """The warm-up that meets the issue's bar (first 10 frames within 15 % of frames 15+, mean MAD not worse than
    cold) with the lowest mean MAD; None when none does."""
    cold = summary["forward"]["mad"]
    passing = [
        w
        for w in warmups
        if summary[f"forward warm {w}"]["first_over_settled"] <= 1.15 and summary[f"forward warm {w}"]["mad"] <= cold
    ]
    return min(passing, key=lambda w: summary[f"forward warm {w}"]["mad"]) if passing else None


def pct(new: float, old: float) -> str:
    return f"{(new - old) / old * 100:+.1f} %"


def tables(results: list[dict[str, Any]], summary: dict[str, dict[str, float]], warmups: list[int]) -> str:
    lines = [
        "| configuration | MAD | dtSSD | MAD, frames 0–9 | MAD, frames 15+ | frames 0–9 / 15+ | MAD vs forward |"
        " dtSSD vs forward |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = summary["forward"]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['mad']:.2f} | {s['dtssd']:.2f} | {s['mad_first']:.2f} | {s['mad_settled']:.2f} | "
            f"{s['first_over_settled']:.2f} | {pct(s['mad'], base['mad'])} | {pct(s['dtssd'], base['dtssd'])} |"
        )
    best_warm = warmup_winner(summary, warmups)
    shown = best_warm if best_warm is not None else warmups[-1]
    bidir = min(
        (n for n in summary if n.startswith("bidirectional") and n.endswith(f"warm {shown}")),
        key=lambda n: summary[n]["mad"],
    )
    lines += [
        "",
        f"Per clip: forward (cold), forward warm {shown}, {bidir}; MAD ×1e3 (frames 0–9 / 15+ in brackets), "
        "dtSSD ×1e2:",
        "",
        "| clip | move | forward MAD (0–9 / 15+) | warm MAD (0–9 / 15+) | bidirectional MAD | forward dtSSD |"
        " bidirectional dtSSD |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cold = clip_figures(r["configs"]["forward"])
        warm = clip_figures(r["configs"][f"forward warm {shown}"])
        both = clip_figures(r["configs"][bidir])
        lines.append(
            f"| {r['clip']} | {r['move'][0]} | {cold['mad']:.2f} ({cold['mad_first']:.2f} / {cold['mad_settled']:.2f})"
            f" | {warm['mad']:.2f} ({warm['mad_first']:.2f} / {warm['mad_settled']:.2f}) | {both['mad']:.2f} | "
            f"{cold['dtssd']:.2f} | {both['dtssd']:.2f} |"
        )
    return "\n".join(lines)


def update_doc(doc: Path, body: str) -> None:
    """Replace only what lies between this script's markers."""
    block = f"{MARK_START}\n{body.rstrip()}\n{MARK_END}"
    text = doc.read_text() if doc.exists() else "# Matte quality\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="512x288")
    parser.add_argument("--warmups", default="4,8", help="warm-up lengths measured")
    parser.add_argument("--large-size", default="1024x576", help="a second size, where the cold start costs more")
    parser.add_argument("--large-clips", type=int, default=4)
    parser.add_argument("--large-warmups", default="8")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="2 clips of 16 frames, warm-ups 4")
    parser.add_argument("--json", type=Path, default=RESULTS / "passes.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "quality.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.frames, args.warmups, args.large_clips, args.large_warmups = 2, 16, "4", 1, "4"
        args.json, args.doc = RESULTS / "passes_quick.json", RESULTS / "passes_quick.md"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from rvm_vfx.quality.testclip import parse_size
    from rvm_vfx.session import MattingSession
    from rvm_vfx.weights import load_model

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    session = MattingSession(load_model(args.checkpoint), "auto")
    machine = machine_info(torch.device("cpu"))
    command = "python bench/evaluate_passes.py" + (" --quick" if args.quick else "")
    sets = [(args.size, args.clips, args.warmups), (args.large_size, args.large_clips, args.large_warmups)]
    sections, record = [], {}
    started = time.perf_counter()
    for size_text, count, warmup_text in sets:
        size = parse_size(size_text)
        assert size is not None
        warmups = [int(w) for w in warmup_text.split(",") if w.strip()]
        results = []
        for spec in pick_clips(args.data, count):
            results.append(evaluate_clip(spec, size, args.frames, session, warmups))
            print(f"{size_text} {spec.name}: {results[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
        summary = summarise(results)
        winner = warmup_winner(summary, warmups)
        record[size_text] = {"summary": summary, "clips": results, "winner": winner}
        sections += [
            f"**{size[0]}×{size[1]}**, {len(results)} clips of {args.frames} frames:",
            "",
            tables(results, summary, warmups),
            "",
            f"Warm-up meeting the issue's bar with the lowest mean MAD: {winner if winner is not None else 'none'}.",
            "",
        ]
    elapsed = time.perf_counter() - started
    body = "\n".join(
        [
            f"Command: `{command}` ({elapsed / 60:.0f} min). Machine: {machine['cpu']}, torch {machine['torch']} with "
            f"{args.threads} thread(s); downsample auto, checkpoint `{args.checkpoint.name}` (official MobileNetV3). "
            "MAD ×1e3, dtSSD ×1e2, mean over clips of each clip's mean; lower is better.",
            "",
            *sections,
        ]
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**record, "elapsed_s": elapsed}, indent=1))
    update_doc(args.doc, body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
