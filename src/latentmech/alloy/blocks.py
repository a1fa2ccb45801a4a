"""Block fields of an atomistic cell: concentrations, Warren–Cowley parameters, virial stress.

Section 4.1.1 and SI A of the AlloyVAE paper: the periodic simulation cell is cut into r × r × r
equal blocks and, per block, the atom fractions of each element, the mean first-shell
Warren–Cowley (WC) parameters of the nine ordered pairs and the virial stress are computed.

Geometry follows LAMMPS: the cell is ``origin + f @ matrix`` for fractional ``f`` in [0, 1)³,
the rows of ``matrix`` being the edge vectors a, b, c (any parallelepiped; triclinic cells go
through fractional coordinates). All three directions are periodic. Blocks are the r³ equal
parallelepipeds of the fractional cell: an atom's block is ``floor((f mod 1) · r) mod r`` along
each cell vector, and every field is laid out ``[..., bx, by, bz]`` (bx along a).

Choices where the paper is silent (each a parameter):

* First shell: every neighbour closer than a cutoff; by default midway between the first
  (a/√2) and second (a) FCC shells, with the lattice constant from the density,
  a = (4V/N)^(1/3) (:func:`fcc_cutoff`). An atom whose shell does not hold 12 atoms is "non-FCC";
  more than ``max_bad_fraction`` of them and the cell is refused.
* WC reference concentration c_j: the whole cell's (``reference="cell"``, the textbook
  definition, default) or the atom's block's (``"block"``).
* α_ij = (p_ij − c_j)/(δ_ij − c_j) is NaN when it is undefined: species j absent
  (c_j = 0, i ≠ j), a pure reference (c_i = 1, i = j), or an atom with no neighbour. Block means
  skip NaN atoms; a block without type-i atoms has NaN for the pairs (i, ·).
* Block stress in GPa: Σ (per-atom stress × volume, bar·Å³, ``compute stress/atom``) over the
  block's atoms / block volume × 1e-4, so the mean over blocks is the cell's virial stress −P
  (without the kinetic part when the dump holds only the virial).
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from latentmech.core.errors import InputError

__all__ = [
    "FCC_SHELL_SIZE",
    "REFERENCES",
    "BlockError",
    "block_fields",
    "block_indices",
    "fcc_cutoff",
    "first_shell",
    "fractional_coordinates",
    "neighbour_counts",
    "perpendicular_widths",
    "warren_cowley_atoms",
]

#: Atoms in the first coordination shell of FCC.
FCC_SHELL_SIZE = 12
#: Where the WC reference concentration c_j comes from.
REFERENCES: tuple[str, ...] = ("cell", "block")
#: bar → GPa.
BAR_TO_GPA = 1e-4
_INITIAL_NEIGHBOURS = 16  # neighbours asked of the k-d tree first; doubled while too few
_ORTHOGONAL_TOLERANCE = 1e-12  # relative size of tilt below which a cell counts as orthogonal


class BlockError(InputError):
    """Input a block field cannot be computed from; names what, where and what was expected."""


def _check_geometry(
    positions: np.ndarray, matrix: np.ndarray, origin: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (n, 3), cell matrix (3, 3) with non-zero volume and origin (3,), as float64."""
    positions = np.asarray(positions, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise BlockError("positions", "shape", f"an (n, 3) array, not shape {positions.shape}")
    if len(positions) == 0:
        raise BlockError("positions", "shape", "at least one atom")
    if matrix.shape != (3, 3) or origin.shape != (3,):
        raise BlockError("cell", "matrix / origin",
                         f"a (3, 3) matrix and a (3,) origin, not {matrix.shape} and {origin.shape}")  # fmt: skip
    if not (np.isfinite(matrix).all() and np.isfinite(origin).all()):
        raise BlockError("cell", "matrix / origin", "finite numbers")
    if abs(np.linalg.det(matrix)) <= 1e-12 * np.prod(np.linalg.norm(matrix, axis=1)):
        raise BlockError("cell", "matrix", f"three independent edge vectors, not {matrix.tolist()}")
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        raise BlockError("positions", f"row {int(np.argmax(bad))}", "finite coordinates")
    return positions, matrix, origin


def _check_types(types: np.ndarray, n_atoms: int, n_types: int) -> np.ndarray:
    """1-based LAMMPS types as int64, one per atom, all in 1..n_types."""
    raw = np.asarray(types)
    if raw.shape != (n_atoms,):
        raise BlockError(
            "types", "shape", f"one type per atom, shape ({n_atoms},), not {raw.shape}"
        )
    if n_types < 1:
        raise BlockError("n_types", "value", f"a positive number of types, not {n_types}")
    as_int = raw.astype(np.int64)
    if not np.issubdtype(raw.dtype, np.integer) and not np.array_equal(as_int, raw):
        row = int(np.argmax(as_int != raw))
        raise BlockError("types", f"row {row}", f"integer LAMMPS types, not {raw[row]!r}")
    outside = (as_int < 1) | (as_int > n_types)
    if outside.any():
        row = int(np.argmax(outside))
        found = np.unique(as_int[outside])[:10].tolist()
        raise BlockError("types", f"row {row} (value {as_int[row]})",
                         f"types in 1..{n_types} (n_types={n_types}); found also {found}")  # fmt: skip
    return as_int


def fractional_coordinates(
    positions: np.ndarray, matrix: np.ndarray, origin: np.ndarray, wrap: bool = True
) -> np.ndarray:
    """Fractional coordinates f with positions = origin + f @ matrix, wrapped into [0, 1)³.

    ``wrap=False`` keeps unwrapped values (atoms outside the cell give f outside [0, 1)).
    """
    positions, matrix, origin = _check_geometry(positions, matrix, origin)
    frac = np.linalg.solve(matrix.T, (positions - origin).T).T
    if wrap:
        frac = np.mod(frac, 1.0)
        frac[frac >= 1.0] = 0.0  # mod of a tiny negative number rounds to 1.0
    return frac


def perpendicular_widths(matrix: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell, (3,): V / |b × c|, V / |c × a|, V / |a × b|.

    The largest sphere that fits the periodic cell without meeting its own image has diameter
    ``min(widths)``; a block's widths are these over r.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    a, b, c = matrix
    volume = abs(np.linalg.det(matrix))
    faces = np.array([np.cross(b, c), np.cross(c, a), np.cross(a, b)])
    return volume / np.linalg.norm(faces, axis=1)


def fcc_cutoff(matrix: np.ndarray, n_atoms: int) -> float:
    """First-shell cutoff of an FCC cell: midway between a/√2 and a, a = (4V/N)^(1/3).

    The midpoint, 0.854·a, leaves 0.15·a (≈ 0.5 Å for CoCrNi) of margin on each side for
    thermal and lattice-distortion displacements.
    """
    volume = abs(np.linalg.det(np.asarray(matrix, dtype=np.float64)))
    lattice = (4.0 * volume / n_atoms) ** (1.0 / 3.0)
    return 0.5 * (lattice / np.sqrt(2.0) + lattice)


def _is_orthogonal(matrix: np.ndarray) -> bool:
    """True when the cell edges are along x, y, z (no tilt)."""
    off_diagonal = matrix - np.diag(np.diag(matrix))
    scale = np.abs(np.diag(matrix)).max()
    return bool(np.all(np.abs(off_diagonal) <= _ORTHOGONAL_TOLERANCE * scale)) and bool(
        np.all(np.diag(matrix) > 0)
    )


def _periodic_images(
    frac: np.ndarray, matrix: np.ndarray, margins: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian points of the wrapped atoms followed by their images near the cell's faces.

    An image is made for each of the 26 neighbouring cells, of the atoms within ``margins``
    (fractional, per direction) of the face they cross. Returns the points and, per point, the
    index of the atom it is an image of (the first n points are the atoms themselves).
    """
    points, owners = [frac @ matrix], [np.arange(len(frac))]
    near_low, near_high = frac < margins, frac >= 1.0 - margins
    for shift in itertools.product((-1, 0, 1), repeat=3):
        if shift == (0, 0, 0):
            continue
        keep = np.ones(len(frac), dtype=bool)
        for axis, step in enumerate(shift):
            if step == 1:
                keep &= near_low[:, axis]
            elif step == -1:
                keep &= near_high[:, axis]
        rows = np.flatnonzero(keep)
        points.append((frac[rows] + np.asarray(shift, dtype=np.float64)) @ matrix)
        owners.append(rows)
    return np.concatenate(points), np.concatenate(owners)


def _pairs_within(
    tree: cKDTree, queries: np.ndarray, cutoff: float, owners: np.ndarray, workers: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with atom j's point (or image) closer than ``cutoff`` to query i, i ≠ j."""
    n = len(queries)
    k = min(_INITIAL_NEIGHBOURS + 1, tree.n)
    while True:
        distances, found = tree.query(queries, k=k, distance_upper_bound=cutoff, workers=workers)
        distances, found = distances.reshape(n, -1), found.reshape(n, -1)
        full = np.isfinite(distances[:, -1]).any()
        if not full or k == tree.n:
            break
        k = min(2 * k, tree.n)
    self_hit = found == np.arange(n)[:, None]  # the atom itself, at distance 0
    keep = np.isfinite(distances) & ~self_hit
    rows = np.broadcast_to(np.arange(n)[:, None], keep.shape)[keep]
    return rows.astype(np.int64), owners[found[keep]].astype(np.int64)


def _first_shell_wrapped(
    frac: np.ndarray, matrix: np.ndarray, cutoff: float, workers: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour pairs from wrapped fractional coordinates (see :func:`first_shell`)."""
    widths = perpendicular_widths(matrix)
    if cutoff <= 0 or not np.isfinite(cutoff):
        raise BlockError("cutoff", "value", f"a positive first-shell cutoff in Å, not {cutoff}")
    if np.any(widths < 2.0 * cutoff):
        axis = "abc"[int(np.argmin(widths))]
        raise BlockError("cell", f"width across {axis} = {widths.min():.4g} Å",
                         f"a cell at least twice the neighbour cutoff ({2 * cutoff:.4g} Å) wide "
                         f"in every direction, so no atom meets its own image")  # fmt: skip
    if _is_orthogonal(matrix):
        lengths = np.diag(matrix).copy()
        wrapped = frac * lengths
        wrapped = np.where(wrapped >= lengths, wrapped - lengths, wrapped)
        tree = cKDTree(wrapped, boxsize=lengths)
        owners = np.arange(len(frac))
    else:
        points, owners = _periodic_images(frac, matrix, cutoff / widths)
        wrapped = points[: len(frac)]
        tree = cKDTree(points)
    return _pairs_within(tree, wrapped, cutoff, owners, workers)


def first_shell(
    positions: np.ndarray,
    matrix: np.ndarray,
    origin: np.ndarray,
    cutoff: float | None = None,
    workers: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """First-shell neighbour pairs (i, j) of a periodic cell, both directions, sorted by i.

    Every pair of atoms closer than ``cutoff`` (Å; ``None`` → :func:`fcc_cutoff`) under the
    periodic boundaries of the cell ``origin + f @ matrix`` (rows = edge vectors). Orthogonal
    cells use scipy's periodic ``cKDTree``; triclinic ones a ``cKDTree`` over the atoms plus
    their images within the cutoff of the faces. Raises :class:`BlockError` when the cell is
    narrower than twice the cutoff (an atom would meet its own image). ``workers``: threads of
    the k-d tree query (−1: every CPU).
    """
    frac = fractional_coordinates(positions, matrix, origin)
    matrix = np.asarray(matrix, dtype=np.float64)
    cutoff = fcc_cutoff(matrix, len(frac)) if cutoff is None else float(cutoff)
    return _first_shell_wrapped(frac, matrix, cutoff, workers)


def block_indices(
    positions: np.ndarray, matrix: np.ndarray, origin: np.ndarray, blocks: int = 4
) -> np.ndarray:
    """Flat block index of every atom, ``(bx · r + by) · r + bz``, b = floor((f mod 1) · r) mod r."""
    r = _check_blocks(blocks)
    return _flat_block_index(fractional_coordinates(positions, matrix, origin), r)


def _check_blocks(blocks: int) -> int:
    """The block grid size r as a positive int."""
    if isinstance(blocks, bool) or int(blocks) != blocks or blocks < 1:
        raise BlockError("blocks", "value", f"a positive integer r (r³ blocks), not {blocks!r}")
    return int(blocks)


def _flat_block_index(frac: np.ndarray, r: int) -> np.ndarray:
    """Flat block index from wrapped fractional coordinates."""
    cell = np.floor(frac * r).astype(np.int64) % r
    return (cell[:, 0] * r + cell[:, 1]) * r + cell[:, 2]


def neighbour_counts(
    types: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], n_types: int
) -> np.ndarray:
    """(n, n_types) number of first-shell neighbours of each type (column j ↔ type j + 1)."""
    i, j = (np.asarray(p, dtype=np.int64) for p in pairs)
    n = len(types)
    keys = i * n_types + (np.asarray(types, dtype=np.int64)[j] - 1)
    return np.bincount(keys, minlength=n * n_types).reshape(n, n_types)


def warren_cowley_atoms(
    types: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    n_types: int,
    reference: Literal["cell", "block"] = "cell",
    block_index: np.ndarray | None = None,
) -> np.ndarray:
    """Per-atom first-shell WC parameters α_ij, (n, n_types): i the atom's own type, j the column.

    α_ij = (p_ij − c_j)/(δ_ij − c_j), p_ij the fraction of the atom's first shell (``pairs`` from
    :func:`first_shell`) that is of type j, c_j the concentration of type j in the whole cell
    (``reference="cell"``, default) or in the atom's block (``"block"``, needs ``block_index``,
    the atom's flat block from :func:`block_indices`). NaN where undefined: c_j = 0 with i ≠ j
    (species absent), c_i = 1 (pure reference), or an atom without neighbours.

    For i ≠ j this equals OVITO's ``WarrenCowleyParameters`` (α = 1 − p_ij/c_j); for i = j
    theirs is 1 − p_ii/c_i = −(1 − c_i)/c_i · ours.
    """
    types = _check_types(types, len(np.asarray(types)), n_types)
    if reference not in REFERENCES:
        raise BlockError("reference", "value", f"one of {REFERENCES}, not {reference!r}")
    counts = neighbour_counts(types, pairs, n_types)
    shell = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / shell
    concentration = _reference_concentration(types, n_types, reference, block_index)
    own = (types - 1)[:, None] == np.arange(n_types)[None, :]
    denominator = own - concentration
    alpha = np.full(p.shape, np.nan)
    defined = (denominator != 0) & (concentration > 0)
    with np.errstate(invalid="ignore"):
        alpha[defined] = ((p - concentration) / np.where(defined, denominator, 1.0))[defined]
    return alpha


def _reference_concentration(
    types: np.ndarray, n_types: int, reference: str, block_index: np.ndarray | None
) -> np.ndarray:
    """c_j per atom, (n, n_types) or (1, n_types): of the whole cell or of the atom's block."""
    if reference == "cell":
        return (np.bincount(types - 1, minlength=n_types) / len(types))[None, :]
    if block_index is None:
        raise BlockError("block_index", "missing",
                         "each atom's block (block_indices) when reference='block'")  # fmt: skip
    block_index = np.asarray(block_index, dtype=np.int64)
    if block_index.shape != types.shape or (block_index < 0).any():
        raise BlockError("block_index", "shape / values",
                         f"one non-negative block index per atom, shape {types.shape}")  # fmt: skip
    n_blocks = int(block_index.max()) + 1
    per_block = np.bincount(block_index * n_types + types - 1, minlength=n_blocks * n_types)
    per_block = per_block.reshape(n_blocks, n_types)
    return (per_block / per_block.sum(axis=1, keepdims=True))[block_index]


def _check_stress(stress: np.ndarray | None, n_atoms: int) -> np.ndarray | None:
    """Per-atom stress × volume (n, 6) float64, or None."""
    if stress is None:
        return None
    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape != (n_atoms, 6):
        raise BlockError("stress", "shape",
                         f"({n_atoms}, 6) stress × volume (xx yy zz xy xz yz), not {stress.shape}")  # fmt: skip
    bad = ~np.isfinite(stress).all(axis=1)
    if bad.any():
        raise BlockError("stress", f"row {int(np.argmax(bad))}", "finite per-atom stress")
    return stress


def _check_block_grid(matrix: np.ndarray, r: int, cutoff: float) -> None:
    """Every block at least one cutoff wide along each cell direction."""
    widths = perpendicular_widths(matrix) / r
    if np.any(widths < cutoff):
        axis = "abc"[int(np.argmin(widths))]
        raise BlockError("cell", f"block width across {axis} = {widths.min():.4g} Å with r={r}",
                         f"blocks at least one first-shell cutoff ({cutoff:.4g} Å) wide: "
                         f"fewer blocks or a larger cell")  # fmt: skip


def _check_shells(shell: np.ndarray, shell_size: int, max_bad_fraction: float) -> np.ndarray:
    """Histogram of first-shell sizes; BlockError when too many atoms lack ``shell_size``."""
    histogram = np.bincount(shell)
    bad = float(np.mean(shell != shell_size))
    if bad > max_bad_fraction:
        found = {k: int(v) for k, v in enumerate(histogram) if v}
        raise BlockError("atoms", "first shell",
                         f"an FCC environment ({shell_size} first neighbours) for all but "
                         f"{max_bad_fraction:.2%} of atoms; {bad:.2%} differ; atoms per shell "
                         f"size: {found}")  # fmt: skip
    return histogram


def _block_means(values: np.ndarray, keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Mean of the finite ``values`` per key (NaN for keys without any)."""
    finite = np.isfinite(values)
    sums = np.bincount(keys[finite], weights=values[finite], minlength=n_keys)
    counts = np.bincount(keys[finite], minlength=n_keys)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def block_fields(
    positions: np.ndarray,
    types: np.ndarray,
    stress: np.ndarray | None,
    matrix: np.ndarray,
    origin: np.ndarray,
    blocks: int = 4,
    n_types: int = 3,
    cutoff: float | None = None,
    max_bad_fraction: float = 0.01,
    reference: Literal["cell", "block"] = "cell",
    shell_size: int = FCC_SHELL_SIZE,
    workers: int = -1,
) -> dict[str, np.ndarray]:
    """Block-averaged fields of one periodic cell (section 4.1.1), laid out [..., bx, by, bz].

    ``workers``: threads of the neighbour search (−1: every CPU; a job gives its own count).

    Returns ``concentration`` (n_types, r, r, r) atom fractions (all types; the model takes the
    first n_types − 1), ``wc`` (n_types², r, r, r) block mean over type-i atoms of α_ij at index
    i·n_types + j (:func:`warren_cowley_atoms`), ``stress`` (6, r, r, r) GPa, xx yy zz xy xz yz,
    from per-atom stress × volume in bar·Å³ (omitted when ``stress`` is None), ``atoms``
    (r, r, r) counts, ``shell_counts`` (k,) atoms with 0, 1, … first neighbours and ``cutoff``
    (0-d, Å). Raises :class:`BlockError` for types outside 1..n_types, a cell narrower than
    2·cutoff, blocks narrower than the cutoff or without atoms, and more than
    ``max_bad_fraction`` of atoms whose first shell does not hold ``shell_size`` atoms.
    """
    positions, matrix, origin = _check_geometry(positions, matrix, origin)
    n = len(positions)
    types = _check_types(types, n, n_types)
    stress = _check_stress(stress, n)
    r = _check_blocks(blocks)
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise BlockError(
            "max_bad_fraction", "value", f"a fraction in [0, 1], not {max_bad_fraction}"
        )
    if reference not in REFERENCES:
        raise BlockError("reference", "value", f"one of {REFERENCES}, not {reference!r}")
    cutoff = fcc_cutoff(matrix, n) if cutoff is None else float(cutoff)
    _check_block_grid(matrix, r, cutoff)

    frac = fractional_coordinates(positions, matrix, origin)
    block = _flat_block_index(frac, r)
    n_blocks = r**3
    atoms = np.bincount(block, minlength=n_blocks)
    if (atoms == 0).any():
        empty = np.unravel_index(int(np.argmin(atoms)), (r, r, r))
        raise BlockError("cell", f"block {tuple(int(e) for e in empty)} of {r}×{r}×{r}",
                         "at least one atom in every block: fewer blocks or a larger cell")  # fmt: skip

    pairs = _first_shell_wrapped(frac, matrix, cutoff, workers)
    histogram = _check_shells(np.bincount(pairs[0], minlength=n), shell_size, max_bad_fraction)
    alpha = warren_cowley_atoms(types, pairs, n_types, reference, block)

    species = np.bincount(block * n_types + types - 1, minlength=n_blocks * n_types)
    concentration = species.reshape(n_blocks, n_types) / atoms[:, None]
    type_block = (types - 1) * n_blocks + block
    wc = np.stack(
        [_block_means(alpha[:, j], type_block, n_types * n_blocks) for j in range(n_types)]
    )
    wc = wc.reshape(n_types, n_types, n_blocks).transpose(1, 0, 2)  # [j, i, b] → [i, j, b]

    fields = {
        "concentration": concentration.T.reshape(n_types, r, r, r),
        "wc": wc.reshape(n_types * n_types, r, r, r),
        "atoms": atoms.reshape(r, r, r),
        "shell_counts": histogram,
        "cutoff": np.asarray(cutoff),
    }
    if stress is not None:
        block_volume = abs(np.linalg.det(matrix)) / n_blocks
        sums = np.stack(
            [np.bincount(block, weights=stress[:, k], minlength=n_blocks) for k in range(6)]
        )
        fields["stress"] = (sums / block_volume * BAR_TO_GPA).reshape(6, r, r, r)
    return fields
