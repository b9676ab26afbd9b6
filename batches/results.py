"""Streaming readers for Batch API output and error files.

A finished batch leaves up to two JSONL files: the output file (every request that got an HTTP
answer) and the error file (requests that failed or never ran). Both can reach hundreds of
megabytes, their lines come in no particular order, and servers that speak this API differ in
small ways (a response body sent as a JSON string, errors with only a message, ``response:
null``). Everything here therefore reads one line at a time, keeps memory bounded by the longest
line rather than the file, and never lets one bad line stop the rest.

The module is pure standard library and knows nothing about Django, so the sync worker, the
views and the tests can all call it on plain binary streams.
"""

from __future__ import annotations

import base64
import binascii
import json
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

__all__ = [
    "NEVER_RAN",
    "ResultLine",
    "ResultLineError",
    "ResultOutcomes",
    "ResultSummary",
    "RetryReport",
    "build_offset_index",
    "build_retry_file",
    "parse_result_line",
    "read_lines_at",
    "read_outcomes",
    "summarize",
]

#: Reason recorded by :func:`build_retry_file` for requests that have no line in either file.
NEVER_RAN = "never ran"

#: The top-error counter keeps at most this many distinct messages, so a file in which every
#: message differs (ids or token counts inside the text) cannot grow memory without bound.
MAX_TRACKED_MESSAGES = 1000
#: Messages are cut to this length before counting: long messages repeat a short, common head.
MAX_MESSAGE_CHARS = 200
#: How many of the most common messages a summary keeps.
TOP_ERRORS = 3
#: Error codes are cut to this length (the results table's column), and a summary counts at
#: most this many distinct ones; the rest are counted together under ``OTHER_CODES``.
MAX_CODE_CHARS = 128
MAX_CODES = 50
OTHER_CODES = "(other codes)"


class ResultLineError(ValueError):
    """A line of an output or error file that is not a JSON object."""


# --------------------------------------------------------------------------------------------
# One line
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ResultLine:
    """One parsed line of an output or error file, whatever variant the server sent.

    ``ok`` is true only for a request that ran and got an answer below 400 with no ``error``.
    ``raw`` is the parsed line, with ``response.body`` decoded to an object when the server sent
    it as a JSON string, so callers never have to handle that variant themselves.
    """

    custom_id: str | None
    status_code: int | None
    ok: bool
    error_code: str | None
    error_message: str | None
    answer_text: str | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    raw: dict[str, Any]


