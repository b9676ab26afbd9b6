"""Read Batch and File objects from any server that speaks the Batch API, in OpenAI's shape.

Azure OpenAI and other compatible servers send the same objects with small differences:
ISO-8601 strings or milliseconds where OpenAI sends Unix seconds, capitalised or spelt-out
statuses (``Validating``, ``InProgress``, ``Canceled``), ``""`` for an absent file id, members
of ``request_counts`` set to null. The rest of batchweb should see one shape only, so the
client passes every answer through these functions once, at the edge.

Each function returns a new dict and keeps every key it does not know (a newer API version's
fields must survive a round trip). Keys that are absent stay absent: "absent" and "null" mean
the same to the readers of these objects, and adding keys would make an unchanged OpenAI
answer compare unequal to what was sent. Plain Python, no Django import.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

BATCH_TIMESTAMPS: tuple[str, ...] = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
FILE_TIMESTAMPS: tuple[str, ...] = ("created_at", "expires_at")
FILE_ID_KEYS: tuple[str, ...] = ("input_file_id", "output_file_id", "error_file_id")
STATUSES: tuple[str, ...] = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)

# Keyed by the status with case, spaces, hyphens and underscores removed, so that
# "InProgress", "in_progress", "In Progress" and "in-progress" all land on one name. American
# spellings are Azure's.
_STATUS_ALIASES: dict[str, str] = {
    **{status.replace("_", ""): status for status in STATUSES},
    "canceling": "cancelling",
    "canceled": "cancelled",
}
_SEPARATORS = re.compile(r"[\s_\-]+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# Past this a number cannot be seconds (it would be after the year 5000): it is milliseconds.
_MILLISECONDS_ABOVE = 1e11


# What no database stores (PostgreSQL refuses NUL in text) or no page encodes (a surrogate
# without its pair, which a JSON "\ud800" escape produces: it is not UTF-8).
_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """Text with NUL and lone surrogates replaced by U+FFFD; everything else as it was."""
    return _NOT_STORABLE.sub(_REPLACEMENT, text)


def clean_json(value: Any) -> Any:
    """A parsed JSON value with :func:`clean_text` applied to every string, keys included, and
    NaN and infinities (Python's reader accepts them, JSON columns do not) made None. Returns
    the value itself when nothing needed cleaning, so the common case copies nothing.

    Both passes walk with a stack of their own rather than by recursion: a payload nested as
    deep as the JSON reader allows must not raise RecursionError here."""
    if not _needs_cleaning(value):
        return value
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (item, its new parent, its key)
    while stack:
        item, parent, key = stack.pop()
        if isinstance(item, dict):
            parent[key] = copy = {}
            for name, inner in item.items():
                name = clean_text(name) if isinstance(name, str) else name
                copy[name] = None  # keeps the order of the keys; filled when popped
                stack.append((inner, copy, name))
        elif isinstance(item, list):
            parent[key] = copy = [None] * len(item)
            stack.extend((inner, copy, i) for i, inner in enumerate(item))
        elif isinstance(item, str):
            parent[key] = clean_text(item)
        elif isinstance(item, float) and not math.isfinite(item):
            parent[key] = None
        else:
            parent[key] = item
    return root[0]


def _needs_cleaning(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _NOT_STORABLE.search(item):
                return True
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def normalize_batch(payload: dict[str, Any]) -> dict[str, Any]:
    """A Batch object in OpenAI's shape: Unix-second timestamps, canonical lower-case status,
    None for absent file ids, ``request_counts`` a dict or None."""
    batch = dict(payload)
    _normalize_timestamps(batch, BATCH_TIMESTAMPS)
    if isinstance(batch.get("status"), str):
        batch["status"] = normalize_status(batch["status"])
    for key in FILE_ID_KEYS:
        if key in batch:
            batch[key] = _file_id(batch[key])
    if "request_counts" in batch:
        batch["request_counts"] = _request_counts(batch["request_counts"])
    return batch


def normalize_list(page: dict[str, Any]) -> dict[str, Any]:
    """A list page with each Batch normalized. Items that are not objects are dropped: one
    unreadable row must not hide the rest of the page."""
    normalized = dict(page)
    data = page.get("data")
    if isinstance(data, list):
        normalized["data"] = [normalize_batch(item) for item in data if isinstance(item, dict)]
    return normalized


def normalize_file(payload: dict[str, Any]) -> dict[str, Any]:
    """A File object with Unix-second timestamps and a whole-number ``bytes``."""
    file = dict(payload)
    _normalize_timestamps(file, FILE_TIMESTAMPS)
    if "bytes" in file:
        file["bytes"] = _count(file["bytes"])
    if isinstance(file.get("status"), str):
        file["status"] = file["status"].strip().lower()
    return file


def normalize_status(status: str) -> str:
    """The canonical name of a batch status; an unknown one is kept, lower-cased, so that a
    new status shows up as itself instead of being guessed at."""
    cleaned = status.strip().lower()
    return _STATUS_ALIASES.get(_SEPARATORS.sub("", cleaned), cleaned)


def to_unix_seconds(value: Any) -> int | None:
    """Unix seconds from seconds, milliseconds, a numeric string or an ISO-8601 string (no zone
    means UTC). Anything else is None: a wrong date is worse than no date."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_number(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return _from_number(float(text) if any(c in text for c in ".eE") else int(text))
    return _from_iso(text)


def _normalize_timestamps(payload: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in payload:
            payload[key] = to_unix_seconds(payload[key])


def _from_number(value: float) -> int | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        if abs(value) > _MILLISECONDS_ABOVE:
            value = value / 1000
    except OverflowError:  # an int too large for a float: junk, not a date
        return None
    # Still too large after that (microseconds, junk): no date a reader could convert.
    if abs(value) > _MILLISECONDS_ABOVE:
        return None
    return math.floor(value)


def _from_iso(text: str) -> int | None:
    if not text:
        return None
    # Python 3.11 reads "Z", offsets and any number of fractional digits (.NET sends seven),
    # but not a lower-case "t" or "z"; upper-casing changes nothing else in an ISO date.
    try:
        parsed = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return math.floor(parsed.timestamp())
    except (OverflowError, OSError, ValueError):
        return None


def _file_id(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _request_counts(value: Any) -> dict[str, Any] | None:
    """Members stay null when null (Azure sends them so before it has counted); a value that
    is not an object at all is dropped rather than passed on to code expecting one."""
    if not isinstance(value, dict):
        return None
    return {key: (None if item is None else _count(item)) for key, item in value.items()}


def _count(value: Any) -> int | None:
    """A whole number from an int, an integral float or a numeric string; otherwise None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    return None
