"""The HR-DIC sample table: from the embedded generator's config, or from a user's sample sheet.

One row per map (a specimen imaged at one deformation step). The sheet is checked row by row
against ``workflow/schemas/dic_samples.schema.yaml`` and for what a schema cannot say (duplicate
ids, files that do not exist, modalities no file provides), so a bad sheet fails while Snakemake
builds the job graph, naming the sheet, the line and the column.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema, validate

#: Columns holding one file per modality. ``displacement`` is a DaVis 2D-vector export.
FILE_COLUMNS = (
    "exx",
    "eyy",
    "exy",
    "intensity",
    "direction",
    "rotation",
    "max_shear",
    "displacement",
)
#: Modalities computed from a displacement field (see ``dic.kinematics.strain_fields``).
FROM_DISPLACEMENT = ("exx", "eyy", "exy", "rotation", "max_shear")
META_COLUMNS = (
    "sample", "material", "specimen", "step", "strain_pct", "stress_mpa", "role", "pixel_size_um",
)  # fmt: skip
PROPERTY_COLUMNS = ("YS", "Q", "b", "UTS", "El", "FS")
_NUMERIC = {"step": int, "strain_pct": float, "stress_mpa": float, "pixel_size_um": float}


def synthetic_sample_id(material: str, specimen: int, step: int) -> str:
    """Sample id of the generator's map of ``material``, specimen and step (1-based)."""
    return f"{material}_s{specimen}_t{step}"


def synthetic_samples(synthetic: Mapping[str, Any]) -> pd.DataFrame:
    """The sample table of the embedded study: every material × specimen × deformation step.

    The first ``train_specimens`` specimens of each material have role ``train``, the next
    ``validation_specimens`` role ``validation`` (kept out of every training split, as in the
    paper) and the last ``predict_specimens`` role ``predict`` (encoded and predicted only, as a
    new measurement would be). Those two are deformed to the training strains times
    ``validation_strain_scale``, so held-out maps come at strains the models never saw. Stress is
    filled in by the generator's Voce law at the ``synthesize`` stage.
    """
    pixel = float(synthetic["map"]["pixel_size_um"])
    n_train = int(synthetic["train_specimens"])
    n_validation = n_train + int(synthetic["validation_specimens"])
    n_total = n_validation + int(synthetic.get("predict_specimens", 0))
    rows = []
    for material in synthetic["materials"]:
        for specimen in range(1, n_total + 1):
            role = (
                "train"
                if specimen <= n_train
                else "validation"
                if specimen <= n_validation
                else "predict"
            )
            scale = 1.0 if role == "train" else float(synthetic.get("validation_strain_scale", 1.0))
            for step, strain in enumerate(material["strain_pct"], start=1):
                rows.append(
                    {
                        "sample": synthetic_sample_id(material["name"], specimen, step),
                        "material": material["name"],
                        "specimen": str(specimen),
                        "step": step,
                        "strain_pct": float(strain) * scale,
                        "stress_mpa": None,
                        "role": role,
                        "pixel_size_um": pixel,
                    }
                )
    return pd.DataFrame(rows, columns=list(META_COLUMNS))


def extension_samples(dic: Mapping[str, Any]) -> pd.DataFrame:
    """Samples of the new materials the database is extended with (paper Fig. 13), role ``extend``.

    Generated like the study's own (``dic.extend.specimens`` specimens at every step of each
    material); they enter neither the VAE database nor the property CNN.
    """
    materials = dic.get("extend", {}).get("materials") or []
    if not materials or dic["source"] != "synthetic":
        return pd.DataFrame(columns=list(META_COLUMNS))
    synthetic = {**dic["synthetic"], "materials": materials, "predict_specimens": 0,
                 "train_specimens": dic["extend"]["specimens"], "validation_specimens": 0}  # fmt: skip
    return synthetic_samples(synthetic).assign(role="extend")


def _line(number: int) -> str:
    """Tables read by :func:`_read_tsv` are indexed by their line number in the file."""
    return f"line {number}"


