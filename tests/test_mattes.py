"""Garbage, core and hold-out mattes: exact values where they are 0 or 1, blends between, bad input named."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from rvm_vfx.cli import main
from rvm_vfx.color import ColorPipeline
from rvm_vfx.errors import InputError
from rvm_vfx.frame_io import ImageHeader
from rvm_vfx.job import Job
from rvm_vfx.mattes import MatteInput, MatteSequence, apply_mattes, pick_channel
from rvm_vfx.quality.testclip import (
    Motion,
    SecondPerson,
    TestClip,
    composite,
    load_portrait,
    open_background,
    solid_holdout,
)
from rvm_vfx.render import render

from .conftest import DATA, TFJS_MODEL
from .plates import portrait_clip
from .test_worker_helpers import make_models_dir

FRAMES = [1001, 1002, 1003]
W, H = 96, 64


@pytest.fixture(autouse=True)
def _builtin_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIO", raising=False)


def write_channels(path: Path, pixels: np.ndarray, names: tuple[str, ...], fmt: str = "half") -> None:
    """An image whose channels carry these names (H×W×C, or H×W for one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.ascontiguousarray(pixels.reshape(pixels.shape[0], pixels.shape[1], -1), dtype=np.float32)
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], pixels.shape[2], fmt)
    spec.channelnames = names
    spec.alpha_channel = names.index("A") if "A" in names else -1
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(pixels), out.geterror()
    out.close()


def read(path: Path | str) -> tuple[np.ndarray, dict[str, object]]:
    buf = oiio.ImageBuf(str(path))
    attributes = {p.name: p.value for p in buf.spec().extra_attribs}
    return np.asarray(buf.get_pixels(oiio.FLOAT)), attributes


def _plate(folder: Path) -> str:
    """Three ACEScg half EXR frames of a portrait sliding over a background."""
    composites, _ = portrait_clip(len(FRAMES), W, H, step=3)
    color = ColorPipeline()
    for frame, srgb in zip(FRAMES, composites, strict=True):
        linear = color.convert(srgb, "sRGB - Texture", "ACEScg")
        write_channels(folder / f"plate.{frame}.exr", linear, ("R", "G", "B"))
    return str(folder / "plate.####.exr")


# Where each matte is 1 (the hold-out is 0.5): garbage overlaps the core in the top-left corner and wins.
# The portrait spans about columns 25-69 and rows 11-63: each matte covers some of it and some background.
GARBAGE = (slice(0, 64), slice(0, 36))
CORE = (slice(0, 24), slice(0, 96))
HOLDOUT = (slice(24, 64), slice(52, 96))


def _masks() -> dict[str, np.ndarray]:
    masks = {kind: np.zeros((H, W), np.float32) for kind in ("garbage", "core", "holdout")}
    masks["garbage"][GARBAGE] = 1.0
    masks["core"][CORE] = 1.0
    masks["holdout"][HOLDOUT] = 0.5
    return masks


def _write_mattes(folder: Path) -> dict[str, str]:
    """The three mattes in three formats, each read by its own channel rule."""
    masks = _masks()
    for frame in FRAMES:
        # 8-bit PNG, one channel: used whatever its name.
        write_channels(folder / f"garbage.{frame}.png", masks["garbage"], ("Y",), "uint8")
        # EXR with R, G, B, A: A by default (R, G, B hold something else).
        noise = np.full((H, W, 3), 0.7, np.float32)
        write_channels(folder / f"core.{frame}.exr", np.dstack([noise, masks["core"]]), ("R", "G", "B", "A"))
        # 16-bit TIFF, the matte in G, named on the job (and inverted there).
        rgb = np.dstack([np.ones((H, W)), 1.0 - masks["holdout"], np.zeros((H, W))])
        write_channels(folder / f"holdout.{frame}.tif", rgb, ("R", "G", "B"), "uint16")
    return {
        "garbage_matte": str(folder / "garbage.####.png"),
        "core_matte": str(folder / "core.####.exr"),
        "holdout_matte": str(folder / "holdout.####.tif"),
        "holdout_channel": "G",
        "invert_holdout": True,
    }


