"""RVM Matte: Robust Video Matting mattes of people in Blender's compositor.

A thin host adapter over the rvm-vfx engine, which runs as a subprocess from its own environment (torch
never enters Blender's Python). See jobspec.py for what is asked of the engine, engine.py for how it is
run, compositor.py for the Blender 4.2/5.x compositor differences; ``vendor.rvm_spec`` is the engine's contract
package, vendored by ``tools/vendor_spec.py``.

The modules that need ``bpy`` are imported by ``register()``, not here, so that the package itself, and
its host-free modules (``jobspec``, ``engine``, ``vendor.rvm_spec``), import in any Python: the engine's test suite
imports them as a package, the way Blender does, without a Blender.
"""

from __future__ import annotations

from types import ModuleType


def _host_modules() -> tuple[ModuleType, ...]:
    """The modules that register with Blender, in registration order."""
    from . import finetune_ops, operators, props, sequencer, ui

    return (props, operators, sequencer, ui, finetune_ops)  # finetune_ops' panel sits inside ui's


def register() -> None:
    for module in _host_modules():
        module.register()


def unregister() -> None:
    for module in reversed(_host_modules()):
        module.unregister()
