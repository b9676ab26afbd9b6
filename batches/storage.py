"""Every path under data/ (BATCHWEB_DATA_DIR) is made here, and only here.

The rule: nothing from a request is ever part of a path. A path is an area of data/ (a fixed
folder) and names the server made (`new_name()`, a batch's pk and cleaned id, a file kind),
each of which must match NAME; the result is resolved and refused (UnsafePath) when it is not
inside the area's root, so a symlink planted inside cannot lead out either.

    staging/<name>.jsonl            checked input files waiting for confirmation
    results/<batch>/<kind>.jsonl    local copies of a batch's files

A path read back from the database (Submission.staged_path, ResultFile.path) goes through
`stored_path()`, the same check again: a row written before this rule, or by hand, cannot make
the server open or remove a file anywhere else. A restore copies a backup's files through
`restored_path()`, which keeps them inside data/.

Pure: settings.DATA_DIR and the file system, no ORM.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path, PurePath
from typing import Literal

from django.conf import settings

Area = Literal["staging", "results"]
# How many names deep an area's files are: fewer names make a folder of it.
AREAS: dict[str, int] = {"staging": 1, "results": 2}
SUFFIX = ".jsonl"
# One name in a path: letters, digits, "-" and "_" (no dot, no slash, nothing else).
NAME = re.compile(r"[A-Za-z0-9_-]{1,160}")
# What `new_name()` and services.new_submission_token() make (secrets.token_urlsafe(18): 24
# characters); a form's submission token is checked against it on the way in.
TOKEN = re.compile(r"[A-Za-z0-9_-]{24}")


class UnsafePath(ValueError):
    """A name that is not a server-made name, or a path that would leave its area."""


def new_name() -> str:
    """A fresh name for a file: made by the server, never derived from a request."""
    return secrets.token_urlsafe(18)


def is_token(value: object) -> bool:
    """Whether `value` has the shape of a token the server made (for checks on the way in)."""
    return isinstance(value, str) and TOKEN.fullmatch(value) is not None


def data_root() -> Path:
    return Path(settings.DATA_DIR).resolve()


def area_root(area: Area) -> Path:
    """The area's folder (made when missing), resolved."""
    if area not in AREAS:
        raise UnsafePath(f"no such area of the data folder: {area!r}")
    root = data_root() / area
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def data_path(area: Area, *names: str) -> Path:
    """The path of a file (or, with fewer names, a folder) of `area`, made of server-made names.

    `data_path("staging", name)` is staging/<name>.jsonl; `data_path("results", folder)` a
    batch's folder and `data_path("results", folder, kind)` its <kind>.jsonl. Raises UnsafePath
    for a name that does not match NAME or a result outside the area's root."""
    depth = AREAS.get(area)
    if depth is None or not 1 <= len(names) <= depth:
        raise UnsafePath(f"{area!r} takes 1 to {depth} names")
    for name in names:
        if not isinstance(name, str) or NAME.fullmatch(name) is None:
            raise UnsafePath("not a server-made name")
    root = area_root(area)
    parts = list(names)
    if len(parts) == depth:
        parts[-1] += SUFFIX
    path = root.joinpath(*parts).resolve()
    if path == root or not path.is_relative_to(root):
        raise UnsafePath(f"a path outside data/{area}")
    return path


def stored_path(area: Area, value: str | None) -> Path | None:
    """A path read back from the database, if it is still one `data_path` would make: a file
    of `area`, inside its root. None for anything else (an empty value, a path elsewhere, a
    name the server would not have made): such a path is never opened or removed."""
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        return None
    try:
        relative = path.resolve().relative_to(area_root(area))
    except (ValueError, OSError):
        return None
    names = list(relative.parts)
    if len(names) != AREAS[area] or not names[-1].endswith(SUFFIX):
        return None
    names[-1] = names[-1][: -len(SUFFIX)]
    try:
        return data_path(area, *names)
    except UnsafePath:
        return None


def restored_path(relative: PurePath) -> Path:
    """Where a file of a backup's data/ folder goes back to, for the restore: the same place
    under data/. Raises UnsafePath for an absolute name, a ".." or a result outside data/."""
    if relative.is_absolute() or not relative.parts or ".." in relative.parts:
        raise UnsafePath("a name outside the data folder")
    root = data_root()
    path = (root / relative).resolve()
    if path == root or not path.is_relative_to(root):
        raise UnsafePath("a name outside the data folder")
    return path
