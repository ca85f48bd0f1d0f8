"""Folder listings in the browser: list and grid views with the thumbnails the jobs made,
the view remembered, and bulk post-processing of a selection (admins only).

A deployment of its own (the shared one is left alone: these tests queue jobs): a local
source with, under ``done/``, an image sequence, a large image, a video, a corrupt video
(no thumbnail) and a plain folder, all post-processed; under ``todo/``, two image
sequences still marked for post-processing. ``serve --no-worker`` serves it, so jobs the
UI queues stay queued where the test sees them.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from sqlalchemy import select

from helpers import Cli, catalog_folders
from mediamirror.catalog.db import Catalog
from mediamirror.jobs.model import JOBS
from mediamirror.processing.transcode import ffmpeg_exe

from .axe import assert_accessible
from .conftest import CORRUPT_MP4, ENV, VIEWPORT, Deployment, _token, screenshot, sign_in

pytestmark = pytest.mark.timeout(180)
DONE, TODO = "/t/done", "/t/todo"
WITH_THUMBS = ["Large image big.tif", "Video clip.mp4", "shots"]
WITHOUT = ["Video bad.mp4", "notes"]
#: ffmpeg arguments of a 1 s 320x240 web-ready H.264 clip (its output file follows).
CLIP_ARGS = [
    *["-hide_banner", "-nostdin", "-loglevel", "error", "-y"],
    *["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:d=1"],
    *["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
]


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def solid(width: int, height: int, rgb: list[int]) -> pyvips.Image:
    return (pyvips.Image.black(width, height) + rgb).cast("uchar").copy(interpretation="srgb")


def _media(root: Path) -> Path:
    media = root / "media"
    shots = media / "done" / "shots"
    shots.mkdir(parents=True)
    for i, rgb in enumerate([[200, 40, 40], [40, 200, 40], [40, 40, 200]], 1):
        solid(400, 300, rgb).pngsave(str(shots / f"shot-{i}.png"))
    noise = pyvips.Image.gaussnoise(1200, 900, mean=128, sigma=50)
    big = noise.bandjoin([noise * 0.5, noise]).cast("uchar").copy(interpretation="srgb")
    big.tiffsave(str(media / "done" / "big.tif"))  # 3 MB: a large image
    made = subprocess.run(
        [ffmpeg_exe(), *CLIP_ARGS, str(media / "done" / "clip.mp4")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    (media / "done" / "bad.mp4").write_bytes(CORRUPT_MP4)
    (media / "done" / "notes").mkdir()
    (media / "done" / "notes" / "readme.txt").write_text("not media\n")
    for name in ("seq-a", "seq-b"):
        (media / "todo" / name).mkdir(parents=True)
        for i in range(1, 3):
            solid(64, 48, [90, 90, 90]).pngsave(str(media / "todo" / name / f"f{i}.png"))
    return media


@pytest.fixture(scope="module")
def thumbs_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("web-thumbs")
    media = _media(root)
    cli = Cli(home=root / "home", database_url=f"sqlite:///{root / 'catalog.db'}", env=ENV)
    dep = Deployment(root, media, cli)
    try:
        cli.run("source", "add", "t", media.as_uri())
        cli.run("sync", "t", "--quiet")
        cli.run("postprocess", DONE, "--recursive")  # todo/ stays marked
        cli.run("worker", "--burst", timeout=120)
        dep.serve()
        dep.admin_token = _token(cli, "admin", "Ada Admin")
        dep.viewer_token = _token(cli, "viewer", "Vic Viewer")
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def catalog(thumbs_app: Deployment) -> Iterator[Catalog]:
    cat = Catalog(thumbs_app.cli.database_url, migrate=False)
    yield cat
    cat.close()


@pytest.fixture
def open_page(browser: Any, thumbs_app: Deployment) -> Iterator[Callable[..., Any]]:
    """``open_page(role)``: a new browser context (its own cookies and storage), signed in
    as the deployment's admin or viewer."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(role: str) -> Any:
        context = browser.new_context(base_url=thumbs_app.url, viewport=VIEWPORT)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "response",
            lambda r: r.status >= 500 and errors.append(f"HTTP {r.status} from {r.url}"),
        )
        sign_in(page, thumbs_app.admin_token if role == "admin" else thumbs_app.viewer_token)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"errors in the page: {errors}"


def folder_id(catalog: Catalog, path: str) -> int:
    return int(catalog_folders(catalog)[path].id)


def open_listing(page: Any, catalog: Catalog, path: str) -> None:
    page.goto(f"/ui/browse/{folder_id(catalog, path)}")
    _expect()(page.locator(".crumbs [aria-current=page]")).to_have_text(path.rsplit("/", 1)[1])


def loaded_images(page: Any, scope: str) -> dict[str, int]:
    """alt text -> naturalWidth of every thumbnail under ``scope``, once all have loaded."""
    page.wait_for_function(
        "s => [...document.querySelectorAll(s + ' img.thumb')].every(i => i.complete)", arg=scope
    )
    found: dict[str, int] = page.eval_on_selector_all(
        f"{scope} img.thumb",
        "imgs => Object.fromEntries(imgs.map(i => [i.alt, i.naturalWidth]))",
    )
    return found


def test_grid_view_shows_the_thumbnails_and_is_remembered(open_page: Any, catalog: Catalog) -> None:
    expect = _expect()
    page = open_page("admin")
    open_listing(page, catalog, DONE)
    list_button = page.get_by_role("button", name="List")
    grid_button = page.get_by_role("button", name="Grid")
    expect(list_button).to_have_attribute("aria-pressed", "true")  # the default
    expect(grid_button).to_have_attribute("aria-pressed", "false")

    # The list: a small thumbnail beside each dataset that has one, an icon otherwise.
    rows = page.locator("[data-testid=folders] tbody tr")
    expect(rows).to_have_count(5)
    small = loaded_images(page, "[data-testid=folders]")
    assert all(width > 0 for width in small.values()), small
    assert sorted(small) == sorted(f"Thumbnail of {name}" for name in WITH_THUMBS)
    for name in WITHOUT:
        expect(rows.filter(has_text=name).locator("[data-thumb=none]")).to_have_count(1)
    lazy = page.eval_on_selector_all("img.thumb", "imgs => imgs.map(i => i.loading)")
    assert lazy and set(lazy) == {"lazy"}
    assert_accessible(page, "browse (list view)")
    screenshot(page, "thumbs-01-list")

    # The grid, chosen with the keyboard.
    grid_button.focus()
    page.keyboard.press("Enter")
    expect(grid_button).to_have_attribute("aria-pressed", "true")
    expect(list_button).to_have_attribute("aria-pressed", "false")
    cards = page.locator("[data-testid=folders-grid] li.thumb-card")
    expect(cards).to_have_count(5)
    expect(page.locator("[data-testid=folders]")).to_have_count(0)
    big = loaded_images(page, "[data-testid=folders-grid]")
    assert sorted(big) == sorted(f"Thumbnail of {name}" for name in WITH_THUMBS)
    assert all(width > 0 for width in big.values()), big
    for name in WITHOUT:
        expect(cards.filter(has_text=name).locator("[data-thumb=none]")).to_have_count(1)
    # Fixed boxes: every picture frame is 4:3 whatever its picture (or icon), so nothing
    # moves when a thumbnail arrives.
    boxes = page.eval_on_selector_all(
        ".thumb-frame",
        "els => els.map(e => [e.getBoundingClientRect().width, e.getBoundingClientRect().height])",
    )
    assert all(abs(h - w * 3 / 4) < 1 and h > 100 for w, h in boxes), boxes
    assert_accessible(page, "browse (grid view)")
    screenshot(page, "thumbs-02-grid")

    # A card opens its dataset.
    cards.filter(has_text="shots").locator("a.thumb-link").click()
    page.wait_for_url(re.compile(r"/ui/datasets/\d+$"))
    page.go_back()
    expect(grid_button).to_have_attribute("aria-pressed", "true")

    # Remembered: a reload (and another folder) opens in the grid.
    page.reload()
    expect(page.get_by_role("button", name="Grid")).to_have_attribute("aria-pressed", "true")
    expect(cards).to_have_count(5)
    page.get_by_role("button", name="List").click()
    page.reload()
    expect(page.get_by_role("button", name="List")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("[data-testid=folders] tbody tr")).to_have_count(5)


def queued_for(catalog: Catalog, folder_ids: list[int], timeout: float = 15) -> list[Any]:
    """The jobs queued for ``folder_ids``, once there is one for each (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        with catalog.read() as conn:
            jobs = conn.execute(
                select(JOBS).where(
                    JOBS.c.target_type == "folder",
                    JOBS.c.target_id.in_(folder_ids),
                    JOBS.c.state == "queued",
                )
            ).all()
        if {j.target_id for j in jobs} == set(folder_ids):
            return list(jobs)
        if time.monotonic() > deadline:
            raise AssertionError(f"no queued job for each of {folder_ids}: {jobs}")
        time.sleep(0.1)


def test_a_selection_is_post_processed(open_page: Any, catalog: Catalog) -> None:
    expect = _expect()
    page = open_page("admin")
    open_listing(page, catalog, TODO)
    bar = page.get_by_role("region", name="Selection")
    expect(bar).to_be_visible()
    post = bar.get_by_role("button", name="Post-process")
    expect(post).to_be_hidden()  # nothing selected yet

    # One with the keyboard, then all on the page.
    box = page.get_by_role("checkbox", name="Select seq-a")
    box.focus()
    page.keyboard.press("Space")
    expect(box).to_be_checked()
    expect(bar).to_contain_text("1 dataset selected")
    expect(page.locator(".crumbs [aria-current=page]")).to_have_text("todo")  # no navigation
    page.get_by_role("checkbox", name="Select all 2 datasets on this page").check()
    expect(bar).to_contain_text("2 datasets selected")
    expect(page.get_by_role("checkbox", name="Select seq-b")).to_be_checked()
    assert_accessible(page, "browse with a selection")
    screenshot(page, "thumbs-03-selection")

    post.click()
    toast = page.locator(".toast")
    expect(toast.first).to_be_visible()
    screenshot(page, "thumbs-04-queued", full_page=False)
    ids = [folder_id(catalog, f"{TODO}/seq-a"), folder_id(catalog, f"{TODO}/seq-b")]
    jobs = queued_for(catalog, ids)
    assert {j.processor for j in jobs} == {"images"}
    expect(bar).not_to_contain_text("selected")  # the selection is cleared
    expect(page.get_by_role("checkbox", name="Select seq-a")).not_to_be_checked()


def test_a_selection_in_the_grid_is_reprocessed(open_page: Any, catalog: Catalog) -> None:
    expect = _expect()
    page = open_page("admin")
    open_listing(page, catalog, DONE)
    page.get_by_role("button", name="Grid").click()
    page.get_by_role("checkbox", name="Select Large image big.tif").check()
    bar = page.get_by_role("region", name="Selection")
    expect(bar).to_contain_text("1 dataset selected")
    page.keyboard.press("Escape")  # clears it
    expect(bar).not_to_contain_text("selected")
    expect(page.get_by_role("checkbox", name="Select Large image big.tif")).not_to_be_checked()
    page.get_by_role("checkbox", name="Select Large image big.tif").check()
    # The selection survives a change of view.
    page.get_by_role("button", name="List").click()
    expect(page.get_by_role("checkbox", name="Select Large image big.tif")).to_be_checked()
    bar.get_by_role("button", name="Reprocess").click()
    expect(page.locator(".toast").first).to_be_visible()
    jobs = queued_for(catalog, [folder_id(catalog, f"{DONE}/Large image big.tif")])
    assert [j.processor for j in jobs] == ["pyramid"]


def test_a_viewer_sees_no_checkboxes(open_page: Any, catalog: Catalog) -> None:
    expect = _expect()
    page = open_page("viewer")
    open_listing(page, catalog, DONE)
    expect(page.locator("[data-testid=folders] tbody tr")).to_have_count(5)
    for view in ("List", "Grid"):
        page.get_by_role("button", name=view).click()
        expect(page.get_by_role("button", name=view)).to_have_attribute("aria-pressed", "true")
        assert page.locator("input[type=checkbox]").count() == 0
        assert page.get_by_role("region", name="Selection").count() == 0
    assert all(w > 0 for w in loaded_images(page, "[data-testid=folders-grid]").values())
    screenshot(page, "thumbs-05-viewer-grid")

    # On a phone the grid reflows: no sideways scrolling, the toggle still named.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_role("button", name="Grid")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
    screenshot(page, "thumbs-06-phone-grid")
