from __future__ import annotations

import os
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.db import DatabaseError


class BatchesConfig(AppConfig):
    name = "batches"
    verbose_name = "Batches"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes import signals as axes_signals
        from django.contrib.auth import signals as auth_signals
        from django.db.models.signals import post_delete, post_migrate

        from . import admin_audit  # noqa: F401 - people and groups in the admin site, audited
        from .cache import generations
        from .middleware import session_started
        from .models import Batch
        from .roles import ensure_roles
        from .services import audit, signin, spend

        post_migrate.connect(ensure_roles, sender=self)
        post_migrate.connect(ensure_default_connection, sender=self)
        generations.watch_writes()  # cached pages: every write raises the generation
        post_migrate.connect(generations.migrated, sender=self, dispatch_uid="bw-migrated")
        post_delete.connect(spend.batch_deleted, sender=Batch, dispatch_uid="bw-spend-deleted")
        auth_signals.user_logged_in.connect(audit.audit_sign_in, dispatch_uid="bw-sign-in")
        auth_signals.user_logged_out.connect(audit.audit_sign_out, dispatch_uid="bw-sign-out")
        auth_signals.user_login_failed.connect(
            audit.audit_sign_in_failed, dispatch_uid="bw-sign-in-failed"
        )
        axes_signals.user_locked_out.connect(audit.audit_locked_out, dispatch_uid="bw-locked-out")
        auth_signals.user_logged_in.connect(session_started, dispatch_uid="bw-session-seen")
        checks.register(signin.check_sign_in_settings, checks.Tags.security)
        checks.register(check_openai_settings, checks.Tags.compatibility)
        checks.register(check_connection_keys, checks.Tags.compatibility)
        checks.register(check_plain_http_sign_in, checks.Tags.security)


def ensure_default_connection(**kwargs) -> None:
    """After every migrate (and flush of a test database): the connection the OPENAI_*
    settings describe exists (migration 0004 makes it; this puts it back if it was removed)."""
    from .models import default_connection

    default_connection()


def check_openai_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Warn at start-up about upstream settings that would make every call fail."""
    messages: list[checks.CheckMessage] = []
    if not settings.OPENAI_API_KEY and _default_connection_in_use():
        messages.append(
            checks.Warning(
                "OPENAI_API_KEY is not set: calls to the OpenAI API will be refused.",
                hint="Set OPENAI_API_KEY in the environment or in .env, or run `make run` "
                "without it to try batchweb against its built-in simulator. If you use only "
                "connections of your own, disable the connection configured by the environment "
                "in the admin site.",
                id="batches.W001",
            )
        )
    base = settings.OPENAI_BASE_URL
    if not base.startswith(("http://", "https://")):
        messages.append(
            checks.Error(
                f"OPENAI_BASE_URL must start with http:// or https:// (it is {base!r}).",
                hint="For example https://api.openai.com/v1",
                id="batches.E001",
            )
        )
    elif base.startswith("http://") and not _is_loopback(base):
        messages.append(
            checks.Warning(
                "OPENAI_BASE_URL uses plain http to a remote host: "
                "the API key would travel unencrypted.",
                hint="Use https:// for any server that is not on this machine.",
                id="batches.W002",
            )
        )
    return messages


def check_plain_http_sign_in(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Secure cookies without HTTPS make every sign-in fail with a refused form: say so."""
    if settings.DEBUG or not settings.CSRF_COOKIE_SECURE:
        return []
    if settings.SECURE_SSL_REDIRECT or settings.SECURE_PROXY_SSL_HEADER is not None:
        return []
    return [
        checks.Warning(
            "Cookies are sent over HTTPS only (DJANGO_SECURE_COOKIES, on when DJANGO_DEBUG is "
            "off), but batchweb neither redirects to HTTPS (DJANGO_HTTPS) nor trusts a proxy "
            "that handles it (DJANGO_BEHIND_PROXY): over plain http:// nobody can sign in.",
            hint="Serve batchweb over HTTPS and set DJANGO_HTTPS=true (and DJANGO_BEHIND_PROXY="
            "true behind a TLS-terminating proxy), or, for a trial without HTTPS, set "
            "DJANGO_SECURE_COOKIES=false.",
            id="batches.W010",
        )
    ]


