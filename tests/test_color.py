"""Colour management: config choice, plate <-> model space, and the plate-keeping foreground rule."""

from __future__ import annotations

import logging
import threading

import numpy as np
import PyOpenColorIO as ocio
import pytest

from rvm_vfx.color import BUILTIN_CONFIG, SOLID_ALPHA_RAMP, ColorPipeline, load_config
from rvm_vfx.errors import ColorSpaceError, InputError

SRGB_TX = "sRGB Encoded Rec.709 (sRGB)"
LIN_709 = "Linear Rec.709 (sRGB)"

TINY_CONFIG = """\
ocio_profile_version: 2
name: rvm-test-tiny
search_path: ""
strictparsing: true
roles:
  default: linear
  scene_linear: linear
file_rules:
  - !<Rule> {name: Default, colorspace: default}
displays:
  sRGB:
    - !<View> {name: Raw, colorspace: linear}
colorspaces:
  - !<ColorSpace>
    name: linear
  - !<ColorSpace>
    name: linear_double
    to_scene_reference: !<MatrixTransform> {matrix: [2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1]}
  - !<ColorSpace>
    name: sRGB
    to_scene_reference: !<ExponentWithLinearTransform>
      {gamma: [2.4, 2.4, 2.4, 1], offset: [0.055, 0.055, 0.055, 0]}
"""


# ---------------------------------------------------------------- independent references


def _rgb_to_xyz(primaries: list[tuple[float, float]], white: tuple[float, float]) -> np.ndarray:
    xyz = np.array([[x / y, 1.0, (1.0 - x - y) / y] for x, y in primaries]).T
    w = np.array([white[0] / white[1], 1.0, (1.0 - white[0] - white[1]) / white[1]])
    return xyz * np.linalg.solve(xyz, w)


def _white_xyz(white: tuple[float, float]) -> np.ndarray:
    return np.array([white[0] / white[1], 1.0, (1.0 - white[0] - white[1]) / white[1]])


def _acescg_to_lin709() -> np.ndarray:
    """AP1 (D60) -> Rec.709 (D65) with a Bradford adaptation, from the published chromaticities."""
    d60, d65 = (0.32168, 0.33767), (0.3127, 0.3290)
    ap1 = _rgb_to_xyz([(0.713, 0.293), (0.165, 0.830), (0.128, 0.044)], d60)
    rec709 = _rgb_to_xyz([(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)], d65)
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    cone_gain = np.diag((bradford @ _white_xyz(d65)) / (bradford @ _white_xyz(d60)))
    cat = np.linalg.inv(bradford) @ cone_gain @ bradford
    return np.linalg.inv(rec709) @ cat @ ap1


def _srgb_oetf(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(np.maximum(v, 0.0), 1 / 2.4) - 0.055)


@pytest.fixture(scope="module")
def pipeline() -> ColorPipeline:
    return ColorPipeline(ocio.Config.CreateFromFile(BUILTIN_CONFIG))


# ---------------------------------------------------------------------------- configs


def test_builtin_config_is_pinned_and_loadable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIO", raising=False)
    name = BUILTIN_CONFIG.removeprefix("ocio://")
    assert BUILTIN_CONFIG.startswith("ocio://cg-config-v")
    assert name in list(ocio.BuiltinConfigRegistry())

    config = load_config()
    assert config.getName() == name
    pipe = ColorPipeline(config)
    assert pipe.scene_linear == "ACEScg"
    assert pipe.model_space == SRGB_TX


