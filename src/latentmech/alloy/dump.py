"""LAMMPS text dumps in and out: snapshots of ids, types, positions, per-atom stress and the box.

Reads the text format of ``dump custom`` and ``dump atom`` (plain or gzip-compressed, detected by
the magic bytes, not the suffix), any number of snapshots per file, and writes the same format
(:func:`write_dump`) for round trips, tests and generated data.

What a reader has to decide, and what this one does:

* **Columns** are mapped by their names on the ``ITEM: ATOMS`` line, in any order. ``id`` and
  ``type`` are required, and one coordinate set: ``x y z`` (as written: wrapped or not),
  ``xu yu zu`` (unwrapped, kept as given), ``xs ys zs`` or ``xsu ysu zsu`` (scaled: converted to
  Cartesian through the box, ``origin + s @ matrix``). With ``coordinates="auto"`` the first set
  present in that order is used; the other sets stay in :attr:`Snapshot.columns`.
* **Image flags** ``ix iy iz`` are *not* applied by default (positions stay what the file says,
  as OVITO and ASE do); ``unwrap=True`` adds ``image @ matrix`` to the positions.
* **Stress** (``stress="auto"``) is found as six columns ``<prefix>[1]`` … ``<prefix>[6]`` for any
  ``c_``/``f_``/``v_`` prefix (e.g. ``c_s[1..6]`` of ``compute stress/atom``) or, failing that, as
  the named columns of :data:`NAMED_STRESS_COLUMNS` (``sxx syy szz sxy sxz syz``, also with a
  ``v_`` or ``c_`` prefix). Several candidates are ambiguous and refused; ``stress="s"`` (or
  ``"c_s"``) picks ``c_s[1..6]``, a sequence of six names picks exactly those, ``None`` takes
  none. Order is LAMMPS's ``xx yy zz xy xz yz``; values are kept in the file's units
  (stress × volume, bar·Å³, for ``compute stress/atom``).
* **Rows** are sorted by ``id`` (LAMMPS writes them in processor order unless ``dump_modify
  sort id``); duplicate ids are an error.
* **Boxes**: orthogonal (``ITEM: BOX BOUNDS pp pp pp``), restricted triclinic (``ITEM: BOX BOUNDS
  xy xz yz pp pp pp``; the bounding box is converted back to ``lo``/``hi`` as in the LAMMPS
  ``Howto_triclinic`` page) and general triclinic (``ITEM: BOX BOUNDS abc origin ...``, LAMMPS ≥
  2024). A boundary is periodic when its flag is ``pp``.
* ``ITEM: UNITS`` (``dump_modify units yes``) is kept as :attr:`Snapshot.units` (None when the
  file has no such item; values are never converted), ``ITEM: TIME`` is accepted and ignored;
  any other unknown item is an error.
* Only numeric columns are read (an ``element`` column of names is refused with the line and
  column: dump ``type`` instead).

The atom block of a snapshot is parsed in one pass by a compiled (numba) scanner over the file's
bytes, memory-mapped for plain files: no Python loop over lines. The file's final newline serves
as sentinel, so the scanner checks for the end of the data once per line, not per byte (a file
without one is copied once with a newline appended). With ``threads`` > 1, large blocks are cut
at line starts into chunks scanned on several threads (the result is the same, and any chunk that
stops early sends the block back to the one-pass scan, which finds and reports the problem). Numbers
with at most 15-16 significant digits are converted exactly (integer mantissa times an exact
power of ten, the same double as ``strtod``); longer ones are re-parsed by numpy's own
conversion, so every value is the correctly rounded double of its text. Every problem is a
:class:`DumpError` naming the file, the snapshot, the line (and column) and what was expected.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import math
import mmap
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from latentmech.core.errors import InputError
from latentmech.core.store import atomic_path

__all__ = [
    "COORDINATE_SETS",
    "NAMED_STRESS_COLUMNS",
    "Box",
    "DumpError",
    "Snapshot",
    "iter_dump",
    "read_dump",
    "write_dump",
]

#: Coordinate column sets in the order ``coordinates="auto"`` tries them, and whether scaled.
COORDINATE_SETS: dict[str, tuple[tuple[str, str, str], bool]] = {
    "x": (("x", "y", "z"), False),
    "xu": (("xu", "yu", "zu"), False),
    "xs": (("xs", "ys", "zs"), True),
    "xsu": (("xsu", "ysu", "zsu"), True),
}
#: Named stress columns recognised by ``stress="auto"`` when no ``<prefix>[1..6]`` set exists.
NAMED_STRESS_COLUMNS: tuple[tuple[str, ...], ...] = tuple(
    tuple(f"{prefix}s{c}" for c in ("xx", "yy", "zz", "xy", "xz", "yz"))
    for prefix in ("", "v_", "c_")
)
#: Per-atom columns that hold integers; they are returned as int64 (checked to be integral).
INTEGER_COLUMNS: frozenset[str] = frozenset({"ix", "iy", "iz", "mol", "proc", "procp1"})
_VECTOR_STRESS = re.compile(r"^([cfv]_[^\[\]\s]+)\[1\]$")
_IMAGE_COLUMNS = ("ix", "iy", "iz")
_BOUNDARY_FLAGS = re.compile(r"^[pfsm]{2}$")
_IGNORED_ITEMS = ("TIME",)
_GZIP_MAGIC = b"\x1f\x8b"
_SHOWN = 40  # characters of an offending token or line quoted in a message
#: Atom blocks of at least this many values are scanned in chunks on several threads.
PARALLEL_MIN_VALUES = 50_000
_CHUNK_BYTES = 1 << 18  # aimed-at bytes of atom lines per chunk of a threaded scan
_PROBE_BYTES, _PROBE_LINES = 1 << 16, 256  # first lines of a block, for its length


class DumpError(InputError):
    """A dump file is not what the reader expects; the message names file, place and problem."""


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Box:
    """A (possibly triclinic) simulation box.

    ``origin`` is ``(xlo, ylo, zlo)`` in Å; ``matrix`` has the edge vectors as rows, for a
    LAMMPS box ``a = (lx, 0, 0)``, ``b = (xy, ly, 0)``, ``c = (xz, yz, lz)``; ``periodic`` the
    boundary flag per axis (``pp`` → True).
    """

    origin: np.ndarray
    matrix: np.ndarray
    periodic: tuple[bool, bool, bool]

    @property
    def volume(self) -> float:
        """Box volume in Å³ (|det matrix|)."""
        return float(abs(np.linalg.det(self.matrix)))

    @property
    def is_orthogonal(self) -> bool:
        """True when the matrix is diagonal (no tilt)."""
        return bool(np.all(self.matrix[~np.eye(3, dtype=bool)] == 0.0))

    def fractional(self, positions: np.ndarray) -> np.ndarray:
        """Fractional coordinates ``(n, 3)`` of Cartesian ``positions``, not wrapped into [0, 1)."""
        return np.linalg.solve(self.matrix.T, (np.asarray(positions) - self.origin).T).T

    def cartesian(self, fractional: np.ndarray) -> np.ndarray:
        """Cartesian positions ``(n, 3)`` of fractional coordinates: ``origin + s @ matrix``."""
        return self.origin + np.asarray(fractional) @ self.matrix


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One dump snapshot, rows sorted by atom id.

    ``ids`` and ``types`` ``(n,)`` int64 (types 1-based as in LAMMPS), ``positions`` ``(n, 3)``
    Cartesian Å, ``stress`` ``(n, 6)`` (``xx yy zz xy xz yz``, file units, bar·Å³ for ``compute
    stress/atom``) or None, ``columns`` every other per-atom column by its dump name (float64,
    int64 for :data:`INTEGER_COLUMNS`), ``units`` the LAMMPS unit style of ``ITEM: UNITS``
    (``metal``, ``real``, …) or None when the dump does not say.
    """

    timestep: int
    box: Box
    ids: np.ndarray
    types: np.ndarray
    positions: np.ndarray
    stress: np.ndarray | None
    columns: dict[str, np.ndarray]
    units: str | None = None

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return int(self.ids.size)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_dump(
    path: str | Path,
    snapshot: int | None = None,
    stress: str | Sequence[str] | None = "auto",
    require_stress: bool = False,
    coordinates: str = "auto",
    unwrap: bool = False,
    threads: int | None = 1,
) -> list[Snapshot]:
    """Read every snapshot of a dump, or only the one at index ``snapshot`` (negative from the end).

    With ``snapshot`` set, the other snapshots' atom blocks are skipped, not parsed, and the
    result is a one-element list. ``stress``, ``coordinates`` and ``unwrap`` are described in the
    module docstring; ``require_stress`` turns a dump without stress columns into an error.
    ``threads`` > 1 scans a large atom block in chunks on that many threads (None: the CPUs this
    process may use, at most 8); the result does not depend on it. The default is one pass in
    this thread: on the 2-core machine this was developed on, two threads gained 1.15-1.3×
    with the other core idle and lost 10-20 % with it busy.
    """
    options = dict(
        stress=stress,
        require_stress=require_stress,
        coordinates=coordinates,
        unwrap=unwrap,
        threads=_thread_count(threads),
    )
    if snapshot is None:
        return list(iter_dump(path, **options))
    with _DumpBuffer(path) as buffer:
        headers = []
        for header in _headers(buffer):
            if snapshot >= 0 and header.index == snapshot:
                return [_snapshot(buffer, header, **options)]
            headers.append(header)
            _skip_atoms(buffer, header)
        if -len(headers) <= snapshot < 0:
            return [_snapshot(buffer, headers[snapshot], **options)]
        raise DumpError(
            path,
            f"snapshot {snapshot}",
            f"no such snapshot: the file holds {len(headers)} (indices 0..{len(headers) - 1})",
        )


