"""Record first, apply in batches.

A push (or an SQS message) is answered once its events are *recorded*: one INSERT
transaction puts a ``pending`` row in ``events`` per event and source it is about, with
what applying it needs (action, sequencer, size, etag, time); events that need no work
(tests, rejected records, keys no source mirrors or whose filters skip them) get their
final outcome in the same INSERT. Bucket senders need "received", not "applied".

One *events applier* across every service process on the catalog (the role
``events-applier``, :mod:`mediamirror.catalog.singleton`) drains the pending rows: per
source, the oldest :attr:`Settings.events_batch_size` in one transaction
(:mod:`mediamirror.events.batch`). A push recorded in its own process wakes it at once;
pushes recorded by other processes are found by polling (an indexed query on the
pending rows). While events keep coming, drains start at most every
:data:`BATCH_SECONDS`: a batch costs about as much as a few of its events, so letting
the next one gather for a few tens of milliseconds divides the applier's work per
event. A process killed between record and apply loses nothing: the rows stay
``pending`` and the next applier (this process restarted, or another) applies them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from mediamirror.catalog.models import utcnow
from mediamirror.catalog.singleton import Singleton
from mediamirror.events.apply import EventApplier, Result, route_each
from mediamirror.events.batch import BatchApplier, pending_of
from mediamirror.events.model import ObjectEvent, Outcome
from mediamirror.events.record import event_row
from mediamirror.events.routing import Route
from mediamirror.web.models import EVENTS

log = logging.getLogger(__name__)
LEASE = "events-applier"
#: How often the applier looks for events recorded by other service processes.
POLL_SECONDS = 0.2
#: How long the applier waits, once woken, for more pushes to join the batch.
GATHER_SECONDS = 0.01
#: Shortest time from the start of a drain that applied events to the start of the next.
BATCH_SECONDS = 0.04
#: Longest wait before a source whose store could not be read is tried again.
_MAX_BACKOFF = 30.0


_RECORD = insert(EVENTS).returning(EVENTS.c.id, sort_by_parameter_order=True)


def route_events(
    events: Sequence[ObjectEvent],
    find_routes: Callable[[bool], list[Route]],
    sender: Route | None = None,
) -> list[Result]:
    """What each event is about: a ``pending`` result per source it must be applied to,
    or its final outcome when there is nothing to apply."""

    def pending(route: Route, ev: ObjectEvent) -> Result:
        if not route.wanted(ev.key) and not route.is_marker(ev.key):
            return Result(ev, Outcome.IGNORED, route.source, "skipped by the source's filters")
        return Result(ev, Outcome.PENDING, route.source)

    return route_each(events, find_routes, sender, pending)


def record(
    applier: EventApplier,
    events: Sequence[ObjectEvent],
    find_routes: Callable[[bool], list[Route]],
    sender: Route | None = None,
    *,
    check: Callable[[Connection], None] | None = None,
) -> list[Result]:
    """Record a delivery's events in one transaction and wake the applier. ``check``
    runs first in that transaction (the push token still the sender's): what it raises
    rolls the delivery back."""
    results = route_events(events, find_routes, sender)
    if results:
        with applier.catalog.write() as conn:
            if check is not None:
                check(conn)
            ids = conn.execute(_RECORD, [event_row(r) for r in results]).scalars().all()
        for result, event_id in zip(results, ids, strict=True):
            result.event_id = event_id
    elif check is not None:
        with applier.catalog.read() as conn:
            check(conn)
    if any(r.outcome is Outcome.PENDING for r in results):
        applier.wake.set()
    return results


def _pending(of_source: Any, *conds: Any) -> Any:
    """The oldest pending events of a source (with ``conds``), at most ``:limit``."""
    pending = EVENTS.c.outcome == Outcome.PENDING.value
    query = select(EVENTS).where(of_source, pending, *conds)
    return query.order_by(EVENTS.c.id).limit(bindparam("limit"))


# The applier's reads, built once; with ``delay``, only events received before ``:cutoff``.
_RECEIVED = EVENTS.c.received_at <= bindparam("cutoff")
_SOURCES = {
    delayed: select(EVENTS.c.source_id)
    .where(EVENTS.c.outcome == Outcome.PENDING.value, *([_RECEIVED] if delayed else []))
    .distinct()
    for delayed in (False, True)
}
_OF_SOURCE = {
    delayed: _pending(
        EVENTS.c.source_id == bindparam("source_id"), *([_RECEIVED] if delayed else [])
    )
    for delayed in (False, True)
}


def drain(
    applier: EventApplier,
    batch: BatchApplier,
    limit: int,
    *,
    skip: set[int] | None = None,
    failed: set[int] | None = None,
    delay: float = 0.0,
) -> int:
    """Apply what is pending, one transaction per source (at most ``limit`` events
    each), leaving the sources in ``skip`` and events received less than ``delay``
    seconds ago for later. Returns how many events got their final outcome; sources
    with events left pending (their store could not be read) are added to ``failed``."""
    delayed = bool(delay)
    params: dict[str, Any] = {"limit": limit}
    if delayed:
        params["cutoff"] = utcnow() - timedelta(seconds=delay)
    batches: dict[Any, Sequence[Any]] = {}
    with applier.catalog.read() as conn:
        # One read for every source's batch: only this applier changes pending rows.
        for source_id in conn.execute(_SOURCES[delayed], params).scalars():
            if source_id in (skip or ()):
                continue
            if source_id is None:
                query = _pending(EVENTS.c.source_id.is_(None), *([_RECEIVED] if delayed else []))
                batches[None] = conn.execute(query, params).all()
            else:
                of_source = {**params, "source_id": source_id}
                batches[source_id] = conn.execute(_OF_SOURCE[delayed], of_source).all()
    sources = list(batches)
    if not sources:
        return 0
    routes = {r.id: r for r in applier.sources.routes()}
    if any(s not in routes for s in sources):
        routes = {r.id: r for r in applier.sources.routes(fresh=True)}
    done = 0
    for source_id in sources:
        route = routes.get(source_id) if source_id is not None else None
        rows = batches[source_id]
        if route is None:
            done += _orphaned(applier, [r.id for r in rows])
            continue
        events = [pending_of(r) for r in rows]
        results = batch.apply(route, events)
        done += len(results)
        if len(results) < len(events) and failed is not None:
            failed.add(source_id)
    return done


def _orphaned(applier: EventApplier, ids: list[int]) -> int:
    """Pending events of a source removed since they were recorded."""
    if ids:
        with applier.catalog.write() as conn:
            conn.execute(
                update(EVENTS)
                .where(EVENTS.c.id.in_(ids))
                .values(outcome=Outcome.IGNORED.value, detail="the source was removed")
            )
    return len(ids)


class EventsApplier:
    """The thread that drains recorded events while this process holds the role."""

    def __init__(self, applier: EventApplier, stop: threading.Event) -> None:
        settings = applier.services.settings
        self.applier = applier
        self.batch = BatchApplier(applier)
        self.stop = stop
        self.limit = max(1, settings.events_batch_size)
        self.delay = max(0.0, float(settings.events_apply_delay_seconds))
        self.role = Singleton(applier.catalog, LEASE, stop=stop)
        self.thread = threading.Thread(target=self._run, name="mediamirror-events-applier")
        self.thread.daemon = True
        #: source id -> (monotonic time it may be tried again, failures in a row)
        self._backoff: dict[Any, tuple[float, int]] = {}

    def start(self) -> None:
        self.role.thread.start()
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.role.wait_held(timeout=1.0):
                continue
            started = time.monotonic()
            try:
                done = self._drain_once()
            except Exception:  # a catalog hiccup must not end the loop
                log.exception("events applier failed; retrying")
                self.stop.wait(1.0)
                continue
            if done:
                # Events keep coming: let the next batch gather for a few tens of
                # milliseconds. A batch costs about as much as a few of its events, so
                # bigger batches cost far less CPU per event (recorded events are safe).
                self.stop.wait(max(0.0, started + BATCH_SECONDS - time.monotonic()))
            elif self.applier.wake.wait(POLL_SECONDS):
                # Let the pushes arriving with this one join its batch: a few
                # milliseconds of latency for far fewer transactions under load.
                self.stop.wait(GATHER_SECONDS)
            self.applier.wake.clear()

    def _drain_once(self) -> int:
        now = time.monotonic()
        skip = {s for s, (until, _) in self._backoff.items() if until > now}
        failed: set[int] = set()
        done = drain(
            self.applier, self.batch, self.limit, skip=skip, failed=failed, delay=self.delay
        )
        for source in list(self._backoff):
            if source not in failed and source not in skip:
                del self._backoff[source]
        for source in failed:
            failures = self._backoff.get(source, (0.0, 0))[1] + 1
            self._backoff[source] = (now + min(_MAX_BACKOFF, 2.0**failures), failures)
        return done
