"""Colour-space names: which OCIO config a render uses and what its spaces are called.

Studio configs rename spaces freely ('ACEScg', 'lin_ap1', a role), and plates are tagged with names from
yet other configs, so every name a job, a file or the engine itself uses goes through here and comes out
as the config's canonical name, or as an error that suggests the names the config does know.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading

import PyOpenColorIO as ocio

from rvm_vfx.errors import ColorSpaceError, InputError

__all__ = [
    "BUILTIN_CONFIG",
    "MODEL_SPACE_CANDIDATES",
    "OCIO_ERRORS",
    "ColorSpaces",
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

#: PyOpenColorIO's missing-file error is not a subclass of its general one.
OCIO_ERRORS = (ocio.Exception, ocio.ExceptionMissingFile)

#: How OCIO names the configs it bundles, and the aliases it resolves to one of them.
_BUILTIN_SCHEME = "ocio://"
_BUILTIN_ALIASES = ("default", "cg-config-latest", "studio-config-latest")

#: What a matte is tagged with when the config has no data space of its own.
_RAW_SPACE = "Raw"

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
    except OCIO_ERRORS as exc:
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


class ColorSpaces:
    """The spaces of one OCIO config as a render names them: scene-linear, model, data and the plates'.

    Safe to share between a render's threads: the only mutable state, the decisions about file tags, is
    kept under a lock.
    """

    def __init__(self, config: ocio.Config | None = None, *, model_space: str | None = None) -> None:
        self.config: ocio.Config = config if config is not None else load_config()
        self._lock = threading.Lock()
        self._file_space_cache: dict[tuple[str, bool], str] = {}
        self._builtin: ocio.Config | None = None

        if not self.config.hasRole(ocio.ROLE_SCENE_LINEAR):
            raise ColorSpaceError(
                f"OCIO config {self.config_name!r} has no 'scene_linear' role; "
                "rvm-vfx needs it to know the space of float plates and of its output"
            )
        self.scene_linear: str = self.validate_space(ocio.ROLE_SCENE_LINEAR, field="scene_linear role")
        self.model_space: str = (
            self.validate_space(model_space, field="model_colorspace") if model_space else self._find_model_space()
        )

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
        except OCIO_ERRORS:
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
