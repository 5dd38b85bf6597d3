"""How a Job field is declared: its help, its kind of path, its allowed values, whether it changes pixels.

Each field of ``Job`` is declared once, with ``declare(...)`` as its dataclass default. Everything else is
read from those declarations: the checks with their messages (``job field 'X': ...``), the fields that are
paths and of which kind (the worker's path rules, ``Job.resolved``), the outputs, the resume fingerprint
(every field that changes what the output frames hold), and the CLI's flags and help.

Types come from the annotation itself (``str | None``), read as text so that nothing is evaluated and
the module runs on Python 3.9.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .names import OUTPUT_EXTENSION

# Kinds of path field. The worker confines each kind to its own root.
PLATE = "plate"  # what is read: an image sequence pattern, a folder of frames, or a video
OUTPUT = "output"  # an EXR sequence pattern that the render writes
CHECKPOINT = "checkpoint"  # a weights file (or a TF.js folder)
OCIO_CONFIG = "ocio_config"  # an OCIO config file, or an ocio:// address of a built-in one
FOLDER = "folder"  # a folder the render reads from
PATH_KINDS = (PLATE, OUTPUT, CHECKPOINT, OCIO_CONFIG, FOLDER)

_SPEC = "rvm_vfx.spec"  # the key of a field's declaration in its dataclass metadata

Check = Callable[[Any], None]


@dataclass(frozen=True)
class FieldSpec:
    """What a field means, beyond its name, type and default."""

    #: One line, usable as the CLI flag's help and a plugin's tooltip.
    help: str
    #: The value changes what the output frames hold (pixels, channels, files, encoding, or the frame a
    #: number maps to): a render resumed after it changed must start over rather than keep old frames.
    pixels: bool = False
    #: One of ``PATH_KINDS`` when the value is a path.
    path: str | None = None
    #: The values allowed (for a string field); the first message lists them in this order.
    choices: tuple[str, ...] = ()
    #: The smallest value allowed (for an integer field).
    minimum: int | None = None
    #: An empty or blank string is refused.
    nonempty: bool = False
    #: The CLI's name for it: a flag (``--frames``), a positional (``input``), or None when not a flag.
    flag: str | None = None
    #: A further rule; raises InputError with the text that follows ``job field 'X': ``.
    check: Check | None = None

    def __post_init__(self) -> None:
        if self.path is not None and self.path not in PATH_KINDS:
            raise ValueError(f"unknown path kind {self.path!r}")


def declare(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A dataclass field carrying its ``FieldSpec``; without a default or factory it is required."""
    return dataclasses.field(default=default, default_factory=factory, metadata={_SPEC: FieldSpec(**spec)})


# ------------------------------------------------------------------------------------------ types

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),  # JSON writes 1.0 as 1
    "bool": (bool,),
    "None": (type(None),),
    "dict[str, str]": (dict,),
}
TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", type(None): "null"}


def types_of(annotation: str) -> tuple[type, ...]:
    """``"str | None"`` -> ``(str, NoneType)``, from the annotation's text."""
    types: list[type] = []
    for part in annotation.split("|"):
        name = part.strip()
        if name not in _TYPES:
            raise TypeError(f"job fields take {', '.join(_TYPES)}; not {name!r}")
        types.extend(t for t in _TYPES[name] if t not in types)
    return tuple(types)


@dataclass(frozen=True)
class JobField:
    """A field as the rest of the contract sees it: name, types, default and its ``FieldSpec``."""

    name: str
    types: tuple[type, ...]
    required: bool
    spec: FieldSpec
    default: Any = None
    factory: Callable[[], Any] | None = None
    #: What the field belongs to, as its messages name it: ``job field 'X'``, ``finetune field 'X'``.
    owner: str = "job"

    @property
    def pixels(self) -> bool:
        return self.spec.pixels

    @property
    def path(self) -> str | None:
        return self.spec.path

    @property
    def choices(self) -> tuple[str, ...]:
        return self.spec.choices

    @property
    def help(self) -> str:
        return self.spec.help

    @property
    def flag(self) -> str | None:
        return self.spec.flag

    def default_value(self) -> Any:
        """The default (a fresh one for a mutable default); None for a required field."""
        return self.factory() if self.factory is not None else self.default

    def check_type(self, value: Any) -> None:
        # bool is an int in Python; a ticket saying "preroll": true is still a mistake.
        ok = isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types)
        if not ok:
            expected = " or ".join(TYPE_NAMES[t] for t in self.types)
            got = TYPE_NAMES.get(type(value), type(value).__name__)
            raise InputError(f"{self.owner} field '{self.name}': expected {expected}, got {got} ({value!r})")

    def check_value(self, value: Any) -> None:
        """The value rules, for a value of the right type; None (where allowed) passes."""
        if value is None:
            return
        try:
            self._check_value(value)
        except InputError as exc:
            raise InputError(f"{self.owner} field '{self.name}': {exc}") from None

    def check_name(self, value: Any) -> None:
        """An output's file name rule (``.exr``), for a value that passed ``check_value``.

        Kept apart so that ``Job.validate`` can run it after every value rule: a ticket with a wrong value
        and a badly named output is told about the value first, as the engine always did.
        """
        if self.spec.path != OUTPUT or not value:
            return
        try:
            check_output_extension(value)
        except InputError as exc:
            raise InputError(f"{self.owner} field '{self.name}': {exc}") from None

    def _check_value(self, value: Any) -> None:
        spec = self.spec
        if spec.nonempty and not value.strip():
            raise InputError("must not be empty")
        if spec.choices and value not in spec.choices:
            raise InputError(f"expected one of {', '.join(spec.choices)}, got {value!r}")
        if spec.minimum is not None and value < spec.minimum:
            raise InputError(f"must be >= {spec.minimum}, got {value}")
        if spec.check is not None:
            spec.check(value)


def check_output_extension(value: str) -> None:
    """Outputs are always OpenEXR, so a ``.png`` name would hide EXR data behind the wrong extension."""
    extension = os.path.splitext(os.path.basename(value))[1]
    if extension.lower() != OUTPUT_EXTENSION:
        shown = repr(extension) if extension else "no extension"
        raise InputError(
            f"outputs are written as OpenEXR, so the name must end in {OUTPUT_EXTENSION}; {value!r} has {shown}"
        )


def job_fields(cls: type, owner: str = "job") -> tuple[JobField, ...]:
    """The declared fields of a Job (or another declared) dataclass, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_SPEC)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with declare()")
        default = None if f.default is dataclasses.MISSING else f.default
        factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
        required = f.default is dataclasses.MISSING and factory is None
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(JobField(f.name, types_of(annotation), required, spec, default, factory, owner))
    return tuple(out)
