"""Telling people when a batch ends: the outbox, the messages, and their delivery.

Two steps, so that a notification is written exactly when the status changes and is never lost:

1. `notifications_enqueue()` runs inside `batch_upsert`'s transaction when a cached batch moves
   from a running status to an ending. It writes one `Outbox` row per recipient (the creator,
   each watcher, each team channel), each with a unique `key`, so several workers or the same
   ending stored twice never make two rows. Each row holds its whole message: delivering it
   needs nothing else, even when the batch has been removed from the cache since.
2. `notifications_deliver()`, called by the sync worker every few seconds, claims due rows
   with a lease (the pattern of `batches_claim_due`), sends each outside the claim's
   transaction, and marks it sent, or schedules the next attempt with a doubling wait, or after
   `NOTIFY_MAX_ATTEMPTS` gives up: the row is "dead", shown to admins, and an audit entry says
   so. A worker that dies mid-send leaves its rows leased; they are due again when the lease
   runs out, so nothing is lost (a message may then go out twice, never zero times).

`notifications_at_risk()`, from the worker's housekeeping, writes one more kind of row: an
email, once per batch and address, to the creator and watchers who asked to hear about running
batches that may not finish before their deadline (the estimate of services/estimates.py).

Senders are plain functions with keyword arguments, so moving them to Django's task framework
is a small step. Webhook URLs and secrets are secrets: they are never logged or stored in an
error message, only a channel's name and host are.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import smtplib
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.db.models import Exists, F, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from .. import keystore
from ..models import (
    TERMINAL_STATUSES,
    Batch,
    Channel,
    Event,
    NotificationPreference,
    Outbox,
    Status,
    Watch,
)
from ..models.costs import dollars
from ..templatetags.batchweb import duration
from .costs import batch_cost
from .estimates import etas_attach

logger = logging.getLogger(__name__)

# The name of the channel made from BATCHWEB_NOTIFY_WEBHOOK_URL.
SETTINGS_CHANNEL_NAME = "Team channel (BATCHWEB_NOTIFY_WEBHOOK_URL)"
# Seconds a webhook receiver or the mail server has to answer (EMAIL_TIMEOUT, when set, wins).
WEBHOOK_TIMEOUT = 10.0
EMAIL_TIMEOUT = 10.0
# Headers of the JSON body's signature (see README, "Notifications").
SIGNATURE_HEADER = "X-Batchweb-Signature"
TIMESTAMP_HEADER = "X-Batchweb-Timestamp"
DELIVERY_HEADER = "X-Batchweb-Delivery"
# How much of a label, a name or an error message goes into a message.
LABEL_CHARS = 120
ERROR_CHARS = 300
ERRORS_SHOWN = 3

PERMISSION_TO_READ = "batches.view_batch"

# The clock of a delivery round's time budget (tests replace it).
_monotonic = time.monotonic


# --- Text that came from elsewhere ------------------------------------------------------------

# Bidirectional overrides can make a label read backwards in a mail client.
_BIDI = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)], " ")
_SPACES = re.compile(r"\s+")


def one_line(value: Any, limit: int = LABEL_CHARS) -> str:
    """Upstream text (labels, names, error messages may hold anything) as one printable line of
    at most `limit` characters: control characters become spaces, runs of space one space, and
    a cut is shown with "…"."""
    text = str(value or "").translate(_BIDI)
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# Slack-compatible receivers (Mattermost, Rocket.Chat, Slack with link_names) turn a plain
# "@channel" into a mention that pings everyone: a word joiner after the "@" keeps it text.
_MENTIONS = re.compile(r"@(?=(?:channel|here|everyone|all)\b)", re.IGNORECASE)


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions (<!channel> pings everyone): the three characters
    # it asks to escape are escaped, and the plain-text mentions defused.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTIONS.sub("@\u2060", text)


# --- What a message says ----------------------------------------------------------------------


def batch_cost_text(batch: Batch) -> str | None:
    """The cost of a batch in words ("$4.20 estimated (saved $4.20 against list price)"), or
    None while no figure is known; every message (email, Slack, JSON) includes it when known.

    The stored cost when the worker has computed it; a batch that just ended may not have it
    yet, so it is computed here (not stored: the worker does that)."""
    if batch.cost_computed_at is None and batch.is_terminal:
        cost = batch_cost(batch=batch)
        if cost is None or cost.usd is None:
            return None
        text = f"{dollars(cost.usd)} estimated"
        if cost.saved is not None and cost.saved > 0:
            text += f" (saved {dollars(cost.saved)} against list price)"
        return text
    return batch.cost_text() if batch.cost_usd is not None else None


def ending_phrase(batch: Batch) -> str:
    """What happened, as the end of a sentence starting "Batch X …"."""
    failed = batch.request_failed or 0
    if batch.all_failed:
        return f"completed, but all {failed:,} requests failed"
    if batch.status == Status.COMPLETED and failed:
        return f"completed with {failed:,} failure{'s' if failed != 1 else ''}"
    if batch.status == Status.CANCELLED:
        return "was cancelled"
    return batch.display_status()


def batch_name(batch: Batch) -> str:
    return one_line(batch.label) or one_line(batch.openai_id)


def ended_at(batch: Batch) -> dt.datetime | None:
    return batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at


def batch_link(batch: Batch) -> str:
    return settings.BATCHWEB_BASE_URL + batch.get_absolute_url()


def message_subject(batch: Batch) -> str:
    """ "Batch nightly-eval completed with 3 failures (OpenAI)"."""
    connection = one_line(batch.connection.name, 60)
    return f"Batch {batch_name(batch)} {ending_phrase(batch)} ({connection})"[:255]


def _counts_line(batch: Batch) -> str:
    if batch.request_total is None:
        return "not reported"
    if batch.request_total == 0:
        return "none ran"
    parts = [f"{batch.request_completed or 0:,} succeeded", f"{batch.request_failed or 0:,} failed"]
    line = f"{', '.join(parts)}, {batch.request_total:,} in all"
    remaining = batch.requests_remaining
    if remaining:
        line += f" ({remaining:,} never ran)"
    return line


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "not reported"


def _facts(batch: Batch) -> list[tuple[str, str]]:
    end = ended_at(batch)
    facts = [("Batch", one_line(batch.openai_id))]
    if batch.label:
        facts.append(("Label", one_line(batch.label, 200)))
    facts += [
        ("Connection", one_line(batch.connection.name, 100)),
        ("Status", batch.display_status()),
        ("Requests", _counts_line(batch)),
    ]
    if end and batch.created_at:
        facts.append(("Duration", duration((end - batch.created_at).total_seconds())))
    facts.append(("Ended", _when(end)))
    if batch.creator_name():
        facts.append(("Created by", one_line(batch.creator_name(), 150)))
    cost = batch_cost_text(batch)
    if cost is not None:
        facts.append(("Cost", cost))
    return facts


def _upstream_errors(batch: Batch) -> list[str]:
    return [
        one_line(e.get("message") or e.get("code"), ERROR_CHARS)
        for e in batch.error_list()[:ERRORS_SHOWN]
        if e.get("message") or e.get("code")
    ]


REASONS = {
    "creator": "you created this batch",
    "watcher": "you watch this batch",
}


def email_text(batch: Batch, *, reason: str) -> str:
    """The plain-text body of the email (no HTML, nothing escaped)."""
    facts = _facts(batch)
    width = max(len(name) for name, _ in facts) + 2
    lines = [f"Batch {batch_name(batch)} {ending_phrase(batch)}.", ""]
    lines += [f"{name + ':':<{width}}{value}" for name, value in facts]
    errors = _upstream_errors(batch)
    if errors:
        lines += ["", "Upstream said:"] + [f"- {error}" for error in errors]
    lines += [
        "",
        f"Open it: {batch_link(batch)}",
        "",
        "-- ",  # the signature separator mail clients recognise
        f"You receive this because {REASONS.get(reason, reason)}. Choose what you receive: "
        f"{settings.BATCHWEB_BASE_URL}{reverse('profile')}",
    ]
    return "\n".join(lines)


def slack_payload(batch: Batch) -> dict[str, str]:
    """A Slack-compatible incoming-webhook body: `{"text": ...}` with a `<url|text>` link."""
    connection = _slack_escape(one_line(batch.connection.name, 60))
    head = f"*Batch {_slack_escape(batch_name(batch))} {ending_phrase(batch)}* ({connection})"
    details = [_counts_line(batch) if batch.request_total is not None else ""]
    end = ended_at(batch)
    if end and batch.created_at:
        details.append(f"took {duration((end - batch.created_at).total_seconds())}")
    details.append(f"ended {_when(end)}")
    cost = batch_cost_text(batch)
    if cost is not None:
        details.append(f"cost {_slack_escape(cost)}")
    lines = [head, " · ".join(d for d in details if d)]
    lines += [f"> {_slack_escape(error)}" for error in _upstream_errors(batch)]
    link_text = _slack_escape(f"Open {one_line(batch.openai_id, 80)} in batchweb").replace("|", "/")
    lines.append(f"<{_slack_escape(batch_link(batch))}|{link_text}>")
    return {"text": "\n".join(lines)}


def json_event(batch: Batch) -> dict[str, Any]:
    """The JSON body for other receivers, less the `id` and `sent_at` added when it is sent."""
    end = ended_at(batch)
    data: dict[str, Any] = {
        "id": batch.openai_id,
        "connection": batch.connection.slug,
        "connection_name": batch.connection.name,
        "status": batch.status,
        "display_status": batch.display_status(),
        "label": batch.label,
        "request_counts": {
            "total": batch.request_total,
            "completed": batch.request_completed,
            "failed": batch.request_failed,
        },
        "created_at": batch.created_at.isoformat() if batch.created_at else None,
        "ended_at": end.isoformat() if end else None,
        "url": batch_link(batch),
    }
    cost = batch_cost_text(batch)
    if cost is not None:
        data["cost"] = cost
    return {"type": f"batch.{batch.status}", "summary": message_subject(batch), "batch": data}


def webhook_signature(*, secret: str, body: bytes) -> str:
    """The `X-Batchweb-Signature` header: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- Writing the outbox -----------------------------------------------------------------------


