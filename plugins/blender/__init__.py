"""RVM Matte: Robust Video Matting mattes of people in Blender's compositor.

A thin host adapter over the rvm-vfx engine, which runs as a subprocess from its own environment (torch
never enters Blender's Python). See jobspec.py for what is asked of the engine, engine.py for how it is
run, compositor.py for the Blender 4.2/5.x compositor differences.
"""

from __future__ import annotations

from . import operators, props, ui

_MODULES = (props, operators, ui)


def register() -> None:
    for module in _MODULES:
        module.register()


def unregister() -> None:
    for module in reversed(_MODULES):
        module.unregister()
