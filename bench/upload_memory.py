"""Benchmark the create form with a file at the Batch API's limits, through a real web process.

Issue 4's budget: validating a 200 MB, 50,000-line file at least 50 MB/s, and the web process's
peak memory growing by at most 64 MB during validation and upload together; a 50,000-line file
with one bad line in the middle is rejected with that line named, and nothing sent upstream.

What it runs, all on 127.0.0.1 and in a temporary directory (the checked file itself waits in
the project's data/staging/ until it is uploaded, as in production):

1. generates the ~200 MB, 50,000-line chat file of bench/validate_jsonl.py (same generator,
   same seed) and a copy whose line 25,000 repeats the custom_id of line 3;
2. times `check_jsonl` on it in this process (the pure checking rate);
3. starts the simulator (`python -m simulator`) and gunicorn serving batchweb (1 worker,
   4 threads) on a fresh SQLite database with one submitter, and signs in with `requests`;
4. posts the bad file through the create form (streamed with requests-toolbelt's
   MultipartEncoder): it must be refused naming line 25,000, with no createFile or createBatch
   call in the simulator's `/_sim/state`;
5. warms the worker up with the 20-line sample (check, confirm), then resets its peak RSS
   (`/proc/<pid>/clear_refs`) and posts the 200 MB file: the check POST (upload to batchweb,
   multipart parsing to a temporary file, the check, the move into staging) and then the
   confirm POST (streamed upload to the simulator's `POST /files`, `POST /batches`) are timed,
   and the worker's `VmHWM` afterwards, less its `VmRSS` before, is the peak growth.

    .venv/bin/python bench/upload_memory.py
    .venv/bin/python bench/upload_memory.py --dir bench/out --keep

Exits non-zero when a budget is missed or a case does not come out as expected.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from requests_toolbelt import MultipartEncoder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from validate_jsonl import (  # noqa: E402
    BAD_LINE,
    LINES,
    duplicate_custom_id,
    write_valid_file,
    write_with_bad_line,
)

from batches.jsonl_check import check_jsonl  # noqa: E402

MIB = 1024 * 1024
MIN_RATE = 50.0  # MB/s
MAX_GROWTH = 64.0  # MB
API_KEY = "sk-bench-upload"
USERNAME, PASSWORD = "bench", "pw-bench-upload-1"
SAMPLE = ROOT / "static" / "samples" / "sample-chat.jsonl"
STAGING = ROOT / "data" / "staging"
WAIT = 30.0
SIMULATOR = [sys.executable, "-m", "simulator", "--host", "127.0.0.1"]

USER_SCRIPT = f"""
from django.contrib.auth.models import Group, User
user = User.objects.create_user({USERNAME!r}, password={PASSWORD!r})
user.groups.add(Group.objects.get(name="Submitters"))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with code {process.returncode}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not answer on {url} within {WAIT:.0f} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True
    )


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (gunicorn's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (in parentheses) may hold spaces: the parent pid follows it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def memory_kib(pid: int) -> dict[str, int]:
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            figures[name] = int(value.split()[0])
    return figures


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def form_value(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    if not match:
        raise SystemExit(f"no {name} in the page")
    return html.unescape(match.group(1))


@dataclass
class Web:
    url: str
    session: requests.Session

    def sign_in(self) -> None:
        page = self.session.get(f"{self.url}/accounts/login/", timeout=10)
        answer = self.session.post(
            f"{self.url}/accounts/login/",
            data={
                "username": USERNAME,
                "password": PASSWORD,
                "csrfmiddlewaretoken": form_value(page.text, "csrfmiddlewaretoken"),
            },
            allow_redirects=False,
            timeout=30,
        )
        if answer.status_code != 302:
            raise SystemExit(f"signing in failed: HTTP {answer.status_code}")

    def check(self, path: Path) -> tuple[requests.Response, float, str]:
        """Post `path` through the create form, streamed from disk; return the answer, the
        seconds it took and the form's submission token."""
        form = self.session.get(f"{self.url}/batches/new/", timeout=10).text
        token = form_value(form, "submission_token")
        with path.open("rb") as stream:
            encoder = MultipartEncoder(
                fields={
                    "csrfmiddlewaretoken": form_value(form, "csrfmiddlewaretoken"),
                    "submission_token": token,
                    "endpoint": "",
                    "completion_window": "24h",
                    "label": "bench upload",
                    "input_file": (path.name, stream, "application/jsonl"),
                }
            )
            started = time.perf_counter()
            answer = self.session.post(
                f"{self.url}/batches/new/",
                data=encoder,
                headers={"Content-Type": encoder.content_type},
                allow_redirects=False,
                timeout=600,
            )
            seconds = time.perf_counter() - started
        return answer, seconds, token

    def confirm(self, token: str) -> tuple[requests.Response, float, str]:
        """Open the confirmation page and press its button; return the answer, the seconds the
        button took and the confirmation page."""
        url = f"{self.url}/batches/new/{token}/"
        page = self.session.get(url, timeout=10).text
        started = time.perf_counter()
        answer = self.session.post(
            url,
            data={"csrfmiddlewaretoken": form_value(page, "csrfmiddlewaretoken")},
            allow_redirects=False,
            timeout=600,
        )
        return answer, time.perf_counter() - started, html.unescape(page)


def sim_calls(root_url: str) -> dict[str, int]:
    return requests.get(f"{root_url}/_sim/state", timeout=10).json()["calls"]


def time_check(path: Path, repeat: int) -> tuple[float, int]:
    """Median seconds of `check_jsonl` over the file in this process, and the file's bytes."""
    times = []
    for _ in range(repeat):
        with path.open("rb") as stream:
            started = time.perf_counter()
            report = check_jsonl(stream)
            times.append(time.perf_counter() - started)
    if not report.ok:
        raise SystemExit(f"the generated file was rejected: {report.summary()}")
    return statistics.median(times), report.bytes


def run(directory: Path, repeat: int) -> bool:
    valid = directory / "chat-200mb.jsonl"
    bad = directory / "chat-200mb-bad-line.jsonl"
    started = time.perf_counter()
    size = write_valid_file(valid)
    write_with_bad_line(valid, bad, duplicate_custom_id)
    print(f"file: {LINES:,} lines, {size:,} bytes ({size / MIB:.1f} MB),", end=" ")
    print(
        f"and a copy with line {BAD_LINE:,} bad; generated in {time.perf_counter() - started:.1f} s"
    )

    check_seconds, _ = time_check(valid, repeat)
    pure_rate = size / MIB / check_seconds

    sim_port, web_port = free_port(), free_port()
    sim_root = f"http://127.0.0.1:{sim_port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "OPENAI_", "BATCHWEB_", "DATABASE_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchweb.settings",
            "DATABASE_URL": f"sqlite:///{directory / 'bench.sqlite3'}",
            "DJANGO_SECRET_KEY": "bench-only-not-a-secret-" + "x" * 32,
            "DJANGO_DEBUG": "false",
            "DJANGO_SECURE_COOKIES": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": f"{sim_root}/v1",
            "BATCHWEB_DEMO": "false",
            "BATCHWEB_UPLOAD_DIR": str(directory),
            "LOG_LEVEL": "WARNING",
        }
    )
    processes: list[subprocess.Popen] = []
    tokens: list[str] = []
    logs = (directory / "simulator.log").open("w"), (directory / "gunicorn.log").open("w")
    try:
        processes.append(
            subprocess.Popen(
                [*SIMULATOR, "--port", str(sim_port), "--api-key", API_KEY],
                cwd=ROOT,
                env=env,
                stdout=logs[0],
                stderr=subprocess.STDOUT,
            )
        )
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")  # DEBUG off: manifest storage
        manage(env, "shell", "-c", USER_SCRIPT)
        gunicorn = [sys.executable, "-m", "gunicorn", "batchweb.wsgi"]
        gunicorn += ["--bind", f"127.0.0.1:{web_port}", "--workers", "1", "--threads", "4"]
        gunicorn += ["--timeout", "300", "--no-control-socket"]
        processes.append(
            subprocess.Popen(gunicorn, cwd=ROOT, env=env, stdout=logs[1], stderr=subprocess.STDOUT)
        )
        wait_for(f"{sim_root}/_sim/state", processes[0], "the simulator")
        web = Web(f"http://127.0.0.1:{web_port}", requests.Session())
        wait_for(f"{web.url}/accounts/login/", processes[1], "gunicorn")
        (worker,) = children(processes[1].pid)
        web.sign_in()

        # The bad line, before anything was ever sent.
        reset_peak(worker)
        bad_before = memory_kib(worker)["VmRSS"]
        answer, bad_seconds, token = web.check(bad)
        tokens.append(token)
        bad_growth = (memory_kib(worker)["VmHWM"] - bad_before) / 1024
        page = html.unescape(answer.text)
        listed = re.search(r'<ol class="problem-list">(.*?)</ol>', page, re.S)
        problems = re.findall(r"<li>(.*?)</li>", listed.group(1)) if listed else []
        calls = sim_calls(sim_root)
        bad_ok = (
            answer.status_code == 400
            and len(problems) == 1
            and problems[0].startswith(f"line {BAD_LINE}: ")
            and calls.get("createFile", 0) == calls.get("createBatch", 0) == 0
        )

        # Warm up: every code path of check and confirm runs once on a small file.
        answer, _, token = web.check(SAMPLE)
        tokens.append(token)
        if answer.status_code != 302 or web.confirm(token)[0].status_code != 302:
            raise SystemExit("the warm-up with the sample file did not go through")

        peak_reset = reset_peak(worker)
        rss_before = memory_kib(worker)
        answer, upload_seconds, token = web.check(valid)
        tokens.append(token)
        after_check = memory_kib(worker)
        if answer.status_code != 302:
            raise SystemExit(f"the valid file was not accepted: HTTP {answer.status_code}")
        answer, confirm_seconds, confirm_page = web.confirm(token)
        after_confirm = memory_kib(worker)
        created = (
            answer.status_code == 302
            and "/connections/default/batches/batch_" in answer.headers["Location"]
        )
        summary_ok = f"{LINES:,}" in confirm_page and "gpt-4o-mini" in confirm_page
        unstaged = not list(STAGING.glob(f"{token}-*.jsonl"))
    finally:
        for process in reversed(processes):
            stop(process)
        for log in logs:
            log.close()
        for token in tokens:  # a run that failed half-way leaves nothing behind
            for staged in STAGING.glob(f"{token}-*.jsonl"):
                staged.unlink(missing_ok=True)

    check_growth = (after_check["VmHWM"] - rss_before["VmRSS"]) / 1024
    total_growth = (after_confirm["VmHWM"] - rss_before["VmRSS"]) / 1024
    web_rate = size / MIB / upload_seconds
    rows = [
        ("check_jsonl in process", f"{check_seconds:.2f} s", f"{pure_rate:.0f} MB/s", ""),
        (
            "check POST (upload+check)",
            f"{upload_seconds:.2f} s",
            f"{web_rate:.0f} MB/s",
            f"+{check_growth:.1f} MB",
        ),
        (
            "confirm POST (upload+create)",
            f"{confirm_seconds:.2f} s",
            f"{size / MIB / confirm_seconds:.0f} MB/s",
            f"+{total_growth:.1f} MB (both)",
        ),
        ("one bad line, check POST", f"{bad_seconds:.2f} s", "", f"+{bad_growth:.1f} MB"),
    ]
    print()
    print(f"{'step':<30} {'time':>9} {'rate':>10}  worker peak RSS growth")
    for step, took, rate, growth in rows:
        print(f"{step:<30} {took:>9} {rate:>10}  {growth}")
    print()
    print(
        f"worker RSS before the 200 MB file {rss_before['VmRSS'] / 1024:.1f} MB, peak during"
        f" it {after_confirm['VmHWM'] / 1024:.1f} MB"
        + ("" if peak_reset else " (peak not reset: clear_refs refused; growth overstated)")
    )
    print(f"bad file: {'; '.join(problems) or 'NO PROBLEM LISTED'}")
    print(f"simulator calls after it: {calls}")

    verdicts = [
        (f"check_jsonl >= {MIN_RATE:.0f} MB/s", pure_rate >= MIN_RATE),
        (f"check POST >= {MIN_RATE:.0f} MB/s", web_rate >= MIN_RATE),
        (f"worker peak growth <= {MAX_GROWTH:.0f} MB", total_growth <= MAX_GROWTH),
        ("summary shows 50,000 requests and the model", summary_ok),
        ("batch created, staged file removed", created and unstaged),
        (f"bad file refused naming line {BAD_LINE}, nothing sent", bad_ok),
    ]
    print()
    for name, ok in verdicts:
        print(f"{'ok  ' if ok else 'MISS'} {name}")
    return all(ok for _, ok in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dir", type=Path, help="where to write files (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files (with --dir)")
    parser.add_argument("--repeat", type=int, default=3, help="timed in-process check runs")
    args = parser.parse_args()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=args.dir))
        try:
            ok = run(work, args.repeat)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    else:
        with tempfile.TemporaryDirectory() as directory:
            ok = run(Path(directory), args.repeat)
    if not ok:
        raise SystemExit("a budget was missed or a case did not come out as expected (see above)")


if __name__ == "__main__":
    main()
