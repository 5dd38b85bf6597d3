"""What the RVM Matte node decides, kept free of Nuke so that every decision can be tested directly.

Nuke cannot run in CI, so the glue in ``node.py`` only reads knobs and calls these functions; everything
that turns knob values into a render (paths, frame ranges, colour spaces, the Job, farm tickets) lives
here. This module must stay importable by Nuke's own Python (3.9 in Nuke 14) and must never import
``rvm_vfx``, torch or numpy: the engine lives in another environment and is reached as a subprocess.
What the engine knows about a Job (its fields and their rules, frame ranges, file names, the weights
cache) comes from ``vendor.rvm_spec``, the engine's own contract package vendored here by ``tools/vendor_spec.py``:
a knob the engine would refuse is refused here, before any work, with the engine's message.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .vendor.rvm_spec import InputError, Job, format_frame
from .vendor.rvm_spec.frames import frame_bounds, frame_digits, has_frame_token, range_parts, split_pattern
from .vendor.rvm_spec.job import FIELDS, FIELDS_BY_NAME
from .vendor.rvm_spec.names import (
    CHECKPOINT_ENV,
    DEFAULT_ENCODER,
    ENCODERS,
    OFFICIAL_CHECKPOINTS,
    is_video,
    official_checkpoint_path,
)

__all__ = [
    "KNOBS",
    "PluginError",
    "ColourNames",
    "Source",
    "build_job",
    "find_source",
    "make_job_id",
    "matte_read_knobs",
    "write_ticket",
]


class PluginError(Exception):
    """A problem the artist can fix (a knob, a preference, an unsaved script); shown as a message."""


# ----------------------------------------------------------------------------------------------- knobs

# Menu label -> the Job's output_mode: artists read the label, the engine reads the value. The labels are
# what a .nk script saves, so they stay as they are whatever the engine calls its modes.
OUTPUT_MODES = {"premultiplied RGBA": "premultiplied", "alpha only": "alpha"}

ENGINE_PYTHON_ENV = "RVM_VFX_PYTHON"
WATCH_FOLDER_ENV = "RVM_VFX_WATCH_FOLDER"
PREF_ENGINE_PYTHON = "rvm_engine_python"
PREF_WATCH_FOLDER = "rvm_watch_folder"

DEFAULT_OUTPUT = "<script folder>/rvm/<node name>/<node name>.####.exr"

KnobSpec = namedtuple("KnobSpec", "name kind label default choices tooltip")


def _field_enum(name: str, label: str) -> KnobSpec:
    """A menu knob that is a Job field as it is: the engine's default, values and help."""
    return _field_knob(name, "enum", label)


def _field_knob(name: str, kind: str, label: str) -> KnobSpec:
    """A knob that is a Job field as it is: the engine's default, values and help."""
    field = FIELDS_BY_NAME[name]
    return KnobSpec(name, kind, label, field.default, field.choices, _sentence(field.help))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


#: The node's optional matte inputs, in input order after the plate's: the Job's mattes, in the contract's order,
#: each named as its fields start (``garbage_matte``, ``garbage_channel``, ``invert_garbage``).
MATTES = tuple(f.name[: -len("_matte")] for f in FIELDS if f.name.endswith("_matte") and f.path is not None)
#: What Nuke's channel knob holds when no channel is picked: the engine's own choice of channel then applies.
NO_CHANNEL = "none"


def _matte_knobs(name: str) -> tuple[KnobSpec, KnobSpec]:
    """The channel menu and invert box of one matte input: the engine's help, and its default as Nuke spells it."""
    matte, channel = FIELDS_BY_NAME[f"{name}_matte"], FIELDS_BY_NAME[f"{name}_channel"]
    tooltip = (
        f"{_sentence(matte.help)} From the node's '{name}' input, when one is connected. "
        f"{_sentence(channel.help)} 'none' leaves that choice to the engine."
    )
    default = NO_CHANNEL if channel.default is None else channel.default
    invert = _field_knob(f"invert_{name}", "bool", "invert")
    return KnobSpec(channel.name, "channel", f"{name} channel", default, (), tooltip), invert


