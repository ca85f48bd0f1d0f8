"""Applying events to the catalog with the sync engine's rules.

For each event the key is read back from the source's store *the way a sync lists it*
(a one-key listing, so size, etag and modification time are exactly what the next sync
will compare), then the sync engine's own machinery adds, updates or marks the item
deleted and fixes its dataset. The store is the truth: a "created" event for an object
deleted since leaves it deleted, a "removed" event for an object written again keeps it.

Ordering: each item keeps the sequencer of the last event applied to it
(``items.sequencer``) and the *lifetime* it belongs to (``items.sequencer_lifetime``: the
version of the object the store showed then). Sequencers only order events of one
lifetime: an event is a ``duplicate`` (equal) or ``stale`` (older) only when the store
still shows that version, i.e. when applying it would change nothing. When the store
shows another version, the recorded sequencer says nothing about this event (the object
was deleted and written again, or a sender sent a number no real event will exceed):
the store is read again and decides. The check runs inside the write transaction (row
locked on PostgreSQL), so two deliveries racing cannot apply an older state last.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import DBAPIError

from mediamirror.catalog import retry
from mediamirror.catalog.leases import owner_is_dead
from mediamirror.catalog.meta import clear_marks
from mediamirror.catalog.models import FOLDERS, ITEMS, LEASES, Source, utcnow
from mediamirror.errors import CatalogError, MediamirrorError, NotFoundError
from mediamirror.events.model import Action, ObjectEvent, Outcome, compare_sequencers
from mediamirror.events.record import insert_events
from mediamirror.events.routing import Route, SourceTable, targets
from mediamirror.events.sns import SnsVerifier
from mediamirror.jobs.queue import JobSpec, enqueue
from mediamirror.processing.processors import for_dataset
from mediamirror.processing.processors.base import Dataset, ItemRef
from mediamirror.profiles import Profile, profile_of
from mediamirror.services import Services
from mediamirror.stores import ObjectInfo, open_store
from mediamirror.stores import ReadOnlyStore as _ReadOnly
from mediamirror.stores.timeouts import StoreTimeouts
from mediamirror.sync.engine import SyncEngine
from mediamirror.sync.layout import DatasetType

log = logging.getLogger(__name__)
_ATTEMPTS = 3
#: How often the store is read again when the recorded sequencer belongs to another
#: version of the object than the one just read (each read follows the commit of the
#: row that disagreed, so one is normally enough).
_REREADS = 2
#: ``items.sequencer_lifetime`` of a key the store does not hold.
ABSENT = "absent"
#: Drains that may fail to read an event's key from the store before it is ``error``.
_STORE_ATTEMPTS = 20


_SYNC_LEASE = select(LEASES.c.owner, LEASES.c.expires_at).where(LEASES.c.name == bindparam("name"))
#: The present items of some folders (datasets), built once.
_ITEMS_OF = (
    select(ITEMS.c.folder_id, ITEMS.c.id, ITEMS.c.key, ITEMS.c.name, ITEMS.c.size, ITEMS.c.etag)
    .where(ITEMS.c.folder_id.in_(bindparam("ids", expanding=True)), ITEMS.c.state == "present")
    .order_by(ITEMS.c.folder_id, ITEMS.c.key)
)


class _ReadAgain:
    """The verdict "read the store again, then decide"."""


READ_AGAIN = _ReadAgain()


@dataclass
class Result:
    """What one event did to one source."""

    event: ObjectEvent
    outcome: Outcome
    source: Source | None = None
    detail: str | None = None
    dataset: str | None = None
    jobs: list[int] = field(default_factory=list)
    #: dataset whose MarkForPostProcess is cleared once its jobs are queued
    queued_for: int | None = None
    #: the ``events`` row it was recorded as, once recorded
    event_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.event_id,
            "source": self.source.name if self.source is not None else None,
            "event_type": self.event.event_type,
            "bucket": self.event.bucket,
            "key": self.event.key,
            "sequencer": self.event.sequencer,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "dataset": self.dataset,
            "jobs": self.jobs,
        }


def _fingerprint(source: Source) -> tuple[Any, ...]:
    return (
        source.uid,  # a source re-added under a removed one's id is another source
        source.url,
        source.bucket,
        source.prefix,
        source.endpoint_url,
        source.region,
        source.profile,
        source.addressing,
        repr(sorted((source.credentials or {}).items())),
        source.mount,
        source.include,
        source.exclude,
        profile_of(source),  # its images mode decides where event keys are placed
    )


class _Runtime:
    """A source's store (one-key listings) and sync engine, reused across events."""

    def __init__(self, services: Services, route: Route) -> None:
        from mediamirror.sources import spec_of

        self.route = route
        self.fingerprint = _fingerprint(route.source)
        self.store: Any = open_store(
            spec_of(route.source),
            services.env,
            page_size=1,
            timeouts=StoreTimeouts.from_settings(services.settings),
        )
        self.engine = SyncEngine(
            services.catalog,
            route.source,
            _ReadOnly(self.store),
            large_image_bytes=services.settings.large_image_bytes,
            images=profile_of(route.source).images,
        )
        self.lock = threading.Lock()

    def probe(self, key: str) -> ObjectInfo | None:
        """The object as a sync would list it, or None if the store no longer has it."""
        if hasattr(self.store, "list_pages_under"):
            # The key itself is the first key of a listing under the prefix ``key``.
            pages = self.store.list_pages_under(key)
            try:
                first: list[ObjectInfo] = next(pages, [])
            finally:
                pages.close()
            return next((o for o in first if o.key == key), None)
        try:
            info: ObjectInfo = self.store.head(key)
        except NotFoundError:
            return None
        return info


