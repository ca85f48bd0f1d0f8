"""Every change of a job's state happens here: enqueue, claim, progress, finish, reap.

Claiming is one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING``: under SQLite's
single writer and PostgreSQL's ``FOR UPDATE SKIP LOCKED`` two workers never get one job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Text,
    and_,
    any_,
    bindparam,
    column,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.leases import owner_is_dead
from mediamirror.catalog.models import FOLDERS, ITEMS, utcnow
from mediamirror.errors import JobError, NotFoundError
from mediamirror.jobs.model import JOBS, JobStatus, RetryPolicy
from mediamirror.notify import outbox
from mediamirror.redact import redact, redact_optional

LOG_TAIL_CHARS = 8000


@dataclass(frozen=True)
class JobSpec:
    """What to run: a processor on a target at an input version."""

    processor: str
    target_type: str
    target_id: int
    input_version: str
    args: dict[str, Any] = field(default_factory=dict)
    priority: int = 100
    timeout: float | None = None

    @property
    def active_key(self) -> str:
        return f"{self.processor}:{self.target_type}:{self.target_id}:{self.input_version}"


def _tail(log_tail: str) -> str:
    """What of a job's log the catalog keeps: its end, without secrets. Every log line,
    message and error of a job enters the catalog through this module, so this is where
    redaction happens (before cutting, so no half secret is left at the start)."""
    return redact(log_tail)[-LOG_TAIL_CHARS:]


def _insert(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(JOBS)


def enqueue(catalog: Catalog, specs: Iterable[JobSpec], policy: RetryPolicy) -> list[int]:
    """Queue jobs; a spec whose job is already queued or running is a no-op.
    Returns the ids of the jobs actually queued."""
    specs = list(specs)
    if not specs:
        return []
    with catalog.write() as conn:
        return [job_id for job_id, _ in enqueue_in(conn, specs, policy.max_attempts)]


def enqueue_in(
    conn: Connection, specs: Sequence[JobSpec], max_attempts: int
) -> list[tuple[int, int]]:
    """:func:`enqueue` in the caller's transaction (beside the writes that make the jobs
    due: an event batch, a bulk action): (job id, target id) of the jobs actually queued."""
    now = utcnow()
    rows = [
        {
            "processor": s.processor,
            "target_type": s.target_type,
            "target_id": s.target_id,
            "input_version": s.input_version,
            "args": s.args,
            "active_key": s.active_key,
            "state": JobStatus.QUEUED.value,
            "priority": s.priority,
            "attempts": 0,
            "max_attempts": max_attempts,
            "timeout": s.timeout,
            "progress": 0.0,
            "log_tail": "",
            "cancel_requested": False,
            "run_after": now,
            "created_at": now,
        }
        for s in specs
    ]
    stmt = _insert(conn).on_conflict_do_nothing(index_elements=["active_key"])
    returning = stmt.returning(JOBS.c.id, JOBS.c.target_id)
    queued: list[tuple[int, int]] = []
    for i in range(0, len(rows), 500):
        queued.extend((r[0], r[1]) for r in conn.execute(returning, rows[i : i + 500]))
    return queued


def of_sources(source_ids: Sequence[int]) -> ColumnElement[bool]:
    """Jobs whose target (a folder or an item) belongs to one of these sources."""
    ids = list(source_ids)
    folders = select(FOLDERS.c.id).where(FOLDERS.c.source_id.in_(ids))
    items = select(ITEMS.c.id).where(ITEMS.c.source_id.in_(ids))
    return or_(
        and_(JOBS.c.target_type == "folder", JOBS.c.target_id.in_(folders)),
        and_(JOBS.c.target_type == "item", JOBS.c.target_id.in_(items)),
    )


def among(ids: Any, name: str, postgres: bool) -> ColumnElement[bool]:
    """Column ``ids`` holds one of the ids in bind parameter ``name`` (a list): on
    PostgreSQL one array parameter, so the statement's text is the same for any number
    of ids (psycopg and the server parse and prepare it once, SQLAlchemy renders no
    placeholder per id); on SQLite an expanding ``IN``."""
    if postgres:
        return ids == any_(bindparam(name, type_=postgresql.ARRAY(Integer)))  # type: ignore[no-any-return]
    return ids.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


def running(worker: str, now: datetime, lease_seconds: float) -> dict[str, Any]:
    """The column values of a job as ``worker`` takes it (a claim of the queue or by id)."""
    return {
        "state": JobStatus.RUNNING.value,
        "worker": worker,
        "attempts": JOBS.c.attempts + 1,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "started_at": now,
        "finished_at": None,
        "progress": 0.0,
    }


#: The column values of a job as a worker takes it, as bind parameters (b_worker, b_now,
#: b_lease): the prebuilt claims below share them.
_TAKEN: dict[str, Any] = {
    "state": JobStatus.RUNNING.value,
    "worker": bindparam("b_worker"),
    "attempts": JOBS.c.attempts + 1,
    "lease_expires_at": bindparam("b_lease"),
    "started_at": bindparam("b_now"),
    "finished_at": None,
    "progress": 0.0,
}


def _claim_statement(postgres: bool) -> Any:
    """The claim of the whole queue, built once per dialect (building and cache-keying a
    statement costs more Python than running it, and this one runs per batch of jobs)."""
    due = (
        select(JOBS.c.id)
        .where(JOBS.c.state == JobStatus.QUEUED.value, JOBS.c.run_after <= bindparam("b_now"))
        .order_by(JOBS.c.priority, JOBS.c.id)
        .limit(bindparam("b_limit", type_=Integer))
    )
    if postgres:
        due = due.with_for_update(skip_locked=True)
    return (
        update(JOBS).where(JOBS.c.id.in_(due.scalar_subquery())).values(**_TAKEN).returning(*JOBS.c)
    )


def _claim_ids_statement(postgres: bool) -> Any:
    """The claim of given jobs (a Celery message's ids, ``b_ids``), built once per dialect."""
    return (
        update(JOBS)
        .where(
            among(JOBS.c.id, "b_ids", postgres),
            JOBS.c.state == JobStatus.QUEUED.value,
            JOBS.c.run_after <= bindparam("b_now"),
        )
        # Queued again later (retry, reap): the celery executor sends it again.
        .values(**_TAKEN, dispatched_at=None)
        .returning(*JOBS.c)
    )


_CLAIM = {False: _claim_statement(False), True: _claim_statement(True)}
_CLAIM_IDS = {False: _claim_ids_statement(False), True: _claim_ids_statement(True)}


def _taking(worker: str, now: datetime, lease_seconds: float) -> dict[str, Any]:
    return {"b_now": now, "b_worker": worker, "b_lease": now + timedelta(seconds=lease_seconds)}


def claim_ids_in(
    conn: Connection, worker: str, job_ids: Sequence[int], lease_seconds: float
) -> list[Any]:
    """Take those of ``job_ids`` that are queued and due for ``worker``, in the caller's
    transaction, in queue order (a job already running, ended or not due is left alone:
    a message delivered twice claims nothing the second time)."""
    if not job_ids:
        return []
    params = {**_taking(worker, utcnow(), lease_seconds), "b_ids": list(job_ids)}
    rows = conn.execute(_CLAIM_IDS[conn.dialect.name == "postgresql"], params).all()
    return sorted(rows, key=lambda r: (r.priority, r.id))


def claim(
    catalog: Catalog,
    worker: str,
    limit: int,
    lease_seconds: float,
    *,
    source_ids: Sequence[int] | None = None,
) -> list[Any]:
    """Atomically take up to ``limit`` due jobs for ``worker`` (only jobs of
    ``source_ids`` when given: ``sync --process`` runs its own sources' jobs)."""
    if limit <= 0:
        return []
    now = utcnow()
    if source_ids is None:
        params = {**_taking(worker, now, lease_seconds), "b_limit": limit}
        with catalog.write() as conn:
            rows = conn.execute(_CLAIM[conn.dialect.name == "postgresql"], params).all()
        return sorted(rows, key=lambda r: (r.priority, r.id))
    with catalog.write() as conn:
        due = (
            select(JOBS.c.id)
            .where(JOBS.c.state == JobStatus.QUEUED.value, JOBS.c.run_after <= now)
            .order_by(JOBS.c.priority, JOBS.c.id)
            .limit(limit)
        )
        if source_ids is not None:
            due = due.where(of_sources(source_ids))
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        stmt = (
            update(JOBS)
            .where(JOBS.c.id.in_(due.scalar_subquery()))
            .values(**running(worker, now, lease_seconds))
            .returning(*JOBS.c)
        )
        return sorted(conn.execute(stmt).all(), key=lambda r: (r.priority, r.id))


def heartbeat(
    catalog: Catalog, worker: str, job_ids: Sequence[int], lease_seconds: float
) -> set[int]:
    """Extend the leases of a worker's running jobs; returns ids whose cancel was asked."""
    if not job_ids:
        return set()
    with catalog.write() as conn:
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(list(job_ids)), JOBS.c.worker == worker)
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        )
        rows = conn.execute(
            select(JOBS.c.id).where(JOBS.c.id.in_(list(job_ids)), JOBS.c.cancel_requested)
        )
        return {r[0] for r in rows}


