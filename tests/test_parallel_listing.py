"""Prefix-parallel listing of S3 sources: the same pages as a sequential listing, and
syncs that end equal to the bucket when its folders change, fail, or are killed mid-way.

Everything runs against moto's S3 API server; the kill is a real SIGKILL of a
``mediamirror sync`` subprocess.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from faults import FaultProxy
from helpers import AWS_ENV, Cli, S3Bucket, S3Server, add_source, catalog_items, sync_runs
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import ITEMS
from mediamirror.config import Settings, load_settings
from mediamirror.errors import ConfigError, StoreError
from mediamirror.sources import sync_source
from mediamirror.stores.s3 import S3Store
from mediamirror.sync.parallel import discover, key_ranges, parallel_pages

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

#: Keys whose order trips up naive splitting: "a.txt" < "a/..." < "a0" ('.' < '/' < '0'),
#: folder markers, keys equal to a folder name minus its slash, non-ASCII names.
TRICKY = [
    "a",
    "a.txt",
    "a/",
    "a/x.txt",
    "a/y/z.txt",
    "a0",
    "a0/k.txt",
    "b/only/deep/down/k1.txt",
    "b/only/deep/down/k2.txt",
    "é/clip.mov",
    "é/clip.json",
    "z.txt",
    "\u65e5\u672c/k.txt",
]
#: Folders of different sizes under one top folder: discovery must split it.
TREE = [
    f"data/c{c:02d}/d{d}/k{i:02d}.txt"
    for c in range(12)
    for d in range(c % 3 + 1)
    for i in range(c + 2)
] + ["data/c05/", "data/c05/d1/", "data/c07/d0/"]  # markers named like the cuts


def s3_store(bucket: S3Bucket, prefix: str = "", page_size: int = 7) -> S3Store:
    return S3Store(
        bucket.name,
        prefix,
        endpoint_url=bucket.server.endpoint,
        region="us-east-1",
        access_key=AWS_ENV["AWS_ACCESS_KEY_ID"],
        secret_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        page_size=page_size,
    )


def keys_of(pages: list[list[Any]]) -> list[list[str]]:
    return [[o.key for o in page] for page in pages]


@pytest.fixture(scope="module")
def listed(s3_server: S3Server, s3_client: Any) -> S3Bucket:
    """Read-only bucket shared by the listing tests."""
    bucket = S3Bucket(s3_server, s3_client)
    bucket.put_many(TRICKY + TREE + [f"flat{i:03d}.txt" for i in range(30)])
    return bucket


@pytest.mark.parametrize("prefix", ["", "data/", "a/", "none/"])
@pytest.mark.parametrize("width", [2, 5, 16])
def test_pages_and_order_equal_a_sequential_listing(
    listed: S3Bucket, prefix: str, width: int
) -> None:
    store = s3_store(listed, prefix)
    sequential = list(store.list_pages())
    parallel = list(parallel_pages(store, width))
    assert keys_of(parallel) == keys_of(sequential)
    assert parallel == sequential  # sizes, etags and times too


@pytest.mark.parametrize(
    "after", ["a", "a/", "a/x.txt", "a0", "data/c05/", "data/c05/d0/k03.txt", "zzz"]
)
def test_start_after_equals_a_sequential_listing(listed: S3Bucket, after: str) -> None:
    store = s3_store(listed)
    sequential = keys_of(list(store.list_pages(after)))
    assert keys_of(list(parallel_pages(store, 3, after))) == sequential


def test_one_dominant_folder_is_split_at_the_next_level(listed: S3Bucket) -> None:
    cuts = discover(s3_store(listed, "data/"), width=16)
    assert "data/c00/" in cuts and "data/c11/" in cuts
    assert "data/c11/d2/" in cuts  # 12 folders: fewer than 4 x width, one level down
    # Few top folders under the source prefix: discovery descends into them.
    cuts = discover(s3_store(listed), width=2)
    assert any(c.startswith("data/c") for c in cuts)


def test_many_folders_are_cut_into_a_bounded_number_of_ranges(listed: S3Bucket) -> None:
    cuts = discover(s3_store(listed), width=1)
    assert cuts == sorted(cuts) and 1 < len(cuts) <= 7
    ranges = key_ranges("", cuts)
    assert len(ranges) == len(cuts) + 1
    assert [r.after for r in ranges[1:]] == [r.upto for r in ranges[:-1]]


def test_empty_prefix_gives_one_empty_page(listed: S3Bucket) -> None:
    store = s3_store(listed, "nothing-here/")
    assert keys_of(list(parallel_pages(store, 4))) == [[]] == keys_of(list(store.list_pages()))


def test_width_is_validated(tmp_path: Path) -> None:
    env = {"MEDIAMIRROR_HOME": str(tmp_path)}
    assert load_settings(env=env).sync_list_width == 8
    for bad in ("0", "17"):
        with pytest.raises(ConfigError, match="sync_list_width must be 1 to 16"):
            load_settings(env={**env, "MEDIAMIRROR_SYNC_LIST_WIDTH": bad})


# -- syncs -------------------------------------------------------------------------------------


def run_sync(catalog: Catalog, name: str, **settings: Any) -> Any:
    merged: dict[str, Any] = {"sync_page_size": 5, "sync_list_width": 4, **settings}
    return sync_source(catalog, Settings(**merged), name, os.environ)


def present(catalog: Catalog) -> list[str]:
    return sorted(k for k, row in catalog_items(catalog).items() if row.state == "present")


def objects(bucket: S3Bucket) -> list[str]:
    """The bucket's keys that become items (folder markers make folders)."""
    return sorted(k for k in bucket.keys() if not k.endswith("/"))  # noqa: SIM118


