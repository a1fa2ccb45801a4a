"""Seeded synthetic HR-DIC maps of slip in FCC polycrystals, and the properties they imply.

The embedded default study has no real HR-DIC data, so it runs on maps from this generator. The
maps mimic the four modalities of the paper (Fig. 2): longitudinal strain ``exx``, slip
intensity (nm), slip direction (degrees between shear direction and band trace) and in-plane
lattice rotation (rad), for a specimen deformed to a few macroscopic plastic strains.

What is simulated, once per specimen (cached, so the steps of a specimen are cheap):

* a polycrystal: a power (weighted Voronoi) tessellation of disks packed by random sequential
  addition, the disks' diameters drawn lognormally so the cells' equivalent-circle diameters follow
  the material's grain-size distribution;
* per grain an in-plane rotation; FCC-like slip traces at 0°, 60° and 120° from it (± a few
  degrees); 1..``active_systems`` systems become active, those with the largest resolved shear
  (``|sin 2θ|``, tensile axis along x) first; each active system has a shear-direction angle;
* per active system a family of parallel slip bands with the material's mean spacing (lognormal
  scatter), confined to the grain, each either planar or a wavy cross-slip trace (sinusoid plus
  smoothed random walk), covering the whole grain chord or only part of it (tapered free ends);
* a per-band slip rate in nm per % plastic strain (lognormal, Schmid-weighted, normalised so its
  mean over the specimen is ``intensity_nm_per_pct``), a Gaussian profile across the band;
* NaN holes (small ellipses, identical in every modality and every step).

Per step everything that grows with deformation is linear in the step's macroscopic plastic
strain ε (in %): band intensities, the band and background parts of ``exx``, lattice rotation.
Steps of a specimen therefore differ only by that growth and by fresh measurement noise.

Conventions: arrays are (y, x) = (row, column), the tensile axis is x (horizontal). A trace angle
θ is measured from +x towards +y (towards increasing row index) and lies in [0, 180). A band's
slip (displacement jump) of amplitude ``s`` (nm) points at angle ``θ + α`` where α is the
shear-direction angle reported in ``direction``; spread over a band of width ``h`` it gives a
longitudinal strain ``exx = s |sin θ cos(θ + α)| / h`` (sense chosen so that bands elongate
along the tensile axis).

Randomness comes from numpy Generators seeded by a SHA-256 hash of (seed, material name,
specimen[, step], purpose), so results are bit-identical across processes and platforms.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from latentmech.core.errors import InputError
from latentmech.core.jsonconfig import JsonConfig

__all__ = [
    "DEFAULT_MATERIALS",
    "EXTRA_MATERIALS",
    "PROPERTY_NAMES",
    "MaterialSpec",
    "SynthMap",
    "SynthSettings",
    "default_material",
    "localisation_share",
    "macroscopic_stress",
    "material_properties",
    "synthesize",
]

#: Keys of :func:`material_properties`, in the order of the paper's Table 4.
PROPERTY_NAMES: tuple[str, ...] = ("YS", "Q", "b", "UTS", "El", "FS")

_SYSTEM_OFFSETS_DEG = (0.0, 60.0, 120.0)  # traces of three {111} planes seen on the surface
_TRACE_JITTER_DEG = 4.0  # real traces are not exactly 60° apart
_SPACING_SIGMA = 0.3  # lognormal scatter of individual band spacings
_GRAIN_SPACING_SIGMA = 0.12  # lognormal scatter of the mean spacing from grain to grain
_FULL_CHORD_SHARE = 0.55  # share of bands crossing their whole grain
_TAPER_UM = 3.0  # length over which the slip of a band fades out at a free end
_PACKING = 0.6  # area fraction of the packed disks that seed the power tessellation
_PROPERTY_NOISE = 0.025  # relative seeded scatter of the material properties


# --------------------------------------------------------------------------------------------
# Specifications
# --------------------------------------------------------------------------------------------


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _as_int(value: Any) -> int:
    number = _as_float(value)
    if not number.is_integer():
        raise TypeError(f"expected an integer, got {value!r}")
    return int(number)


def _as_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, got {value!r}")
    return value


def _as_float_tuple(value: Any) -> tuple[float, ...]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise TypeError(f"expected a list of numbers, got {value!r}")
    return tuple(_as_float(v) for v in value)


def _as_int_pair(value: Any) -> tuple[int, int]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise TypeError(f"expected a list of two integers, got {value!r}")
    items = tuple(_as_int(v) for v in value)
    if len(items) != 2:
        raise TypeError(f"expected two integers, got {len(items)}")
    return items  # type: ignore[return-value]


def _from_mapping(
    cls: type,
    d: Mapping[str, Any],
    converters: Mapping[str, Callable[[Any], Any]],
    source: str,
    where: str,
) -> Any:
    """Build dataclass ``cls`` from a config mapping, naming the offending key on failure."""
    if not isinstance(d, Mapping):
        raise InputError(source, where, f"expected a mapping, got {type(d).__name__}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise InputError(source, where, f"unknown key(s) {unknown}; allowed: {names}")
    required = [
        f.name
        for f in fields(cls)
        if f.default is f.default_factory  # both MISSING: no default
    ]
    missing = [k for k in required if k not in d]
    if missing:
        raise InputError(source, where, f"missing key(s) {missing}")
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        try:
            kwargs[key] = converters[key](value)
        except (TypeError, ValueError) as err:
            raise InputError(source, f"{where}.{key}" if where else key, str(err)) from None
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise InputError(source, where, str(err)) from None


@dataclass(frozen=True)
class MaterialSpec(JsonConfig):
    """Band statistics of one material; everything the generator and the properties use.

    ``grain_size_um`` is the median equivalent-circle diameter, ``grain_size_sigma`` the
    lognormal shape of the grain-size distribution, ``band_spacing_um`` the mean distance between
    parallel bands of one system in a grain, ``active_systems`` the maximum number of active
    systems per grain (each grain draws 1..active_systems), ``wavy`` the share of bands drawn as
    wavy cross-slip traces, ``intensity_nm_per_pct`` the mean band slip per % plastic strain,
    ``intensity_sigma`` its lognormal spread over bands and ``strain_pct`` the macroscopic
    plastic strain (%) of each deformation step.
    """

    name: str
    grain_size_um: float
    grain_size_sigma: float
    band_spacing_um: float
    active_systems: int
    wavy: float
    intensity_nm_per_pct: float
    intensity_sigma: float
    strain_pct: tuple[float, ...]

    def __post_init__(self) -> None:
        checks = {
            "grain_size_um > 0": self.grain_size_um > 0,
            "grain_size_sigma in [0, 1.5]": 0 <= self.grain_size_sigma <= 1.5,
            "band_spacing_um > 0": self.band_spacing_um > 0,
            "active_systems in 1..3": self.active_systems in (1, 2, 3),
            "wavy in [0, 1]": 0 <= self.wavy <= 1,
            "intensity_nm_per_pct > 0": self.intensity_nm_per_pct > 0,
            "intensity_sigma in [0, 2]": 0 <= self.intensity_sigma <= 2,
            "strain_pct non-empty and >= 0": len(self.strain_pct) > 0
            and all(s >= 0 for s in self.strain_pct),
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"material {self.name!r}: expected {', '.join(failed)}")

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], *, source: str = "config.yaml", where: str = ""
    ) -> MaterialSpec:
        """Build from a config entry (lists become tuples); unknown or missing keys are errors."""
        converters: dict[str, Callable[[Any], Any]] = {
            "name": _as_str,
            "grain_size_um": _as_float,
            "grain_size_sigma": _as_float,
            "band_spacing_um": _as_float,
            "active_systems": _as_int,
            "wavy": _as_float,
            "intensity_nm_per_pct": _as_float,
            "intensity_sigma": _as_float,
            "strain_pct": _as_float_tuple,
        }
        return _from_mapping(cls, d, converters, source, where)


@dataclass(frozen=True)
class SynthSettings(JsonConfig):
    """Map geometry and measurement noise, shared by all materials of a study."""

    shape_px: tuple[int, int] = (384, 384)
    pixel_size_um: float = 0.5
    band_width_px: float = 1.5
    noise_nm: float = 2.0
    strain_noise: float = 2e-4
    rotation_noise_rad: float = 5e-4
    hole_fraction: float = 0.003

    def __post_init__(self) -> None:
        checks = {
            "shape_px of two integers >= 16": len(self.shape_px) == 2
            and all(int(n) >= 16 for n in self.shape_px),
            "pixel_size_um > 0": self.pixel_size_um > 0,
            "band_width_px > 0": self.band_width_px > 0,
            "noise_nm >= 0": self.noise_nm >= 0,
            "strain_noise >= 0": self.strain_noise >= 0,
            "rotation_noise_rad >= 0": self.rotation_noise_rad >= 0,
            "hole_fraction in [0, 0.5]": 0 <= self.hole_fraction <= 0.5,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"synthetic settings: expected {', '.join(failed)}")

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], *, source: str = "config.yaml", where: str = ""
    ) -> SynthSettings:
        """Build from a config entry; every key is optional, unknown keys are errors."""
        converters: dict[str, Callable[[Any], Any]] = {
            "shape_px": _as_int_pair,
            "pixel_size_um": _as_float,
            "band_width_px": _as_float,
            "noise_nm": _as_float,
            "strain_noise": _as_float,
            "rotation_noise_rad": _as_float,
            "hole_fraction": _as_float,
        }
        return _from_mapping(cls, d, converters, source, where)


@dataclass(frozen=True)
class SynthMap:
    """One synthetic HR-DIC map (all four modalities plus ground truth) of one step.

    Float modalities hold NaN in the holes; ``band_labels`` and ``grain_ids`` are ground truth
    and have no holes. ``band_labels`` marks the band cores (``|distance| <= width/2``) with band
    ids that are the same at every step of a specimen. ``bands`` has one row per band: ``band``,
    ``grain``, ``system`` (0 = the grain's most stressed active system), ``trace_angle_deg``,
    ``shear_angle_deg`` (value of ``direction`` on the band), ``wavy``, ``rate_nm_per_pct``,
    ``intensity_nm`` (noiseless peak slip at this step = rate × strain), ``length_um``
    (extent of the labelled core along the trace) and ``n_pixels`` (labelled core pixels).
    """

    exx: np.ndarray
    intensity: np.ndarray
    direction: np.ndarray
    rotation: np.ndarray
    band_labels: np.ndarray
    grain_ids: np.ndarray
    bands: pd.DataFrame

    def modalities(self) -> dict[str, np.ndarray]:
        """The four measured fields by name, in the paper's order."""
        return {
            "exx": self.exx,
            "intensity": self.intensity,
            "direction": self.direction,
            "rotation": self.rotation,
        }


# --------------------------------------------------------------------------------------------
# Random streams
# --------------------------------------------------------------------------------------------


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """Generator seeded from a SHA-256 of the parts: stable across processes (unlike hash())."""
    key = "|".join(["latentmech.dic.synth", str(int(seed)), *(str(p) for p in parts)])
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _lognormal_mean_one(rng: np.random.Generator, sigma: float, size: Any) -> np.ndarray:
    """Lognormal factors with mean exactly 1 in expectation (median exp(-σ²/2))."""
    return np.exp(rng.normal(-0.5 * sigma**2, sigma, size))


# --------------------------------------------------------------------------------------------
# Polycrystal
# --------------------------------------------------------------------------------------------


def _pack_disks(
    extent: tuple[float, float, float, float], radii: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Random sequential addition of disks (radii sorted descending); centres (n, 2) as (x, y).

    Placed disks are registered in a bucket grid over the square of half-size 2r around their
    centre; since later disks are no larger, a candidate only has to be checked against the
    disks registered in its bucket. A disk that finds no free spot among a batch of candidates
    goes where it overlaps least, so the packing never fails.
    """
    x0, x1, y0, y1 = extent
    cell = max(float(np.median(radii)) * 2.0, 1.0)
    ncx, ncy = int((x1 - x0) // cell) + 1, int((y1 - y0) // cell) + 1
    table = np.full((ncx * ncy, 16), -1, np.intp)
    fill = np.zeros(ncx * ncy, np.intp)
    centres = np.empty((len(radii), 2))
    n_tries = 48
    for i, r in enumerate(radii):
        cx = rng.uniform(x0, x1, n_tries)
        cy = rng.uniform(y0, y1, n_tries)
        bucket = np.minimum(((cy - y0) // cell).astype(np.intp), ncy - 1) * ncx + np.minimum(
            ((cx - x0) // cell).astype(np.intp), ncx - 1
        )
        nb = table[bucket]
        gap = np.hypot(cx[:, None] - centres[nb, 0], cy[:, None] - centres[nb, 1]) - radii[nb] - r
        clearance = np.where(nb >= 0, gap, np.inf).min(axis=1)
        ok = np.flatnonzero(clearance >= 0)
        best = ok[0] if ok.size else int(np.argmax(clearance))
        centres[i] = cx[best], cy[best]
        table, fill = _register(table, fill, centres[i], 2 * r, (x0, y0, cell, ncx, ncy), i)
    return centres


def _register(
    table: np.ndarray,
    fill: np.ndarray,
    centre: np.ndarray,
    half: float,
    grid: tuple[float, float, float, int, int],
    index: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Add disk ``index`` to every bucket the square ``centre ± half`` touches (grows the table)."""
    x0, y0, cell, ncx, ncy = grid
    ix = np.arange(
        max(int((centre[0] - half - x0) // cell), 0),
        min(int((centre[0] + half - x0) // cell), ncx - 1) + 1,
    )
    iy = np.arange(
        max(int((centre[1] - half - y0) // cell), 0),
        min(int((centre[1] + half - y0) // cell), ncy - 1) + 1,
    )
    buckets = (iy[:, None] * ncx + ix[None, :]).ravel()
    if buckets.size and fill[buckets].max() >= table.shape[1]:
        table = np.concatenate([table, np.full_like(table, -1)], axis=1)
    table[buckets, fill[buckets]] = index
    fill[buckets] += 1
    return table, fill


def _tessellate(
    shape: tuple[int, int], d_px: float, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Grain ids 1..G of a power tessellation whose cells follow the lognormal size distribution.

    Target diameters D are drawn until their circle areas fill the (margin-padded) domain; disks
    of diameter D·sqrt(packing) are packed without overlap (sites spread evenly, big ones
    first) and weighted by the square of their *target* radius D/2, so each cell's area follows
    its target circle (realised median ECD within ~5 %, log-spread within ~0.05 of the spec; a
    tiny site squeezed between large ones can lose its cell). The power diagram is a
    nearest-neighbour query on sites lifted to 3D (z² = w_max - w).
    """
    h, w = shape
    margin = 1.2 * d_px
    extent = (-margin, w + margin, -margin, h + margin)
    area = (w + 2 * margin) * (h + 2 * margin)
    mean_cell = math.pi / 4 * d_px**2 * math.exp(2 * sigma**2)
    n_draw = int(1.5 * area / mean_cell) + 16
    diam = d_px * np.exp(sigma * rng.standard_normal(n_draw))
    cum = np.cumsum(math.pi / 4 * diam**2)
    diam = np.sort(diam[: int(np.searchsorted(cum, area)) + 1])[::-1]
    radii = 0.5 * diam * math.sqrt(_PACKING)
    centres = _pack_disks(extent, radii, rng)
    weights = (0.5 * diam) ** 2
    lifted = np.column_stack([centres, np.sqrt(weights.max() - weights)])
    yy, xx = np.mgrid[0:h, 0:w]
    pts = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5, np.zeros(h * w)])
    _, nearest = cKDTree(lifted).query(pts, workers=-1)
    _, compact = np.unique(nearest, return_inverse=True)
    return (compact.reshape(h, w) + 1).astype(np.int32)


# --------------------------------------------------------------------------------------------
# Slip bands
# --------------------------------------------------------------------------------------------


@dataclass
class _BandCanvas:
    """Per-pixel winners while bands are drawn: strongest band value, its id, core labels."""

    value: np.ndarray  # flat float64: slip per % strain of the strongest band at the pixel
    support: np.ndarray  # flat int32: provisional id of that band (0 = none)
    core_value: np.ndarray  # flat float64: same, restricted to band cores
    label: np.ndarray  # flat int32: provisional id of the strongest band whose core covers it

    @classmethod
    def empty(cls, n: int) -> _BandCanvas:
        return cls(np.zeros(n), np.zeros(n, np.int32), np.zeros(n), np.zeros(n, np.int32))

    def paint(self, idx: np.ndarray, ids: np.ndarray, value: np.ndarray, core: np.ndarray) -> None:
        """Keep, per pixel, the band with the largest value (overall and among cores)."""
        better = value > self.value[idx]
        self.value[idx[better]] = value[better]
        self.support[idx[better]] = ids[better]
        better = core & (value > self.core_value[idx])
        self.core_value[idx[better]] = value[better]
        self.label[idx[better]] = ids[better]

    def resolve(self) -> None:
        """Give a labelled pixel to its labelled band in every field (value, support id).

        Without this, a strong band's profile tail could set the slip at a weaker band's core,
        and a band's labelled pixels would show another band's slip and shear direction.
        """
        cored = self.label > 0
        self.value[cored] = self.core_value[cored]
        self.support[cored] = self.label[cored]


def _band_positions(
    p_min: float, p_max: float, spacing: float, rng: np.random.Generator
) -> np.ndarray:
    """Positions along the band normal: random phase, then lognormally scattered spacings."""
    n_max = int((p_max - p_min) / spacing * 3) + 4
    steps = spacing * _lognormal_mean_one(rng, _SPACING_SIGMA, n_max)
    pos = p_min + rng.uniform(0, spacing) + np.concatenate([[0.0], np.cumsum(steps[:-1])])
    return pos[pos <= p_max]


def _meanders(
    n: int, s0: float, length: int, spacing: float, wavy: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Offsets (n, length) of wavy band centrelines from straight lines, sampled every pixel.

    A cross-slip trace meanders: a sinusoid (amplitude ~0.26 spacing, wavelength 2-4 spacings)
    plus a smoothed, detrended random walk (standard deviation ~0.18 spacing). Planar bands get
    zero offsets.
    """
    s = s0 + np.arange(length)
    amp = spacing * rng.uniform(0.25, 0.45, (n, 1))
    wavelength = spacing * rng.uniform(2.0, 4.0, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    walk = np.cumsum(rng.normal(0, 0.25, (n, length)), axis=1)
    walk = ndimage.gaussian_filter1d(walk, 3.0, axis=1, mode="nearest")
    ramp = np.linspace(-1, 1, length)
    walk -= walk.mean(axis=1, keepdims=True)
    walk -= np.outer((walk * ramp).sum(1) / max((ramp**2).sum(), 1e-9), ramp)
    walk /= walk.std(axis=1, keepdims=True) + 1e-9
    offsets = amp * (0.75 * np.sin(2 * np.pi * s / wavelength + phase) + 0.5 * walk)
    return np.where(wavy[:, None], offsets, 0.0)


def _distance_to_bands(
    s: np.ndarray, p: np.ndarray, pos: np.ndarray, meander: np.ndarray, s0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest band (index) and perpendicular distance (px) for pixels at (s, p) in a family.

    Candidates are the neighbours of the straight-line position; a wavy band's distance is
    ``|p - pos - f(s)| / sqrt(1 + f'(s)²)``, first order in the meander's slope.
    """
    k0 = np.searchsorted(pos, p)
    wavy_any = bool(np.any(meander))
    shifts = (-2, -1, 0, 1) if wavy_any else (-1, 0)
    fi = np.clip(s - s0, 0, meander.shape[1] - 1.001)
    i0 = fi.astype(np.intp)
    frac = fi - i0
    slope = np.gradient(meander, axis=1) if wavy_any else None
    best_d = np.full(p.shape, np.inf)
    best_k = np.zeros(p.shape, np.intp)
    for shift in shifts:
        k = np.clip(k0 + shift, 0, len(pos) - 1)
        if wavy_any:
            f = meander[k, i0] * (1 - frac) + meander[k, i0 + 1] * frac
            g = slope[k, i0] * (1 - frac) + slope[k, i0 + 1] * frac
            d = np.abs(p - pos[k] - f) / np.sqrt(1 + g**2)
        else:
            d = np.abs(p - pos[k])
        closer = d < best_d
        best_d = np.where(closer, d, best_d)
        best_k = np.where(closer, k, best_k)
    return best_k, best_d


def _chord_extents(k: np.ndarray, s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per band, the smallest and largest coordinate along the trace among its pixels."""
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    np.minimum.at(lo, k, s)
    np.maximum.at(hi, k, s)
    return lo, hi


def _coverage(
    lo: np.ndarray, hi: np.ndarray, taper_px: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each band starts and ends along its chord, and its end-taper length.

    A share of bands crosses the grain; the others cover 30-90 % of the chord, anchored at one
    grain boundary (a free end inside the grain) or floating (two free ends). A grain-boundary
    end is encoded as ±inf so it never tapers.
    """
    n = len(lo)
    drawn = np.isfinite(lo)  # bands without core pixels are dropped later anyway
    lo, hi = np.where(drawn, lo, 0.0), np.where(drawn, hi, 0.0)
    length = hi - lo
    frac = rng.uniform(0.3, 0.9, n)
    anchor = rng.choice(3, n, p=[0.4, 0.4, 0.2])  # 0: from lo, 1: from hi, 2: floating
    full = rng.random(n) < _FULL_CHORD_SHARE
    start = lo + rng.random(n) * (1 - frac) * length
    new_lo = np.where(anchor == 0, -np.inf, np.where(anchor == 1, hi - frac * length, start))
    new_hi = np.where(anchor == 1, np.inf, np.where(anchor == 0, lo + frac * length, start))
    new_hi = np.where(anchor == 2, start + frac * length, new_hi)
    new_lo = np.where(full, -np.inf, new_lo)
    new_hi = np.where(full, np.inf, new_hi)
    taper = np.minimum(taper_px, 0.3 * np.maximum(frac * length, 1.0))
    return new_lo, new_hi, taper


@dataclass
class _BandTable:
    """Per-band attributes collected while drawing, indexed by provisional id - 1."""

    grain: list[np.ndarray]
    system: list[np.ndarray]
    theta: list[np.ndarray]
    alpha: list[np.ndarray]
    wavy: list[np.ndarray]
    rate: list[np.ndarray]
    count: int = 0

    def add(
        self,
        grain: int,
        system: int,
        theta: float,
        alpha: float,
        wavy: np.ndarray,
        rate: np.ndarray,
    ) -> np.ndarray:
        """Append one family's bands; returns their provisional ids (1-based)."""
        n = len(rate)
        self.grain.append(np.full(n, grain))
        self.system.append(np.full(n, system))
        self.theta.append(np.full(n, theta))
        self.alpha.append(np.full(n, alpha))
        self.wavy.append(np.asarray(wavy, bool))
        self.rate.append(np.asarray(rate, float))
        ids = np.arange(self.count + 1, self.count + n + 1, dtype=np.int32)
        self.count += n
        return ids

    def column(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0)


def _draw_family(
    canvas: _BandCanvas,
    table: _BandTable,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    system: tuple[int, int, float, float, float],
    spec: MaterialSpec,
    settings: SynthSettings,
    rng: np.random.Generator,
) -> None:
    """Draw the bands of one active slip system of one grain onto the canvas."""
    flat_idx, xs, ys = grid
    grain, rank, theta_deg, alpha_deg, activity = system
    px = settings.pixel_size_um
    theta = math.radians(theta_deg)
    s = xs * math.cos(theta) + ys * math.sin(theta)
    p = -xs * math.sin(theta) + ys * math.cos(theta)
    spacing = spec.band_spacing_um / px * _lognormal_mean_one(rng, _GRAIN_SPACING_SIGMA, ())
    pos = _band_positions(float(p.min()), float(p.max()), spacing, rng)
    if pos.size == 0:
        return
    n = len(pos)
    wavy = rng.random(n) < spec.wavy
    rate = activity * _lognormal_mean_one(rng, spec.intensity_sigma, n)
    s0 = math.floor(float(s.min())) - 1
    meander = _meanders(n, s0, math.ceil(float(s.max())) - s0 + 3, spacing, wavy, rng)
    k, d = _distance_to_bands(s, p, pos, meander, s0)
    half = max(0.5 * settings.band_width_px, 0.71)  # core: connected line at any angle
    sig = settings.band_width_px / 2.0
    reach = d <= max(2.0 * sig, half)
    core = d <= half
    lo, hi = _chord_extents(k[core], s[core], n)
    lo, hi, taper = _coverage(lo, hi, _TAPER_UM / px, rng)
    kk, ss = k[reach], s[reach]
    along = np.clip(np.minimum(ss - lo[kk], hi[kk] - ss) / taper[kk], 0.0, 1.0)
    keep = along > 0
    kk = kk[keep]
    value = rate[kk] * along[keep] * np.exp(-0.5 * (d[reach][keep] / sig) ** 2)
    ids = table.add(grain, rank, theta_deg % 180.0, alpha_deg, wavy, rate)
    canvas.paint(flat_idx[reach][keep], ids[kk], value, core[reach][keep])


def _grain_systems(
    n_grains: int, spec: MaterialSpec, rng: np.random.Generator
) -> list[list[tuple[int, float, float, float]]]:
    """Per grain, its active systems as (rank, trace angle°, shear angle°, activity).

    Systems are ranked by the resolved-shear proxy |sin 2θ| (tensile axis x); activity weighs a
    system's band slip by that proxy and halves secondary systems relative to the primary one.
    """
    out = []
    for _ in range(n_grains):
        base = rng.uniform(0, 180)
        traces = base + np.asarray(_SYSTEM_OFFSETS_DEG) + rng.normal(0, _TRACE_JITTER_DEG, 3)
        schmid = np.abs(np.sin(2 * np.radians(traces)))
        order = np.argsort(-schmid * _lognormal_mean_one(rng, 0.2, 3))
        n_active = int(rng.integers(1, spec.active_systems + 1))
        alphas = rng.uniform(0, 180, 3)
        systems = []
        for rank, j in enumerate(order[:n_active]):
            activity = (0.3 + 0.7 * schmid[j]) * (1.0 if rank == 0 else 0.5)
            systems.append((rank, float(traces[j] % 180), float(alphas[j]), float(activity)))
        out.append(systems)
    return out


# --------------------------------------------------------------------------------------------
# Specimen geometry (step-independent) and its cache
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Specimen:
    """Everything of a specimen that does not change between steps, fields per % strain."""

    grain_ids: np.ndarray
    labels: np.ndarray  # int32 band ids (final) on band cores
    support: np.ndarray  # bool: pixel lies on a band's profile
    slip_per_pct: np.ndarray  # float64 noiseless intensity per % plastic strain (nm)
    alpha: np.ndarray  # float64 shear angle (deg) of the band at each support pixel
    exx_per_pct: np.ndarray  # float64 noiseless exx per % plastic strain
    rot_per_pct: np.ndarray  # float64 noiseless rotation per % plastic strain (rad)
    holes: np.ndarray  # bool
    bands: pd.DataFrame  # without the step-dependent intensity column


def _draw_bands(
    grain_ids: np.ndarray, spec: MaterialSpec, settings: SynthSettings, rng: np.random.Generator
) -> tuple[_BandCanvas, _BandTable]:
    """Draw every active system of every grain (loop over grains × systems, vectorised inside)."""
    h, w = grain_ids.shape
    canvas = _BandCanvas.empty(h * w)
    table = _BandTable([], [], [], [], [], [])
    boxes = ndimage.find_objects(grain_ids)
    for g, (box, systems) in enumerate(
        zip(boxes, _grain_systems(len(boxes), spec, rng), strict=True)
    ):
        if box is None:
            continue
        rows, cols = np.nonzero(grain_ids[box] == g + 1)
        rows = rows + box[0].start
        cols = cols + box[1].start
        grid = (rows * w + cols, cols + 0.5, rows + 0.5)
        for rank, theta, alpha, activity in systems:
            _draw_family(
                canvas, table, grid, (g + 1, rank, theta, alpha, activity), spec, settings, rng
            )
    return canvas, table


def _band_frame(
    table: _BandTable, labels: np.ndarray, keep: np.ndarray, settings: SynthSettings
) -> pd.DataFrame:
    """Table of the kept bands with their final ids, pixel counts and lengths along the trace."""
    n_final = int(keep.sum())
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs] - 1
    theta = np.radians(table.column("theta")[keep])
    s = (xs + 0.5) * np.cos(theta[lab]) + (ys + 0.5) * np.sin(theta[lab])
    lo, hi = _chord_extents(lab, s, n_final)
    return pd.DataFrame(
        {
            "band": np.arange(1, n_final + 1, dtype=np.int32),
            "grain": table.column("grain")[keep].astype(np.int32),
            "system": table.column("system")[keep].astype(np.int32),
            "trace_angle_deg": table.column("theta")[keep],
            "shear_angle_deg": table.column("alpha")[keep],
            "wavy": table.column("wavy")[keep].astype(bool),
            "rate_nm_per_pct": table.column("rate")[keep],
            "length_um": (hi - lo + 1.0) * settings.pixel_size_um,
            "n_pixels": np.bincount(lab, minlength=n_final).astype(np.int64),
        }
    )


def _grain_centroids(grain_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-grain pixel count and centroid (x, y), indexed by grain id (index 0 unused)."""
    ys, xs = np.indices(grain_ids.shape)
    flat = grain_ids.ravel()
    count = np.bincount(flat)
    cx = np.bincount(flat, xs.ravel() + 0.5) / np.maximum(count, 1)
    cy = np.bincount(flat, ys.ravel() + 0.5) / np.maximum(count, 1)
    return count, cx, cy


def _rotation_per_pct(
    grain_ids: np.ndarray, spec: MaterialSpec, settings: SynthSettings, rng: np.random.Generator
) -> np.ndarray:
    """Lattice rotation per % strain: per-grain offset + intragranular gradient + GB layer.

    Scale 2e-3 rad per % (×(1 + 1.5·wavy): cross-slip spreads plasticity off the bands), with a
    gradient of the same order across a grain and an extra rotation near grain boundaries
    (geometrically necessary dislocations), decaying over ~15 % of the grain size.
    """
    n = int(grain_ids.max()) + 1
    kappa = 2e-3 * (1 + 1.5 * spec.wavy)
    d_px = spec.grain_size_um / settings.pixel_size_um
    _, cx, cy = _grain_centroids(grain_ids)
    offset, gx, gy, gb = (rng.normal(0, 1, n) for _ in range(4))
    ys, xs = np.indices(grain_ids.shape)
    g = grain_ids
    field = kappa * (
        offset[g] + (gx[g] * (xs + 0.5 - cx[g]) + gy[g] * (ys + 0.5 - cy[g])) / (0.5 * d_px)
    )
    boundary = np.zeros(g.shape, bool)
    boundary[:, :-1] |= g[:, :-1] != g[:, 1:]
    boundary[:-1, :] |= g[:-1, :] != g[1:, :]
    dist = ndimage.distance_transform_edt(~boundary)
    return field + kappa * gb[g] * np.exp(-dist / (0.15 * d_px))


def _holes(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Small elliptical NaN blobs (semi-axes 1.5-4.5 px) added until ``fraction`` is covered."""
    h, w = shape
    holes = np.zeros(shape, bool)
    target = fraction * h * w
    covered = 0
    while covered < target:
        a, b = rng.uniform(1.5, 4.5, 2)
        phi = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = math.ceil(max(a, b))
        y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
        x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        u = (xx + 0.5 - cx) * math.cos(phi) + (yy + 0.5 - cy) * math.sin(phi)
        v = -(xx + 0.5 - cx) * math.sin(phi) + (yy + 0.5 - cy) * math.cos(phi)
        blob = (u / a) ** 2 + (v / b) ** 2 <= 1
        covered += int((blob & ~holes[y0:y1, x0:x1]).sum())
        holes[y0:y1, x0:x1] |= blob
    return holes


def _exx_per_pct(
    canvas: _BandCanvas,
    table: _BandTable,
    grain_ids: np.ndarray,
    slip: np.ndarray,
    settings: SynthSettings,
    rng: np.random.Generator,
) -> np.ndarray:
    """Longitudinal strain per % plastic strain: bands + non-localised plastic + elastic part.

    Band part: slip (nm) spread over the band width h (nm) resolved on x,
    ``s |sin θ cos(θ + α)| / h``. The rest of the macroscopic 1 % (at least 10 % of it) is
    carried homogeneously, grain by grain (lognormal factor, σ = 0.35); a residual elastic strain
    of 1.5e-4 per % (normal, per grain) sits on top.
    """
    theta = np.radians(np.concatenate([[0.0], table.column("theta")]))
    alpha = np.radians(np.concatenate([[0.0], table.column("alpha")]))
    factor = np.abs(np.sin(theta) * np.cos(theta + alpha))
    h_nm = settings.band_width_px * settings.pixel_size_um * 1e3
    band = (slip.ravel() * factor[canvas.support] / h_nm).reshape(grain_ids.shape)
    n = int(grain_ids.max()) + 1
    homogeneous = max(0.01 - float(band.mean()), 0.001)
    grain_factor = _lognormal_mean_one(rng, 0.35, n)
    elastic = rng.normal(0, 1.5e-4, n)
    return band + homogeneous * grain_factor[grain_ids] + elastic[grain_ids]


@lru_cache(maxsize=4)
def _specimen(spec: MaterialSpec, specimen: int, settings: SynthSettings, seed: int) -> _Specimen:
    """Build (once) the step-independent geometry and per-% fields of one specimen."""
    shape = (int(settings.shape_px[0]), int(settings.shape_px[1]))
    d_px = spec.grain_size_um / settings.pixel_size_um
    grain_ids = _tessellate(
        shape, d_px, spec.grain_size_sigma, _rng(seed, spec.name, specimen, "grains")
    )
    canvas, table = _draw_bands(grain_ids, spec, settings, _rng(seed, spec.name, specimen, "bands"))
    canvas.resolve()
    counts = np.bincount(canvas.label, minlength=table.count + 1)
    keep = counts[1:] > 0
    remap = np.zeros(table.count + 1, np.int32)
    remap[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    labels = remap[canvas.label].reshape(shape)
    rates = table.column("rate")
    scale = spec.intensity_nm_per_pct / rates[keep].mean() if keep.any() else 0.0
    for part in table.rate:
        part *= scale
    slip = (canvas.value * scale).reshape(shape)
    alpha_lut = np.concatenate([[0.0], table.column("alpha")])
    exx = _exx_per_pct(
        canvas, table, grain_ids, slip, settings, _rng(seed, spec.name, specimen, "exx")
    )
    specimen_data = _Specimen(
        grain_ids=grain_ids,
        labels=labels,
        support=(canvas.support > 0).reshape(shape),
        slip_per_pct=slip,
        alpha=alpha_lut[canvas.support].reshape(shape),
        exx_per_pct=exx,
        rot_per_pct=_rotation_per_pct(
            grain_ids, spec, settings, _rng(seed, spec.name, specimen, "rotation")
        ),
        holes=_holes(shape, settings.hole_fraction, _rng(seed, spec.name, specimen, "holes")),
        bands=_band_frame(table, labels, keep, settings),
    )
    for value in vars(specimen_data).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return specimen_data


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], std: float) -> np.ndarray:
    """Gaussian noise correlated over ~1 px (DIC subsets overlap), rescaled to ``std``."""
    if std == 0:
        return np.zeros(shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 0.7)
    return noise * (std / noise.std())


def synthesize(
    spec: MaterialSpec, specimen: int, step: int, settings: SynthSettings, seed: int
) -> SynthMap:
    """Synthetic HR-DIC map of ``specimen`` (0, 1, …) of ``spec`` at deformation ``step``.

    Same arguments give bit-identical output in any process. Steps of one specimen share the
    microstructure, the bands (same ids) and the holes; intensity, exx and rotation scale with
    ``spec.strain_pct[step]`` and the measurement noise is drawn afresh. Set every noise of
    ``settings`` (and ``hole_fraction``) to 0 for exact, noiseless fields; ``direction`` is then
    still uniform random off the bands, where it is undefined.
    """
    if not 0 <= step < len(spec.strain_pct):
        raise IndexError(
            f"step {step} out of range for {spec.name!r}: {len(spec.strain_pct)} strain levels"
        )
    if specimen < 0:
        raise ValueError(f"specimen must be >= 0, got {specimen}")
    geo = _specimen(spec, int(specimen), settings, int(seed))
    eps = float(spec.strain_pct[step])
    rng = _rng(seed, spec.name, specimen, "step", step)
    shape = geo.grain_ids.shape
    signal = geo.slip_per_pct * eps
    intensity = np.abs(signal + _smooth_noise(rng, shape, settings.noise_nm))
    direction = _direction(geo, signal, settings.noise_nm, rng)
    exx = geo.exx_per_pct * eps + rng.normal(0, settings.strain_noise, shape)
    rotation = geo.rot_per_pct * eps + rng.normal(0, settings.rotation_noise_rad, shape)
    out = []
    for field in (exx, intensity, direction, rotation):
        field = field.astype(np.float32)
        field[geo.holes] = np.nan
        out.append(field)
    bands = geo.bands.copy()
    bands.insert(7, "intensity_nm", bands["rate_nm_per_pct"] * eps)
    return SynthMap(
        exx=out[0],
        intensity=out[1],
        direction=out[2],
        rotation=out[3],
        band_labels=geo.labels.copy(),
        grain_ids=geo.grain_ids.copy(),
        bands=bands,
    )


def _direction(
    geo: _Specimen, signal: np.ndarray, noise_nm: float, rng: np.random.Generator
) -> np.ndarray:
    """Shear-direction angle (deg, [0, 180)) on visible bands, uniform noise elsewhere.

    A band pixel is visible when its slip exceeds twice the intensity noise; its angle then
    scatters by ``noise/slip`` radians, as a ratio of noise to signal would.
    """
    out = rng.uniform(0, 180, signal.shape)
    visible = geo.support & (signal > 2 * noise_nm)
    scatter = rng.standard_normal(signal.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        jitter = np.degrees(noise_nm / signal) * scatter
    out[visible] = (geo.alpha[visible] + jitter[visible]) % 180.0
    return out


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


def localisation_share(spec: MaterialSpec) -> float:
    """Share of the macroscopic plastic strain carried by the slip bands (0..0.95).

    ``ℓ = 0.044 · r · n̄ / λ`` with r the mean band slip per % (nm), n̄ = (1 + active_systems)/2
    the mean number of band families per grain and λ the band spacing (µm). The constant is the
    generator's own: band slip resolved on x (mean geometric factor ≈ 0.44) per band spacing,
    measured on its maps (mean band ``exx`` / macroscopic strain). Visible in the maps as the
    band part of ``exx`` relative to the whole.
    """
    n_bar = 0.5 * (1 + spec.active_systems)
    return min(0.044 * spec.intensity_nm_per_pct * n_bar / spec.band_spacing_um, 0.95)


def material_properties(
    spec: MaterialSpec, seed: int, *, rel_noise: float = _PROPERTY_NOISE
) -> dict[str, float]:
    """Macroscopic properties implied by a material's band statistics (Table 4 units).

    With d = grain_size_um, σ_g = grain_size_sigma, λ = band_spacing_um, w = wavy,
    r = intensity_nm_per_pct, σ_I = intensity_sigma, n̄ = (1 + active_systems)/2 and ℓ the
    band share of plastic strain (:func:`localisation_share`):

    * ``YS = 300/√d + 80 (1 − w) λ + 1500 w`` (MPa): Hall–Petch (k = 300 MPa·µm½); planar
      alloys whose obstacles are sheared slip on few, widely spaced bands and are strong in
      proportion to that spacing; the cell structure of as-built AM material strengthens it and
      shows as cross-slip (wavy traces).
    * ``Q = 3000/d + 160/λ`` (MPa): Voce hardening amplitude from grain boundaries and from
      the density of bands (finer spacing, more band–band interactions).
    * ``b = 10 + 40 σ_I`` (–): a spread of band intensities (a few bands taking most of the
      slip) saturates hardening faster.
    * ``UTS = (YS + Q)(1 + h)``, ``h = 0.8 (n̄ − 1)(1 − ℓ)(1 − w)`` (MPa): the hardening
      reserve beyond the Voce stage (measured at small strain) grows with multiple slip and
      shrinks with localisation.
    * ``El = 80 (1 − YS/2200) exp(−0.06 (1 − w) λ − 1.5 σ_g)`` (Table 4's column, labelled mm;
      at least 0.5): ductility falls with strength, coarse planar slip and grain-size scatter.
    * ``FS = 0.9 UTS / (1 + r/50)`` (MPa): fatigue strength falls with slip localisation, the
      slip carried per band (Stinville et al., Science 2022).

    Each value is then multiplied by ``1 + rel_noise · z`` with z a standard normal clipped to
    ±2, seeded by (seed, material name): the scatter of a real test. Coefficients were fitted
    so that :data:`DEFAULT_MATERIALS` reproduce the paper's Table 4 within about 10 %.
    """
    d, lam, w = spec.grain_size_um, spec.band_spacing_um, spec.wavy
    n_bar = 0.5 * (1 + spec.active_systems)
    ell = localisation_share(spec)
    ys = 300 / math.sqrt(d) + 80 * (1 - w) * lam + 1500 * w
    q = 3000 / d + 160 / lam
    b = 10 + 40 * spec.intensity_sigma
    uts = (ys + q) * (1 + 0.8 * (n_bar - 1) * (1 - ell) * (1 - w))
    el = max(
        80 * (1 - ys / 2200) * math.exp(-0.06 * (1 - w) * lam - 1.5 * spec.grain_size_sigma), 0.5
    )
    fs = 0.9 * uts / (1 + spec.intensity_nm_per_pct / 50)
    z = np.clip(_rng(seed, spec.name, "properties").standard_normal(len(PROPERTY_NAMES)), -2, 2)
    values = np.array([ys, q, b, uts, el, fs]) * (1 + rel_noise * z)
    return {k: float(v) for k, v in zip(PROPERTY_NAMES, values, strict=True)}


def macroscopic_stress(props: Mapping[str, float], strain_pct: float) -> float:
    """Voce flow stress (paper's Eq. 1) in MPa at a plastic strain given in %.

    ``σ = YS + Q (1 − exp(−b ε_p))`` with ε_p = strain_pct / 100.
    """
    return float(props["YS"] + props["Q"] * (1 - math.exp(-props["b"] * strain_pct / 100)))


# --------------------------------------------------------------------------------------------
# Default materials (named after the paper's; strain levels are Table 4's training strains)
# --------------------------------------------------------------------------------------------

DEFAULT_MATERIALS: tuple[MaterialSpec, ...] = (
    MaterialSpec("W_Nickel600", 55.0, 0.35, 3.3, 3, 0.00, 11.0, 0.25, (0.34, 0.51, 1.16, 1.63)),
    MaterialSpec("W_Steel330", 29.0, 0.45, 3.5, 2, 0.10, 23.0, 0.75, (0.14, 0.35, 0.56, 0.86)),
    MaterialSpec("W_In718", 14.0, 0.30, 3.9, 3, 0.08, 25.0, 0.50, (0.13, 0.36, 0.84, 1.49)),
    MaterialSpec("W_Cu77NiSn", 20.0, 0.55, 8.9, 1, 0.04, 38.0, 0.75, (0.28, 0.53, 1.02, 1.74)),
    MaterialSpec("AM_AB_In718", 17.0, 0.70, 7.0, 2, 0.55, 90.0, 1.00, (0.27, 0.74, 1.50, 2.43)),
    MaterialSpec("AM_AB_Steel316", 48.0, 0.40, 3.4, 2, 0.16, 43.0, 0.50, (0.35, 0.63, 1.09, 1.76)),
)

#: The paper's three other materials, same model; not part of the default study.
EXTRA_MATERIALS: tuple[MaterialSpec, ...] = (
    MaterialSpec("W_Invar", 27.0, 0.55, 2.5, 2, 0.05, 28.0, 0.50, (0.17, 0.28, 1.00, 1.98)),
    MaterialSpec("W_RX_In718", 11.0, 0.35, 6.7, 2, 0.36, 52.0, 0.50, (0.31, 0.65, 0.97, 1.61)),
    MaterialSpec("AM_AB_Co76A", 10.0, 0.85, 4.7, 2, 0.31, 36.0, 1.00, (0.26, 0.61, 1.12, 1.82)),
)


def default_material(name: str) -> MaterialSpec:
    """A built-in material by name (default or extra); InputError naming the choices if unknown."""
    for spec in (*DEFAULT_MATERIALS, *EXTRA_MATERIALS):
        if spec.name == name:
            return spec
    choices = [s.name for s in (*DEFAULT_MATERIALS, *EXTRA_MATERIALS)]
    raise InputError(
        "config.yaml", "dic.synthetic.materials", f"unknown material {name!r}; built-in: {choices}"
    )
