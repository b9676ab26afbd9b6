"""The browser-test harness: real processes, a real browser, nothing but 127.0.0.1.

Per session: two simulators of the OpenAI API (in this process), a fresh SQLite database in a
temporary directory, gunicorn serving batchweb, the sync worker (`sync_batches --loop`), four
accounts (admin alice, operator sam, viewer vic, and eve, an operator in the group "EU team")
and one headless Chromium. Per test: a new browser context (1280x900), so cookies never leak
from one test to the next.

Two connections: "OpenAI" (slug default, the first simulator, configured by OPENAI_* as in a
fresh installation) and "Azure EU" (slug azure-eu, the second simulator, in the azure dialect when
the simulator has one, its key in AZURE_EU_API_KEY). Only the group "EU team" may use the second,
so sam and vic see the one-connection pages; alice (a superuser) and eve see both.

Email: an SMTP server (aiosmtpd) on 127.0.0.1 in this process keeps every message it receives
(the `mailbox` fixture); gunicorn and the worker send to it (EMAIL_URL), with links made from
the site's URL (BATCHWEB_BASE_URL). Everyone has an address (sam@example.com, ...), so batches
created through batchweb email their creators when they end: the server accepts them all.

Without Chromium the tests are skipped with the reason; with BATCHWEB_REQUIRE_E2E=1 (CI) they
fail instead. BATCHWEB_CHROMIUM overrides the browser's path (e.g. /nonexistent to try that).
Server and worker logs and screenshots go to test-artifacts/.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from simulator import Simulator as SimulatorEngine
from simulator import SimulatorServer

try:
    from playwright.sync_api import expect
except ImportError:  # the tests are skipped (or fail) with the reason, see missing_reason()
    expect = None

BASE_DIR = Path(__file__).resolve().parents[2]
ARTIFACTS = BASE_DIR / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
LOGS = ARTIFACTS / "logs"

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NO_CHROMIUM = "Chromium is not installed (apt-get install chromium)"
NO_PLAYWRIGHT = "Playwright is not installed (pip install -e '.[dev]')"
NO_AIOSMTPD = "aiosmtpd is not installed (pip install -e '.[dev]')"

API_KEY = "sk-e2e"
PASSWORDS = {
    "alice": "pw-alice-e2e-1",
    "sam": "pw-sam-e2e-1",
    "vic": "pw-vic-e2e-1",
    "eve": "pw-eve-e2e-1",
}
# The second connection. Its key differs from the first's, so a call sent to the wrong simulator
# fails with 401 instead of passing unnoticed.
EU_NAME = "Azure EU"
EU_SLUG = "azure-eu"
EU_GROUP = "EU team"
EU_KEY_ENV = "AZURE_EU_API_KEY"
EU_API_KEY = "sk-e2e-azure-eu"
# Azure's dialect once the simulator speaks it (`Simulator(dialect=...)`), else OpenAI's.
EU_DIALECT = (
    "azure" if "dialect" in inspect.signature(SimulatorEngine.__init__).parameters else "openai"
)
# The simulator's clock runs this far behind the real one, so that advancing it during the
# session never gives batches creation times in the future ("created in 8 s").
SIM_CLOCK_LAG = 60.0
WAIT_READY = 30.0  # seconds for gunicorn to answer
DEFAULT_TIMEOUT_MS = 10_000  # any single browser action (expectations wait up to 5 s)

USERS_SCRIPT = """
from django.contrib.auth.models import Group, User
alice = User.objects.create_superuser("alice", "alice@example.com", {alice!r})
sam = User.objects.create_user("sam", "sam@example.com", {sam!r})
sam.groups.add(Group.objects.get(name="Operators"))
vic = User.objects.create_user("vic", "vic@example.com", {vic!r})
vic.groups.add(Group.objects.get(name="Viewers"))
eve = User.objects.create_user("eve", "eve@example.com", {eve!r})
eve.groups.add(Group.objects.get(name="Operators"), Group.objects.create(name={group!r}))

