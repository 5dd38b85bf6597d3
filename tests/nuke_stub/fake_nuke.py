"""A stand-in for Nuke's ``nuke`` module that has Nuke 15's names and nothing else.

``FakeNuke`` is the test's handle: it holds the node graph and records what the plugin did (dialogs,
executes, progress, callbacks). The plugin never sees it; it sees ``FakeNuke.module``, which answers
only the names of Nuke 15's real API (``nuke_api.API``, read from the shared ``nuke15_api.txt``) and
raises AttributeError for any other, as a real Nuke would. Knobs, nodes, menus and progress tasks do the
same for their methods, per class (a Text_Knob has no ``setRange``, only a Group holds nodes). What each
object recorded is read with ``seen(obj)``.

Modelled behaviours a real Nuke has and the plugin must cope with:

* a Group's inputs are its Input nodes: ``setInput`` on a Group without one connects nothing
  (``createNode`` with a node selected connects the new node to it, if it can);
* ``EvalString_Knob.evaluate`` (File knobs) runs the TCL in brackets (``[value root.name]``,
  ``[file dirname ...]``, ``[frame]``, ``[getenv X]``) and puts the current frame in place of ``####``
  / ``%04d``; ``File_Knob.getEvaluatedValue(oc)`` does the same at an ``OutputContext``'s frame;
  ``value()`` returns the text as typed;
* user knobs on the preferences node are saved only when they carry ``ALWAYS_SAVE``
  (``reload_preferences`` saves, restarts the preferences node and runs the onCreate callbacks);
* ``addOnCreate`` / ``addOnScriptClose`` callbacks (``close_script`` runs the latter);
* ``executeInMainThread(WithResult)`` runs the call at once: tests have one thread of interest.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import shlex
import types
from collections import deque
from typing import Any

from .nuke_api import API

STARTLINE = 0x1000
INVISIBLE = 0x400
ALWAYS_SAVE = 0x100000


@functools.cache
def _methods(api_class: str) -> frozenset[str]:
    return frozenset(API.methods(api_class))


def seen(obj: Any) -> types.SimpleNamespace:
    """What a stand-in object recorded (its flags, executes, messages...): test-side only."""
    return object.__getattribute__(obj, "_seen")


class _Strict:
    """Public attributes are the real class's methods: anything else fails as it would in Nuke."""

    _api_class = "Knob"

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            api_class = object.__getattribute__(self, "_api_class")
            if name not in _methods(api_class):
                raise AttributeError(
                    f"'{api_class}' object has no attribute '{name}' (Nuke 15 has no nuke.{api_class}.{name})"
                )
        return object.__getattribute__(self, name)


# ------------------------------------------------------------------------------------------------ TCL

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_FRAME_TOKEN = re.compile(r"(?P<hash>#+)|%(?P<width>0?\d*)d")


def _frame_text(match: re.Match, frame: int) -> str:
    if match.group("hash"):
        return str(frame).zfill(len(match.group("hash")))
    return str(frame).zfill(int(match.group("width") or 0))


class Knob(_Strict):
    def __init__(self, fake: FakeNuke, name: str, label: str = "", value: Any = "", api_class: str = "Knob") -> None:
        self._fake = fake
        self._api_class = api_class
        self._name = name
        self._label = label
        self._value = value
        self._values: list[str] = []
        self._enabled = True
        self._tooltip = ""
        self._command = ""
        self._flags: set[int] = set()
        self._seen = types.SimpleNamespace(executed=0, range=None, history=[], input=None)

    def name(self) -> str:
        return self._name

    def label(self) -> str:
        return self._label

    def value(self) -> Any:
        return self._value

    def getValue(self) -> Any:
        return self._value

    def setValue(self, value: Any) -> bool:
        if self._values and value not in self._values:
            raise ValueError(f"{self._name}: {value!r} is not one of {self._values}")
        self._value = value
        self._seen.history.append(value)
        return True

    def values(self) -> list[str]:
        return list(self._values)

    def setFlag(self, flag: int) -> None:
        self._flags.add(flag)

    def clearFlag(self, flag: int) -> None:
        self._flags.discard(flag)

    def getFlag(self, flag: int) -> bool:
        return flag in self._flags

    def setEnabled(self, enabled: bool) -> None:
        self._enabled = bool(enabled)

    def enabled(self) -> bool:
        return self._enabled

    def setTooltip(self, text: str) -> None:
        self._tooltip = text

    def tooltip(self) -> str:
        return self._tooltip

    def setRange(self, low: float, high: float) -> None:
        self._seen.range = (low, high)

    def setInput(self, number: int) -> None:
        """A channel knob lists the channels of this input of its node."""
        self._seen.input = number

    def command(self) -> str:
        return self._command

    def execute(self) -> None:
        self._seen.executed += 1

    def evaluate(self) -> str:
        """The file name at the current frame: TCL in brackets run, frame tokens replaced by the frame."""
        return self._fake._evaluate_file_name(str(self._value or ""), self._fake._frame)

    def getEvaluatedValue(self, oc: OutputContext | None = None) -> str:
        """The same, at the output context's frame (``nuke.OutputContext().setFrame(f)``)."""
        return self._fake._evaluate_file_name(str(self._value or ""), oc.frame() if oc else self._fake._frame)

    def __repr__(self) -> str:
        return f"<{self._api_class} {self._name}>"


