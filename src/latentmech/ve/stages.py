"""One function per Snakemake rule of the volume-element study: read inputs, call modules, write.

``rules/ve.smk`` rule ``ve_<name>`` ↔ function ``<name>`` here ↔ ``latentmech ve <name>``. Each
takes paths and a ``settings`` mapping (the rule's ``params``) and writes its outputs atomically;
the modules below (generate, io, orientation, vae3d, cp, surrogate, latent) only compute.

Stores: a generated shard holds raw Euler angles ``(ve, x, y, z, angle)`` in radians with the
grain ids; ``ves.zarr`` holds the dataset the models see, ``eulers (ve, angle, x, y, z)``
reduced to the fundamental zone and normalised by (2π, π, 2π) (paper section 2.1), chunked per
VE, with each VE's collection, split and texture/morphology labels as coordinates.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from latentmech.core.errors import InputError
from latentmech.core.store import (
    atomic_path,
    open_zarr,
    provenance,
    read_table,
    write_json,
    write_table,
    write_zarr,
)

Settings = Mapping[str, Any]
#: Per-VE labels carried from the shards into every store and table.
LABELS = ("collection", "split", "texture", "morphology")


def _text(values: Any) -> np.ndarray:
    """Labels as a plain numpy unicode array (zarr v3 hands strings back as StringDType)."""
    return np.asarray(values).astype(object).astype(str)


# ---------------------------------------------------------------------------------------------
# VEs in


def _ve_rng(seed: int, dataset: str, collection: str, index: int) -> np.random.Generator:
    """Each VE's own stream: the same VE whatever the shard size or the job order."""
    names = [zlib.crc32(dataset.encode()), zlib.crc32(collection.encode())]
    return np.random.default_rng([seed, *names, index])


def _morphology(grains: Mapping[str, Any]) -> str:
    aspect = ":".join(f"{a:g}" for a in grains["aspect"])
    return f"ESD {grains['esd_mean']:g}, aspect {aspect}"


def _shard_dataset(
    eulers: np.ndarray, grain_ids: np.ndarray, names: Sequence[str], labels: Mapping[str, Any],
    voxel: float = 1.0,
) -> xr.Dataset:  # fmt: skip
    """A shard: raw Euler angles in float64 (reduced later: no rounding before the FZ test)."""
    dims = ("ve", "x", "y", "z")
    n = len(names)
    coords = {"ve": list(names)} | {k: ("ve", [str(v)] * n) for k, v in labels.items()}
    coords |= {
        axis: (axis, (np.arange(size) + 0.5) * voxel, {"units": "VE length unit"})
        for axis, size in zip(("x", "y", "z"), eulers.shape[1:4], strict=True)
    }
    return xr.Dataset(
        {
            "eulers": ((*dims, "angle"), eulers.astype(np.float64),
                       {"units": "rad", "convention": "Bunge (phi1, Phi, phi2), damask"}),
            "grain_ids": (dims, grain_ids.astype(np.int32)),
        },
        coords=coords | {"angle": ["phi1", "Phi", "phi2"]},
    )  # fmt: skip


def generate(shard: Path, settings: Settings, code: str = "") -> None:
    """Generate VEs ``start … stop`` of one collection (periodic tessellation + texture)."""
    from latentmech.ve import generate as gen

    grains = gen.GrainSpec(
        esd_mean=float(settings["grains"]["esd_mean"]),
        esd_sigma=float(settings["grains"]["esd_sigma"]),
        cutoff_sigmas=float(settings["grains"]["cutoff_sigmas"]),
        aspect=tuple(float(a) for a in settings["grains"]["aspect"]),
        voxel_size=float(settings["voxel_size"]),
    )
    texture = settings["texture"]
    collection = settings["collection"]
    cells = int(settings["cells"])
    indices = range(int(settings["start"]), int(settings["stop"]))
    eulers, ids = [], []
    for index in indices:
        rng = _ve_rng(int(settings["seed"]), settings["dataset"], collection, index)
        ve_ids = gen.tessellate((cells,) * 3, grains, rng)
        orientations = gen.texture_eulers(
            int(ve_ids.max()) + 1, texture["name"], rng, scatter_deg=float(texture["scatter_deg"])
        )
        eulers.append(orientations[ve_ids])
        ids.append(ve_ids)
    labels = {"collection": collection, "split": settings["split"],
              "texture": texture["name"], "morphology": _morphology(settings["grains"])}  # fmt: skip
    names = [f"{collection}_{i:05d}" for i in indices]
    ds = _shard_dataset(np.stack(eulers), np.stack(ids), names, labels, float(grains.voxel_size))
    write_zarr(ds, shard, attrs=provenance("ve_generate", settings, code))


