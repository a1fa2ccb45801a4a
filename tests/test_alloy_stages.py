"""The alloy stages on real inputs: block fields of a real dump, bad dumps, and a tiny full chain.

The chain md → fields → dataset → train_cvae → evaluate → sample → design → design_summary runs
the stage functions with the settings :class:`AlloyPlan` makes of a tiny config (5 random LAMMPS
cells of 4 × 4 × 4 FCC unit cells, 2 × 2 × 2 blocks of whole unit cells, a 2-epoch model), and
checks the outputs against values computed here independently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from latentmech.alloy import stages
from latentmech.alloy.cvae import MinMax, condition_mre
from latentmech.alloy.md import LammpsError, MDSettings
from latentmech.alloy.plan import AlloyPlan
from latentmech.cli import main
from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema, validate
from latentmech.core.store import open_zarr
from tests.helpers import REPO

SCHEMAS = REPO / "workflow" / "schemas"
STRESS_DUMP = "lammps_generated_here/dump.annealed300_stress.lammpstrj"  # 10032 atoms, c_s[1..6]
POSITIONS_DUMP = "lammps_dumps/HeaDef_NiCoCr_Annealed_300.dump"  # the same atoms, no stress
ELEMENTS = ["Ni", "Co", "Cr"]
TINY = {
    "samples": {"random": 5, "annealed": {"temperatures": [], "each": 0}, "seed": 3},
    "md": {"cells": [4, 4, 4], "md_steps": 0, "quench_steps": 0},  # 256 atoms
    "blocks": {"r": 2},  # blocks of 2 × 2 × 2 unit cells: 32 atoms each
    "cvae": {
        "model": {
            "encoder_channels": [4, 4],
            "feature_width": 2,
            "condition_widths": [2],
            "condition_dim": 6,
            "moment_widths": [2],
            "latent_dim": 4,
            "smoother_channels": 4,
            "smoother_widths": [2],
            "decoder_widths": [4, 4],
        },
        "train": {"epochs": 2, "batch_size": 3, "device": "cpu"},
    },
    "sampling": {"n_max": 50, "k": 0.5, "n_accept": 2},
    "design": {"candidates": 8, "iterations": 3, "isomap_neighbors": 3, "history_every": 1},
}


def fields_settings(**changes) -> dict:
    settings = {"sample": "a", "elements": ELEMENTS, "stress": "auto", "snapshot": None,
                "blocks": {"r": 4, "cutoff": None, "reference": "cell", "max_bad_fraction": 0.01},
                "eigenstrain": False}  # fmt: skip
    return settings | changes


def labels(values) -> np.ndarray:
    """String labels of a coordinate as a plain numpy array (zarr v3 gives StringDType)."""
    return np.array([str(v) for v in np.asarray(values)])


def read_text_dump(path: Path) -> dict[str, np.ndarray]:
    """A one-snapshot orthogonal ``dump custom`` parsed here (independently of alloy.dump)."""
    lines = path.read_text().splitlines()
    bounds = np.array([line.split()[:2] for line in lines[5:8]], dtype=float)
    columns = lines[8].split()[2:]
    table = np.loadtxt(path, skiprows=9)
    stress = table[:, [columns.index(f"c_s[{k}]") for k in range(1, 7)]]
    return {"types": table[:, columns.index("type")].astype(int), "stress": stress,
            "volume": float(np.prod(bounds[:, 1] - bounds[:, 0]))}  # fmt: skip


# -- fields of a real dump ------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("r", [2, 4])
def test_fields_of_a_real_stress_dump(real_data: Path, tmp_path: Path, r: int) -> None:
    dump = real_data / STRESS_DUMP
    out = tmp_path / "fields.zarr"
    stages.fields(dump, out, fields_settings(blocks=fields_settings()["blocks"] | {"r": r}))
    ds = open_zarr(out)
    reference = read_text_dump(dump)
    assert ds["concentration"].dims == ("element", "x", "y", "z")
    assert ds["concentration"].shape == (3, r, r, r) and ds["wc"].shape == (9, r, r, r)
    assert ds["stress"].shape == (6, r, r, r) and ds["stress"].attrs["units"] == "GPa"
    assert [str(e) for e in ds["element"].values] == ELEMENTS
    assert str(ds["pair"].values[5]) == "Co-Cr"  # pair (i, j) at i·3 + j
    atoms = np.asarray(ds["atoms"])
    assert atoms.sum() == 10032 == ds.attrs["atoms"]
    np.testing.assert_allclose(np.asarray(ds["concentration"]).sum(axis=0), 1.0, atol=1e-12)
    weighted = (np.asarray(ds["concentration"]) * atoms).reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(weighted, np.bincount(reference["types"])[1:], atol=1e-9)
    # equal block volumes: the block mean is Σ(stress × volume) / V, bar → GPa
    expected = reference["stress"].sum(axis=0) / reference["volume"] * 1e-4
    np.testing.assert_allclose(np.asarray(ds["stress"]).reshape(6, -1).mean(axis=1), expected,
                               rtol=1e-9, atol=1e-12)  # fmt: skip
    assert ds.attrs["volume_A3"] == pytest.approx(reference["volume"], rel=1e-12)
    assert np.all(np.isfinite(np.asarray(ds["wc"])))


@pytest.mark.realdata
def test_fields_take_the_configured_snapshot(real_data: Path, tmp_path: Path) -> None:
    text = (real_data / STRESS_DUMP).read_text()
    later = text.replace("ITEM: TIMESTEP\n0\n", "ITEM: TIMESTEP\n500\n", 1)
    dump = tmp_path / "two.dump"
    dump.write_text(text + later)
    stages.fields(dump, tmp_path / "last.zarr", fields_settings())
    stages.fields(dump, tmp_path / "first.zarr", fields_settings(snapshot="0"))
    assert open_zarr(tmp_path / "last.zarr").attrs["timestep"] == 500
    assert open_zarr(tmp_path / "first.zarr").attrs["timestep"] == 0


def _fails_cleanly(dump: Path, out: Path, settings: dict, *fragments: str) -> None:
    with pytest.raises(InputError) as error:
        stages.fields(dump, out, settings)
    message = str(error.value)
    assert str(dump) in message
    for fragment in fragments:
        assert fragment in message, message
    assert not out.exists() and not list(out.parent.glob(f"*{out.name}*"))


@pytest.mark.realdata
def test_atom_types_beyond_the_elements_are_named(real_data: Path, tmp_path: Path) -> None:
    _fails_cleanly(real_data / STRESS_DUMP, tmp_path / "f.zarr",
                   fields_settings(elements=["Ni", "Co"]),
                   "column type", "atom types 1..2", "['Ni', 'Co']", "found [3]")  # fmt: skip


@pytest.mark.realdata
def test_units_other_than_metal_are_refused(real_data: Path, tmp_path: Path) -> None:
    """The GPa stress assumes metal units: a dump saying real units (atm·Å³) is refused, one
    saying metal gives the fields of the same dump without the item."""
    text = (real_data / STRESS_DUMP).read_text()
    real = tmp_path / "real.dump"
    real.write_text("ITEM: UNITS\nreal\n" + text)
    _fails_cleanly(real, tmp_path / "real.zarr", fields_settings(),
                   "ITEM: UNITS", "metal units", "'real'")  # fmt: skip
    metal = tmp_path / "metal.dump"
    metal.write_text("ITEM: UNITS\nmetal\n" + text)
    stages.fields(metal, tmp_path / "metal.zarr", fields_settings())
    stages.fields(real_data / STRESS_DUMP, tmp_path / "plain.zarr", fields_settings())
    said, unsaid = open_zarr(tmp_path / "metal.zarr"), open_zarr(tmp_path / "plain.zarr")
    np.testing.assert_array_equal(np.asarray(said["stress"]), np.asarray(unsaid["stress"]))


@pytest.mark.realdata
def test_a_dump_without_stress_is_named(real_data: Path, tmp_path: Path) -> None:
    _fails_cleanly(real_data / POSITIONS_DUMP, tmp_path / "f.zarr", fields_settings(),
                   "snapshot 0", "no per-atom stress columns", "['id', 'type', 'x', 'y', 'z']")  # fmt: skip


@pytest.mark.realdata
def test_a_cell_too_small_for_the_block_grid_is_named(real_data: Path, tmp_path: Path) -> None:
    _fails_cleanly(real_data / STRESS_DUMP, tmp_path / "f.zarr",
                   fields_settings(blocks=fields_settings()["blocks"] | {"r": 20}),
                   "timestep 0", "r=20", "cutoff")  # fmt: skip


@pytest.mark.realdata
def test_a_truncated_dump_is_named(real_data: Path, tmp_path: Path) -> None:
    lines = (real_data / STRESS_DUMP).read_text().splitlines(keepends=True)
    dump = tmp_path / "cut.dump"
    dump.write_text("".join(lines[:5000]) + lines[5000][:17])  # cut inside an atom line
    _fails_cleanly(dump, tmp_path / "f.zarr", fields_settings(),
                   "snapshot 0", "line 5001", "of 10032 atom lines")  # fmt: skip


@pytest.mark.realdata
def test_the_cli_reports_bad_input_with_exit_code_2(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    settings = json.dumps(fields_settings(elements=["Ni", "Co"]))
    code = main(["alloy", "fields", "--dump", str(real_data / STRESS_DUMP),
                 "--fields", str(tmp_path / "f.zarr"), "--settings", settings])  # fmt: skip
    assert code == 2
    assert "atom types 1..2" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# -- md -------------------------------------------------------------------------------------------


def test_md_with_a_failing_potential_leaves_no_dump(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.eam"
    garbage.write_text("comment\ncomment\ncomment\n3 Ni Co Cr\nthis is not a potential\n")
    out = tmp_path / "dumps"
    settings = {"sample": "bad", "md": {"cells": [3, 3, 3], "elements": ELEMENTS, "seed": 1,
                                        "potential": {"style": "eam/alloy", "file": str(garbage)}}}  # fmt: skip
    with pytest.raises(LammpsError, match="pair_coeff"):
        stages.md(out / "bad.dump", out / "bad.lammps.log", settings)
    assert sorted(p.name for p in out.iterdir()) == ["bad.lammps.log"]


# -- a tiny chain of every stage ------------------------------------------------------------------


def tiny_plan(results: Path) -> AlloyPlan:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["alloy"].update(TINY)
    section = validate(config, load_schema(SCHEMAS / "config.schema.yaml"), "config.yaml")["alloy"]
    return AlloyPlan(section, results, SCHEMAS)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every stage once, with the plan's settings; returns the plan and the output paths."""
    p = tiny_plan(tmp_path_factory.mktemp("alloy"))
    path = {name: Path(p.path(*parts)) for name, parts in {
        "dataset": ("fields.zarr",), "scalers": ("scalers.json",),
        "model": ("cvae", "model.pt"), "sidecar": ("cvae", "model.json"),
        "history": ("cvae", "history.csv"), "reconstruction": ("tables", "reconstruction.csv"),
        "fig_reconstruction": ("figures", "reconstruction.png"),
        "fig_conditions": ("figures", "conditions.png"), "predictions": ("predictions.zarr",),
        "sampling": ("tables", "sampling.csv"), "fig_predictions": ("figures", "predictions.png"),
        "design": ("tables", "design.csv"), "clusters": ("tables", "design_clusters.csv"),
        "fig_design": ("figures", "design.png")}.items()}  # fmt: skip
    for sample in p.samples:
        stages.md(Path(p.dump(sample)), Path(p.path("dumps", f"{sample}.lammps.log")),
                  p.md_settings(sample))  # fmt: skip
        stages.fields(Path(p.dump(sample)), Path(p.path("fields", f"{sample}.zarr")),
                      p.fields_settings(sample))  # fmt: skip
    stages.dataset([Path(f) for f in p.field_paths()], path["dataset"], path["scalers"],
                   p.dataset_settings())  # fmt: skip
    inputs = (path["dataset"], path["model"], path["sidecar"])
    stages.train_cvae(*inputs, path["history"], p.cvae_settings("code"))
    stages.evaluate(*inputs, path["reconstruction"], path["fig_reconstruction"],
                    path["fig_conditions"], p.evaluate_settings())  # fmt: skip
    stages.sample(*inputs, path["predictions"], path["sampling"], path["fig_predictions"],
                  p.sampling_settings())  # fmt: skip
    designs = [Path(p.path("design", f"{m}.zarr")) for m in p.methods]
    for method, design in zip(p.methods, designs, strict=True):
        stages.design(*inputs, design, p.design_settings(method))
    stages.design_summary(path["dataset"], designs, path["design"], path["clusters"],
                          path["fig_design"], p.design_summary_settings())  # fmt: skip
    return {"plan": p, "path": path, "designs": designs}