def test_ocio_environment_variable_is_honoured(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiny.ocio"
    path.write_text(TINY_CONFIG)
    monkeypatch.setenv("OCIO", str(path))

    pipe = ColorPipeline()
    assert pipe.config.getName() == "rvm-test-tiny"
    assert pipe.scene_linear == "linear"
    assert pipe.model_space == "sRGB"
    model, clipped = pipe.to_model(np.array([[[0.21404114, 0.0, 4.0]]], np.float32), "linear")
    # OCIO's float32 sRGB curve vs the exact value (measured 6e-7). OCIO's gamma and matrix ops have one
    # SSE2 code path on every x86-64 (only its LUT ops dispatch on AVX), so these figures do not move by CPU.
    np.testing.assert_allclose(model, [[[0.5, 0.0, 1.0]]], atol=1e-5)
    assert clipped == pytest.approx(1 / 3)
    # Linearity is found numerically in a config that tags no encodings.
    assert pipe.working_space_for("linear_double") == "linear_double"
    assert pipe.working_space_for("sRGB") == "linear"


def test_explicit_config_path_beats_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiny.ocio"
    path.write_text(TINY_CONFIG)
    monkeypatch.setenv("OCIO", str(path))
    assert load_config(BUILTIN_CONFIG).getName() == BUILTIN_CONFIG.removeprefix("ocio://")


def test_unreadable_config_names_its_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.ocio"
    monkeypatch.setenv("OCIO", str(missing))
    with pytest.raises(InputError, match=r"nope\.ocio.*\$OCIO"):
        load_config()


def test_config_without_srgb_space_is_reported(tmp_path) -> None:
    path = tmp_path / "linear_only.ocio"
    path.write_text(TINY_CONFIG.split("  - !<ColorSpace>\n    name: sRGB")[0])
    with pytest.raises(ColorSpaceError, match="no sRGB-encoded Rec.709"):
        ColorPipeline(load_config(str(path)))


def test_model_space_found_in_studio_config_that_renames_it() -> None:
    config = ocio.Config.CreateFromFile(BUILTIN_CONFIG)
    srgb = config.getColorSpace("srgb_tx")
    config.removeColorSpace(srgb.getName())
    srgb.clearAliases()
    srgb.setInteropID("")
    srgb.setName("Studio Texture 8bit")
    config.addColorSpace(srgb)
    config.setRole("color_picking", "Studio Texture 8bit")
    config.setRole("texture_paint", "Studio Texture 8bit")

    pipe = ColorPipeline(config)
    assert pipe.model_space == "Studio Texture 8bit"
    # An OIIO interop name from the built-in config is matched to the studio's equivalent.
    assert pipe.resolve_input_space(None, "srgb_rec709_scene", True) == "Studio Texture 8bit"


# ---------------------------------------------------------------------- transforms


def test_srgb_half_is_0214_linear_and_back(pipeline: ColorPipeline) -> None:
    half = np.full((2, 2, 3), 0.5, np.float32)
    linear = pipeline.convert(half, SRGB_TX, LIN_709)
    # OCIO's float32 sRGB curve (SSE2 fast power) vs the exact value: measured 4.3e-6 each way.
    np.testing.assert_allclose(linear, 0.21404114, atol=2e-5)
    back = pipeline.convert(linear, LIN_709, SRGB_TX)
    np.testing.assert_allclose(back, 0.5, atol=2e-5)
    assert np.array_equal(half, np.full((2, 2, 3), 0.5, np.float32)), "input must not be modified"


def test_acescg_to_model_matches_independent_computation(pipeline: ColorPipeline) -> None:
    acescg = np.array([[[0.4, 0.3, 0.2], [0.18, 0.18, 0.18], [0.05, 0.6, 0.1]]], np.float32)
    expected = _srgb_oetf(np.einsum("ij,hwj->hwi", _acescg_to_lin709(), acescg.astype(np.float64)))
    model, clipped = pipeline.to_model(acescg, "ACEScg")
    assert model.dtype == np.float32
    assert model.shape == acescg.shape
    # OCIO in float32 vs the float64 matrix from the primaries and the published curve: measured 4.2e-6.
    np.testing.assert_allclose(model, np.clip(expected, 0, 1), atol=2e-5)
    assert clipped == float(np.count_nonzero((expected < 0) | (expected > 1))) / expected.size


def test_to_model_clips_and_reports_exact_fraction(pipeline: ColorPipeline) -> None:
    values = np.array([[[-0.5, 0.2, 1.5], [1.0, 0.0, 2.0]], [[0.3, 0.4, 0.5], [0.6, 0.7, 1.0000001]]], np.float32)
    model, clipped = pipeline.to_model(values, pipeline.model_space)
    assert clipped == 4 / 12
    expected = values.copy()
    expected[0, 0] = [0.0, 0.2, 1.0]
    expected[0, 1] = [1.0, 0.0, 1.0]
    expected[1, 1, 2] = 1.0
    assert np.array_equal(model, expected)


def test_to_model_clips_scene_highlights(pipeline: ColorPipeline) -> None:
    model, clipped = pipeline.to_model(np.array([[[7.5, 7.5, 7.5]]], np.float32), "ACEScg")
    assert np.array_equal(model, np.ones((1, 1, 3), np.float32))
    assert clipped == 1.0


def test_same_space_under_another_name_is_bit_exact(pipeline: ColorPipeline) -> None:
    values = np.array([[[0.1234567, -0.0, 17.25]]], np.float32)
    assert np.array_equal(pipeline.convert(values, "ACEScg", "lin_ap1"), values)
    assert np.array_equal(pipeline.convert(values, "ACEScg", "scene_linear"), values)


def test_processors_are_shared_across_threads(pipeline: ColorPipeline) -> None:
    rng = np.random.default_rng(7)
    plates = [rng.random((32, 48, 3), dtype=np.float32) * 4 for _ in range(8)]
    expected = [pipeline.to_model(p, "ACEScct")[0] for p in plates]
    results: list[np.ndarray | None] = [None] * len(plates)

    def work(i: int) -> None:
        results[i] = pipeline.to_model(plates[i], "ACEScct")[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(plates))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected, strict=True):
        assert np.array_equal(got, want)


