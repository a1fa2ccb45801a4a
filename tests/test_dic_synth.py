"""Synthetic HR-DIC generator: reproducibility, geometry, field consistency and properties."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.measure import regionprops

from latentmech.core.errors import InputError
from latentmech.dic import synth
from latentmech.dic.synth import (
    DEFAULT_MATERIALS,
    MaterialSpec,
    SynthSettings,
    macroscopic_stress,
    material_properties,
    synthesize,
)

NOISELESS = SynthSettings(
    shape_px=(256, 256), noise_nm=0.0, strain_noise=0.0, rotation_noise_rad=0.0, hole_fraction=0.0
)
SMALL = SynthSettings(shape_px=(192, 192))


def _spec(**changes: object) -> MaterialSpec:
    base = MaterialSpec(
        name="T_test",
        grain_size_um=20.0,
        grain_size_sigma=0.4,
        band_spacing_um=4.0,
        active_systems=2,
        wavy=0.2,
        intensity_nm_per_pct=30.0,
        intensity_sigma=0.5,
        strain_pct=(0.2, 0.5, 1.0, 1.6),
    )
    return dataclasses.replace(base, **changes)


def _digest(m: synth.SynthMap) -> str:
    h = hashlib.sha256()
    for a in (m.exx, m.intensity, m.direction, m.rotation, m.band_labels, m.grain_ids):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(pd.util.hash_pandas_object(m.bands, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _line_fit(labels: np.ndarray, bands: pd.DataFrame) -> pd.DataFrame:
    """Per band: centroid offset along the trace normal (px) and RMS distance to its line (px)."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    theta = np.radians(bands.set_index("band").loc[lab, "trace_angle_deg"].to_numpy())
    p = -(xs + 0.5) * np.sin(theta) + (ys + 0.5) * np.cos(theta)
    df = pd.DataFrame({"band": lab, "p": p})
    stats = df.groupby("band")["p"].agg(["mean", "std", "size"])
    return bands.set_index("band").join(stats.rename(columns={"mean": "p_mean", "std": "p_rms"}))


# ------------------------------------------------------------------------------ reproducibility


def test_bit_identical_twice_and_across_the_cache() -> None:
    spec = _spec()
    first = synthesize(spec, 0, 1, SMALL, seed=7)
    synth._specimen.cache_clear()
    second = synthesize(spec, 0, 1, SMALL, seed=7)
    third = synthesize(spec, 0, 1, SMALL, seed=7)  # from the cache
    assert _digest(first) == _digest(second) == _digest(third)
    assert first.exx.dtype == np.float32 and first.band_labels.dtype == np.int32
    assert first.grain_ids.dtype == np.int32


