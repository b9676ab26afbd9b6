"""Company sign-in end to end: Chromium, batchweb (gunicorn) and a real OpenID provider (the npm
package oidc-provider, tests/oidc/provider.js), all on 127.0.0.1.

The provider's accounts live in a JSON file it reads at every sign-in, so a test changes
someone's groups by rewriting it. batchweb maps batch-admins to Admins, batch-ops to Operators
and batch-viewers to Viewers, and has password sign-in switched off (superusers excepted).

Skipped, with the reason, without node or tests/oidc/node_modules (`npm ci` in tests/oidc) or
Chromium; with BATCHWEB_REQUIRE_E2E=1 (CI) they fail instead.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import (
    BASE_DIR,
    LOGS,
    Problems,
    _new_page,
    _wait_until_serving,
    e2e_required,
    expect,
    finish,
    free_port,
    screenshot,
    start_manage,
    stop,
)

OIDC_DIR = BASE_DIR / "tests" / "oidc"
PROVIDER_NAME = "Test Provider"
CLIENT_ID = "batchweb-e2e"
CLIENT_SECRET = "e2e-client-secret-not-real"
ROLE_MAP = "batch-admins=Admins,batch-ops=Operators,batch-viewers=Viewers"
ACCOUNTS = {
    "ana": {"password": "ana-pw", "email": "ana@example.com", "groups": ["batch-ops", "staff"]},
    "nogroups": {"password": "ng-pw", "email": "ng@example.com"},
    # Issue 19, item 1: mallory types boss's address on her profile before boss's first sign-in.
    "mallory": {"password": "mal-pw", "email": "mallory@example.com", "groups": ["batch-viewers"]},
    "boss": {"password": "boss-pw", "email": "boss@corp.example", "groups": ["batch-admins"]},
}
ROOT_PASSWORD = "root-e2e-pw-1"
LOCAL_SCRIPT = f"""
from django.contrib.auth.models import Group, User
User.objects.create_superuser("root", "root@example.com", {ROOT_PASSWORD!r})
lee = User.objects.create_user("lee", "lee@example.com", "lee-e2e-pw-1")
lee.groups.add(Group.objects.get(name="Viewers"))
"""


def oidc_missing_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed; company sign-in browser tests skipped"
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        return "tests/oidc/node_modules is missing (run `npm ci` in tests/oidc); company sign-in browser tests skipped"  # noqa: E501
    return None


MISSING = oidc_missing_reason()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(MISSING is not None and not e2e_required(), reason=str(MISSING)),
]


@dataclass
class OidcSite:
    url: str
    issuer: str
    database: Path
    accounts: Path

    def set_groups(self, username: str, groups: list[str] | None) -> None:
        accounts = json.loads(self.accounts.read_text())
        if groups is None:
            accounts[username].pop("groups", None)
        else:
            accounts[username]["groups"] = groups
        self.accounts.write_text(json.dumps(accounts))

    def events(self) -> list[tuple[str, str, str, str]]:
        """The audit trail, oldest first: (action, username, outcome, detail)."""
        with sqlite3.connect(self.database) as db:
            rows = db.execute(
                "SELECT action, username, outcome, detail FROM batches_event ORDER BY id"
            )
            return list(rows)

    def email_of(self, username: str) -> str | None:
        with sqlite3.connect(self.database) as db:
            row = db.execute("SELECT email FROM auth_user WHERE username = ?", (username,))
            found = row.fetchone()
            return found[0] if found else None

    def groups_of(self, username: str) -> list[str]:
        with sqlite3.connect(self.database) as db:
            rows = db.execute(
                "SELECT g.name FROM auth_group g JOIN auth_user_groups ug ON ug.group_id = g.id "
                "JOIN auth_user u ON u.id = ug.user_id WHERE u.username = ? ORDER BY g.name",
                (username,),
            )
            return [name for (name,) in rows]


@pytest.fixture(scope="module")
def oidc_site(
    web_server: Any, server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OidcSite]:
    """The provider and a batchweb of its own (one gunicorn, its own SQLite file) that uses it.
    `web_server` is asked for only for its collected static files."""
    if MISSING is not None:  # only with BATCHWEB_REQUIRE_E2E=1: skipped otherwise
        pytest.fail(f"BATCHWEB_REQUIRE_E2E=1 but the company sign-in tests cannot run: {MISSING}")
    tmp = tmp_path_factory.mktemp("oidc")
    accounts = tmp / "accounts.json"
    accounts.write_text(json.dumps(ACCOUNTS))
    url = f"http://127.0.0.1:{free_port()}"
    LOGS.mkdir(parents=True, exist_ok=True)
    provider_log = (LOGS / "oidc-provider.log").open("w")
    command = ["node", "provider.js", "--port", "0", "--client-id", CLIENT_ID]
    command += ["--client-secret", CLIENT_SECRET, "--redirect-uri", f"{url}/oidc/callback/"]
    command += ["--post-logout-uri", f"{url}/accounts/login/", "--accounts", str(accounts)]
    provider = subprocess.Popen(
        command,
        cwd=OIDC_DIR,
        stdout=subprocess.PIPE,
        stderr=provider_log,
        text=True,
    )
    processes = [provider]
    try:
        line = provider.stdout.readline() if provider.stdout else ""
        if not line.startswith("LISTENING "):
            pytest.fail(f"the OpenID provider did not start: {line!r}; see {LOGS}")
        issuer = line.split()[1]
        env = {
            **server_env,
            "DATABASE_URL": f"sqlite:///{tmp / 'oidc.sqlite3'}",
            "BATCHWEB_DATA_DIR": str(tmp / "data"),
            "BATCHWEB_BASE_URL": url,
            "OIDC_ISSUER_URL": issuer,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_PROVIDER_NAME": PROVIDER_NAME,
            "OIDC_ROLE_MAP": ROLE_MAP,
            "OIDC_SCOPES": "openid email profile groups",
            "BATCHWEB_PASSWORD_SIGNIN": "false",
        }
        finish(start_manage(env, "migrate", "--noinput", "-v", "0"), "migrate")
        finish(start_manage(env, "shell", "-c", LOCAL_SCRIPT), "shell (local accounts)")
        log = LOGS / "gunicorn-oidc.log"
        with log.open("w") as out:
            gunicorn = [sys.executable, "-m", "gunicorn", "batchweb.wsgi", "--bind", url[7:]]
            gunicorn += ["--workers", "1", "--threads", "4", "--no-control-socket"]
            gunicorn += ["--access-logfile", "-"]
            processes.append(
                subprocess.Popen(gunicorn, cwd=BASE_DIR, env=env, stdout=out, stderr=out)
            )
            _wait_until_serving(url, processes[-1], log)
            yield OidcSite(url, issuer, tmp / "oidc.sqlite3", accounts)
    finally:
        for process in reversed(processes):
            stop(process)
        provider_log.close()


def _loopback_page(browser: Any, site: OidcSite, problems: Problems) -> Any:
    """A fresh context (no cookies here or at the provider) that can reach only loopback."""
    page = _new_page(browser, site.url, problems)
    loopback = re.compile(r"^(https?://(127\.0\.0\.1|localhost)(:\d+)?/|data:|about:)")
    page.context.route(
        "**/*",
        lambda route: route.continue_() if loopback.match(route.request.url) else route.abort(),
    )
    return page


@pytest.fixture
def page(browser: Any, oidc_site: OidcSite) -> Iterator[Any]:
    """A fresh context (no cookies here or at the provider) that can reach only loopback."""
    problems = Problems()
    page = _loopback_page(browser, oidc_site, problems)
    yield page
    page.context.close()
    assert not problems.items, "\n".join(problems.items)


@pytest.fixture
def second_page(browser: Any, oidc_site: OidcSite) -> Iterator[Any]:
    """Another person's browser, beside `page`."""
    problems = Problems()
    page = _loopback_page(browser, oidc_site, problems)
    yield page
    page.context.close()
    assert not problems.items, "\n".join(problems.items)


