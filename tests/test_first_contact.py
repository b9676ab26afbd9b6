"""What a new user meets first (issue 13, item 8): the demo's sample batch runs long enough to
watch, as the README promises."""

from __future__ import annotations

from pathlib import Path

from batches.management.commands.serve import DEMO_SPEED
from simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "static" / "samples" / "sample-chat.jsonl"


def test_the_sample_batch_takes_about_a_minute_in_demo_mode():
    now = [1_800_000_000.0]
    sim = Simulator(clock=lambda: now[0], speed=DEMO_SPEED, api_key=None)
    uploaded = sim.create_file(filename=SAMPLE.name, purpose="batch", content=SAMPLE.read_bytes())
    batch = sim.create_batch(
        {
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
    )
    seen = {}
    for second in range(0, 121, 5):  # what a page polling every 5 s shows
        now[0] = 1_800_000_000.0 + second
        seen[second] = sim.get_batch(batch["id"])["status"]
    assert seen[0] == "validating"
    assert seen[15] == seen[30] == "in_progress"
    done_at = min(s for s, status in seen.items() if status == "completed")
    assert 45 <= done_at <= 75, seen  # "about a minute"
    assert "run to completion in about a minute" in (ROOT / "README.md").read_text()


def test_in_demo_mode_the_sign_in_page_says_so_and_where_the_password_is(client, settings, db):
    settings.BATCHWEB_DEMO = True
    page = client.get("/accounts/login/").content.decode()
    assert "This is a demo." in page
    assert (
        "<strong>demo</strong>" in page
        and "the terminal where you ran <code>make run</code>" in page
    )
    settings.BATCHWEB_DEMO = False
    assert "This is a demo." not in client.get("/accounts/login/").content.decode()
