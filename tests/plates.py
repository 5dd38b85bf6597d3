"""Small real plates for tests: a P3M portrait moved over a real background, with exact ground truth."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from .conftest import DATA

PORTRAIT = "p_818e689d"
BACKGROUND = "rw_01.jpg"


@cache
def _resized(path: str, width: int, height: int) -> np.ndarray:
    buf = oiio.ImageBuf(path)
    out = oiio.ImageBufAlgo.resize(buf, roi=oiio.ROI(0, width, 0, height, 0, 1, 0, buf.nchannels))
    pixels = out.get_pixels(oiio.FLOAT)
    pixels.setflags(write=False)
    return pixels


def portrait_clip(
    frames: int,
    width: int = 256,
    height: int = 144,
    step: int = 3,
    portrait: str = PORTRAIT,
    background: str = BACKGROUND,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(composites, alphas): sRGB-encoded float frames of the portrait sliding ``step`` px a frame."""
    image = _resized(str(DATA / "portraits" / "image" / f"{portrait}.jpg"), width, height)
    alpha = _resized(str(DATA / "portraits" / "alpha" / f"{portrait}.png"), width, height)[..., 0]
    bg = _resized(str(DATA / "backgrounds" / background), width, height)
    composites, alphas = [], []
    for i in range(frames):
        shift = i * step - (frames * step) // 2
        img = np.roll(image, shift, axis=1)
        a = np.roll(alpha, shift, axis=1)
        composites.append((img * a[..., None] + bg * (1 - a[..., None])).astype(np.float32))
        alphas.append(a.astype(np.float32))
    return composites, alphas


def write_image(path: Path, pixels: np.ndarray, fmt: str = "uint8", **attributes: object) -> Path:
    """Write with OpenImageIO in the given storage type; extra keyword attributes go in the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], pixels.shape[2], fmt)
    for key, value in attributes.items():
        spec.attribute(key.replace("__", ":"), value)
    out = oiio.ImageOutput.create(str(path))
    assert out is not None, oiio.geterror()
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(pixels), out.geterror()
    out.close()
    return path


def write_sequence(
    folder: Path, name: str, frames: list[np.ndarray], first: int = 1001, ext: str = "png", fmt: str = "uint8"
) -> str:
    """Write ``name.####.ext`` frames; returns the pattern."""
    for i, pixels in enumerate(frames):
        write_image(folder / f"{name}.{first + i:04d}.{ext}", pixels, fmt)
    return str(folder / f"{name}.####.{ext}")
