"""Two connections side by side: one list, a filter, a batch created on the second, the
freshness line and the connections page (the harness's "OpenAI" and "Azure EU", see conftest)."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import BASE_DIR, EU_API_KEY, EU_DIALECT, EU_NAME, EU_SLUG, expect

pytestmark = pytest.mark.e2e

SAMPLE = BASE_DIR / "static" / "samples" / "sample-chat.jsonl"
FILE_LABEL = "Input file (JSONL)"
DEFAULT_NAME = "OpenAI"
JOB = "e2e two connections"  # the metadata both simulators' seeded batches carry
DIALECTS = {"openai": "OpenAI (or a compatible server)", "azure": "Azure OpenAI, v1 API"}
VIEWPORT_WIDTH = 1280


@pytest.fixture(scope="module")
def seeded(sim, sim_eu) -> dict[str, list[str]]:
    """Two completed batches in each simulator, with the same metadata; their ids by
    connection name."""
    ids = {}
    for name, simulator in [(DEFAULT_NAME, sim), (EU_NAME, sim_eu)]:
        answer = simulator.seed(2, "completed", metadata={"job": JOB})
        ids[name] = [answer["first_id"], answer["last_id"]]
    return ids


def rows(page):
    return page.locator("table.batches tbody tr")


def connection_cells(page) -> list[str]:
    cells = page.locator("table.batches tbody td[data-label='Connection']").all_text_contents()
    return [cell.strip() for cell in cells]


def sync_and_search(page, text: str) -> None:
    """Sync every connection the person sees (a message each), then search the list for TEXT."""
    page.goto("/")
    page.get_by_role("button", name="Sync now").click()
    for name in (DEFAULT_NAME, EU_NAME):
        expect(page.get_by_role("status")).to_contain_text(re.compile(rf"{name}: Synced: \d+ new"))
    page.get_by_label("Search").fill(text)
    page.get_by_label("Search").press("Enter")


def fits_the_width(page) -> None:
    """No sideways scrolling, and the batch table inside the viewport."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= VIEWPORT_WIDTH, width
    right = page.evaluate(
        "() => document.querySelector('table.batches').getBoundingClientRect().right"
    )
    assert right <= VIEWPORT_WIDTH, right


def test_one_list_shows_the_batches_of_both_connections(page_as, seeded, shot):
    page = page_as("eve")
    sync_and_search(page, JOB)
    expect(rows(page)).to_have_count(4)
    header = page.locator("table.batches thead th")
    expect(header).to_have_text(
        [
            "Batch",
            "Connection",
            "Label",
            "Status",
            "Progress",
            "Cost",
            "Model",
            "Endpoint",
            "Created by",
            "Created",
        ]
    )
    for name, ids in seeded.items():
        for openai_id in ids:
            row = page.locator(f"tr[data-batch-id='{openai_id}']")
            expect(row.locator("td[data-label='Connection']")).to_have_text(name)
            slug = "default" if name == DEFAULT_NAME else EU_SLUG
            expect(row.get_by_role("link", name=re.compile(r"^batch"))).to_have_attribute(
                "href", f"/connections/{slug}/batches/{openai_id}/"
            )
    assert sorted(connection_cells(page)) == [EU_NAME, EU_NAME, DEFAULT_NAME, DEFAULT_NAME]
    fits_the_width(page)
    shot(page, "connections-list")


def test_the_connection_select_narrows_the_list_to_one_connection(page_as, seeded, shot):
    page = page_as("eve")
    sync_and_search(page, JOB)
    expect(rows(page)).to_have_count(4)
    select = page.get_by_label("Connection", exact=True)
    expect(select).to_have_value("")

    select.select_option(label=EU_NAME)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"connection={EU_SLUG}"))
    expect(rows(page)).to_have_count(2)
    assert connection_cells(page) == [EU_NAME, EU_NAME]
    for openai_id in seeded[EU_NAME]:
        expect(page.locator(f"tr[data-batch-id='{openai_id}']")).to_be_visible()
    for openai_id in seeded[DEFAULT_NAME]:
        expect(page.locator(f"tr[data-batch-id='{openai_id}']")).to_have_count(0)
    expect(page.get_by_label("Connection", exact=True)).to_have_value(EU_SLUG)
    expect(page.get_by_label("Search")).to_have_value(JOB)  # the search is kept
    shot(page, "connections-list-filtered")

    page.get_by_label("Connection", exact=True).select_option(label=DEFAULT_NAME)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"connection=default"))
    expect(rows(page)).to_have_count(2)
    assert connection_cells(page) == [DEFAULT_NAME, DEFAULT_NAME]
    for openai_id in seeded[DEFAULT_NAME]:
        expect(page.locator(f"tr[data-batch-id='{openai_id}']")).to_be_visible()


