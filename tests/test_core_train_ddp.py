"""Data-parallel training: two gloo processes follow the one-process loss trajectory.

One ``torchrun`` launch (``python -m torch.distributed.run --standalone --nproc_per_node 2``) of
a small script trains the tiny regression model below three times: on 101 samples (global
batches 32, 32, 32, 5: the last split 3 + 2), on 97 samples (a last batch of 1 leaves rank 1
without a sample), and on 101 samples again with a SIGTERM to rank 1 alone mid-epoch, then
resumed. The one-process reference runs here. The model has no dropout and the loss draws no
random numbers: random draws are per rank under DDP (by design), so only a deterministic loss
can follow the one-process trajectory.

Tolerance: per-epoch train/validation losses within rtol 1e-5, final weights within rtol 1e-5,
atol 1e-6. DDP sums the two shards' gradients where one process sums the whole batch, so the
runs differ by float32 rounding only (observed ~1e-7).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from latentmech.core import distributed
from latentmech.core.distributed import World, shard, torchrun_command, world_from_env
from latentmech.core.train import (
    BEST,
    HISTORY,
    INTERRUPTED_EXIT_CODE,
    LAST,
    Trainer,
    TrainSettings,
    load_checkpoint,
)
from tests.helpers import REPO, linear_data

RTOL, ATOL = 1e-5, 1e-6
SETTINGS = TrainSettings(epochs=3, batch_size=32, lr=5e-2, seed=3)
#: scenario → number of training samples (validation: 37 samples in every scenario)
SIZES = {"uneven": 101, "empty_shard": 97}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


class _Loss:
    """Batch-mean MSE (one forward per call; no random draws); a SIGTERM to ourselves at
    training call ``signal_at`` (counted from 1 over the run)."""

    def __init__(self, signal_at: int | None = None) -> None:
        self.calls = 0
        self.signal_at = signal_at

    def __call__(self, model: torch.nn.Module, batch):
        x, y = batch
        self.calls += model.training
        if model.training and self.calls == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        predicted = model(x)
        loss = torch.nn.functional.mse_loss(predicted, y)
        return loss, {"mae": torch.mean(torch.abs(predicted.detach() - y)).item()}


SCRIPT = """
import json, os, sys
from pathlib import Path

import torch
import torch.distributed as dist

from latentmech.core.train import Trainer, TrainingInterrupted
from tests.helpers import linear_data
from tests.test_core_train_ddp import SETTINGS, SIZES, _Loss, _model

out, rank = Path(sys.argv[1]), int(os.environ["RANK"])
report = {"world_size": int(os.environ["WORLD_SIZE"])}
for name, n in SIZES.items():
    model = _model()
    trainer = Trainer(model, _Loss(), SETTINGS, out / name)
    report[name] = {"device": str(trainer.device), "group_after_fit": None}
    trainer.fit(linear_data(n, 1), linear_data(37, 2))
    report[name]["group_after_fit"] = dist.is_initialized()
    torch.save(model.state_dict(), out / f"{name}.rank{rank}.pt")  # outside the workdir
try:  # rank 1 alone gets SIGTERM in its 6th training step (epoch 2, step 2 of 4)
    loss = _Loss(signal_at=6 if rank == 1 else None)
    Trainer(_model(), loss, SETTINGS, out / "resumed").fit(linear_data(101, 1), linear_data(37, 2))
    report["interrupted"] = None
except TrainingInterrupted as stop:
    report["interrupted"] = {"code": stop.code, "signum": stop.signum, "calls": loss.calls}
Trainer(_model(), _Loss(), SETTINGS, out / "resumed").fit(linear_data(101, 1), linear_data(37, 2))
(out / f"report.rank{rank}.json").write_text(json.dumps(report))
"""


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of one two-process torchrun launch of :data:`SCRIPT`."""
    out = tmp_path_factory.mktemp("ddp")
    script = out / "ddp_script.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(script), str(out)]  # fmt: skip
    run = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    return out


def _reference(tmp_path: Path, n: int):
    model = _model()
    result = Trainer(model, _Loss(), SETTINGS, tmp_path).fit(linear_data(n, 1), linear_data(37, 2))
    return model, result