def parse_result_line(raw: bytes | str) -> ResultLine:
    """Parse one line of an output or error file.

    Raises :class:`ResultLineError` when the line is blank, not JSON, or JSON but not an object;
    every other oddity (missing keys, nulls, a body sent as text) is tolerated, because a
    dashboard that refuses a whole file over one odd line helps nobody.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        # json.JSONDecodeError is a ValueError; bytes that are not UTF-8 raise UnicodeDecodeError.
        raise ResultLineError(f"line is not JSON: {_cut(str(exc))}") from None
    except RecursionError:  # "[[[[…": deeper than the reader goes
        raise ResultLineError("line is not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ResultLineError(f"line is JSON but not an object ({type(data).__name__})")

    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str):
        custom_id = None

    response = data.get("response")
    status_code: int | None = None
    body: Any = None
    if isinstance(response, dict):
        status_code = _as_int(response.get("status_code"))
        body = response.get("body")
        if isinstance(body, str):
            body = _decode_text_body(body)
            response["body"] = body

    # An ``error`` on the line wins over anything in the response: it is how the API marks
    # requests that never ran (expired, cancelled), whatever the response says.
    line_error = data.get("error")
    if line_error:
        error_code, error_message = _error_fields(line_error)
        ok = False
    elif isinstance(response, dict):
        body_error = body.get("error") if isinstance(body, dict) else None
        if status_code is not None and status_code >= 400:
            ok = False
            if body_error:
                error_code, error_message = _error_fields(body_error)
            else:
                error_code, error_message = None, body if isinstance(body, str) else None
        elif status_code is None and body_error:
            # Some servers omit the status; an error body is then the only failure signal.
            ok = False
            error_code, error_message = _error_fields(body_error)
        else:
            ok = True
            error_code = error_message = None
    else:
        # Neither a response nor an error: nothing says the request succeeded.
        ok = False
        error_code = error_message = None

    input_tokens = output_tokens = total_tokens = None
    answer_text = None
    if isinstance(body, dict):
        input_tokens, output_tokens, total_tokens = _usage(body.get("usage"))
        if ok:
            answer_text = _answer_text(body)

    return ResultLine(
        custom_id=custom_id,
        status_code=status_code,
        ok=ok,
        error_code=error_code,
        error_message=error_message,
        answer_text=answer_text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total_tokens,
        raw=data,
    )


def _decode_text_body(text: str) -> Any:
    """Decode a body that a server sent as a JSON string; keep the text when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _cut(text: str) -> str:
    """An error message about a line, short whatever the line held."""
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _as_int(value: Any) -> int | None:
    """Read a count or status code that may arrive as an int, a float or a numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _error_fields(error: Any) -> tuple[str | None, str | None]:
    """Return (code, message) from an error object, a bare message string, or anything else.

    The code falls back to the error ``type`` because OpenAI sends ``code: null`` on many
    invalid-request errors, and the type is then the only machine-readable label.
    """
    if isinstance(error, str):
        return None, error
    if not isinstance(error, dict):
        return None, None
    code = error.get("code") or error.get("type")
    message = error.get("message")
    return (
        str(code) if code is not None else None,
        str(message) if message is not None else None,
    )


def _usage(usage: Any) -> tuple[int | None, int | None, int | None]:
    """Return (input, output, total) tokens across the endpoints' two naming schemes.

    Chat, completions and embeddings say ``prompt_tokens``/``completion_tokens``; the Responses
    API says ``input_tokens``/``output_tokens``.
    """
    if not isinstance(usage, dict):
        return None, None, None
    input_tokens = _as_int(usage.get("input_tokens"))
    if input_tokens is None:
        input_tokens = _as_int(usage.get("prompt_tokens"))
    output_tokens = _as_int(usage.get("output_tokens"))
    if output_tokens is None:
        output_tokens = _as_int(usage.get("completion_tokens"))
    total_tokens = _as_int(usage.get("total_tokens"))
    if total_tokens is None and input_tokens is not None:
        total_tokens = input_tokens + (output_tokens or 0)
    return input_tokens, output_tokens, total_tokens


def _answer_text(body: dict[str, Any]) -> str | None:
    """Return a short human answer for a successful body, recognised by shape, not by URL.

    Shapes are recognised from the body itself because the line does not say which endpoint
    it came from, and compatible servers do not always send ``object``.
    """
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict):  # chat completions
            return _content_text(message.get("content"))
        text = first.get("text")  # legacy completions
        return text if isinstance(text, str) else None

    if "output_text" in body or "output" in body:  # responses
        output_text = body.get("output_text")
        if isinstance(output_text, str):
            return output_text
        return _responses_output_text(body.get("output"))

    data = body.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict) and "embedding" in data[0]:
        return _embedding_text(data)

    results = body.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        return _moderation_text(results)

    return None


def _content_text(content: Any) -> str | None:
    """Chat message content is usually a string, but some servers send a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return "".join(parts) if parts else None
    return None


def _responses_output_text(output: Any) -> str | None:
    """Join the ``output_text`` parts of every message item, as the SDK's ``output_text`` does."""
    if not isinstance(output, list):
        return None
    parts: list[str] = []
    for item in output:
        if not isinstance(item, dict) or not isinstance(item.get("content"), list):
            continue
        for part in item["content"]:
            if (
                isinstance(part, dict)
                and part.get("type", "output_text") == "output_text"
                and isinstance(part.get("text"), str)
            ):
                parts.append(part["text"])
    return "".join(parts) if parts else None


def _embedding_text(data: list[Any]) -> str:
    """Describe embeddings by size: the vectors themselves mean nothing to a person."""
    vector = data[0].get("embedding")
    if isinstance(vector, list):
        dimensions = len(vector)
    elif isinstance(vector, str):  # encoding_format=base64: little-endian float32s
        try:
            dimensions = len(base64.b64decode(vector)) // 4
        except (binascii.Error, ValueError):
            dimensions = 0
    else:
        dimensions = 0
    if len(data) == 1:
        return f"embedding of {dimensions} dimensions"
    return f"{len(data)} embeddings of {dimensions} dimensions"


def _moderation_text(results: list[Any]) -> str:
    """Name the flagged categories across all inputs, in the order the server listed them."""
    flagged: list[str] = []
    for result in results:
        categories = result.get("categories") if isinstance(result, dict) else None
        if not isinstance(categories, dict):
            continue
        for name, is_flagged in categories.items():
            if is_flagged is True and name not in flagged:
                flagged.append(name)
    return "flagged: " + ", ".join(flagged) if flagged else "not flagged"


# --------------------------------------------------------------------------------------------
# Reading whole files
# --------------------------------------------------------------------------------------------