#: Every knob of the node, in panel order. ``node.py`` creates them from this table and reads settings
#: back by these names, so a knob cannot be added on one side and forgotten on the other.
KNOBS = (
    KnobSpec("checkpoint", "file", "checkpoint", "", (),
             "Weights file (.pth, .torchscript or TF.js model.json). Empty: the engine's default checkpoint "
             f"(${CHECKPOINT_ENV}, else the official file in the engine's cache) for the chosen encoder."),
    KnobSpec("encoder", "enum", "encoder", DEFAULT_ENCODER, ENCODERS,
             "Which official network to use when 'checkpoint' is empty. A checkpoint file names its own."),
    KnobSpec("downsample_auto", "bool", "auto downsample", True, (),
             "Let the engine pick the downsample ratio from the plate size."),
    KnobSpec("downsample", "double", "downsample ratio", 0.25, (),
             "Resolution the network sees, as a fraction of the plate (0, 1]. Lower is faster and coarser."),
    KnobSpec("preroll", "int", "pre-roll", 0, (),
             "Frames run before the first rendered frame to warm the network's memory, then thrown away."),
    _field_knob("warmup", "int", "warm-up"),
    _field_enum("passes", "passes"),
    _field_enum("device", "device"),
    _field_enum("precision", "precision"),
    KnobSpec("input_colorspace", "string", "input colour space", "", (),
             "Colour space of the plate. Empty: the upstream Read's colorspace, resolved in the script's "
             "OCIO config. Ignored when the input is precomped (the precomp is scene-linear)."),
    KnobSpec("output", "file", "output file", "", (), f"Matte EXR sequence. Empty: {DEFAULT_OUTPUT}"),
    KnobSpec("frame_range", "string", "frame range", "", (),
             "Frames to render, e.g. 1001-1100. Empty: the input's frame range."),
    KnobSpec("output_mode", "enum", "output mode", "premultiplied RGBA", tuple(OUTPUT_MODES),
             "Premultiplied RGBA (foreground times alpha), or the alpha channel alone."),
    *(knob for name in MATTES for knob in _matte_knobs(name)),
    KnobSpec("engine_python", "file", "engine Python", "", (),
             "Python of the environment where rvm-vfx and torch are installed. Empty: the preference "
             f"(Preferences > RVM), else ${ENGINE_PYTHON_ENV}, else the rvm-vfx command on PATH."),
    KnobSpec("farm_priority", "int", "farm priority", 0, (), "Priority of the farm ticket; higher runs first."),
    KnobSpec("render", "button", "Render matte", None, (), "Render the matte here, with a progress bar."),
    KnobSpec("send_to_farm", "button", "Send to farm", None, (), "Write a ticket into the farm's watch folder."),
    KnobSpec("reload", "button", "Reload", None, (), "Re-read the matte frames, e.g. as farm frames land."),
    KnobSpec("status", "text", "", "", (), ""),
)  # fmt: skip

#: Kinds whose knobs hold a setting (the rest are buttons and labels).
VALUE_KINDS = ("file", "string", "enum", "bool", "double", "int", "channel")

#: Preferences > RVM, in panel order: the tab, then the settings that are per machine, not per script.
PREFERENCES = (
    KnobSpec("rvm_preferences", "tab", "RVM", None, (), ""),
    KnobSpec(PREF_ENGINE_PYTHON, "file", "engine Python", "", (),
             "The python executable of the environment where rvm-vfx and torch are installed "
             "(e.g. /opt/rvm-vfx/.venv/bin/python). torch never runs inside Nuke."),
    KnobSpec(PREF_WATCH_FOLDER, "file", "farm watch folder", "", (),
             f"The render worker's watch folder. Empty: ${WATCH_FOLDER_ENV}."),
)  # fmt: skip

PLUGIN_MISSING = (
    "RVM Matte: the rvm-vfx Nuke plugin is not installed in this Nuke (its folder is not on the plugin path), "
    "so this button cannot run here. The node still shows the matte rendered so far."
)


