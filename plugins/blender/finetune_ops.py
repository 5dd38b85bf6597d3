"""The "Train on keyframes" operator: fine-tune the network on the shot's roto, then matte it with those weights.

The roto comes from a compositor node the artist names in the RVM panel:

* an Image node of roto mattes numbered like the plate: every frame of it on disk is a keyframe, read by
  the engine as it is;
* a Mask node: its mask is rendered, at the scene frames listed in Keyframes, to EXR (one channel) in a
  scratch scene of the plate's size, numbered by the plate frame the plate's Image node shows there.

The operator is two engine runs in a row on :class:`operators.EngineOperator` (so it has the matte's
progress bar, status line and Esc): ``rvm-vfx finetune`` into ``<matte folder>/<plate>_trained.pth``, then
the matte exactly as "RVM Matte" renders it, with that checkpoint. Esc during training stops it (the
engine keeps its best weights) and nothing is rendered.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import bpy
from bpy.props import FloatProperty, IntProperty, PointerProperty, StringProperty

from . import compositor, jobspec, training
from .engine import EngineError
from .operators import EngineOperator, EngineRun, MatteRun, RunError, _abspath, engine_python
from .vendor.rvm_spec import format_frame
from .vendor.rvm_spec.finetune import FIELDS_BY_NAME

IMAGE_NODE, MASK_NODE = "CompositorNodeImage", "CompositorNodeMask"


def _help(name: str) -> str:
    text = FIELDS_BY_NAME[name].help
    return text[:1].upper() + text[1:]


class RVMFinetuneSettings(bpy.types.PropertyGroup):
    """The training's settings, saved with the scene."""

    keyframes_node: StringProperty(  # type: ignore[valid-type]
        name="Roto Node",
        description="The roto to learn: an Image node of mattes numbered like the plate (every frame on disk "
        "is a keyframe), or a Mask node (rendered at the Keyframes frames)",
    )
    keyframes: StringProperty(  # type: ignore[valid-type]
        name="Keyframes",
        description="Scene frames at which a Mask node's roto is right, e.g. 1,12,24 (an Image node's own "
        "frames are its keyframes)",
    )
    iterations: IntProperty(  # type: ignore[valid-type]
        name="Training Steps",
        description=_help("iterations"),
        default=FIELDS_BY_NAME["iterations"].default,
        min=FIELDS_BY_NAME["iterations"].spec.minimum,
        soft_max=1000,
    )
    time_limit: FloatProperty(  # type: ignore[valid-type]
        name="Time Limit (min)",
        description=_help("time_limit"),
        default=FIELDS_BY_NAME["time_limit"].default,
        min=0.1,
        soft_max=60.0,
    )


# ------------------------------------------------------------------------------------------ the roto


def _roto_node(tree: Any, name: str) -> Any:
    name = name.strip()
    if not name:
        raise RunError("choose the roto's node (an Image node of mattes, or a Mask node) in Roto Node")
    node = tree.nodes.get(name)
    if node is None:
        raise RunError(f"the roto node {name!r} is not in the compositor")
    if node.bl_idname == IMAGE_NODE and node.image is not None:
        return node
    if node.bl_idname == MASK_NODE and node.mask is not None:
        return node
    raise RunError(f"the roto node {name!r} is neither an Image node with an image nor a Mask node with a mask")


def _plate_frame(scene_frame: int, plate_node: Any) -> int:
    """The plate frame the plate's Image node shows at a scene frame (its start, offset and duration)."""
    return jobspec.image_frame(
        scene_frame,
        start=plate_node.frame_start,
        offset=plate_node.frame_offset,
        duration=max(plate_node.frame_duration, 1),
        cyclic=plate_node.use_cyclic,
    )


def render_mask(mask: Any, size: tuple[int, int], frames: dict[int, int], pattern: str) -> list[str]:
    """Render ``mask`` at each scene frame (key) to EXR named by its plate frame (value), in a scratch scene.

    The artist's scene and compositor are left as they are; the scratch scene composites nothing but the
    mask (no Render Layers, no camera needed), one channel, linear float, exactly the mask's values.
    """
    scene = bpy.data.scenes.new("RVM keyframes")
    written = []
    try:
        scene.render.resolution_x, scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
        tree = compositor.compositor_tree(scene)
        for node in [n for n in tree.nodes if n.bl_idname not in ("CompositorNodeComposite", "NodeGroupOutput")]:
            tree.nodes.remove(node)
        node = tree.nodes.new(MASK_NODE)
        node.mask = mask
        tree.links.new(node.outputs[0], compositor.output_socket(tree))
        settings = scene.render.image_settings
        settings.file_format, settings.color_mode, settings.color_depth = "OPEN_EXR", "BW", "32"
        os.makedirs(os.path.dirname(pattern), exist_ok=True)
        for scene_frame, plate_frame in sorted(frames.items()):
            path = format_frame(pattern, plate_frame)
            scene.frame_set(scene_frame)
            scene.render.filepath = path
            bpy.ops.render.render(write_still=True, scene=scene.name)
            if not os.path.isfile(path):
                raise RunError(f"the Mask {mask.name!r} could not be rendered at frame {scene_frame} to {path}")
            written.append(path)
    finally:
        group = scene.compositing_node_group if compositor.uses_node_group_api() else None
        bpy.data.scenes.remove(scene)
        if group is not None and group.users == 0:
            bpy.data.node_groups.remove(group)
    return written


