"""The alloy study end to end on a tiny config: LAMMPS cells, fields, AlloyVAE, tables, reruns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from latentmech.alloy.dump import read_dump
from latentmech.alloy.plan import AlloyPlan
from tests.helpers import (
    REPO,
    planned_after_editing,
    planned_jobs,
    snakemake,
    tiny_alloy_config,
    write_config,
)

pytestmark = pytest.mark.slow


def alloy_targets(config: dict) -> list[str]:
    return AlloyPlan(config["alloy"], "results", REPO / "workflow" / "schemas").targets()


@pytest.fixture(scope="module")
def alloy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny alloy study run once (its targets only: the HR-DIC study is not run)."""
    workdir = tmp_path_factory.mktemp("alloy")
    config = tiny_alloy_config()
    write_config(workdir / "config.yaml", config)
    snakemake(workdir, *alloy_targets(config))
    return workdir


def test_lammps_cells_are_exact_compositions_with_relaxed_stress(alloy_run: Path) -> None:
    root = alloy_run / "results" / "alloy"
    names = sorted(p.name for p in (root / "dumps").glob("*.dump"))
    assert names == [f"random_00{i}.dump" for i in range(4)] + ["sro900_000.dump"]
    for name in names:
        snap = read_dump(root / "dumps" / name, require_stress=True)[-1]
        assert snap.n_atoms == 256
        assert sorted(np.bincount(snap.types)[1:].tolist()) == [85, 85, 86]
        mean_stress = snap.stress.sum(axis=0) / snap.box.volume * 1e-4  # GPa, = −p of the cell
        assert np.abs(mean_stress[:3]).max() < 2e-3  # relaxed to zero normal stress (< 20 bar)
    log = (root / "dumps" / "sro900_000.lammps.log").read_text()
    assert "atom/swap" in log  # the anneal is a hybrid MD/MC run
    assert (root / "dumps" / "random_000.lammps.log").stat().st_size > 0


def test_the_dataset_holds_every_cell_split_and_scaled(alloy_run: Path) -> None:
    root = alloy_run / "results" / "alloy"
    ds = xr.open_zarr(root / "fields.zarr")
    assert ds["concentration"].shape == (5, 3, 2, 2, 2)
    assert ds["wc"].shape == (5, 9, 2, 2, 2) and ds["stress"].shape == (5, 6, 2, 2, 2)
    np.testing.assert_allclose(ds["concentration"].sum("element"), 1.0)
    assert (ds["atoms"].values == 32).all()  # blocks of 2 × 2 × 2 unit cells
    assert sorted(ds["split"].values.astype(object).astype(str).tolist()) == ["test", "train", "train", "train",
                                                               "val"]  # fmt: skip
    scalers = json.loads((root / "scalers.json").read_text())["scalers"]
    train = ds["split"].values.astype(object).astype(str) == "train"
    stress = ds["stress"].values[train]
    np.testing.assert_allclose(scalers["stress"]["minimum"], stress.min(axis=(0, 2, 3, 4)))
    np.testing.assert_allclose(scalers["stress"]["maximum"], stress.max(axis=(0, 2, 3, 4)))
    # the block stress of a cell is its dump's per-atom stress × volume summed per block / V_block
    snap = read_dump(root / "dumps" / "random_000.dump")[-1]
    cell = ds.sel(sample="random_000")["stress"].values
    np.testing.assert_allclose(cell.mean(axis=(1, 2, 3)),
                               snap.stress.sum(axis=0) / snap.box.volume * 1e-4, atol=1e-9)  # fmt: skip


