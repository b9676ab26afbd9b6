"""When will a running batch finish? An estimate from the request counts the worker has seen.

The worker writes a `ProgressSnapshot` each time a cached running batch's counts or status
change (`progress_snapshot_record`, from `batch_upsert`). The rate of requests done over the
recent snapshots gives the expected finish time; the spread between the rate early and late in
that window gives its range. Both are compared with the batch's deadline (the end of its
completion window). With too little history the estimate says so instead of guessing.

`forecast()` is the arithmetic alone, on a list of (time, requests done) points; `batch_eta()`
adds the batch's status, total and deadline; `etas_attach()` does it for a page of batches with
one query for all their snapshots.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Max, Q
from django.utils import timezone

from ..models import TERMINAL_STATUSES, Batch, ProgressSnapshot, Status

# The rate is measured over the snapshots of the last RATE_WINDOW (more, back in time, when the
# window holds fewer than MIN_POINTS of them).
RATE_WINDOW = dt.timedelta(minutes=30)
# The pages load this much history per batch (and always the latest snapshot): enough for the
# rate window, bounded whatever the batch's age.
LOOKBACK = dt.timedelta(minutes=60)
# Below this, "too early to say": snapshots that show progress, and minutes of history.
MIN_POINTS = 2
MIN_HISTORY = dt.timedelta(minutes=5)
# No request done for this long while in progress: "stalled".
STALL_AFTER = dt.timedelta(minutes=30)
# The range is at least this much either side of the expected rate: a rate measured over
# minutes is never known better than that.
MIN_SPREAD = 0.10
# The slowest rate the range allows, as a share of the measured one: a window with a pause in
# it must not make the late end infinite.
SLOWEST_SHARE = 1 / 3
# A finish this long before the deadline is "well before" it.
WELL_BEFORE = dt.timedelta(hours=2)
# Snapshots of counts that changed less than this after the previous one are not written (a
# batch refreshed every 5 s would otherwise write 720 an hour); status changes always are.
SNAPSHOT_MIN_GAP = dt.timedelta(seconds=60)
# Housekeeping: a finished batch keeps at most this many snapshots (its first and last among
# them), and none once it finished more than SNAPSHOT_RETENTION ago.
SNAPSHOTS_KEPT = 50
SNAPSHOT_RETENTION = dt.timedelta(days=30)


# What `batch_eta` reads of a batch: a list row's estimate is made from these values alone, on
# a batch object that has no other field (batches/cache/rows.py; reading another would be one
# query per row, which tests/test_estimates.py would see).
ETA_COLUMNS = (
    "id",
    "status",
    "created_at",
    "completion_window",
    "expires_at",
    "in_progress_at",
    "request_total",
    "request_completed",
    "request_failed",
    "synced_at",
)


# --- The arithmetic ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """What a list of (time, requests done) points says about the finish.

    `state`: "estimate" (the times are set), "too_early", "stalled" or "done" (no request left).
    `latest` is None when the late end cannot be bounded."""

    state: str
    rate: float | None = None  # requests per second
    expected: dt.datetime | None = None
    earliest: dt.datetime | None = None
    latest: dt.datetime | None = None
    stalled_seconds: float = 0.0


def forecast(
    points: Sequence[tuple[dt.datetime, int]], *, total: int, now: dt.datetime
) -> Forecast:
    """When `total` requests will be done, given how many were done when (`points`, in any
    order; counts are assumed unchanged from the last point until `now`).

    The expected rate is the least-squares slope over the points of the last RATE_WINDOW; the
    range comes from the two-point rates of the window's first and second halves (a batch that
    speeds up or slows down gets a wider range), at least MIN_SPREAD either side."""
    seen = sorted((t, int(done)) for t, done in points if t <= now)
    if not seen:
        return Forecast("too_early")
    current = seen[-1][1]
    if current >= total:
        return Forecast("done")
    # When the count last moved: the first of the trailing points that show the current count.
    moved_at = seen[-1][0]
    for t, done in reversed(seen):
        if done != current:
            break
        moved_at = t
    still = (now - moved_at).total_seconds()
    if still >= STALL_AFTER.total_seconds():
        return Forecast("stalled", stalled_seconds=still)

    window = [p for p in seen if p[0] >= now - RATE_WINDOW]
    if len(window) < MIN_POINTS + 1:
        window = seen[-(MIN_POINTS + 1) :]
    if len(window) < MIN_POINTS or window[-1][1] <= window[0][1]:
        return Forecast("too_early")
    if now - window[0][0] < MIN_HISTORY:
        return Forecast("too_early")
    if window[-1][0] < now:
        window.append((now, current))  # "still at this count now"

    rate = _slope(window)
    if rate <= 0:
        return Forecast("too_early")
    middle = len(window) // 2
    halves = [_two_point(window[: middle + 1]), _two_point(window[middle:])]
    fast = max([rate * (1 + MIN_SPREAD), *halves])
    slow = max(min([rate * (1 - MIN_SPREAD), *halves]), rate * SLOWEST_SHARE)
    left = total - current
    return Forecast(
        "estimate",
        rate=rate,
        expected=now + dt.timedelta(seconds=left / rate),
        earliest=now + dt.timedelta(seconds=left / fast),
        latest=now + dt.timedelta(seconds=left / slow),
    )


def _slope(points: Sequence[tuple[dt.datetime, int]]) -> float:
    """Least-squares requests per second."""
    t0 = points[0][0]
    xs = [(t - t0).total_seconds() for t, _ in points]
    ys = [float(done) for _, done in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread <= 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def _two_point(points: Sequence[tuple[dt.datetime, int]]) -> float:
    seconds = (points[-1][0] - points[0][0]).total_seconds()
    return (points[-1][1] - points[0][1]) / seconds if seconds > 0 else 0.0


# --- In words ---------------------------------------------------------------------------------


def about(seconds: float) -> str:
    """A duration rounded the way people estimate: "4 min", "1 h 40 min", "about 9 h"."""
    minutes = max(1, round(seconds / 60))
    if minutes < 15:
        return f"{minutes} min"
    if minutes < 120:
        minutes = 5 * round(minutes / 5)
    elif minutes < 600:
        minutes = 10 * round(minutes / 10)
    else:
        minutes = 60 * round(minutes / 60)
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest} min" if rest else f"{hours} h"


@dataclass(frozen=True)
class Eta:
    """A running batch's finish-time estimate, ready to show.

    `state`: "on_track", "at_risk", "too_early", "stalled", "validating", "finishing" (all
    requests done, or finalizing) or "cancelling"."""

    state: str
    now: dt.datetime
    deadline: dt.datetime | None = None
    expected: dt.datetime | None = None
    earliest: dt.datetime | None = None
    latest: dt.datetime | None = None
    stalled_seconds: float = 0.0
    reason: str = ""

    @property
    def at_risk(self) -> bool:
        return self.state == "at_risk"

    def _in(self, when: dt.datetime) -> str:
        return about((when - self.now).total_seconds())

    def text(self) -> str:
        """One sentence for the batch's page."""
        if self.state == "validating":
            return "Validating: starts soon."
        if self.state == "finishing":
            return "Finalizing: finishing."
        if self.state == "cancelling":
            return "Cancelling: it will not finish."
        if self.state == "too_early":
            return f"Too early to say when it will finish ({self.reason})."
        if self.state == "stalled":
            text = f"Stalled for {about(self.stalled_seconds)}: no request done since."
            if self.deadline:
                text += " " + self._deadline_words() + "."
            return text
        if self.state == "at_risk" and self.expected is None:
            return "At risk: past its deadline and not finished; it may expire."
        assert self.expected is not None and self.earliest is not None
        expected = f"in about {self._in(self.expected)}"
        span = f"between {self._in(self.earliest)} and " + (
            self._in(self.latest) if self.latest else "much longer"
        )
        if self.state == "at_risk":
            assert self.deadline is not None
            return (
                f"At risk: may not finish before the deadline in {self._in(self.deadline)} "
                f"(expected {expected}, {span})."
            )
        text = f"Expected to finish {expected} ({span})"
        if self.deadline:
            well = self.latest and self.deadline - self.latest >= WELL_BEFORE
            text += ", well before the deadline" if well else ", before the deadline"
        return text + "."

    def short(self) -> str:
        """A few words for the list's progress cell."""
        if self.state == "on_track" and self.expected:
            return f"≈ {self._in(self.expected)} left"
        # "too early to say" stays on the batch's page: on every young row of the list it is noise.
        return {
            "at_risk": "at risk",
            "stalled": "stalled",
            "validating": "starts soon",
            "finishing": "finishing",
            "cancelling": "cancelling",
        }.get(self.state, "")

    def _deadline_words(self) -> str:
        assert self.deadline is not None
        if self.deadline <= self.now:
            return "The deadline has passed"
        return f"The deadline is in {self._in(self.deadline)}"


