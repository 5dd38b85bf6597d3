"""The output foreground: the plate itself where the matte is solid, the network's residual at soft edges.

RVM's foreground is only trustworthy as a *difference* from what it was shown (clipped to [0, 1] and a
couple of code values off even in solid foreground), so the output is built from the unclipped plate,
keeping its highlights, and premultiplied by the matte: what a compositor expects to read.
"""

from __future__ import annotations

import numpy as np
import PyOpenColorIO as ocio
import torch

from rvm_vfx.color_convert import ColorConverter

__all__ = ["SOLID_ALPHA_RAMP", "compose_foreground", "working_space_for"]

#: Alpha below 1.0 over which the network's residual fades in. Solid foreground (alpha == 1) keeps the
#: plate's own value; an alpha of 0.99 or less gets the full decontaminating residual.
SOLID_ALPHA_RAMP = 0.01

# Samples for telling a linear space from an encoded one in configs that tag no encodings.
_LINEARITY_SAMPLES = np.array([[0.0, 0.0, 0.0], [0.02, 0.18, 0.5], [0.7, 0.05, 0.3], [1.0, 1.0, 1.0]], np.float32)


def working_space_for(converter: ColorConverter, plate_space: str) -> str:
    """The linear-light space in which the network's residual is added to the plate.

    A scene-linear plate is its own working space, so solid foreground is the plate bit for bit. An
    encoded plate (sRGB, log) cannot take an additive residual meaningfully, so it is first taken to
    the config's scene_linear role.
    """
    spaces = converter.spaces
    plate_space = spaces.validate_space(plate_space, field="plate colour space")
    cs = spaces.config.getColorSpace(plate_space)
    if cs.isData():
        return plate_space  # OCIO never transforms data; nothing else would be meaningful.
    encoding = cs.getEncoding()
    if encoding:
        linear = encoding == "scene-linear"
    else:
        linear = _behaves_linearly(converter, plate_space)
    return plate_space if linear else spaces.scene_linear


def _behaves_linearly(converter: ColorConverter, space: str) -> bool:
    # Configs without encoding tags: a space is scene-linear if its path to scene_linear is linear.
    spaces = converter.spaces
    if space == spaces.scene_linear:
        return True
    if spaces.config.getColorSpace(space).getReferenceSpaceType() != ocio.REFERENCE_SPACE_SCENE:
        return False
    mapped = converter.convert(_LINEARITY_SAMPLES, space, spaces.scene_linear)
    doubled = converter.convert(_LINEARITY_SAMPLES * 2.0, space, spaces.scene_linear)
    return bool(np.allclose(mapped[0], 0.0, atol=1e-6) and np.allclose(doubled, 2.0 * mapped, rtol=1e-4))


def _pixels(image: np.ndarray) -> np.ndarray:
    """``image`` as one row per pixel (a view wherever the layout allows, so writes reach ``image``)."""
    image = np.asarray(image)
    return image.reshape(-1, image.shape[-1])


