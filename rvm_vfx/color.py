"""Colour management between a studio's plates and the space RVM was trained in.

RVM learnt on sRGB-encoded video in [0, 1]; plates arrive in whatever space the studio's OCIO config
describes, often scene-linear with highlights far above 1.0. This module is the one place that knows
both sides: it takes plates into the network's space (clipping there, because OCIO does not and the
network has never seen anything outside [0, 1]) and builds the output foreground from the plate itself,
so that the network's small colour errors never reach solid foreground and highlights survive.

Every transform goes through PyOpenColorIO, never through OpenImageIO's own colour code: the two bundle
different OCIO versions and would disagree on what the built-in configs contain.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading

import numpy as np
import PyOpenColorIO as ocio
import torch

from rvm_vfx.errors import ColorSpaceError, InputError

__all__ = [
    "BUILTIN_CONFIG",
    "MODEL_SPACE_CANDIDATES",
    "SOLID_ALPHA_RAMP",
    "ColorPipeline",
    "load_config",
]

log = logging.getLogger(__name__)

#: Pinned, versioned built-in config. ``ocio://default`` would follow whatever OCIO release is installed,
#: so two machines on a farm could render the same job through different configs.
BUILTIN_CONFIG = "ocio://cg-config-v5.0.0_aces-v2.1_ocio-v2.6"

#: Names under which configs in the wild carry the sRGB-encoded Rec.709 (texture) space, best first.
#: Studio configs rename spaces freely, so the first one the config knows (as a name, alias or role) wins.
MODEL_SPACE_CANDIDATES: tuple[str, ...] = (
    "sRGB Encoded Rec.709 (sRGB)",
    "srgb_tx",
    "sRGB - Texture",
    "srgb_texture",
    "srgb_rec709_scene",
    "Utility - sRGB - Texture",
    "Input - Generic - sRGB - Texture",
    "sRGB",
    "srgb",
)

#: Alpha below 1.0 over which the network's residual fades in. Solid foreground (alpha == 1) keeps the
#: plate's own value; an alpha of 0.99 or less gets the full decontaminating residual.
SOLID_ALPHA_RAMP = 0.01

#: How OCIO names the configs it bundles, and the aliases it resolves to one of them.
_BUILTIN_SCHEME = "ocio://"
_BUILTIN_ALIASES = ("default", "cg-config-latest", "studio-config-latest")

#: What a matte is tagged with when the config has no data space of its own.
_RAW_SPACE = "Raw"

# PyOpenColorIO's missing-file error is not a subclass of its general one.
_OCIO_ERRORS = (ocio.Exception, ocio.ExceptionMissingFile)

# The name the pinned built-in config uses for the model space; used to identify the equivalent space in a
# studio config that names it differently (via its interchange roles).
_BUILTIN_MODEL_SPACE = "srgb_tx"

# OpenImageIO's generic names that are not colour spaces of any config but have an obvious meaning.
_OIIO_LINEAR_NAMES = frozenset({"linear", "scene_linear", "scene-linear"})
_OIIO_SRGB_NAMES = frozenset({"srgb", "srgb_texture", "srgb_tx", "srgb_rec709_scene"})


def load_config(path: str | None = None) -> ocio.Config:
    """Load the OCIO config a render must use: ``path``, else ``$OCIO``, else the pinned built-in.

    A studio sets ``$OCIO`` once for every tool, so honouring it keeps our output consistent with Nuke's
    and Blender's view of the same plates.
    """
    source = "path"
    if not path:
        path = os.environ.get("OCIO") or None
        source = "$OCIO"
    if not path:
        path, source = BUILTIN_CONFIG, "built-in"
    if path.startswith(_BUILTIN_SCHEME):
        _check_builtin_name(path, "ocio_config" if source == "path" else source)
    try:
        return ocio.Config.CreateFromFile(path)
    except _OCIO_ERRORS as exc:
        raise InputError(f"cannot load OCIO config {path!r} (from {source}): {exc}") from exc


def _check_builtin_name(uri: str, source: str) -> None:
    """Refuse an ``ocio://`` name OCIO does not bundle, listing the ones it does.

    OCIO's own error ("Could not find ... in the built-in configurations") reads like a missing file;
    a mistyped or too-new version string is the usual cause, and the list shows the right spelling.
    """
    resolved = ocio.ResolveConfigPath(uri)  # the aliases (default, *-latest) resolve to a bundled name
    registry = ocio.BuiltinConfigRegistry()
    if resolved.removeprefix(_BUILTIN_SCHEME) in registry:
        return
    known = [_BUILTIN_SCHEME + name for name in (*_BUILTIN_ALIASES, *registry)]
    close = difflib.get_close_matches(uri, known, n=1, cutoff=0.8)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InputError(
        f"unknown built-in OCIO config {uri!r} ({source}): OCIO {ocio.__version__} bundles no config of that "
        f"name{hint}; built-in configs: {', '.join(known)}"
    )


class ColorPipeline:
    """Colour transforms of one render, bound to one OCIO config.

    Safe to share between the reader, network and writer threads of a render: processors are built once
    per pair of spaces under a lock, and OCIO CPU processors may be applied concurrently.
    """

    def __init__(self, config: ocio.Config | None = None, *, model_space: str | None = None) -> None:
        self.config: ocio.Config = config if config is not None else load_config()
        self._lock = threading.Lock()
        self._processors: dict[tuple[str, str], ocio.CPUProcessor] = {}
        self._file_space_cache: dict[tuple[str, bool], str] = {}
        self._builtin: ocio.Config | None = None

        if not self.config.hasRole(ocio.ROLE_SCENE_LINEAR):
            raise ColorSpaceError(
                f"OCIO config {self.config_name!r} has no 'scene_linear' role; "
                "rvm-vfx needs it to know the space of float plates and of its output"
            )
        self.scene_linear: str = self.validate_space(ocio.ROLE_SCENE_LINEAR, field="scene_linear role")
        self.model_space: str = (
            self.validate_space(model_space, field="model_colorspace")
            if model_space
            else self._find_model_space()
        )

    # ------------------------------------------------------------------ names

    @property
    def data_space(self) -> str:
        """The space a matte is tagged with: mattes are data, not colour, and no reader may convert them.

        The config's ``data`` role names it; a config without one may still have a data space of its own;
        failing both, ``Raw``, the name OCIO's configs, Nuke and OpenImageIO all take as data.
        """
        if self.config.hasRole(ocio.ROLE_DATA):
            return self.validate_space(ocio.ROLE_DATA, field="data role")
        for cs in self.config.getColorSpaces(ocio.SEARCH_REFERENCE_SPACE_ALL, ocio.COLORSPACE_ALL):
            if cs.isData():
                return cs.getName()
        return _RAW_SPACE

    @property
    def config_name(self) -> str:
        """A name for the config that can go into messages and EXR metadata."""
        return self.config.getName() or "<unnamed OCIO config>"

    def validate_space(self, name: str, field: str = "colorspace") -> str:
        """Return the config's canonical name for ``name`` (a name, alias or role) or raise.

        Canonical names make equality meaningful ('lin_ap1' and 'ACEScg' are the same space), which is
        what lets identity conversions be skipped and stay bit-exact.
        """
        cs = self.config.getColorSpace(name) if name else None
        if cs is None:
            raise ColorSpaceError(self._unknown_message(name, field))
        return cs.getName()

    def _unknown_message(self, name: str, field: str) -> str:
        candidates = self._all_names()
        by_lower: dict[str, str] = {}
        for cand in candidates:
            by_lower.setdefault(cand.lower(), cand)
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=4, cutoff=0.6)
        message = f"unknown colour space {name!r} ({field})"
        if close:
            return message + "; did you mean: " + ", ".join(repr(by_lower[c]) for c in close) + "?"
        return message + f"; config {self.config_name!r} has no similar name"

    def _all_names(self) -> list[str]:
        names: list[str] = []
        for cs in self.config.getColorSpaces(ocio.SEARCH_REFERENCE_SPACE_ALL, ocio.COLORSPACE_ALL):
            names.append(cs.getName())
            names.extend(cs.getAliases())
        names.extend(self.config.getRoleNames())
        return names

    def _find_model_space(self) -> str:
        for candidate in MODEL_SPACE_CANDIDATES:
            cs = self.config.getColorSpace(candidate)
            if cs is not None:
                return cs.getName()
        identified = self._identify_builtin(_BUILTIN_MODEL_SPACE)
        if identified:
            return identified
        raise ColorSpaceError(
            f"OCIO config {self.config_name!r} has no sRGB-encoded Rec.709 colour space "
            f"(looked for {', '.join(repr(c) for c in MODEL_SPACE_CANDIDATES)}); "
            "name one with model_colorspace"
        )

    def _identify_builtin(self, builtin_name: str) -> str | None:
        """Find the space of our config equivalent to a space of the pinned built-in config.

        OIIO and other tools write interop names from the built-in configs; a studio config that calls the
        same space something else can still be matched through its interchange roles.
        """
        try:
            if self._builtin is None:
                self._builtin = ocio.Config.CreateFromFile(BUILTIN_CONFIG)
            if self._builtin.getColorSpace(builtin_name) is None:
                return None
            name = ocio.Config.IdentifyBuiltinColorSpace(self.config, self._builtin, builtin_name)
        except _OCIO_ERRORS:
            return None
        return self.config.getColorSpace(name).getName() if name else None

    # ---------------------------------------------------------- input spaces

    def resolve_input_space(self, explicit: str | None, file_colorspace: str | None, is_float: bool) -> str:
        """Decide which space a plate's pixel values are in.

        The user's word beats the file's tag because tags are often wrong (a renderer writing 'sRGB' into a
        linear EXR); an unusable tag falls back to the format's convention with a warning rather than
        stopping a farm render, while an unusable explicit name is an error the user must fix.
        """
        if explicit:
            return self.validate_space(explicit, field="input_colorspace")
        if file_colorspace:
            key = (file_colorspace, is_float)
            with self._lock:
                cached = self._file_space_cache.get(key)
            if cached is not None:
                return cached
            resolved = self._space_from_file_tag(file_colorspace)
            if resolved is None:
                resolved = self._default_space(is_float)
                log.warning(
                    "plate colour space %r (oiio:ColorSpace) is unknown to OCIO config %r; "
                    "assuming %r, set input_colorspace to override",
                    file_colorspace,
                    self.config_name,
                    resolved,
                )
            with self._lock:
                self._file_space_cache[key] = resolved
            return resolved
        return self._default_space(is_float)

    def _default_space(self, is_float: bool) -> str:
        # Float files (EXR) are scene-linear by convention; 8/16-bit integer files are sRGB-encoded.
        return self.scene_linear if is_float else self.model_space

    def _space_from_file_tag(self, tag: str) -> str | None:
        cs = self.config.getColorSpace(tag)
        if cs is not None:
            return cs.getName()
        lowered = tag.lower()
        if lowered in _OIIO_LINEAR_NAMES:
            return self.scene_linear
        if lowered in _OIIO_SRGB_NAMES:
            return self.model_space
        return self._identify_builtin(tag)

    # ------------------------------------------------------------ transforms

    def _processor(self, src: str, dst: str) -> ocio.CPUProcessor:
        key = (src, dst)
        with self._lock:
            proc = self._processors.get(key)
            if proc is None:
                try:
                    proc = self.config.getProcessor(src, dst).getDefaultCPUProcessor()
                except _OCIO_ERRORS as exc:
                    raise InputError(
                        f"OCIO config {self.config_name!r} cannot convert {src!r} to {dst!r}: {exc}"
                    ) from exc
                self._processors[key] = proc
        return proc

    def convert(self, rgb: np.ndarray, src: str, dst: str) -> np.ndarray:
        """Return a new float32 copy of ``rgb`` (…×3) converted from ``src`` to ``dst``.

        Always a copy, so callers may modify the result without touching a plate another thread still
        reads; equal spaces are copied untouched, so a round trip through the same space is bit-exact.
        """
        rgb = np.asarray(rgb)
        if rgb.shape[-1:] != (3,):
            raise ValueError(f"expected an RGB array of shape (..., 3), got {rgb.shape}")
        out = np.array(rgb, dtype=np.float32, order="C", copy=True)
        self._apply(out, src, dst)
        return out

    def _apply(self, rgb: np.ndarray, src: str, dst: str) -> None:
        """Convert a C-contiguous float32 …×3 array in place (nothing to do between equal spaces)."""
        src = self.validate_space(src, field="source colour space")
        dst = self.validate_space(dst, field="destination colour space")
        if src != dst and rgb.size:
            self._processor(src, dst).applyRGB(rgb)

    def to_model(self, rgb: np.ndarray, space: str) -> tuple[np.ndarray, float]:
        """Convert plate RGB to the network's sRGB [0, 1] space; return it and the fraction clipped.

        OCIO leaves out-of-range values alone, but the network has never seen them, so they are clipped
        here. The fraction of values (channels, not pixels) that were outside [0, 1] lets a render warn
        about plates the network will see a flattened version of.
        """
        model = self.convert(rgb, space, self.model_space)
        if model.size == 0:
            return model, 0.0
        outside = np.count_nonzero((model < 0.0) | (model > 1.0))
        np.clip(model, 0.0, 1.0, out=model)
        return model, float(outside) / model.size

    def working_space_for(self, plate_space: str) -> str:
        """The linear-light space in which the network's residual is added to the plate.

        A scene-linear plate is its own working space, so solid foreground is the plate bit for bit. An
        encoded plate (sRGB, log) cannot take an additive residual meaningfully, so it is first taken to
        the config's scene_linear role.
        """
        plate_space = self.validate_space(plate_space, field="plate colour space")
        cs = self.config.getColorSpace(plate_space)
        if cs.isData():
            return plate_space  # OCIO never transforms data; nothing else would be meaningful.
        encoding = cs.getEncoding()
        if encoding:
            linear = encoding == "scene-linear"
        else:
            linear = self._behaves_linearly(plate_space)
        return plate_space if linear else self.scene_linear

    def _behaves_linearly(self, space: str) -> bool:
        # Configs without encoding tags: a space is scene-linear if its path to scene_linear is linear.
        if space == self.scene_linear:
            return True
        if self.config.getColorSpace(space).getReferenceSpaceType() != ocio.REFERENCE_SPACE_SCENE:
            return False
        samples = np.array(
            [[0.0, 0.0, 0.0], [0.02, 0.18, 0.5], [0.7, 0.05, 0.3], [1.0, 1.0, 1.0]], np.float32
        )
        mapped = self.convert(samples, space, self.scene_linear)
        doubled = self.convert(samples * 2.0, space, self.scene_linear)
        return bool(np.allclose(mapped[0], 0.0, atol=1e-6) and np.allclose(doubled, 2.0 * mapped, rtol=1e-4))

    def plate_to_output(self, plate_rgb: np.ndarray, plate_space: str, output_space: str) -> np.ndarray:
        """The plate as it appears in solid foreground of the output: same path, same rounding.

        Goes through the working space exactly as ``compose_foreground`` does, so comparisons between the
        two are exact rather than within a tolerance.
        """
        work = self.working_space_for(plate_space)
        return self.convert(self.convert(plate_rgb, plate_space, work), work, output_space)

    def compose_foreground(
        self,
        plate_rgb_scene: np.ndarray,
        src_model: np.ndarray,
        fgr_model: np.ndarray,
        alpha: np.ndarray,
        plate_space: str,
        output_space: str,
    ) -> np.ndarray:
        """Build the premultiplied RGBA output (H×W×4, float32, in ``output_space``).

        The network's foreground is only trustworthy as a *difference* from what it was shown: its
        absolute values are clipped to [0, 1] and off by a couple of code values even in solid
        foreground. So the residual ``fgr - src`` is taken into linear light and added to the unclipped
        plate, faded out over the last ``SOLID_ALPHA_RAMP`` below alpha 1.0 so that solid foreground is
        the plate exactly. Alpha itself never passes through a colour transform.

        ``src_model`` must be the clipped model-space image the network was given (``to_model``'s
        output); ``alpha`` is H×W or H×W×1.
        """
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

        plate_space = self.validate_space(plate_space, field="plate colour space")
        output_space = self.validate_space(output_space, field="output_colorspace")
        work = self.working_space_for(plate_space)

        # ``base`` is the plate in the working space. In the usual case (a scene-linear plate written to its
        # own space) it is the plate itself, never copied: it is only read, and premultiplication writes
        # straight into the output, so a 1080p frame costs one pass instead of four.
        base = plate_rgb_scene if plate_space == work else self.convert(plate_rgb_scene, plate_space, work)
        # The residual matters only at soft edges: solid foreground keeps the plate, and where alpha is 0
        # premultiplication zeroes whatever is there. Converting just those pixels (a few percent of a
        # frame) keeps the colour work off the render's critical path.
        a = alpha[..., 0]
        edge = (a > 0.0) & (a < 1.0)
        edge_fg: np.ndarray | None = None
        if edge.any():
            weight = np.clip((1.0 - a[edge]) / SOLID_ALPHA_RAMP, 0.0, 1.0)[:, None]
            residual = self.convert(np.asarray(fgr_model)[edge], self.model_space, work)
            residual -= self.convert(np.asarray(src_model)[edge], self.model_space, work)
            # Where the ramp weight is 0 the plate stays bit for bit, signed zeros included.
            edge_plate = base[edge]
            edge_fg = np.where(weight > 0.0, edge_plate + weight * residual, edge_plate)
        if work != output_space:
            if base is plate_rgb_scene:
                base = np.array(base, order="C", copy=True)
            if edge_fg is not None:
                base[edge] = edge_fg
                edge_fg = None
            self._apply(base, work, output_space)

        rgba = np.empty(plate_rgb_scene.shape[:-1] + (4,), dtype=np.float32)
        rgba_t = torch.from_numpy(rgba)
        torch.mul(torch.from_numpy(np.ascontiguousarray(base)), torch.from_numpy(alpha), out=rgba_t[..., :3])
        if edge_fg is not None:
            rgba[edge, :3] = edge_fg * alpha[edge]
        rgba_t[..., 3:] = torch.from_numpy(alpha)
        return rgba
