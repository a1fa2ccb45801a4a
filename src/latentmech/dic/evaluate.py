"""Evaluation of the property CNN and of the VAE latent space (HR-DIC paper Fig. 11, 12, Table 6).

Input is a *predictions table*: one row per crop (a 9×9 region of a sample's latent map) with
the columns ``sample, material, specimen, step, strain_pct, stress_mpa`` and, for each property
``p``, ``{p}_true`` and ``{p}_pred`` in physical units (YS, Q, UTS, FS in MPa, b dimensionless,
El in %).

Definitions used throughout:

* signed relative error ``(predicted − true) / |true|`` (Table 6 reports its extremes, so the
  sign says whether a material is over- or under-estimated); the absolute relative error is
  :func:`latentmech.core.metrics.relative_error`;
* a constant *training-mean* predictor is the baseline: the model is useful for a property when
  its median absolute relative error is at most half the baseline's on the same crops, and the
  project's acceptance criterion asks this of at least 4 of the 6 properties;
* distributions of the many crop predictions of one material are summarised as in Fig. 11: box
  from the 25th to the 75th percentile, whiskers at the 5th and 95th, minimum and maximum as
  circles (:func:`box_stats`, drawn with :meth:`matplotlib.axes.Axes.bxp`).

Figures are returned, not saved: callers write them with :func:`latentmech.core.plots.save_figure`
(which also selects the headless Agg backend).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are written by batch jobs without a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from latentmech.core.metrics import relative_error
from latentmech.dic.samples import PROPERTY_COLUMNS

log = logging.getLogger(__name__)

#: Units of the properties, as written on axis labels ("" for dimensionless).
PROPERTY_UNITS = {"YS": "MPa", "Q": "MPa", "b": "", "UTS": "MPa", "El": "%", "FS": "MPa"}
#: Names of the properties for panel titles.
PROPERTY_NAMES = {
    "YS": "Yield strength YS",
    "Q": "Hardening rate Q",
    "b": "Hardening exponent b",
    "UTS": "Ultimate tensile strength UTS",
    "El": "Elongation El",
    "FS": "Fatigue strength FS",
}
#: Relative-error bands of the parity plots: (fraction, line style).
PARITY_BANDS = ((0.10, "--"), (0.20, ":"))
#: Percentiles of the box summaries: whiskers, box edges, median (paper Fig. 11).
BOX_PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)

_ID_COLUMNS = ("material", "sample", "step")


# --------------------------------------------------------------------------- tables


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Fail with the list of missing columns rather than a bare KeyError deep in pandas."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {', '.join(missing)}")


def _property_columns(properties: Sequence[str]) -> tuple[list[str], list[str]]:
    return [f"{p}_true" for p in properties], [f"{p}_pred" for p in properties]


def _signed_relative_error(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(predicted − true) / |true|``; ±inf or NaN where the true value is 0 (no scale)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (predicted - true) / np.abs(true)


def relative_errors(
    predictions: pd.DataFrame, properties: Sequence[str] = PROPERTY_COLUMNS
) -> pd.DataFrame:
    """Long table of the errors of every crop and property.

    Columns ``material, sample, step, property, true, predicted, relative_error`` (signed,
    ``(predicted − true) / |true|``) and ``abs_relative_error`` (its absolute value), as fractions.
    Rows are property-major (all crops of the first property, then the next) so that a groupby
    over ``property`` keeps the crop order. Long format because every summary (Table 6, the
    baseline, the figures) is a groupby over material and/or property.
    """
    properties = list(properties)
    true_cols, pred_cols = _property_columns(properties)
    _require(predictions, [*_ID_COLUMNS, *true_cols, *pred_cols], "predictions table")
    n, k = len(predictions), len(properties)
    true = predictions[true_cols].to_numpy(dtype=np.float64)
    predicted = predictions[pred_cols].to_numpy(dtype=np.float64)
    ids = predictions[list(_ID_COLUMNS)].reset_index(drop=True)
    long = pd.concat([ids] * k, ignore_index=True) if k else ids.iloc[:0]
    true, predicted = true.ravel(order="F"), predicted.ravel(order="F")
    long["property"] = np.repeat(np.asarray(properties, dtype=object), n)
    long["true"] = true
    long["predicted"] = predicted
    long["relative_error"] = _signed_relative_error(predicted, true)
    with np.errstate(divide="ignore", invalid="ignore"):
        long["abs_relative_error"] = relative_error(predicted, true)
    return long


def error_ranges(
    predictions: pd.DataFrame, properties: Sequence[str] = PROPERTY_COLUMNS
) -> pd.DataFrame:
    """Table 6 of the paper: per material, the extreme signed relative errors of each property.

    One row per material (sorted) and a last row ``all`` over every crop, with ``n_crops`` and
    for each property ``{p}_low_pct`` and ``{p}_high_pct`` (lowest and highest signed relative
    error over the crops, in %: the paper reports "extreme low and high values" estimated from
    the supplementary samples) and ``{p}_median_abs_pct`` (median absolute relative error, in %,
    a typical error the extremes alone would hide). Non-finite errors (true value 0, missing
    prediction) are left out.
    """
    properties = list(properties)
    long = relative_errors(predictions, properties)
    long = long[np.isfinite(long["relative_error"])]
    long = long.assign(material=long["material"].astype(str))

    def summarise(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        stats = frame.groupby(keys, sort=True)["relative_error"].agg(
            low="min", high="max", median_abs=lambda e: float(np.median(np.abs(e)))
        )
        return stats * 100.0

    per_material = summarise(long, ["material", "property"]).unstack("property")
    overall = summarise(long, ["property"]).unstack().to_frame("all").T  # (statistic, property)
    table = pd.concat([per_material, overall])
    ordered = [(stat, p) for p in properties for stat in ("low", "high", "median_abs")]
    table = table.reindex(columns=pd.MultiIndex.from_tuples(ordered))
    table.columns = [f"{p}_{stat}_pct" for stat, p in ordered]
    counts = predictions["material"].astype(str).value_counts()
    table.insert(0, "n_crops", [*counts.reindex(table.index[:-1]).to_numpy(), len(predictions)])
    table.index.name = "material"
    return table.reset_index()


def baseline_comparison(
    predictions: pd.DataFrame,
    training_means: Mapping[str, float],
    properties: Sequence[str] = PROPERTY_COLUMNS,
) -> pd.DataFrame:
    """Model against a constant predictor of the training mean, property by property.

    One row per property: ``n`` (crops with a finite, non-zero true value and a finite
    prediction), ``model_median_abs_rel_error`` and ``baseline_median_abs_rel_error`` (median
    absolute relative errors as fractions, the baseline predicting ``training_means[p]`` for
    every one of the same crops), ``ratio`` (model / baseline) and ``beats_half`` (model ≤ 0.5 ×
    baseline). A model that only learnt the mean has ratio 1; the baseline tells whether the
    latent maps carry information about the property at all.
    """
    properties = list(properties)
    missing = [p for p in properties if p not in training_means]
    if missing:
        raise ValueError(f"training_means has no value for {', '.join(missing)}")
    long = relative_errors(predictions, properties)
    keep = np.isfinite(long["abs_relative_error"]) & np.isfinite(long["true"])
    long = long[keep]
    means = long["property"].map({p: float(training_means[p]) for p in properties})
    long = long.assign(
        baseline_error=relative_error(means.to_numpy(dtype=np.float64), long["true"].to_numpy())
    )
    grouped = long.groupby("property", sort=False)
    table = pd.DataFrame(
        {
            "n": grouped.size(),
            "model_median_abs_rel_error": grouped["abs_relative_error"].median(),
            "baseline_median_abs_rel_error": grouped["baseline_error"].median(),
        }
    ).reindex(properties)
    table["n"] = table["n"].fillna(0).astype(int)
    model = table["model_median_abs_rel_error"].to_numpy(dtype=np.float64)
    baseline = table["baseline_median_abs_rel_error"].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["ratio"] = model / baseline
    table["beats_half"] = model <= 0.5 * baseline  # NaN (no rows) compares False
    table.index.name = "property"
    return table.reset_index()


def criterion_met(comparison: pd.DataFrame, min_properties: int = 4) -> bool:
    """The acceptance criterion: at least ``min_properties`` properties with ``beats_half``."""
    return int(comparison["beats_half"].astype(bool).sum()) >= min_properties


# --------------------------------------------------------------------------- box summaries


def box_stats(values: np.ndarray | Sequence[float], label: str | None = None) -> dict[str, Any]:
    """Summary of a distribution for :meth:`~matplotlib.axes.Axes.bxp`, as in Fig. 11.

    ``q1``/``q3`` the 25th/75th percentiles, ``med`` the median, ``whislo``/``whishi`` the
    5th/95th percentiles, ``fliers`` the minimum and maximum (drawn as circles), ``mean`` and
    ``n``. Non-finite values are ignored; percentiles are numpy's linear interpolation.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        raise ValueError("box_stats needs at least one finite value")
    p05, p25, p50, p75, p95 = np.percentile(data, BOX_PERCENTILES)
    stats: dict[str, Any] = {
        "whislo": float(p05),
        "q1": float(p25),
        "med": float(p50),
        "q3": float(p75),
        "whishi": float(p95),
        "fliers": np.array([data.min(), data.max()]),
        "mean": float(data.mean()),
        "n": int(data.size),
    }
    if label is not None:
        stats["label"] = label
    return stats


