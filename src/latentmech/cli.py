"""``latentmech <study> <stage> …``: the one entry point Snakemake rules call.

Each stage is declared once (its path arguments, single or many); the parser, the help text and
the call into ``<study>.stages`` follow from that declaration. Settings arrive as one JSON
document (the rule's ``params``), so every hyperparameter a job uses is visible to Snakemake.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentmech import __version__
from latentmech.core.errors import ExternalToolError, InputError


@dataclass(frozen=True)
class Stage:
    """A CLI subcommand bound to ``latentmech.<study>.stages.<function>``."""

    function: str
    paths: dict[str, str] = field(default_factory=dict)  # argument → "one" | "many" | "optional"


STUDIES: dict[str, tuple[str, dict[str, Stage]]] = {
    "dic": (
        "HR-DIC study (paper 000): maps → windows, events → VAEs → latent maps → property CNN",
        {
            "materials": Stage("materials", {"output": "one", "table": "optional"}),
            "synthesize": Stage("synthesize", {"raw": "one"}),
            "ingest": Stage("ingest", {"raw": "one"}),
            "preprocess": Stage("preprocess", {"raw": "one", "prepped": "one"}),
            "detect-events": Stage(
                "detect_events", {"prepped": "one", "labels": "one", "table": "one"}
            ),
            "event-scores": Stage(
                "event_scores",
                {"raw": "many", "prepped": "many", "labels": "many", "output": "one"},
            ),
            "windows": Stage(
                "windows",
                {"prepped": "many", "labels": "many", "windows_zarr": "one", "windows_csv": "one"},
            ),
            "figure-modalities": Stage("figure_modalities", {"raw": "one", "figure": "one"}),
            "train-vae": Stage(
                "train_vae",
                {
                    "windows_zarr": "one",
                    "model": "one",
                    "sidecar": "one",
                    "history": "one",
                    "scores": "one",
                },
            ),
            "reconstruction-table": Stage(
                "reconstruction_table", {"scores": "many", "table": "one"}
            ),
            "figure-reconstructions": Stage(
                "figure_reconstructions",
                {"windows_zarr": "one", "models": "many", "sidecars": "many", "figure": "one"},
            ),
            "encode": Stage(
                "encode",
                {
                    "raw": "many",
                    "prepped": "many",
                    "models": "many",
                    "sidecars": "many",
                    "latent": "many",
                },
            ),
            "figure-umap": Stage("figure_umap", {"latent": "many", "figure": "one"}),
            "cnn-dataset": Stage(
                "cnn_dataset",
                {
                    "windows_zarr": "one",
                    "latent": "many",
                    "model": "one",
                    "sidecar": "one",
                    "dataset": "one",
                },
            ),
            "train-cnn": Stage(
                "train_cnn",
                {
                    "dataset": "one",
                    "latent": "many",
                    "materials": "one",
                    "model": "one",
                    "sidecar": "one",
                    "history": "one",
                },
            ),
            "predict": Stage(
                "predict",
                {
                    "latent": "many",
                    "model": "one",
                    "sidecar": "one",
                    "materials": "one",
                    "predictions": "one",
                },
            ),
            "extend-vae": Stage(
                "extend_vae",
                {
                    "windows_zarr": "one",
                    "new_windows_zarr": "one",
                    "model": "one",
                    "sidecar": "one",
                    "output_model": "one",
                    "output_sidecar": "one",
                    "history": "one",
                },
            ),
            "figure-extension": Stage(
                "figure_extension", {"histories": "many", "reference": "one", "figure": "one"}
            ),
            "evaluate-cnn": Stage(
                "evaluate_cnn",
                {
                    "predictions": "one",
                    "sidecar": "one",
                    "history": "one",
                    "ranges": "one",
                    "baseline": "one",
                    "parity": "one",
                    "distributions": "one",
                    "curves": "one",
                },
            ),
        },
    ),
    "alloy": (
        "Alloy study (paper 003): LAMMPS dumps → block fields → AlloyVAE → self-checked "
        "predictions and inverse design",
        {
            "md": Stage("md", {"dump": "one", "lammps_log": "one"}),
            "fields": Stage("fields", {"dump": "one", "fields": "one"}),
            "dataset": Stage("dataset", {"fields": "many", "dataset": "one", "scalers": "one"}),
            "train-cvae": Stage(
                "train_cvae",
                {"dataset": "one", "model": "one", "sidecar": "one", "history": "one"},
            ),
            "evaluate": Stage(
                "evaluate",
                {
                    "dataset": "one",
                    "model": "one",
                    "sidecar": "one",
                    "table": "one",
                    "reconstruction": "one",
                    "conditions": "one",
                },
            ),
            "sample": Stage(
                "sample",
                {
                    "dataset": "one",
                    "model": "one",
                    "sidecar": "one",
                    "predictions": "one",
                    "table": "one",
                    "figure": "one",
                },
            ),
            "design": Stage(
                "design", {"dataset": "one", "model": "one", "sidecar": "one", "design": "one"}
            ),
            "design-summary": Stage(
                "design_summary",
                {
                    "dataset": "one",
                    "designs": "many",
                    "table": "one",
                    "clusters": "one",
                    "figure": "one",
                },
            ),
        },
    ),
    "ve": (
        "Volume-element study (paper 001): VEs → fundamental zone → 3D VAE fingerprints → "
        "crystal-plasticity responses → surrogate",
        {
            "generate": Stage("generate", {"shard": "one"}),
            "ingest": Stage("ingest", {"shard": "one", "files": "many"}),
            "dataset": Stage("dataset", {"shards": "many", "ves": "one"}),
            "train-vae": Stage(
                "train_vae", {"ves": "one", "model": "one", "sidecar": "one", "history": "one"}
            ),
            "encode": Stage(
                "encode",
                {
                    "ves": "many",
                    "model": "one",
                    "sidecar": "one",
                    "fingerprints": "one",
                    "scores": "one",
                },
            ),
            "reconstruction-table": Stage(
                "reconstruction_table", {"scores": "many", "table": "one"}
            ),
            "figure-reconstructions": Stage(
                "figure_reconstructions",
                {"ves": "many", "model": "one", "sidecar": "one", "figure": "one"},
            ),
            "latent": Stage(
                "latent",
                {
                    "ves": "many",
                    "model": "one",
                    "sidecar": "one",
                    "fingerprints": "one",
                    "path_figure": "one",
                    "pca_figure": "one",
                    "clustering": "one",
                },
            ),
            "responses": Stage("responses", {"ves": "one", "table": "one"}),
            "train-surrogate": Stage(
                "train_surrogate",
                {
                    "fingerprints": "one",
                    "responses": "one",
                    "model": "one",
                    "sidecar": "one",
                    "history": "one",
                },
            ),
            "evaluate-surrogate": Stage(
                "evaluate_surrogate",
                {
                    "fingerprints": "one",
                    "responses": "one",
                    "model": "one",
                    "sidecar": "one",
                    "table": "one",
                    "increments": "one",
                    "figure": "one",
                },
            ),
        },
    ),
}


def _stage_function(study: str, stage: Stage) -> Callable[..., None]:
    module = importlib.import_module(f"latentmech.{study}.stages")
    return getattr(module, stage.function)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


def _add_stage_parser(sub: Any, study: str, name: str, stage: Stage) -> None:
    # Only the docstring is needed for help; importing the stage module is cheap enough.
    doc = _first_line(inspect.getdoc(_stage_function(study, stage)))
    parser = sub.add_parser(name, help=doc, description=doc)
    for arg, kind in stage.paths.items():
        option = "--" + arg.replace("_", "-")
        nargs = "+" if kind == "many" else None
        parser.add_argument(option, dest=arg, type=Path, nargs=nargs, required=kind != "optional")
    parser.add_argument(
        "--settings", default="{}", help="stage settings as JSON (the rule's params)"
    )
    parser.add_argument("--code", default="", help="digest of the code the rule depends on")
    parser.set_defaults(study=study, stage=stage)


def build_parser() -> argparse.ArgumentParser:
    """The full parser: one sub-parser per study, one sub-sub-parser per stage."""
    parser = argparse.ArgumentParser(
        prog="latentmech",
        description="Latent representations of materials fields and property prediction. "
        "Stages are normally run by the Snakemake workflow (see README).",
    )
    parser.add_argument("--version", action="version", version=f"latentmech {__version__}")
    studies = parser.add_subparsers(dest="study_name", required=True, metavar="<study>")
    for study, (description, stages) in STUDIES.items():
        study_parser = studies.add_parser(study, help=description, description=description)
        sub = study_parser.add_subparsers(dest="stage_name", required=True, metavar="<stage>")
        for name, stage in stages.items():
            _add_stage_parser(sub, study, name, stage)
    return parser


def _log_job(study: str, stage: str) -> None:
    """One line saying where the stage runs: on a cluster, what the scheduler gave the job."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("LSB_JOBID") or "-"
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES") or "<none>"
    logging.getLogger("latentmech").info(
        "latentmech %s %s %s on %s, scheduler job %s, CUDA_VISIBLE_DEVICES=%s",
        __version__, study, stage, socket.gethostname(), job, gpus,
    )  # fmt: skip


def _run(args: argparse.Namespace) -> None:
    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise InputError("--settings", f"char {exc.pos}", f"not valid JSON: {exc.msg}") from exc
    kwargs = {arg: getattr(args, arg) for arg in args.stage.paths}
    _log_job(args.study, args.stage.function)
    _stage_function(args.study, args.stage)(**kwargs, settings=settings, code=args.code)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point; bad input exits with status 2 and a one-line message."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except (InputError, FileNotFoundError, ExternalToolError) as exc:
        print(f"latentmech: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
