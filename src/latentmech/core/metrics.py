"""Reconstruction and prediction metrics with their exact definitions.

* PSNR of a reconstruction against the **maximum of the original window** (HR-DIC paper: the
  data have no fixed range such as 0–255, so the peak is the window's own maximum):
  ``10 log10(max(x)² / MSE(x, x̂))``.
* SSIM: the structural similarity of Wang et al. (2004) with scikit-image's implementation
  (Gaussian-weighted windows σ = 1.5, K1 = 0.01, K2 = 0.03) and the data range of the original
  window (max − min), computed per window and channel and averaged over channels.
* Relative error of a prediction: ``|ŷ − y| / |y|``.
* Mean relative error of a field reconstruction, Eq. 5 of the alloy paper (003), in physical
  units, and beside it the variant the authors' public code reports (min–max scaled values,
  entries whose scaled reference is at least 0.01).
* R², the coefficient of determination, pooled over all entries or per channel.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def psnr(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """PSNR (dB) per window of (N, …) arrays, peak = each original window's maximum.

    A perfect reconstruction gives +inf; a window whose maximum is ≤ 0 gives NaN (no peak).
    """
    original = np.asarray(original, dtype=np.float64)
    reconstruction = np.asarray(reconstruction, dtype=np.float64)
    axes = tuple(range(1, original.ndim))
    mse = np.mean((original - reconstruction) ** 2, axis=axes)
    peak = np.max(original, axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 10.0 * np.log10(peak**2 / mse)
    return np.where(peak > 0, value, np.nan)


def ssim(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """SSIM per window of (N, C, H, W) arrays (mean over channels); NaN for a constant window."""
    original = np.asarray(original, dtype=np.float64)
    reconstruction = np.asarray(reconstruction, dtype=np.float64)
    n, c = original.shape[:2]
    values = np.full((n, c), np.nan)
    for i in range(n):  # per window: scikit-image computes one SSIM map at a time
        for j in range(c):
            data_range = float(original[i, j].max() - original[i, j].min())
            if data_range > 0:
                values[i, j] = structural_similarity(
                    original[i, j], reconstruction[i, j], data_range=data_range,
                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                )  # fmt: skip
    return np.nanmean(values, axis=1) if c > 1 else values[:, 0]


def relative_error(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``|predicted − true| / |true|`` element-wise."""
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    return np.abs(predicted - true) / np.abs(true)


def mean_relative_error(
    reconstruction: np.ndarray, reference: np.ndarray, channel_axis: int | None = None
) -> float | np.ndarray:
    """Eq. 5: the mean over all blocks of all samples of |rec − ref| / |ref| (physical values).

    ``channel_axis`` None: one number over every entry; an axis: one MRE per channel (Eq. 5
    is written per stress component). Entries whose reference is exactly 0 have no relative
    error and are left out.
    """
    rec, ref = _float64(reconstruction), _float64(reference)
    ok = ref != 0
    error = np.where(ok, np.abs(rec - ref) / np.where(ok, np.abs(ref), 1.0), 0.0)
    if channel_axis is None:
        return float(error[ok].mean())
    return _per_channel(error, ok, channel_axis)


def scaled_mean_relative_error(
    reconstruction: np.ndarray, reference: np.ndarray, threshold: float = 0.01,
    channel_axis: int | None = None,
) -> float | np.ndarray:  # fmt: skip
    """The MRE the authors' public code reports: on min–max scaled values, over the entries
    whose scaled reference is ≥ ``threshold`` (0.01), mean of |rec − ref| / |ref|.

    The threshold keeps the entries near the training minimum (scaled 0), whose relative error
    is huge, out of the mean; the value is therefore not comparable to :func:`mean_relative_error`.
    """
    rec, ref = _float64(reconstruction), _float64(reference)
    ok = ref >= threshold
    error = np.where(ok, np.abs(rec - ref) / np.where(ok, np.abs(ref), 1.0), 0.0)
    if channel_axis is None:
        return float(error[ok].mean()) if ok.any() else float("nan")
    return _per_channel(error, ok, channel_axis)


def r2_score(
    prediction: np.ndarray, reference: np.ndarray, channel_axis: int | None = None
) -> float | np.ndarray:
    """Coefficient of determination 1 − Σ(ref − pred)² / Σ(ref − mean(ref))².

    Over every entry (``channel_axis`` None: the paper's Fig. 4 pools all blocks), or per
    channel (mean and sums over the other axes).
    """
    pred, ref = _float64(prediction), _float64(reference)
    if channel_axis is None:
        return float(1.0 - np.sum((ref - pred) ** 2) / np.sum((ref - ref.mean()) ** 2))
    p = np.moveaxis(pred, channel_axis, 0).reshape(pred.shape[channel_axis], -1)
    q = np.moveaxis(ref, channel_axis, 0).reshape(ref.shape[channel_axis], -1)
    residual = np.sum((q - p) ** 2, axis=1)
    total = np.sum((q - q.mean(axis=1, keepdims=True)) ** 2, axis=1)
    return 1.0 - residual / total


def _float64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _per_channel(error: np.ndarray, ok: np.ndarray, axis: int) -> np.ndarray:
    e = np.moveaxis(error, axis, 0).reshape(error.shape[axis], -1)
    m = np.moveaxis(ok, axis, 0).reshape(ok.shape[axis], -1)
    with np.errstate(invalid="ignore"):
        return e.sum(axis=1) / m.sum(axis=1)