def knob_script(call: str, missing_message: str | None = None) -> str:
    """Python for a knob (a button, knobChanged) that calls ``rvm_nuke.node.<call>`` if the plugin is here.

    The script is saved in the .nk file, so it also runs on a Nuke without the plugin (the farm, a
    colleague): there the import fails, and the knob does nothing (or says so, for a button).
    """
    otherwise = f"    nuke.message({missing_message!r})\n" if missing_message else "    pass\n"
    return f"try:\n    import rvm_nuke.node\nexcept ImportError:\n{otherwise}else:\n    rvm_nuke.node.{call}\n"


def default_settings() -> dict[str, Any]:
    return {k.name: k.default for k in KNOBS if k.kind in VALUE_KINDS}


def normalise_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Knob values with defaults filled in and types fixed (Nuke's Int knobs can return floats)."""
    settings = default_settings()
    for spec in KNOBS:
        if spec.kind not in VALUE_KINDS or raw.get(spec.name) is None:
            continue
        value = raw[spec.name]
        if spec.kind in ("file", "string", "channel"):
            value = str(value).strip()
        elif spec.kind == "enum":
            value = str(value)
            # A knob that is a Job field is checked by the Job, with the engine's message.
            if value not in spec.choices and spec.name not in FIELDS_BY_NAME:
                raise PluginError(f"knob '{spec.label}': expected one of {', '.join(spec.choices)}, got {value!r}")
        elif spec.kind == "bool":
            value = bool(value)
        elif spec.kind == "int":
            value = int(round(float(value)))
        elif spec.kind == "double":
            value = float(value)
        settings[spec.name] = value
    return settings


# ---------------------------------------------------------------------------------------- frame ranges


def frames_text(frames: str | None, first: int, last: int) -> str:
    """The range to render: the knob's text when given (the Job checks it), else the input's range."""
    if frames:
        return ",".join(range_parts(frames))
    if last < first:
        raise PluginError(f"the input's frame range {first}-{last} is empty")
    return f"{first}-{last}"


# ------------------------------------------------------------------------------------ sequence paths


def file_knob_pattern(raw: str, evaluated: str, frame: int) -> str:
    """A file knob's sequence pattern from Nuke's evaluation of it at ``frame``.

    Nuke evaluates TCL (``[value root.name]``) and puts the frame number where the frame token was; the
    engine needs the pattern, so the number at the token's place is turned back into the token as typed.
    An evaluation that kept a token (Nuke's ``%04d`` notation) and a path without one are returned as they are.
    """
    name = os.path.basename(raw)
    try:
        parts = split_pattern(name)
    except InputError as exc:
        raise PluginError(str(exc)) from None
    if parts is None or has_frame_token(evaluated):
        return evaluated
    number = frame_digits(frame, parts.padding)
    after = parts.suffix
    typed = name[len(parts.prefix) : len(name) - len(after)]  # the token as typed
    head, tail = os.path.split(evaluated)
    if "[" not in after and tail.endswith(number + after):
        at = len(tail) - len(number + after)
    else:  # TCL after the token: the last such number in the file name
        at = tail.rfind(number)
    if at < 0:
        raise PluginError(
            f"{raw!r} evaluates to {evaluated!r} at frame {frame}, without the frame number {number} in its file name"
        )
    return os.path.join(head, tail[:at] + typed + tail[at + len(number) :])


def file_knob_value(raw: str, evaluate_at: Callable[[int], str], frame: int) -> str:
    """A file knob's value with its TCL evaluated as Nuke would, checked at two frames.

    A path that changes between frames other than by its frame number (``[frame]`` in a folder name)
    cannot be one sequence for the engine, so it is refused here rather than written to the wrong place.
    """
    if "[" not in raw:
        return raw
    patterns = [(f, file_knob_pattern(raw, str(evaluate_at(f)), f)) for f in (frame, frame + 1)]
    (first, one), (second, other) = patterns
    if one != other:
        raise PluginError(
            f"{raw!r} changes from frame to frame other than by its frame number ({one!r} at frame {first}, "
            f"{other!r} at frame {second}); keep frame-dependent expressions out of the path, and use #### for "
            "the frame number"
        )
    return one


def existing_outputs(pattern: str, frames: Iterable[int]) -> list[int]:
    """Frames of the output that are already on disk: the engine refuses them unless told to overwrite."""
    return [f for f in frames if os.path.exists(format_frame(pattern, f))]


def slash(path: str) -> str:
    """Nuke writes paths with forward slashes on every platform; so do we, so scripts stay portable."""
    return path.replace("\\", "/")


def safe_name(name: str) -> str:
    """A node name reduced to characters that are safe in file names and job ids everywhere."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "rvm"


def script_folder(script_path: str) -> str:
    if not script_path:
        raise PluginError(
            f"Save the script first: the default output ({DEFAULT_OUTPUT}) lives next to it. "
            "Or set the 'output file' knob to a full path."
        )
    return os.path.dirname(os.path.abspath(script_path))


def absolute(path: str, script_path: str, env: Mapping[str, str] | None = None) -> str:
    """Expand ``~`` and ``$VARS``; a relative path is taken relative to the script's folder."""
    expanded = _expandvars(os.path.expanduser(path), os.environ if env is None else env)
    if os.path.isabs(expanded):
        return slash(os.path.normpath(expanded))
    if not script_path:
        raise PluginError(f"{path!r} is a relative path: save the script first, or use a full path")
    return slash(os.path.normpath(os.path.join(script_folder(script_path), expanded)))


def _expandvars(path: str, env: Mapping[str, str]) -> str:
    # os.path.expandvars reads os.environ only; tests and the farm need an explicit mapping.
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), path)


