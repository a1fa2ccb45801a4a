"""Benchmark: self-checked sampling (Algorithm 1) and inverse design (Algorithm 2) on CPU.

For the demo AlloyVAE (``cvae.DEMO_CONFIG``, the default study's, ~3.2 M parameters) and the
paper's (SI Table 1, ~2.8 × 10⁸ parameters, float32), in the same run:

* Algorithm 1 for one input with the paper's N = 500 draws (all of them: ``stop_early=False``,
  so both implementations do the same work whatever the acceptance), batched
  (``self_checked_predictions``: every draw of a chunk through decoder and encoder at once)
  against the literal per-input, per-draw Python loop (``self_checked_loop``, the reference;
  on the paper model over fewer draws, reported per draw). For the demo also 16 inputs.
* Algorithm 2: 2000 candidates in one batch, a few gradient iterations timed (forward through
  smoother, decoder, encoder, backward to c and z): candidate-iterations per second.

The models are untrained (Xavier weights, eval mode): the cost does not depend on the weights.
Run: ``.venv/bin/python benchmarks/bench_alloy_sampling.py [--threads 1] [--skip-paper]``.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from timing import best_of

from latentmech.alloy.cvae import DEMO_CONFIG, PAPER_CONFIG, AlloyCVAE, CVAEConfig, MinMax
from latentmech.alloy.design import DesignSettings, inverse_design
from latentmech.alloy.sampling import self_checked_loop, self_checked_predictions


def conditions(config: CVAEConfig, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    r = config.blocks
    return {name: torch.rand((n, ch, r, r, r), generator=g) for name, ch in config.conditions}


def once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sampling_rows(name: str, model: AlloyCVAE, inputs: int, n_max: int, loop_draws: int,
                  repeats: int) -> list[str]:  # fmt: skip
    """Draws per second, batched against the per-draw loop, on the same inputs and draws."""
    cond = conditions(model.config, inputs)
    batched, result = best_of(
        lambda: self_checked_predictions(model, cond, n_max=n_max, k=0.04, stop_early=False),
        repeats,
    )
    assert int(result.attempts.sum()) == inputs * n_max
    loop = once(lambda: self_checked_loop(model, cond, n_max=loop_draws, k=0.04,
                                          stop_early=False))  # fmt: skip
    ours = inputs * n_max / batched
    reference = inputs * loop_draws / loop
    return [f"| {name} | Algorithm 1, {inputs} input(s) × {n_max} draws | {batched:.3f} s | "
            f"{ours:,.0f} | {reference:,.0f} ({inputs}×{loop_draws} draws, {loop:.2f} s) | "
            f"{ours / reference:.1f}× |"]  # fmt: skip


def design_rows(name: str, model: AlloyCVAE, candidates: int, iterations: int) -> list[str]:
    """Candidate-iterations per second of Algorithm 2 (one batch of ``candidates``)."""
    r = model.config.blocks
    scalers = (MinMax((0.25, 0.28, 0.22), (0.41, 0.39, 0.45)), MinMax((-0.3,) * 9, (0.2,) * 9),
               MinMax((-1.5,) * 6, (1.5,) * 6))  # fmt: skip
    prior = (np.full((2, r, r, r), 0.5), np.full((2, r, r, r), 0.1))
    settings = DesignSettings(iterations=iterations, candidates=candidates, history_every=1000)
    inverse_design(model, *scalers, *prior, DesignSettings(iterations=1, candidates=8))  # warm-up
    seconds = once(lambda: inverse_design(model, *scalers, *prior, settings))
    rate = candidates * iterations / seconds
    return [f"| {name} | Algorithm 2, {candidates} candidates × {iterations} iterations | "
            f"{seconds:.2f} s | {rate:,.0f} cand·it/s | – | – |"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--paper-loop-draws", type=int, default=50)
    parser.add_argument("--paper-iterations", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}"
    )
    print()
    print("| model | task | ours (wall) | ours per s | per-input loop per s | speed-up |")
    print("|---|---|---|---|---|---|")
    demo = AlloyCVAE(DEMO_CONFIG).eval()
    rows = sampling_rows("demo (3.2 M)", demo, 1, 500, 500, args.repeats)
    rows += sampling_rows("demo (3.2 M)", demo, 16, 500, 100, args.repeats)
    rows += design_rows("demo (3.2 M)", demo, 2000, 5)
    for row in rows:
        print(row, flush=True)
    if not args.skip_paper:
        paper = AlloyCVAE(PAPER_CONFIG).eval()
        for row in sampling_rows("paper (2.8e8)", paper, 1, 500, args.paper_loop_draws, 1):
            print(row, flush=True)
        for row in design_rows("paper (2.8e8)", paper, 2000, args.paper_iterations):
            print(row, flush=True)


if __name__ == "__main__":
    main()