def compose_foreground(
    converter: ColorConverter,
    plate_rgb_scene: np.ndarray,
    src_model: np.ndarray,
    fgr_model: np.ndarray,
    alpha: np.ndarray,
    plate_space: str,
    output_space: str,
    dtype: type[np.floating] = np.float32,
) -> np.ndarray:
    """Build the premultiplied RGBA output (H×W×4, float32 or ``dtype``, in ``output_space``).

    The residual ``fgr - src`` is taken into linear light and added to the unclipped plate, faded out
    over the last ``SOLID_ALPHA_RAMP`` below alpha 1.0 so that solid foreground is the plate exactly.
    Alpha itself never passes through a colour transform.

    ``src_model`` must be the clipped model-space image the network was given (``to_model``'s
    output); ``alpha`` is H×W or H×W×1. ``dtype=np.float16`` gives the float32 result rounded to half
    (bit for bit what the EXR writer's own conversion makes of it) without a float32 frame in between:
    the writer's path, which saves a full-frame pass and half the memory traffic.
    """
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"compose_foreground makes float32 or float16 pixels, not {np.dtype(dtype).name}")
    plate_rgb_scene = np.asarray(plate_rgb_scene, dtype=np.float32)
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.ndim == plate_rgb_scene.ndim - 1:
        alpha = alpha[..., None]
    if alpha.shape != plate_rgb_scene.shape[:-1] + (1,):
        raise ValueError(f"alpha of shape {alpha.shape} does not match plate {plate_rgb_scene.shape}")
    if np.shape(src_model) != plate_rgb_scene.shape or np.shape(fgr_model) != plate_rgb_scene.shape:
        raise ValueError(
            f"plate {plate_rgb_scene.shape}, source {np.shape(src_model)} and foreground "
            f"{np.shape(fgr_model)} must have the same shape"
        )

    spaces = converter.spaces
    plate_space = spaces.validate_space(plate_space, field="plate colour space")
    output_space = spaces.validate_space(output_space, field="output_colorspace")
    work = working_space_for(converter, plate_space)

    # ``base`` is the plate in the working space. In the usual case (a scene-linear plate written to its
    # own space) it is the plate itself, never copied: it is only read, and premultiplication writes
    # straight into the output, so a 1080p frame costs one pass instead of four.
    base = plate_rgb_scene if plate_space == work else converter.convert(plate_rgb_scene, plate_space, work)
    # The residual matters only at soft edges: solid foreground keeps the plate, and where alpha is 0
    # premultiplication zeroes whatever is there. Converting just those pixels (a few percent of a
    # frame) keeps the colour work off the render's critical path. Their flat indices are found once: each
    # boolean-mask gather or scatter would scan the whole frame again (about 5 ms each at 1080p).
    a = alpha.reshape(-1)
    edge = np.flatnonzero((a > 0.0) & (a < 1.0))
    edge_fg: np.ndarray | None = None
    if edge.size:
        weight = np.clip((1.0 - a[edge]) / SOLID_ALPHA_RAMP, 0.0, 1.0)[:, None]
        residual = converter.convert(_pixels(fgr_model)[edge], spaces.model_space, work)
        residual -= converter.convert(_pixels(src_model)[edge], spaces.model_space, work)
        # Where the ramp weight is 0 the plate stays bit for bit, signed zeros included.
        edge_plate = _pixels(base)[edge]
        edge_fg = np.where(weight > 0.0, edge_plate + weight * residual, edge_plate)
    if work != output_space:
        if base is plate_rgb_scene:
            base = np.array(base, order="C", copy=True)
        if edge_fg is not None:
            _pixels(base)[edge] = edge_fg
            edge_fg = None
        converter.convert_in_place(base, work, output_space)

    rgba = np.empty(plate_rgb_scene.shape[:-1] + (4,), dtype=dtype)
    _premultiply_into(rgba, np.ascontiguousarray(base), alpha)
    if edge_fg is not None:
        # numpy's float32-to-half rounds to nearest even, as torch's does in the strips.
        rgba.reshape(-1, 4)[edge, :3] = edge_fg * a[edge, None]
    return rgba


#: Values (rows × width × 4) of one strip of the premultiply: 128 kB of float32, so a strip's product is
#: still in cache when it is narrowed to half, and under torch's grain size (32768 values) so each op runs
#: on the calling writer thread. Strips of 2**18 values went parallel, and on the loaded 2-core VM their
#: OpenMP barriers, fighting the network's pool, cost a median 115 CPU-ms a 1080p frame instead of 18.
_STRIP_VALUES = 1 << 15


def _premultiply_into(rgba: np.ndarray, base: np.ndarray, alpha: np.ndarray) -> None:
    """``rgba = (base * alpha, alpha)``, strip by strip.

    The half output is rounded from the float32 product of each strip, exactly as converting the whole
    float32 frame would be, without that frame: at 1080p 17-20 CPU-ms against 20-32 for the whole-frame
    product and conversion, measured interleaved (bench/README.md).
    """
    out = torch.from_numpy(rgba.reshape(-1, rgba.shape[-1]) if rgba.ndim != 3 else rgba)
    colour = torch.from_numpy(base.reshape(out.shape[:-1] + (3,)))
    matte = torch.from_numpy(alpha.reshape(out.shape[:-1] + (1,)))
    if out.numel() == 0:
        return
    per_row = out[0].numel()
    rows = max(1, _STRIP_VALUES // max(per_row, 1))
    scratch = None if out.dtype == torch.float32 else torch.empty((rows, *out.shape[1:]), dtype=torch.float32)
    for top in range(0, out.shape[0], rows):
        bottom = min(top + rows, out.shape[0])
        target = out[top:bottom] if scratch is None else scratch[: bottom - top]
        torch.mul(colour[top:bottom], matte[top:bottom], out=target[..., :3])
        target[..., 3:] = matte[top:bottom]
        if scratch is not None:
            out[top:bottom] = target
