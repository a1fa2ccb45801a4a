"""Tests of latentmech.ve.orientation against analytic answers, DAMASK (the paper's tool) and orix."""

from __future__ import annotations

import damask
import numpy as np
import pytest

from latentmech.core.errors import InputError
from latentmech.ve import orientation as ori
from latentmech.ve.orientation import (
    check_euler_range,
    conjugate_quaternions,
    denormalise_eulers,
    eulers_to_quaternions,
    in_fundamental_zone,
    lattice_family,
    misorientation_angle,
    multiply_quaternions,
    normalise_eulers,
    phi4,
    phi4_eulers,
    quaternions_to_eulers,
    reduce_quaternions,
    reduce_to_fundamental_zone,
    symmetry_operators,
)

FAMILIES = ("cubic", "hexagonal")
N_REFERENCE = 100_000


def random_eulers(n: int, seed: int) -> np.ndarray:
    """Uniformly random orientations as DAMASK's Euler angles."""
    return damask.Rotation.from_random(n, rng_seed=seed).as_Euler_angles()


def axis_angle_quaternion(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Quaternion of a rotation by ``degrees`` about ``axis`` (DAMASK's axis–angle convention)."""
    axis = np.asarray(axis, dtype=np.float64)
    n_omega = np.append(axis / np.linalg.norm(axis), np.radians(degrees))
    return damask.Rotation.from_axis_angle(n_omega).quaternion


def same_rotation(q1: np.ndarray, q2: np.ndarray, atol: float) -> np.ndarray:
    """Per row: q1 and q2 are the same rotation (q or −q) within ``atol``."""
    plus = np.all(np.abs(q1 - q2) <= atol, axis=-1)
    minus = np.all(np.abs(q1 + q2) <= atol, axis=-1)
    return plus | minus


def degenerate_eulers() -> np.ndarray:
    """Angles on and near DAMASK's special cases (Φ ≈ 0, Φ ≈ π, φ ≈ 0 or 2π)."""
    two_pi, pi = 2 * np.pi, np.pi
    return np.array(
        [
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 2.0],
            [5.0, 0.0, 4.0],
            [1.0, 1e-9, 2.0],
            [1.0, 1e-7, 2.0],
            [1.0, pi, 2.0],
            [4.0, pi, 0.5],
            [1.0, pi - 1e-9, 2.0],
            [1.0, pi - 1e-4, 2.0],
            [two_pi, 1.0, two_pi],
            [two_pi - 1e-9, 1.0, 1e-9],
            [0.3, 1.0, two_pi - 1e-7],
            [pi, pi / 2, pi],
            [pi / 4, pi / 4, pi / 4],
        ]
    )


def special_orientations(family: str) -> np.ndarray:
    """Texture components and orientations exactly on FZ faces, times every symmetry operator.

    These are the cases where several equivalents lie in DAMASK's (tolerant) FZ and the operator
    order decides the representative.
    """
    textures = np.radians([[0, 0, 0], [0, 45, 0], [35, 45, 0], [90, 35, 45], [45, 0, 0]])
    base = [eulers_to_quaternions(textures)]
    if family == "cubic":
        edge = np.degrees(2 * np.arctan(2 - np.sqrt(2)))  # 60.73° about [110]: x and y faces
        faces = [([1, 0, 0], 45), ([0, 0, 1], 45), ([1, 1, 1], 60), ([1, 1, 0], edge)]
    else:
        faces = [([0, 0, 1], 30), ([1, 0, 0], 90), ([0, 1, 0], 90), ([np.sqrt(3), 1, 0], 90)]
    base.append(np.array([axis_angle_quaternion(a, d) for a, d in faces]))
    base = np.concatenate(base)
    ops = symmetry_operators(family)
    equivalents = multiply_quaternions(ops[:, None, :], base[None, :, :]).reshape(-1, 4)
    return damask.Rotation(equivalents).as_Euler_angles()


def damask_reduced(eulers: np.ndarray, family: str):
    return damask.Orientation(rotation=damask.Rotation.from_Euler_angles(eulers), family=family)


# --- lattices and operators ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family"),
    [
        *[("cubic", "cubic"), ("Cubic", "cubic"), ("cF", "cubic"), ("cI", "cubic")],
        *[("cP", "cubic"), ("hexagonal", "hexagonal"), ("hP", "hexagonal")],
        (" HEXAGONAL ", "hexagonal"),
    ],
)
def test_lattice_family_accepts_families_and_damask_symbols(name: str, family: str) -> None:
    assert lattice_family(name) == family


