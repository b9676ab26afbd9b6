"""`manage.py connection_add` and `manage.py connection_test`."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command, execute_from_command_line

from batches.models import AuthStyle, Connection, Dialect
from tests.conftest import make_batch, make_list

SECRET = "sk-proj-command-secret-key-9f3e"
GATEWAY = "https://gateway.example.test/v1"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def encryption_key(settings) -> None:
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()


def run(command: str, *args: str, stdin: str | None = None, monkeypatch=None) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- connection_add --------------------------------------------------------------------------


def test_it_adds_a_connection_whose_key_comes_from_an_environment_variable(monkeypatch):
    monkeypatch.setenv("RESEARCH_KEY", SECRET)

    out, err = run(
        "connection_add",
        "--name",
        "Research lab",
        "--base-url",
        GATEWAY + "/",
        "--key-env",
        "RESEARCH_KEY",
        "--organization",
        "org-1",
        "--project",
        "proj_1",
        "--max-requests",
        "1000",
    )

    connection = Connection.objects.get(slug="research-lab")
    assert connection.name == "Research lab"
    assert connection.base_url == GATEWAY
    assert connection.dialect == Dialect.OPENAI
    assert connection.auth_style == AuthStyle.BEARER
    assert connection.key_env == "RESEARCH_KEY"
    assert connection.key_encrypted == ""
    assert connection.organization == "org-1"
    assert connection.project == "proj_1"
    assert connection.request_limit() == 1000
    assert connection.enabled
    assert connection.api_key() == SECRET
    assert "Added the connection “Research lab” (slug research-lab)" in out
    assert "environment variable RESEARCH_KEY" in out
    assert SECRET not in out + err
    assert err == ""


def test_it_reads_the_key_from_standard_input_and_stores_it_encrypted(monkeypatch):
    out, err = run(
        "connection_add",
        "--name",
        "Azure EU",
        "--slug",
        "azure-eu",
        "--base-url",
        "https://eu.openai.azure.com/openai/v1",
        "--dialect",
        "azure",
        "--key-stdin",
        "--deployment",
        "gpt4o-batch=gpt-4o",
        "--deployment",
        "mini=gpt-4o-mini",
        "--group",
        "Submitters",
        "--disabled",
        stdin=SECRET + "\n",
        monkeypatch=monkeypatch,
    )

    connection = Connection.objects.get(slug="azure-eu")
    assert connection.auth_style == AuthStyle.API_KEY  # the Azure default
    assert SECRET not in connection.key_encrypted
    assert connection.key_last4 == "9f3e"
    assert connection.api_key() == SECRET
    assert connection.deployments == {"gpt4o-batch": "gpt-4o", "mini": "gpt-4o-mini"}
    assert [g.name for g in connection.groups.all()] == ["Submitters"]
    assert not connection.enabled
    assert "stored, encrypted (ends in …9f3e)" in out
    assert "disabled, for Submitters" in out
    assert SECRET not in out + err


def test_an_explicit_auth_style_and_api_version_win(monkeypatch):
    run(
        "connection_add",
        "--name",
        "Azure dated",
        "--base-url",
        "https://res.openai.azure.com",
        "--dialect",
        "azure-legacy",
        "--auth-style",
        "bearer",
        "--api-version",
        "2025-03-01-preview",
        "--key-stdin",
        stdin=SECRET,
        monkeypatch=monkeypatch,
    )

    connection = Connection.objects.get(slug="azure-dated")
    assert connection.auth_style == AuthStyle.BEARER
    assert connection.api_version == "2025-03-01-preview"


def test_the_key_is_never_an_argument():
    with pytest.raises(CommandError):
        call_command("connection_add", "--name", "X", "--base-url", GATEWAY, "--key", SECRET)


def test_a_key_source_is_required():
    with pytest.raises(CommandError, match="--key-env"):
        call_command("connection_add", "--name", "X", "--base-url", GATEWAY)


def test_an_empty_standard_input_is_refused(monkeypatch):
    with pytest.raises(CommandError, match="No key on standard input"):
        run(
            "connection_add",
            "--name",
            "X",
            "--base-url",
            GATEWAY,
            "--key-stdin",
            stdin="\n",
            monkeypatch=monkeypatch,
        )
    assert not Connection.objects.filter(name="X").exists()


def test_without_an_encryption_key_a_stored_key_is_refused_clearly(settings, monkeypatch):
    settings.BATCHWEB_ENCRYPTION_KEY = ""

    with pytest.raises(CommandError, match="BATCHWEB_ENCRYPTION_KEY is not set"):
        run(
            "connection_add",
            "--name",
            "X",
            "--base-url",
            GATEWAY,
            "--key-stdin",
            stdin=SECRET,
            monkeypatch=monkeypatch,
        )
    assert not Connection.objects.filter(name="X").exists()


def test_validation_errors_name_the_fields():
    with pytest.raises(CommandError) as caught:
        call_command(
            "connection_add",
            "--name",
            "Bad",
            "--slug",
            "test",
            "--base-url",
            "gateway.example.test/v1",
            "--key-env",
            "BAD_KEY",
        )

    message = str(caught.value)
    assert "slug: “test” is reserved" in message
    assert "base url: Give a full URL starting with https://." in message
    assert not Connection.objects.filter(name="Bad").exists()


def test_a_malformed_deployment_is_refused():
    with pytest.raises(CommandError, match="NAME=MODEL"):
        call_command(
            "connection_add",
            "--name",
            "Az",
            "--base-url",
            "https://res.openai.azure.com/openai/v1",
            "--dialect",
            "azure",
            "--key-env",
            "AZ_KEY",
            "--deployment",
            "gpt-4o",
        )


def test_an_unknown_group_is_refused_with_the_known_ones():
    with pytest.raises(CommandError, match=r"No group named Researchers.*Submitters"):
        call_command(
            "connection_add",
            "--name",
            "R",
            "--base-url",
            GATEWAY,
            "--key-env",
            "R_KEY",
            "--group",
            "Researchers",
        )


def test_a_duplicate_name_or_slug_is_refused(monkeypatch):
    args = ["--base-url", GATEWAY, "--key-env", "RESEARCH_KEY"]
    call_command("connection_add", "--name", "Research", *args, stdout=io.StringIO())

    with pytest.raises(CommandError, match="A connection named “Research” already exists"):
        call_command("connection_add", "--name", "research", "--slug", "other", *args)
    with pytest.raises(CommandError, match="slug “research” is already used by"):
        call_command("connection_add", "--name", "Research 2", "--slug", "research", *args)
    assert Connection.objects.filter(base_url=GATEWAY).count() == 1


def test_an_unset_key_variable_is_pointed_out(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)

    _, err = run(
        "connection_add", "--name", "R", "--base-url", GATEWAY, "--key-env", "NOT_SET_ANYWHERE"
    )

    assert "NOT_SET_ANYWHERE is not set" in err


def test_test_runs_the_connection_test_after_adding(monkeypatch, no_network):
    no_network.get(f"{GATEWAY}/batches", json=make_list([make_batch(id="batch_1")]))

    out, _ = run(
        "connection_add",
        "--name",
        "R",
        "--base-url",
        GATEWAY,
        "--key-stdin",
        "--test",
        stdin=SECRET,
        monkeypatch=monkeypatch,
    )

    assert "answered with 1 batch;" in out
    assert "key …9f3e" in out
    assert SECRET not in out


def test_a_failing_test_after_adding_exits_non_zero_but_keeps_the_connection(
    monkeypatch, no_network, no_sleep
):
    no_network.get(
        f"{GATEWAY}/batches",
        json={"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}},
        status=401,
    )

    with pytest.raises(CommandError, match=r"added, but the test failed.*refused the key"):
        run(
            "connection_add",
            "--name",
            "R",
            "--base-url",
            GATEWAY,
            "--key-stdin",
            "--test",
            stdin=SECRET,
            monkeypatch=monkeypatch,
        )
    assert Connection.objects.filter(slug="r").exists()


# --- connection_test ---------------------------------------------------------------------------


@pytest.fixture
def research(db) -> Connection:
    connection = Connection(name="Research", slug="research", base_url=GATEWAY)
    connection.set_key(SECRET)
    connection.save()
    return connection


def test_connection_test_prints_what_worked(research, no_network):
    no_network.get(f"{GATEWAY}/batches", json=make_list([]))

    out, err = run("connection_test", "research")

    assert out.startswith(f"Connected to {GATEWAY}")
    assert "  - The key comes from: stored, encrypted (ends in …9f3e)." in out
    assert SECRET not in out + err


def test_connection_test_exits_1_with_the_cause_and_the_details(research, no_network, no_sleep):
    no_network.get(
        f"{GATEWAY}/batches",
        json={"error": {"message": "Invalid URL (GET /v1/batches)", "code": None}},
        status=404,
        headers={"x-request-id": "req_404"},
    )

    with pytest.raises(CommandError) as caught:
        run("connection_test", "research")

    message = str(caught.value)
    assert "base URL or the dialect is probably wrong" in message
    assert "  - " in message
    assert "req_404" in message
    assert SECRET not in message


def test_connection_test_exits_1_through_the_command_line(research, no_network, capsys):
    no_network.get(f"{GATEWAY}/batches", body="<html>proxy</html>", content_type="text/html")

    with pytest.raises(SystemExit) as caught:
        execute_from_command_line(["manage.py", "connection_test", "research"])

    assert caught.value.code == 1
    assert "not a batch list" in capsys.readouterr().err


def test_connection_test_of_an_unknown_slug_lists_the_known_ones(research):
    with pytest.raises(CommandError, match=r"No connection with the slug 'nope'.*research"):
        call_command("connection_test", "nope")


def test_the_groups_used_exist():
    assert Group.objects.filter(name="Submitters").exists()
