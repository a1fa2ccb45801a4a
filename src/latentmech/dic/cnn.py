"""The property-prediction CNN of the HR-DIC paper (Fig. 9, Methods) and its data preparation.

What the paper states (kept): the input is a 9×9 crop of a latent map (each cell the 128 latent
features of one encoded HR-DIC window); 3×3 convolutions without stride reduce the resolution
slowly while the number of feature maps grows; leaky ReLU (0.2) after every convolution, Glorot
initialisation, 15 % dropout; six standardised properties are predicted at once with an L2 loss.
Two scalars enter as sinusoidal position encodings (Vaswani et al.) at different depths: the
local average strain (mean ε_xx over the crop, normalised by 5 %) and the macroscopic stress
(normalised by 1500 MPa). Training crops overlap by at most 7 of 9 cells, and the latent inputs
are augmented by Gaussian sampling z = μ + σ·ε from the VAE's mean and standard deviation.

Where the paper is silent (our choices, all configurable):

* Widths (128, 160, 192, 256): one per convolution. No padding, so each 3×3 convolution shrinks
  the map by 2 and a 9×9 crop reaches 1×1 after exactly four convolutions.
* The encodings enter after convolutions 1 (strain) and 3 (stress). Each goes through a linear
  layer to that convolution's width and is added to its output before the leaky ReLU, per
  channel and broadcast over space: a sample-dependent bias of that convolution, as timestep
  embeddings in diffusion U-Nets.
* Dropout is element-wise (``nn.Dropout``, not ``nn.Dropout2d``) after the activation of each
  convolution and of the dense layer. The maps are at most 9×9 and their cells are distinct
  17 µm windows rather than strongly correlated pixels, so whole-channel dropout is not needed.
  It would also drop the whole 1×1 output of the last convolution.
* Head: flatten (1×1) → Linear(``hidden``) → leaky ReLU → dropout → Linear(``n_outputs``).
* Encoding positions are value × ``encoding_scale`` (1000): the normalised inputs lie in about
  [0, 1]. Used directly as positions, every frequency but the first few would be almost
  constant. Scaled, they cover positions 0–1000 like tokens of a sequence, at a resolution of
  0.1 % of the normalisation range.
* Constant properties are standardised with a standard deviation of 1 (see :class:`Standardizer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from latentmech.core.jsonconfig import JsonConfig
from latentmech.core.nn import LEAKY_SLOPE, glorot_init

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


# ---------------------------------------------------------------------------------------------
# sinusoidal encoding


def sinusoidal_encoding(
    values: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0
) -> torch.Tensor:
    """Transformer position encoding of normalised scalars (N,) → (N, dim).

    Position p = value · ``scale``. The first half of the columns is sin(p·f_i) and the second
    half cos(p·f_i), with f_i = ``max_period`` ** (−2i / dim) for i = 0 … dim/2 − 1. The
    encoding is computed in float64 and returned in the dtype of ``values`` (if floating).
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"encoding dim must be a positive even number, got {dim}")
    if values.ndim != 1:
        raise ValueError(f"expected values of shape (N,), got {tuple(values.shape)}")
    exponent = torch.arange(dim // 2, dtype=torch.float64, device=values.device) * (2.0 / dim)
    frequencies = max_period ** (-exponent)
    angles = (values.to(torch.float64) * scale)[:, None] * frequencies[None, :]
    encoding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    dtype = values.dtype if values.is_floating_point() else torch.get_default_dtype()
    return encoding.to(dtype)


# ---------------------------------------------------------------------------------------------
# model


@dataclass(frozen=True)
class PropertyCNNConfig(JsonConfig):
    """Architecture of the property-prediction CNN; stored as JSON beside the checkpoint."""

    latent_dim: int = 128  # input channels: latent features per cell
    crop: int = 9  # cells per side of the input crop
    widths: tuple[int, ...] = (128, 160, 192, 256)  # one per 3×3 convolution
    encoding_dim: int = 32
    strain_depth: int = 1  # 1-based convolution after which the strain encoding is added
    stress_depth: int = 3  # likewise for the stress encoding
    dropout: float = 0.15
    hidden: int = 128  # width of the head's dense layer
    n_outputs: int = 6
    encoding_scale: float = 1000.0  # position = normalised value × encoding_scale

    def __post_init__(self) -> None:
        self._check_sizes()
        self._check_depths()

    def _check_sizes(self) -> None:
        if self.crop < 3 or self.crop % 2 == 0:
            raise ValueError(f"crop must be odd and ≥ 3, got {self.crop}")
        if len(self.widths) != self.n_convs:
            raise ValueError(
                f"crop {self.crop} needs (crop - 1) // 2 = {self.n_convs} unpadded 3×3 "
                f"convolutions to reach 1×1, but {len(self.widths)} widths were given"
            )
        sizes = {"latent_dim": self.latent_dim, "hidden": self.hidden, "n_outputs": self.n_outputs}
        sizes |= {f"widths[{i}]": w for i, w in enumerate(self.widths)}
        for name, size in sizes.items():
            if size < 1:
                raise ValueError(f"{name} must be ≥ 1, got {size}")
        if self.encoding_dim < 2 or self.encoding_dim % 2:
            raise ValueError(
                f"encoding_dim must be a positive even number, got {self.encoding_dim}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def _check_depths(self) -> None:
        for name in ("strain_depth", "stress_depth"):
            depth = getattr(self, name)
            if not 1 <= depth <= self.n_convs:
                raise ValueError(f"{name} must be in 1..{self.n_convs} (convolutions), got {depth}")
        if self.strain_depth == self.stress_depth:
            raise ValueError(
                f"strain_depth and stress_depth must differ (the paper injects them at different "
                f"depths), both are {self.strain_depth}; this needs crop ≥ 5"
            )

    @property
    def n_convs(self) -> int:
        """Number of unpadded 3×3 convolutions taking a crop × crop map to 1×1."""
        return (self.crop - 1) // 2


class PropertyCNN(nn.Module):
    """Latent crop (N, latent_dim, crop, crop) + strain (N,) + stress (N,) → properties (N, P).

    Strain and stress are normalised (5 %, 1500 MPa). The outputs are standardised properties.
    """

    def __init__(self, config: PropertyCNNConfig) -> None:
        super().__init__()
        self.config = config
        c_in = [config.latent_dim, *config.widths[:-1]]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3) for a, b in zip(c_in, config.widths, strict=True)
        )
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.dropout = nn.Dropout(config.dropout)
        self.strain_proj = nn.Linear(config.encoding_dim, config.widths[config.strain_depth - 1])
        self.stress_proj = nn.Linear(config.encoding_dim, config.widths[config.stress_depth - 1])
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(config.widths[-1], config.hidden),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.n_outputs),
        )
        glorot_init(self)

    def forward(
        self, latent: torch.Tensor, strain: torch.Tensor, stress: torch.Tensor
    ) -> torch.Tensor:
        self._check_inputs(latent, strain, stress)
        injected = {
            self.config.strain_depth: self.strain_proj(self._encode(strain)),
            self.config.stress_depth: self.stress_proj(self._encode(stress)),
        }
        h = latent
        for depth, conv in enumerate(self.convs, start=1):
            h = conv(h)
            if depth in injected:
                h = h + injected[depth][:, :, None, None]
            h = self.dropout(self.act(h))
        return self.head(h)

    def _encode(self, values: torch.Tensor) -> torch.Tensor:
        c = self.config
        return sinusoidal_encoding(values, c.encoding_dim, c.encoding_scale).to(
            self.strain_proj.weight.dtype
        )

    def _check_inputs(
        self, latent: torch.Tensor, strain: torch.Tensor, stress: torch.Tensor
    ) -> None:
        c = self.config
        expected = (c.latent_dim, c.crop, c.crop)
        if latent.ndim != 4 or tuple(latent.shape[1:]) != expected:
            raise ValueError(f"expected latent (N, {expected}), got {tuple(latent.shape)}")
        n = latent.shape[0]
        for name, values in (("strain", strain), ("stress", stress)):
            if tuple(values.shape) != (n,):
                raise ValueError(f"expected {name} of shape ({n},), got {tuple(values.shape)}")


