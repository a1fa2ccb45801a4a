"""Slip-event detection in HR-DIC slip-intensity maps, and scoring of a detection against truth.

The masking augmentation of the HR-DIC VAE (paper 000, Fig. 5) removes whole deformation events
from a window, and the intensity-evolution augmentation of the property CNN (Fig. 10) rescales
them one by one; both need a label map with one id per slip band. :func:`detect_events` makes it
from a preprocessed slip-intensity map (thresholded, divided by 25, NaN holes filled with 0 and
flagged in ``valid``), and :func:`match_events` says how well a label map recovers known bands.

Method (all steps vectorised over pixels; Python loops only run over hypotheses and events):

1. **Candidates.** Pixels with ``intensity > threshold`` inside ``valid``. Connected components
   whose bounding-box diagonal is below ``min_length_px`` are DIC noise specks and are dropped.
2. **Local trace orientation.** The candidate mask is filtered with oriented line kernels
   (``cv2.filter2D``) at ``2 * orientation_bins`` angles over [0°, 180°). A kernel is a 1-px line
   of length ``2 * floor(3 * structure_sigma_px) + 1`` (9 px by default); its response at a pixel
   is the fraction of valid pixels along that line that are candidates (normalised convolution,
   so NaN holes and the image border do not bias it). A pixel "lies on a trace of angle a" when
   the response at ``a`` is a local maximum over angle and at least 0.8 of the pixel's best
   response. Line filters are used rather than a structure tensor because in a mesh of two
   crossing families spaced a few pixels apart the smoothed tensor averages both orientations,
   whereas a line filter stays on one band: a crossing pixel simply has two maxima.
3. **Orientation classes.** Class ``k`` is centred on ``k * 180 / orientation_bins`` and holds the
   pixels with a maximum within ±one class width of its centre (classes overlap and wrap
   around 0°/180°, so a gently wavy band lies whole in at least one class, and a crossing pixel
   belongs to the classes of both its bands). Inside a class, gaps along the class direction
   are bridged for connectivity — up to 2 px through other candidate pixels (where a crossing
   band interrupts the trace) and up to 4 px through invalid pixels (a small NaN hole) — and
   connected components (``cv2.connectedComponents``) become event hypotheses.
4. **Selection.** Hypotheses shorter than ``min_length_px`` or wider than one band (lateral RMS
   about their axis above 2 px, i.e. two parallel bands or two bands meeting at an angle) are
   discarded. The rest are taken greedily, largest (pixel count times orientation coherence)
   first; a hypothesis is skipped when half of it is already one accepted event (the same band
   seen in a neighbouring class) or when less than 30 % of it is new. A pixel claimed by two
   accepted events (a crossing) goes to the one with the higher mean intensity (the dominant
   band).
5. **Merging.** Left-over candidate pixels within 1.5 px of an event first join the nearest
   one (closing one-pixel gaps between fragments). Fragments that meet end to end within 3 px,
   differ in trace angle by at most 35°, stay one band together (lateral RMS ≤ 2 px) and have
   mean intensities within a factor 2 are then merged — this re-joins a wavy band whose local
   orientation wandered across classes and a band cut by a crossing or a small NaN hole.
6. **Clean-up.** Events whose extent along their trace is below ``min_length_px`` are dropped,
   their pixels join a neighbouring event within 1.5 px if there is one
   (``skimage.segmentation.expand_labels``), and events are numbered 1..N in raster order of
   their first pixel.

Statistics per event: ``length_um`` is the extent of the event along its trace direction (max
minus min of the pixel-centre projections on the principal axis, plus one pixel) times
``pixel_size_um`` — the chord length, not a skeleton length, so a wavy band reports the distance
between its ends. ``angle_deg`` is the principal-axis direction of the event's pixels in [0, 180),
measured from the +x axis (increasing column) counter-clockwise as seen with y pointing up, i.e.
with rows increasing downward a band running from bottom-left to top-right has 0 < angle < 90.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import pandas as pd
from skimage.segmentation import expand_labels

from latentmech.core.errors import InputError

EVENT_COLUMNS: tuple[str, ...] = (
    "event",
    "n_pixels",
    "length_um",
    "angle_deg",
    "mean_intensity",
    "max_intensity",
    "centroid_y_px",
    "centroid_x_px",
)
PAIR_COLUMNS: tuple[str, ...] = (
    "truth_id",
    "event_id",
    "overlap",
    "truth_covered",
    "event_on_truth",
)

# Internal constants of the method (see the module docstring for what each one does).
_ANGLES_PER_CLASS = 2  # line-filter angles per orientation class (7.5° steps for 12 classes)
_PEAK_FRACTION = 0.8  # an orientation maximum must reach this fraction of the pixel's best response
_BRIDGE_PX = 2  # gaps along a class direction bridged through other candidate pixels (each side)
_HOLE_BRIDGE_PX = 4  # … and through invalid (NaN-filled) pixels: a small hole does not cut a band
_MAX_LATERAL_RMS_PX = 2.0  # one band: RMS distance of its pixels from its axis (wavy bands ≈ 1.5)
_DUPLICATE_FRACTION = 0.5  # hypothesis is a duplicate when this much of it is one accepted event
_MIN_NEW_FRACTION = 0.3  # hypothesis must add at least this fraction of unclaimed pixels
_MERGE_GAP_PX = 3  # fragments closer than this can be merged
_MERGE_MAX_DANGLE_DEG = 35.0  # largest trace-angle difference between merged fragments
_MERGE_END_TOL_PX = 5.0  # contact must lie within this of both fragments' ends (or 25 % of length)
_MERGE_MAX_INTENSITY_RATIO = 2.0  # fragments of one band carry similar slip intensity
_ATTACH_PX = 1.5  # left-over candidate pixels this close to an event join it


@dataclass(frozen=True)
class EventSettings:
    """Settings of :func:`detect_events` (the ``dic.events`` config section).

    ``threshold``: pixels with intensity strictly above it are slip candidates (units of the
    input map; the preprocessed map is already thresholded, so 0 keeps every non-zero pixel).
    ``min_length_px``: connected sets and events shorter than this are noise.
    ``orientation_bins``: number of trace-orientation classes over 180° (15° wide for 12); a
    class admits ±one class width, so a gently wavy band stays in one class while crossing
    families are separated (checked from 25° to 90° apart at the default).
    ``structure_sigma_px``: scale of the local-orientation estimate; the oriented line filters
    span ±floor(3σ) px along the trace (9-px lines at the default 1.5).
    """

    threshold: float = 0.0
    min_length_px: float = 6.0
    orientation_bins: int = 12
    structure_sigma_px: float = 1.5

    def __post_init__(self) -> None:
        checks = {
            "threshold": math.isfinite(self.threshold),
            "min_length_px": math.isfinite(self.min_length_px) and self.min_length_px > 0,
            "orientation_bins": isinstance(self.orientation_bins, int | np.integer)
            and 4 <= self.orientation_bins <= 90,
            "structure_sigma_px": math.isfinite(self.structure_sigma_px)
            and 2 / 3 <= self.structure_sigma_px <= 20,
        }
        expected = {
            "threshold": "a finite number",
            "min_length_px": "a positive number",
            "orientation_bins": "an integer between 4 and 90",
            "structure_sigma_px": "a number between 0.67 and 20 (pixels)",
        }
        for key, ok in checks.items():
            if not ok:
                value = getattr(self, key)
                raise InputError("event settings", key, f"{value!r} is not {expected[key]}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> EventSettings:
        """Build settings from a config mapping; unknown keys are an error naming the key."""
        d = dict(d or {})
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                raise InputError(
                    "event settings", str(key), f"unknown key; expected one of {', '.join(known)}"
                )
        try:
            return cls(**d)
        except TypeError as err:  # e.g. a string where a number belongs
            raise InputError("event settings", "", str(err)) from err


@dataclass(frozen=True)
class MatchResult:
    """Outcome of :func:`match_events`; ``pairs`` lists every (truth band, event) match."""

    n_truth: int
    n_detected: int
    n_matched_truth: int
    n_matched_detected: int
    recall: float
    precision: float
    pairs: pd.DataFrame


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def detect_events(
    intensity: np.ndarray,
    valid: np.ndarray | None,
    settings: EventSettings,
    pixel_size_um: float = 1.0,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Segment a slip-intensity map into individual slip events (bands).

    Returns ``labels`` (same shape, int32, 0 = background, 1..N = event id) and a table with one
    row per event and the columns of :data:`EVENT_COLUMNS`. The method and the exact meaning of
    ``length_um`` and ``angle_deg`` are in the module docstring. ``valid`` (bool, same shape)
    marks measured pixels; ``None`` means every finite pixel is valid.
    """
    intensity, valid = _check_inputs(intensity, valid, pixel_size_um)
    cand = _candidates(intensity, valid, settings)
    if not cand.any():
        return np.zeros(intensity.shape, np.int32), _empty_table()
    flat = np.flatnonzero(cand)
    peaks = _orientation_peaks(cand, valid, flat, settings)
    hyp = _class_hypotheses(cand, valid, flat, peaks, settings)
    accepted = _select(hyp, flat.size)
    labels = _resolve_owners(accepted, intensity, flat)
    labels = _attach_leftovers(labels, cand)  # closes pixel gaps between fragments
    labels = _merge_fragments(labels, intensity)
    labels = _drop_short(labels, settings.min_length_px)
    labels = _attach_leftovers(labels, cand)
    labels = _relabel_raster(labels)
    return labels, _event_table(labels, intensity, pixel_size_um)


