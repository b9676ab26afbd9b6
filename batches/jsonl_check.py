"""Check a Batch API input file (JSONL) before it is uploaded.

OpenAI rejects a bad input file only after the upload and a trip through the ``validating``
status, and then often reports just the first problem. Checking locally lets the dashboard show
every problem at once, with line numbers, before anything leaves the building.

The check is one streaming pass: the file is read a line at a time, so memory stays bounded by
the longest line plus the set of ``custom_id`` values (itself bounded by the request limit,
50,000 on OpenAI and 100,000 on Azure, because line checks stop once a file limit is passed).
The module is plain Python with no Django import so that it can be used and tested on its own.
"""

from __future__ import annotations

import codecs
import io
import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, BinaryIO

ENDPOINTS: tuple[str, ...] = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)

MAX_REQUESTS = 50_000
MAX_BYTES = 209_715_200  # 200 MiB, the documented upload limit for batch input files
MAX_EMBEDDING_INPUTS = 50_000

# The body field each endpoint cannot do without; used to catch a file built for one endpoint
# and submitted to another.
REQUIRED_BODY_FIELD: dict[str, str] = {
    "/v1/chat/completions": "messages",
    "/v1/embeddings": "input",
    "/v1/responses": "input",
    "/v1/moderations": "input",
    "/v1/completions": "prompt",
    "/v1/images/generations": "prompt",
    "/v1/images/edits": "prompt",
    "/v1/videos": "prompt",
}

# Reads after a file limit has been passed only count lines and bytes, in pieces of this size,
# so that an oversized file or a gigantic single line cannot exhaust memory.
_DRAIN_PIECE = 1 << 20
_CHARS_PER_TOKEN = 4
# Where a request body caps its output: chat completions (old and new name), responses.
MAX_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_SHOWN_VALUE_CHARS = 60
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# How many deployment names a message lists before it says "and N more".
_SHOWN_MODELS = 10


@dataclass(frozen=True)
class LineProblem:
    """A problem with one line of the file; ``line`` is 1-based and counts blank lines too."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class CheckReport:
    """What :func:`check_jsonl` found.

    ``problems`` keeps only the first ``max_problems`` line problems so that a file broken on
    every line cannot produce an unbounded report; ``problem_count`` is the true total of line
    problems. ``file_problems`` are about the file as a whole (limits, encoding, no requests,
    several models) and are never capped: there are only a handful of kinds.
    """

    problems: list[LineProblem] = field(default_factory=list)
    problem_count: int = 0
    lines: int = 0
    bytes: int = 0
    endpoint: str | None = None
    model: str | None = None
    embedding_inputs: int = 0
    estimated_input_tokens: int = 0
    # The most output the requests may produce: the sum of each line's max_tokens (or
    # max_completion_tokens, max_output_tokens), and how many lines give none.
    max_output_tokens: int = 0
    lines_without_max: int = 0
    file_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the file can be submitted as it is."""
        return self.problem_count == 0 and not self.file_problems

    def summary(self) -> str:
        """One sentence for the dashboard: what the file holds and whether it can be sent."""
        noun = "request" if self.lines == 1 else "requests"
        what = f"{self.lines:,} {noun}"
        if self.endpoint:
            what += f" for {self.endpoint}"
        if self.model:
            what += f" with {_cut(self.model)}"
        what += f", {_format_bytes(self.bytes)}"
        if self.embedding_inputs:
            what += f", {self.embedding_inputs:,} embedding inputs"
        what += f", about {self.estimated_input_tokens:,} input tokens"
        if self.ok:
            return f"{what}: no problems found."
        counts = []
        if self.file_problems:
            n = len(self.file_problems)
            counts.append(f"{n} with the whole file" if n > 1 else "1 with the whole file")
        if self.problem_count:
            n = self.problem_count
            counts.append(f"{n:,} on {'lines' if n > 1 else 'a line'}")
        total = len(self.file_problems) + self.problem_count
        return f"{what}: {total:,} {'problems' if total > 1 else 'problem'} ({', '.join(counts)})."


