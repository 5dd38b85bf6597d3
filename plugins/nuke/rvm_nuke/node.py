"""The RVM Matte node in Nuke: a Group with knobs, its buttons, a progress dialog, and the Read it shows.

This is the only module that talks to Nuke, and it only reads knobs, calls ``jobs``/``engine`` and sets
knobs back: every decision is made in those host-free modules, where it is tested. The node is a plain
Group holding an Input, a Read of the rendered matte, a Switch and an Output, so a script that uses it
opens and renders on any Nuke, with or without this plugin installed (it then simply reads the EXRs).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nuke

from . import engine, jobs, training
from .vendor.rvm_spec import Event, parse_frames

NODE_NAME = "RVMMatte1"
TAB_NAME = "rvm_matte"
STATE_KNOB = "rvm_state"
INPUT_NAME = "Input"
READ_NAME = "MatteRead"
SWITCH_NAME = "ShowMatte"
OUTPUT_NAME = "Output"
PRECOMP_NAME = "PrecompWrite"
DIVIDER_KNOB = "rvm_divider"


@dataclass
class _Run:
    """One node's work in flight (a precomp, an engine): the thread that follows it, and a flag that stops it."""

    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)


# Work in flight, by node: a second click must not start a second engine, and closing the script stops it.
_RUNNING: dict[str, _Run] = {}
# Whether this session already stops renders when the script closes or Nuke quits.
_watching_exit = False

# Python stored in the node's knobs (so in the .nk file): harmless on a Nuke without this plugin.
_BUTTON_SCRIPTS = {
    "render": jobs.knob_script("on_render(nuke.thisNode())", jobs.PLUGIN_MISSING),
    "send_to_farm": jobs.knob_script("on_send_to_farm(nuke.thisNode())", jobs.PLUGIN_MISSING),
    "reload": jobs.knob_script("on_reload(nuke.thisNode())", jobs.PLUGIN_MISSING),
    "train": jobs.knob_script("on_train(nuke.thisNode())", jobs.PLUGIN_MISSING),
}
_KNOB_CHANGED = jobs.knob_script("knob_changed(nuke.thisNode(), nuke.thisKnob())")


# ------------------------------------------------------------------------------------------ creation


def create_node() -> Any:
    """The toolbar command: a new RVM Matte node below the selected node, connected to it.

    A Group's inputs are its Input nodes, so ``createNode`` cannot connect a Group that is still empty:
    the selection is taken first, the internals are built, and then the selected node is connected.
    """
    selected = _selected_node()
    group = nuke.createNode("Group", inpanel=False)
    group.setName(NODE_NAME, uncollide=True)
    add_knobs(group)
    build_internals(group)
    link_channel_knobs(group)
    if selected is not None:
        group.setInput(0, selected)
    update_enabled(group)
    group.showControlPanel()
    return group


def _selected_node() -> Any:
    try:
        return nuke.selectedNode()
    except ValueError:  # Nuke: nothing is selected
        return None


def add_knobs(group: Any) -> None:
    group.addKnob(nuke.Tab_Knob(TAB_NAME, "RVM Matte"))
    for spec in panel_knobs():
        if spec.kind == "file":
            knob = nuke.File_Knob(spec.name, spec.label)
        elif spec.kind == "string":
            knob = nuke.String_Knob(spec.name, spec.label)
        elif spec.kind == "enum":
            knob = nuke.Enumeration_Knob(spec.name, spec.label, list(spec.choices))
        elif spec.kind == "bool":
            knob = nuke.Boolean_Knob(spec.name, spec.label)
        elif spec.kind == "double":
            knob = nuke.Double_Knob(spec.name, spec.label)
            knob.setRange(0.05, 1.0)
        elif spec.kind == "int":
            knob = nuke.Int_Knob(spec.name, spec.label)
        elif spec.kind == "channel":
            knob = nuke.Channel_Knob(spec.name, spec.label)
        elif spec.kind == "button":
            if spec.name == "render":
                group.addKnob(nuke.Text_Knob(DIVIDER_KNOB, ""))  # Nuke draws a Text_Knob without a label as a line
            knob = nuke.PyScript_Knob(spec.name, spec.label, _BUTTON_SCRIPTS[spec.name])
        elif spec.kind == "text":
            knob = nuke.Text_Knob(spec.name, spec.label, "")
        else:  # pragma: no cover - the table is fixed
            raise ValueError(spec.kind)
        if spec.kind in jobs.VALUE_KINDS:
            knob.setValue(spec.default)
        if spec.name in ("downsample_auto", "render", "train"):
            knob.setFlag(nuke.STARTLINE)
        if spec.tooltip:
            knob.setTooltip(spec.tooltip)
        group.addKnob(knob)
    state = nuke.String_Knob(STATE_KNOB, "state")
    state.setFlag(nuke.INVISIBLE)
    group.addKnob(state)
    group.knob("knobChanged").setValue(_KNOB_CHANGED)


