"""Request bodies under the size limit: a streaming ``multipart/form-data`` reader (the file part
goes straight to the artefact store's temporary area, hashed while written) and a bounded
reader of JSON bodies; either cuts the request off at the limit (413)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from app.problems import ProblemError
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


async def read_bounded_body(request: Request, limit: int) -> bytes:
    """The whole (JSON) body, at most ``limit`` bytes: a larger declared Content-Length is
    refused before reading, and the stream is cut off once it passes the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


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