@pytest.mark.parametrize("name", ["tetragonal", "fcc", "tI", "", "cubic-ish", None, 3])
def test_lattice_family_rejects_unknown_names_naming_the_source(name: object) -> None:
    with pytest.raises(InputError, match=r"material\.yaml.*unknown lattice"):
        lattice_family(name, source="material.yaml")  # type: ignore[arg-type]


@pytest.mark.parametrize(("family", "count"), [("cubic", 24), ("hexagonal", 12)])
def test_symmetry_operators_are_damasks_in_its_order_and_form_a_group(
    family: str, count: int
) -> None:
    ops = symmetry_operators(family)
    reference = damask.Crystal(family=family).symmetry_operations.quaternion
    assert ops.shape == (count, 4)
    np.testing.assert_array_equal(ops, reference)
    np.testing.assert_allclose(np.linalg.norm(ops, axis=1), 1.0, atol=1e-15)
    products = multiply_quaternions(ops[:, None, :], ops[None, :, :]).reshape(-1, 4)
    closes = same_rotation(products[:, None, :], ops[None, :, :], atol=1e-12)
    assert np.all(closes.sum(axis=1) == 1)  # closed under composition, each product found once


def test_unknown_lattice_is_an_input_error_everywhere() -> None:
    q = np.array([1.0, 0.0, 0.0, 0.0])
    with pytest.raises(InputError, match="unknown lattice 'bcc'"):
        reduce_to_fundamental_zone(np.zeros(3), "bcc")
    with pytest.raises(InputError, match="unknown lattice"):
        misorientation_angle(q, q, "orthorhombic")
    with pytest.raises(InputError, match="unknown lattice"):
        symmetry_operators("mP")


# --- conversions -----------------------------------------------------------------------------


