"""Helpers for workflow tests: run Snakemake on a tiny config in a scratch directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_command(workdir: Path) -> list[str]:
    """``snakemake`` on the repository's workflow, in ``workdir`` with its config.yaml."""
    return [
        SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--cores", "2",
    ]  # fmt: skip


def snakemake_env(env: dict | None = None) -> dict[str, str]:
    """This environment, the venv's ``bin`` first on PATH, plus ``env``."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the repository's workflow with ``workdir`` as working directory and its config.yaml."""
    command = [*snakemake_command(workdir), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env=snakemake_env(env), cwd=workdir
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def planned_jobs(workdir: Path, *args: str, env: dict | None = None) -> dict[str, int]:
    """Rule → number of jobs a dry run would execute (empty when there is nothing to do)."""
    result = snakemake(workdir, "--dry-run", *args, env=env)
    return job_counts(result.stdout + result.stderr)


def planned_after_editing(workdir: Path, module: str, *args: str) -> dict[str, int]:
    """The jobs an edit of ``src/latentmech/<module>`` plans; the file is restored afterwards."""
    path = REPO / "src" / "latentmech" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        return planned_jobs(workdir, *args)
    finally:
        path.write_text(original)  # same content, new mtime: nothing to do


def job_counts(text: str) -> dict[str, int]:
    """Rule → number of jobs in a dry run's "Job stats" table (empty when nothing is to be done)."""
    counts: dict[str, int] = {}
    table = re.search(r"Job stats:\n(.*?)\n\n", text, flags=re.S)
    if table is None:
        assert "Nothing to be done" in text, f"unexpected dry-run output:\n{text}"
        return counts
    for line in table.group(1).splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match.group(1) not in ("total", "job", "all"):
            rule = re.sub(
                r"_\d+$", "", match.group(1)
            )  # rules made in a loop: dic_encode_database_0
            counts[rule] = counts.get(rule, 0) + int(match.group(2))
    return counts


def tiny_synthetic_config(results: str = "results") -> dict[str, Any]:
    """Two materials, one training and one validation specimen, two steps, 96-px maps.

    16-px windows make a 6 × 6 grid, so the CNN has 4 crops of 5 × 5 windows per map; the
    extension adds one new material (one specimen, two steps); every training is one or two epochs.
    """
    with open(REPO / "config.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    dic = config["dic"]
    dic["synthetic"]["train_specimens"] = 1
    dic["synthetic"]["validation_specimens"] = 1
    dic["synthetic"]["map"]["shape_px"] = [96, 96]
    materials = dic["synthetic"]["materials"][:2]
    for material in materials:
        material["strain_pct"] = material["strain_pct"][-2:]
    dic["synthetic"]["materials"] = materials
    dic["windows"]["size_px"] = 16
    dic["vae"]["train"]["epochs"] = 2
    dic["cnn"].update(
        crop={"size": 5, "max_overlap": 4},
        model={"widths": [16, 16], "encoding_dim": 8, "strain_depth": 1, "stress_depth": 2,
               "dropout": 0.15, "hidden": 16},
        augment={"reflections": True, "intensity_copies": 1, "strain_jitter": 0.05, "seed": 0},
        train={"epochs": 2, "batch_size": 32, "lr": 1.0e-3, "seed": 0, "device": "cpu"},
    )  # fmt: skip
    dic["umap"].update(n_neighbors=10, max_points=300)
    new = dict(dic["extend"]["materials"][0], strain_pct=materials[0]["strain_pct"])
    dic["extend"].update(materials=[new], ramp_steps=5)
    dic["extend"]["train"]["epochs"] = 1
    config.pop("ve", None)  # the VE study has its own tiny config: tiny_ve_config
    config.pop("alloy", None)  # and the alloy study too: tiny_alloy_config
    config["results"] = results
    return config


def tiny_ve_config(results: str = "results") -> dict[str, Any]:
    """The tiny HR-DIC config plus a tiny VE study: 16³ VEs, two datasets, one-epoch models.

    Dataset ``cu`` (cubic): 8/4/4 VEs and two edge cases of 4 VEs (a texture and a grain size);
    ``mg`` (hexagonal): 8/4/4 VEs whose Taylor responses train the surrogate.
    """
    with open(REPO / "config.yaml", encoding="utf-8") as handle:
        ve = yaml.safe_load(handle)["ve"]
    ve["cells"] = 16
    ve["voxel_size"] = 1.0  # the paper's VE at a quarter of its resolution: ~38 grains of ~6 voxels
    for dataset in ve["datasets"].values():
        dataset["counts"] = {"train": 8, "val": 4, "test": 4}
    cu = ve["datasets"]["cu"]
    cu["edge_count"] = 4
    cu["edge_cases"] = [
        {"name": "large_grains", "grains": {"esd_mean": 12.24}},
        {"name": "brass", "texture": {"name": "brass"}},
        {"name": "goss", "texture": {"name": "goss"}},
    ]
    ve["vae"]["model"] = {"depth": "resnet12", "channels": [4, 4, 8, 8], "hidden": 16,
                          "latent_dim": 8}  # fmt: skip
    ve["vae"]["train"].update(epochs=1, batch_size=4, device="cpu")
    ve["surrogate"]["model"] = {"hidden": 16}
    ve["surrogate"]["train"].update(epochs=2, batch_size=4, device="cpu")
    config = tiny_synthetic_config(results)
    config["ve"] = ve
    return config


def tiny_alloy_section() -> dict[str, Any]:
    """A tiny alloy study: 5 LAMMPS cells of 4³ unit cells (256 atoms), 2³ blocks, tiny models.

    Four random cells and one MD/MC anneal; 3/1/1 cells for train/val/test; two-epoch AlloyVAE.
    """
    with open(REPO / "config.yaml", encoding="utf-8") as handle:
        alloy = yaml.safe_load(handle)["alloy"]
    alloy["samples"] = {"random": 4, "annealed": {"temperatures": [900], "each": 1}, "seed": 1}
    alloy["md"].update(cells=[4, 4, 4], md_steps=20, quench_steps=5)
    alloy["blocks"]["r"] = 2
    alloy["split"] = {"test_fraction": 0.2, "val_fraction": 0.2, "seed": 0}
    alloy["cvae"]["model"] = {"encoder_channels": [4, 4, 4], "feature_width": 4,
                              "condition_widths": [2, 2], "condition_dim": 8,
                              "moment_widths": [2], "latent_dim": 4, "smoother_channels": 4,
                              "smoother_widths": [2], "decoder_widths": [4, 4, 4, 4]}  # fmt: skip
    alloy["cvae"]["train"].update(epochs=2, batch_size=3, device="cpu")
    alloy["sampling"].update(n_max=20, k=0.5)
    alloy["design"].update(candidates=8, iterations=3, isomap_neighbors=3)
    return alloy


def tiny_alloy_config(results: str = "results") -> dict[str, Any]:
    """The tiny HR-DIC config plus the tiny alloy study (no VE study)."""
    config = tiny_synthetic_config(results)
    config["alloy"] = tiny_alloy_section()
    return config


def tiny_study_config(results: str = "results") -> dict[str, Any]:
    """Every study at its tiny size (for dry runs and lint over all rules)."""
    config = tiny_ve_config(results)
    config["alloy"] = tiny_alloy_section()
    return config


def linear_data(n: int, seed: int) -> Any:
    """A seeded linear-regression TensorDataset (4 features → 1 target) for training-loop tests."""
    import torch
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.3
    return TensorDataset(x, y)