def _email_key(batch: Batch, address: str) -> str:
    key = f"{batch.pk}:{batch.status}:email:{address.lower()}"
    if len(key) > 255:  # an address of 200+ characters: keep the key unique and short
        key = f"{batch.pk}:{batch.status}:email:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def _may_be_told(user: Any, batch: Batch) -> bool:
    """Only people who may read the batch hear about it: active, allowed to read batches, and
    inside the groups of its connection."""
    return (
        user.is_active
        and user.has_perm(PERMISSION_TO_READ)
        and batch.connection.is_visible_to(user)
    )


def _usable_address(user: Any) -> str:
    """Where a person's notifications go: the address on the account, which only an admin, the
    company provider or a verified link sets (services/addresses.py). An address typed on the
    profile and not verified yet (`AccountEmail.pending`) is never used."""
    address = (user.email or "").strip()
    try:
        validate_email(address)
    except ValidationError:
        return ""
    return address


def settings_channel() -> Channel | None:
    """The channel standing for BATCHWEB_NOTIFY_WEBHOOK_URL, made the first time it is needed
    (so admins see it, its deliveries and its dead letters, and can disable it). Its URL and
    secret are read from the settings, never stored. None when the setting is empty."""
    url = settings.BATCHWEB_NOTIFY_WEBHOOK_URL.strip()
    if not url:
        return None
    # A secret means a receiver that checks signatures: the JSON body; otherwise Slack's.
    kind = Channel.Kind.JSON if settings.BATCHWEB_NOTIFY_WEBHOOK_SECRET else Channel.Kind.SLACK
    channel = Channel.objects.filter(from_settings=True).first()
    if channel is None:
        channel = Channel(name=SETTINGS_CHANNEL_NAME, from_settings=True, url_encrypted="")
        try:
            with transaction.atomic():
                channel.save()
        except IntegrityError:  # another worker made it, or an admin took the name
            channel = Channel.objects.filter(from_settings=True).first()
            if channel is None:
                logger.warning(
                    "BATCHWEB_NOTIFY_WEBHOOK_URL is set but a channel is already named %r; "
                    "rename it in the admin site",
                    SETTINGS_CHANNEL_NAME,
                )
                return None
    host = _host_of(url)
    if (channel.kind, channel.url_host) != (kind, host):
        Channel.objects.filter(pk=channel.pk).update(kind=kind, url_host=host)
        channel.kind, channel.url_host = kind, host
    return channel


