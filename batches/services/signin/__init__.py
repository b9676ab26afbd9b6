"""Signing in: company sign-in (OpenID Connect, through mozilla-django-oidc), the password
switch, and what guards both (django-axes' throttle, the client's address). One module each:

- `backends.py`: which account a sign-in is (`company_account_for`), and the authentication
  backends (`PasswordBackend`, `CompanyBackend`, the person kept in the cache by `KeptUsers`).
- `oidc.py`: the provider: its settings, discovery document, claims, the groups they give
  (`roles_apply`), and the sign-out URL.
- `throttle.py`: django-axes' gate (`ThrottleBackend`), when a lockout ends, the client address.
- `checks.py`: the start-up checks of these settings.

The package re-exports their names: settings (AUTHENTICATION_BACKENDS, AXES_CLIENT_IP_CALLABLE)
and every stored session name the backends as `batches.services.signin.<name>`, and callers
import from here.
"""

from .backends import (
    COMPANY_BACKEND,
    CompanyAccount,
    CompanyBackend,
    KeptUsers,
    PasswordBackend,
    company_account_for,
)
from .checks import ROLES, check_sign_in_settings
from .oidc import (
    ProviderUnavailable,
    SignInRefused,
    email_verified_claim,
    forget_provider_metadata,
    groups_claim,
    oidc_enabled,
    parse_role_map,
    provider_metadata,
    provider_name,
    roles_apply,
    sign_out_url,
    subject_of,
)
from .throttle import ThrottleBackend, client_address, locked_until

__all__ = [
    "COMPANY_BACKEND",
    "ROLES",
    "CompanyAccount",
    "CompanyBackend",
    "KeptUsers",
    "PasswordBackend",
    "ProviderUnavailable",
    "SignInRefused",
    "ThrottleBackend",
    "check_sign_in_settings",
    "client_address",
    "company_account_for",
    "email_verified_claim",
    "forget_provider_metadata",
    "groups_claim",
    "locked_until",
    "oidc_enabled",
    "parse_role_map",
    "provider_metadata",
    "provider_name",
    "roles_apply",
    "sign_out_url",
    "subject_of",
]
