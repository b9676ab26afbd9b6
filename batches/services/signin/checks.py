"""Start-up checks (registered in apps.py) of the sign-in settings: company sign-in settings
that cannot work, and a configuration in which only superusers can sign in."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from ... import roles
from .oidc import oidc_enabled, parse_role_map

ROLES = (roles.VIEWERS, roles.SUBMITTERS, roles.OPERATORS, roles.ADMINS)


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