def material_colours(materials: Sequence[str] | np.ndarray) -> dict[str, Any]:
    """A fixed colour per material (sorted names over tab10/tab20), shared by every figure."""
    names = sorted({str(m) for m in materials})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _draw_box(ax: Axes, stats: dict[str, Any], position: float, width: float, colour: Any) -> None:
    ax.bxp(
        [stats],
        positions=[position],
        widths=[width],
        patch_artist=True,
        manage_ticks=False,
        boxprops={"facecolor": colour, "edgecolor": "black", "linewidth": 0.8, "alpha": 0.85},
        whiskerprops={"color": colour, "linewidth": 1.0},
        capprops={"color": colour, "linewidth": 1.0},
        medianprops={"color": "black", "linewidth": 1.0},
        flierprops={"marker": "o", "markersize": 4, "markerfacecolor": "none",
                    "markeredgecolor": colour},
    )  # fmt: skip


def _panel_grid(n: int, width: float = 4.0, height: float = 3.8) -> tuple[Figure, list[Axes]]:
    """``n`` panels on rows of at most three; unused slots removed so the figure has ``n`` axes."""
    ncols = min(3, max(n, 1))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout="constrained"
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


def _label(prop: str, kind: str) -> str:
    units = PROPERTY_UNITS.get(prop, "")
    return f"{kind} {prop}" + (f" ({units})" if units else "")


