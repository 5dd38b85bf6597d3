"""Frame numbers: ranges as artists type them, and their place in sequence file names.

Ranges are written as Nuke writes them (``1001-1100``, ``1001-1050,1060-1100``, ``1-10x2``, comma or
space separated); file names carry the number as a token compositors already use: ``####`` (one ``#`` per
digit), ``%04d``, ``$F4`` / ``${F4}``, ``@@@@``. The engine, the worker and both plugins read frames through
these functions, so a range a plugin accepts is a range the engine renders.

Why not the ``fileseq`` library (checked with 3.4.0): its grammar means other things for the same text.
``####`` is 16 digits by default (``#`` is 4), ``1-10:2`` fills in between steps instead of stepping,
``1001 1002`` reads as frame 10011002, ``10-1`` runs backwards and ``1.5`` is a subframe where we refuse
them, negative frames pad the sign into the width (``-007``, ours ``-0007``), ``${F4}`` is not a token and
its frame limit is 10,000,000. Every one of those would need a guard around it, and vendoring its 18,600
lines (with an ANTLR runtime) into both plugins would cost more than these 150.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InputError

#: A generous sanity bound: a typo such as "1-10000000" should be an error, not minutes of list building.
MAX_FRAMES = 1_000_000

# ------------------------------------------------------------------------------------------ frame ranges

_RANGE = re.compile(r"(-?\d+)(?:-(-?\d+)(?:[x:](\d+))?)?")
_SEPARATORS = re.compile(r"[,\s]+")


def range_parts(text: str) -> list[str]:
    """The comma- or space-separated parts of a range, blanks dropped."""
    return [p for p in _SEPARATORS.split(str(text).strip()) if p]


def parse_frames(text: str) -> list[int]:
    """``"1001-1050,1060-1100"``, ``"1001"``, ``"1-10x2"`` (comma or space separated) -> sorted frames."""
    parts = range_parts(text)
    if not parts:
        raise InputError(f"bad frame range {text!r}: empty")
    frames: set[int] = set()
    for part in parts:
        match = _RANGE.fullmatch(part)
        if match is None:
            raise InputError(f"bad frame range {text!r}: {part!r} is not N, A-B or A-BxSTEP")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        step = int(match.group(3)) if match.group(3) is not None else 1
        if end < start:
            raise InputError(f"bad frame range {text!r}: {part!r} ends before it starts")
        if step < 1:
            raise InputError(f"bad frame range {text!r}: {part!r} has a step below 1")
        # Counted before the range is built, so "1-99999999" costs nothing.
        if (end - start) // step + 1 + len(frames) > MAX_FRAMES:
            raise InputError(f"bad frame range {text!r}: more than {MAX_FRAMES} frames")
        frames.update(range(start, end + 1, step))
    return sorted(frames)


def format_frames(frames: Iterable[int], limit: int | None = 20) -> str:
    """Compact text for a frame list, the inverse of ``parse_frames``: ``1003-1005, 1010, 1020-1030x2``.

    Only the first ``limit`` groups are spelled out, so a message about a sequence with thousands of
    gaps stays readable; a job's ``frames`` needs them all (``limit=None``) to parse back.
    """
    values = sorted(set(frames))
    groups: list[str] = []
    i = 0
    while i < len(values):
        j = i
        if i + 1 < len(values):
            step = values[i + 1] - values[i]
            while j + 1 < len(values) and values[j + 1] - values[j] == step:
                j += 1
            length = j - i + 1
            if not (step == 1 and length >= 2 or length >= 3):
                j = i
        if j == i:
            groups.append(str(values[i]))
        else:
            step = values[i + 1] - values[i]
            groups.append(f"{values[i]}-{values[j]}" + (f"x{step}" if step != 1 else ""))
        i = j + 1
    if limit is not None and len(groups) > limit:
        return ", ".join(groups[:limit]) + f", ... ({len(groups) - limit} more)"
    return ", ".join(groups)


def frame_bounds(text: str) -> tuple[int, int]:
    """First and last frame of a range."""
    frames = parse_frames(text)
    return frames[0], frames[-1]


# --------------------------------------------------------------------------------------------- patterns

_TOKEN = re.compile(r"(?P<hash>#+)|(?P<at>@+)|%(?P<printf>0?\d+)?d|\$\{F(?P<houdini_braced>\d*)\}|\$F(?P<houdini>\d*)")
_NUMBERED = re.compile(r"(?P<prefix>.*?)(?P<number>\d+)(?P<rest>\D*)")


@dataclass(frozen=True)
class FramePattern:
    """A sequence name split around its frame number: ``directory/prefix[frame]suffix``."""

    directory: str
    prefix: str
    padding: int
    suffix: str

    def name(self, frame: int) -> str:
        return self.prefix + frame_digits(frame, self.padding) + self.suffix

    def path(self, frame: int) -> str:
        return os.path.join(self.directory, self.name(frame))

    def hashes(self) -> str:
        return os.path.join(self.directory, self.prefix + "#" * self.padding + self.suffix)


def frame_digits(frame: int, padding: int) -> str:
    """The number as a file name spells it: zero-padded, the sign outside the padding (``-0007``)."""
    text = str(abs(frame)).zfill(padding)
    return "-" + text if frame < 0 else text


def has_frame_token(pattern: str) -> bool:
    """Whether the file name (not the folder) holds a frame-number token."""
    return bool(_TOKEN.search(os.path.basename(pattern)))


def split_pattern(pattern: str) -> FramePattern | None:
    """Split at the frame token, or None when the text has none; the token must be in the file name."""
    directory, name = os.path.split(pattern)
    tokens = list(_TOKEN.finditer(name))
    if len(tokens) > 1:
        raise InputError(f"{pattern}: more than one frame number token ({', '.join(t.group() for t in tokens)})")
    if not tokens:
        if _TOKEN.search(directory):
            raise InputError(f"{pattern}: the frame number token must be in the file name, not the folder")
        return None
    token = tokens[0]
    if token.group("hash"):
        padding = len(token.group("hash"))
    elif token.group("at"):
        padding = len(token.group("at"))
    else:
        width = token.group("printf") or token.group("houdini_braced") or token.group("houdini") or ""
        padding = int(width) if width else 1
    return FramePattern(directory, name[: token.start()], max(padding, 1), name[token.end() :])


def format_frame(pattern: str | os.PathLike[str], frame: int) -> str:
    """The file name of ``frame`` in an output pattern (``####``, ``%04d``, ``$F4``, ``@@@@``)."""
    text = os.fspath(pattern)
    parsed = split_pattern(text)
    if parsed is None:
        raise InputError(f"{text}: no frame number in the output pattern; use ####, %04d or $F4")
    return parsed.path(frame)


def split_numbered(name: str) -> tuple[str, str, str] | None:
    """``plate.1001.exr`` -> ``("plate.", "1001", ".exr")``: the last number before the extension.

    How Nuke, Blender and a folder scan all find the frame number in one frame's file name.
    """
    stem, extension = os.path.splitext(name)
    match = _NUMBERED.fullmatch(stem)
    if match is None:
        return None
    return match.group("prefix"), match.group("number"), match.group("rest") + extension
