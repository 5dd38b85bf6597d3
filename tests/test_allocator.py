"""The allocator tuning a render applies to its process: on where it can be, off where asked."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from rvm_vfx.allocator import ENV_VAR

CODE = "from rvm_vfx.allocator import retain_freed_memory as r; print(r(), r())"


def _run(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if env_value is not None:
        env[ENV_VAR] = env_value
    # A fresh interpreter: the tuning is process-wide and happens once, so it cannot be undone in this one.
    return subprocess.run([sys.executable, "-c", CODE], env=env, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning exists for glibc only")
def test_tuned_once_on_glibc() -> None:
    assert _run(None).split() == ["True", "True"]


@pytest.mark.parametrize("value", ["system", " System "])
def test_environment_leaves_the_allocator_alone(value: str) -> None:
    assert _run(value).split() == ["False", "False"]
