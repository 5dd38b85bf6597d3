"""Every compositor API difference between Blender 4.2-4.x and 5.x, in one place.

Blender 5.0 made the compositor a node group assigned to ``scene.compositing_node_group`` whose Group
Output is the result (the Composite node is gone) and turned node options into input sockets (Alpha
Over's foreground/background sockets got names, Set Alpha's mode became a "Type" menu socket). The
rest of the add-on asks this module for "the tree", "the output socket" and "an alpha-over" and never
looks at the version itself.
"""

from __future__ import annotations

import uuid
from typing import Any

import bpy

#: The modes the operator offers; both read the matte's premultiplied RGBA as Blender renders it.
MODE_ALPHA_OVER = "ALPHA_OVER"
MODE_SET_ALPHA = "SET_ALPHA"

# The nodes we own are found again by the plate node's id, never by a name the artist may change, so that
# running the operator again (after a rename too) updates them instead of piling up copies.
_MATTE_NODE = "RVM Matte"
_MIX_NODE = "RVM Composite"
PLATE_ID_KEY = "rvm_id"  # on the plate node: a generated id that survives renames (and is saved in the .blend)
_OWNER_KEY = "rvm_plate_id"  # on our matte and mix nodes: the plate node's id
_OWNER_NAME_KEY = "rvm_plate_name"  # ... and its name when they were last wired (tells a copy from its original)
_LEGACY_OWNER_KEY = "rvm_matte_plate"  # add-on 0.1.0 keyed our nodes by the plate node's name


def uses_node_group_api() -> bool:
    """True on Blender 5.0 and later (``scene.compositing_node_group``)."""
    return "compositing_node_group" in bpy.types.Scene.bl_rna.properties


def compositor_tree(scene: Any, *, create: bool = True) -> Any:
    """The scene's compositor node tree, created (and switched on) when asked and missing."""
    if uses_node_group_api():
        tree = scene.compositing_node_group
        if tree is None and create:
            tree = bpy.data.node_groups.new("Compositing", "CompositorNodeTree")
            scene.compositing_node_group = tree
        if create and tree is not None:  # (a panel's draw() may look but not write)
            scene.render.use_compositing = True
        return tree
    if create and not scene.use_nodes:
        scene.use_nodes = True
    if create and scene.node_tree is not None:
        scene.render.use_compositing = True
    return scene.node_tree


def output_socket(tree: Any) -> Any:
    """The input socket whose image is the compositor's result (Group Output in 5.x, Composite before)."""
    if uses_node_group_api():
        outputs = [n for n in tree.nodes if n.bl_idname == "NodeGroupOutput"]
        node = next((n for n in outputs if n.is_active_output), outputs[0] if outputs else None)
        if not any(item.item_type == "SOCKET" and item.in_out == "OUTPUT" for item in tree.interface.items_tree):
            tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        if node is None:
            node = tree.nodes.new("NodeGroupOutput")
            node.location = (600, 0)
        return next(s for s in node.inputs if s.bl_idname != "NodeSocketVirtual")
    node = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeComposite"), None)
    if node is None:
        node = tree.nodes.new("CompositorNodeComposite")
        node.location = (600, 0)
    return node.inputs["Image"]


def _alpha_over_sockets(node: Any) -> tuple[Any, Any]:
    """(background, foreground) inputs of an Alpha Over node."""
    if "Foreground" in node.inputs:
        return node.inputs["Background"], node.inputs["Foreground"]
    return node.inputs[1], node.inputs[2]  # 4.x: Fac, Image (background), Image (foreground)


def _make_apply_mask(node: Any) -> None:
    """Set Alpha in the mode that multiplies the image by the new alpha (a premultiplied result)."""
    if "Type" in node.inputs:
        node.inputs["Type"].default_value = "Apply Mask"
    else:
        node.mode = "APPLY"


def plate_id(tree: Any, plate_node: Any) -> str:
    """The plate node's id, made on first use.

    A copied node (Shift+D) carries its original's id; when another plate node has it too, it stays
    with the node whose name our nodes recorded, and this one gets its own (a new matte, nothing lost).
    """
    pid = plate_node.get(PLATE_ID_KEY)
    if pid and any(n != plate_node and n.get(PLATE_ID_KEY) == pid for n in tree.nodes):
        if not any(n.get(_OWNER_KEY) == pid and n.get(_OWNER_NAME_KEY) == plate_node.name for n in tree.nodes):
            pid = None
    if not pid:
        pid = uuid.uuid4().hex
        plate_node[PLATE_ID_KEY] = pid
    return str(pid)


