"""Data-parallel training (DDP) when ``torchrun`` starts one process per GPU.

:class:`~latentmech.core.train.Trainer` reads the torchrun environment (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``) through :func:`world_from_env`. With ``WORLD_SIZE`` unset or 1 nothing
here is used and a run is exactly the single-process run. With more processes the trainer, for
the duration of ``fit``, joins a process group (NCCL on CUDA, gloo on CPU), wraps the model in
``DistributedDataParallel`` and gives every rank its share of each global batch (see
:func:`shard`); this module holds those pieces and the few collectives the loop needs.

A Snakemake rule that gets more than one GPU runs its stage through :func:`torchrun_command`::

    shell: " ".join(torchrun_command(resources.gpus)) + " dic train-vae …"

``torchrun --standalone`` starts a private rendezvous on a free port (several jobs on one node do
not collide) and exits non-zero when a worker does (a worker's exit status, e.g. 75 after a
signal checkpoint, becomes torchrun's 1): Snakemake then retries and the retry resumes. torchrun
forwards the signals of :data:`TORCHRUN_SIGNALS` to its workers (its default lacks SIGUSR1, of
which the agent would die and leave the workers running) and kills them after
``--shutdown-timeout`` seconds (default 30), ample for the checkpoint of one step. (Checked by
hand on CPU: SIGTERM or SIGUSR1 to torchrun → mid-epoch ``last.pt``, torchrun exit status 1.)

After ``fit`` the process group is gone; code that writes a stage's outputs should do so on one
process only, e.g. ``if is_main_process(): …`` (the rank is read from the environment).
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from latentmech.core.workflow import TORCHRUN_SIGNALS, torchrun_command  # noqa: F401 (re-exported)

_GROUPS = itertools.count()  # process groups this process opened, for their store prefixes


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes (1 process: not distributed)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The :class:`World` torchrun describes in ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``."""
    env = os.environ if environ is None else environ
    try:
        size = int(env.get("WORLD_SIZE", "1") or "1")
        if size <= 1:
            return World()
        rank = int(env["RANK"])
        local_rank = int(env.get("LOCAL_RANK", rank))
    except KeyError as error:
        raise ValueError(f"WORLD_SIZE={env['WORLD_SIZE']} but {error.args[0]} is not set: "
                         "start data-parallel runs with torchrun") from None  # fmt: skip
    except ValueError as error:
        raise ValueError(f"malformed torchrun environment: {error}") from None
    if not 0 <= rank < size or local_rank < 0:
        raise ValueError(f"RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE={size}")
    return World(size, rank, local_rank)


def is_main_process() -> bool:
    """True in a single-process run and in rank 0 of a torchrun job."""
    return world_from_env().is_main


def rank_device(name: str, world: World) -> torch.device:
    """The device of one rank: ``auto``/``cuda`` → ``cuda:LOCAL_RANK`` when CUDA exists, else CPU.

    A specific GPU (``cuda:1``) cannot be shared by every rank and is refused.
    """
    cuda = torch.cuda.is_available()
    if name == "auto":
        name = "cuda" if cuda else "cpu"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not cuda:
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    if device.index is not None:
        raise ValueError(f"device {name!r} names one GPU but torchrun started {world.size} "
                         "processes: use 'auto' or 'cuda' (rank r takes cuda:LOCAL_RANK)")  # fmt: skip
    if world.local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"LOCAL_RANK={world.local_rank} but only "
                           f"{torch.cuda.device_count()} GPU(s) are visible")  # fmt: skip
    return torch.device("cuda", world.local_rank)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the default process group for the block and leave it afterwards.

    A group the caller had already initialised is used and left in place.
    """
    if not world.distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # torchrun's store outlives a group: a fresh key prefix per group, or a second group of the
    # same processes (a second ``fit``) reads the first one's stale gloo addresses. Every rank
    # must therefore open as many groups as the others (they run the same fits anyway).
    store, _, _ = next(dist.rendezvous("env://", rank=world.rank, world_size=world.size))
    store = dist.PrefixStore(f"latentmech/group{next(_GROUPS)}", store)
    dist.init_process_group(backend_for(device), store=store, rank=world.rank,
                            world_size=world.size)  # fmt: skip
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(device: torch.device) -> None:
    dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


def max_across(values: Sequence[int], device: torch.device) -> list[int]:
    """Element-wise maximum of small integers over all ranks (one all-reduce)."""
    tensor = torch.tensor(list(values), dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [int(v) for v in tensor.tolist()]


def sum_across(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise float64 sum over all ranks (one all-reduce)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def gather_all(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank.

    ``obj`` goes through ``torch.save``/``torch.load(weights_only=True)`` (tensors, containers,
    numbers, strings): ``all_gather_object``'s own pickling cannot carry tensors in torch 2.13
    (``UntypedStorage has no attribute 'dtype'`` on unpickling).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    blobs: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(blobs, buffer.getvalue())
    return [torch.load(io.BytesIO(blob), weights_only=True) for blob in blobs]


def shard(indices: Sequence[int], world: World) -> tuple[list[int], float]:
    """This rank's part of one global batch and the factor its mean loss is scaled by.

    Rank r takes the r-th of ``world.size`` contiguous, as-equal-as-possible parts. DDP averages
    the ranks' gradients, so scaling the mean loss of a part of size ``n_r`` of a global batch of
    size ``m`` by ``n_r · size / m`` makes that average the gradient of the global batch's mean
    loss, also for an uneven last batch. The factor is exactly 1 for equal parts. A rank left
    with no sample (a last batch smaller than the world) still has to take part in the gradient
    all-reduce: it gets the batch's first sample with factor 0.
    """
    m, size = len(indices), world.size
    start = world.rank * (m // size) + min(world.rank, m % size)
    count = m // size + (1 if world.rank < m % size else 0)
    if count == 0:
        return [indices[0]], 0.0
    part = list(indices[start : start + count])
    return part, 1.0 if count * size == m else count * size / m
