"""VE readers and the DAMASK grid writer, on DAMASK's and DREAM.3D's real files and bad inputs.

References: damask's own loaders (``GeomGrid.load_DREAM3D``, ``ConfigMaterial.load_DREAM3D``),
``damask.Result`` orientations of real DAMASK runs, and the seed points of DAMASK's example grids.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import damask
import h5py
import numpy as np
import pytest

from latentmech.core.errors import InputError
from latentmech.ve import io
from latentmech.ve.io import VolumeElement

ALUMINIUM = {
    "lattice": "cF",
    "mechanical": {
        "output": ["F", "P", "O"],
        "elastic": {"type": "Hooke", "C_11": 106.75e9, "C_12": 60.41e9, "C_44": 28.34e9},
    },
}


def _quaternions(eulers: np.ndarray) -> np.ndarray:
    """damask's quaternions of Bunge angles (the reference conversion)."""
    return damask.Rotation.from_Euler_angles(eulers).as_quaternion()


def _same_rotations(q1: np.ndarray, q2: np.ndarray, atol: float = 1e-6) -> bool:
    """True when every pair of quaternions is the same rotation (q and −q alike)."""
    return bool(np.all(np.abs(np.abs(np.sum(q1 * q2, axis=-1)) - 1.0) < atol))


def _random_eulers(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random Bunge angles strictly inside their range."""
    return damask.Rotation.from_random(shape, rng_seed=int(rng.integers(1 << 30))).as_Euler_angles()


def _setup_file(result: Path, name: str, target: Path) -> Path:
    """Write one input file DAMASK stored in a result's /setup to ``target``."""
    with h5py.File(result, "r") as f:
        data = f["setup"][name][()]
    target.write_bytes(data[0] if isinstance(data, np.ndarray) else data)
    return target


def _material_yaml(path: Path, materials: list[dict], phases: dict | None = None) -> Path:
    config = {
        "homogenization": {"SX": {"N_constituents": 1, "mechanical": {"type": "pass"}}},
        "phase": {"Aluminum": ALUMINIUM} if phases is None else phases,
        "material": materials,
    }
    damask.YAML(config).save(path)
    return path


def _material(quaternion: list[float] | None, phase: str = "Aluminum") -> dict:
    constituent = {"phase": phase, "v": 1.0}
    if quaternion is not None:
        constituent["O"] = quaternion
    return {"homogenization": "SX", "constituents": [constituent]}


def _write_dream3d(
    path: Path,
    eulers_zyx: np.ndarray | None,
    *,
    version: str = "7.0",
    feature_ids: np.ndarray | None = None,
    phases: np.ndarray | None = None,
    structures: tuple[int, ...] | None = (999, 1),
    spacing: tuple[float, float, float] = (0.5, 0.5, 0.5),
    dimensions: tuple[int, int, int] | None = None,
    containers: tuple[str, ...] = ("SyntheticVolumeDataContainer",),
) -> Path:
    """A minimal DREAM.3D file in the v7 or v8 layout, cell arrays stored (z, y, x, c)."""
    root = "DataContainers" if version == "7.0" else "DataStructure"
    shape_zyx = (eulers_zyx if eulers_zyx is not None else feature_ids).shape[:3]
    dims = np.array(dimensions if dimensions is not None else shape_zyx[::-1], dtype=np.int64)
    with h5py.File(path, "w") as f:
        f.attrs["FileVersion"] = np.bytes_(version)
        for name in containers:
            dc = f.create_group(f"{root}/{name}")
            if version == "7.0":
                dc["_SIMPL_GEOMETRY/DIMENSIONS"] = dims
                dc["_SIMPL_GEOMETRY/SPACING"] = np.array(spacing, dtype=np.float32)
                dc["_SIMPL_GEOMETRY/ORIGIN"] = np.zeros(3, dtype=np.float32)
            else:
                dc.attrs["_DIMENSIONS"] = dims.astype(np.uint64)
                dc.attrs["_SPACING"] = np.array(spacing, dtype=np.float32)
                dc.attrs["_ORIGIN"] = np.zeros(3, dtype=np.float32)
            cells = dc.create_group("CellData")
            if eulers_zyx is not None:
                cells["EulerAngles"] = eulers_zyx.astype(np.float32)
            if feature_ids is not None:
                cells["FeatureIds"] = feature_ids.astype(np.int32)[..., None]
            if phases is not None:
                cells["Phases"] = phases.astype(np.int32)[..., None]
            if structures is not None:
                dc["CellEnsembleData/CrystalStructures"] = np.array(structures, np.uint32)[:, None]
    return path


# --------------------------------------------------------------------------------------------
# DAMASK grids: real files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cells", [16, 32, 64])
def test_read_vti_example_grids_match_seeds_and_material_yaml(real_data: Path, cells: int) -> None:
    """The voxel holding seed i is grain i (x, y, z order); each voxel has its grain's O."""
    folder = real_data / "damask" / "examples_grid"
    ve = io.read_vti(folder / f"20grains{cells}x{cells}x{cells}.vti")
    assert ve.cells == (cells, cells, cells)
    assert ve.lattice == "cubic"  # Aluminum, cF
    np.testing.assert_allclose(ve.size, 1.0)
    assert ve.eulers.dtype == np.float64 and ve.grain_ids.dtype == np.int64
    assert np.unique(ve.grain_ids).tolist() == list(range(20))

    seeds = np.loadtxt(folder / "20grains.seeds", skiprows=1)
    x, y, z = np.floor(seeds * cells).astype(int).T
    assert ve.grain_ids[x, y, z].tolist() == list(range(20))
    assert ve.grain_ids[z, y, x].tolist() != list(range(20))  # the order is not symmetric

    config = damask.ConfigMaterial.load(folder / "material.yaml")
    stored = np.array([m["constituents"][0]["O"] for m in config["material"]])
    assert _same_rotations(_quaternions(ve.eulers), stored[ve.grain_ids], atol=1e-12)
    assert ve.eulers[ve.grain_ids == 0].max() == pytest.approx(0.0, abs=1e-12)  # stored = identity


def test_read_vti_orientations_equal_damask_result(real_data: Path, tmp_path: Path) -> None:
    """Per-cell O of a real DAMASK run at increment 0 (cells in DAMASK's x-fastest order)."""
    result = tmp_path / "12grains6x7x8_tensionY.hdf5"
    shutil.copy(real_data / "damask" / "Result" / result.name, result)
    yaml_file = _setup_file(result, "material.yaml", tmp_path / "material.yaml")
    ve = io.read_vti(real_data / "damask" / "Result" / "12grains6x7x8.vti", material_yaml=yaml_file)

    assert ve.cells == (6, 7, 8)
    assert ve.lattice == "cubic"  # phases pheno_fcc (cF) and pheno_bcc (cI): one family
    np.testing.assert_allclose(ve.size, [0.75, 0.875, 1.0])
    placed = damask.Result(result).view(increments=0).place("O")
    stored = np.asarray(placed).reshape((6, 7, 8, 4), order="F")
    assert _same_rotations(_quaternions(ve.eulers), stored, atol=1e-12)


def test_read_vti_without_material_yaml_beside_it(real_data: Path) -> None:
    """Result/12grains6x7x8.vti has no material.yaml beside it: the error says so."""
    with pytest.raises(InputError, match=r"material configuration of 12grains6x7x8.vti not found"):
        io.read_vti(real_data / "damask" / "Result" / "12grains6x7x8.vti")


def test_read_vti_doctest_small_grid(real_data: Path, tmp_path: Path) -> None:
    """2×2×2 cells of one grain with the identity orientation, as DAMASK's run stored it."""
    ve = io.read_vti(real_data / "damask" / "doctest_Result" / "small.vti")
    assert ve.cells == (2, 2, 2) and ve.lattice == "cubic"
    assert np.all(ve.grain_ids == 0)
    np.testing.assert_allclose(ve.eulers, 0.0, atol=1e-12)
    np.testing.assert_allclose(ve.size, [1.0, 1.0, 1.0])
    result = tmp_path / "my_file.hdf5"
    shutil.copy(real_data / "damask" / "doctest_Result" / result.name, result)
    stored = np.asarray(damask.Result(result).view(increments=0).place("O")).reshape((2, 2, 2, 4))
    assert _same_rotations(_quaternions(ve.eulers), stored)


def test_read_vti_placeholder_phases_need_a_lattice(real_data: Path) -> None:
    """plastic_detect_changes names phase 'n/a' (filled in by DAMASK's tests): lattice= fills in."""
    folder = real_data / "damask" / "plastic_detect_changes"
    with pytest.raises(InputError, match=r"'n/a'.*pass lattice=") as error:
        io.read_vti(folder / "17grains.vti")
    assert "material.yaml" in str(error.value)

    ve = io.read_vti(folder / "17grains.vti", lattice="cubic")
    assert ve.cells == (10, 16, 12) and ve.lattice == "cubic"
    np.testing.assert_allclose(ve.size, [5e-6, 8e-6, 6e-6])
    assert np.unique(ve.grain_ids).tolist() == list(range(17))
    config = damask.ConfigMaterial.load(folder / "material.yaml")
    stored = np.array([m["constituents"][0]["O"] for m in config["material"]])
    assert _same_rotations(_quaternions(ve.eulers), stored[ve.grain_ids], atol=1e-12)
    with h5py.File(folder / "17grains_tensionX_dislotwin.hdf5", "r") as f:
        assert tuple(f["geometry"].attrs["cells"]) == ve.cells


def test_read_vti_given_lattice_must_agree(real_data: Path) -> None:
    with pytest.raises(InputError, match=r"phases are cubic, but lattice='hexagonal'"):
        io.read_vti(
            real_data / "damask" / "examples_grid" / "20grains16x16x16.vti", lattice="hexagonal"
        )


def test_read_vti_two_lattices_refused(real_data: Path, tmp_path: Path) -> None:
    """DAMASK's 2-phase grid (Aluminum cF + Precipitate hP) is not a single-phase VE."""
    result = real_data / "damask" / "Result" / "2phase_irregularGrid_tensionX_material.hdf5"
    grid = _setup_file(result, "2phase_irregularGrid.vti", tmp_path / "2phase.vti")
    _setup_file(result, "material.yaml", tmp_path / "material.yaml")
    with pytest.raises(InputError, match=r"Aluminum cubic, Precipitate hexagonal.*single-phase"):
        io.read_vti(grid)


# --------------------------------------------------------------------------------------------
# DAMASK grids: bad input
# --------------------------------------------------------------------------------------------


def test_read_vti_without_material_array(tmp_path: Path) -> None:
    grid = tmp_path / "nomaterial.vti"
    damask.VTK.from_image_data((2, 3, 4), (1.0, 1.0, 1.0)).set("phi", np.arange(24.0)).save(
        grid, parallel=False
    )
    _material_yaml(tmp_path / "material.yaml", [_material([1.0, 0.0, 0.0, 0.0])])
    with pytest.raises(InputError, match=r"no 'material' array.*cell arrays found: phi") as error:
        io.read_vti(grid)
    assert str(grid) in str(error.value)


def test_read_vti_not_a_vti(tmp_path: Path) -> None:
    grid = tmp_path / "garbage.vti"
    grid.write_text("not xml")
    with pytest.raises(InputError, match="not a VTK XML ImageData"):
        io.read_vti(grid)
    with pytest.raises(InputError, match="file not found"):
        io.read_vti(tmp_path / "missing.vti")


def test_read_vti_ids_missing_from_material_yaml(tmp_path: Path) -> None:
    damask.GeomGrid(np.arange(5).repeat(4).reshape(5, 2, 2), size=(1, 1, 1)).save(
        tmp_path / "g.vti"
    )
    yaml_file = _material_yaml(
        tmp_path / "mat.yaml", [_material([1.0, 0.0, 0.0, 0.0]), _material([0.0, 1.0, 0.0, 0.0])]
    )
    with pytest.raises(InputError) as error:
        io.read_vti(tmp_path / "g.vti", material_yaml=yaml_file)
    message = str(error.value)
    assert "g.vti" in message and "mat.yaml" in message
    assert "3 material ID(s) missing" in message and "2, 3, 4" in message


def test_read_vti_constituent_without_orientation(tmp_path: Path) -> None:
    damask.GeomGrid(np.array([0, 1, 2, 1]).reshape(2, 2, 1), size=(1, 1, 1)).save(
        tmp_path / "g.vti"
    )
    materials = [_material([1.0, 0.0, 0.0, 0.0]), _material(None), _material(None)]
    _material_yaml(tmp_path / "material.yaml", materials)
    with pytest.raises(InputError, match=r"material 1, 2.*2 material\(s\).*no orientation 'O'"):
        io.read_vti(tmp_path / "g.vti")


def test_read_vti_non_unit_quaternion(tmp_path: Path) -> None:
    damask.GeomGrid(np.zeros((2, 2, 1), int), size=(1, 1, 1)).save(tmp_path / "g.vti")
    _material_yaml(tmp_path / "material.yaml", [_material([2.0, 0.0, 0.0, 0.0])])
    with pytest.raises(InputError, match="not unit quaternions"):
        io.read_vti(tmp_path / "g.vti")


def test_read_vti_phase_lattices(tmp_path: Path) -> None:
    """cF + cI read as cubic; cF + hP refused; an unknown lattice symbol named with its phase."""
    damask.GeomGrid(np.array([0, 1, 1, 0]).reshape(2, 2, 1), size=(1, 1, 1)).save(
        tmp_path / "g.vti"
    )
    identity = [1.0, 0.0, 0.0, 0.0]
    materials = [_material(identity, "A"), _material(identity, "B")]

    def phases(a: str, b: str) -> dict:
        return {"A": {**ALUMINIUM, "lattice": a}, "B": {**ALUMINIUM, "lattice": b}}

    _material_yaml(tmp_path / "material.yaml", materials, phases("cF", "cI"))
    assert io.read_vti(tmp_path / "g.vti").lattice == "cubic"
    _material_yaml(tmp_path / "material.yaml", materials, phases("hP", "hP"))
    assert io.read_vti(tmp_path / "g.vti").lattice == "hexagonal"
    _material_yaml(tmp_path / "material.yaml", materials, phases("cF", "hP"))
    with pytest.raises(InputError, match="A cubic, B hexagonal"):
        io.read_vti(tmp_path / "g.vti")
    _material_yaml(tmp_path / "material.yaml", materials, phases("cF", "tI"))
    with pytest.raises(InputError, match=r"phase: B: lattice.*unknown lattice 'tI'"):
        io.read_vti(tmp_path / "g.vti")


def test_read_vti_unreadable_yaml(tmp_path: Path) -> None:
    damask.GeomGrid(np.zeros((2, 2, 1), int), size=(1, 1, 1)).save(tmp_path / "g.vti")
    (tmp_path / "material.yaml").write_text("material: [unclosed\n")
    with pytest.raises(InputError, match=r"not a readable DAMASK material.yaml"):
        io.read_vti(tmp_path / "g.vti")


# --------------------------------------------------------------------------------------------
# Writing DAMASK grids
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("symbol", "family"), [("cF", "cubic"), ("hP", "hexagonal")])
def test_write_damask_grid_round_trip(tmp_path: Path, symbol: str, family: str) -> None:
    rng = np.random.default_rng(7)
    grain_eulers = _random_eulers(rng, (9,))
    grain_ids = rng.integers(0, 9, size=(5, 6, 7))
    phase = {**ALUMINIUM, "lattice": symbol}
    grid, material = io.write_damask_grid(
        tmp_path / "run", grain_ids, grain_eulers, (5e-6, 6e-6, 7e-6), "Metal", phase
    )
    assert (grid.name, material.name) == ("grid.vti", "material.yaml")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["grid.vti", "material.yaml"]

    ve = io.read_vti(grid)
    assert ve.lattice == family
    np.testing.assert_array_equal(ve.grain_ids, grain_ids)
    np.testing.assert_allclose(ve.size, [5e-6, 6e-6, 7e-6])
    assert _same_rotations(_quaternions(ve.eulers), _quaternions(grain_eulers)[grain_ids], 1e-12)

    config = damask.ConfigMaterial.load(material)
    assert config.is_complete
    assert config["phase"]["Metal"]["lattice"] == symbol
    stored = np.array([m["constituents"][0]["O"] for m in config["material"]])
    np.testing.assert_allclose(stored, _quaternions(grain_eulers), atol=1e-12)