def test_bit_identical_in_another_process() -> None:
    """Seeds come from SHA-256, not hash(): a fresh interpreter with another hash seed agrees."""
    spec = _spec(name="T_proc")
    settings = SynthSettings(shape_px=(96, 96))
    here = _digest(synthesize(spec, 2, 3, settings, seed=11))
    code = (
        "import dataclasses, sys; sys.path.insert(0, sys.argv[1]);"
        "import test_dic_synth as t; from latentmech.dic import synth as s;"
        "print(t._digest(s.synthesize(t._spec(name='T_proc'), 2, 3,"
        " s.SynthSettings(shape_px=(96, 96)), seed=11)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(__file__)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert out.stdout.strip() == here


def test_specimens_and_seeds_differ() -> None:
    spec = _spec()
    a = synthesize(spec, 0, 0, SMALL, seed=1)
    b = synthesize(spec, 1, 0, SMALL, seed=1)
    c = synthesize(spec, 0, 0, SMALL, seed=2)
    assert not np.array_equal(a.grain_ids, b.grain_ids)
    assert not np.array_equal(a.grain_ids, c.grain_ids)
    assert not np.array_equal(a.band_labels, b.band_labels)


def test_step_out_of_range_is_an_error() -> None:
    with pytest.raises(IndexError, match="out of range"):
        synthesize(_spec(), 0, 4, SMALL, seed=0)


# ------------------------------------------------------------------------------ steps


def test_steps_share_bands_and_intensity_grows_with_strain() -> None:
    spec = _spec()
    maps = [synthesize(spec, 0, k, NOISELESS, seed=3) for k in range(4)]
    first = maps[0]
    assert first.bands["band"].tolist() == list(range(1, len(first.bands) + 1))
    assert set(np.unique(first.band_labels)) - {0} == set(first.bands["band"])
    on = first.band_labels > 0
    for k, m in enumerate(maps[1:], start=1):
        np.testing.assert_array_equal(m.band_labels, first.band_labels)
        np.testing.assert_array_equal(m.grain_ids, first.grain_ids)
        geometry = ["band", "grain", "system", "trace_angle_deg", "wavy", "length_um", "n_pixels"]
        pd.testing.assert_frame_equal(m.bands[geometry], first.bands[geometry])
        ratio = spec.strain_pct[k] / spec.strain_pct[0]
        np.testing.assert_allclose(m.intensity[on] / first.intensity[on], ratio, rtol=1e-5)
        np.testing.assert_allclose(
            m.bands["intensity_nm"] / first.bands["intensity_nm"], ratio, rtol=1e-12
        )
        # rotation grows linearly with strain too (noiseless)
        np.testing.assert_allclose(m.rotation, first.rotation * ratio, rtol=1e-4, atol=1e-9)


def test_band_table_matches_the_maps() -> None:
    m = synthesize(_spec(), 0, 2, NOISELESS, seed=5)
    counts = np.bincount(m.band_labels.ravel(), minlength=len(m.bands) + 1)[1:]
    np.testing.assert_array_equal(counts, m.bands["n_pixels"].to_numpy())
    # every band lies in the grain the table names
    ys, xs = np.nonzero(m.band_labels)
    grains = m.bands.set_index("band").loc[m.band_labels[ys, xs], "grain"].to_numpy()
    np.testing.assert_array_equal(m.grain_ids[ys, xs], grains)
    # peak intensity of a band's core equals its table intensity (Gaussian profile, taper <= 1)
    peak = pd.Series(m.intensity[ys, xs]).groupby(m.band_labels[ys, xs]).max()
    table = m.bands.set_index("band")["intensity_nm"]
    assert (peak <= table.loc[peak.index] * (1 + 1e-5)).all()
    assert (peak > 0.5 * table.loc[peak.index]).mean() > 0.9
    assert m.bands["rate_nm_per_pct"].mean() == pytest.approx(30.0, rel=1e-9)
    assert (m.bands["length_um"] > 0).all()


# ------------------------------------------------------------------------------ geometry


def test_grain_size_median_close_to_spec() -> None:
    spec = _spec(grain_size_um=10.0, grain_size_sigma=0.4, active_systems=1)
    settings = dataclasses.replace(NOISELESS, shape_px=(384, 384))
    medians, spreads = [], []
    for specimen in range(2):
        g = synthesize(spec, specimen, 0, settings, seed=0).grain_ids
        border = np.unique(np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]]))
        ecd = np.array(
            [r.equivalent_diameter_area for r in regionprops(g) if r.label not in border]
        )
        ecd *= settings.pixel_size_um
        medians.append(np.median(ecd))
        spreads.append(np.std(np.log(ecd)))
    assert np.mean(medians) == pytest.approx(10.0, rel=0.12)
    assert np.mean(spreads) == pytest.approx(0.4, abs=0.12)


def test_larger_grain_sigma_gives_wider_distribution() -> None:
    settings = dataclasses.replace(NOISELESS, shape_px=(384, 384))
    spread = {}
    for sigma in (0.2, 0.8):
        g = synthesize(_spec(grain_size_um=10.0, grain_size_sigma=sigma), 0, 0, settings, 0)
        ecd = np.array([r.equivalent_diameter_area for r in regionprops(g.grain_ids)])
        spread[sigma] = np.std(np.log(ecd))
    assert spread[0.8] > spread[0.2] + 0.2


def test_band_spacing_perpendicular_to_traces_close_to_spec() -> None:
    spec = _spec(grain_size_um=40.0, band_spacing_um=4.0, active_systems=1, wavy=0.0)
    m = synthesize(spec, 0, 3, NOISELESS, seed=2)
    fit = _line_fit(m.band_labels, m.bands)
    gaps = [
        np.diff(np.sort(family["p_mean"].to_numpy()))
        for _, family in fit.groupby("grain")
        if len(family) >= 3
    ]
    spacing_um = np.mean(np.concatenate(gaps)) * NOISELESS.pixel_size_um
    assert spacing_um == pytest.approx(4.0, rel=0.2)


