"""`connection_test()`: one page of batches through a connection, and what to change when it
fails. Against the real simulator over loopback HTTP where it can say what a server says; with
`responses` for answers the simulator does not give (an HTML page, a 429, a 400 on the
api-version)."""

from __future__ import annotations

import inspect
import logging
import re
import socket
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet

from batches.models import AuthStyle, Connection, Dialect
from batches.services.connections import ConnectionTestResult, connection_test
from simulator import Simulator, SimulatorServer

KEY = "sk-conn-test-right-key-1234"
WRONG_KEY = "sk-conn-test-wrong-key-9876"
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")

SIM_DIALECTS = "dialect" in inspect.signature(Simulator.__init__).parameters
needs_dialects = pytest.mark.skipif(
    not SIM_DIALECTS,
    reason="the simulator has no dialect support yet (Simulator(dialect=...) is missing)",
)

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(host="127.0.0.1", port=0, api_key=KEY) as running:
        yield running


@pytest.fixture
def sim(server: SimulatorServer) -> Iterator[Simulator]:
    server.sim.reset()
    server.sim.api_key = KEY
    yield server.sim
    server.sim.reset()


@pytest.fixture(autouse=True)
def quick(settings, no_sleep) -> None:
    """Short timeouts, a fresh encryption key, and retries that do not sleep."""
    settings.BATCHWEB_ENCRYPTION_KEY = Fernet.generate_key().decode()
    settings.OPENAI_CONNECT_TIMEOUT = 2.0
    settings.OPENAI_READ_TIMEOUT = 5.0
    settings.OPENAI_PAGE_TIMEOUT = 5.0


def make_connection(base_url: str, *, key: str | None = KEY, **fields) -> Connection:
    connection = Connection(name=fields.pop("name", "Research"), slug="research", **fields)
    connection.base_url = base_url
    if key is not None:
        connection.set_key(key)
    connection.save()
    return connection


def everything(result: ConnectionTestResult) -> str:
    return " ".join([result.message, *result.details, result.request_id or ""])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Against the simulator ----------------------------------------------------------------------


def test_it_says_where_it_connected_and_how_many_batches_answered(server, sim):
    sim.seed_batches(count=7)
    connection = make_connection(server.base_url)

    result = connection_test(connection=connection)

    assert result.ok, everything(result)
    assert result.kind == "ok"
    assert result.message == (
        f"Connected to {server.base_url} (OpenAI (or a compatible server)): the batch list "
        "answered with 5 batches (the first page; there are more); key …1234."
    )
    assert "stored, encrypted (ends in …1234)" in " ".join(result.details)
    assert KEY not in everything(result)
    assert result.request_id is None


def test_an_empty_batch_list_is_a_success_too(server, sim):
    result = connection_test(connection=make_connection(server.base_url))

    assert result.ok
    assert "answered with 0 batches;" in result.message


def test_a_key_from_an_environment_variable_works(server, sim, monkeypatch):
    monkeypatch.setenv("BATCHWEB_TEST_RESEARCH_KEY", KEY)
    connection = make_connection(server.base_url, key=None, key_env="BATCHWEB_TEST_RESEARCH_KEY")

    result = connection_test(connection=connection)

    assert result.ok
    assert "environment variable BATCHWEB_TEST_RESEARCH_KEY" in " ".join(result.details)
    assert KEY not in everything(result)


def test_a_wrong_key_is_reported_as_refused_with_the_request_id(server, sim):
    connection = make_connection(server.base_url, key=WRONG_KEY)

    result = connection_test(connection=connection)

    assert not result.ok
    assert result.kind == "auth"
    assert "refused the key (HTTP 401)" in result.message
    assert "Incorrect API key provided" in result.details[0]
    assert any("key is right" in line for line in result.details)
    assert REQUEST_ID.match(result.request_id)
    assert WRONG_KEY not in everything(result)
    assert KEY not in everything(result)