def test_write_damask_grid_bad_input(tmp_path: Path) -> None:
    eulers = np.zeros((2, 3))
    ids = np.zeros((2, 2, 2), int)
    beyond = ids.copy()
    beyond[0, 0, 0] = 2
    with pytest.raises(InputError, match=r"1 grain id\(s\) have no orientation.*: 2"):
        io.write_damask_grid(tmp_path, beyond, eulers, (1, 1, 1), "Al", ALUMINIUM)
    with pytest.raises(InputError, match=r"lattice.*expected one of cF, cI, cP, hP"):
        io.write_damask_grid(tmp_path, ids, eulers, (1, 1, 1), "Al", {"lattice": "cubic"})
    with pytest.raises(InputError, match="size"):
        io.write_damask_grid(tmp_path, ids, eulers, (1, -1, 1), "Al", ALUMINIUM)
    with pytest.raises(InputError, match="degrees"):
        io.write_damask_grid(tmp_path, ids, np.full((2, 3), 45.0), (1, 1, 1), "Al", ALUMINIUM)
    with pytest.raises(InputError, match="grain_ids"):
        io.write_damask_grid(tmp_path, ids.astype(float), eulers, (1, 1, 1), "Al", ALUMINIUM)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# DREAM.3D: real files
# --------------------------------------------------------------------------------------------


