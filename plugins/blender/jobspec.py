"""Blender state -> an rvm-vfx Job, in plain Python.

Blender's Python has no torch and must not import ``rvm_vfx``; the engine validates the Job again
when it starts. Everything that decides what the engine is asked to do lives here, free of ``bpy``,
so that the engine's own test suite can check these dictionaries with ``rvm_vfx.job.Job.from_dict``
and the two sides cannot drift apart unnoticed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "BLENDER_LINEAR_REC709",
    "ENGINE_LINEAR_REC709",
    "ENCODERS",
    "JobSpecError",
    "build_job",
    "checkpoint_for",
    "engine_colorspace",
    "file_frames",
    "format_frame_ranges",
    "output_pattern",
    "sequence_pattern",
]

MOVIE_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})

#: The matte is written, and loaded back, in the one scene-linear space both built-in configs share.
ENGINE_LINEAR_REC709 = "lin_rec709"
BLENDER_LINEAR_REC709 = "Linear Rec.709"

ENCODERS = ("mobilenetv3", "resnet50")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")

# Blender's built-in config (4.2 to 5.x) names -> names the engine's built-in OCIO config resolves.
# Display-referred view encodings (AgX, Filmic, "ACES 2.0 sRGB", ...) are left out on purpose: a plate
# stored in them cannot be taken back to scene-linear, so guessing would only produce a wrong matte.
_BLENDER_TO_ENGINE: dict[str, str] = {
    "sRGB": "sRGB - Texture",
    "Linear Rec.709": ENGINE_LINEAR_REC709,
    "Linear Rec.2020": "lin_rec2020",
    "Linear DCI-P3 D65": "lin_p3d65",
    "Linear CIE-XYZ D65": "lin_ciexyzd65_scene",
    "Display P3": "srgb_p3d65",
    "Rec.1886": "g24_rec709",
    "ACEScg": "ACEScg",
    "ACES2065-1": "ACES2065-1",
    "ACEScct": "ACEScct",
    "ACEScc": "ACEScc",
    "Non-Color": "Raw",
}


class JobSpecError(ValueError):
    """A setting that cannot become a Job; the message is shown to the artist as it is."""


# ------------------------------------------------------------------------------------------ colour


def engine_colorspace(
    blender_name: str, *, working_space: str = BLENDER_LINEAR_REC709, studio_config: bool = False
) -> str:
    """The engine's name for the colour space an image is tagged with in Blender.

    With a studio config (``$OCIO``, which the engine subprocess inherits) both programs read the same
    file, so Blender's name is already the engine's. With the built-in configs the names differ.
    Blender 5's ``scene_linear`` entry follows the blend file's working space.
    """
    if not blender_name:
        raise JobSpecError("the image has no colour space set")
    if studio_config:
        return blender_name
    if blender_name == "scene_linear":
        blender_name = working_space
    try:
        return _BLENDER_TO_ENGINE[blender_name]
    except KeyError:
        known = ", ".join(sorted(_BLENDER_TO_ENGINE))
        raise JobSpecError(
            f"colour space {blender_name!r} cannot be used for a plate (it is a display encoding or unknown to "
            f"the engine); set the image's Color Space to the one the plate was written in: {known}"
        ) from None


# ------------------------------------------------------------------------------------------ paths

_DIGITS = re.compile(r"\d+")


def sequence_pattern(frame_path: str) -> tuple[str, int]:
    """One frame's path (what Blender stores for a sequence) -> (``name.####.ext`` pattern, its frame).

    Blender numbers a sequence by the last run of digits in the file name, so the same run is replaced.
    """
    folder, name = os.path.split(frame_path)
    stem, ext = os.path.splitext(name)
    runs = list(_DIGITS.finditer(stem))
    if not runs:
        raise JobSpecError(f"{name!r} has no frame number: load the plate as an image sequence or a movie")
    last = runs[-1]
    pattern = stem[: last.start()] + "#" * len(last.group()) + stem[last.end() :] + ext
    return os.path.join(folder, pattern), int(last.group())


def is_movie(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in MOVIE_EXTENSIONS


def plate_stem(path: str, *, numbered: bool = True) -> str:
    """A short name for a plate's outputs: the file name without extension and, for a sequence, frame number."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if numbered:
        stem = re.sub(r"(#+|@+|%0?\d*d|\$F\d*|\d+)$", "", stem)
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._- ")
    return stem or "plate"


def output_pattern(output_dir: str, stem: str, padding: int = 4) -> str:
    """``<dir>/<stem>/<stem>_rvm.####.exr``: one folder per plate, so reruns and plates never collide."""
    if not output_dir:
        raise JobSpecError("no output folder set")
    return os.path.join(output_dir, stem, f"{stem}_rvm.{'#' * max(1, padding)}.exr")


