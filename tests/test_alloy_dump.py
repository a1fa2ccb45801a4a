"""LAMMPS dump reader/writer against OVITO and ASE on real dumps, synthetic files and bad input.

References: ``ovito.io.import_file`` (+ ``pipeline.compute(frame)``) and ``ase.io.read(...,
format="lammps-dump-text")``; analytic boxes (the ``Howto_triclinic`` bounding-box conversion);
exact write → read round trips.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from latentmech.alloy.dump import Box, DumpError, Snapshot, iter_dump, read_dump, write_dump

#: file → type counts (awk over the files; the README quotes the annealed one)
REAL_POSITION_DUMPS = {
    "HeaDef_NiCoCr_Annealed_300.dump": [0, 3334, 3351, 3347],
    "HeaDef_NiCoCr_Equilibrated_300.dump": [0, 3344, 3344, 3344],
}
REAL_STRESS_DUMPS = (
    "dump.annealed300_stress.lammpstrj",
    "dump.cocrni_relaxed.lammpstrj",
    "dump.cocrni_strain1pct.lammpstrj",
)
STRESS_COLUMNS = [f"c_s[{k}]" for k in range(1, 7)]


def _ovito_frames(path: Path) -> list:
    """Every frame of a dump as OVITO computes it."""
    from ovito.io import import_file

    pipeline = import_file(str(path))
    return [pipeline.compute(frame) for frame in range(pipeline.source.num_frames)]


def _ovito_sorted(data: object, name: str) -> np.ndarray:
    """A particle property of an OVITO frame, rows sorted by identifier."""
    order = np.argsort(np.asarray(data.particles.identifiers))
    return np.asarray(data.particles[name])[order]


def _assert_same_as_ovito(snapshot: Snapshot, data, columns: list[str] = ()) -> None:
    """Box, ids, types, positions (and named columns) equal OVITO's frame to float precision."""
    cell = np.asarray(data.cell[...])
    np.testing.assert_allclose(snapshot.box.matrix, cell[:, :3].T, rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(snapshot.box.origin, cell[:, 3], rtol=1e-14, atol=1e-12)
    assert snapshot.box.periodic == tuple(bool(p) for p in data.cell.pbc)
    np.testing.assert_array_equal(snapshot.ids, np.sort(np.asarray(data.particles.identifiers)))
    np.testing.assert_array_equal(snapshot.types, _ovito_sorted(data, "Particle Type"))
    np.testing.assert_allclose(
        snapshot.positions, _ovito_sorted(data, "Position"), rtol=1e-14, atol=1e-12
    )
    for name in columns:
        ours = snapshot.stress[:, STRESS_COLUMNS.index(name)] if name in STRESS_COLUMNS else None
        ours = snapshot.columns[name] if ours is None else ours
        # OVITO's fast parser is off by one ulp on some 17-digit numbers; ours is exact
        np.testing.assert_allclose(ours, _ovito_sorted(data, name), rtol=2.3e-16, atol=0)


def _snapshot(rng: np.random.Generator, n: int = 60, tilt: tuple = (0.0, 0.0, 0.0)) -> Snapshot:
    """A random snapshot (shuffled ids, stress, an extra column) in a box with ``tilt``."""
    xy, xz, yz = tilt
    matrix = np.array([[10.0, 0.0, 0.0], [xy, 11.0, 0.0], [xz, yz, 12.0]])
    box = Box(origin=np.array([-1.5, 0.25, 3.0]), matrix=matrix, periodic=(True, True, False))
    return Snapshot(
        timestep=int(rng.integers(0, 10_000)),
        box=box,
        ids=rng.permutation(np.arange(1, n + 1) * 3),
        types=rng.integers(1, 4, n),
        positions=box.cartesian(rng.uniform(0.0, 1.0, (n, 3))),
        stress=rng.normal(0.0, 1e6, (n, 6)),
        columns={"c_peatom": rng.normal(-4.4, 0.2, n)},
    )


def _sorted_by_id(snapshot: Snapshot) -> Snapshot:
    """The same snapshot with rows sorted by id (what the reader returns)."""
    order = np.argsort(snapshot.ids)
    return Snapshot(
        timestep=snapshot.timestep,
        box=snapshot.box,
        ids=snapshot.ids[order],
        types=snapshot.types[order],
        positions=snapshot.positions[order],
        stress=None if snapshot.stress is None else snapshot.stress[order],
        columns={name: value[order] for name, value in snapshot.columns.items()},
    )


def _assert_same(read: Snapshot, expected: Snapshot, rtol: float = 0.0) -> None:
    """Two snapshots hold the same values (box to rounding of lo/hi arithmetic)."""
    assert read.timestep == expected.timestep
    np.testing.assert_allclose(read.box.matrix, expected.box.matrix, rtol=1e-14, atol=1e-13)
    np.testing.assert_allclose(read.box.origin, expected.box.origin, rtol=1e-14, atol=1e-13)
    assert read.box.periodic == expected.box.periodic
    np.testing.assert_array_equal(read.ids, expected.ids)
    np.testing.assert_array_equal(read.types, expected.types)
    np.testing.assert_allclose(read.positions, expected.positions, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(read.stress, expected.stress, rtol=rtol)
    assert read.columns.keys() == expected.columns.keys()
    for name in read.columns:
        np.testing.assert_allclose(read.columns[name], expected.columns[name], rtol=rtol)


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


HEADER = "ITEM: TIMESTEP\n7\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS pp pp pp\n0 4\n0 5\n0 6\n"


def _small_dump(tmp_path: Path, lines: list[str], columns: str = "id type x y z", n=None) -> Path:
    """A one-snapshot dump with the given atom lines (``n`` overrides NUMBER OF ATOMS)."""
    text = HEADER.format(n=len(lines) if n is None else n) + f"ITEM: ATOMS {columns}\n"
    return _write_text(tmp_path / "small.dump", text + "".join(f"{line}\n" for line in lines))


# --------------------------------------------------------------------------------------------
# Real dumps against OVITO and ASE
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize(("name", "counts"), REAL_POSITION_DUMPS.items())
def test_real_position_dumps_match_ovito_and_ase(real_data: Path, name: str, counts: list) -> None:
    import ase.io

    path = real_data / "lammps_dumps" / name
    (snapshot,) = read_dump(path)
    assert snapshot.n_atoms == 10032 and snapshot.stress is None and snapshot.columns == {}
    assert np.bincount(snapshot.types).tolist() == counts
    _assert_same_as_ovito(snapshot, _ovito_frames(path)[0])
    atoms = ase.io.read(path, format="lammps-dump-text", index=-1)  # ASE sorts by id
    np.testing.assert_allclose(snapshot.box.matrix, atoms.cell.array, rtol=1e-14)
    np.testing.assert_allclose(snapshot.positions, atoms.get_positions(), rtol=1e-14, atol=1e-12)
    np.testing.assert_array_equal(snapshot.types, atoms.get_atomic_numbers())  # type → Z here
    with pytest.raises(DumpError, match=r"no per-atom stress columns.*columns are"):
        read_dump(path, require_stress=True)


@pytest.mark.realdata
@pytest.mark.parametrize("name", REAL_STRESS_DUMPS)
def test_real_stress_dumps_match_ovito(real_data: Path, name: str) -> None:
    path = real_data / "lammps_generated_here" / name
    (snapshot,) = read_dump(path, require_stress=True)
    assert snapshot.stress.shape == (snapshot.n_atoms, 6)
    assert list(snapshot.columns) == ["c_peatom"]
    _assert_same_as_ovito(snapshot, _ovito_frames(path)[0], ["c_peatom", *STRESS_COLUMNS])


@pytest.mark.realdata
def test_real_stress_dump_first_line_and_ase(real_data: Path) -> None:
    """The values of the file's first atom line, and ASE's positions and box."""
    import ase.io

    path = real_data / "lammps_generated_here" / "dump.annealed300_stress.lammpstrj"
    (snapshot,) = read_dump(path, stress="s")
    # "1 1 0.494352 3.07474 4.21611 -4.65404 -1.07329e+06 -1.09002e+06 -844410 724833 ..."
    assert snapshot.ids[0] == 1 and snapshot.types[0] == 1
    assert snapshot.positions[0].tolist() == [0.494352, 3.07474, 4.21611]
    assert snapshot.stress[0].tolist() == [
        -1.07329e06,
        -1.09002e06,
        -844410,
        724833,
        -164925,
        82718.5,
    ]
    assert snapshot.columns["c_peatom"][0] == -4.65404
    np.testing.assert_array_equal(
        snapshot.box.origin, [-7.80352915e-02, -7.8181626e-02, -8.06909124e-02]
    )
    atoms = ase.io.read(path, format="lammps-dump-text", index=":")[0]
    np.testing.assert_allclose(snapshot.positions, atoms.get_positions(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(snapshot.box.matrix, atoms.cell.array, rtol=1e-15)


# --------------------------------------------------------------------------------------------
# Synthetic files: triclinic, scaled, shuffled columns, gzip, several snapshots, round trips
# --------------------------------------------------------------------------------------------


def test_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = [_snapshot(rng), _snapshot(rng, n=30, tilt=(1.5, -2.0, 0.75))]
    path = write_dump(tmp_path / "round.lammpstrj", frames)
    read = read_dump(path)
    assert len(read) == 2
    for got, expected in zip(read, frames, strict=True):
        _assert_same(got, _sorted_by_id(expected))
        np.testing.assert_array_equal(got.positions, _sorted_by_id(expected).positions)
        np.testing.assert_array_equal(got.stress, _sorted_by_id(expected).stress)
    assert [s.timestep for s in iter_dump(path)] == [f.timestep for f in frames]


def test_triclinic_box_matches_ovito_and_howto_triclinic(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = _snapshot(rng, tilt=(2.5, -1.25, 0.5))
    path = write_dump(tmp_path / "tri.lammpstrj", frame)
    text = path.read_text().splitlines()
    assert text[4] == "ITEM: BOX BOUNDS xy xz yz pp pp ff"
    # bounding box: xlo + min(0, xy, xz, xy+xz) = -1.5 - 1.25, xhi + max(...) = 8.5 + 2.5
    assert [float(v) for v in text[5].split()] == [-2.75, 11.0, 2.5]
    assert [float(v) for v in text[6].split()] == [0.25, 11.75, -1.25]
    (snapshot,) = read_dump(path)
    np.testing.assert_allclose(snapshot.box.matrix, frame.box.matrix, rtol=0, atol=1e-14)
    np.testing.assert_allclose(snapshot.box.origin, frame.box.origin, rtol=0, atol=1e-14)
    assert snapshot.box.volume == pytest.approx(10.0 * 11.0 * 12.0, rel=1e-14)
    _assert_same_as_ovito(snapshot, _ovito_frames(path)[0], ["c_peatom", *STRESS_COLUMNS])


def test_scaled_coordinates_become_cartesian(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = _snapshot(rng, tilt=(1.0, 0.5, -2.0))
    path = write_dump(tmp_path / "scaled.lammpstrj", frame, coordinates="xs")
    assert "ITEM: ATOMS id type xs ys zs" in path.read_text()
    (snapshot,) = read_dump(path)
    np.testing.assert_allclose(snapshot.positions, _sorted_by_id(frame).positions, atol=1e-12)
    _assert_same_as_ovito(snapshot, _ovito_frames(path)[0])
    fractional = snapshot.box.fractional(snapshot.positions)
    np.testing.assert_allclose(snapshot.box.cartesian(fractional), snapshot.positions, atol=1e-12)


def test_shuffled_columns_and_rows_give_the_same_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    frame = _snapshot(rng)
    path = write_dump(tmp_path / "plain.lammpstrj", frame)
    lines = path.read_text().splitlines()
    names = lines[8].split()[2:]
    table = np.array([line.split() for line in lines[9:]])
    permutation = rng.permutation(len(names))
    rows = rng.permutation(len(table))
    shuffled = [" ".join(row) for row in table[rows][:, permutation]]
    text = "\n".join([*lines[:8], "ITEM: ATOMS " + " ".join(np.array(names)[permutation])])
    other = _write_text(tmp_path / "shuffled.lammpstrj", text + "\n" + "\n".join(shuffled) + "\n")
    _assert_same(read_dump(other)[0], read_dump(path)[0])


def test_gzip_detected_by_magic_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = [_snapshot(rng), _snapshot(rng)]
    compressed = write_dump(tmp_path / "frames.lammpstrj.gz", frames)
    assert compressed.read_bytes()[:2] == b"\x1f\x8b"
    renamed = tmp_path / "frames.dump"  # no .gz suffix: detected by content
    renamed.write_bytes(compressed.read_bytes())
    for got, expected in zip(read_dump(renamed), frames, strict=True):
        _assert_same(got, _sorted_by_id(expected))
    truncated = tmp_path / "cut.dump"
    truncated.write_bytes(compressed.read_bytes()[:-30])
    with pytest.raises(DumpError, match=r"cut\.dump \(gzip\): corrupt or truncated gzip"):
        read_dump(truncated)


def test_several_snapshots_match_ovito_per_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    frames = [_snapshot(rng, tilt=(0.5 * k, 0.0, -0.25 * k)) for k in range(3)]
    path = write_dump(tmp_path / "traj.lammpstrj", frames, float_format="%.10g")
    ovito = _ovito_frames(path)
    snapshots = read_dump(path)
    assert len(ovito) == len(snapshots) == 3
    for snapshot, data in zip(snapshots, ovito, strict=True):
        _assert_same_as_ovito(snapshot, data, ["c_peatom", *STRESS_COLUMNS])
    assert read_dump(path, snapshot=1)[0].timestep == frames[1].timestep
    assert read_dump(path, snapshot=-1)[0].timestep == frames[2].timestep
    with pytest.raises(DumpError, match=r"snapshot 3\): no such snapshot: the file holds 3"):
        read_dump(path, snapshot=3)


def test_long_numbers_are_correctly_rounded(tmp_path: Path) -> None:
    """17+ significant digits and large exponents take the exact path (Python's float())."""
    values = ["0.10000000000000001", "4.7739265852400003e+01", "123456789012345678901", "1e-300",
              "-2.5E+40", "0.000000000000000000000000123456", "nan", "-inf", "+7"]  # fmt: skip
    lines = [f"{k + 1} 1 {v} 0 0" for k, v in enumerate(values)]
    (snapshot,) = read_dump(_small_dump(tmp_path, lines))
    expected = np.array([float(v) for v in values])
    np.testing.assert_array_equal(snapshot.positions[:, 0], expected)


def test_image_flags_unwrap_only_when_asked(tmp_path: Path) -> None:
    lines = ["1 1 1.0 2.0 3.0 1 0 -1", "2 2 0.5 0.5 0.5 0 2 0"]
    path = _small_dump(tmp_path, lines, "id type x y z ix iy iz")
    (wrapped,) = read_dump(path)
    np.testing.assert_array_equal(wrapped.positions, [[1, 2, 3], [0.5, 0.5, 0.5]])
    assert wrapped.columns["iy"].dtype == np.int64 and wrapped.columns["iy"].tolist() == [0, 2]
    (unwrapped,) = read_dump(path, unwrap=True)
    np.testing.assert_array_equal(unwrapped.positions, [[5, 2, -3], [0.5, 10.5, 0.5]])


def test_stress_column_choice(tmp_path: Path) -> None:
    named = _small_dump(
        tmp_path, ["1 1 0 0 0 1 2 3 4 5 6"], "id type x y z sxx syy szz sxy sxz syz"
    )
    assert read_dump(named)[0].stress.tolist() == [[1, 2, 3, 4, 5, 6]]
    two = [f"c_a[{k}]" for k in range(1, 7)] + [f"c_b[{k}]" for k in range(1, 7)]
    path = _small_dump(
        tmp_path, ["2 1 0 0 0 " + " ".join(map(str, range(12)))], "id type x y z " + " ".join(two)
    )
    with pytest.raises(DumpError, match=r"several stress candidates \['c_a\[1\]', 'c_b\[1\]'\]"):
        read_dump(path)
    (b,) = read_dump(path, stress="b")
    assert b.stress.tolist() == [[6, 7, 8, 9, 10, 11]] and list(b.columns) == two[:6]
    assert read_dump(path, stress=two[6:][::-1])[0].stress.tolist() == [[11, 10, 9, 8, 7, 6]]
    assert read_dump(path, stress=None)[0].stress is None
    with pytest.raises(DumpError, match=r"stress columns \['c_s\[1\]'.*not found"):
        read_dump(path, stress="c_s")


# --------------------------------------------------------------------------------------------
# Bad input: each a DumpError naming file, snapshot, line (column) and what was expected
# --------------------------------------------------------------------------------------------


def test_fewer_atom_lines_than_header_at_end_of_file(tmp_path: Path) -> None:
    path = _small_dump(tmp_path, ["1 1 0 0 0", "2 1 0 0 0"], n=3)
    with pytest.raises(
        DumpError, match=r"small\.dump \(snapshot 0, line 12\): file ends after 2 of 3"
    ):
        read_dump(path)


def test_header_cut_off(tmp_path: Path) -> None:
    path = _write_text(tmp_path / "cut.dump", "ITEM: TIMESTEP\n5\nITEM: NUMBER OF ATOMS\n")
    with pytest.raises(
        DumpError, match=r"cut\.dump \(snapshot 0, line 4\): file ends; expected the number"
    ):
        read_dump(path)
    box = _write_text(tmp_path / "box.dump", HEADER.format(n=1)[:-4])
    with pytest.raises(DumpError, match=r"line 8\): file ends; expected the z bounds"):
        read_dump(box)


def test_atom_count_disagrees_with_header(tmp_path: Path) -> None:
    more = _small_dump(tmp_path, ["1 1 0 0 0", "2 1 0 0 0", "3 1 0 0 0"], n=2)
    with pytest.raises(
        DumpError, match=r"line 12\): expected an 'ITEM:' line, found '3 1 0 0 0' \(more"
    ):
        read_dump(more)
    two = (
        HEADER.format(n=3)
        + "ITEM: ATOMS id type x y z\n1 1 0 0 0\n2 1 0 0 0\n"
        + HEADER.format(n=1)
    )
    fewer = _write_text(tmp_path / "fewer.dump", two + "ITEM: ATOMS id type x y z\n1 1 0 0 0\n")
    with pytest.raises(
        DumpError,
        match=r"line 12\): found 'ITEM: TIMESTEP' after 2 atom lines, but NUMBER OF ATOMS says 3",
    ):
        read_dump(fewer)
    with pytest.raises(DumpError, match=r"atom line has 4 values, expected 5"):
        read_dump(_small_dump(tmp_path, ["1 1 0 0 0", "2 1 0 0"]))
    with pytest.raises(DumpError, match=r"line 10\): atom line has more than 5 values"):
        read_dump(_small_dump(tmp_path, ["1 1 0 0 0 9"]))


def test_missing_required_columns(tmp_path: Path) -> None:
    with pytest.raises(DumpError, match=r"line 9\): missing required column\(s\) \['id'\]"):
        read_dump(_small_dump(tmp_path, ["1 0 0 0"], "type x y z"))
    with pytest.raises(DumpError, match=r"missing position columns: expected x y z or xu yu zu"):
        read_dump(_small_dump(tmp_path, ["1 1 0 0 0"], "id type x y vz"))
    with pytest.raises(DumpError, match=r"unwrap=True needs image flags"):
        read_dump(_small_dump(tmp_path, ["1 1 0 0 0"]), unwrap=True)


def test_non_numeric_and_non_integer_values(tmp_path: Path) -> None:
    with pytest.raises(
        DumpError, match=r"snapshot 0, line 11, column 4 'y'\): expected a number, found '1.2.3'"
    ):
        read_dump(_small_dump(tmp_path, ["1 1 0 0 0", "2 1 0 1.2.3 0"]))
    with pytest.raises(
        DumpError, match=r"line 10, column 2 'type'\): expected a number, found 'Ni'"
    ):
        read_dump(_small_dump(tmp_path, ["1 Ni 0 0 0"]))
    with pytest.raises(
        DumpError, match=r"line 11, column 2 'type'\): expected an integer, found 1.5"
    ):
        read_dump(_small_dump(tmp_path, ["1 1 0 0 0", "2 1.5 0 0 0"]))
    with pytest.raises(
        DumpError, match=r"line 11, column 2 'type'\): expected a LAMMPS atom type ≥ 1"
    ):
        read_dump(_small_dump(tmp_path, ["2 1 0 0 0", "1 0 0 0 0"]))
    with pytest.raises(DumpError, match=r"lines 10 and 12\): atom id 7 appears twice"):
        read_dump(_small_dump(tmp_path, ["7 1 0 0 0", "3 1 0 0 0", "7 1 0 0 0"]))
    with pytest.raises(
        DumpError, match=r"line 2\): expected the timestep \(an integer\), found 'x'"
    ):
        read_dump(_write_text(tmp_path / "t.dump", "ITEM: TIMESTEP\nx\n"))


def test_unknown_item_and_bad_box(tmp_path: Path) -> None:
    text = HEADER.format(n=1) + "ITEM: VELOCITIES\n"
    with pytest.raises(DumpError, match=r"line 9\): unknown item 'ITEM: VELOCITIES'"):
        read_dump(_write_text(tmp_path / "u.dump", text))
    bad_box = HEADER.format(n=1).replace("pp pp pp", "pp qq pp")
    with pytest.raises(DumpError, match=r"line 5\): expected 'ITEM: BOX BOUNDS"):
        read_dump(_write_text(tmp_path / "b.dump", bad_box))
    with pytest.raises(DumpError, match=r"line 1\): empty file"):
        read_dump(_write_text(tmp_path / "e.dump", ""))
    units = (
        "ITEM: UNITS\nmetal\nITEM: TIME\n0.5\n"
        + HEADER.format(n=1)
        + "ITEM: ATOMS id type x y z\n1 1 0 0 0\n"
    )
    frame = read_dump(_write_text(tmp_path / "units.dump", units))[0]
    assert (frame.timestep, frame.units) == (7, "metal")
    assert (
        read_dump(_write_text(tmp_path / "none.dump", units[len("ITEM: UNITS\nmetal\n") :]))[
            0
        ].units
        is None
    )
    with pytest.raises(DumpError, match=r"line 2\): file ends; expected the unit style"):
        read_dump(_write_text(tmp_path / "cut.dump", "ITEM: UNITS\n"))
    write_dump(tmp_path / "again.dump", [frame])
    assert read_dump(tmp_path / "again.dump")[0].units == "metal"


def test_writer_leaves_no_partial_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    frame = _snapshot(rng)
    target = tmp_path / "out.lammpstrj"
    with pytest.raises(ValueError, match="not in the snapshot"):
        write_dump(target, [frame, frame], columns=["c_missing"])
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_general_triclinic_abc_origin_round_trip(tmp_path: Path) -> None:
    matrix = np.array([[5.0, 1.0, 0.0], [0.0, 6.0, 0.5], [0.25, 0.0, 7.0]])
    box = Box(origin=np.array([1.0, 2.0, 3.0]), matrix=matrix, periodic=(True, True, True))
    frame = Snapshot(3, box, np.array([1, 2]), np.array([1, 2]), np.eye(3)[:2] * 2.0, None, {})
    path = write_dump(tmp_path / "abc.dump", frame)
    assert "ITEM: BOX BOUNDS abc origin pp pp pp" in path.read_text()
    (snapshot,) = read_dump(path)
    np.testing.assert_array_equal(snapshot.box.matrix, matrix)
    np.testing.assert_array_equal(snapshot.box.origin, box.origin)
    assert gzip is not None and snapshot.box.volume == pytest.approx(abs(np.linalg.det(matrix)))


# --------------------------------------------------------------------------------------------
# Chunked scans on several threads: same snapshots, same errors as one pass
# --------------------------------------------------------------------------------------------


@pytest.fixture
def chunked(monkeypatch: pytest.MonkeyPatch) -> list:
    """Scan even tiny blocks in chunks; record the chunks scanned (byte offset, row, rows)."""
    from latentmech.alloy import dump

    monkeypatch.setattr(dump, "PARALLEL_MIN_VALUES", 0)
    scanned = []
    scan_rows = dump._scan_rows

    def spy(buffer, header, target, chunk):
        scanned.append(chunk)
        return scan_rows(buffer, header, target, chunk)

    monkeypatch.setattr(dump, "_scan_rows", spy)
    return scanned


def _assert_identical(got: list[Snapshot], expected: list[Snapshot]) -> None:
    """Bit-for-bit the same snapshots."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        for name in ("ids", "types", "positions", "stress"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), strict=True)
        assert a.columns.keys() == b.columns.keys()
        for name in a.columns:
            np.testing.assert_array_equal(a.columns[name], b.columns[name], strict=True)


@pytest.mark.parametrize("float_format", ["%g", "%r"])
def test_threads_give_the_same_snapshots(tmp_path: Path, chunked: list, float_format) -> None:
    rng = np.random.default_rng(8)
    frames = [_snapshot(rng, n=400), _snapshot(rng, n=300, tilt=(1.0, 0.5, -0.5))]
    frames.append(_sorted_by_id(_snapshot(rng, n=200)))
    frames[2] = Snapshot(**{**frames[2].__dict__, "ids": np.arange(1, 201)})  # ids 1..n: by id
    path = write_dump(tmp_path / "threads.lammpstrj", frames, float_format=float_format)
    serial = read_dump(path, threads=1)
    assert {chunk[1:] for chunk in chunked} == {(0, f.n_atoms) for f in frames}  # whole blocks
    chunked.clear()
    for threads in (2, 3):
        _assert_identical(read_dump(path, threads=threads), serial)
        assert len(chunked) > 3 * threads  # every snapshot was cut into chunks
        chunked.clear()
    for got, expected in zip(serial, frames, strict=True):
        _assert_same(got, _sorted_by_id(expected), rtol=1e-5 if float_format == "%g" else 0.0)


def test_threads_report_the_same_errors(tmp_path: Path, chunked: list) -> None:
    lines = [f"{k + 1} 1 {k}.5 0 0" for k in range(200)]

    def expect(changed: list[str], message: str, n: int | None = None) -> None:
        path = _small_dump(tmp_path, changed, n=n)
        for threads in (1, 2):
            chunked.clear()
            with pytest.raises(DumpError, match=message):
                read_dump(path, threads=threads)
            assert any(row > 0 for _, row, _ in chunked) == (threads > 1)  # chunks were tried

    expect([*lines[:150], "151 1 1.2.3 0 0", *lines[151:]], r"line 160, column 3 'x'\): expected a")
    expect([*lines[:190], "9 1 0 0 0", *lines[191:]], r"lines 18 and 200\): atom id 9 appears")
    expect([*lines[:170], "171 1 0 0", *lines[171:]], r"line 180\): atom line has 4 values")
    expect(lines, r"line 210\): file ends after 200 of 201", n=201)
    expect(lines, r"line 209\): expected an 'ITEM:' line, found '200 1 199.5 0 0'", n=199)


def test_ids_beyond_n_and_no_final_newline(tmp_path: Path, chunked: list) -> None:
    """Ids that are not 1..n are sorted in file order; a last line without newline is read."""
    rng = np.random.default_rng(9)
    ids = rng.permutation(np.arange(1, 301) * 2)
    lines = [f"{i} {1 + i % 3} {i / 7} 0.5 -1" for i in ids]
    path = _small_dump(tmp_path, lines)
    path.write_bytes(path.read_bytes()[:-1])
    assert not path.read_bytes().endswith(b"\n")
    for threads in (1, 2):
        (snapshot,) = read_dump(path, threads=threads)
        np.testing.assert_array_equal(snapshot.ids, np.sort(ids))
        np.testing.assert_array_equal(snapshot.positions[:, 0], np.sort(ids) / 7)
        np.testing.assert_array_equal(snapshot.types, 1 + np.sort(ids) % 3)
    cut = _small_dump(tmp_path, ["1 1 0 0 0", "2 1 0 0"])
    cut.write_bytes(cut.read_bytes()[:-1])
    with pytest.raises(DumpError, match=r"line 11\): file ends after 1 of 2"):
        read_dump(cut)
    with pytest.raises(ValueError, match="threads must be"):
        read_dump(cut, threads=0)
