"""AlloyVAE (paper 003, section 2.1, SI C): architecture, Eqs. 1–3, training, scaling, metrics."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from latentmech.alloy.cvae import (
    DEMO_CONFIG,
    PAPER_CONFIG,
    AlloyCVAE,
    BlockDataset,
    CVAEConfig,
    CVAELoss,
    MinMax,
    condition_mre,
    condition_weights,
    count_parameters,
    cvae_loss,
    kl_divergence,
    parameter_count,
    random_roll,
)
from latentmech.core.errors import InputError
from latentmech.core.train import (
    Trainer,
    TrainingInterrupted,
    TrainSettings,
    data_fingerprint,
    load_checkpoint,
)

torch.set_num_threads(1)

#: A tiny AlloyVAE on a 2 × 2 × 2 block grid (fast tests).
TINY = dict(blocks=2, encoder_channels=(4, 4, 4), feature_width=4, condition_widths=(4, 2),
            condition_dim=6, moment_widths=(4,), latent_dim=5, smoother_channels=4,
            smoother_widths=(4,), decoder_widths=(4, 4, 4, 4))  # fmt: skip


def tiny(**more) -> CVAEConfig:
    return CVAEConfig(**{**TINY, **more})


def batch_of(config: CVAEConfig, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = config.blocks
    out = {"target": torch.rand((n, config.target_channels, r, r, r), generator=g)}
    for name, channels in config.conditions:
        out[name] = torch.rand((n, channels, r, r, r), generator=g)
    return out


# -- architecture --------------------------------------------------------------------------------


def test_paper_config_has_the_papers_parameter_count_in_closed_form() -> None:
    with torch.device("meta"):  # 2.8e8 parameters: shapes only, no memory
        model = AlloyCVAE(PAPER_CONFIG)
    count = count_parameters(model)
    assert 2.7e8 <= count <= 2.9e8
    assert count == parameter_count(PAPER_CONFIG)
    # the decoder's three r³·128 → r³·128 layers dominate: 3 × (8192² + 8192 + 2·8192 BN)
    fc = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in fc] == [(8192, 600), (8192, 8192), (8192, 8192),
                                                   (8192, 8192), (384, 8192)]  # fmt: skip
    encoder_fc = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert tuple(encoder_fc[0].weight.shape) == (4096, 8192)  # Fc_feature r³·128 → r³·64
    assert tuple(model.encoder.mu[0].weight.shape) == (1024, 4096 + 300)  # Fc_mu1


@pytest.mark.parametrize(
    "config",
    [DEMO_CONFIG, tiny(batch_norm=False), tiny(padding_mode="circular", activation="relu"),
     tiny(conditions=[{"name": "c", "channels": 2}, {"name": "w", "channels": 9}],
          target_channels=1),  # composition → eigenstrain (section 2.5)
     tiny(conditions=[("c", 2), ("w", 9), ("e", 1)]),  # composition + eigenstrain → stress
     tiny(blocks=3, condition_activation="linear")],
)  # fmt: skip
def test_closed_form_count_shapes_and_ranges(config: CVAEConfig) -> None:
    torch.manual_seed(0)
    model = AlloyCVAE(config)
    assert count_parameters(model) == parameter_count(config)
    batch = batch_of(config, n=3)
    with torch.no_grad():
        out = model(batch["target"], {n: batch[n] for n in config.condition_names})
    r = config.blocks
    assert out.reconstruction.shape == (3, config.target_channels, r, r, r)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, config.latent_dim)
    assert (
        set(out.encoder_conditions) == set(out.smoother_conditions) == set(config.condition_names)
    )
    assert float(out.reconstruction.min()) > 0 and float(out.reconstruction.max()) < 1
    for vectors in (out.encoder_conditions, out.smoother_conditions):
        for v in vectors.values():
            assert v.shape == (3, config.condition_dim)
            if config.condition_activation == "sigmoid":
                assert float(v.min()) > 0 and float(v.max()) < 1


def test_xavier_initialisation() -> None:
    model = AlloyCVAE(tiny())
    layer = model.decoder.fc[0]
    weight = layer.weight.detach()
    fan_in, fan_out = weight.shape[1], weight.shape[0]
    bound = float(np.sqrt(6.0 / (fan_in + fan_out)))
    assert float(weight.abs().max()) <= bound
    assert float(weight.abs().max()) > 0.8 * bound
    assert float(layer.bias.detach().abs().max()) == 0.0


def test_config_round_trip_and_errors() -> None:
    config = tiny(conditions=[("c", 2), ("w", 9), ("e", 1)], decoder_conditions="encoder")
    d = config.to_dict()
    assert d["conditions"] == [{"name": "c", "channels": 2}, {"name": "w", "channels": 9},
                               {"name": "e", "channels": 1}]  # fmt: skip
    assert CVAEConfig.from_dict(d) == config
    with pytest.raises(InputError, match="latent_size"):
        CVAEConfig.from_dict({"latent_size": 3})
    with pytest.raises(InputError, match="decoder_conditions"):
        CVAEConfig(decoder_conditions="both")
    with pytest.raises(InputError, match="unique names"):
        CVAEConfig(conditions=[("c", 2), ("c", 9)])
    with pytest.raises(InputError, match=r"conditions\[0\].channels"):
        CVAEConfig(conditions=[{"name": "c", "channels": 0}])
    with pytest.raises(InputError, match="kernel_size"):
        CVAEConfig(kernel_size=2)


def test_reparameterisation_eq1_and_eval_mean() -> None:
    model = AlloyCVAE(tiny())
    batch = batch_of(model.config)
    conditions = {n: batch[n] for n in model.config.condition_names}
    model.eval()
    out = model(batch["target"], conditions)
    torch.testing.assert_close(out.z, out.mu)  # eval: z = μ, deterministic
    torch.manual_seed(5)
    drawn = model(batch["target"], conditions, sample=True)
    torch.manual_seed(5)
    eps = torch.randn_like(out.mu)
    torch.testing.assert_close(drawn.z, out.mu + eps * torch.exp(0.5 * out.logvar))


@pytest.mark.parametrize("which", ["smoother", "encoder"])
def test_decoder_gets_the_configured_conditions(which: str) -> None:
    model = AlloyCVAE(tiny(decoder_conditions=which)).eval()
    batch = batch_of(model.config)
    out = model(batch["target"], {n: batch[n] for n in model.config.condition_names})
    given = out.smoother_conditions if which == "smoother" else out.encoder_conditions
    other = out.encoder_conditions if which == "smoother" else out.smoother_conditions
    torch.testing.assert_close(out.reconstruction, model.decode(out.mu, given))
    assert not torch.allclose(out.reconstruction, model.decode(out.mu, other))
    torch.testing.assert_close(model.encode_conditions(batch["target"])["w"],
                               model.encode(batch["target"]).conditions["w"])  # fmt: skip


def test_bad_input_shapes_are_named() -> None:
    model = AlloyCVAE(tiny())
    batch = batch_of(model.config)
    with pytest.raises(InputError, match=r"w.*\(B, 9, 2, 2, 2\)"):
        model(batch["target"], {"c": batch["c"], "w": batch["w"][:, :3]})
    with pytest.raises(InputError, match="unknown condition group"):
        model.smooth({"e": batch["c"]})
    with pytest.raises(InputError, match="missing field"):
        cvae_loss(model, {"target": batch["target"], "c": batch["c"]})


# -- loss ----------------------------------------------------------------------------------------


def test_kl_eq3_against_torch_distributions() -> None:
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn((4, 7), generator=g), torch.randn((4, 7), generator=g)
    normal = torch.distributions.Normal
    expected = torch.distributions.kl_divergence(
        normal(mu, torch.exp(0.5 * logvar)), normal(torch.zeros(7), torch.ones(7))
    ).sum(dim=1)
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)
    assert float(kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3))[0]) == 0.0
    assert float(kl_divergence(torch.ones(1, 3), torch.zeros(1, 3))[0]) == pytest.approx(1.5)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_eq2_equals_the_hand_sum(reduction: str) -> None:
    model = AlloyCVAE(tiny(conditions=[("c", 2), ("w", 9), ("e", 1)]))
    batch = batch_of(model.config, n=5)
    torch.manual_seed(3)
    loss, metrics = cvae_loss(model, batch, alpha=2.0, beta=3.0, reduction=reduction,
                              weights={"e": 0.5})  # fmt: skip
    torch.manual_seed(3)
    out = model(batch["target"], {n: batch[n] for n in ("c", "w", "e")})

    def per_sample(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1) if reduction == "sum" else x.flatten(1).mean(1)

    kl = 0.5 * (-1 + out.logvar.exp() + out.mu**2 - out.logvar).sum(1)
    kl = kl if reduction == "sum" else kl / model.config.latent_dim
    expected = kl + per_sample((out.reconstruction - batch["target"]) ** 2)
    for name, weight in {"c": 2.0, "w": 3.0, "e": 0.5}.items():
        expected = expected + weight * per_sample(
            (out.encoder_conditions[name] - out.smoother_conditions[name]) ** 2
        )
    torch.testing.assert_close(loss, expected.mean())
    assert metrics["kl"] == pytest.approx(float(kl.mean().detach()), rel=1e-6)
    assert set(metrics) == {"kl", "reconstruction", "condition_c", "condition_w", "condition_e",
                            "mse"}  # fmt: skip


@pytest.mark.parametrize("mode", ["both", "encoder"])
def test_condition_gradient_reaches_the_smoothers_only_in_joint_mode(mode: str) -> None:
    model = AlloyCVAE(tiny())
    batch = batch_of(model.config)
    torch.manual_seed(0)
    loss, _ = cvae_loss(model, batch, kl_weight=0.0, condition_gradient=mode)
    torch.manual_seed(0)
    joint, _ = cvae_loss(model, batch, kl_weight=0.0)
    torch.testing.assert_close(loss, joint)  # the same value: only the gradient's path differs
    # the consistency terms alone (no reconstruction gradient): zero the decoder's input path
    torch.manual_seed(0)
    out = model(batch["target"], {n: batch[n] for n in ("c", "w")})
    smoothed = {n: (v.detach() if mode == "encoder" else v) for n, v in
                out.smoother_conditions.items()}  # fmt: skip
    terms = sum(((out.encoder_conditions[n] - smoothed[n]) ** 2).sum() for n in ("c", "w"))
    smoother = model.smoothers["c"].fc[-2].weight
    head = model.encoder.heads["c"][-2].weight
    grads = torch.autograd.grad(terms, [smoother, head], allow_unused=True)
    assert grads[1] is not None and grads[1].abs().sum() > 0  # the encoder learns either way
    if mode == "encoder":
        assert grads[0] is None  # the smoothers get nothing from the consistency terms
    else:
        assert grads[0].abs().sum() > 0
    # and through the loss function itself: the smoother's gradient differs between the modes
    model.zero_grad()
    torch.manual_seed(0)
    cvae_loss(model, batch, kl_weight=0.0, condition_gradient=mode)[0].backward()
    g_mode = model.smoothers["c"].fc[-2].weight.grad.clone()
    model.zero_grad()
    torch.manual_seed(0)
    cvae_loss(model, batch, kl_weight=0.0, condition_gradient="both")[0].backward()
    g_both = model.smoothers["c"].fc[-2].weight.grad
    assert torch.equal(g_mode, g_both) == (mode == "both")
    with pytest.raises(InputError, match="condition_gradient"):
        cvae_loss(model, batch, condition_gradient="smoother")


def test_condition_weights() -> None:
    assert condition_weights(["c", "w", "e"], 0.1, 50) == {"c": 0.1, "w": 50.0, "e": 1.0}
    assert condition_weights(["c", "w"], weights={"c": 3}) == {"c": 3.0, "w": 1.0}
    with pytest.raises(InputError, match="unknown condition group"):
        condition_weights(["c", "w"], weights={"x": 1})


# -- training through the project's loop ----------------------------------------------------------


def synthetic_fields(n: int, seed: int, r: int = 2) -> dict[str, torch.Tensor]:
    """Stress-like targets that depend on c and w (plus noise the latent can explain)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand((n, 2, r, r, r), generator=g)
    w = torch.rand((n, 9, r, r, r), generator=g)
    noise = torch.randn((n, 1, 1, 1, 1), generator=g)
    base = torch.cat([c, w[:, :4]], dim=1)  # (n, 6, r, r, r)
    target = torch.sigmoid(2.0 * (base - 0.5) + 0.5 * noise)
    return {"target": target, "c": c, "w": w}


