"""Algorithm 1 (self-checked predictions): acceptance, draw order, batched = per-input loop."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from latentmech.alloy.cvae import AlloyCVAE, CVAEConfig
from latentmech.alloy.sampling import (
    draw_latents,
    self_checked_loop,
    self_checked_predictions,
)
from latentmech.core.errors import InputError

torch.set_num_threads(1)
R = 2


class ScaledCopy(nn.Module):
    """A hand-built "model" with one condition group c (2 channels) and a 2-channel target.

    smooth(c) = c flattened; decode(z, c̄) = c̄ · (1 + ``gain``·z₀) as a field; the encoder reads
    the field back. So MRE(c̄*, c̄) = ``gain``·|z₀| exactly: ``gain`` 0 reproduces the
    conditions exactly, otherwise a draw passes iff gain·|z₀| ≤ k.
    """

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain
        self.dummy = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.config = SimpleNamespace(condition_names=("c",), latent_dim=3, target_channels=2,
                                      blocks=R)  # fmt: skip

    def smooth(self, conditions):
        return {"c": conditions["c"].flatten(1) + 0 * self.dummy}

    def decode(self, z, conditions):
        return (conditions["c"] * (1 + self.gain * z[:, :1])).view(-1, 2, R, R, R)

    def encode_conditions(self, target):
        return {"c": target.flatten(1)}


def positive_fields(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"c": 0.5 + 0.5 * torch.rand((n, 2, R, R, R), generator=g, dtype=torch.float64)}


def test_exact_encoder_accepts_every_draw() -> None:
    fields = positive_fields(4)
    result = self_checked_predictions(ScaledCopy(0.0), fields, n_max=50, k=0.0, n_accept=3)
    assert result.acceptance_rate == 1.0 and result.reached_fraction == 1.0
    assert result.valid.all()
    assert result.attempts.tolist() == [3] * 4  # stops at n = N_g, not N_g + 1
    assert result.draw_index.tolist() == [[0, 1, 2]] * 4
    for s in range(3):
        torch.testing.assert_close(result.predictions[:, s], fields["c"])
    assert float(result.mre["c"].abs().max()) == 0.0


def test_accepted_realisations_are_the_first_passing_draws_in_order() -> None:
    gain, k, n_max, n_accept = 0.01, 0.005, 40, 3  # passes iff |z₀| ≤ 0.5 (≈ 38 %)
    fields = positive_fields(6, seed=1)
    result = self_checked_predictions(ScaledCopy(gain), fields, n_max=n_max, k=k,
                                      n_accept=n_accept, chunk=7, seed=11)  # fmt: skip
    z = draw_latents(6, n_max, 3, torch.Generator().manual_seed(11))
    for b in range(6):
        passing = torch.nonzero(gain * z[b, :, 0].double().abs() <= k).flatten().tolist()
        expected = passing[:n_accept]
        got = result.draw_index[b][result.valid[b]].tolist()
        assert got == expected
        assert int(result.attempts[b]) == (expected[-1] + 1 if len(passing) >= n_accept else n_max)
        for s, n in enumerate(expected):
            z_n = z[b, n].double()
            torch.testing.assert_close(result.latents[b, s], z_n)
            torch.testing.assert_close(
                result.predictions[b, s], fields["c"][b] * (1 + gain * z_n[0])
            )
            assert float(result.mre["c"][b, s]) == pytest.approx(
                gain * abs(float(z_n[0])), rel=1e-9
            )


def test_too_few_passing_draws_leave_invalid_slots() -> None:
    fields = positive_fields(5, seed=2)
    result = self_checked_predictions(ScaledCopy(0.01), fields, n_max=4, k=0.005, n_accept=3,
                                      seed=3, stop_early=False)  # fmt: skip
    z = draw_latents(5, 4, 3, torch.Generator().manual_seed(3))
    passing = (0.01 * z[:, :, 0].double().abs() <= 0.005).sum(dim=1)
    assert result.accepted.tolist() == passing.tolist()
    assert result.attempts.tolist() == [4] * 5
    assert result.acceptance_rate == pytest.approx(float(passing.sum()) / 20)
    assert result.valid.sum(dim=1).tolist() == torch.clamp(passing, max=3).tolist()
    assert bool(torch.isnan(result.predictions[~result.valid]).all())
    assert bool((result.draw_index[~result.valid] == -1).all())
    assert result.reached_fraction == pytest.approx(float((passing >= 3).double().mean()))


def small_model() -> AlloyCVAE:
    torch.manual_seed(0)
    config = CVAEConfig(blocks=R, encoder_channels=(4, 4, 4), feature_width=4,
                        condition_widths=(4, 2), condition_dim=6, moment_widths=(4,),
                        latent_dim=5, smoother_channels=4, smoother_widths=(4,),
                        decoder_widths=(4, 4, 4, 4))  # fmt: skip
    model = AlloyCVAE(config).double()
    model.train()
    with torch.no_grad():  # non-trivial running statistics for the eval-mode batch norms
        for _ in range(3):
            model(torch.rand(8, 6, R, R, R, dtype=torch.float64),
                  {"c": torch.rand(8, 2, R, R, R, dtype=torch.float64),
                   "w": torch.rand(8, 9, R, R, R, dtype=torch.float64)})  # fmt: skip
    return model


def conditions(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"c": torch.rand((n, 2, R, R, R), generator=g, dtype=torch.float64),
            "w": torch.rand((n, 9, R, R, R), generator=g, dtype=torch.float64)}  # fmt: skip


def test_threshold_zero_accepts_nothing_on_a_real_model() -> None:
    model = small_model()
    result = self_checked_predictions(model, conditions(3, 0), n_max=30, k=0.0)
    assert result.acceptance_rate == 0.0 and result.reached_fraction == 0.0
    assert not result.valid.any()
    assert result.attempts.tolist() == [30, 30, 30]
    assert model.training  # mode restored


def _threshold_between_mres(model: AlloyCVAE, fields: dict, n_max: int) -> float:
    """A k between two observed worst-group MREs, so that about half the draws pass."""
    full = self_checked_predictions(model, fields, n_max=n_max, k=np.inf, n_accept=n_max, seed=4)
    worst = torch.maximum(full.mre["c"], full.mre["w"]).flatten().sort().values
    middle = worst.numel() // 2
    return float((worst[middle] + worst[middle + 1]) / 2)


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_batched_equals_the_per_input_loop(chunk: int | None) -> None:
    model = small_model()
    fields = conditions(5, 1)
    n_max = 24
    k = _threshold_between_mres(model, fields, n_max)
    batched = self_checked_predictions(model, fields, n_max=n_max, k=k, n_accept=3, chunk=chunk,
                                       seed=4)  # fmt: skip
    loop = self_checked_loop(model, fields, n_max=n_max, k=k, n_accept=3, seed=4)
    assert 0 < batched.acceptance_rate < 1
    for b, one in enumerate(loop):
        assert int(batched.attempts[b]) == one["attempts"]
        assert int(batched.accepted[b]) == one["accepted"]
        assert batched.draw_index[b][batched.valid[b]].tolist() == one["draw_index"]
        for s, prediction in enumerate(one["predictions"]):
            torch.testing.assert_close(batched.predictions[b, s], prediction, rtol=1e-10,
                                       atol=1e-12)  # fmt: skip
            assert float(batched.mre["w"][b, s]) == pytest.approx(one["mre"]["w"][s], rel=1e-9)


def test_deterministic_with_the_seed() -> None:
    model = small_model()
    fields = conditions(2, 2)
    one = self_checked_predictions(model, fields, n_max=10, k=np.inf, seed=9)
    two = self_checked_predictions(model, fields, n_max=10, k=np.inf,
                                   generator=torch.Generator().manual_seed(9))  # fmt: skip
    other = self_checked_predictions(model, fields, n_max=10, k=np.inf, seed=10)
    torch.testing.assert_close(one.predictions, two.predictions)
    assert not torch.allclose(one.latents, other.latents)
    assert one.summary()["acceptance_rate"] == 1.0


def test_bad_settings_and_inputs() -> None:
    model = small_model()
    with pytest.raises(InputError, match="missing condition"):
        self_checked_predictions(model, {"c": conditions(1, 0)["c"]})
    with pytest.raises(InputError, match="n_max"):
        self_checked_predictions(model, conditions(1, 0), n_max=0)
    with pytest.raises(InputError, match="k"):
        self_checked_predictions(model, conditions(1, 0), k=-0.1)
    with pytest.raises(InputError, match="same number of inputs"):
        self_checked_predictions(model, {"c": conditions(2, 0)["c"], "w": conditions(1, 0)["w"]})