def restrict_values(knob: Knob, values: list[str]) -> None:
    """Make a knob an Enumeration that refuses anything but ``values`` (e.g. a colorspace menu)."""
    knob._api_class = "Enumeration_Knob"
    knob._values = list(values)


def _knob_factory(fake: FakeNuke, api_class: str, default: Any) -> Any:
    def make(name: str, label: str = "", *rest: Any) -> Knob:
        knob = Knob(fake, name, label or name, default, api_class)
        if api_class == "Enumeration_Knob" and rest:
            knob._values = list(rest[0])
            knob._value = knob._values[0] if knob._values else ""
        elif api_class == "PyScript_Knob" and rest:
            knob._command = rest[0]
        elif api_class == "Text_Knob" and rest:
            knob._value = rest[0]
        return knob

    make.__name__ = api_class
    return make


KNOB_CLASSES = {
    "String_Knob": "", "File_Knob": "", "Int_Knob": 0, "Double_Knob": 0.0, "Boolean_Knob": False,
    "Enumeration_Knob": "", "PyScript_Knob": None, "Tab_Knob": None, "Text_Knob": "", "Channel_Knob": "none",
}  # fmt: skip

# Knobs each node class is born with: name -> (knob class, default, allowed values).
_CLASS_KNOBS: dict[str, dict[str, tuple[str, Any, tuple[str, ...]]]] = {
    "Read": {
        "file": ("File_Knob", "", ()), "first": ("Int_Knob", 1, ()), "last": ("Int_Knob", 1, ()),
        "origfirst": ("Int_Knob", 1, ()), "origlast": ("Int_Knob", 1, ()),
        "colorspace": ("Enumeration_Knob", "default", ()), "premultiplied": ("Boolean_Knob", False, ()),
        "raw": ("Boolean_Knob", False, ()),
        "on_error": ("Enumeration_Knob", "error", ("error", "black", "checkerboard", "nearest frame")),
        "frame_mode": ("Enumeration_Knob", "expression", ()), "frame": ("String_Knob", "", ()),
        "disable": ("Disable_Knob", False, ()), "reload": ("PyScript_Knob", None, ()),
    },
    "Write": {
        "file": ("File_Knob", "", ()), "file_type": ("Enumeration_Knob", "", ()),
        "channels": ("ChannelMask_Knob", "rgb", ()), "datatype": ("Enumeration_Knob", "", ()),
        "compression": ("Enumeration_Knob", "", ()), "colorspace": ("Enumeration_Knob", "default", ()),
        "create_directories": ("Boolean_Knob", False, ()), "raw": ("Boolean_Knob", False, ()),
        "disable": ("Disable_Knob", False, ()),
    },
    # A Group's input i is its Input node whose number is i (Nuke numbers them in the order they are made).
    "Input": {"number": ("Int_Knob", 0, ()), "disable": ("Disable_Knob", False, ())},
    # Copy: channel from0 of input 1 (A) into channel to0 of input 0 (B).
    "Copy": {
        "from0": ("Channel_Knob", "rgba.alpha", ()), "to0": ("Channel_Knob", "rgba.alpha", ()),
        "disable": ("Disable_Knob", False, ()),
    },
    "Switch": {"which": ("Double_Knob", 0, ()), "disable": ("Disable_Knob", False, ())},
    "Group": {
        "knobChanged": ("PythonKnob", "", ()), "label": ("String_Knob", "", ()),
        "disable": ("Disable_Knob", False, ()),
    },
    "Root": {
        "name": ("File_Knob", "", ()), "colorManagement": ("Enumeration_Knob", "OCIO", ("Nuke", "OCIO")),
        "OCIO_config": ("Enumeration_Knob", "", ()), "customOCIOConfigPath": ("File_Knob", "", ()),
        "OCIOConfigPath": ("File_Knob", "", ()),
    },
    "Preferences": {},
}  # fmt: skip

