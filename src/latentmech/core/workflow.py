"""Helpers the Snakemake rules call while building the job graph (no study knowledge here)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any


def ensure_cli_on_path() -> None:
    """Make jobs run the ``latentmech`` script of the Python running Snakemake.

    That install is the one the rules' code digests describe; putting its ``bin`` first on
    ``PATH`` also covers a venv that is not activated (``.venv/bin/snakemake``).
    """
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "latentmech").exists():
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def as_json(settings: Any) -> str:
    """Params are JSON strings: Snakemake compares them to rerun jobs, the CLI parses them."""
    return json.dumps(settings, sort_keys=True)


def cli_option(flag: str, value: str | None) -> str:
    """``--flag 'value'`` shell-quoted, or nothing when the optional value is absent."""
    return f"{flag} {shlex.quote(str(value))}" if value else ""


#: Signals torchrun's agent forwards to its workers (``--signals-to-handle``): its default plus
#: SIGUSR1, which Slurm's ``--signal=USR1@…`` sends before a time limit. (Setting the
#: environment variable TORCHELASTIC_SIGNALS_TO_HANDLE instead does not work: torchrun
#: overwrites it with this option's value.)
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def torchrun_command(nproc: int, module: str = "latentmech.cli") -> list[str]:
    """The command prefix a rule runs its stage with on ``nproc`` GPUs of one node.

    ``torchrun --standalone --nproc_per_node N --signals-to-handle … -m latentmech.cli``; the
    stage's own arguments follow (``latentmech dic train-vae …`` becomes ``<prefix> dic
    train-vae …``). One process needs no torchrun: ``nproc`` ≤ 1 gives the ``latentmech``
    entry point (``python -m <module>`` for another module).
    """
    if nproc <= 1:
        return ["latentmech"] if module == "latentmech.cli" else ["python", "-m", module]
    return ["torchrun", "--standalone", "--nproc_per_node", str(int(nproc)),
            "--signals-to-handle", TORCHRUN_SIGNALS, "-m", module]  # fmt: skip


def launcher(gpus: int) -> str:
    """What a training rule's shell command starts with: ``latentmech``, or torchrun for > 1 GPU."""
    return shlex.join(torchrun_command(gpus))


#: How a GPU rule asks the cluster for its GPUs (config ``cluster.gpu_request``).
GPU_REQUESTS = ("gpus", "gres")


def gpu_resources(gpus: int, request: str = "gpus") -> dict[str, int | str]:
    """The resources of a rule that trains on ``gpus`` GPUs, for every executor at once.

    ``gpu`` is Snakemake's portable resource: the Slurm plugin turns it into ``--gpus=N`` and the
    local profile caps it at one GPU job at a time. Sites whose Slurm wants ``--gres=gpu:N``
    instead choose ``request="gres"`` (the plugin refuses both at once). LSF's plugin knows no
    GPUs, so ``lsf_extra`` carries ``-gpu num=N``; other executors ignore resources they do not
    know. No GPU asked for: ``gpu=0`` alone, so a CPU training is an ordinary CPU job.
    """
    if request not in GPU_REQUESTS:
        raise ValueError(f"cluster.gpu_request must be one of {GPU_REQUESTS}, got {request!r}")
    gpus = int(gpus)
    if gpus <= 0:
        return {"gpu": 0}
    request_key = {"gpu": gpus} if request == "gpus" else {"gres": f"gpu:{gpus}"}
    return {**request_key, "lsf_extra": f"-gpu num={gpus}"}
