"""File storage: the bytes of uploaded and generated files, and the File objects around them.

Uploads can be 200 MB, so their bytes live on disk (the multipart parser spools them there) and
are streamed back in chunks. Generated output files are built lazily, when first needed, because
a seeded benchmark can finish 10,000 batches at once and nobody reads most of their outputs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 64 * 1024
# Generated contents above this size go to disk instead of staying in memory.
SPILL_BYTES = 4 * 1024 * 1024


class Blob:
    """The immutable bytes of one file, held in memory or in a file on disk."""

    __slots__ = ("data", "path", "size")

    def __init__(self, *, data: bytes | None = None, path: Path | None = None) -> None:
        if (data is None) == (path is None):
            raise ValueError("a blob has either data or a path")
        self.data = data
        self.path = path
        self.size = len(data) if data is not None else path.stat().st_size  # type: ignore[union-attr]

    @classmethod
    def store(cls, data: bytes, directory: Path, name: str) -> Blob:
        """Keep small contents in memory and write big ones to ``directory``."""
        if len(data) <= SPILL_BYTES:
            return cls(data=data)
        path = directory / name
        path.write_bytes(data)
        return cls(path=path)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        if self.data is not None:
            for start in range(0, len(self.data), size):
                yield self.data[start : start + size]
            return
        assert self.path is not None
        with self.path.open("rb") as fh:
            while piece := fh.read(size):
                yield piece

    def lines(self) -> Iterator[bytes]:
        """The lines of the content, without reading it all at once."""
        if self.data is not None:
            yield from self.data.splitlines()
            return
        assert self.path is not None
        with self.path.open("rb") as fh:
            for line in fh:
                yield line.rstrip(b"\r\n")

    def discard(self) -> None:
        """Free the disk space of a deleted file."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


@dataclass(eq=False)
class FileRecord:
    """A File object. ``blob`` is None for a generated file not built yet; ``source`` then names
    the batch (and which of its result files) that builds it."""

    id: str
    filename: str
    purpose: str
    created_at: float
    expires_at: float | None
    blob: Blob | None = None
    source: tuple[str, str] | None = None  # (batch id, "output" | "error")

    def to_dict(self) -> dict[str, Any]:
        assert self.blob is not None, "build generated contents before rendering"
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.blob.size,
            "created_at": int(self.created_at),
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }
