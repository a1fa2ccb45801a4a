"""Algorithm 2 (concentration design): Eq. 6, Eq. 8, the gradient step, Isomap clusters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentmech.alloy.cvae import AlloyCVAE, CVAEConfig, MinMax
from latentmech.alloy.design import (
    BURGERS,
    NORMAL,
    VOIGT,
    DesignSettings,
    cluster_concentrations,
    concentration_prior,
    design_problem,
    equiatomic_term,
    full_concentration,
    inverse_design,
    mean_square_shear,
    objective_terms,
    resolved_shear_stress,
)
from latentmech.core.errors import InputError

torch.set_num_threads(1)
R = 2
CONCENTRATION = MinMax((0.25, 0.28, 0.22), (0.41, 0.39, 0.45))  # Ni, Co, Cr atom fractions
WC = MinMax((-0.3,) * 9, (0.2,) * 9)
STRESS = MinMax((-1.5, -1.2, -1.0, -0.5, -0.6, -0.4), (1.0, 1.4, 0.9, 0.5, 0.4, 0.7))  # GPa


def tensor_from_voigt(v: np.ndarray) -> np.ndarray:
    t = np.zeros((3, 3))
    for value, (i, j) in zip(v, VOIGT, strict=True):
        t[i, j] = t[j, i] = value
    return t


def test_resolved_shear_stress_eq6_is_n_sigma_b() -> None:
    rng = np.random.default_rng(0)
    voigt = rng.normal(size=(7, 6))
    expected = [NORMAL @ tensor_from_voigt(v) @ BURGERS for v in voigt]
    np.testing.assert_allclose(resolved_shear_stress(voigt, axis=1), expected, rtol=1e-12)
    torch_value = resolved_shear_stress(torch.tensor(voigt), axis=1)
    np.testing.assert_allclose(torch_value.numpy(), expected, rtol=1e-12)
    unit = np.eye(6) * math.sqrt(6.0)  # one component at a time
    np.testing.assert_allclose(
        resolved_shear_stress(unit, axis=1), [1, -1, 0, 0, 1, -1], atol=1e-12
    )


def test_mean_square_shear_over_blocks() -> None:
    stress = np.zeros((2, 6, R, R, R))
    stress[0, 0] = math.sqrt(6.0)  # τ = 1 everywhere
    stress[1, 4, 0] = 2 * math.sqrt(6.0)  # τ = 2 in half of the blocks
    np.testing.assert_allclose(mean_square_shear(stress), [1.0, 2.0])
    np.testing.assert_allclose(mean_square_shear(torch.tensor(stress)).numpy(), [1.0, 2.0])


def test_equiatomic_term_and_the_dependent_element() -> None:
    equi = CONCENTRATION.transform(torch.full((3,), 1 / 3, dtype=torch.float64), axis=0)
    c = equi[:2].view(1, 2, 1, 1, 1).expand(2, 2, R, R, R).clone()
    assert float(equiatomic_term(c, CONCENTRATION, equi).abs().max()) < 1e-14
    physical, normalised = full_concentration(c, CONCENTRATION)
    np.testing.assert_allclose(physical.numpy(), 1 / 3, rtol=1e-12)
    torch.testing.assert_close(normalised, equi.view(1, 3, 1, 1, 1).expand(2, 3, R, R, R))
    # +0.02 Ni everywhere: Ni normalised +0.02/0.16, Cr −0.02/0.23, Co unchanged
    shifted = c.clone()
    shifted[:, 0] += 0.02 / 0.16
    expected = (0.02 / 0.16) ** 2 + (0.02 / 0.23) ** 2
    torch.testing.assert_close(equiatomic_term(shifted, CONCENTRATION, equi),
                               torch.full((2,), expected, dtype=torch.float64))  # fmt: skip
    physical, _ = full_concentration(shifted, CONCENTRATION)
    torch.testing.assert_close(physical.sum(dim=1), torch.ones(2, R, R, R, dtype=torch.float64))


def small_model(seed: int = 0, **more) -> AlloyCVAE:
    torch.manual_seed(seed)
    config = CVAEConfig(**{**dict(blocks=R, encoder_channels=(4, 4, 4), feature_width=4,
                                  condition_widths=(4, 2), condition_dim=6, moment_widths=(4,),
                                  latent_dim=5, smoother_channels=4, smoother_widths=(4,),
                                  decoder_widths=(4, 4, 4, 4)), **more})  # fmt: skip
    return AlloyCVAE(config).double().eval()


PRIOR = (np.full((2, R, R, R), 0.5), np.full((2, R, R, R), 0.1))


def test_one_step_equals_a_hand_computed_gradient_step() -> None:
    model = small_model()
    settings = DesignSettings(iterations=1, candidates=4, seed=2, bounds="none")
    result = inverse_design(model, CONCENTRATION, WC, STRESS, *PRIOR, settings)
    c0 = torch.tensor(result.initial_normalised, requires_grad=True)
    z0 = torch.tensor(result.initial_latent, requires_grad=True)
    # Eq. 8 written out from the pieces of the model
    r = R
    w = torch.tensor((0.0 - np.array(WC.minimum)) / (np.array(WC.maximum) - WC.minimum))
    w_field = w.view(1, 9, 1, 1, 1).expand(4, 9, r, r, r)
    c_bar = model.smoothers["c"](c0)
    w_bar = model.smoothers["w"](w_field)
    sigma = model.decoder(z0, torch.cat([c_bar, w_bar], dim=1))
    lo = torch.tensor(STRESS.minimum, dtype=torch.float64)
    hi = torch.tensor(STRESS.maximum, dtype=torch.float64)
    gpa = sigma * (hi - lo).view(1, 6, 1, 1, 1) + lo.view(1, 6, 1, 1, 1)
    tau = (gpa[:, 0] - gpa[:, 1] + gpa[:, 4] - gpa[:, 5]) / math.sqrt(6)
    tau2 = (tau**2).flatten(1).mean(1)
    clo = torch.tensor(CONCENTRATION.minimum, dtype=torch.float64)
    chi = torch.tensor(CONCENTRATION.maximum, dtype=torch.float64)
    phys = c0 * (chi - clo)[:2].view(1, 2, 1, 1, 1) + clo[:2].view(1, 2, 1, 1, 1)
    cr = 1 - phys.sum(1)
    means = torch.stack([c0[:, 0].flatten(1).mean(1), c0[:, 1].flatten(1).mean(1),
                         ((cr - clo[2]) / (chi[2] - clo[2])).flatten(1).mean(1)], dim=1)  # fmt: skip
    equi = (torch.full((3,), 1 / 3, dtype=torch.float64) - clo) / (chi - clo)
    features = model.encoder.features(sigma)
    again_c, again_w = model.encoder.heads["c"](features), model.encoder.heads["w"](features)
    f = (0.1 / tau2 + 1.0 * ((means - equi) ** 2).sum(1)
         + 50 * ((c_bar - again_c) ** 2).sum(1) + 50 * ((w_bar - again_w) ** 2).sum(1))  # fmt: skip
    np.testing.assert_allclose(result.history["total"][0], f.detach().numpy(), rtol=1e-10)
    grad_c, grad_z = torch.autograd.grad(f.sum(), [c0, z0])
    np.testing.assert_allclose(result.normalised, (c0 - 1e-2 * grad_c).detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(result.latent, (z0 - 1e-2 * grad_z).detach().numpy(), rtol=1e-10)
    # and the autograd gradient is the finite difference of f
    h = 1e-6
    bump = torch.zeros_like(c0)
    bump[1, 0, 1, 0, 1] = h
    problem = design_problem(model, CONCENTRATION, WC, STRESS)
    with torch.no_grad():
        up = objective_terms(model, c0 + bump, z0, problem)["total"][1]
        down = objective_terms(model, c0 - bump, z0, problem)["total"][1]
    assert float((up - down) / (2 * h)) == pytest.approx(float(grad_c[1, 0, 1, 0, 1]), rel=1e-5)


def test_objective_decreases_and_history_is_recorded() -> None:
    model = small_model(seed=1)
    settings = DesignSettings(iterations=40, candidates=16, history_every=10, seed=0, chunk=5)
    result = inverse_design(model, CONCENTRATION, WC, STRESS, *PRIOR, settings)
    totals = result.history["total"].mean(axis=1)
    assert result.history["iteration"].tolist() == [0, 10, 20, 30, 40]
    assert np.all(np.diff(totals) < 0)
    assert result.history["fields"].shape == (5, 3, 3, R, R, R)
    np.testing.assert_allclose(result.history["fields"][0], result.initial_concentration[:3])
    np.testing.assert_allclose(result.history["fields"][-1], result.concentration[:3])
    np.testing.assert_allclose(result.concentration.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(result.tau2_after, mean_square_shear(result.stress), rtol=1e-12)
    np.testing.assert_allclose(result.tau2_before, result.history["tau2"][0])
    np.testing.assert_allclose(
        result.variance_after, result.concentration.reshape(16, 3, -1).var(axis=2)
    )
    same = inverse_design(model, CONCENTRATION, WC, STRESS, *PRIOR,
                          DesignSettings(**{**settings.to_dict(), "chunk": None}))  # fmt: skip
    np.testing.assert_allclose(same.normalised, result.normalised, rtol=1e-10)  # chunks exact
    summary = result.summary()
    assert summary["objective_after"] < summary["objective_before"]


def test_bounds_keep_the_candidates_in_their_region() -> None:
    from latentmech.alloy.design import project

    model = small_model()
    problem = design_problem(model, CONCENTRATION, WC, STRESS)
    c = torch.tensor([-0.5, 0.3, 1.7, 0.9], dtype=torch.float32).view(2, 2, 1, 1, 1)
    c = c.expand(2, 2, R, R, R).contiguous()
    assert torch.equal(project(c, problem, "none"), c)
    clamped = project(c, problem, "training")
    assert clamped.min() == 0.0 and clamped.max() == 1.0
    torch.testing.assert_close(clamped[:, :, 0, 0, 0], torch.tensor([[0.0, 0.3], [1.0, 0.9]]))
    # physical: fractions of Ni and Co clipped to [0, 1] and their sum to at most 1
    ni_co = CONCENTRATION.select([0, 1])
    wild = ni_co.transform(torch.tensor([[-0.2, 0.5], [0.9, 0.6]], dtype=torch.float64)
                           .view(2, 2, 1, 1, 1).expand(2, 2, R, R, R), axis=1)  # fmt: skip
    fractions = ni_co.inverse(project(wild, problem, "physical"), axis=1)[:, :, 0, 0, 0]
    torch.testing.assert_close(fractions, torch.tensor([[0.0, 0.5], [0.6, 0.4]],
                                                       dtype=torch.float64))  # fmt: skip
    # runs: large steps leave the simplex unless bounded; the default keeps atom fractions
    settings = DesignSettings(iterations=30, candidates=8, history_every=10, lr=50.0, seed=1)
    assert settings.bounds == "physical"
    free = inverse_design(model, CONCENTRATION, WC, STRESS, *PRIOR,
                          DesignSettings(**{**settings.to_dict(), "bounds": "none"}))  # fmt: skip
    assert free.concentration.min() < 0.0 or free.concentration.max() > 1.0
    kept = inverse_design(model, CONCENTRATION, WC, STRESS, *PRIOR, settings)
    assert kept.concentration.min() >= -1e-6 and kept.concentration.max() <= 1.0 + 1e-6
    fenced = inverse_design(model, CONCENTRATION, WC, STRESS, *PRIOR,
                            DesignSettings(**{**settings.to_dict(), "bounds": "training"}))  # fmt: skip
    assert fenced.normalised.min() >= 0.0 and fenced.normalised.max() <= 1.0
    with pytest.raises(InputError, match="bounds"):
        DesignSettings(bounds="box")


def test_latent_methods() -> None:
    model = small_model()
    fixed = inverse_design(model, CONCENTRATION, WC, STRESS, *PRIOR,
                           DesignSettings(iterations=2, candidates=3, method="fixed",
                                          fixed_latent=0.25))  # fmt: skip
    np.testing.assert_array_equal(fixed.initial_latent, 0.25)
    assert not np.allclose(fixed.latent, 0.25)  # optimised with c
    frozen = inverse_design(model, CONCENTRATION, WC, STRESS, *PRIOR,
                            DesignSettings(iterations=2, candidates=3, method="fixed",
                                           optimise_latent=False))  # fmt: skip
    np.testing.assert_array_equal(frozen.latent, 0.0)
    random = inverse_design(model, CONCENTRATION, WC, STRESS, *PRIOR,
                            DesignSettings(iterations=0, candidates=300))  # fmt: skip
    assert abs(float(random.initial_latent.mean())) < 0.1
    assert float(random.initial_latent.std()) == pytest.approx(1.0, abs=0.05)
    assert float(random.initial_normalised.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(random.initial_normalised.std()) == pytest.approx(0.1, abs=0.01)
    assert random.history["iteration"].tolist() == [0]


def test_fixed_w_is_the_exact_image_of_zero() -> None:
    model = small_model()
    problem = design_problem(model, CONCENTRATION, WC, STRESS)
    image = 0.3 / 0.5  # (0 − (−0.3)) / (0.2 − (−0.3))
    with torch.no_grad():
        expected = model.smooth({"w": torch.full((1, 9, R, R, R), image, dtype=torch.float64)})
    torch.testing.assert_close(problem.w_bar, expected["w"])
    np.testing.assert_allclose(problem.c_equi.numpy(), [(1 / 3 - 0.25) / 0.16,
                               (1 / 3 - 0.28) / 0.11, (1 / 3 - 0.22) / 0.23])  # fmt: skip


def test_concentration_prior() -> None:
    data = np.random.default_rng(0).normal(0.5, 0.1, size=(50, 2, R, R, R))
    mean, std = concentration_prior(data)
    np.testing.assert_allclose(mean, data.mean(axis=0))
    np.testing.assert_allclose(std, data.std(axis=0, ddof=1))
    with pytest.raises(InputError, match="training fields"):
        concentration_prior(data[:1])


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::scipy.sparse.SparseEfficiencyWarning")
def test_clusters_recover_two_separated_groups() -> None:
    rng = np.random.default_rng(3)
    centres = np.array([[0.36, 0.37, 0.27], [0.30, 0.31, 0.39]])
    groups = np.repeat([0, 1, 0, 1], 20)
    fields = centres[groups][:, :, None] + 0.004 * rng.normal(size=(80, 3, R**3))
    fields = fields.reshape(80, 3, R, R, R)
    clusters = cluster_concentrations(fields, n_clusters=2, n_neighbors=8)
    assert clusters.embedding.shape == (80, 2)
    np.testing.assert_array_equal(clusters.labels, groups)  # ordered by Ni, highest first
    np.testing.assert_allclose(clusters.means, centres, atol=2e-3)
    assert clusters.sizes.tolist() == [40, 40]


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match="iterations_n"):
        DesignSettings.from_dict({"iterations_n": 3})
    with pytest.raises(InputError, match="method"):
        DesignSettings(method="latent")
    model = small_model()
    with pytest.raises(InputError, match="concentration scaler"):
        design_problem(model, CONCENTRATION.select([0, 1]), WC, STRESS)
    with pytest.raises(InputError, match="exactly 'c' and 'w'"):
        design_problem(small_model(conditions=[("c", 2), ("w", 9), ("e", 1)]), CONCENTRATION,
                       WC, STRESS)  # fmt: skip
    with pytest.raises(InputError, match="init_mean"):
        inverse_design(model, CONCENTRATION, WC, STRESS, np.zeros((3, R, R, R)), PRIOR[1],
                       DesignSettings(iterations=1, candidates=2))  # fmt: skip
