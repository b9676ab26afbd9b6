"""Benchmark the results viewer end to end on a full-size batch (issue 5).

The budget: for a 50,000-line output file of 200 MB, the summary is computed at >= 50 MB/s, any
page of the viewer is served in < 200 ms after the first load, and memory during the download
and the summary stays within 64 MB of the process's baseline.

    .venv/bin/python bench/results_viewer.py                 # files in a temporary directory
    .venv/bin/python bench/results_viewer.py --lines 5000    # a quick, smaller run

What it does:

1. Generates a seeded batch: an input file of 51,500 chat requests, an output file of 50,000
   `chat.completion` lines of 3.2-5.2 KB (200 MB, written in shuffled order, as the API gives
   no order), an error file of 1,000 failures (HTTP 400/429/500 bodies and `batch_expired`
   lines), and 500 requests with no line anywhere (never ran).
2. Serves the three files from the simulator, in this process, over loopback HTTP. The files
   are registered through the simulator's engine (`create_file`) because its own batches echo
   at most 200 characters and so cannot produce 200 MB of output.
3. Runs batchweb against it in fresh subprocesses, one per measurement, so that each memory
   figure starts from a clean baseline: a temporary SQLite database (migrated with
   `call_command`), BATCHWEB_DATA_DIR in the temporary directory, the batch cached as the sync
   worker would store it. Memory growth is the peak RSS (`VmHWM`, reset through
   `/proc/self/clear_refs` just before the step) less the RSS before the step.
4. Measures, in order: a download through the view streamed from upstream; `local_copy` of the
   three files; `batch_summarize` on the local copies (3 runs, MB/s of the output and error
   files); the first load of the results page (builds the results table); then pages 1, 500
   and the last, failures only, a search and one result, with Django's test client signed in
   (median of 7 requests each); the results CSV export; and a download served from the local
   copy.

Exits non-zero when a budget is missed. 1 MB here is 2**20 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MB = 2**20
SUMMARY_BUDGET_MB_S = 50.0
PAGE_BUDGET_MS = 200.0
MEMORY_BUDGET_MB = 64.0
REPEAT = 7
SUMMARY_RUNS = 3
PAGE_SIZE = 50
BATCH_ID = "batch_bench0000000000000000000001"
API_KEY = "sk-bench"


# --- Memory --------------------------------------------------------------------------------


def memory_kib() -> dict[str, int]:
    figures = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            figures[name] = int(value.split()[0])
    return figures


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measured(step: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak RSS growth in MB) of one step."""
    before = memory_kib()
    if not reset_peak():  # the peak so far then stands for the baseline: growth is a floor
        before["VmRSS"] = before["VmHWM"]
    started = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - started
    return result, seconds, (memory_kib()["VmHWM"] - before["VmRSS"]) / 1024


# --- Files ---------------------------------------------------------------------------------


def generate(directory: Path, lines: int) -> dict[str, Any]:
    """Write input, output and error files; return their paths and the request counts."""
    from results_summary import _chat_line, _error_line

    rng = random.Random(20260105)
    failures = lines // 50
    never_ran = lines // 100
    total = lines + failures + never_ran
    paths = {kind: directory / f"{kind}.jsonl" for kind in ("input", "output", "error")}
    with paths["input"].open("wb") as out:
        for index in range(total):
            request = {
                "custom_id": f"req-{index:06d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [
                        {"role": "system", "content": "Summarise the customer message."},
                        {"role": "user", "content": f"Message {index}: " + "lorem ipsum " * 20},
                    ],
                },
            }
            out.write(json.dumps(request).encode() + b"\n")
    order = list(range(lines))
    rng.shuffle(order)  # results come in no particular order
    with paths["output"].open("wb") as out:
        for index in order:
            out.write(_chat_line(rng, index, rng.randint(3200, 5200), string_body=False))
    with paths["error"].open("wb") as out:
        for index in range(lines, lines + failures):
            out.write(_error_line(rng, index))
    return {
        "paths": {kind: str(path) for kind, path in paths.items()},
        "bytes": {kind: path.stat().st_size for kind, path in paths.items()},
        "total": total,
        "succeeded": lines,
        "failed": failures,
    }


