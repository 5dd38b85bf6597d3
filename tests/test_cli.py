"""The command line as the plugins and the farm use it: flags, JSON progress lines, exit codes."""

from __future__ import annotations

import json
import os
import re
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


def test_info_reports_a_broken_ocio_config_instead_of_failing(tmp_path: Path, capsys, monkeypatch) -> None:
    # info is what a TD runs to find out why renders fail: a broken $OCIO must show up in it, not stop it.
    broken = tmp_path / "studio.ocio"
    broken.write_text("this is not an OCIO config")
    monkeypatch.setenv("OCIO", str(broken))
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ocio_config"] == str(broken)
    assert info["ocio_error"].startswith(f"cannot load OCIO config {str(broken)!r} (from $OCIO): ")
    assert "scene_linear" not in info and "model_space" not in info


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


# --------------------------------------------------------------------------- matte flags, read back from the EXR


STUDIO_CONFIG = "ocio://studio-config-v5.0.0_aces-v2.1_ocio-v2.6"


@pytest.fixture
def plate4(tmp_path: Path) -> str:
    composites, _ = portrait_clip(4, 128, 72)
    return write_sequence(tmp_path / "plate4", "plate", composites)


def _matte(plate: str, out: Path, *flags: str) -> int:
    return main(["matte", plate, str(out), "--checkpoint", CKPT, "--progress", "json", *flags])


def _header(path: Path) -> dict:
    import OpenEXR

    return OpenEXR.File(str(path)).header()


def _pixels(path: Path):
    return oiio.ImageBuf(str(path)).get_pixels(oiio.FLOAT)


