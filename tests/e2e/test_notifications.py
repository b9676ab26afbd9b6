"""Notifications (issue 10): a person watches a running batch, it ends upstream, and an email
reaches them through a real SMTP server, with the audit trail saying who watched; the profile
page turns those emails off."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.conftest import expect

pytestmark = pytest.mark.e2e

LABEL = "e2e watched by vic"
VIC_EMAIL = "vic@example.com"
REQUESTS = 100  # seeded half done: about 50 s of the simulator's time left, so it runs on its own
SYNC_TIMEOUT = 20.0  # seconds: the worker syncs every second
LIVE_TIMEOUT_MS = 20_000  # the worker syncs every second and the page polls every second
MAIL_TIMEOUT = 20.0  # seconds: the worker sends what is due every 5 s


def open_once_synced(page, openai_id: str) -> None:
    """A viewer cannot press Sync now: search the list for the batch, reloading until the worker
    has brought it in, then open it from its row."""
    page.goto(f"/?q={openai_id}")
    row = page.locator(f"tr[data-batch-id='{openai_id}']")
    deadline = time.monotonic() + SYNC_TIMEOUT
    while row.count() == 0:
        if time.monotonic() > deadline:
            pytest.fail(f"the worker did not bring {openai_id} in within {SYNC_TIMEOUT:.0f} s")
        page.wait_for_timeout(500)
        page.reload()
    row.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(rf"/connections/default/batches/{openai_id}/$"))


def test_a_viewer_watches_a_running_batch_and_is_emailed_when_it_ends(
    page_as, sim, mailbox, web_server, shot
):
    openai_id = sim.seed(1, "in_progress", requests=REQUESTS, metadata={"job": LABEL})["first_id"]
    page = page_as("vic")
    open_once_synced(page, openai_id)
    expect(page.locator("h1 .badge")).to_have_text("in progress")
    watch = page.get_by_role("button", name="Watch", exact=True)
    expect(watch).to_have_attribute("title", "Get an email when this batch ends")
    expect(page.locator("#watch-count")).to_have_text("nobody watches it")
    shot(page, "notify-watch-button")

    # By keyboard: the button takes the focus and Enter presses it.
    watch.focus()
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(rf"/connections/default/batches/{openai_id}/$"))
    expect(page.get_by_role("status")).to_have_text(
        f"You are watching this batch: {VIC_EMAIL} is told when it ends."
    )
    expect(page.get_by_role("button", name="Stop watching")).to_be_visible()
    expect(page.get_by_role("button", name="Watch", exact=True)).to_have_count(0)
    expect(page.locator("#watch-count")).to_have_text("you watch it")
    expect(page.locator("ul.events")).to_contain_text("vic watched this batch")
    expect(page.locator("h1 .badge")).to_have_text("in progress")  # still running: it counts
    shot(page, "notify-watching")

    sim.advance(REQUESTS // 2 + 10)  # past its end (half its requests and finalizing): done

    # The open page notices (it reloads once), and a finished batch has nothing to watch.
    expect(page.locator("h1 .badge")).to_have_text("completed", timeout=LIVE_TIMEOUT_MS)
    expect(page.get_by_role("button", name=re.compile("watch", re.I))).to_have_count(0)

    subject = f"Batch {LABEL} completed (OpenAI)"
    mail = mailbox.wait_for(
        lambda m: VIC_EMAIL in m.recipients and m.subject == subject,
        timeout=MAIL_TIMEOUT,
        what=f"to {VIC_EMAIL} saying {subject!r}",
    )
    assert mail.recipients == (VIC_EMAIL,), mail.recipients
    link = f"{web_server.url}/connections/default/batches/{openai_id}/"
    body = mail.body
    assert f"Batch {LABEL} completed." in body, body
    assert re.search(rf"^Batch: +{openai_id}$", body, re.M), body
    assert re.search(rf"^Requests: +{REQUESTS} succeeded, 0 failed, {REQUESTS} in all$", body, re.M)
    assert f"\nOpen it: {link}\n" in body, body
    assert "You receive this because you watch this batch." in body, body
    assert f"{web_server.url}/profile/" in body, body

    # The link in the email opens the batch.
    page.goto(link)
    expect(page.locator("h1 .badge")).to_have_text("completed")
    expect(page.locator("ul.events")).to_contain_text("vic watched this batch")

    # The Activity page, as an admin: vic watched it, and nothing failed to be delivered.
    admin = page_as("alice")
    admin.goto("/")
    admin.get_by_role("navigation", name="Main").get_by_role("link", name="Activity").click()
    admin.get_by_label("Batch id").fill(openai_id)
    admin.get_by_role("button", name="Filter").click()
    rows = admin.locator("table.activity tbody tr")
    expect(rows).to_have_count(1)
    entry = rows.first
    expect(entry.locator("td[data-label='Who']")).to_have_text("vic")
    expect(entry.locator("td[data-label='What']")).to_have_text("watched")
    expect(entry.locator("td[data-label='Outcome']")).to_have_text("ok")
    expect(entry.locator("td[data-label='Batch']")).to_have_text(openai_id)
    shot(admin, "notify-activity")
    admin.get_by_label("Batch id").fill("")
    admin.get_by_label("Action").select_option(label="could not deliver a notification")
    admin.get_by_role("button", name="Filter").click()
    expect(admin.locator("table.activity")).to_have_count(0)

    # The batch is on vic's profile page among the batches vic watches.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="vic", exact=True).click()
    watched = page.locator("section", has=page.get_by_role("heading", name="Batches I watch"))
    expect(watched.get_by_role("listitem").filter(has_text=LABEL)).to_contain_text("completed")

    # Told once, however many times the ending was stored (the page's refresh, the worker).
    told = [m for m in mailbox.to(VIC_EMAIL) if m.subject == subject]
    assert len(told) == 1, [str(m) for m in told]


def test_a_viewer_switches_off_the_emails_of_the_batches_they_watch(page_as, shot):
    page = page_as("vic")
    page.goto("/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="vic", exact=True).click()
    expect(page).to_have_url(re.compile(r"/profile/$"))
    expect(page.get_by_role("heading", name="vic", level=1)).to_be_visible()
    expect(page.get_by_label("Email address")).to_have_value(VIC_EMAIL)
    switch = page.get_by_role("checkbox", name="Batches I watch", exact=True)
    expect(switch).to_be_checked()
    try:
        switch.uncheck()
        page.get_by_role("button", name="Save").click()

        expect(page).to_have_url(re.compile(r"/profile/$"))
        expect(page.get_by_role("status")).to_have_text("Your notification settings are saved.")
        expect(switch).not_to_be_checked()
        expect(
            page.get_by_role("checkbox", name="Batches I created", exact=True)
        ).to_be_checked()  # untouched
        expect(page.get_by_label("Email address")).to_have_value(VIC_EMAIL)
        shot(page, "notify-profile-saved")
        page.reload()
        expect(switch).not_to_be_checked()
        expect(page.get_by_role("status")).to_have_count(0)  # the message is shown once
    finally:
        # The accounts are shared by the whole session: switch it back on.
        page.goto("/profile/")
        if not switch.is_checked():
            switch.check()
            page.get_by_role("button", name="Save").click()
            expect(page.get_by_role("status")).to_have_text("Your notification settings are saved.")
    expect(switch).to_be_checked()
