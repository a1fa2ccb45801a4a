"""Sample sheets and materials tables: what a user can get wrong, and the message they get."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema
from latentmech.dic.samples import (
    figure_sample,
    read_materials,
    read_sample_sheet,
    sample_table,
    synthetic_samples,
)
from tests.helpers import REPO

SCHEMAS = REPO / "workflow" / "schemas"
SAMPLE_SCHEMA = load_schema(SCHEMAS / "dic_samples.schema.yaml")
MATERIAL_SCHEMA = load_schema(SCHEMAS / "dic_materials.schema.yaml")
HEADER = (
    "sample\tmaterial\tspecimen\tstep\tstrain_pct\tstress_mpa\trole\tpixel_size_um\texx\tintensity"
)


def _sheet(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    for name in ("a.npy", "b.npy"):
        np.save(tmp_path / name, np.zeros((4, 4)))
    path = tmp_path / "samples.tsv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


GOOD = "S1\tM1\t1\t1\t0.5\t400\ttrain\t0.1\ta.npy\tb.npy"


def test_good_sheet_resolves_files_relative_to_the_sheet(tmp_path: Path) -> None:
    table = read_sample_sheet(_sheet(tmp_path, GOOD), SAMPLE_SCHEMA, ["exx", "intensity"])
    row = table.iloc[0]
    assert row["exx"] == str((tmp_path / "a.npy").resolve())
    assert row["step"] == 1 and row["strain_pct"] == 0.5 and row["pixel_size_um"] == 0.1
    assert row["rotation"] is None


def test_environment_variables_are_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MYDATA", str(tmp_path))
    row = GOOD.replace("a.npy", "${MYDATA}/a.npy")
    table = read_sample_sheet(_sheet(tmp_path, row), SAMPLE_SCHEMA, ["exx", "intensity"])
    assert table.iloc[0]["exx"] == str((tmp_path / "a.npy").resolve())


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ([GOOD.replace("a.npy", "missing.npy")], HEADER, r"line 2, column exx\): file not found: .*missing.npy"),
        ([GOOD], HEADER.replace("intensity", "stress"), r"header\): unknown column\(s\) \['stress'\]"),
        ([GOOD, GOOD], HEADER, r"line 2, line 3\): duplicate sample id 'S1'"),
        ([GOOD.replace("\t0.1\t", "\t\t")], HEADER, r"line 2, column pixel_size_um\): missing value"),
        ([GOOD.replace("\t0.1\t", "\t-0.1\t")], HEADER, r"line 2, pixel_size_um\)"),
        ([GOOD.replace("train", "training")], HEADER, r"line 2, role\).*training"),
        ([GOOD.replace("\t0.5\t", "\tlots\t")], HEADER, r"line 2, column strain_pct\): expected a number"),
        ([GOOD.replace("\t1\t0.5", "\t1.5\t0.5")], HEADER, r"column step\): expected an integer"),
        ([GOOD.replace("${X}", ""), GOOD.replace("S1", "S2").replace("b.npy", "")], HEADER,
         r"line 3\): sample 'S2' has no file for modality 'intensity'"),
        ([GOOD.replace("a.npy", "${LATENTMECH_SURELY_UNSET}/a.npy")], HEADER, r"unset variable"),
    ],
)  # fmt: skip
def test_bad_sheets_name_the_file_line_and_problem(
    tmp_path: Path, rows: list[str], header: str, message: str
) -> None:
    path = _sheet(tmp_path, *rows, header=header)
    with pytest.raises(InputError, match=message) as error:
        read_sample_sheet(path, SAMPLE_SCHEMA, ["exx", "intensity"])
    assert str(path) in str(error.value)


def test_missing_sheet_and_empty_sheet(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="sample sheet not found"):
        read_sample_sheet(tmp_path / "nope.tsv", SAMPLE_SCHEMA, ["exx"])
    with pytest.raises(InputError, match="no rows"):
        read_sample_sheet(_sheet(tmp_path), SAMPLE_SCHEMA, ["exx"])


def test_displacement_provides_strain_modalities(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("#DaVis 8.4.0 2D-vector 8 1 1\n")
    header = "sample\tmaterial\tspecimen\tstep\trole\tpixel_size_um\tdisplacement"
    path = _sheet(tmp_path, "S1\tM1\tA\t0\tpredict\t0.1\td.txt", header=header)
    table = read_sample_sheet(path, SAMPLE_SCHEMA, ["exx", "rotation", "max_shear"])
    assert table.iloc[0]["strain_pct"] is None
    with pytest.raises(InputError, match="modality 'intensity'"):
        read_sample_sheet(path, SAMPLE_SCHEMA, ["exx", "intensity"])


def test_materials_table(tmp_path: Path) -> None:
    path = tmp_path / "materials.tsv"
    path.write_text("material\tYS\tQ\tb\tUTS\tEl\tFS\nM1\t340\t180\t30\t494\t26.15\t335\n")
    table = read_materials(path, MATERIAL_SCHEMA)
    assert table.iloc[0].to_dict() == {"material": "M1", "YS": 340.0, "Q": 180.0, "b": 30.0,
                                       "UTS": 494.0, "El": 26.15, "FS": 335.0}  # fmt: skip
    path.write_text("material\tYS\tQ\tb\tUTS\tEl\nM1\t340\t180\t30\t494\t26.15\n")
    with pytest.raises(InputError, match=r"header\).*missing \['FS'\]"):
        read_materials(path, MATERIAL_SCHEMA)
    path.write_text("material\tYS\tQ\tb\tUTS\tEl\tFS\nM1\t340\t180\t30\tbig\t26.15\t335\n")
    with pytest.raises(InputError, match=r"line 2, column UTS"):
        read_materials(path, MATERIAL_SCHEMA)


def test_synthetic_table_roles_and_ids() -> None:
    materials = [
        {"name": "M", "strain_pct": [0.1, 0.2, 0.3, 0.4]},
        {"name": "N", "strain_pct": [1, 2, 3, 4]},
    ]
    table = synthetic_samples(
        {
            "materials": materials,
            "train_specimens": 2,
            "validation_specimens": 1,
            "map": {"pixel_size_um": 0.5},
        }
    )
    assert len(table) == 2 * 3 * 4
    assert table["sample"].is_unique
    assert (table[table["specimen"] == "3"]["role"] == "validation").all()
    assert (table[table["specimen"] != "3"]["role"] == "train").all()
    assert table.set_index("sample").loc["N_s2_t3", "strain_pct"] == 3.0
    assert figure_sample(table, "M") == "M_s1_t4"
    held_out = synthetic_samples(
        {"materials": materials, "train_specimens": 1, "validation_specimens": 1,
         "predict_specimens": 1, "validation_strain_scale": 1.25, "map": {"pixel_size_um": 0.5}}
    ).set_index("sample")  # fmt: skip
    assert held_out.loc["N_s1_t2", "strain_pct"] == 2.0
    assert held_out.loc["N_s2_t2", "strain_pct"] == 2.5  # validation: its own strains
    assert held_out.loc["N_s3_t2", ["role", "strain_pct"]].tolist() == ["predict", 2.5]


def test_a_specimen_with_two_roles_is_refused(tmp_path: Path) -> None:
    second = GOOD.replace("S1", "S2").replace("\t1\t1\t0.5", "\t1\t2\t0.9")
    second = second.replace("train", "validation")
    path = _sheet(tmp_path, GOOD, second)
    config = {"source": "sheet", "samples": str(path), "modalities": ["exx", "intensity"]}
    with pytest.raises(InputError, match=r"specimen 1\): the steps of one specimen have"):
        sample_table(config, SCHEMAS)


def test_sheet_source_without_sheet_is_an_error() -> None:
    with pytest.raises(InputError, match=r"dic.samples"):
        sample_table({"source": "sheet", "samples": None, "modalities": ["exx"]}, SCHEMAS)


def test_property_columns_are_the_generators() -> None:
    from latentmech.dic.samples import PROPERTY_COLUMNS
    from latentmech.dic.synth import PROPERTY_NAMES

    assert tuple(PROPERTY_COLUMNS) == tuple(PROPERTY_NAMES) == ("YS", "Q", "b", "UTS", "El", "FS")


def test_figure_sample_orders_specimens_naturally() -> None:
    import pandas as pd

    table = pd.DataFrame(
        {"sample": ["a", "b", "c"], "material": "M", "specimen": ["10", "2", "2"], "step": [4, 1, 3],
         "role": "train"}
    )  # fmt: skip
    assert figure_sample(table, "M") == "c"  # specimen 2 before 10, its last step
