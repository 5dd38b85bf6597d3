"""The RVM panel in the Compositor's sidebar (N panel, "RVM" tab)."""

from __future__ import annotations

import bpy

from . import compositor, jobspec, operators, sequencer


def matte_folder(context: bpy.types.Context) -> str | None:
    """The folder the chosen plate's matte goes to, as the setting spells it (``//rvm/juggle-1a2b3c4d/``).

    Shown because the folder carries a hash of the plate's path that the artist cannot guess.
    """
    plate = operators.planned_plate(context)
    if plate is None or not context.scene.rvm_matte.output_dir:
        return None
    return plate.folder(context.scene.rvm_matte.output_dir) + "/"


class RVM_PT_matte(bpy.types.Panel):
    bl_label = "RVM Matte"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "RVM"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        space = context.space_data
        return getattr(space, "tree_type", None) == "CompositorNodeTree"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.rvm_matte

        try:
            prefs = operators.addon_preferences(context)
        except operators.RunError:
            prefs = None
        if prefs is None or not prefs.engine_python:
            box = layout.box()
            box.label(text="Set the engine's Python first", icon="ERROR")
            box.operator("preferences.addon_show", text="Open Preferences", icon="PREFERENCES").module = __package__

        layout.prop(settings, "source", expand=True)
        if settings.source == "FILE":
            layout.prop(settings, "file_path")
        else:
            tree = compositor.compositor_tree(context.scene, create=False)
            if tree is not None:
                layout.prop_search(settings, "image_node", tree, "nodes", icon="NODE")
            else:
                layout.label(text="No compositor nodes yet", icon="INFO")

        draw_engine_settings(layout, settings)
        draw_matte_settings(layout, settings, compositor.compositor_tree(context.scene, create=False))
        col = layout.column(heading="Output")
        col.prop(settings, "output_dir")
        folder = matte_folder(context)
        if folder is not None:
            col.label(text=f"Matte folder: {folder}", icon="FILE_FOLDER")
        col.prop(settings, "overwrite")
        col.prop(settings, "composite")
        if settings.composite == compositor.MODE_ALPHA_OVER:
            col.prop(settings, "background")

        scene = context.scene
        layout.label(text=f"Frames {scene.frame_start}-{scene.frame_end} (scene range)", icon="TIME")
        row = layout.row()
        row.scale_y = 1.5
        row.operator(operators.RVM_OT_matte.bl_idname, icon="NODE_COMPOSITING")


def draw_engine_settings(layout: bpy.types.UILayout, settings: bpy.types.PropertyGroup) -> None:
    """The model settings both panels show (the scene's, shared by the compositor and the sequencer)."""
    col = layout.column(heading="Model")
    col.prop(settings, "encoder")
    col.prop(settings, "checkpoint")
    col.prop(settings, "downsample_auto")
    sub = col.column()
    sub.active = not settings.downsample_auto
    sub.prop(settings, "downsample")
    col.prop(settings, "preroll")
    col.prop(settings, "warmup")
    col.prop(settings, "passes")
    col.prop(settings, "input_colorspace")
    col.prop(settings, "device")
    col.prop(settings, "precision")


def draw_matte_settings(layout: bpy.types.UILayout, settings: bpy.types.PropertyGroup, tree: object) -> None:
    """Garbage, core and hold-out: an Image node each (the compositor's), its channel and its inversion."""
    col = layout.column(heading="Mattes")
    for name in jobspec.MATTES:
        if tree is not None:
            col.prop_search(settings, f"{name}_node", tree, "nodes", icon="IMAGE_DATA")
        else:
            col.prop(settings, f"{name}_node")
        sub = col.column()
        sub.active = bool(getattr(settings, f"{name}_node"))
        sub.prop(settings, f"{name}_channel")
        sub.prop(settings, f"invert_{name}")


class RVM_PT_sequencer_matte(bpy.types.Panel):
    """The RVM tab of the Video Sequencer's sidebar: the same settings, for the selected strip."""

    bl_label = "RVM Matte"
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "RVM"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.rvm_matte
        draw_engine_settings(layout, settings)
        col = layout.column(heading="Output")
        col.prop(settings, "output_dir")
        col.prop(settings, "overwrite")
        if not sequencer.sequencer_is_linear(context.scene):
            layout.label(text="Sequencer colour space is not linear: Alpha Over will not be", icon="ERROR")
        row = layout.row()
        row.scale_y = 1.5
        row.operator(sequencer.RVM_OT_sequencer_matte.bl_idname, icon="SEQUENCE")


CLASSES = (RVM_PT_matte, RVM_PT_sequencer_matte)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