def check_connection_keys(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Errors for keys stored in the database that cannot be read (no encryption key, or not
    the one they were saved with), and a warning for an enabled connection whose key variable
    is unset. Never shows a key."""
    rows = _connections()
    if rows is None:
        return []
    messages: list[checks.CheckMessage] = []
    stored = [c for c in rows if c.key_encrypted and not c.key_env and not c.from_settings]
    encryption_keys = [k for k in settings.BATCHWEB_ENCRYPTION_KEY.split(",") if k.strip()]
    if stored and not encryption_keys:
        messages.append(
            checks.Error(
                f"{_names(stored, first=True)} {_verb(stored)} an API key stored encrypted, but "
                "BATCHWEB_ENCRYPTION_KEY is not set: keys stored in the database cannot be read, "
                "so these connections cannot sync or take batches.",
                hint="Set BATCHWEB_ENCRYPTION_KEY (environment or .env) to the key they were "
                "saved with, for the web and worker processes. If that key is lost, set a new "
                "one and enter each connection's API key again in the admin site.",
                id="batches.E002",
            )
        )
    elif stored:
        from . import keystore

        unreadable = [c for c in stored if not keystore.can_decrypt(c.key_encrypted)]
        if unreadable:
            messages.append(
                checks.Error(
                    f"The stored API key of {_names(unreadable)} cannot be decrypted: "
                    "BATCHWEB_ENCRYPTION_KEY is not the key it was saved with.",
                    hint="Put the old key back; to change keys, set "
                    "BATCHWEB_ENCRYPTION_KEY=new,old (the first encrypts, every one decrypts) "
                    "and save each connection's key again. If the old key is lost, enter the "
                    "connections' API keys again in the admin site.",
                    id="batches.E003",
                )
            )
    unset = [
        c
        for c in rows
        if c.enabled and c.key_env and not c.from_settings and not os.environ.get(c.key_env)
    ]
    for connection in unset:
        messages.append(
            checks.Warning(
                f"Connection “{connection.name}” reads its API key from the environment "
                f"variable {connection.key_env}, which is not set: it cannot sync or take "
                "batches.",
                hint=f"Set {connection.key_env} for the web and worker processes, store the key "
                "on the connection in the admin site, or disable the connection.",
                id="batches.W003",
            )
        )
    return messages


def _connections() -> list[Any] | None:
    """Every connection, or None when the database cannot be read: before `migrate` (no table
    yet), or with the database down (Django's own checks and commands say so)."""
    from .models import Connection

    try:
        return list(
            Connection.objects.order_by("name").only(
                "name", "slug", "from_settings", "enabled", "key_env", "key_encrypted"
            )
        )
    except DatabaseError:
        return None


def _default_connection_in_use() -> bool:
    """Whether the connection configured by the environment (OPENAI_*) is meant to be used:
    it exists, is enabled, and has batches or is the only connection. True when the database
    cannot be read, as before connections existed."""
    from .models import DEFAULT_SLUG

    rows = _connections()
    if rows is None:
        return True
    default = next((c for c in rows if c.slug == DEFAULT_SLUG and c.from_settings), None)
    if default is None or not default.enabled:
        return False
    if len(rows) == 1:
        return True
    try:
        return default.batches.exists()
    except DatabaseError:
        return True


def _names(rows: list[Any], *, first: bool = False) -> str:
    """“A”, “B” and “C”, after the word connection(s), capitalised to start a sentence."""
    quoted = [f"“{c.name}”" for c in rows]
    word = "Connection" if first else "connection"
    if len(quoted) == 1:
        return f"{word} {quoted[0]}"
    return f"{word}s " + ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _verb(rows: list[Any]) -> str:
    return "has" if len(rows) == 1 else "have"


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")
