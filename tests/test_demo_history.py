"""Demo mode's month of history: the worker's first pass against a simulator started with it
(over real HTTP, as `make run` does) imports every batch with its creator and label and prices
every finished one; starting the demo again duplicates nothing; the demo's people exist once."""

from __future__ import annotations

import io
import signal
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from batches.management.commands import serve
from batches.models import Batch, Connection
from batches.roles import SUBMITTERS
from batches.services import housekeeping
from batches.services.costs import NO_BATCH_PRICE, USAGE_UNKNOWN
from simulator import SimulatorServer
from simulator.history import CREATOR_KEY, LABEL_KEY, PEOPLE, batch_count

pytestmark = pytest.mark.django_db

# A whole second near the real now, so the history's dates are this month's.
START = float(int(time.time()))
HISTORY = batch_count(30) + 2  # finished, and two still running


class FixedClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def history_server() -> Iterator[SimulatorServer]:
    with SimulatorServer(api_key=serve.DEMO_KEY, clock=FixedClock(), history_days=30) as running:
        yield running


@pytest.fixture
def demo(history_server: SimulatorServer, monkeypatch) -> Connection:
    """What `manage.py serve` sets up in demo mode before the worker starts."""
    monkeypatch.setenv(serve.DEMO_KEY_ENV, serve.DEMO_KEY)
    # A fresh worker process: its first pass does the chores (costs among them).
    monkeypatch.setattr(housekeeping, "_last_housekeeping", {})
    serve._demo_people()
    return serve._demo_connection(history_server.base_url)


@pytest.fixture(autouse=True)
def restore_signal_handlers() -> Iterator[None]:
    """The worker's loop installs SIGTERM/SIGINT handlers; put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def worker_pass() -> str:
    """One pass of the demo's worker (`sync_batches --loop`), for the demo connection."""
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "sync_batches",
        *("--loop", "--max-passes", "1", "--interval", "0", "--connection", "demo"),
        stdout=out,
        stderr=err,
    )
    assert err.getvalue() == ""
    return out.getvalue()


def test_the_first_worker_pass_imports_and_prices_the_whole_month(demo: Connection) -> None:
    out = worker_pass()

    assert f"{HISTORY} new" in out and "full sync" in out
    batches = list(Batch.objects.filter(connection=demo).select_related("created_by"))
    assert len(batches) == HISTORY
    for batch in batches:
        assert batch.label == batch.metadata[LABEL_KEY]
        named = batch.metadata.get(CREATOR_KEY)
        assert (batch.created_by.username if batch.created_by else None) == named
    assert {b.created_by.username for b in batches if b.created_by} == set(PEOPLE)
    assert any(b.created_by is None for b in batches)  # the nightly script

    finished = [b for b in batches if not b.running]
    assert len(finished) == HISTORY - 2
    assert all(b.cost_computed_at is not None for b in finished)
    for batch in finished:
        if batch.status == "failed":
            assert batch.cost_usd is None and batch.cost_note == USAGE_UNKNOWN
        elif batch.model == "text-embedding-3-small":
            assert batch.cost_usd is None and NO_BATCH_PRICE in batch.cost_note
        else:
            assert batch.cost_usd > 0 and batch.list_cost_usd > batch.cost_usd
    # Reasoning and cached tokens were carried over, and count in the cost.
    assert any(b.reasoning_tokens for b in finished if b.model == "o4-mini")
    assert any(b.cached_tokens for b in finished if b.model == "gpt-4.1")
    spend = sum((b.cost_usd for b in finished if b.cost_usd), Decimal(0))
    assert Decimal(10) < spend < Decimal(500)  # a small team's month, not pennies


def test_running_the_demo_again_duplicates_nothing(
    demo: Connection, history_server: SimulatorServer
) -> None:
    worker_pass()
    before = dict(Batch.objects.filter(connection=demo).values_list("openai_id", "cost_usd"))

    # A new start whose simulator lost its state file draws the same history a day later.
    later = FixedClock(START + 86400)
    with SimulatorServer(api_key=serve.DEMO_KEY, clock=later, history_days=30) as again:
        serve._demo_people()
        serve._demo_connection(again.base_url)
        housekeeping._last_housekeeping.clear()
        worker_pass()

    after = dict(Batch.objects.filter(connection=demo).values_list("openai_id", "cost_usd"))
    assert after.keys() == before.keys()
    assert User.objects.filter(username__in=PEOPLE).count() == len(PEOPLE)


def test_the_demo_people_are_submitters_who_cannot_sign_in() -> None:
    User.objects.create_user("ada", password="a real password")

    serve._demo_people()
    serve._demo_people()

    people = {u.username: u for u in User.objects.filter(username__in=PEOPLE)}
    assert set(people) == set(PEOPLE)
    assert people["ada"].check_password("a real password")  # an existing account is left alone
    for name in PEOPLE[1:]:
        assert not people[name].has_usable_password()
        assert list(people[name].groups.values_list("name", flat=True)) == [SUBMITTERS]


def test_serve_starts_the_simulator_with_a_month_of_history(monkeypatch, settings, tmp_path):
    started = []
    monkeypatch.setattr(serve, "_spawn", lambda command, env, log=None: started.append(command))
    monkeypatch.setattr(serve, "_wait_for_port", lambda host, port: None)
    settings.DATA_DIR = tmp_path
    options = {"simulator_port": 8765, "simulator_speed": 10.0}

    url = serve.Command()._start_simulator(options, [])

    assert url == "http://127.0.0.1:8765/v1"
    (command,) = started
    assert command[command.index("--history-days") + 1] == "30"
    assert command[command.index("--state-file") + 1] == str(tmp_path / "simulator-state.json")
