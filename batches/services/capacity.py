"""Capacity: how full a provider's queue of enqueued tokens is, as far as batchweb can tell, and
batches that wait for room to be submitted again.

OpenAI and Azure count the input tokens of every unfinished batch per model (Azure: per
deployment) against a limit, and no API reports the current figure. batchweb estimates it from
the unfinished batches it has cached for the connection and model: a batch it submitted itself
counts with the input estimate its file check made (characters ÷ 4); a batch made elsewhere
has no known size, so the sum is then a lower bound, and says so. Admins set the limits
(`CapacityLimit`); without one batchweb cannot warn, and says that too.

A batch that failed with `token_limit_exceeded`, or a create that was refused with it, can be
queued (`CapacityWait`); the worker's pass over the connection submits it again, through the
same path as the create form, once the estimate leaves room for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import roles
from ..errors import ServiceError
from ..models import (
    Batch,
    CapacityLimit,
    CapacityWait,
    Connection,
    Event,
    Status,
    Submission,
)
from ..openai_client import TOKEN_LIMIT_EXCEEDED, InvalidRequest, OpenAIClient, OpenAIError
from .batches import new_submission_token, token_limit_explanation
from .connections import get_client
from .submissions import AlreadySubmitted, submission_submit

logger = logging.getLogger(__name__)

# The providers' published defaults, shown to admins as hints (they vary by tier, region and
# subscription: the organisation's own figure is the one to enter).
PUBLISHED_DEFAULTS: list[dict[str, str]] = [
    {"provider": "Azure OpenAI", "model": "gpt-4.1", "tokens": "200,000,000",
     "note": "default global-batch limit, per deployment"},
    {"provider": "Azure OpenAI", "model": "gpt-4.1-mini", "tokens": "1,000,000,000",
     "note": "default global-batch limit, per deployment (default tier)"},
    {"provider": "Azure OpenAI", "model": "gpt-4o-mini", "tokens": "1,000,000,000",
     "note": "default global-batch limit, per deployment (default tier)"},
    {"provider": "OpenAI", "model": "every model", "tokens": "depends on the usage tier",
     "note": "see “Batch queue limits” on the organisation's Limits page "
     "(platform.openai.com/settings/organization/limits)"},
]  # fmt: skip

# A wait ends rather than try forever: after this many passing faults (timeouts, 5xx) in a
# row, or when it never got room.
MAX_ATTEMPTS = 5
MAX_WAIT = dt.timedelta(days=7)
# A claim older than this was left by a worker that stopped mid-way: it is taken up again
# (the submission's token makes sure no second batch is created).
STALE_CLAIM = dt.timedelta(minutes=10)
# How many waits one pass over a connection may submit.
PER_PASS = 5
# After a refusal, the next try waits RETRY_FIRST, doubling up to RETRY_MAX.
RETRY_FIRST = dt.timedelta(minutes=1)
RETRY_MAX = dt.timedelta(minutes=30)

# The sentence batch_create adds to a create refused for lack of room (kept in the
# submission's error): how a refused create is recognised later.
_REFUSED_SENTENCE = token_limit_explanation(
    InvalidRequest("", status=400, code=TOKEN_LIMIT_EXCEEDED)
).strip()


# --- The estimate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueued:
    """The input tokens batchweb knows to be enqueued for one connection and model."""

    tokens: int  # summed over the unfinished batches whose input size is known
    batches: int  # unfinished batches counted
    unknown: int  # of which the input size is not known (made elsewhere)

    @property
    def is_lower_bound(self) -> bool:
        return self.unknown > 0


@dataclass(frozen=True)
class Capacity:
    """One connection and model: the limit an admin set, what is enqueued, and whether a batch
    of `needed` tokens fits."""

    connection: Connection
    model: str
    limit: int | None
    enqueued: Enqueued
    needed: int | None = None

    @property
    def has_limit(self) -> bool:
        return self.limit is not None

    @property
    def free(self) -> int | None:
        if self.limit is None:
            return None
        return max(0, self.limit - self.enqueued.tokens)

    @property
    def over_limit(self) -> bool:
        """The batch alone needs more than the whole limit: it can never fit."""
        return self.limit is not None and self.needed is not None and self.needed > self.limit

    @property
    def fits(self) -> bool | None:
        """Whether the batch fits under the limit now (None: no limit is set)."""
        if self.limit is None:
            return None
        if self.needed is None:  # size unknown: at least some room
            return self.enqueued.tokens < self.limit
        return self.enqueued.tokens + self.needed <= self.limit

    @property
    def percent_used(self) -> int | None:
        if not self.limit:
            return None
        return min(100, round(100 * self.enqueued.tokens / self.limit))

    def may_submit(self) -> bool:
        """The worker's rule: room under the limit; without a limit, an empty queue (no
        unfinished batch of the model known on the connection)."""
        if self.limit is None:
            return self.enqueued.batches == 0
        return bool(self.fits)

    def enqueued_text(self) -> str:
        known = self.enqueued
        if known.batches == 0:
            return "no unfinished batches of this model are known"
        batches = f"{known.batches:,} unfinished batch{'' if known.batches == 1 else 'es'}"
        text = f"about {known.tokens:,} tokens in {batches}"
        if known.is_lower_bound:
            text = (
                f"at least {known.tokens:,} tokens in {batches} "
                f"({known.unknown:,} of them made outside batchweb, of unknown size, so the "
                "real figure is higher)"
            )
        return text

    def summary(self) -> str:
        """One or two sentences for a page."""
        queued = self.enqueued_text()
        if self.limit is None:
            return (
                f"No enqueued-token limit is set for {self.model} on {self.connection.name}, "
                f"so batchweb cannot warn before the provider's limit. Queued now: {queued}. "
                "Admins set limits in the admin site (Capacity limits)."
            )
        free = self.free or 0
        text = f"Limit {self.limit:,} tokens; queued now: {queued}; about {free:,} free."
        if self.needed is not None:
            text += f" This batch needs about {self.needed:,}."
        return text


_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def model_family(name: str) -> str:
    """A model as limits name it: OpenAI's batches report the dated snapshot they ran on
    ("gpt-4o-mini-2024-07-18") where the file and the limits say "gpt-4o-mini"."""
    return _SNAPSHOT.sub("", (name or "").strip())


def _unfinished(connection: Connection, model: str | None = None) -> dict[int, str]:
    """The unfinished batches of a connection (of one model, if named) and their models.
    Azure's batches name no model: the one batchweb's file check read stands in for it."""
    rows = Batch.objects.filter(connection=connection, running=True)
    if model is not None:
        family = model_family(model)
        rows = rows.filter(Q(model=family) | Q(model__startswith=f"{family}-") | Q(model=""))
    found = {pk: model_family(name) for pk, name in rows.values_list("pk", "model")}
    blank = [pk for pk, name in found.items() if not name]
    for pk, facts in Submission.objects.filter(batch_id__in=blank).values_list("batch_id", "facts"):
        found[pk] = model_family(str((facts or {}).get("model") or ""))
    if model is not None:
        return {pk: name for pk, name in found.items() if name == model_family(model)}
    return {pk: name for pk, name in found.items() if name}


def enqueued_estimate(*, connection: Connection, model: str) -> Enqueued:
    """The input tokens of the unfinished batches cached for a connection and model."""
    ids = list(_unfinished(connection, model)) if model_family(model) else []
    sizes = batch_input_estimates(batch_ids=ids)
    known = [v for v in sizes.values() if v is not None]
    return Enqueued(tokens=sum(known), batches=len(ids), unknown=len(ids) - len(known))


def batch_input_estimates(*, batch_ids: list[int]) -> dict[int, int | None]:
    """Each batch's input tokens as estimated when batchweb checked its file (None: unknown)."""
    sizes: dict[int, int | None] = dict.fromkeys(batch_ids)
    rows = Submission.objects.filter(batch_id__in=batch_ids).values_list("batch_id", "facts")
    for batch_id, facts in rows:
        value = _tokens((facts or {}).get("estimated_input_tokens"))
        if value is not None:
            sizes[batch_id] = value
    return sizes


