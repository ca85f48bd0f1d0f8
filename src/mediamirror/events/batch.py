"""Applying the recorded (``pending``) events of one source in one transaction.

Per key, the batch works out what applying its events one by one in sequencer order
would leave, with the rules of :mod:`mediamirror.events.apply` (a redelivery is a
``duplicate``, older news is ``stale`` while it is about the object's current content,
anything else is decided by the store), and then writes only that final state: the
item, its dataset, its jobs and every event's outcome, for all keys of the batch at once.

An event that describes its object (size, etag, time and sequencer: S3, MinIO and
EventBridge created events, GCS finalize events) is applied from what it says, with no
request to the store. A key whose events need the store (a created event without size
or etag, an event without a sequencer, or a verdict that asks for a fresh read) is
applied after the batch, one event at a time, exactly as before (one-key listing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, select, text, update
from sqlalchemy.exc import DBAPIError

from mediamirror.catalog import retry
from mediamirror.catalog.meta import clear_marks
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.errors import CatalogError
from mediamirror.events.apply import (
    ABSENT,
    READ_AGAIN,
    EventApplier,
    Result,
    _key_lock,
    _verdict,
    lifetime,
)
from mediamirror.events.model import Action, ObjectEvent, Outcome, compare_sequencers
from mediamirror.events.routing import Route
from mediamirror.jobs.queue import JobSpec, enqueue_in
from mediamirror.processing.processors import for_dataset
from mediamirror.profiles import profile_of
from mediamirror.stores import ObjectInfo
from mediamirror.sync.layout import group_prefix
from mediamirror.web.models import EVENTS

log = logging.getLogger(__name__)
#: Keys written by one call of the sync engine (its query has a range per key).
_KEYS_PER_WRITE = 200
_IN_BATCH = 500

# The batch's statements, built once (building and cache-keying a statement costs about
# as much as running it on a small batch).
_ROWS = select(
    ITEMS.c.id,
    ITEMS.c.key,
    ITEMS.c.size,
    ITEMS.c.etag,
    ITEMS.c.last_modified,
    ITEMS.c.state,
    ITEMS.c.sequencer,
    ITEMS.c.sequencer_lifetime,
).where(
    ITEMS.c.source_id == bindparam("source_id"),
    ITEMS.c.key.in_(bindparam("keys", expanding=True)),
)
_ROWS_LOCKED = _ROWS.order_by(ITEMS.c.id).with_for_update()
_REMOVED = select(EVENTS.c.key, EVENTS.c.sequencer).where(
    EVENTS.c.source_id == bindparam("source_id"),
    EVENTS.c.key.in_(bindparam("keys", expanding=True)),
    EVENTS.c.action == Action.REMOVED.value,
    EVENTS.c.outcome == Outcome.APPLIED.value,
    EVENTS.c.sequencer.is_not(None),
)
_SEQUENCERS = (
    update(ITEMS)
    .where(ITEMS.c.source_id == bindparam("b_source"), ITEMS.c.key == bindparam("b_key"))
    .values(sequencer=bindparam("b_seq"), sequencer_lifetime=bindparam("b_life"))
)
_DATASETS = (
    select(ITEMS.c.key, FOLDERS.c.id, FOLDERS.c.path, FOLDERS.c.meta, FOLDERS.c.state)
    .join(FOLDERS, ITEMS.c.folder_id == FOLDERS.c.id)
    .where(
        ITEMS.c.source_id == bindparam("source_id"),
        ITEMS.c.key.in_(bindparam("keys", expanding=True)),
    )
)
#: An events row's outcome, once applied.
OUTCOMES = (
    update(EVENTS)
    .where(EVENTS.c.id == bindparam("b_id"))
    .values(outcome=bindparam("b_outcome"), detail=bindparam("b_detail"))
)


@dataclass
class Pending:
    """One recorded event waiting to be applied to one source."""

    id: int
    event: ObjectEvent


def pending_of(row: Any) -> Pending:
    """A ``pending`` row of ``events`` as the event it recorded."""
    action = Action(row.action) if row.action in Action.__members__.values() else Action.OTHER
    event = ObjectEvent(
        row.channel,
        row.event_type or "",
        action,
        row.bucket or "",
        row.key or "",
        row.sequencer,
        size=row.size,
        etag=row.etag,
        time=row.event_time,
    )
    return Pending(row.id, event)


def described(ev: ObjectEvent, current: ObjectInfo | None) -> ObjectInfo | None:
    """The object after ``ev`` as the event describes it. The same content as the
    catalog's keeps the catalog's time: an event's time is when it was sent, not the
    listing's ``LastModified``, so it must not make the item look changed."""
    if ev.action is Action.REMOVED:
        return None
    assert ev.size is not None and ev.etag is not None and ev.time is not None
    if current is not None and (current.size, current.etag) == (ev.size, ev.etag):
        return current
    return ObjectInfo(ev.key, ev.size, ev.etag, ev.time)