def _finite_groups(predictions: pd.DataFrame, prop: str) -> pd.DataFrame:
    """Crops with finite true and predicted ``prop``, material as str."""
    frame = pd.DataFrame(
        {
            "material": predictions["material"].astype(str).to_numpy(),
            "true": predictions[f"{prop}_true"].to_numpy(dtype=np.float64),
            "pred": predictions[f"{prop}_pred"].to_numpy(dtype=np.float64),
        }
    )
    return frame[np.isfinite(frame["true"]) & np.isfinite(frame["pred"])]


# --------------------------------------------------------------------------- figures


def figure_parity(
    predictions: pd.DataFrame, properties: Sequence[str] = PROPERTY_COLUMNS
) -> Figure:
    """Fig. 11(B.1–B.6): predicted against experimental value, one panel per property.

    Every material shares one experimental value, so its crops give one box at x = that value
    (one box per distinct value if a material has several): box 25–75 %, whiskers 5–95 %,
    minimum and maximum as circles, box width 4 % of the axis span, one colour per material.
    Solid black: identity; dashed: ±10 %; dotted: ±20 % relative error (lines carry the gids
    ``identity``, ``band+10``, ``band-10``, ``band+20``, ``band-20``).
    """
    properties = list(properties)
    true_cols, pred_cols = _property_columns(properties)
    _require(predictions, ["material", *true_cols, *pred_cols], "predictions table")
    colours = material_colours(predictions["material"].astype(str).unique())
    fig, axes = _panel_grid(len(properties))
    for ax, prop in zip(axes, properties, strict=True):
        frame = _finite_groups(predictions, prop)
        ax.set_title(PROPERTY_NAMES.get(prop, prop), fontsize=10)
        ax.set_xlabel(_label(prop, "Experimental"))
        ax.set_ylabel(_label(prop, "Predicted"))
        if frame.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        values = frame[["true", "pred"]].to_numpy()
        low, high = float(values.min()), float(values.max())
        pad = 0.08 * (high - low) if high > low else 0.1 * max(abs(high), 1.0)
        low, high = low - pad, high + pad
        for (material, true), group in frame.groupby(["material", "true"], sort=True):
            _draw_box(
                ax, box_stats(group["pred"]), float(true), 0.04 * (high - low), colours[material]
            )
        x = np.array([low, high])
        ax.plot(x, x, color="black", lw=1.0, ls="-", gid="identity", zorder=1)
        for fraction, style in PARITY_BANDS:
            pct = round(100 * fraction)
            for sign in (1, -1):
                ax.plot(
                    x, (1 + sign * fraction) * x, color="0.35", lw=0.8, ls=style,
                    gid=f"band{'+' if sign > 0 else '-'}{pct}", zorder=1,
                )  # fmt: skip
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal", adjustable="box")
    handles: list[Any] = [
        Patch(facecolor=c, edgecolor="black", label=m) for m, c in colours.items()
    ]
    handles += [
        Line2D([], [], color="black", ls="-", label="identity"),
        Line2D([], [], color="0.35", ls="--", label="±10 %"),
        Line2D([], [], color="0.35", ls=":", label="±20 %"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize=8)
    return fig


def figure_distributions(
    predictions: pd.DataFrame, properties: Sequence[str] = PROPERTY_COLUMNS
) -> Figure:
    """Distributions of the crop predictions per material, one panel per property.

    Materials on x (sorted), a box per material (25–75 %, whiskers 5–95 %, extremes as circles)
    and the material's experimental value as a red tick (gid ``true_value``), so the spread of
    the predictions over a sample can be read against the single measured value.
    """
    properties = list(properties)
    true_cols, pred_cols = _property_columns(properties)
    _require(predictions, ["material", *true_cols, *pred_cols], "predictions table")
    colours = material_colours(predictions["material"].astype(str).unique())
    positions = {m: i + 1 for i, m in enumerate(colours)}
    fig, axes = _panel_grid(len(properties), width=max(3.5, 0.7 * len(colours) + 1.5))
    for ax, prop in zip(axes, properties, strict=True):
        frame = _finite_groups(predictions, prop)
        for material, group in frame.groupby("material", sort=True):
            pos = positions[material]
            _draw_box(ax, box_stats(group["pred"]), pos, 0.6, colours[material])
            for true in np.unique(group["true"].to_numpy()):
                ax.plot(
                    [pos - 0.4, pos + 0.4], [true, true], color="red", lw=2.0, gid="true_value",
                    zorder=3,
                )  # fmt: skip
        ax.set_xticks(list(positions.values()), list(positions), rotation=45, ha="right")
        ax.set_xlim(0.3, len(positions) + 0.7)
        ax.set_title(PROPERTY_NAMES.get(prop, prop), fontsize=10)
        ax.set_ylabel(_label(prop, "Predicted"))
    fig.legend(
        handles=[Line2D([], [], color="red", lw=2.0, label="experimental value")],
        loc="outside lower center",
        fontsize=8,
    )
    return fig


def figure_training_curves(history: pd.DataFrame, window: int = 1) -> Figure:
    """Fig. 11(A.1–A.2): loss and relative-error curves of the training history.

    ``history`` is the CSV of :class:`latentmech.core.train.Trainer` (``epoch, train_loss,
    val_loss`` and the validation metrics as ``val_*``). Panel 1: whichever of ``train_loss`` and
    ``val_loss`` exist, log-y when all values are positive; panel 2 (only if any exists): every
    ``*rel_error`` column. ``window`` > 1 draws a trailing rolling mean over that many rows
    on top of the faint raw curve (the paper smoothed over 10 iterations).
    """
    if window < 1:
        raise ValueError(f"window must be ≥ 1, got {window}")
    loss_cols = [c for c in ("train_loss", "val_loss") if c in history.columns]
    if not loss_cols:
        raise ValueError("history has neither train_loss nor val_loss")
    error_cols = sorted(
        (c for c in history.columns if str(c).endswith("rel_error")),
        key=lambda c: (not str(c).startswith("train"), str(c)),
    )
    if "epoch" in history.columns:
        x, xlabel = history["epoch"].to_numpy(), "epoch"
    else:
        x, xlabel = np.arange(1, len(history) + 1), "iteration"
    panels = [("loss", loss_cols)] + ([("relative error", error_cols)] if error_cols else [])
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False, layout="constrained"
    )
    for ax, (ylabel, columns) in zip(axes[0], panels, strict=True):
        for i, column in enumerate(columns):
            colour = f"C{i}"
            raw = history[column].astype(np.float64)
            label = column.replace("_", " ")
            if window > 1:
                ax.plot(x, raw.to_numpy(), color=colour, alpha=0.3, lw=0.8)
                smooth = raw.rolling(window, min_periods=1).mean().to_numpy()
                ax.plot(x, smooth, color=colour, lw=1.5, label=f"{label} (mean of {window})")
            else:
                ax.plot(x, raw.to_numpy(), color=colour, lw=1.5, label=label)
        values = history[columns].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if ylabel == "loss" and finite.size and bool(np.all(finite > 0)):
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- latent space


