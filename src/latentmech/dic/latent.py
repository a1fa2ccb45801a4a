"""Latent maps: every window of a measurement encoded by a VAE and put back on the window grid.

A latent map has dimensions (y, x, latent): cell (r, c) holds μ and σ of the window at grid row r
and column c (paper Fig. 9(A)). The property CNN reads crops of these maps; the UMAP of Fig. 12
reads their μ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from latentmech.dic.vae import REFLECTION_ODD_CHANNELS, VAE

#: The four mirror images of a map used as augmentations: (flip along x, flip along y).
REFLECTIONS = ((False, False), (True, False), (False, True), (True, True))


@torch.no_grad()
def encode(model: VAE, windows: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """μ and σ (N, latent) of windows (N, C, W, W), in batches, with the model in eval mode."""
    model.eval()
    latent = model.config.latent_dim
    mu = np.empty((len(windows), latent), dtype=np.float32)
    sigma = np.empty_like(mu)
    for start in range(0, len(windows), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch_size]))
        m, log_var = model.encoder(x.float())
        mu[start : start + len(x)] = m.numpy()
        sigma[start : start + len(x)] = torch.exp(0.5 * log_var).numpy()
    return mu, sigma


def to_grid(
    values: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Per-window values (N, …) placed at (row, col) of a (rows, cols, …) grid; NaN elsewhere."""
    grid = np.full((*shape, *values.shape[1:]), np.nan, dtype=np.float32)
    grid[np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)] = values
    return grid


def mirror(windows: np.ndarray, channels: Sequence[str], flip_x: bool, flip_y: bool) -> np.ndarray:
    """Windows (N, C, W, W) of a mirrored map: each window mirrored, odd channels' signs flipped.

    The grid positions are mirrored by the caller (:func:`mirror_grid`); together they give the
    windows of the mirror image of the whole map.
    """
    out = windows
    if flip_x:
        out = out[..., ::-1]
    if flip_y:
        out = out[..., ::-1, :]
    if flip_x != flip_y:
        sign = np.array([-1.0 if c in REFLECTION_ODD_CHANNELS else 1.0 for c in channels])
        out = out * sign.astype(out.dtype)[:, None, None]
    return np.ascontiguousarray(out)


def mirror_grid(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], flip_x: bool, flip_y: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Grid positions of the windows in the mirrored map."""
    rows = shape[0] - 1 - rows if flip_y else rows
    cols = shape[1] - 1 - cols if flip_x else cols
    return rows, cols
