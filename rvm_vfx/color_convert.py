"""Pixel conversion between the spaces of one OCIO config: plates into the network's space, and back out.

Every transform goes through PyOpenColorIO, never through OpenImageIO's own colour code: the two bundle
different OCIO versions and would disagree on what the built-in configs contain.
"""

from __future__ import annotations

import threading

import numpy as np
import PyOpenColorIO as ocio

from rvm_vfx.colorspaces import OCIO_ERRORS, ColorSpaces
from rvm_vfx.errors import InputError

__all__ = ["ColorConverter"]

#: Values per strip when ``to_model`` counts and clips: 512 kB of float32, cache-sized.
_CLIP_STRIP = 1 << 17


class ColorConverter:
    """OCIO conversions between the spaces of one config, with each processor built once.

    Safe to share between the reader, network and writer threads of a render: processors are built once
    per pair of spaces under a lock, and OCIO CPU processors may be applied concurrently.
    """

    def __init__(self, spaces: ColorSpaces) -> None:
        self.spaces = spaces
        self._lock = threading.Lock()
        self._processors: dict[tuple[str, str], ocio.CPUProcessor] = {}

    def _processor(self, src: str, dst: str) -> ocio.CPUProcessor:
        key = (src, dst)
        with self._lock:
            proc = self._processors.get(key)
            if proc is None:
                try:
                    proc = self.spaces.config.getProcessor(src, dst).getDefaultCPUProcessor()
                except OCIO_ERRORS as exc:
                    raise InputError(
                        f"OCIO config {self.spaces.config_name!r} cannot convert {src!r} to {dst!r}: {exc}"
                    ) from exc
                self._processors[key] = proc
        return proc

    def optimized_ops(self, src: str, dst: str) -> ocio.GroupTransform:
        """The ops the ``src`` → ``dst`` CPU processor runs, after OCIO's default optimisation (the one
        ``getDefaultCPUProcessor`` applies): what a device transform (``rvm_vfx.device_color``) is built from."""
        try:
            processor = self.spaces.config.getProcessor(src, dst)
        except OCIO_ERRORS as exc:
            raise InputError(
                f"OCIO config {self.spaces.config_name!r} cannot convert {src!r} to {dst!r}: {exc}"
            ) from exc
        return processor.getOptimizedProcessor(ocio.OPTIMIZATION_DEFAULT).createGroupTransform()

    def convert(self, rgb: np.ndarray, src: str, dst: str) -> np.ndarray:
        """Return a new float32 copy of ``rgb`` (…×3) converted from ``src`` to ``dst``.

        Always a copy, so callers may modify the result without touching a plate another thread still
        reads; equal spaces are copied untouched, so a round trip through the same space is bit-exact.
        """
        rgb = np.asarray(rgb)
        if rgb.shape[-1:] != (3,):
            raise ValueError(f"expected an RGB array of shape (..., 3), got {rgb.shape}")
        out = np.array(rgb, dtype=np.float32, order="C", copy=True)
        self.convert_in_place(out, src, dst)
        return out

    def convert_in_place(self, rgb: np.ndarray, src: str, dst: str) -> None:
        """Convert a C-contiguous float32 …×3 array in place (nothing to do between equal spaces)."""
        src = self.spaces.validate_space(src, field="source colour space")
        dst = self.spaces.validate_space(dst, field="destination colour space")
        if src != dst and rgb.size:
            self._processor(src, dst).applyRGB(rgb)

    def _convert_padded(self, rgb: np.ndarray, src: str, dst: str) -> np.ndarray:
        """Like :meth:`convert`, but into an RGBA float32 buffer whose fourth channel is 1.

        OCIO reading packed RGB and writing packed RGBA costs about two thirds of its RGB-in-place path on a
        1080p frame, for the same values, and the constant channel lets whole-buffer passes (counting,
        clipping) run unstrided.
        """
        rgb = np.ascontiguousarray(rgb, dtype=np.float32)
        if rgb.shape[-1:] != (3,):
            raise ValueError(f"expected an RGB array of shape (..., 3), got {rgb.shape}")
        src = self.spaces.validate_space(src, field="source colour space")
        dst = self.spaces.validate_space(dst, field="destination colour space")
        padded = np.empty(rgb.shape[:-1] + (4,), dtype=np.float32)
        if src == dst or not rgb.size:
            padded[..., :3] = rgb
            padded[..., 3] = 1.0
            return padded
        rows = rgb.shape[0] if rgb.ndim > 2 else 1
        width = rgb.size // 3 // rows
        self._processor(src, dst).apply(
            ocio.PackedImageDesc(rgb, width, rows, 3), ocio.PackedImageDesc(padded, width, rows, 4)
        )
        return padded

    def to_model(self, rgb: np.ndarray, space: str) -> tuple[np.ndarray, float]:
        """Convert plate RGB to the network's sRGB [0, 1] space; return it and the fraction clipped.

        OCIO leaves out-of-range values alone, but the network has never seen them, so they are clipped
        here. The fraction of values (channels, not pixels) that were outside [0, 1] lets a render warn
        about plates the network will see a flattened version of.
        """
        padded = self._convert_padded(rgb, space, self.spaces.model_space)
        model = padded[..., :3]
        if model.size == 0:
            return model, 0.0
        # Over the whole buffer: the padding channel is 1, so it neither counts nor changes. In strips that
        # stay in cache, counted then clipped: whole-frame comparisons cost two 8 MB masks (1080p: 6.4 -> 4
        # CPU-ms, bench/README.md).
        flat = padded.reshape(-1)
        outside = 0
        for start in range(0, flat.size, _CLIP_STRIP):
            strip = flat[start : start + _CLIP_STRIP]
            outside += np.count_nonzero(strip < 0.0) + np.count_nonzero(strip > 1.0)
            np.clip(strip, 0.0, 1.0, out=strip)
        return model, float(outside) / model.size