def check_jsonl(
    stream: BinaryIO,
    *,
    endpoint: str | None = None,
    max_problems: int = 100,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_BYTES,
    max_embedding_inputs: int = MAX_EMBEDDING_INPUTS,
    allowed_endpoints: Collection[str] | None = None,
    known_models: Collection[str] | None = None,
) -> CheckReport:
    """Check a Batch API input file read from a binary ``stream``, in one pass.

    ``endpoint`` is the endpoint the batch will be created for; when it is None the endpoint is
    taken from the first line whose ``url`` is a Batch API endpoint, and every other line must
    use the same. The ``max_*`` limits default to OpenAI's and exist as arguments so that tests
    (and compatible servers with other limits, such as Azure's) can change them.

    A connection narrows what it accepts with ``allowed_endpoints`` (the endpoints it may be
    used for) and ``known_models`` (on Azure, its deployment names: ``body.model`` must be one
    of them). None or an empty collection means no restriction, as an empty list does in a
    connection's settings.

    The stream is read with ``readline`` and never rewound; pass a buffered binary file (an
    unbuffered one is wrapped in a buffer here, since its ``readline`` reads byte by byte).
    """
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint {endpoint!r} is not one of {', '.join(ENDPOINTS)}")
    # A bare string is a Collection of characters: it would pass silently and match nothing.
    if isinstance(allowed_endpoints, str) or isinstance(known_models, str):
        raise TypeError("allowed_endpoints and known_models take a list of names, not a string")
    allowed = set(allowed_endpoints or ENDPOINTS)
    unknown = sorted(allowed - set(ENDPOINTS))
    if unknown:
        shown = ", ".join(map(repr, unknown))
        raise ValueError(f"allowed_endpoints {shown} are not among {', '.join(ENDPOINTS)}")
    if max_problems < 0:
        raise ValueError("max_problems must not be negative")
    if isinstance(stream, io.RawIOBase):
        stream = io.BufferedReader(stream)  # type: ignore[assignment]
    checker = _Checker(
        endpoint=endpoint,
        max_problems=max_problems,
        max_requests=max_requests,
        max_bytes=max_bytes,
        max_embedding_inputs=max_embedding_inputs,
        # Kept in ENDPOINTS' order so messages list them the same way every time.
        allowed_endpoints=tuple(e for e in ENDPOINTS if e in allowed),
        known_models=frozenset(known_models or ()),
    )
    checker.run(stream)
    return checker.report


