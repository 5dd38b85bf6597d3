"""Names every edge must agree on: file extensions, temporary frame names, the weights cache, checkpoints.

A plugin that cleans up after a killed engine, a worker that removes half-written frames and the engine
that writes them must spell the temporary name the same way; a plugin that points at the ResNet-50 weights
must look in the folder the engine downloads to. So each rule is written once, here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

#: Containers read as video (PyAV); any other input is an image sequence.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
#: Extensions a folder scan treats as frames; anything else in a plate folder (thumbnails' .db,
#: notes, ...) is ignored rather than reported as a second sequence.
IMAGE_EXTENSIONS = frozenset(
    {".exr", ".sxr", ".mxr", ".dpx", ".cin", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".tga", ".hdr",
     ".bmp", ".sgi", ".rgb", ".jp2", ".webp"}
)  # fmt: skip
#: Every output is OpenEXR: a name that says otherwise would lie to the next program that opens it.
OUTPUT_EXTENSION = ".exr"

#: An OCIO config given as ``ocio://name`` is one of OCIO's built-in configs: an address, not a path.
OCIO_BUILTIN_PREFIX = "ocio://"


def is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def is_ocio_address(value: str) -> bool:
    return value.startswith(OCIO_BUILTIN_PREFIX)


# ------------------------------------------------------------------------------------ temporary frames

# Hidden and ending in .tmp.exr: watch folders, sequence scans and compositors skip it, and the pid plus a
# random part keep two writers of the same frame from sharing one.
_TEMPORARY_FRAME = re.compile(r"^\.(?P<final>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp\.exr$")


def temporary_frame_path(path: str, pid: int | None = None, token: str | None = None) -> str:
    """Where a frame is written before it is renamed over ``path``: ``.<name>.<pid>.<8 hex>.tmp.exr``."""
    folder, base = os.path.split(path)
    pid = os.getpid() if pid is None else pid
    token = os.urandom(4).hex() if token is None else token
    return os.path.join(folder, f".{base}.{pid}.{token}.tmp.exr")


def parse_temporary_frame_name(name: str) -> tuple[str, int] | None:
    """(final file name, writer's pid) of a temporary frame name, or None for any other name."""
    match = _TEMPORARY_FRAME.match(name)
    if match is None:
        return None
    return match.group("final"), int(match.group("pid"))


# ------------------------------------------------------------------------------------ weights

#: The encoders of the official RVM release, and the file name of each one's PyTorch checkpoint.
OFFICIAL_CHECKPOINTS = {"mobilenetv3": "rvm_mobilenetv3.pth", "resnet50": "rvm_resnet50.pth"}
ENCODERS = tuple(OFFICIAL_CHECKPOINTS)
#: The encoder whose checkpoint the engine falls back to when a job names none.
DEFAULT_ENCODER = "mobilenetv3"
_RELEASE = "https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0/"
OFFICIAL_URLS = {encoder: _RELEASE + name for encoder, name in OFFICIAL_CHECKPOINTS.items()}

#: Overrides the default checkpoint for every job that names none.
CHECKPOINT_ENV = "RVM_VFX_CHECKPOINT"
CACHE_FOLDER_NAME = "rvm-vfx"


def cache_dir(env: Mapping[str, str] | None = None) -> str:
    """The per-user weights cache: ``$XDG_CACHE_HOME/rvm-vfx``, else ``~/.cache/rvm-vfx``.

    The same rule on Linux, macOS and Windows (not each OS's own cache folder), so one variable
    redirects it on a farm, and a checkpoint downloaded by an earlier version is still found.
    """
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, CACHE_FOLDER_NAME)


def official_checkpoint_path(encoder: str, env: Mapping[str, str] | None = None) -> str:
    """Where ``rvm-vfx download-weights`` puts the official checkpoint of ``encoder``."""
    return os.path.join(cache_dir(env), OFFICIAL_CHECKPOINTS[encoder])


def default_checkpoint(env: Mapping[str, str] | None = None) -> str:
    """``$RVM_VFX_CHECKPOINT`` when set, else the official MobileNetV3 file in the user cache."""
    env = os.environ if env is None else env
    return env.get(CHECKPOINT_ENV) or official_checkpoint_path(DEFAULT_ENCODER, env)