def _read_row(row: Mapping[str, Any], lattice: str, cells: int, sheet: str) -> Any:
    """One sheet row's VE, checked against the dataset's lattice and VE size."""
    from latentmech.ve import io

    suffix = Path(row["path"]).suffix.lower()
    options: dict[str, Any] = {}
    if suffix == ".npy":
        options = {"layout": row["layout"], "angles": row["angles"]}
    elif suffix in (".dream3d", ".h5") and row.get("phase") is not None:
        options = {"phase": int(row["phase"])}
    ve = io.read_ve(row["path"], lattice=lattice, **options)
    if ve.eulers.shape[:3] != (cells,) * 3:
        raise InputError(row["path"], f"{sheet}, VE {row['name']}",
                         f"VEs of mixed shapes: {ve.eulers.shape[:3]} voxels, the study's VEs "
                         f"have ve.cells = {cells} along each axis")  # fmt: skip
    return ve


def ingest(shard: Path, files: Sequence[Path], settings: Settings, code: str = "") -> None:
    """Read one shard of a dataset's VE files (sample sheet rows, in order) into a shard."""
    from latentmech.ve import orientation

    lattice = orientation.lattice_family(settings["lattice"], "ve.datasets.lattice")
    cells = int(settings["cells"])
    rows = [dict(row, path=str(file)) for row, file in zip(settings["rows"], files, strict=True)]
    ves = [_read_row(row, lattice, cells, settings["sheet"]) for row in rows]
    ids = [v.grain_ids if v.grain_ids is not None else np.full((cells,) * 3, -1) for v in ves]
    voxel = float(ves[0].size[0]) / cells
    ds = _shard_dataset(np.stack([v.eulers for v in ves]), np.stack(ids),
                        [r["name"] for r in rows], {}, voxel)  # fmt: skip
    labels = {
        "collection": [r["collection"] for r in rows],
        "split": [r["split"] for r in rows],
        "texture": [r.get("texture") or "unknown" for r in rows],
        "morphology": [r.get("morphology") or "unknown" for r in rows],
    }
    ds = ds.assign_coords({k: ("ve", v) for k, v in labels.items()})
    write_zarr(ds, shard, attrs=provenance("ve_ingest", settings, code))


def _reduced_shard(part: xr.Dataset, source: Path, lattice: str) -> xr.Dataset:
    """One shard in the dataset layout: FZ-reduced, normalised, (ve, angle, x, y, z) float32."""
    from latentmech.ve import orientation

    eulers = orientation.check_euler_range(part["eulers"].values, source)
    fz = orientation.reduce_to_fundamental_zone(eulers, lattice)
    normalised = np.moveaxis(orientation.normalise_eulers(fz), -1, 1).astype(np.float32)
    attrs = {"units": "1", "normalisation": "phi1/2pi, Phi/pi, phi2/2pi",
             "fundamental_zone": lattice}  # fmt: skip
    ds = part.drop_vars("eulers").assign(eulers=(("ve", "angle", "x", "y", "z"), normalised, attrs))
    return ds.transpose("ve", "angle", "x", "y", "z")


