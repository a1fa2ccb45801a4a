"""The one training loop every model of the project goes through.

A model contributes its module and a loss function; this loop brings the rest: device choice
(``auto``: CUDA when present, else CPU), optional bf16 autocast on CUDA, seeding and
deterministic CPU runs, Adam, best-on-validation and last checkpoints, resume from the last
checkpoint (optimizer and every RNG state included, mid-epoch too), SIGTERM/SIGUSR1 handling
(checkpoint, then exit non-zero so a retried or requeued job resumes), early stopping, a CSV
history, and a progress line on an interactive terminal or plain log lines otherwise.

Parameter groups: by default Adam gets one group of every trainable parameter at ``lr``; a
caller may instead pass groups, each with its own ``lr_factor`` (a multiple of ``lr``), e.g. to
train newly added kernels faster than the rest. Frozen parameters (``requires_grad`` False) are
never given to the optimizer, so neither Adam nor weight decay touches them. The history's
``lr`` column is group 0's.

Exact resumption: the order of batches in epoch *e* depends only on ``(seed, e)``, and the
global torch/numpy/python RNG states are saved with the weights, so a run interrupted after any
batch and resumed ends with the same weights as an uninterrupted run (tested on CPU).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

#: Exit status of a run stopped by SIGTERM/SIGUSR1 after writing its checkpoint (EX_TEMPFAIL):
#: non-zero so Snakemake retries (or Slurm requeues) the job, which then resumes.
INTERRUPTED_EXIT_CODE = 75
LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.csv"

LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, Mapping[str, float]]]


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of the loop itself (a model's own live with the model)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1" …
    bf16: bool = False  # autocast to bfloat16 on CUDA; ignored (with a warning) on CPU
    deterministic: bool = True  # deterministic algorithms (CPU runs are then bit-reproducible)
    patience: int | None = None  # epochs without validation improvement before stopping
    num_workers: int = 0
    log_every: int = 50  # steps between log lines when not on a terminal

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainSettings:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"training settings: unknown key(s) {unknown}; known: {sorted(known)}")
        values = dict(d)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


@dataclass
class FitResult:
    """What a finished run reports: where the checkpoints are and how it went."""

    best_path: Path
    last_path: Path
    history_path: Path
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)


class TrainingInterrupted(SystemExit):
    """Raised after a signal-triggered checkpoint; exits with :data:`INTERRUPTED_EXIT_CODE`."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        super().__init__(INTERRUPTED_EXIT_CODE)
        self.signum = signum
        self.checkpoint = checkpoint


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """Python's random state is nested tuples; the checkpoint may hand back lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by this loop (``weights_only=True``: no arbitrary pickles)."""
    return torch.load(path, map_location=device, weights_only=True)


@contextmanager
def _signal_flag(signals: tuple[int, ...]) -> Iterator[dict[str, int | None]]:
    """Record the first of ``signals`` received instead of dying, for the loop to act on."""
    flag: dict[str, int | None] = {"signum": None}

    def handler(signum: int, _frame: Any) -> None:
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Progress:
    """A carriage-return progress line on a terminal, periodic log lines otherwise."""

    def __init__(self, total_steps: int, log_every: int) -> None:
        self.total = total_steps
        self.every = max(1, log_every)
        self.interactive = sys.stderr.isatty()

    def update(self, step: int, epoch: int, loss: float) -> None:
        if self.interactive:
            width = 30
            done = int(width * step / max(1, self.total))
            bar = "#" * done + "." * (width - done)
            sys.stderr.write(f"\repoch {epoch} [{bar}] step {step}/{self.total} loss {loss:.4g}")
            sys.stderr.flush()
        elif step % self.every == 0:
            log.info("epoch %d step %d/%d loss %.6g", epoch, step, self.total, loss)

    def close(self) -> None:
        if self.interactive:
            sys.stderr.write("\n")


