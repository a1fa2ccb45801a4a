"""Benchmark: HR-DIC preprocessing throughput (Mpx/s) with the paper's settings.

Prepares a synthetic 1048×1048 (1.1 Mpx) four-modality map with 1 % of the pixels in NaN holes
(as failed correlations leave them) and reports, best of several repeats:

* the throughput of :func:`latentmech.dic.prep.preprocess` (OpenCV blur, normalised convolution),
* the share of its time spent in each step (from ``PrepResult.step_seconds``),
* as a reference in the same run, a naïve implementation: NaN → 0 then
  ``scipy.ndimage.gaussian_filter`` without normalisation (the holes bias their neighbours
  toward 0), same threshold/scale/angle/mask steps; the ratio of the two throughputs.

Run: ``.venv/bin/python benchmarks/bench_prep.py [--size 1048] [--repeats 7]``. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Mapping

import cv2
import numpy as np
import scipy
from scipy.ndimage import gaussian_filter
from timing import best_of

from latentmech.dic.prep import PAPER_SETTINGS, STEPS, ModalitySettings, preprocess


def synthetic_maps(size: int, hole_fraction: float = 0.01, seed: int = 0) -> dict[str, np.ndarray]:
    """Four random modalities with shared NaN holes (small square blobs)."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    maps = {
        "exx": rng.normal(0, 5e-3, shape),
        "intensity": np.abs(rng.normal(0, 10, shape)),
        "direction": rng.uniform(-90, 90, shape),
        "rotation": rng.normal(0, 1e-2, shape),
    }
    holes = np.zeros(shape, dtype=bool)
    n_blobs = int(hole_fraction * size * size / 25)
    ys, xs = rng.integers(0, size - 5, (2, n_blobs))
    for y, x in zip(ys, xs, strict=True):
        holes[y : y + 5, x : x + 5] = True
    for arr in maps.values():
        arr[holes] = np.nan
    return maps


def naive_preprocess(
    fields: Mapping[str, np.ndarray], settings: Mapping[str, ModalitySettings]
) -> dict[str, np.ndarray]:
    """Reference: NaN → 0, scipy gaussian_filter on float64, no normalisation, no valid mask."""
    out: dict[str, np.ndarray] = {}
    for name, s in settings.items():
        x = np.nan_to_num(np.asarray(fields[name], dtype=np.float64))
        if s.angle_unit is not None:
            rad = np.deg2rad(x) if s.angle_unit == "deg" else x
            chans = np.stack([np.cos(rad), np.sin(rad)])
        else:
            chans = x[None]
        if s.blur_sigma_px > 0:
            chans = np.stack([gaussian_filter(c, s.blur_sigma_px, truncate=4.0) for c in chans])
        if s.threshold is not None:
            chans = np.where(np.abs(chans) < s.threshold, 0.0, chans)
        out[name] = (chans * s.scale).astype(np.float32)
    for name, s in settings.items():
        if s.mask_by is not None:
            out[name][:, ~out[s.mask_by].any(axis=0)] = 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1048, help="map side in pixels")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    maps = synthetic_maps(args.size)
    mpx = args.size * args.size / 1e6
    t_ours, res = best_of(lambda: preprocess(maps, PAPER_SETTINGS), args.repeats)
    t_naive, _ = best_of(lambda: naive_preprocess(maps, PAPER_SETTINGS), args.repeats)
    steps = res.step_seconds  # type: ignore[attr-defined]
    total = sum(steps.values())

    print(
        f"Preprocessing, {args.size}×{args.size} ({mpx:.2f} Mpx) × 4 modalities, "
        f"{(~res.valid).mean():.1%} NaN pixels, best of {args.repeats}; "  # type: ignore[attr-defined]
        f"numpy {np.__version__}, scipy {scipy.__version__}, opencv {cv2.__version__} "
        f"({cv2.getNumThreads()} threads), {platform.processor() or platform.machine()}\n"
    )
    print("| implementation | time (ms) | throughput (Mpx/s) | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| latentmech `preprocess` | {t_ours * 1e3:.1f} | {mpx / t_ours:.1f} | "
          f"{t_naive / t_ours:.2f}× |")  # fmt: skip
    print(f"| naïve (NaN→0, scipy, no normalisation) | {t_naive * 1e3:.1f} | "
          f"{mpx / t_naive:.1f} | 1.00× |")  # fmt: skip
    print("\n| step (fastest `preprocess` run) | time (ms) | share |")
    print("|---|---:|---:|")
    for step in STEPS:
        print(f"| {step} | {steps[step] * 1e3:.1f} | {steps[step] / total:.0%} |")


if __name__ == "__main__":
    main()
