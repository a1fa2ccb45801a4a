"""Tests of HR-DIC kinematics on analytic displacement fields and against DefDAP on real maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentmech.dic.io import read_davis
from latentmech.dic.kinematics import (
    deformation_gradient,
    green_strain,
    max_shear,
    rotation,
    small_strain,
    strain_fields,
)

SPACING = 8.0
NY, NX = 6, 7


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y) of a DaVis-like grid: x along columns, y along rows."""
    y, x = np.mgrid[0:NY, 0:NX] * SPACING + 4.0
    return x, y


def _uniform(tensor: np.ndarray, expected: list[list[float]]) -> None:
    """Every pixel of a (2, 2, ny, nx) tensor field equals ``expected``."""
    np.testing.assert_allclose(
        np.moveaxis(tensor, (0, 1), (-2, -1)),
        np.broadcast_to(expected, (NY, NX, 2, 2)),
        rtol=0,
        atol=1e-14,
    )


def test_uniform_stretch() -> None:
    a, b = 0.03, -0.01
    x, y = _grid()
    F = deformation_gradient(a * x, b * y, SPACING)
    assert F.shape == (2, 2, NY, NX)
    _uniform(F, [[1 + a, 0], [0, 1 + b]])
    E = green_strain(F)
    _uniform(E, [[a + a * a / 2, 0], [0, b + b * b / 2]])
    _uniform(small_strain(F), [[a, 0], [0, b]])
    np.testing.assert_allclose(max_shear(E), abs(a + a * a / 2 - b - b * b / 2) / 2, atol=1e-15)
    np.testing.assert_allclose(rotation(F), 0.0, atol=1e-15)


def test_simple_shear_along_x() -> None:
    """u = γ·y: F_01 = ∂u/∂y = γ (y is the row direction)."""
    g = 0.2
    x, y = _grid()
    F = deformation_gradient(g * y, np.zeros_like(x), SPACING)
    _uniform(F, [[1, g], [0, 1]])
    E = green_strain(F)
    _uniform(E, [[0, g / 2], [g / 2, g * g / 2]])
    _uniform(small_strain(F), [[0, g / 2], [g / 2, 0]])
    np.testing.assert_allclose(max_shear(E), np.hypot(g * g / 4, g / 2), atol=1e-15)
    np.testing.assert_allclose(rotation(F), np.arctan2(-g, 2.0), atol=1e-15)


def test_simple_shear_along_y() -> None:
    """v = γ·x: F_10 = ∂v/∂x = γ, rotation towards +y is positive."""
    g = 0.1
    x, _ = _grid()
    F = deformation_gradient(np.zeros_like(x), g * x, SPACING)
    _uniform(F, [[1, 0], [g, 1]])
    _uniform(green_strain(F), [[g * g / 2, g / 2], [g / 2, 0]])
    np.testing.assert_allclose(rotation(F), np.arctan2(g, 2.0), atol=1e-15)


@pytest.mark.parametrize("theta", [0.05, -0.3, 2.5])
def test_rigid_rotation(theta: float) -> None:
    """x' = R x: no Green strain, no shear, rotation θ exactly (also beyond π/2)."""
    c, s = np.cos(theta), np.sin(theta)
    x, y = _grid()
    u, v = (c - 1) * x - s * y, s * x + (c - 1) * y
    F = deformation_gradient(u, v, SPACING)
    _uniform(F, [[c, -s], [s, c]])
    E = green_strain(F)
    _uniform(E, [[0, 0], [0, 0]])
    np.testing.assert_allclose(max_shear(E), 0.0, atol=1e-7)  # sqrt of ~1e-15 squared terms
    np.testing.assert_allclose(rotation(F), theta, rtol=0, atol=1e-14)
    _uniform(small_strain(F), [[c - 1, 0], [0, c - 1]])  # small strain is not rotation-free


def test_positive_rotation_turns_x_towards_rows_below() -> None:
    """A point on +x moved to larger row index (y, drawn downwards) is a positive rotation."""
    x, _ = _grid()
    fields = strain_fields(np.zeros_like(x), 0.01 * x, SPACING)  # v grows with x
    assert (fields["rotation"] > 0).all()


