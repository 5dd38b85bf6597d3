"""Plate frames in, premultiplied EXR frames out, through OpenImageIO.

Reading hands the engine one thing whatever the file was: float32 RGB of the data window, in the
file's own encoding (integers scaled to [0, 1], float data untouched), plus the header a compositor
expects the output to keep. Colour conversion is not done here; ``ImageHeader.colorspace`` only
reports what the file claims, for ``rvm_vfx.color`` to decide.

Writing is atomic: a frame goes to a hidden temporary name in the destination folder and is renamed
over the final name only when it is complete, so a farm node that dies mid-frame never leaves a half
EXR that a later ``--resume`` or a compositor would take for a finished one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import OpenEXR
import OpenImageIO as oiio
import torch

from rvm_vfx.errors import ImageReadError, InputError, OutputError, disk_full_detail
from rvm_vfx.spec.job import COMPRESSIONS
from rvm_vfx.spec.names import temporary_frame_path

__all__ = [
    "EXR_COMPRESSIONS",
    "FRAME_RATE_ATTRIBUTE",
    "TIMECODE_ATTRIBUTE",
    "ImageHeader",
    "Plate",
    "read_image",
    "timing_attributes",
    "write_exr",
]

#: Compressions ``write_exr`` accepts (OpenEXR's names as OpenImageIO spells them): the Job's own list.
EXR_COMPRESSIONS: tuple[str, ...] = COMPRESSIONS

#: The largest finite half-float value. Scene-linear highlights above it would turn into Inf on write.
HALF_MAX = 65504.0

# Header entries that describe how the plate file was stored, or that claim a colour identity. Carrying
# them over to the output would either be meaningless in an EXR or make the output lie about itself
# (its colour space is set anew from the colour pipeline, its layout by the writer).
_STRUCTURAL_ATTRIBUTES = frozenset(
    name.lower()
    for name in (
        "compression",
        "PixelAspectRatio",
        "screenWindowCenter",
        "screenWindowWidth",
        "channels",
        "dataWindow",
        "displayWindow",
        "lineOrder",
        "tiles",
        "chunkCount",
        "name",
        "type",
        "version",
        "view",
        "multiView",
        "planarconfig",
        "colorInteropID",
        "chromaticities",
        "ICCProfile",
        "Exif:ColorSpace",
        "oiio:Gamma",
    )
)
_STRUCTURAL_PREFIXES = ("oiio:", "openexr:", "tiff:", "dpx:", "jpeg:", "png:", "icc:", "rvm:")

#: OpenEXR's standard frame-rate attribute, a rational. OpenImageIO writes it under the name it is given,
#: so this spelling is what lands in the file, and what Nuke reads as the clip's rate.
FRAME_RATE_ATTRIBUTE = "framesPerSecond"
#: OpenImageIO's name for a SMPTE timecode; its EXR writer stores it as the standard ``timeCode``.
TIMECODE_ATTRIBUTE = "smpte:TimeCode"

_FLOAT_BASETYPES = frozenset({oiio.BASETYPE.HALF, oiio.BASETYPE.FLOAT, oiio.BASETYPE.DOUBLE})

# Channel-name suffixes (case-insensitive) understood as colour, luminance and alpha.
_SUFFIXES = {
    "r": "r", "red": "r",
    "g": "g", "green": "g",
    "b": "b", "blue": "b",
    "y": "y", "l": "y", "luminance": "y", "gray": "y", "grey": "y",
    "a": "a", "alpha": "a",
}  # fmt: skip

# Nuke's name for the unprefixed channels; accepted as a layer name and used when listing layers.
DEFAULT_LAYER = "rgba"


@dataclass
class ImageHeader:
    """What of a plate's header must survive into the matte so it lines up and stays traceable.

    Windows follow OpenEXR: ``x, y, width, height`` is the data window (the pixels actually stored),
    ``full_*`` the display window (the frame). They differ for overscan and cropped CG renders, and a
    matte that does not keep both would slip against its plate in the comp.
    """

    width: int
    height: int
    x: int = 0
    y: int = 0
    full_x: int = 0
    full_y: int = 0
    full_width: int = 0
    full_height: int = 0
    pixel_aspect: float = 1.0
    #: The plate's own metadata (camera, timecode, exif, custom keys) to copy to the output.
    attributes: dict[str, object] = field(default_factory=dict)
    #: OpenImageIO type of each attribute as (basetype, aggregate, vecsemantics, arraylen) names, so a
    #: matrix stays a matrix and a box a box when written back; absent entries are inferred.
    attribute_types: dict[str, tuple[str, str, str, int]] = field(default_factory=dict, repr=False)
    #: The colour space the file claims (OpenImageIO's ``oiio:ColorSpace``), if it claims one.
    colorspace: str | None = None
    #: Half or float data: the plate is (probably) scene-linear and may hold values above 1.
    is_float: bool = False
    #: OpenImageIO's format name: "openexr", "dpx", "tiff", "png", "jpeg", ...
    format_name: str = ""
    #: Bits per sample as stored (10 for 10-bit DPX, 16 for half, ...).
    bits: int = 0

    def __post_init__(self) -> None:
        if self.full_width <= 0 or self.full_height <= 0:
            self.full_x, self.full_y = self.x, self.y
            self.full_width, self.full_height = self.width, self.height


@dataclass
class Plate:
    """One decoded frame: RGB pixels of the data window plus everything said about it.

    ``warnings`` that describe the whole sequence (an ignored alpha channel) carry no file name so a
    caller can deduplicate them by text; per-frame ones (NaN/Inf found) name the file.
    """

    rgb: np.ndarray
    header: ImageHeader
    warnings: list[str] = field(default_factory=list)
    #: How many channel values were NaN or +/-Inf and were replaced with 0.
    nonfinite: int = 0
    path: str = ""

    @property
    def colorspace(self) -> str | None:
        return self.header.colorspace

    @property
    def is_float(self) -> bool:
        return self.header.is_float


# --------------------------------------------------------------------------------------------- reading


@dataclass
class _Selection:
    """Where the wanted channels are: which subimage, which channel indices, what they mean."""

    subimage: int
    color: list[int]  # three indices (R, G, B) or one (grey, repeated)
    alpha: int | None
    names: tuple[str, ...]


def _split_channel(name: str) -> tuple[str, str]:
    """``"diffuse.R"`` -> ``("diffuse", "R")``; nested layers keep everything before the last dot."""
    layer, dot, suffix = name.rpartition(".")
    return (layer, suffix) if dot else ("", name)


def _select_in_channels(names: tuple[str, ...], wanted: str) -> tuple[list[int], int | None] | None:
    """Colour and alpha indices of layer ``wanted`` ("" = unprefixed) among ``names``.

    Returns None when the layer has no channels here; raises ``LookupError`` (with the channel names)
    when it has channels that cannot be made into RGB.
    """
    roles: dict[str, int] = {}
    members: list[int] = []
    for index, name in enumerate(names):
        layer, suffix = _split_channel(name)
        if layer != wanted:
            continue
        members.append(index)
        role = _SUFFIXES.get(suffix.lower())
        if role is not None and role not in roles:
            roles[role] = index
    if not members:
        return None
    alpha = roles.get("a")
    if all(c in roles for c in "rgb"):
        return [roles["r"], roles["g"], roles["b"]], alpha
    if "y" in roles:
        return [roles["y"]], alpha
    others = [i for i in members if i != alpha]
    if len(others) == 1:
        return others, alpha
    raise LookupError(", ".join(names[i] for i in members))


def _subimage_specs(inp: oiio.ImageInput) -> list[oiio.ImageSpec]:
    specs = []
    index = 0
    while inp.seek_subimage(index, 0):
        specs.append(inp.spec().copy())
        index += 1
    if inp.has_error:
        inp.geterror()  # seeking one past the last part is how the end is found, not a fault
    return specs


def _layers_of(specs: list[oiio.ImageSpec]) -> list[str]:
    found: list[str] = []
    for spec in specs:
        part = spec.get_string_attribute("oiio:subimagename", "")
        for name in spec.channelnames:
            layer = _split_channel(name)[0]
            if not layer:
                layer = part if part and len(specs) > 1 else DEFAULT_LAYER
            if layer not in found:
                found.append(layer)
    return found


def _select(path: str, specs: list[oiio.ImageSpec], layer: str | None) -> _Selection:
    """Find the layer by channel name, searching every part: studios order channels and parts freely."""
    wanted = "" if layer in (None, "") else layer
    # Prefixed channels first ("diffuse.R"); then a part with that name holding plain channels, which
    # is how some writers store layers in multi-part files; "rgba" also means the unprefixed channels.
    attempts: list[tuple[str, str | None]] = [(wanted, None)]
    if wanted:
        attempts.append(("", wanted))
        if wanted == DEFAULT_LAYER:
            attempts.append(("", None))
    for channel_layer, part_name in attempts:
        for index, spec in enumerate(specs):
            if part_name is not None and spec.get_string_attribute("oiio:subimagename", "") != part_name:
                continue
            names = tuple(spec.channelnames)
            try:
                picked = _select_in_channels(names, channel_layer)
            except LookupError as exc:
                shown = f"layer {layer!r}" if wanted else "the default layer"
                raise ImageReadError(
                    f"{path}: cannot make RGB from the channels of {shown} ({exc}); "
                    "expected R, G, B or a single grey channel"
                ) from None
            if picked is not None:
                color, alpha = picked
                return _Selection(index, color, alpha, names)
    layers = ", ".join(_layers_of(specs)) or "none"
    if wanted:
        raise ImageReadError(f"{path}: layer {layer!r} not found; layers in the file: {layers}")
    if not any(spec.nchannels for spec in specs):
        raise ImageReadError(f"{path}: image has no channels")
    raise ImageReadError(f"{path}: no default (unprefixed R, G, B) channels; layers in the file: {layers}")


def _oiio_message(obj: Any = None) -> str:
    """OpenImageIO's pending error text, one line, duplicates dropped (it repeats itself)."""
    text = obj.geterror() if obj is not None else oiio.geterror()
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines) or "unknown error"


