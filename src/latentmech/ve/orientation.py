"""Orientation maths of the VE study: Euler angles, quaternions, crystal symmetry, metrics.

Everything here is vectorised numpy in float64 and follows DAMASK's conventions, because the paper
reduces its volume elements with ``damask.Orientation(...).reduced`` and the workflow must
reproduce that tool's numbers exactly:

* **Euler angles** are Bunge (φ1, Φ, φ2), z–x'–z'', in radians, triplet on the last axis
  ``(..., 3)``; φ1, φ2 ∈ [0, 2π), Φ ∈ [0, π].
* **Quaternions** are ``(..., 4)`` as (w, x, y, z), unit length, w ≥ 0, *passive* (they map the
  sample frame onto the crystal frame) with DAMASK's sign convention P = −1 (Rowenhorst et al.
  2015). The product :func:`multiply_quaternions` ``(a, b)`` is DAMASK's ``Rotation.__mul__``:
  "first b, then a".
* **Crystal symmetry** acts in the crystal frame, on the left: the orientations equivalent to q
  are S ⊗ q for the proper rotations S of the lattice (point group 432 for cubic, 622 for
  hexagonal, listed in DAMASK's order by :func:`symmetry_operators`).
* **Fundamental zone** (FZ): the representative is the first equivalent, in operator order,
  whose Rodrigues–Frank vector lies in DAMASK's FZ (Heinz & Neumann 1991) with DAMASK's
  tolerance (|ρ| scaled by 1 − 10⁻⁹). Away from the FZ's faces this is the unique equivalent
  with the largest |w| (smallest rotation angle), which is how it is found fast; orientations
  within 10⁻⁶ of a face are decided by DAMASK's own test on all equivalents.
* **orix** (0.15) uses the *active* convention (crystal → sample): an orix quaternion is the
  conjugate (inverse) of DAMASK's, and ``orix...Orientation.from_euler`` applies that inversion
  itself. ``orix.quaternion.Orientation(conj(q), symmetry=O or D6).reduce()`` conjugated back
  (and put into w ≥ 0) is the same rotation as our reduction for random orientations (100 % of
  262 144); orientations exactly on an FZ face may get another, equivalent, representative
  because the two libraries break the tie differently. Feeding orix q itself agrees for only
  4 % (cubic) / 8 % (hexagonal) of random orientations.
* Large inputs are processed in blocks of :data:`BLOCK` orientations (cache-sized work arrays,
  bounded memory for dataset-sized arrays); results do not depend on the block size.

Metrics: :func:`phi4` is the paper's Eq. 5 (Huynh 2009, Φ₄ = 1 − |q₁·q₂|), which ignores crystal
symmetry as the paper does; :func:`misorientation_angle` is the symmetry-aware disorientation
angle for comparison.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from latentmech.core.errors import InputError

#: DAMASK's sign convention for the cross product in quaternion algebra (P = −1).
P = -1.0

#: Euler angle periods (φ1, Φ, φ2): the ranges are [0, 2π], [0, π], [0, 2π].
EULER_PERIODS = np.array([2.0 * np.pi, np.pi, 2.0 * np.pi])

#: Names the wing accepts for a lattice, mapped to the crystal family (DAMASK Pearson symbols too).
LATTICE_FAMILIES: dict[str, str] = {
    "cubic": "cubic",
    "hexagonal": "hexagonal",
    "cF": "cubic",
    "cI": "cubic",
    "cP": "cubic",
    "hP": "hexagonal",
}

#: DAMASK shrinks |ρ| by this relative amount before testing the FZ boundaries (``in_FZ``).
FZ_TOLERANCE = 1.0e-9

#: Orientations with a second equivalent whose |w| is within this relative distance of the
#: largest are near an FZ face: they get DAMASK's full test instead of the arg-max. (DAMASK's
#: tolerance admits a second equivalent only within ~10⁻⁹, so 10⁻⁶ is a safe margin.)
NEAR_FACE = 1.0e-6

#: Orientations per block in the symmetry computations (see :func:`_blockwise`).
BLOCK = 4096

_H2 = 0.5 * np.sqrt(2.0)
_H3 = 0.5 * np.sqrt(3.0)

# Proper rotations in DAMASK's order (Crystal.symmetry_operations; Kocks et al. 1998, Table II),
# before DAMASK flips the ones with w < 0 into the positive hemisphere.
_OPERATORS = {
    "cubic": [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, _H2, _H2],
        [0.0, 0.0, _H2, -_H2],
        [0.0, _H2, 0.0, _H2],
        [0.0, _H2, 0.0, -_H2],
        [0.0, _H2, -_H2, 0.0],
        [0.0, -_H2, -_H2, 0.0],
        [0.5, 0.5, 0.5, 0.5],
        [-0.5, 0.5, 0.5, 0.5],
        [-0.5, 0.5, 0.5, -0.5],
        [-0.5, 0.5, -0.5, 0.5],
        [-0.5, -0.5, 0.5, 0.5],
        [-0.5, -0.5, 0.5, -0.5],
        [-0.5, -0.5, -0.5, 0.5],
        [-0.5, 0.5, -0.5, -0.5],
        [-_H2, 0.0, 0.0, _H2],
        [_H2, 0.0, 0.0, _H2],
        [-_H2, 0.0, _H2, 0.0],
        [-_H2, 0.0, -_H2, 0.0],
        [-_H2, _H2, 0.0, 0.0],
        [-_H2, -_H2, 0.0, 0.0],
    ],
    "hexagonal": [
        [1.0, 0.0, 0.0, 0.0],
        [-_H3, 0.0, 0.0, -0.5],
        [0.5, 0.0, 0.0, _H3],
        [0.0, 0.0, 0.0, 1.0],
        [-0.5, 0.0, 0.0, _H3],
        [-_H3, 0.0, 0.0, 0.5],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, -_H3, 0.5, 0.0],
        [0.0, 0.5, -_H3, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, -0.5, -_H3, 0.0],
        [0.0, _H3, 0.5, 0.0],
    ],
}


def lattice_family(name: str, source: str = "lattice") -> str:
    """Crystal family (``"cubic"`` or ``"hexagonal"``) of a lattice name or DAMASK symbol.

    Accepts the family names (any case) and DAMASK's Pearson symbols cF, cI, cP (cubic) and
    hP (hexagonal); anything else is an :class:`InputError` naming ``source``.
    """
    if isinstance(name, str):
        family = LATTICE_FAMILIES.get(name) or LATTICE_FAMILIES.get(name.strip().lower())
        if family is not None:
            return family
    accepted = ", ".join(repr(k) for k in LATTICE_FAMILIES)
    raise InputError(source, "", f"unknown lattice {name!r}; expected one of {accepted}")


def symmetry_operators(lattice: str) -> np.ndarray:
    """The lattice's proper rotations as quaternions ``(n, 4)``, w ≥ 0, in DAMASK's order.

    24 operators for cubic (432), 12 for hexagonal (622); row k equals
    ``damask.Crystal(family=...).symmetry_operations.quaternion[k]``. The order matters: it
    decides which equivalent is the FZ representative on the zone's faces.
    """
    ops = np.array(_OPERATORS[lattice_family(lattice)], dtype=np.float64)
    return _positive_hemisphere(ops)


def _positive_hemisphere(q: np.ndarray) -> np.ndarray:
    """Negate the quaternions ``(..., 4)`` with w < 0, in place (q and −q: same rotation)."""
    q[q[..., 0] < 0.0] *= -1.0
    return q


def _hemisphere_sign(w: np.ndarray) -> np.ndarray:
    """−1 where w < 0, else 1: the factor that puts a quaternion into DAMASK's w ≥ 0."""
    return np.where(w < 0.0, -1.0, 1.0)


