"""Evaluation tables against hand-computed numbers, the figures' artists, and the UMAP embedding."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from latentmech.dic.evaluate import (
    baseline_comparison,
    box_stats,
    criterion_met,
    error_ranges,
    figure_distributions,
    figure_parity,
    figure_training_curves,
    figure_umap,
    relative_errors,
    umap_embedding,
)
from latentmech.dic.samples import PROPERTY_COLUMNS

# Two materials, two properties. Signed YS errors: A -0.1, 0, 0.1, 0.3; B -0.25, 0.02, 0.15.
_HAND = {
    "YS": ([100.0] * 4 + [200.0] * 3, [90.0, 100.0, 110.0, 130.0, 150.0, 204.0, 230.0]),
    "b": ([10.0] * 4 + [20.0] * 3, [10.0, 10.0, 10.0, 10.0, 22.0, 22.0, 22.0]),
}


def _table(
    values: dict[str, tuple[list[float], list[float]]], materials: list[str]
) -> pd.DataFrame:
    n = len(materials)
    frame = pd.DataFrame(
        {
            "sample": [f"{m}_s3_t1" for m in materials],
            "material": materials,
            "specimen": ["3"] * n,
            "step": [1] * n,
            "strain_pct": [1.0] * n,
            "stress_mpa": [300.0] * n,
        }
    )
    for prop, (true, pred) in values.items():
        frame[f"{prop}_true"] = true
        frame[f"{prop}_pred"] = pred
    return frame


def _hand_table() -> pd.DataFrame:
    return _table(_HAND, ["A"] * 4 + ["B"] * 3)


def _random_table(seed: int = 0, per_material: int = 40) -> pd.DataFrame:
    """Three materials, all six properties, predictions scattered ±10 % around the truth."""
    rng = np.random.default_rng(seed)
    truth = {"A": 1.0, "B": 2.0, "C": 3.0}
    materials = [m for m in truth for _ in range(per_material)]
    scale = np.array([truth[m] for m in materials])
    base = {"YS": 300.0, "Q": 150.0, "b": 8.0, "UTS": 500.0, "El": 20.0, "FS": 200.0}
    values = {}
    for prop in PROPERTY_COLUMNS:
        true = base[prop] * scale
        values[prop] = (list(true), list(true * (1 + rng.normal(0, 0.1, true.size))))
    return _table(values, materials)


# --------------------------------------------------------------------------- tables


def test_relative_errors_are_signed_against_the_absolute_true_value() -> None:
    table = _table({"YS": ([100.0, 100.0, -2.0], [90.0, 125.0, -1.0])}, ["A", "A", "B"])
    long = relative_errors(table, ["YS"])
    assert list(long.columns) == [
        "material", "sample", "step", "property", "true", "predicted",
        "relative_error", "abs_relative_error",
    ]  # fmt: skip
    np.testing.assert_allclose(long["relative_error"], [-0.1, 0.25, 0.5])
    np.testing.assert_allclose(long["abs_relative_error"], [0.1, 0.25, 0.5])
    assert list(long["material"]) == ["A", "A", "B"]


def test_relative_errors_long_table_is_property_major() -> None:
    long = relative_errors(_hand_table(), ["YS", "b"])
    assert len(long) == 14
    assert list(long["property"]) == ["YS"] * 7 + ["b"] * 7
    np.testing.assert_allclose(long["predicted"].iloc[7:], _HAND["b"][1])
    np.testing.assert_allclose(long["relative_error"].iloc[7:], [0, 0, 0, 0, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="FS_true"):
        relative_errors(_hand_table(), ["YS", "FS"])


def test_error_ranges_match_hand_computed_extremes_and_medians() -> None:
    table = error_ranges(_hand_table(), ["YS", "b"]).set_index("material")
    assert list(table.index) == ["A", "B", "all"]
    assert list(table.columns) == [
        "n_crops", "YS_low_pct", "YS_high_pct", "YS_median_abs_pct",
        "b_low_pct", "b_high_pct", "b_median_abs_pct",
    ]  # fmt: skip
    assert list(table["n_crops"]) == [4, 3, 7]
    expected = {
        "A": [-10.0, 30.0, 10.0, 0.0, 0.0, 0.0],
        "B": [-25.0, 15.0, 15.0, 10.0, 10.0, 10.0],
        # all YS: |e| sorted 0, .02, .1, .1, .15, .25, .3 → median 0.1; b: 0,0,0,0,.1,.1,.1 → 0
        "all": [-25.0, 30.0, 10.0, 0.0, 10.0, 0.0],
    }
    for material, row in expected.items():
        np.testing.assert_allclose(table.loc[material].iloc[1:].to_numpy(float), row, atol=1e-12)


def test_baseline_comparison_perfect_model_and_mean_predictor() -> None:
    means = {"YS": 150.0, "b": 15.0}
    perfect = _hand_table()
    perfect["YS_pred"], perfect["b_pred"] = perfect["YS_true"], perfect["b_true"]
    table = baseline_comparison(perfect, means, ["YS", "b"]).set_index("property")
    assert list(table.index) == ["YS", "b"]
    np.testing.assert_allclose(table["model_median_abs_rel_error"], 0.0)
    # baseline |150 − 100|/100 = 0.5 (×4), |150 − 200|/200 = 0.25 (×3) → median 0.5
    np.testing.assert_allclose(table["baseline_median_abs_rel_error"], [0.5, 0.5])
    np.testing.assert_allclose(table["ratio"], 0.0)
    assert table["beats_half"].tolist() == [True, True]
    assert table["n"].tolist() == [7, 7]

    mean_only = _hand_table()
    mean_only["YS_pred"], mean_only["b_pred"] = 150.0, 15.0
    table = baseline_comparison(mean_only, means, ["YS", "b"])
    np.testing.assert_allclose(table["ratio"], 1.0)
    assert not table["beats_half"].any()

    table = baseline_comparison(_hand_table(), means, ["YS", "b"]).set_index("property")
    np.testing.assert_allclose(table.loc["YS", "model_median_abs_rel_error"], 0.1)
    np.testing.assert_allclose(table.loc["YS", "ratio"], 0.2)
    with pytest.raises(ValueError, match="no value for b"):
        baseline_comparison(_hand_table(), {"YS": 1.0}, ["YS", "b"])


def test_criterion_met_thresholds() -> None:
    def comparison(flags: list[bool]) -> pd.DataFrame:
        return pd.DataFrame({"property": PROPERTY_COLUMNS, "beats_half": flags})

    assert not criterion_met(comparison([True, True, True, False, False, False]))
    assert criterion_met(comparison([True, True, True, True, False, False]))
    assert criterion_met(comparison([True] * 6))
    assert criterion_met(comparison([True, True, True, False, False, False]), min_properties=3)
    assert not criterion_met(comparison([False] * 6), min_properties=1)


# --------------------------------------------------------------------------- figures


def test_box_stats_are_percentiles_and_extremes() -> None:
    stats = box_stats(np.arange(101.0))
    assert (stats["whislo"], stats["q1"], stats["med"], stats["q3"], stats["whishi"]) == (
        5.0, 25.0, 50.0, 75.0, 95.0,
    )  # fmt: skip
    np.testing.assert_array_equal(stats["fliers"], [0.0, 100.0])
    values = np.random.default_rng(1).normal(size=57)
    stats = box_stats(np.append(values, np.nan))
    assert stats["n"] == 57
    np.testing.assert_allclose(
        [stats["whislo"], stats["q1"], stats["med"], stats["q3"], stats["whishi"]],
        np.percentile(values, [5, 25, 50, 75, 95]),
    )
    with pytest.raises(ValueError):
        box_stats([np.nan])


def _slope(line: Line2D) -> float:
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    return float((y[1] - y[0]) / (x[1] - x[0]))


def test_figure_parity_has_reference_lines_and_percentile_boxes() -> None:
    table = _random_table()
    fig = figure_parity(table)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6
    for ax in fig.axes:
        lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
        expected = {"identity": 1.0, "band+10": 1.1, "band-10": 0.9, "band+20": 1.2, "band-20": 0.8}
        assert set(expected) <= set(lines)
        for gid, slope in expected.items():
            assert _slope(lines[gid]) == pytest.approx(slope)
            assert lines[gid].get_ydata()[0] == pytest.approx(slope * lines[gid].get_xdata()[0])
        assert lines["identity"].get_linestyle() == "-"
        assert lines["identity"].get_color() == "black"
        assert lines["band+10"].get_linestyle() == "--"
        assert lines["band-20"].get_linestyle() == ":"

    ax = fig.axes[0]  # YS: material B has true value 600
    pred = table.loc[table["material"] == "B", "YS_pred"].to_numpy()
    stats = box_stats(pred)
    ends = [tuple(np.round(line.get_ydata(), 9)) for line in ax.get_lines()]
    assert tuple(np.round([stats["q1"], stats["whislo"]], 9)) in ends  # lower whisker
    assert tuple(np.round([stats["q3"], stats["whishi"]], 9)) in ends  # upper whisker
    fliers = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(fliers) == 3  # one min/max pair per material
    assert any(np.allclose(f.get_ydata(), [pred.min(), pred.max()]) for f in fliers)
    assert any(np.allclose(f.get_xdata(), 600.0) for f in fliers)  # box at the true value
    assert ax.get_xlabel() == "Experimental YS (MPa)"
    assert fig.axes[2].get_ylabel() == "Predicted b"


def test_figure_distributions_marks_the_true_values() -> None:
    table = _random_table()
    fig = figure_distributions(table, ["YS", "El"])
    assert len(fig.axes) == 2
    ax = fig.axes[1]
    ticks = [line for line in ax.get_lines() if line.get_gid() == "true_value"]
    assert sorted(float(t.get_ydata()[0]) for t in ticks) == [20.0, 40.0, 60.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C"]
    assert ax.get_ylabel() == "Predicted El (%)"


def test_figure_training_curves_with_and_without_relative_errors() -> None:
    epochs = np.arange(1, 21)
    history = pd.DataFrame(
        {"epoch": epochs, "train_loss": 1.0 / epochs, "val_loss": 1.5 / epochs,
         "val_rel_error": 0.5 / np.sqrt(epochs), "lr": 1e-3}
    )  # fmt: skip
    fig = figure_training_curves(history)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[0].get_lines()) == 2
    assert len(fig.axes[1].get_lines()) == 1

    fig = figure_training_curves(history.drop(columns="val_rel_error"), window=5)
    assert len(fig.axes) == 1
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4  # raw and smoothed, train and validation
    smoothed = history["train_loss"].rolling(5, min_periods=1).mean()
    np.testing.assert_allclose(lines[1].get_ydata(), smoothed)

    fig = figure_training_curves(history[["train_loss"]].assign(val_loss=-1.0))
    assert fig.axes[0].get_yscale() == "linear"  # non-positive loss: no log axis
    assert fig.axes[0].get_xlabel() == "iteration"
    with pytest.raises(ValueError, match="train_loss"):
        figure_training_curves(history[["epoch", "lr"]])


def test_figure_umap_three_panels() -> None:
    rng = np.random.default_rng(0)
    n = 60
    step = np.tile([1, 2, 3], n // 3)
    fig = figure_umap(
        rng.normal(size=(n, 2)), np.repeat(["A", "B"], n // 2), rng.random(n), step, "intensity"
    )
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3
    assert len(fig.axes) == 4  # panel (b) has a colour bar
    grey, *coloured = panels[0].collections
    assert len(grey.get_offsets()) == 40  # steps 2 and 3 in grey underneath
    assert sum(len(c.get_offsets()) for c in coloured) == 20
    assert len(panels[2].collections) == 3  # one colour per step
    with pytest.raises(ValueError, match="same length"):
        figure_umap(rng.normal(size=(n, 2)), ["A"], rng.random(n), step, "x")


# --------------------------------------------------------------------------- UMAP


def test_umap_separates_two_gaussian_blobs() -> None:
    rng = np.random.default_rng(0)
    mu = np.vstack([rng.normal(0.0, 1.0, (150, 16)), rng.normal(8.0, 1.0, (150, 16))])
    labels = np.repeat([0, 1], 150)
    embedding, indices = umap_embedding(mu, n_neighbors=15)
    assert embedding.shape == (300, 2)
    np.testing.assert_array_equal(indices, np.arange(300))
    distances = np.linalg.norm(embedding[:, None] - embedding[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert np.all(labels[np.argmin(distances, axis=1)] == labels)  # leave-one-out 1-NN
    centroids = np.array([embedding[labels == k].mean(axis=0) for k in (0, 1)])
    spread = max(
        np.linalg.norm(embedding[labels == k] - centroids[k], axis=1).max() for k in (0, 1)
    )
    assert np.linalg.norm(centroids[0] - centroids[1]) > 2 * spread


def test_umap_subset_is_seeded_and_neighbours_are_clipped(caplog: pytest.LogCaptureFixture) -> None:
    mu = np.random.default_rng(2).normal(size=(200, 8))
    first, idx = umap_embedding(mu, n_neighbors=10, max_points=60, seed=3)
    again, idx_again = umap_embedding(mu, n_neighbors=10, max_points=60, seed=3)
    assert first.shape == (60, 2)
    assert len(np.unique(idx)) == 60 and idx.min() >= 0 and idx.max() < 200
    np.testing.assert_array_equal(idx, idx_again)
    np.testing.assert_allclose(first, again)
    _, other = umap_embedding(mu, n_neighbors=10, max_points=60, seed=4)
    assert not np.array_equal(idx, other)

    with caplog.at_level(logging.WARNING, logger="latentmech.dic.evaluate"):
        small, small_idx = umap_embedding(mu[:12])
    assert small.shape == (12, 2) and np.all(np.isfinite(small))
    np.testing.assert_array_equal(small_idx, np.arange(12))
    assert "n_neighbors 150" in caplog.text and "using 11" in caplog.text
    with pytest.raises(ValueError, match="at least 3"):
        umap_embedding(mu[:2])
