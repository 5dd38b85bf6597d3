"""Drive the RVM Matte add-on inside real Blender (the PyPI ``bpy`` module), headless.

Run by tests/test_blender_addon.py with ``.venv-blender/bin/python`` (bpy pins numpy < 2, so it cannot
share the engine's venv): ``drive_rvm_matte.py CONFIG.json RESULT.json``. It installs the extension the
way an artist does (a zip through Blender's extension installer), runs the operator, renders compositor
frames to EXR and writes down everything the test needs to judge, as JSON; the judging (pixels against
the engine's EXR composited by hand) happens in the engine's venv, which has OpenImageIO.

``BLENDER_USER_RESOURCES`` must point at a scratch folder so nothing is installed into the real profile.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import tempfile
import time
import traceback
import types
import zipfile
from typing import Any

import bpy

EXTENSION_ID = "rvm_matte"
MODULE = f"bl_ext.user_default.{EXTENSION_ID}"
OWNER_FILE = "rvm_plate.json"  # the add-on's record, in each matte folder, of the plate that owns it


def install_extension(addon_dir: str, scratch: str) -> None:
    """Zip the add-on folder and install + enable it through Blender's own extension installer."""
    archive = os.path.join(scratch, f"{EXTENSION_ID}.zip")
    with zipfile.ZipFile(archive, "w") as zf:
        for root, dirs, files in os.walk(addon_dir):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                path = os.path.join(root, name)
                zf.write(path, os.path.relpath(path, addon_dir))
    bpy.ops.extensions.package_install_files(filepath=archive, repo="user_default", enable_on_install=True)
    if MODULE not in bpy.context.preferences.addons:
        raise RuntimeError(f"extension installed but {MODULE} is not enabled")


def prefs() -> Any:
    return bpy.context.preferences.addons[MODULE].preferences


def enum_values(owner: Any, name: str) -> list[str]:
    """The values an enum property offers, as Blender registered it."""
    return [item.identifier for item in owner.bl_rna.properties[name].enum_items]


def registered() -> dict[str, bool]:
    return {
        "operator": hasattr(bpy.types, "RVM_OT_matte"),
        "panel": hasattr(bpy.types, "RVM_PT_matte"),
        "scene_settings": hasattr(bpy.types.Scene, "rvm_matte"),
    }


def run_operator(how: str = "EXEC_DEFAULT") -> dict[str, Any]:
    """The operator as a script or ``blender -b`` calls it; an ERROR report becomes RuntimeError here.

    ``INVOKE_DEFAULT`` (a button press) has no window to be modal in here, so it must run synchronously.
    """
    try:
        result = bpy.ops.rvm.matte(how)
        return {"result": sorted(result), "error": None}
    except RuntimeError as exc:
        return {"result": ["CANCELLED"], "error": str(exc).rstrip("\n")}


def setup_scene(plate_first: str, frames: int, first_frame: int) -> Any:
    """A scene as an artist leaves it: frame range 1-N, the plate sequence in a compositor Image node."""
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, frames
    image = bpy.data.images.load(plate_first)
    image.source = "SEQUENCE"
    image.colorspace_settings.name = "sRGB"
    module = sys.modules[MODULE + ".compositor"]
    tree = module.compositor_tree(scene)
    # Blender 4.x starts a compositor with Render Layers (which makes every render draw the 3D scene too,
    # a minute a frame here with no GPU) and, from 4.5, a Viewer; this scene only composites plates.
    for node in [n for n in tree.nodes if n.bl_idname not in ("CompositorNodeComposite", "NodeGroupOutput")]:
        tree.nodes.remove(node)
    node = module.add_plate_node(tree, image)
    node.name = "Plate"
    # What Blender's file browser sets when a sequence numbered from 1001 is opened in the node.
    node.frame_duration, node.frame_start, node.frame_offset = frames, 1, first_frame - 1
    tree.nodes.active = node
    scene.render.resolution_x, scene.render.resolution_y = image.size[0], image.size[1]
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.display_settings.display_device = "sRGB"
    return scene


def render_frame(scene: Any, frame: int, path: str) -> str:
    scene.frame_set(frame)
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "32"
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    return path


def describe_tree(scene: Any) -> dict[str, Any]:
    tree = sys.modules[MODULE + ".compositor"].compositor_tree(scene, create=False)
    nodes = []
    for n in tree.nodes:
        node: dict[str, Any] = {"name": n.name, "type": n.bl_idname}
        if n.bl_idname == "CompositorNodeImage" and n.image is not None:
            node["image"] = n.image.name
            node["image_path"] = bpy.path.abspath(n.image.filepath)
        nodes.append(node)
    links = [f"{ln.from_node.name}.{ln.from_socket.name} -> {ln.to_node.name}.{ln.to_socket.name}" for ln in tree.links]
    return {"nodes": nodes, "links": links}


