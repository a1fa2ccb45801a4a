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
    eligible = table["role"].isin(["train", "extend"]).to_numpy()  # never validation specimens
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


def _augmented(
    model: Any, x: Any, events: Any, valid: Any, channels: Sequence[str], augment: str
) -> Any:
    """Training batches get the augmentations of ``augment``; evaluation batches none."""
    from latentmech.dic import vae

    if model.training and augment == "reflect_mask":
        x = vae.mask_events(x, events, valid)
    if model.training and augment in ("reflect", "reflect_mask"):
        x = vae.reflect(x, channels)
    return x


def _vae_loss_fn(channels: Sequence[str], augment: str, beta: float, max_power: float):
    """The VAE loss with the augmentations of ``augment`` applied to training batches only."""
    from latentmech.dic import vae

    def loss(model: Any, batch: Any) -> Any:
        x, events, valid = batch
        x = _augmented(model, x, events, valid, channels, augment)
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
    from latentmech.core.train import Trainer, TrainSettings, data_fingerprint, load_checkpoint
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
    train_settings = TrainSettings.from_dict(settings["train"])
    torch.manual_seed(train_settings.seed)  # the initial weights follow the seed too
    trainer = Trainer(vae.VAE(config), loss, train_settings, settings["workdir"],
                      fingerprint=data_fingerprint(data["train"], data["val"]))  # fmt: skip
    result = trainer.fit(data["train"], data["val"])
    from latentmech.core.distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 alone writes the outputs
        return
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


# ---------------------------------------------------------------------------------------------
# latent maps


def _load_encoders(
    models: Sequence[Path], sidecars: Sequence[Path], size: int
) -> list[tuple[Any, dict[str, Any], str]]:
    """The VAEs of the latent maps, each with its sidecar and weights path; window sizes checked."""
    from latentmech.dic import vae

    loaded = []
    for model_path, sidecar in zip(models, sidecars, strict=True):
        model, meta = vae.load_vae(model_path, sidecar)
        if int(meta["config"]["window_px"]) != size:
            raise InputError(
                sidecar, "config.window_px",
                f"the VAE encodes {meta['config']['window_px']}-px windows but the latent maps "
                f"are tiled with {size}-px windows (config dic.windows.size_px)",
            )  # fmt: skip
        loaded.append((model, meta, str(model_path)))
    return loaded


def _cell_means(field: np.ndarray, grid: pd.DataFrame, size: int) -> np.ndarray:
    """NaN-aware mean of a (y, x) field over each window of ``grid``."""
    windows = prep.extract_windows(field.astype(np.float64), grid, size)
    finite = np.isfinite(windows)
    counts = finite.sum(axis=(1, 2))
    sums = np.where(finite, windows, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan).astype(np.float32)


def _latent_variables(
    source: xr.Dataset, encoders: Sequence[tuple[Any, dict[str, Any], str]], grid: pd.DataFrame,
    size: int, batch_size: int, where: Path,
) -> dict[str, Any]:  # fmt: skip
    """μ, σ and the window mean of every encoded modality, on the window grid of ``grid``."""
    from latentmech.dic import latent

    rows, cols = grid["row"].to_numpy(), grid["col"].to_numpy()
    shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    data: dict[str, Any] = {}
    for model, meta, model_path in encoders:
        channels, m = list(meta["channels"]), meta["modality"]
        missing = [c for c in channels if c not in source]
        if missing:
            raise InputError(where, ",".join(missing),
                             f"the {m} VAE encodes {channels}; the map lacks {missing}")  # fmt: skip
        stack = np.stack([source[c].values for c in channels]).astype(np.float32)
        mu, sigma = latent.encode(model, prep.extract_windows(stack, grid, size), batch_size)
        attrs = {"modality": m, "augment": meta["augment"], "model": model_path,
                 "channels": channels}  # fmt: skip
        data[f"mu_{m}"] = (("y", "x", "latent"), latent.to_grid(mu, rows, cols, shape),
                           attrs | {"long_name": f"latent mean μ ({m} VAE)"})  # fmt: skip
        data[f"sigma_{m}"] = (("y", "x", "latent"), latent.to_grid(sigma, rows, cols, shape),
                              attrs | {"long_name": f"latent standard deviation σ ({m} VAE)"})  # fmt: skip
        mean = _cell_means(source[channels[0]].values, grid, size)
        data[f"mean_{m}"] = (("y", "x"), latent.to_grid(mean, rows, cols, shape),
                             {"long_name": f"window mean of the preprocessed {channels[0]}"})  # fmt: skip
    return data


def _window_centres(count: int, stride: int, size: int, pixel: float) -> np.ndarray:
    return (np.arange(count) * stride + size / 2) * pixel