def panel_knobs() -> tuple[jobs.KnobSpec, ...]:
    """The node's knobs in panel order: its own, with training's ("Train on keyframes") above the status line."""
    last = len(jobs.KNOBS) - 1 if jobs.KNOBS[-1].name == "status" else len(jobs.KNOBS)
    return (*jobs.KNOBS[:last], *training.KNOBS, *jobs.KNOBS[last:])


def build_internals(group: Any) -> None:
    """Input -> Switch(0); matte Read -> Switch(1) -> Output. Until a matte exists the node passes through.

    The optional matte inputs (``garbage``, ``core``, ``holdout``) are Inputs too, connected to nothing inside:
    only their precomp Writes read them, while a render runs.
    """
    with group:
        source = nuke.nodes.Input(name=INPUT_NAME)
        for name in (*jobs.MATTES, training.KEYFRAMES_INPUT):
            nuke.nodes.Input(name=name)
        read = nuke.nodes.Read(name=READ_NAME)
        switch = nuke.nodes.Switch(name=SWITCH_NAME)
        switch.setInput(0, source)
        switch.setInput(1, read)
        switch["which"].setValue(0)
        output = nuke.nodes.Output(name=OUTPUT_NAME)
        output.setInput(0, switch)


def link_channel_knobs(group: Any) -> None:
    """Each matte's channel menu lists the channels of its own input."""
    for name in jobs.MATTES:
        number = _input_number(group, name)
        if number is not None:
            group[f"{name}_channel"].setInput(number)


def _input_number(group: Any, name: str) -> int | None:
    """The Group's input that the Input node ``name`` is (None: a node made before that input existed)."""
    source = group.node(name)
    return None if source is None else int(source["number"].value())


def knob_changed(group: Any, knob: Any) -> None:
    if knob is not None and knob.name() in ("downsample_auto", "checkpoint", "showPanel"):
        update_enabled(group)


def update_enabled(group: Any) -> None:
    """Grey out what does not apply: the ratio under auto, the encoder when a checkpoint names its own."""
    group["downsample"].setEnabled(not group["downsample_auto"].value())
    group["encoder"].setEnabled(not str(group["checkpoint"].value()).strip())


# ------------------------------------------------------------------------------------ preferences


def register_preferences() -> None:
    """Preferences > RVM now, and again whenever Nuke makes its preferences node (when it loads them)."""
    install_preferences()
    for node_class in ("Preferences", "Root"):  # Root: Nuke makes no Preferences node without saved ones
        nuke.addOnCreate(install_preferences, nodeClass=node_class)


def install_preferences() -> None:
    """Add the RVM tab and its knobs to Nuke's preferences, once; keep what Nuke restored from its file.

    Nuke writes a user knob of its preferences node to the preferences file only if it carries
    ALWAYS_SAVE; without it a value set there would be gone after a restart.
    """
    prefs = nuke.toNode("preferences")
    if prefs is None:
        return
    for spec in jobs.PREFERENCES:
        knob = prefs.knob(spec.name)
        if knob is None:
            make = nuke.Tab_Knob if spec.kind == "tab" else nuke.File_Knob
            knob = make(spec.name, spec.label)
            prefs.addKnob(knob)
        knob.setFlag(nuke.ALWAYS_SAVE)
        if spec.tooltip:
            knob.setTooltip(spec.tooltip)


def preference(name: str) -> str:
    prefs = nuke.toNode("preferences")
    knob = prefs.knob(name) if prefs is not None else None
    return str(knob.value()).strip() if knob is not None else ""


