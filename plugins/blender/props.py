"""Add-on preferences (per machine) and the per-scene RVM settings the panel edits (saved in the .blend)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, FloatVectorProperty, IntProperty, StringProperty

from . import compositor, jobspec
from .vendor.rvm_spec.job import DEVICES, FIELDS_BY_NAME, PASSES, PRECISIONS
from .vendor.rvm_spec.names import CHECKPOINT_ENV, DEFAULT_ENCODER, ENCODERS, OFFICIAL_CHECKPOINTS

# What the artist reads for each value the engine accepts; the values themselves are the contract's, so a
# device or precision the engine adds appears here (under its own name until it is given a label).
_DEVICE_LABELS = {
    "auto": ("Auto", "CUDA, then Apple MPS, then CPU: whatever the engine finds"),
    "cpu": ("CPU", "Slow but always there"),
    "cuda": ("CUDA", "An NVIDIA GPU"),
    "mps": ("Apple MPS", "Apple silicon GPU"),
}
_PRECISION_LABELS = {
    "fp32": ("Float 32", "Reference quality"),
    "fp16": ("Float 16", "Faster on GPUs"),
    "bf16": ("BFloat 16", "Faster on recent GPUs"),
}
_PASSES_LABELS = {
    "forward": ("Forward", "The shot in its own order, as the official network runs it"),
    "bidirectional": (
        "Bidirectional",
        "Forward and backward, the two mattes combined per frame (about twice the time)",
    ),
}
_ENCODER_LABELS = {
    "mobilenetv3": ("MobileNetV3", "Fast; the official default"),
    "resnet50": ("ResNet-50", "Slower, slightly better edges"),
}


def enum_items(values: tuple[str, ...], labels: dict[str, tuple[str, str]]) -> list[tuple[str, str, str]]:
    """EnumProperty items for the contract's allowed values, in its order."""
    return [(value, *labels.get(value, (value, ""))) for value in values]


def field_help(name: str) -> str:
    """A Job field's help as a Blender description (capitalised, no full stop, as Blender's own read)."""
    text = FIELDS_BY_NAME[name].help
    return text[:1].upper() + text[1:]


def matte_properties(name: str) -> dict[str, object]:
    """The settings of one matte: the Image node holding it, its channel and its inversion, from the contract."""
    label = name.title()
    channel = FIELDS_BY_NAME[f"{name}_channel"]
    return {
        f"{name}_node": StringProperty(
            name=label,
            description=f"{field_help(f'{name}_matte')}. The Image node holding it (a sequence or movie framed "
            "like the plate's node); empty: none",
        ),
        f"{name}_channel": StringProperty(
            name=f"{label} Channel",
            description=f"{field_help(channel.name)}; empty: that default",
            default=channel.default or "",
        ),
        f"invert_{name}": BoolProperty(
            name=f"Invert {label}",
            description=field_help(f"invert_{name}"),
            default=FIELDS_BY_NAME[f"invert_{name}"].default,
        ),
    }


_DEVICES = enum_items(DEVICES, _DEVICE_LABELS)


class RVMMattePreferences(bpy.types.AddonPreferences):
    """Where the engine lives: per machine, so a .blend moved between workstations keeps working."""

    bl_idname = __package__

    engine_python: StringProperty(  # type: ignore[valid-type]
        name="Engine Python",
        description="The python of an environment with rvm-vfx and torch installed (e.g. .venv/bin/python). "
        "Blender's own Python stays clean: the engine runs as a separate process",
        subtype="FILE_PATH",
    )
    checkpoint_mobilenetv3: StringProperty(  # type: ignore[valid-type]
        name="MobileNetV3 Checkpoint",
        description=f"{OFFICIAL_CHECKPOINTS['mobilenetv3']}, a TorchScript file or a TF.js model.json. "
        f"Empty: the engine's default (${CHECKPOINT_ENV} or its download cache)",
        subtype="FILE_PATH",
    )
    checkpoint_resnet50: StringProperty(  # type: ignore[valid-type]
        name="ResNet-50 Checkpoint",
        description=f"{OFFICIAL_CHECKPOINTS['resnet50']} or its TorchScript form. "
        f"Empty: {OFFICIAL_CHECKPOINTS['resnet50']} in the engine's cache",
        subtype="FILE_PATH",
    )
    device: EnumProperty(  # type: ignore[valid-type]
        name="Device", items=_DEVICES, default=FIELDS_BY_NAME["device"].default
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "engine_python")
        if not self.engine_python:
            layout.label(text="Point this at the python of a venv where `pip install rvm-vfx` was run", icon="INFO")
        layout.prop(self, "checkpoint_mobilenetv3")
        layout.prop(self, "checkpoint_resnet50")
        layout.prop(self, "device")


