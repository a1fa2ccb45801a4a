"""AlloyVAE (paper 003, sections 2.1 and 4.2, SI C): a conditional VAE with smoothers.

A sample is a field on an r × r × r block grid: the *target* (the residual stress, 6 channels)
and one or more *condition groups* (the concentration c, 2 independent channels, and the
block-mean Warren–Cowley parameters w, 9 channels). Every field is min–max scaled to [0, 1]
(:class:`MinMax`). Which groups condition the model and how many channels the target has is
configuration (:class:`CVAEConfig`), so the eigenstrain frameworks of section 2.5 (c, w →
eigenstrain; c, w, eigenstrain → stress) are configs of this model, not new code.

Networks (SI Table 1; every "Fc" layer is fully connected on the flattened tensor, which is
what gives the paper's ~2.8 × 10⁸ parameters; sizes "4×4×4×k" are ``k`` *per block* here,
``r³·k`` in all):

* **Encoder** ℰ: 3³ convolutions (padding 1) 6 → 32 → 64 → 128 channels, ``Fc_feature``
  r³·128 → r³·64; per condition group a head r³·64 → r³·16 → r³·8 → 150 (c̄, w̄); μ and
  log-variance heads (r³·64 + Σ 150) → r³·16 → 300, fed with the features and the encoder's
  own condition vectors (SI C: "c̄, w̄ together with this feature vector").
* **Smoothers** 𝒞, 𝒲 (one per condition group): a 3³ convolution (channels → 64), then
  r³·64 → r³·32 → 150.
* **Decoder** 𝒟: five fully connected layers (300 + Σ 150) → r³·128 (×4) → r³·target.

Normalisation and activations (SI C says only "batch normalization and sigmoid activation layer
after neural network layers"; *our placement*): every hidden layer (convolution or Fc) is
followed by batch norm then the activation (``activation``, sigmoid in the paper); the last
layer of each network is not batch-normalised. The decoder ends in a sigmoid (targets are
scaled to [0, 1]); condition vectors (encoder heads and smoothers alike) end in
``condition_activation`` (sigmoid by default: the vectors stay in (0, 1), away from the zero
where the relative errors of the self-check are undefined); μ and log-variance are linear.
Convolutions pad with zeros (paper) or periodically (``padding_mode="circular"``; the cell is
periodic). Xavier-uniform weights, zero biases (:func:`latentmech.core.nn.glorot_init`).

Sampling (Eq. 1): z = μ + ε ⊙ Σ, Σ = exp(logvar / 2), ε ~ N(0, I). The paper's Eq. 2 writes
the decoder as 𝒟(z, c, w); what the decoder is given in training is ``decoder_conditions``:
the smoothers' 𝒞(c), 𝒲(w) (default: what prediction, Algorithm 1, feeds it) or the encoder's
c̄, w̄ (Fig. 2a).

Loss (Eq. 2, :func:`cvae_loss`): KL (Eq. 3) + ‖𝒟 − σ‖² + Σ_g λ_g ‖ḡ − 𝒢(g)‖² per sample,
summed over elements, averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, NamedTuple, Self

import numpy as np
import torch
from torch import nn

from latentmech.core.errors import InputError
from latentmech.core.nn import glorot_init

CONFIG_SOURCE = "cvae config"
DECODER_CONDITIONS = ("smoother", "encoder")
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
CONDITION_ACTIVATIONS = ("sigmoid", "linear")
PADDING_MODES = ("zeros", "circular")
REDUCTIONS = ("sum", "mean")
CONDITION_GRADIENTS = ("both", "encoder")
Array = np.ndarray | torch.Tensor


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class CVAEConfig:
    """Architecture of AlloyVAE; defaults are the paper's (SI Table 1, r = 4, ~2.8 × 10⁸ params).

    Widths named ``*_widths`` / ``feature_width`` are *per block* (a layer of width k has r³·k
    units); ``condition_dim`` and ``latent_dim`` are absolute. ``conditions`` lists the
    condition groups in order as (name, channels) pairs (``to_dict`` writes them as
    ``[{name: c, channels: 2}, …]``; ``from_dict`` accepts both forms).
    """

    blocks: int = 4
    conditions: tuple[tuple[str, int], ...] = (("c", 2), ("w", 9))
    target_channels: int = 6
    encoder_channels: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 3
    feature_width: int = 64
    condition_widths: tuple[int, ...] = (16, 8)
    condition_dim: int = 150
    moment_widths: tuple[int, ...] = (16,)
    latent_dim: int = 300
    smoother_channels: int = 64
    smoother_widths: tuple[int, ...] = (32,)
    decoder_widths: tuple[int, ...] = (128, 128, 128, 128)
    decoder_conditions: str = "smoother"
    batch_norm: bool = True
    activation: str = "sigmoid"
    condition_activation: str = "sigmoid"
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", _as_condition_pairs(self.conditions))
        for key in ("encoder_channels", "condition_widths", "moment_widths", "smoother_widths",
                    "decoder_widths"):  # fmt: skip
            object.__setattr__(self, key, tuple(getattr(self, key)))
        self._validate()

    def _validate(self) -> None:
        positive = {"blocks": self.blocks, "target_channels": self.target_channels,
                    "feature_width": self.feature_width, "condition_dim": self.condition_dim,
                    "latent_dim": self.latent_dim, "smoother_channels": self.smoother_channels,
                    "kernel_size": self.kernel_size}  # fmt: skip
        for key in ("encoder_channels", "condition_widths", "moment_widths", "smoother_widths",
                    "decoder_widths"):  # fmt: skip
            for i, value in enumerate(getattr(self, key)):
                positive[f"{key}[{i}]"] = value
        for key, value in positive.items():
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise InputError(CONFIG_SOURCE, key, f"expected a positive integer, got {value!r}")
        if self.kernel_size % 2 != 1:
            raise InputError(CONFIG_SOURCE, "kernel_size", f"expected an odd size (keeps the "
                             f"block grid), got {self.kernel_size}")  # fmt: skip
        if not self.encoder_channels:
            raise InputError(CONFIG_SOURCE, "encoder_channels", "expected at least one layer")
        choices = {"decoder_conditions": DECODER_CONDITIONS, "activation": tuple(ACTIVATIONS),
                   "condition_activation": CONDITION_ACTIVATIONS,
                   "padding_mode": PADDING_MODES}  # fmt: skip
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise InputError(CONFIG_SOURCE, key,
                                 f"expected one of {list(allowed)}, got {getattr(self, key)!r}")  # fmt: skip

    @property
    def n_blocks(self) -> int:
        """Blocks of one sample (r³)."""
        return self.blocks**3

    @property
    def condition_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.conditions)

    @property
    def condition_channels(self) -> dict[str, int]:
        return dict(self.conditions)

    @property
    def conditions_dim(self) -> int:
        """Length of all condition vectors side by side (Σ 150 in the paper)."""
        return self.condition_dim * len(self.conditions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping; ``from_dict(to_dict())`` gives an equal config."""
        out: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        out["conditions"] = [{"name": n, "channels": c} for n, c in self.conditions]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = CONFIG_SOURCE) -> Self:
        """Config from a mapping (JSON/YAML); unknown keys are an error, not ignored."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(source, ", ".join(unknown),
                             f"unknown cvae setting(s); known: {sorted(known)}")  # fmt: skip
        return cls(**dict(d))


def _as_condition_pairs(conditions: Any) -> tuple[tuple[str, int], ...]:
    """``[{name, channels}, …]`` or ``[(name, channels), …]`` → validated (name, channels) pairs."""
    pairs: list[tuple[str, int]] = []
    for i, item in enumerate(conditions):
        if isinstance(item, Mapping):
            extra = sorted(set(item) - {"name", "channels"})
            if extra or "name" not in item or "channels" not in item:
                raise InputError(CONFIG_SOURCE, f"conditions[{i}]",
                                 f"expected keys name and channels, got {sorted(item)}")  # fmt: skip
            name, channels = item["name"], item["channels"]
        else:
            name, channels = item
        if not isinstance(name, str) or not name.isidentifier():
            raise InputError(CONFIG_SOURCE, f"conditions[{i}].name",
                             f"expected an identifier such as 'c', got {name!r}")  # fmt: skip
        if isinstance(channels, bool) or int(channels) != channels or channels < 1:
            raise InputError(CONFIG_SOURCE, f"conditions[{i}].channels",
                             f"expected a positive integer, got {channels!r}")  # fmt: skip
        pairs.append((name, int(channels)))
    if not pairs:
        raise InputError(CONFIG_SOURCE, "conditions", "expected at least one condition group")
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names) or "target" in names:
        raise InputError(CONFIG_SOURCE, "conditions",
                         f"expected unique names other than 'target', got {names}")  # fmt: skip
    return tuple(pairs)


#: The paper's architecture (SI Table 1).
PAPER_CONFIG = CVAEConfig()
#: The demo-scale AlloyVAE of config.yaml's ``alloy.cvae.model`` for CPU training (~3.2 M
#: parameters at r = 4; a test keeps the two equal).
DEMO_CONFIG = CVAEConfig(
    encoder_channels=(8, 16, 16), feature_width=8, condition_widths=(4, 2), condition_dim=150,
    moment_widths=(4,), latent_dim=16, smoother_channels=8, smoother_widths=(8,),
    decoder_widths=(8, 8, 8, 8), padding_mode="circular",
)  # fmt: skip


def parameter_count(config: CVAEConfig) -> int:
    """Trainable parameters of :class:`AlloyCVAE` in closed form (weights, biases, BN affine)."""
    n = config.n_blocks
    k3 = config.kernel_size**3
    bn = 2 if config.batch_norm else 0

    def conv(c_in: int, c_out: int) -> int:
        return c_in * c_out * k3 + c_out + bn * c_out

    def mlp(sizes: Sequence[int]) -> int:  # hidden layers have BN, the last has none
        total = sum(a * b + b for a, b in pairwise(sizes))
        return total + bn * sum(sizes[1:-1])

    channels = [config.target_channels, *config.encoder_channels]
    encoder = sum(conv(a, b) for a, b in pairwise(channels))
    feature = config.feature_width * n
    encoder += channels[-1] * n * feature + feature + bn * feature  # Fc_feature (BN, hidden)
    head = mlp([feature, *(w * n for w in config.condition_widths), config.condition_dim])
    moments = mlp([feature + config.conditions_dim, *(w * n for w in config.moment_widths),
                   config.latent_dim])  # fmt: skip
    encoder += head * len(config.conditions) + 2 * moments
    smoother_fc = mlp([config.smoother_channels * n, *(w * n for w in config.smoother_widths),
                       config.condition_dim])  # fmt: skip
    smoothers = sum(conv(g, config.smoother_channels) + smoother_fc for _, g in config.conditions)
    decoder = mlp([config.latent_dim + config.conditions_dim,
                   *(w * n for w in config.decoder_widths), config.target_channels * n])  # fmt: skip
    return encoder + smoothers + decoder


# ---------------------------------------------------------------------------------------------
# networks


def _activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def _mlp(sizes: Sequence[int], config: CVAEConfig, last: nn.Module | None) -> nn.Sequential:
    """Fully connected layers; hidden ones followed by BN and the activation, then ``last``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(_activation(config.activation))
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