def _host_of(url: str) -> str:
    try:
        return urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""


def _channels_for(batch: Batch) -> list[Channel]:
    mine = Q(connections=None) | Q(connections=batch.connection_id)
    channels = list(
        Channel.objects.filter(enabled=True, from_settings=False).filter(mine).distinct()
    )
    shortcut = settings_channel()
    if shortcut is not None and shortcut.enabled:
        restricted = list(shortcut.connections.values_list("pk", flat=True))
        if not restricted or batch.connection_id in restricted:
            channels.append(shortcut)
    return channels


def notifications_enqueue(*, batch: Batch, before_status: str | None) -> int:
    """Write the notifications of a batch that just ended (call inside the transaction that
    stores the ending). Returns how many rows were meant; a row that exists already (the same
    ending stored twice, by this worker or another) is silently kept as it is.

    Nothing is written unless the batch moved from a running status to an ending: a batch first
    seen already finished (`before_status` None, e.g. the first sync of an old organisation) is
    history, not news.
    """
    if before_status is None or before_status in TERMINAL_STATUSES or not batch.is_terminal:
        return 0
    rows: list[Outbox] = []
    told: set[int] = set()
    subject = message_subject(batch)

    def email(user: Any, reason: str) -> None:
        address = _usable_address(user)
        if user.pk in told or not address or not _may_be_told(user, batch):
            return
        told.add(user.pk)
        rows.append(
            Outbox(
                key=_email_key(batch, address),
                channel=Outbox.Channel.EMAIL,
                recipient=address,
                user=user,
                batch=batch,
                event=batch.status,
                subject=subject,
                body=email_text(batch, reason=reason),
            )
        )

    creator = batch.created_by if batch.created_by_id else None
    if creator is not None and NotificationPreference.of(creator).my_batches:
        email(creator, "creator")
    watchers = Watch.objects.filter(batch=batch).select_related("user").order_by("created_at")
    for watch in watchers:
        # A creator who also watches is told once, as the creator when they want that.
        if watch.user_id not in told and NotificationPreference.of(watch.user).watched:
            email(watch.user, "watcher")
    for channel in _channels_for(batch):
        body = slack_payload(batch) if channel.kind == Channel.Kind.SLACK else json_event(batch)
        rows.append(
            Outbox(
                key=f"{batch.pk}:{batch.status}:channel:{channel.pk}",
                channel=Outbox.Channel.WEBHOOK,
                recipient=str(channel.pk),
                batch=batch,
                event=batch.status,
                subject=subject,
                body=json.dumps(body, ensure_ascii=False),
            )
        )
    unique: dict[str, Outbox] = {}
    for row in rows:  # two people sharing an address get one email
        unique.setdefault(row.key, row)
    rows = list(unique.values())
    if rows:
        Outbox.objects.bulk_create(rows, ignore_conflicts=True)
        logger.info(
            "batch %s of %s %s: %d notifications queued",
            batch.openai_id,
            batch.connection.slug,
            batch.status,
            len(rows),
        )
    return len(rows)


# --- Batches at risk of expiring --------------------------------------------------------------

AT_RISK_EVENT = "at_risk"
# Running batches estimated per query of snapshots (see estimates.etas_attach).
AT_RISK_CHUNK = 200


def _at_risk_key(batch: Batch, address: str) -> str:
    key = f"{batch.pk}:{AT_RISK_EVENT}:email:{address.lower()}"
    if len(key) > 255:
        key = f"{batch.pk}:{AT_RISK_EVENT}:email:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def at_risk_subject(batch: Batch) -> str:
    """ "Batch nightly-eval may not finish before its deadline (OpenAI)"."""
    connection = one_line(batch.connection.name, 60)
    return f"Batch {batch_name(batch)} may not finish before its deadline ({connection})"[:255]


def at_risk_email_text(batch: Batch, *, eta: Any, reason: str) -> str:
    """The plain-text body of the at-risk email: the estimate in words, and the facts."""
    facts = [("Batch", one_line(batch.openai_id))]
    if batch.label:
        facts.append(("Label", one_line(batch.label, 200)))
    facts += [
        ("Connection", one_line(batch.connection.name, 100)),
        ("Status", batch.display_status()),
        ("Requests", _counts_line(batch)),
        ("Deadline", _when(eta.deadline)),
    ]
    if batch.creator_name():
        facts.append(("Created by", one_line(batch.creator_name(), 150)))
    width = max(len(name) for name, _ in facts) + 2
    lines = [f"Batch {batch_name(batch)} may not finish before its deadline.", "", eta.text(), ""]
    lines += [f"{name + ':':<{width}}{value}" for name, value in facts]
    lines += [
        "",
        "This is an estimate from the progress batchweb has seen; requests not done by the "
        "deadline are not run.",
        "",
        f"Open it: {batch_link(batch)}",
        "",
        "-- ",
        f"You receive this because {REASONS.get(reason, reason)} and asked to hear about "
        "batches at risk. Choose what you receive: "
        f"{settings.BATCHWEB_BASE_URL}{reverse('profile')}",
    ]
    return "\n".join(lines)


