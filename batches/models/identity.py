"""Who a person is: the company provider's account a batchweb account is linked to, and where
the account's email address came from (the rules that use them are in
services/signin/backends.py and services/addresses.py).

An address anyone could type decides nothing: a company sign-in is linked by the provider's
subject (`CompanyIdentity`), and an address links an account only when an admin, the
provider or a link mailed to it vouched for it (`AccountEmail.source`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class CompanyIdentity(models.Model):
    """The provider's account (issuer + subject, what its ID tokens sign) a batchweb account is,
    recorded at its first company sign-in: later sign-ins are found by it, never by address."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="company_identities"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "company identity"
        verbose_name_plural = "company identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="company_identity_once")
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class AccountEmail(models.Model):
    """Where the address on an account (`User.email`) came from, and the address the person
    asked for on their profile that is not verified yet.

    `source` speaks of `address` only: when `User.email` was changed some other way (a shell,
    a script), the two differ and the address counts as unverified. An account without a row
    has an unverified address (every address from before issue 19: still used for
    notifications, never for linking a sign-in)."""

    class Source(models.TextChoices):
        ADMIN = "admin", "set by an admin"
        PROVIDER = "provider", "given by the company provider"
        VERIFIED = "verified", "verified with a mailed link"
        UNVERIFIED = "unverified", "not verified"

    TRUSTED = frozenset({Source.ADMIN, Source.PROVIDER, Source.VERIFIED})

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="account_email",
    )
    address = models.EmailField(max_length=254, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.UNVERIFIED)
    changed_at = models.DateTimeField(default=timezone.now)
    # Typed on the profile, waiting for its link to be opened: used for nothing until then.
    pending = models.EmailField(max_length=254, blank=True)
    pending_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "account email address"

    def __str__(self) -> str:
        return f"{self.address or '(none)'}: {self.get_source_display()}"

    def vouches_for(self, user: Any) -> bool:
        """True when the address now on USER is the one an admin, the provider or a mailed
        link vouched for."""
        current = (user.email or "").strip().lower()
        return bool(current) and self.source in self.TRUSTED and self.address.lower() == current
