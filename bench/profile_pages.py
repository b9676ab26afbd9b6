"""Where a page's time goes: cProfile over requests made through Django's test client, on the
cache bench/run.py fills (production settings, DEBUG off).

    .venv/bin/python bench/profile_pages.py                     # 100,000 batches, every page
    .venv/bin/python bench/profile_pages.py --dir /tmp/prof --page list --top 40
    .venv/bin/python bench/profile_pages.py --dir /tmp/prof --timing     # no profiler
    (--dir keeps the filled database there and reuses it on the next run)

--timing measures instead of profiling: the best of --rounds rounds of --requests requests,
each page and the sign-in page alike, in one process. The best round is the one the shared
machine disturbed least, so these are the steadiest figures to compare before and after a
change (gunicorn adds about 2 ms a request to each).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_env, run_child


def child(requests: int, pages: list[str], top: int, rounds: int = 0) -> dict:
    import os

    from common import setup_django

    setup_django()
    from django.contrib.auth.models import User
    from django.test import Client
    from run import PAGES

    facts = json.loads(Path(os.environ["BATCHWEB_DATA_DIR"], "facts.json").read_text())
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.get(username="bench"))
    out = {}
    for name, (path, auth, drawn) in PAGES.items():
        if pages and name not in pages:
            continue
        headers = {}
        if auth == "token":
            headers = {
                "HTTP_AUTHORIZATION": f"Bearer {facts['token']}",
                "HTTP_X_BATCHWEB_CONNECTION": "conn-0",
            }
        url = path.format(**facts)
        asker = client if auth != "none" else Client(HTTP_HOST="127.0.0.1")
        asker.get(url, **headers)
        if rounds:
            out[name] = {"ms": _best(asker, url, headers, drawn, requests, rounds)}
            continue
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        for number in range(requests):
            # A drawn page: a URL nobody asked for (as run.py's WRK_FRESH), so no cache has it.
            fresh = ("&" if "?" in url else "?") + f"_fresh={number}" if drawn else ""
            client.get(url + fresh, **headers)
        profile.disable()
        ms = (time.perf_counter() - started) * 1000 / requests
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(top)
        out[name] = {"ms": round(ms, 2), "profile": text.getvalue()}
    return out


def _best(client, url: str, headers: dict, drawn: bool, requests: int, rounds: int) -> float:
    """Milliseconds a request in the least disturbed of ROUNDS rounds."""
    best = float("inf")
    for round_ in range(rounds):
        started = time.perf_counter()
        for number in range(requests):
            fresh = ("&" if "?" in url else "?") + f"_fresh=t{round_}-{number}" if drawn else ""
            client.get(url + fresh, **headers)
        best = min(best, (time.perf_counter() - started) * 1000 / requests)
    return round(best, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, help="keep (and reuse) the filled database here")
    parser.add_argument("--page", action="append", default=[], help="a page name of run.py")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--timing", action="store_true", help="time, do not profile")
    parser.add_argument("--rounds", type=int, default=12, help="with --timing")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    env["OPENAI_MAX_RETRIES"] = "0"
    if not (work / "facts.json").exists():
        print(f"Filling {args.size:,} batches in {work}…", flush=True)
        facts = run_child(
            str(Path(__file__).parent / "run.py"),
            ["--child-seed", str(args.size), "10", "50000"],
            env,
        )
        (work / "facts.json").write_text(json.dumps(facts))
    rounds = str(args.rounds if args.timing else 0)
    found = run_child(
        __file__,
        ["--child", str(args.requests), json.dumps(args.page), str(args.top), rounds],
        env,
    )
    if args.timing:
        for name, result in found.items():
            print(f"{name:<32} {result['ms']:8.2f} ms a request (best of {args.rounds} rounds)")
        return 0
    for name, result in found.items():
        print(f"\n===== {name}: {result['ms']} ms a request (test client, profiled)")
        print(result["profile"])
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        request_count, pages, top, rounds = sys.argv[2:]
        print(json.dumps(child(int(request_count), json.loads(pages), int(top), int(rounds))))
        sys.exit(0)
    sys.exit(main())
