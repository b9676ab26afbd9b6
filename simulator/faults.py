"""Fault switches and compatibility quirks, changed at run time through ``POST /_sim/faults``.

Faults let tests and the demo reproduce what a client meets in practice (slowness, 429s with and
without Retry-After, an exhausted quota, 5xx, a proxy's HTML error page, dropped connections,
garbage or empty bodies, a 200 carrying an error, batch objects missing fields, downloads cut
short, a cursor that never ends) without a real upstream. Quirks reproduce the small
differences of OpenAI-compatible servers listed in batch-api.md ("Compatible servers").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

_MAX_LATENCY = 60.0
# The counted faults, in their order of precedence: one is consumed per matching request.
COUNTERS: tuple[str, ...] = (
    "rate_limit",
    "quota",
    "server_error",
    "proxy_error",
    "reset",
    "malformed",
    "empty_body",
    "error_body",
)


@dataclass
class Quirks:
    """Differences of compatible servers; all off by default (the simulator then acts as OpenAI).

    - ``id_prefix``: batch ids rendered with this prefix (e.g. ``batch-``) instead of ``batch_``.
    - ``omit_nulls``: keys whose value is null are left out of JSON answers.
    - ``skip_finalizing``: batches created while on go from ``in_progress`` to ``completed``.
    - ``body_as_string``: output-file ``response.body`` is a JSON-encoded string, not an object.
    - ``errors_message_only``: HTTP error bodies are ``{"error": {"message": ...}}`` only.
    """

    id_prefix: str | None = None
    omit_nulls: bool = False
    skip_finalizing: bool = False
    body_as_string: bool = False
    errors_message_only: bool = False


@dataclass
class Faults:
    """Switches for the next answers of the ``/v1`` API.

    Counters (see ``COUNTERS``) are consumed one per ``/v1`` request, in that order of
    precedence; a faulted request does nothing else, unless ``act_first`` is on: then the
    request is carried out and only its answer is replaced (a lost answer). ``operations``,
    when set, limits the latency and the counters to those operationIds (``createBatch``,
    ``listBatches``...); other requests are answered normally and consume nothing.
    ``cut_downloads`` counts file downloads only: each stops halfway through the body.
    """

    latency: float = 0.0
    rate_limit: int = 0
    # Seconds sent in the 429's ``retry-after`` header; None sends no header at all.
    retry_after: float | None = 1
    quota: int = 0
    server_error: int = 0
    proxy_error: int = 0
    # The status of ``proxy_error``'s HTML page: 502 by default; 200 for a login page.
    proxy_status: int = 502
    reset: int = 0
    malformed: int = 0
    empty_body: int = 0
    error_body: int = 0
    cut_downloads: int = 0
    # Answers as application/json carry this Content-Type instead (None: the right one).
    content_type: str | None = None
    act_first: bool = False
    operations: list[str] | None = None
    # Keys left out of every Batch object in answers (a server that drops fields).
    drop_batch_fields: list[str] = field(default_factory=list)
    endless_list: bool = False
    quirks: Quirks = field(default_factory=Quirks)

    def merge(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update; raise ValueError (and change nothing) on a bad key or value."""
        staged = Faults(**{f.name: getattr(self, f.name) for f in fields(self)})
        staged.quirks = Quirks(**asdict(self.quirks))
        for key, value in changes.items():
            if key == "quirks":
                _merge_quirks(staged.quirks, value)
            elif key == "latency":
                staged.latency = _number(key, value, upper=_MAX_LATENCY)
            elif key == "retry_after":
                staged.retry_after = None if value is None else _number(key, value, upper=3600)
            elif key in COUNTERS or key == "cut_downloads":
                setattr(staged, key, _count(key, value))
            elif key == "proxy_status":
                if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
                    raise ValueError("proxy_status must be an HTTP status from 200 to 599")
                staged.proxy_status = value
            elif key == "content_type":
                if value is not None and (not isinstance(value, str) or not value.strip()):
                    raise ValueError("content_type must be a non-empty string or null")
                staged.content_type = value
            elif key == "operations":
                staged.operations = None if value is None else _names(key, value)
            elif key == "drop_batch_fields":
                staged.drop_batch_fields = _names(key, value)
            elif key in ("endless_list", "act_first"):
                setattr(staged, key, _flag(key, value))
            else:
                raise ValueError(f"unknown fault switch {key!r}")
        for f in fields(self):
            setattr(self, f.name, getattr(staged, f.name))

    def applies_to(self, operation: str) -> bool:
        """Whether latency and counters apply to a request of this operation."""
        return self.operations is None or operation in self.operations

    def take(self, operation: str | None = None) -> str | None:
        """Consume and name the fault the next ``/v1`` request must answer with, if any."""
        if operation is not None and not self.applies_to(operation):
            return None
        for name in COUNTERS:
            if getattr(self, name) > 0:
                setattr(self, name, getattr(self, name) - 1)
                return name
        return None

    def take_cut(self) -> bool:
        """Consume one ``cut_downloads``: whether this download must stop halfway."""
        if self.cut_downloads > 0:
            self.cut_downloads -= 1
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _merge_quirks(quirks: Quirks, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ValueError("quirks must be an object")
    for key, item in value.items():
        if key == "id_prefix":
            if item is not None and (not isinstance(item, str) or not item):
                raise ValueError("quirks.id_prefix must be a non-empty string or null")
            quirks.id_prefix = item
        elif key in {f.name for f in fields(Quirks)}:
            setattr(quirks, key, _flag(f"quirks.{key}", item))
        else:
            raise ValueError(f"unknown quirk {key!r}")


def _number(name: str, value: Any, *, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= upper:
        raise ValueError(f"{name} must be a number from 0 to {upper:g}")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _names(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must be a list of names")
    return list(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value