# ------------------------------------------------------------------------------------------ reading


def read_settings(group: Any) -> dict[str, Any]:
    raw = {}
    for spec in jobs.KNOBS:
        knob = group.knob(spec.name) if spec.kind in jobs.VALUE_KINDS else None
        if knob is None:
            continue
        raw[spec.name] = _file_knob_value(spec, knob) if spec.kind == "file" else knob.value()
    return jobs.normalise_settings(raw)


def _file_knob_value(spec: jobs.KnobSpec, knob: Any) -> str:
    """A file knob as Nuke uses it: TCL (``[value root.name]``) evaluated, the frame token kept."""
    text = str(knob.value() or "").strip()
    try:
        return jobs.file_knob_value(text, lambda frame: _evaluated_at(knob, frame), int(nuke.frame()))
    except (jobs.PluginError, RuntimeError, ValueError) as exc:  # RuntimeError: a TCL error in Nuke
        raise jobs.PluginError(f"knob '{spec.label}': {exc}") from None


def _evaluated_at(knob: Any, frame: int) -> str:
    context = nuke.OutputContext()
    context.setFrame(frame)
    return str(knob.getEvaluatedValue(context) or "")


def _knob(node: Any, name: str, default: Any = None) -> Any:
    knob = node.knob(name)
    return knob.value() if knob is not None else default


def _evaluated(node: Any, name: str) -> str:
    """A path knob after TCL and environment expansion, as Nuke itself would use it."""
    knob = node.knob(name)
    if knob is None:
        return ""
    try:
        return str(knob.evaluate() or "")
    except (AttributeError, RuntimeError, ValueError):  # not an EvalString knob, or TCL that does not evaluate
        return str(knob.value() or "")


def script_path() -> str:
    return str(_knob(nuke.root(), "name", "") or "")


def root_colour_knobs() -> dict[str, str]:
    root = nuke.root()
    return {
        "colorManagement": str(_knob(root, "colorManagement", "") or ""),
        "OCIO_config": str(_knob(root, "OCIO_config", "") or ""),
        "customOCIOConfigPath": _evaluated(root, "customOCIOConfigPath"),
        "OCIOConfigPath": _evaluated(root, "OCIOConfigPath"),  # the config file Nuke loaded
    }


def _disabled(node: Any) -> bool:
    return bool(_knob(node, "disable", False))


def _read_filename(read: Any) -> str:
    """The Read's file with TCL expressions evaluated and its frame token kept."""
    try:
        name = nuke.filename(read)
    except (AttributeError, RuntimeError, ValueError):
        name = None
    return str(name or _knob(read, "file", "") or "")


# --------------------------------------------------------------------------------------------- plans


@dataclass
class Plan:
    """One render, decided: the Job, where its input comes from, and how Nuke should read the result."""

    job: dict[str, Any]
    source: jobs.Source
    read_colorspace: str
    settings: dict[str, Any]
    engine_ocio: str | None = None
    mattes: list[jobs.MatteSource] = field(default_factory=list)


def make_plan(group: Any, *, farm: bool = False, name: str | None = None) -> Plan:
    settings = read_settings(group)
    script = script_path()
    node_name = group.name()
    root = root_colour_knobs()
    management = root["colorManagement"] or "OCIO"
    config = jobs.resolve_ocio_config(root, os.environ)
    names = jobs.load_colour_names(config)

    upstream = group.input(0)
    if upstream is None:
        raise jobs.PluginError(f"Connect the plate to the input of {node_name}.")
    node, knobs = _source_knobs(upstream)
    problem = jobs.plain_read_problem(node.Class(), knobs)
    output = jobs.output_pattern(settings["output"], script, node_name)
    if problem is None:
        source = jobs.read_source(knobs, names, script, management, settings["input_colorspace"])
    else:
        source = jobs.precomp_source(
            output, node_name, int(upstream.firstFrame()), int(upstream.lastFrame()), names, management
        )
        source.reason = problem
    mattes = []
    for matte in jobs.MATTES:
        number = _input_number(group, matte)
        matte_upstream = group.input(number) if number is not None else None
        if matte_upstream is None:
            continue
        matte_node, matte_knobs = _source_knobs(matte_upstream)
        mattes.append(
            jobs.matte_source(
                matte, matte_node.Class(), matte_knobs, settings, output=output, node_name=node_name, script_path=script
            )
        )

    # Job.from_json resolves a relative ocio_config against the job's folder, which would mangle an
    # ocio:// URI; a local engine gets the URI through $OCIO instead.
    engine_ocio = config if (config or "").startswith("ocio://") and not farm else None
    job = jobs.build_job(
        settings,
        source,
        node_name=node_name,
        script_path=script,
        ocio_config=None if engine_ocio else config,
        farm=farm,
        name=name,
        metadata={"nuke_version": str(getattr(nuke, "NUKE_VERSION_STRING", ""))},
        mattes=mattes,
    )
    return Plan(
        job=job,
        source=source,
        read_colorspace=jobs.scene_linear_name(names, management),
        settings=settings,
        engine_ocio=engine_ocio,
        mattes=mattes,
    )