def describe_matte_image(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Image datablock(s) loaded from the folder the job wrote to."""
    if job is None:
        return None
    folder = os.path.dirname(job["output"])
    images = [im for im in bpy.data.images if os.path.dirname(bpy.path.abspath(im.filepath)) == folder]
    if not images:
        return None
    image = images[0]
    return {
        "count": len(images),
        "name": image.name,
        "filepath": image.filepath,
        "source": image.source,
        "alpha_mode": image.alpha_mode,
        "colorspace": image.colorspace_settings.name,
    }


def read_job(scene: Any) -> dict[str, Any] | None:
    """The job file the last run wrote (each plate has its own folder and job file)."""
    folder = bpy.path.abspath(scene.rvm_matte.output_dir)
    jobs = [os.path.join(root, n) for root, _, files in os.walk(folder) for n in files if n.endswith(".job.json")]
    if not jobs:
        return None
    with open(max(jobs, key=os.path.getmtime), encoding="utf-8") as handle:
        return json.load(handle)


def error_cases(config: dict[str, Any], scene: Any) -> dict[str, Any]:
    """Each way a run can fail before or inside the engine, with what the artist is told."""
    cases: dict[str, Any] = {}
    p = prefs()
    p.engine_python = ""
    cases["no_python"] = run_operator()
    p.engine_python = os.path.join(config["work_dir"], "no-such-venv", "bin", "python")
    cases["python_missing"] = run_operator()
    p.engine_python = config["engine_python"]
    cases["unsaved_blend"] = run_operator()
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(config["work_dir"], "shot.blend"))
    p.engine_python = sys.executable  # Blender's venv: a Python without rvm-vfx
    cases["python_without_engine"] = run_operator()
    p.engine_python = config["engine_python"]
    plate = plate_tree(scene).nodes["Plate"].image
    plate.source = "FILE"
    cases["still_image"] = run_operator()
    plate.source = "SEQUENCE"
    p.checkpoint_mobilenetv3 = os.path.join(config["work_dir"], "missing_checkpoint.pth")
    cases["engine_error"] = run_operator()
    p.checkpoint_mobilenetv3 = config["checkpoint"]
    return cases


def matte_and_render(config: dict[str, Any], scene: Any, mode: str, how: str, label: str = "") -> dict[str, Any]:
    settings = scene.rvm_matte
    settings.composite = mode
    outcome = run_operator(how)
    render = os.path.join(config["work_dir"], f"render_{label or mode.lower()}.exr")
    if outcome["error"] is None:
        render_frame(scene, config["render_frame"], render)
    job = read_job(scene)
    return {**outcome, "render": render, "job": job, "tree": describe_tree(scene), "image": describe_matte_image(job)}


class _ModalHost:
    """Stands in for the operator instance Blender would make, so ``modal()`` can be driven headless.

    The PyPI bpy has no windows, hence no event loop to deliver TIMER and ESC events; these calls
    deliver them by hand to the operator's own ``modal()``, unchanged.
    """

    def __init__(self, run: Any, operator_cls: Any) -> None:
        self._run, self._timer = run, None
        self.reports: list[list[Any]] = []
        self._queue, self._count, self._started = [], 1, 1  # one run, already started: what invoke() leaves
        for name in ("_end", "_finish", "_start_next", "_show", "_label"):
            setattr(self, name, types.MethodType(getattr(operator_cls, name), self))

    def report(self, kind: set[str], message: str) -> None:
        self.reports.append([sorted(kind), message])


def modal_case(
    config: dict[str, Any], engine_python: str, cancel_after: int | None, output_dir: str | None = None
) -> dict[str, Any]:
    """The interactive path: TIMER events pump the engine, Esc (after ``cancel_after`` frames) cancels.

    ``output_dir`` (else the scene's) is where this run's matte folder goes; the files in that folder
    afterwards are reported.
    """
    operators = sys.modules[MODULE + ".operators"]
    prefs().engine_python = engine_python
    settings = bpy.context.scene.rvm_matte
    scene_output_dir = settings.output_dir
    settings.output_dir = output_dir or scene_output_dir
    run = operators.MatteRun(bpy.context)
    settings.output_dir = scene_output_dir
    run.start()
    operators._active = run  # as invoke() leaves it: the button is greyed out while the engine runs
    host = _ModalHost(run, operators.RVM_OT_matte)
    timer = types.SimpleNamespace(type="TIMER", value="NOTHING")
    statuses, outcome = [run.status_line], None
    deadline = time.monotonic() + 300
    while outcome is None and time.monotonic() < deadline:
        if cancel_after is not None and run.engine.state.done >= cancel_after and run.cancelled_at is None:
            esc = types.SimpleNamespace(type="ESC", value="PRESS")
            assert operators.RVM_OT_matte.modal(host, bpy.context, esc) == {"RUNNING_MODAL"}
        result = operators.RVM_OT_matte.modal(host, bpy.context, timer)
        if result != {"PASS_THROUGH"}:
            outcome = sorted(result)
        if run.status_line != statuses[-1]:
            statuses.append(run.status_line)
    prefs().engine_python = config["engine_python"]
    return {
        "result": outcome,
        "reports": host.reports,
        "statuses": statuses,
        "exit_code": run.engine.poll(),
        "operator_free_again": operators._active is None,
        "tree": describe_tree(bpy.context.scene),
        "folder": os.path.dirname(run.output),
        "files": sorted(os.listdir(os.path.dirname(run.output))),
    }


def plate_tree(scene: Any) -> Any:
    return sys.modules[MODULE + ".compositor"].compositor_tree(scene, create=False)


def rename_case(config: dict[str, Any], scene: Any) -> dict[str, Any]:
    """Rename the plate node, matte it again; then rename it while the engine renders."""
    settings = scene.rvm_matte
    settings.source, settings.composite = "NODE", "ALPHA_OVER"
    tree = plate_tree(scene)
    before = describe_tree(scene)
    tree.nodes["Plate"].name = "Plate v2"
    settings.image_node = "Plate v2"
    renamed = matte_and_render(config, scene, "ALPHA_OVER", "EXEC_DEFAULT", "renamed")
    # The interactive path keeps running while the artist works: the node is renamed mid-render.
    operators = sys.modules[MODULE + ".operators"]
    run = operators.MatteRun(bpy.context)
    run.start()
    tree.nodes["Plate v2"].name = "Plate v3"
    settings.image_node = "Plate v3"
    code = run.engine.wait()
    reports: list[list[Any]] = []
    result = run.finish(bpy.context, code, lambda kind, message: reports.append([sorted(kind), message]))
    mid_run = {"result": sorted(result), "reports": reports, "tree": describe_tree(scene)}
    # A copy of the plate node (Shift+D copies its custom properties, the plate id among them).
    original = tree.nodes["Plate v3"]
    copy = tree.nodes.new("CompositorNodeImage")
    copy.image = original.image
    sys.modules[MODULE + ".compositor"].copy_frame_mapping(original, copy)
    copy.name = "Plate copy"
    for key in original.keys():
        copy[key] = original[key]
    settings.image_node = "Plate copy"
    copied = matte_and_render(config, scene, "ALPHA_OVER", "EXEC_DEFAULT", "copied")
    settings.image_node = "Plate v3"
    return {"before": before, "renamed": renamed, "mid_run": mid_run, "copied": copied}


def offset_case(scene: Any) -> dict[str, Any]:
    """The artist's Image node has offset 0 for a sequence numbered from 1001."""
    node = plate_tree(scene).nodes[scene.rvm_matte.image_node]
    offset = node.frame_offset
    node.frame_offset = 0
    try:
        return run_operator()
    finally:
        node.frame_offset = offset


def same_name_case(config: dict[str, Any], scene: Any) -> dict[str, Any]:
    """shotA/juggle.####.png, shotB/juggle.####.png and shotA/juggle.mp4, matted one after the other."""
    settings = scene.rvm_matte
    settings.source = "FILE"
    runs = {}
    for label in ("shot_a", "shot_b", "shot_a_movie"):
        settings.file_path = config[label]
        runs[label] = matte_and_render(config, scene, "ALPHA_OVER", "EXEC_DEFAULT", label)
    # Another frame of shot A's sequence is the same plate: the same node, folder and image.
    settings.file_path = config["shot_a"].replace(".1001.", ".1002.")
    runs["shot_a_other_frame"] = matte_and_render(config, scene, "ALPHA_OVER", "EXEC_DEFAULT", "shot_a_other_frame")
    return runs


def _frame_times(folder: str) -> dict[str, int]:
    return {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in sorted(os.listdir(folder)) if n.endswith(".exr")}


def foreign_folder_case(config: dict[str, Any], scene: Any, shot_a: dict[str, Any]) -> dict[str, Any]:
    """Shot A's matte folder made to look like another plate's, then like nobody's: both must be refused."""
    settings = scene.rvm_matte
    settings.source, settings.file_path = "FILE", config["shot_a"]
    folder = os.path.dirname(shot_a["job"]["output"])
    owner = os.path.join(folder, OWNER_FILE)
    kept = open(owner, "rb").read() if os.path.exists(owner) else None
    frames_before = _frame_times(folder)
    cases: dict[str, Any] = {"folder": folder}
    with open(owner, "w", encoding="utf-8") as handle:
        json.dump({"plate": "/elsewhere/juggle.####.png", "kind": "sequence"}, handle)
    cases["other_plate"] = run_operator()
    os.remove(owner)
    cases["no_owner"] = run_operator()
    cases["frames_untouched"] = _frame_times(folder) == frames_before
    if kept is not None:
        with open(owner, "wb") as handle:
            handle.write(kept)
    return cases


class _Layout:
    """Records what a panel's ``draw()`` puts on screen; every other layout call is accepted and ignored."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels

    def label(self, text: str = "", **_: Any) -> None:
        self.labels.append(text)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: _Layout(self.labels)


def panel_labels(scene: Any) -> list[str]:
    labels: list[str] = []
    bpy.types.RVM_PT_matte.draw(types.SimpleNamespace(layout=_Layout(labels)), bpy.context)
    return labels


def panel_case(config: dict[str, Any], scene: Any) -> dict[str, Any]:
    settings = scene.rvm_matte
    settings.source, settings.file_path = "FILE", config["shot_b"]
    shot_b = panel_labels(scene)
    settings.source = "NODE"
    node = panel_labels(scene)
    settings.image_node = "no such node"
    unknown = panel_labels(scene)
    settings.image_node = "Plate v3"
    return {"shot_b": shot_b, "node": node, "unknown_node": unknown}


def main() -> None:
    config_path, result_path = sys.argv[-2:]
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    result: dict[str, Any] = {"blender": bpy.app.version_string, "bpy_package": importlib.metadata.version("bpy")}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            install_extension(config["addon_dir"], scratch)
        scene = setup_scene(config["plate_first"], config["frames"], config["first_frame"])
        p = prefs()
        p.engine_python = config["engine_python"]
        p.checkpoint_mobilenetv3 = config["checkpoint"]
        p.device = "cpu"
        result["enums"] = {
            "preferences.device": enum_values(p, "device"),
            "scene.device": enum_values(scene.rvm_matte, "device"),
            "scene.precision": enum_values(scene.rvm_matte, "precision"),
            "scene.encoder": enum_values(scene.rvm_matte, "encoder"),
        }
        result["errors"] = error_cases(config, scene)
        scene.rvm_matte.background = config["background"]
        result["alpha_over"] = matte_and_render(config, scene, "ALPHA_OVER", "EXEC_DEFAULT")
        # The second run takes the plate from a file path: it must find the plate node, not add another.
        scene.rvm_matte.source = "FILE"
        scene.rvm_matte.file_path = config["plate_first"]
        result["set_alpha"] = matte_and_render(config, scene, "SET_ALPHA", "INVOKE_DEFAULT")
        # A movie from a file path: a second plate node, its own matte, now feeding the output.
        scene.rvm_matte.file_path = config["movie"]
        result["movie"] = matte_and_render(config, scene, "ALPHA_OVER", "EXEC_DEFAULT", "movie")
        result["modal"] = modal_case(config, config["engine_python"], cancel_after=None)
        # The plugins' fake engine, in its own folder: it writes a frame that is not a real EXR.
        result["cancel"] = modal_case(config, config["fake_engine"], cancel_after=1, output_dir="//rvm_cancel/")
        prefs().engine_python = config["engine_python"]
        result["rename"] = rename_case(config, scene)
        result["offset"] = offset_case(scene)
        result["same_name"] = same_name_case(config, scene)
        result["foreign"] = foreign_folder_case(config, scene, result["same_name"]["shot_a"])
        result["panel"] = panel_case(config, scene)
        result["registered"] = registered()
        import addon_utils  # on sys.path only once bpy is imported

        addon_utils.disable(MODULE, default_set=True)
        result["registered_after_disable"] = registered()
    except Exception:  # the test shows this instead of a bare non-zero exit
        result["driver_error"] = traceback.format_exc()
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