def _corrupt(path: str, message: str) -> ImageReadError:
    return ImageReadError(f"{path}: cannot read image (truncated or corrupt): {message}")


def _type_names(td: oiio.TypeDesc) -> tuple[str, str, str, int]:
    return (td.basetype.name, td.aggregate.name, td.vecsemantics.name, int(td.arraylen))


def _plate_attributes(spec: oiio.ImageSpec) -> tuple[dict[str, object], dict[str, tuple[str, str, str, int]]]:
    values: dict[str, object] = {}
    types: dict[str, tuple[str, str, str, int]] = {}
    for param in spec.extra_attribs:
        name = param.name
        lowered = name.lower()
        if lowered in _STRUCTURAL_ATTRIBUTES or lowered.startswith(_STRUCTURAL_PREFIXES):
            continue
        if param.type.basetype in (oiio.BASETYPE.PTR, oiio.BASETYPE.UNKNOWN):
            continue
        values[name] = param.value
        types[name] = _type_names(param.type)
    return values, types


def _pixel_aspect(spec: oiio.ImageSpec) -> float:
    aspect = spec.get_float_attribute("PixelAspectRatio", 1.0)
    return float(aspect) if np.isfinite(aspect) and aspect > 0 else 1.0


def _open(path: str) -> oiio.ImageInput:
    config = oiio.ImageSpec()
    # PNG and some TIFFs store unassociated alpha, which OIIO would multiply into the colour on read.
    # The alpha is ignored here, so that would only darken the plate (to black where alpha is 0).
    config.attribute("oiio:UnassociatedAlpha", 1)
    inp = oiio.ImageInput.open(path, config)
    if inp is None:
        raise _corrupt(path, _oiio_message())
    return inp


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise ImageReadError(f"{path}: file not found")
    if os.path.isdir(path):
        raise ImageReadError(f"{path}: is a folder, not an image")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")


