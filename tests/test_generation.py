"""The cache generations' one rule (batches/cache/generations.py): which number a write raises.
A write to a connection's batches raises that connection's number only; one about people,
groups, connections or prices raises everyone's; an audit entry with no batch raises none."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import transaction

from batches.cache import generations as generation
from batches.models import (
    Batch,
    BatchTally,
    Connection,
    Event,
    PriceOverride,
    ResultFile,
    Watch,
    default_connection,
)
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db


def raised(before: generation.Snapshot) -> dict[str, int]:
    """Which numbers moved since BEFORE: 'everyone' and connection slugs."""
    after = generation.snapshot()
    moved = {}
    if after.everyone != before.everyone:
        moved["everyone"] = after.everyone - before.everyone
    slugs = dict(Connection.objects.values_list("pk", "slug"))
    for pk, value in after.by_connection:
        if value != before.of(pk):
            moved[slugs.get(pk, str(pk))] = value - before.of(pk)
    return moved


@pytest.fixture
def second(db) -> Connection:
    return Connection.objects.create(name="Second", slug="second", base_url="https://s.test/v1")


def test_a_batch_written_raises_its_connection_only(second):
    before = generation.snapshot()

    batch_upsert(payload=make_batch(id="batch_g1"), connection=second)

    assert set(raised(before)) == {"second"}


def test_a_write_in_a_transaction_raises_its_number_when_the_transaction_ends(second):
    """As in production: after the commit, not at the write (the tests' conftest runs the
    callback when the outermost block the code opened ends)."""
    before = generation.snapshot()

    with transaction.atomic():
        batch_upsert(payload=make_batch(id="batch_g1"), connection=second)
        with transaction.atomic():
            Batch.objects.filter(connection=second).update(label="inner")
        assert raised(before) == {}

    assert raised(before) == {"second": 1}


def test_a_transaction_rolled_back_raises_nothing(second):
    before = generation.snapshot()

    with pytest.raises(RuntimeError), transaction.atomic():
        batch_upsert(payload=make_batch(id="batch_g1"), connection=second)
        raise RuntimeError("rolled back")

    assert raised(before) == {}


def test_a_bulk_update_raises_the_connections_of_the_rows_it_touches(second):
    batch_upsert(payload=make_batch(id="batch_g1"), connection=second)
    batch_upsert(payload=make_batch(id="batch_g2"))
    before = generation.snapshot()

    Batch.objects.filter(connection=second).update(label="x")

    assert set(raised(before)) == {"second"}


def test_bookkeeping_no_page_shows_raises_nothing(second):
    batch = batch_upsert(payload=make_batch(id="batch_g1"), connection=second).batch
    before = generation.snapshot()

    Batch.objects.filter(pk=batch.pk).update(next_refresh_at=None)

    assert raised(before) == {}


def test_rows_of_a_batch_raise_its_connection(second, viewer):
    batch = batch_upsert(payload=make_batch(id="batch_g1"), connection=second).batch
    before = generation.snapshot()

    ResultFile.objects.create(batch=batch, kind="output", path="x")
    Watch.objects.create(batch=batch, user=viewer)
    Event.record(Event.Action.LABEL, batch=batch, detail="labelled")

    assert set(raised(before)) == {"second"}
    assert BatchTally.objects.filter(connection_id=second.pk).exists()


@pytest.mark.parametrize("write", ["person", "group", "membership", "connection", "price"])
def test_people_groups_connections_and_prices_raise_everyones(second, write):
    before = generation.snapshot()

    if write == "person":
        User.objects.create_user("someone")
    elif write == "group":
        Group.objects.create(name="Team")
    elif write == "membership":
        second.groups.add(Group.objects.get(name="Viewers"))
    elif write == "connection":
        Connection.objects.filter(pk=second.pk).update(name="Renamed")
    else:
        PriceOverride.objects.create(model="gpt-x", input_per_mtok=1, output_per_mtok=1)

    assert set(raised(before)) == {"everyone"}


def test_an_audit_entry_without_a_batch_raises_nothing(db):
    before = generation.snapshot()

    Event.record(Event.Action.SIGN_IN_FAILED, username="mallory", detail="from 10.0.0.1")

    assert raised(before) == {}


def test_a_migrate_raises_everyones(db):
    before = generation.snapshot()

    call_command("migrate", verbosity=0)

    assert set(raised(before)) == {"everyone"}


def test_a_page_key_holds_everyones_number_and_those_of_its_connections(second):
    batch_upsert(payload=make_batch(id="batch_g1"), connection=second)
    now = generation.snapshot()

    assert now.scope([second.pk]) == (now.everyone, now.of(second.pk))
    assert now.scope([default_connection().pk, second.pk])[0] == now.everyone
    assert now.of(10**9) == 0


def test_only_the_cache_package_names_cache_keys_and_aliases():
    """batches/cache owns every key (keys.py, pages.py, rows.py): elsewhere a cache is reached
    only through its aliases and key functions, so a reader finds every key in one place."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in [*root.glob("batches/**/*.py"), *root.glob("api/**/*.py")]:
        if "cache" in path.relative_to(root).parts[:2] or "migrations" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"caches\[(?!keys\.)", line) or re.search(r"\bcache\.(get|set)\(", line):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []
