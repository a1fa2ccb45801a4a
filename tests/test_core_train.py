"""The training loop: an interrupted and resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latentmech.core.train import (
    BEST,
    HISTORY,
    INTERRUPTED_EXIT_CODE,
    LAST,
    Trainer,
    TrainingInterrupted,
    TrainSettings,
    data_fingerprint,
    load_checkpoint,
    resolve_device,
)
from tests.helpers import linear_data


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )


class _Loss:
    """MSE with numpy noise (so the numpy RNG matters) and a SIGTERM sent to ourselves during
    training batch ``signal_at`` (counted from 1 over the whole run)."""

    def __init__(self, signal_at: int | None = None) -> None:
        self.calls = 0
        self.signal_at = signal_at

    def __call__(self, model: torch.nn.Module, batch):
        x, y = batch
        self.calls += model.training
        if model.training and self.calls == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        jitter = torch.from_numpy(np.random.normal(0, 0.01, size=tuple(y.shape)).astype(np.float32))
        loss = torch.nn.functional.mse_loss(model(x), y + jitter)
        return loss, {"mae": torch.mean(torch.abs(model(x) - y)).item()}


SETTINGS = TrainSettings(epochs=4, batch_size=16, lr=1e-2, seed=3)


def test_sigterm_then_resume_gives_the_same_weights(tmp_path: Path) -> None:
    train, val = linear_data(100, 1), linear_data(40, 2)
    reference = Trainer(_model(), _Loss(), SETTINGS, tmp_path / "reference").fit(train, val)

    interrupted = Trainer(_model(), _Loss(signal_at=10), SETTINGS, tmp_path / "run")
    with pytest.raises(TrainingInterrupted) as stop:
        interrupted.fit(train, val)
    assert stop.value.code == INTERRUPTED_EXIT_CODE != 0
    checkpoint = load_checkpoint(tmp_path / "run" / LAST)
    assert (checkpoint["epoch"], checkpoint["step_in_epoch"]) == (1, 3)  # 7 batches per epoch

    resumed = Trainer(_model(), _Loss(), SETTINGS, tmp_path / "run").fit(
        train, val
    )  # a new process would do the same
    for name, tensor in load_checkpoint(reference.last_path)["model"].items():
        torch.testing.assert_close(
            load_checkpoint(resumed.last_path)["model"][name], tensor, rtol=0, atol=0
        )
    ref_history = pd.read_csv(tmp_path / "reference" / HISTORY)
    run_history = pd.read_csv(tmp_path / "run" / HISTORY)
    pd.testing.assert_frame_equal(
        ref_history.drop(columns="seconds"), run_history.drop(columns="seconds")
    )


def test_best_checkpoint_early_stopping_and_history(tmp_path: Path) -> None:
    train, val = linear_data(64, 1), linear_data(32, 2)
    settings = TrainSettings(
        epochs=50, batch_size=32, lr=0.5, seed=0, patience=2
    )  # lr too high: diverges
    result = Trainer(_model(), _Loss(), settings, tmp_path).fit(train, val)
    history = pd.read_csv(tmp_path / HISTORY)
    assert result.stopped_early and result.epochs_run < 50
    assert len(history) == result.epochs_run
    best_epoch = int(history["val_loss"].idxmin()) + 1
    assert load_checkpoint(tmp_path / BEST)["epoch"] == best_epoch
    assert result.best_val_loss == pytest.approx(history["val_loss"].min())
    assert result.epochs_run == best_epoch + 2  # patience 2
    assert {"epoch", "train_loss", "val_loss", "val_mae", "lr"} <= set(history.columns)


def test_training_learns_and_resume_after_completion_does_nothing(tmp_path: Path) -> None:
    train, val = linear_data(200, 1), linear_data(50, 2)
    settings = TrainSettings(epochs=30, batch_size=32, lr=1e-2, seed=0)
    first = Trainer(_model(), _Loss(), settings, tmp_path).fit(train, val)
    assert first.history[-1]["val_loss"] < 0.1 * first.history[0]["val_loss"]
    again = Trainer(_model(), _Loss(), settings, tmp_path).fit(train, val)
    assert again.epochs_run == 30 and len(again.history) == 30


def test_device_resolution_without_cuda() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_unknown_setting_is_named() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        TrainSettings.from_dict({"learning_rate": 1e-3})
    assert TrainSettings.from_dict({"betas": [0.5, 0.9]}).betas == (0.5, 0.9)


CHILD = """
import sys, time
from tests.helpers import linear_data
from tests.test_core_train import _Loss, _model
from latentmech.core.train import Trainer, TrainSettings

class SlowLoss(_Loss):
    def __call__(self, model, batch):
        if model.training:
            print("batch", flush=True)
            time.sleep(0.02)
        return super().__call__(model, batch)

