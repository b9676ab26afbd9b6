"""The batch list: Sync now, the status tabs, search and filters, and the phone layout."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import expect

pytestmark = pytest.mark.e2e

RUNNING = {"validating", "in progress", "finalizing", "cancelling"}


@pytest.fixture(scope="module")
def seeded(sim) -> dict[str, str]:
    """One or more batches in each status, straight into the simulator; returns an id of each."""
    ids = {}
    for status, count, options in [
        ("completed", 3, {}),
        ("failed", 2, {}),
        ("expired", 1, {}),
        ("cancelled", 1, {}),
        ("in_progress", 2, {"requests": 1000}),  # 1000 s in progress: stays running
    ]:
        answer = sim.seed(count, status, metadata={"job": f"seeded {status}"}, **options)
        ids[status] = answer["first_id"]
    return ids


def rows(page):
    return page.locator("table.batches tbody tr")


def badges(page) -> list[str]:
    return [text.strip() for text in page.locator("table.batches tbody .badge").all_text_contents()]


def tab(page, label: str):
    return page.get_by_role("navigation", name="Filter by status").get_by_role(
        "link", name=re.compile(rf"^{label} ")
    )


def tab_count(page, label: str) -> int:
    return int(tab(page, label).locator(".count").inner_text().replace(",", ""))


def test_the_list_shows_synced_batches_and_the_status_tabs_filter_them(page_as, seeded, shot):
    page = page_as("alice")
    page.goto("/")
    page.get_by_role("button", name="Sync now").click()
    expect(page.get_by_role("status")).to_contain_text(re.compile(r"Synced: \d+ new"))
    # alice, an admin, sees both of the harness's connections: the line names each
    # (the one-connection wording, "Data synced", is checked in test_connections.py).
    expect(page.locator("#freshness")).to_contain_text("OpenAI: synced")
    for openai_id in seeded.values():
        expect(page.locator(f"tr[data-batch-id='{openai_id}']")).to_be_visible()
    row = page.locator(f"tr[data-batch-id='{seeded['in_progress']}']")
    expect(row.locator(".badge")).to_have_text("in progress")
    expect(row).to_contain_text("seeded in_progress")
    expect(row.get_by_role("img")).to_have_attribute(
        "aria-label", re.compile(r"^\d+ of 1000 requests done$")
    )
    shot(page, "list")

    expected = {
        "Failed": {"failed"},
        "Expired": {"expired"},
        "Cancelled": {"cancelled"},
        "Running": RUNNING,
        "Completed": {"completed", "completed with failures", "completed, all failed"},
    }
    counts = {}
    for label, allowed in expected.items():
        tab(page, label).click()
        expect(tab(page, label)).to_have_attribute("aria-current", "true")
        expect(rows(page).first).to_be_visible()
        shown = badges(page)
        assert set(shown) <= allowed, (label, shown)
        counts[label] = tab_count(page, label)
        assert len(shown) == min(counts[label], 50), (label, shown, counts[label])
    expect(page).to_have_url(re.compile(r"\?status=completed$"))
    expect(page.locator(f"tr[data-batch-id='{seeded['completed']}']")).to_be_visible()
    expect(page.locator(f"tr[data-batch-id='{seeded['failed']}']")).to_have_count(0)

    tab(page, "All").click()
    expect(page).to_have_url(re.compile(r"/\?$|/$"))
    # The tabs partition All (cancelling counts as running). Other tests may add batches
    # meanwhile, so All is at least the sum read above.
    assert tab_count(page, "All") >= sum(counts.values())


def test_the_list_becomes_cards_on_a_phone(page_as, seeded, shot):
    page = page_as("alice", viewport={"width": 390, "height": 844})
    page.goto("/")
    expect(rows(page).first).to_be_visible()
    expect(page.locator("table.batches thead")).to_be_hidden()
    # No sideways scrolling: the page fits the phone's width.
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width
    shot(page, "list-phone")


def test_search_by_id_and_filters_by_endpoint_and_model_narrow_the_list(page_as, sim, shot):
    lines = [
        {
            "custom_id": f"emb-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": f"text {i}"},
        }
        for i in range(2)
    ]
    file_id = sim.upload("".join(json.dumps(line) + "\n" for line in lines), "emb.jsonl")
    batch = sim.api(
        "POST",
        "/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
            "metadata": {"job": "e2e-embeddings-search"},
        },
    )
    sim.seed(1, "completed", endpoint="/v1/embeddings")  # same endpoint, another model

    page = page_as("alice")
    page.goto("/")
    page.get_by_role("button", name="Sync now").click()
    expect(page.locator(f"tr[data-batch-id='{batch['id']}']")).to_be_visible()

    # Search by id, with the keyboard: the search box is the first field of the filter form.
    page.get_by_role("button", name="Sync now").focus()
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "id_q":
            break
    expect(page.get_by_label("Search")).to_be_focused()
    page.keyboard.type(batch["id"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"\?q=batch_"))
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_contain_text("e2e-embeddings-search")
    expect(page.get_by_label("Search")).to_have_value(batch["id"])

    # Search by metadata.
    page.get_by_label("Search").fill("E2E-embeddings")
    page.get_by_label("Search").press("Enter")
    expect(rows(page)).to_have_count(1)

    page.get_by_role("link", name="Clear").click()
    expect(page).to_have_url(re.compile(r"/$"))

    # Endpoint through the form's select and the Filter button.
    page.get_by_label("Endpoint").select_option("/v1/embeddings")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"endpoint=%2Fv1%2Fembeddings"))
    endpoints = page.locator("table.batches tbody td[data-label='Endpoint']").all_text_contents()
    assert len(endpoints) >= 2 and {e.strip() for e in endpoints} == {"/v1/embeddings"}
    expect(page.get_by_label("Endpoint")).to_have_value("/v1/embeddings")

    # And the model, finishing with the keyboard: Tab past "Created by" to Filter, then Enter.
    page.get_by_label("Model").select_option("text-embedding-3-small")
    page.get_by_label("Model").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Filter")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"model=text-embedding-3-small"))
    expect(rows(page)).to_have_count(1)
    expect(page.locator(f"tr[data-batch-id='{batch['id']}']")).to_be_visible()
    shot(page, "list-filtered")

    # The tabs keep the filters.
    tab(page, "Failed").click()
    expect(page).to_have_url(re.compile(r"model=text-embedding-3-small"))
    expect(page.get_by_text("No batch matches these filters.")).to_be_visible()