def notifications_at_risk(*, now: dt.datetime | None = None, connection: Any = None) -> int:
    """Email the creator and the watchers of each running batch that the estimate says may not
    finish before its deadline, when they asked for that (`NotificationPreference.at_risk`).
    Once per batch and address (a unique outbox key); called by the worker's housekeeping.
    Returns how many rows were meant."""
    now = now or timezone.now()
    running = Batch.objects.filter(running=True, status=Status.IN_PROGRESS)
    if connection is not None:
        running = running.filter(connection=connection)
    told_before = Outbox.objects.filter(event=AT_RISK_EVENT, batch_id=OuterRef("pk"))
    running = (
        running.exclude(Exists(told_before))
        .select_related("connection", "created_by")
        .defer("raw", "result_summary")
        .order_by("id")
    )
    batches = list(running)
    risky: list[Batch] = []
    for start in range(0, len(batches), AT_RISK_CHUNK):
        chunk = batches[start : start + AT_RISK_CHUNK]
        etas_attach(batches=chunk, now=now)
        risky += [b for b in chunk if b.eta is not None and b.eta.at_risk]
    if not risky:
        return 0
    watches = Watch.objects.filter(batch__in=risky).select_related("user").order_by("created_at")
    watchers: dict[int, list[Any]] = {}
    for watch in watches:
        watchers.setdefault(watch.batch_id, []).append(watch.user)
    people = {u.pk for users in watchers.values() for u in users}
    people |= {b.created_by_id for b in risky if b.created_by_id}
    wanting = set(
        NotificationPreference.objects.filter(user_id__in=people, at_risk=True).values_list(
            "user_id", flat=True
        )
    )
    rows: dict[str, Outbox] = {}
    for batch in risky:
        told: set[int] = set()
        candidates = [(batch.created_by, "creator")] if batch.created_by_id else []
        candidates += [(user, "watcher") for user in watchers.get(batch.pk, [])]
        for user, reason in candidates:
            address = _usable_address(user)
            if user.pk in told or user.pk not in wanting or not address:
                continue
            if not _may_be_told(user, batch):
                continue
            told.add(user.pk)
            key = _at_risk_key(batch, address)
            rows.setdefault(
                key,
                Outbox(
                    key=key,
                    channel=Outbox.Channel.EMAIL,
                    recipient=address,
                    user=user,
                    batch=batch,
                    event=AT_RISK_EVENT,
                    subject=at_risk_subject(batch),
                    body=at_risk_email_text(batch, eta=batch.eta, reason=reason),
                ),
            )
    if rows:
        Outbox.objects.bulk_create(rows.values(), ignore_conflicts=True)
        logger.info("%d batches at risk: %d notifications queued", len(risky), len(rows))
    return len(rows)


