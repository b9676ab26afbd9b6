"""No secret leaves batchweb (issue 13, item 3).

Distinctive values are planted everywhere batchweb holds a secret, the main flows are driven
through the Django test client and the services (upstream, the company's sign-in provider and
the team channel faked with `responses`, email through the locmem backend), and every text they
produce is searched for every secret and for any 8 characters in a row of it (so the key
without its "sk-" prefix, its middle, or a prefix echoed by upstream are caught too; the last
four characters alone, as "…WXYZ", are allowed).

What is searched: response bodies (streamed ones read to the end) and headers and cookies
(the session cookie's own Set-Cookie aside), every log record of every logger at DEBUG (message
with its arguments, exception text, extra fields), warnings, stdout/stderr of the commands,
outgoing requests (URL, headers and body; not the key header sent to upstream, not the client
secret sent to the provider's token endpoint, not the URL of the team channel, whose path is
its secret: those are where the secrets are meant to go), emails (subject, bodies, headers),
and the rows that hold words for people: the audit trail, the notification outbox, sync state,
webhook deliveries, Django's admin log. (SQL is logged by Django only with DEBUG on, which
tests run without: query parameters, such as the session key, are not searched.)

Secrets planted: the default connection's key (OPENAI_API_KEY), a key stored encrypted on a
second connection, a key read from an environment variable by a third, a key typed into a
refused admin form, the encryption key itself, OPENAI_WEBHOOK_SECRET and a connection's stored
webhook secret, a team channel's URL (its path) and signing secret, the SMTP password of
EMAIL_URL, a personal API token (shown once, in the answer that makes it, and nowhere else) and
a refused one, the OIDC client secret, Django's SECRET_KEY and the session ids.

Flows: 11 (the dashboard's pages with results, downloads and CSV exports, activity, spend,
profile and connections; create → confirm → create; a failing upstream that echoes the key,
partly as OpenAI does and wholly, through the connection test, a cancel, "Sync now" and the
worker; the 403/404 pages; a personal API token; the /v1/ API with it and with a refused one;
the admin site; notification delivery by email and to two team channels, one unreachable; the
webhook receiver, signed well and badly; the sync worker and `manage.py check`; company sign-in,
accepted and refused by the provider). On the last run: 95 responses, 221 log records, 36
outgoing requests, 1 email, 19 audit entries, 1,689 texts and about 2 MB searched, in ~15 s.

Leaks it found, fixed where they were made: upstream's "Incorrect API key provided:
sk-abc12****…wxyz" kept the key's start in messages, the audit trail, sync state and the
worker's output (batches/openai_client.py `_redact` removed the whole key only); and Django's
template engine logs a page's whole context at DEBUG when a lookup fails, which put a new API
token in the log (api/token_views.py hands the page a string whose repr hides it).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import responses
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from api.models import ApiToken
from batches.models import (
    Batch,
    Channel,
    Connection,
    Event,
    Outbox,
    PriceOverride,
    SyncState,
    WebhookDelivery,
    default_connection,
)
from batches.openai_client import AuthError, ClientConfig, _error_from_response
from batches.services import signin
from batches.services.batches import batch_upsert
from batches.services.notifications import notifications_deliver
from tests.conftest import make_batch, make_list
from tests.test_result_files import ERRORS, INPUT, OUTPUT, finished_batch
from tests.test_signin import ISSUER, Provider
from tests.webhook_vectors import event_body, signed_headers

pytestmark = pytest.mark.django_db

API = settings.OPENAI_BASE_URL
RESPONSES_LISTING = re.compile(
    r"- (?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) \S+ "
    r"(?:URL|Method|Body|Headers|Query|Content)[^\n\\]*?does not match"
)
RESEARCH = "https://research.example.test/v1"
ENVKEY = "https://envkey.example.test/v1"
HOOK_HOST = "https://hooks.example.test"
WINDOW = 8  # this many characters in a row of a secret count as a leak

DEFAULT_KEY = "sk-LEAKdflt7Hq2Zr9Xv4Nm8Kp3Wd6Ty1Gs5Bc0JfQWXY"
STORED_KEY = "sk-LEAKstor3Mv8Qz1Tx6Rw4Yk9Pc2Hn7Jd5Bf0LsRSTU"
ENV_KEY = "sk-LEAKenvv5Gt2Nq8Wz4Xr1Hm7Kd3Pc9Jb6Vf0YsMNOP"
ENV_KEY_NAME = "BATCHWEB_TEST_LEAK_KEY"
NEW_ADMIN_KEY = "sk-LEAKadmn8Rt3Wq6Zp1Xv9Km4Hc2Nd7Jb5Gf0TsEFGH"
ENCRYPTION_KEY = base64.urlsafe_b64encode(b"LEAK-fernet-key-for-batchweb-32b").decode()
WEBHOOK_SECRET_RAW = b"LEAKwhDf9Qx2Vt7Kp4Zr8Nm3Jc6Hb1Gs5Ty"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_SECRET_RAW).decode()
STORED_WEBHOOK_RAW = b"LEAKwhRs4Mv8Qz1Tx6Rw4Yk9Pc2Hn7Jd5Bf"
STORED_WEBHOOK_SECRET = "whsec_" + base64.b64encode(STORED_WEBHOOK_RAW).decode()
CHANNEL_PATH = "T0LEAK/B0chanPath/Xq3Zr8Wv2Nm6Kp"
CHANNEL_URL = f"{HOOK_HOST}/services/{CHANNEL_PATH}"
BROKEN_CHANNEL_PATH = "T0LEAK/B0brokenPath/Jd5Hf1Gs7Lc"
BROKEN_CHANNEL_URL = f"{HOOK_HOST}/services/{BROKEN_CHANNEL_PATH}"
CHANNEL_SECRET = "LEAKchSg-5Vb8Nq1Lm4Rz7Kw"
SMTP_PASSWORD = "LEAKsmtp-9fK2mQ7zXc3Vb"
OIDC_SECRET = "LEAKoidc-4Jx8Pq2Wn6Zt3Rv9"
SECRET_KEY = "LEAKdjSk-q7Zp3Kx9Vt2Mw8Rb5Nc4Jd6Hf1Gs0Ly"
REFUSED_TOKEN = "bw_0badf00d_LEAKrefusedTokenSecret4Mx9Qv2Zt7"


def partial_echo(key: str) -> str:
    """How OpenAI answers a wrong key: its start and end, the middle starred."""
    return (
        f"Incorrect API key provided: {key[:8]}{'*' * 24}{key[-4:]}. You can find your API "
        "key at https://platform.openai.com/account/api-keys."
    )


def unauthorized(message: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


# --- Capture ------------------------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
LOGGERS = (
    "",
    "batchweb",
    "batches",
    "api",
    "django",
    "django.request",
    "django.security",
    "django.server",
    "mozilla_django_oidc",
    "axes",
    "requests",
    "urllib3",
)


@pytest.fixture
def records(caplog) -> Iterator[Records]:
    """Every record of every logger, at DEBUG, while the test runs (and pytest's caplog)."""
    handler = Records()
    caplog.set_level(logging.DEBUG)
    saved = []
    for name in LOGGERS:
        log = logging.getLogger(name)
        saved.append((log, log.level, log.disabled))
        log.setLevel(logging.DEBUG)
        log.disabled = False
        if name == "" or not log.propagate:
            log.addHandler(handler)
    try:
        yield handler
    finally:
        for log, level, disabled in saved:
            log.setLevel(level)
            log.disabled = disabled
            log.removeHandler(handler)


@dataclass
class Run:
    """What the flows produced, by where it was seen."""

    upstream: responses.RequestsMock
    texts: list[tuple[str, str]] = field(default_factory=list)
    responses: int = 0
    flows: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    token_answer: str = ""

    def flow(self, name: str) -> None:
        self.flows.append(name)

    def add(self, where: str, text: Any) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        # A request no mock answers makes `responses` (this test's fake upstream, not batchweb)
        # list every registered mock in its error, channel URLs included: that listing is the
        # test's own, so it is left out; the rest of the message is still searched.
        self.texts.append((where, RESPONSES_LISTING.sub("", str(text))))

    def hit(self, client: Client, method: str, url: str, *, expect: int | None = 200, **kw: Any):
        response = getattr(client, method)(url, **kw)
        where = f"{method.upper()} {url} → {response.status_code}"
        if expect is not None:
            assert response.status_code == expect, (where, _body(response)[:2000])
        body = _body(response)
        self.responses += 1
        self.add(f"{where}: body", body)
        for name, value in response.items():
            self.add(f"{where}: header {name}", value)
        for name, morsel in response.cookies.items():
            if name != settings.SESSION_COOKIE_NAME:  # handing out the session is its job
                self.add(f"{where}: cookie {name}", morsel.OutputString())
        response.seen = body
        return response

    def login(self, client: Client, user: Any) -> Client:
        client.force_login(user)
        self.session_ids.append(client.cookies[settings.SESSION_COOKIE_NAME].value)
        return client


def _body(response: Any) -> str:
    if getattr(response, "streaming", False):
        if not hasattr(response, "_read_body"):
            response._read_body = b"".join(response.streaming_content)
        data = response._read_body
    else:
        data = response.content
    return data.decode("utf-8", "replace")


# --- Planting -----------------------------------------------------------------------------------


@pytest.fixture
def planted(settings, monkeypatch) -> None:
    settings.SECRET_KEY = SECRET_KEY
    settings.OPENAI_API_KEY = DEFAULT_KEY
    settings.OPENAI_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.BATCHWEB_ENCRYPTION_KEY = ENCRYPTION_KEY
    settings.EMAIL_URL = f"smtp://batchweb:{SMTP_PASSWORD}@mail.example.test:587"
    settings.EMAIL_HOST_USER = "batchweb"
    settings.EMAIL_HOST_PASSWORD = SMTP_PASSWORD
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.BATCHWEB_BASE_URL = "https://batchweb.example.test"
    settings.BATCHWEB_NOTIFY_WEBHOOK_URL = ""
    settings.OIDC_ISSUER_URL = ISSUER
    settings.OIDC_RP_CLIENT_ID = "batchweb"
    settings.OIDC_RP_CLIENT_SECRET = OIDC_SECRET
    settings.OIDC_ROLE_MAP = "batch-ops=Operators"
    monkeypatch.setenv(ENV_KEY_NAME, ENV_KEY)
    signin.forget_provider_metadata()
    yield
    signin.forget_provider_metadata()


def connections() -> tuple[Connection, Connection, Connection]:
    default = default_connection()
    research = Connection(name="Research", slug="research", base_url=RESEARCH)
    research.set_key(STORED_KEY)
    research.set_webhook_secret(STORED_WEBHOOK_SECRET)
    research.save()
    envkey = Connection(name="Env team", slug="envkey", base_url=ENVKEY, key_env=ENV_KEY_NAME)
    envkey.save()
    return default, research, envkey


def channels() -> tuple[Channel, Channel]:
    made = []
    for name, url in (("Team hook", CHANNEL_URL), ("Broken hook", BROKEN_CHANNEL_URL)):
        channel = Channel(name=name, kind=Channel.Kind.JSON)
        channel.set_url(url)
        channel.set_secret(CHANNEL_SECRET)
        channel.save()
        made.append(channel)
    return made[0], made[1]


# --- Upstream -----------------------------------------------------------------------------------


def fake_upstream(upstream: responses.RequestsMock) -> None:
    """The default connection works; research's key is refused with a partial echo (as OpenAI
    does), envkey's with the whole key (as some compatible servers do)."""
    running = make_batch(id="batch_run1", status="in_progress", metadata={"batchweb_user": "sam"})
    upstream.get(f"{API}/batches", json=make_list([running]))
    upstream.get(f"{API}/batches/batch_run1", json=running)
    upstream.post(
        f"{API}/files",
        json={
            "id": "file-up1",
            "object": "file",
            "bytes": 10,
            "created_at": 1764000000,
            "filename": "in.jsonl",
            "purpose": "batch",
            "status": "processed",
        },
    )
    upstream.add_callback("POST", f"{API}/batches", callback=_echo_create)
    for base, message in (
        (RESEARCH, partial_echo(STORED_KEY)),
        (ENVKEY, f"Incorrect API key provided: {ENV_KEY}."),
    ):
        pattern = re.compile(re.escape(base) + r"/.*")
        for method in ("GET", "POST"):
            upstream.add(
                method,
                pattern,
                status=401,
                json=unauthorized(message),
                headers={"x-request-id": "req_denied"},
            )


def _echo_create(request: Any) -> tuple[int, dict[str, str], str]:
    body = json.loads(request.body)
    payload = make_batch(
        id=f"batch_made{Batch.objects.count()}",
        status="validating",
        in_progress_at=None,
        input_file_id=body["input_file_id"],
        endpoint=body["endpoint"],
        metadata=body.get("metadata"),
    )
    return 200, {"Content-Type": "application/json"}, json.dumps(payload)


# --- The flows ----------------------------------------------------------------------------------


def flow_pages(run: Run, admin: Client, viewer: Client) -> None:
    run.flow("dashboard pages")
    batch = finished_batch()
    files = (
        (batch.input_file_id, INPUT),
        (batch.output_file_id, OUTPUT),
        (batch.error_file_id, ERRORS),
    )
    for file_id, body in files:
        run.upstream.get(
            f"{API}/files/{file_id}/content", body=body, content_type="application/octet-stream"
        )
    args = ["default", batch.openai_id]
    for url in (
        reverse("batch-list"),
        reverse("batch-list") + "?q=batch",
        reverse("batch-rows-live"),
        reverse("batch-export"),
        reverse("batch-detail", args=args),
        reverse("batch-live", args=args),
        reverse("batch-results", args=args),
        reverse("batch-results-csv", args=args),
        reverse("activity"),
        reverse("activity-export"),
        reverse("spend"),
        reverse("spend-export"),
        reverse("profile"),
        reverse("connection-list"),
        reverse("connection-detail", args=["default"]),
        reverse("connection-detail", args=["research"]),
        reverse("connection-detail", args=["envkey"]),
        reverse("batch-create"),
    ):
        run.hit(admin, "get", url)
    for kind in ("input", "output", "error"):
        run.hit(admin, "get", reverse("batch-download", args=[*args, kind]))
    page = run.hit(admin, "get", reverse("batch-results", args=args)).seen
    row = re.search(r'href="[^"]*/results/(\d+)/"', page)
    assert row, "the results table links to one result"
    run.hit(admin, "get", reverse("batch-result", args=[*args, int(row.group(1))]))
    run.hit(viewer, "get", reverse("batch-list"))
    run.hit(viewer, "get", reverse("connection-detail", args=["research"]))


def flow_create(run: Run, admin: Client) -> None:
    run.flow("create → confirm → create")
    form = run.hit(admin, "get", reverse("batch-create")).seen
    token = re.search(r'name="submission_token" value="([^"]+)"', form).group(1)
    line = {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    }
    upload = SimpleUploadedFile("in.jsonl", json.dumps(line).encode() + b"\n")
    data = {
        "input_file": upload,
        "endpoint": "",
        "completion_window": "24h",
        "submission_token": token,
        "connection": "default",
    }
    checked = run.hit(admin, "post", reverse("batch-create"), data=data, expect=302)
    confirm = checked["Location"]
    run.hit(admin, "get", confirm)
    made = run.hit(admin, "post", confirm, expect=302)
    run.hit(admin, "get", made["Location"])


def flow_failing_upstream(run: Run, admin: Client) -> None:
    run.flow("a failing upstream that echoes the key")
    for slug in ("research", "envkey"):
        tested = run.hit(admin, "post", reverse("connection-test", args=[slug]))
        # Upstream's words reach the person, the key in them does not (the search says).
        assert "Incorrect API key provided" in tested.seen
    research = Connection.objects.get(slug="research")
    batch = batch_upsert(
        payload=make_batch(id="batch_res1", status="in_progress"), connection=research
    ).batch
    args = ["research", batch.openai_id]
    run.hit(admin, "post", reverse("batch-cancel", args=args), expect=None)
    page = run.hit(admin, "get", reverse("batch-detail", args=args)).seen
    assert "refused the credentials" in page  # the cancel's message
    run.hit(admin, "post", reverse("batch-sync"), expect=None)
    run.hit(admin, "get", reverse("batch-list"))


def flow_refusals(run: Run, viewer: Client) -> None:
    run.flow("403 and 404 pages")
    run.hit(viewer, "get", reverse("connection-detail", args=["nowhere"]), expect=404)
    run.hit(viewer, "get", reverse("batch-detail", args=["default", "batch_none"]), expect=404)
    run.hit(viewer, "get", reverse("admin:index"), expect=302)
    batch = Batch.objects.get(openai_id="batch_run1")
    run.hit(viewer, "post", reverse("batch-cancel", args=["default", batch.openai_id]), expect=403)
    run.hit(viewer, "get", "/no/such/page/", expect=404)


def flow_admin(run: Run, admin: Client) -> None:
    run.flow("admin site")
    PriceOverride.objects.create(model="gpt-4o-mini", input_per_mtok=1, output_per_mtok=2)
    research = Connection.objects.get(slug="research")
    pages = [reverse("admin:index")]
    for model, objects in (
        ("batches_connection", Connection.objects.all()),
        ("batches_channel", Channel.objects.all()),
        ("api_apitoken", ApiToken.objects.all()),
        ("batches_priceoverride", PriceOverride.objects.all()),
        ("auth_user", get_user_model().objects.all()),
        ("batches_outbox", Outbox.objects.all()),
        ("batches_event", Event.objects.all()[:3]),
        ("batches_webhookdelivery", WebhookDelivery.objects.all()),
    ):
        pages.append(reverse(f"admin:{model}_changelist"))
        if model not in (
            "batches_outbox",
            "batches_event",
            "batches_webhookdelivery",
            "api_apitoken",
        ):
            pages.append(reverse(f"admin:{model}_add"))
        pages += [reverse(f"admin:{model}_change", args=[o.pk]) for o in objects]
    pages.append(reverse("admin:batches_connection_history", args=[research.pk]))
    for url in pages:
        shown = run.hit(admin, "get", url).seen
        if url == reverse("admin:batches_connection_change", args=[research.pk]):
            assert f"…{STORED_KEY[-4:]}" in shown  # the last four, and no more (the search)
    # A refused form is shown again without the key or secrets just typed.
    run.hit(
        admin,
        "post",
        reverse("admin:batches_connection_add"),
        data={
            "name": "",
            "slug": "x",
            "base_url": RESEARCH,
            "dialect": "openai",
            "auth_style": "bearer",
            "api_key": NEW_ADMIN_KEY,
            "webhook_secret": STORED_WEBHOOK_SECRET,
            "allowed_endpoints": "[]",
            "deployments": "{}",
        },
    )
    run.hit(
        admin,
        "post",
        reverse("admin:batches_channel_add"),
        data={
            "name": "",
            "kind": "json",
            "webhook_url": CHANNEL_URL,
            "secret": CHANNEL_SECRET,
        },
    )


def flow_token(run: Run, admin: Client) -> str:
    run.flow("profile: a personal API token")
    made = run.hit(
        admin,
        "post",
        reverse("token-create"),
        data={"name": "script", "scope": "submit", "days": "30"},
    )
    found = re.findall(r"bw_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}", made.seen)
    assert found, "the answer that makes a token shows it"
    run.token_answer = made.seen
    # That one answer is where the token may be: it is left out of the search (and asserted).
    run.texts = [
        (w, t)
        for w, t in run.texts
        if not (w.startswith("POST /profile/tokens/") and w.endswith(": body"))
    ]
    run.hit(admin, "get", reverse("profile"))
    return found[0]


def flow_api(run: Run, token: str) -> None:
    run.flow("/v1/ API")
    api = Client()
    bearer = {"Authorization": f"Bearer {token}"}
    run.hit(api, "get", "/v1/batches", headers=bearer)
    run.hit(api, "get", "/v1/batches/batch_run1", headers=bearer)
    body = {
        "input_file_id": "file-in1",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    run.hit(
        api,
        "post",
        "/v1/batches",
        data=json.dumps(body),
        content_type="application/json",
        headers=bearer,
    )
    run.hit(api, "get", "/v1/files", headers=bearer, expect=None)
    run.hit(api, "get", "/v1/nothing-here", headers=bearer, expect=404)
    run.hit(
        api, "get", "/v1/batches", headers={"Authorization": f"Bearer {REFUSED_TOKEN}"}, expect=401
    )
    run.hit(
        api, "get", "/v1/batches", headers={"Authorization": f"Basic {REFUSED_TOKEN}"}, expect=401
    )
    run.hit(api, "get", "/v1/batches", expect=401)


def flow_notifications(run: Run, submitter: Any) -> None:
    run.flow("notification delivery")
    run.upstream.post(CHANNEL_URL, status=200, body="ok")
    # BROKEN_CHANNEL_URL is left unregistered: the request fails as a refused connection does.
    payload = make_batch(id="batch_note1", status="in_progress", metadata={"batchweb_user": "sam"})
    batch_upsert(payload=payload)
    batch_upsert(
        payload={**payload, "status": "completed", "completed_at": payload["created_at"] + 60}
    )
    assert Outbox.objects.filter(channel=Outbox.Channel.EMAIL).exists()
    result = notifications_deliver(now=timezone.now() + timezone.timedelta(seconds=10))
    run.add("notifications_deliver result", result)
    assert result.sent >= 2, result  # the email and the team channel
    broken = Outbox.objects.get(channel=Outbox.Channel.WEBHOOK, state=Outbox.State.PENDING)
    assert broken.last_error  # its refused connection is described (and searched)


def flow_webhooks(run: Run) -> None:
    run.flow("webhook receiver")
    hook = Client(enforce_csrf_checks=True)
    now = int(time.time())
    for slug, secret, batch_id in (
        ("default", WEBHOOK_SECRET, "batch_run1"),
        ("research", STORED_WEBHOOK_SECRET, "batch_res1"),
    ):
        body = event_body(batch_id)
        url = reverse("openai-webhook", args=[slug])
        headers = {
            f"HTTP_{k.upper().replace('-', '_')}": v
            for k, v in signed_headers(body, secret=secret, timestamp=now).items()
        }
        accepted = run.hit(hook, "post", url, data=body, content_type="application/json", **headers)
        assert accepted.seen  # a JSON answer, searched like every other
        wrong = dict(headers, HTTP_WEBHOOK_SIGNATURE="v1," + base64.b64encode(b"x" * 32).decode())
        run.hit(hook, "post", url, data=body, content_type="application/json", expect=None, **wrong)


def flow_commands(run: Run) -> None:
    run.flow("sync worker and manage.py check")
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("sync_batches", stdout=out, stderr=err)
    except CommandError as error:  # research and envkey fail: their keys are refused
        run.add("sync_batches error", error)
    run.add("sync_batches stdout", out.getvalue())
    run.add("sync_batches stderr", err.getvalue())
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("check", stdout=out, stderr=err)
    except Exception as error:  # a system check error is output too
        run.add("check error", error)
    run.add("check stdout", out.getvalue())
    run.add("check stderr", err.getvalue())


def flow_company_sign_in(run: Run, upstream: responses.RequestsMock) -> None:
    run.flow("company sign-in (OIDC)")
    provider = Provider(upstream)
    person = Client()
    params = provider.start(person)
    info = {
        "sub": "u-1",
        "email": "ana@example.com",
        "preferred_username": "ana",
        "groups": ["batch-ops"],
    }
    provider.answer(provider.id_token(params["nonce"]), info)
    run.hit(
        person,
        "get",
        reverse("oidc-callback"),
        data={"code": "c-1", "state": params["state"]},
        expect=302,
    )
    run.session_ids.append(person.cookies[settings.SESSION_COOKIE_NAME].value)
    run.hit(person, "get", reverse("batch-list"))
    # A provider that refuses the client secret.
    other = Client()
    params = provider.start(other)
    upstream.replace(
        responses.POST,
        f"{ISSUER}/token",
        status=401,
        json={"error": "invalid_client", "error_description": "bad secret"},
    )
    run.hit(
        other,
        "get",
        reverse("oidc-callback"),
        data={"code": "c-2", "state": params["state"]},
        expect=302,
    )
    run.hit(other, "get", reverse("login"))
    run.session_ids.append(other.cookies[settings.SESSION_COOKIE_NAME].value)


# --- The search ---------------------------------------------------------------------------------


def windows(secret: str) -> set[str]:
    return {secret[i : i + WINDOW] for i in range(len(secret) - WINDOW + 1)}


def find_leaks(texts: list[tuple[str, str]], secrets: dict[str, str]) -> list[str]:
    leaks = []
    for name, secret in secrets.items():
        pieces = windows(secret)
        for where, text in texts:
            hits = [piece for piece in pieces if piece in text]
            if hits:
                at = text.find(hits[0])
                leaks.append(f"{name} in {where}: …{text[max(0, at - 80) : at + 80]!r}…")
    return leaks


def log_text(record: logging.LogRecord) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    text = formatter.format(record)
    extra = {k: v for k, v in vars(record).items() if k not in STANDARD}
    return f"{text} {extra!r}" if extra else text


def outgoing(upstream: responses.RequestsMock) -> list[tuple[str, str]]:
    texts = []
    for call in upstream.calls:
        request = call.request
        where = f"outgoing {request.method} {request.url.split('?')[0][:60]}"
        to_channel = request.url.startswith(HOOK_HOST)
        to_token_endpoint = request.url.startswith(f"{ISSUER}/token")
        if not to_channel:
            texts.append((f"{where}: url", request.url))
        for name, value in request.headers.items():
            if name.lower() in ("authorization", "api-key"):
                continue  # the key goes to upstream, the client secret to the provider
            texts.append((f"{where}: header {name}", str(value)))
        body = request.body
        if body is not None and not to_token_endpoint:
            if not isinstance(body, str | bytes):
                body = getattr(body, "to_string", lambda: b"<stream>")()
            texts.append(
                (
                    f"{where}: body",
                    body if isinstance(body, str) else body.decode("utf-8", "replace"),
                )
            )
    return texts


def stored_words() -> list[tuple[str, str]]:
    texts = []
    for model, fields in (
        (Event, ("username", "batch_openai_id", "action", "target", "detail", "request_id")),
        (Outbox, None),
        (SyncState, None),
        (WebhookDelivery, None),
        (LogEntry, ("object_repr", "change_message")),
        (Connection, ("name", "slug", "key_env", "key_last4", "webhook_secret_last4")),
        (Channel, ("name", "url_host")),
        (ApiToken, ("name", "prefix", "secret_sha256")),
    ):
        for row in model.objects.all():
            names = fields or [f.attname for f in model._meta.concrete_fields]
            texts.append(
                (f"{model.__name__} {row.pk}", " | ".join(str(getattr(row, n)) for n in names))
            )
    return texts


def test_no_page_log_message_email_or_audit_entry_reveals_a_secret(
    planted,
    upstream,
    records,
    caplog,
    capfd,
    admin_user,
    submitter,
    viewer,
    tmp_path,
    settings,
    monkeypatch,
):
    settings.DATA_DIR = tmp_path / "data"
    # The worker's minute chores would run or not by how long the suite took so far (they fetch
    # result files this test does not serve until its pages flow): the same run every time.
    monkeypatch.setattr("batches.services.sync.housekeeping_due", lambda connection: False)
    connections()
    channels()
    fake_upstream(upstream)
    submitter.email = "sam@example.com"
    submitter.save()
    run = Run(upstream)
    admin = run.login(Client(), admin_user)
    watcher = run.login(Client(), viewer)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flow_commands(run)  # the first pass fills the cache
        flow_pages(run, admin, watcher)
        flow_create(run, admin)
        flow_failing_upstream(run, admin)
        flow_refusals(run, watcher)
        token = flow_token(run, admin)
        flow_api(run, token)
        flow_notifications(run, submitter)
        flow_webhooks(run)
        flow_commands(run)
        flow_admin(run, admin)
        flow_company_sign_in(run, upstream)

    out, err = capfd.readouterr()
    run.add("stdout", out)
    run.add("stderr", err)
    for warning in caught:
        run.add(
            "warning",
            warnings.formatwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            ),
        )
    for record in records.records:
        run.add(f"log {record.name} {record.levelname}", log_text(record))
    sent = outgoing(upstream)
    run.texts += sent
    for message in mail.outbox:
        run.add(f"email to {message.to}", message.message().as_string())
        for alternative, _ in getattr(message, "alternatives", []):
            run.add(f"email to {message.to} (html)", alternative)
    run.texts += stored_words()

    secrets = {
        "OPENAI_API_KEY": DEFAULT_KEY,
        "stored key": STORED_KEY,
        "key from the environment": ENV_KEY,
        "key typed in the admin": NEW_ADMIN_KEY,
        "BATCHWEB_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "OPENAI_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OPENAI_WEBHOOK_SECRET (raw)": WEBHOOK_SECRET_RAW.decode(),
        "stored webhook secret": STORED_WEBHOOK_SECRET,
        "stored webhook secret (raw)": STORED_WEBHOOK_RAW.decode(),
        "channel URL path": CHANNEL_PATH,
        "broken channel URL path": BROKEN_CHANNEL_PATH,
        "channel signing secret": CHANNEL_SECRET,
        "SMTP password": SMTP_PASSWORD,
        "OIDC client secret": OIDC_SECRET,
        "SECRET_KEY": SECRET_KEY,
        "API token": token.split("_", 2)[2],
        "refused API token": REFUSED_TOKEN.split("_", 2)[2],
    }
    secrets.update({f"session id {i}": sid for i, sid in enumerate(run.session_ids)})

    assert token in run.token_answer  # shown once, in the answer that made it
    # The planted secrets were the live ones: each went where it is meant to go.
    keys = {c.request.headers.get("Authorization") for c in upstream.calls}
    for base, key in ((API, DEFAULT_KEY), (RESEARCH, STORED_KEY), (ENVKEY, ENV_KEY)):
        assert f"Bearer {key}" in keys, base
    to_provider = next(c for c in upstream.calls if c.request.url == f"{ISSUER}/token")
    assert OIDC_SECRET in str(to_provider.request.body)
    assert len(set(run.flows)) >= 11 and run.responses > 80
    assert len(records.records) > 50 and {id(r) for r in caplog.records} <= {
        id(r) for r in records.records
    }
    assert len(mail.outbox) >= 1 and Event.objects.count() > 10
    assert any(w.endswith(": body") and "hooks.example.test" in w for w, _ in sent)
    leaks = find_leaks(run.texts, secrets)
    print(
        f"\nflows {len(set(run.flows))}, responses {run.responses}, log records "
        f"{len(records.records)}, outgoing requests {len(upstream.calls)}, emails "
        f"{len(mail.outbox)}, audit entries {Event.objects.count()}, texts {len(run.texts)}, "
        f"characters {sum(len(t) for _, t in run.texts)}"
    )
    assert not leaks, "\n".join(leaks)


# --- The redaction, on its own ------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        partial_echo(STORED_KEY),
        f"Incorrect API key provided: {STORED_KEY}.",
        f"Incorrect API key provided: {STORED_KEY[3:]}.",
        f"key {STORED_KEY[:10]}...{STORED_KEY[-3:]} is not valid",
    ],
)
def test_an_echoed_key_whole_or_in_part_is_redacted_from_upstreams_message(message):
    config = ClientConfig(api_key=STORED_KEY, base_url=RESEARCH)
    response = _fake_response(401, unauthorized(message))

    error = _error_from_response(response, config)

    assert isinstance(error, AuthError)
    assert not find_leaks([("message", str(error))], {"key": STORED_KEY}), str(error)
    assert "Incorrect API key provided" in str(error) or "is not valid" in str(error)


def _fake_response(status: int, payload: dict[str, Any]) -> Any:
    import requests

    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(payload).encode()
    response.headers["Content-Type"] = "application/json"
    return response
