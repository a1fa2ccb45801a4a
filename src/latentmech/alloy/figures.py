"""The alloy study's figures (paper Figs. 4–7): plotting only, from arrays the stages computed.

Apart from :mod:`latentmech.alloy.stages` so that editing a figure reruns only the plotting rules
(evaluate, sample, design summary), never the AlloyVAE training or Algorithm 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

Settings = Mapping[str, Any]


def figure_reconstruction(reference: np.ndarray, physical: np.ndarray,
                           components: Sequence[str], target: str, frame: pd.DataFrame,
                           figure: Path, examples: int) -> None:  # fmt: skip
    """Fig. 4: relative errors, parity, value histograms; xx-component block slices."""
    import matplotlib.pyplot as plt

    from latentmech.core.plots import save_figure

    test = frame[(frame["split"] == "test") & (frame["predictor"] == "model")]
    mre = float(test.loc[(test["metric"] == "mre") & (test["component"] == "all"), "value"].iloc[0])
    r2 = float(test.loc[(test["metric"] == "r2") & (test["component"] == "all"), "value"].iloc[0])
    n = min(examples, reference.shape[0])
    fig = plt.figure(figsize=(12, 4 + 2.2 * n), layout="constrained")
    grid = fig.add_gridspec(1 + n, 4)
    ok = reference != 0
    relative = np.abs(physical - reference)[ok] / np.abs(reference)[ok]
    ax = fig.add_subplot(grid[0, 0])
    ax.hist(np.clip(relative, 0, 2), bins=40, color="tab:blue")
    ax.set_xlabel("relative error (clipped at 2)")
    ax.set_title(f"test MRE (Eq. 5) = {mre:.3f}")
    ax = fig.add_subplot(grid[0, 1])
    ax.scatter(reference.ravel(), physical.ravel(), s=3, alpha=0.4)
    low, high = float(reference.min()), float(reference.max())
    ax.plot([low, high], [low, high], "r-", lw=1)
    ax.set_xlabel(f"reference {target}")
    ax.set_ylabel("reconstruction")
    ax.set_title(f"parity, R² = {r2:.3f}")
    ax = fig.add_subplot(grid[0, 2:])
    bins = np.linspace(low, high, 50)
    ax.hist(reference.ravel(), bins=bins, alpha=0.6, label="reference")
    ax.hist(physical.ravel(), bins=bins, alpha=0.6, label="reconstruction")
    ax.legend()
    ax.set_title(f"block values, all {len(components)} component(s)")
    for i in range(n):
        limit = float(np.abs(reference[i, 0]).max()) or 1.0
        for j, (values, name) in enumerate(((reference[i, 0], "reference"),
                                            (physical[i, 0], "reconstruction"))):  # fmt: skip
            for k, z in enumerate((0, values.shape[-1] // 2)):
                ax = fig.add_subplot(grid[1 + i, 2 * j + k])
                image = ax.imshow(values[:, :, z].T, origin="lower", cmap="RdBu_r",
                                  vmin=-limit, vmax=limit)  # fmt: skip
                ax.set_title(f"test {i}: {name} {components[0]}, z block {z}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.colorbar(image, ax=ax, shrink=0.8)
    save_figure(fig, figure)


def figure_conditions(rec: Mapping[str, np.ndarray], names: Sequence[str],
                       figure: Path) -> None:  # fmt: skip
    """Fig. 5: condition relative errors and PCA of encoder vs smoother conditions (test set)."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    from latentmech.alloy.cvae import condition_mre
    from latentmech.core.plots import save_figure

    fig, axes = plt.subplots(3, len(names), figsize=(4.5 * len(names), 11), layout="constrained",
                             squeeze=False)  # fmt: skip
    for col, n in enumerate(names):
        enc, smooth = rec[f"encoder_{n}"], rec[f"smoother_{n}"]
        error = np.abs(enc - smooth) / np.abs(smooth)
        axes[0, col].hist(error.ravel(), bins=40, color="tab:green")
        axes[0, col].set_title(f"{n}: MRE {float(np.mean(condition_mre(enc, smooth))):.3f}")
        axes[0, col].set_xlabel("relative error, encoder vs smoother")
        if len(smooth) >= 2:
            pca = PCA(n_components=2).fit(smooth)
            for values, label in ((smooth, "smoother (reference)"), (enc, "encoder")):
                p = pca.transform(values)
                axes[1, col].scatter(p[:, 0], p[:, 1], s=14, label=label, alpha=0.7)
            axes[1, col].legend(fontsize=8)
        axes[1, col].set_title(f"PCA of {n} conditions")
        for i, color in zip(range(min(3, len(smooth))), ("C0", "C1", "C2"), strict=False):
            axes[2, col].plot(smooth[i], "-", color=color, lw=1)
            axes[2, col].plot(enc[i], ".", color=color, ms=3)
        axes[2, col].set_title(f"{n}: reference (lines) and encoder (dots)")
        axes[2, col].set_xlabel("condition vector entry")
    save_figure(fig, figure)


