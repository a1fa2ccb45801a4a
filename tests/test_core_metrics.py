"""Metrics against hand values and scikit-image's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from latentmech.core.metrics import psnr, relative_error, ssim


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
