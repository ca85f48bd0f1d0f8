"""Search in the browser: the box at the top of every page (results as you type, keyboard
only: ``/``, arrows, Enter, Escape) and the results page (filters in the URL, pages, empty
and error states), each checked with axe-core. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .axe import assert_accessible
from .conftest import MISC_FOLDERS, Deployment, screenshot

pytestmark = pytest.mark.timeout(180)


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_type_in_the_box_and_open_a_result_with_the_keyboard(
    open_page: Any, app: Deployment
) -> None:
    expect = _expect()
    page = open_page(app.viewer_token)
    # The search page's empty state: axe judges the box, not another team's page.
    page.goto("/ui/search")
    page.wait_for_selector("h1.page-title")
    box = page.get_by_role("combobox", name="Search the catalog")

    page.keyboard.press("/")  # the shortcut, from anywhere outside a text field
    expect(box).to_be_focused()
    page.keyboard.type("h26", delay=30)
    listbox = page.get_by_role("listbox", name="Search results")
    expect(listbox).to_be_visible()
    expect(box).to_have_attribute("aria-expanded", "true")
    options = listbox.get_by_role("option")
    expect(options.first).to_contain_text("Video clip-h264.mp4")
    expect(options.first).to_contain_text("/sample/videos/Video clip-h264.mp4")
    expect(options.last).to_have_text(re.compile("See all results"))
    screenshot(page, "search-01-box", full_page=False)
    assert_accessible(page, "the search box, open")

    page.keyboard.press("ArrowDown")
    expect(options.first).to_have_attribute("aria-selected", "true")
    active = options.first.get_attribute("id")
    expect(box).to_have_attribute("aria-activedescendant", active or "")
    page.keyboard.press("Enter")

    page.wait_for_url(re.compile(r"/ui/datasets/\d+$"))
    expect(page.locator("h1.page-title")).to_have_text("Video clip-h264.mp4")
    expect(listbox).to_be_hidden()


def test_results_follow_the_latest_text_and_escape_closes(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.viewer_token)
    page.goto("/ui/jobs")
    box = page.get_by_role("combobox", name="Search the catalog")
    box.click()
    # Typed faster than the debounce, then changed: only the last text's answer shows.
    page.keyboard.type("box-0", delay=5)
    box.fill("slide")
    options = page.get_by_role("listbox", name="Search results").get_by_role("option")
    expect(options.first).to_contain_text("Large image slide.tif")
    expect(options).to_have_count(2)  # the hit and "See all results"

    page.keyboard.press("Escape")
    expect(box).to_have_attribute("aria-expanded", "false")
    expect(page.get_by_role("listbox", name="Search results")).to_be_hidden()
    page.keyboard.press("ArrowDown")  # opens the same answer again
    expect(box).to_have_attribute("aria-expanded", "true")

    box.fill("nothing-is-called-this")
    expect(page.get_by_role("listbox", name="Search results")).to_contain_text(
        "No folder or dataset matches"
    )


def test_see_all_results_pages_and_filters(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.viewer_token)
    page.goto("/ui/jobs")
    box = page.get_by_role("combobox", name="Search the catalog")
    box.click()
    page.keyboard.type("box-", delay=10)
    expect(
        page.get_by_role("listbox", name="Search results").get_by_role("option").last
    ).to_have_text(re.compile(f"See all {MISC_FOLDERS} results"))
    page.keyboard.press("Enter")  # nothing highlighted: the full results page

    page.wait_for_url(re.compile(r"/ui/search\?q=box-$"))
    rows = page.locator("[data-testid=search-results] li")
    expect(rows).to_have_count(25)
    expect(page.locator(".search-summary")).to_have_text(f"{MISC_FOLDERS} matches for “box-”")
    expect(rows.first).to_contain_text("box-01")
    expect(page.get_by_label("Search text")).to_have_value("box-")
    screenshot(page, "search-02-results")
    assert_accessible(page, "the search page")

    page.locator(".pager a", has_text="Next").click()
    page.wait_for_url(re.compile(r"page=2"))
    expect(rows.first).to_contain_text("box-26")

    # A filter is a control reflected in the URL; the text stays.
    page.get_by_label("Kind").select_option("video")
    page.wait_for_url(re.compile(r"q=box-&type=video$"))
    expect(page.get_by_text("Nothing matches “box-”")).to_be_visible()
    assert_accessible(page, "the search page, no match")

    # Errors of datasets, from the Status control; open one with the keyboard.
    page.get_by_label("Search text").fill("")
    page.get_by_label("Kind").select_option("")
    page.wait_for_url(re.compile(r"/ui/search\?q=box-$"))
    page.get_by_label("Search text").fill("bad")
    page.get_by_label("Search text").press("Enter")
    page.wait_for_url(re.compile(r"q=bad$"))
    page.get_by_label("Status").select_option("error")
    page.wait_for_url(re.compile(r"q=bad&status=error$"))
    link = page.locator("[data-testid=search-results] a", has_text="Video bad.mp4")
    expect(link).to_have_count(1)
    expect(page.locator("[data-testid=search-results] li").first.locator(".pill")).to_have_text(
        "Error"
    )
    link.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/datasets/\d+$"))
    expect(page.locator("h1.page-title")).to_have_text("Video bad.mp4")


def test_empty_and_error_states(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.viewer_token)
    page.goto("/ui/search")
    expect(page.get_by_role("heading", name="Search the catalog")).to_be_visible()
    assert_accessible(page, "the search page, empty")

    page.goto("/ui/search?q=clip&status=finished")
    expect(page.locator("[data-testid=search-error]")).to_have_text(
        re.compile("Bad status 'finished'")
    )
    page.get_by_role("link", name="Clear the filters").click()
    page.wait_for_url(re.compile(r"/ui/search\?q=clip$"))
    expect(page.locator("[data-testid=search-results] li").first).to_contain_text("clip")
