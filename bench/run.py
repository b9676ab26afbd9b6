"""Benchmark suite (issue 14): every page as users meet it, beside the stack's limit.

For each size (1,000, 10,000 and 100,000 cached batches by default) it:
1. fills a fresh database in a subprocess (bench/common.py: a year of batches on 10
   connections, 20 people, 40 labels, six models, the newest 12 still running, metadata,
   usage and costs; a 50,000-line results table for one finished batch; the spend roll-ups;
   a personal API token), and counts the SQL queries of each page there with Django's test
   client;
2. serves it with gunicorn as `make run` does (2 workers x 4 threads, DEBUG off);
3. measures each page with `wrk` over loopback at 1, 10 and 50 connections: requests per
   second and p50/p95/p99 latency, each beside the sign-in page (a trivial view: the limit of
   gunicorn + Django + this machine), then the resident memory of the two workers.

It writes bench/RESULTS.md (or --output) with the machine, date, commit, every figure, the
ratios and the budgets of issue 14; the budgets compare ratios within one run, because the
machine is shared and absolute figures move with its load.

    make bench                                                  # the whole run, ~15 min
    .venv/bin/python bench/run.py --sizes 1000 --duration 2 --connections 1 --output /tmp/r.md

The /v1/batches API reads upstream first and falls back to the cache; the benchmark's upstream
refuses connections at once (OPENAI_MAX_RETRIES=0), so the figure is batchweb's own cost of the
cached page, not an upstream's latency.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, CountingUpstream, Server, bench_env, run_child, wrk

SIGN_IN = "sign-in page (trivial)"
# name -> (path template, how it signs in: "none", "session" or "token", drawn: each request a
# URL nobody asked for before, so the page cache never answers it: the page as it is first
# drawn after a write)
PAGES: dict[str, tuple[str, str, bool]] = {
    SIGN_IN: ("/accounts/login/", "none", False),
    "list": ("/", "session", False),
    "list (drawn)": ("/", "session", True),
    "list, status=completed": ("/?status=completed", "session", False),
    "list, one connection": ("/?connection=conn-3", "session", False),
    "list, search": ("/?q=evals", "session", False),
    "list, search (drawn)": ("/?q=evals", "session", True),
    "batch page": ("{batch_url}", "session", False),
    "batch page (drawn)": ("{batch_url}", "session", True),
    "batch page, running": ("{running_url}", "session", False),
    "batch page, running (drawn)": ("{running_url}", "session", True),
    "live rows fragment": ("/batches/live/?ids={live_ids}", "session", False),
    "live rows fragment (drawn)": ("/batches/live/?ids={live_ids}", "session", True),
    "results page": ("{results_url}", "session", False),
    "spend page": ("/spend/", "session", False),
    "API GET /v1/batches": ("/v1/batches", "token", False),
}
# Budgets at the largest size and 10 connections: share of the sign-in page's req/s (issue 14
# for pages served from the cache; issue 20 for pages drawn afresh and the running batch).
BUDGETS = {
    "list": 0.5,
    "list (drawn)": 0.25,
    "batch page": 0.5,
    "batch page (drawn)": 0.35,
    "batch page, running": 0.5,
    "live rows fragment": 0.7,
    "API GET /v1/batches": 0.5,
}
P99_BUDGET_MS = {"list": 100.0, "batch page": 100.0, "list (drawn)": 150.0}
SAME_AS_SMALL = ("list", "batch page")  # within 20% of their own figures at the smallest size
RUNNING = 12
NOTES = "## Notes"


def child_seed(size: int, connections: int, result_lines: int) -> dict[str, Any]:
    """In a subprocess with the benchmark's settings: fill the database, count each page's
    queries, and say how to reach the pages."""
    from common import seed_batches, seed_results, session_for, setup_django

    setup_django()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from api.models import Scope
    from api.services.tokens import token_create
    from batches.models import Batch
    from batches.services.spend import spend_rollup

    started = time.monotonic()
    admin = seed_batches(size, connections, running=RUNNING)
    finished = Batch.objects.filter(running=False, status="completed").order_by("-created_at")
    shown = finished.select_related("connection")[min(size // 2, finished.count() - 1)]
    seed_results(shown, result_lines)
    spend_rollup(limit=size + 1)
    running = Batch.objects.filter(running=True).order_by("-created_at", "-id")
    token = token_create(user=admin, name="bench", scope=Scope.READ, days=30)
    facts = {
        "seconds": round(time.monotonic() - started, 1),
        "database": connection.vendor,
        "session": session_for(admin),
        "token": token.plain,
        "batch_url": shown.get_absolute_url(),
        "running_url": running.first().get_absolute_url(),
        "results_url": shown.url("batch-results"),
        "live_ids": ",".join(f"{b.pk}:{b.status}" for b in running[:50]),
        "at": timezone.now().isoformat(),
    }
    call_command("collectstatic", interactive=False, verbosity=0)  # pages name hashed files
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(admin)
    queries = {}
    for name, (path, auth, drawn) in PAGES.items():
        url = path.format(**facts)
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token.plain}"} if auth == "token" else {}
        if auth == "token":
            headers["HTTP_X_BATCHWEB_CONNECTION"] = "conn-0"
        getter = Client(HTTP_HOST="127.0.0.1") if auth == "none" else client
        getter.get(url, **headers)  # the first request fills per-process caches
        if drawn:  # a URL not asked before, as wrk's WRK_FRESH makes them
            url += ("&" if "?" in url else "?") + "_fresh=queries"
        with CaptureQueriesContext(connection) as captured:
            response = getter.get(url, **headers)
        if response.status_code != 200:
            raise RuntimeError(f"{name}: HTTP {response.status_code} in the test client")
        queries[name] = len(captured)
    facts["queries"] = queries
    return facts


def measure_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-{size}-"))
    env = bench_env(work)
    env["OPENAI_MAX_RETRIES"] = "0"
    upstream = CountingUpstream()  # every call fails at once, and is counted
    env["OPENAI_BASE_URL"] = upstream.base_url
    print(f"\n{size:,} batches: filling…", flush=True)
    results: dict[str, dict[int, dict[str, float]]] = {}
    try:
        facts = run_child(
            __file__,
            ["--child-seed", str(size), str(args.batch_connections), str(args.result_lines)],
            env,
        )
        print(f"  filled in {facts['seconds']} s ({facts['database']})", flush=True)
        with Server(env, work) as server:
            import requests

            for name, (path, auth, drawn) in PAGES.items():
                url = server.base + path.format(**facts)
                headers = _headers(auth, facts)
                check = requests.get(url, headers=headers, timeout=60, allow_redirects=False)
                if check.status_code != 200:
                    raise RuntimeError(
                        f"{name}: HTTP {check.status_code} from {url}\n{server.log_tail()}"
                    )
                wrk(
                    url,
                    headers=headers,
                    connections=max(args.connections),
                    duration=1,
                    fresh=drawn,
                )
                results[name] = {}
                for connections in args.connections:
                    cpu_before, calls_before = server.worker_cpu_seconds(), upstream.calls
                    found = wrk(
                        url,
                        headers=headers,
                        connections=connections,
                        duration=args.duration,
                        fresh=drawn,
                    )
                    cpu = server.worker_cpu_seconds() - cpu_before
                    served = found["requests"] or 1
                    found["cpu_ms"] = cpu * 1000 / served if found["requests"] else 0
                    found["upstream"] = (upstream.calls - calls_before) / served
                    results[name][connections] = found
                    print(
                        f"  {name:<30} c={connections:<3} {found['rps']:8.1f} req/s  "
                        f"p50 {found['p50']:7.1f}  p95 {found['p95']:7.1f}  "
                        f"p99 {found['p99']:7.1f} ms  CPU {found['cpu_ms']:5.2f} ms/req  "
                        f"upstream {found['upstream']:.2f}/req" + _errors(found),
                        flush=True,
                    )
            budgeted = 10 in args.connections and size in (min(args.sizes), max(args.sizes))
            paired = _paired(server, facts, args) if budgeted else {}
            memory = server.worker_memory()
    finally:
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)  # the database too, when it is SQLite
    return {
        "size": size,
        "facts": facts,
        "results": results,
        "memory": memory,
        "paired": paired,
    }


def _paired(server: Server, facts: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """For the budgets: each budgeted page right after the sign-in page, `--pairs` times, at 10
    connections; a pair's ratio is read from two neighbouring runs, so a slow spell of the
    shared machine moves both of them. The medians are the budget figures."""
    found: dict[str, list[dict[str, float]]] = {}
    sign_in_url = server.base + PAGES[SIGN_IN][0]
    for _ in range(args.pairs):
        for name in BUDGETS:
            path, auth, drawn = PAGES[name]
            url = server.base + path.format(**facts)
            pair = []
            for target, headers, fresh in (
                (sign_in_url, {}, False),
                (url, _headers(auth, facts), drawn),
            ):
                cpu_before = server.worker_cpu_seconds()
                figure = wrk(
                    target,
                    headers=headers,
                    connections=10,
                    duration=args.pair_seconds,
                    fresh=fresh,
                )
                cpu = server.worker_cpu_seconds() - cpu_before
                figure["cpu_ms"] = cpu * 1000 / figure["requests"] if figure["requests"] else 0
                pair.append(figure)
            base, page = pair
            found.setdefault(name, []).append(
                {
                    "ratio": page["rps"] / base["rps"] if base["rps"] else 0.0,
                    "cpu_ratio": base["cpu_ms"] / page["cpu_ms"] if page["cpu_ms"] else 0.0,
                    "p99": page["p99"],
                }
            )
    summary = {}
    for name, rows in found.items():
        summary[name] = {
            key: statistics.median(r[key] for r in rows) for key in ("ratio", "cpu_ratio", "p99")
        }
        summary[name]["ratios"] = [r["ratio"] for r in rows]
        print(
            f"  paired with sign-in: {name:<24} ratios "
            + ", ".join(f"{r:.2f}" for r in summary[name]["ratios"])
            + f" (median {summary[name]['ratio']:.2f}, p99 {summary[name]['p99']:.1f} ms)",
            flush=True,
        )
    return summary


def _headers(auth: str, facts: dict[str, Any]) -> dict[str, str]:
    if auth == "session":
        return {"Cookie": f"sessionid={facts['session']}"}
    if auth == "token":
        return {"Authorization": f"Bearer {facts['token']}", "X-Batchweb-Connection": "conn-0"}
    return {}


def _errors(found: dict[str, float]) -> str:
    return f"  {found['errors']} errors" if found["errors"] else ""


def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
    except OSError:
        commit, dirty = "unknown", ""
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return {
        "cpu": f"{cpu or platform.processor()}, {os.cpu_count()} cores",
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "commit": commit + (" with uncommitted changes" if dirty else ""),
        "wrk": (wrk_version.stdout + wrk_version.stderr).split("\n")[0].strip(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def budgets(runs: list[dict[str, Any]], connections: int) -> list[dict[str, Any]]:
    """Issue 14's budgets, read at the largest size and 10 wrk connections: the medians of the
    paired runs (`_paired`) where there are some, else the table's figures."""
    big, small = runs[-1], runs[0]
    if connections not in big["results"][SIGN_IN]:
        return []
    out = []
    for name, share in BUDGETS.items():
        r = big["results"][name][connections]
        ratio = r["rps"] / big["results"][SIGN_IN][connections]["rps"]
        sign_in_cpu = big["results"][SIGN_IN][connections]["cpu_ms"]
        cpu_ratio = sign_in_cpu / r["cpu_ms"] if r["cpu_ms"] else 0.0
        p99 = r["p99"]
        if name in big.get("paired", {}):
            ratio, cpu_ratio, p99 = (big["paired"][name][k] for k in ("ratio", "cpu_ratio", "p99"))
        row = {"page": name, "ratio": ratio, "share": share, "p99": p99, "cpu_ratio": cpu_ratio}
        if name in big.get("paired", {}):
            row["ratios"] = big["paired"][name]["ratios"]
        ok = ratio >= share
        if name in P99_BUDGET_MS:
            row["p99_budget"] = P99_BUDGET_MS[name]
            ok = ok and p99 < P99_BUDGET_MS[name]
        if name in SAME_AS_SMALL and small is not big:
            s = small["results"][name][connections]
            small_ratio = s["rps"] / small["results"][SIGN_IN][connections]["rps"]
            if name in small.get("paired", {}):
                small_ratio = small["paired"][name]["ratio"]
            row["vs_small"] = ratio / small_ratio if small_ratio else 0.0
            row["rps_vs_small"] = r["rps"] / s["rps"]
            ok = ok and row["vs_small"] >= 0.8
        row["ok"] = ok
        out.append(row)
    return out


