"""``sync --from-inventory``: an S3 Inventory report written in AWS's format into the S3 API
server, merged like a listing, then caught up by an incremental sync."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from helpers import (
    S3Bucket,
    add_source,
    assert_one_error_line,
    catalog_folders,
    catalog_items,
    sync,
)
from inventory_report import Row, listing_rows, write_report
from mediamirror.catalog.db import Catalog
from mediamirror.config import Settings
from mediamirror.errors import ConfigError, MediamirrorError, NotFoundError, SyncError
from mediamirror.sync.inventory import InventorySync, sync_from_inventory

pytestmark = [pytest.mark.timeout(120)]

KEYS = [
    "media/a/clip.mov",
    "media/a/clip.json",  # a sidecar of the clip
    "media/a/notes.txt",
    "media/frames/001.png",
    "media/frames/002.png",
    "media/odd name+plus é%.txt",  # encoded in CSV inventories
    "media/empty/",  # a folder marker
    "media/skip/me.tmp",  # excluded by the source's filter
    "elsewhere/not-mine.mov",  # outside the source's prefix
]


def _settings() -> Settings:
    return Settings(sync_page_size=3, large_image_bytes=1 << 24)


def _run(catalog: Catalog, name: str, url: str) -> InventorySync:
    return sync_from_inventory(catalog, _settings(), name, os.environ, url)


def _normalized(catalog: Catalog, mount: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Items and folders of one source, folder paths relative to its mount."""
    from sqlalchemy import select

    from mediamirror.catalog.models import ITEMS
    from mediamirror.sources import list_sources

    source_id = next(s.id for s in list_sources(catalog) if s.mount == mount)
    with catalog.read() as conn:
        rows = conn.execute(select(ITEMS).where(ITEMS.c.source_id == source_id)).all()
    items = {r.key: (r.size, r.etag, r.last_modified, r.state) for r in rows}
    assert len(items) == len(rows)
    folders = {
        p[len(mount) :]: (r.state, r.meta)
        for p, r in catalog_folders(catalog).items()
        if p == mount or p.startswith(mount + "/")
    }
    return items, folders


@pytest.fixture
def inventory(s3_server: Any, s3_client: Any) -> S3Bucket:
    return S3Bucket(s3_server, s3_client)


def _fill(bucket: S3Bucket) -> None:
    for key in KEYS:
        bucket.put(key, b"data-" + key.encode())


def _versioned(rows: list[Row]) -> list[Row]:
    """The rows as a versioned inventory has them: old versions and a deleted key too."""
    then = datetime(2026, 1, 1, tzinfo=UTC)
    extra = [
        Row(rows[0].key, 3, "0" * 32, then, "v-old", is_latest=False),
        Row("media/deleted.mov", None, "", then, "v-dm", is_delete_marker=True),
        Row("media/deleted.mov", 9, "1" * 32, then - timedelta(days=1), "v-1", is_latest=False),
    ]
    return rows + extra


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_report_gives_the_catalog_a_listing_gives(
    catalog: Catalog, bucket: S3Bucket, inventory: S3Bucket, fmt: str
) -> None:
    _fill(bucket)
    rows = _versioned(listing_rows(bucket.client, bucket.name))
    write_report(inventory.client, inventory.name, bucket.name, rows, fmt=fmt, files=3)
    exclude = r"\.tmp$"
    add_source(catalog, "inv", bucket, "media", mount="/inv", exclude=exclude)
    add_source(catalog, "lst", bucket, "media", mount="/lst", exclude=exclude)

    done = _run(catalog, "inv", inventory.url("inventory/"))
    sync(catalog, "lst", page_size=3)

    assert done.report.file_format == fmt
    assert done.from_report.added == 6  # 6 media files; marker, excluded, outside: not items
    # Nothing changed since the report: the follow-up listing agrees with it to the byte.
    since = done.since
    assert (since.added, since.changed, since.deleted, since.unchanged) == (0, 0, 0, 6)
    inv_items, inv_folders = _normalized(catalog, "/inv")
    lst_items, lst_folders = _normalized(catalog, "/lst")
    assert inv_items == lst_items
    assert "media/odd name+plus é%.txt" in inv_items
    assert "media/deleted.mov" not in inv_items
    # Folder metadata names the mount in import paths: compare with it swapped.
    swapped = json.loads(json.dumps(inv_folders).replace("/inv", "/lst"))
    assert swapped == json.loads(json.dumps(lst_folders))
    assert "/a/Video clip.mov" in inv_folders and "/empty" in inv_folders


