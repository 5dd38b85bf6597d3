"""A full disk under a resumable CLI render: the project's disk-full error, with the space left, and no partial file.

The state folder sits on a real tmpfs with a few KiB left where this machine can mount one; the same failures are
also injected into ``torch.save``, so the logic is checked everywhere.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rvm_vfx.cli import main
from rvm_vfx.errors import OutputError
from rvm_vfx.frame_io import ImageHeader, write_exr
from rvm_vfx.render import frame_is_whole

from .conftest import TFJS_MODEL
from .plates import portrait_clip, write_sequence
from .test_worker_helpers import fill_up, mounted_tmpfs


def _space_left(folder: Path, total_kib: int | str = r"\d+") -> str:
    """The shared disk-full wording (rvm_vfx.errors.disk_full_detail) as a pattern."""
    return rf"No space left on device: \d+ KiB free of {total_kib} KiB on the file system of {re.escape(str(folder))}"


@pytest.fixture
def plate(tmp_path: Path) -> str:
    composites, _ = portrait_clip(3, 128, 72)
    return write_sequence(tmp_path / "plate", "plate", composites)


def _matte_with_state(plate: str, out: Path, state: Path) -> int:
    return main(
        [
            "matte",
            plate,
            str(out / "m.####.exr"),
            "--checkpoint",
            str(TFJS_MODEL),
            "--progress",
            "none",
            "--state-dir",
            str(state),
            "--snapshot-every",
            "1",
        ]
    )


def _assert_whole_frames_only(out: Path) -> None:
    names = sorted(os.listdir(out)) if out.is_dir() else []
    assert [n for n in names if n.startswith(".")] == []
    assert names and all(frame_is_whole(str(out / n)) for n in names), names


def test_cli_snapshot_on_a_real_full_disk(plate: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with mounted_tmpfs(tmp_path / "state", "1m") as state:
        fill_up(state, leave=8192)  # room for the state marker (one page), not for a snapshot (~150 KiB)
        assert _matte_with_state(plate, tmp_path / "out", state) == 1
        err = capsys.readouterr().err
        snapshot = re.escape(str(state / "snapshot.0.pt"))
        assert re.fullmatch(rf"rvm-vfx: error: {snapshot}: cannot write snapshot: {_space_left(state, 1024)}\n", err)
        assert sorted(os.listdir(state)) == ["filler.bin", "render.json"]
    _assert_whole_frames_only(tmp_path / "out")


# How torch.save fails on a full disk: its zip writer's own check after a short write (given a path), or
# the OSError of a Python file's write.
TORCH_FULL_DISK = {
    "unexpected_pos": RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
    "enospc": OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
}


def torch_save_on_a_full_disk(error: BaseException) -> Callable[..., None]:
    """A torch.save that writes the start of an archive, as a full disk lets it, then fails as torch does."""

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        start = b"PK\x03\x04" + b"\0" * 100
        if hasattr(f, "write"):
            f.write(start)
        else:
            Path(f).write_bytes(start)
        raise error

    return save


@pytest.mark.parametrize("failure", sorted(TORCH_FULL_DISK))
def test_cli_snapshot_on_an_injected_full_disk(
    plate: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    monkeypatch.setattr("torch.save", torch_save_on_a_full_disk(TORCH_FULL_DISK[failure]))
    state = tmp_path / "state"
    assert _matte_with_state(plate, tmp_path / "out", state) == 1
    err = capsys.readouterr().err
    snapshot = re.escape(str(state / "snapshot.0.pt"))
    assert re.fullmatch(rf"rvm-vfx: error: {snapshot}: cannot write snapshot: {_space_left(state)}\n", err)
    assert sorted(os.listdir(state)) == ["render.json"]
    _assert_whole_frames_only(tmp_path / "out")


def test_exr_on_a_real_full_disk_uses_the_same_words(tmp_path: Path) -> None:
    """write_exr and save_snapshot describe a full disk through one helper, so the wording is the same."""
    with mounted_tmpfs(tmp_path / "full", "256k") as mount:
        fill_up(mount)
        out = mount / "m.exr"
        with pytest.raises(OutputError) as caught:
            write_exr(out, np.ones((48, 64, 4), np.float32), ImageHeader(width=64, height=48), "ACEScg", {}, "none")
        message = str(caught.value)
        assert message.startswith(f"{out}: cannot write EXR: "), message
        assert re.search(rf"\({_space_left(mount, 256)}\)$", message), message
        assert os.listdir(mount) == ["filler.bin"]
