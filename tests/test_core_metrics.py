"""Metrics against hand values and the reference implementations of scikit-image and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio
from sklearn.metrics import r2_score as sk_r2

from latentmech.core.metrics import (
    mean_relative_error,
    psnr,
    r2_score,
    relative_error,
    scaled_mean_relative_error,
    ssim,
)


def test_psnr_uses_the_original_windows_maximum() -> None:
    original = np.zeros((2, 1, 4, 4))
    original[0, 0, 0, 0] = 2.0
    original[1, 0, 0, 0] = 0.5
    noisy = original + 0.1  # MSE 0.01
    np.testing.assert_allclose(
        psnr(original, noisy), [10 * math.log10(4 / 0.01), 10 * math.log10(0.25 / 0.01)]
    )
    # scikit-image with data_range = the window's maximum gives the same number
    assert psnr(original, noisy)[0] == pytest.approx(
        peak_signal_noise_ratio(original[0], noisy[0], data_range=2.0)
    )
    assert psnr(original, original)[0] == math.inf
    assert math.isnan(psnr(np.zeros((1, 4)), np.ones((1, 4)))[0])


def test_ssim_is_one_for_identity_and_lower_for_noise() -> None:
    rng = np.random.default_rng(0)
    original = rng.random((3, 2, 16, 16))
    values = ssim(original, original)
    np.testing.assert_allclose(values, 1.0)
    noisy = ssim(original, original + rng.normal(0, 0.2, original.shape))
    assert np.all(noisy < 0.9)
    constant = np.ones((1, 1, 8, 8))
    assert math.isnan(ssim(constant, constant)[0])


def test_relative_error() -> None:
    np.testing.assert_allclose(
        relative_error([110.0, 90.0, -5.0], [100.0, 100.0, -4.0]), [0.1, 0.1, 0.25]
    )


def test_mean_relative_error_eq5_and_scaled_variant() -> None:
    ref = np.array([[1.0, -2.0, 4.0, 0.0]])
    rec = np.array([[1.5, -1.0, 4.0, 3.0]])
    # |0.5|/1, |1|/2, 0/4; the zero reference is left out
    assert mean_relative_error(rec, ref) == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    per_channel = mean_relative_error(np.array([[1.0, 3.0], [2.0, 2.0]]),
                                      np.array([[2.0, 2.0], [2.0, 4.0]]), channel_axis=1)  # fmt: skip
    np.testing.assert_allclose(per_channel, [(0.5 + 0.0) / 2, (0.5 + 0.5) / 2])
    scaled_ref = np.array([0.005, 0.5, 0.02, 1.0])
    scaled_rec = np.array([0.5, 0.55, 0.01, 0.9])
    # 0.005 < 0.01 is left out: (0.1 + 0.5 + 0.1) / 3
    assert scaled_mean_relative_error(scaled_rec, scaled_ref) == pytest.approx(0.7 / 3)


def test_r2_against_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(20, 6, 2, 2, 2))
    pred = ref + 0.3 * rng.normal(size=ref.shape)
    assert r2_score(pred, ref) == pytest.approx(sk_r2(ref.ravel(), pred.ravel()))
    per = r2_score(pred, ref, channel_axis=1)
    for ch in range(6):
        assert per[ch] == pytest.approx(sk_r2(ref[:, ch].ravel(), pred[:, ch].ravel()))
    assert r2_score(ref, ref) == 1.0