def batch_eta(
    *,
    batch: Batch,
    now: dt.datetime | None = None,
    snapshots: Iterable[tuple[dt.datetime, int]] | None = None,
) -> Eta | None:
    """The finish-time estimate of a batch; None when it has ended. `snapshots` are its
    (time, requests done) history, read from the database when not given."""
    if batch.status in TERMINAL_STATUSES:
        return None
    now = now or timezone.now()
    deadline = batch.deadline()
    if batch.status == Status.VALIDATING:
        return Eta("validating", now=now, deadline=deadline)
    if batch.status == Status.FINALIZING:
        return Eta("finishing", now=now, deadline=deadline)
    if batch.status == Status.CANCELLING:
        return Eta("cancelling", now=now, deadline=deadline)
    if deadline and deadline <= now:
        return Eta("at_risk", now=now, deadline=deadline)
    if not batch.request_total:
        return Eta("too_early", now=now, deadline=deadline, reason="no request count yet")
    if snapshots is None:
        snapshots = history([batch], now=now).get(batch.pk, [])
    points = list(snapshots)
    if not points and batch.in_progress_at:
        points = [(batch.in_progress_at, 0)] if not batch.requests_done else []
    elif points and batch.requests_done > points[-1][1]:
        # Snapshots are spaced SNAPSHOT_MIN_GAP apart: the latest counts may be newer.
        points.append((min(batch.synced_at, now), batch.requests_done))
    result = forecast(points, total=batch.request_total, now=now)
    if result.state == "done":
        return Eta("finishing", now=now, deadline=deadline)
    if result.state == "stalled":
        return Eta("stalled", now=now, deadline=deadline, stalled_seconds=result.stalled_seconds)
    if result.state != "estimate":
        return Eta("too_early", now=now, deadline=deadline, reason="not enough progress seen yet")
    late = result.latest is None or (deadline is not None and result.latest > deadline)
    risky = deadline is not None and (late or (result.expected and result.expected > deadline))
    return Eta(
        "at_risk" if risky else "on_track",
        now=now,
        deadline=deadline,
        expected=result.expected,
        earliest=result.earliest,
        latest=result.latest,
    )