class _Checker:
    """The state of one pass over a file; split out of :func:`check_jsonl` to keep it readable."""

    def __init__(
        self,
        *,
        endpoint: str | None,
        max_problems: int,
        max_requests: int,
        max_bytes: int,
        max_embedding_inputs: int,
        allowed_endpoints: tuple[str, ...],
        known_models: frozenset[str],
    ) -> None:
        self.report = CheckReport(endpoint=endpoint)
        self.max_problems = max_problems
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_embedding_inputs = max_embedding_inputs
        self.allowed_endpoints = allowed_endpoints
        self.known_models = known_models  # empty: any model
        self.endpoint_line = 0  # the line the endpoint was inferred from, 0 when chosen
        self.model_line = 0
        self.models: Counter[str] = Counter()
        self.custom_ids: dict[str, int] = {}
        self.embedding_limit_line = 0  # the line that took the inputs over the limit
        self.not_utf8_lines = 0
        self.first_not_utf8_line = 0
        self.text_chars = 0
        self.utf16 = False

    def run(self, stream: BinaryIO) -> None:
        """Read and check every line, then add the whole-file problems."""
        report = self.report
        line_no = 0
        while True:
            # Never read more than the byte budget allows: a line that would take the file over
            # the limit is cut short here instead of being read whole into memory.
            raw = stream.readline(max(self.max_bytes - report.bytes + 1, 1))
            if not raw:
                break
            if isinstance(raw, str):
                raise TypeError("check_jsonl needs a binary stream, e.g. open(path, 'rb')")
            line_no += 1
            report.bytes += len(raw)
            if report.bytes > self.max_bytes:
                # The piece may be part of a longer line: let the drain finish that line.
                partial = not raw.endswith(b"\n")
                self._drain(stream, counted_piece=raw, partial=partial)
                break
            if line_no == 1:
                if raw.startswith(_UTF16_BOMS):
                    self.utf16 = True
                    self._drain(stream, counted_piece=raw, partial=not raw.endswith(b"\n"))
                    break
                if raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
            if raw.isspace() or not raw:
                continue
            report.lines += 1
            if report.lines > self.max_requests:
                self._drain(stream, counted_piece=b"", partial=False)
                break
            self._check_line(line_no, raw)
        self._add_file_problems()

    def _drain(self, stream: BinaryIO, *, counted_piece: bytes, partial: bool) -> None:
        """Count the rest of the file's bytes and request lines without checking them.

        Used once a file limit is passed: the totals are still worth showing ("73,214 requests,
        the limit is 50,000"), but further line problems would only be noise, and reading in
        fixed pieces keeps memory bounded however the rest of the file looks.
        ``counted_piece`` is the piece already added to the byte count; when it is a request
        line (complete or not) it is counted as one here.
        """
        report = self.report
        line_has_text = bool(counted_piece) and not counted_piece.isspace()
        if not partial:
            report.lines += line_has_text
            line_has_text = False
        while True:
            piece = stream.readline(_DRAIN_PIECE)
            if not piece:
                break
            report.bytes += len(piece)
            line_has_text = line_has_text or not piece.isspace()
            if piece.endswith(b"\n"):
                report.lines += line_has_text
                line_has_text = False
        report.lines += line_has_text

    def _problem(self, line_no: int, message: str) -> None:
        report = self.report
        report.problem_count += 1
        if len(report.problems) < self.max_problems:
            report.problems.append(LineProblem(line_no, message))

    def _check_line(self, line_no: int, raw: bytes) -> None:
        """Check one non-blank line: a JSON object with custom_id, method, url and body."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.not_utf8_lines += 1
            self.first_not_utf8_line = self.first_not_utf8_line or line_no
            bad = raw[exc.start : exc.start + 1].hex()
            self._problem(
                line_no,
                f"not valid UTF-8 text (byte 0x{bad} at position {exc.start + 1} in the line)",
            )
            return
        try:
            request = json.loads(text)
        except json.JSONDecodeError as exc:
            # The text still ends with its line break; an error found past it (such as a
            # missing closing brace) belongs at the end of the line, not on "line 2, column 1".
            column = min(exc.pos, len(text.rstrip("\r\n"))) + 1
            self._problem(line_no, f"not valid JSON ({exc.msg} at column {column})")
            return
        except RecursionError:
            self._problem(line_no, "not valid JSON (nested too deeply)")
            return
        if not isinstance(request, dict):
            self._problem(line_no, f"each line must be a JSON object, this one is {_kind(request)}")
            return
        self._check_custom_id(line_no, request)
        method = request.get("method")
        if method != "POST":
            if method is None:
                self._problem(line_no, "method is missing; it must be 'POST'")
            else:
                self._problem(line_no, f"method must be 'POST', not {_show(method)}")
        line_endpoint = self._check_url(line_no, request)
        body = request.get("body")
        if body is None:
            self._problem(line_no, "body is missing")
            return
        if not isinstance(body, dict):
            self._problem(line_no, f"body must be a JSON object, not {_kind(body)}")
            return
        self._check_model(line_no, body)
        self._count_max_output(body)
        if line_endpoint is not None:
            self._check_body_for(line_no, line_endpoint, body)

    def _count_max_output(self, body: dict[str, Any]) -> None:
        """Add up the output limits, for the highest cost the file can reach. A line that gives
        more than one counts its largest: the bound must not be too low."""
        limits = [
            value
            for name in MAX_OUTPUT_FIELDS
            if isinstance(value := body.get(name), int)
            and not isinstance(value, bool)
            and value > 0
        ]
        if limits:
            self.report.max_output_tokens += max(limits)
        else:
            self.report.lines_without_max += 1

    def _check_custom_id(self, line_no: int, request: dict[str, Any]) -> None:
        custom_id = request.get("custom_id")
        if custom_id is None:
            self._problem(line_no, "custom_id is missing")
        elif not isinstance(custom_id, str):
            self._problem(line_no, f"custom_id must be a string, not {_kind(custom_id)}")
        elif not custom_id:
            self._problem(line_no, "custom_id is empty")
        else:
            first_line = self.custom_ids.setdefault(custom_id, line_no)
            if first_line != line_no:
                self._problem(
                    line_no, f"custom_id {_show(custom_id)} already used on line {first_line}"
                )

    def _check_url(self, line_no: int, request: dict[str, Any]) -> str | None:
        """Check the url and return the endpoint whose body rules apply to this line.

        That is the line's own url when it is a known endpoint (so a line meant for another
        endpoint gets one clear "wrong url" problem, not also a list of missing fields),
        otherwise the file's endpoint, or None when neither is known yet.
        """
        report = self.report
        url = request.get("url")
        if url is None:
            self._problem(line_no, "url is missing")
            return report.endpoint
        known = isinstance(url, str) and url in ENDPOINTS
        if report.endpoint is None:
            if known:
                report.endpoint = url
                self.endpoint_line = line_no
                # Said once, here: the lines that follow it would only repeat the problem.
                if url not in self.allowed_endpoints:
                    self._problem(line_no, f"url {_show(url)} {self._not_allowed()}")
                return url
            allowed = ", ".join(self.allowed_endpoints)
            self._problem(
                line_no, f"url {_show(url)} is not a Batch API endpoint; use one of {allowed}"
            )
            return None
        if url != report.endpoint:
            since = f" (from line {self.endpoint_line})" if self.endpoint_line else ""
            self._problem(
                line_no,
                f"url {_show(url)} differs from the batch endpoint {report.endpoint!r}{since}",
            )
            return url if known else report.endpoint
        return url

    def _check_model(self, line_no: int, body: dict[str, Any]) -> None:
        report = self.report
        model = body.get("model")
        if model is None:
            self._problem(line_no, "body.model is missing")
            return
        if not isinstance(model, str) or not model:
            self._problem(line_no, f"body.model must be a non-empty string, not {_show(model)}")
            return
        self.models[model] += 1
        if self.known_models and model not in self.known_models:
            self._problem(
                line_no,
                f"model {_show(model)} is not a deployment of this connection"
                f" (known: {_list_names(self.known_models)})",
            )
        if report.model is None:
            report.model = model
            self.model_line = line_no
        elif model != report.model:
            self._problem(
                line_no,
                f"model {_show(model)} differs from {_show(report.model)} used on line"
                f" {self.model_line}"
                "; a batch takes one model",
            )

    def _check_body_for(self, line_no: int, endpoint: str, body: dict[str, Any]) -> None:
        """Check the field the endpoint requires, and count inputs and text for the totals."""
        name = REQUIRED_BODY_FIELD[endpoint]
        value = body.get(name)
        if value is None:
            self._problem(line_no, f"body.{name} is missing (required for {endpoint})")
            return
        if name == "messages":
            if not isinstance(value, list) or not value:
                self._problem(
                    line_no, f"body.messages must be a non-empty list, not {_show(value)}"
                )
                return
            for message in value:
                if isinstance(message, dict):
                    self.text_chars += _text_chars(message.get("content"))
        else:
            self.text_chars += _text_chars(value)
        # The input limit is per embeddings batch: a stray embeddings line in another kind of
        # file is already reported for its url, and its inputs are not that batch's.
        if endpoint == "/v1/embeddings" == self.report.endpoint:
            if isinstance(value, str):
                count = 1
            elif isinstance(value, list):
                count = len(value)
            else:
                self._problem(line_no, f"body.input must be a string or a list, not {_kind(value)}")
                return
            self.report.embedding_inputs += count
            if not self.embedding_limit_line and (
                self.report.embedding_inputs > self.max_embedding_inputs
            ):
                self.embedding_limit_line = line_no

    def _add_file_problems(self) -> None:
        report = self.report
        report.estimated_input_tokens = self.text_chars // _CHARS_PER_TOKEN
        problems = report.file_problems
        if self.endpoint_line == 0 and report.endpoint not in (None, *self.allowed_endpoints):
            # The endpoint was chosen, not read from a line: no line is to blame.
            problems.append(f"the endpoint {report.endpoint!r} {self._not_allowed()}")
        if self.utf16:
            problems.append("the file is UTF-16 text; save it as UTF-8")
            return
        if report.bytes > self.max_bytes:
            problems.append(
                f"the file is {_format_bytes(report.bytes)} ({report.bytes:,} bytes); a batch"
                f" input file may be at most {self.max_bytes:,} bytes, so lines after the limit"
                " were not checked"
            )
        if report.lines > self.max_requests:
            problems.append(
                f"the file has {report.lines:,} requests; a batch takes at most"
                f" {self.max_requests:,}, so lines after the limit were not checked"
            )
        if report.lines == 0:
            problems.append(
                "the file has no requests" + (" (it is empty)" if not report.bytes else "")
            )
        if self.not_utf8_lines:
            problems.append(
                f"the file is not UTF-8 text: {self.not_utf8_lines:,} line(s) have other bytes,"
                f" the first on line {self.first_not_utf8_line}"
            )
        if len(self.models) > 1:
            shown = ", ".join(
                f"{_show(name)} on {count:,} line{'s' if count > 1 else ''}"
                for name, count in self.models.most_common(3)
            )
            more = f" and {len(self.models) - 3} more" if len(self.models) > 3 else ""
            problems.append(
                f"the file mixes {len(self.models)} models ({shown}{more}); a batch takes one"
            )
        if self.embedding_limit_line:
            problems.append(
                f"the file has {report.embedding_inputs:,} embedding inputs; a batch takes at most"
                f" {self.max_embedding_inputs:,} (passed on line {self.embedding_limit_line})"
            )

    def _not_allowed(self) -> str:
        allowed = ", ".join(self.allowed_endpoints)
        return f"is not allowed on this connection; use one of {allowed}"


def _list_names(names: Collection[str]) -> str:
    """Names for a message, sorted, the first few only so a long list cannot flood it."""
    ordered = sorted(names)
    shown = ", ".join(ordered[:_SHOWN_MODELS])
    if len(ordered) > _SHOWN_MODELS:
        shown += f" and {len(ordered) - _SHOWN_MODELS} more"
    return shown


def _text_chars(value: Any) -> int:
    """Characters of prompt text in a content/input/prompt value, for the rough token estimate.

    Handles the shapes the endpoints accept: a string, a list of strings, a list of content
    parts with a ``text`` field, or token arrays (each token counted as four characters).
    Deliberately shallow: this is an estimate, not a tokenizer.
    """
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, list):
        return 0
    total = 0
    for item in value:
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, int):
            total += _CHARS_PER_TOKEN
        elif isinstance(item, dict):
            text = item.get("text", item.get("content"))
            if isinstance(text, str):
                total += len(text)
            elif isinstance(text, list):
                total += _text_chars(text)
        elif isinstance(item, list):
            total += _CHARS_PER_TOKEN * len(item)
    return total


def _kind(value: Any) -> str:
    """The JSON type of a value, as a user would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _show(value: Any) -> str:
    """A short quoted rendering of a value for a message, cut so one line cannot flood a report."""
    if isinstance(value, str):
        if len(value) > _SHOWN_VALUE_CHARS:
            value = value[: _SHOWN_VALUE_CHARS - 1] + "…"
        return repr(value)
    if isinstance(value, dict | list):
        return _kind(value)
    return json.dumps(value)


def _cut(text: str) -> str:
    """A name from the file, unquoted, cut as :func:`_show` cuts it."""
    return text if len(text) <= _SHOWN_VALUE_CHARS else text[: _SHOWN_VALUE_CHARS - 1] + "…"


def _format_bytes(size: int) -> str:
    """Sizes in the units OpenAI's limits use (200 MB means 200 MiB)."""
    if size < 1024:
        return f"{size} byte{'s' if size != 1 else ''}"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"
