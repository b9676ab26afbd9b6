"""Reading a batch input file: the checks OpenAI runs while a batch is ``validating``.

The simulator keeps, per request, only what it needs to answer later (the custom_id, the model,
a short echo text and token estimates), not the request bodies, so a 200 MB input does not
stay in memory as Python objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
MAX_REPORTED_ERRORS = 100
ECHO_CHARS = 200
CHARS_PER_TOKEN = 4
# Endpoints whose answers carry generated text (and so output tokens).
TEXT_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/completions"})


@dataclass(slots=True)
class RequestLine:
    """One request of an input file, reduced to what its simulated answer needs.

    ``fail_status`` is 0 for a request that succeeds, else the HTTP status it fails with
    (the ``fail`` custom_id convention, see the package docstring). ``cached_tokens`` (part of
    ``prompt_tokens``) and ``reasoning_tokens`` (part of ``completion_tokens``) are 0 for an
    uploaded file; only the seeded history (simulator/history.py) sets them.
    """

    custom_id: str
    model: str | None
    text: str
    prompt_tokens: int
    completion_tokens: int
    n_inputs: int
    fail_status: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def to_list(self) -> list[Any]:
        return [
            self.custom_id,
            self.model,
            self.text,
            self.prompt_tokens,
            self.completion_tokens,
            self.n_inputs,
            self.fail_status,
            self.cached_tokens,
            self.reasoning_tokens,
        ]

    @classmethod
    def from_list(cls, items: list[Any]) -> RequestLine:
        return cls(*items)  # a state file written before the last two fields: they default


@dataclass
class ParsedInput:
    lines: list[RequestLine] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    # The dialect's names for error codes OpenAI spells otherwise (Azure: ``too_many_tasks``).
    renames: Mapping[str, str] = field(default_factory=dict)

    def add_error(self, code: str, message: str, *, param: str | None, line: int | None) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            code = self.renames.get(code, code)
            self.errors.append({"code": code, "message": message, "param": param, "line": line})

    @property
    def input_tokens(self) -> int:
        """The estimated input tokens of every request (what an enqueued-token limit counts)."""
        return sum(line.prompt_tokens for line in self.lines)


def fail_status_for(custom_id: str) -> int:
    """The simulator's convention: a custom_id containing ``fail`` fails with 400, or with 500
    when it also contains ``500``."""
    if "fail" not in custom_id:
        return 0
    return 500 if "500" in custom_id else 400


def reply_text(echo: str) -> str:
    return f"Simulated answer to: {echo}"[:ECHO_CHARS]


def tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def parse_input(
    raw_lines: Iterable[bytes],
    endpoint: str,
    *,
    max_requests: int = MAX_REQUESTS,
    renames: Mapping[str, str] | None = None,
    model_on_every_line: bool = False,
) -> ParsedInput:
    """Check every line like OpenAI does; line numbers are 1-based and count blank lines.

    The keywords carry a dialect's rules: its request limit, its error codes, and whether a
    line without a model differs from the others (Azure: every line names the deployment).
    """
    parsed = ParsedInput(renames=renames or {})
    seen: set[str] = set()
    count = 0
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        line = _check_line(raw, number, endpoint, seen, parsed)
        if line is None:
            continue
        if parsed.model is None and (count == 0 or not model_on_every_line):
            parsed.model = line.model
        elif (line.model is not None or model_on_every_line) and line.model != parsed.model:
            parsed.add_error(
                "mismatched_model",
                f"All requests must use the same model; expected '{parsed.model}'.",
                param="body.model",
                line=number,
            )
            continue
        count += 1
        if not parsed.errors:
            parsed.lines.append(line)
    if count == 0 and not parsed.errors:
        parsed.add_error(
            "empty_file", "The input file contains no requests.", param=None, line=None
        )
    if count > max_requests:
        parsed.add_error(
            "too_many_requests",
            f"The input file contains more than {max_requests} requests.",
            param=None,
            line=None,
        )
    if parsed.errors:
        parsed.lines = []
    return parsed


def _check_line(
    raw: bytes, number: int, endpoint: str, seen: set[str], parsed: ParsedInput
) -> RequestLine | None:
    try:
        request = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        request = None
    if not isinstance(request, dict):
        parsed.add_error(
            "invalid_json_line",
            "This line is not parseable as valid JSON.",
            param=None,
            line=number,
        )
        return None
    custom_id = request.get("custom_id")
    problems = []
    if not isinstance(custom_id, str) or not custom_id:
        problems.append(("missing_custom_id", "custom_id must be a non-empty string.", "custom_id"))
    elif custom_id in seen:
        problems.append(
            ("duplicate_custom_id", f"The custom_id '{custom_id}' is not unique.", "custom_id")
        )
    if request.get("method") != "POST":
        problems.append(("invalid_method", "The method must be POST.", "method"))
    if request.get("url") != endpoint:
        problems.append(
            ("mismatched_endpoint", "The URL does not match the batch endpoint.", "url")
        )
    body = request.get("body")
    if not isinstance(body, dict):
        problems.append(("invalid_body", "The body must be a JSON object.", "body"))
    for code, message, param in problems:
        parsed.add_error(code, message, param=param, line=number)
    if isinstance(custom_id, str):
        seen.add(custom_id)
    if problems:
        return None
    assert isinstance(custom_id, str) and isinstance(body, dict)
    return summarize(custom_id, endpoint, body)


def summarize(custom_id: str, endpoint: str, body: dict[str, Any]) -> RequestLine:
    """Reduce a request body to its echo text and token estimates (≈ 4 characters a token)."""
    model = body.get("model") if isinstance(body.get("model"), str) else None
    echo, prompt, n_inputs = _texts(endpoint, body)
    completion = tokens(reply_text(echo)) if endpoint in TEXT_ENDPOINTS else 0
    return RequestLine(
        custom_id=custom_id,
        model=model,
        text=echo[:ECHO_CHARS],
        prompt_tokens=tokens(prompt),
        completion_tokens=completion,
        n_inputs=n_inputs,
        fail_status=fail_status_for(custom_id),
    )


def _content_text(content: Any) -> str:
    """Text of a message content: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _messages_texts(messages: Any) -> tuple[str, str]:
    """(last user message, all messages) of a chat-like list of messages."""
    if not isinstance(messages, list):
        return "", ""
    texts = [
        (m.get("role"), _content_text(m.get("content"))) for m in messages if isinstance(m, dict)
    ]
    users = [text for role, text in texts if role == "user"]
    last = users[-1] if users else (texts[-1][1] if texts else "")
    return last, " ".join(text for _, text in texts)


def _inputs(value: Any) -> list[str]:
    """Inputs of embeddings/moderations: a string, strings, or token arrays."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        return [
            v if isinstance(v, str) else " ".join(map(str, v)) if isinstance(v, list) else str(v)
            for v in value
        ]
    return []


def _texts(endpoint: str, body: dict[str, Any]) -> tuple[str, str, int]:
    """(echo text, prompt text, number of inputs) for a request to ``endpoint``."""
    if endpoint == "/v1/chat/completions":
        last, everything = _messages_texts(body.get("messages"))
        return last, everything, 1
    if endpoint == "/v1/responses":
        given = body.get("input")
        if isinstance(given, str):
            last, everything = given, given
        else:
            last, everything = _messages_texts(given)
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            everything = f"{instructions} {everything}"
        return last, everything, 1
    if endpoint in ("/v1/embeddings", "/v1/moderations"):
        inputs = _inputs(body.get("input"))
        joined = " ".join(inputs)
        return (inputs[-1] if inputs else ""), joined, max(1, len(inputs))
    prompts = _inputs(body.get("prompt"))
    joined = " ".join(prompts)
    return joined, joined, 1