# Python classes of nodes (everything else is a plain nuke.Node) and how many inputs a class takes.
_NODE_API_CLASS = {"Group": "Group", "Root": "Root"}
_NO_INPUTS = ("Read", "Input", "Root", "Preferences")


class Node(_Strict):
    def __init__(self, fake: FakeNuke, klass: str, name: str) -> None:
        self._fake = fake
        self._class = klass
        self._api_class = _NODE_API_CLASS.get(klass, "Node")
        self._name = name
        self._knobs: dict[str, Knob] = {}
        self._inputs: dict[int, Node | None] = {}
        self._parent: Node | None = None
        self._children: list[Node] = []
        self._seen = types.SimpleNamespace(frame_range=(1, 1), panel_shown=False, deleted=False)
        for knob_name, (api_class, value, values) in _CLASS_KNOBS.get(
            klass, {"disable": ("Disable_Knob", False, ())}
        ).items():
            knob = Knob(fake, knob_name, knob_name, value, api_class)
            knob._values = list(values)
            self._knobs[knob_name] = knob

    # identity
    def Class(self) -> str:
        return self._class

    def name(self) -> str:
        if self._seen.deleted:
            raise ValueError("A PythonObject is not attached to a node")
        return self._name

    def fullName(self) -> str:
        if self._parent is not None and self._parent is not self._fake._root:
            return f"{self._parent.fullName()}.{self._name}"
        return self._name

    def setName(self, name: str, uncollide: bool = True, updateExpressions: bool = False) -> None:
        taken = {n._name for n in self._fake._all_nodes() if n is not self}
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
    def maximumInputs(self) -> int:
        """A Group takes one input per Input node inside it; a Read none; the rest (here) any number."""
        if self._class == "Group":
            return sum(1 for child in self._children if child._class == "Input")
        return 0 if self._class in _NO_INPUTS else 99

    def input(self, index: int) -> Node | None:
        return self._inputs.get(index)

    def setInput(self, index: int, node: Node | None) -> bool:
        if node is not None and index >= self.maximumInputs():
            return False  # Nuke connects nothing: the node has no such input
        self._inputs[index] = node
        return True

    def firstFrame(self) -> int:
        return self._seen.frame_range[0]

    def lastFrame(self) -> int:
        return self._seen.frame_range[1]

    def showControlPanel(self) -> None:
        self._seen.panel_shown = True

    # groups
    def node(self, name: str) -> Node | None:
        return next((n for n in self._children if n._name == name), None)

    def nodes(self) -> list[Node]:
        return list(self._children)

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


def frame_range(node: Node, first: int, last: int) -> None:
    """The frames a node outputs (Nuke derives them from its inputs; here the test says)."""
    seen(node).frame_range = (first, last)


class OutputContext(_Strict):
    _api_class = "OutputContext"

    def __init__(self) -> None:
        self._frame = 1

    def setFrame(self, frame: int) -> None:
        self._frame = int(frame)

    def frame(self) -> int:
        return self._frame


class ProgressTask(_Strict):
    """Records what the plugin showed; after ``cancel_after_progress`` progress updates it reports Cancel."""

    _api_class = "ProgressTask"

    def __init__(self, fake: FakeNuke, title: str) -> None:
        self._fake = fake
        self._seen = types.SimpleNamespace(title=title, messages=[], progress=[])
        fake.progress_tasks.append(self)

    def setMessage(self, text: str) -> None:
        self._seen.messages.append(text)

    def setProgress(self, value: int) -> None:
        self._seen.progress.append(int(value))

    def isCancelled(self) -> bool:
        after = self._fake.cancel_after_progress
        return after is not None and len(self._seen.progress) >= after


