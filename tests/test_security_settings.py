"""Headers and settings a security review looks at (issue 13, item 2): the Content-Security-
Policy and its friends on every page, no inline script or style to need 'unsafe-inline',
`check --deploy` clean with HTTPS on, no start without a real secret key, and a refused form
over plain HTTP explained rather than a bare 403."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.test import Client, override_settings

from batches.apps import check_plain_http_sign_in
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def pages(batch) -> list[str]:
    slug = batch.connection.slug
    return [
        "/",
        f"/connections/{slug}/batches/{batch.openai_id}/",
        "/batches/new/",
        "/activity/",
        "/spend/",
        "/profile/",
        "/connections/",
        f"/connections/{slug}/",
    ]


def test_every_page_sends_the_policy_headers(admin_client):
    batch = batch_upsert(payload=make_batch(id="batch_headers", status="completed")).batch
    for url in [*pages(batch), "/accounts/login/"]:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        for directive in ("script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
            assert directive in policy, (url, directive)
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"
        assert "camera=()" in response["Permissions-Policy"]
        assert response["X-Content-Type-Options"] == "nosniff"


def test_no_page_needs_inline_script_or_style(admin_client):
    batch = batch_upsert(
        payload=make_batch(
            id="batch_inline",
            status="in_progress",
            request_counts={"total": 10, "completed": 4, "failed": 1},
        )
    ).batch
    for url in [*pages(batch), "/accounts/login/"]:
        html = admin_client.get(url).content.decode()
        assert not re.search(r"\sstyle=", html), url
        assert "<style" not in html, url
        # Every script is a file: no inline code, no event-handler attributes.
        assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), url
        assert not re.search(r"\son[a-z]+=", html), url
    # htmx would inject its indicator style: switched off in its config.
    assert '"includeIndicatorStyles": false' in admin_client.get("/").content.decode()


def test_a_form_refused_over_plain_http_says_which_setting_fixes_it(db):
    browser = Client(enforce_csrf_checks=True)
    with override_settings(CSRF_COOKIE_SECURE=True, SESSION_COOKIE_SECURE=True):
        browser.get("/accounts/login/")
        browser.cookies.clear()  # the browser kept no Secure cookie over http
        response = browser.post("/accounts/login/", {"username": "a", "password": "b"})
    assert response.status_code == 403
    page = response.content.decode()
    assert "plain <strong>http://</strong>" in page
    assert "DJANGO_SECURE_COOKIES=false" in page and "DJANGO_BEHIND_PROXY=true" in page


def test_a_form_from_an_untrusted_address_names_the_setting(db):
    browser = Client(enforce_csrf_checks=True)
    with override_settings(CSRF_COOKIE_SECURE=False):
        token = browser.get("/accounts/login/").cookies["csrftoken"].value
        response = browser.post(
            "/accounts/login/",
            {"username": "a", "password": "b", "csrfmiddlewaretoken": token},
            headers={"Origin": "https://evil.example"},
        )
    assert response.status_code == 403
    page = response.content.decode()
    assert "CSRF_TRUSTED_ORIGINS" in page and "https://evil.example" in page


def test_an_expired_form_says_reload(db):
    browser = Client(enforce_csrf_checks=True)
    with override_settings(CSRF_COOKIE_SECURE=False):
        browser.get("/accounts/login/")
        response = browser.post(
            "/accounts/login/",
            {"username": "a", "password": "b", "csrfmiddlewaretoken": "x" * 64},
        )
    assert response.status_code == 403
    assert "Reload the page" in response.content.decode()


def test_a_check_warns_of_secure_cookies_without_https():
    with override_settings(
        DEBUG=False,
        CSRF_COOKIE_SECURE=True,
        SECURE_SSL_REDIRECT=False,
        SECURE_PROXY_SSL_HEADER=None,
    ):
        found = check_plain_http_sign_in()
    assert [m.id for m in found] == ["batches.W010"]
    assert found[0].level == checks.WARNING and "DJANGO_SECURE_COOKIES=false" in found[0].hint
    with override_settings(DEBUG=False, CSRF_COOKIE_SECURE=True, SECURE_SSL_REDIRECT=True):
        assert check_plain_http_sign_in() == []
    with override_settings(
        DEBUG=False,
        CSRF_COOKIE_SECURE=True,
        SECURE_SSL_REDIRECT=False,
        SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    ):
        assert check_plain_http_sign_in() == []
    with override_settings(DEBUG=False, CSRF_COOKIE_SECURE=False):
        assert check_plain_http_sign_in() == []


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "OPENAI_", "BATCHWEB_", "DATABASE_", "OIDC_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchweb.settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "k3y-" + "".join(chr(97 + (i * 7) % 26) for i in range(60)),
            "DJANGO_ALLOWED_HOSTS": "batchweb.example.com",
            "BATCHWEB_DATA_DIR": str(tmp_path),
            "OPENAI_API_KEY": "sk-deploy-check",
        }
    )
    env.update(extra)
    return env


def test_check_deploy_reports_only_the_preload_choice_with_https_on(tmp_path):
    env = production_env(tmp_path, DJANGO_HTTPS="true")
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    found = set(re.findall(r"\(([a-z_]+\.[WE]\d+)\)", output))
    assert found == {"security.W021"}, output  # HSTS preload: a choice left to the operator


def test_without_https_the_deploy_check_says_what_is_missing(tmp_path):
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert "batches.W010" in output and "security.W008" in output  # no SSL redirect


@pytest.mark.parametrize(
    "key,words",
    [
        ("", "DJANGO_SECRET_KEY is not set"),
        ("short", "too weak"),
        ("django-insecure-" + "a1b2c3d4" * 6, "too weak"),
        ("x" * 60, "too weak"),
    ],
)
def test_production_refuses_to_start_without_a_real_secret_key(tmp_path, key, words):
    env = production_env(tmp_path, DJANGO_SECRET_KEY=key)
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert words in done.stderr
    assert key[:20] not in done.stderr or not key  # the key itself is never printed