# ---------------------------------------------------------------------------- names


def test_unknown_space_message_suggests_close_names(pipeline: ColorPipeline) -> None:
    with pytest.raises(ColorSpaceError) as info:
        pipeline.resolve_input_space("ACEScgg", None, True)
    assert str(info.value) == (
        "unknown colour space 'ACEScgg' (input_colorspace); did you mean: 'ACEScg', 'ACEScc', 'aces', 'ACEScct'?"
    )
    assert isinstance(info.value, InputError)


def test_unknown_space_without_close_names(pipeline: ColorPipeline) -> None:
    with pytest.raises(ColorSpaceError) as info:
        pipeline.validate_space("qqqzzz", field="output_colorspace")
    assert str(info.value) == (
        "unknown colour space 'qqqzzz' (output_colorspace); "
        f"config {BUILTIN_CONFIG.removeprefix('ocio://')!r} has no similar name"
    )


def test_resolve_input_space_precedence(pipeline: ColorPipeline) -> None:
    # Explicit beats the file's tag, and aliases come back canonical.
    assert pipeline.resolve_input_space("lin_ap1", "sRGB", False) == "ACEScg"
    # The file's tag beats the format's convention.
    assert pipeline.resolve_input_space(None, "lin_rec709", True) == LIN_709
    assert pipeline.resolve_input_space(None, "ACEScg", False) == "ACEScg"
    assert pipeline.resolve_input_space(None, "scene_linear", False) == "ACEScg"
    # OIIO's generic names.
    assert pipeline.resolve_input_space(None, "Linear", False) == "ACEScg"
    assert pipeline.resolve_input_space(None, "linear", False) == "ACEScg"
    assert pipeline.resolve_input_space(None, "sRGB", True) == SRGB_TX
    # No tag: float files are scene-linear, integer files sRGB.
    assert pipeline.resolve_input_space(None, None, True) == "ACEScg"
    assert pipeline.resolve_input_space(None, "", False) == SRGB_TX


def test_unknown_file_tag_falls_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    pipe = ColorPipeline(ocio.Config.CreateFromFile(BUILTIN_CONFIG))
    with caplog.at_level(logging.WARNING, logger="rvm_vfx.colorspaces"):
        assert pipe.resolve_input_space(None, "MysteryCam Log", True) == "ACEScg"
        assert pipe.resolve_input_space(None, "MysteryCam Log", True) == "ACEScg"
        assert pipe.resolve_input_space(None, "MysteryCam Log", False) == SRGB_TX
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # once per (tag, float/integer) decision, not once per frame
    assert "'MysteryCam Log'" in messages[0]
    assert "'ACEScg'" in messages[0]


# ------------------------------------------------------------------------ foreground


