"""The HR-DIC part of the job graph: sample table, per-sample settings, paths and targets.

``rules/dic.smk`` holds only rules; what they compute from the config lives here, where it can
be tested without Snakemake.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema
from latentmech.dic.samples import figure_sample, read_materials, sample_file_inputs, sample_table

#: Roles of the samples the models are trained and evaluated on.
DATABASE_ROLES = ("train", "validation")

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
    encoded = dic["latent"]["modalities"] or dic["modalities"]
    checks = (
        ("latent.modalities", encoded, dic["modalities"], "dic.modalities"),
        ("cnn.modality", [dic["cnn"]["modality"]], encoded, "the encoded modalities"),
        ("umap.modalities", dic["umap"]["modalities"], encoded, "the encoded modalities"),
    )
    for key, wanted, available, name in checks:
        unknown = [m for m in wanted if m not in available]
        if unknown:
            raise InputError("config", f"dic.{key}", f"{unknown} not among {name} {available}")
    _check_extension(dic)
    if dic["cnn"]["modality"] == "direction" and dic["cnn"]["augment"]["intensity_copies"]:
        raise InputError("config", "dic.cnn.augment.intensity_copies",
                         "the intensity-evolution augmentation scales scalar channels; the "
                         "direction (cos, sin) cannot be scaled: set it to 0")  # fmt: skip
    if dic["events"]["modality"] not in dic["modalities"]:
        raise InputError(
            "config",
            "dic.events.modality",
            f"{dic['events']['modality']!r} is not in dic.modalities",
        )


def _check_extension(dic: Mapping[str, Any]) -> None:
    extend = dic["extend"]
    if not extend["materials"]:
        return
    if dic["source"] != "synthetic":
        raise InputError("config", "dic.extend.materials",
                         "extension materials are generated: only with source 'synthetic'")  # fmt: skip
    if extend["modality"] not in dic["modalities"]:
        raise InputError(
            "config", "dic.extend.modality", f"{extend['modality']!r} is not in dic.modalities"
        )
    database = {m["name"] for m in dic["synthetic"]["materials"]}
    clash = sorted(database & {m["name"] for m in extend["materials"]})
    if clash:
        raise InputError("config", "dic.extend.materials",
                         f"{clash} are already database materials; new ones need new names")  # fmt: skip


class DicPlan:
    """What the HR-DIC rules need to know about the study described by ``config["dic"]``."""

    def __init__(self, dic: Mapping[str, Any], results: str | Path, schemas: str | Path) -> None:
        check_config(dic)
        self.config = dic
        self.schemas = Path(schemas)
        self.root = Path(results) / "dic"
        self.samples: pd.DataFrame = sample_table(dic, schemas)
        self._rows: dict[str, dict[str, Any]] | None = None
        self.synthetic = dic["source"] == "synthetic"
        self.materials = sorted(self.samples["material"].unique())
        if self.cnn_enabled and "exx" not in dic["modalities"]:
            raise InputError("config", "dic.modalities",
                             "the property CNN needs exx (its local mean strain input)")  # fmt: skip
        if dic.get("materials"):  # fail early, naming the table, rather than in a job
            read_materials(
                dic["materials"], load_schema(Path(schemas) / "dic_materials.schema.yaml")
            )

    def path(self, *parts: str) -> str:
        """A path below ``results/dic``."""
        return str(self.root.joinpath(*parts))

    def each(self, *parts: str, roles: tuple[str, ...] | None = None) -> list[str]:
        """The path with ``{sample}`` filled in for every sample (of ``roles``, if given)."""
        pattern = self.path(*parts)
        return [pattern.format(sample=s) for s in self.names(roles)]

    def names(self, roles: tuple[str, ...] | None = None) -> list[str]:
        """Sample names, optionally only those whose role is in ``roles``."""
        if roles is None:
            return list(self.samples.index)
        return list(self.samples.index[self.samples["role"].isin(roles)])

    def database(self, *parts: str) -> list[str]:
        """The path for every sample of the VAE database (roles train and validation).

        Samples with role ``predict`` stay out of it, so adding one never retrains a model.
        """
        return self.each(*parts, roles=DATABASE_ROLES)

    def paths(self, *parts: str, samples: list[str] | None = None) -> list[str]:
        """The path with ``{sample}`` filled in for each of ``samples``."""
        pattern = self.path(*parts)
        return [pattern.format(sample=s) for s in samples or []]

    def encode_chunks(self) -> list[list[str]]:
        """Database samples in groups of ``dic.latent.chunk_samples``: one encoding job each.

        One job per group loads the VAEs once; bounded groups keep Snakemake's planning linear
        (one job with N outputs that N rules ask for costs N² to plan: benchmarks/bench_plan.py).
        """
        names = self.names(DATABASE_ROLES)
        size = int(self.config["latent"]["chunk_samples"])
        return [names[i : i + size] for i in range(0, len(names), size)]

    def predict_pattern(self) -> str:
        """Regular expression matching exactly the ``predict`` samples (never matches if none)."""
        names = self.names(("predict",))
        return "|".join(re.escape(n) for n in names) if names else "(?!x)x"

    def row(self, sample: str) -> dict[str, Any]:
        """The sample's table row as plain JSON values (None for empty cells)."""
        if self._rows is None:  # built once: a pandas lookup per call is slow for many samples
            self._rows = {
                name: {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
                for name, r in self.samples.to_dict(orient="index").items()
            }
        return dict(self._rows[sample])

    def files(self, sample: str) -> dict[str, str]:
        """The files a measured sample reads (inputs of ``dic_ingest``)."""
        return sample_file_inputs(self.row(sample))

    def synthesize_settings(self, sample: str) -> dict[str, Any]:
        row = self.row(sample)
        synthetic = self.config["synthetic"]
        known = [*synthetic["materials"], *self.config["extend"]["materials"]]
        material = dict(next(m for m in known if m["name"] == row["material"]))
        if row["role"] in ("validation", "predict"):  # held-out specimens: their own strains
            scale = float(synthetic["validation_strain_scale"])
            material["strain_pct"] = [s * scale for s in material["strain_pct"]]
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
        variants = [self.main_variant(m) for m in self.config["modalities"]]
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

    def main_variant(self, modality: str) -> tuple[str, str]:
        """The VAE used for a modality's latent maps: the paper's augmentations."""
        return (modality, "reflect" if modality == "rotation" else "reflect_mask")

    # -- latent maps, property CNN, UMAP -----------------------------------------------------

    def latent_variants(self) -> list[tuple[str, str]]:
        modalities = self.config["latent"]["modalities"] or self.config["modalities"]
        return [self.main_variant(m) for m in modalities]

    def encode_settings(self) -> dict[str, Any]:
        windows, latent = self.config["windows"], self.config["latent"]
        return {
            "size_px": windows["size_px"],
            "stride_px": windows.get("stride_px"),
            "batch_size": latent["batch_size"],
            "threads": latent["threads"],
        }

    @property
    def cnn_enabled(self) -> bool:
        """The CNN needs training and validation specimens with known properties."""
        roles = set(self.samples["role"])
        known = self.synthetic or bool(self.config.get("materials"))
        return known and {"train", "validation"} <= roles

    def cnn_variant(self) -> tuple[str, str]:
        return self.main_variant(self.config["cnn"]["modality"])

    def cnn_dataset_settings(self) -> dict[str, Any]:
        cnn = self.config["cnn"]
        return {"augment": cnn["augment"], "batch_size": self.config["latent"]["batch_size"],
                "threads": cnn["threads"]}  # fmt: skip

    def cnn_settings(self, code: str) -> dict[str, Any]:
        """Settings of the CNN training; its resumable checkpoints are keyed by them and the code."""
        from latentmech.core.workflow import as_json

        cnn = self.config["cnn"]
        keys = ("modality", "crop", "model", "normalise", "input", "train", "keep", "threads")
        settings = {k: cnn[k] for k in keys}
        key = hashlib.sha256((as_json(settings) + code).encode()).hexdigest()[:12]
        settings["workdir"] = self.path("cnn", "checkpoints", key)
        return settings

    def predict_settings(self, shuffle_check: bool = False) -> dict[str, Any]:
        """Prediction settings; the held-out specimens also get the shuffled-latent check."""
        return {"modality": self.config["cnn"]["modality"], "crop": self.config["cnn"]["crop"],
                "shuffle_check": shuffle_check}  # fmt: skip

    def umap_settings(self, modality: str) -> dict[str, Any]:
        return {"modality": modality} | {
            k: v for k, v in self.config["umap"].items() if k != "modalities"
        }

    def umap_modalities(self) -> list[str]:
        encoded = {m for m, _ in self.latent_variants()}
        return [m for m in self.config["umap"]["modalities"] if m in encoded]

    # -- database extension (paper Fig. 13) -----------------------------------------------------

    @property
    def extension_enabled(self) -> bool:
        return bool(self.names(("extend",)))

    def extension_variant(self) -> tuple[str, str]:
        return self.main_variant(self.config["extend"]["modality"])

    def extension_settings(self, method: str, code: str) -> dict[str, Any]:
        """Settings of one way of extending the VAE; checkpoints keyed by them and the code."""
        from latentmech.core.workflow import as_json

        extend = self.config["extend"]
        keys = ("fraction", "ramp_steps", "lr_factor", "transfer_last_layers", "train", "threads")
        settings = {"method": method, "loss": self.config["vae"]["loss"]}
        settings |= {k: extend[k] for k in keys}
        key = hashlib.sha256((as_json(settings) + code).encode()).hexdigest()[:12]
        return settings | {"workdir": self.path("extend", method, "checkpoints", key)}

    def extension_targets(self) -> list[str]:
        if not self.extension_enabled:
            return []
        return [self.path("figures", "extension_losses.png")]

    def cnn_targets(self) -> list[str]:
        if not self.cnn_enabled:
            return []
        return [
            self.path("cnn", "error_ranges.csv"),
            self.path("cnn", "baseline.csv"),
            self.path("figures", "cnn_parity.png"),
            self.path("figures", "cnn_distributions.png"),
            self.path("figures", "cnn_training.png"),
            *self.each("predictions", "{sample}.csv", roles=("predict",)),
        ]

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
        targets += self.each("latent", "{sample}.zarr", roles=(*DATABASE_ROLES, "predict"))
        targets += self.extension_targets()
        targets += [self.path("figures", f"umap_{m}.png") for m in self.umap_modalities()]
        return targets + self.cnn_targets()