def find_plate_node(tree: Any, pid: str, name: str = "") -> Any:
    """The plate node with this id, wherever the artist renamed it to; None once it is deleted.

    Of a node and its not yet matted copy (same id), the one still called ``name`` is taken.
    """
    nodes = [n for n in tree.nodes if n.get(PLATE_ID_KEY) == pid]
    return next((n for n in nodes if n.name == name), nodes[0] if nodes else None)


def _is_owned(node: Any, pid: str, plate_node: Any) -> bool:
    owner = node.get(_OWNER_KEY)
    if owner is not None:
        return owner == pid
    return node.get(_LEGACY_OWNER_KEY) == plate_node.name


def _owned(tree: Any, base: str, bl_idname: str, plate_node: Any) -> Any:
    """The node of this kind we made for this plate earlier, or a new one; named after the plate as it is now."""
    pid = plate_id(tree, plate_node)
    node = next((n for n in tree.nodes if n.bl_idname == bl_idname and _is_owned(n, pid, plate_node)), None)
    if node is None:
        node = tree.nodes.new(bl_idname)
    name = f"{base} ({plate_node.name})" if plate_node.name else base
    if node.name != name:
        node.name = name
    node.label = node.name
    node[_OWNER_KEY] = pid
    node[_OWNER_NAME_KEY] = plate_node.name
    return node


def _drop_owned(tree: Any, bl_idname: str, plate_node: Any) -> None:
    pid = plate_id(tree, plate_node)
    for node in [n for n in tree.nodes if n.bl_idname == bl_idname and _is_owned(n, pid, plate_node)]:
        tree.nodes.remove(node)


def add_plate_node(tree: Any, image: Any) -> Any:
    node = tree.nodes.new("CompositorNodeImage")
    node.image = image
    node.name = node.label = image.name
    node.location = (-400, 200)
    return node


def copy_frame_mapping(src: Any, dst: Any) -> None:
    """Give the matte node the plate node's frame mapping, so both show the same frame at every scene frame."""
    for attr in ("frame_start", "frame_offset", "frame_duration", "use_cyclic", "use_auto_refresh"):
        setattr(dst, attr, getattr(src, attr))


def wire_matte(
    tree: Any, plate_node: Any, matte_image: Any, *, mode: str, background: tuple[float, float, float, float]
) -> Any:
    """plate -> matte -> Alpha Over or Set Alpha -> output; returns the node feeding the output.

    Alpha Over: the matte's decontaminated, premultiplied foreground over ``background`` (an unlinked
    socket, ready for a background plate). Set Alpha: the original plate multiplied by the matte's alpha.
    """
    matte = _owned(tree, _MATTE_NODE, "CompositorNodeImage", plate_node)
    matte.image = matte_image
    copy_frame_mapping(plate_node, matte)
    matte.location = (plate_node.location.x, plate_node.location.y - 320)

    mix_type = "CompositorNodeAlphaOver" if mode == MODE_ALPHA_OVER else "CompositorNodeSetAlpha"
    other = "CompositorNodeSetAlpha" if mode == MODE_ALPHA_OVER else "CompositorNodeAlphaOver"
    _drop_owned(tree, other, plate_node)
    mix = _owned(tree, _MIX_NODE, mix_type, plate_node)
    mix.location = (plate_node.location.x + 350, plate_node.location.y - 120)
    links = tree.links
    if mode == MODE_ALPHA_OVER:
        bg, fg = _alpha_over_sockets(mix)
        for link in list(bg.links):
            if link.from_node == plate_node:  # a stale link from an earlier Set Alpha wiring
                links.remove(link)
        if not bg.is_linked:
            bg.default_value = background
        links.new(matte.outputs["Image"], fg)
    else:
        _make_apply_mask(mix)
        links.new(plate_node.outputs["Image"], mix.inputs["Image"])
        links.new(matte.outputs["Alpha"], mix.inputs["Alpha"])
    links.new(mix.outputs["Image"], output_socket(tree))
    return mix
