"""The VE job graph from the config: collections, shards, per-job settings, targets, bad configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema, validate
from latentmech.ve.plan import SHARD_SIZE, VePlan
from tests.helpers import REPO

SCHEMAS = REPO / "workflow" / "schemas"


def default_ve() -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return validate(config, load_schema(SCHEMAS / "config.schema.yaml"), "config.yaml")["ve"]


def plan(ve: dict | None = None) -> VePlan:
    return VePlan(ve or default_ve(), "results", SCHEMAS)


def test_collections_are_the_splits_then_the_edge_cases() -> None:
    p = plan()
    assert p.collections("cu") == [
        "train", "val", "test", "large_grains", "small_grains", "elongated_grains",
        "brass", "copper", "cube", "goss",
    ]  # fmt: skip
    assert p.collections("mg") == ["train", "val", "test"]  # edge_count 0: none generated


def test_shards_cover_every_ve_exactly_once() -> None:
    p = plan()
    for dataset in p.datasets:
        for collection in p.collections(dataset):
            count = p.count(dataset, collection)
            ranges = [
                p.generate_settings(dataset, collection, s) for s in p.shards(dataset, collection)
            ]
            covered = [i for r in ranges for i in range(r["start"], r["stop"])]
            assert covered == list(range(count)), (dataset, collection)
            assert all(r["stop"] - r["start"] <= SHARD_SIZE for r in ranges)
    assert len(p.shard_paths("cu")) == 6 + 1 + 1  # 384 training VEs: 6 shards of 64
    assert len(p.shard_paths("cu", "edges")) == 7
    assert p.stores("cu") == ["results/ve/cu/ves.zarr", "results/ve/cu/edges.zarr"]
    assert p.stores("mg") == ["results/ve/mg/ves.zarr"]


def test_edge_cases_override_only_what_they_name() -> None:
    p = plan()
    elongated = p.generate_settings("cu", "elongated_grains", 0)
    assert elongated["grains"] == {"esd_mean": 9.54, "esd_sigma": 0.1, "cutoff_sigmas": 5.0,
                                   "aspect": [2, 1, 1]}  # fmt: skip
    assert elongated["texture"] == {"name": "random", "scatter_deg": 2.0}
    assert elongated["split"] == "edge"
    goss = p.generate_settings("cu", "goss", 0)
    assert goss["texture"]["name"] == "goss" and goss["grains"]["esd_mean"] == 5.78
    assert p.generate_settings("cu", "train", 1)["split"] == "train"


def test_training_workdir_follows_settings_and_code() -> None:
    p = plan()
    first = p.vae_settings("cu", "code-a")["workdir"]
    assert first == p.vae_settings("cu", "code-a")["workdir"]
    assert first != p.vae_settings("cu", "code-b")["workdir"]
    ve = default_ve()
    ve["vae"]["train"]["lr"] = 5e-4
    assert plan(ve).vae_settings("cu", "code-a")["workdir"] != first
    assert Path(first).parent.parent == Path("results/ve/cu/vae3d")


def test_targets_of_the_default_study() -> None:
    targets = plan().targets()
    assert "results/ve/tables/reconstruction.csv" in targets
    assert "results/ve/mg/cp/taylor/responses.csv" in targets
    assert "results/ve/figures/surrogate.png" in targets
    assert "results/ve/tables/clustering.csv" in targets
    ve = default_ve()
    ve["cp"]["dataset"] = None
    assert not any("surrogate" in t or "/cp/" in t for t in plan(ve).targets())


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda ve: ve["datasets"]["cu"]["edge_cases"].append({"name": "train"}), "edge_cases"),
        (lambda ve: ve["datasets"]["cu"]["edge_cases"].append({"name": "goss"}), "edge_cases"),
        (lambda ve: ve["cp"].update(dataset="al"), "ve.cp.dataset"),
        (lambda ve: ve["latent"].update(dataset="al"), "ve.latent.dataset"),
        (lambda ve: ve["datasets"]["mg"].update(source="sheet"), "ve.datasets.mg.sheet"),
    ],
)
def test_bad_configs_are_named(edit, key: str) -> None:
    ve = copy.deepcopy(default_ve())
    edit(ve)
    with pytest.raises(InputError, match=key.replace(".", r"\.")):
        plan(ve)


def test_the_schema_rejects_an_unknown_lattice_and_texture() -> None:
    schema = load_schema(SCHEMAS / "config.schema.yaml")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["ve"]["datasets"]["cu"]["lattice"] = "tetragonal"
    with pytest.raises(InputError, match=r"ve\.datasets\.cu\.lattice"):
        validate(config, schema, "config.yaml")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["ve"]["datasets"]["cu"]["texture"]["name"] = "s-component"
    with pytest.raises(InputError, match=r"ve\.datasets\.cu\.texture\.name"):
        validate(config, schema, "config.yaml")


@pytest.mark.parametrize(
    ("rows", "where", "problem"),
    [
        (["name\tpath\tsplit\tcolour", "a\ta.npy\ttrain\tred"], "header", "unknown column"),
        (["name\tpath\tsplit", "a\tmissing.npy\ttrain"], "line 2, column path", "no such file"),
        (["name\tpath\tsplit", "a\ta.npy\ttrain", "a\ta.npy\tval"], "column name", "duplicate"),
        (["name\tpath\tsplit", "a\ta.npy\tedge"], "line 2, column collection", "collection name"),
        (["name\tpath\tsplit", "a\ta.npy\ttraining"], "line 2, split", "is not one of"),
        (["name\tpath\tsplit\tphase", "a\ta.npy\ttrain\tone"], "line 2, column phase", "integer"),
        (
            ["name\tpath\tsplit\tcollection", "a\ta.npy\ttrain\tbatch1"],
            "column collection",
            "only edge cases",
        ),
    ],
)
def test_bad_sample_sheets_are_named(
    tmp_path: Path, rows: list[str], where: str, problem: str
) -> None:
    from latentmech.ve.sheet import read_ve_sheet

    (tmp_path / "a.npy").write_bytes(b"")
    sheet = tmp_path / "ves.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError) as error:
        read_ve_sheet(sheet, load_schema(SCHEMAS / "ve_samples.schema.yaml"))
    assert str(sheet) in str(error.value) and where in str(error.value)
    assert problem in str(error.value)


def test_a_sheet_needs_every_split(tmp_path: Path) -> None:
    (tmp_path / "a.npy").write_bytes(b"")
    (tmp_path / "ves.tsv").write_text("name\tpath\tsplit\na\ta.npy\ttrain\nb\ta.npy\tval\n")
    ve = default_ve()
    ve["datasets"] = {"real": {**ve["datasets"]["cu"], "source": "sheet",
                               "sheet": str(tmp_path / "ves.tsv")}}  # fmt: skip
    ve["cp"]["dataset"] = ve["latent"]["dataset"] = None
    with pytest.raises(InputError, match=r"at least 2 test VEs"):
        plan(ve)
    (tmp_path / "ves.tsv").write_text("name\tpath\tsplit\na\ta.npy\ttest\nb\ta.npy\ttest\n")
    with pytest.raises(InputError, match=r"split\(s\) \['train', 'val'\]"):
        plan(ve)


def test_the_cp_material_must_match_the_dataset_lattice() -> None:
    ve = default_ve()
    ve["cp"]["dataset"] = "cu"  # cubic, with the default hexagonal magnesium
    with pytest.raises(InputError, match=r"ve\.cp\.material.*hexagonal.*cubic"):
        plan(ve)
    ve["cp"]["material"] = "copper"
    assert plan(ve).cp_settings()["lattice"] == "cubic"


def test_the_damask_backend_without_damask_grid_stops_before_any_job(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    ve = default_ve()
    ve["cp"]["backend"] = "damask"
    with pytest.raises(InputError, match=r"ve\.cp\.backend.*DAMASK_grid.*not on PATH"):
        plan(ve)


def test_edge_case_overrides_are_validated() -> None:
    schema = load_schema(SCHEMAS / "config.schema.yaml")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["ve"]["datasets"]["cu"]["edge_cases"][3]["texture"]["scater_deg"] = 3.0
    with pytest.raises(InputError, match=r"edge_cases\.3\.texture.*scater_deg"):
        validate(config, schema, "config.yaml")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["ve"]["cells"] = 40
    with pytest.raises(InputError, match=r"ve\.cells.*multiple of 16"):
        validate(config, schema, "config.yaml")
