"""Jobs in batches: the datasets of several claimed jobs read at once, and several
successful jobs recorded in one transaction.

A job's success is its dataset's new metadata, its input items' ``needs_processing``
flags, its own end and possibly a ``dataset.ready`` notification, committed together
(:func:`mediamirror.jobs.runner._succeed` does it for one job). :func:`record_successes`
does the same for a batch, with one read per table and one ``executemany`` per kind of
write, and gives the same catalog as recording the jobs one after the other in their
order: each dataset's changes are applied in order, and of several jobs of one dataset in
the batch only the last one can make it ready (when the others ended, it was still
running).

Crash safety: until its batch commits, a finished job is still ``running`` under its
worker's lease in the catalog. A worker killed before the commit loses the batch; the
reaper queues its jobs again once their lease lapses (or at once when the worker is
known dead on this host), and they run again. Nothing else is lost or done twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Text,
    all_,
    and_,
    bindparam,
    cast,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS, utcnow
from mediamirror.jobs import queue
from mediamirror.jobs.model import JOBS, JobStatus
from mediamirror.notify import outbox
from mediamirror.processing.processors.base import Dataset, ItemRef, Processor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Success:
    """A job whose processor succeeded, waiting to be recorded."""

    proc: Processor
    job: Any
    updates: dict[str, Any]
    log_tail: str


def _dataset_statements(postgres: bool) -> tuple[Any, Any]:
    """The reads of several datasets (folders, then their items), built once per dialect."""
    folders = select(FOLDERS.c.id, FOLDERS.c.path, FOLDERS.c.source_id, FOLDERS.c.meta).where(
        queue.among(FOLDERS.c.id, "b_ids", postgres)
    )
    items = (
        select(ITEMS.c.folder_id, ITEMS.c.id, ITEMS.c.key, ITEMS.c.name, ITEMS.c.size, ITEMS.c.etag)
        .where(queue.among(ITEMS.c.folder_id, "b_ids", postgres), ITEMS.c.state == "present")
        .order_by(ITEMS.c.folder_id, ITEMS.c.key)
    )
    return folders, items


# Built once: these run for every batch.
_FOLDERS, _ITEMS = _dataset_statements(False)
_PG_FOLDERS, _PG_ITEMS = _dataset_statements(True)
_PG_FOLDERS_LOCKED = _PG_FOLDERS.order_by(FOLDERS.c.id).with_for_update()
_SET_META = (
    update(FOLDERS)
    .where(FOLDERS.c.id == bindparam("b_id"))
    .values(meta=bindparam("b_meta"), updated_at=bindparam("b_now"))
)
_PROCESSED = (
    update(ITEMS)
    .where(and_(ITEMS.c.id == bindparam("b_id"), ITEMS.c.etag == bindparam("b_etag")))
    .values(needs_processing=False)
)


def _pg_writes() -> tuple[Any, Any]:
    """:data:`_SET_META` and :data:`_PROCESSED` on PostgreSQL: each one ``UPDATE ...
    FROM unnest(...)`` for the whole batch (metadata travels as JSON text)."""
    v = queue.rows_of(id=Integer, meta=Text)
    set_meta = (
        update(FOLDERS)
        .where(FOLDERS.c.id == v.c.id)
        .values(meta=cast(v.c.meta, FOLDERS.c.meta.type), updated_at=bindparam("b_now"))
    )
    w = queue.rows_of(id=Integer, etag=Text)
    processed = (
        update(ITEMS)
        .where(ITEMS.c.id == w.c.id, ITEMS.c.etag == w.c.etag)
        .values(needs_processing=False)
    )
    return set_meta, processed


_PG_SET_META, _PG_PROCESSED = _pg_writes()


def _others_active_statement(postgres: bool) -> Any:
    """Per folder of ``b_folders``, its queued or running jobs other than ``b_jobs``."""
    if postgres:
        others = JOBS.c.id != all_(bindparam("b_jobs", type_=ARRAY(Integer)))
    else:
        others = JOBS.c.id.not_in(bindparam("b_jobs", expanding=True))
    return (
        select(JOBS.c.target_id, func.count())
        .where(
            JOBS.c.target_type == "folder",
            queue.among(JOBS.c.target_id, "b_folders", postgres),
            others,
            JOBS.c.state.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
        )
        .group_by(JOBS.c.target_id)
    )


_OTHERS_ACTIVE = {False: _others_active_statement(False), True: _others_active_statement(True)}


def _write(
    conn: Connection,
    metas: dict[int, dict[str, Any]],
    processed: list[tuple[int, str]],
    now: datetime,
) -> None:
    """The batch's new metadata per folder and its processed items' flags."""
    if conn.dialect.name == "postgresql":
        ids = list(metas)
        texts = [json.dumps(m) for m in metas.values()]
        conn.execute(_PG_SET_META, {"b_ids": ids, "b_metas": texts, "b_now": now})
        if processed:
            items = {"b_ids": [i for i, _ in processed], "b_etags": [e for _, e in processed]}
            conn.execute(_PG_PROCESSED, items)
        return
    conn.execute(_SET_META, [{"b_id": fid, "b_meta": m, "b_now": now} for fid, m in metas.items()])
    if processed:
        conn.execute(_PROCESSED, [{"b_id": i, "b_etag": e} for i, e in processed])


def load_datasets_in(
    conn: Connection, folder_ids: Iterable[int], *, lock: bool = False
) -> dict[int, Dataset]:
    """Datasets by folder id (a folder that no longer exists is missing), in two
    queries; with ``lock``, their rows are locked on PostgreSQL (in id order)."""
    ids = sorted(set(folder_ids))
    if not ids:
        return {}
    found: dict[int, Dataset] = {}
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        folders, items = (_PG_FOLDERS_LOCKED if lock else _PG_FOLDERS), _PG_ITEMS
    else:
        folders, items = _FOLDERS, _ITEMS
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        for row in conn.execute(folders, {"b_ids": chunk}):
            found[row.id] = Dataset(row.id, row.path, row.source_id, dict(row.meta or {}))
        for it in conn.execute(items, {"b_ids": chunk}):
            found[it.folder_id].items.append(ItemRef(it.id, it.key, it.name, it.size, it.etag))
    return found


def load_datasets(catalog: Catalog, folder_ids: Iterable[int]) -> dict[int, Dataset]:
    """:func:`load_datasets_in` in a read transaction of its own."""
    with catalog.read() as conn:
        return load_datasets_in(conn, folder_ids)


def batchable(success: Success) -> bool:
    """Jobs on folders are recorded in batches; anything else goes one by one."""
    return bool(success.job.target_type == "folder")


def _ready_meta(meta: dict[str, Any]) -> bool:
    """:func:`mediamirror.jobs.runner._completes` without its count of other jobs."""
    if not meta.get("type") or meta.get("MarkForPostProcess") is True:
        return False
    states = [p.get("state") for p in (meta.get("processing") or {}).values()]
    return bool(states) and all(state == "success" for state in states)


def record_successes(
    catalog: Catalog, worker: str, batch: Sequence[Success]
) -> tuple[set[int], list[Success]]:
    """Record ``batch`` (jobs on folders) in one transaction. Returns the ids of the jobs
    that ended (the others were no longer this worker's: their lease was lost, as
    :func:`queue.finish` returning False) and the successes left for one-by-one
    recording (their folder is gone: the single path says how that ends)."""
    from mediamirror.jobs.runner import _change

    with catalog.write() as conn:
        datasets = load_datasets_in(conn, (s.job.target_id for s in batch), lock=True)
        left = [s for s in batch if s.job.target_id not in datasets]
        todo = [s for s in batch if s.job.target_id in datasets]
        ours = queue.held(conn, worker, [s.job.id for s in todo])
        at = datetime.now(UTC).isoformat(timespec="seconds")
        metas: dict[int, dict[str, Any]] = {}
        processed: dict[tuple[int, str], None] = {}
        last_of: dict[int, Success] = {}
        for s in todo:
            job = s.job
            current = datasets[job.target_id]
            updates = s.updates
            if s.proc.input_version(current) != job.input_version:
                # The media changed while the job ran: keep the mark so it is processed again.
                updates = {k: v for k, v in updates.items() if k != "MarkForPostProcess"}
            status = {"state": "success", "job": job.id, "version": job.input_version, "at": at}
            meta = metas.get(job.target_id)
            if meta is None:
                meta = metas[job.target_id] = dict(current.meta)
            _change(job, status, updates, s.proc.merge_keys)(meta)
            for item in s.proc.inputs(current):
                processed[(item.id, item.etag)] = None
            if job.id in ours:
                last_of[job.target_id] = s
            else:
                last_of.pop(job.target_id, None)  # it was still running when ours ended
        now = utcnow()
        _write(conn, metas, list(processed), now)
        queue.finish_successes(
            conn, worker, [(s.job.id, s.log_tail) for s in todo if s.job.id in ours]
        )
        candidates = {fid: s for fid, s in last_of.items() if _ready_meta(metas[fid])}
        if candidates:
            busy = {
                fid
                for fid, n in conn.execute(
                    _OTHERS_ACTIVE[conn.dialect.name == "postgresql"],
                    {"b_folders": sorted(candidates), "b_jobs": sorted(ours)},
                )
                if n
            }
            for fid, s in candidates.items():
                if fid in busy:
                    continue
                started = s.job.started_at
                seconds = (now - started).total_seconds() if started else None
                outbox.dataset_ready(conn, fid, metas[fid], s.job, seconds)
    return ours, left
