"""Weights: every published form loads into one official state_dict; everything else is refused by name."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from rvm_vfx.errors import CheckpointError, InputError
from rvm_vfx.model import MattingNetwork
from rvm_vfx.weights import (
    CHECKPOINT_ENV,
    build_model,
    convert_weights,
    default_checkpoint,
    download_weights,
    load_model,
    load_state_dict,
    save_checkpoint,
    sha256_of,
)

from .conftest import TFJS_MODEL

SHARD = TFJS_MODEL.parent / "group1-shard1of1.bin"


@pytest.fixture(scope="module")
def tfjs_state() -> dict[str, torch.Tensor]:
    """The official weights as a state_dict, read once; tests copy before changing it."""
    return load_state_dict(TFJS_MODEL)


@pytest.fixture(scope="module")
def official_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official weights converted to the official .pth layout (a real, complete checkpoint)."""
    out = tmp_path_factory.mktemp("pth") / "rvm_mobilenetv3.pth"
    assert convert_weights(TFJS_MODEL, out) == ("mobilenetv3", "fast_guided_filter")
    return out


def _small_input() -> torch.Tensor:
    return torch.rand(1, 3, 72, 96, generator=torch.Generator().manual_seed(7))


def _run(model: torch.nn.Module, ratio: float = 0.5) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return model(_small_input(), downsample_ratio=ratio)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    different = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert different == []


def _check_message(path: Path, rest: str) -> str:
    """A pytest.raises pattern for ``f"{path}: {rest}"`` with both parts matched literally."""
    return "^" + re.escape(f"{path}: {rest}")


# --------------------------------------------------------------------------- the forms that load


def test_tfjs_export_loads_as_official_mobilenetv3(model: MattingNetwork, tfjs_state) -> None:
    assert (model.variant, model.refiner_name) == ("mobilenetv3", "fast_guided_filter")
    assert not model.training and not any(m.training for m in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # Exactly the official key layout (the export has no segmentation head: zeros, not random).
    assert sorted(tfjs_state) == sorted(MattingNetwork("mobilenetv3", "fast_guided_filter").state_dict())
    assert torch.count_nonzero(tfjs_state["project_seg.conv.weight"]) == 0
    assert torch.count_nonzero(tfjs_state["project_seg.conv.bias"]) == 0
    # A folded BatchNorm is an identity BatchNorm carrying the offset.
    assert torch.equal(tfjs_state["backbone.features.0.1.weight"], torch.ones(16))
    # running_var is written as float32(1 - eps), eps the module's 1e-3: exact by construction.
    assert torch.equal(tfjs_state["backbone.features.0.1.running_var"], torch.full((16,), 1 - 1e-3))


def test_tfjs_folder_path_loads_the_same_weights(tfjs_state) -> None:
    folder_model = load_model(TFJS_MODEL.parent)
    assert (folder_model.variant, folder_model.refiner_name) == ("mobilenetv3", "fast_guided_filter")
    _assert_same_state(folder_model.state_dict(), tfjs_state)


def test_convert_tfjs_to_pth_is_lossless(model: MattingNetwork, official_pth: Path) -> None:
    converted = load_model(official_pth)
    assert (converted.variant, converted.refiner_name) == ("mobilenetv3", "fast_guided_filter")
    _assert_same_state(converted.state_dict(), model.state_dict())
    for ours, theirs in zip(_run(converted), _run(model), strict=True):
        assert torch.equal(ours, theirs)
    # The file is a plain state_dict any PyTorch user can read, with exactly the model's keys.
    plain = torch.load(official_pth, map_location="cpu", weights_only=True)
    assert isinstance(plain, dict)
    assert sorted(plain) == sorted(model.state_dict())
    assert not list(official_pth.parent.glob(".*.tmp"))  # written atomically, no temporary left behind


@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
def test_official_pth_layout_with_deep_guided_filter(variant: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = MattingNetwork(variant)  # the official checkpoints use the Deep Guided Filter refiner
    path = tmp_path / f"rvm_{variant}.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path)
    assert (loaded.variant, loaded.refiner_name) == (variant, "deep_guided_filter")
    assert not loaded.training
    _assert_same_state(loaded.state_dict(), net.state_dict())


def _half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}


@pytest.mark.parametrize(
    ("wrap", "halved"),
    [
        pytest.param(lambda sd: {"state_dict": sd}, False, id="state_dict-wrapper"),
        pytest.param(lambda sd: {"model": sd, "epoch": torch.tensor(3)}, False, id="model-wrapper"),
        pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, False, id="module-prefix"),
        pytest.param(lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, False, id="both"),
        pytest.param(_half, True, id="fp16"),
    ],
)
def test_common_pth_forms_are_unwrapped(wrap, halved: bool, tfjs_state, tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(tfjs_state), path)
    expected = {k: v.float() if v.is_floating_point() else v for k, v in _half(tfjs_state).items()}
    _assert_same_state(load_state_dict(path), expected if halved else tfjs_state)
    assert load_model(path).refiner_name == "fast_guided_filter"


