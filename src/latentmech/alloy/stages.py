"""One function per Snakemake rule of the alloy study: read inputs, call modules, write.

``rules/alloy.smk`` rule ``alloy_<name>`` ↔ function ``<name>`` here ↔ ``latentmech alloy
<name>``. Each takes paths and a ``settings`` mapping (the rule's ``params``) and writes its
outputs atomically; the modules (dump, md, blocks, cvae, sampling, design) only compute. The
atomistic stages (``md``, ``fields``) are in :mod:`latentmech.alloy.atomistic` and the figures in
:mod:`latentmech.alloy.figures`, each with its own code digest, so that an edit here reruns no
LAMMPS job and a figure edit retrains nothing; ``md`` and ``fields`` are re-exported here.

Stores: ``fields.zarr`` stacks every sample's block fields (see ``atomistic``) along ``sample``
with its split, keeps each field's ``units``, and carries the min–max scalers fitted on the
training samples (attrs ``scalers``, also ``scalers.json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from latentmech.alloy import figures
from latentmech.alloy.atomistic import COMPONENTS, FIELD_DIMS, UNITS
from latentmech.alloy.atomistic import fields as fields
from latentmech.alloy.atomistic import md as md
from latentmech.core.errors import InputError
from latentmech.core.store import (
    atomic_path,
    open_zarr,
    provenance,
    write_json,
    write_table,
    write_zarr,
)

Settings = Mapping[str, Any]
TAU2_UNITS = f"{UNITS['stress']}2"  #: ⟨τ_p²⟩ of Eq. 6, the square of the stress unit


# -- dataset -------------------------------------------------------------------------------------


def dataset(fields: Sequence[Path], dataset: Path, scalers: Path, settings: Settings,
            code: str = "") -> None:  # fmt: skip
    """Every sample's fields stacked, with the split and min–max scalers fitted on training data."""
    from latentmech.alloy.cvae import MinMax

    parts = [open_zarr(p) for p in fields]
    first = parts[0]
    for path, part in zip(fields, parts, strict=True):
        if set(part.data_vars) != set(first.data_vars) or part.sizes != first.sizes:
            raise InputError(path, "fields", f"the same fields and block grid as {fields[0]}: "
                             f"{dict(part.sizes)} vs {dict(first.sizes)}")  # fmt: skip
    stacked = xr.concat(parts, dim="sample", coords="minimal", compat="override",
                        combine_attrs="drop")  # fmt: skip
    for name in stacked.data_vars:  # "drop" also drops the variables' units: take them back
        stacked[name].attrs = dict(first[name].attrs)
    stacked = stacked.assign_coords(sample=list(settings["samples"]),
                                    split=("sample", list(settings["split"])))  # fmt: skip
    train = np.asarray(stacked["split"]) == "train"
    fitted = {name: MinMax.fit(np.asarray(stacked[name])[train], axis=1).to_dict()
              for name in FIELD_DIMS if name in stacked}  # fmt: skip
    attrs = provenance("alloy_dataset", settings, code) | {"scalers": fitted}
    write_zarr(stacked, dataset, attrs=attrs)
    write_json({"scalers": fitted, "fields": sorted(fitted)}, scalers)


def _text(values: Any) -> np.ndarray:
    """Labels as a plain numpy unicode array (zarr v3 hands strings back as StringDType)."""
    return np.asarray(values).astype(object).astype(str)


def _load_dataset(path: Path) -> xr.Dataset:
    ds = open_zarr(path)
    labels = {name: (ds[name].dims, _text(ds[name])) for name in ds.coords
              if np.asarray(ds[name]).dtype.kind not in "iuf"}  # fmt: skip
    return ds.assign_coords(labels)


# -- model inputs --------------------------------------------------------------------------------


def _scalers(ds: xr.Dataset) -> dict[str, Any]:
    from latentmech.alloy.cvae import MinMax

    return {name: MinMax.from_dict(d) for name, d in ds.attrs["scalers"].items()}