def _job(root: Path, name: str, **changes: object) -> Job:
    return Job(
        input=str(root / "plate" / "plate.####.exr"),
        output=str(root / name / "m.####.exr"),
        **{
            "checkpoint": str(TFJS_MODEL),
            **changes,
        },
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plate rendered without and with the three mattes."""
    root = tmp_path_factory.mktemp("mattes")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OCIO", raising=False)
        _plate(root / "plate")
        render(_job(root, "plain"))
        render(_job(root, "matted", **_write_mattes(root / "mattes")))
    return root


@pytest.mark.parametrize("frame", FRAMES)
def test_alpha_is_exactly_what_the_mattes_say(rendered: Path, frame: int) -> None:
    plain, _ = read(rendered / "plain" / f"m.{frame}.exr")
    matted, _ = read(rendered / "matted" / f"m.{frame}.exr")
    plate, _ = read(rendered / "plate" / f"plate.{frame}.exr")
    masks = _masks()
    garbage, core, holdout = masks["garbage"] == 1, masks["core"] == 1, masks["holdout"] > 0
    alpha, rgb = matted[..., 3], matted[..., :3]
    # Garbage wins (over the core too): alpha 0, premultiplied RGB 0.
    assert np.all(alpha[garbage] == 0.0) and np.all(rgb[garbage] == 0.0)
    # The core, outside the garbage: alpha 1, RGB the plate itself (half in, half out: bit for bit).
    solid = core & ~garbage
    assert np.all(alpha[solid] == 1.0)
    np.testing.assert_array_equal(rgb[solid], plate[solid])
    # The hold-out scales alpha by 1 − h, h = 1 − 32768/65535 as the 16-bit TIFF stores "0.5". Both renders round
    # alpha to half on the way out, so they agree to half's precision (one ulp: 2^-10 relative, subnormals aside).
    held = holdout & ~garbage & ~core
    kept = np.float32(32768) / np.float32(65535)
    np.testing.assert_allclose(alpha[held], plain[..., 3][held] * kept, rtol=2.0**-10, atol=2.0**-24)
    assert np.all(rgb[held][plain[..., 3][held] == 0.0] == 0.0)
    # Everywhere no matte reaches the output is the unmatted render's, bit for bit.
    untouched = ~garbage & ~core & ~holdout
    np.testing.assert_array_equal(matted[untouched], plain[untouched])
    assert plain[..., 3][garbage].max() > 0.5, "the garbage area must hold some of the network's matte"
    assert plain[..., 3][solid].min() < 0.5, "the core area must hold background the network left out"
    assert plain[..., 3][held].max() > 0.5, "the hold-out area must hold some of the network's matte"


def test_the_output_says_which_mattes_made_it(rendered: Path) -> None:
    _, attributes = read(rendered / "matted" / "m.1002.exr")
    mattes = rendered / "mattes"
    assert {k: v for k, v in attributes.items() if re.match(r"rvm:(garbage|core|holdout)_", k)} == {
        "rvm:core_matte": str(mattes / "core.1002.exr"),
        "rvm:core_channel": "A",
        "rvm:core_inverted": 0,
        "rvm:holdout_matte": str(mattes / "holdout.1002.tif"),
        "rvm:holdout_channel": "G",
        "rvm:holdout_inverted": 1,
        "rvm:garbage_matte": str(mattes / "garbage.1002.png"),
        "rvm:garbage_channel": "Y",
        "rvm:garbage_inverted": 0,
    }
    _, plain = read(rendered / "plain" / "m.1002.exr")
    assert not [k for k in plain if "_matte" in k]


def test_the_mattes_apply_after_the_bidirectional_combination(rendered: Path, tmp_path: Path) -> None:
    job = dataclasses.replace(_job(rendered, "unused"), output=str(tmp_path / "m.####.exr"))
    job = dataclasses.replace(job, passes="bidirectional", warmup=2, **_write_mattes(tmp_path / "mattes"))
    render(job, state_dir=tmp_path / "state")
    masks = _masks()
    garbage = masks["garbage"] == 1
    solid = (masks["core"] == 1) & ~garbage
    for frame in FRAMES:
        pixels, attributes = read(tmp_path / f"m.{frame}.exr")
        assert np.all(pixels[..., 3][garbage] == 0.0) and np.all(pixels[..., :3][garbage] == 0.0)
        assert np.all(pixels[..., 3][solid] == 1.0)
        assert attributes["rvm:holdout_matte"] == str(tmp_path / "mattes" / f"holdout.{frame}.tif")


# ----------------------------------------------------------------------------------------- the maths


def test_soft_mattes_blend_in_order_core_holdout_garbage() -> None:
    pha = np.array([[0.4, 0.4, 1.0, 0.0]], np.float32)
    fgr = np.full((1, 4, 3), 0.8, np.float32)
    src = np.full((1, 4, 3), 0.2, np.float32)
    mattes = {
        "core": np.array([[0.5, 1.0, 0.0, 0.0]], np.float32),
        "holdout": np.array([[0.25, 0.0, 0.5, 1.0]], np.float32),
        "garbage": np.array([[0.5, 1.0, 0.0, 0.0]], np.float32),
    }
    out_fgr, out_pha = apply_mattes(fgr, pha, src, mattes)
    # 0.4 + 0.5·0.6 = 0.7, ×0.75, ×0.5; core 1 then garbage 1: 0; 1 × 0.5; hold-out 1 leaves 0.
    np.testing.assert_allclose(out_pha, [[0.7 * 0.75 * 0.5, 0.0, 0.5, 0.0]], rtol=1e-6, atol=0)
    assert out_pha[0, 1] == 0.0
    # The core pulls the foreground to what the network was shown: half way at 0.5, all the way at 1.
    np.testing.assert_allclose(out_fgr[0, 0], 0.5, rtol=1e-6)
    assert np.all(out_fgr[0, 1] == src[0, 1]) and np.all(out_fgr[0, 2:] == fgr[0, 2:])
    assert out_fgr.dtype == out_pha.dtype == np.float32
    assert pha[0, 0] == np.float32(0.4) and fgr[0, 0, 0] == np.float32(0.8)  # the inputs are untouched


def test_a_full_core_gives_alpha_exactly_one_for_every_alpha() -> None:
    pha = np.linspace(0.0, 1.0, 100_001, dtype=np.float32)[None]
    rgb = np.zeros((1, pha.size, 3), np.float32)
    _, out = apply_mattes(rgb, pha, rgb, {"core": np.ones_like(pha)})
    assert np.all(out == 1.0)
    _, same = apply_mattes(rgb, pha, rgb, {"core": np.zeros_like(pha), "garbage": np.zeros_like(pha)})
    np.testing.assert_array_equal(same, pha)


@pytest.mark.parametrize(
    ("names", "wanted", "index"),
    [
        (("R", "G", "B", "A"), None, 3),
        (("Y",), None, 0),
        (("mask",), None, 0),
        (("R", "G", "B"), None, 0),
        (("R", "G", "B", "A"), "G", 1),
        (("mask.R", "mask.A"), "mask.A", 1),
    ],
)
def test_the_channel_rule(names: tuple[str, ...], wanted: str | None, index: int) -> None:
    assert pick_channel(names, wanted) == index


def test_an_8_bit_matte_is_its_code_over_255_with_no_colour_transform(tmp_path: Path) -> None:
    codes = np.arange(256, dtype=np.float32).reshape(16, 16) / 255.0
    write_channels(tmp_path / "m.0001.png", codes, ("Y",), "uint8")
    sequence = MatteSequence(MatteInput("garbage", str(tmp_path / "m.####.png"), None, False), Job("a", "b.exr"), [1])
    values, channel = sequence.read(1, ImageHeader(width=16, height=16))
    assert channel == "Y"
    # OpenImageIO multiplies by 1/255 rather than dividing: within a float32 ulp; 0 and 255 are exact.
    expected = np.arange(256, dtype=np.float32).reshape(16, 16) / np.float32(255)
    np.testing.assert_allclose(values, expected, rtol=2.0**-23, atol=0)
    assert values[0, 0] == 0.0 and values[-1, -1] == 1.0
    inverted = dataclasses.replace(sequence.matte, invert=True)
    sequence.matte = inverted
    np.testing.assert_array_equal(sequence.read(1, ImageHeader(width=16, height=16))[0], 1.0 - values)


def test_a_layered_channel_is_found_by_its_full_name(tmp_path: Path) -> None:
    pixels = np.zeros((8, 8, 5), np.float32)
    pixels[..., 3] = 0.25  # A: the default
    pixels[..., 4] = 0.75  # mask.Y: asked for
    write_channels(tmp_path / "m.0001.exr", pixels, ("R", "G", "B", "A", "mask.Y"), "float")
    header = ImageHeader(width=8, height=8)

    def read_channel(channel: str | None) -> tuple[float, str]:
        matte = MatteInput("core", str(tmp_path / "m.####.exr"), channel, False)
        values, name = MatteSequence(matte, Job("a", "b.exr"), [1]).read(1, header)
        return float(values.mean()), name

    assert read_channel(None) == (0.25, "A")
    assert read_channel("mask.Y") == (0.75, "mask.Y")
    with pytest.raises(InputError, match=r"no channel 'Y'; channels in the file: R, G, B, A, mask\.Y$"):
        read_channel("Y")


def test_a_video_matte_reads_its_frames_in_any_order_without_starting_over(tmp_path: Path) -> None:
    import av

    path = tmp_path / "matte.mkv"
    levels = [16, 64, 128, 192, 240]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=24)  # lossless: the values can be checked exactly
        stream.width, stream.height, stream.pix_fmt = 16, 8, "bgr0"
        for level in levels:
            image = np.zeros((8, 16, 3), np.uint8)
            image[..., 0], image[..., 1] = level, 255 - level
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="bgr0")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    job = Job("a", "b.exr", start_frame=1001)
    frames = list(range(1001, 1006))
    red = MatteSequence(MatteInput("garbage", str(path), None, False), job, frames)
    green = MatteSequence(MatteInput("garbage", str(path), "G", False), job, frames)
    header = ImageHeader(width=16, height=8)
    reopened = []
    red.source._open = lambda real=red.source._open: (reopened.append(1), real())[1]  # type: ignore[method-assign]
    for frame in (1002, 1001, 1003, 1005, 1004):  # as two writer threads may ask
        values, channel = red.read(frame, header)
        assert channel == "R" and np.all(values == np.float32(levels[frame - 1001]) / np.float32(255))
    assert reopened == []  # every frame decoded once, in order
    values, channel = green.read(1003, header)
    assert channel == "G" and np.all(values == np.float32(255 - 128) / np.float32(255))
    with pytest.raises(InputError, match=r"frame 1001\): no channel 'A'; channels in the file: R, G, B$"):
        MatteSequence(MatteInput("core", str(path), "A", False), job, frames).read(1001, header)


# ----------------------------------------------------------------------------------------- bad input


@pytest.fixture
def plate(tmp_path: Path) -> Path:
    _plate(tmp_path / "plate")
    return tmp_path


def _garbage(folder: Path, frames: list[int] = FRAMES, size: tuple[int, int] = (W, H)) -> str:
    for frame in frames:
        write_channels(folder / f"g.{frame}.exr", np.zeros((size[1], size[0]), np.float32), ("A",))
    return str(folder / "g.####.exr")


def _whole(path: Path) -> bool:
    pixels, _ = read(path)
    return pixels.shape == (H, W, 4) and bool(np.isfinite(pixels).all())


def test_a_missing_matte_frame_fails_before_anything_is_written(plate: Path) -> None:
    pattern = _garbage(plate / "g", [1001, 1003])
    message = f"job field 'garbage_matte': {pattern}: missing frames 1002 (of 1001-1003)"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        render(_job(plate, "out", garbage_matte=pattern))
    assert not (plate / "out").exists()


def test_missing_hold_holds_the_matte_frame_before_the_gap(plate: Path) -> None:
    pattern = _garbage(plate / "g", [1001, 1003])
    report = render(_job(plate, "out", garbage_matte=pattern, missing="hold"))
    assert report.frames_written == FRAMES
    _, attributes = read(plate / "out" / "m.1002.exr")
    assert attributes["rvm:garbage_matte"] == str(plate / "g" / "g.1001.exr")


def test_a_matte_of_another_size_is_named_with_its_frame_and_earlier_frames_stay(plate: Path) -> None:
    pattern = _garbage(plate / "g", [1001, 1002])
    _garbage(plate / "g", [1003], size=(W // 2, H // 2))
    message = (
        f"job field 'garbage_matte': {plate / 'g' / 'g.1003.exr'} (frame 1003) is 48×32 at (0, 0); "
        "the plate is 96×64 at (0, 0): a matte must match its plate"
    )
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        render(_job(plate, "out", garbage_matte=pattern))
    assert _whole(plate / "out" / "m.1001.exr") and _whole(plate / "out" / "m.1002.exr")
    assert not (plate / "out" / "m.1003.exr").exists()


def test_nan_in_a_matte_is_named_with_its_frame(plate: Path) -> None:
    pattern = _garbage(plate / "g")
    bad = np.zeros((H, W), np.float32)
    bad[3, 4:7] = np.nan
    write_channels(plate / "g" / "g.1002.exr", bad, ("A",), "float")
    message = (
        f"job field 'garbage_matte': {plate / 'g' / 'g.1002.exr'} (frame 1002): 3 NaN/Inf values in channel 'A'; "
        "a matte must be finite"
    )
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        render(_job(plate, "out", garbage_matte=pattern))
    assert _whole(plate / "out" / "m.1001.exr")


def test_an_unknown_channel_lists_the_channels(plate: Path) -> None:
    pattern = _garbage(plate / "g")
    message = (
        f"job field 'core_matte': {plate / 'g' / 'g.1001.exr'} (frame 1001): no channel 'mask'; channels in the file: A"
    )
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        render(_job(plate, "out", core_matte=pattern, core_channel="mask"))


def test_an_output_on_a_matte_is_refused_and_the_matte_kept(plate: Path) -> None:
    pattern = _garbage(plate / "g")
    before = (plate / "g" / "g.1001.exr").read_bytes()
    job = dataclasses.replace(_job(plate, "out", holdout_matte=pattern), alpha_output=pattern, overwrite=True)
    message = (
        f"job field 'alpha_output': {plate / 'g' / 'g.1001.exr'} (frame 1001) would overwrite "
        f"{plate / 'g' / 'g.1001.exr'}, a file of job field 'holdout_matte'; mattes are never written to"
    )
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        render(job)
    assert (plate / "g" / "g.1001.exr").read_bytes() == before
    assert not (plate / "out").exists()


def test_the_cli_takes_the_matte_flags_and_exits_2_on_a_bad_matte(plate: Path, capsys) -> None:
    pattern = _garbage(plate / "g", [1001])
    args = ["matte", str(plate / "plate" / "plate.####.exr"), str(plate / "out" / "m.####.exr")]
    args += ["--checkpoint", str(TFJS_MODEL), "--garbage-matte", pattern, "--invert-garbage", "--progress", "none"]
    assert main(args) == 2
    assert f"job field 'garbage_matte': {pattern}: missing frames 1002-1003 (of 1001-1003)" in capsys.readouterr().err
    assert main([*args, "--frames", "1001"]) == 0
    pixels, attributes = read(plate / "out" / "m.1001.exr")
    assert attributes["rvm:garbage_inverted"] == 1
    assert np.all(pixels == 0.0)  # an inverted empty garbage matte takes everything away


def test_the_worker_confines_matte_paths_to_its_input_roots(tmp_path: Path) -> None:
    from render_worker.config import build_config
    from render_worker.ticket import load_ticket

    plates, outside = tmp_path / "plates", tmp_path / "outside"
    _plate(plates / "shot")
    _garbage(outside)
    _garbage(plates / "shot")
    root = tmp_path / "root"
    settings = {"root": root, "output_root": tmp_path / "out", "allow_input_roots": [plates]}
    config = build_config({**settings, "models_dir": make_models_dir(tmp_path / "models")})

    def load(matte: str):
        job_dir = root / "active" / f"t-{matte.replace('/', '_')}"
        job_dir.mkdir(parents=True)
        ticket = {"input": "shot/plate.####.exr", "output": "shot/m.####.exr", "checkpoint": "rvm"}
        ticket["garbage_matte"] = matte
        (job_dir / "ticket.json").write_text(json.dumps(ticket))
        return load_ticket(job_dir, config)

    assert load("shot/g.####.exr").job.garbage_matte == str(plates.resolve() / "shot" / "g.####.exr")
    with pytest.raises(InputError, match="'garbage_matte': .* outside the allowed input roots"):
        load(str(outside / "g.####.exr"))
    with pytest.raises(InputError, match="'garbage_matte': .* outside the allowed input roots"):
        load("../outside/g.####.exr")


# ----------------------------------------------------------------------------------------- the test clip


def _portrait(name: str) -> tuple[Path, Path]:
    return DATA / "portraits" / "image" / f"{name}.jpg", DATA / "portraits" / "alpha" / f"{name}.png"


def test_a_second_person_leaves_the_main_truth_and_is_its_own_holdout() -> None:
    main_person = load_portrait(*_portrait("p_818e689d"))
    second = SecondPerson(load_portrait(*_portrait("p_09ba26b4")), 0.6, 0.3, Motion("pan", 0.05, seed=1))
    background = open_background(DATA / "backgrounds" / "rw_01.jpg")
    alone = TestClip(main_person, background, 5, (160, 90), Motion("pan", 0.1))
    both = TestClip(main_person, background, 5, (160, 90), Motion("pan", 0.1), second=second)
    for index in (0, 4):
        a, b = alone.frame(index), both.frame(index)
        assert a.holdout is None and b.holdout is not None
        np.testing.assert_array_equal(b.pha, a.pha)  # the main person's truth is unchanged
        np.testing.assert_array_equal(b.fgr, a.fgr)
        np.testing.assert_array_equal(b.com, composite(b.fgr, b.pha, b.bgr))  # bgr holds the second person
        visible = b.holdout > 0
        assert visible.mean() > 0.02  # they are really there (about 4 % of the frame)
        assert np.all(b.holdout[b.pha == 255] == 0)  # and behind the main person where it is solid
        np.testing.assert_array_equal(b.bgr[(b.holdout == 0) & (b.pha == 0)], a.bgr[(b.holdout == 0) & (a.pha == 0)])
        assert np.abs(b.bgr[visible].astype(int) - a.bgr[visible].astype(int)).mean() > 10


def test_make_testclip_writes_the_holdout_sequence(tmp_path: Path) -> None:
    image, alpha = _portrait("p_818e689d")
    second = [str(p) for p in _portrait("p_09ba26b4")]
    args = ["make-testclip", str(image), str(alpha), str(DATA / "backgrounds" / "rw_01.jpg"), str(tmp_path / "c")]
    args += ["--frames", "3", "--size", "96x64", "--start-frame", "1001", "--second-person", *second]
    assert main([*args, "--second-offset", "-0.25", "--second-motion", "shake", "--holdout-grow", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "c" / "holdout").iterdir()) == ["1001.png", "1002.png", "1003.png"]
    info = json.loads((tmp_path / "c" / "clip.json").read_text())
    assert info["second_person"]["image"] == second[0] and info["second_person"]["offset"] == -0.25
    assert info["second_person"]["motion"] == {"kind": "shake", "amplitude": 0.02, "seed": 1}
    assert info["second_person"]["holdout"].startswith("solid: where pha2*(1-pha) > 0, grown 3 px")
    codes = np.asarray(oiio.ImageBuf(str(tmp_path / "c" / "holdout" / "1002.png")).get_pixels(oiio.UINT8))
    assert set(np.unique(codes)) == {0, 255}  # solid
    # Made again without the second person, the old hold-out does not stay behind.
    assert main([*args[:-3], "--overwrite"]) == 0
    assert not list((tmp_path / "c" / "holdout").iterdir())


def test_a_solid_holdout_grows_the_visible_matte_and_stops_at_the_main_person() -> None:
    visible = np.zeros((9, 12), np.uint8)
    visible[4, 5] = 7  # one faint pixel of the second person
    main_pha = np.zeros((9, 12), np.uint8)
    main_pha[:, 7:] = 30  # the main person, from column 7
    solid = solid_holdout(visible, main_pha, 2)
    expected = np.zeros((9, 12), np.uint8)
    expected[2:7, 3:7] = 255  # the 5×5 square around it, cut at column 7
    np.testing.assert_array_equal(solid, expected)