def test_legacy_pickle_pth_loads(tfjs_state, tmp_path: Path) -> None:
    """Checkpoints written before PyTorch 1.6 are a bare pickle, not a zip."""
    path = tmp_path / "legacy.pth"
    torch.save(tfjs_state, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    _assert_same_state(load_state_dict(path), tfjs_state)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torchscript_export_loads(precision: str, tmp_path: Path) -> None:
    reference = load_model(TFJS_MODEL)  # a private copy: tracing and .half() must not touch the shared one
    traced = torch.jit.trace(copy.deepcopy(reference), (_small_input(),), check_trace=False)
    if precision == "fp16":
        traced = traced.half()
    path = tmp_path / f"rvm_mobilenetv3_{precision}.torchscript"
    traced.save(str(path))
    with zipfile.ZipFile(path) as archive:  # a real TorchScript archive: code, not a pickle of Python objects
        assert any("/code/" in name for name in archive.namelist())

    state = load_state_dict(path)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    for key, value in reference.state_dict().items():
        expected = value.half().float() if precision == "fp16" and value.is_floating_point() else value
        assert torch.equal(state[key], expected), key

    loaded = load_model(path)
    assert (loaded.variant, loaded.refiner_name) == ("mobilenetv3", "fast_guided_filter")
    fgr, pha, *_ = _run(loaded)
    ref_fgr, ref_pha, *_ = _run(reference)
    if precision == "fp32":
        assert torch.equal(pha, ref_pha) and torch.equal(fgr, ref_fgr)
    else:  # weights rounded to half precision move the matte only slightly
        # Half rounding of the weights: measured 2.6e-4 on every ISA and thread count (2e-2 allowed before).
        assert float((pha - ref_pha).abs().max()) < 1e-3
        assert float((pha - ref_pha).abs().max()) > 0


# --------------------------------------------------------------------------- code in a checkpoint is refused


class _RunsCode:
    """Unpickling this creates ``marker``: the proof that a load executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "torch.save-legacy", "pickle.dump"])
def test_pickle_that_would_run_code_is_refused(writer: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"backbone.features.0.0.weight": torch.zeros(1), "x": _RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    elif writer == "torch.save-legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    with pytest.raises(CheckpointError, match=_check_message(path, "refused: the file holds Python objects")):
        load_state_dict(path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path)
    assert not marker.exists()


def test_refusal_names_what_was_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"x": _RunsCode(tmp_path / "pwned")}, path)
    with pytest.raises(CheckpointError, match=r"\(Trying to load unsupported GLOBAL posix\.system"):
        load_state_dict(path)


# --------------------------------------------------------------------------- errors that name the problem


_GET_A_CHECKPOINT = (
    "run `rvm-vfx download-weights` (the official rvm_mobilenetv3.pth), or pass --checkpoint PATH or set "
    "$RVM_VFX_CHECKPOINT to one of: a .pth state_dict, an official TorchScript .torchscript, or a TF.js "
    "model.json or its folder"
)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=_check_message(path, f"checkpoint not found: {_GET_A_CHECKPOINT}") + "$"):
        load_model(path)


def test_checkpoint_errors_are_input_errors(tmp_path: Path) -> None:
    """The CLI exits 2 and the farm files the job as failed: the user's file to fix, not our bug."""
    with pytest.raises(InputError):
        load_state_dict(tmp_path / "nope.pth")


def test_folder_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=_check_message(tmp_path, "is a folder without a model.json")):
        load_state_dict(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    path.touch()
    with pytest.raises(CheckpointError, match=_check_message(path, "empty file; not a checkpoint") + "$"):
        load_state_dict(path)


@pytest.mark.parametrize(
    "text",
    ["hello, this is not a checkpoint\n", "<html><body>404 Not Found</body></html>", '{"weights": []}'],
)
def test_text_file_is_not_a_checkpoint(text: str, tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    path.write_text(text)
    start = repr(text.encode()[:16])
    expected = f"not a checkpoint: neither a PyTorch zip archive nor a pickle (starts with {start})"
    with pytest.raises(CheckpointError, match=_check_message(path, expected) + "$"):
        load_state_dict(path)


def test_git_lfs_pointer_is_named(tmp_path: Path) -> None:
    path = tmp_path / "rvm_mobilenetv3.pth"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123abcd\nsize 15217721\n")
    expected = "a Git LFS pointer, not the weights themselves: fetch them with `git lfs pull`"
    with pytest.raises(CheckpointError, match=_check_message(path, expected) + "$"):
        load_state_dict(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_truncated_pth(legacy: bool, official_pth: Path, tfjs_state, tmp_path: Path) -> None:
    whole = tmp_path / "whole.pth"
    torch.save(tfjs_state, whole, _use_new_zipfile_serialization=not legacy)
    data = whole.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    expected = "not a readable checkpoint (truncated or another format): "
    with pytest.raises(CheckpointError, match=_check_message(path, expected)):
        load_state_dict(path)


def test_state_dict_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "linear.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1)).state_dict(), path)
    expected = "not an RVM checkpoint: no MobileNetV3 or ResNet-50 encoder keys (first keys: 0.bias, 0.weight, 2.bias)"
    with pytest.raises(CheckpointError, match=_check_message(path, expected) + "$"):
        load_model(path)


def test_pickle_of_something_else(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    expected = "not a checkpoint: expected a dict of tensors (a state_dict)"
    with pytest.raises(CheckpointError, match=_check_message(path, expected) + "$"):
        load_state_dict(path)


def test_missing_and_unexpected_keys_are_counted(tfjs_state, tmp_path: Path) -> None:
    state = dict(tfjs_state)
    removed = ["project_mat.conv.bias", "aspp.aspp1.0.weight", "decoder.decode0.conv.0.weight"]
    for key in removed:
        del state[key]
    state["decoder.extra.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    save_checkpoint(state, path)
    shown = ", ".join(sorted(removed))
    expected = (
        f"not an RVM mobilenetv3 checkpoint: {len(removed)} missing keys (e.g. {shown}); "
        "1 unexpected keys (e.g. decoder.extra.weight)"
    )
    with pytest.raises(CheckpointError, match=_check_message(path, expected) + "$"):
        load_model(path)


def test_wrong_shape_names_the_tensor(tfjs_state, tmp_path: Path) -> None:
    state = dict(tfjs_state)
    state["project_mat.conv.weight"] = torch.zeros(4, 8, 1, 1)
    path = tmp_path / "reshaped.pth"
    save_checkpoint(state, path)
    expected = "1 tensors have the wrong shape: project_mat.conv.weight (4, 8, 1, 1) != (4, 16, 1, 1)"
    with pytest.raises(CheckpointError, match=_check_message(path, expected) + "$"):
        load_model(path)


def test_build_model_names_its_source(tfjs_state) -> None:
    state = {k: v for k, v in tfjs_state.items() if k != "project_mat.conv.bias"}
    with pytest.raises(CheckpointError, match=r"^my weights: not an RVM mobilenetv3 checkpoint: 1 missing keys"):
        build_model(state, "my weights")


# --------------------------------------------------------------------------- damaged TF.js exports


def test_tfjs_shard_missing(tmp_path: Path) -> None:
    manifest = tmp_path / "model.json"
    shutil.copy(TFJS_MODEL, manifest)
    expected = "weight shard group1-shard1of1.bin is missing"
    with pytest.raises(CheckpointError, match=_check_message(manifest, expected) + "$"):
        load_state_dict(manifest)
    with pytest.raises(CheckpointError, match=re.escape(expected)):  # and through the folder
        load_model(tmp_path)


def test_tfjs_shard_truncated(tmp_path: Path) -> None:
    manifest = tmp_path / "model.json"
    shutil.copy(TFJS_MODEL, manifest)
    size = SHARD.stat().st_size
    (tmp_path / SHARD.name).write_bytes(SHARD.read_bytes()[: size // 2])
    pattern = (
        _check_message(manifest, "weight shards are truncated: ")
        + rf".+ needs bytes \d+\.\.\d+ but the shards hold {size // 2}$"
    )
    with pytest.raises(CheckpointError, match=pattern):
        load_state_dict(manifest)


@pytest.mark.parametrize("content", ["this is not json", '{"modelTopology": {}}', "[1, 2, 3]"])
def test_tfjs_manifest_not_a_model(content: str, tmp_path: Path) -> None:
    manifest = tmp_path / "model.json"
    manifest.write_text(content)
    with pytest.raises(CheckpointError, match=_check_message(manifest, "not a TensorFlow.js model.json (")):
        load_state_dict(manifest)


def test_tfjs_graph_of_another_network(tmp_path: Path) -> None:
    """A valid TF.js graph model whose convolutions are not RVM's is refused, not half-loaded."""
    manifest = json.loads(TFJS_MODEL.read_text())
    group = manifest["weightsManifest"][0]
    keep, offset, size = [], 0, 0
    for entry in group["weights"]:
        count = 1
        for dim in entry["shape"]:
            count *= int(dim)
        stored = entry["quantization"]["dtype"] if "quantization" in entry else entry["dtype"]
        nbytes = count * {"uint8": 1, "bool": 1, "int32": 4, "float32": 4}[stored]
        if "/conv2d_1/" not in entry["name"]:  # drop one convolution's weights (keeping byte offsets right)
            keep.append((offset, nbytes, entry))
        offset += nbytes
        size = offset
    blob = SHARD.read_bytes()
    assert size == len(blob)  # the manifest accounts for every byte of the shard
    group["weights"] = [entry for _, _, entry in keep]
    (tmp_path / SHARD.name).write_bytes(b"".join(blob[o : o + n] for o, n, _ in keep))
    (tmp_path / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"not an RVM MobileNetV3 export: found \d+ convolutions"):
        load_state_dict(tmp_path / "model.json")


# --------------------------------------------------------------------------- default checkpoint and download


def test_default_checkpoint_follows_env_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path / "mine.pth"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_checkpoint() == tmp_path / "mine.pth"
    monkeypatch.delenv(CHECKPOINT_ENV)
    assert default_checkpoint() == tmp_path / "cache" / "rvm-vfx" / "rvm_mobilenetv3.pth"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_checkpoint() == tmp_path / "home" / ".cache" / "rvm-vfx" / "rvm_mobilenetv3.pth"


def test_load_model_default_uses_env(monkeypatch: pytest.MonkeyPatch, official_pth: Path) -> None:
    monkeypatch.setenv(CHECKPOINT_ENV, str(official_pth))
    assert load_model().refiner_name == "fast_guided_filter"


def test_load_model_without_any_checkpoint_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    default = tmp_path / "rvm-vfx" / "rvm_mobilenetv3.pth"
    expected = f"no checkpoint given and the default {default} does not exist: {_GET_A_CHECKPOINT}"
    with pytest.raises(CheckpointError, match="^" + re.escape(expected) + "$"):
        load_model(None)


def test_download_failure_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "weights" / "rvm_mobilenetv3.pth"
    url = "http://127.0.0.1:9/none"  # loopback, closed port: refused at once, never leaves the machine
    with pytest.raises(CheckpointError, match="^" + re.escape(f"could not download {url}: ")) as info:
        download_weights(dest, url=url, timeout=5)
    assert f"copy rvm_mobilenetv3.pth from a machine that is not to {dest}" in str(info.value)
    assert list(dest.parent.iterdir()) == []


def test_download_of_something_else_is_not_installed(tmp_path: Path) -> None:
    page = tmp_path / "error.html"
    page.write_text("<html>rate limited</html>")
    dest = tmp_path / "weights" / "rvm_mobilenetv3.pth"
    url = page.as_uri()  # file:// goes through the same urllib path, offline
    with pytest.raises(
        CheckpointError, match="^" + re.escape(f"downloaded {url}, but it is not a usable checkpoint: ")
    ):
        download_weights(dest, url=url)
    assert list(dest.parent.iterdir()) == []


def test_download_installs_a_checkpoint(official_pth: Path, tmp_path: Path) -> None:
    dest = tmp_path / "weights" / "rvm_mobilenetv3.pth"
    assert download_weights(dest, url=official_pth.as_uri()) == dest
    assert dest.read_bytes() == official_pth.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


# --------------------------------------------------------------------------- provenance


def test_sha256_of_tfjs_covers_manifest_and_shard(official_pth: Path) -> None:
    manifest_bytes, shard_bytes = TFJS_MODEL.read_bytes(), SHARD.read_bytes()
    # The published files themselves (shared/README.md).
    assert hashlib.sha256(manifest_bytes).hexdigest().startswith("de775ec2")
    assert hashlib.sha256(shard_bytes).hexdigest().endswith("c8f90")
    digest = sha256_of(TFJS_MODEL)
    assert digest == hashlib.sha256(manifest_bytes + shard_bytes).hexdigest()
    assert digest != hashlib.sha256(manifest_bytes).hexdigest()
    assert sha256_of(TFJS_MODEL) == digest  # stable across calls
    assert sha256_of(official_pth) == hashlib.sha256(official_pth.read_bytes()).hexdigest()


def test_torchscript_archive_is_read_as_data_never_run(tmp_path: Path) -> None:
    """A TorchScript archive whose data.pkl would call os.system is refused, and nothing runs."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.torchscript"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/code/__torch__/m.py", "def forward(self, x):\n  return x\n")
        archive.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        archive.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: refused: the TorchScript archive references")):
        load_state_dict(path)
    assert not marker.exists()