def lifetime(info: ObjectInfo | None) -> str:
    """Which version of an object the store showed or an event described
    (``items.sequencer_lifetime``): its content, by etag and size, or ``absent``.

    Not its time: an event carries the time it was sent, a listing the object's
    ``LastModified``, and both must name the same version. A delete and a new write of
    the same key are two lifetimes (absent in between); the same bytes written again
    over the object are the same content, so older news about it changes nothing."""
    if info is None:
        return ABSENT
    raw = f"{info.etag}\n{info.size}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _verdict(
    event_seq: str | None, row: Any, life: str, may_read_again: bool
) -> Outcome | _ReadAgain | None:
    """Duplicate, stale, read the store again, or None: apply what was read."""
    if event_seq is None or row is None or row.sequencer is None:
        return None
    order = compare_sequencers(event_seq, row.sequencer)
    if order > 0:
        return None
    if row.sequencer_lifetime == life:
        # The store still shows the version that sequencer was recorded for: this
        # event can only be a redelivery or older news about it.
        return Outcome.DUPLICATE if order == 0 else Outcome.STALE
    # Recorded for another version. Either this read of the store is older than the one
    # that wrote the row (two deliveries racing), or the sequencers are not comparable
    # (a new lifetime, or a bogus number): a fresh read tells which.
    return READ_AGAIN if may_read_again else None