def test_bands_stay_inside_grains_and_planar_bands_are_straight() -> None:
    planar = synthesize(_spec(wavy=0.0), 0, 3, NOISELESS, seed=4)
    fit = _line_fit(planar.band_labels, planar.bands)
    long = fit[fit["size"] >= 10]
    assert long["p_rms"].median() < 0.6  # a rasterised straight line of width ~1.5 px


def test_wavy_bands_are_less_straight_than_planar_ones() -> None:
    def bulkiness(wavy: float) -> float:
        """1 - eccentricity of the bands' inertia ellipses: 0 for a perfect line."""
        spec = _spec(wavy=wavy, grain_size_um=30.0, band_spacing_um=6.0)
        m = synthesize(spec, 0, 3, NOISELESS, seed=4)
        props = regionprops(m.band_labels)
        return 1.0 - float(np.median([p.eccentricity for p in props if p.area >= 20]))

    assert bulkiness(1.0) > 4 * bulkiness(0.0)
    m = synthesize(_spec(wavy=1.0), 0, 3, NOISELESS, seed=4)
    fit = _line_fit(m.band_labels, m.bands)
    assert fit.loc[fit["size"] >= 20, "p_rms"].median() > 1.0
    assert m.bands["wavy"].all()
    assert not synthesize(_spec(wavy=0.0), 0, 3, NOISELESS, seed=4).bands["wavy"].any()


def test_active_systems_bound_the_number_of_trace_directions() -> None:
    for n in (1, 3):
        m = synthesize(_spec(active_systems=n), 0, 3, NOISELESS, seed=1)
        per_grain = m.bands.groupby("grain")["system"].nunique()
        assert per_grain.max() <= n
        if n == 3:
            assert per_grain.max() == 3


# ------------------------------------------------------------------------------ fields


def test_holes_cover_the_set_fraction_identically_in_all_modalities() -> None:
    settings = SynthSettings(shape_px=(256, 256), hole_fraction=0.01)
    m = synthesize(_spec(), 0, 2, settings, seed=9)
    masks = [np.isnan(a) for a in m.modalities().values()]
    for mask in masks[1:]:
        np.testing.assert_array_equal(mask, masks[0])
    frac = masks[0].mean()
    assert 0.01 <= frac <= 0.012
    # holes are small blobs, not scattered pixels
    _, n_blobs = ndimage.label(masks[0])
    assert masks[0].sum() / n_blobs > 8
    # same holes at every step of the specimen
    other = synthesize(_spec(), 0, 0, settings, seed=9)
    np.testing.assert_array_equal(np.isnan(other.exx), masks[0])
    assert not np.isnan(synthesize(_spec(), 0, 0, NOISELESS, seed=9).exx).any()


def test_exx_follows_band_slip_resolved_on_the_tensile_axis() -> None:
    spec = _spec()
    m = synthesize(spec, 0, 3, NOISELESS, seed=6)
    on = m.band_labels > 0
    assert (m.exx[on] > 0).mean() > 0.99
    assert m.exx[on].mean() > 2 * m.exx[~on].mean()
    assert np.corrcoef(m.exx[on], m.intensity[on])[0, 1] > 0.3
    # exact decomposition: exx = slip |sin θ cos(θ + α)| / h + per-grain background
    table = m.bands.set_index("band")
    ys, xs = np.nonzero(on)
    lab = m.band_labels[ys, xs]
    theta = np.radians(table.loc[lab, "trace_angle_deg"].to_numpy())
    alpha = np.radians(table.loc[lab, "shear_angle_deg"].to_numpy())
    h_nm = NOISELESS.band_width_px * NOISELESS.pixel_size_um * 1e3
    band_part = m.intensity[ys, xs] * np.abs(np.sin(theta) * np.cos(theta + alpha)) / h_nm
    off = (m.band_labels == 0) & (m.intensity == 0)
    background = pd.Series(m.exx[off]).groupby(m.grain_ids[off]).median()
    grains = m.grain_ids[ys, xs]
    known = np.isin(grains, background.index)
    residual = m.exx[ys, xs][known] - band_part[known] - background.loc[grains[known]].to_numpy()
    assert np.median(np.abs(residual)) < 1e-6
    # mean exx is the macroscopic plastic strain (bands + homogeneous part)
    assert float(m.exx.mean()) == pytest.approx(spec.strain_pct[3] / 100, rel=0.15)


