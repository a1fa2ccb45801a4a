"""Layers and initialisation shared by the models of every study."""

from __future__ import annotations

import torch
from torch import nn

#: Slope of the leaky ReLU used throughout the HR-DIC paper's networks.
LEAKY_SLOPE = 0.2


class ResidualConv2d(nn.Module):
    """``x + act(conv(x))``: a convolution that keeps resolution and channels, with a shortcut.

    The HR-DIC VAE puts a shortcut on every convolution that does not change resolution; without
    normalisation layers this keeps deep stacks of large kernels trainable.
    """

    def __init__(self, channels: int, kernel_size: int, slope: float = LEAKY_SLOPE) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the resolution, got {kernel_size}")
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.conv(x))


def glorot_init(module: nn.Module) -> None:
    """Glorot (Xavier) uniform weights and zero biases for every convolution and linear layer."""
    for layer in module.modules():
        if isinstance(
            layer, nn.Conv2d | nn.ConvTranspose2d | nn.Conv3d | nn.ConvTranspose3d | nn.Linear
        ):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
