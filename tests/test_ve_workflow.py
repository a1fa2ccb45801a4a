"""The VE study end to end on a tiny config: stores, tables, figures, incremental reruns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from latentmech.ve.plan import VePlan
from tests.helpers import REPO, planned_jobs, snakemake, tiny_ve_config, write_config

pytestmark = pytest.mark.slow


def ve_targets(config: dict) -> list[str]:
    return VePlan(config["ve"], "results", REPO / "workflow" / "schemas").targets()


@pytest.fixture(scope="module")
def ve_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny VE study run once (its targets only: the HR-DIC study is not run)."""
    workdir = tmp_path_factory.mktemp("ve")
    config = tiny_ve_config()
    write_config(workdir / "config.yaml", config)
    snakemake(workdir, *ve_targets(config))
    return workdir


def test_the_dataset_store_is_reduced_normalised_and_chunked_per_ve(ve_run: Path) -> None:
    from latentmech.ve import orientation

    root = ve_run / "results" / "ve"
    ves = xr.open_zarr(root / "cu" / "ves.zarr")
    edges = xr.open_zarr(root / "cu" / "edges.zarr")
    assert ves["eulers"].dims == ("ve", "angle", "x", "y", "z")
    assert ves["eulers"].shape == (8 + 4 + 4, 3, 16, 16, 16)
    assert edges["eulers"].shape == (3 * 4, 3, 16, 16, 16)
    assert zarr.open_array(root / "cu" / "ves.zarr" / "eulers").chunks == (1, 3, 16, 16, 16)
    x = edges["eulers"].values
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert list(dict.fromkeys(ves["collection"].values.tolist())) == ["train", "val", "test"]
    assert list(dict.fromkeys(edges["collection"].values.tolist())) == [
        "large_grains", "brass", "goss"]  # fmt: skip
    brass = edges["collection"].values.astype(object) == "brass"
    assert set(edges["texture"].values[brass].tolist()) == {"brass"}
    assert ves.attrs["lattice"] == "cubic"
    # the stored orientations are the generated ones, reduced and normalised
    shard = xr.open_zarr(root / "generated" / "cu" / "brass" / "0.zarr")
    raw = shard["eulers"].values[0].astype(np.float64)
    expected = orientation.normalise_eulers(orientation.reduce_to_fundamental_zone(raw, "cubic"))
    stored = np.moveaxis(x[edges["ve"].values.tolist().index(str(shard["ve"].values[0]))], 0, -1)
    np.testing.assert_allclose(stored, expected, atol=1e-6)
    mg = xr.open_zarr(root / "mg" / "ves.zarr")
    assert mg.attrs["lattice"] == "hexagonal" and mg.sizes["ve"] == 16


def test_fingerprints_scores_and_tables(ve_run: Path) -> None:
    root = ve_run / "results" / "ve"
    fingerprints = xr.open_zarr(root / "cu" / "fingerprints.zarr")
    assert fingerprints["mu"].shape == (28, 8) and np.isfinite(fingerprints["mu"].values).all()
    scores = pd.read_csv(root / "cu" / "vae3d" / "scores.csv")
    assert len(scores) == 28 and scores["phi4"].between(0, 1).all()
    assert (scores["misorientation_deg"] <= 62.8 + 1e-6).all()  # cubic disorientation bound
    table = pd.read_csv(root / "tables" / "reconstruction.csv")
    assert set(table["dataset"]) == {"cu", "mg"}
    cu = table[table["dataset"] == "cu"].set_index("collection")
    assert cu.loc["train", "ves"] == 8 and cu.loc["goss", "ves"] == 4
    np.testing.assert_allclose(
        cu.loc["test", "phi4_mean"], scores.loc[scores["collection"] == "test", "phi4"].mean()
    )
    clustering = pd.read_csv(root / "tables" / "clustering.csv")
    assert set(clustering["kind"]) == {"texture"}  # one morphological edge case: nothing to cluster
    assert clustering.loc[0, "classes"] == "brass goss" and clustering.loc[0, "ves"] == 8
    # the table's accuracy is the clustering of the fingerprints on the training PCA
    from latentmech.ve import latent

    mu, collection = fingerprints["mu"].values, fingerprints["collection"].values.astype(object)
    pca = latent.fit_pca(mu[fingerprints["split"].values.astype(object) == "train"], 3, 0)
    textured = np.isin(collection, ["brass", "goss"])
    accuracy = latent.spectral_clustering_accuracy(
        latent.project(pca, mu[textured]), collection[textured].astype(str), n_clusters=2, seed=0
    )[0]
    assert clustering.loc[0, "accuracy"] == pytest.approx(accuracy)
    for figure in ("reconstructions_cu.png", "reconstructions_mg.png", "latent_path.png",
                   "latent_pca.png", "surrogate.png"):  # fmt: skip
        assert (root / "figures" / figure).stat().st_size > 5000, figure


def test_responses_and_surrogate(ve_run: Path) -> None:
    root = ve_run / "results" / "ve"
    responses = pd.read_csv(root / "mg" / "cp" / "taylor" / "responses.csv")
    sigma = responses[[f"sigma_{i:02d}" for i in range(21)]].to_numpy()
    assert sigma.shape == (16, 21)
    np.testing.assert_allclose(sigma[:, 0], 0.0, atol=1e-9)
    assert (np.diff(sigma, axis=1) > 0).all()  # tension: the stress rises at every increment
    summary = pd.read_csv(root / "tables" / "surrogate.csv").set_index("split")
    assert list(summary.index) == ["train", "val", "test"]
    assert (summary["seconds_per_curve_batched"] > 0).all()
    increments = pd.read_csv(root / "tables" / "surrogate_increments.csv")
    assert len(increments) == 21
    sidecar = json.loads((root / "mg" / "surrogate" / "model.json").read_text())
    assert sidecar["config"]["outputs"] == 21