def dataset(shards: Sequence[Path], ves: Path, settings: Settings, code: str = "") -> None:
    """Join the shards into the dataset store: fundamental zone, normalised, chunked per VE.

    Shard by shard (appended along ``ve``), so the store may be larger than memory.
    """
    from latentmech.core.store import consolidate_zarr
    from latentmech.ve import orientation

    lattice = orientation.lattice_family(settings["lattice"], "ve.datasets.lattice")
    first = open_zarr(shards[0], load=False)
    attrs = provenance("ve_dataset", settings, code) | {"lattice": lattice}
    with atomic_path(ves) as tmp:
        for index, path in enumerate(shards):
            part = open_zarr(path)
            _check_shape(part, path, first, shards[0])
            ds = _reduced_shard(part, path, lattice)
            ds.attrs = dict(attrs)  # an append rewrites the group's attributes: keep ours
            if index == 0:
                cells = ds["eulers"].shape[2:]
                encoding = {"eulers": {"chunks": (1, 3, *cells)},
                            "grain_ids": {"chunks": (1, *cells)}}  # fmt: skip
                ds.to_zarr(tmp, mode="w", zarr_format=3,
                                                 consolidated=False, encoding=encoding)  # fmt: skip
            else:
                ds.to_zarr(tmp, append_dim="ve", zarr_format=3, consolidated=False)
        consolidate_zarr(tmp)


def _check_shape(part: xr.Dataset, source: Path, first: xr.Dataset, first_source: Path) -> None:
    shape, expected = part["eulers"].shape[1:4], first["eulers"].shape[1:4]
    if shape != expected:
        raise InputError(source, "eulers", f"VEs of mixed shapes: {shape} voxels here, "
                         f"{expected} in {first_source}")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 3D VAE


#: Splits up to this size (bytes) are loaded into memory for training; larger ones are read
#: from the store VE by VE (its one-VE chunks), so paper-scale datasets need not fit in memory.
IN_MEMORY_BYTES = 2 * 1024**3


class ZarrVEs:
    """A torch-style dataset of VEs ``(3, X, Y, Z)`` read lazily from a dataset store."""

    def __init__(self, store: xr.Dataset, indices: np.ndarray) -> None:
        self.eulers = store["eulers"]
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> Any:
        import torch

        return torch.from_numpy(self.eulers.isel(ve=int(self.indices[item])).values)


def _training_data(store: xr.Dataset, indices: np.ndarray) -> Any:
    """The VEs of one split: in memory when small, else read from the store as needed."""
    import torch
    from torch.utils.data import TensorDataset

    size = len(indices) * int(np.prod(store["eulers"].shape[1:])) * 4
    if size > IN_MEMORY_BYTES:
        return ZarrVEs(store, indices)
    return TensorDataset(torch.from_numpy(store["eulers"].isel(ve=indices).values))


