"""System checks on connections (`batches.apps.check_connection_keys`) and when the missing
OPENAI_API_KEY warning (W001) still matters now that there are connections."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import OperationalError, ProgrammingError

from batches.apps import check_connection_keys, check_openai_settings
from batches.models import Connection, default_connection
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

SECRET = "sk-proj-checks-secret-key-4242"

pytestmark = pytest.mark.django_db


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages]


def stored(name: str = "Research", **fields) -> Connection:
    connection = Connection(
        name=name, slug=name.lower(), base_url="https://gateway.example.test/v1", **fields
    )
    connection.set_key(SECRET)
    connection.save()
    return connection


@pytest.fixture
def encryption_key(settings) -> str:
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()
    return settings.BATCHWEB_ENCRYPTION_KEY


# --- W001: OPENAI_API_KEY, only where the environment's connection is in use ------------------


def test_the_missing_key_warning_stays_while_the_default_connection_is_the_only_one(settings):
    settings.OPENAI_API_KEY = ""
    assert Connection.objects.get().slug == "default"

    assert ids(check_openai_settings()) == ["batches.W001"]


def test_no_missing_key_warning_when_other_connections_do_the_work(settings, encryption_key):
    settings.OPENAI_API_KEY = ""
    stored()

    assert check_openai_settings() == []


def test_the_missing_key_warning_returns_when_the_default_connection_has_batches(
    settings, encryption_key
):
    settings.OPENAI_API_KEY = ""
    stored()
    batch_upsert(payload=make_batch(id="batch_old"), connection=default_connection())

    assert ids(check_openai_settings()) == ["batches.W001"]


def test_no_missing_key_warning_when_the_default_connection_is_disabled(settings):
    settings.OPENAI_API_KEY = ""
    Connection.objects.filter(slug="default").update(enabled=False)

    assert check_openai_settings() == []


def test_no_missing_key_warning_when_the_default_connection_is_gone(settings, encryption_key):
    settings.OPENAI_API_KEY = ""
    Connection.objects.filter(slug="default").delete()
    stored()

    assert check_openai_settings() == []


# --- E002: stored keys without an encryption key ------------------------------------------------


def test_stored_keys_without_an_encryption_key_are_an_error(settings, encryption_key):
    stored("Research")
    stored("Finance", enabled=False)
    settings.BATCHWEB_ENCRYPTION_KEY = ""

    messages = check_connection_keys()

    assert ids(messages) == ["batches.E002"]
    assert messages[0].level == checks.ERROR
    assert "Connections “Finance” and “Research” have an API key stored encrypted" in (
        messages[0].msg
    )
    assert "cannot be read" in messages[0].msg
    assert "BATCHWEB_ENCRYPTION_KEY" in messages[0].hint
    assert SECRET not in messages[0].msg + messages[0].hint


def test_keys_from_the_environment_need_no_encryption_key(settings, monkeypatch):
    settings.BATCHWEB_ENCRYPTION_KEY = ""
    monkeypatch.setenv("RESEARCH_KEY", SECRET)
    Connection.objects.create(
        name="Research", slug="research", base_url="https://x.test/v1", key_env="RESEARCH_KEY"
    )

    assert check_connection_keys() == []


# --- E003: stored keys the configured key cannot decrypt ----------------------------------------


def test_a_changed_encryption_key_is_an_error_naming_the_connection(settings, encryption_key):
    stored("Research")
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()

    messages = check_connection_keys()

    assert ids(messages) == ["batches.E003"]
    assert "“Research”" in messages[0].msg
    assert "cannot be decrypted" in messages[0].msg
    assert "new,old" in messages[0].hint
    assert SECRET not in messages[0].msg + messages[0].hint


def test_rotating_with_new_comma_old_passes(settings, encryption_key):
    stored("Research")
    settings.BATCHWEB_ENCRYPTION_KEY = f"{Fernet.generate_key().decode()},{encryption_key}"

    assert check_connection_keys() == []


def test_readable_stored_keys_pass(encryption_key):
    stored("Research")

    assert check_connection_keys() == []


# --- W003: a key variable that is not set --------------------------------------------------------


def test_an_enabled_connection_whose_key_variable_is_unset_is_a_warning(monkeypatch):
    monkeypatch.delenv("UNSET_RESEARCH_KEY", raising=False)
    Connection.objects.create(
        name="Research", slug="research", base_url="https://x.test/v1", key_env="UNSET_RESEARCH_KEY"
    )
    Connection.objects.create(
        name="Old",
        slug="old",
        base_url="https://x.test/v1",
        key_env="UNSET_RESEARCH_KEY",
        enabled=False,
    )

    messages = check_connection_keys()

    assert ids(messages) == ["batches.W003"]
    assert messages[0].level == checks.WARNING
    assert "“Research”" in messages[0].msg and "UNSET_RESEARCH_KEY" in messages[0].msg
    assert "UNSET_RESEARCH_KEY" in messages[0].hint

    monkeypatch.setenv("UNSET_RESEARCH_KEY", SECRET)
    assert check_connection_keys() == []


# --- Before migrate, and wiring -----------------------------------------------------------------


@pytest.mark.parametrize("error", [OperationalError, ProgrammingError])
def test_no_table_yet_means_no_connection_messages(monkeypatch, settings, error):
    def missing(*args, **kwargs):
        raise error("no such table: batches_connection")

    monkeypatch.setattr("django.db.models.query.QuerySet._fetch_all", missing)
    settings.BATCHWEB_ENCRYPTION_KEY = ""
    settings.OPENAI_API_KEY = ""

    assert check_connection_keys() == []
    assert ids(check_openai_settings()) == ["batches.W001"]  # as before connections


def test_the_connection_checks_run_with_django_and_never_show_a_key(settings, encryption_key):
    stored("Research")
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()

    assert "batches.E003" in ids(checks.run_checks(tags=[checks.Tags.compatibility]))
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemCheckError, match="E003"):
        call_command("check", stdout=out, stderr=err)
    assert SECRET not in out.getvalue() + err.getvalue()
