"""Benchmark: block fields of a 256 000-atom CoCrNi cell, latentmech against an OVITO pipeline.

A 40³-unit-cell FCC cell (a = 3.5564 Å, 256 000 atoms), random Ni/Co/Cr types, Gaussian
displacements (0.05 Å) and random per-atom stress × volume. Both sides compute the same
quantities on an r × r × r grid (r = 4): concentrations of the three types, the nine block-mean
first-shell Warren–Cowley parameters and the six block stresses (GPa).

* latentmech: ``block_fields`` (periodic ``cKDTree`` first shell, bincount reductions).
* OVITO 3.17: the ``WarrenCowleyParameters`` modifier (12 nearest neighbours, the per-atom
  values) followed by ``SpatialBinningModifier`` (3D, r³ bins): type indicators (mean), α_ij
  over type-i atoms (selection, mean) and ``c_s[k]`` (sum / bin volume), one scalar each.

Timed twice: from arrays in memory (ours vs ``Pipeline(StaticSource)``) and from the dump file
(``read_dump`` + ``block_fields`` vs ``import_file`` + the pipeline). Each run checks that
both give the same fields (OVITO's α_ii converted: ours = −c_i/(1 − c_i) · theirs).

Run: ``.venv/bin/python benchmarks/bench_alloy_blocks.py [--cells 40] [--repeats 3]``.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
from timing import best_of

from latentmech.alloy.blocks import block_fields, first_shell

ELEMENTS = ("Ni", "Co", "Cr")
LATTICE = 3.5564
WC = "Warren-Cowley parameter (shell=1)"
FCC_BASIS = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])


def random_alloy(cells: int, seed: int = 20240601) -> dict[str, np.ndarray]:
    """Arrays of a random FCC CoCrNi cell: positions, types, stress, matrix, origin."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    positions = (grid + FCC_BASIS).reshape(-1, 3) * LATTICE
    positions += rng.normal(0.0, 0.05, positions.shape)
    n = len(positions)
    return {
        "positions": positions,
        "types": rng.permutation(np.arange(n) % 3) + 1,
        "stress": rng.normal(0.0, 1e6, (n, 6)),
        "matrix": np.eye(3) * cells * LATTICE,
        "origin": np.zeros(3),
    }


def ours(arrays: dict[str, np.ndarray], r: int) -> dict[str, np.ndarray]:
    """latentmech's block fields."""
    return block_fields(arrays["positions"], arrays["types"], arrays["stress"], arrays["matrix"],
                        arrays["origin"], blocks=r)  # fmt: skip


def ovito_data(arrays: dict[str, np.ndarray]):
    """An OVITO DataCollection holding the cell, positions, named types and c_s[1..6]."""
    from ovito.data import DataCollection, Particles, ParticleType, SimulationCell

    data = DataCollection()
    cell = SimulationCell(pbc=(True, True, True))
    cell[...] = np.column_stack([arrays["matrix"].T, arrays["origin"]])
    data.objects.append(cell)
    particles = Particles(count=len(arrays["positions"]))
    data.objects.append(particles)
    particles.create_property("Position", data=arrays["positions"])
    types = particles.create_property("Particle Type", data=arrays["types"])
    for t, name in enumerate(ELEMENTS, start=1):
        types.types.append(ParticleType(id=t, name=name))
    for k in range(6):
        particles.create_property(f"c_s[{k + 1}]", data=arrays["stress"][:, k])
    return data


def add_ovito_modifiers(pipeline, r: int, names: tuple[str, ...]) -> None:
    """WarrenCowleyParameters, then one SpatialBinningModifier per scalar field."""
    from ovito.modifiers import (
        ComputePropertyModifier,
        ExpressionSelectionModifier,
        SpatialBinningModifier,
    )
    from WarrenCowleyParameters import WarrenCowleyParameters

    binning = SpatialBinningModifier

    def bin_property(prop: str, operation, selected: bool = False) -> None:
        pipeline.modifiers.append(binning(direction=binning.Direction.XYZ, bin_count=(r, r, r),
                                          property=prop, reduction_operation=operation,
                                          only_selected=selected))  # fmt: skip

    pipeline.modifiers.append(WarrenCowleyParameters(nneigh=[0, 12]))
    for t in (1, 2, 3):
        pipeline.modifiers.append(ComputePropertyModifier(output_property=f"is{t}",
                                                          expressions=[f"ParticleType=={t}"]))  # fmt: skip
        bin_property(f"is{t}", binning.Operation.Mean)
    for i in (1, 2, 3):
        pipeline.modifiers.append(ExpressionSelectionModifier(expression=f"ParticleType=={i}"))
        for j in (1, 2, 3):
            bin_property(f"{WC}.{names[i - 1]}-{names[j - 1]}", binning.Operation.Mean, True)
    for k in range(1, 7):
        bin_property(f"c_s[{k}]", binning.Operation.SumVol)