def _source_knobs(upstream: Any) -> tuple[Any, dict[str, Any]]:
    """The node an input really shows (through Dots and disabled nodes) and the knobs that say how it reads."""
    node = jobs.find_source(upstream, lambda n: n.Class(), lambda n: n.input(0), _disabled)
    knobs = {k: _knob(node, k) for k in ("disable", "file", "frame", "first", "last", "origfirst", "colorspace")}
    if jobs.plain_read_problem(node.Class(), knobs) is None:
        knobs["file"] = _read_filename(node)
    return node, knobs


def confirm_overwrite(job: dict[str, Any]) -> bool:
    """Ask before replacing frames; the engine itself never overwrites without being told to."""
    existing = jobs.existing_outputs(job["output"], parse_frames(job["frames"]))
    if existing and not nuke.ask(
        f"{len(existing)} frame(s) of\n{job['output']}\nexist already (first: {existing[0]}). Replace them?"
    ):
        return False
    job["overwrite"] = bool(existing)
    return True


@dataclass
class PrecompPart:
    """One Write the precomp renders (the plate's, or a matte input's), the frames it must render, and why."""

    write: Any
    frames: list[int]
    subject: str
    reason: str
    helpers: list[Any] = field(default_factory=list)  # nodes feeding the Write (a matte's channel Copy)


@dataclass
class Precomp:
    """Everything upstream that the engine cannot read itself, rendered for it frame by frame."""

    parts: list[PrecompPart]

    @property
    def frames(self) -> list[int]:
        return sorted(set().union(*(part.frames for part in self.parts)))

    @property
    def reason(self) -> str:
        return "; ".join(p.reason if p.subject == "the input" else f"{p.subject}: {p.reason}" for p in self.parts)


def prepare_precomp(group: Any, plan: Plan) -> Precomp | None:
    """Main thread: the precomp's Writes inside the node (None when the engine reads every input itself)."""
    parts = []
    if plan.source.precomp:
        frames = jobs.precomp_frames(plan.job["frames"], plan.job["preroll"], plan.source.first)
        knobs = jobs.precomp_write_knobs(plan.source)
        write = _precomp_write(group, PRECOMP_NAME, group.node(INPUT_NAME), plan.source.input, knobs)
        parts.append(PrecompPart(write, frames, "the input", plan.source.reason))
    for matte in plan.mattes:
        if matte.precomp:
            parts.append(_prepare_matte_precomp(group, matte, parse_frames(plan.job["frames"])))
    return Precomp(parts) if parts else None


def _prepare_matte_precomp(group: Any, matte: jobs.MatteSource, frames: list[int]) -> PrecompPart:
    """A matte input's Write; a picked channel is copied into alpha first, which is all the Write keeps."""
    helpers = []
    upstream = group.node(matte.name)
    if matte.pick != jobs.NO_CHANNEL:
        with group:
            copy = nuke.nodes.Copy(name=f"{PRECOMP_NAME}_{matte.name}_channel")
        copy.setInput(0, upstream)
        copy.setInput(1, upstream)
        copy["from0"].setValue(matte.pick)
        copy["to0"].setValue("rgba.alpha")
        helpers.append(copy)
        upstream = copy
    knobs = jobs.matte_precomp_write_knobs(matte)
    write = _precomp_write(group, f"{PRECOMP_NAME}_{matte.name}", upstream, matte.input, knobs)
    return PrecompPart(write, frames, matte.subject, matte.reason, helpers)


