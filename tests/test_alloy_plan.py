"""The alloy job graph from the config: samples, seeds, per-rule settings, split, targets, sheets."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from latentmech.alloy.md import MDSettings
from latentmech.alloy.plan import SPLITS, AlloyPlan, read_alloy_sheet, sample_seed
from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema, validate
from tests.helpers import REPO

SCHEMAS = REPO / "workflow" / "schemas"
N_RANDOM, TEMPERATURES, EACH = 12, [600, 700, 800, 900, 1000, 1100], 2  # the tests' samples


def raw_config() -> dict:
    """config.yaml with the sample layout these tests count on (12 random, 6 × 2 anneals)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["alloy"]["samples"] = {"random": N_RANDOM, "seed": 1,
                                  "annealed": {"temperatures": TEMPERATURES, "each": EACH}}  # fmt: skip
    return config


def validated(config: dict) -> dict:
    """The alloy section after schema validation (defaults filled), as the Snakefile sees it."""
    return validate(config, load_schema(SCHEMAS / "config.schema.yaml"), "config.yaml")["alloy"]


def alloy(**changes) -> dict:
    """config.yaml's alloy section with top-level keys replaced, validated."""
    config = raw_config()
    config["alloy"].update(copy.deepcopy(changes))
    return validated(config)


def plan(section: dict | None = None) -> AlloyPlan:
    return AlloyPlan(section or alloy(), "results", SCHEMAS)


def write_sheet(folder: Path, rows: list[str], dumps: tuple[str, ...] = ()) -> Path:
    for name in dumps:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("ITEM: TIMESTEP\n0\n")
    sheet = folder / "alloy.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def split_sheet(folder: Path, names: list[str], splits: list[str]) -> Path:
    """A sheet of ``{name}.dump`` files (made) with the given split column."""
    rows = [f"{n}\t{n}.dump\t{s}" for n, s in zip(names, splits, strict=True)]
    return write_sheet(folder, ["sample\tpath\tsplit", *rows], tuple(f"{n}.dump" for n in names))


def sheet_alloy(sheet: Path) -> dict:
    return alloy(source="sheet", sheet=str(sheet))


# -- samples and seeds ----------------------------------------------------------------------------


def test_samples_are_the_random_cells_then_each_anneal_temperature() -> None:
    p = plan()
    names = list(p.samples)
    assert len(names) == N_RANDOM + len(TEMPERATURES) * EACH == 24
    assert names[:N_RANDOM] == [f"random_{i:03d}" for i in range(N_RANDOM)]
    assert names[N_RANDOM:] == [f"sro{t}_{i:03d}" for t in TEMPERATURES for i in range(EACH)]
    assert all(p.samples[n]["temperature"] is None for n in names[:N_RANDOM])
    assert p.samples["sro1100_001"]["temperature"] == 1100.0
    small = plan(alloy(samples={"random": 2, "annealed": {"temperatures": [650, 612.5],
                                                          "each": 1}}))  # fmt: skip
    assert list(small.samples) == ["random_000", "random_001", "sro650_000", "sro612.5_000"]
    assert small.samples["sro612.5_000"]["temperature"] == 612.5
    assert p.dump("random_003") == "results/alloy/dumps/random_003.dump"
    assert p.field_paths()[-1] == "results/alloy/fields/sro1100_001.zarr"


def test_equal_anneal_temperatures_would_share_names_and_are_refused() -> None:
    with pytest.raises(InputError, match=r"alloy\.samples\.annealed\.temperatures.*distinct"):
        plan(alloy(samples={"random": 3, "annealed": {"temperatures": [600, 600.0], "each": 1}}))


def test_fewer_than_three_samples_is_refused() -> None:
    with pytest.raises(InputError, match=r"alloy\.samples.*at least 3 samples.*got 2"):
        plan(alloy(samples={"random": 1, "annealed": {"temperatures": [700], "each": 1}}))