def match_events(
    truth: np.ndarray, detected: np.ndarray, min_overlap: float = 0.5, tolerance_px: int = 1
) -> MatchResult:
    """Score a detected label map against a truth label map (0 = background in both).

    Criterion: truth band *k* and detected event *e* match when at least ``min_overlap`` of
    *k*'s pixels lie within ``tolerance_px`` (Chebyshev distance, i.e. a (2t+1)×(2t+1) square)
    of a pixel of *e*, and at least ``min_overlap`` of *e*'s pixels lie within ``tolerance_px``
    of a pixel of *k*. Truth band *k* is recovered when it matches at least one event; an event
    is correct when it matches at least one truth band. ``recall`` = recovered truth bands /
    truth bands, ``precision`` = correct events / events (NaN when the denominator is 0).
    ``truth`` is taken as given: every positive id in it counts, so the caller removes bands
    that are not visible in the map (e.g. shorter than ``min_length_px`` after thresholding).
    Matching is not forced one-to-one; with ``min_overlap`` ≥ 0.5 and thin bands a truth band
    and an event rarely match more than one partner. ``pairs`` holds every matching pair with
    ``overlap`` = min(``truth_covered``, ``event_on_truth``).
    """
    truth, detected = _check_label_maps(truth, detected)
    if not 0 < min_overlap <= 1:
        raise InputError("match_events", "min_overlap", f"{min_overlap!r} is not in (0, 1]")
    if int(tolerance_px) != tolerance_px or tolerance_px < 0:
        raise InputError("match_events", "tolerance_px", f"{tolerance_px!r} is not an int ≥ 0")
    t_ids, d_ids = np.unique(truth[truth > 0]), np.unique(detected[detected > 0])
    pairs = _match_pairs(truth, detected, int(tolerance_px), min_overlap)
    n_mt, n_md = pairs["truth_id"].nunique(), pairs["event_id"].nunique()
    return MatchResult(
        n_truth=int(t_ids.size),
        n_detected=int(d_ids.size),
        n_matched_truth=int(n_mt),
        n_matched_detected=int(n_md),
        recall=n_mt / t_ids.size if t_ids.size else math.nan,
        precision=n_md / d_ids.size if d_ids.size else math.nan,
        pairs=pairs,
    )


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_inputs(
    intensity: np.ndarray, valid: np.ndarray | None, pixel_size_um: float
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and units; NaN pixels become invalid (they carry no measurement)."""
    intensity = np.asarray(intensity)
    if intensity.ndim != 2 or not np.issubdtype(intensity.dtype, np.number):
        raise InputError("detect_events", "intensity", "expected a 2-D numeric (y, x) map")
    finite = np.isfinite(intensity)
    if valid is None:
        valid = finite
    else:
        valid = np.asarray(valid)
        if valid.shape != intensity.shape:
            raise InputError(
                "detect_events", "valid", f"shape {valid.shape} != intensity {intensity.shape}"
            )
        valid = valid.astype(bool) & finite
    if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise InputError("detect_events", "pixel_size_um", f"{pixel_size_um!r} is not > 0")
    return np.where(finite, intensity, 0).astype(np.float32, copy=False), valid


def _check_label_maps(truth: np.ndarray, detected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps must be non-negative integer arrays of one shape."""
    truth, detected = np.asarray(truth), np.asarray(detected)
    for name, arr in (("truth", truth), ("detected", detected)):
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
            raise InputError("match_events", name, "expected a 2-D non-negative integer label map")
    if truth.shape != detected.shape:
        raise InputError("match_events", "detected", f"shape {detected.shape} != {truth.shape}")
    return truth.astype(np.int64), detected.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Steps 1–2: candidates and local orientation
# --------------------------------------------------------------------------------------------


def _candidates(intensity: np.ndarray, valid: np.ndarray, settings: EventSettings) -> np.ndarray:
    """Binary slip candidates without specks (components shorter than min_length_px)."""
    cand = ((intensity > settings.threshold) & valid).astype(np.uint8)
    _, comp, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    diag = np.hypot(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    keep = diag >= settings.min_length_px
    keep[0] = False
    return keep[comp]


@lru_cache(maxsize=512)
def _line_kernel(angle_deg: float, half: int) -> np.ndarray:
    """Normalised anti-aliased 1-px line of length 2·half+1 at a trace angle (y up)."""
    size, ss = 2 * half + 1, 8
    big = np.zeros((size * ss, size * ss), np.float32)
    c, t = (size * ss - 1) / 2, math.radians(angle_deg)
    dx, dy = math.cos(t) * half * ss, -math.sin(t) * half * ss
    p1, p2 = (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy))
    cv2.line(big, p1, p2, 1.0, ss, cv2.LINE_AA)
    k = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    k /= k.sum()
    k.setflags(write=False)
    return k


@lru_cache(maxsize=512)
def _line_footprint(angle_deg: float, half: int) -> np.ndarray:
    """Binary 1-px line structuring element of length 2·half+1 at a trace angle (y up)."""
    k = np.zeros((2 * half + 1, 2 * half + 1), np.uint8)
    t = math.radians(angle_deg)
    dx, dy = math.cos(t) * half, -math.sin(t) * half
    cv2.line(k, (round(half - dx), round(half - dy)), (round(half + dx), round(half + dy)), 1, 1)
    k.setflags(write=False)
    return k


def _orientation_peaks(
    cand: np.ndarray, valid: np.ndarray, flat: np.ndarray, settings: EventSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orientation maxima of the candidate pixels, as parallel arrays (angle index, pixel, response).

    The response is the candidate fraction along the line among valid pixels, so a band that
    runs into a NaN hole or the image edge keeps its orientation. ``pixel`` indexes ``flat``.
    """
    n_ang = settings.orientation_bins * _ANGLES_PER_CLASS
    half = max(1, math.floor(3 * settings.structure_sigma_px))
    both = np.dstack([cand, valid]).astype(np.float32)  # one 2-channel filter per angle
    resp = np.empty((n_ang, flat.size), np.float32)
    for i in range(n_ang):
        k = _line_kernel(i * 180.0 / n_ang, half)
        out = cv2.filter2D(both, -1, k, borderType=cv2.BORDER_CONSTANT).reshape(-1, 2)
        resp[i] = np.take(out[:, 0], flat) / np.maximum(np.take(out[:, 1], flat), 0.5)
    best = resp.max(0)
    peak = resp >= np.maximum(_PEAK_FRACTION * best, 1e-6)
    peak &= resp >= np.roll(resp, 1, 0)
    peak &= resp >= np.roll(resp, -1, 0)
    ang, pix = np.nonzero(peak)
    return ang, pix, resp[ang, pix]


# --------------------------------------------------------------------------------------------
# Step 3: orientation classes → hypotheses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hypotheses:
    """Connected components of all classes, as (hypothesis id, pixel index) rows sorted by id."""

    start: np.ndarray  # rows of hypothesis h are pix[start[h]:start[h + 1]]
    pix: np.ndarray  # index into the candidate-pixel arrays (flat, ys, xs)
    score: np.ndarray  # pixel count × orientation coherence², per hypothesis
    good: np.ndarray  # long enough and one band wide


def _class_members(
    ang: np.ndarray, pix: np.ndarray, resp: np.ndarray, n_cls: int, n_pix: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class, pixel, own angle index) for every pixel with an orientation maximum in a class.

    Class k covers the filter angles within one class width of its centre, wrapping at 180°;
    a pixel's own angle in the class is its strongest maximum there. Rows come sorted by
    (class, pixel).
    """
    sub = _ANGLES_PER_CLASS
    best_r = np.full(n_cls * n_pix, -1.0, np.float32)
    best_a = np.zeros(n_cls * n_pix, np.uint8)  # angle index < 2 * 90
    for shift in range(-sub, sub + 1):  # each shift maps an angle to at most one class
        num = ang + shift
        hit = np.flatnonzero(num % sub == 0)
        key = ((num[hit] // sub) % n_cls) * n_pix + pix[hit]
        better = resp[hit] > best_r[key]
        best_r[key[better]] = resp[hit][better]
        best_a[key[better]] = ang[hit][better]
    key = np.flatnonzero(best_r >= 0)
    cls, member = np.divmod(key, n_pix)
    return cls, member, best_a[key]


def _class_hypotheses(
    cand: np.ndarray,
    valid: np.ndarray,
    flat: np.ndarray,
    peaks: tuple[np.ndarray, np.ndarray, np.ndarray],
    settings: EventSettings,
) -> _Hypotheses:
    """Connected components per (overlapping) orientation class, with their shape statistics."""
    n_cls = settings.orientation_bins
    n_ang = n_cls * _ANGLES_PER_CLASS
    cls, mpix, mang = _class_members(*peaks, n_cls, flat.size)
    bounds = np.searchsorted(cls, np.arange(n_cls + 1))
    c8 = cand.view(np.uint8)
    holes = (~valid).view(np.uint8) if not valid.all() else None
    mask = np.zeros(cand.shape, np.uint8)
    gids, pidx, weight_ang = [], [], []
    offset = 0
    for k in range(n_cls):
        members, own = mpix[bounds[k] : bounds[k + 1]], mang[bounds[k] : bounds[k + 1]]
        mask[:] = 0
        mask.ravel()[flat[members]] = 1
        angle = k * 180.0 / n_cls
        bridge = cv2.dilate(mask, _line_footprint(angle, _BRIDGE_PX)) & c8
        if holes is not None:  # connectivity only: invalid pixels never become event pixels
            bridge |= cv2.dilate(mask, _line_footprint(angle, _HOLE_BRIDGE_PX)) & holes
        mask |= bridge
        n, comp = cv2.connectedComponents(mask, connectivity=8)
        c = np.take(comp.ravel(), flat)
        sel = np.flatnonzero(c)
        angle_of = np.full(flat.size, -1, np.int64)  # bridged pixels carry no orientation
        angle_of[members] = own
        gids.append(c[sel] + offset)
        pidx.append(sel)
        weight_ang.append(angle_of[sel])
        offset += n
    gid, pix, a = np.concatenate(gids), np.concatenate(pidx), np.concatenate(weight_ang)
    has = a >= 0
    ang2 = np.radians(2 * a[has] * (180.0 / n_ang))
    coherence = np.hypot(
        np.bincount(gid[has], np.cos(ang2), offset), np.bincount(gid[has], np.sin(ang2), offset)
    )
    ys, xs = np.divmod(flat[pix], cand.shape[1])
    mom = _moments(gid, ys, xs, offset)
    count = mom["n"]
    coherence /= np.maximum(count, 1)
    min_len = settings.min_length_px
    good = (count >= min_len) & (mom["rod"] >= min_len) & (mom["lateral"] <= _MAX_LATERAL_RMS_PX)
    rows = np.flatnonzero(good[gid])
    rows = rows[np.argsort(gid[rows], kind="stable")]
    start = np.searchsorted(gid[rows], np.arange(offset + 1))
    return _Hypotheses(start=start, pix=pix[rows], score=count * coherence**2, good=good)


def _moments(lab: np.ndarray, ys: np.ndarray, xs: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Per label from second moments: size, centroid, axis angle (rad, y up), rod length, lateral RMS.

    ``rod`` is the length of a uniform rod with the same variance along the axis (√12·σ), a
    cheap stand-in for the extent; ``lateral`` is the RMS distance of the pixels from the axis.
    """
    y, x = ys.astype(float), xs.astype(float)
    cnt = np.bincount(lab, minlength=n).astype(float)
    w = np.maximum(cnt, 1)
    my, mx = np.bincount(lab, y, n) / w, np.bincount(lab, x, n) / w
    vyy = np.bincount(lab, y * y, n) / w - my * my
    vxx = np.bincount(lab, x * x, n) / w - mx * mx
    vxy = np.bincount(lab, x * y, n) / w - mx * my
    d = np.sqrt(0.25 * (vxx - vyy) ** 2 + vxy**2)
    return {
        "n": cnt,
        "cy": my,
        "cx": mx,
        "theta": 0.5 * np.arctan2(-2 * vxy, vxx - vyy),  # rows grow downward → y_up = -row
        "rod": np.sqrt(12 * np.maximum(0.5 * (vxx + vyy) + d, 0)),
        "lateral": np.sqrt(np.maximum(0.5 * (vxx + vyy) - d, 0)),
    }


def _extent(lab: np.ndarray, ys: np.ndarray, xs: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """:func:`_moments` plus the exact extent along the axis (pixel-centre projections + 1 px)."""
    mom = _moments(lab, ys, xs, n)
    t = mom["theta"][lab]
    proj = (xs - mom["cx"][lab]) * np.cos(t) - (ys - mom["cy"][lab]) * np.sin(t)
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(lo, lab, proj)
    np.maximum.at(hi, lab, proj)
    mom["extent"] = hi - lo + 1
    return mom


# --------------------------------------------------------------------------------------------
# Step 4: greedy selection and ownership of shared pixels
# --------------------------------------------------------------------------------------------


def _select(hyp: _Hypotheses, n_pix: int) -> list[np.ndarray]:
    """Accept hypotheses best first, skipping duplicates of already accepted events."""
    order = np.flatnonzero(hyp.good)
    order = order[np.argsort(-hyp.score[order], kind="stable")]
    claimed = np.zeros(n_pix, np.int32)
    accepted: list[np.ndarray] = []
    for h in order:
        grp = hyp.pix[hyp.start[h] : hyp.start[h + 1]]
        owner = claimed[grp]
        taken = owner[owner > 0]
        if taken.size > (1 - _MIN_NEW_FRACTION) * grp.size:
            continue
        if taken.size and np.bincount(taken).max() >= _DUPLICATE_FRACTION * grp.size:
            continue
        accepted.append(grp)
        claimed[grp[owner == 0]] = len(accepted)
    return accepted


def _resolve_owners(
    accepted: list[np.ndarray], intensity: np.ndarray, flat: np.ndarray
) -> np.ndarray:
    """Label map of accepted events; a shared (crossing) pixel goes to the brighter event."""
    labels = np.zeros(intensity.shape, np.int32)
    if not accepted:
        return labels
    values = np.take(intensity.ravel(), flat)
    pix = np.concatenate(accepted)
    ev = np.repeat(np.arange(1, len(accepted) + 1), [g.size for g in accepted])
    mean = np.bincount(ev, values[pix]) / np.maximum(np.bincount(ev), 1)
    order = np.lexsort((-mean[ev], pix))
    pix, ev = pix[order], ev[order]
    first = np.r_[True, pix[1:] != pix[:-1]]
    labels.ravel()[flat[pix[first]]] = ev[first]
    return labels


# --------------------------------------------------------------------------------------------
# Step 5: merge fragments of one band
# --------------------------------------------------------------------------------------------


def _contacts(labels: np.ndarray, gap: int) -> tuple[np.ndarray, ...]:
    """Label pairs within ``gap`` px of each other: (a, b, n_contacts, mean contact y, x)."""
    n = int(labels.max()) + 1
    padded = np.pad(labels, gap)
    width = padded.shape[1]
    flat = np.flatnonzero(padded)
    own = padded.ravel()[flat].astype(np.int64)
    ys, xs = np.divmod(flat, width)
    keys, cy, cx = [], [], []
    for dy in range(gap + 1):
        for dx in range(-gap, gap + 1):
            if (dy == 0 and dx <= 0) or dy * dy + dx * dx > gap * gap:
                continue
            other = padded.ravel()[flat + dy * width + dx].astype(np.int64)
            i = np.flatnonzero((other > 0) & (other != own))
            o = other[i]
            keys.append(np.minimum(own[i], o) * n + np.maximum(own[i], o))
            cy.append(ys[i] + (0.5 * dy - gap))
            cx.append(xs[i] + (0.5 * dx - gap))
    key = np.concatenate(keys)
    uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    a, b = np.divmod(uniq, n)
    mean_y = np.bincount(inv, np.concatenate(cy)) / cnt
    mean_x = np.bincount(inv, np.concatenate(cx)) / cnt
    return a, b, cnt, mean_y, mean_x


class _Fragments:
    """Union-find over events with running moment sums, so a merged group's shape is O(1)."""

    def __init__(self, labels: np.ndarray, intensity: np.ndarray) -> None:
        ys, xs = np.nonzero(labels)
        lab = labels[ys, xs]
        n = int(labels.max()) + 1
        y, x = ys.astype(float), xs.astype(float)
        cols = (np.ones_like(y), y, x, y * y, x * x, x * y, intensity[ys, xs].astype(float))
        self.sums = np.stack([np.bincount(lab, c, n) for c in cols], 1).tolist()
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def shape(self, s: list[float]) -> tuple[float, float, float, float, float, float]:
        """(cy, cx, theta, half-length, lateral RMS, mean intensity) from moment sums."""
        w, sy, sx, syy, sxx, sxy, si = s
        cy, cx = sy / w, sx / w
        vyy, vxx, vxy = syy / w - cy * cy, sxx / w - cx * cx, sxy / w - cy * cx
        theta = 0.5 * math.atan2(-2 * vxy, vxx - vyy)
        d = math.sqrt(0.25 * (vxx - vyy) ** 2 + vxy * vxy)
        lmax, lmin = max(0.5 * (vxx + vyy) + d, 0.0), max(0.5 * (vxx + vyy) - d, 0.0)
        return cy, cx, theta, math.sqrt(3 * lmax), math.sqrt(lmin), si / w

    def try_merge(self, a: int, b: int, y: float, x: float) -> None:
        """Merge the groups of a and b when they continue one band end to end at (y, x)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self.shape(self.sums[ra]), self.shape(self.sums[rb])
        dang = abs(math.degrees(ga[2] - gb[2])) % 180.0
        if min(dang, 180.0 - dang) > _MERGE_MAX_DANGLE_DEG:
            return
        if max(ga[5], gb[5]) > _MERGE_MAX_INTENSITY_RATIO * min(ga[5], gb[5]):
            return
        for cy, cx, theta, half, _, _ in (ga, gb):
            along = abs((x - cx) * math.cos(theta) - (y - cy) * math.sin(theta))
            if along < half - max(_MERGE_END_TOL_PX, 0.25 * half):
                return  # contact in the middle of a fragment: a crossing, not a continuation
        merged = [p + q for p, q in zip(self.sums[ra], self.sums[rb], strict=True)]
        if self.shape(merged)[4] > _MAX_LATERAL_RMS_PX:
            return
        self.parent[rb] = ra
        self.sums[ra] = merged

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        roots = np.array([self.find(i) for i in range(len(self.parent))])
        return np.unique(roots, return_inverse=True)[1][labels].astype(np.int32)


def _merge_fragments(labels: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Merge fragments that continue one band (wavy pieces, a band cut by a crossing or hole)."""
    if labels.max() < 2:
        return labels
    a, b, cnt, cy, cx = _contacts(labels, _MERGE_GAP_PX)
    frag = _Fragments(labels, intensity)
    for i in np.argsort(-cnt, kind="stable"):
        frag.try_merge(int(a[i]), int(b[i]), float(cy[i]), float(cx[i]))
    return frag.relabel(labels)


# --------------------------------------------------------------------------------------------
# Step 6: clean-up and statistics
# --------------------------------------------------------------------------------------------


def _drop_short(labels: np.ndarray, min_len: float) -> np.ndarray:
    """Remove events whose extent along their trace is below ``min_len``; renumber densely."""
    ys, xs = np.nonzero(labels)
    n = int(labels.max()) + 1
    keep = _extent(labels[ys, xs], ys, xs, n)["extent"] >= min_len
    keep[0] = False
    return (np.cumsum(keep) * keep)[labels].astype(np.int32)


def _attach_leftovers(labels: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Give candidate pixels left out (crossing corners, band edges) to an event ≤1.5 px away."""
    left = cand & (labels == 0)
    if not labels.any() or not left.any():
        return labels
    grown = expand_labels(labels, distance=_ATTACH_PX)
    return np.where(left, grown, labels).astype(np.int32)


def _relabel_raster(labels: np.ndarray) -> np.ndarray:
    """Number events 1..N in raster order of their first pixel (deterministic ids)."""
    ids, first = np.unique(labels.ravel(), return_index=True)
    ids, first = ids[ids > 0], first[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids[np.argsort(first)]] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]


def _empty_table() -> pd.DataFrame:
    """Event table with no rows and the documented columns and dtypes."""
    table = pd.DataFrame({c: pd.Series(dtype=float) for c in EVENT_COLUMNS})
    return table.astype({"event": np.int64, "n_pixels": np.int64})


def _event_table(labels: np.ndarray, intensity: np.ndarray, pixel_size_um: float) -> pd.DataFrame:
    """One row per event: size, chord length, trace angle, intensity statistics, centroid."""
    n = int(labels.max())
    if n == 0:
        return _empty_table()
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    geo = _extent(lab, ys, xs, n + 1)
    values = intensity[ys, xs].astype(float)
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, lab, values)
    angle = np.degrees(geo["theta"]) % 180.0
    ids = np.arange(1, n + 1)
    table = pd.DataFrame(
        {
            "event": ids.astype(np.int64),
            "n_pixels": geo["n"][ids].astype(np.int64),
            "length_um": geo["extent"][ids] * pixel_size_um,
            "angle_deg": np.where(angle >= 180.0, 0.0, angle)[ids],
            "mean_intensity": np.bincount(lab, values, n + 1)[ids] / geo["n"][ids],
            "max_intensity": peak[ids],
            "centroid_y_px": geo["cy"][ids],
            "centroid_x_px": geo["cx"][ids],
        }
    )
    return table


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


def _near_counts(a: np.ndarray, b: np.ndarray, tol: int) -> pd.DataFrame:
    """For label pairs (i in a, j in b): number of i's pixels with a j pixel within ``tol``."""
    h, w = a.shape
    nb = int(b.max()) + 1
    ys, xs = np.nonzero(a)
    flat = ys.astype(np.int64) * w + xs
    codes = []
    for dy in range(-tol, tol + 1):
        for dx in range(-tol, tol + 1):
            yy, xx = ys + dy, xs + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            other = np.zeros(ys.size, np.int64)
            other[inside] = b[yy[inside], xx[inside]]
            hit = other > 0
            codes.append(flat[hit] * nb + other[hit])
    code = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)
    pix, j = np.divmod(code, nb)
    pair = a.ravel()[pix] * nb + j
    uniq, count = np.unique(pair, return_counts=True)
    i, j = np.divmod(uniq, nb)
    return pd.DataFrame({"i": i, "j": j, "count": count})


def _match_pairs(truth: np.ndarray, det: np.ndarray, tol: int, min_overlap: float) -> pd.DataFrame:
    """All (truth, event) pairs meeting the two-sided overlap criterion of match_events."""
    if not truth.any() or not det.any():
        return pd.DataFrame({c: pd.Series(dtype=float) for c in PAIR_COLUMNS}).astype(
            {"truth_id": np.int64, "event_id": np.int64}
        )
    t_size, d_size = np.bincount(truth.ravel()), np.bincount(det.ravel())
    cover = _near_counts(truth, det, tol)
    cover["truth_covered"] = cover["count"] / t_size[cover["i"]]
    purity = _near_counts(det, truth, tol)
    purity["event_on_truth"] = purity["count"] / d_size[purity["i"]]
    pairs = cover.rename(columns={"i": "truth_id", "j": "event_id"})[
        ["truth_id", "event_id", "truth_covered"]
    ].merge(
        purity.rename(columns={"i": "event_id", "j": "truth_id"})[
            ["truth_id", "event_id", "event_on_truth"]
        ],
        on=["truth_id", "event_id"],
    )
    pairs["overlap"] = pairs[["truth_covered", "event_on_truth"]].min(axis=1)
    ok = (pairs["truth_covered"] >= min_overlap) & (pairs["event_on_truth"] >= min_overlap)
    pairs = pairs.loc[ok, list(PAIR_COLUMNS)].sort_values(["truth_id", "event_id"])
    return pairs.astype({"truth_id": np.int64, "event_id": np.int64}).reset_index(drop=True)
