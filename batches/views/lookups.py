"""Finding what a person asked for, and nothing they may not see."""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.cache import caches
from django.http import Http404

from ..models import Batch, access_for, generation


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


def batch_state_for(user: Any, slug: str, openai_id: str) -> tuple[int, bool, int]:
    """The id of the batch `batch_for` would find, whether it has ended, and its connection's
    id: enough to serve its page from the cache, in one small query (the connection comes
    from what the person may see). 404 in the same cases as `batch_for`."""
    connection = next((c for c in access_for(user).connections if c.slug == slug), None)
    if connection is None:
        raise Http404("No such batch.")
    # Kept for the connection's cache generation, which any write to its batches raises.
    digest = hashlib.blake2b(openai_id.encode(), digest_size=16).hexdigest()  # any text
    numbers = ".".join(map(str, generation.of(user).scope([connection.pk])))
    key = f"batch-state:{numbers}:{connection.pk}:{digest}"
    found = caches["pages"].get(key)
    if found is None:
        found = (
            Batch.objects.filter(connection_id=connection.pk, openai_id=openai_id)
            .values_list("pk", "running")
            .first()
        )
        if found is None:
            raise Http404("No such batch.")
        caches["pages"].set(key, found)
    pk, running = found
    return pk, not running, connection.pk
