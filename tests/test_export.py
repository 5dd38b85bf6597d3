"""``rvm-vfx export``: ONNX and TorchScript files that reproduce the network frame after frame, state carried.

The reference is the engine's own ``MattingNetwork`` with the official weights (TF.js export), called as the
official code is: ``model(src, *rec, downsample_ratio)``, its states fed back. Each export is written once
through the command line and read back from disk, as a user would: ONNX with ONNX Runtime, TorchScript with
``torch.jit.load``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx  # the export extra, which CI installs: pip install -e ".[export]"
import onnxruntime as ort
import pytest
import torch

from rvm_vfx.cli import main
from rvm_vfx.export.exporters import DESCRIPTION_FILE, ONNX_INPUTS, ONNX_OUTPUTS, export
from rvm_vfx.export.frame import state_shapes, zero_states
from rvm_vfx.model import MattingNetwork

from .conftest import TFJS_MODEL
from .plates import portrait_clip

RATIO = 0.25
# Two plate sizes through one file: the exports' height and width are dynamic. Both leave odd sizes at 1/8 or
# 1/16 of the encoder's 64×36 and 80×60, where the strided layers round up.
SIZES = [(144, 256), (240, 320)]
FRAMES = 5
# TorchScript runs oneDNN's kernels on the same graph as the network: 2.4e-7 seen on any output. ONNX Runtime's
# kernels (MLAS) sum in another order, and through five recurrent frames that feeds back: the states r1..r4
# stay within 1.5e-5 of the network's. 1e-4 covers both on any x86-64 (AVX2, AVX-512 or AMX kernels
# reassociate sums differently).
FP32_TOLERANCE = 1e-4
# fgr and pha after the fast guided filter (the TF.js weights' refiner): A = cov/(var + 1e-5) from local
# moments that cancel (E[xy] − E[x]E[y]), so float32 itself holds them only to ~6e-4 (the network against its
# float64 copy, measured in test_onnx_is_as_close_to_float64_as_the_network_itself). ONNX Runtime's own
# rounding lands as far off: 3.4e-4 seen (7.3e-4 with its graph optimisations off). 2e-3 leaves room for
# other CPUs' kernels; the Deep Guided Filter, which divides by nothing, holds 1e-4 (test below).
REFINED_TOLERANCE = 2e-3


def clip(height: int, width: int, frames: int = FRAMES) -> list[torch.Tensor]:
    """A real plate: the portrait sliding over a background, 1×3×H×W sRGB frames."""
    composites, _ = portrait_clip(frames, width, height)
    return [torch.from_numpy(c).permute(2, 0, 1)[None].contiguous() for c in composites]


def network_frames(
    model: MattingNetwork, frames: list[torch.Tensor], ratio: float = RATIO
) -> list[tuple[torch.Tensor, ...]]:
    """The official recurrent loop: each call's states are the next call's."""
    outputs, rec = [], [None] * 4
    with torch.inference_mode():
        for frame in frames:
            fgr, pha, *rec = model(frame, *rec, downsample_ratio=ratio)
            outputs.append((fgr, pha, *rec))
    return outputs


def worst(
    ours: list[tuple[np.ndarray | torch.Tensor, ...]],
    reference: list[tuple[torch.Tensor, ...]],
    outputs: slice = slice(None),
) -> float:
    """The largest difference over every frame and the chosen outputs (default all: fgr, pha, r1..r4)."""
    return max(
        float(np.abs(np.asarray(a, dtype=np.float64) - b.double().numpy()).max())
        for got, want in zip(ours, reference, strict=True)
        for a, b in zip(got[outputs], want[outputs], strict=True)
    )


IMAGES, STATES = slice(0, 2), slice(2, 6)


def _export(out: Path, *flags: str) -> str:
    """Run the command as a user does; its messages are returned."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["export", str(TFJS_MODEL.parent), str(out), *flags])
    assert code == 0, err.getvalue()
    return err.getvalue()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exports")
    files = {
        "onnx": folder / "rvm.onnx",
        "onnx_fp16": folder / "rvm_fp16.onnx",
        "torchscript": folder / "rvm.pt",
        "cattery": folder / "rvm_cattery.pt",
    }
    _export(files["onnx"], "--format", "onnx", "--downsample", str(RATIO))
    _export(files["onnx_fp16"], "--format", "onnx", "--downsample", str(RATIO), "--precision", "fp16")
    _export(files["torchscript"], "--format", "torchscript")
    _export(files["cattery"], "--format", "cattery", "--downsample", str(RATIO))
    return files


