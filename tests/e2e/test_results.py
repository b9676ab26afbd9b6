"""What a finished batch produced, through the browser: the summary, the results table, failures
only, one result, and retrying what did not succeed (issue 5)."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import expect

pytestmark = pytest.mark.e2e

FILE_LABEL = "Input file (JSONL)"
MAX_RELOADS = 30
CUSTOM_IDS = ["req-1", "req-2", "req-3", "req-4", "req-5-fail", "req-6-fail"]


def chat_jsonl(custom_ids: list[str]) -> str:
    lines = [
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Tell me about {custom_id}"}],
            },
        }
        for custom_id in custom_ids
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


def badge(page):
    return page.locator("h1 .badge")


def fact(page, name: str):
    return page.locator(f"dl.facts dt:text-is('{name}') + dd")


def result_ids(page) -> list[str]:
    return page.locator("table.results td[data-label='custom_id'] a").all_inner_texts()


def submit_file(page, path, label: str) -> str:
    """Create a batch from a JSONL file through the form; return its id."""
    page.goto("/batches/new/")
    page.get_by_label(FILE_LABEL).set_input_files(str(path))
    page.get_by_label("Label").fill(label)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Upload and create the batch").click()
    expect(page).to_have_url(re.compile(r"/connections/default/batches/batch_\w+/$"))
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def test_results_are_read_filtered_and_the_failures_retried(page_as, sim, shot, tmp_path):
    path = tmp_path / "with-failures.jsonl"
    path.write_text(chat_jsonl(CUSTOM_IDS))
    page = page_as("sam")
    origin = submit_file(page, path, "e2e results")

    for _ in range(MAX_RELOADS):
        if badge(page).inner_text() == "completed with failures":
            break
        sim.advance(2)
        page.reload()
    expect(badge(page)).to_have_text("completed with failures")

    # The batch page offers the results, and the summary (or where it will come from).
    expect(
        page.get_by_text(re.compile(r"What the batch produced|The summary of what this batch"))
    ).to_be_visible()
    page.get_by_role("link", name="View results").click()

    # The results table: every request, joined to its input line.
    expect(page).to_have_url(re.compile(rf"/connections/default/batches/{origin}/results/$"))
    expect(page.get_by_role("heading", name="Results")).to_be_visible()
    expect(page.locator("table.results tbody tr")).to_have_count(6)
    assert result_ids(page) == CUSTOM_IDS
    ok_row = page.locator("table.results tbody tr", has_text="req-1")
    expect(ok_row.first).to_contain_text("Tell me about req-1")
    expect(page.locator("p.sub")).to_contain_text("6 requests · 2 did not succeed")
    shot(page, "results-table")

    # Failures only.
    page.get_by_label("Failures only").check()
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"[?&]failed=1"))
    expect(page.locator("table.results tbody tr")).to_have_count(2)
    assert result_ids(page) == ["req-5-fail", "req-6-fail"]
    expect(page.locator("table.results")).to_contain_text("invalid_value")
    shot(page, "results-failures-only")

    # One result, its request and response pretty-printed.
    page.get_by_role("link", name="req-5-fail").click()
    expect(page.locator("h1")).to_contain_text("req-5-fail")
    expect(page.locator("h1 .badge")).to_have_text("failed · 400")
    request = page.locator("section.card", has=page.get_by_role("heading", name="Request"))
    response = page.locator("section.card", has=page.get_by_role("heading", name="Response"))
    expect(request.locator("pre")).to_contain_text('"custom_id": "req-5-fail"')
    expect(response.locator("pre")).to_contain_text('"status_code": 400')
    expect(response.locator("pre")).to_contain_text("contains 'fail'")
    shot(page, "result-one")

    # Back on the batch page, the stored summary.
    page.locator(".crumbs").get_by_role("link", name=origin).click()
    expect(page.get_by_role("heading", name="What the batch produced")).to_be_visible()
    expect(fact(page, "Succeeded").last).to_have_text("4")
    summary = page.locator("section.card", has=page.get_by_role("heading", name="What the"))
    expect(summary.locator("dt:text-is('Failed') + dd")).to_have_text("2")
    expect(summary.locator("table")).to_contain_text("HTTP 400")
    expect(summary.locator("ol")).to_contain_text("\N{MULTIPLICATION SIGN} 1")
    shot(page, "results-summary")

    # Retry what did not succeed: the confirmation says how many and why.
    page.get_by_role("button", name="Retry what did not succeed…").click()
    expect(page).to_have_url(re.compile(r"/batches/new/[\w-]+/$"))
    expect(page.get_by_role("heading", name="A new batch of the 2 requests")).to_be_visible()
    expect(fact(page, "Requests")).to_have_text("2")
    expect(fact(page, "Retry of")).to_have_text(origin)
    expect(fact(page, "Why")).to_contain_text("2 invalid_value")
    shot(page, "retry-confirm")

    page.get_by_role("button", name="Upload and create the batch").click()
    expect(page).to_have_url(re.compile(r"/connections/default/batches/batch_\w+/$"))
    retry = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert retry != origin
    expect(page.get_by_text(f"This batch retries {origin}")).to_be_visible()
    files = page.locator("section.card", has=page.get_by_role("heading", name="Files"))
    expect(files.locator("dt:text-is('Input') + dd")).to_contain_text("2 lines")
    shot(page, "retry-created")

    # The origin lists its retry.
    page.get_by_role("link", name=origin).click()
    retries = page.locator("section.card", has=page.get_by_role("heading", name="Retries"))
    expect(retries.get_by_role("link", name=retry)).to_be_visible()
