"""The cache of rendered list rows (batches/cache/rows.py): a row is served from the cache only
while its batch is as it was when it was rendered; what a person may see, and the parts of a
page that depend on their role, never come from another person's request."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import caches
from django.urls import reverse
from django.utils import timezone

from batches.cache import rows as row_cache
from batches.models import USER_KEY, Batch, Connection
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

LIST = reverse("batch-list")


@pytest.fixture(autouse=True)
def empty_cache():
    row_cache.forget()
    yield
    row_cache.forget()


@pytest.fixture
def renders(monkeypatch) -> list[str]:
    """The rows rendered through the template engine (cache misses), by batch id."""
    seen: list[str] = []
    real = row_cache.render_to_string

    def counting(name, context):
        seen.append(context["batch"].openai_id)
        return real(name, context)

    monkeypatch.setattr(row_cache, "render_to_string", counting)
    return seen


@pytest.fixture
def research(db) -> Connection:
    connection = Connection.objects.create(
        name="Research", slug="research", base_url="https://r.example.test/v1", key_env="R_KEY"
    )
    connection.groups.add(Group.objects.create(name="Research"))
    return connection


def add(openai_id: str, **fields) -> Batch:
    fields.setdefault("status", "completed")
    return batch_upsert(payload=make_batch(id=openai_id, **fields)).batch


def row_of(response, batch: Batch) -> str:
    found = re.search(rf'<tr id="row-{batch.pk}".*?</tr>', response.content.decode(), re.S)
    return found.group(0) if found else ""


def test_a_second_look_renders_no_row_again(viewer_client, renders):
    add("batch_a")
    add("batch_b")
    viewer_client.get(LIST)
    assert sorted(renders) == ["batch_a", "batch_b"]
    renders.clear()
    response = viewer_client.get(LIST)
    assert renders == []
    assert "batch_a" in response.content.decode()


def test_a_row_this_process_holds_is_served_without_the_shared_cache(viewer_client, renders):
    add("batch_a")
    viewer_client.get(LIST)
    caches[row_cache.CACHE_ALIAS].clear()  # another process's eviction, say
    caches["pages"].clear()

    response = viewer_client.get(LIST)

    assert renders == ["batch_a"]  # drawn once, the first time only
    assert "batch_a" in response.content.decode()


def test_a_row_another_process_drew_is_read_from_the_shared_cache(viewer_client, renders):
    add("batch_a")
    viewer_client.get(LIST)
    row_cache._local.clear()  # a fresh process: only the shared cache has the row
    caches["pages"].clear()

    viewer_client.get(LIST)

    assert renders == ["batch_a"]  # drawn by "the other process" only
    assert len(row_cache._local._rows) == 1  # and this process keeps it from now on


def test_the_process_copies_are_bounded_oldest_first():
    kept = row_cache.LocalRows(size=2)
    kept.set_many({"a": "1", "b": "2"})
    kept.set_many({"c": "3"})
    assert kept.get_many(["a", "b", "c"]) == {"b": "2", "c": "3"}


@pytest.mark.parametrize(
    "change",
    [
        {"label": "renamed by hand", "label_edited": True},
        {"request_completed": 77, "request_total": 100},
        {"status": "failed"},
        {"model": "gpt-new"},
    ],
    ids=["label", "counts", "status", "model"],
)
def test_a_write_shows_at_once_through_update(viewer_client, change):
    batch = add("batch_a")
    before = row_of(viewer_client.get(LIST), batch)
    Batch.objects.filter(pk=batch.pk).update(**change)  # no save(), no signal
    after = row_of(viewer_client.get(LIST), batch)
    assert after != before
    shown = {"label": "renamed by hand", "request_completed": "77", "model": "gpt-new"}
    for field, text in shown.items():
        if field in change:
            assert text in after
    if "status" in change:
        assert "s-failed" in after


def test_a_write_through_save_shows_at_once(viewer_client):
    batch = add("batch_a")
    viewer_client.get(LIST)
    batch.label = "saved label"
    batch.save()
    assert "saved label" in row_of(viewer_client.get(LIST), batch)


def test_a_renamed_connection_and_creator_show_at_once(client, research, admin_user):
    batch = add("batch_a", metadata={"batchweb_user": admin_user.username})
    batch_upsert(payload=make_batch(id="batch_r"), connection=research)
    client.force_login(admin_user)  # sees both connections: the rows name theirs
    first = row_of(client.get(LIST), batch)
    assert admin_user.username in first
    Connection.objects.filter(pk=batch.connection_id).update(name="Renamed connection")
    admin_user.username = "alice2"  # as the admin site renames people: a save
    admin_user.save()
    again = row_of(client.get(LIST), batch)
    assert "Renamed connection" in again
    assert "alice2" in again


def test_the_relative_time_is_not_cached(viewer_client, monkeypatch):
    batch = add("batch_a", created_at=int(timezone.now().timestamp()) - 120)
    assert "2 min ago" in row_of(viewer_client.get(LIST), batch)
    later = timezone.now() + dt.timedelta(hours=3)
    monkeypatch.setattr("batches.templatetags.batchweb.timezone.now", lambda: later)
    assert "3 h ago" in row_of(viewer_client.get(LIST), batch)


def test_a_person_outside_a_connection_never_gets_its_cached_rows(client, research, viewer):
    secret = batch_upsert(
        payload=make_batch(id="batch_secret", status="in_progress"), connection=research
    ).batch
    add("batch_public")
    admin = User.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    assert "batch_secret" in client.get(LIST).content.decode()  # its row is now cached
    live = reverse("batch-rows-live") + f"?ids={secret.pk}:validating"
    assert "batch_secret" in client.get(live).content.decode()

    client.force_login(viewer)
    page = client.get(LIST).content.decode()
    assert 'data-batch-id="batch_public"' in page
    assert "batch_secret" not in page
    assert "batch_secret" not in client.get(live).content.decode()
    found = client.get(LIST + "?q=batch_secret").content.decode()
    assert 'data-batch-id="batch_secret"' not in found


def test_role_dependent_parts_differ_per_role(client, operator, viewer, submitter):
    add("batch_a")
    client.force_login(operator)
    page = client.get(LIST).content.decode()
    assert "Sync now" in page

    client.force_login(viewer)
    page = client.get(LIST).content.decode()
    assert "Sync now" not in page
    assert "batch_a" in page

    client.force_login(submitter)
    page = client.get(LIST).content.decode()
    assert "Sync now" not in page
    assert 'class="button primary"' in page  # New batch


def test_the_connection_column_follows_the_person(client, research, viewer):
    """Someone who sees two connections gets the connection column; someone who sees one
    does not, even when the other person's rows are cached."""
    batch = add("batch_a")
    batch_upsert(payload=make_batch(id="batch_r"), connection=research)
    admin = User.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    assert 'data-label="Connection"' in row_of(client.get(LIST), batch)
    client.force_login(viewer)
    assert 'data-label="Connection"' not in row_of(client.get(LIST), batch)