def _model_field(ds: xr.Dataset, field: str, scalers: Mapping[str, Any],
                 role: str) -> tuple[np.ndarray, Any]:  # fmt: skip
    """One dataset field as the model sees it (S, C, r, r, r), min–max scaled, and its scaler.

    As a condition, the concentration field keeps its first n_el − 1 elements: the last is
    1 − the others (the paper's "2 independent concentration variables").
    """
    if field not in ds:
        raise InputError("config", f"alloy.cvae.fields ({role})",
                         f"a field of the dataset {sorted(FIELD_DIMS)} that was computed; "
                         f"{field!r} is not in it (eigenstrain needs alloy.eigenstrain: true)")  # fmt: skip
    values = np.asarray(ds[field], dtype=np.float64)
    scaler = scalers[field]
    if field == "concentration" and role != "target":
        keep = list(range(values.shape[1] - 1))
        values, scaler = values[:, keep], scaler.select(keep)
    scaled = scaler.transform(values, axis=1)
    if not np.all(np.isfinite(scaled)):
        raise InputError("fields.zarr", field, "finite values in every block (a block without "
                         "atoms of some element has undefined Warren–Cowley parameters: use "
                         "larger blocks or fewer of them)")  # fmt: skip
    return scaled.astype(np.float32), scaler


def _model_inputs(ds: xr.Dataset, fields_config: Mapping[str, Any]) -> tuple[dict, dict]:
    """Scaled arrays keyed as the model's batches ("target" and the condition names) + scalers."""
    scalers = _scalers(ds)
    arrays, used = {}, {}
    arrays["target"], used["target"] = _model_field(ds, fields_config["target"], scalers,
                                                    "target")  # fmt: skip
    for name, field in fields_config["conditions"].items():
        arrays[name], used[name] = _model_field(ds, field, scalers, name)
    return arrays, used


def _split_mask(ds: xr.Dataset, split: str) -> np.ndarray:
    return np.asarray(ds["split"]) == split


def _subset(arrays: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in arrays.items()}


# -- training ------------------------------------------------------------------------------------


def train_cvae(dataset: Path, model: Path, sidecar: Path, history: Path, settings: Settings,
               code: str = "") -> None:  # fmt: skip
    """Train AlloyVAE (Eq. 2) on the training samples; keep the best-on-validation weights.

    Resumable: the loop's checkpoints live in ``settings["workdir"]`` (keyed by a digest of the
    settings and code), so a retried or requeued job continues where it stopped.
    """
    import shutil

    import torch

    from latentmech.alloy import cvae
    from latentmech.core.distributed import is_main_process
    from latentmech.core.train import Trainer, TrainSettings, data_fingerprint, load_checkpoint

    torch.set_num_threads(int(settings.get("threads", 1)))
    ds = _load_dataset(dataset)
    fields_config = settings["fields"]
    arrays, _ = _model_inputs(ds, fields_config)
    data = {s: cvae.BlockDataset(_subset(arrays, _split_mask(ds, s))) for s in ("train", "val")}
    if len(data["train"]) == 0 or len(data["val"]) == 0:
        raise InputError(dataset, "split", "at least one training and one validation sample")
    config = _cvae_config(settings["model"], arrays)
    loss = cvae.CVAELoss(**settings["loss"], roll=bool(settings["augment"]))
    train_settings = TrainSettings.from_dict(settings["train"])
    _check_batches(len(data["train"]), train_settings.batch_size, config.batch_norm)
    torch.manual_seed(train_settings.seed)  # the initial weights follow the seed too
    trainer = Trainer(cvae.AlloyCVAE(config), loss, train_settings, settings["workdir"],
                      fingerprint=data_fingerprint(*data["train"].tensors))  # fmt: skip
    result = trainer.fit(data["train"], data["val"])
    if not is_main_process():  # under torchrun, rank 0 alone writes the outputs
        return
    best = cvae.AlloyCVAE(config)
    best.load_state_dict(load_checkpoint(result.best_path)["model"])
    with atomic_path(model) as tmp:
        torch.save(best.state_dict(), tmp)
    meta = {"config": config.to_dict(), "fields": fields_config,
            "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
            "parameters": cvae.count_parameters(best)}  # fmt: skip
    write_json(meta | {"provenance": provenance("alloy_train_cvae", settings, code)}, sidecar)
    with atomic_path(history) as tmp:
        shutil.copyfile(result.history_path, tmp)


