"""Signing webhooks in tests the way OpenAI does, with the test vectors of the `openai` SDK's
own webhook tests, and the SDK's verifier as the judge of what a correct signature is."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from types import SimpleNamespace
from typing import Any

import openai
import openai.resources.webhooks.webhooks as sdk_webhooks
import pytest
from openai import InvalidWebhookSignatureError

# The vectors of the SDK's tests: a fixed clock, a webhook id and a secret.
NOW = 1_750_000_000
NOW_DT = dt.datetime.fromtimestamp(NOW, tz=dt.UTC)
WEBHOOK_ID = "evt_synthetic"
SECRET = "whsec_" + base64.b64encode(b"synthetic-webhook-secret").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-webhook-secret").decode()


def event_body(batch_id: str = "batch_abc123", kind: str = "batch.completed") -> bytes:
    """An event as OpenAI sends it: thin, the batch named by id only."""
    event = {
        "id": "evt_685343a1381c819085d44c354e1b330e",
        "object": "event",
        "type": kind,
        "created_at": NOW - 5,
        "data": {"id": batch_id},
    }
    return json.dumps(event).encode()


def signature(
    body: bytes, *, secret: str = SECRET, webhook_id: str = WEBHOOK_ID, timestamp: int = NOW
) -> str:
    """One `v1,<base64>` entry: HMAC-SHA256 of `id.timestamp.body` keyed with the secret's
    base64-decoded bytes (the Standard Webhooks scheme)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    webhook_id: str = WEBHOOK_ID,
    timestamp: int = NOW,
    signatures: str | None = None,
) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures
        or signature(body, secret=secret, webhook_id=webhook_id, timestamp=timestamp),
    }


def sdk_accepts(
    body: bytes, headers: dict[str, str], *, secret: str = SECRET, now: int = NOW
) -> bool:
    """The official SDK's verdict, with its clock pinned like in its own tests."""
    client = openai.OpenAI(api_key="x", webhook_secret=secret)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sdk_webhooks, "time", SimpleNamespace(time=lambda: now))
        try:
            client.webhooks.verify_signature(body, headers)
        except (InvalidWebhookSignatureError, ValueError):
            return False
    return True


def sdk_accepts_these(body: bytes, headers: dict[str, str], **kwargs: Any) -> dict[str, str]:
    """`headers`, after checking that the SDK accepts them: signatures in these tests are the
    SDK's idea of correct, not only ours."""
    assert sdk_accepts(body, headers, **kwargs), "the openai SDK refuses these headers"
    return headers
