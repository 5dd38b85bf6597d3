"""The contract's shared names: temporary frames, extensions, the weights cache and checkpoints, exit codes."""

from __future__ import annotations

import os

import pytest

from rvm_vfx.spec import exits, names
from rvm_vfx.spec.errors import InputError


def test_a_temporary_frame_name_is_hidden_beside_its_frame_and_reads_back() -> None:
    path = names.temporary_frame_path("/o/sh010/m.1001.exr", pid=4242, token="0123abcd")
    assert path == "/o/sh010/.m.1001.exr.4242.0123abcd.tmp.exr"
    assert names.parse_temporary_frame_name(os.path.basename(path)) == ("m.1001.exr", 4242)


def test_two_writers_of_one_frame_get_different_temporary_names() -> None:
    first = names.temporary_frame_path("/o/m.1001.exr")
    second = names.temporary_frame_path("/o/m.1001.exr")
    assert first != second
    assert names.parse_temporary_frame_name(os.path.basename(first)) == ("m.1001.exr", os.getpid())


@pytest.mark.parametrize(
    "name",
    [
        "m.1001.exr",
        ".m.1001.exr.tmp",
        ".m.1001.exr.12.0123abcd.tmp",
        ".m.1001.exr.x.0123abcd.tmp.exr",
        ".12.0123abcd.tmp.exr",
    ],
)
def test_other_names_are_not_temporary_frames(name: str) -> None:
    assert names.parse_temporary_frame_name(name) is None


def test_extensions() -> None:
    assert names.is_video("/p/clip.MOV") and names.is_video("c.webm") and not names.is_video("p.####.exr")
    assert names.VIDEO_EXTENSIONS == {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
    assert {".exr", ".dpx", ".tif", ".tiff", ".png", ".jpg", ".jpeg"} <= names.IMAGE_EXTENSIONS
    assert not names.IMAGE_EXTENSIONS & names.VIDEO_EXTENSIONS
    assert names.OUTPUT_EXTENSION == ".exr"
    assert names.is_ocio_address("ocio://cg-config-latest") and not names.is_ocio_address("/c/config.ocio")


def test_the_cache_follows_xdg_else_the_home_folder(monkeypatch) -> None:
    assert names.cache_dir({"XDG_CACHE_HOME": "/farm/cache"}) == "/farm/cache/rvm-vfx"
    monkeypatch.setenv("HOME", "/home/artist")
    assert names.cache_dir({}) == "/home/artist/.cache/rvm-vfx"
    assert names.cache_dir({"XDG_CACHE_HOME": ""}) == "/home/artist/.cache/rvm-vfx"
    monkeypatch.setenv("XDG_CACHE_HOME", "/env/cache")
    assert names.cache_dir() == "/env/cache/rvm-vfx"


def test_checkpoints() -> None:
    assert names.ENCODERS == ("mobilenetv3", "resnet50")
    assert names.OFFICIAL_CHECKPOINTS == {"mobilenetv3": "rvm_mobilenetv3.pth", "resnet50": "rvm_resnet50.pth"}
    assert names.OFFICIAL_URLS["mobilenetv3"] == (
        "https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0/rvm_mobilenetv3.pth"
    )
    assert names.OFFICIAL_URLS["resnet50"].endswith("/v1.0.0/rvm_resnet50.pth")
    env = {"XDG_CACHE_HOME": "/c"}
    assert names.official_checkpoint_path("resnet50", env) == "/c/rvm-vfx/rvm_resnet50.pth"
    assert names.default_checkpoint(env) == "/c/rvm-vfx/rvm_mobilenetv3.pth"
    assert names.default_checkpoint({**env, "RVM_VFX_CHECKPOINT": "/w/mine.pth"}) == "/w/mine.pth"
    assert names.default_checkpoint({**env, "RVM_VFX_CHECKPOINT": ""}) == "/c/rvm-vfx/rvm_mobilenetv3.pth"


def test_exit_codes() -> None:
    assert (exits.EXIT_OK, exits.EXIT_FAILED, exits.EXIT_BAD_INPUT) == (0, 1, 2)
    assert exits.exit_code(InputError("bad frame range")) == 2
    assert exits.exit_code(OSError("disk full")) == 1
    assert exits.exit_code(KeyboardInterrupt()) == 1
    assert set(exits.MEANINGS) == {0, 1, 2}
