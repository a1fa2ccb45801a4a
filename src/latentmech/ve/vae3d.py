"""The 3D ResNet VAE of the volume-element paper (section 2.2), its loss (Eqs. 1–4) and helpers.

A volume element (VE) enters as ``(N, C, D, D, D)``: C = 3 channels of Euler angles normalised to
[0, 1] by (2π, π, 2π), D = ``cells`` voxels per edge (the paper: 64). The encoder gives μ and
ln σ² of the latent distribution; μ is the VE's fingerprint (paper: "discard this noise term and
treat μ as the fingerprint").

Architecture (section 2.2.2 and 3.1; what the paper states is kept, sizes are configurable):

* **Encoder.** A stem convolution (3³ kernel, stride 1, ``in_channels`` → ``stem_channels``),
  then 4 layers. Each layer is a separate downsampling convolution (3³ kernel, stride 2, padding 1,
  batch norm, ReLU) followed by the layer's residual blocks at that resolution. A residual block
  is conv3d–BN–ReLU–conv3d–BN, summed with the block's input, then ReLU (the paper's description);
  blocks keep resolution and channels, so their number per layer (Table 3: ResNet12 [1,1,1,1],
  ResNet18 [2,2,2,2], ResNet34 [3,4,6,3]) changes nothing else. *Placement choice*: the paper says
  "between each block is a separate convolution layer for downsampling" and that there are 4
  layers; we put one downsampling convolution in front of every layer (after the stem, then
  between consecutive layers), 4 halvings in all, so the input edge must be a multiple of 16 and
  the last layer works at ``cells / 16`` (4³ for the paper's 64³ VEs). With 512 channels that is
  32 768 features, which the paper's hidden layer of 8192 then compresses ("acts as a
  bottleneck"). Then flatten, a fully connected hidden layer (``hidden``, ReLU) and two heads, μ
  and ln σ² (``latent_dim`` each).
* **Sampling (Eq. 1).** The paper writes z = μ + exp(½ ln σ) ε while calling σ the variances; the
  second head is therefore the log-variance ln σ², and z = μ + exp(½ ln σ²) ε, ε ~ N(0, I), in
  training mode. In eval mode z = μ (deterministic reconstructions and fingerprints).
* **Decoder.** Mirrors the encoder: z → FC (``hidden``, ReLU) → FC to the last layer's feature
  volume (ReLU), then per layer in reverse the layer's residual blocks (``decoder_blocks``; the
  paper only says "convolutional transpose operators", the blocks are our choice and can be
  switched off) and a transposed convolution (3³, stride 2, padding 1, output padding 1: the
  adjoint of the encoder's downsampling convolution; BN, ReLU) doubling the edge, and finally a
  3³ convolution to ``in_channels`` with a sigmoid (the data are in [0, 1]).

Batch norm is used throughout (the paper's blocks). Under data-parallel training the statistics
are per shard (per rank's part of the batch); ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``
works on this model unchanged (same ``state_dict`` keys) where global statistics are wanted.

Loss (Eq. 4): α · BCE(x̂, x) + (1 − α) · L_FFT(x, x̂) + β · KL, see :func:`vae3d_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (the usual torch alias)

from latentmech.core.errors import InputError
from latentmech.core.jsonconfig import JsonConfig

#: Residual blocks per layer of each architecture (paper Table 3).
DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "resnet12": (1, 1, 1, 1),
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}
#: Halvings of the edge between the input and the last layer (one per layer).
DOWNSAMPLINGS = 4
SPECTRAL_KINDS = ("complex", "amplitude")
#: Default weight of the KL term (the paper's Eq. 4 has none; see :func:`vae3d_loss`).
DEFAULT_KL_WEIGHT = 1e-4
#: Default α of Eq. 4 (the paper's value).
DEFAULT_ALPHA = 0.999
CONFIG_SOURCE = "vae3d config"


@dataclass(frozen=True)
class VAE3DConfig(JsonConfig):
    """Architecture of the 3D ResNet VAE; defaults are the paper's (ResNet18, |z| = 256, 8192).

    ``stem_channels`` None means ``channels[0]``. ``decoder_blocks`` mirrors the encoder's
    residual blocks in the decoder (True) or leaves the decoder plain transposed convolutions.
    """

    in_channels: int = 3
    cells: int = 64
    depth: Literal["resnet12", "resnet18", "resnet34"] = "resnet18"
    channels: tuple[int, int, int, int] = (64, 128, 256, 512)
    hidden: int = 8192
    latent_dim: int = 256
    stem_channels: int | None = None
    decoder_blocks: bool = True

    def __post_init__(self) -> None:
        if self.depth not in DEPTHS:
            raise InputError(
                CONFIG_SOURCE,
                "depth",
                f"unknown architecture {self.depth!r}; known: {list(DEPTHS)}",
            )
        if len(self.channels) != DOWNSAMPLINGS:
            raise InputError(
                CONFIG_SOURCE,
                "channels",
                f"expected {DOWNSAMPLINGS} entries (one per layer), got {list(self.channels)}",
            )
        stem = 1 if self.stem_channels is None else self.stem_channels
        sizes = {"in_channels": self.in_channels, "hidden": self.hidden,
                 "latent_dim": self.latent_dim, "stem_channels": stem,
                 "cells": self.cells, "channels": min(self.channels)}  # fmt: skip
        for key, value in sizes.items():
            if int(value) != value or value < 1:
                raise InputError(CONFIG_SOURCE, key, f"expected a positive integer, got {value!r}")
        factor = 2**DOWNSAMPLINGS
        if self.cells % factor:
            raise InputError(
                CONFIG_SOURCE,
                "cells",
                f"the VE edge must be a multiple of {factor} (4 stride-2 layers), got {self.cells}",
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = CONFIG_SOURCE) -> Self:
        """Config from a mapping (e.g. JSON or YAML); unknown keys are an error, not ignored."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(
                source, ", ".join(unknown), f"unknown VAE3D setting(s); known: {sorted(known)}"
            )
        return super().from_dict(dict(d))

    @property
    def blocks(self) -> tuple[int, int, int, int]:
        """Residual blocks per layer (Table 3)."""
        return DEPTHS[self.depth]

    @property
    def stem_width(self) -> int:
        return self.stem_channels or self.channels[0]

    @property
    def bottleneck_cells(self) -> int:
        """Edge of the last layer's feature volume."""
        return self.cells // 2**DOWNSAMPLINGS

    @property
    def flat_features(self) -> int:
        return self.channels[-1] * self.bottleneck_cells**3