def test_model_tables_and_figures(alloy_run: Path) -> None:
    root = alloy_run / "results" / "alloy"
    sidecar = json.loads((root / "cvae" / "model.json").read_text())
    assert sidecar["config"]["conditions"] == [{"name": "c", "channels": 2},
                                               {"name": "w", "channels": 9}]  # fmt: skip
    assert sidecar["epochs_run"] == 2 and len(pd.read_csv(root / "cvae" / "history.csv")) == 2
    table = pd.read_csv(root / "tables" / "reconstruction.csv")
    overall = table[table["component"] == "all"]
    assert set(overall["split"]) == {"train", "test"}
    assert {"mre", "mre_scaled", "r2"} <= set(overall["metric"])
    assert set(table.loc[table["metric"] == "condition_mre", "component"]) == {"c", "w"}
    sampling = pd.read_csv(root / "tables" / "sampling.csv").set_index("input")
    predictions = xr.open_zarr(root / "predictions.zarr")
    assert predictions["prediction"].shape[1:] == (3, 6, 2, 2, 2)
    valid = predictions["valid"].values
    assert int(sampling.loc["all", "accepted"]) == int(predictions["accepted"].sum())
    assert (predictions["mre_c"].values[valid] <= 0.5).all()
    design = pd.read_csv(root / "tables" / "design.csv").set_index("method")
    assert list(design.index) == ["random", "fixed"] and (design["candidates"] == 8).all()
    clusters = pd.read_csv(root / "tables" / "design_clusters.csv")
    assert clusters.groupby("method")["size"].sum().tolist() == [8, 8]
    random = xr.open_zarr(root / "design" / "random.zarr")
    np.testing.assert_allclose(random["concentration"].sum("element"), 1.0, atol=1e-6)
    for figure in ("reconstruction.png", "conditions.png", "predictions.png", "design.png"):
        assert (root / "figures" / figure).stat().st_size > 5000, figure


def test_the_report_bundles_the_alloy_figures_and_tables(alloy_run: Path) -> None:
    import zipfile

    snakemake(
        alloy_run, "--report", "results/alloy_report.zip", *alloy_targets(tiny_alloy_config())
    )
    with zipfile.ZipFile(alloy_run / "results" / "alloy_report.zip") as bundle:
        names = "\n".join(bundle.namelist())
    for output in ("reconstruction.csv", "reconstruction.png", "conditions.png", "sampling.csv",
                   "predictions.png", "design.csv", "design_clusters.csv", "design.png"):  # fmt: skip
        assert output in names, output


def test_nothing_to_do_then_only_what_a_change_touches(alloy_run: Path) -> None:
    config = tiny_alloy_config()
    targets = alloy_targets(config)
    assert planned_jobs(alloy_run, *targets) == {}
    config["alloy"]["design"]["iterations"] = 4
    write_config(alloy_run / "config.yaml", config)
    assert planned_jobs(alloy_run, *targets) == {"alloy_design": 2, "alloy_design_summary": 1}
    config = tiny_alloy_config()
    config["alloy"]["sampling"]["n_max"] = 30
    write_config(alloy_run / "config.yaml", config)
    assert planned_jobs(alloy_run, *targets) == {"alloy_sample": 1}
    config = tiny_alloy_config()
    config["alloy"]["blocks"]["cutoff"] = 3.0
    write_config(alloy_run / "config.yaml", config)
    jobs = planned_jobs(alloy_run, *targets)
    assert jobs["alloy_fields"] == 5 and "alloy_md" not in jobs  # no new LAMMPS runs
    config = tiny_alloy_config()
    config["alloy"]["md"]["md_steps"] = 40  # an anneal setting: the annealed cell alone reruns
    write_config(alloy_run / "config.yaml", config)
    jobs = planned_jobs(alloy_run, *targets)
    assert jobs["alloy_md"] == 1 and jobs["alloy_fields"] == 1 and jobs["alloy_train_cvae"] == 1
    config = tiny_alloy_config()
    config["alloy"]["design"]["n_clusters"] = 3  # the summary's setting: Algorithm 2 stays
    write_config(alloy_run / "config.yaml", config)
    assert planned_jobs(alloy_run, *targets) == {"alloy_design_summary": 1}
    write_config(alloy_run / "config.yaml", tiny_alloy_config())


