"""The RVM Matte node in Nuke: a Group with knobs, its buttons, a progress dialog, and the Read it shows.

This is the only module that talks to Nuke, and it only reads knobs, calls ``jobs``/``engine`` and sets
knobs back: every decision is made in those host-free modules, where it is tested. The node is a plain
Group holding an Input, a Read of the rendered matte, a Switch and an Output, so a script that uses it
opens and renders on any Nuke, with or without this plugin installed (it then simply reads the EXRs).
"""

from __future__ import annotations

import json
import os
import threading
import traceback
from dataclasses import dataclass
from typing import Any

import nuke

from . import engine, jobs

NODE_NAME = "RVMMatte1"
TAB_NAME = "rvm_matte"
STATE_KNOB = "rvm_state"
INPUT_NAME = "Input"
READ_NAME = "MatteRead"
SWITCH_NAME = "ShowMatte"
OUTPUT_NAME = "Output"
PRECOMP_NAME = "PrecompWrite"

# Renders in flight, by node: a second click on "Render matte" must not start a second engine.
_RUNNING: dict[str, threading.Thread] = {}

_BUTTON_SCRIPTS = {
    "render": "import rvm_nuke.node\nrvm_nuke.node.on_render(nuke.thisNode())",
    "send_to_farm": "import rvm_nuke.node\nrvm_nuke.node.on_send_to_farm(nuke.thisNode())",
    "reload": "import rvm_nuke.node\nrvm_nuke.node.on_reload(nuke.thisNode())",
}
_KNOB_CHANGED = "import rvm_nuke.node\nrvm_nuke.node.knob_changed(nuke.thisNode(), nuke.thisKnob())"


# ------------------------------------------------------------------------------------------ creation


def create_node() -> Any:
    """The toolbar command: a new RVM Matte node, connected to the selected node as Nuke does."""
    group = nuke.createNode("Group", inpanel=False)
    group.setName(NODE_NAME, uncollide=True)
    add_knobs(group)
    build_internals(group)
    update_enabled(group)
    group.showControlPanel()
    return group


def add_knobs(group: Any) -> None:
    group.addKnob(nuke.Tab_Knob(TAB_NAME, "RVM Matte"))
    for spec in jobs.KNOBS:
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
        elif spec.kind == "button":
            if spec.name == "render":
                group.addKnob(nuke.Divider_Knob(""))
            knob = nuke.PyScript_Knob(spec.name, spec.label, _BUTTON_SCRIPTS[spec.name])
        elif spec.kind == "text":
            knob = nuke.Text_Knob(spec.name, spec.label, "")
        else:  # pragma: no cover - the table is fixed
            raise ValueError(spec.kind)
        if spec.kind in jobs.VALUE_KINDS:
            knob.setValue(spec.default)
        if spec.name in ("downsample_auto", "render"):
            knob.setFlag(nuke.STARTLINE)
        if spec.tooltip:
            knob.setTooltip(spec.tooltip)
        group.addKnob(knob)
    state = nuke.String_Knob(STATE_KNOB, "state")
    state.setFlag(nuke.INVISIBLE)
    group.addKnob(state)
    group.knob("knobChanged").setValue(_KNOB_CHANGED)


def build_internals(group: Any) -> None:
    """Input -> Switch(0); matte Read -> Switch(1) -> Output. Until a matte exists the node passes through."""
    with group:
        source = nuke.nodes.Input(name=INPUT_NAME)
        read = nuke.nodes.Read(name=READ_NAME)
        switch = nuke.nodes.Switch(name=SWITCH_NAME)
        switch.setInput(0, source)
        switch.setInput(1, read)
        switch["which"].setValue(0)
        output = nuke.nodes.Output(name=OUTPUT_NAME)
        output.setInput(0, switch)


def knob_changed(group: Any, knob: Any) -> None:
    if knob is not None and knob.name() in ("downsample_auto", "checkpoint", "showPanel"):
        update_enabled(group)


def update_enabled(group: Any) -> None:
    """Grey out what does not apply: the ratio under auto, the encoder when a checkpoint names its own."""
    group["downsample"].setEnabled(not group["downsample_auto"].value())
    group["encoder"].setEnabled(not str(group["checkpoint"].value()).strip())


# ------------------------------------------------------------------------------------ preferences


