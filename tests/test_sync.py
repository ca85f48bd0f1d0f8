"""Sync semantics on the S3 API server and the local-directory backend, on both catalogs.

Each test drives the real store (boto3 against moto's server, or files on disk), runs the
same ``sync_source`` the CLI calls, and reads the catalog back.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from helpers import (
    S3Bucket,
    add_source,
    catalog_folders,
    catalog_items,
    count_writes,
    item_folders,
    sync,
    sync_runs,
)
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.config import load_settings
from mediamirror.errors import StoreError
from mediamirror.sources import sync_source

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def present(items: dict[str, Any]) -> set[str]:
    return {key for key, row in items.items() if row.state == "present"}


def clear_marks(catalog: Catalog) -> None:
    """What post-processing does when it has handled everything."""
    with catalog.write() as conn:
        conn.execute(update(ITEMS).values(needs_processing=False))
        for fid, meta in conn.execute(
            FOLDERS.select().with_only_columns(FOLDERS.c.id, FOLDERS.c.meta)
        ):
            if meta and "type" in meta:
                conn.execute(
                    update(FOLDERS)
                    .where(FOLDERS.c.id == fid)
                    .values(meta={**meta, "MarkForPostProcess": False})
                )


def test_new_keys_are_added(catalog: Catalog, store: Any) -> None:
    keys = ["a/clip.mov", "a/notes.txt", "b/frames/001.png", "b/frames/002.png", "top.bin"]
    for key in keys:
        store.put(key, b"data-" + key.encode())
    add_source(catalog, "src", store)

    summary = sync(catalog, "src")

    assert (summary.added, summary.changed, summary.deleted, summary.unchanged) == (5, 0, 0, 0)
    items = catalog_items(catalog)
    assert set(items) == set(keys)
    for key in keys:
        row = items[key]
        assert row.state == "present"
        assert row.needs_processing is True
        assert row.size == len(b"data-" + key.encode())
        assert row.etag
        assert row.name == key.rsplit("/", 1)[-1]
    where = item_folders(catalog)
    assert where["a/clip.mov"] == "/src/a/Video clip.mov"
    assert where["a/notes.txt"] == "/src/a"
    assert where["b/frames/001.png"] == "/src/b/frames"
    assert where["top.bin"] == "/src"
    runs = sync_runs(catalog)
    assert [(r.state, r.added, r.listed) for r in runs] == [("success", 5, 5)]


def test_changed_content_is_updated_and_flagged(catalog: Catalog, store: Any) -> None:
    store.put("v/clip.mov", b"one")
    store.put("v/still.txt", b"same")
    add_source(catalog, "src", store)
    sync(catalog, "src")
    clear_marks(catalog)
    before = catalog_items(catalog)

    store.put("v/clip.mov", b"two, longer")
    summary = sync(catalog, "src")

    assert (summary.added, summary.changed, summary.deleted, summary.unchanged) == (0, 1, 0, 1)
    after = catalog_items(catalog)
    clip = after["v/clip.mov"]
    assert clip.id == before["v/clip.mov"].id  # updated in place, not re-added
    assert clip.size == len(b"two, longer")
    assert clip.etag != before["v/clip.mov"].etag
    assert clip.needs_processing is True
    assert after["v/still.txt"].needs_processing is False
    meta = catalog_folders(catalog)["/src/v/Video clip.mov"].meta
    assert meta["MarkForPostProcess"] is True
    assert meta["type"] == "video"


@pytest.mark.parametrize("field", ["etag", "size", "last_modified"])
def test_any_changed_attribute_counts_as_a_change(catalog: Catalog, store: Any, field: str) -> None:
    """The catalog is told the object differs in exactly one attribute."""
    store.put("clip.mp4", b"video")
    add_source(catalog, "src", store)
    sync(catalog, "src")
    clear_marks(catalog)
    row = catalog_items(catalog)["clip.mp4"]
    stale = {
        "etag": "0" * 32,
        "size": row.size + 1,
        "last_modified": row.last_modified - timedelta(days=1),
    }[field]
    with catalog.write() as conn:
        conn.execute(update(ITEMS).where(ITEMS.c.id == row.id).values({field: stale}))

    summary = sync(catalog, "src")

    assert (summary.changed, summary.unchanged) == (1, 0)
    fixed = catalog_items(catalog)["clip.mp4"]
    assert getattr(fixed, field) == getattr(row, field)
    assert fixed.needs_processing is True
    assert catalog_folders(catalog)["/src/Video clip.mp4"].meta["MarkForPostProcess"] is True


def test_gone_keys_are_marked_deleted(catalog: Catalog, store: Any) -> None:
    for key in ["a/1.txt", "a/2.txt", "z/last.txt"]:
        store.put(key)
    add_source(catalog, "src", store)
    sync(catalog, "src")

    store.delete("a/1.txt")
    store.delete("z/last.txt")  # after the last listed key: found by the tail sweep
    summary = sync(catalog, "src")

    assert (summary.added, summary.changed, summary.deleted, summary.unchanged) == (0, 0, 2, 1)
    items = catalog_items(catalog)
    assert {k: r.state for k, r in items.items()} == {
        "a/1.txt": "deleted",
        "a/2.txt": "present",
        "z/last.txt": "deleted",
    }


def test_emptied_store_marks_everything_deleted(catalog: Catalog, store: Any) -> None:
    for key in ["a/clip.mov", "b/1.png", "c.txt"]:
        store.put(key)
    add_source(catalog, "src", store)
    sync(catalog, "src")

    for key in ["a/clip.mov", "b/1.png", "c.txt"]:
        store.delete(key)
    summary = sync(catalog, "src")

    assert (summary.listed, summary.deleted) == (0, 3)
    assert present(catalog_items(catalog)) == set()
    folders = catalog_folders(catalog)
    assert folders["/src/a/Video clip.mov"].state == "empty"
    assert folders["/src/b"].state == "empty"
    assert folders["/src"].state == "present"  # a plain folder, not a dataset


def test_empty_dataset_is_kept_and_comes_back(catalog: Catalog, store: Any) -> None:
    store.put("m/clip.mov", b"v1")
    store.put("m/clip.json", b"{}")
    add_source(catalog, "src", store)
    sync(catalog, "src")
    clear_marks(catalog)
    path = "/src/m/Video clip.mov"

    store.delete("m/clip.mov")
    store.delete("m/clip.json")
    summary = sync(catalog, "src")

    assert summary.deleted == 2
    folder = catalog_folders(catalog)[path]
    assert folder.state == "empty"
    assert folder.meta["type"] == "video"  # kept, not dropped
    assert present(catalog_items(catalog)) == set()

    store.put("m/clip.mov", b"v2 is back")
    summary = sync(catalog, "src")

    assert summary.added == 1
    folder = catalog_folders(catalog)[path]
    assert folder.state == "present"
    assert folder.meta["MarkForPostProcess"] is True
    items = catalog_items(catalog)
    assert items["m/clip.mov"].state == "present"
    assert items["m/clip.mov"].needs_processing is True
    assert items["m/clip.json"].state == "deleted"


def test_unchanged_resync_writes_nothing(catalog: Catalog, store: Any) -> None:
    keys = [f"d{i % 3}/f{i}.txt" for i in range(25)] + ["v/clip.mov", "v/clip.json", "i/1.jpg"]
    for key in keys:
        store.put(key)
    add_source(catalog, "src", store)
    sync(catalog, "src", page_size=10)
    items_before = {k: r.updated_at for k, r in catalog_items(catalog).items()}
    folders_before = {
        p: (r.updated_at, r.meta, r.state) for p, r in catalog_folders(catalog).items()
    }

    with count_writes(catalog.engine) as stats:
        summary = sync(catalog, "src", page_size=10)

    assert (summary.added, summary.changed, summary.deleted) == (0, 0, 0)
    assert summary.unchanged == len(keys)
    assert stats.writes_to("items", "folders") == []
    assert {k: r.updated_at for k, r in catalog_items(catalog).items()} == items_before
    after = {p: (r.updated_at, r.meta, r.state) for p, r in catalog_folders(catalog).items()}
    assert after == folders_before


def test_writes_are_batched_per_page(catalog: Catalog, store: Any) -> None:
    """INSERTs on items grow with the number of pages, not the number of keys."""
    page = 1000 if store.kind == "local" else 50  # keeps the S3 upload short
    pages = 3
    keys = [f"batch/{i // 200:02d}/k{i:05d}.txt" for i in range(page * pages)]
    store.put_many(keys)
    add_source(catalog, "src", store)

    with count_writes(catalog.engine) as stats:
        summary = sync(catalog, "src", page_size=page)

    assert summary.added == len(keys)
    inserts = stats.count("INSERT", "items")
    assert 1 <= inserts <= 2 * pages, stats.seen
    assert stats.count("UPDATE", "items") == 0
    assert stats.count("INSERT", "folders") <= 2 * pages + 3  # one per depth level and page
    assert len(catalog_items(catalog)) == len(keys)


def test_listing_is_streamed_across_page_boundaries(catalog: Catalog, store: Any) -> None:
    """Page size 7: a video and its sidecars straddle page boundaries and still meet."""
    fillers = [f"a/{i:02d}.txt" for i in range(6)]  # a/00.txt ... a/05.txt
    # Sorted listing: 6 fillers, then a/clip.csv (7th: last of page 1), a/clip.json,
    # a/clip.mov (page 2), a/clip.mov.json ...
    group = ["a/clip.csv", "a/clip.json", "a/clip.mov", "a/clip.mov.json"]
    tail = [f"b/{i:02d}.txt" for i in range(9)] + ["b/zz.mp4", "b/zz.json"]
    keys = fillers + group + tail
    for key in keys:
        store.put(key)
    add_source(catalog, "src", store)
    settings = load_settings(env={"MEDIAMIRROR_SYNC_PAGE_SIZE": "7", "MEDIAMIRROR_HOME": "x"})
    assert settings.sync_page_size == 7

    with count_writes(catalog.engine) as stats:
        summary = sync_source(catalog, settings, "src", os.environ)

    assert summary.added == len(keys)
    assert stats.count("INSERT", "items") >= 3  # one transaction per page, not one at the end
    where = item_folders(catalog)
    for key in group:
        assert where[key] == "/src/a/Video clip.mov", key
    assert where["b/zz.json"] == "/src/b/Video zz.mp4"
    assert all(where[k] == "/src/a" for k in fillers)
    assert set(catalog_items(catalog)) == set(keys)
    # A second run over the same pages changes nothing.
    again = sync(catalog, "src", page_size=7)
    assert (again.added, again.changed, again.deleted, again.unchanged) == (0, 0, 0, len(keys))


def test_include_and_exclude_filter_relative_keys(catalog: Catalog, store: Any) -> None:
    for key in ["in/a.mov", "in/a.json", "in/skip/b.mov", "in/c.txt", "out.mov"]:
        store.put(key)
    add_source(catalog, "src", store, include=r"^in/.*\.(mov|json)$", exclude=r"/skip/")

    summary = sync(catalog, "src")

    assert set(catalog_items(catalog)) == {"in/a.mov", "in/a.json"}
    assert summary.added == 2
    assert summary.skipped == 3


def test_folder_markers_make_folders_and_obey_filters(catalog: Catalog, bucket: S3Bucket) -> None:
    for key in ["keep/", "keep/sub/", "skip/", "skip/x.txt", "a.txt"]:
        bucket.put(key, b"")
    add_source(catalog, "src", bucket, exclude=r"^skip/")

    summary = sync(catalog, "src")

    assert list(catalog_items(catalog)) == ["a.txt"]  # a marker is never an item
    assert set(catalog_folders(catalog)) == {"/src", "/src/keep", "/src/keep/sub"}
    assert (summary.added, summary.skipped) == (1, 2)


def test_prefix_names_a_folder_not_a_string_prefix(catalog: Catalog, store: Any) -> None:
    for key in ["sub/x/clip.mov", "sub/y.txt", "sub2/not-me.txt", "subway.txt"]:
        store.put(key)
    add_source(catalog, "src", store, sub="sub")

    summary = sync(catalog, "src")

    assert summary.added == 2
    keys = set(catalog_items(catalog))
    prefix = "sub/" if store.kind == "s3" else ""
    assert keys == {prefix + "x/clip.mov", prefix + "y.txt"}
    where = item_folders(catalog)
    # The prefix itself is the mount: nothing of it is repeated below the mount.
    assert where[prefix + "x/clip.mov"] == "/src/x/Video clip.mov"
    assert where[prefix + "y.txt"] == "/src"
    meta = catalog_folders(catalog)["/src/x/Video clip.mov"].meta
    assert meta["import_source"] == store.url("sub") + "/x/clip.mov"
    assert meta["import_path"] == (prefix + "x").rstrip("/")


def test_sidecar_synced_before_its_video_moves_into_the_dataset(
    catalog: Catalog, store: Any
) -> None:
    for key in ["p/clip.json", "p/clip.csv", "p/clip.mov.json", "p/other.json"]:
        store.put(key)
    add_source(catalog, "src", store)
    sync(catalog, "src")
    assert set(item_folders(catalog).values()) == {"/src/p"}  # no video yet: plain items

    store.put("p/clip.mov")
    summary = sync(catalog, "src")

    assert (summary.added, summary.changed, summary.unchanged) == (1, 0, 4)
    where = item_folders(catalog)
    for key in ["p/clip.mov", "p/clip.json", "p/clip.csv", "p/clip.mov.json"]:
        assert where[key] == "/src/p/Video clip.mov", key
    assert where["p/other.json"] == "/src/p"


def test_failed_sync_keeps_the_catalog(catalog: Catalog, bucket: S3Bucket) -> None:
    for key in ["k/1.txt", "k/clip.mov"]:
        bucket.put(key)
    add_source(catalog, "src", bucket)
    sync(catalog, "src")
    items_before = {k: (r.state, r.etag, r.updated_at) for k, r in catalog_items(catalog).items()}
    folders_before = {p: (r.state, r.meta) for p, r in catalog_folders(catalog).items()}

    bucket.drop()
    with pytest.raises(StoreError, match=re.escape(f"bucket {bucket.name!r} does not exist")):
        sync(catalog, "src")

    after = {k: (r.state, r.etag, r.updated_at) for k, r in catalog_items(catalog).items()}
    assert after == items_before
    assert {p: (r.state, r.meta) for p, r in catalog_folders(catalog).items()} == folders_before
    runs = sync_runs(catalog)
    assert [r.state for r in runs] == ["success", "error"]
    assert "does not exist" in runs[-1].error
    assert runs[-1].finished_at is not None
