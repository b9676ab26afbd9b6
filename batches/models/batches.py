"""The local cache of upstream batches, and the records batchweb keeps of its own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, models, transaction
from django.db import connection as db_connection
from django.db.models import Count, Q, Sum
from django.utils import timezone

from ..payloads import clean_json, clean_text
from .connections import Access, Connection, default_connection_id
from .costs import dollars
from .generation import GenerationQuerySet
from .stored import stored_values


class Status(models.TextChoices):
    VALIDATING = "validating", "validating"
    IN_PROGRESS = "in_progress", "in progress"
    FINALIZING = "finalizing", "finalizing"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"
    EXPIRED = "expired", "expired"
    CANCELLING = "cancelling", "cancelling"
    CANCELLED = "cancelled", "cancelled"


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.EXPIRED, Status.CANCELLED})
CANCELLABLE_STATUSES = frozenset({Status.VALIDATING, Status.IN_PROGRESS, Status.FINALIZING})
RUNNING_STATUSES = frozenset(set(Status) - TERMINAL_STATUSES)

# How far along the lifecycle a status is. An answer whose status ranks lower than the cached
# one is older than what we know, and is not allowed to move the batch back.
STATUS_RANK = {
    Status.VALIDATING: 0,
    Status.IN_PROGRESS: 1,
    Status.FINALIZING: 2,
    Status.CANCELLING: 3,
    Status.COMPLETED: 4,
    Status.FAILED: 4,
    Status.EXPIRED: 4,
    Status.CANCELLED: 4,
}


TIMESTAMP_FIELDS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)

# What the spend roll-ups (models/spend.py) read: changing one makes a batch's day due again.
SPEND_FIELDS = frozenset(
    {
        "connection",
        "connection_id",
        "created_at",
        "status",
        "running",
        "model",
        "created_by",
        "created_by_id",
        "label",
        "cost_usd",
        "list_cost_usd",
        "cost_computed_at",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
    }
)

# The list's status tabs: key (the `status` filter), title, and the statuses each shows (None:
# all). `cancelling` is still running (it may take 10 min): it counts under Running, so the
# tabs partition All.
STATUS_TABS = [
    ("", "All", None),
    ("running", "Running", RUNNING_STATUSES),
    ("completed", "Completed", frozenset({Status.COMPLETED})),
    ("failed", "Failed", frozenset({Status.FAILED})),
    ("expired", "Expired", frozenset({Status.EXPIRED})),
    ("cancelled", "Cancelled", frozenset({Status.CANCELLED})),
]


def tab_totals(counts: dict[str, int]) -> dict[str, int]:
    """Each tab's count, from counts per status (`status_counts`). Running is any status
    that is not an ending, even one batchweb does not know, as `in_tab("running")` finds."""
    totals = {}
    for key, _title, statuses in STATUS_TABS:
        if key == "running":
            totals[key] = sum(n for s, n in counts.items() if s not in TERMINAL_STATUSES)
        else:
            totals[key] = sum(n for s, n in counts.items() if statuses is None or s in statuses)
    return totals


@dataclass(frozen=True)
class ListFilters:
    """The list's filters (and its CSV export's), as BatchFilterForm read them: "" for none.
    In the form's order, which is the order of the page's URLs."""

    q: str = ""
    status: str = ""
    endpoint: str = ""
    model: str = ""
    creator: str = ""
    connection: str = ""
    label: str = ""

    def params(self) -> dict[str, str]:
        """The filters given, for URLs."""
        return {k: v for k, v in asdict(self).items() if v}

    @cached_property
    def creator_id(self) -> int | None:
        """The id of the person named by `creator` (None: no such person), read once for the
        rows and the tallies alike: by id, the (created_by, created_at) index serves the
        page."""
        if not self.creator:
            return None
        return (
            get_user_model()
            .objects.filter(username=self.creator)
            .values_list("pk", flat=True)
            .first()
        )


@dataclass(frozen=True)
class KeysetPage:
    """One page of the list, newest first, and the ids to page from: `newer` (its first row,
    for `before=`) when there are newer rows, `older` (its last, for `after=`) when older."""

    batches: list[Any] = field(default_factory=list)  # Batch objects, or dicts of columns
    newer: int | None = None
    older: int | None = None


# Metadata keys batchweb stamps on the batches it creates.
TOKEN_KEY = "batchweb_token"  # noqa: S105 - a metadata key, not a secret
USER_KEY = "batchweb_user"


class BatchQuerySet(GenerationQuerySet):
    # A refresh lease and the spend roll-up mark are shown on no page. `synced_at` alone is
    # the sync noting, each pass, that finished batches are still as cached: a page says
    # "cached 3 min ago" up to a minute (the page cache's longest) behind rather than every
    # cached page being drawn again after every pass.
    unseen_fields = frozenset({"next_refresh_at", "spend_rolled", "synced_at"})

    def for_list(self) -> BatchQuerySet:
        """What the list page needs, in one query whatever the number of rows."""
        return self.select_related("created_by", "connection").defer(
            "raw", "errors", "result_summary"
        )

    def visible_to(self, user: Any, *, connection: str = "") -> BatchQuerySet:
        """Only the batches of connections the person may see (`Connection.objects.visible_to`,
        the one rule), of the one called `connection` when given (none when they may not see
        it: the same answer as for a connection that does not exist). Someone who sees every
        connection gets no extra condition, so the list's indexes serve the page as before."""
        return Connection.objects.visible_to(user).restrict(self, connection)

    def visible_one(self, user: Any, slug: str, openai_id: str) -> Batch | None:
        """One batch by connection slug and id, or None when there is none the person may
        see (the same answer for both, so ids reveal nothing). The connection comes from what
        they may see, so a slug they may not see costs no query; the batch is one."""
        connection = Connection.objects.visible_to(user).get(slug)
        if connection is None:
            return None
        batch = (
            self.select_related("created_by")
            .filter(connection_id=connection.pk, openai_id=openai_id)
            .first()
        )
        if batch is not None:
            batch.connection = connection
        return batch

    def running(self) -> BatchQuerySet:
        return self.filter(running=True)

    def search(self, text: str) -> BatchQuerySet:
        text = text.strip()
        if not text:
            return self
        return self.filter(search_text__contains=text.lower())

    # --- The list (and its CSV export, its live rows) ------------------------------------

    def listed(self, user: Any, filters: ListFilters) -> BatchQuerySet:
        """The list's rows for `user` through `filters` (its tab included), as the page and
        its CSV export show them."""
        return (
            self.for_list()
            .visible_to(user, connection=filters.connection)
            .matching(filters)
            .in_tab(filters.status)
        )

    def matching(self, filters: ListFilters) -> BatchQuerySet:
        """The filters other than the connection and the tab: endpoint, model, label, creator,
        search."""
        rows = self
        if filters.endpoint:
            rows = rows.filter(endpoint=filters.endpoint)
        if filters.model:
            rows = rows.filter(model=filters.model)
        if filters.label:
            rows = rows.filter(label=filters.label)
        if filters.creator:
            if filters.creator_id is None:
                return rows.none()
            rows = rows.filter(created_by_id=filters.creator_id)
        return rows.search(filters.q)

    def in_tab(self, status: str) -> BatchQuerySet:
        """The batches a status tab (STATUS_TABS) shows, or of one status; any other value
        filters nothing."""
        if status == "running":
            return self.filter(running=True)
        for key, _title, statuses in STATUS_TABS:
            if key and key == status:
                return self.filter(status__in=statuses)
        if status in Status.values:
            return self.filter(status=status)
        return self

    def status_counts(self) -> dict[str, int]:
        """How many of these batches have each status: counted, row by row."""
        rows = self.order_by().values("status").annotate(n=Count("id"))
        return {row["status"]: row["n"] for row in rows}

    def tab_counts(self, user: Any, filters: ListFilters) -> dict[str, int]:
        """Counts per status of what `user` sees through `filters` (the tab aside), for the
        list's tabs. From the tallies, whose size does not grow with the number of batches,
        when they key on every filter given (endpoint, model, creator); a search or a label
        has to count the rows it matches."""
        if filters.q or filters.label:
            rows = self.visible_to(user, connection=filters.connection).matching(filters)
            return rows.status_counts()
        tallies = BatchTally.objects.visible_to(user, connection=filters.connection)
        return tallies.matching(filters).status_counts()

    def keyset_page(
        self,
        *,
        after: int | None,
        before: int | None,
        size: int,
        access: Access | None = None,
        columns: tuple[str, ...] = (),
    ) -> KeysetPage:
        """Newest first, `size` at a time, by (created_at, id) after or before the row of
        that id, so deep pages stay cheap. With `access` (what the person sees), each row gets
        its connection object from there rather than from a join. With `columns`, each row is
        a dict of those as the database stores them (`stored_values`, no model object made: the
        list's rows are drawn from their cached HTML, batches/cache/rows.py)."""
        rows = self
        if columns:
            rows = rows.select_related(None)
            access = None
        elif access is not None:
            rows = rows.select_related(None).select_related("created_by")
        anchors = self.model.objects
        # "(created_at, id) < anchor", written as a range on created_at so the index is used.
        if after and (anchor := anchors.filter(pk=after).values("created_at").first()):
            rows = rows.filter(created_at__lte=anchor["created_at"]).exclude(
                created_at=anchor["created_at"], id__gte=after
            )
            page = _fetch(rows.order_by("-created_at", "-id")[: size + 1], columns)
            has_older, has_newer = len(page) > size, True
            page = page[:size]
        elif before and (anchor := anchors.filter(pk=before).values("created_at").first()):
            rows = rows.filter(created_at__gte=anchor["created_at"]).exclude(
                created_at=anchor["created_at"], id__lte=before
            )
            page = _fetch(rows.order_by("created_at", "id")[: size + 1], columns)
            has_newer, has_older = len(page) > size, True
            page = page[:size][::-1]
        else:
            page = _fetch(rows.order_by("-created_at", "-id")[: size + 1], columns)
            has_older, has_newer = len(page) > size, False
            page = page[:size]
        if access is not None:
            access.attach(page)
        if not page:
            return KeysetPage()
        first, last = (page[0]["id"], page[-1]["id"]) if columns else (page[0].pk, page[-1].pk)
        return KeysetPage(page, first if has_newer else None, last if has_older else None)

    def label_choices(self, user: Any, *, connection: str = "", limit: int) -> list[str]:
        """The label filter's choices for `user` (of the connection called `connection`, when
        given), in order, at most `limit` (`label_choices`)."""
        ids = Connection.objects.visible_to(user).connection_ids(connection)
        return label_choices(connection_ids=ids, limit=limit)

    def update(self, **kwargs: Any) -> int:
        """As QuerySet.update, and a change to what the spend roll-ups sum marks the batches'
        days to be rolled up again."""
        if SPEND_FIELDS.intersection(kwargs) and "spend_rolled" not in kwargs:
            kwargs["spend_rolled"] = False
        return super().update(**kwargs)  # and raises the cache generation (generation.py)

    def due_for_refresh(self, now: dt.datetime) -> BatchQuerySet:
        return (
            self.running()
            .filter(Q(next_refresh_at__isnull=True) | Q(next_refresh_at__lte=now))
            .order_by(models.F("next_refresh_at").asc(nulls_first=True), "id")
        )