# A signed-in session for each, so tests that are not about signing in skip the form (and the
# deliberately slow password hash).
import json
from django.conf import settings
from django.test import Client
sessions = {{}}
for user in (alice, sam, vic, eve):
    client = Client()
    client.force_login(user)
    sessions[user.username] = client.cookies[settings.SESSION_COOKIE_NAME].value
print("SESSIONS=" + json.dumps(sessions))
""".format(**PASSWORDS, group=EU_GROUP)


# --- Skipping (or failing) without a browser --------------------------------------------------


def chromium_path() -> str | None:
    """The browser to drive: $BATCHWEB_CHROMIUM if set, else /usr/bin/chromium or `chromium`."""
    override = os.environ.get("BATCHWEB_CHROMIUM")
    candidates = [override] if override else [DEFAULT_CHROMIUM, shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_reason() -> str | None:
    if chromium_path() is None:
        return NO_CHROMIUM
    if importlib.util.find_spec("playwright") is None:
        return NO_PLAYWRIGHT
    if importlib.util.find_spec("aiosmtpd") is None:
        return NO_AIOSMTPD
    return None


def e2e_required() -> bool:
    return os.environ.get("BATCHWEB_REQUIRE_E2E", "") not in ("", "0", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = missing_reason()
    if reason is None or e2e_required():
        return  # with BATCHWEB_REQUIRE_E2E=1 the `browser` fixture fails each test instead
    here = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("e2e") and here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.skip(reason=f"{reason}; browser tests skipped"))


# --- Processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_manage(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen, what: str, timeout: float = 60) -> str:
    """Wait for a `manage.py` command and return its output; fail the session if it failed."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    if process.returncode:
        pytest.fail(f"manage.py {what} failed ({process.returncode}):\n{output[-4000:]}")
    return output


