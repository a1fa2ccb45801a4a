"""Volume elements in and out: DAMASK grids, DREAM.3D files and ``.npy`` arrays.

Every reader returns a :class:`VolumeElement`: Bunge Euler angles ``(X, Y, Z, 3)`` in radians
(damask's convention, voxel order x, y, z with x the tensile axis of the CP load case), the
lattice family (``"cubic"`` or ``"hexagonal"``), integer grain ids when the file has them, the
physical size and the file read. The VE study handles single-phase VEs, so a file whose voxels
belong to phases of different lattices is refused unless the caller picks one. Every problem with
a file is an :class:`~latentmech.core.errors.InputError` naming the file, the place in it and
what was expected.

:func:`write_damask_grid` writes the other way round, for the DAMASK backend of the CP stage:
a ``grid.vti`` and a ``material.yaml`` with one material per grain.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentmech.core.errors import InputError
from latentmech.ve.orientation import (
    check_euler_range,
    eulers_to_quaternions,
    lattice_family,
    quaternions_to_eulers,
)

__all__ = [
    "DAMASK_LATTICE_SYMBOLS",
    "DREAM3D_CRYSTAL_STRUCTURES",
    "VE_SUFFIXES",
    "VolumeElement",
    "read_dream3d",
    "read_npy",
    "read_ve",
    "read_vti",
    "stack_ves",
    "write_damask_grid",
]

#: DREAM.3D ``CrystalStructures`` codes (its ``Ebsd::CrystalStructure`` enum) the wing reads,
#: as damask lattice families. Checked on DAMASK's own 2-phase test file, whose result's
#: ``material.yaml`` gives ``cF`` to the phase with code 1 and ``hP`` to the one with code 0.
DREAM3D_CRYSTAL_STRUCTURES: dict[int, str] = {0: "hexagonal", 1: "cubic"}
#: Names of the other codes, for error messages only.
_DREAM3D_OTHER_STRUCTURES: dict[int, str] = {
    2: "hexagonal-low (6/m)",
    3: "cubic-low (m-3)",
    4: "triclinic",
    5: "monoclinic",
    6: "orthorhombic",
    7: "tetragonal-low (4/m)",
    8: "tetragonal-high (4/mmm)",
    9: "trigonal-low (-3)",
    10: "trigonal-high (-3m)",
    999: "unknown",
}
#: Lattice symbols DAMASK accepts in a phase for the two families of the wing.
DAMASK_LATTICE_SYMBOLS: tuple[str, ...] = ("cF", "cI", "cP", "hP")
#: Suffixes :func:`read_ve` understands.
VE_SUFFIXES: tuple[str, ...] = (".vti", ".dream3d", ".h5", ".npy")
_LAYOUTS = ("xyzc", "cxyz")
_ANGLE_UNITS = ("radians", "degrees")
_UNINDEXED = ("error", "keep")
_LISTED = 10  # IDs named in a message before "…"


@dataclass(frozen=True, eq=False)
class VolumeElement:
    """One volume element of crystal orientations, as every reader returns it.

    ``eulers`` is ``(X, Y, Z, 3)`` float64 Bunge angles in radians, ``lattice`` ``"cubic"`` or
    ``"hexagonal"``, ``grain_ids`` ``(X, Y, Z)`` int64 or ``None``, ``size`` the physical edge
    lengths ``(3,)`` (file units; voxel counts when the file has none), ``source`` the file.
    """

    eulers: np.ndarray
    lattice: str
    grain_ids: np.ndarray | None
    size: np.ndarray
    source: str

    @property
    def cells(self) -> tuple[int, int, int]:
        """Voxels along x, y and z."""
        return tuple(int(n) for n in self.eulers.shape[:3])  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Dispatch and stacking
# --------------------------------------------------------------------------------------------


def read_ve(path: str | Path, lattice: str | None = None, **options: Any) -> VolumeElement:
    """Read a VE, choosing the reader by suffix (``.vti``, ``.dream3d``/``.h5``, ``.npy``).

    ``lattice`` is required for ``.npy`` files (they carry none) and optional elsewhere, where it
    fills in a lattice the file lacks and must agree with the one it has. ``options`` go to the
    reader (``material_yaml``; ``phase``, ``container``, ``unindexed``; ``layout``, ``angles``).
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix == ".vti":
        return read_vti(file, lattice=lattice, **options)
    if suffix in (".dream3d", ".h5"):
        return read_dream3d(file, lattice=lattice, **options)
    if suffix == ".npy":
        if lattice is None:
            raise InputError(
                file, "lattice", "a .npy array carries no lattice: give 'cubic' or 'hexagonal'"
            )
        return read_npy(file, lattice, **options)
    raise InputError(
        file, "extension", f"expected one of {', '.join(VE_SUFFIXES)}, found {suffix or 'none'!r}"
    )