# --- Watching ---------------------------------------------------------------------------------


def watch_set(*, user: Any, batch: Batch, watch: bool | None = None) -> bool:
    """Start or stop watching a batch (`watch=None` toggles). Returns whether the person watches
    it now; a change is recorded in the audit trail, a repeated press is not."""
    mine = Watch.objects.filter(user=user, batch=batch)
    if watch is None:
        watch = not mine.exists()
    if watch:
        _, created = Watch.objects.get_or_create(user=user, batch=batch)
        if created:
            Event.record(Event.Action.WATCH, user=user, batch=batch)
        return True
    deleted, _ = mine.delete()
    if deleted:
        Event.record(Event.Action.UNWATCH, user=user, batch=batch)
    return False


def notification_preferences_save(
    *, user: Any, my_batches: bool, watched: bool, at_risk: bool
) -> NotificationPreference:
    """The three switches a person chose on their profile page. The address is not one of
    them: it changes once verified (services/addresses.py, `email_change_request`)."""
    preference, _ = NotificationPreference.objects.update_or_create(
        user=user, defaults={"my_batches": my_batches, "watched": watched, "at_risk": at_risk}
    )
    return preference


# --- Delivering -------------------------------------------------------------------------------


@dataclass
class DeliveryResult:
    """What one `notifications_deliver` call did; `str()` is its log line."""

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    released: int = 0  # claimed but given back unsent (time ran out)

    def __str__(self) -> str:
        text = (
            f"{self.sent} sent, {self.retrying} to retry, {self.dead} given up "
            f"of {self.claimed} claimed"
        )
        return text + (f", {self.released} given back" if self.released else "")


class DeliveryError(Exception):
    """A notification could not be delivered; the message is safe to store and show (it never
    holds a webhook URL or secret). `permanent`: trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def outbox_claim_due(*, now: dt.datetime, until: dt.datetime, limit: int) -> list[Outbox]:
    """Claim up to `limit` pending notifications due at `now` whose lease is free (never taken,
    or run out: its worker died), by setting their lease to `until`, oldest due first."""
    free = Q(lease_until__isnull=True) | Q(lease_until__lte=now)
    due = (
        Outbox.objects.filter(state=Outbox.State.PENDING, next_attempt_at__lte=now)
        .filter(free)
        .order_by("next_attempt_at", "id")
    )
    if db.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
            if ids:
                Outbox.objects.filter(pk__in=ids).update(lease_until=until)
    else:
        # No row locks: a row is ours only if nobody moved its lease since we read it.
        ids = [
            pk
            for pk, lease in due.values_list("pk", "lease_until")[:limit]
            if Outbox.objects.filter(pk=pk, state=Outbox.State.PENDING, lease_until=lease).update(
                lease_until=until
            )
        ]
    found = Outbox.objects.in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


def backoff_seconds(attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: doubling from the first to the last."""
    low, high = settings.NOTIFY_BACKOFF_MIN_SECONDS, settings.NOTIFY_BACKOFF_MAX_SECONDS
    return min(high, low * 2 ** max(0, min(attempts - 1, 30)))


