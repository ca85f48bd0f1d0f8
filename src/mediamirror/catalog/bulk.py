"""Bulk inserts for the sync's hot path, straight through the database driver.

SQLAlchemy's per-value type processing costs more than SQLite's own insert for a million
small rows; here values are prepared once, in the form each driver stores natively (for
SQLite the same text format SQLAlchemy's DateTime uses, so the ORM reads them back as
usual).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
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
    """SQLAlchemy's SQLite DateTime storage format (UTC values, no zone):
    ``YYYY-MM-DD HH:MM:SS.ffffff``, by the C formatter (the zone suffix cut off)."""
    return d.isoformat(" ", "microseconds")[:26]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def sqlite_ns_times(values: Iterable[int]) -> list[str]:
    """:func:`sqlite_datetime` of ``1970 + ns // 1000`` microseconds for each ``ns`` (a
    file's ``st_mtime_ns``: the time cut to the microsecond, before 1970 too), without a
    datetime per value: the text of each distinct second is built once."""
    seconds: dict[int, str] = {}
    texts = []
    for ns in values:
        second, micros = divmod(ns // 1000, 1_000_000)
        text = seconds.get(second)
        if text is None:
            text = seconds[second] = sqlite_datetime(_EPOCH + timedelta(seconds=second))[:19]
        texts.append(f"{text}.{micros:06d}")
    return texts


def insert_sqlite_items(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """:func:`insert_items` of rows already in SQLite's stored form: datetimes as
    :func:`sqlite_datetime` text, ``needs_processing`` as 0 or 1."""
    if rows:
        marks = ", ".join(["?"] * len(_ITEM_COLUMNS))
        sql = f"INSERT INTO items ({', '.join(_ITEM_COLUMNS)}) VALUES ({marks})"
        conn.exec_driver_sql(sql, list(rows))


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