def cancel_requested(catalog: Catalog, job_ids: Sequence[int]) -> set[int]:
    """Which of these jobs someone asked to cancel (a read: cheap enough to poll often)."""
    if not job_ids:
        return set()
    with catalog.read() as conn:
        rows = conn.execute(
            select(JOBS.c.id).where(JOBS.c.id.in_(list(job_ids)), JOBS.c.cancel_requested)
        )
        return {r[0] for r in rows}


def report(
    catalog: Catalog, job_id: int, progress: float, message: str | None, log_tail: str
) -> None:
    """Write a running job's progress, message and log tail."""
    with catalog.write() as conn:
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.state == JobStatus.RUNNING.value)
            .values(progress=progress, message=redact_optional(message), log_tail=_tail(log_tail))
        )


def finish(
    catalog: Catalog,
    job_id: int,
    worker: str,
    state: JobStatus,
    *,
    message: str | None = None,
    error: str | None = None,
    log_tail: str | None = None,
    conn: Connection | None = None,
) -> bool:
    """End a job this worker holds. False if the job was taken away (lease lost).
    With ``conn``, in the caller's transaction (so a job's results and its end commit
    together)."""
    values: dict[str, Any] = {
        "state": state.value,
        "active_key": None,
        "finished_at": utcnow(),
        "lease_expires_at": None,
        "message": redact_optional(message),
        "error": redact_optional(error),
    }
    if state is JobStatus.SUCCESS:
        values["progress"] = 100.0
    if log_tail is not None:
        values["log_tail"] = _tail(log_tail)
    stmt = (
        update(JOBS)
        .where(
            JOBS.c.id == job_id,
            JOBS.c.worker == worker,
            JOBS.c.state == JobStatus.RUNNING.value,
        )
        .values(**values)
    )
    if conn is not None:
        return _end(conn, stmt, job_id, state, error, log_tail)
    with catalog.write() as own:
        return _end(own, stmt, job_id, state, error, log_tail)


