"""Submitting a JSONL file through the browser: checked, confirmed, uploaded, created (issue 4)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.e2e.conftest import API_KEY, BASE_DIR, expect

pytestmark = pytest.mark.e2e

SAMPLE = BASE_DIR / "static" / "samples" / "sample-chat.jsonl"
FILE_LABEL = "Input file (JSONL)"


def sim_calls(sim) -> dict[str, int]:
    """The simulator's call counts per operationId (shared by the whole session)."""
    response = sim.http.get(f"{sim.server.root_url}/_sim/state", timeout=10)
    response.raise_for_status()
    return response.json()["calls"]


def sent(before: dict[str, int], after: dict[str, int], operation: str) -> int:
    return after.get(operation, 0) - before.get(operation, 0)


def summary(page, name: str):
    """The value beside NAME in the confirmation page's summary."""
    return page.locator(f"dl.facts dt:text-is('{name}') + dd")


def request_line(number: int, **changes: Any) -> str:
    request: dict[str, Any] = {
        "custom_id": f"req-{number}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Say {number}"}],
        },
    }
    request.update(changes)
    return json.dumps(request)


def test_a_jsonl_file_is_checked_confirmed_uploaded_and_created(page_as, sim, shot):
    before = sim_calls(sim)
    page = page_as("sam")
    page.goto("/batches/new/")
    expect(page.get_by_role("heading", name="New batch")).to_be_visible()
    page.get_by_label(FILE_LABEL).set_input_files(str(SAMPLE))
    page.get_by_label("Label").fill("e2e upload")
    page.get_by_role("button", name="Continue").click()

    # The summary, before anything is sent.
    expect(page).to_have_url(re.compile(r"/batches/new/[\w-]+/$"))
    expect(page.get_by_role("heading", name="Create this batch?")).to_be_visible()
    expect(summary(page, "File")).to_have_text("sample-chat.jsonl")
    expect(summary(page, "Requests")).to_have_text("20")
    expect(summary(page, "Model")).to_have_text("gpt-4o-mini")
    expect(summary(page, "Endpoint")).to_have_text("/v1/chat/completions")
    expect(summary(page, "Size")).to_have_text(re.compile(r"^\d+(\.\d)?\s?KB$"))
    expect(summary(page, "Input tokens")).to_contain_text(re.compile(r"about [\d,]+"))
    expect(summary(page, "Metadata")).to_contain_text("job=e2e upload")
    shot(page, "upload-confirm")
    checked = sim_calls(sim)
    assert sent(before, checked, "createFile") == sent(before, checked, "createBatch") == 0

    page.get_by_role("button", name="Upload and create the batch").click()

    expect(page).to_have_url(re.compile(r"/connections/default/batches/batch_\w+/$"))
    openai_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    expect(page.get_by_role("status")).to_have_text(f"Batch {openai_id} created.")
    expect(page.locator("p.sub")).to_contain_text("e2e upload")
    expect(page.locator("p.sub")).to_contain_text("by sam")
    files = page.locator("section.card", has=page.get_by_role("heading", name="Files"))
    expect(files.locator("dt:text-is('Input') + dd")).to_contain_text("sample-chat.jsonl")
    expect(files.locator("dt:text-is('Input') + dd")).to_contain_text("20 lines")
    shot(page, "upload-created")

    after = sim_calls(sim)
    assert sent(before, after, "createFile") == 1
    assert sent(before, after, "createBatch") == 1
    batch = sim.api("GET", f"/batches/{openai_id}")
    assert batch["metadata"]["job"] == "e2e upload"
    assert batch["metadata"]["batchweb_user"] == "sam"
    content = sim.http.get(
        f"{sim.base_url}/files/{batch['input_file_id']}/content",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert content.content == SAMPLE.read_bytes()  # uploaded whole, byte for byte


def test_a_broken_file_is_refused_with_its_problems_listed(page_as, sim, shot, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        "\n".join(
            [
                request_line(1),
                request_line(2, method="GET"),
                request_line(3),
                request_line(4, custom_id="req-1"),
                '{"custom_id": "req-5", "method": "POST"',
                request_line(6, body={"model": "gpt-4o", "messages": [{"role": "user"}]}),
            ]
        )
        + "\n"
    )
    before = sim_calls(sim)
    page = page_as("sam")
    page.goto("/batches/new/")
    page.get_by_label(FILE_LABEL).set_input_files(str(broken))
    page.get_by_label("Label").fill("keep me")
    page.get_by_role("button", name="Continue").click()

    expect(page).to_have_url(re.compile(r"/batches/new/$"))
    problems = page.locator("#problems")
    expect(problems).to_contain_text("The file was not sent: 6 requests")
    expect(problems).to_contain_text("5 problems (1 with the whole file, 4 on lines)")
    expect(problems.locator("ul li")).to_have_text(
        [
            "the file mixes 2 models ('gpt-4o-mini' on 4 lines, 'gpt-4o' on 1 line);"
            " a batch takes one"
        ]
    )
    expect(problems.locator("ol.problem-list li")).to_have_text(
        [
            "line 2: method must be 'POST', not 'GET'",
            "line 4: custom_id 'req-1' already used on line 1",
            re.compile(r"^line 5: not valid JSON"),
            "line 6: model 'gpt-4o' differs from 'gpt-4o-mini' used on line 1;"
            " a batch takes one model",
        ]
    )
    expect(problems).to_contain_text("Nothing was uploaded.")
    expect(page.get_by_label("Label")).to_have_value("keep me")
    shot(page, "upload-problems")

    after = sim_calls(sim)
    assert sent(before, after, "createFile") == 0
    assert sent(before, after, "createBatch") == 0
