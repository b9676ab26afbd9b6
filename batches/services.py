"""Where upstream calls and the database meet. Views and commands call these, nothing else.

Every function takes keyword arguments and an optional `client`, so tests can hand in one that
talks to a fake server.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import TOKEN_KEY, USER_KEY, Batch, Event, SyncState, payload_counts
from .openai_client import OpenAIClient, OpenAIError

logger = logging.getLogger(__name__)

# How many of the newest batches are searched for a submission token after an ambiguous failure.
RECONCILE_PAGES = 3


class ServiceError(Exception):
    """A service refused to act; the message is for people."""


def get_client(*, interactive: bool = False) -> OpenAIClient:
    """The configured client. `interactive` is for calls made while a person waits on a page:
    shorter timeouts and fewer retries, since the page falls back to the cache anyway."""
    return OpenAIClient.from_settings(interactive=interactive)


def new_submission_token() -> str:
    return secrets.token_urlsafe(18)


# --- The cache --------------------------------------------------------------------------------


@dataclass
class UpsertResult:
    batch: Batch
    created: bool = False
    changed: bool = False
    stale: bool = False


def batch_upsert(*, payload: dict[str, Any], now: dt.datetime | None = None) -> UpsertResult:
    """Store one Batch payload. An older payload never moves a batch back."""
    now = now or timezone.now()
    openai_id = str(payload["id"])
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(openai_id=openai_id).first()
        if batch is None:
            batch = Batch(openai_id=openai_id)
            batch.apply_payload(payload, now=now)
            _link_creator(batch)
            try:
                with transaction.atomic():
                    batch.save()
            except IntegrityError:
                # Another process stored it between our read and write: merge into theirs.
                return batch_upsert(payload=payload, now=now)
            return UpsertResult(batch=batch, created=True, changed=True)
        if not batch.is_older_than(str(payload.get("status") or ""), payload_counts(payload)):
            if batch.raw == payload:
                return UpsertResult(batch=batch)
            return UpsertResult(batch=batch, stale=True)
        changed = batch.raw != payload
        batch.apply_payload(payload, now=now)
        if not batch.created_by_id:
            _link_creator(batch)
        batch.save()
        return UpsertResult(batch=batch, changed=changed)


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
    endpoint: str,
    completion_window: str = "24h",
    metadata: dict[str, str] | None = None,
    output_expires_after_seconds: int | None = None,
    submission_token: str | None = None,
    client: OpenAIClient | None = None,
    input_facts: dict[str, Any] | None = None,
    retry_of: Batch | None = None,
) -> Batch:
    """Create a batch upstream and cache it; never twice for one submission token.

    The token goes into metadata. If the create call fails in a way that may still have created
    the batch (a timeout, a 5xx), the newest batches are searched for the token before the failure
    is reported, so a batch is neither created twice nor lost.
    """
    client = client or get_client()
    token = submission_token or new_submission_token()
    existing = Batch.objects.filter(submission_token=token).first()
    if existing:
        return existing
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
        found = _find_by_token(client, token) if error.ambiguous else None
        if found is None:
            Event.record(Event.Action.CREATE_FAILED, user=user, detail=str(error))
            raise
        logger.warning("create failed ambiguously but batch %s exists; kept it", found["id"])
        payload = found
    if not isinstance(payload.get("id"), str):
        raise ServiceError("The OpenAI API answered the create call without a batch id.")
    batch = batch_upsert(payload=payload).batch
    updates: dict[str, Any] = {"created_by": user, "submission_token": token}
    if retry_of is not None:
        updates["retry_of"] = retry_of
    for key, value in (input_facts or {}).items():
        updates[key] = value
    for key, value in updates.items():
        setattr(batch, key, value)
    batch.search_text = batch.build_search_text()
    batch.save()
    Event.record(Event.Action.CREATE, user=user, batch=batch, detail=f"{endpoint}")
    return batch


def _find_by_token(client: OpenAIClient, token: str) -> dict[str, Any] | None:
    after = None
    for _ in range(RECONCILE_PAGES):
        try:
            page = client.list_batches(after=after, limit=100)
        except OpenAIError:
            logger.warning("could not look for submission token after a failed create")
            return None
        for item in page["data"]:
            if isinstance(item, dict) and (item.get("metadata") or {}).get(TOKEN_KEY) == token:
                return item
        if not page.get("has_more") or not page["data"]:
            return None
        after = page["data"][-1].get("id")
    return None


def batch_refresh(*, batch: Batch, client: OpenAIClient | None = None) -> Batch:
    """Fetch one batch and store it. Raises the client's errors."""
    client = client or get_client()
    payload = client.retrieve_batch(batch.openai_id)
    return batch_upsert(payload=payload).batch