def onnx_frames(session: ort.InferenceSession, frames: list[torch.Tensor], dtype: type = np.float32) -> Iterator:
    height, width = frames[0].shape[2:]
    states = [s.numpy().astype(dtype) for s in zero_states(height, width, RATIO)]
    for frame in frames:
        outputs = session.run(None, dict(zip(ONNX_INPUTS, [frame.numpy().astype(dtype), *states], strict=True)))
        states = outputs[2:]
        yield tuple(outputs)


# --------------------------------------------------------------------------- the state's shapes


@pytest.mark.parametrize(("height", "width", "ratio"), [(144, 256, 0.25), (145, 257, 0.4), (72, 128, 1.0)])
def test_state_shapes_are_the_shapes_the_network_returns(model, height: int, width: int, ratio: float) -> None:
    _, _, *states = network_frames(model, clip(height, width, 1), ratio)[0]
    assert state_shapes(height, width, ratio) == tuple(tuple(s.shape) for s in states)


def test_state_shapes_of_an_hd_plate_as_documented() -> None:
    """The README's and the command's example: 1920×1080 at 0.25 (the encoder sees 480×270)."""
    assert state_shapes(1080, 1920, 0.25) == ((1, 16, 135, 240), (1, 20, 68, 120), (1, 40, 34, 60), (1, 64, 17, 30))
    assert state_shapes(1080, 1920, 0.25, "resnet50", batch=2)[3] == (2, 128, 17, 30)


# --------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_onnx_reproduces_the_network_over_five_frames(model, exports, height: int, width: int) -> None:
    session = ort.InferenceSession(str(exports["onnx"]), providers=["CPUExecutionProvider"])
    frames = clip(height, width)
    ours = list(onnx_frames(session, frames))
    assert [o[0].shape for o in ours] == [(1, 3, height, width)] * FRAMES
    reference = network_frames(model, frames)
    assert worst(ours, reference, STATES) <= FP32_TOLERANCE
    assert worst(ours, reference, IMAGES) <= REFINED_TOLERANCE


def test_onnx_is_as_close_to_float64_as_the_network_itself(model, exports) -> None:
    """What REFINED_TOLERANCE rests on: float32 cannot hold the refined frame to 1e-4, in torch or elsewhere."""
    session = ort.InferenceSession(str(exports["onnx"]), providers=["CPUExecutionProvider"])
    frames = clip(*SIZES[1])
    exact = network_frames(copy.deepcopy(model).double(), [frame.double() for frame in frames])
    network_error = worst(network_frames(model, frames), exact, IMAGES)
    onnx_error = worst(list(onnx_frames(session, frames)), exact, IMAGES)
    assert network_error > FP32_TOLERANCE
    assert onnx_error <= 2 * network_error