def test_md_and_fields_give_blocks_of_whole_unit_cells(chain: dict) -> None:
    p = chain["plan"]
    counts = MDSettings.from_dict(p.md_settings("random_000")["md"]).type_counts()
    assert counts.tolist() == [86, 85, 85]
    for sample in p.samples:
        ds = open_zarr(p.path("fields", f"{sample}.zarr"))
        assert np.all(np.asarray(ds["atoms"]) == 32)  # 2 × 2 × 2 unit cells of 4 atoms
        per_block = np.asarray(ds["concentration"]) * 32
        np.testing.assert_allclose(per_block, np.round(per_block), atol=1e-9)
        assert np.round(per_block.reshape(3, -1).sum(axis=1)).tolist() == counts.tolist()
        assert Path(p.path("dumps", f"{sample}.lammps.log")).is_file()
    seeds = {p.md_settings(s)["md"]["seed"] for s in p.samples}
    stresses = [np.asarray(open_zarr(p.path("fields", f"{s}.zarr"))["stress"]) for s in p.samples]
    assert len(seeds) == 5 and not np.allclose(stresses[0], stresses[1])  # different cells


def test_dataset_stacks_samples_with_split_and_training_scalers(chain: dict) -> None:
    p, path = chain["plan"], chain["path"]
    ds = open_zarr(path["dataset"])
    assert [str(s) for s in ds["sample"].values] == list(p.samples)
    split = [str(s) for s in ds["split"].values]
    assert split == p.dataset_settings()["split"] and split.count("train") == 3
    stored = json.loads(path["scalers"].read_text())
    assert stored["scalers"] == ds.attrs["scalers"]
    assert stored["fields"] == ["concentration", "stress", "wc"]
    units = {name: ds[name].attrs.get("units") for name in ds.data_vars}
    assert units == {"concentration": "atom fraction", "wc": "1", "stress": "GPa",
                     "atoms": "count"}  # fmt: skip
    train = np.asarray(split) == "train"
    for name in stored["fields"]:
        values = np.asarray(ds[name])
        for i, sample in enumerate(p.samples):  # stacked in the plan's order
            part = open_zarr(p.path("fields", f"{sample}.zarr"))[name]
            np.testing.assert_array_equal(values[i], np.asarray(part))
        scaler = MinMax.from_dict(stored["scalers"][name])
        scaled = scaler.transform(values[train], axis=1)
        flat = np.moveaxis(scaled, 1, 0).reshape(scaled.shape[1], -1)
        np.testing.assert_allclose(flat.min(axis=1), 0.0, atol=1e-12)
        np.testing.assert_allclose(flat.max(axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(scaler.inverse(scaler.transform(values, axis=1), axis=1),
                                   values, atol=1e-12)  # fmt: skip


def test_training_writes_the_model_its_sidecar_and_history(chain: dict) -> None:
    path = chain["path"]
    net, meta = stages.load_cvae(path["model"], path["sidecar"])
    assert meta["config"]["blocks"] == 2 and meta["config"]["target_channels"] == 6
    assert meta["config"]["conditions"] == [{"name": "c", "channels": 2},
                                            {"name": "w", "channels": 9}]  # fmt: skip
    assert meta["fields"]["target"] == "stress" and meta["epochs_run"] == 2
    assert meta["parameters"] == sum(t.numel() for t in net.parameters())
    history = pd.read_csv(path["history"])
    assert history["epoch"].tolist() == [1, 2]
    assert min(history["val_loss"]) == pytest.approx(meta["best_val_loss"])


def test_a_batch_of_one_is_refused_before_training(chain: dict, tmp_path: Path) -> None:
    p = chain["plan"]
    settings = p.cvae_settings("code")
    settings["train"] = settings["train"] | {"batch_size": 2}  # 3 training samples: 2 + 1
    settings["workdir"] = str(tmp_path / "work")
    with pytest.raises(InputError, match=r"alloy\.cvae\.train\.batch_size.*3 training samples"):
        stages.train_cvae(chain["path"]["dataset"], tmp_path / "m.pt", tmp_path / "m.json",
                          tmp_path / "h.csv", settings)  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_reconstruction_table_has_every_metric_for_train_and_test(chain: dict) -> None:
    path = chain["path"]
    table = pd.read_csv(path["reconstruction"])
    ds = open_zarr(path["dataset"])
    stress, split = np.asarray(ds["stress"]), labels(ds["split"])
    baseline = stress[split == "train"].mean(axis=0)
    for part in ("train", "test"):
        rows = table[table["split"] == part]
        model = rows[rows["predictor"] == "model"].set_index(["metric", "component"])["value"]
        for metric in ("mre", "mre_scaled", "r2"):
            assert np.isfinite(model[(metric, "all")])
        for component in ("xx", "yy", "zz", "xy", "xz", "yz"):
            assert np.isfinite(model[("mre", component)]) and np.isfinite(model[("r2", component)])
        assert set(model.loc["condition_mre"].index) == {"c", "w"}
        mean = rows[rows["predictor"] == "training mean"].set_index(["metric", "component"])
        reference = stress[split == part]
        mre = np.mean(np.abs(baseline - reference) / np.abs(reference))
        r2 = 1 - np.sum((reference - baseline) ** 2) / np.sum((reference - reference.mean()) ** 2)
        assert mean.loc[("mre", "all"), "value"] == pytest.approx(mre, rel=1e-4)
        assert mean.loc[("r2", "all"), "value"] == pytest.approx(r2, rel=1e-4, abs=1e-6)
    assert table["definition"].notna().all()
    for figure in ("fig_reconstruction", "fig_conditions"):
        assert path[figure].stat().st_size > 10_000


def _scaled_conditions(ds, test: np.ndarray) -> dict[str, torch.Tensor]:
    scalers = {k: MinMax.from_dict(v) for k, v in ds.attrs["scalers"].items()}
    c = scalers["concentration"].select([0, 1]).transform(
        np.asarray(ds["concentration"])[test][:, :2], axis=1)  # fmt: skip
    w = scalers["wc"].transform(np.asarray(ds["wc"])[test], axis=1)
    return {"c": torch.tensor(c, dtype=torch.float32), "w": torch.tensor(w, dtype=torch.float32)}


def test_predictions_are_self_checked_realisations(chain: dict) -> None:
    path, k = chain["path"], TINY["sampling"]["k"]
    ds = open_zarr(path["dataset"])
    out = open_zarr(path["predictions"])
    test = labels(ds["split"]) == "test"
    assert [str(s) for s in out["input"].values] == [str(s) for s in ds["sample"].values[test]]
    assert out["prediction"].shape == (int(test.sum()), 2, 6, 2, 2, 2)
    for name in ("prediction", "reference"):
        assert out[name].attrs == {"field": "stress", "units": "GPa"}
    np.testing.assert_allclose(np.asarray(out["reference"]), np.asarray(ds["stress"])[test],
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    valid = np.asarray(out["valid"])
    assert valid.any()
    for name in ("c", "w"):
        mre = np.asarray(out[f"mre_{name}"])
        assert np.all(mre[valid] <= k) and np.all(np.isnan(mre[~valid]))
    assert np.all(np.isnan(np.asarray(out["prediction"])[~valid]))
    # re-check independently: encode the stored (physical) prediction, compare with the smoother
    net, _ = stages.load_cvae(path["model"], path["sidecar"])
    stress_scaler = MinMax.from_dict(ds.attrs["scalers"]["stress"])
    conditions = _scaled_conditions(ds, test)
    with torch.no_grad():
        smoothed = net.smooth(conditions)
        for i, s in zip(*np.nonzero(valid), strict=True):
            scaled = stress_scaler.transform(np.asarray(out["prediction"])[i, s], axis=0)
            assert np.all((scaled > 0) & (scaled < 1))  # the decoder's sigmoid range
            again = net.encode_conditions(torch.tensor(scaled[None], dtype=torch.float32))
            for name in ("c", "w"):
                mre = float(condition_mre(again[name], smoothed[name][i : i + 1])[0])
                assert mre == pytest.approx(float(out[f"mre_{name}"][i, s]), rel=1e-3)
    table = pd.read_csv(path["sampling"]).set_index("input")
    assert table.loc["all", "accepted"] == valid.sum() == int(np.asarray(out["accepted"]).sum())
    assert table.loc["all", "acceptance_rate"] == pytest.approx(
        valid.sum() / np.asarray(out["attempts"]).sum())  # fmt: skip
    assert path["fig_predictions"].stat().st_size > 10_000


def test_design_candidates_are_concentration_fields_of_three_elements(chain: dict) -> None:
    candidates = TINY["design"]["candidates"]
    for method, design in zip(["random", "fixed"], chain["designs"], strict=True):
        out = open_zarr(design)
        assert out.attrs["method"] == method
        conc = np.asarray(out["concentration"])
        assert conc.shape == (candidates, 3, 2, 2, 2)
        assert [str(e) for e in out["element"].values] == ELEMENTS
        np.testing.assert_allclose(conc[:, 2], 1.0 - conc[:, 0] - conc[:, 1], atol=1e-6)
        stress = np.asarray(out["stress"])
        assert stress.shape == (candidates, 6, 2, 2, 2)
        tau = (stress[:, 0] - stress[:, 1] + stress[:, 4] - stress[:, 5]) / math.sqrt(6)
        np.testing.assert_allclose(np.asarray(out["tau2_after"]),
                                   (tau**2).reshape(candidates, -1).mean(axis=1), rtol=1e-4)  # fmt: skip
        assert out["history"].shape[0] == TINY["design"]["iterations"] + 1
        units = {name: out[name].attrs.get("units") for name in
                 ("concentration", "initial_concentration", "stress", "tau2_after")}  # fmt: skip
        assert units == {"concentration": "atom fraction", "initial_concentration": "atom fraction",
                         "stress": "GPa", "tau2_after": "GPa2"}  # fmt: skip
        assert np.all(np.isfinite(np.asarray(out["mre_c"])))


def test_design_summary_tables(chain: dict) -> None:
    path = chain["path"]
    ds = open_zarr(path["dataset"])
    train = labels(ds["split"]) == "train"
    stress = np.asarray(ds["stress"])[train]
    tau = (stress[:, 0] - stress[:, 1] + stress[:, 4] - stress[:, 5]) / math.sqrt(6)
    table = pd.read_csv(path["design"]).set_index("method")
    assert table.index.tolist() == ["random", "fixed"]
    assert (table["candidates"] == TINY["design"]["candidates"]).all()
    np.testing.assert_allclose(table["tau2_train"], np.mean(tau.reshape(len(tau), -1) ** 2))
    for method, design in zip(table.index, chain["designs"], strict=True):
        out = open_zarr(design)
        assert table.loc[method, "tau2_after"] == pytest.approx(float(out["tau2_after"].mean()))
        mre = np.maximum(np.asarray(out["mre_c"]), np.asarray(out["mre_w"]))
        assert table.loc[method, "fraction_self_checked"] == pytest.approx(
            np.mean(mre <= TINY["design"].get("k", 0.04)))  # fmt: skip
    clusters = pd.read_csv(path["clusters"])
    assert (clusters.groupby("method")["size"].sum() == TINY["design"]["candidates"]).all()
    np.testing.assert_allclose(clusters[ELEMENTS].sum(axis=1), 1.0, atol=1e-6)
    assert path["fig_design"].stat().st_size > 10_000