def batch_fetch(*, openai_id: str, client: OpenAIClient | None = None) -> Batch:
    """Fetch a batch the cache may not know yet (e.g. an id pasted into the search)."""
    client = client or get_client()
    return batch_upsert(payload=client.retrieve_batch(openai_id)).batch


def batch_cancel(*, batch: Batch, user: Any, client: OpenAIClient | None = None) -> Batch:
    if not batch.can_cancel:
        raise ServiceError(f"This batch is {batch.display_status()} and can no longer be cancelled.")
    client = client or get_client()
    try:
        payload = client.cancel_batch(batch.openai_id)
    except OpenAIError as error:
        Event.record(Event.Action.CANCEL_FAILED, user=user, batch=batch, detail=str(error))
        raise
    batch = batch_upsert(payload=payload).batch
    Event.record(Event.Action.CANCEL, user=user, batch=batch)
    return batch


# --- Sync -------------------------------------------------------------------------------------


@dataclass
class SyncResult:
    pages: int = 0
    seen: int = 0
    created: int = 0
    updated: int = 0
    refreshed: int = 0
    stopped_because: str = ""
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.pages} pages, {self.seen} batches seen, {self.created} new, "
            f"{self.updated} changed, {self.refreshed} refreshed"
        )
        if self.stopped_because:
            text += f"; stopped: {self.stopped_because}"
        return text


def batches_sync(
    *,
    client: OpenAIClient | None = None,
    full: bool = False,
    max_pages: int | None = None,
    refresh_running: bool = True,
) -> SyncResult:
    """Walk `GET /batches` newest first and store every page; then refresh running batches.

    Guards against servers that never stop: a repeated cursor, an empty page and a page cap all
    end the walk. Incremental mode (`full=False`) stops at the first page that brings nothing new
    or changed, since the list is newest first.
    """
    client = client or get_client()
    max_pages = max_pages or settings.SYNC_MAX_PAGES
    result = SyncResult()
    state = SyncState.get()
    after: str | None = None
    seen_cursors: set[str] = set()
    try:
        while True:
            if result.pages >= max_pages:
                result.stopped_because = f"page cap of {max_pages} reached"
                break
            page = client.list_batches(after=after, limit=100)
            result.pages += 1
            items = [item for item in page["data"] if isinstance(item, dict) and item.get("id")]
            if not items:
                result.stopped_because = "empty page"
                break
            news = 0
            for item in items:
                outcome = batch_upsert(payload=item)
                result.seen += 1
                result.created += outcome.created
                result.updated += outcome.changed and not outcome.created
                news += outcome.changed
            if not page.get("has_more"):
                result.stopped_because = "last page"
                break
            if not full and news == 0:
                result.stopped_because = "nothing new"
                break
            cursor = str(items[-1]["id"])
            if cursor in seen_cursors:
                result.stopped_because = "repeated cursor"
                break
            seen_cursors.add(cursor)
            after = cursor
        if refresh_running:
            result.refreshed = refresh_running_batches(client=client)
    except OpenAIError as error:
        state.record_failure(error)
        raise
    now = timezone.now()
    if full:
        state.last_full_sync_at = now
    state.record_success(now=now)
    logger.info("sync: %s", result)
    return result


def refresh_running_batches(*, client: OpenAIClient | None = None, limit: int = 500) -> int:
    """Retrieve each cached batch that is not terminal. Returns how many were refreshed."""
    client = client or get_client()
    count = 0
    for batch in Batch.objects.running().order_by("created_at")[:limit]:
        try:
            batch_refresh(batch=batch, client=client)
        except OpenAIError as error:
            if error.status == 404:
                batch.last_error = str(error)
                batch.save(update_fields=["last_error"])
                continue
            raise
        count += 1
    return count
