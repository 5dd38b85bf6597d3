"""The "RVM Matte" operator: build a Job from the scene, run the engine, load and wire the result.

The work is a :class:`MatteRun` (prepare, start, pump, finish) that both entry points share: the modal
path pumps it from a timer so the UI stays live, with a progress bar and Esc to cancel; ``execute()``
(scripts, ``blender -b``, tests) runs the very same steps synchronously.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import bpy

from . import compositor, jobspec
from .engine import CANCEL_GRACE_S, EngineError, EngineProcess, check_engine_python
from .vendor.rvm_spec import format_frame

_MAX_WARNINGS = 5
# Only one engine at a time: two would fight over the GPU and the same output folder.
_active: EngineRun | None = None


class RunError(Exception):
    """A problem to report to the artist instead of raising into Blender's console as a traceback."""


def addon_preferences(context: bpy.types.Context) -> Any:
    addon = context.preferences.addons.get(__package__)
    if addon is None:
        raise RunError("the RVM Matte add-on is not enabled")
    return addon.preferences


def _abspath(path: str, library: Any = None) -> str:
    return os.path.normpath(bpy.path.abspath(path, library=library))


def _working_space() -> str:
    colorspace = getattr(bpy.data, "colorspace", None)  # Blender 5: the blend file's working space
    return getattr(colorspace, "working_space", None) or jobspec.BLENDER_LINEAR_REC709


def _plate_node(context: bpy.types.Context, tree: Any, settings: Any) -> Any:
    """The Image node holding the plate: the chosen one, or one made for a file path."""
    if settings.source == "FILE":
        return _node_for_file(context.scene, tree, settings.file_path)
    node = tree.nodes.get(settings.image_node) if settings.image_node else tree.nodes.active
    if node is None:
        what = f"no node named {settings.image_node!r}" if settings.image_node else "no active node"
        raise RunError(f"{what} in the compositor: choose the plate's Image node in the RVM panel")
    if node.bl_idname != "CompositorNodeImage":
        raise RunError(f"node {node.name!r} is not an Image node: choose the plate's Image node")
    if node.image is None:
        raise RunError(f"Image node {node.name!r} has no image: open the plate sequence or movie in it")
    return node


def _node_for_file(scene: Any, tree: Any, file_path: str) -> Any:
    """The Image node of the plate at ``file_path`` (any frame of a sequence, or a movie), added if missing."""
    if not file_path:
        raise RunError("no plate file chosen: pick any frame of a sequence, or a movie")
    path = _abspath(file_path)
    if not os.path.isfile(path):
        raise RunError(f"plate file not found: {path}")
    try:
        plate = jobspec.file_plate(path)
        frames = jobspec.frames_on_disk(plate.input) if plate.kind == jobspec.SEQUENCE else []
    except jobspec.JobSpecError as exc:
        raise RunError(str(exc)) from None
    # Found by the plate it shows, not by the frame picked: any frame of a sequence finds the same node.
    for node in tree.nodes:
        if node.bl_idname == "CompositorNodeImage" and node.image is not None and _image_plate(node.image) == plate:
            return node
    image = next((im for im in bpy.data.images if _image_plate(im) == plate), None)
    if image is None:
        image = bpy.data.images.load(path)
        image.source = "MOVIE" if plate.kind == jobspec.MOVIE else "SEQUENCE"
    node = compositor.add_plate_node(tree, image)
    node.frame_start = scene.frame_start
    if plate.kind == jobspec.MOVIE:
        node.frame_duration = image.frame_duration
        node.frame_offset = 0
    else:
        node.frame_duration = frames[-1] - frames[0] + 1
        node.frame_offset = frames[0] - 1
    return node


def _image_plate(image: Any) -> jobspec.Plate | None:
    """The plate an Image datablock holds, or None for a still, a generated image or an unnumbered file."""
    if image.source not in ("SEQUENCE", "MOVIE") or not image.filepath:
        return None
    try:
        return jobspec.plate_for(_abspath(image.filepath, image.library), image.source, image.name)
    except jobspec.JobSpecError:
        return None