def wait_for_import(env: dict[str, str], ids: list[str], timeout: float = 60) -> None:
    """Wait until the worker has cached every batch in `ids` (seeded into a simulator)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = finish(
            start_manage(
                env,
                "shell",
                "-c",
                "from batches.models import Batch; "
                f"print(Batch.objects.filter(openai_id__in={ids!r}).count())",
            ),
            "shell (are the batches imported?)",
        )
        if output.strip().endswith(str(len(ids))):
            return
        time.sleep(1)
    pytest.fail(f"the worker did not import the seeded batches within {timeout:.0f} s")


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class Simulator:
    """The simulator, with the calls the tests make: its control API and its /v1 API."""

    server: SimulatorServer
    api_key: str = API_KEY
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def control(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.post(f"{self.server.root_url}/_sim/{path}", json=payload, timeout=10)
        response.raise_for_status()
        return response.json()

    def advance(self, seconds: float) -> None:
        self.control("advance", {"seconds": seconds})

    def faults(self, **switches: Any) -> None:
        self.control("faults", switches)

    def seed(self, count: int, status: str, **options: Any) -> dict[str, Any]:
        return self.control("seed", {"count": count, "status": status, **options})

    def calls(self) -> dict[str, int]:
        """The call counts per operationId since the session started."""
        response = self.http.get(f"{self.server.root_url}/_sim/state", timeout=10)
        response.raise_for_status()
        return response.json()["calls"]

    def api(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(
            method,
            f"{self.base_url}{path}",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
            **kwargs,
        )
        response.raise_for_status()
        return response.json()

    def upload(self, content: str, filename: str = "e2e.jsonl") -> str:
        """Upload a JSONL file with purpose `batch` through the Files API; return its id."""
        files = {"file": (filename, content.encode(), "application/jsonl")}
        return self.api("POST", "/files", data={"purpose": "batch"}, files=files)["id"]


def _serve_simulator(api_key: str, **options: Any) -> SimulatorServer:
    return SimulatorServer(
        host="127.0.0.1",
        port=0,
        speed=1,
        api_key=api_key,
        clock=lambda: time.time() - SIM_CLOCK_LAG,
        **options,
    )


@pytest.fixture(scope="session")
def sim() -> Iterator[Simulator]:
    """The upstream of the default connection ("OpenAI")."""
    with _serve_simulator(API_KEY) as server:
        yield Simulator(server)


@pytest.fixture(scope="session")
def sim_eu() -> Iterator[Simulator]:
    """The upstream of the second connection ("Azure EU"), in EU_DIALECT."""
    options = {"dialect": EU_DIALECT} if EU_DIALECT != "openai" else {}
    with _serve_simulator(EU_API_KEY, **options) as server:
        yield Simulator(server, api_key=EU_API_KEY)


# --- Email ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """One message as the SMTP server received it."""

    sender: str  # MAIL FROM
    recipients: tuple[str, ...]  # RCPT TO
    message: email.message.EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def body(self) -> str:
        """The plain-text body, its lines ended by "\\n" (SMTP carries "\\r\\n")."""
        part = self.message.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
        return text.replace("\r\n", "\n")

    def __str__(self) -> str:
        return f"to {', '.join(self.recipients)}: {self.subject!r}"


class Mailbox:
    """The SMTP server's handler: keeps every message, in the order received. The server runs
    in its own thread; the tests read and wait from theirs."""

    def __init__(self) -> None:
        self._mails: list[Mail] = []
        self._changed = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd calls this once a message is received in full."""
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        mail = Mail(str(envelope.mail_from), tuple(envelope.rcpt_tos), message)
        with self._changed:
            self._mails.append(mail)
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def all(self) -> list[Mail]:
        with self._changed:
            return list(self._mails)

    def to(self, address: str) -> list[Mail]:
        """The messages sent to ADDRESS so far."""
        return [m for m in self.all() if address.lower() in (r.lower() for r in m.recipients)]

    def wait_for(self, match: Callable[[Mail], bool], *, timeout: float, what: str) -> Mail:
        """The first message (received already or within TIMEOUT seconds) that MATCHes; else
        fail, listing what did arrive."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for mail in self._mails:
                    if match(mail):
                        return mail
                left = deadline - time.monotonic()
                if left <= 0:
                    received = "\n".join(f"  {m}" for m in self._mails) or "  nothing"
                    pytest.fail(f"no email {what} within {timeout:.0f} s; received:\n{received}")
                self._changed.wait(left)


@dataclass
class SmtpServer:
    url: str  # EMAIL_URL, e.g. smtp://127.0.0.1:40123
    mailbox: Mailbox


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback for the whole session (no TLS, no sign-in)."""
    if missing_reason() == NO_AIOSMTPD:
        if e2e_required():
            pytest.fail(f"BATCHWEB_REQUIRE_E2E=1 but the browser tests cannot run: {NO_AIOSMTPD}")
        pytest.skip(f"{NO_AIOSMTPD}; browser tests skipped")
    from aiosmtpd.controller import Controller

    # aiosmtpd logs every SMTP command at INFO: a failed test's report would be mostly that.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpServer(url=f"smtp://127.0.0.1:{controller.port}", mailbox=mailbox)
    finally:
        controller.stop()


@pytest.fixture
def mailbox(smtp_server: SmtpServer) -> Mailbox:
    """Every email batchweb sent during the session (not only this test's)."""
    return smtp_server.mailbox


