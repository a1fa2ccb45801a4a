"""One function per Snakemake rule of the HR-DIC study: read inputs, call the wing's modules, write.

``rules/dic.smk`` rule ``dic_<name>`` ↔ function ``<name>`` here ↔ ``latentmech dic <name>``.
Each takes paths and a ``settings`` mapping (the rule's ``params``) and writes its outputs
atomically; modules below (io, synth, prep, events) only compute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from latentmech.core.errors import InputError
from latentmech.core.store import (
    DEFAULT_ITEM_CHUNK,
    atomic_path,
    consolidate_zarr,
    open_zarr,
    provenance,
    read_table,
    write_table,
    write_zarr,
)
from latentmech.dic import prep

# The generator, the readers and the event detector import heavy libraries (scipy.spatial,
# scikit-image, h5py …); each stage imports only what it runs, since every job is a new process.

Settings = Mapping[str, Any]
SAMPLE_ATTRS = ("sample", "material", "specimen", "step", "strain_pct", "stress_mpa", "role")

# ---------------------------------------------------------------------------------------------
# materials


def materials(output: Path, settings: Settings, code: str = "", table: Path | None = None) -> None:
    """Write the materials table: generated properties (synthetic) or the user's checked table."""
    from latentmech.dic import synth
    from latentmech.dic.samples import PROPERTY_COLUMNS

    if settings["source"] == "synthetic":
        seed = int(settings["seed"])
        rows = []
        for spec_dict in settings["materials"]:
            spec = synth.MaterialSpec.from_dict(spec_dict)
            rows.append({"material": spec.name, **synth.material_properties(spec, seed)})
        frame = pd.DataFrame(rows, columns=["material", *PROPERTY_COLUMNS])
    elif table is not None:
        from latentmech.core.schema import load_schema
        from latentmech.dic.samples import read_materials

        frame = read_materials(table, load_schema(settings["schema"]))
    else:  # measured maps without known properties (prediction only)
        frame = pd.DataFrame({"material": sorted(settings["names"])})
        for column in PROPERTY_COLUMNS:
            frame[column] = np.nan
    write_table(frame, output)


# ---------------------------------------------------------------------------------------------
# raw maps


def _map_coords(shape: tuple[int, int], pixel_um: float) -> dict[str, Any]:
    """Pixel-centre coordinates in µm (y down the rows, x along the columns)."""
    ny, nx = shape
    return {
        "y": (
            "y",
            (np.arange(ny) + 0.5) * pixel_um,
            {"units": "µm", "long_name": "position along rows"},
        ),
        "x": (
            "x",
            (np.arange(nx) + 0.5) * pixel_um,
            {"units": "µm", "long_name": "position along columns"},
        ),
    }


MODALITY_ATTRS = {
    "exx": {"units": "1", "long_name": "longitudinal strain ε_xx (tensile axis x)"},
    "eyy": {"units": "1", "long_name": "transverse strain ε_yy"},
    "exy": {"units": "1", "long_name": "shear strain ε_xy"},
    "intensity": {"units": "nm", "long_name": "slip intensity"},
    "direction": {"units": "degree", "long_name": "slip direction relative to the band trace"},
    "rotation": {"units": "rad", "long_name": "in-plane lattice rotation"},
    "max_shear": {"units": "1", "long_name": "maximum shear strain"},
}


def _sample_attrs(sample: Mapping[str, Any]) -> dict[str, Any]:
    attrs = {k: sample.get(k) for k in SAMPLE_ATTRS}
    attrs["specimen"] = str(attrs["specimen"])
    for key in ("strain_pct", "stress_mpa"):
        value = attrs[key]
        attrs[key] = float("nan") if value is None else float(value)
    return attrs


