"""A source's images mode: what its raster images become, the re-lay of its catalog on the
next sync after the mode changed, and the frames post-processing finds too big (in pixels)
for an image sequence.

Against the S3 API server and the local-directory backend (fixture ``store``), through the
same ``sync_source`` the CLI calls; events through the service's own applier; the
``images`` job through the job runner.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import pyvips
from sqlalchemy import select

from helpers import (
    S3Bucket,
    add_source,
    catalog_folders,
    catalog_items,
    count_writes,
    item_folders,
    sync,
)
from mediamirror.catalog.db import Catalog
from mediamirror.config import Settings
from mediamirror.events.apply import applier_for
from mediamirror.events.model import Action, ObjectEvent
from mediamirror.jobs import queue
from mediamirror.jobs.context import JobContext
from mediamirror.jobs.model import JOBS
from mediamirror.jobs.runner import run_claimed
from mediamirror.postprocess import postprocess
from mediamirror.processing.large_frames import split_large_frames
from mediamirror.processing.pixels import pixel_count
from mediamirror.processing.processors.base import load_dataset
from mediamirror.processing.processors.images import ImagesProcessor
from mediamirror.services import Services
from mediamirror.sources import get_source, set_source
from mediamirror.sync.layout import Kind, Layout, classify

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

PNG = pyvips.Image.black(4, 3).write_to_buffer(".png")
#: Tests whose SQL the others already run on PostgreSQL too.
SQLITE_ONLY = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
BIG = 1000  # large_image_bytes of the pure layout tests


def set_images(catalog: Catalog, name: str, images: str) -> None:
    set_source(catalog, name, env=os.environ, images=images)


def ids(catalog: Catalog) -> dict[str, tuple[int, str]]:
    return {k: (r.id, r.etag) for k, r in catalog_items(catalog).items()}


# -- modes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "images", "kind"),
    [
        ("f.png", 1, "auto", Kind.IMAGE),
        ("f.png", BIG, "auto", Kind.LARGE_IMAGE),
        ("f.png", 1, "large-image", Kind.LARGE_IMAGE),
        ("f.JPG", 1, "large-image", Kind.LARGE_IMAGE),
        ("f.png", BIG * 10, "sequence", Kind.IMAGE),
        ("scan.svs", 1, "sequence", Kind.LARGE_IMAGE),
        ("clip.mov", 1, "large-image", Kind.VIDEO),
        ("notes.txt", BIG, "large-image", Kind.OTHER),
    ],
)
def test_classify_by_images_mode(name: str, size: int, images: str, kind: Kind) -> None:
    assert classify(name, size, BIG, images) is kind


@pytest.mark.parametrize(("images", "folder"), [("auto", "a/Large image f.png"), ("sequence", "a")])
def test_a_frame_found_too_big_stays_large_in_auto_mode_only(images: str, folder: str) -> None:
    lay = Layout("", lambda key: f"s3://bkt/{key}", BIG, images)
    assert lay.place("a/f.png", 1, {}, large=True).folder == folder
    assert lay.place("a/f.png", 1, {}).folder == "a"


def test_large_image_mode_makes_every_image_its_own_dataset(catalog: Catalog, store: Any) -> None:
    store.put("scans/tiny.png", PNG)
    store.put("scans/notes.txt", b"n")
    store.put("clips/clip.mov", b"v")
    add_source(catalog, "src", store, images="large-image")

    summary = sync(catalog, "src")

    assert summary.added == 3
    where = item_folders(catalog)
    assert where["scans/tiny.png"] == "/src/scans/Large image tiny.png"
    assert where["scans/notes.txt"] == "/src/scans"
    assert where["clips/clip.mov"] == "/src/clips/Video clip.mov"
    folders = catalog_folders(catalog)
    meta = folders["/src/scans/Large image tiny.png"].meta
    assert meta["type"] == "large-image"
    assert meta["MarkForPostProcess"] is True
    assert meta["import_source"] == store.object_url("scans/tiny.png")
    assert "type" not in (folders["/src/scans"].meta or {})


def test_sequence_mode_keeps_big_images_frames(catalog: Catalog, store: Any) -> None:
    """By bytes an image is "large" (large_image_bytes=10 here): an ``auto`` source makes
    it a large image, a ``sequence`` source keeps it a frame; whole-slide formats are
    large images in both."""
    for name in ("seq", "auto"):
        store.put(f"{name}/frames/big.png", PNG + b"\0" * 100)
        store.put(f"{name}/frames/small.png", PNG)
        store.put(f"{name}/slides/scan.svs", b"s" * 100)
    add_source(catalog, "seq", store, include="^seq/", images="sequence")
    add_source(catalog, "auto", store, include="^auto/")

    sync(catalog, "seq", large_image_bytes=10)
    sync(catalog, "auto", large_image_bytes=10)

    where = item_folders(catalog)
    assert where["seq/frames/big.png"] == "/seq/seq/frames"
    assert where["seq/frames/small.png"] == "/seq/seq/frames"
    assert where["seq/slides/scan.svs"] == "/seq/seq/slides/Large image scan.svs"
    assert catalog_folders(catalog)["/seq/seq/frames"].meta["type"] == "image-sequence"
    assert where["auto/frames/big.png"] == "/auto/auto/frames/Large image big.png"
    assert where["auto/slides/scan.svs"] == "/auto/auto/slides/Large image scan.svs"


# -- re-lay on a changed mode ------------------------------------------------------------------


def test_changed_mode_relays_on_the_next_sync_keeping_items(catalog: Catalog, store: Any) -> None:
    keys = ["a/1.png", "a/2.jpg", "a/notes.txt", "b/clip.mov", "b/clip.json"]
    for key in keys:
        store.put(key, PNG if key.endswith((".png", ".jpg")) else b"x")
    add_source(catalog, "src", store, images="sequence")
    sync(catalog, "src")
    before = ids(catalog)
    assert item_folders(catalog)["a/1.png"] == "/src/a"

    set_images(catalog, "src", "large-image")
    assert item_folders(catalog)["a/1.png"] == "/src/a"  # `source set` itself moves nothing
    summary = sync(catalog, "src")

    assert (summary.added, summary.changed, summary.deleted) == (0, 0, 0)
    assert (summary.unchanged, summary.relaid) == (5, 2)
    assert "(2 re-laid)" in summary.line()
    where = item_folders(catalog)
    assert where["a/1.png"] == "/src/a/Large image 1.png"
    assert where["a/2.jpg"] == "/src/a/Large image 2.jpg"
    assert where["a/notes.txt"] == "/src/a"
    assert where["b/clip.json"] == "/src/b/Video clip.mov"
    assert ids(catalog) == before  # same rows: ids, etags (and with them their history)
    folders = catalog_folders(catalog)
    for name in ("1.png", "2.jpg"):
        meta = folders[f"/src/a/Large image {name}"].meta
        assert (meta["type"], meta["MarkForPostProcess"]) == ("large-image", True)
    assert folders["/src/a"].state == "present"  # notes.txt is still there

    # Unchanged profile, unchanged bucket: nothing to write.
    with count_writes(catalog.engine) as stats:
        again = sync(catalog, "src")
    assert (again.relaid, again.unchanged) == (0, 5)
    assert stats.writes_to("items", "folders", "sources") == []

    # And back: the frames return to their sequence, which is marked again.
    set_images(catalog, "src", "sequence")
    back = sync(catalog, "src")
    assert back.relaid == 2
    assert item_folders(catalog)["a/1.png"] == "/src/a"
    assert ids(catalog) == before
    folders = catalog_folders(catalog)
    assert folders["/src/a"].meta["MarkForPostProcess"] is True
    assert folders["/src/a"].meta["type"] == "image-sequence"
    assert folders["/src/a/Large image 1.png"].state == "empty"


@SQLITE_ONLY
def test_a_folder_of_only_images_is_marked_empty_when_relaid(catalog: Catalog, store: Any) -> None:
    store.put("frames/1.png", PNG)
    store.put("frames/2.png", PNG)
    add_source(catalog, "src", store)
    sync(catalog, "src")
    assert catalog_folders(catalog)["/src/frames"].meta["type"] == "image-sequence"

    set_images(catalog, "src", "large-image")
    summary = sync(catalog, "src")

    assert summary.relaid == 2
    folders = catalog_folders(catalog)
    assert folders["/src/frames"].state == "empty"
    assert folders["/src/frames/Large image 2.png"].state == "present"
    assert get_source(catalog, "src").options["laid_out_images"] == "large-image"


# -- events ------------------------------------------------------------------------------------


def test_events_place_keys_under_the_current_mode(
    catalog: Catalog, bucket: S3Bucket, tmp_path: Path
) -> None:
    add_source(catalog, "src", bucket, images="sequence")
    services = Services(
        catalog, Settings(home=str(tmp_path / "home"), auto_postprocess=False), os.environ
    )
    applier = applier_for(services)

    def deliver(key: str) -> None:
        bucket.put(key, PNG)
        kind = "ObjectCreated:CompleteMultipartUpload"
        ev = ObjectEvent("s3", kind, Action.CREATED, bucket.name, key)
        (result,) = applier.deliver([ev], lambda fresh: applier.sources.routes(fresh=True))
        assert result.outcome.value == "applied", result.detail

    deliver("digital/one.png")
    assert item_folders(catalog)["digital/one.png"] == "/src/digital"

    set_images(catalog, "src", "large-image")
    deliver("digital/two.png")

    where = item_folders(catalog)
    assert where["digital/two.png"] == "/src/digital/Large image two.png"
    assert where["digital/one.png"] == "/src/digital"  # re-laid by the next sync only
    meta = catalog_folders(catalog)["/src/digital/Large image two.png"].meta
    assert (meta["type"], meta["MarkForPostProcess"]) == ("large-image", True)


# -- frames too big in pixels (auto) -----------------------------------------------------------


@pytest.fixture(scope="module")
def fifty_megapixels() -> bytes:
    """8000x6250 black pixels: 50 megapixels that PNG compresses to about 50 KB."""
    data: bytes = pyvips.Image.black(8000, 6250).write_to_buffer(".png", compression=9)
    return data


def services_for(catalog: Catalog, tmp_path: Path) -> Services:
    settings = Settings(home=str(tmp_path / "home"), large_image_bytes=1 << 24, settle_seconds=0)
    return Services(catalog, settings, os.environ)


def run_queued(services: Services, processor: str) -> list[Any]:
    """Claim the queued jobs and run those of ``processor`` through the job runner."""
    jobs = queue.claim(services.catalog, "test-worker", 100, 60)
    ran = []
    for job in jobs:
        if job.processor == processor:
            run_claimed(services, job, "test-worker")
            ran.append(job)
        else:
            queue.release(services.catalog, job.id, "test-worker")
    return ran


def jobs_of(catalog: Catalog, folder_id: int) -> list[Any]:
    with catalog.read() as conn:
        return list(conn.execute(select(JOBS).where(JOBS.c.target_id == folder_id)))


def test_a_fifty_megapixel_frame_becomes_a_large_image(
    catalog: Catalog, store: Any, tmp_path: Path, fifty_megapixels: bytes
) -> None:
    store.put("seq/big.png", fifty_megapixels)
    store.put("seq/small.png", PNG)
    store.put("alone/huge.png", fifty_megapixels)
    add_source(catalog, "src", store)
    sync(catalog, "src")
    where = item_folders(catalog)
    assert where["seq/big.png"] == "/src/seq"  # listing knows bytes only: a frame
    services = services_for(catalog, tmp_path)
    source_id = get_source(catalog, "src").id
    assert pixel_count(services.source_store(source_id), "seq/big.png", len(fifty_megapixels))
    before = ids(catalog)

    postprocess(services)
    ran = run_queued(services, "images")

    assert len(ran) == 2
    assert [j.state for j in (queue.get(catalog, j.id) for j in ran)] == ["success"] * 2
    where = item_folders(catalog)
    assert where["seq/big.png"] == "/src/seq/Large image big.png"
    assert where["seq/small.png"] == "/src/seq"
    assert where["alone/huge.png"] == "/src/alone/Large image huge.png"
    assert ids(catalog) == before
    folders = catalog_folders(catalog)
    big = folders["/src/seq/Large image big.png"]
    assert big.meta["type"] == "large-image"
    assert big.meta["large_by_pixels"] == 50_000_000
    assert big.meta["import_source"] == store.object_url("seq/big.png")
    # Its pyramid job was queued at once (and the mark cleared, as postprocess does).
    assert [j.processor for j in jobs_of(catalog, big.id)] == ["pyramid"]
    assert big.meta["MarkForPostProcess"] is False
    # The sequence went on with the frame that is left.
    seq = folders["/src/seq"].meta
    assert (seq["type"], seq["frames"], seq["width"]) == ("image-sequence", 1, 4)
    # A folder whose only frame left is no longer a dataset.
    assert "type" not in folders["/src/alone"].meta

    # The next sync of the unchanged bucket keeps the large images where they are.
    with count_writes(catalog.engine) as stats:
        sync(catalog, "src")
    assert stats.writes_to("items", "folders") == []
    # A new version of the image stays a large image too.
    store.put("seq/big.png", fifty_megapixels + b"\0")
    summary = sync(catalog, "src")
    assert summary.changed == 1
    assert item_folders(catalog)["seq/big.png"] == "/src/seq/Large image big.png"
    # A spell in sequence mode brings it back to its sequence; auto again remembers.
    set_images(catalog, "src", "sequence")
    sync(catalog, "src")
    assert item_folders(catalog)["seq/big.png"] == "/src/seq"
    set_images(catalog, "src", "auto")
    assert sync(catalog, "src").relaid == 2
    where = item_folders(catalog)
    assert where["seq/big.png"] == "/src/seq/Large image big.png"
    assert where["alone/huge.png"] == "/src/alone/Large image huge.png"


class CountingStore:
    """A source store that counts the bytes read from it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bytes = 0

    def read_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        data: bytes = self.inner.read_range(key, start, length, etag)
        self.bytes += len(data)
        return data


