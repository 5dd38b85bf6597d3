"""Scoring mattes on disk (or in memory) against ground truth, frame by frame, and plotting it.

The metric definitions live in :mod:`rvm_vfx.quality.metrics` (pinned to the official RVM evaluation code);
this module is the plumbing around them: finding and pairing the frames of two sequences, reading our
EXR output and the benchmarks' PNGs alike, scoring a clip as a stream (a long shot never has to fit
in memory), and the per-frame plot that shows how long the recurrent state takes to warm up.

Frames are paired by position in sorted frame order, not by number: a render numbered 1001-1048 is
scored against a clip numbered 0000-0047. Both numberings are reported so a mismatch is visible.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rvm_vfx.errors import ImageReadError, InputError, MissingFramesError
from rvm_vfx.quality import metrics

__all__ = [
    "ALL_METRICS",
    "ClipScorer",
    "Curve",
    "EvaluationResult",
    "evaluate_paths",
    "format_table",
    "list_frames",
    "load_foreground",
    "parse_metrics",
    "plot_curves",
]

ALL_METRICS: tuple[str, ...] = metrics.ALPHA_METRICS + metrics.FGR_METRICS
#: Scale factors as in the RVM paper's tables, for labels.
UNITS: dict[str, str] = {
    "pha_mad": "×1e3",
    "pha_mse": "×1e3",
    "pha_grad": "×1e-3",
    "pha_conn": "×1e-3",
    "pha_dtssd": "×1e2",
    "fgr_mad": "×1e3",
    "fgr_mse": "×1e3",
}
LABELS: dict[str, str] = {
    "pha_mad": "MAD",
    "pha_mse": "MSE",
    "pha_grad": "Grad",
    "pha_conn": "Conn",
    "pha_dtssd": "dtSSD",
    "fgr_mad": "fgr MAD",
    "fgr_mse": "fgr MSE",
}


def parse_metrics(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"mad,dtssd"`` or full names (``pha_mad``) -> full names in the canonical order.

    Conn is by far the slowest metric (ten connected-component labellings a frame), so callers that
    only need MAD and dtSSD (the warm-up plot) can leave it out.
    """
    if text is None:
        return metrics.ALPHA_METRICS
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not items:
        raise InputError("--metrics: empty list")
    chosen = set()
    for item in items:
        name = item if item in ALL_METRICS else f"pha_{item}"
        if name not in ALL_METRICS:
            accepted = ", ".join(m.removeprefix("pha_") for m in ALL_METRICS)
            raise InputError(f"--metrics: unknown metric {item!r}; accepted: {accepted}")
        chosen.add(name)
    return tuple(m for m in ALL_METRICS if m in chosen)


# ---------------------------------------------------------------------------------------------- scoring


class ClipScorer:
    """Scores one clip a frame at a time, keeping only the previous frame (for dtSSD).

    Same conventions as :func:`rvm_vfx.quality.metrics.evaluate_sequence`: dtSSD of the first frame is 0 and
    counts in the mean, foreground metrics only where the true alpha is non-zero.
    """

    def __init__(self, names: Sequence[str] = metrics.ALPHA_METRICS) -> None:
        unknown = [n for n in names if n not in ALL_METRICS]
        if unknown:
            raise InputError(f"unknown metrics: {', '.join(unknown)}")
        self.names = tuple(names)
        self.per_frame: dict[str, list[float]] = {n: [] for n in self.names}
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def add(
        self,
        pred: np.ndarray,
        true: np.ndarray,
        pred_fgr: np.ndarray | None = None,
        true_fgr: np.ndarray | None = None,
    ) -> dict[str, float]:
        p = np.asarray(pred, dtype=np.float32)
        t = np.asarray(true, dtype=np.float32)
        if p.shape != t.shape:
            frame = len(next(iter(self.per_frame.values()), []))
            raise InputError(
                f"frame {frame}: predicted alpha is {p.shape[1]}×{p.shape[0]}, true alpha {t.shape[1]}×{t.shape[0]}"
            )
        values: dict[str, float] = {}
        for name in self.names:
            if name == "pha_mad":
                values[name] = metrics.mad(p, t)
            elif name == "pha_mse":
                values[name] = metrics.mse(p, t)
            elif name == "pha_grad":
                values[name] = metrics.grad(p, t)
            elif name == "pha_conn":
                values[name] = metrics.conn(p, t)
            elif name == "pha_dtssd":
                values[name] = 0.0 if self._prev is None else metrics.dtssd(p, t, *self._prev)
            elif pred_fgr is None or true_fgr is None:
                raise InputError(f"{name} needs both the predicted and the true foreground")
            elif name == "fgr_mad":
                values[name] = metrics.fgr_mad(pred_fgr, true_fgr, t)
            else:
                values[name] = metrics.fgr_mse(pred_fgr, true_fgr, t)
        self._prev = (p, t)
        for name, value in values.items():
            self.per_frame[name].append(value)
        return values

    def means(self) -> dict[str, float]:
        # nanmean: a frame without any foreground has an undefined (NaN) foreground error.
        out = {}
        for name, values in self.per_frame.items():
            finite = [v for v in values if not math.isnan(v)]
            out[name] = float(np.mean(finite)) if finite else math.nan
        return out


