"""Connections: the upstream servers batchweb talks to (OpenAI projects, Azure, compatible
servers), each with its own key, dialect, limits and the groups that may use it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from .. import keystore
from ..cache import keys
from ..jsonl_check import ENDPOINTS
from ..roles import ADMINS
from .generation import GenerationQuerySet

DEFAULT_SLUG = "default"

# What the providers allow; a connection may set its own (see batch-api.md and
# providers-webhooks-prices.md).
OPENAI_MAX_REQUESTS = 50_000
AZURE_MAX_REQUESTS = 100_000
MAX_FILE_BYTES = 209_715_200
OPENAI_EXPIRY_HOURS = (1, 720)
AZURE_EXPIRY_HOURS = (14 * 24, 30 * 24)
# Slugs that would read as a page of their own in /connections/<slug>/.
RESERVED_SLUGS = frozenset({"new", "add", "test"})


class Dialect(models.TextChoices):
    OPENAI = "openai", "OpenAI (or a compatible server)"
    AZURE = "azure", "Azure OpenAI, v1 API (/openai/v1)"
    AZURE_LEGACY = "azure-legacy", "Azure OpenAI, dated API (?api-version=)"


class AuthStyle(models.TextChoices):
    BEARER = "bearer", "Authorization: Bearer <key>"
    API_KEY = "api-key", "api-key: <key> (Azure)"


class ConnectionKeyError(Exception):
    """A connection's key cannot be had; the message says why and what to change."""


class ConnectionManager(models.Manager.from_queryset(GenerationQuerySet)):
    """Who sees what, answered here and nowhere else (docs/architecture.md, "Who sees what"):
    `visible_to(user)` runs the one rule (`_access_now`) and keeps its answer;
    `BatchQuerySet.visible_to`, `BatchTally.objects.visible_to`, `EventQuerySet.visible_to`,
    the lookups by slug and id (views/lookups.py) and the API's connection header all read
    that answer."""

    def visible_to(self, user: Any) -> Access:
        """What `user` may see, in one query, kept on the user object for the rest of the
        request (the list page, its filters and the freshness line all ask) and in the
        "people" cache for the cache generation. Nothing for someone not signed in."""
        cached = getattr(user, "_batchweb_access", None)
        if cached is not None:
            return cached
        if not getattr(user, "is_authenticated", False):
            return Access((), False)
        # Kept for the cache generation too: a change to connections, groups or people raises it.
        key = keys.access_key(user)
        access = caches[keys.PEOPLE].get(key)
        if access is None:
            access = _access_now(user)
            caches[keys.PEOPLE].set(key, access)
        user._batchweb_access = access
        return access

    def listed_to(self, user: Any, *, usable: bool = False) -> list[Connection]:
        """The connections `visible_to(user)` holds, less the dormant default one, for pages
        that list connections (menus, filters, the freshness line); with `usable`, only those
        that take new batches (enabled, with a key). Name order."""
        rows = getattr(user, "_batchweb_connections", None)
        if rows is None:  # kept for the request: the page and the freshness line both ask
            rows = [c for c in self.visible_to(user) if not _dormant(c, user)]
            if getattr(user, "is_authenticated", False):
                user._batchweb_connections = rows
        if usable:
            rows = [c for c in rows if c.enabled and c.has_key()]
        return rows