def output_pattern(knob: str, script_path: str, node_name: str, env: Mapping[str, str] | None = None) -> str:
    """The matte's EXR sequence: the knob's path, else ``<script folder>/rvm/<node>/<node>.####.exr``."""
    if knob:
        path = absolute(knob, script_path, env)
    else:
        name = safe_name(node_name)
        path = slash(os.path.join(script_folder(script_path), "rvm", name, f"{name}.####.exr"))
    if not has_frame_token(path):
        raise PluginError(f"output {path!r}: put a frame number in the file name, e.g. matte.####.exr")
    return path  # its name (.exr) is the Job's to check


def precomp_pattern(output: str, node_name: str) -> str:
    """Where a non-Read upstream is rendered first: beside the matte, so both live and die together."""
    return slash(os.path.join(os.path.dirname(output), "precomp", f"{safe_name(node_name)}.precomp.####.exr"))


def job_file_path(output: str, node_name: str) -> str:
    """The job JSON of a local render, kept beside its frames as a record of how they were made."""
    return slash(os.path.join(os.path.dirname(output), f"{safe_name(node_name)}.rvm-job.json"))


# ------------------------------------------------------------------------------------- colour spaces

_DEFAULT_WRAPPER = re.compile(r"^default\s*\((?P<inner>.*)\)$", re.IGNORECASE)

# Nuke's own colour management ("nuke-default") names and their spaces in OCIO's built-in CG config,
# used only when the nuke-default config file itself cannot be found.
NUKE_DEFAULT_TO_BUILTIN = {
    "linear": "lin_rec709",
    "srgb": "srgb_tx",
    "gamma1.8": "g18_rec709",
    "gamma2.2": "g22_rec709",
    "raw": "raw",
}


def strip_default_wrapper(value: str | None) -> str | None:
    """``"default (ACEScg)"`` -> ``"ACEScg"``; a bare ``"default"`` or an empty value -> None.

    Nuke shows the space it picked by file type as ``default (X)``; X is the space actually applied.
    """
    if value is None:
        return None
    text = str(value).strip()
    m = _DEFAULT_WRAPPER.match(text)
    if m:
        text = m.group("inner").strip()
    if not text or text.lower() == "default":
        return None
    return text


class ColourNames:
    """The names an OCIO config answers to (spaces, aliases, roles), looked up as OCIO does."""

    def __init__(self, spaces: Mapping[str, Iterable[str]], roles: Mapping[str, str], source: str = "") -> None:
        self.source = source
        self._canonical: dict[str, str] = {}
        for name, aliases in spaces.items():
            self._canonical[name.lower()] = name
            for alias in aliases:
                self._canonical.setdefault(alias.lower(), name)
        for role, space in roles.items():
            target = self._canonical.get(space.lower())
            if target:
                self._canonical.setdefault(role.lower(), target)

    def lookup(self, name: str) -> str | None:
        return self._canonical.get(name.strip().lower())

    @property
    def scene_linear(self) -> str | None:
        return self.lookup("scene_linear")