def synthesize(raw: Path, settings: Settings, code: str = "") -> None:
    """Generate one synthetic HR-DIC map (four modalities + ground truth) for one sample."""
    from latentmech.dic import synth

    sample = dict(settings["sample"])
    spec = synth.MaterialSpec.from_dict(settings["material"])
    map_settings = synth.SynthSettings.from_dict(settings["map"])
    seed = int(settings["seed"])
    props = synth.material_properties(spec, seed)
    sample["stress_mpa"] = synth.macroscopic_stress(props, float(sample["strain_pct"]))
    # Sample steps count from 1 (as in the paper's tables); the generator indexes strain levels from 0.
    step_index = int(sample["step"]) - 1
    result = synth.synthesize(spec, int(sample["specimen"]), step_index, map_settings, seed)
    coords = _map_coords(result.exx.shape, map_settings.pixel_size_um)
    data = {
        name: (("y", "x"), getattr(result, name), MODALITY_ATTRS[name])
        for name in ("exx", "intensity", "direction", "rotation")
    }
    data["band_labels"] = (
        ("y", "x"),
        result.band_labels,
        {"long_name": "ground-truth slip band id (0: none)"},
    )
    data["grain_ids"] = (("y", "x"), result.grain_ids, {"long_name": "grain id"})
    bands = result.bands.rename(columns={"band": "band_id"}).set_index("band_id")
    ds = xr.Dataset(data, coords=coords).merge(
        xr.Dataset.from_dataframe(bands).rename({"band_id": "band"})
    )
    attrs = _sample_attrs(sample) | {"pixel_size_um": map_settings.pixel_size_um, "synthetic": 1}
    write_zarr(ds, raw, attrs | provenance("dic_synthesize", settings, code))


def _read_modalities(
    sample: Mapping[str, Any], modalities: Sequence[str]
) -> tuple[dict, float, dict]:
    """Maps of one sheet row, each with the file it came from; DaVis displacement → strain fields."""
    from latentmech.dic import io as dic_io
    from latentmech.dic import kinematics
    from latentmech.dic.samples import FROM_DISPLACEMENT, sample_files, split_file_key

    files = sample_files(sample)
    fields: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    pixel = float(sample["pixel_size_um"])
    if "displacement" in files and any(
        m not in files and m in FROM_DISPLACEMENT for m in modalities
    ):
        vectors = dic_io.read_davis(files["displacement"])
        derived = kinematics.strain_fields(vectors.u, vectors.v, vectors.spacing_px)
        pixel = pixel * vectors.spacing_px  # one vector of the map covers `spacing` image pixels
        for m in modalities:
            if m not in files and m in derived:
                fields[m], origin[m] = derived[m], files["displacement"]
    for m in modalities:
        if m in files:
            file, key = split_file_key(files[m])
            fields[m], origin[m] = dic_io.read_map(file, key), files[m]
    return fields, pixel, origin


def _check_maps(fields: Mapping[str, np.ndarray], origin: Mapping[str, str]) -> None:
    shapes = {m: a.shape for m, a in fields.items()}
    reference = next(iter(fields))
    for m, shape in shapes.items():
        if shape != shapes[reference]:
            raise InputError(
                origin[m],
                m,
                f"map of shape {shape} differs from {reference!r} ({origin[reference]}) of shape "
                f"{shapes[reference]}: all modalities of a sample must share one grid",
            )
    for m, array in fields.items():
        if not np.isfinite(array).any():
            raise InputError(origin[m], m, "the map is all NaN (no valid pixel)")


def ingest(raw: Path, settings: Settings, code: str = "") -> None:
    """Read one measured sample (files of its sheet row) into a raw zarr store."""
    sample = settings["sample"]
    modalities = list(settings["modalities"])
    fields, pixel, origin = _read_modalities(sample, modalities)
    _check_maps(fields, origin)
    coords = _map_coords(next(iter(fields.values())).shape, pixel)
    data = {
        m: (
            ("y", "x"),
            fields[m].astype(np.float32),
            MODALITY_ATTRS[m] | {"source_file": origin[m]},
        )
        for m in modalities
    }
    attrs = _sample_attrs(sample) | {"pixel_size_um": pixel, "synthetic": 0}
    write_zarr(
        xr.Dataset(data, coords=coords), raw, attrs | provenance("dic_ingest", settings, code)
    )


# ---------------------------------------------------------------------------------------------
# preprocessing and events


def _prep_settings(settings: Settings) -> dict[str, prep.ModalitySettings]:
    return {
        m: prep.ModalitySettings.from_dict(settings["prep"].get(m, {}))
        for m in settings["modalities"]
    }


