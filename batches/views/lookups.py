"""Finding what a person asked for, and nothing they may not see."""

from __future__ import annotations

from typing import Any

from django.http import Http404

from ..models import Batch


def batch_for(user: Any, slug: str, openai_id: str) -> Batch:
    """A batch by connection slug and id, or 404 when it does not exist or belongs to a
    connection the person may not see (the same answer, so ids reveal nothing)."""
    batch = (
        Batch.objects.select_related("created_by", "connection")
        .filter(connection__slug=slug, openai_id=openai_id)
        .first()
    )
    if batch is None or not batch.connection.is_visible_to(user):
        raise Http404("No such batch.")
    return batch