def test_code_edits_rerun_what_runs_that_code_and_never_lammps_for_a_model_edit(
    alloy_run: Path,
) -> None:
    targets = alloy_targets(tiny_alloy_config())
    model_jobs = {"alloy_dataset": 1, "alloy_train_cvae": 1, "alloy_evaluate": 1,
                  "alloy_sample": 1, "alloy_design": 2, "alloy_design_summary": 1}  # fmt: skip
    assert planned_after_editing(alloy_run, "alloy/stages.py", *targets) == model_jobs
    assert planned_after_editing(alloy_run, "alloy/figures.py", *targets) == {
        "alloy_evaluate": 1, "alloy_sample": 1, "alloy_design_summary": 1}  # fmt: skip
    assert planned_after_editing(alloy_run, "alloy/blocks.py", *targets) == {
        "alloy_fields": 5, **model_jobs}  # fmt: skip
    assert planned_after_editing(alloy_run, "alloy/md.py", *targets) == {
        "alloy_md": 5, "alloy_fields": 5, **model_jobs}  # fmt: skip
    assert planned_jobs(alloy_run, *targets) == {}  # restored: same content, nothing to do


def sheet_config(tmp_path: Path, rows: list[str]) -> dict:
    (tmp_path / "dumps.tsv").write_text("\n".join(rows) + "\n")
    config = tiny_alloy_config()
    config["alloy"].update(source="sheet", sheet=str(tmp_path / "dumps.tsv"))
    return config


@pytest.mark.realdata
def test_given_dumps_from_a_sheet_become_the_dataset(
    tmp_path: Path, alloy_run: Path, real_data: Path
) -> None:
    for i in range(3):
        shutil.copy(
            alloy_run / "results/alloy/dumps" / f"random_00{i}.dump", tmp_path / f"c{i}.dump"
        )
    real = real_data / "lammps_generated_here" / "dump.annealed300_stress.lammpstrj"
    rows = ["sample\tpath\tsplit", "a\tc0.dump\ttrain", "b\tc1.dump\tval", "c\tc2.dump\ttest",
            f"headef\t{real}\ttrain"]  # fmt: skip
    write_config(tmp_path / "config.yaml", sheet_config(tmp_path, rows))
    snakemake(tmp_path, "--until", "alloy_dataset")
    ds = xr.open_zarr(tmp_path / "results" / "alloy" / "fields.zarr")
    assert ds["sample"].values.astype(object).astype(str).tolist() == ["a", "b", "c", "headef"]
    assert ds["split"].values.astype(object).astype(str).tolist() == [
        "train",
        "val",
        "test",
        "train",
    ]
    assert int(ds.sel(sample="headef")["atoms"].sum()) == 10032
    assert not (tmp_path / "results" / "alloy" / "dumps").exists()  # no LAMMPS run for given dumps


def test_a_dump_with_more_types_than_elements_fails_naming_it(
    tmp_path: Path, alloy_run: Path
) -> None:
    from latentmech.alloy.dump import write_dump

    snap = read_dump(alloy_run / "results/alloy/dumps/random_000.dump")[-1]
    types = snap.types.copy()
    types[:10] = 4  # a fourth species the config does not name
    bad = type(snap)(snap.timestep, snap.box, snap.ids, types, snap.positions, snap.stress, {})
    write_dump(tmp_path / "bad.dump", bad)
    for i in range(3):
        shutil.copy(
            alloy_run / "results/alloy/dumps" / f"random_00{i}.dump", tmp_path / f"c{i}.dump"
        )
    rows = ["sample\tpath\tsplit", "bad\tbad.dump\ttrain", "a\tc0.dump\ttrain", "b\tc1.dump\tval",
            "c\tc2.dump\ttest"]  # fmt: skip
    write_config(tmp_path / "config.yaml", sheet_config(tmp_path, rows))
    result = snakemake(tmp_path, "--until", "alloy_dataset", check=False)
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "alloy_fields" / "bad.log").read_text()
    assert "bad.dump" in log and "atom types 1..3" in log and "[4]" in log
    assert not (tmp_path / "results" / "alloy" / "fields" / "bad.zarr").exists()
