"""Drive the add-on's garbage / core / hold-out mattes, warm-up and passes inside real Blender (PyPI ``bpy``).

Run by tests/test_blender_mattes.py: ``drive_rvm_mattes.py CONFIG.json RESULT.json``. It installs the
extension as drive_rvm_matte.py does, puts the plate and two matte sequences in compositor Image nodes,
builds the operator's run (the Job it would start the engine with) for each setting, records the refusals,
and runs the operator once with the real engine; the test judges the Job and the EXR matte.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import tempfile
import traceback
from typing import Any

import bpy
from drive_rvm_matte import MODULE, install_extension, prefs, run_operator, setup_scene


def matte_node(tree: Any, name: str, first: str, frames: int, first_frame: int) -> Any:
    """An Image node holding a matte sequence, framed like the plate's node (as the file browser sets it)."""
    image = bpy.data.images.load(first)
    image.source = "SEQUENCE"
    node = sys.modules[MODULE + ".compositor"].add_plate_node(tree, image)
    node.name = name
    node.frame_duration, node.frame_start, node.frame_offset = frames, 1, first_frame - 1
    return node


def planned_job() -> dict[str, Any]:
    """The Job the operator would run now, or the refusal it would report."""
    operators = sys.modules[MODULE + ".operators"]
    try:
        return {"job": operators.MatteRun(bpy.context).job.to_dict(), "error": None}
    except operators.RunError as exc:
        return {"job": None, "error": str(exc)}


def describe_settings(settings: Any) -> dict[str, Any]:
    rna = settings.bl_rna.properties
    names = ["warmup", "passes", *(f"{m}_{s}" for m in ("garbage", "core", "holdout") for s in ("node", "channel"))]
    names += [f"invert_{m}" for m in ("garbage", "core", "holdout")]
    return {
        name: {
            "default": getattr(rna[name], "default", None),
            "description": rna[name].description,
            "label": rna[name].name,
            "items": [item.identifier for item in rna[name].enum_items] if rna[name].type == "ENUM" else None,
            "min": getattr(rna[name], "hard_min", None) if rna[name].type == "INT" else None,
        }
        for name in names
    }


def main() -> None:
    config_path, result_path = sys.argv[-2:]
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    result: dict[str, Any] = {"blender": bpy.app.version_string, "bpy_package": importlib.metadata.version("bpy")}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            install_extension(config["addon_dir"], scratch)
        frames, first = config["frames"], config["first_frame"]
        scene = setup_scene(config["plate_first"], frames, first)
        p = prefs()
        p.engine_python, p.checkpoint_mobilenetv3, p.device = config["engine_python"], config["checkpoint"], "cpu"
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(config["work_dir"], "mattes.blend"))
        settings = scene.rvm_matte
        result["settings"] = describe_settings(settings)
        tree = sys.modules[MODULE + ".compositor"].compositor_tree(scene)
        garbage = matte_node(tree, "Garbage", config["garbage_first"], frames, first)
        matte_node(tree, "Core", config["core_first"], frames, first)
        matte_node(tree, "Holdout", config["holdout_first"], frames, first)
        tree.nodes.active = tree.nodes["Plate"]

        result["no_mattes"] = planned_job()
        settings.garbage_node, settings.invert_garbage = "Garbage", True
        settings.core_node, settings.core_channel = "Core", "R"
        settings.warmup, settings.passes = 4, "bidirectional"
        result["mattes"] = planned_job()

        refusals: dict[str, Any] = {}
        settings.holdout_node = "No Such Node"
        refusals["missing_node"] = planned_job()["error"]
        settings.holdout_node = "Holdout"  # framed like the plate, but its frame 1002 is not on disk
        refusals["missing_frame"] = planned_job()["error"]
        settings.holdout_node = ""
        garbage.frame_offset = 0  # shows frames 1-3 where the plate's node shows 1001-1003
        refusals["other_mapping"] = planned_job()["error"]
        garbage.frame_offset = first - 1
        result["refusals"] = refusals

        # The real engine, mattes on (the default warm-up and passes, so only the mattes differ from a plain run).
        settings.warmup = settings.bl_rna.properties["warmup"].default
        settings.passes = settings.bl_rna.properties["passes"].default
        settings.invert_garbage = False
        outcome = run_operator()
        job = planned_job()["job"]
        result["render"] = {**outcome, "job": job}
    except Exception:  # noqa: BLE001 - reported to the test, which shows it
        result["driver_error"] = traceback.format_exc()
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