def _key_lock(source_id: int, key: str) -> int:
    """A signed 64-bit number naming one key of one source, for an advisory lock."""
    digest = hashlib.blake2b(f"{source_id}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _change(before: tuple[int, int, int], after: tuple[int, int, int], found: bool) -> str:
    added, changed, deleted = (b - a for a, b in zip(before, after, strict=True))
    if added:
        return "added"
    if changed:
        return "changed"
    if deleted:
        return "deleted"
    return "unchanged" if found else "not in the store"


class EventApplier:
    """Applies parsed events for one service (API handlers and SQS consumers share it)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.catalog = services.catalog
        self.sources = SourceTable(services.catalog)
        self.verifier = SnsVerifier(services.settings.sns_url_pattern)
        self._runtimes: dict[int, _Runtime] = {}
        self._lock = threading.Lock()
        #: image-sequence dataset path -> when to queue its post-processing
        self._settling: dict[str, float] = {}
        #: source id -> keys applied while that source was being synced
        self._recheck: dict[int, set[str]] = {}
        #: Set when events were recorded in this process: the applier drains at once.
        self.wake = threading.Event()
        #: event id -> failed attempts to read the store for it (kept pending meanwhile)
        self._failures: dict[int, int] = {}

    # -- entry point -----------------------------------------------------------------------

    def deliver(
        self,
        events: list[ObjectEvent],
        find_routes: Callable[[bool], list[Route]],
        sender: Route | None = None,
    ) -> list[Result]:
        """Apply a delivery's events in order and record every outcome.

        ``find_routes(fresh)`` gives the sources the events may be about; when a key
        matches none, they are read again once (a source may have been added just now)."""
        results = route_each(events, find_routes, sender, self.apply)
        self._finish(results)
        return results

    def _finish(self, results: list[Result]) -> None:
        """One transaction: record the outcomes, clear the marks of datasets whose jobs
        were queued (as ``postprocess`` does after queueing)."""
        with self.catalog.write() as conn:
            clear_marks(conn, [r.queued_for for r in results if r.queued_for is not None])
            insert_events(conn, results)

    def apply(self, route: Route, ev: ObjectEvent, *, guarded: bool = True) -> Result:
        """One event on one source; store failures become an ``error`` outcome."""
        if not route.wanted(ev.key) and not route.is_marker(ev.key):
            return Result(ev, Outcome.IGNORED, route.source, "skipped by the source's filters")
        try:
            return self._apply(self._runtime(route), ev, guarded)
        except MediamirrorError as exc:
            log.warning("event for %s/%s not applied: %s", ev.bucket, ev.key, exc)
            return Result(ev, Outcome.ERROR, route.source, str(exc)[:500])

    # -- one event ---------------------------------------------------------------------------

    def _runtime(self, route: Route) -> _Runtime:
        with self._lock:
            rt = self._runtimes.get(route.id)
            if rt is None or rt.fingerprint != _fingerprint(route.source):
                rt = self._runtimes[route.id] = _Runtime(self.services, route)
            return rt

    def _stored(self, conn: Connection, source_id: int, key: str) -> Any:
        query = select(ITEMS.c.id, ITEMS.c.sequencer, ITEMS.c.sequencer_lifetime).where(
            ITEMS.c.source_id == source_id, ITEMS.c.key == key
        )
        if conn.dialect.name == "postgresql":
            # A key not in the catalog yet has no row to lock: two service processes
            # given the same event would both find nothing and both apply it. A lock on
            # the key itself (held until commit) makes the second one see the first's row.
            conn.execute(select(func.pg_advisory_xact_lock(_key_lock(source_id, key))))
            query = query.with_for_update()
        return conn.execute(query).first()

    def _apply(self, rt: _Runtime, ev: ObjectEvent, guarded: bool) -> Result:
        """Read the key from the store, then write what it holds; the order of events is
        judged against that read (see the module's docstring), never before it."""
        seq = ev.sequencer if guarded else None
        info = rt.probe(ev.key)
        for reads in range(1, _REREADS + 2):
            result = self._write_retrying(rt, ev, seq, info, may_read_again=reads <= _REREADS)
            if result is not None:
                return result
            info = rt.probe(ev.key)
        raise AssertionError("unreachable")

    def _write_retrying(
        self,
        rt: _Runtime,
        ev: ObjectEvent,
        seq: str | None,
        info: ObjectInfo | None,
        may_read_again: bool,
    ) -> Result | None:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return self._write(rt, ev, seq, info, may_read_again)
            except DBAPIError as exc:
                # Another process created the same folder or item at the same moment (the
                # next attempt finds it), or PostgreSQL broke a lock cycle with it.
                if not retry.transient(exc):
                    raise
                if attempt == _ATTEMPTS:
                    raise CatalogError(f"cannot apply the event: {exc.orig}") from exc
        raise AssertionError("unreachable")

    def _write(
        self,
        rt: _Runtime,
        ev: ObjectEvent,
        seq: str | None,
        info: ObjectInfo | None,
        may_read_again: bool,
    ) -> Result | None:
        """Apply ``info`` (the store's answer) in one transaction; None when the store
        must be read again first."""
        source = rt.route.source
        engine = rt.engine
        life = lifetime(info)
        try:
            with rt.lock, self.catalog.write() as conn:
                row = self._stored(conn, source.id, ev.key)
                verdict = _verdict(seq, row, life, may_read_again)
                if verdict is READ_AGAIN:
                    return None
                if isinstance(verdict, Outcome):
                    return Result(ev, verdict, source)
                s = engine.summary
                before = (s.added, s.changed, s.deleted)
                engine.apply_objects(conn, [info] if info else [], [] if info else [ev.key])
                after = (s.added, s.changed, s.deleted)
                if seq is not None:
                    # Set after the engine's write, which clears both when it changes
                    # the item (as a sync's write does): this event opens the record.
                    conn.execute(
                        update(ITEMS)
                        .where(ITEMS.c.source_id == source.id, ITEMS.c.key == ev.key)
                        .values(sequencer=seq, sequencer_lifetime=life)
                    )
                dataset = self._dataset_of(conn, source.id, ev.key)
                todo = self._to_queue(conn, dataset) if dataset is not None else None
                if self._syncing(conn, source.id):
                    with self._lock:
                        self._recheck.setdefault(source.id, set()).add(ev.key)
        except BaseException:
            # Folder ids cached during a rolled-back transaction do not exist.
            engine.folders.ids.clear()
            raise
        result = Result(ev, Outcome.APPLIED, source, _change(before, after, info is not None))
        if dataset is not None:
            result.dataset = dataset.path
            if dataset.path in self._settling:
                result.detail = f"{result.detail}; post-processing after the sequence settles"
        if todo is not None:
            result.jobs = self._enqueue(todo, profile_of(source))
            result.queued_for = todo.id
        return result

    @staticmethod
    def _dataset_of(conn: Connection, source_id: int, key: str) -> Any:
        row = conn.execute(
            select(FOLDERS.c.id, FOLDERS.c.path, FOLDERS.c.meta, FOLDERS.c.state)
            .join(ITEMS, ITEMS.c.folder_id == FOLDERS.c.id)
            .where(ITEMS.c.source_id == source_id, ITEMS.c.key == key)
        ).first()
        if row is None or not (row.meta or {}).get("type"):
            return None
        return row

    @staticmethod
    def _syncing(conn: Connection, source_id: int) -> bool:
        row = conn.execute(_SYNC_LEASE, {"name": f"sync:{source_id}"}).first()
        return row is not None and row.expires_at > utcnow() and not owner_is_dead(row.owner)

    # -- post-processing ---------------------------------------------------------------------

    def _to_queue(self, conn: Connection, dataset: Any) -> Dataset | None:
        """The dataset with its items if the event marked it and its jobs are due now
        (what ``postprocess`` selects at the end of a sync), read in the event's
        transaction."""
        if not self._due(dataset):
            return None
        return self._with_items(conn, [dataset])[0]

    def _due(self, dataset: Any) -> bool:
        """Whether a dataset's jobs are to be queued now: marked for post-processing and
        present. Frames of an image sequence usually arrive by the hundred: their dataset
        is queued once no frame arrived for ``events_settle_seconds`` (by :meth:`tick`)."""
        settings = self.services.settings
        meta = dataset.meta or {}
        if not settings.auto_postprocess or meta.get("MarkForPostProcess") is not True:
            return False
        if dataset.state != "present":
            return False
        if meta.get("type") == DatasetType.IMAGE_SEQUENCE.value and settings.events_settle_seconds:
            with self._lock:
                self._settling[dataset.path] = time.monotonic() + settings.events_settle_seconds
            return False
        return True

    @staticmethod
    def _with_items(conn: Connection, datasets: list[Any]) -> list[Dataset]:
        """Datasets (folder rows) with their present items, read in one query."""
        items: dict[int, list[ItemRef]] = {d.id: [] for d in datasets}
        ids = sorted(items)
        for i in range(0, len(ids), 500):
            for r in conn.execute(_ITEMS_OF, {"ids": ids[i : i + 500]}):
                items[r.folder_id].append(ItemRef(r.id, r.key, r.name, r.size, r.etag))
        return [Dataset(d.id, d.path, None, dict(d.meta or {}), items[d.id]) for d in datasets]

    def _enqueue(self, dataset: Dataset, profile: Profile | None = None) -> list[int]:
        """Queue the dataset's processors that its source's ``profile`` lets run, at its
        current input version (as ``postprocess`` does); a job already queued or running
        for it is kept."""
        settings = self.services.settings
        specs = [
            JobSpec(proc.name, "folder", dataset.id, proc.input_version(dataset))
            for proc in for_dataset(settings, dataset, profile=profile)
            if proc.inputs(dataset)
        ]
        return enqueue(self.catalog, specs, self.services.retry_policy)

    # -- background work ---------------------------------------------------------------------

    def tick(self) -> None:
        """Queue settled image sequences; re-read keys applied during a sync once it ended
        (that sync may have listed them before the event and written its older view)."""
        from mediamirror.postprocess import postprocess

        now = time.monotonic()
        with self._lock:
            due = [p for p, t in self._settling.items() if t <= now]
            for path in due:
                del self._settling[path]
        for path in due:
            try:
                postprocess(self.services, path, recursive=False)
            except NotFoundError:
                continue
        self._recheck_synced()

    def _recheck_synced(self) -> None:
        with self._lock:
            pending = [sid for sid, keys in self._recheck.items() if keys]
        if not pending:
            return
        routes = {r.id: r for r in self.sources.routes()}
        for sid in pending:
            route = routes.get(sid)
            if route is None:
                with self._lock:
                    self._recheck.pop(sid, None)
                continue
            with self.catalog.read() as conn:
                if self._syncing(conn, sid):
                    continue
            with self._lock:
                todo = self._recheck.pop(sid, set())
            for key in sorted(todo):
                ev = ObjectEvent("recheck", "recheck", Action.UPDATED, route.source.bucket, key)
                result = self.apply(route, ev, guarded=False)
                if result.outcome is Outcome.ERROR:
                    with self._lock:
                        self._recheck.setdefault(sid, set()).add(key)

    def retry_later(self, event_id: int) -> bool:
        """Whether an event whose key could not be read from the store stays pending
        for another attempt (its sender was told it is recorded: it will not send it
        again); after :data:`_STORE_ATTEMPTS` failures it is recorded as ``error``."""
        with self._lock:
            failures = self._failures.get(event_id, 0) + 1
            if failures >= _STORE_ATTEMPTS:
                self._failures.pop(event_id, None)
                return False
            self._failures[event_id] = failures
            return True

    def pending_work(self) -> bool:
        with self._lock:
            return bool(self._settling) or any(self._recheck.values())


_APPLIERS_LOCK = threading.Lock()


def applier_for(services: Services) -> EventApplier:
    """The applier of a service (one per :class:`Services`, made on first use)."""
    with _APPLIERS_LOCK:
        found = vars(services).get("_events_applier")
        if found is None:
            found = EventApplier(services)
            vars(services)["_events_applier"] = found
        assert isinstance(found, EventApplier)
        return found


def route_each(
    events: Sequence[ObjectEvent],
    find_routes: Callable[[bool], list[Route]],
    sender: Route | None,
    on_route: Callable[[Route, ObjectEvent], Result],
) -> list[Result]:
    """Each event's final outcome when no source is to act on it (rejected, a test, a type
    not mirrored, no source mirrors its key), else ``on_route(route, event)`` for every
    source it is about. ``find_routes(fresh)`` gives the sources; when a key matches none
    they are read again once (a source may have been added just now)."""
    results: list[Result] = []
    routes = find_routes(False)
    refreshed = False
    sender_source = sender.source if sender is not None else None
    for ev in events:
        if ev.invalid is not None:
            results.append(Result(ev, Outcome.REJECTED, sender_source, ev.invalid))
            continue
        if ev.action is Action.TEST:
            results.append(Result(ev, Outcome.TEST, sender_source, "acknowledged"))
            continue
        if ev.action is Action.OTHER:
            results.append(Result(ev, Outcome.IGNORED, sender_source, "event type not mirrored"))
            continue
        hits = targets(routes, ev.bucket, ev.key)
        if not hits and not refreshed:
            routes, refreshed = find_routes(True), True
            hits = targets(routes, ev.bucket, ev.key)
        if not hits:
            detail = f"no source mirrors {ev.bucket}/{ev.key}"
            results.append(Result(ev, Outcome.IGNORED, sender_source, detail))
        results.extend(on_route(route, ev) for route in hits)
    return results
