"""Eigenstrain (section 4.1.2) and the two eigenstrain frameworks of section 2.5, stage by stage.

With ``alloy.eigenstrain: true`` the ``fields`` stage relaxes every block of a LAMMPS cell on its
own and stores its eigenstrain; the frameworks "composition → eigenstrain" and "composition +
eigenstrain → stress" (SI G, Fig. 19) are then only other ``alloy.cvae.fields`` of the same
AlloyVAE. Four random cells of 4 × 4 × 4 FCC unit cells (256 atoms, the MEAM default) made by
the ``md`` stage, 2 × 2 × 2 blocks of 2 × 2 × 2 unit cells (32 atoms), 2-epoch tiny models; the
settings are those :class:`AlloyPlan` makes of the schema-validated config.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from latentmech.alloy import stages
from latentmech.alloy.cvae import MinMax, condition_mre
from latentmech.alloy.md import MDSettings, block_eigenstrain
from latentmech.alloy.plan import AlloyPlan
from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema, validate
from latentmech.core.store import open_zarr
from latentmech.core.workflow import as_json
from tests.helpers import REPO

SCHEMAS = REPO / "workflow" / "schemas"
TINY = {
    "samples": {"random": 4, "annealed": {"temperatures": [], "each": 0}, "seed": 5},
    "md": {"cells": [4, 4, 4], "md_steps": 0, "quench_steps": 0},  # 256 atoms
    "blocks": {"r": 2},  # blocks of 2 × 2 × 2 unit cells: 32 atoms each
    "eigenstrain": True,
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
        "train": {"epochs": 2, "batch_size": 2, "device": "cpu"},
    },
    "sampling": {"n_max": 50, "k": 1.0, "n_accept": 2},  # 2-epoch models: loose k
}
#: Section 2.5 / SI Fig. 19: (a) composition → eigenstrain, (b) composition + eigenstrain → stress.
EIGENSTRAIN_TARGET = {"target": "eigenstrain", "conditions": {"c": "concentration", "w": "wc"}}
STRESS_FROM_EIGENSTRAIN = {"target": "stress",
                           "conditions": {"c": "concentration", "w": "wc", "e": "eigenstrain"}}  # fmt: skip


def section(**changes) -> dict:
    """config.yaml's alloy section with TINY and ``changes`` on top, validated by the schema."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["alloy"].update(copy.deepcopy(TINY))
    for key, value in changes.items():
        config["alloy"][key] = copy.deepcopy(value)
    return validate(config, load_schema(SCHEMAS / "config.schema.yaml"), "config.yaml")["alloy"]


def make_plan(results: Path, fields: dict, **changes) -> AlloyPlan:
    cvae = copy.deepcopy(TINY["cvae"]) | {"fields": fields}
    return AlloyPlan(section(cvae=cvae, **changes), results, SCHEMAS)


def read_orthogonal_dump(path: Path) -> dict[str, np.ndarray]:
    """Positions, types and box of a one-snapshot orthogonal ``dump custom``, parsed here."""
    lines = path.read_text().splitlines()
    assert lines[4].split()[3:] == ["pp", "pp", "pp"]
    bounds = np.array([line.split()[:2] for line in lines[5:8]], dtype=float)
    columns = lines[8].split()[2:]
    table = np.loadtxt(path, skiprows=9)
    return {"types": table[:, columns.index("type")].astype(np.int64),
            "positions": table[:, [columns.index(k) for k in ("x", "y", "z")]],
            "origin": bounds[:, 0], "matrix": np.diag(bounds[:, 1] - bounds[:, 0])}  # fmt: skip


def channels(meta: dict) -> dict[str, int]:
    """The sidecar's condition groups, name → channels."""
    return {group["name"]: group["channels"] for group in meta["config"]["conditions"]}


def labels(values) -> np.ndarray:
    return np.array([str(v) for v in np.asarray(values)])


