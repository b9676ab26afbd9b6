"""The outbox: who is told about a batch, and the rows that hold what they are told.

`notifications_enqueue()` runs inside `batch_upsert`'s transaction when a cached batch moves
from a running status to an ending. It writes one `Outbox` row per recipient (the creator,
each watcher, each team channel), each with a unique `key`, so several workers or the same
ending stored twice never make two rows. Each row holds its whole message (messages.py):
delivering it (delivery.py) needs nothing else, even when the batch has been removed from the
cache since.

`notifications_at_risk()`, from the worker's housekeeping, writes one more kind of row: an
email, once per batch and address, to the creator and watchers who asked to hear about running
batches that may not finish before their deadline (the estimate of services/estimates.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from ...models import (
    TERMINAL_STATUSES,
    Batch,
    Channel,
    Connection,
    NotificationPreference,
    Outbox,
    Status,
    Watch,
)
from ..estimates import etas_attach
from .messages import (
    at_risk_email_text,
    at_risk_subject,
    email_text,
    json_event,
    message_subject,
    slack_payload,
)

logger = logging.getLogger(__name__)

# The name of the channel made from BATCHWEB_NOTIFY_WEBHOOK_URL.
SETTINGS_CHANNEL_NAME = "Team channel (BATCHWEB_NOTIFY_WEBHOOK_URL)"

PERMISSION_TO_READ = "batches.view_batch"


# --- Who is told ------------------------------------------------------------------------------


def _may_be_told(user: Any, batch: Batch) -> bool:
    """Only people who may read the batch hear about it: active, allowed to read batches, and
    inside the groups of its connection."""
    return (
        user.is_active
        and user.has_perm(PERMISSION_TO_READ)
        and batch.connection in Connection.objects.visible_to(user)
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


# --- A batch that ended -----------------------------------------------------------------------


def _email_key(batch: Batch, address: str) -> str:
    key = f"{batch.pk}:{batch.status}:email:{address.lower()}"
    if len(key) > 255:  # an address of 200+ characters: keep the key unique and short
        key = f"{batch.pk}:{batch.status}:email:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


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
