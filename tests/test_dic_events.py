"""Tests of slip-event detection (latentmech.dic.events) on synthetic HR-DIC slip-intensity maps.

The maps are drawn with OpenCV like the preprocessed data the detector sees: thin (1–2 px)
bands on an exactly-zero background, intensities of order 0.3–3 (nm / 25), parallel families
per grain, crossing families 60° apart, gently wavy bands, isolated noise specks and NaN holes
(filled with 0, flagged in ``valid``). Truth label maps come from drawing each band on its own.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest

from latentmech.core.errors import InputError
from latentmech.dic.events import (
    EVENT_COLUMNS,
    EventSettings,
    MatchResult,
    detect_events,
    match_events,
)

SETTINGS = EventSettings()
SHIFT = 4  # sub-pixel bits for cv2 drawing


# --------------------------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------------------------


def _direction(angle_deg: float) -> np.ndarray:
    """Unit trace direction in (x, y) image coordinates for an angle counter-clockwise, y up."""
    t = math.radians(angle_deg)
    return np.array([math.cos(t), -math.sin(t)])


def _polyline(shape: tuple[int, int], pts: np.ndarray, width: int) -> np.ndarray:
    """Boolean mask of a 1- or 2-px wide polyline through (x, y) points."""
    canvas = np.zeros(shape, np.uint8)
    p = np.round(np.asarray(pts) * (1 << SHIFT)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [p], False, 1, 1, cv2.LINE_8, SHIFT)
    if width > 1:
        canvas = cv2.dilate(canvas, np.ones((2, 2), np.uint8))
    return canvas.astype(bool)


def _segment(center: tuple[float, float], angle_deg: float, length: float) -> np.ndarray:
    """End points (x, y) of a straight segment of ``length`` px."""
    d = _direction(angle_deg) * length / 2
    c = np.asarray(center, float)
    return np.stack([c - d, c + d])


def _wave(
    center: tuple[float, float], angle_deg: float, length: float, amp: float, wavelength: float
) -> np.ndarray:
    """Points (x, y) of a sinusoidal band along ``angle_deg`` (a cross-slip trace)."""
    t = np.arange(-length / 2, length / 2 + 0.5, 1.0)
    d = _direction(angle_deg)
    n = np.array([-d[1], d[0]])
    off = amp * np.sin(2 * np.pi * t / wavelength)
    return np.asarray(center, float) + t[:, None] * d + off[:, None] * n


class _Canvas:
    """Intensity map plus truth labels; at crossings the brighter band owns the pixel."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.intensity = np.zeros(shape, np.float32)
        self.truth = np.zeros(shape, np.int32)
        self.n = 0

    def add(self, band: np.ndarray, value: float | np.ndarray) -> None:
        if not band.any():
            return
        self.n += 1
        value = np.broadcast_to(np.asarray(value, np.float32), (int(band.sum()),))
        ys, xs = np.nonzero(band)
        wins = value >= self.intensity[ys, xs]
        self.truth[ys[wins], xs[wins]] = self.n
        self.intensity[ys[wins], xs[wins]] = value[wins]


def _relabel_visible(truth: np.ndarray, min_extent: float) -> np.ndarray:
    """Renumber truth densely, dropping bands whose bounding-box diagonal is below min_extent."""
    ids = np.unique(truth[truth > 0])
    out = np.zeros_like(truth)
    k = 0
    for i in ids:
        ys, xs = np.nonzero(truth == i)
        if math.hypot(np.ptp(ys), np.ptp(xs)) + 1 >= min_extent:
            k += 1
            out[truth == i] = k
    return out


