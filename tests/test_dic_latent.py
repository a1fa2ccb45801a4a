"""Latent maps: batched encoding, grid placement and mirrored maps."""

from __future__ import annotations

import numpy as np
import torch

from latentmech.dic import latent
from latentmech.dic.vae import VAE, VAEConfig


def _model() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(in_channels=2, window_px=16, channels=(4, 8), kernel_size=3, latent_dim=6))


def test_batched_encoding_equals_one_window_at_a_time() -> None:
    model = _model()
    windows = np.random.default_rng(0).normal(size=(37, 2, 16, 16)).astype(np.float32)
    mu, sigma = latent.encode(model, windows, batch_size=8)
    with torch.no_grad():
        for i in (0, 17, 36):
            m, log_var = model.encoder(torch.from_numpy(windows[i : i + 1]))
            np.testing.assert_allclose(mu[i], m[0].numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(sigma[i], torch.exp(0.5 * log_var)[0].numpy(), rtol=1e-5)
    assert (sigma > 0).all()


def test_values_land_on_their_grid_cells() -> None:
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    grid = latent.to_grid(values, np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), (3, 2))
    assert grid.shape == (3, 2, 3)
    np.testing.assert_array_equal(grid[1, 1], values[2])
    np.testing.assert_array_equal(grid[2, 0], values[3])
    assert np.isnan(grid[1, 0]).all() and np.isnan(grid[2, 1]).all()


def test_mirrored_windows_and_grid_give_the_mirror_image_of_the_map() -> None:
    rng = np.random.default_rng(1)
    whole = rng.normal(size=(2, 8, 12)).astype(
        np.float32
    )  # (C, y, x): a 2 × 3 grid of 4-px windows
    rows, cols = np.repeat(np.arange(2), 3), np.tile(np.arange(3), 2)
    windows = np.stack(
        [whole[:, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] for r, c in zip(rows, cols, strict=True)]
    )
    channels = ["direction_cos", "direction_sin"]
    for flip_x, flip_y in latent.REFLECTIONS:
        mirrored = latent.mirror(windows, channels, flip_x, flip_y)
        r, c = latent.mirror_grid(rows, cols, (2, 3), flip_x, flip_y)
        rebuilt = np.zeros_like(whole)
        for i in range(len(r)):
            rebuilt[:, 4 * r[i] : 4 * r[i] + 4, 4 * c[i] : 4 * c[i] + 4] = mirrored[i]
        expected = whole[:, :, ::-1] if flip_x else whole
        expected = expected[:, ::-1] if flip_y else expected
        sign = -1.0 if flip_x != flip_y else 1.0  # one mirror flips the sense of the angle
        np.testing.assert_array_equal(rebuilt[0], expected[0])
        np.testing.assert_array_equal(rebuilt[1], sign * expected[1])
