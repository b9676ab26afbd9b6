"""Batches through the API: create (once per Idempotency-Key, or per identical request),
list, retrieve and cancel, each forwarded to the connection's upstream and recorded in the
cache and the audit trail as the pages record them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from batches.errors import ServiceError
from batches.jsonl_check import ENDPOINTS
from batches.models import TOKEN_KEY, USER_KEY, Batch, Connection
from batches.openai_client import (
    OpenAIClient,
    OpenAIError,
    UpstreamUnavailable,
    is_upstream_id,
)
from batches.roles import may_cancel
from batches.services.batches import (
    InputFacts,
    batch_cancel,
    batch_create,
    batch_upsert,
    new_submission_token,
)
from batches.services.connections import get_client

from ..errors import ApiError
from ..models import ApiFile, CreateRequest
from ..reads import cached_payloads

MAX_METADATA = 16 - 2  # batchweb stamps two pairs of its own (TOKEN_KEY, USER_KEY)
FIELDS = {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
MAX_LIMIT = 100
DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class CreateArgs:
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str]
    output_expires_after_seconds: int | None

    def fingerprint(self, connection: Connection) -> str:
        canonical = json.dumps(
            {"connection": connection.pk, **self.__dict__}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def create_args(body: Any, connection: Connection) -> CreateArgs:
    """Check a create request's JSON as OpenAI would (and a little more: the connection's
    endpoints and expiry range, the stamps batchweb adds). Raises ApiError(400)."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError(
            400,
            f"Unrecognized request argument: {unknown[0][:64]}.",
            param=unknown[0][:64],
            code="unknown_parameter",
        )
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not is_upstream_id(input_file_id.strip()):
        raise _missing_or_invalid(
            body, "input_file_id", "a file id (file-...: letters, digits, _ and -)"
        )
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str):
        raise _missing_or_invalid(body, "endpoint", "one of " + ", ".join(ENDPOINTS))
    if endpoint not in connection.endpoints():
        raise ApiError(
            400,
            f"endpoint must be one of {', '.join(connection.endpoints())} on this connection.",
            param="endpoint",
            code="invalid_value",
        )
    window = body.get("completion_window")
    if window != "24h":
        if "completion_window" not in body:
            raise _missing_or_invalid(body, "completion_window", "“24h”")
        raise ApiError(
            400, "completion_window must be “24h”.", param="completion_window", code="invalid_value"
        )
    metadata = body.get("metadata") or {}
    _check_metadata(metadata)
    seconds = None
    expiry = body.get("output_expires_after")
    if expiry is not None:
        low, high = (hours * 3600 for hours in connection.expiry_hours())
        if (
            not isinstance(expiry, dict)
            or expiry.get("anchor") != "created_at"
            or not isinstance(expiry.get("seconds"), int)
            or isinstance(expiry.get("seconds"), bool)
            or not low <= expiry["seconds"] <= high
        ):
            raise ApiError(
                400,
                f'output_expires_after must be {{"anchor": "created_at", "seconds": N}} with N '
                f"from {low:,} to {high:,} on this connection.",
                param="output_expires_after",
                code="invalid_value",
            )
        seconds = expiry["seconds"]
    return CreateArgs(input_file_id.strip(), endpoint, window, dict(metadata), seconds)


def _missing_or_invalid(body: dict[str, Any], name: str, what: str) -> ApiError:
    if name not in body or body[name] is None:
        return ApiError(
            400,
            f"Missing required parameter: {name}.",
            param=name,
            code="missing_required_parameter",
        )
    return ApiError(400, f"{name} must be {what}.", param=name, code="invalid_value")