#: The paper's architecture (64³ VEs, ResNet18, hidden 8192, |z| = 256).
PAPER_CONFIG = VAE3DConfig()
#: A demo-scale architecture for 32³ VEs on a CPU: ~1 M parameters, ~1.4 s per training step
#: of 16 VEs on one thread.
DEMO_CONFIG = VAE3DConfig(
    cells=32, depth="resnet12", channels=(8, 16, 32, 64), hidden=256, latent_dim=64
)


# ---------------------------------------------------------------------------------------------
# building blocks


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


def _up_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    # output edge = (n − 1)·2 − 2·1 + 3 + 1 = 2n
    layer = nn.ConvTranspose3d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False)
    return nn.Sequential(layer, nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


class ResidualBlock3d(nn.Module):
    """conv3d–BN–ReLU–conv3d–BN, plus the input, then ReLU; keeps resolution and channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


def _residual_layer(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock3d(channels) for _ in range(blocks)))


class Encoder3D(nn.Module):
    """VE (N, C, D, D, D) → μ, ln σ² (N, latent_dim)."""

    def __init__(self, config: VAE3DConfig) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(config.in_channels, config.stem_width)
        widths = [config.stem_width, *config.channels]
        self.layers = nn.ModuleList(
            nn.Sequential(
                _conv_bn_relu(c_in, c_out, stride=2),  # the separate downsampling convolution
                _residual_layer(c_out, n_blocks),
            )
            for c_in, c_out, n_blocks in zip(widths[:-1], widths[1:], config.blocks, strict=True)
        )
        self.hidden = nn.Sequential(
            nn.Flatten(), nn.Linear(config.flat_features, config.hidden), nn.ReLU(inplace=True)
        )
        self.mu = nn.Linear(config.hidden, config.latent_dim)
        self.logvar = nn.Linear(config.hidden, config.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h)
        h = self.hidden(h)
        return self.mu(h), self.logvar(h)


class Decoder3D(nn.Module):
    """Latent (N, latent_dim) → VE (N, C, D, D, D) in (0, 1); the encoder mirrored."""

    def __init__(self, config: VAE3DConfig) -> None:
        super().__init__()
        edge = config.bottleneck_cells
        self.shape = (config.channels[-1], edge, edge, edge)
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden, config.flat_features),
            nn.ReLU(inplace=True),
        )
        widths = [config.stem_width, *config.channels][::-1]  # c4, c3, c2, c1, stem
        blocks = config.blocks[::-1] if config.decoder_blocks else (0,) * DOWNSAMPLINGS
        self.layers = nn.ModuleList(
            nn.Sequential(_residual_layer(c_in, n_blocks), _up_bn_relu(c_in, c_out))
            for c_in, c_out, n_blocks in zip(widths[:-1], widths[1:], blocks, strict=True)
        )
        self.head = nn.Conv3d(config.stem_width, config.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, *self.shape)
        for layer in self.layers:
            h = layer(h)
        return torch.sigmoid(self.head(h))


class VAE3D(nn.Module):
    """Encoder, reparameterised sampling (Eq. 1, training mode only) and decoder."""

    def __init__(self, config: VAE3DConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder3D(config)
        self.decoder = Decoder3D(config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ (the fingerprint) and ln σ² of each VE."""
        _check_input(x, self.config)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed VEs (N, C, D, D, D) in (0, 1) from latent vectors (N, latent_dim)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


def _check_input(x: torch.Tensor, config: VAE3DConfig) -> None:
    expected = (config.in_channels, config.cells, config.cells, config.cells)
    if x.ndim != 5 or tuple(x.shape[1:]) != expected:
        raise InputError(
            "VAE3D input", "shape", f"expected (N, {', '.join(map(str, expected))}), got "
            f"{tuple(x.shape)}",
        )  # fmt: skip


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------
# loss


def bce_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2 as a mean over every voxel and channel of the batch: BCE(x̂, x).

    The reconstruction's probabilities are scored against the target,
    −[x log x̂ + (1 − x) log(1 − x̂)], i.e. ``F.binary_cross_entropy(x̂, x)``, not the swapped
    arguments. The paper's Eq. 2 is a sum; we take the mean over voxels, which is what makes its
    remark hold that the Fourier term is 10⁴–10⁵ times larger (so α = 0.999). With a target that
    is not binary the minimum is the target's own entropy, not 0.
    """
    dtype = _loss_dtype(target)
    with torch.autocast(device_type=target.device.type, enabled=False):
        return F.binary_cross_entropy(reconstruction.to(dtype), target.to(dtype))


def _loss_dtype(x: torch.Tensor) -> torch.dtype:
    """At least float32 (bf16/fp16 are upcast; BCE and FFT are not autocast-safe), float64 kept."""
    return torch.promote_types(x.dtype, torch.float32)


def spectral_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, kind: str = "complex"
) -> torch.Tensor:
    """Eq. 3 per VE (N,): the mean over the VE's Fourier coefficients of |F(x) − F(x̂)|².

    F is the unnormalised 3D FFT over the three spatial axes, per channel; the mean runs over the
    m = C·D³ coefficients of the VE. By Parseval (Σ_k |F(u)_k|² = D³ Σ_v |u_v|² per channel),
    the complex term equals, per channel, the sum of squared voxel errors of that channel, and
    over the VE the mean of those over channels, i.e. D³ × the VE's voxel MSE. Computing it
    through the FFT, as the paper writes it, changes nothing but the cost; we keep Eq. 3 literal.

    ``kind="amplitude"`` compares amplitude spectra instead, mean over coefficients of
    (|F(x)| − |F(x̂)|)²: blind to the phase, hence to circular shifts of the VE (same scale as
    the complex term, so α means the same). Computed in at least float32 (also under autocast).
    """
    if kind not in SPECTRAL_KINDS:
        raise InputError(
            "vae3d loss", "spectral", f"expected one of {SPECTRAL_KINDS}, got {kind!r}"
        )
    axes = (-3, -2, -1)
    with torch.autocast(device_type=target.device.type, enabled=False):
        dtype = _loss_dtype(target)
        f_target = torch.fft.fftn(target.to(dtype), dim=axes)
        f_recon = torch.fft.fftn(reconstruction.to(dtype), dim=axes)
        if kind == "complex":
            diff = f_target - f_recon
            squared = diff.real**2 + diff.imag**2
        else:
            squared = (f_target.abs() - f_recon.abs()) ** 2
        return squared.flatten(1).mean(dim=1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per VE (N,), summed over latent dimensions."""
    return -0.5 * torch.sum(1 + logvar - mu**2 - torch.exp(logvar), dim=1)


def batch_volumes(batch: Any) -> torch.Tensor:
    """The VEs of a batch: a bare tensor, or the first element of a list/tuple (TensorDataset)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise InputError(
        "vae3d loss", "batch", f"expected a tensor or (tensor, ...), got {type(batch)}"
    )


def vae3d_loss(
    model: nn.Module,
    batch: Any,
    alpha: float = DEFAULT_ALPHA,
    kl_weight: float = DEFAULT_KL_WEIGHT,
    spectral: str = "complex",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 4 plus a KL term, as batch means: α·BCE + (1 − α)·L_FFT + ``kl_weight``·KL.

    For :class:`latentmech.core.train.Trainer` (``model`` may be the DDP wrapper: it is called,
    never its methods). BCE is the mean over voxels (:func:`bce_loss`), the spectral term Eq. 3
    per VE then the batch mean (:func:`spectral_loss`), KL summed over latent dimensions then
    the batch mean. On 64³ data the spectral term is 10⁴–10⁵ × the BCE (the paper's remark; see
    the report), at 32³ 8 × less.

    KL: the paper's Eq. 4 has none (the spectral term is its "regulariser"); we add the usual
    VAE term so the latent space (the fingerprints) stays regularised, with a small default
    weight (1e-4) so reconstruction dominates: the reconstruction terms are O(1) per VE while KL,
    summed over the latent dimensions, is O(10–100) nats. 0 gives the paper's loss exactly.

    Metrics (floats): ``bce``, ``spectral``, ``kl``, ``reconstruction`` (α·BCE + (1 − α)·spectral).
    """
    x = batch_volumes(batch)
    reconstruction, mu, logvar = model(x)
    bce = bce_loss(reconstruction, x)
    fourier = spectral_loss(reconstruction, x, spectral).mean()
    kl = kl_divergence(mu.to(_loss_dtype(mu)), logvar.to(_loss_dtype(mu))).mean()
    recon_loss = alpha * bce + (1 - alpha) * fourier
    loss = recon_loss + kl_weight * kl if kl_weight else recon_loss  # 0·inf would be NaN
    metrics = {"bce": bce, "spectral": fourier, "kl": kl, "reconstruction": recon_loss}
    return loss, {k: float(v.detach()) for k, v in metrics.items()}


# ---------------------------------------------------------------------------------------------
# inference helpers


def _batched(model: VAE3D, x: np.ndarray | torch.Tensor, batch_size: int, fn: Any) -> np.ndarray:
    """Apply ``fn(model, chunk)`` in eval mode without gradients, chunk by chunk, to numpy."""
    if batch_size < 1:
        raise InputError("vae3d", "batch_size", f"expected a positive integer, got {batch_size}")
    parameter = next(model.parameters())
    data = torch.as_tensor(x)
    was_training = model.training
    model.eval()
    outputs: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for start in range(0, data.shape[0], batch_size):
                chunk = data[start : start + batch_size].to(parameter.device, parameter.dtype)
                outputs.append(fn(model, chunk).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.empty((0,), dtype=np.float32)


def reconstruct(model: VAE3D, x: np.ndarray | torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """Deterministic reconstructions (z = μ) of VEs (N, C, D, D, D), float32 numpy."""
    return _batched(model, x, batch_size, lambda m, chunk: m(chunk)[0])


def fingerprints(model: VAE3D, x: np.ndarray | torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """The fingerprints μ (N, latent_dim) of VEs (N, C, D, D, D), float32 numpy."""
    return _batched(model, x, batch_size, lambda m, chunk: m.encode(chunk)[0])


def layer_blocks(model: VAE3D) -> list[int]:
    """Residual blocks counted in each encoder layer (to check against Table 3)."""
    return [
        sum(isinstance(m, ResidualBlock3d) for m in layer.modules())
        for layer in model.encoder.layers
    ]
