"""Import the Blender add-on as a package, the way Blender imports it, in a Python without Blender.

The add-on's ``__init__`` imports its bpy modules only in ``register()``, so the package and its host-free
modules (``jobspec``, ``engine``, the vendored ``vendor.rvm_spec``) import anywhere, relative imports and all. This
file needs only the standard library: run as a script (``python addon_package.py jobspec engine``) it
imports those modules in a fresh interpreter and prints, as JSON, the top-level name of every module then
loaded, so a test can see everything the host-free modules pull in.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ADDON_DIR = Path(__file__).resolve().parents[2] / "plugins" / "blender"
#: The add-on's package name here; in Blender it is ``bl_ext.<repository>.rvm_matte``. Never ``rvm_vfx``.
PACKAGE = "rvm_blender"


def addon_module(name: str) -> ModuleType:
    """``<add-on>.<name>``, the add-on package imported from its folder first if it is not yet."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, ADDON_DIR / "__init__.py", submodule_search_locations=[str(ADDON_DIR)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.{name}")


if __name__ == "__main__":
    for module in sys.argv[1:]:
        addon_module(module)
    print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