def _latent_map(
    raw: Path, prepped: Path, encoders: Sequence[tuple[Any, dict[str, Any], str]],
    settings: Settings,
) -> xr.Dataset:  # fmt: skip
    """One sample's latent map (see :func:`encode`)."""
    from latentmech.dic import latent

    source, measured = open_zarr(prepped), open_zarr(raw)
    size = int(settings["size_px"])
    stride = int(settings.get("stride_px") or size)
    shape_px = (source.sizes["y"], source.sizes["x"])
    grid = prep.window_grid(shape_px, size, stride)
    if grid.empty:
        raise InputError(prepped, "", f"map of {shape_px} px is smaller than a {size}-px window")
    rows, cols = grid["row"].to_numpy(), grid["col"].to_numpy()
    shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    data = _latent_variables(source, encoders, grid, size, int(settings["batch_size"]), prepped)
    exx = measured["exx"].values if "exx" in measured else np.full(shape_px, np.nan)
    data["exx_mean"] = (("y", "x"), latent.to_grid(_cell_means(exx, grid, size), rows, cols, shape),
                        {"units": "1", "long_name": "window mean of the raw ε_xx"})  # fmt: skip
    valid = _cell_means(source["valid"].values, grid, size)
    data["valid_fraction"] = (("y", "x"), latent.to_grid(valid, rows, cols, shape),
                              {"units": "1", "long_name": "measured fraction of the window"})  # fmt: skip
    pixel = float(source.attrs["pixel_size_um"])
    coords = {
        "y": ("y", _window_centres(shape[0], stride, size, pixel),
              {"units": "µm", "long_name": "window centre along rows"}),
        "x": ("x", _window_centres(shape[1], stride, size, pixel),
              {"units": "µm", "long_name": "window centre along columns"}),
        "latent": ("latent", np.arange(encoders[0][0].config.latent_dim)),
    }  # fmt: skip
    attrs = {k: source.attrs[k] for k in (*SAMPLE_ATTRS, "pixel_size_um")}
    attrs |= {"window_px": size, "stride_px": stride,
              "modalities": [meta["modality"] for _, meta, _ in encoders]}  # fmt: skip
    return xr.Dataset(data, coords=coords, attrs=attrs)


