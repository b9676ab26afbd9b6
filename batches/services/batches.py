"""The cache of batches and the four Batch API operations: create, retrieve, cancel (list is in
sync.py)."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..errors import ServiceError
from ..models import (
    TERMINAL_STATUSES,
    TOKEN_KEY,
    USER_KEY,
    Batch,
    BatchTally,
    Connection,
    Event,
    default_connection,
    payload_counts,
    payload_id,
)
from ..openai_client import (
    TOKEN_LIMIT_EXCEEDED,
    InvalidRequest,
    OpenAIClient,
    OpenAIError,
    is_upstream_id,
)
from .connections import get_client
from .estimates import progress_snapshot_record
from .notifications import notifications_enqueue

logger = logging.getLogger(__name__)

# How many of the newest batches are searched for a submission token after an ambiguous failure.
RECONCILE_PAGES = 3


def new_submission_token() -> str:
    return secrets.token_urlsafe(18)


# --- The cache --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFacts:
    """What batchweb learnt about an input file when it checked it before upload."""

    filename: str
    bytes: int
    lines: int
    model: str = ""


@dataclass
class UpsertResult:
    batch: Batch
    created: bool = False
    changed: bool = False
    stale: bool = False


def batch_upsert(
    *,
    payload: dict[str, Any],
    connection: Connection | None = None,
    now: dt.datetime | None = None,
) -> UpsertResult:
    """Store one Batch payload of a connection (the default one when none is named). An older
    payload never moves a batch back."""
    now = now or timezone.now()
    connection = connection or default_connection()
    openai_id = payload_id(payload)
    mine = Batch.objects.filter(connection=connection, openai_id=openai_id)
    with transaction.atomic():
        batch = mine.select_for_update().first()
        if batch is None:
            batch = Batch(connection=connection, openai_id=openai_id)
            batch.apply_payload(payload, now=now)
            _link_creator(batch)
            _drop_claimed_token(batch)
            try:
                with transaction.atomic():
                    batch.save()
                    BatchTally.move(None, batch.tally_key())
                    # Finish-time estimates: the first point of a running batch's history.
                    progress_snapshot_record(
                        batch=batch, before_status=None, before_counts=None, now=now
                    )
            except IntegrityError:
                if not mine.exists():
                    raise  # not the race below: retrying would recurse forever
                # Another process stored it between our read and write: merge into theirs.
                return batch_upsert(payload=payload, connection=connection, now=now)
            return UpsertResult(batch=batch, created=True, changed=True)
        if not batch.is_older_than(str(payload.get("status") or ""), payload_counts(payload)):
            if batch.raw == payload:
                return UpsertResult(batch=batch)
            return UpsertResult(batch=batch, stale=True)
        changed = batch.raw != payload
        before = batch.tally_key()
        before_status = batch.status
        before_counts = (batch.request_completed, batch.request_failed, batch.request_total)
        token = batch.submission_token
        batch.apply_payload(payload, now=now)
        if before_status not in TERMINAL_STATUSES and batch.last_error:
            # Upstream knows it again: a running batch's only error is the worker's "not found"
            # (404), which must not stay on the page once the batch reappears, ended or not.
            batch.last_error = ""
        if batch.submission_token != token:
            _drop_claimed_token(batch)
        if not batch.created_by_id:
            _link_creator(batch)
        batch.save()
        BatchTally.move(before, batch.tally_key())
        # Finish-time estimates: a snapshot when the counts or status of a running batch moved.
        progress_snapshot_record(
            batch=batch, before_status=before_status, before_counts=before_counts, now=now
        )
        if batch.is_terminal and before_status not in TERMINAL_STATUSES:
            # In the same transaction as the ending: stored together, or not at all. A batch
            # first seen finished (the branch above) is history, and tells nobody.
            notifications_enqueue(batch=batch, before_status=before_status)
        return UpsertResult(batch=batch, changed=changed)


def batches_insert_new(
    *, payloads: list[dict[str, Any]], connection: Connection, now: dt.datetime
) -> set[str]:
    """Store, in a few queries, the batches of a list page the cache has never seen, and return
    their ids. A first sync of a large organisation is mostly such batches: one transaction per
    batch would make it take minutes. Payloads the cache already has are left to batch_upsert;
    if another process inserts one of these meanwhile, the whole page falls back to it too."""
    by_id = {payload_id(p): p for p in payloads}
    known = set(
        Batch.objects.filter(connection=connection, openai_id__in=list(by_id)).values_list(
            "openai_id", flat=True
        )
    )
    fresh = [
        Batch(connection=connection, openai_id=openai_id)
        for openai_id in by_id
        if openai_id not in known
    ]
    if not fresh:
        return set()
    for batch in fresh:
        batch.apply_payload(by_id[batch.openai_id], now=now)
    usernames = {(b.metadata or {}).get(USER_KEY) for b in fresh} - {None, ""}
    users = {u.get_username(): u for u in get_user_model().objects.filter(username__in=usernames)}
    tokens = [b.submission_token for b in fresh if b.submission_token]
    taken = set(
        Batch.objects.filter(submission_token__in=tokens).values_list("submission_token", flat=True)
    )
    for batch in fresh:
        batch.created_by = users.get((batch.metadata or {}).get(USER_KEY))
        if batch.submission_token in taken:
            batch.submission_token = None  # copied metadata: the first batch keeps the token
        elif batch.submission_token:
            taken.add(batch.submission_token)
    try:
        with transaction.atomic():
            Batch.objects.bulk_create(fresh)
            for key, count in Counter(b.tally_key() for b in fresh).items():
                BatchTally.add(key, count)
    except IntegrityError:
        return set()
    return {b.openai_id for b in fresh}


def _drop_claimed_token(batch: Batch) -> None:
    """Metadata can be copied by hand onto another batch upstream: the first batch stored with a
    submission token keeps it, later ones are cached without it."""
    token = batch.submission_token
    if token and Batch.objects.filter(submission_token=token).exclude(pk=batch.pk).exists():
        batch.submission_token = None


def _link_creator(batch: Batch) -> None:
    """A batch made by another batchweb (or before a database reset) names its submitter."""
    username = (batch.metadata or {}).get(USER_KEY)
    if username and not batch.created_by_id:
        batch.created_by = get_user_model().objects.filter(username=username).first()


# --- The four Batch API operations ----------------------------------------------------------


def batch_create(
    *,
    user: Any,
    input_file_id: str,
    connection: Connection | None = None,
    endpoint: str,
    completion_window: str = "24h",
    metadata: dict[str, str] | None = None,
    output_expires_after_seconds: int | None = None,
    submission_token: str | None = None,
    client: OpenAIClient | None = None,
    input_facts: InputFacts | None = None,
    retry_of: Batch | None = None,
    reconcile_first: bool = False,
) -> Batch:
    """Create a batch upstream and cache it; never twice for one submission token.

    The token goes into metadata. If the create call fails in a way that may still have created
    the batch (a timeout, a 5xx), the newest batches are searched for the token before the failure
    is reported, so a batch is neither created twice nor lost.
    """
    connection = connection or default_connection()
    client = client or get_client(connection=connection)
    token = submission_token or new_submission_token()
    existing = Batch.objects.filter(submission_token=token).first()
    if existing:
        return existing
    adopt = {
        "connection": connection,
        "user": user,
        "token": token,
        "input_facts": input_facts,
        "retry_of": retry_of,
    }
    if reconcile_first and (found := _find_by_token(client, token)):
        return _adopt(found, **adopt)
    stamped = dict(metadata or {})
    stamped[TOKEN_KEY] = token
    stamped[USER_KEY] = user.get_username()[:512]
    try:
        payload = client.create_batch(
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=stamped,
            output_expires_after_seconds=output_expires_after_seconds,
        )
    except OpenAIError as error:
        found = None
        if error.ambiguous:
            try:
                found = _find_by_token(client, token)
            except OpenAIError:
                logger.warning("could not look for submission token after a failed create")
        if found is None:
            explanation = token_limit_explanation(error)
            Event.record(
                Event.Action.CREATE_FAILED,
                user=user,
                connection=connection,
                detail=str(error) + explanation,
                error=error,
            )
            if explanation:  # a person's next step, not an upstream fault
                raise ServiceError(str(error) + explanation) from error
            raise
        logger.warning("create failed ambiguously but batch %s exists; kept it", found["id"])
        payload = found
    if not isinstance(payload.get("id"), str):
        raise ServiceError("The server answered the create call without a batch id.")
    if not is_upstream_id(payload["id"]):
        # Cached, it could be neither linked to nor fetched again (openai_client's id pattern).
        raise ServiceError(
            "The server answered the create call with a batch id batchweb cannot use (ids are "
            "letters, digits, _ and -): look for the batch on the provider's own dashboard."
        )
    return _adopt(payload, **adopt)


def token_limit_explanation(error: OpenAIError) -> str:
    """A plain explanation of Azure's create-time `token_limit_exceeded` (OpenAI reports the
    same limit later, as the failed batch's error)."""
    if isinstance(error, InvalidRequest) and error.code == TOKEN_LIMIT_EXCEEDED:
        return (
            " The provider's queue of enqueued tokens for this model is full: batches that have"
            " not finished yet count against it. Submit again once some of them finish, or"
            " split the file."
        )
    return ""


