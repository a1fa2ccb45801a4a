"""Synthetic VEs: grain-size distribution, periodicity, elongation, textures, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.transform import Rotation

from latentmech.core.errors import InputError
from latentmech.ve import generate as gen
from latentmech.ve.generate import GrainSpec

#: The paper's Table 1 at 32³: same physical VE as 64³ at 0.25 units per voxel.
PAPER_32 = GrainSpec(5.78, 0.1, 5.0, (1, 1, 1), voxel_size=0.5)
PAPER_64 = GrainSpec(5.78, 0.1, (5.0, 5.0), (1, 1, 1), voxel_size=gen.PAPER_VOXEL_SIZE)


def _pooled(ves: list[np.ndarray]) -> dict[str, float]:
    measured = [gen.grain_size_stats(ids) for ids in ves]
    esd = np.concatenate([m["esd"] for m in measured])
    return {
        "esd_mean": esd.mean(),
        "esd_min": esd.min(),
        "esd_max": esd.max(),
        "ln_esd_std": np.log(esd).std(),
        "n_grains": np.mean([m["n_grains"] for m in measured]),
        "grains_per_face": np.mean([m["grains_per_face"] for m in measured]),
        "elongation": np.mean([m["elongation"] for m in measured]),
    }


def _tessellations(grains: GrainSpec, cells: int, count: int, seed: int, method: str = "fitted"):
    rng = np.random.default_rng(seed)
    return [gen.tessellate((cells,) * 3, grains, rng, method=method) for _ in range(count)]


# -- the size distribution ---------------------------------------------------------------------


def test_spec_reads_table_1_as_dream3d_does():
    assert PAPER_64.esd_voxels == pytest.approx(23.12)
    assert PAPER_32.cutoff_sigmas == (5.0, 5.0)
    low, high = PAPER_64.esd_bounds
    assert low == pytest.approx(23.12 * np.exp(-0.5)) and high == pytest.approx(23.12 * np.exp(0.5))
    # Arithmetic mean of the (barely) truncated log-normal: exp(mu + sigma² / 2).
    assert PAPER_64.expected_esd == pytest.approx(23.12 * np.exp(0.005), rel=1e-6)
    assert GrainSpec.from_dict({"esd_mean": 5.78, "aspect": [2, 1, 1]}).aspect == (2.0, 1.0, 1.0)


def test_sampled_esd_is_the_truncated_log_normal_and_fills_the_volume():
    grains = GrainSpec(10.0, esd_sigma=0.3, cutoff_sigmas=(1.0, 2.0))
    volume = 4e6
    esd = gen.sample_esd(grains, volume, np.random.default_rng(0))
    z = np.log(esd / 10.0) / 0.3
    assert z.min() >= -1.0 - 1e-9 and z.max() <= 2.0 + 1e-9
    assert stats.kstest(z, stats.truncnorm(-1.0, 2.0).cdf).pvalue > 0.01
    assert esd.mean() == pytest.approx(grains.expected_esd, rel=0.02)
    filled = np.pi / 6 * np.sum(esd**3)
    assert abs(filled - volume) <= np.pi / 6 * esd.max() ** 3


def test_paper_64_ves_follow_the_esd_distribution_with_about_ten_grains_per_face():
    measured = _pooled(_tessellations(PAPER_64, 64, 2, seed=1))
    assert measured["esd_mean"] == pytest.approx(PAPER_64.expected_esd, rel=0.03)
    assert measured["ln_esd_std"] == pytest.approx(0.1, abs=0.025)
    low, high = PAPER_64.esd_bounds
    assert measured["esd_min"] >= 0.95 * low and measured["esd_max"] <= 1.02 * high
    # "approximately 10 grains per face": ~15 distinct grains on a face, ~37 grains per VE.
    assert 8 <= measured["grains_per_face"] <= 20
    assert 30 <= measured["n_grains"] <= 46


def test_fitted_tessellation_reproduces_sigma_where_voronoi_and_laguerre_do_not():
    fitted = _pooled(_tessellations(PAPER_32, 32, 4, seed=2))
    voronoi = _pooled(_tessellations(PAPER_32, 32, 4, seed=2, method="voronoi"))
    laguerre = _pooled(_tessellations(PAPER_32, 32, 4, seed=2, method="laguerre"))
    assert fitted["ln_esd_std"] == pytest.approx(0.1, abs=0.02)
    assert voronoi["ln_esd_std"] > 0.12 and laguerre["ln_esd_std"] > 0.15
    assert fitted["esd_mean"] == pytest.approx(PAPER_32.expected_esd, rel=0.03)


def test_edge_case_grain_sizes_give_more_or_fewer_grains():
    paper = _pooled(_tessellations(PAPER_32, 32, 2, seed=3))
    small = _pooled(_tessellations(GrainSpec(2.73, voxel_size=0.5), 32, 2, seed=3))
    large = _pooled(_tessellations(GrainSpec(12.24, voxel_size=0.5), 32, 4, seed=3))
    assert small["n_grains"] / paper["n_grains"] == pytest.approx((5.78 / 2.73) ** 3, rel=0.2)
    assert large["n_grains"] < paper["n_grains"] / 5
    assert large["grains_per_face"] < paper["grains_per_face"] < small["grains_per_face"]
    assert small["esd_mean"] == pytest.approx(2.73 / 0.5 * np.exp(0.005), rel=0.03)


def test_aspect_2_1_1_elongates_grains_along_x_keeping_their_volume():
    elongated = GrainSpec(8.0, aspect=(2, 1, 1))
    measured = _pooled(_tessellations(elongated, 48, 1, seed=4))
    equiaxed = _pooled(_tessellations(GrainSpec(8.0), 48, 1, seed=4))
    assert measured["elongation"] == pytest.approx(2.0, abs=0.15)
    assert equiaxed["elongation"] == pytest.approx(1.0, abs=0.08)
    assert measured["esd_mean"] == pytest.approx(elongated.expected_esd, rel=0.04)


# -- periodicity, ids, determinism ---------------------------------------------------------------


def test_laguerre_tessellation_is_periodic_exactly():
    rng = np.random.default_rng(5)
    cells, size = np.array([24, 20, 16]), np.array([24.0, 40.0, 8.0])
    seeds, weights = rng.random((30, 3)) * size, rng.random(30) * 20
    labels = gen.laguerre_labels(cells, size, seeds, weights)
    shift = np.array([7, 3, 5])  # voxels
    moved = np.mod(seeds + shift * size / cells, size)
    rolled = np.roll(labels, tuple(shift), axis=(0, 1, 2))
    assert np.mean(gen.laguerre_labels(cells, size, moved, weights) == rolled) > 0.999


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_grains_continue_across_the_seam(axis):
    ids = _tessellations(PAPER_32, 32, 1, seed=6)[0]
    first, last = np.take(ids, 0, axis=axis), np.take(ids, -1, axis=axis)
    seam = np.mean(first != last)
    interior = np.mean(np.diff(ids, axis=axis) != 0)
    assert seam < 1.6 * interior  # no spurious boundary at the seam
    # A non-periodic tessellation of the same kind has one there.
    rng = np.random.default_rng(6)
    seeds = rng.random((40, 3)) * 32
    cut = gen._damask().GeomGrid.from_Voronoi_tessellation(
        [32] * 3, [32.0] * 3, seeds, periodic=False
    )
    cut_ids = np.asarray(cut.material)
    cut_seam = np.mean(np.take(cut_ids, 0, axis=axis) != np.take(cut_ids, -1, axis=axis))
    assert cut_seam > 3 * np.mean(np.diff(cut_ids, axis=axis) != 0)


def test_grain_ids_are_contiguous_int32():
    ids = gen.tessellate((20, 24, 28), GrainSpec(6.0), np.random.default_rng(7))
    assert ids.shape == (20, 24, 28) and ids.dtype == np.int32
    assert np.array_equal(np.unique(ids), np.arange(ids.max() + 1))


def test_generation_is_deterministic_for_a_seed():
    first = gen.generate_ves(2, (16,) * 3, GrainSpec(5.0), "brass", np.random.default_rng(8))
    again = gen.generate_ves(2, (16,) * 3, GrainSpec(5.0), "brass", np.random.default_rng(8))
    other = gen.generate_ves(2, (16,) * 3, GrainSpec(5.0), "brass", np.random.default_rng(9))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_generate_ves_gives_one_orientation_per_grain():
    eulers, ids = gen.generate_ves(
        3, (16, 12, 8), GrainSpec(5.0), "random", np.random.default_rng(10), dtype=np.float32
    )
    assert eulers.shape == (3, 16, 12, 8, 3) and eulers.dtype == np.float32
    assert ids.shape == (3, 16, 12, 8)
    for ve in range(3):
        per_grain = np.zeros((ids[ve].max() + 1, 3))
        per_grain[ids[ve]] = eulers[ve]
        assert np.array_equal(per_grain[ids[ve]], eulers[ve])  # constant within each grain
        assert len(np.unique(per_grain[:, 0])) == len(per_grain)  # distinct between grains
    assert eulers[..., 1].min() >= 0 and eulers[..., 1].max() <= np.pi
    assert eulers[..., [0, 2]].min() >= 0 and eulers[..., [0, 2]].max() < 2 * np.pi


# -- orientations ---------------------------------------------------------------------------------


def _circular_mean_deg(angles: np.ndarray) -> float:
    return float(np.rad2deg(np.angle(np.mean(np.exp(1j * angles)))) % 360)


@pytest.mark.parametrize("name", ["brass", "copper", "cube", "goss"])
def test_texture_components_have_their_mean_and_2_degree_scatter(name):
    eulers = gen.texture_eulers(20000, name, np.random.default_rng(11))
    assert eulers.shape == (20000, 3)
    for angle, mean in enumerate(gen.TEXTURES[name]):
        values = eulers[:, angle]
        if mean == 0:  # the paper's rule: noise made positive, nothing wraps around to 2π
            assert values.min() >= 0 and values.max() < np.deg2rad(12)
            assert np.rad2deg(values.mean()) == pytest.approx(2 * np.sqrt(2 / np.pi), rel=0.03)
        else:
            assert _circular_mean_deg(values) == pytest.approx(mean, abs=0.1)
            assert np.rad2deg(values.std()) == pytest.approx(2.0, rel=0.03)


def test_texture_names_are_case_insensitive_and_scatter_is_configurable():
    eulers = gen.texture_eulers(5000, "Goss", np.random.default_rng(12), scatter_deg=5.0)
    assert np.rad2deg(eulers[:, 1].std()) == pytest.approx(5.0, rel=0.05)
    exact = gen.texture_eulers(4, "copper", np.random.default_rng(12), scatter_deg=0.0)
    assert np.allclose(exact, np.deg2rad([90.0, 35.0, 45.0]))


def test_texture_near_the_range_ends_stays_in_range_as_the_same_rotation():
    eulers = gen.texture_eulers(5000, (359.0, 179.0, 1.0), np.random.default_rng(13))
    assert eulers[:, 1].max() <= np.pi and eulers[:, [0, 2]].max() < 2 * np.pi
    assert eulers.min() >= 0


def test_wrap_eulers_keeps_the_rotation():
    raw = np.random.default_rng(14).uniform(-4 * np.pi, 4 * np.pi, (2000, 3))
    wrapped = gen.wrap_eulers(raw)
    assert wrapped[:, 1].min() >= 0 and wrapped[:, 1].max() <= np.pi
    assert wrapped[:, [0, 2]].min() >= 0 and wrapped[:, [0, 2]].max() < 2 * np.pi
    before = Rotation.from_euler("ZXZ", raw).as_matrix()
    after = Rotation.from_euler("ZXZ", wrapped).as_matrix()
    assert np.allclose(before, after, atol=1e-12)


def test_random_texture_is_uniform_on_so3():
    eulers = gen.texture_eulers(20000, "random", np.random.default_rng(15))
    assert stats.kstest(np.cos(eulers[:, 1]), stats.uniform(-1, 2).cdf).pvalue > 0.01
    assert stats.kstest(eulers[:, 0], stats.uniform(0, 2 * np.pi).cdf).pvalue > 0.01
    assert stats.kstest(eulers[:, 2], stats.uniform(0, 2 * np.pi).cdf).pvalue > 0.01
    # Same distribution of rotation angles as damask's own uniform sampling.
    damask = gen._damask()
    ours = damask.Rotation.from_Euler_angles(eulers).quaternion[..., 0]
    theirs = damask.Rotation.from_random(20000, rng_seed=15).quaternion[..., 0]
    assert stats.ks_2samp(np.abs(ours), np.abs(theirs)).pvalue > 0.01
    # The test has power: Φ uniform in [0, π] (a common mistake) is rejected.
    wrong = np.random.default_rng(15).uniform(0, np.pi, 20000)
    assert stats.kstest(np.cos(wrong), stats.uniform(-1, 2).cdf).pvalue < 1e-6


# -- measurements and errors -----------------------------------------------------------------------


def test_grain_size_stats_on_two_slabs():
    ids = np.zeros((8, 6, 4), dtype=int)
    ids[4:] = 1
    measured = gen.grain_size_stats(ids)
    assert measured["n_grains"] == 2
    assert np.allclose(measured["esd"], np.cbrt(6 * 96 / np.pi))
    assert measured["intercept"][0] == 4.0 and np.isinf(measured["intercept"][1:]).all()
    assert measured["grains_per_face"] == pytest.approx(10 / 6)


def test_unknown_texture_names_the_known_ones():
    with pytest.raises(InputError, match=r"'rolled'.*brass.*copper.*cube.*goss.*random"):
        gen.texture_eulers(3, "rolled", np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"esd_mean": -1.0}, "esd_mean"),
        ({"esd_mean": 5.0, "esd_sigma": -0.1}, "esd_sigma"),
        ({"esd_mean": 5.0, "cutoff_sigmas": (5.0, -1.0)}, "cutoff_sigmas"),
        ({"esd_mean": 5.0, "aspect": (2.0, 1.0)}, "aspect"),
        ({"esd_mean": 5.0, "aspect": (2.0, 0.0, 1.0)}, "aspect"),
        ({"esd_mean": 5.0, "voxel_size": 0.0}, "voxel_size"),
        ({"esd_mean": 0.1}, "esd_mean"),  # grains smaller than a voxel
    ],
)
def test_invalid_grain_spec(kwargs, field):
    with pytest.raises(InputError, match=field):
        GrainSpec(**kwargs)


def test_other_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="unknown keys"):
        GrainSpec.from_dict({"esd_mean": 5.0, "esd": 3.0})
    with pytest.raises(InputError, match="cells"):
        gen.tessellate((16, 16), GrainSpec(5.0), rng)
    with pytest.raises(InputError, match="cells"):
        gen.tessellate((16, 0, 16), GrainSpec(5.0), rng)
    with pytest.raises(InputError, match="method"):
        gen.tessellate((16,) * 3, GrainSpec(5.0), rng, method="packing")
    with pytest.raises(InputError, match="scatter_deg"):
        gen.texture_eulers(3, "cube", rng, scatter_deg=-2.0)
    with pytest.raises(InputError, match="3 angles"):
        gen.texture_eulers(3, (10.0, 20.0), rng)