def test_the_label_choices_walk_gives_what_distinct_gave(db, research):
    """`label_choices` (a walk of the label index) against a plain DISTINCT, with and without a
    connection scope, with a limit, and with no connection at all."""
    from batches.models import default_connection, label_choices

    for i, label in enumerate(["b", "a", "", "c", "a", "Zed", "ä"]):
        add(f"batch_{i}", metadata={"job": label} if label else {})
    batch_upsert(payload=make_batch(id="batch_r", metadata={"job": "secret"}), connection=research)

    def distinct(ids=None):
        rows = Batch.objects.exclude(label="")
        if ids is not None:
            rows = rows.filter(connection_id__in=ids)
        return list(rows.order_by("label").values_list("label", flat=True).distinct())

    default = default_connection().pk
    assert label_choices(connection_ids=None, limit=200) == distinct()
    assert "secret" in label_choices(connection_ids=None, limit=200)
    assert label_choices(connection_ids=[default], limit=200) == distinct([default])
    assert "secret" not in label_choices(connection_ids=[default], limit=200)
    assert label_choices(connection_ids=[research.pk], limit=200) == ["secret"]
    assert label_choices(connection_ids=None, limit=2) == distinct()[:2]
    assert label_choices(connection_ids=[], limit=200) == []


@pytest.mark.django_db
def test_a_finished_row_is_served_from_its_values_without_a_batch_object(
    viewer_client, renders, monkeypatch
):
    """Drawing the list afresh after a write reads the rows as values; a finished row the
    cache has is served by them, and no Batch object is made for it."""
    done = add("batch_done_values", metadata={"job": "first"})
    assert viewer_client.get(LIST).status_code == 200
    assert renders == ["batch_done_values"]
    made: list[int] = []
    real_init = Batch.__init__

    def counting(self, *args, **kwargs):
        made.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Batch, "__init__", counting)
    caches["pages"].clear()  # the page is drawn again, its row comes from the cache

    again = viewer_client.get(LIST + "?q=")
    assert again.status_code == 200 and renders == ["batch_done_values"] and made == []
    assert "first" in row_of(again, done)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"label": "renamed"},
        {"request_failed": 2},
        {"cost_note": "usage unknown", "cost_computed_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
    ],
)
def test_any_value_a_finished_row_shows_draws_it_again(viewer_client, renders, change):
    done = add("batch_done_change", request_counts={"total": 4, "completed": 4, "failed": 0})
    viewer_client.get(LIST)

    Batch.objects.filter(pk=done.pk).update(**change)
    page = viewer_client.get(LIST)

    assert renders == ["batch_done_change", "batch_done_change"]
    if "label" in change:
        assert "renamed" in row_of(page, done)


@pytest.fixture
def no_field_loads(monkeypatch):
    """A batch object asked for a field it was not loaded with fails the test (rather than
    load it with a query of its own, one per row)."""

    def refused(self, *args, **kwargs):
        raise AssertionError(f"a field of {self.openai_id} was loaded one row at a time")

    monkeypatch.setattr(Batch, "refresh_from_db", refused)


