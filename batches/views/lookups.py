"""Finding what a person asked for by slug or id, and nothing they may not see: each lookup
asks the one reader (`Connection.objects.visible_to`, `Batch.objects.visible_to`) and answers
404 for what it does not hold, as for what does not exist, so ids and slugs reveal nothing."""

from __future__ import annotations

from typing import Any

from django.core.cache import caches
from django.http import Http404

from ..cache import keys
from ..models import Batch, Connection, Submission
from ..services import submissions


def connection_for(user: Any, slug: str) -> Connection:
    """One connection by slug, or 404."""
    connection = Connection.objects.visible_to(user).get(slug)
    if connection is None:
        raise Http404("No such connection.")
    return connection


def batch_for(user: Any, slug: str, openai_id: str) -> Batch:
    """A batch by connection slug and id, or 404."""
    batch = Batch.objects.visible_one(user, slug, openai_id)
    if batch is None:
        raise Http404("No such batch.")
    return batch


def batch_state_for(user: Any, slug: str, openai_id: str) -> tuple[int, bool, int]:
    """The id of the batch `batch_for` would find, whether it has ended, and its connection's
    id: enough to serve its page from the cache, in one small query (the connection comes
    from what the person may see). 404 in the same cases as `batch_for`."""
    connection = Connection.objects.visible_to(user).get(slug)
    if connection is None:
        raise Http404("No such batch.")
    key = keys.batch_state_key(user, connection.pk, openai_id)
    found = caches[keys.PAGES].get(key)
    if found is None:
        found = (
            Batch.objects.filter(connection_id=connection.pk, openai_id=openai_id)
            .values_list("pk", "running")
            .first()
        )
        if found is None:
            raise Http404("No such batch.")
        caches[keys.PAGES].set(key, found)
    pk, running = found
    return pk, not running, connection.pk


def submission_for(user: Any, token: str, *, others: bool = False) -> Submission:
    """A checked file by its token: the person's own (anyone's with `others`), on a connection
    they may see, or 404 (tokens reveal nothing)."""
    submission = submissions.submission_find(token=token, user=user, others=others)
    if submission is None or submission.connection not in Connection.objects.visible_to(user):
        raise Http404("No such submission.")
    return submission
