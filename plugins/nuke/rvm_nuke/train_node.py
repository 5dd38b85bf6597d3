"""The RVM Matte node's "Train on keyframes" button: write the roto, fine-tune on the shot, render with it.

Nuke glue beside ``node.py`` (it uses that module's plan, precomp, progress dialog and background work,
so a training runs, shows progress, cancels and finishes exactly as a render does); every decision is
made in ``training``, where it is tested without Nuke. In one background run, with one progress dialog:

    precomp (the plate when the engine cannot read it, and the keyframes input's alpha at the keyframes)
    -> rvm-vfx finetune PLATE KEYFRAMES <node>.trained.pth (its steps and loss in the dialog)
    -> rvm-vfx render with the trained checkpoint -> the node shows the matte

Cancel stops whichever stage runs (the engine's training stops cleanly and keeps its best weights, but the
matte is then not rendered).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from . import engine, jobs, node, training
from .vendor.rvm_spec import Event
from .vendor.rvm_spec.progress import DONE, START, TRAIN

TRAINING_STAGE = "training"


def train_settings(group: Any) -> dict[str, Any]:
    """The training knobs (Nuke's Int knobs may hand back floats)."""
    values = {}
    for spec in training.KNOBS:
        knob = group.knob(spec.name) if spec.kind in jobs.VALUE_KINDS else None
        value = spec.default if knob is None else knob.value()
        values[spec.name] = int(value) if spec.kind == "int" else str(value or "").strip()
    return values


def _roto_input(group: Any) -> Any:
    """The Input node inside the group that the keyframes input is, once something is connected to it."""
    number = node._input_number(group, training.KEYFRAMES_INPUT)
    if number is None or group.input(number) is None:
        raise jobs.PluginError(
            f"Connect the roto (any node with the keyframes' matte in alpha, e.g. a Roto) to the "
            f"'{training.KEYFRAMES_INPUT}' input of {group.name()}."
        )
    return group.node(training.KEYFRAMES_INPUT)


def train_on_keyframes(group: Any, background: bool = True) -> Any:
    """Fine-tune on the keyframes' roto, then render with the trained weights (checked before any work)."""
    node._refuse_a_second_run(group)
    plan = node.make_plan(group)
    settings = train_settings(group)
    keyframes = training.keyframe_frames(settings["keyframe_list"], plan.job["frames"])
    roto = _roto_input(group)
    env = engine.engine_environment(os.environ, plan.engine_ocio)
    launcher = engine.engine_launcher(
        jobs.engine_python(plan.settings["engine_python"], node.preference(jobs.PREF_ENGINE_PYTHON))
    )
    engine.check_engine(launcher, env)
    if not node.confirm_overwrite(plan.job):
        return None
    output = plan.job["output"]
    output_dir = os.path.dirname(output)
    os.makedirs(output_dir, exist_ok=True)
    pattern = training.keyframes_pattern(output, group.name())
    checkpoint = training.trained_checkpoint(output, group.name())
    finetune = training.finetune_command(
        launcher, plan.job, training.finetune_settings(plan.job, settings, pattern), checkpoint
    )
    rendered = dataclasses.replace(plan, job=training.trained_job(plan.job, checkpoint))
    job_path = jobs.write_json_atomic(jobs.job_file_path(output, group.name()), rendered.job)
    render = engine.render_command(launcher, job_path)

    plate = node.prepare_precomp(group, plan)
    write = node._precomp_write(
        group, f"{node.PRECOMP_NAME}_keyframes", roto, pattern, training.keyframes_write_knobs(pattern)
    )
    roto_part = node.PrecompPart(write, keyframes, "the keyframes input", "its alpha at the keyframes, for training")
    precomp = node.Precomp([*(plate.parts if plate else []), roto_part])
    node.set_status(group, f"precomp: {precomp.reason}")
    losses: list[float] = []

    def work(progress: Any) -> engine.EngineResult:
        result = node.run_precomp(precomp, progress)
        if not result.ok:
            return result
        node._on_main_thread(node.set_status, group, f"training on keyframes {settings['keyframe_list']}")

        def on_training_event(event: Event) -> None:
            if event.kind == TRAIN and event.loss is not None and event.fields.get("phase", "train") == "train":
                losses.append(event.loss)  # the training's own steps; validation folds count in the bar only
            if event.kind not in (START, DONE):  # a training's start and end count steps, not frames
                progress.on_event(Event(event.kind, {**event.fields, "stage": TRAINING_STAGE}))

        trained = engine.run_engine(
            finetune, on_event=on_training_event, is_cancelled=progress.is_cancelled, env=env,
            output_dirs=[output_dir],
        )  # fmt: skip
        if not trained.ok:
            if trained.status == "cancelled":
                trained.message = f"training stopped after {len(losses)} step(s); nothing was rendered"
            else:
                trained.message = f"training failed: {trained.message}"
            return trained
        node._on_main_thread(node.set_status, group, f"rendering {plan.job['frames']} with the trained weights")
        return engine.run_engine(
            render, on_event=progress.on_event, is_cancelled=progress.is_cancelled, env=env, output_dirs=[output_dir]
        )

    def finish(result: engine.EngineResult) -> None:
        node.delete_precomp(precomp)
        node.finish_render(group, rendered, result)
        if result.ok and node._alive(group) and losses:
            summary = f"trained {len(losses)} step(s), loss {losses[-1]:.4f}, weights {checkpoint}"
            node.set_status(group, f"{summary}; {group['status'].value()}")

    return node.start_work(group, work, finish, background)
