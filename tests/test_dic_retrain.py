"""Extending the VAE database (paper Fig. 13): kernel activity, blended partial retraining and
the transfer-learning comparison."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from latentmech.core.train import Trainer, TrainingInterrupted, TrainSettings, load_checkpoint
from latentmech.dic.retrain import (
    NEW_KERNEL_LR_FACTOR,
    BlendedConv,
    blended_layers,
    kernel_activity,
    least_active,
    merge_blended,
    partial_retraining,
    transfer_learning,
)
from latentmech.dic.vae import VAE, VAEConfig, vae_loss

CONFIG = VAEConfig(window_px=16, channels=(4, 8), kernel_size=3, latent_dim=8)


def _vae(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(CONFIG)


def _windows(n: int = 24, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=generator)


def _loss(model: nn.Module, batch):
    return vae_loss(model, batch[0])


def _fit(model: nn.Module, groups, workdir: Path, epochs: int = 2, loss=_loss) -> None:
    """Three batches per epoch on 24 windows."""
    data = TensorDataset(_windows())
    settings = TrainSettings(epochs=epochs, batch_size=8, lr=1e-3, seed=0, device="cpu")
    Trainer(model, loss, settings, workdir, param_groups=groups).fit(data, data)


# -- kernel activity ---------------------------------------------------------------------------


def test_kernel_activity_matches_explicit_forwards_and_finds_a_dead_kernel() -> None:
    model = _vae()
    with torch.no_grad():  # hand-set: kernel 2 of the first convolution outputs exactly 0
        model.encoder.features[0].weight[2] = 0
        model.encoder.features[0].bias[2] = 0
    windows = _windows(20)
    activity = kernel_activity(model, windows, batch_size=7)  # 3 uneven batches

    names = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)}
    assert set(activity) == names and "decoder.features.1.0" in names  # a transposed conv
    assert all(activity[n].shape == (model.get_submodule(n).out_channels,) for n in names)
    with torch.no_grad():
        first = model.encoder.features[0](windows)
        mu, _ = model.encoder(windows)
        h = model.decoder.project(mu).view(-1, *model.decoder.shape)
        last = model.decoder.features[-2](model.decoder.features[:-2](h))
    torch.testing.assert_close(activity["encoder.features.0"], first.abs().mean(dim=(0, 2, 3)))
    torch.testing.assert_close(activity["decoder.features.4"], last.abs().mean(dim=(0, 2, 3)))
    assert activity["encoder.features.0"][2] == 0
    assert least_active(activity, 0.25)["encoder.features.0"].tolist() == [2]
    assert model.training  # mode restored


def test_least_active_picks_the_lowest_floor_of_the_fraction_at_least_one() -> None:
    activity = {
        "a": torch.tensor([0.5, 0.1, 0.3, 0.05, 0.9, 0.2, 0.7, 0.8, 0.6, 0.4]),
        "b": torch.tensor([3.0]),
        "paper": torch.arange(32, 0, -1, dtype=torch.float32),  # lowest: the last kernels
    }
    picked = least_active(activity, 0.3)
    assert picked["a"].tolist() == [1, 3, 5]
    assert picked["b"].tolist() == [0]  # at least one
    assert least_active(activity, 0.1)["paper"].tolist() == [29, 30, 31]  # 3 out of 32
    assert least_active(activity, 0.29)["paper"].numel() == 9  # ⌊9.28⌋
    assert all(v.numel() == 0 for v in least_active(activity, 0.0).values())
    with pytest.raises(ValueError, match="fraction"):
        least_active(activity, 1.5)


# -- blended layers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(3, 6, 3, stride=2, padding=1),
        nn.ConvTranspose2d(3, 6, 3, stride=2, padding=1, output_padding=1),
    ],
    ids=["conv", "transposed"],
)
def test_blended_conv_goes_from_old_to_new_and_merges_exactly(layer: nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    channels = torch.tensor([1, 4])
    blended = BlendedConv(layer, channels, ramp_steps=4).eval()
    assert blended.new.out_channels == 2 and blended.new.stride == layer.stride
    with torch.no_grad():
        old, new = layer(x), blended.new(x)
        torch.testing.assert_close(blended(x), old, rtol=0, atol=0)  # γ = 0
        assert float(blended.gamma) == 0  # eval calls do not advance γ

        blended.train()
        gammas = []
        for _ in range(6):
            blended(x)
            gammas.append(float(blended.gamma))
        assert gammas == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]  # linear, then held at 1
        assert int(blended.step) == 6
        assert {"gamma", "step", "channels"} <= set(blended.state_dict())  # checkpointed
        blended.eval()
        out = blended(x)
    expected = old.clone()
    expected[:, channels] = new
    torch.testing.assert_close(out, expected, rtol=0, atol=0)  # γ = 1: the new kernels
    plain = blended.merged()
    assert type(plain) is type(layer)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), out, rtol=0, atol=0)
    keep = [c for c in range(6) if c not in channels.tolist()]
    weights = plain.weight if isinstance(layer, nn.Conv2d) else plain.weight.transpose(0, 1)
    old_weights = layer.weight if isinstance(layer, nn.Conv2d) else layer.weight.transpose(0, 1)
    torch.testing.assert_close(weights[keep], old_weights[keep], rtol=0, atol=0)


def test_blended_conv_at_the_midpoint_mixes_old_and_new() -> None:
    torch.manual_seed(0)
    layer, x = nn.Conv2d(2, 4, 3, padding=1), torch.randn(1, 2, 5, 5)
    blended = BlendedConv(layer, torch.tensor([0]), ramp_steps=2)
    out = blended(x)  # training mode: γ = 0.5
    expected = layer(x)
    expected[:, 0] = 0.5 * expected[:, 0] + 0.5 * blended.new(x)[:, 0]
    torch.testing.assert_close(out, expected)


# -- partial retraining ------------------------------------------------------------------------


def test_partial_retraining_groups_new_kernels_at_5x_and_every_parameter_once() -> None:
    model = _vae()
    wrapped, groups = partial_retraining(model, _windows(), fraction=0.25, ramp_steps=5)
    layers = blended_layers(wrapped)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert sorted(layers) == sorted(convs)
    assert layers["encoder.features.0"].channels.numel() == 1  # ⌊0.25 · 4⌋
    assert layers["encoder.features.5.0"].channels.numel() == 2  # ⌊0.25 · 8⌋
    assert not blended_layers(model)  # the original is untouched

    assert [g["lr_factor"] for g in groups] == [1.0, NEW_KERNEL_LR_FACTOR] == [1.0, 5.0]
    new = {id(p) for layer in layers.values() for p in layer.new.parameters()}
    assert {id(p) for p in groups[1]["params"]} == new
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in wrapped.parameters())  # each exactly once

    wrapped.eval()
    with torch.no_grad():  # γ = 0: the wrapped model starts as the original
        torch.testing.assert_close(wrapped(_windows())[0], model.eval()(_windows())[0])


def test_partial_retraining_fit_reaches_gamma_1_and_merges_into_a_plain_vae(
    tmp_path: Path,
) -> None:
    wrapped, groups = partial_retraining(_vae(), _windows(), ramp_steps=5)
    with pytest.raises(ValueError, match=r"encoder\.features\.0.*not fully blended"):
        merge_blended(wrapped)
    _fit(wrapped, groups, tmp_path)  # 6 steps ≥ ramp_steps
    assert all(float(layer.gamma) == 1.0 for layer in blended_layers(wrapped).values())

    merged = merge_blended(wrapped)
    assert type(merged) is VAE and not blended_layers(merged)
    plain = VAE(CONFIG)
    plain.load_state_dict(merged.state_dict(), strict=True)
    windows = _windows(10, seed=7)
    with torch.no_grad():
        expected = wrapped.eval()(windows)
        for got, want in zip(plain.eval()(windows), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)  # one conv vs split


def test_partial_retraining_resumes_exactly_with_its_gamma(tmp_path: Path) -> None:
    base = _vae()

    def run(workdir: Path, signal_at: int | None = None) -> None:
        torch.manual_seed(5)
        wrapped, groups = partial_retraining(base, _windows(), ramp_steps=4)
        calls = {"n": 0}

        def loss(model: nn.Module, batch):
            calls["n"] += model.training
            if calls["n"] == signal_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return _loss(model, batch)

        _fit(wrapped, groups, workdir, loss=loss)

    run(tmp_path / "reference")
    with pytest.raises(TrainingInterrupted):
        run(tmp_path / "run", signal_at=2)
    interrupted = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert float(interrupted["encoder.features.0.gamma"]) == 0.5  # 2 of 4 ramp steps
    run(tmp_path / "run")
    expected = load_checkpoint(tmp_path / "reference" / "last.pt")["model"]
    for name, tensor in load_checkpoint(tmp_path / "run" / "last.pt")["model"].items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


# -- transfer learning ---------------------------------------------------------------------------


def test_transfer_learning_reinitialises_the_encoder_end_and_freezes_the_rest(
    tmp_path: Path,
) -> None:
    model = _vae()
    with torch.no_grad():  # a "trained" model: biases are no longer Glorot's zeros
        for p in model.parameters():
            p.add_(0.01)
    tl, groups = transfer_learning(model, last_layers=1)
    last_conv = "encoder.features.5.0"  # the last stride-2 convolution
    retrained = ("encoder.mu.", "encoder.log_var.", f"{last_conv}.")
    for name, p in tl.named_parameters():
        assert p.requires_grad == name.startswith(retrained), name
        original = model.get_parameter(name)
        assert torch.equal(p, original) != name.startswith(retrained), name  # re-initialised
    assert [g["lr_factor"] for g in groups] == [1.0]
    assert {id(p) for p in groups[0]["params"]} == {
        id(p) for p in tl.parameters() if p.requires_grad
    }

    before = {n: p.detach().clone() for n, p in tl.named_parameters()}
    _fit(tl, groups, tmp_path, epochs=1)
    for name, p in tl.named_parameters():
        assert torch.equal(p, before[name]) != name.startswith(retrained), name
    assert transfer_learning(model, last_layers=2)[0].encoder.features[4].conv.weight.requires_grad
    with pytest.raises(ValueError, match="last_layers"):
        transfer_learning(model, last_layers=99)
