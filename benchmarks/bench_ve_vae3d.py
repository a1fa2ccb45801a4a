"""3D ResNet VAE on CPU: training step time and peak memory, demo vs paper size, 32³ and 64³.

Run: ``.venv/bin/python benchmarks/bench_ve_vae3d.py [--steps 3] [--threads 0] [--skip-paper-64]``.
Prints a markdown table for benchmarks/RESULTS.md.

A step is what :class:`latentmech.core.train.Trainer` does per batch: forward, the paper's loss
(Eq. 4 + KL, :func:`latentmech.ve.vae3d.vae3d_loss`), backward and an Adam update. Each
configuration runs in its own subprocess so its peak resident memory (``ru_maxrss``) is its own;
the table gives it and its increase over the process after imports (model, gradients, Adam state
and activations). Times are the best of ``--steps`` steps after one warm-up step (the paper size
at 64³ does one timed step: its parameters alone are 2.5 GB). The reference is the demo
architecture at the same VE size and batch, measured in the same run: the ratio column is
paper / demo.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import replace

import torch

from latentmech.ve.vae3d import (
    DEMO_CONFIG,
    PAPER_CONFIG,
    VAE3D,
    VAE3DConfig,
    count_parameters,
    vae3d_loss,
)

#: name → (architecture, batch size)
CASES: dict[str, tuple[VAE3DConfig, int]] = {
    "demo 32³, batch 16": (DEMO_CONFIG, 16),
    "demo 32³": (DEMO_CONFIG, 2),
    "paper 32³": (replace(PAPER_CONFIG, cells=32), 2),
    "demo 64³": (replace(DEMO_CONFIG, cells=64), 2),
    "paper 64³": (PAPER_CONFIG, 2),
}
#: which row each paper row is compared with
REFERENCE = {"paper 32³": "demo 32³", "paper 64³": "demo 64³"}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, steps: int, threads: int) -> dict[str, float]:
    """Step time and memory of one case, in this process (called in a fresh subprocess)."""
    if threads > 0:
        torch.set_num_threads(threads)
    config, batch = CASES[name]
    torch.manual_seed(0)
    baseline = peak_rss_mb()
    model = VAE3D(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=1e-5)
    x = torch.rand(batch, config.in_channels, config.cells, config.cells, config.cells)
    times = []
    for _ in range(1 + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = vae3d_loss(model, (x,))
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return {
        "parameters": count_parameters(model),
        "step_s": min(times[1:]),
        "first_step_s": times[0],
        "peak_mb": peak_rss_mb(),
        "delta_mb": peak_rss_mb() - baseline,
        "batch": batch,
        "threads": torch.get_num_threads(),
    }


def run_case(name: str, steps: int, threads: int, timeout: float) -> dict[str, float] | None:
    command = [sys.executable, __file__, "--one", name, "--steps", str(steps),
               "--threads", str(threads)]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        print(f"{name}: failed ({type(error).__name__}): {getattr(error, 'stderr', '')}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    parser.add_argument("--skip-paper-64", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.threads)))
        return
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads available\n")  # fmt: skip
    print("| configuration | parameters | batch | step (s) | VEs/s | peak RSS (MB) "
          "| Δ RSS (MB) | step vs demo | Δ RSS vs demo |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    results: dict[str, dict[str, float]] = {}
    for name in CASES:
        if name == "paper 64³" and args.skip_paper_64:
            continue
        steps = 1 if name == "paper 64³" else args.steps
        result = run_case(name, steps, args.threads, args.timeout)
        if result is None:
            continue
        results[name] = result
        reference = results.get(REFERENCE.get(name, ""))
        ratios = ("", "")
        if reference:
            ratios = (f"{result['step_s'] / reference['step_s']:.0f}×",
                      f"{result['delta_mb'] / reference['delta_mb']:.0f}×")  # fmt: skip
        print(f"| {name} | {result['parameters'] / 1e6:.2f} M | {result['batch']} "
              f"| {result['step_s']:.2f} | {result['batch'] / result['step_s']:.2f} "
              f"| {result['peak_mb']:.0f} | {result['delta_mb']:.0f} | {ratios[0]} | {ratios[1]} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
