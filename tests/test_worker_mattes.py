"""Garbage, core and hold-out mattes on the farm (issue 13): confined like the plate, placed like it, rendered.

The matte fields are plate-kind paths of the Job, so the worker's rules for the plate apply to them: a matte
outside the allowed input roots (by ``..``, an absolute path, a symlinked folder or a symlinked frame) is
refused naming its field, a relative one starts where the plate's does, and a ticket with mattes renders
through the worker with the mattes applied.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from render_worker.config import build_config
from render_worker.ticket import load_ticket
from render_worker.worker import Worker
from rvm_vfx.errors import InputError

from .test_worker_helpers import drop_ticket, jobs_in, make_models_dir, make_plate, torch_threads

W, H = 64, 48
MATTES = ("garbage", "core", "holdout")


def write_matte(folder: Path, name: str, values: np.ndarray, frames: range = range(1001, 1004)) -> str:
    """A single-channel 8-bit PNG sequence (values 0 or 1, so they read back exactly)."""
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        buf = oiio.ImageBuf(oiio.ImageSpec(W, H, 1, oiio.UINT8))
        buf.set_pixels(oiio.ROI(0, W, 0, H, 0, 1, 0, 1), values[..., None].astype(np.float32))
        assert buf.write(str(folder / f"{name}.{frame}.png")), buf.geterror()
    return str(folder / f"{name}.####.png")


LEFT = np.zeros((H, W), np.float32)
LEFT[:, : W // 4] = 1.0
BOTTOM_RIGHT = np.zeros((H, W), np.float32)
BOTTOM_RIGHT[H * 2 // 3 :, W * 3 // 4 :] = 1.0


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("matte_farm")
    plates, outside = base / "plates", base / "outside"
    make_plate(plates / "shot", 3, W, H)
    write_matte(plates / "shot" / "mattes", "garbage", LEFT)
    write_matte(plates / "shot" / "mattes", "core", BOTTOM_RIGHT)
    write_matte(outside / "secret", "garbage", LEFT)
    (plates / "linked").symlink_to(outside / "secret")
    write_matte(plates / "mixed", "garbage", LEFT, range(1001, 1003))
    (plates / "mixed" / "garbage.1003.png").symlink_to(outside / "secret" / "garbage.1003.png")
    return {
        "base": base,
        "plates": plates,
        "outside": outside,
        "out": base / "out",
        "models": make_models_dir(base / "models"),
    }


def _config(farm: dict[str, Path]):
    return build_config(
        {
            "root": farm["base"] / "root",
            "output_root": farm["out"],
            "allow_input_roots": [farm["plates"]],
            "models_dir": farm["models"],
            "default_checkpoint": "rvm",
            "settle": 0.5,
        }
    )


def _load(farm: dict[str, Path], ticket: dict):
    job_dir = farm["base"] / "root" / "active" / f"t-{time.monotonic_ns()}"
    job_dir.mkdir(parents=True)
    (job_dir / "ticket.json").write_text(json.dumps(ticket))
    return load_ticket(job_dir, _config(farm))


GOOD = {"input": "shot/plate.####.png", "output": "shot/m.####.exr"}


@pytest.mark.parametrize("kind", MATTES)
@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("../outside/secret/garbage.####.png", "resolves outside the allowed input roots"),
        ("{outside}/secret/garbage.####.png", "resolves outside the allowed input roots"),
        ("linked/garbage.####.png", "resolves outside the allowed input roots"),
    ],
)
def test_a_matte_outside_the_input_roots_is_refused_naming_its_field(farm, kind, where, reason):
    value = where.format(outside=farm["outside"])
    with pytest.raises(InputError) as caught:
        _load(farm, {**GOOD, f"{kind}_matte": value})
    assert str(caught.value) == f"ticket field '{kind}_matte': {value!r} {reason}"


def test_a_matte_frame_that_is_a_symlink_out_of_the_roots_is_refused_naming_it(farm):
    """The plate's frames are each checked; a matte's must be too, or a link in a plain folder reads anything."""
    with pytest.raises(InputError) as caught:
        _load(farm, {**GOOD, "garbage_matte": "mixed/garbage.####.png"})
    frame = (farm["plates"] / "mixed").resolve() / "garbage.1003.png"
    assert str(caught.value) == (
        f"ticket field 'garbage_matte': matte frame {frame} resolves outside the allowed input roots"
    )


def test_relative_mattes_are_placed_like_the_plate(farm):
    ticket = _load(farm, {**GOOD, "garbage_matte": "shot/mattes/garbage.####.png", "core_channel": "R",
                          "core_matte": "shot/mattes/core.####.png", "invert_core": True})  # fmt: skip
    shot = farm["plates"].resolve() / "shot"
    assert ticket.job.input == str(shot / "plate.####.png")
    assert ticket.job.garbage_matte == str(shot / "mattes" / "garbage.####.png")
    assert (ticket.job.core_matte, ticket.job.core_channel, ticket.job.invert_core) == (
        str(shot / "mattes" / "core.####.png"),
        "R",
        True,
    )
    assert ticket.job.holdout_matte is None and ticket.frames == [1001, 1002, 1003]


def test_a_ticket_with_mattes_renders_through_the_worker(farm):
    worker = Worker(_config(farm))
    worker.layout.ensure()
    root = farm["base"] / "root"
    ticket = {**GOOD, "output": "mattes/m.####.exr", "device": "cpu", "garbage_matte": "shot/mattes/garbage.####.png",
              "core_matte": "shot/mattes/core.####.png"}  # fmt: skip
    drop_ticket(root, "mattes", ticket)
    with torch_threads(1):
        assert worker.step()
    [job] = jobs_in(root, "done", "mattes-")
    assert json.loads((job / "status.json").read_text())["state"] == "done"
    for frame in (1001, 1002, 1003):
        buf = oiio.ImageBuf(str(farm["out"] / "mattes" / f"m.{frame}.exr"))
        assert not buf.has_error, buf.geterror()
        assert buf.spec().channelnames == ("R", "G", "B", "A")
        pixels = buf.get_pixels(oiio.FLOAT)
        alpha = pixels[..., 3]
        garbage, core = LEFT == 1.0, BOTTOM_RIGHT == 1.0
        assert np.all(alpha[garbage] == 0.0) and np.all(pixels[..., :3][garbage] == 0.0)  # garbage: nothing
        assert np.all(alpha[core] == 1.0)  # core: solid
        assert 0.0 < alpha[~garbage & ~core].mean() < 1.0  # the network's matte elsewhere
        assert buf.spec().getattribute("rvm:garbage_matte") == str(
            (farm["plates"] / "shot" / "mattes").resolve() / f"garbage.{frame}.png"
        )
