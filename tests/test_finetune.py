"""rvm-vfx finetune: short real trainings on a small real clip (a P3M portrait sliding over a photo).

Every run here is a few iterations on a 128x72 plate with the real weights, so the whole file stays
within a minute or two on 2 cores; what is checked is what a short run can show: the keyframe's error
falls, the checkpoint keeps the official layout and loads strictly, the matte changes, the sidecar says
what was done, bad keyframes are refused by name, a SIGTERM leaves a loadable checkpoint, and one seed
gives one result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rvm_vfx.errors import InputError, OutputError
from rvm_vfx.finetune import FinetuneRequest, FinetuneSettings, finetune
from rvm_vfx.finetune import train as training
from rvm_vfx.finetune.data import WARM_FRAMES, load_shot
from rvm_vfx.model import MattingNetwork
from rvm_vfx.spec.progress import parse_line
from rvm_vfx.weights import load_model, load_state_dict, save_checkpoint, sha256_of

from .conftest import ROOT, SHARED, TFJS_MODEL
from .plates import portrait_clip, write_image, write_sequence

WIDTH, HEIGHT = 128, 72
FRAMES = 8
FIRST = 1001
KEYS = (1003, 1006)


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, list[np.ndarray]]:
    """(plate pattern, keyframe pattern, true alphas) of an 8-frame clip with keyframes 1003 and 1006."""
    folder = tmp_path_factory.mktemp("shot")
    composites, alphas = portrait_clip(FRAMES, WIDTH, HEIGHT, step=4)
    plate = write_sequence(folder, "plate", composites, first=FIRST)
    for frame in KEYS:
        write_image(folder / "keys" / f"roto.{frame:04d}.png", alphas[frame - FIRST])
    return plate, str(folder / "keys" / "roto.####.png"), alphas


def settings(keyframes: str, **overrides: object) -> FinetuneSettings:
    values = {"checkpoint": str(TFJS_MODEL), **overrides}
    return FinetuneSettings(keyframes=keyframes, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(shot, tmp_path_factory: pytest.TempPathFactory):
    """One 12-iteration run (2 keyframes, so leave-one-out folds of 3 iterations each), shared by the checks."""
    plate, keys, _ = shot
    out = tmp_path_factory.mktemp("run") / "shot.pth"
    events: list[dict] = []
    report = finetune(FinetuneRequest(plate, str(out), settings(keys, iterations=12)), progress=events.append)
    return out, report, events


def alphas_of(checkpoint: str | Path, plate: str) -> np.ndarray:
    """Every frame's alpha as the render computes it (the session folds the network for inference)."""
    from rvm_vfx.color import ColorPipeline
    from rvm_vfx.sequence import open_source
    from rvm_vfx.session import MattingSession

    session = MattingSession(load_model(checkpoint), "auto")
    color = ColorPipeline()
    source = open_source(plate)
    out = []
    for frame in source.frames():
        plate_frame = source.read(frame)
        space = color.resolve_input_space(None, plate_frame.colorspace, plate_frame.is_float)
        rgb, _ = color.to_model(plate_frame.rgb, space)
        out.append(session.step(torch.from_numpy(rgb).permute(2, 0, 1)[None])[1][0, 0].numpy())
    return np.stack(out)


# ------------------------------------------------------------------------------------------ a short run


def test_a_short_run_lowers_the_keyframe_error_and_changes_the_matte(shot, trained) -> None:
    plate, _keys, alphas = shot
    out, report, _events = trained
    before = alphas_of(TFJS_MODEL, plate)
    after = alphas_of(out, plate)
    error_before, error_after = (
        float(np.mean([np.abs(m[f - FIRST] - alphas[f - FIRST]).mean() for f in KEYS])) for m in (before, after)
    )
    # The un-augmented keyframe error is what the training loss estimates; 12 steps must lower it clearly.
    assert error_after < 0.9 * error_before, (error_before, error_after)
    assert np.abs(after - before).max() > 0.05  # the matte changed, on every frame the render writes
    assert report.iterations == 12 and report.planned == 12 and report.stopped is None


