"""Bad input over real HTTP against the real service (PostgreSQL, Redis, a worker): every case
answers a 4xx problem+json, stores nothing (row counts of every table, objects and temporary
files unchanged), keeps the API's memory bounded (zip bombs are refused from their headers), and
leaves the keep-alive connection usable: the next request on the same connection is answered
(or the refusal said ``Connection: close``)."""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy
from hypothesis import given, settings
from hypothesis import strategies as st

from app.datasets import register
from app.db import Database
from app.migrate import upgrade
from app.orm import NAME_LENGTH, ApiKey, Base
from app.settings import Settings
from app.uploads import MAX_JSON_DEPTH, json_nesting, nested_too_deep
from models_store import LocalStore
from rab.data import from_arrays
from rab.data.tabular import MAX_CELL_CHARS

from .conftest import (
    DECOMPRESSED_LIMIT,
    JSON_LIMIT,
    UPLOAD_LIMIT,
    Service,
    fresh_pg_database,
    wait_for_job,
)
from .helpers import blobs, is_problem, npz_bytes

MiB = 1 << 20
#: how far the API's peak RSS may rise above its RSS before one bad request; the zip bombs
#: below decompress to 320 MiB (almost 7x this bound)
RSS_BOUND = 48 * MiB
BOMB_BYTES = 320 * MiB
DIM = 5  # features of the blob dataset the certify cases use


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return header.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    """A valid npz of ``X`` (BOMB_BYTES of float64 zeros, DIM columns) and ``y``, under 1 MiB."""
    rows = BOMB_BYTES // (8 * DIM)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((rows, DIM)))
            chunk = bytes(4 * MiB)
            for _ in range(BOMB_BYTES // len(chunk)):
                member.write(chunk)
        zf.writestr("y.npy", _npy(np.arange(10) % 2))
    data = buffer.getvalue()
    assert len(data) < min(MiB, UPLOAD_LIMIT) and BOMB_BYTES > 16 * DECOMPRESSED_LIMIT
    return data


def _corrupt_deflate() -> bytes:
    X = np.arange(5000.0).reshape(1000, DIM)
    raw = bytearray(_zip({"X.npy": _npy(X), "y.npy": _npy(np.arange(1000) % 2)}))
    raw[80:120] = b"\xff" * 40  # inside the member's deflate stream
    return bytes(raw)


def _blob_csv(first: str | None = None) -> bytes:
    """A CSV of the blobs (label last), optionally with ``first`` as its first line."""
    arrays = blobs(seed=3, n_train=30, n_test=10, dim=3)
    X = np.vstack([arrays["X_train"], arrays["X_test"]])
    y = np.concatenate([arrays["y_train"], arrays["y_test"]])
    lines = [",".join(f"{v:.4f}" for v in x) + f",{label}" for x, label in zip(X, y, strict=True)]
    return ("\n".join(([first] if first is not None else []) + lines) + "\n").encode()


# ---------------------------------------------------------------- what must not change


def _counts(service: Service) -> dict[str, int]:
    """Rows of every table, objects in the store and files in its temporary area."""
    engine = sqlalchemy.create_engine(service.database_url)
    try:
        with engine.connect() as conn:
            counts = {
                table: conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in Base.metadata.tables
            }
    finally:
        engine.dispose()
    counts["objects"] = sum(1 for p in (service.store_dir / "objects").rglob("*") if p.is_file())
    counts["tmp"] = sum(1 for _ in (service.store_dir / "tmp").iterdir())
    return counts


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


@dataclass
class Probe:
    """Runs one bad request on a fresh keep-alive connection and checks its aftermath."""

    service: Service
    key: str
    peaks: dict[str, int] = field(default_factory=dict)

    def port(self, response: httpx.Response) -> int:
        """The client-side port of the connection that carried ``response``."""
        stream = response.extensions["network_stream"]
        return int(stream.get_extra_info("client_addr")[1])

    def check(self, name: str, status: int, method: str, url: str, **kwargs: Any) -> None:
        api = self.service.processes["api"].pid
        before = _counts(self.service)
        with self.service.client(self.key) as client:
            warm = client.get("/v1/datasets", params={"limit": 1})
            assert warm.status_code == 200
            Path(f"/proc/{api}/clear_refs").write_text("5")  # restart the peak-RSS count
            rss = _status(api)["VmRSS"]
            response = client.request(method, url, **kwargs)
            growth = _status(api)["VmHWM"] - rss
            self.peaks[name] = growth
            assert response.status_code == status and is_problem(response, status), (
                name, response.status_code, response.text[:500]
            )
            closing = response.headers.get("connection", "").lower() == "close"
            assert closing or self.port(response) == self.port(warm), f"{name}: new connection"
            after = client.get("/v1/datasets", params={"limit": 1})
            assert after.status_code == 200, name
            if not closing:
                assert self.port(after) == self.port(response), f"{name}: connection dropped"
        assert growth < RSS_BOUND, f"{name}: API peak RSS rose by {growth / MiB:.0f} MiB"
        assert _counts(self.service) == before, f"{name} stored something"


@pytest.fixture(scope="module")
def probe(service: Service, key_a: str) -> Probe:
    return Probe(service, key_a)


@pytest.fixture(scope="module")
def model(service: Service, key_a: str) -> dict[str, str]:
    """A K-NN model (on DIM-feature blobs) and its job, which has certificates."""
    with service.client(key_a) as client:
        response = client.post(
            "/v1/datasets", files={"file": ("bad-input.npz", npz_bytes(**blobs(seed=11)))}
        )
        assert response.status_code in (200, 201), response.text
        job = client.post("/v1/jobs", json={
            "dataset_id": response.json()["id"], "method": "knn",
            "params": {"sigma": 1.0, "k": 3, "num_test": 2},
        }).json()
        done = wait_for_job(client, job["id"])
    assert done["state"] == "succeeded", done
    return {"job": job["id"], "model": str(done["links"]["model"])}  # type: ignore[index]


def _file(content: bytes, filename: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    data = {"options": json.dumps(options)} if options is not None else {}
    return {"files": {"file": (filename, content)}, "data": data}


def _raw_file(content: bytes, filename: bytes) -> dict[str, Any]:
    """A multipart body sent as is (a client library would escape an odd file name)."""
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="' + filename
        + b'"\r\n\r\n' + content + b"\r\n--b0undary--\r\n"
    )
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=b0undary"}}


def _json(text: str, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": content_type}}


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"dataset_id": "'
    for _ in range(total // MiB):
        yield b"0" * MiB


# ---------------------------------------------------------------- the cases


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _zip_bomb()


def test_zip_bombs_and_broken_npz_uploads(probe: Probe, bomb: bytes, model: dict[str, str]) -> None:
    certify = f"{model['model']}/certify"
    lie = {"X.npy": _npy_header((10, 10**9)) + bytes(80), "y.npy": _npy(np.zeros(10))}
    huge = {"X.npy": _npy_header((10**18,)) + bytes(8), "y.npy": _npy(np.zeros(10))}
    complex_x = npz_bytes(X=np.ones((40, DIM)) + 1j, y=np.arange(40) % 2)
    cases: list[tuple[str, str, bytes]] = [
        ("zip bomb", "/v1/datasets", bomb),
        ("zip bomb certify", certify, bomb),
        ("empty file", "/v1/datasets", b""),
        ("empty file certify", certify, b""),
        ("not a zip", "/v1/datasets", b"PK\x03\x04 and then nothing"),
        ("corrupt deflate", "/v1/datasets", _corrupt_deflate()),
        ("corrupt deflate certify", certify, _corrupt_deflate()),
        ("header (10, 1e9)", "/v1/datasets", _zip(lie)),
        ("header (1e18,)", "/v1/datasets", _zip(huge)),
        ("header (1e18,) certify", certify, _zip(huge)),
        ("complex features", "/v1/datasets", complex_x),
        ("complex certify inputs", certify, npz_bytes(X=np.ones((2, DIM)) + 1j)),
    ]
    for name, url, content in cases:
        probe.check(name, 422, "POST", url, **_file(content, "bad.npz"))
    bombs = {n: probe.peaks[n] / MiB for n in ("zip bomb", "zip bomb certify")}
    print(f"API peak RSS growth (MiB) for {BOMB_BYTES // MiB} MiB zip bombs: {bombs}")
    assert max(bombs.values()) < RSS_BOUND / MiB


def test_json_bodies_are_bounded_on_every_route(probe: Probe, model: dict[str, str]) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    routes = ("/v1/jobs", "/v1/datasets", f"{model['model']}/certify")
    for url in routes:
        probe.check(f"nested {url}", 422, "POST", url, **_json(deep))
        probe.check(f"text/plain {url}", 415, "POST", url, **_json("{}", "text/plain"))
        too_long = '{"dataset_id": "' + "0" * JSON_LIMIT + '"}'
        probe.check(f"too long {url}", 413, "POST", url, **_json(too_long))
    streamed = {"content": _chunks(4 * JSON_LIMIT), "headers": {"content-type": "application/json"}}
    probe.check("streamed past the limit", 413, "POST", "/v1/jobs", **streamed)
    big = _file(bytes(UPLOAD_LIMIT + 1), "big.npz")  # a form over its own limit
    probe.check("upload too large", 413, "POST", "/v1/datasets", **big)
    form = "multipart/form-data; boundary=b0undary"
    part = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.npz"\r\n\r\n'
    for name, status, head in [("upload streamed past the limit", 413, part),
                               ("malformed form, unread", 400, b"")]:
        chunks = [head] + [bytes(MiB)] * (2 * UPLOAD_LIMIT // MiB)
        probe.check(name, status, "POST", "/v1/datasets",
                    content=iter(chunks), headers={"content-type": form})
    upload = _file(b"{}", "job.json")  # a form where only JSON is taken, of up to 3 MiB
    probe.check("multipart job", 415, "POST", "/v1/jobs", **upload)
    just_deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    probe.check("one level too deep", 422, "POST", "/v1/jobs", **_json(just_deep))


def test_certify_inputs_must_be_real_float32_numbers(probe: Probe, model: dict[str, str]) -> None:
    url = f"{model['model']}/certify"
    zeros = ", ".join(["0"] * (DIM - 1))
    for name, value in [("1e39", "1e39"), ("10**400", "1" + "0" * 400), ("-1e39", "-1e39"),
                        ("NaN", "NaN"), ("Infinity", "Infinity"), ("a string", '"1.5"')]:
        probe.check(name, 422, "POST", url, **_json(f'{{"inputs": [[{value}, {zeros}]]}}'))
    probe.check("ragged", 422, "POST", url, **_json('{"inputs": [[1, 2], [1]]}'))


def test_csv_uploads(probe: Probe, service: Service, key_a: str) -> None:
    cases = {
        "text cell in the first row": _blob_csv("1.0,abc,2.0,0"),
        "empty cell in the first row": _blob_csv("1.0,,2.0,0"),
        "NUL byte in the first row": _blob_csv("1.0,\x00,2.0,0"),
        "cell over 128 KiB": _blob_csv("1.0," + "7" * (129 * 1024) + ",2.0,0"),
        f"cell over {MAX_CELL_CHARS} characters": _blob_csv("1.0," + "7" * 2000 + ",2.0,0"),
        "not UTF-8": _blob_csv("1.0,\xe9,2.0,0").replace(b"\xc3\xa9", b"\xe9"),
    }
    for name, content in cases.items():
        probe.check(name, 422, "POST", "/v1/datasets", **_file(content, "bad.csv"))
    with service.client(key_a) as client:  # a byte-order mark does not cost the first row
        bom = client.post(
            "/v1/datasets", files={"file": ("bom.csv", b"\xef\xbb\xbf" + _blob_csv())}
        )
    assert bom.status_code in (200, 201), bom.text
    assert bom.json()["train_size"] + bom.json()["test_size"] == 40


def test_preprocessing_and_names(probe: Probe) -> None:
    content = npz_bytes(**blobs(seed=12))
    affine = {"kind": "affine", "offset": 0.0, "scale": 1.0}
    cases: dict[str, dict[str, Any]] = {
        "affine scale 0": _file(content, "p.npz", {"preprocessing": {**affine, "scale": 0.0}}),
        "affine NaN offset": _file(
            content, "p.npz", {"preprocessing": {**affine, "offset": math.nan}}
        ),
        "affine infinite scale": _file(
            content, "p.npz", {"preprocessing": {**affine, "scale": [1, math.inf, 1, 1, 1]}}
        ),
        "pixels max_value Infinity": _file(
            content, "p.npz", {"preprocessing": {"kind": "pixels", "max_value": math.inf}}
        ),
        "name of 300 characters": _file(content, "p.npz", {"name": "n" * 300}),
        "name with a NUL byte": _file(content, "p.npz", {"name": "a\x00b"}),
        "file name of 300 characters": _file(content, "f" * 300 + ".npz"),
        "file name with a NUL byte": _raw_file(content, b"a\x00b.npz"),
    }
    for name, kwargs in cases.items():
        probe.check(name, 422, "POST", "/v1/datasets", **kwargs)


def test_ids_cursors_and_indices(probe: Probe, model: dict[str, str]) -> None:
    job, nul = model["job"], "%00"
    for name, method, url, status in [
        ("certificate index beyond int32", "GET", f"/v1/jobs/{job}/certificates/2147483648", 422),
        ("negative certificate index", "GET", f"/v1/jobs/{job}/certificates/-1", 422),
        ("cursor beyond int32", "GET", f"/v1/jobs/{job}/certificates?after=2147483648", 422),
        ("NUL cursor", "GET", f"/v1/jobs/{job}/certificates?after={nul}", 422),
        ("NUL job id", "GET", f"/v1/jobs/a{nul}b", 404),
        ("NUL job id (cancel)", "DELETE", f"/v1/jobs/a{nul}b", 404),
        ("NUL job id (certificates)", "GET", f"/v1/jobs/{nul}/certificates", 404),
        ("NUL job id (summary)", "GET", f"/v1/jobs/{nul}/summary", 404),
        ("NUL dataset id", "GET", f"/v1/datasets/{nul}", 404),
        ("NUL dataset cursor", "GET", f"/v1/datasets?after={nul}", 422),
        ("NUL model id", "GET", f"/v1/models/{nul}", 404),
        ("NUL model id (certify)", "POST", f"/v1/models/{nul}/certify", 404),
    ]:
        kwargs = {"json": {"inputs": [[0.0] * DIM]}} if method == "POST" else {}
        probe.check(name, status, method, url, **kwargs)
    unread = _file(npz_bytes(X=np.zeros((2, DIM))), "x.npz")  # 404 before the form is read
    probe.check("unknown model (npz certify)", 404, "POST", f"/v1/models/{'0' * 32}/certify",
                **unread)
    probe.check("NUL dataset id in a job", 422, "POST", "/v1/jobs", json={
        "dataset_id": "\x00", "method": "knn", "params": {"sigma": 1.0}
    })


def test_unsupported_methods_are_405_with_allow(probe: Probe, model: dict[str, str]) -> None:
    for method in ("TRACE", "PATCH", "BREW"):
        probe.check(method, 405, method, f"/v1/jobs/{model['job']}")
    with probe.service.client(probe.key) as client:
        response = client.request("TRACE", f"/v1/jobs/{model['job']}")
        assert set(response.headers["allow"].split(", ")) == {"GET", "DELETE"}
        response = client.request("PUT", "/v1/datasets")
        assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}


def test_a_dataset_row_the_database_refuses_leaves_no_object(
    postgres_url: str, tmp_path: Path
) -> None:
    """The canonical object is written only after its rows were inserted: a name longer than
    its column (which the API refuses earlier, with 422) fails the insert and stores nothing."""
    arrays = blobs(seed=13)
    dataset = from_arrays(*arrays.values(), name="n" * (NAME_LENGTH + 1))
    store = LocalStore(tmp_path / "store")
    with fresh_pg_database(postgres_url) as url:
        settings = Settings(database_url=url, data_dir=tmp_path)
        upgrade(settings)
        db = Database(settings)
        try:
            with db.session() as session:
                key = ApiKey(name="k", key_hash="0" * 64)
                session.add(key)
                session.flush()
                owner = key.id
            with pytest.raises(sqlalchemy.exc.DataError), db.session() as session:
                register(session, store, owner, dataset, {"kind": "upload"})
        finally:
            db.engine.dispose()
    assert not any(p.is_file() for p in (tmp_path / "store").rglob("*"))


# ---------------------------------------------------------------- the nesting scan itself

_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text("[]{}\"\\ab,:"),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text("[]{}\"\\ab", max_size=4), inner, max_size=3),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=300, derandomize=True, deadline=None)
@given(_JSON)
def test_json_nesting_counts_brackets_outside_strings(value: Any) -> None:
    text = json.dumps(value)
    assert json_nesting(text.encode()) == _depth(value)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(_JSON, st.integers(0, 2 * MAX_JSON_DEPTH))
def test_too_deep_is_the_nesting_against_the_limit(value: Any, wraps: int) -> None:
    """Whichever way it decides (few brackets, or the scan), as the nesting says."""
    text = "[" * wraps + json.dumps(value) + "]" * wraps
    assert nested_too_deep(text.encode()) == (wraps + _depth(value) > MAX_JSON_DEPTH)


def test_json_nesting_across_scan_chunks() -> None:
    pad = json.dumps("\\" * 300_000 + '"[[[' * 1000)  # escapes straddling chunk borders
    text = f'[{pad}, [[{pad}]], {{"a": [{pad}]}}]'
    assert json_nesting(text.encode()) == _depth(json.loads(text)) == 3
    assert json_nesting(b"[" * 1_000_000) == 1_000_000