def encode(
    raw: Sequence[Path], prepped: Sequence[Path], models: Sequence[Path],
    sidecars: Sequence[Path], latent: Sequence[Path], settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Latent maps of samples: μ and σ of every window per modality, on the window grid.

    One zarr store per sample with dimensions (y, x, latent) and coordinates in µm (window
    centres); beside μ and σ each cell holds the mean raw ε_xx (the CNN's local strain input),
    the window mean of each modality (UMAP colouring) and the measured fraction. The VAEs are
    loaded once for all the samples of the job; windows are encoded in batches.
    """
    import torch

    torch.set_num_threads(int(settings.get("threads", 1)))
    encoders = _load_encoders(models, sidecars, int(settings["size_px"]))
    for raw_path, prep_path, target in zip(raw, prepped, latent, strict=True):
        ds = _latent_map(raw_path, prep_path, encoders, settings)
        write_zarr(ds, target, dict(ds.attrs) | provenance("dic_encode", settings, code))


# ---------------------------------------------------------------------------------------------
# property CNN


def _strings(values: np.ndarray) -> np.ndarray:
    """Text values of a zarr variable (numpy StringDType or object) as an object array of str."""
    return np.asarray([str(v) for v in values.tolist()], dtype=object)


def _specimen_windows(ds: xr.Dataset, channels: Sequence[str]) -> dict[str, Any]:
    """Windows (N, C, W, W), event ids and metadata of a selection of windows.zarr."""
    meta = {c: ds[c].values for c in ("sample", "step", "strain_pct", "stress_mpa", "row", "col")}
    meta["sample"] = _strings(meta["sample"])
    x = np.stack([ds[c].values for c in channels], axis=1).astype(np.float32)
    return meta | {"x": x, "events": ds["events"].values.astype(np.int64)}


def _aligned(
    values: np.ndarray, meta: Mapping[str, Any], sample: str, order: Sequence[str]
) -> np.ndarray:
    """(S, N, …) values of the samples ``order`` at the grid cells of ``sample``'s windows.

    Cells a sample lacks are NaN (maps of one specimen may differ slightly in size).
    """
    own = meta["sample"] == sample
    key = meta["row"].astype(np.int64) * 1_000_003 + meta["col"]
    out = np.full((len(order), int(own.sum()), *values.shape[1:]), np.nan, dtype=np.float32)
    for s, other in enumerate(order):  # a handful of steps per specimen
        index = pd.Index(key[meta["sample"] == other]).get_indexer(key[own])
        found = index >= 0
        out[s, found] = values[meta["sample"] == other][index[found]]
    return out


def _specimen_steps(meta: Mapping[str, Any], where: str) -> pd.DataFrame:
    """The specimen's samples with their strain and stress, by increasing strain (checked)."""
    steps = pd.DataFrame({"sample": meta["sample"], "strain": meta["strain_pct"],
                          "stress": meta["stress_mpa"]}).drop_duplicates("sample")  # fmt: skip
    steps = steps.sort_values("strain", kind="stable").reset_index(drop=True)
    strains = steps["strain"].to_numpy(dtype=np.float64)
    if not (np.isfinite(strains).all() and (strains > 0).all()):
        raise InputError(where, ", ".join(steps["sample"]),
                         f"strain_pct must be known and > 0 for the intensity-evolution "
                         f"augmentation, got {strains.tolist()} (or set "
                         f"dic.cnn.augment.intensity_copies: 0)")  # fmt: skip
    if len(np.unique(strains)) < len(strains):
        raise InputError(where, ", ".join(steps["sample"]),
                         f"two steps of one specimen share a strain {strains.tolist()}: "
                         "the per-event trends need distinct strains")  # fmt: skip
    return steps


def _evolved_copies(
    meta: Mapping[str, Any], sample: str, settings: Settings, rng: np.random.Generator,
    where: str,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:  # fmt: skip
    """Windows of ``sample`` at its strain and at ``intensity_copies`` jittered strains.

    Returns the window stacks, the strains (%) and the stresses (MPa) of each copy (the first is
    the measured map itself).
    """
    from latentmech.dic import augment

    own = meta["sample"] == sample
    strain, stress = float(meta["strain_pct"][own][0]), float(meta["stress_mpa"][own][0])
    copies = int(settings["intensity_copies"])
    x, labels = meta["x"][own], meta["events"][own]
    if not copies:
        return [x], np.array([strain]), np.array([stress])
    steps = _specimen_steps(meta, where)
    jittered = augment.jitter_strains(strain, copies, rng, float(settings["strain_jitter"]))
    stresses = augment.interpolate_stress(steps["strain"].to_numpy(),
                                          steps["stress"].to_numpy(), jittered)  # fmt: skip
    aligned = _aligned(meta["x"], meta, sample, list(steps["sample"]))  # (S, N, C, W, W)
    trends = [
        augment.fit_trends(
            augment.event_means(aligned[:, :, c], labels), steps["strain"].to_numpy()
        )
        for c in range(x.shape[1])
    ]
    stacks = [x]
    for target in jittered:
        channels = [augment.evolve_intensity(x[:, c], labels, trends[c], strain, target)
                    for c in range(x.shape[1])]  # fmt: skip
        stacks.append(np.stack(channels, axis=1))
    return stacks, np.concatenate([[strain], jittered]), np.concatenate([[stress], stresses])


def _dataset_maps(
    meta: Mapping[str, Any], sample: str, latent_map: xr.Dataset, encoder: Any,
    channels: Sequence[str], settings: Settings, rng: np.random.Generator, where: str,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every augmented latent map of one training sample (copies × reflections)."""
    from latentmech.dic import latent

    aug = settings["augment"]
    stacks, strains, stresses = _evolved_copies(meta, sample, aug, rng, where)
    shape = (latent_map.sizes["y"], latent_map.sizes["x"])
    own = meta["sample"] == sample
    rows, cols = meta["row"][own], meta["col"][own]
    reflections = latent.REFLECTIONS if aug["reflections"] else latent.REFLECTIONS[:1]
    exx = latent_map["exx_mean"].values
    batch, keys = [], []
    for copy, stack in enumerate(stacks):
        for flip_x, flip_y in reflections:
            batch.append(latent.mirror(stack, channels, flip_x, flip_y))
            keys.append((copy, flip_x, flip_y))
    mu, sigma = latent.encode(encoder, np.concatenate(batch), int(settings["batch_size"]))
    maps, n = [], len(rows)
    for i, (copy, flip_x, flip_y) in enumerate(keys):
        r, c = latent.mirror_grid(rows, cols, shape, flip_x, flip_y)
        grid_exx = exx[:, ::-1] if flip_x else exx
        grid_exx = grid_exx[::-1] if flip_y else grid_exx
        maps.append({
            "mu": latent.to_grid(mu[i * n : (i + 1) * n], r, c, shape),
            "sigma": latent.to_grid(sigma[i * n : (i + 1) * n], r, c, shape),
            "exx_mean": grid_exx * (strains[copy] / strains[0] if copy else 1.0),
            "strain_pct": strains[copy], "stress_mpa": stresses[copy], "copy": copy,
            "reflection": f"{'x' if flip_x else ''}{'y' if flip_y else ''}" or "none",
        })  # fmt: skip
    return maps


def cnn_dataset(
    windows_zarr: Path, latent: Sequence[Path], model: Path, sidecar: Path, dataset: Path,
    settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """The CNN's training maps: each training sample's latent map and its augmented versions.

    Augmentations (paper Fig. 10): the four mirror images of the map (every window mirrored and
    re-encoded, the grid mirrored), and ``intensity_copies`` intensity-evolution copies at strains
    within ±``strain_jitter`` of the measured one (see :mod:`latentmech.dic.augment`), whose local
    strain is scaled with the macroscopic strain and whose stress is interpolated between steps.
    The third augmentation, Gaussian sampling from (μ, σ), happens while training.
    """
    import torch

    from latentmech.dic import vae

    torch.set_num_threads(int(settings.get("threads", 1)))
    encoder, meta = vae.load_vae(model, sidecar)
    channels = list(meta["channels"])
    rng = np.random.default_rng(int(settings["augment"]["seed"]))
    maps_by_sample = {open_zarr(p).attrs["sample"]: open_zarr(p) for p in latent}
    records: list[dict[str, Any]] = []
    with xr.open_zarr(windows_zarr, consolidated=True) as ds:
        samples = _strings(ds["sample"].values)
        specimens = _strings(ds["material"].values) + "/" + _strings(ds["specimen"].values)
        for specimen in sorted(set(specimens[np.isin(samples, list(maps_by_sample))])):
            selected = ds.isel(window=np.flatnonzero(specimens == specimen))
            windows = _specimen_windows(selected, channels)
            for sample in sorted(set(windows["sample"]) & set(maps_by_sample)):
                latent_map = maps_by_sample[sample]
                for record in _dataset_maps(windows, sample, latent_map, encoder, channels,
                                            settings, rng, str(windows_zarr)):  # fmt: skip
                    records.append(record | {k: latent_map.attrs[k] for k in
                                             ("sample", "material", "specimen", "step")})  # fmt: skip
    if not records:
        raise InputError(windows_zarr, "role", "no windows of the training samples to build from")
    write_zarr(_stack_maps(records, meta), dataset,
               {"modality": meta["modality"], "channels": channels}
               | provenance("dic_cnn_dataset", settings, code))  # fmt: skip


def _pad_grid(array: np.ndarray, grid: tuple[int, int], lead: int = 0) -> np.ndarray:
    """NaN-pad the (y, x) axes (after ``lead`` leading axes) of ``array`` to ``grid`` cells."""
    extra = [(0, 0)] * lead
    extra += [(0, grid[0] - array.shape[lead]), (0, grid[1] - array.shape[lead + 1])]
    return np.pad(array, extra + [(0, 0)] * (array.ndim - lead - 2), constant_values=np.nan)


def _stack_maps(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> xr.Dataset:
    """Maps of possibly different grid shapes in one (map, y, x, latent) dataset, NaN-padded."""
    grid = (max(r["mu"].shape[0] for r in records), max(r["mu"].shape[1] for r in records))
    data = {
        name: (dims, np.stack([_pad_grid(r[name], grid) for r in records]))
        for name, dims in (("mu", ("map", "y", "x", "latent")),
                           ("sigma", ("map", "y", "x", "latent")),
                           ("exx_mean", ("map", "y", "x")))
    }  # fmt: skip
    coords = {k: ("map", np.array([r[k] for r in records])) for k in
              ("sample", "material", "specimen", "step", "strain_pct", "stress_mpa", "copy",
               "reflection")}  # fmt: skip
    coords["n_rows"] = ("map", np.array([r["mu"].shape[0] for r in records]))
    coords["n_cols"] = ("map", np.array([r["mu"].shape[1] for r in records]))
    return xr.Dataset(data, coords=coords).assign_attrs(vae_augment=meta["augment"])


def _property_table(materials: Path, needed: Sequence[str]) -> pd.DataFrame:
    """Properties of the ``needed`` materials (rows) from the materials table; all must be known."""
    from latentmech.dic.samples import PROPERTY_COLUMNS

    table = read_table(materials).set_index("material")
    missing = sorted(set(needed) - set(table.index))
    if missing:
        raise InputError(materials, "material", f"no row for {missing}")
    values = table.loc[list(needed), list(PROPERTY_COLUMNS)].astype(float)
    unknown = values.index[values.isna().any(axis=1)].tolist()
    if unknown:
        raise InputError(materials, ", ".join(unknown),
                         f"properties {list(PROPERTY_COLUMNS)} must all be known to train the CNN")  # fmt: skip
    return values


def _crop_items(
    mu: np.ndarray, exx: np.ndarray, n_rows: np.ndarray, n_cols: np.ndarray, crop: Settings,
    strain_scale: float,
) -> pd.DataFrame:  # fmt: skip
    """Every crop of every map: its map, origin and normalised local mean strain (complete crops only)."""
    from latentmech.dic import cnn

    size, overlap = int(crop["size"]), int(crop["max_overlap"])
    frames = []
    for (rows, cols), index in pd.Series(range(len(mu))).groupby([n_rows, n_cols]):
        origins = cnn.crop_origins(int(rows), int(cols), size, overlap)
        if not len(origins):
            continue
        maps = index.to_numpy()
        strain = cnn.crop_means(exx[maps], origins, size) / strain_scale  # (B, K)
        holes = cnn.crop_means(np.isnan(mu[maps, ..., 0]).astype(np.float32), origins, size)
        frames.append(pd.DataFrame({
            "map": np.repeat(maps, len(origins)),
            "r0": np.tile(origins[:, 0], len(maps)), "c0": np.tile(origins[:, 1], len(maps)),
            "strain": strain.ravel(), "complete": (holes == 0).ravel(),
        }))  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=["map", "r0", "c0", "strain", "complete"])
    items = pd.concat(frames, ignore_index=True)
    return items[items["complete"] & np.isfinite(items["strain"])].reset_index(drop=True)


def _latent_maps(latent: Sequence[Path], modality: str) -> dict[str, Any]:
    """μ, σ, local strain and metadata of latent map stores, stacked (NaN-padded to one grid)."""
    records = []
    for path in latent:
        ds = open_zarr(path)
        if f"mu_{modality}" not in ds:
            raise InputError(path, f"mu_{modality}", f"the latent map has no {modality} encoding")
        records.append({
            "mu": ds[f"mu_{modality}"].values, "sigma": ds[f"sigma_{modality}"].values,
            "exx_mean": ds["exx_mean"].values,
            **{k: ds.attrs[k] for k in ("sample", "material", "specimen", "step", "strain_pct",
                                        "stress_mpa")},
        })  # fmt: skip
    if not records:
        return {}
    ds = _stack_maps([r | {"copy": 0, "reflection": "none"} for r in records], {"augment": ""})
    return _maps_from_dataset(ds)


def _maps_from_dataset(ds: xr.Dataset) -> dict[str, Any]:
    text = {k: _strings(ds[k].values) for k in ("sample", "material", "specimen")}
    numbers = {k: ds[k].values for k in ("step", "strain_pct", "stress_mpa", "n_rows", "n_cols")}
    return {
        "mu": ds["mu"].values.astype(np.float32),
        "sigma": ds["sigma"].values.astype(np.float32),
        "exx_mean": ds["exx_mean"].values,
        **text,
        **numbers,
    }


def _cnn_items(maps: Mapping[str, Any], settings: Settings, source: Path | str) -> pd.DataFrame:
    """Crops of ``maps`` with their normalised strain and stress inputs."""
    items = _crop_items(maps["mu"], maps["exx_mean"], maps["n_rows"], maps["n_cols"],
                        settings["crop"], float(settings["normalise"]["strain"]))  # fmt: skip
    stress = np.asarray(maps["stress_mpa"], dtype=np.float64)[items["map"].to_numpy()]
    if not np.isfinite(stress).all():
        bad = sorted(set(np.asarray(maps["sample"])[items["map"][~np.isfinite(stress)]]))
        raise InputError(source, ", ".join(map(str, bad)),
                         "the macroscopic stress (stress_mpa) is unknown; the CNN needs it")  # fmt: skip
    items["stress"] = stress / float(settings["normalise"]["stress_mpa"])
    items["material"] = maps["material"][items["map"].to_numpy()]
    return items


def _join_maps(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Two stacks of maps as one (padded to the larger grid); the second's indices shift by len(first)."""
    grid = (max(first["mu"].shape[1], second["mu"].shape[1]),
            max(first["mu"].shape[2], second["mu"].shape[2]))  # fmt: skip
    return {
        k: np.concatenate([_pad_grid(first[k], grid, lead=1), _pad_grid(second[k], grid, lead=1)])
        for k in ("mu", "sigma")
    }


def _cnn_loss(
    tensors: Mapping[str, Any], standardizer: Any, crop: int, sample: bool
) -> Any:  # fmt: skip
    """L2 loss on standardised properties; the crops are gathered from the maps in the batch."""
    import torch

    from latentmech.dic import cnn

    offsets = torch.arange(crop)

    def gather(maps: Any, index: Any, r0: Any, c0: Any) -> Any:
        rows = (r0[:, None] + offsets.to(r0.device))[:, :, None]
        cols = (c0[:, None] + offsets.to(c0.device))[:, None, :]
        return maps[index[:, None, None], rows, cols].permute(0, 3, 1, 2)

    def loss(model: Any, batch: Any) -> Any:
        index, r0, c0, strain, stress, target = batch
        mu = gather(tensors["mu"], index, r0, c0)
        if model.training and sample:
            mu = cnn.sample_latent(mu, gather(tensors["sigma"], index, r0, c0))
        predicted = model(mu, strain, stress)
        value = torch.mean((predicted - target) ** 2)
        with torch.no_grad():
            true = standardizer.inverse(target)
            error = torch.abs(standardizer.inverse(predicted) - true) / torch.abs(true)
        return value, {"rel_error": float(error.mean())}

    return loss


def _item_tensors(items: pd.DataFrame, targets: np.ndarray, offset: int = 0) -> Any:
    import torch
    from torch.utils.data import TensorDataset

    return TensorDataset(
        torch.as_tensor(items["map"].to_numpy() + offset, dtype=torch.long),
        torch.as_tensor(items["r0"].to_numpy(), dtype=torch.long),
        torch.as_tensor(items["c0"].to_numpy(), dtype=torch.long),
        torch.as_tensor(items["strain"].to_numpy(), dtype=torch.float32),
        torch.as_tensor(items["stress"].to_numpy(), dtype=torch.float32),
        torch.as_tensor(targets, dtype=torch.float32),
    )


def train_cnn(
    dataset: Path, latent: Sequence[Path], materials: Path, model: Path, sidecar: Path,
    history: Path, settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Train the property CNN on crops of the training maps; validation loss on held-out specimens.

    Six standardised outputs (YS, Q, b, UTS, El, FS), L2 loss, Adam. The weights kept are the
    last (``keep: last``, default) or those of minimal validation loss (``keep: best``). The
    sidecar holds the architecture, the standardisation, the input normalisation, the crop
    geometry and the training mean of each property (the baseline the evaluation compares to).
    """
    import shutil

    import torch

    from latentmech.core.store import write_json
    from latentmech.core.train import Trainer, TrainSettings, data_fingerprint, load_checkpoint
    from latentmech.dic import cnn
    from latentmech.dic.samples import PROPERTY_COLUMNS

    torch.set_num_threads(int(settings.get("threads", 1)))
    train_maps = _maps_from_dataset(open_zarr(dataset))
    val_maps = _latent_maps(latent, settings["modality"])
    train_items = _cnn_items(train_maps, settings, dataset)
    val_items = _cnn_items(val_maps, settings, "validation latent maps")
    if train_items.empty or val_items.empty:
        raise InputError(dataset, "crop", f"no complete {settings['crop']['size']}-window crop "
                         "in the training or validation maps: lower dic.cnn.crop.size")  # fmt: skip
    properties = _property_table(materials, sorted(set(train_items["material"]) |
                                                   set(val_items["material"])))  # fmt: skip
    y_train = properties.loc[train_items["material"]].to_numpy()
    y_val = properties.loc[val_items["material"]].to_numpy()
    standardizer = cnn.Standardizer.fit(y_train)
    joined = _join_maps(train_maps, val_maps)
    config = cnn.PropertyCNNConfig.from_dict(
        {**settings["model"], "latent_dim": joined["mu"].shape[-1], "crop": settings["crop"]["size"],
         "n_outputs": len(PROPERTY_COLUMNS)}
    )  # fmt: skip
    train_set = _item_tensors(train_items, standardizer.transform(y_train))
    val_set = _item_tensors(val_items, standardizer.transform(y_val), offset=len(train_maps["mu"]))
    train_settings = TrainSettings.from_dict(settings["train"])
    torch.manual_seed(train_settings.seed)  # the initial weights follow the seed too
    trainer = Trainer(cnn.PropertyCNN(config), lambda m, b: (None, {}), train_settings,
                      settings["workdir"],
                      fingerprint=data_fingerprint(train_set, val_set, *joined.values()))  # fmt: skip
    tensors = {k: torch.from_numpy(v).to(trainer.device) for k, v in joined.items()}
    trainer.loss_fn = _cnn_loss(tensors, standardizer, config.crop, settings["input"] == "sample")
    result = trainer.fit(train_set, val_set)
    from latentmech.core.distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 alone writes the outputs
        return
    kept = result.best_path if settings["keep"] == "best" else result.last_path
    net = cnn.PropertyCNN(config)
    net.load_state_dict(load_checkpoint(kept)["model"])
    with atomic_path(model) as tmp:
        torch.save(net.state_dict(), tmp)
    meta = {
        "config": config.to_dict(), "standardizer": standardizer.to_dict(),
        "properties": list(PROPERTY_COLUMNS), "modality": settings["modality"],
        "crop": settings["crop"], "normalise": settings["normalise"], "keep": settings["keep"],
        "training_means": dict(zip(PROPERTY_COLUMNS, y_train.mean(axis=0).tolist(), strict=True)),
        "n_train_crops": len(train_items), "n_validation_crops": len(val_items),
        "epochs_run": result.epochs_run, "best_val_loss": result.best_val_loss,
    }  # fmt: skip
    write_json(meta | {"provenance": provenance("dic_train_cnn", settings, code)}, sidecar)
    with atomic_path(history) as tmp:
        shutil.copyfile(result.history_path, tmp)


def load_cnn(model: Path, sidecar: Path) -> tuple[Any, dict[str, Any]]:
    """A trained property CNN in eval mode and its sidecar (``weights_only`` load)."""
    import json

    import torch

    from latentmech.dic import cnn

    meta = json.loads(Path(sidecar).read_text())
    net = cnn.PropertyCNN(cnn.PropertyCNNConfig.from_dict(meta["config"]))
    net.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
    return net.eval(), meta


def _predict_crops(
    net: Any, crops: np.ndarray, strain: np.ndarray, stress: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Standardised predictions of crops (N, L, k, k) in batches, model in eval mode."""
    import torch

    outputs = []
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            part = slice(start, start + batch_size)
            outputs.append(net(torch.from_numpy(np.ascontiguousarray(crops[part])),
                               torch.as_tensor(strain[part]).float(),
                               torch.as_tensor(stress[part]).float()).numpy())  # fmt: skip
    return np.concatenate(outputs).astype(np.float64)


def predict(
    latent: Sequence[Path], model: Path, sidecar: Path, materials: Path, predictions: Path,
    settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Properties predicted from every crop of each latent map (μ, no augmentation).

    One row per crop with the sample's metadata, the crop origin (grid row/column), the
    prediction of each property and, where the materials table knows it, the true value
    (``input``: ``latent``). With ``settings["shuffle_check"]`` the crops are predicted a second
    time with their latent inputs permuted among themselves (strain and stress kept; rows with
    ``input``: ``shuffled_latent``): how much of the accuracy the maps themselves carry.
    """
    from latentmech.dic import cnn

    net, meta = load_cnn(model, sidecar)
    maps = _latent_maps(latent, meta["modality"])
    items = _cnn_items(maps, meta, latent[0] if len(latent) == 1 else "latent maps")
    if items.empty:
        raise InputError(latent[0], "crop", f"no complete {meta['crop']['size']}-window crop")
    standardizer = cnn.Standardizer.from_dict(meta["standardizer"])
    size = int(meta["crop"]["size"])
    index = items["map"].to_numpy()
    offsets = np.arange(size)
    rows = (items["r0"].to_numpy()[:, None] + offsets)[:, :, None]
    cols = (items["c0"].to_numpy()[:, None] + offsets)[:, None, :]
    crops = maps["mu"][index[:, None, None], rows, cols].transpose(0, 3, 1, 2)
    strain, stress = items["strain"].to_numpy(), items["stress"].to_numpy()
    inputs = {"latent": crops}
    if settings.get("shuffle_check"):
        order = np.random.default_rng(0).permutation(len(crops))
        inputs["shuffled_latent"] = crops[order]
    table = read_table(materials).set_index("material")
    frames = []
    for name, data in inputs.items():
        predicted = standardizer.inverse(_predict_crops(net, data, strain, stress))
        frame = pd.DataFrame({k: np.asarray(maps[k])[index] for k in
                              ("sample", "material", "specimen", "step", "strain_pct", "stress_mpa")})  # fmt: skip
        frame["crop_row"], frame["crop_col"] = items["r0"].to_numpy(), items["c0"].to_numpy()
        frame["input"] = name
        for j, prop in enumerate(meta["properties"]):
            known = table[prop] if prop in table else pd.Series(dtype=float)
            frame[f"{prop}_true"] = frame["material"].map(known).astype(float)
            frame[f"{prop}_pred"] = predicted[:, j]
        frames.append(frame)
    write_table(pd.concat(frames, ignore_index=True), predictions)


def evaluate_cnn(
    predictions: Path, sidecar: Path, history: Path, ranges: Path, baseline: Path, parity: Path,
    distributions: Path, curves: Path, settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Paper Fig. 11 and Table 6 on the held-out specimens, and the training-mean baseline.

    The baseline table says, per property, whether the CNN's median relative error is at most half
    of that of a predictor returning the training mean (the project's acceptance criterion: at
    least four of the six properties; the verdict is logged), and, when the predictions hold
    them, the error with the latent inputs shuffled among crops (what the maps contribute).
    """
    import json
    import logging

    from latentmech.core import plots
    from latentmech.dic import evaluate

    every = read_table(predictions)
    frame = every[every["input"] == "latent"]
    meta = json.loads(Path(sidecar).read_text())
    properties = meta["properties"]
    write_table(evaluate.error_ranges(frame, properties), ranges)
    comparison = evaluate.baseline_comparison(frame, meta["training_means"], properties)
    met = evaluate.criterion_met(comparison)
    shuffled = every[every["input"] == "shuffled_latent"]
    if len(shuffled):  # the same model with the crops' latent inputs permuted among crops
        check = evaluate.baseline_comparison(shuffled, meta["training_means"], properties)
        comparison["shuffled_latent_median_abs_rel_error"] = check[
            "model_median_abs_rel_error"
        ].to_numpy()
    write_table(comparison.assign(criterion_met=met), baseline)
    logging.getLogger(__name__).info(
        "CNN vs training mean: %d of %d properties at most half the baseline's median error",
        int(comparison["beats_half"].sum()), len(comparison),
    )  # fmt: skip
    plots.save_figure(evaluate.figure_parity(frame, properties), parity)
    plots.save_figure(evaluate.figure_distributions(frame, properties), distributions)
    plots.save_figure(evaluate.figure_training_curves(read_table(history)), curves)


def figure_umap(latent: Sequence[Path], figure: Path, settings: Settings, code: str = "") -> None:
    """Paper Fig. 12: UMAP of the latent means of the database, by material, window mean, step."""
    from latentmech.core import plots
    from latentmech.dic import evaluate

    modality = settings["modality"]
    mu, material, mean, step = [], [], [], []
    for path in latent:
        ds = open_zarr(path)
        cells = ds[f"mu_{modality}"].values.reshape(-1, ds.sizes["latent"])
        keep = np.isfinite(cells).all(axis=1)
        mu.append(cells[keep])
        mean.append(ds[f"mean_{modality}"].values.reshape(-1)[keep])
        material += [ds.attrs["material"]] * int(keep.sum())
        step.append(np.full(int(keep.sum()), int(ds.attrs["step"])))
    embedding, index = evaluate.umap_embedding(
        np.concatenate(mu), n_neighbors=int(settings["n_neighbors"]),
        min_dist=float(settings["min_dist"]), spread=float(settings["spread"]),
        seed=int(settings["seed"]), max_points=settings.get("max_points"),
    )  # fmt: skip
    fig = evaluate.figure_umap(
        embedding, np.asarray(material)[index], np.concatenate(mean)[index],
        np.concatenate(step)[index], title=f"UMAP of the {modality} latent means μ",
    )  # fmt: skip
    plots.save_figure(fig, figure)


# ---------------------------------------------------------------------------------------------
# extending the database (paper Fig. 13)


def _extension_sets(
    windows_zarr: Path, new_windows_zarr: Path, channels: Sequence[str]
) -> dict[str, Any]:
    """Old + new windows for training and validation, each window flagged old (0) or new (1)."""
    import torch
    from torch.utils.data import TensorDataset

    sets = {}
    for split in ("train", "val"):
        old = _window_arrays(windows_zarr, channels, split)
        new = _window_arrays(new_windows_zarr, channels, split)
        if not len(new["x"]):
            raise InputError(new_windows_zarr, "split", f"no {split} window of the new materials")
        flag = np.concatenate([np.zeros(len(old["x"])), np.ones(len(new["x"]))]).astype(bool)
        sets[split] = TensorDataset(
            *(torch.from_numpy(np.concatenate([old[k], new[k]])) for k in ("x", "events", "valid")),
            torch.from_numpy(flag),
        )
    return sets


def _extension_loss(channels: Sequence[str], augment: str, beta: float, max_power: float):
    """The VAE loss per window, with the part of old and new windows reported separately.

    The loop averages metrics over windows, so ``old_part``/``new_part`` (sums over the batch's
    old/new windows divided by the batch size) average to (count share) × (mean loss of that
    group); :func:`extend_vae` divides by the shares to write each group's mean loss.
    """
    from latentmech.dic import vae

    def loss(model: Any, batch: Any) -> Any:
        x, events, valid, new = batch
        x = _augmented(model, x, events, valid, channels, augment)
        reconstruction, mu, log_var = model(x)
        per_window = vae.scaled_l2(reconstruction, x, max_power) + beta * vae.kl_divergence(
            mu, log_var
        )
        parts = {"old_part": float((per_window * ~new).mean()),
                 "new_part": float((per_window * new).mean())}  # fmt: skip
        return per_window.mean(), parts

    return loss


def extend_vae(
    windows_zarr: Path, new_windows_zarr: Path, model: Path, sidecar: Path, output_model: Path,
    output_sidecar: Path, history: Path, settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Add new materials to a trained VAE: partial retraining or transfer learning (Fig. 13).

    Both train on old + new training windows with the base VAE's augmentations. The history has
    the validation loss of the old and of the new windows (``val_old_loss``, ``val_new_loss``).
    Partial retraining keeps the last weights (γ must have reached 1 to fold the new kernels
    into a plain VAE; ``ramp_steps`` is capped at the run's number of steps); transfer learning
    keeps the weights of minimal validation loss.
    """
    import math

    import torch

    from latentmech.core.store import write_json
    from latentmech.core.train import Trainer, TrainSettings, data_fingerprint, load_checkpoint
    from latentmech.dic import retrain, vae

    torch.set_num_threads(int(settings.get("threads", 1)))
    base, meta = vae.load_vae(model, sidecar)
    channels = list(meta["channels"])
    sets = _extension_sets(windows_zarr, new_windows_zarr, channels)
    train_settings = TrainSettings.from_dict(settings["train"])
    torch.manual_seed(train_settings.seed)
    if settings["method"] == "partial":
        # γ must reach 1 before the run can end, early stopping included
        epochs = train_settings.epochs
        if train_settings.patience is not None:
            epochs = min(epochs, train_settings.patience + 1)
        steps = epochs * math.ceil(len(sets["train"]) / train_settings.batch_size)
        ramp = min(int(settings["ramp_steps"]), steps)
        training_windows = sets["train"].tensors[0]
        net, groups = retrain.partial_retraining(base, training_windows, settings["fraction"],
                                                 ramp, settings["lr_factor"])  # fmt: skip
    else:
        net, groups = retrain.transfer_learning(base, int(settings["transfer_last_layers"]))
    loss = _extension_loss(channels, meta["augment"], settings["loss"]["beta"],
                           settings["loss"]["max_power"])  # fmt: skip
    fingerprint = data_fingerprint(sets["train"], sets["val"], *base.state_dict().values())
    trainer = Trainer(net.train(), loss, train_settings, settings["workdir"],
                      param_groups=groups, fingerprint=fingerprint)  # fmt: skip
    result = trainer.fit(sets["train"], sets["val"])
    from latentmech.core.distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 alone writes the outputs
        return
    kept = result.last_path if settings["method"] == "partial" else result.best_path
    net.load_state_dict(load_checkpoint(kept)["model"])
    final = retrain.merge_blended(net) if settings["method"] == "partial" else net
    with atomic_path(output_model) as tmp:
        torch.save(final.state_dict(), tmp)
    meta = meta | {"best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run}
    write_json(meta | {"method": settings["method"], "base_model": str(model),
                       "provenance": provenance("dic_extend_vae", settings, code)},
               output_sidecar)  # fmt: skip
    new_share = float(sets["val"].tensors[3].float().mean())
    frame = pd.DataFrame(result.history)
    frame["val_old_loss"] = frame.pop("val_old_part") / (1.0 - new_share)
    frame["val_new_loss"] = frame.pop("val_new_part") / new_share
    write_table(frame, history)


def figure_extension(
    histories: Sequence[Path], reference: Path, figure: Path, settings: Settings, code: str = ""
) -> None:
    """Paper Fig. 13(C): validation losses of old and new windows for each extension method."""
    from latentmech.core import plots
    from latentmech.dic import evaluate

    curves = {m: read_table(p) for m, p in zip(settings["methods"], histories, strict=True)}
    best = float(read_table(reference)["val_loss"].min())
    plots.save_figure(evaluate.figure_extension(curves, best), figure)
