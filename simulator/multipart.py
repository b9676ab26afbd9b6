"""A small streaming ``multipart/form-data`` parser (stdlib only).

``cgi`` is gone from Python 3.13 and ``email`` parsers want the whole message in memory, which
a 200 MB upload must not be. This parser reads the body in 64 KiB pieces and writes file parts
straight to a temporary file in ``spool_dir``; plain fields are kept as (small) strings.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Protocol

CHUNK = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 16


class MultipartError(ValueError):
    """The body is not a well-formed multipart/form-data message (answered with a 400)."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass
class UploadedFile:
    field: str
    filename: str
    content_type: str | None
    path: Path
    size: int


@dataclass
class FormData:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def discard(self, keep: Path | None = None) -> None:
        """Delete spooled files the caller did not adopt."""
        for upload in self.files.values():
            if upload.path != keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(upload.path)


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a multipart Content-Type header."""
    message = Message()
    message["content-type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError("Content-Type must be multipart/form-data")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 200:
        raise MultipartError("Content-Type has no valid boundary")
    return boundary.encode("latin-1")


def _disposition(headers: dict[str, str]) -> tuple[str, str | None]:
    message = Message()
    message["content-disposition"] = headers.get("content-disposition", "")
    name = message.get_param("name", header="content-disposition")
    filename = message.get_filename()
    if not isinstance(name, str) or not name:
        raise MultipartError("a part has no name")
    return name, filename


class _Buffer:
    """A growing window over the stream."""

    def __init__(self, stream: Readable) -> None:
        self.stream = stream
        self.data = bytearray()
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        piece = self.stream.read(CHUNK)
        if not piece:
            self.eof = True
            return False
        self.data += piece
        return True

    def find(self, needle: bytes, limit: int | None = None) -> int:
        """Position of ``needle``, reading more as needed; -1 at end of stream or past ``limit``."""
        while True:
            at = self.data.find(needle)
            if at >= 0:
                return at
            if limit is not None and len(self.data) > limit:
                return -1
            if not self.fill():
                return -1


def parse_multipart(stream: Readable, content_type: str, spool_dir: Path) -> FormData:
    """Parse the whole body from ``stream`` (which must end where the body ends)."""
    boundary = boundary_of(content_type)
    buffer = _Buffer(stream)
    form = FormData()
    try:
        _parse(buffer, b"--" + boundary, form, spool_dir)
    except BaseException:
        form.discard()
        raise
    return form


def _parse(buffer: _Buffer, dash_boundary: bytes, form: FormData, spool_dir: Path) -> None:
    at = buffer.find(dash_boundary, limit=MAX_HEADER_BYTES)
    if at < 0:
        raise MultipartError("the body does not start with the boundary")
    del buffer.data[: at + len(dash_boundary)]
    delimiter = b"\r\n" + dash_boundary
    for _ in range(MAX_PARTS + 1):
        while len(buffer.data) < 2 and buffer.fill():
            pass
        if buffer.data[:2] == b"--":
            return  # the closing delimiter
        end = buffer.find(b"\r\n", limit=1024)
        if end < 0 or buffer.data[:end].strip(b" \t"):
            raise MultipartError("malformed boundary line")
        del buffer.data[: end + 2]
        end = buffer.find(b"\r\n\r\n", limit=MAX_HEADER_BYTES)
        if end < 0:
            raise MultipartError("part headers are missing or too long")
        headers = _headers(bytes(buffer.data[:end]))
        del buffer.data[: end + 4]
        name, filename = _disposition(headers)
        if name in form.fields or name in form.files:
            raise MultipartError(f"the part {name!r} is given twice")
        if filename is not None or name == "file":
            form.files[name] = _spool(buffer, delimiter, name, filename, headers, spool_dir)
        else:
            form.fields[name] = _field(buffer, delimiter)
    raise MultipartError("too many parts")


def _headers(raw: bytes) -> dict[str, str]:
    headers = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError("malformed part header")
        headers[name.strip().lower()] = value.strip()
    return headers


def _copy_until(buffer: _Buffer, delimiter: bytes, write: Callable[[bytes], object]) -> int:
    """Pass the part's bytes to ``write`` up to ``delimiter``; return how many there were."""
    size = 0
    keep = len(delimiter) - 1
    while True:
        at = buffer.data.find(delimiter)
        if at >= 0:
            write(bytes(buffer.data[:at]))
            size += at
            del buffer.data[: at + len(delimiter)]
            return size
        safe = len(buffer.data) - keep
        if safe > 0:
            write(bytes(buffer.data[:safe]))
            size += safe
            del buffer.data[:safe]
        if not buffer.fill():
            raise MultipartError("the body ends inside a part")


def _field(buffer: _Buffer, delimiter: bytes) -> str:
    pieces: list[bytes] = []
    total = 0

    def write(piece: bytes) -> None:
        nonlocal total
        total += len(piece)
        if total > MAX_FIELD_BYTES:
            raise MultipartError("a form field is too long")
        pieces.append(piece)

    _copy_until(buffer, delimiter, write)
    try:
        return b"".join(pieces).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MultipartError("a form field is not UTF-8") from exc


def _spool(
    buffer: _Buffer,
    delimiter: bytes,
    name: str,
    filename: str | None,
    headers: dict[str, str],
    spool_dir: Path,
) -> UploadedFile:
    fd, raw_path = tempfile.mkstemp(prefix="upload-", dir=spool_dir)
    path = Path(raw_path)
    try:
        with os.fdopen(fd, "wb") as out:
            size = _copy_until(buffer, delimiter, out.write)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return UploadedFile(
        field=name,
        filename=filename or name,
        content_type=headers.get("content-type"),
        path=path,
        size=size,
    )
