"""The web UI end to end: real server, real catalog, headless Chromium.

Each test opens its own browser context (its own cookies), so tests do not depend on one
another's sign-in. Screenshots of every page go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from typing import Any

from .conftest import MARKUP_NAME, MISC_FILES, MISC_FOLDERS, Deployment, screenshot

DASH = "\N{EN DASH}"
NEXT = "Next \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}"


def _expect() -> Any:
    """Playwright's auto-waiting assertions (imported late: the fixtures say what to do
    when Playwright is missing)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def open_folder(page: Any, *names: str) -> None:
    """From the catalog root, click through folders by name."""
    page.goto("/ui/browse")
    for name in names:
        page.locator(
            "[data-testid=folders] a.row-link", has_text=re.compile(f"^{re.escape(name)}$")
        ).click()
        _expect()(page.locator(".crumbs [aria-current=page]")).to_have_text(name)


def open_dataset(page: Any, folders: tuple[str, ...], name: str) -> None:
    open_folder(page, *folders)
    page.locator("[data-testid=folders] a.row-link", has_text=name).click()
    page.wait_for_url(re.compile(r"/ui/datasets/\d+$"))
    _expect()(page.locator("h1.page-title")).to_have_text(name)


# -- sign-in -----------------------------------------------------------------------------------


