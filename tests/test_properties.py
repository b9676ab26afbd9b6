"""Property-based tests (hypothesis) of everything that reads text batchweb did not write: the
JSONL checker, the result-line parser, the payload parser, and every form (issue 13, item 4).

Each property names what may come out: a documented result or a documented error, never an
unexpected exception, never a value its column cannot hold, never hostile text unescaped.
The generators mix ordinary text with hostile pieces (HTML and script, 100 KB strings, control
characters, right-to-left overrides, zero-width characters, lone surrogates, NUL, formula
starts, chat mentions), arbitrary JSON (huge and non-finite numbers included) and arbitrary
bytes (invalid UTF-8 included).

Generated inputs per property (derandomized, so CI sees the same examples every run):

======================================================  ========
property                                                examples
======================================================  ========
JSONL checker, arbitrary bytes                          300
JSONL checker, arbitrary JSON and request-like lines    200
result-line parser, arbitrary bytes                     300
result-line parser, arbitrary JSON and result lines     300
result files summarized and turned into result rows     150
payload parser, apply_payload (no database)             150
payload parser, batch_upsert (database)                 100
every form class, arbitrary values per field            100 per form class (9 classes)
create page, hostile form posted                        50
create page, hostile file name and content uploaded     40
label, profile and token forms posted                   50 each
list, activity and spend filters given                  50 each
======================================================  ========

About 3,300 generated inputs in all; with tests/test_hostile_content.py, about 45 s on two
shared cores.
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
import itertools
import json
import pkgutil
import re
from typing import Any

import pytest
from django import forms
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import models
from django.urls import reverse
from django.utils.datastructures import MultiValueDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batches.jsonl_check import ENDPOINTS, CheckReport, check_jsonl
from batches.models import Batch, ResultRow, default_connection
from batches.payloads import normalize_batch
from batches.results import (
    MAX_CODES,
    ResultLine,
    ResultLineError,
    parse_result_line,
    summarize,
)
from batches.services.batches import batch_upsert
from batches.services.result_files import _result_row
from tests.conftest import load_payload

# --- Generators ---------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
PIECES = [
    SCRIPT,
    '<img src=x onerror="alert(2)">',
    "\u202e",  # right-to-left override
    "\u2066\u2067\u2068\u2069\u200e\u200f",  # isolates and marks
    "\u200b\u200c\u200d\u2060\ufeff",  # zero-width
    "\x00",
    "".join(map(chr, range(1, 32))) + "\x7f",
    "\ud800",  # lone surrogates: what a JSON "\ud800" escape gives
    "\udfff",
    "=1+1",
    "+cmd",
    "-2",
    "@SUM(A1)",
    "@channel @here <!channel> <!here>",
    "&amp; &lt; ' \" ` \\",
    "\r\n\u2028\u0085",
    "100 KB",  # stands for a string of 100,000 characters (a sampled one would bloat reprs)
]
pieces = st.sampled_from(PIECES).map(lambda piece: "x" * 100_000 if piece == "100 KB" else piece)
hostile_text = st.lists(st.one_of(st.text(max_size=10), pieces), max_size=4).map("".join)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: 10**40 as well as -1
    st.floats(),  # NaN and infinities included: Python's JSON reader accepts them
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)
    ),
    max_leaves=6,
)
json_objects = st.dictionaries(hostile_text, json_values, max_size=6)


def encode_line(value: Any, *, ascii_only: bool) -> bytes:
    """JSON text the way a file may hold it: escaped, or raw (lone surrogates then become bytes
    that are not UTF-8)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)
WITH_DB = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- The JSONL checker --------------------------------------------------------------------------

LIMITS = st.sampled_from(
    [
        {},
        {"max_requests": 3, "max_bytes": 400, "max_embedding_inputs": 2, "max_problems": 2},
        {"max_requests": 1, "max_bytes": 10_000, "max_problems": 0},
    ]
)