#: Values per strip of the NaN/Inf check (numpy, single-threaded): a 2 MB scratch at half. Few strips on purpose:
#: each call in a reader or writer thread is a hand-over of the GIL with the thread stepping the network, and
#: a loop of ~200 calls a frame (widening in strips under torch's grain size) cut a 1080p CPU render from 3.5
#: to 2.8-3.1 fps although it cost fewer CPU-ms on its own (bench/README.md).
_CHECK_STRIP = 1 << 20

# Unsigned view, the bits below the sign, and the exponent of Inf: a value is NaN or +/-Inf when its bits
# without the sign reach that exponent.
_NONFINITE_BITS = {
    np.dtype(np.float16): (np.uint16, 0x7FFF, 0x7C00),
    np.dtype(np.float32): (np.uint32, 0x7FFF_FFFF, 0x7F80_0000),
}


def _has_nonfinite(values: np.ndarray) -> bool:
    """Whether a C-contiguous half or float32 array holds any NaN or +/-Inf.

    A frame nearly always holds none, so one reduction over the bits, strip by strip, answers without the
    frame-sized boolean mask (and its page faults) that ``np.isfinite`` makes, and on halves reads half
    the memory; only a frame that has some is looked at value by value.
    """
    unsigned, magnitude, exponent = _NONFINITE_BITS[values.dtype]
    bits = values.reshape(-1).view(unsigned)
    scratch = np.empty(min(bits.size, _CHECK_STRIP), unsigned)
    for start in range(0, bits.size, _CHECK_STRIP):
        part = bits[start : start + _CHECK_STRIP]
        if np.bitwise_and(part, magnitude, out=scratch[: part.size]).max() >= exponent:
            return True
    return False