def iter_dump(
    path: str | Path,
    stress: str | Sequence[str] | None = "auto",
    require_stress: bool = False,
    coordinates: str = "auto",
    unwrap: bool = False,
    threads: int | None = 1,
) -> Iterator[Snapshot]:
    """Yield the snapshots of a dump one at a time (same options as :func:`read_dump`).

    The file is memory-mapped (gzip files are decompressed in memory), so long trajectories are
    not held twice.
    """
    threads = _thread_count(threads)
    with _DumpBuffer(path) as buffer:
        for header in _headers(buffer):
            yield _snapshot(
                buffer,
                header,
                stress=stress,
                require_stress=require_stress,
                coordinates=coordinates,
                unwrap=unwrap,
                threads=threads,
            )


@dataclass(frozen=True)
class _Header:
    """What the items before ``ITEM: ATOMS`` said, and where the atom block starts."""

    index: int
    timestep: int
    n_atoms: int
    box: Box
    column_names: tuple[str, ...]
    atoms_offset: int  # byte offset of the first atom line
    atoms_line: int  # 1-based line number of the first atom line
    units: str | None  # ITEM: UNITS, if the snapshot has it


class _DumpBuffer:
    """The file's bytes (memory-mapped, or decompressed gzip) with a cursor over its lines."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.line = 1  # number of the line at ``offset``
        self._file = None
        self._map: mmap.mmap | None = None

    def __enter__(self) -> _DumpBuffer:
        try:
            self._file = open(self.path, "rb")  # closed in close()
            magic = self._file.read(2)
            self._file.seek(0)
            if magic == _GZIP_MAGIC:
                self.data: bytes | mmap.mmap = self._decompress(self._file.read())
            elif self.path.stat().st_size == 0:
                self.data = b""
            else:
                self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                self.data = self._map
        except OSError as error:
            self.close()
            raise DumpError(self.path, "", f"cannot read the file: {error}") from error
        except DumpError:
            self.close()
            raise
        self.array = np.frombuffer(self.data, dtype=np.uint8)
        self.end = self.array.size
        ends_with_newline = self.end > 0 and self.array[-1] == 10
        # the atom scanner needs a final newline as sentinel: copy only a file that lacks one
        self.scan = self.array if ends_with_newline else np.append(self.array, np.uint8(10))
        return self

    def _decompress(self, raw: bytes) -> bytes:
        """Whole gzip member(s) in memory; a truncated or corrupt stream is a DumpError."""
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DumpError(
                self.path, "gzip", f"corrupt or truncated gzip data: {error}"
            ) from error

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the map and the file (numpy views must be gone: arrays are copied out)."""
        self.array = self.scan = np.empty(0, np.uint8)
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def at_end(self) -> bool:
        """True when only whitespace is left."""
        return _next_nonblank(self.array, self.offset) >= self.array.size

    def next_line(self, where: str, expected: str) -> str:
        """The next line (without its newline); a DumpError if the file ends first."""
        if self.offset >= len(self.data):
            raise DumpError(
                self.path, f"{where}, line {self.line}", f"file ends; expected {expected}"
            )
        end = self.data.find(b"\n", self.offset)
        end = len(self.data) if end < 0 else end
        raw = self.data[self.offset : end]
        self.offset = end + 1
        self.line += 1
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError as error:
            raise DumpError(
                self.path, f"{where}, line {self.line - 1}", f"non-ASCII text; expected {expected}"
            ) from error


