"""Request bodies under limits: a streaming ``multipart/form-data`` reader (the file part goes
straight to the artefact store's temporary area, hashed while written), cut off at its limit
(413), and a middleware bounding every other (JSON) body's size, media type and nesting."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.problems import ProblemError, problem_response
from models_store import ObjectStore, PendingObject, TooLargeError

MAX_FIELD_BYTES = 64 * 1024
FILE_FIELD = "file"


@dataclass
class Upload:
    """The text fields of a form and its (optional) file part, not yet committed."""

    fields: dict[str, str] = field(default_factory=dict)
    file: PendingObject | None = None
    filename: str | None = None

    def discard(self) -> None:
        """Delete the uploaded file's temporary copy."""
        if self.file is not None:
            self.file.discard()


def _too_large(limit: int) -> ProblemError:
    return ProblemError(413, "Payload Too Large", f"the upload exceeds the limit of {limit} bytes")


MAX_JSON_DEPTH = 32  # nested arrays/objects of a JSON body; the API's documents need < 10
_SCAN_CHUNK = 1 << 16
_STEP = np.zeros(256, dtype=np.int64)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


def json_nesting(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, brackets inside strings not
    counted, in one vectorised pass (no parsing, no recursion).

    A quote delimits a string unless an odd number of backslashes precedes it. Backslashes
    outside strings make a text invalid JSON, which a parser refuses at that character, before
    any deeper bracket, so the count can only err on texts no parser reads that deep."""
    depth = deepest = 0
    in_string = False
    run = 0  # backslashes ending the previous chunk
    for start in range(0, len(body), _SCAN_CHUNK):
        b = np.frombuffer(body, np.uint8, count=min(_SCAN_CHUNK, len(body) - start), offset=start)
        i = np.arange(len(b))
        last_plain = np.maximum.accumulate(np.where(b == 0x5C, -1 - run, i))
        backslashes = np.empty(len(b), dtype=np.int64)  # right before each byte
        backslashes[0] = run
        backslashes[1:] = i[:-1] - last_plain[:-1]
        quote = (b == 0x22) & (backslashes % 2 == 0)
        flips = np.cumsum(quote)
        inside = (flips - quote + in_string) % 2 == 1  # inside a string before this byte
        levels = depth + np.cumsum(np.where(inside | quote, 0, _STEP[b]))
        deepest = max(deepest, int(levels.max()))
        depth, run = int(levels[-1]), len(b) - 1 - int(last_plain[-1])
        in_string = bool((int(flips[-1]) + in_string) % 2)
    return deepest


def nested_too_deep(body: bytes) -> bool:
    """Whether a JSON text nests arrays and objects deeper than :data:`MAX_JSON_DEPTH`; a
    text with no more opening brackets than that cannot (a count at C speed, 1 us for a
    certify request's body against the scan's 50 us), any other is scanned
    (:func:`json_nesting`)."""
    opening = body.count(b"[") + body.count(b"{")
    return opening > MAX_JSON_DEPTH and json_nesting(body) > MAX_JSON_DEPTH


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def multipart_paths(openapi: dict[str, Any]) -> re.Pattern[str]:
    """The paths whose operations take ``multipart/form-data``, from the OpenAPI document
    (where each such route declares it), as one pattern."""
    templates = [
        path for path, operations in openapi["paths"].items()
        if any(
            "multipart/form-data" in op.get("requestBody", {}).get("content", {})
            for op in operations.values()
        )
    ]
    alternatives = [re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(t)) for t in templates]
    return re.compile("|".join(f"(?:{a})" for a in alternatives) or "(?!)")


class BoundedBodies:
    """ASGI middleware bounding every request body before a route parses it.

    ``multipart/form-data`` bodies pass through to :func:`read_upload` (its own limits) on the
    paths documented to take them, and are refused (415) elsewhere. Every other body is JSON:
    at most ``max_bytes`` (413, refused from Content-Length before reading, else cut off at the
    limit), a JSON media type (or none) (415) and nested at most :data:`MAX_JSON_DEPTH` deep
    (422). A refusal that leaves the body unread closes the connection (``Connection: close``).
    A body that passes is replayed to the route, which can then parse it without risk.
    ``openapi`` gives the API's OpenAPI document (read once, at the first multipart request)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, openapi: Callable[[], dict[str, Any]]
    ) -> None:
        self.app, self.max_bytes, self._openapi = app, max_bytes, openapi
        self._uploads: re.Pattern[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
            if self._uploads is None:
                self._uploads = multipart_paths(self._openapi())
            if self._uploads.fullmatch(scope["path"]):
                await self.app(scope, receive, send)
                return
            refusal: ProblemError | None = _unsupported(content_type)
            body, read = b"", False
        else:
            refusal, body, read = await self._check(headers, content_type, receive)
        if refusal is not None:
            response = problem_response(
                refusal.status, refusal.title, refusal.detail, scope.get("path"),
                headers=None if read else {"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _check(
        self, headers: Headers, content_type: str, receive: Receive
    ) -> tuple[ProblemError | None, bytes, bool]:
        """(the refusal of a JSON body or None, the body, whether it was read to its end)."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return _too_large(self.max_bytes), b"", False
        body, complete = await self._read(receive)
        if not complete:
            return _too_large(self.max_bytes), b"", False
        if body and content_type and not _is_json(content_type):
            return _unsupported(content_type), body, True
        if nested_too_deep(body):
            detail = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
            return ProblemError(422, "Invalid request", detail), body, True
        return None, body, True

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        """The body, or nothing once it passes the limit (then ``False``)."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return bytes(body), True
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return b"", False
            if not message.get("more_body", False):
                return bytes(body), True


def _unsupported(content_type: str) -> ProblemError:
    return ProblemError(
        415, "Unsupported Media Type",
        f"send application/json (or multipart/form-data where documented), "
        f"not {content_type[:100]!r}",
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then the real messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _FormCollector:
    """MultipartParser callbacks collecting fields and streaming the ``file`` part to disk."""

    def __init__(self, store: ObjectStore, max_bytes: int, upload: Upload) -> None:
        self.store, self.max_bytes, self.upload = store, max_bytes, upload
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._buffer = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._buffer, self._name = {}, bytearray(), None

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self._name = name
        if name == FILE_FIELD:
            if self.upload.file is not None:
                raise ProblemError(400, "Bad Request", "more than one 'file' part")
            self.upload.file = self.store.pending(self.max_bytes)
            filename = params.get(b"filename")
            self.upload.filename = filename.decode("utf-8", "replace") if filename else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == FILE_FIELD and self.upload.file is not None:
            try:
                self.upload.file.write(data[start:end])
            except TooLargeError:
                raise _too_large(self.max_bytes) from None
            return
        self._buffer += data[start:end]
        if len(self._buffer) > MAX_FIELD_BYTES:
            raise ProblemError(413, "Payload Too Large", f"form field {self._name!r} is too long")

    def _part_end(self) -> None:
        if self._name and self._name != FILE_FIELD:
            try:
                self.upload.fields[self._name] = self._buffer.decode("utf-8")
            except UnicodeDecodeError:
                detail = f"form field {self._name!r} is not UTF-8"
                raise ProblemError(400, "Bad Request", detail) from None


async def read_upload(request: Request, store: ObjectStore, max_bytes: int) -> Upload:
    """Parse a multipart request body as it arrives; raise a 4xx problem for a bad or big body.

    On error nothing is left behind: the temporary file is deleted.
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ProblemError(415, "Unsupported Media Type", "send multipart/form-data")
    overhead = MAX_FIELD_BYTES * 4
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + overhead:
        raise _too_large(max_bytes)
    upload = Upload()
    collector = _FormCollector(store, max_bytes, upload)
    parser = MultipartParser(params[b"boundary"], collector.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + overhead:
                raise _too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
        if upload.file is not None:
            upload.file.close()
    except ProblemError:
        upload.discard()
        raise
    except Exception as exc:
        upload.discard()
        raise ProblemError(400, "Bad Request", f"malformed multipart body: {exc}") from None
    return upload
