"""Every page of the UI, as an admin and as a viewer: no serious or critical axe-core
violation, and the keyboard works (Tab reaches the page's main actions, and wherever the
focus goes it is visible).

Runs against the shared deployment of tests/web/conftest.py (the sample tree: videos,
an image sequence, a large image, a failed job). Pages still being built by other work
are visited all the same: whatever they show is checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from helpers import catalog_folders
from mediamirror.catalog.db import Catalog

from .axe import assert_accessible
from .conftest import VIEWPORT, Deployment, screenshot, sign_in

pytestmark = pytest.mark.timeout(300)
#: Tab presses tried before giving up on reaching an element.
MAX_TABS = 80


@dataclass(frozen=True)
class Visit:
    name: str
    path: str  # may hold {video}, {sequence}, {large}, {folder}: folder ids of the sample
    #: What the keyboard must reach on this page (a CSS selector), per role.
    admin_reaches: str = "#page a[href], #page button, #page input"
    viewer_reaches: str = "#page a[href], #page button, #page input"


PAGES = [
    Visit("overview", "/ui/overview", "#page .tile[href]", "#page .tile[href]"),
    Visit("browse root", "/ui/browse", "[data-testid=folders] a.row-link"),
    Visit("browse folder", "/ui/browse/{folder}", "[data-testid=folders] a.row-link"),
    Visit("video dataset", "/ui/datasets/{video}"),
    Visit("image-sequence dataset", "/ui/datasets/{sequence}"),
    Visit("large-image dataset", "/ui/datasets/{large}"),
    Visit("sources", "/ui/sources", "[data-action=add-source]", ".source-link"),
    Visit("new source", "/ui/sources/new"),
    Visit("source detail", "/ui/sources/sample"),
    Visit("source edit", "/ui/sources/sample/edit"),
    Visit("jobs", "/ui/jobs", ".tab", ".tab"),
    Visit("failed jobs", "/ui/jobs?state=error", "[data-action=retry]", "[data-action=log]"),
    Visit("events", "/ui/events"),
    Visit("notifications", "/ui/notifications"),
    Visit("search", "/ui/search?q=clip"),
    Visit("not found", "/ui/no-such-page", "[data-action=home]", "[data-action=home]"),
]


@pytest.fixture(scope="module")
def ids(app: Deployment) -> dict[str, int]:
    catalog = Catalog(f"sqlite:///{app.root / 'catalog.db'}", migrate=False)
    try:
        folders = catalog_folders(catalog)
    finally:
        catalog.close()

    def first(kind: str) -> int:
        return min(r.id for r in folders.values() if (r.meta or {}).get("type") == kind)

    return {
        "video": first("video"),
        "sequence": first("image-sequence"),
        "large": first("large-image"),
        "folder": folders["/sample/videos"].id,
    }


@pytest.fixture(scope="module")
def pages(browser: Any, app: Deployment) -> Iterator[dict[str, Any]]:
    """One signed-in page per role (and one signed out), reused by every visit."""
    contexts = []
    out: dict[str, Any] = {}
    for role, token in (("admin", app.admin_token), ("viewer", app.viewer_token), ("none", "")):
        context = browser.new_context(base_url=app.url, viewport=VIEWPORT)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        page.on(
            "response",
            lambda r, errors=errors: r.status >= 500 and errors.append(f"{r.status} {r.url}"),
        )
        page.mm_errors = errors
        if token:
            sign_in(page, token)
        out[role] = page
    yield out
    for context in contexts:
        context.close()


def settle(page: Any) -> None:
    """Until the page has drawn its content (no loading spinner left in it)."""
    page.wait_for_selector("#page h1, #page .empty-title, .signin h1")
    page.wait_for_function("() => !document.querySelector('#page .loading')")


def focus_is_visible(page: Any) -> bool:
    """The focused element shows a focus ring (an outline or a box-shadow)."""
    script = """() => {
      const el = document.activeElement;
      if (!el || el === document.body) return true;
      const s = getComputedStyle(el);
      const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0;
      return outline || (s.boxShadow && s.boxShadow !== 'none');
    }"""
    return bool(page.evaluate(script))


def start_at_top(page: Any) -> None:
    """The next Tab goes to the first focusable element of the document (a page may have
    put the focus in a form field already)."""
    page.evaluate(
        "() => { const b = document.body; b.tabIndex = -1; b.focus();"
        " b.removeAttribute('tabindex'); window.scrollTo(0, 0); }"
    )


def tab_until(page: Any, selector: str) -> list[str]:
    """Press Tab from the top of the page until an element matching ``selector`` has the
    focus; fails when it is never reached or when a focus along the way is invisible.
    Returns what was focused on the way."""
    start_at_top(page)
    seen: list[str] = []
    invisible: list[str] = []
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        described = page.evaluate(
            "() => { const e = document.activeElement; return e ? "
            "`${e.tagName.toLowerCase()}${e.className ? '.' + String(e.className).trim()"
            ".replace(/\\s+/g, '.') : ''} ${(e.innerText || e.getAttribute('aria-label')"
            " || '').trim().slice(0, 30)}` : '' }"
        )
        seen.append(described)
        if not focus_is_visible(page):
            invisible.append(described)
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            assert not invisible, f"focus not visible on: {invisible}"
            return seen
    raise AssertionError(f"Tab never reached {selector!r}; focus went: {seen}")


@pytest.mark.parametrize("role", ["admin", "viewer"])
@pytest.mark.parametrize("visit", PAGES, ids=[v.name for v in PAGES])
def test_page_is_accessible(
    pages: dict[str, Any], ids: dict[str, int], visit: Visit, role: str
) -> None:
    page = pages[role]
    page.goto(visit.path.format(**ids))
    settle(page)
    assert_accessible(page, f"{visit.name} ({role})")
    seen = tab_until(page, visit.admin_reaches if role == "admin" else visit.viewer_reaches)
    assert seen[0].startswith("a.skip-link"), seen[:3]  # the first stop skips the navigation
    assert not page.mm_errors, page.mm_errors
    if role == "admin":
        screenshot(page, f"a11y-{visit.name.replace(' ', '-')}", full_page=False)


def test_skip_link_moves_the_focus_to_the_page(pages: dict[str, Any]) -> None:
    page = pages["admin"]
    page.goto("/ui/jobs")
    settle(page)
    start_at_top(page)
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip-link"
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "page"
    page.keyboard.press("Tab")  # the next stop is inside the page, not the navigation
    assert page.evaluate("() => document.getElementById('page').contains(document.activeElement)")


def test_sign_in_page_is_accessible(pages: dict[str, Any]) -> None:
    page = pages["none"]
    page.goto("/ui/sign-in")
    settle(page)
    assert_accessible(page, "sign-in")
    tab_until(page, "#token")
    page.keyboard.type("mm_not-a-real-token")
    page.keyboard.press("Enter")  # the form submits from the keyboard
    page.wait_for_selector(".form-message")
    assert_accessible(page, "sign-in with an error")
    assert not page.mm_errors, page.mm_errors


@pytest.fixture(scope="module")
def phone(browser: Any, app: Deployment) -> Iterator[Any]:
    """An admin's page on a phone-sized screen (the sidebar is a row of icons there)."""
    context = browser.new_context(base_url=app.url, viewport={"width": 390, "height": 844})
    context.set_default_timeout(15_000)
    page = context.new_page()
    sign_in(page, app.admin_token)
    yield page
    context.close()


PHONE_PAGES = [
    v
    for v in PAGES
    if v.name in {"overview", "browse folder", "video dataset", "jobs", "sources", "search"}
]


@pytest.mark.parametrize("visit", PHONE_PAGES, ids=[v.name for v in PHONE_PAGES])
def test_phone_layout_is_accessible(phone: Any, ids: dict[str, int], visit: Visit) -> None:
    phone.goto(visit.path.format(**ids))
    settle(phone)
    assert_accessible(phone, f"{visit.name} (phone)")
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"{visit.name} scrolls sideways on a phone ({width} px)"