def _adopt(
    payload: dict[str, Any],
    *,
    connection: Connection,
    user: Any,
    token: str,
    input_facts: InputFacts | None,
    retry_of: Batch | None,
) -> Batch:
    """Cache a batch this submission created, with what only batchweb knows about it."""
    batch = batch_upsert(payload=payload, connection=connection).batch
    with transaction.atomic():
        batch = Batch.objects.select_for_update().get(pk=batch.pk)
        before = batch.tally_key()
        batch.created_by = user
        batch.submission_token = token
        if retry_of is not None:
            batch.retry_of = retry_of
        if input_facts:
            batch.input_filename = input_facts.filename[:255]
            batch.input_bytes = input_facts.bytes
            batch.input_lines = input_facts.lines
            # Some servers leave `model` out of the batch; the checked file names it.
            batch.model = batch.model or input_facts.model[:128]
        batch.search_text = batch.build_search_text()
        batch.save()
        BatchTally.move(before, batch.tally_key())
    Event.record(Event.Action.CREATE, user=user, batch=batch, detail=batch.endpoint)
    return batch


def _find_by_token(client: OpenAIClient, token: str) -> dict[str, Any] | None:
    """Look for a batch stamped with `token` among the newest few pages of the list."""
    after = None
    for _ in range(RECONCILE_PAGES):
        page = client.list_batches(after=after, limit=100)
        for item in page["data"]:
            if not isinstance(item, dict):
                continue
            metadata = item.get("metadata")
            if isinstance(metadata, dict) and metadata.get(TOKEN_KEY) == token:
                return item
        if not page.get("has_more") or not page["data"]:
            return None
        after = page["data"][-1].get("id")
    return None


