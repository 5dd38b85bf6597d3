"""A small stand-in for Nuke's ``nuke`` module: nodes that hold knob values, and a record of every call.

Only what the RVM Matte plugin touches is modelled, with Nuke's names and signatures, so the plugin's
glue runs unchanged against it. Dialogs answer from queues the test fills (``answers``) and record what
they were shown (``messages``); ``nuke.execute`` calls ``render_hook`` so a test can stand in for
Nuke's renderer; ``executeInMainThread`` runs the call at once (tests have one thread of interest).
"""

from __future__ import annotations

import types
from collections import deque
from typing import Any

STARTLINE = 0x1000
INVISIBLE = 0x400


class Knob:
    def __init__(self, name: str, label: str = "", value: Any = "", kind: str = "String") -> None:
        self._name = name
        self.label = label
        self._value = value
        self.kind = kind
        self.flags: set[int] = set()
        self.enabled = True
        self.tooltip = ""
        self.values: list[str] = []
        self.script = ""
        self.executed = 0
        self.range: tuple[float, float] | None = None
        self.history: list[Any] = []

    def name(self) -> str:
        return self._name

    def value(self) -> Any:
        return self._value

    def getValue(self) -> Any:
        return self._value

    def getEvaluatedValue(self) -> Any:
        return self._value

    def setValue(self, value: Any) -> bool:
        if self.kind == "Enumeration" and self.values and value not in self.values:
            raise ValueError(f"{self._name}: {value!r} is not one of {self.values}")
        self._value = value
        self.history.append(value)
        return True

    def setFlag(self, flag: int) -> None:
        self.flags.add(flag)

    def clearFlag(self, flag: int) -> None:
        self.flags.discard(flag)

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def setTooltip(self, text: str) -> None:
        self.tooltip = text

    def setRange(self, low: float, high: float) -> None:
        self.range = (low, high)

    def execute(self) -> None:
        self.executed += 1


def _knob_factory(kind: str, default: Any) -> Any:
    def make(name: str, label: str = "", *rest: Any) -> Knob:
        knob = Knob(name, label or name, default, kind)
        if kind == "Enumeration" and rest:
            knob.values = list(rest[0])
            knob._value = knob.values[0] if knob.values else ""
        elif kind == "PyScript" and rest:
            knob.script = rest[0]
        elif kind == "Text" and rest:
            knob._value = rest[0]
        return knob

    make.__name__ = f"{kind}_Knob"
    return make


# Knobs each node class is born with (enough for what the plugin reads and sets).
_CLASS_KNOBS: dict[str, dict[str, Any]] = {
    "Read": {
        "file": "", "first": 1, "last": 1, "origfirst": 1, "origlast": 1, "colorspace": "default",
        "premultiplied": False, "raw": False, "on_error": "error", "frame_mode": "expression", "frame": "",
        "disable": False, "reload": None,
    },
    "Write": {
        "file": "", "file_type": "", "channels": "rgb", "datatype": "", "compression": "", "colorspace": "default",
        "create_directories": False, "disable": False,
    },
    "Switch": {"which": 0, "disable": False},
    "Group": {"knobChanged": "", "label": "", "disable": False},
    "Root": {"name": "", "colorManagement": "OCIO", "OCIO_config": "", "customOCIOConfigPath": ""},
    "Preferences": {},
}  # fmt: skip


class Node:
    def __init__(self, fake: FakeNuke, klass: str, name: str) -> None:
        self._fake = fake
        self._class = klass
        self._name = name
        self._knobs: dict[str, Knob] = {}
        self._inputs: dict[int, Node | None] = {}
        self.parent: Node | None = None
        self.children: list[Node] = []
        self.first_frame = 1
        self.last_frame = 1
        self.panel_shown = False
        self.deleted = False
        for knob_name, value in _CLASS_KNOBS.get(klass, {"disable": False}).items():
            self._knobs[knob_name] = Knob(knob_name, knob_name, value)

    # identity
    def Class(self) -> str:
        return self._class

    def name(self) -> str:
        if self.deleted:
            raise ValueError("A PythonObject is not attached to a node")
        return self._name

    def fullName(self) -> str:
        if self.parent is not None and self.parent is not self._fake._root:
            return f"{self.parent.fullName()}.{self._name}"
        return self._name

    def setName(self, name: str, uncollide: bool = True, updateExpressions: bool = False) -> None:
        taken = {n._name for n in self._fake.all_nodes() if n is not self}
        if uncollide and name in taken:
            stem = name.rstrip("0123456789") or name
            number = 1
            while f"{stem}{number}" in taken:
                number += 1
            name = f"{stem}{number}"
        self._name = name

    # knobs
    def knob(self, name: str) -> Knob | None:
        return self._knobs.get(name)

    def knobs(self) -> dict[str, Knob]:
        return dict(self._knobs)

    def __getitem__(self, name: str) -> Knob:
        if name not in self._knobs:
            raise NameError(f"{self._name} has no knob named {name!r}")
        return self._knobs[name]

    def addKnob(self, knob: Knob) -> None:
        self._knobs[knob.name()] = knob

    # graph
    def input(self, index: int) -> Node | None:
        return self._inputs.get(index)

    def setInput(self, index: int, node: Node | None) -> bool:
        self._inputs[index] = node
        return True

    def firstFrame(self) -> int:
        return self.first_frame

    def lastFrame(self) -> int:
        return self.last_frame

    def showControlPanel(self) -> None:
        self.panel_shown = True

    # groups
    def node(self, name: str) -> Node | None:
        return next((n for n in self.children if n._name == name), None)

    def nodes(self) -> list[Node]:
        return list(self.children)

    def begin(self) -> Node:
        self._fake._context.append(self)
        return self

    def end(self) -> None:
        assert self._fake._context[-1] is self, "end() without matching begin()"
        self._fake._context.pop()

    def __enter__(self) -> Node:
        return self.begin()

    def __exit__(self, *exc: object) -> None:
        self.end()

    def __repr__(self) -> str:
        return f"<Node {self._class} {self._name}>"