# --- batchweb ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def site_url() -> str:
    """Where gunicorn will listen (chosen before it starts: the emails' links need it)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def server_env(
    sim: Simulator,
    sim_eu: Simulator,
    smtp_server: SmtpServer,
    site_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The environment of every batchweb process: always a fresh SQLite file, whatever the
    outer DATABASE_URL says, the simulators as upstreams (the second one's key in the
    variable its connection names), and the session's SMTP server for email, whatever the
    outer EMAIL_URL says."""
    tmp = tmp_path_factory.mktemp("e2e")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "OPENAI_", "BATCHWEB_", "DATABASE_", "EMAIL_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchweb.settings",
            "DATABASE_URL": f"sqlite:///{tmp / 'e2e.sqlite3'}",
            "DJANGO_SECRET_KEY": "e2e-only-not-a-secret-" + "x" * 32,
            "DJANGO_DEBUG": "false",
            "DJANGO_SECURE_COOKIES": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CSRF_TRUSTED_ORIGINS": "",
            "DJANGO_BEHIND_PROXY": "false",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": sim.base_url,
            "OPENAI_ORG_ID": "",
            "OPENAI_PROJECT_ID": "",
            EU_KEY_ENV: EU_API_KEY,
            "BATCHWEB_DEMO": "false",
            "OIDC_ISSUER_URL": "",  # password sign-in only (tests/e2e/test_oidc.py has its own)
            "BATCHWEB_PASSWORD_SIGNIN": "true",
            "BATCHWEB_SYNC_INTERVAL": "1",
            "BATCHWEB_UPLOAD_DIR": str(tmp),
            "BATCHWEB_DATA_DIR": str(tmp / "data"),
            "BATCHWEB_LIVE_POLL_SECONDS": "1",
            # An open batch page asks the worker for a refresh every second, not every five.
            "BATCHWEB_DETAIL_REFRESH_SECONDS": "1",
            "BATCHWEB_BASE_URL": site_url,
            "EMAIL_URL": smtp_server.url,
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class Site:
    url: str
    sessions: dict[str, str]  # username -> session key of a signed-in session


def connection_add_args(sim_eu: Simulator) -> list[str]:
    """`manage.py connection_add` for the second connection (the key by variable name only)."""
    args = ["connection_add", "--name", EU_NAME, "--slug", EU_SLUG]
    args += ["--base-url", sim_eu.base_url, "--dialect", EU_DIALECT, "--key-env", EU_KEY_ENV]
    return [*args, "--group", EU_GROUP]


@pytest.fixture(scope="session")
def web_server(server_env: dict[str, str], sim_eu: Simulator, site_url: str) -> Iterator[Site]:
    """gunicorn and the sync worker on a migrated database with four accounts and two
    connections."""
    LOGS.mkdir(parents=True, exist_ok=True)
    url = site_url
    port = int(url.rsplit(":", 1)[1])
    web_log = LOGS / "gunicorn.log"
    worker_log = LOGS / "sync_worker.log"
    helpers: list[subprocess.Popen] = []
    processes: list[subprocess.Popen] = []
    with web_log.open("w") as web_out, worker_log.open("w") as worker_out:
        try:
            # STATIC_ROOT is fixed in settings (staticfiles/, git-ignored); the manifest storage
            # used with DEBUG off needs the collected files. Collected while migrating.
            helpers.append(start_manage(server_env, "collectstatic", "--noinput", "-v", "0"))
            finish(start_manage(server_env, "migrate", "--noinput", "-v", "0"), "migrate")
            helpers.append(start_manage(server_env, "shell", "-c", USERS_SCRIPT))
            gunicorn = [sys.executable, "-m", "gunicorn", "batchweb.wsgi"]
            gunicorn += ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "2"]
            gunicorn += ["--timeout", "30", "--graceful-timeout", "3", "--access-logfile", "-"]
            if _version("gunicorn") >= (27,):
                # Not the per-user control socket in ~/.gunicorn/ that other instances share.
                gunicorn.append("--no-control-socket")
            processes.append(
                subprocess.Popen(
                    gunicorn, cwd=BASE_DIR, env=server_env, stdout=web_out, stderr=subprocess.STDOUT
                )
            )
            output = finish(helpers[1], "shell (creating accounts)")
            sessions = json.loads(output.split("SESSIONS=", 1)[1])
            # After the accounts (it names their group), before the worker (which looks for new
            # connections only every 30 s).
            finish(start_manage(server_env, *connection_add_args(sim_eu)), "connection_add")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "sync_batches", "--loop", "--interval", "1"],
                    cwd=BASE_DIR,
                    env=server_env,
                    stdout=worker_out,
                    stderr=subprocess.STDOUT,
                )
            )
            finish(helpers[0], "collectstatic")
            _wait_until_serving(url, processes[0], web_log)
            yield Site(url=url, sessions=sessions)
        finally:
            for process in helpers + processes:
                stop(process)
        for process, log in zip(processes, (web_log, worker_log), strict=False):
            if process.returncode not in (0, -15):
                print(f"{process.args[1:4]} ended with {process.returncode}:\n{tail(log)}")