def _convs(channels: Sequence[int], config: CVAEConfig) -> nn.Sequential:
    """3D convolutions keeping the block grid, each followed by BN and the activation."""
    layers: list[nn.Module] = []
    for a, b in pairwise(channels):
        layers.append(nn.Conv3d(a, b, config.kernel_size, padding=config.kernel_size // 2,
                                padding_mode=config.padding_mode))  # fmt: skip
        if config.batch_norm:
            layers.append(nn.BatchNorm3d(b))
        layers.append(_activation(config.activation))
    return nn.Sequential(*layers)


def _condition_end(config: CVAEConfig) -> nn.Module | None:
    return nn.Sigmoid() if config.condition_activation == "sigmoid" else None


class Encoded(NamedTuple):
    """What the encoder ℰ gives for a target field: μ, log-variance and c̄, w̄, … by name."""

    mu: torch.Tensor
    logvar: torch.Tensor
    conditions: dict[str, torch.Tensor]


class Encoder(nn.Module):
    """Target (B, C, r, r, r) → μ, log σ² (B, latent) and condition vectors (B, 150) per group."""

    def __init__(self, config: CVAEConfig) -> None:
        super().__init__()
        n = config.n_blocks
        channels = [config.target_channels, *config.encoder_channels]
        feature = config.feature_width * n
        self.convs = _convs(channels, config)
        # Fc_feature is a hidden layer: BN and the activation after it
        fc_feature: list[nn.Module] = [nn.Linear(channels[-1] * n, feature)]
        if config.batch_norm:
            fc_feature.append(nn.BatchNorm1d(feature))
        self.feature = nn.Sequential(*fc_feature, _activation(config.activation))
        head = [feature, *(w * n for w in config.condition_widths), config.condition_dim]
        self.heads = nn.ModuleDict(
            {name: _mlp(head, config, _condition_end(config)) for name in config.condition_names}
        )
        moments = [feature + config.conditions_dim, *(w * n for w in config.moment_widths),
                   config.latent_dim]  # fmt: skip
        self.mu = _mlp(moments, config, None)
        self.logvar = _mlp(moments, config, None)

    def features(self, target: torch.Tensor) -> torch.Tensor:
        return self.feature(self.convs(target).flatten(1))

    def forward(self, target: torch.Tensor) -> Encoded:
        h = self.features(target)
        conditions = {name: head(h) for name, head in self.heads.items()}
        joint = torch.cat([h, *conditions.values()], dim=1)
        return Encoded(self.mu(joint), self.logvar(joint), conditions)


