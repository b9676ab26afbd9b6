"""Connections: the client for each, and the test of one. Which of them a person may see
and use is `Connection.objects.visible_to` / `listed_to` (models/connections.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from ..models import (
    AuthStyle,
    Connection,
    ConnectionKeyError,
    Dialect,
    default_connection,
)
from ..openai_client import (
    MAX_RETRY_AFTER,
    AuthError,
    BadResponse,
    ClientConfig,
    InvalidRequest,
    NotFound,
    OpenAIClient,
    OpenAIError,
    RateLimited,
    UpstreamUnavailable,
)

logger = logging.getLogger(__name__)


class ConnectionNotReady(OpenAIError):
    """A connection has no usable key (unset variable, missing or changed encryption key)."""

    title = "This connection cannot be used"


def client_config(connection: Connection, *, interactive: bool = False) -> ClientConfig:
    """The client settings of a connection. `interactive` is for calls made while a person
    waits on a page: shorter timeouts and fewer retries, since the page falls back to the cache
    anyway. Raises ConnectionNotReady when its key cannot be had."""
    try:
        key = connection.api_key()
    except ConnectionKeyError as error:
        raise ConnectionNotReady(str(error)) from None
    read_timeout = settings.OPENAI_READ_TIMEOUT
    max_retries = settings.OPENAI_MAX_RETRIES
    if interactive:
        read_timeout = min(read_timeout, settings.OPENAI_PAGE_TIMEOUT)
        max_retries = min(max_retries, 1)
    return ClientConfig(
        api_key=key,
        base_url=connection.effective_base_url(),
        organization=connection.effective_organization(),
        project=connection.effective_project(),
        dialect=connection.dialect,
        auth_style=connection.auth_style,
        api_version=connection.api_version or "2024-10-21",
        connect_timeout=settings.OPENAI_CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        max_retries=max_retries,
        max_retry_wait=settings.OPENAI_PAGE_TIMEOUT if interactive else MAX_RETRY_AFTER,
    )


def get_client(*, connection: Connection | None = None, interactive: bool = False) -> OpenAIClient:
    """The client of a connection (the default one when none is named)."""
    return OpenAIClient(client_config(connection or default_connection(), interactive=interactive))


# --- Test connection -----------------------------------------------------------------------


@dataclass
class ConnectionTestResult:
    """What a connection test found, in words for the person who pressed the button.

    `kind` names the outcome for code and logs: "ok", "no-key", "auth", "not-found",
    "unreachable", "not-api", "api-version", "rate-limited", "server-error", "rejected" or
    "failed". Nothing here ever holds the key beyond its last four characters.
    """

    ok: bool
    message: str
    details: list[str] = field(default_factory=list)
    request_id: str | None = None
    kind: str = "ok"

    @property
    def is_warning(self) -> bool:
        """Not a success, but the settings are right (the server asked to slow down)."""
        return self.kind == "rate-limited"


def connection_test(*, connection: Connection) -> ConnectionTestResult:
    """List one page of batches through a connection and say what worked, or why not and what
    to change. Reads only: it never creates or changes anything upstream or here."""
    try:
        client = get_client(connection=connection, interactive=True)
    except ConnectionNotReady as error:
        result = _no_key(connection, error)
    else:
        try:
            page = client.list_batches(limit=5)
        except OpenAIError as error:
            result = _explain(connection, error)
        else:
            result = _connected(connection, page, client.config.api_key)
    logger.info(
        "connection test of %s: %s%s",
        connection.slug,
        result.kind,
        f" (request id {result.request_id})" if result.request_id else "",
    )
    return result


def _where(connection: Connection) -> str:
    return f"{connection.effective_base_url()} ({connection.get_dialect_display()})"


def _key_hint(key: str) -> str:
    # A short key would be given away by its last four characters.
    return f"key …{key[-4:]}" if len(key) >= 12 else "key set"


def _connected(connection: Connection, page: dict[str, Any], key: str) -> ConnectionTestResult:
    count = len(page.get("data") or [])
    noun = "batch" if count == 1 else "batches"
    more = " (the first page; there are more)" if page.get("has_more") else ""
    details = [f"The key comes from: {connection.key_source()}."]
    if connection.effective_organization():
        details.append(f"Organisation: {connection.effective_organization()}.")
    if connection.effective_project():
        details.append(f"Project: {connection.effective_project()}.")
    return ConnectionTestResult(
        ok=True,
        message=f"Connected to {_where(connection)}: the batch list answered with {count} "
        f"{noun}{more}; {_key_hint(key)}.",
        details=details,
    )


def _no_key(connection: Connection, error: ConnectionNotReady) -> ConnectionTestResult:
    details = [error.message]
    if connection.from_settings:
        details.append(
            "Set OPENAI_API_KEY in the environment (or .env) of the web and worker processes "
            "and restart them."
        )
    elif connection.key_env:
        details.append(
            f"Set the environment variable {connection.key_env} for the web and worker "
            "processes and restart them, or store the key on the connection instead."
        )
    elif connection.key_encrypted:
        details.append(
            "The key is stored encrypted with BATCHWEB_ENCRYPTION_KEY: set that setting to the "
            "key it was saved with, or enter the connection's API key again."
        )
    else:
        details.append(
            "Enter the API key on the connection, or the name of an environment variable "
            "that holds it."
        )
    return ConnectionTestResult(
        ok=False,
        message=f"No usable key for {connection.name}: nothing was sent.",
        details=details,
        kind="no-key",
    )


def _explain(connection: Connection, error: OpenAIError) -> ConnectionTestResult:
    """Turn a client error into the likely cause and what to change. `str(error)` is the
    client's own readable sentence, which never holds the key."""
    said = str(error)
    where = _where(connection)
    if isinstance(error, AuthError):
        details = [
            said,
            "Check that the key is right and still active.",
            "Check that the key belongs to this "
            + ("Azure resource." if connection.is_azure else "organisation and project."),
        ]
        if connection.effective_organization() or connection.effective_project():
            details.append(
                "The organisation or project set on this connection must be one the key "
                "belongs to; try leaving them empty."
            )
        if error.status == 403:
            details.append(
                "A restricted key needs read access to batches (and write access to files and "
                "batches to submit)."
            )
        if connection.is_azure and connection.auth_style == AuthStyle.BEARER:
            details.append(
                "Azure OpenAI expects an API key in the api-key header (Bearer is for Entra ID "
                "tokens): set “send the key as” to api-key."
            )
        elif not connection.is_azure and connection.auth_style == AuthStyle.API_KEY:
            details.append(
                "OpenAI and most compatible servers expect Authorization: Bearer: set “send "
                "the key as” to Bearer."
            )
        return _failure(f"{where} refused the key (HTTP {error.status}).", details, error, "auth")
    if isinstance(error, NotFound):
        return _failure(
            f"{where} has no batch list at this address (HTTP 404): the base URL or the "
            "dialect is probably wrong.",
            [said, *_url_hints(connection)],
            error,
            "not-found",
        )
    if isinstance(error, RateLimited):
        details = [said]
        if error.quota_exhausted:
            details.append("The account has run out of credit or quota: check billing and limits.")
        else:
            details.append("Try again in a minute; nothing needs changing here.")
        return _failure(
            f"{where} is reachable and the key works, but it is rate limiting requests now "
            "(HTTP 429).",
            details,
            error,
            "rate-limited",
        )
    if isinstance(error, UpstreamUnavailable) and not error.status:
        host = urlsplit(connection.effective_base_url()).netloc or "the server"
        timed_out = isinstance(error.__cause__, requests.Timeout)
        return _failure(
            f"Could not reach {host}" + (": it did not answer in time." if timed_out else "."),
            [
                str(error),
                f"Check the base URL (host name and port), DNS, and any proxy or firewall "
                f"between this server and {host}.",
            ],
            error,
            "unreachable",
        )
    if isinstance(error, UpstreamUnavailable):
        return _failure(
            f"{where} answered with a server error (HTTP {error.status}): it is reachable but "
            "failing now.",
            [said, "Try again later; if it persists, check the provider's status page."],
            error,
            "server-error",
        )
    if isinstance(error, BadResponse):
        return _failure(
            f"The answer from {where} is not a batch list: there is probably no "
            "OpenAI-compatible API at this URL.",
            [
                str(error),
                "A sign-in page, a proxy's page or another web site may be answering instead; "
                "open the base URL followed by /batches in a browser to see what answers.",
                *_url_hints(connection),
            ],
            error,
            "not-api",
        )
    if isinstance(error, InvalidRequest) and "api-version" in error.message.lower():
        if connection.dialect == Dialect.AZURE_LEGACY:
            hint = (
                f"Set the connection's API version to one that offers batches, e.g. 2024-10-21 "
                f"(it is “{connection.api_version or 'empty'}”)."
            )
        else:
            hint = (
                "This server wants an api-version: choose the dialect azure-legacy with the "
                "resource URL and set the API version (e.g. 2024-10-21), or use Azure's v1 API "
                "at https://RESOURCE.openai.azure.com/openai/v1 with the dialect azure."
            )
        return _failure(
            f"{where} refused the API version (HTTP {error.status}).",
            [said, hint],
            error,
            "api-version",
        )
    if isinstance(error, InvalidRequest):
        return _failure(
            f"{where} rejected the request to list batches"
            + (f" (HTTP {error.status})." if error.status else "."),
            [said, *_url_hints(connection)],
            error,
            "rejected",
        )
    return _failure(f"The test of {where} failed.", [said], error, "failed")