# ------------------------------------------------------------------------------------------------ input


def list_frames(path: str | os.PathLike[str], what: str = "sequence") -> list[tuple[int, str]]:
    """``(frame number, file)`` of an image sequence (folder, pattern or one of its frames), sorted."""
    from rvm_vfx.sequence import ImageSequence

    text = os.fspath(path)
    if not os.path.exists(text) and not any(tok in text for tok in ("#", "%", "$F", "@")):
        raise ImageReadError(f"{what} {text}: no such file or folder")
    seq = ImageSequence(text)
    frames = seq.frames()
    if not frames:
        raise MissingFramesError(f"{what} {seq.pattern}: no frames on disk")
    return [(f, seq.path(f)) for f in frames]


def load_foreground(path: str | os.PathLike[str], pipeline: Any = None) -> np.ndarray:
    """A foreground frame as float32 H×W×3 in RVM's space (sRGB-encoded, [0, 1]).

    8-bit and 16-bit files are taken as sRGB-encoded already. Float files (our EXR output) are
    converted from their tagged colour space (else scene-linear) with OCIO; an RGBA float file is
    premultiplied by the OpenEXR convention, so its colour is divided by its alpha first, and where
    alpha is 0 the colour is unknown and left 0 (those pixels only count where the truth has alpha).
    """
    import OpenImageIO as oiio

    path = os.fspath(path)
    inp = oiio.ImageInput.open(path)
    if inp is None:
        raise ImageReadError(f"cannot open {path}: {oiio.geterror()}")
    try:
        spec = inp.spec()
        is_float = spec.format.basetype in (oiio.HALF, oiio.FLOAT, oiio.DOUBLE)
        pixels = inp.read_image(0, 0, 0, spec.nchannels, "float")
        names = [n.upper() for n in spec.channelnames]
        tag = spec.get_string_attribute("oiio:ColorSpace", "") or None
    finally:
        inp.close()
    if pixels is None:
        raise ImageReadError(f"cannot read {path}")
    arr = np.asarray(pixels, dtype=np.float32).reshape(spec.height, spec.width, spec.nchannels)
    if arr.shape[2] < 3:
        raise ImageReadError(f"{path}: foreground needs 3 channels, has {arr.shape[2]}")
    rgb = np.ascontiguousarray(arr[:, :, :3])
    if not is_float:
        return rgb
    if "A" in names:
        alpha = arr[:, :, names.index("A")]
        safe = np.where(alpha > 0, alpha, 1.0)[:, :, None]
        rgb = np.where(alpha[:, :, None] > 0, rgb / safe, 0.0).astype(np.float32)
    if pipeline is None:
        from rvm_vfx.color import ColorPipeline

        pipeline = ColorPipeline()
    space = pipeline.resolve_input_space(None, tag, True)
    model, _ = pipeline.to_model(np.nan_to_num(rgb), space)
    return model


# ------------------------------------------------------------------------------------------- evaluation


@dataclass
class EvaluationResult:
    """Per-frame and mean metrics of one predicted sequence against its ground truth."""

    pred: str
    true: str
    pred_frames: list[int]
    true_frames: list[int]
    per_frame: dict[str, list[float]]
    means: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v  # JSON has no NaN

        return {
            "pred": self.pred,
            "true": self.true,
            "frames": len(self.true_frames),
            "pred_frames": self.pred_frames,
            "true_frames": self.true_frames,
            "units": {name: UNITS[name] for name in self.per_frame},
            "metrics": {
                name: {"mean": clean(self.means[name]), "per_frame": [clean(v) for v in values]}
                for name, values in self.per_frame.items()
            },
        }


