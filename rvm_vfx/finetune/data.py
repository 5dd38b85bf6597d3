"""The shot as training sees it: keyframe mattes checked against the plate, and the plate frames around them.

Plate frames go through the very calls a render makes (``open_source``, ``resolve_frames``, the OCIO
pipeline's ``resolve_input_space`` and ``to_model``), so the network learns on exactly the pixels it
will be given when the shot renders. A keyframe is useless or harmful when it does not line up with
its plate frame or carries no edge at all, so each is refused with a message naming its file and frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import OpenImageIO as oiio
import torch

from ..color import ColorPipeline, load_config
from ..errors import ImageReadError, InputError
from ..sequence import ImageSequence, open_source, parse_frames, resolve_frames
from ..spec.finetune import FinetuneSettings
from ..spec.frames import format_frames

#: Plate frames run (without gradients) before a keyframe to warm the recurrent state, as a render has run
#: the frames before it. Each costs a forward pass per step; two carry the motion of the frames just before.
WARM_FRAMES = 2
#: A matte whose values span less than this is constant: no edge, nothing to learn (8-bit: under a code value).
CONSTANT_SPAN = 1.0 / 512.0


@dataclass
class Keyframe:
    """One roto frame: its number, file and alpha (H×W float32 in [0, 1])."""

    frame: int
    path: str
    alpha: torch.Tensor


@dataclass
class Shot:
    """Everything training reads from disk, loaded once: plate frames in model space and the keyframes."""

    plate: str
    keyframes: list[Keyframe]
    #: Plate frames (3×H×W float32, model space) by frame number: every keyframe and its warm-up frames.
    frames: dict[int, torch.Tensor]
    #: For each keyframe, the frames run before it (oldest first), clamped to the range's first frame.
    warm: dict[int, list[int]]
    #: (height, width) of every plate frame.
    size: tuple[int, int]
    warnings: list[str] = field(default_factory=list)
    colorspaces: list[str] = field(default_factory=list)

    @property
    def keyframe_numbers(self) -> list[int]:
        return [k.frame for k in self.keyframes]


# ------------------------------------------------------------------------------------------ keyframes


def _pick_channel(path: str, names: list[str], wanted: str | None) -> int:
    """The index of the keyframe's alpha: the named channel, else A, else the only channel, else R."""
    upper = [n.upper() for n in names]
    if wanted is not None:
        if wanted in names:
            return names.index(wanted)
        if wanted.upper() in upper:
            return upper.index(wanted.upper())
        raise ImageReadError(f"{path}: keyframe channel {wanted!r} not found; channels: {', '.join(names)}")
    for candidate in ("A", "ALPHA"):
        if candidate in upper:
            return upper.index(candidate)
    if len(names) == 1:
        return 0
    if "R" in upper:
        return upper.index("R")
    raise ImageReadError(f"{path}: no A, R or single channel to read the keyframe from; channels: {', '.join(names)}")


def read_alpha(path: str, channel: str | None = None) -> tuple[np.ndarray, str]:
    """A matte file's alpha as float32 H×W (integers scaled to [0, 1]) and the channel's name."""
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: keyframe file not found")
    inp = oiio.ImageInput.open(path)
    if inp is None:
        raise ImageReadError(f"{path}: cannot read keyframe: {oiio.geterror().strip() or 'unknown error'}")
    try:
        spec = inp.spec()
        names = list(spec.channelnames)
        index = _pick_channel(path, names, channel)
        data = inp.read_image(0, 0, index, index + 1, "float")
        if data is None or inp.has_error:
            raise ImageReadError(f"{path}: cannot read keyframe (truncated or corrupt): {inp.geterror().strip()}")
    finally:
        inp.close()
    return np.asarray(data, dtype=np.float32).reshape(spec.height, spec.width), names[index]


def check_alpha(alpha: np.ndarray, path: str, frame: int, channel: str) -> np.ndarray:
    """Refuse mattes that would teach nothing or poison training; clip the rest to [0, 1]."""
    bad = int(np.count_nonzero(~np.isfinite(alpha)))
    if bad:
        raise InputError(f"{path}: keyframe {frame}: {bad} NaN/Inf values in channel {channel!r}; fix the matte")
    low, high = float(alpha.min()), float(alpha.max())
    if high - low < CONSTANT_SPAN:
        what = "empty" if high <= CONSTANT_SPAN else "constant"
        raise InputError(
            f"{path}: keyframe {frame}: the matte is {what} ({low:g} everywhere in channel {channel!r}): it has no "
            "edge to learn from; check the channel or leave this frame out"
        )
    return np.clip(alpha, 0.0, 1.0)