settings = TrainSettings(epochs=3, batch_size=8, lr=1e-2, seed=5)
Trainer(_model(), SlowLoss(), settings, sys.argv[1]).fit(linear_data(120, 1), linear_data(40, 2))
"""


def test_a_real_sigterm_from_outside_exits_non_zero_and_the_retry_resumes(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import REPO

    run = [sys.executable, "-c", CHILD]
    reference = subprocess.run(
        [*run, str(tmp_path / "reference")], cwd=REPO, capture_output=True, text=True
    )
    assert reference.returncode == 0, reference.stderr
    child = subprocess.Popen(
        [*run, str(tmp_path / "run")], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    for _ in range(20):  # let it get well into the first epoch (15 batches per epoch)
        child.stdout.readline()
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=60)
    assert child.returncode == INTERRUPTED_EXIT_CODE
    state = load_checkpoint(tmp_path / "run" / LAST)
    assert (state["epoch"], state["step_in_epoch"]) != (3, 0)  # stopped before the end
    retry = subprocess.run([*run, str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True)
    assert retry.returncode == 0, retry.stderr
    expected = load_checkpoint(tmp_path / "reference" / LAST)["model"]
    for name, tensor in load_checkpoint(tmp_path / "run" / LAST)["model"].items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


def test_a_non_finite_loss_stops_with_a_clear_error(tmp_path: Path) -> None:
    def exploding(model: torch.nn.Module, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y) * float("inf"), {}

    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* epoch 1, batch 1"):
        Trainer(_model(), exploding, SETTINGS, tmp_path).fit(linear_data(32, 1), linear_data(16, 2))


# -- parameter groups and frozen parameters ---------------------------------------------------


def _groups(model: torch.nn.Module) -> list[dict]:
    """First linear layer at the base rate, last one at 5× (the shape partial retraining uses)."""
    return [
        {"params": model[0].parameters()},
        {"params": model[3].parameters(), "lr_factor": 5.0},
    ]


def test_a_group_with_lr_factor_5_gets_5_times_the_learning_rate(tmp_path: Path) -> None:
    model = _model()
    trainer = Trainer(model, _Loss(), SETTINGS, tmp_path, param_groups=_groups(model))
    lrs = [group["lr"] for group in trainer.optimizer.param_groups]
    assert lrs == [SETTINGS.lr, 5 * SETTINGS.lr]
    result = trainer.fit(linear_data(32, 1), linear_data(16, 2))
    assert result.history[-1]["lr"] == SETTINGS.lr  # the history reports group 0


def test_default_groups_are_unchanged_and_frozen_parameters_are_not_optimised(
    tmp_path: Path,
) -> None:
    model = _model()
    model[0].weight.requires_grad_(False)
    before = model[0].weight.detach().clone()
    settings = TrainSettings(epochs=2, batch_size=16, lr=1e-2, seed=3, weight_decay=0.1)
    trainer = Trainer(model, _Loss(), settings, tmp_path)
    (group,) = trainer.optimizer.param_groups
    assert group["lr"] == settings.lr
    assert {id(p) for p in group["params"]} == {
        id(p) for p in model.parameters() if p is not model[0].weight
    }
    trainer.fit(linear_data(32, 1), linear_data(16, 2))
    torch.testing.assert_close(model[0].weight, before, rtol=0, atol=0)
    assert not torch.equal(model[0].bias, _model()[0].bias)  # the rest did train


def test_bad_groups_are_named(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(ValueError, match="lr_scale"):
        bad = [{"params": model.parameters(), "lr_scale": 2}]
        Trainer(model, _Loss(), SETTINGS, tmp_path, param_groups=bad)
    with pytest.raises(ValueError, match="not the model's"):
        foreign = [{"params": _model().parameters()}]
        Trainer(model, _Loss(), SETTINGS, tmp_path, param_groups=foreign)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="frozen"):
        Trainer(model, _Loss(), SETTINGS, tmp_path)


def test_sigterm_then_resume_with_groups_gives_the_same_weights(tmp_path: Path) -> None:
    train, val = linear_data(100, 1), linear_data(40, 2)

    def trainer(loss: _Loss, workdir: Path) -> Trainer:
        model = _model()
        return Trainer(model, loss, SETTINGS, workdir, param_groups=_groups(model))

    reference = trainer(_Loss(), tmp_path / "reference").fit(train, val)
    with pytest.raises(TrainingInterrupted):
        trainer(_Loss(signal_at=10), tmp_path / "run").fit(train, val)
    resumed = trainer(_Loss(), tmp_path / "run").fit(train, val)
    expected = load_checkpoint(reference.last_path)
    actual = load_checkpoint(resumed.last_path)
    assert [g["lr"] for g in actual["optimizer"]["param_groups"]] == [1e-2, 5e-2]
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(actual["model"][name], tensor, rtol=0, atol=0)


def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path: Path) -> None:
    train, val = linear_data(64, 1), linear_data(32, 2)
    settings = TrainSettings(epochs=2, batch_size=16, lr=1e-2, seed=0)
    print_a = data_fingerprint(train, val)
    assert print_a == data_fingerprint(linear_data(64, 1), linear_data(32, 2))
    other_train = linear_data(64, 5)
    print_b = data_fingerprint(other_train, val)
    assert print_b != print_a
    Trainer(_model(), _Loss(), settings, tmp_path, fingerprint=print_a).fit(train, val)
    loss = _Loss()
    Trainer(_model(), loss, settings, tmp_path, fingerprint=print_a).fit(train, val)
    assert loss.calls == 0  # same data: the finished run is resumed, nothing to train
    loss = _Loss()
    result = Trainer(_model(), loss, settings, tmp_path, fingerprint=print_b).fit(other_train, val)
    assert loss.calls == 2 * 4  # new data: trained afresh, two epochs of four batches
    fresh = Trainer(_model(), _Loss(), settings, tmp_path / "fresh").fit(other_train, val)
    for key, value in load_checkpoint(fresh.last_path)["model"].items():
        torch.testing.assert_close(load_checkpoint(result.last_path)["model"][key], value)