class Menu(_Strict):
    _api_class = "Menu"

    def __init__(self, name: str) -> None:
        self._name = name
        self._items: dict[str, Any] = {}

    def name(self) -> str:
        return self._name

    def addMenu(self, name: str, **kwargs: Any) -> Menu:
        return self._items.setdefault(name, Menu(name))

    def addCommand(self, name: str, command: Any = None, *args: Any, **kwargs: Any) -> None:
        self._items[name] = command

    def findItem(self, name: str) -> Any:
        return self._items.get(name)


class _NodeFactory:
    """``nuke.nodes``: ``nuke.nodes.Read(file=...)`` makes a node and never connects it."""

    def __init__(self, fake: FakeNuke) -> None:
        self._fake = fake

    def __getattr__(self, klass: str) -> Any:
        def make(**knobs: Any) -> Node:
            node = self._fake._new(klass, knobs.pop("name", None))
            for name, value in knobs.items():
                if node.knob(name) is None:
                    node.addKnob(Knob(self._fake, name, name, value))
                else:
                    node[name].setValue(value)
            return node

        return make


class NukeModule(types.ModuleType):
    """What the plugin imports as ``nuke``: the handle's Nuke names, and AttributeError for all others."""

    def __init__(self, fake: FakeNuke) -> None:
        super().__init__("nuke")
        self.__dict__["_fake"] = fake

    def __getattr__(self, name: str) -> Any:
        fake = self.__dict__["_fake"]
        if name in fake.API_NAMES:
            return getattr(fake, name)
        if API.has("nuke", name):
            raise AttributeError(f"nuke.{name} exists in Nuke 15 but the stand-in does not model it yet")
        raise AttributeError(f"module 'nuke' has no attribute '{name}' (not in Nuke 15's API)")


