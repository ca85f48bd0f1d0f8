"""Read-modify-write of a folder's metadata in one short write transaction."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def merge_meta(conn: Connection, by_folder: Mapping[int, Mapping[str, Any]]) -> None:
    """Merge ``by_folder[id]`` into each folder's metadata: one read and one batched
    write per 500 folders; a folder whose metadata already holds those values is not
    written."""
    ids = sorted(by_folder)
    for i in range(0, len(ids), 500):
        rows = conn.execute(
            select(FOLDERS.c.id, FOLDERS.c.meta).where(FOLDERS.c.id.in_(ids[i : i + 500]))
        )
        changes = []
        for fid, meta in rows:
            merged = {**(meta or {}), **by_folder[fid]}
            if merged != meta:
                changes.append({"b_id": fid, "b_meta": merged})
        if changes:
            conn.execute(
                update(FOLDERS)
                .where(FOLDERS.c.id == bindparam("b_id"))
                .values(meta=bindparam("b_meta"), updated_at=utcnow()),
                changes,
            )


def clear_marks(conn: Connection, folder_ids: list[int]) -> None:
    """``MarkForPostProcess: false`` on datasets whose jobs were just queued (DIVE clears
    the mark when it queues, so a mark means "not queued yet")."""
    merge_meta(conn, {fid: {"MarkForPostProcess": False} for fid in folder_ids})
