"""Shared fixtures: where the read-only project data lives, the real weights, an output folder."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RVM_VFX_SHARED", ROOT.parent / "shared"))
TFJS_MODEL = SHARED / "models" / "rvm_mobilenetv3_tfjs" / "model.json"
GOLDEN = SHARED / "reference" / "golden_tfjs"
DATA = SHARED / "data"
# Artefacts worth looking at after a run (matte PNGs, tables); ignored by git.
TEST_OUTPUT = ROOT / "test-output"
# Set (to 1) where Blender's venv must exist, as in CI: there its absence fails the Blender tests.
REQUIRE_BLENDER_ENV = "RVM_VFX_REQUIRE_BLENDER"

if not TFJS_MODEL.exists():  # fail loudly: a suite that silently skips its real-data tests checks nothing
    raise RuntimeError(f"project data not found at {SHARED}; set RVM_VFX_SHARED to the shared/ folder")


def blender_python_verdict(python: Path, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """None when Blender's venv is there; else ("skip" | "fail", why).

    Blender's venv is an optional step of the README (a user of the command line never needs it), so a
    local run without it skips the Blender tests; CI builds it, and there a missing venv is a broken setup.
    """
    if python.exists():
        return None
    setup = "run bash .ci/setup_blender_env.sh"
    if environ.get(REQUIRE_BLENDER_ENV, "") not in ("", "0"):
        return "fail", f"{python} not found, and {REQUIRE_BLENDER_ENV}=1 says the Blender tests must run: {setup}"
    return "skip", f"{python} not found: Blender's own environment (bpy 5.0.1) is optional; {setup} to run these tests"


def require_blender_python(python: Path) -> None:
    """Skip or fail the calling test (or fixture) as :func:`blender_python_verdict` decides."""
    verdict = blender_python_verdict(python, os.environ)
    if verdict is not None:
        action, reason = verdict
        (pytest.fail if action == "fail" else pytest.skip)(reason)


@pytest.fixture(scope="session")
def model():
    """The official weights (TF.js export) loaded once for the whole run; tests must not modify it."""
    from rvm_vfx.weights import load_model

    return load_model(TFJS_MODEL)


@pytest.fixture(scope="session")
def test_output() -> Path:
    TEST_OUTPUT.mkdir(exist_ok=True)
    return TEST_OUTPUT