def _fetch(rows: BatchQuerySet, columns: tuple[str, ...]) -> list[Any]:
    return stored_values(rows, columns) if columns else list(rows)


def label_choices(*, connection_ids: Sequence[int] | None, limit: int) -> list[str]:
    """The distinct non-empty labels of the batches on `connection_ids` (None: all), in
    order, at most `limit`. A walk of the label index, one probe per label (a "loose index
    scan", which neither SQLite nor PostgreSQL makes of a DISTINCT by itself): about a
    millisecond at 100,000 batches, where SELECT DISTINCT read the whole index (20 ms)."""
    if connection_ids is not None and not connection_ids:
        return []
    table = db_connection.ops.quote_name(Batch._meta.db_table)
    scope, params = "", []
    if connection_ids is not None:
        # The unary + keeps SQLite on the label index (by the connection index it would read a
        # connection's every batch at each step); PostgreSQL reads it as the plain column.
        scope = f" AND +connection_id IN ({', '.join(['%s'] * len(connection_ids))})"
        params = [int(pk) for pk in connection_ids]
    # The table's own name is formatted in; every value is a parameter.
    sql = (
        "WITH RECURSIVE walk(label, n) AS ("  # noqa: S608
        f" SELECT (SELECT MIN(label) FROM {table} WHERE label > ''{scope}), 1"
        f" UNION ALL SELECT (SELECT MIN(label) FROM {table} WHERE label > walk.label{scope}),"
        " n + 1 FROM walk WHERE walk.label IS NOT NULL AND n < %s"
        ") SELECT label FROM walk WHERE label IS NOT NULL"
    )
    with db_connection.cursor() as cursor:
        cursor.execute(sql, [*params, *params, int(limit)])
        return [row[0] for row in cursor.fetchall()]


