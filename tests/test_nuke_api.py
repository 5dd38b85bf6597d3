"""The Nuke plugin uses only Nuke 15's real API, and the stand-in ``nuke`` refuses everything else.

``nuke15_api.txt`` (shared reference data) lists every public name of Nuke 15.0's ``nuke`` and
``nukescripts`` modules. The plugin's source is scanned for the names it takes from them, including the
Python it stores in knobs (button and knobChanged scripts run inside Nuke too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .nuke_stub import PLUGIN_DIR
from .nuke_stub.fake_nuke import FakeNuke, Knob, Menu, Node, OutputContext, ProgressTask
from .nuke_stub.nuke_api import API, parse_api

HOST_MODULES = ("nuke", "nukescripts")
PLUGIN_FILES = sorted(PLUGIN_DIR.rglob("*.py"))


def _embedded_python(tree: ast.AST) -> list[ast.AST]:
    """Strings of the source that are Python themselves (a knob's script), parsed."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "nuke." in node.value:
            try:
                found.append(ast.parse(node.value))
            except SyntaxError:
                continue
    return found


def host_names(tree: ast.AST) -> set[tuple[str, str, int]]:
    """(module, name, line) for ``nuke.X``, ``getattr(nuke, "X")`` and ``from nuke import X``."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in HOST_MODULES:
            used.add((node.value.id, node.attr, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in HOST_MODULES
            and isinstance(node.args[1], ast.Constant)
        ):
            used.add((node.args[0].id, str(node.args[1].value), node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module in HOST_MODULES:
            used.update((node.module, alias.name, node.lineno) for alias in node.names)
    return used


def plugin_host_names(path: Path) -> set[tuple[str, str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    used = host_names(tree)
    for snippet in _embedded_python(tree):
        used |= host_names(snippet)
    return used


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: p.relative_to(PLUGIN_DIR).as_posix())
def test_plugin_uses_only_names_nuke_15_has(path):
    unknown = sorted(f"{m}.{n} (line {line})" for m, n, line in plugin_host_names(path) if not API.has(m, n))
    assert unknown == [], f"{path.name} uses names no Nuke 15 has: {unknown}"


def test_the_scan_finds_names_in_code_and_in_knob_scripts():
    source = (
        "import nuke\n"
        "nuke.Divider_Knob('')\n"
        "v = getattr(nuke, 'EXE_PATH', '')\n"
        "from nukescripts import no_such_thing\n"
        "SCRIPT = 'import rvm_nuke.node\\nrvm_nuke.node.go(nuke.thisNode(), nuke.Missing())'\n"
    )
    names = {(m, n) for m, n, _ in host_names(ast.parse(source))}
    assert names == {("nuke", "Divider_Knob"), ("nuke", "EXE_PATH"), ("nukescripts", "no_such_thing")}
    embedded = set()
    for snippet in _embedded_python(ast.parse(source)):
        embedded |= {(m, n) for m, n, _ in host_names(snippet)}
    assert embedded == {("nuke", "thisNode"), ("nuke", "Missing")}
    assert not API.has("nuke", "Divider_Knob") and API.has("nuke", "Text_Knob") and API.has("nuke", "EXE_PATH")


def test_the_list_is_read_with_its_classes_and_inherited_methods():
    api = parse_api(
        "# comment\nnuke.Knob\nnuke.Knob.name()\nnuke.String_Knob < Knob\nnuke.String_Knob.getText()\n"
        "nuke.File_Knob < String_Knob\nnuke.File_Knob.evaluate()\nnuke.execute()\nnuke.STARTLINE\n"
        "nukescripts.Thread < Thread, QObject\n"
    )
    assert api.names["nuke"] == {"Knob", "String_Knob", "File_Knob", "execute", "STARTLINE"}
    assert api.methods("File_Knob") == {"evaluate", "getText", "name"}
    assert api.methods("Knob") == {"name"} and api.methods("Thread", "nukescripts") == set()
    # The real list: a File_Knob evaluates TCL (EvalString_Knob), a Text_Knob has no range, a Group has nodes.
    assert {"evaluate", "getEvaluatedValue", "setValue", "setFlag"} <= API.methods("File_Knob")
    assert "setRange" not in API.methods("Text_Knob") and "setRange" in API.methods("Double_Knob")
    assert "node" in API.methods("Group") and "node" not in API.methods("Node")


# ------------------------------------------------------------------------------------- the stand-in


def test_the_stand_in_refuses_names_nuke_does_not_have():
    nuke = FakeNuke().module
    with pytest.raises(AttributeError, match="Divider_Knob"):
        nuke.Divider_Knob("")
    with pytest.raises(AttributeError, match="messages"):
        nuke.messages  # noqa: B018 - the stand-in's own records are not part of Nuke
    assert nuke.Text_Knob("divider", "").name() == "divider" and nuke.STARTLINE == 4096
    text = nuke.Text_Knob("status", "")
    with pytest.raises(AttributeError, match="Text_Knob.*setRange"):
        text.setRange(0, 1)
    read = nuke.nodes.Read(name="Plate")
    with pytest.raises(AttributeError, match="Node.*nodes"):
        read.nodes()  # only a Group holds nodes
    with pytest.raises(AttributeError, match="File_Knob.*execute"):
        read["file"].execute()
    assert read["reload"].execute() is None and read["file"].evaluate() == ""


@pytest.mark.parametrize(
    ("cls", "api_classes"),
    [
        (Knob, [name for name in API.names["nuke"] if name.endswith("_Knob") or name in ("Knob", "PythonKnob")]),
        (Node, ["Node", "Group", "Root"]),
        (Menu, ["Menu"]),
        (ProgressTask, ["ProgressTask"]),
        (OutputContext, ["OutputContext"]),
    ],
)
def test_the_stand_ins_own_methods_are_all_nuke_methods(cls, api_classes):
    """The stand-in may model less than Nuke, never more: each public method is one some real class has."""
    real = set().union(*(API.methods(name) for name in api_classes))
    own = {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}
    assert own - real == set()


def test_the_stand_in_module_models_only_real_names():
    fake = FakeNuke()
    modelled = {name for name in fake.API_NAMES if not name.startswith("_")}
    assert {name for name in modelled if not API.has("nuke", name)} == set()
