"""The overview (home page), its failures inbox and the jobs page's bulk retry, in Chromium.

A deployment of its own (so retrying here never changes what tests/web/test_ui.py sees):
source ``lab`` with two truncated videos whose jobs fail for the same reason and one good
clip, processed by the real CLI's ``sync --process``; source ``later`` added but never
synced. ``serve --no-worker`` serves it: what the page queues stays queued. A second,
empty deployment shows the empty states.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from helpers import Cli
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS
from mediamirror.catalog.tree import dataset_status
from mediamirror.jobs.model import JOBS
from mediamirror.samples import generate_samples

from .axe import assert_accessible
from .conftest import ENV, VIEWPORT, Deployment, _token, screenshot, sign_in

pytestmark = pytest.mark.timeout(240)
REASON = "video stream is not decodable"
OLD = time.time() - 3600  # settled files: post-processing never waits for them


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _serve(root: Path, media: Path | None) -> Deployment:
    cli = Cli(home=root / "home", database_url=f"sqlite:///{root / 'catalog.db'}", env=ENV)
    dep = Deployment(root, media or root, cli)
    if media is not None:
        cli.run("source", "add", "lab", (media / "lab").as_uri())
        cli.run("source", "add", "later", (media / "later").as_uri())
        fail_lab(dep)
    dep.serve()
    dep.admin_token = _token(cli, "admin", "Ada Admin")
    dep.viewer_token = _token(cli, "viewer", "Vic Viewer")
    return dep


def fail_lab(dep: Deployment) -> None:
    env = {"MEDIAMIRROR_AUTO_POSTPROCESS": "true", "MEDIAMIRROR_SETTLE_SECONDS": "0"}
    dep.cli.run("sync", "lab", "--process", "--quiet", env=env, ok=None, timeout=180)


@pytest.fixture(scope="module")
def ovapp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("ov-web")
    samples = root / "samples"
    generate_samples(samples, large_image_px=256)
    clip = (samples / "videos" / "clip-h264.mp4").read_bytes()
    media = root / "media"
    for name, data in (("trunc-1.mp4", clip[:3000]), ("trunc-2.mp4", clip[:3000])):
        (media / "lab").mkdir(parents=True, exist_ok=True)
        (media / "lab" / name).write_bytes(data)
    (media / "lab" / "fine.mp4").write_bytes(clip)
    shutil.copytree(samples / "frames", media / "later" / "frames")
    for path in media.rglob("*"):
        os.utime(path, (OLD, OLD))
    dep = _serve(root, media)
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def empty_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = _serve(tmp_path_factory.mktemp("ov-empty"), None)
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture
def open_on(browser: Any) -> Iterator[Callable[..., Any]]:
    """``open_on(deployment, token)``: a signed-in page of its own; page errors and
    server errors fail the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(dep: Deployment, token: str, viewport: dict[str, int] | None = None) -> Any:
        context = browser.new_context(base_url=dep.url, viewport=viewport or VIEWPORT)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", lambda r: r.status >= 500 and errors.append(f"{r.status} {r.url}"))
        sign_in(page, token)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, errors


def catalog_of(dep: Deployment) -> Catalog:
    return Catalog(f"sqlite:///{dep.root / 'catalog.db'}", migrate=False)


def failed_ids(dep: Deployment) -> list[int]:
    catalog = catalog_of(dep)
    try:
        with catalog.read() as conn:
            rows = conn.execute(select(JOBS.c.id).where(JOBS.c.state == "error"))
            return sorted(r[0] for r in rows)
    finally:
        catalog.close()


def test_overview_numbers_match_the_catalog(open_on: Any, ovapp: Deployment) -> None:
    expect = _expect()
    catalog = catalog_of(ovapp)
    with catalog.read() as conn:
        jobs = dict(conn.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).all())
        metas = [r.meta for r in conn.execute(select(FOLDERS.c.meta))]
    catalog.close()
    statuses = [dataset_status(m or {}) for m in metas]
    datasets = [s for s in statuses if s is not None]
    assert jobs.get("error") == 2 and len(datasets) == 3  # lab's videos ("later": not synced)

    page = open_on(ovapp, ovapp.admin_token)

    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("[data-testid=summary]")).to_have_text(
        f"2 sources, {len(datasets)} datasets, 2 failed jobs: the inbox below says why."
    )

    def tile(key: str) -> Any:
        return page.locator(f".tile[data-stat='{key}'] .tile-value")

    expect(tile("datasets")).to_have_text(str(len(datasets)))
    for status in ("ready", "pending", "new", "error"):
        expect(tile(f"datasets-{status}")).to_have_text(str(statuses.count(status)))
    for state in ("queued", "running", "success", "error", "canceled"):
        expect(tile(f"jobs-{state}")).to_have_text(str(jobs.get(state, 0)))
    expect(tile("throughput")).to_have_text(str(jobs.get("success", 0) + jobs["error"]))
    lab = page.locator("[data-testid=sources] tr[data-source=lab]")
    expect(lab.locator(".pill")).to_have_text("Healthy")
    expect(lab).to_contain_text("3 added")
    expect(page.locator("tr[data-source=later] .pill")).to_have_text("Never synced")
    lab.get_by_role("link", name="lab", exact=True).click()
    page.wait_for_url("**/ui/sources/lab")
    page.go_back()
    expect(page.locator("h1")).to_have_text("Overview")
    assert_accessible(page, "overview (admin)")
    screenshot(page, "30-overview")