def figure_predictions(ds: xr.Dataset, names: Sequence[str], settings: Settings,
                        figure: Path) -> None:  # fmt: skip
    """Fig. 6: per input, the reference and the accepted realisations (first component, z = 0)."""
    import matplotlib.pyplot as plt

    from latentmech.core.plots import save_figure

    n_inputs = min(int(settings.get("figure_inputs", 2)), ds.sizes["input"])
    slots = ds.sizes["slot"]
    fig, axes = plt.subplots(n_inputs, 1 + slots, figsize=(2.8 * (1 + slots), 2.9 * n_inputs),
                             layout="constrained", squeeze=False)  # fmt: skip
    component = str(np.asarray(ds[list(ds["reference"].dims)[1]])[0])
    field = ds["reference"].attrs.get("field", "")
    units = ds["reference"].attrs.get("units", "")
    label = f"{field} {component}" + (f" ({units})" if units else "") + ", z block 0"
    for i in range(n_inputs):
        reference = np.asarray(ds["reference"][i, 0])
        limit = float(np.abs(reference).max()) or 1.0
        panels = [(reference, f"{ds['input'].values[i]}: reference")]
        for s in range(slots):
            if bool(ds["valid"][i, s]):
                mre = ", ".join(f"{n} {float(ds[f'mre_{n}'][i, s]):.3f}" for n in names)
                panels.append((np.asarray(ds["prediction"][i, s, 0]),
                               f"draw {int(ds['draw'][i, s])}: MRE {mre}"))  # fmt: skip
            else:
                panels.append((None, "no accepted draw"))
        for ax, (values, title) in zip(axes[i], panels, strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
            if values is not None:
                image = ax.imshow(values[:, :, 0].T, origin="lower", cmap="RdBu_r",
                                  vmin=-limit, vmax=limit)  # fmt: skip
        fig.colorbar(image, ax=axes[i, -1], shrink=0.8, label=label)
    save_figure(fig, figure)


def figure_design(panels: Sequence[tuple], tau2_train: np.ndarray, variance_train: np.ndarray,
                   settings: Settings, figure: Path) -> None:  # fmt: skip
    """Fig. 7: per method, self-check MRE, concentration variance, ⟨τ_p²⟩ histograms, Isomap."""
    import matplotlib.pyplot as plt

    from latentmech.core.plots import save_figure

    fig, axes = plt.subplots(len(panels), 4, figsize=(16, 3.6 * len(panels)),
                             layout="constrained", squeeze=False)  # fmt: skip
    for row, (method, result, found, mre) in zip(axes, panels, strict=True):
        row[0].hist(mre, bins=30, color="tab:red")
        row[0].axvline(float(settings["k"]), color="k", ls="--", lw=1)
        row[0].set_title(f"{method} latent: self-check MRE (max of c, w)")
        variance = np.asarray(result["variance_after"]).mean(axis=1)
        row[1].hist(variance_train, bins=20, alpha=0.6, density=True, label="training")
        row[1].hist(variance, bins=30, alpha=0.6, density=True, label="optimised")
        row[1].set_title("concentration variance over blocks")
        row[1].legend(fontsize=8)
        row[2].hist(tau2_train, bins=20, alpha=0.6, density=True, label="training")
        row[2].hist(np.asarray(result["tau2_after"]), bins=30, alpha=0.6, density=True,
                    label="optimised")  # fmt: skip
        row[2].set_title("⟨τ_p²⟩ (GPa²)")
        row[2].legend(fontsize=8)
        for k in range(found.means.shape[0]):
            chosen = found.labels == k
            row[3].scatter(found.embedding[chosen, 0], found.embedding[chosen, 1], s=6,
                           label=f"cluster {k + 1} ({int(chosen.sum())})")  # fmt: skip
        row[3].set_title("Isomap of optimised concentrations")
        row[3].legend(fontsize=8)
    save_figure(fig, figure)