def notifications_deliver(
    *,
    now: dt.datetime | None = None,
    limit: int = 50,
    stop: Callable[[], bool] | None = None,
) -> DeliveryResult:
    """Send the notifications that are due. Each is claimed with a lease first, so two workers
    never send the same one; the sending happens outside any transaction. Receivers that fail
    are tried again later; database errors are raised for the caller. `now` pins the clock
    (tests); `stop` is asked between sends, and what is left is given back."""
    clock: Callable[[], dt.datetime] = (lambda: now) if now is not None else timezone.now
    lease = settings.NOTIFY_LEASE_SECONDS
    until = clock() + dt.timedelta(seconds=lease)
    rows = outbox_claim_due(now=clock(), until=until, limit=limit)
    result = DeliveryResult(claimed=len(rows))
    if not rows:
        return result
    started = _monotonic()
    mailer = _Mailer()
    try:
        while rows:
            # Past half the lease another worker may soon claim these: give the rest back.
            if _monotonic() - started > lease / 2 or (stop and stop()):
                break
            row = rows.pop(0)
            try:
                _send(row, mailer=mailer, when=clock())
            except DeliveryError as error:
                _failed(row, error=error, until=until, now=clock(), result=result)
            except Exception as error:
                # A bug, or a failure no one foresaw: counted like a failed attempt, so the row
                # is retried and finally dead-lettered rather than retried for ever.
                logger.exception("notification %s: unexpected error", row.pk)
                failure = DeliveryError(one_line(f"{type(error).__name__}: {error}", ERROR_CHARS))
                _failed(row, error=failure, until=until, now=clock(), result=result)
            else:
                _sent(row, until=until, now=clock(), result=result)
    finally:
        mailer.close()
        if rows:
            result.released = Outbox.objects.filter(
                pk__in=[r.pk for r in rows], lease_until=until
            ).update(lease_until=None)
    return result


def _sent(row: Outbox, *, until: dt.datetime, now: dt.datetime, result: DeliveryResult) -> None:
    Outbox.objects.filter(pk=row.pk, lease_until=until).update(
        state=Outbox.State.SENT,
        sent_at=now,
        attempts=F("attempts") + 1,
        lease_until=None,
        last_error="",
    )
    result.sent += 1
    logger.info("notification %s sent (%s to %s)", row.pk, row.channel, _describe(row))


def _failed(
    row: Outbox,
    *,
    error: DeliveryError,
    until: dt.datetime,
    now: dt.datetime,
    result: DeliveryResult,
) -> None:
    attempts = row.attempts + 1
    message = str(error)[:2000]
    mine = Outbox.objects.filter(pk=row.pk, lease_until=until)
    if error.permanent or attempts >= settings.NOTIFY_MAX_ATTEMPTS:
        if mine.update(
            state=Outbox.State.DEAD, attempts=attempts, lease_until=None, last_error=message
        ):
            result.dead += 1
            logger.warning(
                "notification %s to %s given up after %d attempts: %s",
                row.pk,
                _describe(row),
                attempts,
                message,
            )
            batch = Batch.objects.select_related("connection").filter(pk=row.batch_id).first()
            Event.record(
                Event.Action.NOTIFY_FAILED,
                batch=batch,
                target=f"{row.get_channel_display()} to {_describe(row)}",
                detail=f"{row.subject}: gave up after {attempts} attempts. {message}",
            )
        return
    wait = backoff_seconds(attempts)
    if mine.update(
        attempts=attempts,
        lease_until=None,
        last_error=message,
        next_attempt_at=now + dt.timedelta(seconds=wait),
    ):
        result.retrying += 1
        logger.warning(
            "notification %s to %s failed (attempt %d), next try in %.0f s: %s",
            row.pk,
            _describe(row),
            attempts,
            wait,
            message,
        )


def _describe(row: Outbox) -> str:
    """Who a notification is for, safe to log and show: an address, or a channel's name."""
    if row.channel == Outbox.Channel.EMAIL:
        return row.recipient
    channel = Channel.objects.filter(pk=_channel_pk(row)).first()
    return f"channel “{channel.name}” ({channel.url_host})" if channel else "a deleted channel"


def _channel_pk(row: Outbox) -> int | None:
    return int(row.recipient) if row.recipient.isdigit() else None


