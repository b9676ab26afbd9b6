"""Access per connection: people outside a connection's groups see none of its batches anywhere
(list, search, counts, filters, CSV, live rows, activity, results) and get 404 for its URLs;
ids are unique per connection, not globally."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Group, User
from django.urls import URLPattern, reverse

from batches import urls as batch_urls
from batches.models import Batch, BatchTally, Event, default_connection
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db


@pytest.fixture
def outsider(db) -> User:
    """An operator (every role's permission but the admin's) who is not in Research: only the
    connection's groups stand between them and its batches."""
    user = User.objects.create_user("otto", password="pw-otto-123")
    user.groups.add(Group.objects.get(name="Operators"))
    return user


@pytest.fixture
def insider(research) -> User:
    user = User.objects.create_user("rita", password="pw-rita-123")
    user.groups.add(Group.objects.get(name="Submitters"), Group.objects.get(name="Research"))
    return user


@pytest.fixture
def both(research) -> dict[str, Batch]:
    """A batch on each connection, and one id that both connections have."""
    public = batch_upsert(payload=make_batch(id="batch_public", status="completed")).batch
    secret = batch_upsert(
        payload=make_batch(
            id="batch_secret",
            status="in_progress",
            model="secret-model",
            metadata={"job": "classified"},
        ),
        connection=research,
    ).batch
    twin_default = batch_upsert(payload=make_batch(id="batch_twin", status="completed")).batch
    twin_research = batch_upsert(
        payload=make_batch(id="batch_twin", status="failed"), connection=research
    ).batch
    Event.record(Event.Action.CANCEL, batch=secret, detail="secret cancel")
    Event.record(Event.Action.CANCEL, batch=public, detail="public cancel")
    return {
        "public": public,
        "secret": secret,
        "twin_default": twin_default,
        "twin_research": twin_research,
    }


def batch_url_names() -> list[str]:
    """Every URL of a batch's pages, read from the URLconf so a new one is covered too."""
    return [p.name for p in batch_urls.batch_patterns if isinstance(p, URLPattern)]


def url_for(name: str, batch: Batch) -> str:
    extra = {"batch-result": [1], "batch-download": ["output"]}.get(name, [])
    return reverse(name, args=[batch.connection.slug, batch.openai_id, *extra])


def rows(response) -> list[str]:
    return [b["openai_id"] for b in response.context["batches"]]


# --- Ids are unique per connection -------------------------------------------------------------


def test_the_same_batch_id_on_two_connections_is_two_batches(both):
    twins = Batch.objects.filter(openai_id="batch_twin")

    assert {b.connection.slug: b.status for b in twins} == {
        "default": "completed",
        "research": "failed",
    }


def test_each_connection_counts_its_own_batches(both, research):
    totals = {(t.connection_id, t.status): t.count for t in BatchTally.objects.all() if t.count}

    default = default_connection().pk
    assert totals == {
        (default, "completed"): 2,
        (research.pk, "in_progress"): 1,
        (research.pk, "failed"): 1,
    }


def test_each_twin_has_its_own_page(client, admin_user, both):
    client.force_login(admin_user)

    one = client.get(url_for("batch-detail", both["twin_default"]))
    other = client.get(url_for("batch-detail", both["twin_research"]))

    assert one.context["batch"] == both["twin_default"]
    assert other.context["batch"] == both["twin_research"]
    assert "Research" in other.content.decode()


def test_an_old_link_to_an_id_two_connections_have_goes_to_a_search(client, admin_user, both):
    client.force_login(admin_user)

    response = client.get("/batches/batch_twin/")

    assert response.status_code == 302
    assert response["Location"] == "/?q=batch_twin"


def test_an_old_link_to_an_id_one_visible_connection_has_goes_to_it(client, outsider, both):
    client.force_login(outsider)

    response = client.get("/batches/batch_twin/results/?failed=1")

    assert response["Location"] == "/connections/default/batches/batch_twin/results/?failed=1"
    assert client.get("/batches/batch_secret/").status_code == 404


# --- Nothing of a restricted connection reaches an outsider -----------------------------------


@pytest.mark.parametrize("name", batch_url_names())
@pytest.mark.parametrize("method", ["get", "post"])
def test_every_batch_url_of_a_restricted_connection_is_404_for_an_outsider(
    client, outsider, both, name, method
):
    client.force_login(outsider)

    response = getattr(client, method)(url_for(name, both["secret"]))

    assert response.status_code in (404, 405), (name, method, response.status_code)
    assert Batch.objects.get(pk=both["secret"].pk).status == "in_progress"  # nothing changed


