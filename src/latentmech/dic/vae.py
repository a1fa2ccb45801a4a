"""The per-modality VAE of the HR-DIC paper (Fig. 4, Methods), its loss and its augmentations.

Architecture (the paper gives it as a figure; what it states is kept, sizes are configurable):
an encoder of large-kernel convolutions, each resolution stage being residual convolutions
(shortcut on every convolution that keeps the resolution) followed by a stride-2 convolution,
then a linear layer to μ and log σ² of a 128-d latent; a decoder mirroring it with stride-2
transposed convolutions. No normalisation layers (the values have physical meaning), leaky ReLU
(0.2) after every convolution, Glorot initialisation. Only the decoder's last layer depends on the
modality: its leaky ReLU becomes tanh for the (cos, sin) slip direction.

Loss: the pixel L2 error of each window divided by that window's maximum absolute value (the
paper: "inversely scaled by the maximum value in each window", so intense events do not dominate)
plus the KL divergence to N(0, I). The paper does not say whether the maximum is squared; we
divide by it once (``max_power = 1``, configurable) and floor it at ``max_floor`` so empty
windows do not blow up.

Augmentations: reflections (horizontal and vertical, each with p = 0.5, so none/h/v/both are
equally likely) and event masking (each event of a window hidden with p = 0.25, at least one
kept, its pixels replaced by Gaussian noise matching the window's background). A reflection
mirrors the sense of rotations and angles: lattice rotation and the sine of the slip direction
change sign (the paper does not say; it is what a mirrored measurement would give).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from latentmech.core.jsonconfig import JsonConfig
from latentmech.core.nn import LEAKY_SLOPE, ResidualConv2d, glorot_init

#: Channels whose sign flips under a mirror reflection (see the module docstring).
REFLECTION_ODD_CHANNELS = ("rotation", "direction_sin")


@dataclass(frozen=True)
class VAEConfig(JsonConfig):
    """Architecture of one modality's VAE; stored as JSON beside the checkpoint."""

    in_channels: int = 1
    window_px: int = 32
    channels: tuple[int, ...] = (16, 32, 64)  # one entry per stride-2 stage
    kernel_size: int = 7
    blocks_per_stage: int = 1  # residual convolutions before each down/up-sampling
    latent_dim: int = 128
    output: Literal["leaky_relu", "tanh", "linear"] = "leaky_relu"

    def __post_init__(self) -> None:
        factor = 2 ** len(self.channels)
        if self.window_px % factor:
            raise ValueError(
                f"window_px {self.window_px} is not divisible by 2^{len(self.channels)}"
            )

    @property
    def bottleneck_px(self) -> int:
        return self.window_px // 2 ** len(self.channels)


def _down(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2), nn.LeakyReLU(LEAKY_SLOPE)
    )


def _up(c_in: int, c_out: int, k: int) -> nn.Sequential:
    # output = (n - 1)·2 − 2p + k + output_padding = 2n with p = k // 2 and output_padding = 1
    layer = nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=k // 2, output_padding=1)
    return nn.Sequential(layer, nn.LeakyReLU(LEAKY_SLOPE))