def check(data: bytes, limits: dict[str, Any], endpoint: str | None = None) -> CheckReport:
    report = check_jsonl(io.BytesIO(data), endpoint=endpoint, **limits)
    assert isinstance(report, CheckReport)
    last_line = data.count(b"\n") + 1
    for problem in report.problems:
        # Every problem names a line of the file, and says so first.
        assert 1 <= problem.line <= last_line
        assert str(problem).startswith(f"line {problem.line}: ")
        assert len(problem.message) < 1000  # a 100 KB value is quoted cut short
    assert all(len(problem) < 1000 for problem in report.file_problems)
    assert len(report.problems) <= limits.get("max_problems", 100) <= 100
    assert report.problem_count >= len(report.problems)
    assert report.bytes == len(data)
    assert len(report.summary()) < 1000
    if report.ok:
        # Never accepted past a limit.
        assert 1 <= report.lines <= limits.get("max_requests", 50_000)
        assert report.bytes <= limits.get("max_bytes", 209_715_200)
        assert report.embedding_inputs <= limits.get("max_embedding_inputs", 50_000)
    return report


@PROPERTY
@given(data=st.binary(max_size=3000), limits=LIMITS)
def test_the_checker_reads_any_bytes_and_names_a_line_for_each_problem(data, limits):
    check(data, limits)


bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(["gpt-4o-mini", "other"]), json_values),
        "messages": st.one_of(st.just([{"role": "user", "content": "hi"}]), json_values),
        "input": json_values,
        "prompt": json_values,
        "max_tokens": json_values,
    },
)
request_lines = st.fixed_dictionaries(
    {},
    optional={
        "custom_id": st.one_of(hostile_text, json_values),
        "method": st.one_of(st.just("POST"), json_values),
        "url": st.one_of(st.sampled_from(ENDPOINTS), json_values),
        "body": st.one_of(bodies, json_values),
    },
)


@settings(PROPERTY, max_examples=200)
@given(
    lines=st.lists(st.one_of(request_lines, json_values), max_size=5),
    ascii_only=st.booleans(),
    limits=LIMITS,
    endpoint=st.one_of(st.none(), st.sampled_from(ENDPOINTS)),
)
def test_the_checker_accepts_only_files_that_keep_every_rule(lines, ascii_only, limits, endpoint):
    data = b"".join(encode_line(line, ascii_only=ascii_only) + b"\n" for line in lines)
    report = check(data, limits, endpoint)
    if not report.ok:
        return
    # An accepted file: every line a POST request object, ids unique, one endpoint, one model.
    assert len(lines) == report.lines
    ids = [line["custom_id"] for line in lines]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids)
    assert {line["method"] for line in lines} == {"POST"}
    assert {line["url"] for line in lines} == {report.endpoint} and report.endpoint in ENDPOINTS
    assert endpoint in (None, report.endpoint)
    assert {line["body"]["model"] for line in lines} == {report.model}
    data.decode("utf-8")  # accepted files are UTF-8


# --- The result-line parser ---------------------------------------------------------------------


def assert_result_line(result: ResultLine) -> None:
    assert isinstance(result.ok, bool)
    assert isinstance(result.raw, dict)
    for text in (result.custom_id, result.error_code, result.error_message, result.answer_text):
        assert text is None or isinstance(text, str)
    for number in (result.status_code, result.input_tokens, result.output_tokens):
        assert number is None or (isinstance(number, int) and not isinstance(number, bool))


def parse(raw: bytes) -> ResultLine | None:
    try:
        result = parse_result_line(raw)
    except ResultLineError as error:
        assert str(error).startswith("line is ")
        assert len(str(error)) < 300
        return None
    assert_result_line(result)
    return result


@PROPERTY
@given(raw=st.binary(max_size=3000))
def test_the_result_parser_reads_any_bytes_as_a_row_or_a_clear_error(raw):
    parse(raw)


USAGE_KEYS = st.sampled_from(
    ["prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "total_tokens"]
)
errors = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {}, optional={"code": json_values, "message": json_values, "type": json_values}
    ),
)
result_bodies = st.one_of(
    json_values,
    st.builds(lambda body: json.dumps(body), json_values),  # a body sent as a JSON string
    st.fixed_dictionaries(
        {},
        optional={
            "choices": st.one_of(
                json_values, st.lists(st.fixed_dictionaries({"message": json_objects}))
            ),
            "output": json_values,
            "output_text": json_values,
            "data": json_values,
            "results": json_values,
            "usage": st.one_of(json_values, st.dictionaries(USAGE_KEYS, json_scalars)),
            "error": errors,
        },
    ),
)
result_lines = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "custom_id": st.one_of(hostile_text, json_values),
        "response": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "status_code": st.one_of(st.sampled_from([200, 400, 500, "429"]), json_values),
                    "body": result_bodies,
                },
            ),
        ),
        "error": errors,
    },
)


