"""Fault switches and compatibility quirks, changed at run time through ``POST /_sim/faults``.

Faults let tests and the demo reproduce what a client meets in practice (slowness, 429s, 5xx,
garbage bodies, a cursor that never ends) without a real upstream. Quirks reproduce the small
differences of OpenAI-compatible servers listed in batch-api.md ("Compatible servers").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

_MAX_LATENCY = 60.0


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

    Counters (``rate_limit``, ``server_error``, ``malformed``) are consumed one per ``/v1``
    request, in that order of precedence; a faulted request does nothing else.
    """

    latency: float = 0.0
    rate_limit: int = 0
    retry_after: float = 1
    server_error: int = 0
    malformed: int = 0
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
                staged.retry_after = _number(key, value, upper=3600)
            elif key in ("rate_limit", "server_error", "malformed"):
                setattr(staged, key, _count(key, value))
            elif key == "endless_list":
                staged.endless_list = _flag(key, value)
            else:
                raise ValueError(f"unknown fault switch {key!r}")
        for f in fields(self):
            setattr(self, f.name, getattr(staged, f.name))

    def take(self) -> str | None:
        """Consume and name the fault the next ``/v1`` request must answer with, if any."""
        for name in ("rate_limit", "server_error", "malformed"):
            if getattr(self, name) > 0:
                setattr(self, name, getattr(self, name) - 1)
                return name
        return None

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


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value
