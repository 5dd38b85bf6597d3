"""Nuke 15's public Python API as a set of names, read from ``reference/nuke15_api.txt`` in the shared data.

The stand-in ``nuke`` module refuses every name that is not here, so a call that no real Nuke has fails
in the tests exactly as it would in Nuke (with AttributeError), instead of passing against a stand-in
that happens to have it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..conftest import SHARED

API_LIST = SHARED / "reference" / "nuke15_api.txt"

#: Names a real Nuke 15 has that the list lacks, each with the reason. The list was generated from stubs,
#: which hold the module's functions, constants and classes but not the instances it creates at import.
NOT_IN_LIST = {
    "nuke": {
        "nodes": "the module's instance of nuke.Nodes (nuke.nodes.Blur() makes a Blur without connecting it), "
        "used throughout Foundry's Python Developer Guide ('Getting Started: Creating Nodes')",
    },
}


@dataclass
class NukeAPI:
    """Top-level names per module, and for each class its bases and its own methods."""

    names: dict[str, set[str]] = field(default_factory=dict)
    bases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    own_methods: dict[str, set[str]] = field(default_factory=dict)

    def has(self, module: str, name: str) -> bool:
        return name in self.names.get(module, set()) or name in NOT_IN_LIST.get(module, {})

    def methods(self, cls: str, module: str = "nuke") -> set[str]:
        """Every method of ``module.cls``, its bases' included (a base outside the list adds nothing)."""
        found: set[str] = set()
        pending = [f"{module}.{cls}"]
        seen: set[str] = set()
        while pending:
            qualified = pending.pop()
            if qualified in seen:
                continue
            seen.add(qualified)
            found |= self.own_methods.get(qualified, set())
            prefix = qualified.rsplit(".", 1)[0]
            pending.extend(f"{prefix}.{base}" for base in self.bases.get(qualified, ()))
        return found


def parse_api(text: str) -> NukeAPI:
    """Read the list: ``nuke.X`` / ``nuke.X()`` (a name), ``nuke.C.m()`` (a method), ``nuke.C < A, B`` (bases)."""
    api = NukeAPI()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if " < " in line:
            qualified, bases = line.split(" < ", 1)
            api.bases[qualified] = tuple(b.strip() for b in bases.split(","))
            line = qualified
        parts = line.removesuffix("()").split(".")
        if len(parts) == 2:
            api.names.setdefault(parts[0], set()).add(parts[1])
        elif len(parts) == 3:
            api.own_methods.setdefault(f"{parts[0]}.{parts[1]}", set()).add(parts[2])
        else:
            raise ValueError(f"{API_LIST}: cannot read {raw!r}")
    return api


def load_api(path: Path = API_LIST) -> NukeAPI:
    if not path.is_file():
        raise RuntimeError(f"Nuke's API list not found at {path}; set RVM_VFX_SHARED to the shared/ folder")
    return parse_api(path.read_text(encoding="utf-8"))


API = load_api()
