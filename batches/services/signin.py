"""Signing in: company sign-in (OpenID Connect, through mozilla-django-oidc), the password
switch, and what guards both (django-axes' throttle, the client's address).

Company sign-in is on when OIDC_ISSUER_URL and OIDC_CLIENT_ID are set. The provider's endpoints
come from its discovery document, fetched once per process (a failed fetch is tried again at the
next sign-in). At every sign-in the provider's groups (the OIDC_GROUPS_CLAIM claim) decide the
person's groups here through OIDC_ROLE_MAP: the groups it names are added and removed to match,
so a change at the provider applies at the next sign-in; groups it does not name are left to the
admins.

Which account a company sign-in is, is decided by one function, `company_account_for`: the
account linked to the provider's subject (`iss` + `sub`, what the ID token signs), recorded at
the first sign-in (`CompanyIdentity`). A sign-in with no link yet is linked to an existing
account by email address only when the provider says the address is verified *and* the
account's address was set by an admin, by the provider, or verified with a mailed link
(services/addresses.py, `email_trusted`); otherwise it gets an account of its own. An address
someone typed on their profile never decides anything, and never refuses anyone.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal

import jwt
import requests
from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_cool_off, get_failure_limit
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.core import checks
from django.core.cache import caches
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from .. import roles
from ..models import AccountEmail, CompanyIdentity, generation
from .addresses import email_set, email_trusted

log = logging.getLogger(__name__)

COMPANY_BACKEND = "batches.services.signin.CompanyBackend"
ROLES = (roles.VIEWERS, roles.SUBMITTERS, roles.OPERATORS, roles.ADMINS)


class SignInRefused(Exception):
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


def check_sign_in_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Start-up checks (registered in apps.py): company sign-in settings that cannot work."""
    messages: list[checks.CheckMessage] = []
    try:
        mapping = parse_role_map(settings.OIDC_ROLE_MAP)
    except ValueError as error:
        messages.append(
            checks.Error(
                f"OIDC_ROLE_MAP cannot be read: {error}.",
                hint="For example OIDC_ROLE_MAP=batch-admins=Admins,batch-ops=Operators",
                id="batches.E010",
            )
        )
        mapping = {}
    others = sorted({g for targets in mapping.values() for g in targets} - set(ROLES))
    if others:
        messages.append(
            checks.Warning(
                f"OIDC_ROLE_MAP names {', '.join(others)}: not one of batchweb's roles "
                f"({', '.join(ROLES)}).",
                hint="That is fine for a group made in the admin site (one that limits a "
                "connection, say); a group that does not exist is skipped at sign-in.",
                id="batches.W010",
            )
        )
    if settings.OIDC_ISSUER_URL and not settings.OIDC_RP_CLIENT_ID:
        messages.append(
            checks.Error(
                "OIDC_ISSUER_URL is set but OIDC_CLIENT_ID is not: company sign-in is off.",
                hint="Set OIDC_CLIENT_ID and OIDC_CLIENT_SECRET to the client registered at "
                "your provider.",
                id="batches.E011",
            )
        )
    if oidc_enabled() and not mapping:
        messages.append(
            checks.Warning(
                "Company sign-in is on but OIDC_ROLE_MAP is empty: people who sign in with "
                "it get no role and see nothing until an admin gives them one.",
                hint="For example OIDC_ROLE_MAP=batch-admins=Admins,batch-users=Viewers",
                id="batches.W011",
            )
        )
    if not settings.BATCHWEB_PASSWORD_SIGNIN and not oidc_enabled():
        messages.append(
            checks.Warning(
                "BATCHWEB_PASSWORD_SIGNIN is false and company sign-in is not configured: "
                "only superusers can sign in.",
                hint="Set OIDC_ISSUER_URL, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET, or set "
                "BATCHWEB_PASSWORD_SIGNIN=true.",
                id="batches.W012",
            )
        )
    return messages


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


def _groups_claim(claims: dict[str, Any]) -> list[str] | None:
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


# --- Which account a sign-in is -------------------------------------------------------------


@dataclass(frozen=True)
class CompanyAccount:
    """The answer of `company_account_for`: the account (None: one is to be made) and what
    linked it ("subject": an earlier sign-in; "address": a verified address on both sides)."""

    user: Any
    linked_by: Literal["subject", "address", "new"]


