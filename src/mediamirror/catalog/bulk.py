"""Bulk inserts for the sync's hot path, straight through the database driver.

SQLAlchemy's per-value type processing costs more than SQLite's own insert for a million
small rows; here values are prepared once, in the form each driver stores natively (for
SQLite the same text format SQLAlchemy's DateTime uses, so the ORM reads them back as
usual).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

_ITEM_COLUMNS = (
    "source_id",
    "folder_id",
    "key",
    "name",
    "size",
    "etag",
    "last_modified",
    "state",
    "needs_processing",
    "updated_at",
)


def sqlite_datetime(d: datetime) -> str:
    """SQLAlchemy's SQLite DateTime storage format (UTC values, no zone)."""
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d} "
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}"
    )


def insert_items(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert item rows given as tuples in ``_ITEM_COLUMNS`` order, datetimes in UTC."""
    if not rows:
        return
    sqlite = conn.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    sql = (
        f"INSERT INTO items ({', '.join(_ITEM_COLUMNS)}) "
        f"VALUES ({', '.join([mark] * len(_ITEM_COLUMNS))})"
    )
    if sqlite:
        stamps: dict[datetime, str] = {}  # every row of a chunk shares its updated_at

        def stamp(d: datetime) -> str:
            text = stamps.get(d)
            if text is None:
                text = stamps[d] = sqlite_datetime(d)
            return text

        prepared = [
            (*r[:6], sqlite_datetime(r[6]), r[7], 1 if r[8] else 0, stamp(r[9])) for r in rows
        ]
    else:
        prepared = [
            (*r[:6], r[6].replace(tzinfo=None), r[7], r[8], r[9].replace(tzinfo=None)) for r in rows
        ]
    conn.exec_driver_sql(sql, prepared)
