"""Drive the add-on's Video Sequencer operator inside real Blender (the PyPI ``bpy``), headless.

Run by tests/test_blender_sequencer.py: ``drive_rvm_sequencer.py CONFIG.json RESULT.json``. It installs the
extension as drive_rvm_matte.py does, builds an edit (a colour strip in channel 1, the plate trimmed and
offset in channel 2), runs ``rvm.sequencer_matte`` on the plate strip with the real engine, and renders the
sequencer's output to float EXR (all strips; the plate muted; plate and matte muted) for the test to judge.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import sys
import tempfile
import time
import traceback
import types
from typing import Any

import bpy
from drive_rvm_matte import MODULE, install_extension, prefs, render_frame

SEQUENCER_IDS = {"operator": "RVM_OT_sequencer_matte", "panel": "RVM_PT_sequencer_matte"}


def strips(scene: Any) -> Any:
    editor = scene.sequence_editor_create()
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def run_operator() -> dict[str, Any]:
    try:
        return {"result": sorted(bpy.ops.rvm.sequencer_matte("EXEC_DEFAULT")), "error": None}
    except RuntimeError as exc:
        return {"result": ["CANCELLED"], "error": str(exc).rstrip("\n")}


def select_only(scene: Any, strip: Any) -> None:
    for other in strips(scene):
        other.select = False
    strip.select = True
    scene.sequence_editor.active_strip = strip


def add_color(scene: Any, frames: int, color: list[float]) -> Any:
    length = {"length": frames} if hasattr(scene.sequence_editor, "strips") else {"frame_end": 1 + frames}
    strip = strips(scene).new_effect(name="Background", type="COLOR", channel=1, frame_start=1, **length)
    strip.color = color[:3]
    return strip


def add_plate(scene: Any, files: list[str], frame_start: int, trim: tuple[int, int]) -> Any:
    strip = strips(scene).new_image(name="Plate", filepath=files[0], channel=2, frame_start=frame_start)
    for path in files[1:]:
        strip.elements.append(os.path.basename(path))
    strip.colorspace_settings.name = "sRGB"
    strip.frame_offset_start, strip.frame_offset_end = trim
    return strip


def describe_strip(strip: Any) -> dict[str, Any]:
    return {
        "name": strip.name,
        "type": strip.type,
        "channel": strip.channel,
        "frame_start": strip.frame_start,
        "frame_final_start": strip.frame_final_start,
        "frame_final_end": strip.frame_final_end,
        "blend_type": strip.blend_type,
        "alpha_mode": getattr(strip, "alpha_mode", None),
        "colorspace": strip.colorspace_settings.name if hasattr(strip, "colorspace_settings") else None,
        "directory": bpy.path.abspath(strip.directory) if strip.type == "IMAGE" else None,
        "elements": [e.filename for e in strip.elements] if strip.type == "IMAGE" else None,
    }


def renders(config: dict[str, Any], scene: Any, plate: Any, matte: Any, label: str) -> dict[str, str]:
    """Frame ``render_frame`` three ways: the whole stack, without the plate, and the colour strip alone."""
    out = {}
    for case, muted in (("stack", ()), ("matte_over_color", (plate,)), ("color", (plate, matte))):
        for strip in (plate, matte):
            strip.mute = strip in muted
        out[case] = render_frame(scene, config["render_frame"], os.path.join(config["work_dir"], f"{label}_{case}.exr"))
    plate.mute = matte.mute = False
    return out


def multi_cases(config: dict[str, Any], scene: Any, plate: Any, movie: Any, color: Any) -> tuple[dict, dict]:
    """Several strips selected: a reversed movie among them refuses them all; without it both images matte.

    "Shot" is a second plate in channel 6 at frames 14-15 (its last image trimmed), selected with "Plate"
    (channel 2, frames 11-12) and the colour strip, which is active and passed over.
    """
    shot = strips(scene).new_image(name="Shot", filepath=config["shot_files"][0], channel=6, frame_start=14)
    for path in config["shot_files"][1:]:
        shot.elements.append(os.path.basename(path))
    shot.colorspace_settings.name = "sRGB"
    shot.frame_offset_end = 1
    chosen = (plate, shot, movie, color)
    for strip in strips(scene):
        strip.select = strip in chosen
    scene.sequence_editor.active_strip = color
    movie.use_reverse_frames = True
    refused = run_operator()
    refused["channel_7"] = [s.name for s in strips(scene) if s.channel == 7]
    refused["shot_mattes"] = glob.glob(os.path.join(config["work_dir"], "**", "shot_rvm*"), recursive=True)
    movie.use_reverse_frames = False
    movie.select = False
    multi = run_operator()
    for label, strip, channel in (("plate", plate, 3), ("shot", shot, 7)):
        matte = [s for s in strips(scene) if s.channel == channel]
        multi[label] = describe_strip(strip)
        multi[f"{label}_mattes"] = [describe_strip(m) for m in matte]
    multi["modal_cancel"] = modal_cancel_case(scene, plate, movie, shot)
    return refused, multi


class _ModalHost:
    """Stands in for the operator instance Blender would make (no windows, so no event loop, in the PyPI
    bpy): TIMER and ESC events go by hand to the operator's own, unchanged ``modal()``."""

    def __init__(self, operator_cls: Any, runs: list[Any]) -> None:
        self.run_noun, self._timer, self._run = operator_cls.run_noun, None, None
        self._queue, self._count, self._started = list(runs), len(runs), 0
        self.reports: list[list[Any]] = []
        for name in ("_end", "_finish", "_start_next", "_show", "_label"):
            setattr(self, name, types.MethodType(getattr(operator_cls, name), self))

    def report(self, kind: set[str], message: str) -> None:
        self.reports.append([sorted(kind), message])