#: A successful job's end (``b_now``: when), beside its log tail.
_SUCCEEDED: dict[str, Any] = {
    "state": JobStatus.SUCCESS.value,
    "active_key": None,
    "finished_at": bindparam("b_now"),
    "lease_expires_at": None,
    "message": "done",
    "error": None,
    "progress": 100.0,
}


def _finish_statement() -> Any:
    return (
        update(JOBS)
        .where(
            JOBS.c.id == bindparam("b_id"),
            JOBS.c.worker == bindparam("b_worker"),
            JOBS.c.state == JobStatus.RUNNING.value,
        )
        .values(**_SUCCEEDED, log_tail=bindparam("b_tail"))
    )


def rows_of(**columns: Any) -> Any:
    """PostgreSQL: ``unnest`` of array parameters as a table ``v`` with these columns
    (name: SQL type), one bind parameter ``b_<name>s`` each: a batch's rows written by
    one ``UPDATE ... FROM`` (one statement for the server to run, not one per row)."""
    arrays = [bindparam(f"b_{name}s", type_=postgresql.ARRAY(t)) for name, t in columns.items()]
    names = [column(name, t) for name, t in columns.items()]
    return func.unnest(*arrays).table_valued(*names).render_derived(name="v")


def _pg_finish_statement() -> Any:
    v = rows_of(id=Integer, tail=Text)
    return (
        update(JOBS)
        .where(
            JOBS.c.id == v.c.id,
            JOBS.c.worker == bindparam("b_worker"),
            JOBS.c.state == JobStatus.RUNNING.value,
        )
        .values(**_SUCCEEDED, log_tail=v.c.tail)
    )


