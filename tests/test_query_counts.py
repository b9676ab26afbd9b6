"""Guards (issue 14): no page makes more SQL queries because it shows more rows. Each page is
requested with a small and a larger cache (or batch, or results table) and the counts must be
equal; a query per row (a missing select_related, a lookup in a template) fails here first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest
import requests
from django.contrib.auth.models import User
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from api.services.tokens import token_create
from batches.models import Batch, BatchTally, Connection, Event, ResultRow
from batches.services.spend import spend_rollup

SMALL, LARGE = 3, 60


def fill(count: int, *, running: int = 2) -> list[Batch]:
    """`count` batches on three connections, by several people, with labels, metadata, costs;
    the newest `running` still running. Replaces any there were."""
    Batch.objects.all().delete()
    conns = [
        Connection.objects.update_or_create(
            slug=f"q-{i}",
            defaults={"name": f"Q {i}", "base_url": "http://127.0.0.1:9", "key_env": "Q_KEY"},
        )[0]
        for i in range(3)
    ]
    people = [User.objects.get_or_create(username=f"qp{i}")[0] for i in range(4)]
    now = timezone.now()
    rows = []
    for i in range(count):
        status = "in_progress" if i < running else ["completed", "failed", "expired"][i % 3]
        rows.append(
            Batch(
                connection=conns[i % 3],
                openai_id=f"batch_q{i:04d}",
                status=status,
                running=i < running,
                endpoint="/v1/chat/completions",
                model=["gpt-4o-mini", "gpt-4.1"][i % 2],
                created_at=now - dt.timedelta(minutes=i + 1),
                in_progress_at=now - dt.timedelta(minutes=i),
                completed_at=None if i < running else now,
                request_total=100,
                request_completed=50 if i < running else 100,
                request_failed=i % 2,
                input_tokens=1000,
                output_tokens=200,
                metadata={"job": f"job {i % 5}", "batchweb_user": people[i % 4].username},
                label=f"job {i % 5}",
                search_text=f"batch_q{i:04d} job {i % 5}",
                created_by=people[i % 4],
                raw={"id": f"batch_q{i:04d}", "object": "batch", "status": status},
                synced_at=now,
                cost_usd=None if i < running else Decimal("1.5"),
                list_cost_usd=None if i < running else Decimal("3"),
                cost_computed_at=None if i < running else now,
            )
        )
    Batch.objects.bulk_create(rows)
    BatchTally.rebuild()
    return list(Batch.objects.order_by("-created_at", "-id"))


def count_queries(get: Callable[[], object]) -> tuple[int, int]:
    """The queries of the request drawn afresh, and of the same request served from the page
    cache (batches/cache/pages.py; the same count for pages it does not keep)."""
    get()  # the first request fills per-process caches (content types, permissions)
    counts = []
    for drawn in (True, False):
        if drawn:
            caches["pages"].clear()
            caches["people"].clear()
        with CaptureQueriesContext(connection) as captured:
            response = get()
        assert response.status_code == 200, response.status_code
        counts.append(len(captured))
    return counts[0], counts[1]


def same_at_both_sizes(client, url_for: Callable[[list[Batch]], str], **extra) -> None:
    counts = []
    for size in (SMALL, LARGE):
        batches = fill(size)
        url = url_for(batches)
        counts.append(count_queries(lambda url=url: client.get(url, **extra)))
    assert counts[0] == counts[1], f"{counts[0]} queries for {SMALL} rows, {counts[1]} for {LARGE}"


LIST_URLS = {
    "all": "",
    "status": "?status=completed",
    "running": "?status=running",
    "connection": "?connection=q-1",
    "search": "?q=job",
    "model": "?model=gpt-4.1",
    "creator": "?creator=qp1",
    "label": "?label=job+2",
}


@pytest.mark.parametrize("query", LIST_URLS.values(), ids=LIST_URLS.keys())
def test_the_list_makes_as_many_queries_for_60_rows_as_for_3(viewer_client, query):
    same_at_both_sizes(viewer_client, lambda batches: reverse("batch-list") + query)


def test_the_list_of_a_person_limited_to_some_connections_does_too(viewer_client, viewer):
    from django.contrib.auth.models import Group

    team = Group.objects.create(name="Team Q")
    viewer.groups.add(team)
    fill(1)
    Connection.objects.get(slug="q-0").groups.add(team)  # restricted to the team
    Connection.objects.get(slug="q-2").groups.add(Group.objects.create(name="Others"))
    same_at_both_sizes(viewer_client, lambda batches: reverse("batch-list"))


def test_the_live_rows_make_as_many_queries_for_20_rows_as_for_2(viewer_client):
    def url(batches: list[Batch]) -> str:
        running = batches[:2] if len(batches) == SMALL else batches[:20]
        ids = ",".join(f"{b.pk}:validating" for b in running)
        return reverse("batch-rows-live") + "?ids=" + ids

    counts = []
    for size in (SMALL, LARGE):
        batches = fill(size, running=2 if size == SMALL else 20)
        target = url(batches)
        counts.append(count_queries(lambda target=target: viewer_client.get(target)))
    assert counts[0] == counts[1]


def test_a_batch_page_makes_as_many_queries_with_5_retries_as_with_1(viewer_client):
    counts, pages = [], []
    for retries in (1, 5):
        batches = fill(10)
        batch = batches[-1]
        for retry in batches[2 : 2 + retries]:  # finished batches of several people
            retry.retry_of = batch
            retry.save(update_fields=["retry_of"])
        url = batch.get_absolute_url()
        counts.append(count_queries(lambda url=url: viewer_client.get(url)))
        pages.append(viewer_client.get(url).content.decode())
    assert counts[0] == counts[1]
    retried = batches[2:7]
    for retry in retried:  # each with its link, status and who created it
        shown = pages[1].split(f'href="{retry.get_absolute_url()}"', 1)[1].split("</li>", 1)[0]
        assert retry.display_status() in shown
        assert f"by {retry.created_by.get_username()}" in shown


def test_a_batch_page_makes_as_many_queries_with_30_events_as_with_1(viewer_client, viewer):
    counts = []
    for events in (1, 30):
        batch = fill(SMALL)[-1]  # finished: the page does not ask upstream
        for n in range(events):
            Event.record(Event.Action.DOWNLOAD, user=viewer, batch=batch, detail=f"file {n}")
        url = batch.get_absolute_url()
        counts.append(count_queries(lambda url=url: viewer_client.get(url)))
    assert counts[0] == counts[1]


def test_a_running_batch_page_makes_as_many_queries_with_30_events_as_with_1(viewer_client, viewer):
    counts = []
    for events in (1, 30):
        batch = fill(SMALL)[0]  # running: asks the worker, never upstream
        for n in range(events):
            Event.record(Event.Action.DOWNLOAD, user=viewer, batch=batch, detail=f"file {n}")
        url = batch.get_absolute_url()
        counts.append(count_queries(lambda url=url: viewer_client.get(url)))
    assert counts[0] == counts[1]


def test_a_running_batch_page_from_the_cache_costs_two_queries_more_than_a_finished_one(
    viewer_client,
):
    batches = fill(SMALL)
    running, finished = batches[0], batches[-1]

    _, from_cache_running = count_queries(lambda: viewer_client.get(running.get_absolute_url()))
    _, from_cache_finished = count_queries(lambda: viewer_client.get(finished.get_absolute_url()))

    # The worker's state (for what the page says) and whether to ask it for a refresh.
    assert from_cache_running == from_cache_finished + 2


def test_the_results_page_makes_as_many_queries_for_60_results_as_for_3(viewer_client):
    counts = []
    for lines in (SMALL, LARGE):
        batch = fill(SMALL)[-1]
        ResultRow.objects.bulk_create(
            ResultRow(
                batch=batch,
                custom_id=f"req-{n}",
                input_line=n + 1,
                source="output" if n % 4 else "error",
                ok=bool(n % 4),
                status_code=200 if n % 4 else 429,
                answer_preview="an answer",
            )
            for n in range(lines)
        )
        Batch.objects.filter(pk=batch.pk).update(results_ingested_at=timezone.now())
        url = batch.url("batch-results")
        counts.append(count_queries(lambda url=url: viewer_client.get(url)))
    assert counts[0] == counts[1]


def test_the_spend_page_makes_as_many_queries_for_60_batches_as_for_3(viewer_client):
    def url(batches: list[Batch]) -> str:
        spend_rollup(limit=1000)
        return reverse("spend") + "?range=30d"

    same_at_both_sizes(viewer_client, url)


def test_the_api_list_makes_as_many_queries_for_20_batches_as_for_3(
    client, viewer, no_network, settings, monkeypatch
):
    # Upstream down: the page comes from the cache (the path the benchmark measures).
    settings.OPENAI_MAX_RETRIES = 0
    monkeypatch.setenv("Q_KEY", "sk-q")
    no_network.add(
        "GET",
        "http://127.0.0.1:9/batches",
        body=requests.ConnectionError("refused"),
    )
    plain = token_create(user=viewer, name="q", scope="read", days=30).plain
    headers = {"HTTP_AUTHORIZATION": f"Bearer {plain}", "HTTP_X_BATCHWEB_CONNECTION": "q-0"}
    counts = []
    for size in (SMALL, LARGE):
        fill(size)
        counts.append(
            count_queries(lambda: client.get(reverse("api-batches") + "?limit=20", **headers))
        )
    assert counts[0] == counts[1]
