"""Loading RVM weights from every form the official project published them in.

Three forms reach us: the PyTorch checkpoints (``rvm_*.pth``), the TorchScript exports
(``rvm_*_fp32.torchscript`` / ``_fp16``) and the TensorFlow.js export (``model.json`` plus shards).
All three become one state_dict in the official key layout, so the rest of the engine sees a
single format. A checkpoint is data: pickles are read with ``weights_only=True`` so that a
malicious file cannot run code, and that refusal is reported, not worked around.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError
from .model import MattingNetwork
from .spec import names

# The release, its file names and the cache are the contract's: a plugin that points at the weights must
# look where ``download-weights`` puts them.
OFFICIAL_URL = names.OFFICIAL_URLS[names.DEFAULT_ENCODER]
OFFICIAL_FILENAME = names.OFFICIAL_CHECKPOINTS[names.DEFAULT_ENCODER]
CHECKPOINT_ENV = names.CHECKPOINT_ENV
# Ends every "no such checkpoint" message: a first-time user has none yet and must learn how to get one.
GET_A_CHECKPOINT = (
    f"run `rvm-vfx download-weights` (the official {OFFICIAL_FILENAME}), or pass --checkpoint PATH or set "
    f"${CHECKPOINT_ENV} to one of: a .pth state_dict, an official TorchScript .torchscript, or a TF.js "
    "model.json or its folder"
)

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- default checkpoint


def cache_dir() -> Path:
    """Per-user cache, following XDG so farm admins can redirect it with one variable."""
    return Path(names.cache_dir())


def default_checkpoint() -> Path:
    """``$RVM_VFX_CHECKPOINT`` when set, else the official MobileNetV3 file in the user cache."""
    return Path(names.default_checkpoint())


def resolve_checkpoint(path: str | os.PathLike[str] | None) -> Path:
    """The checkpoint a render loads: ``path``, else :func:`default_checkpoint`; it must exist.

    Checked here, before any reader sees the path, so that a missing file, the usual state of a fresh
    install, is reported with what to do about it rather than as a bare "not found".
    """
    if path:
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{path}: checkpoint not found: {GET_A_CHECKPOINT}")
        if path.is_dir() and (path / "model.json").is_file():
            return path / "model.json"  # a TF.js export's folder: its manifest, which names (and hashes) the shards
        return path
    default = default_checkpoint()
    if not default.exists():
        if os.environ.get(CHECKPOINT_ENV):
            where = f"${CHECKPOINT_ENV} names {default}, which"
        else:
            where = f"the default {default}"
        raise CheckpointError(f"no checkpoint given and {where} does not exist: {GET_A_CHECKPOINT}")
    return default


def download_weights(dest: Path | None = None, url: str = OFFICIAL_URL, timeout: float = 60.0) -> Path:
    """Fetch the official checkpoint: the only network access rvm-vfx ever makes, and only on request."""
    dest = Path(dest) if dest is not None else cache_dir() / OFFICIAL_FILENAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not download {url}: {exc}. If this machine is offline, copy {OFFICIAL_FILENAME} "
            f"from a machine that is not to {dest} or set ${CHECKPOINT_ENV} to its path."
        ) from exc
    try:
        load_state_dict(tmp)  # refuse to install something that is not a checkpoint
    except CheckpointError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"downloaded {url}, but it is not a usable checkpoint: {exc}") from exc
    os.replace(tmp, dest)
    return dest


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Recorded in every EXR so a matte can be traced to the exact weights that made it."""
    path = Path(path)
    files = [path]
    if path.suffix == ".json":  # a TF.js export is the manifest plus its shards
        files += sorted(_tfjs_shard_paths(path))
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- reading