def _headers(buffer: _DumpBuffer) -> Iterator[_Header]:
    """Yield each snapshot's header; the caller must skip or parse its atoms before the next."""
    index = 0
    while not buffer.at_end:
        yield _read_header(buffer, index)
        index += 1
    if index == 0:
        raise DumpError(buffer.path, "line 1", "empty file; expected 'ITEM: TIMESTEP'")


def _read_header(buffer: _DumpBuffer, index: int) -> _Header:
    """Parse the items of one snapshot up to and including ``ITEM: ATOMS``."""
    where = f"snapshot {index}"
    found: dict[str, object] = {}
    while True:
        line_number = buffer.line
        line = buffer.next_line(where, "an 'ITEM:' line")
        if not line and not found:
            continue  # blank lines between snapshots
        if not line.startswith("ITEM:"):
            raise DumpError(
                buffer.path,
                f"{where}, line {line_number}",
                f"expected an 'ITEM:' line, found {line[:_SHOWN]!r}"
                + (" (more atom lines than NUMBER OF ATOMS?)" if index > 0 or found else ""),
            )
        item = line[5:].strip()
        place = f"{where}, line {line_number}"
        if item == "TIMESTEP":
            found["timestep"] = _integer(buffer, where, "the timestep")
        elif item == "UNITS":
            found["units"] = buffer.next_line(where, "the unit style of ITEM: UNITS").strip()
        elif item in _IGNORED_ITEMS:
            buffer.next_line(where, f"the value of ITEM: {item}")
        elif item == "NUMBER OF ATOMS":
            found["n_atoms"] = _integer(buffer, where, "the number of atoms", minimum=0)
        elif item.startswith("BOX BOUNDS"):
            found["box"] = _read_box(buffer, item[len("BOX BOUNDS") :].split(), place)
        elif item.startswith("ATOMS"):
            return _atoms_header(buffer, index, found, item[len("ATOMS") :].split(), place)
        else:
            raise DumpError(
                buffer.path,
                place,
                f"unknown item {line[:_SHOWN]!r}; expected TIMESTEP, NUMBER OF ATOMS, BOX BOUNDS, "
                "ATOMS (or UNITS, TIME)",
            )


def _atoms_header(
    buffer: _DumpBuffer, index: int, found: dict[str, object], names: list[str], place: str
) -> _Header:
    """Check the items before ``ITEM: ATOMS`` were all there and the column names are usable."""
    for key, item in (
        ("timestep", "TIMESTEP"),
        ("n_atoms", "NUMBER OF ATOMS"),
        ("box", "BOX BOUNDS"),
    ):
        if key not in found:
            raise DumpError(buffer.path, place, f"'ITEM: ATOMS' before 'ITEM: {item}'")
    if not names:
        raise DumpError(buffer.path, place, "'ITEM: ATOMS' names no columns")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DumpError(buffer.path, place, f"columns named twice: {duplicates}")
    return _Header(
        index=index,
        timestep=int(found["timestep"]),  # type: ignore[arg-type]
        n_atoms=int(found["n_atoms"]),  # type: ignore[arg-type]
        box=found["box"],  # type: ignore[arg-type]
        column_names=tuple(names),
        atoms_offset=buffer.offset,
        atoms_line=buffer.line,
        units=found.get("units"),  # type: ignore[arg-type]
    )


def _integer(buffer: _DumpBuffer, where: str, what: str, minimum: int | None = None) -> int:
    """Read a line holding one integer."""
    line_number = buffer.line
    text = buffer.next_line(where, what)
    try:
        value = int(text)
    except ValueError:
        raise DumpError(
            buffer.path,
            f"{where}, line {line_number}",
            f"expected {what} (an integer), found {text[:_SHOWN]!r}",
        ) from None
    if minimum is not None and value < minimum:
        raise DumpError(
            buffer.path,
            f"{where}, line {line_number}",
            f"{what} must be ≥ {minimum}, found {value}",
        )
    return value


def _read_box(buffer: _DumpBuffer, words: list[str], place: str) -> Box:
    """Parse ``BOX BOUNDS`` (orthogonal, ``xy xz yz`` triclinic or ``abc origin``) and 3 lines."""
    general = words[:2] == ["abc", "origin"]
    tilted = words[:3] == ["xy", "xz", "yz"]
    flags = words[2:] if general else words[3:] if tilted else words
    if len(flags) != 3 or not all(_BOUNDARY_FLAGS.match(flag) for flag in flags):
        raise DumpError(
            buffer.path,
            place,
            f"expected 'ITEM: BOX BOUNDS [xy xz yz | abc origin] f f f' with three boundary flags "
            f"of p/f/s/m pairs (e.g. pp pp pp), found {' '.join(words)!r}",
        )
    width = 4 if general else 3 if tilted else 2
    rows = np.array([_box_row(buffer, place, width, axis) for axis in "xyz"])
    periodic = tuple(flag == "pp" for flag in flags)
    if general:
        return Box(origin=rows[:, 3].copy(), matrix=rows[:, :3].copy(), periodic=periodic)
    return _restricted_box(rows, tilted, periodic)


def _box_row(buffer: _DumpBuffer, place: str, width: int, axis: str) -> list[float]:
    """One line of box bounds: ``width`` numbers."""
    line_number = buffer.line
    text = buffer.next_line(place, f"the {axis} bounds ({width} numbers)")
    try:
        values = [float(word) for word in text.split()]
    except ValueError:
        values = []
    if len(values) != width or not all(map(math.isfinite, values)):
        raise DumpError(
            buffer.path,
            f"{place.split(',')[0]}, line {line_number}",
            f"expected the {axis} box bounds as {width} finite numbers, found {text[:_SHOWN]!r}",
        )
    return values


def _restricted_box(rows: np.ndarray, tilted: bool, periodic: tuple[bool, ...]) -> Box:
    """Box from LAMMPS bounds; triclinic bounds are the bounding box (``Howto_triclinic``)."""
    xy, xz, yz = rows[:, 2] if tilted else (0.0, 0.0, 0.0)
    lo = rows[:, 0].copy()
    hi = rows[:, 1].copy()
    lo[0] -= min(0.0, xy, xz, xy + xz)
    hi[0] -= max(0.0, xy, xz, xy + xz)
    lo[1] -= min(0.0, yz)
    hi[1] -= max(0.0, yz)
    length = hi - lo
    matrix = np.array([[length[0], 0.0, 0.0], [xy, length[1], 0.0], [xz, yz, length[2]]])
    return Box(origin=lo, matrix=matrix, periodic=periodic)  # type: ignore[arg-type]


