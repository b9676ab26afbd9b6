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
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
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
    import random
    from decimal import Decimal

    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.db import connection as db
    from django.utils import timezone

    from batches.models import Batch, BatchTally, Connection, SpendRollup
    from batches.services.spend import spend_rollup

    call_command("migrate", verbosity=0)
    Batch.objects.all().delete()
    SpendRollup.objects.all().delete()
    rng = random.Random(11)
    conns = []
    for i in range(connections):
        conn, _ = Connection.objects.get_or_create(
            slug=f"conn-{i}", defaults={"name": f"Project {i}", "base_url": "http://127.0.0.1:9"}
        )
        conns.append(conn)
    people = []
    for i in range(20):
        user, _ = User.objects.get_or_create(username=f"person{i:02d}")
        people.append(user)
    admin, _ = User.objects.get_or_create(username="bench", defaults={"is_superuser": True})
    admin.is_superuser = True
    admin.save()
    admin.groups.add(Group.objects.get(name="Admins"))
    models = [
        ("gpt-4o-mini", "/v1/chat/completions", Decimal("0.075"), Decimal("0.3")),
        ("gpt-4.1-mini", "/v1/chat/completions", Decimal("0.2"), Decimal("0.8")),
        ("gpt-4.1", "/v1/responses", Decimal("1"), Decimal("4")),
        ("o4-mini", "/v1/responses", Decimal("0.55"), Decimal("2.2")),
        ("text-embedding-3-small", "/v1/embeddings", None, None),
        ("gpt-4o", "/v1/chat/completions", Decimal("1.25"), Decimal("5")),
    ]
    statuses = ["completed"] * 14 + ["failed", "expired", "cancelled"]
    now = timezone.now()
    span = 365 * 86400
    rows = []
    for i in range(size):
        model, endpoint, price_in, price_out = models[rng.randrange(len(models))]
        created = now - dt.timedelta(seconds=span * i / size + rng.random())
        running = i < 40
        status = "in_progress" if running else rng.choice(statuses)
        given, output = rng.randint(2_000, 4_000_000), rng.randint(0, 1_500_000)
        if endpoint == "/v1/embeddings":
            output = 0
        cost = list_cost = None
        if not running and price_in is not None:
            cost = (Decimal(given) * price_in + Decimal(output) * price_out) / 1_000_000
            cost = cost.quantize(Decimal("0.000001"))
            list_cost = cost * 2
        label = f"job {rng.randrange(40)}" if rng.random() < 0.8 else ""
        batch = Batch(
            connection=conns[i % len(conns)],
            openai_id=f"batch_{i:08d}",
            status=status,
            running=running,
            endpoint=endpoint,
            model=model,
            completion_window="24h",
            input_file_id=f"file-{i}",
            created_at=created,
            completed_at=None if running else created + dt.timedelta(hours=2),
            request_total=100,
            request_completed=100 if not running else 40,
            request_failed=0,
            input_tokens=None if running else given,
            cached_tokens=None if running else given // 10,
            output_tokens=None if running else output,
            metadata={"job": label} if label else {},
            label=label,
            raw={"id": f"batch_{i:08d}"},
            search_text=f"batch_{i:08d} {model} {label}",
            created_by=people[rng.randrange(len(people))] if rng.random() < 0.9 else None,
            synced_at=now,
            cost_usd=cost,
            list_cost_usd=list_cost,
            cost_computed_at=None if running else now,
            cost_note="" if cost is not None else "no batch price known",
        )
        rows.append(batch)
    Batch.objects.bulk_create(rows, batch_size=2000)
    BatchTally.rebuild()
    started = time.monotonic()
    days = spend_rollup(limit=100_000)
    rollup_seconds = time.monotonic() - started
    session = SessionStore()
    session["_auth_user_id"] = str(admin.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = admin.get_session_auth_hash()
    session.create()
    return {
        "session": session.session_key,
        "rollup_days": days,
        "rollup_seconds": round(rollup_seconds, 2),
        "rollup_rows": SpendRollup.objects.count(),
        "database": db.vendor,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(url: str, cookie: str, *, connections: int, duration: int) -> dict:
    """Requests per second and latency percentiles (ms) from wrk's --latency report."""
    command = ["wrk", "-t", str(min(connections, 2)), "-c", str(connections)]
    command += ["-d", f"{duration}s", "--latency", "-H", f"Cookie: sessionid={cookie}", url]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for pct in ("50", "99"):
        match = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", text)
        value, unit = float(match.group(1)), match.group(2)
        found[f"p{pct}"] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    found["errors"] = int(errors.group(1)) if errors else 0
    return found


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
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchweb.settings",
            "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
            "DJANGO_DEBUG": "false",
            "DJANGO_SECURE_COOKIES": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "BATCHWEB_DATA_DIR": str(work),
            "OPENAI_API_KEY": "sk-bench-unused",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        }
    )
    env.setdefault("DATABASE_URL", f"sqlite:///{work / 'db.sqlite3'}")
    if args.reuse:
        facts = json.loads((work / "facts.json").read_text())
        print(f"Reusing {facts['size']:,} batches in {work}")
    else:
        print(f"Filling {args.size:,} batches on {args.connections} connections…", flush=True)
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, __file__, "--child-seed", str(args.size), str(args.connections)],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if out.returncode:
            print(out.stdout, out.stderr, file=sys.stderr)
            return 1
        facts = json.loads(out.stdout.strip().splitlines()[-1])
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
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        env=env,
        cwd=ROOT,
        check=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "batchweb.wsgi", "--bind", f"127.0.0.1:{port}"),
            *("--workers", "2", "--threads", "4", "--timeout", "120", "--no-control-socket"),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(work / "gunicorn.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(base + "/accounts/login/", timeout=10)
                break
            except requests.RequestException:
                time.sleep(0.2)
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
                print((work / "gunicorn.log").read_text()[-3000:], file=sys.stderr)
                return 1
            wrk(url, cookie, connections=args.concurrency, duration=1)  # warm-up
            results[name] = wrk(url, cookie, connections=args.concurrency, duration=args.duration)
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
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        if "sqlite" in env["DATABASE_URL"] and not args.reuse and not args.seed_only:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child-seed":
        print(json.dumps(seed(int(sys.argv[2]), int(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
