"""Hold-out mattes on clips with a second person in the background; and whether masking the network's input helps.

    python bench/evaluate_mattes.py              # the documented run (docs/quality.md), ~12 min on 2 cores
    python bench/evaluate_mattes.py --quick      # smoke run: 2 clips of 12 frames

Each clip is a ``make-testclip`` clip (:mod:`rvm_vfx.quality.testclip`): a P3M portrait moved over a
people-free background, built twice, once alone and once with another portrait standing in the background
(60 % of the main person's height, in the middle of the wider side the main person leaves free). The
second clip's ``holdout`` layer is that person's visible matte, exact by construction. The network runs
through ``MattingSession`` on the frames directly
(as ``bench/evaluate_quality.py`` does: the same steps as a render, without the file I/O), and every
alpha is scored against the *main* person's truth (``pha``), which is the same in both clips:

* ``alone``: the clip without the second person (what the hold-out should get back to);
* ``two people``: the clip with them, no matte (the network mattes both);
* ``hold-out``: the same alphas with the hold-out matte applied after the network, by the engine's own
  ``rvm_vfx.mattes.apply_mattes`` (what ``--holdout-matte OUT/holdout`` does);
* ``hold-out subtracted``: for comparison, ``max(a − h, 0)`` instead of ``a·(1 − h)``: the exact inverse
  of compositing the main person over a second one whose visible coverage is ``h``, where the product
  leaves ``h·(1 − h)`` at the second person's soft edges even when the network is right;
* ``hold-out + masked input``: the hold-out area of the network's input also replaced by flat grey
  (``--mask-value``) before the network sees it, then the matte applied after as before: does the
  recurrent state do better when it never sees the second person?
* ``solid hold-out`` and ``solid hold-out + masked input``: the same two with a hold-out of the kind a roto
  artist draws, ``make-testclip --holdout-grow``: solid, the visible matte grown by ``--rough-grow`` pixels,
  stopping where the main person's truth begins (as the artist follows the foreground person's edge).

Results: a per-clip and mean table between the markers of ``--doc`` and every per-frame value in ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_model import machine_info  # the scripts run from bench/, which Python puts on sys.path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RVM_VFX_SHARED", ROOT.parent / "shared"))
DEFAULT_CHECKPOINT = SHARED / "models" / "rvm_mobilenetv3_tfjs" / "model.json"
RESULTS = ROOT / "bench" / "results"
# Camera-like moves, one per clip in turn: (kind, amplitude), the second person's own at half of it.
MOVES: tuple[tuple[str, float], ...] = (("pan", 0.08), ("zoom", 0.15), ("shake", 0.02))
CONFIGS = ("alone", "two", "holdout", "holdout_sub", "holdout_masked", "rough", "rough_masked")
LABELS = {
    "alone": "alone",
    "two": "two people",
    "holdout": "hold-out",
    "holdout_sub": "hold-out subtracted",
    "holdout_masked": "hold-out + masked input",
    "rough": "solid hold-out",
    "rough_masked": "solid hold-out + masked input",
}


def clip_plan(data: Path, count: int) -> list[tuple[Path, Path, Path, int]]:
    """(main portrait, second portrait, background, index): every portrait in turn, each with another one behind."""
    portraits = sorted((data / "portraits" / "image").glob("*.jpg"))
    backgrounds = sorted((data / "backgrounds").glob("*.jpg"))
    if len(portraits) < 2 or not backgrounds:
        raise SystemExit(f"need two portraits and a background under {data}")
    half = len(portraits) // 2
    plan = []
    for k in range(count):
        main = portraits[k % len(portraits)]
        second = portraits[(k + half) % len(portraits)]
        plan.append((main, second, backgrounds[k % len(backgrounds)], k))
    return plan


def _alpha_of(image: Path) -> Path:
    return image.parent.parent / "alpha" / f"{image.stem}.png"


def build(main: Path, second: Path, background: Path, k: int, size: tuple[int, int], frames: int, scale: float = 0.6):
    """(frames alone, frames with the second person, ``scale`` of the main one's size)."""
    from rvm_vfx.quality.testclip import Motion, SecondPerson, TestClip, load_portrait, open_background

    kind, amplitude = MOVES[k % len(MOVES)]
    portrait = load_portrait(main, _alpha_of(main))
    person = SecondPerson(load_portrait(second, _alpha_of(second)), scale, None, Motion(kind, amplitude / 2, k + 1))
    bg = open_background(background)
    try:
        motion = Motion(kind, amplitude, seed=k)
        alone = list(TestClip(portrait, bg, frames, size, motion))
        both = list(TestClip(portrait, bg, frames, size, motion, second=person))
    finally:
        bg.close()
    return alone, both


def run(session: Any, sources: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None, value: float):
    """(fgr, pha) per frame, the state carried; with ``masks`` the input is flat ``value`` where they are 1."""
    session.reset()
    out = []
    for index, src in enumerate(sources):
        shown = src if masks is None else src * (1.0 - masks[index][..., None]) + value * masks[index][..., None]
        fgr, pha = session.step(torch.from_numpy(np.ascontiguousarray(shown, dtype=np.float32)).permute(2, 0, 1)[None])
        out.append((shown, fgr[0].permute(1, 2, 0).numpy().copy(), pha[0, 0].numpy().copy()))
    return out


def score(alphas: Sequence[np.ndarray], trues: Sequence[np.ndarray]) -> dict[str, list[float]]:
    from rvm_vfx.quality.evaluate import ClipScorer

    scorer = ClipScorer(("pha_mad", "pha_dtssd"))
    for p, t in zip(alphas, trues, strict=True):
        scorer.add(p, t)
    return scorer.per_frame


def evaluate(session: Any, clip: tuple[Path, Path, Path, int], size, frames: int, args) -> dict[str, Any]:
    from rvm_vfx.mattes import apply_mattes
    from rvm_vfx.quality.testclip import solid_holdout

    main, second, background, k = clip
    alone, both = build(main, second, background, k, size, frames, args.second_scale)
    trues = [f.pha.astype(np.float32) / np.float32(255) for f in alone]
    holdouts = [f.holdout.astype(np.float32) / np.float32(255) for f in both]
    roughs = [solid_holdout(f.holdout, f.pha, args.rough_grow).astype(np.float32) / np.float32(255) for f in both]
    plain = [f.com.astype(np.float32) / np.float32(255) for f in alone]
    two = [f.com.astype(np.float32) / np.float32(255) for f in both]

    def matted(results, mattes, kind: str) -> list[np.ndarray]:
        return [apply_mattes(fgr, pha, src, {kind: m})[1] for (src, fgr, pha), m in zip(results, mattes, strict=True)]

    alphas: dict[str, list[np.ndarray]] = {"alone": [pha for _, _, pha in run(session, plain, None, 0.0)]}
    seen = run(session, two, None, 0.0)
    alphas["two"] = [pha for _, _, pha in seen]
    alphas["holdout"] = matted(seen, holdouts, "holdout")
    alphas["holdout_sub"] = [np.maximum(pha - h, 0.0) for (_, _, pha), h in zip(seen, holdouts, strict=True)]
    alphas["holdout_masked"] = matted(run(session, two, holdouts, args.mask_value), holdouts, "holdout")
    alphas["rough"] = matted(seen, roughs, "holdout")
    alphas["rough_masked"] = matted(run(session, two, roughs, args.mask_value), roughs, "holdout")
    return {
        "clip": f"{main.stem} + {second.stem} / {background.stem}",
        "move": list(MOVES[k % len(MOVES)]),
        "second_person_area": float(np.mean([np.mean(h) for h in holdouts])),
        "configs": {name: score(alphas[name], trues) for name in CONFIGS},
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    head = "| clip | move | 2nd person, % of frame | " + " | ".join(f"MAD {LABELS[c]}" for c in CONFIGS) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * len(CONFIGS)]
    means: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for r in results:
        cells = []
        for c in CONFIGS:
            mad = float(np.mean(r["configs"][c]["pha_mad"]))
            means[c].append(mad)
            cells.append(f"{mad:.2f}")
        move = f"{r['move'][0]} {r['move'][1]:g}"
        lines.append(f"| {r['clip']} | {move} | {100 * r['second_person_area']:.1f} | " + " | ".join(cells) + " |")
    mean = {c: float(np.mean(v)) for c, v in means.items()}
    lines.append("| **mean** | | | " + " | ".join(f"**{mean[c]:.2f}**" for c in CONFIGS) + " |")
    dtssd = {c: float(np.mean([np.mean(r["configs"][c]["pha_dtssd"]) for r in results])) for c in CONFIGS}
    lines.append("| mean dtSSD | | | " + " | ".join(f"{dtssd[c]:.2f}" for c in CONFIGS) + " |")
    lines.append("")
    for config in ("holdout", "holdout_sub", "rough"):
        ratio = [r / a for r, a in zip(means[config], means["alone"], strict=True)]
        lines.append(
            f"* {LABELS[config]}: MAD against the clip alone ×{np.mean(ratio):.3f} on average (mean of the per-clip "
            f"ratios), ×{max(ratio):.3f} on the worst clip; {sum(x <= 1.10 for x in ratio)} of {len(ratio)} clips "
            "within 10 %."
        )
    return "\n".join(lines)


def update_doc(doc: Path, body: str, marker: str) -> None:
    """Replace what lies between this run's markers; the rest of the file stays as written."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else "# Matte quality\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        doc.write_text(head + block + rest.split(end, 1)[1])
    else:
        doc.write_text(text.rstrip() + "\n\n" + block + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    from rvm_vfx.quality.testclip import parse_size
    from rvm_vfx.session import MattingSession
    from rvm_vfx.weights import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="512x288")
    parser.add_argument("--mask-value", type=float, default=0.5, help="flat grey shown where the input is masked")
    parser.add_argument("--second-scale", type=float, default=0.6, help="the second person's size (default 0.6)")
    parser.add_argument("--rough-grow", type=int, default=8, help="pixels the solid hold-out grows by")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="2 clips of 12 frames, results to bench/results")
    parser.add_argument("--json", type=Path, default=RESULTS / "mattes.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "quality.md")
    parser.add_argument("--from-json", type=Path, help="write the tables from an earlier run's --json, running nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.frames = 2, 12
        args.json, args.doc = RESULTS / "mattes_quick.json", RESULTS / "mattes_quick.md"
    torch.set_num_threads(args.threads)
    size = parse_size(args.size)
    assert size is not None
    command = "python bench/evaluate_mattes.py" + (" --quick" if args.quick else "")
    if args.second_scale != 0.6:
        command += f" --second-scale {args.second_scale:g}"
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        results, machine, elapsed = saved["results"], saved["machine"], saved["elapsed_s"]
    else:
        session = MattingSession(load_model(args.checkpoint), "auto")
        started = time.perf_counter()
        results = []
        for n, clip in enumerate(clip_plan(args.data, args.clips), 1):
            results.append(evaluate(session, clip, size, args.frames, args))
            mads = ", ".join(f"{c} {np.mean(v['pha_mad']):.2f}" for c, v in results[-1]["configs"].items())
            seconds = time.perf_counter() - started
            print(f"{n}/{args.clips} {results[-1]['clip']} ({seconds:.0f} s): {mads}", file=sys.stderr)
        elapsed = time.perf_counter() - started
        machine = machine_info(torch.device("cpu"))
    body = "\n".join(
        [
            f"Command: `{command}` ({elapsed / 60:.0f} min). Machine: {machine['cpu']} ({machine['cores']} cores), "
            f"torch {machine['torch']} with {machine['torch_threads']} thread(s), official MobileNetV3 weights "
            f"(TF.js export); {len(results)} clips × {args.frames} frames at {size[0]}×{size[1]}, downsample auto, "
            f"the second person {args.second_scale:g} of the main person's height. "
            f"MAD (×1e3) of the main person's alpha against its truth; masked input: flat {args.mask_value:g}; "
            f"solid hold-out: the visible matte grown by {args.rough_grow} px, stopping at the main person.",
            "",
            table(results),
        ]
    )
    print(body)
    marker = "mattes-results" + ("" if args.second_scale == 0.6 else f"-{args.second_scale:g}")
    update_doc(args.doc, body, marker)
    if not args.from_json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        saved = {"command": command, "machine": machine, "elapsed_s": elapsed, "results": results}
        args.json.write_text(json.dumps(saved, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