class RVMMatteSettings(bpy.types.PropertyGroup):
    """One shot's matte settings; the same knobs as the Nuke node, saved with the scene."""

    source: EnumProperty(  # type: ignore[valid-type]
        name="Source",
        items=[
            ("NODE", "Image Node", "The image (sequence or movie) of an Image node in this compositor"),
            ("FILE", "File", "A sequence (any one frame of it) or a movie on disk; an Image node is added for it"),
        ],
        default="NODE",
    )
    image_node: StringProperty(  # type: ignore[valid-type]
        name="Image Node", description="The plate's Image node; empty: the active node"
    )
    file_path: StringProperty(name="Plate", subtype="FILE_PATH")  # type: ignore[valid-type]
    encoder: EnumProperty(  # type: ignore[valid-type]
        name="Encoder",
        items=enum_items(ENCODERS, _ENCODER_LABELS),
        default=DEFAULT_ENCODER,
    )
    checkpoint: StringProperty(  # type: ignore[valid-type]
        name="Checkpoint",
        description="Override the encoder's checkpoint from Preferences for this scene",
        subtype="FILE_PATH",
    )
    downsample_auto: BoolProperty(  # type: ignore[valid-type]
        name="Auto Downsample",
        description="Let the engine choose the network's working resolution from the plate size",
        default=True,
    )
    downsample: FloatProperty(  # type: ignore[valid-type]
        name="Downsample",
        description="Network resolution as a fraction of the plate (0.25 for 4K, 0.4 for HD, 1 for small plates)",
        default=0.25,
        min=0.01,
        max=1.0,
    )
    preroll: IntProperty(  # type: ignore[valid-type]
        name="Pre-roll",
        description="Frames run before the first rendered frame (not written) so the network's memory is warm "
        "when the scene starts mid-plate",
        default=0,
        min=0,
        soft_max=100,
    )
    warmup: IntProperty(  # type: ignore[valid-type]
        name="Warm-up",
        description=field_help("warmup"),
        default=FIELDS_BY_NAME["warmup"].default,
        min=FIELDS_BY_NAME["warmup"].spec.minimum,
        soft_max=100,
    )
    passes: EnumProperty(  # type: ignore[valid-type]
        name="Passes",
        items=enum_items(PASSES, _PASSES_LABELS),
        default=FIELDS_BY_NAME["passes"].default,
    )
    input_colorspace: StringProperty(  # type: ignore[valid-type]
        name="Input Colour Space",
        description="The plate's colour space as the engine's OCIO config names it. Empty: taken from the "
        "image's Color Space setting",
    )
    device: EnumProperty(  # type: ignore[valid-type]
        name="Device",
        items=[("PREFS", "Preferences", "The device set in the add-on's preferences"), *_DEVICES],
        default="PREFS",
    )
    precision: EnumProperty(  # type: ignore[valid-type]
        name="Precision",
        items=enum_items(PRECISIONS, _PRECISION_LABELS),
        default=FIELDS_BY_NAME["precision"].default,
    )
    output_dir: StringProperty(  # type: ignore[valid-type]
        name="Output Folder",
        description="Where the EXR mattes go, one subfolder per plate; // is the blend file's folder",
        default="//rvm/",
        subtype="DIR_PATH",
    )
    overwrite: BoolProperty(  # type: ignore[valid-type]
        name="Overwrite", description="Replace the frames of an earlier matte of this plate", default=True
    )
    composite: EnumProperty(  # type: ignore[valid-type]
        name="Composite",
        items=[
            (compositor.MODE_ALPHA_OVER, "Alpha Over", "The matte's decontaminated foreground over a background"),
            (compositor.MODE_SET_ALPHA, "Set Alpha", "The original plate with the matte as its alpha"),
        ],
        default=compositor.MODE_ALPHA_OVER,
    )
    background: FloatVectorProperty(  # type: ignore[valid-type]
        name="Background",
        description="Alpha Over's background until a background plate is plugged in",
        subtype="COLOR",
        size=4,
        min=0.0,
        default=(0.0, 0.0, 0.0, 0.0),
    )


for _matte in jobspec.MATTES:  # Blender reads a PropertyGroup's settings from its annotations when it registers
    RVMMatteSettings.__annotations__.update(matte_properties(_matte))

CLASSES = (RVMMattePreferences, RVMMatteSettings)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.rvm_matte = bpy.props.PointerProperty(type=RVMMatteSettings)


def unregister() -> None:
    del bpy.types.Scene.rvm_matte
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