def _events(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_matte_preroll_downsample_and_colorspaces_reach_the_exr_header(
    plate4: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("OCIO", raising=False)
    flags = ("--downsample", "0.5", "--device", "cpu")
    flags += ("--input-colorspace", "srgb_tx", "--output-colorspace", "lin_ap0")
    out = tmp_path / "pre" / "m.####.exr"
    assert _matte(plate4, out, "--frames", "1003-1004", "--preroll", "2", *flags) == 0
    events = _events(capsys)
    assert (events[0]["event"], events[0]["total"], events[0]["first"], events[0]["last"]) == ("start", 2, 1003, 1004)
    assert events[-1]["frames_written"] == "1003-1004"  # the pre-roll frames are run, never written
    assert sorted(os.listdir(out.parent)) == ["m.1003.exr", "m.1004.exr"]
    header = _header(out.parent / "m.1003.exr")
    assert header["rvm:preroll"] == 2
    assert header["rvm:downsample_ratio"] == 0.5
    assert header["rvm:input_colorspace"] == "sRGB Encoded Rec.709 (sRGB)"  # the alias, made canonical
    assert header["rvm:colorspace"] == "ACES2065-1"
    assert header["colorInteropID"] == "lin_ap0_scene"
    assert header["rvm:source"] == str(tmp_path / "plate4" / "plate.1003.png")

    # Pre-roll from 1001 warms the state exactly as rendering 1001-1002 first does.
    assert _matte(plate4, tmp_path / "full" / "m.####.exr", *flags) == 0
    assert _matte(plate4, tmp_path / "cold" / "m.####.exr", "--frames", "1003-1004", *flags) == 0
    capsys.readouterr()
    assert _header(tmp_path / "cold" / "m.1003.exr")["rvm:preroll"] == 0
    warm, full = _pixels(out.parent / "m.1003.exr"), _pixels(tmp_path / "full" / "m.1003.exr")
    cold = _pixels(tmp_path / "cold" / "m.1003.exr")
    assert (warm == full).all()
    assert not (warm == cold).all()


def test_matte_precision_bf16_on_cpu_runs_and_stays_close_to_fp32(plate: str, tmp_path: Path, capsys) -> None:
    flags = ("--frames", "1001-1002", "--device", "cpu", "--output-mode", "alpha")
    assert _matte(plate, tmp_path / "fp32" / "m.####.exr", *flags, "--precision", "fp32") == 0
    assert _matte(plate, tmp_path / "bf16" / "m.####.exr", *flags, "--precision", "bf16") == 0
    assert _events(capsys)[-1]["frames_written"] == "1001-1002"
    fp32, bf16 = _pixels(tmp_path / "fp32" / "m.1002.exr"), _pixels(tmp_path / "bf16" / "m.1002.exr")
    assert not (fp32 == bf16).all()  # the flag reached the session
    # bf16 rounding on the whole path: mean 3.2e-4-4.1e-4 over oneDNN AVX2 (emulated) / AVX-512 BF16 / AMX,
    # ATen avx2 / default and 1-2 threads; 2e-3 is ~5x that (0.02 before).
    assert abs(fp32 - bf16).mean() < 2e-3


def test_matte_missing_hold_fills_a_gap_with_the_frame_before(plate4: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "plate4" / "plate.1003.png").unlink()
    out = tmp_path / "o" / "m.####.exr"
    assert _matte(plate4, out) == 2
    error = _events(capsys)[-1]["error"]
    assert error == {"type": "MissingFramesError", "message": f"{plate4}: missing frames 1003 (of 1001-1004)"}
    assert not out.parent.exists()

    assert _matte(plate4, out, "--missing", "hold") == 0
    events = _events(capsys)
    assert events[0]["total"] == 4 and events[-1]["frames_written"] == "1001-1004"
    assert sorted(os.listdir(out.parent)) == [f"m.{f}.exr" for f in range(1001, 1005)]
    assert _header(out.parent / "m.1003.exr")["rvm:source"] == str(tmp_path / "plate4" / "plate.1002.png")
    assert _header(out.parent / "m.1004.exr")["rvm:source"] == str(tmp_path / "plate4" / "plate.1004.png")


def test_matte_overwrite_is_needed_to_replace_existing_frames(plate: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o" / "m.####.exr"
    args = ["matte", plate, str(out), "--checkpoint", CKPT, "--frames", "1001-1002", "--progress", "none"]
    assert main([*args, "--output-mode", "alpha"]) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"rvm-vfx: error: output exists: {tmp_path / 'o' / 'm.1001.exr'} (2 of 2 frames: 1001-1002); "
        "use --overwrite to replace\n"
    )
    assert list(_header(tmp_path / "o" / "m.1001.exr")["channels"][0].name) == ["A"]  # untouched
    assert [c.name for c in _header(tmp_path / "o" / "m.1002.exr")["channels"]] == ["A"]
    assert main([*args, "--overwrite"]) == 0
    assert [c.name for c in _header(tmp_path / "o" / "m.1002.exr")["channels"]] == ["A", "B", "G", "R"]


def test_matte_layer_reads_an_exr_layer(tmp_path: Path, capsys) -> None:
    composites, _ = portrait_clip(2, 128, 72)
    for i, pixels in enumerate(composites):
        for name, channels in (("plain", ("R", "G", "B")), ("layered", ("diffuse.R", "diffuse.G", "diffuse.B"))):
            spec = oiio.ImageSpec(128, 72, 3, "half")
            spec.channelnames = channels
            path = tmp_path / name / f"{name}.{1001 + i}.exr"
            path.parent.mkdir(exist_ok=True)
            out = oiio.ImageOutput.create(str(path))
            assert out.open(str(path), spec), out.geterror()
            assert out.write_image(pixels), out.geterror()
            out.close()
    layered = str(tmp_path / "layered" / "layered.####.exr")
    assert _matte(layered, tmp_path / "o" / "m.####.exr") == 2
    assert _events(capsys)[-1]["error"] == {
        "type": "ImageReadError",
        "message": f"frame 1001: {tmp_path / 'layered' / 'layered.1001.exr'}: no default (unprefixed R, G, B) "
        "channels; layers in the file: diffuse",
    }
    assert _matte(layered, tmp_path / "o" / "m.####.exr", "--layer", "specular") == 2
    assert _events(capsys)[-1]["error"]["message"] == (
        f"frame 1001: {tmp_path / 'layered' / 'layered.1001.exr'}: layer 'specular' not found; "
        "layers in the file: diffuse"
    )
    assert _matte(layered, tmp_path / "o" / "m.####.exr", "--layer", "diffuse") == 0
    assert _matte(str(tmp_path / "plain" / "plain.####.exr"), tmp_path / "p" / "m.####.exr") == 0
    for frame in (1001, 1002):
        assert (_pixels(tmp_path / "o" / f"m.{frame}.exr") == _pixels(tmp_path / "p" / f"m.{frame}.exr")).all()


def test_matte_start_frame_numbers_a_video(tmp_path: Path, capsys) -> None:
    import av
    import numpy as np

    composites, _ = portrait_clip(3, 128, 72)
    movie = tmp_path / "clip.mp4"
    with av.open(str(movie), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 128, 72, "yuv420p"
        for pixels in composites:
            rgb = np.ascontiguousarray((pixels * 255 + 0.5).astype(np.uint8))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    assert _matte(str(movie), tmp_path / "o" / "m.####.exr", "--start-frame", "101", "--frames", "100-101") == 2
    assert _events(capsys)[-1]["error"]["message"] == f"{movie}: missing frames 100 (of 100-101)"
    assert _matte(str(movie), tmp_path / "o" / "m.####.exr", "--start-frame", "101", "--frames", "102-103") == 0
    events = _events(capsys)
    assert (events[0]["first"], events[0]["last"], events[-1]["frames_written"]) == (102, 103, "102-103")
    assert sorted(os.listdir(tmp_path / "o")) == ["m.0102.exr", "m.0103.exr"]
    # The same video frames numbered from 1 give the same mattes: only the numbering moved.
    assert _matte(str(movie), tmp_path / "d" / "m.####.exr", "--frames", "2-3") == 0
    assert (_pixels(tmp_path / "o" / "m.0103.exr") == _pixels(tmp_path / "d" / "m.0003.exr")).all()


def test_matte_ocio_config_selects_the_config_for_colour_names(plate: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("OCIO", raising=False)
    flags = ("--frames", "1001", "--output-colorspace", "ARRI LogC3 (EI800)")
    assert _matte(plate, tmp_path / "o" / "m.####.exr", *flags) == 2
    assert _events(capsys)[-1]["error"] == {
        "type": "ColorSpaceError",
        "message": "unknown colour space 'ARRI LogC3 (EI800)' (output_colorspace); "
        "config 'cg-config-v5.0.0_aces-v2.1_ocio-v2.6' has no similar name",
    }
    assert _matte(plate, tmp_path / "o" / "m.####.exr", *flags, "--ocio-config", STUDIO_CONFIG) == 0
    assert _events(capsys)[-1]["output_colorspace"] == "ARRI LogC3 (EI800)"
    assert _header(tmp_path / "o" / "m.1001.exr")["rvm:colorspace"] == "ARRI LogC3 (EI800)"
    missing = tmp_path / "nope.ocio"
    assert _matte(plate, tmp_path / "o2" / "m.####.exr", "--ocio-config", str(missing)) == 2
    error = _events(capsys)[-1]["error"]
    assert error["type"] == "InputError"
    assert error["message"].startswith(f"cannot load OCIO config {str(missing)!r} (from path): ")


@pytest.mark.parametrize(
    ("flags", "error_type", "message"),
    [
        (["--downsample", "2"], "InputError", "job field 'downsample': must be in (0, 1], got 2.0"),
        (["--downsample", "0"], "InputError", "job field 'downsample': must be in (0, 1], got 0.0"),
        (["--downsample", "fast"], "InputError", "--downsample: expected 'auto' or a number in (0, 1], got 'fast'"),
        (
            ["--precision", "fp16", "--device", "cpu"],
            "InputError",
            "precision fp16 needs a GPU (cuda or mps); on the CPU use fp32 or bf16",
        ),
        (
            ["--input-colorspace", "ACEScgg"],
            "ColorSpaceError",
            "unknown colour space 'ACEScgg' (input_colorspace); did you mean: 'ACEScg', 'ACEScc', 'aces', 'ACEScct'?",
        ),
        (
            ["--output-colorspace", "sRGB"],
            "ColorSpaceError",
            "unknown colour space 'sRGB' (output_colorspace); did you mean: 'srgb_tx', 'srgb_ap1', 'lin_srgb'?",
        ),
        (["--preroll", "-1"], "InputError", "job field 'preroll': must be >= 0, got -1"),
    ],
)
def test_matte_bad_values_exit_2_with_the_message(
    plate: str, tmp_path: Path, capsys, monkeypatch, flags: list[str], error_type: str, message: str
) -> None:
    monkeypatch.delenv("OCIO", raising=False)
    assert _matte(plate, tmp_path / "o" / "m.####.exr", *flags) == 2
    assert _events(capsys) == [{"event": "error", "error": {"type": error_type, "message": message}}]
    assert not (tmp_path / "o").exists()


def test_matte_device_cuda_without_cuda_exits_2(plate: str, tmp_path: Path, capsys, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["matte", plate, str(tmp_path / "o" / "m.####.exr"), "--checkpoint", CKPT, "--device", "cuda"]) == 2
    assert capsys.readouterr().err == "rvm-vfx: error: device 'cuda' was requested but no CUDA device is available\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--missing", "skip"], "argument --missing: invalid choice: 'skip'"),
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--preroll", "two"], "argument --preroll: invalid int value: 'two'"),
        (["--start-frame", "1.5"], "argument --start-frame: invalid int value: '1.5'"),
    ],
)
def test_matte_flag_choices_are_checked_by_the_parser(flags: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["matte", "a.####.exr", "b.####.exr", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- progress bar, exit 1 in JSON


def test_progress_bar_shows_frames_and_fps(plate: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o" / "m.####.exr"
    assert main(["matte", plate, str(out), "--checkpoint", CKPT, "--frames", "1001-1002", "--progress", "bar"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "2/2" in captured.err and "frame 1002" in captured.err and "frame/s" in captured.err
    last = captured.err.splitlines()[-1]
    assert re.fullmatch(rf"done: 2 frames in \d+\.\d s \(\d+\.\d\d fps\) -> {re.escape(str(out))}", last), last


def test_progress_bar_prints_warnings(tmp_path: Path, capsys) -> None:
    import numpy as np

    composites, _ = portrait_clip(2, 128, 72)
    rgba = [np.concatenate([c, np.ones_like(c[..., :1])], axis=-1) for c in composites]
    plate = write_sequence(tmp_path / "plate", "plate", rgba)
    assert main(["matte", plate, str(tmp_path / "o" / "m.####.exr"), "--checkpoint", CKPT, "--progress", "bar"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: alpha channel 'A' ignored: the matte is computed from RGB\n") == 1
    assert "2/2" in err


def test_unwritable_output_folder_exits_1_with_a_json_error(plate: str, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder must go")
    assert _matte(plate, blocker / "sub" / "m.####.exr", "--frames", "1001") == 1
    message = f"cannot create output folder {blocker / 'sub'}: Not a directory"
    assert _events(capsys) == [{"event": "error", "error": {"type": "OutputError", "message": message}}]
    assert blocker.read_text() == "a file where a folder must go"


# --------------------------------------------------------------------------- info and the installed script


def _versions() -> dict[str, str]:
    import platform

    import PyOpenColorIO
    import torch

    import rvm_vfx

    return {
        "rvm-vfx": rvm_vfx.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "OpenImageIO": oiio.__version__,
        "OpenColorIO": PyOpenColorIO.__version__,
    }


def test_info_reports_versions_as_json_and_text(capsys) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {key: info[key] for key in _versions()} == _versions()
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for key, value in _versions().items():
        assert f"{key:>26}: {value}" in lines
    assert f"{'devices':>26}: {', '.join(info['devices'])}" in lines


def test_installed_console_script(tmp_path: Path) -> None:
    import rvm_vfx

    script = Path(sys.executable).parent / "rvm-vfx"
    assert script.is_file(), f"{script} is not installed (pip install -e .)"
    done = subprocess.run([str(script), "info", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rvm-vfx"] == rvm_vfx.__version__
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert (version.returncode, version.stdout) == (0, f"rvm-vfx {rvm_vfx.__version__}\n")
    bad = subprocess.run(
        [script, "matte", tmp_path / "none.####.exr", tmp_path / "o.####.exr", "--checkpoint", CKPT, "--progress=json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    error = json.loads(bad.stdout.splitlines()[-1])["error"]
    assert error == {"type": "MissingFramesError", "message": f"{tmp_path / 'none.####.exr'}: no frames on disk"}


# --------------------------------------------------------------------------- matte flags derived from the Job's fields


def _flag(flags: tuple[str, ...], help: str, default=None, choices=None, type=None, action: str = "store") -> tuple:
    return flags, default, choices, type, help, action


# The matte parser as it was written by hand before its flags came from the Job's field table. device, precision
# and output_mode had no help then; they now show their field's.
OLD_MATTE_FLAGS = {
    "input": _flag((), "plate: name.####.exr, name.%%04d.exr, name.$F4.exr, a folder, or a video"),
    "output": _flag((), "output EXR pattern, e.g. out/matte.####.exr"),
    "frames": _flag(("--frames",), "frame range, e.g. 1001-1100 or 1001-1050,1060-1100 (default: all)"),
    "layer": _flag(("--layer",), "EXR layer to read (default: rgba)"),
    "start_frame": _flag(("--start-frame",), "number of a video's first frame (default 1)", 1, type=int),
    "missing": _flag(("--missing",), "missing frames: fail or hold", "error", ("error", "hold")),
    "checkpoint": _flag(("--checkpoint",), "weights: .pth, .torchscript or TF.js model.json (default: cached)"),
    "downsample": _flag(("--downsample",), "downsample ratio: auto or a number in (0, 1]", "auto"),
    "device": _flag(
        ("--device",),
        "where the network runs; auto: CUDA, then MPS, then the CPU",
        "auto",
        ("auto", "cpu", "cuda", "mps"),
    ),
    "precision": _flag(
        ("--precision",), "network precision; fp16 and bf16 are faster on GPUs", "fp32", ("fp32", "fp16", "bf16")
    ),
    "ocio_config": _flag(("--ocio-config",), "OCIO config (default: $OCIO, else the built-in CG config)"),
    "input_colorspace": _flag(("--input-colorspace",), "plate colour space (default: file metadata, else by type)"),
    "output_colorspace": _flag(("--output-colorspace",), "output colour space (default: the scene_linear role)"),
    # No parser choices: a wrong name is the Job's error (exit 2, with the list), as it always was.
    "compression": _flag(("--compression",), "EXR compression: zip zips piz dwaa dwab none ...", "zip"),
    "output_mode": _flag(
        ("--output-mode",),
        "premultiplied RGBA, or the alpha channel alone",
        "premultiplied",
        ("premultiplied", "alpha"),
    ),
    "preroll": _flag(("--preroll",), "frames run before the first one to warm the state", 0, type=int),
    "alpha_output": _flag(("--alpha-output",), "also write alpha-only EXRs to this pattern"),
    "fg_output": _flag(("--fg-output",), "also write the straight (unpremultiplied) foreground to this pattern"),
    "overwrite": _flag(("--overwrite",), "replace existing output frames", False, action="store_true"),
    "state_dir": _flag(("--state-dir",), "folder for resume snapshots: run again with it to resume"),
    "snapshot_every": _flag(("--snapshot-every",), "frames between snapshots (default 10)", 10, type=int),
    "progress": _flag(
        ("--progress",),
        "progress display: bar (terminal), json (one object a line, for plugins), none; default auto",
        "auto",
        ("auto", "bar", "json", "none"),
    ),
}


# Flags of fields declared since then: each comes from its one declaration in rvm_vfx/spec/job.py.
ADDED_MATTE_FLAGS = {
    "cuts": _flag(
        ("--cuts",), "shot cuts: auto (detect), none, or the first frames of new shots, e.g. 1012,1040", "auto"
    ),
    "warmup": _flag(
        ("--warmup",), "frames of the shot played in reverse before its first frame to warm the state", 8, type=int
    ),
    "passes": _flag(
        ("--passes",),
        "forward, or bidirectional: also run backward and combine both mattes per frame",
        "forward",
        ("forward", "bidirectional"),
    ),
    "postroll": _flag(
        ("--postroll",),
        "frames after the last one run (in reverse) to warm the backward pass (bidirectional only)",
        0,
        type=int,
    ),
    "garbage_matte": _flag(("--garbage-matte",), "garbage matte sequence: alpha forced to 0 where it is 1"),
    "garbage_channel": _flag(
        ("--garbage-channel",), "garbage matte's channel (default: A, else the only channel, else R)"
    ),
    "invert_garbage": _flag(("--invert-garbage",), "use 1 - the garbage matte", False, action="store_true"),
    "core_matte": _flag(("--core-matte",), "core matte sequence: alpha forced to 1 where it is 1"),
    "core_channel": _flag(("--core-channel",), "core matte's channel (default: A, else the only channel, else R)"),
    "invert_core": _flag(("--invert-core",), "use 1 - the core matte", False, action="store_true"),
    "holdout_matte": _flag(("--holdout-matte",), "hold-out matte sequence: alpha multiplied by 1 - it"),
    "holdout_channel": _flag(
        ("--holdout-channel",), "hold-out matte's channel (default: A, else the only channel, else R)"
    ),
    "invert_holdout": _flag(("--invert-holdout",), "use 1 - the hold-out matte", False, action="store_true"),
}


def _matte_parser():
    import argparse

    from rvm_vfx.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["matte"]


def _action_kind(action) -> str:
    return "store_true" if action.const is True and action.nargs == 0 else "store"


def test_matte_flags_are_the_hand_written_ones() -> None:
    actions = {a.dest: a for a in _matte_parser()._actions if a.dest != "help"}
    got = {
        dest: (tuple(a.option_strings), a.default, a.choices, a.type, a.help, _action_kind(a))
        for dest, a in actions.items()
    }
    assert got == {**OLD_MATTE_FLAGS, **ADDED_MATTE_FLAGS}


def test_matte_help_lists_a_flag_for_every_cli_field(capsys, monkeypatch) -> None:
    from rvm_vfx.spec.job import FIELDS

    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        main(["matte", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    usage = text.split("\n\n", 1)[0]
    flagged = [f for f in FIELDS if f.flag]
    assert {f.name for f in FIELDS if not f.flag} == {"name", "priority", "metadata", "schema_version"}
    for field in flagged:
        if field.flag.startswith("--"):
            assert re.search(rf"^  {re.escape(field.flag)}\b", text, re.MULTILINE), field.flag
        else:
            assert re.search(rf"\s{field.flag}(\s|$)", usage), field.flag
            assert re.search(rf"^  {field.flag}\s", text, re.MULTILINE), field.flag
        # Each flag's help is its field's, but for --snapshot-every, whose default on the command line is its own.
        shown = "frames between snapshots (default 10)" if field.name == "snapshot_every" else field.help
        assert shown.split(" (")[0].split(";")[0] in text, field.name


MATTE_ARGS = [
    "matte",
    "p/plate.####.exr",
    "o/m.####.exr",
    *("--frames", "1001-1010,1020"),
    *("--layer", "beauty"),
    *("--start-frame", "5"),
    *("--missing", "hold"),
    *("--checkpoint", "w/rvm.pth"),
    *("--downsample", "0.5"),
    *("--device", "cpu"),
    *("--precision", "bf16"),
    *("--ocio-config", "ocio://cg-config-v5.0.0_aces-v2.1_ocio-v2.6"),
    *("--input-colorspace", "ACEScg"),
    *("--output-colorspace", "lin_srgb"),
    *("--compression", "dwaa"),
    *("--output-mode", "alpha"),
    *("--preroll", "7"),
    *("--alpha-output", "o/a.####.exr"),
    *("--fg-output", "o/f.####.exr"),
    "--overwrite",
    *("--state-dir", "s"),
    *("--snapshot-every", "4"),
    *("--progress", "none"),
]


def test_a_full_set_of_matte_flags_builds_the_job_it_always_did() -> None:
    from rvm_vfx.cli import _job_from_matte_args, build_parser
    from rvm_vfx.job import Job

    args = build_parser().parse_args(MATTE_ARGS)
    assert _job_from_matte_args(args) == Job(
        input="p/plate.####.exr",
        output="o/m.####.exr",
        frames="1001-1010,1020",
        layer="beauty",
        start_frame=5,
        missing="hold",
        checkpoint="w/rvm.pth",
        downsample=0.5,
        device="cpu",
        precision="bf16",
        ocio_config="ocio://cg-config-v5.0.0_aces-v2.1_ocio-v2.6",
        input_colorspace="ACEScg",
        output_colorspace="lin_srgb",
        compression="dwaa",
        output_mode="alpha",
        alpha_output="o/a.####.exr",
        fg_output="o/f.####.exr",
        preroll=7,
        overwrite=True,
        snapshot_every=4,
    )
    assert (args.state_dir, args.progress) == ("s", "none")


def test_matte_defaults_build_the_default_job_and_snapshots_need_a_state_dir() -> None:
    from rvm_vfx.cli import _job_from_matte_args, build_parser
    from rvm_vfx.job import Job

    parser = build_parser()
    assert _job_from_matte_args(parser.parse_args(["matte", "a.####.exr", "b.####.exr"])) == Job(
        input="a.####.exr", output="b.####.exr"
    )
    # Snapshots are taken only into a state folder: 10 frames apart by default, none without one.
    with_state = parser.parse_args(["matte", "a.####.exr", "b.####.exr", "--state-dir", "s"])
    assert _job_from_matte_args(with_state).snapshot_every == 10
    without = parser.parse_args(["matte", "a.####.exr", "b.####.exr", "--snapshot-every", "3"])
    assert _job_from_matte_args(without).snapshot_every == 0


def test_matte_compression_is_checked_by_the_job_with_its_message(capsys) -> None:
    assert main(["matte", "a.####.exr", "b.####.exr", "--compression", "zstd", "--progress", "json"]) == 2
    assert _events(capsys) == [
        {
            "event": "error",
            "error": {
                "type": "InputError",
                "message": "job field 'compression': expected one of zip, zips, piz, dwaa, dwab, none, rle, pxr24, "
                "b44, b44a, got 'zstd'",
            },
        }
    ]


# --------------------------------------------------------------------------- job files of older schema versions


def _version_1_job(checkpoint: str) -> dict:
    """A job file as plugins wrote them before schema versions (every field of the time), for this plate."""
    from .test_spec_job import version_1_ticket

    return {
        **version_1_ticket(),
        "input": "plate/plate.####.png",
        "output": "renders/m.####.exr",
        "frames": "1001-1002",
        "checkpoint": checkpoint,
        "device": "cpu",
        "ocio_config": None,
        "input_colorspace": None,
        "alpha_output": "renders/a.####.exr",
        "preroll": 1,
    }


def test_a_version_1_job_file_still_renders(plate: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "job.json").write_text(json.dumps(_version_1_job(CKPT)))
    assert main(["render", str(tmp_path / "job.json"), "--progress", "json"]) == 0
    done = _events(capsys)[-1]
    assert done["event"] == "done" and done["frames_written"] == "1001-1002"
    assert sorted(os.listdir(tmp_path / "renders")) == ["a.1001.exr", "a.1002.exr", "m.1001.exr", "m.1002.exr"]
    assert _header(tmp_path / "renders" / "m.1001.exr")["rvm:meta:host"] == "nuke"


def test_a_job_file_newer_than_the_engine_exits_2_saying_so(tmp_path: Path, capsys) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"input": "a.####.exr", "output": "b.####.exr", "schema_version": 3}))
    assert main(["render", str(path), "--progress", "json"]) == 2
    assert _events(capsys)[-1]["error"] == {
        "type": "InputError",
        "message": f"{path}: job field 'schema_version': version 3 is newer than this rvm-vfx reads (up to 2); "
        "update rvm-vfx",
    }
