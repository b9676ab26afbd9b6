"""What a batch costs: batch prices per model, the cost of a finished batch from its usage, and
the estimate shown before submitting. Plain functions, no HTTP.

Prices come from the `genai-prices` package (pydantic's price data), asked for OpenAI's batch
rates, unless an admin set a `PriceOverride` for the model. The package quietly answers with
list prices where it has no batch price (embeddings, unknown models, Azure deployment names):
that is detected here and said as "no batch price known", never shown as a batch price.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.utils import timezone

from ..models import Batch, Connection, PriceOverride, ResultRow, Submission

PROVIDER = "openai"
BATCH_CONTEXT = {"processing": "batch"}
MILLION = Decimal(1_000_000)
CENTS = Decimal("0.000001")  # what Batch.cost_usd keeps
# More tokens than this in one batch is a broken usage report, not a real batch.
ABSURD_TOKENS = 10**12

NO_BATCH_PRICE = "no batch price known"
USAGE_UNKNOWN = "usage unknown"
OVERRIDE_SOURCE = "admin override"


def _package_version() -> str:
    try:
        from genai_prices import __version__
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        return ""
    return __version__


@dataclass(frozen=True)
class Price:
    """Rates in US dollars per million tokens. `input`, `cached_input` and `output` are batch
    rates and are None unless `is_batch_rate`; the `list_*` rates are the ordinary ones, for
    the saving, when known."""

    model: str
    input: Decimal | None = None
    cached_input: Decimal | None = None
    output: Decimal | None = None
    list_input: Decimal | None = None
    list_cached_input: Decimal | None = None
    list_output: Decimal | None = None
    source: str = ""
    is_batch_rate: bool = False
    # The batch is older than the package's first batch rates: its earliest ones were used.
    earliest_known: bool = False
    # Tiered rates (long prompts cost more per token): the base rate was used.
    tiered: bool = False

    @property
    def has_list_rate(self) -> bool:
        return self.list_input is not None and self.list_output is not None

    def notes(self) -> list[str]:
        notes = []
        if not self.is_batch_rate:
            notes.append(NO_BATCH_PRICE)
        if self.earliest_known:
            notes.append("earliest known batch prices")
        if self.tiered:
            notes.append("long prompts may cost more")
        return notes


@dataclass(frozen=True)
class Usage:
    input: int
    cached: int
    output: int
    from_results: bool = False


@dataclass(frozen=True)
class Cost:
    """The estimated cost of a batch; `usd` is None when it cannot be trusted (`note` says why)."""

    usd: Decimal | None
    list_usd: Decimal | None = None
    note: str = ""
    source: str = ""
    price: Price | None = None
    usage: Usage | None = field(default=None, repr=False)

    @property
    def saved(self) -> Decimal | None:
        if self.usd is None or self.list_usd is None:
            return None
        return self.list_usd - self.usd


@dataclass(frozen=True)
class CostRange:
    """The estimate before submitting: input at the batch price, output from none up to every
    line's maximum. `high` is None when some lines give no maximum."""

    price: Price
    input_tokens: int
    max_output_tokens: int
    lines_without_max: int
    low: Decimal | None
    high: Decimal | None
    list_low: Decimal | None
    list_high: Decimal | None

    @property
    def saved_low(self) -> Decimal | None:
        return None if self.low is None or self.list_low is None else self.list_low - self.low

    @property
    def saved_high(self) -> Decimal | None:
        if self.high is None or self.list_high is None:
            return None
        return self.list_high - self.high


# --- Prices --------------------------------------------------------------------------------------


def batch_price(*, model: str, connection: Connection | None = None, at: dt.datetime) -> Price:
    """The batch price of a model at a moment. Azure deployment names are mapped to their model
    through the connection first; an admin's override wins over the package."""
    name = (connection.model_for(model) if connection is not None else model).strip()
    listed = _package_price(name, at)
    names = {name, model.strip()} - {""}
    override = PriceOverride.objects.filter(model__in=names).first() if names else None
    if override is not None:
        return Price(
            model=name,
            input=override.input_per_mtok,
            cached_input=(
                override.cached_input_per_mtok
                if override.cached_input_per_mtok is not None
                else override.input_per_mtok
            ),
            output=override.output_per_mtok,
            list_input=listed.list_input,
            list_cached_input=listed.list_cached_input,
            list_output=listed.list_output,
            source=OVERRIDE_SOURCE,
            is_batch_rate=True,
        )
    return listed