def test_the_checkpoint_keeps_every_key_shape_and_dtype_and_loads_strictly(trained) -> None:
    out, _report, _events = trained
    base = load_state_dict(TFJS_MODEL)
    written = torch.load(out, map_location="cpu", weights_only=True)
    assert list(written) == list(base)
    assert [(tuple(v.shape), v.dtype) for v in written.values()] == [(tuple(v.shape), v.dtype) for v in base.values()]
    # The official constructor for these weights (the TF.js export's Fast Guided Filter) loads it strictly.
    network = MattingNetwork("mobilenetv3", "fast_guided_filter")
    network.load_state_dict(written, strict=True)
    assert load_model(out).refiner_name == "fast_guided_filter"
    changed = [k for k in base if not torch.equal(base[k], written[k])]
    assert "backbone.features.0.0.weight" in changed and "project_mat.conv.weight" in changed
    unchanged_stats = [k for k in base if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(base[k], written[k]) for k in unchanged_stats)  # BatchNorm statistics stay frozen


def test_the_sidecar_says_what_was_done(shot, trained) -> None:
    plate, keys, _ = shot
    out, report, _events = trained
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sorted(sidecar) == sorted(
        [
            "rvm_vfx", "checkpoint", "sha256", "base_checkpoint", "plate", "keyframes", "settings", "size",
            "downsample_ratio", "device", "torch", "input_colorspaces", "iterations", "time", "loss_curve",
            "best_loss", "validation", "training", "warnings", "stopped", "device_peak_memory_bytes",
        ]
    )  # fmt: skip
    assert sidecar["sha256"] == sha256_of(out)
    assert sidecar["base_checkpoint"] == {"path": str(TFJS_MODEL), "sha256": sha256_of(TFJS_MODEL)}
    assert sidecar["plate"] == plate
    assert sidecar["keyframes"]["pattern"] == keys and sidecar["keyframes"]["frames"] == list(KEYS)
    assert sidecar["settings"] == settings(keys, iterations=12).to_dict()
    assert sidecar["size"] == [WIDTH, HEIGHT] and sidecar["downsample_ratio"] == 1.0  # auto: long side under 512
    assert sidecar["iterations"]["done"] == 12 and sidecar["iterations"]["planned"] == 12
    assert len(sidecar["loss_curve"]) == 12 and all(v > 0 for v in sidecar["loss_curve"])
    assert sidecar["input_colorspaces"] == ["sRGB Encoded Rec.709 (sRGB)"]  # 8-bit PNG: the built-in config's sRGB
    assert sidecar["stopped"] is None and sidecar["device_peak_memory_bytes"] is None  # measured on CUDA only
    folds = sidecar["validation"]
    assert folds["iterations_per_fold"] == 3  # ceil(12 * 0.5 / 2)
    assert [v["keyframe"] for v in folds["keyframes"]] == list(KEYS)
    assert all(set(v) == {"keyframe", "mad_before", "mad_after", "iterations"} for v in folds["keyframes"])
    assert report.validation == folds["keyframes"]


def test_progress_reports_every_step_then_each_held_out_keyframe(trained) -> None:
    _out, _report, events = trained
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and events[0]["total"] == 12 + 2 * 3
    train = [e for e in events if e["event"] == "train"]
    assert [e["iteration"] for e in train] == list(range(1, 19))
    assert [e["phase"] for e in train] == ["train"] * 12 + ["validation"] * 6
    assert train[-1]["eta_s"] == 0.0
    validation = [e for e in events if e["event"] == "validation"]
    assert [e["keyframe"] for e in validation] == list(KEYS)
    parsed = parse_line(json.dumps(train[5]))
    assert (
        parsed is not None and parsed.iteration == 6 and parsed.fraction == 6 / 18 and parsed.loss == train[5]["loss"]
    )


# ------------------------------------------------------------------------------------------ the full layout


