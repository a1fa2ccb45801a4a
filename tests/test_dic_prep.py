"""Tests for latentmech.dic.prep: known answers for each step, windows, split and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from latentmech.core.errors import InputError
from latentmech.dic.prep import (
    PAPER_SETTINGS,
    ModalitySettings,
    channel_names,
    extract_windows,
    gaussian_blur,
    largest_remainder,
    preprocess,
    split_windows,
    window_grid,
)

BLUR3 = {"m": ModalitySettings(blur_sigma_px=3.0)}


def prep_one(field: np.ndarray, settings: ModalitySettings) -> np.ndarray:
    """Preprocess a single modality "m" and return its channels."""
    return preprocess({"m": field}, {"m": settings}).channels["m"]


def gaussian_2d(dy: np.ndarray, dx: np.ndarray, sigma: float) -> np.ndarray:
    """Analytic separable Gaussian kernel, truncated at 4σ and normalised like scipy's."""
    radius = int(4 * sigma + 0.5)
    norm = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).sum()
    return np.exp(-0.5 * (dy**2 + dx**2) / sigma**2) / norm**2


# --- blur ---------------------------------------------------------------------------------------


def test_blur_of_constant_is_constant() -> None:
    out = prep_one(np.full((40, 50), 2.5), BLUR3["m"])
    assert out.dtype == np.float32 and out.shape == (1, 40, 50)
    np.testing.assert_allclose(out, 2.5, rtol=1e-6)


@pytest.mark.parametrize("sigma", [3.0, 10.0])
def test_blur_of_delta_is_analytic_kernel(sigma: float) -> None:
    field = np.zeros((121, 121))
    field[60, 60] = 1.0
    out = prep_one(field, ModalitySettings(blur_sigma_px=sigma))[0]
    offsets = np.array([(0, 0), (1, 0), (0, 2), (3, 4), (-5, 7), (10, -2)])
    expected = gaussian_2d(offsets[:, 0], offsets[:, 1], sigma)
    np.testing.assert_allclose(out[60 + offsets[:, 0], 60 + offsets[:, 1]], expected, rtol=1e-5)
    assert out.sum() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("shape", [(64, 80), (7, 200), (1, 1)])
def test_blur_matches_scipy_reflect_truncate4(shape: tuple[int, int]) -> None:
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    for sigma in (3.0, 10.0):
        ref = gaussian_filter(x.astype(np.float64), sigma, mode="reflect", truncate=4.0)
        np.testing.assert_allclose(gaussian_blur(x, sigma), ref, atol=1e-6)


def test_normalised_convolution_next_to_hole_equals_unholed_constant() -> None:
    field = np.full((60, 60), 3.0)
    field[20:30, 25:40] = np.nan
    res = preprocess({"m": field}, BLUR3)
    out = res.channels["m"][0]
    unholed = prep_one(np.full((60, 60), 3.0), BLUR3["m"])[0]
    np.testing.assert_allclose(out[res.valid], unholed[res.valid], rtol=1e-6)
    assert (out[~res.valid] == 0).all()
    assert not res.valid[20:30, 25:40].any() and res.valid.sum() == 3600 - 150


def test_normalised_convolution_is_weighted_mean_of_valid_neighbours() -> None:
    rng = np.random.default_rng(2)
    field = rng.normal(size=(50, 50))
    field[rng.random((50, 50)) < 0.1] = np.nan
    out = prep_one(field, BLUR3["m"])[0]
    w = np.isfinite(field).astype(float)
    num = gaussian_filter(np.nan_to_num(field), 3, mode="reflect", truncate=4)
    den = gaussian_filter(w, 3, mode="reflect", truncate=4)
    expected = np.where(w > 0, num / den, 0.0)
    np.testing.assert_allclose(out, expected, atol=2e-6)


# --- threshold, scale, angle, mask --------------------------------------------------------------