def figure_extension(curves: Mapping[str, pd.DataFrame], reference: float) -> Figure:
    """Fig. 13(C): validation loss of the old (solid) and new (dashed) windows per method.

    ``curves`` maps a method name to its history (``epoch``, ``val_old_loss``, ``val_new_loss``);
    ``reference`` (the original VAE's minimal validation loss) is drawn as a horizontal line.
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    for i, (method, history) in enumerate(curves.items()):
        for column, style, group in (
            ("val_old_loss", "-", "database"),
            ("val_new_loss", "--", "new"),
        ):
            ax.plot(history["epoch"], history[column], style, color=f"C{i}", marker="o", ms=3,
                    label=f"{method}: {group} materials")  # fmt: skip
    ax.axhline(reference, color="black", ls=":", lw=1, label="original VAE, best validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return fig


def umap_embedding(
    mu: np.ndarray,
    n_neighbors: int = 150,
    min_dist: float = 0.02,
    spread: float = 3.0,
    seed: int = 0,
    max_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D UMAP of latent means ``mu`` (N, D) with the paper's parameters (Fig. 12).

    When ``max_points`` is given and N exceeds it, a subset of ``max_points`` rows drawn without
    replacement by ``numpy.random.default_rng(seed)`` is embedded (UMAP's cost grows with N and
    a figure cannot show more points anyway). Returns the embedding (M, 2) and the sorted row
    indices (M,) into ``mu`` it belongs to, so callers can colour the points. ``n_neighbors`` is
    clipped to M − 1 (with a warning) when there are fewer points. Seeded, hence single-threaded
    and reproducible. umap-learn is imported here: its numba compilation takes ~20 s.
    """
    mu = np.asarray(mu)
    if mu.ndim != 2:
        raise ValueError(f"mu must be (N, D), got shape {mu.shape}")
    n = mu.shape[0]
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be ≥ 1, got {max_points}")
    if max_points is not None and n > max_points:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(n, size=max_points, replace=False))
    else:
        indices = np.arange(n)
    data = mu[indices].astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise ValueError("mu has non-finite values")
    m = data.shape[0]
    if m < 3:
        raise ValueError(f"UMAP needs at least 3 points, got {m}")
    if n_neighbors > m - 1:
        log.warning("n_neighbors %d > %d points − 1: using %d", n_neighbors, m, m - 1)
        n_neighbors = m - 1

    import umap  # lazy: numba compiles on first import

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=int(n_neighbors),
        min_dist=float(min_dist),
        spread=float(spread),
        random_state=int(seed),
        n_jobs=1,
    )
    embedding = np.asarray(reducer.fit_transform(data), dtype=np.float64)
    return embedding, indices


