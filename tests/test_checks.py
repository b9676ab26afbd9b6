"""System checks on the upstream settings (`batches.apps.check_openai_settings`)."""

from __future__ import annotations

import pytest
from django.core import checks
from django.core.management import call_command

from batches.apps import check_openai_settings

pytestmark = pytest.mark.django_db  # the checks read the connections


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages]


def test_the_test_settings_pass_every_check():
    assert check_openai_settings() == []


def test_it_warns_when_the_key_is_missing(settings):
    settings.OPENAI_API_KEY = ""

    messages = check_openai_settings()

    assert ids(messages) == ["batches.W001"]
    assert messages[0].level == checks.WARNING
    assert messages[0].hint


@pytest.mark.parametrize(
    "base", ["api.openai.com/v1", "ftp://api.openai.com/v1", "", "HTTPS//api.openai.com"]
)
def test_it_refuses_a_base_url_that_is_not_http(settings, base):
    settings.OPENAI_BASE_URL = base

    messages = check_openai_settings()

    assert ids(messages) == ["batches.E001"]
    assert messages[0].level == checks.ERROR
    assert repr(base) in messages[0].msg


@pytest.mark.parametrize(
    "base", ["http://api.openai.com/v1", "http://10.0.0.5:8000/v1", "http://gateway.internal/v1"]
)
def test_it_warns_about_plain_http_to_a_remote_host(settings, base):
    settings.OPENAI_BASE_URL = base

    messages = check_openai_settings()

    assert ids(messages) == ["batches.W002"]
    assert messages[0].level == checks.WARNING


@pytest.mark.parametrize(
    "base",
    [
        "http://localhost:8001/v1",
        "http://127.0.0.1:8001/v1",
        "http://127.1.2.3/v1",
        "http://[::1]:8001/v1",
        "https://api.openai.com/v1",
        "https://example.openai.azure.com/openai/v1",
    ],
)
def test_it_accepts_https_and_plain_http_to_loopback(settings, base):
    settings.OPENAI_BASE_URL = base

    assert check_openai_settings() == []


def test_a_missing_key_and_a_bad_url_are_both_reported(settings):
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = "api.openai.com"

    assert ids(check_openai_settings()) == ["batches.W001", "batches.E001"]


def test_the_check_is_registered_with_django(settings):
    settings.OPENAI_API_KEY = ""

    messages = checks.run_checks(tags=[checks.Tags.compatibility])

    assert "batches.W001" in ids(messages)


def test_the_checks_never_show_the_key(settings, capsys):
    settings.OPENAI_BASE_URL = "http://remote.example/v1"

    call_command("check")

    captured = capsys.readouterr()
    assert "W002" in captured.err + captured.out
    assert settings.OPENAI_API_KEY not in captured.err + captured.out
