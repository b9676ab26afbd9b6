"""The spend page in a real browser: charts present and labelled, and the numbers of each
chart equal to the table beside it; usable by keyboard, light and dark."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.e2e.conftest import expect, finish, start_manage, wait_for_import

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def priced(sim, web_server, server_env) -> str:
    """Finished batches with usage in the simulator, imported by the worker and priced."""
    answer = sim.seed(4, "completed", metadata={"job": "spend e2e"})
    wait_for_import(server_env, [answer["first_id"], answer["last_id"]])
    # Prices are the worker's minute chore; compute them now rather than wait for it.
    finish(start_manage(server_env, "costs_recompute", "--all"), "costs_recompute")
    return answer["last_id"]


def values(locator) -> list[Decimal]:
    return [Decimal(v) for v in locator.evaluate_all("els => els.map(e => e.dataset.value)")]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_charts_are_labelled_and_match_their_tables(priced, page_as, shot, scheme):
    page = page_as("vic", color_scheme=scheme)  # a Viewer
    page.goto("/spend/?range=7d&by=day")
    expect(page.get_by_role("heading", name="Spend", exact=True)).to_be_visible()
    charts = page.locator("svg[role=img]")
    assert charts.count() >= 4  # spend, tokens, and by model, person, label
    for i in range(charts.count()):
        chart = charts.nth(i)
        name = chart.evaluate(
            "svg => svg.getAttribute('aria-labelledby').split(' ')"
            ".map(id => document.getElementById(id).textContent).join(' ')"
        )
        assert name.strip() and "table" in name  # titled, and says where its numbers are
    spent = page.locator("[data-chart=chart-spend] rect.bar:not(.second)")
    by_day = values(page.locator("table[data-table=time] tbody tr td:nth-child(3)"))
    assert values(spent) == by_day
    assert sum(by_day) > 0
    tokens_in = values(page.locator("[data-chart=chart-tokens] rect.bar:not(.second)"))
    assert tokens_in == values(page.locator("table[data-table=time] tbody tr td:nth-child(5)"))
    by_model = values(page.locator("[data-chart=chart-model] rect.bar"))
    assert by_model == values(page.locator("table[data-table=model] tbody td:nth-child(3)"))[:8]
    total = Decimal(page.locator(".stat .figure").first.inner_text().lstrip("$").replace(",", ""))
    assert abs(total - sum(by_day)) < Decimal("0.005")  # cents, or micro-dollars under a cent
    # A bar's exact figure is in its tooltip.
    title = page.locator("[data-chart=chart-spend] rect.bar title").last.text_content()
    assert "$" in title and "batches" in title
    shot(page, f"spend-{scheme}")


def test_the_range_form_works_by_keyboard(priced, page_as):
    page = page_as("vic")
    page.goto("/spend/")
    page.get_by_label("Range", exact=True).focus()
    page.get_by_label("Range", exact=True).select_option("90d")
    page.get_by_label("By", exact=True).select_option("week")
    page.get_by_role("button", name="Show").press("Enter")
    page.wait_for_load_state()
    assert "range=90d" in page.url and "by=week" in page.url
    expect(page.get_by_role("heading", name="Spend by week")).to_be_visible()
    with page.expect_download() as download:
        page.locator("a[href*='table=model']").click()
    assert download.value.suggested_filename.startswith("spend-model-")
