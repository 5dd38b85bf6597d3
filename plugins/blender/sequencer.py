"""The Video Sequencer side: matte the selected movie/image strips, add each EXR matte in the channel above.

Every sequencer API difference between Blender 4.2-4.x and 5.x is here (5.0 renamed ``sequences`` to
``strips`` and ``selected_sequences`` to ``selected_strips``); the engine run itself (job, subprocess,
progress, Esc) is the compositor's, :class:`operators.EngineRun` and :class:`operators.EngineOperator`.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import bpy

from . import jobspec, operators
from .operators import EngineOperator, EngineRun, RunError, _abspath
from .vendor.rvm_spec import format_frame, format_frames
from .vendor.rvm_spec.job import FIELDS_BY_NAME

#: On a plate strip: a generated id that survives renames; on its matte strip: the same id.
STRIP_ID_KEY = "rvm_id"
_MATTE_OF_KEY = "rvm_matte_of"
_KINDS = ("IMAGE", "MOVIE")


def top_strips(editor: Any) -> Any:
    """The editor's top-level strip collection (the one with ``new_image``/``new_movie``)."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(editor: Any) -> Any:
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def chosen_strips(scene: Any) -> list[Any]:
    """The selected movie and image plate strips, bottom channel first, then by time.

    Other selected strips (colour, effects, sound, RVM mattes) are passed over, as an editor expects of a
    mixed selection; a selection holding none of the plate kind is refused, naming a strip of it.
    """
    editor = scene.sequence_editor
    if editor is None or not len(top_strips(editor)):
        raise RunError("the scene has no Video Sequencer strips: add the plate as a movie or image strip")
    selected = [s for s in top_strips(editor) if s.select]
    if not selected:
        raise RunError("no strip selected: select the plate's movie or image strip in the Video Sequencer")
    plates = [s for s in selected if s.type in _KINDS and not s.get(_MATTE_OF_KEY)]
    if not plates:
        active = editor.active_strip
        strip = active if active is not None and active.select else selected[0]
        if strip.type not in _KINDS:
            raise RunError(f"strip {strip.name!r} is a {strip.type.lower()} strip: select a movie or image strip")
        raise RunError(f"strip {strip.name!r} is an RVM matte: select the plate's strip")
    return sorted(plates, key=lambda s: (s.channel, s.frame_final_start, s.name))


def strip_id(strip: Any) -> str:
    pid = strip.get(STRIP_ID_KEY)
    if not pid:
        pid = strip[STRIP_ID_KEY] = uuid.uuid4().hex
    return str(pid)


def _scene_fps(scene: Any) -> float:
    return scene.render.fps / scene.render.fps_base


def _check_timing(scene: Any, strip: Any) -> None:
    jobspec.check_strip_timing(
        strip.name,
        strobe=strip.strobe,
        reverse=strip.use_reverse_frames,
        retiming_keys=len(getattr(strip, "retiming_keys", ())),
        animation_offsets=(strip.animation_offset_start, strip.animation_offset_end),
        media_fps=strip.fps if strip.type == "MOVIE" else None,
        scene_fps=_scene_fps(scene),
    )


def strip_plate(strip: Any) -> tuple[jobspec.Plate, list[int]]:
    """The strip's plate and the engine's frame number of each content frame (for a movie: 1, 2, ...)."""
    if strip.type == "MOVIE":
        plate = jobspec.plate_for(_abspath(strip.filepath), "MOVIE", strip.name)
        start = FIELDS_BY_NAME["start_frame"].default
        return plate, [start + i for i in range(strip.frame_duration)]
    directory = _abspath(strip.directory)
    plate, frames = jobspec.strip_sequence(strip.name, directory, [e.filename for e in strip.elements])
    missing = [f for f in frames if not os.path.isfile(format_frame(plate.input, f))]
    if missing:
        raise RunError(
            f"image strip {strip.name!r} shows frames of {plate.input} that are not on disk: {format_frames(missing)}"
        )
    return plate, frames