class Smoother(nn.Module):
    """One condition field (B, channels, r, r, r) → its smoothed vector (B, condition_dim)."""

    def __init__(self, channels: int, config: CVAEConfig) -> None:
        super().__init__()
        n = config.n_blocks
        self.conv = _convs([channels, config.smoother_channels], config)
        sizes = [config.smoother_channels * n, *(w * n for w in config.smoother_widths),
                 config.condition_dim]  # fmt: skip
        self.fc = _mlp(sizes, config, _condition_end(config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class Decoder(nn.Module):
    """Latent z (B, latent) and condition vectors → target (B, C, r, r, r) in (0, 1)."""

    def __init__(self, config: CVAEConfig) -> None:
        super().__init__()
        r = config.blocks
        self.shape = (config.target_channels, r, r, r)
        sizes = [config.latent_dim + config.conditions_dim,
                 *(w * config.n_blocks for w in config.decoder_widths),
                 config.target_channels * config.n_blocks]  # fmt: skip
        self.fc = _mlp(sizes, config, nn.Sigmoid())

    def forward(self, z: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([z, conditions], dim=1)).view(-1, *self.shape)


class CVAEOutput(NamedTuple):
    """One forward pass: reconstruction, latent moments and sample, both sets of conditions."""

    reconstruction: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    encoder_conditions: dict[str, torch.Tensor]
    smoother_conditions: dict[str, torch.Tensor]


class AlloyCVAE(nn.Module):
    """Encoder ℰ, smoothers (one per condition group) and decoder 𝒟 of AlloyVAE."""

    def __init__(self, config: CVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.smoothers = nn.ModuleDict(
            {name: Smoother(channels, config) for name, channels in config.conditions}
        )
        self.decoder = Decoder(config)
        glorot_init(self)

    def encode(self, target: torch.Tensor) -> Encoded:
        """ℰ(σ): μ, log-variance and the encoder's condition vectors c̄, w̄, …"""
        _check_field(target, self.config.target_channels, self.config.blocks, "target")
        return self.encoder(target)

    def encode_conditions(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Only the encoder's condition vectors (the self-check; skips the μ/log σ² heads)."""
        _check_field(target, self.config.target_channels, self.config.blocks, "target")
        h = self.encoder.features(target)
        return {name: head(h) for name, head in self.encoder.heads.items()}

    def smooth(self, conditions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The smoothers' vectors 𝒞(c), 𝒲(w), … of the condition fields given (any subset)."""
        channels = self.config.condition_channels
        out = {}
        for name, field_ in conditions.items():
            if name not in channels:
                raise InputError("cvae input", name, f"unknown condition group; the model's "
                                 f"are {list(channels)}")  # fmt: skip
            _check_field(field_, channels[name], self.config.blocks, name)
            out[name] = self.smoothers[name](field_)
        return out

    def decode(self, z: torch.Tensor, conditions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """𝒟(z, condition vectors): target fields (B, C, r, r, r) in (0, 1)."""
        missing = [n for n in self.config.condition_names if n not in conditions]
        if missing:
            raise InputError("cvae decode", ", ".join(missing), "missing condition vector(s)")
        joint = torch.cat([conditions[n] for n in self.config.condition_names], dim=1)
        return self.decoder(z, joint)

    def forward(
        self, target: torch.Tensor, conditions: Mapping[str, torch.Tensor],
        sample: bool | None = None,
    ) -> CVAEOutput:  # fmt: skip
        """Encode, draw z (Eq. 1), smooth the conditions and decode.

        ``sample`` None draws z = μ + ε ⊙ exp(logvar / 2) in training mode and takes z = μ in
        eval mode (deterministic reconstructions); True/False force either.
        """
        encoded = self.encode(target)
        smoothed = self.smooth({n: conditions[n] for n in self.config.condition_names})
        draw = self.training if sample is None else sample
        z = encoded.mu
        if draw:
            z = encoded.mu + torch.randn_like(encoded.mu) * torch.exp(0.5 * encoded.logvar)
        given = smoothed if self.config.decoder_conditions == "smoother" else encoded.conditions
        reconstruction = self.decode(z, given)
        return CVAEOutput(reconstruction, encoded.mu, encoded.logvar, z, encoded.conditions,
                          smoothed)  # fmt: skip


def _check_field(x: torch.Tensor, channels: int, r: int, name: str) -> None:
    if x.ndim != 5 or tuple(x.shape[1:]) != (channels, r, r, r):
        raise InputError("cvae input", name,
                         f"expected shape (B, {channels}, {r}, {r}, {r}), got {tuple(x.shape)}")  # fmt: skip


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a module."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# loss


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Eq. 3 per sample (B,): Σ_j ½(−1 + Σ_j² + μ_j² − log Σ_j²), Σ² = exp(logvar)."""
    return 0.5 * torch.sum(-1.0 + torch.exp(logvar) + mu**2 - logvar, dim=1)


def condition_weights(
    names: Sequence[str], alpha: float = 1.0, beta: float = 1.0,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Weight of each condition group's consistency term in Eq. 2.

    ``alpha`` weighs the first group (c in the paper), ``beta`` the second (w); further groups
    (e.g. an eigenstrain condition) weigh 1; ``weights`` (by name) overrides any of them.
    """
    out = {name: 1.0 for name in names}
    for name, value in zip(names, (alpha, beta), strict=False):
        out[name] = float(value)
    unknown = sorted(set(weights or {}) - set(names))
    if unknown:
        raise InputError("cvae loss", "weights", f"unknown condition group(s) {unknown}; the "
                         f"model's are {list(names)}")  # fmt: skip
    out.update({k: float(v) for k, v in (weights or {}).items()})
    return out


def _per_sample(x: torch.Tensor, reduction: str) -> torch.Tensor:
    flat = x.flatten(1)
    return flat.sum(dim=1) if reduction == "sum" else flat.mean(dim=1)


def batch_conditions(batch: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict:
    """The condition fields of a batch by the model's names; a clear error when one is missing."""
    missing = [n for n in ("target", *names) if n not in batch]
    if missing:
        raise InputError("cvae batch", ", ".join(missing),
                         f"missing field(s); the batch has {sorted(batch)}")  # fmt: skip
    return {n: batch[n] for n in names}


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def cvae_loss(
    model: nn.Module, batch: Mapping[str, torch.Tensor], alpha: float = 1.0, beta: float = 1.0,
    reduction: str = "sum", weights: Mapping[str, float] | None = None,
    kl_weight: float = 1.0, condition_gradient: str = "both",
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """Eq. 2 as a batch mean, for :class:`latentmech.core.train.Trainer`.

    Per sample: KL (Eq. 3, summed over the latent dimensions) + ‖𝒟(z, ·) − σ‖² + Σ_g λ_g ‖ḡ −
    𝒢(g)‖² (ḡ from the encoder, 𝒢(g) from the smoother, λ from :func:`condition_weights`),
    each term summed over its elements (``reduction="sum"``, the paper's norms) or averaged
    over them (``"mean"``); then the mean over the batch (the paper's Σ_i over samples, divided
    by the batch size so that the loop's batch-size-weighted means hold). ``kl_weight`` scales
    KL (1 in Eq. 2). ``batch`` maps ``"target"`` and the config's condition names to tensors
    (B, C, r, r, r). ``model`` may be the DDP wrapper (it is only called).

    ``condition_gradient``: ``"both"`` (Eq. 2 as written: the consistency terms train the
    encoder's heads and the smoothers) or ``"encoder"`` (an option, not the paper's: the
    smoothers' vectors enter the terms as constants, so the terms only teach the encoder to
    reproduce them and cannot pull the smoothers towards constant, uninformative vectors; the
    smoothers then learn from the reconstruction alone).

    Metrics: ``kl``, ``reconstruction`` and ``condition_<name>`` (the unweighted batch means of
    the terms), ``mse`` (mean squared reconstruction error per element).
    """
    if condition_gradient not in CONDITION_GRADIENTS:
        raise InputError("cvae loss", "condition_gradient",
                         f"expected one of {CONDITION_GRADIENTS}, got {condition_gradient!r}")  # fmt: skip
    if reduction not in REDUCTIONS:
        raise InputError(
            "cvae loss", "reduction", f"expected one of {REDUCTIONS}, got {reduction!r}"
        )
    config: CVAEConfig = _unwrap(model).config
    names = config.condition_names
    lambdas = condition_weights(names, alpha, beta, weights)
    out: CVAEOutput = model(batch["target"], batch_conditions(batch, names))
    target = batch["target"]
    kl = kl_divergence(out.mu, out.logvar)
    if reduction == "mean":
        kl = kl / config.latent_dim
    rec = _per_sample((out.reconstruction - target) ** 2, reduction)
    loss = kl_weight * kl + rec
    metrics = {"kl": kl.mean(), "reconstruction": rec.mean()}
    for name in names:
        smoothed = out.smoother_conditions[name]
        if condition_gradient == "encoder":
            smoothed = smoothed.detach()
        term = _per_sample((out.encoder_conditions[name] - smoothed) ** 2, reduction)
        loss = loss + lambdas[name] * term
        metrics[f"condition_{name}"] = term.mean()
    metrics["mse"] = torch.mean((out.reconstruction - target) ** 2)
    return loss.mean(), {k: float(v.detach()) for k, v in metrics.items()}


@dataclass(frozen=True)
class CVAELoss:
    """:func:`cvae_loss` with fixed weights, plus the optional periodic-roll augmentation.

    ``roll`` applies :func:`random_roll` to training batches only (``model.training``), drawing
    from the global torch RNG, which the training loop checkpoints (exact resumption holds).
    """

    alpha: float = 1.0
    beta: float = 1.0
    reduction: str = "sum"
    weights: Mapping[str, float] = field(default_factory=dict)
    kl_weight: float = 1.0
    roll: bool = False
    condition_gradient: str = "both"

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor]):
        if self.roll and model.training:
            batch = random_roll(batch)
        return cvae_loss(model, batch, self.alpha, self.beta, self.reduction, self.weights,
                         self.kl_weight, self.condition_gradient)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# data and augmentation


class BlockDataset(torch.utils.data.Dataset):
    """Samples of block fields as dicts {"target": (C, r, r, r), "c": …, "w": …}.

    ``tensors`` lists the fields (so :func:`latentmech.core.train.data_fingerprint` digests
    them); the default collate stacks a batch into a dict of (B, …) tensors.
    """

    def __init__(self, fields: Mapping[str, Array]) -> None:
        self.fields = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v,
                                          dtype=torch.float32) for k, v in fields.items()}  # fmt: skip
        sizes = {k: int(v.shape[0]) for k, v in self.fields.items()}
        if len(set(sizes.values())) != 1:
            raise InputError("cvae dataset", "fields", f"the same number of samples in every "
                             f"field, got {sizes}")  # fmt: skip
        self.tensors = tuple(self.fields[k] for k in sorted(self.fields))
        self._n = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.fields.items()}


def random_roll(
    batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Roll every block field of each sample by the same random whole-block shift (dx, dy, dz).

    An extension (not in the paper): the atomistic cell is periodic, so a cyclic shift of the
    block grid gives another valid sample with the same statistics. Each sample b draws its
    shift s_b ∈ {0, …, r−1}³ (from ``generator``, else the global torch RNG); every 5D entry
    (B, C, r, r, r) of the batch is rolled like ``torch.roll(x[b], s_b, dims=(1, 2, 3))``;
    other entries pass through unchanged.
    """
    fields = {k: v for k, v in batch.items() if torch.is_tensor(v) and v.ndim == 5}
    if not fields:
        return dict(batch)
    first = next(iter(fields.values()))
    b, r = first.shape[0], first.shape[-1]
    for key, value in fields.items():
        if value.shape[0] != b or tuple(value.shape[2:]) != (r, r, r):
            raise InputError("random_roll", key, f"expected (B={b}, C, {r}, {r}, {r}), got "
                             f"{tuple(value.shape)}")  # fmt: skip
    shifts = torch.randint(0, r, (b, 3), generator=generator).to(first.device)
    grid = torch.arange(r, device=first.device)
    ix, iy, iz = ((grid[None, :] - shifts[:, i : i + 1]) % r for i in range(3))  # (B, r) each
    rows = torch.arange(b, device=first.device)[:, None, None, None]
    index = (rows, ix[:, :, None, None], iy[:, None, :, None], iz[:, None, None, :])
    out = dict(batch)
    for key, value in fields.items():
        out[key] = value.permute(0, 2, 3, 4, 1)[index].permute(0, 4, 1, 2, 3).contiguous()
    return out


# ---------------------------------------------------------------------------------------------
# scaling


@dataclass(frozen=True)
class MinMax:
    """Per-channel min–max scaling to [0, 1] (section 4.1.1), fitted on the training data.

    ``transform(x) = (x − min) / (max − min)`` per channel, ``inverse`` undoes it; both take
    numpy arrays or torch tensors (differentiable, on the tensor's device and dtype). The
    channel axis of ``x`` is ``axis`` (default: the one fitted on, 1 for (N, C, …) data; pass
    0 for one sample (C, …) or a vector of C values). A channel that is constant in the
    training data (max = min) is scaled by 1 (it maps to 0), not divided by zero. NaNs in the
    training data are ignored by ``fit``.
    """

    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    axis: int = 1

    def __post_init__(self) -> None:
        if len(self.minimum) != len(self.maximum) or not self.minimum:
            raise InputError("min-max scaler", "minimum/maximum",
                             f"the same positive number of channels, got {len(self.minimum)} "
                             f"and {len(self.maximum)}")  # fmt: skip
        object.__setattr__(self, "minimum", tuple(float(v) for v in self.minimum))
        object.__setattr__(self, "maximum", tuple(float(v) for v in self.maximum))

    @classmethod
    def fit(cls, data: Array, axis: int = 1) -> MinMax:
        """Minimum and maximum of each channel (along ``axis``) over all other axes."""
        values = np.moveaxis(np.asarray(data, dtype=np.float64), axis, 0)
        flat = values.reshape(values.shape[0], -1)
        empty = np.all(np.isnan(flat), axis=1) if flat.size else np.ones(flat.shape[0], bool)
        if empty.any():
            raise InputError("min-max scaler", f"channel(s) {np.flatnonzero(empty).tolist()}",
                             "finite training values to fit on (all NaN or empty)")  # fmt: skip
        return cls(tuple(np.nanmin(flat, axis=1)), tuple(np.nanmax(flat, axis=1)), axis)

    @property
    def channels(self) -> int:
        return len(self.minimum)

    def select(self, channels: Sequence[int]) -> MinMax:
        """The scaler of a subset of channels (e.g. the 2 independent concentrations)."""
        idx = list(channels)
        return MinMax(tuple(self.minimum[i] for i in idx), tuple(self.maximum[i] for i in idx),
                      self.axis)  # fmt: skip

    def _stats(self, x: Array, axis: int | None) -> tuple[Array, Array]:
        axis = self.axis if axis is None else axis
        ndim = x.ndim
        axis = axis % ndim if ndim else 0
        if ndim == 0 or x.shape[axis] != self.channels:
            raise InputError("min-max scaler", f"axis {axis}",
                             f"{self.channels} channels, got shape {tuple(x.shape)}")  # fmt: skip
        shape = [1] * ndim
        shape[axis] = self.channels
        lo = np.asarray(self.minimum)
        scale = np.asarray(self.maximum) - lo
        scale = np.where(scale == 0, 1.0, scale)
        if torch.is_tensor(x):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            lo_t = torch.as_tensor(lo, dtype=dtype, device=x.device).view(shape)
            return lo_t, torch.as_tensor(scale, dtype=dtype, device=x.device).view(shape)
        return lo.reshape(shape), scale.reshape(shape)

    def transform(self, x: Array, axis: int | None = None) -> Array:
        """Physical values → [0, 1] (on the training range)."""
        lo, scale = self._stats(x, axis)
        return (x - lo) / scale

    def inverse(self, x: Array, axis: int | None = None) -> Array:
        """Scaled values → physical values."""
        lo, scale = self._stats(x, axis)
        return x * scale + lo

    def to_dict(self) -> dict[str, Any]:
        return {"minimum": list(self.minimum), "maximum": list(self.maximum), "axis": self.axis}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MinMax:
        unknown = sorted(set(d) - {"minimum", "maximum", "axis"})
        if unknown or "minimum" not in d or "maximum" not in d:
            raise InputError("min-max scaler", ", ".join(unknown) or "keys",
                             "expected keys minimum, maximum and optionally axis")  # fmt: skip
        return cls(tuple(d["minimum"]), tuple(d["maximum"]), int(d.get("axis", 1)))


# ---------------------------------------------------------------------------------------------
# metrics


def condition_mre(predicted: Array, reference: Array) -> Array:
    """Per row: the mean over the condition vector (last axis) of |pred − ref| / |ref|.

    MRE(c̄*, c̄) of Algorithm 1 and the condition-prediction MRE between the encoder's c̄, w̄
    and the smoothers' 𝒞(c), 𝒲(w) (Fig. 5). numpy in → numpy out, torch in → torch out.
    """
    if torch.is_tensor(predicted):
        return ((predicted - reference).abs() / reference.abs()).mean(dim=-1)
    pred, ref = _numpy(predicted), _numpy(reference)
    return np.mean(np.abs(pred - ref) / np.abs(ref), axis=-1)


def _numpy(x: Array) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)