def load_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """Read any published RVM weights file into a float32 state_dict in the official key layout."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        manifest = path / "model.json"
        if manifest.exists():
            return _read_tfjs(manifest)
        raise CheckpointError(f"{path}: is a folder without a model.json; not a checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file; not a checkpoint")
    if path.suffix == ".json":
        return _read_tfjs(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/code/" in name or name.endswith("constants.pkl") for name in names):
            return _read_torchscript(path)
    return _read_pickle(path)


_PICKLE_PROTO = 0x80  # the first opcode of every protocol >= 2 pickle, and so of every legacy torch.save


def _read_pickle(path: Path) -> StateDict:
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{path}: a Git LFS pointer, not the weights themselves: fetch them with `git lfs pull`")
    if not head.startswith(b"PK\x03\x04") and head[0] != _PICKLE_PROTO:  # a zip (maybe truncated), a pickle
        raise CheckpointError(
            f"{path}: not a checkpoint: neither a PyTorch zip archive nor a pickle (starts with {head[:16]!r})"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects beyond tensors, which could run code when "
            f"loaded. Only plain state_dict checkpoints are accepted. ({_unpickling_reason(exc)})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types (KeyError, RuntimeError, EOFError...)
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or another format): {_first_line(exc)}"
        ) from exc
    state = _unwrap(obj, path)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _unwrap(obj: object, path: Path) -> StateDict:
    """Accept a bare state_dict or the common ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a checkpoint: expected a dict of tensors (a state_dict)")
    return {re.sub(r"^module\.", "", str(k)): v for k, v in obj.items()}


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stands in for a TorchScript class while its pickled attributes are read; it runs nothing."""

    def __init__(self, *args: object) -> None:
        self.attributes: dict[str, object] = {}

    def __setstate__(self, state: object) -> None:
        self.attributes = state if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES[name]


class _TorchScriptUnpickler(pickle.Unpickler):
    """Reads the object tree of a TorchScript archive's data.pkl without loading its code.

    ``torch.jit.load`` would compile the archive's TorchScript and run methods such as ``__setstate__``
    while loading, which is code from the checkpoint. Here every TorchScript class becomes an inert
    attribute holder and only tensor rebuilding from the archive's own storages is allowed.
    """

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_parameter"),
        ("collections", "OrderedDict"),
    }

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("__torch__"):
            return _ScriptObject
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in self._ALLOWED:
            import collections

            import torch._utils

            return getattr(collections if module == "collections" else torch._utils, name)
        raise CheckpointError(f"{self.path}: refused: the TorchScript archive references {module}.{name}")

    def persistent_load(self, pid: object) -> object:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unexpected persistent reference in TorchScript data")
        _, storage_type, key, _location, _numel = pid
        raw = self.archive.read(f"{self.prefix}data/{key}")
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=storage_type.dtype, _internal=True)


def _collect_tensors(obj: object, prefix: str, out: StateDict) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, _ScriptObject):
        for name, value in obj.attributes.items():
            _collect_tensors(value, f"{prefix}.{name}" if prefix else str(name), out)


def _read_torchscript(path: Path) -> StateDict:
    """The tensors of an official TorchScript export, read as data: its code is never loaded or run."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pickles:
                raise CheckpointError(f"{path}: not a TorchScript archive (no data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            root = _TorchScriptUnpickler(archive.read(pickles[0]), archive, prefix, path).load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways
        raise CheckpointError(f"{path}: not a readable TorchScript file: {_first_line(exc)}") from exc
    tensors: StateDict = {}
    _collect_tensors(root, "", tensors)
    try:
        variant, refiner = infer_architecture(tensors)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    # Attributes that are not state (non-persistent buffers such as normalisation constants) are dropped.
    expected = MattingNetwork(variant, refiner).state_dict()  # type: ignore[arg-type]
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k in expected}