def _iter_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Yield the non-blank lines of a stream, one at a time, terminators included.

    ``readline`` rather than iteration so that every file-like object behaves the same way
    (Django's ``File.__iter__`` has its own chunking rules).
    """
    while line := stream.readline():
        if not line.isspace():
            yield line


def _iter_parsed(streams: Iterable[BinaryIO | None]) -> Iterator[ResultLine | None]:
    """Parse every non-blank line of each stream in turn; ``None`` stands for an unreadable one."""
    for stream in streams:
        if stream is None:
            continue
        for line in _iter_lines(stream):
            try:
                yield parse_result_line(line)
            except ResultLineError:
                yield None


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ResultSummary:
    """What a finished batch produced, small enough to store in a JSONField.

    ``failed_by_status`` counts failures that got an HTTP answer, keyed by status ("400");
    requests that never ran have no status and are counted only in ``failed_by_code`` (which
    covers every failure, "unknown" when the server gave no code). ``never_ran`` is known only
    when the batch's request total is, and excludes unreadable lines, which probably stood for
    requests that did run.
    """

    succeeded: int = 0
    failed: int = 0
    failed_by_status: dict[str, int] = field(default_factory=dict)
    failed_by_code: dict[str, int] = field(default_factory=dict)
    never_ran: int | None = None
    unreadable_lines: int = 0
    top_errors: list[tuple[str, int]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def all_failed(self) -> bool:
        """True when the batch had requests and not one of them succeeded."""
        return self.succeeded == 0 and (self.failed + (self.never_ran or 0)) > 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (tuples become lists) for storing on the batch row."""
        return {
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failed_by_status": dict(self.failed_by_status),
            "failed_by_code": dict(self.failed_by_code),
            "never_ran": self.never_ran,
            "unreadable_lines": self.unreadable_lines,
            "top_errors": [[message, count] for message, count in self.top_errors],
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultSummary:
        """Rebuild a summary from :meth:`to_dict` output; missing keys take their defaults so
        summaries stored by an older version still load."""
        return cls(
            succeeded=int(data.get("succeeded", 0)),
            failed=int(data.get("failed", 0)),
            failed_by_status={str(k): int(v) for k, v in data.get("failed_by_status", {}).items()},
            failed_by_code={str(k): int(v) for k, v in data.get("failed_by_code", {}).items()},
            never_ran=None if data.get("never_ran") is None else int(data["never_ran"]),
            unreadable_lines=int(data.get("unreadable_lines", 0)),
            top_errors=[
                (str(message), int(count)) for message, count in data.get("top_errors", [])
            ],
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
        )


class _BoundedCounter:
    """Count error messages without letting a file of all-different messages exhaust memory.

    Once ``limit`` distinct messages are tracked, new ones are no longer counted. The top three
    can then miss a message that first appears after the limit; with at most a thousand kinds
    of error in a real batch, that trade is worth the guaranteed bound.
    """

    def __init__(self, limit: int = MAX_TRACKED_MESSAGES) -> None:
        self._counts: Counter[str] = Counter()
        self._limit = limit

    def add(self, message: str) -> None:
        message = message[:MAX_MESSAGE_CHARS]
        if message in self._counts or len(self._counts) < self._limit:
            self._counts[message] += 1

    def most_common(self, n: int) -> list[tuple[str, int]]:
        return self._counts.most_common(n)


def summarize(
    streams: Iterable[BinaryIO | None], *, total_requests: int | None = None
) -> ResultSummary:
    """Summarise a batch's results in one streaming pass over its files.

    ``streams`` is the output file then the error file; either may be ``None`` (a batch whose
    every request failed has no output file) or empty. Lines may come in any order.
    ``total_requests`` (the batch's ``request_counts.total``) lets the summary count the
    requests with no line at all, which never ran.
    """
    summary = ResultSummary()
    messages = _BoundedCounter()
    for result in _iter_parsed(streams):
        if result is None:
            summary.unreadable_lines += 1
            continue
        if result.input_tokens:
            summary.input_tokens += result.input_tokens
        if result.output_tokens:
            summary.output_tokens += result.output_tokens
        if result.ok:
            summary.succeeded += 1
            continue
        summary.failed += 1
        if result.status_code is not None:
            status = str(result.status_code) if 0 < result.status_code < 1000 else "other"
            summary.failed_by_status[status] = summary.failed_by_status.get(status, 0) + 1
        code = (result.error_code or "unknown")[:MAX_CODE_CHARS]
        if code not in summary.failed_by_code and len(summary.failed_by_code) >= MAX_CODES:
            code = OTHER_CODES  # a file whose every code differs must not grow the summary
        summary.failed_by_code[code] = summary.failed_by_code.get(code, 0) + 1
        messages.add(_failure_label(result))

    summary.top_errors = messages.most_common(TOP_ERRORS)
    if total_requests is not None:
        seen = summary.succeeded + summary.failed + summary.unreadable_lines
        summary.never_ran = max(total_requests - seen, 0)
    return summary


def _failure_label(result: ResultLine) -> str:
    """The text people see for a failure: the message, else the code, else the HTTP status."""
    if result.error_message:
        return result.error_message
    if result.error_code:
        return result.error_code
    if result.status_code is not None:
        return f"HTTP {result.status_code}"
    return "no response"


# --------------------------------------------------------------------------------------------
# Offsets index and page reads
# --------------------------------------------------------------------------------------------


def build_offset_index(stream: BinaryIO) -> array[int]:
    """Return the byte offset of the start of every non-blank line, in one pass.

    An ``array('Q')`` costs eight bytes a line (400 KB for 50,000 lines) and lets a page of
    results be read with one seek instead of a scan from the top of a 200 MB file.
    """
    offsets = array("Q")
    position = stream.tell()
    while line := stream.readline():
        if not line.isspace():
            offsets.append(position)
        position += len(line)
    return offsets


def read_lines_at(stream: BinaryIO, offsets: Sequence[int], start: int, count: int) -> list[bytes]:
    """Read ``count`` lines starting at line number ``start`` of the index, without terminators.

    ``stream`` must be the seekable file the index was built from. Past the end, fewer (or no)
    lines come back rather than an error, which is what a pager wants on its last page.
    """
    if start < 0 or count < 0:
        raise ValueError("start and count must not be negative")
    wanted = min(count, len(offsets) - start)
    if wanted <= 0:
        return []
    stream.seek(offsets[start])
    lines: list[bytes] = []
    while len(lines) < wanted:
        line = stream.readline()
        if not line:
            break
        if line.isspace():  # blank lines between indexed ones are not in the index
            continue
        lines.append(line.rstrip(b"\r\n"))
    return lines


# --------------------------------------------------------------------------------------------
# Outcomes per request and the retry file
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ResultOutcomes:
    """Which requests succeeded and why the others failed, keyed by ``custom_id``.

    ``failed`` maps each failed id to a short reason (the error code, else ``HTTP <status>``,
    else "failed"), ready to be passed to :func:`build_retry_file` as ``reasons``. An id with
    both a succeeded and a failed line (never seen from OpenAI, possible after a merge) counts
    as succeeded, so it is not sent twice.
    """

    succeeded: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)


def read_outcomes(output: BinaryIO | None, errors: BinaryIO | None) -> ResultOutcomes:
    """Read both result files once and sort every ``custom_id`` into succeeded or failed.

    Lines without a ``custom_id`` and unreadable lines cannot be joined to a request and are
    skipped: their requests then count as never ran, which is the safe side for a retry.
    """
    outcomes = ResultOutcomes()
    for result in _iter_parsed((output, errors)):
        if result is None or result.custom_id is None:
            continue
        if result.ok:
            outcomes.succeeded.add(result.custom_id)
        else:
            outcomes.failed[result.custom_id] = _failure_reason(result)
    for custom_id in outcomes.succeeded.intersection(outcomes.failed):
        del outcomes.failed[custom_id]
    return outcomes


def _failure_reason(result: ResultLine) -> str:
    if result.error_code:
        return result.error_code
    if result.status_code is not None:
        return f"HTTP {result.status_code}"
    return "failed"


@dataclass(slots=True)
class RetryReport:
    """What :func:`build_retry_file` wrote: line count, counts by reason, lines it skipped."""

    lines: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0


def build_retry_file(
    input_stream: BinaryIO,
    out: BinaryIO,
    *,
    succeeded: set[str] | frozenset[str],
    reasons: Mapping[str, str] | None = None,
) -> RetryReport:
    """Copy every input line whose request did not succeed into ``out``, byte for byte.

    Working from the *succeeded* set rather than the failed one is deliberate: requests that
    never ran have no result line anywhere, and they must be retried too. Lines are copied
    unchanged (terminators included) so the retry batch sends exactly what the first one did.
    ``reasons`` (``ResultOutcomes.failed``) labels the report; ids absent from it are counted
    as "never ran". Blank lines are dropped, and lines without a readable ``custom_id`` are
    counted as unreadable and left out, because one bad line would make the API reject the
    whole retry file.
    """
    reasons = reasons or {}
    report = RetryReport()
    for line in _iter_lines(input_stream):
        custom_id = _input_custom_id(line)
        if custom_id is None:
            report.unreadable += 1
            continue
        if custom_id in succeeded:
            continue
        # Only the input's last line can lack a newline, and it stays last in the copy.
        out.write(line)
        report.lines += 1
        reason = reasons.get(custom_id, NEVER_RAN)
        report.by_reason[reason] = report.by_reason.get(reason, 0) + 1
    return report


def _input_custom_id(line: bytes) -> str | None:
    """The ``custom_id`` of an input line, or ``None`` when the line cannot be read."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    custom_id = data.get("custom_id")
    return custom_id if isinstance(custom_id, str) else None