def load_colour_names(config: str | None) -> ColourNames | None:
    """Read a config's names with PyOpenColorIO when Nuke's Python has it (Nuke ships it); else None.

    Without it names are passed to the engine as written, and the engine's own check reports a bad one.
    """
    if not config:
        return None
    try:
        import PyOpenColorIO as ocio
    except ImportError:
        return None
    try:
        cfg = ocio.Config.CreateFromFile(config)
        spaces = {
            cs.getName(): list(cs.getAliases()) if hasattr(cs, "getAliases") else [] for cs in cfg.getColorSpaces()
        }
        roles = {}
        for role in cfg.getRoleNames():
            cs = cfg.getColorSpace(role)
            if cs is not None:
                roles[role] = cs.getName()
    except Exception:  # noqa: BLE001 - any OCIO failure means "cannot canonicalise", never a failed render
        return None
    return ColourNames(spaces, roles, source=config)


def resolve_colorspace(value: str | None, names: ColourNames | None, colour_management: str = "OCIO") -> str | None:
    """A Read's colorspace knob value as a space name of the script's config (None: let the engine decide).

    Nuke may show a space with its family menu path (``Utility/Linear Rec.709 (sRGB)``); the last part is
    the name. A role (``scene_linear``) becomes the space it points to, so the engine and Nuke agree.
    """
    text = strip_default_wrapper(value)
    if text is None:
        return None
    if names is not None:
        hit = names.lookup(text)
        if hit is None and "/" in text:
            hit = names.lookup(text.rsplit("/", 1)[1])
        if hit is not None:
            return hit
    elif colour_management.lower() == "nuke" and text.lower() in NUKE_DEFAULT_TO_BUILTIN:
        return NUKE_DEFAULT_TO_BUILTIN[text.lower()]
    return text


def scene_linear_name(names: ColourNames | None, colour_management: str = "OCIO") -> str:
    """The space the matte is written in (the engine's default output) as Nuke's Read should name it."""
    if names is not None and names.scene_linear:
        return names.scene_linear
    return "linear" if colour_management.lower() == "nuke" else "scene_linear"