def test_eulers_to_quaternions_equals_damask_including_degenerate_angles() -> None:
    eulers = np.concatenate([random_eulers(20_000, seed=1), degenerate_eulers()])
    ours = eulers_to_quaternions(eulers)
    reference = damask.Rotation.from_Euler_angles(eulers).quaternion
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    assert np.all(ours[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-14)


def test_quaternions_to_eulers_equals_damask_including_degenerate_cases() -> None:
    random_q = damask.Rotation.from_random(20_000, rng_seed=2).quaternion
    # Φ ≈ 0 (rotations about z), Φ ≈ π (w = z = 0), and tiny offsets around both thresholds.
    angles, zeros = np.array([0.1, 1.0, 3.0]), np.zeros(3)
    about_z = np.stack([np.cos(angles), zeros, zeros, np.sin(angles)], axis=1)
    phi_pi = np.array([[0.0, 0.6, 0.8, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, -0.28, 0.96, 0.0]])
    near = eulers_to_quaternions(degenerate_eulers())
    quats = np.concatenate([random_q, about_z, phi_pi, near])
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    ours = quaternions_to_eulers(quats)
    reference = damask.Rotation.from_quaternion(quats, accept_homomorph=True).as_Euler_angles()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    assert np.all(ours >= 0) and np.all(ours[:, [0, 2]] < 2 * np.pi) and np.all(ours[:, 1] <= np.pi)
    # w < 0 is read as −q
    np.testing.assert_array_equal(quaternions_to_eulers(-random_q), quaternions_to_eulers(random_q))


def test_euler_quaternion_round_trips() -> None:
    rng = np.random.default_rng(3)
    low, high = np.full(3, 0.01), ori.EULER_PERIODS - 0.01
    interior = rng.uniform(low, high, size=(100, 50, 3))  # any leading shape
    back = quaternions_to_eulers(eulers_to_quaternions(interior))
    assert back.shape == interior.shape
    np.testing.assert_allclose(back, interior, rtol=0, atol=1e-10)
    quats = damask.Rotation.from_random(5000, rng_seed=4).quaternion
    again = eulers_to_quaternions(quaternions_to_eulers(quats))
    assert np.all(same_rotation(again, quats, atol=1e-10))


def test_multiply_quaternions_equals_damask_composition() -> None:
    a = damask.Rotation.from_random(1000, rng_seed=5)
    b = damask.Rotation.from_random(1000, rng_seed=6)
    np.testing.assert_allclose(
        multiply_quaternions(a.quaternion, b.quaternion), (a * b).quaternion, rtol=0, atol=1e-14
    )
    np.testing.assert_allclose(
        multiply_quaternions(a.quaternion, conjugate_quaternions(a.quaternion)),
        np.tile([1.0, 0.0, 0.0, 0.0], (1000, 1)),
        atol=1e-14,
    )


# --- fundamental zone ------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_reduce_equals_damask_reduced_on_100k_random_orientations(family: str) -> None:
    eulers = random_eulers(N_REFERENCE, seed=7 + len(family))
    reference = damask_reduced(eulers, family).reduced
    ours = reduce_to_fundamental_zone(eulers, family)
    ours_q = reduce_quaternions(eulers_to_quaternions(eulers), family)
    assert np.all(same_rotation(ours_q, reference.quaternion, atol=1e-9))
    np.testing.assert_allclose(ours, reference.as_Euler_angles(), rtol=0, atol=1e-9)
    # Euler-in path and quaternion path are the same orientations
    assert np.all(same_rotation(eulers_to_quaternions(ours), ours_q, atol=1e-9))


@pytest.mark.parametrize("family", FAMILIES)
def test_reduce_equals_damask_on_fz_faces_and_texture_components(family: str) -> None:
    eulers = special_orientations(family)
    reference = damask_reduced(eulers, family).reduced
    ours_q = reduce_quaternions(eulers_to_quaternions(eulers), family)
    assert np.all(same_rotation(ours_q, reference.quaternion, atol=1e-9))
    np.testing.assert_allclose(
        reduce_to_fundamental_zone(eulers, family), reference.as_Euler_angles(), atol=1e-9
    )
    # these inputs really sit on faces: several equivalents share the largest |w|
    w_abs = np.abs(ori._W_MATRIX[family] @ eulers_to_quaternions(eulers).T)
    ties = np.sum(w_abs >= w_abs.max(axis=0) * (1 - 1e-9), axis=0)
    assert np.mean(ties > 1) > 0.4


@pytest.mark.parametrize("family", FAMILIES)
def test_full_damask_test_path_agrees_with_the_fast_path(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    eulers = np.concatenate([random_eulers(20_000, seed=11), special_orientations(family)])
    fast = reduce_to_fundamental_zone(eulers, family)
    full_test = ori._first_equivalent_in_zone
    rows_tested = []

    def counting(q: np.ndarray, family: str) -> np.ndarray:
        rows_tested.append(q.shape[1])
        return full_test(q, family)

    monkeypatch.setattr(ori, "_first_equivalent_in_zone", counting)
    monkeypatch.setattr(ori, "NEAR_FACE", 1.0)  # every orientation now takes DAMASK's full test
    np.testing.assert_array_equal(reduce_to_fundamental_zone(eulers, family), fast)
    assert sum(rows_tested) == len(eulers)


@pytest.mark.parametrize("family", FAMILIES)
def test_reduced_orientation_is_equivalent_to_input_and_in_damask_fz(family: str) -> None:
    quats = damask.Rotation.from_random(20_000, rng_seed=12).quaternion.reshape(40, 500, 4)
    reduced = reduce_quaternions(quats, family)
    assert reduced.shape == quats.shape
    assert np.all(misorientation_angle(quats, reduced, family) < 1e-6)
    assert np.all(damask.Orientation(rotation=reduced, family=family).in_FZ)
    assert np.all(in_fundamental_zone(reduced, family))
    # idempotent, and equivalents of one orientation all reduce to the same representative
    np.testing.assert_allclose(reduce_quaternions(reduced, family), reduced, atol=1e-12)
    ops = symmetry_operators(family)
    one = quats[0, :50]
    reduced_equivalents = reduce_quaternions(multiply_quaternions(ops[:, None], one), family)
    assert np.all(same_rotation(reduced_equivalents, reduced[0, :50][None], atol=1e-9))


@pytest.mark.parametrize(("family", "symmetry_name"), [("cubic", "O"), ("hexagonal", "D6")])
def test_reduce_agrees_with_orix_given_the_inverse_quaternion(
    family: str, symmetry_name: str
) -> None:
    from orix.quaternion import Orientation as OrixOrientation
    from orix.quaternion import symmetry as orix_symmetry

    symmetry = getattr(orix_symmetry, symmetry_name)
    eulers = random_eulers(20_000, seed=13)
    quats = eulers_to_quaternions(eulers)
    ours = reduce_quaternions(quats, family)
    # orix is active (crystal → sample): its quaternion is the conjugate of DAMASK's
    orix_q = OrixOrientation(conjugate_quaternions(quats), symmetry=symmetry).reduce().data
    assert np.all(same_rotation(conjugate_quaternions(orix_q), ours, atol=1e-9))
    # orix's own Euler constructor applies the same inversion, so Euler angles agree directly
    orix_eulers = OrixOrientation.from_euler(eulers, symmetry=symmetry).reduce().to_euler()
    assert np.all(same_rotation(eulers_to_quaternions(orix_eulers), ours, atol=1e-9))
    # the pitfall: feeding orix DAMASK's quaternion as is gives other representatives
    naive = OrixOrientation(quats, symmetry=symmetry).reduce().data
    assert np.mean(same_rotation(naive, ours, atol=1e-9)) < 0.2
    # on FZ faces orix may break ties differently, but picks an equivalent orientation in the FZ
    faces = eulers_to_quaternions(special_orientations(family))
    orix_faces = OrixOrientation(conjugate_quaternions(faces), symmetry=symmetry).reduce().data
    orix_faces = conjugate_quaternions(orix_faces)
    orix_faces *= np.where(orix_faces[:, :1] < 0, -1.0, 1.0)  # DAMASK wants w ≥ 0
    assert np.all(
        misorientation_angle(orix_faces, reduce_quaternions(faces, family), family) < 1e-6
    )
    assert np.all(damask.Orientation(rotation=orix_faces, family=family).in_FZ)


def test_reduce_keeps_shape_and_propagates_nan() -> None:
    eulers = random_eulers(6 * 5 * 4, seed=14).reshape(6, 5, 4, 3)
    eulers[2, 3, 1] = np.nan
    reduced = reduce_to_fundamental_zone(eulers, "cubic")
    assert reduced.shape == (6, 5, 4, 3)
    bad = np.zeros((6, 5, 4), dtype=bool)
    bad[2, 3, 1] = True
    assert np.isnan(reduced[bad]).all() and np.isfinite(reduced[~bad]).all()
    assert reduce_to_fundamental_zone(np.empty((0, 3)), "hexagonal").shape == (0, 3)


# --- normalisation and range checks ----------------------------------------------------------


def test_normalise_divides_by_two_pi_pi_two_pi_and_round_trips() -> None:
    np.testing.assert_allclose(normalise_eulers([2 * np.pi, np.pi, 2 * np.pi]), [1, 1, 1])
    np.testing.assert_allclose(normalise_eulers([np.pi, np.pi / 2, np.pi / 2]), [0.5, 0.5, 0.25])
    eulers = random_eulers(1000, seed=15).reshape(10, 100, 3)
    unit = normalise_eulers(eulers)
    assert unit.min() >= 0 and unit.max() <= 1
    np.testing.assert_allclose(denormalise_eulers(unit), eulers, rtol=1e-15, atol=1e-15)


def test_check_euler_range_accepts_valid_angles_within_tolerance() -> None:
    eulers = np.array([[0.0, 0.0, 0.0], [2 * np.pi, np.pi, 2 * np.pi], [-1e-9, np.pi + 1e-9, 1]])
    out = check_euler_range(eulers.tolist(), source="ve.npy")
    assert out.dtype == np.float64 and out.shape == (3, 3)


def test_check_euler_range_says_degrees() -> None:
    degrees = np.degrees(random_eulers(100, seed=16))
    with pytest.raises(InputError, match=r"ve\.npy \(eulers\): .*look like degrees"):
        check_euler_range(degrees, source="ve.npy", where="eulers")


@pytest.mark.parametrize(
    ("value", "index", "pattern"),
    [
        (3.5, 1, r"Φ = 3\.5 at index \(4, 1\) is outside \[0, π\]"),
        (-0.2, 0, r"φ1 = -0\.2 at index \(4, 0\) is outside \[0, 2π\]"),
        (400.0, 2, r"φ2 = 400 at index \(4, 2\)"),
    ],
)
def test_check_euler_range_names_the_bad_angle(value: float, index: int, pattern: str) -> None:
    eulers = np.full((10, 3), 0.5)
    eulers[4, index] = value
    with pytest.raises(InputError, match=pattern):
        check_euler_range(eulers, source="grid.vti")


def test_check_euler_range_rejects_nan_and_bad_shapes() -> None:
    eulers = np.full((4, 4, 3), 0.5)
    eulers[1, 2, 0] = np.nan
    with pytest.raises(InputError, match=r"1 Euler angle\(s\) are NaN .*index \(1, 2, 0\)"):
        check_euler_range(eulers, source="a.dream3d")
    with pytest.raises(InputError, match=r"shape \(\.\.\., 3\)"):
        check_euler_range(np.zeros((5, 4)), source="a.npy")
    with pytest.raises(InputError, match="not numeric"):
        check_euler_range([["a", "b", "c"]], source="a.npy")


# --- metrics ---------------------------------------------------------------------------------


def test_phi4_analytic_values() -> None:
    identity = np.array([1.0, 0.0, 0.0, 0.0])
    q = damask.Rotation.from_random(1000, rng_seed=17).quaternion
    np.testing.assert_allclose(phi4(q, q), 0.0, atol=1e-15)
    np.testing.assert_allclose(phi4(q, -q), 0.0, atol=1e-15)  # q and −q: same rotation
    assert phi4(identity, axis_angle_quaternion([1, 2, 3], 180)) == pytest.approx(1.0, abs=1e-15)
    quarter = phi4(identity, axis_angle_quaternion([0, 0, 1], 90))
    assert quarter == pytest.approx(1 - np.cos(np.radians(45)), abs=1e-15)
    # 1 − cos(θ/2) for the rotation angle θ between any two orientations, in [0, 1], symmetric
    r = damask.Rotation.from_random(1000, rng_seed=18).quaternion
    theta = damask.Rotation(q).misorientation_angle(damask.Rotation(r))
    np.testing.assert_allclose(phi4(q, r), 1 - np.cos(theta / 2), atol=1e-12)
    np.testing.assert_array_equal(phi4(q, r), phi4(r, q))
    assert phi4(q, r).min() >= 0 and phi4(q, r).max() <= 1


def test_phi4_eulers_uses_the_same_quaternions() -> None:
    e1, e2 = random_eulers(500, seed=19), random_eulers(500, seed=20)
    np.testing.assert_allclose(
        phi4_eulers(e1, e2), phi4(eulers_to_quaternions(e1), eulers_to_quaternions(e2))
    )
    assert phi4_eulers(np.zeros(3), np.array([np.pi, 0.0, 0.0])) == pytest.approx(1.0)


@pytest.mark.parametrize(("family", "maximum_deg"), [("cubic", 62.8), ("hexagonal", 93.84)])
def test_misorientation_equals_damask_disorientation(family: str, maximum_deg: float) -> None:
    a = damask.Orientation.from_random(shape=3000, family=family, rng_seed=21)
    b = damask.Orientation.from_random(shape=3000, family=family, rng_seed=22)
    ours = misorientation_angle(a.quaternion, b.quaternion, family)
    np.testing.assert_allclose(ours, a.disorientation_angle(b), atol=1e-10)
    _, angle = a.disorientation(b).as_axis_angle(pair=True)
    np.testing.assert_allclose(ours, angle, atol=1e-7)
    np.testing.assert_array_equal(ours, misorientation_angle(b.quaternion, a.quaternion, family))
    assert np.degrees(ours.max()) <= maximum_deg and np.degrees(ours.max()) > maximum_deg - 10


@pytest.mark.parametrize("family", FAMILIES)
def test_misorientation_of_equivalents_is_zero_and_of_known_rotation_is_its_angle(
    family: str,
) -> None:
    q = damask.Rotation.from_random(200, rng_seed=23).quaternion
    ops = symmetry_operators(family)
    equivalents = multiply_quaternions(ops[:, None, :], q[None, :, :])  # (n_ops, 200, 4)
    assert np.all(misorientation_angle(q[None], equivalents, family) < 1e-6)
    ten_about_z = axis_angle_quaternion([0, 0, 1], 10)
    rotated = multiply_quaternions(ten_about_z, q)  # a 10° rotation in the crystal frame
    np.testing.assert_allclose(np.degrees(misorientation_angle(q, rotated, family)), 10, atol=1e-9)
    # ... wherever the symmetry operators put either orientation
    np.testing.assert_allclose(
        np.degrees(misorientation_angle(equivalents, rotated[None], family)), 10, atol=1e-9
    )
    # Euler angle example: φ1 differs by 10° (a rotation about the sample z axis)
    e1 = np.array([0.3, 0.7, 1.1])
    e2 = e1 + np.radians([10, 0, 0])
    angle = misorientation_angle(eulers_to_quaternions(e1), eulers_to_quaternions(e2), family)
    assert np.degrees(angle) == pytest.approx(10, abs=1e-9)