def train_vae(
    ves: Path, model: Path, sidecar: Path, history: Path, settings: Settings, code: str = ""
) -> None:
    """Train the dataset's 3D ResNet VAE on its training VEs; keep the best-on-validation weights.

    Resumable: the loop's checkpoints live in ``settings["workdir"]`` (keyed by a digest of the
    settings and code, not a declared output), so a retried or requeued job continues.
    """
    import json
    import shutil

    import torch

    from latentmech.core.distributed import is_main_process
    from latentmech.core.train import Trainer, TrainSettings, data_fingerprint, load_checkpoint
    from latentmech.ve import vae3d

    torch.set_num_threads(int(settings.get("threads", 1)))
    store = open_zarr(ves, load=False)
    split = _text(store["split"])
    data = {s: _training_data(store, np.flatnonzero(split == s)) for s in ("train", "val")}
    cells = int(store.sizes["x"])
    config = vae3d.VAE3DConfig.from_dict({**settings["model"], "cells": cells})
    loss_settings = settings["loss"]

    def loss(net: Any, batch: Any) -> Any:
        return vae3d.vae3d_loss(net, batch, **loss_settings)

    train_settings = TrainSettings.from_dict(settings["train"])
    torch.manual_seed(train_settings.seed)  # the initial weights follow the seed too
    fingerprint = data_fingerprint(
        np.frombuffer(json.dumps(store.attrs, sort_keys=True, default=str).encode(), np.uint8)
    )
    trainer = Trainer(vae3d.VAE3D(config), loss, train_settings, settings["workdir"],
                      fingerprint=fingerprint)  # fmt: skip
    result = trainer.fit(data["train"], data["val"])
    if not is_main_process():  # under torchrun, rank 0 alone writes the outputs
        return
    best = vae3d.VAE3D(config)
    best.load_state_dict(load_checkpoint(result.best_path)["model"])
    with atomic_path(model) as tmp:
        torch.save(best.state_dict(), tmp)
    meta = {"config": config.to_dict(), "dataset": settings["dataset"],
            "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run}  # fmt: skip
    write_json(meta | {"provenance": provenance("ve_train_vae", settings, code)}, sidecar)
    with atomic_path(history) as tmp:
        shutil.copyfile(result.history_path, tmp)


def load_vae(model: Path, sidecar: Path) -> Any:
    """The trained VAE in eval mode (weights loaded with ``weights_only=True``)."""
    import json

    import torch

    from latentmech.ve import vae3d

    meta = json.loads(Path(sidecar).read_text())
    net = vae3d.VAE3D(vae3d.VAE3DConfig.from_dict(meta["config"]))
    net.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
    return net.eval()


def _quaternions(normalised: np.ndarray) -> np.ndarray:
    """Quaternions (..., X, Y, Z, 4) of normalised VEs (..., 3, X, Y, Z)."""
    from latentmech.ve import orientation as ori

    eulers = ori.denormalise_eulers(np.moveaxis(np.clip(normalised, 0.0, 1.0), -4, -1))
    return ori.eulers_to_quaternions(eulers.astype(np.float64))


def _orientation_errors(
    q_true: np.ndarray, recon: np.ndarray, q_base: np.ndarray, lattice: str
) -> dict[str, np.ndarray]:
    """Per-VE means of φ₄ (Eq. 5), of the symmetry-aware misorientation (degrees) and of the
    baseline's φ₄, for a batch of VEs."""
    from latentmech.ve import orientation as ori

    q_recon = _quaternions(recon)
    axes = (1, 2, 3)
    angle = ori.misorientation_angle(q_true, q_recon, lattice)
    return {
        "phi4": ori.phi4(q_true, q_recon).mean(axis=axes),
        "misorientation_deg": np.degrees(angle).mean(axis=axes),
        "baseline_phi4": ori.phi4(q_true, q_base).mean(axis=axes),
    }


def _encode_all(
    net: Any, stores: Sequence[xr.Dataset], batch: int, q_base: np.ndarray, lattice: str
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """μ, ln σ² and the reconstruction scores of every VE, a batch at a time (bounded memory)."""
    import torch

    mus, logvars, scores = [], [], []
    with torch.no_grad():
        for store in stores:
            for start in range(0, store.sizes["ve"], batch):
                x = store["eulers"].isel(ve=slice(start, start + batch)).values
                recon, mu, logvar = net(torch.from_numpy(x))
                mus.append(mu.numpy())
                logvars.append(logvar.numpy())
                scores.append(_orientation_errors(_quaternions(x), recon.numpy(), q_base, lattice))
    joined = {k: np.concatenate([s[k] for s in scores]) for k in scores[0]}
    return np.concatenate(mus), np.concatenate(logvars), joined


def _lazy(stores: Sequence[Path]) -> list[xr.Dataset]:
    """The stores opened without loading their arrays (labels are small and load at once)."""
    return [open_zarr(path, load=False) for path in stores]


def _labels(stores: Sequence[xr.Dataset]) -> dict[str, np.ndarray]:
    names = ("ve", *LABELS)
    return {k: np.concatenate([_text(store[k]) for store in stores]) for k in names}


def _training_mean(store: xr.Dataset, batch: int = 64) -> np.ndarray:
    """The training split's per-voxel mean VE (3, X, Y, Z), summed a batch at a time."""
    train = np.flatnonzero(_text(store["split"]) == "train")
    total = np.zeros(store["eulers"].shape[1:], dtype=np.float64)
    for start in range(0, len(train), batch):
        total += store["eulers"].isel(ve=train[start : start + batch]).values.sum(axis=0)
    return (total / len(train)).astype(np.float32)


def encode(
    ves: Sequence[Path], model: Path, sidecar: Path, fingerprints: Path, scores: Path,
    settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Fingerprint every VE (μ, ln σ² of the encoder) and score its reconstruction.

    Scores per VE: mean φ₄ = 1 − |q₁·q₂| over voxels (paper Eq. 5), the mean symmetry-aware
    misorientation, and the φ₄ of the training set's per-voxel mean VE as a baseline a VAE
    must beat (it knows nothing about the VE it is given).
    """
    import torch

    torch.set_num_threads(int(settings.get("threads", 1)))
    net = load_vae(model, sidecar)
    stores = _lazy(ves)
    q_base = _quaternions(_training_mean(stores[0])[None])
    mu, logvar, errors = _encode_all(
        net, stores, int(settings["batch_size"]), q_base, settings["lattice"]
    )
    labels = _labels(stores)
    out = xr.Dataset(
        {"mu": (("ve", "latent"), mu), "logvar": (("ve", "latent"), logvar)},
        coords={"ve": labels["ve"], "latent": np.arange(mu.shape[1])}
        | {k: ("ve", labels[k]) for k in LABELS},
    )
    write_zarr(out, fingerprints, attrs=provenance("ve_encode", settings, code))
    table = pd.DataFrame(labels | errors)
    write_table(table.assign(dataset=settings["dataset"]), scores)


def reconstruction_table(scores: Sequence[Path], table: Path, settings: Settings,
                         code: str = "") -> None:  # fmt: skip
    """Paper Tables 4-6: mean ± std over VEs of the per-VE mean φ₄ per dataset and collection."""
    frames = pd.concat([read_table(path) for path in scores], ignore_index=True)
    grouped = frames.groupby(["dataset", "collection"], sort=False)
    summary = grouped.agg(
        ves=("ve", "size"),
        phi4_mean=("phi4", "mean"),
        phi4_std=("phi4", "std"),
        misorientation_deg_mean=("misorientation_deg", "mean"),
        misorientation_deg_std=("misorientation_deg", "std"),
        baseline_phi4_mean=("baseline_phi4", "mean"),
    ).reset_index()
    summary["beats_baseline"] = summary["phi4_mean"] < summary["baseline_phi4_mean"]
    write_table(summary, table)


def _central_slices(volume: np.ndarray) -> np.ndarray:
    """The z-centre slice of a normalised VE (3, X, Y, Z) as RGB (Euler angles → colours)."""
    return np.clip(np.moveaxis(volume[:, :, :, volume.shape[-1] // 2], 0, -1), 0.0, 1.0)


def figure_reconstructions(
    ves: Sequence[Path],
    model: Path,
    sidecar: Path,
    figure: Path,
    settings: Settings,
    code: str = "",
) -> None:
    """Paper Figs. 5, 6 and 8: a central slice of one VE per collection and its reconstruction.

    Colours are the normalised Euler angles as RGB, as in the paper (no IPF reference needed).
    """
    import matplotlib.pyplot as plt
    import torch

    from latentmech.core.plots import save_figure

    net = load_vae(model, sidecar)
    stores = _lazy(ves)
    collections, x = [], []
    for store in stores:  # the first VE of each collection
        names = _text(store["collection"])
        for name in dict.fromkeys(names):
            collections.append(name)
            x.append(store["eulers"].isel(ve=int(np.flatnonzero(names == name)[0])).values)
    x = np.stack(x)
    with torch.no_grad():
        recon = net(torch.from_numpy(x))[0].numpy()
    fig, axes = plt.subplots(
        2, len(collections), figsize=(2.2 * len(collections), 4.6), squeeze=False
    )
    for column, name in enumerate(collections):
        for row, volume in enumerate((x[column], recon[column])):
            axes[row, column].imshow(_central_slices(volume).transpose(1, 0, 2), origin="lower")
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
        axes[0, column].set_title(name, fontsize=9)
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("reconstruction")
    fig.suptitle(f"{settings['dataset']}: central z slices (RGB = normalised Euler angles)")
    save_figure(fig, figure)


# ---------------------------------------------------------------------------------------------
# latent space


def latent(
    ves: Sequence[Path], model: Path, sidecar: Path, fingerprints: Path, path_figure: Path,
    pca_figure: Path, clustering: Path, settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Paper section 3.3: a decoded linear path (Fig. 9), PCA of fingerprints (Fig. 10) and
    spectral clustering of the textured and the morphological edge cases (section 3.3.3)."""
    from latentmech.ve import latent as lat

    fp = open_zarr(fingerprints)
    _figure_path(ves[0], model, sidecar, fp, path_figure, settings)
    mu = fp["mu"].values
    collection = _text(fp["collection"])
    split = _text(fp["split"])
    pca = lat.fit_pca(mu[split == "train"], int(settings["pca_components"]), int(settings["seed"]))
    projected = lat.project(pca, mu)
    _figure_pca(projected, collection, split, pca_figure)
    texture = _text(fp["texture"])
    write_table(_clustering_table(projected, collection, split, texture, settings), clustering)


def _figure_path(
    ves: Path, model: Path, sidecar: Path, fp: xr.Dataset, figure: Path, settings: Settings
) -> None:
    import matplotlib.pyplot as plt
    import torch

    from latentmech.core.plots import save_figure
    from latentmech.ve import latent as lat

    test = np.flatnonzero(_text(fp["split"]) == "test")[:2]
    z = lat.linear_path(fp["mu"].values[test[0]], fp["mu"].values[test[1]],
                        int(settings["path_steps"]))  # fmt: skip
    net = load_vae(model, sidecar)
    with torch.no_grad():
        decoded = net.decode(torch.from_numpy(z.astype(np.float32))).numpy()
    # the fingerprints list the splits' store first, so these indices are its own
    ends = open_zarr(ves, load=False)["eulers"].isel(ve=test).values
    panels = [ends[0], *decoded, ends[1]]
    titles = ["test VE 1", *(f"z_{n + 1}" for n in range(len(decoded))), "test VE 2"]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.8 * len(panels), 2.2))
    for ax, volume, title in zip(axes, panels, titles, strict=True):
        ax.imshow(_central_slices(volume).transpose(1, 0, 2), origin="lower")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"Linear path through the latent space (Eq. 6, N = {len(decoded)})")
    save_figure(fig, figure)