def stack_ves(ves: Sequence[VolumeElement], source: str = "") -> np.ndarray:
    """Stack VEs into ``(N, X, Y, Z, 3)``, refusing mixed shapes or lattices.

    The first VE sets the shape and lattice; the error names the first VE that differs.
    """
    if len(ves) == 0:
        raise InputError(source or "VEs", "", "no volume elements to stack")
    first = ves[0]
    for index, ve in enumerate(ves):
        place = f"VE {index} ({ve.source})"
        if ve.eulers.shape != first.eulers.shape:
            raise InputError(
                source or ve.source,
                place,
                f"VEs of mixed shapes: {ve.eulers.shape[:3]} voxels, but VE 0 ({first.source}) "
                f"has {first.eulers.shape[:3]}",
            )
        if ve.lattice != first.lattice:
            raise InputError(
                source or ve.source,
                place,
                f"VEs of mixed lattices: {ve.lattice}, but VE 0 ({first.source}) is "
                f"{first.lattice}",
            )
    return np.stack([ve.eulers for ve in ves])


# --------------------------------------------------------------------------------------------
# DAMASK grids
# --------------------------------------------------------------------------------------------


def read_vti(
    path: str | Path, material_yaml: str | Path | None = None, *, lattice: str | None = None
) -> VolumeElement:
    """Read a DAMASK grid (``.vti`` with a ``material`` array) and its ``material.yaml``.

    ``material_yaml`` defaults to ``material.yaml`` beside the grid. Each voxel gets the
    orientation ``O`` of the first constituent of its material (further constituents of a
    multi-constituent homogenization are ignored: a VE voxel has one orientation) and the grain
    id is the material ID. The lattice comes from the ``lattice`` symbol of the constituents'
    phases; phases of one family (e.g. ``cF`` and ``cI``) are fine, different families are
    refused. ``lattice`` fills in the family when the constituents name phases the file does not
    define (DAMASK's test files use ``phase: n/a`` placeholders) and must agree otherwise.
    """
    file = Path(path)
    grid = _load_geom_grid(file)
    yaml_file = (
        Path(material_yaml) if material_yaml is not None else file.with_name("material.yaml")
    )
    config = _load_material_config(yaml_file, file)
    materials = config.get("material")
    if not isinstance(materials, list) or not materials:
        raise InputError(yaml_file, "material", "expected a non-empty list of materials")
    ids, voxel_index = np.unique(grid.material, return_inverse=True)
    _check_material_ids(ids, len(materials), file, yaml_file)
    quaternions, phase_names = _first_constituents(materials, ids, yaml_file)
    family = _vti_lattice(phase_names, config.get("phase"), lattice, yaml_file)
    grain_eulers = quaternions_to_eulers(quaternions)
    eulers = grain_eulers[voxel_index.reshape(grid.material.shape)]
    return VolumeElement(
        eulers=np.ascontiguousarray(eulers, dtype=np.float64),
        lattice=family,
        grain_ids=np.asarray(grid.material, dtype=np.int64),
        size=np.asarray(grid.size, dtype=np.float64),
        source=str(file),
    )


