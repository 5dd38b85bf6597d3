"""Worker settings: defaults, then a TOML file, then command-line flags (the last one wins).

The TOML file is the farm admin's: it is only read from ``--config`` or ``$RVM_WORKER_CONFIG``,
never from the watch root, because artists can write there and these settings decide what a
ticket may read and write.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rvm_vfx.errors import InputError

CONFIG_ENV = "RVM_WORKER_CONFIG"


@dataclass
class WorkerConfig:
    """Everything ``rvm-worker watch`` can be told. Paths are kept as given and made absolute on use."""

    root: Path
    output_root: Path
    allow_input_roots: list[Path] = field(default_factory=list)
    models_dir: Path | None = None
    default_checkpoint: str | None = None
    settle: float = 10.0
    snapshot_every: int = 10
    heartbeat_timeout: float = 60.0
    worker_id: str = ""
    dask_scheduler: str | None = None
    chunk_size: int = 100
    preroll: int = 15
    chunk_retries: int = 2
    max_frames: int = 100_000
    rescan_interval: float = 5.0
    torch_threads: int = 0
    log_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.worker_id:
            self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self.validate()

    def validate(self) -> None:
        """Refuse settings that would make the worker spin, never settle or never resume."""
        positive = {"settle": 0.0, "heartbeat_timeout": 0.5, "rescan_interval": 0.05}
        for name, low in positive.items():
            value = getattr(self, name)
            if not value > low:
                raise InputError(f"setting '{name}': must be > {low}, got {value}")
        for name in ("chunk_size", "max_frames"):
            if getattr(self, name) < 1:
                raise InputError(f"setting '{name}': must be >= 1, got {getattr(self, name)}")
        for name in ("snapshot_every", "preroll", "chunk_retries", "torch_threads"):
            if getattr(self, name) < 0:
                raise InputError(f"setting '{name}': must be >= 0, got {getattr(self, name)}")
        if not self.worker_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise InputError(f"setting 'worker_id': use letters, digits, '-', '_' and '.', got {self.worker_id!r}")

    @property
    def heartbeat_interval(self) -> float:
        """Beat four times per timeout, so one slow write never makes a live job look dead."""
        return max(0.1, self.heartbeat_timeout / 4)


_PATH_KEYS = {"root", "output_root", "models_dir", "log_file"}
_FIELD_NAMES = {f.name for f in dataclasses.fields(WorkerConfig)}


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a TOML file, keys as in WorkerConfig (``output_root``, ``allow_input_roots``...)."""
    try:  # Python 3.11+
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    data = data.get("worker", data)  # either top-level keys or a [worker] table
    unknown = sorted(set(data) - _FIELD_NAMES)
    if unknown:
        raise InputError(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(_FIELD_NAMES))})")
    base = path.parent
    for key in _PATH_KEYS & set(data):
        data[key] = base / os.path.expanduser(str(data[key]))
    if "allow_input_roots" in data:
        roots = data["allow_input_roots"]
        if not isinstance(roots, list):
            raise InputError(f"{path}: 'allow_input_roots' must be a list of folders")
        data["allow_input_roots"] = [base / os.path.expanduser(str(r)) for r in roots]
    return data


def build_config(overrides: dict[str, Any], config_file: str | None = None) -> WorkerConfig:
    """Defaults < TOML (``config_file`` or ``$RVM_WORKER_CONFIG``) < ``overrides`` (flags that were given)."""
    settings: dict[str, Any] = {}
    config_file = config_file or os.environ.get(CONFIG_ENV)
    if config_file:
        settings.update(load_toml(config_file))
    settings.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("root", "output_root"):
        if key not in settings:
            raise InputError(f"setting '{key}' is required (flag or config file)")
    for key in _PATH_KEYS & set(settings):
        settings[key] = Path(settings[key])
    settings["allow_input_roots"] = [Path(p) for p in settings.get("allow_input_roots", [])]
    for key, value in settings.items():
        settings[key] = _checked(key, value)
    return WorkerConfig(**settings)


_FLOATS = {"settle", "heartbeat_timeout", "rescan_interval"}
_INTS = {"snapshot_every", "chunk_size", "preroll", "chunk_retries", "max_frames", "torch_threads"}
_STRINGS = {"worker_id", "dask_scheduler", "default_checkpoint"}


def _checked(key: str, value: Any) -> Any:
    """A TOML value of the right type for ``key`` (an integer where a number is asked is fine)."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key in _FLOATS:
        if not (is_int or isinstance(value, float)):
            raise InputError(f"setting '{key}': expected a number, got {value!r}")
        return float(value)
    if key in _INTS and not is_int:
        raise InputError(f"setting '{key}': expected an integer, got {value!r}")
    if key in _STRINGS and value is not None and not isinstance(value, str):
        raise InputError(f"setting '{key}': expected a string, got {value!r}")
    return value