# ------------------------------------------------------------------------------------------ the runs


class TrainRun(EngineRun):
    """``rvm-vfx finetune`` on the plate of ``matte``'s run: the first of the operator's two runs."""

    def __init__(self, context: bpy.types.Context, matte: MatteRun) -> None:
        scene = context.scene
        settings = scene.rvm_finetune
        tree = compositor.compositor_tree(scene)
        roto = _roto_node(tree, settings.keyframes_node)
        plate_node = tree.nodes.get(matte.plate_node_name)
        self.scene_name = scene.name
        self.plate = matte.plate
        self.output = matte.output
        self.source_name = roto.name
        self.frames, self.first_frame = matte.frames, matte.first_frame
        self.cancelled_at = None
        self.checkpoint = training.trained_checkpoint(matte.output, matte.plate.stem)
        self.mask_frames: dict[int, int] = {}
        self.mask = None
        try:
            if roto.bl_idname == IMAGE_NODE:
                image = roto.image
                roto_plate = jobspec.plate_for(_abspath(image.filepath, image.library), image.source, image.name)
                if roto_plate.kind != jobspec.SEQUENCE:
                    raise RunError(f"the roto node {roto.name!r} holds a movie: keyframes must be an image sequence")
                keyframes = roto_plate.input
            else:
                self.mask = roto.mask
                self.mask_size = tuple(plate_node.image.size)
                keyframes = training.keyframe_list(settings.keyframes)
                outside = [f for f in keyframes if not scene.frame_start <= f <= scene.frame_end]
                if outside:
                    raise RunError(
                        f"Keyframes: frame {outside[0]} is outside the scene's frame range "
                        f"{scene.frame_start}-{scene.frame_end}"
                    )
                self.mask_frames = {f: _plate_frame(f, plate_node) for f in keyframes}
                keyframes = training.keyframes_pattern(matte.output, matte.plate.stem)
            self.keyframes = keyframes
            finetune = training.finetune_settings(matte.job, keyframes, settings.iterations, settings.time_limit)
            self.engine = training.FinetuneProcess(engine_python(context), matte.plate.input, self.checkpoint, finetune)
        except (jobspec.JobSpecError, EngineError) as exc:
            raise RunError(str(exc)) from None

    def start(self) -> None:
        folder = os.path.dirname(self.output)
        try:
            jobspec.write_output_owner(folder, self.plate)  # the matte folder is this plate's, as a render's is
        except OSError as exc:
            raise RunError(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from None
        if self.mask is not None:
            render_mask(self.mask, self.mask_size, self.mask_frames, self.keyframes)
        try:
            self.engine.start()
        except EngineError as exc:
            raise RunError(str(exc)) from None

    @property
    def status_line(self) -> str:
        if self.cancelled_at is not None:
            return "RVM Matte: stopping the training after its current step…"
        return self.engine.state.status_line()

    def finish(self, context: bpy.types.Context, code: int, report: Any) -> set[str]:
        state = self.engine.state
        if self.cancelled_at is not None or state.stopped:
            report({"WARNING"}, f"RVM Matte: training cancelled after {state.done} of {state.total} steps; "
                                "nothing was rendered")  # fmt: skip
            return {"CANCELLED"}
        failure = self.engine.failure(code)
        if failure is not None:
            report({"ERROR"}, f"RVM Matte training failed: {failure}")
            return {"CANCELLED"}
        for message in state.warnings[:5]:
            report({"WARNING"}, f"RVM Matte: {message}")
        loss = f", loss {state.loss:.4f}" if state.loss is not None else ""
        report({"INFO"}, f"RVM Matte: trained {state.steps} steps{loss} → {self.checkpoint}")
        return {"FINISHED"}


class RVM_OT_finetune(EngineOperator, bpy.types.Operator):
    """Fine-tune the network on this shot's roto keyframes, then matte the plate with the trained weights"""

    bl_idname = "rvm.finetune"
    bl_label = "Train on Keyframes"
    bl_options = {"REGISTER", "UNDO"}
    run_noun = "stage"

    def make_runs(self, context: bpy.types.Context) -> list[EngineRun]:
        matte = MatteRun(context)
        train = TrainRun(context, matte)
        try:
            matte.job = dataclasses.replace(matte.job, checkpoint=train.checkpoint)
        except ValueError as exc:  # the Job's own checks (an InputError is a ValueError here)
            raise RunError(str(exc)) from None
        return [train, matte]


class RVM_PT_finetune(bpy.types.Panel):
    bl_label = "Train on Keyframes"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "RVM"
    bl_parent_id = "RVM_PT_matte"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.rvm_finetune
        tree = compositor.compositor_tree(context.scene, create=False)
        if tree is not None:
            layout.prop_search(settings, "keyframes_node", tree, "nodes", icon="NODE")
        node = tree.nodes.get(settings.keyframes_node) if tree is not None and settings.keyframes_node else None
        if node is None or node.bl_idname == MASK_NODE:
            layout.prop(settings, "keyframes")
        layout.prop(settings, "iterations")
        layout.prop(settings, "time_limit")
        layout.operator(RVM_OT_finetune.bl_idname, icon="MOD_MASK")


CLASSES = (RVMFinetuneSettings, RVM_OT_finetune, RVM_PT_finetune)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.rvm_finetune = PointerProperty(type=RVMFinetuneSettings)


def unregister() -> None:
    del bpy.types.Scene.rvm_finetune
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