def _package_price(name: str, at: dt.datetime) -> Price:
    if not name:
        return Price(model=name)
    try:
        from genai_prices import data_snapshot
    except ImportError:  # pragma: no cover
        return Price(model=name)
    source = f"genai-prices {_package_version()}"
    try:
        provider, info = data_snapshot.get_snapshot().find_provider_model(
            name, None, PROVIDER, None
        )
    except LookupError:
        return Price(model=name, source=source)
    if not any(info is own for own in provider.models):
        # Matched another provider's model: its prices are not OpenAI's, batch or list.
        return Price(model=name, source=source)

    when = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    standard = info.get_prices(when)
    list_rates = _rates(standard)
    variants = [
        v
        for v in info.price_variants or ()
        if dict(v.when) == BATCH_CONTEXT
        and (v.prices.input_mtok is not None or v.prices.output_mtok is not None)
    ]
    base = Price(
        model=name,
        list_input=list_rates[0],
        list_cached_input=list_rates[1],
        list_output=list_rates[2],
        source=source,
    )
    if not variants:
        return base  # embeddings and the like: only list prices, so no batch price
    earliest = False
    if not any(v.constraint is None or v.constraint.active(when) for v in variants):
        starts = [v.constraint.start_date for v in variants if hasattr(v.constraint, "start_date")]
        if not starts:
            return base
        when = dt.datetime.combine(min(starts), dt.time(), tzinfo=dt.UTC)
        earliest = True
    batch = info.get_prices(when, BATCH_CONTEXT)
    rates = _rates(batch)
    same_as_list = _rates(info.get_prices(when))
    if (
        rates[0] is None
        or rates[2] is None
        or (rates[0], rates[2])
        == (
            same_as_list[0],
            same_as_list[2],
        )
    ):
        return base  # the package fell back to list prices
    return Price(
        model=name,
        input=rates[0],
        cached_input=rates[1] if rates[1] is not None else rates[0],
        output=rates[2],
        list_input=list_rates[0],
        list_cached_input=list_rates[1],
        list_output=list_rates[2],
        source=source + (" (earliest batch rates)" if earliest else ""),
        is_batch_rate=True,
        earliest_known=earliest,
        tiered=any(_is_tiered(getattr(batch, key)) for key in _RATE_KEYS),
    )


_RATE_KEYS = ("input_mtok", "cache_read_mtok", "output_mtok")


def _is_tiered(value: Any) -> bool:
    return value is not None and not isinstance(value, Decimal)


def _rates(prices: Any) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """Input, cached input and output per million tokens. Tiered rates give their base rate:
    tiers apply per request, and nearly every batch request stays below the first."""
    found: list[Decimal | None] = []
    for key in _RATE_KEYS:
        value = getattr(prices, key, None)
        if value is not None and not isinstance(value, Decimal):
            value = getattr(value, "base", None)
        found.append(value if isinstance(value, Decimal) else None)
    return found[0], found[1], found[2]


# --- The cost of a batch -------------------------------------------------------------------------