def _figure_pca(projected: np.ndarray, collection: np.ndarray, split: np.ndarray,
                figure: Path) -> None:  # fmt: skip
    import matplotlib.pyplot as plt

    from latentmech.core.plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 5))
    train = split == "train"
    ax.scatter(*projected[train, :2].T, s=6, c="lightgrey", label="train")
    for name in dict.fromkeys(collection[split == "edge"]):
        chosen = collection == name
        ax.scatter(*projected[chosen, :2].T, s=12, label=name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, markerscale=1.5)
    ax.set_title("Fingerprints on the training set's first two principal components")
    save_figure(fig, figure)


def _clustering_table(projected: np.ndarray, collection: np.ndarray, split: np.ndarray,
                      texture: np.ndarray, settings: Settings) -> pd.DataFrame:  # fmt: skip
    """Accuracy of spectral clustering of the edge cases grouped by texture and by morphology."""
    from latentmech.ve import latent as lat

    edge = split == "edge"
    groups = {  # textured edge cases, and the random-texture (morphological) ones
        "texture": edge & ~np.isin(texture, ["random", "unknown"]),
        "morphology": edge & (texture == "random"),
    }
    rows = []
    for kind, chosen in groups.items():
        classes = sorted(set(collection[chosen]))
        if len(classes) < 2:
            continue
        accuracy, _, _ = lat.spectral_clustering_accuracy(
            projected[chosen], collection[chosen], n_clusters=len(classes),
            seed=int(settings["seed"]),
        )  # fmt: skip
        rows.append({"kind": kind, "classes": " ".join(classes), "ves": int(chosen.sum()),
                     "components": projected.shape[1], "accuracy": accuracy})  # fmt: skip
    return pd.DataFrame(rows, columns=["kind", "classes", "ves", "components", "accuracy"])


