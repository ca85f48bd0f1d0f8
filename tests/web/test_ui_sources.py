"""Sources in the browser: add through the form with "Check connection" (a wrong endpoint is
reported in one line and nothing is saved; a good bucket is checked, saved, synced from its
page and listed), edit filters and schedule, push set-up (URL shown once, rotation
invalidates the old token, snippets carry the URL, events listed), removal with a
confirmation, and a viewer who sees no admin controls. axe-core runs on every page.

A deployment of its own (an empty catalog served by ``mediamirror serve --no-worker``)
and buckets on the local S3 API server (moto); Chromium is the system one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import Cli, S3Bucket, S3Server, closed_port

from .axe import assert_accessible
from .conftest import ENV, VIEWPORT, Deployment, _token, screenshot, sign_in

pytestmark = pytest.mark.timeout(180)
KEYS = ["clips/a.mp4", "clips/b.mp4", "notes/readme.txt"]


def _expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Deployment]:
    """An empty catalog with one S3 source (``shared``, for the viewer), served."""
    root = tmp_path_factory.mktemp("ui-sources")
    cli = Cli(home=root / "home", database_url=f"sqlite:///{root / 'catalog.db'}", env=ENV)
    dep = Deployment(root, root, cli)
    shared = S3Bucket(s3_server, s3_server.client())
    shared.put("a.mp4")
    try:
        cli.run("source", "add", "shared", shared.url(), *shared.cli_options)
        with ThreadPoolExecutor(3) as pool:  # each CLI start costs a second or two
            served = pool.submit(dep.serve)
            admin = pool.submit(_token, cli, "admin", "Ada Admin")
            viewer = pool.submit(_token, cli, "viewer", "Vic Viewer")
            served.result()
            dep.admin_token, dep.viewer_token = admin.result(), viewer.result()
        yield dep
    finally:
        dep.stop()


@pytest.fixture
def open_page(browser: Any, site: Deployment) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(token: str, viewport: dict[str, int] | None = None) -> Any:
        context = browser.new_context(base_url=site.url, viewport=viewport or VIEWPORT)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # 502 is the API's answer for a store that cannot be listed (adding a wrong one).
        page.on(
            "response",
            lambda r: r.status >= 500 and r.status != 502 and errors.append(f"{r.status} {r.url}"),
        )
        sign_in(page, token)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"errors in the page: {errors}"


def api(site: Deployment, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or site.admin_token}"}
    return httpx.Client(base_url=site.url, headers=headers, timeout=30)


def source_names(site: Deployment) -> list[str]:
    with api(site) as client:
        return [s["name"] for s in client.get("/api/v1/sources").json()]


def result_text(page: Any) -> Any:
    return page.locator("[data-testid=result-text]")


def test_add_check_sync_edit_push_and_remove_a_bucket(
    open_page: Callable[..., Any], site: Deployment, s3_server: S3Server
) -> None:
    expect = _expect()
    bucket = S3Bucket(s3_server, s3_server.client())
    bucket.put_many(KEYS)
    page = open_page(site.admin_token)

    page.goto("/ui/sources")
    page.click("[data-action=add-source]")
    page.wait_for_url("**/ui/sources/new")
    expect(page.locator("h1.page-title")).to_have_text("Add a source")
    assert_accessible(page, "add a source")

    # A wrong endpoint: reported in one line by the check, and by "Add source"; not saved.
    page.fill("#sf-name", "field")
    page.fill("#sf-url", bucket.url())
    page.select_option("#sf-preset", "minio")
    page.fill("#sf-endpoint", f"http://127.0.0.1:{closed_port()}")
    page.click("[data-action=check]")
    expect(result_text(page)).to_contain_text(re.compile("cannot reach http://127.0.0.1:", re.I))
    assert "\n" not in result_text(page).inner_text()
    screenshot(page, "sources-01-check-failed")
    page.click("[data-action=save]")
    expect(page.locator(".sf-err [data-testid=result-text]")).to_contain_text(
        re.compile("cannot reach", re.I)
    )
    assert page.url.endswith("/ui/sources/new")
    assert "field" not in source_names(site)

    # Environment variable names, never values: an unset one is named in the answer.
    page.check("#sf-cred-mode-env")
    page.fill("#sf-access-env", "MM_UI_NOT_SET_KEY")
    page.fill("#sf-secret-env", "MM_UI_NOT_SET_SECRET")
    page.fill("#sf-endpoint", s3_server.endpoint)
    page.click("[data-action=check]")
    expect(result_text(page)).to_contain_text("MM_UI_NOT_SET_KEY")
    page.check("#sf-cred-mode-default")

    # The good endpoint: checked (3 keys seen), saved, on its own page.
    page.click("[data-action=check]")
    expect(result_text(page)).to_contain_text(
        re.compile(r"Connection works: 3 keys seen in [\d.]+ s")
    )
    expect(page.locator(".sf-sample li")).to_have_count(3)
    screenshot(page, "sources-02-check-ok")
    assert "field" not in source_names(site)  # checking saves nothing
    page.fill("#sf-region", "us-east-1")  # the answer no longer speaks for the values
    expect(page.locator("[data-testid=check-stale]")).to_be_visible()
    page.click("[data-action=save]")
    page.wait_for_url("**/ui/sources/field")
    expect(page.locator("h1.page-title")).to_have_text("field")
    expect(page.locator("[data-testid=settings]")).to_contain_text(s3_server.endpoint)
    assert_accessible(page, "a source's page")

    # Sync now, from its page: the run shows with its figures.
    page.click("[data-action=sync]")
    run = page.locator("[data-testid=runs] tr[data-state=success]").first
    expect(run).to_be_visible(timeout=30_000)
    expect(run.locator("td.num").first).to_have_text("3")
    screenshot(page, "sources-03-synced")
    page.click(".crumbs a:has-text('Sources')")
    card = page.locator(".source-card[data-source=field]")
    expect(card).to_be_visible()
    expect(card.locator("a.source-link")).to_have_attribute("href", "/ui/sources/field")
    assert_accessible(page, "the sources list")

    # Edit: include and schedule; the changed lines are shown.
    card.locator("a.source-link").click()
    page.click("[data-action=edit]")
    page.wait_for_url("**/ui/sources/field/edit")
    page.fill("#sf-include", r"\.mp4$")
    page.fill("#sf-schedule", "*/5 * * * *")
    page.click("[data-action=save]")
    changed = page.locator("[data-testid=changed] li")
    expect(changed).to_have_count(2)
    expect(changed.nth(0)).to_have_text(r"include: (none) -> \.mp4$")
    expect(changed.nth(1)).to_have_text("schedule: (none) -> */5 * * * *")
    assert_accessible(page, "edit a source")
    screenshot(page, "sources-04-edited")
    page.fill("#sf-schedule", "not a cron line")
    page.click("[data-action=save]")
    expect(page.locator(".sf-err [data-testid=result-text]")).to_contain_text(
        "'not a cron line' is not a valid cron expression"
    )

    # Push set-up: the URL shown once, rotation invalidates the old token.
    page.click("a:has-text('Back to the source')")
    page.wait_for_url("**/ui/sources/field")
    expect(page.locator("[data-testid=token-state]")).to_contain_text("No token yet")
    expect(page.locator("[data-snippet=minio]")).to_contain_text("token=TOKEN")
    page.click("[data-action=rotate]")
    once = page.locator("[data-testid=push-url-once] code")
    expect(once).to_contain_text("/api/v1/bucket_notifications/s3?token=mmp_")
    old_url = once.inner_text().strip()
    expect(page.locator("[data-snippet=minio] pre")).to_contain_text(old_url)
    assert_accessible(page, "a source's page with its push URL")
    screenshot(page, "sources-05-push-url")
    page.reload()
    expect(page.locator("[data-testid=token-state]")).to_contain_text("A token exists")
    assert old_url.split("token=")[1] not in page.content()

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-action=rotate]")
    expect(once).not_to_have_text(old_url)
    new_url = once.inner_text().strip()
    assert new_url.startswith(site.url) and new_url != old_url
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-01-01T00:00:00.000Z",
                "s3": {
                    "bucket": {"name": bucket.name},
                    "object": {"key": "clips/a.mp4", "size": 1, "sequencer": "0A"},
                },
            }
        ]
    }
    assert httpx.post(old_url, json=event, timeout=30).status_code == 401
    answer = httpx.post(new_url, json=event, timeout=30)
    assert answer.status_code == 200, answer.text
    page.reload()
    row = page.locator("[data-testid=events] tr[data-event]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("clips/a.mp4")

    # Remove: Escape cancels; typing the name confirms; the catalog forgets it.
    page.click("[data-action=remove]")
    dialog = page.locator("dialog.sd-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("[data-testid=removal-message]")).to_contain_text(
        f"Nothing in {bucket.url()}"
    )
    assert_accessible(page, "the removal dialog")
    screenshot(page, "sources-06-remove-dialog", full_page=False)
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    assert "field" in source_names(site)
    page.click("[data-action=remove]")
    confirm = page.locator("[data-action=confirm-remove]")
    expect(confirm).to_be_disabled()
    page.keyboard.type("fiel")
    expect(confirm).to_be_disabled()
    page.keyboard.type("d")
    expect(confirm).to_be_enabled()
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/sources")
    expect(page.locator(".source-card[data-source=field]")).to_have_count(0)
    assert "field" not in source_names(site)
    assert bucket.keys() == sorted(KEYS)  # the bucket is never touched


def test_a_viewer_sees_no_admin_controls(open_page: Callable[..., Any], site: Deployment) -> None:
    expect = _expect()
    page = open_page(site.viewer_token)
    page.goto("/ui/sources")
    expect(page.locator(".source-card[data-source=shared]")).to_be_visible()
    expect(page.locator("[data-action=add-source]")).to_have_count(0)
    page.click(".source-card[data-source=shared] a.source-link")
    page.wait_for_url("**/ui/sources/shared")
    expect(page.locator("[data-snippet=minio]")).to_be_visible()
    for action in ("edit", "sync", "remove", "rotate"):
        expect(page.locator(f"[data-action={action}]")).to_have_count(0)
    assert_accessible(page, "a source's page (viewer)")
    screenshot(page, "sources-07-viewer")
    page.goto("/ui/sources/new")
    expect(page.locator(".empty-title")).to_have_text("Needs an admin token")
    expect(page.locator("form")).to_have_count(0)
    assert_accessible(page, "the add form (viewer)")


def test_keyboard_alone_checks_a_local_folder(
    open_page: Callable[..., Any], site: Deployment, tmp_path: Path
) -> None:
    """Tab and Enter only: the check of a missing folder names it; nothing is saved."""
    expect = _expect()
    page = open_page(site.admin_token)
    page.goto("/ui/sources/new")
    expect(page.locator("#sf-name")).to_be_focused()
    page.keyboard.type("keyed")
    page.keyboard.press("Tab")
    page.keyboard.type(f"file://{tmp_path}/missing")
    page.locator("[data-action=check]").focus()
    page.keyboard.press("Enter")
    expect(result_text(page)).to_contain_text(f"directory {tmp_path}/missing does not exist")
    assert "keyed" not in source_names(site)


def test_the_pages_fit_a_phone(open_page: Callable[..., Any], site: Deployment) -> None:
    expect = _expect()
    page = open_page(site.admin_token, viewport={"width": 390, "height": 844})
    for path, ready in (
        ("/ui/sources/new", "#sf-name"),
        ("/ui/sources/shared", "[data-snippet=minio]"),
        ("/ui/sources/shared/edit", "#sf-include"),
    ):
        page.goto(path)
        expect(page.locator(ready)).to_be_visible()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways on a phone ({width} px)"
    screenshot(page, "sources-08-edit-phone")
