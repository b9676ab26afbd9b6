"""A batch's life through the pages: create, watch it run, cancel, and upstream failures."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.e2e.conftest import expect

pytestmark = pytest.mark.e2e

MAX_RELOADS = 20
WATCH_SECONDS = 30


def chat_jsonl(count: int, model: str = "gpt-4.1-mini") -> str:
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"Say {i}"}]},
        }
        for i in range(1, count + 1)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


def badge(page):
    return page.locator("h1 .badge")


def fact(page, section: str, name: str):
    """The value beside NAME in a card's facts list (e.g. Progress → Succeeded)."""
    card = page.locator("section.card", has=page.get_by_role("heading", name=section))
    # The name may sit in a <bdi> (metadata keys from upstream are isolated for bidi text).
    return card.locator(f"dt:text-is('{name}') + dd, dt:has(bdi:text-is('{name}')) + dd")


def sync_and_open(page, openai_id: str) -> None:
    """Sync from the list page, then open the batch from its row."""
    page.goto("/")
    page.get_by_role("button", name="Sync now").click()
    page.locator(f"tr[data-batch-id='{openai_id}']").get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(rf"/connections/default/batches/{openai_id}/$"))


def test_a_batch_created_from_the_form_runs_to_completed(page_as, sim, shot):
    file_id = sim.upload(chat_jsonl(3), "three.jsonl")
    page = page_as("sam")
    page.goto("/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New batch").click()
    expect(page.get_by_role("heading", name="New batch")).to_be_visible()
    # Only the first metadata rows show; "Add metadata" opens one more and moves the focus to it.
    rows = page.locator("[data-kv-row]")
    visible = [rows.nth(i).is_visible() for i in range(rows.count())]
    assert 1 <= sum(visible) < len(visible), visible
    shown = sum(visible)
    page.get_by_role("button", name="Add metadata").click()
    expect(page.locator("[data-kv-row]:visible")).to_have_count(shown + 1)
    expect(page.get_by_label(f"Metadata key {shown + 1}", exact=True)).to_be_focused()
    shot(page, "create-form")

    page.get_by_label("…or the id of a file already uploaded").fill(file_id)
    page.get_by_label("Endpoint").select_option("/v1/chat/completions")
    page.get_by_label("Label").fill("e2e nightly eval")
    page.get_by_label("Metadata key 1", exact=True).fill("team")
    page.get_by_label("Metadata value 1", exact=True).fill("search")
    page.get_by_role("button", name="Continue").click()

    expect(page).to_have_url(re.compile(r"/connections/default/batches/batch_\w+/$"))
    openai_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    expect(page.get_by_role("status")).to_have_text(f"Batch {openai_id} created.")
    expect(badge(page)).to_have_text(re.compile(r"^(validating|in progress)$"))
    expect(page.locator("p.sub")).to_contain_text("e2e nightly eval")
    expect(page.locator("p.sub")).to_contain_text("by sam")
    expect(fact(page, "Metadata", "team")).to_have_text("search")
    expect(fact(page, "Files", "Input")).to_contain_text(file_id)

    # Watch the open page: it asks the worker for a refresh as it polls, updates in place, and
    # reloads once when the batch ends. The simulator runs in real time (about 7 s here).
    seen = []
    shot_running = False
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        try:
            status = badge(page).inner_text(timeout=2000)
        except PlaywrightError:  # between the reload's unload and its load
            continue
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == "in progress" and not shot_running:
            shot(page, "detail-running")
            shot_running = True
        if status == "completed":
            break
        page.wait_for_timeout(250)
    else:
        pytest.fail(f"not completed within {WATCH_SECONDS} s; saw {seen}")
    assert "in progress" in seen, seen
    expect(page.locator("#live-detail[hx-trigger]")).to_have_count(0)  # finished: no polling

    expect(fact(page, "Progress", "Succeeded")).to_have_text("3")
    expect(fact(page, "Progress", "Failed")).to_have_text("0")
    expect(fact(page, "Progress", "Remaining")).to_have_text("0")
    expect(fact(page, "Progress", "Total")).to_have_text("3")
    expect(page.locator(".progress").first).to_have_attribute("aria-label", "3 of 3 requests done")
    steps = page.locator("ol.timeline .step").all_text_contents()
    assert steps == ["created", "in progress", "finalizing", "completed"], steps
    expect(fact(page, "Files", "Output")).to_contain_text("file-")
    expect(page.get_by_role("link", name="Cancel batch…")).to_have_count(0)
    expect(page.locator("ul.events")).to_contain_text("sam created this batch")
    shot(page, "detail-completed")

    # The list shows it with its label and creator, and opens it.
    page.get_by_role("link", name="← Batches").click()
    row = page.locator(f"tr[data-batch-id='{openai_id}']")
    expect(row).to_contain_text("e2e nightly eval")
    expect(row.locator("td[data-label='Created by']")).to_have_text("sam")
    expect(row.locator(".badge")).to_have_text("completed")
    row.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(rf"/connections/default/batches/{openai_id}/$"))
    expect(badge(page)).to_have_text("completed")


