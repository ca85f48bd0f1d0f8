"""Read-modify-write of a folder's metadata in one short write transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, utcnow


def update_meta(
    catalog: Catalog, folder_id: int, change: Callable[[dict[str, Any]], None]
) -> dict[str, Any] | None:
    """Apply ``change`` to the folder's metadata; returns the new metadata (None if the
    folder is gone). Rows are locked (SQLite: the write lock; PostgreSQL: FOR UPDATE)."""
    with catalog.write() as conn:
        return update_meta_in(conn, folder_id, change)


def update_meta_in(
    conn: Connection, folder_id: int, change: Callable[[dict[str, Any]], None]
) -> dict[str, Any] | None:
    """:func:`update_meta` inside the caller's write transaction."""
    query = select(FOLDERS.c.meta).where(FOLDERS.c.id == folder_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        return None
    meta = dict(row.meta or {})
    change(meta)
    conn.execute(
        update(FOLDERS).where(FOLDERS.c.id == folder_id).values(meta=meta, updated_at=utcnow())
    )
    return meta


def clear_marks(conn: Connection, folder_ids: list[int]) -> None:
    """``MarkForPostProcess: false`` on datasets whose jobs were just queued (DIVE clears
    the mark when it queues, so a mark means "not queued yet")."""
    for i in range(0, len(folder_ids), 500):
        chunk = sorted(set(folder_ids[i : i + 500]))
        rows = conn.execute(select(FOLDERS.c.id, FOLDERS.c.meta).where(FOLDERS.c.id.in_(chunk)))
        changes = [
            {"b_id": r.id, "b_meta": {**(r.meta or {}), "MarkForPostProcess": False}}
            for r in rows
            if (r.meta or {}).get("MarkForPostProcess") is not False
        ]
        if changes:
            conn.execute(
                update(FOLDERS)
                .where(FOLDERS.c.id == bindparam("b_id"))
                .values(meta=bindparam("b_meta"), updated_at=utcnow()),
                changes,
            )
