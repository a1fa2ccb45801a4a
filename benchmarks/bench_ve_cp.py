"""Benchmark: Taylor crystal-plasticity responses per second for 32³ VEs (paper section 2.3).

Builds ``--ves`` VEs of 32³ voxels with about ``--grains`` grains each: random orientations and
lognormal grain volumes (σ = 0.5, the spread of the generator's grain sizes; a Taylor model
only sees orientations and volume fractions, so the voxels of a grain need not be contiguous).
Each VE is deformed with the paper's load case (tension along x to 0.01 at 1e-3 /s in 20
increments, lateral stresses free). Reported, best of ``--repeats`` (after one warm-up):

* ``taylor_responses_of_ves`` on the whole batch (voxels → grains → responses, all VEs
  vectorised together), in one process and with every CPU this process may use;
* as the reference in the same run, the same computation one VE at a time (a loop of
  single-VE calls, one process) on ``--reference-ves`` of the VEs, and the ratio;
* for copper (fcc, 12 slip systems) and magnesium (hcp, 18), and the time the default study
  (416 Mg VEs) would take at the measured rate.

Run: ``.venv/bin/python benchmarks/bench_ve_cp.py [--ves 64] [--grains 300] [--repeats 1]``.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform

import numpy as np
from timing import best_of

from latentmech.ve import cp

CELLS = 32
STUDY_VES = 416  # default study: 320 train + 48 val + 48 test Mg VEs (config.yaml)


def synthetic_ves(n: int, grains: int, seed: int = 0) -> np.ndarray:
    """(n, 32, 32, 32, 3) Bunge angles: lognormal grain volumes, random orientations."""
    import damask

    rng = np.random.default_rng(seed)
    voxels = CELLS**3
    out = np.empty((n, voxels, 3))
    for i in range(n):  # building the inputs, not the benchmarked code
        volume = rng.lognormal(0.0, 0.5, grains)
        counts = np.maximum(1, np.floor(volume / volume.sum() * voxels)).astype(int)
        counts[np.argmax(counts)] += voxels - counts.sum()
        eulers = damask.Rotation.from_random(grains, rng_seed=int(rng.integers(1 << 30)))
        angles = np.clip(eulers.as_Euler_angles(), 0.0, [2 * np.pi, np.pi, 2 * np.pi])
        out[i] = rng.permutation(np.repeat(angles, counts, axis=0))
    return out.reshape(n, CELLS, CELLS, CELLS, 3)


def one_at_a_time(ves: np.ndarray, params: cp.PhenoPowerLaw) -> np.ndarray:
    """Reference: every VE on its own (the same model, no batching)."""
    single = cp.TaylorOptions(workers=1)
    return np.concatenate(
        [cp.taylor_responses_of_ves(v[None], params, options=single) for v in ves]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ves", type=int, default=64, help="VEs in the batch")
    parser.add_argument("--grains", type=int, default=300, help="grains per VE")
    parser.add_argument("--reference-ves", type=int, default=8, help="VEs run one at a time")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # damask logs at INFO on import

    ves = synthetic_ves(args.ves, args.grains)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    grains, _, _ = cp.ve_grains_batch(ves)
    print(
        f"Taylor responses, {args.ves} VEs of {CELLS}³ voxels, {len(grains) / args.ves:.0f} "
        f"grains per VE, load case {cp.LoadCase()}; best of {args.repeats}; numpy "
        f"{np.__version__}, {cpus} CPUs, {platform.processor() or platform.machine()}\n"
    )
    print("| material | implementation | time (s) | VEs/s | ratio | default study (416 VEs) |")
    print("|---|---|---:|---:|---:|---:|")
    for params in (cp.copper(), cp.magnesium()):
        runs = {}
        for workers in sorted({1, cpus or 1}):
            options = cp.TaylorOptions(workers=workers)
            t, batch = best_of(lambda o=options, p=params: cp.taylor_responses_of_ves(ves, p, options=o),
                               args.repeats)  # fmt: skip
            runs[f"batched, {workers} process{'es' if workers > 1 else ''}"] = t / args.ves
        subset = ves[: args.reference_ves]
        t_ref, ref = best_of(lambda p=params, v=subset: one_at_a_time(v, p), args.repeats)
        assert np.allclose(ref, batch[: args.reference_ves], atol=0.05)  # type: ignore[index]
        runs["one VE at a time, 1 process (reference)"] = t_ref / len(subset)
        reference = runs["one VE at a time, 1 process (reference)"]
        for name, per_ve in runs.items():
            print(f"| {params.name} ({params.n_systems} systems) | {name} | "
                  f"{per_ve * args.ves:.2f} | {1 / per_ve:.1f} | {reference / per_ve:.2f}× | "
                  f"{per_ve * STUDY_VES:.0f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