def install_preferences() -> None:
    """Add Preferences > RVM (engine Python, farm watch folder); Nuke saves them with its preferences."""
    prefs = nuke.toNode("preferences")
    if prefs is None or prefs.knob(jobs.PREF_ENGINE_PYTHON) is not None:
        return
    prefs.addKnob(nuke.Tab_Knob("rvm_preferences", "RVM"))
    python = nuke.File_Knob(jobs.PREF_ENGINE_PYTHON, "engine Python")
    python.setTooltip(
        "The python executable of the environment where rvm-vfx and torch are installed "
        "(e.g. /opt/rvm-vfx/.venv/bin/python). torch never runs inside Nuke."
    )
    prefs.addKnob(python)
    folder = nuke.File_Knob(jobs.PREF_WATCH_FOLDER, "farm watch folder")
    folder.setTooltip(f"The render worker's watch folder. Empty: ${jobs.WATCH_FOLDER_ENV}.")
    prefs.addKnob(folder)


def preference(name: str) -> str:
    prefs = nuke.toNode("preferences")
    knob = prefs.knob(name) if prefs is not None else None
    return str(knob.value()).strip() if knob is not None else ""


# ------------------------------------------------------------------------------------------ reading


def read_settings(group: Any) -> dict[str, Any]:
    raw = {}
    for spec in jobs.KNOBS:
        knob = group.knob(spec.name) if spec.kind in jobs.VALUE_KINDS else None
        if knob is not None:
            raw[spec.name] = knob.value()
    return jobs.normalise_settings(raw)


def _knob(node: Any, name: str, default: Any = None) -> Any:
    knob = node.knob(name)
    return knob.value() if knob is not None else default


def _evaluated(node: Any, name: str) -> str:
    """A path knob after TCL and environment expansion, as Nuke itself would use it."""
    knob = node.knob(name)
    if knob is None:
        return ""
    try:
        return str(knob.getEvaluatedValue() or "")
    except (AttributeError, RuntimeError, ValueError):
        return str(knob.value() or "")


def script_path() -> str:
    return str(_knob(nuke.root(), "name", "") or "")


def root_colour_knobs() -> dict[str, str]:
    root = nuke.root()
    return {
        "colorManagement": str(_knob(root, "colorManagement", "") or ""),
        "OCIO_config": str(_knob(root, "OCIO_config", "") or ""),
        "customOCIOConfigPath": _evaluated(root, "customOCIOConfigPath"),
    }


def nuke_dir() -> str | None:
    exe = getattr(nuke, "EXE_PATH", "")
    return os.path.dirname(exe) if exe else None


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
    engine_ocio: str | None = None


def make_plan(group: Any, *, farm: bool = False, name: str | None = None) -> Plan:
    settings = read_settings(group)
    script = script_path()
    node_name = group.name()
    root = root_colour_knobs()
    management = root["colorManagement"] or "OCIO"
    config = jobs.resolve_ocio_config(root, os.environ, nuke_dir())
    names = jobs.load_colour_names(config)

    upstream = group.input(0)
    if upstream is None:
        raise jobs.PluginError(f"Connect the plate to the input of {node_name}.")
    node = jobs.find_source(upstream, lambda n: n.Class(), lambda n: n.input(0), _disabled)
    knobs = {k: _knob(node, k) for k in ("disable", "file", "frame", "first", "last", "origfirst", "colorspace")}
    problem = jobs.plain_read_problem(node.Class(), knobs)
    if problem is None:
        knobs["file"] = _read_filename(node)
        source = jobs.read_source(knobs, names, script, management, settings["input_colorspace"])
    else:
        output = jobs.output_pattern(settings["output"], script, node_name)
        source = jobs.precomp_source(
            output, node_name, int(upstream.firstFrame()), int(upstream.lastFrame()), names, management
        )
        source.reason = problem

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
    )
    return Plan(
        job=job, source=source, read_colorspace=jobs.scene_linear_name(names, management), engine_ocio=engine_ocio
    )


def confirm_overwrite(job: dict[str, Any]) -> bool:
    """Ask before replacing frames; the engine itself never overwrites without being told to."""
    existing = jobs.existing_outputs(job["output"], jobs.expand_frames(job["frames"]))
    if existing and not nuke.ask(
        f"{len(existing)} frame(s) of\n{job['output']}\nexist already (first: {existing[0]}). Replace them?"
    ):
        return False
    job["overwrite"] = bool(existing)
    return True


def render_precomp(group: Any, plan: Plan) -> None:
    """Render whatever is upstream to the scene-linear EXR sequence the engine will read."""
    first, last = jobs.frame_bounds(plan.job["frames"])
    os.makedirs(os.path.dirname(plan.source.input), exist_ok=True)
    with group:
        write = nuke.nodes.Write(name=PRECOMP_NAME)
        write.setInput(0, group.node(INPUT_NAME))
        for name, value in jobs.precomp_write_knobs(plan.source):
            if write.knob(name) is not None:
                write[name].setValue(value)
    try:
        nuke.execute(write, first, last)
    except RuntimeError as exc:
        raise jobs.PluginError(f"The precomp of the input ({plan.source.reason}) did not finish: {exc}") from None
    finally:
        nuke.delete(write)


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

    def __init__(self, title: str) -> None:
        self.task = nuke.ProgressTask(title)
        self.task.setMessage("starting the engine")

    def on_event(self, event: dict[str, Any]) -> None:
        percent = engine.progress_percent(event)
        if percent is not None:
            self.task.setProgress(percent)
        self.task.setMessage(engine.progress_text(event))

    def is_cancelled(self) -> bool:
        return bool(self.task.isCancelled())

    def close(self) -> None:
        self.task = None