def self_described(ev: ObjectEvent) -> bool:
    """Whether ``ev`` can be applied without reading the store."""
    if ev.sequencer is None:
        return False
    if ev.action is Action.REMOVED:
        return True
    return (
        ev.action in (Action.CREATED, Action.UPDATED)
        and ev.size is not None
        and ev.etag is not None
        and ev.time is not None
    )


def _order(p: Pending) -> tuple[str, int]:
    seq = p.event.sequencer or ""
    return (seq.upper().rjust(32, "0"), p.id)


@dataclass
class _Key:
    """What one-by-one application in sequencer order leaves for one key."""

    key: str
    events: list[Pending]
    row: Any = None
    #: Newest sequencer of a removal applied to this key while the catalog held no item
    #: for it (the events log keeps it), or None.
    removed: str | None = None
    applied: Pending | None = None  # the last event applied
    final: ObjectInfo | None = None
    life: str | None = None
    outcomes: dict[int, tuple[Outcome, str | None]] = field(default_factory=dict)
    detail: str = "unchanged"


@dataclass
class _Row:
    sequencer: str | None
    sequencer_lifetime: str | None


def _simulate(k: _Key) -> bool:
    """Walk the key's events in sequencer order from the catalog's row; False when one
    of them needs the store to decide (the key is then applied one event at a time)."""
    row = k.row
    current = None
    if row is not None and row.state == "present":
        current = ObjectInfo(row.key, row.size, row.etag, row.last_modified)
    state = _Row(row.sequencer, row.sequencer_lifetime) if row is not None else None
    if state is None and k.removed is not None:
        state = _Row(k.removed, ABSENT)
    final = current
    for p in sorted(k.events, key=_order):
        ev = p.event
        info = described(ev, final)
        life = lifetime(info)
        verdict = _verdict(ev.sequencer, state, life, may_read_again=True)
        if verdict is READ_AGAIN:
            return False
        if isinstance(verdict, Outcome):
            k.outcomes[p.id] = (verdict, None)
            continue
        if k.applied is not None:
            seq = ev.sequencer
            k.outcomes[k.applied.id] = (Outcome.STALE, f"superseded by {seq} in its batch")
        k.applied, final, k.life = p, info, life
        state = _Row(ev.sequencer, life)
    k.final = final
    if k.applied is not None:
        k.detail = _change(row, current, final)
    return True


def _change(row: Any, before: ObjectInfo | None, after: ObjectInfo | None) -> str:
    if after is None:
        if before is not None:
            return "deleted"
        return "unchanged" if row is not None else "not in the store"
    if before is None:
        return "added"
    same = (before.size, before.etag, before.last_modified) == (
        after.size,
        after.etag,
        after.last_modified,
    )
    return "unchanged" if same else "changed"


def _groups(keys: list[str]) -> list[list[str]]:
    """Sorted keys cut into runs of about ``_KEYS_PER_WRITE``, never inside a sidecar
    group (``dir/clip.*``), so a sidecar and its video are placed together."""
    runs: list[list[str]] = []
    run: list[str] = []
    last_group: str | None = None
    for key in sorted(keys):
        group = group_prefix(key)
        if len(run) >= _KEYS_PER_WRITE and (group is None or group != last_group):
            runs.append(run)
            run = []
        run.append(key)
        last_group = group
    if run:
        runs.append(run)
    return runs