def preprocess(raw: Path, prepped: Path, settings: Settings, code: str = "") -> None:
    """Blur, threshold, scale and split angles of each modality (paper constants by default)."""
    source = open_zarr(raw)
    modality_settings = _prep_settings(settings)
    fields = {m: source[m].values for m in settings["modalities"]}
    try:
        result = prep.preprocess(fields, modality_settings)
    except InputError as exc:
        where = f"{exc.source}, {exc.where}" if exc.where else exc.source
        raise InputError(raw, where, exc.problem) from exc
    data = {}
    for modality, channels in result.channels.items():
        names = prep.channel_names(modality, modality_settings[modality])
        for name, channel in zip(names, channels, strict=True):
            data[name] = (("y", "x"), channel, {"modality": modality})
    data["valid"] = (("y", "x"), result.valid, {"long_name": "all modalities measured (not NaN)"})
    ds = xr.Dataset(data, coords={"y": source["y"], "x": source["x"]})
    attrs = {k: source.attrs[k] for k in (*SAMPLE_ATTRS, "pixel_size_um", "synthetic")}
    write_zarr(ds, prepped, attrs | provenance("dic_preprocess", settings, code))


def detect_events(
    prepped: Path, labels: Path, table: Path, settings: Settings, code: str = ""
) -> None:
    """Segment individual slip events of one preprocessed map; labels and per-event statistics."""
    from latentmech.dic import events as ev

    source = open_zarr(prepped)
    channel = settings["modality"]
    if channel not in source:
        raise InputError(
            prepped,
            channel,
            f"no channel {channel!r} to detect events in (config dic.events.modality)",
        )
    event_settings = ev.EventSettings.from_dict(
        {k: v for k, v in settings.items() if k not in ("modality", "match")}
    )
    pixel = float(source.attrs["pixel_size_um"])
    event_labels, stats = ev.detect_events(
        source[channel].values, source["valid"].values, event_settings, pixel_size_um=pixel
    )
    ds = xr.Dataset(
        {
            "events": (
                ("y", "x"),
                event_labels.astype(np.int32),
                {"long_name": "slip event id (0: none)"},
            )
        },
        coords={"y": source["y"], "x": source["x"]},
    )
    attrs = {k: source.attrs[k] for k in (*SAMPLE_ATTRS, "pixel_size_um")}
    write_zarr(ds, labels, attrs | provenance("dic_detect_events", settings, code))
    stats.insert(0, "sample", source.attrs["sample"])
    write_table(stats, table)


def _visible_bands(truth: np.ndarray, channel: np.ndarray, min_pixels: float) -> np.ndarray:
    """Ground-truth bands a detector can see: ≥ half their core and ≥ ``min_pixels`` pixels above 0.

    Faint bands whose intensity stays mostly below the preprocessing threshold are not in the
    map the detector gets, so they do not count against its recall.
    """
    n = int(truth.max()) + 1
    total = np.bincount(truth.ravel(), minlength=n)
    seen = np.bincount(truth.ravel(), weights=(channel > 0).ravel(), minlength=n)
    keep = (seen >= min_pixels) & (seen >= 0.5 * total)
    keep[0] = False
    return np.where(keep[truth], truth, 0)


def event_scores(
    raw: Sequence[Path],
    prepped: Sequence[Path],
    labels: Sequence[Path],
    output: Path,
    settings: Settings,
    code: str = "",
) -> None:
    """Recall and precision of detected events against the generator's bands, per sample.

    Recall counts the visible bands (see :func:`_visible_bands`) recovered as one event;
    precision counts the events that match some band, faint or not.
    """
    from latentmech.dic import events as ev

    rows = []
    for raw_path, prep_path, label_path in zip(raw, prepped, labels, strict=True):
        truth = open_zarr(raw_path)
        bands = truth["band_labels"].values
        channel = open_zarr(prep_path)[settings["modality"]].values
        detected = open_zarr(label_path)["events"].values
        visible = _visible_bands(bands, channel, settings["min_length_px"])
        found = ev.match_events(visible, detected, **settings["match"])
        correct = ev.match_events(bands, detected, **settings["match"])
        rows.append(
            {k: truth.attrs[k] for k in ("sample", "material", "step")}
            | {
                "n_visible_bands": found.n_truth,
                "n_recovered": found.n_matched_truth,
                "n_events": correct.n_detected,
                "n_correct_events": correct.n_matched_detected,
                "recall": found.recall,
                "precision": correct.precision,
            }
        )
    write_table(pd.DataFrame(rows), output)


