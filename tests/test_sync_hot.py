"""The sync's hot paths (issue 8 §3): cheap timestamps, the stack walk of local
directories, cached folder placement and the SQLite fast read of catalog rows give exactly
what the slower general paths gave."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.utils import parse_timestamp as botocore_parse_timestamp
from sqlalchemy import event, update

from faults import FaultProxy
from helpers import (
    LocalBucket,
    S3Bucket,
    S3Server,
    add_source,
    catalog_folders,
    catalog_items,
    count_writes,
    item_folders,
    sync,
    sync_runs,
)
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import ITEMS
from mediamirror.config import Settings
from mediamirror.errors import StoreError
from mediamirror.sources import sync_source
from mediamirror.stores.local import LocalStore
from mediamirror.stores.s3 import S3Store, parse_timestamp
from mediamirror.sync.engine import _FRESH_CHUNKS
from mediamirror.sync.layout import AUTO, LARGE_IMAGES, SEQUENCE, Layout

pytestmark = [pytest.mark.timeout(120)]

#: What S3, MinIO and GCS put in listings (ISO 8601 with a fraction of 0 to 9 digits, Z
#: or an offset), what head_object's HTTP header carries, and epoch numbers.
TIMESTAMPS: list[Any] = [
    "2024-03-05T12:34:56.789Z",
    "2024-03-05T12:34:56.000Z",
    "2024-03-05T12:34:56Z",
    "2024-03-05T12:34:56.1Z",
    "2024-03-05T12:34:56.12Z",
    "2024-03-05T12:34:56.123456Z",
    "2024-03-05T12:34:56.1234567Z",
    "2024-03-05T12:34:56.123456789Z",
    "2024-03-05T12:34:56.999999999Z",
    "2024-03-05T12:34:56+00:00",
    "2024-03-05T14:34:56.5+02:00",
    "2024-03-05T07:04:56.25-05:30",
    "1969-12-31T23:59:59.999Z",
    "2024-02-29T23:59:59Z",
    "Tue, 05 Mar 2024 12:34:56 GMT",
    "1709642096",
    "1709642096.5",
    1709642096,
]


@pytest.mark.parametrize("value", TIMESTAMPS)
def test_cheap_timestamps_equal_botocores(value: Any) -> None:
    ours = parse_timestamp(value)
    theirs = botocore_parse_timestamp(value)
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset()
    assert ours.tzinfo is not None


def test_s3_listing_times_equal_a_plain_boto3_listing(bucket: S3Bucket) -> None:
    """The store's listing (fast parser) and botocore's own parser agree on every key."""
    for i in range(7):
        bucket.put(f"d/{i:02d}.bin", b"x" * i)
    store = S3Store(bucket.name, endpoint_url=bucket.server.endpoint, page_size=3)
    plain = boto3.session.Session().client(
        "s3",
        endpoint_url=bucket.server.endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    listed = [o for page in store.list_pages() for o in page]
    raw = plain.list_objects_v2(Bucket=bucket.name)["Contents"]
    assert [(o.key, o.size, o.last_modified) for o in listed] == [
        (r["Key"], r["Size"], r["LastModified"]) for r in raw
    ]
    assert all(o.last_modified.tzinfo is not None for o in listed)
    # head_object's Last-Modified is an HTTP date: botocore's own parser reads it.
    head = store.head("d/03.bin")
    assert head.last_modified == listed[3].last_modified.replace(microsecond=0)
    # Another session's client keeps botocore's parser: the hook is this store's alone.
    factory = plain._endpoint._response_parser_factory
    assert factory._defaults.get("timestamp_parser") is not parse_timestamp


def _tree(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * len(name))


NAMES = [
    "a.txt",
    "a-b/1",
    "a/b/c.mov",
    "a/b/d/e.jpg",
    "a/b.d",
    "a/c",
    "a0",
    "ab/x/y/z.bin",
    "b/c",
    "é/x",
    "日本/文字.txt",
]


@pytest.mark.parametrize("page_size", [1, 2, 1000])
def test_local_walk_resumes_after_any_key(tmp_path: Path, page_size: int) -> None:
    """``start_after`` skips whole directories that sort before it, and nothing else."""
    root = tmp_path / "root"
    _tree(root, NAMES)
    (root / "empty" / "deeper").mkdir(parents=True)
    store = LocalStore(root, page_size=page_size)
    every = [o.key for p in store.list_pages() for o in p]
    assert every == sorted(NAMES, key=lambda k: k.encode())
    cuts = [*every, "a", "a/", "a/b", "a/b/", "a/b/d", "ab", "c", "", "zzz"]
    for after in cuts:
        pages = list(store.list_pages(start_after=after))
        assert [o.key for p in pages for o in p] == [k for k in every if k > after], after
        assert all(0 < len(p) <= page_size for p in pages)


def test_local_times_are_exact_to_the_microsecond(tmp_path: Path) -> None:
    """Modification times from nanoseconds without a float, before 1970 too."""
    root = tmp_path / "root"
    root.mkdir()
    cases = {
        "now.bin": 1_732_973_456_789_012_345,
        "old.bin": -1_234_567_891_000,  # 1969-12-31T23:39:25.432109
        "round.bin": 1_700_000_000_000_000_000,
        "edge.bin": 1_700_000_000_999_999_999,
    }
    for name, ns in cases.items():
        (root / name).write_bytes(b"")
        os.utime(root / name, ns=(ns, ns))
    store = LocalStore(root)
    listed = {o.key: o for p in store.list_pages() for o in p}
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for name in cases:
        st = (root / name).stat()
        expected = epoch + timedelta(microseconds=st.st_mtime_ns // 1000)
        assert listed[name].last_modified == expected, name
        assert listed[name] == store.head(name)


@pytest.mark.parametrize("images", [AUTO, LARGE_IMAGES, SEQUENCE])
@pytest.mark.parametrize("prefix", ["", "in/"])
def test_cached_placement_equals_a_fresh_layout(images: str, prefix: str) -> None:
    """Placing keys folder by folder with the cache (and across its clearing) gives what a
    fresh layout gives for each key alone, odd segments included."""
    names = [
        "a/clip.mov",
        "a/clip.json",
        "a/f1.jpg",
        "a/f2.png",
        "a/notes.txt",
        "a/b/big.tif",
        "a/b/slide.svs",
        "a/../b/f.tif",
        "a/./c/f.jpg",
        "a//d/f.jpg",
        "a/%2E/f.jpg",
        "a/%/f.jpg",
        "a/ctl\x01/f.jpg",
        "top.jpg",
        "top.txt",
    ]
    keys = [prefix + n for n in names] * 2

    def url(key: str) -> str:
        return f"s3://b/{key}"

    def place_all(layout: Layout) -> list[Any]:
        videos = layout.videos_by_stem((k, 10) for k in keys)
        return [layout.place(k, 10, videos, large=k.endswith("f2.png")) for k in keys]

    cached = Layout(prefix, url, 5, images)
    first = place_all(cached)
    again = place_all(cached)  # every folder from the cache now
    fresh = []
    for k in keys:
        alone = Layout(prefix, url, 5, images)
        videos = alone.videos_by_stem((k2, 10) for k2 in keys)
        fresh.append(alone.place(k, 10, videos, large=k.endswith("f2.png")))
    assert first == fresh
    assert again == fresh


def test_sqlite_rows_read_fast_compare_like_the_orm(sqlite_url: str, tmp_path: Path) -> None:
    """The SQLite fast read: an unchanged re-sync writes nothing, a row whose stored time
    differs by one microsecond is a change, a time stored without a fraction reads as
    SQLAlchemy reads it, and deleted rows come back."""
    catalog = Catalog(sqlite_url)
    root = tmp_path / "files"
    _tree(root, [f"d{i}/f{j}.bin" for i in range(3) for j in range(5)])
    whole = 1_700_000_000 * 10**9  # a whole second
    os.utime(root / "d2/f3.bin", ns=(whole, whole))
    store = LocalBucket(root)
    add_source(catalog, "src", store)
    assert sync(catalog, "src").added == 15
    before = catalog_items(catalog)
    with count_writes(catalog.engine) as writes:
        again = sync(catalog, "src")
    assert (again.added, again.changed, again.deleted, again.unchanged) == (0, 0, 0, 15)
    assert writes.writes_to("items", "folders") == []

    one_us = before["d0/f0.bin"].last_modified + timedelta(microseconds=1)
    with catalog.write() as conn:
        conn.execute(update(ITEMS).where(ITEMS.c.key == "d0/f0.bin").values(last_modified=one_us))
        conn.execute(update(ITEMS).where(ITEMS.c.key == "d1/f1.bin").values(state="deleted"))
        for key, text in (
            ("d2/f2.bin", "2023-11-14 22:13:20"),
            ("d2/f3.bin", "2023-11-14 22:13:20"),
        ):
            conn.exec_driver_sql("UPDATE items SET last_modified = ? WHERE key = ?", (text, key))
    assert catalog_items(catalog)["d2/f3.bin"].last_modified == before["d2/f3.bin"].last_modified
    fixed = sync(catalog, "src")
    assert (fixed.added, fixed.changed, fixed.unchanged) == (1, 2, 12)
    after = catalog_items(catalog)
    for key in ("d0/f0.bin", "d1/f1.bin", "d2/f2.bin"):
        assert after[key].last_modified == before[key].last_modified
        assert after[key].state == "present"
    assert item_folders(catalog)["d1/f1.bin"] == "/src/d1"
    catalog.close()


def test_listing_failure_ahead_of_the_writer_keeps_committed_pages(
    catalog: Catalog, bucket: S3Bucket, s3_server: S3Server
) -> None:
    """Pages are listed ahead in a thread while the engine writes the previous one: a
    listing that fails part-way leaves exactly the pages written before it committed,
    deletes nothing, and the next sync resumes to the whole bucket."""
    keys = [f"d{d}/k{i:02d}.txt" for d in range(5) for i in range(10)]
    bucket.put_many(keys)
    settings = Settings(sync_page_size=5, sync_list_width=1, store_max_attempts=1)
    committed: list[int] = []
    with FaultProxy(s3_server.endpoint) as proxy:
        add_source(catalog, "src", bucket, endpoint_url=proxy.endpoint)

        def progress(listed: int) -> None:
            committed.append(listed)
            if len(committed) == 2:  # two chunks written: every later listing fails
                proxy.fail(500, times=None, query=r"list-type=2")

        with pytest.raises(StoreError, match="HTTP 500"):
            sync_source(catalog, settings, "src", os.environ, progress)
        written = sorted(k for k, row in catalog_items(catalog).items() if row.state == "present")
        # The pages the thread had already fetched are written too; nothing else is.
        assert committed[-1] == len(written) and len(written) < len(keys)
        assert written == keys[: len(written)]
        run = sync_runs(catalog)[-1]
        assert (run.state, run.listed, run.added) == ("error", len(written), len(written))

        proxy.clear()
        again = sync_source(catalog, settings, "src", os.environ)
    assert (again.added, again.unchanged, again.deleted) == (
        len(keys) - len(written),
        len(written),
        0,
    )
    items = catalog_items(catalog)
    assert sorted(items) == keys and all(row.state == "present" for row in items.values())


def test_mtime_shortcut_cuts_like_integer_arithmetic() -> None:
    """The float shortcut for modification times gives the microsecond the integer rule
    gives (cut, never rounded) wherever it is taken, at the edges of rounding too."""
    from mediamirror.stores.local import _mtime

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rng = random.Random(8)
    samples = [rng.randrange(-(10**18), 3_100_000_000 * 10**9) for _ in range(100_000)]
    for whole in range(0, 3_000_000_000, 299_993):
        for frac_ns in (0, 999, 499_999, 500_000, 500_999, 999_499_999, 999_999_999):
            samples.append(whole * 10**9 + frac_ns)
    for ns in samples:
        assert _mtime(ns) == epoch + timedelta(microseconds=ns // 1000), ns


def _stat_rows(root: Path) -> dict[str, tuple[str, int, datetime, str]]:
    """What a sync must store for every file under ``root``, from ``stat`` directly."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rows = {}
    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            etag = f"{st.st_mtime_ns:x}-{st.st_size:x}"
            when = epoch + timedelta(microseconds=st.st_mtime_ns // 1000)
            rows[path.relative_to(root).as_posix()] = (etag, st.st_size, when, "present")
    return rows


def test_local_resync_compares_raw_stats_like_the_full_merge(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A local re-sync compares ``(key, mtime_ns, size)`` with the catalog's rows before
    building any ObjectInfo: an unchanged tree costs no write transaction per chunk and
    writes nothing, times before 1970 and at the edge of a second included; a change of a
    nanosecond, a stored time a microsecond off, a stored size off, a deleted row, a new
    and a removed file each go through the full merge and end as ``stat`` says."""
    catalog = Catalog(sqlite_url)
    root = tmp_path / "files"
    names = [f"d{i}/f{j}.bin" for i in range(4) for j in range(6)] + ["d1/pic.jpg", "top.txt"]
    _tree(root, names)
    times = {
        "d0/f0.bin": -1_234_567_891_000,  # before 1970, with a fraction
        "d0/f1.bin": -2_000_000_000,  # before 1970, a whole second
        "d1/f2.bin": 1_700_000_000_999_999_999,  # the last nanosecond of a second
        "d2/f3.bin": 1_700_000_000 * 10**9,  # a whole second
        "d3/f4.bin": 1_700_000_000_000_000_999,  # nanoseconds below the microsecond
    }
    for name, ns in times.items():
        os.utime(root / name, ns=(ns, ns))
    store = LocalBucket(root)
    add_source(catalog, "src", store)
    assert sync(catalog, "src", page_size=3).added == len(names)

    def resync() -> tuple[Any, list[str], list[tuple[str, str, bool]]]:
        statements: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        event.listen(catalog.engine, "before_cursor_execute", seen)
        try:
            with count_writes(catalog.engine) as writes:
                summary = sync(catalog, "src", page_size=3)
        finally:
            event.remove(catalog.engine, "before_cursor_execute", seen)
        return summary, statements, writes.writes_to("items", "folders")

    again, statements, writes = resync()
    assert (again.added, again.changed, again.deleted, again.unchanged) == (0, 0, 0, len(names))
    assert writes == []
    # Lease, run record, end of run, tail, lease: five; the full merge would open one more
    # for each chunk of 3 keys (nine).
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in statements) <= 5
    assert {
        k: (r.etag, r.size, r.last_modified, r.state) for k, r in catalog_items(catalog).items()
    } == _stat_rows(root)

    os.utime(root / "d3/f4.bin", ns=(times["d3/f4.bin"] + 1,) * 2)  # one nanosecond
    (root / "d2/new.bin").write_bytes(b"new")
    (root / "d0/f5.bin").unlink()
    items = catalog_items(catalog)
    with catalog.write() as conn:
        off = items["d1/f1.bin"].last_modified + timedelta(microseconds=1)
        conn.execute(update(ITEMS).where(ITEMS.c.key == "d1/f1.bin").values(last_modified=off))
        conn.execute(update(ITEMS).where(ITEMS.c.key == "d2/f0.bin").values(size=99))
        conn.execute(update(ITEMS).where(ITEMS.c.key == "d0/f0.bin").values(state="deleted"))
    fixed, _, writes = resync()
    assert (fixed.added, fixed.changed, fixed.deleted) == (2, 3, 1)
    assert fixed.unchanged == len(names) - 5
    assert writes
    after = catalog_items(catalog)
    assert after["d0/f5.bin"].state == "deleted"
    present = {
        k: (r.etag, r.size, r.last_modified, r.state)
        for k, r in after.items()
        if r.state == "present"
    }
    assert present == _stat_rows(root)
    catalog.close()


def _snapshot(catalog: Catalog) -> tuple[dict[str, Any], dict[str, Any]]:
    """Items and folders as comparable values (no ids, no write times)."""
    where = item_folders(catalog)
    items = {
        key: (r.name, r.size, r.etag, r.last_modified, r.state, r.needs_processing, where[key])
        for key, r in catalog_items(catalog).items()
    }
    folders = {path: (r.meta, r.state) for path, r in catalog_folders(catalog).items()}
    return items, folders


def test_local_first_sync_from_raw_stats_equals_the_full_merge(
    sqlite_url: str, tmp_path: Path
) -> None:
    """New files of a local directory are inserted straight from ``(key, mtime_ns, size)``
    (no ObjectInfo, no datetime): the catalog (rows, stored times, folders, dataset
    metadata and marks) is exactly the one the general merge writes (forced here by an
    include filter that lets everything through), with sidecars, videos, large images,
    times before 1970 and chunk edges; a re-sync of both writes nothing."""
    root = tmp_path / "files"
    names = [
        f"cam{i}/frame-{j:03d}.{'jpg' if j % 3 else 'bin'}" for i in range(3) for j in range(9)
    ]
    names += ["clips/a.mp4", "clips/a.srt", "clips/b.mov", "deep/x/y/z.png", "top.txt"]
    names += ["cam1/frame-010.tif", "slides/big.svs"]
    _tree(root, names)
    times = {
        "cam0/frame-000.bin": -1_234_567_891_000,
        "cam0/frame-001.jpg": -2_000_000_000,
        "cam1/frame-002.jpg": 1_700_000_000_999_999_999,
        "cam2/frame-004.jpg": 1_700_000_000 * 10**9,
        "top.txt": 1_700_000_000_000_000_999,
    }
    for name, ns in times.items():
        os.utime(root / name, ns=(ns, ns))
    (root / "cam1/frame-010.tif").write_bytes(b"t" * 4096)  # a large image by size
    store = LocalBucket(root)
    fast = Catalog(sqlite_url)
    general = Catalog(f"sqlite:///{tmp_path / 'general.db'}")
    add_source(fast, "src", store)
    add_source(general, "src", store, include=".")
    for catalog in (fast, general):
        first = sync(catalog, "src", page_size=4, large_image_bytes=1000)
        assert (first.added, first.unchanged) == (len(names), 0)
    assert _snapshot(fast) == _snapshot(general)
    assert _snapshot(fast)[0]["cam0/frame-000.bin"][3] == datetime(
        1969, 12, 31, 23, 39, 25, 432109, tzinfo=UTC
    )
    for catalog in (fast, general):
        with count_writes(catalog.engine) as writes:
            again = sync(catalog, "src", page_size=4, large_image_bytes=1000)
        assert (again.added, again.changed, again.unchanged) == (0, 0, len(names))
        assert writes.writes_to("items", "folders") == []
        catalog.close()


def test_local_first_sync_writes_new_files_of_several_pages_in_one_transaction(
    sqlite_url: str, tmp_path: Path
) -> None:
    """New files of consecutive pages share one write transaction (SQLite's commit per
    page was a fixed cost of every page): 20 pages of new files take
    ceil(20 / _FRESH_CHUNKS) commits; a page of known files in between writes what waited
    first; the run counts what it committed."""
    root = tmp_path / "files"
    names = [f"d{i // 10}/f{i:03d}.bin" for i in range(100)]
    _tree(root, names)
    catalog = Catalog(sqlite_url)
    add_source(catalog, "src", LocalBucket(root))
    commits = 0
    inserting = False

    def saw(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal inserting
        inserting = inserting or statement.startswith("INSERT INTO items")

    def committed(conn: Any) -> None:
        nonlocal commits, inserting
        commits += inserting
        inserting = False

    event.listen(catalog.engine, "before_cursor_execute", saw)
    event.listen(catalog.engine, "commit", committed)
    try:
        first = sync(catalog, "src", page_size=5)
        assert (first.added, first.listed) == (100, 100)
        assert commits == -(-20 // _FRESH_CHUNKS) < 20
        # 10 pages of new files, the 20 known pages, 10 new pages again.
        more = [f"c{i // 10}/f{i:03d}.bin" for i in range(50)]
        more += [f"e{i // 10}/f{i:03d}.bin" for i in range(50)]
        _tree(root, more)
        commits = 0
        again = sync(catalog, "src", page_size=5)
    finally:
        event.remove(catalog.engine, "before_cursor_execute", saw)
        event.remove(catalog.engine, "commit", committed)
    assert (again.added, again.unchanged, again.listed) == (100, 100, 200)
    # The c pages in one, the e pages in one, and the two chunks straddling new and known
    # keys (c4/f049.bin with the first d keys, d9/f099.bin with the first e keys) each
    # in its own, through the full merge.
    assert commits == 4
    assert sorted(catalog_items(catalog)) == sorted(names + more)
    catalog.close()


def test_sqlite_times_from_nanoseconds_equal_the_datetime_route() -> None:
    """The stored text of a file's time built per second equals the text of its
    datetime (cut to the microsecond), before 1970 and at every edge of a second."""
    from mediamirror.catalog.bulk import sqlite_datetime, sqlite_ns_times
    from mediamirror.stores.local import _mtime

    rng = random.Random(9)
    samples = [rng.randrange(-(10**18), 3_100_000_000 * 10**9) for _ in range(20_000)]
    for whole in range(-3_000_000, 3_000_000_000, 2_999_993):
        for frac_ns in (0, 999, 1000, 499_999_999, 999_999_000, 999_999_999):
            samples.append(whole * 10**9 + frac_ns)
    samples += [samples[0]] * 3  # the same second again: from the cache
    assert sqlite_ns_times(samples) == [sqlite_datetime(_mtime(ns)) for ns in samples]


def test_post_processing_reads_only_media_items_for_builtin_processors() -> None:
    """Post-processing leaves files that are not media out of the datasets it reads
    when every processor is a built-in one: each of them (a configured command too, for
    every dataset type) finds the same inputs and input version in a dataset of every
    kind of file as in its media files alone; a processor of its own reads everything."""
    from mediamirror.postprocess import _MEDIA_EXTENSIONS, _media_inputs
    from mediamirror.processing.processors import registry
    from mediamirror.processing.processors.base import Dataset, ItemRef, Processor
    from mediamirror.sync.layout import extension

    command = {"command": "tool {input}", "applies_to": ["video", "image-sequence", "large-image"]}
    settings = Settings(sections={"processors": {"detect": command}})
    assert _media_inputs(settings)
    names = ["a.bin", "b.JPG", "c.json", "d.mp4", "e.csv", "f.svs", "g.png", "h", "i.MOV"]
    names += ["j.tif", "k.txt", "l.srt", "m.ndpi", ".jpg", "n.jpeg.bin"]
    items = [
        ItemRef(n, f"d/{name}", name, n * 7919 % 5000, f"e{n}") for n, name in enumerate(names)
    ]
    media = [i for i in items if extension(i.name) in _MEDIA_EXTENSIONS]
    assert 0 < len(media) < len(items)
    for kind in ("image-sequence", "video", "large-image"):
        for proc in registry(settings).values():
            whole = Dataset(1, "/d", 1, {"type": kind}, list(items))
            part = Dataset(1, "/d", 1, {"type": kind}, list(media))
            assert proc.inputs(whole) == proc.inputs(part), (proc.name, kind)
            if proc.inputs(whole):
                assert proc.input_version(whole) == proc.input_version(part), (proc.name, kind)

    class Everything(Processor):
        name = "everything"

    own = Settings(sections={"processors": {"detect": command}})
    registry(own)["everything"] = Everything()
    assert not _media_inputs(own)