def batch_input_estimate(*, batch: Batch) -> int | None:
    return batch_input_estimates(batch_ids=[batch.pk])[batch.pk]


def _tokens(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def limit_for(*, connection: Connection, model: str) -> int | None:
    family = model_family(model)
    limits = CapacityLimit.objects.filter(connection=connection).values_list(
        "model", "enqueued_tokens"
    )
    found = {model_family(name): tokens for name, tokens in limits}
    return found.get(family) if family else None


def capacity_for(*, connection: Connection, model: str, needed: int | None = None) -> Capacity:
    model = model_family(model)
    return Capacity(
        connection=connection,
        model=model,
        limit=limit_for(connection=connection, model=model),
        enqueued=enqueued_estimate(connection=connection, model=model),
        needed=needed,
    )


def submission_capacity(*, submission: Submission) -> Capacity | None:
    """Whether a checked file fits, for the confirm page (None: nothing is known of the file,
    e.g. one uploaded elsewhere)."""
    facts = submission.facts or {}
    model = str(facts.get("model") or "")
    if not model:
        return None
    return capacity_for(
        connection=submission.connection,
        model=model,
        needed=_tokens(facts.get("estimated_input_tokens")),
    )


def connection_capacity(*, connection: Connection) -> list[Capacity]:
    """Every model with a limit or an unfinished batch on a connection, for its page."""
    limits = {
        model_family(name): tokens
        for name, tokens in CapacityLimit.objects.filter(connection=connection).values_list(
            "model", "enqueued_tokens"
        )
    }
    running = set(_unfinished(connection).values())
    return [
        Capacity(
            connection=connection,
            model=model,
            limit=limits.get(model),
            enqueued=enqueued_estimate(connection=connection, model=model),
        )
        for model in sorted(set(limits) | running)
    ]


# --- Recognising the failure ------------------------------------------------------------------


def failed_for_lack_of_room(batch: Batch) -> bool:
    """The batch failed because the enqueued-token limit was reached."""
    return batch.status == Status.FAILED and any(
        str(e.get("code") or "") == TOKEN_LIMIT_EXCEEDED for e in batch.error_list()
    )


# OpenAI's message names the model: "Enqueued token limit reached for gpt-4o-mini in ..."
_MODEL_IN_MESSAGE = re.compile(r"limit reached for (?P<model>[\w.:/-]+) in ", re.IGNORECASE)


def failed_model(batch: Batch) -> str:
    """The model whose queue was full: the batch's, or the one its error message names (some
    servers leave `model` out of the batch)."""
    if batch.model:
        return model_family(batch.model)
    for error in batch.error_list():
        if found := _MODEL_IN_MESSAGE.search(str(error.get("message") or "")):
            return model_family(found["model"])
    return ""


def refused_for_lack_of_room(submission: Submission) -> bool:
    """The create of this submission was refused because the limit was reached (Azure)."""
    return submission.state == Submission.State.FAILED and _REFUSED_SENTENCE in (
        submission.error or ""
    )


def is_token_limit_error(error: BaseException) -> bool:
    """A create refused for lack of room (batch_create turns it into a ServiceError)."""
    cause = error.__cause__ if isinstance(error, ServiceError) else error
    return isinstance(cause, OpenAIError) and cause.code == TOKEN_LIMIT_EXCEEDED


def explanation(*, model: str) -> str:
    """What happened to a batch that failed with `token_limit_exceeded`, in plain words."""
    what = f"for {model} " if model else ""
    return (
        f"The provider's queue of enqueued tokens {what}was full when this batch was checked: "
        "the input tokens of every unfinished batch of the model count against a limit, and "
        "this one would have passed it. Nothing ran and nothing is billed. It can run once "
        "some of those batches finish."
    )


# --- Waiting for room -------------------------------------------------------------------------


def active_wait(
    *, batch: Batch | None = None, submission: Submission | None = None
) -> CapacityWait | None:
    """The wait of a batch (or a refused submission) that has not ended, if any."""
    waits = CapacityWait.objects.filter(state__in=CapacityWait.ACTIVE)
    if batch is not None:
        return waits.filter(batch=batch).first()
    return waits.filter(submission=submission).first()


def latest_wait(
    *, batch: Batch | None = None, submission: Submission | None = None
) -> CapacityWait | None:
    """The newest wait of a batch (or a refused submission), however it ended."""
    waits = CapacityWait.objects.select_related("new_batch", "new_batch__connection", "user")
    if batch is not None:
        return waits.filter(batch=batch).order_by("-created_at", "-id").first()
    return waits.filter(submission=submission).order_by("-created_at", "-id").first()


def capacity_wait_for_batch(*, batch: Batch, user: Any) -> CapacityWait:
    """Queue a batch that failed for lack of room: the worker creates it again from the same
    input file once there is room."""
    if not failed_for_lack_of_room(batch):
        raise ServiceError("Only a batch that failed because the token queue was full waits.")
    if not batch.input_file_id:
        raise ServiceError("This batch names no input file to submit again.")
    if not failed_model(batch):
        raise ServiceError(_NO_MODEL)
    if not batch.connection.enabled:
        raise ServiceError(f"{batch.connection.name} is disabled: it takes no new batches.")
    with transaction.atomic():
        Batch.objects.select_for_update().filter(pk=batch.pk).first()  # one wait at a time
        if existing := active_wait(batch=batch):
            return existing
        if batch.retries.exists():
            raise ServiceError("This batch was already submitted again.")
        first = Submission.objects.filter(batch=batch).first()
        facts = dict(first.facts or {}) if first else {}
        facts.setdefault("model", failed_model(batch))
        facts.setdefault("endpoint", batch.endpoint)
        facts.setdefault("lines", batch.input_lines or batch.request_total or 0)
        facts.setdefault("bytes", batch.input_bytes or 0)
        facts.pop("retry_reasons", None)
        request = dict(first.request or {}) if first else {}
        request.update(
            endpoint=batch.endpoint,
            completion_window=batch.completion_window or "24h",
            metadata=dict(list(batch.user_metadata().items())[:14]),
        )
        request.setdefault("output_expires_after_seconds", None)
        submission = Submission.objects.create(
            token=new_submission_token(),
            user=user,
            connection=batch.connection,
            state=Submission.State.CHECKED,
            filename=batch.input_filename,
            facts=facts,
            request=request,
            retry_of=batch,
            uploaded_file_id=batch.input_file_id,
        )
        wait = CapacityWait.objects.create(
            connection=batch.connection,
            model=failed_model(batch),
            batch=batch,
            submission=submission,
            user=user,
            tokens_needed=_tokens(facts.get("estimated_input_tokens")),
        )
    _record_queued(wait, user)
    return wait


def capacity_wait_for_submission(*, submission: Submission, user: Any) -> CapacityWait:
    """Queue a checked submission whose create was refused for lack of room (Azure)."""
    if not refused_for_lack_of_room(submission):
        raise ServiceError("Only a batch refused because the token queue was full waits.")
    if not submission.connection.enabled:
        raise ServiceError(f"{submission.connection.name} is disabled: it takes no new batches.")
    facts = submission.facts or {}
    if not facts.get("model"):
        raise ServiceError(_NO_MODEL)
    with transaction.atomic():
        Submission.objects.select_for_update().filter(pk=submission.pk).first()
        if existing := active_wait(submission=submission):
            return existing
        wait = CapacityWait.objects.create(
            connection=submission.connection,
            model=model_family(str(facts.get("model") or "")),
            submission=submission,
            user=user,
            tokens_needed=_tokens(facts.get("estimated_input_tokens")),
        )
    _record_queued(wait, user)
    return wait


_NO_MODEL = (
    "batchweb does not know which model this batch is for, so it cannot tell when there is "
    "room: submit it again yourself once some batches have finished."
)


def _record_queued(wait: CapacityWait, user: Any) -> None:
    check = capacity_for(connection=wait.connection, model=wait.model, needed=wait.tokens_needed)
    Event.record(
        Event.Action.CAPACITY_WAIT,
        user=user,
        batch=wait.batch,
        connection=wait.connection,
        target=wait.submission.filename or wait.model,
        detail=f"{_needed_text(wait)}; {check.summary()}",
    )


def _needed_text(wait: CapacityWait) -> str:
    of = f" of {wait.model}" if wait.model else ""
    if wait.tokens_needed is None:
        return f"needs an unknown number of input tokens{of} (made outside batchweb)"
    return f"needs about {wait.tokens_needed:,} input tokens{of}"


def capacity_wait_cancel(*, wait: CapacityWait, user: Any) -> CapacityWait:
    """Stop waiting. Refused when the worker is submitting it right now, or it has ended."""
    cancelled = CapacityWait.objects.filter(pk=wait.pk, state=CapacityWait.State.WAITING).update(
        state=CapacityWait.State.CANCELLED,
        reason=f"cancelled by {user.get_username()}",
        updated_at=timezone.now(),
    )
    wait.refresh_from_db()
    if not cancelled:
        raise ServiceError(
            f"This batch is no longer waiting ({wait.get_state_display()}): nothing to cancel."
        )
    Event.record(
        Event.Action.CAPACITY_CANCEL,
        user=user,
        batch=wait.batch,
        connection=wait.connection,
        target=wait.submission.filename or wait.model,
    )
    return wait


# --- The worker's step ------------------------------------------------------------------------


@dataclass
class WaitsResult:
    submitted: int = 0
    waiting: int = 0
    gave_up: int = 0
    failed: int = 0

    def __str__(self) -> str:
        parts = [f"{self.submitted} resubmitted"]
        if self.gave_up:
            parts.append(f"{self.gave_up} gave up")
        if self.failed:
            parts.append(f"{self.failed} refused upstream")
        if self.waiting:
            parts.append(f"{self.waiting} still waiting for room")
        return "capacity: " + ", ".join(parts)


def capacity_waits_due(
    *, connection: Connection, client: OpenAIClient | None = None, now: dt.datetime | None = None
) -> WaitsResult:
    """Submit the waiting batches of a connection that now fit, oldest first. Never raises an
    upstream error: a refusal is kept on the wait (or ends it), and the pass goes on."""
    now = now or timezone.now()
    result = WaitsResult()
    due = (
        CapacityWait.objects.filter(connection=connection)
        .filter(
            Q(state=CapacityWait.State.WAITING)
            | Q(state=CapacityWait.State.SUBMITTING, updated_at__lt=now - STALE_CLAIM)
        )
        .exclude(not_before__gt=now)
    )
    for wait in due.select_related("submission", "user", "batch")[:50]:
        if result.submitted >= PER_PASS:
            result.waiting += 1
            continue
        outcome = _try_wait(wait, connection=connection, client=client, now=now)
        setattr(result, outcome, getattr(result, outcome) + 1)
    return result


def _try_wait(
    wait: CapacityWait, *, connection: Connection, client: OpenAIClient | None, now: dt.datetime
) -> str:
    if reason := _reason_to_give_up(wait, now=now):
        _give_up(wait, reason)
        return "gave_up"
    check = capacity_for(connection=connection, model=wait.model, needed=wait.tokens_needed)
    if check.over_limit:
        _give_up(
            wait,
            f"it needs about {wait.tokens_needed:,} tokens, more than the whole limit of "
            f"{check.limit:,} for {wait.model}: split the file into smaller batches",
        )
        return "gave_up"
    CapacityWait.objects.filter(pk=wait.pk).update(room=check.free, checked_at=now)
    if not check.may_submit():
        return "waiting"
    claimed = (
        CapacityWait.objects.filter(pk=wait.pk, state=wait.state, updated_at=wait.updated_at)
        .update(state=CapacityWait.State.SUBMITTING, updated_at=timezone.now())
    )  # fmt: skip
    if not claimed:
        return "waiting"  # cancelled meanwhile, or another worker took it
    wait.refresh_from_db()
    owner = wait.user
    try:
        batch = submission_submit(
            submission=wait.submission,
            user=owner,
            client=client or get_client(connection=connection),
        )
    except AlreadySubmitted as already:
        # Submitted by hand from the confirm page meanwhile, or still in flight there.
        if already.submission.batch_id:
            _submitted(wait, already.submission.batch, check)
            return "submitted"
        _back_to_waiting(wait, "the form is being submitted elsewhere", count=False)
        return "waiting"
    except (OpenAIError, ServiceError) as error:
        return _refused(wait, error, now=now)
    _submitted(wait, batch, check)
    return "submitted"


def _reason_to_give_up(wait: CapacityWait, *, now: dt.datetime) -> str:
    owner = wait.user
    if owner is None or not owner.is_active:
        return "the person who asked for it no longer has an account"
    sees = wait.connection in Connection.objects.visible_to(owner)
    if not owner.has_perm(roles.SUBMIT) or not sees:
        return f"{owner.get_username()} may no longer submit batches on {wait.connection.name}"
    if not wait.connection.enabled:
        return f"{wait.connection.name} was disabled"
    if now - wait.created_at > MAX_WAIT:
        return f"there was no room for {MAX_WAIT.days} days"
    return ""


def _refused(wait: CapacityWait, error: Exception, *, now: dt.datetime) -> str:
    """Upstream refused. For lack of room (the estimate was too low: batches of unknown size)
    wait on, trying less and less often, until MAX_WAIT; after a passing fault (timeout, 5xx)
    try again a few times; for anything else (the input file is gone, a bad request) give up,
    saying why."""
    attempts = wait.attempts + 1
    message = str(error)
    full = is_token_limit_error(error)
    passing = isinstance(error, OpenAIError) and not isinstance(error, InvalidRequest)
    if full or (passing and attempts < MAX_ATTEMPTS):
        _back_to_waiting(wait, message, count=True, now=now)
        return "failed"
    _give_up(wait, f"the provider refused to create it: {message}", attempts=attempts)
    return "gave_up"


def retry_delay(attempts: int) -> dt.timedelta:
    """How long a refused wait rests before the next try: 1 min, 2, 4, … up to 30 min."""
    return min(RETRY_MAX, RETRY_FIRST * 2 ** max(0, attempts - 1))


def _back_to_waiting(
    wait: CapacityWait, reason: str, *, count: bool, now: dt.datetime | None = None
) -> None:
    attempts = wait.attempts + (1 if count else 0)
    CapacityWait.objects.filter(pk=wait.pk).update(
        state=CapacityWait.State.WAITING,
        reason=reason[:2000],
        attempts=attempts,
        not_before=(now + retry_delay(attempts)) if count and now else None,
        updated_at=timezone.now(),
    )


def _give_up(wait: CapacityWait, reason: str, *, attempts: int | None = None) -> None:
    ended = CapacityWait.objects.filter(pk=wait.pk, state__in=CapacityWait.ACTIVE).update(
        state=CapacityWait.State.GAVE_UP,
        reason=reason[:2000],
        attempts=attempts if attempts is not None else wait.attempts,
        updated_at=timezone.now(),
    )
    if ended:
        Event.record(
            Event.Action.CAPACITY_GAVE_UP,
            batch=wait.batch,
            connection=wait.connection,
            target=wait.submission.filename or wait.model,
            detail=f"Gave up: {reason}.",
        )


def _submitted(wait: CapacityWait, batch: Batch, check: Capacity) -> None:
    CapacityWait.objects.filter(pk=wait.pk).update(
        state=CapacityWait.State.SUBMITTED,
        new_batch=batch,
        reason="",
        updated_at=timezone.now(),
    )
    free = f"{check.free:,} free" if check.free is not None else "no limit set, queue empty"
    Event.record(
        Event.Action.CAPACITY_SUBMIT,
        batch=wait.batch or batch,
        connection=wait.connection,
        target=batch.openai_id,
        detail=f"as {batch.openai_id} ({_needed_text(wait)}, {free})",
    )
