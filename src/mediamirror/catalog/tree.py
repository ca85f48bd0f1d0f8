"""Reading the mirrored tree: folders under a path and the items they hold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Text, literal_column, select, type_coerce
from sqlalchemy.types import NullType

from mediamirror.catalog.models import FOLDERS, ITEMS, SOURCES
from mediamirror.errors import NotFoundError


def dataset_status(meta: dict[str, Any]) -> str | None:
    """A word for people: error, pending, ready or new (None for a plain folder)."""
    if not meta.get("type"):
        return None
    states = [p.get("state") for p in (meta.get("processing") or {}).values()]
    if "error" in states:
        return "error"
    if meta.get("MarkForPostProcess") is True:
        return "pending"
    return "ready" if meta.get("annotate") else "new"


def normalize_path(path: str) -> str:
    """``/a/b/`` -> ``/a/b``; ``""`` and ``/`` -> ``/``."""
    path = "/" + path.strip("/")
    return path


def folder_row(conn: Connection, path: str) -> Any:
    path = normalize_path(path)
    if path == "/":
        return None
    row = conn.execute(select(FOLDERS).where(FOLDERS.c.path == path)).first()
    if row is None:
        raise NotFoundError(f"no folder {path} in the catalog (see: mediamirror ls /)")
    return row


def _under(path: str) -> tuple[str, str]:
    # Byte-ordered range of every path below ``path``: "/a/" <= p < "/a0" ('0' follows '/').
    base = "" if path == "/" else path
    return base + "/", base + "0"


def folders_query(path: str, recursive: bool, parent_id: int | None) -> Select[Any]:
    query = select(FOLDERS).order_by(FOLDERS.c.path)
    if recursive:
        low, high = _under(path)
        return query.where(FOLDERS.c.path >= low, FOLDERS.c.path < high)
    if parent_id is None:
        return query.where(FOLDERS.c.parent_id.is_(None))
    return query.where(FOLDERS.c.parent_id == parent_id)


def items_query(path: str, recursive: bool, folder_id: int | None) -> Select[Any]:
    query = (
        select(ITEMS, FOLDERS.c.path.label("folder_path"), SOURCES.c.name.label("source"))
        .join(FOLDERS, ITEMS.c.folder_id == FOLDERS.c.id)
        .join(SOURCES, ITEMS.c.source_id == SOURCES.c.id)
        .order_by(FOLDERS.c.path, ITEMS.c.key)
    )
    if recursive:
        low, high = _under(path)
        cond = (FOLDERS.c.path >= low) & (FOLDERS.c.path < high)
        if folder_id is not None:
            cond = cond | (ITEMS.c.folder_id == folder_id)
        return query.where(cond)
    if folder_id is None:
        return query.where(ITEMS.c.id.is_(None))  # nothing lives at the root itself
    return query.where(ITEMS.c.folder_id == folder_id)


def folder_dict(row: Any) -> dict[str, Any]:
    meta = dict(row.meta or {})
    return {
        "id": row.id,
        "path": row.path,
        "name": row.name,
        "type": meta.get("type"),
        "state": row.state,
        "meta": meta,
    }


def item_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": row.source,
        "key": row.key,
        "name": row.name,
        "folder": row.folder_path,
        "size": row.size,
        "etag": row.etag,
        "last_modified": row.last_modified.isoformat(),
        "state": row.state,
    }


def walk(
    conn: Connection, path: str, recursive: bool
) -> tuple[dict[str, Any] | None, Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
    """The folder at ``path`` (None for the root), its folders and its items, streamed."""
    path = normalize_path(path)
    row = folder_row(conn, path)
    folder_id = row.id if row is not None else None
    folders = (folder_dict(r) for r in _streamed(conn, folders_query(path, recursive, folder_id)))
    items = (item_dict(r) for r in _streamed(conn, items_query(path, recursive, folder_id)))
    return (folder_dict(row) if row is not None else None), folders, items


#: Rows fetched at a time from a streamed query.
STREAM_BATCH = 1000


def _streamed(conn: Connection, query: Select[Any]) -> Iterator[Any]:
    """The rows of ``query`` a batch at a time: a server-side cursor on PostgreSQL (whose
    driver otherwise holds the whole result in memory), SQLite's own stepping cursor.
    A whole tree of a million items never sits in memory at once."""
    yield from conn.execute(query.execution_options(yield_per=STREAM_BATCH))


def modified_text(dialect: str) -> ColumnElement[Any]:
    """``items.last_modified`` as text that is cheapest to turn into its ``isoformat()``
    (thousands of rows a page): PostgreSQL writes the ISO form itself (a datetime object
    per row costs more than the formatting), SQLite's stored text comes raw."""
    column = ITEMS.c.last_modified
    if dialect == "postgresql":
        return literal_column(
            "to_char(items.last_modified, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
            "items.last_modified = date_trunc('second', items.last_modified) THEN '' ELSE "
            "to_char(items.last_modified, '.US') END || '+00:00'",
            Text,
        ).label("last_modified")
    return type_coerce(column, NullType()).label("last_modified")
