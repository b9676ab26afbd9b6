"""The admin site's part of the audit trail: every change an admin makes to people, groups,
connections and channels is written to it; the trail itself is read-only there."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Connection, Event


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
            connection=obj if isinstance(obj, Connection) else None,
            target=_target(obj),
            detail=detail,
        )


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
    pass


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdmin, GroupAdmin):
    pass
