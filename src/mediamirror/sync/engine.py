"""The sync engine: a streamed merge of a sorted listing against the catalog.

Each chunk of the listing covers the key range ``(previous chunk's last key, this chunk's
last key]``. In one transaction the engine reads the catalog's items in that range, adds
new keys, updates changed ones, marks missing ones deleted and fixes dataset metadata.
A sync killed at any moment leaves every committed chunk consistent, and the next run
simply merges again: nothing is lost or duplicated, and unchanged keys cost no writes.
"""

from __future__ import annotations

import contextvars
import dataclasses
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from mediamirror import interrupt
from mediamirror.catalog import leases, retry
from mediamirror.catalog.bulk import insert_items
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


def rechunk(pages: Iterable[list[ObjectInfo]]) -> Iterator[list[ObjectInfo]]:
    """Re-cut pages so that keys of one sidecar group (``dir/clip.*``) share a chunk."""
    carry: list[ObjectInfo] = []
    for page in pages:
        buf = carry + page if carry else page
        if not buf:
            continue
        prefix = group_prefix(buf[-1].key)
        cut = len(buf)
        if prefix is not None:
            while cut > 0 and buf[cut - 1].key.startswith(prefix):
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
                last = self._merge_listing()
                self._delete_tail(last)
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

    def _write_page(self, chunk: list[ObjectInfo], last: str | None) -> None:
        """One page in one transaction, written again (read afresh) when it failed only
        because another writer ran at the same moment: a sync of another source creating
        the same ancestor folder of its mount, or a lock cycle PostgreSQL broke
        (:mod:`mediamirror.catalog.retry`)."""
        for attempt in range(1, retry.ATTEMPTS + 1):
            try:
                with self._transaction() as conn:
                    self._apply(conn, chunk, last)
                return
            except Exception as exc:
                self.folders.ids.clear()  # ids cached in the rolled-back transaction
                if attempt == retry.ATTEMPTS or not retry.transient(exc):
                    raise
                name = type(exc).__name__
                log.info("%s: page after %r written again (%s)", self.source.name, last, name)

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

    def _apply(self, conn: Connection, chunk: list[ObjectInfo], low: str | None) -> None:
        markers = [o for o in chunk if o.key.endswith("/") and self._wanted_marker(o)]
        objs = [o for o in chunk if self._wanted(o)]
        self.summary.skipped += len(chunk) - len(objs) - len(markers)
        high = chunk[-1].key
        query = select(*_ITEM_ROW).where(ITEMS.c.source_id == self.source.id, ITEMS.c.key <= high)
        if low is not None:
            query = query.where(ITEMS.c.key > low)
        existing = {row.key: row for row in conn.execute(query)}
        fresh, changed, sidecars = self._diff(objs, existing)
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
        for o in fresh:
            p = place(o.key, o.size, videos)
            path = full(p.folder)
            placed_fresh.append((o, path))
            if p.dataset is not None and path not in placements:
                placements[path] = p
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
        cond: Any = ITEMS.c.key.in_(sorted(keys))
        for prefix in {g for k in keys if (g := group_prefix(k)) is not None}:
            # Every key starting with "dir/clip." sorts before "dir/clip/" ('/' follows '.').
            cond = cond | ((ITEMS.c.key >= prefix) & (ITEMS.c.key < prefix[:-1] + "/"))
        rows = conn.execute(
            select(*_ITEM_ROW).where(ITEMS.c.source_id == self.source.id, cond)
        ).all()
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