def test_quadratic_field_uses_central_and_one_sided_differences() -> None:
    """u = c·x²: exact 2cx inside (central), c(2x ± s) at the edges (one-sided), as np.gradient."""
    cc = 1e-3
    x, _ = _grid()
    F = deformation_gradient(cc * x**2, np.zeros_like(x), SPACING)
    expected = 1 + 2 * cc * x
    expected[:, 0] = 1 + cc * (2 * x[:, 0] + SPACING)
    expected[:, -1] = 1 + cc * (2 * x[:, -1] - SPACING)
    np.testing.assert_allclose(F[0, 0], expected, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(F[0, 1], 0.0)


def test_nan_reaches_only_the_point_and_the_stencils_using_it() -> None:
    x, y = _grid()
    u, v = 0.01 * x, 0.02 * y
    u[3, 3] = v[3, 3] = np.nan
    F = deformation_gradient(u, v, SPACING)
    d_dx_nan = {(3, 3), (3, 2), (3, 4)}
    d_dy_nan = {(3, 3), (2, 3), (4, 3)}
    for i in range(2):
        assert set(zip(*np.nonzero(np.isnan(F[i, 0])), strict=True)) == d_dx_nan
        assert set(zip(*np.nonzero(np.isnan(F[i, 1])), strict=True)) == d_dy_nan
    fields = strain_fields(u, v, SPACING)
    expected = {"exx": d_dx_nan, "eyy": d_dy_nan}  # exx needs only ∂/∂x, eyy only ∂/∂y
    for name, field in fields.items():
        nan_at = set(zip(*np.nonzero(np.isnan(field)), strict=True))
        assert nan_at == expected.get(name, d_dx_nan | d_dy_nan), name
    finite = np.isfinite(fields["exx"])
    np.testing.assert_allclose(fields["exx"][finite], 0.01 + 0.01**2 / 2, rtol=1e-13)


def test_nan_at_corner_uses_one_sided_stencils() -> None:
    x, _ = _grid()
    u = 0.01 * x
    u[0, 0] = np.nan
    F = deformation_gradient(u, np.zeros_like(u), SPACING)
    assert set(zip(*np.nonzero(np.isnan(F[0, 0])), strict=True)) == {(0, 0), (0, 1)}
    assert set(zip(*np.nonzero(np.isnan(F[0, 1])), strict=True)) == {(0, 0), (1, 0)}
    assert not np.isnan(F[1]).any()  # v is complete: its row of F is untouched


def test_strain_fields_green_and_small() -> None:
    a, g = 0.05, 0.1
    x, y = _grid()
    u, v = a * x + g * y, np.zeros_like(x)
    green = strain_fields(u, v, SPACING)
    small = strain_fields(u, v, SPACING, measure="small")
    assert set(green) == set(small) == {"exx", "eyy", "exy", "rotation", "max_shear"}
    np.testing.assert_allclose(green["exx"], a + a * a / 2, atol=1e-15)
    np.testing.assert_allclose(green["eyy"], g * g / 2, atol=1e-15)
    np.testing.assert_allclose(green["exy"], g * (1 + a) / 2, atol=1e-15)
    np.testing.assert_allclose(small["exx"], a, atol=1e-15)
    np.testing.assert_allclose(small["eyy"], 0.0, atol=1e-15)
    np.testing.assert_allclose(small["exy"], g / 2, atol=1e-15)
    np.testing.assert_allclose(small["max_shear"], np.hypot(a / 2, g / 2), atol=1e-15)
    np.testing.assert_allclose(green["rotation"], np.arctan2(-g, 2 + a), atol=1e-15)
    np.testing.assert_array_equal(green["rotation"], small["rotation"])


def test_spacing_scales_gradients() -> None:
    x, _ = _grid()
    u = 0.02 * x
    F1 = deformation_gradient(u, np.zeros_like(u), SPACING)
    F2 = deformation_gradient(u, np.zeros_like(u), 2 * SPACING)
    np.testing.assert_allclose(F2[0, 0] - 1, (F1[0, 0] - 1) / 2, atol=1e-15)


def test_bad_arguments() -> None:
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match="one shape"):
        deformation_gradient(z, np.zeros((4, 3)), 1.0)
    with pytest.raises(ValueError, match="at least 2 vectors"):
        deformation_gradient(np.zeros((1, 4)), np.zeros((1, 4)), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        deformation_gradient(z, z, 0.0)
    with pytest.raises(ValueError, match="measure"):
        strain_fields(z, z, 1.0, measure="log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(2, 2, \.\.\.\)"):
        green_strain(np.zeros((3, 3, 2)))


# --------------------------------------------------------------------------------------------
# Real data against DefDAP (same F, Green strain and max shear where ours is finite)
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("relpath", ["defdap/testDataDIC.txt", "mechmicroman_hrdic/p3-1.TXT"])
def test_kinematics_match_defdap(real_data: Path, relpath: str) -> None:
    from defdap import hrdic

    path = real_data / relpath
    vectors = read_davis(path)
    F = deformation_gradient(vectors.u, vectors.v, vectors.spacing_px)
    E = green_strain(F)
    shear = max_shear(E)
    store = hrdic.Map(path).data._store  # raw arrays: no crop, no mask
    for ours, name in ((F, "f"), (E, "e"), (shear, "max_shear")):
        theirs = store[name]["data"]
        assert theirs.shape == ours.shape, name
        finite = np.isfinite(ours)
        assert finite.mean() > 0.9, name
        np.testing.assert_allclose(ours[finite], theirs[finite], rtol=0, atol=1e-12, err_msg=name)
    fields = strain_fields(vectors.u, vectors.v, vectors.spacing_px)
    np.testing.assert_array_equal(fields["max_shear"], shear)
    np.testing.assert_array_equal(fields["exy"], E[0, 1])
    if relpath.startswith("defdap"):
        assert np.isfinite(F).all()  # no invalid vectors in this file
        assert 0.001 < float(np.median(shear)) < 0.1  # a deformed Ni superalloy, not noise
