"""The fingerprint → stress surrogate: architecture, config, min–max scaler, loss through the
project's Trainer on a smooth synthetic mapping, prediction, timing and hand-computed errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from latentmech.core.errors import InputError
from latentmech.core.train import Trainer, TrainSettings, load_checkpoint
from latentmech.ve.surrogate import (
    MinMaxScaler,
    Surrogate,
    SurrogateConfig,
    evaluate,
    predict,
    prediction_time_per_curve,
    single_curve_latency,
    surrogate_loss,
    tensor_dataset,
)

# ---------------------------------------------------------------------------------------------
# configuration and model


def test_config_defaults_round_trip_and_unknown_keys() -> None:
    config = SurrogateConfig(in_features=256)
    assert (config.hidden, config.outputs, config.negative_slope) == (512, 21, 0.01)
    stored = json.loads(json.dumps(config.to_dict()))
    assert SurrogateConfig.from_dict(stored) == config
    with pytest.raises(InputError, match="hiden"):
        SurrogateConfig.from_dict({"in_features": 8, "hiden": 4})
    with pytest.raises(InputError, match="in_features"):
        SurrogateConfig.from_dict({"hidden": 4})
    with pytest.raises(InputError, match="positive integer"):
        SurrogateConfig(in_features=0)
    with pytest.raises(InputError, match="negative_slope"):
        SurrogateConfig(in_features=3, negative_slope=-0.1)


def test_surrogate_layers_shapes_and_sigmoid_range() -> None:
    torch.manual_seed(0)
    model = Surrogate(SurrogateConfig(in_features=256))
    layers = list(model.net)
    assert [type(layer) for layer in layers] == [nn.Linear, nn.LeakyReLU, nn.Linear, nn.Sigmoid]
    assert (layers[0].in_features, layers[0].out_features) == (256, 512)
    assert (layers[2].in_features, layers[2].out_features) == (512, 21)
    assert layers[1].negative_slope == 0.01
    assert sum(p.numel() for p in model.parameters()) == 256 * 512 + 512 + 512 * 21 + 21
    with torch.no_grad():
        out = model(100.0 * torch.randn(64, 256))  # huge inputs saturate, still within [0, 1]
    assert out.shape == (64, 21)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.min()) < 0.01 and float(out.max()) > 0.99
    # leaky ReLU with the configured slope: a negative pre-activation is scaled, not zeroed
    slope = Surrogate(SurrogateConfig(in_features=2, hidden=3, negative_slope=0.2)).net[1]
    np.testing.assert_allclose(slope(torch.tensor([-1.0, 2.0])).numpy(), [-0.2, 2.0])


# ---------------------------------------------------------------------------------------------
# scaler


def _curves(n: int, rng: np.random.Generator) -> np.ndarray:
    """Stress curves (n, 21) in MPa, 0 at the first point (unloaded), rising with strain."""
    strain = np.linspace(0.0, 0.01, 21)
    level = rng.uniform(80.0, 200.0, size=(n, 1))
    return level * np.tanh(strain * 45_000.0 / level)


def test_global_scaler_round_trip_and_range() -> None:
    stresses = _curves(50, np.random.default_rng(1))
    scaler = MinMaxScaler.fit(stresses)
    assert scaler.minimum.shape == () and float(scaler.minimum) == stresses.min()
    scaled = scaler.transform(stresses)
    assert scaled.min() == 0.0 and scaled.max() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(scaler.inverse_transform(scaled), stresses, rtol=1e-12, atol=1e-10)
    # one global affine map: the ratio of two points of a curve is kept (min is 0 here)
    np.testing.assert_allclose(scaled[:, 10] / scaled[:, 20], stresses[:, 10] / stresses[:, 20])
    stored = MinMaxScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(stored.transform(stresses), scaled)
    # tensors are scaled like arrays, in their own dtype
    tensor = scaler.transform(torch.tensor(stresses, dtype=torch.float32))
    assert tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.numpy(), scaled, atol=1e-6)


def test_per_increment_scaler_and_constant_column() -> None:
    stresses = _curves(40, np.random.default_rng(2))
    scaler = MinMaxScaler.fit(stresses, per_increment=True)
    assert scaler.minimum.shape == (21,)
    scaled = scaler.transform(stresses)
    # column 0 is constant (0 MPa): range taken as 1, so it stays 0 instead of dividing by zero
    np.testing.assert_array_equal(scaled[:, 0], 0.0)
    np.testing.assert_allclose(scaled[:, 1:].min(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(scaled[:, 1:].max(axis=0), 1.0)
    np.testing.assert_allclose(scaler.inverse_transform(scaled), stresses, rtol=1e-12, atol=1e-10)
    stored = MinMaxScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert stored.per_increment
    np.testing.assert_array_equal(stored.transform(stresses), scaled)
    with pytest.raises(InputError, match="non-finite"):
        MinMaxScaler.fit(np.array([[1.0, np.nan]]))


# ---------------------------------------------------------------------------------------------
# training through the project's loop


def _synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fingerprints (n, 16) and curves (n, 21) in MPa whose yield level and hardening depend
    smoothly on the first three fingerprint components (the rest is noise to ignore)."""
    z = rng.normal(size=(n, 16))
    strain = np.linspace(0.0, 0.01, 21)
    level = 140.0 + 25.0 * np.tanh(z[:, :1]) + 15.0 * z[:, 1:2] / (1 + z[:, 1:2] ** 2)
    hardening = 2000.0 + 800.0 * np.sin(z[:, 2:3])
    stress = level * np.tanh(strain * 45_000.0 / level) + hardening * strain
    return z, stress