def resolve_ocio_config(root: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str | None:
    """The OCIO config the script uses, as a file path or ``ocio://`` URI the engine can load.

    ``root`` holds the Root node's ``colorManagement``, ``OCIO_config`` and the evaluated
    ``customOCIOConfigPath`` and ``OCIOConfigPath`` knobs. A custom config is its path; any other (one
    bundled with Nuke, wherever and on whatever platform Nuke is installed) is the file Nuke itself loaded,
    which Nuke keeps in ``OCIOConfigPath``. Then ``$OCIO``, which Nuke obeys too. None: the engine's default.
    """
    env = os.environ if env is None else env
    nuke_managed = str(root.get("colorManagement") or "").strip().lower() == "nuke"
    chosen = str(root.get("OCIO_config") or "").strip()
    custom = str(root.get("customOCIOConfigPath") or "").strip()
    in_use = str(root.get("OCIOConfigPath") or "").strip()
    if not nuke_managed:
        if chosen == "custom" and custom:
            return slash(custom)
        if chosen.startswith("ocio://"):
            return chosen
    if in_use.startswith("ocio://") or (in_use and os.path.isfile(in_use)):
        return in_use if in_use.startswith("ocio://") else slash(in_use)
    return env.get("OCIO") or None


# ------------------------------------------------------------------------------------------- sources


@dataclass
class Source:
    """What the engine reads: a plain Read's own files, or the precomp of whatever else is upstream."""

    input: str
    first: int
    last: int
    colorspace: str | None = None
    start_frame: int = 1
    precomp: bool = False
    reason: str = ""


def find_source(
    node: Any,
    klass: Callable[[Any], str],
    input0: Callable[[Any], Any],
    disabled: Callable[[Any], bool],
) -> Any:
    """Walk up through Dots and disabled nodes, which pass their input through unchanged."""
    seen = set()
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if klass(node) == "Dot" or (disabled(node) and input0(node) is not None):
            node = input0(node)
            continue
        return node
    return node


def plain_read_problem(klass: str, knobs: Mapping[str, Any]) -> str | None:
    """Why a node cannot be read directly by the engine (None: it is a Read showing its files as they are).

    A Read that retimes (``frame`` expression, start-at/offset) or is disabled shows other images than
    its files hold, so it is precomped like any other node.
    """
    if klass != "Read":
        return f"the input is a {klass} node, not a Read"
    if knobs.get("disable"):
        return "the Read is disabled"
    path = str(knobs.get("file") or "").strip()
    if not path:
        return "the Read has no file"
    if not is_video(path) and not has_frame_token(path):
        return "the Read shows a single image, not a sequence"
    if str(knobs.get("frame") or "").strip():
        return "the Read changes its frame numbers (frame mode)"
    return None


def read_source(
    knobs: Mapping[str, Any],
    names: ColourNames | None,
    script_path: str,
    colour_management: str = "OCIO",
    colorspace_override: str = "",
    env: Mapping[str, str] | None = None,
) -> Source:
    """A plain Read as the engine's input: its file, frame range and colour space are used directly."""
    path = absolute(str(knobs["file"]).strip(), script_path, env)
    first, last = int(knobs.get("first", 1)), int(knobs.get("last", 1))
    start = int(knobs.get("origfirst", 1)) if is_video(path) else 1
    space = resolve_colorspace(colorspace_override or knobs.get("colorspace"), names, colour_management)
    return Source(input=path, first=first, last=last, colorspace=space, start_frame=start)


def precomp_source(
    output: str, node_name: str, first: int, last: int, names: ColourNames | None, colour_management: str = "OCIO"
) -> Source:
    return Source(
        input=precomp_pattern(output, node_name),
        first=first,
        last=last,
        colorspace=scene_linear_name(names, colour_management),
        precomp=True,
    )


def precomp_write_knobs(source: Source) -> list[tuple[str, Any]]:
    """The Write that renders the upstream for the engine: scene-linear half-float EXR, RGB only."""
    return [
        ("file", source.input),
        ("file_type", "exr"),
        ("channels", "rgb"),
        ("datatype", "16 bit half"),
        ("compression", "Zip (1 scanline)"),
        ("colorspace", source.colorspace),
        ("create_directories", True),
    ]


# ------------------------------------------------------------------------------------------- mattes


@dataclass
class MatteSource:
    """One connected matte input as the engine reads it: a plain Read's own sequence, or the precomp of it.

    ``channel`` is the channel the engine reads in ``input``; ``pick`` is the Nuke channel the precomp copies
    into alpha (``NO_CHANNEL``: the precomp keeps every channel, and the engine picks as it always does).
    """

    name: str
    input: str
    channel: str | None = None
    invert: bool = False
    pick: str = NO_CHANNEL
    precomp: bool = False
    reason: str = ""

    @property
    def subject(self) -> str:
        return f"the {self.name} input"


def matte_problem(klass: str, knobs: Mapping[str, Any], pick: str) -> str | None:
    """Why a matte input is precomped rather than read directly (None: the engine reads the Read's files).

    A plain Read of an image sequence is read as it is only while no channel is picked: Nuke's channel
    names (``rgba.red`` shows a grey file's only channel) are not the file's, so a picked channel is
    rendered by Nuke, which knows what it shows. A movie is precomped so its frames are numbered as Nuke shows them.
    """
    problem = plain_read_problem(klass, knobs)
    if problem is None and is_video(str(knobs.get("file") or "")):
        problem = "the Read shows a movie"
    if problem is None and pick != NO_CHANNEL:
        problem = f"channel {pick} is picked"
    return problem


def matte_source(
    name: str,
    klass: str,
    knobs: Mapping[str, Any],
    settings: Mapping[str, Any],
    *,
    output: str,
    node_name: str,
    script_path: str,
    env: Mapping[str, str] | None = None,
) -> MatteSource:
    """A connected matte input: its files when a plain Read shows them as they are, else its precomp."""
    s = normalise_settings(settings)
    pick = s[f"{name}_channel"] or NO_CHANNEL
    invert = bool(s[f"invert_{name}"])
    problem = matte_problem(klass, knobs, pick)
    if problem is None:
        return MatteSource(name, absolute(str(knobs["file"]).strip(), script_path, env), invert=invert)
    pattern = slash(os.path.join(os.path.dirname(output), "precomp", f"{safe_name(node_name)}.{name}.####.exr"))
    # The precomp writes the picked channel as its alpha, and only that: the engine reads A.
    channel = None if pick == NO_CHANNEL else "A"
    reason = problem.replace("the input is", "it is", 1)  # said after the input's name: "the core input: it is ..."
    return MatteSource(name, pattern, channel, invert, pick, precomp=True, reason=reason)


def matte_precomp_write_knobs(matte: MatteSource) -> list[tuple[str, Any]]:
    """The Write that renders a matte input for the engine: half-float EXR, raw (a matte is data, never converted).

    With a channel picked the Write takes the alpha it was copied into; without, every channel the input
    has, so the engine finds A when the input has one, as it would in the input's own files.
    """
    return [
        ("file", matte.input),
        ("file_type", "exr"),
        ("channels", "all" if matte.pick == NO_CHANNEL else "alpha"),
        ("datatype", "16 bit half"),
        ("compression", "Zip (1 scanline)"),
        ("raw", True),
        ("create_directories", True),
    ]


def matte_fields(mattes: Iterable[MatteSource]) -> dict[str, Any]:
    """The Job fields of the connected matte inputs; an unconnected one keeps the engine's defaults."""
    fields: dict[str, Any] = {}
    for matte in mattes:
        fields.update(
            {
                f"{matte.name}_matte": matte.input,
                f"{matte.name}_channel": matte.channel,
                f"invert_{matte.name}": matte.invert,
            }
        )
    return fields


# ----------------------------------------------------------------------------------------------- jobs


def checkpoint_value(
    knob: str, encoder: str, script_path: str, env: Mapping[str, str], farm: bool = False
) -> str | None:
    """The Job's checkpoint. None lets the engine pick its default (the official MobileNetV3).

    On the farm a checkpoint is a file name inside the worker's models folder, never a local path.
    """
    if knob:
        path = absolute(knob, script_path, env)
        return os.path.basename(path) if farm else path
    if encoder == DEFAULT_ENCODER:
        return None
    if farm:
        return OFFICIAL_CHECKPOINTS[encoder]
    return slash(official_checkpoint_path(encoder, env))


def build_job(
    settings: Mapping[str, Any],
    source: Source,
    *,
    node_name: str,
    script_path: str,
    ocio_config: str | None = None,
    farm: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    mattes: Iterable[MatteSource] = (),
) -> dict[str, Any]:
    """Knob values and the input as the engine's Job, as the dict a job file or a ticket holds.

    The Job is the vendored contract's, so every rule the engine applies (frame ranges, the ranges of
    numbers, the allowed values) is applied here, and a bad knob fails now with the engine's own message,
    not later on the farm. Fields the node has no knob for keep the engine's defaults.
    """
    env = os.environ if env is None else env
    s = normalise_settings(settings)
    meta = {"host": "nuke", "nuke_node": node_name, "nuke_script": slash(script_path or "")}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    try:
        job = Job(
            input=source.input,
            output=output_pattern(s["output"], script_path, node_name, env),
            frames=frames_text(s["frame_range"], source.first, source.last),
            start_frame=int(source.start_frame),
            checkpoint=checkpoint_value(s["checkpoint"], s["encoder"], script_path, env, farm=farm),
            downsample="auto" if s["downsample_auto"] else s["downsample"],
            device=s["device"],
            precision=s["precision"],
            ocio_config=ocio_config,
            input_colorspace=source.colorspace,
            output_mode=OUTPUT_MODES[s["output_mode"]],
            preroll=s["preroll"],
            warmup=s["warmup"],
            passes=s["passes"],
            **matte_fields(mattes),
            overwrite=bool(overwrite),
            name=name or node_name,
            priority=int(s["farm_priority"]) if farm else 0,
            metadata=meta,
        )
    except InputError as exc:
        raise PluginError(str(exc)) from None
    return job.to_dict()


def matte_read_knobs(job: Mapping[str, Any], read_colorspace: str, farm: bool = False) -> list[tuple[str, Any]]:
    """The internal Read's knobs, in the order to set them, so the node shows the rendered matte.

    Farm frames arrive over time, so a missing frame shows black instead of stopping the artist's comp,
    until Reload finds them all (``reload_read_knobs``).
    """
    first, last = frame_bounds(job["frames"])
    if job["output_mode"] == "alpha":
        # The engine tags an alpha-only EXR as data (the config's data role, else Raw): no conversion may touch it.
        look = [("premultiplied", False), ("raw", True)]
    else:
        colorspace = job.get("output_colorspace") or read_colorspace
        look = [("colorspace", colorspace), ("premultiplied", True), ("raw", False)]
    span = [("first", first), ("last", last), ("origfirst", first), ("origlast", last)]
    return [("file", job["output"]), *span, *look, ("on_error", "black" if farm else "error")]


def reload_read_knobs(knobs: Iterable[tuple[str, Any]], landed: int, total: int) -> list[tuple[str, Any]]:
    """The Read's knobs on Reload: black for frames still to come from the farm, errors once all are there.

    A farm Read shows missing frames as black while the farm delivers; left so, a frame lost later would
    render black into a final comp without anyone noticing.
    """
    knobs = [tuple(pair) for pair in knobs]
    if landed < total:
        return knobs
    return [(name, "error" if name == "on_error" else value) for name, value in knobs]


def precomp_frames(frames: str, preroll: int, first_available: int) -> list[int]:
    """The frames to precomp: the whole span of the range, with the pre-roll before it (clamped at the input's
    first frame), so that the engine, and a farm chunk's own pre-roll, find every frame they read."""
    first, last = frame_bounds(frames)
    return list(range(max(first_available, first - max(preroll, 0)), last + 1))


# ------------------------------------------------------------------------------------------- the farm


def watch_folder(preference: str | None, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    folder = (preference or "").strip() or (env.get(WATCH_FOLDER_ENV) or "").strip()
    if not folder:
        raise PluginError(
            f"No farm watch folder: set it in Preferences > RVM, or set ${WATCH_FOLDER_ENV} before starting Nuke."
        )
    folder = os.path.expanduser(_expandvars(folder, env))
    if not os.path.isdir(folder):
        raise PluginError(f"The farm watch folder {folder!r} does not exist (is the farm share mounted?)")
    return folder


def make_job_id(node_name: str, now: datetime.datetime | None = None, token: str | None = None) -> str:
    """``<node>_<YYYYmmdd-HHMMSS>_<random>``: sortable, unique, and safe as a file name anywhere."""
    now = now or datetime.datetime.now()
    token = token if token is not None else secrets.token_hex(3)
    return f"{safe_name(node_name)}_{now:%Y%m%d-%H%M%S}_{safe_name(token)}"


def write_json_atomic(path: str, data: Any) -> str:
    """Write JSON under a hidden temporary name in the same folder, then rename it into place.

    Watchers (the farm worker, a second artist's Reload) then only ever see complete files.
    """
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def write_ticket(job: Mapping[str, Any], folder: str, job_id: str) -> str:
    """Drop a Job into ``<watch folder>/incoming/<job id>.json``, complete or not at all."""
    incoming = os.path.join(folder, "incoming")
    os.makedirs(incoming, exist_ok=True)
    path = os.path.join(incoming, f"{job_id}.json")
    if os.path.exists(path):
        raise PluginError(f"a farm ticket {path!r} already exists")
    return write_json_atomic(path, dict(job))


# ------------------------------------------------------------------------------------------- the engine


def engine_python(knob: str, preference: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The engine's interpreter: the node's knob, else the preference, else ``$RVM_VFX_PYTHON``."""
    env = os.environ if env is None else env
    for value in (knob, preference, env.get(ENGINE_PYTHON_ENV)):
        if value and str(value).strip():
            return os.path.expanduser(_expandvars(str(value).strip(), env))
    return None
