"""Figure helpers shared by the studies: headless matplotlib, atomic PNG writes, map panels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are written by batch jobs without a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from latentmech.core.store import atomic_path

#: Colour maps per kind of field: diverging for signed fields, cyclic for angles.
_CMAPS = {"signed": "RdBu_r", "positive": "viridis", "angle": "twilight"}


def save_figure(fig: Figure, target: str | Path, dpi: int = 150) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(target)


def _robust_limits(values: np.ndarray, signed: bool) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    if signed:
        bound = float(np.percentile(np.abs(finite), 99.5)) or 1.0
        return -bound, bound
    low, high = np.percentile(finite, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _kind(units: str, values: np.ndarray) -> str:
    if units in ("degree", "rad") and np.nanmax(np.abs(values)) > 3.5:
        return "angle"
    return "signed" if np.nanmin(values) < 0 else "positive"


def modality_panels(
    maps: Mapping[str, np.ndarray],
    attrs: Mapping[str, Mapping[str, Any]],
    pixel_um: float,
    grid: pd.DataFrame | None = None,
    window_px: int = 0,
    title: str = "",
) -> Figure:
    """One panel per modality (physical axes in µm, colour bar with units), window grid on top."""
    fig, axes = plt.subplots(
        1, len(maps), figsize=(4.6 * len(maps), 4.4), squeeze=False, layout="constrained"
    )
    for ax, (name, values) in zip(axes[0], maps.items(), strict=True):
        units = str(attrs[name].get("units", ""))
        kind = _kind(units, values)
        low, high = _robust_limits(values, kind == "signed")
        extent = (0, values.shape[1] * pixel_um, values.shape[0] * pixel_um, 0)
        image = ax.imshow(
            values, cmap=_CMAPS[kind], vmin=low, vmax=high, extent=extent, interpolation="nearest"
        )
        fig.colorbar(image, ax=ax, shrink=0.8, label=units)
        ax.set_title(str(attrs[name].get("long_name", name)), fontsize=9)
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        if grid is not None and window_px:
            _draw_grid(ax, grid, window_px * pixel_um, pixel_um)
    if title:
        fig.suptitle(title)
    return fig


def _draw_grid(ax: Any, grid: pd.DataFrame, size_um: float, pixel_um: float) -> None:
    for y0, x0 in zip(
        grid["y0"].to_numpy() * pixel_um, grid["x0"].to_numpy() * pixel_um, strict=True
    ):
        ax.add_patch(Rectangle((x0, y0), size_um, size_um, fill=False, lw=0.5, ec="0.6", alpha=0.8))


def image_grid(
    images: list[list[np.ndarray]],
    row_labels: list[str],
    column_labels: list[str],
    title: str = "",
    cmap: str = "viridis",
) -> Figure:
    """A grid of images sharing one colour scale per row (e.g. originals and reconstructions)."""
    n_rows, n_cols = len(images), len(images[0])
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.2 * n_cols, 2.2 * n_rows), squeeze=False, layout="constrained"
    )
    for r, row in enumerate(images):
        low, high = _robust_limits(np.asarray(row[0]), signed=bool(np.nanmin(row[0]) < 0))
        for c, image in enumerate(row):
            ax = axes[r, c]
            ax.imshow(image, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_labels[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
