"""The command line as the plugins and the farm use it: flags, JSON progress lines, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import OpenImageIO as oiio
import pytest

from rvm_vfx.cli import main

from .conftest import TFJS_MODEL
from .plates import portrait_clip, write_sequence

CKPT = str(TFJS_MODEL)


@pytest.fixture
def plate(tmp_path: Path) -> str:
    composites, _ = portrait_clip(3, 128, 72)
    return write_sequence(tmp_path / "plate", "plate", composites)


def test_matte_writes_frames_and_json_progress(plate: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "m.$F4.exr"
    code = main(
        [
            "matte",
            plate,
            str(out),
            "--checkpoint",
            CKPT,
            "--frames",
            "1002-1003",
            "--progress",
            "json",
            "--compression",
            "dwaa",
            "--alpha-output",
            str(tmp_path / "a" / "a.%04d.exr"),
        ]
    )
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["start", "progress", "progress", "done"]
    assert events[0]["total"] == 2
    assert [(e["frame"], e["done"], e["total"]) for e in events[1:3]] == [(1002, 1, 2), (1003, 2, 2)]
    assert all(e["fps"] > 0 and e["eta_s"] is not None for e in events[1:3])
    assert events[-1]["done"] == 2 and events[-1]["frames_written"] == "1002-1003"
    assert sorted(os.listdir(tmp_path / "out")) == ["m.1002.exr", "m.1003.exr"]
    spec = oiio.ImageInput.open(str(tmp_path / "out" / "m.1002.exr")).spec()
    assert spec.get_string_attribute("compression") == "dwaa"
    alpha_spec = oiio.ImageInput.open(str(tmp_path / "a" / "a.1002.exr")).spec()
    assert list(alpha_spec.channelnames) == ["A"]


def test_render_job_file_with_relative_paths(plate: str, tmp_path: Path, capsys) -> None:
    job = {
        "input": "plate/plate.####.png",
        "output": "renders/m.####.exr",
        "checkpoint": CKPT,
        "output_mode": "alpha",
        "frames": "1001",
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    assert main(["render", str(tmp_path / "job.json"), "--progress", "none"]) == 0
    spec = oiio.ImageInput.open(str(tmp_path / "renders" / "m.1001.exr")).spec()
    assert list(spec.channelnames) == ["A"]


def test_bad_input_exits_2_with_a_json_error(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "matte",
            str(tmp_path / "nothing.####.exr"),
            str(tmp_path / "o.####.exr"),
            "--checkpoint",
            CKPT,
            "--progress",
            "json",
        ]
    )
    assert code == 2
    event = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert event["event"] == "error" and event["error"]["type"] == "MissingFramesError"
    assert event["error"]["message"] == f"{tmp_path / 'nothing.####.exr'}: no frames on disk"


def test_bad_job_field_exits_2_naming_the_field(tmp_path: Path, capsys) -> None:
    (tmp_path / "job.json").write_text(json.dumps({"input": "a.####.exr", "output": "b.####.exr", "preroll": "5"}))
    assert main(["render", str(tmp_path / "job.json")]) == 2
    assert "job field 'preroll': expected integer, got string ('5')" in capsys.readouterr().err


def test_unknown_flag_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["matte", "a", "b", "--no-such-flag"])
    assert exc.value.code == 2


def test_internal_failure_exits_1(plate: str, tmp_path: Path, capsys, monkeypatch) -> None:
    import rvm_vfx.render as render_module

    def explode(*args, **kwargs):
        raise RuntimeError("simulated out-of-memory")

    monkeypatch.setattr(render_module, "render", explode)
    assert main(["matte", plate, str(tmp_path / "o.####.exr"), "--checkpoint", CKPT]) == 1
    assert "rvm-vfx: error: simulated out-of-memory" in capsys.readouterr().err


def test_info_reports_config_and_checkpoint(capsys, monkeypatch) -> None:
    monkeypatch.setenv("RVM_VFX_CHECKPOINT", CKPT)
    monkeypatch.delenv("OCIO", raising=False)
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["default_checkpoint"] == CKPT and info["default_checkpoint_exists"] is True
    assert info["ocio_config"].startswith("ocio://cg-config-v") and info["scene_linear"] == "ACEScg"
    assert "cpu" in info["devices"]


def test_convert_weights_command(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rvm_mobilenetv3_tfjs.pth"
    assert main(["convert-weights", CKPT, str(out)]) == 0
    assert "mobilenetv3, fast_guided_filter" in capsys.readouterr().out
    assert out.stat().st_size > 10_000_000


def test_sigterm_stops_after_the_frame_in_flight(tmp_path: Path) -> None:
    """A real subprocess: SIGTERM once the first frame is reported; frames on disk are whole, none partial."""
    composites, _ = portrait_clip(40, 128, 72)
    plate = write_sequence(tmp_path / "plate", "plate", composites)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rvm_vfx",
            "matte",
            plate,
            str(out / "m.####.exr"),
            "--checkpoint",
            CKPT,
            "--progress",
            "json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(json.loads(line))
        if lines[-1]["event"] == "progress":
            proc.terminate()
            break
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=60) == 1
    assert rest[-1]["event"] == "cancelled" and rest[-1]["stopped"] is True
    written = sorted(os.listdir(out))
    assert 1 <= len(written) < 40 and len(written) == rest[-1]["done"]
    for name in written:
        assert oiio.ImageBuf(str(out / name)).get_pixels(oiio.FLOAT).shape == (72, 128, 4)


def test_matte_resumes_from_its_state_dir(plate: str, tmp_path: Path, capsys) -> None:
    args = [
        "matte",
        plate,
        str(tmp_path / "o" / "m.####.exr"),
        "--checkpoint",
        CKPT,
        "--progress",
        "json",
        "--state-dir",
        str(tmp_path / "state"),
        "--snapshot-every",
        "1",
    ]
    assert main(args) == 0
    assert sorted(os.listdir(tmp_path / "state")) == ["render.json", "snapshot.1.pt", "snapshot.2.pt"]
    (tmp_path / "o" / "m.1003.exr").unlink()
    capsys.readouterr()
    assert main(args) == 0  # no --overwrite needed: the frames are this job's own
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["resumed_from"] == 1002 and events[-1]["frames_written"] == "1003"
