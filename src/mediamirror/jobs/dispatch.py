"""Celery executor, catalog side: who takes a job, what is sent to the broker, and when.

The job row is the truth; a message only says "job N may be due". So:

- a worker **claims the row by id** (:func:`claim_one`) before running it: a message that
  arrives twice, late, or for a job that was canceled meanwhile finds nothing to claim and
  is dropped;
- the **dispatcher** (one at a time across every process, by the catalog lease
  :data:`LEASE`) sends queued job ids in windows: per broker queue, at most
  ``WINDOW_FACTOR`` times the slots of the live workers consuming it are sent and not yet
  claimed (``dispatched_at`` set, state still queued), so 100,000 queued jobs never mean
  100,000 messages; a worker that claims a job sends the next one of its queue itself, so
  the window stays full without waiting for the dispatcher's next round;
- a queued job whose message was sent longer than ``celery_redispatch_seconds`` ago is
  sent again (the broker lost it); jobs whose worker died are taken back by the local
  executor's reaper (:func:`mediamirror.jobs.queue.reap`), run by the dispatcher too.

Live workers register themselves as leases named ``celery-worker:<node>:<slots>:<queues>``
in the same table as every other lease: renewed while the worker runs, gone when it stops,
expired when it died.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.leases import acquire, new_owner, release
from mediamirror.catalog.models import LEASES, utcnow
from mediamirror.errors import ConflictError
from mediamirror.jobs import queue
from mediamirror.jobs.model import JOBS, JobStatus
from mediamirror.jobs.routing import DEFAULT_QUEUE, queues_of
from mediamirror.services import Services

log = logging.getLogger(__name__)

LEASE = "celery-dispatcher"
WORKER_PREFIX = "celery-worker:"
WINDOW_FACTOR = 2
#: A queue deeper than this many windows is sent several job ids per message...
DEEP_FACTOR = 4
#: ...at most this many.
MAX_PER_MESSAGE = 256

#: Sends job ids to one broker queue, so many per message (the celery executor's ``send``).
Send = Callable[[str, Sequence[int], int], None]


@dataclass(frozen=True)
class Refill:
    """Which queue a claimed job's place in the window goes to (see :func:`claim_one`)."""

    name: str
    routes: dict[str, str]
    redispatch_seconds: float


def claim_one(
    catalog: Catalog,
    worker: str,
    job_id: int,
    lease_seconds: float,
    refill: Refill | None = None,
) -> tuple[Any, list[int]]:
    """Take job ``job_id`` for ``worker`` if it is queued and due (else None), and with
    ``refill`` record the next job of that queue as sent, in the same transaction (one
    commit per job, not two): the caller sends the ids returned."""
    with catalog.write() as conn:
        jobs = queue.claim_ids_in(conn, worker, [job_id], lease_seconds)
        if not jobs or refill is None:
            return (jobs[0] if jobs else None), []
        return jobs[0], _mark_in(conn, refill.name, refill.routes, 1, refill.redispatch_seconds)


def claim_message(
    catalog: Catalog,
    worker: str,
    job_ids: Sequence[int],
    lease_seconds: float,
    refill: Refill | None = None,
) -> tuple[list[Any], list[int], dict[int, Any]]:
    """:func:`claim_one` for the ids of one message, in one transaction: the jobs among
    them that are queued and due (in queue order), with ``refill`` as many next jobs of
    the queue recorded as sent, and the claimed jobs' datasets. A message delivered
    twice finds nothing to claim. The statements are the local executor's (prebuilt,
    :func:`mediamirror.jobs.queue.claim_ids_in`, :func:`load_datasets_in`)."""
    from mediamirror.jobs.completions import load_datasets_in

    with catalog.write() as conn:
        jobs = queue.claim_ids_in(conn, worker, job_ids, lease_seconds)
        if not jobs:
            return [], [], {}
        following: list[int] = []
        if refill is not None:
            following = _mark_in(
                conn, refill.name, refill.routes, len(jobs), refill.redispatch_seconds
            )
        folders = [j.target_id for j in jobs if j.target_type == "folder"]
        return jobs, following, load_datasets_in(conn, folders)