def _precomp_write(group: Any, name: str, upstream: Any, path: str, knobs: list[tuple[str, Any]]) -> Any:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with group:
        write = nuke.nodes.Write(name=name)
        write.setInput(0, upstream)
        for knob, value in knobs:
            if write.knob(knob) is not None:
                write[knob].setValue(value)
    return write


def _render_precomp_frame(write: Any, frame: int) -> str | None:
    """Main thread: one frame of the precomp; a failure comes back as text, never as an exception across threads."""
    try:
        nuke.execute(write, frame, frame)
    except (RuntimeError, ValueError) as exc:  # Nuke's render errors, Cancel in its dialog, a deleted node
        return str(exc) or "Nuke could not render it"
    return None


def _on_main_thread(call: Callable[..., Any], *args: Any) -> Any:
    """Nuke's API from a thread goes through Nuke's main thread; on the main thread it is a plain call."""
    if threading.current_thread() is threading.main_thread():
        return call(*args)
    return nuke.executeInMainThreadWithResult(call, args=args)


def run_precomp(precomp: Precomp, progress: _Progress) -> engine.EngineResult:
    """From a thread: the precomp frame by frame, each rendered on Nuke's main thread, so Nuke stays usable.

    Each frame renders every Write that needs it, so one progress bar follows the plate and its mattes.
    """
    failed: list[PrecompPart] = []

    def render(frame: int) -> str | None:
        for part in precomp.parts:
            if frame in part.frames:
                problem = _on_main_thread(_render_precomp_frame, part.write, frame)
                if problem:
                    failed.append(part)
                    return problem
        return None

    result = engine.run_frames(precomp.frames, render, on_event=progress.on_event, is_cancelled=progress.is_cancelled)
    if result.status == "error" and failed:
        part = failed[0]
        result.message = f"The precomp of {part.subject} ({part.reason}) did not finish: {result.message}"
    return result


def delete_precomp(precomp: Precomp | None) -> None:
    if precomp is None:
        return
    for part in precomp.parts:
        for made in (part.write, *part.helpers):
            try:
                nuke.delete(made)
            except (ValueError, RuntimeError):  # already gone with its script
                pass


# ------------------------------------------------------------------------------------------ showing


def set_status(group: Any, text: str) -> None:
    knob = group.knob("status")
    if knob is not None:
        knob.setValue(text)


def apply_read_knobs(group: Any, knobs: list[tuple[str, Any]]) -> list[str]:
    """Point the internal Read at the matte; returns the knobs Nuke refused (e.g. an unknown space)."""
    read = group.node(READ_NAME)
    refused = []
    for name, value in knobs:
        try:
            read[name].setValue(value)
        except (ValueError, TypeError, NameError):
            refused.append(name)
    read["reload"].execute()
    group.node(SWITCH_NAME)["which"].setValue(1)
    return refused


def show_matte(group: Any, plan: Plan, farm: bool = False, extra: dict[str, Any] | None = None) -> list[str]:
    knobs = jobs.matte_read_knobs(plan.job, plan.read_colorspace, farm=farm)
    state = {"read": knobs, "output": plan.job["output"], "frames": plan.job["frames"]}
    state.update(extra or {})
    group[STATE_KNOB].setValue(json.dumps(state))
    return apply_read_knobs(group, knobs)


def _alive(group: Any) -> bool:
    try:
        group.name()
    except ValueError:  # Nuke: "PythonObject is not attached to a node" once the node is deleted
        return False
    return True


# ------------------------------------------------------------------------------------------- render


class _Progress:
    """Feeds engine events into a ``nuke.ProgressTask``; dropping the task closes Nuke's dialog."""

    def __init__(self, title: str, stop: threading.Event) -> None:
        self.task = nuke.ProgressTask(title)
        self.task.setMessage("starting")
        self.stop = stop

    def on_event(self, event: Event) -> None:
        percent = engine.progress_percent(event)
        if percent is not None:
            self.task.setProgress(percent)
        self.task.setMessage(engine.progress_text(event))

    def is_cancelled(self) -> bool:
        return self.stop.is_set() or bool(self.task.isCancelled())

    def close(self) -> None:
        self.task = None


