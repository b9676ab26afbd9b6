"""Personal API tokens: made, checked and revoked here, and nowhere else.

A token reads `bw_<prefix>_<secret>`: the prefix (8 hex digits) finds the row, the secret
(43 URL-safe characters, 256 bits) is checked against its stored SHA-256 in constant time.
A fast hash is right here: the secret is random and long, so there is nothing to guess, and a
slow one would cost every API call. The whole token exists only in the answer to its creation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from batches.models import Event

from ..models import TOKEN_PREFIX, ApiToken, Scope
from ..reads import token_by_prefix

PREFIX_CHARS = 8
SECRET_BYTES = 32
EXPIRY_DAYS = (7, 30, 90, 365)
# last_used_at is written at most this often per token: one write per call would be a write
# per list page of a script that pages through thousands of batches.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
_SHAPE = re.compile(rf"^{TOKEN_PREFIX}([0-9a-f]{{{PREFIX_CHARS}}})_([A-Za-z0-9_-]{{43}})$")


class TokenRefused(Exception):
    """The token cannot be used; `code` names why (invalid_api_key, expired_api_key,
    revoked_api_key, account_disabled) and `token` is the row when one was found."""

    def __init__(self, message: str, *, code: str, token: ApiToken | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.token = token


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    plain: str  # shown once, then gone


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_create(*, user: Any, name: str, scope: str, days: int) -> NewToken:
    """Make a token for `user`; the answer holds the only copy of the whole token."""
    if scope not in Scope.values:
        raise ValueError(f"scope must be one of {Scope.values}")
    if days not in EXPIRY_DAYS:
        raise ValueError(f"days must be one of {EXPIRY_DAYS}")
    name = " ".join(name.split())[:100] or "token"
    now = timezone.now()
    secret = secrets.token_urlsafe(SECRET_BYTES)
    for _ in range(5):  # a clash of 32-bit prefixes is rare; try another one
        prefix = secrets.token_hex(PREFIX_CHARS // 2)
        try:
            with transaction.atomic():
                token = ApiToken.objects.create(
                    user=user,
                    name=name,
                    prefix=prefix,
                    secret_sha256=_digest(secret),
                    scope=scope,
                    created_at=now,
                    expires_at=now + dt.timedelta(days=days),
                )
            break
        except IntegrityError:
            continue
    else:  # pragma: no cover - five clashes in a row
        raise RuntimeError("could not find a free token prefix")
    Event.record(
        Event.Action.TOKEN_CREATE,
        user=user,
        target=f"API token {token}",
        detail=f"scope {scope}, expires {token.expires_at:%Y-%m-%d}",
    )
    return NewToken(token=token, plain=f"{TOKEN_PREFIX}{prefix}_{secret}")


def token_revoke(*, token: ApiToken, by: Any) -> bool:
    """Revoke a token (its owner, or an admin). False when it was revoked already."""
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=by
    )
    if not revoked:
        return False
    token.refresh_from_db()
    whose = "" if by.pk == token.user_id else f" of {token.user.get_username()}"
    Event.record(Event.Action.TOKEN_REVOKE, user=by, target=f"API token {token}{whose}")
    return True


def token_authenticate(header: str | None, *, now: dt.datetime | None = None) -> ApiToken:
    """The token an `Authorization` header carries, checked. Raises TokenRefused."""
    now = now or timezone.now()
    if not header:
        raise TokenRefused(
            "No API key given: send your batchweb token as `Authorization: Bearer bw_...`. "
            "Create one on your profile page.",
            code="missing_api_key",
        )
    scheme, _, value = header.strip().partition(" ")
    match = _SHAPE.match(value.strip()) if scheme.lower() == "bearer" else None
    if match is None:
        raise TokenRefused(
            "The API key is not a batchweb token (they read bw_ followed by 8 hex digits, an "
            "underscore and 43 more characters). Create one on your profile page.",
            code="invalid_api_key",
        )
    prefix, secret = match.groups()
    token = token_by_prefix(prefix)
    if token is None or not hmac.compare_digest(token.secret_sha256, _digest(secret)):
        raise TokenRefused(
            "Incorrect API key: no batchweb token matches it.", code="invalid_api_key"
        )
    if token.revoked_at:
        raise TokenRefused(
            f"This API token ({token.display_prefix}, “{token.name}”) was revoked on "
            f"{token.revoked_at:%Y-%m-%d %H:%M} UTC. Create a new one on your profile page.",
            code="revoked_api_key",
            token=token,
        )
    if token.expires_at <= now:
        raise TokenRefused(
            f"This API token ({token.display_prefix}, “{token.name}”) expired on "
            f"{token.expires_at:%Y-%m-%d %H:%M} UTC. Create a new one on your profile page.",
            code="expired_api_key",
            token=token,
        )
    if not token.user.is_active:
        raise TokenRefused(
            "The account this token belongs to is disabled.", code="account_disabled", token=token
        )
    if token.last_used_at is None or token.last_used_at <= now - LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