def per_message(queued: int, window: int) -> int:
    """Job ids per message: one while the queue is shallow; while it is deep (more than
    ``DEEP_FACTOR`` windows of queued jobs), up to ``MAX_PER_MESSAGE``, so a worker's
    hand-off cost per message is shared by several jobs."""
    if window <= 0:
        return 1
    return max(1, min(MAX_PER_MESSAGE, queued // (DEEP_FACTOR * window)))


def _of_queue(name: str, routes: dict[str, str]) -> ColumnElement[bool]:
    """Jobs whose processor is routed to queue ``name``."""
    mine = [p for p, q in routes.items() if q == name]
    if name == DEFAULT_QUEUE:
        others = [p for p, q in routes.items() if q != name]
        return JOBS.c.processor.not_in(others) if others else JOBS.c.id.is_not(None)
    return JOBS.c.processor.in_(mine)


def mark(
    catalog: Catalog, name: str, routes: dict[str, str], limit: int, redispatch_seconds: float
) -> list[int]:
    """Take up to ``limit`` due jobs of queue ``name`` not sent yet (or sent longer than
    ``redispatch_seconds`` ago) and record them as sent now; returns their ids."""
    if limit <= 0:
        return []
    with catalog.write() as conn:
        return _mark_in(conn, name, routes, limit, redispatch_seconds)


def _mark_in(
    conn: Connection, name: str, routes: dict[str, str], limit: int, redispatch_seconds: float
) -> list[int]:
    now = utcnow()
    statement = _mark_statement(
        conn.dialect.name == "postgresql", name, tuple(sorted(routes.items()))
    )
    params = {
        "b_now": now,
        "b_stale": now - timedelta(seconds=redispatch_seconds),
        "b_limit": limit,
    }
    rows = conn.execute(statement, params).all()
    return [r.id for r in sorted(rows, key=lambda r: (r.priority, r.id))]


@functools.lru_cache(maxsize=64)
def _mark_statement(postgres: bool, name: str, routes: tuple[tuple[str, str], ...]) -> Any:
    """Record up to ``b_limit`` due jobs of queue ``name`` not sent since ``b_stale`` as
    sent at ``b_now``: built once per queue (it runs with every claimed message)."""
    due = (
        select(JOBS.c.id)
        .where(
            JOBS.c.state == JobStatus.QUEUED.value,
            JOBS.c.run_after <= bindparam("b_now"),
            or_(JOBS.c.dispatched_at.is_(None), JOBS.c.dispatched_at < bindparam("b_stale")),
            _of_queue(name, dict(routes)),
        )
        .order_by(JOBS.c.priority, JOBS.c.id)
        .limit(bindparam("b_limit", type_=Integer))
    )
    if postgres:
        due = due.with_for_update(skip_locked=True)
    return (
        update(JOBS)
        .where(JOBS.c.id.in_(due.scalar_subquery()))
        .values(dispatched_at=bindparam("b_now"))
        .returning(JOBS.c.id, JOBS.c.priority)
    )


def unmark(catalog: Catalog, job_ids: Sequence[int]) -> None:
    """The broker did not take these: send them again at the next round."""
    if not job_ids:
        return
    with catalog.write() as conn:
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(list(job_ids)), JOBS.c.state == JobStatus.QUEUED.value)
            .values(dispatched_at=None)
        )


def depths(catalog: Catalog, routes: dict[str, str], redispatch_seconds: float) -> dict[str, Any]:
    """Per queue: jobs queued (due or not) and in flight (sent, not yet claimed)."""
    stale = utcnow() - timedelta(seconds=redispatch_seconds)
    sent = and_(JOBS.c.dispatched_at.is_not(None), JOBS.c.dispatched_at >= stale)
    with catalog.read() as conn:
        rows = conn.execute(
            select(
                JOBS.c.processor,
                func.count(),
                func.count().filter(sent),
            )
            .where(JOBS.c.state == JobStatus.QUEUED.value)
            .group_by(JOBS.c.processor)
        ).all()
    out: dict[str, Any] = {}
    for processor, queued, flying in rows:
        entry = out.setdefault(routes.get(processor, DEFAULT_QUEUE), {"queued": 0, "in_flight": 0})
        entry["queued"] += int(queued)
        entry["in_flight"] += int(flying)
    return out


# -- live workers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerInfo:
    """A Celery worker as the dispatcher sees it: its node name, slots and queues."""

    node: str
    slots: int
    queues: tuple[str, ...]

    @property
    def lease(self) -> str:
        return f"{WORKER_PREFIX}{self.node}:{self.slots}:{','.join(self.queues)}"

    @classmethod
    def parse(cls, name: str) -> WorkerInfo | None:
        node, _, rest = name.removeprefix(WORKER_PREFIX).rpartition(":")
        node, _, slots = node.rpartition(":")
        if not node or not slots.isdigit():
            return None
        return cls(node, int(slots), tuple(q for q in rest.split(",") if q))