def ovito_fields(data, r: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The pipeline output in latentmech's layout and conventions."""
    grids = {}
    for grid in data.grids.values():
        for name in grid.keys():  # noqa: SIM118 (an OVITO container, not a dict)
            grids[name] = np.array(grid[name]).reshape(r, r, r).transpose(2, 1, 0)  # x fastest
    types = np.array(data.particles.particle_type)
    c = np.bincount(types, minlength=4)[1:] / len(types)
    wc = np.stack([grids[f"{WC}.{a}-{b}"] for a in names for b in names])
    for i in range(3):
        wc[4 * i] *= -c[i] / (1 - c[i])
    return {
        "concentration": np.stack([grids[f"is{t}"] for t in (1, 2, 3)]),
        "wc": wc,
        "stress": np.stack([grids[f"c_s[{k}]"] for k in range(1, 7)]) * 1e-4,
    }


def ovito_from_arrays(data, r: int) -> dict[str, np.ndarray]:
    """A fresh pipeline (no cache) over the in-memory data."""
    from ovito.pipeline import Pipeline, StaticSource

    pipeline = Pipeline(source=StaticSource(data=data))
    add_ovito_modifiers(pipeline, r, ELEMENTS)
    return ovito_fields(pipeline.compute(), r, ELEMENTS)


def ovito_from_file(path: Path, r: int) -> dict[str, np.ndarray]:
    """import_file + the pipeline (types unnamed in a dump: 'Type 1' …)."""
    from ovito.io import import_file

    names = ("Type 1", "Type 2", "Type 3")
    pipeline = import_file(str(path))
    add_ovito_modifiers(pipeline, r, names)
    return ovito_fields(pipeline.compute(), r, names)


def ours_from_file(path: Path, r: int) -> dict[str, np.ndarray]:
    """read_dump + block_fields."""
    from latentmech.alloy.dump import read_dump

    snap = read_dump(path, snapshot=0, require_stress=True)[0]
    return block_fields(snap.positions, snap.types, snap.stress, snap.box.matrix, snap.box.origin,
                        blocks=r)  # fmt: skip


def write_alloy_dump(arrays: dict[str, np.ndarray], path: Path) -> Path:
    """The cell as a dump with ``id type x y z c_s[1..6]`` (latentmech's write_dump)."""
    from latentmech.alloy.dump import Box, Snapshot, write_dump

    n = len(arrays["positions"])
    box = Box(origin=arrays["origin"], matrix=arrays["matrix"], periodic=(True, True, True))
    snap = Snapshot(timestep=0, box=box, ids=np.arange(1, n + 1), types=arrays["types"],
                    positions=arrays["positions"], stress=arrays["stress"], columns={})  # fmt: skip
    return write_dump(path, snap)


def check_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> float:
    """Largest difference between the two sets of fields; fails when they disagree."""
    worst = 0.0
    for key in ("concentration", "wc", "stress"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-10, err_msg=f"{what}: {key}")
        worst = max(worst, float(np.max(np.abs(a[key] - b[key]))))
    return worst


def neighbour_times(arrays: dict[str, np.ndarray], data, repeats: int) -> tuple[float, float]:
    """First shell alone: our first_shell against OVITO's NearestNeighborFinder(12).find_all()."""
    from ovito.data import NearestNeighborFinder

    t_ours, (i, _) = best_of(
        lambda: first_shell(arrays["positions"], arrays["matrix"], arrays["origin"]), repeats
    )
    t_ovito, (found, _) = best_of(lambda: NearestNeighborFinder(12, data).find_all(), repeats)
    assert len(i) == found.size, "first shells differ in size"
    return t_ours, t_ovito


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cells", type=int, default=40, help="unit cells per edge (40 → 256 000 atoms)"
    )
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ovito

    arrays = random_alloy(args.cells)
    n, r = len(arrays["positions"]), args.blocks
    data = ovito_data(arrays)
    rows = []
    t_ours, fields = best_of(lambda: ours(arrays, r), args.repeats)
    t_ovito, reference = best_of(lambda: ovito_from_arrays(data, r), args.repeats)
    diff = check_same(fields, reference, "arrays")
    rows.append(("block fields from arrays", t_ours, t_ovito))
    rows.append(
        (
            "first shell only (first_shell / NearestNeighborFinder)",
            *neighbour_times(arrays, data, args.repeats),
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = write_alloy_dump(arrays, Path(tmp) / "cocrni.dump")
        size = path.stat().st_size / 1e6
        tf_ours, file_fields = best_of(lambda: ours_from_file(path, r), args.repeats)
        tf_ovito, file_reference = best_of(lambda: ovito_from_file(path, r), args.repeats)
    diff = max(diff, check_same(file_fields, file_reference, "file"))
    rows.append((f"dump file ({size:.0f} MB) → block fields", tf_ours, tf_ovito))

    print(f"\n{n} atoms, r = {r} ({r**3} blocks), best of {args.repeats}; OVITO {ovito.version_string}, "
          f"numpy {np.__version__}, {platform.processor() or platform.machine()}; largest difference "
          f"ours − OVITO over all fields: {diff:.1e}\n")  # fmt: skip
    print("| task | latentmech (s) | OVITO (s) | ours faster by | latentmech atoms/s |")
    print("|---|---:|---:|---:|---:|")
    for task, mine, theirs in rows:
        print(f"| {task} | {mine:.3f} | {theirs:.3f} | {theirs / mine:.1f}× | {n / mine:.3g} |")


if __name__ == "__main__":
    main()