def read_image(path: str | os.PathLike[str], layer: str | None = None) -> Plate:
    """Read one plate frame as float32 RGB of its data window.

    ``layer`` names a channel prefix ("diffuse" picks ``diffuse.R/G/B``), searched in every part of a
    multi-part EXR; None (or "rgba") is the plain R, G, B. Channels are found by name, never by
    position, because renderers and comp packages order them differently.
    """
    path = os.fspath(path)
    _check_exists(path)
    inp = _open(path)
    try:
        specs = _subimage_specs(inp)
        if not specs:
            raise _corrupt(path, _oiio_message(inp))
        selection = _select(path, specs, layer)
        spec = specs[selection.subimage]
        if spec.deep:
            raise ImageReadError(f"{path}: deep images are not supported; flatten the plate first")
        if spec.depth > 1:
            raise ImageReadError(f"{path}: volume images are not supported")
        first = min(selection.color)
        last = max(selection.color) + 1
        if not inp.seek_subimage(selection.subimage, 0):
            raise _corrupt(path, _oiio_message(inp))
        # Half plates are read as half and widened by torch (vectorised), which is several times faster
        # than OpenImageIO's or numpy's per-value conversion at 2K and 4K.
        all_half = all(spec.channelformat(c).basetype == oiio.BASETYPE.HALF for c in range(first, last))
        data = inp.read_image(selection.subimage, 0, first, last, "half" if all_half else "float")
        if data is None or inp.has_error:
            # OpenImageIO reports a truncated JPEG as a successful read plus an error: grey garbage is
            # still a corrupt frame, so both count.
            raise _corrupt(path, _oiio_message(inp))
        format_name = inp.format_name()
    finally:
        inp.close()

    data = np.asarray(data).reshape(spec.height, spec.width, last - first)
    stored = torch.from_numpy(data)
    offsets = [c - first for c in selection.color]
    # Channels stored in R, G, B order (nearly every plate) are a plain slice; gathering by an index
    # list would cost an extra full-frame copy.
    if offsets == list(range(offsets[0], offsets[0] + len(offsets))):
        picked = stored[:, :, offsets[0] : offsets[0] + len(offsets)]
    else:
        picked = stored[:, :, offsets]
    channel_formats = [spec.channelformat(i) for i in selection.color]
    is_float = any(td.basetype in _FLOAT_BASETYPES for td in channel_formats)
    # Checked on what OpenImageIO read, all its channels: a NaN in a channel not taken (an alpha between
    # the colours) sends the frame to the exact count below, which counts only the colour.
    suspect = is_float and _has_nonfinite(data)
    # Widened by torch in one call (vectorised; numpy's per-value conversion is several times slower).
    color = picked.to(torch.float32).contiguous().numpy()

    warnings: list[str] = []
    if selection.alpha is not None:
        alpha_name = selection.names[selection.alpha]
        if len(selection.color) == 1:
            grey = selection.names[selection.color[0]]
            warnings.append(
                f"2-channel image ({grey}, {alpha_name}): RGB made from {grey}; alpha channel ignored, "
                "the matte is computed from the picture"
            )
        else:
            warnings.append(f"alpha channel {alpha_name!r} ignored: the matte is computed from RGB")

    nonfinite = 0
    if suspect:
        bad = ~np.isfinite(color)
        nonfinite = int(np.count_nonzero(bad))
        if nonfinite:
            # Zero, not a clamp to some large value: a NaN or Inf pixel is a render fault, not a
            # highlight, and any made-up brightness would bleed into the network's matte and into the
            # guided-filter upsampling around it. Black is neutral and the count is reported.
            color[bad] = 0.0
            warnings.append(f"{path}: {nonfinite} NaN/Inf values replaced with 0")
    rgb = np.ascontiguousarray(np.repeat(color, 3, axis=2)) if color.shape[2] == 1 else color

    attributes, attribute_types = _plate_attributes(spec)
    colorspace = spec.get_string_attribute("oiio:ColorSpace", "") or None
    bits = spec.get_int_attribute("oiio:BitsPerSample", 0) or channel_formats[0].size() * 8
    header = ImageHeader(
        width=spec.width,
        height=spec.height,
        x=spec.x,
        y=spec.y,
        full_x=spec.full_x,
        full_y=spec.full_y,
        full_width=spec.full_width,
        full_height=spec.full_height,
        pixel_aspect=_pixel_aspect(spec),
        attributes=attributes,
        attribute_types=attribute_types,
        colorspace=colorspace,
        is_float=is_float,
        format_name=format_name,
        bits=int(bits),
    )
    return Plate(rgb=rgb, header=header, warnings=warnings, nonfinite=nonfinite, path=path)


