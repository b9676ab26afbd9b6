"""A batch's life as a pure function of time.

A batch never runs in the background: its status, timestamps and counts are computed from the
simulated clock each time someone looks (:func:`observe`). That keeps the simulator
deterministic, lets tests jump the clock forward, and costs nothing for batches nobody watches.
Once a batch is seen in a terminal status its view is frozen (``BatchRecord.final``), so later
changes of quirks or timing cannot rewrite history.

Requests are processed one after the other, in a shuffled (seeded, so deterministic) order,
at an even pace over the ``in_progress`` phase; that order is also the order of the lines of
the output and error files.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from simulator.answers import error_body, success_body
from simulator.inputs import RequestLine

WINDOW_SECONDS = 24 * 3600
OUTPUT_TTL_SECONDS = 30 * 24 * 3600
TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
CANCELLABLE = frozenset({"validating", "in_progress", "finalizing"})
NOT_RUN = {
    "cancelled": (
        "batch_cancelled",
        "This request was not executed because the batch was cancelled.",
    ),
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
}


@dataclass(frozen=True)
class Timing:
    """Phase durations in simulated seconds (divided by the simulator's ``speed``).

    ``in_progress`` lasts ``per_request`` seconds a request, bounded so that a tiny file still
    shows progress and a huge one still ends inside the 24 h window.
    """

    validating: float = 2.0
    per_request: float = 1.0
    min_in_progress: float = 1.0
    max_in_progress: float = 20 * 3600.0
    finalizing: float = 2.0
    cancelling: float = 3.0

    def in_progress_for(self, requests: int) -> float:
        return min(self.max_in_progress, max(self.min_in_progress, self.per_request * requests))


@dataclass
class Forced:
    """An outcome imposed through the control API at simulated time ``at``."""

    status: str
    at: float
    errors: list[dict[str, Any]] | None = None


@dataclass
class Snapshot:
    """What a batch looks like at one moment; stored as ``final`` once terminal."""

    status: str
    timestamps: dict[str, float | None]
    started: bool
    processed: int
    errors: list[dict[str, Any]] | None = None
    ended_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    body_as_string: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass
class Progress:
    """Processing order and prefix sums over it, so counts at any moment cost O(1)."""

    order: list[int]
    failed: list[int]
    input_tokens: list[int]
    output_tokens: list[int]
    cached_tokens: list[int]
    reasoning_tokens: list[int]


@dataclass(eq=False)
class BatchRecord:
    """Everything the simulator knows about one batch; durations are fixed at creation."""

    id: str
    seq: int
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    model: str | None
    lines: list[RequestLine]
    input_errors: list[dict[str, Any]]
    validating_s: float
    in_progress_s: float
    finalizing_s: float
    seed: int = 0
    output_ttl: float | None = None
    sim_expire: bool = False
    cancel_at: float | None = None
    cancelling_s: float = 0.0
    forced: Forced | None = None
    final: Snapshot | None = None
    _progress: Progress | None = field(default=None, repr=False)

    @property
    def expires_at(self) -> float:
        return self.created_at + WINDOW_SECONDS

    @property
    def in_progress_at(self) -> float:
        return self.created_at + self.validating_s

    @property
    def finalizing_at(self) -> float:
        return self.in_progress_at + self.in_progress_s

    def progress(self) -> Progress:
        if self._progress is None:
            order = list(range(len(self.lines)))
            random.Random(f"{self.seed}:{self.id}").shuffle(order)
            failed, tokens_in, tokens_out, cached, reasoning = [0], [0], [0], [0], [0]
            for index in order:
                line = self.lines[index]
                ok = not line.fail_status
                failed.append(failed[-1] + (not ok))
                tokens_in.append(tokens_in[-1] + (line.prompt_tokens if ok else 0))
                tokens_out.append(tokens_out[-1] + (line.completion_tokens if ok else 0))
                cached.append(cached[-1] + (line.cached_tokens if ok else 0))
                reasoning.append(reasoning[-1] + (line.reasoning_tokens if ok else 0))
            self._progress = Progress(order, failed, tokens_in, tokens_out, cached, reasoning)
        return self._progress

    def processed_by(self, moment: float) -> int:
        """How many requests are done at ``moment`` (linear over the in_progress phase)."""
        total = len(self.lines)
        if moment >= self.finalizing_at:
            return total
        share = (moment - self.in_progress_at) / self.in_progress_s
        return max(0, min(total, math.floor(total * share)))

    def result_line_counts(self, snap: Snapshot) -> tuple[int, int]:
        """(output lines, error lines) the result files of a terminal ``snap`` hold."""
        if snap.status == "failed" or not snap.started:
            return 0, 0
        failed = self.progress().failed[snap.processed]
        not_run = len(self.lines) - snap.processed if snap.status in NOT_RUN else 0
        return snap.processed - failed, failed + not_run

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("lines", "_progress")}
        data["forced"] = asdict(self.forced) if self.forced else None
        data["final"] = asdict(self.final) if self.final else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], lines: list[RequestLine]) -> BatchRecord:
        data = dict(data)
        forced, final = data.pop("forced"), data.pop("final")
        record = cls(**data, lines=lines)
        record.forced = Forced(**forced) if forced else None
        record.final = Snapshot(**final) if final else None
        return record


def observe(batch: BatchRecord, now: float) -> Snapshot:
    """The batch as seen at ``now``; a frozen ``final`` wins over any computation."""
    if batch.final is not None:
        return batch.final
    ended_at, end_status = _end(batch)
    # Processing stops at the cancel request (partial output) or at the end.
    stop = min(ended_at, batch.cancel_at if batch.cancel_at is not None else math.inf)
    seen = min(now, ended_at)
    terminal = now >= ended_at
    stamps: dict[str, float | None] = dict.fromkeys(TIMESTAMPS)
    started = batch.in_progress_at < stop and batch.in_progress_at <= seen
    if started:
        stamps["in_progress_at"] = batch.in_progress_at
    if batch.finalizing_s > 0 and batch.finalizing_at < stop and batch.finalizing_at <= seen:
        stamps["finalizing_at"] = batch.finalizing_at
    if batch.cancel_at is not None and batch.cancel_at <= seen:
        stamps["cancelling_at"] = batch.cancel_at
    errors = None
    if terminal:
        status = end_status
        stamps[f"{end_status}_at"] = ended_at
        if end_status == "failed":
            errors = batch.forced.errors if batch.forced else batch.input_errors
    elif batch.cancel_at is not None and now >= batch.cancel_at:
        status = "cancelling"
    elif now < batch.in_progress_at:
        status = "validating"
    elif now < batch.finalizing_at:
        status = "in_progress"
    else:
        status = "finalizing"
    processed = batch.processed_by(min(seen, stop)) if started else 0
    return Snapshot(
        status=status,
        timestamps=stamps,
        started=started,
        processed=processed,
        errors=errors,
        ended_at=ended_at if terminal else None,
    )


def _end(batch: BatchRecord) -> tuple[float, str]:
    """When and how the batch ends, given what happened to it so far."""
    ends: list[tuple[float, str]] = []
    if batch.cancel_at is not None:
        ends.append((batch.cancel_at + batch.cancelling_s, "cancelled"))
    elif batch.input_errors:
        ends.append((batch.in_progress_at, "failed"))
    else:
        ends.append((batch.finalizing_at + batch.finalizing_s, "completed"))
        if batch.sim_expire:
            ends.append((batch.in_progress_at + batch.in_progress_s / 2, "expired"))
    ends.append((batch.expires_at, "expired"))
    if batch.forced is not None:
        ends.append((batch.forced.at, batch.forced.status))
    return min(ends, key=lambda end: end[0])


def render(batch: BatchRecord, snap: Snapshot, *, display_id: str) -> dict[str, Any]:
    """The Batch object, nulls included, as the live API sends it."""
    progress = batch.progress()
    failed = progress.failed[snap.processed]
    usage = None
    if snap.started:
        tokens_in = progress.input_tokens[snap.processed]
        tokens_out = progress.output_tokens[snap.processed]
        usage = {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": progress.cached_tokens[snap.processed]},
            "output_tokens": tokens_out,
            "output_tokens_details": {
                "reasoning_tokens": progress.reasoning_tokens[snap.processed]
            },
            "total_tokens": tokens_in + tokens_out,
        }
    stamps = {k: (None if v is None else int(v)) for k, v in snap.timestamps.items()}
    return {
        "id": display_id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": {"object": "list", "data": snap.errors} if snap.errors else None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": snap.status,
        "output_file_id": snap.output_file_id,
        "error_file_id": snap.error_file_id,
        "created_at": int(batch.created_at),
        "in_progress_at": stamps["in_progress_at"],
        "expires_at": int(batch.expires_at),
        "finalizing_at": stamps["finalizing_at"],
        "completed_at": stamps["completed_at"],
        "failed_at": stamps["failed_at"],
        "expired_at": stamps["expired_at"],
        "cancelling_at": stamps["cancelling_at"],
        "cancelled_at": stamps["cancelled_at"],
        "request_counts": {
            "total": len(batch.lines) if snap.started else 0,
            "completed": snap.processed - failed,
            "failed": failed,
        },
        "usage": usage,
        "metadata": batch.metadata,
    }


def build_results(batch: BatchRecord) -> tuple[bytes, bytes]:
    """The contents of the output and error files of a terminal batch, in processing order."""
    snap = batch.final
    assert snap is not None and snap.terminal
    output: list[str] = []
    errors: list[str] = []
    total = len(batch.lines)
    for position, index in enumerate(batch.progress().order):
        line = batch.lines[index]
        rng = random.Random(f"{batch.seed}:{batch.id}:{index}")
        result: dict[str, Any] = {
            "id": f"batch_req_{rng.getrandbits(128):032x}",
            "custom_id": line.custom_id,
            "response": None,
            "error": None,
        }
        if position < snap.processed:
            done_at = int(batch.in_progress_at + (position + 1) * batch.in_progress_s / total)
            if line.fail_status:
                status, body = line.fail_status, error_body(line)
            else:
                status = 200
                body = success_body(batch.endpoint, line, created=done_at, rng=rng)
            result["response"] = {
                "status_code": status,
                "request_id": f"req_{rng.getrandbits(128):032x}",
                "body": json.dumps(body) if snap.body_as_string else body,
            }
            (errors if line.fail_status else output).append(json.dumps(result))
        elif snap.started and snap.status in NOT_RUN:
            # Requests of a batch stopped before it started are not results (as in
            # result_line_counts): Azure's always-present error file stays empty then.
            code, message = NOT_RUN[snap.status]
            result["error"] = {"code": code, "message": message}
            errors.append(json.dumps(result))
    return _jsonl(output), _jsonl(errors)


def _jsonl(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()