_FINISH_SUCCESS = _finish_statement()
_PG_FINISH_SUCCESS = _pg_finish_statement()


def held(conn: Connection, worker: str, job_ids: Sequence[int]) -> set[int]:
    """Which of these jobs ``worker`` still holds (running under its name), in the
    caller's write transaction (PostgreSQL: their rows stay locked until it ends)."""
    if not job_ids:
        return set()
    params = {"b_ids": list(job_ids), "b_worker": worker}
    return {r[0] for r in conn.execute(_HELD[conn.dialect.name == "postgresql"], params)}


def _held_statement(postgres: bool) -> Any:
    query = select(JOBS.c.id).where(
        among(JOBS.c.id, "b_ids", postgres),
        JOBS.c.worker == bindparam("b_worker"),
        JOBS.c.state == JobStatus.RUNNING.value,
    )
    return query.with_for_update() if postgres else query


_HELD = {False: _held_statement(False), True: _held_statement(True)}


def finish_successes(conn: Connection, worker: str, ended: Sequence[tuple[int, str]]) -> None:
    """End several jobs this worker holds as successful, in the caller's transaction (one
    ``executemany``): ``ended`` holds (job id, log tail) pairs; see :func:`held` for
    which of them were still this worker's."""
    if not ended:
        return
    now = utcnow()
    if conn.dialect.name == "postgresql":
        ids, tails = [i for i, _ in ended], [_tail(t) for _, t in ended]
        params = {"b_ids": ids, "b_tails": tails, "b_worker": worker, "b_now": now}
        conn.execute(_PG_FINISH_SUCCESS, params)
        return
    conn.execute(
        _FINISH_SUCCESS,
        [{"b_id": i, "b_worker": worker, "b_now": now, "b_tail": _tail(t)} for i, t in ended],
    )


def _end(
    conn: Connection,
    stmt: Any,
    job_id: int,
    state: JobStatus,
    error: str | None,
    log_tail: str | None,
) -> bool:
    """Run a job's final update; a job that ends in error for good (every final failure
    comes through here or :func:`reap`) writes its ``job.failed`` in the same transaction."""
    if conn.execute(stmt).rowcount != 1:
        return False
    if state is JobStatus.ERROR:
        _notify_failed(conn, job_id, error, log_tail)
    return True


def _notify_failed(conn: Connection, job_id: int, error: str | None, log_tail: str | None) -> None:
    job = conn.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
    if job is not None:
        outbox.job_failed(conn, job, error, log_tail)


def release(catalog: Catalog, job_id: int, worker: str) -> bool:
    """Give back a job this worker holds but will not finish (it is shutting down): queued
    again at once, and the attempt it used is not counted."""
    return _give_back(catalog, [job_id], worker, message="queued again: its worker stopped") == 1