# ---------------------------------------------------------------------------------------------
# windows


def _window_table(
    prepped: Sequence[Path], window: int, stride: int | None, split: Settings
) -> pd.DataFrame:
    """One row per window of every sample, with its grid place, physical origin and split."""
    frames = []
    for index, path in enumerate(prepped):
        with xr.open_zarr(path, consolidated=True) as ds:
            attrs = dict(ds.attrs)
            shape = (ds.sizes["y"], ds.sizes["x"])
        grid = prep.window_grid(shape, window, stride)
        if grid.empty:
            raise InputError(
                path, "", f"map of {shape} px is smaller than one window of {window} px"
            )
        pixel = float(attrs["pixel_size_um"])
        grid = grid.assign(
            source=index,
            y0_um=grid["y0"] * pixel,
            x0_um=grid["x0"] * pixel,
            pixel_size_um=pixel,
            **{k: attrs[k] for k in SAMPLE_ATTRS},
        )
        frames.append(grid)
    table = pd.concat(frames, ignore_index=True)
    eligible = (table["role"] == "train").to_numpy()
    table["split"] = prep.split_windows(
        table["material"].tolist(), eligible, tuple(split["fractions"]), int(split["seed"])
    )
    return table


def _sample_windows(
    prep_path: Path, event_path: Path, rows: pd.DataFrame, window: int
) -> xr.Dataset:
    source = open_zarr(prep_path)
    event_labels = open_zarr(event_path)["events"].values
    grid = rows[["row", "col", "y0", "x0"]]
    data = {}
    for name, var in source.data_vars.items():
        data[name] = (
            ("window", "wy", "wx"),
            prep.extract_windows(var.values, grid, window),
            var.attrs,
        )
    data["events"] = (
        ("window", "wy", "wx"),
        prep.extract_windows(event_labels, grid, window),
        {"long_name": "slip event id within the sample (0: none)"},
    )
    data["valid_fraction"] = ("window", data["valid"][1].mean(axis=(1, 2)).astype(np.float32))
    pixel = float(source.attrs["pixel_size_um"])
    offsets = (np.arange(window) + 0.5) * pixel
    coords = {c: ("window", rows[c].to_numpy()) for c in _WINDOW_COORDS}
    coords |= {"wy": ("wy", offsets, {"units": "µm"}), "wx": ("wx", offsets, {"units": "µm"})}
    return xr.Dataset(data, coords=coords)


_WINDOW_COORDS = (
    "sample", "material", "specimen", "step", "strain_pct", "stress_mpa", "role", "split",
    "row", "col", "y0_um", "x0_um",
)  # fmt: skip