def write_damask_grid(
    directory: str | Path,
    grain_ids: np.ndarray,
    grain_eulers: np.ndarray,
    size: Sequence[float] | np.ndarray,
    phase_name: str,
    phase: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write ``grid.vti`` and ``material.yaml`` for ``DAMASK_grid`` into ``directory``.

    ``grain_ids`` ``(X, Y, Z)`` index ``grain_eulers`` ``(G, 3)`` (Bunge, radians); material
    ``g`` of the YAML file is grain ``g`` with its orientation as damask quaternion, one
    constituent of ``phase_name`` under a single-crystal homogenization ``SX`` (``pass``).
    ``phase`` is the DAMASK phase definition and must carry a ``lattice`` symbol
    (:data:`DAMASK_LATTICE_SYMBOLS`). Each file is written under a temporary name and renamed,
    so no half-written file is left behind. Returns the paths of the grid and the material file.
    """
    import damask

    out = Path(directory)
    ids, eulers = _checked_grains(grain_ids, grain_eulers, out)
    cell_size = _checked_size(size, out)
    phase_config = _checked_phase(phase_name, phase, out)
    out.mkdir(parents=True, exist_ok=True)
    grid_path, material_path = out / "grid.vti", out / "material.yaml"

    grid = damask.GeomGrid(material=ids, size=cell_size, comments="latentmech.ve.io")
    grid_tmp = out / f".grid.{os.getpid()}.tmp.vti"
    grid.save(grid_tmp)
    os.replace(grid_tmp, grid_path)

    config = damask.ConfigMaterial(
        homogenization={"SX": {"N_constituents": 1, "mechanical": {"type": "pass"}}},
        phase={phase_name: phase_config},
    ).material_add(O=eulers_to_quaternions(eulers), phase=phase_name, homogenization="SX")
    material_tmp = out / f".material.{os.getpid()}.tmp.yaml"
    config.save(material_tmp)
    os.replace(material_tmp, material_path)
    return grid_path, material_path


def _load_geom_grid(file: Path) -> Any:
    """``damask.GeomGrid.load`` with its errors rephrased for the user."""
    import damask

    if not file.is_file():
        raise InputError(file, "path", "file not found")
    with file.open("rb") as handle:
        head = handle.read(1024)
    if b"<VTKFile" not in head or b"ImageData" not in head:
        raise InputError(file, "header", "not a VTK XML ImageData (.vti) file")
    try:
        return damask.GeomGrid.load(file)
    except KeyError as exc:
        if '"material"' not in str(exc):
            raise InputError(file, "", f"not a readable VTK ImageData file ({exc})") from exc
        labels = damask.VTK.load(file).labels.get("Cell Data", [])
        raise InputError(
            file,
            "cell data",
            "no 'material' array of material IDs (DAMASK grid); cell arrays found: "
            f"{', '.join(labels) or 'none'}",
        ) from exc


def _load_material_config(yaml_file: Path, grid_file: Path) -> Any:
    """``damask.ConfigMaterial.load`` with its errors rephrased."""
    import damask
    import yaml

    if not yaml_file.is_file():
        raise InputError(
            yaml_file,
            "path",
            f"material configuration of {grid_file.name} not found (pass material_yaml=)",
        )
    try:
        config = damask.ConfigMaterial.load(yaml_file)
    except (yaml.YAMLError, TypeError, ValueError) as exc:
        raise InputError(yaml_file, "", f"not a readable DAMASK material.yaml: {exc}") from exc
    return config


def _check_material_ids(ids: np.ndarray, count: int, grid_file: Path, yaml_file: Path) -> None:
    """Every material ID of the grid must index an entry of ``material:``."""
    missing = ids[(ids < 0) | (ids >= count)]
    if missing.size:
        raise InputError(
            grid_file,
            "material array",
            f"{missing.size} material ID(s) missing from {yaml_file} (it defines IDs 0 to "
            f"{count - 1}): {_listing(missing)}",
        )


def _first_constituents(
    materials: list, ids: np.ndarray, yaml_file: Path
) -> tuple[np.ndarray, list[str]]:
    """Orientation (unit quaternion, w ≥ 0) and phase name of each used material's first part."""
    firsts = [_first_constituent(materials[i]) for i in ids]
    no_orientation = [int(i) for i, c in zip(ids, firsts, strict=True) if "O" not in c]
    if no_orientation:
        raise InputError(
            yaml_file,
            f"material {_listing(np.array(no_orientation))}",
            f"{len(no_orientation)} material(s) used by the grid have no orientation 'O' in "
            "their first constituent",
        )
    try:
        quaternions = np.array([c["O"] for c in firsts], dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError) as exc:
        raise InputError(
            yaml_file, "material: constituents: O", "expected quaternions [w, x, y, z]"
        ) from exc
    norms = np.linalg.norm(quaternions, axis=-1)
    bad = ids[~np.isclose(norms, 1.0, atol=1e-6)]
    if bad.size:
        raise InputError(
            yaml_file,
            f"material {_listing(bad)}",
            f"{bad.size} orientation(s) 'O' are not unit quaternions",
        )
    quaternions /= norms[:, None]
    quaternions *= np.where(quaternions[:, :1] < 0, -1.0, 1.0)
    return quaternions, [str(c.get("phase", "")) for c in firsts]


def _first_constituent(material: Any) -> dict:
    """The first constituent of a material entry, ``{}`` when there is none."""
    if not isinstance(material, Mapping):
        return {}
    constituents = material.get("constituents")
    if not isinstance(constituents, list) or not constituents:
        return {}
    first = constituents[0]
    return first if isinstance(first, Mapping) else {}


def _vti_lattice(phase_names: list[str], phases: Any, lattice: str | None, yaml_file: Path) -> str:
    """The one lattice family of the phases the grid's materials use."""
    phases = phases if isinstance(phases, Mapping) else {}
    requested = lattice_family(lattice, source="lattice") if lattice is not None else None
    used = sorted(set(phase_names))
    undefined = [name for name in used if not isinstance(phases.get(name), Mapping)]
    families: dict[str, str] = {}
    for name in sorted(set(used) - set(undefined)):  # a handful of phases
        symbol = phases[name].get("lattice")
        if symbol is None:
            raise InputError(yaml_file, f"phase: {name}", "no 'lattice' symbol")
        families[name] = lattice_family(str(symbol), source=f"{yaml_file} (phase: {name}: lattice)")
    if undefined and requested is None:
        raise InputError(
            yaml_file,
            "phase",
            f"the grid's materials use phase(s) {undefined} that are not defined (defined: "
            f"{sorted(phases) or 'none'}): pass lattice= to say which lattice the VE has",
        )
    distinct = sorted(set(families.values()))
    if len(distinct) > 1:
        detail = ", ".join(f"{name} {family}" for name, family in families.items())
        raise InputError(
            yaml_file,
            "phase",
            f"the grid mixes lattices ({detail}); the VE study handles single-phase VEs of one "
            "lattice",
        )
    if requested is not None and distinct and distinct[0] != requested:
        raise InputError(
            yaml_file, "phase", f"the phases are {distinct[0]}, but lattice={lattice!r} was given"
        )
    return requested if requested is not None else distinct[0]


def _checked_grains(
    grain_ids: np.ndarray, grain_eulers: np.ndarray, out: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Grain ids ``(X, Y, Z)`` in ``0 … G-1`` and Euler angles ``(G, 3)`` in range."""
    ids = np.asarray(grain_ids)
    eulers = np.asarray(grain_eulers, dtype=np.float64)
    if ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(
            out, "grain_ids", f"expected integers (X, Y, Z), got {ids.dtype} {ids.shape}"
        )
    if eulers.ndim != 2 or eulers.shape[1] != 3:
        raise InputError(out, "grain_eulers", f"expected (grains, 3), got {eulers.shape}")
    outside = np.unique(ids[(ids < 0) | (ids >= len(eulers))])
    if outside.size:
        raise InputError(
            out,
            "grain_ids",
            f"{outside.size} grain id(s) have no orientation (grain_eulers has {len(eulers)} "
            f"rows): {_listing(outside)}",
        )
    check_euler_range(eulers, source=str(out), where="grain_eulers")
    return ids.astype(np.int64), eulers


def _checked_size(size: Sequence[float] | np.ndarray, out: Path) -> np.ndarray:
    """Three positive finite edge lengths."""
    edges = np.asarray(size, dtype=np.float64)
    if edges.shape != (3,) or not np.all(np.isfinite(edges)) or np.any(edges <= 0):
        raise InputError(out, "size", f"expected three positive edge lengths, got {size!r}")
    return edges


def _checked_phase(phase_name: str, phase: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """A DAMASK phase definition with a lattice symbol of the wing's families."""
    if not phase_name or not isinstance(phase, Mapping):
        raise InputError(out, "phase", "expected a phase name and a phase definition mapping")
    symbol = phase.get("lattice")
    if symbol not in DAMASK_LATTICE_SYMBOLS:
        raise InputError(
            out,
            f"phase {phase_name}: lattice",
            f"expected one of {', '.join(DAMASK_LATTICE_SYMBOLS)}, got {symbol!r}",
        )
    return dict(phase)


# --------------------------------------------------------------------------------------------
# DREAM.3D
# --------------------------------------------------------------------------------------------


def read_dream3d(
    path: str | Path,
    phase: int | None = None,
    *,
    lattice: str | None = None,
    container: str | None = None,
    unindexed: str = "error",
) -> VolumeElement:
    """Read cell-wise ``EulerAngles`` (and ``FeatureIds``) of a DREAM.3D file, v7 or v8 layout.

    v7 keeps data containers under ``/DataContainers`` with the geometry in
    ``<dc>/_SIMPL_GEOMETRY/{DIMENSIONS,SPACING}``; v8 under ``/DataStructure`` with it in the
    attributes ``_DIMENSIONS``/``_SPACING`` of the container. Cell arrays are stored
    ``(z, y, x, components)`` and returned ``(x, y, z, …)`` (as ``damask.GeomGrid.load_DREAM3D``
    does). The container is the one holding a cell array ``EulerAngles`` (``container=`` names
    it when several do); ``FeatureIds`` become the grain ids (``None`` without them).

    Lattice: from ``CrystalStructures`` (code 0 hexagonal 6/mmm, 1 cubic m-3m; other symmetries
    are refused) of the container's ensemble data, else of the only other container that has it
    (synthetic volumes keep it with their ``StatsGeneratorDataContainer``). Voxels of phases with
    different lattices are refused unless ``phase=`` picks the phase whose lattice the VE takes
    (the VE study is single-phase: voxels of the other phases keep their stored orientations).
    Without ``CrystalStructures`` (e.g. EBSD imports), ``lattice=`` is required and applies to
    all phases. DREAM.3D phase 0 marks unknown/unindexed voxels; they are refused by default,
    ``unindexed="keep"`` keeps them (with whatever angles the file stores) without letting them
    choose the lattice.
    """
    import h5py

    file = Path(path)
    if not file.is_file():
        raise InputError(file, "path", "file not found")
    if unindexed not in _UNINDEXED:
        raise InputError(file, "unindexed", f"expected one of {_UNINDEXED}, got {unindexed!r}")
    try:
        handle = h5py.File(file, "r")
    except OSError as exc:
        raise InputError(file, "", f"not a readable HDF5 (DREAM.3D) file: {exc}") from exc
    with handle:
        angles_path = _find_euler_angles(handle, file, container)
        cells_group = handle[angles_path].parent
        dc = cells_group.parent
        eulers = _cell_array(handle[angles_path], file)
        grain_ids = _optional_cell_array(cells_group, "FeatureIds", eulers.shape[:3], file)
        phases = _optional_cell_array(cells_group, "Phases", eulers.shape[:3], file)
        size = _dream3d_size(dc, eulers.shape[:3], file)
        structures = _crystal_structures(dc)
        names = _phase_names(dc)
    phases = np.ones(eulers.shape[:3], dtype=np.int64) if phases is None else phases
    family = _dream3d_lattice(phases, structures, names, phase, lattice, unindexed, file)
    check_euler_range(eulers, source=str(file), where=angles_path)
    return VolumeElement(
        eulers=eulers,
        lattice=family,
        grain_ids=grain_ids,
        size=size,
        source=str(file),
    )


def _find_euler_angles(handle: Any, file: Path, container: str | None) -> str:
    """Path of the cell array ``EulerAngles`` ``(z, y, x, 3)`` in the data containers."""
    import h5py

    roots = [name for name in ("DataContainers", "DataStructure") if name in handle]
    if not roots:
        raise InputError(
            file,
            "/",
            "no DREAM.3D data containers (/DataContainers in v7, /DataStructure in v8); "
            f"top-level groups: {sorted(handle)}",
        )
    found: list[str] = []
    for root in roots:
        for dc_name, dc in handle[root].items():
            if not isinstance(dc, h5py.Group) or (container is not None and dc_name != container):
                continue
            found += [
                f"{root}/{dc_name}/{group_name}/EulerAngles"
                for group_name, group in dc.items()
                if isinstance(group, h5py.Group)
                and isinstance(group.get("EulerAngles"), h5py.Dataset)
                and group["EulerAngles"].ndim == 4
            ]
    if not found:
        where = f"data container {container!r}" if container else "any data container"
        arrays = _cell_array_names(handle, roots)
        raise InputError(
            file,
            "EulerAngles",
            f"no cell array 'EulerAngles' (z, y, x, 3) in {where} under /{' or /'.join(roots)}: "
            f"the file has no orientations (cell arrays found: {', '.join(arrays) or 'none'})",
        )
    containers = sorted({p.split("/")[1] for p in found})
    if len(found) > 1:
        raise InputError(
            file,
            "EulerAngles",
            f"several cell arrays 'EulerAngles' ({', '.join(found)}): pass container= (one of "
            f"{containers})",
        )
    return found[0]


def _cell_array_names(handle: Any, roots: list[str]) -> list[str]:
    """Paths (below the root) of the 4D cell arrays of every data container, for messages."""
    import h5py

    names: list[str] = []
    for root in roots:
        handle[root].visititems(
            lambda name, obj: (
                names.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 4 else None
            )
        )
    return names


def _cell_array(dataset: Any, file: Path) -> np.ndarray:
    """A ``(z, y, x, 3)`` float dataset as ``(x, y, z, 3)`` float64."""
    if dataset.shape[-1] != 3 or not np.issubdtype(dataset.dtype, np.floating):
        raise InputError(
            file, dataset.name, f"expected float (z, y, x, 3), got {dataset.dtype} {dataset.shape}"
        )
    data = np.asarray(dataset[()], dtype=np.float64)
    return np.ascontiguousarray(data.transpose(2, 1, 0, 3))


def _optional_cell_array(
    group: Any, name: str, cells: tuple[int, ...], file: Path
) -> np.ndarray | None:
    """A one-component integer cell array ``(z, y, x, 1)`` as ``(x, y, z)`` int64, if present."""
    dataset = group.get(name)
    if dataset is None:
        return None
    expected = (*cells[::-1], 1)
    if dataset.shape != expected or not np.issubdtype(dataset.dtype, np.integer):
        raise InputError(
            file,
            dataset.name,
            f"expected integers of shape {expected} like EulerAngles, got {dataset.dtype} "
            f"{dataset.shape}",
        )
    return np.ascontiguousarray(np.asarray(dataset[()], dtype=np.int64)[..., 0].transpose(2, 1, 0))


def _dream3d_size(dc: Any, cells: tuple[int, ...], file: Path) -> np.ndarray:
    """Physical size ``DIMENSIONS × SPACING`` (voxel counts when there is no geometry)."""
    if "_DIMENSIONS" in dc.attrs and "_SPACING" in dc.attrs:  # v8
        dimensions, spacing = dc.attrs["_DIMENSIONS"], dc.attrs["_SPACING"]
        where = f"{dc.name} attributes _DIMENSIONS"
    elif "_SIMPL_GEOMETRY/DIMENSIONS" in dc and "_SIMPL_GEOMETRY/SPACING" in dc:  # v7
        dimensions = dc["_SIMPL_GEOMETRY/DIMENSIONS"][()]
        spacing = dc["_SIMPL_GEOMETRY/SPACING"][()]
        where = f"{dc.name}/_SIMPL_GEOMETRY/DIMENSIONS"
    else:
        return np.asarray(cells, dtype=np.float64)
    dimensions = np.asarray(dimensions, dtype=np.int64).reshape(-1)
    if tuple(dimensions) != tuple(cells):
        raise InputError(
            file, where, f"geometry of {tuple(dimensions)} cells, but EulerAngles has {cells}"
        )
    return dimensions * np.asarray(spacing, dtype=np.float64).reshape(-1)


def _crystal_structures(dc: Any) -> np.ndarray | None:
    """``CrystalStructures`` of the container, else of the only other container holding it."""
    import h5py

    def in_container(group: Any) -> list[np.ndarray]:
        return [
            np.asarray(sub["CrystalStructures"][()]).reshape(-1)
            for sub in group.values()
            if isinstance(sub, h5py.Group)
            and isinstance(sub.get("CrystalStructures"), h5py.Dataset)
        ]

    own = in_container(dc)
    if own:
        return own[0]
    others = [
        array
        for other in dc.parent.values()
        if isinstance(other, h5py.Group) and other.name != dc.name
        for array in in_container(other)
    ]
    distinct = {tuple(array) for array in others}
    return others[0] if len(distinct) == 1 else None


def _phase_names(dc: Any) -> list[str]:
    """``PhaseName`` of the container's ensemble data, for messages (empty when absent)."""
    import h5py

    for sub in dc.values():
        names = sub.get("PhaseName") if isinstance(sub, h5py.Group) else None
        if isinstance(names, h5py.Dataset):
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names[()].reshape(-1)]
    return []


def _dream3d_lattice(
    phases: np.ndarray,
    structures: np.ndarray | None,
    names: list[str],
    phase: int | None,
    lattice: str | None,
    unindexed: str,
    file: Path,
) -> str:
    """The lattice family of the VE's (selected) phases."""
    requested = lattice_family(lattice, source="lattice") if lattice is not None else None
    present, counts = np.unique(phases, return_counts=True)
    if present.size and present[0] == 0 and unindexed == "error":
        raise InputError(
            file,
            "Phases",
            f"{counts[0]} voxel(s) of phase 0 (unknown/unindexed): pass unindexed='keep' to keep "
            "them",
        )
    indexed = {int(p): int(c) for p, c in zip(present, counts, strict=True) if p != 0}
    if phase is not None and phase not in indexed:
        raise InputError(
            file, "Phases", f"phase={phase} has no voxels; phases present: {sorted(indexed)}"
        )
    if not indexed:
        raise InputError(file, "Phases", "no indexed voxels: every voxel is phase 0 (unknown)")
    selected = [phase] if phase is not None else sorted(indexed)
    if structures is None:
        if requested is None:
            raise InputError(
                file,
                "CellEnsembleData/CrystalStructures",
                "no crystal structures in the file: pass lattice= ('cubic' or 'hexagonal')",
            )
        return requested
    families = {p: _structure_family(structures, names, p, file) for p in selected}
    distinct = sorted(set(families.values()))
    if len(distinct) > 1:
        detail = ", ".join(
            f"phase {p} {_phase_label(names, p)}{family} ({indexed[p]} voxels)"
            for p, family in families.items()
        )
        raise InputError(
            file,
            "Phases",
            f"the VE mixes lattices: {detail}; the VE study handles single-phase VEs: pass "
            "phase= to choose the phase whose lattice the VE takes",
        )
    family = distinct[0]
    if requested is not None and requested != family:
        raise InputError(
            file,
            "CellEnsembleData/CrystalStructures",
            f"the file says {family}, but lattice={lattice!r} was given",
        )
    return family


def _structure_family(structures: np.ndarray, names: list[str], phase: int, file: Path) -> str:
    """Lattice family of one DREAM.3D phase from its ``CrystalStructures`` code."""
    if phase >= structures.size:
        raise InputError(
            file,
            "CellEnsembleData/CrystalStructures",
            f"phase {phase} is used by voxels but only {structures.size} phases are described",
        )
    code = int(structures[phase])
    if code not in DREAM3D_CRYSTAL_STRUCTURES:
        other = _DREAM3D_OTHER_STRUCTURES.get(code, f"code {code}")
        raise InputError(
            file,
            "CellEnsembleData/CrystalStructures",
            f"phase {phase} {_phase_label(names, phase)}has crystal structure {other}; expected "
            "hexagonal-high (0) or cubic-high (1)",
        )
    return DREAM3D_CRYSTAL_STRUCTURES[code]


def _phase_label(names: list[str], phase: int) -> str:
    return f"{names[phase]!r} " if phase < len(names) else ""


# --------------------------------------------------------------------------------------------
# .npy arrays
# --------------------------------------------------------------------------------------------


def read_npy(
    path: str | Path,
    lattice: str,
    layout: str = "xyzc",
    angles: str = "radians",
    size: Sequence[float] | np.ndarray | None = None,
) -> VolumeElement:
    """Read Bunge Euler angles from a ``.npy`` array ``(X, Y, Z, 3)`` or ``(3, X, Y, Z)``.

    ``layout="cxyz"`` takes the angle first; ``angles="degrees"`` converts. The range check
    always runs, so degrees passed as radians are refused rather than silently wrapped. Without
    ``size`` the VE's size is its voxel counts (unit spacing). No grain ids.
    """
    file = Path(path)
    family = lattice_family(lattice, source="lattice")
    if layout not in _LAYOUTS:
        raise InputError(file, "layout", f"expected one of {_LAYOUTS}, got {layout!r}")
    if angles not in _ANGLE_UNITS:
        raise InputError(file, "angles", f"expected one of {_ANGLE_UNITS}, got {angles!r}")
    if not file.is_file():
        raise InputError(file, "path", "file not found")
    try:
        data = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(
            file, "array", f"not a readable .npy array without pickles: {exc}"
        ) from exc
    eulers = _npy_eulers(data, layout, angles, file)
    check_euler_range(eulers, source=str(file), where="array")
    cells = eulers.shape[:3]
    edges = np.asarray(cells, dtype=np.float64) if size is None else _checked_size(size, file)
    return VolumeElement(
        eulers=eulers, lattice=family, grain_ids=None, size=edges, source=str(file)
    )


def _npy_eulers(data: np.ndarray, layout: str, angles: str, file: Path) -> np.ndarray:
    """Check shape and dtype, move the angle axis last, convert to float64 radians."""
    expected = "(X, Y, Z, 3)" if layout == "xyzc" else "(3, X, Y, Z)"
    angle_axis = -1 if layout == "xyzc" else 0
    if data.ndim != 4 or data.shape[angle_axis] != 3:
        raise InputError(
            file, "array", f"expected Euler angles {expected} (layout={layout!r}), got {data.shape}"
        )
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise InputError(file, "array", f"expected real numbers, got dtype {data.dtype}")
    eulers = np.asarray(np.moveaxis(data, angle_axis, -1), dtype=np.float64)
    if not np.all(np.isfinite(eulers)):
        raise InputError(
            file, "array", f"{np.count_nonzero(~np.isfinite(eulers))} non-finite angles"
        )
    eulers = np.deg2rad(eulers) if angles == "degrees" else eulers
    return np.ascontiguousarray(eulers)


def _listing(values: np.ndarray) -> str:
    """The first few values of an array, for a message."""
    shown = ", ".join(str(int(v)) for v in values[:_LISTED])
    return shown + (", …" if values.size > _LISTED else "")