def test_a_deep_guided_filter_base_keeps_the_whole_official_layout(shot, tmp_path: Path) -> None:
    """A base with every official key (here the TF.js weights plus a fresh Deep Guided Filter) comes out with all
    380 keys, shapes and dtypes of the reference listing, trained through the refiner at ratio 0.5."""
    plate, keys, _ = shot
    state = MattingNetwork("mobilenetv3", "deep_guided_filter").state_dict()
    state.update({k: v for k, v in load_state_dict(TFJS_MODEL).items() if not k.startswith("refiner.")})
    base = tmp_path / "base.pth"
    save_checkpoint(state, base)
    out = tmp_path / "out.pth"
    finetune(FinetuneRequest(plate, str(out), settings(keys, checkpoint=str(base), iterations=2, downsample=0.5)))
    written = torch.load(out, map_location="cpu", weights_only=True)
    listing = (SHARED / "reference" / "state_dict_mobilenetv3.txt").read_text().splitlines()
    assert [f"{k} {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for k, v in written.items()] == listing
    refiner = [k for k in written if k.startswith("refiner.conv") and k.endswith("weight")]
    assert any(not torch.equal(written[k], state[k]) for k in refiner)  # the refiner was trained too
    MattingNetwork("mobilenetv3", "deep_guided_filter").load_state_dict(written, strict=True)


# ------------------------------------------------------------------------------------------ bad keyframes


def test_a_keyframe_without_its_plate_frame_is_named(shot, tmp_path: Path) -> None:
    plate, _keys, alphas = shot
    write_image(tmp_path / "k.1003.png", alphas[2])
    write_image(tmp_path / "k.1099.png", alphas[2])
    with pytest.raises(InputError) as caught:
        load_shot(plate, settings(str(tmp_path / "k.####.png")))
    assert str(caught.value) == (
        f"{tmp_path / 'k.1099.png'}: keyframe 1099 has no plate frame 1099 in {plate} (plate frames: 1001-1008)"
    )


def test_a_keyframe_of_another_size_is_named(shot, tmp_path: Path) -> None:
    plate, _keys, _ = shot
    write_image(tmp_path / "k.1004.png", np.linspace(0, 1, 64 * 36, dtype=np.float32).reshape(36, 64))
    with pytest.raises(InputError) as caught:
        load_shot(plate, settings(str(tmp_path / "k.####.png")))
    assert str(caught.value) == (
        f"{tmp_path / 'k.1004.png'}: keyframe 1004 is 64×36, its plate frame {plate.replace('####', '1004')} is "
        "128×72; keyframes must be the plate's size"
    )


@pytest.mark.parametrize(("value", "what"), [(0.0, "empty"), (1.0, "constant")])
def test_an_empty_or_constant_keyframe_is_named(shot, tmp_path: Path, value: float, what: str) -> None:
    plate, _keys, _ = shot
    write_image(tmp_path / "k.1002.png", np.full((HEIGHT, WIDTH), value, np.float32))
    with pytest.raises(InputError) as caught:
        load_shot(plate, settings(str(tmp_path / "k.####.png")))
    assert str(caught.value) == (
        f"{tmp_path / 'k.1002.png'}: keyframe 1002: the matte is {what} ({value:g} everywhere in channel 'Y'): it has "
        "no edge to learn from; check the channel or leave this frame out"
    )


def test_nan_in_a_keyframe_is_named(shot, tmp_path: Path) -> None:
    plate, _keys, alphas = shot
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.float32)
    rgba[..., 3] = alphas[4]
    rgba[10, 20:23, 3] = np.nan
    write_image(tmp_path / "k.1005.exr", rgba, "half")
    with pytest.raises(InputError) as caught:
        load_shot(plate, settings(str(tmp_path / "k.####.exr")))
    assert str(caught.value) == (
        f"{tmp_path / 'k.1005.exr'}: keyframe 1005: 3 NaN/Inf values in channel 'A'; fix the matte"
    )