def _read_tsv(path: Path) -> pd.DataFrame:
    """Read a TSV as strings, indexed by file line; '#' comment lines and blank lines are skipped."""
    if not path.is_file():
        raise InputError(path, "", "sample sheet not found")
    numbered = [
        (number, line)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise InputError(path, "", "empty file: expected a header line and one row per sample")
    try:
        table = pd.read_csv(
            io.StringIO("\n".join(line for _, line in numbered)), sep="\t", dtype=str,
            keep_default_na=False,
        )  # fmt: skip
    except pd.errors.ParserError as exc:
        raise InputError(path, "", f"not a tab-separated table: {exc}") from exc
    table.index = [number for number, _ in numbered[1:]]
    return table.map(str.strip)


def _check_columns(path: Path, columns: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        raise InputError(
            path,
            "header",
            f"unknown column(s) {unknown}: expected metadata columns {list(META_COLUMNS)} "
            f"and modality file columns {list(FILE_COLUMNS)}",
        )


def _convert_row(path: Path, index: int, row: Mapping[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, text in row.items():
        if text == "":
            record[key] = None
            continue
        cast = _NUMERIC.get(key)
        try:
            record[key] = cast(float(text)) if cast is int else cast(text) if cast else text
        except ValueError:
            raise InputError(
                path, f"{_line(index)}, column {key}", f"expected a number, found {text!r}"
            ) from None
        if cast is int and float(text) != int(float(text)):
            raise InputError(
                path, f"{_line(index)}, column {key}", f"expected an integer, found {text!r}"
            )
    return record


def _check_required(path: Path, index: int, record: Mapping[str, Any], schema: Mapping) -> None:
    for key in schema.get("required", []):
        if record.get(key) is None:
            raise InputError(path, f"{_line(index)}, column {key}", f"missing value for {key}")


def _resolve_file(path: Path, index: int, column: str, spec: str) -> str:
    """Absolute file spec (keeping a ``:key`` suffix); error if the file does not exist."""
    expanded = os.path.expandvars(spec)
    if re.search(r"\$\{?\w+", expanded):
        raise InputError(path, f"{_line(index)}, column {column}", f"unset variable in {spec!r}")
    file_part, key = split_file_key(expanded)
    file = Path(file_part) if Path(file_part).is_absolute() else path.parent / file_part
    if not file.is_file():
        raise InputError(path, f"{_line(index)}, column {column}", f"file not found: {file}")
    return f"{file.resolve()}:{key}" if key else str(file.resolve())


def split_file_key(spec: str) -> tuple[str, str | None]:
    """Split ``"file.h5:/group/data"`` into the file and the key; plain paths have no key."""
    match = re.match(r"^(.*\.(?:h5|hdf5|he5|npz)):(.+)$", spec, flags=re.IGNORECASE)
    return (match.group(1), match.group(2)) if match else (spec, None)


def _check_modalities(path: Path, index: int, record: Mapping[str, Any], modalities: Sequence[str]):
    for modality in modalities:
        direct = record.get(modality)
        derived = modality in FROM_DISPLACEMENT and record.get("displacement")
        if not direct and not derived:
            raise InputError(
                path,
                _line(index),
                f"sample {record['sample']!r} has no file for modality {modality!r} "
                f"(config dic.modalities asks for {list(modalities)})",
            )


def _check_duplicates(path: Path, table: pd.DataFrame) -> None:
    duplicated = table["sample"][table["sample"].duplicated(keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        lines = [_line(i) for i in duplicated.index[duplicated == first]]
        raise InputError(path, ", ".join(lines), f"duplicate sample id {first!r}")


def read_sample_sheet(
    path: str | Path, schema: Mapping[str, Any], modalities: Sequence[str]
) -> pd.DataFrame:
    """Read, check and complete a sample sheet; file columns become absolute paths."""
    path = Path(path)
    raw = _read_tsv(path)
    _check_columns(path, raw.columns, META_COLUMNS + FILE_COLUMNS)
    if raw.empty:
        raise InputError(path, "", "the sample sheet has no rows")
    records = []
    for index, row in raw.iterrows():
        record = _convert_row(path, int(index), row.to_dict())
        _check_required(path, int(index), record, schema)
        validate(record, schema, path, _line(int(index)))
        for column in FILE_COLUMNS:
            if record.get(column):
                record[column] = _resolve_file(path, int(index), column, record[column])
        _check_modalities(path, int(index), record, modalities)
        records.append(record)
    table = pd.DataFrame(records, columns=list(META_COLUMNS + FILE_COLUMNS), index=raw.index)
    _check_duplicates(path, table)
    return table


def read_materials(path: str | Path, schema: Mapping[str, Any]) -> pd.DataFrame:
    """Read and check a materials table (the six properties of the paper's Table 4)."""
    path = Path(path)
    raw = _read_tsv(path)
    _check_columns_materials(path, raw.columns)
    records = []
    for index, row in raw.iterrows():
        record: dict[str, Any] = {"material": row["material"]}
        for key in PROPERTY_COLUMNS:
            try:
                record[key] = float(row[key])
            except ValueError:
                raise InputError(
                    path,
                    f"{_line(int(index))}, column {key}",
                    f"expected a number, found {row[key]!r}",
                ) from None
        validate(record, schema, path, _line(int(index)))
        records.append(record)
    table = pd.DataFrame(records, columns=["material", *PROPERTY_COLUMNS])
    dupes = table["material"][table["material"].duplicated()]
    if not dupes.empty:
        raise InputError(path, "", f"duplicate material {dupes.iloc[0]!r}")
    return table


def _check_columns_materials(path: Path, columns: Sequence[str]) -> None:
    expected = ["material", *PROPERTY_COLUMNS]
    missing = [c for c in expected if c not in columns]
    unknown = [c for c in columns if c not in expected]
    if missing or unknown:
        raise InputError(
            path, "header", f"expected columns {expected}; missing {missing}, unknown {unknown}"
        )


def sample_files(row: Mapping[str, Any]) -> dict[str, str]:
    """The modality → file spec mapping of one sample-sheet row (only the columns it fills)."""
    return {c: row[c] for c in FILE_COLUMNS if isinstance(row.get(c), str) and row[c]}


def sample_table(dic: Mapping[str, Any], schemas: str | Path) -> pd.DataFrame:
    """The study's samples, indexed by id: generated from config, or read from the sample sheet."""
    if dic["source"] == "synthetic":
        table = synthetic_samples(dic["synthetic"])
    else:
        if not dic.get("samples"):
            raise InputError(
                "config", "dic.samples", "source is 'sheet' but no sample sheet is given"
            )
        schema = load_schema(Path(schemas) / "dic_samples.schema.yaml")
        table = read_sample_sheet(dic["samples"], schema, dic["modalities"])
    _check_one_role_per_specimen(table, dic.get("samples") or "config")
    extension = extension_samples(dic)
    if len(extension):
        table = pd.concat([table, extension], ignore_index=True)
    return table.set_index("sample", drop=False)


def _check_one_role_per_specimen(table: pd.DataFrame, source: str | Path) -> None:
    """A specimen is training, validation or prediction data, never two of them at once.

    Otherwise a "held-out" step would share its specimen (and its slip bands) with training steps.
    """
    roles = table.groupby(["material", "specimen"])["role"].unique()
    mixed = roles[roles.map(len) > 1]
    if len(mixed):
        (material, specimen), found = next(iter(mixed.items()))
        raise InputError(source, f"material {material}, specimen {specimen}",
                         f"the steps of one specimen have different roles {sorted(found)}")  # fmt: skip


def figure_sample(table: pd.DataFrame, material: str) -> str:
    """The map shown for a material in the modality figure: first specimen, last step, training first."""
    rows = table[table["material"] == material].copy()
    rows["role_order"] = rows["role"].map({"train": 0, "validation": 1, "predict": 2, "extend": 3})
    # Specimen ids are text; "2" should still come before "10".
    rows["specimen_key"] = rows["specimen"].map(lambda s: (len(s), s) if s.isdigit() else (1e9, s))
    rows = rows.sort_values(["role_order", "specimen_key", "step"], ascending=[True, True, False])
    return str(rows["sample"].iloc[0])


def sample_file_inputs(row: Mapping[str, Any]) -> dict[str, str]:
    """The files a sheet row reads, for Snakemake ``input:`` (``:key`` suffixes removed)."""
    return {column: split_file_key(spec)[0] for column, spec in sample_files(row).items()}
