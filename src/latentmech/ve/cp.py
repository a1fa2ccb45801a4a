"""Crystal-plasticity responses of volume elements: a Taylor model built in, DAMASK outside.

Section 2.3 of the paper deforms every VE with DAMASK in uniaxial tension along x to a strain of
0.01 at 1e-3 /s in 20 increments and keeps the volume-averaged stress of each increment (21
values with the start). This module gives that response in two ways:

``taylor`` (built in, the default)
    An elasto-viscoplastic Taylor (iso-strain) model with DAMASK's phenomenological power law
    (``phenopowerlaw``): every grain of a VE sees the VE's macroscopic strain; each grain's
    stress follows from its rotated elasticity and its slip (flow rule and hardening below);
    the macroscopic stress is the grain stresses averaged with the grains' voxel counts. The
    unknown macroscopic strain components are found each increment so that the macroscopic
    stresses that the load case leaves free are zero. Taylor's iso-strain assumption makes the
    flow stress an upper bound of a full-field (DAMASK_grid) result.
``damask``
    Writes the grid, ``material.yaml`` and load case, runs ``DAMASK_grid`` when it is on PATH
    and reads the volume-averaged Cauchy stress per increment from the DADF5 result.

Constitutive law (DAMASK ``phenopowerlaw``, ``src/phase_mechanical_plastic_phenopowerlaw.f90``)::

    τ_α = σ : P_α,  P_α = sym(d_α ⊗ n_α)
    γ̇_α = γ̇₀ |τ_α / ξ_α|^n sign(τ_α)
    ξ̇_α = h₀ (1 + h_int,α) s_α Σ_β q_αβ |γ̇_β|,  s = sign(1 − ξ/ξ∞) |1 − ξ/ξ∞|^a

with ``q_αβ`` built from the ``h_sl-sl`` values and DAMASK's interaction-type tables. Current
DAMASK applies the saturation factor ``s`` of the hardened system α (``saturation="hardened"``,
the default); DAMASK before 3.0 and Roters et al. (2010) apply it to the acting system β inside
the sum (``saturation="acting"``); both are available through :class:`TaylorOptions`.

Choices where the paper (or DAMASK) leaves freedom, each a parameter:

* Small strain, ``σ = C_rot : (ε − ε_p)``, no lattice rotation. At the paper's 1 % strain the
  difference to DAMASK's finite-strain formulation is below the resolution of the stress curve
  (elastic strains ~1e-3, rotations ~1e-2 rad); strains are engineering ``F − 1`` as DAMASK
  prescribes ``Ḟ``.
* Backward Euler per increment (DAMASK integrates the same way, with its own increments);
  ``TaylorOptions.substeps`` subdivides each increment. With the paper's 20 increments the
  Mg curve differs from an 8× finer integration by < 0.8 % (at the yield knee), < 0.1 % at 1 %.
* Non-Schmid terms (DAMASK's cI ``a_nonSchmid``) are ignored with a warning.
* Lateral boundary conditions (:class:`LoadCase` ``shear``): ``"free"`` drives all five other
  macroscopic stress components to zero (uniaxial stress); ``"fixed"`` drives only the two
  lateral normal stresses to zero and keeps the shear strains at zero, which is what DAMASK's
  usual ``tensionX.yaml`` (off-diagonal ``dot_F`` = 0) does.
* Twinning is not modelled (slip only); DAMASK's twin parameters are ignored with a warning.
* Only slip families whose interaction types are tabulated here are supported: cF {111}⟨110⟩ and
  {110}⟨110⟩, cI {110}⟨111⟩, all five hP families. The type tables are DAMASK's
  (``src/crystal.f90``: Madec & Kubin 2017 for cubic, Wang et al. 2014 for hexagonal).

Solver (all grains of many VEs at once, vectorised over grains; chunks of whole VEs run in
parallel processes): per backward-Euler step, one Newton iteration updates every grain stress
and the free macroscopic strains together (the grains' linearisations condensed onto each VE's
free strains), with steps capped so that no slip rate overshoots the power law by more than e²;
once near equilibrium ξ follows the slip rates by a fixed point (Anderson-accelerated); VEs that
do not converge are redone in halved steps, and as a last resort with a globally convergent
solver (per-grain Newton with a line search on the convex incremental potential, the free
strains by Newton with a line search on its macroscopic counterpart).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentmech.core.errors import InputError

log = logging.getLogger(__name__)

MPA = 1.0e6  #: Pa per MPa; parameters are SI (as in DAMASK), the solver works in MPa
AXES = {"x": 0, "y": 1, "z": 2}
LATTICES = ("cF", "cI", "hP")
#: slip systems per family of each lattice (DAMASK's order of families)
SLIP_FAMILIES = {"cF": (12, 6), "cI": (12, 12, 24), "hP": (3, 3, 6, 12, 6)}
#: families whose slip-slip interaction types are tabulated below (the rest are rejected)
SUPPORTED_FAMILIES = {"cF": 2, "cI": 1, "hP": 5}
_SQRT2 = np.sqrt(2.0)
#: Mandel (orthonormal) notation: component I ↔ tensor index pair, shear entries × √2
MANDEL_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_MANDEL_WEIGHTS = np.array([1.0, 1.0, 1.0, _SQRT2, _SQRT2, _SQRT2])

# Slip-slip interaction types (row: reacting/hardened system α, column: acting system β), in the
# system order of damask.Crystal.kinematics("slip") for cF and hP, and of DAMASK_grid 3.0 for cI
# (see _CI_SLIP_DAMASK_GRID); from DAMASK src/crystal.f90 (Madec & Kubin 2017, Tab. S4-1/S5-1;
# Wang et al. 2014, Tab. 3b). Type t selects value t of the phase's ``h_sl-sl`` list.
_CF_TYPES = """
 1  2  2  4  7  5  3  5  5  4  6  7 10 11 10 11 12 13
 2  1  2  7  4  5  6  4  7  5  3  5 10 11 12 13 10 11
 2  2  1  5  5  3  6  7  4  7  6  4 12 13 10 11 10 11
 4  7  6  1  2  2  4  6  7  3  5  5 10 11 11 10 13 12
 7  4  6  2  1  2  5  3  5  6  4  7 10 11 13 12 11 10
 5  5  3  2  2  1  7  6  4  6  7  4 12 13 11 10 11 10
 3  5  5  4  6  7  1  2  2  4  7  6 11 10 11 10 12 13
 6  4  7  5  3  5  2  1  2  7  4  6 11 10 13 12 10 11
 6  7  4  7  6  4  2  2  1  5  5  3 13 12 11 10 10 11
 4  6  7  3  5  5  4  7  6  1  2  2 11 10 10 11 13 12
 5  3  5  6  4  7  7  4  6  2  1  2 11 10 12 13 11 10
 7  6  4  6  7  4  5  5  3  2  2  1 13 12 10 11 11 10
10 10 12 10 10 12 11 11 13 11 11 13  1  8  9  9  9  9
11 11 13 11 11 13 10 10 12 10 10 12  8  1  9  9  9  9
10 12 10 11 13 11 11 13 11 10 12 10  9  9  1  8  9  9
11 13 11 10 12 10 10 12 10 11 13 11  9  9  8  1  9  9
12 10 10 13 11 11 12 10 10 13 11 11  9  9  9  9  1  8
13 11 11 12 10 10 13 11 11 12 10 10  9  9  9  9  8  1
"""
_CI_TYPES = """
1 3 6 6 7 5 4 2 4 2 7 5
3 1 6 6 4 2 7 5 7 5 4 2
6 6 1 3 5 7 2 4 5 7 2 4
6 6 3 1 2 4 5 7 2 4 5 7
7 5 4 2 1 3 6 6 2 4 7 5
4 2 7 5 3 1 6 6 5 7 4 2
5 7 2 4 6 6 1 3 7 5 2 4
2 4 5 7 6 6 3 1 4 2 5 7
5 7 4 2 2 4 7 5 1 3 6 6
2 4 7 5 5 7 4 2 3 1 6 6
7 5 2 4 7 5 2 4 6 6 1 3
4 2 5 7 4 2 5 7 6 6 3 1
"""
_HP_TYPES = """
 1  2  2  3  4  4  9 10  9  9 10  9 20 21 22 22 21 20 20 21 22 22 21 20 47 47 48 47 47 48
 2  1  2  4  3  4 10  9  9 10  9  9 22 22 21 20 20 21 22 22 21 20 20 21 47 48 47 47 48 47
 2  2  1  4  4  3  9  9 10  9  9 10 21 20 20 21 22 22 21 20 20 21 22 22 48 47 47 48 47 47
 7  8  8  5  6  6 11 12 11 11 12 11 23 24 25 25 24 23 23 24 25 25 24 23 49 49 50 49 49 50
 8  7  8  6  5  6 12 11 11 12 11 11 25 25 24 23 23 24 25 25 24 23 23 24 49 50 49 49 50 49
 8  8  7  6  6  5 11 11 12 11 11 12 24 23 23 24 25 25 24 23 23 24 25 25 50 49 49 50 49 49