@PROPERTY
@given(line=st.one_of(result_lines, json_values), ascii_only=st.booleans())
def test_the_result_parser_reads_any_json_as_a_row_or_a_clear_error(line, ascii_only):
    result = parse(encode_line(line, ascii_only=ascii_only))
    if result is not None and isinstance(line, dict):
        assert result.ok is False or not line.get("error")


def assert_fits_its_columns(instance: models.Model) -> None:
    """Every text field within its max_length, with nothing a database refuses; every integer
    within its column; every JSON field serialisable as strict JSON."""
    for field in instance._meta.concrete_fields:
        value = getattr(instance, field.attname)
        if value is None:
            continue
        if isinstance(field, models.CharField | models.TextField):
            assert isinstance(value, str), field.name
            if field.max_length:
                assert len(value) <= field.max_length, field.name
            assert "\x00" not in value, field.name
            value.encode("utf-8")  # no lone surrogate
        elif isinstance(field, models.PositiveIntegerField):
            assert 0 <= value <= 2**31 - 1, field.name
        elif isinstance(field, models.BigIntegerField):
            assert -(2**63) <= value <= 2**63 - 1, field.name
        elif isinstance(field, models.JSONField):
            json.dumps(value, allow_nan=False).encode("utf-8")


one_line_of_bytes = st.binary(max_size=50).map(lambda raw: raw.replace(b"\n", b""))


@settings(PROPERTY, max_examples=150)
@given(lines=st.lists(st.one_of(result_lines, json_values, one_line_of_bytes), max_size=6))
def test_result_files_summarize_and_become_rows_that_fit_their_columns(lines):
    raw_lines = [
        line if isinstance(line, bytes) else encode_line(line, ascii_only=False) for line in lines
    ]
    output = io.BytesIO(b"\n".join(raw_lines))
    summary = summarize([output, None], total_requests=len(lines))
    assert summary.succeeded + summary.failed + summary.unreadable_lines <= len(lines)
    assert len(summary.failed_by_code) <= MAX_CODES + 1
    assert all(len(code) <= 128 for code in summary.failed_by_code)
    json.dumps(summary.to_dict())
    batch = Batch(connection_id=1, openai_id="batch_p")
    offset = 0
    for raw in raw_lines:
        row = _result_row(batch, "output", offset, raw + b"\n", {})
        assert isinstance(row, ResultRow)
        assert_fits_its_columns(row)
        offset += len(raw) + 1


# --- The payload parser ---------------------------------------------------------------------------

BATCH_KEYS = [
    "id",
    "status",
    "endpoint",
    "model",
    "completion_window",
    "input_file_id",
    "output_file_id",
    "error_file_id",
    "created_at",
    "completed_at",
    "expires_at",
    "request_counts",
    "usage",
    "metadata",
    "errors",
]
# Keys of the objects inside a payload (request_counts, usage, metadata, errors).
INNER_KEYS = st.sampled_from(
    ["total", "completed", "failed", "input_tokens", "output_tokens", "total_tokens",
     "input_tokens_details", "job", "batchweb_user", "batchweb_token", "data"]
)  # fmt: skip
payload_changes = st.dictionaries(
    st.one_of(st.sampled_from(BATCH_KEYS), hostile_text),
    st.one_of(
        json_values,
        st.dictionaries(INNER_KEYS, json_values),
    ),
    max_size=5,
)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def hostile_payload(changes: dict[str, Any], normalized: bool) -> dict[str, Any]:
    payload = {**load_payload("batch_in_progress.json"), **changes}
    payload.setdefault("id", "batch_p")
    return normalize_batch(payload) if normalized else payload


@settings(PROPERTY, max_examples=150)
@given(changes=payload_changes, normalized=st.booleans())
def test_apply_payload_takes_any_json_and_keeps_every_field_in_its_column(changes, normalized):
    batch = Batch(connection_id=1, openai_id="batch_p")
    batch.apply_payload(hostile_payload(changes, normalized), now=NOW)
    assert_fits_its_columns(batch)
    assert batch.label == batch.metadata_label() or batch.label_edited