def _refuse_a_second_run(group: Any) -> None:
    if group.fullName() in _RUNNING:
        raise jobs.PluginError(f"{group.name()} is already rendering; cancel it in the progress dialog first.")


def start_work(
    group: Any,
    work: Callable[[_Progress], engine.EngineResult],
    finish: Callable[[engine.EngineResult], None],
    background: bool = True,
) -> Any:
    """Run ``work`` with a progress dialog, then ``finish`` with its result on Nuke's main thread.

    With ``background`` the work runs in a thread (returned): Nuke stays responsive and its progress
    dialog can cancel. Without, it runs here (a terminal session, tests) and its result is returned.
    """
    key = group.fullName()
    run = _RUNNING[key] = _Run()
    title = f"RVM Matte: {group.name()}"
    _stop_renders_on_exit()

    def follow() -> engine.EngineResult:
        progress = None
        try:
            progress = _Progress(title, run.stop)
            return work(progress)
        except Exception as exc:  # noqa: BLE001 - reported as a message on the main thread
            traceback.print_exc()
            return engine.EngineResult(status="error", message=f"could not follow the engine: {exc}")
        finally:
            if progress is not None:
                progress.close()

    if not background:
        result = follow()
        finish_work(key, finish, result)
        return result

    def in_background() -> None:
        nuke.executeInMainThread(finish_work, args=(key, finish, follow()))

    run.thread = threading.Thread(target=in_background, name=f"rvm-matte-{group.name()}", daemon=True)
    run.thread.start()
    return run.thread


def finish_work(key: str, finish: Callable[[engine.EngineResult], None], result: engine.EngineResult) -> None:
    """Main thread: the node may render again, then the result is shown."""
    _RUNNING.pop(key, None)
    finish(result)


def _stop_renders_on_exit() -> None:
    """Once a session: closing the script (or opening another) stops its renders, and so does quitting Nuke."""
    global _watching_exit
    if _watching_exit:
        return
    nuke.addOnScriptClose(stop_renders)
    atexit.register(engine.stop_all)
    _watching_exit = True


def stop_renders() -> None:
    """onScriptClose: every precomp stops before its next frame and every engine is killed now."""
    for run in list(_RUNNING.values()):
        if isinstance(run, _Run):
            run.stop.set()
    engine.stop_all()


# ------------------------------------------------------------------------------------------- render


def render_matte(group: Any, background: bool = True) -> Any:
    """Render the matte here: the precomp if one is needed, then the engine, then show the frames.

    Everything that can be refused (knobs, the engine itself) is checked before any work starts.
    """
    _refuse_a_second_run(group)
    plan = make_plan(group)
    env = engine.engine_environment(os.environ, plan.engine_ocio)
    launcher = engine.engine_launcher(
        jobs.engine_python(plan.settings["engine_python"], preference(jobs.PREF_ENGINE_PYTHON))
    )
    engine.check_engine(launcher, env)
    if not confirm_overwrite(plan.job):
        return None
    output_dir = os.path.dirname(plan.job["output"])
    os.makedirs(output_dir, exist_ok=True)
    job_path = jobs.write_json_atomic(jobs.job_file_path(plan.job["output"], group.name()), plan.job)
    command = engine.render_command(launcher, job_path)
    precomp = prepare_precomp(group, plan)
    rendering = f"rendering {plan.job['frames']}"
    set_status(group, f"precomp: {precomp.reason}" if precomp else rendering)

    def work(progress: _Progress) -> engine.EngineResult:
        if precomp is not None:
            result = run_precomp(precomp, progress)
            if not result.ok:
                return result
            _on_main_thread(set_status, group, rendering)
        return engine.run_engine(
            command, on_event=progress.on_event, is_cancelled=progress.is_cancelled, env=env, output_dirs=[output_dir]
        )

    def finish(result: engine.EngineResult) -> None:
        delete_precomp(precomp)
        finish_render(group, plan, result)

    return start_work(group, work, finish, background)