def _components(a: np.ndarray, size: int, what: str) -> np.ndarray:
    """float64 ``(..., size)`` → component-first view ``(size, ...)`` (each row contiguous-ish)."""
    a = np.asarray(a, dtype=np.float64)
    _check_last_axis(a, size, what)
    return np.moveaxis(a, -1, 0)


def _last_axis(components: np.ndarray) -> np.ndarray:
    """Component-first ``(k, ...)`` → C-contiguous ``(..., k)``, the public layout."""
    return np.ascontiguousarray(np.moveaxis(components, 0, -1))


# The kernels below work on component-first arrays (4 or 3 rows, any trailing shape): the rows are
# contiguous, and (4, m) is the layout the symmetry matrix products want.


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a ⊗ b, w ≥ 0, on ``(4, ...)`` arrays; the arithmetic of ``damask.Rotation.__mul__``."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    w = aw * bw - (ax * bx + ay * by + az * bz)
    x = aw * bx + bw * ax + P * (ay * bz - az * by)
    y = aw * by + bw * ay + P * (az * bx - ax * bz)
    z = aw * bz + bw * az + P * (ax * by - ay * bx)
    sign = _hemisphere_sign(w)
    return np.stack([w * sign, x * sign, y * sign, z * sign])


def _quaternions_from_eulers(eulers: np.ndarray) -> np.ndarray:
    """``(3, ...)`` Bunge angles → ``(4, ...)`` quaternions; ``damask.Rotation._eu2qu``."""
    half_phi1, half_phi, half_phi2 = 0.5 * eulers
    cos_phi, sin_phi = np.cos(half_phi), np.sin(half_phi)
    plus, minus = half_phi1 + half_phi2, half_phi1 - half_phi2
    w = cos_phi * np.cos(plus)
    sign = _hemisphere_sign(w)
    return np.stack(
        [
            w * sign,
            -P * sin_phi * np.cos(minus) * sign,
            -P * sin_phi * np.sin(minus) * sign,
            -P * cos_phi * np.sin(plus) * sign,
        ]
    )


