"""A feed sync's head start: ``mediamirror sync NAME`` of a feed source starts the feed's
walk before it imports the catalog's modules (SQLAlchemy and the sync engine cost about a
third of a second of CPU), so the CMS answers the first pages meanwhile; the sync then
takes that walk over (:meth:`FeedStore.check`) instead of starting its own.

Only for a SQLite catalog, whose source row is read here with the standard library's
``sqlite3`` (one indexed read). Anything unusual (another database, no such source, not a
feed, a catalog locked or not created yet, a feed block that does not load) starts
nothing, and the sync opens and walks the feed as it always does, with its own errors.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mediamirror.errors import MediamirrorError
from mediamirror.stores.timeouts import StoreTimeouts

if TYPE_CHECKING:
    from mediamirror.config import Settings

_SQLITE_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


def sqlite_path(catalog_url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` catalog URL; None for anything else (a
    server database, query options, escapes, an in-memory database)."""
    for prefix in _SQLITE_PREFIXES:
        if catalog_url.startswith(prefix):
            rest = catalog_url[len(prefix) :]
            if not rest or rest == ":memory:" or any(c in rest for c in "?%#"):
                return None
            return Path(rest)
    return None


def feed_of(catalog_url: str, source: str) -> str | None:
    """The feed name of ``source`` when it is a feed source of a SQLite catalog."""
    path = sqlite_path(catalog_url)
    try:
        if path is None or not path.is_file():
            return None
        # Read-only, and never waiting long: a catalog busy at this moment just means no
        # head start.
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.2)
    except (sqlite3.Error, OSError, ValueError):
        return None
    try:
        row = conn.execute("SELECT kind, bucket FROM sources WHERE name = ?", (source,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if row is None or row[0] != "feed" or not isinstance(row[1], str):
        return None
    return row[1]


def start_early(settings: Settings, source: str, env: Mapping[str, str]) -> bool:
    """Start the walk of ``source``'s feed, as the sync of it will open the feed (the same
    block, timeouts and page size); True when a walk started."""
    feed = feed_of(settings.catalog_url, source)
    if feed is None:
        return False
    from mediamirror.stores.feed import FeedStore
    from mediamirror.stores.feed_config import feed_config

    try:
        config = feed_config(feed, settings.sections.get("feeds") or {})
    except MediamirrorError:
        return False  # the sync says what is wrong with the block
    store = FeedStore(
        config,
        env=env,
        timeouts=StoreTimeouts.from_settings(settings),
        page_size=settings.sync_page_size,
    )
    # The walk's thread waits on the CMS most of the time; when a page arrives it should
    # get the interpreter back from the imports at once, not after the default 5 ms.
    sys.setswitchinterval(0.0005)
    store.start_early()
    return True
