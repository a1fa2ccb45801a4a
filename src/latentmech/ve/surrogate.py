"""The fingerprint → stress–strain surrogate of the VE paper (section 2.4) and its evaluation.

What the paper states (kept): a fully connected network whose input size is the fingerprint's,
one hidden layer of 512 with leaky ReLU, and an output layer of 21 with sigmoid (the normalised
volume-averaged stress at each of the 21 points of the curve: the initial state and the 20 strain
increments); the loss is the mean-squared error against the min–max-scaled stresses; Adam with
lr 1e-5, weight decay 1e-5, batch 128 (those live in the training settings, not here). Stresses
are "normalised using min-max scaling, across the whole dataset, to a range of [0, 1], prior to
splitting the dataset".

Where the paper is silent or ambiguous (our choices, all configurable):

* Leaky ReLU slope: PyTorch's default 0.01 (``negative_slope``); weights: PyTorch's default
  initialisation of ``nn.Linear`` (the paper names no other).
* Min–max scaling "across the whole dataset": by default **one** global minimum and maximum over
  all VEs and all increments together (:class:`MinMaxScaler`, ``per_increment=False``), which
  keeps the shape of a curve (a scaled curve is an affine image of the curve in MPa). The
  alternative, a minimum and maximum per increment (column), is ``per_increment=True``. A range
  of zero (a constant dataset or column, e.g. the unloaded first point of every curve) is taken
  as 1: that part is only shifted, never divided by zero. The fit belongs to the whole dataset
  (train and test), as the paper does; a caller who prefers a training-only fit passes only the
  training curves to :meth:`MinMaxScaler.fit`.
* Errors (:func:`evaluate`): the paper's "mean relative error" (Fig. 11c, "2.75 ± 0.46 MPa") is
  defined there as E(|y − ŷ|) in MPa, i.e. a **mean absolute error**; it is named so here. Its
  "±" is "the standard deviation of the mean relative error across each time step", i.e. the
  standard deviation over increments of the per-increment MAE (``mae_mpa_std_increments``), and
  the paper quotes separately the mean over increments of the per-increment standard deviation
  over VEs (2.35 there; ``mae_mpa_std_curves``). Both are reported; standard deviations are
  population ones (ddof = 0).
* Prediction time: a batched forward pass over all curves divided by their number, best of a few
  repeats (the least disturbed by other processes), and separately the latency of one curve.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from latentmech.core.errors import InputError
from latentmech.core.jsonconfig import JsonConfig

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

_CONFIG_SOURCE = "surrogate config"


# ---------------------------------------------------------------------------------------------
# model


@dataclass(frozen=True)
class SurrogateConfig(JsonConfig):
    """Architecture of the surrogate; stored as JSON beside the checkpoint."""

    in_features: int  # fingerprint size (the VAE's latent size)
    hidden: int = 512
    outputs: int = 21  # points of the stress–strain curve: initial state + 20 increments
    negative_slope: float = 0.01  # leaky ReLU slope (PyTorch's default)

    def __post_init__(self) -> None:
        """Reject sizes that cannot build a network."""
        for key in ("in_features", "hidden", "outputs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(_CONFIG_SOURCE, key, f"expected a positive integer, got {value!r}")
        slope = self.negative_slope
        if not isinstance(slope, int | float) or isinstance(slope, bool) or not slope >= 0:
            raise InputError(
                _CONFIG_SOURCE, "negative_slope", f"expected a number ≥ 0, got {slope!r}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = _CONFIG_SOURCE) -> Self:
        """Build from a mapping (a config section or a sidecar); unknown keys raise InputError."""
        if not isinstance(d, Mapping):
            raise InputError(source, "", f"expected a mapping of settings, got {d!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in set(d) - set(known))
        if unknown:
            raise InputError(source, unknown[0], f"unknown setting; expected one of {known}")
        if "in_features" not in d:
            raise InputError(source, "in_features", "missing (the fingerprint size)")
        try:
            return super().from_dict(dict(d))
        except InputError as err:
            raise InputError(source, err.where, err.problem) from None


class Surrogate(nn.Module):
    """Fingerprint (B, in_features) → normalised stress curve (B, outputs) in (0, 1)."""

    def __init__(self, config: SurrogateConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.in_features, config.hidden),
            nn.LeakyReLU(config.negative_slope),
            nn.Linear(config.hidden, config.outputs),
            nn.Sigmoid(),
        )

    def forward(self, fingerprints: torch.Tensor) -> torch.Tensor:
        return self.net(fingerprints)


def surrogate_loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Batch-mean MSE between predicted and scaled true stresses, for the Trainer.

    ``batch`` is ``(fingerprints (B, F), scaled stresses (B, outputs))``, e.g. from
    :func:`tensor_dataset`.
    """
    fingerprints, target = batch
    mse = nn.functional.mse_loss(model(fingerprints), target)
    return mse, {"mse": float(mse.detach())}


def tensor_dataset(
    fingerprints: np.ndarray, scaled_stresses: np.ndarray
) -> torch.utils.data.TensorDataset:
    """Float32 ``TensorDataset`` of (fingerprint, scaled curve) pairs for the Trainer."""
    fingerprints = np.asarray(fingerprints)
    scaled_stresses = np.asarray(scaled_stresses)
    if fingerprints.ndim != 2 or scaled_stresses.ndim != 2:
        raise InputError(
            "surrogate data", "shapes",
            f"expected fingerprints (N, F) and stresses (N, P), got {fingerprints.shape} and "
            f"{scaled_stresses.shape}",
        )  # fmt: skip
    if len(fingerprints) != len(scaled_stresses):
        raise InputError(
            "surrogate data", "lengths",
            f"{len(fingerprints)} fingerprints but {len(scaled_stresses)} stress curves",
        )  # fmt: skip
    return torch.utils.data.TensorDataset(
        torch.as_tensor(fingerprints, dtype=torch.float32),
        torch.as_tensor(scaled_stresses, dtype=torch.float32),
    )


# ---------------------------------------------------------------------------------------------
# stress scaling


@dataclass
class MinMaxScaler:
    """Min–max scaling of stress curves (N, P) to [0, 1]; see the module docstring.

    ``minimum`` and ``maximum`` are 0-d (global) or (P,) (``per_increment``) arrays.
    """

    minimum: np.ndarray
    maximum: np.ndarray
    per_increment: bool = False

    def __post_init__(self) -> None:
        self.minimum = np.asarray(self.minimum, dtype=np.float64)
        self.maximum = np.asarray(self.maximum, dtype=np.float64)
        expected = 1 if self.per_increment else 0
        if self.minimum.shape != self.maximum.shape or self.minimum.ndim != expected:
            raise InputError(
                "stress scaler", "minimum/maximum",
                f"expected {'(P,)' if self.per_increment else 'scalar'} bounds, got "
                f"{self.minimum.shape} and {self.maximum.shape}",
            )  # fmt: skip
        if not (np.all(np.isfinite(self.minimum)) and np.all(self.maximum >= self.minimum)):
            raise InputError("stress scaler", "minimum/maximum", "expected finite min ≤ max")

    @classmethod
    def fit(cls, stresses: np.ndarray, per_increment: bool = False) -> MinMaxScaler:
        """Bounds of ``stresses`` (N, P): over everything, or per column with ``per_increment``."""
        stresses = np.asarray(stresses, dtype=np.float64)
        if stresses.ndim != 2 or stresses.shape[0] == 0:
            raise InputError(
                "stresses", "shape", f"expected (curves, increments) with ≥ 1 curve, got "
                f"{stresses.shape}"
            )  # fmt: skip
        if not np.all(np.isfinite(stresses)):
            raise InputError("stresses", "values", "non-finite stress (unconverged simulation?)")
        axis = 0 if per_increment else None
        return cls(stresses.min(axis=axis), stresses.max(axis=axis), per_increment)

    @property
    def scale(self) -> np.ndarray:
        """max − min, with a zero range taken as 1 (see the module docstring)."""
        span = self.maximum - self.minimum
        return np.where(span > 0, span, 1.0)

    def transform(self, stresses: ArrayOrTensor) -> ArrayOrTensor:
        """MPa → [0, 1] (on the fitted data), for (…, P) arrays or tensors."""
        minimum, scale = self._like(stresses)
        return (stresses - minimum) / scale

    def inverse_transform(self, scaled: ArrayOrTensor) -> ArrayOrTensor:
        """[0, 1] → MPa, for (…, P) arrays or tensors (e.g. the surrogate's outputs)."""
        minimum, scale = self._like(scaled)
        return scaled * scale + minimum

    def _like(self, values: ArrayOrTensor) -> tuple[Any, Any]:
        if isinstance(values, torch.Tensor):
            kwargs = {"dtype": values.dtype, "device": values.device}
            return torch.as_tensor(self.minimum, **kwargs), torch.as_tensor(self.scale, **kwargs)
        return self.minimum, self.scale

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for the model sidecar."""
        return {
            "minimum": self.minimum.tolist(),
            "maximum": self.maximum.tolist(),
            "per_increment": self.per_increment,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MinMaxScaler:
        missing = sorted({"minimum", "maximum"} - set(d))
        if missing:
            raise InputError("stress scaler", missing[0], "missing from the stored scaler")
        per_increment = bool(d.get("per_increment", False))
        return cls(np.asarray(d["minimum"]), np.asarray(d["maximum"]), per_increment)


# ---------------------------------------------------------------------------------------------
# prediction and timing


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict(model: nn.Module, fingerprints: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Scaled stress curves (N, outputs) of fingerprints (N, F), in batches, in eval mode."""
    fingerprints = np.asarray(fingerprints, dtype=np.float32)
    was_training = model.training
    model.eval()
    device = _device_of(model)
    parts = [
        model(torch.from_numpy(fingerprints[start : start + batch_size]).to(device)).cpu().numpy()
        for start in range(0, len(fingerprints), batch_size)
    ]
    model.train(was_training)
    if not parts:
        return np.empty((0, model.config.outputs), dtype=np.float32)
    return np.concatenate(parts)


