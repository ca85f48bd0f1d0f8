"""Failed jobs grouped by reason, and retrying many jobs at once.

A failure's *group key* is its processor plus the first line of its error with what
differs from one dataset to the next taken out (numbers, paths, URLs, quoted names, hex
ids): "video: ffprobe failed on /m/a.mp4 (exit 1)" and "video: ffprobe failed on
/m/b.mp4 (exit 1)" are one reason. Grouping is one pass over the failed jobs (only they
are read, through the state index); each distinct message is normalised once (a cache),
so a thousand failures with one message cost one normalisation. The key is computed, not
stored: a change of these rules regroups past failures too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from mediamirror.catalog.db import Catalog
from mediamirror.errors import JobError
from mediamirror.jobs.model import JOBS, JobStatus
from mediamirror.jobs.queue import requeued

#: Job states a bulk retry queues again (a finished job is re-run by ``reprocess``).
RETRYABLE = (JobStatus.ERROR.value, JobStatus.CANCELED.value)
_CHUNK = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY_CHARS = 300

_SUBSTITUTIONS = [
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I), "<url>"),
    (re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`"), "<name>"),
    (re.compile(r"(?:[\w.~-]*/)+[\w.~-]*|\b[\w-]+\.[a-z][a-z0-9]{1,4}\b", re.I), "<path>"),
    (re.compile(r"\b(?=[0-9a-f-]*\d)[0-9a-f]{8,}(?:-[0-9a-f]+)*\b", re.I), "<id>"),
    # host:pid:name worker ids, times of day, host:port
    (re.compile(r"\b[\w.-]+(?::[\w.-]+)+\b"), "<id>"),
    (re.compile(r"[-+]?\d+(?:[.,:]\d+)*"), "<n>"),
    (re.compile(r"\s+"), " "),
]


@lru_cache(maxsize=65536)
def group_key(processor: str, error: str | None) -> str:
    """``processor: first line of the error`` without its varying parts."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    text = lines[0] if lines else "no error message"
    for pattern, replacement in _SUBSTITUTIONS:
        text = pattern.sub(replacement, text)
    return f"{processor}: {text.strip()}"[:_KEY_CHARS]


@dataclass
class Group:
    """Failed jobs that share a reason."""

    key: str
    processor: str
    jobs: int = 0
    example: str = ""  # the first line of the newest failure's error
    last_failed_at: datetime | None = None
    job_ids: list[int] = field(default_factory=list)
    #: Distinct (target_type, target_id) of the group, newest failure first.
    targets: dict[tuple[str, int], None] = field(default_factory=dict)


def groups(conn: Connection) -> list[Group]:
    """Every failure group, the largest first (then the most recent): one pass over the
    failed jobs, newest first; each distinct message is normalised once (a cache)."""
    rows = conn.execute(
        select(
            JOBS.c.id,
            JOBS.c.processor,
            JOBS.c.error,
            JOBS.c.target_type,
            JOBS.c.target_id,
            JOBS.c.finished_at,
        )
        .where(JOBS.c.state == JobStatus.ERROR.value)
        .order_by(JOBS.c.id.desc())
    )
    found: dict[str, Group] = {}
    for job_id, processor, error, target_type, target_id, finished_at in rows:
        key = group_key(processor, error)
        group = found.get(key)
        if group is None:
            group = found[key] = Group(key, processor)
            group.example = _first_line(error)
        group.jobs += 1
        group.job_ids.append(job_id)
        group.targets[(target_type, target_id)] = None
        if finished_at is not None and (
            group.last_failed_at is None or finished_at > group.last_failed_at
        ):
            group.last_failed_at = finished_at
    return sorted(found.values(), key=lambda g: (g.jobs, g.last_failed_at or _EPOCH), reverse=True)


#: The last groups computed for each catalog, with the fingerprint of the failed jobs
#: they were computed from (the inbox is polled; most polls find nothing changed).
_LAST: dict[str, tuple[tuple[Any, ...], list[Group]]] = {}


def _fingerprint(conn: Connection) -> tuple[Any, ...]:
    """Changes whenever the set of failed jobs changes: a job that fails (or fails again)
    raises the newest ``finished_at``; one that leaves the error state changes the count
    and the sum of ids."""
    query = select(
        func.count(), func.coalesce(func.sum(JOBS.c.id), 0), func.max(JOBS.c.finished_at)
    )
    return tuple(conn.execute(query.where(JOBS.c.state == JobStatus.ERROR.value)).one())


