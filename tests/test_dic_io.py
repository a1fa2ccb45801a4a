"""Tests of the HR-DIC readers: scalar maps (npy/npz/TIFF/HDF5) and DaVis 2D-vector exports."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from latentmech.core.errors import InputError
from latentmech.dic.io import KNOWN_DAVIS_VERSIONS, DavisVectors, read_davis, read_map

MAP = np.arange(12, dtype=np.float32).reshape(3, 4) / 7.0  # not exactly representable → dtype path


# --------------------------------------------------------------------------------------------
# read_map
# --------------------------------------------------------------------------------------------


def test_npy_round_trip_gives_float64(tmp_path: Path) -> None:
    np.save(tmp_path / "m.npy", MAP)
    out = read_map(tmp_path / "m.npy")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, MAP.astype(np.float64))


def test_integer_and_bool_maps_become_float(tmp_path: Path) -> None:
    np.save(tmp_path / "i.npy", np.array([[1, -2], [3, 4]], dtype=np.int16))
    np.save(tmp_path / "b.npy", np.array([[True, False], [False, True]]))
    np.testing.assert_array_equal(read_map(str(tmp_path / "i.npy")), [[1.0, -2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(read_map(tmp_path / "b.npy"), [[1.0, 0.0], [0.0, 1.0]])


def test_npz_single_array_needs_no_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", strain=MAP)
    np.testing.assert_array_equal(read_map(tmp_path / "one.npz"), MAP)


def test_npz_key_argument_and_shorthand(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=MAP, b=2 * MAP)
    np.testing.assert_array_equal(read_map(tmp_path / "two.npz", key="b"), 2 * MAP)
    np.testing.assert_array_equal(read_map(f"{tmp_path / 'two.npz'}:a"), MAP)


def test_npz_without_key_and_several_arrays_is_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=MAP, b=MAP)
    with pytest.raises(InputError, match=r"two\.npz \(key\): archive holds 2 arrays"):
        read_map(tmp_path / "two.npz")


def test_npz_missing_key_lists_the_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=MAP, b=MAP)
    with pytest.raises(InputError, match=r"two\.npz \(key 'c'\): no such array.*'a', 'b'"):
        read_map(tmp_path / "two.npz", key="c")


def test_tiff_round_trip(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "m.tif", MAP)
    tifffile.imwrite(tmp_path / "u.TIFF", (MAP * 100).astype(np.uint16))
    np.testing.assert_array_equal(read_map(tmp_path / "m.tif"), MAP)
    np.testing.assert_array_equal(read_map(tmp_path / "u.TIFF"), (MAP * 100).astype(np.uint16))


def test_rgb_tiff_is_an_error(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((5, 6, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match=r"rgb\.tif \(image\): .*shape \(5, 6, 3\) \(an RGB"):
        read_map(tmp_path / "rgb.tif")


def test_tiff_stack_is_an_error(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "stack.tif", np.zeros((4, 5, 6), np.float32), photometric="minisblack"
    )
    with pytest.raises(InputError, match=r"stack\.tif \(image\): .*shape \(4, 5, 6\)"):
        read_map(tmp_path / "stack.tif")


def _write_h5(path: Path) -> None:
    with h5py.File(path, "w") as h5:
        h5["grp/strain"] = MAP
        h5["flat"] = np.arange(5.0)


def test_hdf5_key_argument_and_shorthand(tmp_path: Path) -> None:
    _write_h5(tmp_path / "m.h5")
    np.testing.assert_array_equal(read_map(tmp_path / "m.h5", key="/grp/strain"), MAP)
    np.testing.assert_array_equal(read_map(f"{tmp_path / 'm.h5'}:/grp/strain"), MAP)
    np.testing.assert_array_equal(read_map(f"{tmp_path / 'm.h5'}:grp/strain", "grp/strain"), MAP)


def test_hdf5_needs_a_key(tmp_path: Path) -> None:
    _write_h5(tmp_path / "m.hdf5")
    with pytest.raises(InputError, match=r"m\.hdf5 \(key\): .*dataset path"):
        read_map(tmp_path / "m.hdf5")


def test_hdf5_missing_dataset_lists_datasets(tmp_path: Path) -> None:
    _write_h5(tmp_path / "m.h5")
    with pytest.raises(InputError, match=r"\(dataset /nope\): .*found nothing.*'/flat'"):
        read_map(tmp_path / "m.h5", key="/nope")


def test_hdf5_group_is_not_a_dataset(tmp_path: Path) -> None:
    _write_h5(tmp_path / "m.h5")
    with pytest.raises(InputError, match=r"\(dataset /grp\): expected a dataset, found a group"):
        read_map(f"{tmp_path / 'm.h5'}:/grp")


def test_hdf5_one_dimensional_dataset_is_an_error(tmp_path: Path) -> None:
    _write_h5(tmp_path / "m.h5")
    with pytest.raises(InputError, match=r"\(dataset /flat\): expected a 2D .*shape \(5,\)"):
        read_map(tmp_path / "m.h5", key="/flat")


def test_non_2d_npy_is_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match=r"cube\.npy \(array\): .*shape \(2, 3, 4\)"):
        read_map(tmp_path / "cube.npy")


@pytest.mark.parametrize(
    ("array", "dtype_text"),
    [(np.array([["a", "b"], ["c", "d"]]), "<U1"), (np.ones((2, 2), complex), "complex128")],
)
def test_non_numeric_dtype_is_an_error(tmp_path: Path, array: np.ndarray, dtype_text: str) -> None:
    np.save(tmp_path / "s.npy", array)
    with pytest.raises(InputError, match=rf"s\.npy \(array\): expected numeric .*{dtype_text}"):
        read_map(tmp_path / "s.npy")


def test_unknown_extension_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("1,2\n3,4\n")
    with pytest.raises(InputError, match=r"m\.csv \(extension\): expected one of .*'\.csv'"):
        read_map(tmp_path / "m.csv")


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"gone\.npy \(path\): file not found"):
        read_map(tmp_path / "gone.npy")
    with pytest.raises(InputError, match=r"gone\.h5:/a \(path\): file not found"):
        read_map(f"{tmp_path / 'gone.h5'}:/a")


def test_key_for_single_array_format_is_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "m.npy", MAP)
    with pytest.raises(InputError, match=r"m\.npy \(key\): .*no key expected, got 'x'"):
        read_map(tmp_path / "m.npy", key="x")


def test_conflicting_keys_are_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=MAP, b=MAP)
    with pytest.raises(InputError, match=r"two\.npz \(key\): key given twice: 'a' .* 'b'"):
        read_map(f"{tmp_path / 'two.npz'}:a", key="b")


def test_file_name_with_colon_is_not_split(tmp_path: Path) -> None:
    np.save(tmp_path / "t:1.npy", MAP)
    np.testing.assert_array_equal(read_map(tmp_path / "t:1.npy"), MAP)


# --------------------------------------------------------------------------------------------
# read_davis: a hand-built file with known values
# --------------------------------------------------------------------------------------------

HEADER_84 = '#DaVis 8.4.0 2D-vector 4 2 3 "" "pixel" "" "pixel" "displacement" "pixel"'
# 2 rows (y = 2, 6) × 3 columns (x = 2, 6, 10), spacing 4; (0, 0) vectors are invalid.
ROWS = [
    "2\t2\t0.5\t-0.25",
    "6\t2\t0\t0",
    "10\t2\t1.0\t0.0000",
    "2\t6\t0\t0.75",
    "6\t6\t-1.5\t2e0",
    "10\t6\t0.0000\t0.0000",
]


def _davis(tmp_path: Path, rows: list[str], header: str = HEADER_84, eol: str = "\n") -> Path:
    path = tmp_path / "vectors.txt"
    path.write_bytes((eol.join([header, *rows]) + eol).encode())
    return path


def _assert_known_vectors(vectors: DavisVectors) -> None:
    nan = np.nan
    np.testing.assert_array_equal(vectors.x_px, [2.0, 6.0, 10.0])
    np.testing.assert_array_equal(vectors.y_px, [2.0, 6.0])
    np.testing.assert_array_equal(vectors.u, [[0.5, nan, 1.0], [0.0, -1.5, nan]])
    np.testing.assert_array_equal(vectors.v, [[-0.25, nan, 0.0], [0.75, 2.0, nan]])
    assert vectors.u.dtype == vectors.v.dtype == np.float64
    assert vectors.shape == (2, 3)


def test_davis_known_values(tmp_path: Path) -> None:
    vectors = read_davis(_davis(tmp_path, ROWS))
    _assert_known_vectors(vectors)
    assert vectors.spacing_px == 4
    assert vectors.version == "8.4.0"


def test_davis_crlf_7_2_2_without_trailing_newline(tmp_path: Path) -> None:
    header = HEADER_84.replace("8.4.0", "7.2.2")
    path = tmp_path / "p.TXT"
    path.write_bytes("\r\n".join([header, *ROWS]).encode())
    vectors = read_davis(str(path))
    _assert_known_vectors(vectors)
    assert vectors.version == "7.2.2"


def test_known_versions() -> None:
    assert KNOWN_DAVIS_VERSIONS == ("7.2.2", "8.4.0")


def test_davis_unknown_version_same_layout_is_read_with_a_warning(tmp_path: Path) -> None:
    path = _davis(tmp_path, ROWS, header=HEADER_84.replace("8.4.0", "10.1.2"))
    with pytest.warns(UserWarning, match=r"10\.1\.2 is not among the checked versions"):
        vectors = read_davis(path)
    _assert_known_vectors(vectors)
    assert vectors.version == "10.1.2"


def test_davis_header_only_fields_needed(tmp_path: Path) -> None:
    """The quoted unit fields after the grid size are optional."""
    _assert_known_vectors(read_davis(_davis(tmp_path, ROWS, header="#DaVis 8.4.0 2D-vector 4 2 3")))


# --------------------------------------------------------------------------------------------
# read_davis: every bad input names the file and the line / header
# --------------------------------------------------------------------------------------------


def _raises(path: Path, where: str, problem: str) -> InputError:
    with pytest.raises(InputError) as info:
        read_davis(path)
    message = str(info.value)
    assert message.startswith(f"{path} ({where}): "), message
    assert problem in message, message
    return info.value


@pytest.mark.parametrize(
    "header",
    [
        '#DaVis 8.4.0 3D-vector 4 2 3 "" "pixel"',  # wrong kind of export
        "#DaVis 8.4.0 2D-vector 4 2",  # grid size missing
        "#DaVis 8.4.0 2D-vector 4 two 3",  # not an integer
        "DaVis 8.4.0 2D-vector 4 2 3",  # no '#'
        "2\t2\t0.5\t-0.25",  # header missing: data from line 1
        "",
    ],
)
def test_davis_bad_header(tmp_path: Path, header: str) -> None:
    _raises(_davis(tmp_path, ROWS, header=header), "header, line 1", "expected #DaVis <version>")


def test_davis_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    _raises(path, "header, line 1", "found an empty first line")


def test_davis_zero_spacing(tmp_path: Path) -> None:
    path = _davis(tmp_path, ROWS, header="#DaVis 8.4.0 2D-vector 0 2 3")
    _raises(path, "header, line 1", "found spacing 0, 2 rows, 3 columns")


def test_davis_missing_file(tmp_path: Path) -> None:
    _raises(tmp_path / "nothing.txt", "path", "file not found")


@pytest.mark.parametrize(
    ("row", "text", "fields"),
    [(2, "6\t2\t0", 3), (3, "2\t6\t0\t0.75\t1", 5), (1, "", 1), (4, "6 6 -1.5 2e0", 1)],
)
def test_davis_ragged_row(tmp_path: Path, row: int, text: str, fields: int) -> None:
    rows = [*ROWS]
    rows[row] = text
    _raises(
        _davis(tmp_path, rows),
        f"line {row + 2}",
        f"expected 4 tab-separated fields (x y u v), found {fields}",
    )


def test_davis_truncated_between_lines(tmp_path: Path) -> None:
    path = _davis(tmp_path, ROWS[:4])
    _raises(path, "line 6", "file ends after line 5 (truncated?)")
    _raises(path, "line 6", "2 rows × 3 columns = 6 vectors, found 4 data rows")


def test_davis_truncated_inside_a_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.txt"
    path.write_bytes(("\n".join([HEADER_84, *ROWS]))[:-9].encode())  # "10\t6\t0.0" remains
    _raises(path, "line 7", "found 3; it is the last line, the file looks truncated (6 of 6 rows)")


def test_davis_header_only(tmp_path: Path) -> None:
    _raises(_davis(tmp_path, []), "line 2", "file ends after line 1 (truncated?)")


def test_davis_extra_rows(tmp_path: Path) -> None:
    _raises(_davis(tmp_path, [*ROWS, "2\t10\t0.1\t0.1"]), "line 8", "unexpected extra data")


@pytest.mark.parametrize(
    ("row", "text", "found"),
    [
        (3, "2\t6\tabc\t0.75", "expected a number for u, found 'abc'"),
        (0, "2\t2\t0.5\t1,5", "expected a number for v, found '1,5'"),
        (5, "10\t6\tnan\t0", "expected a number for u, found 'nan'"),
        (1, "6\tx\t0\t0", "expected a number for y, found 'x'"),
        (2, "10\t2\t1.0\t", "expected a number for v, found ''"),
    ],
)
def test_davis_non_numeric(tmp_path: Path, row: int, text: str, found: str) -> None:
    rows = [*ROWS]
    rows[row] = text
    _raises(_davis(tmp_path, rows), f"line {row + 2}", found)


def test_davis_infinite_value(tmp_path: Path) -> None:
    rows = [*ROWS]
    rows[4] = "6\t6\t-1.5\t1e400"
    _raises(_davis(tmp_path, rows), "line 6", "expected a finite number for v, found inf")


def test_davis_x_off_grid(tmp_path: Path) -> None:
    rows = [*ROWS]
    rows[4] = "7\t6\t-1.5\t2"
    _raises(_davis(tmp_path, rows), "line 6", "expected x = 6, y = 6 (regular grid")


def test_davis_y_not_constant_in_a_row(tmp_path: Path) -> None:
    rows = [*ROWS]
    rows[2] = "10\t3\t1.0\t0.0"
    _raises(_davis(tmp_path, rows), "line 4", "expected x = 10, y = 2 (regular grid")


def test_davis_rows_out_of_order(tmp_path: Path) -> None:
    rows = [*ROWS[3:], *ROWS[:3]]  # y = 6 first, then y = 2: y decreasing
    _raises(
        _davis(tmp_path, rows), "line 5", "expected x = 2, y = 10 (regular grid from x0 = 2, y0 = 6"
    )


def test_davis_y_fastest_is_refused(tmp_path: Path) -> None:
    rows = [ROWS[i] for i in (0, 3, 1, 4, 2, 5)]
    _raises(_davis(tmp_path, rows), "line 3", "x fastest")


def test_davis_header_rows_and_columns_swapped(tmp_path: Path) -> None:
    path = _davis(tmp_path, ROWS, header="#DaVis 8.4.0 2D-vector 4 3 2")
    _raises(path, "line 4", "expected x = 2, y = 6 (regular grid")


def test_davis_spacing_disagrees_with_coordinates(tmp_path: Path) -> None:
    path = _davis(tmp_path, ROWS, header="#DaVis 8.4.0 2D-vector 8 2 3")
    _raises(
        path, "line 3", "expected x = 10, y = 2 (regular grid from x0 = 2, y0 = 2 in steps of 8"
    )


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_davis_8_4_matches_defdap(real_data: Path) -> None:
    from defdap import hrdic

    path = real_data / "defdap" / "testDataDIC.txt"
    ours = read_davis(path)
    assert (ours.version, ours.spacing_px, ours.shape) == ("8.4.0", 12, (200, 300))
    np.testing.assert_array_equal(ours.x_px, 6.0 + 12.0 * np.arange(300))
    np.testing.assert_array_equal(ours.y_px, 6.0 + 12.0 * np.arange(200))
    assert not np.isnan(ours.u).any()  # this file has no invalid (0, 0) vectors

    store = hrdic.Map(path).data._store  # raw arrays: no crop, no mask
    coordinate, displacement = store["coordinate"]["data"], store["displacement"]["data"]
    np.testing.assert_array_equal(coordinate[0], np.broadcast_to(ours.x_px, ours.shape))
    np.testing.assert_array_equal(coordinate[1], np.broadcast_to(ours.y_px[:, None], ours.shape))
    np.testing.assert_array_equal(displacement[0], ours.u)
    np.testing.assert_array_equal(displacement[1], ours.v)
    assert ours.u[0, 0] == 54.1145 and ours.v[0, 1] == 0.0  # first rows of the file


@pytest.mark.realdata
@pytest.mark.parametrize(("name", "n_invalid"), [("p3-1", 711), ("p3-2", 3208), ("p3-3", 3919)])
def test_davis_7_2_2_invalid_vectors(real_data: Path, name: str, n_invalid: int) -> None:
    path = real_data / "mechmicroman_hrdic" / f"{name}.TXT"
    ours = read_davis(path)
    assert (ours.version, ours.spacing_px, ours.shape) == ("7.2.2", 8, (238, 319))
    np.testing.assert_array_equal(ours.x_px, 14.0 + 8.0 * np.arange(319))
    np.testing.assert_array_equal(ours.y_px, 4.0 + 8.0 * np.arange(238))

    table = np.loadtxt(path, skiprows=1)  # independent (slow) parse
    zero = (table[:, 2] == 0) & (table[:, 3] == 0)
    assert zero.sum() == n_invalid
    np.testing.assert_array_equal(np.isnan(ours.u).ravel(), zero)
    np.testing.assert_array_equal(np.isnan(ours.v).ravel(), zero)
    np.testing.assert_array_equal(ours.u.ravel()[~zero], table[~zero, 2])
    np.testing.assert_array_equal(ours.v.ravel()[~zero], table[~zero, 3])


@pytest.mark.realdata
def test_davis_7_2_2_matches_defdap_where_valid(real_data: Path) -> None:
    from defdap import hrdic

    path = real_data / "mechmicroman_hrdic" / "p3-1.TXT"
    ours = read_davis(path)
    displacement = hrdic.Map(path).data._store["displacement"]["data"]
    valid = ~np.isnan(ours.u)
    np.testing.assert_array_equal(displacement[0][valid], ours.u[valid])
    np.testing.assert_array_equal(displacement[1][valid], ours.v[valid])
    assert (displacement[:, ~valid] == 0).all()  # defdap keeps invalid vectors as (0, 0)


@pytest.mark.realdata
def test_rgb_grain_boundary_tiff_is_refused_before_decoding(real_data: Path) -> None:
    """gbs.tiff is an LZW-compressed RGB image: refused from its shape, no codec needed."""
    path = real_data / "mechmicroman_hrdic" / "gbs.tiff"
    with pytest.raises(InputError, match=r"gbs\.tiff \(image\): .*\(368, 497, 3\) \(an RGB"):
        read_map(path)