def finish_render(group: Any, plan: Plan, result: engine.EngineResult) -> None:
    """Main thread: show the matte, or say why there is none."""
    if not _alive(group):
        return
    if result.ok:
        refused = show_matte(group, plan, extra={"last": "local"})
        status = f"rendered {result.done} frame(s)"
        if refused:
            status += f"; set the Read's {', '.join(refused)} by hand"
        if result.warnings:
            status += f" ({len(result.warnings)} warning(s): {result.warnings[-1]})"
        set_status(group, status)
    elif result.status == "cancelled":
        set_status(group, f"cancelled: {result.message}")
    else:
        set_status(group, "render failed")
        nuke.message(f"RVM Matte {group.name()}: the render failed.\n\n{result.message}")


# -------------------------------------------------------------------------------------------- farm


def send_to_farm(group: Any, background: bool = True) -> str | None:
    """Send this node to the farm; returns the job id.

    The farm renders mattes, not Nuke scripts, so a precomp (any input but a plain Read) is rendered
    here first, in the background with a progress dialog, and the ticket is written when it is complete.
    """
    _refuse_a_second_run(group)
    folder = jobs.watch_folder(preference(jobs.PREF_WATCH_FOLDER))
    job_id = jobs.make_job_id(group.name())
    plan = make_plan(group, farm=True, name=job_id)
    if not confirm_overwrite(plan.job):
        return None
    os.makedirs(os.path.dirname(plan.job["output"]), exist_ok=True)
    precomp = prepare_precomp(group, plan)
    if precomp is None:
        submit_ticket(group, plan, folder, job_id)
        return job_id
    set_status(group, f"precomp: {precomp.reason}")

    def finish(result: engine.EngineResult) -> None:
        delete_precomp(precomp)
        if not _alive(group):
            return
        if result.ok:
            _guarded(lambda g: submit_ticket(g, plan, folder, job_id), group)
        elif result.status == "cancelled":
            set_status(group, f"cancelled: {result.message}")
        else:
            set_status(group, "precomp failed")
            nuke.message(f"RVM Matte {group.name()}: nothing was sent to the farm.\n\n{result.message}")

    start_work(group, lambda progress: run_precomp(precomp, progress), finish, background)
    return job_id


def submit_ticket(group: Any, plan: Plan, folder: str, job_id: str) -> str:
    """Write the farm ticket and point the node's Read at where the frames will land."""
    ticket = jobs.write_ticket(plan.job, folder, job_id)
    show_matte(group, plan, farm=True, extra={"last": "farm", "job_id": job_id, "ticket": ticket})
    set_status(group, f"on the farm as {job_id}")
    nuke.message(
        f"Sent to the farm as job {job_id}.\n\nTicket: {ticket}\n"
        f"Frames land in {os.path.dirname(plan.job['output'])}; press Reload to see them."
    )
    return ticket


# ------------------------------------------------------------------------------------------ reload


def reload_matte(group: Any) -> int:
    """Re-read the matte frames (those the farm has delivered so far); returns how many are on disk."""
    state = json.loads(str(_knob(group, STATE_KNOB, "") or "{}"))
    if not state.get("read"):
        raise jobs.PluginError("Nothing to reload yet: render the matte or send it to the farm first.")
    frames = parse_frames(state["frames"])
    landed = len(jobs.existing_outputs(state["output"], frames))
    apply_read_knobs(group, jobs.reload_read_knobs(state["read"], landed, len(frames)))
    label = f"farm job {state['job_id']}: " if state.get("job_id") else ""
    set_status(group, f"{label}{landed} of {len(frames)} frame(s) on disk")
    return landed


# ------------------------------------------------------------------------------------------ buttons


def _guarded(action: Any, group: Any) -> Any:
    """Run a button's action; problems become a message with their text, never a traceback."""
    try:
        return action(group)
    except (jobs.PluginError, engine.EngineNotFound, OSError) as exc:
        nuke.message(f"RVM Matte {group.name()}: {exc}")
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the terminal, the text to the artist
        traceback.print_exc()
        nuke.message(f"RVM Matte {group.name()}: unexpected error: {exc}")
    return None


def on_render(group: Any) -> Any:
    return _guarded(render_matte, group)


def on_send_to_farm(group: Any) -> Any:
    return _guarded(send_to_farm, group)


def on_reload(group: Any) -> Any:
    return _guarded(reload_matte, group)


def on_train(group: Any) -> Any:
    from .train_node import train_on_keyframes  # the training glue uses this module's plan, precomp and dialog

    return _guarded(train_on_keyframes, group)
