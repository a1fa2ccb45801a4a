"""The volume-element part of the job graph: datasets, collections, shards, settings, targets.

``rules/ve.smk`` holds only rules; what they compute from ``config["ve"]`` lives here, where it
can be tested without Snakemake. A *dataset* (e.g. ``cu``, ``mg``) has one lattice and its own
VAE; its *collections* are the splits ``train``, ``val``, ``test`` and the edge cases of the
paper's section 2.1.2, each generated (or read) in shards of at most :data:`SHARD_SIZE` VEs, one
job per shard.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema
from latentmech.core.workflow import as_json
from latentmech.ve.sheet import read_ve_sheet

SPLITS = ("train", "val", "test")
#: VEs per generation job: small enough that a cluster (or two cores) runs shards in parallel.
SHARD_SIZE = 64


def _merged(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**base, **(override or {})}


class VePlan:
    """What the VE rules need to know about the study described by ``config["ve"]``."""

    def __init__(self, ve: Mapping[str, Any], results: str | Path, schemas: str | Path) -> None:
        self.config = ve
        self.root = Path(results) / "ve"
        self.schemas = Path(schemas)
        self.datasets: dict[str, Mapping[str, Any]] = dict(ve["datasets"])
        self._check()
        schema = load_schema(self.schemas / "ve_samples.schema.yaml")
        #: the sample sheet of every dataset with ``source: sheet``
        self.sheets: dict[str, pd.DataFrame] = {
            name: read_ve_sheet(d["sheet"], schema)
            for name, d in self.datasets.items()
            if d["source"] == "sheet"
        }
        for name, sheet in self.sheets.items():
            if (sheet["split"] == "test").sum() < 2:
                raise InputError(self.datasets[name]["sheet"], "column split",
                                 f"dataset {name!r} needs at least 2 test VEs (the latent path "
                                 "runs between two)")  # fmt: skip
            missing = [s for s in SPLITS if s not in set(sheet["split"])]
            if missing:
                raise InputError(self.datasets[name]["sheet"], "column split",
                                 f"dataset {name!r} has no VE of split(s) {missing}: the VAE "
                                 "trains on train, selects on val and is scored on test")  # fmt: skip

    # -- configuration checks ------------------------------------------------------------------

    def _check(self) -> None:
        for name, dataset in self.datasets.items():
            names = [e["name"] for e in dataset["edge_cases"]]
            clash = sorted(set(names) & set(SPLITS)) or sorted(
                {n for n in names if names.count(n) > 1}
            )
            if clash:
                raise InputError("config", f"ve.datasets.{name}.edge_cases",
                                 f"edge-case names must be unique and not {list(SPLITS)}: {clash}")  # fmt: skip
            if dataset["source"] == "sheet" and not dataset.get("sheet"):
                raise InputError("config", f"ve.datasets.{name}.sheet",
                                 "source is 'sheet' but no sheet (TSV of VE files) is given")  # fmt: skip
        self._check_cp()
        for key in ("latent", "cp"):
            chosen = self.config[key]["dataset"]
            if chosen is not None and chosen not in self.datasets:
                raise InputError("config", f"ve.{key}.dataset",
                                 f"{chosen!r} is not one of ve.datasets {sorted(self.datasets)}")  # fmt: skip

    def _check_cp(self) -> None:
        """The CP material's lattice is the dataset's; the damask backend needs DAMASK_grid."""
        cp = self.config["cp"]
        if cp["dataset"] is None or cp["dataset"] not in self.datasets:
            return
        from latentmech.ve import cp as crystal

        lattice = {"cF": "cubic", "cI": "cubic", "hP": "hexagonal"}[
            getattr(crystal, cp["material"])().lattice
        ]
        wanted = self.datasets[cp["dataset"]]["lattice"]
        if lattice != wanted:
            raise InputError("config", "ve.cp.material",
                             f"{cp['material']} is {lattice}, but dataset {cp['dataset']!r} is "
                             f"{wanted}: choose a {wanted} material or another dataset")  # fmt: skip
        if cp["backend"] == "damask" and crystal.damask_executable() is None:
            raise InputError("config", "ve.cp.backend",
                             "backend 'damask' runs DAMASK_grid, which is not on PATH: install "
                             "DAMASK (https://damask-multiphysics.org) or use backend 'taylor'")  # fmt: skip

    # -- names and paths -------------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        """A path below ``results/ve``."""
        return str(self.root.joinpath(*parts))

    def collections(self, dataset: str) -> list[str]:
        """The splits, then the edge cases (only when the dataset has VEs for them)."""
        if dataset in self.sheets:
            sheet = self.sheets[dataset]
            edges = sheet.loc[sheet["split"] == "edge", "collection"]
            return [*SPLITS, *dict.fromkeys(edges)]
        config = self.datasets[dataset]
        edges = [e["name"] for e in config["edge_cases"]] if config["edge_count"] else []
        return [*SPLITS, *edges]

    def edge_cases(self, dataset: str) -> list[str]:
        return [c for c in self.collections(dataset) if c not in SPLITS]

    def count(self, dataset: str, collection: str) -> int:
        if dataset in self.sheets:
            return int((self.sheets[dataset]["collection"] == collection).sum())
        config = self.datasets[dataset]
        return int(config["counts"][collection] if collection in SPLITS else config["edge_count"])

    def shards(self, dataset: str, collection: str) -> list[int]:
        return list(range(math.ceil(self.count(dataset, collection) / SHARD_SIZE)))

    def stores(self, dataset: str) -> list[str]:
        """The dataset's stores: ``ves.zarr`` (the VAE's splits), then ``edges.zarr`` if any.

        The edge cases live in their own store so that adding or changing one never retrains
        the VAE that is evaluated on them.
        """
        parts = ["ves", "edges"] if self.edge_cases(dataset) else ["ves"]
        return [self.path(dataset, f"{part}.zarr") for part in parts]

    def shard_paths(self, dataset: str, part: str = "ves") -> list[str]:
        """Every generated shard of the dataset's splits (``ves``) or edge cases (``edges``)."""
        collections = list(SPLITS) if part == "ves" else self.edge_cases(dataset)
        origin = "ingested" if dataset in self.sheets else "generated"
        return [
            self.path(origin, dataset, collection, f"{shard}.zarr")
            for collection in collections
            for shard in self.shards(dataset, collection)
        ]

    @property
    def latent_dataset(self) -> str:
        return self.config["latent"]["dataset"] or next(iter(self.datasets))

    @property
    def cp_dataset(self) -> str | None:
        return self.config["cp"]["dataset"]

    # -- settings per rule -------------------------------------------------------------------

    def generate_settings(self, dataset: str, collection: str, shard: int) -> dict[str, Any]:
        """What one generation job makes: VEs ``start … stop`` of the collection."""
        config = self.datasets[dataset]
        edge = next((e for e in config["edge_cases"] if e["name"] == collection), {})
        start = int(shard) * SHARD_SIZE
        stop = min(start + SHARD_SIZE, self.count(dataset, collection))
        return {
            "dataset": dataset,
            "collection": collection,
            "split": collection if collection in SPLITS else "edge",
            "start": start,
            "stop": stop,
            "cells": self.config["cells"],
            "voxel_size": self.config["voxel_size"],
            "lattice": config["lattice"],
            "seed": config["seed"],
            "grains": _merged(config["grains"], edge.get("grains")),
            "texture": _merged(config["texture"], edge.get("texture")),
        }

    def _sheet_rows(self, dataset: str, collection: str, shard: int) -> pd.DataFrame:
        sheet = self.sheets[dataset]
        rows = sheet[sheet["collection"] == collection]
        return rows.iloc[int(shard) * SHARD_SIZE : (int(shard) + 1) * SHARD_SIZE]

    def ingest_files(self, dataset: str, collection: str, shard: int) -> list[str]:
        """The VE files one ingestion job reads (its inputs: a changed file reruns it)."""
        return list(self._sheet_rows(dataset, collection, shard)["path"])

    def ingest_settings(self, dataset: str, collection: str, shard: int) -> dict[str, Any]:
        rows = self._sheet_rows(dataset, collection, shard)
        return {
            "dataset": dataset,
            "collection": collection,
            "cells": self.config["cells"],
            "lattice": self.datasets[dataset]["lattice"],
            "sheet": str(self.datasets[dataset]["sheet"]),
            "rows": rows.astype(object).where(rows.notna(), None).to_dict(orient="records"),
        }

    def dataset_settings(self, dataset: str) -> dict[str, Any]:
        return {"dataset": dataset, "lattice": self.datasets[dataset]["lattice"]}

    def _with_workdir(self, settings: dict[str, Any], code: str, *parts: str) -> dict[str, Any]:
        """Resumable checkpoints beside (not as) the declared outputs, keyed by settings and code."""
        key = hashlib.sha256((as_json(settings) + code).encode()).hexdigest()[:12]
        return settings | {"workdir": self.path(*parts, "checkpoints", key)}

    def vae_settings(self, dataset: str, code: str) -> dict[str, Any]:
        vae = self.config["vae"]
        settings = {
            "dataset": dataset,
            "model": vae["model"],
            "loss": vae["loss"],
            "train": vae["train"],
            "threads": vae["threads"],
        }
        return self._with_workdir(settings, code, dataset, "vae3d")

    def encode_settings(self, dataset: str) -> dict[str, Any]:
        vae = self.config["vae"]
        return {"dataset": dataset, "lattice": self.datasets[dataset]["lattice"],
                "batch_size": vae["batch_size"], "threads": vae["threads"]}  # fmt: skip

    def latent_settings(self) -> dict[str, Any]:
        return dict(self.config["latent"]) | {"dataset": self.latent_dataset}

    def cp_settings(self) -> dict[str, Any]:
        cp = self.config["cp"]
        dataset = self.cp_dataset
        return {
            "dataset": dataset,
            "lattice": self.datasets[dataset]["lattice"] if dataset else None,
            "backend": cp["backend"],
            "material": cp["material"],
            "load": cp["load"],
            "threads": cp["threads"],
        }

    def surrogate_settings(self, code: str) -> dict[str, Any]:
        surrogate = self.config["surrogate"]
        settings = {
            "model": surrogate["model"],
            "scaling": surrogate["scaling"],
            "train": surrogate["train"],
            "threads": surrogate["threads"],
        }
        return self._with_workdir(settings, code, str(self.cp_dataset), "surrogate")

    # -- targets -----------------------------------------------------------------------------

    def targets(self) -> list[str]:
        """What ``rule all`` asks of the VE study."""
        targets = [self.path("tables", "reconstruction.csv")]
        targets += [self.path("figures", f"reconstructions_{d}.png") for d in self.datasets]
        latent = self.latent_dataset
        targets += [
            self.path("figures", "latent_path.png"),
            self.path("figures", "latent_pca.png"),
            self.path("tables", "clustering.csv"),
        ]
        if not self.edge_cases(latent):
            targets.remove(self.path("tables", "clustering.csv"))
        if self.cp_dataset:
            backend = self.config["cp"]["backend"]
            targets += [
                self.path(self.cp_dataset, "cp", backend, "responses.csv"),
                self.path("tables", "surrogate.csv"),
                self.path("figures", "surrogate.png"),
            ]
        return targets