def _dream3d(real_data: Path, name: str) -> Path:
    return real_data / "dream3d" / name


@pytest.mark.parametrize(
    ("stem", "options"),
    [("damask_measured", {"lattice": "cubic"}), ("damask_2phase_irregularGrid", {"phase": 1})],
)
def test_read_dream3d_v7_equals_v8(real_data: Path, stem: str, options: dict) -> None:
    v7 = io.read_dream3d(_dream3d(real_data, f"{stem}_v7.dream3d"), **options)
    v8 = io.read_dream3d(_dream3d(real_data, f"{stem}_v8.dream3d"), **options)
    np.testing.assert_array_equal(v7.eulers, v8.eulers)
    np.testing.assert_array_equal(v7.grain_ids, v8.grain_ids)
    np.testing.assert_array_equal(v7.size, v8.size)
    assert v7.lattice == v8.lattice == "cubic"


@pytest.mark.parametrize("version", ["v7", "v8"])
@pytest.mark.parametrize(
    ("stem", "options", "cells", "grains", "size"),
    [
        ("damask_measured", {"lattice": "cubic"}, (201, 101, 1), 621, (70.35, 35.35, 0.35)),
        ("damask_2phase_irregularGrid", {"phase": 1}, (13, 8, 10), 18, (10.4, 6.4, 8.0)),
    ],
)
def test_read_dream3d_matches_damask_loaders(
    real_data: Path, version: str, stem: str, options: dict, cells: tuple, grains: int, size: tuple
) -> None:
    """Grain ids equal damask's grain-wise grid, orientations its cell-wise material config."""
    path = _dream3d(real_data, f"{stem}_{version}.dream3d")
    ve = io.read_dream3d(path, **options)
    assert ve.cells == cells
    assert np.unique(ve.grain_ids).size == grains
    np.testing.assert_allclose(ve.size, size, rtol=1e-6)
    assert np.all((ve.eulers >= 0) & (ve.eulers <= [2 * np.pi, np.pi, 2 * np.pi]))

    grain_grid = damask.GeomGrid.load_DREAM3D(path, feature_IDs="FeatureIds")
    np.testing.assert_array_equal(ve.grain_ids, grain_grid.material)
    np.testing.assert_allclose(ve.size, grain_grid.size)
    cell_grid = damask.GeomGrid.load_DREAM3D(path)
    config = damask.ConfigMaterial.load_DREAM3D(str(path))
    stored = np.array([m["constituents"][0]["O"] for m in config["material"]])
    assert _same_rotations(_quaternions(ve.eulers), stored[cell_grid.material], atol=1e-12)


