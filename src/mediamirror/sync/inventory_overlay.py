"""What the catalog knows that an inventory report cannot: writes after the report began.

A report is a listing as of its ``creationTimestamp``. The catalog's items written after
that time (bucket events, a sync cut short, an earlier run) are newer than the report:
:func:`catalog_wins` lets them stand in for the report's entries, so the report's pass
leaves them as they are and the follow-up listing decides them; :func:`last_listing`
says whether a whole listing of the source is newer than the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import ITEMS, SYNC_RUNS
from mediamirror.stores.base import ObjectInfo


def newer_items(
    catalog: Catalog, source_id: int, since: datetime, batch: int = 1000
) -> Iterator[tuple[str, ObjectInfo | None]]:
    """The source's items written after ``since`` (by a listing, an event or an earlier
    run), in key order, read ``batch`` at a time: ``(key, the object as the catalog holds
    it)``, or ``(key, None)`` for an item marked deleted."""
    columns = (ITEMS.c.key, ITEMS.c.state, ITEMS.c.size, ITEMS.c.etag, ITEMS.c.last_modified)
    after: str | None = None
    while True:
        query = select(*columns).where(ITEMS.c.source_id == source_id, ITEMS.c.updated_at > since)
        if after is not None:
            query = query.where(ITEMS.c.key > after)
        with catalog.read() as conn:
            rows = conn.execute(query.order_by(ITEMS.c.key).limit(batch)).all()
        for key, state, size, etag, modified in rows:
            yield key, ObjectInfo(key, size, etag, modified) if state == "present" else None
        if len(rows) < batch:
            return
        after = rows[-1][0]


def catalog_wins(
    listed: Iterable[ObjectInfo], newer: Iterable[tuple[str, ObjectInfo | None]]
) -> Iterator[ObjectInfo]:
    """Two key-ordered streams merged: the report's objects, and the catalog's items
    written after the report began, which replace the report's entries for their keys
    (a deleted item: no entry, so the pass leaves it as it is). The report's pass then
    neither deletes a key added since nor brings back or rewinds one changed since: the
    follow-up listing decides those."""
    later = iter(newer)
    pending = next(later, None)
    for obj in listed:
        while pending is not None and pending[0] <= obj.key:
            if pending[1] is not None:
                yield pending[1]
            replaced, pending = pending[0] == obj.key, next(later, None)
            if replaced:
                break
        else:
            yield obj
    while pending is not None:
        if pending[1] is not None:
            yield pending[1]
        pending = next(later, None)


def last_listing(catalog: Catalog, source_id: int) -> datetime | None:
    """When the source's last successful sync began (None: never synced)."""
    query = select(SYNC_RUNS.c.started_at).where(
        SYNC_RUNS.c.source_id == source_id, SYNC_RUNS.c.state == "success"
    )
    with catalog.read() as conn:
        started: datetime | None = conn.execute(
            query.order_by(SYNC_RUNS.c.started_at.desc()).limit(1)
        ).scalar()
    return started