def render_matte(group: Any, background: bool = True) -> Any:
    """Render the matte here: precomp if needed, run the engine, then show the frames.

    With ``background`` the engine is followed from a thread (Nuke stays responsive, its progress dialog
    can cancel) and the thread is returned; the result is applied on Nuke's main thread.
    """
    key = group.fullName()
    if key in _RUNNING:
        raise jobs.PluginError(f"{group.name()} is already rendering; cancel it in the progress dialog first.")
    settings = read_settings(group)
    plan = make_plan(group)
    if not confirm_overwrite(plan.job):
        return None
    launcher = engine.engine_launcher(
        jobs.engine_python(settings["engine_python"], preference(jobs.PREF_ENGINE_PYTHON))
    )
    if plan.source.precomp:
        set_status(group, f"precomp: {plan.source.reason}")
        render_precomp(group, plan)
    output_dir = os.path.dirname(plan.job["output"])
    os.makedirs(output_dir, exist_ok=True)
    job_path = jobs.write_json_atomic(jobs.job_file_path(plan.job["output"], group.name()), plan.job)
    command = engine.render_command(launcher, job_path)
    env = engine.engine_environment(os.environ, plan.engine_ocio)
    set_status(group, f"rendering {plan.job['frames']}")
    title = f"RVM Matte: {group.name()}"

    def work() -> engine.EngineResult:
        progress = None
        try:
            progress = _Progress(title)
            return engine.run_engine(
                command,
                on_event=progress.on_event,
                is_cancelled=progress.is_cancelled,
                env=env,
                output_dirs=[output_dir],
            )
        except Exception as exc:  # noqa: BLE001 - reported as a message on the main thread
            traceback.print_exc()
            return engine.EngineResult(status="error", message=f"could not follow the engine: {exc}")
        finally:
            if progress is not None:
                progress.close()

    if not background:
        _RUNNING[key] = threading.current_thread()
        result = work()
        finish_render(group, key, plan, result)
        return result

    def run() -> None:
        result = work()
        nuke.executeInMainThread(finish_render, args=(group, key, plan, result))

    thread = threading.Thread(target=run, name=f"rvm-matte-{group.name()}", daemon=True)
    _RUNNING[key] = thread
    thread.start()
    return thread


def finish_render(group: Any, key: str, plan: Plan, result: engine.EngineResult) -> None:
    """Main thread: show the matte, or say why there is none."""
    _RUNNING.pop(key, None)
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


def send_to_farm(group: Any) -> str | None:
    """Write a farm ticket for this node and point its Read at where the frames will land."""
    folder = jobs.watch_folder(preference(jobs.PREF_WATCH_FOLDER))
    job_id = jobs.make_job_id(group.name())
    plan = make_plan(group, farm=True, name=job_id)
    if not confirm_overwrite(plan.job):
        return None
    if plan.source.precomp:
        set_status(group, f"precomp: {plan.source.reason}")
        render_precomp(group, plan)
    os.makedirs(os.path.dirname(plan.job["output"]), exist_ok=True)
    ticket = jobs.write_ticket(plan.job, folder, job_id)
    show_matte(group, plan, farm=True, extra={"last": "farm", "job_id": job_id, "ticket": ticket})
    set_status(group, f"on the farm as {job_id}")
    nuke.message(
        f"Sent to the farm as job {job_id}.\n\nTicket: {ticket}\n"
        f"Frames land in {os.path.dirname(plan.job['output'])}; press Reload to see them."
    )
    return job_id


# ------------------------------------------------------------------------------------------ reload


def reload_matte(group: Any) -> int:
    """Re-read the matte frames (those the farm has delivered so far); returns how many are on disk."""
    state = json.loads(str(_knob(group, STATE_KNOB, "") or "{}"))
    if not state.get("read"):
        raise jobs.PluginError("Nothing to reload yet: render the matte or send it to the farm first.")
    apply_read_knobs(group, [tuple(pair) for pair in state["read"]])
    frames = jobs.expand_frames(state["frames"])
    landed = len(jobs.existing_outputs(state["output"], frames))
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
