"""Benchmark: fundamental-zone reduction of one 64³ volume element (262 144 orientations).

For cubic and hexagonal symmetry, reduces the same random orientations (seeded, uniform on SO(3))
with three implementations in the same run and reports the best of several repeats:

* latentmech ``reduce_to_fundamental_zone`` (Euler angles in, Euler angles out);
* DAMASK, the paper's tool: ``Orientation(rotation=Rotation.from_Euler_angles(e), family=f)
  .reduced.as_Euler_angles()``;
* orix: ``Orientation.from_euler(e, symmetry=O | D6).reduce().to_euler()`` (orix stores the
  inverse of DAMASK's quaternion, so its Euler round trip describes the same orientations).

Also the reduction alone, quaternions in and out (``reduce_quaternions`` vs ``.reduced`` vs
``.reduce()``). Every run checks the results: ours must equal DAMASK's Euler angles exactly
(and its quaternions), orix's must be the same rotations (quaternions up to sign, 1e-9).

Run: ``.venv/bin/python benchmarks/bench_ve_orientation.py [--n 262144] [--repeats 5]``.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import logging
import platform

import numpy as np
from timing import best_of

from latentmech.ve.orientation import (
    conjugate_quaternions,
    eulers_to_quaternions,
    reduce_quaternions,
    reduce_to_fundamental_zone,
)


def same_rotations(q1: np.ndarray, q2: np.ndarray, atol: float = 1e-9) -> float:
    """Fraction of rows that are the same rotation (q or −q)."""
    close = np.all(np.abs(q1 - q2) <= atol, axis=-1) | np.all(np.abs(q1 + q2) <= atol, axis=-1)
    return float(close.mean())


def run_lattice(family: str, eulers: np.ndarray, repeats: int) -> list[tuple[str, float, float]]:
    """Times (Euler path, quaternion path) of ours, DAMASK and orix; checks the results."""
    import damask
    from orix.quaternion import Orientation as OrixOrientation
    from orix.quaternion.symmetry import D6, O

    symmetry = {"cubic": O, "hexagonal": D6}[family]
    quats = eulers_to_quaternions(eulers)

    def damask_eulers() -> np.ndarray:
        rotation = damask.Rotation.from_Euler_angles(eulers)
        return damask.Orientation(rotation=rotation, family=family).reduced.as_Euler_angles()

    def orix_eulers() -> np.ndarray:
        return OrixOrientation.from_euler(eulers, symmetry=symmetry).reduce().to_euler()

    damask_orientation = damask.Orientation(rotation=quats, family=family)
    orix_orientation = OrixOrientation(conjugate_quaternions(quats), symmetry=symmetry)

    t_ours, ours = best_of(lambda: reduce_to_fundamental_zone(eulers, family), repeats)
    t_damask, ref = best_of(damask_eulers, repeats)
    t_orix, orix_out = best_of(orix_eulers, repeats)
    tq_ours, ours_q = best_of(lambda: reduce_quaternions(quats, family), repeats)
    tq_damask, ref_q = best_of(lambda: damask_orientation.reduced.quaternion, repeats)
    tq_orix, orix_q = best_of(lambda: orix_orientation.reduce().data, repeats)

    assert np.array_equal(ours, ref), f"{family}: Euler angles differ from DAMASK"
    assert np.allclose(ours_q, ref_q, rtol=0, atol=1e-12), f"{family}: quaternions differ"
    orix_same = same_rotations(conjugate_quaternions(orix_q), ours_q)
    orix_euler_same = same_rotations(eulers_to_quaternions(orix_out), eulers_to_quaternions(ours))
    assert orix_same == 1.0 and orix_euler_same == 1.0, f"{family}: orix disagrees"
    print(
        f"{family}: ours == DAMASK (Euler angles bit for bit, quaternions to 1e-12) for all "
        f"{len(eulers)}; orix same rotations: {orix_same:.4%} (quaternions), "
        f"{orix_euler_same:.4%} (Euler round trip)"
    )
    return [
        ("latentmech", t_ours, tq_ours),
        (f"damask {damask.__version__}", t_damask, tq_damask),
        (f"orix {_orix_version()}", t_orix, tq_orix),
    ]


def _orix_version() -> str:
    import orix

    return orix.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64**3, help="orientations (64³ = one VE)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import damask

    logging.getLogger().setLevel(logging.WARNING)  # import damask set the root logger to INFO
    eulers = damask.Rotation.from_random(args.n, rng_seed=20240501).as_Euler_angles()
    rows = {family: run_lattice(family, eulers, args.repeats) for family in ("cubic", "hexagonal")}

    print(
        f"\nFZ reduction of {args.n} random orientations, best of {args.repeats}; "
        f"numpy {np.__version__}, {platform.processor() or platform.machine()}\n"
    )
    print("| lattice | implementation | Euler → Euler (s) | ours faster by | "
          "quaternion → quaternion (s) | ours faster by |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for family, results in rows.items():
        _, t_ours, tq_ours = results[0]
        for name, t_euler, t_quat in results:
            print(f"| {family} | {name} | {t_euler:.3f} | {t_euler / t_ours:.1f}× | "
                  f"{t_quat:.3f} | {t_quat / tq_ours:.1f}× |")  # fmt: skip


if __name__ == "__main__":
    main()
