"""BatchTally keeps the list's counts and filter choices without counting the batches."""

from __future__ import annotations

from collections import Counter

import pytest
from django.contrib.auth.models import User

from batches.models import Batch, BatchTally, default_connection
from batches.services import batch_create, batch_upsert
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
