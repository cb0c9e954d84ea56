"""Untrusted files in rab.data: npz headers checked before anything is allocated (zip bombs,
lying shapes, complex/object/string dtypes, corrupt or empty archives) and the CSV rules (byte
order mark, header detection that never drops a data row, cell size limit)."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rab.data import load_csv, load_npz, pixels
from rab.data.npz import MAX_MEMBERS, NpzArchive
from rab.data.tabular import MAX_CELL_CHARS, read_csv_table

MiB = 1 << 20


def npy_member(
    path: Path, shape: tuple[int, ...], dtype: str = "<f8", data: bytes | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """An npz whose member X.npy has a header declaring ``shape`` and ``dtype``, followed by
    ``data`` (default: zeros of the declared size): a zip bomb when that size is large."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    if data is None:
        data = bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("X.npy", header.getvalue() + data)
    return path


def test_a_zip_bomb_is_refused_from_its_header_without_decompressing(tmp_path: Path) -> None:
    bomb = npy_member(tmp_path / "bomb.npz", (4 * MiB,))  # 32 MiB of zeros, 33 kB on disk
    assert bomb.stat().st_size < 64 * 1024
    tracemalloc.start()
    try:
        with NpzArchive(bomb, max_bytes=MiB) as archive, pytest.raises(
            ValueError, match=r"X \(4194304,\) float64.*33554432 bytes decompressed.*1048576"
        ):
            archive.read("X")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MiB // 4  # neither the array nor the decompressed stream was allocated
    with NpzArchive(bomb, max_bytes=32 * MiB) as archive:  # within the limit it reads
        (X,) = archive.read("X")
    assert X.shape == (4 * MiB,) and not X.any()


def test_the_limit_counts_every_array_of_one_read(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    X = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.arange(6) % 2
    np.savez_compressed(path, X_train=X, y_train=y, X_test=X, y_test=y)
    need = 2 * X.nbytes + 2 * 6 * 8
    assert load_npz(path, max_bytes=need).X_train.shape == (6, 4)
    with pytest.raises(ValueError, match=f"need {need} bytes decompressed"):
        load_npz(path, max_bytes=need - 1)


@pytest.mark.parametrize(
    ("shape", "data"),
    [((10, 10**9), bytes(80)), ((10**18,), bytes(8)), ((3,), bytes(16))],
    ids=["rows-x-1e9", "1e18", "truncated"],
)
def test_a_shape_the_member_does_not_hold_is_refused_before_allocation(
    tmp_path: Path, shape: tuple[int, ...], data: bytes
) -> None:
    path = npy_member(tmp_path / "lie.npz", shape, data=data)
    with NpzArchive(path) as archive, pytest.raises(ValueError, match="declares shape"):
        archive.read("X")  # no limit at all: the member's own size bounds the allocation


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([1 + 2j, 3j]), "complex128"),
        (np.array(["a", "b"]), "<U1"),
        (np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), "only booleans, integers and real"),
        (np.array([{"a": 1}], dtype=object), "pickled Python objects"),
    ],
    ids=["complex", "string", "record", "object"],
)
def test_non_real_dtypes_are_refused(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.savez(tmp_path / "a.npz", X=array)
    with NpzArchive(tmp_path / "a.npz") as archive, pytest.raises(ValueError, match=message):
        archive.read("X")


def test_corrupt_empty_and_foreign_files_are_value_errors(tmp_path: Path) -> None:
    good = npy_member(tmp_path / "good.npz", (1000,))
    raw = bytearray(good.read_bytes())
    raw[60:80] = b"\xff" * 20  # inside the deflate stream of X.npy
    cases = {
        "empty.npz": b"",
        "junk.npz": b"not a zip at all",
        "deflate.npz": bytes(raw),
        "cut.npz": bytes(raw[: len(raw) // 2]),
    }
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    cases["plain.npy"] = buffer.getvalue()
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a readable"), NpzArchive(tmp_path / name) as a:
            a.read(*a.files)
    with zipfile.ZipFile(tmp_path / "text.npz", "w") as archive:
        archive.writestr("X.npy", b"hello, not an array")
    with NpzArchive(tmp_path / "text.npz") as archive, pytest.raises(
        ValueError, match=r"'X' is not a readable \.npy array"
    ):
        archive.read("X")


def test_an_archive_of_too_many_members_is_refused_before_its_directory_is_read(
    tmp_path: Path,
) -> None:
    members = {f"a{i}.npy": b"" for i in range(MAX_MEMBERS + 1)}
    path = tmp_path / "many.npz"
    path.write_bytes(_zip_of(members))
    with pytest.raises(ValueError, match=f"declares {MAX_MEMBERS + 1} members"):
        NpzArchive(path)
    path.write_bytes(_zip_of(members, comment=b"a comment"))  # the record found before it
    with pytest.raises(ValueError, match=f"declares {MAX_MEMBERS + 1} members"):
        NpzArchive(path)
    path.write_bytes(_zip_of(members, comment=b"PK\x05\x06 a fake record"))  # zipfile's view too
    with pytest.raises(ValueError, match=r"not a readable \.npz archive"):
        NpzArchive(path)
    del members["a0.npy"]
    path.write_bytes(_zip_of(members))
    assert len(NpzArchive(path).files) == MAX_MEMBERS


def _zip_of(members: dict[str, bytes], comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.comment = comment
    return buffer.getvalue()


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=">f4").reshape(3, 4)),
        np.array([True, False]),
        np.zeros((0, 5), dtype=np.int16),
    ],
    ids=["uint8", "fortran-big-endian", "bool", "empty"],
)
def test_numeric_arrays_read_as_numpy_writes_them(tmp_path: Path, array: np.ndarray) -> None:
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "a.npz", X=array)
        with NpzArchive(tmp_path / "a.npz", max_bytes=array.nbytes) as archive:
            (X,) = archive.read("X")
        assert X.dtype == array.dtype and np.array_equal(X, array)