# --- The child side ------------------------------------------------------------------------


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchweb.settings")
    import django

    django.setup()


def _batch() -> Any:
    from batches.models import Batch

    return Batch.objects.get(openai_id=BATCH_ID)


def _client() -> Any:
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.get(username="bench"))
    return client


def child_setup(spec: dict[str, Any]) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from batches.services import batch_upsert

    call_command("migrate", verbosity=0)
    User.objects.create_user("bench")
    now = int(time.time())
    batch_upsert(
        payload={
            "id": BATCH_ID,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "model": "gpt-4o-mini",
            "input_file_id": spec["file_ids"]["input"],
            "output_file_id": spec["file_ids"]["output"],
            "error_file_id": spec["file_ids"]["error"],
            "completion_window": "24h",
            "status": "completed",
            "created_at": now - 7200,
            "in_progress_at": now - 7100,
            "finalizing_at": now - 100,
            "completed_at": now - 60,
            "request_counts": {
                "total": spec["total"],
                "completed": spec["succeeded"],
                "failed": spec["failed"],
            },
            "metadata": {"job": "bench results viewer"},
        }
    )
    return {}


def _drain(response: Any) -> int:
    size = 0
    for chunk in response.streaming_content:
        size += len(chunk)
    return size


def child_view_download(spec: dict[str, Any]) -> dict[str, Any]:
    from django.urls import reverse

    client = _client()
    url = reverse("batch-download", args=["default", BATCH_ID, "output"])
    client.get(reverse("batch-detail", args=["default", BATCH_ID]))  # warm up: templates, sessions

    def download() -> tuple[int, bool]:
        response = client.get(url)
        assert response.status_code == 200, response.status_code
        return _drain(response), response.streaming

    (size, streaming), seconds, growth = measured(download)
    assert size == spec["bytes"]["output"], (size, spec["bytes"]["output"])
    return {"seconds": seconds, "growth_mb": growth, "bytes": size, "streaming": streaming}


def child_local_copy(spec: dict[str, Any]) -> dict[str, Any]:
    from batches.services.result_files import local_copy

    batch = _batch()

    def copy_all() -> int:
        return sum(
            local_copy(batch=batch, kind=kind).stat().st_size
            for kind in ("output", "error", "input")
        )

    size, seconds, growth = measured(copy_all)
    assert size == sum(spec["bytes"].values())
    return {"seconds": seconds, "growth_mb": growth, "bytes": size}


def child_summarize(spec: dict[str, Any]) -> dict[str, Any]:
    from batches.services.result_files import batch_summarize

    batch = _batch()
    times, growths, summary = [], [], None
    for _ in range(SUMMARY_RUNS):
        summary, seconds, growth = measured(lambda: batch_summarize(batch=batch))
        times.append(seconds)
        growths.append(growth)
    assert summary.succeeded == spec["succeeded"], summary
    return {
        "times": times,
        "growth_mb": max(growths),
        "bytes": spec["bytes"]["output"] + spec["bytes"]["error"],
        "summary": summary.to_dict(),
    }