class Trainer:
    """Fits ``model`` with ``loss_fn(model, batch) -> (loss, metrics)``; see the module docstring."""

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        settings: TrainSettings,
        workdir: str | Path,
        collate_fn: Callable | None = None,
        param_groups: Sequence[Mapping[str, Any]] | None = None,
        fingerprint: str = "",
    ) -> None:
        self.settings = settings
        self.fingerprint = fingerprint
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(settings.device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.collate_fn = collate_fn
        self.optimizer = torch.optim.Adam(
            _optimizer_groups(self.model, param_groups, settings.lr),
            lr=settings.lr,
            betas=settings.betas,
            weight_decay=settings.weight_decay,
        )
        if settings.bf16 and self.device.type != "cuda":
            log.warning("bf16 autocast requested on %s: ignored (CUDA only)", self.device)

    # -- data -----------------------------------------------------------------------------------

    def _loader(self, data: Dataset, epoch: int | None) -> DataLoader:
        """Shuffled with a generator seeded by (seed, epoch) when ``epoch`` is given."""
        generator = None
        if epoch is not None:
            generator = torch.Generator().manual_seed(self.settings.seed * 100_003 + epoch)
        return DataLoader(
            data,
            batch_size=self.settings.batch_size,
            shuffle=epoch is not None,
            generator=generator,
            num_workers=self.settings.num_workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=self.collate_fn,
            drop_last=False,
        )

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, Mapping):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, list | tuple):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    def _autocast(self):
        if self.settings.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    # -- checkpoints -----------------------------------------------------------------------------

    def _state(
        self, epoch: int, step_in_epoch: int, best: float, stale: int, history: list,
        partial: tuple[float, int] = (0.0, 0),
    ) -> dict:  # fmt: skip
        return {
            "epoch_loss_sum": partial[0],
            "epoch_count": partial[1],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "best_val_loss": best,
            "stale_epochs": stale,
            "history": history,
            "rng": _rng_state(),
            "fingerprint": self.fingerprint,
            "settings": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self.settings).items()
            },
        }

    def _resume(self) -> dict[str, Any] | None:
        path = self.workdir / LAST
        if not path.exists():
            return None
        state = load_checkpoint(path, self.device)
        if state.get("fingerprint") != self.fingerprint:
            log.warning("%s was written for other training data: starting afresh", path)
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        log.info(
            "resuming from %s (epoch %d, step %d)", path, state["epoch"], state["step_in_epoch"]
        )
        return state

    def _write_history(self, history: list[dict[str, float]]) -> Path:
        path = self.workdir / HISTORY
        if not history:
            return path
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        os.replace(tmp, path)
        return path

    # -- loop ------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, data: Dataset) -> dict[str, float]:
        """Mean loss and metrics over ``data`` in eval mode (weighted by batch size)."""
        self.model.eval()
        totals: dict[str, float] = {}
        count = 0
        for batch in self._loader(data, epoch=None):
            batch = self._to_device(batch)
            with self._autocast():
                loss, metrics = self.loss_fn(self.model, batch)
            size = _batch_size(batch)
            for key, value in {
                "loss": float(loss),
                **{k: float(v) for k, v in metrics.items()},
            }.items():
                totals[key] = totals.get(key, 0.0) + value * size
            count += size
        return {k: v / max(1, count) for k, v in totals.items()}

    def fit(self, train: Dataset, validation: Dataset) -> FitResult:
        """Train, resuming from ``workdir/last.pt`` if it exists; raise on a signal after saving."""
        settings = self.settings
        seed_everything(settings.seed, settings.deterministic)
        state = self._resume()
        epoch = state["epoch"] if state else 0
        skip = state["step_in_epoch"] if state else 0
        partial = (state["epoch_loss_sum"], state["epoch_count"]) if state else (0.0, 0)
        best = state["best_val_loss"] if state else math.inf
        stale = state["stale_epochs"] if state else 0
        history: list[dict[str, float]] = list(state["history"]) if state else []
        steps_per_epoch = math.ceil(len(train) / settings.batch_size)
        stopped_early = False
        progress = _Progress(steps_per_epoch, settings.log_every)
        with _signal_flag((signal.SIGTERM, signal.SIGUSR1)) as flag:
            while epoch < settings.epochs:
                start = time.perf_counter()
                train_loss = self._train_epoch(
                    train, epoch, skip, partial, flag, (best, stale, history), progress
                )
                skip, partial = 0, (0.0, 0)
                val = self.evaluate(validation)
                row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val["loss"],
                       **{f"val_{k}": v for k, v in val.items() if k != "loss"},
                       "lr": self.optimizer.param_groups[0]["lr"],
                       "seconds": time.perf_counter() - start}  # fmt: skip
                history.append(row)
                epoch += 1
                if val["loss"] < best:
                    best, stale = val["loss"], 0
                    _atomic_save(
                        {"model": self.model.state_dict(), "epoch": epoch}, self.workdir / BEST
                    )
                else:
                    stale += 1
                _atomic_save(self._state(epoch, 0, best, stale, history), self.workdir / LAST)
                self._write_history(history)
                log.info(
                    "epoch %d: train %.6g, validation %.6g (best %.6g)",
                    epoch,
                    train_loss,
                    val["loss"],
                    best,
                )
                if settings.patience is not None and stale >= settings.patience:
                    stopped_early = True
                    log.info("early stop: no validation improvement for %d epochs", stale)
                    break
        progress.close()
        return FitResult(
            best_path=self.workdir / BEST,
            last_path=self.workdir / LAST,
            history_path=self._write_history(history),
            best_val_loss=best,
            epochs_run=epoch,
            stopped_early=stopped_early,
            history=history,
        )

    def _train_epoch(
        self, train: Dataset, epoch: int, skip: int, partial: tuple[float, int], flag: dict,
        progress_state: tuple[float, int, list], progress: _Progress,
    ) -> float:  # fmt: skip
        """One epoch from batch ``skip`` on (``partial``: loss sum and count of the batches
        before it); returns the epoch's mean training loss."""
        self.model.train()
        total, count = partial
        for step, batch in enumerate(self._loader(train, epoch)):
            if step < skip:  # already done before the interruption; same order by construction
                continue
            batch = self._to_device(batch)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, _ = self.loss_fn(self.model, batch)
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(
                    f"non-finite training loss ({float(loss.detach())}) at epoch {epoch + 1}, batch "
                    f"{step + 1}: lower the learning rate or check the inputs; the last good "
                    f"checkpoint is {self.workdir / LAST}"
                )
            loss.backward()
            self.optimizer.step()
            size = _batch_size(batch)
            total += float(loss.detach()) * size
            count += size
            progress.update(step + 1, epoch + 1, float(loss.detach()))
            if flag["signum"] is not None:
                path = self.workdir / LAST
                best, stale, history = progress_state
                state = self._state(epoch, step + 1, best, stale, history, (total, count))
                _atomic_save(state, path)
                log.warning("signal %d: checkpoint written to %s, exiting", flag["signum"], path)
                raise TrainingInterrupted(int(flag["signum"]), path)
        return total / max(1, count)