class _Interrupting(CVAELoss):
    """CVAELoss that sends SIGTERM to this process at training call ``at``."""

    def __init__(self, at: int, **kw) -> None:
        super().__init__(**kw)
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "calls", 0)

    def __call__(self, model, batch):
        if model.training:
            object.__setattr__(self, "calls", self.calls + 1)
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
        return super().__call__(model, batch)


def _fresh() -> AlloyCVAE:
    torch.manual_seed(0)
    return AlloyCVAE(tiny())


def test_trains_through_trainer_and_resumes_exactly(tmp_path: Path) -> None:
    train = BlockDataset(synthetic_fields(48, 1))
    val = BlockDataset(synthetic_fields(16, 2))
    settings = TrainSettings(epochs=4, batch_size=16, lr=3e-3, seed=1, device="cpu")
    loss = CVAELoss(alpha=1.0, beta=1.0, roll=True)
    fp = data_fingerprint(train, val)
    reference = Trainer(_fresh(), loss, settings, tmp_path / "ref", fingerprint=fp).fit(train, val)
    history = reference.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_reconstruction"] < history[0]["val_reconstruction"]

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        Trainer(_fresh(), _Interrupting(5, roll=True), settings, run, fingerprint=fp).fit(
            train, val
        )
    assert load_checkpoint(run / "last.pt")["step_in_epoch"] == 2  # 3 batches per epoch
    resumed = Trainer(_fresh(), loss, settings, run, fingerprint=fp).fit(train, val)
    for name, tensor in load_checkpoint(reference.last_path)["model"].items():
        torch.testing.assert_close(load_checkpoint(resumed.last_path)["model"][name], tensor,
                                   rtol=0, atol=0)  # fmt: skip