def live_workers(catalog: Catalog) -> list[tuple[WorkerInfo, str]]:
    """Registered workers whose lease has not expired, with their owners."""
    with catalog.read() as conn:
        rows = conn.execute(
            select(LEASES.c.name, LEASES.c.owner).where(
                LEASES.c.name.startswith(WORKER_PREFIX), LEASES.c.expires_at > utcnow()
            )
        ).all()
    found = [(WorkerInfo.parse(r.name), r.owner) for r in rows]
    return [(info, owner) for info, owner in found if info is not None]


def capacity(workers: Sequence[WorkerInfo]) -> dict[str, int]:
    """Slots per queue over the live workers."""
    slots: dict[str, int] = {}
    for w in workers:
        for name in w.queues:
            slots[name] = slots.get(name, 0) + w.slots
    return slots


def forget_expired_workers(catalog: Catalog) -> None:
    with catalog.write() as conn:
        conn.execute(
            delete(LEASES).where(
                LEASES.c.name.startswith(WORKER_PREFIX), LEASES.c.expires_at <= utcnow()
            )
        )


def start(services: Services) -> Any:
    """``serve``'s starter: a dispatcher thread when the executor is celery (Celery is
    imported only then); a handle with nothing running otherwise."""
    if services.settings.executor != "celery":
        return _Idle(threading.Event(), None)
    from mediamirror.jobs.executors import celery

    return celery.start(services)


@dataclass
class _Idle:
    stop: threading.Event
    thread: threading.Thread | None


# -- the dispatcher -------------------------------------------------------------------------


@dataclass
class Dispatcher:
    """Sends queued job ids in windows, re-sends lost ones and reaps expired leases,
    while it holds :data:`LEASE`; registers ``worker`` (its own Celery worker) if given."""

    services: Services
    send: Send
    worker: WorkerInfo | None = None
    interval: float = 0.25
    owner: str = field(default_factory=new_owner)
    holding: bool = False
    sent: int = 0

    @property
    def ttl(self) -> float:
        return float(self.services.settings.job_lease_seconds)

    @property
    def reap_interval(self) -> float:
        """Jobs of a dead worker are back within about a lease time."""
        return min(5.0, self.ttl / 2)

    def tick(self) -> int:
        """One round of sending; returns how many ids were sent."""
        settings = self.services.settings
        catalog = self.services.catalog
        routes = queues_of(settings)
        flying = depths(catalog, routes, settings.celery_redispatch_seconds)
        sent = 0
        for name, slots in capacity([w for w, _ in live_workers(catalog)]).items():
            depth = flying.get(name, {})
            window = WINDOW_FACTOR * slots
            each = per_message(depth.get("queued", 0), window)
            room = window * each - depth.get("in_flight", 0)
            ids = mark(catalog, name, routes, room, settings.celery_redispatch_seconds)
            sent += self._send(name, ids, each)
        self.sent += sent
        return sent

    def _send(self, name: str, ids: Sequence[int], each: int = 1) -> int:
        if not ids:
            return 0
        try:
            self.send(name, ids, each)
        except Exception as exc:  # the broker is down: keep the ids for the next round
            log.warning("could not send %d job(s) to queue %s: %s", len(ids), name, exc)
            unmark(self.services.catalog, ids)
            return 0
        return len(ids)

    def _hold(self) -> bool:
        """Take or renew the dispatcher lease; False while another process holds it."""
        try:
            acquire(self.services.catalog, LEASE, self.owner, self.ttl)
        except ConflictError:
            self.holding = False
            return False
        if not self.holding:
            log.info("dispatching jobs to the Celery broker from this process")
        self.holding = True
        return True

    def _register(self) -> None:
        if self.worker is None:
            return
        try:
            acquire(self.services.catalog, self.worker.lease, self.owner, self.ttl)
        except ConflictError:  # an earlier run of this node, not yet expired
            log.warning("worker %s is registered by another process", self.worker.node)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: register, and dispatch while holding the lease."""
        last_renew = last_reap = float("-inf")
        try:
            while not stop.is_set():
                now = time.monotonic()
                try:
                    if now - last_renew >= self.ttl / 3:
                        self._register()
                        self._hold()
                        last_renew = now
                    if self.holding and now - last_reap >= self.reap_interval:
                        queue.reap(self.services.catalog, self.services.retry_policy)
                        forget_expired_workers(self.services.catalog)
                        last_reap = now
                    if self.holding:
                        self.tick()
                except Exception:  # a catalog hiccup must not end dispatching
                    log.exception("dispatcher round failed")
                    last_renew = float("-inf")
                stop.wait(self.interval)
        finally:
            self.close()

    def close(self) -> None:
        for name in ([LEASE] if self.holding else []) + (
            [self.worker.lease] if self.worker else []
        ):
            try:
                release(self.services.catalog, name, self.owner)
            except Exception:
                log.exception("could not release %s", name)
        self.holding = False