def evaluate_paths(
    pred: str | os.PathLike[str],
    true: str | os.PathLike[str],
    names: Sequence[str] = metrics.ALPHA_METRICS,
    pred_fgr: str | os.PathLike[str] | None = None,
    true_fgr: str | os.PathLike[str] | None = None,
) -> EvaluationResult:
    """Score the alpha sequence ``pred`` (RGBA EXR: its A; else the first channel) against ``true``.

    With ``pred_fgr`` and ``true_fgr`` the foreground metrics are added. Frames are read one pair at a
    time; counts must match, and the error says both.
    """
    pred_list = list_frames(pred, "PRED")
    true_list = list_frames(true, "TRUE")
    if len(pred_list) != len(true_list):
        raise InputError(
            f"frame counts differ: PRED {os.fspath(pred)} has {len(pred_list)} frames, "
            f"TRUE {os.fspath(true)} has {len(true_list)}"
        )
    if (pred_fgr is None) != (true_fgr is None):
        raise InputError("--pred-fgr and --true-fgr must be given together")
    names = tuple(names)
    fgr_lists: tuple[list[tuple[int, str]], list[tuple[int, str]]] | None = None
    pipeline = None
    if pred_fgr is not None and true_fgr is not None:
        fgr_lists = (list_frames(pred_fgr, "PRED foreground"), list_frames(true_fgr, "TRUE foreground"))
        for label, seq in zip(("pred-fgr", "true-fgr"), fgr_lists, strict=True):
            if len(seq) != len(true_list):
                raise InputError(f"frame counts differ: --{label} has {len(seq)} frames, TRUE has {len(true_list)}")
        names += tuple(m for m in metrics.FGR_METRICS if m not in names)
        from rvm_vfx.color import ColorPipeline

        pipeline = ColorPipeline()
    elif any(n in metrics.FGR_METRICS for n in names):
        raise InputError("foreground metrics need --pred-fgr and --true-fgr")

    scorer = ClipScorer(names)
    for i, ((_, p_path), (t_frame, t_path)) in enumerate(zip(pred_list, true_list, strict=True)):
        pf = tf = None
        if fgr_lists is not None:
            pf = load_foreground(fgr_lists[0][i][1], pipeline)
            tf = load_foreground(fgr_lists[1][i][1], pipeline)
        try:
            scorer.add(metrics.load_matte(p_path), metrics.load_matte(t_path), pf, tf)
        except InputError as exc:
            raise InputError(f"{p_path} vs {t_path} (TRUE frame {t_frame}): {exc}") from None
    return EvaluationResult(
        pred=os.fspath(pred),
        true=os.fspath(true),
        pred_frames=[f for f, _ in pred_list],
        true_frames=[f for f, _ in true_list],
        per_frame=scorer.per_frame,
        means=scorer.means(),
    )


def format_table(result: EvaluationResult) -> str:
    """Per-frame rows and a mean row, aligned, units in the header."""
    names = list(result.per_frame)
    headers = ["frame"] + [f"{LABELS[n]} {UNITS[n]}" for n in names]
    rows = [
        [f"{pf}/{tf}" if pf != tf else str(tf)] + [f"{result.per_frame[n][i]:.4f}" for n in names]
        for i, (pf, tf) in enumerate(zip(result.pred_frames, result.true_frames, strict=True))
    ]
    rows.append(["mean"] + [f"{result.means[n]:.4f}" for n in names])
    widths = [max(len(r[c]) for r in [headers, *rows]) for c in range(len(headers))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    for r in rows:
        if r[0] == "mean":
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- plot


@dataclass
class Curve:
    """One line of the warm-up plot: frame numbers and, per metric, a value for each frame."""

    frames: Sequence[int]
    values: Mapping[str, Sequence[float]]
    style: Mapping[str, Any] = field(default_factory=dict)


def plot_curves(
    curves: Mapping[str, Curve],
    path: str | os.PathLike[str],
    names: Sequence[str] = ("pha_mad", "pha_dtssd"),
    title: str = "",
    skip_first_dtssd: bool = True,
) -> None:
    """Write a PNG with one panel per metric and one line per curve, frames on the x axis.

    dtSSD of a clip's first frame is 0 by definition (it has no predecessor), not a good frame: it is
    left out of the plot (``skip_first_dtssd``) so it does not read as one. Uses matplotlib's Agg
    canvas directly, so no global backend is switched and no display is needed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # matplotlib is an optional dependency (extra "plot")
        raise InputError("--plot needs matplotlib: pip install 'rvm-vfx[plot]'") from exc

    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        raise InputError(f"--plot {path}: folder {folder} does not exist")
    fig = Figure(figsize=(9, 2.8 * len(names)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        for label, curve in curves.items():
            if name not in curve.values:
                continue
            xs, ys = list(curve.frames), list(curve.values[name])
            if name == "pha_dtssd" and skip_first_dtssd:
                xs, ys = xs[1:], ys[1:]
            ax.plot(xs, ys, label=label, linewidth=1.4, **dict(curve.style))
        ax.set_ylabel(f"{LABELS.get(name, name)} {UNITS.get(name, '')}")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(curves) > 1:  # below the panels, where it hides no data
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize="small")
    elif labels:
        axes[0].legend(fontsize="small", loc="upper right")
    axes[-1].set_xlabel("frame")
    if title:
        axes[0].set_title(title, fontsize="medium")
    fig.savefig(path, format="png")