def _unpickling_reason(exc: BaseException) -> str:
    """The line of torch's long weights-only message that names what was refused (e.g. a GLOBAL)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- TensorFlow.js


_DTYPE_BYTES = {"float32": 4, "int32": 4, "bool": 1, "uint8": 1, "uint16": 2, "float16": 2}


def _tfjs_shard_paths(manifest_path: Path) -> list[Path]:
    manifest = json.loads(manifest_path.read_text())
    return [manifest_path.parent / p for group in manifest.get("weightsManifest", []) for p in group["paths"]]


def _read_tfjs_tensors(manifest_path: Path) -> dict[str, np.ndarray]:
    """Dequantise every float tensor of a graph-model export (value = min + scale·q)."""
    try:
        manifest = json.loads(manifest_path.read_text())
        groups = manifest["weightsManifest"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: not a TensorFlow.js model.json ({exc})") from exc
    tensors: dict[str, np.ndarray] = {}
    for group in groups:
        blob = bytearray()
        for shard in group["paths"]:
            shard_path = manifest_path.parent / shard
            if not shard_path.exists():
                raise CheckpointError(f"{manifest_path}: weight shard {shard_path.name} is missing")
            blob += shard_path.read_bytes()
        offset = 0
        for entry in group["weights"]:
            shape = [int(d) for d in entry["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            stored = quant["dtype"] if quant else entry["dtype"]
            size = count * _DTYPE_BYTES[stored]
            if offset + size > len(blob):
                raise CheckpointError(
                    f"{manifest_path}: weight shards are truncated: {entry['name']} needs bytes "
                    f"{offset}..{offset + size} but the shards hold {len(blob)}"
                )
            raw = bytes(blob[offset : offset + size])
            offset += size
            if entry["dtype"] != "float32":
                continue  # graph constants (axes, paddings): not weights
            if quant is None:
                values = np.frombuffer(raw, np.float32)
            elif stored == "float16":
                values = np.frombuffer(raw, np.float16).astype(np.float32)
            else:
                q = np.frombuffer(raw, np.uint8 if stored == "uint8" else np.uint16).astype(np.float64)
                values = (quant["min"] + quant["scale"] * q).astype(np.float32)
            tensors[entry["name"]] = values.reshape(shape)
    return tensors


_CONV_RE = re.compile(r"/(conv2d(?:_(\d+))?)/(Conv2D_weights|Conv2D/ReadVariableOp)$")
_DW_RE = re.compile(r"/(depthwise_conv2d(?:_(\d+))?)/(depthwise_weights|depthwise/ReadVariableOp)$")


_KERNEL_SUFFIX_RE = re.compile(r"/(Conv2D_weights|Conv2D/ReadVariableOp|depthwise_weights|depthwise/ReadVariableOp)$")


def _layer_index(match: re.Match[str]) -> int:
    return int(match.group(2)) if match.group(2) else 0


def _read_tfjs(manifest_path: Path) -> StateDict:
    """Map a TF.js export onto our modules.

    Keras numbers ``conv2d_N`` and ``depthwise_conv2d_N`` in construction order, which is the order our
    modules are built in, so the k-th regular (or depthwise) TF convolution is our k-th one; every
    pairing is then checked by shape. Folded BatchNorm becomes an identity BatchNorm carrying the
    offset; the three unfolded dilated ones become a BatchNorm with the exported scale and offset.
    """
    tensors = _read_tfjs_tensors(manifest_path)
    regular: list[tuple[int, str]] = []
    depthwise: list[tuple[int, str]] = []
    for name in tensors:
        if m := _CONV_RE.search(name):
            regular.append((_layer_index(m), name))
        elif m := _DW_RE.search(name):
            depthwise.append((_layer_index(m), name))
    regular.sort()
    depthwise.sort()

    model = MattingNetwork("mobilenetv3", "fast_guided_filter")
    ours_regular, ours_depthwise = _conv_modules(model, skip=("project_seg",))
    if len(regular) != len(ours_regular) or len(depthwise) != len(ours_depthwise):
        raise CheckpointError(
            f"{manifest_path}: not an RVM MobileNetV3 export: found {len(regular)} convolutions and "
            f"{len(depthwise)} depthwise convolutions, expected {len(ours_regular)} and {len(ours_depthwise)}"
        )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bn_of = _following_batchnorms(model)
    for (_, tf_name), (our_name, conv) in zip(regular, ours_regular, strict=True):
        kernel = torch.from_numpy(tensors[tf_name]).permute(3, 2, 0, 1)  # HWIO -> OIHW
        _assign_conv(state, manifest_path, tf_name, our_name, conv, kernel, tensors, bn_of.get(our_name))
    for (_, tf_name), (our_name, conv) in zip(depthwise, ours_depthwise, strict=True):
        kernel = torch.from_numpy(tensors[tf_name]).permute(2, 3, 0, 1)  # HW,C,mult -> C,mult,H,W
        _assign_conv(state, manifest_path, tf_name, our_name, conv, kernel, tensors, bn_of.get(our_name))
    # The export has no segmentation head: zeros make a segmentation pass inert rather than random.
    state["project_seg.conv.weight"].zero_()
    state["project_seg.conv.bias"].zero_()
    return state


def _conv_modules(
    model: nn.Module, skip: Iterable[str]
) -> tuple[list[tuple[str, nn.Conv2d]], list[tuple[str, nn.Conv2d]]]:
    regular, depthwise = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or any(name.startswith(s) for s in skip):
            continue
        is_dw = module.groups > 1 and module.groups == module.in_channels
        (depthwise if is_dw else regular).append((name, module))
    return regular, depthwise


def _following_batchnorms(model: nn.Module) -> dict[str, tuple[str, float]]:
    """Conv module name -> (name, eps) of the BatchNorm right after it in the same Sequential (if any)."""
    pairs: dict[str, tuple[str, float]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a_name, a), (b_name, b) in zip(children, children[1:], strict=False):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    prefix = f"{name}." if name else ""
                    pairs[prefix + a_name] = (prefix + b_name, b.eps)
    return pairs


def _assign_conv(
    state: StateDict,
    manifest_path: Path,
    tf_name: str,
    our_name: str,
    conv: nn.Conv2d,
    kernel: torch.Tensor,
    tensors: dict[str, np.ndarray],
    batchnorm: tuple[str, float] | None,
) -> None:
    if tuple(kernel.shape) != tuple(conv.weight.shape):
        raise CheckpointError(
            f"{manifest_path}: {tf_name} has shape {tuple(kernel.shape)} where {our_name}.weight "
            f"needs {tuple(conv.weight.shape)}; not an RVM MobileNetV3 export"
        )
    state[f"{our_name}.weight"] = kernel.contiguous()
    layer = _KERNEL_SUFFIX_RE.sub("", tf_name)  # .../conv2d_N or .../depthwise_conv2d_N
    folded_offset = tensors.get(layer + "/Conv2D_bn_offset", tensors.get(layer + "/depthwise_bn_offset"))
    bias = tensors.get(layer + "/BiasAdd/ReadVariableOp")
    if conv.bias is not None:
        if bias is None:
            raise CheckpointError(f"{manifest_path}: no bias found for {tf_name} ({our_name}.bias)")
        state[f"{our_name}.bias"] = torch.from_numpy(bias.copy())
        return
    if batchnorm is None:
        return
    bn_name, eps = batchnorm
    channels = kernel.shape[0]
    if folded_offset is not None:
        scale = torch.ones(channels)
        offset = torch.from_numpy(folded_offset.copy())
    else:
        block = layer.rsplit("/", 1)[0]
        found = [n for n in tensors if n.startswith(block + "/batch_normalization") and n.endswith("/Scaled")]
        if len(found) != 1:
            raise CheckpointError(f"{manifest_path}: no BatchNorm (folded or separate) found for {tf_name}")
        scale = torch.from_numpy(tensors[found[0]].copy())
        offset = torch.from_numpy(tensors[found[0].replace("/Scaled", "/Offset")].copy())
    # An identity-statistics BatchNorm: (x - 0) / sqrt((1 - eps) + eps) * scale + offset.
    state[f"{bn_name}.weight"] = scale
    state[f"{bn_name}.bias"] = offset
    state[f"{bn_name}.running_mean"] = torch.zeros(channels)
    state[f"{bn_name}.running_var"] = torch.full((channels,), 1.0 - eps)


# --------------------------------------------------------------------------- building the model


def infer_architecture(state: StateDict) -> tuple[str, str]:
    """(variant, refiner) from the keys: the encoder's key prefix, and whether refiner weights exist."""
    if any(k.startswith("backbone.features.") for k in state):
        variant = "mobilenetv3"
    elif any(k.startswith("backbone.layer1.") for k in state):
        variant = "resnet50"
    else:
        sample = ", ".join(sorted(state)[:3])
        raise CheckpointError(f"not an RVM checkpoint: no MobileNetV3 or ResNet-50 encoder keys (first keys: {sample})")
    refiner = "deep_guided_filter" if "refiner.box_filter.weight" in state else "fast_guided_filter"
    return variant, refiner