def current_groups(conn: Connection, catalog_key: str) -> list[Group]:
    """:func:`groups`, computed again only when the failed jobs changed since the last
    call for this catalog (one indexed aggregate decides). The groups are shared: read
    them, do not change them."""
    mark = _fingerprint(conn)
    last = _LAST.get(catalog_key)
    if last is not None and last[0] == mark:
        return last[1]
    found = groups(conn)
    _LAST[catalog_key] = (mark, found)
    return found


def _first_line(error: str | None) -> str:
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def job_ids_of(conn: Connection, key: str, catalog_key: str = "") -> list[int] | None:
    """Ids of the failed jobs of the group ``key`` (None: no such group)."""
    found = current_groups(conn, catalog_key) if catalog_key else groups(conn)
    group = next((g for g in found if g.key == key), None)
    return None if group is None else sorted(group.job_ids)


@dataclass
class Retried:
    """What a bulk retry did."""

    queued: list[int] = field(default_factory=list)
    active: int = 0  # already queued or running (that job or the same work)
    not_failed: int = 0  # finished successfully: ``reprocess`` runs it again
    missing: int = 0  # no such job

    @property
    def skipped(self) -> int:
        return self.active + self.not_failed + self.missing

    def line(self) -> str:
        parts = [
            f"{n} {why}"
            for n, why in (
                (self.active, "already queued or running"),
                (self.not_failed, "not failed"),
                (self.missing, "not found"),
            )
            if n
        ]
        why = f" ({', '.join(parts)})" if parts else ""
        return f"queued {len(self.queued)} job(s) again; skipped {self.skipped}{why}"


def _key(row: Any) -> str:
    # The same string as queue.JobSpec.active_key.
    return f"{row.processor}:{row.target_type}:{row.target_id}:{row.input_version}"


def retry_many(catalog: Catalog, job_ids: Iterable[int]) -> Retried:
    """Queue failed or canceled jobs again with fresh attempts, in one transaction, as
    :func:`mediamirror.jobs.queue.retry` does for one. Idempotent: a job already queued
    (or whose work another job already does) is skipped, so retrying twice queues once."""
    wanted = sorted(set(job_ids))
    try:
        with catalog.write() as conn:
            return _retry_in(conn, wanted)
    except IntegrityError as exc:  # PostgreSQL: another transaction queued the same work
        raise JobError("the same work was queued meanwhile: retry again") from exc


def _retry_in(conn: Connection, wanted: Sequence[int]) -> Retried:
    done = Retried()
    rows: list[Any] = []
    for i in range(0, len(wanted), _CHUNK):
        query = select(
            JOBS.c.id,
            JOBS.c.state,
            JOBS.c.processor,
            JOBS.c.target_type,
            JOBS.c.target_id,
            JOBS.c.input_version,
        ).where(JOBS.c.id.in_(wanted[i : i + _CHUNK]))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        rows.extend(conn.execute(query))
    done.missing = len(wanted) - len(rows)
    candidates: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: r.id, reverse=True):  # the newest of a key wins
        if JobStatus(row.state).active:
            done.active += 1
        elif row.state not in RETRYABLE:
            done.not_failed += 1
        elif _key(row) in candidates:
            done.active += 1  # the same work, selected twice
        else:
            candidates[_key(row)] = row.id
    keys = list(candidates)
    for i in range(0, len(keys), _CHUNK):
        taken = conn.execute(
            select(JOBS.c.active_key).where(JOBS.c.active_key.in_(keys[i : i + _CHUNK]))
        ).scalars()
        for key in taken:
            candidates.pop(key, None)
            done.active += 1
    if candidates:
        conn.execute(_requeue(), [{"b_id": i, "b_key": k} for k, i in candidates.items()])
    done.queued = sorted(candidates.values())
    return done


def _requeue() -> Any:
    return (
        update(JOBS)
        .where(
            JOBS.c.id == bindparam("b_id"),
            (JOBS.c.state == RETRYABLE[0]) | (JOBS.c.state == RETRYABLE[1]),
        )
        .values(active_key=bindparam("b_key"), **requeued())
    )