def _url_hints(connection: Connection) -> list[str]:
    base = connection.effective_base_url().rstrip("/")
    host = (urlsplit(base).hostname or "").lower()
    hints = []
    if connection.dialect == Dialect.OPENAI:
        if "azure.com" in host:
            hints.append(
                "This is an Azure address: choose the dialect azure (base URL ending in "
                "/openai/v1) or azure-legacy (the resource URL)."
            )
        elif not base.endswith("/v1"):
            hints.append(
                "OpenAI's base URL ends in /v1 (https://api.openai.com/v1); so do most "
                "compatible servers'."
            )
        else:
            hints.append("OpenAI's base URL is https://api.openai.com/v1.")
    elif connection.dialect == Dialect.AZURE:
        hints.append(
            "Azure's v1 API lives at https://RESOURCE.openai.azure.com/openai/v1; if the "
            "resource only offers the dated API, choose the dialect azure-legacy with the "
            "resource URL."
        )
    else:
        if base.endswith("/v1"):
            hints.append(
                "This base URL ends in /v1, which is the v1 API: choose the dialect azure, "
                "or give only the resource URL (https://RESOURCE.openai.azure.com)."
            )
        else:
            hints.append(
                "For Azure's dated API the base URL is the resource URL "
                "(https://RESOURCE.openai.azure.com); batchweb adds /openai/batches and the "
                "api-version itself."
            )
        hints.append(
            f"Check that the API version ({connection.api_version or 'empty'}) offers batches "
            "(2024-10-21 does)."
        )
    return hints


def _failure(
    message: str, details: list[str], error: OpenAIError, kind: str
) -> ConnectionTestResult:
    return ConnectionTestResult(
        ok=False, message=message, details=details, request_id=error.request_id, kind=kind
    )
