"""Kinematics of a measured 2D displacement field: deformation gradient, strains, rotation.

Frame and units. ``u`` and ``v`` are displacements in pixels of the DIC image along x_0 = x
(columns, increasing with column index) and x_1 = y (rows, increasing with row index, i.e.
pointing *down* when the map is shown with row 0 at the top, as DaVis writes it). The vector
spacing converts grid steps to pixels, so every gradient is dimensionless. Arrays are indexed
``[..., row, column]`` = ``[..., y, x]``; tensors carry their two component indices first,
shape (2, 2, ny, nx). These are the definitions of DefDAP's ``hrdic.Map`` (``f``, ``e``,
``max_shear``), which the tests check against.

Missing data. NaN displacements (invalid DaVis vectors) make NaN every derivative whose
difference stencil uses them — its neighbours along each axis, since central differences skip
the centre — and the point itself, which has no measured displacement. Nothing else is touched.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "deformation_gradient",
    "green_strain",
    "max_shear",
    "rotation",
    "small_strain",
    "strain_fields",
]


def deformation_gradient(u: np.ndarray, v: np.ndarray, spacing: float) -> np.ndarray:
    """Deformation gradient F[i, j] = δ_ij + ∂u_i/∂x_j, shape (2, 2, ny, nx).

    (u_0, u_1) = (u, v) and (x_0, x_1) = (x, y) as in the module docstring. Derivatives are
    second-order central differences in the interior and first-order one-sided differences on
    the edges (``np.gradient`` with the vector ``spacing``), as in DefDAP. Each row F[i] is NaN
    where u_i is NaN and where its difference stencil reaches a NaN.
    """
    u, v = _check_displacements(u, v, spacing)
    F = np.empty((2, 2, *u.shape), dtype=np.float64)
    for i, component in enumerate((u, v)):
        d_dy, d_dx = np.gradient(component, spacing)
        F[i, 0], F[i, 1] = d_dx, d_dy
        F[i, :, np.isnan(component)] = np.nan
    F[0, 0] += 1.0
    F[1, 1] += 1.0
    return F


def green_strain(F: np.ndarray) -> np.ndarray:
    """Green–Lagrange strain E = ½(FᵀF − I), shape (2, 2, …); finite-strain and rotation-free.

    Exact under arbitrary rigid rotations (a rotated but unstretched field has E = 0), which
    is why it is the default for HR-DIC maps where grains rotate by a few degrees.
    """
    F = _check_tensor(F, "F")
    E = 0.5 * np.einsum("ki...,kj...->ij...", F, F)
    E[0, 0] -= 0.5
    E[1, 1] -= 0.5
    return E


def small_strain(F: np.ndarray) -> np.ndarray:
    """Infinitesimal strain ε = ½(H + Hᵀ) with H = F − I, shape (2, 2, …).

    Linear in the displacement gradient: adequate for strains and rotations ≪ 1, and not
    rotation-free (a rigid rotation by θ gives ε_xx = ε_yy = cos θ − 1).
    """
    F = _check_tensor(F, "F")
    H = F - np.eye(2).reshape(2, 2, *([1] * (F.ndim - 2)))
    return 0.5 * (H + H.swapaxes(0, 1))


def max_shear(E: np.ndarray) -> np.ndarray:
    """Maximum in-plane shear strain sqrt(((E_00 − E_11)/2)² + E_01²) of a 2×2 strain tensor.

    The radius of Mohr's circle: half the difference of the principal strains, the
    "effective shear strain" DefDAP maps. Works for Green or small strain alike.
    """
    E = _check_tensor(E, "E")
    return np.sqrt(((E[0, 0] - E[1, 1]) / 2.0) ** 2 + E[0, 1] ** 2)


def rotation(F: np.ndarray) -> np.ndarray:
    """In-plane rigid rotation angle θ (radians) of the polar decomposition F = R·U.

    θ = atan2(F_10 − F_01, F_00 + F_11), exact in 2D (not a small-rotation approximation),
    with R = [[cos θ, −sin θ], [sin θ, cos θ]] in the (x, y) = (column, row) frame. Positive θ
    turns the +x axis towards +y. Because y (row index) points *down* on a map displayed with
    row 0 at the top, positive θ is a **clockwise** rotation as seen on such an image (it would
    be counter-clockwise in a y-up plot). Values lie in (−π, π].
    """
    F = _check_tensor(F, "F")
    return np.arctan2(F[1, 0] - F[0, 1], F[0, 0] + F[1, 1])


def strain_fields(
    u: np.ndarray,
    v: np.ndarray,
    spacing: float,
    measure: Literal["green", "small"] = "green",
) -> dict[str, np.ndarray]:
    """Per-pixel strain maps of a displacement field, each (ny, nx).

    Keys: ``exx``, ``eyy``, ``exy`` (tensor, not engineering, shear: γ_xy = 2·exy) of the
    Green (default) or small strain, ``rotation`` (radians, see :func:`rotation`) and
    ``max_shear`` (see :func:`max_shear`) of the same strain measure.
    """
    F = deformation_gradient(u, v, spacing)
    if measure == "green":
        E = green_strain(F)
    elif measure == "small":
        E = small_strain(F)
    else:
        raise ValueError(f"measure must be 'green' or 'small', got {measure!r}")
    return {
        "exx": E[0, 0],
        "eyy": E[1, 1],
        "exy": E[0, 1],
        "rotation": rotation(F),
        "max_shear": max_shear(E),
    }


def _check_displacements(
    u: np.ndarray, v: np.ndarray, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return u, v as float64 after checking shapes and spacing (np.gradient needs ≥ 2 points)."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if u.ndim != 2 or u.shape != v.shape:
        raise ValueError(f"u and v must be 2D maps of one shape, got {u.shape} and {v.shape}")
    if min(u.shape) < 2:
        raise ValueError(f"need at least 2 vectors along each axis, got shape {u.shape}")
    if not (np.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing must be a positive number of pixels, got {spacing!r}")
    return u, v


def _check_tensor(T: np.ndarray, name: str) -> np.ndarray:
    """Return T as float64 after checking it has two leading components of size 2."""
    T = np.asarray(T, dtype=np.float64)
    if T.ndim < 2 or T.shape[:2] != (2, 2):
        raise ValueError(f"{name} must have shape (2, 2, ...), got {T.shape}")
    return T