class Batch(models.Model):
    # Every batch belongs to one connection; ids are unique per connection, not globally.
    connection = models.ForeignKey(
        Connection,
        on_delete=models.PROTECT,
        related_name="batches",
        default=default_connection_id,
    )
    openai_id = models.CharField("batch id", max_length=128)
    status = models.CharField(max_length=32, choices=Status.choices)
    # Derived from status, stored so "running" is one indexed value rather than four.
    running = models.BooleanField(default=True)
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=128, blank=True)
    completion_window = models.CharField(max_length=16, blank=True)
    input_file_id = models.CharField(max_length=128, blank=True)
    output_file_id = models.CharField(max_length=128, blank=True)
    error_file_id = models.CharField(max_length=128, blank=True)

    created_at = models.DateTimeField()
    in_progress_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    request_total = models.PositiveIntegerField(null=True, blank=True)
    request_completed = models.PositiveIntegerField(null=True, blank=True)
    request_failed = models.PositiveIntegerField(null=True, blank=True)

    input_tokens = models.BigIntegerField(null=True, blank=True)
    cached_tokens = models.BigIntegerField(null=True, blank=True)
    output_tokens = models.BigIntegerField(null=True, blank=True)
    reasoning_tokens = models.BigIntegerField(null=True, blank=True)
    total_tokens = models.BigIntegerField(null=True, blank=True)

    metadata = models.JSONField(null=True, blank=True)
    # The batch's label (job or project): from metadata `job` (or `label`, `name`) as upstream
    # sends it, until an operator changes it here (`label_edited`).
    label = models.CharField(max_length=512, blank=True, default="")
    label_edited = models.BooleanField(default=False)
    errors = models.JSONField(null=True, blank=True)
    raw = models.JSONField(default=dict)
    # Lower-cased ids, file ids and metadata, for a search box that works on every database.
    search_text = models.TextField(blank=True, default="")

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batches",
    )
    submission_token = models.CharField(max_length=64, null=True, blank=True, unique=True)
    synced_at = models.DateTimeField()

    # Facts about the input file, when it was uploaded through batchweb.
    input_filename = models.CharField(max_length=255, blank=True)
    input_bytes = models.BigIntegerField(null=True, blank=True)
    input_lines = models.PositiveIntegerField(null=True, blank=True)

    # The refresh schedule of the sync worker.
    next_refresh_at = models.DateTimeField(null=True, blank=True)
    refresh_interval = models.FloatField(default=0)
    last_error = models.TextField(blank=True)

    # Computed once the batch is terminal (see results.py).
    result_summary = models.JSONField(null=True, blank=True)
    summary_computed_at = models.DateTimeField(null=True, blank=True)
    # When the result rows (ResultRow) were built from local copies of the files.
    results_ingested_at = models.DateTimeField(null=True, blank=True)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )

    # What the batch cost, estimated once it ended (services/costs.py), so no page computes it.
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    list_cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    # Why a figure is missing or rough, in a few words ("usage unknown").
    cost_note = models.CharField(max_length=255, blank=True)
    cost_source = models.CharField(max_length=100, blank=True)
    cost_computed_at = models.DateTimeField(null=True, blank=True)
    # False until the day's spend roll-ups (models/spend.py) counts this batch as it is now:
    # every save, and every update of a field the roll-ups sum, sets it back to False.
    spend_rolled = models.BooleanField(default=False)

    objects = BatchQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name_plural = "batches"
        permissions = [
            ("submit_batch", "Can create and retry batches, and cancel their own"),
            ("cancel_batch", "Can cancel their own batches upstream"),
            ("cancel_any_batch", "Can cancel anyone's batch upstream"),
            ("sync_batches", "Can press Sync now"),
            ("manage_labels", "Can change the label of any batch"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["connection", "openai_id"], name="one_batch_per_id")
        ]
        indexes = [
            # The list is newest first, whatever it is filtered by: one index per filter, each
            # ending in the sort order, so a page costs the same at 1,000 or 100,000 batches.
            models.Index(fields=["-created_at", "-id"], name="batch_newest"),
            models.Index(
                fields=["connection", "-created_at", "-id"], name="batch_connection_newest"
            ),
            models.Index(fields=["openai_id"], name="batch_openai_id"),
            models.Index(fields=["status", "-created_at", "-id"], name="batch_status_newest"),
            models.Index(fields=["running", "-created_at", "-id"], name="batch_running_newest"),
            models.Index(fields=["model", "-created_at", "-id"], name="batch_model_newest"),
            models.Index(fields=["endpoint", "-created_at", "-id"], name="batch_endpoint_newest"),
            models.Index(fields=["created_by", "-created_at", "-id"], name="batch_creator_newest"),
            models.Index(fields=["label", "-created_at", "-id"], name="batch_label_newest"),
            models.Index(fields=["next_refresh_at"], name="batch_refresh_due"),
            models.Index(
                fields=["created_at"], name="batch_spend_due", condition=Q(spend_rolled=False)
            ),
            # The finished batches the worker has yet to price (services/costs.costs_due).
            models.Index(
                fields=["connection", "-created_at"],
                name="batch_cost_due",
                condition=Q(cost_computed_at__isnull=True, running=False),
            ),
        ]

    def __str__(self) -> str:
        return self.openai_id

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A save may change what the spend roll-ups sum: the batch's day is due again.
        update_fields = kwargs.get("update_fields")
        if update_fields is None:
            self.spend_rolled = False
        elif SPEND_FIELDS.intersection(update_fields):
            self.spend_rolled = False
            kwargs["update_fields"] = {*update_fields, "spend_rolled"}
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return self.url("batch-detail")

    def url(self, name: str, *args: Any) -> str:
        """The URL of one of this batch's pages: batch URLs name the connection and the id."""
        from django.urls import reverse

        return reverse(name, args=[self.connection.slug, self.openai_id, *args])

    # --- State ------------------------------------------------------------------------------

    def cost_text(self) -> str:
        """The stored cost in words, always called an estimate; "" until it is computed."""
        if self.cost_usd is None:
            return self.cost_note.split(";")[0] if self.cost_computed_at else ""
        text = f"{dollars(self.cost_usd)} estimated"
        saved = self.cost_saved
        if saved is not None and saved > 0:
            text += f" (saved {dollars(saved)} against list price)"
        return text

    def cost_short(self) -> str:
        """The stored cost for the list: "$1.23", or a word of why not."""
        if self.cost_usd is None:
            return self.cost_note.split(";")[0] if self.cost_computed_at else ""
        return dollars(self.cost_usd)

    @property
    def cost_saved(self) -> Decimal | None:
        if self.cost_usd is None or self.list_cost_usd is None:
            return None
        return self.list_cost_usd - self.cost_usd

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def can_cancel(self) -> bool:
        return self.status in CANCELLABLE_STATUSES

    @property
    def requests_done(self) -> int:
        return (self.request_completed or 0) + (self.request_failed or 0)

    def progress_percent(self) -> int | None:
        if not self.request_total:
            return 100 if self.status == Status.COMPLETED else None
        return min(100, round(100 * self.requests_done / self.request_total))

    @property
    def all_failed(self) -> bool:
        """A batch that ended "completed" although no request succeeded."""
        return (
            self.status == Status.COMPLETED
            and bool(self.request_total)
            and not self.request_completed
            and bool(self.request_failed)
        )

    @property
    def has_failures(self) -> bool:
        return bool(self.request_failed)

    def display_status(self) -> str:
        if self.all_failed:
            return "completed, all failed"
        if self.status == Status.COMPLETED and self.has_failures:
            return "completed with failures"
        return Status(self.status).label if self.status in Status.values else self.status

    def status_css(self) -> str:
        if self.all_failed:
            return "failed"
        if self.status == Status.COMPLETED and self.has_failures:
            return "warning"
        return self.status

    def metadata_label(self) -> str:
        meta = self.metadata or {}
        return str(meta.get("job") or meta.get("label") or meta.get("name") or "")[:512]

    def user_metadata(self) -> dict[str, str]:
        """Metadata without the keys batchweb stamps for its own bookkeeping."""
        return {k: v for k, v in (self.metadata or {}).items() if not k.startswith("batchweb_")}

    def timeline(self) -> list[tuple[str, dt.datetime, float | None]]:
        """The timestamps that are set, in the order they happened, each with the gap since the
        previous one in seconds."""
        names = [
            ("created", self.created_at),
            ("in progress", self.in_progress_at),
            ("finalizing", self.finalizing_at),
            ("cancelling", self.cancelling_at),
            ("completed", self.completed_at),
            ("failed", self.failed_at),
            ("expired", self.expired_at),
            ("cancelled", self.cancelled_at),
        ]
        steps = sorted(((n, t) for n, t in names if t), key=lambda item: item[1])
        out: list[tuple[str, dt.datetime, float | None]] = []
        for i, (name, when) in enumerate(steps):
            gap = (when - steps[i - 1][1]).total_seconds() if i else None
            out.append((name, when, gap))
        return out

    def deadline(self) -> dt.datetime | None:
        """When the completion window ends: `expires_at`, or 24 h after creation."""
        if self.expires_at:
            return self.expires_at
        if self.completion_window == "24h" and self.created_at:
            return self.created_at + dt.timedelta(hours=24)
        return None

    def elapsed_seconds(self, now: dt.datetime | None = None) -> float:
        end = self.completed_at or self.failed_at or self.expired_at or self.cancelled_at
        return ((end or now or timezone.now()) - self.created_at).total_seconds()

    @property
    def requests_remaining(self) -> int | None:
        if self.request_total is None:
            return None
        return max(0, self.request_total - self.requests_done)

    def error_list(self) -> list[dict[str, Any]]:
        data = (self.errors or {}).get("data") if isinstance(self.errors, dict) else None
        return [e for e in data or [] if isinstance(e, dict)]

    def creator_name(self) -> str:
        if self.created_by_id:
            return self.created_by.get_username()
        return str((self.metadata or {}).get(USER_KEY, ""))

    # --- Upserts ----------------------------------------------------------------------------

    def is_older_than(self, payload_status: str, counts: tuple[int, int]) -> bool:
        """Whether the cached state is further along than an incoming payload."""
        theirs = STATUS_RANK.get(payload_status, 0)
        ours = STATUS_RANK.get(self.status, 0)
        if theirs != ours:
            return theirs > ours
        if self.is_terminal and payload_status != self.status:
            return False  # two different endings: the first one seen stands
        return sum(counts) >= self.requests_done

    def _cost_inputs(self) -> tuple:
        """What the stored cost was computed from (services/costs.py)."""
        return (
            self.model,
            self.status,
            self.input_tokens,
            self.cached_tokens,
            self.output_tokens,
            self.reasoning_tokens,
        )

    def apply_payload(self, payload: dict[str, Any], *, now: dt.datetime) -> None:
        """Copy every known field of a Batch object onto this row; keep the payload whole.
        Also reschedules the sync worker's next look at it (see `schedule_refresh`)."""
        # Upstream text may hold what no database stores or no page encodes (NUL, a lone
        # surrogate): replaced once here, so every copy below is safe, `raw` included.
        payload = clean_json(payload)
        changed = self.raw != payload
        priced_from = self._cost_inputs()
        created_at = self.created_at
        for name in TIMESTAMP_FIELDS:
            setattr(self, name, unix_to_datetime(payload.get(name)))
        # What is fixed when a batch is created never changes: an answer that leaves it out (a
        # server that drops fields, Azure's null endpoint while validating) keeps the cached one.
        self.created_at = self.created_at or created_at or now
        self.status = _text(payload.get("status"), 32) or Status.VALIDATING
        self.running = self.status not in TERMINAL_STATUSES
        self.endpoint = _text(payload.get("endpoint"), 64) or self.endpoint
        # A batch's model never changes; some servers leave it out (the checked file named it).
        self.model = _text(payload.get("model"), 128) or self.model
        self.completion_window = _text(payload.get("completion_window"), 16) or (
            self.completion_window
        )
        self.input_file_id = _text(payload.get("input_file_id"), 128) or self.input_file_id
        self.output_file_id = _text(payload.get("output_file_id"), 128)
        self.error_file_id = _text(payload.get("error_file_id"), 128)
        counts = _dict(payload.get("request_counts"))
        self.request_total = _int(counts.get("total"), MAX_COUNT)
        self.request_completed = _int(counts.get("completed"), MAX_COUNT)
        self.request_failed = _int(counts.get("failed"), MAX_COUNT)
        usage = _dict(payload.get("usage"))
        self.input_tokens = _int(usage.get("input_tokens"))
        self.output_tokens = _int(usage.get("output_tokens"))
        self.total_tokens = _int(usage.get("total_tokens"))
        self.cached_tokens = _int(_dict(usage.get("input_tokens_details")).get("cached_tokens"))
        self.reasoning_tokens = _int(
            _dict(usage.get("output_tokens_details")).get("reasoning_tokens")
        )
        metadata = payload.get("metadata")
        self.metadata = (
            {str(k): "" if v is None else str(v) for k, v in metadata.items()}
            if isinstance(metadata, dict)
            else None
        )
        self.errors = payload.get("errors") if isinstance(payload.get("errors"), dict) else None
        if not self.label_edited:
            self.label = self.metadata_label()
        self.raw = payload
        if self.cost_computed_at is not None and self._cost_inputs() != priced_from:
            # Usage reported again, differently: the worker prices the batch again.
            self.cost_computed_at = None
        self.synced_at = now
        if self.metadata and self.metadata.get(TOKEN_KEY) and not self.submission_token:
            self.submission_token = self.metadata[TOKEN_KEY][:64]
        self.search_text = self.build_search_text()
        self.schedule_refresh(changed=changed, now=now)

    def schedule_refresh(self, *, changed: bool, now: dt.datetime) -> None:
        """When the sync worker should next retrieve this batch. Whatever just stored a payload
        (a retrieve, a list page, a create or cancel) counts as a look: a batch that changed is
        looked at again soon, one that did not a little later each time, up to a cap. Terminal
        batches are not looked at again."""
        if self.is_terminal:
            self.next_refresh_at = None
            self.refresh_interval = 0
            return
        shortest = settings.SYNC_REFRESH_MIN_SECONDS
        longest = settings.SYNC_REFRESH_MAX_SECONDS
        growth = settings.SYNC_REFRESH_GROWTH
        if changed or not self.refresh_interval:
            interval = shortest
        else:
            interval = min(max(self.refresh_interval * growth, shortest), longest)
        self.refresh_interval = interval
        self.next_refresh_at = now + dt.timedelta(seconds=interval)

    def tally_key(self) -> tuple[int, str, str, str, int]:
        return (self.connection_id, self.status, self.endpoint, self.model, self.created_by_id or 0)

    def build_search_text(self) -> str:
        parts = [
            self.openai_id,
            self.input_file_id,
            self.output_file_id,
            self.error_file_id,
            self.input_filename,
            self.model,
        ]
        if self.label_edited and self.label:  # otherwise it is in the metadata below
            parts.append(self.label)
        for key, value in (self.metadata or {}).items():
            parts.append(f"{key}={value}")
        return "\n".join(p for p in parts if p).lower()


