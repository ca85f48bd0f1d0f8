"""The ``events`` table: every delivery received is kept with what became of it; and the
``push_refusals`` table: refused pushes, counted per source, channel and reason.

Refusals are rolled up rather than kept one row each: anyone who can reach the push
endpoints can send them, token or not, and must not be able to grow the catalog."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import SOURCES, utcnow
from mediamirror.errors import NotFoundError
from mediamirror.web.models import EVENTS, REFUSALS

if TYPE_CHECKING:
    from mediamirror.events.apply import Result

_DETAIL_CHARS = 2000
#: A refusal keeps only its last message, this long (it may quote what the sender sent).
_REFUSAL_DETAIL_CHARS = 300
#: Counts stop here rather than overflow a 32-bit INTEGER column.
_MAX_COUNT = 2**31 - 1


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


def event_row(r: Result) -> dict[str, Any]:
    """The ``events`` row of one result; a pending one keeps what applying it needs."""
    ev = r.event
    row = _row(
        r.source.id if r.source is not None else None,
        ev.channel,
        ev.event_type,
        ev.bucket,
        ev.key,
        ev.sequencer,
        r.outcome.value,
        r.detail,
    )
    row.update(
        action=ev.action.value,
        size=ev.size,
        etag=ev.etag,
        event_time=ev.time,
    )
    return row


def record(catalog: Catalog, results: Iterable[Result]) -> None:
    """Keep the outcome of each applied (or skipped) event, in one transaction."""
    with catalog.write() as conn:
        insert_events(conn, results)


def insert_events(conn: Connection, results: Iterable[Result]) -> None:
    """Keep the outcome of each event, in the caller's transaction."""
    rows = [event_row(r) for r in results if r.event.channel != "recheck"]
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


def refusal_reason(status: int, authenticated: bool) -> str:
    """A refusal's class: one of a few fixed words, never text from the request, so the
    rolled-up rows stay few whatever is sent."""
    if status == 401:
        return "bad signature" if authenticated else "no valid push token"
    return {400: "malformed body", 413: "body too large", 502: "confirmation failed"}.get(
        status, f"refused ({status})"
    )


def record_refusal(
    catalog: Catalog, channel: str, reason: str, detail: str, *, source_id: int | None = None
) -> None:
    """Count one refused push under (source, channel, reason), keeping its message as the
    latest sample. Two writers may both find no row and insert: the unique index lets one
    win and the other then counts on the winner's row."""
    for _ in range(2):
        try:
            with catalog.write() as conn:
                if not _count(conn, channel[:20], reason[:40], detail, source_id):
                    conn.execute(
                        insert(REFUSALS), [_refusal_row(channel, reason, detail, source_id)]
                    )
            return
        except IntegrityError:
            continue


def _refusal_row(channel: str, reason: str, detail: str, source_id: int | None) -> dict[str, Any]:
    now = utcnow()
    return {
        "source_id": source_id,
        "channel": channel[:20],
        "reason": reason[:40],
        "count": 1,
        "first_at": now,
        "last_at": now,
        "detail": detail[:_REFUSAL_DETAIL_CHARS],
    }


def _count(conn: Connection, channel: str, reason: str, detail: str, source_id: int | None) -> bool:
    same_source = (
        REFUSALS.c.source_id.is_(None) if source_id is None else REFUSALS.c.source_id == source_id
    )
    counted = case((REFUSALS.c.count < _MAX_COUNT, REFUSALS.c.count + 1), else_=REFUSALS.c.count)
    result = conn.execute(
        update(REFUSALS)
        .where(same_source, REFUSALS.c.channel == channel, REFUSALS.c.reason == reason)
        .values(count=counted, last_at=utcnow(), detail=detail[:_REFUSAL_DETAIL_CHARS])
    )
    return result.rowcount > 0


def refusals(catalog: Catalog, *, source: str | None = None) -> list[dict[str, Any]]:
    """Refused pushes rolled up, most recent first."""
    query = (
        select(REFUSALS, SOURCES.c.name.label("source"))
        .outerjoin(SOURCES, SOURCES.c.id == REFUSALS.c.source_id)
        .order_by(REFUSALS.c.last_at.desc(), REFUSALS.c.id.desc())
    )
    with catalog.read() as conn:
        if source:
            query = query.where(REFUSALS.c.source_id == _source_id(conn, source))
        rows = conn.execute(query).all()
    return [
        {
            "source": r.source,
            "channel": r.channel,
            "reason": r.reason,
            "count": r.count,
            "first_at": r.first_at.isoformat(),
            "last_at": r.last_at.isoformat(),
            "detail": r.detail,
        }
        for r in rows
    ]


def _source_id(conn: Connection, name: str) -> int:
    sid = conn.execute(select(SOURCES.c.id).where(SOURCES.c.name == name)).scalar()
    if sid is None:
        raise NotFoundError(f"no source named {name!r} (see: mediamirror source list)")
    return int(sid)


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
            conds.append(EVENTS.c.source_id == _source_id(conn, source))
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
