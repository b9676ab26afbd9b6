"""The one URL without a sign-in: OpenAI's webhooks, `POST /webhooks/openai/<slug>/`.

The signature is the authentication (see services/webhooks.py). The view reads the raw body,
hands it to `webhook_receive` and turns the outcome into a status code, here and only here:

- 200 `{"ok": true}`: accepted; the worker's next pass fetches the batch. Also for a
  `webhook-id` accepted before (OpenAI redelivers when our 200 was lost): nothing is done again.
- 400: a webhook header missing or malformed, a body that is not an event, or an event type
  other than the four `batch.*` endings.
- 401: no signature matches, or the timestamp is more than 5 minutes off.
- 404: no such connection, a disabled one, or one without a usable webhook secret. The same
  answer for all three, so the URL tells outsiders nothing; the connection's page says which.
- 405: not a POST.
- 413: a body over 1 MB.
- 422: a batch that only another connection has.

Every answer is JSON (`{"error": reason}` for refusals) and never a 500 for junk input. A refusal
before the signature is verified writes nothing but its connection's refusal count (shown on the
connection's page); an unknown slug writes nothing at all (services/webhooks.py).
"""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from ..models import Connection
from ..services import webhooks

logger = logging.getLogger(__name__)

NOT_HERE = "no webhook endpoint here"

STATUS: dict[type[webhooks.WebhookError], int] = {
    webhooks.WebhookNotConfigured: 404,
    webhooks.WebhookBodyTooLarge: 413,
    webhooks.WebhookHeaderMissing: 400,
    webhooks.WebhookHeaderInvalid: 400,
    webhooks.WebhookPayloadInvalid: 400,
    webhooks.WebhookEventUnsupported: 400,
    webhooks.WebhookTimestampOutOfRange: 401,
    webhooks.WebhookSignatureMismatch: 401,
    webhooks.WebhookOtherConnection: 422,
}


def _answer(status: int, payload: dict[str, object]) -> JsonResponse:
    response = JsonResponse(payload, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _refused(error: webhooks.WebhookError) -> JsonResponse:
    status = STATUS.get(type(error), 400)
    # The three kinds of 404 read alike; the connection's page says which it was.
    return _answer(status, {"error": NOT_HERE if status == 404 else error.reason})


def _length_problem(request: HttpRequest) -> webhooks.WebhookError | None:
    """Refuse by the declared Content-Length, before reading anything."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not (isinstance(declared, str) and declared.isascii() and declared.isdigit()):
        # Django would fail reading such a body; a proxy should not have let it through.
        return webhooks.WebhookPayloadInvalid("the Content-Length header is not a number")
    if int(declared) > webhooks.MAX_BODY_BYTES:
        return webhooks.WebhookBodyTooLarge()
    return None


@csrf_exempt
def openai_webhook(request: HttpRequest, slug: str) -> JsonResponse:
    if request.method != "POST":
        response = _answer(405, {"error": "only POST is allowed"})
        response["Allow"] = "POST"
        return response
    connection = Connection.objects.filter(slug=slug).first()
    if connection is None:
        logger.warning("webhook for unknown connection %r refused", slug[:50])
        return _answer(404, {"error": NOT_HERE})

    # Decide what can be decided without reading the body.
    error = webhooks.webhook_endpoint_problem(connection) or _length_problem(request)
    body = b""
    if error is None:
        try:
            body = request.body
        except RequestDataTooBig:
            error = webhooks.WebhookBodyTooLarge()
        except OSError:  # UnreadablePostError among others: the sender went away
            error = webhooks.WebhookPayloadInvalid("the body could not be read")
    if error is not None:
        webhooks.webhook_refuse(connection=connection, error=error)
        return _refused(error)

    outcome = webhooks.webhook_receive(connection=connection, headers=request.headers, body=body)
    if outcome.error is not None:
        return _refused(outcome.error)
    return _answer(200, {"ok": True})