def test_seeds_are_stable_across_processes_and_distinct_per_sample() -> None:
    p = plan()
    seeds = {n: p.md_settings(n)["md"]["seed"] for n in p.samples}
    assert len(set(seeds.values())) == len(seeds)
    assert all(1 <= s <= 900_000_000 for s in seeds.values())
    assert seeds == {n: plan().md_settings(n)["md"]["seed"] for n in p.samples}
    other = plan(alloy(samples={"seed": 2}))
    assert all(other.md_settings(n)["md"]["seed"] != seeds[n] for n in p.samples)
    # Python's hash() would differ between interpreter runs; the seed must not
    script = "from latentmech.alloy.plan import sample_seed; print(sample_seed(1, 'sro600_000'))"
    for hash_seed in ("0", "12345"):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env={"PYTHONHASHSEED": hash_seed}, check=True)  # fmt: skip
        assert int(out.stdout) == seeds["sro600_000"] == sample_seed(1, "sro600_000")


# -- settings per rule ----------------------------------------------------------------------------


def test_md_settings_are_valid_lammps_settings_per_sample() -> None:
    p = plan()
    random = p.md_settings("random_005")
    assert random["sample"] == "random_005"
    settings = MDSettings.from_dict(random["md"])
    assert settings.elements == ("Ni", "Co", "Cr") and settings.anneal_temperature is None
    assert settings.cells == (8, 8, 8) and settings.md_steps == 40
    assert settings.seed == sample_seed(1, "random_005")
    anneal = MDSettings.from_dict(p.md_settings("sro800_001")["md"])
    assert anneal.anneal_temperature == 800.0 and anneal.seed == sample_seed(1, "sro800_001")
    binary = plan(alloy(elements=["Ni", "Co"]))
    assert MDSettings.from_dict(binary.md_settings("random_000")["md"]).elements == ("Ni", "Co")
    config = raw_config()
    config["alloy"]["md"]["lattice_constant"] = 3.6
    assert MDSettings.from_dict(plan(validated(config)).md_settings("random_000")["md"]
                                ).lattice_constant == 3.6  # fmt: skip


def test_fields_settings_carry_elements_grid_and_eigenstrain_md() -> None:
    settings = plan().fields_settings("sro700_000")
    assert settings == {"sample": "sro700_000", "elements": ["Ni", "Co", "Cr"],
                        "blocks": {"r": 4, "cutoff": None, "reference": "cell",
                                   "max_bad_fraction": 0.01},
                        "stress": "auto", "snapshot": None, "eigenstrain": False}  # fmt: skip
    with_strain = plan(alloy(eigenstrain=True)).fields_settings("random_000")
    md = MDSettings.from_dict(with_strain["md"])
    assert with_strain["eigenstrain"] is True and md.elements == ("Ni", "Co", "Cr")
    assert md.cells == (8, 8, 8)


def test_training_workdir_follows_settings_and_code() -> None:
    p = plan()
    first = p.cvae_settings("code-a")["workdir"]
    assert first == plan().cvae_settings("code-a")["workdir"]
    assert first != p.cvae_settings("code-b")["workdir"]
    config = raw_config()
    config["alloy"]["cvae"]["train"]["lr"] = 5e-4
    assert plan(validated(config)).cvae_settings("code-a")["workdir"] != first
    assert Path(first).parent == Path("results/alloy/cvae/checkpoints")
    assert set(p.cvae_settings("x")) == {"fields", "model", "loss", "train", "augment",
                                         "threads", "workdir"}  # fmt: skip
    design = p.design_settings("fixed")
    assert design["method"] == "fixed" and "methods" not in design
    assert design["elements"] == ["Ni", "Co", "Cr"]
    assert design["candidates"] == config["alloy"]["design"]["candidates"]
    assert not {"k", "n_clusters", "isomap_neighbors"} & set(design)  # the summary's, not Alg. 2's
    assert set(p.design_summary_settings()) == {"k", "n_clusters", "isomap_neighbors", "seed"}


