"""axe-core on every page, light and dark (issue 13, item 7): no serious or critical violation.

axe-core is the one bundled with `axe-playwright-python` (a dev dependency), injected into
each page by Playwright. Pages are visited as the people who use them: an operator for the
batch pages, a viewer for a refusal, nobody for the sign-in page."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import BASE_DIR, expect, wait_for_import

pytestmark = pytest.mark.e2e

SAMPLE = BASE_DIR / "static" / "samples" / "sample-chat.jsonl"
BLOCKING = ("serious", "critical")


@pytest.fixture(scope="module")
def axe() -> Any:
    from axe_playwright_python.sync_playwright import Axe

    return Axe()


@pytest.fixture(scope="module")
def ids(sim, web_server, server_env) -> dict[str, str]:
    """A running batch and a finished one with results, imported by the worker."""
    running = sim.seed(1, "in_progress", requests=1000, metadata={"job": "a11y running"})
    done = sim.seed(1, "completed", metadata={"job": "a11y done"})
    wait_for_import(server_env, [running["first_id"], done["first_id"]])
    return {"running": running["first_id"], "done": done["first_id"]}


def blocking(axe: Any, page: Any) -> list[str]:
    """The serious and critical violations on the page, in words a reader can act on."""
    results = axe.run(page)
    found = []
    for violation in results.response["violations"]:
        if violation.get("impact") in BLOCKING:
            targets = [", ".join(node["target"]) for node in violation["nodes"][:3]]
            found.append(f"{violation['id']} ({violation['impact']}): {targets}")
    return found


def pages(ids: dict[str, str]) -> list[tuple[str, str]]:
    batch = "/connections/default/batches/{}/"
    return [
        ("sam", "/"),
        ("sam", "/?status=running"),
        ("sam", batch.format(ids["running"])),
        ("sam", batch.format(ids["done"])),
        ("sam", batch.format(ids["done"]) + "results/"),
        ("sam", "/batches/new/"),
        ("sam", "/activity/"),
        ("sam", "/spend/"),
        ("sam", "/profile/"),
        ("sam", "/connections/"),
        ("sam", "/connections/default/"),
        ("sam", "/no-such-page/"),  # the 404 page
        ("vic", "/batches/new/"),  # the 403 page
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_page_has_a_serious_violation(ids, page_as, new_page, axe, scheme):
    problems: dict[str, list[str]] = {}
    checked = 0
    for who, url in pages(ids):
        page = page_as(who, color_scheme=scheme)
        page.goto(url)
        page.wait_for_load_state("networkidle")
        if found := blocking(axe, page):
            problems[f"{who} {url}"] = found
        checked += 1
        page.close()
    # The result pages: one row's page, and the confirm step of a new batch.
    page = page_as("sam", color_scheme=scheme)
    page.goto(f"/connections/default/batches/{ids['done']}/results/")
    rows = page.locator("table a[href*='/results/']")
    if rows.count():
        rows.first.click()
        page.wait_for_load_state()
        if found := blocking(axe, page):
            problems[f"sam {page.url}"] = found
        checked += 1
    page.goto("/batches/new/")
    page.get_by_label("Input file (JSONL)").set_input_files(str(SAMPLE))
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Create this batch?")).to_be_visible()
    if found := blocking(axe, page):
        problems["sam confirm page"] = found
    checked += 1
    # A page carrying a message (the list after Save, Sync now, a new batch, ...).
    page.goto("/profile/")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Your notification settings are saved")
    if found := blocking(axe, page):
        problems["sam page with a message"] = found
    checked += 1
    signed_out = new_page(color_scheme=scheme)
    signed_out.goto("/accounts/login/")
    if found := blocking(axe, signed_out):
        problems["sign-in page"] = found
    checked += 1
    assert checked >= 17
    assert not problems, "\n".join(f"{where}: {found}" for where, found in problems.items())


@pytest.mark.parametrize("width", [1024, 1366, 390])
def test_copy_buttons_stay_inside_their_cards(ids, page_as, shot, width):
    page = page_as("sam", viewport={"width": width, "height": 900})
    for which in ("running", "done"):
        page.goto(f"/connections/default/batches/{ids[which]}/")
        outside = page.evaluate(
            """() => [...document.querySelectorAll('button.copy')].filter(button => {
                const box = button.getBoundingClientRect();
                const card = button.closest('.card, main').getBoundingClientRect();
                const out = box.right > card.right + 0.5 || box.left < card.left - 0.5;
                return box.width > 0 && out;
            }).map(button => {
                const box = button.getBoundingClientRect();
                const holder = button.closest('.card, main');
                const card = holder.getBoundingClientRect();
                const where = holder.querySelector('h1, h2');
                return `${where ? where.textContent.trim() : holder.tagName}: button ` +
                    `${box.left.toFixed(0)}-${box.right.toFixed(0)}, ` +
                    `card ${card.left.toFixed(0)}-${card.right.toFixed(0)}`;
            })"""
        )
        assert outside == [], (which, width, outside)
        shot(page, f"detail-{which}-{width}px")