def test_direction_is_the_band_shear_angle_on_visible_bands() -> None:
    m = synthesize(_spec(intensity_sigma=0.2), 0, 3, SMALL, seed=8)
    on = (m.band_labels > 0) & (m.intensity > 20)
    shear = m.bands.set_index("band").loc[m.band_labels[on], "shear_angle_deg"].to_numpy()
    diff = np.abs((m.direction[on] - shear + 90) % 180 - 90)
    assert np.median(diff) < 5
    off = (m.band_labels == 0) & (m.intensity < 6.74) & ~np.isnan(m.direction)
    values = m.direction[off]
    assert values.min() >= 0 and values.max() < 180
    assert np.std(values) == pytest.approx(180 / math.sqrt(12), rel=0.05)  # uniform


def test_noise_levels_follow_settings() -> None:
    m = synthesize(_spec(), 0, 0, SMALL, seed=3)
    quiet = synthesize(_spec(), 0, 0, dataclasses.replace(SMALL, hole_fraction=0.003), seed=3)
    clean = synthesize(
        _spec(), 0, 0, dataclasses.replace(NOISELESS, shape_px=SMALL.shape_px), seed=3
    )
    ok = ~np.isnan(m.exx)
    assert np.std(m.exx[ok] - clean.exx[ok]) == pytest.approx(SMALL.strain_noise, rel=0.05)
    assert np.std(m.rotation[ok] - clean.rotation[ok]) == pytest.approx(
        SMALL.rotation_noise_rad, rel=0.05
    )
    background = ok & (clean.intensity == 0)
    assert np.sqrt(np.mean(m.intensity[background] ** 2)) == pytest.approx(SMALL.noise_nm, rel=0.1)
    np.testing.assert_array_equal(m.intensity, quiet.intensity)


def test_rotation_is_smooth_within_grains_and_grows_with_strain() -> None:
    spec = _spec(grain_size_um=30.0)
    lo = synthesize(spec, 0, 0, NOISELESS, seed=2).rotation
    hi = synthesize(spec, 0, 3, NOISELESS, seed=2).rotation
    assert np.abs(hi).mean() == pytest.approx(np.abs(lo).mean() * 1.6 / 0.2, rel=1e-4)
    jumps = np.abs(np.diff(hi, axis=1))
    g = synthesize(spec, 0, 3, NOISELESS, seed=2).grain_ids
    same = g[:, 1:] == g[:, :-1]
    assert np.median(jumps[same]) < 0.1 * np.median(jumps[~same])


def test_default_materials_differ_in_band_statistics() -> None:
    assert len(DEFAULT_MATERIALS) >= 6
    assert len({s.name for s in DEFAULT_MATERIALS}) == len(DEFAULT_MATERIALS)
    for spec in DEFAULT_MATERIALS:
        assert len(spec.strain_pct) == 4 and list(spec.strain_pct) == sorted(spec.strain_pct)
    params = np.array(
        [
            [s.grain_size_um, s.band_spacing_um, s.wavy, s.intensity_nm_per_pct]
            for s in DEFAULT_MATERIALS
        ]
    )
    assert len({tuple(row) for row in params}) == len(DEFAULT_MATERIALS)
    settings = SynthSettings(shape_px=(128, 128))
    density = [
        (synthesize(s, 0, 3, settings, seed=0).band_labels > 0).mean() for s in DEFAULT_MATERIALS
    ]
    assert max(density) > 2 * min(density)


# ------------------------------------------------------------------------------ properties


def test_properties_in_table4_ranges_and_distinct() -> None:
    table = pd.DataFrame([material_properties(s, seed=0) for s in DEFAULT_MATERIALS])
    assert list(table.columns) == ["YS", "Q", "b", "UTS", "El", "FS"]
    bounds = {
        "YS": (250, 1250),
        "Q": (80, 350),
        "b": (15, 55),
        "UTS": (450, 1500),
        "El": (8, 40),
        "FS": (250, 720),
    }
    for key, (lo, hi) in bounds.items():
        assert table[key].between(lo, hi).all(), key
    assert (table["UTS"] > table["YS"]).all()
    assert table.round(0).drop_duplicates().shape[0] == len(DEFAULT_MATERIALS)
    assert table["YS"].max() / table["YS"].min() > 3