def _check_batches(n_train: int, batch_size: int, batch_norm: bool) -> None:
    """BatchNorm cannot train on a batch of one sample: refuse a split that would make one."""
    last = n_train % batch_size or batch_size  # the smallest batch of an epoch
    if batch_norm and last == 1:
        raise InputError("config", "alloy.cvae.train.batch_size",
                         f"a batch size that leaves no batch of a single sample ({n_train} "
                         f"training samples in batches of {batch_size}; the model's batch "
                         "normalisation needs at least 2 per batch)")  # fmt: skip


def _cvae_config(model: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    """The model's config: the configured widths, channels and grid from the data."""
    from latentmech.alloy.cvae import CVAEConfig

    target = arrays["target"]
    conditions = [{"name": k, "channels": int(v.shape[1])} for k, v in arrays.items()
                  if k != "target"]  # fmt: skip
    return CVAEConfig.from_dict({**model, "blocks": int(target.shape[-1]),
                                 "conditions": conditions,
                                 "target_channels": int(target.shape[1])})  # fmt: skip


def load_cvae(model: Path, sidecar: Path) -> tuple[Any, dict[str, Any]]:
    """The trained AlloyVAE (eval mode, CPU) and its sidecar."""
    import json

    import torch

    from latentmech.alloy.cvae import AlloyCVAE, CVAEConfig

    meta = json.loads(Path(sidecar).read_text())
    net = AlloyCVAE(CVAEConfig.from_dict(meta["config"]))
    net.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
    return net.eval(), meta


# -- evaluation (Figs. 4 and 5) ------------------------------------------------------------------

#: The metrics of the reconstruction table, with their definitions (the README repeats them).
METRIC_DEFINITIONS = {
    "mre": "Eq. 5: mean over all blocks and components of |rec - ref| / |ref|, physical units",
    "mre_scaled": "mean of |rec - ref| / |ref| on min-max scaled values where ref >= 0.01 "
                  "(as the authors' code computes it)",
    "r2": "1 - sum (ref - rec)^2 / sum (ref - mean ref)^2 over all blocks and components",
    "condition_mre": "mean over samples of the mean over the vector of |enc - smooth| / "
                     "|smooth|: encoder conditions against the smoothers' (Fig. 5)",
}  # fmt: skip


def _reconstruct(net: Any, arrays: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Test-time reconstruction as in section 2.2: encode σ, draw z, decode with the conditions."""
    import torch

    names = net.config.condition_names
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            out = net(torch.from_numpy(arrays["target"]),
                      {n: torch.from_numpy(arrays[n]) for n in names}, sample=True)  # fmt: skip
    finally:
        torch.random.set_rng_state(generator_state)
    result = {"reconstruction": out.reconstruction.numpy().astype(np.float64)}
    for n in names:
        result[f"encoder_{n}"] = out.encoder_conditions[n].numpy().astype(np.float64)
        result[f"smoother_{n}"] = out.smoother_conditions[n].numpy().astype(np.float64)
    return result


def _metric_rows(split: str, rec: Mapping[str, np.ndarray], scaled_ref: np.ndarray,
                 scaler: Any, baseline: np.ndarray, names: Sequence[str],
                 component_names: Sequence[str]) -> list[dict[str, Any]]:  # fmt: skip
    from latentmech.alloy import cvae
    from latentmech.core.metrics import mean_relative_error, r2_score, scaled_mean_relative_error

    reference = scaler.inverse(scaled_ref.astype(np.float64), axis=1)
    physical = scaler.inverse(rec["reconstruction"], axis=1)
    mean_field = np.broadcast_to(baseline, reference.shape)
    rows = []
    for label, prediction, scaled in (("model", physical, rec["reconstruction"]),
                                      ("training mean", mean_field,
                                       scaler.transform(mean_field, axis=1))):  # fmt: skip
        values = {"mre": mean_relative_error(prediction, reference),
                  "mre_scaled": scaled_mean_relative_error(scaled, scaled_ref),
                  "r2": r2_score(prediction, reference)}  # fmt: skip
        per = {"mre": mean_relative_error(prediction, reference, channel_axis=1),
               "r2": r2_score(prediction, reference, channel_axis=1)}  # fmt: skip
        for metric, value in values.items():
            rows.append({"split": split, "predictor": label, "metric": metric,
                         "component": "all", "value": float(value)})  # fmt: skip
        for metric, value in per.items():
            rows += [{"split": split, "predictor": label, "metric": metric, "component": c,
                      "value": float(v)} for c, v in zip(component_names, value, strict=True)]  # fmt: skip
    for n in names:
        mre = cvae.condition_mre(rec[f"encoder_{n}"], rec[f"smoother_{n}"])
        rows.append({"split": split, "predictor": "model", "metric": "condition_mre",
                     "component": n, "value": float(np.mean(mre))})  # fmt: skip
    return rows


def evaluate(dataset: Path, model: Path, sidecar: Path, table: Path, reconstruction: Path,
             conditions: Path, settings: Settings, code: str = "") -> None:  # fmt: skip
    """Reconstruction metrics per split against a training-mean baseline; Figs. 4 and 5."""
    import torch

    torch.set_num_threads(int(settings.get("threads", 1)))
    net, meta = load_cvae(model, sidecar)
    ds = _load_dataset(dataset)
    arrays, scalers = _model_inputs(ds, meta["fields"])
    target = meta["fields"]["target"]
    components = [str(c) for c in np.asarray(ds[FIELD_DIMS[target]])]
    train = _subset(arrays, _split_mask(ds, "train"))
    baseline = scalers["target"].inverse(train["target"].astype(np.float64), axis=1).mean(axis=0)
    rows, results = [], {}
    for split in ("train", "test"):
        part = _subset(arrays, _split_mask(ds, split))
        results[split] = (part, _reconstruct(net, part, seed=int(settings.get("seed", 0))))
        rows += _metric_rows(split, results[split][1], part["target"], scalers["target"],
                             baseline, net.config.condition_names, components)  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["definition"] = frame["metric"].map(METRIC_DEFINITIONS)
    write_table(frame, table)
    part, rec = results["test"]
    reference = scalers["target"].inverse(part["target"].astype(np.float64), axis=1)
    physical = scalers["target"].inverse(rec["reconstruction"], axis=1)
    figures.figure_reconstruction(reference, physical, components, target, frame, reconstruction,
                           int(settings.get("examples", 3)))  # fmt: skip
    figures.figure_conditions(rec, net.config.condition_names, conditions)


# -- self-checked prediction (Algorithm 1, Fig. 6) -----------------------------------------------


def sample(dataset: Path, model: Path, sidecar: Path, predictions: Path, table: Path,
           figure: Path, settings: Settings, code: str = "") -> None:  # fmt: skip
    """Algorithm 1 on the test inputs: accepted realisations, reproduced conditions, statistics."""
    import torch

    from latentmech.alloy.sampling import self_checked_predictions

    torch.set_num_threads(int(settings.get("threads", 1)))
    net, meta = load_cvae(model, sidecar)
    ds = _load_dataset(dataset)
    arrays, scalers = _model_inputs(ds, meta["fields"])
    mask = _split_mask(ds, "test")
    names = net.config.condition_names
    inputs = {n: arrays[n][mask] for n in names}
    result = self_checked_predictions(net, inputs, n_max=int(settings["n_max"]),
                                      k=float(settings["k"]), n_accept=int(settings["n_accept"]),
                                      seed=int(settings["seed"]),
                                      stop_early=bool(settings["stop_early"]))  # fmt: skip
    target = meta["fields"]["target"]
    channel = FIELD_DIMS[target]
    scaler = scalers["target"]
    scaled = result.predictions.numpy().astype(np.float64)
    physical = scaler.inverse(scaled, axis=2)
    reference = scaler.inverse(arrays["target"][mask].astype(np.float64), axis=1)
    samples = np.asarray(ds["sample"])[mask]
    ds_out = xr.Dataset(
        {
            "prediction": (("input", "slot", channel, "x", "y", "z"), physical),
            "reference": (("input", channel, "x", "y", "z"), reference),
            "valid": (("input", "slot"), result.valid.numpy()),
            "draw": (("input", "slot"), result.draw_index.numpy()),
            "attempts": (("input",), result.attempts.numpy()),
            "accepted": (("input",), result.accepted.numpy()),
            **{
                f"mre_{n}": (("input", "slot"), result.mre[n].numpy().astype(np.float64))
                for n in names
            },
        },
        coords={"input": samples, channel: np.asarray(ds[channel]).astype(str)},
    )
    for name in ("prediction", "reference"):
        ds_out[name].attrs = {"field": target, **ds[target].attrs}
    summary = result.summary()
    write_zarr(ds_out, predictions, attrs=provenance("alloy_sample", settings, code) | summary)
    rows = [{"input": s, "attempts": int(a), "accepted": int(c),
             **{f"mean_mre_{n}": float(np.nanmean(np.where(result.valid.numpy()[i],
                                                          result.mre[n].numpy()[i], np.nan)))
                if result.valid.numpy()[i].any() else float("nan") for n in names}}
            for i, (s, a, c) in enumerate(zip(samples, result.attempts.numpy(),
                                              result.accepted.numpy(), strict=True))]  # fmt: skip
    rows.append({"input": "all", "attempts": int(result.attempts.sum()),
                 "accepted": int(result.accepted.sum()),
                 "acceptance_rate": result.acceptance_rate,
                 "reached_fraction": result.reached_fraction})  # fmt: skip
    write_table(pd.DataFrame(rows), table)
    figures.figure_predictions(ds_out, names, settings, figure)


# -- inverse design (Algorithm 2, Fig. 7, SI Table 2) --------------------------------------------


def design(dataset: Path, model: Path, sidecar: Path, design: Path, settings: Settings,
           code: str = "") -> None:  # fmt: skip
    """Algorithm 2 for one latent initialisation (random or fixed): optimised concentrations."""
    import torch

    from latentmech.alloy import design as inverse

    torch.set_num_threads(int(settings.get("threads", 1)))
    net, meta = load_cvae(model, sidecar)
    if meta["fields"]["target"] != "stress":
        raise InputError("config", "alloy.cvae.fields.target",
                         "the stress field for inverse design (Eq. 6 needs σ)")  # fmt: skip
    ds = _load_dataset(dataset)
    arrays, _ = _model_inputs(ds, meta["fields"])
    scalers = _scalers(ds)
    by_field = {field: name for name, field in meta["fields"]["conditions"].items()}
    if set(by_field) != {"concentration", "wc"}:
        raise InputError("config", "alloy.cvae.fields.conditions",
                         "exactly the concentration and wc fields as conditions for inverse "
                         f"design (Eq. 8), got {meta['fields']['conditions']}")  # fmt: skip
    options = inverse.DesignSettings.from_dict(
        _design_options(settings)
        | {"concentration": by_field["concentration"], "wc": by_field["wc"]}
    )
    c_name = options.concentration
    mean, std = inverse.concentration_prior(arrays[c_name][_split_mask(ds, "train")])
    result = inverse.inverse_design(net, scalers["concentration"], scalers["wc"],
                                    scalers["stress"], mean, std, options)  # fmt: skip
    elements = [str(e) for e in np.asarray(ds["element"])]
    history = result.history
    terms = [k for k in inverse.TERMS if k in history]
    out = xr.Dataset(
        {
            "concentration": (
                ("candidate", "element", "x", "y", "z"),
                result.concentration,
                {"units": UNITS["concentration"]},
            ),
            "initial_concentration": (
                ("candidate", "element", "x", "y", "z"),
                result.initial_concentration,
                {"units": UNITS["concentration"]},
            ),
            "stress": (
                ("candidate", "component", "x", "y", "z"),
                result.stress,
                {"units": UNITS["stress"]},
            ),
            "tau2_before": (("candidate",), result.tau2_before, {"units": TAU2_UNITS}),
            "tau2_after": (("candidate",), result.tau2_after, {"units": TAU2_UNITS}),
            "mre_c": (("candidate",), result.mre["c"]),
            "mre_w": (("candidate",), result.mre["w"]),
            "variance_before": (("candidate", "element"), result.variance_before),
            "variance_after": (("candidate", "element"), result.variance_after),
            "history": (
                ("iteration", "term", "candidate"),
                np.stack([history[k] for k in terms], axis=1),
            ),
            "history_fields": (("iteration", "kept", "element", "x", "y", "z"), history["fields"]),
        },
        coords={
            "element": elements,
            "component": list(COMPONENTS),
            "term": terms,
            "iteration": history["iteration"],
        },
    )
    summary = {k: float(v) for k, v in result.summary().items()}
    write_zarr(out, design, attrs=provenance("alloy_design", settings, code) | summary
               | {"method": settings["method"]})  # fmt: skip


def _design_options(settings: Settings) -> dict[str, Any]:
    """The Algorithm 2 settings of the config (the rest, e.g. threads, is the stage's)."""
    from dataclasses import fields as dataclass_fields

    from latentmech.alloy.design import DesignSettings

    known = {f.name for f in dataclass_fields(DesignSettings)}
    return {k: v for k, v in settings.items() if k in known}


def _training_statistics(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """⟨τ_p²⟩ and the mean concentration variance over blocks of every training sample."""
    from latentmech.alloy.design import mean_square_shear

    train = _split_mask(ds, "train")
    tau2 = np.asarray(mean_square_shear(np.asarray(ds["stress"])[train]))
    variance = (
        np.asarray(ds["concentration"])[train]
        .reshape(int(train.sum()), ds.sizes["element"], -1)
        .var(axis=2)
    )
    return tau2, variance.mean(axis=1)


def design_summary(dataset: Path, designs: Sequence[Path], table: Path, clusters: Path,
                   figure: Path, settings: Settings, code: str = "") -> None:  # fmt: skip
    """Fig. 7 and SI Table 2: both methods' statistics, Isomap and cluster means."""
    from latentmech.alloy.design import cluster_concentrations

    ds = _load_dataset(dataset)
    tau2_train, variance_train = _training_statistics(ds)
    scaler = _scalers(ds)["concentration"]
    rows, cluster_rows, panels = [], [], []
    for path in designs:
        result = open_zarr(path)
        method = str(result.attrs["method"])
        conc = np.asarray(result["concentration"])
        found = cluster_concentrations(conc, n_clusters=int(settings["n_clusters"]),
                                       n_neighbors=int(settings["isomap_neighbors"]),
                                       seed=int(settings["seed"]))  # fmt: skip
        mre = np.maximum(np.asarray(result["mre_c"]), np.asarray(result["mre_w"]))
        rows.append({"method": method, "candidates": conc.shape[0],
                     "tau2_train": float(tau2_train.mean()),
                     "tau2_before": float(np.mean(result["tau2_before"])),
                     "tau2_after": float(np.mean(result["tau2_after"])),
                     "variance_train": float(variance_train.mean()),
                     "variance_before": float(np.mean(result["variance_before"])),
                     "variance_after": float(np.mean(result["variance_after"])),
                     "mre_c": float(np.mean(result["mre_c"])),
                     "mre_w": float(np.mean(result["mre_w"])),
                     "fraction_self_checked": float(np.mean(mre <= float(settings["k"])))})  # fmt: skip
        elements = [str(e) for e in np.asarray(result["element"])]
        # SI Table 2 gives min-max normalised means (equiatomic ≈ 0.5): both are listed
        normalised = scaler.transform(found.means, axis=1)
        for k in range(found.means.shape[0]):
            cluster_rows.append({"method": method, "cluster": k + 1, "size": int(found.sizes[k]),
                                 **{e: float(found.means[k, j]) for j, e in enumerate(elements)},
                                 **{f"{e}_normalised": float(normalised[k, j])
                                    for j, e in enumerate(elements)}})  # fmt: skip
        panels.append((method, result, found, mre))
    write_table(pd.DataFrame(rows), table)
    write_table(pd.DataFrame(cluster_rows), clusters)
    figures.figure_design(panels, tau2_train, variance_train, settings, figure)