18 19 18 16 17 16 13 14 14 15 14 14 26 26 27 28 28 27 29 29 27 28 28 27 51 52 51 51 52 51
19 18 18 17 16 16 14 13 14 14 15 14 28 27 26 26 27 28 28 27 29 29 27 28 51 51 52 51 51 52
18 18 19 16 16 17 14 14 13 14 14 15 27 28 28 27 26 26 27 28 28 27 29 29 52 51 51 52 51 51
18 19 18 16 17 16 15 14 14 13 14 14 29 29 27 28 28 27 26 26 27 28 28 27 51 52 51 51 52 51
19 18 18 17 16 16 14 15 14 14 13 14 28 27 29 29 27 28 28 27 26 26 27 28 51 51 52 51 51 52
18 18 19 16 16 17 14 14 15 14 14 13 27 28 28 27 29 29 27 28 28 27 26 26 52 51 51 52 51 51
44 45 46 41 42 43 37 38 39 40 38 39 30 31 32 32 32 33 34 35 32 32 32 36 53 54 55 53 54 56
46 45 44 43 42 41 37 39 38 40 39 38 31 30 36 32 32 32 35 34 33 32 32 32 56 54 53 55 54 53
45 46 44 42 43 41 39 37 38 39 40 38 32 36 30 31 32 32 32 33 34 35 32 32 56 53 54 55 53 54
45 44 46 42 41 43 38 37 39 38 40 39 32 32 31 30 36 32 32 32 35 34 33 32 53 56 54 53 55 54
46 44 45 43 41 42 38 39 37 38 39 40 32 32 32 36 30 31 32 32 32 33 34 35 54 56 53 54 55 53
44 46 45 41 43 42 39 38 37 39 38 40 33 32 32 32 31 30 36 32 32 32 35 34 54 53 56 54 53 55
44 45 46 41 42 43 40 38 39 37 38 39 34 35 32 32 32 36 30 31 32 32 32 33 53 54 56 53 54 55
46 45 44 43 42 41 40 39 38 37 39 38 35 34 33 32 32 32 31 30 36 32 32 32 55 54 53 56 54 53
45 46 44 42 43 41 39 40 38 39 37 38 32 33 34 35 32 32 32 36 30 31 32 32 55 53 54 56 53 54
45 44 46 42 41 43 38 40 39 38 37 39 32 32 35 34 33 32 32 32 31 30 36 32 53 55 54 53 56 54
46 44 45 43 41 42 38 39 40 38 39 37 32 32 32 33 34 35 32 32 32 36 30 31 54 55 53 54 56 53
44 46 45 41 43 42 39 38 40 39 38 37 36 32 32 32 35 34 33 32 32 32 31 30 54 53 55 54 53 56
68 68 69 66 66 67 64 64 65 64 65 65 60 61 61 60 62 62 60 63 63 60 62 62 57 58 58 59 58 58
68 69 68 66 67 66 65 64 64 65 64 64 62 62 60 61 61 60 62 62 60 63 63 60 58 57 58 58 59 58
69 68 68 67 66 66 64 65 64 64 65 64 63 60 62 62 60 61 61 60 62 62 60 63 58 58 57 58 58 59
68 68 69 66 66 67 64 64 65 64 64 65 60 63 63 60 62 62 60 61 61 60 62 62 59 58 58 57 58 58
68 69 68 66 67 66 65 64 64 65 64 64 62 62 60 63 63 60 62 62 60 61 61 60 58 59 58 58 57 58
69 68 68 67 66 66 64 65 64 64 65 64 61 60 62 62 60 63 63 60 62 62 60 61 58 58 59 58 58 57
"""
#: cI {110}⟨111⟩ systems (direction, plane) in the order DAMASK_grid 3.0 writes them (the
#: ``systems`` attribute of ``xi_sl`` in its results); damask.Crystal lists them differently.
_CI_SLIP_DAMASK_GRID = np.array(
    [
        [1, -1, 1, 0, 1, 1],
        [-1, -1, 1, 0, 1, 1],
        [1, 1, 1, 0, -1, 1],
        [-1, 1, 1, 0, -1, 1],
        [-1, 1, 1, 1, 0, 1],
        [-1, -1, 1, 1, 0, 1],
        [1, 1, 1, -1, 0, 1],
        [1, -1, 1, -1, 0, 1],
        [-1, 1, 1, 1, 1, 0],
        [-1, 1, -1, 1, 1, 0],
        [1, 1, 1, -1, 1, 0],
        [1, 1, -1, -1, 1, 0],
    ],
    dtype=float,
)


def _type_table(text: str) -> np.ndarray:
    values = np.array(text.split(), dtype=np.int64)
    size = round(np.sqrt(values.size))
    return values.reshape(size, size)


_INTERACTION_TYPES = {"cF": _type_table(_CF_TYPES), "cI": _type_table(_CI_TYPES),
                      "hP": _type_table(_HP_TYPES)}  # fmt: skip


class BackendUnavailableError(RuntimeError):
    """The requested CP backend cannot run here (e.g. ``DAMASK_grid`` is not installed)."""


BackendUnavailable = BackendUnavailableError


# ---------------------------------------------------------------------------------------------
# material parameters


@dataclass(frozen=True)
class PhenoPowerLaw:
    """One phase with DAMASK's ``phenopowerlaw`` slip and ``Hooke`` elasticity (SI units, Pa).

    Mirrors a DAMASK ``material.yaml`` phase entry (:meth:`from_damask_phase`,
    :meth:`to_damask_phase`): ``N_sl`` active systems per slip family (DAMASK's family order),
    ``xi_0_sl``/``xi_inf_sl`` initial and saturation resistance per family, ``h_0_sl_sl`` the
    reference hardening (``h_0_sl-sl``), ``h_sl_sl`` the interaction values indexed by DAMASK's
    interaction types (``h_sl-sl``), stress exponent ``n_sl``, hardening exponent ``a_sl``,
    reference shear rate ``dot_gamma_0_sl`` (1/s), optional per-family ``h_int``. Elasticity:
    ``C_11, C_12, C_44`` (cubic) plus ``C_13, C_33`` (hexagonal). ``N_sl = ()`` is an elastic
    phase. ``name`` is the phase label used when writing DAMASK input.
    """

    lattice: str
    C_11: float
    C_12: float
    C_44: float
    C_13: float | None = None
    C_33: float | None = None
    c_over_a: float | None = None
    N_sl: tuple[int, ...] = ()
    xi_0_sl: tuple[float, ...] = ()
    xi_inf_sl: tuple[float, ...] = ()
    h_0_sl_sl: float = 0.0
    h_sl_sl: tuple[float, ...] = ()
    n_sl: float = 20.0
    a_sl: float = 2.0
    dot_gamma_0_sl: float = 1.0e-3
    h_int: tuple[float, ...] | None = None
    name: str = "phase"
    references: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check_parameters(self)

    @property
    def hexagonal(self) -> bool:
        return self.lattice == "hP"

    @property
    def n_systems(self) -> int:
        return int(sum(self.N_sl))

    @classmethod
    def from_damask_phase(
        cls, phase: Mapping[str, Any], source: str | Path = "material.yaml", name: str = "phase"
    ) -> PhenoPowerLaw:
        """Parameters of a DAMASK ``material.yaml`` phase entry (``lattice``, ``mechanical``).

        Accepts the scalar form of DAMASK ≥ 3 and the legacy per-family lists when the values
        of the active families agree; a phase without ``plastic`` (or ``type: none``) is
        elastic. Twin parameters are ignored (slip only, with a warning); other plasticity
        types raise :class:`InputError` naming ``source`` and the phase.
        """
        return _phase_from_damask(phase, str(source), name)

    def to_damask_phase(self) -> dict[str, Any]:
        """This phase as a DAMASK ``material.yaml`` phase entry (scalars as DAMASK ≥ 3 wants)."""
        return _phase_to_damask(self)

    @classmethod
    def copper(cls) -> PhenoPowerLaw:
        """DAMASK's example copper: ``phenopowerlaw_Cu.yaml`` + ``Hooke_Cu.yaml`` (see :func:`copper`)."""
        return copper()

    @classmethod
    def magnesium(cls, pyramidal_a: bool = False) -> PhenoPowerLaw:
        """DAMASK's example magnesium slip set (see :func:`magnesium`)."""
        return magnesium(pyramidal_a)

    @classmethod
    def aluminium(cls) -> PhenoPowerLaw:
        """The phenopowerlaw aluminium of DAMASK's grid examples (see :func:`aluminium`)."""
        return aluminium()


def copper() -> PhenoPowerLaw:
    """Copper as in DAMASK's examples (``examples/config/phase/``).

    Slip: ``mechanical/plastic/phenopowerlaw_Cu.yaml`` (fitted by DAMASK to Takeuchi, Trans.
    JIM 16 (1975) 629, Fig. 3b, [111] and [001] single crystals); elasticity:
    ``mechanical/elastic/Hooke_Cu.yaml``; lattice ``cF`` (``Cu.yaml``).
    """
    return PhenoPowerLaw(
        lattice="cF", C_11=168.3e9, C_12=122.1e9, C_44=75.7e9, N_sl=(12,), xi_0_sl=(1.6e6,),
        xi_inf_sl=(96.4e6,), h_0_sl_sl=3.5e8, h_sl_sl=(1, 1, 5.123, 0.574, 1.123, 1.123, 1),
        n_sl=20.0, a_sl=0.6, dot_gamma_0_sl=3.0e-3, name="copper",
        references=("T. Takeuchi, Trans. JIM 16(10):629-640, 1975, "
                    "doi:10.2320/matertrans1960.16.629 (DAMASK phenopowerlaw_Cu.yaml)",),
    )  # fmt: skip


def aluminium() -> PhenoPowerLaw:
    """The phenopowerlaw ``Aluminum`` of DAMASK's ``examples/grid/material.yaml``.

    The same parameters run the phenopowerlaw results in DAMASK's test resources (the real
    DADF5 files this module is compared against).
    """
    return PhenoPowerLaw(
        lattice="cF", C_11=106.75e9, C_12=60.41e9, C_44=28.34e9, N_sl=(12,), xi_0_sl=(31.0e6,),
        xi_inf_sl=(63.0e6,), h_0_sl_sl=75.0e6, h_sl_sl=(1, 1, 1.4, 1.4, 1.4, 1.4, 1.4),
        n_sl=20.0, a_sl=2.25, dot_gamma_0_sl=1.0e-3, name="aluminium",
        references=("DAMASK examples/grid/material.yaml",),
    )  # fmt: skip


def magnesium(pyramidal_a: bool = False) -> PhenoPowerLaw:
    """Magnesium with DAMASK's ``phenopowerlaw_Mg.yaml`` slip parameters.

    Families (DAMASK order) basal ⟨a⟩ 3, prismatic ⟨a⟩ 3, 1st-order pyramidal ⟨a⟩ 0 (6 with
    ``pyramidal_a=True``, as DAMASK's file has them), 1st-order pyramidal ⟨c+a⟩ 0, 2nd-order
    pyramidal ⟨c+a⟩ 6: basal, prismatic and pyramidal ⟨c+a⟩ slip as the task asks. Critical
    resolved shear stresses 10/55/60/60 MPa saturating at 40/135/150/150 MPa, h₀ = 0.5 GPa,
    n = 20, a = 2.25, γ̇₀ = 1e-3 /s, all interactions 1. Source: DAMASK
    ``examples/config/phase/mechanical/plastic/phenopowerlaw_Mg.yaml`` (F. Wang et al., Acta
    Mater. 80 (2014) 77-93; the same set runs DAMASK's own test suite), the DAMASK group's Mg
    set that the paper's reference [48] (Liu et al., Int. J. Plast. 106 (2018) 203) builds on;
    its twin systems are left out (slip-only Taylor model). Elasticity ``Hooke_Mg.yaml`` and
    c/a = 1.6235 ``Mg.yaml`` (D. Tromans, IJRRAS 6 (2011) 462). Leaving pyramidal ⟨a⟩ out
    raises the Taylor curve of a random texture by about 0.3 % (it is seldom active at 60 MPa)
    and saves a third of the work.
    """
    pyr_a = 6 if pyramidal_a else 0
    # h_sl-sl: DAMASK's 69 hP interaction values, 1 where the active families interact
    values = np.full(69, 1.0)
    values[[*range(19, 46), *range(52, 56), *range(59, 63)]] = -1.0  # 1st-order <c+a> types
    return PhenoPowerLaw(
        lattice="hP", C_11=59.3e9, C_12=25.7e9, C_44=16.4e9, C_13=21.4e9, C_33=61.5e9,
        c_over_a=1.6235, N_sl=(3, 3, pyr_a, 0, 6), xi_0_sl=(10e6, 55e6, 60e6, 0.0, 60e6),
        xi_inf_sl=(40e6, 135e6, 150e6, 0.0, 150e6), h_0_sl_sl=0.5e9,
        h_sl_sl=tuple(float(v) for v in values), n_sl=20.0, a_sl=2.25, dot_gamma_0_sl=1.0e-3,
        name="magnesium",
        references=("F. Wang et al., Acta Mater. 80:77-93, 2014, "
                    "doi:10.1016/j.actamat.2014.07.048 (DAMASK phenopowerlaw_Mg.yaml)",
                    "D. Tromans, IJRRAS 6(4):462-483, 2011 (DAMASK Hooke_Mg.yaml)"),
    )  # fmt: skip


def _check_parameters(p: PhenoPowerLaw) -> None:
    """InputError for parameter sets DAMASK (or this model) would reject."""
    src = f"phase {p.name!r}"
    if p.lattice not in LATTICES:
        raise InputError(src, "lattice", f"lattice {p.lattice!r} not supported; "
                         f"expected one of {', '.join(LATTICES)}")  # fmt: skip
    if p.hexagonal and (p.C_13 is None or p.C_33 is None or p.c_over_a is None):
        raise InputError(src, "elastic", "hexagonal phases need C_13, C_33 and c/a")
    if p.hexagonal and not 1.0 <= p.c_over_a <= 2.0:  # type: ignore[operator]
        raise InputError(src, "c/a", f"c/a = {p.c_over_a} outside DAMASK's range [1, 2]")
    families = SLIP_FAMILIES[p.lattice]
    n_sl = tuple(p.N_sl)
    if len(n_sl) > len(families) or any(
        not 0 <= n <= m for n, m in zip(n_sl, families, strict=False)
    ):
        raise InputError(src, "N_sl", f"N_sl {list(n_sl)} does not fit the {p.lattice} slip "
                         f"families {list(families)}")  # fmt: skip
    if any(n for n in n_sl[SUPPORTED_FAMILIES[p.lattice] :]):
        raise InputError(src, "N_sl", f"slip families beyond the first "
                         f"{SUPPORTED_FAMILIES[p.lattice]} of {p.lattice} are not supported by "
                         "the Taylor model (no interaction table); use the damask backend")  # fmt: skip
    if not sum(n_sl):
        return
    for key in ("xi_0_sl", "xi_inf_sl"):
        values = getattr(p, key)
        if len(values) != len(n_sl):
            raise InputError(src, key, f"{key} needs one value per family ({len(n_sl)})")
        if any(v <= 0 for v, n in zip(values, n_sl, strict=True) if n):
            raise InputError(src, key, f"{key} must be positive for active families")
    for key in ("n_sl", "a_sl", "dot_gamma_0_sl"):
        if not getattr(p, key) > 0:
            raise InputError(src, key, f"{key} must be positive, got {getattr(p, key)}")
    if p.h_int is not None and len(p.h_int) != len(n_sl):
        raise InputError(src, "h_int", f"h_int needs one value per family ({len(n_sl)})")
    types = _active_types(p)
    if types.max() > len(p.h_sl_sl):
        raise InputError(src, "h_sl-sl", f"{len(p.h_sl_sl)} interaction values given, the "
                         f"active {p.lattice} families need {int(types.max())}")  # fmt: skip
    q = np.asarray(p.h_sl_sl, dtype=float)[types - 1]
    if (q < 0).any():
        raise InputError(src, "h_sl-sl", "negative interaction value for an active pair of "
                         "slip systems (DAMASK marks unused entries with -1)")  # fmt: skip


def _active_index(n_active: Sequence[int], n_max: Sequence[int]) -> np.ndarray:
    """Positions of the active systems in the lattice's full list (DAMASK's buildInteraction)."""
    starts = np.concatenate([[0], np.cumsum(n_max)])
    return np.concatenate(
        [starts[f] + np.arange(n) for f, n in enumerate(n_active)] or [np.zeros(0, int)]
    ).astype(np.int64)


def _active_types(p: PhenoPowerLaw) -> np.ndarray:
    """Interaction types (1-based) among the active systems, (S, S)."""
    index = _active_index(p.N_sl, SLIP_FAMILIES[p.lattice])
    return _INTERACTION_TYPES[p.lattice][np.ix_(index, index)]


def interaction_matrix(p: PhenoPowerLaw) -> np.ndarray:
    """q_αβ among the active slip systems, (S, S), as DAMASK builds it from ``h_sl-sl``."""
    return np.asarray(p.h_sl_sl, dtype=float)[_active_types(p) - 1]


def slip_systems(p: PhenoPowerLaw) -> tuple[np.ndarray, np.ndarray]:
    """Unit slip directions and plane normals (S, 3) in the crystal frame, DAMASK_grid order.

    From ``damask.Crystal(...).kinematics("slip")`` (cI reordered to DAMASK_grid's order so that
    per-system results line up with DADF5 files).
    """
    import damask

    if not p.n_systems:
        return np.zeros((0, 3)), np.zeros((0, 3))
    crystal = damask.Crystal(lattice=p.lattice, a=1.0, c=p.c_over_a if p.hexagonal else None)
    kin = crystal.kinematics("slip")
    directions, planes = [], []
    for family, count in enumerate(p.N_sl):
        uvw, hkl = kin["direction"][family][:count], kin["plane"][family][:count]
        if p.lattice == "cI" and family == 0 and count:
            uvw, hkl = _damask_grid_order(uvw, hkl, count)
        directions.append(crystal.to_frame(uvw=uvw))
        planes.append(crystal.to_frame(hkl=hkl))
    d, n = np.concatenate(directions), np.concatenate(planes)
    return _unit(d), _unit(n)


def _damask_grid_order(uvw: np.ndarray, hkl: np.ndarray, count: int) -> tuple[np.ndarray, ...]:
    """cI {110}⟨111⟩ systems of damask.Crystal rearranged to DAMASK_grid 3.0's order."""
    mine = np.concatenate([_unit(uvw), _unit(hkl)], axis=1)  # (12, 6)
    want = np.concatenate(
        [_unit(_CI_SLIP_DAMASK_GRID[:, :3]), _unit(_CI_SLIP_DAMASK_GRID[:, 3:])], axis=1
    )
    same = (np.abs(want[:, None, :3] @ mine[None, :, :3, None])[..., 0, 0] > 1 - 1e-9) & (
        np.abs(want[:, None, 3:] @ mine[None, :, 3:, None])[..., 0, 0] > 1 - 1e-9
    )
    order = np.argmax(same, axis=1)
    if not same.any(axis=1).all() or len(set(order.tolist())) != len(order):  # pragma: no cover
        raise RuntimeError("damask.Crystal cI slip systems do not match DAMASK_grid's list")
    return _CI_SLIP_DAMASK_GRID[:count, :3], _CI_SLIP_DAMASK_GRID[:count, 3:]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def schmid_tensors(p: PhenoPowerLaw) -> np.ndarray:
    """Symmetric Schmid tensors sym(d ⊗ n) in the crystal frame, Mandel notation (S, 6)."""
    d, n = slip_systems(p)
    outer = d[:, :, None] * n[:, None, :]
    return to_mandel(0.5 * (outer + np.swapaxes(outer, -1, -2)))


def stiffness_voigt(p: PhenoPowerLaw) -> np.ndarray:
    """Crystal-frame stiffness (6, 6) in Voigt notation (engineering shear), Pa."""
    c = np.zeros((6, 6))
    c11, c12, c44 = p.C_11, p.C_12, p.C_44
    c13, c33 = (p.C_13, p.C_33) if p.hexagonal else (c12, c11)
    c[0, 0] = c[1, 1] = c11
    c[2, 2] = c33
    c[0, 1] = c[1, 0] = c12
    c[0, 2] = c[2, 0] = c[1, 2] = c[2, 1] = c13
    c[3, 3] = c[4, 4] = c44
    c[5, 5] = 0.5 * (c11 - c12) if p.hexagonal else c44
    return c


def stiffness_mandel(p: PhenoPowerLaw) -> np.ndarray:
    """Crystal-frame stiffness (6, 6) in Mandel notation, Pa."""
    return stiffness_voigt(p) * np.outer(_MANDEL_WEIGHTS, _MANDEL_WEIGHTS)


def _family_values(p: PhenoPowerLaw, values: Sequence[float]) -> np.ndarray:
    """Per-family values expanded to the active systems (S,)."""
    return np.repeat(np.asarray(values, dtype=float), np.asarray(p.N_sl, dtype=int))


# --- DAMASK material.yaml ------------------------------------------------------------------


def _phase_from_damask(phase: Mapping[str, Any], source: str, name: str) -> PhenoPowerLaw:
    where = f"phase {name!r}"
    if not isinstance(phase, Mapping):
        raise InputError(source, where, "a phase entry must be a mapping")
    lattice = phase.get("lattice")
    if lattice not in LATTICES:
        raise InputError(source, f"{where}: lattice", f"lattice {lattice!r} not supported by "
                         f"the Taylor model; expected one of {', '.join(LATTICES)}")  # fmt: skip
    mech = phase.get("mechanical")
    if not isinstance(mech, Mapping) or not isinstance(mech.get("elastic"), Mapping):
        raise InputError(source, f"{where}: mechanical", "needs a mechanical/elastic entry")
    elastic = dict(mech["elastic"])
    if elastic.get("type", "Hooke") != "Hooke":
        raise InputError(source, f"{where}: elastic", f"elastic type {elastic.get('type')!r} "
                         "not supported; expected Hooke")  # fmt: skip
    keys = ("C_11", "C_12", "C_44") + (("C_13", "C_33") if lattice == "hP" else ())
    missing = [k for k in keys if k not in elastic]
    if missing:
        raise InputError(source, f"{where}: elastic", f"missing {', '.join(missing)}")
    moduli = {k: float(elastic[k]) for k in keys}
    c_over_a = float(phase["c/a"]) if "c/a" in phase else None
    plastic = mech.get("plastic")
    kwargs: dict[str, Any] = {}
    if isinstance(plastic, Mapping) and plastic.get("type") not in (None, "none"):
        kwargs = _slip_from_damask(plastic, source, where)
    return PhenoPowerLaw(lattice=lattice, c_over_a=c_over_a, name=name, **moduli, **kwargs)


def _slip_from_damask(plastic: Mapping[str, Any], source: str, where: str) -> dict[str, Any]:
    kind = plastic.get("type")
    if kind != "phenopowerlaw":
        raise InputError(source, f"{where}: plastic", f"plasticity {kind!r} not supported by the "
                         "Taylor model; expected phenopowerlaw (or none)")  # fmt: skip
    if any(int(n) for n in np.atleast_1d(plastic.get("N_tw", []))):
        log.warning("%s (%s): twin systems are ignored by the Taylor model", source, where)
    if any("non" in key and "Schmid" in key for key in plastic):
        log.warning("%s (%s): non-Schmid terms are ignored by the Taylor model", source, where)
    try:
        n_sl = tuple(int(n) for n in np.atleast_1d(plastic["N_sl"]))
        active = np.asarray(n_sl) > 0
        out: dict[str, Any] = {
            "N_sl": n_sl,
            "xi_0_sl": _per_family(plastic, "xi_0_sl", len(n_sl), source, where),
            "xi_inf_sl": _per_family(plastic, "xi_inf_sl", len(n_sl), source, where),
            "h_sl_sl": tuple(float(v) for v in np.atleast_1d(plastic["h_sl-sl"])),
        }
        for key, yaml_key in (("h_0_sl_sl", "h_0_sl-sl"), ("n_sl", "n_sl"), ("a_sl", "a_sl"),
                              ("dot_gamma_0_sl", "dot_gamma_0_sl")):  # fmt: skip
            out[key] = _scalar(plastic[yaml_key], active, yaml_key, source, where)
    except KeyError as err:
        raise InputError(source, f"{where}: plastic", f"missing {err.args[0]}") from None
    if "h_int" in plastic:
        out["h_int"] = _per_family(plastic, "h_int", len(n_sl), source, where)
    return out


def _per_family(
    plastic: Mapping[str, Any], key: str, families: int, source: str, where: str
) -> tuple[float, ...]:
    values = np.atleast_1d(np.asarray(plastic[key], dtype=float))
    if values.size != families:
        raise InputError(source, f"{where}: {key}", f"{values.size} values for {families} families")
    return tuple(float(v) for v in values)


def _scalar(value: Any, active: np.ndarray, key: str, source: str, where: str) -> float:
    """DAMASK ≥ 3 scalar, or a legacy per-family list whose active entries agree."""
    values = np.atleast_1d(np.asarray(value, dtype=float))
    if values.size == 1:
        return float(values[0])
    if values.size != active.size:
        raise InputError(source, f"{where}: {key}", f"{values.size} values for "
                         f"{active.size} families")  # fmt: skip
    chosen = values[active]
    if chosen.size and not np.allclose(chosen, chosen[0]):
        raise InputError(source, f"{where}: {key}", f"per-family {key} {values.tolist()} "
                         "differ between active families; DAMASK ≥ 3 takes one value")  # fmt: skip
    return float(chosen[0]) if chosen.size else float(values[0])


def _phase_to_damask(p: PhenoPowerLaw) -> dict[str, Any]:
    elastic: dict[str, Any] = {"type": "Hooke", "C_11": p.C_11, "C_12": p.C_12, "C_44": p.C_44}
    if p.hexagonal:
        elastic.update(C_13=p.C_13, C_33=p.C_33)
    mech: dict[str, Any] = {"output": ["F", "P", "F_e", "F_p", "L_p", "O"], "elastic": elastic}
    if p.n_systems:
        plastic: dict[str, Any] = {
            "type": "phenopowerlaw", "output": ["xi_sl", "gamma_sl"], "N_sl": list(p.N_sl),
            "n_sl": p.n_sl, "a_sl": p.a_sl, "h_0_sl-sl": p.h_0_sl_sl,
            "xi_0_sl": list(p.xi_0_sl), "xi_inf_sl": list(p.xi_inf_sl),
            "h_sl-sl": list(p.h_sl_sl), "dot_gamma_0_sl": p.dot_gamma_0_sl,
        }  # fmt: skip
        if p.h_int is not None:
            plastic["h_int"] = list(p.h_int)
        mech["plastic"] = plastic
    if p.references:  # DAMASK lists references inside the model entries
        mech["plastic" if p.n_systems else "elastic"]["references"] = list(p.references)
    out: dict[str, Any] = {"lattice": p.lattice}
    if p.hexagonal:
        out["c/a"] = p.c_over_a
    out["mechanical"] = mech
    return out


# ---------------------------------------------------------------------------------------------
# load case and solver options


@dataclass(frozen=True)
class LoadCase:
    """Uniaxial deformation along ``direction`` to ``strain`` at ``rate`` (1/s).

    ``strain`` is the engineering strain ``F − 1`` along the axis at the end (negative for
    compression), reached in ``increments`` equal increments (the response has
    ``increments + 1`` points including the undeformed start). ``shear="free"`` drives the
    other five macroscopic stress components to zero; ``"fixed"`` keeps the shear strains at
    zero and drives only the two lateral normal stresses to zero (DAMASK's ``tensionX.yaml``).
    Defaults: the paper's section 2.3 (0.01 at 1e-3 /s in 20 increments along x).
    """

    strain: float = 0.01
    rate: float = 1.0e-3
    increments: int = 20
    direction: str = "x"
    shear: str = "free"

    def __post_init__(self) -> None:
        if self.direction not in AXES:
            raise InputError("load", "direction", f"direction {self.direction!r} not in x, y, z")
        if self.shear not in ("free", "fixed"):
            raise InputError("load", "shear", f"shear {self.shear!r}; expected free or fixed")
        if not self.rate > 0 or self.strain == 0 or int(self.increments) < 1:
            raise InputError("load", "", "need rate > 0, strain ≠ 0 and increments ≥ 1, got "
                             f"{self.rate}, {self.strain}, {self.increments}")  # fmt: skip

    @property
    def axis(self) -> int:
        return AXES[self.direction]

    @property
    def duration(self) -> float:
        return abs(self.strain) / self.rate

    @property
    def times(self) -> np.ndarray:
        """Time at the start and at the end of each increment (increments + 1,)."""
        return np.linspace(0.0, self.duration, int(self.increments) + 1)

    @property
    def strains(self) -> np.ndarray:
        """Prescribed strain along the axis at :attr:`times`."""
        return np.linspace(0.0, self.strain, int(self.increments) + 1)


@dataclass(frozen=True)
class TaylorOptions:
    """Numerical settings of the Taylor model (defaults are converged for the paper's load).

    * ``substeps``: backward-Euler steps per output increment (1: DAMASK's increments; steps
      that do not converge are cut back automatically, ``max_halvings`` times at most).
    * ``saturation``: which system's saturation factor enters the hardening (module
      docstring).
    * Tolerances: ``tol_strain`` on every grain's strain residual, ``tol_stress`` (MPa) on the
      free macroscopic stresses, ``tol_xi`` (MPa) on the slip resistances' fixed point. At the
      defaults the stress curves change by < 0.01 MPa when they are tightened tenfold.
    * Iteration limits: ``max_fast`` Newton iterations and ``max_passes`` ξ updates of the
      fast monolithic solver before a VE's step is halved; ``max_newton``/``max_outer`` of the
      globally convergent fallback; ``harden_below``: grain residual below which ξ follows the
      slip rates; ``reuse``: relative change of a grain's slip-rate derivatives below which its
      Jacobian inverse is reused.
    * ``chunk_grains`` bounds the grains solved together (whole VEs; small chunks stay in
      cache), ``workers`` processes solve chunks in parallel (0: as many as the process may
      use, ≤ 8, for problems of 8192 grains or more; 1: in this process).
    """

    substeps: int = 1
    saturation: str = "hardened"
    tol_strain: float = 1.0e-7
    tol_stress: float = 1.0e-3
    tol_xi: float = 1.0e-2
    max_newton: int = 200
    max_outer: int = 60
    max_fast: int = 15
    max_halvings: int = 5
    max_passes: int = 6
    harden_below: float = 1.0e-6
    reuse: float = 0.02
    chunk_grains: int = 2048
    workers: int = 0

    def __post_init__(self) -> None:
        if self.saturation not in ("hardened", "acting"):
            raise InputError("options", "saturation", f"{self.saturation!r}; expected "
                             "'hardened' (DAMASK ≥ 3) or 'acting'")  # fmt: skip
        if int(self.substeps) < 1:
            raise InputError("options", "substeps", f"need ≥ 1, got {self.substeps}")


@dataclass
class TaylorResult:
    """Volume-averaged response per VE at the load case's :attr:`LoadCase.times`.

    ``strain`` and ``stress`` (Cauchy, MPa) are ``(n_ves, increments + 1, 3, 3)``;
    ``iterations`` the Newton iterations per increment (summed over sub-steps and cut-backs,
    largest over the chunks of VEs).
    """

    time: np.ndarray
    strain: np.ndarray
    stress: np.ndarray
    iterations: np.ndarray

    def along(self, direction: str = "x") -> np.ndarray:
        """σ along ``direction`` (n_ves, increments + 1), MPa."""
        a = AXES[direction]
        return self.stress[..., a, a]


# ---------------------------------------------------------------------------------------------
# tensors and orientations


def to_mandel(a: np.ndarray) -> np.ndarray:
    """Symmetric (..., 3, 3) tensors as Mandel 6-vectors (shear components × √2)."""
    a = np.asarray(a, dtype=float)
    i, j = zip(*MANDEL_PAIRS, strict=True)
    return a[..., i, j] * _MANDEL_WEIGHTS


def from_mandel(v: np.ndarray) -> np.ndarray:
    """Mandel 6-vectors (..., 6) back to symmetric (..., 3, 3) tensors."""
    v = np.asarray(v, dtype=float) / _MANDEL_WEIGHTS
    out = np.empty((*v.shape[:-1], 3, 3))
    for k, (i, j) in enumerate(MANDEL_PAIRS):
        out[..., i, j] = out[..., j, i] = v[..., k]
    return out


def euler_matrices(eulers: np.ndarray) -> np.ndarray:
    """Bunge (φ1, Φ, φ2) radians → orientation matrices g (..., 3, 3), sample → crystal.

    Passive convention as ``damask.Rotation.from_Euler_angles(e).as_matrix()``: a vector with
    sample-frame components ``v_s`` has crystal-frame components ``g @ v_s``, so a crystal
    direction ``v_c`` points along ``gᵀ @ v_c`` in the sample.
    """
    e = np.asarray(eulers, dtype=float)
    c1, c, c2 = np.cos(e[..., 0]), np.cos(e[..., 1]), np.cos(e[..., 2])
    s1, s, s2 = np.sin(e[..., 0]), np.sin(e[..., 1]), np.sin(e[..., 2])
    g = np.empty((*e.shape[:-1], 3, 3))
    g[..., 0, 0] = c1 * c2 - s1 * s2 * c
    g[..., 0, 1] = s1 * c2 + c1 * s2 * c
    g[..., 0, 2] = s2 * s
    g[..., 1, 0] = -c1 * s2 - s1 * c2 * c
    g[..., 1, 1] = -s1 * s2 + c1 * c2 * c
    g[..., 1, 2] = c2 * s
    g[..., 2, 0] = s1 * s
    g[..., 2, 1] = -c1 * s
    g[..., 2, 2] = c
    return g


def mandel_rotation(q: np.ndarray) -> np.ndarray:
    """6×6 Mandel matrices T with ``to_mandel(q A qᵀ) = T @ to_mandel(A)`` for rotations q."""
    basis = _mandel_basis()
    rotated = np.einsum("...ac,Jcd,...bd->...Jab", q, basis, q)
    return np.einsum("Iab,...Jab->...IJ", basis, rotated)


def _mandel_basis() -> np.ndarray:
    """Orthonormal basis tensors E_I (6, 3, 3) of symmetric tensors (Mandel)."""
    basis = np.zeros((6, 3, 3))
    for k, (i, j) in enumerate(MANDEL_PAIRS):
        value = 1.0 if i == j else 1.0 / _SQRT2
        basis[k, i, j] = basis[k, j, i] = value
    return basis


def crystal_to_sample(eulers: np.ndarray) -> np.ndarray:
    """Mandel rotation T (..., 6, 6) taking crystal-frame tensors to the sample frame."""
    return mandel_rotation(np.swapaxes(euler_matrices(eulers), -1, -2))


def _check_eulers(eulers: np.ndarray, source: str) -> np.ndarray:
    """Float64 Bunge angles (..., 3) in radians, or InputError (range, degrees, NaN, shape)."""
    from latentmech.ve.orientation import check_euler_range

    return check_euler_range(eulers, source, "eulers")


# ---------------------------------------------------------------------------------------------
# grains of a voxel VE


def ve_grains(eulers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct orientations of a VE ``(X, Y, Z, 3)`` and their voxel counts.

    Grains are the distinct Euler-angle triplets (``np.unique`` on rows), so any VE source works
    without grain ids; two grains with bit-identical angles would merge (harmless for a
    Taylor model, which sees orientations and volume fractions only).
    """
    arr = _check_eulers(eulers, "ve_grains")
    unique, counts = np.unique(arr.reshape(-1, 3), axis=0, return_counts=True)
    return unique, counts.astype(np.int64)


def ve_grains_batch(
    eulers: np.ndarray, block_voxels: int = 1 << 21
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`ve_grains` for a batch ``(N, X, Y, Z, 3)``: orientations, counts and VE index.

    Rows are grouped by a 64-bit hash of (VE, φ1, Φ, φ2) bits, then checked for equality; a
    (practically impossible) hash collision falls back to exact per-VE ``np.unique``. VEs are
    processed in blocks of about ``block_voxels`` voxels to bound memory.
    """
    arr = np.asarray(eulers)
    if arr.ndim < 2:
        raise InputError("ve_grains_batch", "eulers", f"need (N, ..., 3), got {arr.shape}")
    per_ve = int(np.prod(arr.shape[1:-1]))
    block = max(1, block_voxels // max(per_ve, 1))
    parts = [_grains_of_block(arr[i : i + block], i) for i in range(0, arr.shape[0], block)]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]


def _grains_of_block(eulers: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct orientations, counts and VE index (plus ``offset``) of a block of VEs."""
    arr = _check_eulers(eulers, "ve_grains_batch")
    n = arr.shape[0]
    rows = np.ascontiguousarray(arr.reshape(n, -1, 3) + 0.0)  # + 0.0: -0.0 → 0.0
    bits = rows.view(np.uint64)
    ve = np.repeat(np.arange(n, dtype=np.uint64), rows.shape[1])
    with np.errstate(over="ignore"):
        key = (bits[..., 0].ravel() * np.uint64(0x9E3779B97F4A7C15)) ^ (
            bits[..., 1].ravel() * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        key = (key ^ (bits[..., 2].ravel() * np.uint64(0x165667B19E3779F9))) * np.uint64(
            0xD6E8FEB86659FD93
        ) ^ (ve * np.uint64(0xFF51AFD7ED558CCD))
    _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True,
                                          return_counts=True)  # fmt: skip
    flat = rows.reshape(-1, 3)
    flat_ve = ve.astype(np.int64)
    if not (np.array_equal(flat, flat[first][inverse]) and
            np.array_equal(flat_ve, flat_ve[first][inverse])):  # fmt: skip
        eul, cnt, index = _ve_grains_exact(rows)  # pragma: no cover - hash collision
        return eul, cnt, index + offset  # pragma: no cover
    order = np.lexsort((flat[first, 2], flat[first, 1], flat[first, 0], flat_ve[first]))
    idx = first[order]
    return flat[idx], counts[order].astype(np.int64), flat_ve[idx] + offset


def _ve_grains_exact(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = [np.unique(r, axis=0, return_counts=True) for r in rows]
    eul = np.concatenate([u for u, _ in parts])
    counts = np.concatenate([c for _, c in parts]).astype(np.int64)
    ve = np.concatenate([np.full(len(c), i) for i, (_, c) in enumerate(parts)])
    return eul, counts, ve


# ---------------------------------------------------------------------------------------------
# Taylor model


@dataclass
class _PhaseConstants:
    """Solver constants of one phase in MPa, crystal frame, Mandel notation."""

    stiffness: np.ndarray  # (6, 6)
    compliance: np.ndarray  # (6, 6)
    schmid: np.ndarray  # (S, 6)
    outer: np.ndarray  # (S, 36) flattened P ⊗ P
    interaction: np.ndarray  # (S, S)
    xi_0: np.ndarray  # (S,)
    xi_inf: np.ndarray  # (S,)
    h_0: np.ndarray  # (S,) h₀ (1 + h_int)
    n: float
    gamma_0: float
    a: float

    @classmethod
    def of(cls, p: PhenoPowerLaw) -> _PhaseConstants:
        c = stiffness_mandel(p) / MPA
        schmid = schmid_tensors(p)
        s = schmid.shape[0]
        h_int = _family_values(p, p.h_int) if p.h_int is not None else np.zeros(s)
        return cls(
            stiffness=c, compliance=np.linalg.inv(c), schmid=schmid,
            outer=(schmid[:, :, None] * schmid[:, None, :]).reshape(s, 36),
            interaction=interaction_matrix(p) if s else np.zeros((0, 0)),
            xi_0=_family_values(p, p.xi_0_sl) / MPA if s else np.zeros(0),
            xi_inf=_family_values(p, p.xi_inf_sl) / MPA if s else np.zeros(0),
            h_0=p.h_0_sl_sl / MPA * (1.0 + h_int), n=float(p.n_sl),
            gamma_0=float(p.dot_gamma_0_sl), a=float(p.a_sl),
        )  # fmt: skip


def _power(x: np.ndarray, k: float) -> np.ndarray:
    """x**k for x ≥ 0, by repeated squaring when k is a small integer (much faster)."""
    if float(k).is_integer() and 0 <= k <= 256:
        k = int(k)
        result, base = np.ones_like(x), x
        while k:
            if k & 1:
                result = result * base
            k >>= 1
            if k:
                base = base * base
        return result
    return np.power(x, k)


@dataclass
class _Flow:
    """Flow-rule evaluation of a set of grains at stresses σ (MPa, crystal frame)."""

    tau: np.ndarray  # (G, S)
    ratio: np.ndarray  # |τ/ξ| (G, S)
    pw: np.ndarray  # |τ/ξ|^(n-1)
    gdot: np.ndarray  # γ̇ (G, S)
    residual: np.ndarray  # S σ + Δt Σ γ̇ P − b (G, 6)
    potential: np.ndarray  # incremental potential Φ (G,)


def _flow(ph: _PhaseConstants, sigma: np.ndarray, xi: np.ndarray, b: np.ndarray,
          dt: float, potential: bool = True) -> _Flow:  # fmt: skip
    """γ̇, the residual and the convex incremental potential Φ (whose gradient is the residual)."""
    tau = sigma @ ph.schmid.T
    x = tau / xi
    ratio = np.abs(x)
    with np.errstate(over="ignore", invalid="ignore"):
        pw = _power(ratio, ph.n - 1.0)
        gdot = ph.gamma_0 * pw * x
        elastic = sigma @ ph.compliance
        residual = elastic + dt * (gdot @ ph.schmid) - b
        if not potential:
            return _Flow(tau, ratio, pw, gdot, residual, np.zeros(sigma.shape[0]))
        dissipation = dt * ph.gamma_0 / (ph.n + 1.0) * np.sum(xi * pw * ratio * ratio, axis=1)
        phi = 0.5 * np.sum(sigma * elastic, axis=1) - np.sum(sigma * b, axis=1) + dissipation
    return _Flow(tau, ratio, pw, gdot, residual, phi)


def _tangent(ph: _PhaseConstants, flow: _Flow, xi: np.ndarray, dt: float) -> np.ndarray:
    """Jacobian J = S + Δt Σ ∂γ̇/∂τ P ⊗ P of the residual, (G, 6, 6) — symmetric positive."""
    c = dt * ph.n * ph.gamma_0 * flow.pw / xi
    return ph.compliance + (c @ ph.outer).reshape(-1, 6, 6)


def _take(flow: _Flow, index: np.ndarray | slice) -> _Flow:
    return _Flow(*(getattr(flow, f)[index] for f in _Flow.__dataclass_fields__))


def _put(flow: _Flow, index: np.ndarray | slice, part: _Flow) -> None:
    for f in _Flow.__dataclass_fields__:
        getattr(flow, f)[index] = getattr(part, f)


def _start(ph: _PhaseConstants, sigma: np.ndarray, b: np.ndarray, xi: np.ndarray,
           target: np.ndarray | None = None,
           trial: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Starting stresses: from the previous stresses towards a trial (default: the elastic
    trial), stopped where the first |τ/ξ| reaches ``target`` (default 1, the power law's knee).

    Grains already beyond it keep their previous stresses (λ = 0); grains that stay below take
    the trial (λ = 1).
    """
    trial = b @ ph.stiffness if trial is None else trial
    if not ph.schmid.shape[0]:
        return trial
    level = (np.ones(sigma.shape[0]) if target is None else target)[:, None] * xi
    tau0, dtau = sigma @ ph.schmid.T, (trial - sigma) @ ph.schmid.T
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = (np.sign(dtau) * level - tau0) / dtau
    lam = np.where(np.abs(dtau) > 1e-300, lam, np.inf)
    lam = np.clip(np.min(np.where(lam >= 0, lam, 0.0), axis=1), 0.0, 1.0)
    return sigma + lam[:, None] * (trial - sigma)


def _rescale(ph: _PhaseConstants, sigma: np.ndarray, gdot: np.ndarray, xi_from: np.ndarray,
             xi_to: np.ndarray) -> np.ndarray:  # fmt: skip
    """Stresses scaled by the slip-weighted change of ξ: keeps |τ/ξ| of the active systems.

    A predictor after ξ changes (hardening): without it the ratios drop below the knee and
    Newton's first step overshoots.
    """
    rate = np.abs(gdot)
    total = rate.sum(axis=1)
    factor = np.where(total > 0, (rate * (xi_to / xi_from)).sum(axis=1) / np.where(
        total > 0, total, 1.0), 1.0)  # fmt: skip
    return sigma * factor[:, None]


def _solve_grains(ph: _PhaseConstants, b: np.ndarray, xi: np.ndarray, sigma: np.ndarray,
                  dt: float, opts: TaylorOptions) -> tuple[np.ndarray, _Flow]:  # fmt: skip
    """Backward-Euler stresses of grains with total crystal-frame strain b + ε_p (given ξ).

    Minimises the strictly convex incremental potential Φ(σ) = ½ σ:S:σ − σ:b +
    Δt Σ γ̇₀ ξ |τ/ξ|^(n+1)/(n+1) by Newton's method with an Armijo line search (its gradient is
    the strain residual), so every grain converges however stiff the power law; steps are
    capped as in :func:`_step_cap`.
    """
    sigma = _start(ph, sigma, b, xi)
    flow = _flow(ph, sigma, xi, b, dt)
    for _ in range(opts.max_newton):
        active = np.flatnonzero(np.max(np.abs(flow.residual), axis=1) > opts.tol_strain)
        if not active.size:
            break
        part = _take(flow, active)
        xa, ba, sa = xi[active], b[active], sigma[active]
        delta = -np.linalg.solve(_tangent(ph, part, xa, dt), part.residual[..., None])[..., 0]
        alpha = _step_cap(ph, part, delta, xa)
        slope = np.sum(part.residual * delta, axis=1)
        pending = np.ones(active.size, dtype=bool)
        for _ls in range(60):
            idx = np.flatnonzero(pending)
            trial = sa[idx] + alpha[idx, None] * delta[idx]
            new = _flow(ph, trial, xa[idx], ba[idx], dt)
            improved = new.potential <= part.potential[idx] + 1e-4 * alpha[idx] * slope[idx]
            smaller = np.max(np.abs(new.residual), axis=1) < 0.5 * np.max(
                np.abs(part.residual[idx]), axis=1
            )
            ok = np.isfinite(new.potential) & (improved | smaller)
            accepted = idx[ok]
            sigma[active[accepted]] = trial[ok]
            _put(flow, active[accepted], _take(new, np.flatnonzero(ok)))
            pending[accepted] = False
            if not pending.any():
                break
            alpha[pending] *= 0.5
    return sigma, flow


def _step_cap(ph: _PhaseConstants, flow: _Flow, delta: np.ndarray, xi: np.ndarray,
              knee: float = 1.0) -> np.ndarray:  # fmt: skip
    """Largest step ≤ 1 along ``delta`` keeping every |τ/ξ| ≤ min(e^(2/n) max(knee, current),
    max(10^(1/n) knee, current)).

    ``knee`` is the ratio at which a system slips at the imposed strain rate
    (:func:`_knee`). No slip rate may jump by more than e² per iteration beyond it, nor grow
    past ten times it: a Newton step from below the power law's knee would otherwise
    overshoot by orders of magnitude, and the way back down takes ~n iterations per factor e.
    """
    if not ph.schmid.shape[0]:
        return np.ones(delta.shape[0])
    dtau = delta @ ph.schmid.T
    current = np.max(flow.ratio, axis=1)
    ceiling = np.maximum(10.0 ** (1.0 / ph.n) * knee, current)
    level = np.minimum(np.exp(2.0 / ph.n) * np.maximum(knee, current), ceiling)
    limit = level[:, None] * xi
    with np.errstate(divide="ignore", invalid="ignore"):
        room = (limit - np.sign(dtau) * flow.tau) / np.abs(dtau)
    room = np.where(np.abs(dtau) > 1e-300, room, np.inf)
    return np.clip(np.min(room, axis=1), 1e-12, 1.0)


def _knee(ph: _PhaseConstants, strain_step: float, dt: float) -> float:
    """|τ/ξ| at which one system slips at the imposed strain rate: (ε̇ / γ̇₀)^(1/n).

    The natural scale of the stress ratios in plastic flow (1 when γ̇₀ equals the strain rate).
    """
    if not ph.schmid.shape[0] or strain_step <= 0 or dt <= 0:
        return 1.0
    return float((strain_step / dt / ph.gamma_0) ** (1.0 / ph.n))


def _hardening_rate(ph: _PhaseConstants, xi: np.ndarray, gdot: np.ndarray,
                    saturation: str) -> np.ndarray:  # fmt: skip
    """ξ̇ of DAMASK's phenopowerlaw (module docstring), (G, S) MPa/s."""
    sat = 1.0 - xi / ph.xi_inf
    factor = np.sign(sat) * np.abs(sat) ** ph.a
    rate = np.abs(gdot)
    if saturation == "hardened":
        return ph.h_0 * factor * (rate @ ph.interaction.T)
    return ph.h_0 * ((rate * factor) @ ph.interaction.T)


@dataclass
class _Chunk:
    """Grains of a few whole VEs, sorted by VE, with their per-phase groups and state."""

    ve: np.ndarray  # (G,) local VE index 0..V-1
    weight: np.ndarray  # (G,) normalised per VE
    rotation: np.ndarray  # (G, 6, 6) crystal → sample (Mandel)
    groups: list[tuple[_PhaseConstants, np.ndarray]]  # (constants, grain indices)
    n_ves: int


def _segment_sum(values: np.ndarray, ve: np.ndarray, n_ves: int) -> np.ndarray:
    """Sum of per-grain ``values`` (G, ...) per VE; grains sorted by VE."""
    starts = np.searchsorted(ve, np.arange(n_ves))
    return np.add.reduceat(values, starts, axis=0)


def _macro_stress(chunk: _Chunk, sigma: np.ndarray) -> np.ndarray:
    """Volume-averaged sample-frame stress (V, 6) from crystal-frame grain stresses."""
    sample = np.einsum("gij,gj->gi", chunk.rotation, sigma)
    return _segment_sum(sample * chunk.weight[:, None], chunk.ve, chunk.n_ves)


def _macro_tangent(chunk: _Chunk, current: _Eval, xi: list[np.ndarray], dt: float) -> np.ndarray:
    """Volume average of the rotated consistent grain tangents dσ/dε = J⁻¹, (V, 6, 6)."""
    tangent = np.empty((chunk.ve.size, 6, 6))
    for (ph, idx), flow, x in zip(chunk.groups, current.flows, xi, strict=True):
        tangent[idx] = np.linalg.inv(_tangent(ph, flow, x, dt))
    t = chunk.rotation
    rotated = np.matmul(np.matmul(t, tangent), np.swapaxes(t, -1, -2))
    return _segment_sum(rotated * chunk.weight[:, None, None], chunk.ve, chunk.n_ves)


def _boundary_components(load: LoadCase) -> tuple[np.ndarray, np.ndarray]:
    """Mandel indices of prescribed strain and of zero (free) stress."""
    a = load.axis
    known = [a] + ([3, 4, 5] if load.shear == "fixed" else [])
    free = [k for k in range(6) if k not in known]
    return np.array(known), np.array(free)


def _run_chunk(chunk: _Chunk, load: LoadCase, opts: TaylorOptions) -> tuple[np.ndarray, ...]:
    """Time-integrate one chunk; macroscopic strain and stress (V, n+1, 6) and iterations."""
    known, free = _boundary_components(load)
    steps = int(load.increments) * int(opts.substeps)
    dt = load.duration / steps
    target = np.linspace(0.0, load.strain, steps + 1)
    state = _State.initial(chunk)
    out_e = np.zeros((chunk.n_ves, int(load.increments) + 1, 6))
    out_s = np.zeros_like(out_e)
    iterations = np.zeros(steps, dtype=np.int64)
    tangent = _elastic_tangent(chunk)
    split = np.ones(chunk.n_ves, dtype=np.int64)  # sub-steps per step and VE, adapted
    for step in range(1, steps + 1):
        d_known = np.zeros((chunk.n_ves, 6))
        d_known[:, load.axis] = target[step] - target[step - 1]
        cut = np.zeros(chunk.n_ves, dtype=bool)
        for level in np.unique(split):  # a handful of levels: 1, 2, 4, ...
            ves = split == level
            whole = bool(ves.all())
            sub, rows, local = (chunk, None, None) if whole else _subchunk(chunk, ves)
            part = state if whole else state.take(ves, rows, local)  # type: ignore[arg-type]
            part_tangent = tangent[ves]
            for _ in range(int(level)):
                used, part_tangent, halved = _advance(sub, part, d_known[ves] / level, known,
                                                      free, dt / level, opts, part_tangent)  # fmt: skip
                iterations[step - 1] += used
                cut[ves] |= halved
            if not whole:
                state.put(ves, rows, local, part)  # type: ignore[arg-type]
            tangent[ves] = part_tangent
        # a VE cut back starts the next step in twice as many sub-steps, else in half as many
        split = np.where(
            cut, np.minimum(split * 2, 2**opts.max_halvings), np.maximum(split // 2, 1)
        )
        if step % opts.substeps == 0:
            out_e[:, step // opts.substeps] = state.strain
            out_s[:, step // opts.substeps] = _macro_stress(chunk, state.sigma)
    return out_e, out_s, iterations


def _advance(chunk: _Chunk, state: _State, d_known: np.ndarray, known: np.ndarray,
             free: np.ndarray, dt: float, opts: TaylorOptions, tangent: np.ndarray,
             depth: int = 0) -> tuple[int, np.ndarray, np.ndarray]:  # fmt: skip
    """Advance every VE by the prescribed increments ``d_known`` in ``dt``; updates ``state``.

    Predicts the free strains and grain stresses (elastic tangent at first, then the last
    step's rates), runs the monolithic Newton step (:func:`_step_newton`) and redoes the VEs it
    does not converge in two half steps, recursively up to ``opts.max_halvings`` times (as
    DAMASK cuts back), then with the globally convergent :func:`_step_robust`. Returns the
    iterations spent, the macro tangent and the VEs that were cut back (mask).
    """
    before = state.copy()
    if state.strain_rate is None:
        state.strain = state.strain + d_known + _predict(tangent, d_known, known, free)
        guess = None
    else:
        state.strain = state.strain + dt * state.strain_rate
        state.strain[:, known] = before.strain[:, known] + d_known[:, known]
        guess = state.sigma + dt * state.sigma_rate  # type: ignore[operator]
    predicted = state.strain.copy()
    cap = 2.0 * float(np.max(np.abs(d_known), initial=0.0))
    iterations, tangent, failed = _step_newton(chunk, state, free, dt, cap, opts, tangent,
                                               guess)  # fmt: skip
    if failed.any():
        sub, rows, local = _subchunk(chunk, failed)
        sub_state = before.take(failed, rows, local)
        if depth < opts.max_halvings:
            used = 0
            sub_tangent = tangent[failed]
            for _ in range(2):
                part, sub_tangent, _ = _advance(sub, sub_state, 0.5 * d_known[failed], known,
                                                free, 0.5 * dt, opts, sub_tangent, depth + 1)  # fmt: skip
                used += part
        else:
            sub_state.strain = predicted[failed]  # the robust step starts from the prediction
            used, sub_tangent = _step_robust(sub, sub_state, free, dt, cap, opts, tangent[failed])
        state.put(failed, rows, local, sub_state)
        tangent[failed] = sub_tangent
        iterations += used
    state.strain_rate = (state.strain - before.strain) / dt
    state.sigma_rate = (state.sigma - before.sigma) / dt
    return iterations, tangent, failed


@dataclass
class _State:
    """Macroscopic strain (V, 6) and grain state (crystal frame) of a chunk at the last step,
    with the last step's rates (predictors of the next step)."""

    strain: np.ndarray
    sigma: np.ndarray  # (G, 6) MPa
    plastic: np.ndarray  # (G, 6)
    xi: list[np.ndarray]  # per phase group (G_k, S_k) MPa
    xi_rate: list[np.ndarray]  # ξ̇ of the last step
    strain_rate: np.ndarray | None = None  # (V, 6)
    sigma_rate: np.ndarray | None = None  # (G, 6)

    @classmethod
    def initial(cls, chunk: _Chunk) -> _State:
        g = chunk.ve.size
        xi = [np.tile(ph.xi_0, (idx.size, 1)) for ph, idx in chunk.groups]
        rate = [np.zeros_like(x) for x in xi]
        return cls(np.zeros((chunk.n_ves, 6)), np.zeros((g, 6)), np.zeros((g, 6)), xi, rate)

    def copy(self) -> _State:
        return _State(self.strain.copy(), self.sigma.copy(), self.plastic.copy(),
                      [x.copy() for x in self.xi], [r.copy() for r in self.xi_rate],
                      None if self.strain_rate is None else self.strain_rate.copy(),
                      None if self.sigma_rate is None else self.sigma_rate.copy())  # fmt: skip

    def take(self, ves: np.ndarray, rows: np.ndarray, local: list[np.ndarray]) -> _State:
        """The state of the VEs ``ves`` (mask), grains ``rows``, group positions ``local``."""
        return _State(
            self.strain[ves], self.sigma[rows], self.plastic[rows],
            [x[loc] for x, loc in zip(self.xi, local, strict=True)],
            [r[loc] for r, loc in zip(self.xi_rate, local, strict=True)],
            None if self.strain_rate is None else self.strain_rate[ves],
            None if self.sigma_rate is None else self.sigma_rate[rows],
        )  # fmt: skip

    def put(self, ves: np.ndarray, rows: np.ndarray, local: list[np.ndarray],
            part: _State) -> None:  # fmt: skip
        """Write ``part`` (from :meth:`take`) back."""
        self.strain[ves], self.sigma[rows] = part.strain, part.sigma
        self.plastic[rows] = part.plastic
        for k, loc in enumerate(local):
            self.xi[k][loc], self.xi_rate[k][loc] = part.xi[k], part.xi_rate[k]
        if part.strain_rate is not None and part.sigma_rate is not None:
            if self.strain_rate is None or self.sigma_rate is None:
                self.strain_rate = np.zeros_like(self.strain)
                self.sigma_rate = np.zeros_like(self.sigma)
            self.strain_rate[ves], self.sigma_rate[rows] = part.strain_rate, part.sigma_rate


@dataclass
class _Eval:
    """Grain solutions at one macroscopic strain: stresses, flow per group, macro stress and W.

    ``work`` is the macroscopic incremental potential W = −Σ w Φ_g(σ_g*) per VE: convex in the
    macroscopic strain with gradient the macroscopic stress, so the free strains minimise it.
    """

    sigma: np.ndarray  # (G, 6)
    flows: list[_Flow]
    stress: np.ndarray  # (V, 6)
    work: np.ndarray  # (V,)


def _evaluate(chunk: _Chunk, state: _State, strain: np.ndarray, xi: list[np.ndarray], dt: float,
              opts: TaylorOptions, start: _Eval | None = None,
              ves: np.ndarray | None = None) -> _Eval:  # fmt: skip
    """Solve the grains of the VEs ``ves`` (all when None) at macroscopic ``strain``."""
    chosen = np.ones(chunk.ve.size, dtype=bool) if ves is None else ves[chunk.ve]
    crystal = np.einsum("gji,gj->gi", chunk.rotation, strain[chunk.ve])
    sigma = (state.sigma if start is None else start.sigma).copy()
    potential = np.zeros(chunk.ve.size)
    flows = []
    for k, (ph, idx) in enumerate(chunk.groups):
        local = np.flatnonzero(chosen[idx])
        rows = idx[local]
        b = crystal[rows] - state.plastic[rows]
        sigma[rows], flow = _solve_grains(ph, b, xi[k][local], sigma[rows], dt, opts)
        potential[rows] = flow.potential
        if start is None or ves is None:
            flows.append(flow)
        else:
            merged = _take(start.flows[k], np.arange(idx.size))
            _put(merged, local, flow)
            flows.append(merged)
    work = -_segment_sum(potential * chunk.weight, chunk.ve, chunk.n_ves)
    return _Eval(sigma, flows, _macro_stress(chunk, sigma), work)


def _merge(current: _Eval, trial: _Eval, chunk: _Chunk, accept: np.ndarray) -> _Eval:
    """``current`` with the VEs in ``accept`` taken from ``trial``."""
    grains = accept[chunk.ve]
    sigma = np.where(grains[:, None], trial.sigma, current.sigma)
    flows = []
    for (_, idx), old, new in zip(chunk.groups, current.flows, trial.flows, strict=True):
        merged = _take(old, np.arange(idx.size))
        local = np.flatnonzero(grains[idx])
        _put(merged, local, _take(new, local))
        flows.append(merged)
    stress = np.where(accept[:, None], trial.stress, current.stress)
    return _Eval(sigma, flows, stress, np.where(accept, trial.work, current.work))


def _subchunk(chunk: _Chunk, ves: np.ndarray) -> tuple[_Chunk, np.ndarray, list[np.ndarray]]:
    """The VEs ``ves`` (mask) as a chunk; their grain rows and per-group local positions."""
    grains = ves[chunk.ve]
    rows = np.flatnonzero(grains)
    renumber = np.cumsum(ves) - 1
    groups, local = [], []
    for ph, idx in chunk.groups:
        loc = np.flatnonzero(grains[idx])
        groups.append((ph, np.searchsorted(rows, idx[loc])))
        local.append(loc)
    sub = _Chunk(renumber[chunk.ve[rows]], chunk.weight[rows], chunk.rotation[rows], groups,
                 int(ves.sum()))  # fmt: skip
    return sub, rows, local


def _rows(mask: np.ndarray) -> np.ndarray | slice:
    """Positions where ``mask`` holds, as a plain slice when it holds everywhere (no copies)."""
    return slice(None) if mask.all() else np.flatnonzero(mask)


def _step_newton(chunk: _Chunk, state: _State, free: np.ndarray, dt: float, cap: float,
                 opts: TaylorOptions, tangent: np.ndarray,
                 guess: np.ndarray | None) -> tuple[int, np.ndarray, np.ndarray]:  # fmt: skip
    """Monolithic Newton on grain stresses and free macroscopic strains; ξ by fixed point.

    Linearising every grain residual, δσ = K (Tᵀ δε − r) with K = J⁻¹, turns the free-stress
    condition into one small system per VE (the Schur complement, the volume-averaged tangent);
    grain steps are capped like :func:`_solve_grains`'. Once every grain and VE is in
    equilibrium, ξ is updated from the slip rates (backward Euler, fixed point) and Newton
    resumes until ξ no longer changes. Returns the iterations, the macro tangent and the VEs
    that did not converge within ``opts.max_fast`` iterations.
    """
    starts = np.searchsorted(chunk.ve, np.arange(chunk.n_ves))
    xi = [x + dt * r for x, r in zip(state.xi, state.xi_rate, strict=True)]
    crystal = np.einsum("gji,gj->gi", chunk.rotation, state.strain[chunk.ve])
    b = crystal - state.plastic
    sigma = state.sigma.copy()
    for k, (ph, idx) in enumerate(chunk.groups):
        trial = None if guess is None else guess[idx]
        if ph.schmid.shape[0]:
            flow = _flow(ph, sigma[idx], state.xi[k], b[idx], dt, potential=False)
            knee = _knee(ph, 0.5 * cap, dt)
            target = np.maximum(knee, np.exp(1.0 / ph.n) * np.max(flow.ratio, axis=1))
            # the extrapolated guess already contains the hardening of the last step
            scaled = _rescale(ph, sigma[idx], flow.gdot, state.xi[k], xi[k])
            sigma[idx] = _start(ph, scaled, b[idx], xi[k], target, trial)
        else:
            sigma[idx] = _start(ph, sigma[idx], b[idx], xi[k], trial=trial)
    linear = _Linear.empty(chunk)
    history = [_Anderson.empty(x) for x in xi]
    done = np.zeros(chunk.n_ves, dtype=bool)  # converged VEs stay as they are
    passes = np.zeros(chunk.n_ves, dtype=np.int64)
    count = 0
    flows = [_flow(ph, sigma[idx], xi[k], b[idx], dt, potential=False)
             for k, (ph, idx) in enumerate(chunk.groups)]  # fmt: skip
    residual = np.zeros((chunk.ve.size, 6))
    for count in range(1, opts.max_fast + 1):  # noqa: B007 - count is returned
        # grains of converged VEs are left alone: only the live ones are evaluated
        live = [_rows(~done[chunk.ve[idx]]) for _, idx in chunk.groups]
        for k, (ph, idx) in enumerate(chunk.groups):
            rows = idx[live[k]]
            _put(flows[k], live[k], _flow(ph, sigma[rows], xi[k][live[k]], b[rows], dt,
                                          potential=False))  # fmt: skip
            residual[rows] = flows[k].residual[live[k]]
        stress = _macro_stress(chunk, sigma)
        grain_error = np.maximum.reduceat(np.max(np.abs(residual), axis=1), starts)
        balanced = (grain_error < opts.tol_strain) & (
            np.max(np.abs(stress[:, free]), axis=1) < opts.tol_stress
        )
        # near equilibrium the slip rates are reliable: ξ follows them (far from it γ̇ can be
        # orders of magnitude off and would wreck ξ); every decision is per VE, so a VE's
        # result does not depend on the VEs it is solved with
        near = (grain_error < opts.harden_below) & ~done
        moved = np.zeros(chunk.n_ves, dtype=bool)
        if near.any():
            xi, change = _harden(chunk, state.xi, xi, flows, dt, opts.saturation, starts,
                                 history, near, sigma)  # fmt: skip
            settled = change < opts.tol_xi
            done |= near & balanced & settled
            moved = near & ~settled
            passes += moved
        given_up = ~done & (passes >= opts.max_passes)  # slow ξ fixed point: halve the step
        active = ~done & ~moved & ~given_up
        if not active.any():
            if not moved.any():
                break
            continue
        _update_inverses(chunk, linear, flows, xi, dt, opts.reuse, live)
        tangent, d_free, d_sigma, d_crystal = _newton_step(chunk, linear, residual, stress, free,
                                                           cap)  # fmt: skip
        d_free[~active] = 0.0
        still = ~active[chunk.ve]
        d_sigma[still], d_crystal[still] = 0.0, 0.0
        for (ph, idx), flow, x, rows in zip(chunk.groups, flows, xi, live, strict=True):
            knee = _knee(ph, 0.5 * cap, dt)
            part = _take(flow, rows)
            grains = idx[rows]
            step = _step_cap(ph, part, d_sigma[grains], x[rows], knee)
            sigma[grains] += step[:, None] * d_sigma[grains]
        state.strain[:, free] += d_free
        b += d_crystal
    ok = done
    state.sigma = sigma
    for ph, idx in chunk.groups:
        state.plastic[idx] = b[idx] + state.plastic[idx] - sigma[idx] @ ph.compliance
    state.xi_rate = [(x - x0) / dt for x, x0 in zip(xi, state.xi, strict=True)]
    state.xi = xi
    return count, tangent, ~ok


@dataclass
class _Linear:
    """Grain Jacobian inverses K = J⁻¹ (crystal frame) with T K and w T K Tᵀ, per grain.

    ``slopes`` per phase group: the slip-rate derivatives each K was built from (column 0 NaN
    until built), see :func:`_update_inverses`.
    """

    stiff: np.ndarray  # (G, 6, 6)
    rotated: np.ndarray  # T K
    weighted: np.ndarray  # w T K Tᵀ
    slopes: list[np.ndarray]

    @classmethod
    def empty(cls, chunk: _Chunk) -> _Linear:
        g = chunk.ve.size
        slopes = [np.full((idx.size, ph.schmid.shape[0] + 1), np.nan) for ph, idx in chunk.groups]
        return cls(np.empty((g, 6, 6)), np.empty((g, 6, 6)), np.empty((g, 6, 6)), slopes)


def _update_inverses(chunk: _Chunk, linear: _Linear, flows: list[_Flow], xi: list[np.ndarray],
                     dt: float, reuse: float, live: list[np.ndarray]) -> None:  # fmt: skip
    """Rebuild the grain inverses (and their rotated forms) whose Jacobians moved.

    Within a step most grains settle after a few iterations while the slowest still iterate;
    a grain's K is kept while every slip-rate derivative Δt ∂γ̇/∂τ stays within ``reuse``
    (relative to itself plus J's elastic scale) of the one K was built from. A Jacobian off by
    a fraction f still contracts the error by about f per iteration, and inverting is the
    dearest part of an iteration.
    """
    rebuilt = []
    for k, ((ph, idx), flow, x) in enumerate(zip(chunk.groups, flows, xi, strict=True)):
        rows = live[k]  # only grains of VEs still iterating
        c = dt * ph.n * ph.gamma_0 * flow.pw[rows] / x[rows]
        ref = linear.slopes[k][rows]
        floor = float(np.min(np.diag(ph.compliance)))  # J's elastic part, ~1/C11
        change = np.abs(c - ref[:, 1:]) / (ref[:, 1:] + floor)
        moved = np.isnan(ref[:, 0]) | (np.max(change, axis=1, initial=0.0) > reuse)
        need = np.flatnonzero(moved)
        if need.size:
            local = need if isinstance(rows, slice) else rows[need]
            jac = ph.compliance + (c[need] @ ph.outer).reshape(-1, 6, 6)
            linear.stiff[idx[local]] = _spd_inverse(jac)
            linear.slopes[k][local, 0] = 0.0
            linear.slopes[k][local, 1:] = c[need]
            rebuilt.append(idx[local])
    if rebuilt:
        rows = np.concatenate(rebuilt)
        t = chunk.rotation[rows]
        linear.rotated[rows] = np.matmul(t, linear.stiff[rows])
        weight = chunk.weight[rows, None, None]
        linear.weighted[rows] = np.matmul(linear.rotated[rows], np.swapaxes(t, -1, -2)) * weight


@dataclass
class _Anderson:
    """Last evaluation (F, F − ξ) of the ξ fixed point per grain, NaN before the first."""

    mapped: np.ndarray
    residual: np.ndarray

    @classmethod
    def empty(cls, xi: np.ndarray) -> _Anderson:
        return cls(np.full_like(xi, np.nan), np.full_like(xi, np.nan))


def _harden(chunk: _Chunk, xi_old: list[np.ndarray], xi: list[np.ndarray], flows: list[_Flow],
            dt: float, saturation: str, starts: np.ndarray, history: list[_Anderson],
            ves: np.ndarray, sigma: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:  # fmt: skip
    """Next iterate of the backward-Euler ξ fixed point for the VEs ``ves``; residual per VE.

    The map F(ξ) = ξₙ + Δt ξ̇(ξ, γ̇(ξ)) can contract slowly or oscillate (fcc with strong
    latent hardening and a small initial ξ), so its iterates are Anderson-accelerated with
    depth 1 per grain (the secant step through the last two evaluations; Walker & Ni, SIAM J.
    Numer. Anal. 49 (2011) 1715) and damped (0.3) where the residual grows; steps that still
    fail to settle are halved by the caller.
    The grain stresses of the updated VEs are rescaled with ξ (:func:`_rescale`), in place.
    Returns ξ and the largest |F(ξ) − ξ| per VE (MPa; 0 for VEs not updated).
    """
    change = np.zeros(chunk.ve.size)
    updated = []
    chosen = ves[chunk.ve]
    for k, ((ph, idx), x0, x, flow) in enumerate(zip(chunk.groups, xi_old, xi, flows, strict=True)):
        rows = np.flatnonzero(chosen[idx])
        if not ph.schmid.shape[0] or not rows.size:
            updated.append(x)
            continue
        xr = x[rows]
        mapped = x0[rows] + dt * _hardening_rate(ph, xr, flow.gdot[rows], saturation)
        residual = mapped - xr
        change[idx[rows]] = np.max(np.abs(residual), axis=1)
        step = mapped
        past = history[k]
        prev_mapped, prev_residual = past.mapped[rows], past.residual[rows]
        seen = np.isfinite(prev_residual[:, 0])
        if seen.any():
            diff = residual - prev_residual
            denominator = np.sum(diff * diff, axis=1)
            usable = seen & (denominator > 0)
            theta = np.where(usable, np.sum(residual * diff, axis=1) /
                             np.where(usable, denominator, 1.0), 0.0)  # fmt: skip
            theta = np.clip(theta, -50.0, 50.0)
            step = mapped - theta[:, None] * np.where(usable[:, None], mapped - prev_mapped, 0.0)
            # a growing residual (oscillation between active slip systems): damped step
            growing = seen & (np.sum(residual**2, axis=1) > np.sum(prev_residual**2, axis=1))
            step = np.where(growing[:, None], xr + 0.3 * residual, step)
        past.mapped[rows], past.residual[rows] = mapped, residual
        new = x.copy()
        new[rows] = np.maximum(step, 0.5 * x0[rows])  # ξ stays positive
        sigma[idx[rows]] = _rescale(ph, sigma[idx[rows]], flow.gdot[rows], xr, new[rows])
        updated.append(new)
    return updated, np.maximum.reduceat(change, starts)


def _newton_step(chunk: _Chunk, linear: _Linear, residual: np.ndarray, stress: np.ndarray,
                 free: np.ndarray, cap: float) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Macro tangent and the Newton corrections of free strains, grain stresses and strains."""
    w = chunk.weight
    tangent = _segment_sum(linear.weighted, chunk.ve, chunk.n_ves)
    tkr = np.einsum("gij,gj->gi", linear.rotated, residual) * w[:, None]
    rhs = _segment_sum(tkr, chunk.ve, chunk.n_ves)[:, free] - stress[:, free]
    d_free = np.linalg.solve(tangent[:, free][:, :, free], rhs[..., None])[..., 0]
    size = np.max(np.abs(d_free), axis=1)
    d_free *= np.minimum(1.0, cap / np.maximum(size, 1e-300))[:, None]
    d_strain = np.zeros((chunk.n_ves, 6))
    d_strain[:, free] = d_free
    d_crystal = np.einsum("gji,gj->gi", chunk.rotation, d_strain[chunk.ve])
    d_sigma = np.einsum("gij,gj->gi", linear.stiff, d_crystal - residual)
    return tangent, d_free, d_sigma, d_crystal


def _spd_inverse(a: np.ndarray) -> np.ndarray:
    """Inverses of symmetric positive-definite (G, n, n) matrices by vectorised Cholesky.

    Several times faster than ``np.linalg.inv`` for the many small (6 × 6) grain tangents:
    loops run over the n columns only, every operation covers all G matrices.
    """
    n = a.shape[-1]
    m = np.moveaxis(a, 0, -1).copy()  # (n, n, G): contiguous per entry
    low = np.zeros_like(m)
    for j in range(n):
        low[j, j] = np.sqrt(m[j, j] - np.einsum("kg,kg->g", low[j, :j], low[j, :j]))
        low[j + 1 :, j] = (
            m[j + 1 :, j] - np.einsum("ikg,kg->ig", low[j + 1 :, :j], low[j, :j])
        ) / low[j, j]
    inv = np.zeros_like(m)  # L⁻¹, column by column (forward substitution on e_j)
    for j in range(n):
        inv[j, j] = 1.0 / low[j, j]
        for i in range(j + 1, n):
            inv[i, j] = -np.einsum("kg,kg->g", low[i, j:i], inv[j:i, j]) / low[i, i]
    return np.einsum("kig,kjg->gij", inv, inv)  # A⁻¹ = L⁻ᵀ L⁻¹


def _step_robust(chunk: _Chunk, state: _State, free: np.ndarray, dt: float, cap: float,
                 opts: TaylorOptions, tangent: np.ndarray) -> tuple[int, np.ndarray]:  # fmt: skip
    """Globally convergent backward-Euler step; updates ``state``; iterations, macro tangent.

    Outer loop: slip resistances ξ by fixed point (started from the last step's rate). Inner
    loop, ξ fixed: Newton on the free macroscopic strains with the volume-averaged consistent
    tangent and a backtracking line search on W per VE (corrections capped at ``cap``).
    """
    xi = [x + dt * r for x, r in zip(state.xi, state.xi_rate, strict=True)]
    current = _evaluate(chunk, state, state.strain, xi, dt, opts)
    iterations = 0
    for _ in range(opts.max_outer):
        current, tangent, used = _equilibrium(chunk, state, current, xi, free, dt, cap, opts,
                                              tangent)  # fmt: skip
        iterations += used
        rates = [_hardening_rate(ph, x, f.gdot, opts.saturation) if ph.schmid.shape[0] else
                 np.zeros_like(x) for (ph, _), x, f in zip(chunk.groups, xi, current.flows,
                                                           strict=True)]  # fmt: skip
        updated = [x0 + dt * r for x0, r in zip(state.xi, rates, strict=True)]
        change = max((float(np.max(np.abs(u - x), initial=0.0)) for u, x in
                      zip(updated, xi, strict=True)), default=0.0)  # fmt: skip
        xi = updated
        if change < opts.tol_xi:
            break
        current = _evaluate(chunk, state, state.strain, xi, dt, opts, start=current)
    state.sigma = current.sigma
    crystal = np.einsum("gji,gj->gi", chunk.rotation, state.strain[chunk.ve])
    for ph, idx in chunk.groups:
        state.plastic[idx] = crystal[idx] - state.sigma[idx] @ ph.compliance
    state.xi_rate = [(x - x0) / dt for x, x0 in zip(xi, state.xi, strict=True)]
    state.xi = xi
    return iterations, tangent


def _equilibrium(chunk: _Chunk, state: _State, current: _Eval, xi: list[np.ndarray],
                 free: np.ndarray, dt: float, cap: float, opts: TaylorOptions,
                 tangent: np.ndarray) -> tuple[_Eval, np.ndarray, int]:  # fmt: skip
    """Newton with line search on the free strains until the free stresses vanish (ξ fixed).

    Returns the equilibrium, the last macroscopic tangent (``tangent`` if none was needed) and
    the number of Newton iterations.
    """
    for count in range(opts.max_outer):
        residual = current.stress[:, free]
        todo = np.max(np.abs(residual), axis=1) >= opts.tol_stress
        if not todo.any():
            return current, tangent, count
        tangent = _macro_tangent(chunk, current, xi, dt)
        delta = -np.linalg.solve(tangent[:, free][:, :, free], residual[..., None])[..., 0]
        size = np.max(np.abs(delta), axis=1)
        delta *= np.minimum(1.0, cap / np.maximum(size, 1e-300))[:, None]
        slope = np.sum(residual * delta, axis=1)
        alpha = np.ones(chunk.n_ves)
        for _ls in range(40):
            trial_strain = state.strain.copy()
            trial_strain[:, free] += alpha[:, None] * delta
            trial = _evaluate(chunk, state, trial_strain, xi, dt, opts, start=current, ves=todo)
            smaller = np.max(np.abs(trial.stress[:, free]), axis=1) < 0.5 * np.max(
                np.abs(residual), axis=1
            )
            ok = todo & ((trial.work <= current.work + 1e-4 * alpha * slope) | smaller)
            current = _merge(current, trial, chunk, ok)
            state.strain[ok] = trial_strain[ok]
            todo &= ~ok
            if not todo.any():
                break
            alpha[todo] *= 0.5
    return current, tangent, opts.max_outer


def _elastic_tangent(chunk: _Chunk) -> np.ndarray:
    """Voigt average of the rotated elastic stiffnesses, (V, 6, 6)."""
    stiff = np.empty((chunk.ve.size, 6, 6))
    for ph, idx in chunk.groups:
        stiff[idx] = ph.stiffness
    t = chunk.rotation
    rotated = np.matmul(np.matmul(t, stiff), np.swapaxes(t, -1, -2))
    return _segment_sum(rotated * chunk.weight[:, None, None], chunk.ve, chunk.n_ves)


def _predict(tangent: np.ndarray, d_known: np.ndarray, known: np.ndarray,
             free: np.ndarray) -> np.ndarray:  # fmt: skip
    """Free strain increments that keep the free stresses unchanged to first order."""
    out = np.zeros_like(d_known)
    rhs = tangent[:, free][:, :, known] @ d_known[:, known, None]
    out[:, free] = -np.linalg.solve(tangent[:, free][:, :, free], rhs)[..., 0]
    return out


def _prepare_grains(
    grain_eulers: np.ndarray, grain_weights: np.ndarray, ve_index: np.ndarray, n_ves: int,
    phases: Sequence[PhenoPowerLaw], phase_index: np.ndarray | None,
) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Validated, VE-sorted grain arrays: order, eulers, weights, VE index, phase index."""
    eulers = _check_eulers(grain_eulers, "taylor_responses").reshape(-1, 3)
    g = eulers.shape[0]
    weights = np.asarray(grain_weights, dtype=float).reshape(-1)
    ve = np.asarray(ve_index).reshape(-1)
    phase = np.zeros(g, dtype=np.int64) if phase_index is None else np.asarray(phase_index)
    for name, arr in (("grain_weights", weights), ("ve_index", ve), ("phase_index", phase)):
        if arr.shape != (g,):
            raise InputError("taylor_responses", name, f"need shape ({g},), got {arr.shape}")
    if (
        not np.issubdtype(ve.dtype, np.integer)
        or ve.min(initial=0) < 0
        or (ve.max(initial=-1) >= n_ves)
    ):
        raise InputError("taylor_responses", "ve_index", f"integers in [0, {n_ves}) expected")
    if (weights <= 0).any() or not np.isfinite(weights).all():
        raise InputError("taylor_responses", "grain_weights", "weights must be positive")
    if phase.min(initial=0) < 0 or phase.max(initial=0) >= len(phases):
        raise InputError("taylor_responses", "phase_index", f"in [0, {len(phases)}) expected")
    empty = np.setdiff1d(np.arange(n_ves), ve)
    if empty.size:
        raise InputError("taylor_responses", "ve_index", f"{empty.size} VE(s) have no grains, "
                         f"first {int(empty[0])}")  # fmt: skip
    order = np.argsort(ve, kind="stable")
    return order, eulers[order], weights[order], ve[order].astype(np.int64), phase[order]


def taylor_simulate(
    grain_eulers: np.ndarray,
    grain_weights: np.ndarray,
    ve_index: np.ndarray,
    n_ves: int,
    params: PhenoPowerLaw | Sequence[PhenoPowerLaw],
    load: LoadCase | None = None,
    *,
    phase_index: np.ndarray | None = None,
    options: TaylorOptions | None = None,
) -> TaylorResult:
    """Taylor (iso-strain) elasto-viscoplastic response of many VEs at once.

    ``grain_eulers`` (G, 3) Bunge radians, ``grain_weights`` (G,) volume of each grain (voxel
    counts), ``ve_index`` (G,) the VE of each grain in [0, n_ves). ``params`` one phase, or a
    list of phases selected per grain by ``phase_index`` (G,). All grains of all VEs are
    integrated together (vectorised), in chunks of whole VEs of about
    ``options.chunk_grains`` grains.
    """
    load = load or LoadCase()
    opts = options or TaylorOptions()
    phases = [params] if isinstance(params, PhenoPowerLaw) else list(params)
    _, eulers, weights, ve, phase = _prepare_grains(
        grain_eulers, grain_weights, ve_index, int(n_ves), phases, phase_index
    )
    constants = [_PhaseConstants.of(p) for p in phases]
    totals = np.bincount(ve, weights=weights, minlength=n_ves)
    weights = weights / totals[ve]
    out_e = np.zeros((int(n_ves), int(load.increments) + 1, 6))
    out_s = np.zeros_like(out_e)
    iterations = np.zeros(int(load.increments) * int(opts.substeps), dtype=np.int64)

    jobs = []
    for first, last in _chunks(ve, int(n_ves), opts.chunk_grains):
        lo, hi = np.searchsorted(ve, [first, last])
        chunk = _Chunk(
            ve=ve[lo:hi] - first, weight=weights[lo:hi],
            rotation=crystal_to_sample(eulers[lo:hi]),
            groups=[(c, np.flatnonzero(phase[lo:hi] == k)) for k, c in enumerate(constants)
                    if (phase[lo:hi] == k).any()],
            n_ves=last - first,
        )  # fmt: skip
        jobs.append((first, last, chunk, load, opts))
    workers = _workers(opts, len(jobs), int(ve.size))
    if workers == 1:
        with _single_threaded_blas():
            results = [_solve_chunk(job) for job in jobs]
    else:
        with _process_pool(workers) as pool:
            results = list(pool.map(_solve_chunk, jobs))
    for first, last, (e, s, it) in results:
        out_e[first:last], out_s[first:last] = e, s
        iterations = np.maximum(iterations, it)
    return TaylorResult(time=load.times, strain=from_mandel(out_e), stress=from_mandel(out_s),
                        iterations=iterations)  # fmt: skip


def _solve_chunk(job: tuple[int, int, _Chunk, LoadCase, TaylorOptions]) -> tuple[Any, ...]:
    """One chunk's response (module level so that process pools can pickle it)."""
    first, last, chunk, load, opts = job
    return first, last, _run_chunk(chunk, load, opts)


def _chunks(ve: np.ndarray, n_ves: int, size: int) -> list[tuple[int, int]]:
    """Ranges [first, last) of whole VEs with about ``size`` grains each."""
    counts = np.bincount(ve, minlength=n_ves)
    bounds, first, total = [], 0, 0
    for k, c in enumerate(counts):
        if total and total + c > size:
            bounds.append((first, k))
            first, total = k, 0
        total += int(c)
    bounds.append((first, n_ves))
    return bounds


def _workers(opts: TaylorOptions, n_chunks: int, n_grains: int) -> int:
    """Worker processes: ``opts.workers``, or (0) the CPUs this process may use (≤ 8).

    Small problems (under 8192 grains) stay in this process: starting workers costs more.
    """
    if opts.workers > 0:
        return max(1, min(opts.workers, n_chunks))
    if n_grains < 8192:
        return 1
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 8, n_chunks))


def _process_pool(workers: int) -> ProcessPoolExecutor:
    """Processes for the chunks (numpy's many small operations do not scale with threads)."""
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=_limit_blas)  # fmt: skip


def _limit_blas() -> None:
    """Worker initialiser: BLAS on one thread for the worker's lifetime."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return
    threadpool_limits(limits=1, user_api="blas")


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread: its matrices here are tiny, and the chunks run in parallel instead.

    Multithreaded OpenBLAS on (2048 × 18) @ (18 × 36) products is several times slower than
    one thread on a busy machine.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def taylor_responses(
    grain_eulers: np.ndarray,
    grain_weights: np.ndarray,
    ve_index: np.ndarray,
    n_ves: int,
    params: PhenoPowerLaw | Sequence[PhenoPowerLaw],
    load: LoadCase | None = None,
    *,
    phase_index: np.ndarray | None = None,
    options: TaylorOptions | None = None,
) -> np.ndarray:
    """Volume-averaged Cauchy stress along the load axis, (n_ves, increments + 1), MPa.

    See :func:`taylor_simulate` for the arguments; this is its σ along ``load.direction``.
    """
    load = load or LoadCase()
    result = taylor_simulate(grain_eulers, grain_weights, ve_index, n_ves, params, load,
                             phase_index=phase_index, options=options)  # fmt: skip
    return result.along(load.direction)


def taylor_responses_of_ves(
    eulers: np.ndarray,
    params: PhenoPowerLaw,
    load: LoadCase | None = None,
    options: TaylorOptions | None = None,
) -> np.ndarray:
    """σ along the load axis (N, increments + 1), MPa, for voxel VEs ``(N, X, Y, Z, 3)``."""
    grains, counts, ve = ve_grains_batch(eulers)
    return taylor_responses(grains, counts, ve, np.asarray(eulers).shape[0], params, load,
                            options=options)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# DAMASK backend


def damask_executable() -> str | None:
    """Path of the DAMASK grid solver (``DAMASK_grid``, or ``damask_grid`` of newer releases)."""
    return shutil.which("DAMASK_grid") or shutil.which("damask_grid")


def _missing_damask() -> BackendUnavailableError:
    return BackendUnavailableError(
        "DAMASK_grid is not on PATH, so the 'damask' CP backend cannot run. Install the DAMASK "
        "grid solver (conda install -c conda-forge damask-grid, or brew install damask-grid, "
        "or see https://damask-multiphysics.org/installation) and make sure DAMASK_grid (or "
        "damask_grid) is on PATH, or use the built-in backend 'taylor'."
    )


def damask_load_case(load: LoadCase) -> dict[str, Any]:
    """DAMASK_grid load case (``loadstep`` with ``dot_F``/``P``) for ``load``, as a YAML dict.

    The axis component of ``dot_F`` is ± rate, the two lateral normal components are
    stress-free; ``shear="fixed"`` prescribes zero off-diagonal ``dot_F`` (DAMASK's
    ``tensionX.yaml``), ``"free"`` makes the lower off-diagonal ``P`` zero and keeps the upper
    ``dot_F`` at zero (DAMASK forbids stress control of both partners, which would rotate).
    Every increment is written (``f_out: 1``).
    """
    a = load.axis
    dot_f: list[list[Any]] = [[0.0] * 3 for _ in range(3)]
    stress: list[list[Any]] = [["x"] * 3 for _ in range(3)]
    for i in range(3):
        if i != a:
            dot_f[i][i], stress[i][i] = "x", 0.0
    dot_f[a][a] = float(np.sign(load.strain) * load.rate)
    if load.shear == "free":
        for i in range(3):
            for j in range(i):
                dot_f[i][j], stress[i][j] = "x", 0.0
    step = {
        "boundary_conditions": {"mechanical": {"dot_F": dot_f, "P": stress}},
        "discretization": {"t": float(load.duration), "N": int(load.increments)},
        "f_out": 1,
    }
    return {"solver": {"mechanical": "spectral_basic"}, "loadstep": [step]}


def write_damask_inputs(
    grain_ids: np.ndarray,
    grain_eulers: np.ndarray,
    size: Sequence[float] | np.ndarray,
    params: PhenoPowerLaw,
    load: LoadCase,
    workdir: str | Path,
) -> dict[str, Path]:
    """Write ``grid.vti``, ``material.yaml``, ``load.yaml`` and ``numerics.yaml`` into workdir.

    ``grain_ids`` (X, Y, Z) index ``grain_eulers`` (G, 3); written through
    :func:`latentmech.ve.io.write_damask_grid`. Returns the paths by role.
    """
    import damask

    from latentmech.ve.io import write_damask_grid

    out = Path(workdir)
    grid, material = write_damask_grid(out, grain_ids, grain_eulers, size, params.name,
                                       params.to_damask_phase())  # fmt: skip
    paths = {"grid": grid, "material": material, "load": out / "load.yaml",
             "numerics": out / "numerics.yaml"}  # fmt: skip
    case = damask_load_case(load)
    for step in case["loadstep"]:
        bc = step["boundary_conditions"]["mechanical"]
        for key, matrix in bc.items():
            bc[key] = np.ma.masked_array(
                [[0.0 if v == "x" else v for v in row] for row in matrix],
                mask=[[v == "x" for v in row] for row in matrix],
            )
    damask.LoadcaseGrid(case).save(paths["load"])
    numerics = {"solver": {"grid": {"mechanical": {"N_iter_min": 1, "N_iter_max": 100}}}}
    damask.YAML(numerics).save(paths["numerics"])
    return paths


def run_damask(
    grain_ids: np.ndarray,
    grain_eulers: np.ndarray,
    size: Sequence[float] | np.ndarray,
    params: PhenoPowerLaw,
    load: LoadCase,
    workdir: str | Path,
    *,
    timeout: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run DAMASK_grid on one VE: (strain, σ MPa) along the load axis per increment.

    Raises :class:`BackendUnavailable` (before writing anything) when the solver is not on PATH,
    :class:`RuntimeError` with the tail of its log when it fails.
    """
    exe = damask_executable()
    if exe is None:
        raise _missing_damask()
    paths = write_damask_inputs(grain_ids, grain_eulers, size, params, load, workdir)
    job = "job"
    cmd = [exe, "-l", paths["load"].name, "-g", paths["grid"].name, "-m", paths["material"].name,
           "-n", paths["numerics"].name, "-j", job]  # fmt: skip
    logfile = Path(workdir) / "damask.log"
    with open(logfile, "w") as handle:
        done = subprocess.run(cmd, cwd=workdir, stdout=handle, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)  # fmt: skip
    result = Path(workdir) / f"{job}.hdf5"
    if done.returncode != 0 or not result.exists():
        tail = logfile.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"DAMASK_grid failed (exit {done.returncode}) in {workdir}:\n"
                           + "\n".join(tail))  # fmt: skip
    return read_damask_stress(result, load.direction)


def damask_responses_of_ves(
    eulers: np.ndarray,
    grain_ids: np.ndarray,
    params: PhenoPowerLaw,
    load: LoadCase,
    workdir: str | Path,
    voxel_size: float = 1.0e-6,
) -> np.ndarray:
    """DAMASK_grid σ along the load axis (N, increments + 1), MPa, one run per VE.

    ``eulers`` (N, X, Y, Z, 3) and ``grain_ids`` (N, X, Y, Z); each VE runs in
    ``workdir/ve_<i>``. Raises :class:`BackendUnavailable` when DAMASK_grid is not on PATH.
    """
    if damask_executable() is None:
        raise _missing_damask()
    eulers, ids = np.asarray(eulers, dtype=float), np.asarray(grain_ids)
    out = np.zeros((eulers.shape[0], int(load.increments) + 1))
    for i in range(eulers.shape[0]):  # one DAMASK run per VE
        unique, first = np.unique(ids[i].reshape(-1), return_index=True)
        dense = np.searchsorted(unique, ids[i])
        grain_eulers = eulers[i].reshape(-1, 3)[first]
        size = np.asarray(ids[i].shape, dtype=float) * voxel_size
        _, stress = run_damask(dense, grain_eulers, size, params, load,
                               Path(workdir) / f"ve_{i}")  # fmt: skip
        out[i] = stress
    return out


def _increments(handle: Any) -> list[str]:
    names = [k for k in handle if k.startswith("increment_")]
    return sorted(names, key=lambda s: int(s.split("_")[1]))


def read_damask_stress(result_hdf5: str | Path, direction: str = "x") -> tuple[np.ndarray, ...]:
    """Volume-averaged strain ``F − 1`` and Cauchy stress (MPa) along ``direction`` per increment.

    Reads a DADF5 result (read only; nothing is added to the file): for every written
    increment, σ = P Fᵀ / det F of every constituent, averaged over cells (equal reference
    volumes of the grid) and over the constituents of a cell (equal weights). Raises
    :class:`InputError` when the file lacks ``F`` or ``P`` of a phase.
    """
    import h5py

    file = Path(result_hdf5)
    if direction not in AXES:
        raise InputError(file, "direction", f"direction {direction!r} not in x, y, z")
    a = AXES[direction]
    try:
        handle = h5py.File(file, "r")
    except OSError as err:
        raise InputError(file, "", f"not a readable HDF5 file ({err})") from None
    with handle:
        if "cell_to" not in handle or not _increments(handle):
            raise InputError(file, "", "not a DADF5 result (no cell_to / increment_* groups)")
        mapping = handle["cell_to/phase"][()]
        labels = np.char.decode(mapping["label"].astype("S"), "utf-8")
        entries = mapping["entry"]
        strain, stress = [], []
        for inc in _increments(handle):
            f_aa, s_aa = _constituent_values(handle, inc, labels, entries, a, file)
            strain.append(f_aa.mean() - 1.0)
            stress.append(s_aa.mean() / MPA)
    return np.asarray(strain), np.asarray(stress)


def _constituent_values(handle: Any, inc: str, labels: np.ndarray, entries: np.ndarray,
                        a: int, file: Path) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """F_aa and σ_aa of every (cell, constituent) of increment ``inc``."""
    f_aa = np.empty(labels.shape)
    s_aa = np.empty(labels.shape)
    for name in np.unique(labels):
        group = f"{inc}/phase/{name}/mechanical"
        if f"{group}/F" not in handle or f"{group}/P" not in handle:
            raise InputError(file, f"{inc}/phase/{name}", "phase has no F or P output; "
                             "Cauchy stress needs both (add them to 'output')")  # fmt: skip
        where = labels == name
        f = handle[f"{group}/F"][()][entries[where]]
        p = handle[f"{group}/P"][()][entries[where]]
        cauchy = np.einsum("nij,nkj->nik", p, f) / np.linalg.det(f)[:, None, None]
        f_aa[where], s_aa[where] = f[:, a, a], cauchy[:, a, a]
    return f_aa, s_aa


@dataclass
class DamaskSetup:
    """Taylor-model inputs recovered from a DADF5 result: grains, phases and load case."""

    eulers: np.ndarray  # (G, 3) Bunge radians
    weights: np.ndarray  # (G,) cells per grain
    phase_index: np.ndarray  # (G,)
    phases: list[PhenoPowerLaw]
    load: LoadCase
    output_every: int  # f_out of the load case


def read_damask_setup(result_hdf5: str | Path) -> DamaskSetup:
    """Grains (initial orientations of ``increment_0``), phases and load case of a DADF5 file.

    Phases come from ``/setup/<material>.yaml`` (:meth:`PhenoPowerLaw.from_damask_phase`), the
    load case from the grid solver's ``/setup/<load>.yaml`` (one load step of uniaxial
    ``dot_F`` with stress-free lateral normals); grains are the distinct orientations per phase
    with their cell counts.
    """
    import h5py

    file = Path(result_hdf5)
    with h5py.File(file, "r") as handle:
        texts = _setup_texts(handle, file)
        material = _find_setup(texts, "phase", file)
        loadcase = _find_setup(texts, "loadstep", file)
        names = list(material["phase"])
        mapping = handle["cell_to/phase"][()]
        labels = np.char.decode(mapping["label"].astype("S"), "utf-8").reshape(-1)
        entries = mapping["entry"].reshape(-1)
        eulers, weights, phase_index = [], [], []
        for k, name in enumerate(names):
            if not (labels == name).any():
                continue
            q = handle[f"increment_0/phase/{name}/mechanical/O"][()][entries[labels == name]]
            unique, counts = np.unique(q, axis=0, return_counts=True)
            eulers.append(_quaternions_to_eulers(unique))
            weights.append(counts)
            phase_index.append(np.full(counts.size, k))
    phases = [PhenoPowerLaw.from_damask_phase(material["phase"][n], file, n) for n in names]
    load, every = _load_from_damask(loadcase, file)
    return DamaskSetup(np.concatenate(eulers), np.concatenate(weights).astype(float),
                       np.concatenate(phase_index), phases, load, every)  # fmt: skip


def _setup_texts(handle: Any, file: Path) -> dict[str, str]:
    if "setup" not in handle:
        raise InputError(file, "setup", "no /setup group with the simulation's input files")
    texts = {}
    for key, item in handle["setup"].items():
        if key.endswith(".yaml") and hasattr(item, "shape"):
            value = item[()]
            value = value[0] if np.ndim(value) else value
            texts[key] = value.decode() if isinstance(value, bytes) else str(value)
    return texts


def _find_setup(texts: Mapping[str, str], key: str, file: Path) -> dict[str, Any]:
    import yaml

    for text in texts.values():
        content = yaml.safe_load(text)
        if isinstance(content, dict) and key in content:
            return content
    raise InputError(file, "setup", f"no input YAML with a '{key}' section")


def _quaternions_to_eulers(q: np.ndarray) -> np.ndarray:
    from latentmech.ve.orientation import quaternions_to_eulers

    return quaternions_to_eulers(q)


def _load_from_damask(case: Mapping[str, Any], file: Path) -> tuple[LoadCase, int]:
    """LoadCase of a single uniaxial DAMASK_grid load step and its output frequency."""
    steps = case.get("loadstep") or []
    if len(steps) != 1:
        raise InputError(file, "loadstep", f"{len(steps)} load steps; one uniaxial step expected")
    step = steps[0]
    bc = step["boundary_conditions"]["mechanical"]
    dot_f, stress = bc.get("dot_F"), bc.get("P")
    if dot_f is None or stress is None:
        raise InputError(file, "loadstep", "dot_F and P expected (mixed boundary conditions)")
    rates = [(i, dot_f[i][i]) for i in range(3) if dot_f[i][i] != "x" and dot_f[i][i] != 0]
    lateral_free = all(stress[i][i] == 0 for i in range(3) if i != (rates[0][0] if rates else -1))
    if len(rates) != 1 or not lateral_free:
        raise InputError(file, "loadstep", "one strained axis with stress-free lateral normals "
                         "expected")  # fmt: skip
    axis, rate = rates[0]
    off = [(i, j) for i in range(3) for j in range(3) if i != j]
    fixed = all(dot_f[i][j] == 0 for i, j in off)
    t, n = float(step["discretization"]["t"]), int(step["discretization"]["N"])
    load = LoadCase(strain=float(rate) * t, rate=abs(float(rate)), increments=n,
                    direction="xyz"[axis], shear="fixed" if fixed else "free")  # fmt: skip
    return load, int(step.get("f_out", 1))


__all__ = [
    "AXES",
    "BackendUnavailable",
    "BackendUnavailableError",
    "DamaskSetup",
    "LoadCase",
    "PhenoPowerLaw",
    "TaylorOptions",
    "TaylorResult",
    "aluminium",
    "copper",
    "crystal_to_sample",
    "damask_executable",
    "damask_load_case",
    "damask_responses_of_ves",
    "euler_matrices",
    "from_mandel",
    "interaction_matrix",
    "magnesium",
    "mandel_rotation",
    "read_damask_setup",
    "read_damask_stress",
    "run_damask",
    "schmid_tensors",
    "slip_systems",
    "stiffness_mandel",
    "stiffness_voigt",
    "taylor_responses",
    "taylor_responses_of_ves",
    "taylor_simulate",
    "to_mandel",
    "ve_grains",
    "ve_grains_batch",
    "write_damask_inputs",
]