@pytest.mark.django_db
@settings(WITH_DB, max_examples=100)
@given(changes=payload_changes, normalized=st.booleans())
def test_batch_upsert_stores_any_json_payload(changes, normalized):
    payload = hostile_payload(changes, normalized)
    if payload["id"] is None:
        return  # the one documented precondition: a Batch object has an id
    result = batch_upsert(payload=payload)
    stored = Batch.objects.get(pk=result.batch.pk)
    assert_fits_its_columns(stored)
    assert batch_upsert(payload=payload).batch.pk == stored.pk  # the same payload again


# --- Every form -----------------------------------------------------------------------------------


def project_forms() -> list[type[forms.BaseForm]]:
    """Every form class defined in batchweb's apps, found by walking their modules, so a new
    form is covered without editing this test."""
    import api
    import batches

    for package in (batches, api):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".migrations" not in module.name and ".management" not in module.name:
                importlib.import_module(module.name)

    def subclasses(cls: type) -> list[type]:
        found = []
        for sub in cls.__subclasses__():
            found += [sub, *subclasses(sub)]
        return found

    return sorted(
        {c for c in subclasses(forms.BaseForm) if c.__module__.startswith(("batches", "api"))},
        key=lambda c: f"{c.__module__}.{c.__name__}",
    )


FORMS = project_forms()
field_values = st.one_of(
    hostile_text,
    st.sampled_from(["", "0", "-1", "1" * 30, "2026-13-45", "9999-12-31", "1", "on", "24h"]),
    st.sampled_from(ENDPOINTS),
    st.lists(hostile_text, max_size=3),
)


def test_every_form_class_of_the_project_is_exercised():
    names = {f"{c.__module__}.{c.__name__}" for c in FORMS}
    assert {"batches.forms.BatchCreateForm", "api.token_views.TokenForm"} <= names
    assert len(FORMS) >= 9


def make_form(cls: type[forms.BaseForm], data: dict[str, Any], files: dict[str, Any]) -> Any:
    if cls.__name__ == "BatchCreateForm":
        return cls(data, files, connections=[default_connection()])
    if cls.__name__ == "TokenForm":
        return cls(data, user=User.objects.get(username="alice"))
    return cls(data, files)


@pytest.mark.django_db
@pytest.mark.parametrize("form_class", FORMS, ids=lambda c: c.__name__)
def test_every_form_is_valid_or_has_errors_for_any_values(form_class, admin_user):
    form = make_form(form_class, {}, {})
    names = list(form.fields)
    file_fields = [n for n, f in form.fields.items() if isinstance(f, forms.FileField)]

    @settings(WITH_DB, max_examples=100)
    @given(
        values=st.fixed_dictionaries({}, optional={name: field_values for name in names}),
        upload=st.one_of(st.none(), st.tuples(hostile_text, st.binary(max_size=200))),
    )
    def property(values, upload):
        data = MultiValueDict(
            {
                k: [browser_text(i) for i in (v if isinstance(v, list) else [v])]
                for k, v in values.items()
                if k not in file_fields
            }
        )
        files = {}
        if upload and file_fields:
            name, content = upload
            files[file_fields[0]] = SimpleUploadedFile(
                name.encode("utf-8", "replace").decode() or "f", content
            )
        form = make_form(form_class, data, files)
        valid = form.is_valid()
        assert valid or form.errors
        for field_errors in form.errors.values():
            assert all(isinstance(str(e), str) for e in field_errors)
        if valid:
            for name, field in form.fields.items():
                value = form.cleaned_data.get(name)
                if isinstance(value, str) and getattr(field, "max_length", None):
                    assert len(value) <= field.max_length, name
        str(form)  # renders, hostile values escaped by the widgets

    property()


# --- Forms posted to their views ----------------------------------------------------------------


def assert_safe_page(response, *given: Any) -> None:
    assert response.status_code < 500
    page = response.content.decode()
    assert SCRIPT not in page and "<img src=x" not in page
    for value in given:
        if isinstance(value, str) and len(value) > 8 and value in page:
            # Echoed as it was only when there was nothing to escape.
            assert not re.search(r"[<>&\"']", value), value[:80]


def browser_text(text: str) -> str:
    """What a browser can send: form data is UTF-8, so it cannot carry a lone surrogate."""
    return text.encode("utf-8", "replace").decode()


