"""Matting quality metrics, scaled and defined as in the Robust Video Matting paper's evaluation.

Numbers produced here are meant to be put next to the tables of the RVM paper, so every convention
follows the official low-resolution evaluation script (``evaluation/evaluate_lr.py`` of
PeterL1n/RobustVideoMatting) rather than a textbook definition:

* alpha is float32 in [0, 1] (8-bit PNG value / 255), as the script reads it;
* MAD and MSE are scaled by 1e3, Grad and Conn by 1e-3, dtSSD by 1e2;
* Grad min-max normalises both mattes first (so a range-compressed prediction scores almost 0),
  uses the sigma=1.4 Gaussian-derivative filter (9x9, unit L2 norm) with replicated borders;
* Conn uses thresholds 0.1 ... 1.0 in steps of 0.1 and 4-connected components;
* dtSSD is the root *mean* squared temporal-derivative difference; the first frame of a clip has
  no predecessor and is scored 0, and that 0 counts in the clip mean, as in the script's summary;
* foreground MAD/MSE are taken over every colour channel of the pixels where the true alpha > 0.

These choices were checked against values produced by the official code on the fixture in
``shared/data/metric_reference`` (see ``tests/test_metrics.py``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from rvm_vfx.errors import ImageReadError, InputError

__all__ = [
    "ALPHA_METRICS",
    "FGR_METRICS",
    "conn",
    "connected_components",
    "dtssd",
    "evaluate_sequence",
    "fgr_mad",
    "fgr_mse",
    "gauss_gradient_filters",
    "grad",
    "load_fgr",
    "load_matte",
    "mad",
    "mse",
]

ALPHA_METRICS: tuple[str, ...] = ("pha_mad", "pha_mse", "pha_grad", "pha_conn", "pha_dtssd")
FGR_METRICS: tuple[str, ...] = ("fgr_mad", "fgr_mse")

GRAD_SIGMA = 1.4
GRAD_EPSILON = 1e-2
CONN_STEP = 0.1
# Differences from the round-down level below this are treated as fully connected (phi = 1).
CONN_MIN_DIFF = 0.15


def _as_alpha(a: np.ndarray, name: str) -> np.ndarray:
    # float32 on purpose: Conn's threshold comparisons (e.g. 51/255 >= 0.2) must tie-break the way
    # the reference's float32 mattes do.
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(f"{name}: expected a 2-D alpha matte, got shape {arr.shape}")
    return arr


def _check_same_shape(**arrays: np.ndarray) -> None:
    shapes = {name: arr.shape for name, arr in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise InputError(f"shape mismatch: {shapes}")


def _alpha_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_alpha(pred, "pred"), _as_alpha(true, "true")
    _check_same_shape(pred=p, true=t)
    return p, t


# --------------------------------------------------------------------------------------------- MAD/MSE


def mad(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute difference x 1e3 (the paper's unit), over all pixels."""
    p, t = _alpha_pair(pred, true)
    return float(np.abs(p.astype(np.float64) - t).mean() * 1e3)


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared difference x 1e3 (the paper's unit), over all pixels."""
    p, t = _alpha_pair(pred, true)
    return float(np.square(p.astype(np.float64) - t).mean() * 1e3)


# ------------------------------------------------------------------------------------------------ Grad


def _gauss_derivative_1d(sigma: float, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    # Unit-norm 1-D factors of the reference kernel: filter_x = outer(gauss, dgauss). The support
    # is cut where the Gaussian falls below ``epsilon`` (9 taps for sigma 1.4).
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * epsilon)))
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(offsets**2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2.0 * math.pi))
    dgauss = -offsets * gauss / sigma**2
    return gauss / np.linalg.norm(gauss), dgauss / np.linalg.norm(dgauss)