class Encoder(nn.Module):
    """Window (N, C, W, W) → μ, log σ² (N, latent_dim)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        k, first = config.kernel_size, config.channels[0]
        layers: list[nn.Module] = [
            nn.Conv2d(config.in_channels, first, k, padding=k // 2),
            nn.LeakyReLU(LEAKY_SLOPE),
        ]
        c_in = first
        for c_out in config.channels:
            layers += [ResidualConv2d(c_in, k) for _ in range(config.blocks_per_stage)]
            layers.append(_down(c_in, c_out, k))
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = c_in * config.bottleneck_px**2
        self.mu = nn.Linear(flat, config.latent_dim)
        self.log_var = nn.Linear(flat, config.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mu(h), self.log_var(h)


class Decoder(nn.Module):
    """Latent (N, latent_dim) → window (N, C, W, W); last activation per modality."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        k = config.kernel_size
        widths = list(reversed(config.channels))
        self.shape = (widths[0], config.bottleneck_px, config.bottleneck_px)
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim, math.prod(self.shape)), nn.LeakyReLU(LEAKY_SLOPE)
        )
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths, [*widths[1:], widths[-1]], strict=True):
            layers += [ResidualConv2d(c_in, k) for _ in range(config.blocks_per_stage)]
            layers.append(_up(c_in, c_out, k))
        layers.append(nn.Conv2d(widths[-1], config.in_channels, k, padding=k // 2))
        layers.append(_output_activation(config.output))
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(self.project(z).view(-1, *self.shape))


def _output_activation(kind: str) -> nn.Module:
    if kind == "tanh":
        return nn.Tanh()
    if kind == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if kind == "linear":
        return nn.Identity()
    raise ValueError(f"unknown output activation {kind!r}; expected leaky_relu, tanh or linear")


class VAE(nn.Module):
    """Encoder + reparameterised sampling + decoder (paper Fig. 4)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, log_var = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if self.training else mu
        return self.decoder(z), mu, log_var


def load_vae(weights: str | Path, sidecar: str | Path) -> tuple[VAE, dict[str, Any]]:
    """A trained VAE in eval mode from its ``state_dict`` and JSON sidecar (``weights_only`` load)."""
    meta = json.loads(Path(sidecar).read_text())
    model = VAE(VAEConfig.from_dict(meta["config"]))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval(), meta


def scaled_l2(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    max_power: float = 1.0,
    max_floor: float = 1e-3,
) -> torch.Tensor:
    """Per-window mean squared error divided by (max |target| of the window) ** ``max_power``."""
    dims = tuple(range(1, target.ndim))
    error = torch.mean((reconstruction - target) ** 2, dim=dims)
    peak = torch.amax(torch.abs(target), dim=dims).clamp_min(max_floor)
    return error / peak**max_power


def kl_divergence(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per window, summed over latent dimensions."""
    return -0.5 * torch.sum(1 + log_var - mu**2 - torch.exp(log_var), dim=1)


def vae_loss(
    model: VAE, x: torch.Tensor, beta: float = 1.0, max_power: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Paper loss (batch mean): scaled L2 + β · KL; the two parts are reported separately."""
    reconstruction, mu, log_var = model(x)
    l2 = scaled_l2(reconstruction, x, max_power).mean()
    kl = kl_divergence(mu, log_var).mean()
    return l2 + beta * kl, {"scaled_l2": float(l2.detach()), "kl": float(kl.detach())}


# ---------------------------------------------------------------------------------------------
# augmentations


def reflect(
    windows: torch.Tensor,
    channel_names: Sequence[str],
    generator: torch.Generator | None = None,
    p: float = 0.5,
) -> torch.Tensor:
    """Mirror each window horizontally and/or vertically (independently, each with ``p``).

    Channels in :data:`REFLECTION_ODD_CHANNELS` change sign once per mirror applied.
    """
    n = windows.shape[0]
    # draws on the CPU (a CPU generator's stream, the same on any device), then moved
    flip_x = (torch.rand(n, generator=generator) < p).to(windows.device)
    flip_y = (torch.rand(n, generator=generator) < p).to(windows.device)
    out = windows.clone()
    out[flip_x] = out[flip_x].flip(-1)
    out[flip_y] = out[flip_y].flip(-2)
    odd = torch.tensor(
        [name in REFLECTION_ODD_CHANNELS for name in channel_names], device=windows.device
    )
    sign = torch.where(flip_x ^ flip_y, -1.0, 1.0)[:, None] * odd.float() + (~odd).float()
    return out * sign[:, :, None, None].to(out.dtype)


def mask_events(
    windows: torch.Tensor,
    events: torch.Tensor,
    valid: torch.Tensor,
    generator: torch.Generator | None = None,
    p: float = 0.25,
) -> torch.Tensor:
    """Hide events at random (p each, at least one kept per window) under matched background noise.

    ``events`` (N, W, W) holds event ids (0: none) and ``valid`` (N, W, W) the measured pixels.
    The noise of each window and channel has the mean and standard deviation of its valid pixels
    outside every event.
    """
    n = windows.shape[0]
    out = windows.clone()
    for i in range(n):  # windows hold a handful of events each: a loop over windows, not pixels
        ids = torch.unique(events[i])
        ids = ids[ids > 0]
        if ids.numel() < 2:
            continue  # a window with a single event keeps it
        hide = (torch.rand(ids.numel(), generator=generator) < p).to(ids.device)
        if bool(hide.all()):
            hide[torch.randint(ids.numel(), (1,), generator=generator)] = False
        hidden = torch.isin(events[i], ids[hide])
        if not bool(hidden.any()):
            continue
        background = (events[i] == 0) & valid[i]
        out[i] = _fill_with_background(out[i], hidden, background, generator)
    return out


def _fill_with_background(
    window: torch.Tensor,
    hidden: torch.Tensor,
    background: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    values = (
        window[:, background] if bool(background.any()) else window.new_zeros(window.shape[0], 1)
    )
    mean = values.mean(dim=1)
    std = values.std(dim=1, unbiased=False)
    noise = torch.randn(
        (window.shape[0], int(hidden.sum())), generator=generator, dtype=window.dtype
    ).to(window.device)
    window = window.clone()
    window[:, hidden] = mean[:, None] + std[:, None] * noise
    return window
