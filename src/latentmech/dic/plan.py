"""The HR-DIC part of the job graph: sample table, per-sample settings, paths and targets.

``rules/dic.smk`` holds only rules; what they compute from the config lives here, where it can
be tested without Snakemake.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema
from latentmech.dic.samples import figure_sample, read_materials, sample_file_inputs, sample_table

#: Modalities the embedded generator produces.
SYNTHETIC_MODALITIES = ("exx", "intensity", "direction", "rotation")


def check_config(dic: Mapping[str, Any]) -> None:
    """What the schema cannot say about ``config["dic"]``, checked before any job runs."""
    if dic["source"] == "synthetic":
        if not dic.get("synthetic"):
            raise InputError(
                "config",
                "dic.synthetic",
                "source is 'synthetic' but there is no dic.synthetic block",
            )
        extra = [m for m in dic["modalities"] if m not in SYNTHETIC_MODALITIES]
        if extra:
            raise InputError(
                "config",
                "dic.modalities",
                f"the synthetic generator makes {list(SYNTHETIC_MODALITIES)}, not {extra}",
            )
    fractions = dic["windows"]["split"]["fractions"]
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise InputError("config", "dic.windows.split.fractions", f"{fractions} must sum to 1")
    if dic["events"]["modality"] not in dic["modalities"]:
        raise InputError(
            "config",
            "dic.events.modality",
            f"{dic['events']['modality']!r} is not in dic.modalities",
        )


class DicPlan:
    """What the HR-DIC rules need to know about the study described by ``config["dic"]``."""

    def __init__(self, dic: Mapping[str, Any], results: str | Path, schemas: str | Path) -> None:
        check_config(dic)
        self.config = dic
        self.schemas = Path(schemas)
        self.root = Path(results) / "dic"
        self.samples: pd.DataFrame = sample_table(dic, schemas)
        self.synthetic = dic["source"] == "synthetic"
        self.materials = sorted(self.samples["material"].unique())
        if dic.get("materials"):  # fail early, naming the table, rather than in a job
            read_materials(
                dic["materials"], load_schema(Path(schemas) / "dic_materials.schema.yaml")
            )

    def path(self, *parts: str) -> str:
        """A path below ``results/dic``."""
        return str(self.root.joinpath(*parts))

    def each(self, *parts: str) -> list[str]:
        """The path with ``{sample}`` filled in for every sample."""
        pattern = self.path(*parts)
        return [pattern.format(sample=s) for s in self.samples.index]

    def row(self, sample: str) -> dict[str, Any]:
        """The sample's table row as plain JSON values (None for empty cells)."""
        row = self.samples.loc[sample].to_dict()
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}

    def files(self, sample: str) -> dict[str, str]:
        """The files a measured sample reads (inputs of ``dic_ingest``)."""
        return sample_file_inputs(self.row(sample))

    def synthesize_settings(self, sample: str) -> dict[str, Any]:
        row = self.row(sample)
        synthetic = self.config["synthetic"]
        material = next(m for m in synthetic["materials"] if m["name"] == row["material"])
        return {
            "sample": row,
            "material": material,
            "map": synthetic["map"],
            "seed": synthetic["seed"],
        }

    def materials_settings(self) -> dict[str, Any]:
        if self.synthetic:
            synthetic = self.config["synthetic"]
            return {
                "source": "synthetic",
                "seed": synthetic["seed"],
                "materials": synthetic["materials"],
            }
        return {
            "source": "sheet",
            "names": self.materials,
            "schema": str(self.schemas / "dic_materials.schema.yaml"),
        }

    def detection_settings(self) -> dict[str, Any]:
        """Event detection settings; the scoring's ``match`` block does not rerun detection."""
        return {k: v for k, v in self.config["events"].items() if k != "match"}

    def figure_settings(self) -> dict[str, Any]:
        """What the modality figure draws: the modalities and the window grid (not the split)."""
        windows = self.config["windows"]
        return {
            "modalities": self.config["modalities"],
            "size_px": windows["size_px"],
            "stride_px": windows.get("stride_px"),
        }

    def figure_raw(self, material: str) -> str:
        """The raw map shown in the modality figure of ``material``."""
        return self.path("raw", f"{figure_sample(self.samples, material)}.zarr")

    # -- VAEs ---------------------------------------------------------------------------------

    def vae_variants(self) -> list[tuple[str, str]]:
        """(modality, augmentation) of every VAE trained.

        Each modality gets the paper's augmentations (reflections + event masking; reflections
        only for the lattice rotation); ``compare_modality`` is also trained without augmentation
        and with reflections only, for the paper's comparison.
        """
        variants = [
            (m, "reflect" if m == "rotation" else "reflect_mask") for m in self.config["modalities"]
        ]
        compare = self.config["vae"].get("compare_modality")
        if compare in self.config["modalities"]:
            variants += [(compare, a) for a in ("none", "reflect") if (compare, a) not in variants]
        return variants

    def vae_settings(self, modality: str, augment: str, code: str) -> dict[str, Any]:
        """Settings of one VAE training; its resumable checkpoints are keyed by them and the code."""
        from latentmech.core.workflow import as_json
        from latentmech.dic.prep import ModalitySettings, channel_names

        vae = self.config["vae"]
        prep_settings = ModalitySettings.from_dict(self.config["prep"].get(modality, {}))
        settings = {
            "modality": modality,
            "augment": augment,
            "channels": channel_names(modality, prep_settings),
            "output": "tanh" if prep_settings.angle_unit else "leaky_relu",
            "model": vae["model"],
            "loss": vae["loss"],
            "train": vae["train"],
            "threads": vae["threads"],
        }
        key = hashlib.sha256((as_json(settings) + code).encode()).hexdigest()[:12]
        settings["workdir"] = self.path("vae", f"{modality}_{augment}", "checkpoints", key)
        return settings

    def vae_scores(self) -> list[str]:
        return [self.path("vae", f"{m}_{a}", "scores.csv") for m, a in self.vae_variants()]

    def compared_variants(self) -> list[tuple[str, str]]:
        """The trainings of ``compare_modality`` (paper Fig. 7), in the paper's order."""
        compare = self.config["vae"].get("compare_modality")
        order = {"none": 0, "reflect": 1, "reflect_mask": 2}
        found = [v for v in self.vae_variants() if v[0] == compare]
        return sorted(found, key=lambda v: order[v[1]])

    def vae_files(self, name: str, variants: list[tuple[str, str]]) -> list[str]:
        return [self.path("vae", f"{m}_{a}", name) for m, a in variants]

    def targets(self) -> list[str]:
        """Everything ``rule all`` asks of the HR-DIC study."""
        targets = [
            self.path("materials.tsv"),
            self.path("windows.zarr"),
            self.path("windows.csv"),
            *(self.path("figures", f"modalities_{m}.png") for m in self.materials),
            self.path("vae", "reconstruction_table.csv"),
        ]
        if self.compared_variants():
            targets.append(self.path("figures", "reconstructions.png"))
        if self.synthetic:
            targets.append(self.path("events", "scores.csv"))
        return targets