# ---------------------------------------------------------------------------------------------
# crystal plasticity and surrogate


def _stress_columns(increments: int) -> list[str]:
    return [f"sigma_{i:02d}" for i in range(increments + 1)]


def _grain_ids(ids: np.ndarray, eulers: np.ndarray) -> np.ndarray:
    """Grain ids, from the distinct orientations of a VE where the source had none (-1)."""
    out = ids.copy()
    for i in np.flatnonzero((ids == -1).all(axis=(1, 2, 3))):  # a loop over VEs, not voxels
        _, inverse = np.unique(eulers[i].reshape(-1, 3), axis=0, return_inverse=True)
        out[i] = inverse.reshape(ids.shape[1:])
    return out


def responses(ves: Path, table: Path, settings: Settings, code: str = "") -> None:
    """Volume-averaged σ along the load axis per strain increment for every VE (section 2.3)."""
    from latentmech.ve import cp
    from latentmech.ve import orientation as ori

    ds = open_zarr(ves, load=False)
    load = cp.LoadCase(**settings["load"])
    params = {"copper": cp.copper, "magnesium": cp.magnesium}[settings["material"]]()
    batch = int(settings.get("batch_ves", 256))
    stress = []
    for start in range(0, ds.sizes["ve"], batch):  # bounded memory: VEs a batch at a time
        part = ds.isel(ve=slice(start, start + batch))
        eulers = ori.denormalise_eulers(
            np.moveaxis(part["eulers"].values.astype(np.float64), 1, -1)
        )
        if settings["backend"] == "taylor":
            options = cp.TaylorOptions(workers=int(settings["threads"]))
            stress.append(cp.taylor_responses_of_ves(eulers, params, load, options=options))
        else:
            ids = _grain_ids(part["grain_ids"].values, eulers)
            runs = Path(table).parent / "runs" / f"{start:06d}"
            stress.append(cp.damask_responses_of_ves(eulers, ids, params, load, runs))
    stress = np.concatenate(stress)
    frame = pd.DataFrame(stress, columns=_stress_columns(load.increments))
    labels = pd.DataFrame({"ve": _text(ds["ve"])}
                          | {k: _text(ds[k]) for k in LABELS})  # fmt: skip
    write_table(pd.concat([labels, frame], axis=1), table)