def test_read_vti_of_measured_grid_equals_its_dream3d(real_data: Path, tmp_path: Path) -> None:
    """DAMASK's measured.vti (cell-wise from measured.dream3d) read with damask's material
    config of that file gives, voxel by voxel, the orientations read_dream3d gives."""
    dream3d = _dream3d(real_data, "damask_measured_v7.dream3d")
    config = damask.ConfigMaterial.load_DREAM3D(str(dream3d))
    config["phase"] = {name: {"lattice": "cF"} for name in config["phase"]}
    config.save(tmp_path / "material.yaml")
    grid = real_data / "damask" / "GeomGrid" / "measured.vti"
    from_vti = io.read_vti(grid, material_yaml=tmp_path / "material.yaml")
    from_dream3d = io.read_dream3d(dream3d, lattice="cubic")
    assert from_vti.cells == from_dream3d.cells == (201, 101, 1)
    assert from_vti.lattice == from_dream3d.lattice
    np.testing.assert_allclose(from_vti.size, from_dream3d.size)
    assert _same_rotations(
        _quaternions(from_vti.eulers), _quaternions(from_dream3d.eulers), atol=1e-12
    )


def test_read_dream3d_equals_damask_grid_made_from_it(real_data: Path, tmp_path: Path) -> None:
    """The 2-phase DREAM.3D volume and the DAMASK grid of the run made from it, voxel by voxel."""
    result = real_data / "damask" / "Result" / "2phase_irregularGrid_tensionX_material.hdf5"
    grid = damask.GeomGrid.load(_setup_file(result, "2phase_irregularGrid.vti", tmp_path / "g.vti"))
    config = damask.ConfigMaterial.load(_setup_file(result, "material.yaml", tmp_path / "m.yaml"))
    stored = np.array([m["constituents"][0]["O"] for m in config["material"]])
    phase = np.array([m["constituents"][0]["phase"] for m in config["material"]])
    for version in ("v7", "v8"):
        path = _dream3d(real_data, f"damask_2phase_irregularGrid_{version}.dream3d")
        ve = io.read_dream3d(path, phase=1)
        assert _same_rotations(_quaternions(ve.eulers), stored[grid.material], atol=1e-12)
        # DREAM.3D phase 1 'Primary' became DAMASK's cF Aluminum, phase 2 its hP Precipitate
        with h5py.File(path, "r") as f:
            root = "DataContainers" if version == "v7" else "DataStructure"
            phases = f[f"{root}/SyntheticVolumeDataContainer/CellData/Phases"][()]
        phases = phases[..., 0].transpose(2, 1, 0)
        assert set(phase[grid.material][phases == 1]) == {"Aluminum"}
        assert set(phase[grid.material][phases == 2]) == {"Precipitate"}
        assert config["phase"]["Aluminum"]["lattice"] == "cF"
        assert config["phase"]["Precipitate"]["lattice"] == "hP"


