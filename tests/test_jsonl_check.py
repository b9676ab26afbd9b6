"""Tests for batches.jsonl_check, the streaming checker of Batch API input files.

Plain pytest functions: the module under test is pure Python and needs no database. Limits are
lowered through check_jsonl's keyword arguments so that no test has to build a 200 MB file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batches.jsonl_check import (
    ENDPOINTS,
    MAX_BYTES,
    MAX_EMBEDDING_INPUTS,
    MAX_REQUESTS,
    REQUIRED_BODY_FIELD,
    CheckReport,
    LineProblem,
    check_jsonl,
)

SAMPLES = Path(__file__).resolve().parent.parent / "static" / "samples"
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


def chat_request(custom_id: str = "request-1", text: str = "Hello there", **changes: Any) -> dict:
    """A valid chat completions request line, with top-level keys replaced by ``changes``."""
    request: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
    }
    request.update(changes)
    return request


def body_request(custom_id: str, url: str, body: dict[str, Any]) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(*lines: dict | str | bytes, end: bytes = b"\n") -> bytes:
    """Serialise lines: dicts as JSON, str and bytes as they are (to write broken lines)."""
    out = []
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        if isinstance(line, str):
            line = line.encode()
        out.append(line + end)
    return b"".join(out)


def check(data: bytes, **options: Any) -> CheckReport:
    return check_jsonl(io.BytesIO(data), **options)


def messages(report: CheckReport) -> list[str]:
    return [str(problem) for problem in report.problems]


# --- valid files -------------------------------------------------------------------------------


def test_a_valid_chat_file_passes_with_its_totals() -> None:
    data = jsonl(chat_request("a", "x" * 40), chat_request("b", "y" * 40))
    report = check(data)
    assert report.ok
    assert report.problems == [] and report.problem_count == 0 and report.file_problems == []
    assert report.lines == 2
    assert report.bytes == len(data)
    assert report.endpoint == CHAT
    assert report.model == "gpt-4o-mini"
    assert report.estimated_input_tokens == 20


@pytest.mark.parametrize(
    ("name", "endpoint", "model", "lines"),
    [
        ("sample-chat.jsonl", CHAT, "gpt-4o-mini", 20),
        ("sample-embeddings.jsonl", EMBEDDINGS, "text-embedding-3-small", 10),
    ],
)
def test_the_sample_files_pass(name: str, endpoint: str, model: str, lines: int) -> None:
    with (SAMPLES / name).open("rb") as stream:
        report = check_jsonl(stream, endpoint=endpoint)
    assert report.ok, messages(report) + report.file_problems
    assert (report.endpoint, report.model, report.lines) == (endpoint, model, lines)


def test_the_chat_sample_has_two_requests_the_simulator_fails_on_purpose() -> None:
    ids = [json.loads(line)["custom_id"] for line in (SAMPLES / "sample-chat.jsonl").open()]
    assert ids[0] == "request-1"
    assert len([custom_id for custom_id in ids if "fail" in custom_id]) == 2


def test_it_accepts_a_utf8_byte_order_mark() -> None:
    report = check(b"\xef\xbb\xbf" + jsonl(chat_request("a"), chat_request("b")))
    assert report.ok
    assert report.lines == 2


def test_it_accepts_crlf_line_endings() -> None:
    report = check(jsonl(chat_request("a"), chat_request("b"), end=b"\r\n"))
    assert report.ok
    assert report.lines == 2


def test_it_skips_blank_lines_but_counts_them_for_line_numbers() -> None:
    data = b"\n   \n" + jsonl(chat_request("a")) + b"\t\r\n" + jsonl(chat_request("a"))
    report = check(data)
    assert report.lines == 2
    assert messages(report) == ["line 5: custom_id 'a' already used on line 3"]


def test_a_last_line_without_a_newline_is_checked() -> None:
    report = check(jsonl(chat_request("a")) + json.dumps(chat_request("a")).encode())
    assert messages(report) == ["line 2: custom_id 'a' already used on line 1"]


def test_it_reads_an_unbuffered_file(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(jsonl(chat_request("a"), chat_request("b")))
    with path.open("rb", buffering=0) as stream:
        report = check_jsonl(stream)
    assert report.ok
    assert report.lines == 2


def test_it_refuses_a_text_stream_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="binary stream"):
        check_jsonl(io.StringIO(json.dumps(chat_request())))  # type: ignore[arg-type]


# --- line rules --------------------------------------------------------------------------------


def test_it_reports_a_line_that_is_not_json_with_the_column() -> None:
    report = check(jsonl(chat_request("a"), '{"custom_id": "b" "method": "POST"}'))
    assert messages(report) == ["line 2: not valid JSON (Expecting ',' delimiter at column 19)"]
    assert not report.ok


def test_it_reports_a_line_that_is_json_but_not_an_object() -> None:
    report = check(jsonl(chat_request("a"), '["custom_id", "b"]'))
    assert messages(report) == ["line 2: each line must be a JSON object, this one is a list"]


@pytest.mark.parametrize(
    ("custom_id", "message"),
    [
        (None, "custom_id is missing"),
        (17, "custom_id must be a string, not a number"),
        ("", "custom_id is empty"),
    ],
)
def test_it_reports_a_custom_id_that_is_missing_not_a_string_or_empty(
    custom_id: Any, message: str
) -> None:
    request = chat_request()
    if custom_id is None:
        del request["custom_id"]
    else:
        request["custom_id"] = custom_id
    assert messages(check(jsonl(request))) == [f"line 1: {message}"]


def test_it_reports_a_duplicate_custom_id_with_both_lines() -> None:
    data = jsonl(*(chat_request(f"a-{n}") for n in range(1, 5)), *([""] * 12), chat_request("a-3"))
    assert messages(check(data)) == ["line 17: custom_id 'a-3' already used on line 3"]


def test_it_shortens_a_very_long_custom_id_in_messages() -> None:
    long_id = "x" * 500
    message = messages(check(jsonl(chat_request(long_id), chat_request(long_id))))[0]
    assert len(message) < 120
    assert message.endswith("…' already used on line 1")


@pytest.mark.parametrize(
    ("method", "message"),
    [("GET", "method must be 'POST', not 'GET'"), (None, "method is missing; it must be 'POST'")],
)
def test_it_reports_a_method_other_than_post(method: str | None, message: str) -> None:
    request = chat_request(method=method)
    if method is None:
        del request["method"]
    assert messages(check(jsonl(request))) == [f"line 1: {message}"]


def test_it_reports_a_url_that_differs_from_the_chosen_endpoint() -> None:
    report = check(jsonl(chat_request("a"), chat_request("b")), endpoint="/v1/responses")
    assert report.endpoint == "/v1/responses"
    assert messages(report)[0] == (
        "line 1: url '/v1/chat/completions' differs from the batch endpoint '/v1/responses'"
    )
    assert [problem.line for problem in report.problems] == [1, 2]


def test_it_rejects_an_endpoint_argument_that_is_not_a_batch_endpoint() -> None:
    with pytest.raises(ValueError, match="/v1/chat/completions"):
        check(jsonl(chat_request()), endpoint="/v1/audio/speech")


def test_it_infers_the_endpoint_from_the_first_line_and_holds_every_line_to_it() -> None:
    stray = body_request("b", EMBEDDINGS, {"model": "gpt-4o-mini", "input": "hi"})
    report = check(jsonl(chat_request("a"), stray, chat_request("c")))
    assert report.endpoint == CHAT
    assert messages(report) == [
        "line 2: url '/v1/embeddings' differs from the batch endpoint"
        " '/v1/chat/completions' (from line 1)"
    ]


def test_it_reports_an_unknown_url_naming_the_allowed_endpoints() -> None:
    report = check(jsonl(chat_request(url="/v1/chat")))
    assert report.endpoint is None
    (problem,) = report.problems
    assert problem.line == 1
    assert problem.message.startswith("url '/v1/chat' is not a Batch API endpoint; use one of")
    assert all(endpoint in problem.message for endpoint in ENDPOINTS)


def test_it_infers_the_endpoint_from_the_first_valid_url_after_a_bad_one() -> None:
    report = check(jsonl(chat_request("a", url=17), chat_request("b"), chat_request("c")))
    assert report.endpoint == CHAT
    assert [problem.line for problem in report.problems] == [1]


def test_it_reports_a_missing_url() -> None:
    request = chat_request()
    del request["url"]
    assert messages(check(jsonl(request), endpoint=CHAT)) == ["line 1: url is missing"]


def test_it_reports_a_body_that_is_missing_or_not_an_object() -> None:
    missing = chat_request("a")
    del missing["body"]
    report = check(jsonl(missing, chat_request("b", body=["model"])))
    assert messages(report) == [
        "line 1: body is missing",
        "line 2: body must be a JSON object, not a list",
    ]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (None, "body.model is missing"),
        ("", "body.model must be a non-empty string, not ''"),
        (4, "body.model must be a non-empty string, not 4"),
    ],
)
def test_it_reports_a_model_that_is_missing_or_not_a_name(model: Any, message: str) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    assert messages(check(jsonl(chat_request(body=body)))) == [f"line 1: {message}"]


def test_it_reports_a_second_model_with_the_line_and_both_models() -> None:
    other = chat_request("b")
    other["body"]["model"] = "gpt-4o"
    report = check(jsonl(chat_request("a"), other, chat_request("c")))
    assert report.model == "gpt-4o-mini"
    assert messages(report) == [
        "line 2: model 'gpt-4o' differs from 'gpt-4o-mini' used on line 1; a batch takes one model"
    ]
    assert report.file_problems == [
        "the file mixes 2 models ('gpt-4o-mini' on 2 lines, 'gpt-4o' on 1 line); a batch takes one"
    ]


@pytest.mark.parametrize(("endpoint", "field"), REQUIRED_BODY_FIELD.items())
def test_each_endpoint_requires_its_own_body_field(endpoint: str, field: str) -> None:
    value: Any = [{"role": "user", "content": "hi"}] if field == "messages" else "a red bicycle"
    good = body_request("a", endpoint, {"model": "m", field: value})
    bad = body_request("b", endpoint, {"model": "m", "text": "a red bicycle"})
    report = check(jsonl(good, bad))
    assert report.endpoint == endpoint
    assert messages(report) == [f"line 2: body.{field} is missing (required for {endpoint})"]


def test_every_endpoint_has_a_required_field() -> None:
    assert set(REQUIRED_BODY_FIELD) == set(ENDPOINTS)
    assert len(ENDPOINTS) == 8


@pytest.mark.parametrize(("value", "shown"), [([], "a list"), ("hi", "'hi'")])
def test_chat_messages_must_be_a_non_empty_list(value: Any, shown: str) -> None:
    request = chat_request(body={"model": "gpt-4o-mini", "messages": value})
    assert messages(check(jsonl(request))) == [
        f"line 1: body.messages must be a non-empty list, not {shown}"
    ]


def test_it_counts_embedding_inputs_a_string_as_one_and_a_list_by_its_length() -> None:
    lines = [
        body_request("a", EMBEDDINGS, {"model": "e", "input": "one"}),
        body_request("b", EMBEDDINGS, {"model": "e", "input": ["two", "three", "four"]}),
        body_request("c", EMBEDDINGS, {"model": "e", "input": [[1, 2], [3]]}),
    ]
    report = check(jsonl(*lines))
    assert report.ok
    assert report.embedding_inputs == 6


def test_it_reports_an_embedding_input_that_is_not_a_string_or_list() -> None:
    report = check(jsonl(body_request("a", EMBEDDINGS, {"model": "e", "input": {"text": "x"}})))
    assert messages(report) == ["line 1: body.input must be a string or a list, not an object"]


def test_it_reports_more_embedding_inputs_than_a_batch_takes() -> None:
    lines = [
        body_request(f"r-{n}", EMBEDDINGS, {"model": "e", "input": ["x", "y"]}) for n in range(4)
    ]
    report = check(jsonl(*lines), max_embedding_inputs=5)
    assert report.problem_count == 0
    assert report.embedding_inputs == 8
    assert report.file_problems == [
        "the file has 8 embedding inputs; a batch takes at most 5 (passed on line 3)"
    ]
    assert not report.ok


def test_the_limits_default_to_openais() -> None:
    assert (MAX_REQUESTS, MAX_BYTES, MAX_EMBEDDING_INPUTS) == (50_000, 209_715_200, 50_000)


def test_it_estimates_input_tokens_from_message_input_and_prompt_text() -> None:
    parts = [{"type": "text", "text": "a" * 8}, {"type": "image_url", "image_url": {"url": "u"}}]
    chat = chat_request(body={"model": "m", "messages": [{"role": "user", "content": parts}]})
    assert check(jsonl(chat)).estimated_input_tokens == 2
    completion = body_request("a", "/v1/completions", {"model": "m", "prompt": "b" * 40})
    assert check(jsonl(completion)).estimated_input_tokens == 10


# --- a connection's own rules ------------------------------------------------------------------


def test_an_allowed_endpoint_passes() -> None:
    report = check(jsonl(chat_request("a")), allowed_endpoints=[CHAT, "/v1/responses"])
    assert report.ok


def test_an_inferred_endpoint_the_connection_does_not_allow_is_one_problem_on_its_line() -> None:
    lines = [body_request(f"e-{n}", EMBEDDINGS, {"model": "e", "input": "x"}) for n in range(3)]
    report = check(jsonl(*lines), allowed_endpoints=["/v1/responses", CHAT])
    assert report.endpoint == EMBEDDINGS
    assert messages(report) == [
        "line 1: url '/v1/embeddings' is not allowed on this connection;"
        " use one of /v1/responses, /v1/chat/completions"
    ]
    assert not report.ok


def test_a_chosen_endpoint_the_connection_does_not_allow_is_a_file_problem() -> None:
    report = check(
        jsonl(chat_request("a"), chat_request("b")), endpoint=CHAT, allowed_endpoints={EMBEDDINGS}
    )
    assert report.problem_count == 0
    assert report.file_problems == [
        "the endpoint '/v1/chat/completions' is not allowed on this connection;"
        " use one of /v1/embeddings"
    ]
    assert not report.ok


def test_an_unknown_url_names_only_the_allowed_endpoints() -> None:
    report = check(jsonl(chat_request(url="/v1/chat")), allowed_endpoints=[CHAT])
    assert messages(report) == [
        "line 1: url '/v1/chat' is not a Batch API endpoint; use one of /v1/chat/completions"
    ]


@pytest.mark.parametrize("allowed", [None, [], ()])
def test_no_allowed_endpoints_means_every_endpoint(allowed: Any) -> None:
    line = body_request("a", "/v1/moderations", {"model": "m", "input": "x"})
    assert check(jsonl(line), allowed_endpoints=allowed).ok


def test_allowed_endpoints_must_be_batch_endpoints() -> None:
    with pytest.raises(ValueError, match="'/v1/audio/speech'"):
        check(jsonl(chat_request()), allowed_endpoints=[CHAT, "/v1/audio/speech"])


@pytest.mark.parametrize("option", ["allowed_endpoints", "known_models"])
def test_a_single_string_is_refused_rather_than_read_as_letters(option: str) -> None:
    with pytest.raises(TypeError, match="not a string"):
        check(jsonl(chat_request()), **{option: CHAT})


def test_a_model_that_is_a_known_deployment_passes() -> None:
    report = check(jsonl(chat_request("a"), chat_request("b")), known_models=["gpt-4o-mini"])
    assert report.ok


def test_a_model_that_is_not_a_deployment_of_the_connection_is_reported_on_each_line() -> None:
    report = check(
        jsonl(chat_request("a"), chat_request("b")),
        known_models={"gpt4o-batch", "mini-batch"},
    )
    assert messages(report) == [
        "line 1: model 'gpt-4o-mini' is not a deployment of this connection"
        " (known: gpt4o-batch, mini-batch)",
        "line 2: model 'gpt-4o-mini' is not a deployment of this connection"
        " (known: gpt4o-batch, mini-batch)",
    ]


def test_a_long_list_of_deployments_is_shortened_in_messages() -> None:
    known = [f"dep-{n:02}" for n in range(25)]
    (problem,) = check(jsonl(chat_request()), known_models=known).problems
    assert problem.message.endswith(
        "(known: dep-00, dep-01, dep-02, dep-03, dep-04, dep-05,"
        " dep-06, dep-07, dep-08, dep-09 and 15 more)"
    )


@pytest.mark.parametrize("known", [None, [], set()])
def test_no_known_models_means_any_model(known: Any) -> None:
    assert check(jsonl(chat_request()), known_models=known).ok


def test_one_model_per_file_still_holds_among_known_deployments() -> None:
    other = chat_request("b")
    other["body"]["model"] = "dep-b"
    first = chat_request("a")
    first["body"]["model"] = "dep-a"
    report = check(jsonl(first, other), known_models=["dep-a", "dep-b"])
    assert messages(report) == [
        "line 2: model 'dep-b' differs from 'dep-a' used on line 1; a batch takes one model"
    ]
    assert report.file_problems[0].startswith("the file mixes 2 models")


def test_azures_request_limit_is_named_in_the_message() -> None:
    # Cheap lines: the limit only counts them, and the line problems are beside the point.
    data = b"{}\n" * 100_001
    report = check(data, max_requests=100_000, max_problems=0)
    assert report.lines == 100_001
    assert report.file_problems == [
        "the file has 100,001 requests; a batch takes at most 100,000,"
        " so lines after the limit were not checked"
    ]


def test_a_file_over_openais_request_limit_passes_under_a_higher_one() -> None:
    data = jsonl(*(chat_request(f"r-{n}") for n in range(MAX_REQUESTS + 1)))
    assert check(data, max_requests=100_000).ok
    assert check(data).file_problems[0].startswith("the file has 50,001 requests")


@pytest.mark.parametrize("limit", [7, 3_000])
def test_the_limit_messages_name_the_limits_given(limit: int) -> None:
    data = jsonl(*(chat_request(f"r-{n}") for n in range(limit + 1)))
    report = check(data, max_requests=limit, max_bytes=limit * 10)
    size, requests = report.file_problems
    assert f"a batch input file may be at most {limit * 10:,} bytes," in size
    assert f"the file has {limit + 1:,} requests; a batch takes at most {limit:,}," in requests
    assert f"{MAX_REQUESTS:,}" not in requests and f"{MAX_BYTES:,}" not in size


# --- whole-file rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "the file has no requests (it is empty)"),
        (b"\n  \r\n\n", "the file has no requests"),
        (b"\xef\xbb\xbf", "the file has no requests"),
    ],
)
def test_a_file_without_requests_is_a_file_problem(data: bytes, problem: str) -> None:
    report = check(data)
    assert report.file_problems == [problem]
    assert report.lines == 0
    assert not report.ok


def test_it_reports_bytes_that_are_not_utf8_with_the_line() -> None:
    bad = json.dumps(chat_request("b", "café"), ensure_ascii=False).encode("latin-1")
    report = check(jsonl(chat_request("a"), bad))
    (problem,) = report.problems
    assert problem.line == 2
    assert problem.message.startswith("not valid UTF-8 text (byte 0xe9 at position")
    assert report.file_problems == [
        "the file is not UTF-8 text: 1 line(s) have other bytes, the first on line 2"
    ]


def test_it_reports_a_utf16_file_once_instead_of_every_line() -> None:
    data = jsonl(chat_request("a"), chat_request("b")).decode().encode("utf-16")
    report = check(data)
    assert report.file_problems == ["the file is UTF-16 text; save it as UTF-8"]
    assert report.problem_count == 0
    assert report.bytes == len(data)


def test_it_reports_too_many_requests_once_and_stops_checking_lines() -> None:
    lines = [chat_request(f"r-{n}") for n in range(3)] + ["not json", "", "{}", chat_request()]
    report = check(jsonl(*lines), max_requests=3)
    assert report.lines == 6
    assert report.problem_count == 0
    assert report.file_problems == [
        "the file has 6 requests; a batch takes at most 3,"
        " so lines after the limit were not checked"
    ]


def test_a_file_exactly_at_the_limits_passes() -> None:
    data = jsonl(chat_request("a"), chat_request("b"))
    assert check(data, max_requests=2, max_bytes=len(data)).ok


def test_it_reports_a_file_over_the_byte_limit_once_and_counts_all_of_it() -> None:
    data = jsonl(*(chat_request(f"r-{n}") for n in range(10)), "broken", "")
    report = check(data, max_bytes=len(data) // 2)
    assert report.bytes == len(data)
    assert report.lines == 11
    assert report.problem_count == 0
    assert len(report.file_problems) == 1
    assert report.file_problems[0].startswith(f"the file is {len(data) / 1024:.1f} KB")


class RecordingStream(io.BytesIO):
    """A stream that remembers the longest piece it handed out, to check memory use."""

    longest = 0

    def readline(self, size: int | None = -1) -> bytes:
        piece = super().readline(size)
        self.longest = max(self.longest, len(piece))
        return piece


def test_a_huge_line_over_the_byte_limit_is_never_read_whole() -> None:
    stream = RecordingStream(jsonl(chat_request("a"), chat_request("b", "x" * 5_000_000)))
    report = check_jsonl(stream, max_bytes=10_000)
    assert report.bytes > 5_000_000
    assert report.lines == 2
    assert len(report.file_problems) == 1
    assert stream.longest <= 1 << 20


# --- many problems -----------------------------------------------------------------------------


def test_it_reports_many_problems_at_once_in_line_order() -> None:
    lines = [
        chat_request("a", method="GET"),
        "{",
        chat_request("a"),
        chat_request("c", body={"model": "gpt-4o-mini"}),
    ]
    assert messages(check(jsonl(*lines))) == [
        "line 1: method must be 'POST', not 'GET'",
        "line 2: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        "line 3: custom_id 'a' already used on line 1",
        "line 4: body.messages is missing (required for /v1/chat/completions)",
    ]


def test_it_keeps_only_the_first_max_problems_but_counts_them_all() -> None:
    report = check(jsonl(*["nope"] * 30), max_problems=5)
    assert [problem.line for problem in report.problems] == [1, 2, 3, 4, 5]
    assert report.problem_count == 30
    assert check(jsonl("nope"), max_problems=0).problems == []


def test_a_line_problem_reads_as_a_sentence_with_its_line() -> None:
    problem = LineProblem(17, "custom_id 'a-3' already used on line 4")
    assert str(problem) == "line 17: custom_id 'a-3' already used on line 4"


def test_the_summary_gives_the_totals_in_one_sentence() -> None:
    data = jsonl(chat_request("a", "x" * 400), chat_request("b"))
    assert check(data).summary() == (
        f"2 requests for /v1/chat/completions with gpt-4o-mini, {len(data)} bytes,"
        " about 102 input tokens: no problems found."
    )
    bad = check(jsonl(chat_request("a"), "oops", "oops", chat_request("b")), max_requests=3)
    assert bad.summary().endswith(": 3 problems (1 with the whole file, 2 on lines).")


# --- properties --------------------------------------------------------------------------------

custom_ids = st.lists(
    st.text(max_size=12).map(lambda text: "id-" + text), min_size=1, max_size=25, unique=True
)
line_ends = st.sampled_from([b"\n", b"\r\n"])
blank_runs = st.lists(st.sampled_from([b"\n", b"\r\n", b"  \n", b"\t\r\n"]), max_size=2)


@st.composite
def request_lines(draw: st.DrawFn) -> list[tuple[bytes, list[bytes]]]:
    """Valid request lines, each with its own ending and the blank lines that precede it."""
    lines = []
    for custom_id in draw(custom_ids):
        request = chat_request(custom_id, draw(st.text(max_size=30)))
        encoded = json.dumps(request, ensure_ascii=draw(st.booleans())).encode()
        lines.append((encoded + draw(line_ends), draw(blank_runs)))
    return lines


def serialise(lines: list[tuple[bytes, list[bytes]]]) -> tuple[bytes, list[int]]:
    """The file's bytes, and the line number of each request line in it."""
    out: list[bytes] = []
    numbers = []
    for line, blanks in lines:
        out.extend(blanks)
        out.append(line)
        numbers.append(len(out))
    return b"".join(out), numbers


