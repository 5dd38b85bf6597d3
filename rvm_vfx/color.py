"""Colour management between a studio's plates and the space RVM was trained in: one handle per render.

RVM learnt on sRGB-encoded video in [0, 1]; plates arrive in whatever space the studio's OCIO config
describes, often scene-linear with highlights far above 1.0. A render needs three things from the config,
each in its own module: the names of its spaces (:mod:`rvm_vfx.colorspaces`), conversions between them
(:mod:`rvm_vfx.color_convert`) and the plate-keeping foreground rule (:mod:`rvm_vfx.compositing`).
:class:`ColorPipeline` binds the three to one config, so the renderer, the CLI and the quality tools pass
one object around.
"""

from __future__ import annotations

import numpy as np
import PyOpenColorIO as ocio

from rvm_vfx import compositing
from rvm_vfx.color_convert import ColorConverter
from rvm_vfx.colorspaces import BUILTIN_CONFIG, MODEL_SPACE_CANDIDATES, ColorSpaces, load_config
from rvm_vfx.compositing import SOLID_ALPHA_RAMP

__all__ = [
    "BUILTIN_CONFIG",
    "MODEL_SPACE_CANDIDATES",
    "SOLID_ALPHA_RAMP",
    "ColorPipeline",
    "load_config",
]


class ColorPipeline:
    """Colour transforms of one render, bound to one OCIO config.

    Safe to share between the reader, network and writer threads of a render (see
    :class:`~rvm_vfx.colorspaces.ColorSpaces` and :class:`~rvm_vfx.color_convert.ColorConverter`).
    """

    def __init__(self, config: ocio.Config | None = None, *, model_space: str | None = None) -> None:
        self.spaces = ColorSpaces(config, model_space=model_space)
        self.converter = ColorConverter(self.spaces)

    # ------------------------------------------------------------------ names

    @property
    def config(self) -> ocio.Config:
        return self.spaces.config

    @property
    def config_name(self) -> str:
        return self.spaces.config_name

    @property
    def scene_linear(self) -> str:
        return self.spaces.scene_linear

    @property
    def model_space(self) -> str:
        return self.spaces.model_space

    @property
    def data_space(self) -> str:
        return self.spaces.data_space

    def validate_space(self, name: str, field: str = "colorspace") -> str:
        return self.spaces.validate_space(name, field)

    def resolve_input_space(self, explicit: str | None, file_colorspace: str | None, is_float: bool) -> str:
        return self.spaces.resolve_input_space(explicit, file_colorspace, is_float)

    # ------------------------------------------------------------ conversion

    def convert(self, rgb: np.ndarray, src: str, dst: str) -> np.ndarray:
        return self.converter.convert(rgb, src, dst)

    def to_model(self, rgb: np.ndarray, space: str) -> tuple[np.ndarray, float]:
        return self.converter.to_model(rgb, space)

    # ----------------------------------------------------------- compositing

    def working_space_for(self, plate_space: str) -> str:
        return compositing.working_space_for(self.converter, plate_space)

    def compose_foreground(
        self,
        plate_rgb_scene: np.ndarray,
        src_model: np.ndarray,
        fgr_model: np.ndarray,
        alpha: np.ndarray,
        plate_space: str,
        output_space: str,
        dtype: type[np.floating] = np.float32,
    ) -> np.ndarray:
        return compositing.compose_foreground(
            self.converter, plate_rgb_scene, src_model, fgr_model, alpha, plate_space, output_space, dtype
        )