def planned_plate(context: bpy.types.Context) -> jobspec.Plate | None:
    """The plate the operator would matte now, found without adding or loading anything (for the panel)."""
    settings = context.scene.rvm_matte
    if settings.source == "FILE":
        if not settings.file_path:
            return None
        path = _abspath(settings.file_path)
        try:
            return jobspec.file_plate(path)
        except jobspec.JobSpecError:
            return None
    tree = compositor.compositor_tree(context.scene, create=False)
    if tree is None:
        return None
    node = tree.nodes.get(settings.image_node) if settings.image_node else tree.nodes.active
    if node is None or node.bl_idname != "CompositorNodeImage" or node.image is None:
        return None
    return _image_plate(node.image)


def engine_python(context: bpy.types.Context) -> str:
    """The engine's interpreter from the add-on's preferences, checked before anything else is looked at."""
    try:
        return check_engine_python(addon_preferences(context).engine_python)
    except EngineError as exc:
        raise RunError(str(exc)) from None


class EngineRun:
    """One engine run for one plate, whatever the host editor: the job, the process, progress and cancel.

    A subclass finds the plate and its frames in its editor and wires the result back into it
    (``_wire``); everything between (the job file, the engine subprocess, the status line, Esc, the
    reports) is the same for the compositor and the Video Sequencer.
    """

    def __init__(
        self,
        context: bpy.types.Context,
        *,
        python: str,
        plate: jobspec.Plate,
        frames: list[int],
        image_colorspace: str,
        source_name: str,
        metadata: dict[str, str],
        mattes: tuple[jobspec.Matte, ...] = (),
    ) -> None:
        scene = context.scene
        settings = scene.rvm_matte
        prefs = addon_preferences(context)
        self.scene_name = scene.name
        try:
            studio_config = bool(os.environ.get("OCIO"))
            input_space = settings.input_colorspace.strip() or jobspec.engine_colorspace(
                image_colorspace, working_space=_working_space(), studio_config=studio_config
            )
            # A studio config is shared with the engine: its scene_linear role is what Blender loads EXRs as.
            self.matte_colorspace = None if studio_config else jobspec.BLENDER_LINEAR_REC709
            output_dir = settings.output_dir
            if output_dir.startswith("//") and not bpy.data.filepath:
                raise RunError("save the blend file first: the matte is written next to it (or set an absolute folder)")
            self.plate = plate
            self.output = plate.output_pattern(_abspath(output_dir))
            # Overwrite only ever replaces this plate's own earlier matte.
            jobspec.check_output_owner(os.path.dirname(self.output), plate)
            self.job = jobspec.build_job(
                input=plate.input,
                output=self.output,
                frames=frames,
                input_colorspace=input_space,
                output_colorspace=None if studio_config else jobspec.ENGINE_LINEAR_REC709,
                checkpoint=self._checkpoint(settings, prefs),
                downsample="auto" if settings.downsample_auto else round(settings.downsample, 6),
                device=prefs.device if settings.device == "PREFS" else settings.device,
                precision=settings.precision,
                preroll=settings.preroll,
                warmup=settings.warmup,
                passes=settings.passes,
                mattes=mattes,
                overwrite=settings.overwrite,
                name=f"{os.path.basename(bpy.data.filepath) or 'untitled'}: {plate.stem}",
                metadata={"rvm:host": f"Blender {bpy.app.version_string}", **metadata},
            )
        except jobspec.JobSpecError as exc:
            raise RunError(str(exc)) from None
        self.source_name = source_name
        self.frames = sorted(frames)
        self.first_frame = self.frames[0]
        self.job_path = os.path.join(os.path.dirname(self.output), f"{plate.stem}_rvm.job.json")
        self.engine = EngineProcess(python, self.job_path)
        self.cancelled_at: float | None = None

    @staticmethod
    def _checkpoint(settings: Any, prefs: Any) -> str | None:
        preference = prefs.checkpoint_resnet50 if settings.encoder == "resnet50" else prefs.checkpoint_mobilenetv3
        chosen = jobspec.checkpoint_for(
            settings.encoder,
            _abspath(settings.checkpoint) if settings.checkpoint else "",
            _abspath(preference) if preference else "",
            os.environ,
        )
        return chosen

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        folder = os.path.dirname(self.output)
        try:
            # The owner record first: a folder this run wrote to is always known to be this plate's.
            jobspec.write_output_owner(folder, self.plate)
            with open(self.job_path, "w", encoding="utf-8") as handle:
                json.dump(self.job.to_dict(), handle, indent=2, sort_keys=True)
        except OSError as exc:
            raise RunError(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from None
        try:
            self.engine.start()
        except EngineError as exc:
            raise RunError(str(exc)) from None

    def pump(self, timeout: float = 0.0) -> int | None:
        """Apply whatever the engine said since last time; its exit code once it has exited."""
        self.engine.events(timeout=timeout)
        if self.cancelled_at is not None and time.monotonic() - self.cancelled_at > CANCEL_GRACE_S:
            self.engine.kill()
        return self.engine.poll()

    def cancel(self) -> None:
        if self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
            self.engine.cancel()

    @property
    def status_line(self) -> str:
        if self.cancelled_at is not None:
            return "RVM Matte: stopping after the current frame…"
        return self.engine.state.status_line()

    def finish(self, context: bpy.types.Context, code: int, report: Any) -> set[str]:
        """Report how the run ended; on success load the matte and wire the compositor."""
        state = self.engine.state
        if self.cancelled_at is not None or state.stopped:
            report(
                {"WARNING"},
                f"RVM Matte cancelled: {state.done} of {state.total} frames were written to "
                f"{os.path.dirname(self.output)}",
            )
            return {"CANCELLED"}
        failure = self.engine.failure(code)
        if failure is not None:
            report({"ERROR"}, f"RVM Matte failed: {failure}")
            return {"CANCELLED"}
        for message in state.warnings[:_MAX_WARNINGS]:
            report({"WARNING"}, f"RVM Matte: {message}")
        try:
            mix = self._wire(context)
        except RunError as exc:
            report({"ERROR"}, f"RVM Matte: {exc}")
            return {"CANCELLED"}
        report({"INFO"}, f"RVM Matte: {state.done} frames in {os.path.dirname(self.output)} → {mix.name}")
        return {"FINISHED"}

    def _wire(self, context: bpy.types.Context) -> Any:
        """Put the finished matte into the host editor; returns what now shows it (its name is reported)."""
        raise NotImplementedError

    def matte_frame(self, frame: int) -> str:
        """The matte file of one plate frame, refused when the engine said it finished but the file is missing."""
        path = format_frame(self.output, frame)
        if not os.path.isfile(path):
            raise RunError(f"the engine reported success but {path} is missing")
        return path


class MatteRun(EngineRun):
    """A compositor matte: the plate of an Image node, the frames the scene range shows through it."""

    def __init__(self, context: bpy.types.Context) -> None:
        scene = context.scene
        settings = scene.rvm_matte
        python = engine_python(context)
        tree = compositor.compositor_tree(scene)
        node = _plate_node(context, tree, settings)
        image = node.image
        self.plate_node_name = node.name
        self.plate_id = compositor.plate_id(tree, node)
        self.mode = settings.composite
        self.background = tuple(settings.background)
        try:
            plate = jobspec.plate_for(_abspath(image.filepath, image.library), image.source, image.name)
            frames = jobspec.file_frames(
                scene.frame_start,
                scene.frame_end,
                start=node.frame_start,
                offset=node.frame_offset,
                duration=max(node.frame_duration, 1),
                cyclic=node.use_cyclic,
            )
            if plate.kind == jobspec.SEQUENCE:
                jobspec.check_frames_on_disk(
                    frames,
                    jobspec.frames_on_disk(plate.input),
                    node_name=node.name,
                    start=node.frame_start,
                    offset=node.frame_offset,
                    duration=node.frame_duration,
                )
            mattes = _mattes(tree, scene, node)
        except jobspec.JobSpecError as exc:
            raise RunError(str(exc)) from None
        super().__init__(
            context,
            python=python,
            plate=plate,
            frames=frames,
            image_colorspace=image.colorspace_settings.name,
            source_name=node.name,
            metadata={"rvm:plate_node": node.name},
            mattes=mattes,
        )

    def _wire(self, context: bpy.types.Context) -> Any:
        scene = bpy.data.scenes.get(self.scene_name) or context.scene
        tree = compositor.compositor_tree(scene)
        node = compositor.find_plate_node(tree, self.plate_id, self.plate_node_name)
        if node is None:
            raise RunError(f"the plate node {self.plate_node_name!r} was removed while the matte rendered")
        first = self.matte_frame(self.first_frame)
        image = self._load_sequence(first)
        return compositor.wire_matte(tree, node, image, mode=self.mode, background=self.background)

    def _load_sequence(self, first: str) -> Any:
        stored = bpy.path.relpath(first) if bpy.data.filepath else first
        image = next((im for im in bpy.data.images if _abspath(im.filepath, im.library) == first), None)
        if image is None:
            image = bpy.data.images.load(first)
            image.name = f"{os.path.basename(os.path.dirname(first))} RVM"  # the folder: one per plate
        image.filepath = stored
        image.source = "SEQUENCE"
        image.alpha_mode = "PREMUL"
        if self.matte_colorspace:
            image.colorspace_settings.name = self.matte_colorspace
        image.reload()  # a rerun replaced the frames on disk: drop Blender's cached copies
        return image


def _frame_mapping(node: Any) -> dict[str, Any]:
    return {
        "start": node.frame_start,
        "offset": node.frame_offset,
        "duration": max(node.frame_duration, 1),
        "cyclic": node.use_cyclic,
    }


def _mattes(tree: Any, scene: Any, plate_node: Any) -> tuple[jobspec.Matte, ...]:
    """The garbage, core and hold-out mattes the settings name: Image nodes read as they are, like the plate.

    Each must show, at every scene frame, the frame number the plate's node shows there (the engine reads a
    matte at the plate's numbers), and for a sequence those frames must be on disk.
    """
    settings = scene.rvm_matte
    mattes = []
    for name in jobspec.MATTES:
        node_name = getattr(settings, f"{name}_node").strip()
        if not node_name:
            continue
        node = tree.nodes.get(node_name)
        what = f"the {name.title()} matte's node {node_name!r}"
        if node is None:
            raise jobspec.JobSpecError(f"{what} is not in the compositor: choose an Image node, or clear the setting")
        if node.bl_idname != "CompositorNodeImage" or node.image is None:
            raise jobspec.JobSpecError(f"{what} is not an Image node with an image: open the matte sequence in one")
        image = node.image
        matte = jobspec.plate_for(_abspath(image.filepath, image.library), image.source, image.name)
        mapping, plate_mapping = _frame_mapping(node), _frame_mapping(plate_node)
        jobspec.check_matte_mapping(
            scene.frame_start,
            scene.frame_end,
            matte_node=node.name,
            plate_node=plate_node.name,
            matte=mapping,
            plate=plate_mapping,
        )
        if matte.kind == jobspec.SEQUENCE:
            jobspec.check_frames_on_disk(
                jobspec.file_frames(scene.frame_start, scene.frame_end, **mapping),
                jobspec.frames_on_disk(matte.input),
                node_name=node.name,
                start=node.frame_start,
                offset=node.frame_offset,
                duration=node.frame_duration,
            )
        channel = getattr(settings, f"{name}_channel").strip() or None
        mattes.append(jobspec.Matte(name, matte.input, channel, bool(getattr(settings, f"invert_{name}"))))
    return tuple(mattes)


def _set_status(context: bpy.types.Context, text: str | None) -> None:
    workspace = getattr(context, "workspace", None)
    if workspace is not None:
        workspace.status_text_set(text)


class EngineOperator:
    """The running of :class:`EngineRun` s as a Blender operator, shared by the compositor and the sequencer.

    ``make_runs`` builds every run first, so that a bad one refuses the whole operator before any engine
    starts; the runs then go one after another. ``execute()`` (scripts, ``blender -b``) waits for each;
    ``invoke()`` pumps them from a timer with a progress bar, the status line ("strip 2 of 3") and Esc,
    which stops the current engine and drops the rest (what already finished stays wired).
    """

    #: What one run mattes, for the status line when there are several ("strip 2 of 3").
    run_noun = "plate"
    _timer: Any = None
    _run: EngineRun | None = None
    _queue: list[EngineRun] = []
    _count = _started = 0

    def make_run(self, context: bpy.types.Context) -> EngineRun:
        raise NotImplementedError

    def make_runs(self, context: bpy.types.Context) -> list[EngineRun]:
        return [self.make_run(context)]

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and _active is None

    def _prepare(self, context: bpy.types.Context) -> bool:
        """Build (and so validate) every run; report and refuse the operator when any one is refused."""
        try:
            runs = self.make_runs(context)
        except RunError as exc:
            self.report({"ERROR"}, f"RVM Matte: {exc}")
            return False
        self._queue, self._count, self._started = list(runs), len(runs), 0
        return True

    def _start_next(self) -> EngineRun | None:
        """Start the next queued run; None when the queue is empty or it could not start (reported)."""
        global _active
        if not self._queue:
            return None
        run = self._queue.pop(0)
        self._started += 1
        try:
            run.start()
        except RunError as exc:
            self._queue = []
            self.report({"ERROR"}, f"RVM Matte: {self._label(run)}{exc}")
            return None
        self._run = _active = run
        return run

    def _label(self, run: EngineRun) -> str:
        if self._count < 2:
            return ""
        return f"{self.run_noun} {self._started} of {self._count} ({run.source_name}): "

    def _finish(self, context: bpy.types.Context, run: EngineRun, code: int) -> set[str]:
        """End one run; a run that did not finish stops the rest (a cancel, a failure)."""
        result = run.finish(context, code, self.report)
        if result != {"FINISHED"}:
            self._queue = []
        return result

    def execute(self, context: bpy.types.Context) -> set[str]:
        global _active
        if not self._prepare(context):
            return {"CANCELLED"}
        result = {"CANCELLED"}
        while self._queue:
            run = self._start_next()
            if run is None:
                return {"CANCELLED"}
            try:
                code = run.engine.wait()
            finally:
                _active = None
            result = self._finish(context, run, code)
        return result

    def invoke(self, context: bpy.types.Context, event: Any) -> set[str]:
        if context.window is None:  # no UI to keep alive (background mode): the synchronous path
            return self.execute(context)
        if not self._prepare(context):
            return {"CANCELLED"}
        run = self._start_next()
        if run is None:
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 1000)
        self._show(context, run)
        return {"RUNNING_MODAL"}

    def _show(self, context: bpy.types.Context, run: EngineRun) -> None:
        fraction = (self._started - 1 + run.engine.state.fraction) / max(self._count, 1)
        context.window_manager.progress_update(int(fraction * 1000))
        _set_status(context, f"{self._label(run)}{run.status_line}")

    def modal(self, context: bpy.types.Context, event: Any) -> set[str]:
        run = self._run
        assert run is not None
        if event.type == "ESC" and event.value == "PRESS":
            self._queue = []  # Esc stops this run and everything after it
            run.cancel()
            self._show(context, run)
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":  # (other operators' timers only make us look a little more often)
            return {"PASS_THROUGH"}
        code = run.pump()
        if code is None:
            self._show(context, run)
            return {"PASS_THROUGH"}
        global _active
        _active = None
        result = self._finish(context, run, code)
        if self._queue:
            following = self._start_next()
            if following is not None:
                self._show(context, following)
                return {"PASS_THROUGH"}
            result = {"CANCELLED"}
        self._end(context)
        return result

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender is closing the operator (file load, quit): never leave an engine running behind it."""
        self._queue = []
        if self._run is not None:
            self._run.engine.kill()
        self._end(context)

    def _end(self, context: bpy.types.Context) -> None:
        global _active
        _active = None
        self._queue = []
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        _set_status(context, None)


class RVM_OT_matte(EngineOperator, bpy.types.Operator):
    """Matte the people in a plate with Robust Video Matting and composite the result"""

    bl_idname = "rvm.matte"
    bl_label = "RVM Matte"
    bl_options = {"REGISTER", "UNDO"}

    def make_run(self, context: bpy.types.Context) -> EngineRun:
        return MatteRun(context)


CLASSES = (RVM_OT_matte,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    global _active
    if _active is not None:
        _active.engine.kill()
        _active = None
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
