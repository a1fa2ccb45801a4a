"""The physically based intensity-evolution augmentation of the property CNN (paper Fig. 10(C)).

The paper: the intensity of each slip event grows about linearly with macroscopic plastic strain;
following each event through the measured deformation steps gives its trend, and new windows are
made by scaling the pixels of each event mask to the intensity the trend gives at a strain within
±5 % of the measured one. Only existing events change; none are added or removed.

Choices where the paper is silent (configurable in ``dic.cnn.augment``):

* An event is the detector's mask at the step being augmented; its intensity at the specimen's
  other steps is the mean over the *same pixels* (the maps of one specimen share a grid). The
  trend is the least-squares line through (strain, mean intensity) of all steps; with a single
  step it is a line through the origin (intensity ∝ strain).
* "Within ±5 %" is relative: the target strain is ``ε·(1 + δ)`` with δ uniform in [−0.05, 0.05].
* The scale factor of an event is ``I(ε')/I(ε)`` of its fitted line; where the fit is not
  positive at ε (no usable trend) the event is left unchanged, and factors are floored at 0.
* The macroscopic stress of the new strain is interpolated piecewise-linearly between the
  measured (strain, stress) pairs of the specimen, extrapolated linearly beyond them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EventTrends:
    """Per-event line ``intensity = intercept + slope · strain`` (index = event id, 0 unused)."""

    slope: np.ndarray
    intercept: np.ndarray

    def at(self, strain: float) -> np.ndarray:
        return self.intercept + self.slope * strain


def event_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (S, …) inside each event of ``labels`` (…) for every step: (S, E + 1).

    NaN pixels are left out of the means; an event with no finite pixel at a step gets NaN.
    """
    steps = values.shape[0]
    n_events = int(labels.max(initial=0)) + 1
    flat = values.reshape(steps, -1)
    finite = np.isfinite(flat)
    index = labels.reshape(-1)[None, :] + n_events * np.arange(steps)[:, None]
    sums = np.bincount(index.ravel(), weights=np.where(finite, flat, 0.0).ravel(),
                       minlength=steps * n_events)  # fmt: skip
    counts = np.bincount(index.ravel(), weights=finite.ravel(), minlength=steps * n_events)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).reshape(steps, n_events)


def fit_trends(means: np.ndarray, strains: np.ndarray) -> EventTrends:
    """Least-squares line per event through (strain, mean intensity) over the finite steps."""
    strains = np.asarray(strains, dtype=np.float64)[:, None]
    ok = np.isfinite(means)
    y = np.where(ok, means, 0.0)
    n = ok.sum(axis=0)
    if len(strains) == 1:
        slope = np.where(n > 0, y[0] / strains[0], 0.0)
        return EventTrends(slope=slope, intercept=np.zeros_like(slope))
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean = (strains * ok).sum(axis=0) / n
        y_mean = y.sum(axis=0) / n
        dx = np.where(ok, strains - x_mean, 0.0)
        var = (dx**2).sum(axis=0)
        slope = np.where(var > 0, (dx * (y - y_mean)).sum(axis=0) / var, 0.0)
        intercept = np.where(n > 0, y_mean - slope * x_mean, 0.0)
    return EventTrends(slope=np.nan_to_num(slope), intercept=np.nan_to_num(intercept))


def scale_factors(trends: EventTrends, strain: float, target_strain: float) -> np.ndarray:
    """``I(target)/I(strain)`` per event; 1 where the trend is not positive at ``strain``."""
    now = trends.at(strain)
    with np.errstate(invalid="ignore", divide="ignore"):
        factors = np.where(now > 0, trends.at(target_strain) / now, 1.0)
    factors = np.clip(np.nan_to_num(factors, nan=1.0), 0.0, None)
    factors[0] = 1.0  # background is never scaled
    return factors


def evolve_intensity(
    values: np.ndarray, labels: np.ndarray, trends: EventTrends, strain: float,
    target_strain: float,
) -> np.ndarray:  # fmt: skip
    """``values`` (…) with each event's pixels scaled to its trend at ``target_strain``."""
    factors = scale_factors(trends, strain, target_strain)
    return (values * factors[labels]).astype(values.dtype, copy=False)


def jitter_strains(
    strain: float, count: int, rng: np.random.Generator, relative: float = 0.05
) -> np.ndarray:
    """``count`` strains uniform in ``strain·[1 − relative, 1 + relative]``."""
    return strain * (1.0 + rng.uniform(-relative, relative, size=count))


def interpolate_stress(strains: np.ndarray, stresses: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Piecewise-linear stress at ``target`` strains, extrapolated linearly at both ends."""
    order = np.argsort(strains)
    x = np.asarray(strains, dtype=np.float64)[order]
    y = np.asarray(stresses, dtype=np.float64)[order]
    target = np.asarray(target, dtype=np.float64)
    if len(x) == 1:
        return np.full_like(target, y[0])
    inside = np.interp(target, x, y)
    low = y[0] + (target - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
    high = y[-1] + (target - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2])
    return np.where(target < x[0], low, np.where(target > x[-1], high, inside))
