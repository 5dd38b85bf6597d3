"""Drive the add-on's "Train on keyframes" inside real Blender (PyPI ``bpy``), headless.

Run by tests/test_blender_finetune.py: ``drive_rvm_finetune.py CONFIG.json RESULT.json``. It installs the
extension as drive_rvm_matte.py does, puts the plate in an Image node, a roto sequence in another Image node
and a drawn Mask in a Mask node, records the refusals, then runs the operator: once per roto node with the
engine of ``config["engine_python"]`` (the real one, or the fake), and writes down the reports, the runs'
commands and the Jobs for the test to judge.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from typing import Any

import bpy
from drive_rvm_matte import MODULE, install_extension, prefs, setup_scene


def roto_image_node(tree: Any, first: str, frames: int, first_frame: int) -> Any:
    image = bpy.data.images.load(first)
    image.source = "SEQUENCE"
    node = sys.modules[MODULE + ".compositor"].add_plate_node(tree, image)
    node.name = "Roto"
    node.frame_duration, node.frame_start, node.frame_offset = frames, 1, first_frame - 1
    return node


def roto_mask_node(tree: Any) -> Any:
    """A Mask node whose mask is a square in the middle of the frame (the mask editor's 0-1 frame space)."""
    mask = bpy.data.masks.new("RotoMask")
    layer = mask.layers.new()
    spline = layer.splines.new()
    spline.points.add(3)
    for point, xy in zip(spline.points, [(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)], strict=True):
        point.co = xy
        point.handle_type = "VECTOR"
    spline.use_cyclic = True
    node = tree.nodes.new("CompositorNodeMask")
    node.name = "RotoMask"
    node.mask = mask
    return node


def refusal() -> str | None:
    """What the operator's runs refuse with now (None: it would start)."""
    module = sys.modules[MODULE + ".finetune_ops"]
    try:
        module.RVM_OT_finetune.make_runs(None, bpy.context)
    except sys.modules[MODULE + ".operators"].RunError as exc:
        return str(exc)
    return None


def run_and_record(module: Any) -> dict[str, Any]:
    """Plan, run, then read back what the run wrote (the next run, of the same plate, replaces it)."""
    plan = planned(module)
    outcome = {"planned": plan, "run": run()}
    for key, path in (("sidecar", os.path.splitext(plan["checkpoint"])[0] + ".json"), ("job_file", plan["job_path"])):
        with open(path, encoding="utf-8") as handle:
            outcome[key] = json.load(handle)
    return outcome


def run() -> dict[str, Any]:
    """The operator as a script calls it; ERROR reports become RuntimeError here, the rest go to the log."""
    try:
        result = bpy.ops.rvm.finetune("EXEC_DEFAULT")
        return {"result": sorted(result), "error": None}
    except RuntimeError as exc:
        return {"result": ["CANCELLED"], "error": str(exc).rstrip("\n")}


def planned(module: Any) -> dict[str, Any]:
    runs = module.RVM_OT_finetune.make_runs(None, bpy.context)
    train, matte = runs
    return {
        "command": train.engine.command,
        "checkpoint": train.checkpoint,
        "keyframes": train.keyframes,
        "mask_frames": {str(k): v for k, v in train.mask_frames.items()},
        "job": matte.job.to_dict(),
        "job_path": matte.job_path,
    }


def main() -> None:
    config_path, result_path = sys.argv[-2:]
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    result: dict[str, Any] = {"blender": bpy.app.version_string}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            install_extension(config["addon_dir"], scratch)
        frames, first = config["frames"], config["first_frame"]
        scene = setup_scene(config["plate_first"], frames, first)
        p = prefs()
        p.engine_python, p.checkpoint_mobilenetv3, p.device = config["engine_python"], config["checkpoint"], "cpu"
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(config["work_dir"], "finetune.blend"))
        tree = sys.modules[MODULE + ".compositor"].compositor_tree(scene)
        roto_image_node(tree, config["roto_first"], frames, first)
        roto_mask_node(tree)
        tree.nodes.active = tree.nodes["Plate"]
        module = sys.modules[MODULE + ".finetune_ops"]
        settings = scene.rvm_finetune
        rna = settings.bl_rna.properties
        result["settings"] = {name: getattr(rna[name], "default", None) for name in ("iterations", "time_limit")}
        result["registered"] = {"operator": hasattr(bpy.types, "RVM_OT_finetune"),
                                "panel": hasattr(bpy.types, "RVM_PT_finetune")}  # fmt: skip

        refusals = {"no_node": refusal()}
        settings.keyframes_node = "Nope"
        refusals["missing_node"] = refusal()
        settings.keyframes_node = "RotoMask"
        refusals["mask_without_keyframes"] = refusal()
        settings.keyframes = "1,9"
        refusals["mask_keyframe_outside"] = refusal()
        settings.keyframes = "2"
        settings.iterations = config["iterations"]
        result["refusals"] = refusals

        result["mask"] = run_and_record(module)
        settings.keyframes_node = "Roto"
        settings.keyframes = ""
        result["image"] = run_and_record(module)
    except Exception:  # noqa: BLE001 - reported to the test, which shows it
        result["driver_error"] = traceback.format_exc()
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