# -- the cells, their fields with eigenstrain, the dataset ---------------------------------------


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """md → fields (eigenstrain on) → dataset for the samples of the first framework's plan."""
    p = make_plan(tmp_path_factory.mktemp("cells"), EIGENSTRAIN_TARGET)
    for sample in p.samples:
        stages.md(Path(p.dump(sample)), Path(p.path("dumps", f"{sample}.lammps.log")),
                  p.md_settings(sample))  # fmt: skip
        stages.fields(Path(p.dump(sample)), Path(p.path("fields", f"{sample}.zarr")),
                      p.fields_settings(sample))  # fmt: skip
    dataset, scalers = Path(p.path("fields.zarr")), Path(p.path("scalers.json"))
    stages.dataset([Path(f) for f in p.field_paths()], dataset, scalers, p.dataset_settings())
    return {"plan": p, "dataset": dataset, "scalers": scalers}


def test_fields_store_the_block_eigenstrain_of_the_dump(cells: dict) -> None:
    p = cells["plan"]
    settings = p.fields_settings("random_000")
    assert settings["eigenstrain"] is True
    md = MDSettings.from_dict(settings["md"])
    assert md.potential["style"] == "meam" and md.eigenstrain_method == "periodic"
    strains = []
    for sample in p.samples:
        ds = open_zarr(p.path("fields", f"{sample}.zarr"))
        assert ds["eigenstrain"].dims == ("strain", "x", "y", "z")
        assert ds["eigenstrain"].attrs["units"] == "1"  # dimensionless
        assert labels(ds["strain"]).tolist() == ["volumetric"]
        assert np.all(np.asarray(ds["atoms"]) == 32)
        dump = read_orthogonal_dump(Path(p.dump(sample)))
        again = block_eigenstrain(dump["positions"], dump["types"], dump["matrix"],
                                  dump["origin"], 2, md)  # fmt: skip
        stored = np.asarray(ds["eigenstrain"])
        assert stored.shape == (1, 2, 2, 2)
        np.testing.assert_allclose(stored[0], again, rtol=1e-6, atol=1e-9)
        assert np.all(np.isfinite(stored)) and np.all(np.abs(stored) < 0.05)
        strains.append(stored[0])
    strains = np.stack(strains)
    # mixed blocks differ; the cells are at zero normal stress, so their blocks scatter around 0
    assert strains.std() > 1e-4 and abs(strains.mean()) < strains.std()


def test_dataset_stacks_eigenstrain_with_its_training_scaler(cells: dict) -> None:
    p = cells["plan"]
    ds = open_zarr(cells["dataset"])
    stored = yaml.safe_load(cells["scalers"].read_text())  # JSON is YAML
    assert stored["fields"] == ["concentration", "eigenstrain", "stress", "wc"]
    values = np.asarray(ds["eigenstrain"])
    assert values.shape == (4, 1, 2, 2, 2)
    for i, sample in enumerate(p.samples):
        part = open_zarr(p.path("fields", f"{sample}.zarr"))["eigenstrain"]
        np.testing.assert_array_equal(values[i], np.asarray(part))
    train = labels(ds["split"]) == "train"
    scaler = MinMax.from_dict(stored["scalers"]["eigenstrain"])
    scaled = scaler.transform(values[train], axis=1)
    assert scaled.min() == pytest.approx(0.0, abs=1e-12)
    assert scaled.max() == pytest.approx(1.0, abs=1e-12)


# -- framework (a): composition → eigenstrain -----------------------------------------------------


def _paths(p: AlloyPlan) -> dict[str, Path]:
    return {name: Path(p.path(*parts)) for name, parts in {
        "model": ("cvae", "model.pt"), "sidecar": ("cvae", "model.json"),
        "history": ("cvae", "history.csv"), "reconstruction": ("tables", "reconstruction.csv"),
        "fig_reconstruction": ("figures", "reconstruction.png"),
        "fig_conditions": ("figures", "conditions.png"), "predictions": ("predictions.zarr",),
        "sampling": ("tables", "sampling.csv"),
        "fig_predictions": ("figures", "predictions.png")}.items()}  # fmt: skip