def no_surrogates(values: dict[str, Any]) -> dict[str, Any]:
    return {k: browser_text(v) if isinstance(v, str) else v for k, v in values.items()}


VIEWS = settings(WITH_DB, max_examples=50)


@pytest.fixture
def signed_in(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.mark.django_db
def test_the_create_page_answers_any_posted_form_without_a_500(signed_in):
    names = ["label", "endpoint", "completion_window", "output_expires_after_hours",
             "submission_token", "connection", "meta_key_0", "meta_value_0", "meta_key_1",
             "meta_value_1"]  # fmt: skip

    @VIEWS
    @given(values=st.fixed_dictionaries({}, optional={n: hostile_text for n in names}))
    def property(values):
        # No file and no file id: the form is refused and shown again with what was sent.
        response = signed_in.post(reverse("batch-create"), no_surrogates(values))
        assert response.status_code == 400
        assert_safe_page(response, *values.values())

    property()


@pytest.mark.django_db
def test_an_upload_of_any_name_and_content_is_checked_and_shown_escaped(signed_in):
    tokens = itertools.count()

    @settings_for_upload
    @given(name=hostile_text, content=st.one_of(st.binary(max_size=300), valid_file()))
    def property(name, content):
        upload = SimpleUploadedFile(
            (name.encode("utf-8", "replace").decode() or "f")[:300], content
        )
        data = {"submission_token": f"tok-{next(tokens)}", "input_file": upload}
        response = signed_in.post(reverse("batch-create"), data, follow=True)
        assert_safe_page(response, name)

    property()


settings_for_upload = settings(WITH_DB, max_examples=40)


def valid_file() -> st.SearchStrategy[bytes]:
    """A file that passes the check, so its name reaches the confirmation page."""

    def line(n: int, text: str) -> bytes:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
        request = {"custom_id": f"{text}{n}", "method": "POST", "url": ENDPOINTS[1], "body": body}
        return json.dumps(request).encode() + b"\n"

    return st.lists(hostile_text, min_size=1, max_size=3).map(
        lambda texts: b"".join(line(n, text) for n, text in enumerate(texts))
    )


@pytest.mark.django_db
def test_the_label_profile_and_token_forms_take_any_value_without_a_500(signed_in):
    # Finished, so its page does not ask upstream for news.
    payload = {**load_payload("batch_in_progress.json"), "id": "batch_p", "status": "completed"}
    batch = batch_upsert(payload=payload).batch
    label_url = reverse("batch-label", args=[batch.connection.slug, batch.openai_id])

    @VIEWS
    @given(value=hostile_text)
    def label(value):
        response = signed_in.post(label_url, no_surrogates({"label": value}), follow=True)
        assert_safe_page(response, value)

    @VIEWS
    @given(values=st.fixed_dictionaries({"email": hostile_text, "my_batches": hostile_text}))
    def profile(values):
        response = signed_in.post(reverse("profile"), no_surrogates(values), follow=True)
        assert_safe_page(response, *values.values())

    @VIEWS
    @given(values=st.fixed_dictionaries({"name": hostile_text, "scope": hostile_text,
                                         "days": hostile_text}))  # fmt: skip
    def token(values):
        response = signed_in.post(reverse("token-create"), no_surrogates(values), follow=True)
        assert_safe_page(response, *values.values())

    label()
    profile()
    token()


FILTERS = {
    "batch-list": ["q", "status", "endpoint", "model", "creator", "connection", "label", "after",
                   "before"],
    "activity": ["user", "action", "connection", "batch", "since", "until", "before"],
    "spend": ["range", "start", "end", "by", "connection"],
}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("page", list(FILTERS))
def test_the_list_activity_and_spend_filters_take_any_value_without_a_500(signed_in, page):
    batch_upsert(payload={**load_payload("batch_in_progress.json"), "id": "batch_p"})
    url = reverse(page)

    @VIEWS
    @given(values=st.fixed_dictionaries({}, optional={p: field_values for p in FILTERS[page]}))
    def property(values):
        query = no_surrogates({k: v for k, v in values.items() if isinstance(v, str)})
        response = signed_in.get(url, query)
        assert response.status_code == 200
        assert_safe_page(response, *query.values())

    property()