def test_bucket_whose_folders_change_between_runs_ends_equal(
    catalog: Catalog, bucket: S3Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    bucket.put_many([f"f{f}/s{s}/k{i}.txt" for f in range(4) for s in range(3) for i in range(4)])
    bucket.put_many(["f1.txt", "f1/", "top.txt"])
    add_source(catalog, "src", bucket)
    with caplog.at_level(logging.DEBUG, logger="mediamirror.sync.parallel"):
        first = run_sync(catalog, "src")
    assert re.search(r"in \d+ ranges, 4 at once", caplog.text), "the listing was not parallel"
    assert present(catalog) == objects(bucket)
    assert first.added == len(objects(bucket))

    # Folders vanish (a whole one, and the last one: the tail), appear (before, between
    # and after the old ones), grow and shrink; keys at range edges change.
    old = bucket.keys()
    for key in old:
        if key.startswith(("f0/", "f3/", "f2/s1/")) or key == "f1/":
            bucket.delete(key)
    bucket.put_many(["e/new.txt", "f1/s0/k9.txt", "f15/n.txt", "f2.txt", "g/h/i/j.txt"])
    bucket.put("f1/s2/k0.txt", b"changed")
    second = run_sync(catalog, "src")
    assert present(catalog) == objects(bucket)
    assert (second.added, second.changed, second.deleted) == (5, 1, 12 * 2 + 4)

    third = run_sync(catalog, "src", sync_list_width=1)  # sequential agrees: nothing to do
    assert (third.added, third.changed, third.deleted) == (0, 0, 0)


def test_a_failing_range_fails_the_sync_and_deletes_nothing(
    catalog: Catalog, bucket: S3Bucket, s3_server: S3Server
) -> None:
    bucket.put_many([f"d{d}/k{i}.txt" for d in range(6) for i in range(5)])
    with FaultProxy(s3_server.endpoint) as proxy:
        add_source(catalog, "src", bucket, endpoint_url=proxy.endpoint)
        run_sync(catalog, "src")
        before = present(catalog)
        assert len(before) == 30
        # Every range listing but the first (which has no start-after) answers 500.
        proxy.fail(500, times=None, query=r"start-after=")
        with pytest.raises(StoreError, match="HTTP 500"):
            run_sync(catalog, "src", store_max_attempts=1)
    assert present(catalog) == before  # an unlisted range never looks like deleted keys
    assert [r.state for r in sync_runs(catalog)] == ["success", "error"]


def item_count(catalog: Catalog) -> int:
    with catalog.read() as conn:
        return int(conn.execute(select(func.count()).select_from(ITEMS)).scalar_one())


def test_killed_parallel_sync_then_changes_end_equal(
    catalog: Catalog, catalog_url: str, bucket: S3Bucket, tmp_path: Path
) -> None:
    keys = [f"d{d:02d}/k{i:03d}.txt" for d in range(12) for i in range(30)]
    bucket.put_many(keys, threads=16)
    add_source(catalog, "big", bucket)
    cli = Cli(
        home=tmp_path / "home",
        database_url=catalog_url,
        env={"MEDIAMIRROR_SYNC_PAGE_SIZE": "10", "MEDIAMIRROR_SYNC_LIST_WIDTH": "4"},
    )
    proc = cli.popen("sync", "big")
    try:
        deadline = time.monotonic() + 60
        seen = 0
        while time.monotonic() < deadline and proc.poll() is None:
            seen = item_count(catalog)
            if seen > 0:
                break
            time.sleep(0.005)
        assert 0 < seen < len(keys), f"sync was not caught mid-way ({seen} items)"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    committed = sorted(catalog_items(catalog))
    assert 0 < len(committed) < len(keys)
    assert committed == sorted(keys)[: len(committed)]  # pages were written in key order

    # Meanwhile the bucket changes on both sides of where the sync stopped.
    for key in (committed[0], committed[-1], keys[-1], *[k for k in keys if k[:3] == "d07"]):
        bucket.delete(key)
    bucket.put_many(["a/new.txt", "d05/k999.txt", "zz/new.txt"])
    cli.run("sync", "big", env={"MEDIAMIRROR_LOG_LEVEL": "debug"})
    logs = "".join(p.read_text() for p in (cli.home / "logs").glob("*.log"))
    assert re.search(r"in \d+ ranges, 4 at once", logs), "the listing was not parallel"
    assert present(catalog) == objects(bucket)
    runs = sync_runs(catalog)
    assert [(r.state, r.error) for r in runs] == [("error", "interrupted"), ("success", None)]