def build_model(state: StateDict, source: str = "checkpoint") -> MattingNetwork:
    """Instantiate the architecture the keys describe and load them strictly, with readable errors."""
    try:
        variant, refiner = infer_architecture(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    model = MattingNetwork(variant, refiner)  # type: ignore[arg-type]
    expected = model.state_dict()
    # TorchScript archives keep non-persistent buffers (constants such as the input normalisation)
    # in their state_dict; they are not weights, so they are neither required nor unexpected.
    constants = {name for name, _ in model.named_buffers()} - set(expected)
    state = {k: v for k, v in state.items() if k not in constants}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{source}: not an RVM {variant} checkpoint: {'; '.join(parts)}")
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"{source}: {len(wrong)} tensors have the wrong shape: {'; '.join(wrong[:3])}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_model(
    path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> MattingNetwork:
    """An eval-mode network from any supported weights file (default: :func:`default_checkpoint`)."""
    path = resolve_checkpoint(path)
    state = load_state_dict(path)
    model = build_model(state, str(path))
    return model.to(device=device, dtype=dtype)


def save_checkpoint(state: StateDict, out: str | os.PathLike[str]) -> None:
    """Write in the official layout (a plain state_dict .pth), atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({k: v.contiguous() for k, v in state.items()}, tmp)
    os.replace(tmp, out)


def convert_weights(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> tuple[str, str]:
    """Any readable form -> official ``.pth``; validated by building the model before writing."""
    state = load_state_dict(src)
    model = build_model(state, str(src))
    save_checkpoint(model.state_dict(), out)
    return model.variant, model.refiner_name