def test_a_wrong_base_url_is_a_404_that_points_at_the_url_and_dialect(server, sim):
    connection = make_connection(server.root_url + "/api")

    result = connection_test(connection=connection)

    assert not result.ok
    assert result.kind == "not-found"
    assert "base URL or the dialect is probably wrong" in result.message
    assert any("ends in /v1" in line for line in result.details)
    assert REQUEST_ID.match(result.request_id)


def test_the_dated_azure_dialect_against_an_openai_style_server_is_a_404(server, sim):
    connection = make_connection(
        server.base_url, dialect=Dialect.AZURE_LEGACY, auth_style=AuthStyle.BEARER
    )

    result = connection_test(connection=connection)

    assert result.kind == "not-found"
    assert any("choose the dialect azure" in line for line in result.details)


def test_an_unreachable_host_says_so_and_what_to_check():
    port = closed_port()
    connection = make_connection(f"http://127.0.0.1:{port}/v1")

    result = connection_test(connection=connection)

    assert not result.ok
    assert result.kind == "unreachable"
    assert result.message == f"Could not reach 127.0.0.1:{port}."
    assert any("DNS" in line and "firewall" in line for line in result.details)
    assert result.request_id is None


def test_a_missing_key_variable_is_named_and_nothing_is_sent(no_network, monkeypatch):
    monkeypatch.delenv("BATCHWEB_TEST_UNSET_KEY", raising=False)
    connection = make_connection(
        "https://gateway.example.test/v1", key=None, key_env="BATCHWEB_TEST_UNSET_KEY"
    )

    result = connection_test(connection=connection)

    assert not result.ok
    assert result.kind == "no-key"
    assert "BATCHWEB_TEST_UNSET_KEY" in " ".join(result.details)
    assert len(no_network.calls) == 0


def test_a_stored_key_without_the_encryption_key_names_the_setting(settings, no_network):
    connection = make_connection("https://gateway.example.test/v1")
    settings.BATCHWEB_ENCRYPTION_KEY = ""

    result = connection_test(connection=connection)

    assert result.kind == "no-key"
    assert "BATCHWEB_ENCRYPTION_KEY" in " ".join(result.details)
    assert len(no_network.calls) == 0


def test_the_environment_connection_without_openai_api_key_names_it(settings, no_network):
    settings.OPENAI_API_KEY = ""
    connection = Connection.objects.create(name="Env", slug="env", from_settings=True)

    result = connection_test(connection=connection)

    assert result.kind == "no-key"
    assert "OPENAI_API_KEY" in " ".join(result.details)


# --- Answers the simulator does not give ------------------------------------------------------

GATEWAY = "https://gateway.example.test/v1"


def test_an_html_page_is_not_an_openai_compatible_api(no_network):
    no_network.get(
        f"{GATEWAY}/batches",
        body="<!doctype html><title>Sign in</title><form>…</form>",
        content_type="text/html",
    )

    result = connection_test(connection=make_connection(GATEWAY))

    assert not result.ok
    assert result.kind == "not-api"
    assert "probably no OpenAI-compatible API at this URL" in result.message
    assert any("sign-in page" in line for line in result.details)
    assert "<title>" not in everything(result)


def test_json_that_is_not_a_batch_list_is_not_an_openai_compatible_api(no_network):
    no_network.get(f"{GATEWAY}/batches", json={"status": "ok", "version": "1.2"})

    result = connection_test(connection=make_connection(GATEWAY))

    assert result.kind == "not-api"


def test_a_429_means_the_settings_work_but_upstream_is_busy(no_network):
    body = {"error": {"message": "Rate limit reached.", "type": "requests", "code": None}}
    no_network.get(f"{GATEWAY}/batches", json=body, status=429, headers={"x-request-id": "req_9"})

    result = connection_test(connection=make_connection(GATEWAY))

    assert not result.ok
    assert result.is_warning
    assert result.kind == "rate-limited"
    assert "reachable and the key works" in result.message
    assert result.request_id == "req_9"


