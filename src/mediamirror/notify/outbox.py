"""Writing notifications into the outbox, in the transaction of the change they report.

Every function here takes the caller's open write connection: the notification commits
with the state change or not at all, so a crash can neither lose it (change committed,
notification not) nor invent it (notification committed, change rolled back). A repeated
write of one event is absorbed by the unique ``dedupe_key``. What a message needs goes
into ``facts``, so the sender composes it without another query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, func, select

from mediamirror.catalog.models import FOLDERS, ITEMS, SOURCES, utcnow
from mediamirror.notify.model import NOTIFICATIONS
from mediamirror.notify.recipients import META_KEY, dataset_recipient
from mediamirror.redact import redact

#: Lines of a failed job's log a message quotes.
LOG_LINES = 20


def record(
    conn: Connection,
    kind: str,
    *,
    facts: Mapping[str, Any],
    path: str | None = None,
    source_id: int | None = None,
    folder_id: int | None = None,
    job_id: int | None = None,
    dedupe_key: str,
) -> None:
    """Add a notification (a no-op when one with ``dedupe_key`` exists), in ``conn``'s
    transaction."""
    # Imported here: PostgreSQL's dialect costs every SQLite command ~0.07 s to load.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql as dialect
    else:
        from sqlalchemy.dialects import sqlite as dialect  # type: ignore[no-redef]
    stmt = (
        dialect.insert(NOTIFICATIONS)
        .values(
            kind=kind,
            created_at=utcnow(),
            path=path,
            source_id=source_id,
            folder_id=folder_id,
            job_id=job_id,
            facts=dict(facts),
            dedupe_key=dedupe_key[:300],
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    conn.execute(stmt)


def last_lines(log_tail: str | None, n: int = LOG_LINES) -> list[str]:
    """The end of a job's log, without secrets."""
    lines = [ln.rstrip() for ln in redact(log_tail or "").splitlines() if ln.strip()]
    return lines[-n:]


def _source_name(conn: Connection, source_id: int | None) -> str | None:
    if source_id is None:
        return None
    return conn.execute(select(SOURCES.c.name).where(SOURCES.c.id == source_id)).scalar()


def dataset_facts(conn: Connection, folder_id: int, meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a message says about a dataset: type, duration, fps, size, frames..."""
    size, count = conn.execute(
        select(func.coalesce(func.sum(ITEMS.c.size), 0), func.count()).where(
            ITEMS.c.folder_id == folder_id, ITEMS.c.state == "present"
        )
    ).one()
    probe = meta.get("probe") if isinstance(meta.get("probe"), dict) else {}
    frames = meta.get("frames") or (probe or {}).get("frames")
    if frames is None and meta.get("type") == "image-sequence":
        frames = int(count)
    return {
        "type": meta.get("type"),
        "duration": (probe or {}).get("duration"),
        "fps": meta.get("fps"),
        "original_fps": meta.get("originalFps"),
        "codec": meta.get("codec"),
        "width": meta.get("width") or (probe or {}).get("width"),
        "height": meta.get("height") or (probe or {}).get("height"),
        "frames": frames,
        "size": int(size),
        "items": int(count),
        "processors": sorted((meta.get("processing") or {}).keys()),
    }


def job_failed(conn: Connection, job: Any, reason: str | None, log_tail: str | None) -> None:
    """``job.failed`` for ``job`` (a row of ``jobs`` as it was claimed), failed for good."""
    folder = None
    if job.target_type == "folder":
        folder = conn.execute(
            select(FOLDERS.c.id, FOLDERS.c.path, FOLDERS.c.source_id, FOLDERS.c.meta).where(
                FOLDERS.c.id == job.target_id
            )
        ).first()
    meta = dict(folder.meta or {}) if folder is not None else {}
    facts = {
        "processor": job.processor,
        "reason": redact(reason or "failed"),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "log": last_lines(log_tail if log_tail is not None else job.log_tail),
        "type": meta.get("type"),
        "target": f"{job.target_type}:{job.target_id}",
        "source": _source_name(conn, folder.source_id if folder is not None else None),
    }
    if dataset_recipient(meta):  # a feed record's notify: address (notify/recipients.py)
        facts[META_KEY] = dataset_recipient(meta)
    # One per run of the job: `jobs retry` starts a new run (a new started_at).
    started = job.started_at.isoformat() if job.started_at is not None else "-"
    dedupe_key = f"job.failed:{job.id}:{started}"
    if folder is not None:
        dedupe_key = _original_failure(folder.id, meta, facts["reason"]) or dedupe_key
    record(
        conn,
        "job.failed",
        facts=facts,
        path=folder.path if folder is not None else None,
        source_id=folder.source_id if folder is not None else None,
        folder_id=folder.id if folder is not None else None,
        job_id=job.id,
        dedupe_key=dedupe_key,
    )


def _original_failure(folder_id: int, meta: Mapping[str, Any], reason: str) -> str | None:
    """One key for every job of a dataset that failed because its feed record's file could
    not be downloaded (processing/originals.py records ``original_failed``): the video
    processor and each command need that file, and the same failure is told once."""
    failed = meta.get("original_failed")
    if not isinstance(failed, Mapping) or failed.get("reason") != reason:
        return None
    digest = hashlib.sha1(reason.encode(), usedforsecurity=False).hexdigest()[:12]
    return f"job.failed:original:{folder_id}:{failed.get('version')}:{digest}"


def dataset_ready(
    conn: Connection, folder_id: int, meta: Mapping[str, Any], job: Any, seconds: float | None
) -> None:
    """``dataset.ready`` once ``job`` completed the dataset's processing."""
    row = conn.execute(
        select(FOLDERS.c.path, FOLDERS.c.source_id).where(FOLDERS.c.id == folder_id)
    ).first()
    if row is None:
        return
    facts = dataset_facts(conn, folder_id, meta)
    facts.update(
        processor=job.processor,
        version=job.input_version,
        seconds=seconds,
        source=_source_name(conn, row.source_id),
    )
    if dataset_recipient(meta):  # a feed record's notify: address (notify/recipients.py)
        facts[META_KEY] = dataset_recipient(meta)
    record(
        conn,
        "dataset.ready",
        facts=facts,
        path=row.path,
        source_id=row.source_id,
        folder_id=folder_id,
        job_id=job.id,
        # Per dataset and input version, and per job that completed it: a reprocess that
        # succeeds again is news, the same completion written twice is not.
        dedupe_key=f"dataset.ready:{folder_id}:{job.input_version}:{job.id}",
    )


def sync_ended(
    conn: Connection,
    run_id: int,
    source_id: int,
    *,
    state: str,
    error: str | None,
    counts: Mapping[str, Any],
) -> None:
    """``sync.finished`` or ``sync.failed`` for sync run ``run_id``."""
    src = conn.execute(
        select(SOURCES.c.name, SOURCES.c.mount, SOURCES.c.url).where(SOURCES.c.id == source_id)
    ).first()
    kind = "sync.finished" if state == "success" else "sync.failed"
    facts: dict[str, Any] = {
        "source": src.name if src is not None else None,
        "url": redact(src.url) if src is not None else None,
        "error": redact(error) if error else None,
        **dict(counts),
    }
    record(
        conn,
        kind,
        facts=facts,
        path=src.mount if src is not None else None,
        source_id=source_id,
        dedupe_key=f"{kind}:{run_id}",
    )
