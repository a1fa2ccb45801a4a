"""Benchmark: reading LAMMPS text dumps, latentmech ``read_dump`` against ASE and OVITO.

Two files, read whole (every snapshot) by each reader in the same run:

* the real 10 032-atom dump with per-atom stress
  (``$LATENTMECH_REAL_DATA/lammps_generated_here/dump.annealed300_stress.lammpstrj``,
  columns ``id type x y z c_peatom c_s[1..6]``), when ``LATENTMECH_REAL_DATA`` is set;
* a generated file, by default 256 000 atoms × 2 snapshots with the same columns, shuffled rows
  (as LAMMPS writes without ``dump_modify sort``) and ``%g`` numbers as LAMMPS prints them,
  written by :func:`write_dump` into a temporary directory.

Readers: ours on one thread (the default ``threads=1``) and on every core (``threads=None``,
chunks of a block on several threads); ``ase.io.read(path, format="lammps-dump-text",
index=":")``; OVITO ``import_file(path)`` + ``pipeline.compute(frame)`` for every frame (a fresh
pipeline per call, so OVITO's frame cache does not help it). After one warm-up call each (which
also checks that all readers agree on the positions, sorted by id), the readers are timed in
interleaved rounds (the order rotating each round; in a round each reader is called for at
least ``--window`` seconds), so a change in the machine's load hits all of them alike; the table
gives the best and the median call, the spread (max/min − 1) and the ratios. The first call of
ours in a fresh interpreter (import, loading the cached numba kernels, first parse) is timed
separately, in a subprocess. The load average is printed before and after.

Run: ``.venv/bin/python benchmarks/bench_alloy_dump.py [--atoms 256000] [--snapshots 2]
[--rounds 7] [--window 0.2]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from latentmech.alloy.dump import Box, Snapshot, read_dump, write_dump

Reader = Callable[[Path], list[np.ndarray]]


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


def ours(threads: int | None) -> Reader:
    """Positions per snapshot (sorted by id) with latentmech on ``threads`` threads."""
    return lambda path: [snapshot.positions for snapshot in read_dump(path, threads=threads)]


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


READERS: dict[str, Reader] = {
    "ours (default, 1 thread)": ours(1),
    "ours, threads=None (all cores)": ours(None),
    "ase": read_ase,
    "ovito": read_ovito,
}


def interleaved_times(path: Path, rounds: int, window: float) -> dict[str, np.ndarray]:
    """Seconds per call of every reader: ``rounds`` interleaved rounds, in each of which every
    reader is called for at least ``window`` seconds (at least once), after a warm-up call each
    that also checks all readers agree on the positions."""
    reference = READERS["ours (default, 1 thread)"](path)
    for name, reader in READERS.items():
        for mine, theirs in zip(reference, reader(path), strict=True):
            assert np.allclose(mine, theirs, rtol=0, atol=1e-9), f"{name} disagrees on {path}"
    names = list(READERS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            opened = time.perf_counter()
            while True:
                start = time.perf_counter()
                READERS[name](path)
                times[name].append(time.perf_counter() - start)
                if time.perf_counter() - opened >= window:
                    break
    return {name: np.array(seconds) for name, seconds in times.items()}


def first_call_seconds(path: Path) -> float:
    """Import + first ``read_dump`` in a fresh interpreter (numba kernels loaded from cache)."""
    code = (
        "import time; start = time.perf_counter(); "
        "from latentmech.alloy.dump import read_dump; read_dump(__import__('sys').argv[1]); "
        "print(time.perf_counter() - start)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True
    )
    return float(out.stdout.split()[-1])


def table(label: str, atoms: int, times: dict[str, np.ndarray], first: float) -> list[str]:
    """Markdown rows for one file: atoms/s (best, median), spread, ratios against ase / ovito."""
    rows = []
    for name, seconds in times.items():
        best, median = atoms / seconds.min() / 1e6, atoms / np.median(seconds) / 1e6
        spread = seconds.max() / seconds.min() - 1.0
        ratio = {
            ref: f"{times[ref].min() / seconds.min():.1f}× / "
            f"{np.median(times[ref]) / np.median(seconds):.1f}×"
            for ref in ("ase", "ovito")
        }
        rows.append(
            f"| {label} | {name} | {best:.2f} | {median:.2f} | {100 * spread:.0f} % | "
            f"{ratio['ase']} | {ratio['ovito']} |"
        )
    rows.append(
        f"| {label} | ours, first call in a fresh process: {1e3 * first:.0f} ms (import, numba "
        "kernels from cache, parse) | | | | | |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=256_000)
    parser.add_argument("--snapshots", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--window", type=float, default=0.2, help="seconds per reader per round")
    args = parser.parse_args()

    import ase
    import ovito

    load_before = os.getloadavg()
    files: list[tuple[str, Path, int]] = []
    real = os.environ.get("LATENTMECH_REAL_DATA")
    if real:
        path = Path(real) / "lammps_generated_here" / "dump.annealed300_stress.lammpstrj"
        files.append(("real stress dump, 10 032 atoms × 1", path, 10_032))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        generated = generated_dump(Path(tmp), args.atoms, args.snapshots)
        label = f"generated, {args.atoms} atoms × {args.snapshots}"
        files.append((label, generated, args.atoms * args.snapshots))
        for label, path, atoms in files:
            first = first_call_seconds(path)
            rows += table(label, atoms, interleaved_times(path, args.rounds, args.window), first)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"\nReading LAMMPS text dumps: {args.rounds} interleaved rounds of ≥ {args.window} s per "
        f"reader after a warm-up; ase "
        f"{ase.__version__}, ovito {ovito.version_string}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}, {cores} cores; load average (1, 5, "
        f"15 min) before {tuple(round(x, 2) for x in load_before)}, after "
        f"{tuple(round(x, 2) for x in os.getloadavg())}\n"
    )
    print("| file | reader | best (Matoms/s) | median (Matoms/s) | spread (max/min − 1) | "
          "ase time / this (best / median) | ovito time / this (best / median) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