@pytest.mark.django_db
def test_a_running_row_is_served_from_its_values_and_its_estimate(
    viewer_client, renders, no_field_loads
):
    """A running row is keyed by its values and its estimate in words, both made from the
    list's own query: drawn again (page cache emptied) it is not drawn, and its batch is not
    loaded."""
    from tests.test_estimates_pages import progressing

    batch = progressing("batch_running_values")
    first = viewer_client.get(LIST)
    assert renders == ["batch_running_values"]
    caches["pages"].clear()

    again = viewer_client.get(LIST + "?q=")

    assert renders == ["batch_running_values"]
    assert "left" in row_of(again, batch) and row_of(again, batch) == row_of(first, batch)


@pytest.mark.django_db
def test_a_running_row_whose_estimate_moved_is_drawn_again(viewer_client, renders, monkeypatch):
    from types import SimpleNamespace

    from batches.services import estimates
    from tests.test_estimates_pages import progressing

    batch = progressing("batch_running_moves")
    viewer_client.get(LIST)
    caches["pages"].clear()
    later = timezone.now() + dt.timedelta(minutes=10)  # no request done since: it slows down
    monkeypatch.setattr(estimates, "timezone", SimpleNamespace(now=lambda: later))

    again = viewer_client.get(LIST + "?q=")

    assert renders == ["batch_running_moves", "batch_running_moves"]
    assert "left" in row_of(again, batch)


@pytest.mark.django_db
def test_the_estimate_from_the_values_alone_is_the_estimate_of_the_batch(no_field_loads):
    """estimates.ETA_COLUMNS holds every field batch_eta reads, in each state a list shows."""
    from batches.cache.rows import LIST_COLUMNS
    from batches.models.stored import from_stored, stored_values
    from batches.services.estimates import ETA_COLUMNS, etas_attach
    from tests.test_estimates_pages import progressing

    progressing("batch_on_track")
    progressing("batch_at_risk", deadline_in=dt.timedelta(minutes=40))
    for status in ("validating", "finalizing", "cancelling", "in_progress"):
        add(
            f"batch_{status}",
            status=status,
            request_counts={"total": 0, "completed": 0, "failed": 0},
        )
    add(
        "batch_no_counts_yet",
        status="in_progress",
        request_counts={"total": 0, "completed": 0, "failed": 0},
    )
    now = timezone.now()
    full = list(Batch.objects.filter(running=True).order_by("pk"))
    stored = stored_values(Batch.objects.filter(running=True).order_by("pk"), LIST_COLUMNS)
    light = from_stored(Batch, stored, ETA_COLUMNS)
    etas_attach(batches=full, now=now)
    etas_attach(batches=light, now=now)

    assert len(full) == 7
    assert [b.eta for b in light] == [b.eta for b in full]
    assert {b.eta.state for b in full} >= {
        "on_track",
        "at_risk",
        "validating",
        "finishing",
        "cancelling",
    }


@pytest.mark.django_db
def test_stored_values_name_each_column_as_values_does(submitter):
    """The list's rows as stored: the same columns under the same names as `values()`, in
    each row the same values but for the dates, which are as the database keeps them."""
    from batches.cache.rows import ROW_COLUMNS
    from batches.models.stored import stored_values

    add("batch_stored_a", metadata={"batchweb_user": submitter.username, "job": "j"})
    add("batch_stored_b", status="in_progress", metadata=None)
    rows = Batch.objects.order_by("id")

    stored = stored_values(rows, ROW_COLUMNS)
    converted = list(rows.values(*ROW_COLUMNS))

    assert [list(row) for row in stored] == [list(row) for row in converted]
    dates = {"created_at", "cost_computed_at", "cost_usd", f"metadata__{USER_KEY}"}
    for mine, theirs in zip(stored, converted, strict=True):
        assert {k: v for k, v in mine.items() if k not in dates} == {
            k: v for k, v in theirs.items() if k not in dates
        }
    assert stored[0][f"metadata__{USER_KEY}"] in (submitter.username, f'"{submitter.username}"')
    assert stored_values(rows.none(), ROW_COLUMNS) == []


@pytest.mark.django_db
def test_a_running_rows_snapshots_are_read_again_only_when_its_counts_move(viewer_client):
    """The snapshots behind a running row's estimate are kept by its status and counts: the
    list drawn again reads none, and a write that moves the counts (and adds a snapshot in
    the same transaction) has them read again."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.test_estimates_pages import progressing

    batch = progressing("batch_kept_history")

    drawn = iter(range(10))

    def snapshot_reads() -> int:
        with CaptureQueriesContext(connection) as queries:  # a URL not asked before: drawn
            response = viewer_client.get(LIST, {"drawn": next(drawn)})
        assert "left" in row_of(response, batch)
        return sum("progresssnapshot" in q["sql"] for q in queries.captured_queries)

    assert snapshot_reads() == 1
    assert snapshot_reads() == 0
    later = timezone.now() + dt.timedelta(minutes=3)
    payload = {**batch.payload}
    payload["request_counts"] = {**payload["request_counts"], "completed": 260}
    batch_upsert(payload=payload, now=later)
    assert snapshot_reads() == 1
