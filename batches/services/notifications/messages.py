"""What a notification says: the subject, the email's text, and the Slack-compatible and JSON
webhook bodies, for a batch that ended and for one at risk of missing its deadline.

Upstream text (labels, names, error messages) may hold anything: it goes into a message as one
printable line (`one_line`), and into a Slack body escaped so it can neither link nor mention.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

from django.conf import settings
from django.urls import reverse

from ...models import Batch, Status
from ...models.costs import dollars
from ...templatetags.batchweb import duration
from ..costs import batch_cost

# How much of a label, a name or an error message goes into a message.
LABEL_CHARS = 120
ERROR_CHARS = 300
ERRORS_SHOWN = 3


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


def _batch_facts(batch: Batch) -> list[tuple[str, str]]:
    """What every message says of a batch first: its id, label, connection, status, counts."""
    facts = [("Batch", one_line(batch.openai_id))]
    if batch.label:
        facts.append(("Label", one_line(batch.label, 200)))
    facts += [
        ("Connection", one_line(batch.connection.name, 100)),
        ("Status", batch.display_status()),
        ("Requests", _counts_line(batch)),
    ]
    return facts


def _facts(batch: Batch) -> list[tuple[str, str]]:
    end = ended_at(batch)
    facts = _batch_facts(batch)
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


# --- A batch at risk of missing its deadline --------------------------------------------------


def at_risk_subject(batch: Batch) -> str:
    """ "Batch nightly-eval may not finish before its deadline (OpenAI)"."""
    connection = one_line(batch.connection.name, 60)
    return f"Batch {batch_name(batch)} may not finish before its deadline ({connection})"[:255]


def at_risk_email_text(batch: Batch, *, eta: Any, reason: str) -> str:
    """The plain-text body of the at-risk email: the estimate in words, and the facts."""
    facts = [*_batch_facts(batch), ("Deadline", _when(eta.deadline))]
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