def history(batches: Sequence[Batch], *, now: dt.datetime) -> dict[int, list[tuple[Any, int]]]:
    """The (time, requests done) snapshots of these batches over LOOKBACK, and the latest of
    each whatever its age: one query for all of them, and one more for those with none that
    recent (a batch stalled for an hour). Two plain queries cost half of one with a subquery
    to build (the list asks on every draw)."""
    ids = [b.pk for b in batches]
    if not ids:
        return {}
    mine = ProgressSnapshot.objects.filter(batch_id__in=ids)
    out: dict[int, list[tuple[Any, int]]] = {pk: [] for pk in ids}
    fields = ("batch_id", "at", "completed", "failed")
    for batch_id, at, completed, failed in (
        mine.filter(at__gte=now - LOOKBACK).order_by("batch_id", "at", "id").values_list(*fields)
    ):
        out[batch_id].append((at, (completed or 0) + (failed or 0)))
    quiet = [pk for pk, points in out.items() if not points]
    if quiet:
        latest = mine.filter(batch_id__in=quiet).order_by().values("batch_id")
        ids_of_latest = latest.annotate(last=Max("id")).values("last")
        for batch_id, at, completed, failed in ProgressSnapshot.objects.filter(
            pk__in=ids_of_latest
        ).values_list(*fields):
            out[batch_id].append((at, (completed or 0) + (failed or 0)))
    return out