def _check_metadata(metadata: Any) -> None:
    problem = None
    if not isinstance(metadata, dict):
        problem = "metadata must be an object of strings"
    elif len(metadata) > MAX_METADATA:
        problem = f"metadata may have at most {MAX_METADATA} pairs here (batchweb adds two)"
    else:
        for key, value in metadata.items():
            if key in (TOKEN_KEY, USER_KEY):
                problem = f"metadata key “{key}” is batchweb's own"
            elif len(key) > 64:
                problem = "metadata keys may be at most 64 characters"
            elif not isinstance(value, str) or len(value) > 512:
                problem = "metadata values must be strings of at most 512 characters"
            if problem:
                break
    if problem:
        raise ApiError(400, problem + ".", param="metadata", code="invalid_value")


# --- Create, once --------------------------------------------------------------------------


# An Idempotency-Key answers the same batch for a day (as Stripe's keys do); after that the
# key may be used again.
KEY_WINDOW = dt.timedelta(hours=24)


def _replay_window(*, keyed: bool) -> dt.timedelta:
    if keyed:
        return KEY_WINDOW
    return dt.timedelta(seconds=settings.BATCHWEB_API_RETRY_WINDOW_SECONDS)


def _in_flight_wait() -> float:
    return settings.BATCHWEB_API_IN_FLIGHT_WAIT_SECONDS


# A pending create older than this was abandoned (its process died): a retry may take it over.
STALE_PENDING = dt.timedelta(minutes=10)
POLL_SECONDS = 0.2


def api_batch_create(
    *,
    user: Any,
    connection: Connection,
    args: CreateArgs,
    idempotency_key: str | None,
    client: OpenAIClient | None = None,
    sleep: Any = time.sleep,
) -> tuple[Batch, bool]:
    """Create a batch, or answer the one this request made before. Returns the batch and
    whether it was made (or looked for) just now.

    With an Idempotency-Key, the key decides: the same key answers the same batch for 24 hours
    (reusing it for another request is refused). Without one, an identical request by the same
    person on the same connection within BATCHWEB_API_RETRY_WINDOW_SECONDS is taken for a
    retry, unless the batch it made has ended already: the official SDK sends no key, and a
    timed-out create that it retries must not make a second batch. A retry that arrives while
    the first attempt is still waiting for upstream waits for it.
    """
    fingerprint = args.fingerprint(connection)
    key = f"key:{idempotency_key}" if idempotency_key else f"body:{fingerprint}"
    record, retried = _claim(
        user, connection, key[:300], fingerprint, keyed=bool(idempotency_key), sleep=sleep
    )
    if record.state == CreateRequest.State.DONE:
        return record.batch, False
    facts = ApiFile.objects.filter(connection=connection, file_id=args.input_file_id).first()
    if facts and facts.endpoint and facts.endpoint != args.endpoint:
        _settle(record, CreateRequest.State.FAILED, error="endpoint mismatch")
        raise ApiError(
            400,
            f"The file {args.input_file_id} holds requests for {facts.endpoint}, not "
            f"{args.endpoint}: the batch would fail.",
            param="endpoint",
            code="endpoint_mismatch",
        )
    try:
        batch = batch_create(
            user=user,
            connection=connection,
            input_file_id=args.input_file_id,
            endpoint=args.endpoint,
            completion_window=args.completion_window,
            metadata=args.metadata,
            output_expires_after_seconds=args.output_expires_after_seconds,
            submission_token=record.submission_token,
            client=client or get_client(connection=connection),
            # An earlier attempt may have created it after all (a timeout): look first.
            reconcile_first=retried,
            input_facts=InputFacts(
                filename=facts.filename, bytes=facts.bytes, lines=facts.lines, model=facts.model
            )
            if facts
            else None,
        )
    except (OpenAIError, ServiceError) as error:
        _settle(record, CreateRequest.State.FAILED, error=str(error))
        raise
    except BaseException:
        _settle(record, CreateRequest.State.FAILED, error="interrupted")
        raise
    _settle(record, CreateRequest.State.DONE, batch=batch)
    return batch, True