# ------------------------------------------------------------------------------------------ frames


def file_frames(
    scene_start: int, scene_end: int, *, start: int, offset: int, duration: int, cyclic: bool = False
) -> list[int]:
    """The plate's own frame numbers that the scene range shows through an Image node.

    Mirrors Blender's ``BKE_image_user_frame_get``: scene frame f shows image frame
    ``f - start + 1`` (held at the first and last frame, or wrapped when cyclic), plus the offset.
    """
    if scene_end < scene_start:
        raise JobSpecError(f"the scene's frame range {scene_start}-{scene_end} is empty")
    if duration < 1:
        raise JobSpecError("the plate has no frames (Image node frame count is 0)")
    frames: set[int] = set()
    for scene_frame in range(scene_start, scene_end + 1):
        n = scene_frame - start + 1
        if cyclic:
            n %= duration
            if n == 0:
                n = duration
        else:
            n = min(max(n, 1), duration)
        frames.add(n + offset)
        if len(frames) == duration:  # every frame of the plate is already in: a long range adds nothing
            break
    return sorted(frames)


def format_frame_ranges(frames: Iterable[int]) -> str:
    """Sorted frames -> the engine's ``1001-1010,1015`` syntax."""
    ordered = sorted(set(frames))
    if not ordered:
        raise JobSpecError("no frames to render")
    parts: list[str] = []
    first = prev = ordered[0]
    for frame in ordered[1:] + [None]:  # type: ignore[list-item]
        if frame is not None and frame == prev + 1:
            prev = frame
            continue
        parts.append(str(first) if first == prev else f"{first}-{prev}")
        if frame is not None:
            first = prev = frame
    return ",".join(parts)


# ------------------------------------------------------------------------------------------ model

OFFICIAL_CHECKPOINTS = {"mobilenetv3": "rvm_mobilenetv3.pth", "resnet50": "rvm_resnet50.pth"}


def engine_cache_dir(env: Mapping[str, str]) -> str:
    """The engine's per-user cache, by the engine's own rule (``rvm_vfx.weights.cache_dir``)."""
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rvm-vfx")


def checkpoint_for(encoder: str, override: str, preference: str, env: Mapping[str, str]) -> str | None:
    """The Job's checkpoint: the scene's override, else the encoder's preference, else the engine's default.

    None lets the engine choose (``$RVM_VFX_CHECKPOINT`` or its cached official MobileNetV3); a ResNet-50
    has no such default, so it points at the official file's place in the engine's cache, as the Nuke node
    does, and the engine names that path if the file is not there.
    """
    if encoder not in ENCODERS:
        raise JobSpecError(f"encoder must be one of {', '.join(ENCODERS)}, not {encoder!r}")
    if override or preference:
        return override or preference
    if encoder == "mobilenetv3":
        return None
    return os.path.join(engine_cache_dir(env), OFFICIAL_CHECKPOINTS[encoder])


# ------------------------------------------------------------------------------------------ the job


def build_job(
    *,
    input: str,
    output: str,
    frames: Iterable[int],
    input_colorspace: str,
    output_colorspace: str | None = ENGINE_LINEAR_REC709,
    checkpoint: str | None = None,
    downsample: str | float = "auto",
    device: str = "auto",
    precision: str = "fp32",
    preroll: int = 0,
    start_frame: int = 1,
    overwrite: bool = True,
    name: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Job as the JSON the engine reads; only fields the engine knows, with JSON types.

    Cheap checks happen here so that an artist sees a bad setting before a subprocess starts; the
    engine still validates everything, so these are a convenience, not the contract.
    """
    if not input:
        raise JobSpecError("no plate: choose an Image node or a file")
    if device not in DEVICES:
        raise JobSpecError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if precision not in PRECISIONS:
        raise JobSpecError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if downsample != "auto":
        downsample = float(downsample)
        if not 0.0 < downsample <= 1.0:
            raise JobSpecError(f"downsample must be in (0, 1], got {downsample:g}")
    if preroll < 0:
        raise JobSpecError(f"pre-roll must be 0 or more, got {preroll}")
    job: dict[str, Any] = {
        "input": input,
        "output": output,
        "frames": format_frame_ranges(frames),
        "start_frame": int(start_frame),
        "checkpoint": checkpoint or None,
        "downsample": downsample,
        "device": device,
        "precision": precision,
        "input_colorspace": input_colorspace,
        "output_colorspace": output_colorspace,
        "output_mode": "premultiplied",
        "preroll": int(preroll),
        "overwrite": bool(overwrite),
        "name": name,
        "metadata": dict(metadata or {}),
    }
    return job