def _skip_atoms(buffer: _DumpBuffer, header: _Header) -> None:
    """Move the cursor past a snapshot's atom lines without parsing them."""
    end, lines = _skip_lines(buffer.array, header.atoms_offset, header.n_atoms)
    if lines < header.n_atoms:
        # a last line without its newline is a cut atom line: name it, not the one after it
        cut = lines > 0 and end > 0 and buffer.array[end - 1] != 10
        complete = lines - 1 if cut else lines
        raise DumpError(
            buffer.path,
            f"snapshot {header.index}, line {header.atoms_line + complete}",
            f"file ends after {complete} of {header.n_atoms} atom lines (NUMBER OF ATOMS)",
        )
    buffer.offset = end
    buffer.line = header.atoms_line + header.n_atoms


def _snapshot(
    buffer: _DumpBuffer,
    header: _Header,
    stress: str | Sequence[str] | None,
    require_stress: bool,
    coordinates: str,
    unwrap: bool,
    threads: int,
) -> Snapshot:
    """Parse one snapshot's atom block and map its columns (rows sorted by id)."""
    names = header.column_names
    coord_names, scaled = _coordinate_columns(buffer, header, coordinates)
    stress_names = _stress_columns(buffer, header, stress, require_stress) or ()
    used = {"id", "type", *coord_names, *stress_names}
    other_names = ["id", "type", *(name for name in names if name not in used)]
    groups = (other_names, coord_names, stress_names)
    arrays, file_order = _parse_atoms(buffer, header, groups, True, threads)
    try:
        column, order = _checked_columns(buffer, header, other_names, arrays[0], file_order)
    except DumpError:
        if file_order:
            raise
        # sorted rows lost their line numbers: parse again in file order to name the line
        arrays, _ = _parse_atoms(buffer, header, groups, False, threads)
        _checked_columns(buffer, header, other_names, arrays[0], True)
        raise
    positions, stress_values = arrays[1], arrays[2]
    if scaled:
        positions = header.box.cartesian(positions)
    if unwrap:
        positions += _images(buffer, header, column) @ header.box.matrix
    return Snapshot(
        timestep=header.timestep,
        box=header.box,
        ids=_sorted(column["id"], order),
        types=_sorted(column["type"], order),
        positions=_sorted(positions, order),
        stress=_sorted(stress_values, order) if stress_names else None,
        columns={name: _sorted(column[name], order) for name in other_names[2:]},
        units=header.units,
    )


