"""Company sign-in's provider (OpenID Connect): its settings, its discovery document, what its
claims say (subject, address, groups), the groups they give here, and its sign-out.

Company sign-in is on when OIDC_ISSUER_URL and OIDC_CLIENT_ID are set. The provider's endpoints
come from its discovery document, fetched once per process (a failed fetch is tried again at the
next sign-in). At every sign-in the provider's groups (the OIDC_GROUPS_CLAIM claim) decide the
person's groups here through OIDC_ROLE_MAP: the groups it names are added and removed to match,
so a change at the provider applies at the next sign-in; groups it does not name are left to the
admins. The client that talks to the provider is `CompanyBackend` (backends.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib.auth.models import Group

from ...errors import Failure

log = logging.getLogger(__name__)


class SignInRefused(Failure):
    """A company sign-in refused. The message is for the person; `detail` for the audit trail
    (never a token); `username` the name or address the provider gave, when known."""

    def __init__(self, message: str, *, detail: str = "", username: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message
        self.username = username


class ProviderUnavailable(SignInRefused):
    """The provider's discovery document could not be read."""


# --- Settings ---------------------------------------------------------------------------------


def oidc_enabled() -> bool:
    return bool(settings.OIDC_ISSUER_URL and settings.OIDC_RP_CLIENT_ID)


def provider_name() -> str:
    return settings.OIDC_PROVIDER_NAME


def parse_role_map(text: str) -> dict[str, set[str]]:
    """`batch-admins=Admins, batch-ops=Operators` -> {provider group: {group here}}. A provider
    group may be named twice to give two groups. ValueError says what is wrong."""
    mapping: dict[str, set[str]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        theirs, sep, ours = (part.strip() for part in item.partition("="))
        if not sep or not theirs or not ours:
            raise ValueError(f"{item.strip()!r} is not of the form provider-group=Role")
        mapping.setdefault(theirs, set()).add(ours)
    return mapping


# --- The provider's discovery document -------------------------------------------------------

_metadata: dict[str, dict[str, Any]] = {}
_metadata_lock = threading.Lock()


def provider_metadata() -> dict[str, Any]:
    """The provider's discovery document (`/.well-known/openid-configuration`), fetched once
    per process and kept; a failure is not kept, so the next sign-in tries again."""
    issuer = settings.OIDC_ISSUER_URL.rstrip("/")
    with _metadata_lock:
        if issuer in _metadata:
            return _metadata[issuer]
        url = f"{issuer}/.well-known/openid-configuration"
        down = (
            f"{provider_name()} cannot be reached right now, so company sign-in is not "
            "possible. Try again in a few minutes; if it goes on, tell your batchweb admin."
        )
        try:
            response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
            response.raise_for_status()
            document = response.json()
        except ValueError as error:  # requests' JSONDecodeError is one too
            raise ProviderUnavailable(down, detail="discovery document is not JSON") from error
        except requests.RequestException as error:
            status = getattr(error.response, "status_code", None)
            why = f"HTTP {status}" if status else type(error).__name__
            raise ProviderUnavailable(
                down, detail=f"discovery document unavailable ({why})"
            ) from error
        needed = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [key for key in needed if not isinstance(document, dict) or not document.get(key)]
        if missing:
            raise ProviderUnavailable(down, detail=f"discovery document lacks {', '.join(missing)}")
        if str(document["issuer"]).rstrip("/") != issuer:
            raise ProviderUnavailable(
                down, detail=f"discovery document names another issuer ({document['issuer']})"
            )
        _metadata[issuer] = document
        return document


def forget_provider_metadata() -> None:
    with _metadata_lock:
        _metadata.clear()


# --- What the claims say ----------------------------------------------------------------------


def subject_of(claims: dict[str, Any]) -> tuple[str, str]:
    """The provider's account a sign-in is: the ID token's issuer (checked against
    OIDC_ISSUER_URL already) and subject."""
    issuer = str(claims.get("iss") or settings.OIDC_ISSUER_URL).rstrip("/")
    subject = str(claims.get("sub") or "")
    if not subject or len(subject) > 255 or len(issuer) > 255:
        raise SignInRefused(
            f"The answer from {provider_name()} did not say who you are, so nobody was signed "
            "in. Tell your batchweb admin.",
            detail="no usable subject (sub) claim",
        )
    return issuer, subject


def email_verified_claim(claims: dict[str, Any]) -> bool:
    """The provider says the address is verified: `true` (some providers send the string)."""
    value = claims.get("email_verified")
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def groups_claim(claims: dict[str, Any]) -> list[str] | None:
    """The provider's groups (the OIDC_GROUPS_CLAIM claim), or None when it sent none."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


# --- Roles ------------------------------------------------------------------------------------


def roles_apply(*, user: Any, provider_groups: list[str]) -> list[str]:
    """Give USER exactly the groups OIDC_ROLE_MAP maps PROVIDER_GROUPS to, among the groups the
    map names (others are left alone). Returns the mapped groups USER is now in."""
    mapping = parse_role_map(settings.OIDC_ROLE_MAP)
    managed = {group for targets in mapping.values() for group in targets}
    wanted = {group for theirs in provider_groups for group in mapping.get(theirs, ())}
    current = set(user.groups.filter(name__in=managed).values_list("name", flat=True))
    if current - wanted:
        user.groups.remove(*Group.objects.filter(name__in=current - wanted))
    if wanted - current:
        adding = list(Group.objects.filter(name__in=wanted - current))
        if missing := (wanted - current) - {group.name for group in adding}:
            log.warning("OIDC_ROLE_MAP names groups that do not exist: %s", sorted(missing))
        user.groups.add(*adding)
    return sorted(user.groups.filter(name__in=managed).values_list("name", flat=True))


# --- Signing out ------------------------------------------------------------------------------


def sign_out_url(*, id_token: str, back_to: str) -> str:
    """Where the browser goes to sign out at the provider too (its end_session_endpoint, which
    sends it back to BACK_TO), or "" when the session did not come from the provider, company
    sign-in is off, or the provider cannot say (the person is signed out here all the same)."""
    if not id_token or not oidc_enabled():
        return ""
    try:
        end_session = provider_metadata().get("end_session_endpoint", "")
    except ProviderUnavailable:
        return ""
    if not end_session:
        return ""
    query = {
        "id_token_hint": id_token,
        "post_logout_redirect_uri": back_to,
        "client_id": settings.OIDC_RP_CLIENT_ID,
    }
    return f"{end_session}?{urlencode(query)}"
