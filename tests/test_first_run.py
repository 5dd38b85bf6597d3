"""A new user's first hour: the README's first render without weights, and the optional Blender environment."""

from __future__ import annotations

from pathlib import Path

import OpenEXR
import pytest

from rvm_vfx.cli import main
from rvm_vfx.weights import sha256_of

from .conftest import REQUIRE_BLENDER_ENV, TFJS_MODEL, blender_python_verdict
from .plates import portrait_clip, write_sequence

# The hint every missing-checkpoint message ends with, written out here so that a change to it is seen.
HINT = (
    "run `rvm-vfx download-weights` (the official rvm_mobilenetv3.pth), or pass --checkpoint PATH or set "
    "$RVM_VFX_CHECKPOINT to one of: a .pth state_dict, an official TorchScript .torchscript, or a TF.js "
    "model.json or its folder"
)


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A user who has not downloaded anything: no $RVM_VFX_CHECKPOINT, an empty cache."""
    monkeypatch.delenv("RVM_VFX_CHECKPOINT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "rvm-vfx" / "rvm_mobilenetv3.pth"


@pytest.fixture
def plate(tmp_path: Path) -> str:
    composites, _ = portrait_clip(1, 64, 36)
    return write_sequence(tmp_path / "plate", "plate", composites)


def _matte(plate: str, out: Path, *flags: str) -> int:
    return main(["matte", plate, str(out), "--progress", "none", *flags])


def test_first_render_without_weights_says_what_to_do(plate: str, no_weights: Path, tmp_path: Path, capsys) -> None:
    """The README's first render, before `rvm-vfx download-weights`: exit 2, a message that says what to do."""
    out = tmp_path / "out" / "m.####.exr"
    assert _matte(plate, out) == 2
    assert capsys.readouterr().err == (
        f"rvm-vfx: error: no checkpoint given and the default {no_weights} does not exist: {HINT}\n"
    )
    assert not out.parent.exists()


def test_missing_checkpoint_flag_names_the_path_and_the_same_hint(
    plate: str, no_weights: Path, tmp_path: Path, capsys
) -> None:
    missing = tmp_path / "weights" / "rvm_resnet50.pth"
    assert _matte(plate, tmp_path / "out" / "m.####.exr", "--checkpoint", str(missing)) == 2
    assert capsys.readouterr().err == f"rvm-vfx: error: {missing}: checkpoint not found: {HINT}\n"


def test_missing_checkpoint_from_the_environment_names_the_variable(
    plate: str, no_weights: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "typo.pth"
    monkeypatch.setenv("RVM_VFX_CHECKPOINT", str(missing))
    assert _matte(plate, tmp_path / "out" / "m.####.exr") == 2
    assert capsys.readouterr().err == (
        f"rvm-vfx: error: no checkpoint given and $RVM_VFX_CHECKPOINT names {missing}, which does not exist: {HINT}\n"
    )


# --------------------------------------------------------------------------- Blender's optional environment


def test_blender_tests_run_when_the_venv_exists(tmp_path: Path) -> None:
    python = tmp_path / ".venv-blender" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert blender_python_verdict(python, {}) is None
    assert blender_python_verdict(python, {REQUIRE_BLENDER_ENV: "1"}) is None


def test_blender_tests_skip_locally_without_the_venv(tmp_path: Path) -> None:
    python = tmp_path / ".venv-blender" / "bin" / "python"
    expected = (
        "skip",
        f"{python} not found: Blender's own environment (bpy 5.0.1) is optional; "
        "run bash .ci/setup_blender_env.sh to run these tests",
    )
    assert blender_python_verdict(python, {}) == expected
    assert blender_python_verdict(python, {REQUIRE_BLENDER_ENV: "0"}) == expected
    assert blender_python_verdict(python, {REQUIRE_BLENDER_ENV: ""}) == expected


def test_blender_tests_fail_without_the_venv_where_it_is_required(tmp_path: Path) -> None:
    """CI sets RVM_VFX_REQUIRE_BLENDER=1: there a missing venv is a broken setup, not a reason to skip."""
    python = tmp_path / ".venv-blender" / "bin" / "python"
    assert blender_python_verdict(python, {REQUIRE_BLENDER_ENV: "1"}) == (
        "fail",
        f"{python} not found, and RVM_VFX_REQUIRE_BLENDER=1 says the Blender tests must run: "
        "run bash .ci/setup_blender_env.sh",
    )


def test_ci_requires_the_blender_tests_and_runs_the_readme_command() -> None:
    """.ci/run builds Blender's venv, turns the skip into a failure, and runs the README's test command."""
    root = Path(__file__).resolve().parents[1]
    lines = [line.strip() for line in (root / ".ci" / "run").read_text().splitlines()]
    assert "bash .ci/setup_blender_env.sh" in lines
    assert f"export {REQUIRE_BLENDER_ENV}=1" in lines
    assert lines[-1] == ".venv/bin/python -m pytest"
    readme = (root / "README.md").read_text()
    assert "\npython -m pytest\n" in readme and "bash .ci/setup_blender_env.sh" in readme


def test_ci_installs_the_extras_the_readme_installs() -> None:
    """The README's engine install and .ci/run's name the same extras (the export tests need onnxruntime)."""
    root = Path(__file__).resolve().parents[1]
    readme = [line for line in (root / "README.md").read_text().splitlines() if line.startswith("pip install -e ")]
    ci = [line for line in (root / ".ci" / "run").read_text().splitlines() if " install --quiet -e " in line]
    assert readme == ['pip install -e ".[test,farm,export]"']
    assert ci == ['.venv/bin/pip install --quiet -e ".[test,farm,export]"']


def test_a_tfjs_export_folder_is_accepted_as_the_checkpoint(plate: str, tmp_path: Path, capsys) -> None:
    """The hint offers a TF.js model.json "or its folder": the folder must render, hash and all."""
    out = tmp_path / "out" / "m.####.exr"
    assert _matte(plate, out, "--checkpoint", str(TFJS_MODEL.parent)) == 0, capsys.readouterr().err
    header = OpenEXR.File(str(tmp_path / "out" / "m.1001.exr")).header()
    assert header["rvm:checkpoint_sha256"] == sha256_of(TFJS_MODEL)
