"""Request ids and one-line logs (batchweb/logs.py): the X-Request-ID round trip, an id made
when there is none or it is malformed, the id on the request's log lines in the configured
formatter, JSON lines that parse, and no secret in a line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from django.test import override_settings
from django.urls import path

from batchweb.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    current_request_id,
    request_id_from,
)

pytestmark = pytest.mark.django_db

GENERATED = re.compile(r"[0-9a-f]{32}")
view_logger = logging.getLogger("batches.views.test_request_logs")


def logging_view(request):
    """Logs as a view would, and says which id it saw."""
    from django.http import JsonResponse

    view_logger.warning("working on it for %s", "ada")
    return JsonResponse({"seen": current_request_id()})


def failing_view(request):
    raise RuntimeError("something broke\nacross two lines")


def auditing_view(request):
    from django.http import HttpResponse

    from batches.models import Event

    Event.record(Event.Action.SIGN_IN_FAILED, username="hunter2-typed-as-a-name")
    return HttpResponse("ok")


urlpatterns = [
    path("logging/", logging_view),
    path("failing/", failing_view),
    path("auditing/", auditing_view),
]


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the project's own console handler (settings.LOGGING) writes, one record a line."""
    handler = next(
        h
        for h in logging.getLogger().handlers
        if isinstance(h.formatter, TextFormatter | JsonFormatter)
    )
    stream = io.StringIO()
    # Swapped, not setStream(): that flushes the old stream, which pytest may have closed.
    previous, handler.stream = handler.stream, stream
    yield stream
    handler.stream = previous


@pytest.fixture
def json_format() -> Iterator[None]:
    handlers = logging.getLogger().handlers
    handler = next(h for h in handlers if isinstance(h.formatter, TextFormatter))
    handler.setFormatter(JsonFormatter())
    yield
    handler.setFormatter(TextFormatter())


# --- The header ---------------------------------------------------------------------------


def test_a_well_formed_request_id_comes_back_in_the_response(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a9c2e-0001")

    assert response["X-Request-ID"] == "lb-7f3a9c2e-0001"


def test_a_request_without_one_gets_a_new_id(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]

    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second) and first != second


@pytest.mark.parametrize(
    "sent",
    [
        "",
        "x" * 129,  # too long
        "abc\x1b[31mred",  # control characters
        "abc\ndef=forged level=ERROR",  # a forged log line
        'has "quotes"',
        "has spaces",
        "-leading-dash",
        "ünïcode",
    ],
)
def test_a_malformed_request_id_is_replaced(sent):
    assert GENERATED.fullmatch(request_id_from(sent))


@pytest.mark.parametrize(
    "sent", ["0f8fad5b-d9cb-469f-a165-70867728950e", "Root=1-67891233-abcdef012345678912345678"]
)
def test_common_request_id_shapes_are_kept(sent):
    assert request_id_from(sent) == sent


def test_a_pages_redirect_and_a_404_carry_the_id_too(client):
    assert client.get("/", HTTP_X_REQUEST_ID="req-1")["X-Request-ID"] == "req-1"
    assert client.get("/no/such/page/", HTTP_X_REQUEST_ID="req-2")["X-Request-ID"] == "req-2"


# --- The log lines ------------------------------------------------------------------------


@override_settings(ROOT_URLCONF=__name__)
def test_the_id_is_on_every_log_line_of_the_request(client, log_lines):
    response = client.get("/logging/", HTTP_X_REQUEST_ID="trace-42")

    assert response.json() == {"seen": "trace-42"}
    line = next(x for x in log_lines.getvalue().splitlines() if "working on it" in x)
    assert re.fullmatch(
        r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=WARNING "
        r"logger=batches\.views\.test_request_logs request_id=trace-42 "
        r'message="working on it for ada"',
        line,
    ), line
    assert current_request_id() == ""  # nothing left behind after the request


def test_a_404_logged_after_the_middleware_keeps_the_id(client, log_lines):
    client.get("/nowhere/", HTTP_X_REQUEST_ID="trace-404")

    lines = [x for x in log_lines.getvalue().splitlines() if "Not Found" in x]
    assert lines and all("request_id=trace-404" in x for x in lines)


@override_settings(ROOT_URLCONF=__name__)
def test_an_audit_entry_is_logged_with_the_request_id(client, log_lines):
    from batches.models import Event

    client.get("/auditing/", HTTP_X_REQUEST_ID="trace-audit")

    entry = Event.objects.get()
    line = next(x for x in log_lines.getvalue().splitlines() if "audit entry" in x)
    assert "request_id=trace-audit" in line
    assert f'message="audit entry {entry.pk}: - sign_in_failed failed"' in line
    assert "hunter2" not in log_lines.getvalue()  # a failed sign-in's name stays in the trail


@override_settings(ROOT_URLCONF=__name__)
def test_json_lines_parse_and_a_traceback_stays_on_its_line(client, log_lines, json_format):
    client.raise_request_exception = False
    response = client.get("/failing/", HTTP_X_REQUEST_ID="trace-500")

    assert response.status_code == 500
    lines = log_lines.getvalue().splitlines()
    records = [json.loads(x) for x in lines]  # every line is one JSON object
    error = next(r for r in records if r["logger"] == "django.request")
    assert error["level"] == "ERROR" and error["request_id"] == "trace-500"
    assert error["message"] == "Internal Server Error: /failing/"
    assert "RuntimeError: something broke\nacross two lines" in error["exception"]
    assert set(error) == {"time", "level", "logger", "request_id", "message", "exception"}


def test_a_text_line_escapes_line_breaks_and_control_characters():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, 'a\nb\x1bc "q"', None, None)
    RequestIdFilter().filter(record)

    line = TextFormatter().format(record)

    assert "\n" not in line and "\x1b" not in line
    assert line.endswith(r'request_id=- message="a\nb\u001bc \"q\""')


def test_a_record_outside_a_request_says_so():
    record = logging.LogRecord("worker", logging.INFO, __file__, 1, "pass done", None, None)
    RequestIdFilter().filter(record)

    assert json.loads(JsonFormatter().format(record))["request_id"] == "-"


@pytest.mark.parametrize(
    "secret",
    [
        "Incorrect API key provided: sk-proj-abcdefghijklmnop1234",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        "cookie sessionid=k2j3h4k2j3h4k2j3h4",
        "whsec_c2VjcmV0LXNpZ25pbmcta2V5",
        "api-key: 0123456789abcdef0123456789abcdef",
    ],
)
def test_a_secret_in_a_message_is_masked(secret):
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "said %s", (secret,), None)
    RequestIdFilter().filter(record)

    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(record)
        assert "[redacted]" in line
        for part in ("abcdefghijklmnop", "eyJhbGci", "k2j3h4", "c2VjcmV0", "0123456789abcdef"):
            assert part not in line


def test_the_format_comes_from_the_environment(monkeypatch):
    import importlib

    import batchweb.settings

    monkeypatch.setenv("BATCHWEB_LOG_FORMAT", "json")
    assert importlib.reload(batchweb.settings).LOGGING["handlers"]["console"]["formatter"] == "json"
    monkeypatch.setenv("BATCHWEB_LOG_FORMAT", "xml")
    with pytest.raises(Exception, match="BATCHWEB_LOG_FORMAT"):
        importlib.reload(batchweb.settings)
    monkeypatch.delenv("BATCHWEB_LOG_FORMAT")
    assert importlib.reload(batchweb.settings).LOGGING["handlers"]["console"]["formatter"] == "text"
