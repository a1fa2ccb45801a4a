"""Readers for HR-DIC inputs: 2D scalar maps (npy/npz/TIFF/HDF5) and DaVis 2D-vector text exports.

Every reader returns float64 numpy arrays and turns every problem with the file into an
:class:`~latentmech.core.errors.InputError` naming the file, the place (line, key, header) and
what was expected, because users meet these messages in Snakemake logs.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from latentmech.core.errors import InputError

__all__ = ["KNOWN_DAVIS_VERSIONS", "DavisVectors", "read_davis", "read_map"]

#: DaVis versions whose 2D-vector text export has been checked against real files. Other
#: versions with the same header layout are read with the same parser (with a warning).
KNOWN_DAVIS_VERSIONS: tuple[str, ...] = ("7.2.2", "8.4.0")

_NPY = (".npy",)
_NPZ = (".npz",)
_TIFF = (".tif", ".tiff")
_HDF5 = (".h5", ".hdf5")
_MAP_SUFFIXES = _NPY + _NPZ + _TIFF + _HDF5

_DAVIS_HEADER = re.compile(
    r"^#DaVis[ \t]+(?P<version>\S+)[ \t]+2D-vector"
    r"[ \t]+(?P<spacing>\d+)[ \t]+(?P<ny>\d+)[ \t]+(?P<nx>\d+)(?:[ \t]|$)"
)
_DAVIS_HEADER_FORM = '#DaVis <version> 2D-vector <spacing> <rows> <columns> "" "pixel" ...'
_DAVIS_COLUMNS = ("x", "y", "u", "v")
_FIRST_DATA_LINE = 2  # line numbers are 1-based and line 1 is the header


# --------------------------------------------------------------------------------------------
# Scalar maps
# --------------------------------------------------------------------------------------------


def read_map(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read a 2D scalar map (strain, rotation, slip intensity …) as a float64 array.

    Supported: ``.npy``; ``.npz`` (``key`` names the array, required when the archive holds
    more than one); ``.tif``/``.tiff`` (a single greyscale image; RGB or stacks are refused);
    ``.h5``/``.hdf5`` (``key`` is the dataset path, required). ``path`` may carry the key as a
    suffix, ``file.h5:/group/dataset`` or ``file.npz:name``; the split happens on the last
    ``:`` and only when the part before it is an existing file, so file names containing ``:``
    still work. Integer and boolean maps are converted to float64; anything non-numeric, or
    not two-dimensional, is an :class:`InputError`.
    """
    file, key = _split_key(path, key)
    if not file.is_file():
        raise InputError(file, "path", "file not found")
    suffix = file.suffix.lower()
    if suffix not in _MAP_SUFFIXES:
        raise InputError(
            file, "extension", f"expected one of {', '.join(_MAP_SUFFIXES)}, found {suffix!r}"
        )
    if suffix in _NPY:
        data, where = _read_npy(file, key), "array"
    elif suffix in _NPZ:
        data, where = _read_npz(file, key)
    elif suffix in _TIFF:
        data, where = _read_tiff(file, key), "image"
    else:
        data, where = _read_hdf5(file, key), f"dataset {key}"
    return _as_float_map(data, file, where)


def _split_key(path: str | Path, key: str | None) -> tuple[Path, str | None]:
    """Separate a ``file:key`` shorthand from the path when the part before ``:`` is a file."""
    text = str(path)
    if Path(text).is_file() or ":" not in text:
        return Path(text), key
    head, _, tail = text.rpartition(":")
    if not Path(head).is_file():
        return Path(text), key
    if key is not None and key != tail:
        raise InputError(
            head, "key", f"key given twice: {tail!r} in the path and {key!r} as argument"
        )
    return Path(head), tail or None


def _no_key(file: Path, key: str | None, kind: str) -> None:
    """Refuse a key for formats holding a single array, rather than silently ignoring it."""
    if key is not None:
        raise InputError(
            file, "key", f"a {kind} file holds one array; no key expected, got {key!r}"
        )


def _read_npy(file: Path, key: str | None) -> np.ndarray:
    """Load a ``.npy`` array without pickles."""
    _no_key(file, key, ".npy")
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(
            file, "array", f"not a readable .npy array without pickles: {exc}"
        ) from exc


