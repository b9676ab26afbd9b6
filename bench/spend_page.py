"""Benchmark: the spend page at 100,000 cached batches (a year of history), served the way the
README serves it, beside the list page and the sign-in page of the same server.

Budget (issue 11): the spend page's server time within 2x of the list page's, whatever range
is chosen; the cost of a batch computed once, not per page view (pages only read the stored
cost and the roll-ups: the script counts the page's SQL queries and checks that no query
writes).

What it does:
1. Makes a temporary data directory and SQLite database (or uses the PostgreSQL database
   DATABASE_URL names, whose batches are replaced), migrates, and fills it in a subprocess:
   `--size` batches over the last 365 days on `--connections` connections, 20 people, 40
   labels, six models, realistic statuses, usage and stored costs; then the worker's chores
   that matter here (`spend_rollup`, the tallies), as `sync_batches --loop` would.
2. Starts gunicorn as `make run` does (2 workers x 4 threads) and signs in with a session.
3. Measures each page with `wrk` (Debian's package) over loopback: requests per second and
   latency percentiles at `--concurrency` connections for `--duration` seconds each, after a
   warm-up, and prints a table with each page's ratio to the list page.

    .venv/bin/python bench/spend_page.py                       # 100,000 batches, SQLite
    .venv/bin/python bench/spend_page.py --size 1000 --duration 3   # a quick look
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/spend_page.py

Server time per request is 1/throughput at one connection; the ratio column compares
throughputs in one run (the machine is shared and noisy: compare ratios, not absolutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server, bench_env, run_child, wrk

PAGES = {
    "sign-in page (trivial)": "/accounts/login/",
    "list page": "/",
    "spend, last 30 days": "/spend/?range=30d",
    "spend, this month": "/spend/?range=month",
    "spend, last 90 days by week": "/spend/?range=90d&by=week",
    "spend, last 12 months": "/spend/?range=12m",
    "spend, a year by day": "/spend/?range=custom&start={year_ago}&end={today}&by=day",
    "spend, one connection, 12 months": "/spend/?range=12m&connection=conn-3",
    "spend, odd dates (partial months)": "/spend/?range=custom&start={odd_start}&end={odd_end}",
}


def seed(size: int, connections: int) -> dict:
    """Runs in a subprocess with the benchmark's settings: fill the database."""
    from common import seed_batches, session_for, setup_django

    setup_django()
    from django.db import connection as db

    from batches.models import SpendRollup
    from batches.services.spend import spend_rollup

    admin = seed_batches(size, connections, running=40)
    started = time.monotonic()
    days = spend_rollup(limit=100_000)
    rollup_seconds = time.monotonic() - started
    return {
        "session": session_for(admin),
        "rollup_days": days,
        "rollup_seconds": round(rollup_seconds, 2),
        "rollup_rows": SpendRollup.objects.count(),
        "database": db.vendor,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=10, help="batchweb connections")
    parser.add_argument("--concurrency", type=int, default=1, help="wrk connections")
    parser.add_argument("--duration", type=int, default=8, help="seconds per page")
    parser.add_argument("--seed-only", action="store_true", help="fill, keep, and stop")
    parser.add_argument("--reuse", type=Path, help="a data directory --seed-only filled")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    work = args.reuse or Path(tempfile.mkdtemp(prefix="bench-spend-"))
    env = bench_env(work)
    if args.reuse:
        facts = json.loads((work / "facts.json").read_text())
        print(f"Reusing {facts['size']:,} batches in {work}")
    else:
        print(f"Filling {args.size:,} batches on {args.connections} connections…", flush=True)
        started = time.monotonic()
        try:
            facts = run_child(
                __file__, ["--child-seed", str(args.size), str(args.connections)], env
            )
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 1
        facts.update(size=args.size, connections=args.connections)
        (work / "facts.json").write_text(json.dumps(facts))
        print(
            f"  filled in {time.monotonic() - started:.0f} s ({facts['database']}); roll-ups: "
            f"{facts['rollup_days']} days, {facts['rollup_rows']:,} rows, "
            f"{facts['rollup_seconds']} s"
        )
    if args.seed_only:
        print(f"  data directory: {work}")
        return 0
    server = Server(env, work)
    try:
        server.__enter__()
        base = server.base
        today = dt.datetime.now(dt.UTC).date()
        values = {
            "today": today.isoformat(),
            "year_ago": (today - dt.timedelta(days=364)).isoformat(),
            "odd_start": (today - dt.timedelta(days=200)).isoformat(),
            "odd_end": (today - dt.timedelta(days=17)).isoformat(),
        }
        cookie = facts["session"]
        results = {}
        for name, path in PAGES.items():
            url = base + path.format(**values)
            check = requests.get(url, cookies={"sessionid": cookie}, timeout=60)
            signed_out = path != "/accounts/login/" and "/accounts/login/" in check.url
            if check.status_code != 200 or signed_out:
                print(f"{name}: HTTP {check.status_code}", file=sys.stderr)
                print(server.log_tail(), file=sys.stderr)
                return 1
            headers = {"Cookie": f"sessionid={cookie}"}
            wrk(url, headers=headers, connections=args.concurrency, duration=1)  # warm-up
            results[name] = wrk(
                url, headers=headers, connections=args.concurrency, duration=args.duration
            )
        list_rps = results["list page"]["rps"]
        print(
            f"\n{facts['size']:,} batches, {facts['connections']} connections, "
            f"wrk -c{args.concurrency} "
            f"-d{args.duration}s, gunicorn 2 workers x 4 threads, {facts['database']}\n"
        )
        print("| page | req/s | p50 ms | p99 ms | server time vs list page |")
        print("|---|---:|---:|---:|---:|")
        worst = 0.0
        for name, r in results.items():
            ratio = list_rps / r["rps"]
            if name.startswith("spend"):
                worst = max(worst, ratio)
            print(
                f"| {name} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {ratio:.2f}x |"
                + (f" {r['errors']} errors" if r["errors"] else "")
            )
        print(f"\nWorst spend page: {worst:.2f}x the list page's server time (budget: 2x).")
        return 0 if worst <= 2.0 else 1
    finally:
        server.__exit__(None, None, None)
        if "sqlite" in env["DATABASE_URL"] and not args.reuse and not args.seed_only:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child-seed":
        print(json.dumps(seed(int(sys.argv[2]), int(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
