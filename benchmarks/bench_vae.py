"""VAE speed on CPU: batched encoding vs one window at a time, FLOP efficiency, training rate.

Run: ``.venv/bin/python benchmarks/bench_vae.py``. Prints markdown tables for
benchmarks/RESULTS.md. The reference for efficiency is the machine's own float32 matmul rate,
measured in the same run; the encoder's FLOPs per window come from torch's FLOP counter.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from latentmech.dic.vae import VAE, VAEConfig, vae_loss

SIZES = {
    "demo (32 px, channels 8-16-32, k 5)": VAEConfig(
        window_px=32, channels=(8, 16, 32), kernel_size=5
    ),
    "demo+ (32 px, channels 16-32-64, k 7)": VAEConfig(
        window_px=32, channels=(16, 32, 64), kernel_size=7
    ),
    "paper-like (256 px, channels 16-32-64-128-256, k 7)": VAEConfig(
        window_px=256, channels=(16, 32, 64, 128, 256), kernel_size=7
    ),
}


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = best_of(repeats, lambda: a @ b)
    return 2 * n**3 / seconds / 1e9


def encoder_flops(model: VAE, window_px: int) -> int:
    x = torch.randn(1, 1, window_px, window_px)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encoder(x)
    return counter.get_total_flops()


def encoding(model: VAE, window_px: int, n: int, batch: int, repeats: int) -> tuple[float, float]:
    """Windows per second, batched and one at a time."""
    x = torch.randn(n, 1, window_px, window_px)
    model.eval()

    def batched() -> None:
        with torch.no_grad():
            for start in range(0, n, batch):
                model.encoder(x[start : start + batch])

    def single() -> None:
        with torch.no_grad():
            for i in range(n):
                model.encoder(x[i : i + 1])

    return n / best_of(repeats, batched), n / best_of(repeats, single)


def training(model: VAE, window_px: int, batch: int, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, window_px, window_px)
    model.train()

    def run() -> None:
        for _ in range(steps):
            optimizer.zero_grad()
            loss, _ = vae_loss(model, x)
            loss.backward()
            optimizer.step()

    return batch * steps / best_of(2, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rate = matmul_gflops()
    print(f"float32 matmul (2048²), {torch.get_num_threads()} threads: {rate:.1f} GFLOP/s\n")
    print(
        "| VAE | encoder GFLOP/window | batched enc. (win/s) | one-by-one (win/s) | speed-up "
        "| batched share of matmul rate | training (win/s) | peak RSS (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, config in SIZES.items():
        model = VAE(config)
        flops = encoder_flops(model, config.window_px)
        n = 512 if config.window_px <= 64 else 32
        batched, single = encoding(
            model, config.window_px, n, 64 if config.window_px <= 64 else 8, args.repeats
        )
        train_batch = 64 if config.window_px <= 64 else 4
        train_rate = training(model, config.window_px, train_batch, steps=3)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        share = batched * flops / 1e9 / rate
        print(
            f"| {name} | {flops / 1e9:.4f} | {batched:.0f} | {single:.0f} | {batched / single:.1f}× "
            f"| {share:.0%} | {train_rate:.1f} | {peak_mb:.0f} |"
        )


if __name__ == "__main__":
    main()