def test_a_batch_created_on_the_second_connection_goes_to_its_server(page_as, sim, sim_eu, shot):
    before, before_eu = sim.calls(), sim_eu.calls()
    page = page_as("eve")
    page.goto("/batches/new/")
    select = page.get_by_label("Connection", exact=True)
    expect(select).to_be_visible()
    expect(select.locator("option")).to_have_text([EU_NAME, DEFAULT_NAME])
    select.select_option(EU_SLUG)
    page.get_by_label(FILE_LABEL).set_input_files(str(SAMPLE))
    page.get_by_label("Label").fill("e2e on azure-eu")
    shot(page, "connections-create")
    page.get_by_role("button", name="Continue").click()

    expect(page.get_by_role("heading", name="Create this batch?")).to_be_visible()
    expect(page.locator("dl.facts dt:text-is('Connection') + dd")).to_have_text(EU_NAME)
    expect(page.get_by_text(f"The file is uploaded to {EU_NAME}")).to_be_visible()
    shot(page, "connections-confirm")
    page.get_by_role("button", name="Upload and create the batch").click()

    expect(page).to_have_url(re.compile(rf"/connections/{EU_SLUG}/batches/batch[\w-]+/$"))
    openai_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    expect(page.get_by_role("status")).to_have_text(f"Batch {openai_id} created.")
    expect(page.locator("p.sub").get_by_role("link", name=EU_NAME)).to_have_attribute(
        "href", f"/connections/{EU_SLUG}/"
    )
    shot(page, "connections-created")

    after, after_eu = sim.calls(), sim_eu.calls()
    for operation in ("createFile", "createBatch"):
        assert after_eu.get(operation, 0) - before_eu.get(operation, 0) == 1, operation
        assert after.get(operation, 0) - before.get(operation, 0) == 0, operation
    batch = sim_eu.api("GET", f"/batches/{openai_id}")
    assert batch["metadata"]["job"] == "e2e on azure-eu"
    assert batch["metadata"]["batchweb_user"] == "eve"
    content = sim_eu.http.get(
        f"{sim_eu.base_url}/files/{batch['input_file_id']}/content",
        headers={"Authorization": f"Bearer {EU_API_KEY}"},
        timeout=10,
    )
    assert content.content == SAMPLE.read_bytes()


def test_the_freshness_line_names_each_connection(page_as, seeded, shot):
    page = page_as("eve")
    sync_and_search(page, JOB)
    freshness = page.locator("#freshness")
    for name, slug in [(DEFAULT_NAME, "default"), (EU_NAME, EU_SLUG)]:
        expect(freshness.get_by_role("link", name=name)).to_have_attribute(
            "href", f"/connections/{slug}/"
        )
        expect(freshness).to_contain_text(re.compile(rf"{name}: synced \S"))
    expect(freshness).not_to_contain_text("not synced yet")
    shot(page, "connections-freshness")

    # Someone outside the group sees the one connection they may use, worded as before.
    other = page_as("sam")
    other.goto("/")
    expect(other.locator("#freshness")).to_contain_text("Data synced")
    expect(other.locator("#freshness")).not_to_contain_text(EU_NAME)


def test_the_connections_page_lists_both(page_as, seeded, shot):
    page = page_as("eve")
    sync_and_search(page, JOB)
    page.get_by_role("navigation").get_by_role("link", name="Connections").click()
    expect(page).to_have_url(re.compile(r"/connections/$"))
    expect(page.get_by_role("heading", name="Connections")).to_be_visible()
    table = page.locator("table.connections tbody tr")
    expect(table).to_have_count(2)
    for name, slug, dialect in [
        (DEFAULT_NAME, "default", DIALECTS["openai"]),
        (EU_NAME, EU_SLUG, DIALECTS[EU_DIALECT]),
    ]:
        row = table.filter(has=page.get_by_role("link", name=name, exact=True))
        expect(row.locator("td[data-label='Connection'] .sub")).to_have_text(slug)
        expect(row.locator("td[data-label='Dialect']")).to_contain_text(dialect)
        expect(row.locator("td[data-label='State']")).to_contain_text("working")
        count = int(row.locator("td[data-label='Batches']").inner_text().replace(",", ""))
        assert count >= 2, (name, count)
    shot(page, "connections-page")

    other = page_as("sam")
    other.goto("/connections/")
    expect(other.locator("table.connections tbody tr")).to_have_count(1)
    expect(other.get_by_role("link", name=DEFAULT_NAME, exact=True)).to_be_visible()
    expect(other.get_by_text(EU_NAME)).to_have_count(0)