def payload_counts(payload: dict[str, Any]) -> tuple[int, int]:
    counts = _dict(payload.get("request_counts"))
    return (_int(counts.get("completed")) or 0, _int(counts.get("failed")) or 0)


def payload_id(payload: dict[str, Any]) -> str:
    """The batch id of a payload as the cache keys it: text its column can hold."""
    return clean_text(str(payload["id"]))[:128]


def unix_to_datetime(value: Any) -> dt.datetime | None:
    """Unix seconds (int, float or numeric string) to an aware UTC datetime; junk becomes None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past any float
        return None
    if seconds <= 0:
        return None
    if seconds > 1e11:  # milliseconds, as some servers send
        seconds /= 1000
    try:
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


# The largest values the count and token columns hold: past them a number is junk, not data.
MAX_COUNT = 2**31 - 1
MAX_BIG = 2**63 - 1


def _int(value: Any, limit: int = MAX_BIG) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float("inf")
        return None
    return number if 0 <= number <= limit else None


def _text(value: Any, limit: int) -> str:
    return "" if value is None else str(value)[:limit]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class SyncState(models.Model):
    """How the last conversations with one connection's upstream went: for its freshness line,
    its outage banner and the worker's backoff. One row per connection."""

    connection = models.OneToOneField(
        Connection, on_delete=models.CASCADE, related_name="sync_state"
    )
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_full_sync_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_request_id = models.CharField(max_length=128, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    backoff_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sync state of {self.connection_id} (last success {self.last_success_at})"

    @classmethod
    def get(cls, connection: Connection) -> SyncState:
        state, _ = cls.objects.select_related("connection").get_or_create(connection=connection)
        return state

    def record_success(self, *, now: dt.datetime | None = None) -> None:
        now = now or timezone.now()
        self.last_sync_at = now
        self.last_success_at = now
        self.failing_since = None
        self.backoff_until = None
        # Only these fields: several workers share the row, and a whole-row save would put back
        # what another one changed meanwhile (say, `last_full_sync_at`).
        self.save(
            update_fields=["last_sync_at", "last_success_at", "failing_since", "backoff_until"]
        )

    def record_failure(
        self,
        error: Exception,
        *,
        now: dt.datetime | None = None,
        backoff_until: dt.datetime | None = None,
    ) -> None:
        now = now or timezone.now()
        self.last_sync_at = now
        self.last_error = str(error)[:1000]
        self.last_error_request_id = (getattr(error, "request_id", None) or "")[:128]
        self.last_error_at = now
        self.failing_since = self.failing_since or now
        fields = [
            "last_sync_at",
            "last_error",
            "last_error_request_id",
            "last_error_at",
            "failing_since",
        ]
        if backoff_until is not None:
            self.backoff_until = backoff_until
            fields.append("backoff_until")
        self.save(update_fields=fields)

    @property
    def is_failing(self) -> bool:
        return self.failing_since is not None


class Submission(models.Model):
    """One submitted create form, claimed by its one-time token so it runs at most once.

    A double click, a resubmitted form or back-and-submit all carry the same token: the second
    request finds the row and goes to the batch (or waits for the first) instead of creating again.
    """

    class State(models.TextChoices):
        CHECKED = "checked", "checked, waiting for confirmation"
        PENDING = "pending", "being submitted"
        DONE = "done", "submitted"
        FAILED = "failed", "failed"

    token = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="+", default=default_connection_id
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.SET_NULL)
    # The checked input file waits here between "check" and "create" (see submissions).
    staged_path = models.CharField(max_length=500, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    # What the check found (lines, bytes, model, endpoint, tokens) and what the form asked for.
    facts = models.JSONField(null=True, blank=True)
    request = models.JSONField(null=True, blank=True)
    retry_of = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept once the input file is uploaded, so a failure after the upload is retried without it.
    uploaded_file_id = models.CharField(max_length=128, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.token} ({self.state})"


class ResultFileQuerySet(GenerationQuerySet):
    unseen_fields = frozenset({"last_used_at"})  # when someone last opened it: no page shows it


class ResultFile(models.Model):
    """A local copy of one of a batch's files, fetched on first use so the results viewer can
    page through it without downloading it again; removed after a retention period unused."""

    class Kind(models.TextChoices):
        INPUT = "input", "input"
        OUTPUT = "output", "output"
        ERROR = "error", "error"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="result_files")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    file_id = models.CharField(max_length=128)
    path = models.CharField(max_length=500)
    bytes = models.BigIntegerField(default=0)
    lines = models.PositiveIntegerField(default=0)
    fetched_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = ResultFileQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "kind"], name="one_copy_per_batch_file")
        ]

    def __str__(self) -> str:
        return f"{self.batch_id} {self.kind} {self.file_id}"