def _grain_scene(seed: int, size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A polycrystal patch: 5–10 Voronoi grains with 1–2 slip families each, specks and holes.

    Families: spacing 4–8 px (at least width + 3 so neighbours do not touch), width 1–2 px,
    one intensity per band (0.4–3.0 with ±20 % pixel noise), a second family 60° from the
    first, 35 % of families gently wavy (amplitude 1–2 px, wavelength 30–60 px), 30 % of
    possible bands inactive. Bands end at grain boundaries. Truth keeps the bands that stay at
    least 2 × min_length_px long after clipping and holes.
    """
    rng = np.random.default_rng(seed)
    n_grains = int(rng.integers(5, 11))
    seeds = rng.uniform(0, size, (n_grains, 2))
    yy, xx = np.mgrid[:size, :size]
    grain = ((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2).argmin(-1)
    canvas = _Canvas((size, size))
    for g in range(n_grains):
        inside = grain == g
        gy, gx = np.nonzero(inside)
        y0, x0 = gy.min(), gx.min()
        sub = inside[y0 : gy.max() + 1, x0 : gx.max() + 1]
        cy, cx = sub.shape[0] / 2, sub.shape[1] / 2
        reach = math.hypot(cy, cx) + 4
        first_angle = rng.uniform(0, 180)
        for family in range(int(rng.integers(1, 3))):
            angle = first_angle + 60 * family
            width = int(rng.integers(1, 3))
            spacing = rng.uniform(3 + width, 8)
            wavy = rng.random() < 0.35
            amp, wavelength = (rng.uniform(1, 2) if wavy else 0.0), rng.uniform(30, 60)
            phase = rng.uniform(0, 2 * np.pi)
            d = _direction(angle)
            normal = np.array([-d[1], d[0]])
            t = np.arange(-reach, reach, 1.0)
            for offset in np.arange(-reach, reach, spacing):
                if rng.random() < 0.3:
                    continue
                off = offset + amp * np.sin(2 * np.pi * t / wavelength + phase)
                pts = np.array([cx, cy]) + t[:, None] * d + off[:, None] * normal
                band = _polyline(sub.shape, pts, width) & sub
                full = np.zeros((size, size), bool)
                full[y0 : y0 + sub.shape[0], x0 : x0 + sub.shape[1]] = band
                value = rng.uniform(0.4, 3.0) * rng.uniform(0.8, 1.2, int(band.sum()))
                canvas.add(full, value)
    valid = np.ones((size, size), bool)
    for _ in range(int(rng.integers(3, 7))):  # NaN holes, filled with 0
        c, r = rng.uniform(0, size, 2), rng.uniform(1, 3)
        valid &= (yy - c[0]) ** 2 + (xx - c[1]) ** 2 > r * r
    intensity = canvas.intensity
    _add_specks(intensity, rng, density=0.002)
    intensity[~valid] = 0
    truth = canvas.truth.copy()
    truth[~valid] = 0
    return intensity, valid, _relabel_visible(truth, 2 * SETTINGS.min_length_px)


def _add_specks(intensity: np.ndarray, rng: np.random.Generator, density: float) -> None:
    """DIC noise surviving the threshold: isolated single pixels and 2×2 blobs on background."""
    h, w = intensity.shape
    n = int(density * h * w)
    sy, sx = rng.integers(0, h - 1, n), rng.integers(0, w - 1, n)
    blob = rng.random(n) < 0.3
    value = rng.uniform(0.3, 1.0, n)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        sel = blob | ((dy == 0) & (dx == 0))
        y, x = sy[sel] + dy, sx[sel] + dx
        empty = intensity[y, x] == 0
        intensity[y[empty], x[empty]] = value[sel][empty]


def _two_families(
    size: int = 160, angles: tuple[float, float] = (20.0, 80.0), spacing: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """Two full-field families crossing at 60°, random widths and intensities."""
    rng = np.random.default_rng(7)
    canvas = _Canvas((size, size))
    c = np.array([size / 2, size / 2])
    for angle in angles:
        d = _direction(angle)
        normal = np.array([-d[1], d[0]])
        for offset in np.arange(-size, size, spacing):
            pts = np.stack([c + offset * normal - d * size, c + offset * normal + d * size])
            band = _polyline((size, size), pts, int(rng.integers(1, 3)))
            canvas.add(band, rng.uniform(0.4, 3.0))
    return canvas.intensity, _relabel_visible(canvas.truth, 2 * SETTINGS.min_length_px)


def _valid(intensity: np.ndarray) -> np.ndarray:
    return np.ones(intensity.shape, bool)


# --------------------------------------------------------------------------------------------
# (a) isolated straight bands: count, angle, length, angle convention
# --------------------------------------------------------------------------------------------


def test_isolated_straight_bands_give_one_event_each_with_angle_and_length() -> None:
    size = 200
    drawn = [  # (centre x, y), angle, length, width
        ((50, 50), 0.0, 60.0, 1),
        ((150, 50), 35.0, 50.0, 2),
        ((50, 150), 90.0, 40.0, 1),
        ((150, 150), 150.0, 70.0, 2),
        ((100, 100), 118.0, 30.0, 1),
    ]
    intensity = np.zeros((size, size), np.float32)
    for k, (c, angle, length, width) in enumerate(drawn):
        intensity[_polyline((size, size), _segment(c, angle, length), width)] = 0.5 + k

    labels, table = detect_events(intensity, _valid(intensity), SETTINGS, pixel_size_um=0.5)

    assert labels.dtype == np.int32 and labels.shape == intensity.shape
    assert len(table) == len(drawn)
    assert list(table.columns) == list(EVENT_COLUMNS)
    assert set(np.unique(labels)) == set(range(len(drawn) + 1))
    for c, angle, length, _ in drawn:
        row = table.iloc[
            ((table.centroid_x_px - c[0]) ** 2 + (table.centroid_y_px - c[1]) ** 2).argmin()
        ]
        assert math.hypot(row.centroid_x_px - c[0], row.centroid_y_px - c[1]) < 2
        diff = abs(row.angle_deg - angle) % 180
        assert min(diff, 180 - diff) <= 3, (angle, row.angle_deg)
        assert row.length_um == pytest.approx(0.5 * length, rel=0.10)
        assert 0 <= row.angle_deg < 180
    # every band pixel belongs to an event and the table agrees with the label map
    assert ((labels > 0) == (intensity > 0)).all()
    assert table.n_pixels.tolist() == np.bincount(labels.ravel())[1:].tolist()


def test_angle_is_counter_clockwise_from_x_with_rows_downward() -> None:
    # a band running from bottom-left to top-right: rows decrease as columns increase
    intensity = np.zeros((64, 64), np.float32)
    for i in range(40):
        intensity[50 - i, 10 + i] = 1.0
    _, table = detect_events(intensity, _valid(intensity), SETTINGS)
    assert len(table) == 1
    assert table.angle_deg.iloc[0] == pytest.approx(45.0, abs=1.0)
    assert table.mean_intensity.iloc[0] == pytest.approx(1.0)
    assert table.max_intensity.iloc[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# (b) crossing families are separated
# --------------------------------------------------------------------------------------------


def test_two_families_crossing_at_60_degrees_are_separated() -> None:
    intensity, truth = _two_families()
    labels, table = detect_events(intensity, _valid(intensity), SETTINGS)
    result = match_events(truth, labels, min_overlap=0.5)
    assert result.recall >= 0.9, result
    assert result.precision >= 0.9, result
    # events follow one of the two families, not a mixture
    families = np.array([20.0, 80.0])
    diff = np.abs(table.angle_deg.to_numpy()[:, None] - families) % 180
    assert (np.minimum(diff, 180 - diff).min(1) <= 5).mean() >= 0.9


def test_crossing_pixel_goes_to_the_brighter_band() -> None:
    size = 96
    intensity = np.zeros((size, size), np.float32)
    dim = _polyline((size, size), _segment((48, 48), 10.0, 70), 1)
    bright = _polyline((size, size), _segment((48, 48), 70.0, 70), 1)
    intensity[dim] = 0.5
    intensity[bright] = 2.0
    labels, table = detect_events(intensity, _valid(intensity), SETTINGS)
    assert len(table) == 2
    bright_id = int(table.event[table.mean_intensity.idxmax()])
    assert (labels[dim & bright] == bright_id).all()
    # away from the crossing neighbourhood the dim band is one event on both sides of it
    near = cv2.dilate(bright.view(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    dim_ids = np.unique(labels[dim & ~near])
    assert dim_ids.size == 1 and dim_ids[0] != bright_id


# --------------------------------------------------------------------------------------------
# (c) wavy band stays one event
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("angle", "amp", "wavelength"), [(0.0, 2.0, 40.0), (60.0, 1.5, 30.0), (135.0, 2.0, 50.0)]
)
def test_wavy_band_is_one_event(angle: float, amp: float, wavelength: float) -> None:
    size = 200
    intensity = np.zeros((size, size), np.float32)
    intensity[_polyline((size, size), _wave((100, 100), angle, 150, amp, wavelength), 1)] = 1.2
    _, table = detect_events(intensity, _valid(intensity), SETTINGS)
    assert len(table) == 1
    diff = abs(table.angle_deg.iloc[0] - angle) % 180
    assert min(diff, 180 - diff) <= 5
    assert table.length_um.iloc[0] == pytest.approx(150, rel=0.1)


def test_parallel_wavy_bands_stay_separate() -> None:
    size = 160
    intensity = np.zeros((size, size), np.float32)
    truth = np.zeros((size, size), np.int32)
    for k, off in enumerate((-12, -6, 0, 6, 12)):
        band = _polyline((size, size), _wave((80, 80 + off), 0.0, 130, 2.0, 40.0), 1 + k % 2)
        intensity[band] = 0.5 + 0.4 * k
        truth[band] = k + 1
    labels, table = detect_events(intensity, _valid(intensity), SETTINGS)
    result = match_events(truth, labels)
    assert len(table) == 5
    assert result.recall == 1.0 and result.precision == 1.0


# --------------------------------------------------------------------------------------------
# (d) noise, (e) empty, invalid pixels
# --------------------------------------------------------------------------------------------


def test_isolated_noise_specks_give_no_events() -> None:
    intensity = np.zeros((256, 256), np.float32)
    _add_specks(intensity, np.random.default_rng(3), density=0.004)
    assert (intensity > 0).sum() > 250
    labels, table = detect_events(intensity, _valid(intensity), SETTINGS)
    assert len(table) == 0
    assert not labels.any()


def test_empty_map_gives_no_events_and_an_empty_table() -> None:
    intensity = np.zeros((64, 80), np.float32)
    labels, table = detect_events(intensity, _valid(intensity), SETTINGS)
    assert labels.shape == (64, 80) and labels.dtype == np.int32 and not labels.any()
    assert isinstance(table, pd.DataFrame) and len(table) == 0
    assert list(table.columns) == list(EVENT_COLUMNS)
    assert table.event.dtype == np.int64 and table.n_pixels.dtype == np.int64


def test_invalid_pixels_never_become_events_and_small_holes_do_not_cut_bands() -> None:
    size = 128
    intensity = np.zeros((size, size), np.float32)
    band = _polyline((size, size), _segment((64, 64), 25.0, 100), 2)
    intensity[band] = 1.0
    valid = np.ones((size, size), bool)
    cv2.circle(valid.view(np.uint8), (64, 64), 3, 0, -1)  # a NaN hole across the band
    intensity[~valid] = 0
    intensity[5:9, 5:40] = np.nan  # an unfilled NaN patch is treated as invalid too
    labels, table = detect_events(intensity, valid, SETTINGS)
    assert len(table) == 1
    assert not labels[~valid].any()
    assert not labels[5:9, 5:40].any()


def test_threshold_and_min_length_settings_act() -> None:
    size = 100
    intensity = np.zeros((size, size), np.float32)
    intensity[_polyline((size, size), _segment((30, 30), 0.0, 40), 1)] = 0.2  # faint
    intensity[_polyline((size, size), _segment((50, 70), 0.0, 10), 1)] = 1.0  # short
    intensity[_polyline((size, size), _segment((50, 50), 45.0, 40), 1)] = 1.0
    _, default = detect_events(intensity, _valid(intensity), SETTINGS)
    assert len(default) == 3
    _, strict = detect_events(
        intensity, _valid(intensity), EventSettings(threshold=0.5, min_length_px=15)
    )
    assert len(strict) == 1 and strict.angle_deg.iloc[0] == pytest.approx(45, abs=3)


# --------------------------------------------------------------------------------------------
# (f) matching on hand-made label maps
# --------------------------------------------------------------------------------------------


def _hand_made_maps() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((40, 60), np.int32)
    truth[5, 5:45] = 1
    truth[15, 5:45] = 2
    truth[25, 5:45] = 3
    detected = np.zeros_like(truth)
    detected[5, 5:45] = 4  # exact copy of truth 1
    detected[16, 8:45] = 7  # truth 2, one row off and a little short
    detected[35, 10:30] = 9  # false positive; truth 3 is missed
    return truth, detected


def test_match_events_counts_recall_and_precision() -> None:
    truth, detected = _hand_made_maps()
    result = match_events(truth, detected, min_overlap=0.5, tolerance_px=1)
    assert isinstance(result, MatchResult)
    assert (result.n_truth, result.n_detected) == (3, 3)
    assert (result.n_matched_truth, result.n_matched_detected) == (2, 2)
    assert result.recall == pytest.approx(2 / 3)
    assert result.precision == pytest.approx(2 / 3)
    assert result.pairs[["truth_id", "event_id"]].values.tolist() == [[1, 4], [2, 7]]
    assert result.pairs.overlap.iloc[0] == pytest.approx(1.0)
    # truth 2 is covered at columns 7..44 (within 1 px of 8..44), the event lies fully on it
    assert result.pairs.truth_covered.iloc[1] == pytest.approx(38 / 40)
    assert result.pairs.event_on_truth.iloc[1] == pytest.approx(1.0)
    assert result.pairs.overlap.iloc[1] == pytest.approx(38 / 40)


def test_match_events_tolerance_and_min_overlap() -> None:
    truth, detected = _hand_made_maps()
    strict = match_events(truth, detected, min_overlap=0.5, tolerance_px=0)
    assert strict.n_matched_truth == 1 and strict.recall == pytest.approx(1 / 3)
    # an event covering 40 % of a band does not recover it at min_overlap 0.5 …
    partial = np.zeros_like(truth)
    partial[5, 5:21] = 1
    assert match_events(truth, partial).n_matched_truth == 0
    # … but does at 0.4, and an event half on the band, half off, is not a match at 0.6
    assert match_events(truth, partial, min_overlap=0.4).n_matched_truth == 1
    band = np.zeros_like(truth)
    band[5, 10:40] = 1
    straddle = np.zeros_like(truth)
    straddle[5, 10:40] = 1
    straddle[9, 10:40] = 1  # 4 px away: outside the tolerance
    assert match_events(band, straddle, min_overlap=0.6).n_matched_detected == 0
    assert match_events(band, straddle, min_overlap=0.5).n_matched_detected == 1


def test_match_events_empty_maps() -> None:
    empty = np.zeros((10, 10), np.int32)
    one = empty.copy()
    one[2, 1:9] = 1
    r = match_events(one, empty)
    assert (r.n_truth, r.n_detected, r.recall) == (1, 0, 0.0) and math.isnan(r.precision)
    r = match_events(empty, one)
    assert math.isnan(r.recall) and r.precision == 0.0
    assert list(r.pairs.columns)[:3] == ["truth_id", "event_id", "overlap"]
    with pytest.raises(InputError, match="shape"):
        match_events(one, np.zeros((5, 5), np.int32))


# --------------------------------------------------------------------------------------------
# Realistic scene
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_realistic_polycrystal_scene(seed: int) -> None:
    intensity, valid, truth = _grain_scene(seed)
    assert truth.max() > 40  # a dense scene, not a trivial one
    labels, table = detect_events(intensity, valid, SETTINGS)
    result = match_events(truth, labels, min_overlap=0.5, tolerance_px=1)
    assert result.recall >= 0.8, result
    assert result.precision >= 0.8, result
    assert not labels[~valid].any()
    assert len(table) == labels.max()


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def test_settings_from_dict_and_validation() -> None:
    s = EventSettings.from_dict({"threshold": 0.1, "orientation_bins": 16})
    assert s == EventSettings(threshold=0.1, orientation_bins=16)
    assert EventSettings.from_dict({}) == EventSettings()
    with pytest.raises(InputError, match="min_lenght_px"):
        EventSettings.from_dict({"min_lenght_px": 5})
    with pytest.raises(InputError, match="orientation_bins"):
        EventSettings(orientation_bins=2)
    with pytest.raises(InputError, match="min_length_px"):
        EventSettings(min_length_px=0)
    with pytest.raises(InputError, match="valid"):
        detect_events(np.zeros((8, 8)), np.ones((4, 4), bool), SETTINGS)