def batch_refresh(*, batch: Batch, client: OpenAIClient | None = None) -> Batch:
    """Fetch one batch and store it. Raises the client's errors."""
    client = client or get_client(connection=batch.connection)
    payload = client.retrieve_batch(batch.openai_id)
    return batch_upsert(payload=payload, connection=batch.connection).batch


def batch_cancel(*, batch: Batch, user: Any, client: OpenAIClient | None = None) -> Batch:
    if not batch.can_cancel:
        raise ServiceError(
            f"This batch is {batch.display_status()} and can no longer be cancelled."
        )
    client = client or get_client(connection=batch.connection)
    try:
        payload = client.cancel_batch(batch.openai_id)
    except OpenAIError as error:
        Event.record(Event.Action.CANCEL_FAILED, user=user, batch=batch, error=error)
        raise
    batch = batch_upsert(payload=payload, connection=batch.connection).batch
    Event.record(Event.Action.CANCEL, user=user, batch=batch)
    return batch


def batch_label(*, batch: Batch, user: Any, label: str) -> Batch:
    """Give a batch a label here (upstream metadata cannot be changed after creation): it
    replaces the one from metadata in the list, search, exports and notifications, and later
    syncs keep it. An empty label goes back to the one from metadata."""
    label = " ".join(label.split())[:512]  # one line: no control characters or runs of spaces
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        before = locked.label
        locked.label_edited = bool(label)
        locked.label = label or locked.metadata_label()
        locked.search_text = locked.build_search_text()
        locked.save(update_fields=["label", "label_edited", "search_text"])
    Event.record(
        Event.Action.LABEL,
        user=user,
        batch=locked,
        detail=f"“{before}” → “{locked.label}”" if before else f"→ “{locked.label}”",
    )
    return locked
