"""The ``events`` table: every delivery received is kept with what became of it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, insert, select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import SOURCES, utcnow
from mediamirror.errors import NotFoundError
from mediamirror.web.models import EVENTS

if TYPE_CHECKING:
    from mediamirror.events.apply import Result

_DETAIL_CHARS = 2000


def _row(
    source_id: int | None,
    channel: str,
    event_type: str | None,
    bucket: str | None,
    key: str | None,
    sequencer: str | None,
    outcome: str,
    detail: str | None,
) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "channel": channel[:20],
        "event_type": event_type[:100] if event_type else event_type,
        "bucket": bucket or None,
        "key": key or None,
        "sequencer": sequencer[:100] if sequencer else sequencer,
        "outcome": outcome,
        "detail": detail[:_DETAIL_CHARS] if detail else detail,
        "received_at": utcnow(),
    }


def record(catalog: Catalog, results: Iterable[Result]) -> None:
    """Keep the outcome of each applied (or skipped) event, in one transaction."""
    with catalog.write() as conn:
        insert_events(conn, results)


def insert_events(conn: Connection, results: Iterable[Result]) -> None:
    """Keep the outcome of each event, in the caller's transaction."""
    rows = [
        _row(
            r.source.id if r.source is not None else None,
            r.event.channel,
            r.event.event_type,
            r.event.bucket,
            r.event.key,
            r.event.sequencer,
            r.outcome.value,
            r.detail,
        )
        for r in results
        if r.event.channel != "recheck"
    ]
    if rows:
        conn.execute(insert(EVENTS), rows)


def record_rejection(
    catalog: Catalog,
    channel: str,
    reason: str,
    *,
    source_id: int | None = None,
    event_type: str | None = None,
    bucket: str | None = None,
    key: str | None = None,
) -> None:
    """Keep a delivery that was refused (malformed, oversized, unauthenticated...)."""
    row = _row(source_id, channel, event_type, bucket, key, None, "rejected", reason)
    with catalog.write() as conn:
        conn.execute(insert(EVENTS), [row])


def event_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_at": row.received_at.isoformat(),
        "source": row.source,
        "channel": row.channel,
        "event_type": row.event_type,
        "bucket": row.bucket,
        "key": row.key,
        "sequencer": row.sequencer,
        "outcome": row.outcome,
        "detail": row.detail,
    }


def listing(
    catalog: Catalog,
    *,
    source: str | None = None,
    outcome: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Events newest first, with the total matching the filters."""
    conds = []
    with catalog.read() as conn:
        if source:
            sid = conn.execute(select(SOURCES.c.id).where(SOURCES.c.name == source)).scalar()
            if sid is None:
                raise NotFoundError(f"no source named {source!r} (see: mediamirror source list)")
            conds.append(EVENTS.c.source_id == sid)
        if outcome:
            conds.append(EVENTS.c.outcome == outcome)
        total = conn.execute(select(func.count()).select_from(EVENTS).where(*conds)).scalar_one()
        rows = conn.execute(
            select(EVENTS, SOURCES.c.name.label("source"))
            .outerjoin(SOURCES, SOURCES.c.id == EVENTS.c.source_id)
            .where(*conds)
            .order_by(EVENTS.c.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
    return int(total), [event_dict(r) for r in rows]