def _edge_case(pipeline: ColorPipeline) -> tuple[np.ndarray, ...]:
    """A 1×5 ACEScg plate whose alpha runs solid, ramp, soft, soft, empty; highlight in the solid pixel."""
    plate = np.array(
        [[[7.5, 7.5, 7.5], [0.4, 0.3, 0.2], [0.4, 0.3, 0.2], [0.2, 0.25, 0.3], [0.1, 0.1, 0.1]]], np.float32
    )
    alpha = np.array([[1.0, 1.0 - SOLID_ALPHA_RAMP / 2, 0.5, 0.25, 0.0]], np.float32)
    src_model, _ = pipeline.to_model(plate, "ACEScg")
    fgr_model = np.clip(src_model + np.array([0.03, -0.02, 0.01], np.float32), 0.0, 1.0)
    return plate, src_model, fgr_model, alpha


def test_solid_foreground_is_the_plate_exactly(pipeline: ColorPipeline) -> None:
    plate, src, fgr, alpha = _edge_case(pipeline)
    rgba = pipeline.compose_foreground(plate, src, fgr, alpha, "ACEScg", "ACEScg")
    assert rgba.shape == (1, 5, 4)
    assert rgba.dtype == np.float32
    assert np.array_equal(rgba[0, 0, :3], [7.5, 7.5, 7.5])  # highlight above 1.0 kept, bit for bit
    assert np.array_equal(rgba[0, 4], [0.0, 0.0, 0.0, 0.0])  # empty: nothing left after premultiplying
    assert np.array_equal(rgba[..., 3], alpha)


def test_soft_edge_gets_linear_residual_then_premultiplied(pipeline: ColorPipeline) -> None:
    plate, src, fgr, alpha = _edge_case(pipeline)
    rgba = pipeline.compose_foreground(plate, src, fgr, alpha[..., None], "ACEScg", "ACEScg")

    # Independent: decode the model-space images with the published formulas and subtract.
    to_709 = _acescg_to_lin709()
    to_acescg = np.linalg.inv(to_709)

    def decode(model: np.ndarray) -> np.ndarray:
        m = model.astype(np.float64)
        lin709 = np.where(m <= 0.04045, m / 12.92, ((m + 0.055) / 1.055) ** 2.4)
        return np.einsum("ij,hwj->hwi", to_acescg, lin709)

    residual = decode(fgr) - decode(src)
    weight = np.array([0.0, 0.5, 1.0, 1.0, 1.0])[None, :, None]
    expected = (plate + weight * residual) * alpha[..., None]
    # OCIO's float32 decode vs the float64 formulas above: measured 1.9e-6.
    np.testing.assert_allclose(rgba[..., :3], expected, atol=2e-5)

    # The residual really changed the soft pixels, half as much in the ramp as fully inside the edge.
    straight = rgba[..., :3] / np.maximum(rgba[..., 3:], 1e-12)
    assert np.abs(straight[0, 2] - plate[0, 2]).max() > 1e-2
    # The same float32 residual, weighted 0.5 vs 1.0 (measured 0: exact); 1e-5 covers a different rounding.
    np.testing.assert_allclose(straight[0, 1] - plate[0, 1], (straight[0, 2] - plate[0, 2]) / 2, atol=1e-5)
    # Premultiplication, numerically: RGB = straight foreground * alpha (one float32 rounding each way).
    np.testing.assert_allclose(rgba[0, 3, :3], straight[0, 3] * 0.25, rtol=1e-6)


def test_output_space_differs_from_plate_space(pipeline: ColorPipeline) -> None:
    plate, src, fgr, alpha = _edge_case(pipeline)
    alpha = alpha.copy()
    alpha[0, 3] = 1.0 / 3.0  # a value any colour transform would disturb
    rgba = pipeline.compose_foreground(plate, src, fgr, alpha, "ACEScg", "lin_rec709")

    to_709 = _acescg_to_lin709()
    # OCIO's float32 matrix vs the float64 one derived from the primaries: measured 6e-8 relative.
    np.testing.assert_allclose(rgba[0, 0, :3], to_709 @ plate[0, 0], rtol=1e-6)
    assert np.array_equal(rgba[0, 0, :3], pipeline.convert(plate, "ACEScg", "lin_rec709")[0, 0])
    assert np.array_equal(rgba[..., 3], alpha)

    same = pipeline.compose_foreground(plate, src, fgr, alpha, "ACEScg", "ACEScg")
    expected = np.einsum("ij,hwj->hwi", to_709, same[..., :3].astype(np.float64))
    # The same as a float64 matrix on the ACEScg result: float32 rounding only (measured 4.8e-7).
    np.testing.assert_allclose(rgba[..., :3], expected, atol=1e-5)