def test_intensity_threshold_then_scale_on_hand_values() -> None:
    field = np.array([[6.0, 7.0, 6.73, 6.75], [-7.0, 0.0, 25.0, 100.0]])
    out = prep_one(field, PAPER_SETTINGS["intensity"])[0]
    expected = np.array([[0.0, 0.28, 0.0, 0.27], [-0.28, 0.0, 1.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert not np.signbit(out[out == 0]).any()  # zeros are +0.0, not -0.0


def test_direction_to_cos_sin_and_masked_off_slip() -> None:
    direction = np.array([[90.0, 0.0, 180.0, 45.0]])
    intensity = np.array([[10.0, 10.0, 10.0, 5.0]])  # last one is below 6.74 nm → masked
    settings = {k: PAPER_SETTINGS[k] for k in ("intensity", "direction")}
    out = preprocess({"intensity": intensity, "direction": direction}, settings).channels
    cos, sin = out["direction"][:, 0]
    np.testing.assert_allclose(cos, [0.0, 1.0, -1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(sin, [1.0, 0.0, 0.0, 0.0], atol=1e-7)
    assert out["direction"].shape == (2, 1, 4)
    # an invalid intensity pixel masks the direction there too, and both stay 0
    intensity[0, 0] = np.nan
    res = preprocess({"intensity": intensity, "direction": direction}, settings)
    assert not res.valid[0, 0] and (res.channels["direction"][:, 0, 0] == 0).all()


def test_radian_angles_and_blur_averages_unit_vectors() -> None:
    field = np.where(np.arange(64)[None, :] % 2 == 0, 0.1, 2 * np.pi - 0.1) * np.ones((64, 1))
    out = prep_one(field, ModalitySettings(angle_unit="rad", blur_sigma_px=2.0))
    # ±0.1 rad average to 0 rad, i.e. (cos 0.1, 0) in the interior – not π as raw angles would
    np.testing.assert_allclose(out[:, 20:40, 20:40].mean(axis=(1, 2)), [np.cos(0.1), 0], atol=1e-3)


def test_rotation_blur_sigma_10_times_100() -> None:
    field = np.zeros((101, 101))
    field[50, 50] = 1.0
    out = prep_one(field, PAPER_SETTINGS["rotation"])[0]
    np.testing.assert_allclose(out[50, 50], 100 * gaussian_2d(0, 0, 10.0), rtol=1e-5)
    np.testing.assert_allclose(out[50, 70], 100 * gaussian_2d(0, 20, 10.0), rtol=1e-5)


def test_exx_blur_3_times_200() -> None:
    field = np.random.default_rng(3).normal(scale=1e-3, size=(48, 48))
    out = prep_one(field, PAPER_SETTINGS["exx"])[0]
    ref = 200 * gaussian_filter(field, 3, mode="reflect", truncate=4)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_paper_settings_constants() -> None:
    p = PAPER_SETTINGS
    assert set(p) == {"exx", "intensity", "direction", "rotation"}
    assert (p["exx"].blur_sigma_px, p["exx"].scale, p["exx"].threshold) == (3.0, 200.0, None)
    assert p["intensity"].threshold == 6.74 and p["intensity"].scale == pytest.approx(1 / 25)
    assert p["intensity"].blur_sigma_px == 0.0
    assert p["direction"].angle_unit == "deg" and p["direction"].mask_by == "intensity"
    assert (p["rotation"].blur_sigma_px, p["rotation"].scale) == (10.0, 100.0)
    assert p["rotation"].angle_unit is None
    assert channel_names("direction", p["direction"]) == ["direction_cos", "direction_sin"]
    assert channel_names("exx", p["exx"]) == ["exx"]


def test_paper_preprocess_shapes_dtype_nan_and_joint_valid_mask() -> None:
    rng = np.random.default_rng(4)
    fields = {k: rng.uniform(0, 20, size=(30, 40)) for k in PAPER_SETTINGS}
    fields["exx"][3, 4] = np.nan
    fields["rotation"][10, 11] = np.inf
    before = {k: v.copy() for k, v in fields.items()}
    res = preprocess(fields, PAPER_SETTINGS)
    for k, v in fields.items():
        np.testing.assert_array_equal(v, before[k])  # inputs untouched
    assert res.valid.sum() == 30 * 40 - 2 and not res.valid[3, 4] and not res.valid[10, 11]
    for name, chans in res.channels.items():
        assert chans.dtype == np.float32 and np.isfinite(chans).all()
        assert chans.shape == (len(channel_names(name, PAPER_SETTINGS[name])), 30, 40)
        assert (chans[:, ~res.valid] == 0).all()
    assert set(res.step_seconds) == {"blur", "threshold", "scale", "angle", "mask", "nan"}


# --- settings and errors ------------------------------------------------------------------------


def test_settings_from_dict() -> None:
    s = ModalitySettings.from_dict({"blur_sigma_px": 3, "scale": 200})
    assert s == ModalitySettings(blur_sigma_px=3.0, scale=200.0)
    with pytest.raises(InputError, match="blur_sigma"):
        ModalitySettings.from_dict({"blur_sigma": 3})
    with pytest.raises(InputError, match=r"cfg \(angle_unit\).*'deg'"):
        ModalitySettings.from_dict({"angle_unit": "degrees"}, source="cfg")
    with pytest.raises(InputError, match="blur_sigma_px"):
        ModalitySettings.from_dict({"blur_sigma_px": -1})
    with pytest.raises(InputError, match="threshold"):
        ModalitySettings.from_dict({"threshold": "6.74"})
    with pytest.raises(InputError, match="scale"):
        ModalitySettings.from_dict({"scale": True})


def test_different_shapes_is_input_error() -> None:
    fields = {"exx": np.zeros((10, 10)), "rotation": np.zeros((10, 11))}
    settings = {k: PAPER_SETTINGS[k] for k in fields}
    with pytest.raises(InputError, match="differs") as info:
        preprocess(fields, settings)
    assert info.value.source == "rotation"


def test_all_nan_is_input_error_naming_modality() -> None:
    fields = {"exx": np.zeros((8, 8)), "rotation": np.full((8, 8), np.nan)}
    settings = {k: PAPER_SETTINGS[k] for k in fields}
    with pytest.raises(InputError, match="no finite") as info:
        preprocess(fields, settings)
    assert info.value.source == "rotation" and info.value.where == ""


def test_missing_modality_and_bad_mask_by_are_input_errors() -> None:
    with pytest.raises(InputError, match="missing"):
        preprocess({"exx": np.zeros((4, 4))}, PAPER_SETTINGS)
    with pytest.raises(InputError, match="mask_by"):
        preprocess({"direction": np.zeros((4, 4))}, {"direction": PAPER_SETTINGS["direction"]})
    chained = {"a": ModalitySettings(mask_by="b"), "b": ModalitySettings(mask_by="c")}
    chained["c"] = ModalitySettings()
    with pytest.raises(InputError, match="chains"):
        preprocess({k: np.ones((4, 4)) for k in chained}, chained)
    with pytest.raises(InputError, match="real-valued"):
        preprocess({"m": np.ones((4, 4), dtype=bool)}, BLUR3)
    with pytest.raises(InputError, match="2-D"):
        preprocess({"m": np.zeros((2, 4, 4))}, BLUR3)


# --- windows ------------------------------------------------------------------------------------


def test_window_grid_384_by_32() -> None:
    grid = window_grid((384, 384), 32)
    assert len(grid) == 144 and list(grid.columns) == ["row", "col", "y0", "x0"]
    assert grid.iloc[13].tolist() == [1, 1, 32, 32]
    assert grid.iloc[-1].tolist() == [11, 11, 352, 352]


def test_window_grid_drops_incomplete_edge_windows() -> None:
    grid = window_grid((100, 70), 32)
    assert (grid["row"].max() + 1, grid["col"].max() + 1) == (3, 2)
    assert sorted(set(grid["y0"])) == [0, 32, 64] and sorted(set(grid["x0"])) == [0, 32]
    assert len(window_grid((20, 20), 32)) == 0


def test_window_grid_with_stride() -> None:
    grid = window_grid((64, 64), 32, stride=16)
    assert len(grid) == 9 and sorted(set(grid["x0"])) == [0, 16, 32]
    with pytest.raises(ValueError, match="stride"):
        window_grid((64, 64), 32, stride=0)


@pytest.mark.parametrize("shape", [(3, 100, 70), (100, 70)])
def test_extract_windows_round_trip(shape: tuple[int, ...]) -> None:
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    grid = window_grid(shape[-2:], 32)
    windows = extract_windows(array, grid, 32)
    lead = shape[:-2]
    assert windows.shape == (len(grid), *lead, 32, 32)
    rebuilt = np.full_like(array, -1)
    for k, (y0, x0) in enumerate(grid[["y0", "x0"]].to_numpy()):
        rebuilt[..., y0 : y0 + 32, x0 : x0 + 32] = windows[k]
    covered = rebuilt != -1
    assert covered[..., :96, :64].all() and not covered[..., 96:, :].any()
    np.testing.assert_array_equal(rebuilt[covered], array[covered])


def test_extract_windows_outside_array_raises() -> None:
    grid = pd.DataFrame({"row": [0], "col": [0], "y0": [80], "x0": [0]})
    with pytest.raises(ValueError, match="outside"):
        extract_windows(np.zeros((100, 70)), grid, 32)


# --- split --------------------------------------------------------------------------------------


def test_largest_remainder() -> None:
    assert largest_remainder(10, (0.7, 0.2, 0.1)).tolist() == [7, 2, 1]
    assert largest_remainder(1, (0.7, 0.2, 0.1)).tolist() == [1, 0, 0]
    assert largest_remainder(2, (0.7, 0.2, 0.1)).tolist() == [2, 0, 0]  # 1.4, 0.4, 0.2: tie → train
    assert largest_remainder(7, (0.7, 0.2, 0.1)).tolist() == [5, 1, 1]  # 4.9, 1.4, 0.7
    assert largest_remainder(33, (0.7, 0.2, 0.1)).tolist() == [23, 7, 3]  # 23.1, 6.6, 3.3


def test_split_counts_per_material_and_ineligible() -> None:
    sizes = {"W_Invar": 100, "W_In718": 33, "AM_AB_Steel316": 7, "W_RX_In718": 1}
    materials = np.repeat(list(sizes), list(sizes.values()))
    eligible = np.ones(len(materials), dtype=bool)
    extra = np.array(["W_Invar"] * 20 + ["W_Cu77NiSn"] * 5)  # validation specimens
    materials = np.concatenate([materials, extra])
    eligible = np.concatenate([eligible, np.zeros(len(extra), dtype=bool)])
    labels = split_windows(materials, eligible, seed=3)
    expected = {m: largest_remainder(n, (0.7, 0.2, 0.1)).tolist() for m, n in sizes.items()}
    for m, counts in expected.items():
        got = [np.sum((materials == m) & (labels == s)) for s in ("train", "val", "test")]
        assert got == counts, m
        assert got[0] >= 1
    assert (labels[~eligible] == "none").all() and (labels[eligible] != "none").all()
    assert expected["W_Invar"] == [70, 20, 10]


def test_split_deterministic_with_seed_and_shuffled() -> None:
    materials = ["a"] * 50 + ["b"] * 30
    eligible = np.ones(80, dtype=bool)
    first = split_windows(materials, eligible, seed=7)
    np.testing.assert_array_equal(first, split_windows(materials, eligible, seed=7))
    assert not np.array_equal(first, split_windows(materials, eligible, seed=8))
    assert not (first[:35] == "train").all()  # random order, not the first 70 % of windows
    # material "a"'s split does not depend on another material being present
    only_a = split_windows(materials[:50], eligible[:50], seed=7)
    np.testing.assert_array_equal(first[:50], only_a)


def test_split_bad_fractions() -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_windows(["a"], np.array([True]), fractions=(0.5, 0.2, 0.1))


def test_largest_remainder_ties_are_not_decided_by_rounding_noise() -> None:
    from latentmech.dic.prep import largest_remainder

    # 18 × (0.7, 0.2, 0.1) = 12.6, 3.6, 1.8 in exact arithmetic: test gets one, the tie goes to train.
    assert largest_remainder(18, (0.7, 0.2, 0.1)).tolist() == [13, 3, 2]