def exit_code(engine: Any) -> int | str | None:
    try:
        return engine.poll()
    except Exception as exc:  # the add-on's EngineError: the engine was never started
        return str(exc)


def modal_cancel_case(scene: Any, plate: Any, movie: Any, shot: Any) -> dict[str, Any]:
    """Three strips through the interactive path; Esc once the second one's engine runs: the third never starts."""
    sequencer = sys.modules[MODULE + ".sequencer"]
    operator_cls = sequencer.RVM_OT_sequencer_matte
    for strip in strips(scene):
        strip.select = strip in (plate, movie, shot)
    runs = operator_cls.make_runs(None, bpy.context)
    host = _ModalHost(operator_cls, runs)
    assert host._start_next() is runs[0]
    timer, esc = (types.SimpleNamespace(type=t, value=v) for t, v in (("TIMER", "NOTHING"), ("ESC", "PRESS")))
    statuses, outcome, deadline = [], None, time.monotonic() + 300
    while outcome is None and time.monotonic() < deadline:
        if host._run is runs[1] and runs[1].cancelled_at is None:
            assert operator_cls.modal(host, bpy.context, esc) == {"RUNNING_MODAL"}
        result = operator_cls.modal(host, bpy.context, timer)
        if result != {"PASS_THROUGH"}:
            outcome = sorted(result)
        # What _show() puts on the status line (the workspace's, absent here).
        status = f"{host._label(host._run)}{host._run.status_line}" if outcome is None else None
        if status and (not statuses or statuses[-1] != status):
            statuses.append(status)
    return {
        "order": [run.strip_name for run in runs],
        "result": outcome,
        "reports": host.reports,
        "statuses": statuses,
        "exit_codes": [exit_code(run.engine) for run in runs],
        "operator_free_again": sys.modules[MODULE + ".operators"]._active is None,
        "channel_7": [s.name for s in strips(scene) if s.channel == 7],
    }


def main() -> None:
    config_path, result_path = sys.argv[-2:]
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    result: dict[str, Any] = {"blender": bpy.app.version_string, "bpy_package": importlib.metadata.version("bpy")}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            install_extension(config["addon_dir"], scratch)
        result["registered"] = {key: hasattr(bpy.types, name) for key, name in SEQUENCER_IDS.items()}
        scene = bpy.context.scene
        scene.frame_start, scene.frame_end = 1, config["scene_frames"]
        scene.render.fps, scene.render.fps_base = 24, 1.0
        scene.render.resolution_x, scene.render.resolution_y = config["width"], config["height"]
        scene.render.resolution_percentage = 100
        scene.render.use_sequencer = True
        scene.view_settings.view_transform = "Standard"
        scene.display_settings.display_device = "sRGB"
        scene.sequencer_colorspace_settings.name = "Linear Rec.709"  # Alpha Over in linear, as the test composes
        p = prefs()
        p.engine_python, p.checkpoint_mobilenetv3, p.device = config["engine_python"], config["checkpoint"], "cpu"
        result["no_strip"] = run_operator()
        color = add_color(scene, config["scene_frames"], config["color"])
        plate = add_plate(scene, config["plate_files"], config["plate_start"], tuple(config["trim"]))
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(config["work_dir"], "edit.blend"))
        select_only(scene, color)
        result["color_selected"] = run_operator()
        select_only(scene, plate)
        result["image"] = run_operator()
        matte = next(s for s in strips(scene) if s.channel == 3)
        result["image"]["plate"] = describe_strip(plate)
        result["image"]["matte"] = describe_strip(matte)
        result["image"]["renders"] = renders(config, scene, plate, matte, "image")
        job_dir = os.path.dirname(os.path.join(bpy.path.abspath(matte.directory), matte.elements[0].filename))
        result["image"]["job"] = json.load(open(os.path.join(job_dir, "plate_rvm.job.json"), encoding="utf-8"))
        # Again: the matte strip is replaced, not stacked (the channel above is its own).
        result["image_rerun"] = run_operator()
        result["image_rerun"]["channel_3"] = [s.name for s in strips(scene) if s.channel == 3]
        matte = next(s for s in strips(scene) if s.channel == 3)
        result["image_rerun"]["matte"] = describe_strip(matte)
        # The movie: at the scene's rate it maps frame for frame; at another rate Blender retimes it.
        plate.mute = matte.mute = True
        movie = strips(scene).new_movie(name="Movie", filepath=config["movie"], channel=4, frame_start=3)
        movie.colorspace_settings.name = "sRGB"
        movie.frame_offset_start = 1
        select_only(scene, movie)
        scene.render.fps = 25
        result["movie_other_fps"] = run_operator()
        scene.render.fps = 24
        result["movie"] = run_operator()
        movie_matte = next(s for s in strips(scene) if s.channel == 5)
        result["movie"]["plate"] = describe_strip(movie)
        result["movie"]["matte"] = describe_strip(movie_matte)
        scene.frame_set(config["movie_render_frame"])
        movie.mute = True
        result["movie"]["render"] = render_frame(
            scene, config["movie_render_frame"], os.path.join(config["work_dir"], "movie_matte_over_color.exr")
        )
        movie.mute = False
        result["multi_refused"], result["multi"] = multi_cases(config, scene, plate, movie, color)
        import addon_utils  # on sys.path only once bpy is imported

        addon_utils.disable(MODULE, default_set=True)
        result["registered_after_disable"] = {key: hasattr(bpy.types, name) for key, name in SEQUENCER_IDS.items()}
    except Exception:  # the test shows this instead of a bare non-zero exit
        result["driver_error"] = traceback.format_exc()
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