def test_onnx_interface_names_dynamic_sizes_and_opset(exports) -> None:
    proto = onnx.load(str(exports["onnx"]))
    assert [i.name for i in proto.graph.input] == list(ONNX_INPUTS)
    assert [o.name for o in proto.graph.output] == list(ONNX_OUTPUTS)
    assert proto.opset_import[0].version == 17

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert dims(proto.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(proto.graph.input[1]) == ["batch", 16, "r1_height", "r1_width"]
    assert dims(proto.graph.output[5]) == ["batch", 64, "r4_height", "r4_width"]
    assert {i.type.tensor_type.elem_type for i in proto.graph.input} == {onnx.TensorProto.FLOAT}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["rvm_vfx:downsample_ratio"] == "0.25"
    assert meta["rvm_vfx:state_channels"] == "16,20,40,64"


def test_onnx_resizes_use_constant_scales_not_an_input(exports) -> None:
    """TensorRT refuses a float network input that drives a Resize's shape (the official files' Int32 error)."""
    proto = onnx.load(str(exports["onnx"]))
    constants = {i.name for i in proto.graph.initializer}
    constants |= {out for node in proto.graph.node if node.op_type == "Constant" for out in node.output}
    resizes = [node for node in proto.graph.node if node.op_type == "Resize"]
    scaled = [node for node in resizes if len(node.input) > 2 and node.input[2]]
    assert len(resizes) == 6  # the downsample, four ×2 in the decoder, the coefficients to the plate's size
    assert len(scaled) == 5 and all(node.input[2] in constants for node in scaled)


def test_onnx_fp16_runs_and_stays_close(model, exports) -> None:
    """Loosely: a half-precision network (an 11-bit significand) moves edges a little.

    Measured against fp32: alpha off by 4.5e-4 on average and 0.11 at worst (on hair and edges); a broken
    half export (the guided filter in half) is off by up to 1.0.
    """
    session = ort.InferenceSession(str(exports["onnx_fp16"]), providers=["CPUExecutionProvider"])
    assert {i.type for i in session.get_inputs()} == {"tensor(float16)"}
    frames = clip(*SIZES[0])
    ours = list(onnx_frames(session, frames, np.float16))
    reference = network_frames(model, frames)
    alpha_error = np.abs(ours[-1][1].astype(np.float32) - reference[-1][1].numpy())
    assert ours[-1][1].dtype == np.float16
    assert alpha_error.mean() < 2e-3 and alpha_error.max() < 0.25


# --------------------------------------------------------------------------- TorchScript


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_torchscript_reproduces_the_official_call(model, exports, height: int, width: int) -> None:
    scripted = torch.jit.load(str(exports["torchscript"]))
    frames = clip(height, width)
    ours, rec = [], [None] * 4
    with torch.inference_mode():
        for frame in frames:
            fgr, pha, *rec = scripted(frame, *rec, RATIO)
            ours.append((fgr, pha, *rec))
    assert worst(ours, network_frames(model, frames)) <= FP32_TOLERANCE


def test_torchscript_takes_the_ratio_at_each_call(model, exports) -> None:
    """Ratio 1 (no refiner) from the same file; the official call's default is also 1."""
    scripted = torch.jit.load(str(exports["torchscript"]))
    frame = clip(72, 128, 1)[0]
    with torch.inference_mode():
        ours = [scripted(frame)]
    assert worst(ours, network_frames(model, [frame], 1.0)) <= FP32_TOLERANCE


def test_torchscript_describes_itself(exports) -> None:
    extra = {DESCRIPTION_FILE: ""}
    torch.jit.load(str(exports["torchscript"]), _extra_files=extra)
    description = json.loads(extra[DESCRIPTION_FILE])
    assert description["rvm_vfx:downsample_ratio"] == "per call"
    assert description["rvm_vfx:variant"] == "mobilenetv3"


def test_torchscript_names_only_long_standing_ops(exports) -> None:
    """Scripted F.interpolate brings torch's whole implementation, with ops older runtimes lack; inlined, none."""
    import zipfile

    with zipfile.ZipFile(exports["cattery"]) as archive:
        code = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".py"))
    assert "upsample_bilinear2d" in code
    assert "_upsample_lanczos2d_aa" not in code and "_upsample_bicubic2d_aa" not in code


def test_the_deep_guided_filter_exports_too(tmp_path: Path) -> None:
    """The .pth checkpoints' refiner (it has weights) through both formats; random weights, fixed seed."""
    torch.manual_seed(0)
    net = MattingNetwork("mobilenetv3", "deep_guided_filter").eval()
    frames = clip(*SIZES[0], 3)
    reference = network_frames(net, frames)
    export(net, tmp_path / "dgf.onnx", "onnx", RATIO)
    export(net, tmp_path / "dgf.pt", "torchscript")
    session = ort.InferenceSession(str(tmp_path / "dgf.onnx"), providers=["CPUExecutionProvider"])
    assert worst(list(onnx_frames(session, frames)), reference) <= FP32_TOLERANCE
    scripted, ours, rec = torch.jit.load(str(tmp_path / "dgf.pt")), [], [None] * 4
    with torch.inference_mode():
        for frame in frames:
            fgr, pha, *rec = scripted(frame, *rec, RATIO)
            ours.append((fgr, pha, *rec))
    assert worst(ours, reference) <= FP32_TOLERANCE


# --------------------------------------------------------------------------- Cattery