def windows(
    prepped: Sequence[Path], labels: Sequence[Path], windows_zarr: Path, windows_csv: Path,
    settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Tile every map into windows (with event masks) in one zarr store, split 70/20/10 by material.

    Written sample by sample (append along ``window``) so memory stays that of one map.
    """
    size = int(settings["size_px"])
    table = _window_table(prepped, size, settings.get("stride_px"), settings["split"])
    table["window"] = np.arange(len(table))
    attrs = provenance("dic_windows", settings, code) | {"window_px": size}
    with atomic_path(windows_zarr) as tmp:
        for index, (prep_path, event_path) in enumerate(zip(prepped, labels, strict=True)):
            rows = table[table["source"] == index]
            ds = _sample_windows(prep_path, event_path, rows, size)
            if index == 0:
                encoding = {
                    name: {"chunks": (DEFAULT_ITEM_CHUNK, size, size)}
                    for name in ds.data_vars
                    if ds[name].ndim == 3
                }
                ds.assign_attrs(attrs).to_zarr(
                    tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding
                )
            else:
                ds.to_zarr(tmp, append_dim="window", zarr_format=3, consolidated=False)
        consolidate_zarr(tmp)
    write_table(table.drop(columns=["source"]), windows_csv)


# ---------------------------------------------------------------------------------------------
# figures


def figure_modalities(raw: Path, figure: Path, settings: Settings, code: str = "") -> None:
    """Paper Fig. 2 for one material: each modality of one map with the window grid drawn on it."""
    from latentmech.core import plots

    source = open_zarr(raw)
    modalities = [m for m in settings["modalities"] if m in source]
    window = int(settings["size_px"])
    pixel = float(source.attrs["pixel_size_um"])
    fig = plots.modality_panels(
        {m: source[m].values for m in modalities},
        {m: MODALITY_ATTRS[m] for m in modalities},
        pixel_um=pixel,
        grid=prep.window_grid(
            (source.sizes["y"], source.sizes["x"]), window, settings.get("stride_px")
        ),
        window_px=window,
        title=(
            f"{source.attrs['material']} — sample {source.attrs['sample']}, "
            f"ε_p = {source.attrs['strain_pct']:.2f} %"
        ),
    )
    plots.save_figure(fig, figure)


# ---------------------------------------------------------------------------------------------
# VAEs


def _window_arrays(windows_zarr: Path, channels: Sequence[str], split: str) -> dict[str, Any]:
    """The windows of one split: channels (N, C, W, W), events, valid, and their metadata."""
    with xr.open_zarr(windows_zarr, consolidated=True) as ds:
        index = np.flatnonzero(ds["split"].values == split)
        selected = ds.isel(window=index)
        return {
            "x": np.stack([selected[c].values for c in channels], axis=1).astype(np.float32),
            "events": selected["events"].values.astype(np.int64),
            "valid": selected["valid"].values.astype(bool),
            "material": np.asarray(selected["material"].values.tolist(), dtype=object),
            "step": selected["step"].values.astype(int),
        }


def _vae_loss_fn(channels: Sequence[str], augment: str, beta: float, max_power: float):
    """The VAE loss with the augmentations of ``augment`` applied to training batches only."""
    from latentmech.dic import vae

    def loss(model: Any, batch: Any) -> Any:
        x, events, valid = batch
        if model.training and augment == "reflect_mask":
            x = vae.mask_events(x, events, valid)
        if model.training and augment in ("reflect", "reflect_mask"):
            x = vae.reflect(x, channels)
        return vae.vae_loss(model, x, beta=beta, max_power=max_power)

    return loss


def train_vae(
    windows_zarr: Path, model: Path, sidecar: Path, history: Path, scores: Path,
    settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Train one modality's VAE on the training windows; keep the weights of minimal validation loss.

    Resumable: the loop's checkpoints live in ``settings["workdir"]`` (not a declared output,
    keyed by a digest of the settings and code), so a retried job continues where it stopped.
    Writes the best weights, a JSON sidecar with the architecture, the history, and SSIM/PSNR of
    the test windows per material and step.
    """
    import shutil

    import torch
    from torch.utils.data import TensorDataset

    from latentmech.core.store import write_json
    from latentmech.core.train import Trainer, TrainSettings, load_checkpoint
    from latentmech.dic import vae

    channels = list(settings["channels"])
    sets = {s: _window_arrays(windows_zarr, channels, s) for s in ("train", "val", "test")}
    data = {
        s: TensorDataset(
            torch.from_numpy(a["x"]), torch.from_numpy(a["events"]), torch.from_numpy(a["valid"])
        )
        for s, a in sets.items()
    }
    config = vae.VAEConfig.from_dict(
        {**settings["model"], "in_channels": len(channels), "window_px": sets["train"]["x"].shape[-1],
         "output": settings["output"]}
    )  # fmt: skip
    torch.set_num_threads(int(settings.get("threads", 1)))
    loss = _vae_loss_fn(
        channels, settings["augment"], settings["loss"]["beta"], settings["loss"]["max_power"]
    )
    trainer = Trainer(
        vae.VAE(config), loss, TrainSettings.from_dict(settings["train"]), settings["workdir"]
    )
    result = trainer.fit(data["train"], data["val"])
    best = vae.VAE(config)
    best.load_state_dict(load_checkpoint(result.best_path)["model"])
    with atomic_path(model) as tmp:
        torch.save(best.state_dict(), tmp)
    meta = {"config": config.to_dict(), "channels": channels, "augment": settings["augment"],
            "modality": settings["modality"], "best_val_loss": result.best_val_loss,
            "epochs_run": result.epochs_run}  # fmt: skip
    write_json(meta | {"provenance": provenance("dic_train_vae", settings, code)}, sidecar)
    with atomic_path(history) as tmp:
        shutil.copyfile(result.history_path, tmp)
    write_table(_reconstruction_scores(best, sets["test"]), scores)


def _reconstruction_scores(model: Any, test: Mapping[str, Any], batch: int = 256) -> pd.DataFrame:
    """SSIM and PSNR of every test window (paper Table 1 is built from these rows)."""
    import torch

    from latentmech.core.metrics import psnr, ssim

    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(test["x"]), batch):
            x = torch.from_numpy(test["x"][start : start + batch])
            outputs.append(model(x)[0].numpy())
    reconstruction = np.concatenate(outputs) if outputs else np.empty_like(test["x"])
    return pd.DataFrame(
        {
            "material": test["material"],
            "step": test["step"],
            "ssim": ssim(test["x"], reconstruction),
            "psnr": psnr(test["x"], reconstruction),
        }
    )


