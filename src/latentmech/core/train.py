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

Data parallelism: started by ``torchrun`` with ``WORLD_SIZE`` > 1 (see
:mod:`latentmech.core.distributed` and its ``torchrun_command``), ``fit`` joins a process group
(NCCL on CUDA, gloo on CPU; left again when ``fit`` ends), each rank runs on ``cuda:LOCAL_RANK``
(``device`` auto/cuda) and the model is wrapped in ``DistributedDataParallel``. Without
``WORLD_SIZE`` (or 1) none of this happens and runs are bit-identical to before.

* ``batch_size`` stays the global batch; each rank gets ``batch_size // WORLD_SIZE`` of it (it
  must divide). Epoch *e* visits the single-process run's permutation, in the same global
  batches, and rank r takes its contiguous part of each. A rank's loss is scaled so that DDP's
  averaged gradient is the gradient of the global batch's mean loss (exact for equal parts, and
  for an uneven last batch too; see ``distributed.shard``). The losses must therefore be batch
  means, as the size-weighted ``train_loss`` already assumes. A DDP run then follows the
  single-process trajectory up to float summation order (tested on CPU with two gloo processes:
  per-epoch losses within rtol 1e-5, weights within rtol 1e-5 + atol 1e-6; observed differences
  ~1e-7) as long as the loss draws no random numbers. Losses that do (dropout, augmentation, a
  VAE's sampling) draw per rank: rank 0 from the single-process stream, rank r > 0 from a stream
  derived from ``(seed, r)``, so shards get independent draws (statistically, not bitwise, the
  single-process run). Batch statistics (BatchNorm, used by the VE study's 3D VAE) are per
  shard, as plain DDP has them; ``sync_batchnorm`` converts them to SyncBatchNorm on CUDA
  (torch supports it there only), so every rank normalises with the global batch's statistics.
  A mid-epoch resume skips the global batches already done, as single-process.
* ``loss_fn`` gets the DDP wrapper while training (call it like the module, once per step;
  ``model.training`` works, the module's own methods are at ``model.module``) and the plain
  module for validation. Validation is sharded alike; the ranks' size-weighted sums are
  gathered, so every rank sees the same validation loss and takes the same best/early-stop
  decisions.
* Only rank 0 writes checkpoints and the history (atomically), followed by a barrier; the
  checkpoint holds the unwrapped module's ``state_dict`` (same keys as single-process) and every
  rank's RNG states (``rng_ranks``), so all ranks resume from the one ``last.pt``, exactly when
  the world size is unchanged. Every rank's ``fit`` returns the same :class:`FitResult`; code
  after it that writes outputs should do so on rank 0 only (``distributed.is_main_process``).
* Once per step the ranks all-reduce two small integers (non-finite loss, signal received):
  every rank stops at the same step when any got SIGTERM/SIGUSR1 (rank 0 writes the checkpoint,
  all raise :class:`TrainingInterrupted`) or when any loss is non-finite. That is one 16-byte
  all-reduce per step: measured 0.7 ms with gloo, two processes on a 2-core CPU node (latency,
  not bandwidth); with NCCL a tiny kernel plus the host sync the loop already makes when it reads
  the loss (not measured here, no GPU). Small next to a GPU step of a VAE or CNN; the gradient
  all-reduce DDP does anyway costs more.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from latentmech.core import distributed

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
    sync_batchnorm: bool = False  # under DDP on CUDA: BatchNorm statistics over the global batch

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


def _rank_seed(seed: int, rank: int, *more: int) -> int:
    """Seed of rank ``rank``'s RNG streams: ``seed`` itself on rank 0 (the single-process streams),
    a well-mixed derivative of ``(seed, rank, …)`` elsewhere."""
    if rank == 0 and not more:
        return seed
    return int(np.random.SeedSequence([seed % 2**63, rank, *more]).generate_state(1)[0])


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

    def __init__(self, total_steps: int, log_every: int, enabled: bool = True) -> None:
        self.total = total_steps
        self.every = max(1, log_every)
        self.interactive = sys.stderr.isatty()
        self.enabled = enabled

    def update(self, step: int, epoch: int, loss: float) -> None:
        if not self.enabled:
            return
        if self.interactive:
            width = 30
            done = int(width * step / max(1, self.total))
            bar = "#" * done + "." * (width - done)
            sys.stderr.write(f"\repoch {epoch} [{bar}] step {step}/{self.total} loss {loss:.4g}")
            sys.stderr.flush()
        elif step % self.every == 0:
            log.info("epoch %d step %d/%d loss %.6g", epoch, step, self.total, loss)

    def close(self) -> None:
        if self.interactive and self.enabled:
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
        #: torchrun's processes (1: a plain single-process run)
        self.world = distributed.world_from_env()
        if self.world.distributed:
            if settings.batch_size % self.world.size:
                raise ValueError(
                    f"batch_size {settings.batch_size} (the global batch) is not divisible by "
                    f"the {self.world.size} data-parallel processes: make it a multiple of "
                    f"{self.world.size}"
                )
            self.device = distributed.rank_device(settings.device, self.world)
        else:
            self.device = resolve_device(settings.device)
        #: the plain module (never the DDP wrapper): its state_dict is what checkpoints hold
        if self.world.distributed and settings.sync_batchnorm and self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self._net: torch.nn.Module = self.model  # what training calls: the DDP wrapper in fit
        self._sharded = False  # True while fit runs data-parallel
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

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.settings.seed * 100_003 + epoch)

    def _loader(self, data: Dataset, epoch: int | None) -> DataLoader:
        """Shuffled with a generator seeded by (seed, epoch) when ``epoch`` is given."""
        generator = None
        if epoch is not None:
            generator = self._epoch_generator(epoch)
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

    def _global_batches(self, n: int, epoch: int | None) -> list[list[int]]:
        """The index batches :meth:`_loader` visits ``n`` samples in, in its order.

        Drawn by an index-only DataLoader built like :meth:`_loader` (same sampler, same
        generator and so the same draws), so the permutation is the single-process one by
        construction and stays so across torch versions.
        """
        shuffle = epoch is not None
        indices = DataLoader(
            range(n), batch_size=self.settings.batch_size, shuffle=shuffle, collate_fn=list,
            generator=self._epoch_generator(epoch) if shuffle else torch.Generator(),
        )  # fmt: skip
        return list(indices)

    def _rank_loader(self, data: Dataset, batches: list[list[int]], seed: int) -> DataLoader:
        """This rank's batches (index lists); ``seed`` feeds the workers' seeds, so the global
        RNG is not drawn from (as in :meth:`_loader`) and a resumed run draws as the original."""
        return DataLoader(
            data,
            batch_sampler=batches,
            num_workers=self.settings.num_workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=self.collate_fn,
            generator=torch.Generator().manual_seed(seed),
        )

    def _epoch_batches(
        self, data: Dataset, epoch: int, skip: int
    ) -> Iterator[tuple[int, Any, float]]:
        """``(global step, this rank's batch, loss factor)`` of one epoch from step ``skip`` on.

        Single-process: the factor is 1 and the batches are :meth:`_loader`'s. Data-parallel:
        this rank's :func:`~latentmech.core.distributed.shard` of each global batch (factor 0:
        a stand-in sample on a rank the batch left empty).
        """
        if not self._sharded:
            for step, batch in enumerate(self._loader(data, epoch)):
                if step < skip:  # already done before the interruption; same order by construction
                    continue
                yield step, batch, 1.0
            return
        parts = [
            distributed.shard(b, self.world) for b in self._global_batches(len(data), epoch)[skip:]
        ]
        loader = self._rank_loader(
            data, [p for p, _ in parts], self.settings.seed * 100_003 + epoch
        )
        for i, (batch, (_, factor)) in enumerate(zip(loader, parts, strict=True)):
            yield skip + i, batch, factor

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
        partial: tuple[float, int] = (0.0, 0), rng_ranks: list | None = None,
    ) -> dict:  # fmt: skip
        """What ``last.pt`` holds; data-parallel runs add every rank's RNG states."""
        extra = {} if rng_ranks is None else {"rng_ranks": rng_ranks, "world_size": len(rng_ranks)}
        return extra | {
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
            if self.world.is_main:
                log.warning("%s was written for other training data: starting afresh", path)
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        ranks = state.get("rng_ranks")
        if self.world.distributed and ranks is not None and len(ranks) == self.world.size:
            _set_rng_state(ranks[self.world.rank])
        else:
            _set_rng_state(state["rng"])
            if self.world.rank > 0:  # another world size wrote it: a fresh stream of our own
                seed = _rank_seed(self.settings.seed, self.world.rank, state["epoch"],
                                  state["step_in_epoch"])  # fmt: skip
                seed_everything(seed, self.settings.deterministic)
        if self.world.is_main:
            log.info(
                "resuming from %s (epoch %d, step %d)", path, state["epoch"], state["step_in_epoch"]
            )
        return state

    def _save(self, obj: Any, name: str) -> None:
        """Rank 0 writes (atomically); the others do not."""
        if self.world.is_main:
            _atomic_save(obj, self.workdir / name)

    def _rng_ranks(self) -> list | None:
        """Every rank's RNG states (a collective) when data-parallel, else None."""
        return distributed.gather_all(_rng_state()) if self._sharded else None

    def _barrier(self) -> None:
        if self._sharded:
            distributed.barrier(self.device)

    def _write_history(self, history: list[dict[str, float]]) -> Path:
        path = self.workdir / HISTORY
        if not history or not self.world.is_main:
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
        """Mean loss and metrics over ``data`` in eval mode (weighted by batch size).

        Data-parallel (inside ``fit``), each rank evaluates its shards of the batches and the
        ranks' size-weighted sums are combined: every rank returns the same numbers.
        """
        self._net.eval()
        batches: Iterable[Any]
        if self._sharded:
            parts = [
                distributed.shard(b, self.world) for b in self._global_batches(len(data), None)
            ]
            mine = [part for part, factor in parts if factor > 0]
            batches = self._rank_loader(data, mine, self.settings.seed)
        else:
            batches = self._loader(data, epoch=None)
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
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
        if self._sharded:  # the same sums, in rank order, on every rank
            totals, count = _add_up(distributed.gather_all((totals, count)))
        return {k: v / max(1, count) for k, v in totals.items()}

    def fit(self, train: Dataset, validation: Dataset) -> FitResult:
        """Train, resuming from ``workdir/last.pt`` if it exists; raise on a signal after saving.

        Under torchrun (``WORLD_SIZE`` > 1) the process group lives for this call only.
        """
        with distributed.process_group(self.world, self.device):
            self._sharded = self.world.distributed
            try:
                return self._fit(train, validation)
            finally:
                self._sharded = False
                self._net = self.model

    def _fit(self, train: Dataset, validation: Dataset) -> FitResult:
        settings = self.settings
        seed_everything(_rank_seed(settings.seed, self.world.rank), settings.deterministic)
        if self.world.is_main:
            log.info("training on %s, world size %d", self.device, self.world.size)
        state = self._resume()
        if self._sharded:
            self._agree_on(state)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self._net = DistributedDataParallel(self.model, device_ids=device_ids)
        epoch = state["epoch"] if state else 0
        skip = state["step_in_epoch"] if state else 0
        partial = (0.0, 0)  # loss sum and count of the epoch so far: rank 0 carries the global one
        if state and self.world.is_main:
            partial = (state["epoch_loss_sum"], state["epoch_count"])
        best = state["best_val_loss"] if state else math.inf
        stale = state["stale_epochs"] if state else 0
        history: list[dict[str, float]] = list(state["history"]) if state else []
        steps_per_epoch = math.ceil(len(train) / settings.batch_size)
        stopped_early = False
        progress = _Progress(steps_per_epoch, settings.log_every, enabled=self.world.is_main)
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
                    self._save({"model": self.model.state_dict(), "epoch": epoch}, BEST)
                else:
                    stale += 1
                rng_ranks = self._rng_ranks()
                if self.world.is_main:
                    _atomic_save(self._state(epoch, 0, best, stale, history, rng_ranks=rng_ranks),
                                 self.workdir / LAST)  # fmt: skip
                self._write_history(history)
                self._barrier()
                if self.world.is_main:
                    log.info(
                        "epoch %d: train %.6g, validation %.6g (best %.6g)",
                        epoch,
                        train_loss,
                        val["loss"],
                        best,
                    )
                if settings.patience is not None and stale >= settings.patience:
                    stopped_early = True
                    if self.world.is_main:
                        log.info("early stop: no validation improvement for %d epochs", stale)
                    break
        progress.close()
        history_path = self._write_history(history)
        self._barrier()
        return FitResult(
            best_path=self.workdir / BEST,
            last_path=self.workdir / LAST,
            history_path=history_path,
            best_val_loss=best,
            epochs_run=epoch,
            stopped_early=stopped_early,
            history=history,
        )

    def _agree_on(self, state: Mapping[str, Any] | None) -> None:
        """Every rank must have resumed from the same point (they read the same ``last.pt``)."""
        point = None if state is None else (state["epoch"], state["step_in_epoch"])
        points = distributed.gather_all(point)
        if any(p != points[0] for p in points):
            raise RuntimeError(
                f"the data-parallel ranks resumed from different points of {self.workdir / LAST}: "
                f"{points} (each rank's (epoch, step), None: afresh)"
            )

    def _train_epoch(
        self, train: Dataset, epoch: int, skip: int, partial: tuple[float, int], flag: dict,
        progress_state: tuple[float, int, list], progress: _Progress,
    ) -> float:  # fmt: skip
        """One epoch from batch ``skip`` on (``partial``: loss sum and count of the batches
        before it); returns the epoch's mean training loss."""
        self._net.train()
        total, count = partial
        for step, batch, factor in self._epoch_batches(train, epoch, skip):
            batch = self._to_device(batch)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, _ = self.loss_fn(self._net, batch)
            finite = bool(torch.isfinite(loss.detach()))
            stop = None
            if self._sharded:  # one tiny all-reduce: all ranks stop at the same step, or none
                bad, signum = distributed.max_across([not finite, flag["signum"] or 0], self.device)
                finite, stop = not bad, signum or None
            if not finite:
                value = float(loss.detach())
                what = f"on some rank (rank {self.world.rank}: {value})" if self._sharded else ""
                raise FloatingPointError(
                    f"non-finite training loss {what or f'({value})'} at epoch {epoch + 1}, batch "
                    f"{step + 1}: lower the learning rate or check the inputs; the last good "
                    f"checkpoint is {self.workdir / LAST}"
                )
            (loss if factor == 1.0 else loss * factor).backward()
            self.optimizer.step()
            size = _batch_size(batch) if factor else 0
            total += float(loss.detach()) * size
            count += size
            progress.update(step + 1, epoch + 1, float(loss.detach()))
            if not self._sharded:
                stop = flag["signum"]
            if stop is not None:
                self._interrupt(int(stop), epoch, step + 1, (total, count), progress_state)
        if self._sharded:
            total, count = distributed.sum_across([total, count], self.device)
        return total / max(1, count)

    def _interrupt(
        self, signum: int, epoch: int, step_in_epoch: int, partial: tuple[float, int],
        progress_state: tuple[float, int, list],
    ) -> NoReturn:  # fmt: skip
        """Checkpoint (rank 0) after a signal, then raise :class:`TrainingInterrupted` (all)."""
        path = self.workdir / LAST
        best, stale, history = progress_state
        if self._sharded:  # the checkpoint carries the global partial sums
            total, count = distributed.sum_across(partial, self.device)
            partial = (total, int(count))
        rng_ranks = self._rng_ranks()
        if self.world.is_main:
            state = self._state(epoch, step_in_epoch, best, stale, history, partial, rng_ranks)
            _atomic_save(state, path)
            log.warning("signal %d: checkpoint written to %s, exiting", signum, path)
        self._barrier()
        raise TrainingInterrupted(signum, path)


def _add_up(parts: Sequence[tuple[Mapping[str, float], int]]) -> tuple[dict[str, float], int]:
    """Sum the ranks' ``(size-weighted sums, count)`` pairs, in rank order."""
    totals: dict[str, float] = {}
    count = 0
    for rank_totals, rank_count in parts:
        for key, value in rank_totals.items():
            totals[key] = totals.get(key, 0.0) + value
        count += rank_count
    return totals, count


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