def child_viewer(spec: dict[str, Any]) -> dict[str, Any]:
    from django.db import connection
    from django.urls import reverse

    from batches.models import ResultRow

    client = _client()
    client.get(reverse("batch-detail", args=["default", BATCH_ID]))  # warm up: templates, sessions
    url = reverse("batch-results", args=["default", BATCH_ID])

    first, first_seconds, first_growth = measured(lambda: client.get(url))
    assert first.status_code == 200, first.status_code
    rows = ResultRow.objects.filter(batch__openai_id=BATCH_ID).count()
    assert rows == spec["total"], rows
    last = (rows + PAGE_SIZE - 1) // PAGE_SIZE
    failed = ResultRow.objects.filter(batch__openai_id=BATCH_ID, ok=False).count()
    middle_row = (
        ResultRow.objects.filter(batch__openai_id=BATCH_ID, input_line=rows // 2)
        .values_list("pk", flat=True)
        .get()
    )
    pages = {
        "page 1": f"{url}?page=1",
        "page 500": f"{url}?page=500",
        f"page {last:,} (last)": f"{url}?page={last}",
        "failures only, page 10": f"{url}?failed=1&page=10",
        "failures only, last page": f"{url}?failed=1&page={(failed + 49) // 50}",
        "search a custom_id": f"{url}?q=req-025000",
        "search text, page 2": f"{url}?q=expired&page=2",
        f"one result (line {rows // 2:,})": reverse(
            "batch-result", args=["default", BATCH_ID, middle_row]
        ),
    }
    timings: dict[str, dict[str, float]] = {}
    spent = {"db": 0.0, "queries": 0}

    def timer(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent["db"] += time.perf_counter() - started
            spent["queries"] += 1

    for name, page_url in pages.items():
        walls, dbs = [], []
        for _ in range(REPEAT):
            spent.update(db=0.0, queries=0)
            started = time.perf_counter()
            with connection.execute_wrapper(timer):
                response = client.get(page_url)
            walls.append(time.perf_counter() - started)
            dbs.append(spent["db"])
            assert response.status_code == 200, (name, response.status_code)
        timings[name] = {
            "ms": statistics.median(walls) * 1000,
            "max_ms": max(walls) * 1000,
            "db_ms": statistics.median(dbs) * 1000,
            "queries": spent["queries"],
        }

    def export() -> int:
        response = client.get(reverse("batch-results-csv", args=["default", BATCH_ID]))
        return _drain(response)

    csv_bytes, csv_seconds, csv_growth = measured(export)
    return {
        "first_seconds": first_seconds,
        "first_growth_mb": first_growth,
        "rows": rows,
        "pages": timings,
        "csv_seconds": csv_seconds,
        "csv_growth_mb": csv_growth,
        "csv_bytes": csv_bytes,
    }


CHILDREN = {
    "setup": child_setup,
    "view-download": child_view_download,
    "local-copy": child_local_copy,
    "summarize": child_summarize,
    "viewer": child_viewer,
    "view-download-local": child_view_download,
}


def child(step: str) -> int:
    spec = json.loads(os.environ["BENCH_SPEC"])
    _django()
    print("RESULT=" + json.dumps(CHILDREN[step](spec)))
    return 0


# --- The parent side -----------------------------------------------------------------------


def run_child(step: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", step],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"step {step} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return json.loads(done.stdout.split("RESULT=", 1)[1].splitlines()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000, help="output lines (50,000)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)

    from simulator import SimulatorServer

    with tempfile.TemporaryDirectory(prefix="bench-results-") as scratch:
        tmp = Path(scratch)
        (tmp / "files").mkdir()
        started = time.perf_counter()
        spec = generate(tmp / "files", args.lines)
        print(
            f"generated in {time.perf_counter() - started:.1f} s: output"
            f" {spec['bytes']['output'] / MB:.1f} MB ({args.lines:,} lines), errors"
            f" {spec['bytes']['error'] / MB:.2f} MB, input {spec['bytes']['input'] / MB:.1f} MB"
            f" ({spec['total']:,} requests)",
            flush=True,
        )
        with SimulatorServer(host="127.0.0.1", port=0, api_key=API_KEY) as server:
            file_ids = {}
            for kind, path in spec["paths"].items():
                # Output files are larger than the 200 MB limit of purpose "batch" uploads.
                purpose = "batch" if kind == "input" else "user_data"
                record = server.sim.create_file(
                    filename=f"{kind}.jsonl", purpose=purpose, content=Path(path)
                )
                file_ids[kind] = record["id"]
            spec["file_ids"] = file_ids
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("DJANGO_", "OPENAI_", "BATCHWEB_", "DATABASE_"))
            }
            env.update(
                {
                    "DJANGO_SETTINGS_MODULE": "batchweb.settings",
                    "DJANGO_SECRET_KEY": "bench-only-not-a-secret-" + "x" * 32,
                    "DJANGO_DEBUG": "false",
                    "DJANGO_ALLOWED_HOSTS": "testserver",
                    "DJANGO_SECURE_COOKIES": "false",
                    "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
                    "BATCHWEB_DATA_DIR": str(tmp / "data"),
                    "OPENAI_BASE_URL": server.base_url,
                    "OPENAI_API_KEY": API_KEY,
                    "LOG_LEVEL": "WARNING",
                    "BENCH_SPEC": json.dumps(spec),
                }
            )
            figures = {}
            for step in CHILDREN:
                began = time.perf_counter()
                figures[step] = run_child(step, env)
                print(f"  {step}: {time.perf_counter() - began:.1f} s", flush=True)
        return report(spec, figures)


def report(spec: dict[str, Any], figures: dict[str, Any]) -> int:
    out_mb = spec["bytes"]["output"] / MB
    summary = figures["summarize"]
    summary_mb = summary["bytes"] / MB
    best = min(summary["times"])
    median = statistics.median(summary["times"])
    rate = summary_mb / median
    viewer = figures["viewer"]
    rows: list[tuple[str, str, str, bool | None]] = []

    def add(name: str, value: str, note: str, ok: bool | None = None) -> None:
        rows.append((name, value, note, ok))

    for step, label in (("view-download", "upstream"), ("view-download-local", "local copy")):
        f = figures[step]
        add(
            f"download via the view ({label})",
            f"{f['seconds']:.2f} s",
            f"{f['bytes'] / MB / f['seconds']:.0f} MB/s, streaming={f['streaming']},"
            f" peak RSS +{f['growth_mb']:.1f} MB (budget < {MEMORY_BUDGET_MB:.0f})",
            f["growth_mb"] < MEMORY_BUDGET_MB and f["streaming"],
        )
    f = figures["local-copy"]
    add(
        "local_copy, 3 files",
        f"{f['seconds']:.2f} s",
        f"{f['bytes'] / MB / f['seconds']:.0f} MB/s to disk,"
        f" peak RSS +{f['growth_mb']:.1f} MB (budget < {MEMORY_BUDGET_MB:.0f})",
        f["growth_mb"] < MEMORY_BUDGET_MB,
    )
    add(
        "batch_summarize",
        f"{median:.2f} s",
        f"{rate:.0f} MB/s median of {len(summary['times'])} (best {summary_mb / best:.0f});"
        f" budget >= {SUMMARY_BUDGET_MB_S:.0f}",
        rate >= SUMMARY_BUDGET_MB_S,
    )
    add(
        "  memory",
        f"+{summary['growth_mb']:.1f} MB",
        f"peak RSS growth (budget < {MEMORY_BUDGET_MB:.0f})",
        summary["growth_mb"] < MEMORY_BUDGET_MB,
    )
    add(
        "first load of the results",
        f"{viewer['first_seconds']:.2f} s",
        f"builds {viewer['rows']:,} rows; peak RSS +{viewer['first_growth_mb']:.1f} MB",
    )
    for name, page in viewer["pages"].items():
        add(
            f"  {name}",
            f"{page['ms']:.1f} ms",
            f"median of {REPEAT} (max {page['max_ms']:.0f}); db {page['db_ms']:.1f} ms in"
            f" {page['queries']} queries; budget < {PAGE_BUDGET_MS:.0f}",
            page["ms"] < PAGE_BUDGET_MS,
        )
    add(
        "results CSV export",
        f"{viewer['csv_seconds']:.2f} s",
        f"{viewer['csv_bytes'] / MB:.1f} MB of CSV, peak RSS +{viewer['csv_growth_mb']:.1f} MB",
    )

    width = max(len(r[0]) for r in rows)
    print(f"\nOutput file {out_mb:.1f} MB; summary read {summary_mb:.1f} MB (output + errors)\n")
    for name, value, note, ok in rows:
        flag = "" if ok is None else ("ok  " if ok else "OVER")
        print(f"{flag:4} {name:<{width}}  {value:>10}  {note}")
    s = summary["summary"]
    print(
        f"\nsummary: {s['succeeded']:,} succeeded, {s['failed']:,} failed {s['failed_by_status']}"
        f" {s['failed_by_code']}, never ran {s['never_ran']:,}"
    )
    within = all(ok for *_, ok in rows if ok is not None)
    print("within budget" if within else "OVER BUDGET")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
