"""Storage for everything the pipeline writes: zarr v3 datasets, tables, provenance, atomic writes.

Every output is written to a temporary sibling and renamed into place only when complete, so a
failed or killed job never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from latentmech import __version__

#: Chunk length along the leading "item" dimension (windows, samples …) of stacked datasets.
DEFAULT_ITEM_CHUNK = 256


def provenance(stage: str, settings: Mapping[str, Any], code_digest: str = "") -> dict[str, Any]:
    """Attributes recording what made an output: stage, settings, code digest, package version."""
    return {
        "latentmech_stage": stage,
        "latentmech_version": __version__,
        "latentmech_code_digest": code_digest,
        "latentmech_settings": json.dumps(settings, sort_keys=True, default=str),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` only if the block succeeds.

    Works for files and directories (zarr stores). On error the temporary is removed and an
    existing ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp = tmp_dir / target.name
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _string_coords_to_object(ds: xr.Dataset) -> xr.Dataset:
    """Variable-length UTF-8 is zarr v3's stable string type; fixed-width numpy strings are not."""
    converted = {
        name: var.astype(object) for name, var in ds.variables.items() if var.dtype.kind in "UT"
    }
    return ds.assign_coords({k: v for k, v in converted.items() if k in ds.coords}).assign(
        {k: v for k, v in converted.items() if k in ds.data_vars}
    )


def write_zarr(
    ds: xr.Dataset,
    target: str | Path,
    attrs: Mapping[str, Any] | None = None,
    chunks: Mapping[str, tuple[int, ...]] | None = None,
) -> Path:
    """Write ``ds`` as a zarr v3 store with consolidated metadata, atomically.

    ``chunks`` gives some variables their chunk shape (e.g. one item per chunk, so a reader
    loads single volume elements); the others get zarr's default.
    """
    ds = _string_coords_to_object(ds)
    if attrs:
        ds = ds.assign_attrs(**attrs)
    encoding = {name: {"chunks": tuple(shape)} for name, shape in (chunks or {}).items()}
    with atomic_path(target) as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
        consolidate_zarr(tmp)
    return Path(target)


def consolidate_zarr(path: str | Path) -> None:
    """Write consolidated metadata into a finished store.

    Consolidated metadata is a zarr-python extension in v3; it lets ``xarray.open_zarr`` open the
    store without probing every array and without warning the user.
    """
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))


def open_zarr(path: str | Path, load: bool = True) -> xr.Dataset:
    """Open a store written by :func:`write_zarr`, with a clear error if absent.

    ``load`` reads everything into memory (and closes the store); ``load=False`` leaves the data
    variables on disk, read chunk by chunk as they are indexed (for stores larger than memory).
    """
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"{path}: not a zarr v3 store (no zarr.json)")
    if not load:
        return xr.open_zarr(path, consolidated=True, chunks=None)
    with xr.open_zarr(path, consolidated=True) as ds:
        return ds.load()


def write_table(df: pd.DataFrame, target: str | Path) -> Path:
    """Write a CSV (or TSV for a ``.tsv`` target) atomically, without the index."""
    target = Path(target)
    sep = "\t" if target.suffix == ".tsv" else ","
    with atomic_path(target) as tmp:
        df.to_csv(tmp, sep=sep, index=False)
    return target


def read_table(path: str | Path, dtype: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Read a CSV/TSV written by :func:`write_table` (separator from the suffix).

    ``dtype`` keeps e.g. identifiers such as ``001`` as text.
    """
    path = Path(path)
    sep = "\t" if path.suffix == ".tsv" else ","
    return pd.read_csv(path, sep=sep, dtype=dtype)


def write_json(obj: Any, target: str | Path) -> Path:
    """Write JSON atomically (sorted keys, numpy scalars as Python numbers)."""

    def _default(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        return str(value)

    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")
    return Path(target)