def test_follow_up_sync_catches_changes_since_the_report(
    catalog: Catalog, bucket: S3Bucket, inventory: S3Bucket
) -> None:
    _fill(bucket)
    add_source(catalog, "src", bucket, "media")
    sync(catalog, "src")  # the catalog already holds every key
    bucket.delete("media/a/notes.txt")  # gone before the report
    rows = listing_rows(bucket.client, bucket.name)
    write_report(inventory.client, inventory.name, bucket.name, rows, fmt="Parquet")
    # Older reports of the same bucket, and one of another bucket, are not read.
    write_report(inventory.client, inventory.name, bucket.name, [], stamp="2026-10-01T00-00Z")
    write_report(inventory.client, inventory.name, "other-bucket", rows, stamp="2027-01-01T00-00Z")
    # Changes after the report.
    bucket.put("media/new.bin", b"new")
    bucket.put("media/frames/001.png", b"rewritten")
    bucket.delete("media/frames/002.png")

    done = _run(catalog, "src", inventory.url("inventory"))

    assert done.report.stamp == "2026-11-29T00-00Z"
    first, since = done.from_report, done.since
    assert (first.added, first.changed, first.deleted) == (0, 0, 1)  # notes.txt
    assert (since.added, since.changed, since.deleted) == (1, 1, 1)
    items = catalog_items(catalog)
    present = {k for k, r in items.items() if r.state == "present"}
    in_bucket = bucket.keys()
    assert present == {k for k in in_bucket if k.startswith("media/") and not k.endswith("/")}
    assert items["media/frames/001.png"].size == len(b"rewritten")


def test_refusals_are_one_line(sqlite_url: str, bucket: S3Bucket, inventory: S3Bucket) -> None:
    """Checked before any write: the catalog's backend does not matter (SQLite only)."""
    catalog = Catalog(sqlite_url)
    _fill(bucket)
    add_source(catalog, "src", bucket, "media")
    rows = listing_rows(bucket.client, bucket.name)
    url = inventory.url("inventory/")

    def refused(kind: type[MediamirrorError], *fragments: str) -> None:
        with pytest.raises(kind) as info:
            _run(catalog, "src", url)
        text = str(info.value)
        assert "\n" not in text
        for fragment in fragments:
            assert fragment in text, text

    refused(NotFoundError, "no S3 Inventory report under")
    write_report(inventory.client, inventory.name, "someone-else", rows)
    refused(ConfigError, "for bucket someone-else", repr(bucket.name))
    # A manifest under the source's bucket naming another one.
    key = write_report(
        inventory.client, inventory.name, bucket.name, rows, manifest={"sourceBucket": "x"}
    )
    refused(ConfigError, "lists bucket 'x'", repr(bucket.name))
    write_report(
        inventory.client, inventory.name, bucket.name, rows, manifest={"fileFormat": "ORC"}
    )
    refused(ConfigError, "ORC format", "CSV and Parquet")
    write_report(
        inventory.client,
        inventory.name,
        bucket.name,
        rows,
        manifest={"fileSchema": "Bucket, Key, Size"},
    )
    refused(ConfigError, "no LastModifiedDate, ETag field")
    # A manifest that is not JSON, with a checksum that matches it.
    bad = b"{not json"
    inventory.put(key, bad)
    inventory.put(key.replace(".json", ".checksum"), hashlib.md5(bad).hexdigest().encode())
    refused(ConfigError, "is not a valid S3 Inventory manifest")
    # A manifest whose checksum does not match.
    inventory.put(key.replace(".json", ".checksum"), b"0" * 32)
    refused(SyncError, "does not match its manifest.checksum")
    # A data file that does not match its MD5 checksum in the manifest.
    key = write_report(
        inventory.client, inventory.name, bucket.name, rows, stamp="2026-12-01T00-00Z"
    )
    doc = json.loads(inventory.client.get_object(Bucket=inventory.name, Key=key)["Body"].read())
    inventory.put(doc["files"][0]["key"], b"tampered")
    refused(SyncError, "does not match its MD5 checksum")
    # A data file the manifest lists, missing from the bucket.
    key = write_report(
        inventory.client, inventory.name, bucket.name, rows, stamp="2026-12-02T00-00Z"
    )
    doc = json.loads(inventory.client.get_object(Bucket=inventory.name, Key=key)["Body"].read())
    inventory.delete(doc["files"][1]["key"])
    refused(SyncError, "lists s3://", "which does not exist")
    # The catalog lost nothing to the refusals: the source was never synced.
    assert catalog_items(catalog) == {}
    catalog.close()