def _send(row: Outbox, *, mailer: _Mailer, when: dt.datetime) -> None:
    if row.channel == Outbox.Channel.EMAIL:
        message = mail.EmailMessage(
            subject=one_line(row.subject, 255),
            body=row.body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[row.recipient],
            headers={"Auto-Submitted": "auto-generated"},
        )
        mailer.send(message)
        return
    channel = Channel.objects.filter(pk=_channel_pk(row)).first()
    if channel is None:
        raise DeliveryError("The channel was deleted.", permanent=True)
    if not channel.enabled:
        raise DeliveryError(f"The channel “{channel.name}” is disabled.", permanent=True)
    _post(row, channel=channel, when=when)


def _post(row: Outbox, *, channel: Channel, when: dt.datetime) -> None:
    try:
        url, secret = channel.url(), channel.secret()
    except keystore.KeystoreError as error:
        raise DeliveryError(str(error)) from None
    if not url:
        raise DeliveryError(
            f"The channel “{channel.name}” has no URL (BATCHWEB_NOTIFY_WEBHOOK_URL is empty)."
            if channel.from_settings
            else f"The channel “{channel.name}” has no URL.",
            permanent=True,
        )
    payload = json.loads(row.body)
    if "type" in payload:  # the JSON body: say which delivery this is, and when it was sent
        payload = {"id": f"ntf_{row.pk}", **payload, "sent_at": when.isoformat()}
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "batchweb",
        DELIVERY_HEADER: f"ntf_{row.pk}",
        TIMESTAMP_HEADER: str(int(when.timestamp())),
    }
    if secret:
        headers[SIGNATURE_HEADER] = webhook_signature(secret=secret, body=body)
    host = channel.url_host or "the receiver"
    try:
        response = requests.post(
            url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT, allow_redirects=False
        )
    except requests.RequestException as error:
        # The exception's text holds the URL (a secret): say what happened in our own words.
        raise DeliveryError(f"{_transport_failure(error)} ({host}).") from None
    if not 200 <= response.status_code < 300:
        said = one_line(response.text, 200).replace(url, "[url]")
        if secret:
            said = said.replace(secret, "[secret]")
        raise DeliveryError(
            f"{host} answered HTTP {response.status_code}" + (f": {said}" if said else ".")
        )


def _transport_failure(error: requests.RequestException) -> str:
    if isinstance(error, requests.ConnectTimeout):
        return "Timed out connecting to the receiver"
    if isinstance(error, requests.Timeout):
        return f"The receiver did not answer within {WEBHOOK_TIMEOUT:.0f} s"
    if isinstance(error, requests.exceptions.SSLError):
        return "The receiver's TLS certificate was refused"
    if isinstance(error, requests.ConnectionError):
        return "Could not connect to the receiver"
    return f"The request to the receiver failed ({type(error).__name__})"


class _Mailer:
    """One connection to the mail server per delivery round, opened at the first email. When
    the server cannot be reached, the other emails of the round fail at once instead of each
    waiting for its own timeout."""

    def __init__(self) -> None:
        self.connection: Any = None
        self.broken = ""

    def send(self, message: mail.EmailMessage) -> None:
        if self.broken:
            raise DeliveryError(self.broken)
        if self.connection is None:
            self.connection = mail.get_connection(
                timeout=getattr(settings, "EMAIL_TIMEOUT", None) or EMAIL_TIMEOUT
            )
            try:
                self.connection.open()
            except (OSError, smtplib.SMTPException) as error:
                self.connection = None
                self.broken = f"Could not reach the mail server: {_mail_error(error)}"
                raise DeliveryError(self.broken) from None
        message.connection = self.connection
        try:
            sent = message.send()
        except (OSError, smtplib.SMTPException, ValueError) as error:
            # The session may be unusable now: the next email opens a new one.
            self.close()
            raise DeliveryError(f"The mail server refused it: {_mail_error(error)}") from None
        if not sent:
            raise DeliveryError("The mail server accepted no recipient.")

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self.connection.close()
            self.connection = None


def _mail_error(error: BaseException) -> str:
    return one_line(f"{type(error).__name__}: {error}", ERROR_CHARS)