def test_sign_in_with_a_token_then_sign_out(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page()
    page.goto("/ui/jobs")
    page.wait_for_url(re.compile(r"/ui/sign-in\?next="))
    expect(page.locator("h1")).to_have_text("Sign in")
    screenshot(page, "01-sign-in", full_page=False)

    page.fill("#token", "mm_not-a-real-token")
    page.click("button[type=submit]")
    expect(page.locator(".form-message")).to_have_text("That token is unknown or has been revoked.")

    page.fill("#token", app.admin_token)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/jobs")  # back where the visitor wanted to go
    expect(page.locator(".who-name")).to_have_text("Ada Admin")
    expect(page.locator(".who-role")).to_have_text("Admin")

    cookie = next(c for c in page.context.cookies() if c["name"] == "mm_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    stored = page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert app.admin_token not in stored and stored == "[{},{}]"
    assert app.admin_token not in page.content()

    page.click(".sign-out")
    page.wait_for_url("**/ui/sign-in?signed_out=1")
    expect(page.locator(".form-note")).to_have_text("You are signed out.")
    assert page.evaluate("async () => (await fetch('/api/v1/session')).status") == 401
    page.goto("/ui/sources")
    page.wait_for_url(re.compile(r"/ui/sign-in\?next=%2Fui%2Fsources"))


def test_the_one_time_sign_in_link(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page()
    link = app.login_link()
    page.goto(link)
    page.wait_for_url("**/ui/overview")  # the home page
    expect(page.locator(".who-role")).to_have_text("Admin")
    # Used once: a second visit is refused with a readable message.
    other = open_page()
    other.goto(link)
    expect(other.locator("body")).to_contain_text(
        "That sign-in link has expired or was already used"
    )


# -- browsing ----------------------------------------------------------------------------------


def test_browse_to_the_videos_folder(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token)
    page.goto("/ui/browse")  # the catalog's root (the home page is the overview)
    root_rows = page.locator("[data-testid=folders] tbody tr")
    expect(root_rows).to_have_count(1)
    expect(root_rows.locator(".badge")).to_have_text("Source")
    screenshot(page, "02-browse-root", full_page=False)
    open_folder(page, "sample", "videos")

    expect(page.locator(".crumbs li")).to_have_text(["Catalog", "sample", "videos"])
    rows = page.locator("[data-testid=folders] tbody tr")
    expect(rows).to_have_count(5)
    h264 = rows.filter(has_text="Video clip-h264.mp4")
    expect(h264.locator(".badge")).to_have_text("Video")
    expect(h264.locator(".pill")).to_have_text("Ready")
    expect(rows.filter(has_text="Video bad.mp4").locator(".pill")).to_have_text("Error")
    expect(rows.filter(has_text="interview").locator("td").nth(1)).to_have_text("Folder")
    expect(page.locator(".pager-summary")).to_have_text(f"Showing 1{DASH}5 of 5 folders")
    expect(page.locator(".page-subtitle")).to_contain_text("5 folders")
    screenshot(page, "03-browse-videos")

    # Sorting: byte order puts "interview" after "Video …"; reversed it comes first.
    expect(rows.first).to_contain_text("Video bad.mp4")
    page.select_option("#sort", "-name")
    page.wait_for_url(re.compile(r"sort=-name"))
    expect(rows.first).to_contain_text("interview")

    # Breadcrumbs lead back up.
    page.locator(".crumbs a", has_text="sample").click()
    expect(page.locator("h1.page-title")).to_have_text("sample")
    badges = page.locator("[data-testid=folders] .badge")
    expect(badges).to_have_text(["Image sequence"])
    page.go_back()
    expect(page.locator("h1.page-title")).to_have_text("videos")


def test_pagination_and_plain_files(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token)
    open_folder(page, "sample", "misc")
    folders = page.locator("[data-testid=folders] tbody tr")
    items = page.locator("[data-testid=items] tbody tr")
    expect(folders).to_have_count(50)
    expect(items).to_have_count(50)
    summaries = page.locator(".pager-summary")
    expect(summaries).to_have_text(
        [
            f"Showing 1{DASH}50 of {MISC_FOLDERS} folders",
            f"Showing 1{DASH}50 of {MISC_FILES + 1} files",
        ]
    )
    # Plain items: name and size; a file name that is markup stays text.
    markup = items.filter(has_text=MARKUP_NAME)
    expect(markup).to_have_count(1)
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("[data-testid=items] img").count() == 0
    expect(items.filter(has_text="file-10.txt").locator("td.num")).to_have_text("1000 B")
    expect(items.filter(has_text="file-20.txt").locator("td.num")).to_have_text("2.0 KiB")
    screenshot(page, "04-browse-pagination", full_page=False)

    page.locator(".pager").first.get_by_role("link", name=NEXT).click()
    page.wait_for_url(re.compile(r"[?&]page=2"))
    expect(folders).to_have_count(MISC_FOLDERS - 50)
    last = f"Showing 51{DASH}{MISC_FOLDERS} of {MISC_FOLDERS} folders"
    expect(summaries.first).to_have_text(last)
    expect(folders.first).to_contain_text("box-51")


# -- viewers ----------------------------------------------------------------------------------


def test_play_a_video_with_range_requests(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token)
    statuses: list[int] = []
    page.on(
        "response",
        lambda r: re.search(r"/api/v1/datasets/\d+/video$", r.url) and statuses.append(r.status),
    )
    open_dataset(page, ("sample", "videos"), "Video clip-h264.mp4")
    video = page.locator("video[data-testid=video]")
    expect(video).to_have_attribute("poster", re.compile(r"/poster$"))
    expect(page.locator(".facts")).to_contain_text("25 fps")
    expect(page.locator("[data-testid=jobs] .pill")).to_have_text(["Success"])
    # The metadata table shows scalars; the probe stays folded until opened.
    expect(page.locator(".kv th", has_text="codec").first).to_be_visible()
    probe = page.locator("details.meta-group[data-key=probe]")
    assert probe.get_attribute("open") is None
    probe.locator("summary").click()
    expect(probe.locator("th", has_text="pix_fmt")).to_be_visible()

    page.evaluate(
        "async () => { const v = document.querySelector('video'); v.muted = true; await v.play(); }"
    )
    page.wait_for_function(
        "() => { const v = document.querySelector('video');"
        " return v.currentTime > 0.3 && v.readyState >= 2; }",
        timeout=15_000,
    )
    page.evaluate("() => document.querySelector('video').pause()")
    assert 206 in statuses, f"the browser got no partial content: {statuses}"
    screenshot(page, "05-dataset-video")


def test_play_a_transcoded_video(open_page: Any, app: Deployment) -> None:
    page = open_page(app.admin_token)
    open_dataset(page, ("sample", "videos"), "Video clip-mpeg4.avi")
    _expect()(page.locator(".facts")).to_contain_text("transcoded to H.264 MP4")
    page.evaluate(
        "async () => { const v = document.querySelector('video'); v.muted = true; await v.play(); }"
    )
    page.wait_for_function(
        "() => { const v = document.querySelector('video');"
        " return v.currentTime > 0.3 && v.readyState >= 2 && v.videoWidth === 320; }",
        timeout=15_000,
    )


def test_zoom_into_the_large_image(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token)
    tiles: list[tuple[str, int]] = []

    def on_response(response: Any) -> None:
        if "/iiif/3/" in response.url and not response.url.endswith("info.json"):
            tiles.append((response.url, response.status))

    page.on("response", on_response)
    open_dataset(page, ("sample", "large"), "Large image slide.tif")
    expect(page.locator(".page-badges .badge")).to_have_text("Large image")
    stage = page.locator("[data-testid=deepzoom]")
    expect(stage).to_have_attribute("data-ready", "true")
    page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=deepzoom]').dataset.tilesLoaded) > 0"
    )
    page.wait_for_timeout(600)  # let the opening animation settle
    before = float(stage.get_attribute("data-zoom") or "0")
    loaded_before = len(tiles)

    page.click("[data-tool=zoomIn]")
    page.click("[data-tool=zoomIn]")
    zoom_js = "Number(document.querySelector('[data-testid=deepzoom]').dataset.zoom)"
    page.wait_for_function(f"() => {zoom_js} > {before * 3}")
    page.wait_for_function(
        f"() => Number(document.querySelector('[data-testid=deepzoom]').dataset.tilesLoaded)"
        f" > {loaded_before}"
    )
    after = float(stage.get_attribute("data-zoom") or "0")
    assert after > before * 3, (before, after)
    assert len(tiles) > loaded_before, "zooming in fetched no new tiles"
    assert all(status == 200 for _, status in tiles), tiles
    # Tiles are IIIF Image API requests; zoomed in, they cut smaller regions at full size.
    pattern = re.compile(r"/iiif/3/\d+/(full|(\d+),(\d+),(\d+),(\d+))/\d+,\d*/0/default\.jpg$")
    matches = [pattern.search(url) for url, _ in tiles]
    assert all(matches), tiles
    regions = [int(m.group(4)) for m in matches[loaded_before:] if m and m.group(4)]
    assert regions and min(regions) <= 512, tiles[loaded_before:]
    assert stage.get_attribute("data-tiles-failed") is None
    expect(page.locator(".zoom-label")).not_to_have_text("…")
    screenshot(page, "06-dataset-large-image")


def test_step_through_an_image_sequence(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token)
    open_dataset(page, ("sample",), "frames")
    stage = page.locator("[data-testid=frames]")
    image = stage.locator("img")
    counter = page.locator(".frame-counter")
    expect(counter).to_have_text("1 / 10")
    page.wait_for_function("() => document.querySelector('.frame-img').naturalWidth === 320")
    first = image.get_attribute("src")

    page.click("[data-tool=next]")
    expect(counter).to_have_text("2 / 10")
    expect(page.locator(".frame-name")).to_have_text("frame_0002.png")
    assert image.get_attribute("src") != first
    page.wait_for_function(
        "() => { const i = document.querySelector('.frame-img');"
        " return i.complete && i.naturalWidth === 320; }"
    )
    page.click("[data-tool=prev]")
    expect(counter).to_have_text("1 / 10")
    page.click("[data-tool=prev]")  # wraps around
    expect(counter).to_have_text("10 / 10")

    stage.focus()
    page.keyboard.press("ArrowRight")
    expect(counter).to_have_text("1 / 10")
    page.locator(".frame-slider").fill("5")
    expect(counter).to_have_text("5 / 10")

    # Play at the dataset's frame rate (1 fps after post-processing), then pause.
    expect(page.locator(".frame-fps")).to_have_text("1 fps")
    page.click("[data-tool=play]")
    expect(stage).to_have_attribute("data-playing", "true")
    expect(counter).to_have_text("6 / 10", timeout=3000)
    page.click("[data-tool=play]")
    expect(stage).to_have_attribute("data-playing", "false")
    screenshot(page, "07-dataset-image-sequence")


# -- jobs --------------------------------------------------------------------------------------


def test_retry_a_failed_job_from_the_jobs_page(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token)
    page.goto("/ui/jobs")
    expect(page.locator(".tab[data-state=error] .tab-count")).to_have_text("1")
    screenshot(page, "08-jobs")
    page.click(".tab[data-state=error]")
    page.wait_for_url("**/ui/jobs?state=error")
    row = page.locator(".job-row").filter(has_text="Video bad.mp4")
    expect(row).to_have_count(1)
    expect(row.locator(".pill")).to_have_text("Error")
    job_id = row.get_attribute("data-job-id")
    detail = page.locator(f".job-row[data-job-id='{job_id}'] + .job-detail")
    expect(detail.locator(".job-error")).to_contain_text("not a readable media file")

    row.locator("[data-action=log]").click()
    expect(detail.locator("pre.log")).not_to_be_empty()
    expect(detail.locator("pre.log")).not_to_have_text("")

    row.locator("[data-action=retry]").click()
    expect(page.locator(".toast")).to_contain_text(f"Job #{job_id} is queued again")
    # The failed list refreshes by itself: the job has left it…
    expect(page.locator(".job-row")).to_have_count(0)
    expect(page.locator(".empty-title")).to_have_text("No failed jobs")
    # …and waits in the queue (this server runs no worker).
    page.click(".tab[data-state=queued]")
    queued = page.locator(f".job-row[data-job-id='{job_id}']")
    expect(queued.locator(".pill")).to_have_text("Queued")
    expect(page.locator(".live-note")).to_contain_text("1 active")
    expect(page.locator("[data-jobs-active]")).to_have_text("1", timeout=8000)
    screenshot(page, "09-jobs-queued-again")

    # Cancel it: it ends canceled, and its dataset offers to retry it.
    queued.locator("[data-action=cancel]").click()
    expect(page.locator(".job-row")).to_have_count(0)
    page.goto("/ui/jobs?state=canceled")
    expect(page.locator(f".job-row[data-job-id='{job_id}'] .pill")).to_have_text("Canceled")
    page.locator(f".job-row[data-job-id='{job_id}'] .cell-target a").click()
    expect(page.locator("h1.page-title")).to_have_text("Video bad.mp4")
    retry_all = page.locator("[data-action=retry-failed]")
    expect(retry_all).to_have_text("Retry failed (1)")
    retry_all.click()
    expect(page.locator("[data-testid=jobs] .pill").first).to_have_text("Queued")
    screenshot(page, "10-dataset-failed-job")
    # Leave no queued work behind for the other tests.
    cancel = f"async () => (await fetch('/api/v1/jobs/{job_id}/cancel', {{method: 'POST'}})).status"
    assert page.evaluate(cancel) == 200


# -- sources and roles ------------------------------------------------------------------------


def test_sync_now_refreshes_the_figures(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token)
    page.goto("/ui/sources")
    card = page.locator("[data-source=sample]")
    expect(card.locator(".source-status .pill")).to_have_text("Synced")
    listed = card.locator("[data-stat=listed] .stat-value")
    expect(listed).not_to_have_text("0")
    total = listed.inner_text()
    expect(card.locator("[data-stat=added] .stat-value")).to_have_text(total)
    screenshot(page, "11-sources")

    card.locator("[data-action=sync]").click()
    expect(page.locator(".toast").first).to_contain_text("Sync of sample started")
    # The page refreshes by itself until the new run is in: nothing new, all unchanged.
    expect(card.locator("[data-stat=unchanged] .stat-value")).to_have_text(total, timeout=20_000)
    expect(card.locator("[data-stat=added] .stat-value")).to_have_text("0")
    expect(card.locator(".source-status .pill")).to_have_text("Synced")
    card.locator(".runs summary").click()
    expect(card.locator(".runs tbody tr")).to_have_count(2)
    screenshot(page, "11-sources-after-sync")


def test_a_viewer_cannot_sync(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.viewer_token)
    expect(page.locator(".who-role")).to_have_text("Viewer")
    page.goto("/ui/sources")
    button = page.locator("[data-source=sample] [data-action=sync]")
    expect(button).to_have_attribute("aria-disabled", "true")
    # The locked button still answers a click: the server says why (Playwright treats
    # aria-disabled as disabled, hence force).
    with page.expect_response(re.compile(r"/api/v1/sources/sample/sync$")) as answer:
        button.click(force=True)
    assert answer.value.status == 403
    banner = page.locator(".banner-error")
    expect(banner).to_have_text("This needs an admin token")
    screenshot(page, "12-sources-viewer-403")
    banner.get_by_role("button", name="Dismiss").click()
    expect(banner).to_have_count(0)


# -- events, errors, small screens -------------------------------------------------------------


def test_events_page(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token)
    page.goto("/ui/events")
    title = page.locator(".empty-title")
    status = page.evaluate("async () => (await fetch('/api/v1/events')).status")
    if status == 404:  # a server without the push endpoints: the page explains them
        expect(title).to_have_text("Push notifications are not enabled on this server")
        expect(page.locator(".steps")).to_contain_text("push-token")
        screenshot(page, "13-events")
        return
    expect(title).to_have_text("No bucket notifications received yet")
    expect(page.locator(".steps")).to_contain_text("push-token")
    screenshot(page, "13-events-empty")

    # Deliveries with a wrong push token are refused and counted (one row per source,
    # channel and reason, not one per delivery): the page shows the count.
    push = (
        "async () => (await fetch('/api/v1/bucket_notifications/s3?token=mmp_wrong',"
        " {method: 'POST', body: '{}'})).status"
    )
    assert page.evaluate(push) == 401
    assert page.evaluate(push) == 401
    page.reload()
    rows = page.locator("[data-testid=refusals] tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".pill")).to_have_text("no valid push token")
    expect(rows.first.locator("[data-testid=refusal-count]")).to_have_text("2")
    expect(rows.first).to_contain_text("invalid push token")
    expect(page.locator("[data-testid=events] tbody tr")).to_have_count(0)
    screenshot(page, "13-events")
    page.goto("/ui/events?outcome=applied")
    expect(title).to_have_text("No events match these filters")
    expect(rows).to_have_count(1)


def test_api_errors_are_shown_readably(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token)
    page.goto("/ui/datasets/987654")
    expect(page.locator(".empty-title")).to_have_text("Not found")
    expect(page.locator(".empty-body")).to_have_text("No folder 987654")
    page.goto("/ui/nowhere")
    expect(page.locator(".empty-body")).to_contain_text("There is no page at /ui/nowhere")


def test_small_screens(open_page: Any, app: Deployment) -> None:
    expect = _expect()
    page = open_page(app.admin_token, viewport={"width": 390, "height": 844})
    open_folder(page, "sample", "videos")
    expect(page.locator(".nav-link[data-nav=browse]")).to_be_visible()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    screenshot(page, "14-browse-phone")
    open_dataset(page, ("sample", "videos"), "Video clip-h264.mp4")
    screenshot(page, "15-dataset-phone")
