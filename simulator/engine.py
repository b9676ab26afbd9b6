"""The simulator's state and operations, independent of HTTP.

``Simulator`` is what the WSGI app calls and what in-process tests poke directly (clock,
faults, forced outcomes). Every public method takes the one lock: the state is small and calls
are short, so one lock is simpler and safer than finer ones. Slow work (reading an uploaded
input file) happens outside the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from simulator import dialects, history
from simulator.answers import DEFAULT_MODEL
from simulator.errors import bad_request, conflict, not_found
from simulator.faults import Faults
from simulator.inputs import ENDPOINTS, ParsedInput, RequestLine, parse_input
from simulator.lifecycle import (
    CANCELLABLE,
    OUTPUT_TTL_SECONDS,
    BatchRecord,
    Forced,
    Snapshot,
    Timing,
    build_results,
    observe,
    render,
)
from simulator.store import Blob, FileRecord

logger = logging.getLogger("simulator")

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_BATCH_FILE_BYTES = 209_715_200
INPUT_TTL_SECONDS = 30 * 24 * 3600
METADATA_MAX_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
OPERATIONS = (
    "createFile",
    "listFiles",
    "retrieveFile",
    "downloadFile",
    "deleteFile",
    "createBatch",
    "listBatches",
    "retrieveBatch",
    "cancelBatch",
)
SEED_STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)
_SAVE_EVERY = 1.0  # seconds between writes of the state file


def _hex(length: int = 32) -> str:
    return uuid.uuid4().hex[:length]


class Simulator:
    """An in-memory OpenAI Files + Batches service whose batches age on a controllable clock.

    ``clock`` returns Unix seconds (default ``time.time``); ``/_sim/advance`` adds to it.
    ``speed`` divides every phase duration, so ``speed=10`` runs batches ten times faster while
    timestamps stay on the (real) clock. ``api_key``, when set, is the only key accepted.

    ``dialect`` is one of ``openai``, ``azure`` (Azure's v1 API) and ``azure-legacy`` (Azure's
    dated API), see :mod:`simulator.dialects`. ``max_requests_per_file`` defaults to the
    dialect's limit (50,000 or 100,000). ``enqueued_token_limit`` caps, per model, the
    estimated input tokens of unfinished batches (None: no cap).

    ``history_days`` (0 to 30; default 0, none) starts the simulator with that many days of a
    team's batches ending now, drawn from ``seed`` (see :mod:`simulator.history`). With a state
    file the history is drawn once, on the first start, and kept like any other batch.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
        api_key: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        timing: Timing | None = None,
        seed: int = 0,
        dialect: str = "openai",
        max_requests_per_file: int | None = None,
        enqueued_token_limit: int | None = None,
        history_days: int = 0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.profile = dialects.get(dialect)
        self.max_requests_per_file = max_requests_per_file or self.profile.max_requests
        # ``reset`` goes back to the limit the simulator was started with.
        self._initial_token_limit = _token_limit(enqueued_token_limit)
        self.enqueued_token_limit = self._initial_token_limit
        self.clock = clock
        self.speed = speed
        self.api_key = api_key
        self.timing = timing or Timing()
        self.seed = seed
        self.faults = Faults()
        self._lock = threading.RLock()
        self._offset = 0.0
        self._files: dict[str, FileRecord] = {}
        self._batches: list[BatchRecord] = []
        self._positions: dict[str, int] = {}
        # Batches answered as they were some seconds ago (``lag_batch``): id -> seconds.
        self._lags: dict[str, float] = {}
        self._calls: Counter[str] = Counter()
        self._seq = 0
        self._state_file = Path(state_file) if state_file else None
        if self._state_file:
            self.storage_dir = self._state_file.with_name(self._state_file.name + ".files")
            self.storage_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.storage_dir = Path(tempfile.mkdtemp(prefix="batchsim-"))
        self._dirty = False
        self._saved_at = 0.0
        self.history_days = history.check_days(history_days)
        # When the history was drawn (simulated time), or None: kept in the state file, so a
        # restart does not draw it again.
        self._history_at: float | None = None
        if self._state_file and self._state_file.exists():
            self._load()
        if self.history_days and self._history_at is None:
            self._seed_history()

    @property
    def dialect(self) -> str:
        """The dialect's name; fixed at start, as a client's base URL depends on it."""
        return self.profile.name

    # -- clock, faults, bookkeeping -------------------------------------------------------

    def now(self) -> float:
        """Simulated Unix time: the clock plus every ``advance``."""
        return self.clock() + self._offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
            self._dirty = True
            return self.now()

    def set_faults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge fault switches (see ``Faults``); raises ValueError on a bad switch."""
        with self._lock:
            self.faults.merge(changes)
            return self.faults.to_dict()

    def take_fault(self, operation: str | None = None) -> str | None:
        with self._lock:
            return self.faults.take(operation)

    def take_cut(self) -> bool:
        """Whether the download being answered must stop halfway (``cut_downloads``)."""
        with self._lock:
            return self.faults.take_cut()

    def record_call(self, operation: str) -> None:
        with self._lock:
            self._calls[operation] += 1

    def state(self) -> dict[str, Any]:
        with self._lock:
            calls = {name: self._calls.get(name, 0) for name in OPERATIONS}
            calls.update(self._calls)
            return {
                "calls": calls,
                "batches": len(self._batches),
                "files": len(self._files),
                "now": self.now(),
                "speed": self.speed,
                "faults": self.faults.to_dict(),
                "dialect": self.dialect,
                "enqueued_token_limit": self.enqueued_token_limit,
            }

    def limits(self) -> dict[str, Any]:
        """The enqueued-token limit and, per model, the tokens unfinished batches hold now."""
        with self._lock:
            return {
                "enqueued_token_limit": self.enqueued_token_limit,
                "enqueued_tokens": self._enqueued_tokens(),
            }

    def set_limits(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change ``enqueued_token_limit`` (null clears it); raises ValueError on a bad value."""
        unknown = set(changes) - {"enqueued_token_limit"}
        if unknown:
            raise ValueError(f"unknown limit {sorted(unknown)[0]!r}")
        with self._lock:
            if "enqueued_token_limit" in changes:
                self.enqueued_token_limit = _token_limit(changes["enqueued_token_limit"])
            return self.limits()

    def reset(self) -> None:
        """Forget every file, batch, fault, call count and clock advance; a simulator started
        with history draws it again, ending now."""
        with self._lock:
            for record in self._files.values():
                if record.blob is not None:
                    record.blob.discard()
            self._files.clear()
            self._batches.clear()
            self._positions.clear()
            self._calls.clear()
            self.faults = Faults()
            self._lags.clear()
            self.enqueued_token_limit = self._initial_token_limit
            self._offset = 0.0
            self._history_at = None
            if self.history_days:
                self._seed_history()
            self._dirty = True
            self._save(force=True)

    def close(self) -> None:
        """Write the state file, or remove the temporary storage when there is none."""
        with self._lock:
            if self._state_file:
                self._save(force=True)
            else:
                shutil.rmtree(self.storage_dir, ignore_errors=True)

    # -- files ----------------------------------------------------------------------------

    def create_file(
        self,
        *,
        filename: str,
        purpose: str | None,
        content: Path | bytes,
        expires_after: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store an upload. A ``Path`` is adopted (moved into storage) only on success."""
        if not purpose:
            raise bad_request("Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise bad_request(
                f"Invalid value for 'purpose': '{purpose}'.", param="purpose", code="invalid_value"
            )
        ttl = _expires_after(expires_after, param="expires_after", bounds=self.profile.expiry_range)
        size = content.stat().st_size if isinstance(content, Path) else len(content)
        if purpose == "batch" and size > MAX_BATCH_FILE_BYTES:
            raise bad_request(
                f"File is too large: {size} bytes; batch input files may have at most "
                f"{MAX_BATCH_FILE_BYTES} bytes.",
                param="file",
                code="file_too_large",
            )
        if purpose == "batch" and ttl is None:
            ttl = INPUT_TTL_SECONDS
        file_id = f"file-{_hex(24)}"
        path = self.storage_dir / file_id
        if isinstance(content, Path):
            os.replace(content, path)
        else:
            path.write_bytes(content)
        with self._lock:
            now = self.now()
            record = FileRecord(
                id=file_id,
                filename=filename,
                purpose=purpose,
                created_at=now,
                expires_at=None if ttl is None else now + ttl,
                blob=Blob(path=path),
            )
            self._files[file_id] = record
            self._changed()
            return record.to_dict()

    def get_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            return self._built(self._file(file_id)).to_dict()

    def file_content(self, file_id: str) -> tuple[FileRecord, Blob]:
        """The record and bytes of a file; the bytes stay readable after the lock is released."""
        with self._lock:
            record = self._built(self._file(file_id))
            assert record.blob is not None
            return record, record.blob

    def delete_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._file(file_id)
            del self._files[file_id]
            if record.blob is not None:
                record.blob.discard()
            self._changed()
            return {"id": file_id, "object": "file", "deleted": True}

    def list_files(
        self,
        *,
        purpose: str | None = None,
        limit: int = 10_000,
        order: str = "desc",
        after: str | None = None,
    ) -> dict[str, Any]:
        if not 1 <= limit <= 10_000:
            raise bad_request("Invalid 'limit': must be from 1 to 10000.", param="limit")
        if order not in ("asc", "desc"):
            raise bad_request("Invalid 'order': must be 'asc' or 'desc'.", param="order")
        with self._lock:
            self._settle_all()
            now = self.now()
            records = [
                r
                for r in self._files.values()
                if (purpose is None or r.purpose == purpose)
                and (r.expires_at is None or r.expires_at > now)
            ]
            records.sort(key=lambda r: r.created_at, reverse=order == "desc")
            rest = records
            if after is not None:
                ids = [r.id for r in records]
                if after not in ids:
                    raise bad_request(f"No file found with id '{after}'.", param="after")
                rest = records[ids.index(after) + 1 :]
            chosen, has_more = rest[:limit], len(rest) > limit
            if self.faults.endless_list and not has_more:
                chosen, has_more = records[-limit:], True
            return _page([self._built(r).to_dict() for r in chosen], has_more=has_more)

    def _file(self, file_id: str, *, param: str = "id") -> FileRecord:
        record = self._files.get(file_id)
        if record is not None and record.expires_at is not None and record.expires_at <= self.now():
            # Expired files are deleted upstream; do the same the first time one is asked for.
            del self._files[file_id]
            if record.blob is not None:
                record.blob.discard()
            record = None
        if record is None:
            raise not_found(f"No such File object: {file_id}", param=param)
        return record

    def _built(self, record: FileRecord) -> FileRecord:
        """Generate a batch result file's (or a history batch's input file's) bytes the first
        time anybody needs them."""
        if record.blob is None:
            assert record.source is not None
            batch = self._batches[self._positions[record.source[0]]]
            if record.source[1] == "input":
                content = history.input_content(batch)
                record.blob = Blob.store(content, self.storage_dir, record.id)
                return record
            output, errors = build_results(batch)
            assert batch.final is not None
            for file_id, data in (
                (batch.final.output_file_id, output),
                (batch.final.error_file_id, errors),
            ):
                if file_id is not None and file_id in self._files:
                    self._files[file_id].blob = Blob.store(data, self.storage_dir, file_id)
        return record

    # -- batches --------------------------------------------------------------------------

    def create_batch(self, payload: Any) -> dict[str, Any]:
        """Validate like OpenAI does, read the input file, and start the batch's clock."""
        request = _validated_create(payload, expiry_bounds=self.profile.expiry_range)
        with self._lock:
            source = self._file(request["input_file_id"], param="input_file_id")
            if source.purpose != "batch":
                raise bad_request(
                    f"File '{source.id}' has purpose '{source.purpose}'; "
                    "a batch input file needs purpose 'batch'.",
                    param="input_file_id",
                    code="invalid_value",
                )
            blob = self._built(source).blob
        assert blob is not None
        try:
            parsed = parse_input(
                blob.lines(),
                request["endpoint"],
                max_requests=self.max_requests_per_file,
                renames=self.profile.input_codes,
                model_on_every_line=self.profile.model_on_every_line,
            )
        except FileNotFoundError as exc:  # deleted while we were reading it
            raise not_found(f"No such File object: {source.id}", param="input_file_id") from exc
        with self._lock:
            # Checked under the lock that adds the batch, so two creates cannot both fit.
            errors = parsed.errors or self._over_token_limit(parsed)
            metadata = request.get("metadata")
            batch = self._new_batch(
                endpoint=request["endpoint"],
                input_file_id=source.id,
                metadata=metadata,
                created_at=self.now(),
                lines=parsed.lines,
                errors=errors,
                model=parsed.model,
                output_ttl=_expires_after(
                    request.get("output_expires_after"),
                    param="output_expires_after",
                    bounds=self.profile.expiry_range,
                ),
            )
            self._append([batch])
            return self._render(batch)

    def list_batches(self, *, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        """Newest first; ``after`` is the id of the last batch of the previous page."""
        if not 1 <= limit <= 100:
            raise bad_request(
                f"Invalid 'limit': {limit}; it must be from 1 to 100.",
                param="limit",
                code="invalid_value",
            )
        with self._lock:
            start = len(self._batches) - 1
            if after is not None:
                position = self._positions.get(self._canonical(after))
                if position is None:
                    raise bad_request(f"No batch found with id '{after}'.", param="after")
                start = position - 1
            stop = max(start - limit, -1)
            indexes = range(start, stop, -1)
            has_more = stop >= 0
            if self.faults.endless_list and not has_more:
                indexes = range(min(limit, len(self._batches)) - 1, -1, -1)
                has_more = True
            page = [self._render(self._batches[i]) for i in indexes]
            return _page(page, has_more=has_more)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render(self._batch(batch_id))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            snap = self._settle(batch)
            if snap.status not in CANCELLABLE:
                raise conflict(
                    f"Cannot cancel a batch with status '{snap.status}'.",
                    param="batch_id",
                    code="batch_not_cancellable",
                )
            batch.cancel_at = self.now()
            batch.cancelling_s = self.timing.cancelling / self.speed
            self._changed()
            return self._render(batch)

    def expire_batch(self, batch_id: str) -> dict[str, Any]:
        """End a running batch as ``expired`` now, with partial results."""
        return self._force(batch_id, Forced("expired", 0.0))

    def fail_batch(
        self, batch_id: str, *, code: str | None = None, message: str | None = None
    ) -> dict[str, Any]:
        """End a running batch as ``failed`` now, with one batch-level error."""
        error = {
            "code": code or "token_limit_exceeded",
            "message": message or "Enqueued token limit reached (forced by the simulator).",
            "param": None,
            "line": None,
        }
        return self._force(batch_id, Forced("failed", 0.0, [error]))

    def forget_batch(self, batch_id: str) -> dict[str, Any]:
        """Remove a batch as if it had never existed: it leaves the list and a retrieve answers
        404 (a batch that vanishes upstream). Its files stay."""
        with self._lock:
            batch = self._batch(batch_id)
            self._batches.remove(batch)
            self._positions = {b.id: i for i, b in enumerate(self._batches)}
            self._lags.pop(batch.id, None)
            self._changed()
            return {"id": batch_id, "forgotten": True}

    def lag_batch(self, batch_id: str, seconds: float) -> dict[str, Any]:
        """Answer for a batch as it was ``seconds`` ago (a stale replica), so it seems to move
        backwards; 0 ends that. Returns the batch as it is now answered."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError("seconds must be a non-negative number")
        with self._lock:
            batch = self._batch(batch_id)
            self._settle(batch)  # what was true until now stays true for everyone else
            if seconds:
                self._lags[batch.id] = float(seconds)
            else:
                self._lags.pop(batch.id, None)
            return self._render(batch)

    def seed_batches(
        self,
        *,
        count: int,
        status: str = "completed",
        endpoint: str = "/v1/chat/completions",
        requests: int = 3,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create ``count`` batches already in ``status`` (for benchmarks and demos).

        Terminal batches get creation times one second apart, in the past; all share one small
        input file, so 10,000 of them take a fraction of a second.
        """
        if not 1 <= count <= 100_000:
            raise ValueError("count must be from 1 to 100000")
        if status not in SEED_STATUSES:
            raise ValueError(f"status must be one of {', '.join(SEED_STATUSES)}")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
        if not 1 <= requests <= 1000:
            raise ValueError("requests must be from 1 to 1000")
        content = _seed_jsonl(endpoint, requests)
        parsed = parse_input(content.splitlines(), endpoint)
        file_info = self.create_file(filename="seed.jsonl", purpose="batch", content=content)
        cancelling = self.timing.cancelling / self.speed
        with self._lock:
            now = self.now()
            fresh = []
            for i in range(count):
                batch = self._new_batch(
                    endpoint=endpoint,
                    input_file_id=file_info["id"],
                    metadata=dict(metadata) if metadata else None,
                    created_at=now,
                    lines=parsed.lines,
                    errors=[],
                    model=parsed.model,
                )
                _place_in_status(batch, status, now=now, age=count - i, cancelling=cancelling)
                fresh.append(batch)
            self._append(fresh)
            return {
                "created": count,
                "status": status,
                "first_id": fresh[0].id,
                "last_id": fresh[-1].id,
                "input_file_id": file_info["id"],
            }

    def _over_token_limit(self, parsed: ParsedInput) -> list[dict[str, Any]]:
        """The batch-level error of a valid input that would pass the enqueued-token limit.

        OpenAI takes the batch and fails it at the end of ``validating`` (the error returned
        here becomes its input error); Azure refuses the create itself with a 400. An input
        that fails validation anyway is never counted: it would not run.
        """
        limit = self.enqueued_token_limit
        if limit is None:
            return []
        model = parsed.model or DEFAULT_MODEL
        if self._enqueued_tokens().get(model, 0) + parsed.input_tokens <= limit:
            return []
        message = (
            f"Enqueued token limit reached for {model} in organization org-sim. Limit: {limit} "
            "enqueued tokens. Please try again once some in_progress batches have been completed."
        )
        if self.profile.azure_payloads:
            raise bad_request(message, code="token_limit_exceeded")
        return [{"code": "token_limit_exceeded", "message": message, "line": None, "param": None}]

    def _enqueued_tokens(self) -> dict[str, int]:
        """Per model, the estimated input tokens of the batches that are not finished yet."""
        totals: Counter[str] = Counter()
        for batch in self._batches:
            if batch.input_errors or self._settle(batch).terminal:
                continue
            totals[batch.model or DEFAULT_MODEL] += sum(line.prompt_tokens for line in batch.lines)
        return dict(totals)

    def _new_batch(
        self,
        *,
        endpoint: str,
        input_file_id: str,
        metadata: dict[str, str] | None,
        created_at: float,
        lines: list[RequestLine],
        errors: list[dict[str, Any]],
        model: str | None,
        output_ttl: float | None = None,
    ) -> BatchRecord:
        self._seq += 1
        finalizing = 0.0 if self.faults.quirks.skip_finalizing else self.timing.finalizing
        return BatchRecord(
            id=f"batch_{_hex()}",
            seq=self._seq,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window="24h",
            metadata=metadata,
            created_at=created_at,
            model=model,
            lines=lines,
            input_errors=errors,
            validating_s=self.timing.validating / self.speed,
            in_progress_s=self.timing.in_progress_for(len(lines)) / self.speed,
            finalizing_s=finalizing / self.speed,
            seed=self.seed,
            output_ttl=output_ttl,
            sim_expire=bool(metadata) and metadata.get("sim_expire") == "true",
        )

    def _append(self, fresh: list[BatchRecord]) -> None:
        """Add batches keeping the list ordered by creation, with an index of positions."""
        needs_sort = bool(self._batches) and (
            fresh[0].created_at < self._batches[-1].created_at
            or any(a.created_at > b.created_at for a, b in itertools.pairwise(fresh))
        )
        self._batches.extend(fresh)
        if needs_sort:
            self._batches.sort(key=lambda b: (b.created_at, b.seq))
            self._positions = {b.id: i for i, b in enumerate(self._batches)}
        else:
            start = len(self._batches) - len(fresh)
            for offset, batch in enumerate(fresh):
                self._positions[batch.id] = start + offset
        self._changed()

    def _force(self, batch_id: str, forced: Forced) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            snap = self._settle(batch)
            if snap.terminal:
                raise conflict(f"The batch is already {snap.status}.", param="batch_id")
            forced.at = self.now()
            batch.forced = forced
            self._changed()
            return self._render(batch)

    def _canonical(self, batch_id: str) -> str:
        prefix = self.faults.quirks.id_prefix
        if prefix and batch_id.startswith(prefix) and not batch_id.startswith("batch_"):
            return "batch_" + batch_id[len(prefix) :]
        return batch_id

    def _batch(self, batch_id: str) -> BatchRecord:
        position = self._positions.get(self._canonical(batch_id))
        if position is None:
            raise not_found(f"No batch found with id '{batch_id}'.", param="batch_id")
        return self._batches[position]

    def _settle(
        self, batch: BatchRecord, *, file_id: Callable[[str, str], str] | None = None
    ) -> Snapshot:
        """Observe the batch; the first time it is seen terminal, freeze it and file results
        (``file_id(batch id, kind)`` names them; by default a random id)."""
        snap = observe(batch, self.now())
        if batch.final is None and snap.terminal:
            outputs, errors = batch.result_line_counts(snap)
            assert snap.ended_at is not None
            ttl = batch.output_ttl or OUTPUT_TTL_SECONDS
            for kind, lines in (("output", outputs), ("error", errors)):
                if not lines and not (kind == "error" and self.profile.always_error_file):
                    continue
                record = FileRecord(
                    id=file_id(batch.id, kind) if file_id else f"file-{_hex(24)}",
                    filename=f"{batch.id}_{kind}.jsonl",
                    purpose="batch_output",
                    created_at=snap.ended_at,
                    expires_at=snap.ended_at + ttl,
                    source=(batch.id, kind),
                )
                self._files[record.id] = record
                setattr(snap, f"{kind}_file_id", record.id)
            snap.body_as_string = self.faults.quirks.body_as_string
            batch.final = snap
            self._changed()
        return snap

    def _settle_all(self) -> None:
        for batch in self._batches:
            if batch.final is None:
                self._settle(batch)

    def _render(self, batch: BatchRecord) -> dict[str, Any]:
        snap = self._settle(batch)
        lag = self._lags.get(batch.id)
        if lag:
            # As seen earlier: observed without the frozen ending, at the earlier moment.
            earlier = observe(dataclasses.replace(batch, final=None), self.now() - lag)
            if not earlier.terminal:
                snap = earlier
        quirks = self.faults.quirks
        display_id = batch.id
        if quirks.id_prefix:
            display_id = quirks.id_prefix + batch.id.removeprefix("batch_")
        payload = render(batch, snap, display_id=display_id)
        if quirks.skip_finalizing:
            payload["finalizing_at"] = None
            if payload["status"] == "finalizing":
                payload["status"] = "in_progress"
        return payload

    def _seed_history(self) -> None:
        """Add the planned history (see :mod:`simulator.history`), ending now. Finished batches
        are settled at once, with result file ids that depend only on the batch."""
        with self._lock:
            now = self.now()
            planned = history.build(days=self.history_days, seed=self.seed, now=now)
            for batch in planned.batches:
                self._seq += 1
                batch.seq = self._seq
                batch.seed = self.seed
            for record in planned.files:
                self._files[record.id] = record
            self._append(sorted(planned.batches, key=lambda b: (b.created_at, b.seq)))
            for batch in planned.batches:
                self._settle(batch, file_id=history.result_file_id)
            self._history_at = now
            self._changed()

    # -- persistence ----------------------------------------------------------------------

    def _changed(self) -> None:
        self._dirty = True
        self._save()

    def _save(self, *, force: bool = False) -> None:
        """Write the state file atomically, at most once a second unless ``force``."""
        if not self._state_file or not self._dirty:
            return
        if not force and time.monotonic() - self._saved_at < _SAVE_EVERY:
            return
        line_sets: dict[int, int] = {}
        shared: list[list[list[Any]]] = []
        batches = []
        for batch in self._batches:
            key = id(batch.lines)
            if key not in line_sets:
                line_sets[key] = len(shared)
                shared.append([line.to_list() for line in batch.lines])
            batches.append({**batch.to_json(), "lines": line_sets[key]})
        files = [
            {
                **{k: v for k, v in record.__dict__.items() if k != "blob"},
                "blob": record.blob.path.name if record.blob and record.blob.path else None,
            }
            for record in self._files.values()
        ]
        state = {
            "version": 1,
            "offset": self._offset,
            "seq": self._seq,
            "history_at": self._history_at,
            "line_sets": shared,
            "files": files,
            "batches": batches,
        }
        temporary = self._state_file.with_name(self._state_file.name + ".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self._state_file)
        self._dirty = False
        self._saved_at = time.monotonic()

    def _load(self) -> None:
        assert self._state_file is not None
        state = json.loads(self._state_file.read_text())
        self._offset = state["offset"]
        self._seq = state["seq"]
        self._history_at = state.get("history_at")  # absent from files of older versions
        line_sets = [[RequestLine.from_list(x) for x in lines] for lines in state["line_sets"]]
        for item in state["files"]:
            blob_name = item.pop("blob")
            record = FileRecord(**item)
            record.source = tuple(record.source) if record.source else None  # type: ignore[assignment]
            if blob_name:
                with contextlib.suppress(FileNotFoundError):
                    record.blob = Blob(path=self.storage_dir / blob_name)
            if record.blob is None and record.source is None:
                logger.warning("state file: the bytes of %s are gone; dropping it", record.id)
                continue
            self._files[record.id] = record
        for item in state["batches"]:
            lines = line_sets[item.pop("lines")]
            self._batches.append(BatchRecord.from_json(item, lines))
        self._positions = {b.id: i for i, b in enumerate(self._batches)}


def _page(data: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _expires_after(value: Any, *, param: str, bounds: tuple[int, int]) -> float | None:
    """Seconds of an ``{anchor: "created_at", seconds}`` object, ``seconds`` within ``bounds``
    (the dialect's: OpenAI 1 hour to 30 days, Azure 14 to 30 days)."""
    if value is None:
        return None
    low, high = bounds
    if (
        not isinstance(value, Mapping)
        or value.get("anchor") != "created_at"
        or isinstance(value.get("seconds"), bool)
        or not isinstance(value.get("seconds"), int)
        or not low <= value["seconds"] <= high
        or set(value) - {"anchor", "seconds"}
    ):
        raise bad_request(
            f"Invalid '{param}': expected {{anchor: 'created_at', seconds: {low}..{high}}}.",
            param=param,
            code="invalid_value",
        )
    return float(value["seconds"])


def _validated_create(payload: Any, *, expiry_bounds: tuple[int, int]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise bad_request("The body must be a JSON object.")
    known = {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
    for key in payload:
        if key not in known:
            raise bad_request(
                f"Unrecognized request argument supplied: {key}",
                param=key,
                code="unknown_parameter",
            )
    for key in ("input_file_id", "endpoint", "completion_window"):
        if payload.get(key) in (None, ""):
            raise bad_request(
                f"Missing required parameter: '{key}'.",
                param=key,
                code="missing_required_parameter",
            )
        if not isinstance(payload[key], str):
            raise bad_request(f"Invalid type for '{key}': expected a string.", param=key)
    if payload["endpoint"] not in ENDPOINTS:
        raise bad_request(
            f"Invalid value for 'endpoint': '{payload['endpoint']}'. Supported values are: "
            + ", ".join(f"'{e}'" for e in ENDPOINTS)
            + ".",
            param="endpoint",
            code="invalid_value",
        )
    if payload["completion_window"] != "24h":
        raise bad_request(
            f"Invalid value for 'completion_window': '{payload['completion_window']}'. "
            "Supported values are: '24h'.",
            param="completion_window",
            code="invalid_value",
        )
    _check_metadata(payload.get("metadata"))
    _expires_after(
        payload.get("output_expires_after"), param="output_expires_after", bounds=expiry_bounds
    )
    return payload


def _token_limit(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("enqueued_token_limit must be a non-negative integer or null")
    return value


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    problem = None
    if not isinstance(metadata, dict):
        problem = "expected an object of string keys and string values"
    elif len(metadata) > METADATA_MAX_PAIRS:
        problem = f"at most {METADATA_MAX_PAIRS} pairs are allowed"
    else:
        for key, value in metadata.items():
            if len(key) > METADATA_KEY_CHARS:
                problem = f"key '{key[:20]}…' is longer than {METADATA_KEY_CHARS} characters"
            elif not isinstance(value, str):
                problem = f"the value of '{key}' must be a string"
            elif len(value) > METADATA_VALUE_CHARS:
                problem = f"the value of '{key}' is longer than {METADATA_VALUE_CHARS} characters"
            if problem:
                break
    if problem:
        raise bad_request(f"Invalid 'metadata': {problem}.", param="metadata", code="invalid_value")


def _seed_jsonl(endpoint: str, requests: int) -> bytes:
    field_by_endpoint = {
        "/v1/chat/completions": lambda i: {"messages": [{"role": "user", "content": f"Hi {i}"}]},
        "/v1/responses": lambda i: {"input": f"Hi {i}"},
        "/v1/embeddings": lambda i: {"input": f"text {i}"},
        "/v1/moderations": lambda i: {"input": f"text {i}"},
    }
    make_body = field_by_endpoint.get(endpoint, lambda i: {"prompt": f"Prompt {i}"})
    lines = (
        json.dumps(
            {
                "custom_id": f"seed-{i}",
                "method": "POST",
                "url": endpoint,
                "body": {"model": "gpt-4o-mini", **make_body(i)},
            }
        )
        for i in range(1, requests + 1)
    )
    return "".join(f"{line}\n" for line in lines).encode()


def _place_in_status(
    batch: BatchRecord, status: str, *, now: float, age: int, cancelling: float
) -> None:
    """Back-date a fresh batch (and stage cancel/forced events) so that it shows ``status``."""
    v, d, f = batch.validating_s, batch.in_progress_s, batch.finalizing_s
    middle = v + d / 2
    if status == "validating":
        batch.created_at = now
    elif status == "in_progress":
        batch.created_at = now - middle
    elif status == "finalizing":
        batch.created_at = now - (v + d + f / 2)
    elif status == "cancelling":
        batch.created_at = now - middle
        batch.cancel_at = now
        batch.cancelling_s = cancelling
    else:
        # Terminal: spread over the past, one second apart, the newest well before now.
        batch.created_at = now - (v + d + f + cancelling + 60) - age
        if status == "failed":
            batch.forced = Forced("failed", batch.created_at + v, [_seed_failure()])
        elif status == "expired":
            batch.forced = Forced("expired", batch.created_at + middle)
        elif status == "cancelled":
            batch.cancel_at = batch.created_at + middle
            batch.cancelling_s = cancelling


def _seed_failure() -> dict[str, Any]:
    return {
        "code": "token_limit_exceeded",
        "message": "Enqueued token limit reached for gpt-4o-mini.",
        "param": None,
        "line": None,
    }
