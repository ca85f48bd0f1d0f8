"""The sync engine: a streamed merge of a sorted listing against the catalog.

Each chunk of the listing covers the key range ``(previous chunk's last key, this chunk's
last key]``. In one transaction the engine reads the catalog's items in that range, adds
new keys, updates changed ones, marks missing ones deleted and fixes dataset metadata.
(New files of consecutive chunks of a local walk share one transaction.) A sync killed at
any moment leaves every committed chunk consistent, and the next run simply merges again:
nothing is lost or duplicated, and unchanged keys cost no writes.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import itertools
import logging
import operator
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, bindparam, insert, select, update

from mediamirror import interrupt
from mediamirror.catalog import leases, retry
from mediamirror.catalog.bulk import (
    insert_items,
    insert_sqlite_items,
    sqlite_datetime,
    sqlite_ns_times,
)
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS, SOURCES, SYNC_RUNS, Source, utcnow
from mediamirror.errors import SyncError
from mediamirror.notify import outbox
from mediamirror.profiles import profile_of
from mediamirror.stores.base import ObjectInfo, Store
from mediamirror.sync import feed_meta
from mediamirror.sync.layout import (
    AUTO,
    BY_PIXELS,
    SIDECAR_EXTENSIONS,
    DatasetType,
    Layout,
    Placement,
    dataset_metadata,
    extension,
    group_prefix,
    is_raster,
)
from mediamirror.sync.parallel import parallel_pages, range_store

RUNS = SYNC_RUNS
log = logging.getLogger(__name__)
_HOLDBACK_LIMIT = 10_000
#: What the merge compares of a catalogued item.
_ITEM_ROW = (
    ITEMS.c.id,
    ITEMS.c.key,
    ITEMS.c.size,
    ITEMS.c.etag,
    ITEMS.c.last_modified,
    ITEMS.c.state,
    ITEMS.c.folder_id,
)
_ID_BATCH = 500
#: New files of a local first sync written in one transaction: up to this many chunks
#: (pages), and no more files than this (bounding memory and the write lock's hold).
_FRESH_CHUNKS = 16
_FRESH_ROWS = 20_000


class _ItemRow(NamedTuple):
    """An item row as the merge reads it on SQLite (same fields as ``_ITEM_ROW``)."""

    id: int
    key: str
    size: int
    etag: str
    last_modified: datetime | None
    state: str
    folder_id: int


_SQLITE_RANGE = (
    "SELECT id, key, size, etag, last_modified, state, folder_id FROM items"
    " WHERE source_id = ? AND key <= ?"
)
_SQLITE_RANGE_AFTER = _SQLITE_RANGE + " AND key > ?"
#: A chunk's rows in the form :meth:`SyncEngine._unchanged` compares (``last_modified``
#: as ``datetime.isoformat(" ", "microseconds")`` writes a UTC time).
_SQLITE_SAME_ROWS = (
    "SELECT key, etag, size, last_modified || '+00:00', state FROM items"
    " WHERE source_id = ? AND key <= ?"
)
_SQLITE_SAME = _SQLITE_SAME_ROWS + " ORDER BY key"
_SQLITE_SAME_AFTER = _SQLITE_SAME_ROWS + " AND key > ? ORDER BY key"
#: A chunk's present rows as :func:`mediamirror.stores.local.catalog_rows` writes them,
#: with ``last_modified`` as stored (text: see :func:`sqlite_ns_times`).
_SQLITE_STAT_ROWS = (
    "SELECT key, etag, size, last_modified FROM items"
    " WHERE source_id = ? AND key <= ? AND state = 'present'"
)
_SQLITE_STAT = _SQLITE_STAT_ROWS + " ORDER BY key"
_SQLITE_STAT_AFTER = _SQLITE_STAT_ROWS + " AND key > ? ORDER BY key"
#: Any row at all (deleted ones too) in a key range.
_SQLITE_ANY = "SELECT 1 FROM items WHERE source_id = ? AND key <= ? LIMIT 1"
_SQLITE_ANY_AFTER = "SELECT 1 FROM items WHERE source_id = ? AND key <= ? AND key > ? LIMIT 1"


def _sqlite_stamp(text: str | datetime | None) -> datetime | None:
    """A stored SQLite timestamp (SQLAlchemy's ``YYYY-MM-DD HH:MM:SS.ffffff``, naive UTC)
    as the aware UTC datetime :class:`~mediamirror.catalog.models.UTCDateTime` gives."""
    if text is None:
        return None
    if isinstance(text, datetime):
        return text.replace(tzinfo=UTC)
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass
class SyncSummary:
    """The figures of one sync run."""

    source: str
    listed: int = 0
    added: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0
    #: Unchanged keys moved to another folder because the source's images mode changed
    #: (counted in ``unchanged`` too: the objects did not change).
    relaid: int = 0
    seconds: float = 0.0
    run_id: int | None = None

    @property
    def writes(self) -> int:
        return self.added + self.changed + self.deleted

    def line(self) -> str:
        rate = self.listed / self.seconds if self.seconds > 0 else 0.0
        relaid = f" ({self.relaid} re-laid)" if self.relaid else ""
        return (
            f"{self.source}: {self.added} added, {self.changed} changed, "
            f"{self.deleted} deleted, {self.unchanged} unchanged{relaid} "
            f"in {self.seconds:.2f} s ({rate:,.0f} keys/s)"
        )


def prefetch(pages: Iterable[list[ObjectInfo]], depth: int = 2) -> Iterator[list[ObjectInfo]]:
    """Fetch the next listing pages in a thread while the current one is written."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for page in pages:
                while not stop.is_set() and not interrupt.STOP.is_set():
                    try:
                        q.put(page, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set() or interrupt.STOP.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    # In the sync's context: the store's lines from this thread name the source too.
    run = contextvars.copy_context().run
    thread = threading.Thread(target=run, args=(produce,), name="mediamirror-list", daemon=True)
    thread.start()
    try:
        while True:
            try:
                # Polled, so a stop request is seen even while the store is slow to answer.
                item = q.get(timeout=0.2)
            except queue.Empty:
                interrupt.check()
                continue
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


_T = TypeVar("_T")


def rechunk(
    pages: Iterable[list[_T]], key: Callable[[_T], str] = operator.attrgetter("key")
) -> Iterator[list[_T]]:
    """Re-cut pages so that keys of one sidecar group (``dir/clip.*``) share a chunk
    (``key``: an entry's key; by default its ``key`` attribute, as of an ObjectInfo)."""
    carry: list[_T] = []
    for page in pages:
        buf = carry + page if carry else page
        if not buf:
            continue
        prefix = group_prefix(key(buf[-1]))
        cut = len(buf)
        if prefix is not None:
            while cut > 0 and key(buf[cut - 1]).startswith(prefix):
                cut -= 1
        if cut == 0 and len(buf) < _HOLDBACK_LIMIT:
            carry = buf
            continue
        if cut == 0:
            cut = len(buf)
        carry = buf[cut:]
        yield buf[:cut]
    if carry:
        yield carry


class SyncEngine:
    """Syncs one source into the catalog."""

    def __init__(
        self,
        catalog: Catalog,
        source: Source,
        store: Store,
        *,
        large_image_bytes: int,
        images: str | None = None,
        lease_seconds: float = 60.0,
        progress: Callable[[int], None] | None = None,
        listing: Callable[[str | None], Iterable[list[ObjectInfo]]] | None = None,
        list_width: int = 1,
    ) -> None:
        """``images``: the source's images mode (default: from its profile).

        ``listing``: lists the store instead of ``store.list_pages`` (an inventory report,
        say), given the key to start after (None: from the first key). It must yield keys
        in UTF-8 byte order, page by page, like ``list_pages``; its pages are fetched ahead
        in a thread.

        ``list_width``: concurrent listing requests where the store lists by key range
        (S3 stores; see :mod:`mediamirror.sync.parallel`); 1 lists sequentially."""
        self.catalog = catalog
        self.source = source
        self.store = store
        self.listing = listing
        self.list_width = list_width
        self.images = images or profile_of(source).images
        self.layout = Layout(store.prefix, store.object_url, large_image_bytes, self.images)
        #: Place unchanged raster images again: the catalog was laid out with another
        #: images mode (decided by :meth:`run`; events never re-lay).
        self.relay = False
        self.lease_seconds = lease_seconds
        self.progress = progress
        self.include = re.compile(source.include) if source.include else None
        self.exclude = re.compile(source.exclude) if source.exclude else None
        from mediamirror.sync.folders import FolderIndex

        self.folders = FolderIndex(source.id, source.mount)
        self.summary = SyncSummary(source=source.name)
        self._owner = leases.new_owner()
        self._lease = f"sync:{source.id}"
        self._renewed = 0.0

    # -- running -------------------------------------------------------------------------

    def run(self) -> SyncSummary:
        started = time.monotonic()
        log.info("sync %s: %s -> %s", self.source.name, self.source.url, self.source.mount)
        taken_over = leases.acquire(self.catalog, self._lease, self._owner, self.lease_seconds)
        self._renewed = time.monotonic()
        try:
            self._begin_run(interrupted=taken_over is not None)
            try:
                # Checked inside the run so that a store gone missing is recorded as a
                # failed run, visible in `source show`.
                self.store.check()
                self.relay = laid_out_images(self.source) != self.images
                if not feed_meta.merge_feed(self):  # a feed: its pages as they come
                    self._delete_tail(self._merge_listing())
            except BaseException as exc:
                self.summary.seconds = time.monotonic() - started
                self._end_run("error", _one_line(exc))
                raise
            self.summary.seconds = time.monotonic() - started
            # A feed's one line about records it skipped (no id or url), else None.
            self._end_run("success", getattr(self.store, "warning", None))
            log.info("%s", self.summary.line())
        finally:
            leases.release(self.catalog, self._lease, self._owner)
        return self.summary

    def _begin_run(self, interrupted: bool) -> None:
        with self.catalog.write() as conn:
            # A run left "running" by a crashed sync is closed now that we hold the lease.
            left = conn.execute(
                select(RUNS.c.id).where(
                    RUNS.c.source_id == self.source.id, RUNS.c.state == "running"
                )
            ).scalars()
            for run_id in list(left):
                conn.execute(
                    update(RUNS)
                    .where(RUNS.c.id == run_id)
                    .values(state="error", error="interrupted", finished_at=utcnow())
                )
                outbox.sync_ended(
                    conn, run_id, self.source.id, state="error", error="interrupted", counts={}
                )
            self.summary.run_id = conn.execute(
                insert(RUNS).values(source_id=self.source.id, state="running")
            ).inserted_primary_key[0]  # type: ignore[index]

    def _end_run(self, state: str, error: str | None) -> None:
        s = self.summary
        with self.catalog.write() as conn:
            conn.execute(
                update(RUNS)
                .where(RUNS.c.id == s.run_id)
                .values(
                    state=state,
                    error=error,
                    finished_at=utcnow(),
                    seconds=s.seconds,
                    listed=s.listed,
                    added=s.added,
                    changed=s.changed,
                    deleted=s.deleted,
                    unchanged=s.unchanged,
                )
            )
            counts: dict[str, Any] = {
                "listed": s.listed,
                "added": s.added,
                "changed": s.changed,
                "deleted": s.deleted,
                "unchanged": s.unchanged,
                "seconds": s.seconds,
            }
            if s.relaid:
                counts["relaid"] = s.relaid
            if state == "success" and self.relay:
                # Every key was placed under this mode: the next sync has nothing to re-lay.
                _record_laid_out(conn, self.source.id, self.images)
            if s.run_id is not None:
                outbox.sync_ended(
                    conn, s.run_id, self.source.id, state=state, error=error, counts=counts
                )

    def _renew(self) -> None:
        if time.monotonic() - self._renewed > self.lease_seconds / 3:
            leases.renew(self.catalog, self._lease, self._owner, self.lease_seconds)
            self._renewed = time.monotonic()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A write transaction whose figures count only if it commits, so that the run
        record of an interrupted sync says what the catalog really holds."""
        before = dataclasses.replace(self.summary)
        try:
            with self.catalog.write() as conn:
                yield conn
        except BaseException:
            self.summary = before
            raise

    def _pages(self) -> Iterable[list[ObjectInfo]]:
        """The listing, fetched ahead in a thread when the store waits on the network.

        A local walk is CPU work: in a second thread it would only fight the writer for
        the GIL (each SQLite step releases it), so it runs inline.
        """
        if self.listing is not None:
            return prefetch(self.listing(None))
        ranged = range_store(self.store) if self.list_width > 1 else None
        if ranged is not None:  # same pages in the same order, fetched by several requests
            return prefetch(parallel_pages(ranged, self.list_width))
        pages = self.store.list_pages()
        return prefetch(pages) if getattr(self.store, "network", True) else pages

    def _merge_listing(self) -> str | None:
        stats = self._stat_pages()
        if stats is not None:
            return self._merge_stats(stats)
        last: str | None = None
        for chunk in rechunk(self._pages()):
            interrupt.check()  # a safe point: the previous chunk is committed
            for a, b in itertools.pairwise(chunk):
                if a.key >= b.key:
                    raise SyncError(f"the store listed {b.key!r} after {a.key!r}: not sorted")
            if last is not None and chunk[0].key <= last:
                raise SyncError(f"the store listed {chunk[0].key!r} again: not sorted")
            self._write_page(chunk, last)
            last = chunk[-1].key
            self.summary.listed += len(chunk)
            log.debug("%s: %d keys written up to %r", self.source.name, len(chunk), last)
            if self.progress is not None:
                self.progress(self.summary.listed)
            self._renew()
        return last

    def _stat_pages(self) -> Iterator[list[tuple[str, int, int]]] | None:
        """The listing as raw ``(key, mtime_ns, size)`` pages where the store offers them
        (a local directory) and the fast comparison applies: SQLite, no include/exclude
        filter, no prefix, no re-lay. None: the general path."""
        unwrap = getattr(self.store, "stat_lister", None)  # a ReadOnlyStore's inner store
        stat_pages = getattr(unwrap() if unwrap is not None else self.store, "stat_pages", None)
        if (
            stat_pages is None
            or self.listing is not None
            or self.include is not None
            or self.exclude is not None
            or self.relay
            or self.layout.prefix
            or self.catalog.engine.dialect.name != "sqlite"
        ):
            return None
        pages: Iterator[list[tuple[str, int, int]]] = stat_pages()
        return pages

    def _merge_stats(self, pages: Iterable[list[tuple[str, int, int]]]) -> str | None:
        """:meth:`_merge_listing` for raw pages of a local directory: a chunk whose files
        the catalog holds unchanged (compared as plain tuples, before any ObjectInfo or
        datetime is built) costs one read; any other goes through the full merge."""
        from mediamirror.stores.local import catalog_rows, infos

        last: str | None = None
        lt = operator.lt
        # New files of consecutive chunks wait for one transaction (up to _FRESH_CHUNKS
        # chunks): a kill loses at most those, which the next run writes, and they are
        # counted as listed only once committed.
        fresh: list[tuple[str, int, int]] = []
        fresh_low: str | None = None
        fresh_chunks: list[tuple[int, str]] = []  # (files, last key) of each waiting chunk

        def write_fresh() -> None:
            nonlocal fresh, fresh_chunks
            if fresh:
                self._write_fresh(fresh, fresh_low, infos)
                for count, high in fresh_chunks:  # one line per chunk, as for the others
                    self._listed(count, high)
                fresh, fresh_chunks = [], []

        # One connection for every comparison, in the driver's autocommit mode: each read
        # is its own implicit transaction (a fresh snapshot), with no BEGIN and COMMIT
        # through SQLAlchemy per chunk.
        with self.catalog.engine.connect() as reader:
            cursor = reader.connection.cursor()
            try:
                for chunk in rechunk(pages, operator.itemgetter(0)):
                    interrupt.check()  # a safe point: what went before is committed or waits
                    keys = [s[0] for s in chunk]
                    if not all(map(lt, keys, keys[1:])):
                        for a, b in itertools.pairwise(keys):
                            if a >= b:
                                raise SyncError(f"the store listed {b!r} after {a!r}: not sorted")
                    if last is not None and keys[0] <= last:
                        raise SyncError(f"the store listed {keys[0]!r} again: not sorted")
                    high = keys[-1]
                    found = self._same_stats(cursor, keys, catalog_rows, chunk, last, high)
                    if found is None:
                        if not fresh:
                            fresh_low = last
                        fresh += chunk
                        fresh_chunks.append((len(chunk), high))
                        if len(fresh_chunks) >= _FRESH_CHUNKS or len(fresh) >= _FRESH_ROWS:
                            write_fresh()
                    else:
                        write_fresh()
                        if found is True:
                            self.summary.unchanged += len(chunk)
                        else:
                            self._write_page(infos(chunk), last, checked=True)
                        self._listed(len(chunk), high)
                    last = high
                    self._renew()
                write_fresh()
            finally:
                cursor.close()
        return last

    def _listed(self, count: int, last: str) -> None:
        self.summary.listed += count
        log.debug("%s: %d keys written up to %r", self.source.name, count, last)
        if self.progress is not None:
            self.progress(self.summary.listed)

    def _same_stats(
        self,
        cursor: Any,
        keys: list[str],
        catalog_rows: Callable[..., list[tuple[str, str, int, Any]]],
        chunk: list[tuple[str, int, int]],
        low: str | None,
        high: str,
    ) -> bool | None:
        """:meth:`_unchanged` for raw pages: True when the catalog's present rows of
        ``(low, high]`` are exactly the listed files, with the etag, size and time (the
        stored text against the text a sync stores for the listed time) the listing gives; None
        when it has no present row there (a first sync: :meth:`_write_fresh`); False
        otherwise. A deleted row of a listed key, or a time stored in another form, fails
        the check, and the full merge decides. Read outside any write transaction: when
        nothing differs nothing is written, and a writer that comes after the read is as
        if it came after the chunk."""
        joined = "\n".join(keys).lower() + "\n"
        if any(f".{ext}\n" in joined for ext in SIDECAR_EXTENSIONS):
            return False  # a sidecar's video may have come since: the full merge decides
        sql = _SQLITE_STAT if low is None else _SQLITE_STAT_AFTER
        params: tuple[Any, ...] = (
            (self.source.id, high) if low is None else (self.source.id, high, low)
        )
        rows = cursor.execute(sql, params).fetchall()
        if not rows:
            return None
        if len(rows) != len(chunk):
            return False
        return bool(rows == catalog_rows(chunk, sqlite_ns_times([ns for _, ns, _ in chunk])))

    def _write_fresh(
        self,
        chunk: list[tuple[str, int, int]],
        low: str | None,
        infos: Callable[[list[tuple[str, int, int]]], list[ObjectInfo]],
    ) -> None:
        """:meth:`_write_page` for raw files whose key range holds no catalog row (checked
        again in the write transaction; else the full merge runs): every file is new, and
        none is a sidecar (:meth:`_same_stats` sent those to the full merge), so the
        chunk needs only what :meth:`_write` does for new objects: place them, create or
        mark their folders, insert their rows, here straight from ``(key, mtime_ns,
        size)`` without an ObjectInfo or a datetime per file."""

        def write(conn: Connection) -> None:
            if not self._insert_fresh(conn, chunk, low):
                self._apply(conn, infos(chunk), low, checked=True)

        self._retrying(write, low)

    def _insert_fresh(
        self, conn: Connection, chunk: list[tuple[str, int, int]], low: str | None
    ) -> bool:
        """Insert ``chunk`` as :meth:`_write` inserts new objects (same folders, marks,
        rows and stored text); False, writing nothing, when its key range holds a row."""
        sql = _SQLITE_ANY if low is None else _SQLITE_ANY_AFTER
        high = chunk[-1][0]
        params: tuple[Any, ...] = (
            (self.source.id, high) if low is None else (self.source.id, high, low)
        )
        cursor = conn.connection.cursor()
        try:
            if cursor.execute(sql, params).fetchone() is not None:
                return False
        finally:
            cursor.close()
        full = self.folders.full
        # No sidecar in the chunk (see _same_stats): no video to look up.
        placed = self.layout.place_listed([(key, size) for key, _, size in chunk], {})
        placements: dict[str, Placement] = {}
        paths: list[str] = []
        last: Placement | None = None
        path = ""
        for p in placed:
            if p is not last:  # files of one folder share their placement object
                last, path = p, full(p.folder)
                if p.dataset is not None and path not in placements:
                    placements[path] = p
            paths.append(path)
        new_meta = {path: dataset_metadata(p) for path, p in placements.items()}
        ids, created = self.folders.resolve(conn, set(paths) | set(placements), new_meta)
        self._mark_datasets(conn, {ids[p]: placements[p] for p in placements if p not in created})
        sid = self.source.id
        now = sqlite_datetime(utcnow())
        times = sqlite_ns_times([ns for _, ns, _ in chunk])
        insert_sqlite_items(
            conn,
            [
                (
                    sid,
                    ids[path],
                    key,
                    key[key.rfind("/") + 1 :],
                    size,
                    f"{ns:x}-{size:x}",
                    text,
                    "present",
                    1,
                    now,
                )
                for (key, ns, size), path, text in zip(chunk, paths, times, strict=True)
            ],
        )
        self.summary.added += len(chunk)
        return True

    def _write_page(self, chunk: list[ObjectInfo], last: str | None, checked: bool = False) -> None:
        """One page in one transaction, written again (read afresh) when it failed only
        because another writer ran at the same moment: a sync of another source creating
        the same ancestor folder of its mount, or a lock cycle PostgreSQL broke
        (:mod:`mediamirror.catalog.retry`)."""
        self._retrying(lambda conn: self._apply(conn, chunk, last, checked), last)

    def _retrying(self, write: Callable[[Connection], None], low: str | None) -> None:
        """``write`` in one transaction, run again (reading afresh) while it fails only
        because of a concurrent writer."""
        for attempt in range(1, retry.ATTEMPTS + 1):
            try:
                with self._transaction() as conn:
                    write(conn)
                return
            except Exception as exc:
                self.folders.ids.clear()  # ids cached in the rolled-back transaction
                if attempt == retry.ATTEMPTS or not retry.transient(exc):
                    raise
                name = type(exc).__name__
                log.info("%s: page after %r written again (%s)", self.source.name, low, name)

    # -- one chunk -----------------------------------------------------------------------

    def _wanted(self, obj: ObjectInfo) -> bool:
        rel = obj.key[len(self.layout.prefix) :]
        if not rel or rel.endswith("/"):
            return False
        return self._filtered_in(rel)

    def _filtered_in(self, rel: str) -> bool:
        if self.include is not None and not self.include.search(rel):
            return False
        return not (self.exclude is not None and self.exclude.search(rel))

    def _wanted_marker(self, obj: ObjectInfo) -> bool:
        """A folder marker (``dir/``) below the prefix that include/exclude let through."""
        rel = obj.key[len(self.layout.prefix) :]
        return bool(rel) and rel.endswith("/") and self._filtered_in(rel)

    def _diff(
        self, objs: list[ObjectInfo], existing: dict[str, Any]
    ) -> tuple[list[ObjectInfo], list[tuple[ObjectInfo, Any]], list[tuple[ObjectInfo, Any]]]:
        """Listed objects against catalog rows: new ones, changed ones (or back after
        deletion), and unchanged sidecars (whose video may have appeared since)."""
        fresh: list[ObjectInfo] = []
        changed: list[tuple[ObjectInfo, Any]] = []
        sidecars: list[tuple[ObjectInfo, Any]] = []
        for obj in objs:
            row = existing.get(obj.key)
            if row is None:
                fresh.append(obj)
            elif row.state != "present" or (
                row.etag != obj.etag
                or row.size != obj.size
                or row.last_modified != obj.last_modified
            ):
                changed.append((obj, row))
            else:
                self.summary.unchanged += 1
                if extension(obj.key) in SIDECAR_EXTENSIONS:
                    sidecars.append((obj, row))
        return fresh, changed, sidecars

    def _keep_event_times(
        self,
        conn: Connection,
        changed: list[tuple[ObjectInfo, Any]],
        sidecars: list[tuple[ObjectInfo, Any]],
    ) -> list[tuple[ObjectInfo, Any]]:
        """Rows that differ from the listing only by ``last_modified`` and whose last write
        came from a bucket event (``sequencer`` set; every write of the sync clears it) are
        unchanged: the event gave the time it was sent, which is not the listing's, while
        etag and size say the content is the same. Looked up only for such rows (rare)."""
        touched = [
            row.id
            for o, row in changed
            if row.state == "present" and row.etag == o.etag and row.size == o.size
        ]
        if not touched:
            return changed
        timed: set[int] = set()
        for i in range(0, len(touched), _ID_BATCH):
            query = select(ITEMS.c.id).where(
                ITEMS.c.id.in_(touched[i : i + _ID_BATCH]), ITEMS.c.sequencer.is_not(None)
            )
            timed.update(conn.execute(query).scalars())
        if not timed:
            return changed
        kept = []
        for o, row in changed:
            if row.id not in timed:
                kept.append((o, row))
                continue
            self.summary.unchanged += 1
            if extension(o.key) in SIDECAR_EXTENSIONS:
                sidecars.append((o, row))
        return kept

    def _apply(
        self, conn: Connection, chunk: list[ObjectInfo], low: str | None, checked: bool = False
    ) -> None:
        """``checked``: the caller found the chunk changed already (:meth:`_same_stats`)."""
        if self.include is None and self.exclude is None:
            # No filters: what _wanted and _wanted_marker decide, by key shape alone.
            start = len(self.layout.prefix)
            objs = [o for o in chunk if o.key[-1:] != "/" and len(o.key) > start]
            markers = [o for o in chunk if o.key[-1:] == "/" and len(o.key) > start]
        else:
            markers = [o for o in chunk if o.key.endswith("/") and self._wanted_marker(o)]
            objs = [o for o in chunk if self._wanted(o)]
        self.summary.skipped += len(chunk) - len(objs) - len(markers)
        if (
            not checked
            and not markers
            and not self.relay
            and self._unchanged(conn, objs, low, chunk[-1].key)
        ):
            self.summary.unchanged += len(objs)
            return
        existing = self._existing(conn, low, chunk[-1].key)
        fresh, changed, sidecars = self._diff(objs, existing)
        changed = self._keep_event_times(conn, changed, sidecars)
        listed = {o.key for o in objs}
        gone = [r for k, r in existing.items() if k not in listed and r.state == "present"]
        relay = self._relay_candidates(objs, existing, changed) if self.relay else []
        if conn.dialect.name == "postgresql" and (changed or gone):
            # Items before folders, as an event's transaction takes them (its item first):
            # two writers on one dataset then wait for each other instead of deadlocking.
            ids = sorted([row.id for _, row in changed] + [row.id for row in gone])
            locked = select(ITEMS.c.id).where(ITEMS.c.id.in_(ids)).order_by(ITEMS.c.id)
            conn.execute(locked.with_for_update())

        if fresh or changed or sidecars or markers or relay:
            self._write(conn, objs, fresh, changed, sidecars, markers, relay)
        if gone:
            self._mark_deleted(conn, gone)

    def _unchanged(
        self, conn: Connection, objs: list[ObjectInfo], low: str | None, high: str
    ) -> bool:
        """True when the catalog holds exactly ``objs`` in the key range ``(low, high]``,
        all present and unchanged, and none of them a sidecar (whose video may have come
        since): then the chunk needs nothing at all.

        The common case of every re-sync, checked on SQLite by one comparison of two lists
        of tuples (the stored text of ``last_modified`` against the listed time written
        the same way, with its zone: any other zone or form only fails the check). False
        sends the chunk through the full merge, which decides everything itself."""
        if conn.dialect.name != "sqlite" or not objs:
            return False
        rows = self._sqlite_range(conn, _SQLITE_SAME, _SQLITE_SAME_AFTER, low, high)
        if len(rows) != len(objs):
            return False
        keys = "\n".join([o.key for o in objs]).lower() + "\n"
        if any(f".{ext}\n" in keys for ext in SIDECAR_EXTENSIONS):
            return False
        listed = [
            (o.key, o.etag, o.size, o.last_modified.isoformat(" ", "microseconds"), "present")
            for o in objs
        ]
        return bool(rows == listed)

    def _sqlite_range(
        self, conn: Connection, first: str, after: str, low: str | None, high: str
    ) -> list[Any]:
        """Rows of a prebuilt SQLite statement over this source's key range ``(low, high]``
        (``first`` when the range is open below), straight through the driver."""
        params: tuple[Any, ...] = (
            (self.source.id, high) if low is None else (self.source.id, high, low)
        )
        cursor = conn.connection.cursor()
        try:
            return list(cursor.execute(first if low is None else after, params).fetchall())
        finally:
            cursor.close()

    def _existing(self, conn: Connection, low: str | None, high: str) -> dict[str, Any]:
        """The catalog's items of the key range ``(low, high]``, by key.

        On SQLite straight through the driver, a prebuilt statement and plain rows: for
        an unchanged re-sync this read is most of the catalog's work, and SQLAlchemy's
        per-value result processing cost more than the query itself."""
        if conn.dialect.name != "sqlite":
            query = select(*_ITEM_ROW).where(
                ITEMS.c.source_id == self.source.id, ITEMS.c.key <= high
            )
            if low is not None:
                query = query.where(ITEMS.c.key > low)
            return {row.key: row for row in conn.execute(query)}
        rows = self._sqlite_range(conn, _SQLITE_RANGE, _SQLITE_RANGE_AFTER, low, high)
        make, stamp = _ItemRow, _sqlite_stamp
        return {r[1]: make(r[0], r[1], r[2], r[3], stamp(r[4]), r[5], r[6]) for r in rows}

    @staticmethod
    def _relay_candidates(
        objs: list[ObjectInfo], existing: dict[str, Any], changed: list[tuple[ObjectInfo, Any]]
    ) -> list[tuple[ObjectInfo, Any]]:
        """Unchanged raster images, to be placed again under the source's images mode."""
        placed = {o.key for o, _ in changed}
        return [
            (o, row)
            for o in objs
            if (row := existing.get(o.key)) is not None
            and o.key not in placed
            and row.state == "present"
            and is_raster(o.key)
        ]

    def _pinned(self, conn: Connection, keys: Iterable[str]) -> set[str]:
        """Keys post-processing found to have too many pixels for a frame: their large-image
        folder carries :data:`BY_PIXELS` (even while empty, after a spell in another mode).
        An ``auto`` source keeps them large images."""
        if self.images != AUTO:
            return set()
        by_path: dict[str, set[str]] = {}
        for key in keys:
            if is_raster(key):
                path = self.folders.full(self.layout.place(key, 0, {}, large=True).folder)
                by_path.setdefault(path, set()).add(key)
        paths = sorted(by_path)
        found: set[str] = set()
        for i in range(0, len(paths), _ID_BATCH):
            batch = paths[i : i + _ID_BATCH]
            query = select(FOLDERS.c.path, FOLDERS.c.meta).where(FOLDERS.c.path.in_(batch))
            for path, meta in conn.execute(query):
                meta = meta or {}
                if meta.get(BY_PIXELS) and meta.get("type") == DatasetType.LARGE_IMAGE.value:
                    found |= by_path[path]
        return found

    def _write(
        self,
        conn: Connection,
        objs: list[ObjectInfo],
        fresh: list[ObjectInfo],
        changed: list[tuple[ObjectInfo, Any]],
        sidecars: list[tuple[ObjectInfo, Any]],
        markers: list[ObjectInfo],
        relay: Sequence[tuple[ObjectInfo, Any]] = (),
    ) -> None:
        pinned = self._pinned(conn, [o.key for o, _ in changed] + [o.key for o, _ in relay])
        needs_videos = (
            any(extension(o.key) in SIDECAR_EXTENSIONS for o in fresh)
            or sidecars
            or any(extension(o.key) in SIDECAR_EXTENSIONS for o, _ in changed)
        )
        videos = self.layout.videos_by_stem((o.key, o.size) for o in objs) if needs_videos else {}
        place = self.layout.place
        full = self.folders.full
        placements: dict[str, Placement] = {}
        placed_fresh: list[tuple[ObjectInfo, str]] = []
        last: Placement | None = None
        path = ""
        fresh_placed = self.layout.place_listed([(o.key, o.size) for o in fresh], videos)
        for o, p in zip(fresh, fresh_placed, strict=True):
            if p is not last:  # files of one folder share their placement object
                last, path = p, full(p.folder)
                if p.dataset is not None and path not in placements:
                    placements[path] = p
            placed_fresh.append((o, path))
        placed_changed: list[tuple[ObjectInfo, Any, str]] = []
        for o, row in changed:
            p = place(o.key, o.size, videos, large=o.key in pinned)
            path = full(p.folder)
            placed_changed.append((o, row, path))
            if p.dataset is not None and path not in placements:
                placements[path] = p
        placed_sidecars = [
            (o, row, full(place(o.key, o.size, videos).folder)) for o, row in sidecars
        ]
        marker_paths = {full(self.layout.marker_folder(m.key)) for m in markers}
        placed_relay = [
            (row, full(p.folder), p)
            for o, row in relay
            for p in (place(o.key, o.size, videos, large=o.key in pinned),)
        ]

        paths = {p for _, p in placed_fresh} | {p for _, _, p in placed_changed}
        paths |= {p for _, _, p in placed_sidecars} | marker_paths | set(placements)
        paths |= {path for _, path, _ in placed_relay}
        new_meta = {path: dataset_metadata(p) for path, p in placements.items()}
        for _, path, p in placed_relay:
            if p.dataset is not None and path not in new_meta:
                new_meta[path] = dataset_metadata(p)
        # Feed records: their metadata joins their dataset's (sync/feed_meta.py).
        records = feed_meta.record_meta(placed_fresh, placed_changed, placements)
        for path, meta in records.items():
            new_meta[path] = {**new_meta[path], **meta}
        ids, created = self.folders.resolve(conn, paths, new_meta)
        moved = [(row, path, p) for row, path, p in placed_relay if ids[path] != row.folder_id]
        marks = {ids[p]: placements[p] for p in placements if p not in created}
        for _, path, p in moved:
            # A folder the re-lay moves images into changed like one that got new media.
            if p.dataset is not None and path not in created:
                marks.setdefault(ids[path], p)
        self._mark_datasets(conn, marks)
        record_folders = {ids[p]: r for p, r in records.items() if p not in created}
        feed_meta.copy_record_meta(conn, record_folders)  # feed records of existing datasets

        now = utcnow()
        sid = self.source.id
        if placed_fresh:
            insert_items(
                conn,
                [
                    (
                        sid,
                        ids[path],
                        o.key,
                        o.key[o.key.rfind("/") + 1 :],
                        o.size,
                        o.etag,
                        o.last_modified,
                        "present",
                        True,
                        now,
                    )
                    for o, path in placed_fresh
                ],
            )
            self.summary.added += len(placed_fresh)
        if placed_changed:
            conn.execute(
                update(ITEMS)
                .where(ITEMS.c.id == bindparam("b_id"))
                .values(
                    folder_id=bindparam("b_folder"),
                    size=bindparam("b_size"),
                    etag=bindparam("b_etag"),
                    last_modified=bindparam("b_lm"),
                    state="present",
                    needs_processing=True,
                    # The listing is the truth again: what events recorded is reset.
                    sequencer=None,
                    sequencer_lifetime=None,
                    updated_at=now,
                ),
                [
                    {
                        "b_id": row.id,
                        "b_folder": ids[path],
                        "b_size": o.size,
                        "b_etag": o.etag,
                        "b_lm": o.last_modified,
                    }
                    for o, row, path in placed_changed
                ],
            )
            readded = sum(1 for _, row, _ in placed_changed if row.state != "present")
            self.summary.added += readded
            self.summary.changed += len(placed_changed) - readded
        moves = [
            {"b_id": row.id, "b_folder": ids[path]}
            for _, row, path in placed_sidecars
            if ids[path] != row.folder_id
        ]
        # Re-laid items keep their rows (id, history, etag): only their folder changes.
        moves += [{"b_id": row.id, "b_folder": ids[path]} for row, path, _ in moved]
        if moves:
            conn.execute(
                update(ITEMS)
                .where(ITEMS.c.id == bindparam("b_id"))
                .values(folder_id=bindparam("b_folder"), updated_at=now),
                moves,
            )
        if moved:
            self.summary.relaid += len(moved)
            self._mark_empty(conn, {row.folder_id for row, _, _ in moved})

    def _mark_datasets(self, conn: Connection, existing: dict[int, Placement]) -> None:
        """Existing folders that got new or changed media: make them datasets, or mark
        them for post-processing again, and bring empty ones back."""
        if not existing:
            return
        rows = conn.execute(
            select(FOLDERS.c.id, FOLDERS.c.meta, FOLDERS.c.state)
            .where(FOLDERS.c.id.in_(list(existing)))
            .order_by(FOLDERS.c.id)  # updated (locked) in id order by every writer
        ).all()
        changes = []
        for fid, meta, state in rows:
            meta = dict(meta or {})
            if "type" not in meta:
                meta.update(dataset_metadata(existing[fid]))
            elif meta.get("MarkForPostProcess") is True and state == "present":
                continue
            else:
                meta["MarkForPostProcess"] = True
            changes.append({"b_id": fid, "b_meta": meta})
        if changes:
            conn.execute(
                update(FOLDERS)
                .where(FOLDERS.c.id == bindparam("b_id"))
                .values(meta=bindparam("b_meta"), state="present", updated_at=utcnow()),
                changes,
            )

    def _mark_deleted(self, conn: Connection, rows: Sequence[Any]) -> None:
        now = utcnow()
        ids = [row.id for row in rows]
        for i in range(0, len(ids), _ID_BATCH):
            conn.execute(
                update(ITEMS)
                .where(ITEMS.c.id.in_(ids[i : i + _ID_BATCH]))
                .values(state="deleted", sequencer=None, sequencer_lifetime=None, updated_at=now)
            )
        self.summary.deleted += len(ids)
        self._mark_empty(conn, {row.folder_id for row in rows})

    def _mark_empty(self, conn: Connection, folder_ids: set[int]) -> None:
        """Datasets left without any present item are marked ``empty``, never dropped."""
        fids = list(folder_ids)
        for i in range(0, len(fids), _ID_BATCH):
            batch = fids[i : i + _ID_BATCH]
            alive = {
                fid
                for (fid,) in conn.execute(
                    select(ITEMS.c.folder_id)
                    .where(ITEMS.c.folder_id.in_(batch), ITEMS.c.state == "present")
                    .group_by(ITEMS.c.folder_id)
                )
            }
            dead = [fid for fid in batch if fid not in alive]
            if not dead:
                continue
            datasets = [
                fid
                for fid, meta in conn.execute(
                    select(FOLDERS.c.id, FOLDERS.c.meta).where(
                        FOLDERS.c.id.in_(dead), FOLDERS.c.state == "present"
                    )
                )
                if meta and "type" in meta
            ]
            if datasets:
                conn.execute(
                    update(FOLDERS)
                    .where(FOLDERS.c.id.in_(datasets))
                    .values(state="empty", updated_at=utcnow())
                )

    def _delete_tail(self, last: str | None) -> None:
        """Keys after the last listed one are gone from the store."""
        while True:
            interrupt.check()
            with self._transaction() as conn:
                query = (
                    select(ITEMS.c.id, ITEMS.c.key, ITEMS.c.folder_id)
                    .where(ITEMS.c.source_id == self.source.id, ITEMS.c.state == "present")
                    .order_by(ITEMS.c.key)
                    .limit(1000)
                )
                if last is not None:
                    query = query.where(ITEMS.c.key > last)
                rows = conn.execute(query).all()
                if not rows:
                    return
                self._mark_deleted(conn, rows)
            last = rows[-1].key
            self._renew()

    # -- a few keys at once (bucket events) ----------------------------------------------
    # Used by mediamirror.events: the rules of a sync chunk for a handful of keys whose
    # current state the caller read from the store, without the key-range deletion.

    def apply_objects(
        self, conn: Connection, present: Sequence[ObjectInfo], gone: Sequence[str]
    ) -> None:
        """Make the catalog agree with the store for a few keys, in the caller's
        transaction: ``present`` objects (as the store lists them) are added or updated,
        ``gone`` keys are marked deleted. Other keys of their sidecar groups
        (``dir/clip.*``) are placed again exactly as the next sync would place them;
        nothing else is touched."""
        keys = {o.key for o in present} | set(gone)
        if not keys:
            return
        prefixes = sorted({g for k in keys if (g := group_prefix(k)) is not None})
        params: dict[str, Any] = {"source": self.source.id, "keys": sorted(keys)}
        # Every key starting with "dir/clip." sorts before "dir/clip/" ('/' follows '.').
        # The count of ranges is rounded up to a power of two (the last one repeated), so
        # a few prebuilt statements serve every batch.
        width = 1 << (len(prefixes) - 1).bit_length() if prefixes else 0
        for i in range(width):
            prefix = prefixes[min(i, len(prefixes) - 1)]
            params[f"lo{i}"], params[f"hi{i}"] = prefix, prefix[:-1] + "/"
        rows = conn.execute(_group_rows(width), params).all()
        existing = {row.key: row for row in rows}
        markers = [o for o in present if o.key.endswith("/") and self._wanted_marker(o)]
        objs = [o for o in present if self._wanted(o)]
        # The rest of each sidecar group, unchanged: it decides where sidecars belong.
        context = [
            ObjectInfo(r.key, r.size, r.etag, r.last_modified)
            for r in rows
            if r.key not in keys and r.state == "present"
        ]
        context = [o for o in context if self._wanted(o)]
        fresh, changed, sidecars = self._diff(objs, existing)
        changed = self._keep_event_times(conn, changed, sidecars)
        sidecars += [
            (o, existing[o.key]) for o in context if extension(o.key) in SIDECAR_EXTENSIONS
        ]
        if fresh or changed or sidecars or markers:
            self._write(conn, objs + context, fresh, changed, sidecars, markers)
        kept = {o.key for o in objs}
        dead = [
            existing[k]
            for k in sorted(keys)
            if k in existing and k not in kept and existing[k].state == "present"
        ]
        if dead:
            self._mark_deleted(conn, dead)


#: ``Source.options`` key: the images mode the source's catalog was laid out with.
LAID_OUT_IMAGES = "laid_out_images"


@functools.cache
def _group_rows(ranges: int) -> Any:
    """Items of a source with one of the bound ``keys`` or in one of ``ranges`` key ranges
    (``lo{i} <= key < hi{i}``): :meth:`SyncEngine.apply_objects`' read, built once."""
    cond: Any = ITEMS.c.key.in_(bindparam("keys", expanding=True))
    for i in range(ranges):
        cond = cond | ((ITEMS.c.key >= bindparam(f"lo{i}")) & (ITEMS.c.key < bindparam(f"hi{i}")))
    return select(*_ITEM_ROW).where(ITEMS.c.source_id == bindparam("source"), cond)


def laid_out_images(source: Source) -> str:
    """The images mode a source's catalog was laid out with (``auto`` before modes)."""
    return str((source.options or {}).get(LAID_OUT_IMAGES) or AUTO)


def _record_laid_out(conn: Connection, source_id: int, images: str) -> None:
    """Remember ``images`` in the source's options, keeping what else they hold (read
    again in the write transaction: ``source set`` may have changed them meanwhile)."""
    query = select(SOURCES.c.options).where(SOURCES.c.id == source_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        return
    options = dict(row.options or {})
    if options.get(LAID_OUT_IMAGES, AUTO) == images:
        return
    options[LAID_OUT_IMAGES] = images
    conn.execute(update(SOURCES).where(SOURCES.c.id == source_id).values(options=options))


def _one_line(exc: BaseException) -> str:
    cause: BaseException | None = exc
    for _ in range(10):  # drivers may wrap a Ctrl-C in their own error
        if cause is None:
            break
        if isinstance(cause, KeyboardInterrupt):
            return "interrupted"
        cause = cause.__cause__ or cause.__context__
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
