"""Preprocessing of HR-DIC maps, tiling into windows, and the train/val/test split.

The four HR-DIC modalities of paper 000 ("HR-DIC data preparation") are prepared before the VAEs
see them: longitudinal strain ε_xx is blurred (Gaussian, σ = 3 px) and multiplied by 200; slip
intensity (nm) is thresholded at 6.74 nm (0.3 px, the HR-DIC resolution) and divided by 25; slip
direction (degrees) becomes two channels (cos, sin) and is zeroed off the slip bands; lattice
rotation (rad) is blurred (σ = 10 px) and multiplied by 100. Every constant lives in a
:class:`ModalitySettings` so configs can change it; :data:`PAPER_SETTINGS` holds the paper's.

Per modality the steps run in this order:

1. **angle** – an angular modality becomes (cos, sin) first, so that a blur averages unit
   vectors instead of wrapped angles (359° and 1° average to 0°, not 180°);
2. **blur** – Gaussian, OpenCV's separable filter with a kernel radius of ``int(4σ + 0.5)`` and
   reflecting borders (``abc|cba``), i.e. the same result as ``scipy.ndimage.gaussian_filter(
   mode="reflect", truncate=4)`` to float32 rounding, but 6–10× faster (see
   ``benchmarks/bench_prep.py``);
3. **threshold** – values with ``|x| < threshold`` become 0 (before scaling, so the threshold is
   in the map's own unit, e.g. nm);
4. **scale** – multiplication by ``scale``;
5. **nan** – pixels that are invalid are set to 0 (the ``nan`` timing also counts the float32
   conversion and the finite masks at the start);
6. **mask** – channels set to 0 where every channel of the ``mask_by`` modality is 0 (slip
   direction is meaningless where no slip was measured).

NaN handling. HR-DIC maps have holes (NaN) where the correlation failed. A pixel is *valid* when
every input modality is finite there; the ``valid`` mask of :class:`PrepResult` is the AND over
modalities and travels with the channels. Blurring uses normalised convolution: the data with
non-finite values replaced by 0 and the modality's own finite mask are blurred with the same
kernel and divided, so a hole does not drag its neighbours toward 0 and a valid pixel next to a
hole gets the weighted mean of the valid pixels around it (for a constant field: the constant).
Pixels that were non-finite stay invalid: their channel value is set to 0 after processing (so
the arrays hold no NaN and can go straight into a network) and ``valid`` says where they are.
A modality with no finite pixel at all is an :class:`~latentmech.core.errors.InputError`
(``source`` = modality name; the caller re-raises with the file name), as are maps of different
shapes, a missing modality or a ``mask_by`` naming an unknown modality.

Windows. :func:`window_grid` lays a regular grid of ``window × window`` windows from the top-left
corner; windows that would cross the bottom or right edge are dropped, so up to ``window - 1``
rows/columns of pixels at those edges are not covered by any window. :func:`extract_windows` cuts
them out with one fancy-indexing gather on a strided view (no Python loop over windows).

Split. :func:`split_windows` labels the windows of training specimens "train"/"val"/"test" with
the paper's 70/20/10 fractions, per material (stratified), with largest-remainder rounding so the
counts of each material add up exactly, and a random assignment seeded per (seed, material).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from latentmech.core.errors import InputError

log = logging.getLogger(__name__)

#: Kernel half-width in standard deviations (scipy.ndimage's default ``truncate``).
TRUNCATE = 4.0
#: Step names reported in :attr:`PrepResult.step_seconds`, in execution order.
STEPS = ("angle", "blur", "threshold", "scale", "nan", "mask")
SPLITS = ("train", "val", "test")
_SETTINGS_SOURCE = "modality settings"


def _is_number(value: object) -> bool:
    """True for real numbers, False for bools (YAML ``yes`` must not become a sigma of 1)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _finite(value: object) -> bool:
    return _is_number(value) and math.isfinite(value)  # type: ignore[arg-type]


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "blur_sigma_px": (lambda v: _finite(v) and v >= 0, "a finite number ≥ 0 (0 = no blur)"),
    "threshold": (lambda v: v is None or (_finite(v) and v >= 0), "null or a finite number ≥ 0"),
    "scale": (_finite, "a finite number"),
    "angle_unit": (lambda v: v in (None, "deg", "rad"), "null, 'deg' or 'rad'"),
    "mask_by": (lambda v: v is None or (isinstance(v, str) and v != ""), "null or a modality name"),
}


