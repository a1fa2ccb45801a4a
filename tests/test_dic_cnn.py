"""The property-prediction CNN: encoding against its closed form, wiring of the strain and stress
inputs, crop tiling and extraction against explicit slicing, standardisation, latent sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentmech.dic.cnn import (
    PropertyCNN,
    PropertyCNNConfig,
    Standardizer,
    crop_means,
    crop_origins,
    extract_crops,
    sample_latent,
    sinusoidal_encoding,
)

SMALL = PropertyCNNConfig(
    latent_dim=4, crop=5, widths=(8, 12), encoding_dim=16, strain_depth=1, stress_depth=2, hidden=16
)


def _numpy_encoding(values: np.ndarray, dim: int, scale: float, max_period: float) -> np.ndarray:
    rows = []
    for v in values:
        p = v * scale
        sines = [np.sin(p / max_period ** (2 * i / dim)) for i in range(dim // 2)]
        cosines = [np.cos(p / max_period ** (2 * i / dim)) for i in range(dim // 2)]
        rows.append(sines + cosines)
    return np.array(rows)


# ---------------------------------------------------------------------------------------------
# encoding


def test_encoding_matches_the_closed_form() -> None:
    values = np.array([0.0, 0.1, 0.2, 0.37, 1.0])
    for scale, max_period in ((1000.0, 10000.0), (50.0, 100.0)):
        got = sinusoidal_encoding(torch.tensor(values), 8, scale, max_period)
        np.testing.assert_allclose(got.numpy(), _numpy_encoding(values, 8, scale, max_period))
    encoding = sinusoidal_encoding(torch.tensor([0.0, 0.1, 0.2], dtype=torch.float32), 32)
    assert encoding.shape == (3, 32) and encoding.dtype == torch.float32
    assert torch.equal(encoding[0], torch.cat([torch.zeros(16), torch.ones(16)]))
    assert float((encoding[1] - encoding[2]).abs().max()) > 0.1


def test_encoding_rejects_odd_dim() -> None:
    with pytest.raises(ValueError, match="even"):
        sinusoidal_encoding(torch.zeros(3), 7)


# ---------------------------------------------------------------------------------------------
# configuration and model


def test_config_round_trip_and_validation() -> None:
    config = PropertyCNNConfig()
    assert config.n_convs == 4
    assert PropertyCNNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"needs .* 4 unpadded"):
        PropertyCNNConfig(widths=(8, 8, 8))
    with pytest.raises(ValueError, match="must differ"):
        PropertyCNNConfig(strain_depth=2, stress_depth=2)
    with pytest.raises(ValueError, match="odd"):
        PropertyCNNConfig(crop=8)
    with pytest.raises(ValueError, match=r"stress_depth must be in 1\.\.4"):
        PropertyCNNConfig(stress_depth=5)
    with pytest.raises(ValueError, match="strain_depth must be in"):
        PropertyCNNConfig(strain_depth=0)
    with pytest.raises(ValueError, match="must differ"):
        PropertyCNNConfig(crop=3, widths=(8,), stress_depth=1)  # one convolution: one depth only


def test_output_shapes_and_unpadded_stride_free_convolutions() -> None:
    for config in (PropertyCNNConfig(), SMALL):
        model = PropertyCNN(config).eval()
        latent = torch.randn(3, config.latent_dim, config.crop, config.crop)
        out = model(latent, torch.rand(3), torch.rand(3))
        assert out.shape == (3, 6)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == config.n_convs
        assert all(c.kernel_size == (3, 3) and c.padding == (0, 0) for c in convs)
        assert all(c.stride == (1, 1) for c in convs)
    with pytest.raises(ValueError, match="expected latent"):
        model(torch.randn(3, 4, 7, 7), torch.rand(3), torch.rand(3))


def test_strain_and_stress_each_change_the_output_and_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = PropertyCNN(SMALL).eval()
    latent = torch.randn(4, 4, 5, 5)
    strain, stress = torch.full((4,), 0.3), torch.full((4,), 0.5)
    with torch.no_grad():
        reference = model(latent, strain, stress)
        assert torch.equal(model(latent, strain, stress), reference)
        assert float((model(latent, strain + 0.05, stress) - reference).abs().min()) > 0
        assert float((model(latent, strain, stress + 0.05) - reference).abs().min()) > 0
        model.train()
        assert not torch.equal(model(latent, strain, stress), model(latent, strain, stress))


def test_gradients_reach_both_encoding_projections() -> None:
    torch.manual_seed(1)
    model = PropertyCNN(SMALL).eval()
    out = model(torch.randn(4, 4, 5, 5), torch.rand(4), torch.rand(4))
    out.pow(2).sum().backward()
    assert float(model.strain_proj.weight.grad.abs().sum()) > 0
    assert float(model.stress_proj.weight.grad.abs().sum()) > 0


def test_tiny_fit_through_the_stress_path() -> None:
    """One latent crop shared by every sample: only the stress input can explain the target."""
    torch.manual_seed(0)
    config = PropertyCNNConfig(
        latent_dim=4,
        crop=5,
        widths=(8, 12),
        encoding_dim=16,
        stress_depth=2,
        hidden=16,
        dropout=0.0,
        n_outputs=1,
    )
    model = PropertyCNN(config)
    n = 64
    latent = torch.randn(1, 4, 5, 5).expand(n, -1, -1, -1)
    strain, stress = torch.full((n,), 0.4), torch.rand(n)
    target = (2 * stress - 1)[:, None]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        optimiser.zero_grad()
        loss = torch.mean((model(latent, strain, stress) - target) ** 2)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 10


# ---------------------------------------------------------------------------------------------
# crops


def test_crop_origins_tile_with_bounded_overlap() -> None:
    origins = crop_origins(12, 12, crop=9, max_overlap=7)
    assert {tuple(o) for o in origins} == {(0, 0), (0, 2), (2, 0), (2, 2)}
    assert crop_origins(8, 8, crop=9).shape == (0, 2)
    origins = crop_origins(20, 17, crop=9, max_overlap=7)
    for axis, size in ((0, 20), (1, 17)):
        starts = np.unique(origins[:, axis])
        assert 9 - np.diff(starts).min() <= 7
        assert starts.min() == 0 and starts.max() + 9 <= size
    with pytest.raises(ValueError, match="max_overlap"):
        crop_origins(12, 12, crop=9, max_overlap=9)
    with pytest.raises(ValueError, match="max_overlap"):
        crop_origins(12, 12, crop=9, max_overlap=-1)


def test_extract_crops_matches_explicit_slicing() -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 11, 13, 3)).astype(np.float32)
    origins = crop_origins(11, 13, crop=5, max_overlap=2)
    single = extract_crops(maps[1], origins, 5)
    batch = extract_crops(maps, origins, 5)
    assert single.shape == (len(origins), 3, 5, 5) and batch.shape == (2, len(origins), 3, 5, 5)
    for k, (r, c) in enumerate(origins):
        expected = maps[:, r : r + 5, c : c + 5, :].transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(batch[:, k], expected)
        np.testing.assert_array_equal(single[k], expected[1])
    assert extract_crops(maps[0], np.empty((0, 2), dtype=int), 5).shape == (0, 3, 5, 5)
    with pytest.raises(ValueError, match="out of range"):
        extract_crops(maps[0], np.array([[7, 0]]), 5)


def test_crop_means_ignore_nan_cells() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(2, 10, 10))
    values[0, 3, 4] = np.nan
    values[1, :5, :5] = np.nan  # the crop at (0, 0) is all NaN in the second map
    origins = crop_origins(10, 10, crop=5, max_overlap=2)
    means = crop_means(values, origins, 5)
    assert means.shape == (2, len(origins))
    np.testing.assert_allclose(crop_means(values[0], origins, 5), means[0])
    for k, (r, c) in enumerate(origins):
        np.testing.assert_allclose(means[0, k], np.nanmean(values[0, r : r + 5, c : c + 5]))
    assert np.isnan(means[1, 0])
    assert np.isfinite(means[0]).all()


# ---------------------------------------------------------------------------------------------
# standardisation and sampling


def test_standardizer_round_trip_and_constant_column() -> None:
    values = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    scaler = Standardizer.fit(values)
    np.testing.assert_allclose(scaler.mean, [3.0, 5.0, 5.0])
    np.testing.assert_allclose(scaler.std, [np.sqrt(8 / 3), 1.0, np.sqrt(26 / 3)])
    scaled = scaler.transform(values)
    np.testing.assert_allclose(scaled[:, 1], 0.0)
    np.testing.assert_allclose(scaled[:, [0, 2]].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled[:, [0, 2]].std(axis=0), 1.0)
    np.testing.assert_allclose(scaler.inverse(scaled), values)
    as_tensor = scaler.inverse(torch.tensor(scaled, dtype=torch.float32))
    assert as_tensor.dtype == torch.float32
    np.testing.assert_allclose(as_tensor.numpy(), values, rtol=1e-6)
    restored = Standardizer.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(restored.mean, scaler.mean)
    np.testing.assert_array_equal(restored.std, scaler.std)


def test_sample_latent_moments_and_zero_sigma() -> None:
    generator = torch.Generator().manual_seed(0)
    mu = torch.tensor([-1.0, 0.5, 2.0])
    sigma = torch.tensor([0.1, 1.0, 3.0])
    draws = sample_latent(mu.expand(20000, 3), sigma.expand(20000, 3), generator)
    torch.testing.assert_close(draws.mean(dim=0), mu, atol=0.06, rtol=0)
    torch.testing.assert_close(draws.std(dim=0), sigma, atol=0, rtol=0.03)
    assert torch.equal(sample_latent(mu, torch.zeros(3)), mu)