class Connection(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(
        max_length=50, unique=True, help_text="Short name used in URLs and commands."
    )
    from_settings = models.BooleanField(
        "configured by the environment",
        default=False,
        help_text="Base URL, key, organisation and project come from OPENAI_BASE_URL, "
        "OPENAI_API_KEY, OPENAI_ORG_ID and OPENAI_PROJECT_ID (the installation's first "
        "connection). The fields below are then ignored.",
    )
    base_url = models.CharField(
        "base URL",
        max_length=500,
        blank=True,
        help_text="OpenAI: https://api.openai.com/v1 · Azure v1: "
        "https://RESOURCE.openai.azure.com/openai/v1 · Azure dated API: "
        "https://RESOURCE.openai.azure.com",
    )
    dialect = models.CharField(max_length=16, choices=Dialect.choices, default=Dialect.OPENAI)
    auth_style = models.CharField(
        "send the key as", max_length=16, choices=AuthStyle.choices, default=AuthStyle.BEARER
    )
    api_version = models.CharField(
        "API version",
        max_length=40,
        blank=True,
        default="2024-10-21",
        help_text="Only for Azure's dated API.",
    )
    organization = models.CharField(
        max_length=100, blank=True, help_text="Sent as OpenAI-Organization."
    )
    project = models.CharField(max_length=100, blank=True, help_text="Sent as OpenAI-Project.")
    key_env = models.CharField(
        "key from environment variable",
        max_length=100,
        blank=True,
        help_text="The name of an environment variable that holds the key, e.g. "
        "OPENAI_KEY_RESEARCH. Leave empty to store the key (encrypted) instead.",
    )
    key_encrypted = models.TextField(blank=True, editable=False)
    key_last4 = models.CharField(max_length=4, blank=True, editable=False)
    # The signing secret of OpenAI's webhooks for this connection (whsec_…), stored like the key.
    # The connection configured by the environment reads OPENAI_WEBHOOK_SECRET when unset.
    webhook_secret_encrypted = models.TextField(blank=True, editable=False)
    webhook_secret_last4 = models.CharField(max_length=4, blank=True, editable=False)

    max_requests_per_file = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Empty: the provider's limit (50,000 on OpenAI, 100,000 on Azure).",
    )
    max_file_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="Empty: 200 MB (209,715,200 bytes)."
    )
    allowed_endpoints = models.JSONField(
        default=list, blank=True, help_text='A list such as ["/v1/chat/completions"]; empty: all.'
    )
    output_expiry_min_hours = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: 1 hour on OpenAI, 14 days on Azure."
    )
    output_expiry_max_hours = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: 30 days."
    )
    deployments = models.JSONField(
        default=dict,
        blank=True,
        help_text='Azure: deployment name → model, e.g. {"gpt4o-batch": "gpt-4o"}. When set, '
        "input files may only name these deployments.",
    )
    enabled = models.BooleanField(
        default=True, help_text="A disabled connection is not synced and takes no new batches."
    )
    groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="connections",
        help_text="Only members of these groups see and use this connection. None: everyone, "
        "unless it had groups before: then Admins only, until it is opened to everyone.",
    )
    # Set whenever a group is added (the m2m receiver below) and kept when the last one goes,
    # by removal or by deleting the group: a restriction fails closed. Only "open to everyone"
    # (the admin form) clears it. See `_access_now` for what it means.
    restricted = models.BooleanField(
        default=False,
        editable=False,
        help_text="Has been restricted to groups: with none left, only Admins see it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConnectionManager()

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    # --- Where and how to talk -------------------------------------------------------------

    def effective_base_url(self) -> str:
        return settings.OPENAI_BASE_URL if self.from_settings else self.base_url.rstrip("/")

    def effective_organization(self) -> str:
        return settings.OPENAI_ORG_ID if self.from_settings else self.organization

    def effective_project(self) -> str:
        return settings.OPENAI_PROJECT_ID if self.from_settings else self.project

    def key_source(self) -> str:
        """Where the key comes from, in words that never include the key."""
        if self.from_settings:
            return "environment variable OPENAI_API_KEY"
        if self.key_env:
            return f"environment variable {self.key_env}"
        if self.key_encrypted:
            return f"stored, encrypted (ends in …{self.key_last4})"
        return "no key"

    def api_key(self) -> str:
        """The key, for the client only. Raises ConnectionKeyError with a reason."""
        if self.from_settings or self.key_env:
            name = "OPENAI_API_KEY" if self.from_settings else self.key_env
            value = settings.OPENAI_API_KEY if self.from_settings else os.environ.get(name, "")
            if not value:
                raise ConnectionKeyError(
                    f"The key of connection “{self.name}” is read from the environment "
                    f"variable {name}, which is not set."
                )
            return value
        if not self.key_encrypted:
            raise ConnectionKeyError(f"Connection “{self.name}” has no key.")
        try:
            return keystore.decrypt(self.key_encrypted)
        except keystore.KeystoreError as error:
            raise ConnectionKeyError(f"Connection “{self.name}”: {error}") from None

    def has_key(self) -> bool:
        try:
            self.api_key()
        except ConnectionKeyError:
            return False
        return True

    def set_key(self, plain: str) -> None:
        """Store a key encrypted; only its last four characters stay readable."""
        plain = plain.strip()
        self.key_encrypted = keystore.encrypt(plain)
        self.key_last4 = plain[-4:]
        self.key_env = ""

    def set_webhook_secret(self, plain: str) -> None:
        plain = plain.strip()
        self.webhook_secret_encrypted = keystore.encrypt(plain) if plain else ""
        self.webhook_secret_last4 = plain[-4:] if plain else ""

    def webhook_secret(self) -> str:
        """The signing secret of webhooks for this connection ("" when none is set). Raises
        ConnectionKeyError when a stored one cannot be decrypted."""
        if self.webhook_secret_encrypted:
            try:
                return keystore.decrypt(self.webhook_secret_encrypted)
            except keystore.KeystoreError as error:
                raise ConnectionKeyError(f"Connection “{self.name}”: {error}") from None
        if self.from_settings:
            return settings.OPENAI_WEBHOOK_SECRET
        return ""

    def webhook_secret_source(self) -> str:
        """Where the webhook secret comes from, in words that show its last 4 characters at
        most."""
        if self.webhook_secret_encrypted:
            return f"stored, encrypted (ends in …{self.webhook_secret_last4})"
        if self.from_settings and settings.OPENAI_WEBHOOK_SECRET:
            return (
                "environment variable OPENAI_WEBHOOK_SECRET "
                f"(ends in …{settings.OPENAI_WEBHOOK_SECRET[-4:]})"
            )
        return "none set"

    # --- Limits ----------------------------------------------------------------------------

    @property
    def is_azure(self) -> bool:
        return self.dialect in (Dialect.AZURE, Dialect.AZURE_LEGACY)

    def request_limit(self) -> int:
        if self.max_requests_per_file:
            return self.max_requests_per_file
        return AZURE_MAX_REQUESTS if self.is_azure else OPENAI_MAX_REQUESTS

    def byte_limit(self) -> int:
        return self.max_file_bytes or MAX_FILE_BYTES

    def endpoints(self) -> tuple[str, ...]:
        allowed = [e for e in self.allowed_endpoints or [] if e in ENDPOINTS]
        return tuple(allowed) if allowed else ENDPOINTS

    def expiry_hours(self) -> tuple[int, int]:
        low, high = AZURE_EXPIRY_HOURS if self.is_azure else OPENAI_EXPIRY_HOURS
        return (self.output_expiry_min_hours or low, self.output_expiry_max_hours or high)

    def deployment_names(self) -> list[str] | None:
        """The deployments input files may name, or None when any model is allowed."""
        if self.is_azure and self.deployments:
            return sorted(self.deployments)
        return None

    def model_for(self, name: str) -> str:
        """The model behind a deployment name (Azure); other names are models already."""
        return str((self.deployments or {}).get(name) or name)

    # --- Access ----------------------------------------------------------------------------

    def restricted_to_no_group(self) -> bool:
        """Restricted once and no group left: only Admins see it (the rule is `_access_now`;
        this is for pages that say so)."""
        if not self.restricted:
            return False
        has_groups = getattr(self, "has_groups", None)  # annotated by `_access_now`
        return not (self.groups.exists() if has_groups is None else has_groups)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.slug in RESERVED_SLUGS:
            errors["slug"] = f"“{self.slug}” is reserved; choose another."
        if not self.from_settings:
            parts = urlsplit(self.base_url or "")
            if parts.scheme not in ("http", "https") or not parts.netloc:
                errors["base_url"] = "Give a full URL starting with https://."
            if self.dialect == Dialect.AZURE and not self.base_url.rstrip("/").endswith(
                "/openai/v1"
            ):
                errors["base_url"] = (
                    "Azure's v1 API lives under /openai/v1, e.g. "
                    "https://RESOURCE.openai.azure.com/openai/v1."
                )
            if self.dialect == Dialect.AZURE_LEGACY and not self.api_version:
                errors["api_version"] = "Azure's dated API needs an api-version, e.g. 2024-10-21."
        if not isinstance(self.allowed_endpoints, list) or any(
            e not in ENDPOINTS for e in self.allowed_endpoints or []
        ):
            errors["allowed_endpoints"] = "A list of endpoints among: " + ", ".join(ENDPOINTS)
        if not isinstance(self.deployments, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v
            for k, v in (self.deployments or {}).items()
        ):
            errors["deployments"] = 'A map of deployment name to model, e.g. {"dep": "gpt-4o"}.'
        low, high = self.expiry_hours()
        if low > high:
            errors["output_expiry_min_hours"] = "The shortest expiry is longer than the longest."
        if errors:
            raise ValidationError(errors)


@dataclass(frozen=True)
class Access:
    """What one person may see: the answer of `Connection.objects.visible_to`, kept for the
    request and in the "people" cache. The connections (name order), whether that is all of
    them, and whether the person is an Admin (superuser or in the Admins group: sees
    connections restricted to no group, and the details of failed sign-ins on the Activity
    page). Iterating it gives the connections; `connection in access` asks about one."""

    connections: tuple[Connection, ...]
    everything: bool
    admin: bool = False

    @cached_property
    def ids(self) -> list[int]:
        return [c.pk for c in self.connections]

    def __iter__(self) -> Iterator[Connection]:
        return iter(self.connections)

    def __len__(self) -> int:
        return len(self.connections)

    def __contains__(self, connection: object) -> bool:
        return isinstance(connection, Connection) and connection.pk in self.ids

    def get(self, slug: str) -> Connection | None:
        """The connection called `slug`, or None when there is none the person may see (the
        same answer for both, so a slug reveals nothing). No query."""
        return next((c for c in self.connections if c.slug == slug), None) if slug else None

    def connection_ids(self, slug: str = "") -> list[int] | None:
        """The connections a query about this person's batches is limited to (the one called
        `slug`, when given): None for no limit (they see every connection and name none, so
        the indexes serve the query as if there were no rule); [] for nothing (they named one
        they may not see)."""
        if slug:
            found = self.get(slug)
            return [found.pk] if found else []
        return None if self.everything else self.ids

    def restrict(self, rows: Any, connection: str = "") -> Any:
        """ROWS (a query set with a `connection_id`) limited to what this person may see, of
        the connection called `connection` when given: unchanged for someone who sees every
        connection and names none (the indexes serve the query as before), none at all for a
        connection they may not see (the same answer as for one that does not exist)."""
        ids = self.connection_ids(connection)
        if ids is None:
            return rows
        if not ids:
            return rows.none()
        return (
            rows.filter(connection_id=ids[0]) if connection else rows.filter(connection_id__in=ids)
        )

    def attach(self, batches: Iterable[Any]) -> None:
        """Give each batch its connection object from here: no join, no query."""
        by_id = {c.pk: c for c in self.connections}
        for batch in batches:
            if batch.connection_id in by_id:
                batch.connection = by_id[batch.connection_id]


def _dormant(connection: Connection, user: Any) -> bool:
    """The connection configured by the environment while OPENAI_API_KEY is unset (demo mode,
    or a team that uses only connections of its own) and it has no batches: nobody needs it
    listed. Not a rule of access: it has nothing to show, and its page still answers."""
    if not connection.from_settings or settings.OPENAI_API_KEY:
        return False
    from .batches import BatchTally  # batches.py imports this module

    key = keys.dormant_key(user, connection.pk)  # its batches' writes raise its number
    dormant = caches[keys.PAGES].get(key)
    if dormant is None:
        dormant = not BatchTally.objects.filter(connection_id=connection.pk, count__gt=0).exists()
        caches[keys.PAGES].set(key, dormant)
    return dormant


def _access_now(user: Any) -> Access:
    """The one rule of who sees which connection (read only through
    `Connection.objects.visible_to`, which keeps its answer):

    - superusers see every connection;
    - a connection with groups: members of one of them;
    - a connection restricted once whose groups are all gone (`restricted`, no group left):
      Admins only. A restriction fails closed; an admin opens it again explicitly;
    - a connection never restricted: everyone (with a role: views check that).
    """
    through = Connection.groups.through
    in_admins = user.groups.filter(name=ADMINS)
    rows = list(
        Connection.objects.annotate(
            has_groups=models.Exists(through.objects.filter(connection=models.OuterRef("pk"))),
            member=models.Exists(
                through.objects.filter(
                    connection=models.OuterRef("pk"), group__in=user.groups.values("pk")
                )
            ),
            # The same for every row: asked here so that the whole answer is one query.
            in_admins=models.Exists(in_admins),
        )
    )
    admin = user.is_superuser or (rows[0].in_admins if rows else in_admins.exists())
    visible = tuple(c for c in rows if _sees(c, superuser=user.is_superuser, admin=admin))
    return Access(visible, len(visible) == len(rows), admin)


def _sees(connection: Connection, *, superuser: bool, admin: bool) -> bool:
    if superuser:
        return True
    if connection.has_groups:
        return connection.member
    if connection.restricted:
        return admin
    return True


def default_connection() -> Connection:
    """The connection configured by OPENAI_* settings, which batches of earlier releases
    belong to (created by a migration; made again here if someone deleted it)."""
    found = Connection.objects.filter(slug=DEFAULT_SLUG).first()
    if found is not None:
        return found
    taken = Connection.objects.filter(name="OpenAI").exists()  # names are unique too
    name = "OpenAI (environment)" if taken else "OpenAI"
    connection, _ = Connection.objects.get_or_create(
        slug=DEFAULT_SLUG, defaults={"name": name, "from_settings": True}
    )
    return connection


def default_connection_id() -> int:
    """The default of every `connection` field. Reads the id alone: migrations call it while
    the table may still lack columns that later migrations add."""
    pk = Connection.objects.filter(slug=DEFAULT_SLUG).values_list("pk", flat=True).first()
    return pk if pk is not None else default_connection().pk


@receiver(m2m_changed, sender=Connection.groups.through, dispatch_uid="bw-connection-restricted")
def _groups_added(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """Adding a group to a connection restricts it for good: `restricted` is set, and stays
    when the groups go. One receiver rather than the admin form's save, because groups are
    added from several places (the admin form, `connection_add`, a group's side of the
    relation, a shell) and every one of them passes here; removing a group, or deleting it
    (a cascade, which sends no signal), then needs nothing of its own."""
    if action != "post_add" or not pk_set:
        return
    ids = list(pk_set) if reverse else [instance.pk]
    Connection.objects.filter(pk__in=ids, restricted=False).update(restricted=True)
    if not reverse:
        instance.restricted = True