def _csv(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_csv_byte_order_mark_keeps_the_first_row(tmp_path: Path) -> None:
    table, names = read_csv_table(_csv(tmp_path, "\ufeff1,2,0\n3,4,1\n"))
    assert names is None and table.tolist() == [[1, 2, 0], [3, 4, 1]]
    table, names = read_csv_table(_csv(tmp_path, "\ufeffa,b,label\n3,4,1\n"))
    assert names == ["a", "b", "label"] and table.shape == (1, 3)


@pytest.mark.parametrize(
    ("first", "message"),
    [
        ("1,abc,0", r"non-numeric value 'abc' at line 1, column 1; if line 1 is a header"),
        ("1,,0", r"an empty value at line 1, column 1"),
        ("1,\x00,0", r"non-numeric value '\\x00' at line 1, column 1"),
        ("a,,label", r"non-numeric value 'a' at line 1, column 0"),
    ],
    ids=["text", "empty", "nul", "header-with-empty-name"],
)
def test_a_first_row_that_is_not_all_names_is_data_never_dropped(
    tmp_path: Path, first: str, message: str
) -> None:
    path = _csv(tmp_path, f"{first}\n3,4,1\n5,6,0\n")
    with pytest.raises(ValueError, match=message):
        read_csv_table(path)
    if first == "1,abc,0":  # said explicitly, the row is a header
        assert read_csv_table(path, header=True)[0].shape == (2, 3)


def test_csv_cells_are_bounded_and_text_must_be_utf8(tmp_path: Path) -> None:
    long_cell = "1" * (MAX_CELL_CHARS + 1)
    with pytest.raises(ValueError, match=f"line 2 has a cell longer than {MAX_CELL_CHARS}"):
        read_csv_table(_csv(tmp_path, f"1,2,0\n{long_cell},2,1\n"))
    huge = "9" * (200 * 1024)  # past the csv module's own field limit
    with pytest.raises(ValueError, match="line 1"):
        read_csv_table(_csv(tmp_path, f'"{huge}",2,1\n'))
    (tmp_path / "latin.csv").write_bytes(b"1,2,0\n\xe9,2,1\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_csv(tmp_path / "latin.csv")


def test_csv_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"non-numeric value 'x' at line 4, column 1"):
        read_csv_table(_csv(tmp_path, "1,2,0\n\n3,4,1\n5,x,0\n"))


def test_pixel_scale_must_be_finite() -> None:
    with pytest.raises(ValueError, match="positive and finite"):
        pixels(float("inf"))
    with pytest.raises(ValueError, match="positive and finite"):
        pixels(float("nan"))
