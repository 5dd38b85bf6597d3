"""Shared fixtures: where the read-only project data lives, the real weights, an output folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RVM_VFX_SHARED", ROOT.parent / "shared"))
TFJS_MODEL = SHARED / "models" / "rvm_mobilenetv3_tfjs" / "model.json"
GOLDEN = SHARED / "reference" / "golden_tfjs"
DATA = SHARED / "data"
# Artefacts worth looking at after a run (matte PNGs, tables); ignored by git.
TEST_OUTPUT = ROOT / "test-output"

if not TFJS_MODEL.exists():  # fail loudly: a suite that silently skips its real-data tests checks nothing
    raise RuntimeError(f"project data not found at {SHARED}; set RVM_VFX_SHARED to the shared/ folder")


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def tfjs_model_path() -> Path:
    return TFJS_MODEL


@pytest.fixture(scope="session")
def model():
    """The official weights (TF.js export) loaded once for the whole run; tests must not modify it."""
    from rvm_vfx.weights import load_model

    return load_model(TFJS_MODEL)


@pytest.fixture(scope="session")
def test_output() -> Path:
    TEST_OUTPUT.mkdir(exist_ok=True)
    return TEST_OUTPUT
