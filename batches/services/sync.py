"""Copying the upstream batch list into the cache, and refreshing running batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from ..models import Batch, SyncState
from ..openai_client import OpenAIClient, OpenAIError
from .batches import batch_refresh, batch_upsert, get_client

logger = logging.getLogger(__name__)


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