@pytest.mark.parametrize("name", ["batch-detail", "batch-live"])
def test_a_member_of_the_group_reaches_the_same_urls(client, insider, both, name, upstream):
    client.force_login(insider)
    secret = both["secret"]
    upstream.get(
        f"{secret.connection.base_url}/batches/batch_secret",
        json=make_batch(id="batch_secret", status="in_progress"),
    )

    response = client.get(url_for(name, secret), {"seen": "in_progress"})

    assert response.status_code == 200, response.status_code


def test_the_list_search_counts_and_filters_leave_out_a_restricted_connection(
    client, outsider, both
):
    client.force_login(outsider)

    listing = client.get(reverse("batch-list"))
    searched = client.get(reverse("batch-list"), {"q": "classified"})
    by_slug = client.get(reverse("batch-list"), {"connection": "research"})

    assert sorted(rows(listing)) == ["batch_public", "batch_twin"]
    assert {t["label"]: t["count"] for t in listing.context["tabs"]}["All"] == 2
    assert "secret-model" not in listing.content.decode()
    assert "Research" not in listing.content.decode()
    assert rows(searched) == []
    assert rows(by_slug) == []
    assert not listing.context["show_connection"]


def test_a_member_sees_both_connections_with_a_column_and_a_filter(client, insider, both):
    client.force_login(insider)

    listing = client.get(reverse("batch-list"))
    research_only = client.get(reverse("batch-list"), {"connection": "research"})
    counts = {t["label"]: t["count"] for t in research_only.context["tabs"]}

    assert len(rows(listing)) == 4
    assert listing.context["show_connection"]
    assert '<select id="id_connection" name="connection">' in listing.content.decode()
    assert sorted(rows(research_only)) == ["batch_secret", "batch_twin"]
    assert counts["All"] == 2 and counts["Running"] == 1 and counts["Failed"] == 1
    assert "secret-model" in [str(m) for m in research_only.context["models"]]


def test_the_csv_export_leaves_out_a_restricted_connection(client, outsider, both):
    client.force_login(outsider)

    response = client.get(reverse("batch-export"))
    table = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))

    assert sorted(row[0] for row in table[1:]) == ["batch_public", "batch_twin"]
    assert {row[-1] for row in table[1:]} == {"OpenAI"}


def test_the_live_rows_leave_out_a_restricted_connection(client, outsider, both):
    client.force_login(outsider)
    secret = both["secret"]

    response = client.get(reverse("batch-rows-live"), {"ids": f"{secret.pk}:validating"})

    assert "batch_secret" not in response.content.decode()


def test_the_activity_log_leaves_out_a_restricted_connection(client, outsider, insider, both):
    client.force_login(outsider)
    hidden = client.get(reverse("activity")).content.decode()
    client.force_login(insider)
    shown = client.get(reverse("activity")).content.decode()

    assert "public cancel" in hidden and "secret cancel" not in hidden
    assert "secret cancel" in shown


def test_the_create_form_offers_only_connections_the_person_may_use(
    client, outsider, insider, research, monkeypatch
):
    monkeypatch.setenv("RESEARCH_KEY", "sk-research")
    client.force_login(outsider)
    hidden = client.get(reverse("batch-create"))
    refused = client.post(
        reverse("batch-create"),
        {"connection": "research", "input_file_id": "file-x", "endpoint": "/v1/embeddings"},
    )
    client.force_login(insider)
    offered = client.get(reverse("batch-create"))

    assert [c.slug for c in hidden.context["connections"]] == ["default"]
    assert refused.status_code == 400
    assert "connection" in refused.context["form"].errors
    assert [c.slug for c in offered.context["connections"]] == ["default", "research"]


def test_a_connection_without_its_key_is_not_offered_for_new_batches(client, insider, research):
    client.force_login(insider)  # RESEARCH_KEY is not set in the tests' environment

    page = client.get(reverse("batch-create"))

    assert [c.slug for c in page.context["connections"]] == ["default"]


def test_the_person_s_last_connection_is_preselected(client, insider, research, monkeypatch):
    monkeypatch.setenv("RESEARCH_KEY", "sk-research")
    client.force_login(insider)
    from batches.models import Submission

    Submission.objects.create(token="t-1", user=insider, connection=research)

    page = client.get(reverse("batch-create"))

    assert page.context["form"]["connection"].value() == "research"


def test_a_superuser_sees_every_connection(client, admin_user, both):
    client.force_login(admin_user)

    assert len(rows(client.get(reverse("batch-list")))) == 4
