"""Feed records' metadata into their datasets (the sync engine's hook for feed stores).

A feed record is listed with ``ObjectInfo.meta`` (``cms_id``, ``cms_version``,
``source_url``, the block's ``metadata:`` fields, ``notify``; see stores/feed.py). When the
record is new or changed, that metadata is merged into the metadata of the dataset it
makes, beside DIVE's keys: into the new folder's metadata when the folder is created, and
into the existing one's otherwise (a changed version updates ``cms_version`` and
``source_url``). Objects of bucket stores have no ``meta`` and cost nothing here.

:func:`merge_feed` is the engine's merge for a feed store: its records as the pages come
(diffed by key, written while the walk goes on), and deletions from the keys of a complete
walk, where the sorted merge of a bucket diffs key ranges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select

from mediamirror import interrupt
from mediamirror.catalog import retry
from mediamirror.catalog.meta import merge_meta
from mediamirror.catalog.models import ITEMS
from mediamirror.stores.base import ObjectInfo
from mediamirror.sync.layout import SIDECAR_EXTENSIONS, extension

if TYPE_CHECKING:
    from mediamirror.sync.engine import SyncEngine

log = logging.getLogger(__name__)
#: Keys looked up in one query, items marked deleted in one transaction.
_KEY_BATCH = 500
_DELETE_BATCH = 1000


def record_meta(
    fresh: Iterable[tuple[ObjectInfo, str]],
    changed: Iterable[tuple[ObjectInfo, Any, str]],
    datasets: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Folder path -> the record metadata to merge, for new and changed feed records
    whose folder is a dataset (``datasets``: the chunk's dataset placements by path)."""
    found: dict[str, dict[str, Any]] = {}
    for o, path in fresh:
        if o.meta and path in datasets:
            found[path] = dict(o.meta)
    for o, _, path in changed:
        if o.meta and path in datasets:
            found[path] = dict(o.meta)
    return found


def copy_record_meta(conn: Connection, by_folder: Mapping[int, dict[str, Any]]) -> None:
    """Merge record metadata into existing dataset folders (one read, one batched write)."""
    merge_meta(conn, by_folder)


# -- a feed's pages as they come ------------------------------------------------------------
# A feed lists its records in its own order (by cursor), not by key: sorting them first
# would hold every write back until the walk ends. Instead each batch of pages is diffed
# against the catalog BY KEY (its items looked up by key, not by key range) and written at
# once, while the walk goes on in a thread; the keys of a COMPLETE walk then say which
# items are gone. A failed walk raises before that step: nothing is marked deleted.


def stream_of(store: Any) -> Callable[[], Iterable[list[ObjectInfo]]] | None:
    """The store's ``stream_pages`` (feed stores, also behind the read-only wrapper)."""
    inner = getattr(store, "_inner", store)
    stream = getattr(inner, "stream_pages", None)
    return stream if callable(stream) else None


def merge_feed(engine: SyncEngine) -> bool:
    """Sync a feed store's records page by page (the engine's merge and deletion for a
    store listed in no key order). False, doing nothing: not a feed (or the engine was
    given a listing of its own); the caller then runs the sorted merge."""
    stream = stream_of(engine.store)
    if stream is None or engine.listing is not None:
        return False
    seen: set[str] = set()  # every key listed so far
    kept: set[str] = set()  # the keys the source keeps (its include/exclude filters)
    for chunk in stream():
        interrupt.check()  # a safe point: the previous batch is committed
        new = [o for o in chunk if o.key not in seen]  # a key listed twice: the first one
        if new:
            seen.update(o.key for o in new)
            kept |= _write_keyed(engine, new)
        engine.summary.listed += len(chunk)
        if engine.progress is not None:
            engine.progress(engine.summary.listed)
        engine._renew()
    # The walk is complete (a failed one raised above): catalogued keys it did not list
    # are gone, like keys gone from a bucket. Filtered-out keys count as not listed.
    _delete_unseen(engine, kept)
    return True


def _write_keyed(engine: SyncEngine, chunk: list[ObjectInfo]) -> set[str]:
    """One batch in one transaction, written again when it failed only because another
    writer ran at the same moment (as the sorted merge's pages are); the keys kept."""
    markers = [o for o in chunk if o.key.endswith("/") and engine._wanted_marker(o)]
    objs = [o for o in chunk if engine._wanted(o)]
    engine.summary.skipped += len(chunk) - len(objs) - len(markers)
    kept = {o.key for o in objs}
    if not markers and not engine.relay and _unchanged_by_key(engine, objs):
        engine.summary.unchanged += len(objs)  # the common case of a re-sync: no write
        return kept
    for attempt in range(1, retry.ATTEMPTS + 1):
        try:
            with engine._transaction() as conn:
                _apply_keyed(engine, conn, objs, markers)
            return kept
        except Exception as exc:
            engine.folders.ids.clear()  # ids cached in the rolled-back transaction
            if attempt == retry.ATTEMPTS or not retry.transient(exc):
                raise
            log.info("%s: a feed batch written again (%s)", engine.source.name, type(exc).__name__)
    raise AssertionError("unreachable")


