"""BatchTally keeps the list's counts and filter choices without counting the batches."""

from __future__ import annotations

from collections import Counter

import pytest
from django.contrib.auth.models import User

from batches.models import Batch, BatchTally, default_connection
from batches.services.batches import batch_create, batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db


def tallies() -> Counter:
    return Counter(
        {
            (t.status, t.endpoint, t.model, t.creator_id): t.count
            for t in BatchTally.objects.all()
            if t.count
        }
    )


def counted() -> Counter:
    return Counter(b.tally_key()[1:] for b in Batch.objects.all())  # all on one connection


def test_a_new_batch_is_counted_under_its_status_endpoint_model_and_creator():
    batch_upsert(payload=make_batch(id="batch_1", status="validating"))

    assert tallies() == Counter(
        {("validating", "/v1/chat/completions", "gpt-4o-mini-2024-07-18", 0): 1}
    )


def test_a_status_change_moves_the_count_and_a_stale_payload_does_not():
    batch_upsert(payload=make_batch(id="batch_1", status="in_progress"))
    batch_upsert(payload=make_batch(id="batch_1", status="completed"))
    batch_upsert(payload=make_batch(id="batch_1", status="in_progress"))  # older: refused

    assert tallies() == counted()
    assert sum(tallies().values()) == 1
    assert next(iter(tallies()))[0] == "completed"


def test_a_creator_linked_from_metadata_is_counted_under_that_person(submitter):
    batch_upsert(payload=make_batch(id="batch_1", metadata={"batchweb_user": submitter.username}))

    assert [key[3] for key in tallies()] == [submitter.pk]


def test_creating_through_batchweb_moves_the_count_to_the_creator(submitter, upstream):
    from django.conf import settings

    upstream.post(
        f"{settings.OPENAI_BASE_URL}/batches", json=make_batch(id="batch_new", metadata=None)
    )

    batch_create(user=submitter, input_file_id="file-1", endpoint="/v1/chat/completions")

    assert tallies() == counted()
    assert [key[3] for key in tallies()] == [submitter.pk]


def test_rebuild_gives_the_same_counts_as_the_upserts(admin_user: User):
    for i, status in enumerate(["validating", "completed", "completed", "failed", "expired"]):
        batch_upsert(payload=make_batch(id=f"batch_{i}", status=status, model=f"m{i % 2}"))
    before = tallies()

    BatchTally.rebuild()

    assert tallies() == before == counted()


def test_rebuild_repairs_counts_after_a_deletion_outside_the_services():
    batch_upsert(payload=make_batch(id="batch_1"))
    batch_upsert(payload=make_batch(id="batch_2"))
    Batch.objects.filter(openai_id="batch_1").delete()

    BatchTally.rebuild()

    assert sum(tallies().values()) == 1


def test_a_page_of_new_batches_is_stored_in_bulk_and_counted(submitter):
    from django.utils import timezone

    from batches.services.batches import batches_insert_new

    payloads = [
        make_batch(id=f"batch_{i}", status="completed" if i % 2 else "in_progress", metadata=None)
        for i in range(10)
    ]
    payloads[0]["metadata"] = {"batchweb_user": submitter.username, "batchweb_token": "tok-1"}
    payloads[1]["metadata"] = {"batchweb_token": "tok-1"}  # copied by hand upstream

    inserted = batches_insert_new(
        connection=default_connection(), payloads=payloads, now=timezone.now()
    )

    assert inserted == {f"batch_{i}" for i in range(10)}
    assert tallies() == counted()
    assert Batch.objects.get(openai_id="batch_0").created_by == submitter
    assert Batch.objects.get(openai_id="batch_0").submission_token == "tok-1"
    assert Batch.objects.get(openai_id="batch_1").submission_token is None
    # Running ones are scheduled for the worker; finished ones are not.
    assert Batch.objects.get(openai_id="batch_0").next_refresh_at is not None
    assert Batch.objects.get(openai_id="batch_1").next_refresh_at is None


def test_batches_already_cached_are_left_to_the_upsert():
    from django.utils import timezone

    from batches.services.batches import batches_insert_new

    batch_upsert(payload=make_batch(id="batch_old"))

    inserted = batches_insert_new(
        connection=default_connection(),
        payloads=[make_batch(id="batch_old"), make_batch(id="batch_new")],
        now=timezone.now(),
    )

    assert inserted == {"batch_new"}
    assert tallies() == counted()


# --- Kept per connection (batches/cache/tallies.py) ----------------------------------------


@pytest.fixture
def two_connections(db):
    from django.contrib.auth.models import Group
    from django.core.cache import caches

    from batches.models import Connection

    caches["pages"].clear()
    research = Connection.objects.create(
        name="Research", slug="research", base_url="https://r.example.test/v1", key_env="R_KEY"
    )
    research.groups.add(Group.objects.create(name="Research"))
    batch_upsert(payload=make_batch(id="batch_d1", status="completed", model="model-d"))
    batch_upsert(payload=make_batch(id="batch_d2", status="in_progress", model="model-d"))
    batch_upsert(
        payload=make_batch(id="batch_r1", status="failed", model="model-secret"),
        connection=research,
    )
    return default_connection(), research


def reads(monkeypatch) -> list[list[int]]:
    from batches.cache import tallies as kept

    seen: list[list[int]] = []
    real = kept._read

    def counting(ids):
        seen.append(sorted(ids))
        return real(ids)

    monkeypatch.setattr(kept, "_read", counting)
    return seen


def test_the_kept_tallies_say_what_the_tallies_say(two_connections, admin_user, viewer):
    from batches.cache import tallies as kept
    from batches.models import ListFilters

    del two_connections  # what it made is asked for below
    everything = kept.of(admin_user)
    assert dict(everything.statuses) == Batch.objects.tab_counts(admin_user, ListFilters())
    assert everything.models == {"model-d", "model-secret"}
    assert dict(kept.of(admin_user, "research").statuses) == {"failed": 1}
    # A person outside Research sees neither its counts nor its model, named or not.
    assert kept.of(viewer).models == {"model-d"}
    assert sum(kept.of(viewer).statuses.values()) == 2
    assert kept.of(viewer, "research") == kept.Tallies()


def test_a_write_to_one_connection_reads_only_its_tallies_again(
    two_connections, admin_user, monkeypatch
):
    from batches.cache import tallies as kept

    default, research = two_connections
    seen = reads(monkeypatch)
    kept.of(admin_user)
    assert seen == [sorted([default.pk, research.pk])]
    kept.of(admin_user)
    assert len(seen) == 1  # both kept

    batch_upsert(payload=make_batch(id="batch_d2", status="completed", model="model-d"))
    now = kept.of(admin_user)

    assert seen[1:] == [[default.pk]]
    assert dict(now.statuses) == {"completed": 2, "failed": 1}


def test_the_list_tabs_and_choices_follow_a_status_change_at_once(two_connections, admin_client):
    from django.urls import reverse

    page = admin_client.get(reverse("batch-list")).content.decode()
    assert "model-secret" in page
    batch_upsert(payload=make_batch(id="batch_d2", status="completed", model="model-d"))

    page = admin_client.get(reverse("batch-list"), {"status": "running"}).content.decode()

    assert "No batch matches these filters" in page
