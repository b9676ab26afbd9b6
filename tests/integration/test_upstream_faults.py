"""Upstream faults, each produced by the simulator over loopback HTTP, met by batchweb's real
paths: the worker's pass (`sync_services.sync_pass`, `manage.py sync_batches`), the create form, the
results page and downloads (issue 13, item 5).

Nineteen kinds of fault:

1. a read timeout (no answer in time; on a create, the batch was made all the same)
2. a connection reset (before the request was carried out, and after: the answer is lost)
3. a burst of 5xx that recovers after N answers
4. 429 with Retry-After (short: waited out by the client; long: the worker's backoff)
5. 429 without Retry-After (the client's backoff, then the worker's, doubling to its cap)
6. 429 `insufficient_quota` (never retried, never reconciled)
7. a malformed JSON body (a 200 cut off mid-JSON)
8. a proxy's HTML error page (502, text/html)
9. a wrong content type: JSON labelled text/plain (accepted) and a proxy's HTML sign-in page
   sent with a 200 (refused)
10. an empty 200 body
11. a 200 carrying an error object
12. batch objects with missing fields (in the list, and on retrieve)
13. a list that never ends (has_more always true and the cursor repeating; the page cap)
14. a batch that vanishes (404 on retrieve)
15. a batch that moves backwards in status (a stale replica)
16. a file that disappears mid-download (the connection dropped part way)
17. a file that is gone (404 on its content)
18. errors that carry only a message (compatible servers)
19. a key revoked mid-way (401)

In every case the tests check what batchweb promises: a clear message for people (the
connection's last error, the page's message or the audit entry; never a traceback, raw exception
text or the proxy's markup), cached data intact (rows unchanged, or only moved forward), no
duplicate batch (a create whose answer is lost is reconciled by its submission token: one batch
upstream and in the cache), the worker keeps going (the next pass succeeds once the fault clears;
its backoff is bounded) and other connections unaffected (a second simulator keeps syncing
during the fault).

Fast and deterministic: the client's waits between retries are recorded, not slept (see
conftest); the worker's clock is pinned (`sync_pass(now=...)`) so backoffs are stepped over, not
waited out; the simulator's clock moves only when told; the only real waits are the few read
timeouts of 0.3 s, against a simulator that answers after 0.6 s.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from batches.models import (
    STATUS_RANK,
    Batch,
    Connection,
    Event,
    ResultFile,
    Submission,
    SyncState,
    default_connection,
)
from batches.openai_client import OpenAIError, UpstreamUnavailable
from batches.services import batches as batch_services
from batches.services import housekeeping
from batches.services import sync as sync_services
from simulator import SimulatorServer
from tests.integration.conftest import API_KEY, calls, chat_line

pytestmark = pytest.mark.django_db

ENDPOINT = "/v1/chat/completions"
SECOND_KEY = "sk-second-upstream"
T0 = timezone.now().replace(microsecond=0)
# What must never reach a person: transport internals, tracebacks, a proxy's markup, keys.
RAW = (
    "Traceback",
    "HTTPConnectionPool",
    "urllib3",
    "requests.exceptions",
    "Max retries",
    "ReadTimeout",
    "ConnectionResetError",
    "ConnectionAbortedError",
    "RemoteDisconnected",
    "ProtocolError",
    "IncompleteRead",
    "JSONDecodeError",
    "Expecting value",
    "<html",
    "<!DOCTYPE",
    "<form",
    "<center>",
    API_KEY,
    SECOND_KEY,
)


def assert_clear(text: str, *expected: str) -> None:
    """A sentence for people: says what happened, shows nothing raw."""
    assert text, "no message at all"
    for raw in RAW:
        assert raw not in text, f"{raw!r} shown in {text!r}"
    for words in expected:
        assert words in text, f"{words!r} not in {text!r}"


# --- Fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_server(sim_clock) -> Iterator[SimulatorServer]:
    with SimulatorServer(host="127.0.0.1", port=0, api_key=SECOND_KEY, clock=sim_clock) as server:
        yield server


@pytest.fixture
def second(second_server, monkeypatch, db) -> Connection:
    """Another connection, to another simulator, that must keep syncing during every fault."""
    second_server.sim.reset()
    monkeypatch.setenv("SECOND_KEY", SECOND_KEY)
    return Connection.objects.create(
        name="Second", slug="second", base_url=second_server.base_url, key_env="SECOND_KEY"
    )


@pytest.fixture(autouse=True)
def quick(settings) -> None:
    """The worker's backoff at its shipped bounds, its chores due in every test. No call is
    slow unless a test makes it so: those set the read timeout to 0.3 s themselves."""
    settings.OPENAI_READ_TIMEOUT = 3.0
    settings.SYNC_BACKOFF_MIN_SECONDS = 10.0
    settings.SYNC_BACKOFF_MAX_SECONDS = 600.0
    housekeeping._last_housekeeping.clear()


@pytest.fixture
def keep_signal_handlers():
    """``sync_batches --loop`` installs SIGTERM/SIGINT handlers; put the runner's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class Worker:
    """The worker's passes over one connection, on a pinned clock that steps over backoffs."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.now = T0

    def next_pass(self, *, seconds: float = 6.0) -> sync_services.PassResult:
        """A pass `seconds` later (past the refresh interval of running batches), or right
        after the backoff ends when that is later."""
        self.now += dt.timedelta(seconds=seconds)
        until = SyncState.get(self.connection).backoff_until
        if until and until > self.now:
            self.now = until + dt.timedelta(seconds=1)
        return sync_services.sync_pass(connection=self.connection, now=self.now)

    def pass_now(self) -> sync_services.PassResult:
        """A pass at once, without stepping over anything."""
        return sync_services.sync_pass(connection=self.connection, now=self.now)

    def backoff(self) -> float:
        state = SyncState.get(self.connection)
        assert state.backoff_until and state.last_error_at
        return (state.backoff_until - state.last_error_at).total_seconds()


@pytest.fixture
def worker(sim) -> Worker:
    return Worker(default_connection())


def cache() -> dict[str, tuple[Any, ...]]:
    """What the cache holds of each batch, to compare before and after a fault."""
    return {
        b.openai_id: (
            b.connection_id,
            b.status,
            b.requests_done,
            b.created_at,
            b.endpoint,
            b.input_file_id,
            b.output_file_id,
            b.model,
            b.submission_token,
        )
        for b in Batch.objects.filter(connection=default_connection())
    }


def assert_only_forward(before: dict[str, tuple], after: dict[str, tuple]) -> None:
    """Nothing was lost, and no batch moved back in status or progress."""
    assert set(before) <= set(after)
    for openai_id, old in before.items():
        new = after[openai_id]
        assert new[0] == old[0] and new[3:6] == old[3:6], openai_id
        assert STATUS_RANK[new[1]] >= STATUS_RANK[old[1]], (openai_id, old[1], new[1])
        if new[1] == old[1]:
            assert new[2] >= old[2], openai_id


def assert_other_connection_syncs(second: Connection, server: SimulatorServer) -> None:
    """A new batch on the second upstream is found by its pass, during the fault."""
    server.sim.seed_batches(count=1, status="completed")
    before = Batch.objects.filter(connection=second).count()
    result = sync_services.sync_pass(connection=second)
    assert not result.failed, result.error
    assert Batch.objects.filter(connection=second).count() == before + 1
    assert not SyncState.get(second).is_failing


def running_and_done(sim, worker: Worker) -> dict[str, tuple]:
    """Two running batches and three finished ones, upstream and cached by a first pass."""
    sim.seed_batches(count=2, status="in_progress", requests=100)
    sim.advance(10)
    sim.seed_batches(count=3, status="completed")
    first = worker.next_pass()
    assert not first.failed and first.new == 5
    return cache()


def assert_recovers(sim, worker: Worker, before: dict[str, tuple]) -> sync_services.PassResult:
    """With the fault cleared, the next pass succeeds, and the running batches move on."""
    sim.set_faults({"latency": 0, "operations": None, "drop_batch_fields": []})
    sim.advance(20)
    result = worker.next_pass(seconds=30)
    assert not result.failed, result.error
    state = SyncState.get(worker.connection)
    assert not state.is_failing and state.backoff_until is None
    assert_only_forward(before, cache())
    return result


def assert_failed_pass(worker: Worker, result: sync_services.PassResult, *words: str) -> str:
    """A failed pass: stored for the pages, said clearly, with a bounded backoff."""
    assert result.failed
    state = SyncState.get(worker.connection)
    assert state.is_failing
    assert state.last_error == result.error
    assert_clear(state.last_error, *words)
    assert 0 < worker.backoff() <= 3600
    return state.last_error


def page_messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def tok(name: str) -> str:
    """A readable token in the shape the form takes (24 of [A-Za-z0-9_-], as the server makes)."""
    return name.ljust(24, "_")


def post_create(client, file_id: str, token: str):
    return client.post(
        reverse("batch-create"),
        {
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": "24h",
            "submission_token": tok(token),
        },
    )


def assert_created_once(sim, token: str, response) -> Batch:
    """The form led to its batch, which exists once upstream and once in the cache."""
    token = tok(token)
    batch = Batch.objects.get(submission_token=token)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response.url == reverse("batch-detail", args=["default", batch.openai_id])
    assert sim.state()["batches"] == 1
    upstream = sim.list_batches(limit=100)["data"]
    assert [b["id"] for b in upstream] == [batch.openai_id]
    assert upstream[0]["metadata"]["batchweb_token"] == token
    assert Batch.objects.filter(connection=default_connection()).count() == 1
    assert Submission.objects.get(token=token).state == Submission.State.DONE
    assert Event.objects.filter(action=Event.Action.CREATE, batch=batch).count() == 1
    return batch


def assert_not_created(sim, response, *words: str) -> str:
    """The form page says the batch was not created, and why; nothing exists anywhere."""
    assert response.status_code in (400, 502)
    text = re.sub(r"\s+", " ", response.content.decode())
    found = re.search(r"The batch was not created\.[^<]*", text)
    assert found, text[:3000]
    assert_clear(found.group(0), *words)
    assert sim.state()["batches"] == 0
    assert not Batch.objects.exists()
    [failed] = Event.objects.filter(action=Event.Action.CREATE_FAILED)
    assert_clear(failed.detail, *words)
    return found.group(0)


# --- 1. Read timeouts ------------------------------------------------------------------------


def test_a_list_that_times_out_fails_the_pass_clearly_and_the_next_one_recovers(
    sim, worker, second, second_server, waits, settings
):
    settings.OPENAI_READ_TIMEOUT = 0.3
    before = running_and_done(sim, worker)
    sim.set_faults({"latency": 0.6, "operations": ["listBatches"]})
    listed = calls(sim, "listBatches")

    result = worker.next_pass()

    assert calls(sim, "listBatches") - listed == 3  # one try, two retries
    assert len(waits) == 2 and all(0 < w <= 8 for w in waits)
    assert_failed_pass(worker, result, "no answer from", "within the time limit")
    assert worker.backoff() == 10  # SYNC_BACKOFF_MIN_SECONDS
    assert cache() == before
    assert_other_connection_syncs(second, second_server)

    during = worker.pass_now()  # inside the backoff: no call at all
    assert not during.failed and during.note.startswith("upstream failing")
    assert calls(sim, "listBatches") - listed == 3

    assert_recovers(sim, worker, before)


def test_a_create_whose_answer_times_out_is_found_by_its_token(
    sim, submitter_client, waits, settings
):
    settings.OPENAI_READ_TIMEOUT = 0.3
    file_id = sim.create_file(filename="in.jsonl", purpose="batch", content=_jsonl(3))["id"]
    # The create is carried out at once; only its answer is late, past the read timeout.
    sim.set_faults({"latency": 0.6, "act_first": True, "operations": ["createBatch"]})

    response = post_create(submitter_client, file_id, "tok-timeout")

    assert calls(sim, "createBatch") == 1  # a create is never sent twice
    assert calls(sim, "listBatches") == 1  # the token was looked for, and found
    assert_created_once(sim, "tok-timeout", response)


# --- 2. Connection resets --------------------------------------------------------------------


def test_a_few_connection_resets_are_absorbed_by_the_client_retries(
    sim, worker, second, second_server, waits
):
    before = running_and_done(sim, worker)
    sim.advance(10)
    sim.set_faults({"reset": 2})
    listed = calls(sim, "listBatches")

    result = worker.next_pass()

    assert not result.failed, result.error
    assert result.changed == 2  # the running batches moved on
    assert calls(sim, "listBatches") - listed == 3 and len(waits) == 2
    assert_only_forward(before, cache())
    assert_other_connection_syncs(second, second_server)


def test_connection_resets_beyond_the_retries_fail_the_pass_and_the_next_recovers(
    sim, worker, second, second_server
):
    before = running_and_done(sim, worker)
    sim.set_faults({"reset": 3})

    result = worker.next_pass()

    assert_failed_pass(worker, result, "The OpenAI API is not available right now")
    assert cache() == before
    assert_other_connection_syncs(second, second_server)
    assert_recovers(sim, worker, before)


def test_the_worker_loop_keeps_going_through_a_pass_lost_to_resets(
    sim, settings, keep_signal_handlers
):
    settings.SYNC_BACKOFF_MIN_SECONDS = 0  # no real wait between the two passes
    sim.seed_batches(count=3, status="completed")
    sim.set_faults({"reset": 3})
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "sync_batches",
        *("--loop", "--max-passes", "2", "--interval", "0", "--connection", "default"),
        stdout=out,
        stderr=err,
    )

    [failed] = err.getvalue().splitlines()
    assert_clear(failed, "sync default failed: ", "not available right now")
    [synced] = [line for line in out.getvalue().splitlines() if line.startswith("sync default")]
    assert "3 new" in synced
    assert "Sync worker stopped." in out.getvalue()
    assert Batch.objects.count() == 3
    assert not SyncState.get(default_connection()).is_failing


def test_a_create_reset_after_it_was_carried_out_is_reconciled(sim, submitter_client):
    file_id = sim.create_file(filename="in.jsonl", purpose="batch", content=_jsonl(3))["id"]
    sim.set_faults({"reset": 1, "act_first": True, "operations": ["createBatch"]})

    response = post_create(submitter_client, file_id, "tok-reset-after")

    assert calls(sim, "createBatch") == 1
    assert_created_once(sim, "tok-reset-after", response)


def test_a_create_reset_before_anything_happened_says_so_and_the_form_can_be_sent_again(
    sim, submitter_client
):
    file_id = sim.create_file(filename="in.jsonl", purpose="batch", content=_jsonl(3))["id"]
    sim.set_faults({"reset": 1, "operations": ["createBatch"]})

    failed = post_create(submitter_client, file_id, "tok-reset-before")

    assert calls(sim, "createBatch") == 1  # not retried: it might have been carried out
    assert calls(sim, "listBatches") == 1  # so the token was looked for first
    assert_not_created(sim, failed, "not available right now")
    assert Submission.objects.get(token=tok("tok-reset-before")).state == Submission.State.FAILED

    again = post_create(submitter_client, file_id, "tok-reset-before")

    assert calls(sim, "createBatch") == 2
    assert_created_once(sim, "tok-reset-before", again)


# --- 3. A burst of 5xx -----------------------------------------------------------------------


def test_a_short_5xx_burst_is_absorbed_and_a_long_one_backs_off_doubling_then_recovers(
    sim, worker, second, second_server, waits
):
    before = running_and_done(sim, worker)
    sim.set_faults({"server_error": 2})
    absorbed = worker.next_pass()
    assert not absorbed.failed and len(waits) == 2

    sim.set_faults({"server_error": 7})  # two failed passes of three calls, then one more
    first = worker.next_pass()
    assert_failed_pass(worker, first, "HTTP 500", "The server had an error")
    assert worker.backoff() == 10
    assert SyncState.get(worker.connection).last_error_request_id.startswith("req_")
    assert_other_connection_syncs(second, second_server)
    second_try = worker.next_pass()
    assert_failed_pass(worker, second_try, "HTTP 500")
    assert worker.backoff() == 20  # doubled
    assert cache() == before

    third = worker.next_pass()  # one 500 left: the client's retry gets through
    assert not third.failed
    assert sim.state()["faults"]["server_error"] == 0
    assert_recovers(sim, worker, before)


# --- 18. Errors with only a message -------------------------------------------------------


def test_5xx_from_a_server_whose_errors_carry_only_a_message(sim, worker, second, second_server):
    before = running_and_done(sim, worker)
    sim.set_faults({"server_error": 3, "quirks": {"errors_message_only": True}})

    result = worker.next_pass()

    assert_failed_pass(worker, result, "HTTP 500", "The server had an error")
    assert cache() == before
    assert_other_connection_syncs(second, second_server)
    assert_recovers(sim, worker, before)


# --- 4, 5, 6. Rate limits and quota ----------------------------------------------------------


def test_a_429_with_retry_after_is_waited_out_as_asked(sim, worker, waits):
    before = running_and_done(sim, worker)
    sim.set_faults({"rate_limit": 2, "retry_after": 3})

    result = worker.next_pass()

    assert not result.failed
    assert waits == [3.0, 3.0]
    assert_only_forward(before, cache())


def test_a_long_retry_after_becomes_the_workers_backoff(
    sim, second, second_server, keep_signal_handlers
):
    sim.seed_batches(count=2, status="completed")
    sim.set_faults({"rate_limit": 10, "retry_after": 90})
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "sync_batches",
        *("--loop", "--max-passes", "1", "--interval", "0", "--connection", "default"),
        stdout=out,
        stderr=err,
    )

    # Longer than the worker lets its client wait: one call, and the wait moves to the backoff.
    assert calls(sim, "listBatches") == 1
    line = err.getvalue().strip()
    assert line.startswith("sync default failed: ")
    assert_clear(line, "rate limiting", "Next try in 90 s")
    state = SyncState.get(default_connection())
    assert (state.backoff_until - state.last_error_at).total_seconds() == 90
    assert not Batch.objects.exists()
    assert_other_connection_syncs(second, second_server)

    sim.set_faults({"rate_limit": 0})
    sync_services.sync_pass(connection=default_connection(), now=state.backoff_until)
    assert Batch.objects.filter(connection=default_connection()).count() == 2


def test_a_429_without_retry_after_backs_off_doubling_up_to_the_cap(
    sim, worker, second, second_server, waits, settings
):
    settings.SYNC_BACKOFF_MAX_SECONDS = 60.0
    before = running_and_done(sim, worker)
    sim.set_faults({"rate_limit": 1000, "retry_after": None})

    backoffs = []
    for _ in range(5):
        assert_failed_pass(worker, worker.next_pass(), "rate limiting", "HTTP 429")
        backoffs.append(worker.backoff())

    assert backoffs == [10, 20, 40, 60, 60]
    # Between tries within a pass, the client's own backoff: 0.5 s doubling, with jitter.
    assert len(waits) == 10 and all(0.375 <= w <= 1.0 for w in waits)
    assert cache() == before
    assert_other_connection_syncs(second, second_server)
    sim.set_faults({"rate_limit": 0})
    assert_recovers(sim, worker, before)


def test_insufficient_quota_is_not_retried_and_says_so(sim, worker, second, second_server, waits):
    before = running_and_done(sim, worker)
    sim.set_faults({"quota": 5})
    listed = calls(sim, "listBatches")

    result = worker.next_pass()

    assert calls(sim, "listBatches") - listed == 1 and waits == []
    assert_failed_pass(worker, result, "quota")
    assert cache() == before
    assert_other_connection_syncs(second, second_server)
    sim.set_faults({"quota": 0})
    assert_recovers(sim, worker, before)


def test_a_create_refused_for_quota_is_not_retried_nor_reconciled(sim, submitter_client, waits):
    file_id = sim.create_file(filename="in.jsonl", purpose="batch", content=_jsonl(3))["id"]
    sim.set_faults({"quota": 1, "operations": ["createBatch"]})

    failed = post_create(submitter_client, file_id, "tok-quota")

    assert calls(sim, "createBatch") == 1 and waits == []
    assert calls(sim, "listBatches") == 0  # a 429 never created anything: nothing to look for
    assert_not_created(sim, failed, "quota")

    again = post_create(submitter_client, file_id, "tok-quota")  # once the bill is paid
    assert_created_once(sim, "tok-quota", again)


# --- 7, 10, 11. Bodies batchweb cannot read -------------------------------------------------


@pytest.mark.parametrize(
    ("switch", "words"),
    [
        ("malformed", "not JSON"),
        ("empty_body", "empty"),
        ("error_body", "The upstream service is overloaded"),
    ],
)
def test_an_unreadable_list_answer_fails_the_pass_clearly(
    sim, worker, second, second_server, switch, words
):
    before = running_and_done(sim, worker)
    sim.set_faults({switch: 1})

    result = worker.next_pass()

    assert_failed_pass(worker, result, words)
    assert cache() == before
    assert_other_connection_syncs(second, second_server)
    assert_recovers(sim, worker, before)


def test_a_create_answered_with_garbage_before_anything_happened_says_so(sim, submitter_client):
    file_id = sim.create_file(filename="in.jsonl", purpose="batch", content=_jsonl(3))["id"]
    sim.set_faults({"malformed": 1, "operations": ["createBatch"]})

    failed = post_create(submitter_client, file_id, "tok-garbage")

    assert calls(sim, "listBatches") == 1  # looked for, in case it was made
    assert_not_created(sim, failed, "cannot read", "not JSON")
    again = post_create(submitter_client, file_id, "tok-garbage")
    assert_created_once(sim, "tok-garbage", again)


@pytest.mark.parametrize("switch", ["malformed", "empty_body", "error_body", "server_error"])
def test_a_create_whose_answer_is_unreadable_is_reconciled_by_its_token(
    sim, submitter_client, switch
):
    file_id = sim.create_file(filename="in.jsonl", purpose="batch", content=_jsonl(3))["id"]
    # Carried out upstream; the answer that came back is garbage, empty, an error or a 500.
    sim.set_faults({switch: 1, "act_first": True, "operations": ["createBatch"]})

    response = post_create(submitter_client, file_id, f"tok-{switch}")

    assert calls(sim, "createBatch") == 1
    assert_created_once(sim, f"tok-{switch}", response)


# --- 8, 9. A proxy in the way ----------------------------------------------------------------


def test_a_proxys_html_502_page_is_retried_and_never_shown(
    sim, worker, second, second_server, waits
):
    before = running_and_done(sim, worker)
    sim.set_faults({"proxy_error": 1})
    assert not worker.next_pass().failed  # one page: the retry got through

    sim.set_faults({"proxy_error": 3})
    result = worker.next_pass()

    assert_failed_pass(worker, result, "HTTP 502", "Bad Gateway")
    assert cache() == before
    assert_other_connection_syncs(second, second_server)
    assert_recovers(sim, worker, before)


def test_sync_now_during_a_proxy_outage_says_so_on_the_page_and_in_the_audit(
    sim, worker, operator_client
):
    before = running_and_done(sim, worker)
    sim.set_faults({"proxy_error": 10})

    response = operator_client.post(reverse("batch-sync"), follow=True)

    assert response.status_code == 200
    [message] = page_messages(response)
    assert_clear(message, "Sync failed; the list shows what was cached before", "HTTP 502")
    [event] = Event.objects.filter(action=Event.Action.SYNC_FAILED)
    assert_clear(event.detail, "HTTP 502")
    assert cache() == before
    for openai_id in before:
        assert openai_id in response.content.decode()  # the list still shows the cache


def test_json_labelled_text_plain_is_read_all_the_same(sim, worker, second, second_server):
    before = running_and_done(sim, worker)
    sim.set_faults({"content_type": "text/plain"})
    sim.seed_batches(count=1, status="completed")

    result = worker.next_pass()

    assert not result.failed and result.new == 1
    assert_only_forward(before, cache())


def test_a_proxys_sign_in_page_sent_with_200_is_refused_clearly(sim, worker, second, second_server):
    before = running_and_done(sim, worker)
    sim.set_faults({"proxy_error": 1, "proxy_status": 200})

    result = worker.next_pass()

    assert_failed_pass(worker, result, "HTML page")
    assert cache() == before
    assert_other_connection_syncs(second, second_server)
    assert_recovers(sim, worker, before)


# --- 12. Missing fields ----------------------------------------------------------------------


def test_list_items_missing_required_fields_leave_the_cached_values(sim, worker):
    before = running_and_done(sim, worker)
    sim.advance(30)
    sim.set_faults(
        {"drop_batch_fields": ["created_at", "endpoint", "input_file_id", "completion_window"]}
    )

    result = worker.next_pass(seconds=3600 * 7)  # a full walk: every batch listed again

    assert not result.failed, result.error
    assert result.full
    after = cache()
    assert_only_forward(before, after)
    for openai_id, row in before.items():
        assert after[openai_id][3:6] == row[3:6]  # created_at, endpoint, input file kept
    assert set(Batch.objects.values_list("completion_window", flat=True)) == {"24h"}
    assert_recovers(sim, worker, before)


def test_retrieved_batches_without_status_are_marked_and_the_pass_goes_on(
    sim, worker, second, second_server, viewer_client
):
    before = running_and_done(sim, worker)
    sim.advance(30)
    sim.set_faults({"drop_batch_fields": ["status"]})

    result = worker.next_pass()

    # The list without statuses moves nothing; each running batch, retrieved, is marked and
    # asked for again later, without failing the pass (one such batch must not hold up the rest).
    assert not result.failed, result.error
    assert (result.due, result.refreshed, result.errors) == (2, 0, 2)
    assert cache() == before
    running = Batch.objects.filter(connection=worker.connection, running=True)
    for batch in running:
        assert_clear(batch.last_error, "cannot read", "not a batch")
        assert batch.next_refresh_at > worker.now
    assert not SyncState.get(worker.connection).is_failing
    page = viewer_client.get(reverse("batch-detail", args=["default", running[0].openai_id]))
    assert "Last problem seen by the sync worker" in page.content.decode()
    assert_other_connection_syncs(second, second_server)
    assert_recovers(sim, worker, before)


# --- 13. A list that never ends --------------------------------------------------------------


def test_a_list_that_never_ends_is_walked_a_bounded_number_of_pages_every_pass(
    sim, worker, second, second_server, settings
):
    sim.seed_batches(count=250, status="completed")
    sim.set_faults({"endless_list": True})

    full = worker.next_pass()  # the first pass walks the whole list: to the repeated cursor
    assert not full.failed and full.full
    assert full.listed_pages == calls(sim, "listBatches") == 4
    assert Batch.objects.count() == 250

    quiet = worker.next_pass()  # an incremental pass stops once nothing is new
    assert not quiet.failed and quiet.listed_pages == 1

    settings.SYNC_MAX_PAGES = 2  # and a server that never repeats itself meets the page cap
    capped = worker.next_pass(seconds=7 * 3600)
    assert not capped.failed and capped.full and capped.listed_pages == 2
    assert Batch.objects.count() == 250
    assert not SyncState.get(worker.connection).is_failing
    assert_other_connection_syncs(second, second_server)


# --- 14. A batch that vanishes ---------------------------------------------------------------


def test_a_batch_that_vanishes_is_kept_marked_and_the_others_still_refresh(
    sim, worker, second, second_server, viewer_client
):
    before = running_and_done(sim, worker)
    running = sorted(b.openai_id for b in Batch.objects.filter(running=True))
    sim.forget_batch(running[0])
    sim.advance(30)
    retrieved = calls(sim, "retrieveBatch")

    result = worker.next_pass()

    # The walk saw the other one move on; the vanished one, due, was asked for and not found.
    assert not result.failed and result.gone == 1 and result.changed == 1
    gone = Batch.objects.get(openai_id=running[0])
    assert before[gone.openai_id] == cache()[gone.openai_id]  # kept as it was
    assert_clear(gone.last_error, "does not know this object", "HTTP 404")
    other = Batch.objects.get(openai_id=running[1])
    assert other.requests_done > before[other.openai_id][2]
    assert_other_connection_syncs(second, second_server)

    later = worker.next_pass()  # not asked for again at every pass
    assert not later.failed and later.gone == 0
    assert calls(sim, "retrieveBatch") - retrieved == 1

    page = viewer_client.get(reverse("batch-detail", args=["default", gone.openai_id]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Last problem seen by the sync worker" in text
    assert "does not know this object" in text and "Traceback" not in text
    assert calls(sim, "retrieveBatch") - retrieved == 1  # the page asked upstream nothing


# --- 15. A batch that moves backwards --------------------------------------------------------


def test_a_batch_answered_in_an_older_state_does_not_move_back(sim, worker, viewer_client):
    before = running_and_done(sim, worker)
    sim.advance(200)  # past the end of both running batches
    done = worker.next_pass()
    assert not done.failed and done.changed == 2
    finished = cache()
    assert {row[1] for row in finished.values()} == {"completed"}
    ids = sorted(before)
    for openai_id in ids:
        sim.lag_batch(openai_id, 150)  # a stale replica: the running ones seem in_progress

    walked = worker.next_pass(seconds=7 * 3600)  # a full walk sees every one of them

    assert not walked.failed and walked.full
    assert cache() == finished
    page = viewer_client.get(reverse("batch-detail", args=["default", ids[0]]))
    assert page.status_code == 200

    running = sim.seed_batches(count=1, status="in_progress", requests=100)["first_id"]
    worker.next_pass()
    sim.advance(40)
    worker.next_pass()
    ahead = cache()[running]
    sim.lag_batch(running, 30)
    behind = worker.next_pass()
    assert not behind.failed and behind.refreshed == 1 and behind.changed == 0
    assert cache()[running] == ahead
    sim.lag_batch(running, 0)
    assert_recovers(sim, worker, finished)
    assert cache()[running][2] > ahead[2]


# --- 16, 17. Files that disappear ------------------------------------------------------------


def _jsonl(count: int) -> bytes:
    return "".join(json.dumps(chat_line(f"req-{i}")) + "\n" for i in range(count)).encode()


def finished_batch(sim, submitter, lines: int = 40) -> Batch:
    """A batch made through batchweb, run to its end upstream and cached."""
    file_id = sim.create_file(filename="in.jsonl", purpose="batch", content=_jsonl(lines))["id"]
    batch = batch_services.batch_create(user=submitter, input_file_id=file_id, endpoint=ENDPOINT)
    sim.advance(lines + 10)
    batch = batch_services.batch_refresh(batch=batch)
    assert batch.status == "completed" and batch.output_file_id
    return batch


def test_a_download_cut_part_way_on_the_results_page_says_so_and_keeps_nothing_half_done(
    sim, submitter, submitter_client, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    batch = finished_batch(sim, submitter)
    before = cache()
    sim.set_faults({"cut_downloads": 1})
    results = reverse("batch-results", args=["default", batch.openai_id])

    response = submitter_client.get(results)

    assert response.status_code == 302
    [message] = page_messages(response)
    assert_clear(message, "could not be fetched", "interrupted")
    assert not ResultFile.objects.filter(batch=batch, kind="output").exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and "results" in p.parts]
    assert all(p.name == "input.jsonl" for p in leftovers), leftovers
    assert cache() == before

    again = submitter_client.get(results)  # the cut was once: now it comes whole

    assert again.status_code == 200
    copy = ResultFile.objects.get(batch=batch, kind="output")
    assert Path(copy.path).read_bytes().count(b"\n") == 40


def test_a_direct_download_cut_part_way_ends_in_the_clients_error_and_the_next_one_works(
    sim, submitter, submitter_client, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    batch = finished_batch(sim, submitter)
    sim.set_faults({"cut_downloads": 1})
    url = reverse("batch-download", args=["default", batch.openai_id, "output"])

    response = submitter_client.get(url)
    announced = int(response["Content-Length"])
    received = b""
    with pytest.raises(OpenAIError) as cut:
        for chunk in response.streaming_content:
            received += chunk

    # The announced length tells the browser the file is incomplete; the log says why.
    assert len(received) < announced
    assert isinstance(cut.value, UpstreamUnavailable)
    assert_clear(str(cut.value), "interrupted")

    whole = b"".join(submitter_client.get(url).streaming_content)
    assert len(whole) == announced and whole.count(b"\n") == 40


def test_a_result_file_gone_upstream_is_noted_by_the_worker_which_keeps_going(
    sim, submitter, worker, second, second_server, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    batch = finished_batch(sim, submitter)
    sim.delete_file(batch.output_file_id)
    before = cache()

    result = worker.next_pass()  # its chores summarize what finished lately

    assert not result.failed, result.error
    batch.refresh_from_db()
    assert_clear(batch.last_error, "no longer exists upstream")
    assert batch.summary_computed_at is not None  # not tried again at every pass
    assert cache() == before
    assert_other_connection_syncs(second, second_server)
    assert not worker.next_pass().failed


# --- 19. A key revoked mid-way ---------------------------------------------------------------


def test_a_key_revoked_mid_way_is_not_retried_and_is_never_shown(
    sim, worker, second, second_server, waits
):
    before = running_and_done(sim, worker)
    sim.api_key = "sk-rotated-elsewhere"

    result = worker.next_pass()

    assert calls(sim, "listBatches") == 2 and waits == []  # the first pass, and this one try
    assert_failed_pass(worker, result, "refused the credentials", "HTTP 401")
    assert "sk-rotated" not in result.error
    assert cache() == before
    assert_other_connection_syncs(second, second_server)
    sim.api_key = API_KEY
    assert_recovers(sim, worker, before)