@pytest.mark.parametrize("version", ["v7", "v8"])
def test_read_dream3d_two_phases(real_data: Path, version: str) -> None:
    path = _dream3d(real_data, f"damask_2phase_irregularGrid_{version}.dream3d")
    with pytest.raises(InputError) as error:
        io.read_dream3d(path)
    message = str(error.value)
    assert path.name in message and "pass phase=" in message
    assert "phase 1 'Primary' cubic (700 voxels)" in message
    assert "phase 2 'Precipitate' hexagonal (340 voxels)" in message

    primary, precipitate = io.read_dream3d(path, phase=1), io.read_dream3d(path, phase=2)
    assert (primary.lattice, precipitate.lattice) == ("cubic", "hexagonal")
    np.testing.assert_array_equal(primary.eulers, precipitate.eulers)
    with pytest.raises(InputError, match=r"phase=3 has no voxels; phases present: \[1, 2\]"):
        io.read_dream3d(path, phase=3)
    with pytest.raises(InputError, match="file says cubic, but lattice='hexagonal'"):
        io.read_dream3d(path, phase=1, lattice="hexagonal")


@pytest.mark.parametrize("version", ["v7", "v8"])
def test_read_dream3d_without_crystal_structures_needs_lattice(
    real_data: Path, version: str
) -> None:
    path = _dream3d(real_data, f"damask_measured_{version}.dream3d")
    with pytest.raises(InputError, match="no crystal structures in the file: pass lattice="):
        io.read_dream3d(path)
    assert io.read_dream3d(path, lattice="hexagonal").lattice == "hexagonal"