def figure_umap(
    embedding: np.ndarray,
    material: np.ndarray | Sequence[str],
    mean_value: np.ndarray | Sequence[float],
    step: np.ndarray | Sequence[int],
    title: str,
    first_step_only_material: bool = True,
) -> Figure:
    """Fig. 12 for one latent space: three panels of the same 2-D embedding.

    (a) coloured by material — with ``first_step_only_material`` only the points of the lowest
    deformation step (early plasticity), the others as grey markers underneath; (b) coloured by
    the window's mean value (colour bar, 1–99 % limits); (c) coloured by deformation step.
    """
    embedding = np.asarray(embedding, dtype=np.float64)
    material = np.asarray(material).astype(str)
    mean_value = np.asarray(mean_value, dtype=np.float64)
    step = np.asarray(step).astype(int)
    n = embedding.shape[0]
    if embedding.ndim != 2 or embedding.shape[1] != 2:
        raise ValueError(f"embedding must be (M, 2), got shape {embedding.shape}")
    if not (len(material) == len(mean_value) == len(step) == n):
        raise ValueError("embedding, material, mean_value and step must have the same length")
    size = float(np.clip(3000.0 / max(n, 1), 1.0, 25.0))
    x, y = embedding[:, 0], embedding[:, 1]
    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.6), layout="constrained")

    ax = axes[0]
    if first_step_only_material and n:
        shown = step == step.min()
        ax.scatter(x[~shown], y[~shown], s=size, c="0.8", lw=0, label="later steps")
        ax.set_title(f"(a) material, step {step.min()}", fontsize=10)
    else:
        shown = np.ones(n, dtype=bool)
        ax.set_title("(a) material", fontsize=10)
    for name, colour in material_colours(material).items():
        keep = shown & (material == name)
        ax.scatter(x[keep], y[keep], s=size, color=colour, lw=0, label=name)
    ax.legend(fontsize=7, markerscale=max(1.0, 20.0 / size) ** 0.5, loc="best")

    ax = axes[1]
    finite = mean_value[np.isfinite(mean_value)]
    low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    points = ax.scatter(
        x, y, s=size, c=mean_value, cmap="viridis", vmin=low, vmax=high if high > low else low + 1
    )
    fig.colorbar(points, ax=ax, shrink=0.85, label="window mean")
    ax.set_title("(b) window mean value", fontsize=10)

    ax = axes[2]
    steps = np.unique(step)
    cmap = plt.get_cmap("tab10" if len(steps) <= 10 else "tab20")
    for i, value in enumerate(steps):
        keep = step == value
        ax.scatter(x[keep], y[keep], s=size, color=cmap(i % cmap.N), lw=0, label=f"step {value}")
    ax.legend(fontsize=7, markerscale=max(1.0, 20.0 / size) ** 0.5, loc="best")
    ax.set_title("(c) deformation step", fontsize=10)

    for ax in axes:
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return fig
