"""The worker's parts in-process: settings, completeness, claims and takeovers, ticket rules, chunks."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from render_worker.chunks import chunk_job, chunk_resources, plan_chunks
from render_worker.claim import Claim, Heartbeat, claim_item, staleness, try_takeover
from render_worker.config import build_config
from render_worker.fsutil import is_temporary_name
from render_worker.intake import Intake
from render_worker.layout import HEARTBEAT, Layout
from render_worker.runner import remove_temporary_frames
from render_worker.status import collect, format_table
from render_worker.ticket import load_ticket
from rvm_vfx.errors import InputError
from rvm_vfx.job import Job

from .plates import write_sequence
from .test_spec_job import ADDED_WITH_DEFAULTS, version_1_ticket
from .test_worker_helpers import make_models_dir, make_plate, plate_frames

# --------------------------------------------------------------------------- settings


def test_toml_settings_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text(
        '[worker]\noutput_root = "out"\nallow_input_roots = ["plates", "/mnt/plates"]\nsettle = 3\n'
        'snapshot_every = 5\nmodels_dir = "models"\ndask_scheduler = "tcp://127.0.0.1:8786"\n'
    )
    config = build_config({"root": tmp_path / "root", "snapshot_every": 7}, str(toml))
    assert config.output_root == tmp_path / "out"  # relative to the TOML file
    assert config.allow_input_roots == [tmp_path / "plates", Path("/mnt/plates")]
    assert config.settle == 3.0 and isinstance(config.settle, float)
    assert config.snapshot_every == 7  # the flag wins
    assert config.dask_scheduler == "tcp://127.0.0.1:8786"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('output_root = "o"\nsetle = 3\n', "unknown setting 'setle'"),
        ('output_root = "o"\nchunk_size = "big"\n', "'chunk_size': expected an integer"),
        ('output_root = "o"\nsettle = 0\n', "'settle': must be > 0"),
        ("output_root = [", "not valid TOML"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    toml = tmp_path / "w.toml"
    toml.write_text(text)
    with pytest.raises(InputError, match=message):
        build_config({"root": tmp_path}, str(toml))


# --------------------------------------------------------------------------- completeness


def test_temporary_names() -> None:
    for name in (".plate.1001.exr.a1b2c3", "shot.json.tmp", "plate.1001.exr.part", "x.crdownload", "notes.txt~"):
        assert is_temporary_name(name), name
    for name in ("plate.1001.exr", "shot.json", ".DS_Store", "job.json"):
        assert not is_temporary_name(name), name


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ticket_is_ready_when_renamed_or_whole(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    clock = _Clock()
    intake = Intake(incoming, settle=5.0, clock=clock)
    partial = incoming / "partial.json"
    partial.write_text('{"input": "a", "outp')  # a writer still busy, in place
    (incoming / ".hidden.json.tmp").write_text("{}")
    assert intake.ready() == []
    partial.write_text('{"input": "a", "output": "b.####.exr"}')
    assert [r.path.name for r in intake.ready()] == ["partial.json"]
    broken = incoming / "broken.json"
    broken.write_text("{not json")
    intake.note_event(str(broken), renamed=True)  # arrived by rename: complete, and will fail to parse
    assert "broken.json" in [r.path.name for r in intake.ready()]


def test_folder_waits_for_settle_and_no_temporary_files(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    shot = incoming / "shot"
    shot.mkdir(parents=True)
    clock = _Clock()
    intake = Intake(incoming, settle=2.0, clock=clock)
    assert intake.ready() == []  # empty folder: nothing to take
    (shot / "plate.1001.png").write_bytes(b"x")
    assert intake.ready() == []
    clock.now += 2.5
    assert [r.path.name for r in intake.ready()] == ["shot"]
    (shot / ".plate.1002.png.Xy12").write_bytes(b"partial")  # rsync-style temporary: not complete
    clock.now += 10
    assert intake.ready() == [] and intake.ready() == []
    os.rename(shot / ".plate.1002.png.Xy12", shot / "plate.1002.png")
    assert intake.ready() == []  # changed just now: settle again
    clock.now += 2.5
    assert [r.path.name for r in intake.ready()] == ["shot"]


def test_priority_orders_ready_items(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    intake = Intake(incoming, settle=1.0)
    for name, priority in (("low", 0), ("high", 50), ("mid", 10)):
        (incoming / f"{name}.json").write_text(json.dumps({"input": "a", "output": "b", "priority": priority}))
    assert [r.path.stem for r in intake.ready()] == ["high", "mid", "low"]


# --------------------------------------------------------------------------- claims


def test_racing_claims_take_each_item_once(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    for i in range(25):
        (layout.incoming / f"t{i:02d}.json").write_text("{}")
    won: list[Claim] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def racer(n: int) -> None:
        start.wait()
        for item in sorted(layout.incoming.iterdir()):
            claim = claim_item(item, layout.active, f"w{n}")
            if claim is not None:
                with lock:
                    won.append(claim)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 25
    assert sorted(os.listdir(layout.active)) == sorted(c.job_id for c in won)  # no empty leftovers
    assert all((c.job_dir / "ticket.json").is_file() for c in won)


def test_takeover_is_exclusive_and_fences_the_old_owner(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    (layout.incoming / "shot.json").write_text("{}")
    claim = claim_item(layout.incoming / "shot.json", layout.active, "a")
    assert claim is not None
    lost = threading.Event()
    beat = Heartbeat(claim, interval=0.05, on_lost=lost.set)
    with beat:
        assert staleness(claim.job_dir, timeout=5) is None
        assert try_takeover(claim.job_dir, "b", timeout=5) is None
        old = time.time() - 60
        os.utime(claim.job_dir / HEARTBEAT, (old, old))
        beat.stop()  # silence it as a hung owner would be
        assert "heartbeat" in (staleness(claim.job_dir, timeout=5) or "")
        winners = [w for w in (try_takeover(claim.job_dir, n, timeout=5) for n in "bcd") if w]
        assert [w.generation for w in winners] == [1]
        assert claim.superseded()
        beat.beat()  # the old owner wakes up and finds the fence
        assert lost.is_set() and beat.lost


def test_released_job_is_taken_at_once(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    (layout.incoming / "shot.json").write_text("{}")
    claim = claim_item(layout.incoming / "shot.json", layout.active, "a")
    assert claim is not None
    with Heartbeat(claim, 10, on_lost=lambda: None) as beat:
        beat.release()
    assert staleness(claim.job_dir, timeout=3600) == "released by its worker"
    taken = try_takeover(claim.job_dir, "b", timeout=3600)
    assert taken is not None and taken.generation == 1


# --------------------------------------------------------------------------- tickets


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("farm")
    plates = base / "plates"
    make_plate(plates / "shot", 3, 48, 32)
    outside = base / "outside"
    make_plate(outside / "secret", 3, 48, 32)
    (plates / "linked").symlink_to(outside / "secret")
    make_plate(plates / "mixed", 2, 48, 32)
    (plates / "mixed" / "plate.1003.png").symlink_to(outside / "secret" / "plate.1003.png")
    (base / "out").mkdir()
    (base / "out" / "escape").symlink_to(outside)
    models = make_models_dir(base / "models")
    (outside / "evil.pth").write_bytes(b"\x80\x02}q\x00.")
    return {"base": base, "plates": plates, "out": base / "out", "models": models, "outside": outside}


def _config(farm: dict[str, Path], **extra: object):
    settings = {
        "root": farm["base"] / "root",
        "output_root": farm["out"],
        "allow_input_roots": [farm["plates"]],
        "models_dir": farm["models"],
        "max_frames": 500,
        **extra,
    }
    return build_config(settings)


def _load(farm: dict[str, Path], ticket: dict | str, **extra: object):
    job_dir = farm["base"] / "root" / "active" / f"t-{time.monotonic_ns()}"
    job_dir.mkdir(parents=True)
    (job_dir / "ticket.json").write_text(ticket if isinstance(ticket, str) else json.dumps(ticket))
    return load_ticket(job_dir, _config(farm, **extra))


GOOD = {"input": "shot/plate.####.png", "output": "shot/m.####.exr", "checkpoint": "rvm"}


def test_good_ticket_resolves_inside_the_roots(farm: dict[str, Path]) -> None:
    ticket = _load(farm, {**GOOD, "checkpoint": "rvm/model.json", "snapshot_every": 0})
    assert ticket.job.input == str(farm["plates"].resolve() / "shot" / "plate.####.png")
    assert ticket.job.output == str(farm["out"].resolve() / "shot" / "m.####.exr")
    assert ticket.checkpoint == farm["models"].resolve() / "rvm" / "model.json"
    assert ticket.frames == [1001, 1002, 1003]
    assert ticket.job.snapshot_every == 10  # the worker's setting fills in
    assert _load(farm, GOOD).checkpoint == ticket.checkpoint  # the TF.js folder means its model.json


BAD_TICKETS = {
    "malformed": ('{"input": "shot/plate.####.png", "output": ', "malformed JSON"),
    "not_object": ("[1, 2]", "expected a JSON object"),
    "wrong_type": ({**GOOD, "preroll": "ten"}, "'preroll': expected integer"),
    "bool_for_int": ({**GOOD, "snapshot_every": True}, "'snapshot_every': expected integer"),
    "unknown_field": ({**GOOD, "post_render_cmd": "rm -rf /"}, "unknown field 'post_render_cmd'"),
    "input_dotdot": ({**GOOD, "input": "../outside/secret/plate.####.png"}, "outside the allowed input roots"),
    "input_absolute": ({**GOOD, "input": "/etc/plate.####.png"}, "outside the allowed input roots"),
    "input_symlink": ({**GOOD, "input": "linked/plate.####.png"}, "outside the allowed input roots"),
    "frame_symlink": ({**GOOD, "input": "mixed/plate.####.png"}, "plate frame .* resolves outside"),
    "output_dotdot": ({**GOOD, "output": "../../m.####.exr"}, "'output': .* outside the output root"),
    "output_symlink": ({**GOOD, "output": "escape/m.####.exr"}, "'output': .* outside the output root"),
    "alpha_absolute": ({**GOOD, "alpha_output": "/tmp/a.####.exr"}, "'alpha_output': .* outside the output root"),
    "missing_input": ({**GOOD, "input": "nope/plate.####.png"}, "no frames on disk"),
    "checkpoint_dotdot": ({**GOOD, "checkpoint": "../outside/evil.pth"}, "not inside the models dir"),
    "checkpoint_absolute": ({**GOOD, "checkpoint": "/work/shared/x.pth"}, "not inside the models dir"),
    "checkpoint_missing": ({**GOOD, "checkpoint": "nope.pth"}, "not found in the models dir"),
    "frames_absurd": ({**GOOD, "frames": "1-900000"}, "900000 frames; this worker's limit is 500"),
    "oversized": ({**GOOD, "metadata": {"x": "y" * 70000}}, "the limit is 65536"),
    "overwrites_plate": ({**GOOD, "output": "../plates/shot/plate.####.exr", "overwrite": True}, "outside"),
}


@pytest.mark.parametrize("name", sorted(BAD_TICKETS))
def test_bad_ticket_is_refused_with_its_reason(farm: dict[str, Path], name: str) -> None:
    ticket, reason = BAD_TICKETS[name]
    with pytest.raises(InputError, match=reason):
        _load(farm, ticket)


def test_a_version_1_ticket_is_upgraded_with_every_value_kept(farm: dict[str, Path]) -> None:
    # A ticket as plugins wrote them before schema versions: no schema_version, every field of the time.
    old = {**version_1_ticket(), **GOOD, "frames": "1001-1002", "alpha_output": "shot/a.####.exr", "snapshot_every": 5}
    job = _load(farm, old).job
    assert job.schema_version == 2
    placed = {"input", "output", "alpha_output", "checkpoint"}  # made absolute inside the roots
    assert {k: v for k, v in job.to_dict().items() if k not in placed | {"schema_version"}} == {
        k: v for k, v in {**old, **ADDED_WITH_DEFAULTS}.items() if k not in placed
    }
    assert job.alpha_output == str(farm["out"].resolve() / "shot" / "a.####.exr")


def test_a_ticket_newer_than_the_worker_is_refused_saying_so(farm: dict[str, Path]) -> None:
    with pytest.raises(InputError) as caught:
        _load(farm, {**GOOD, "schema_version": 3})
    assert str(caught.value) == (
        "ticket: job field 'schema_version': version 3 is newer than this rvm-vfx reads (up to 2); update rvm-vfx"
    )


def test_ocio_config_is_confined_unless_built_in(farm: dict[str, Path]) -> None:
    builtin = "ocio://cg-config-v2.1.0_aces-v1.3_ocio-v2.3"
    assert _load(farm, {**GOOD, "ocio_config": builtin}).job.ocio_config == builtin
    with pytest.raises(InputError, match="'ocio_config': .* outside the allowed roots"):
        _load(farm, {**GOOD, "ocio_config": "/etc/ocio/config.ocio"})


def test_plate_inside_output_root_is_never_overwritten(farm: dict[str, Path]) -> None:
    plate = write_sequence(farm["out"] / "plate_here", "plate", plate_frames(2, 48, 32), ext="exr", fmt="half")
    ticket = {**GOOD, "input": plate, "output": "plate_here/plate.####.exr", "overwrite": True}
    with pytest.raises(InputError, match="would overwrite the plate"):
        _load(farm, ticket, allow_input_roots=[farm["plates"], farm["out"]])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_checkpoint_is_refused(farm: dict[str, Path]) -> None:
    import torch

    torch.jit.script(torch.nn.Linear(1, 1)).save(str(farm["models"] / "scripted.pt"))
    with pytest.raises(InputError, match="TorchScript"):
        _load(farm, {**GOOD, "checkpoint": "scripted.pt"})


def test_tfjs_manifest_naming_an_outside_shard_is_refused(farm: dict[str, Path]) -> None:
    evil = farm["models"] / "evil"
    evil.mkdir(exist_ok=True)
    (evil / "model.json").write_text(json.dumps({"weightsManifest": [{"paths": ["../../outside/evil.pth"]}]}))
    with pytest.raises(InputError, match="shard outside the models dir"):
        _load(farm, {**GOOD, "checkpoint": "evil"})


def test_dropped_folder_gets_defaults(farm: dict[str, Path]) -> None:
    job_dir = farm["base"] / "root" / "active" / "shotB-20260101-120000-abcdef"
    make_plate(job_dir / "drop", 2, 48, 32)
    (job_dir / "drop" / "job.json").write_text(json.dumps({"checkpoint": "rvm", "priority": 3}))
    ticket = load_ticket(job_dir, _config(farm))
    assert ticket.kind == "folder" and ticket.frames == [1001, 1002]
    assert ticket.job.output == str(farm["out"].resolve() / "shotB" / "shotB.####.exr")
    assert Path(ticket.job.input) == (job_dir / "drop").resolve()


# --------------------------------------------------------------------------- chunks, cleanup, status


def test_chunks_carry_preroll_after_the_first() -> None:
    chunks = plan_chunks(list(range(1001, 1031)), 12, preroll=15, job_preroll=2)
    assert [(c.frames_text, c.preroll) for c in chunks] == [("1001-1012", 2), ("1013-1024", 15), ("1025-1030", 15)]
    gappy = plan_chunks([1, 2, 3, 7, 8, 9], 4, preroll=5)
    assert [c.frames_text for c in gappy] == ["1-3, 7", "8-9"]
    job = Job(input="p.####.exr", output="o.####.exr", device="cuda")
    assert chunk_job(job, chunks[1]).frames == "1013-1024" and chunk_job(job, chunks[1]).preroll == 15
    assert chunk_resources(job) == {"GPU": 1}
    assert chunk_resources(Job(input="p.####.exr", output="o.####.exr")) is None


def test_leftover_temporary_frames_are_removed(farm: dict[str, Path]) -> None:
    ticket = _load(farm, {**GOOD, "output": "tmpclean/m.####.exr"})
    folder = farm["out"] / "tmpclean"
    folder.mkdir(exist_ok=True)
    (folder / ".m.1002.exr.4242.0123abcd.tmp.exr").write_bytes(b"half a frame")
    (folder / ".other.1002.exr.4242.0123abcd.tmp.exr").write_bytes(b"not ours")
    remove_temporary_frames(ticket)
    assert sorted(os.listdir(folder)) == [".other.1002.exr.4242.0123abcd.tmp.exr"]


def test_status_table_lists_every_area(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    (layout.incoming / "waiting.json").write_text("{}")
    for area, state, extra in (("active", "rendering", {}), ("failed", "failed", {"reason": "bad input"})):
        job = tmp_path / area / f"{area}-job"
        job.mkdir()
        (job / "status.json").write_text(
            json.dumps(
                {
                    "state": state,
                    "frames_done": 3,
                    "frames_total": 10,
                    "fps": 2.0,
                    "eta_s": 3.5,
                    "worker": "w1",
                    **extra,
                }
            )
        )
    table = format_table(collect(layout), [])
    assert "waiting.json" in table and "3/10" in table and "bad input" in table


def test_example_settings_file_is_valid(tmp_path: Path) -> None:
    from render_worker.config import load_toml

    example = Path(__file__).resolve().parents[1] / "render_worker" / "worker.example.toml"
    settings = load_toml(example)
    assert settings["output_root"] == Path("/mnt/projects/renders") and settings["snapshot_every"] == 10
    assert build_config({}, str(example)).models_dir == Path("/mnt/farm/models")