class SequencerRun(EngineRun):
    """A sequencer matte: the frames of one strip that the timeline shows, matted, then stacked above it."""

    def __init__(self, context: bpy.types.Context, strip: Any) -> None:
        scene = context.scene
        python = operators.engine_python(context)
        try:
            _check_timing(scene, strip)
            window = jobspec.strip_window(
                strip.name,
                frame_start=strip.frame_start,
                offset_start=strip.frame_offset_start,
                offset_end=strip.frame_offset_end,
                duration=strip.frame_duration,
            )
            plate, content_frames = strip_plate(strip)
        except jobspec.JobSpecError as exc:
            raise RunError(str(exc)) from None
        self.strip_id = strip_id(strip)
        self.strip_name = strip.name
        self.window = window
        self.plate_frames = content_frames[window.first : window.last + 1]
        self.channel = strip.channel + 1
        self._check_channel_free(scene, strip)
        super().__init__(
            context,
            python=python,
            plate=plate,
            frames=self.plate_frames,
            image_colorspace=strip.colorspace_settings.name,
            source_name=strip.name,
            metadata={"rvm:plate_strip": strip.name},
        )

    def _check_channel_free(self, scene: Any, strip: Any) -> None:
        """The matte goes exactly one channel above its plate: refuse a channel another strip holds there."""
        for other in top_strips(scene.sequence_editor):
            if other.channel != self.channel or other.get(_MATTE_OF_KEY) == self.strip_id:
                continue
            if other.frame_final_start < self.window.end and self.window.start < other.frame_final_end:
                raise RunError(
                    f"channel {self.channel}, above strip {strip.name!r}, holds strip {other.name!r} at frames "
                    f"{other.frame_final_start}-{other.frame_final_end - 1}: move it, the matte goes there"
                )

    def _wire(self, context: bpy.types.Context) -> Any:
        scene = bpy.data.scenes.get(self.scene_name) or context.scene
        editor = scene.sequence_editor
        strips = top_strips(editor) if editor is not None else []
        plate = next((s for s in strips if s.get(STRIP_ID_KEY) == self.strip_id), None)
        if plate is None:
            raise RunError(f"the plate strip {self.strip_name!r} was removed while the matte rendered")
        files = [self.matte_frame(frame) for frame in self.plate_frames]
        for old in [s for s in strips if s.get(_MATTE_OF_KEY) == self.strip_id]:
            strips.remove(old)
        return add_matte_strip(scene, plate, files, self.window, self.matte_colorspace)


def _check_distinct_outputs(runs: list[SequencerRun]) -> None:
    """Two selected strips of one plate would write (and overwrite) the same matte files: refuse them."""
    seen: dict[str, str] = {}
    for run in runs:
        other = seen.setdefault(run.output, run.strip_name)
        if other != run.strip_name:
            raise RunError(
                f"strips {other!r} and {run.strip_name!r} show the same plate {run.plate.input}: their mattes "
                "would overwrite each other; select one of them"
            )


def add_matte_strip(
    scene: Any, plate: Any, files: list[str], window: jobspec.StripWindow, colorspace: str | None
) -> Any:
    """An image strip of the matte frames, one channel above ``plate``, showing at each scene frame the matte
    of the plate frame shown there, alpha-over the strips below (the EXR is premultiplied)."""
    strips = top_strips(scene.sequence_editor)
    first = files[0]
    stored = bpy.path.relpath(first) if bpy.data.filepath else first
    # Placed so its content frame 0 is the plate's content frame `window.first`; the handles then trim (or
    # hold, where the plate's handles go past its content) to the plate's visible range.
    frame_start = window.content_start
    matte = strips.new_image(
        name=f"RVM Matte ({plate.name})", filepath=stored, channel=plate.channel + 1, frame_start=frame_start
    )
    for path in files[1:]:
        matte.elements.append(os.path.basename(path))
    matte.frame_offset_start = window.start - frame_start
    matte.frame_offset_end = frame_start + len(files) - window.end
    matte.blend_type = "ALPHA_OVER"
    matte.alpha_mode = "PREMUL"
    if colorspace:
        matte.colorspace_settings.name = colorspace
    matte[_MATTE_OF_KEY] = plate[STRIP_ID_KEY]
    return matte


def sequencer_is_linear(scene: Any) -> bool:
    """Whether the sequencer blends in a linear space (its default, sRGB, makes Alpha Over non-linear)."""
    name = scene.sequencer_colorspace_settings.name
    return "linear" in name.lower() or name in ("ACEScg", "ACES2065-1")


class RVM_OT_sequencer_matte(EngineOperator, bpy.types.Operator):
    """Matte the people in the selected movie or image strips and add each matte as a strip in the channel above"""

    bl_idname = "rvm.sequencer_matte"
    bl_label = "RVM Matte Strip"
    bl_options = {"REGISTER", "UNDO"}

    run_noun = "strip"

    def make_runs(self, context: bpy.types.Context) -> list[EngineRun]:
        runs = [SequencerRun(context, strip) for strip in chosen_strips(context.scene)]
        _check_distinct_outputs(runs)
        return runs

    def execute(self, context: bpy.types.Context) -> set[str]:
        self._warn_colorspace(context)
        return super().execute(context)

    def invoke(self, context: bpy.types.Context, event: Any) -> set[str]:
        self._warn_colorspace(context)
        return super().invoke(context, event)

    def _warn_colorspace(self, context: bpy.types.Context) -> None:
        if context.scene is not None and not sequencer_is_linear(context.scene):
            self.report(
                {"WARNING"},
                f"RVM Matte: the Video Sequencer blends in {context.scene.sequencer_colorspace_settings.name}, so "
                "Alpha Over of the linear matte is not a linear composite: set Color Management > Sequencer "
                "to Linear Rec.709",
            )


def menu_entry(self: Any, context: bpy.types.Context) -> None:
    self.layout.separator()
    self.layout.operator(RVM_OT_sequencer_matte.bl_idname, icon="SEQUENCE")


CLASSES = (RVM_OT_sequencer_matte,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.SEQUENCER_MT_strip.append(menu_entry)


def unregister() -> None:
    bpy.types.SEQUENCER_MT_strip.remove(menu_entry)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