def _version(package: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", importlib.metadata.version(package))
    return tuple(int(n) for n in numbers[:3])


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT_READY
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with code {process.returncode}:\n{tail(log)}")
        try:
            if requests.get(f"{url}/accounts/login/", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer on {url} within {WAIT_READY:.0f} s:\n{tail(log)}")


# --- The browser ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = missing_reason()
    if reason is not None:
        if e2e_required():
            pytest.fail(f"BATCHWEB_REQUIRE_E2E=1 but the browser tests cannot run: {reason}")
        pytest.skip(f"{reason}; browser tests skipped")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Problems:
    """What went wrong in the page without failing an assertion: script errors, and static
    files (CSS, JS) that did not load."""

    items: list[str] = field(default_factory=list)


def _new_page(browser: Any, base_url: str, problems: Problems, **options: Any) -> Any:
    context = browser.new_context(
        base_url=base_url,
        viewport=options.pop("viewport", {"width": 1280, "height": 900}),
        color_scheme=options.pop("color_scheme", None),  # "dark": prefers-color-scheme
    )
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.items.append(f"script error: {error}"))

    def check_static(response: Any) -> None:
        if "/static/" in response.url and response.status >= 400:
            problems.items.append(f"{response.status} {response.url}")

    page.on("response", check_static)
    return page


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def new_page(
    browser: Any, web_server: Site, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Any]]:
    """Open pages in fresh contexts: `new_page()` or `new_page(viewport={...})`. At the end,
    fail if a page had a script error or a missing static file; after a failed test, keep a
    screenshot of each page as FAILED-<test>-<n>.png."""
    problems = Problems()
    pages: list[Any] = []

    def make(**options: Any) -> Any:
        page = _new_page(browser, web_server.url, problems, **options)
        pages.append(page)
        return page

    yield make
    failed = request.node.stash.get(_CALL_FAILED, False)
    for number, page in enumerate(pages, 1):
        if failed and not page.is_closed():
            try:
                screenshot(page, f"FAILED-{request.node.name}-{number}")
            except Exception as error:  # a screenshot must not hide the failure
                print(f"no screenshot of the failed page: {error}")
        page.context.close()
    if failed:
        print(f"Server and worker logs: {LOGS}")
    assert not problems.items, "\n".join(problems.items)


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    """A signed-out page in its own context."""
    return new_page()


@pytest.fixture
def page_as(new_page: Callable[..., Any], web_server: Site) -> Callable[..., Any]:
    """`page_as("sam")`: a page in a fresh context, signed in as that person. The sessions are
    shared by the whole run: a test that signs out must sign in through the form instead."""

    def make(username: str, **options: Any) -> Any:
        page = new_page(**options)
        page.context.add_cookies(
            [{"name": "sessionid", "value": web_server.sessions[username], "url": web_server.url}]
        )
        return page

    return make


def sign_in(page: Any, username: str, password: str | None = None) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password or PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def screenshot(page: Any, name: str) -> Path:
    """A full-page PNG in test-artifacts/screenshots/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def shot() -> Callable[[Any, str], Path]:
    return screenshot