@pytest.mark.parametrize(
    "name",
    [
        "DREAM3D_Data_FindFeatureSizes_TestData.dream3d",
        "DREAM3D_Data_CubicSingleEquiaxed_stats.dream3d",
    ],
)
def test_read_dream3d_files_without_orientations(real_data: Path, name: str) -> None:
    """DREAM3D_Data's files hold feature ids or statistics only: the error says what is missing."""
    with pytest.raises(InputError, match=r"no cell array 'EulerAngles'.*no orientations") as error:
        io.read_dream3d(_dream3d(real_data, name))
    assert name in str(error.value)


def test_read_dream3d_lists_cell_arrays_found(real_data: Path) -> None:
    path = _dream3d(real_data, "DREAM3D_Data_FindFeatureSizes_TestData.dream3d")
    with pytest.raises(
        InputError, match=r"cell arrays found: DataContainer/CellData/Data, .*FeatureIds"
    ):
        io.read_dream3d(path)


# --------------------------------------------------------------------------------------------
# DREAM.3D: synthetic files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["7.0", "8.0"])
def test_read_dream3d_axis_order(tmp_path: Path, version: str) -> None:
    """Stored (z, y, x, c); read (x, y, z, c); size = dimensions × spacing."""
    x, y, z = np.meshgrid(np.arange(4), np.arange(3), np.arange(2), indexing="ij")
    eulers_xyz = np.stack([0.1 * x, 0.2 * y, 0.3 * z], axis=-1)
    ids_xyz = 100 * x + 10 * y + z
    path = _write_dream3d(
        tmp_path / "v.dream3d",
        eulers_xyz.transpose(2, 1, 0, 3),
        version=version,
        feature_ids=ids_xyz.transpose(2, 1, 0),
        phases=np.ones((2, 3, 4)),
        spacing=(0.5, 0.25, 2.0),
    )
    ve = io.read_dream3d(path)
    assert ve.cells == (4, 3, 2) and ve.lattice == "cubic"
    np.testing.assert_allclose(ve.eulers, eulers_xyz, atol=1e-7)
    np.testing.assert_array_equal(ve.grain_ids, ids_xyz)
    np.testing.assert_allclose(ve.size, [2.0, 0.75, 4.0])


def test_read_dream3d_without_euler_angles(tmp_path: Path) -> None:
    path = _write_dream3d(tmp_path / "ids.dream3d", None, feature_ids=np.ones((2, 3, 4)))
    with pytest.raises(InputError) as error:
        io.read_dream3d(path)
    message = str(error.value)
    assert str(path) in message and "EulerAngles" in message and "FeatureIds" in message