def release_unstarted(catalog: Catalog, job_ids: Sequence[int], worker: str) -> int:
    """Give back jobs this worker claimed ahead but did not start (its threads stayed busy
    longer than it expected): queued again at once, their attempt not counted, so another
    worker takes them. Returns how many went back."""
    if not job_ids:
        return 0
    return _give_back(catalog, job_ids, worker, dispatched_at=None)


def _give_back(catalog: Catalog, job_ids: Sequence[int], worker: str, **values: Any) -> int:
    """Queue again the jobs of ``job_ids`` this worker holds, their attempt not counted."""
    with catalog.write() as conn:
        result = conn.execute(
            update(JOBS)
            .where(
                JOBS.c.id.in_(list(job_ids)),
                JOBS.c.worker == worker,
                JOBS.c.state == JobStatus.RUNNING.value,
            )
            .values(
                state=JobStatus.QUEUED.value,
                attempts=func.max(JOBS.c.attempts - 1, 0)
                if conn.dialect.name == "sqlite"
                else func.greatest(JOBS.c.attempts - 1, 0),
                run_after=utcnow(),
                lease_expires_at=None,
                worker=None,
                started_at=None,
                **values,
            )
        )
    return int(result.rowcount)


def retry_later(
    catalog: Catalog, job: Any, worker: str, reason: str, policy: RetryPolicy, log_tail: str
) -> bool:
    """After a transient failure: queue again with backoff, or give up at max attempts.
    Returns True if the job will run again."""
    if job.attempts >= job.max_attempts:
        finish(
            catalog,
            job.id,
            worker,
            JobStatus.ERROR,
            error=f"{reason} (gave up after {job.attempts} attempts)",
            log_tail=log_tail,
        )
        return False
    with catalog.write() as conn:
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id == job.id, JOBS.c.worker == worker)
            .values(
                state=JobStatus.QUEUED.value,
                run_after=utcnow() + timedelta(seconds=policy.delay(job.attempts)),
                lease_expires_at=None,
                worker=None,
                message=redact(f"retrying: {reason}"),
                log_tail=_tail(log_tail),
            )
        )
    return True


def reap(catalog: Catalog, policy: RetryPolicy) -> int:
    """Running jobs whose worker is gone (lease expired, or process dead on this host) are
    queued again, or end in error once they used up their attempts."""
    now = utcnow()
    with catalog.write() as conn:
        rows = conn.execute(
            select(
                JOBS.c.id,
                JOBS.c.worker,
                JOBS.c.attempts,
                JOBS.c.max_attempts,
                JOBS.c.lease_expires_at,
            ).where(JOBS.c.state == JobStatus.RUNNING.value)
        ).all()
        lost = [
            r
            for r in rows
            if (r.lease_expires_at is not None and r.lease_expires_at < now)
            or (r.worker is not None and owner_is_dead(r.worker))
        ]
        for r in lost:
            if r.attempts >= r.max_attempts:
                values: dict[str, Any] = {
                    "state": JobStatus.ERROR.value,
                    "active_key": None,
                    "finished_at": now,
                    "error": f"worker {r.worker} was lost (gave up after {r.attempts} attempts)",
                }
            else:
                values = {
                    "state": JobStatus.QUEUED.value,
                    "run_after": now + timedelta(seconds=policy.delay(r.attempts)),
                    "message": f"retrying: worker {r.worker} was lost",
                }
            result = conn.execute(
                update(JOBS)
                .where(
                    JOBS.c.id == r.id,
                    JOBS.c.state == JobStatus.RUNNING.value,
                    JOBS.c.worker == r.worker,
                )
                .values(lease_expires_at=None, worker=None, **values)
            )
            if result.rowcount == 1 and values["state"] == JobStatus.ERROR.value:
                _notify_failed(conn, r.id, values["error"], None)
    return len(lost)


def get(catalog: Catalog, job_id: int) -> Any:
    with catalog.read() as conn:
        row = conn.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
    if row is None:
        raise NotFoundError(f"no job {job_id} (see: mediamirror jobs list)")
    return row