def test_nothing_to_do_then_only_what_a_change_touches(ve_run: Path) -> None:
    config = tiny_ve_config()
    targets = ve_targets(config)
    assert planned_jobs(ve_run, *targets) == {}
    config["ve"]["surrogate"]["train"]["lr"] = 5e-4
    write_config(ve_run / "config.yaml", config)
    assert planned_jobs(ve_run, *targets) == {"ve_train_surrogate": 1, "ve_evaluate_surrogate": 1}
    config["ve"]["cp"]["load"]["increments"] = 10
    write_config(ve_run / "config.yaml", config)
    assert planned_jobs(ve_run, *ve_targets(config)) == {
        "ve_responses": 1, "ve_train_surrogate": 1, "ve_evaluate_surrogate": 1}  # fmt: skip
    config = tiny_ve_config()
    config["ve"]["datasets"]["cu"]["edge_cases"][1]["texture"]["scatter_deg"] = 5.0
    write_config(ve_run / "config.yaml", config)
    jobs = planned_jobs(ve_run, *ve_targets(config))
    assert jobs["ve_generate"] == 1  # the brass shard only
    assert jobs["ve_dataset"] == 1 and jobs["ve_encode"] == 1  # cu's edge cases, not mg
    assert "ve_train_vae" not in jobs  # edge cases live apart: the VAE is not retrained
    assert "ve_responses" not in jobs  # the CP dataset is mg
    write_config(ve_run / "config.yaml", tiny_ve_config())


def sheet_study(tmp_path: Path, rows: list[str]) -> dict:
    """The tiny study with one cubic dataset ``real`` read from a sheet of ``rows`` (no CP)."""
    (tmp_path / "ves.tsv").write_text("\n".join(rows) + "\n")
    config = tiny_ve_config()
    config["ve"]["datasets"] = {
        "real": {"lattice": "cubic", "source": "sheet", "sheet": str(tmp_path / "ves.tsv")}
    }
    config["ve"]["cp"]["dataset"] = None
    config["ve"]["latent"]["dataset"] = None
    return config


def sheet_config(tmp_path: Path, real_data: Path) -> dict:
    """A cubic dataset read from a sample sheet: DAMASK's real 16³ example grid and .npy copies."""
    from latentmech.ve import io

    grid = real_data / "damask" / "examples_grid" / "20grains16x16x16.vti"
    eulers = io.read_vti(grid).eulers
    np.save(tmp_path / "grid.npy", np.degrees(eulers))  # degrees, declared in the sheet
    np.save(tmp_path / "shifted.npy", np.roll(eulers, 5, axis=0))
    rows = [
        "name\tpath\tsplit\tcollection\tangles",
        f"g1\t{grid}\ttrain\t\t",
        "g2\tgrid.npy\ttrain\t\tdegrees",
        "g3\tshifted.npy\tval\t\t",
        f"g4\t{grid}\ttest\t\t",
        "g5\tshifted.npy\ttest\t\t",
        "g6\tshifted.npy\tedge\tshifted\t",
    ]
    return sheet_study(tmp_path, rows)


@pytest.mark.realdata
def test_a_sample_sheet_of_real_files_becomes_the_dataset(tmp_path: Path, real_data: Path) -> None:
    from latentmech.ve import io, orientation

    write_config(tmp_path / "config.yaml", sheet_config(tmp_path, real_data))
    snakemake(tmp_path, "results/ve/real/ves.zarr", "results/ve/real/edges.zarr")
    ves = xr.open_zarr(tmp_path / "results" / "ve" / "real" / "ves.zarr")
    assert ves["ve"].values.tolist() == ["g1", "g2", "g3", "g4", "g5"]  # train, val, test
    names = ves["ve"].values.tolist()
    raw = io.read_vti(real_data / "damask" / "examples_grid" / "20grains16x16x16.vti").eulers
    expected = orientation.normalise_eulers(orientation.reduce_to_fundamental_zone(raw, "cubic"))
    for name in ("g1", "g2", "g4"):  # the .vti and its copy in degrees give the same VE
        stored = np.moveaxis(ves["eulers"].values[names.index(name)], 0, -1)
        np.testing.assert_allclose(stored, expected, atol=1e-5)
    edges = xr.open_zarr(tmp_path / "results" / "ve" / "real" / "edges.zarr")
    assert edges["collection"].values.tolist() == ["shifted"]
    ids = ves["grain_ids"].values
    assert ids[names.index("g1")].max() == 19 and (ids[names.index("g2")] == -1).all()


def test_a_sheet_with_a_wrongly_sized_ve_fails_naming_it(tmp_path: Path) -> None:
    np.save(tmp_path / "small.npy", np.zeros((8, 8, 8, 3)))
    for name in ("a", "b", "c"):
        np.save(tmp_path / f"{name}.npy", np.zeros((16, 16, 16, 3)))
    rows = ["name\tpath\tsplit", "a\ta.npy\ttrain", "s\tsmall.npy\ttrain", "b\tb.npy\tval",
            "c\tc.npy\ttest", "d\tc.npy\ttest"]  # fmt: skip
    write_config(tmp_path / "config.yaml", sheet_study(tmp_path, rows))
    result = snakemake(tmp_path, "results/ve/real/ves.zarr", check=False)
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "ve_ingest" / "real_train_0.log").read_text()
    assert "small.npy" in log and "mixed shapes" in log and "(8, 8, 8)" in log
    assert not (tmp_path / "results" / "ve" / "generated").exists()
    assert not list((tmp_path / "results" / "ve").glob("ingested/real/train/*.zarr"))