def test_read_dream3d_optional_arrays(tmp_path: Path) -> None:
    """No FeatureIds: no grain ids. No Phases: one phase, the lattice of phase 1."""
    rng = np.random.default_rng(3)
    eulers = _random_eulers(rng, (2, 3, 4))
    path = _write_dream3d(tmp_path / "e.dream3d", eulers, structures=(999, 0))
    ve = io.read_dream3d(path)
    assert ve.grain_ids is None and ve.lattice == "hexagonal"
    np.testing.assert_allclose(ve.eulers, eulers.transpose(2, 1, 0, 3), atol=1e-6)

    # crystal structures kept only with the statistics container (as synthetic volumes do)
    with h5py.File(path, "a") as f:
        del f["DataContainers/SyntheticVolumeDataContainer/CellEnsembleData"]
        structures = np.array([[999], [1]], np.uint32)
        f["DataContainers/StatsGeneratorDataContainer/CellEnsembleData/CrystalStructures"] = (
            structures
        )
    assert io.read_dream3d(path).lattice == "cubic"


def test_read_dream3d_unindexed_voxels(tmp_path: Path) -> None:
    phases = np.ones((2, 3, 4))
    phases[0, 0, :2] = 0
    path = _write_dream3d(tmp_path / "u.dream3d", np.zeros((2, 3, 4, 3)), phases=phases)
    with pytest.raises(InputError, match=r"2 voxel\(s\) of phase 0 \(unknown/unindexed\)"):
        io.read_dream3d(path)
    assert io.read_dream3d(path, unindexed="keep").lattice == "cubic"
    with pytest.raises(InputError, match="unindexed"):
        io.read_dream3d(path, unindexed="drop")
    path = _write_dream3d(tmp_path / "z.dream3d", np.zeros((2, 3, 4, 3)), phases=0 * phases)
    with pytest.raises(InputError, match="no indexed voxels"):
        io.read_dream3d(path, unindexed="keep")


@pytest.mark.parametrize(
    ("code", "name"), [(3, "cubic-low"), (6, "orthorhombic"), (999, "unknown")]
)
def test_read_dream3d_unsupported_crystal_structure(tmp_path: Path, code: int, name: str) -> None:
    path = _write_dream3d(tmp_path / "s.dream3d", np.zeros((1, 2, 2, 3)), structures=(999, code))
    with pytest.raises(InputError, match=f"phase 1 has crystal structure {name}"):
        io.read_dream3d(path)


def test_read_dream3d_bad_files(tmp_path: Path) -> None:
    eulers = np.zeros((2, 3, 4, 3))
    with pytest.raises(InputError, match="geometry of"):
        io.read_dream3d(_write_dream3d(tmp_path / "g.dream3d", eulers, dimensions=(4, 3, 3)))
    degrees = np.full((2, 3, 4, 3), 90.0)
    with pytest.raises(InputError, match="look like degrees"):
        io.read_dream3d(_write_dream3d(tmp_path / "d.dream3d", degrees))
    two = _write_dream3d(tmp_path / "two.dream3d", eulers, containers=("A", "B"))
    with pytest.raises(InputError, match=r"several cell arrays 'EulerAngles'.*container="):
        io.read_dream3d(two)
    assert io.read_dream3d(two, container="B").cells == (4, 3, 2)
    (tmp_path / "text.dream3d").write_text("no hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        io.read_dream3d(tmp_path / "text.dream3d")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = eulers
    with pytest.raises(InputError, match=r"no DREAM.3D data containers"):
        io.read_dream3d(tmp_path / "other.h5")
    with pytest.raises(InputError, match="file not found"):
        io.read_dream3d(tmp_path / "missing.dream3d")


# --------------------------------------------------------------------------------------------
# .npy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "angles"), [("xyzc", "radians"), ("cxyz", "radians"), ("xyzc", "degrees")]
)
def test_read_npy_round_trip(tmp_path: Path, layout: str, angles: str) -> None:
    eulers = _random_eulers(np.random.default_rng(1), (4, 3, 2))
    stored = np.rad2deg(eulers) if angles == "degrees" else eulers
    stored = np.moveaxis(stored, -1, 0) if layout == "cxyz" else stored
    np.save(tmp_path / "ve.npy", stored.astype(np.float32 if angles == "degrees" else np.float64))
    ve = io.read_npy(tmp_path / "ve.npy", "cubic", layout=layout, angles=angles)
    assert ve.cells == (4, 3, 2) and ve.lattice == "cubic" and ve.grain_ids is None
    assert ve.eulers.dtype == np.float64 and ve.eulers.flags.c_contiguous
    np.testing.assert_allclose(ve.eulers, eulers, atol=1e-5 if angles == "degrees" else 0)
    np.testing.assert_array_equal(ve.size, [4.0, 3.0, 2.0])
    sized = io.read_npy(tmp_path / "ve.npy", "hP", layout=layout, angles=angles, size=(1, 2, 3))
    assert sized.lattice == "hexagonal"
    np.testing.assert_array_equal(sized.size, [1.0, 2.0, 3.0])