def test_a_running_batch_is_cancelled_through_the_confirmation_page(page_as, sim, shot):
    seeded = sim.seed(1, "in_progress", requests=1000, metadata={"job": "e2e cancel me"})
    openai_id = seeded["first_id"]
    page = page_as("sam")
    sync_and_open(page, openai_id)
    expect(badge(page)).to_have_text("in progress")

    page.get_by_role("link", name="Cancel batch…").click()
    expect(page).to_have_url(re.compile(rf"/connections/default/batches/{openai_id}/cancel/$"))
    expect(page.get_by_role("heading", name="Cancel this batch?")).to_be_visible()
    shot(page, "cancel-confirm")
    # "No" goes back without doing anything.
    page.get_by_role("link", name="No, keep it running").click()
    expect(badge(page)).to_have_text("in progress")

    page.get_by_role("link", name="Cancel batch…").click()
    page.get_by_role("button", name="Yes, cancel the batch").click()
    expect(page).to_have_url(re.compile(rf"/connections/default/batches/{openai_id}/$"))
    expect(page.get_by_role("status")).to_contain_text("Cancellation requested.")
    expect(badge(page)).to_have_text("cancelling")
    expect(page.get_by_role("link", name="Cancel batch…")).to_have_count(0)

    sim.advance(5)  # past the simulator's cancelling: the open page shows it by itself
    expect(badge(page)).to_have_text("cancelled", timeout=WATCH_SECONDS * 1000)
    steps = page.locator("ol.timeline .step").all_text_contents()
    assert steps[-2:] == ["cancelling", "cancelled"], steps
    expect(page.locator("ul.events")).to_contain_text("sam cancelled this batch")

    # The activity log says who did it.
    page.get_by_role("link", name="Activity").click()
    entry = page.locator(
        "tbody tr", has=page.locator(f"a[href='/connections/default/batches/{openai_id}/']")
    )
    expect(entry).to_have_count(1)
    expect(entry.locator("td[data-label='Who']")).to_have_text("sam")
    expect(entry.locator("td[data-label='What']")).to_have_text("cancelled")
    shot(page, "activity")


def test_an_upstream_failure_shows_a_clear_message_and_the_cached_page(page_as, sim, shot):
    seeded = sim.seed(1, "in_progress", requests=1000, metadata={"job": "e2e upstream down"})
    openai_id = seeded["first_id"]
    page = page_as("alice")
    sync_and_open(page, openai_id)
    expect(badge(page)).to_have_text("in progress")

    # Enough 500s for every retry of the sync worker's calls meanwhile, and of Sync now.
    sim.faults(server_error=60)
    try:
        # The page never calls upstream; the worker meets the outage and the page says so.
        banner = page.get_by_role("alert").filter(has_text="Upstream is failing")
        for _ in range(MAX_RELOADS):
            page.reload()
            if banner.count():
                break
            page.wait_for_timeout(500)
        expect(banner).to_contain_text("(HTTP 500): The server had an error")
        note = page.locator("#detail-freshness")
        expect(note).to_contain_text("Upstream has been failing for OpenAI since")
        expect(note).to_contain_text("this page shows the cached copy until upstream answers")
        expect(badge(page)).to_have_text("in progress")
        expect(fact(page, "Progress", "Total")).to_have_text("1,000")
        shot(page, "detail-upstream-error")

        page.get_by_role("link", name="← Batches").click()
        page.get_by_role("button", name="Sync now").click()
        message = page.locator(".messages .msg.error")
        expect(message).to_contain_text("Sync failed; the list shows what was cached before.")
        expect(message).to_contain_text("(HTTP 500): The server had an error")
        expect(page.locator(f"tr[data-batch-id='{openai_id}']")).to_be_visible()
        banner = page.get_by_role("alert").filter(has_text="Upstream is failing")
        expect(banner).to_contain_text("The pages show the cached data.")
        request_ids = re.findall(r"req_\w+", banner.inner_text())
        assert len(request_ids) == 1, f"the request id once, not {request_ids}"
        shot(page, "list-upstream-error")
        text = page.locator("body").inner_text()
        assert "Traceback" not in text and "Server Error" not in text
    finally:
        sim.faults(server_error=0)

    # Once upstream answers again, the next sync clears the banner.
    page.get_by_role("button", name="Sync now").click()
    expect(page.get_by_role("status")).to_contain_text("Synced:")
    expect(page.get_by_role("alert").filter(has_text="Upstream is failing")).to_have_count(0)


def test_the_form_keeps_its_input_when_upstream_rejects_it(page_as, shot):
    page = page_as("sam")
    page.goto("/batches/new/")
    page.get_by_label("…or the id of a file already uploaded").fill("file-does-not-exist")
    page.get_by_label("Endpoint").select_option("/v1/embeddings")
    page.get_by_label("Label").fill("keep me")
    page.get_by_label("Metadata key 1", exact=True).fill("owner")
    page.get_by_label("Metadata value 1", exact=True).fill("sam")
    page.get_by_role("button", name="Continue").click()

    expect(page).to_have_url(re.compile(r"/batches/new/$"))
    error = page.get_by_role("alert")
    expect(error).to_contain_text("The batch was not created.")
    expect(error).to_contain_text("file-does-not-exist")
    expect(error).to_contain_text(re.compile(r"HTTP (400|404)"))
    expect(page.get_by_label("…or the id of a file already uploaded")).to_have_value(
        "file-does-not-exist"
    )
    expect(page.get_by_label("Endpoint")).to_have_value("/v1/embeddings")
    expect(page.get_by_label("Label")).to_have_value("keep me")
    expect(page.get_by_label("Metadata key 1", exact=True)).to_have_value("owner")
    expect(page.get_by_label("Metadata value 1", exact=True)).to_have_value("sam")
    shot(page, "create-error")

    # A form error of its own (no file id) is shown beside the field.
    page.get_by_label("…or the id of a file already uploaded").fill("")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator(".field.has-error")).to_contain_text(
        "Choose a JSONL file, or give the id of one."
    )
    expect(page.get_by_label("Label")).to_have_value("keep me")
