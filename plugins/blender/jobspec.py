"""Blender state -> an rvm-vfx Job, in plain Python.

Blender's Python has no torch and must not import ``rvm_vfx``. What the engine knows (the Job's fields
and their rules, frame ranges and numbers, file extensions, the weights cache) comes from ``vendor.rvm_spec``, the
engine's own contract vendored into the add-on by ``tools/vendor_spec.py``: the Job built here is the
contract's, so a setting the engine would refuse is refused in Blender, with the engine's message, before
any subprocess starts. What only Blender knows (colour-space names, Image node frame mapping, where
mattes go) lives here, free of ``bpy``, so the engine's own test suite checks it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .vendor.rvm_spec import InputError, Job, format_frames
from .vendor.rvm_spec.frames import FramePattern, frame_digits, split_numbered, split_pattern
from .vendor.rvm_spec.job import FIELDS, FIELDS_BY_NAME
from .vendor.rvm_spec.names import DEFAULT_ENCODER, ENCODERS, OUTPUT_EXTENSION, is_video, official_checkpoint_path

__all__ = [
    "BLENDER_LINEAR_REC709",
    "ENGINE_LINEAR_REC709",
    "Job",
    "JobSpecError",
    "MATTES",
    "Matte",
    "OWNER_FILE",
    "Plate",
    "build_job",
    "check_frames_on_disk",
    "check_matte_mapping",
    "StripWindow",
    "check_output_owner",
    "check_strip_timing",
    "checkpoint_for",
    "engine_colorspace",
    "file_frames",
    "file_plate",
    "frames_on_disk",
    "plate_for",
    "sequence_pattern",
    "strip_sequence",
    "strip_window",
    "write_output_owner",
]

#: The matte is written, and loaded back, in the one scene-linear space both built-in configs share.
ENGINE_LINEAR_REC709 = "lin_rec709"
BLENDER_LINEAR_REC709 = "Linear Rec.709"

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


def sequence_pattern(frame_path: str) -> FramePattern:
    """The sequence one frame's path belongs to (Blender stores a sequence as the path of one frame).

    Blender numbers a sequence by the last number in the file name, as the engine does, so that number
    becomes the pattern's ``#`` token, as many as it has digits. A name holding another frame token
    (``my plate#.1001.png``) is refused with the engine's message: the engine would read it as one too.
    """
    folder, name = os.path.split(frame_path)
    numbered = split_numbered(name)
    if numbered is None:
        raise JobSpecError(f"{name!r} has no frame number: load the plate as an image sequence or a movie")
    prefix, number, suffix = numbered
    sequence = FramePattern(folder, prefix, len(number), suffix)
    try:
        split_pattern(sequence.hashes())
    except InputError as exc:
        raise JobSpecError(str(exc)) from None
    return sequence


def _sanitised(stem: str) -> str:
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._- ")
    return stem or "plate"


SEQUENCE, MOVIE = "sequence", "movie"
#: In each matte folder: which plate the matte in it belongs to, so no other plate ever overwrites it.
OWNER_FILE = "rvm_plate.json"
_NEVER_OVERWRITTEN = (
    "and mattes of other plates are never overwritten: choose another Output Folder, or delete that folder"
)


@dataclass(frozen=True)
class Plate:
    """A plate as the engine reads it (a movie, or an absolute ``name.####.ext`` pattern) and where its matte goes.

    Plates are told apart by their absolute path and kind, never by file name alone: shots keep
    ``juggle.####.png`` in their own folders, and a movie and a sequence can share a stem.
    """

    input: str
    kind: str
    padding: int = 4

    @property
    def stem(self) -> str:
        """A short name for the plate's outputs: its file name without extension and trailing frame number."""
        stem = os.path.splitext(os.path.basename(self.input))[0]
        if self.kind == SEQUENCE:
            parts = split_pattern(stem)
            if parts is not None and not parts.suffix:  # a number inside the name stays, as it always has
                stem = parts.prefix
        return _sanitised(stem)

    @property
    def key(self) -> str:
        """Eight hex digits of the plate's path and kind: short enough to read, long enough never to meet."""
        return hashlib.sha256(f"{self.kind}:{self.input}".encode()).hexdigest()[:8]

    def folder(self, output_dir: str) -> str:
        """``<dir>/<stem>-<key>``: one folder per plate, so plates with the same file name never collide."""
        if not output_dir:
            raise JobSpecError("no output folder set")
        return os.path.join(output_dir, f"{self.stem}-{self.key}")

    def output_pattern(self, output_dir: str) -> str:
        matte = FramePattern(self.folder(output_dir), f"{self.stem}_rvm.", max(1, self.padding), OUTPUT_EXTENSION)
        return matte.hashes()

    def describe(self) -> str:
        return f"{self.input}, a {self.kind}"


def plate_for(path: str, source: str, image_name: str = "") -> Plate:
    """The plate of an image from its absolute path and Blender Source (``SEQUENCE`` or ``MOVIE``)."""
    path = os.path.normpath(os.path.abspath(path))
    if source == "MOVIE":
        return Plate(path, MOVIE)
    if source == "SEQUENCE":
        sequence = sequence_pattern(path)
        return Plate(sequence.hashes(), SEQUENCE, sequence.padding)
    # A still ("FILE"), generated, viewer...: no frames for the network's memory to follow.
    raise JobSpecError(
        f"image {image_name!r} is not a sequence or movie (its Source is {source.title()}): "
        "set the Image node's Source to Image Sequence or Movie"
    )


def file_plate(path: str) -> Plate:
    """The plate of a file the artist picked: a movie by its extension (the engine's list), else a sequence."""
    return plate_for(path, "MOVIE" if is_video(path) else "SEQUENCE")


def check_output_owner(folder: str, plate: Plate) -> None:
    """Refuse a matte folder that holds another plate's matte, or files nobody recorded as this plate's.

    The Overwrite setting only ever replaces this plate's own earlier matte; a folder is this plate's
    when its :data:`OWNER_FILE` names the plate (an empty or missing folder is anyone's).
    """
    try:
        entries = [name for name in os.listdir(folder) if not name.startswith(".")]
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JobSpecError(f"cannot read the output folder {folder}: {exc.strerror or exc}") from None
    if OWNER_FILE not in entries:
        if entries:
            raise JobSpecError(
                f"the output folder {folder} holds files but no {OWNER_FILE} saying which plate they belong to, "
                + _NEVER_OVERWRITTEN
            )
        return
    record_path = os.path.join(folder, OWNER_FILE)
    try:
        with open(record_path, encoding="utf-8") as handle:
            record = json.load(handle)
        owner = Plate(os.path.normpath(str(record["plate"])), str(record["kind"]))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise JobSpecError(f"cannot tell which plate owns {folder}: {record_path} is unreadable ({exc})") from None
    if (owner.input, owner.kind) != (plate.input, plate.kind):
        raise JobSpecError(
            f"the output folder {folder} holds the matte of another plate ({owner.describe()}), " + _NEVER_OVERWRITTEN
        )


def write_output_owner(folder: str, plate: Plate) -> None:
    """Record ``plate`` as the owner of ``folder`` (written whole, then renamed into place)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, OWNER_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump({"plate": plate.input, "kind": plate.kind}, handle, indent=2)
    os.replace(path + ".tmp", path)


def frames_on_disk(pattern: str) -> list[int]:
    """The frame numbers of a ``name.####.ext`` sequence that exist (Blender's loader does not tell us).

    Read by the engine's rules: the last number in each file name, spelled with the pattern's padding
    (``plate.01001.png`` is not frame 1001 of ``plate.####.png``; ``plate.10000.png`` is frame 10000).
    """
    parts = split_pattern(pattern)
    if parts is None:
        raise JobSpecError(f"{pattern}: no frame number in the plate's name")
    try:
        entries = os.listdir(parts.directory or ".")
    except OSError as exc:
        raise JobSpecError(f"cannot list the plate's folder {parts.directory}: {exc.strerror or exc}") from None
    frames = []
    for entry in entries:
        numbered = split_numbered(entry)
        if numbered is None or (numbered[0], numbered[2]) != (parts.prefix, parts.suffix):
            continue
        number = numbered[1]
        if frame_digits(int(number), parts.padding) == number:
            frames.append(int(number))
    if not frames:
        raise JobSpecError(f"no frames of {pattern} on disk")
    return sorted(frames)


# ------------------------------------------------------------------------------------------ frames


def image_frame(scene_frame: int, *, start: int, offset: int, duration: int, cyclic: bool = False) -> int:
    """The image's own frame number an Image node shows at ``scene_frame``.

    Mirrors Blender's ``BKE_image_user_frame_get``: scene frame f shows image frame
    ``f - start + 1`` (held at the first and last frame, or wrapped when cyclic), plus the offset.
    """
    n = scene_frame - start + 1
    if cyclic:
        n %= duration
        if n == 0:
            n = duration
    else:
        n = min(max(n, 1), duration)
    return n + offset


def file_frames(
    scene_start: int, scene_end: int, *, start: int, offset: int, duration: int, cyclic: bool = False
) -> list[int]:
    """The plate's own frame numbers that the scene range shows through an Image node (``image_frame``)."""
    if scene_end < scene_start:
        raise JobSpecError(f"the scene's frame range {scene_start}-{scene_end} is empty")
    if duration < 1:
        raise JobSpecError("the plate has no frames (Image node frame count is 0)")
    frames: set[int] = set()
    for scene_frame in range(scene_start, scene_end + 1):
        frames.add(image_frame(scene_frame, start=start, offset=offset, duration=duration, cyclic=cyclic))
        if len(frames) == duration:  # every frame of the plate is already in: a long range adds nothing
            break
    return sorted(frames)


def check_frames_on_disk(
    requested: Iterable[int], on_disk: Iterable[int], *, node_name: str, start: int, offset: int, duration: int
) -> None:
    """Refuse frames the sequence does not have, saying what the Image node asks for and what to change.

    A wrong offset is the usual cause (a sequence numbered from 1001 in a node with offset 0): when
    moving the offset makes every asked-for frame exist, the message names that offset.
    """
    wanted = sorted(set(requested))
    present = set(on_disk)
    absent = [f for f in wanted if f not in present]
    if not absent:
        return
    raise JobSpecError(
        f"Image node {node_name!r} asks for frames {format_frames(wanted)} (frame_start {start}, "
        f"offset {offset}, duration {duration}) but the sequence on disk has frames "
        f"{format_frames(present)}: {_frames_advice(wanted, absent, present, offset)}"
    )


def _frames_advice(wanted: list[int], absent: list[int], present: set[int], offset: int) -> str:
    """The one change to the Image node that makes every asked-for frame exist, else what is missing."""
    shift = min(present) - wanted[0]
    if all(f + shift in present for f in wanted):
        return f"set the node's offset to {offset + shift}"
    last = max(present)
    if all(f > last for f in absent) and all(f in present for f in wanted if f <= last):
        return f"the sequence ends at frame {last}: set the node's duration to {last - offset}"
    if len(absent) == 1:
        return f"frame {absent[0]} is missing"
    return f"frames {format_frames(absent)} are missing"


# ------------------------------------------------------------------------------------------ mattes

#: The Job's mattes (``garbage_matte``, ...), in the contract's order: each is a setting of the add-on.
MATTES = tuple(f.name[: -len("_matte")] for f in FIELDS if f.name.endswith("_matte") and f.path is not None)


@dataclass(frozen=True)
class Matte:
    """One matte as the engine reads it: a sequence or movie, the channel by name (None: the engine's choice)."""

    name: str
    input: str
    channel: str | None = None
    invert: bool = False

    def fields(self) -> dict[str, Any]:
        return {
            f"{self.name}_matte": self.input,
            f"{self.name}_channel": self.channel,
            f"invert_{self.name}": self.invert,
        }


def check_matte_mapping(
    scene_start: int,
    scene_end: int,
    *,
    matte_node: str,
    plate_node: str,
    matte: Mapping[str, Any],
    plate: Mapping[str, Any],
) -> None:
    """Refuse a matte's Image node that shows other frame numbers than the plate's node at some scene frame.

    The engine reads a matte at the plate's own frame numbers; a matte node whose start, offset or duration
    differ from the plate's would line up in Blender and not in the render. ``matte``/``plate`` hold each
    node's ``start``, ``offset``, ``duration`` and ``cyclic``, as ``image_frame`` takes them.
    """
    for scene_frame in range(scene_start, scene_end + 1):
        shown, wanted = image_frame(scene_frame, **matte), image_frame(scene_frame, **plate)
        if shown != wanted:
            raise JobSpecError(
                f"Image node {matte_node!r} shows its frame {shown} at scene frame {scene_frame}, where the plate's "
                f"node {plate_node!r} shows frame {wanted}: the engine reads a matte at the plate's frame numbers, so "
                f"give {matte_node!r} the plate node's frame_start {plate['start']}, offset {plate['offset']} and "
                f"duration {plate['duration']} (and renumber the matte's files if they are numbered otherwise)"
            )


# ------------------------------------------------------------------------------------------ model


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
    if encoder == DEFAULT_ENCODER:
        return None
    return official_checkpoint_path(encoder, env)


# ------------------------------------------------------------------------------------------ the job


def _engine_default(name: str) -> Any:
    return FIELDS_BY_NAME[name].default


def build_job(
    *,
    input: str,
    output: str,
    frames: Iterable[int],
    input_colorspace: str,
    output_colorspace: str | None = ENGINE_LINEAR_REC709,
    checkpoint: str | None = _engine_default("checkpoint"),
    downsample: str | float = _engine_default("downsample"),
    device: str = _engine_default("device"),
    precision: str = _engine_default("precision"),
    preroll: int = _engine_default("preroll"),
    warmup: int = _engine_default("warmup"),
    passes: str = _engine_default("passes"),
    mattes: Iterable[Matte] = (),
    start_frame: int = _engine_default("start_frame"),
    overwrite: bool = True,
    name: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Job:
    """The scene's values as the contract's Job, checked by the engine's rules and refused with its message.

    Values not given, and fields the add-on has no setting for, are the engine's defaults, except two that
    are the add-on's own: the matte is written in Linear Rec.709 (what Blender loads it back as), and
    overwriting this plate's earlier matte is on. The job file is ``job.to_dict()``.
    """
    try:
        return Job(
            input=input,
            output=output,
            frames=format_frames(frames, limit=None),
            start_frame=start_frame,
            checkpoint=checkpoint or None,
            downsample=downsample,
            device=device,
            precision=precision,
            input_colorspace=input_colorspace,
            output_colorspace=output_colorspace,
            preroll=preroll,
            warmup=warmup,
            passes=passes,
            **{name: value for matte in mattes for name, value in matte.fields().items()},
            overwrite=overwrite,
            name=name,
            metadata=dict(metadata or {}),
        )
    except InputError as exc:
        raise JobSpecError(str(exc)) from None


# ------------------------------------------------------------------------------------------ Video Sequencer strips


@dataclass(frozen=True)
class StripWindow:
    """What the timeline shows of a strip: scene frames ``start`` to ``end - 1``, content frames ``first..last``.

    Content frame ``i`` is the strip's ``i``-th image (0-based) or movie frame. A handle dragged past the
    content (a negative trim) holds the first or last frame, as Blender does, so ``first..last`` may be
    shorter than the visible range.
    """

    start: int
    end: int
    first: int
    last: int
    origin: int  # the strip's frame_start: the scene frame of content frame 0

    def content_frame(self, scene_frame: int) -> int:
        """The content frame Blender shows at ``scene_frame`` (``seq_give_frame_index`` without retiming)."""
        return min(max(scene_frame - self.origin, self.first), self.last)

    @property
    def content_start(self) -> int:
        """The scene frame where content frame ``first`` shows (before ``start`` when the start is held)."""
        return self.origin + self.first


def _whole_frame(strip: str, what: str, value: float) -> int:
    if value != int(value):
        raise JobSpecError(
            f"strip {strip!r}: {what} is {value:g}, between two frames; move the strip onto whole frames"
        )
    return int(value)


def strip_window(
    strip: str, *, frame_start: float, offset_start: float, offset_end: float, duration: int
) -> StripWindow:
    """The visible part of a strip from the values Blender stores (``frame_start``, ``frame_offset_start/end``)."""
    start = _whole_frame(strip, "frame_start", frame_start)
    trim_start = _whole_frame(strip, "frame_offset_start", offset_start)
    trim_end = _whole_frame(strip, "frame_offset_end", offset_end)
    if duration < 1:
        raise JobSpecError(f"strip {strip!r} has no frames")
    visible_start, visible_end = start + trim_start, start + duration - trim_end
    if visible_end <= visible_start:
        raise JobSpecError(f"strip {strip!r} shows no frames (trimmed to {visible_start}-{visible_end - 1})")

    def content(scene_frame: int) -> int:
        return min(max(scene_frame - start, 0), duration - 1)

    return StripWindow(visible_start, visible_end, content(visible_start), content(visible_end - 1), start)


def strip_sequence(strip: str, directory: str, filenames: list[str]) -> tuple[Plate, list[int]]:
    """An image strip's plate and the frame number of each of its images, in the strip's order.

    An image strip is a list of files; the engine reads a numbered sequence, so every file must be a
    frame of the first one's sequence (same name, same padding).
    """
    if not filenames:
        raise JobSpecError(f"image strip {strip!r} has no images")
    plate = plate_for(os.path.join(directory, filenames[0]), "SEQUENCE", strip)
    parts = split_pattern(plate.input)
    assert parts is not None  # plate_for made it from a numbered name
    frames = []
    for filename in filenames:
        numbered = split_numbered(filename)
        if (
            numbered is None
            or (numbered[0], numbered[2]) != (parts.prefix, parts.suffix)
            or frame_digits(int(numbered[1]), parts.padding) != numbered[1]
        ):
            raise JobSpecError(
                f"image strip {strip!r} holds {filename!r}, which is not a frame of {os.path.basename(plate.input)}: "
                "matte one numbered sequence per strip"
            )
        frames.append(int(numbered[1]))
    return plate, frames


def check_strip_timing(
    strip: str,
    *,
    strobe: float = 1.0,
    reverse: bool = False,
    retiming_keys: int = 0,
    animation_offsets: tuple[int, int] = (0, 0),
    media_fps: float | None = None,
    scene_fps: float | None = None,
) -> None:
    """Refuse the strips whose timeline frames do not map one to one onto content frames.

    The matte strip is placed frame for frame under the plate strip; a speed change (retiming keys, a
    movie at another frame rate than the scene), strobe, reversed playback or an animation offset would
    show other plate frames than the ones the matte is placed for.
    """
    fix = "matte a strip at its own speed and retime the plate and matte strips together afterwards"
    if retiming_keys:
        raise JobSpecError(
            f"strip {strip!r} is retimed ({retiming_keys} retiming keys): its frames cannot be mapped exactly; "
            f"reset its retiming, or {fix}"
        )
    if media_fps is not None and scene_fps is not None and abs(media_fps - scene_fps) > 1e-3:
        raise JobSpecError(
            f"movie strip {strip!r} is {media_fps:g} fps in a {scene_fps:g} fps scene, so Blender plays it at "
            f"another speed: set the scene's frame rate to {media_fps:g} fps, or {fix}"
        )
    if strobe > 1.0:
        raise JobSpecError(f"strip {strip!r} has Strobe {strobe:g}: set it to 1, or {fix}")
    if reverse:
        raise JobSpecError(f"strip {strip!r} plays its frames reversed: switch off Reverse Frames, or {fix}")
    if any(animation_offsets):
        raise JobSpecError(
            f"strip {strip!r} has animation offsets {animation_offsets[0]}/{animation_offsets[1]}: set them to 0 "
            "(trim with the strip's handles instead)"
        )