def test_the_keyframe_channel_is_a_then_the_only_one_then_r_or_as_named(shot, tmp_path: Path) -> None:
    plate, _keys, alphas = shot
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.float32)
    rgba[..., 0] = 1.0 - alphas[4]
    rgba[..., 3] = alphas[4]
    write_image(tmp_path / "k.1005.exr", rgba, "half")
    keys = str(tmp_path / "k.####.exr")
    alpha = load_shot(plate, settings(keys)).keyframes[0].alpha.numpy()
    np.testing.assert_allclose(alpha, alphas[4], atol=1e-3)  # half-float rounding of 8-bit values
    red = load_shot(plate, settings(keys, keyframe_channel="R")).keyframes[0].alpha.numpy()
    np.testing.assert_allclose(red, 1.0 - alphas[4], atol=1e-3)
    with pytest.raises(InputError) as caught:
        load_shot(plate, settings(keys, keyframe_channel="mask"))
    assert str(caught.value) == f"{tmp_path / 'k.1005.exr'}: keyframe channel 'mask' not found; channels: R, G, B, A"


def test_bad_keyframes_exit_2_from_the_command_line(shot, tmp_path: Path) -> None:
    plate, _keys, _ = shot
    write_image(tmp_path / "k.1002.png", np.zeros((HEIGHT, WIDTH), np.float32))
    result = run_cli(plate, str(tmp_path / "k.####.png"), str(tmp_path / "o.pth"), "--progress", "json")
    assert result.returncode == 2
    error = parse_line(result.stdout.strip().splitlines()[-1])
    assert error is not None and error.kind == "error" and error.error_type == "InputError"
    assert "keyframe 1002: the matte is empty" in error.error_message
    assert not (tmp_path / "o.pth").exists()


def test_an_existing_checkpoint_is_kept_without_overwrite(shot, tmp_path: Path) -> None:
    plate, keys, _ = shot
    out = tmp_path / "o.pth"
    out.write_bytes(b"earlier")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        finetune(FinetuneRequest(plate, str(out), settings(keys, iterations=1)))
    assert out.read_bytes() == b"earlier"


def test_fp16_on_the_cpu_is_refused_before_training(shot, tmp_path: Path) -> None:
    plate, keys, _ = shot
    with pytest.raises(InputError, match="'precision': fp16 needs a GPU"):
        finetune(FinetuneRequest(plate, str(tmp_path / "o.pth"), settings(keys, device="cpu", precision="fp16")))


# ------------------------------------------------------------------------------------------ stopping


def run_cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "rvm_vfx", "finetune", *args, "--checkpoint", str(TFJS_MODEL)],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False, **kwargs,
    )  # fmt: skip