@SQLITE_ONLY
def test_pixels_are_read_from_the_header_only(
    catalog: Catalog, store: Any, tmp_path: Path, fifty_megapixels: bytes
) -> None:
    padded = fifty_megapixels + b"\0" * (2 << 20)  # bytes after the image: never read
    store.put("big.png", padded)
    store.put("bad.png", b"not an image at all")
    add_source(catalog, "src", store)
    services = services_for(catalog, tmp_path)
    counting = CountingStore(services.source_store(get_source(catalog, "src").id))

    assert pixel_count(counting, "big.png", len(padded)) == 50_000_000
    assert counting.bytes <= 64 * 1024
    assert pixel_count(counting, "bad.png", 19) is None


@SQLITE_ONLY
def test_moving_a_big_frame_twice_changes_nothing_more(
    catalog: Catalog, store: Any, tmp_path: Path, fifty_megapixels: bytes
) -> None:
    """A job run twice (its second run holding the dataset as read before the first
    moved the frame): the frame is moved once, its pyramid job queued once."""
    store.put("seq/big.png", fifty_megapixels)
    store.put("seq/small.png", PNG)
    add_source(catalog, "src", store)
    sync(catalog, "src")
    services = services_for(catalog, tmp_path)
    seq_id = catalog_folders(catalog)["/src/seq"].id
    stale = load_dataset(catalog, seq_id)
    ctx = JobContext(0, {}, tmp_path / "work", lambda *a: None, cancel=threading.Event())

    for _ in range(2):
        ImagesProcessor().run(ctx, services, stale)

    big = catalog_folders(catalog)["/src/seq/Large image big.png"]
    assert item_folders(catalog)["seq/big.png"] == big.path
    assert len(jobs_of(catalog, big.id)) == 1


@SQLITE_ONLY
def test_a_sequence_source_keeps_a_fifty_megapixel_frame(
    catalog: Catalog, store: Any, tmp_path: Path, fifty_megapixels: bytes
) -> None:
    store.put("seq/big.png", fifty_megapixels)
    add_source(catalog, "src", store, images="sequence")
    sync(catalog, "src")
    services = services_for(catalog, tmp_path)
    seq_id = catalog_folders(catalog)["/src/seq"].id
    ctx = JobContext(0, {}, tmp_path / "work", lambda *a: None)

    assert split_large_frames(ctx, services, load_dataset(catalog, seq_id)) is not None
    assert item_folders(catalog)["seq/big.png"] == "/src/seq"
