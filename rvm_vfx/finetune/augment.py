"""Augmentation: a few keyframes must teach the shot, not be memorised pixel by pixel.

One random draw per training step is applied alike to every frame of the step's window (warm-up frames,
keyframes, their alphas and the foreground targets), because the recurrent state is spatial: a state
warmed on one crop and applied to another would teach the network a motion the shot does not have.
Draws come from a ``numpy`` generator seeded once, so a seed gives the same run on one machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

#: Each side of a crop is this fraction of the frame's (drawn per step).
CROP_RANGE = (0.5, 0.85)
#: Small rescales around the render's scale: the network must keep working at the shot's own resolution.
SCALE_RANGE = (0.95, 1.05)
#: Per-channel gain and a shared gamma on the model-space values: small grade changes across the shot.
GAIN_RANGE = (0.92, 1.08)
GAMMA_RANGE = (0.9, 1.1)
#: The largest move (pixels, each axis) between a keyframe and its moved copy: a pan of a few pixels a frame.
MOTION_PIXELS = 3


@dataclass(frozen=True)
class Draw:
    """One step's augmentation: crop box (top, left, height, width), output size, flip and colour change."""

    top: int
    left: int
    height: int
    width: int
    out_height: int
    out_width: int
    flip: bool
    gain: tuple[float, float, float]
    gamma: float

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """Crop, rescale and flip N×C×H×W images (plates, alphas, foregrounds alike)."""
        x = x[..., self.top : self.top + self.height, self.left : self.left + self.width]
        if (self.out_height, self.out_width) != (self.height, self.width):
            x = F.interpolate(x, size=(self.out_height, self.out_width), mode="bilinear", align_corners=False)
        return x.flip(-1) if self.flip else x

    def colour(self, rgb: torch.Tensor) -> torch.Tensor:
        """The grade change on N×3×H×W model-space colour (the plate and the foreground it holds)."""
        gain = torch.tensor(self.gain, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        return (rgb.clamp(0.0, 1.0) ** self.gamma * gain).clamp(0.0, 1.0)


def moved(rng: np.random.Generator, draw: Draw, height: int, width: int) -> Draw:
    """The same crop moved by a few whole pixels (kept inside the frame): the next frame of a small camera move.

    Whole pixels, so the moved roto is exact (no resampling blur); the network's strided layers still see the
    edges land elsewhere on their grid, which is where a moving shot's flicker comes from.
    """
    dy, dx = (int(v) for v in rng.integers(-MOTION_PIXELS, MOTION_PIXELS + 1, size=2))
    top = int(np.clip(draw.top + dy, 0, height - draw.height))
    left = int(np.clip(draw.left + dx, 0, width - draw.width))
    return replace(draw, top=top, left=left)


def identity(height: int, width: int) -> Draw:
    """No augmentation: the whole frame as the render sees it (validation)."""
    return Draw(0, 0, height, width, height, width, False, (1.0, 1.0, 1.0), 1.0)


def draw(rng: np.random.Generator, height: int, width: int) -> Draw:
    """A random crop (aspect kept within 10 %), scale, horizontal flip and grade for a height×width frame."""
    fraction = rng.uniform(*CROP_RANGE)
    aspect = rng.uniform(0.9, 1.1)
    crop_h = int(np.clip(round(height * fraction * aspect), 16, height)) if height >= 16 else height
    crop_w = int(np.clip(round(width * fraction / aspect), 16, width)) if width >= 16 else width
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    scale = rng.uniform(*SCALE_RANGE)
    out_h = max(1, min(height, round(crop_h * scale)))
    out_w = max(1, min(width, round(crop_w * scale)))
    flip = bool(rng.random() < 0.5)
    gain = tuple(float(g) for g in rng.uniform(*GAIN_RANGE, size=3))
    gamma = float(rng.uniform(*GAMMA_RANGE))
    return Draw(top, left, crop_h, crop_w, out_h, out_w, flip, gain, gamma)  # type: ignore[arg-type]
