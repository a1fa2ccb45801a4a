"""Benchmark: reading LAMMPS text dumps, latentmech ``read_dump`` against ASE and OVITO.

Two files, read whole (every snapshot) by each reader in the same run, best of several repeats:

* the real 10 032-atom dump with per-atom stress
  (``$LATENTMECH_REAL_DATA/lammps_generated_here/dump.annealed300_stress.lammpstrj``,
  columns ``id type x y z c_peatom c_s[1..6]``), when ``LATENTMECH_REAL_DATA`` is set;
* a generated file, by default 256 000 atoms × 2 snapshots with the same columns, shuffled rows
  (as LAMMPS writes without ``dump_modify sort``) and ``%g`` numbers as LAMMPS prints them,
  written by :func:`write_dump` into a temporary directory.

References: ``ase.io.read(path, format="lammps-dump-text", index=":")`` and OVITO
``import_file(path)`` + ``pipeline.compute(frame)`` for every frame (a fresh pipeline per
repeat, so OVITO's frame cache does not help it). Every run checks that the three readers agree
on positions (sorted by id) before timing is reported. Prints a markdown table of atoms/s.

Run: ``.venv/bin/python benchmarks/bench_alloy_dump.py [--atoms 256000] [--snapshots 2]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
from timing import best_of

from latentmech.alloy.dump import Box, Snapshot, read_dump, write_dump


def generated_dump(directory: Path, n_atoms: int, n_snapshots: int) -> Path:
    """A CoCrNi-like dump: random positions and stresses, rows shuffled, ``%g`` numbers."""
    rng = np.random.default_rng(20240501)
    edge = (n_atoms / 4) ** (1 / 3) * 3.56
    box = Box(origin=np.zeros(3), matrix=np.eye(3) * edge, periodic=(True, True, True))
    frames = []
    for k in range(n_snapshots):
        order = rng.permutation(n_atoms)
        frames.append(
            Snapshot(
                timestep=100 * k,
                box=box,
                ids=np.arange(1, n_atoms + 1)[order],
                types=rng.integers(1, 4, n_atoms),
                positions=rng.uniform(0.0, edge, (n_atoms, 3)),
                stress=rng.normal(0.0, 1e6, (n_atoms, 6)),
                columns={"c_peatom": rng.normal(-4.4, 0.3, n_atoms)},
            )
        )
    path = directory / f"generated_{n_atoms}x{n_snapshots}.lammpstrj"
    write_dump(path, frames, columns=["c_peatom"], float_format="%g")
    return path


def read_ours(path: Path) -> list[np.ndarray]:
    """Positions per snapshot (sorted by id) with latentmech."""
    return [snapshot.positions for snapshot in read_dump(path)]


def read_ase(path: Path) -> list[np.ndarray]:
    """Positions per snapshot with ASE (it sorts by id by default)."""
    import ase.io

    frames = ase.io.read(path, format="lammps-dump-text", index=":")
    return [atoms.get_positions() for atoms in frames]


def read_ovito(path: Path) -> list[np.ndarray]:
    """Positions per snapshot with OVITO (fresh pipeline, every frame computed), sorted by id."""
    from ovito.io import import_file

    pipeline = import_file(str(path))
    positions = []
    for frame in range(pipeline.source.num_frames):
        data = pipeline.compute(frame)
        order = np.argsort(np.asarray(data.particles.identifiers))
        positions.append(np.asarray(data.particles.positions)[order])
    return positions


def bench_file(path: Path, repeats: int) -> dict[str, float]:
    """Seconds per reader (best of ``repeats``), after checking the readers agree."""
    times, results = {}, {}
    for name, reader in (("latentmech", read_ours), ("ase", read_ase), ("ovito", read_ovito)):
        times[name], results[name] = best_of(lambda reader=reader: reader(path), repeats)
    for name in ("ase", "ovito"):
        for ours, theirs in zip(results["latentmech"], results[name], strict=True):
            # ASE shifts nothing but may wrap nothing either; both keep the file's coordinates
            assert np.allclose(ours, theirs, rtol=0, atol=1e-9), f"{name} disagrees on {path}"
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=256_000)
    parser.add_argument("--snapshots", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import ase
    import ovito

    files: list[tuple[str, Path, int]] = []
    real = os.environ.get("LATENTMECH_REAL_DATA")
    if real:
        path = Path(real) / "lammps_generated_here" / "dump.annealed300_stress.lammpstrj"
        files.append(("real stress dump (1 snapshot)", path, 10_032))
    with tempfile.TemporaryDirectory() as tmp:
        generated = generated_dump(Path(tmp), args.atoms, args.snapshots)
        files.append(
            (f"generated ({args.snapshots} snapshots)", generated, args.atoms * args.snapshots)
        )
        rows = [(label, atoms, bench_file(path, args.repeats)) for label, path, atoms in files]

    print(
        f"\nReading LAMMPS text dumps, best of {args.repeats}; ase {ase.__version__}, "
        f"ovito {ovito.version_string}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}\n"
    )
    print("| file | atoms read | latentmech (Matoms/s) | ase (Matoms/s) | ovito (Matoms/s) | "
          "ours / ase | ours / ovito |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, atoms, times in rows:
        rate = {name: atoms / seconds / 1e6 for name, seconds in times.items()}
        print(f"| {label} | {atoms} | {rate['latentmech']:.2f} | {rate['ase']:.2f} | "
              f"{rate['ovito']:.2f} | {times['ase'] / times['latentmech']:.1f}× | "
              f"{times['ovito'] / times['latentmech']:.1f}× |")  # fmt: skip


if __name__ == "__main__":
    main()
