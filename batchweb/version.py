"""The code's version, for the shared cache's keys: a digest of the project's Python modules
and templates, read once per process. Two processes of one deploy agree on it; a deploy that
changes what a page or a row is drawn from (a view, a template) makes new keys, so a shared
cache (Redis) never serves what the old code drew."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("batches", "api", "batchweb", "templates")


@cache
def code_version() -> str:
    digest = hashlib.blake2b(digest_size=6)
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".html") and "migrations" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()