@torch.no_grad()
def _best_time(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Shortest wall time of ``repeats`` forward passes of ``x`` (after one warm-up)."""

    def sync() -> None:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    was_training = model.training
    model.eval()
    model(x)
    sync()
    best = np.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        model(x)
        sync()
        best = min(best, time.perf_counter() - start)
    model.train(was_training)
    return float(best)


def prediction_time_per_curve(
    model: nn.Module, fingerprints: np.ndarray, repeats: int = 5
) -> float:
    """Seconds per curve: one batched forward pass over all ``fingerprints``, best of ``repeats``,
    divided by their number (the paper: O(1e-5) s per curve)."""
    x = torch.as_tensor(np.asarray(fingerprints), dtype=torch.float32, device=_device_of(model))
    if len(x) == 0:
        raise InputError("fingerprints", "shape", "no fingerprint to time the prediction on")
    return _best_time(model, x, repeats) / len(x)


def single_curve_latency(model: nn.Module, fingerprint: np.ndarray, repeats: int = 50) -> float:
    """Seconds to predict one curve from one fingerprint (F,) or (1, F), best of ``repeats``."""
    x = torch.as_tensor(np.asarray(fingerprint), dtype=torch.float32, device=_device_of(model))
    return _best_time(model, x.reshape(1, -1), repeats)


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate(
    true_mpa: np.ndarray, pred_mpa: np.ndarray, scaler: MinMaxScaler,
    strain: np.ndarray | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:  # fmt: skip
    """Errors of predicted curves against true ones, both (N, P) in MPa.

    Returns a summary and a per-increment table (Fig. 11c). The summary holds ``n_curves``,
    ``mse_scaled`` (MSE on the scaler's [0, 1] values: the training loss's scale), ``mse_mpa2``,
    ``rmse_mpa``, ``mae_mpa`` (mean absolute error over every curve and increment; the paper's
    "mean relative error"), ``mae_mpa_std_increments`` (standard deviation over increments of the
    per-increment MAE: the paper's "±"), ``mae_mpa_std_curves`` (mean over increments of the
    standard deviation over curves), ``abs_error_std_mpa`` (standard deviation of all absolute
    errors) and ``max_abs_error_mpa``. The table has one row per increment: ``increment``,
    ``strain`` (when given), ``mae_mpa``, ``abs_error_std_mpa`` (over curves: the shaded band),
    ``mse_mpa2`` and ``mse_scaled``.
    """
    true_mpa = np.asarray(true_mpa, dtype=np.float64)
    pred_mpa = np.asarray(pred_mpa, dtype=np.float64)
    if true_mpa.ndim != 2 or true_mpa.shape != pred_mpa.shape or true_mpa.shape[0] == 0:
        raise InputError(
            "surrogate evaluation", "true/predicted stresses",
            f"expected two equal (curves, increments) arrays, got {true_mpa.shape} and "
            f"{pred_mpa.shape}",
        )  # fmt: skip
    error = pred_mpa - true_mpa
    absolute = np.abs(error)
    scaled_sq = (scaler.transform(pred_mpa) - scaler.transform(true_mpa)) ** 2
    per_increment_mae = absolute.mean(axis=0)
    per_increment_std = absolute.std(axis=0)
    table = pd.DataFrame({"increment": np.arange(true_mpa.shape[1])})
    if strain is not None:
        strain = np.asarray(strain, dtype=np.float64)
        if strain.shape != (true_mpa.shape[1],):
            raise InputError(
                "surrogate evaluation", "strain",
                f"expected one strain per increment ({true_mpa.shape[1]},), got {strain.shape}",
            )  # fmt: skip
        table["strain"] = strain
    table["mae_mpa"] = per_increment_mae
    table["abs_error_std_mpa"] = per_increment_std
    table["mse_mpa2"] = (error**2).mean(axis=0)
    table["mse_scaled"] = scaled_sq.mean(axis=0)
    mse_mpa2 = float(np.mean(error**2))
    summary = {
        "n_curves": float(true_mpa.shape[0]),
        "mse_scaled": float(scaled_sq.mean()),
        "mse_mpa2": mse_mpa2,
        "rmse_mpa": float(np.sqrt(mse_mpa2)),
        "mae_mpa": float(absolute.mean()),
        "mae_mpa_std_increments": float(per_increment_mae.std()),
        "mae_mpa_std_curves": float(per_increment_std.mean()),
        "abs_error_std_mpa": float(absolute.std()),
        "max_abs_error_mpa": float(absolute.max()),
    }
    return summary, table