def sample_latent(
    mu: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian-sampling augmentation: z = μ + σ · N(0, 1), with σ the standard deviation.

    The paper trains on draws from the VAE's latent distribution rather than on μ alone.
    """
    if mu.shape != sigma.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)} differ in shape")
    noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + sigma * noise


# ---------------------------------------------------------------------------------------------
# crops of latent maps


def crop_origins(n_rows: int, n_cols: int, crop: int = 9, max_overlap: int = 7) -> np.ndarray:
    """Top-left (row, col) of the crops tiling a latent map, (K, 2) int64, row-major.

    Adjacent crops are ``crop - max_overlap`` cells apart, so they share at most ``max_overlap``
    of their ``crop`` rows or columns (paper: at most 7 of 9, i.e. 77 %). The last cells of a
    side may be left out. A map smaller than a crop gives an empty (0, 2) array.
    """
    if crop < 1:
        raise ValueError(f"crop must be ≥ 1, got {crop}")
    if not 0 <= max_overlap < crop:
        raise ValueError(f"max_overlap must be in [0, crop) = [0, {crop}), got {max_overlap}")
    stride = crop - max_overlap
    rows = np.arange(0, n_rows - crop + 1, stride, dtype=np.int64)
    cols = np.arange(0, n_cols - crop + 1, stride, dtype=np.int64)
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
    return grid.reshape(-1, 2)


def _check_origins(origins: np.ndarray, n_rows: int, n_cols: int, crop: int) -> np.ndarray:
    origins = np.asarray(origins)
    if origins.ndim != 2 or origins.shape[1] != 2:
        raise ValueError(f"origins must be (K, 2), got {origins.shape}")
    if origins.size and not np.issubdtype(origins.dtype, np.integer):
        raise ValueError(f"origins must be integers, got {origins.dtype}")
    origins = origins.astype(np.int64)
    limits = np.array([n_rows - crop, n_cols - crop])
    if origins.size and (np.any(origins < 0) or np.any(origins > limits)):
        raise ValueError(f"origins out of range for a {n_rows}×{n_cols} map and crop {crop}")
    return origins


def _windows(array: np.ndarray, origins: np.ndarray, crop: int) -> np.ndarray:
    """(..., H, W) → (..., K, crop, crop) views of the crops at ``origins`` (already checked)."""
    view = np.lib.stride_tricks.sliding_window_view(array, (crop, crop), axis=(-2, -1))
    return view[..., origins[:, 0], origins[:, 1], :, :]


def extract_crops(maps: np.ndarray, origins: np.ndarray, crop: int) -> np.ndarray:
    """Crops of latent maps, channels first for torch.

    ``maps`` is (H, W, F) (features last, as the zarr store's (y, x, latent)) or (B, H, W, F)
    for several maps of the same grid. Returns a (K, F, crop, crop) or (B, K, F, crop, crop)
    copy.
    """
    if maps.ndim not in (3, 4):
        raise ValueError(f"maps must be (H, W, F) or (B, H, W, F), got {maps.shape}")
    n_rows, n_cols, n_features = maps.shape[-3:]
    origins = _check_origins(origins, n_rows, n_cols, crop)
    if origins.shape[0] == 0:
        return np.empty((*maps.shape[:-3], 0, n_features, crop, crop), dtype=maps.dtype)
    channels_first = np.moveaxis(maps, -1, -3)  # (..., F, H, W)
    crops = _windows(channels_first, origins, crop)  # (..., F, K, crop, crop)
    return np.ascontiguousarray(np.moveaxis(crops, -3, -4))


def crop_means(values: np.ndarray, origins: np.ndarray, crop: int) -> np.ndarray:
    """NaN-ignoring mean of a per-cell scalar over each crop: (H, W) → (K,), (B, H, W) → (B, K).

    This is the "local average strain" input (mean ε_xx of the windows of a crop). A crop
    without any finite cell gives NaN.
    """
    if values.ndim not in (2, 3):
        raise ValueError(f"values must be (H, W) or (B, H, W), got {values.shape}")
    origins = _check_origins(origins, values.shape[-2], values.shape[-1], crop)
    if origins.shape[0] == 0:
        return np.empty((*values.shape[:-2], 0), dtype=np.float64)
    windows = _windows(values.astype(np.float64, copy=False), origins, crop)
    finite = ~np.isnan(windows)
    total = np.where(finite, windows, 0.0).sum(axis=(-2, -1))
    count = finite.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ---------------------------------------------------------------------------------------------
# property standardisation


@dataclass
class Standardizer:
    """Per-property standardisation (x − mean) / std; the paper trains on standardised targets.

    A property that is constant in the fitting data gets std = 1 rather than 0: it carries no
    information to scale by. It is only centred (transform gives 0), ``inverse`` still returns
    the constant, and nothing is divided by zero.
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.std = np.asarray(self.std, dtype=np.float64)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(f"mean {self.mean.shape} and std {self.std.shape} must be (P,)")
        if np.any(self.std <= 0):
            raise ValueError("std must be positive")

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardizer:
        """Column mean and (population) standard deviation of ``values`` (N, P)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] == 0:
            raise ValueError(f"values must be (N, P) with N ≥ 1, got {values.shape}")
        constant = np.ptp(values, axis=0) == 0  # exact test: std of a constant may be 1e-17
        std = np.where(constant, 1.0, values.std(axis=0))
        return cls(values.mean(axis=0), std)

    def transform(self, values: ArrayOrTensor) -> ArrayOrTensor:
        """Physical → standardised, for (…, P) arrays or tensors."""
        mean, std = self._like(values)
        return (values - mean) / std

    def inverse(self, values: ArrayOrTensor) -> ArrayOrTensor:
        """Standardised → physical, for (…, P) arrays or tensors (e.g. model outputs)."""
        mean, std = self._like(values)
        return values * std + mean

    def _like(self, values: ArrayOrTensor) -> tuple[Any, Any]:
        if isinstance(values, torch.Tensor):
            kwargs = {"dtype": values.dtype, "device": values.device}
            return torch.as_tensor(self.mean, **kwargs), torch.as_tensor(self.std, **kwargs)
        return self.mean, self.std

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]))