class ResultRow(models.Model):
    """One request of a finished batch and what became of it, joined by custom_id from the
    input, output and error files. Offsets point into the local copies for the full view."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="result_rows")
    custom_id = models.CharField(max_length=512)
    input_line = models.PositiveIntegerField(null=True, blank=True)
    input_offset = models.BigIntegerField(null=True, blank=True)
    source = models.CharField(max_length=8, blank=True)  # "output", "error", or "" (never ran)
    offset = models.BigIntegerField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=128, blank=True)
    error_message = models.TextField(blank=True)
    request_preview = models.TextField(blank=True)
    answer_preview = models.TextField(blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ("input_line", "id")
        indexes = [
            models.Index(fields=["batch", "input_line", "id"], name="result_in_order"),
            models.Index(fields=["batch", "ok", "input_line"], name="result_failures"),
            models.Index(fields=["batch", "custom_id"], name="result_custom_id"),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.custom_id}"

    @property
    def never_ran(self) -> bool:
        return not self.source


class BatchTallyQuerySet(GenerationQuerySet):
    def visible_to(self, user: Any, *, connection: str = "") -> BatchTallyQuerySet:
        """The tallies of what `user` may see, as `BatchQuerySet.visible_to`."""
        return Connection.objects.visible_to(user).restrict(self, connection)

    def matching(self, filters: ListFilters) -> BatchTallyQuerySet:
        """The filters the tallies key on: endpoint, model, creator (not a label, nor a
        search: `BatchQuerySet.tab_counts` counts rows for those)."""
        tallies = self
        if filters.endpoint:
            tallies = tallies.filter(endpoint=filters.endpoint)
        if filters.model:
            tallies = tallies.filter(model=filters.model)
        if filters.creator:
            tallies = tallies.filter(creator_id=filters.creator_id or -1)
        return tallies

    def status_counts(self) -> dict[str, int]:
        totals = self.values("status").annotate(n=Sum("count")).order_by()
        return {row["status"]: row["n"] for row in totals if row["n"]}


class BatchTally(models.Model):
    """How many cached batches share one (connection, status, endpoint, model, creator): kept in
    step by every upsert, so the list's counts and filter choices cost the same at 1,000 or
    100,000 batches. `creator_id` is 0 for batches made outside batchweb."""

    connection_id = models.BigIntegerField(default=0)
    status = models.CharField(max_length=32)
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=128)
    creator_id = models.BigIntegerField(default=0)
    count = models.BigIntegerField(default=0)

    objects = BatchTallyQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection_id", "status", "endpoint", "model", "creator_id"],
                name="one_tally_per_key",
            )
        ]

    def __str__(self) -> str:
        return (
            f"{self.connection_id}/{self.status}/{self.endpoint}/{self.model}/"
            f"{self.creator_id}: {self.count}"
        )

    @classmethod
    def move(cls, old: tuple | None, new: tuple | None) -> None:
        """Count a batch under its new key instead of its old one (None: not counted)."""
        if old == new:
            return
        if old is not None:
            cls.add(old, -1)
        if new is not None:
            cls.add(new, 1)

    @classmethod
    def add(cls, key: tuple, delta: int) -> None:
        connection_id, status, endpoint, model, creator_id = key
        where = {
            "connection_id": connection_id,
            "status": status,
            "endpoint": endpoint,
            "model": model,
            "creator_id": creator_id,
        }
        if cls.objects.filter(**where).update(count=models.F("count") + delta):
            return
        try:
            with transaction.atomic():
                cls.objects.create(**where, count=delta)
        except IntegrityError:  # created by another process meanwhile
            cls.objects.filter(**where).update(count=models.F("count") + delta)

    @classmethod
    def rebuild(cls) -> None:
        """Recount from the batches themselves (after deletions outside batchweb's services)."""
        rows = (
            Batch.objects.order_by()
            .values("connection_id", "status", "endpoint", "model", "created_by_id")
            .annotate(n=Count("id"))
        )
        with transaction.atomic():
            cls.objects.all().delete()
            cls.objects.bulk_create(
                cls(
                    connection_id=r["connection_id"],
                    status=r["status"],
                    endpoint=r["endpoint"],
                    model=r["model"],
                    creator_id=r["created_by_id"] or 0,
                    count=r["n"],
                )
                for r in rows
            )