# --------------------------------------------------------------------------------------------- writing

_INT32_MAX = 2**31 - 1


def timing_attributes(
    rate: Fraction | None, timecode: tuple[int, int] | None
) -> tuple[dict[str, object], dict[str, tuple[str, str, str, int]]]:
    """Header entries (values, types) that give a frame its clip's rate and its own timecode.

    For sources without an EXR header of their own (video): an image-sequence plate already carries
    both in its header, and they are copied from there like any other attribute. ``timecode`` is
    SMPTE 12M as OpenEXR packs it: (BCD time and flags, user bits).
    """
    values: dict[str, object] = {}
    types: dict[str, tuple[str, str, str, int]] = {}
    if rate is not None and rate > 0:
        if rate.numerator > _INT32_MAX or rate.denominator > _INT32_MAX:
            rate = rate.limit_denominator(1_000_000)  # an EXR rational is two 32-bit integers
        values[FRAME_RATE_ATTRIBUTE] = (rate.numerator, rate.denominator)
        types[FRAME_RATE_ATTRIBUTE] = _type_names(oiio.TypeRational)
    if timecode is not None:
        values[TIMECODE_ATTRIBUTE] = tuple(timecode)
        types[TIMECODE_ATTRIBUTE] = _type_names(oiio.TypeTimeCode)
    return values, types


def _typedesc(names: tuple[str, str, str, int]) -> oiio.TypeDesc:
    basetype, aggregate, vecsemantics, arraylen = names
    return oiio.TypeDesc(
        oiio.BASETYPE.__members__[basetype],
        oiio.AGGREGATE.__members__[aggregate],
        oiio.VECSEMANTICS.__members__[vecsemantics],
        arraylen,
    )