class ProgressTask:
    """Records what the plugin showed; after ``cancel_after_progress`` progress updates it reports Cancel."""

    def __init__(self, fake: FakeNuke, title: str) -> None:
        self.title = title
        self.messages: list[str] = []
        self.progress: list[int] = []
        self._fake = fake
        fake.progress_tasks.append(self)

    def setMessage(self, text: str) -> None:
        self.messages.append(text)

    def setProgress(self, value: int) -> None:
        self.progress.append(int(value))

    def isCancelled(self) -> bool:
        after = self._fake.cancel_after_progress
        return after is not None and len(self.progress) >= after


class Menu:
    def __init__(self, name: str) -> None:
        self.name = name
        self.items: dict[str, Any] = {}

    def addMenu(self, name: str, **kwargs: Any) -> Menu:
        return self.items.setdefault(name, Menu(name))

    def addCommand(self, name: str, command: Any = None, *args: Any, **kwargs: Any) -> None:
        self.items[name] = command

    def findItem(self, name: str) -> Any:
        return self.items.get(name)


class _NodeFactory:
    def __init__(self, fake: FakeNuke) -> None:
        self._fake = fake

    def __getattr__(self, klass: str) -> Any:
        def make(**knobs: Any) -> Node:
            node = self._fake._new(klass, knobs.pop("name", None))
            for name, value in knobs.items():
                if node.knob(name) is None:
                    node.addKnob(Knob(name, name, value))
                else:
                    node[name].setValue(value)
            return node

        return make


class FakeNuke(types.ModuleType):
    """The ``nuke`` module a test puts into ``sys.modules``."""

    def __init__(self, exe_path: str = "") -> None:
        super().__init__("nuke")
        self.STARTLINE = STARTLINE
        self.INVISIBLE = INVISIBLE
        self.EXE_PATH = exe_path
        self.NUKE_VERSION_MAJOR = 14
        self.NUKE_VERSION_STRING = "14.0v5"
        self.messages: list[str] = []
        self.asked: list[str] = []
        self.answers: deque[bool] = deque()
        self.executed: list[tuple[Node, int, int]] = []
        self.deleted: list[Node] = []
        self.main_thread_calls: list[Any] = []
        self.progress_tasks: list[ProgressTask] = []
        self.cancel_after_progress: int | None = None
        self.render_hook: Any = None
        self.menus: dict[str, Menu] = {}
        self.plugin_paths: list[str] = []
        self._counter = 0
        self._root = Node(self, "Root", "root")
        self._prefs = Node(self, "Preferences", "preferences")
        self._context: list[Node] = [self._root]
        self.this_node: Node | None = None
        self.this_knob: Knob | None = None
        self.nodes = _NodeFactory(self)
        for kind, default in (
            ("String", ""), ("File", ""), ("Int", 0), ("Double", 0.0), ("Boolean", False), ("Enumeration", ""),
            ("PyScript", None), ("Tab", None), ("Text", ""), ("Divider", None),
        ):  # fmt: skip
            setattr(self, f"{kind}_Knob", _knob_factory(kind, default))

    # nodes
    def _new(self, klass: str, name: str | None = None) -> Node:
        self._counter += 1
        node = Node(self, klass, name or f"{klass}{self._counter}")
        parent = self._context[-1]
        node.parent = parent
        parent.children.append(node)
        return node

    def all_nodes(self) -> list[Node]:
        found, stack = [], [self._root]
        while stack:
            node = stack.pop()
            found.extend(node.children)
            stack.extend(node.children)
        return found

    def root(self) -> Node:
        return self._root

    def toNode(self, name: str) -> Node | None:
        if name == "preferences":
            return self._prefs
        if name == "root":
            return self._root
        return next((n for n in self._root.children if n._name == name), None)

    def createNode(self, klass: str, args: str = "", inpanel: bool = True) -> Node:
        selected = getattr(self, "selected", None)
        node = self._new(klass)
        if selected is not None:
            node.setInput(0, selected)
        return node

    def delete(self, node: Node) -> None:
        node.deleted = True
        if node.parent is not None and node in node.parent.children:
            node.parent.children.remove(node)
        self.deleted.append(node)

    def thisNode(self) -> Node | None:
        return self.this_node

    def thisKnob(self) -> Knob | None:
        return self.this_knob

    def filename(self, node: Node, *args: Any) -> str:
        return str(node["file"].value())

    # dialogs and execution
    def message(self, text: str) -> None:
        self.messages.append(text)

    def ask(self, text: str) -> bool:
        self.asked.append(text)
        return self.answers.popleft() if self.answers else False

    def execute(self, node: Node, first: int, last: int, incr: int = 1) -> None:
        self.executed.append((node, first, last))
        if self.render_hook is not None:
            self.render_hook(node, first, last)

    def ProgressTask(self, title: str) -> ProgressTask:
        return ProgressTask(self, title)

    def executeInMainThread(self, call: Any, args: Any = (), kwargs: Any = None) -> None:
        if not isinstance(args, tuple):
            args = (args,)
        self.main_thread_calls.append(call)
        call(*args, **(kwargs or {}))

    def menu(self, name: str) -> Menu:
        return self.menus.setdefault(name, Menu(name))

    def pluginAddPath(self, path: str) -> None:
        self.plugin_paths.append(path)