def rgba(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([outputs[0], outputs[1]], dim=1)


@pytest.fixture
def cattery(exports) -> torch.jit.ScriptModule:
    return torch.jit.load(str(exports["cattery"]))


def test_cattery_knob_attributes_have_the_types_nuke_maps(cattery) -> None:
    """CatFileCreator maps an int attribute to an Int_Knob and a float one to a Float_Knob."""
    assert isinstance(cattery.frame, int) and isinstance(cattery.downsample_ratio, float)
    assert cattery.downsample_ratio == RATIO


def test_cattery_matches_the_recurrent_render_in_order(model, cattery) -> None:
    frames = clip(*SIZES[1])
    reference = network_frames(model, frames)
    with torch.inference_mode():
        for number, (frame, want) in enumerate(zip(frames, reference, strict=True), start=1001):
            cattery.frame = number
            out = cattery(frame)
            assert out.shape == (1, 4, *SIZES[1])
            assert float((out - rgba(want)).abs().max()) <= FP32_TOLERANCE


def test_cattery_resets_when_frames_jump_and_repeats_a_frame_exactly(model, cattery) -> None:
    frames = clip(*SIZES[0], 8)
    carried = network_frames(model, frames)
    with torch.inference_mode():
        for number in (1001, 1002, 1003):
            cattery.frame = number
            cattery(frames[number - 1001])
        again = cattery(frames[2])  # a viewer refresh of 1003: computed from the state 1003 was given
        cattery.frame = 1008
        jumped = cattery(frames[7])
        cattery.frame = 1009  # 1008 started a shot: 1009 follows it
        after_jump = cattery(frames[0])
    assert float((again - rgba(carried[2])).abs().max()) <= FP32_TOLERANCE
    fresh = network_frames(model, [frames[7], frames[0]])
    assert float((jumped - rgba(fresh[0])).abs().max()) <= FP32_TOLERANCE
    assert float((jumped - rgba(carried[7])).abs().max()) > 0.01  # the state would have mattered
    assert float((after_jump - rgba(fresh[1])).abs().max()) <= FP32_TOLERANCE


def test_cattery_resets_when_the_plate_size_changes(model, cattery) -> None:
    small, large = clip(*SIZES[0], 2), clip(*SIZES[1], 1)
    with torch.inference_mode():
        cattery.frame = 1
        cattery(small[0])
        cattery.frame = 2
        out = cattery(large[0])
    assert float((out - rgba(network_frames(model, large)[0])).abs().max()) <= FP32_TOLERANCE


def test_cattery_ratio_zero_is_the_automatic_one(model, cattery) -> None:
    cattery.downsample_ratio = 0.0
    frame = clip(240, 320, 1)[0]
    with torch.inference_mode():
        out = cattery(frame)
    assert float((out - rgba(network_frames(model, [frame], 1.0)[0])).abs().max()) <= FP32_TOLERANCE


# --------------------------------------------------------------------------- the command's errors


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(["export", *args])
    return code, capsys.readouterr().err


def test_an_existing_file_is_kept_without_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rvm.onnx"
    out.write_bytes(b"earlier")
    code, err = _run([str(TFJS_MODEL.parent), str(out), "--format", "onnx"], capsys)
    assert (code, err) == (1, f"rvm-vfx: error: {out}: exists; use --overwrite to replace it\n")
    assert out.read_bytes() == b"earlier"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--format", "onnx", "--downsample", "1.5"], "--downsample: expected a number in (0, 1], got 1.5"),
        (["--format", "onnx", "--downsample", "0"], "--downsample: expected a number in (0, 1], got 0"),
        (
            ["--format", "torchscript", "--downsample", "0.5"],
            "--downsample: a TorchScript export takes the ratio at each call, model(src, r1, r2, r3, r4, "
            "downsample_ratio), as the official one does; --downsample is for --format onnx (baked in) and "
            "cattery (the knob's default)",
        ),
        (
            ["--format", "cattery", "--precision", "fp16"],
            "--precision fp16: a Cattery model is exported in fp32; Nuke's Inference node runs it in half itself "
            "when its 'Optimize for Speed and Memory' knob is on",
        ),
    ],
)
def test_bad_flags_exit_2_before_the_weights_load(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    code, err = _run([str(tmp_path / "no-weights-here"), str(tmp_path / "out.onnx"), *flags], capsys)
    assert (code, err) == (2, f"rvm-vfx: error: {message}\n")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_checkpoint_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "rvm.pth"
    code, err = _run([str(missing), str(tmp_path / "out.pt"), "--format", "torchscript"], capsys)
    assert code == 2 and err.startswith(f"rvm-vfx: error: {missing}: checkpoint not found: ")
    assert list(tmp_path.iterdir()) == []


def test_the_command_prints_the_first_frames_state_shapes(tmp_path: Path) -> None:
    message = _export(tmp_path / "rvm.onnx", "--format", "onnx")  # the default ratio, 0.25
    assert message.splitlines()[-1] == (
        "a 1920x1080 plate's first frame passes zeros of r1i [1, 16, 135, 240], r2i [1, 20, 68, 120], "
        "r3i [1, 40, 34, 60], r4i [1, 64, 17, 30]"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["rvm.onnx"]  # no temporary file left
