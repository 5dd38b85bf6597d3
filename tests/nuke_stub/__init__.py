"""Test helpers for the Nuke plugin: where it lives, a stand-in ``nuke`` module and a fake engine."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from ..fake_engine import kill_fake_engines

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins" / "nuke"
# The plugins share one fake engine, which speaks the protocol through the contract (tests/fake_engine.py).
FAKE_ENGINE = Path(__file__).resolve().parents[1] / "fake_engine.py"
__all__ = ["FAKE_ENGINE", "PLUGIN_DIR", "kill_fake_engines", "plugin_module"]


def plugin_module(name: str) -> ModuleType:
    """Import a module of the plugin as Nuke would: with the plugin folder on ``sys.path``."""
    if str(PLUGIN_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGIN_DIR))
    return importlib.import_module(name)