def gauss_gradient_filters(sigma: float = GRAD_SIGMA, epsilon: float = GRAD_EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) 2-D Gaussian-derivative kernels of the reference Grad metric.

    Scaled to unit L2 norm, as the reference does, so that Grad values are comparable with
    published numbers. ``filter_x`` responds to horizontal change (its centre row is the derivative
    of a Gaussian, positive weights on the left); ``filter_y`` is its transpose. :func:`grad` applies
    the same kernel in its separable form.
    """
    gauss, dgauss = _gauss_derivative_1d(sigma, epsilon)
    filter_x = np.outer(gauss, dgauss)
    return filter_x, filter_x.T.copy()


def _correlate1d_replicate(img: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    # Correlation (not convolution) with edge replication, i.e. cv2.filter2D with
    # BORDER_REPLICATE, which is what the reference uses; reflecting borders do not reproduce it.
    r = len(taps) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    padded = np.pad(img, pad, mode="edge")
    n = img.shape[axis]
    out = np.zeros(img.shape, dtype=np.float64)
    for k, weight in enumerate(taps):
        if weight != 0.0:
            out += weight * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
    return out


def _gradient_magnitude(img: np.ndarray, gauss: np.ndarray, dgauss: np.ndarray) -> np.ndarray:
    # filter_x = outer(gauss, dgauss): smooth down the columns, differentiate along the rows.
    gx = _correlate1d_replicate(_correlate1d_replicate(img, gauss, 0), dgauss, 1)
    gy = _correlate1d_replicate(_correlate1d_replicate(img, gauss, 1), dgauss, 0)
    return np.sqrt(gx**2 + gy**2)


def _minmax_normalise(a: np.ndarray) -> np.ndarray:
    # A constant image maps to all zeros (cv2.normalize's NORM_MINMAX behaviour), so an all-zero
    # prediction is not turned into NaNs.
    a64 = a.astype(np.float64)
    lo, hi = float(a64.min()), float(a64.max())
    scale = 1.0 / (hi - lo) if hi - lo > np.finfo(np.float64).eps else 0.0
    return (a64 - lo) * scale


_GRAD_TAPS = _gauss_derivative_1d(GRAD_SIGMA, GRAD_EPSILON)


def grad(pred: np.ndarray, true: np.ndarray, *, normalize: bool = True) -> float:
    """Gradient error: sum of squared differences of Gaussian-gradient magnitudes, x 1e-3.

    ``normalize=True`` is the low-resolution (``evaluate_lr.py``) definition used for the paper's
    VM/D646/AIM tables: both mattes are min-max stretched to [0, 1] first, which deliberately
    ignores global gain/offset errors. ``normalize=False`` is the high-resolution script's variant
    (same filter, raw alpha), which does penalise them.
    """
    p, t = _alpha_pair(pred, true)
    if normalize:
        p64, t64 = _minmax_normalise(p), _minmax_normalise(t)
    else:
        p64, t64 = p.astype(np.float64), t.astype(np.float64)
    diff = _gradient_magnitude(p64, *_GRAD_TAPS) - _gradient_magnitude(t64, *_GRAD_TAPS)
    return float(np.square(diff).sum() / 1e3)


# ------------------------------------------------------------------------------------------------ Conn


def connected_components(mask: np.ndarray, connectivity: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Label the connected components of a boolean mask without scipy/OpenCV.

    Returns ``(labels, sizes)``: ``labels`` is an int array of the mask's shape with -1 on the
    background and component ids 0..n-1 elsewhere, numbered in raster order of each component's
    first pixel (the order OpenCV's labelling yields, which decides ties for "largest");
    ``sizes[i]`` is the pixel count of component i.

    Vectorised union-find: every round hooks each root onto the smallest root it touches, then
    pointer-jumps to flatten the trees, until no edge joins two different roots. Labels only ever
    decrease, so this terminates, in a handful of rounds for matte-like shapes.
    """
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}")
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise InputError(f"mask: expected 2-D, got shape {m.shape}")
    h, w = m.shape
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)

    pairs: list[tuple[np.ndarray, np.ndarray]] = [
        (idx[:, :-1][m[:, :-1] & m[:, 1:]], idx[:, 1:][m[:, :-1] & m[:, 1:]]),
        (idx[:-1, :][m[:-1, :] & m[1:, :]], idx[1:, :][m[:-1, :] & m[1:, :]]),
    ]
    if connectivity == 8:
        diag = m[:-1, :-1] & m[1:, 1:]
        anti = m[:-1, 1:] & m[1:, :-1]
        pairs.append((idx[:-1, :-1][diag], idx[1:, 1:][diag]))
        pairs.append((idx[:-1, 1:][anti], idx[1:, :-1][anti]))
    u = np.concatenate([a for a, _ in pairs])
    v = np.concatenate([b for _, b in pairs])

    parent = idx.ravel().copy()
    while u.size:
        ru, rv = parent[u], parent[v]
        differ = ru != rv
        if not differ.any():
            break
        ru, rv = ru[differ], rv[differ]
        lo = np.minimum(ru, rv)
        np.minimum.at(parent, ru, lo)
        np.minimum.at(parent, rv, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        # Edges inside an already-merged component can never differ again: drop them.
        keep = parent[u] != parent[v]
        u, v = u[keep], v[keep]

    roots = parent.reshape(h, w)
    fg_roots = roots[m]
    _, compact, sizes = np.unique(fg_roots, return_inverse=True, return_counts=True)
    labels = np.full((h, w), -1, dtype=np.int64)
    labels[m] = compact.ravel()
    return labels, sizes.astype(np.int64)


def conn(pred: np.ndarray, true: np.ndarray, *, connectivity: int = 4) -> float:
    """Connectivity error (Rhemann et al.), x 1e-3, with the reference's discretisation.

    For each threshold 0.1 ... 1.0 the largest connected region where *both* mattes are at or
    above it is found; a pixel's round-down level is the last threshold at which it still belonged
    to that region. phi = 1 - (alpha - level) where that exceeds 0.15, else 1, and the error is the
    summed |phi_true - phi_pred|. Thresholds come from ``np.arange`` in float64 and alpha is float32,
    so the exact-tie pixels (k/255 == 0.2, 0.4, ...) fall on the same side as in the reference.
    """
    p, t = _alpha_pair(pred, true)
    thresholds = np.arange(0.0, 1.0 + CONN_STEP, CONN_STEP)
    round_down = np.full(t.shape, -1.0, dtype=np.float32)
    for i in range(1, len(thresholds)):
        both = (t >= thresholds[i]) & (p >= thresholds[i])
        labels, sizes = connected_components(both, connectivity)
        if sizes.size:
            largest = labels == int(np.argmax(sizes))
        else:
            largest = np.zeros(t.shape, dtype=bool)
        round_down[(round_down == -1) & ~largest] = thresholds[i - 1]
    round_down[round_down == -1] = 1.0

    true_diff = t - round_down
    pred_diff = p - round_down
    # float32 comparison, like the reference's `diff >= 0.15` on float32 arrays under numpy 2.
    limit = np.float32(CONN_MIN_DIFF)
    true_phi = 1.0 - true_diff.astype(np.float64) * (true_diff >= limit)
    pred_phi = 1.0 - pred_diff.astype(np.float64) * (pred_diff >= limit)
    return float(np.abs(true_phi - pred_phi).sum() / 1e3)


# ----------------------------------------------------------------------------------------------- dtSSD


def dtssd(pred: np.ndarray, true: np.ndarray, pred_prev: np.ndarray, true_prev: np.ndarray) -> float:
    """Temporal coherence: RMS of (pred_t - pred_t-1) - (true_t - true_t-1), x 1e2.

    Only the change between frames is compared, so a prediction that is wrong by the same amount in
    both frames scores 0: this isolates flicker from per-frame error.
    """
    p, t = _alpha_pair(pred, true)
    pp, tp = _alpha_pair(pred_prev, true_prev)
    _check_same_shape(pred=p, pred_prev=pp)
    d = (p.astype(np.float64) - pp) - (t.astype(np.float64) - tp)
    return float(math.sqrt(float(np.square(d).sum()) / d.size) * 1e2)


# ------------------------------------------------------------------------------------------ foreground


def _fgr_pixels(pred_fgr: np.ndarray, true_fgr: np.ndarray, true_pha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Foreground colour is undefined where the subject is absent (true alpha == 0), so only pixels
    # with any coverage are scored; every channel of those pixels counts as one sample.
    pf = np.asarray(pred_fgr, dtype=np.float64)
    tf = np.asarray(true_fgr, dtype=np.float64)
    ta = _as_alpha(true_pha, "true_pha")
    _check_same_shape(pred_fgr=pf, true_fgr=tf)
    if pf.shape[:2] != ta.shape:
        raise InputError(f"foreground {pf.shape} does not match alpha {ta.shape}")
    mask = ta > 0
    return pf[mask], tf[mask]


def fgr_mad(pred_fgr: np.ndarray, true_fgr: np.ndarray, true_pha: np.ndarray) -> float:
    """Foreground MAD x 1e3 over the pixels where the true alpha is non-zero (NaN if none are)."""
    p, t = _fgr_pixels(pred_fgr, true_fgr, true_pha)
    if p.size == 0:
        return math.nan
    return float(np.abs(p - t).mean() * 1e3)


def fgr_mse(pred_fgr: np.ndarray, true_fgr: np.ndarray, true_pha: np.ndarray) -> float:
    """Foreground MSE x 1e3 over the pixels where the true alpha is non-zero (NaN if none are)."""
    p, t = _fgr_pixels(pred_fgr, true_fgr, true_pha)
    if p.size == 0:
        return math.nan
    return float(np.square(p - t).mean() * 1e3)


# ------------------------------------------------------------------------------------------- sequences


def evaluate_sequence(
    pred_alphas: Sequence[np.ndarray],
    true_alphas: Sequence[np.ndarray],
    pred_fgr: Sequence[np.ndarray] | None = None,
    true_fgr: Sequence[np.ndarray] | None = None,
) -> dict[str, dict[str, list[float] | float]]:
    """Score one clip frame by frame, as the reference's per-clip worker does.

    Returns ``{metric: {"per_frame": [...], "mean": float}}`` for the alpha metrics, plus the
    foreground ones when both foreground sequences are given. dtSSD of frame 0 is 0 and is part of
    the mean, matching the reference's summary sheet, so means stay comparable with the paper.
    """
    if len(pred_alphas) != len(true_alphas):
        raise InputError(f"{len(pred_alphas)} predicted vs {len(true_alphas)} true alpha frames")
    if (pred_fgr is None) != (true_fgr is None):
        raise InputError("pred_fgr and true_fgr must be given together")
    if pred_fgr is not None and true_fgr is not None:
        if not len(pred_fgr) == len(true_fgr) == len(true_alphas):
            raise InputError(
                f"frame counts differ: {len(pred_fgr)} pred fgr, {len(true_fgr)} true fgr, {len(true_alphas)} alpha"
            )
    names = ALPHA_METRICS + (FGR_METRICS if pred_fgr is not None else ())
    per_frame: dict[str, list[float]] = {name: [] for name in names}

    prev: tuple[np.ndarray, np.ndarray] | None = None
    for i, (p_raw, t_raw) in enumerate(zip(pred_alphas, true_alphas, strict=True)):
        p, t = _alpha_pair(p_raw, t_raw)
        per_frame["pha_mad"].append(mad(p, t))
        per_frame["pha_mse"].append(mse(p, t))
        per_frame["pha_grad"].append(grad(p, t))
        per_frame["pha_conn"].append(conn(p, t))
        per_frame["pha_dtssd"].append(0.0 if prev is None else dtssd(p, t, prev[0], prev[1]))
        prev = (p, t)
        if pred_fgr is not None and true_fgr is not None:
            per_frame["fgr_mad"].append(fgr_mad(pred_fgr[i], true_fgr[i], t))
            per_frame["fgr_mse"].append(fgr_mse(pred_fgr[i], true_fgr[i], t))

    return {
        name: {
            "per_frame": values,
            "mean": float(np.mean(values)) if values else math.nan,
        }
        for name, values in per_frame.items()
    }


# ----------------------------------------------------------------------------------------------- input


def _read_pixels(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    import OpenImageIO as oiio

    inp = oiio.ImageInput.open(os.fspath(path))
    if inp is None:
        raise ImageReadError(f"cannot open {os.fspath(path)}: {oiio.geterror()}")
    try:
        spec = inp.spec()
        fmt = spec.format.basetype
        if fmt == oiio.UINT8:
            pixels = inp.read_image(0, 0, 0, spec.nchannels, "uint8")
            scale = 255.0
        elif fmt == oiio.UINT16:
            pixels = inp.read_image(0, 0, 0, spec.nchannels, "uint16")
            scale = 65535.0
        else:
            pixels = inp.read_image(0, 0, 0, spec.nchannels, "float")
            scale = 1.0
        if pixels is None:
            raise ImageReadError(f"cannot read {os.fspath(path)}: {inp.geterror()}")
        names = list(spec.channelnames)
    finally:
        inp.close()
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    # Integer codes divided in float32, like the reference's `.astype(np.float32) / 255`, so that
    # 51/255 and friends land on the same float32 value and Conn's threshold ties agree.
    out = arr.astype(np.float32) / np.float32(scale) if scale != 1.0 else arr.astype(np.float32)
    return out, names


def load_matte(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an alpha matte as a float32 (H, W) array in [0, 1].

    Integer files are code / max (8-bit PNG: /255, as the reference does). A colour image with an
    ``A`` channel (an RGBA EXR from the renderer) gives its A; anything else gives its first channel:
    a grey PNG (grey + alpha included, whose grey is the matte, as the reference's greyscale read
    keeps it), a single-channel EXR whatever the channel's name, or a matte stored as grey RGB.
    """
    arr, names = _read_pixels(path)
    upper = [n.upper() for n in names]
    ch = upper.index("A") if arr.shape[2] >= 3 and "A" in upper else 0
    return np.ascontiguousarray(arr[:, :, ch])


def load_fgr(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a foreground as a float32 (H, W, 3) array in [0, 1] (first three channels)."""
    arr, _ = _read_pixels(path)
    if arr.shape[2] < 3:
        raise ImageReadError(f"{os.fspath(path)}: foreground needs 3 channels, has {arr.shape[2]}")
    return np.ascontiguousarray(arr[:, :, :3])