def email_verified_claim(claims: dict[str, Any]) -> bool:
    """The provider says the address is verified: `true` (some providers send the string)."""
    value = claims.get("email_verified")
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def company_account_for(*, issuer: str, subject: str, claims: dict[str, Any]) -> CompanyAccount:
    """Which batchweb account the provider's account ISSUER + SUBJECT is: the one its first
    sign-in was linked to; else the one account whose address is the claimed one, when the
    provider says it is verified and the account's address is trusted (`email_trusted`); else
    none (the sign-in gets an account of its own). Reads only; SignInRefused when two trusted
    accounts have the address, or when the account with it is another subject's already."""
    identity = (
        CompanyIdentity.objects.select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    if identity is not None:
        return CompanyAccount(identity.user, "subject")
    email = str(claims.get("email") or "").strip()
    if not email or not email_verified_claim(claims):
        return CompanyAccount(None, "new")
    from django.contrib.auth import get_user_model

    same = get_user_model().objects.filter(
        email__iexact=email, account_email__source__in=AccountEmail.TRUSTED
    )
    trusted = [user for user in same.select_related("account_email") if email_trusted(user=user)]
    if not trusted:
        if get_user_model().objects.filter(email__iexact=email).exists():
            log.warning(
                "Company sign-in of a new subject: an account has its address, not verified, "
                "so it gets an account of its own (an admin may vouch for the address)."
            )
        return CompanyAccount(None, "new")
    if len(trusted) > 1:
        raise SignInRefused(
            f"Two batchweb accounts have the address {email}: ask your batchweb admin to "
            "remove one.",
            detail="two accounts with this verified email",
            username=email,
        )
    user = trusted[0]
    if CompanyIdentity.objects.filter(user=user, issuer=issuer).exists():
        raise SignInRefused(
            f"The batchweb account with the address {email} belongs to another "
            f"{provider_name()} account. Ask your batchweb admin.",
            detail=f"account {user.get_username()} is linked to another subject",
            username=user.get_username(),
        )
    return CompanyAccount(user, "address")


# --- Authentication backends ------------------------------------------------------------------


class ThrottleBackend(AxesStandaloneBackend):
    """django-axes' gate (first in AUTHENTICATION_BACKENDS): refuses an account or address with
    too many recent failures, and marks the request so its audit entry says why."""

    def authenticate(
        self,
        request: HttpRequest,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            return super().authenticate(request, username, password, **kwargs)
        except AxesBackendPermissionDenied:
            request.bw_locked_out = True
            raise


class KeptUsers:
    """The person of a session, kept in the cache for the cache generation (which every change
    to people raises: a new password, deactivation, groups) instead of read on every request."""

    def get_user(self, user_id: Any) -> Any:
        current = generation.current()
        key = f"user:{current}:{type(self).__name__}:{user_id}"
        user = caches["pages"].get(key)
        if user is None:
            user = super().get_user(user_id)
            if user is None:
                return None
            caches["pages"].set(key, user)
        elif hasattr(self, "user_can_authenticate") and not self.user_can_authenticate(user):
            return None
        generation.keep(user, current)  # the rest of the request reads it from the person
        return user


class PasswordBackend(KeptUsers, ModelBackend):
    """Django's username and password, for everyone or (BATCHWEB_PASSWORD_SIGNIN=false) only
    for superusers. A session made with a password ends when passwords are switched off."""

    def user_can_authenticate(self, user: Any) -> bool:
        if not super().user_can_authenticate(user):
            return False
        return settings.BATCHWEB_PASSWORD_SIGNIN or bool(user.is_superuser)

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        """Django's answer (two queries a request: the person's and their groups'), kept in the
        cache for the cache generation, which a change to people, groups or permissions
        raises (batches/models/generation.py)."""
        if obj is not None or not user_obj.is_active or user_obj.is_anonymous:
            return super().get_all_permissions(user_obj, obj)
        if not hasattr(user_obj, "_perm_cache"):
            key = f"perms:{generation.as_first_read(user_obj)}:{user_obj.pk}"
            found = caches["pages"].get(key)
            if found is None:
                found = super().get_all_permissions(user_obj)
                caches["pages"].set(key, found)
            user_obj._perm_cache = found
        return user_obj._perm_cache


class CompanyBackend(KeptUsers, OIDCAuthenticationBackend):
    """mozilla-django-oidc's code flow with the endpoints from the discovery document, the ID
    token's issuer and audience checked too (the library checks signature, expiry and nonce),
    and the person's groups mapped at each sign-in. Called by the callback view, not by
    `django.contrib.auth.authenticate`: its keyword-only arguments keep it out of password
    sign-ins."""

    def __init__(self) -> None:
        # The library reads the endpoints from settings here; ours come from the provider,
        # when a sign-in needs them (this object is also made for every signed-in request).
        from django.contrib.auth import get_user_model

        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.id_token = ""
        self.roles: list[str] = []  # the mapped groups, once signed in

    def get_user(self, user_id: Any) -> Any:
        return ModelBackend.get_user(self, user_id)  # refuses inactive accounts

    def authenticate(self, request: HttpRequest, *, nonce: str, code_verifier: str | None) -> Any:  # type: ignore[override]
        document = provider_metadata()
        self.OIDC_OP_TOKEN_ENDPOINT = document["token_endpoint"]
        self.OIDC_OP_JWKS_ENDPOINT = document["jwks_uri"]
        self.OIDC_OP_USER_ENDPOINT = document.get("userinfo_endpoint", "")
        name = provider_name()
        try:
            user = super().authenticate(request, nonce=nonce, code_verifier=code_verifier)
        except requests.RequestException as error:
            status = getattr(error.response, "status_code", None)
            why = f"HTTP {status}" if status else type(error).__name__
            raise SignInRefused(
                f"{name} did not complete the sign-in. Try again; if it goes on, tell your "
                "batchweb admin.",
                detail=f"a request to the provider failed ({why})",
            ) from error
        except (SuspiciousOperation, jwt.PyJWTError) as error:
            raise SignInRefused(
                f"The answer from {name} could not be verified, so nobody was signed in. Try "
                "again; if it goes on, tell your batchweb admin.",
                detail=f"ID token refused: {_why(error)}",
            ) from error
        if user is None:
            raise SignInRefused(
                f"{name} did not complete the sign-in. Try again.", detail="no ID token"
            )
        return user

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        payload = super().verify_token(token, **kwargs)  # signature, algorithm, expiry, nonce
        issuer = settings.OIDC_ISSUER_URL.rstrip("/")
        if str(payload.get("iss", "")).rstrip("/") != issuer:
            raise SuspiciousOperation(f"issued by {payload.get('iss')!r}, not {issuer!r}")
        audience = payload.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation(f"wrong audience {audience!r}")
        if len(audiences) > 1 and payload.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SuspiciousOperation(f"wrong authorized party {payload.get('azp')!r}")
        return payload

    def store_tokens(self, access_token: str, id_token: str) -> None:
        # Kept for the sign-out (id_token_hint); the view puts it in the new session.
        self.id_token = id_token

    def get_userinfo(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """The ID token's claims, completed by the userinfo endpoint when there is one (whose
        answer must be about the same subject: OpenID Connect Core 5.3.2)."""
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            claims.update(super().get_userinfo(access_token, id_token, payload))
            if str(claims.get("sub", "")) != str(payload.get("sub", "")):
                raise SignInRefused(
                    f"The answer from {provider_name()} could not be verified, so nobody was "
                    "signed in. Try again; if it goes on, tell your batchweb admin.",
                    detail="userinfo is about another subject than the ID token",
                )
            claims["iss"], claims["sub"] = payload.get("iss"), payload.get("sub")
        return claims

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        """The library's lookup, answered by `company_account_for` (never by address alone)."""
        issuer, subject = _subject_of(claims)
        found = company_account_for(issuer=issuer, subject=subject, claims=claims)
        users = self.UserModel.objects
        return users.filter(pk=found.user.pk) if found.user is not None else users.none()

    def describe_user_by_claims(self, claims: dict[str, Any]) -> str:
        return f"subject {claims.get('sub')}"

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        claims = self.get_userinfo(access_token, id_token, payload)
        name = provider_name()
        email = str(claims.get("email") or "").strip()
        who = email or str(claims.get("preferred_username") or claims.get("sub") or "")
        if not email:
            raise SignInRefused(
                f"{name} did not send your email address, which batchweb needs to know who you "
                "are. Ask your admin to release the email claim to batchweb.",
                detail="no email claim",
                username=who,
            )
        if claims.get("email_verified") is False:
            raise SignInRefused(
                f"{name} says your email address is not verified yet. Verify it there first.",
                detail="email not verified",
                username=who,
            )
        issuer, subject = _subject_of(claims)
        user = company_account_for(issuer=issuer, subject=subject, claims=claims).user
        provider_groups = _groups_claim(claims)
        if provider_groups is None:
            if user is not None:
                roles_apply(user=user, provider_groups=[])  # no claim: no roles
            claim = settings.OIDC_GROUPS_CLAIM
            raise SignInRefused(
                f"{name} did not say which groups you are in (no “{claim}” claim), so batchweb "
                "cannot give you a role. Ask your admin to add the groups claim for batchweb.",
                detail=f"no {claim!r} claim: no roles",
                username=user.get_username() if user else email,
            )
        if user is not None and user.is_superuser and not settings.OIDC_SUPERUSERS:
            # A superuser holds every key in batchweb: that takes their password, unless the
            # admins chose otherwise.
            raise SignInRefused(
                f"{email} is a batchweb superuser's address: superusers sign in with their "
                "password (an admin can set OIDC_SUPERUSERS=true to let the provider sign them "
                "in).",
                detail="superuser: password sign-in only",
                username=user.get_username(),
            )
        if user is not None and not user.is_active:
            raise SignInRefused(
                "Your batchweb account is switched off. Ask your batchweb admin.",
                detail="account inactive",
                username=user.get_username(),
            )
        user = self._link(user, issuer=issuer, subject=subject, claims=claims)
        self.update_user(user, claims)
        self.roles = roles_apply(user=user, provider_groups=provider_groups)
        return user

    def _link(self, user: Any, *, issuer: str, subject: str, claims: dict[str, Any]) -> Any:
        """Make the account when there is none, and record the subject it is from now on. Two
        first sign-ins of one subject at once: the second finds the first's account."""
        try:
            with transaction.atomic():
                if user is None:
                    user = self.create_user(claims)
                CompanyIdentity.objects.get_or_create(
                    issuer=issuer, subject=subject, defaults={"user": user}
                )
        except IntegrityError:
            found = company_account_for(issuer=issuer, subject=subject, claims=claims).user
            if found is None:
                raise
            return found
        email = str(claims.get("email") or "").strip()
        if (
            email_verified_claim(claims)
            and email.lower() == (user.email or "").strip().lower()
            and not email_trusted(user=user)
        ):
            # The provider vouches for the address this account already has.
            email_set(user=user, address=user.email, source=AccountEmail.Source.PROVIDER)
        return user

    def create_user(self, claims: dict[str, Any]) -> Any:
        """An account of the sign-in's own: named after its preferred username, else its
        address, else either with a number (never someone else's name)."""
        email = str(claims["email"]).strip()
        wanted = str(claims.get("preferred_username") or "").strip()[:150]
        users = self.UserModel.objects
        candidates = [c for c in (wanted, email[:150]) if c]
        free = (c for c in candidates if not users.filter(username__iexact=c).exists())
        username = next(free, "")
        if not username:
            base = candidates[0][:140]
            number = 2
            while users.filter(username__iexact=f"{base}-{number}").exists():
                number += 1
            username = f"{base}-{number}"
        user = self.UserModel(username=username)
        user.set_unusable_password()
        user.save()
        source = AccountEmail.Source
        trust = source.PROVIDER if email_verified_claim(claims) else source.UNVERIFIED
        email_set(user=user, address=email, source=trust)
        return user

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        first = str(claims.get("given_name") or "")[:150]
        last = str(claims.get("family_name") or "")[:150]
        if (first or last) and (user.first_name, user.last_name) != (first, last):
            user.first_name, user.last_name = first, last
            user.save(update_fields=["first_name", "last_name"])
        return user


def _subject_of(claims: dict[str, Any]) -> tuple[str, str]:
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


def _why(error: Exception) -> str:
    if isinstance(error, jwt.InvalidSignatureError) or "verification failed" in str(error):
        return "bad signature"
    if isinstance(error, jwt.ExpiredSignatureError):
        return "expired"
    return str(error)[:200] or type(error).__name__


# --- The throttle's helpers -------------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    """The address sign-ins are counted by (AXES_CLIENT_IP_CALLABLE) and audited from. Behind a
    proxy (DJANGO_BEHIND_PROXY=true) the last X-Forwarded-For entry, the one our proxy added;
    earlier entries are the client's to invent."""
    if settings.SECURE_PROXY_SSL_HEADER:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()[:64]
    return str(request.META.get("REMOTE_ADDR") or "")[:64]


def locked_until(request: HttpRequest, username: str | None) -> dt.datetime | None:
    """When the lockout that refuses this account or address ends, or None if none does."""
    credentials = {settings.AXES_USERNAME_FORM_FIELD: username} if username else None
    cool_off = get_cool_off(request)
    if cool_off is None:
        return None
    limit = get_failure_limit(request, credentials)
    ends = []
    for attempts in AxesDatabaseHandler().get_user_attempts(request, credentials):
        seen = attempts.aggregate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
        if (seen["failures"] or 0) >= limit and seen["last"]:
            ends.append(seen["last"] + cool_off)
    return max(ends) if ends else None
