"""Signing in and out, roles, and the keyboard: what every person meets first."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import PASSWORDS, expect, sign_in

pytestmark = pytest.mark.e2e


def test_a_wrong_password_is_refused_with_a_clear_message_and_the_right_one_opens_the_list(
    page, shot
):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.get_by_role("heading", name="Sign in to batchweb")).to_be_visible()
    shot(page, "login")

    sign_in(page, "alice", "not-her-password")
    expect(page.get_by_role("alert")).to_have_text(
        "That username and password do not match. Try again."
    )
    expect(page.get_by_label("Username")).to_have_value("alice")
    expect(page.get_by_label("Password")).to_have_value("")

    sign_in(page, "alice")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", name="Batches", exact=True)).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("alice")


def test_the_sign_in_form_can_be_completed_with_the_keyboard_alone(page):
    page.goto("/accounts/login/?next=/activity/")
    # The username field has the focus from the start (autofocus).
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type("sam")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORDS["sam"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/activity/$"))
    expect(page.get_by_role("heading", name="Activity")).to_be_visible()


def test_focused_links_and_buttons_have_a_visible_outline(page_as):
    page = page_as("alice")
    page.goto("/")
    # The first Tab reaches the skip link, which appears when focused.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    # Then the brand and the navigation links.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    focused = page.evaluate(
        """() => {
            const el = document.activeElement;
            const style = getComputedStyle(el);
            return {tag: el.tagName, text: el.textContent.trim(),
                    outline: style.outlineStyle, width: parseFloat(style.outlineWidth)};
        }"""
    )
    assert focused["tag"] == "A" and focused["text"] == "Batches", focused
    assert focused["outline"] != "none" and focused["width"] >= 2, focused

    # A button too: "Sync now" on the list.
    page.get_by_role("button", name="Sync now").focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_a_viewer_sees_no_new_batch_link_and_gets_the_403_page(page_as, shot):
    page = page_as("vic")
    page.goto("/")
    expect(page.get_by_role("button", name="Sync now")).to_have_count(0)  # Operators only
    expect(page.get_by_role("link", name="New batch")).to_have_count(0)

    response = page.goto("/batches/new/")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="You cannot do that")).to_be_visible()
    expect(page.get_by_text("Submitters")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Traceback")
    shot(page, "403")
    page.get_by_role("link", name="Back to the batches").click()
    expect(page.get_by_role("heading", name="Batches", exact=True)).to_be_visible()


def test_after_signing_out_the_pages_ask_to_sign_in_again(page):
    sign_in(page, "sam")
    expect(page.get_by_role("heading", name="Batches", exact=True)).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    expect(page.get_by_role("navigation", name="Main")).not_to_contain_text("sam")

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.goto("/batches/new/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/batches/new/$"))
    expect(page.get_by_role("heading", name="Sign in to batchweb")).to_be_visible()