def _framework(cells: dict, results: Path, fields: dict, evaluate: bool) -> dict:
    """train_cvae (→ evaluate) → sample with the settings of a plan of this framework."""
    p = make_plan(results, fields)
    # the same samples and fields as the cells' plan: its dataset is this plan's dataset
    assert p.dataset_settings() == cells["plan"].dataset_settings()
    assert all(p.fields_settings(s) == cells["plan"].fields_settings(s) for s in p.samples)
    path = _paths(p)
    inputs = (cells["dataset"], path["model"], path["sidecar"])
    # through JSON as the rules pass params (sorted keys: the model's conditions come by name)
    settings = json.loads(as_json(p.cvae_settings("code")))
    stages.train_cvae(*inputs, path["history"], settings)
    if evaluate:
        stages.evaluate(*inputs, path["reconstruction"], path["fig_reconstruction"],
                        path["fig_conditions"], p.evaluate_settings())  # fmt: skip
    stages.sample(*inputs, path["predictions"], path["sampling"], path["fig_predictions"],
                  p.sampling_settings())  # fmt: skip
    return {"plan": p, "path": path}


@pytest.fixture(scope="module")
def to_eigenstrain(cells: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _framework(cells, tmp_path_factory.mktemp("a"), EIGENSTRAIN_TARGET, evaluate=True)


@pytest.fixture(scope="module")
def to_stress(cells: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _framework(cells, tmp_path_factory.mktemp("b"), STRESS_FROM_EIGENSTRAIN,
                      evaluate=False)  # fmt: skip


def test_eigenstrain_framework_is_a_one_channel_model_of_c_and_w(to_eigenstrain: dict) -> None:
    p, path = to_eigenstrain["plan"], to_eigenstrain["path"]
    net, meta = stages.load_cvae(path["model"], path["sidecar"])
    assert meta["fields"] == EIGENSTRAIN_TARGET and meta["epochs_run"] == 2
    assert meta["config"]["target_channels"] == 1 and meta["config"]["blocks"] == 2
    assert channels(meta) == {"c": 2, "w": 9} and set(net.config.condition_names) == {"c", "w"}
    assert p.methods == [] and not any("design" in t for t in p.targets())


def test_eigenstrain_reconstruction_table(cells: dict, to_eigenstrain: dict) -> None:
    table = pd.read_csv(to_eigenstrain["path"]["reconstruction"])
    ds = open_zarr(cells["dataset"])
    strain, split = np.asarray(ds["eigenstrain"]), labels(ds["split"])
    baseline = strain[split == "train"].mean(axis=0)
    assert set(table["component"]) == {"all", "volumetric", "c", "w"}
    for part in ("train", "test"):
        rows = table[table["split"] == part]
        model = rows[rows["predictor"] == "model"].set_index(["metric", "component"])["value"]
        for metric in ("mre", "r2"):
            assert np.isfinite(model[(metric, "volumetric")])
            assert model[(metric, "volumetric")] == pytest.approx(model[(metric, "all")])
        assert set(model.loc["condition_mre"].index) == {"c", "w"}
        mean = rows[rows["predictor"] == "training mean"].set_index(["metric", "component"])
        reference = strain[split == part]
        mre = np.mean(np.abs(baseline - reference) / np.abs(reference))
        assert mean.loc[("mre", "volumetric"), "value"] == pytest.approx(mre, rel=1e-4)


def test_eigenstrain_predictions_are_one_channel_fields(cells: dict, to_eigenstrain: dict) -> None:
    ds = open_zarr(cells["dataset"])
    out = open_zarr(to_eigenstrain["path"]["predictions"])
    test = labels(ds["split"]) == "test"
    assert out["prediction"].dims[2] == "strain"
    assert out["prediction"].shape == (int(test.sum()), TINY["sampling"]["n_accept"], 1, 2, 2, 2)
    np.testing.assert_allclose(np.asarray(out["reference"]), np.asarray(ds["eigenstrain"])[test],
                               rtol=1e-5, atol=1e-9)  # fmt: skip
    assert {"mre_c", "mre_w"} <= set(out.data_vars) and "mre_e" not in out.data_vars


# -- framework (b): composition + eigenstrain → stress --------------------------------------------


def test_stress_framework_takes_eigenstrain_as_a_third_condition(to_stress: dict) -> None:
    net, meta = stages.load_cvae(to_stress["path"]["model"], to_stress["path"]["sidecar"])
    assert meta["fields"] == STRESS_FROM_EIGENSTRAIN
    assert meta["config"]["target_channels"] == 6
    assert channels(meta) == {"c": 2, "w": 9, "e": 1}
    assert len(net.config.condition_names) == 3


def test_stress_predictions_are_self_checked_on_the_eigenstrain_too(cells: dict,
                                                                    to_stress: dict) -> None:  # fmt: skip
    ds = open_zarr(cells["dataset"])
    out = open_zarr(to_stress["path"]["predictions"])
    test = labels(ds["split"]) == "test"
    n_accept = TINY["sampling"]["n_accept"]
    assert out["prediction"].shape == (int(test.sum()), n_accept, 6, 2, 2, 2)
    valid = np.asarray(out["valid"])
    assert valid.any()
    # the stored MRE of e is the encoder's eigenstrain condition of the stored (physical) stress
    # against the smoother of the dataset's eigenstrain, scaled here with the stored scalers
    scalers = {k: MinMax.from_dict(v) for k, v in ds.attrs["scalers"].items()}
    conditions = {
        "c": scalers["concentration"].select([0, 1]).transform(
            np.asarray(ds["concentration"])[test][:, :2], axis=1),
        "w": scalers["wc"].transform(np.asarray(ds["wc"])[test], axis=1),
        "e": scalers["eigenstrain"].transform(np.asarray(ds["eigenstrain"])[test], axis=1),
    }  # fmt: skip
    net, _ = stages.load_cvae(to_stress["path"]["model"], to_stress["path"]["sidecar"])
    with torch.no_grad():
        smoothed = net.smooth({k: torch.tensor(v, dtype=torch.float32)
                               for k, v in conditions.items()})  # fmt: skip
        for i, s in zip(*np.nonzero(valid), strict=True):
            scaled = scalers["stress"].transform(np.asarray(out["prediction"])[i, s], axis=0)
            again = net.encode_conditions(torch.tensor(scaled[None], dtype=torch.float32))
            for name in ("c", "w", "e"):
                mre = float(condition_mre(again[name], smoothed[name][i : i + 1])[0])
                assert mre == pytest.approx(float(out[f"mre_{name}"][i, s]), rel=1e-3)
                assert mre <= TINY["sampling"]["k"]


def test_the_stress_from_eigenstrain_framework_asks_for_no_design(tmp_path: Path) -> None:
    p = make_plan(tmp_path, STRESS_FROM_EIGENSTRAIN)
    assert p.methods == [] and not any("design" in t for t in p.targets())


# -- eigenstrain asked for but not computed -------------------------------------------------------


@pytest.mark.parametrize("fields", [EIGENSTRAIN_TARGET, STRESS_FROM_EIGENSTRAIN])
def test_an_eigenstrain_model_without_alloy_eigenstrain_is_refused_at_plan_time(
    tmp_path: Path, fields: dict
) -> None:
    with pytest.raises(InputError, match=r"alloy\.cvae\.fields.*alloy\.eigenstrain: true"):
        make_plan(tmp_path, fields, eigenstrain=False)
    assert not list(tmp_path.iterdir())
    assert make_plan(tmp_path, fields).config["eigenstrain"] is True  # the same, switched on


def test_a_dataset_without_eigenstrain_is_refused_before_training(cells: dict,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    """A dataset made with alloy.eigenstrain off, handed to the stage: named, nothing written."""
    p = cells["plan"]
    fields = []
    for sample in p.samples:
        fields.append(tmp_path / "fields" / f"{sample}.zarr")
        stages.fields(Path(p.dump(sample)), fields[-1],
                      p.fields_settings(sample) | {"eigenstrain": False})  # fmt: skip
    dataset = tmp_path / "fields.zarr"
    stages.dataset(fields, dataset, tmp_path / "scalers.json", p.dataset_settings())
    assert "eigenstrain" not in open_zarr(dataset)
    out = tmp_path / "out"
    settings = make_plan(tmp_path / "plan", STRESS_FROM_EIGENSTRAIN).cvae_settings("code")
    settings["workdir"] = str(out / "work")
    with pytest.raises(InputError, match=r"alloy\.cvae\.fields \(e\).*'eigenstrain'"):
        stages.train_cvae(dataset, out / "m.pt", out / "m.json", out / "h.csv", settings)
    assert not out.exists()
