"""Live pages: running batches update in place, without a reload, from what the worker syncs."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import expect
from tests.e2e.test_batches import chat_jsonl

pytestmark = pytest.mark.e2e

LIVE_TIMEOUT_MS = 20_000  # the worker syncs every second and pages poll every second


def start_batch(sim, lines: int) -> str:
    file_id = sim.upload(chat_jsonl(lines), "live.jsonl")
    batch = sim.api(
        "POST",
        "/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    return batch["id"]


def test_a_running_row_on_the_list_updates_in_place(page_as, sim, shot):
    openai_id = start_batch(sim, lines=4)
    page = page_as("sam")  # an operator: presses Sync now
    page.goto("/")
    page.get_by_role("button", name="Sync now").click()
    row = page.locator(f"tr[data-batch-id='{openai_id}']")
    expect(row).to_contain_text(re.compile(r"validating|in progress"))
    page.evaluate("window.__noReload = true")

    sim.advance(60)  # the simulator finishes the batch; the worker brings it into the cache

    expect(row).to_contain_text("completed", timeout=LIVE_TIMEOUT_MS)
    expect(row).to_contain_text("4 / 4")
    assert page.evaluate("window.__noReload === true"), "the list was reloaded"
    expect(page.locator("#live-announce")).to_contain_text(f"{openai_id} is now completed")
    shot(page, "live-list")


def test_a_running_batch_page_shows_progress_and_reloads_once_finished(page_as, sim, shot):
    openai_id = start_batch(sim, lines=30)
    page = page_as("sam")  # an operator: presses Sync now
    page.goto("/")
    page.get_by_role("button", name="Sync now").click()
    page.goto(f"/connections/default/batches/{openai_id}/")
    progress = page.locator("#live-detail .progress .nums")
    page.evaluate("window.__noReload = true")

    sim.advance(12)  # part way: about 10 of 30 requests done

    expect(progress).to_contain_text(re.compile(r"^[1-9]\d* / 30"), timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.__noReload === true"), "the page reloaded while running"
    shot(page, "live-detail-running")

    sim.advance(120)

    # Finished: the page reloads once and shows what a finished batch offers.
    expect(page.get_by_role("link", name="View results")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("h1 .badge")).to_have_text(re.compile("completed"))
    assert not page.evaluate("window.__noReload === true")
    assert page.locator("#live-detail[hx-trigger]").count() == 0  # no more polling