def test_cli_syncs_from_an_inventory(
    sqlite_cli: Any, bucket: S3Bucket, inventory: S3Bucket
) -> None:
    _fill(bucket)
    rows = listing_rows(bucket.client, bucket.name)
    write_report(inventory.client, inventory.name, bucket.name, rows, fmt="CSV")
    sqlite_cli.run("source", "add", "src", bucket.url("media"), *bucket.cli_options)

    result = sqlite_cli.run("sync", "src", "--from-inventory", inventory.url("inventory/"))

    lines = result.stdout.splitlines()
    assert "7 added" in lines[0] and "inventory report of 2026-11-29T00-00Z" in lines[0]
    assert "0 added, 0 changed, 0 deleted, 7 unchanged" in lines[1]
    other = S3Bucket(bucket.server, bucket.client)
    write_report(inventory.client, other.name, "not-the-source", rows)
    bad = sqlite_cli.run("sync", "src", "--from-inventory", other.url(), ok=False)
    assert_one_error_line(bad, "for bucket not-the-source")


def test_empty_report_of_an_empty_prefix(
    sqlite_url: str, bucket: S3Bucket, inventory: S3Bucket
) -> None:
    """AWS writes empty data files for an empty bucket: nothing to add, nothing refused."""
    catalog = Catalog(sqlite_url)
    bucket.put("elsewhere/x.bin")
    add_source(catalog, "src", bucket, "media")
    write_report(inventory.client, inventory.name, bucket.name, [], files=1)

    done = _run(catalog, "src", inventory.url())

    assert (done.from_report.listed, done.from_report.added, done.since.added) == (0, 0, 0)
    catalog.close()


def _apply_events(
    catalog: Catalog, bucket: S3Bucket, created: list[str], removed: list[str]
) -> None:
    """Bucket events for these keys, applied in process as the service applies them."""
    from mediamirror.events.apply import applier_for
    from mediamirror.events.model import Action, ObjectEvent
    from mediamirror.events.routing import Route
    from mediamirror.services import Services
    from mediamirror.sources import get_source

    applier = applier_for(Services(catalog, _settings(), dict(os.environ)))
    route = Route.of(get_source(catalog, "src"))
    for key, action in [(k, Action.CREATED) for k in created] + [
        (k, Action.REMOVED) for k in removed
    ]:
        kind = "ObjectCreated:Put" if action is Action.CREATED else "ObjectRemoved:Delete"
        result = applier.apply(route, ObjectEvent("s3", kind, action, bucket.name, key))
        assert result.outcome.value == "applied", result.as_dict()


def _rows_and_jobs(catalog: Catalog, keys: list[str]) -> tuple[dict[str, Any], int]:
    """Every column of these keys' items, and how many jobs the catalog holds."""
    from sqlalchemy import func, select

    from mediamirror.catalog.models import ITEMS
    from mediamirror.jobs.model import JOBS

    with catalog.read() as conn:
        rows = conn.execute(select(ITEMS).where(ITEMS.c.key.in_(keys))).all()
        jobs = conn.execute(select(func.count()).select_from(JOBS)).scalar_one()
    return {r.key: tuple(r) for r in rows}, jobs