def _plausible(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= ABSURD_TOKENS


def batch_usage(*, batch: Batch) -> Usage | None:
    """The tokens a batch was billed for: its `usage`, or else the sum of its requests' usage
    from the results table. None when missing, zero or not believable."""
    if batch.input_tokens is not None or batch.output_tokens is not None:
        given, cached, output = batch.input_tokens, batch.cached_tokens or 0, batch.output_tokens
        reasoning = batch.reasoning_tokens or 0
        if not all(_plausible(v) for v in (given, cached, output, reasoning)):
            return None
        if cached > given:
            return None
        # OpenAI counts reasoning tokens inside output_tokens (a breakdown, not an addition).
        # A server whose reasoning exceeds its output reports them apart: bill both.
        if reasoning > output:
            output += reasoning
        if given + output == 0:
            return None
        return Usage(input=given, cached=cached, output=output)
    if not batch.results_ingested_at:
        return None
    totals = ResultRow.objects.filter(batch=batch).aggregate(
        input=Sum("input_tokens"),
        output=Sum("output_tokens"),
        counted=Count("id", filter=Q(input_tokens__isnull=False) | Q(output_tokens__isnull=False)),
    )
    if not totals["counted"]:
        return None
    given, output = totals["input"] or 0, totals["output"] or 0
    if not (_plausible(given) and _plausible(output)) or given + output == 0:
        return None
    return Usage(input=given, cached=0, output=output, from_results=True)


def _dollars(usage: Usage, rates: tuple[Decimal | None, Decimal | None, Decimal | None]) -> Any:
    given, cached, output = rates
    if given is None or output is None:
        return None
    cached = given if cached is None else cached
    total = (
        (usage.input - usage.cached) * given + usage.cached * cached + usage.output * output
    ) / MILLION
    return total.quantize(CENTS)


def batch_cost(*, batch: Batch) -> Cost | None:
    """The estimated cost of a finished batch; None while it runs. A figure only where both the
    usage and a batch price can be trusted, otherwise a note of why not."""
    if not batch.is_terminal:
        return None
    usage = batch_usage(batch=batch)
    if usage is None:
        return Cost(usd=None, note=USAGE_UNKNOWN)
    if not batch.model:
        return Cost(usd=None, note=NO_BATCH_PRICE, usage=usage)
    price = batch_price(model=batch.model, connection=batch.connection, at=batch.created_at)
    if not price.is_batch_rate:
        return Cost(usd=None, note=NO_BATCH_PRICE, source=price.source, price=price, usage=usage)
    usd = _dollars(usage, (price.input, price.cached_input, price.output))
    list_usd = (
        _dollars(usage, (price.list_input, price.list_cached_input, price.list_output))
        if price.has_list_rate
        else None
    )
    notes = price.notes()
    if usage.from_results:
        notes.append("from per-request usage, cached input not known")
    return Cost(
        usd=usd,
        list_usd=list_usd,
        note="; ".join(notes),
        source=price.source,
        price=price,
        usage=usage,
    )


def batch_cost_store(*, batch: Batch, now: dt.datetime | None = None) -> Cost | None:
    """Compute a finished batch's cost once and keep it on the batch, so pages only read it."""
    cost = batch_cost(batch=batch)
    if cost is None:
        return None
    fields = {
        "cost_usd": cost.usd,
        "list_cost_usd": cost.list_usd,
        "cost_note": cost.note[:255],
        "cost_source": cost.source[:100],
        "cost_computed_at": now or timezone.now(),
    }
    Batch.objects.filter(pk=batch.pk).update(**fields)
    for name, value in fields.items():
        setattr(batch, name, value)
    return cost


def costs_due(
    *,
    connection: Connection,
    limit: int = 5,
    now: dt.datetime | None = None,
    synced_since: dt.datetime | None = None,
) -> int:
    """Store the cost of a few finished batches that have none yet; for the worker.
    `synced_since`: only batches stored since then (those a sync pass just saw end)."""
    pending = Batch.objects.filter(
        connection=connection, running=False, cost_computed_at=None
    ).select_related("connection")
    if synced_since is not None:
        pending = pending.filter(synced_at__gte=synced_since)
    done = 0
    for batch in pending.order_by("-created_at")[:limit]:
        batch_cost_store(batch=batch, now=now)
        done += 1
    return done


def costs_recompute(*, everything: bool = False) -> int:
    """Compute stored costs again (after prices or overrides changed). By default only the
    batches whose cost is stored; `everything` includes those never computed."""
    batches = Batch.objects.filter(running=False).select_related("connection")
    if not everything:
        batches = batches.filter(cost_computed_at__isnull=False)
    done = 0
    now = timezone.now()
    for batch in batches.defer("raw", "errors", "result_summary").iterator(chunk_size=500):
        batch_cost_store(batch=batch, now=now)
        done += 1
    return done


# --- Before submitting ---------------------------------------------------------------------------


def submission_cost_range(*, submission: Submission, now: dt.datetime | None = None) -> CostRange:
    """The cost range of a checked file at today's batch price."""
    facts = submission.facts or {}
    price = batch_price(
        model=str(facts.get("model") or ""),
        connection=submission.connection,
        at=now or timezone.now(),
    )
    input_tokens = max(int(facts.get("estimated_input_tokens") or 0), 0)
    max_output = max(int(facts.get("max_output_tokens") or 0), 0)
    if "lines_without_max" in facts:
        without_max = max(int(facts.get("lines_without_max") or 0), 0)
    else:  # checked before output limits were counted: the upper bound is not known
        without_max = max(int(facts.get("lines") or 0), 1)
    if str(facts.get("endpoint") or "") == "/v1/embeddings":
        without_max = 0  # embeddings answer with vectors: no output tokens to pay for

    def bounds(given: Decimal | None, output: Decimal | None) -> tuple[Any, Any]:
        if given is None or output is None:
            return None, None
        low = (input_tokens * given / MILLION).quantize(CENTS)
        high = None if without_max else (low + max_output * output / MILLION).quantize(CENTS)
        return low, high

    low, high = bounds(price.input, price.output) if price.is_batch_rate else (None, None)
    list_low, list_high = bounds(price.list_input, price.list_output)
    return CostRange(
        price=price,
        input_tokens=input_tokens,
        max_output_tokens=max_output,
        lines_without_max=without_max,
        low=low,
        high=high,
        list_low=list_low,
        list_high=list_high,
    )