def _set_attribute(spec: oiio.ImageSpec, name: str, value: object, type_names: tuple | None) -> None:
    """Set one attribute with its original type when known, else the obvious one for its value."""
    if type_names is not None:
        try:
            spec.attribute(name, _typedesc(type_names), value)
            return
        except (KeyError, TypeError, ValueError):
            pass  # fall back to inference below
    if isinstance(value, (bool, np.bool_)):
        spec.attribute(name, int(value))
    elif isinstance(value, (int, np.integer)):
        spec.attribute(name, int(value))
    elif isinstance(value, (float, np.floating)):
        spec.attribute(name, float(value))
    elif isinstance(value, str):
        spec.attribute(name, value)
    elif isinstance(value, (tuple, list, np.ndarray)):
        items = list(np.asarray(value).ravel())
        if not items:
            return
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
            spec.attribute(name, oiio.TypeDesc(f"int[{len(items)}]"), tuple(int(v) for v in items))
        else:
            floats = tuple(float(v) for v in items)
            inferred = {2: "float2", 3: "vector", 9: "matrix33", 16: "matrix"}.get(len(floats))
            spec.attribute(name, oiio.TypeDesc(inferred or f"float[{len(floats)}]"), floats)
    else:
        spec.attribute(name, str(value))


def _build_spec(
    pixels: np.ndarray,
    header: ImageHeader,
    colorspace: str,
    attributes: Mapping[str, object],
    compression: str,
) -> oiio.ImageSpec:
    channels = pixels.shape[2]
    spec = oiio.ImageSpec(header.width, header.height, channels, oiio.TypeDesc("half"))
    spec.channelnames = {4: ("R", "G", "B", "A"), 3: ("R", "G", "B"), 1: ("A",)}[channels]
    spec.alpha_channel = -1 if channels == 3 else channels - 1
    spec.x, spec.y = header.x, header.y
    spec.full_x, spec.full_y = header.full_x, header.full_y
    spec.full_width, spec.full_height = header.full_width, header.full_height
    for name, value in header.attributes.items():
        _set_attribute(spec, name, value, header.attribute_types.get(name))
    for name, value in attributes.items():
        _set_attribute(spec, name, value, None)
    spec.attribute("PixelAspectRatio", float(header.pixel_aspect))
    spec.attribute("compression", compression)
    spec.attribute("openexr:lineOrder", "increasingY")
    # OpenImageIO keeps oiio:ColorSpace out of the file and writes it as the standard colorInteropID
    # only for spaces it can identify; a studio config's own names would be lost, so record the exact
    # name too.
    if colorspace:
        spec.attribute("oiio:ColorSpace", colorspace)
        spec.attribute("rvm:colorspace", colorspace)
    return spec


def _write_exr_file(path: str, spec: oiio.ImageSpec, pixels: np.ndarray) -> None:
    """Write a whole EXR at ``path``: the header OpenImageIO makes of ``spec``, the pixels by ``OpenEXR``.

    OpenImageIO keeps the mapping from its attributes to EXR's (types, timecodes, colorInteropID), but its
    writer costs about 15 CPU-ms more than the ``OpenEXR`` package's on a 1080p half frame, compressed or
    not (bench/README.md). So OpenImageIO writes the header alone, on a one-pixel image at ``path``, the
    header is read back, given the real data window, and ``OpenEXR`` writes the frame over it. Failures
    of either come back as ``OSError``.
    """
    template = oiio.ImageSpec(spec)
    template.width = template.height = 1
    _write_with_openimageio(path, template, np.zeros((1, 1, spec.nchannels), np.float16))
    try:
        with OpenEXR.File(path, header_only=True) as written:
            header = dict(written.header())  # closing the file empties the dict it hands out
        header["dataWindow"] = (
            np.array([spec.x, spec.y], np.int32),
            np.array([spec.x + spec.width - 1, spec.y + spec.height - 1], np.int32),
        )
        OpenEXR.File(header, {"".join(spec.channelnames): _channel_pixels(pixels)}).write(path)
    except RuntimeError as exc:  # OpenEXR's errors (Iex) reach Python as RuntimeError, with the cause in words
        raise OSError(str(exc)) from exc


