"""The Watch button of a batch's page (its view belongs to another module: the button fetches
what it needs itself, in one query)."""

from __future__ import annotations

from typing import Any

from django import template

from ..models import Batch, Watch

register = template.Library()


@register.inclusion_tag("batches/notifications/watch_button.html", takes_context=True)
def watch_button(context: Any, batch: Batch) -> dict[str, Any]:
    """Watch / Stop watching, and how many people watch, for a running batch and someone who
    may read it."""
    request = context.get("request")
    user = getattr(request, "user", None)
    shown = (
        user is not None
        and user.is_authenticated
        and not batch.is_terminal
        and user.has_perm("batches.view_batch")
    )
    if not shown:
        return {"shown": False}
    watchers = list(Watch.objects.filter(batch=batch).values_list("user_id", flat=True))
    mine = user.pk in watchers
    others = len(watchers) - mine
    return {
        "shown": True,
        "batch": batch,
        "watching": mine,
        "count": len(watchers),
        "others": others,
        "csrf_token": context.get("csrf_token"),
    }
