"""Tests for batches/results.py: reading Batch output and error files, whatever the server sent.

Plain functions on in-memory streams; no database, no Django.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any

import pytest

from batches.results import (
    NEVER_RAN,
    ResultLineError,
    ResultSummary,
    build_offset_index,
    build_retry_file,
    parse_result_line,
    read_lines_at,
    read_outcomes,
    summarize,
)

# ---------------------------------------------------------------------------------------------
# Canned lines
# ---------------------------------------------------------------------------------------------


def chat_body(content: str = "Hello!", prompt: int = 10, completion: int = 3) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def ok_line(custom_id: str, body: Any = None, status: int = 200) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "request_id": "req_1",
            "body": chat_body() if body is None else body,
        },
        "error": None,
    }


def http_error_line(
    custom_id: str, status: int = 400, message: str = "Bad input", code: str | None = "bad"
) -> dict[str, Any]:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return ok_line(custom_id, body={"error": error}, status=status)


def expired_line(custom_id: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": "batch_expired", "message": "Not executed before the window expired."},
    }


def jsonl(*lines: dict[str, Any] | bytes) -> io.BytesIO:
    """A binary stream of JSONL; bytes items are written as given (odd lines, CRLF...)."""
    parts = [
        line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n" for line in lines
    ]
    return io.BytesIO(b"".join(parts))


def dumps(line: dict[str, Any]) -> bytes:
    return json.dumps(line).encode()


# ---------------------------------------------------------------------------------------------
# parse_result_line
# ---------------------------------------------------------------------------------------------


def test_it_reads_a_successful_chat_line() -> None:
    result = parse_result_line(dumps(ok_line("req-1", chat_body("Paris.", 12, 2))))

    assert result.custom_id == "req-1"
    assert result.status_code == 200
    assert result.ok is True
    assert result.error_code is None and result.error_message is None
    assert result.answer_text == "Paris."
    assert (result.input_tokens, result.output_tokens, result.total_tokens) == (12, 2, 14)


def test_it_accepts_a_str_as_well_as_bytes() -> None:
    assert parse_result_line(json.dumps(ok_line("req-1"))).ok is True


def test_it_reads_a_body_sent_as_a_json_string() -> None:
    line = ok_line("req-1")
    line["response"]["body"] = json.dumps(chat_body("From a gateway."))

    result = parse_result_line(dumps(line))

    assert result.ok is True
    assert result.answer_text == "From a gateway."
    assert result.input_tokens == 10
    assert isinstance(result.raw["response"]["body"], dict), "raw holds the decoded body"


def test_it_reads_an_error_body_sent_as_a_json_string() -> None:
    line = http_error_line("req-1", status=429, message="Slow down", code="rate_limit_exceeded")
    line["response"]["body"] = json.dumps(line["response"]["body"])

    result = parse_result_line(dumps(line))

    assert result.ok is False
    assert (result.error_code, result.error_message) == ("rate_limit_exceeded", "Slow down")


def test_it_keeps_a_body_that_is_not_json_as_text() -> None:
    line = ok_line("req-1", body="502 Bad Gateway", status=502)

    result = parse_result_line(dumps(line))

    assert result.ok is False
    assert result.status_code == 502
    assert result.error_message == "502 Bad Gateway"
    assert result.raw["response"]["body"] == "502 Bad Gateway"


def test_it_reads_an_http_error_from_the_body() -> None:
    result = parse_result_line(dumps(http_error_line("req-1", 400, "Too long", "context_length")))

    assert result.ok is False
    assert result.status_code == 400
    assert (result.error_code, result.error_message) == ("context_length", "Too long")
    assert result.answer_text is None


def test_it_uses_the_error_type_when_the_code_is_null() -> None:
    result = parse_result_line(dumps(http_error_line("req-1", code=None)))

    assert result.error_code == "invalid_request_error"


def test_it_reads_a_null_response_with_an_error() -> None:
    result = parse_result_line(dumps(expired_line("req-9")))

    assert result.ok is False
    assert result.status_code is None
    assert result.error_code == "batch_expired"
    assert result.error_message == "Not executed before the window expired."


def test_it_reads_an_error_with_only_a_message() -> None:
    line = {"custom_id": "req-1", "error": {"message": "Something went wrong"}}

    result = parse_result_line(dumps(line))

    assert result.ok is False
    assert (result.error_code, result.error_message) == (None, "Something went wrong")


def test_it_reads_an_error_given_as_a_bare_string() -> None:
    result = parse_result_line(dumps({"custom_id": "req-1", "error": "cancelled"}))

    assert (result.ok, result.error_message) == (False, "cancelled")


def test_it_treats_an_error_on_the_line_as_a_failure_even_with_a_200_response() -> None:
    line = ok_line("req-1")
    line["error"] = {"code": "batch_cancelled", "message": "Cancelled"}

    assert parse_result_line(dumps(line)).ok is False


def test_it_tolerates_missing_usage_and_omitted_nulls() -> None:
    body = chat_body()
    del body["usage"]
    line = {"custom_id": "req-1", "response": {"status_code": 200, "body": body}}

    result = parse_result_line(dumps(line))

    assert result.ok is True
    assert (result.input_tokens, result.output_tokens, result.total_tokens) == (None, None, None)


def test_it_accepts_dashed_ids_from_compatible_servers() -> None:
    line = ok_line("req-1")
    line["id"] = "batch-req-abc"

    assert parse_result_line(dumps(line)).custom_id == "req-1"


def test_an_error_body_without_a_status_code_is_a_failure() -> None:
    line = http_error_line("req-1", message="No status here")
    del line["response"]["status_code"]

    result = parse_result_line(dumps(line))

    assert (result.ok, result.status_code, result.error_message) == (False, None, "No status here")


def test_it_reads_a_status_code_sent_as_a_string() -> None:
    line = http_error_line("req-1")
    line["response"]["status_code"] = "400"

    result = parse_result_line(dumps(line))

    assert (result.status_code, result.ok) == (400, False)


def test_a_line_with_neither_response_nor_error_did_not_succeed() -> None:
    assert parse_result_line(b'{"custom_id": "req-1"}').ok is False


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"custom_id": "req-1"', b"[1, 2]", b'"text"', b"", b"\xff\xfe\x00{"],
    ids=["text", "truncated", "array", "string", "empty", "not-utf8"],
)
def test_it_rejects_lines_that_are_not_json_objects(raw: bytes) -> None:
    with pytest.raises(ResultLineError):
        parse_result_line(raw)


# ---------------------------------------------------------------------------------------------
# answer_text per endpoint shape
# ---------------------------------------------------------------------------------------------


def _floats_b64(count: int) -> str:
    return base64.b64encode(struct.pack(f"<{count}f", *([0.5] * count))).decode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(chat_body("Hi there"), "Hi there", id="chat"),
        pytest.param(
            {
                "choices": [
                    {
                        "message": {
                            "content": [
                                {"type": "text", "text": "Part one. "},
                                {"type": "text", "text": "Part two."},
                            ]
                        }
                    }
                ]
            },
            "Part one. Part two.",
            id="chat-content-parts",
        ),
        pytest.param(
            {"choices": [{"message": {"content": None, "tool_calls": [{"id": "call_1"}]}}]},
            None,
            id="chat-tool-call",
        ),
        pytest.param(
            {"object": "response", "output_text": "Short answer.", "output": []},
            "Short answer.",
            id="responses-output-text",
        ),
        pytest.param(
            {
                "object": "response",
                "output": [
                    {"type": "reasoning", "summary": []},
                    {
                        "type": "message",
                        "content": [
                            {"type": "output_text", "text": "Hello, "},
                            {"type": "refusal", "refusal": "no"},
                            {"type": "output_text", "text": "world."},
                        ],
                    },
                ],
                "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
            },
            "Hello, world.",
            id="responses-output-parts",
        ),
        pytest.param(
            {"object": "text_completion", "choices": [{"text": "once upon a time"}]},
            "once upon a time",
            id="completions",
        ),
        pytest.param(
            {"object": "list", "data": [{"object": "embedding", "embedding": [0.1, 0.2, 0.3]}]},
            "embedding of 3 dimensions",
            id="embeddings",
        ),
        pytest.param(
            {"object": "list", "data": [{"embedding": _floats_b64(8)}, {"embedding": ""}]},
            "2 embeddings of 8 dimensions",
            id="embeddings-base64",
        ),
        pytest.param(
            {
                "results": [
                    {"flagged": True, "categories": {"hate": False, "violence": True}},
                    {"flagged": True, "categories": {"harassment": True, "violence": True}},
                ]
            },
            "flagged: violence, harassment",
            id="moderations-flagged",
        ),
        pytest.param(
            {"results": [{"flagged": False, "categories": {"hate": False}}]},
            "not flagged",
            id="moderations-clean",
        ),
        pytest.param({"data": [{"url": "https://img.example/1.png"}]}, None, id="images"),
        pytest.param({"anything": "else"}, None, id="unknown"),
    ],
)
def test_it_extracts_the_answer_text_for_each_endpoint_shape(
    body: dict[str, Any], expected: str | None
) -> None:
    assert parse_result_line(dumps(ok_line("req-1", body=body))).answer_text == expected


def test_it_reads_tokens_in_the_responses_api_naming() -> None:
    body = {"output_text": "x", "usage": {"input_tokens": 5, "output_tokens": 2}}

    result = parse_result_line(dumps(ok_line("req-1", body=body)))

    assert (result.input_tokens, result.output_tokens, result.total_tokens) == (5, 2, 7)


# ---------------------------------------------------------------------------------------------
# summarize
# ---------------------------------------------------------------------------------------------


def test_summary_counts_lines_in_any_order_across_both_files() -> None:
    output = jsonl(ok_line("req-3"), ok_line("req-1", chat_body(prompt=100, completion=20)))
    errors = jsonl(
        expired_line("req-4"),
        http_error_line("req-2", 400, "Too long", "context_length"),
        http_error_line("req-5", 500, "Oops", None),
    )

    summary = summarize([output, errors], total_requests=5)

    assert (summary.succeeded, summary.failed, summary.never_ran) == (2, 3, 0)
    assert summary.failed_by_status == {"400": 1, "500": 1}
    assert summary.failed_by_code == {
        "batch_expired": 1,
        "context_length": 1,
        "invalid_request_error": 1,
    }
    assert (summary.input_tokens, summary.output_tokens) == (110, 23)
    assert summary.unreadable_lines == 0
    assert summary.all_failed is False


def test_summary_accepts_a_missing_output_file_and_an_empty_error_file() -> None:
    assert summarize([None, io.BytesIO(b"")], total_requests=None) == ResultSummary()
    assert summarize([None, None], total_requests=0).never_ran == 0


def test_summary_counts_lines_that_are_not_json_as_unreadable_and_goes_on() -> None:
    output = jsonl(b"<html>502</html>\n", ok_line("req-1"), b"[]\n", b'{"custom_id": "x\n')

    summary = summarize([output], total_requests=None)

    assert (summary.succeeded, summary.unreadable_lines) == (1, 3)


def test_summary_tolerates_blank_lines_crlf_and_a_last_line_without_newline() -> None:
    output = jsonl(
        b"\n",
        dumps(ok_line("req-1")) + b"\r\n",
        b"   \r\n",
        dumps(ok_line("req-2")) + b"\r\n",
        dumps(expired_line("req-3")),
    )

    summary = summarize([output], total_requests=3)

    assert (summary.succeeded, summary.failed, summary.unreadable_lines) == (2, 1, 0)
    assert summary.never_ran == 0


def test_summary_counts_requests_without_a_line_as_never_ran() -> None:
    output = jsonl(ok_line("req-1"), ok_line("req-2"))

    assert summarize([output, None], total_requests=10).never_ran == 8


def test_summary_leaves_never_ran_unknown_without_a_total() -> None:
    assert summarize([jsonl(ok_line("req-1"))], total_requests=None).never_ran is None


def test_summary_never_reports_a_negative_never_ran() -> None:
    output = jsonl(ok_line("req-1"), ok_line("req-2"))

    assert summarize([output], total_requests=1).never_ran == 0


def test_unreadable_lines_are_not_counted_as_never_ran() -> None:
    output = jsonl(ok_line("req-1"), b"garbage\n")

    assert summarize([output], total_requests=3).never_ran == 1


def test_a_batch_whose_every_request_failed_is_all_failed() -> None:
    errors = jsonl(http_error_line("req-1"), expired_line("req-2"))

    assert summarize([None, errors], total_requests=2).all_failed is True


def test_a_batch_where_nothing_ran_is_all_failed() -> None:
    assert summarize([None, None], total_requests=4).all_failed is True


def test_one_success_means_not_all_failed() -> None:
    summary = summarize([jsonl(ok_line("req-1")), jsonl(expired_line("req-2"))], total_requests=9)

    assert summary.all_failed is False


def test_an_empty_batch_is_not_all_failed() -> None:
    assert summarize([None, None], total_requests=0).all_failed is False
    assert summarize([None, None], total_requests=None).all_failed is False


def test_top_errors_are_the_three_most_common_messages_with_counts() -> None:
    errors = jsonl(
        *[expired_line(f"e-{i}") for i in range(5)],
        *[http_error_line(f"a-{i}", message="Too long") for i in range(3)],
        *[http_error_line(f"b-{i}", message="Bad model") for i in range(2)],
        http_error_line("c-1", message="Rare"),
        {"custom_id": "d-1", "error": {"code": "only_a_code"}},
    )

    summary = summarize([None, errors], total_requests=None)

    assert summary.top_errors == [
        ("Not executed before the window expired.", 5),
        ("Too long", 3),
        ("Bad model", 2),
    ]


def test_top_errors_truncate_long_messages_and_fall_back_to_code_or_status() -> None:
    long_message = "x" * 500
    errors = jsonl(
        *[http_error_line(f"a-{i}", message=long_message) for i in range(3)],
        *[{"custom_id": f"b-{i}", "error": {"code": "only_a_code"}} for i in range(2)],
        ok_line("c-1", body={}, status=503),
    )

    summary = summarize([errors], total_requests=None)

    assert summary.top_errors == [("x" * 200, 3), ("only_a_code", 2), ("HTTP 503", 1)]


def test_top_errors_stop_tracking_new_messages_past_the_limit() -> None:
    frequent = [http_error_line(f"f-{i}", message="Frequent") for i in range(3)]
    distinct = [http_error_line(f"d-{i}", message=f"Unique {i}") for i in range(1500)]
    late = [http_error_line(f"l-{i}", message="Arrives late") for i in range(10)]

    summary = summarize([jsonl(*frequent, *distinct, *late)], total_requests=None)

    assert summary.failed == 1513, "every failure is still counted"
    assert summary.top_errors[0] == ("Frequent", 3)
    assert "Arrives late" not in dict(summary.top_errors), "the counter is bounded"


def test_summary_round_trips_through_json() -> None:
    errors = jsonl(http_error_line("req-1", 400), expired_line("req-2"))
    summary = summarize([jsonl(ok_line("req-3")), errors], total_requests=4)

    stored = json.loads(json.dumps(summary.to_dict()))

    assert ResultSummary.from_dict(stored) == summary


def test_a_summary_stored_without_some_keys_still_loads() -> None:
    summary = ResultSummary.from_dict({"succeeded": 3, "failed": 1})

    assert (summary.succeeded, summary.failed, summary.never_ran, summary.top_errors) == (
        3,
        1,
        None,
        [],
    )


# ---------------------------------------------------------------------------------------------
# Offset index and page reads
# ---------------------------------------------------------------------------------------------


def test_the_index_holds_the_start_of_every_non_blank_line() -> None:
    data = b'{"a":1}\n\n{"b":2}\r\n  \r\n{"c":3}'

    offsets = build_offset_index(io.BytesIO(data))

    assert list(offsets) == [0, 9, 22]
    assert [data[o : o + 7] for o in offsets] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_the_index_of_an_empty_file_is_empty() -> None:
    assert list(build_offset_index(io.BytesIO(b""))) == []


def test_it_reads_a_page_of_lines_without_terminators() -> None:
    stream = io.BytesIO(b'{"n":0}\r\n\n{"n":1}\n{"n":2}\n\n{"n":3}\n{"n":4}')
    offsets = build_offset_index(stream)

    assert read_lines_at(stream, offsets, 1, 2) == [b'{"n":1}', b'{"n":2}']
    assert read_lines_at(stream, offsets, 0, 1) == [b'{"n":0}']
    assert read_lines_at(stream, offsets, 2, 2) == [b'{"n":2}', b'{"n":3}']


def test_a_page_past_the_end_is_short_or_empty() -> None:
    stream = jsonl(*[{"n": n} for n in range(5)])
    offsets = build_offset_index(stream)

    assert read_lines_at(stream, offsets, 3, 50) == [b'{"n": 3}', b'{"n": 4}']
    assert read_lines_at(stream, offsets, 5, 50) == []
    assert read_lines_at(stream, offsets, 99, 50) == []
    assert read_lines_at(stream, offsets, 0, 0) == []


def test_a_negative_page_start_is_refused() -> None:
    stream = jsonl({"n": 0})

    with pytest.raises(ValueError):
        read_lines_at(stream, build_offset_index(stream), -1, 10)


def test_it_reads_a_page_in_the_middle_of_a_file_on_disk(tmp_path) -> None:
    path = tmp_path / "output.jsonl"
    path.write_bytes(b"".join(dumps(ok_line(f"req-{n}")) + b"\n" for n in range(1000)))

    with path.open("rb") as stream:
        offsets = build_offset_index(stream)
        page = read_lines_at(stream, offsets, 500, 50)

    assert len(offsets) == 1000
    assert [parse_result_line(line).custom_id for line in page] == [
        f"req-{n}" for n in range(500, 550)
    ]


# ---------------------------------------------------------------------------------------------
# Outcomes and the retry file
# ---------------------------------------------------------------------------------------------


def _result_files() -> tuple[io.BytesIO, io.BytesIO]:
    """req-1 and req-3 succeeded, req-2 failed with a 400, req-4 expired, req-5 never ran."""
    output = jsonl(ok_line("req-3"), ok_line("req-1"), b"not json\n")
    errors = jsonl(http_error_line("req-2", 400, code="bad_value"), expired_line("req-4"))
    return output, errors


def test_it_sorts_custom_ids_into_succeeded_and_failed_with_reasons() -> None:
    outcomes = read_outcomes(*_result_files())

    assert outcomes.succeeded == {"req-1", "req-3"}
    assert outcomes.failed == {"req-2": "bad_value", "req-4": "batch_expired"}
    assert read_outcomes(*_result_files()).succeeded == {"req-1", "req-3"}
    assert set(read_outcomes(*_result_files()).failed) == {"req-2", "req-4"}


def test_failed_ids_fall_back_to_the_http_status_as_reason() -> None:
    errors = jsonl(ok_line("req-1", body="Bad Gateway", status=502))

    assert read_outcomes(None, errors).failed == {"req-1": "HTTP 502"}


def test_custom_ids_can_be_read_with_missing_files() -> None:
    assert read_outcomes(None, None).succeeded == set()
    assert set(read_outcomes(None, jsonl(expired_line("req-1"))).failed) == {"req-1"}


def test_an_id_that_also_succeeded_is_not_counted_as_failed() -> None:
    outcomes = read_outcomes(jsonl(ok_line("req-1")), jsonl(expired_line("req-1")))

    assert (outcomes.succeeded, outcomes.failed) == ({"req-1"}, {})


def _input_line(custom_id: str, text: str, ending: bytes = b"\n") -> bytes:
    # Odd but valid spacing and raw UTF-8: the copy must keep them exactly.
    return (
        b'{"custom_id":  "' + custom_id.encode() + b'", "method": "POST", '
        b'"url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", '
        b'"messages": [{"role": "user", "content": "' + text.encode() + b'"}]}}' + ending
    )


def test_the_retry_file_holds_exactly_the_lines_that_did_not_succeed_byte_for_byte() -> None:
    lines = {
        "req-1": _input_line("req-1", "Bonjour", b"\r\n"),
        "req-2": _input_line("req-2", "Grüße, 世界", b"\r\n"),
        "req-3": _input_line("req-3", "Hola"),
        "req-4": _input_line("req-4", 'Say \\"hi\\"'),
        "req-5": _input_line("req-5", "Last line, no newline", b""),
    }
    input_stream = io.BytesIO(
        b"".join([*list(lines.values())[:3], b"\n", *list(lines.values())[3:]])
    )
    outcomes = read_outcomes(*_result_files())
    out = io.BytesIO()

    report = build_retry_file(
        input_stream, out, succeeded=outcomes.succeeded, reasons=outcomes.failed
    )

    assert out.getvalue() == lines["req-2"] + lines["req-4"] + lines["req-5"]
    assert report.lines == 3
    assert report.by_reason == {"bad_value": 1, "batch_expired": 1, NEVER_RAN: 1}
    assert report.unreadable == 0


def test_without_reasons_every_retried_line_counts_as_never_ran() -> None:
    input_stream = io.BytesIO(_input_line("req-1", "a") + _input_line("req-2", "b"))
    out = io.BytesIO()

    report = build_retry_file(input_stream, out, succeeded={"req-1"})

    assert out.getvalue() == _input_line("req-2", "b")
    assert report.by_reason == {NEVER_RAN: 1}


def test_the_retry_file_is_empty_when_every_request_succeeded() -> None:
    input_stream = io.BytesIO(_input_line("req-1", "a") + _input_line("req-2", "b"))
    out = io.BytesIO()

    report = build_retry_file(input_stream, out, succeeded={"req-1", "req-2"})

    assert (out.getvalue(), report.lines, report.by_reason) == (b"", 0, {})


def test_the_retry_file_leaves_out_unreadable_input_lines_and_counts_them() -> None:
    input_stream = io.BytesIO(
        b"not json\n" + b'{"method": "POST"}\n' + b"[1]\n" + _input_line("req-1", "a")
    )
    out = io.BytesIO()

    report = build_retry_file(input_stream, out, succeeded=set())

    assert out.getvalue() == _input_line("req-1", "a")
    assert (report.lines, report.unreadable) == (1, 3)
