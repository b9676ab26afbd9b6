"""The admin site's part of the audit trail: every change an admin makes to people, groups,
connections and channels is written to it, with the connection it is about (`connection_of`);
the trail itself is read-only there."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import FieldDoesNotExist
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import AccountEmail, CompanyIdentity, Connection, Event
from .services import addresses


def _target(obj: Any) -> str:
    return f"{obj._meta.verbose_name} {obj}"


class AuditedAdmin(admin.ModelAdmin):
    """Writes an audit entry for each addition, change and deletion made in the admin site,
    besides Django's own admin log."""

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._audit(request, Event.Action.ADMIN_ADD, obj, message)
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._audit(request, Event.Action.ADMIN_CHANGE, obj, message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: QuerySet) -> Any:
        for obj in queryset:
            self._audit(request, Event.Action.ADMIN_DELETE, obj, "")
        return super().log_deletions(request, queryset)

    @staticmethod
    def _audit(request: HttpRequest, action: str, obj: Any, message: Any) -> None:
        detail = message if isinstance(message, str) else _describe(message)
        Event.record(
            action,
            user=request.user,
            connection=connection_of(obj),
            target=_target(obj),
            detail=detail,
        )


def connection_of(obj: Any) -> Connection | None:
    """The connection an admin change is about, so that the Activity page shows it only to
    people who may see that connection: the connection itself, the one a capacity limit (or
    anything with a `connection` field) belongs to, or for a channel (a `connections` field of
    its own) its one connection, or among several the first restricted one, since an entry has
    one connection and a restricted one must not leak. None: about no connection, or about
    every one (a channel for all connections), shown to everyone."""
    if isinstance(obj, Connection):
        return obj
    try:
        field = obj._meta.get_field("connection")
    except FieldDoesNotExist:
        field = None
    if field is not None and field.many_to_one and field.related_model is Connection:
        return getattr(obj, "connection", None)
    try:
        field = obj._meta.get_field("connections")
    except FieldDoesNotExist:
        return None
    # Its own field only: a group's `connections` is the reverse side (what it restricts).
    if not (field.many_to_many and field.concrete and field.related_model is Connection):
        return None
    connections = sorted(obj.connections.all(), key=lambda c: c.name)
    if len(connections) <= 1:
        return connections[0] if connections else None
    grouped = set(
        Connection.groups.through.objects.filter(
            connection__in=[c.pk for c in connections]
        ).values_list("connection_id", flat=True)
    )
    closed = [c for c in connections if c.restricted or c.pk in grouped]
    return (closed or connections)[0]


def _describe(message: Any) -> str:
    """Django's structured change message ([{"changed": {"fields": [...]}}]) in words."""
    parts = []
    for item in message or []:
        for verb, facts in item.items():
            fields = ", ".join(facts.get("fields", [])) if isinstance(facts, dict) else ""
            parts.append(f"{verb} {fields}".strip())
    return "; ".join(parts)


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class AuditedUserAdmin(AuditedAdmin, UserAdmin):
    """People. An address an admin types is one an admin vouches for: it may link a company
    sign-in (services/addresses.py); so does the action below, for addresses already there."""

    actions = ["vouch_for_addresses"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*super().get_readonly_fields(request, obj), "email_source")

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return [
            (name, {**opts, "fields": (*opts["fields"], "email_source")})
            if "email" in opts.get("fields", ())
            else (name, opts)
            for name, opts in fieldsets
        ]

    @admin.display(description="where the address came from")
    def email_source(self, obj: Any) -> str:
        return addresses.email_source(user=obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if "email" in form.changed_data:
            addresses.email_set(user=obj, address=obj.email, source=AccountEmail.Source.ADMIN)

    @admin.action(description="Vouch for the email addresses of the selected people")
    def vouch_for_addresses(self, request: HttpRequest, queryset: QuerySet) -> None:
        for user in queryset.exclude(email=""):
            addresses.email_set(user=user, address=user.email, source=AccountEmail.Source.ADMIN)
            self._audit(request, Event.Action.ADMIN_CHANGE, user, "vouched for the address")


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdmin, GroupAdmin):
    pass


@admin.register(CompanyIdentity)
class CompanyIdentityAdmin(AuditedAdmin):
    """Which provider account (issuer + subject) each batchweb account is linked to. Made only by
    a company sign-in (services/signin/backends.py); an admin may remove a link (audited),
    after which the next sign-in of that subject is linked again by the address rule or gets an
    account of its own."""

    list_display = ("user", "subject", "issuer", "created_at")
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "subject")
    readonly_fields = ("user", "issuer", "subject", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