# No deadline: the examples are tiny, but a busy two-core CI machine makes timings flaky.
@settings(deadline=None)
@given(lines=request_lines(), bom=st.booleans())
def test_any_valid_requests_with_blank_lines_and_mixed_endings_pass(
    lines: list[tuple[bytes, list[bytes]]], bom: bool
) -> None:
    data, _ = serialise(lines)
    if bom:
        data = b"\xef\xbb\xbf" + data
    report = check(data)
    assert report.ok, messages(report) + report.file_problems
    assert report.lines == len(lines)
    assert report.bytes == len(data)


CORRUPTIONS = [
    b'{"custom_id": "zz-broken" "method": "POST"}\n',
    b"[1, 2, 3]\n",
    b'{"method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini"}}\r\n',
    b'{"custom_id": "zz-\xff", "method": "POST"}\n',
    json.dumps(chat_request("zz-get", method="GET")).encode() + b"\n",
]


@settings(deadline=None)
@given(lines=request_lines(), data=st.data())
def test_one_corrupted_line_is_reported_at_exactly_its_line_number(
    lines: list[tuple[bytes, list[bytes]]], data: st.DataObject
) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(lines)))
    corrupted = data.draw(st.sampled_from(CORRUPTIONS))
    lines.insert(position, (corrupted, data.draw(blank_runs)))
    content, numbers = serialise(lines)
    report = check(content)
    assert report.problem_count >= 1
    assert {problem.line for problem in report.problems} == {numbers[position]}
