"""3D ResNet VAE (paper 001, section 2.2): architecture, Eqs. 1–4, training through the loop."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812 (the usual torch alias)
from torch.utils.data import TensorDataset

from latentmech.core.errors import InputError
from latentmech.core.train import Trainer, TrainSettings
from latentmech.ve.vae3d import (
    DEPTHS,
    VAE3D,
    ResidualBlock3d,
    VAE3DConfig,
    bce_loss,
    count_parameters,
    fingerprints,
    kl_divergence,
    layer_blocks,
    reconstruct,
    spectral_loss,
    vae3d_loss,
)

SMALL = {"channels": (4, 8, 8, 16), "hidden": 32, "latent_dim": 8}


def small_config(cells: int = 16, depth: str = "resnet12", **more) -> VAE3DConfig:
    return VAE3DConfig(cells=cells, depth=depth, **{**SMALL, **more})


def grain_volumes(
    n: int, cells: int, n_grains: int, seed: int = 0, values: tuple[float, float] = (0.05, 0.95)
) -> torch.Tensor:
    """Piecewise-constant VEs (n, 3, D, D, D): nearest of random seeds, one value per grain."""
    rng = np.random.default_rng(seed)
    axis = np.arange(cells)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 1, 3)
    seeds = rng.uniform(0, cells, (n, 1, n_grains, 3))
    ids = np.argmin(((grid[None] - seeds) ** 2).sum(-1), axis=-1)  # (n, D³)
    values = rng.uniform(*values, (n, n_grains, 3))
    volumes = np.take_along_axis(values, ids[..., None], axis=1)  # (n, D³, 3)
    shape = (n, cells, cells, cells, 3)
    return torch.from_numpy(np.moveaxis(volumes.reshape(shape), -1, 1).astype(np.float32))


@pytest.mark.parametrize("depth", sorted(DEPTHS))
@pytest.mark.parametrize("cells", [16, 32])
def test_shapes_and_output_range(depth: str, cells: int) -> None:
    torch.manual_seed(0)
    model = VAE3D(small_config(cells, depth))
    x = torch.rand(2, 3, cells, cells, cells)
    recon, mu, logvar = model(x)
    assert recon.shape == x.shape
    assert mu.shape == logvar.shape == (2, 8)
    assert model.decode(torch.randn(3, 8) * 10).shape == (3, 3, cells, cells, cells)
    recon = recon.detach()
    assert float(recon.min()) > 0.0 and float(recon.max()) < 1.0


def test_blocks_per_layer_follow_table_3() -> None:
    for depth, blocks in {"resnet12": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2],
                          "resnet34": [3, 4, 6, 3]}.items():  # fmt: skip
        model = VAE3D(small_config(16, depth))
        assert layer_blocks(model) == blocks
        encoder_blocks = sum(isinstance(m, ResidualBlock3d) for m in model.encoder.modules())
        decoder_blocks = sum(isinstance(m, ResidualBlock3d) for m in model.decoder.modules())
        assert encoder_blocks == decoder_blocks == sum(blocks)
        # one stride-2 convolution per layer in the encoder, one transposed one per layer back
        strided = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv3d)
                   and m.stride == (2, 2, 2)]  # fmt: skip
        ups = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
        assert len(strided) == len(ups) == 4
        assert sum(isinstance(m, torch.nn.BatchNorm3d) for m in model.encoder.modules()) == (
            1 + 4 + 2 * sum(blocks)
        )
    plain = VAE3D(small_config(16, "resnet34", decoder_blocks=False))
    assert not any(isinstance(m, ResidualBlock3d) for m in plain.decoder.modules())


def test_hidden_layer_and_heads_have_the_configured_sizes() -> None:
    model = VAE3D(small_config(32, hidden=40, latent_dim=6))
    first = model.encoder.hidden[1]
    assert (first.in_features, first.out_features) == (16 * 2**3, 40)
    assert model.encoder.mu.in_features == model.encoder.logvar.in_features == 40
    assert model.encoder.mu.out_features == 6
    # parameters: the helper counts what torch holds, frozen ones only when asked
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    model.encoder.mu.weight.requires_grad_(False)
    assert count_parameters(model) == total - 6 * 40
    assert count_parameters(model, trainable_only=False) == total


def test_eval_is_deterministic_and_uses_mu() -> None:
    torch.manual_seed(0)
    model = VAE3D(small_config(16))
    x = torch.rand(3, 3, 16, 16, 16)
    model.train()
    model(x)  # move BatchNorm's running statistics away from their initial values
    model.eval()
    with torch.no_grad():
        mu1, logvar1 = model.encode(x)
        mu2, _ = model.encode(x)
        recon, mu3, logvar3 = model(x)
    assert torch.equal(mu1, mu2) and torch.equal(mu1, mu3) and torch.equal(logvar1, logvar3)
    assert torch.allclose(recon, model.decode(mu1))
    assert np.allclose(fingerprints(model, x, batch_size=2), mu1.numpy(), atol=1e-6)
    assert np.allclose(reconstruct(model, x, batch_size=2), recon.numpy(), atol=1e-6)
    model.train()  # training mode samples z ≠ μ
    torch.manual_seed(1)
    first = model(x)[0]
    torch.manual_seed(2)
    assert not torch.allclose(first, model(x)[0])
    assert model.training  # reconstruct/fingerprints leave the mode as they found it
    fingerprints(model, x, batch_size=2)
    assert model.training


def test_spectral_term_is_eq3_and_parseval_sum_of_squares() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.rand(2, 3, 8, 8, 8, generator=gen, dtype=torch.float64)
    got = spectral_loss(y, x)
    # Eq. 3 written out with numpy's FFT: mean over the C·D³ coefficients of Im² + Re² differences
    fx, fy = (np.fft.fftn(a.numpy(), axes=(2, 3, 4)) for a in (x, y))
    eq3 = ((fx.imag - fy.imag) ** 2 + (fx.real - fy.real) ** 2).reshape(2, -1).mean(axis=1)
    assert np.allclose(got.numpy(), eq3, rtol=1e-12)
    # Parseval: per channel the sum of squared voxel errors; over the VE D³ × the voxel MSE
    sse_per_channel = ((x - y) ** 2).sum(dim=(2, 3, 4))
    assert torch.allclose(got, sse_per_channel.mean(dim=1), rtol=1e-10)
    assert torch.allclose(got, 8**3 * ((x - y) ** 2).mean(dim=(1, 2, 3, 4)), rtol=1e-10)
    assert float(spectral_loss(x, x).max()) == 0.0


def test_amplitude_variant_is_blind_to_circular_shifts_complex_is_not() -> None:
    x = grain_volumes(2, 16, 12)
    shifted = torch.roll(x, shifts=(3, -5, 7), dims=(2, 3, 4))
    assert float(spectral_loss(shifted, x, "amplitude").max()) < 1e-6 * float(
        spectral_loss(shifted, x, "complex").min()
    )
    assert float(spectral_loss(shifted, x, "complex").min()) > 10.0
    # a change of contents is seen by both
    other = grain_volumes(2, 16, 12, seed=1)
    assert float(spectral_loss(other, x, "amplitude").min()) > 1.0
    with pytest.raises(InputError, match="spectral"):
        spectral_loss(x, x, "phase")


def test_bce_scores_the_reconstruction_against_the_target() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 4, 4, generator=gen) * 0.8 + 0.1  # not binary
    recon = torch.rand(2, 3, 4, 4, 4, generator=gen) * 0.98 + 0.01
    expected = -(x * torch.log(recon) + (1 - x) * torch.log(1 - recon)).mean()
    assert torch.allclose(bce_loss(recon, x), expected, rtol=1e-6)
    assert torch.allclose(bce_loss(recon, x), F.binary_cross_entropy(recon, x))
    swapped = F.binary_cross_entropy(x, recon)
    assert abs(float(swapped) - float(expected)) > 0.05
    # the loss of the model uses the same direction
    model = _FixedOutput(recon)
    _, metrics = vae3d_loss(model, [x], alpha=1.0, kl_weight=0.0)
    assert metrics["bce"] == pytest.approx(float(expected), rel=1e-6)
    assert metrics["bce"] != pytest.approx(float(swapped), rel=1e-3)


class _FixedOutput(torch.nn.Module):
    """A stand-in model whose forward returns a given reconstruction, μ and ln σ²."""

    def __init__(
        self,
        recon: torch.Tensor,
        mu: torch.Tensor | None = None,
        logvar: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        n = recon.shape[0]
        self.recon = recon
        self.mu = torch.zeros(n, 4) if mu is None else mu
        self.logvar = torch.zeros(n, 4) if logvar is None else logvar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.recon, self.mu, self.logvar


def test_kl_matches_its_analytic_value() -> None:
    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    logvar = torch.tensor([[0.0, np.log(4.0)], [np.log(0.25), 0.0]], dtype=torch.float32)
    # KL(N(μ, σ²) ‖ N(0, 1)) = ½ (σ² + μ² − 1 − ln σ²) per dimension
    expected = torch.tensor(
        [0.0 + 0.5 * (4 + 1 - 1 - np.log(4.0)), 0.5 * (0.25 + 4 - 1 - np.log(0.25)) + 0.5]
    )
    assert torch.allclose(kl_divergence(mu, logvar), expected.float(), rtol=1e-6)
    # against torch's own closed form
    normal = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    standard = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    reference = torch.distributions.kl_divergence(normal, standard).sum(dim=1)
    assert torch.allclose(kl_divergence(mu, logvar), reference, rtol=1e-6)


def test_loss_is_eq4_plus_weighted_kl_as_batch_means() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, 8, generator=gen)
    recon = torch.rand(3, 3, 8, 8, 8, generator=gen) * 0.9 + 0.05
    mu, logvar = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen) * 0.3
    model = _FixedOutput(recon, mu, logvar)
    bce = float(F.binary_cross_entropy(recon, x))
    fourier = float(spectral_loss(recon, x).mean())
    kl = float(kl_divergence(mu, logvar).mean())
    for alpha, beta in [(0.999, 0.0), (0.5, 1e-2), (1.0, 1.0), (0.0, 0.0)]:
        loss, metrics = vae3d_loss(model, x, alpha=alpha, kl_weight=beta)
        assert float(loss) == pytest.approx(
            alpha * bce + (1 - alpha) * fourier + beta * kl, rel=1e-5
        )
        assert metrics["reconstruction"] == pytest.approx(
            alpha * bce + (1 - alpha) * fourier, rel=1e-5
        )
        assert (metrics["bce"], metrics["kl"]) == (pytest.approx(bce), pytest.approx(kl))
        assert metrics["spectral"] == pytest.approx(fourier)
        assert all(isinstance(v, float) for v in metrics.values())
    # batch means: a batch of the same VE twice has the loss of the VE alone
    single = _FixedOutput(recon[:1], mu[:1], logvar[:1])
    double = _FixedOutput(
        recon[:1].repeat(2, 1, 1, 1, 1), mu[:1].repeat(2, 1), logvar[:1].repeat(2, 1)
    )
    one, _ = vae3d_loss(single, x[:1], kl_weight=0.1)
    two, _ = vae3d_loss(double, (x[:1].repeat(2, 1, 1, 1, 1),), kl_weight=0.1)
    assert float(one) == pytest.approx(float(two), rel=1e-6)
    with pytest.raises(InputError, match="batch"):
        vae3d_loss(model, {"x": x})


def test_spectral_term_dwarfs_bce_on_64_cubed_ves_as_the_paper_says() -> None:
    """Paper: the Fourier term is 10⁴–10⁵ × the BCE (hence α = 0.999), at the start of training."""
    x = grain_volumes(1, 64, 60)
    start = torch.full_like(x, 0.5)  # what an untrained sigmoid decoder gives
    ratio = float(spectral_loss(start, x).mean()) / float(bce_loss(start, x))
    assert 1e4 < ratio < 1e5


def test_trains_through_the_project_loop(tmp_path) -> None:
    torch.manual_seed(0)
    x = grain_volumes(16, 16, 6, values=(0.05, 0.45))  # mean ≠ ½: learnable within a few steps
    model = VAE3D(small_config(16))
    settings = TrainSettings(epochs=3, batch_size=4, lr=3e-3, device="cpu", seed=0)
    loss = functools.partial(vae3d_loss, kl_weight=1e-4)
    result = Trainer(model, loss, settings, tmp_path).fit(
        TensorDataset(x[:12]), TensorDataset(x[12:])
    )
    train = [row["train_loss"] for row in result.history]
    val = [row["val_reconstruction"] for row in result.history]
    assert train[-1] < 0.85 * train[0]
    assert val[-1] < val[0]
    assert {"val_bce", "val_spectral", "val_kl", "val_reconstruction"} <= set(result.history[0])
    # the checkpoint holds the model's state_dict: it loads into a fresh model, same outputs
    restored = VAE3D(small_config(16))
    restored.load_state_dict(torch.load(result.last_path, weights_only=True)["model"])
    assert np.allclose(reconstruct(restored, x, 5), reconstruct(model, x, 5), atol=1e-6)


def test_state_dict_round_trip_and_sync_batchnorm_conversion() -> None:
    torch.manual_seed(0)
    model = VAE3D(small_config(16, "resnet18"))
    x = torch.rand(2, 3, 16, 16, 16)
    model(x)  # update running statistics
    model.eval()
    copy = VAE3D(small_config(16, "resnet18"))
    copy.load_state_dict(model.state_dict())
    copy.eval()
    assert torch.equal(copy(x)[0], model(x)[0])
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert list(synced.state_dict()) == list(model.state_dict())
    assert torch.allclose(synced.eval()(x)[0], model(x)[0])


def test_config_round_trip_defaults_and_errors() -> None:
    config = small_config(32, "resnet34", stem_channels=6)
    assert VAE3DConfig.from_dict(config.to_dict()) == config
    assert VAE3DConfig().blocks == (2, 2, 2, 2) and VAE3DConfig().hidden == 8192
    assert VAE3DConfig().latent_dim == 256 and VAE3DConfig().cells == 64
    with pytest.raises(InputError, match=r"\(latent_size\): unknown VAE3D setting"):
        VAE3DConfig.from_dict({"latent_size": 64})
    with pytest.raises(InputError, match="resnet50"):
        VAE3DConfig(depth="resnet50")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="multiple of 16"):
        VAE3DConfig(cells=24)
    with pytest.raises(InputError, match="4 entries"):
        VAE3DConfig(channels=(8, 16, 32))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="positive integer"):
        VAE3DConfig(hidden=0)
    model = VAE3D(small_config(16))
    with pytest.raises(InputError, match=r"expected \(N, 3, 16, 16, 16\)"):
        model.encode(torch.rand(1, 3, 32, 32, 32))