def _checked_columns(
    buffer: _DumpBuffer, header: _Header, names: list[str], table: np.ndarray, file_order: bool
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Columns of the non-position, non-stress table ``(len(names), n)`` by name (integers
    checked and converted) and the row order sorting them by id (None when already sorted).

    Rows placed by id (not ``file_order``) had their ids checked by the scanner to be 1..n."""
    column = dict(zip(names, table, strict=True))
    checked = ["type", *sorted(INTEGER_COLUMNS.intersection(names))]
    if file_order:
        checked.insert(0, "id")
    else:
        column["id"] = np.arange(1, table.shape[1] + 1, dtype=np.int64)
    for name in checked:
        column[name] = _integral(buffer, header, column, name)
    _check_types(buffer, header, column["type"])
    order = _id_order(buffer, header, column["id"]) if file_order else None
    return column, order


def _sorted(array: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """A contiguous array of the rows of ``array`` in id order."""
    return np.ascontiguousarray(array) if order is None else array[order]


def _coordinate_columns(
    buffer: _DumpBuffer, header: _Header, coordinates: str
) -> tuple[tuple[str, str, str], bool]:
    """The three coordinate columns to use and whether they are scaled."""
    names = set(header.column_names)
    where = f"snapshot {header.index}, line {header.atoms_line - 1}"
    missing = [name for name in ("id", "type") if name not in names]
    if missing:
        raise DumpError(
            buffer.path,
            where,
            f"missing required column(s) {missing}; columns are {list(header.column_names)}",
        )
    if coordinates != "auto" and coordinates not in COORDINATE_SETS:
        raise ValueError(
            f"coordinates must be 'auto' or one of {list(COORDINATE_SETS)}, got {coordinates!r}"
        )
    candidates = (
        COORDINATE_SETS if coordinates == "auto" else {coordinates: COORDINATE_SETS[coordinates]}
    )
    for columns, scaled in candidates.values():
        if names.issuperset(columns):
            return columns, scaled
    wanted = " or ".join(" ".join(columns) for columns, _ in candidates.values())
    raise DumpError(
        buffer.path,
        where,
        f"missing position columns: expected {wanted}; columns are {list(header.column_names)}",
    )


def _stress_columns(
    buffer: _DumpBuffer, header: _Header, stress: str | Sequence[str] | None, require: bool
) -> tuple[str, ...] | None:
    """The six stress columns (``xx yy zz xy xz yz``) chosen by ``stress``, or None."""
    names = header.column_names
    where = f"snapshot {header.index}, line {header.atoms_line - 1}"
    if stress is None:
        chosen = None
    elif isinstance(stress, str) and stress == "auto":
        candidates = _stress_candidates(names)
        if len(candidates) > 1:
            raise DumpError(
                buffer.path,
                where,
                f"several stress candidates {[c[0] for c in candidates]}: pick one with stress=",
            )
        chosen = candidates[0] if candidates else None
    else:
        chosen = _explicit_stress(stress)
        missing = [name for name in chosen if name not in names]
        if missing:
            raise DumpError(
                buffer.path, where, f"stress columns {missing} not found; columns are {list(names)}"
            )
    if chosen is None and require:
        raise DumpError(
            buffer.path,
            where,
            "no per-atom stress columns (expected c_<name>[1..6] or sxx syy szz sxy sxz syz); "
            f"columns are {list(names)}",
        )
    return chosen


def _stress_candidates(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Every complete ``<prefix>[1..6]`` set, else every complete named set."""
    present = set(names)
    vectors = []
    for name in names:
        match = _VECTOR_STRESS.match(name)
        if match:
            columns = tuple(f"{match.group(1)}[{k}]" for k in range(1, 7))
            if present.issuperset(columns):
                vectors.append(columns)
    if vectors:
        return vectors
    return [columns for columns in NAMED_STRESS_COLUMNS if present.issuperset(columns)]


def _explicit_stress(stress: str | Sequence[str]) -> tuple[str, ...]:
    """Column names for ``stress="s"`` / ``"c_s"`` / six explicit names."""
    if isinstance(stress, str):
        prefix = stress if re.match(r"^[cfv]_", stress) else f"c_{stress}"
        return tuple(f"{prefix}[{k}]" for k in range(1, 7))
    chosen = tuple(stress)
    if len(chosen) != 6:
        raise ValueError(f"stress= needs six column names (xx yy zz xy xz yz), got {len(chosen)}")
    return chosen


@dataclass(frozen=True)
class _Target:
    """Where the scanner puts values: column k of atom row r at ``out[base[k] + r * stride[k]]``;
    rows placed by id when ``id_col`` ≥ 0."""

    out: np.ndarray
    base: np.ndarray
    stride: np.ndarray
    id_col: int
    ids: np.ndarray  # view of the id column in ``out`` (first group: contiguous)

    def all_placed(self) -> bool:
        """After a scan by id: every row 0..n-1 received its atom (ids were zeroed before, and
        the scanner only places integral ids 1..n, so with n lines a repeat leaves a zero)."""
        return bool(self.ids.all())


@dataclass(frozen=True)
class _Scanned:
    """What a scan of atom lines returned: status, byte offset, row and column where it stopped,
    and the (column, byte offset, row) of each token left for the exact re-parse."""

    status: int
    offset: int
    row: int
    col: int
    slow: np.ndarray


def _parse_atoms(
    buffer: _DumpBuffer,
    header: _Header,
    groups: tuple[Sequence[str], ...],
    by_id: bool,
    threads: int,
) -> tuple[tuple[np.ndarray, ...], bool]:
    """Parse the atom block straight into its column groups, views of one float64 buffer.

    ``groups`` partition the column names (other columns with id and type first, positions,
    stress). The first group comes out column by column, ``(len(group), n_atoms)`` (each column
    contiguous), the others row by row, ``(n_atoms, len(group))``. With ``by_id`` the rows come
    out sorted by id when the ids are 1..n (else the block is parsed again in file order). A
    large block is cut into chunks of lines parsed on up to ``threads`` threads; whatever goes
    wrong there, the block is parsed again in one pass, so errors are found and reported as by
    a single scan. Returns the arrays and whether they are in file order; advances the cursor.
    """
    n = header.n_atoms
    target = _target(header.column_names, groups, n, by_id)
    scanned = None
    if threads > 1 and n * len(header.column_names) >= PARALLEL_MIN_VALUES:
        scanned = _scan_chunks(buffer, header, target, threads)
    if scanned is None:
        target.ids[:] = 0
        scanned = _scan_rows(buffer, header, target, (header.atoms_offset, 0, n))
    if scanned.status == _OK and by_id and not target.all_placed():
        scanned = _Scanned(_UNSORTED, scanned.offset, scanned.row, 0, scanned.slow)
    if scanned.status == _UNSORTED:
        return _parse_atoms(buffer, header, groups, False, threads)
    if scanned.status != _OK:
        _raise_scan_error(buffer, header, scanned.status, scanned.offset, scanned.row, scanned.col)
    if scanned.slow.shape[1]:
        _exact_values(buffer.array, scanned.slow, target)
    buffer.offset = scanned.offset
    buffer.line = header.atoms_line + n
    arrays, start = [], 0
    for g, group in enumerate(groups):  # 3 groups
        block = target.out[start : start + n * len(group)]
        arrays.append(block.reshape((len(group), n) if g == 0 else (n, len(group))))
        start += n * len(group)
    return tuple(arrays), not by_id


def _target(
    names: Sequence[str], groups: tuple[Sequence[str], ...], n: int, by_id: bool
) -> _Target:
    """The output buffer and each column's place in it (first group by column, others by row)."""
    base = np.empty(len(names), dtype=np.int64)
    stride = np.empty(len(names), dtype=np.int64)
    start = 0
    for g, group in enumerate(groups):  # 3 groups
        for k, name in enumerate(group):  # per column, not per atom
            j = names.index(name)
            base[j], stride[j] = (start + k * n, 1) if g == 0 else (start + k, len(group))
        start += n * len(group)
    out = np.empty(start, dtype=np.float64)
    j = names.index("id")  # in the first group: stride 1
    ids = out[base[j] : base[j] + n]
    ids[:] = 0
    return _Target(out=out, base=base, stride=stride, id_col=j if by_id else -1, ids=ids)


def _scan_rows(
    buffer: _DumpBuffer, header: _Header, target: _Target, chunk: tuple[int, int, int]
) -> _Scanned:
    """Scan the lines of ``chunk`` = (byte offset, first row, number of rows) into ``target``."""
    offset, first_row, n_rows = chunk
    slow = np.empty((3, n_rows * len(header.column_names)), dtype=np.int64)  # pages untouched
    status, offset, row, col, n_slow = _scan_block(
        buffer.scan, buffer.end, offset, first_row, n_rows, target.base, target.stride,
        target.out, slow, target.id_col, header.n_atoms,
    )  # fmt: skip
    return _Scanned(status, offset, row, col, slow[:, :n_slow])


def _scan_chunks(
    buffer: _DumpBuffer, header: _Header, target: _Target, threads: int
) -> _Scanned | None:
    """Scan the block as chunks of lines on ``threads`` threads (this one and workers pulling
    chunks in turn, so a busy core only slows its share); None when the chunks do not add up
    to the block as one scan would see it (the caller then scans it in one pass)."""
    chunks = _chunks(buffer, header, threads)
    if chunks is None:
        return None
    results: list[_Scanned | None] = [None] * len(chunks)
    turn = itertools.count()  # next() on it is atomic under the GIL

    def work() -> None:
        while (c := next(turn)) < len(chunks):
            results[c] = _scan_rows(buffer, header, target, chunks[c])

    futures = [_workers(threads - 1).submit(work) for _ in range(threads - 1)]
    work()
    for future in futures:
        if not future.cancel():  # a worker that never started has nothing to wait for
            future.result()
    return _joined(results, chunks, target)


def _joined(
    results: list[_Scanned], chunks: list[tuple[int, int, int]], target: _Target
) -> _Scanned | None:
    """The chunks' results as one scan's: the first chunk that stopped decides (an unsorted id
    is final; anything else needs the one-pass scan for its exact place)."""
    for c, result in enumerate(results):
        if result.status == _UNSORTED:
            return result
        if result.status != _OK or (c + 1 < len(chunks) and result.offset != chunks[c + 1][0]):
            return None
    last = results[-1]
    slow = np.concatenate([result.slow for result in results], axis=1)
    return _Scanned(_OK, last.offset, last.row, 0, slow)


def _chunks(
    buffer: _DumpBuffer, header: _Header, threads: int
) -> list[tuple[int, int, int]] | None:
    """Chunks (byte offset, first row, number of rows) of the atom block for ``threads``
    threads, cut at line starts; None when the block is too small or its length unknown.

    The block's length is estimated from its first lines (slightly short, so that no cut falls
    past its end: the last chunk takes the remaining rows). About :data:`_CHUNK_BYTES` per
    chunk, between 2 and 16 per thread: more chunks than threads, so that a thread on a core
    busy with other work takes fewer and the wait for the last chunk is short. Rows before each
    cut are counted as newlines (a vectorised compare, far cheaper than parsing).
    """
    start, n = header.atoms_offset, header.n_atoms
    probe = np.flatnonzero(buffer.array[start : start + _PROBE_BYTES] == 10)
    probe = probe[: min(_PROBE_LINES, n // 2)]
    if probe.size == 0:
        return None
    length = 0.9 * (probe[-1] + 1) / probe.size * n
    count = int(np.clip(round(length / _CHUNK_BYTES), 2 * threads, 16 * threads))
    if n < 2 * count:
        return None
    offsets, rows = [start], [0]
    for c in range(1, count):
        newline = buffer.data.find(b"\n", start + int(length * c / count))
        if newline < 0:
            return None
        lines = int(np.count_nonzero(buffer.array[offsets[-1] : newline + 1] == 10))
        if lines == 0 or rows[-1] + lines >= n:
            return None
        offsets.append(newline + 1)
        rows.append(rows[-1] + lines)
    sizes = np.diff([*rows, n])
    return [
        (offset, row, int(size)) for offset, row, size in zip(offsets, rows, sizes, strict=True)
    ]


@functools.cache
def _workers(count: int) -> ThreadPoolExecutor:
    """Worker threads for chunked scans (the scanner releases the GIL)."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="latentmech-dump")


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_workers.cache_clear)


def _thread_count(threads: int | None) -> int:
    """``threads``, or (None) the CPUs this process may use, at most 8."""
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            threads = os.cpu_count() or 1
        return max(1, min(threads, 8))
    if threads < 1:
        raise ValueError(f"threads must be ≥ 1 or None, got {threads}")
    return threads


def _exact_values(data: np.ndarray, slow: np.ndarray, target: _Target) -> None:
    """Re-parse the long numbers the scanner could not convert exactly, with numpy's parser.

    ``slow`` holds (column, byte offset, row) of each such token; a token runs to the next
    whitespace. Tokens are gathered into a fixed-width bytes array and converted by
    ``astype(float64)`` (correctly rounded).
    """
    cols, start, rows = slow
    length = _token_lengths(data, start)
    width = int(length.max())
    grid = start[:, None] + np.arange(width)
    chars = data[np.minimum(grid, data.size - 1)]
    chars[np.arange(width) >= length[:, None]] = 0
    values = chars.view(f"S{width}").ravel().astype(np.float64)
    target.out[target.base[cols] + rows * target.stride[cols]] = values


def _raise_scan_error(
    buffer: _DumpBuffer, header: _Header, status: int, offset: int, row: int, col: int
) -> None:
    """Turn the scanner's status into a DumpError naming the line and column."""
    names, n = header.column_names, header.n_atoms
    place = f"snapshot {header.index}, line {header.atoms_line + row}"
    if status == _EOF:
        raise DumpError(
            buffer.path, place, f"file ends after {row} of {n} atom lines (NUMBER OF ATOMS)"
        )
    if status == _FEW:
        raise DumpError(
            buffer.path,
            place,
            f"atom line has {col} values, expected {len(names)} ({' '.join(names)})",
        )
    if status == _MANY:
        raise DumpError(
            buffer.path, place, f"atom line has more than {len(names)} values ({' '.join(names)})"
        )
    token = _token_text(buffer, offset)
    if token.startswith("ITEM:") and col == 0:
        raise DumpError(
            buffer.path,
            place,
            f"found {token!r} after {row} atom lines, but NUMBER OF ATOMS says {n}",
        )
    raise DumpError(
        buffer.path,
        f"{place}, column {col + 1} {names[col]!r}",
        f"expected a number, found {token!r}",
    )


def _token_text(buffer: _DumpBuffer, offset: int) -> str:
    """The whitespace-delimited text at ``offset`` (at most _SHOWN characters)."""
    raw = bytes(buffer.data[offset : offset + _SHOWN])
    text = raw.decode("ascii", errors="replace")
    return text.split("\n")[0].strip() if text.startswith("ITEM:") else (text.split() or [""])[0]


def _integral(
    buffer: _DumpBuffer, header: _Header, column: dict[str, np.ndarray], name: str
) -> np.ndarray:
    """Column ``name`` (file order) as int64; a non-integer is reported with its line."""
    values = column[name]
    integers = values.astype(np.int64)  # NaN, inf and out-of-range casts differ from the value
    bad = np.flatnonzero(integers != values)
    if bad.size:
        k = header.column_names.index(name)
        raise DumpError(
            buffer.path,
            f"snapshot {header.index}, line {header.atoms_line + bad[0]}, column {k + 1} {name!r}",
            f"expected an integer, found {float(values[bad[0]])!r}",
        )
    return integers


def _check_types(buffer: _DumpBuffer, header: _Header, types: np.ndarray) -> None:
    """LAMMPS types are 1-based."""
    bad = np.flatnonzero(types < 1)
    if bad.size:
        k = header.column_names.index("type")
        raise DumpError(
            buffer.path,
            f"snapshot {header.index}, line {header.atoms_line + bad[0]}, column {k + 1} 'type'",
            f"expected a LAMMPS atom type ≥ 1, found {types[bad[0]]}",
        )


def _id_order(buffer: _DumpBuffer, header: _Header, ids: np.ndarray) -> np.ndarray | None:
    """Row order sorting the atoms by id (None when already sorted); ids must be unique."""
    if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return None
    order = np.argsort(ids, kind="stable")
    same = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if same.size:
        first, second = np.sort(order[same[0] : same[0] + 2])
        raise DumpError(
            buffer.path,
            f"snapshot {header.index}, lines {header.atoms_line + first} and "
            f"{header.atoms_line + second}",
            f"atom id {ids[first]} appears twice; expected unique ids",
        )
    return order


def _images(buffer: _DumpBuffer, header: _Header, column: dict[str, np.ndarray]) -> np.ndarray:
    """Image flags ``(n, 3)`` (file order), for ``unwrap=True``."""
    missing = [name for name in _IMAGE_COLUMNS if name not in column]
    if missing:
        raise DumpError(
            buffer.path,
            f"snapshot {header.index}, line {header.atoms_line - 1}",
            f"unwrap=True needs image flags ix iy iz; missing {missing}",
        )
    return np.column_stack([column[name] for name in _IMAGE_COLUMNS])


# --------------------------------------------------------------------------------------------
# Compiled scanners (numba): one pass over the bytes of an atom block
# --------------------------------------------------------------------------------------------

_OK, _EOF, _BAD, _FEW, _MANY, _UNSORTED = 0, 1, 2, 3, 4, 5
_POW10 = np.array([10.0**k for k in range(23)])  # exactly representable powers of ten
_EXACT_MANTISSA = 2**53


@numba.njit(cache=True, nogil=True, inline="always")
def _is_blank(c: int) -> bool:
    """Space, tab or carriage return (not newline)."""
    return c == 32 or c == 9 or c == 13


@numba.njit(cache=True, nogil=True)
def _scan_special(data: np.ndarray, pos: int) -> tuple[bool, int, float]:
    """``nan``/``inf``/``infinity`` (any case, optional sign), as LAMMPS prints them.

    Returns (ok, end, value).
    """
    size = data.size
    sign = 1.0
    if data[pos] == 45 or data[pos] == 43:
        sign = -1.0 if data[pos] == 45 else 1.0
        pos += 1
    end = pos
    while end < size and not (_is_blank(data[end]) or data[end] == 10):
        end += 1
    word = data[pos:end] | 32  # lower case
    if word.size == 3 and word[0] == 110 and word[1] == 97 and word[2] == 110:
        return True, end, np.nan
    if (word.size == 3 or word.size == 8) and word[0] == 105 and word[1] == 110 and word[2] == 102:
        return True, end, sign * np.inf
    return False, end, 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _at(data: np.ndarray, pos: int) -> int:
    """``data[pos]`` through an unsigned index: no negative-index wraparound code in hot loops."""
    return data[np.uint64(pos)]


@numba.njit(cache=True, nogil=True)
def _scan_block(
    data: np.ndarray,
    end: int,
    pos: int,
    first_row: int,
    n_rows: int,
    col_base: np.ndarray,
    col_stride: np.ndarray,
    out: np.ndarray,
    slow: np.ndarray,
    id_col: int,
    n_ids: int,
) -> tuple[int, int, int, int, int]:
    """Parse ``n_rows`` lines of numbers from ``pos``, rows ``first_row`` on of the block; column
    k of the line for atom row r goes to ``out[col_base[k] + r * col_stride[k]]``.

    ``data`` must end with a newline (a sentinel: every scanning loop stops at one, so only the
    start of a line checks for the end of the data); ``end`` is the number of bytes of the file
    (``data.size``, or one less when the newline was appended). ``r`` is the line's row, or,
    with ``id_col`` ≥ 0, its id − 1: the block comes out sorted by id as long as the ids are the
    integers 1..``n_ids`` (LAMMPS's usual numbering); any other id (or one too long for the
    exact fast conversion) stops the scan with _UNSORTED. Repeated ids are left to the caller
    (a row never written; no shared flags, so chunks of one block can be scanned on several
    threads).

    Returns (status, byte offset, row, column, number of slow tokens). A number is sign,
    digits, optional fraction, optional exponent; its digits form an integer mantissa. When
    there are at most 18 digits, the mantissa is below 2**53 and the power of ten within ±22
    (both exact doubles) one multiplication or division gives the correctly rounded value; other
    tokens get an approximation here and are listed in ``slow`` (column, byte offset, row) for
    an exact re-parse. One function on purpose: with the number scanner split out (even
    inlined) the block took ~40 % longer.
    """
    n_cols = col_base.size
    line = np.empty(n_cols, dtype=np.float64)  # values of the columns before the id column
    n_slow = 0
    for row in range(first_row, first_row + n_rows):
        if pos >= end:
            return _EOF, end, row, 0, n_slow
        line_slow = n_slow
        dest = row
        for col in range(n_cols):
            while _is_blank(_at(data, pos)):
                pos += 1
            if _at(data, pos) == 10:
                return (_EOF if pos >= end else _FEW), pos, row, col, n_slow
            start = pos
            negative = False
            if _at(data, pos) == 45:
                negative = True
                pos += 1
            elif _at(data, pos) == 43:
                pos += 1
            mantissa = 0  # wraps past 18 digits; such tokens are re-parsed exactly
            first = pos
            while 48 <= _at(data, pos) <= 57:  # integer part
                mantissa = mantissa * 10 + (_at(data, pos) - 48)
                pos += 1
            digits = pos - first
            exponent = 0
            if _at(data, pos) == 46:  # fraction
                pos += 1
                first = pos
                while 48 <= _at(data, pos) <= 57:
                    mantissa = mantissa * 10 + (_at(data, pos) - 48)
                    pos += 1
                digits += pos - first
                exponent = first - pos
            valid = digits > 0
            if valid and (_at(data, pos) == 101 or _at(data, pos) == 69):  # exponent
                pos += 1
                negative_exponent = False
                if _at(data, pos) == 45 or _at(data, pos) == 43:
                    negative_exponent = _at(data, pos) == 45
                    pos += 1
                first = pos
                power = 0
                while 48 <= _at(data, pos) <= 57:
                    if power < 100000:
                        power = power * 10 + (_at(data, pos) - 48)
                    pos += 1
                valid = pos > first
                exponent += -power if negative_exponent else power
            if valid and not (_is_blank(_at(data, pos)) or _at(data, pos) == 10):
                valid = False
            if not valid:
                valid, pos, value = _scan_special(data, start)  # value carries its sign
                if not valid:
                    return _BAD, start, row, col, n_slow
                negative = False
            elif digits <= 18 and mantissa < _EXACT_MANTISSA and -22 <= exponent <= 22:
                scale = _POW10[abs(exponent)]
                value = mantissa * scale if exponent >= 0 else mantissa / scale
            else:
                if col == id_col:  # an approximate id cannot place its row
                    return _UNSORTED, pos, row, id_col, n_slow
                value = mantissa * 10.0**exponent
                slow[0, n_slow], slow[1, n_slow] = col, start
                n_slow += 1
            if negative:
                value = -value
            if col == id_col:
                if not (1.0 <= value <= n_ids):
                    return _UNSORTED, pos, row, id_col, n_slow
                dest = int(value)  # in range: the cast is defined
                if dest != value:
                    return _UNSORTED, pos, row, id_col, n_slow
                dest -= 1
            if col >= id_col:
                out[col_base[col] + dest * col_stride[col]] = value
            else:
                line[col] = value
        while _is_blank(_at(data, pos)):
            pos += 1
        if _at(data, pos) != 10:
            return _MANY, pos, row, n_cols, n_slow
        pos += 1
        for col in range(id_col):
            out[col_base[col] + dest * col_stride[col]] = line[col]
        for k in range(line_slow, n_slow):
            slow[2, k] = dest
    return _OK, min(pos, end), first_row + n_rows, 0, n_slow


@numba.njit(cache=True, nogil=True)
def _skip_lines(data: np.ndarray, pos: int, n_lines: int) -> tuple[int, int]:
    """Offset after ``n_lines`` more lines from ``pos`` and how many lines were found."""
    size = data.size
    found = 0
    while found < n_lines and pos < size:
        while pos < size and data[pos] != 10:
            pos += 1
        found += 1
        pos += 1
    return min(pos, size), found


@numba.njit(cache=True, nogil=True)
def _next_nonblank(data: np.ndarray, pos: int) -> int:
    """Offset of the next byte that is not whitespace (the size when there is none)."""
    while pos < data.size and (_is_blank(data[pos]) or data[pos] == 10):
        pos += 1
    return pos


@numba.njit(cache=True, nogil=True)
def _token_lengths(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Length of the whitespace-delimited token at each start offset."""
    lengths = np.empty(starts.size, dtype=np.int64)
    for k in range(starts.size):
        end = starts[k]
        while end < data.size and not (_is_blank(data[end]) or data[end] == 10):
            end += 1
        lengths[k] = end - starts[k]
    return lengths


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_dump(
    path: str | Path,
    snapshots: Snapshot | Sequence[Snapshot],
    columns: Sequence[str] | None = None,
    stress_name: str = "s",
    coordinates: str = "x",
    float_format: str = "%r",
) -> Path:
    """Write snapshots as a LAMMPS ``dump custom`` text file (gzip when ``path`` ends in ``.gz``).

    Columns: ``id type`` and the positions (``coordinates`` ``"x"`` Cartesian, ``"xu"`` the same
    values labelled unwrapped, ``"xs"`` scaled), the stress as ``c_<stress_name>[1..6]`` when the
    snapshot has one, then ``columns`` from :attr:`Snapshot.columns` (default: all, in their
    order). ``float_format`` defaults to ``%r``, Python's shortest text that reads back to the
    same double, so write → read is exact. Restricted boxes are written as LAMMPS does (bounding
    box and tilts for triclinic ones); other matrices as ``abc origin``. The file is written to a
    temporary name and renamed.
    """
    frames = [snapshots] if isinstance(snapshots, Snapshot) else list(snapshots)
    if coordinates not in ("x", "xu", "xs"):
        raise ValueError(f"coordinates must be 'x', 'xu' or 'xs', got {coordinates!r}")
    target = Path(path)
    with atomic_path(target) as tmp:
        opener = gzip.open if target.suffix == ".gz" else open
        with opener(tmp, "wb") as handle:
            for frame in frames:
                handle.write(_snapshot_text(frame, columns, stress_name, coordinates, float_format))
    return target


def _snapshot_text(
    frame: Snapshot,
    columns: Sequence[str] | None,
    stress_name: str,
    coordinates: str,
    float_format: str,
) -> bytes:
    """One snapshot as dump text; the atom lines are formatted by one C-level ``%``."""
    extra = list(frame.columns) if columns is None else list(columns)
    missing = [name for name in extra if name not in frame.columns]
    if missing:
        raise ValueError(
            f"columns {missing} are not in the snapshot (it has {list(frame.columns)})"
        )
    names, arrays = ["id", "type"], [frame.ids, frame.types]
    coord_names, _ = COORDINATE_SETS[coordinates]
    names += list(coord_names)
    positions = frame.box.fractional(frame.positions) if coordinates == "xs" else frame.positions
    arrays += list(positions.T)
    if frame.stress is not None:
        names += [f"c_{stress_name}[{k}]" for k in range(1, 7)]
        arrays += list(np.asarray(frame.stress).T)
    names += extra
    arrays += [frame.columns[name] for name in extra]
    units = f"ITEM: UNITS\n{frame.units}\n" if frame.units else ""
    header = (
        f"{units}ITEM: TIMESTEP\n{frame.timestep}\nITEM: NUMBER OF ATOMS\n{frame.n_atoms}\n"
        f"{_box_text(frame.box, float_format)}ITEM: ATOMS {' '.join(names)}\n"
    )
    return header.encode("ascii") + _rows_text(arrays, float_format).encode("ascii")


def _rows_text(arrays: list[np.ndarray], float_format: str) -> str:
    """Format columns row by row with one ``%`` over a flat tuple (no Python loop over atoms)."""
    n = len(arrays[0])
    if n == 0:
        return ""
    table = np.empty((n, len(arrays)), dtype=object)
    formats = []
    for k, array in enumerate(arrays):
        array = np.asarray(array)
        integer = np.issubdtype(array.dtype, np.integer)
        table[:, k] = array.astype(np.int64 if integer else np.float64).tolist()
        formats.append("%d" if integer else float_format)
    row = " ".join(formats) + "\n"
    return (row * n) % tuple(table.ravel().tolist())


def _box_text(box: Box, float_format: str) -> str:
    """``ITEM: BOX BOUNDS`` and its three lines for ``box``."""
    flags = " ".join("pp" if p else "ff" for p in box.periodic)
    m, origin = box.matrix, box.origin

    def fmt(*values: float) -> str:
        return " ".join(float_format % float(v) for v in values)

    if np.any(m[np.triu_indices(3, 1)] != 0.0) or np.any(np.diag(m) <= 0.0):
        rows = "".join(f"{fmt(*m[k], origin[k])}\n" for k in range(3))
        return f"ITEM: BOX BOUNDS abc origin {flags}\n{rows}"
    hi = origin + np.diag(m)
    xy, xz, yz = m[1, 0], m[2, 0], m[2, 1]
    if xy == 0.0 and xz == 0.0 and yz == 0.0:
        rows = "".join(f"{fmt(origin[k], hi[k])}\n" for k in range(3))
        return f"ITEM: BOX BOUNDS {flags}\n{rows}"
    lo_bound = origin + np.array([min(0.0, xy, xz, xy + xz), min(0.0, yz), 0.0])
    hi_bound = hi + np.array([max(0.0, xy, xz, xy + xz), max(0.0, yz), 0.0])
    tilts = (xy, xz, yz)
    rows = "".join(f"{fmt(lo_bound[k], hi_bound[k], tilts[k])}\n" for k in range(3))
    return f"ITEM: BOX BOUNDS xy xz yz {flags}\n{rows}"
