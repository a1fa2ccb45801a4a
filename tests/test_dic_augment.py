"""Intensity-evolution augmentation: per-event linear trends and rescaled event masks."""

from __future__ import annotations

import numpy as np
import pytest

from latentmech.dic import augment


def _specimen() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two events whose intensity is exactly linear in strain, on a noisy-free background of 0.3."""
    strains = np.array([0.2, 0.5, 1.0, 1.6])
    labels = np.zeros((8, 10), dtype=np.int64)
    labels[1:3, :] = 1
    labels[5, 2:9] = 2
    steps = []
    for eps in strains:
        field = np.full(labels.shape, 0.3)
        field[labels == 1] = 5.0 + 20.0 * eps
        field[labels == 2] = 40.0 * eps
        steps.append(field)
    return np.stack(steps), labels, strains


def test_event_means_and_trends_recover_the_lines() -> None:
    values, labels, strains = _specimen()
    means = augment.event_means(values, labels)
    assert means.shape == (4, 3)
    np.testing.assert_allclose(means[:, 1], 5.0 + 20.0 * strains)
    trends = augment.fit_trends(means, strains)
    np.testing.assert_allclose(trends.slope[1:], [20.0, 40.0])
    np.testing.assert_allclose(trends.intercept[1:], [5.0, 0.0], atol=1e-12)


def test_event_means_ignore_nan_pixels() -> None:
    values, labels, strains = _specimen()
    values[0, 1, 0] = np.nan  # a pixel of event 1 missing at step 0
    means = augment.event_means(values, labels)
    assert means[0, 1] == pytest.approx(5.0 + 20.0 * strains[0])


def test_evolving_to_a_measured_strain_gives_that_steps_events() -> None:
    values, labels, strains = _specimen()
    trends = augment.fit_trends(augment.event_means(values, labels), strains)
    evolved = augment.evolve_intensity(values[1], labels, trends, strains[1], strains[2])
    np.testing.assert_allclose(evolved[labels > 0], values[2][labels > 0])
    np.testing.assert_array_equal(evolved[labels == 0], values[1][labels == 0])
    same = augment.evolve_intensity(values[1], labels, trends, strains[1], strains[1])
    np.testing.assert_array_equal(same, values[1])


def test_unusable_trends_leave_events_unchanged() -> None:
    trends = augment.EventTrends(slope=np.array([0.0, -10.0, 5.0]), intercept=np.zeros(3))
    factors = augment.scale_factors(trends, strain=1.0, target_strain=1.05)
    np.testing.assert_allclose(factors, [1.0, 1.0, 1.05])


def test_single_step_trend_is_proportional_to_strain() -> None:
    trends = augment.fit_trends(np.array([[0.0, 12.0]]), np.array([0.6]))
    assert trends.at(1.2)[1] == pytest.approx(24.0)


def test_jittered_strains_stay_within_five_percent() -> None:
    strains = augment.jitter_strains(0.8, 1000, np.random.default_rng(0))
    assert strains.min() >= 0.8 * 0.95 and strains.max() <= 0.8 * 1.05
    assert strains.min() < 0.8 * 0.96 and strains.max() > 0.8 * 1.04  # the whole range is used


def test_stress_interpolation_and_linear_extrapolation() -> None:
    strains, stresses = np.array([1.0, 0.0, 2.0]), np.array([300.0, 200.0, 350.0])
    got = augment.interpolate_stress(strains, stresses, np.array([-1.0, 0.5, 1.5, 3.0]))
    np.testing.assert_allclose(got, [100.0, 250.0, 325.0, 400.0])