class FakeNuke:
    """The test's handle on the stand-in: the graph, the answers to dialogs, and the records."""

    #: The names of Nuke's API the stand-in models (all of them in nuke15_api.txt, see test_nuke_api).
    API_NAMES = frozenset(
        {"STARTLINE", "INVISIBLE", "ALWAYS_SAVE", "EXE_PATH", "NUKE_VERSION_MAJOR", "NUKE_VERSION_STRING", "nodes",
         "root", "toNode", "createNode", "delete", "selectedNode", "thisNode", "thisKnob", "filename", "frame",
         "message", "ask", "execute", "ProgressTask", "executeInMainThread", "executeInMainThreadWithResult",
         "menu", "pluginAddPath", "addOnCreate", "addOnScriptClose", "OutputContext", *KNOB_CLASSES}
    )  # fmt: skip

    def __init__(self, exe_path: str = "") -> None:
        self.module = NukeModule(self)
        self.STARTLINE = STARTLINE
        self.INVISIBLE = INVISIBLE
        self.ALWAYS_SAVE = ALWAYS_SAVE
        self.EXE_PATH = exe_path
        self.NUKE_VERSION_MAJOR = 15
        self.NUKE_VERSION_STRING = "15.0v1"
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
        self.on_create: list[tuple[str, Any, tuple, dict]] = []
        self.on_script_close: list[tuple[Any, tuple, dict]] = []
        self.selected: Node | None = None
        self._frame = 1
        self._counter = 0
        self._root = Node(self, "Root", "root")
        self._prefs = Node(self, "Preferences", "preferences")
        self._context: list[Node] = [self._root]
        self.this_node: Node | None = None
        self.this_knob: Knob | None = None
        self.nodes = _NodeFactory(self)
        self.OutputContext = OutputContext
        for api_class, default in KNOB_CLASSES.items():
            setattr(self, api_class, _knob_factory(self, api_class, default))

    # nodes
    def _new(self, klass: str, name: str | None = None) -> Node:
        self._counter += 1
        node = Node(self, klass, name or f"{klass}{self._counter}")
        parent = self._context[-1]
        if klass == "Input":
            node["number"].setValue(sum(1 for child in parent._children if child._class == "Input"))
        node._parent = parent
        parent._children.append(node)
        self._run_on_create(node)
        return node

    def _run_on_create(self, node: Node) -> None:
        for node_class, call, args, kwargs in list(self.on_create):
            if node_class in ("*", node._class):
                previous, self.this_node = self.this_node, node
                try:
                    call(*args, **kwargs)
                finally:
                    self.this_node = previous

    def _all_nodes(self) -> list[Node]:
        found, stack = [], [self._root]
        while stack:
            node = stack.pop()
            found.extend(node._children)
            stack.extend(node._children)
        return found

    def root(self) -> Node:
        return self._root

    def toNode(self, name: str) -> Node | None:
        if name == "preferences":
            return self._prefs
        if name == "root":
            return self._root
        return next((n for n in self._root._children if n._name == name), None)

    def selectedNode(self) -> Node:
        if self.selected is None:
            raise ValueError("no node selected")
        return self.selected

    def createNode(self, klass: str, knobs: str = "", inpanel: bool = True) -> Node:
        """Nuke's toolbar path: the new node is connected to the selected one (when it can be) and selected."""
        node = self._new(klass)
        if self.selected is not None:
            node.setInput(0, self.selected)
        self.selected = node
        return node

    def delete(self, node: Node) -> None:
        seen(node).deleted = True
        if node._parent is not None and node in node._parent._children:
            node._parent._children.remove(node)
        self.deleted.append(node)

    def thisNode(self) -> Node | None:
        return self.this_node

    def thisKnob(self) -> Knob | None:
        return self.this_knob

    def filename(self, node: Node, *args: Any) -> str:
        """The file a node reads, TCL evaluated and its frame token kept."""
        return self._tcl(str(node["file"].value()))

    def frame(self, frame: int | None = None) -> int:
        if frame is not None:
            self._frame = int(frame)
        return self._frame

    # TCL, as much as a file name uses
    def _evaluate_file_name(self, text: str, frame: int) -> str:
        text = self._tcl(text, frame)
        return _FRAME_TOKEN.sub(lambda m: _frame_text(m, frame), text)

    def _tcl(self, text: str, frame: int | None = None) -> str:
        while True:
            match = _BRACKETS.search(text)
            if match is None:
                return text
            result = self._tcl_command(match.group(1), self._frame if frame is None else frame)
            text = text[: match.start()] + result + text[match.end() :]

    def _tcl_command(self, command: str, frame: int) -> str:
        words = shlex.split(command)
        if words[:1] == ["value"] and len(words) == 2:
            node_name, knob_name = words[1].rsplit(".", 1)
            node = self.toNode(node_name)
            if node is None or node.knob(knob_name) is None:
                raise RuntimeError(f"value: no such knob {words[1]}")
            return str(node[knob_name].value())
        if words[:1] == ["file"] and len(words) == 3:
            action = {"dirname": posixpath.dirname, "tail": posixpath.basename,
                      "rootname": lambda p: posixpath.splitext(p)[0]}.get(words[1])  # fmt: skip
            if action is not None:
                return action(words[2])
        if words == ["frame"]:
            return str(frame)
        if words[:1] == ["getenv"] and len(words) == 2:
            return os.environ.get(words[1], "")
        raise RuntimeError(f'invalid command name "{command}"')

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

    def executeInMainThreadWithResult(self, call: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not isinstance(args, tuple):
            args = (args,)
        self.main_thread_calls.append(call)
        return call(*args, **(kwargs or {}))

    def menu(self, name: str) -> Menu:
        return self.menus.setdefault(name, Menu(name))

    def pluginAddPath(self, path: str) -> None:
        self.plugin_paths.append(path)

    # callbacks
    def addOnCreate(self, call: Any, args: tuple = (), kwargs: dict | None = None, nodeClass: str = "*") -> None:
        self.on_create.append((nodeClass, call, tuple(args), dict(kwargs or {})))

    def addOnScriptClose(
        self, call: Any, args: tuple = (), kwargs: dict | None = None, nodeClass: str = "Root"
    ) -> None:
        self.on_script_close.append((call, tuple(args), dict(kwargs or {})))

    def close_script(self) -> None:
        """File > Close (or quitting): the onScriptClose callbacks run, then the script's nodes go."""
        for call, args, kwargs in list(self.on_script_close):
            call(*args, **kwargs)
        for node in self._all_nodes():
            self.delete(node)

    def reload_preferences(self) -> None:
        """Save the preferences, quit and start again: only user knobs flagged ALWAYS_SAVE are written."""
        saved = [
            (k.name(), k._api_class, k.label(), k.value(), set(k._flags))
            for k in self._prefs._knobs.values()
            if ALWAYS_SAVE in k._flags
        ]
        self._prefs = Node(self, "Preferences", "preferences")
        for name, api_class, label, value, flags in saved:
            knob = Knob(self, name, label, value, api_class)
            knob._flags = flags
            self._prefs.addKnob(knob)
        self._run_on_create(self._prefs)