def _eulers_from_quaternions(q: np.ndarray) -> np.ndarray:
    """``(4, ...)`` quaternions → ``(3, ...)`` Bunge angles; ``damask.Rotation._qu2eu``."""
    sign = _hemisphere_sign(q[0])
    a = sign * q[0]
    b = sign * -P * q[3]
    c = sign * -P * q[1]
    d = sign * -P * q[2]
    first = np.arctan2(b, a)
    third = np.arctan2(-d, c)
    ab = a**2 + b**2
    phi = np.arccos(2.0 * ab / (ab + c**2 + d**2) - 1.0)
    is_zero = np.abs(phi) <= 1.0e-8  # np.isclose(phi, 0.0)
    is_pi = np.abs(phi - np.pi) <= 1.0e-8 + 1.0e-5 * np.pi  # np.isclose(phi, np.pi)
    phi1 = np.where(is_zero, 2.0 * first, np.where(is_pi, -2.0 * third, first - third))
    phi2 = np.where(is_zero | is_pi, 0.0, first + third)
    eu = np.stack([phi1, phi, phi2])
    eu[(np.abs(eu) < 1.0e-6) | (np.abs(eu - 2.0 * np.pi) < 1.0e-6)] = 0.0
    periods = EULER_PERIODS.reshape((3,) + (1,) * (eu.ndim - 1))
    return np.where(eu < 0.0, eu % periods, eu)