def _settle(
    record: CreateRequest, state: str, *, error: str = "", batch: Batch | None = None
) -> None:
    CreateRequest.objects.filter(pk=record.pk).update(
        state=state, error=error[:2000], batch=batch, updated_at=timezone.now()
    )
    record.state, record.batch = state, batch


def _claim(
    user: Any, connection: Connection, key: str, fingerprint: str, *, keyed: bool, sleep: Any
) -> tuple[CreateRequest, bool]:
    """The create record this request works on, claimed (state pending) unless it is done
    already. Returns it and whether an earlier attempt came first (so upstream may have the
    batch already)."""
    now = timezone.now()
    try:
        with transaction.atomic():
            record = CreateRequest.objects.create(
                user=user,
                connection=connection,
                key=key,
                fingerprint=fingerprint,
                submission_token=f"api-{new_submission_token()}",
                attempts=1,
                created_at=now,
                updated_at=now,
            )
        return record, False
    except IntegrityError:
        pass
    deadline = time.monotonic() + _in_flight_wait()
    mine = CreateRequest.objects.filter(user=user, connection=connection, key=key)
    while True:
        record = mine.select_related("batch").get()
        now = timezone.now()
        if keyed and record.fingerprint != fingerprint:
            raise ApiError(
                400,
                "This Idempotency-Key was used for a different request; use a new key for a "
                "new batch.",
                code="idempotency_key_reused",
            )
        expired = record.created_at < now - _replay_window(keyed=keyed)
        if not keyed and record.batch is not None and record.batch.is_terminal:
            expired = True  # the same request again after its batch ended: a new batch
        settled = record.state != CreateRequest.State.PENDING
        abandoned = not settled and record.updated_at < now - STALE_PENDING
        if record.state == CreateRequest.State.DONE and record.batch is not None and not expired:
            return record, True
        if (
            (settled and (expired or record.state == CreateRequest.State.FAILED))
            or abandoned
            or (record.state == CreateRequest.State.DONE and record.batch is None)
        ):
            fresh = expired and settled
            changes: dict[str, Any] = {
                "state": CreateRequest.State.PENDING,
                "updated_at": now,
                "attempts": record.attempts + 1,
                "error": "",
            }
            if fresh:  # an old request made again: a new batch, with a token of its own
                changes.update(
                    submission_token=f"api-{new_submission_token()}",
                    created_at=now,
                    batch=None,
                    attempts=1,
                )
            taken = mine.filter(
                pk=record.pk, state=record.state, updated_at=record.updated_at
            ).update(**changes)
            if taken:
                record.refresh_from_db()
                return record, not fresh
            continue  # another retry took it first: look again
        if time.monotonic() >= deadline:
            raise ApiError(
                409,
                "An earlier attempt of this create is still waiting for the upstream API; try "
                "again in a moment (it will answer the same batch).",
                code="request_in_progress",
                audit=False,
            )
        sleep(POLL_SECONDS)


# --- Read and cancel -----------------------------------------------------------------------


def list_params(query: Any) -> tuple[str | None, int]:
    after = query.get("after") or None
    if after is not None and not is_upstream_id(after):
        raise ApiError(
            400,
            "after must be a batch id (letters, digits, _ and -).",
            param="after",
            code="invalid_value",
        )
    raw_limit = query.get("limit")
    if raw_limit in (None, ""):
        return after, DEFAULT_LIMIT
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(
            400,
            f"limit must be a whole number from 1 to {MAX_LIMIT}.",
            param="limit",
            code="invalid_value",
        )
    return after, limit


def api_batch_list(
    *, connection: Connection, after: str | None, limit: int, client: OpenAIClient | None = None
) -> tuple[dict[str, Any], str]:
    """One page of the connection's batches, newest first, from upstream (each stored in the
    cache on the way), or from the cache when upstream cannot be reached. Returns the page and
    where it came from ("upstream" or "cache")."""
    if upstream_resting(connection):
        return cached_page(connection=connection, after=after, limit=limit), "cache"
    client = client or _reader(connection)
    try:
        page = client.list_batches(after=after, limit=limit)
    except UpstreamUnavailable:
        upstream_unreachable(connection)
        return cached_page(connection=connection, after=after, limit=limit), "cache"
    for item in page["data"]:
        # Only what the pages could link to and the client fetch again is cached.
        if is_upstream_id(item.get("id")) and isinstance(item.get("status"), str):
            batch_upsert(payload=item, connection=connection)
    data = page["data"]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": bool(page.get("has_more")),
    }, "upstream"