class BatchApplier:
    """Applies a source's pending events (the events applier's work for one source)."""

    def __init__(self, applier: EventApplier) -> None:
        self.applier = applier
        self.catalog = applier.catalog
        self.settings = applier.services.settings

    def apply(self, route: Route, pending: Sequence[Pending]) -> list[Result]:
        """Apply ``pending`` (events of ``route``'s source, oldest first); returns the
        results of the events whose outcome is final. Events left ``pending`` (the store
        could not be read) are tried again by the next drain."""
        by_key: dict[str, _Key] = {}
        for p in pending:
            by_key.setdefault(p.event.key, _Key(p.event.key, [])).events.append(p)
        fast = [k for k in by_key.values() if all(self_described(p.event) for p in k.events)]
        slow = [k for k in by_key.values() if k not in fast]
        results: list[Result] = []
        if fast:
            done, more = self._write_retrying(route, fast)
            results += done
            slow += more
        results += self._one_by_one(route, slow)
        return results

    # -- the batch transaction ---------------------------------------------------------------

    def _write_retrying(self, route: Route, keys: list[_Key]) -> tuple[list[Result], list[_Key]]:
        for attempt in range(1, retry.ATTEMPTS + 1):
            for k in keys:
                k.row, k.removed, k.applied, k.final, k.life = None, None, None, None, None
                k.outcomes = {}
                k.detail = "unchanged"
            try:
                return self._write(route, keys)
            except DBAPIError as exc:
                if not retry.transient(exc):
                    raise
                if attempt == retry.ATTEMPTS:
                    raise CatalogError(f"cannot apply the events: {exc.orig}") from exc
        raise AssertionError("unreachable")

    def _write(self, route: Route, keys: list[_Key]) -> tuple[list[Result], list[_Key]]:
        applier = self.applier
        rt = applier._runtime(route)
        source = route.source
        engine = rt.engine
        results: list[Result] = []
        try:
            with rt.lock, self.catalog.write() as conn:
                rows = self._rows(conn, source.id, [k.key for k in keys])
                ready: list[_Key] = []
                later: list[_Key] = []
                removed = self._removed(conn, source.id, [k.key for k in keys if k.key not in rows])
                for k in keys:
                    k.row, k.removed = rows.get(k.key), removed.get(k.key)
                    (ready if _simulate(k) else later).append(k)
                changed = [k for k in ready if k.applied is not None]
                for run in _groups([k.key for k in changed]):
                    wanted = set(run)
                    present = [k.final for k in changed if k.key in wanted and k.final]
                    gone = [k.key for k in changed if k.key in wanted and k.final is None]
                    engine.apply_objects(conn, present, gone)
                self._record_sequencers(conn, source.id, changed)
                datasets = self._datasets(conn, source.id, [k.key for k in changed])
                queued = self._queue(conn, route, datasets)
                if changed and applier._syncing(conn, source.id):
                    with applier._lock:
                        applier._recheck.setdefault(source.id, set()).update(k.key for k in changed)
                results = self._results(route, ready, datasets, queued)
                clear_marks(conn, sorted({fid for fid, _ in queued.values() if fid}))
                self._record_outcomes(conn, results, ready)
        except BaseException:
            engine.folders.ids.clear()  # ids cached in the rolled-back transaction
            raise
        return results, later

    @staticmethod
    def _rows(conn: Connection, source_id: int, keys: list[str]) -> dict[str, Any]:
        postgres = conn.dialect.name == "postgresql"
        if postgres and keys:
            # The key locks a one-event write takes (the same key may be read from the
            # store by the rechecks of a sync meanwhile), taken in order in one statement.
            locks = sorted({_key_lock(source_id, k) for k in keys})
            conn.execute(
                text(
                    "SELECT pg_advisory_xact_lock(k) FROM"
                    " (SELECT unnest(CAST(:locks AS bigint[])) AS k ORDER BY 1) AS ordered"
                ),
                {"locks": locks},
            )
        found: dict[str, Any] = {}
        ordered = sorted(keys)
        query = _ROWS_LOCKED if postgres else _ROWS
        for i in range(0, len(ordered), _IN_BATCH):
            params = {"source_id": source_id, "keys": ordered[i : i + _IN_BATCH]}
            found.update((r.key, r) for r in conn.execute(query, params))
        return found

    @staticmethod
    def _removed(conn: Connection, source_id: int, keys: list[str]) -> dict[str, str]:
        """key -> newest sequencer of an applied removal, for keys without an item."""
        found: dict[str, str] = {}
        for i in range(0, len(keys), _IN_BATCH):
            params = {"source_id": source_id, "keys": keys[i : i + _IN_BATCH]}
            for key, seq in conn.execute(_REMOVED, params):
                if key not in found or compare_sequencers(seq, found[key]) > 0:
                    found[key] = seq
        return found

    @staticmethod
    def _record_sequencers(conn: Connection, source_id: int, keys: list[_Key]) -> None:
        """Set after the engine's write, which clears both when it changes the item."""
        values = [
            {"b_key": k.key, "b_seq": k.applied.event.sequencer, "b_life": k.life}
            for k in keys
            if k.applied is not None
        ]
        if values:
            conn.execute(_SEQUENCERS, [{**v, "b_source": source_id} for v in values])

    @staticmethod
    def _datasets(conn: Connection, source_id: int, keys: list[str]) -> dict[str, Any]:
        """key -> its folder when that folder is a dataset."""
        found: dict[str, Any] = {}
        for i in range(0, len(keys), _IN_BATCH):
            params = {"source_id": source_id, "keys": keys[i : i + _IN_BATCH]}
            rows = conn.execute(_DATASETS, params)
            found.update((r.key, r) for r in rows if (r.meta or {}).get("type"))
        return found

    def _queue(
        self, conn: Connection, route: Route, datasets: dict[str, Any]
    ) -> dict[int, tuple[int, list[int]]]:
        """Queue the jobs of the datasets the batch marked (as one event would), in the
        batch's transaction: folder id -> (folder id if queued, else 0; job ids)."""
        queued: dict[int, tuple[int, list[int]]] = {}
        due = []
        for row in sorted({r.id: r for r in datasets.values()}.values(), key=lambda r: r.id):
            if self.applier._due(row):
                due.append(row)
            else:
                queued[row.id] = (0, [])
        if not due:
            return queued
        profile = profile_of(route.source)
        specs = [
            JobSpec(proc.name, "folder", ds.id, proc.input_version(ds))
            for ds in self.applier._with_items(conn, due)
            for proc in for_dataset(self.settings, ds, profile=profile)
            if proc.inputs(ds)
        ]
        jobs: dict[int, list[int]] = {row.id: [] for row in due}
        max_attempts = self.applier.services.retry_policy.max_attempts
        for job_id, target in enqueue_in(conn, specs, max_attempts):
            jobs[target].append(job_id)
        for row in due:
            queued[row.id] = (row.id, jobs[row.id])
        return queued

    def _results(
        self,
        route: Route,
        keys: list[_Key],
        datasets: dict[str, Any],
        queued: dict[int, tuple[int, list[int]]],
    ) -> list[Result]:
        """One result per event, in the order of ``keys`` and their events."""
        settling = self.applier._settling
        results: list[Result] = []
        for k in keys:
            for p in k.events:
                if k.applied is None or p.id != k.applied.id:
                    outcome, detail = k.outcomes.get(p.id, (Outcome.DUPLICATE, None))
                    results.append(Result(p.event, outcome, route.source, detail))
                    continue
                result = Result(p.event, Outcome.APPLIED, route.source, k.detail)
                ds = datasets.get(k.key)
                if ds is not None:
                    result.dataset = ds.path
                    result.jobs = queued.get(ds.id, (0, []))[1]
                    if ds.path in settling:
                        result.detail = f"{k.detail}; post-processing after the sequence settles"
                results.append(result)
        return results

    @staticmethod
    def _record_outcomes(conn: Connection, results: list[Result], keys: list[_Key]) -> None:
        ids = [p.id for k in keys for p in k.events]
        values = [
            {"b_id": event_id, "b_outcome": r.outcome.value, "b_detail": (r.detail or "")[:2000]}
            for event_id, r in zip(ids, results, strict=True)
        ]
        if values:
            conn.execute(OUTCOMES, values)

    # -- keys that need the store ------------------------------------------------------------

    def _one_by_one(self, route: Route, keys: list[_Key]) -> list[Result]:
        """Each event read from the store and written on its own, in arrival order."""
        results: list[Result] = []
        written: list[tuple[int, Result]] = []
        for k in keys:
            for p in sorted(k.events, key=lambda p: p.id):
                result = self.applier.apply(route, p.event)
                written.append((p.id, result))
                if result.outcome is Outcome.ERROR and self.applier.retry_later(p.id):
                    # Stays pending (tried again by a later drain), saying why.
                    result.outcome = Outcome.PENDING
                    continue
                results.append(result)
        if written:
            with self.catalog.write() as conn:
                clear_marks(conn, [r.queued_for for _, r in written if r.queued_for is not None])
                conn.execute(
                    OUTCOMES,
                    [
                        {
                            "b_id": event_id,
                            "b_outcome": r.outcome.value,
                            "b_detail": (r.detail or "")[:2000],
                        }
                        for event_id, r in written
                    ],
                )
        return results
