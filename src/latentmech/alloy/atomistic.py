"""The atomistic stages of the alloy study: LAMMPS cells (``md``) and their block fields.

They live apart from :mod:`latentmech.alloy.stages` so that the code digest of the LAMMPS and
fields rules covers only what those jobs run: editing the AlloyVAE stages or a figure must not
rerun the molecular dynamics (hours at the paper's 2.5 M atoms per cell). ``stages`` re-exports
both, so ``latentmech alloy md`` and ``stages.md`` still name them.

Stores: ``fields/{sample}.zarr`` holds one sample's block fields in physical units, each with a
``units`` attribute (``concentration (element, x, y, z)`` atom fractions, ``wc (pair, x, y, z)``
block-mean Warren–Cowley parameters, ``stress (component, x, y, z)`` GPa, ``atoms (x, y, z)``,
optionally ``eigenstrain (strain, x, y, z)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from latentmech.core.errors import InputError
from latentmech.core.store import provenance, write_zarr

Settings = Mapping[str, Any]
COMPONENTS = ("xx", "yy", "zz", "xy", "xz", "yz")
#: Dataset fields a model can take as condition or target, and their channel dimension.
FIELD_DIMS = {"concentration": "element", "wc": "pair", "stress": "component",
              "eigenstrain": "strain"}  # fmt: skip
#: Units of the stored fields (CF ``units`` attributes; "1" is dimensionless), kept through the
#: dataset, the predictions and the design so a reader never has to guess what a value means.
UNITS = {"concentration": "atom fraction", "wc": "1", "stress": "GPa", "eigenstrain": "1",
         "atoms": "count"}  # fmt: skip


def _pairs(elements: Sequence[str]) -> list[str]:
    return [f"{a}-{b}" for a in elements for b in elements]


# -- atomistic data -----------------------------------------------------------------------------


def md(dump: Path, lammps_log: Path, settings: Settings, code: str = "") -> None:
    """One LAMMPS sample: random or MD/MC-annealed cell, relaxed, per-atom stress dumped."""
    from latentmech.alloy import md as molecular

    config = molecular.MDSettings.from_dict(settings["md"])
    molecular.run_sample(config, Path(dump), Path(lammps_log))


def _snapshot(dump: Path, settings: Settings) -> Any:
    from latentmech.alloy.dump import read_dump

    index = settings.get("snapshot")  # default the last: the other blocks are skipped, not parsed
    snapshots = read_dump(dump, snapshot=-1 if index is None else int(index),
                          stress=settings.get("stress") or "auto", require_stress=True)  # fmt: skip
    return snapshots[-1]


def fields(dump: Path, fields: Path, settings: Settings, code: str = "") -> None:
    """Block fields of one sample (section 4.1.1): concentrations, Warren–Cowley, stress (GPa)."""
    from latentmech.alloy import blocks

    elements = list(settings["elements"])
    snap = _snapshot(Path(dump), settings)
    bad = (snap.types < 1) | (snap.types > len(elements))
    if bad.any():
        raise InputError(dump, f"snapshot at timestep {snap.timestep}, column type",
                         f"atom types 1..{len(elements)} (alloy.elements {elements}); found "
                         f"{sorted(set(snap.types[bad].tolist()))[:10]}")  # fmt: skip
    if not all(snap.box.periodic):
        raise InputError(dump, f"snapshot at timestep {snap.timestep}, ITEM: BOX BOUNDS",
                         "periodic boundaries (pp) in x, y and z: the block fields and the first "
                         f"shells assume a periodic cell, got periodic = {snap.box.periodic}")  # fmt: skip
    if snap.units not in (None, "metal"):
        raise InputError(dump, f"snapshot at timestep {snap.timestep}, ITEM: UNITS",
                         "LAMMPS metal units (Å, per-atom stress × volume in bar·Å³), which the "
                         f"block stress in GPa assumes; got {snap.units!r}: rerun with 'units "
                         "metal' (a dump without ITEM: UNITS is read as metal)")  # fmt: skip
    grid = settings["blocks"]
    try:
        out = blocks.block_fields(snap.positions, snap.types, snap.stress, snap.box.matrix,
                                  snap.box.origin, blocks=grid["r"], n_types=len(elements),
                                  cutoff=grid["cutoff"], reference=grid["reference"],
                                  max_bad_fraction=grid["max_bad_fraction"],
                                  workers=int(settings.get("threads", 1)))  # fmt: skip
    except blocks.BlockError as error:
        raise InputError(dump, f"snapshot at timestep {snap.timestep}", str(error)) from None
    r = int(grid["r"])
    coords = {"element": elements, "pair": _pairs(elements), "component": list(COMPONENTS),
              "x": np.arange(r), "y": np.arange(r), "z": np.arange(r)}  # fmt: skip
    data = {
        "concentration": (("element", "x", "y", "z"), out["concentration"]),
        "wc": (("pair", "x", "y", "z"), out["wc"]),
        "stress": (("component", "x", "y", "z"), out["stress"]),
        "atoms": (("x", "y", "z"), out["atoms"]),
    }
    if settings["eigenstrain"]:
        from latentmech.alloy import md as molecular

        config = molecular.MDSettings.from_dict(settings["md"])
        try:
            strain = molecular.block_eigenstrain(snap.positions, snap.types, snap.box.matrix,
                                                 snap.box.origin, r, config)  # fmt: skip
        except (InputError, molecular.LammpsError) as error:
            raise InputError(dump, f"snapshot at timestep {snap.timestep}, eigenstrain",
                             str(error)) from None  # fmt: skip
        data["eigenstrain"] = (("strain", "x", "y", "z"), np.asarray(strain)[None])
        coords["strain"] = ["volumetric"]
    ds = xr.Dataset(data, coords=coords)
    for name in ds.data_vars:
        ds[name].attrs["units"] = UNITS[name]
    attrs = provenance("alloy_fields", settings, code) | {
        "sample": settings["sample"], "dump": str(dump), "timestep": int(snap.timestep),
        "atoms": int(snap.types.size), "volume_A3": float(snap.box.volume),
    }  # fmt: skip
    write_zarr(ds, fields, attrs=attrs)