def report(runs: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, str]) -> str:
    sizes = ", ".join(f"{r['size']:,}" for r in runs)
    command = " ".join(["bench/run.py", *sys.argv[1:]])
    lines = [
        "# Benchmark results (issues 14 and 20)",
        "",
        "Written by `make bench` (`bench/run.py`); see bench/README.md for what it does.",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; command: `{command}`",
        f"- Commit: {info['commit']}",
        f"- Machine: {info['cpu']}; {info['system']}; Python {info['python']}; {info['wrk']}",
        f"- Load average at the start: {info['load']}; at the end: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + " (the machine is shared: compare ratios within this run, not absolutes)",
        f"- Served: gunicorn 2 workers x 4 threads, DEBUG off, {runs[0]['facts']['database']}; "
        f"wrk over loopback, {args.duration:g} s per figure after a 1 s warm-up",
        f"- Cache: {sizes} batches on {args.batch_connections} connections; the results page "
        f"reads a {args.result_lines:,}-line batch; signed in as a superuser (session cookie), "
        "the API with a personal read token",
        "",
    ]
    table = budgets(runs, 10)
    if table:
        big, small = runs[-1]["size"], runs[0]["size"]
        lines += [
            f"## Budgets at {big:,} batches and 10 connections",
            "",
            f"Ratio = the page's requests/s over the sign-in page's: the median of {args.pairs} "
            f"pairs of {args.pair_seconds} s runs, each page right after the sign-in page (the "
            "ratios of the pairs in brackets), so that a slow spell of the shared machine moves "
            "both sides of a ratio. CPU ratio = "
            "the sign-in page's server CPU time per request over the page's (the workers' own "
            "cost, which other work on the machine does not move; informative, the budget is "
            "the ratio). "
            f'"vs {small:,}" = that ratio over the same page\'s ratio at {small:,} batches '
            "(raw req/s in brackets).",
            "",
            "| page | ratio | budget | CPU ratio | p99 ms | p99 budget | vs smaller cache | met |",
            "|---|---:|---:|---:|---:|---:|---:|:---:|",
        ]
        for row in table:
            vs = (
                f"{row['vs_small']:.2f} ({row['rps_vs_small']:.2f}) ≥ 0.80"
                if "vs_small" in row
                else ""
            )
            p99_budget = f"< {row['p99_budget']:.0f}" if "p99_budget" in row else ""
            pairs = ", ".join(f"{x:.2f}" for x in row.get("ratios", []))
            lines.append(
                f"| {row['page']} | {row['ratio']:.2f}" + (f" ({pairs})" if pairs else "") + " | "
                f"≥ {row['share']:.2f} | "
                f"{row['cpu_ratio']:.2f} | {row['p99']:.1f} | {p99_budget} | {vs} | "
                f"{'yes' if row['ok'] else 'NO'} |"
            )
        lines.append("")
    for run in runs:
        sign_in = run["results"][SIGN_IN]
        lines += [
            f"## {run['size']:,} batches",
            "",
            "| page | conns | req/s | p50 ms | p95 ms | p99 ms | ratio to sign-in | "
            "server CPU ms/req | CPU ratio | SQL queries | upstream calls/req |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, by_conns in run["results"].items():
            for c, r in by_conns.items():
                ratio = r["rps"] / sign_in[c]["rps"] if sign_in[c]["rps"] else 0.0
                cpu_ratio = sign_in[c]["cpu_ms"] / r["cpu_ms"] if r["cpu_ms"] else 0.0
                lines.append(
                    f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | "
                    f"{r['p99']:.1f} | {ratio:.2f} | {r['cpu_ms']:.2f} | {cpu_ratio:.2f} | "
                    f"{run['facts']['queries'][name]} | {r.get('upstream', 0):.2f} |"
                    + (f" {r['errors']} errors" if r["errors"] else "")
                )
        memory = ", ".join(f"{m['rss_mb']:.0f} MB (peak {m['hwm_mb']:.0f})" for m in run["memory"])
        lines += [
            "",
            f"Workers' resident memory after the run: {memory}. "
            f"Filled in {run['facts']['seconds']} s.",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="numbers of batches")
    parser.add_argument("--connections", default="1,10,50", help="wrk connections")
    parser.add_argument("--duration", type=int, default=5, help="seconds per figure")
    parser.add_argument("--batch-connections", type=int, default=10)
    parser.add_argument(
        "--pairs", type=int, default=3, help="budget pages measured right after the sign-in page"
    )
    parser.add_argument("--pair-seconds", type=int, default=3, help="seconds per paired run")
    parser.add_argument("--result-lines", type=int, default=50_000)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument(
        "--check-budgets", action="store_true", help="exit 1 when a budget is missed"
    )
    args = parser.parse_args()
    args.sizes = sorted(int(x) for x in args.sizes.split(","))
    args.connections = [int(x) for x in args.connections.split(",")]
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    info = machine()
    runs = []
    for size in args.sizes:
        run = measure_size(size, args)
        runs.append(run)
        refused = sum(r["non2xx"] for by in run["results"].values() for r in by.values())
        if refused:
            print(f"{refused} answers other than 2xx/3xx at {size:,} batches", file=sys.stderr)
            return 1
    text = report(runs, args, info)
    # Notes written by hand below the figures (what was changed, where the time goes) stay.
    if args.output.exists() and NOTES in (old := args.output.read_text()):
        text += "\n" + old[old.index(NOTES) :].rstrip()
    args.output.write_text(text + "\n")
    print(f"\nWrote {args.output}")
    missed = [row["page"] for row in budgets(runs, 10) if not row["ok"]]
    if missed:
        print("Budgets missed: " + ", ".join(missed))
    return 1 if missed and args.check_budgets else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child-seed":
        print(json.dumps(child_seed(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
        sys.exit(0)
    sys.exit(main())
