"""Stages on bad measured input: a clear error naming the file, and no output left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentmech.cli import main
from latentmech.core.errors import InputError
from latentmech.dic import stages


def _sample(tmp_path: Path, **files: np.ndarray) -> dict:
    row = {"sample": "S1", "material": "M", "specimen": "A", "step": 1, "strain_pct": 0.5,
           "stress_mpa": 400.0, "role": "train", "pixel_size_um": 0.2}  # fmt: skip
    for name, array in files.items():
        np.save(tmp_path / f"{name}.npy", array)
        row[name] = str(tmp_path / f"{name}.npy")
    return row


def test_ingest_writes_maps_on_a_micrometre_grid(tmp_path: Path) -> None:
    exx = np.arange(12.0).reshape(3, 4)
    row = _sample(tmp_path, exx=exx, intensity=np.ones((3, 4)))
    stages.ingest(tmp_path / "raw.zarr", {"sample": row, "modalities": ["exx", "intensity"]})
    from latentmech.core.store import open_zarr

    raw = open_zarr(tmp_path / "raw.zarr")
    np.testing.assert_array_equal(raw["exx"].values, exx)
    np.testing.assert_allclose(raw["x"].values, [0.1, 0.3, 0.5, 0.7])
    assert raw["intensity"].attrs["source_file"].endswith("intensity.npy")


def test_modalities_of_different_shapes_are_named(tmp_path: Path) -> None:
    row = _sample(tmp_path, exx=np.zeros((3, 4)), intensity=np.zeros((4, 4)))
    with pytest.raises(InputError, match=r"intensity\.npy \(intensity\): map of shape \(4, 4\)"):
        stages.ingest(tmp_path / "raw.zarr", {"sample": row, "modalities": ["exx", "intensity"]})
    assert not (tmp_path / "raw.zarr").exists()


def test_all_nan_map_is_named_and_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    row = _sample(tmp_path, exx=np.full((3, 4), np.nan), intensity=np.zeros((3, 4)))
    import json

    settings = json.dumps({"sample": row, "modalities": ["exx", "intensity"]})
    code = main(["dic", "ingest", "--raw", str(tmp_path / "raw.zarr"), "--settings", settings])
    assert code == 2
    err = capsys.readouterr().err
    assert "exx.npy (exx): the map is all NaN" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exx.npy", "intensity.npy"]


def test_bad_davis_file_is_named_with_its_line(tmp_path: Path) -> None:
    davis = tmp_path / "d.txt"
    davis.write_text("#DaVis 8.4.0 2D-vector 8 2 2\n4\t4\t0.1\t0.2\n12\t4\t0.1\n")
    row = _sample(tmp_path)
    row["displacement"] = str(davis)
    with pytest.raises(InputError, match=r"d\.txt \(line 3\)"):
        stages.ingest(tmp_path / "raw.zarr", {"sample": row, "modalities": ["exx"]})
    assert not (tmp_path / "raw.zarr").exists()


def test_cnn_needs_every_property_of_its_materials(tmp_path: Path) -> None:
    table = tmp_path / "materials.tsv"
    table.write_text(
        "material\tYS\tQ\tb\tUTS\tEl\tFS\nA\t300\t100\t20\t600\t30\t250\nB\t400\t\t20\t700\t25\t300\n"
    )
    values = stages._property_table(table, ["A"])
    assert values.loc["A", "UTS"] == 600.0
    with pytest.raises(InputError, match=r"materials\.tsv \(B\): properties"):
        stages._property_table(table, ["A", "B"])
    with pytest.raises(InputError, match=r"materials\.tsv \(material\): no row for \['C'\]"):
        stages._property_table(table, ["C"])


def _maps(stress: float) -> dict:
    rng = np.random.default_rng(0)
    return {
        "mu": rng.normal(size=(2, 6, 6, 4)).astype(np.float32),
        "sigma": np.ones((2, 6, 6, 4), np.float32),
        "exx_mean": np.full((2, 6, 6), 0.01),
        "sample": np.array(["P1", "P2"], dtype=object),
        "material": np.array(["A", "A"], dtype=object),
        "stress_mpa": np.array([450.0, stress]),
        "n_rows": np.array([6, 6]), "n_cols": np.array([6, 6]),
    }  # fmt: skip


def test_cnn_crops_carry_normalised_strain_and_stress() -> None:
    settings = {"crop": {"size": 5, "max_overlap": 4},
                "normalise": {"strain": 0.05, "stress_mpa": 1500.0}}  # fmt: skip
    items = stages._cnn_items(_maps(600.0), settings, "maps")
    assert len(items) == 2 * 4  # two maps, 2 × 2 crops of 5 × 5 on a 6 × 6 grid
    np.testing.assert_allclose(items["strain"], 0.01 / 0.05)
    np.testing.assert_allclose(sorted(set(items["stress"])), [0.3, 0.4])
    with pytest.raises(InputError, match=r"maps \(P2\): the macroscopic stress"):
        stages._cnn_items(_maps(np.nan), settings, "maps")