# The API's reads (list, retrieve) keep one requests session per thread and connection: its pool
# keeps the connection to upstream open from one call to the next (a script paging through its
# batches pays one TCP and TLS handshake, not one a page), and no pool is set up per call. Not
# shared between threads (requests does not promise a session is thread-safe) nor between
# connections (cookies an upstream sets stay with its connection). Changes and uploads keep a
# session of their own per call.
_sessions = threading.local()


def _reader(connection: Connection) -> OpenAIClient:
    """get_client's client for `connection`, on this thread's session for it."""
    client = get_client(connection=connection)
    kept = getattr(_sessions, "by_connection", None)
    if kept is None:
        kept = _sessions.by_connection = {}
    session = kept.setdefault(connection.pk, client.session)
    client.session = session
    return client


# After upstream could not be reached, the API's reads answer from the cache for this long
# before asking it again: a script paging through its batches during an outage would otherwise
# wait for a refused or timed-out connection on every call. Per process.
UPSTREAM_REST_SECONDS = 5.0
_unreachable_until: dict[int, float] = {}


def upstream_unreachable(connection: Connection) -> None:
    _unreachable_until[connection.pk] = time.monotonic() + UPSTREAM_REST_SECONDS


def upstream_resting(connection: Connection) -> bool:
    """Whether upstream failed to answer this process less than UPSTREAM_REST_SECONDS ago."""
    return time.monotonic() < _unreachable_until.get(connection.pk, 0.0)


def cached_page(*, connection: Connection, after: str | None, limit: int) -> dict[str, Any]:
    """The cache's copy of a list page, in the list's order (newest first), so that the SDK's
    auto-pagination (`after` = the last id of the page) walks it as it walks upstream's."""
    found = cached_payloads(connection_id=connection.pk, after=after, limit=limit + 1)
    data = found[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(found) > limit,
    }


def api_batch_retrieve(
    *, connection: Connection, batch_id: str, client: OpenAIClient | None = None
) -> tuple[Batch, str]:
    """A batch fresh from upstream (and stored), or the cached copy when upstream cannot be
    reached."""
    if upstream_resting(connection):
        cached = Batch.objects.filter(connection=connection, openai_id=batch_id).first()
        if cached is not None:
            return cached, "cache"
    client = client or _reader(connection)
    try:
        payload = client.retrieve_batch(batch_id)
    except UpstreamUnavailable:
        upstream_unreachable(connection)
        cached = Batch.objects.filter(connection=connection, openai_id=batch_id).first()
        if cached is None:
            raise
        return cached, "cache"
    return batch_upsert(payload=payload, connection=connection).batch, "upstream"


def api_batch_cancel(
    *, user: Any, connection: Connection, batch_id: str, client: OpenAIClient | None = None
) -> Batch:
    """Cancel a batch the person may cancel (their own as a Submitter; any as an Operator)."""
    client = client or get_client(connection=connection)
    batch, _ = api_batch_retrieve(connection=connection, batch_id=batch_id, client=client)
    if not may_cancel(user, batch):
        raise ApiError(
            403,
            "Cancelling this batch takes the Submitters role (your own batches) or Operators "
            "(any batch).",
            code="insufficient_role",
        )
    if not batch.can_cancel:
        raise ApiError(
            400,
            f"Cannot cancel a batch with status '{batch.status}'.",
            code="batch_not_cancellable",
        )
    return batch_cancel(batch=batch, user=user, client=client)