def test_read_npy_bad_input(tmp_path: Path) -> None:
    good = _random_eulers(np.random.default_rng(2), (2, 2, 2))
    np.save(tmp_path / "deg.npy", np.rad2deg(good) + 10.0)
    with pytest.raises(InputError, match="look like degrees") as error:
        io.read_npy(tmp_path / "deg.npy", "cubic")
    assert "deg.npy" in str(error.value)
    np.save(tmp_path / "neg.npy", good - 1.0)
    with pytest.raises(InputError, match="out of range"):
        io.read_npy(tmp_path / "neg.npy", "cubic")
    np.save(tmp_path / "big.npy", good * 100)
    with pytest.raises(InputError, match=r"out of range|degrees"):
        io.read_npy(tmp_path / "big.npy", "cubic")
    np.save(tmp_path / "ok.npy", good)
    with pytest.raises(InputError, match=r"expected Euler angles \(3, X, Y, Z\)"):
        io.read_npy(tmp_path / "ok.npy", "cubic", layout="cxyz")
    with pytest.raises(InputError, match="unknown lattice 'fcc-ish'"):
        io.read_npy(tmp_path / "ok.npy", "fcc-ish")
    with pytest.raises(InputError, match="layout"):
        io.read_npy(tmp_path / "ok.npy", "cubic", layout="zyxc")
    with pytest.raises(InputError, match="angles"):
        io.read_npy(tmp_path / "ok.npy", "cubic", angles="gradians")
    np.save(tmp_path / "flat.npy", good.reshape(8, 3))
    with pytest.raises(InputError, match=r"expected Euler angles \(X, Y, Z, 3\)"):
        io.read_npy(tmp_path / "flat.npy", "cubic")
    np.save(tmp_path / "nan.npy", np.where(good > 1, np.nan, good))
    with pytest.raises(InputError, match="non-finite"):
        io.read_npy(tmp_path / "nan.npy", "cubic")
    np.save(tmp_path / "obj.npy", np.empty((2, 2, 2, 3), dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="without pickles"):
        io.read_npy(tmp_path / "obj.npy", "cubic")
    with pytest.raises(InputError, match="file not found"):
        io.read_npy(tmp_path / "missing.npy", "cubic")


# --------------------------------------------------------------------------------------------
# Dispatch and stacking
# --------------------------------------------------------------------------------------------


def test_read_ve_dispatches_on_suffix(real_data: Path, tmp_path: Path) -> None:
    vti = io.read_ve(real_data / "damask" / "examples_grid" / "20grains16x16x16.vti")
    assert vti.cells == (16, 16, 16)
    dream3d = io.read_ve(_dream3d(real_data, "damask_2phase_irregularGrid_v8.dream3d"), phase=2)
    assert dream3d.lattice == "hexagonal"
    h5 = tmp_path / "copy.h5"
    shutil.copy(_dream3d(real_data, "damask_measured_v7.dream3d"), h5)
    assert io.read_ve(h5, lattice="cubic").cells == (201, 101, 1)
    np.save(tmp_path / "ve.npy", np.zeros((3, 2, 2, 2)))
    assert io.read_ve(tmp_path / "ve.npy", "cubic", layout="cxyz").cells == (2, 2, 2)
    with pytest.raises(InputError, match="carries no lattice"):
        io.read_ve(tmp_path / "ve.npy")
    with pytest.raises(
        InputError, match=r"expected one of \.vti, \.dream3d, \.h5, \.npy, found '\.ang'"
    ):
        io.read_ve(tmp_path / "scan.ang")


def _ve(shape: tuple[int, int, int], lattice: str = "cubic", name: str = "ve") -> VolumeElement:
    return VolumeElement(np.zeros((*shape, 3)), lattice, None, np.ones(3), name)


def test_stack_ves() -> None:
    ves = [_ve((2, 3, 4), name=f"ve{i}") for i in range(3)]
    ves[1].eulers[...] = 1.0
    stacked = io.stack_ves(ves, "collection")
    assert stacked.shape == (3, 2, 3, 4, 3)
    np.testing.assert_array_equal(stacked[1], 1.0)
    with pytest.raises(InputError, match=r"VE 2 \(odd\).*mixed shapes: \(2, 3, 5\).*\(2, 3, 4\)"):
        io.stack_ves([*ves[:2], _ve((2, 3, 5), name="odd"), _ve((1, 1, 1))], "collection")
    with pytest.raises(InputError, match=r"VE 1 \(hex\).*mixed lattices: hexagonal"):
        io.stack_ves([ves[0], _ve((2, 3, 4), "hexagonal", "hex")])
    with pytest.raises(InputError, match="no volume elements"):
        io.stack_ves([], "collection")