def provider_sign_in(page: Any, site: OidcSite, username: str) -> None:
    """From batchweb's sign-in page: the button, the provider's sign-in and consent pages."""
    page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()
    expect(page).to_have_url(re.compile(re.escape(site.issuer) + r"/interaction/"))
    expect(page.get_by_role("heading", name="Sign in to the test provider")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(ACCOUNTS[username]["password"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    if page.url.startswith(site.issuer):  # consent, the first time in this provider session
        expect(page.get_by_role("heading", name=re.compile("Allow"))).to_be_visible()
        page.get_by_role("button", name="Allow").click()
    page.wait_for_load_state()


def test_company_sign_in_maps_groups_to_roles_and_sign_out_ends_the_provider_session(
    page, oidc_site
):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}")).to_be_visible()
    # Passwords are off: the form is folded away for administrators.
    expect(page.get_by_text("Administrators: sign in with a password")).to_be_visible()
    expect(page.get_by_label("Username")).to_be_hidden()
    screenshot(page, "oidc-login")

    page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()
    expect(page.get_by_role("heading", name="Sign in to the test provider")).to_be_visible()
    screenshot(page, "oidc-provider-login")
    page.goto("/")  # back, and through the whole flow
    provider_sign_in(page, oidc_site, "ana")

    expect(page).to_have_url(f"{oidc_site.url}/")
    expect(page.get_by_role("heading", name="Batches", exact=True)).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("ana")
    expect(page.get_by_role("button", name="Sync now")).to_be_visible()  # Operators
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    screenshot(page, "oidc-signed-in-operator")
    assert oidc_site.groups_of("ana") == ["Operators"]
    action, username, outcome, detail = oidc_site.events()[-1]
    assert (action, username, outcome) == ("sign_in", "ana", "ok")
    assert f"with {PROVIDER_NAME}; groups: Operators" in detail

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign out of the test provider?")).to_be_visible()
    screenshot(page, "oidc-provider-sign-out")
    page.get_by_role("button", name="Yes, sign me out").click()
    expect(page).to_have_url(f"{oidc_site.url}/accounts/login/")
    assert oidc_site.events()[-1][:3] == ("sign_out", "ana", "ok")

    # The provider forgot her too: signing in asks for her password again.
    page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()
    expect(page.get_by_role("heading", name="Sign in to the test provider")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))


def test_a_group_change_at_the_provider_applies_at_the_next_sign_in(page, oidc_site):
    oidc_site.set_groups("ana", ["batch-viewers"])
    try:
        page.goto("/accounts/login/")
        provider_sign_in(page, oidc_site, "ana")
        expect(page.get_by_role("heading", name="Batches", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="Sync now")).to_have_count(0)
        assert oidc_site.groups_of("ana") == ["Viewers"]
        response = page.goto("/batches/new/")
        assert response is not None and response.status == 403
    finally:
        oidc_site.set_groups("ana", ACCOUNTS["ana"]["groups"])


def test_a_tampered_id_token_is_refused_and_nobody_is_signed_in(page, oidc_site):
    requests.post(f"{oidc_site.issuer}/_test/tamper", timeout=5).raise_for_status()
    page.goto("/accounts/login/")
    provider_sign_in(page, oidc_site, "ana")

    expect(page).to_have_url(f"{oidc_site.url}/accounts/login/")
    expect(page.get_by_role("status")).to_contain_text(
        f"The answer from {PROVIDER_NAME} could not be verified"
    )
    screenshot(page, "oidc-tampered-token")
    expect(page.get_by_role("navigation", name="Main")).not_to_contain_text("ana")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    action, _, outcome, detail = oidc_site.events()[-1]
    assert (action, outcome) == ("sign_in_failed", "failed")
    assert "ID token refused: bad signature" in detail


def test_no_groups_claim_is_refused_with_the_reason(page, oidc_site):
    page.goto("/accounts/login/")
    provider_sign_in(page, oidc_site, "nogroups")

    expect(page).to_have_url(f"{oidc_site.url}/accounts/login/")
    expect(page.get_by_role("status")).to_contain_text("did not say which groups you are in")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    assert oidc_site.events()[-1][:3] == ("sign_in_failed", "ng@example.com", "failed")


def test_with_passwords_off_only_a_superuser_signs_in_with_one(page, oidc_site):
    page.goto("/accounts/login/")
    page.get_by_text("Administrators: sign in with a password").click()
    page.get_by_label("Username").fill("lee")
    page.get_by_label("Password").fill("lee-e2e-pw-1")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text(
        f"Everyone else signs in with {PROVIDER_NAME}"
    )

    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(ROOT_PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Batches", exact=True)).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("root")


def test_an_address_typed_on_a_profile_does_not_take_over_a_first_company_sign_in(
    page, second_page, oidc_site, mailbox
):
    """Issue 19, item 1, over real HTTP: mallory (any role) types boss's address on her
    profile; boss's first sign-in makes boss an account of their own, with boss's roles, and
    mallory's account gains nothing."""
    page.goto("/accounts/login/")
    provider_sign_in(page, oidc_site, "mallory")
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("mallory")
    page.goto("/profile/")
    page.get_by_label("Email address").fill("boss@corp.example")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("We emailed a link to boss@corp.example")
    expect(page.get_by_label("Email address")).to_have_value("mallory@example.com")
    screenshot(page, "oidc-profile-address-waits")

    boss = second_page
    boss.goto("/accounts/login/")
    provider_sign_in(boss, oidc_site, "boss")

    expect(boss).to_have_url(f"{oidc_site.url}/")
    expect(boss.get_by_role("navigation", name="Main")).to_contain_text("boss")
    expect(boss.get_by_role("navigation", name="Main")).not_to_contain_text("mallory")
    expect(boss.get_by_role("link", name="Admin")).to_be_visible()
    assert oidc_site.groups_of("boss") == ["Admins"]
    assert oidc_site.email_of("boss") == "boss@corp.example"
    assert oidc_site.groups_of("mallory") == ["Viewers"]
    assert oidc_site.email_of("mallory") == "mallory@example.com"
    action, username, outcome, _ = oidc_site.events()[-1]
    assert (action, username, outcome) == ("sign_in", "boss", "ok")
    page.goto("/")  # mallory's own session: still hers, still a Viewer
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("mallory")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    # The only thing the attempt did: the link went to boss's mailbox, not to mallory.
    mail = mailbox.wait_for(
        lambda m: "boss@corp.example" in m.recipients, timeout=10, what="to boss"
    )
    assert "/profile/email/" in mail.body and "mallory" in mail.body
    assert not mailbox.to("mallory@example.com")


def test_a_new_address_counts_once_its_mailed_link_is_opened(page, oidc_site, mailbox):
    page.goto("/accounts/login/")
    provider_sign_in(page, oidc_site, "ana")
    page.goto("/profile/")
    page.get_by_label("Email address").fill("ana.new@example.com")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("We emailed a link to ana.new@example.com")
    assert oidc_site.email_of("ana") == "ana@example.com"

    mail = mailbox.wait_for(
        lambda m: "ana.new@example.com" in m.recipients, timeout=10, what="to ana.new"
    )
    link = re.search(r"http://\S+/profile/email/\S+/", mail.body)
    assert link is not None and link.group(0).startswith(oidc_site.url)
    page.goto(link.group(0))
    expect(page.get_by_role("heading", name="Confirm your email address")).to_be_visible()
    page.get_by_role("button", name="Yes, use ana.new@example.com").click()

    expect(page).to_have_url(re.compile(r"/profile/$"))
    expect(page.get_by_role("status")).to_contain_text(
        "Your email address is now ana.new@example.com"
    )
    expect(page.get_by_label("Email address")).to_have_value("ana.new@example.com")
    assert oidc_site.email_of("ana") == "ana.new@example.com"
    assert [e[:3] for e in oidc_site.events()[-2:]] == [
        ("email_change", "ana", "ok"),
        ("email_verify", "ana", "ok"),
    ]