def test_md_settings_carry_only_what_changes_a_cells_run() -> None:
    p = plan(validated(raw_config()))
    random, annealed = p.md_settings("random_000")["md"], p.md_settings("sro800_000")["md"]
    assert "md_steps" not in random and "swap_fraction" not in random
    assert annealed["md_steps"] == raw_config()["alloy"]["md"]["md_steps"]
    assert not {"eigenstrain_method", "eigenstrain_box"} & (set(random) | set(annealed))


def test_a_misspelt_md_key_or_missing_potential_fails_at_plan_time() -> None:
    config = raw_config()
    config["alloy"]["md"]["md_stpes"] = 10
    with pytest.raises(InputError, match="md_stpes"):
        plan(validated(config))
    config = raw_config()
    config["alloy"]["md"]["potential"] = {"style": "eam/alloy", "file": "/nowhere/CoCrNi.eam"}
    with pytest.raises(InputError, match="nowhere"):
        plan(validated(config))


# -- the split ------------------------------------------------------------------------------------


def test_split_is_seeded_with_ten_percent_test_and_val_from_training() -> None:
    p = plan()
    split = p.split()
    assert list(split) == list(p.samples)
    assert Counter(split.values()) == {"train": 20, "val": 2, "test": 2}
    assert split == plan().split()  # deterministic
    others = [plan(alloy(split={"seed": s})).split() for s in (1, 2)]
    assert all(Counter(o.values()) == Counter(split.values()) for o in others)
    assert any(o != split for o in others)  # the seed decides which samples
    settings = p.dataset_settings()
    assert settings["samples"] == list(p.samples)
    assert settings["split"] == [split[n] for n in p.samples]
    wider = plan(alloy(split={"test_fraction": 0.25, "val_fraction": 0.125}))
    assert Counter(wider.split().values()) == {"train": 15, "val": 3, "test": 6}


def test_split_has_a_sample_in_every_part_or_is_refused() -> None:
    three = plan(alloy(samples={"random": 3, "annealed": {"each": 0}}))
    assert sorted(three.split().values()) == ["test", "train", "val"]
    with pytest.raises(InputError, match=r"alloy\.split.*none in \['train'\]"):
        plan(alloy(samples={"random": 4, "annealed": {"each": 0}},
                   split={"test_fraction": 0.5, "val_fraction": 0.5}))  # fmt: skip


# -- targets --------------------------------------------------------------------------------------


def test_targets_drop_design_without_a_stress_target() -> None:
    targets = plan().targets()
    assert "results/alloy/tables/reconstruction.csv" in targets
    assert "results/alloy/figures/predictions.png" in targets
    assert "results/alloy/tables/design_clusters.csv" in targets
    assert plan().methods == ["random", "fixed"]
    assert plan(alloy(design={"methods": ["fixed"]})).methods == ["fixed"]
    config = raw_config()
    config["alloy"]["eigenstrain"] = True
    config["alloy"]["cvae"]["fields"] = {"target": "eigenstrain",
                                         "conditions": {"c": "concentration", "w": "wc"}}  # fmt: skip
    eigen = plan(validated(config))
    assert eigen.methods == []
    assert not any("design" in t for t in eigen.targets())
    assert "results/alloy/tables/sampling.csv" in eigen.targets()


def test_an_eigenstrain_model_without_eigenstrain_fields_fails_early() -> None:
    config = raw_config()
    config["alloy"]["cvae"]["fields"]["conditions"]["e"] = "eigenstrain"
    with pytest.raises(InputError, match=r"alloy\.cvae\.fields.*alloy\.eigenstrain: true"):
        plan(validated(config))


def test_the_schema_names_bad_alloy_keys() -> None:
    for edit, key in (
        (lambda a: a["blocks"].update(size=4), r"alloy\.blocks.*size"),
        (lambda a: a.update(elements=["ni", "co"]), r"alloy\.elements\.0"),
        (lambda a: a["cvae"]["fields"].update(target="strain"), r"alloy\.cvae\.fields\.target"),
        (lambda a: a.update(source="dumps"), r"alloy\.source"),
    ):
        config = raw_config()
        edit(config["alloy"])
        with pytest.raises(InputError, match=key):
            validated(config)


