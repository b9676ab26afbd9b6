"""The demo's month of history (``Simulator(history_days=30)``): deterministic, spread over the
month and ending now, listed and paged like any batches, valid against the OpenAPI copy, with
result files whose per-line usage adds up to each batch's usage."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator import Simulator, SimulatorServer
from simulator.__main__ import main
from simulator.history import CREATOR_KEY, LABEL_KEY, PEOPLE, batch_count
from simulator.inputs import parse_input
from tests.openapi import validate_response
from tests.simulator.conftest import START, Api, FakeClock, parse_jsonl

DAY = 86400
FINISHED = ("completed", "failed", "expired", "cancelled")
MODELS = {"gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1", "o4-mini", "text-embedding-3-small"}
ENDPOINTS = {"/v1/chat/completions", "/v1/responses", "/v1/embeddings"}


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    """A simulator started with a month of history; its clock never moves in this module."""
    with SimulatorServer(clock=FakeClock(), history_days=30) as running:
        yield running


@pytest.fixture(scope="module")
def api(server: SimulatorServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.session.close()


@pytest.fixture(scope="module")
def batches(api: Api) -> list[dict[str, Any]]:
    page = api.call("GET", "/batches?limit=100")
    assert not page["has_more"]
    return page["data"]


def listed(sim: Simulator) -> list[dict[str, Any]]:
    return sim.list_batches(limit=100)["data"]


def content(api: Api, file_id: str) -> list[dict[str, Any]]:
    return parse_jsonl(api.content(file_id))


# --- The plan ----------------------------------------------------------------------------------


def test_the_same_seed_and_start_give_the_same_history() -> None:
    first, again = Simulator(clock=FakeClock(), history_days=30), None
    try:
        again = Simulator(clock=FakeClock(), history_days=30)
        assert listed(first) == listed(again)
        assert first.list_files() == again.list_files()
    finally:
        first.close()
        if again:
            again.close()


def test_a_later_start_moves_the_dates_and_keeps_everything_else() -> None:
    later = FakeClock()
    later.now += 3 * DAY
    first = Simulator(clock=FakeClock(), history_days=30)
    moved = Simulator(clock=later, history_days=30)
    other_seed = Simulator(clock=FakeClock(), history_days=30, seed=7)
    try:
        before, after = listed(first), listed(moved)
        assert [b["id"] for b in before] == [b["id"] for b in after]
        assert [b["created_at"] + 3 * DAY for b in before] == [b["created_at"] for b in after]
        assert [b["usage"] for b in before] == [b["usage"] for b in after]
        assert {b["id"] for b in listed(other_seed)}.isdisjoint(b["id"] for b in before)
    finally:
        for sim in (first, moved, other_seed):
            sim.close()


def test_it_spans_the_month_and_ends_now(batches: list[dict[str, Any]]) -> None:
    assert 40 <= len(batches) <= 60
    assert len(batches) == batch_count(30) + 2  # and two still running
    ages = [(START - b["created_at"]) / DAY for b in batches]
    # The oldest within the month by calendar day too, whatever the hour: a day to spare.
    assert 0 < min(ages) < 1 and 28 < max(ages) < 29
    # No empty week: every five days of the month have batches.
    assert {int(age // 5) for age in ages} == set(range(6))
    for batch in batches:
        ended = [batch[f"{status}_at"] for status in FINISHED if batch[f"{status}_at"]]
        if batch["status"] in FINISHED:
            assert len(ended) == 1 and batch["created_at"] < ended[0] < START
        else:
            assert ended == [] and batch["expires_at"] > START


def test_it_mixes_models_people_labels_and_outcomes(batches: list[dict[str, Any]]) -> None:
    assert {b["model"] for b in batches} == MODELS
    assert {b["endpoint"] for b in batches} == ENDPOINTS
    creators = Counter((b["metadata"] or {}).get(CREATOR_KEY) for b in batches)
    assert set(creators) == {*PEOPLE, None}  # the nightly script names nobody
    assert len({b["metadata"][LABEL_KEY] for b in batches}) >= 5
    statuses = Counter(b["status"] for b in batches)
    assert statuses["failed"] == statuses["expired"] == statuses["cancelled"] == 1
    assert statuses["in_progress"] == 2
    assert statuses["completed"] >= 0.8 * sum(statuses[s] for s in FINISHED)
    partly = [b for b in batches if b["status"] == "completed" and b["request_counts"]["failed"]]
    assert 3 <= len(partly) < statuses["completed"] / 2

    (failed,) = [b for b in batches if b["status"] == "failed"]
    assert [e["code"] for e in failed["errors"]["data"]] == ["token_limit_exceeded"]
    assert failed["in_progress_at"] is None and failed["usage"] is None
    assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    (expired,) = [b for b in batches if b["status"] == "expired"]
    assert expired["expired_at"] == expired["expires_at"]
    assert 0 < expired["request_counts"]["completed"] < expired["request_counts"]["total"]
    (cancelled,) = [b for b in batches if b["status"] == "cancelled"]
    assert cancelled["cancelling_at"] < cancelled["cancelled_at"]
    assert cancelled["request_counts"]["completed"] < cancelled["request_counts"]["total"]


def test_usage_is_realistic_per_model(batches: list[dict[str, Any]]) -> None:
    used = [b for b in batches if b["usage"]]
    for batch in used:
        usage, model = batch["usage"], batch["model"]
        reasoning = usage["output_tokens_details"]["reasoning_tokens"]
        cached = usage["input_tokens_details"]["cached_tokens"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert 0 <= cached < usage["input_tokens"]
        assert 0 <= reasoning <= usage["output_tokens"]
        assert (reasoning > 0) == (model == "o4-mini")
        if model == "text-embedding-3-small":
            assert usage["output_tokens"] == 0 and cached == 0
        else:
            assert usage["output_tokens"] > 0
    assert {b["model"] for b in used if b["usage"]["input_tokens_details"]["cached_tokens"]} == {
        "gpt-4o-mini",
        "gpt-4.1",
    }
    # Long contracts on the big model: millions of input tokens, not a handful.
    assert max(b["usage"]["input_tokens"] for b in used if b["model"] == "gpt-4.1") > 1_000_000


# --- Over HTTP -----------------------------------------------------------------------------------


def test_it_lists_newest_first_and_pages_with_after(
    api: Api, batches: list[dict[str, Any]]
) -> None:
    walked, after = [], None
    for _ in range(20):
        page = api.call("GET", "/batches?limit=7" + (f"&after={after}" if after else ""))
        walked += page["data"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert [b["id"] for b in walked] == [b["id"] for b in batches]
    created = [b["created_at"] for b in walked]
    assert created == sorted(created, reverse=True)
    assert api.call("GET", f"/batches?limit=7&after={batches[-1]['id']}")["data"] == []


def test_every_batch_and_file_is_valid_against_the_openapi_copy(
    api: Api, batches: list[dict[str, Any]]
) -> None:
    for batch in batches:
        assert api.call("GET", f"/batches/{batch['id']}") == batch  # validated by api.call
        for key in ("input_file_id", "output_file_id", "error_file_id"):
            if batch[key]:
                file = api.call("GET", f"/files/{batch[key]}")
                assert file["purpose"] == ("batch" if key == "input_file_id" else "batch_output")
                assert file["created_at"] <= START and file["expires_at"] > START
                assert file["bytes"] == len(api.content(batch[key]))
    validate_response("GET", "/v1/files", api.call("GET", "/files"))


def test_input_files_are_valid_batch_inputs_of_the_batch(
    api: Api, batches: list[dict[str, Any]]
) -> None:
    for batch in batches:
        data = api.content(batch["input_file_id"])
        parsed = parse_input(data.splitlines(), batch["endpoint"])
        assert parsed.errors == []
        assert parsed.model == batch["model"]
        if batch["status"] != "failed":
            assert len(parsed.lines) == batch["request_counts"]["total"]


def _line_usage(endpoint: str, body: dict[str, Any]) -> tuple[int, int, int, int]:
    usage = body["usage"]
    if endpoint == "/v1/responses":
        return (
            usage["input_tokens"],
            usage["input_tokens_details"]["cached_tokens"],
            usage["output_tokens"],
            usage["output_tokens_details"]["reasoning_tokens"],
        )
    if endpoint == "/v1/embeddings":
        return usage["prompt_tokens"], 0, 0, 0
    return (
        usage["prompt_tokens"],
        usage["prompt_tokens_details"]["cached_tokens"],
        usage["completion_tokens"],
        usage["completion_tokens_details"]["reasoning_tokens"],
    )


def test_result_files_add_up_to_the_batch_usage_and_counts(
    api: Api, batches: list[dict[str, Any]]
) -> None:
    for batch in [b for b in batches if b["status"] in FINISHED and b["usage"]]:
        counts, usage = batch["request_counts"], batch["usage"]
        outputs = content(api, batch["output_file_id"])
        errors = content(api, batch["error_file_id"]) if batch["error_file_id"] else []
        assert len(outputs) == counts["completed"]
        not_run = counts["total"] - counts["completed"] - counts["failed"]
        assert len(errors) == counts["failed"] + not_run
        sums = [0, 0, 0, 0]
        for row in outputs:
            assert row["response"]["status_code"] == 200
            for i, value in enumerate(_line_usage(batch["endpoint"], row["response"]["body"])):
                sums[i] += value
        assert sums == [
            usage["input_tokens"],
            usage["input_tokens_details"]["cached_tokens"],
            usage["output_tokens"],
            usage["output_tokens_details"]["reasoning_tokens"],
        ]
        failed = [row for row in errors if row["response"]]
        assert len(failed) == counts["failed"]
        for row in failed:
            assert row["response"]["status_code"] in (400, 500)
            assert row["response"]["body"]["error"]["type"] in (
                "invalid_request_error",
                "server_error",
            )
            assert "fail" not in row["custom_id"]  # real-looking ids, real-looking errors
        inputs = {row["custom_id"] for row in content(api, batch["input_file_id"])}
        assert {row["custom_id"] for row in outputs + errors} == inputs


# --- Restarts, reset, the clock -------------------------------------------------------------------


def test_a_state_file_keeps_the_history_and_a_restart_draws_none(tmp_path: Path) -> None:
    clock = FakeClock()
    state_file = tmp_path / "sim.json"
    first = Simulator(clock=clock, state_file=state_file, history_days=30)
    before = listed(first)
    first.close()
    assert json.loads(state_file.read_text())["history_at"] == START

    clock.now += 2 * DAY
    second = Simulator(clock=clock, state_file=state_file, history_days=30)
    try:
        after = listed(second)
        assert [b["id"] for b in after] == [b["id"] for b in before]
        finished = [b for b in before if b["status"] in FINISHED]
        assert [b for b in after if b["id"] in {f["id"] for f in finished}] == finished
        # The running ones ran on, as the clock did.
        assert {b["status"] for b in after} <= set(FINISHED)
    finally:
        second.close()


def test_an_old_state_without_history_gets_it_once(tmp_path: Path) -> None:
    clock = FakeClock()
    state_file = tmp_path / "sim.json"
    plain = Simulator(clock=clock, state_file=state_file)
    plain.seed_batches(count=2, status="completed")
    plain.close()

    with_history = Simulator(clock=clock, state_file=state_file, history_days=30)
    count = len(listed(with_history))
    with_history.close()
    again = Simulator(clock=clock, state_file=state_file, history_days=30)
    try:
        assert count == 2 + batch_count(30) + 2
        assert len(listed(again)) == count
    finally:
        again.close()


def test_reset_draws_the_history_again_ending_now() -> None:
    clock = FakeClock()
    sim = Simulator(clock=clock, history_days=30)
    try:
        before = listed(sim)
        clock.now += DAY
        sim.reset()
        after = listed(sim)
        assert [b["id"] for b in after] == [b["id"] for b in before]
        assert after[-1]["created_at"] == before[-1]["created_at"] + DAY
    finally:
        sim.close()


def test_the_running_batches_finish_or_expire_as_time_passes() -> None:
    clock = FakeClock()
    sim = Simulator(clock=clock, history_days=30)
    try:
        running = [b for b in listed(sim) if b["status"] == "in_progress"]
        clock.now += 3600
        moved = {b["id"]: b for b in listed(sim)}
        for batch in running:
            done = moved[batch["id"]]["request_counts"]["completed"]
            assert done > batch["request_counts"]["completed"]
        clock.now += 4 * 3600
        ended = {b["id"]: b["status"] for b in listed(sim)}
        assert sorted(ended[b["id"]] for b in running) == ["completed", "expired"]
    finally:
        sim.close()


def test_without_history_days_the_simulator_starts_empty() -> None:
    sim = Simulator(clock=FakeClock())
    try:
        assert listed(sim) == [] and sim.list_files()["data"] == []
    finally:
        sim.close()


@pytest.mark.parametrize("days", [-1, 31, 1.5, True])
def test_history_days_out_of_range_is_refused(days: Any) -> None:
    with pytest.raises(ValueError, match="history_days"):
        Simulator(history_days=days)


def test_the_command_line_refuses_a_longer_history(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--port", "0", "--history-days", "31"])
    assert stopped.value.code == 2
    assert "--history-days" in capsys.readouterr().err


@pytest.mark.parametrize("days", [1, 7])
def test_a_shorter_history_stays_within_its_days(days: int) -> None:
    sim = Simulator(clock=FakeClock(), history_days=days)
    try:
        batches = listed(sim)
        assert len(batches) == batch_count(days) + 2
        assert all(START - days * DAY < b["created_at"] < START for b in batches)
    finally:
        sim.close()