@pytest.mark.parametrize("name", list(SIZES))
def test_two_gloo_processes_follow_the_one_process_trajectory(
    ddp_runs: Path, tmp_path: Path, name: str
) -> None:
    _, reference = _reference(tmp_path, SIZES[name])
    ddp = pd.read_csv(ddp_runs / name / HISTORY)
    one = pd.read_csv(reference.history_path)
    assert list(ddp.columns) == list(one.columns) and len(ddp) == SETTINGS.epochs
    for column in ("train_loss", "val_loss", "val_mae"):
        np.testing.assert_allclose(ddp[column], one[column], rtol=RTOL, err_msg=column)
    assert ddp["val_loss"].iloc[-1] < 0.5 * ddp["val_loss"].iloc[0]  # it did learn
    expected = load_checkpoint(reference.last_path)
    actual = load_checkpoint(ddp_runs / name / LAST)
    assert actual["model"].keys() == expected["model"].keys()  # no "module." prefix
    for key, tensor in expected["model"].items():
        torch.testing.assert_close(actual["model"][key], tensor, rtol=RTOL, atol=ATOL)
    assert (
        load_checkpoint(ddp_runs / name / BEST)["epoch"]
        == load_checkpoint(reference.best_path)["epoch"]
    )
    assert actual["world_size"] == 2 and len(actual["rng_ranks"]) == 2
    # one set of files, written by rank 0, and both ranks end with the same weights
    assert {p.name for p in (ddp_runs / name).iterdir()} == {BEST, LAST, HISTORY}
    ranks = [torch.load(ddp_runs / f"{name}.rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, tensor in actual["model"].items():
        for weights in ranks:
            torch.testing.assert_close(weights[key], tensor, rtol=0, atol=0)
    for r in (0, 1):
        report = json.loads((ddp_runs / f"report.rank{r}.json").read_text())
        assert report["world_size"] == 2
        assert report[name] == {"device": "cpu", "group_after_fit": False}


def test_a_signal_to_one_rank_stops_all_at_the_same_step_and_the_retry_resumes(
    ddp_runs: Path,
) -> None:
    reports = [json.loads((ddp_runs / f"report.rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:  # both stopped (rank 0 never got a signal), after the same step
        assert report["interrupted"] == {
            "code": INTERRUPTED_EXIT_CODE,
            "signum": signal.SIGTERM,
            "calls": 6,
        }
    history = pd.read_csv(ddp_runs / "resumed" / HISTORY)
    uninterrupted = pd.read_csv(ddp_runs / "uneven" / HISTORY)
    pd.testing.assert_frame_equal(
        history.drop(columns="seconds"), uninterrupted.drop(columns="seconds")
    )
    resumed = load_checkpoint(ddp_runs / "resumed" / LAST)["model"]
    for key, tensor in load_checkpoint(ddp_runs / "uneven" / LAST)["model"].items():
        torch.testing.assert_close(resumed[key], tensor, rtol=0, atol=0)


def test_the_global_batches_are_the_one_process_loaders(tmp_path: Path) -> None:
    n = 101
    trainer = Trainer(_model(), _Loss(), SETTINGS, tmp_path)
    data = TensorDataset(torch.arange(n))
    for epoch in (0, 1, 7):
        expected = [batch.tolist() for (batch,) in trainer._loader(data, epoch)]
        assert trainer._global_batches(n, epoch) == expected
    assert trainer._global_batches(n, None) == [
        list(range(i, min(n, i + 32))) for i in (0, 32, 64, 96)
    ]


def test_shards_split_every_global_batch_and_weight_the_loss() -> None:
    batch = list(range(10, 15))  # 5 samples on 2 ranks: 3 + 2
    assert shard(batch, World(2, 0)) == ([10, 11, 12], 3 * 2 / 5)
    assert shard(batch, World(2, 1)) == ([13, 14], 2 * 2 / 5)
    full = list(range(32))
    assert [shard(full, World(4, r)) for r in range(4)] == [
        (full[8 * r : 8 * r + 8], 1.0) for r in range(4)
    ]
    assert shard([7], World(2, 1)) == ([7], 0.0)  # nothing left: a stand-in with factor 0


def test_a_batch_size_the_processes_do_not_divide_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    settings = TrainSettings(epochs=1, batch_size=33, device="cpu")
    with pytest.raises(ValueError, match=r"batch_size 33 .* not divisible by the 2"):
        Trainer(_model(), _Loss(), settings, tmp_path)
    trainer = Trainer(_model(), _Loss(), TrainSettings(batch_size=32, device="cpu"), tmp_path)
    assert trainer.world == World(2, 0, 0)


def test_the_torchrun_environment_is_read_and_checked() -> None:
    assert world_from_env({}) == World() and not World().distributed
    assert world_from_env({"WORLD_SIZE": "1"}) == World()
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == World(4, 3, 1)
    with pytest.raises(ValueError, match="RANK is not set"):
        world_from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="do not fit"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})
    if not torch.cuda.is_available():
        assert distributed.rank_device("auto", World(2, 1, 1)) == torch.device("cpu")
    with pytest.raises((ValueError, RuntimeError)):
        distributed.rank_device("cuda:1", World(2, 0, 0))


def test_torchrun_command() -> None:
    assert torchrun_command(4) == [
        "torchrun", "--standalone", "--nproc_per_node", "4",
        "--signals-to-handle", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "-m", "latentmech.cli",
    ]  # fmt: skip
    assert torchrun_command(1) == ["latentmech"]