@dataclass(frozen=True)
class ModalitySettings:
    """How one HR-DIC modality is prepared (see the module docstring for the step order)."""

    blur_sigma_px: float = 0.0
    threshold: float | None = None
    scale: float = 1.0
    angle_unit: Literal["deg", "rad"] | None = None
    mask_by: str | None = None

    def __post_init__(self) -> None:
        """Reject values that would silently produce garbage (negative sigma, NaN scale …)."""
        for key, (ok, expected) in _CHECKS.items():
            value = getattr(self, key)
            if not ok(value):
                raise InputError(_SETTINGS_SOURCE, key, f"expected {expected}, got {value!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = _SETTINGS_SOURCE) -> ModalitySettings:
        """Build settings from a config mapping; unknown keys and bad values raise InputError.

        ``source`` names the place in the config (e.g. ``"config.yaml: dic.prep.exx"``) so the
        message points the user at the right line.
        """
        if not isinstance(d, Mapping):
            raise InputError(source, "", f"expected a mapping of settings, got {d!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in set(d) - set(known))
        if unknown:
            raise InputError(
                source, str(unknown[0]), f"unknown setting; expected one of {', '.join(known)}"
            )
        numeric = {"blur_sigma_px", "threshold", "scale"}
        values = {k: float(v) if k in numeric and _is_number(v) else v for k, v in d.items()}
        try:
            return cls(**values)
        except InputError as err:
            raise InputError(source, err.where, err.problem) from None


PAPER_SETTINGS: dict[str, ModalitySettings] = {
    "exx": ModalitySettings(blur_sigma_px=3.0, scale=200.0),
    "intensity": ModalitySettings(threshold=6.74, scale=1.0 / 25.0),
    "direction": ModalitySettings(angle_unit="deg", mask_by="intensity"),
    "rotation": ModalitySettings(blur_sigma_px=10.0, scale=100.0),
}
"""Paper 000's preparation: ε_xx σ=3 px ×200; intensity ≥6.74 nm ÷25; direction → (cos, sin)
masked off the slip bands; rotation σ=10 px ×100."""


def channel_names(modality: str, s: ModalitySettings) -> list[str]:
    """Names of the channels a modality becomes: ``[m]`` or ``[m_cos, m_sin]`` if angular."""
    if s.angle_unit is None:
        return [modality]
    return [f"{modality}_cos", f"{modality}_sin"]


@dataclass(frozen=True)
class PrepResult:
    """Prepared channels per modality, the joint validity mask and per-step timings."""

    channels: dict[str, np.ndarray]
    valid: np.ndarray
    step_seconds: dict[str, float] = field(default_factory=dict)


class _Timer:
    """Accumulates wall time per step name (for the benchmark's time shares)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STEPS, 0.0)

    def step(self, name: str) -> _Span:
        return _Span(self.seconds, name)


class _Span:
    def __init__(self, seconds: dict[str, float], name: str) -> None:
        self.seconds, self.name = seconds, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self.name] += time.perf_counter() - self.start


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float32 2-D image, equal to scipy's ``gaussian_filter(mode="reflect",
    truncate=4)`` up to float32 rounding; OpenCV because it is several times faster."""
    radius = int(TRUNCATE * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return image.copy()
    size = 2 * radius + 1
    src = np.ascontiguousarray(image, dtype=np.float32)
    return cv2.GaussianBlur(src, (size, size), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def normalised_blur(data: np.ndarray, finite: np.ndarray | None, sigma: float) -> np.ndarray:
    """Blur ``(y, x)`` or ``(c, y, x)`` data ignoring the pixels where ``finite`` is False.

    Normalised convolution: blur(data·w) / blur(w) with w the ``(y, x)`` finite mask, so holes
    neither pull their neighbours toward 0 nor leak their values. The weights are blurred once for
    all channels. ``finite=None`` means no holes: the plain blur (same result, half the work).
    Pixels outside ``finite`` get 0 (they are invalid).
    """
    stack = np.asarray(data, dtype=np.float32)
    flat = stack.reshape((-1, *stack.shape[-2:]))
    if finite is None:
        out = np.stack([gaussian_blur(c, sigma) for c in flat])
        return out.reshape(stack.shape)
    den = gaussian_blur(finite.astype(np.float32), sigma)
    out = np.zeros(flat.shape, dtype=np.float32)
    for c, o in zip(flat, out, strict=True):
        num = gaussian_blur(c * finite, sigma)
        np.divide(num, den, out=o, where=finite)
    return out.reshape(stack.shape)


def _check_fields(
    fields: Mapping[str, np.ndarray], settings: Mapping[str, ModalitySettings]
) -> dict[str, np.ndarray]:
    """The maps of the modalities named in ``settings``, checked: present, numeric, 2-D, one
    shape, mask_by resolvable. Extra entries in ``fields`` are ignored."""
    if not settings:
        raise InputError(_SETTINGS_SOURCE, "", "no modality to prepare")
    maps: dict[str, np.ndarray] = {}
    for name in settings:
        if name not in fields:
            raise InputError(name, "", f"modality missing; the maps given are {sorted(fields)}")
        arr = np.asarray(fields[name])
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise InputError(name, "", f"expected a real-valued map, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise InputError(name, "", f"expected a 2-D map (y, x), got shape {arr.shape}")
        maps[name] = arr
    first = next(iter(maps))
    for name, arr in maps.items():
        if arr.shape != maps[first].shape:
            raise InputError(
                name, "", f"shape {arr.shape} differs from {first!r}'s {maps[first].shape}"
            )
    _check_masks(settings)
    return maps


def _check_masks(settings: Mapping[str, ModalitySettings]) -> None:
    """mask_by must name another, unmasked modality (no chains, so the order is obvious)."""
    for name, s in settings.items():
        ref = s.mask_by
        if ref is None:
            continue
        if ref == name or ref not in settings:
            raise InputError(name, "mask_by", f"{ref!r} is not another modality being prepared")
        if settings[ref].mask_by is not None:
            raise InputError(name, "mask_by", f"{ref!r} is itself masked; chains are not allowed")


def _keep_where(chans: np.ndarray, keep: np.ndarray) -> None:
    """Zero ``chans`` in place where ``keep`` is False (``chans`` finite).

    Multiplying by the mask is ~10× faster than boolean assignment on scattered masks (slip
    bands, thresholds); adding +0 turns the resulting -0.0 into 0.0.
    """
    chans *= keep
    chans += np.float32(0.0)


def _zero_at(chans: np.ndarray, flat_index: np.ndarray) -> None:
    """Zero ``chans`` (c, y, x) in place at the flat pixel indices (cost ∝ number of pixels)."""
    if flat_index.size:
        chans.reshape(chans.shape[0], -1)[:, flat_index] = 0.0


def _to_channels(
    name: str, raw: np.ndarray, s: ModalitySettings, timer: _Timer
) -> tuple[np.ndarray, np.ndarray]:
    """Steps angle → blur → threshold → scale of one modality; returns (channels, finite)."""
    with timer.step("nan"):
        data = raw.astype(np.float32)  # always a copy: raw stays untouched
        finite = np.isfinite(data)
        holes = np.flatnonzero(~finite)
        if holes.size == data.size:
            raise InputError(name, "", "map has no finite value (all NaN/inf)")
        _zero_at(data[None], holes)
    with timer.step("angle"):
        if s.angle_unit is None:
            chans = data[None]
        else:
            rad = np.deg2rad(data) if s.angle_unit == "deg" else data
            chans = np.stack([np.cos(rad), np.sin(rad)])
    with timer.step("blur"):
        if s.blur_sigma_px > 0:
            chans = normalised_blur(chans, finite if holes.size else None, s.blur_sigma_px)
    with timer.step("threshold"):
        if s.threshold is not None:
            _keep_where(chans, np.abs(chans) >= np.float32(s.threshold))
    with timer.step("scale"):
        if s.scale != 1.0:
            chans *= np.float32(s.scale)
    return chans, finite


def preprocess(
    fields: Mapping[str, np.ndarray], settings: Mapping[str, ModalitySettings]
) -> PrepResult:
    """Prepare the modalities named in ``settings`` from the raw 2-D maps in ``fields``.

    Returns float32 ``(c, y, x)`` channels per modality (no NaN), the joint validity mask and the
    time spent per step. See the module docstring for the step order and NaN handling.
    """
    maps = _check_fields(fields, settings)
    timer = _Timer()
    channels: dict[str, np.ndarray] = {}
    valid = np.ones(next(iter(maps.values())).shape, dtype=bool)
    for name, s in settings.items():
        channels[name], finite = _to_channels(name, maps[name], s, timer)
        valid &= finite
    with timer.step("nan"):
        invalid = np.flatnonzero(~valid)
        for chans in channels.values():
            _zero_at(chans, invalid)
    with timer.step("mask"):
        for name, s in settings.items():
            if s.mask_by is not None:
                ref = channels[s.mask_by]
                _keep_where(channels[name], ref[0] != 0 if len(ref) == 1 else ref.any(axis=0))
    return PrepResult(channels=channels, valid=valid, step_seconds=timer.seconds)


def window_grid(shape: tuple[int, int], window: int, stride: int | None = None) -> pd.DataFrame:
    """Regular grid of ``window × window`` windows over a ``(y, x)`` map, row-major.

    Columns: ``row``, ``col`` (grid indices) and ``y0``, ``x0`` (pixel origin, top-left corner).
    ``stride`` defaults to ``window`` (no overlap). Windows are laid from the top-left corner and
    incomplete windows at the bottom/right edges are dropped, so up to ``window - 1`` trailing
    rows/columns of pixels fall in no window (logged at INFO level when that happens).
    """
    stride = window if stride is None else stride
    for key, value in (("window", window), ("stride", stride)):
        if not _is_number(value) or int(value) != value or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    ny, nx = (max(0, (int(n) - window) // stride + 1) for n in shape)
    rows, cols = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    grid = pd.DataFrame(
        {
            "row": rows.ravel(),
            "col": cols.ravel(),
            "y0": rows.ravel() * stride,
            "x0": cols.ravel() * stride,
        }
    )
    left_y = shape[0] - ((ny - 1) * stride + window) if ny else shape[0]
    left_x = shape[1] - ((nx - 1) * stride + window) if nx else shape[1]
    if left_y or left_x:
        log.info(
            "window grid %d×%d on %s: %d bottom rows and %d right columns of pixels uncovered",
            ny, nx, tuple(shape), left_y, left_x,
        )  # fmt: skip
    return grid


def extract_windows(array: np.ndarray, grid: pd.DataFrame, window: int) -> np.ndarray:
    """Cut the windows of ``grid`` out of a ``(c, y, x)`` or ``(y, x)`` array.

    Returns ``(n, c, w, w)`` or ``(n, w, w)`` (a new array, same dtype), in grid order. One
    gather on numpy's strided ``sliding_window_view`` — no Python loop over windows.
    """
    if array.ndim not in (2, 3):
        raise ValueError(f"expected a (y, x) or (c, y, x) array, got shape {array.shape}")
    y0 = grid["y0"].to_numpy(dtype=np.intp)
    x0 = grid["x0"].to_numpy(dtype=np.intp)
    height, width = array.shape[-2:]
    if len(y0) and (
        y0.min() < 0 or x0.min() < 0 or y0.max() + window > height or x0.max() + window > width
    ):
        raise ValueError(f"grid windows of {window} px reach outside the {height}×{width} array")
    view = sliding_window_view(array, (window, window), axis=(-2, -1))
    if array.ndim == 2:
        return view[y0, x0]
    return np.moveaxis(view[:, y0, x0], 0, 1)


def largest_remainder(total: int, fractions: Sequence[float]) -> np.ndarray:
    """Integer counts proportional to ``fractions`` that add up to ``total`` (Hamilton's method).

    Each part gets the floor of its quota; the leftover units go to the largest fractional
    remainders, ties to the earlier part (train before val before test).
    """
    quotas = np.asarray(fractions, dtype=float) * total
    counts = np.floor(quotas + 1e-9).astype(int)
    leftover = total - counts.sum()
    # Rounded so that 18 × 0.7 = 12.5999… and 18 × 0.2 = 3.6000…1 count as the tie they are.
    order = np.argsort(-np.round(quotas - counts, 9), kind="stable")
    counts[order[:leftover]] += 1
    return counts


def _material_rng(seed: int, material: str) -> np.random.Generator:
    """A generator per (seed, material): adding a material does not reshuffle the others."""
    return np.random.default_rng([seed, zlib.crc32(material.encode())])


def split_windows(
    materials: Sequence[str],
    eligible: np.ndarray,
    fractions: Sequence[float] = (0.7, 0.2, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """Label each window "train", "val", "test" or "none" (not eligible).

    ``materials[i]`` is window i's material and ``eligible[i]`` says whether it may enter the
    split (windows of training specimens). Each material's eligible windows are split by
    ``fractions`` with largest-remainder rounding, in a random order seeded by (seed, material).
    """
    mats = np.asarray(materials).astype(str)
    ok = np.asarray(eligible, dtype=bool)
    if mats.ndim != 1 or ok.shape != mats.shape:
        raise ValueError(f"materials {mats.shape} and eligible {ok.shape} must be equal 1-D")
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be three numbers ≥ 0 adding up to 1, got {fractions}")
    labels = np.full(mats.shape, "none", dtype="<U5")
    for material in np.unique(mats[ok]):
        idx = np.flatnonzero(ok & (mats == material))
        idx = _material_rng(seed, str(material)).permutation(idx)
        counts = largest_remainder(len(idx), fr)
        labels[idx] = np.repeat(SPLITS, counts)
    return labels