def test_a_400_on_the_api_version_says_to_set_it(no_network):
    no_network.get(
        re.compile(r"https://res\.openai\.azure\.test/openai/batches\?.*api-version=2023-05-15"),
        json={"error": {"code": "BadRequest", "message": "Unsupported api-version 2023-05-15."}},
        status=400,
    )
    connection = make_connection(
        "https://res.openai.azure.test",
        dialect=Dialect.AZURE_LEGACY,
        auth_style=AuthStyle.API_KEY,
        api_version="2023-05-15",
    )

    result = connection_test(connection=connection)

    assert result.kind == "api-version"
    assert any("2024-10-21" in line and "2023-05-15" in line for line in result.details)


def test_azure_refusing_a_bearer_key_suggests_the_api_key_header(no_network):
    azure = "https://res.openai.azure.test/openai/v1"
    no_network.get(
        f"{azure}/batches",
        json={
            "error": {"code": "401", "message": "Access denied due to invalid subscription key."}
        },
        status=401,
    )
    connection = make_connection(azure, dialect=Dialect.AZURE, auth_style=AuthStyle.BEARER)

    result = connection_test(connection=connection)

    assert result.kind == "auth"
    assert any("api-key header" in line for line in result.details)
    assert any("Azure resource" in line for line in result.details)


def test_a_server_error_says_it_is_reachable_but_failing(no_network):
    no_network.get(f"{GATEWAY}/batches", json={"error": {"message": "Boom"}}, status=503)

    result = connection_test(connection=make_connection(GATEWAY))

    assert result.kind == "server-error"
    assert "HTTP 503" in result.message


def test_the_outcome_is_logged_with_the_slug_and_never_the_key(server, sim, caplog):
    with caplog.at_level(logging.INFO, logger="batches.services.connections"):
        connection_test(connection=make_connection(server.base_url, key=WRONG_KEY))

    lines = [r.getMessage() for r in caplog.records if r.name == "batches.services.connections"]
    assert len(lines) == 1
    assert "research" in lines[0] and "auth" in lines[0]
    assert WRONG_KEY not in caplog.text


# --- Azure dialects (once the simulator speaks them) -------------------------------------------


def dialect_server(dialect: str) -> SimulatorServer:
    return SimulatorServer(host="127.0.0.1", port=0, api_key=KEY, dialect=str(dialect))


@needs_dialects
@pytest.mark.parametrize("dialect", [Dialect.AZURE, Dialect.AZURE_LEGACY])
def test_azure_dialects_connect_with_the_api_key_header(dialect):
    with dialect_server(dialect) as server:
        server.sim.seed_batches(count=2)
        connection = make_connection(server.base_url, dialect=dialect, auth_style=AuthStyle.API_KEY)

        result = connection_test(connection=connection)

    assert result.ok, everything(result)
    assert "answered with 2 batches" in result.message
    assert f"({connection.get_dialect_display()})" in result.message


@needs_dialects
def test_the_openai_dialect_against_the_dated_azure_api_is_a_404():
    with dialect_server(Dialect.AZURE_LEGACY) as server:
        connection = make_connection(
            server.base_url, dialect=Dialect.OPENAI, auth_style=AuthStyle.API_KEY
        )

        result = connection_test(connection=connection)

    assert not result.ok
    assert result.kind == "not-found"


@needs_dialects
def test_the_dated_dialect_against_the_azure_v1_api_is_a_404():
    with dialect_server(Dialect.AZURE) as server:
        connection = make_connection(
            server.base_url, dialect=Dialect.AZURE_LEGACY, auth_style=AuthStyle.API_KEY
        )

        result = connection_test(connection=connection)

    assert not result.ok
    assert result.kind == "not-found"
    assert any("choose the dialect azure" in line for line in result.details)