def multiply_quaternions(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Composition a ⊗ b ("first b, then a") with P = −1, in the positive hemisphere.

    Same arithmetic as ``damask.Rotation.__mul__``; shapes ``(..., 4)`` broadcast.
    """
    return _last_axis(_product(_components(a, 4, "a"), _components(b, 4, "b")))


def conjugate_quaternions(q: np.ndarray) -> np.ndarray:
    """Inverse rotation (x, y, z negated), e.g. to convert to and from orix's active quaternions."""
    out = np.array(q, dtype=np.float64)
    out[..., 1:] *= -1.0
    return out


def eulers_to_quaternions(eulers: np.ndarray) -> np.ndarray:
    """Bunge Euler angles ``(..., 3)`` (radians) → quaternions ``(..., 4)``, DAMASK's formula.

    Equals ``damask.Rotation.from_Euler_angles(eulers).quaternion`` bit for bit (no range check
    here: see :func:`check_euler_range`).
    """
    return _last_axis(_quaternions_from_eulers(_components(eulers, 3, "Euler angles")))


def quaternions_to_eulers(q: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` → Bunge Euler angles ``(..., 3)`` exactly as DAMASK gives them.

    Follows ``damask.Rotation.as_Euler_angles`` (Bernardes & Viollet 2022) including its
    degenerate cases: for Φ ≈ 0 (|Φ| ≤ 10⁻⁸) and Φ ≈ π (within 10⁻⁸ + 10⁻⁵·π) only φ1 + φ2
    (resp. φ1 − φ2) is defined and DAMASK puts it all into φ1, φ2 = 0; angles within 10⁻⁶ of 0
    or 2π become 0 (so a round trip through Euler angles can move a rotation by up to ~10⁻⁶ rad,
    as it does in DAMASK). Quaternions with w < 0 are taken as −q.
    """
    return _last_axis(_eulers_from_quaternions(_components(q, 4, "quaternions")))


def _check_last_axis(a: np.ndarray, size: int, what: str) -> None:
    """Programming errors in array shape: raise ValueError naming what was expected."""
    if a.ndim == 0 or a.shape[-1] != size:
        raise ValueError(f"{what} need {size} components on the last axis, got shape {a.shape}")


def _w_of_equivalents_matrix(family: str) -> np.ndarray:
    """Matrix ``(n_ops, 4)`` M with (M @ q)[k] = w-component of S_k ⊗ q for q ``(4, m)``."""
    ops = symmetry_operators(family)
    return np.concatenate([ops[:, :1], -ops[:, 1:]], axis=1)


_FAMILIES = ("cubic", "hexagonal")
#: Component-first operators ``(4, n_ops)``, the rows S_k of the w matrix, and the weights that
#: turn a 0/1 "largest |w|" mask into (how many, which operator).
_OPS_T = {f: np.ascontiguousarray(symmetry_operators(f).T) for f in _FAMILIES}
_W_MATRIX = {f: _w_of_equivalents_matrix(f) for f in _FAMILIES}
_COUNT_AND_INDEX = {
    f: np.stack([np.ones(len(_W_MATRIX[f])), np.arange(len(_W_MATRIX[f]), dtype=np.float64)])
    for f in _FAMILIES
}


def _blockwise(
    func: Callable[[np.ndarray], np.ndarray], flat: np.ndarray, width: int | None
) -> np.ndarray:
    """Apply ``func`` to row blocks of ``flat`` ``(n, k)`` → ``(n, width)``, or ``(n,)`` if None.

    Blocks of :data:`BLOCK` rows keep the ``(block, n_ops)`` work arrays in the CPU cache (several
    times faster than one pass) and bound the memory for dataset-sized inputs.
    """
    shape = (len(flat),) if width is None else (len(flat), width)
    out = np.empty(shape, dtype=np.float64)
    for start in range(0, len(flat), BLOCK):
        out[start : start + BLOCK] = func(flat[start : start + BLOCK])
    return out


def in_fundamental_zone(q: np.ndarray, lattice: str) -> np.ndarray:
    """Whether each quaternion's Rodrigues–Frank vector is in the FZ (DAMASK's ``in_FZ``).

    Same Rodrigues arithmetic (ρ = n·tan(arccos w), w < 10⁻¹² never in, |v| < 10⁻¹² at the
    origin) and the same tolerance, so the decision on the zone's faces is DAMASK's.
    """
    rho = np.abs(_rodrigues_like_damask(np.asarray(q, dtype=np.float64))) * (1.0 - FZ_TOLERANCE)
    with np.errstate(invalid="ignore"):
        if lattice_family(lattice) == "cubic":
            return np.all(np.sqrt(2.0) - 1.0 >= rho, axis=-1) & (rho.sum(axis=-1) <= 1.0)
        sqrt3 = np.sqrt(3.0)
        return (
            np.all(rho <= 1.0, axis=-1)
            & (sqrt3 * rho[..., 0] + rho[..., 1] <= 2.0)
            & (sqrt3 * rho[..., 1] + rho[..., 0] <= 2.0)
            & (sqrt3 + rho[..., 2] <= 2.0)
        )


def _rodrigues_like_damask(q: np.ndarray) -> np.ndarray:
    """Compact Rodrigues–Frank vector as ``damask.Rotation.as_Rodrigues_vector(compact=True)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.linalg.norm(q[..., 1:4], axis=-1, keepdims=True)
        w = q[..., 0:1]
        tangent = np.tan(np.arccos(np.clip(w, -1.0, 1.0)))
        rho = np.where(np.abs(w) < 1.0e-12, q[..., 1:4] * np.inf, q[..., 1:4] / norm * tangent)
    rho[norm[..., 0] < 1.0e-12] = 0.0
    return rho


def reduce_quaternions(q: np.ndarray, lattice: str) -> np.ndarray:
    """Quaternions ``(..., 4)`` → their FZ representatives (w ≥ 0), as DAMASK's ``.reduced``.

    The representative is the first equivalent S_k ⊗ q, in :func:`symmetry_operators` order,
    that :func:`in_fundamental_zone`. Inside the zone that is the equivalent with the largest
    |w|, found with one matrix product; only orientations within :data:`NEAR_FACE` of a face
    (several equivalents with nearly the same |w|) go through DAMASK's full test.
    """
    family = lattice_family(lattice)
    q = np.asarray(q, dtype=np.float64)
    _check_last_axis(q, 4, "quaternions")

    def reduce_block(part: np.ndarray) -> np.ndarray:
        return _reduce(part.T, family).T

    return _blockwise(reduce_block, q.reshape(-1, 4), 4).reshape(q.shape)


def _reduce(q: np.ndarray, family: str) -> np.ndarray:
    """FZ representatives of component-first quaternions ``(4, m)``."""
    w_abs = np.abs(_W_MATRIX[family] @ q)  # (n_ops, m): |w| of every equivalent
    threshold = w_abs.max(axis=0)
    threshold *= 1.0 - NEAR_FACE
    largest = np.greater_equal(w_abs, threshold, out=w_abs, casting="unsafe")  # 0/1 floats
    count, index = _COUNT_AND_INDEX[family] @ largest
    choice = index.astype(np.intp)  # the operator, where exactly one equivalent is largest
    near_face = count > 1
    if near_face.any():
        choice[near_face] = _first_equivalent_in_zone(q[:, near_face], family)
    return _product(_OPS_T[family][:, choice], q)


def _first_equivalent_in_zone(q: np.ndarray, family: str) -> np.ndarray:
    """DAMASK's rule on ``(4, m)``: index of the first equivalent in the FZ (its own test)."""
    equivalents = _product(_OPS_T[family][:, :, None], q[:, None, :])  # (4, n_ops, m)
    inside = in_fundamental_zone(np.moveaxis(equivalents, 0, -1), family)
    # No equivalent is inside only for non-finite input; keep the largest |w| there.
    fallback = np.argmax(np.abs(equivalents[0]), axis=0)
    return np.where(inside.any(axis=0), np.argmax(inside, axis=0), fallback)


def reduce_to_fundamental_zone(eulers: np.ndarray, lattice: str) -> np.ndarray:
    """Euler angles ``(..., 3)`` → Euler angles of the FZ representatives (DAMASK convention).

    Equals ``damask.Orientation(rotation=damask.Rotation.from_Euler_angles(eulers),
    family=lattice_family(lattice)).reduced.as_Euler_angles()`` bit for bit: same
    representative, same degenerate-angle handling (see :func:`quaternions_to_eulers`).
    """
    family = lattice_family(lattice)
    eulers = np.asarray(eulers, dtype=np.float64)
    _check_last_axis(eulers, 3, "Euler angles")

    def reduce_block(part: np.ndarray) -> np.ndarray:
        return _eulers_from_quaternions(_reduce(_quaternions_from_eulers(part.T), family)).T

    return _blockwise(reduce_block, eulers.reshape(-1, 3), 3).reshape(eulers.shape)


def normalise_eulers(eulers: np.ndarray) -> np.ndarray:
    """Euler angles in radians → [0, 1] by dividing by (2π, π, 2π) (paper section 2.1)."""
    return np.asarray(eulers, dtype=np.float64) / EULER_PERIODS


def denormalise_eulers(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalise_eulers`: multiply by (2π, π, 2π)."""
    return np.asarray(x, dtype=np.float64) * EULER_PERIODS


def check_euler_range(
    eulers: np.ndarray, source: str, where: str = "", tolerance: float = 1.0e-6
) -> np.ndarray:
    """The angles as float64 ``(..., 3)``, or an :class:`InputError` naming ``source``.

    Rejects non-finite values and angles outside [0, 2π] × [0, π] × [0, 2π] (± ``tolerance``);
    when the largest value exceeds 2π but none exceeds 360, says the angles look like degrees.
    """
    try:
        arr = np.asarray(eulers, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(source, where, f"Euler angles are not numeric ({err})") from None
    if arr.ndim == 0 or arr.shape[-1] != 3:
        shape = arr.shape
        raise InputError(source, where, f"Euler angles need shape (..., 3), got {shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        count, first = int((~finite).sum()), _first_index(~finite)
        raise InputError(
            source, where, f"{count} Euler angle(s) are NaN or infinite (first at index {first})"
        )
    _check_bounds(arr, source, where, tolerance)
    return arr


def _check_bounds(arr: np.ndarray, source: str, where: str, tolerance: float) -> None:
    """Raise the range InputError, with the degrees hint when the values fit [0, 360]."""
    bad = (arr < -tolerance) | (arr > EULER_PERIODS + tolerance)
    if not bad.any():
        return
    largest, smallest = float(arr.max()), float(arr.min())
    if largest > 2.0 * np.pi + tolerance and largest <= 360.0 + tolerance and smallest >= 0:
        raise InputError(
            source,
            where,
            f"Euler angles look like degrees (largest {largest:.4g}); radians expected "
            "(φ1, φ2 in [0, 2π], Φ in [0, π]; convert with numpy.radians)",
        )
    index = _first_index(bad)
    names, ranges = ("φ1", "Φ", "φ2"), ("[0, 2π]", "[0, π]", "[0, 2π]")
    component = index[-1]
    raise InputError(
        source,
        where,
        f"{int(bad.sum())} Euler angle(s) out of range: {names[component]} = "
        f"{arr[index]:.6g} at index {index} is outside {ranges[component]} (radians)",
    )


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    """Index tuple of the first True element of a boolean array."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def phi4(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Paper Eq. 5 (Huynh 2009): Φ₄ = 1 − |q₁·q₂| per pair, in [0, 1], no crystal symmetry.

    0 for identical rotations, 1 for rotations 180° apart; 1 − cos(θ/2) for a rotation angle θ
    between them. Shapes ``(..., 4)`` broadcast; returns ``(...)``.
    """
    q1 = np.asarray(q1, dtype=np.float64)
    q2 = np.asarray(q2, dtype=np.float64)
    _check_last_axis(q1, 4, "quaternions")
    _check_last_axis(q2, 4, "quaternions")
    dot = np.abs(np.einsum("...i,...i->...", q1, q2))
    return np.clip(1.0 - dot, 0.0, 1.0)


def phi4_eulers(eulers1: np.ndarray, eulers2: np.ndarray) -> np.ndarray:
    """:func:`phi4` of two sets of Bunge Euler angles ``(..., 3)`` in radians."""
    return phi4(eulers_to_quaternions(eulers1), eulers_to_quaternions(eulers2))


def misorientation_angle(q1: np.ndarray, q2: np.ndarray, lattice: str) -> np.ndarray:
    """Symmetry-aware misorientation (disorientation) angle in radians, per pair.

    θ = min over the lattice's operators S_k of 2·arccos|w(S_k ⊗ Δ)| with Δ = q₂ ⊗ q₁⁻¹, the
    misorientation of two orientations that share the lattice (with both crystals' symmetries
    S_i, S_j the angle of S_j ⊗ Δ ⊗ S_i⁻¹ equals that of S_i⁻¹ ⊗ S_j ⊗ Δ, so one set of
    operators suffices). Equals DAMASK's ``Orientation.disorientation`` angle; at most 62.8° for
    cubic and 93.8° for hexagonal. Shapes ``(..., 4)`` broadcast; returns ``(...)``.
    """
    family = lattice_family(lattice)
    q1 = _components(conjugate_quaternions(q1), 4, "q1")
    delta = _product(_components(q2, 4, "q2"), q1)  # (4, ...) broadcast shape

    def angle_block(part: np.ndarray) -> np.ndarray:
        cos_half = np.abs(_W_MATRIX[family] @ part.T).max(axis=0)
        return 2.0 * np.arccos(np.minimum(cos_half, 1.0))

    return _blockwise(angle_block, delta.reshape(4, -1).T, None).reshape(delta.shape[1:])