def reconstruction_table(
    scores: Sequence[Path], table: Path, settings: Settings, code: str = ""
) -> None:
    """Paper Table 1/5 layout: SSIM and PSNR per variant and material, first step and mean over steps.

    "Mean over steps" averages the per-step means, so every deformation step weighs the same.
    """
    rows = []
    for (modality, augment), path in zip(settings["variants"], scores, strict=True):
        frame = read_table(path)
        frame = frame.replace([np.inf, -np.inf], np.nan)
        for material, group in frame.groupby("material"):
            per_step = group.groupby("step")[["ssim", "psnr"]].mean()
            first = per_step.iloc[0]
            rows.append(
                {"modality": modality, "augment": augment, "material": material,
                 "ssim_first_step": first["ssim"], "ssim_mean_over_steps": per_step["ssim"].mean(),
                 "psnr_first_step": first["psnr"], "psnr_mean_over_steps": per_step["psnr"].mean(),
                 "n_windows": len(group)}
            )  # fmt: skip
    write_table(pd.DataFrame(rows), table)


def figure_reconstructions(
    windows_zarr: Path, models: Sequence[Path], sidecars: Sequence[Path], figure: Path,
    settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Paper Fig. 7: one test window per material, original and each variant's reconstruction.

    The window shown is the material's test window with the largest total of the modality's
    first channel (the most deformation events), so the comparison is about slip bands.
    """
    import torch

    from latentmech.core import plots
    from latentmech.dic import vae

    reconstructors = []
    for model_path, sidecar in zip(models, sidecars, strict=True):
        model, meta = vae.load_vae(model_path, sidecar)
        reconstructors.append((meta["augment"], model, meta["channels"]))
    channels = reconstructors[0][2]
    test = _window_arrays(windows_zarr, channels, "test")
    rows, labels = [], []
    for material in sorted(set(test["material"])):
        index = np.flatnonzero(test["material"] == material)
        best = index[np.argmax(test["x"][index, 0].sum(axis=(1, 2)))]
        x = torch.from_numpy(test["x"][best : best + 1])
        with torch.no_grad():
            outputs = [model(x)[0][0, 0].numpy() for _, model, _ in reconstructors]
        rows.append([test["x"][best, 0], *outputs])
        labels.append(f"{material}\nstep {test['step'][best]}")
    columns = ["original", *(f"{augment}" for augment, _, _ in reconstructors)]
    fig = plots.image_grid(
        rows, labels, columns, title=f"{settings['modality']}: test windows and reconstructions"
    )
    plots.save_figure(fig, figure)