def test_block_dataset() -> None:
    fields = synthetic_fields(5, 0)
    data = BlockDataset(fields)
    assert len(data) == 5 and set(data[2]) == {"target", "c", "w"}
    torch.testing.assert_close(data[2]["w"], fields["w"][2])
    with pytest.raises(InputError, match="same number of samples"):
        BlockDataset({"target": fields["target"], "c": fields["c"][:3]})


# -- augmentation --------------------------------------------------------------------------------


def test_random_roll_is_one_periodic_shift_per_sample() -> None:
    batch = synthetic_fields(6, 3, r=4)
    batch["label"] = torch.arange(6)
    rolled = random_roll(batch, torch.Generator().manual_seed(0))
    shifts = torch.randint(0, 4, (6, 3), generator=torch.Generator().manual_seed(0))
    assert bool((shifts != 0).any())
    for b in range(6):
        s = tuple(int(v) for v in shifts[b])
        for key in ("target", "c", "w"):
            torch.testing.assert_close(rolled[key][b], torch.roll(batch[key][b], s, dims=(1, 2, 3)))
    assert rolled["label"] is batch["label"]
    again = random_roll(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again["w"], rolled["w"])


# -- scaling -------------------------------------------------------------------------------------


def test_minmax_fit_transform_inverse_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(10, 3, 2, 2, 2)) * np.array([1.0, 5.0, 0.1])[None, :, None, None, None]
    data[0, 0, 0, 0, 0] = np.nan  # ignored by fit
    scaler = MinMax.fit(data, axis=1)
    scaled = scaler.transform(data)
    for ch in range(3):
        assert np.nanmin(scaled[:, ch]) == pytest.approx(0.0)
        assert np.nanmax(scaled[:, ch]) == pytest.approx(1.0)
    np.testing.assert_allclose(scaler.inverse(scaled), data, rtol=1e-12)
    tensor = torch.tensor(np.nan_to_num(data), requires_grad=True)
    out = scaler.transform(tensor)
    np.testing.assert_allclose(out.detach().numpy(), scaler.transform(np.nan_to_num(data)))
    out[:, 1].sum().backward()  # differentiable: d/dx = 1 / (max − min)
    expected = 1.0 / (scaler.maximum[1] - scaler.minimum[1])
    np.testing.assert_allclose(tensor.grad[:, 1].numpy(), expected)
    assert float(tensor.grad[:, 0].abs().max()) == 0.0
    one = scaler.transform(torch.tensor(data[3]), axis=0)  # a single sample (C, r, r, r)
    np.testing.assert_allclose(one.numpy(), scaled[3])
    assert MinMax.from_dict(scaler.to_dict()) == scaler
    part = scaler.select([2, 0])
    np.testing.assert_allclose(part.transform(data[:, [2, 0]]), scaled[:, [2, 0]])


def test_minmax_edge_cases() -> None:
    scaler = MinMax.fit(np.stack([np.full(4, 2.0), np.arange(4.0)], axis=1), axis=1)
    np.testing.assert_allclose(scaler.transform(np.array([[2.0, 3.0]])), [[0.0, 1.0]])
    with pytest.raises(InputError, match=r"channel\(s\) \[1\]"):
        MinMax.fit(np.stack([np.ones(3), np.full(3, np.nan)], axis=1))
    with pytest.raises(InputError, match="2 channels"):
        scaler.transform(np.zeros((4, 3)))
    with pytest.raises(InputError, match="minimum, maximum"):
        MinMax.from_dict({"min": [0]})


# -- metrics -------------------------------------------------------------------------------------


def test_condition_mre_numpy_and_torch() -> None:
    ref = np.array([[0.5, 0.25], [1.0, 2.0]])
    pred = np.array([[0.55, 0.25], [0.5, 2.0]])
    np.testing.assert_allclose(condition_mre(pred, ref), [0.05, 0.25])
    torch.testing.assert_close(condition_mre(torch.tensor(pred), torch.tensor(ref)),
                               torch.tensor([0.05, 0.25], dtype=torch.float64))  # fmt: skip