def test_encoded_plate_gets_residual_in_scene_linear(pipeline: ColorPipeline) -> None:
    plate = np.array([[[0.8, 0.6, 0.4], [0.8, 0.6, 0.4]]], np.float32)
    alpha = np.array([[1.0, 0.5]], np.float32)
    src, _ = pipeline.to_model(plate, SRGB_TX)
    fgr = np.clip(src + 0.05, 0.0, 1.0)
    assert pipeline.working_space_for(SRGB_TX) == "ACEScg"

    rgba = pipeline.compose_foreground(plate, src, fgr, alpha, SRGB_TX, "ACEScg")
    plate_lin = pipeline.convert(plate, SRGB_TX, "ACEScg")  # the working space is ACEScg itself
    assert np.array_equal(rgba[0, 0, :3], plate_lin[0, 0])
    residual = pipeline.convert(fgr, SRGB_TX, "ACEScg") - pipeline.convert(src, SRGB_TX, "ACEScg")
    # The same OCIO conversions as the engine's, in float32: one rounding of the sum and product (measured 0).
    np.testing.assert_allclose(rgba[0, 1, :3], (plate_lin[0, 1] + residual[0, 1]) * 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    ("plate_space", "output_space"), [("ACEScg", "ACEScg"), ("ACEScg", "lin_rec709"), (SRGB_TX, "ACEScg")]
)
def test_compose_never_modifies_its_inputs(pipeline: ColorPipeline, plate_space: str, output_space: str) -> None:
    # The plate is shared with the reader's frame and with the --fg-output pass; compose works from it
    # without copying in the common case, so it must never write into it.
    plate, src, fgr, alpha = _edge_case(pipeline)
    before = [a.copy() for a in (plate, src, fgr, alpha)]
    rgba = pipeline.compose_foreground(plate, src, fgr, alpha, plate_space, output_space)
    for original, now in zip(before, (plate, src, fgr, alpha), strict=True):
        assert np.array_equal(original, now)
    assert not np.shares_memory(rgba, plate)


def test_compose_rejects_mismatched_shapes(pipeline: ColorPipeline) -> None:
    plate = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="alpha"):
        pipeline.compose_foreground(plate, plate, plate, np.zeros((3, 2), np.float32), "ACEScg", "ACEScg")


@pytest.mark.parametrize("shape", [(3,), (7, 3), (4, 5, 3)])
def test_to_model_matches_convert_and_clip_at_every_shape(pipeline: ColorPipeline, shape: tuple[int, ...]) -> None:
    # to_model converts into a padded RGBA buffer (OCIO's faster path); the values must be convert()'s, bit for bit.
    values = np.linspace(-0.5, 3.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    model, clipped = pipeline.to_model(values, "ACEScg")
    expected = pipeline.convert(values, "ACEScg", pipeline.model_space)
    outside = np.count_nonzero((expected < 0) | (expected > 1))
    assert model.shape == shape
    assert np.array_equal(model, np.clip(expected, 0.0, 1.0))
    assert clipped == outside / expected.size


def test_to_model_counts_and_clips_across_strips(pipeline: ColorPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    # to_model counts and clips in strips; a strip of 7 values (not a whole pixel) and a short last strip
    # must give convert()'s values and the exact count, NaN neither counted nor changed.
    from rvm_vfx import color_convert

    monkeypatch.setattr(color_convert, "_CLIP_STRIP", 7)
    values = np.linspace(-0.5, 3.0, 5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3)
    values[2, 3, 1] = np.nan
    model, clipped = pipeline.to_model(values, "ACEScg")
    expected = pipeline.convert(values, "ACEScg", pipeline.model_space)
    assert np.isnan(expected[2, 3]).any()
    outside = np.count_nonzero((expected < 0) | (expected > 1))
    assert np.array_equal(model, np.clip(expected, 0.0, 1.0), equal_nan=True)
    assert clipped == outside / expected.size