def test_surrogate_learns_a_smooth_mapping_through_the_trainer(tmp_path) -> None:
    rng = np.random.default_rng(0)
    z, stress = _synthetic(800, rng)
    scaler = MinMaxScaler.fit(stress)  # the whole dataset, before splitting (as the paper)
    scaled = scaler.transform(stress)
    train, test = slice(0, 600), slice(600, 800)
    model = Surrogate(SurrogateConfig(in_features=16, hidden=64))
    settings = TrainSettings(epochs=120, batch_size=64, lr=1e-2, device="cpu", seed=0)
    result = Trainer(model, surrogate_loss, settings, tmp_path).fit(
        tensor_dataset(z[train], scaled[train]), tensor_dataset(z[test], scaled[test])
    )
    assert result.epochs_run == 120 and "val_mse" in result.history[-1]
    best = Surrogate(model.config)
    best.load_state_dict(load_checkpoint(result.best_path)["model"])
    predicted = predict(best, z[test], batch_size=37)
    test_mse = float(np.mean((predicted - scaled[test]) ** 2))
    assert test_mse == pytest.approx(result.best_val_loss, rel=1e-4)
    baseline = float(np.mean((scaled[train].mean(axis=0) - scaled[test]) ** 2))
    assert test_mse < 1.5e-4 and test_mse < baseline / 25, (test_mse, baseline)
    summary, table = evaluate(stress[test], scaler.inverse_transform(predicted), scaler)
    assert summary["mse_scaled"] == pytest.approx(test_mse, rel=1e-4)
    assert summary["mae_mpa"] < 2.0  # MPa, for curves spanning ~0–180 MPa
    assert len(table) == 21


def test_surrogate_loss_is_the_batch_mse() -> None:
    torch.manual_seed(1)
    model = Surrogate(SurrogateConfig(in_features=5, hidden=7, outputs=3))
    x, y = torch.randn(10, 5), torch.rand(10, 3)
    loss, metrics = surrogate_loss(model, (x, y))
    expected = float(((model(x) - y) ** 2).mean().detach())
    assert float(loss.detach()) == pytest.approx(expected) and metrics["mse"] == pytest.approx(
        expected
    )
    loss.backward()
    assert model.net[0].weight.grad is not None


def test_predict_matches_forward_and_timing_is_positive() -> None:
    torch.manual_seed(2)
    model = Surrogate(SurrogateConfig(in_features=8, hidden=16))
    z = np.random.default_rng(3).normal(size=(100, 8))
    with torch.no_grad():
        direct = model(torch.tensor(z, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(predict(model, z, batch_size=7), direct, rtol=1e-6)
    np.testing.assert_allclose(predict(model, z, batch_size=1000), direct, rtol=1e-6)
    assert model.training  # predict restores the mode it found
    per_curve = prediction_time_per_curve(model, z, repeats=3)
    latency = single_curve_latency(model, z[0], repeats=3)
    assert 0.0 < per_curve < np.inf and 0.0 < latency < np.inf
    with pytest.raises(InputError):
        prediction_time_per_curve(model, z[:0])


# ---------------------------------------------------------------------------------------------
# evaluation


def test_evaluate_on_hand_computed_arrays() -> None:
    true = np.array([[0.0, 10.0, 20.0], [20.0, 30.0, 40.0]])
    pred = np.array([[1.0, 10.0, 26.0], [17.0, 34.0, 40.0]])
    # absolute errors [[1, 0, 6], [3, 4, 0]]; squared [[1, 0, 36], [9, 16, 0]]
    scaler = MinMaxScaler.fit(true)  # 0 … 40 MPa
    summary, table = evaluate(true, pred, scaler, strain=np.array([0.0, 0.005, 0.01]))
    np.testing.assert_allclose(table["mae_mpa"], [2.0, 2.0, 3.0])
    np.testing.assert_allclose(table["abs_error_std_mpa"], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(table["mse_mpa2"], [5.0, 8.0, 18.0])
    np.testing.assert_allclose(table["mse_scaled"], np.array([5.0, 8.0, 18.0]) / 1600.0)
    np.testing.assert_array_equal(table["strain"], [0.0, 0.005, 0.01])
    assert summary["n_curves"] == 2
    assert summary["mse_mpa2"] == pytest.approx(62.0 / 6.0)
    assert summary["rmse_mpa"] == pytest.approx(np.sqrt(62.0 / 6.0))
    assert summary["mse_scaled"] == pytest.approx(62.0 / 6.0 / 1600.0)
    assert summary["mae_mpa"] == pytest.approx(14.0 / 6.0)
    assert summary["mae_mpa_std_increments"] == pytest.approx(np.sqrt(2.0 / 9.0))  # std(2, 2, 3)
    assert summary["mae_mpa_std_curves"] == pytest.approx(2.0)  # mean(1, 2, 3)
    assert summary["max_abs_error_mpa"] == 6.0
    mean = 14.0 / 6.0
    all_abs = np.array([1, 0, 6, 3, 4, 0])
    assert summary["abs_error_std_mpa"] == pytest.approx(np.sqrt(np.mean((all_abs - mean) ** 2)))
    with pytest.raises(InputError, match="equal"):
        evaluate(true, pred[:, :2], scaler)
    with pytest.raises(InputError, match="strain"):
        evaluate(true, pred, scaler, strain=np.zeros(4))