def _read_npz(file: Path, key: str | None) -> tuple[np.ndarray, str]:
    """Load one array of a ``.npz`` archive; the key may be omitted when there is only one."""
    try:
        with np.load(file, allow_pickle=False) as archive:
            names = list(archive.files)
            if key is None:
                if len(names) != 1:
                    raise InputError(
                        file, "key", f"archive holds {len(names)} arrays {names}; name one as key"
                    )
                key = names[0]
            if key not in names:
                raise InputError(file, f"key {key!r}", f"no such array; the archive holds {names}")
            return archive[key], f"array {key!r}"
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(file, "archive", f"not a readable .npz archive: {exc}") from exc


def _read_tiff(file: Path, key: str | None) -> np.ndarray:
    """Load a single-image greyscale TIFF, checking the shape before decoding any pixels."""
    import tifffile

    _no_key(file, key, "TIFF")
    try:
        with tifffile.TiffFile(file) as tif:
            if len(tif.series) != 1:
                raise InputError(
                    file, "image", f"expected one image series, found {len(tif.series)}"
                )
            shape = tuple(tif.series[0].shape)
            if len(shape) != 2:
                raise InputError(file, "image", _not_2d(shape))
            return tif.series[0].asarray()
    except InputError:
        raise
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise InputError(file, "image", f"cannot decode TIFF: {exc}") from exc


def _read_hdf5(file: Path, key: str | None) -> np.ndarray:
    """Load the dataset at path ``key`` of an HDF5 file."""
    import h5py

    if key is None:
        raise InputError(file, "key", "an HDF5 file needs the dataset path as key")
    try:
        with h5py.File(file, "r") as h5:
            node = h5.get(key)
            if not isinstance(node, h5py.Dataset):
                found = "a group" if isinstance(node, h5py.Group) else "nothing"
                raise InputError(
                    file,
                    f"dataset {key}",
                    f"expected a dataset, found {found}; "
                    f"datasets in the file: {_hdf5_datasets(h5)}",
                )
            return node[()]
    except InputError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(file, f"dataset {key}", f"cannot read HDF5: {exc}") from exc


def _hdf5_datasets(h5: object, limit: int = 20) -> list[str]:
    """Paths of (up to ``limit``) datasets in an open HDF5 file, to suggest the right key."""
    import h5py

    found: list[str] = []

    def visit(name: str, node: object) -> None:
        if isinstance(node, h5py.Dataset) and len(found) < limit:
            found.append("/" + name)

    h5.visititems(visit)  # type: ignore[attr-defined]
    return found


def _not_2d(shape: tuple[int, ...]) -> str:
    """Message for a map that is not a 2D scalar field (mentioning RGB when it looks like one)."""
    rgb = " (an RGB(A) image?)" if len(shape) == 3 and shape[-1] in (3, 4) else ""
    return f"expected a 2D scalar map, found shape {shape}{rgb}"