def data_fingerprint(*datasets: Any) -> str:
    """A digest of training data (tensors, arrays or TensorDatasets), for :class:`Trainer`.

    A checkpoint remembers the fingerprint of the data it was trained on; resuming from one made
    for other data (same settings and code, new inputs) starts afresh instead of reusing it.
    """
    digest = hashlib.sha256()

    def add(item: Any) -> None:
        if hasattr(item, "tensors"):
            for tensor in item.tensors:
                add(tensor)
        elif isinstance(item, torch.Tensor):
            add(item.detach().cpu().contiguous().numpy())
        else:
            array = np.ascontiguousarray(item)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())

    for dataset in datasets:
        add(dataset)
    return digest.hexdigest()[:16]


#: Keys a caller's parameter group may hold.
GROUP_KEYS = ("params", "lr_factor")


def _optimizer_groups(
    model: torch.nn.Module, groups: Sequence[Mapping[str, Any]] | None, lr: float
) -> list[dict[str, Any]]:
    """Adam's groups: each ``lr_factor`` turned into an ``lr``, frozen parameters left out.

    ``None`` is one group of every parameter. A group left empty by freezing is kept (empty), so
    group indices, and with them the optimizer's checkpointed state, do not depend on freezing.
    """
    if groups is None:
        groups = [{"params": model.parameters()}]
    owned = {id(p) for p in model.parameters()}
    result: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        unknown = sorted(set(group) - set(GROUP_KEYS))
        if unknown:
            raise ValueError(f"parameter group {i}: unknown key(s) {unknown}; known: {GROUP_KEYS}")
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if any(id(p) not in owned for p in params):
            raise ValueError(f"parameter group {i} holds parameters that are not the model's")
        trainable = [p for p in params if p.requires_grad]
        result.append({"params": trainable, "lr": lr * float(group.get("lr_factor", 1.0))})
    if not any(g["params"] for g in result):
        raise ValueError("no trainable parameter: every parameter is frozen or in no group")
    grouped = {id(p) for g in result for p in g["params"]}
    left_out = sum(1 for p in model.parameters() if p.requires_grad and id(p) not in grouped)
    if left_out:
        log.warning("%d trainable parameter tensor(s) are in no group: not optimised", left_out)
    return result


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, list | tuple):
        return _batch_size(batch[0])
    return 1
