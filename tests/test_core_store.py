"""Atomic writes, zarr v3 layout with named dimensions, provenance and code digests."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from latentmech.core.digest import code_digest
from latentmech.core.store import (
    atomic_path,
    open_zarr,
    provenance,
    read_table,
    write_table,
    write_zarr,
)


def _dataset() -> xr.Dataset:
    return xr.Dataset(
        {"exx": (("y", "x"), np.arange(12, dtype=np.float32).reshape(3, 4), {"units": "1"})},
        coords={"y": ("y", [0.25, 0.75, 1.25], {"units": "µm"}), "x": np.arange(4) * 0.5,
                "label": ("y", np.array(["a", "bb", "c"]))},
    )  # fmt: skip


def test_zarr_v3_round_trip_with_named_dimensions_and_attrs(tmp_path: Path) -> None:
    target = tmp_path / "map.zarr"
    write_zarr(_dataset(), target, provenance("stage", {"sigma": 3}, "abc"))
    group = zarr.open_group(target, mode="r")
    assert group.metadata.zarr_format == 3
    assert group["exx"].metadata.dimension_names == ("y", "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a user's plain call: no consolidation warning
        opened = xr.open_zarr(target)
    assert opened["exx"].dims == ("y", "x")
    assert opened["y"].attrs["units"] == "µm"
    assert list(opened["label"].values) == ["a", "bb", "c"]
    assert json.loads(opened.attrs["latentmech_settings"]) == {"sigma": 3}
    assert opened.attrs["latentmech_code_digest"] == "abc"
    np.testing.assert_array_equal(open_zarr(target)["exx"].values, _dataset()["exx"].values)


def test_failed_write_leaves_no_output_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    write_table(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert read_table(target)["a"].tolist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_atomic_replace_of_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "a.zarr"
    write_zarr(_dataset(), target)
    write_zarr(_dataset().assign(exx=lambda d: d.exx * 2), target)
    assert float(open_zarr(target)["exx"].max()) == 22.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_open_zarr_names_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.zarr"):
        open_zarr(tmp_path / "nothing.zarr")


def test_code_digest_follows_content_not_names() -> None:
    one = code_digest("core/store.py")
    assert one == code_digest("core/store.py")
    assert one != code_digest("core/errors.py")
    assert code_digest("core/store.py", "core/errors.py") == code_digest(
        "core/errors.py", "core/store.py"
    )
    with pytest.raises(FileNotFoundError):
        code_digest("core/nonexistent.py")


def test_chunks_per_item_and_lazy_reading(tmp_path: Path) -> None:
    values = np.arange(4 * 3 * 8, dtype=np.float32).reshape(4, 3, 8)
    ds = xr.Dataset({"v": (("item", "c", "x"), values)}, coords={"item": list("abcd")})
    path = write_zarr(ds, tmp_path / "s.zarr", chunks={"v": (1, 3, 8)})
    assert zarr.open_array(path / "v").chunks == (1, 3, 8)
    lazy = open_zarr(path, load=False)
    assert not isinstance(lazy["v"].variable._data, np.ndarray)  # not read yet
    np.testing.assert_array_equal(lazy["v"].isel(item=2).values, values[2])
    np.testing.assert_array_equal(open_zarr(path)["v"].values, values)


def test_read_table_keeps_identifiers_as_text(tmp_path: Path) -> None:
    path = write_table(pd.DataFrame({"ve": ["001", "010"], "x": [1.5, 2.0]}), tmp_path / "t.csv")
    assert read_table(path)["ve"].tolist() == [1, 10]
    assert read_table(path, dtype={"ve": str})["ve"].tolist() == ["001", "010"]