def _channel_pixels(pixels: np.ndarray) -> np.ndarray:
    """``OpenEXR`` takes one channel as a plane and several as the interleaved last axis."""
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def _write_with_openimageio(path: str, spec: oiio.ImageSpec, pixels: np.ndarray) -> None:
    """Write a whole EXR at ``path`` with OpenImageIO; its failures come back as ``OSError``."""
    out = oiio.ImageOutput.create("exr")
    if out is None:
        raise OSError(_oiio_message())
    if not out.open(path, spec):
        raise OSError(_oiio_message(out))
    wrote = out.write_image(pixels)
    closed = out.close()
    if not wrote or not closed or out.has_error:
        raise OSError(_oiio_message(out))


def _disk_hint(path: str, needed: int) -> str:
    """OpenImageIO reports a full disk as a bare "write failed"; say so when the free space explains it."""
    detail = disk_full_detail(path, needed)
    return f" ({detail})" if detail else ""


def _to_half(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as halves clamped to the half range, so a bright highlight is the largest half rather than
    Inf; never the caller's array modified.

    Converted by torch, whose vectorised float-to-half is far faster than numpy's, then clamped in place:
    clamping after the narrowing gives the same values (everything that rounds past HALF_MAX is clamped
    back to it) at half the memory traffic. Halves (``compose_foreground(dtype=np.float16)``, the render's
    path) are written as they are when they hold no Inf (nor NaN, which the clamp would quiet): one check
    of the bits instead of a clamped frame-sized copy (bench/README.md); otherwise clamped into a new buffer.
    """
    if pixels.dtype == np.float16:
        pixels = np.ascontiguousarray(pixels)
        if not _has_nonfinite(pixels):
            return pixels
        return torch.from_numpy(pixels).clamp(-HALF_MAX, HALF_MAX).numpy()
    halves = torch.empty(pixels.shape, dtype=torch.float16)
    halves.copy_(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)))
    return halves.clamp_(-HALF_MAX, HALF_MAX).numpy()


def write_exr(
    path: str | os.PathLike[str],
    rgba: np.ndarray,
    header: ImageHeader,
    colorspace: str,
    attributes: Mapping[str, object],
    compression: str = "zip",
) -> None:
    """Write a half-float scanline EXR of premultiplied R, G, B, A (or alpha-only ``A``), atomically.

    Windows, pixel aspect and the plate's metadata come from ``header``; ``attributes`` (the rvm
    provenance keys) go on top. Values beyond the half range are clamped to it so that a bright
    scene-linear highlight is not turned into Inf by the conversion. Pixels may be float32 or already
    half (the same file either way); the caller's array is never modified.
    """
    path = os.fspath(path)
    name = compression.lower() if isinstance(compression, str) else compression
    if name not in EXR_COMPRESSIONS:
        raise InputError(f"unknown EXR compression {compression!r}; accepted: {', '.join(EXR_COMPRESSIONS)}")
    pixels = np.asarray(rgba)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise ValueError(f"{path}: expected H×W×4 (RGBA), H×W×3 (RGB) or H×W×1 (alpha) pixels, got {pixels.shape}")
    if pixels.shape[:2] != (header.height, header.width):
        raise ValueError(
            f"{path}: pixels are {pixels.shape[1]}×{pixels.shape[0]} but the header's data window is "
            f"{header.width}×{header.height}"
        )
    pixels = _to_half(pixels)
    spec = _build_spec(pixels, header, colorspace, attributes, name)

    # The contract's name, which the worker and the plugins recognise when they clean up after a killed writer.
    temporary = temporary_frame_path(path)
    try:
        _write_exr_file(temporary, spec, pixels)
        os.replace(temporary, path)
    except OSError as exc:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise OutputError(f"{path}: cannot write EXR: {exc}{_disk_hint(path, pixels.nbytes)}") from exc
