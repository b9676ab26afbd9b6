"""Benchmark the streaming result readers in ``batches/results.py`` on a full-size batch.

Generates a ~200 MB, 50,000-line output file of realistic ``chat.completion`` lines (plus an
error file with a few % failures), then times ``summarize``, ``build_offset_index`` and a
page read in the middle of the file, and reports peak memory. The budget it checks:
``summarize`` at >= 50 MB/s with under 64 MB of memory growth; a page read well under 1 ms.

    .venv/bin/python bench/results_summary.py            # full size, files in a temp dir
    .venv/bin/python bench/results_summary.py --lines 5000 --keep bench/out

1 MB here is 2**20 bytes, the unit of the API's 200 MB input file limit.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

# Run from a checkout without installing the project: batches/results.py is pure stdlib.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batches.results import (
    ResultSummary,
    build_offset_index,
    read_lines_at,
    summarize,
)

MB = 2**20
SUMMARY_BUDGET_MB_S = 50.0
MEMORY_BUDGET_MB = 64.0

SENTENCES = [
    "The quarterly figures show a steady rise in returning customers across all regions.",
    'Le résumé indique une hausse des ventes de 12 % — surtout dans le "segment premium".',
    "Step 1: normalise the input.\nStep 2: remove duplicates.\nStep 3: compute the totals.",
    "Die Analyse ergab keine signifikanten Unterschiede zwischen den beiden Gruppen.",
    "In short, the proposal is sound, but the timeline assumes no delays from suppliers.",
    "```python\ndef total(xs):\n    return sum(x for x in xs if x > 0)\n```",
    "顧客満足度は前年比で改善しましたが、配送時間にはまだ課題があります。",
    "Key risks: (a) currency exposure, (b) a single supplier, (c) unclear ownership.",
    'She replied: "We can ship on Friday if the review is done by Wednesday."',
    "Overall sentiment is positive; the main complaints concern battery life 🔋.",
]

ERROR_KINDS = [
    (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context "
        "length is 128000 tokens. However, your messages resulted in 131072 tokens.",
    ),
    (429, "rate_limit_error", "rate_limit_exceeded", "Rate limit reached for requests."),
    (500, "server_error", None, "The server had an error while processing your request."),
]


def _chat_line(rng: random.Random, index: int, target_bytes: int, string_body: bool) -> bytes:
    """One output line of roughly ``target_bytes``, shaped like a real chat completion.

    ``string_body`` sends the body as a JSON string, as some gateways do (decoded twice).
    """
    words: list[str] = []
    size = 0
    budget = target_bytes - 900  # the envelope, ids and usage take about this much
    while size < budget:
        sentence = rng.choice(SENTENCES)
        words.append(sentence)
        size += len(sentence.encode()) + 1
    content = " ".join(words)
    prompt_tokens = rng.randint(200, 3000)
    completion_tokens = len(content) // 4
    line = {
        "id": f"batch_req_{index:024x}",
        "custom_id": f"req-{index:06d}",
        "response": {
            "status_code": 200,
            "request_id": f"req_{rng.getrandbits(128):032x}",
            "body": {
                "id": f"chatcmpl-{rng.getrandbits(96):024x}",
                "object": "chat.completion",
                "created": 1767225600 + index,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": content,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {
                        "reasoning_tokens": 0,
                        "audio_tokens": 0,
                        "accepted_prediction_tokens": 0,
                        "rejected_prediction_tokens": 0,
                    },
                },
                "service_tier": "default",
                "system_fingerprint": "fp_0123456789",
            },
        },
        "error": None,
    }
    if string_body:
        line["response"]["body"] = json.dumps(line["response"]["body"], ensure_ascii=False)
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def _error_line(rng: random.Random, index: int) -> bytes:
    """A failed request: an HTTP error, or (one time in three) an expired one."""
    custom_id = f"req-{index:06d}"
    if rng.random() < 1 / 3:
        line = {
            "id": f"batch_req_{index:024x}",
            "custom_id": custom_id,
            "response": None,
            "error": {
                "code": "batch_expired",
                "message": "This request could not be executed "
                "before the completion window expired.",
            },
        }
    else:
        status, kind, code, message = rng.choice(ERROR_KINDS)
        line = {
            "id": f"batch_req_{index:024x}",
            "custom_id": custom_id,
            "response": {
                "status_code": status,
                "request_id": f"req_{rng.getrandbits(128):032x}",
                "body": {"error": {"message": message, "type": kind, "param": None, "code": code}},
            },
            "error": None,
        }
    return json.dumps(line).encode() + b"\n"


def generate(
    directory: Path, lines: int, *, string_bodies: bool = False, failure_rate: float = 0.03
) -> tuple[Path, Path, int]:
    """Write the output and error files, streaming, and return their paths and request total.

    A third of the failures get no line at all (never ran), so ``never_ran`` has work to do.
    """
    rng = random.Random(20260101)
    output_path = directory / "output.jsonl"
    error_path = directory / "errors.jsonl"
    failures = int(lines * failure_rate)
    never_ran = failures // 3
    with output_path.open("wb") as output:
        for index in range(lines):
            target = rng.randint(3200, 5200)
            output.write(_chat_line(rng, index, target, string_body=string_bodies))
    with error_path.open("wb") as errors:
        for index in range(lines, lines + failures):
            errors.write(_error_line(rng, index))
    return output_path, error_path, lines + failures + never_ran


def _maxrss_mb() -> float:
    # Linux reports ru_maxrss in kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_summary(output_path: Path, error_path: Path, total: int) -> ResultSummary:
    with output_path.open("rb") as output, error_path.open("rb") as errors:
        return summarize([output, errors], total_requests=total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000, help="output lines (50,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of summarize (3)")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    parser.add_argument(
        "--string-bodies",
        action="store_true",
        help="send response bodies as JSON strings, as some gateways do",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        output_path, error_path, total = generate(
            directory, args.lines, string_bodies=args.string_bodies
        )
        generated_in = time.perf_counter() - started
        output_size = output_path.stat().st_size
        size = output_size + error_path.stat().st_size
        print(
            f"generated {output_size / MB:.1f} MB output ({args.lines:,} lines)"
            f" + {error_path.stat().st_size / MB:.2f} MB errors in {generated_in:.1f} s;"
            f" {total:,} requests"
        )

        # Generation streams line by line, so the process peak before this is small and any
        # growth of it comes from summarize.
        rss_before = _maxrss_mb()
        timings = []
        summary = None
        for _ in range(args.repeat):
            started = time.perf_counter()
            summary = _run_summary(output_path, error_path, total)
            timings.append(time.perf_counter() - started)
        rss_delta = _maxrss_mb() - rss_before

        tracemalloc.start()
        _run_summary(output_path, error_path, total)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        with output_path.open("rb") as output:
            started = time.perf_counter()
            offsets = build_offset_index(output)
            index_time = time.perf_counter() - started

            last_page = max(len(offsets) - 50, 0)
            middle = min(25_000, last_page)
            page_times = []
            for start in (middle, 0, last_page):
                repeats = 200
                began = time.perf_counter()
                for _ in range(repeats):
                    page = read_lines_at(output, offsets, start, 50)
                page_times.append((start, (time.perf_counter() - began) / repeats, len(page)))

        # A cold page read: a freshly opened file, as a web request would do it.
        with output_path.open("rb") as output:
            began = time.perf_counter()
            cold_page = read_lines_at(output, offsets, middle, 50)
            cold_time = time.perf_counter() - began

    best = min(timings)
    rate = size / MB / best
    rows = [
        (
            "summarize (best)",
            f"{best:.2f} s",
            f"{rate:.0f} MB/s (budget >= {SUMMARY_BUDGET_MB_S:.0f})",
        ),
        (
            "summarize (median)",
            f"{statistics.median(timings):.2f} s",
            f"{size / MB / statistics.median(timings):.0f} MB/s over {len(timings)} runs",
        ),
        ("  tracemalloc peak", f"{traced_peak / MB:.2f} MB", f"budget < {MEMORY_BUDGET_MB:.0f} MB"),
        (
            "  ru_maxrss delta",
            f"{rss_delta:.1f} MB",
            f"budget < {MEMORY_BUDGET_MB:.0f} MB; process peak RSS {_maxrss_mb():.0f} MB",
        ),
        (
            "build_offset_index",
            f"{index_time:.2f} s",
            f"{output_size / MB / index_time:.0f} MB/s, {len(offsets):,} offsets,"
            f" {offsets.itemsize * len(offsets) / 1024:.0f} KB",
        ),
    ]
    for start, seconds, got in page_times:
        rows.append(
            (f"read_lines_at({start:,}, 50)", f"{seconds * 1e3:.3f} ms", f"{got} lines, warm")
        )
    rows.append(
        (
            f"read_lines_at({middle:,}, 50)",
            f"{cold_time * 1e3:.3f} ms",
            f"{len(cold_page)} lines, fresh open",
        )
    )

    width = max(len(name) for name, _, _ in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    print()
    print(
        f"summary: {summary.succeeded:,} succeeded, {summary.failed:,} failed"
        f" {summary.failed_by_status} {summary.failed_by_code}, never ran {summary.never_ran:,},"
        f" unreadable {summary.unreadable_lines}"
    )
    ok = (
        rate >= SUMMARY_BUDGET_MB_S
        and traced_peak / MB < MEMORY_BUDGET_MB
        and rss_delta < MEMORY_BUDGET_MB
    )
    print("within budget" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
