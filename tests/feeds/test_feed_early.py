"""A feed sync's head start (stores/feed_early.py): the CLI starts the feed's walk before it
imports the catalog's modules, and the sync takes that walk over instead of walking again.

The CMS is the real GraphQL server of tests/feeds/cms.py; a walk "started early" is told
apart from the sync's own by changing the feed after the early walk has fetched every page:
a sync that took it over lists the feed as it was, and asks the CMS nothing more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Cli, catalog_items, wait_for
from mediamirror.catalog.db import Catalog
from mediamirror.config import Settings
from mediamirror.sources import add_source, sync_source
from mediamirror.stores import feed_walk
from mediamirror.stores.feed_config import configure
from mediamirror.stores.feed_early import feed_of, sqlite_path, start_early

from .cms import CmsServer, add_feed_source
from .test_feed_sync import settings_for as feed_settings

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


SQLITE_ONLY = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)


def settings_for(cms: CmsServer, catalog: Catalog, **block: object) -> Settings:
    """The feed tests' settings (tests/feeds/test_feed_sync.py), on ``catalog``."""
    return dataclasses.replace(feed_settings(cms, **block), database_url=catalog.url)


@pytest.fixture
def feed(cms: CmsServer, catalog: Catalog) -> Iterator[Settings]:
    """Source ``premiere`` on the CMS feed: 5 records, pages of 2 (3 pages)."""
    cms.max_first = 2
    for i in range(5):
        cms.add(f"r{i}", f"clip{i}", f"http://127.0.0.1:9/{i}.mp4")
    settings = settings_for(cms, catalog)
    add_source(catalog, "premiere", "feed://premiere", env={}, mount="/premiere")
    yield settings
    feed_walk.cancel_early()
    configure({})


def test_the_sync_takes_over_the_walk_started_early(
    cms: CmsServer, catalog: Catalog, feed: Settings
) -> None:
    before = cms.page_requests()
    started = start_early(feed, "premiere", {})
    if not catalog.is_sqlite:  # the source row is read with sqlite3: SQLite catalogs only
        assert started is False
        return
    assert started is True
    wait_for(lambda: cms.page_requests() == before + 3, "the early walk's 3 pages")
    cms.add("late", "late", "http://127.0.0.1:9/late.mp4")  # after the early walk
    summary = sync_source(catalog, feed, "premiere", {})
    # The sync listed the pages the early walk fetched (no "late") and fetched nothing.
    assert (summary.added, summary.deleted, summary.listed) == (5, 0, 5)
    assert cms.page_requests() == before + 3
    assert "late/late.mp4" not in catalog_items(catalog)
    # Only once: the next sync walks the feed itself.
    again = sync_source(catalog, feed, "premiere", {})
    assert (again.added, again.unchanged) == (1, 5)
    assert cms.page_requests() == before + 6


@SQLITE_ONLY  # the head start reads SQLite catalogs only
def test_a_walk_started_with_other_settings_is_not_taken_over(
    cms: CmsServer, catalog: Catalog, feed: Settings
) -> None:
    before = cms.page_requests()
    other = dataclasses.replace(feed, store_read_timeout=7)  # another page timeout
    assert start_early(other, "premiere", {}) is True
    wait_for(lambda: cms.page_requests() == before + 3, "the early walk's 3 pages")
    cms.add("late", "late", "http://127.0.0.1:9/late.mp4")
    summary = sync_source(catalog, feed, "premiere", {})
    assert (summary.added, summary.listed) == (6, 6)  # its own walk: the feed as it is now
    # The walk started early waits for a sync of its own settings, then is cancelled.
    assert len(feed_walk._EARLY) == 1
    feed_walk.cancel_early()
    assert feed_walk._EARLY == []


@SQLITE_ONLY  # the head start reads SQLite catalogs only
def test_a_failed_early_walk_fails_the_sync_check_in_one_line(
    cms: CmsServer, catalog: Catalog, feed: Settings
) -> None:
    cms.errors = "Cannot query field 'videos'"
    assert start_early(feed, "premiere", {}) is True
    with pytest.raises(Exception, match="answered with GraphQL errors: Cannot query field"):
        sync_source(catalog, feed, "premiere", {})
    assert catalog_items(catalog) == {}


def test_no_head_start_without_a_sqlite_feed_source(
    cms: CmsServer, catalog: Catalog, feed: Settings, tmp_path: Path
) -> None:
    add_source(catalog, "disk", f"file://{tmp_path}", env={}, mount="/disk")
    assert start_early(feed, "disk", {}) is False  # not a feed
    assert start_early(feed, "nobody", {}) is False  # no such source
    assert feed_walk._EARLY == []
    if catalog.is_sqlite:
        assert feed_of(catalog.url, "premiere") == "premiere"
    assert feed_of(f"sqlite:///{tmp_path / 'none.db'}", "premiere") is None  # no catalog
    assert sqlite_path("postgresql://u@127.0.0.1/db") is None
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("sqlite:///a.db?mode=ro") is None
    assert sqlite_path("sqlite:////data/catalog.db") == Path("/data/catalog.db")


def test_the_cli_sync_walks_the_feed_once(cms: CmsServer, sqlite_cli: Cli) -> None:
    """Through the real CLI: the walk started early is the sync's walk (each page asked
    for once, the check's first page included), and every record is written."""
    cms.max_first = 2
    for i in range(7):
        cms.add(f"r{i}", f"clip{i}", f"http://127.0.0.1:9/{i}.mp4")
    cli = add_feed_source(cms, sqlite_cli)
    before = [r.after_offset for r in cms.requests]
    result = cli.run("sync", "premiere")
    assert "premiere: 7 added, 0 changed, 0 deleted" in result.stdout
    assert [r.after_offset for r in cms.requests][len(before) :] == [0, 2, 4, 6]