def cancel(catalog: Catalog, job_id: int) -> str:
    """Cancel a queued job at once; ask a running one to stop. Returns the new state."""
    job = get(catalog, job_id)
    with catalog.write() as conn:
        if job.state == JobStatus.QUEUED.value:
            conn.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.state == JobStatus.QUEUED.value)
                .values(
                    state=JobStatus.CANCELED.value,
                    active_key=None,
                    finished_at=utcnow(),
                    error="canceled",
                )
            )
            return JobStatus.CANCELED.value
        if job.state == JobStatus.RUNNING.value:
            conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(cancel_requested=True))
            return "cancel requested"
    raise JobError(f"job {job_id} already ended ({job.state}); nothing to cancel")


def retry(catalog: Catalog, job_id: int) -> None:
    """Queue a failed or canceled job again with a fresh set of attempts."""
    job = get(catalog, job_id)
    if JobStatus(job.state).active:
        raise JobError(f"job {job_id} is {job.state}; only ended jobs can be retried")
    key = f"{job.processor}:{job.target_type}:{job.target_id}:{job.input_version}"
    with catalog.write() as conn:
        other = conn.execute(select(JOBS.c.id).where(JOBS.c.active_key == key)).first()
        if other is not None:
            raise JobError(f"the same work is already queued as job {other[0]}")
        conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(active_key=key, **requeued()))


def requeued() -> dict[str, Any]:
    """The values that queue an ended job again with a fresh set of attempts (its
    ``active_key`` is set by the caller)."""
    return {
        "state": JobStatus.QUEUED.value,
        "attempts": 0,
        "progress": 0.0,
        "error": None,
        "message": None,
        "cancel_requested": False,
        "run_after": utcnow(),
        "started_at": None,
        "finished_at": None,
        "worker": None,
        "dispatched_at": None,  # celery executor: send it again at once
    }


def listing(
    catalog: Catalog,
    *,
    states: Sequence[str] = (),
    processor: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Any]:
    ids = select(JOBS.c.id).order_by(JOBS.c.id.desc()).limit(limit).offset(offset)
    if states:
        ids = ids.where(JOBS.c.state.in_(list(states)))
    if processor:
        ids = ids.where(JOBS.c.processor == processor)
    # The page's ids from ix_jobs_state_id (state, id) alone, then only their rows: skipped
    # OFFSET rows are never read, and PostgreSQL no longer walks the primary key backwards
    # through every job of the other states.
    page = ids.subquery()
    query = select(JOBS).join(page, page.c.id == JOBS.c.id).order_by(JOBS.c.id.desc())
    with catalog.read() as conn:
        return list(conn.execute(query).all())


def counts(catalog: Catalog) -> dict[str, int]:
    """Jobs per state (states with none left out). One count per state, each a range of
    ix_jobs_state_id, in one statement: no hash aggregate over every job row."""
    states = [s.value for s in JobStatus]
    per_state = (
        select(func.count()).where(JOBS.c.state == s).scalar_subquery().label(s) for s in states
    )
    with catalog.read() as conn:
        row = conn.execute(select(*per_state)).one()
    return {state: int(n) for state, n in zip(states, row, strict=True) if n}


def pending(
    catalog: Catalog, *, source_ids: Sequence[int] | None = None
) -> tuple[int, float | None]:
    """Number of queued jobs (of ``source_ids`` when given) and seconds until the next
    one is due (None if none)."""
    now = utcnow()
    queued = JOBS.c.state == JobStatus.QUEUED.value
    if source_ids is not None:
        queued = and_(queued, of_sources(source_ids))
    with catalog.read() as conn:
        active = conn.execute(select(func.count()).where(queued)).scalar_one()
        nxt = conn.execute(select(func.min(JOBS.c.run_after)).where(queued)).scalar_one()
    if nxt is None:
        return int(active), None
    if nxt.tzinfo is None:
        from datetime import UTC

        nxt = nxt.replace(tzinfo=UTC)
    return int(active), max(0.0, (nxt - now).total_seconds())
