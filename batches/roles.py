"""The four roles, as groups, and what each may do. The groups and their permissions are made by
migration 0007; each view states the permission it needs (see views/access.py).

| role | permissions |
|---|---|
| Viewers | view_batch: read, download, export |
| Submitters | also submit_batch (create, retry) and cancel_batch (their own batches) |
| Operators | also cancel_any_batch, sync_batches (Sync now), manage_labels |
| Admins | every permission of batchweb and of people and groups, and the admin site |
"""

from __future__ import annotations

from typing import Any

VIEWERS = "Viewers"
SUBMITTERS = "Submitters"
OPERATORS = "Operators"
ADMINS = "Admins"

VIEW = "batches.view_batch"
SUBMIT = "batches.submit_batch"
CANCEL_OWN = "batches.cancel_batch"
CANCEL_ANY = "batches.cancel_any_batch"
SYNC = "batches.sync_batches"
LABELS = "batches.manage_labels"
MANAGE_CONNECTIONS = "batches.change_connection"

# Nobody may change or delete the audit trail, admins included.
AUDIT_WRITES = ("add_event", "change_event", "delete_event")


def is_admin(user: Any) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return user.is_superuser or user.groups.filter(name=ADMINS).exists()


def may_cancel(user: Any, batch: Any) -> bool:
    """Operators cancel any batch; Submitters the ones they created."""
    if user.has_perm(CANCEL_ANY):
        return True
    return user.has_perm(CANCEL_OWN) and batch.created_by_id == user.pk


# The permissions (codenames on Batch) each role's group holds; Admins hold every permission
# of batchweb and of people and groups.
ROLE_PERMISSIONS = {
    VIEWERS: ["view_batch"],
    SUBMITTERS: ["view_batch", "submit_batch", "cancel_batch"],
    OPERATORS: [
        "view_batch",
        "submit_batch",
        "cancel_batch",
        "cancel_any_batch",
        "sync_batches",
        "manage_labels",
    ],
}


def ensure_roles(**kwargs: Any) -> None:
    """After every migrate (and every flush of a test database): the four groups exist with
    their permissions. Migration 0007 makes them too; this keeps Admins complete, since the
    permissions of models made in the same migrate run exist only after it."""
    from django.contrib.auth.models import Group, Permission

    for name, codenames in ROLE_PERMISSIONS.items():
        group, created = Group.objects.get_or_create(name=name)
        if created:
            group.permissions.set(
                Permission.objects.filter(content_type__app_label="batches", codename__in=codenames)
            )
    admins, _ = Group.objects.get_or_create(name=ADMINS)
    admins.permissions.set(
        Permission.objects.filter(content_type__app_label__in=("batches", "auth")).exclude(
            codename__in=AUDIT_WRITES
        )
    )