def in_lookback(points: Sequence[tuple[Any, int]], *, now: dt.datetime) -> list[tuple[Any, int]]:
    """What `history` would read now of POINTS (a batch's history as read a little earlier,
    oldest first): those within LOOKBACK, or else the latest whatever its age."""
    recent = [point for point in points if point[0] >= now - LOOKBACK]
    return recent or list(points[-1:])


def etas_attach(
    *,
    batches: Sequence[Batch],
    now: dt.datetime | None = None,
    histories: Callable[..., dict[int, list[tuple[Any, int]]]] | None = None,
) -> None:
    """Set `batch.eta` on each of these batches (None for ended ones), reading the snapshots of
    the running ones in a single query (HISTORIES: `history` or what keeps its answers): a
    page's cost does not grow with its rows."""
    now = now or timezone.now()
    running = [b for b in batches if b.status not in TERMINAL_STATUSES]
    found = (histories or history)([b for b in running if b.status == Status.IN_PROGRESS], now=now)
    for batch in batches:
        batch.eta = batch_eta(batch=batch, now=now, snapshots=found.get(batch.pk, []))


# --- Keeping the history ----------------------------------------------------------------------


def progress_snapshot_record(
    *,
    batch: Batch,
    before_status: str | None,
    before_counts: tuple[int | None, int | None, int | None] | None,
    now: dt.datetime,
) -> bool:
    """Write a snapshot of a batch just stored, when its counts or status changed and it is or
    was running (called by `batch_upsert`, after the save). Returns whether one was written.

    A status change is always written; a change of counts only when the previous snapshot is
    at least SNAPSHOT_MIN_GAP old, which keeps a fast batch to about one row a minute."""
    counts = (batch.request_completed, batch.request_failed, batch.request_total)
    was_running = before_status is not None and before_status not in TERMINAL_STATUSES
    if not (batch.running or was_running):
        return False
    status_changed = before_status != batch.status
    if not status_changed:
        if counts == before_counts:
            return False
        recent = ProgressSnapshot.objects.filter(batch=batch, at__gt=now - SNAPSHOT_MIN_GAP)
        if recent.exists():
            return False
    completed, failed, total = counts
    ProgressSnapshot.objects.create(
        batch=batch, at=now, completed=completed, failed=failed, total=total
    )
    return True


def progress_snapshots_thin(*, now: dt.datetime, finished_since: dt.datetime) -> int:
    """Keep the snapshot table small: batches that finished since `finished_since` keep at most
    SNAPSHOTS_KEPT snapshots each (their first and last, and evenly spaced ones between), and
    snapshots older than SNAPSHOT_RETENTION of batches that ended are deleted. Returns how
    many were deleted. For the worker's housekeeping."""
    deleted, _ = ProgressSnapshot.objects.filter(
        at__lt=now - SNAPSHOT_RETENTION, batch__running=False
    ).delete()
    finished = Batch.objects.filter(running=False).filter(
        Q(completed_at__gte=finished_since)
        | Q(failed_at__gte=finished_since)
        | Q(expired_at__gte=finished_since)
        | Q(cancelled_at__gte=finished_since)
    )
    crowded = (
        ProgressSnapshot.objects.filter(batch__in=finished.values("pk"))
        .order_by()
        .values("batch_id")
        .annotate(n=Count("id"))
        .filter(n__gt=SNAPSHOTS_KEPT)
        .values_list("batch_id", flat=True)
    )
    for batch_id in list(crowded):
        ids = list(
            ProgressSnapshot.objects.filter(batch_id=batch_id)
            .order_by("at", "id")
            .values_list("id", flat=True)
        )
        step = (len(ids) - 1) / (SNAPSHOTS_KEPT - 1)
        keep = {ids[round(i * step)] for i in range(SNAPSHOTS_KEPT)}
        gone, _ = ProgressSnapshot.objects.filter(
            pk__in=[pk for pk in ids if pk not in keep]
        ).delete()
        deleted += gone
    return deleted