# -- sample sheets --------------------------------------------------------------------------------


def test_sheet_paths_resolve_against_the_sheet_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    absolute = tmp_path / "elsewhere" / "c.dump"
    absolute.parent.mkdir()
    absolute.write_text("x\n")
    sheet = write_sheet(folder, ["sample\tpath\tsnapshot", "a\tdumps/a.dump\t0",
                                 "b\tdumps/b.dump.gz\t-1", f"c\t{absolute}\t"],
                        dumps=("dumps/a.dump", "dumps/b.dump.gz"))  # fmt: skip
    monkeypatch.chdir(tmp_path)  # not the sheet's folder
    p = plan(sheet_alloy(Path("data") / "alloy.tsv"))
    assert list(p.samples) == ["a", "b", "c"]
    assert p.dump("a") == str(Path("data") / "dumps" / "a.dump")
    assert Path(p.dump("b")).is_file() and p.dump("c") == str(absolute)
    assert int(p.fields_settings("b")["snapshot"]) == -1
    assert p.fields_settings("c")["snapshot"] is None
    assert sorted(p.split().values()) == ["test", "train", "val"]  # no column: a seeded draw
    assert read_alloy_sheet(sheet, load_schema(SCHEMAS / "alloy_samples.schema.yaml"))[
        "path"].tolist()[0] == str(folder / "dumps" / "a.dump")  # fmt: skip


def test_sheet_splits_are_respected(tmp_path: Path) -> None:
    names = [f"s{i}" for i in range(6)]
    given = ["train", "test", "train", "val", "train", "test"]
    sheet = split_sheet(tmp_path, names, given)
    assert plan(sheet_alloy(sheet)).split() == dict(zip(names, given, strict=True))
    sheet = split_sheet(tmp_path, names, ["test", "", "val", "", "", ""])
    split = plan(sheet_alloy(sheet)).split()
    assert split["s0"] == "test" and split["s2"] == "val"
    assert set(split.values()) == set(SPLITS)
    sheet = split_sheet(tmp_path, names, ["train", "train", "val", "train", "val", "train"])
    with pytest.raises(InputError, match=r"alloy\.tsv \(the sheet's column split\).*\['test'\]"):
        plan(sheet_alloy(sheet))


@pytest.mark.parametrize(
    ("rows", "where", "problem"),
    [
        (["sample\tpath", "a\ta.dump", "b\tmissing.dump"], "column path", "missing.dump"),
        (["sample\tpath", "a\ta.dump", "a\ta.dump"], "column sample", "repeated: ['a']"),
        (["sample\tpath\tsnapshot", "a\ta.dump\tlast"], "row 2, column snapshot", "'last'"),
        (["sample\tpath\tcolour", "a\ta.dump\tred"], "row 2", "'colour' was unexpected"),
        (["sample\tpath\tsplit", "a\ta.dump\ttraining"], "row 2", "'training' is not one of"),
        (["sample\tpath", "a b\ta.dump"], "row 2", "does not match"),
        (["path", "a.dump"], "row 2", "'sample' is a required property"),
    ],
)
def test_bad_sample_sheets_are_named(
    tmp_path: Path, rows: list[str], where: str, problem: str
) -> None:
    sheet = write_sheet(tmp_path, rows, dumps=("a.dump",))
    with pytest.raises(InputError) as error:
        read_alloy_sheet(sheet, load_schema(SCHEMAS / "alloy_samples.schema.yaml"))
    message = str(error.value)
    assert str(sheet) in message and where in message and problem in message


def test_a_sheet_source_needs_a_sheet_that_exists(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"alloy\.sheet.*no sheet"):
        plan(alloy(source="sheet"))
    with pytest.raises(InputError, match=r"nothing\.tsv \(file\)"):
        plan(sheet_alloy(tmp_path / "nothing.tsv"))
