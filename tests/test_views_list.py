"""The batch list: read from the cache only, filtered, searched and paged by keyset."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from responses import matchers

from batches.cache import rows
from batches.models import Batch, SyncState, default_connection
from batches.openai_client import UpstreamUnavailable
from batches.services.batches import batch_upsert
from batches.views.batches import PAGE_SIZE
from tests.conftest import make_batch, make_list

API = settings.OPENAI_BASE_URL
LIST = reverse("batch-list")
BASE_TIME = 1764000000


def add(openai_id: str, *, created_at: int = BASE_TIME, by: User | None = None, **fields: Any):
    fields.setdefault("metadata", None)
    if by is not None:
        # The creator is linked the way batchweb links it: from the username it stamps.
        fields["metadata"] = {**(fields["metadata"] or {}), "batchweb_user": by.username}
    return batch_upsert(payload=make_batch(id=openai_id, created_at=created_at, **fields)).batch


def row_ids(response) -> list[str]:
    """The batch ids of the table rows, in page order."""
    return re.findall(r'<tr id="row-\d+" data-batch-id="([^"]+)">', response.content.decode())


def tab_counts(response) -> dict[str, int]:
    return {tab["label"]: tab["count"] for tab in response.context["tabs"]}


@pytest.fixture
def mixed(db, submitter, admin_user) -> None:
    """One batch in each status, with different endpoints, models and creators."""
    add("batch_val", created_at=BASE_TIME + 8, status="validating", by=submitter)
    add("batch_run", created_at=BASE_TIME + 7, status="in_progress", by=submitter)
    add("batch_fin", created_at=BASE_TIME + 6, status="finalizing", model="gpt-4.1-mini")
    add(
        "batch_cing",
        created_at=BASE_TIME + 5,
        status="cancelling",
        endpoint="/v1/embeddings",
        model="text-embedding-3-small",
    )
    add(
        "batch_ok",
        created_at=BASE_TIME + 4,
        status="completed",
        endpoint="/v1/embeddings",
        model="text-embedding-3-small",
        output_file_id="file-OutOK",
        error_file_id="file-errok",
        by=admin_user,
    )
    add("batch_bad", created_at=BASE_TIME + 3, status="failed", by=admin_user)
    add("batch_exp", created_at=BASE_TIME + 2, status="expired", input_file_id="file-expin")
    add(
        "batch_cld",
        created_at=BASE_TIME + 1,
        status="cancelled",
        metadata={"job": "Nightly-Eval", "team": "Search"},
    )


def test_the_list_shows_batches_newest_first(viewer_client, mixed):
    response = viewer_client.get(LIST)

    assert response.status_code == 200
    assert row_ids(response) == [
        "batch_val",
        "batch_run",
        "batch_fin",
        "batch_cing",
        "batch_ok",
        "batch_bad",
        "batch_exp",
        "batch_cld",
    ]


def test_the_list_never_calls_upstream(viewer_client, upstream, mixed):
    response = viewer_client.get(LIST, {"q": "batch", "status": "running"})

    assert response.status_code == 200
    assert len(upstream.calls) == 0


def test_status_tabs_count_each_group_and_running_covers_every_unfinished_status(
    viewer_client, mixed
):
    response = viewer_client.get(LIST)

    assert tab_counts(response) == {
        "All": 8,
        "Running": 4,
        "Completed": 1,
        "Failed": 1,
        "Expired": 1,
        "Cancelled": 1,
    }
    content = response.content.decode()
    assert re.search(r'Running <span class="count">4</span>', content)


def test_the_status_tabs_add_up_to_all(viewer_client, mixed):
    counts = tab_counts(viewer_client.get(LIST))

    assert sum(n for label, n in counts.items() if label != "All") == counts["All"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("running", ["batch_val", "batch_run", "batch_fin", "batch_cing"]),
        ("completed", ["batch_ok"]),
        ("failed", ["batch_bad"]),
        ("expired", ["batch_exp"]),
        ("cancelled", ["batch_cld"]),
        ("in_progress", ["batch_run"]),
        ("cancelling", ["batch_cing"]),
    ],
)
def test_filtering_by_status_shows_only_that_status(viewer_client, mixed, status, expected):
    response = viewer_client.get(LIST, {"status": status})

    assert row_ids(response) == expected


def test_the_active_status_tab_is_marked(viewer_client, mixed):
    response = viewer_client.get(LIST, {"status": "failed"})

    active = [tab["label"] for tab in response.context["tabs"] if tab["active"]]
    assert active == ["Failed"]
    assert 'aria-current="true" class="active">Failed' in response.content.decode()


def test_filtering_by_endpoint(viewer_client, mixed):
    response = viewer_client.get(LIST, {"endpoint": "/v1/embeddings"})

    assert row_ids(response) == ["batch_cing", "batch_ok"]
    assert tab_counts(response)["All"] == 2


def test_filtering_by_model(viewer_client, mixed):
    response = viewer_client.get(LIST, {"model": "gpt-4.1-mini"})

    assert row_ids(response) == ["batch_fin"]
    assert '<option value="gpt-4.1-mini" selected>' in response.content.decode()


def test_filtering_by_creator(viewer_client, mixed):
    response = viewer_client.get(LIST, {"creator": "alice"})

    assert row_ids(response) == ["batch_ok", "batch_bad"]
    assert response.context["creators"] is not None
    assert list(response.context["creators"]) == ["alice", "sam"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("batch_cing", ["batch_cing"]),
        ("BATCH_CING", ["batch_cing"]),
        ("file-expin", ["batch_exp"]),
        ("file-outok", ["batch_ok"]),
        ("FILE-ERROK", ["batch_ok"]),
        ("nightly-eval", ["batch_cld"]),
        ("NIGHTLY", ["batch_cld"]),
        ("team=search", ["batch_cld"]),
        ("  search  ", ["batch_cld"]),
    ],
)
def test_search_finds_batch_ids_file_ids_and_metadata_ignoring_case(
    viewer_client, mixed, query, expected
):
    response = viewer_client.get(LIST, {"q": query})

    assert row_ids(response) == expected


def test_search_by_the_shared_input_file_id_finds_every_batch_that_used_it(viewer_client, mixed):
    response = viewer_client.get(LIST, {"q": "file-in123"})

    assert "batch_exp" not in row_ids(response)
    assert len(row_ids(response)) == 7


def test_filters_combine(viewer_client, mixed):
    response = viewer_client.get(
        LIST,
        {
            "status": "completed",
            "endpoint": "/v1/embeddings",
            "model": "text-embedding-3-small",
            "creator": "alice",
            "q": "file-outok",
        },
    )

    assert row_ids(response) == ["batch_ok"]
    assert tab_counts(response) == {
        "All": 1,
        "Running": 0,
        "Completed": 1,
        "Failed": 0,
        "Expired": 0,
        "Cancelled": 0,
    }


def test_combined_filters_that_exclude_each_other_show_an_empty_filtered_state(
    viewer_client, mixed
):
    response = viewer_client.get(LIST, {"status": "failed", "endpoint": "/v1/embeddings"})

    assert response.status_code == 200
    assert row_ids(response) == []
    content = response.content.decode()
    assert "No batch matches these filters" in content
    assert "No batches yet" not in content


def test_the_status_tabs_keep_the_other_filters(viewer_client, mixed):
    response = viewer_client.get(LIST, {"endpoint": "/v1/embeddings", "q": "batch"})

    content = response.content.decode()
    assert "?endpoint=%2Fv1%2Fembeddings&amp;q=batch&amp;status=failed" in content


@pytest.mark.parametrize(
    "params",
    [
        {"status": "bogus"},
        {"status": "x" * 500},
        {"endpoint": "/v1/unknown"},
        {"model": "no-such-model"},
        {"creator": "nobody"},
        {"q": "x" * 1000},
        {"after": "not-a-number"},
        {"before": "-1"},
        {"after": "999999"},
        {"q": "%_\\'\"<script>"},
    ],
)
def test_unknown_filter_values_do_not_crash_the_page(viewer_client, upstream, mixed, params):
    response = viewer_client.get(LIST, params)

    assert response.status_code == 200
    assert "<script>" not in response.content.decode().split("</head>", 1)[1].replace(
        "<script src=", ""
    )
    assert len(upstream.calls) == 0


def test_an_unknown_status_shows_every_batch(viewer_client, mixed):
    assert len(row_ids(viewer_client.get(LIST, {"status": "bogus"}))) == 8


def test_an_unknown_endpoint_shows_no_batch(viewer_client, mixed):
    response = viewer_client.get(LIST, {"endpoint": "/v1/unknown"})

    assert row_ids(response) == []
    assert "No batch matches these filters" in response.content.decode()


def test_an_empty_cache_shows_how_to_get_started(viewer_client, upstream):
    response = viewer_client.get(LIST)

    assert response.status_code == 200
    content = response.content.decode()
    assert "No batches yet" in content
    assert "Sync now" in content
    assert "ask a submitter to create one" in content
    assert "Not synced with upstream yet" in content
    assert len(upstream.calls) == 0


def test_an_empty_cache_offers_submitters_a_create_link(submitter_client):
    content = submitter_client.get(LIST).content.decode()

    assert "No batches yet" in content
    assert f'<a href="{reverse("batch-create")}">create a batch</a>' in content


def test_a_completed_batch_where_every_request_failed_is_shown_as_all_failed(viewer_client, db):
    add(
        "batch_allfail",
        status="completed",
        output_file_id=None,
        error_file_id="file-err1",
        request_counts={"total": 250, "completed": 0, "failed": 250},
    )
    add(
        "batch_somefail",
        created_at=BASE_TIME - 10,
        status="completed",
        request_counts={"total": 100, "completed": 97, "failed": 3},
    )

    content = viewer_client.get(LIST).content.decode()

    row = content.split('data-batch-id="batch_allfail"', 1)[1].split("</tr>", 1)[0]
    assert '<span class="badge s-failed">completed, all failed</span>' in row
    assert "250 failed" in row
    other = content.split('data-batch-id="batch_somefail"', 1)[1].split("</tr>", 1)[0]
    assert '<span class="badge s-warning">completed with failures</span>' in other


def test_the_list_shows_label_model_endpoint_creator_and_progress(viewer_client, submitter):
    add(
        "batch_row",
        status="in_progress",
        metadata={"job": "weekly-report"},
        request_counts={"total": 10000, "completed": 7000, "failed": 120},
        by=submitter,
    )

    content = viewer_client.get(LIST).content.decode()

    row = content.split('data-batch-id="batch_row"', 1)[1].split("</tr>", 1)[0]
    assert "weekly-report" in row
    assert "gpt-4o-mini-2024-07-18" in row
    assert "/v1/chat/completions" in row
    assert "sam" in row
    assert "7,120 / 10,000" in row
    assert "in progress" in row


def test_a_failing_sync_shows_a_banner_on_the_list(viewer_client, mixed):
    SyncState.get(default_connection()).record_failure(
        UpstreamUnavailable("bad gateway", status=502, request_id="req_banner1")
    )

    content = viewer_client.get(LIST).content.decode()

    assert "Upstream is failing" in content
    assert "req_banner1" in content
    assert "The pages show the cached data" in content
    assert len(row_ids(viewer_client.get(LIST))) == 8


# --- Keyset pagination ------------------------------------------------------------------------


@pytest.fixture
def many(db) -> list[str]:
    """120 batches; groups of three share a creation second so the id tie-break matters.
    Returns the ids newest first."""
    template = make_batch(status="completed", metadata=None)
    ids = []
    for i in range(120):
        openai_id = f"batch_{i:03d}"
        batch_upsert(payload={**template, "id": openai_id, "created_at": BASE_TIME + i // 3})
        ids.append(openai_id)
    return ids[::-1]


def test_pages_hold_page_size_rows_and_walk_older_then_back_newer_without_gaps(viewer_client, many):
    assert PAGE_SIZE == 50
    first = viewer_client.get(LIST)
    page1 = row_ids(first)
    assert page1 == many[:50]
    assert first.context["newer_url"] is None

    second = viewer_client.get(LIST + first.context["older_url"])
    page2 = row_ids(second)
    assert page2 == many[50:100]

    third = viewer_client.get(LIST + second.context["older_url"])
    page3 = row_ids(third)
    assert page3 == many[100:]
    assert third.context["older_url"] is None
    assert third.context["newer_url"] is not None

    back2 = viewer_client.get(LIST + third.context["newer_url"])
    assert row_ids(back2) == page2
    back1 = viewer_client.get(LIST + back2.context["newer_url"])
    assert row_ids(back1) == page1
    assert back1.context["newer_url"] is None
    assert back1.context["older_url"] is not None

    seen = page1 + page2 + page3
    assert len(seen) == len(set(seen)) == 120


def test_pager_links_are_rendered_with_after_and_before_cursors(viewer_client, many):
    first = viewer_client.get(LIST)
    last_pk = Batch.objects.get(openai_id=many[49]).pk
    assert first.context["older_url"] == f"?after={last_pk}"
    assert f'href="?after={last_pk}" rel="next">Older' in first.content.decode()

    second = viewer_client.get(LIST, {"after": last_pk})
    first_pk = Batch.objects.get(openai_id=many[50]).pk
    assert second.context["newer_url"] == f"?before={first_pk}"


def test_pagination_keeps_the_filters(viewer_client, many, db):
    template = make_batch(endpoint="/v1/embeddings", metadata=None)
    for i in range(60):
        batch_upsert(
            payload={**template, "id": f"batch_emb{i:02d}", "created_at": BASE_TIME + 1000 + i}
        )

    first = viewer_client.get(LIST, {"endpoint": "/v1/embeddings"})
    older = first.context["older_url"]
    assert "endpoint=%2Fv1%2Fembeddings" in older

    second = viewer_client.get(LIST + older)
    assert row_ids(second) == [f"batch_emb{i:02d}" for i in range(9, -1, -1)]
    assert second.context["older_url"] is None


def test_a_page_of_exactly_page_size_rows_has_no_older_link(viewer_client, db):
    template = make_batch()
    for i in range(PAGE_SIZE):
        batch_upsert(payload={**template, "id": f"batch_{i:03d}", "created_at": BASE_TIME + i})

    response = viewer_client.get(LIST)

    assert len(row_ids(response)) == PAGE_SIZE
    assert response.context["older_url"] is None
    assert response.context["newer_url"] is None


# --- Query counts -------------------------------------------------------------------------------


def _fill(n: int, users: list[User]) -> None:
    """n batches in several statuses, models and creators (the template is checked once)."""
    template = make_batch()
    for i in range(n):
        batch = batch_upsert(
            payload={
                **template,
                "id": f"batch_q{i:03d}",
                "created_at": BASE_TIME + i,
                "status": ["in_progress", "completed", "failed"][i % 3],
                "model": f"model-{i % 4}",
                "metadata": {"job": f"job-{i}"},
                "request_counts": {"total": 10, "completed": i % 10, "failed": 1},
            }
        ).batch
        batch.created_by = users[i % len(users)]
        batch.save(update_fields=["created_by"])


def _count_queries(client, params: dict[str, str]) -> int:
    rows.forget()  # every row drawn, every estimate read: all counted
    caches["pages"].clear()
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(LIST, params)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "params", [{}, {"status": "running"}, {"q": "job", "creator": "sam"}, {"after": "third"}]
)
def test_the_number_of_queries_for_5_rows_equals_the_number_for_60_rows(
    viewer_client, submitter, admin_user, viewer, params, django_assert_num_queries
):
    def resolved() -> dict[str, str]:
        if params.get("after") == "third":  # a keyset page, anchored on the third-newest row
            return {"after": str(Batch.objects.order_by("-created_at", "-id")[2].pk)}
        return params

    _fill(5, [submitter, admin_user, viewer])
    viewer_client.get(LIST)  # warm the session and permission caches alike for both runs
    few = _count_queries(viewer_client, resolved())

    Batch.objects.all().delete()
    _fill(60, [submitter, admin_user, viewer])
    viewer_client.get(LIST)
    query = resolved()
    rows.forget()
    caches["pages"].clear()
    with django_assert_num_queries(few):
        response = viewer_client.get(LIST, query)

    assert len(row_ids(response)) > 5


def test_the_list_page_stays_within_a_small_query_budget(
    viewer_client, submitter, django_assert_max_num_queries
):
    _fill(60, [submitter])

    # Drawn with no row cached: the rows' values, then the batches of the rows to draw (a row
    # the cache has costs no query), counts and filter choices.
    with django_assert_max_num_queries(15):
        response = viewer_client.get(LIST)
    # From the page cache: the session, the person, the cache generation (read for their
    # access and permissions, then again for the page) and the freshness line.
    with django_assert_max_num_queries(5):
        again = viewer_client.get(LIST)

    assert len(row_ids(response)) == PAGE_SIZE
    assert row_ids(again) == row_ids(response)


# --- Sync now -----------------------------------------------------------------------------------

SYNC = reverse("batch-sync")


def test_sync_now_walks_upstream_and_reports_the_counts(operator_client, upstream):
    upstream.get(
        f"{API}/batches",
        json=make_list(
            [
                make_batch(id="batch_s1", status="in_progress"),
                make_batch(id="batch_s2", status="completed", created_at=BASE_TIME - 60),
            ]
        ),
        match=[matchers.query_param_matcher({"limit": "100"})],
    )
    upstream.get(f"{API}/batches/batch_s1", json=make_batch(id="batch_s1", status="finalizing"))

    response = operator_client.post(SYNC, {"next": LIST})

    assert response.status_code == 302
    assert response["Location"] == LIST
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Synced: 2 new, 0 changed, 1 running batch refreshed."
    ]
    assert dict(Batch.objects.values_list("openai_id", "status")) == {
        "batch_s1": "finalizing",
        "batch_s2": "completed",
    }
    state = SyncState.get(default_connection())
    assert state.last_success_at is not None
    assert not state.is_failing
    assert "Data synced" in operator_client.get(LIST).content.decode()


def test_sync_now_reads_a_bounded_number_of_pages_and_leaves_the_rest_to_the_worker(
    operator_client, upstream, settings
):
    settings.SYNC_NOW_MAX_PAGES = 2
    settings.SYNC_NOW_MAX_REFRESHES = 1
    pages = [
        [make_batch(id=f"batch_p{p}_{i}", status="completed", metadata=None) for i in range(2)]
        for p in range(3)
    ]
    pages[0][0] = make_batch(id="batch_p0_0", status="in_progress", metadata=None)
    pages[0][1] = make_batch(id="batch_p0_1", status="in_progress", metadata=None)
    upstream.get(
        f"{API}/batches",
        json=make_list(pages[0], has_more=True),
        match=[matchers.query_param_matcher({"limit": "100"})],
    )
    upstream.get(
        f"{API}/batches",
        json=make_list(pages[1], has_more=True),
        match=[matchers.query_param_matcher({"limit": "100", "after": "batch_p0_1"})],
    )
    upstream.get(f"{API}/batches/batch_p0_0", json=make_batch(id="batch_p0_0", metadata=None))
    upstream.get(f"{API}/batches/batch_p0_1", json=make_batch(id="batch_p0_1", metadata=None))

    response = operator_client.post(SYNC, {"next": LIST})

    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert message.startswith("Synced: 4 new, 0 changed, 1 running batch refreshed.")
    assert "the worker fetches the rest" in message
    assert Batch.objects.count() == 4
    listed = [c for c in upstream.calls if c.request.url.split("?")[0].endswith("/batches")]
    retrieved = [c for c in upstream.calls if "/batches/batch_" in c.request.url]
    assert (len(listed), len(retrieved)) == (2, 1)


def test_sync_now_returns_to_the_filtered_page_it_was_pressed_on(operator_client, upstream):
    upstream.get(f"{API}/batches", json=make_list([]))

    response = operator_client.post(SYNC, {"next": "/?status=failed&q=abc"})

    assert response["Location"] == "/?status=failed&q=abc"


def test_a_failing_sync_now_says_so_records_the_error_and_raises_the_banner(
    operator_client, upstream, mixed, no_sleep
):
    upstream.get(
        f"{API}/batches",
        status=500,
        json={"error": {"message": "The server had an error", "type": "server_error"}},
        headers={"x-request-id": "req_sync500"},
    )

    response = operator_client.post(SYNC, {"next": LIST})

    assert response.status_code == 302
    ((message,),) = [[str(m) for m in get_messages(response.wsgi_request)]]
    assert message.startswith("Sync failed; the list shows what was cached before.")
    assert "HTTP 500" in message
    assert "req_sync500" in message
    state = SyncState.get(default_connection())
    assert state.is_failing
    assert state.last_error_request_id == "req_sync500"
    assert "The server had an error" in state.last_error
    assert len(upstream.calls) == 2  # one retry: a person is waiting

    page = operator_client.get(LIST)
    content = page.content.decode()
    assert "Upstream is failing" in content
    assert "The server had an error" in content
    assert "req_sync500" in content
    assert len(row_ids(page)) == 8  # the cache is still shown
    assert "Traceback" not in content


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "http://evil.example/batches/",
        "javascript:alert(1)",
        "https:///evil.example",
        "",
    ],
)
def test_sync_now_never_redirects_to_another_site(operator_client, upstream, target):
    upstream.get(f"{API}/batches", json=make_list([]))

    response = operator_client.post(SYNC, {"next": target})

    assert response.status_code == 302
    assert response["Location"] == LIST


def test_sync_now_by_get_is_refused(operator_client, upstream):
    response = operator_client.get(SYNC)

    assert response.status_code == 405
    assert len(upstream.calls) == 0