def _apply_keyed(
    engine: SyncEngine, conn: Connection, objs: list[ObjectInfo], markers: list[ObjectInfo]
) -> None:
    """The sorted merge's chunk rules (engine ``_apply``) for keys in no order: the
    catalog's rows are read by key, and nothing is marked deleted here."""
    existing = _existing_by_key(conn, engine.source.id, [o.key for o in objs])
    fresh, changed, sidecars = engine._diff(objs, existing)
    if changed:
        changed = engine._keep_event_times(conn, changed, sidecars)
    relay = engine._relay_candidates(objs, existing, changed) if engine.relay else []
    if conn.dialect.name == "postgresql" and changed:
        # Items before folders, as an event's transaction takes them (engine ``_apply``).
        ids = sorted(row.id for _, row in changed)
        locked = select(ITEMS.c.id).where(ITEMS.c.id.in_(ids)).order_by(ITEMS.c.id)
        conn.execute(locked.with_for_update())
    if fresh or changed or sidecars or markers or relay:
        engine._write(conn, objs, fresh, changed, sidecars, markers, relay)


_SQLITE_SAME_KEYS = (
    "SELECT key, etag, size, last_modified || '+00:00', state FROM items"
    " WHERE source_id = ? AND key IN ({})"
)


def _unchanged_by_key(engine: SyncEngine, objs: list[ObjectInfo]) -> bool:
    """True when the catalog holds every one of ``objs`` present and unchanged, none of
    them a sidecar (as the engine's ``_unchanged`` decides for a key range): the batch
    needs nothing, not even a write transaction. On SQLite only, by one read comparing the
    stored text of each row with the listed values written the same way; False sends the
    batch through the full merge, which decides everything itself."""
    if not engine.catalog.is_sqlite or not objs:
        return False
    if any(extension(o.key) in SIDECAR_EXTENSIONS for o in objs):
        return False
    listed = {
        o.key: (o.key, o.etag, o.size, o.last_modified.isoformat(" ", "microseconds"), "present")
        for o in objs
    }
    keys = list(listed)
    with engine.catalog.read() as conn:
        cursor = conn.connection.cursor()
        try:
            for i in range(0, len(keys), _KEY_BATCH):
                batch = keys[i : i + _KEY_BATCH]
                sql = _SQLITE_SAME_KEYS.format(",".join("?" * len(batch)))
                rows = cursor.execute(sql, (engine.source.id, *batch)).fetchall()
                if len(rows) != len(batch) or any(listed[r[0]] != r for r in rows):
                    return False
        finally:
            cursor.close()
    return True


_SQLITE_KEYS = (
    "SELECT id, key, size, etag, last_modified, state, folder_id FROM items"
    " WHERE source_id = ? AND key IN ({})"
)


def _existing_by_key(conn: Connection, source_id: int, keys: list[str]) -> dict[str, Any]:
    """The catalog's items with these keys, by key (on SQLite straight through the driver,
    as the engine's range read: SQLAlchemy's per-value processing costs more than the
    query)."""
    from mediamirror.sync import engine as sync_engine

    found: dict[str, Any] = {}
    for i in range(0, len(keys), _KEY_BATCH):
        batch = keys[i : i + _KEY_BATCH]
        if conn.dialect.name != "sqlite":
            query = select(*sync_engine._ITEM_ROW).where(
                ITEMS.c.source_id == source_id, ITEMS.c.key.in_(batch)
            )
            found.update((row.key, row) for row in conn.execute(query))
            continue
        cursor = conn.connection.cursor()
        try:
            sql = _SQLITE_KEYS.format(",".join("?" * len(batch)))
            rows = cursor.execute(sql, (source_id, *batch)).fetchall()
        finally:
            cursor.close()
        make, stamp = sync_engine._ItemRow, sync_engine._sqlite_stamp
        found.update((r[1], make(r[0], r[1], r[2], r[3], stamp(r[4]), r[5], r[6])) for r in rows)
    return found


def _delete_unseen(engine: SyncEngine, seen: set[str]) -> None:
    """Mark deleted the source's present items whose keys the complete walk did not list
    (read once, then marked in batches, each its own transaction)."""
    with engine.catalog.read() as conn:
        # Every key kept is present now (this sync wrote or found it so, holding the
        # source's lease): as many present items as keys kept means none is gone.
        count = select(func.count()).where(
            ITEMS.c.source_id == engine.source.id, ITEMS.c.state == "present"
        )
        if conn.execute(count).scalar_one() == len(seen):
            return
        rows = conn.execute(
            select(ITEMS.c.id, ITEMS.c.key, ITEMS.c.folder_id)
            .where(ITEMS.c.source_id == engine.source.id, ITEMS.c.state == "present")
            .order_by(ITEMS.c.key)
        ).all()
    gone = [row for row in rows if row.key not in seen]
    for i in range(0, len(gone), _DELETE_BATCH):
        interrupt.check()
        with engine._transaction() as conn:
            engine._mark_deleted(conn, gone[i : i + _DELETE_BATCH])
        engine._renew()
