"""Prices and the cost of a batch (services/costs.py): batch rates from genai-prices, its silent
fallbacks to list prices detected, admin overrides, and usage that cannot be trusted.

Expected figures are worked out by hand from the rates the package holds for a fixed model and
date (read once, written here), so these tests check the arithmetic, not the package."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from batches.models import Batch, Connection, Event, PriceOverride, ResultRow, default_connection
from batches.services.batches import batch_upsert
from batches.services.costs import (
    NO_BATCH_PRICE,
    USAGE_UNKNOWN,
    batch_cost,
    batch_cost_store,
    batch_price,
    costs_due,
    costs_recompute,
)
from batches.services.notifications import batch_cost_text
from tests.conftest import make_batch

# After 2026-10-14, when the package's OpenAI batch rates begin.
AT = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
CREATED = int(AT.timestamp())
# genai-prices 0.2.x, per million tokens: (batch input, batch cached input, batch output),
# then the list rates. gpt-4o keeps the standard cached rate under batch.
GPT_4O = (Decimal("1.25"), Decimal("1.25"), Decimal("5"))
GPT_4O_LIST = (Decimal("2.5"), Decimal("1.25"), Decimal("10"))
GPT_5 = (Decimal("0.625"), Decimal("0.0625"), Decimal("5"))
GPT_5_LIST = (Decimal("1.25"), Decimal("0.125"), Decimal("10"))
O3 = (Decimal("1"), Decimal("0.5"), Decimal("4"))
O3_LIST = (Decimal("2"), Decimal("0.5"), Decimal("8"))


def usage(given: int, output: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": given,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": given + output,
    }


def ended(openai_id: str = "batch_cost1", *, model: str = "gpt-4o", **extra: Any) -> Batch:
    payload = make_batch(
        id=openai_id,
        model=model,
        status="completed",
        created_at=CREATED,
        in_progress_at=CREATED + 60,
        completed_at=CREATED + 3600,
        request_counts={"total": 10, "completed": 10, "failed": 0},
        **extra,
    )
    return batch_upsert(payload=payload).batch


def rates(price) -> tuple:
    return (price.input, price.cached_input, price.output)


def list_rates(price) -> tuple:
    return (price.list_input, price.list_cached_input, price.list_output)


# --- Prices --------------------------------------------------------------------------------------


def test_a_chat_model_has_its_batch_rates_and_list_rates(db):
    price = batch_price(model="gpt-4o", at=AT)

    assert price.is_batch_rate and not price.earliest_known
    assert rates(price) == GPT_4O
    assert list_rates(price) == GPT_4O_LIST
    assert price.source.startswith("genai-prices 0.2")


def test_a_dated_model_name_is_priced_as_its_family(db):
    assert rates(batch_price(model="gpt-4o-2024-08-06", at=AT)) == GPT_4O


def test_a_responses_model_has_its_own_cached_batch_rate(db):
    price = batch_price(model="gpt-5", at=AT)

    assert price.is_batch_rate
    assert rates(price) == GPT_5
    assert list_rates(price) == GPT_5_LIST


@pytest.mark.parametrize("model", ["text-embedding-3-small", "gpt-5.3-codex"])
def test_a_model_with_only_list_prices_has_no_batch_price(db, model):
    price = batch_price(model=model, at=AT)

    assert not price.is_batch_rate
    assert rates(price) == (None, None, None)  # never the list price shown as a batch price
    assert price.list_input is not None
    assert NO_BATCH_PRICE in price.notes()


@pytest.mark.parametrize("model", ["my-own-model", "gpt4o-batch", ""])
def test_an_unknown_model_has_no_price_at_all(db, model):
    price = batch_price(model=model, at=AT)

    assert not price.is_batch_rate
    assert rates(price) == (None, None, None) == list_rates(price)


def test_an_azure_deployment_is_priced_as_the_model_behind_it(db):
    azure = Connection.objects.create(
        name="Azure EU",
        slug="azure-eu",
        base_url="https://eu.openai.azure.com/openai/v1",
        dialect="azure",
        key_env="AZURE_KEY",
        deployments={"gpt4o-batch": "gpt-4o"},
    )

    price = batch_price(model="gpt4o-batch", connection=azure, at=AT)

    assert price.model == "gpt-4o"
    assert price.is_batch_rate and rates(price) == GPT_4O


def test_a_batch_older_than_the_first_known_batch_rates_uses_the_earliest_and_says_so(db):
    price = batch_price(model="gpt-4o", at=dt.datetime(2025, 11, 24, tzinfo=dt.UTC))

    assert price.is_batch_rate and price.earliest_known
    assert rates(price) == GPT_4O
    assert "earliest known batch prices" in price.notes()


def test_an_admin_override_wins_over_the_package(db):
    PriceOverride.objects.create(
        model="gpt-4o", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("3"), note="deal"
    )

    price = batch_price(model="gpt-4o", at=AT)

    assert price.source == "admin override" and price.is_batch_rate
    assert rates(price) == (Decimal("1"), Decimal("1"), Decimal("3"))  # cached: as input
    assert list_rates(price) == GPT_4O_LIST  # still the list price, for the saving


def test_an_override_prices_a_model_the_package_does_not_know(db):
    PriceOverride.objects.create(
        model="ft:gpt-4o-mini:acme::abc",
        input_per_mtok=Decimal("0.3"),
        cached_input_per_mtok=Decimal("0.15"),
        output_per_mtok=Decimal("1.2"),
    )

    price = batch_price(model="ft:gpt-4o-mini:acme::abc", at=AT)

    assert rates(price) == (Decimal("0.3"), Decimal("0.15"), Decimal("1.2"))
    assert price.list_input is None


# --- Overrides in the admin site -----------------------------------------------------------------

ADD = reverse("admin:batches_priceoverride_add")


def override_form(**changes: str) -> dict[str, str]:
    return {
        "model": "gpt-4o",
        "input_per_mtok": "1.25",
        "cached_input_per_mtok": "",
        "output_per_mtok": "5",
        "note": "",
        **changes,
    }


def test_an_admin_adds_an_override_and_the_change_is_audited(client, admin_user):
    client.force_login(admin_user)

    response = client.post(ADD, override_form(note="negotiated"))

    assert response.status_code == 302
    assert PriceOverride.objects.get().output_per_mtok == Decimal("5")
    assert Event.objects.filter(action=Event.Action.ADMIN_ADD, target__contains="gpt-4o").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_per_mtok", "-1", "A price cannot be negative."),
        ("output_per_mtok", "-0.5", "A price cannot be negative."),
        ("cached_input_per_mtok", "-2", "A price cannot be negative."),
        ("input_per_mtok", "cheap", "Enter a number."),
        ("output_per_mtok", "NaN", "Enter a number."),
    ],
)
def test_an_override_with_a_negative_or_non_numeric_price_is_refused(
    client, admin_user, field, value, message
):
    client.force_login(admin_user)

    response = client.post(ADD, override_form(**{field: value}))

    assert response.status_code == 200
    assert message in response.context["adminform"].form.errors[field][0]
    assert not PriceOverride.objects.exists()


def test_the_overrides_list_searches_by_model(client, admin_user):
    PriceOverride.objects.create(model="gpt-4o", input_per_mtok=1, output_per_mtok=3)
    PriceOverride.objects.create(model="o3", input_per_mtok=1, output_per_mtok=3)
    client.force_login(admin_user)

    response = client.get(reverse("admin:batches_priceoverride_changelist"), {"q": "o3"})

    assert response.status_code == 200
    assert [o.model for o in response.context["cl"].result_list] == ["o3"]


# --- The cost of a batch -------------------------------------------------------------------------


def test_a_chat_batch_costs_its_input_and_output_at_the_batch_rates(db):
    batch = ended(usage=usage(2_000_000, 1_000_000))

    cost = batch_cost(batch=batch)

    # 2 M input at $1.25 + 1 M output at $5 = $7.50; list: 2 x $2.50 + $10 = $15
    assert cost.usd == Decimal("7.5")
    assert cost.list_usd == Decimal("15")
    assert cost.saved == Decimal("7.5")
    assert cost.note == ""


def test_cached_input_is_billed_at_the_cached_rate(db):
    batch = ended(model="gpt-5", usage=usage(1_000_000, 200_000, cached=400_000))

    cost = batch_cost(batch=batch)

    # 600,000 x 0.625 + 400,000 x 0.0625 + 200,000 x 5, per million = 0.375 + 0.025 + 1.0
    assert cost.usd == Decimal("1.4")
    # list: 600,000 x 1.25 + 400,000 x 0.125 + 200,000 x 10 = 0.75 + 0.05 + 2.0
    assert cost.list_usd == Decimal("2.8")


def test_reasoning_tokens_are_billed_once_as_part_of_the_output(db):
    batch = ended(model="o3", usage=usage(100_000, 50_000, reasoning=30_000))

    cost = batch_cost(batch=batch)

    # output_tokens already include the 30,000 reasoning tokens: 0.1 + 50,000 x 4 / 1 M = 0.3
    assert cost.usd == Decimal("0.3")
    assert cost.list_usd == Decimal("0.6")


def test_reasoning_reported_apart_from_the_output_is_added_to_it(db):
    batch = ended(model="o3", usage=usage(100_000, 10_000))
    Batch.objects.filter(pk=batch.pk).update(reasoning_tokens=40_000)
    batch.refresh_from_db()

    # 0.1 + (10,000 + 40,000) x 4 / 1 M = 0.3
    assert batch_cost(batch=batch).usd == Decimal("0.3")


def test_an_azure_batch_is_costed_as_its_deployments_model(db):
    azure = Connection.objects.create(
        name="Azure EU",
        slug="azure-eu",
        base_url="https://eu.openai.azure.com/openai/v1",
        dialect="azure",
        key_env="AZURE_KEY",
        deployments={"gpt4o-batch": "gpt-4o"},
    )
    batch = ended(model="gpt4o-batch", usage=usage(1_000_000, 0))
    Batch.objects.filter(pk=batch.pk).update(connection=azure)
    batch.refresh_from_db()

    assert batch_cost(batch=batch).usd == Decimal("1.25")


def test_an_embeddings_batch_has_no_figure_and_says_no_batch_price_known(db):
    batch = ended(
        model="text-embedding-3-small", endpoint="/v1/embeddings", usage=usage(1_000_000, 0)
    )

    cost = batch_cost(batch=batch)

    assert cost.usd is None and cost.list_usd is None
    assert cost.note == "no batch price known"


def test_an_unknown_model_has_no_figure(db):
    cost = batch_cost(batch=ended(model="my-own-model", usage=usage(1000, 1000)))

    assert cost.usd is None
    assert cost.note == NO_BATCH_PRICE


@pytest.mark.parametrize(
    "values",
    [
        {"input_tokens": None, "output_tokens": None, "cached_tokens": None},
        {"input_tokens": 0, "output_tokens": 0},
        {"input_tokens": -5, "output_tokens": 100},
        {"input_tokens": 100, "output_tokens": -1},
        {"input_tokens": 10**13, "output_tokens": 100},
        {"input_tokens": 100, "output_tokens": 100, "cached_tokens": 500},
        {"input_tokens": 100, "output_tokens": 10, "reasoning_tokens": -3},
    ],
    ids=[
        "missing",
        "zero",
        "negative-input",
        "negative-output",
        "absurd",
        "cached>input",
        "negative-reasoning",
    ],
)
def test_usage_that_cannot_be_trusted_gives_no_figure_but_usage_unknown(db, values):
    batch = ended(usage=usage(1000, 1000))
    Batch.objects.filter(pk=batch.pk).update(**values)
    batch.refresh_from_db()

    cost = batch_cost(batch=batch)

    assert cost.usd is None and cost.list_usd is None
    assert cost.note == USAGE_UNKNOWN


def test_a_running_batch_has_no_cost_yet(db):
    running = batch_upsert(payload=make_batch(id="batch_running", created_at=CREATED)).batch

    assert batch_cost(batch=running) is None
    assert batch_cost_store(batch=running) is None


def _rows(batch: Batch, tokens: list[tuple[int | None, int | None]]) -> None:
    ResultRow.objects.bulk_create(
        ResultRow(
            batch=batch,
            custom_id=f"r{i}",
            source="output",
            ok=True,
            input_tokens=given,
            output_tokens=output,
        )
        for i, (given, output) in enumerate(tokens)
    )
    Batch.objects.filter(pk=batch.pk).update(results_ingested_at=timezone.now())
    batch.refresh_from_db()


def test_a_batch_without_usage_is_costed_from_its_result_rows(db):
    batch = ended(usage=None)
    _rows(batch, [(400_000, 100_000), (600_000, 100_000), (None, None)])

    cost = batch_cost(batch=batch)

    # 1 M input x 1.25 + 200,000 output x 5 / 1 M = 1.25 + 1.0
    assert cost.usd == Decimal("2.25")
    assert cost.list_usd == Decimal("4.5")
    assert "per-request usage" in cost.note


def test_a_batch_without_usage_or_result_rows_is_usage_unknown(db):
    batch = ended(usage=None)

    assert batch_cost(batch=batch).note == USAGE_UNKNOWN
    _rows(batch, [(None, None)])
    assert batch_cost(batch=batch).note == USAGE_UNKNOWN


# --- Stored once ---------------------------------------------------------------------------------


def test_the_cost_is_stored_on_the_batch(db):
    batch = ended(usage=usage(2_000_000, 1_000_000))

    batch_cost_store(batch=batch)

    stored = Batch.objects.get(pk=batch.pk)
    assert (stored.cost_usd, stored.list_cost_usd) == (Decimal("7.5"), Decimal("15"))
    assert stored.cost_source.startswith("genai-prices")
    assert stored.cost_computed_at is not None
    assert stored.cost_text() == "$7.50 estimated (saved $7.50 against list price)"
    assert stored.cost_short() == "$7.50"


def test_an_unknown_cost_is_stored_as_its_reason(db):
    batch = ended(model="text-embedding-3-small", usage=usage(1000, 0))

    batch_cost_store(batch=batch)

    stored = Batch.objects.get(pk=batch.pk)
    assert stored.cost_usd is None and stored.cost_computed_at is not None
    assert stored.cost_text() == "no batch price known"


def test_housekeeping_computes_the_costs_of_ended_batches_a_few_at_a_time(db):
    for i in range(7):
        ended(f"batch_hk{i}", usage=usage(1000, 1000))
    batch_upsert(payload=make_batch(id="batch_still_running", created_at=CREATED))

    assert costs_due(connection=default_connection(), limit=5) == 5
    assert costs_due(connection=default_connection(), limit=5) == 2
    assert costs_due(connection=default_connection(), limit=5) == 0
    assert not Batch.objects.filter(running=False, cost_computed_at=None).exists()
    assert Batch.objects.get(openai_id="batch_still_running").cost_computed_at is None


def test_costs_recompute_applies_a_new_override(db):
    batch = ended(usage=usage(1_000_000, 0))
    batch_cost_store(batch=batch)
    never = ended("batch_never", usage=usage(1_000_000, 0))
    PriceOverride.objects.create(model="gpt-4o", input_per_mtok=Decimal("1"), output_per_mtok=3)
    out = StringIO()

    call_command("costs_recompute", stdout=out)

    assert Batch.objects.get(pk=batch.pk).cost_usd == Decimal("1")
    assert Batch.objects.get(pk=never.pk).cost_computed_at is None
    assert "1 batch" in out.getvalue()
    assert costs_recompute(everything=True) == 2
    assert Batch.objects.get(pk=never.pk).cost_source == "admin override"


def test_notifications_say_the_cost_when_there_is_a_figure(db):
    batch = ended(usage=usage(2_000_000, 1_000_000))

    assert batch_cost_text(batch) == "$7.50 estimated (saved $7.50 against list price)"
    batch_cost_store(batch=batch)
    assert batch_cost_text(batch) == "$7.50 estimated (saved $7.50 against list price)"

    unknown = ended("batch_unknown", usage=None)
    assert batch_cost_text(unknown) is None


def test_building_the_results_table_of_a_batch_without_usage_stores_its_cost(
    upstream, settings, tmp_path, db
):
    from batches.services.result_files import results_ingest
    from tests.test_result_files import finished_batch, jsonl, serve_batch
    from tests.test_results import chat_body, ok_line

    settings.DATA_DIR = tmp_path / "data"
    batch = finished_batch("batch_rows", usage=None, model="gpt-4o", created_at=CREATED)
    output = jsonl(
        [
            ok_line("req-1", body=chat_body("one", 600_000, 100_000)),
            ok_line("req-2", body=chat_body("two", 400_000, 100_000)),
        ]
    )

    serve_batch(upstream, batch, input=None, output=output, errors=b"")
    results_ingest(batch=batch)

    stored = Batch.objects.get(pk=batch.pk)
    # 1 M input x $1.25 + 200,000 output x $5, per million
    assert stored.cost_usd == Decimal("2.25")
    assert "per-request usage" in stored.cost_note


def test_the_workers_housekeeping_stores_the_cost_of_a_batch_that_ended(db):
    from batches.services.connections import get_client
    from batches.services.housekeeping import housekeeping
    from batches.services.sync import PassResult

    batch = ended(usage=usage(2_000_000, 1_000_000))
    connection = default_connection()

    housekeeping(
        connection=connection,
        client=get_client(connection=connection),
        now=AT + dt.timedelta(hours=2),
        result=PassResult(),
    )

    assert Batch.objects.get(pk=batch.pk).cost_usd == Decimal("7.5")


@pytest.mark.parametrize("value", [-1, "-0.01", "abc", "Infinity"])
def test_an_override_refuses_a_negative_or_non_numeric_price_in_clean(db, value):
    from django.core.exceptions import ValidationError

    override = PriceOverride(model="gpt-4o", input_per_mtok=value, output_per_mtok=1)

    with pytest.raises(ValidationError) as refused:
        override.clean()

    assert list(refused.value.message_dict) == ["input_per_mtok"]


def test_usage_reported_again_differently_is_priced_again(db):
    """A server may send a finished batch's usage late, or correct it: the stored cost follows
    on the worker's next chores, and an unchanged payload leaves it alone."""
    first = usage(1_000_000, 0)
    batch = ended("batch_late", usage=first)
    assert costs_due(connection=default_connection()) == 1
    batch.refresh_from_db()
    assert batch.cost_usd == GPT_4O[0]
    assert costs_due(connection=default_connection()) == 0  # once, not per look

    payload = {**batch.raw, "usage": first}
    batch_upsert(payload=payload)
    assert costs_due(connection=default_connection()) == 0

    batch_upsert(payload={**batch.raw, "usage": usage(1_000_000, 1_000_000)})
    batch.refresh_from_db()
    assert batch.cost_computed_at is None and batch.cost_usd == GPT_4O[0]  # shown until redone
    assert costs_due(connection=default_connection()) == 1
    batch.refresh_from_db()
    assert batch.cost_usd == GPT_4O[0] + GPT_4O[2]


def test_a_model_the_server_leaves_out_later_is_kept(db):
    batch = ended("batch_model", usage=usage(1_000_000, 0))
    batch_upsert(payload={k: v for k, v in batch.raw.items() if k != "model"})
    batch.refresh_from_db()
    assert batch.model == "gpt-4o"