def test_sigterm_mid_training_writes_a_loadable_checkpoint(shot, tmp_path: Path) -> None:
    plate, keys, _ = shot
    out = tmp_path / "o.pth"
    command = [sys.executable, "-m", "rvm_vfx", "finetune", plate, keys, str(out), "--checkpoint", str(TFJS_MODEL)]
    process = subprocess.Popen(
        [*command, "--iterations", "100000", "--progress", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # signalled once a training step is reported, never after a guessed delay
        lines.append(line)
        event = parse_line(line)
        if event is not None and event.kind == "train" and event.iteration == 2:
            process.send_signal(signal.SIGTERM)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=300) == 1
    last = parse_line(lines[-1])
    assert last is not None and last.kind == "cancelled", lines[-3:]
    assert last.checkpoint == str(out) and last.sidecar == str(tmp_path / "o.json")
    assert 2 <= last.done < 100000 and last.total == 100000
    model = load_model(out)  # loads strictly
    assert model.refiner_name == "fast_guided_filter"
    sidecar = json.loads((tmp_path / "o.json").read_text())
    assert sidecar["stopped"] == "stop" and sidecar["iterations"]["done"] == last.done
    assert sidecar["validation"]["keyframes"] == []
    assert "leave-one-out validation skipped: training was stopped before it could run" in sidecar["warnings"]


def test_the_time_limit_stops_training_and_still_writes(shot, tmp_path: Path) -> None:
    plate, keys, _ = shot
    out = tmp_path / "o.pth"
    # 0.001 min = 60 ms: the limit falls during the first steps (or before them on a slow machine).
    report = finetune(FinetuneRequest(plate, str(out), settings(keys, iterations=100000, time_limit=0.001)))
    assert report.stopped == "time_limit" and report.iterations < 100000
    assert any(w.startswith("time limit of 0.001 min reached after") for w in report.warnings)
    load_model(out)


# ------------------------------------------------------------------------------------------ determinism


def test_one_seed_gives_one_checkpoint(shot, tmp_path: Path) -> None:
    plate, keys, _ = shot

    def weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        out = tmp_path / f"{name}.pth"
        finetune(FinetuneRequest(plate, str(out), settings(keys, iterations=3, seed=seed)))
        return torch.load(out, map_location="cpu", weights_only=True)

    first, again, other = weights("a", 0), weights("b", 0), weights("c", 1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


# ------------------------------------------------------------------------------------------ the recurrent state


def test_each_keyframe_is_trained_after_the_frames_before_it(shot) -> None:
    plate, keys, _ = shot
    loaded = load_shot(plate, settings(keys))
    assert WARM_FRAMES == 2
    assert loaded.warm == {1003: [1001, 1002], 1006: [1004, 1005]}
    assert training.window_frames(loaded, 1006, {1003, 1006}) == ([1004, 1005, 1006], 2)
    assert load_shot(plate, settings(keys, frames="1002-1008")).warm[1003] == [1002]  # clamped at the range's start
    # Consecutive keyframes train together (the temporal term), warmed on the first one's frames.
    assert training.window_frames(loaded, 1004, {1003, 1004}) == ([1001, 1002, 1003, 1004], 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_with_mixed_precision_trains(shot, tmp_path: Path) -> None:
    plate, keys, _ = shot
    out = tmp_path / "o.pth"
    report = finetune(FinetuneRequest(plate, str(out), settings(keys, iterations=4, device="cuda", precision="fp16")))
    assert report.iterations == 4 and np.isfinite(report.loss)
    written = torch.load(out, map_location="cpu", weights_only=True)
    assert all(v.dtype == load_state_dict(TFJS_MODEL)[k].dtype for k, v in written.items())  # float32 master weights


def test_training_runs_the_renders_guided_upsampling_with_gradients() -> None:
    """The render's fused upsampling writes into preallocated outputs (no autograd); training takes the plain
    formula, which must give the same matte (within 1e-5: the same products summed in another order)."""
    from rvm_vfx.model.refiners import guided_upsample

    generator = torch.Generator().manual_seed(3)
    a = torch.randn(1, 4, 9, 16, generator=generator) * 0.3
    b = torch.rand(1, 4, 9, 16, generator=generator)
    src = torch.rand(1, 3, 36, 64, generator=generator)
    with torch.no_grad():
        fused = guided_upsample(a, b, src)
    a.requires_grad_(True)
    plain = guided_upsample(a, b, src)
    for x, y in zip(fused, plain, strict=True):
        torch.testing.assert_close(y.detach(), x, atol=1e-5, rtol=0)
    plain[1].sum().backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0


def test_the_console_reports_each_held_out_keyframe(shot, tmp_path: Path) -> None:
    plate, keys, _ = shot
    result = run_cli(plate, keys, str(tmp_path / "o.pth"), "--iterations", "2")  # stderr is no terminal: no bar
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    sidecar = json.loads((tmp_path / "o.json").read_text())
    expected = [
        f"held-out keyframe {v['keyframe']}: MAD x1e3 {v['mad_before']:.2f} -> {v['mad_after']:.2f}"
        for v in sidecar["validation"]["keyframes"]
    ]
    assert [line for line in lines if line.startswith("held-out")] == expected and len(expected) == 2
    worse = [v["keyframe"] for v in sidecar["validation"]["keyframes"] if v["mad_after"] > v["mad_before"]]
    assert [line for line in lines if line.startswith("warning: keyframe")] == [
        f"warning: {w}" for w in sidecar["warnings"] if w.startswith("keyframe")
    ] and len(worse) == len([w for w in sidecar["warnings"] if w.startswith("keyframe")])
    assert lines[-1].startswith("done: 2 of 2 iterations in ") and lines[-1].endswith(
        f"-> {tmp_path / 'o.pth'} (+ {tmp_path / 'o.json'})"
    )
