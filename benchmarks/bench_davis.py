"""Benchmark: reading a DaVis 2D-vector export and computing its strain maps, against DefDAP.

For each real DaVis file, in the same run, best of several repeats (``time.perf_counter``):

* ours: :func:`latentmech.dic.io.read_davis` (full validation, (0, 0) → NaN) followed by
  :func:`latentmech.dic.kinematics.strain_fields` (F, Green strain, rotation, max shear);
* reference: ``defdap.hrdic.Map(path)``, which loads the file and computes ``f``, ``e`` and
  ``max_shear`` in its constructor (its progress messages are swallowed, as ours print none).

Files come from ``$LATENTMECH_REAL_DATA`` (default ``/work/shared/real_data``):
``defdap/testDataDIC.txt`` (DaVis 8.4.0) and ``mechmicroman_hrdic/p3-1.TXT`` (DaVis 7.2.2).

Run: ``.venv/bin/python benchmarks/bench_davis.py [--repeats 15]``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from latentmech.dic.io import read_davis
from latentmech.dic.kinematics import strain_fields

FILES = ("defdap/testDataDIC.txt", "mechmicroman_hrdic/p3-1.TXT")


def ours(path: Path) -> dict[str, np.ndarray]:
    """Our pipeline: validated read, then every strain map."""
    vectors = read_davis(path)
    return strain_fields(vectors.u, vectors.v, vectors.spacing_px)


def reference(path: Path) -> object:
    """DefDAP: ``hrdic.Map`` loads and computes f, e and max_shear on construction."""
    from defdap import hrdic

    return hrdic.Map(path)


def best_time(func: Callable[[Path], object], path: Path, repeats: int) -> float:
    """Best wall time (s) of ``repeats`` calls after one warm-up, with stdout silenced."""
    times = []
    with contextlib.redirect_stdout(io.StringIO()):
        func(path)
        for _ in range(repeats):
            start = time.perf_counter()
            func(path)
            times.append(time.perf_counter() - start)
    return min(times)


def read_time(path: Path, repeats: int) -> float:
    """Best time of :func:`read_davis` alone, to show where our time goes."""
    return best_time(read_davis, path, repeats)


def table(root: Path, repeats: int) -> str:
    """Markdown table of times (ms) and the defdap/ours ratio for every file."""
    lines = [
        f"DaVis read + strain maps, best of {repeats} (Python {platform.python_version()}, "
        f"numpy {np.__version__}, pandas {pd.__version__}, defdap {version('defdap')}, "
        f"{os.cpu_count()} CPUs)",
        "",
        "| file | vectors | defdap `hrdic.Map` (ms) | ours: read_davis + strain_fields (ms) "
        "| of which read_davis (ms) | defdap / ours |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for relpath in FILES:
        path = root / relpath
        vectors = read_davis(path)
        t_ref = best_time(reference, path, repeats)
        t_ours = best_time(ours, path, repeats)
        t_read = read_time(path, repeats)
        lines.append(
            f"| {relpath} (DaVis {vectors.version}) | {vectors.u.size} | {t_ref * 1e3:.1f} "
            f"| {t_ours * 1e3:.1f} | {t_read * 1e3:.1f} | {t_ref / t_ours:.1f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    root = Path(os.environ.get("LATENTMECH_REAL_DATA", "/work/shared/real_data"))
    print(table(root, args.repeats))


if __name__ == "__main__":
    main()