def test_retry_all_in_a_failure_group(open_on: Any, ovapp: Deployment) -> None:
    expect = _expect()
    failed = failed_ids(ovapp)
    assert len(failed) == 2
    page = open_on(ovapp, ovapp.admin_token)
    group = page.locator(".ov-group").filter(has_text=REASON)

    expect(group).to_have_count(1)  # two failures, one reason
    expect(group.locator("h3")).to_have_text(re.compile(rf"^video .*{REASON}"))
    expect(group.locator(".pill")).to_have_text("2 failed jobs")
    expect(group.locator(".ov-example")).to_contain_text("trunc-")
    links = group.locator(".ov-datasets a")
    expect(links).to_have_count(2)
    expect(links.first).to_have_attribute("href", re.compile(r"^/ui/datasets/\d+$"))
    screenshot(page, "31-failures-inbox")

    # Keyboard: Tab reaches the group's button (its focus ring shows), Enter retries
    # the whole group.
    group.get_by_role("link", name="Failed jobs (video)").focus()
    page.keyboard.press("Tab")
    focused = (
        "() => [document.activeElement.dataset.action,"
        " getComputedStyle(document.activeElement).outlineStyle]"
    )
    assert page.evaluate(focused) == ["retry-group", "solid"]
    page.keyboard.press("Enter")

    expect(page.locator(".toast")).to_contain_text("Queued 2 job(s) again")
    expect(group).to_have_count(0)
    expect(page.locator(".overview-inbox .empty-title")).to_have_text("No failed jobs")
    expect(page.locator(".tile[data-stat=jobs-queued] .tile-value")).to_have_text("2")
    assert failed_ids(ovapp) == []
    screenshot(page, "32-failures-retried")
    fail_lab(ovapp)  # the jobs fail again, for the next tests
    assert failed_ids(ovapp) == failed


def test_jobs_page_retries_the_selected_jobs(open_on: Any, ovapp: Deployment) -> None:
    expect = _expect()
    failed = failed_ids(ovapp)
    page = open_on(ovapp, ovapp.admin_token)
    page.goto("/ui/jobs?state=error")
    rows = page.locator(".job-row")
    expect(rows).to_have_count(2)
    bar = page.locator(".bulk-bar")
    expect(bar).to_be_hidden()

    rows.first.locator("[data-action=select]").check()
    expect(bar.locator(".bulk-count")).to_have_text("1 failed job selected")
    page.locator("[data-action=select-all]").check()
    expect(bar.locator(".bulk-count")).to_have_text("2 failed jobs selected")
    assert_accessible(page, "jobs with a selection")
    screenshot(page, "33-jobs-selection")
    bar.locator("[data-action=retry-selected]").click()

    expect(page.locator(".toast")).to_contain_text("Queued 2 job(s) again; skipped 0")
    expect(rows).to_have_count(0)
    expect(bar).to_be_hidden()
    page.goto("/ui/jobs?state=queued")
    expect(page.locator(".job-row")).to_have_count(2)
    assert failed_ids(ovapp) == []
    fail_lab(ovapp)
    assert failed_ids(ovapp) == failed


def test_a_viewer_sees_no_admin_actions(open_on: Any, ovapp: Deployment) -> None:
    expect = _expect()
    page = open_on(ovapp, ovapp.viewer_token)
    expect(page.locator(".ov-group")).to_have_count(1)
    expect(page.locator("[data-action=retry-group]")).to_have_count(0)
    assert_accessible(page, "overview (viewer)")
    page.goto("/ui/jobs?state=error")
    expect(page.locator(".job-row")).to_have_count(2)
    expect(page.locator("[data-action=select], [data-action=select-all]")).to_have_count(0)
    expect(page.locator(".bulk-bar")).to_have_count(0)


def test_empty_catalog(open_on: Any, empty_app: Deployment) -> None:
    expect = _expect()
    page = open_on(empty_app, empty_app.admin_token)
    expect(page.locator("[data-testid=summary]")).to_have_text(
        "0 sources, 0 datasets, 0 failed jobs."
    )
    expect(page.locator(".overview-sources .empty-title")).to_have_text("No sources yet")
    expect(page.locator(".overview-sources a[href='/ui/sources/new']")).to_be_visible()
    expect(page.locator(".overview-inbox .empty-title")).to_have_text("No failed jobs")
    assert_accessible(page, "overview (empty catalog)")
    screenshot(page, "34-overview-empty")


def test_an_unreachable_server_is_one_readable_line(open_on: Any, ovapp: Deployment) -> None:
    expect = _expect()
    page = open_on(ovapp, ovapp.admin_token)
    page.route("**/api/v1/overview", lambda route: route.abort())
    page.goto("/ui/overview")
    expect(page.locator(".empty-title")).to_have_text("Something went wrong")
    expect(page.locator(".empty-body")).to_have_text(
        "The server cannot be reached. Is mediamirror still running?"
    )
    expect(page.get_by_role("button", name="Try again")).to_be_visible()


def test_on_a_phone(open_on: Any, ovapp: Deployment) -> None:
    expect = _expect()
    page = open_on(ovapp, ovapp.admin_token, {"width": 390, "height": 844})
    expect(page.locator(".ov-group")).to_have_count(1)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    wide = page.evaluate(
        "() => [...document.querySelectorAll('body *')]"
        ".filter((e) => e.getBoundingClientRect().right > 391"
        " && e.parentElement.getBoundingClientRect().right <= 391)"
        ".slice(0, 5).map((e) => `${e.tagName}.${e.className}`)"
    )
    assert width <= 390, f"the overview scrolls sideways on a phone ({width} px): {wide}"
    assert_accessible(page, "overview (phone)")
    screenshot(page, "35-overview-phone")
