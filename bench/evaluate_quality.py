"""Matte quality on composited clips with exact ground truth: recurrent state, downsample ratio, pre-roll.

    python bench/evaluate_quality.py                 # the documented run (docs/quality.md), ~30 min on 2 cores
    python bench/evaluate_quality.py --quick         # smoke run: 2×2 clips of 12 frames, 1 large clip

Clips: every portrait of ``shared/data/portraits`` over every background of ``shared/data/backgrounds``
(people-free stills), ``--frames`` frames each, built in memory by :mod:`rvm_vfx.quality.testclip` with a
camera-like move per clip (pan, zoom or shake in turn, the background following at a smaller
amplitude). The engine runs through :class:`rvm_vfx.session.MattingSession` on those frames directly,
skipping file I/O so the configurations stay affordable on a CPU. Metrics are those of the RVM paper
(:mod:`rvm_vfx.quality.metrics`), scored per frame and averaged over every frame of every clip.

Configurations:

* ``--size`` (512×288, where ``auto`` = 1.0): recurrent vs. state reset before every frame, at
  downsample ``auto`` and 0.5;
* ``--large-size`` (1024×576, where ``auto`` = 0.5) on ``--large-clips`` clips: the same at ``auto``
  and 1.0, so ``auto`` is measured where it differs from full resolution;
* pre-roll: a chunk starting at ``--chunk-start`` (mid-shot) rendered after ``--prerolls`` frames of
  pre-roll, compared with the uninterrupted render (max / mean |alpha difference|) and with the truth.

Results go to ``--json`` (every per-frame value), the tables between the result markers of ``--doc``
(the rest of that file is left as written) and the warm-up plot ``--plot``. Per-clip results are cached
under ``bench/results/quality_cache`` so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_model import machine_info  # the scripts run from bench/, which Python puts on sys.path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RVM_VFX_SHARED", ROOT.parent / "shared"))
DEFAULT_CHECKPOINT = SHARED / "models" / "rvm_mobilenetv3_tfjs" / "model.json"
RESULTS = ROOT / "bench" / "results"
MARK_START = "<!-- quality-results:start -->"
MARK_END = "<!-- quality-results:end -->"

# Camera-like moves, one per clip in turn: (kind, portrait amplitude, background amplitude).
MOVES: tuple[tuple[str, float, float], ...] = (("pan", 0.08, 0.03), ("zoom", 0.15, 0.05), ("shake", 0.02, 0.01))
SCORED = ("pha_mad", "pha_mse", "pha_grad", "pha_dtssd")
CACHE_VERSION = 1


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipSpec:
    portrait: Path
    background: Path
    index: int  # position in the full portraits × backgrounds list: decides the move and the seed

    @property
    def name(self) -> str:
        return f"{self.portrait.stem}__{self.background.stem}"

    @property
    def move(self) -> tuple[str, float, float]:
        return MOVES[self.index % len(MOVES)]


def all_clips(data: Path) -> list[ClipSpec]:
    portraits = sorted((data / "portraits" / "image").glob("*.jpg"))
    backgrounds = sorted((data / "backgrounds").glob("*.jpg"))
    if not portraits or not backgrounds:
        raise SystemExit(f"no portraits or backgrounds under {data}")
    return [
        ClipSpec(p, b, i * len(backgrounds) + j) for i, p in enumerate(portraits) for j, b in enumerate(backgrounds)
    ]


def build_clip(spec: ClipSpec, size: tuple[int, int], frames: int) -> list[Any]:
    from rvm_vfx.quality.testclip import Motion, TestClip, load_portrait, open_background

    kind, amplitude, bg_amplitude = spec.move
    alpha = spec.portrait.parent.parent / "alpha" / f"{spec.portrait.stem}.png"
    background = open_background(spec.background)
    try:
        clip = TestClip(
            load_portrait(spec.portrait, alpha),
            background,
            frames,
            size,
            Motion(kind, amplitude, seed=spec.index),
            Motion(kind, bg_amplitude, seed=spec.index),
        )
        return list(clip)
    finally:
        background.close()


# --------------------------------------------------------------------------- running the engine


def run_frames(session: Any, sources: Sequence[torch.Tensor], reset_every_frame: bool) -> list[np.ndarray]:
    """Alpha of each frame, in order; the state either carried (a render) or dropped before each frame."""
    session.reset()
    out = []
    for src in sources:
        if reset_every_frame:
            session.reset()
        _, pha = session.step(src)
        out.append(pha[0, 0].numpy().copy())
    return out


def score(preds: Sequence[np.ndarray], trues: Sequence[np.ndarray], names: Sequence[str] = SCORED) -> dict[str, list]:
    from rvm_vfx.quality.evaluate import ClipScorer

    scorer = ClipScorer(names)
    for p, t in zip(preds, trues, strict=True):
        scorer.add(p, t)
    return scorer.per_frame


def evaluate_clip(
    spec: ClipSpec,
    size: tuple[int, int],
    frames: int,
    sessions: dict[str, Any],
    configs: Sequence[tuple[str, bool]],
    chunk_start: int | None,
    prerolls: Sequence[int],
) -> dict[str, Any]:
    """Every configuration on one clip: per-frame scores, seconds spent, pre-roll differences."""
    clip = build_clip(spec, size, frames)
    sources = [torch.from_numpy(f.com).permute(2, 0, 1)[None].float().div_(255.0) for f in clip]
    trues = [f.pha.astype(np.float32) / np.float32(255) for f in clip]
    result: dict[str, Any] = {"clip": spec.name, "move": list(spec.move), "configs": {}, "preroll": {}}
    uninterrupted = None
    for ratio, reset in configs:
        started = time.perf_counter()
        alphas = run_frames(sessions[ratio], sources, reset)
        seconds = time.perf_counter() - started
        key = config_key(ratio, reset)
        result["configs"][key] = {"per_frame": score(alphas, trues), "seconds": seconds}
        if ratio == "auto" and not reset:
            uninterrupted = alphas
    if chunk_start is not None and uninterrupted is not None:
        session = sessions["auto"]
        chunk = slice(chunk_start, frames)
        reference = np.stack(uninterrupted[chunk])
        for preroll in prerolls:
            session.reset()
            for src in sources[max(0, chunk_start - preroll) : chunk_start]:
                session.step(src)  # pre-roll: computed, thrown away; only the state is kept
            alphas = []
            for src in sources[chunk]:
                alphas.append(session.step(src)[1][0, 0].numpy().copy())
            diff = np.abs(np.stack(alphas).astype(np.float64) - reference)
            result["preroll"][str(preroll)] = {
                "max_diff_per_frame": diff.reshape(len(alphas), -1).max(axis=1).tolist(),
                "mean_diff_per_frame": diff.reshape(len(alphas), -1).mean(axis=1).tolist(),
                "per_frame": score(alphas, trues[chunk], ("pha_mad", "pha_dtssd")),
            }
        result["preroll"]["uninterrupted"] = {
            "per_frame": score(uninterrupted[chunk], trues[chunk], ("pha_mad", "pha_dtssd"))
        }
    return result


def config_key(ratio: str, reset: bool) -> str:
    return f"{'reset' if reset else 'recurrent'}@{ratio}"


# --------------------------------------------------------------------------- caching


def cache_path(tag: str, spec: ClipSpec, settings: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps({**settings, "v": CACHE_VERSION}, sort_keys=True).encode()).hexdigest()[:12]
    return RESULTS / "quality_cache" / f"{tag}-{digest}" / f"{spec.name}.json"


def run_set(
    tag: str,
    specs: Sequence[ClipSpec],
    settings: dict[str, Any],
    make_result: Callable[[ClipSpec], dict[str, Any]],
    use_cache: bool,
) -> list[dict[str, Any]]:
    results = []
    t0 = time.perf_counter()
    for n, spec in enumerate(specs, 1):
        path = cache_path(tag, spec, settings)
        if use_cache and path.exists():
            results.append(json.loads(path.read_text()))
            log(f"[{tag}] {n}/{len(specs)} {spec.name}: cached")
            continue
        clip_started = time.perf_counter()
        result = make_result(spec)
        result["seconds"] = time.perf_counter() - clip_started
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)
        results.append(result)
        mads = ", ".join(f"{k} {np.mean(v['per_frame']['pha_mad']):.2f}" for k, v in result["configs"].items())
        log(f"[{tag}] {n}/{len(specs)} {spec.name} ({time.perf_counter() - t0:.0f} s): MAD {mads}")
    return results


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- summaries


def mean_over(results: Sequence[dict[str, Any]], get: Callable[[dict[str, Any]], Sequence[float]]) -> float:
    values = [v for r in results for v in get(r)]
    return float(np.mean(values)) if values else math.nan


def mean_curve(results: Sequence[dict[str, Any]], get: Callable[[dict[str, Any]], Sequence[float]]) -> list[float]:
    return np.mean(np.array([get(r) for r in results], dtype=np.float64), axis=0).tolist()


def summarise_configs(results: Sequence[dict[str, Any]], frames: int, warm: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key in results[0]["configs"]:
        row: dict[str, float] = {}
        for name in SCORED:
            row[name] = mean_over(results, lambda r, k=key, n=name: r["configs"][k]["per_frame"][n])
        row["mad_first"] = mean_over(results, lambda r, k=key: r["configs"][k]["per_frame"]["pha_mad"][:warm])
        row["mad_last"] = mean_over(results, lambda r, k=key: r["configs"][k]["per_frame"]["pha_mad"][frames // 2 :])
        seconds = sum(r["configs"][key]["seconds"] for r in results)
        row["fps"] = len(results) * frames / seconds if seconds else math.nan
        out[key] = row
    return out


def summarise_preroll(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key in results[0]["preroll"]:
        row = {
            "mad": mean_over(results, lambda r, k=key: r["preroll"][k]["per_frame"]["pha_mad"]),
            "dtssd": mean_over(results, lambda r, k=key: r["preroll"][k]["per_frame"]["pha_dtssd"]),
        }
        if key != "uninterrupted":
            row["max_diff"] = max(max(r["preroll"][key]["max_diff_per_frame"]) for r in results)
            row["mean_diff"] = mean_over(results, lambda r, k=key: r["preroll"][k]["mean_diff_per_frame"])
            row["mean_diff_first"] = float(np.mean([r["preroll"][key]["mean_diff_per_frame"][0] for r in results]))
            row["mean_diff_last"] = float(np.mean([r["preroll"][key]["mean_diff_per_frame"][-1] for r in results]))
            # The worst pixel of the worst clip is an outlier statistic; the median clip's worst pixel says
            # what a typical chunk boundary looks like.
            row["max_diff_median_clip"] = float(
                np.median([max(r["preroll"][key]["max_diff_per_frame"]) for r in results])
            )
        out[key] = row
    return out


def ratio_label(ratio: str, size: tuple[int, int]) -> str:
    from rvm_vfx.model import auto_downsample_ratio

    if ratio == "auto":
        text = f"{auto_downsample_ratio(size[1], size[0]):.2f}".rstrip("0")
        return f"auto (= {text}0)" if text.endswith(".") else f"auto (= {text})"
    return ratio


def config_table(summary: dict[str, dict[str, float]], size: tuple[int, int], frames: int, warm: int) -> str:
    lines = [
        "| state | downsample | MAD | MSE | Grad | dtSSD "
        f"| MAD, frames 0–{warm - 1} | MAD, frames {frames // 2}–{frames - 1} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = sorted(summary, key=lambda k: (k.split("@")[1] != "auto", k.split("@")[1], k.startswith("reset")))
    for key in order:
        mode, ratio = key.split("@")
        row = summary[key]
        state = "recurrent" if mode == "recurrent" else "reset every frame"
        lines.append(
            f"| {state} | {ratio_label(ratio, size)} | {row['pha_mad']:.2f} | {row['pha_mse']:.2f} | "
            f"{row['pha_grad']:.2f} | {row['pha_dtssd']:.2f} | {row['mad_first']:.2f} | {row['mad_last']:.2f} |"
        )
    return "\n".join(lines)


def preroll_table(summary: dict[str, dict[str, float]], chunk_start: int, frames: int) -> str:
    lines = [
        "| pre-roll | max \\|Δα\\|, worst clip | max \\|Δα\\|, median clip | mean \\|Δα\\| ×1e3 | "
        f"mean \\|Δα\\| ×1e3, frame {chunk_start} | mean \\|Δα\\| ×1e3, frame {frames - 1} | MAD | dtSSD |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, row in summary.items():
        if key == "uninterrupted":
            continue
        lines.append(
            f"| {key} | {row['max_diff']:.2f} | {row['max_diff_median_clip']:.2f} | {row['mean_diff'] * 1e3:.2f} | "
            f"{row['mean_diff_first'] * 1e3:.2f} | {row['mean_diff_last'] * 1e3:.2f} | {row['mad']:.2f} | "
            f"{row['dtssd']:.2f} |"
        )
    row = summary["uninterrupted"]
    label = f"uninterrupted render (frames {chunk_start}–{frames - 1})"
    lines.append(f"| {label} | 0 | 0 | 0 | 0 | 0 | {row['mad']:.2f} | {row['dtssd']:.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- machine and output


def update_doc(doc: Path, body: str) -> None:
    """Replace only what lies between the result markers, so the prose around the tables stays as written."""
    block = f"{MARK_START}\n{body.rstrip()}\n{MARK_END}"
    if doc.exists():
        text = doc.read_text()
        if MARK_START in text and MARK_END in text:
            head, rest = text.split(MARK_START, 1)
            tail = rest.split(MARK_END, 1)[1]
            doc.write_text(head + block + tail)
            return
        doc.write_text(text.rstrip() + "\n\n" + block + "\n")
        return
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(f"# Matte quality\n\n{block}\n")


def warmup_plot(
    path: Path,
    results: Sequence[dict[str, Any]],
    frames: int,
    chunk_start: int | None,
    size: tuple[int, int],
    keys: Sequence[str] = ("recurrent@auto", "reset@auto"),
) -> None:
    """Mean MAD and dtSSD per frame over all clips, for the configurations ``keys`` (and the pre-roll chunks).

    Only a few configurations per plot: the far worse ones (0.5 at 512×288, reset at 1.0 at 1024×576,
    see the tables) would stretch the axis until the warm-up of the others could not be seen.
    """
    from rvm_vfx.quality.evaluate import Curve, plot_curves

    curves: dict[str, Curve] = {}
    styles = {
        "recurrent@auto": {"color": "C0"},
        "reset@auto": {"color": "C3"},
        "recurrent@1.0": {"color": "C0", "linestyle": ":"},
        "reset@1.0": {"color": "C3", "linestyle": ":"},
    }
    for key in keys:
        mode, ratio = key.split("@")
        label = f"{'recurrent' if mode == 'recurrent' else 'reset every frame'}, {ratio_label(ratio, size)}"
        values = {
            n: mean_curve(results, lambda r, k=key, n=n: r["configs"][k]["per_frame"][n])
            for n in ("pha_mad", "pha_dtssd")
        }
        curves[label] = Curve(range(frames), values, styles.get(key, {}))
    if chunk_start is not None:
        greens = ["#a1d99b", "#41ab5d", "#005a32"]
        for i, key in enumerate(k for k in results[0]["preroll"] if k != "uninterrupted"):
            values = {
                n: mean_curve(results, lambda r, k=key, n=n: r["preroll"][k]["per_frame"][n])
                for n in ("pha_mad", "pha_dtssd")
            }
            style = {"color": greens[i % len(greens)], "linestyle": "--"}
            curves[f"chunk from {chunk_start}, pre-roll {key}"] = Curve(range(chunk_start, frames), values, style)
    title = f"mean over {len(results)} clips, {size[0]}×{size[1]}: warm-up of the recurrent state"
    plot_curves(curves, path, title=title)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="512x288")
    parser.add_argument("--large-size", default="1024x576")
    parser.add_argument("--large-clips", type=int, default=8, help="clips at --large-size (one per portrait)")
    parser.add_argument("--chunk-start", type=int, default=24)
    parser.add_argument("--prerolls", default="0,5,15")
    parser.add_argument("--warm-frames", type=int, default=8, help="the 'first frames' column of the table")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared machine, more threads than free cores are far slower)",
    )
    parser.add_argument("--quick", action="store_true", help="2 portraits × 2 backgrounds, 12 frames, 1 large clip")
    parser.add_argument("--no-cache", action="store_true", help="recompute clips even if cached")
    parser.add_argument("--json", type=Path, default=RESULTS / "quality.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "quality.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "quality_warmup.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.chunk_start, args.large_clips = 12, 6, 1
        args.json = RESULTS / "quality_quick.json"
        args.doc = RESULTS / "quality_quick.md"
        args.plot = RESULTS / "quality_quick.png"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from rvm_vfx.quality.testclip import parse_size
    from rvm_vfx.session import MattingSession
    from rvm_vfx.weights import load_model, sha256_of

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    size, large_size = parse_size(args.size), parse_size(args.large_size)
    assert size is not None and large_size is not None
    prerolls = [int(p) for p in args.prerolls.split(",") if p.strip()]
    clips = all_clips(args.data)
    n_portraits = len({c.portrait for c in clips})
    n_backgrounds = len(clips) // n_portraits
    if args.quick:
        clips = [c for c in clips if c.index // n_backgrounds < 2 and c.index % n_backgrounds < 2]
    # Large clips: portrait i over background i mod 4, so every portrait and every background appears.
    by_index = {c.index: c for c in all_clips(args.data)}
    large = [by_index[i * n_backgrounds + i % n_backgrounds] for i in range(min(args.large_clips, n_portraits))]

    model = load_model(args.checkpoint)
    sessions = {r: MattingSession(model, "auto" if r == "auto" else float(r)) for r in ("auto", "0.5", "1.0")}
    started = time.perf_counter()
    settings = {"frames": args.frames, "checkpoint": sha256_of(args.checkpoint), "moves": MOVES}

    base_configs = [("auto", False), ("auto", True), ("0.5", False), ("0.5", True)]
    base_settings = {**settings, "size": size, "configs": base_configs, "chunk": args.chunk_start, "prerolls": prerolls}
    base = run_set(
        f"{size[0]}x{size[1]}",
        clips,
        base_settings,
        lambda s: evaluate_clip(s, size, args.frames, sessions, base_configs, args.chunk_start, prerolls),
        not args.no_cache,
    )
    large_configs = [("auto", False), ("auto", True), ("1.0", False), ("1.0", True)]
    large_results = run_set(
        f"{large_size[0]}x{large_size[1]}",
        large,
        {**settings, "size": large_size, "configs": large_configs},
        lambda s: evaluate_clip(s, large_size, args.frames, sessions, large_configs, None, []),
        not args.no_cache,
    )
    elapsed = time.perf_counter() - started

    base_summary = summarise_configs(base, args.frames, args.warm_frames)
    large_summary = summarise_configs(large_results, args.frames, args.warm_frames)
    preroll_summary = summarise_preroll(base)
    machine = machine_info(torch.device("cpu"))
    command = "python bench/evaluate_quality.py" + (" --quick" if args.quick else "")

    computed = [r["seconds"] for r in [*base, *large_results] if "seconds" in r]
    timing = f" ({sum(computed) / 60:.0f} min for the {len(computed)} clips computed in this run)" if computed else ""
    checkpoint = args.checkpoint
    if checkpoint.is_relative_to(SHARED.parent):
        checkpoint = checkpoint.relative_to(SHARED.parent)
    body = "\n".join(
        [
            f"Command: `{command}`{timing}. "
            f"Machine: {machine['cpu']} ({machine['cores']} cores), torch {machine['torch']} "
            f"with {machine['torch_threads']} thread(s), "
            f"checkpoint `{checkpoint}`; frames per second of each configuration are in the JSON.",
            "",
            f"**{size[0]}×{size[1]}**, {len(base)} clips ({n_portraits if not args.quick else 2} portraits × "
            f"{n_backgrounds if not args.quick else 2} backgrounds) × {args.frames} frames:",
            "",
            config_table(base_summary, size, args.frames, args.warm_frames),
            "",
            f"**{large_size[0]}×{large_size[1]}**, {len(large_results)} clips (portrait i over background i mod "
            f"{n_backgrounds}) × {args.frames} frames:",
            "",
            config_table(large_summary, large_size, args.frames, args.warm_frames),
            "",
            f"**Pre-roll**, {size[0]}×{size[1]}, downsample auto, {len(base)} clips: chunk frames "
            f"{args.chunk_start}–{args.frames - 1} rendered after N frames of pre-roll vs. the uninterrupted "
            "render of the same frames (|Δα| per pixel; max over the chunk of the worst clip and of the median "
            "clip; mean over every pixel of every chunk frame of every clip), "
            "and MAD / dtSSD of the chunk against the truth:",
            "",
            preroll_table(preroll_summary, args.chunk_start, args.frames),
        ]
    )
    print(body)
    update_doc(args.doc, body)
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    warmup_plot(args.plot, base, args.frames, args.chunk_start, size)
    large_plot = args.plot.with_name(f"{args.plot.stem}_{large_size[0]}x{large_size[1]}.png")
    warmup_plot(
        large_plot, large_results, args.frames, None, large_size, ("recurrent@auto", "reset@auto", "recurrent@1.0")
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "command": command,
                "machine": machine,
                "elapsed_s": elapsed,
                "size": size,
                "large_size": large_size,
                "frames": args.frames,
                "summary": {"base": base_summary, "large": large_summary, "preroll": preroll_summary},
                "clips": {"base": base, "large": large_results},
            },
            indent=1,
        )
    )
    log(f"wrote {args.doc}, {args.plot}, {large_plot}, {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
