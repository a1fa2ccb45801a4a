"""Reconstruction and prediction metrics with their exact definitions.

* PSNR of a reconstruction against the **maximum of the original window** (HR-DIC paper: the
  data have no fixed range such as 0–255, so the peak is the window's own maximum):
  ``10 log10(max(x)² / MSE(x, x̂))``.
* SSIM: the structural similarity of Wang et al. (2004) with scikit-image's implementation
  (Gaussian-weighted windows σ = 1.5, K1 = 0.01, K2 = 0.03) and the data range of the original
  window (max − min), computed per window and channel and averaged over channels.
* Relative error of a prediction: ``|ŷ − y| / |y|``.
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