def _as_float_map(data: object, file: Path, where: str) -> np.ndarray:
    """Check a loaded array is a real-valued 2D map and return it as float64."""
    array = np.asarray(data)
    kind = array.dtype.kind
    if kind not in "biuf":
        raise InputError(file, where, f"expected numeric data, found dtype {array.dtype}")
    if array.ndim != 2:
        raise InputError(file, where, _not_2d(array.shape))
    return np.ascontiguousarray(array, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# DaVis 2D-vector text exports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DavisVectors:
    """A DaVis 2D-vector displacement field on its regular grid.

    ``x_px`` (nx,) and ``y_px`` (ny,) are the vector positions in pixels of the DIC image,
    ``u`` and ``v`` (ny, nx) the displacements in pixels along x (columns) and y (rows, which
    increase with row index as in the file). Vectors DaVis marks invalid, exactly (0, 0), are
    NaN in both ``u`` and ``v``. ``spacing_px`` is the vector spacing from the header.
    """

    x_px: np.ndarray
    y_px: np.ndarray
    u: np.ndarray
    v: np.ndarray
    spacing_px: int
    version: str

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the vector grid."""
        return self.u.shape  # type: ignore[return-value]


@dataclass(frozen=True)
class _DavisHeader:
    version: str
    spacing: int
    ny: int
    nx: int


def read_davis(path: str | Path) -> DavisVectors:
    """Read a DaVis 2D-vector text export (``#DaVis <ver> 2D-vector <spacing> <ny> <nx> …``).

    The body holds one tab-separated ``x y u v`` row per vector, x fastest, rows of constant y
    in increasing order. The whole file is validated (header, 4 fields on every line, row count,
    numbers, regular grid) with vectorised operations, and every problem is an
    :class:`InputError` naming the line.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(file, "path", "file not found")
    raw = file.read_bytes()
    header_line, body = _split_header_line(raw)
    header = _parse_davis_header(header_line, file)
    body = body.rstrip(b"\r\n")
    _check_fields(body, file, header)
    table = _parse_numbers(body, file)
    x, y = _check_grid(table, file, header)
    u, v = _displacements(table, header)
    return DavisVectors(x, y, u, v, header.spacing, header.version)


def _split_header_line(raw: bytes) -> tuple[bytes, bytes]:
    """Return the first line (without its line ending) and the rest of the file."""
    end = raw.find(b"\n")
    if end < 0:
        return raw.rstrip(b"\r"), b""
    return raw[:end].rstrip(b"\r"), raw[end + 1 :]


def _parse_davis_header(line: bytes, file: Path) -> _DavisHeader:
    """Parse and check the header; unknown versions with the known layout only warn."""
    text = line.decode("latin-1")
    match = _DAVIS_HEADER.match(text)
    if match is None:
        found = repr(text[:80]) if text else "an empty first line"
        raise InputError(file, "header, line 1", f"expected {_DAVIS_HEADER_FORM}, found {found}")
    header = _DavisHeader(
        match["version"], int(match["spacing"]), int(match["ny"]), int(match["nx"])
    )
    if min(header.spacing, header.ny, header.nx) < 1:
        raise InputError(
            file,
            "header, line 1",
            "expected spacing, rows and columns ≥ 1, found "
            f"spacing {header.spacing}, {header.ny} rows, {header.nx} columns",
        )
    if header.version not in KNOWN_DAVIS_VERSIONS:
        warnings.warn(
            f"{file}: DaVis version {header.version} is not among the checked versions "
            f"{KNOWN_DAVIS_VERSIONS}; reading it with the same 2D-vector layout",
            UserWarning,
            stacklevel=3,
        )
    return header


def _check_fields(body: bytes, file: Path, header: _DavisHeader) -> None:
    """Require 4 tab-separated fields on every data line and exactly ny·nx data lines."""
    buffer = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == ord("\n"))
    tabs = np.flatnonzero(buffer == ord("\t"))
    n_rows = newlines.size + 1 if body else 0
    if n_rows and not _three_tabs_per_line(newlines, tabs):
        _locate_ragged(file, newlines, tabs, header.ny * header.nx)
    if n_rows != header.ny * header.nx:
        _raise_row_count(file, n_rows, header)


def _three_tabs_per_line(newlines: np.ndarray, tabs: np.ndarray) -> bool:
    """Fast check that line r holds exactly tabs 3r, 3r+1, 3r+2 (both inputs sorted)."""
    if tabs.size != 3 * (newlines.size + 1):
        return False
    per_line = tabs.reshape(-1, 3)
    return bool((per_line[:-1, 2] < newlines).all() and (per_line[1:, 0] > newlines).all())


def _locate_ragged(file: Path, newlines: np.ndarray, tabs: np.ndarray, expected: int) -> None:
    """Find the first line without exactly 3 tabs (slow path, only after the fast check failed)."""
    n_rows = newlines.size + 1
    per_line = np.bincount(np.searchsorted(newlines, tabs), minlength=n_rows)
    row = int(np.flatnonzero(per_line != len(_DAVIS_COLUMNS) - 1)[0])
    _raise_ragged(file, row, int(per_line[row]) + 1, n_rows, expected)


def _raise_ragged(file: Path, row: int, fields: int, n_rows: int, expected: int) -> None:
    """Report a line without exactly 4 tab-separated fields (hinting at truncation if last)."""
    hint = ""
    if row == n_rows - 1 and n_rows <= expected:
        hint = f"; it is the last line, the file looks truncated ({n_rows} of {expected} rows)"
    raise InputError(
        file,
        f"line {row + _FIRST_DATA_LINE}",
        f"expected 4 tab-separated fields (x y u v), found {fields}{hint}",
    )


def _raise_row_count(file: Path, n_rows: int, header: _DavisHeader) -> None:
    """Report a file with fewer or more data rows than the header promises."""
    expected = header.ny * header.nx
    promise = f"the header promises {header.ny} rows × {header.nx} columns = {expected} vectors"
    if n_rows < expected:
        last = n_rows + _FIRST_DATA_LINE - 1
        raise InputError(
            file,
            f"line {last + 1}",
            f"file ends after line {last} (truncated?): {promise}, found {n_rows} data rows",
        )
    raise InputError(
        file,
        f"line {expected + _FIRST_DATA_LINE}",
        f"unexpected extra data: {promise}, found {n_rows} data rows",
    )


def _parse_numbers(body: bytes, file: Path) -> np.ndarray:
    """Parse the (already shape-checked) body into an (n, 4) float64 table with pandas' C parser."""
    try:
        table = pd.read_csv(
            io.BytesIO(body),
            sep="\t",
            header=None,
            names=list(_DAVIS_COLUMNS),
            dtype=np.float64,
            engine="c",
            na_filter=False,
        ).to_numpy()
    except ValueError:
        _raise_non_numeric(body, file)
    finite = np.isfinite(table)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InputError(
            file,
            f"line {row + _FIRST_DATA_LINE}",
            f"expected a finite number for {_DAVIS_COLUMNS[col]}, found {table[row, col]}",
        )
    return table


def _raise_non_numeric(body: bytes, file: Path) -> None:
    """Find the first field that is not a number (slow path, only after a parse failure)."""
    text = pd.read_csv(
        io.BytesIO(body),
        sep="\t",
        header=None,
        names=list(_DAVIS_COLUMNS),
        dtype=str,
        keep_default_na=False,
        engine="c",
    )
    numbers = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    row, col = np.argwhere(np.isnan(numbers))[0]
    raise InputError(
        file,
        f"line {row + _FIRST_DATA_LINE}",
        f"expected a number for {_DAVIS_COLUMNS[col]}, found {text.iat[row, col]!r}",
    )


def _check_grid(
    table: np.ndarray, file: Path, header: _DavisHeader
) -> tuple[np.ndarray, np.ndarray]:
    """Check x = x0 + k·spacing (x fastest) and y = y0 + j·spacing; return the axes."""
    shape = (header.ny, header.nx)
    x, y = table[:, 0].reshape(shape), table[:, 1].reshape(shape)
    steps = header.spacing * np.arange(max(shape), dtype=np.float64)
    want_x = x[0, 0] + steps[: header.nx]
    want_y = y[0, 0] + steps[: header.ny, None]
    tol = 1e-6 * header.spacing
    bad = np.flatnonzero(((np.abs(x - want_x) > tol) | (np.abs(y - want_y) > tol)).ravel())
    if bad.size:
        j, k = divmod(int(bad[0]), header.nx)
        raise InputError(
            file,
            f"line {bad[0] + _FIRST_DATA_LINE}",
            f"expected x = {want_x[k]:g}, y = {want_y[j, 0]:g} (regular grid from x0 = "
            f"{x[0, 0]:g}, y0 = {y[0, 0]:g} in steps of {header.spacing} px, x fastest, "
            f"y increasing), found x = {x[j, k]:g}, y = {y[j, k]:g}",
        )
    return np.ascontiguousarray(x[0]), np.ascontiguousarray(y[:, 0])


def _displacements(table: np.ndarray, header: _DavisHeader) -> tuple[np.ndarray, np.ndarray]:
    """Return (u, v) on the grid with DaVis's invalid (0, 0) vectors set to NaN."""
    shape = (header.ny, header.nx)
    u = table[:, 2].reshape(shape).copy()
    v = table[:, 3].reshape(shape).copy()
    invalid = (u == 0.0) & (v == 0.0)
    u[invalid] = np.nan
    v[invalid] = np.nan
    return u, v
