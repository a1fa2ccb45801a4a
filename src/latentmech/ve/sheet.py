"""The VE sample sheet: measured or simulated VE files a dataset is made of (``source: sheet``).

Checked completely when the workflow starts (columns, values, duplicate names, missing files),
so a bad row fails naming the sheet, its line and column before any job runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from latentmech.core.errors import InputError
from latentmech.core.schema import validate

#: Columns of the sheet, in the order the schema lists them.
COLUMNS = ("name", "path", "split", "collection", "texture", "morphology", "phase", "angles",
           "layout")  # fmt: skip


def _line(index: int) -> str:
    return f"line {index + 2}"  # the header is line 1


def _record(path: Path, index: int, row: Mapping[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {k: v for k, v in row.items() if v != ""}
    if "phase" in record:
        try:
            record["phase"] = int(record["phase"])
        except ValueError:
            raise InputError(path, f"{_line(index)}, column phase",
                             f"expected an integer, found {record['phase']!r}") from None  # fmt: skip
    return record


def _resolve(sheet: Path, index: int, value: str) -> str:
    file = Path(os.path.expandvars(value)).expanduser()
    file = file if file.is_absolute() else sheet.parent / file
    if not file.is_file():
        raise InputError(sheet, f"{_line(index)}, column path", f"no such file: {file}")
    return str(file.resolve())


def read_ve_sheet(path: str | Path, schema: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of the sheet, validated, defaults filled in, paths absolute, collections named."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "", "the VE sample sheet does not exist")
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    unknown = sorted(set(raw.columns) - set(COLUMNS))
    if unknown:
        raise InputError(path, "header", f"unknown column(s) {unknown}; known: {list(COLUMNS)}")
    if raw.empty:
        raise InputError(path, "", "the VE sample sheet has no rows")
    records = []
    for index, row in raw.iterrows():
        record = validate(_record(path, int(index), row.to_dict()), schema, path, _line(int(index)))
        record["path"] = _resolve(path, int(index), record["path"])
        if record["split"] == "edge" and not record["collection"]:
            raise InputError(path, f"{_line(int(index))}, column collection",
                             "an edge-case VE needs a collection name (e.g. large_grains)")  # fmt: skip
        if record["split"] != "edge" and record["collection"] not in (None, record["split"]):
            raise InputError(path, f"{_line(int(index))}, column collection",
                             f"a {record['split']} VE belongs to collection {record['split']!r}; "
                             "only edge cases name their own")  # fmt: skip
        record["collection"] = record["collection"] or record["split"]
        records.append(record)
    table = pd.DataFrame(records, columns=list(COLUMNS))
    duplicated = table["name"][table["name"].duplicated()]
    if not duplicated.empty:
        raise InputError(path, "column name", f"duplicate VE names {sorted(set(duplicated))}")
    clash = table[(table["split"] == "edge") & table["collection"].isin(["train", "val", "test"])]
    if not clash.empty:
        raise InputError(path, "column collection", "edge cases cannot be called train/val/test")
    return table
