"""The contract package itself: standard library only, cheap to import, and runnable by a host's Python 3.9.

The Nuke plugin (Nuke 14: Python 3.9) and the Blender add-on carry a copy of ``rvm_vfx/spec``; these tests
hold the source to what those copies need: no import outside the standard library and the package itself
(relative, so the copy works under any package name), no syntax or runtime feature newer than 3.9, and no
heavy module (torch, numpy, OpenImageIO) pulled in on the way.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

SPEC = ROOT / "rvm_vfx" / "spec"
MODULES = sorted(SPEC.glob("*.py"))
HEAVY = ("torch", "numpy", "OpenImageIO", "PyOpenColorIO", "av", "watchdog")

#: Exercises every module of the package and prints what it got, as JSON: run by the engine's Python and by
#: Python 3.9 on a vendored copy, the two outputs must be the same. ``PKG`` is the package's import name.
SMOKE = r"""
import importlib, io, json, sys
spec = importlib.import_module(PKG)
job_mod = importlib.import_module(PKG + ".job")
out = {}
job = spec.Job.from_dict({"input": "p/a.####.exr", "output": "o/m.####.exr", "frames": "1001-1003,1010"})
out["job"] = job.resolved("/base").to_dict()
out["fingerprint"] = spec.fingerprint(job)
out["fields"] = [[f.name, [t.__name__ for t in f.types], f.pixels, f.path, f.flag] for f in spec.FIELDS]
errors = []
for bad in ({"input": "a"}, {"input": "a", "output": "b.exr", "device": "tpu"}, {"input": "", "output": "b.exr"},
            {"input": "a", "output": "b.png"}, {"input": "a", "output": "b.exr", "schema_version": 9},
            {"input": "a", "output": "b.exr", "downsample": True}, {"input": "a", "output": "b.exr", "frames": "9-1"}):
    try:
        spec.Job.from_dict(bad)
    except spec.InputError as exc:
        errors.append(str(exc))
out["errors"] = errors
out["frames"] = [spec.parse_frames("1-10x3 20"), spec.format_frames([1, 2, 3, 7, 9, 11]),
                 spec.format_frame("/o/m.$F4.exr", -3)]
stream = io.StringIO()
write = spec.EventWriter(stream)
write(importlib.import_module(PKG + ".progress").event("progress", frame=3, done=1, total=4, fps=2.0, eta_s=1.5))
event = spec.parse_line(stream.getvalue())
out["event"] = [event.kind, event.fraction, event.eta_s, stream.getvalue()]
names = importlib.import_module(PKG + ".names")
out["names"] = [names.temporary_frame_path("/o/m.0001.exr", pid=7, token="0badf00d"),
                names.cache_dir({"XDG_CACHE_HOME": "/c"}), names.OFFICIAL_URLS["resnet50"]]
out["exit"] = [spec.exit_code(spec.InputError("x")), spec.exit_code(RuntimeError("y"))]
out["upgraded"] = spec.upgrade({"input": "a", "output": "b.exr"})
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
out["heavy"] = heavy
print(json.dumps(out, sort_keys=True))
"""


def run_smoke(python: str, package: str, path: Path) -> dict:
    code = f"PKG = {package!r}\nHEAVY = {HEAVY!r}\n{SMOKE}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(path)
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=path, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def modules_loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter loads for ``statement``, beyond what starting up loads anyway."""
    code = (
        "import sys, json; before = set(sys.modules); "
        + statement
        + "; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(result.stdout))


def test_importing_the_spec_loads_only_the_standard_library_and_itself() -> None:
    loaded = modules_loaded_by("import rvm_vfx.spec")
    ours = {m for m in loaded if m.split(".")[0] == "rvm_vfx"}
    assert ours == {"rvm_vfx", "rvm_vfx.spec"} | {f"rvm_vfx.spec.{p.stem}" for p in MODULES if p.stem != "__init__"}
    outside = sorted(m for m in loaded - ours if m.split(".")[0].lstrip("_") not in _stdlib())
    assert outside == []
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def _stdlib() -> set[str]:
    return {name.lstrip("_") for name in sys.stdlib_module_names}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_are_the_standard_library_or_relative(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # One level only: the copy is a package of its own, with no rvm_vfx above it.
                assert node.level == 1, f"{path.name}:{node.lineno} imports from outside the package"
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top == "__future__" or top in sys.stdlib_module_names, f"{path.name}:{node.lineno} imports {name}"


class _NewerThan39(ast.NodeVisitor):
    """Finds what parses on 3.9 but fails when run there: ``X | Y`` outside annotations, 3.10-only keywords."""

    TYPE_NAMES = {"str", "int", "float", "bool", "bytes", "dict", "list", "tuple", "set", "type", "object"}
    NEW_KEYWORDS = {"kw_only", "slots", "strict"}  # dataclass(kw_only=, slots=), zip(strict=)

    def __init__(self) -> None:
        self.found: list[str] = []

    def _skip_annotation(self, node: ast.AST | None) -> None:
        """Annotations are never evaluated (``from __future__ import annotations``): not visited."""

    def visit_arg(self, node: ast.arg) -> None:
        self._skip_annotation(node.annotation)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for child in [*node.decorator_list, node.args, *node.body]:
            self.visit(child)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.BitOr) and any(self._is_type(side) for side in (node.left, node.right)):
            self.found.append(f"line {node.lineno}: a type union evaluated at run time")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        for keyword in node.keywords:
            if keyword.arg in self.NEW_KEYWORDS:
                self.found.append(f"line {node.lineno}: {keyword.arg}= is Python 3.10+")
        self.generic_visit(node)

    def _is_type(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and node.value is None:
            return True
        return isinstance(node, ast.Name) and (node.id in self.TYPE_NAMES or node.id[:1].isupper())


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_the_source_is_python_3_9(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 9))
    assert any(
        isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
        for n in tree.body
    ), "annotations must stay unevaluated: from __future__ import annotations"
    finder = _NewerThan39()
    finder.visit(tree)
    assert finder.found == []


def test_the_3_9_checker_finds_what_it_looks_for() -> None:
    finder = _NewerThan39()
    finder.visit(
        ast.parse("Alias = int | None\ndef f(x: int | None) -> str | None:\n    return zip(a, b, strict=True)")
    )
    assert finder.found == ["line 1: a type union evaluated at run time", "line 3: strict= is Python 3.10+"]


def python39() -> str | None:
    """A working Python 3.9, if this machine has one (pyenv's shim exists even where 3.9 is not installed)."""
    candidates = [
        shutil.which("python3.9"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))),
    ]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def test_a_vendored_copy_runs_the_same_on_python_3_9(tmp_path) -> None:
    interpreter = python39()
    if interpreter is None:
        pytest.skip("no Python 3.9 on this machine; the syntax checks above still ran")
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "vendor_spec.py"), str(tmp_path / "host" / "_spec")],
        check=True,
        capture_output=True,
    )
    (tmp_path / "host" / "__init__.py").write_text("")
    on_39 = run_smoke(interpreter, "host._spec", tmp_path)
    here = run_smoke(sys.executable, "rvm_vfx.spec", ROOT)
    assert on_39 == here
    assert on_39["heavy"] == []
    assert on_39["errors"][1] == "job: job field 'device': expected one of auto, cpu, cuda, mps, got 'tpu'"
