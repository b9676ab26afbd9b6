"""Dialects: the same service spoken as OpenAI, as Azure OpenAI's v1 API, or as Azure's dated API.

A dialect changes only the wire: where the paths hang, how the key is sent, how payloads and
errors are spelt, and a few limits. The engine stores files and batches the same way in every
dialect; the app translates at the edge with :func:`batch_view` and :func:`file_view`, so the
lifecycle code never needs to know which dialect it serves.

The Azure differences follow Microsoft's published examples (docs/providers-webhooks-prices.md,
"Azure OpenAI"): ISO-8601 times, capitalised statuses, ``""`` for absent file ids, no ``model``
or ``usage``, errors as ``{"error": {code, message}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

OPENAI_EXPIRY = (3600, 2_592_000)
AZURE_EXPIRY = (1_209_600, 2_592_000)  # 14 to 30 days
BRACKET_EXPIRY_FIELDS = ("expires_after[anchor]", "expires_after[seconds]")
DOTTED_EXPIRY_FIELDS = ("expires_after.anchor", "expires_after.seconds")
# Versions of Azure's dated API that have batches; anything else is refused like Azure does.
AZURE_API_VERSIONS = (
    "2024-07-01-preview",
    "2024-08-01-preview",
    "2024-10-01-preview",
    "2024-10-21",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
)
MISSING_API_VERSION = (
    "The api-version query parameter (?api-version=) is required for all requests."
)
AZURE_STATUSES = {
    "validating": "Validating",
    "in_progress": "InProgress",
    "finalizing": "Finalizing",
    "completed": "Completed",
    "failed": "Failed",
    "expired": "Expired",
    "cancelling": "Cancelling",
    "cancelled": "Cancelled",
}
BATCH_TIMES = (
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
# Azure's names for the input-file error codes OpenAI spells differently.
AZURE_INPUT_CODES = {
    "mismatched_endpoint": "url_mismatch",
    "mismatched_model": "model_mismatch",
    "too_many_requests": "too_many_tasks",
}


@dataclass(frozen=True)
class Dialect:
    """What differs between dialects; one instance each in :data:`DIALECTS`.

    ``prefix`` is where the API's paths hang on the server; ``base_path`` is what a client puts
    after ``http://host:port`` as its base URL (the dated API's client adds ``/openai`` itself).
    """

    name: str
    title: str
    prefix: str
    base_path: str
    bearer_auth: bool  # ``Authorization: Bearer K`` accepted
    api_key_header: bool  # ``api-key: K`` accepted
    needs_api_version: bool
    azure_payloads: bool  # ISO times, capitalised statuses... (see batch_view)
    always_error_file: bool  # a finished batch has an error file, empty if need be
    max_requests: int
    expiry_range: tuple[int, int]
    expiry_fields: tuple[tuple[str, str], ...]
    input_codes: Mapping[str, str] = field(default_factory=dict)
    # A line without a model differs from one with a model (Azure: the deployment name).
    model_on_every_line: bool = False


_AZURE_COMMON: dict[str, Any] = {
    "api_key_header": True,
    "azure_payloads": True,
    "always_error_file": True,
    "max_requests": 100_000,
    "expiry_range": AZURE_EXPIRY,
    # Azure documents the dotted names; SDKs written for OpenAI send the bracket ones.
    "expiry_fields": (DOTTED_EXPIRY_FIELDS, BRACKET_EXPIRY_FIELDS),
    "input_codes": AZURE_INPUT_CODES,
    "model_on_every_line": True,
}

DIALECTS: dict[str, Dialect] = {
    "openai": Dialect(
        name="openai",
        title="OpenAI's API",
        prefix="/v1",
        base_path="/v1",
        bearer_auth=True,
        api_key_header=False,
        needs_api_version=False,
        azure_payloads=False,
        always_error_file=False,
        max_requests=50_000,
        expiry_range=OPENAI_EXPIRY,
        expiry_fields=(BRACKET_EXPIRY_FIELDS,),
    ),
    "azure": Dialect(
        name="azure",
        title="Azure OpenAI's v1 API",
        prefix="/openai/v1",
        base_path="/openai/v1",
        bearer_auth=True,
        needs_api_version=False,
        **_AZURE_COMMON,
    ),
    "azure-legacy": Dialect(
        name="azure-legacy",
        title="Azure OpenAI's dated API (?api-version=)",
        prefix="/openai",
        base_path="",
        bearer_auth=False,
        needs_api_version=True,
        **_AZURE_COMMON,
    ),
}


def get(name: str) -> Dialect:
    """The dialect called ``name``; a ValueError names the choices otherwise."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {name!r}") from None


def iso(timestamp: float | None) -> str | None:
    """Unix seconds as Azure writes them: ``2024-07-01T12:00:00Z``."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_view(dialect: Dialect, batch: dict[str, Any], *, listed: bool = False) -> dict[str, Any]:
    """The Batch object as ``dialect`` spells it; ``listed`` when it is an item of a list page
    (Azure shows the endpoint there, but null on a batch that is still validating)."""
    if not dialect.azure_payloads:
        return batch
    view = {k: v for k, v in batch.items() if k not in ("model", "usage")}
    validating = batch["status"] == "validating"
    view["status"] = AZURE_STATUSES.get(batch["status"], batch["status"])
    for key in BATCH_TIMES:
        view[key] = iso(batch[key])
    for key in ("output_file_id", "error_file_id"):
        if view[key] is None:
            view[key] = ""
    if validating:
        view["request_counts"] = dict.fromkeys(("total", "completed", "failed"))
        if not listed:
            view["endpoint"] = None
    return view


def file_view(dialect: Dialect, file: dict[str, Any]) -> dict[str, Any]:
    """The File object as ``dialect`` spells it."""
    if not dialect.azure_payloads:
        return file
    return {**file, "created_at": iso(file["created_at"])}
