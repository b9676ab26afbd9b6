"""Which account a sign-in is, and the authentication backends that sign people in: the
password backend and the company (OpenID Connect) one, both keeping the person of a session in
the cache (`KeptUsers`).

Which account a company sign-in is, is decided by one function, `company_account_for`: the
account linked to the provider's subject (`iss` + `sub`, what the ID token signs), recorded at
the first sign-in (`CompanyIdentity`). A sign-in with no link yet is linked to an existing
account by email address only when the provider says the address is verified *and* the
account's address was set by an admin, by the provider, or verified with a mailed link
(services/addresses.py, `email_trusted`); otherwise it gets an account of its own. An address
someone typed on their profile never decides anything, and never refuses anyone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import jwt
import requests
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.cache import caches
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from ...cache import generations, keys
from ...models import AccountEmail, CompanyIdentity
from ..addresses import email_set, email_trusted
from .oidc import (
    SignInRefused,
    email_verified_claim,
    groups_claim,
    provider_metadata,
    provider_name,
    roles_apply,
    subject_of,
)

log = logging.getLogger(__name__)

# The dotted path AUTHENTICATION_BACKENDS names and every company session stores: the package
# re-exports the class, so this path stays valid wherever the class lives.
COMPANY_BACKEND = "batches.services.signin.CompanyBackend"


# --- Which account a sign-in is -------------------------------------------------------------


@dataclass(frozen=True)
class CompanyAccount:
    """The answer of `company_account_for`: the account (None: one is to be made) and what
    linked it ("subject": an earlier sign-in; "address": a verified address on both sides)."""

    user: Any
    linked_by: Literal["subject", "address", "new"]


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


class KeptUsers:
    """The person of a session, kept for everyone's cache generation (which every change to
    people raises: a new password, deactivation, groups) instead of read on every request,
    whichever backend signed them in. In the "people" cache, per process whatever CACHE_URL
    says: an account holds its password hash, which no shared cache is given. A person the
    backend may not sign in (`user_can_authenticate`: deactivated; password sign-ins switched
    off) gets no session, from the cache or not."""

    def get_user(self, user_id: Any) -> Any:
        current = generations.snapshot()
        key = keys.user_key(current, type(self).__name__, user_id)
        user = caches[keys.PEOPLE].get(key)
        if user is None:
            user = super().get_user(user_id)
            if user is None:
                return None
            caches[keys.PEOPLE].set(key, user)
        if not self.user_can_authenticate(user):
            return None
        generations.keep(user, current)  # the rest of the request reads it from the person
        return user

    def user_can_authenticate(self, user: Any) -> bool:
        return ModelBackend.user_can_authenticate(self, user)  # type: ignore[arg-type]


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
        raises (batches/cache/generations.py)."""
        if obj is not None or not user_obj.is_active or user_obj.is_anonymous:
            return super().get_all_permissions(user_obj, obj)
        if not hasattr(user_obj, "_perm_cache"):
            key = keys.perms_key(user_obj)
            found = caches[keys.PEOPLE].get(key)
            if found is None:
                found = super().get_all_permissions(user_obj)
                caches[keys.PEOPLE].set(key, found)
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
        issuer, subject = subject_of(claims)
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
        issuer, subject = subject_of(claims)
        user = company_account_for(issuer=issuer, subject=subject, claims=claims).user
        provider_groups = groups_claim(claims)
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


def _why(error: Exception) -> str:
    if isinstance(error, jwt.InvalidSignatureError) or "verification failed" in str(error):
        return "bad signature"
    if isinstance(error, jwt.ExpiredSignatureError):
        return "expired"
    return str(error)[:200] or type(error).__name__
