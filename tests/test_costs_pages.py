"""Costs on the pages: the stored cost on the batch page and in the list (read, never computed,
no extra query), and the estimated range on the confirm page before submitting."""

from __future__ import annotations

import html
import json
import re
from decimal import Decimal
from io import BytesIO
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from batches.cache import rows
from batches.jsonl_check import check_jsonl
from batches.models import Batch, Submission
from batches.services.costs import batch_cost_store, submission_cost_range
from tests.test_costs import AT, ended, usage
from tests.test_submissions import confirm_url, get_token, post_file

LIST = reverse("batch-list")
CHAT = "/v1/chat/completions"


def detail(openai_id: str) -> str:
    return reverse("batch-detail", args=["default", openai_id])


def plain(response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


# --- The batch page and the list -----------------------------------------------------------------


def test_the_batch_page_shows_the_stored_cost_as_an_estimate_with_its_source(viewer_client):
    batch = ended(usage=usage(2_000_000, 1_000_000))
    batch_cost_store(batch=batch)

    response = viewer_client.get(detail(batch.openai_id))

    assert "Cost $7.50 estimated (saved $7.50 against list price)" in plain(response)
    assert re.search(r'title="Prices: genai-prices 0\.2[^"]*"', response.content.decode())


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"model": "text-embedding-3-small", "usage": usage(1000, 0)}, "no batch price known"),
        ({"usage": None}, "usage unknown"),
    ],
)
def test_the_batch_page_says_in_words_why_there_is_no_figure(viewer_client, payload, words):
    batch = ended(**payload)
    batch_cost_store(batch=batch)

    assert f"Cost {words}" in plain(viewer_client.get(detail(batch.openai_id)))


def test_a_page_view_never_computes_the_cost(viewer_client):
    batch = ended(usage=usage(1000, 1000))

    response = viewer_client.get(detail(batch.openai_id))

    assert "Cost not computed yet" in plain(response)
    assert Batch.objects.get(pk=batch.pk).cost_computed_at is None


def _cells(response, label: str) -> list[str]:
    return [
        html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
        for cell in re.findall(
            rf'<td data-label="{label}"[^>]*>(.*?)</td>', response.content.decode()
        )
    ]


def _queries(client) -> int:
    """Of a request that draws the list and its rows (not one served from the page cache)."""
    caches["pages"].clear()
    rows.forget()
    caches["people"].clear()
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(LIST).status_code == 200
    return len(ctx.captured_queries)


def test_the_list_shows_the_stored_costs_without_an_extra_query(
    viewer_client, django_assert_num_queries
):
    for i in range(6):
        ended(f"batch_l{i}", usage=usage(1_000_000 * (i + 1), 0))
    ended("batch_emb", model="text-embedding-3-small", usage=usage(1000, 0))
    viewer_client.get(LIST)  # warm the session and permission caches
    before = _queries(viewer_client)
    assert set(_cells(viewer_client.get(LIST), "Cost")) == {"—"}

    for batch in Batch.objects.all():
        batch_cost_store(batch=batch)  # raises the connection's number: the list is drawn
    rows.forget()  # as _queries does: drawn, frame and all
    for alias in ("pages", "people"):
        caches[alias].clear()
    with django_assert_num_queries(before):
        response = viewer_client.get(LIST)

    cells = dict(
        zip(
            re.findall(r'data-batch-id="([^"]+)"', response.content.decode()),
            _cells(response, "Cost"),
            strict=True,
        )
    )
    # i + 1 million input tokens at $1.25
    assert cells["batch_l0"] == "$1.25"
    assert cells["batch_l5"] == "$7.50"
    assert cells["batch_emb"] == "no batch price known"
    assert (
        '<th scope="col" title="Estimated at batch prices">Cost</th>' in response.content.decode()
    )


# --- Before submitting ---------------------------------------------------------------------------


def chat_line(number: int, chars: int, **limits: int) -> dict[str, Any]:
    return {
        "custom_id": f"req-{number}",
        "method": "POST",
        "url": CHAT,
        "body": {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "x" * chars}],
            **limits,
        },
    }


def jsonl(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


LIMITED = jsonl(
    chat_line(1, 40_000, max_tokens=100_000),
    chat_line(2, 40_000, max_completion_tokens=100_000),
    chat_line(3, 40_000, max_output_tokens=100_000, max_tokens=5),  # the largest counts
)
UNLIMITED = jsonl(chat_line(1, 40_000, max_tokens=100_000), chat_line(2, 40_000))


def test_the_file_check_adds_up_each_lines_output_limit():
    report = check_jsonl(BytesIO(LIMITED))
    assert (report.max_output_tokens, report.lines_without_max) == (300_000, 0)
    assert report.estimated_input_tokens == 30_000  # 120,000 characters / 4

    partial = check_jsonl(BytesIO(UNLIMITED))
    assert (partial.max_output_tokens, partial.lines_without_max) == (100_000, 1)


def _submission(client, content: bytes) -> tuple[str, Submission]:
    token = get_token(client)
    response = post_file(client, token, content)
    assert response.status_code == 302
    return token, Submission.objects.get(token=token)


@pytest.fixture
def staging(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"


def test_the_cost_range_is_input_at_the_batch_price_and_output_up_to_the_limits(
    submitter_client, staging
):
    _, submission = _submission(submitter_client, LIMITED)

    cost = submission_cost_range(submission=submission, now=AT)

    # 30,000 input tokens at $1.25 per million; up to 300,000 output tokens at $5
    assert cost.low == Decimal("0.0375")
    assert cost.high == Decimal("1.5375")
    # list: $2.50 and $10
    assert (cost.list_low, cost.list_high) == (Decimal("0.075"), Decimal("3.075"))
    assert (cost.saved_low, cost.saved_high) == (Decimal("0.0375"), Decimal("1.5375"))


def test_the_confirm_page_shows_the_range_and_the_saving(submitter_client, staging):
    token, _ = _submission(submitter_client, LIMITED)

    shown = plain(submitter_client.get(confirm_url(token)))

    assert "Input tokens about 30,000 (a rough estimate" in shown
    assert "Estimated cost $0.04 to $1.54 at the batch price" in shown
    assert "the 300,000 tokens the lines allow" in shown
    assert "Saving $0.04 to $1.54 against the list price" in shown


def test_the_confirm_page_says_the_upper_bound_is_unknown_when_a_line_has_no_limit(
    submitter_client, staging
):
    token, submission = _submission(submitter_client, UNLIMITED)

    shown = plain(submitter_client.get(confirm_url(token)))

    assert submission_cost_range(submission=submission, now=AT).high is None
    assert "Estimated cost from $0.03; no upper bound" in shown  # 20,000 x $1.25 / M
    assert "1 line gives no max_tokens" in shown


def test_the_confirm_page_says_when_no_batch_price_is_known(submitter_client, staging):
    content = jsonl({**chat_line(1, 400), "body": {**chat_line(1, 400)["body"], "model": "my-llm"}})
    token, _ = _submission(submitter_client, content)

    shown = plain(submitter_client.get(confirm_url(token)))

    assert "Estimated cost no batch price known for my-llm" in shown
    assert "Saving" not in shown


def test_a_file_checked_before_limits_were_counted_has_no_upper_bound(submitter_client, staging):
    _, submission = _submission(submitter_client, LIMITED)
    facts = dict(submission.facts)
    del facts["max_output_tokens"], facts["lines_without_max"]
    submission.facts = facts

    cost = submission_cost_range(submission=submission, now=AT)

    assert cost.low == Decimal("0.0375") and cost.high is None