def _surrogate_data(fingerprints: Path, responses_table: Path) -> tuple[Any, ...]:
    fp = open_zarr(fingerprints)
    table = read_table(responses_table, dtype={"ve": str}).set_index("ve")
    missing = sorted(set(_text(fp["ve"])) - set(table.index))
    if missing:
        raise InputError(responses_table, "ve", f"no response for {len(missing)} VEs, "
                         f"e.g. {missing[:3]}")  # fmt: skip
    table = table.loc[_text(fp["ve"])]
    columns = [c for c in table.columns if c.startswith("sigma_")]
    return fp["mu"].values.astype(np.float32), table[columns].to_numpy(), table["split"].to_numpy()


def train_surrogate(
    fingerprints: Path, responses: Path, model: Path, sidecar: Path, history: Path,
    settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Fit the fingerprint → stress-curve network (section 2.4) on min-max scaled stresses."""
    import shutil

    import torch
    from torch.utils.data import TensorDataset

    from latentmech.core.distributed import is_main_process
    from latentmech.core.train import Trainer, TrainSettings, data_fingerprint, load_checkpoint
    from latentmech.ve import surrogate as sur

    torch.set_num_threads(int(settings.get("threads", 1)))
    x, stress, split = _surrogate_data(fingerprints, responses)
    # min-max over the whole dataset, before the split (paper section 2.3)
    scaler = sur.MinMaxScaler.fit(stress, per_increment=settings["scaling"] == "per_increment")
    y = scaler.transform(stress).astype(np.float32)
    data = {s: TensorDataset(torch.from_numpy(x[split == s]), torch.from_numpy(y[split == s]))
            for s in ("train", "val")}  # fmt: skip
    config = sur.SurrogateConfig.from_dict(
        {**settings["model"], "in_features": x.shape[1], "outputs": y.shape[1]}
    )
    train_settings = TrainSettings.from_dict(settings["train"])
    torch.manual_seed(train_settings.seed)
    trainer = Trainer(sur.Surrogate(config), sur.surrogate_loss, train_settings,
                      settings["workdir"], fingerprint=data_fingerprint(*data.values()))  # fmt: skip
    result = trainer.fit(data["train"], data["val"])
    if not is_main_process():
        return
    best = sur.Surrogate(config)
    best.load_state_dict(load_checkpoint(result.best_path)["model"])
    with atomic_path(model) as tmp:
        torch.save(best.state_dict(), tmp)
    meta = {"config": config.to_dict(), "scaler": scaler.to_dict(),
            "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run}  # fmt: skip
    write_json(meta | {"provenance": provenance("ve_train_surrogate", settings, code)}, sidecar)
    with atomic_path(history) as tmp:
        shutil.copyfile(result.history_path, tmp)


def evaluate_surrogate(
    fingerprints: Path, responses: Path, model: Path, sidecar: Path, table: Path,
    increments: Path, figure: Path, settings: Settings, code: str = "",
) -> None:  # fmt: skip
    """Paper Fig. 11: MSE per split, mean absolute error per increment, example curves, timing."""
    import json

    import torch

    from latentmech.ve import surrogate as sur

    meta = json.loads(Path(sidecar).read_text())
    net = sur.Surrogate(sur.SurrogateConfig.from_dict(meta["config"]))
    net.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
    net.eval()
    scaler = sur.MinMaxScaler.from_dict(meta["scaler"])
    x, stress, split = _surrogate_data(fingerprints, responses)
    predicted = scaler.inverse_transform(sur.predict(net, x, batch_size=1024))
    strain = np.linspace(0.0, settings["load"]["strain"], stress.shape[1])
    # A baseline that ignores the fingerprint: the training set's mean curve for every VE.
    mean_curve = np.broadcast_to(stress[split == "train"].mean(axis=0), stress.shape)
    rows = []
    for name in ("train", "val", "test"):
        chosen = split == name
        summary, _ = sur.evaluate(stress[chosen], predicted[chosen], scaler)
        baseline, _ = sur.evaluate(stress[chosen], mean_curve[chosen], scaler)
        rows.append({"split": name} | summary | {"baseline_mae_mpa": baseline["mae_mpa"],
                                                 "baseline_mse_mpa2": baseline["mse_mpa2"]})  # fmt: skip
    test = split == "test"
    timing = {
        "seconds_per_curve_batched": sur.prediction_time_per_curve(net, x[test]),
        "seconds_single_curve": sur.single_curve_latency(net, x[test][0]),
    }
    write_table(pd.DataFrame(rows).assign(**timing), table)
    _, per_increment = sur.evaluate(stress[test], predicted[test], scaler, strain=strain)
    write_table(per_increment, increments)
    _figure_surrogate(stress[test], predicted[test], settings, figure)


def _figure_surrogate(true: np.ndarray, predicted: np.ndarray, settings: Settings,
                      figure: Path) -> None:  # fmt: skip
    import matplotlib.pyplot as plt

    from latentmech.core.plots import save_figure

    load = settings["load"]
    strain = np.linspace(0.0, load["strain"], true.shape[1])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for i in range(min(int(settings["examples"]), len(true))):
        (line,) = left.plot(strain * 100, true[i], lw=1.5)
        left.plot(strain * 100, predicted[i], "--", color=line.get_color(), lw=1.2)
    left.set_xlabel("strain (%)")
    left.set_ylabel("σ (MPa)")
    left.set_title("test VEs: crystal plasticity (solid) and surrogate (dashed)")
    error = np.abs(predicted - true)
    right.errorbar(strain * 100, error.mean(axis=0), yerr=error.std(axis=0), fmt="o-", ms=3)
    right.set_xlabel("strain (%)")
    right.set_ylabel("|error| (MPa)")
    right.set_title("test set: mean absolute error ± std per increment")
    save_figure(fig, figure)