def test_properties_seeded_noise_is_small_and_reproducible() -> None:
    spec = DEFAULT_MATERIALS[0]
    a = material_properties(spec, seed=1)
    assert a == material_properties(spec, seed=1)
    b = material_properties(spec, seed=2)
    exact = material_properties(spec, seed=1, rel_noise=0.0)
    assert a != b
    for key in a:
        assert a[key] == pytest.approx(exact[key], rel=0.051)


def test_hall_petch_and_localisation_trends() -> None:
    ys = [material_properties(_spec(grain_size_um=d), seed=0)["YS"] for d in (5, 10, 20, 40, 80)]
    assert all(a > b for a, b in itertools.pairwise(ys))
    exact = [material_properties(_spec(grain_size_um=d), 0, rel_noise=0)["YS"] for d in (10, 40)]
    # Hall–Petch: YS(d) - YS(4d) = k (1/sqrt(d) - 1/sqrt(4d))
    assert exact[0] - exact[1] == pytest.approx(300 * (1 / math.sqrt(10) - 1 / math.sqrt(40)))
    fs = [material_properties(_spec(intensity_nm_per_pct=r), 0)["FS"] for r in (10.0, 30.0, 90.0)]
    assert fs[0] > fs[1] > fs[2]
    el = [material_properties(_spec(band_spacing_um=lam), 0)["El"] for lam in (2.0, 8.0)]
    assert el[0] > el[1]


def test_macroscopic_stress_is_voce() -> None:
    props = {"YS": 400.0, "Q": 200.0, "b": 30.0}
    assert macroscopic_stress(props, 0.0) == 400.0
    assert macroscopic_stress(props, 1.0) == pytest.approx(400 + 200 * (1 - math.exp(-0.3)))
    assert macroscopic_stress(props, 100.0) == pytest.approx(600.0, rel=1e-6)
    assert macroscopic_stress(props, 0.5) < macroscopic_stress(props, 1.0)


# ------------------------------------------------------------------------------ configs


def test_material_from_dict_round_trip_and_errors() -> None:
    d = _spec().to_dict()
    assert isinstance(d["strain_pct"], list)
    assert MaterialSpec.from_dict(d) == _spec()
    with pytest.raises(InputError, match=r"unknown key.*'colour'"):
        MaterialSpec.from_dict({**d, "colour": "red"})
    missing = {k: v for k, v in d.items() if k != "wavy"}
    with pytest.raises(InputError, match=r"missing key.*'wavy'"):
        MaterialSpec.from_dict(missing)
    with pytest.raises(InputError, match="active_systems"):
        MaterialSpec.from_dict({**d, "active_systems": 2.5})
    with pytest.raises(InputError, match=r"active_systems in 1\.\.3"):
        MaterialSpec.from_dict({**d, "active_systems": 4})
    with pytest.raises(InputError, match=r"wavy in \[0, 1\]"):
        MaterialSpec.from_dict({**d, "wavy": 1.5})
    with pytest.raises(InputError, match="strain_pct"):
        MaterialSpec.from_dict({**d, "strain_pct": "1,2"})
    with pytest.raises(InputError, match=r"my\.yaml \(materials\[2\]\)"):
        MaterialSpec.from_dict({**d, "colour": 1}, source="my.yaml", where="materials[2]")


def test_settings_from_dict() -> None:
    assert SynthSettings.from_dict({}) == SynthSettings()
    s = SynthSettings.from_dict({"shape_px": [128, 96], "noise_nm": 1})
    assert s.shape_px == (128, 96) and s.noise_nm == 1.0
    assert SynthSettings.from_dict(s.to_dict()) == s
    with pytest.raises(InputError, match=r"unknown key.*'noise'"):
        SynthSettings.from_dict({"noise": 1.0})
    with pytest.raises(InputError, match="shape_px"):
        SynthSettings.from_dict({"shape_px": [128]})
    assert synthesize(_spec(), 0, 0, s, seed=0).exx.shape == (128, 96)


def test_default_material_lookup() -> None:
    assert synth.default_material("W_In718") is DEFAULT_MATERIALS[2]
    assert synth.default_material("W_Invar").name == "W_Invar"
    with pytest.raises(InputError, match="unknown material 'Unobtainium'"):
        synth.default_material("Unobtainium")