def test_items_written_after_the_report_are_left_to_the_listing(
    catalog: Catalog, bucket: S3Bucket, inventory: S3Bucket
) -> None:
    """Events after the report's creation: the report's pass neither deletes the key they
    added, nor rewinds the one they changed, nor brings back the one they deleted, and
    nothing is queued again; what happened before the report, the report decides."""
    _fill(bucket)
    add_source(catalog, "src", bucket, "media")
    sync(catalog, "src")  # the last full listing: before the report
    bucket.delete("media/a/notes.txt")  # gone before the report: the report tells
    rows = listing_rows(bucket.client, bucket.name)
    write_report(inventory.client, inventory.name, bucket.name, rows, fmt="CSV")
    # After the report: events keep the catalog current.
    bucket.put("media/new.bin", b"new")
    bucket.put("media/frames/001.png", b"rewritten")
    bucket.delete("media/frames/002.png")
    _apply_events(
        catalog, bucket, ["media/new.bin", "media/frames/001.png"], ["media/frames/002.png"]
    )
    later = ["media/new.bin", "media/frames/001.png", "media/frames/002.png"]
    before = _rows_and_jobs(catalog, later)
    assert len(before[0]) == 3

    done = _run(catalog, "src", inventory.url("inventory/"))

    assert done.from_report is not None
    first, since = done.from_report, done.since
    assert (first.added, first.changed, first.deleted) == (0, 0, 1)  # notes.txt only
    assert (since.added, since.changed, since.deleted) == (0, 0, 0)
    assert _rows_and_jobs(catalog, later) == before  # not one write, not one job
    items = catalog_items(catalog)
    assert items["media/new.bin"].state == "present"
    assert items["media/frames/001.png"].size == len(b"rewritten")
    assert items["media/frames/002.png"].state == "deleted"
    assert items["media/a/notes.txt"].state == "deleted"


def test_report_older_than_the_last_listing_is_not_read(
    catalog: Catalog, bucket: S3Bucket, inventory: S3Bucket
) -> None:
    _fill(bucket)
    add_source(catalog, "src", bucket, "media")
    rows = listing_rows(bucket.client, bucket.name)
    write_report(inventory.client, inventory.name, bucket.name, rows, fmt="Parquet")
    bucket.put("media/new.bin", b"new")  # after the report; a listing brings it
    sync(catalog, "src")

    done = _run(catalog, "src", inventory.url("inventory/"))

    assert done.from_report is None
    assert "older than the catalog's last full listing" in done.lines()[0]
    assert "not read, listed instead" in done.lines()[0]
    assert done.since.writes == 0
    assert catalog_items(catalog)["media/new.bin"].state == "present"


def test_runs_merged_from_disk_give_the_listing_order(
    bucket: S3Bucket, inventory: S3Bucket, tmp_path: Any
) -> None:
    """Runs of 2 rows merged 3 at a time (two levels of merges): the report's keys come
    out in the order of S3's listing; a key in two data files is refused."""
    from mediamirror.stores import ReadOnlyStore, open_store, parse_spec
    from mediamirror.sync.inventory import (
        Inventory,
        find_report,
        objects,
        read_report,
        sort_report,
    )

    keys = [f"media/{c}{i}" for i in range(12) for c in ("b", "A", "é", "~", "a b")]
    bucket.put_many(keys)
    rows = listing_rows(bucket.client, bucket.name)
    for fmt in ("CSV", "Parquet"):
        write_report(inventory.client, inventory.name, bucket.name, rows, fmt=fmt, files=4)
        spec = parse_spec(inventory.url("inventory/"), **inventory.options)
        store = ReadOnlyStore(open_store(spec, os.environ))
        report = read_report(store, find_report(store, bucket.name), bucket.name)
        work = tmp_path / fmt
        work.mkdir()
        runs = sort_report(store, report, "media/", work, run_rows=2, fan_in=3)
        listed = [o.key for o in objects(runs.rows(), report)]
        assert listed == bucket.keys()  # S3's order: UTF-8 bytes
        assert list(work.iterdir()) == []  # every run removed once read
    # One key in two data files.
    write_report(
        inventory.client,
        inventory.name,
        bucket.name,
        rows + rows[:1],
        files=2,
        stamp="2026-12-01T00-00Z",
    )
    report = read_report(store, find_report(store, bucket.name), bucket.name)
    with pytest.raises(SyncError, match="twice"):
        list(Inventory(store, report, "")(None))
