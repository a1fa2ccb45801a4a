"""The HR-DIC VAE: shapes, activations, loss terms against hand values, augmentations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from latentmech.core.nn import ResidualConv2d, glorot_init
from latentmech.core.train import Trainer, TrainSettings
from latentmech.dic.vae import (
    VAE,
    VAEConfig,
    kl_divergence,
    load_vae,
    mask_events,
    reflect,
    scaled_l2,
    vae_loss,
)


def test_shapes_latent_size_and_tanh_output() -> None:
    config = VAEConfig(in_channels=2, window_px=32, channels=(8, 16), latent_dim=128, output="tanh")
    model = VAE(config).eval()
    x = torch.randn(5, 2, 32, 32)
    reconstruction, mu, log_var = model(x)
    assert reconstruction.shape == x.shape
    assert mu.shape == log_var.shape == (5, 128)
    assert float(reconstruction.detach().abs().max()) <= 1.0
    assert torch.equal(model(x)[0], reconstruction)  # eval mode decodes μ: deterministic
    assert VAEConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig(window_px=36, channels=(8, 16, 32))


def test_no_normalisation_layers_and_a_shortcut_on_every_same_resolution_convolution() -> None:
    model = VAE(VAEConfig(channels=(8, 16), blocks_per_stage=2))
    kinds = {type(m).__name__ for m in model.modules()}
    assert not any("Norm" in k for k in kinds)
    residual = [m for m in model.modules() if isinstance(m, ResidualConv2d)]
    assert len(residual) == 2 * 2 * 2  # encoder and decoder, 2 stages, 2 blocks each
    block = ResidualConv2d(3, 5)
    torch.nn.init.zeros_(block.conv.weight)
    torch.nn.init.zeros_(block.conv.bias)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(block(x), x)  # the shortcut carries the input through


def test_glorot_initialisation_bounds() -> None:
    layer = torch.nn.Conv2d(4, 6, 7)
    glorot_init(layer)
    fan_in, fan_out = 4 * 49, 6 * 49
    bound = math.sqrt(6 / (fan_in + fan_out))
    weights = layer.weight.detach()
    assert float(weights.abs().max()) <= bound
    assert float(weights.abs().max()) > 0.9 * bound
    assert float(layer.bias.detach().abs().max()) == 0.0


def test_scaled_l2_and_kl_against_hand_values() -> None:
    target = torch.zeros(2, 1, 2, 2)
    target[0, 0, 0, 0] = 4.0  # window maximum 4
    target[1, 0, 0, 0] = -0.5  # window maximum |−0.5|
    reconstruction = target + 1.0  # squared error 1 everywhere
    torch.testing.assert_close(scaled_l2(reconstruction, target), torch.tensor([1 / 4, 1 / 0.5]))
    torch.testing.assert_close(
        scaled_l2(reconstruction, target, max_power=2), torch.tensor([1 / 16, 4.0])
    )
    empty = torch.zeros(1, 1, 2, 2)
    assert float(scaled_l2(empty + 1, empty, max_floor=1e-3)) == pytest.approx(1e3)
    mu = torch.tensor([[0.0, 1.0]])
    log_var = torch.tensor([[0.0, math.log(4.0)]])
    # 0.5 Σ (σ² + μ² − 1 − ln σ²) = 0.5 (4 + 1 − 1 − ln 4)
    assert float(kl_divergence(mu, log_var)) == pytest.approx(0.5 * (4 - math.log(4.0)))


def test_reflections_mirror_windows_and_flip_odd_channels() -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.arange(16.0).view(1, 1, 4, 4)
    windows = torch.cat([base, base, base], dim=1).repeat(400, 1, 1, 1)
    out = reflect(windows, ["intensity", "rotation", "direction_sin"], generator)
    flipped_x = torch.all(out[:, 0] == base[0, 0].flip(-1), dim=(1, 2)) | torch.all(
        out[:, 0] == base[0, 0].flip(-1).flip(-2), dim=(1, 2)
    )
    flipped_y = torch.all(out[:, 0] == base[0, 0].flip(-2), dim=(1, 2)) | torch.all(
        out[:, 0] == base[0, 0].flip(-1).flip(-2), dim=(1, 2)
    )
    assert 0.4 < float(flipped_x.float().mean()) < 0.6
    assert 0.4 < float(flipped_y.float().mean()) < 0.6
    one_mirror = flipped_x ^ flipped_y
    torch.testing.assert_close(out[one_mirror, 1], -out[one_mirror, 0])
    torch.testing.assert_close(out[~one_mirror, 2], out[~one_mirror, 0])
    assert torch.equal(reflect(windows, ["a", "b", "c"], p=0.0), windows)


def test_event_masking_hides_events_under_background_and_keeps_one() -> None:
    window = torch.full((1, 1, 6, 6), 0.2)
    events = torch.zeros(1, 6, 6, dtype=torch.int64)
    for event, row in ((1, 0), (2, 2), (3, 4)):
        events[0, row] = event
        window[0, 0, row] = 5.0 + event
    valid = torch.ones(1, 6, 6, dtype=torch.bool)
    out = mask_events(window, events, valid, torch.Generator().manual_seed(1), p=1.0)
    kept = [e for e in (1, 2, 3) if bool(torch.all(out[0, 0][events[0] == e] == 5.0 + e))]
    assert len(kept) == 1  # all would be hidden at p = 1, but one must remain
    hidden = (events[0] > 0) & (events[0] != kept[0])
    torch.testing.assert_close(
        out[0, 0][hidden], torch.full((int(hidden.sum()),), 0.2)
    )  # background: constant 0.2
    assert torch.equal(mask_events(window, events, valid, p=0.0), window)
    single = events.clone()
    single[single > 1] = 0
    assert torch.equal(mask_events(window, single, valid, p=1.0), window)


def test_the_vae_learns_through_the_training_loop(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(2, 14, (96,), generator=generator)
    windows = torch.zeros(96, 1, 16, 16)
    windows[torch.arange(96), 0, :, positions] = 1.0  # one vertical band per window
    data = TensorDataset(windows)
    model = VAE(VAEConfig(window_px=16, channels=(16, 32), kernel_size=5, latent_dim=8))

    def loss(model, batch):
        return vae_loss(model, batch[0], beta=1e-3)

    settings = TrainSettings(epochs=20, batch_size=16, lr=3e-3, seed=0)
    result = Trainer(model, loss, settings, tmp_path).fit(data, data)
    first, last = result.history[0]["val_scaled_l2"], result.history[-1]["val_scaled_l2"]
    assert last < 0.2 * first  # from a blur of the mean band to the band itself


def _windows_store(path: Path) -> Path:
    """A tiny windows.zarr with the layout the windows stage writes."""
    import numpy as np
    import xarray as xr

    from latentmech.core.store import write_zarr

    rng = np.random.default_rng(0)
    n = 60
    intensity = np.zeros((n, 16, 16), np.float32)
    events = np.zeros((n, 16, 16), np.int32)
    for i in range(n):
        for event, column in enumerate(rng.choice(np.arange(2, 14), 2, replace=False), start=1):
            intensity[i, :, column] = rng.uniform(0.5, 2.0)
            events[i, :, column] = event
    split = np.array(["train"] * 36 + ["val"] * 12 + ["test"] * 12, dtype=object)
    ds = xr.Dataset(
        {"intensity": (("window", "wy", "wx"), intensity), "events": (("window", "wy", "wx"), events),
         "valid": (("window", "wy", "wx"), np.ones((n, 16, 16), bool))},
        coords={"split": ("window", split), "material": ("window", np.array(["A", "B"] * 30, dtype=object)),
                "step": ("window", np.tile([1, 2, 3], 20))},
    )  # fmt: skip
    return write_zarr(ds, path)


def test_train_vae_stage_writes_best_weights_sidecar_history_and_scores(tmp_path: Path) -> None:

    import pandas as pd

    from latentmech.core.train import load_checkpoint
    from latentmech.dic import stages

    store = _windows_store(tmp_path / "windows.zarr")
    settings = {
        "modality": "intensity", "channels": ["intensity"], "augment": "reflect_mask", "output": "leaky_relu",
        "model": {"channels": [8, 16], "kernel_size": 5, "blocks_per_stage": 1, "latent_dim": 16},
        "loss": {"beta": 1e-3, "max_power": 1.0},
        "train": {"epochs": 3, "batch_size": 12, "lr": 3e-3, "seed": 0},
        "workdir": str(tmp_path / "checkpoints"), "threads": 1,
    }  # fmt: skip
    out = {
        name: tmp_path / name for name in ("model.pt", "model.json", "history.csv", "scores.csv")
    }
    stages.train_vae(
        store, out["model.pt"], out["model.json"], out["history.csv"], out["scores.csv"], settings
    )
    model, meta = load_vae(out["model.pt"], out["model.json"])
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model"][name])
    history = pd.read_csv(out["history.csv"])
    assert len(history) == 3 == meta["epochs_run"]
    assert meta["best_val_loss"] == pytest.approx(history["val_loss"].min())
    scores = pd.read_csv(out["scores.csv"])
    assert len(scores) == 12 and set(scores["material"]) == {"A", "B"}
    assert scores["ssim"].between(-1, 1).all() and scores["psnr"].notna().all()