def find_keyframes(pattern: str) -> tuple[ImageSequence, list[int]]:
    """The keyframe sequence and its frame numbers on disk; none is an error naming the pattern."""
    sequence = ImageSequence(pattern)
    numbers = sequence.frames()
    if not numbers:
        raise InputError(f"{pattern}: no keyframes on disk (expected files numbered like the plate)")
    return sequence, numbers


# ------------------------------------------------------------------------------------------ the shot


def _window(frame: int, first: int, count: int) -> list[int]:
    return list(range(max(first, frame - count), frame))


def load_shot(plate: str, settings: FinetuneSettings, warm_frames: int = WARM_FRAMES) -> Shot:
    """Read and check every keyframe, then the plate frames training needs, in model space."""
    keyframe_seq, numbers = find_keyframes(settings.keyframes)
    source = open_source(plate, layer=settings.layer, start_frame=settings.start_frame)
    try:
        on_disk = set(source.frames())
        requested = parse_frames(settings.frames) if settings.frames else None
        in_range = set(requested) if requested is not None else None
        warnings: list[str] = []
        for number in numbers:
            if number not in on_disk:
                shown = format_frames(sorted(on_disk)) if on_disk else "none"
                raise InputError(
                    f"{keyframe_seq.path(number)}: keyframe {number} has no plate frame {number} in {plate} "
                    f"(plate frames: {shown})"
                )
        used = [n for n in numbers if in_range is None or n in in_range]
        if not used:
            raise InputError(
                f"{settings.keyframes}: no keyframe inside --frames {settings.frames} "
                f"(keyframes: {format_frames(numbers)})"
            )
        if len(used) < len(numbers):
            left = format_frames([n for n in numbers if n not in used])
            warnings.append(f"keyframes {left} are outside --frames {settings.frames} and are not used")
        first = min(requested) if requested is not None else min(on_disk)
        color = ColorPipeline(load_config(settings.ocio_config))
        if settings.input_colorspace:
            color.validate_space(settings.input_colorspace, field="input_colorspace")
        warm = {n: _window(n, first, warm_frames) for n in used}
        needed = sorted(set(used) | {f for window in warm.values() for f in window})
        frames: dict[int, torch.Tensor] = {}
        spaces: list[str] = []
        size: tuple[int, int] | None = None
        for frame, src_frame in resolve_frames(source, needed, "hold"):
            plate_frame = source.read(src_frame)
            for message in plate_frame.warnings:
                if message not in warnings:
                    warnings.append(message)
            space = color.resolve_input_space(settings.input_colorspace, plate_frame.colorspace, plate_frame.is_float)
            if space not in spaces:
                spaces.append(space)
            rgb, _clipped = color.to_model(plate_frame.rgb, space)
            tensor = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1).contiguous()
            if size is None:
                size = (int(tensor.shape[1]), int(tensor.shape[2]))
            elif tuple(tensor.shape[1:]) != size:
                raise InputError(
                    f"{source.path(src_frame)}: plate frame {frame} is {tensor.shape[2]}×{tensor.shape[1]}, "
                    f"other plate frames are {size[1]}×{size[0]}; fine-tuning needs one frame size"
                )
            frames[frame] = tensor
        assert size is not None
        keyframes = [_keyframe(keyframe_seq.path(n), n, settings.keyframe_channel, size, source.path(n)) for n in used]
    finally:
        source.close()
    return Shot(plate, keyframes, frames, warm, size, warnings, spaces)


def _keyframe(path: str, frame: int, channel: str | None, size: tuple[int, int], plate_path: str) -> Keyframe:
    alpha, name = read_alpha(path, channel)
    if alpha.shape != size:
        raise InputError(
            f"{path}: keyframe {frame} is {alpha.shape[1]}×{alpha.shape[0]}, its plate frame {plate_path} is "
            f"{size[1]}×{size[0]}; keyframes must be the plate's size"
        )
    alpha = check_alpha(alpha, path, frame, name)
    return Keyframe(frame, path, torch.from_numpy(np.ascontiguousarray(alpha)))
