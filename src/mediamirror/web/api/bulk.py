"""Bulk actions on a selection: post-process or re-process folders, retry jobs.

Every endpoint answers ``{"queued": N, "skipped": N, "message": "one line"}`` and is
idempotent: a dataset with work queued or running is skipped, and a job already queued
again is not queued twice. Post-process and re-process count *jobs* queued and *datasets*
skipped (and say how many datasets got jobs); retry counts jobs for both.

The selection is read first; what is queued is decided and written in one write
transaction (the check for work already queued, the jobs, the cleared marks), with the
same functions the CLI's ``postprocess``/``reprocess`` and ``jobs retry`` use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Connection, select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.meta import clear_marks
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.errors import ConfigError, NotFoundError
from mediamirror.jobs import failures
from mediamirror.jobs.model import JOBS, JobStatus
from mediamirror.jobs.queue import JobSpec, enqueue_in
from mediamirror.postprocess import marked, pending
from mediamirror.processing.processors import for_dataset, registry
from mediamirror.processing.processors.base import Dataset, ItemRef
from mediamirror.services import Services
from mediamirror.settle import settled
from mediamirror.sources import source_profiles
from mediamirror.web.deps import MAX_ID, Admin, Svc

router = APIRouter(tags=["bulk"])

#: The most ids one request may name (a page of selection, or a group of failures).
MAX_IDS = 10_000
_CHUNK = 500

BulkId = Annotated[int, Field(ge=1, le=MAX_ID)]
Ids = Annotated[list[BulkId], Field(min_length=1, max_length=MAX_IDS)]


class FoldersBody(BaseModel):
    folder_ids: Ids


class ReprocessBody(FoldersBody):
    processor: str | None = Field(default=None, max_length=100)


class RetryBody(BaseModel):
    job_ids: Ids | None = None
    reason: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_of(self) -> RetryBody:
        if (self.job_ids is None) == (self.reason is None):
            raise ValueError("give either job_ids or reason (a failure group key)")
        return self


@dataclass
class Outcome:
    """Datasets a bulk post-process or re-process considered, and what became of them."""

    queued: list[int] = field(default_factory=list)
    datasets: int = 0  # datasets that got at least one job
    reasons: dict[str, int] = field(default_factory=dict)  # why datasets were skipped

    def skip(self, why: str, n: int = 1) -> None:
        self.reasons[why] = self.reasons.get(why, 0) + n

    def answer(self) -> dict[str, Any]:
        skipped = sum(self.reasons.values())
        why = ", ".join(f"{n} {reason}" for reason, n in self.reasons.items() if n)
        message = f"queued {len(self.queued)} job(s) for {self.datasets} dataset(s)"
        if skipped:
            message += f"; skipped {skipped} dataset(s): {why}"
        return {
            "queued": len(self.queued),
            "skipped": skipped,
            "datasets": self.datasets,
            "message": message,
        }


def _selected(catalog: Catalog, folder_ids: Sequence[int], out: Outcome) -> list[Any]:
    """Rows of the present datasets chosen: each selected dataset, and the datasets under
    each selected plain folder."""
    ids = sorted(set(folder_ids))
    rows: dict[int, Any] = {}
    cols = (FOLDERS.c.id, FOLDERS.c.path, FOLDERS.c.source_id, FOLDERS.c.meta, FOLDERS.c.state)
    with catalog.read() as conn:
        found: list[Any] = []
        for i in range(0, len(ids), _CHUNK):
            found.extend(conn.execute(select(*cols).where(FOLDERS.c.id.in_(ids[i : i + _CHUNK]))))
        if len(found) < len(ids):
            out.skip("not found", len(ids) - len(found))
        for row in found:
            if (row.meta or {}).get("type"):
                rows[row.id] = row
                continue
            under = select(*cols).where(
                FOLDERS.c.path > row.path + "/", FOLDERS.c.path < row.path + "0"
            )
            rows.update((r.id, r) for r in conn.execute(under) if (r.meta or {}).get("type"))
    present = [r for r in rows.values() if r.state == "present"]
    if len(present) < len(rows):
        out.skip("empty (files gone from the bucket)", len(rows) - len(present))
    return sorted(present, key=lambda r: r.path)


def _with_items(catalog: Catalog, rows: list[Any]) -> list[Dataset]:
    datasets: list[Dataset] = []
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i : i + _CHUNK]
        items: dict[int, list[ItemRef]] = {r.id: [] for r in chunk}
        query = (
            select(ITEMS.c.id, ITEMS.c.key, ITEMS.c.name, ITEMS.c.size, ITEMS.c.etag)
            .add_columns(ITEMS.c.folder_id)
            .where(ITEMS.c.folder_id.in_(list(items)), ITEMS.c.state == "present")
            .order_by(ITEMS.c.key)
        )
        with catalog.read() as conn:
            for it in conn.execute(query):
                items[it.folder_id].append(ItemRef(it.id, it.key, it.name, it.size, it.etag))
        datasets.extend(
            Dataset(r.id, r.path, r.source_id, dict(r.meta), items[r.id]) for r in chunk
        )
    return datasets


def _busy(conn: Connection, folder_ids: list[int]) -> set[int]:
    """Datasets among these with a job queued or running."""
    active = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
    busy: set[int] = set()
    for i in range(0, len(folder_ids), _CHUNK):
        busy.update(
            conn.execute(
                select(JOBS.c.target_id)
                .where(
                    JOBS.c.target_type == "folder",
                    JOBS.c.target_id.in_(folder_ids[i : i + _CHUNK]),
                    JOBS.c.state.in_(active),
                )
                .distinct()
            ).scalars()
        )
    return busy


def _queue(
    svc: Services,
    planned: dict[int, list[JobSpec]],
    out: Outcome,
    *,
    clear: bool,
    idle: Sequence[int] = (),
) -> None:
    """In one write transaction: skip datasets with work queued or running, queue the
    others' jobs; with ``clear`` (post-process), clear their marks and those of ``idle``
    (datasets with nothing to run), as ``mediamirror postprocess`` does."""
    with svc.catalog.write() as conn:
        busy = _busy(conn, sorted(planned))
        if busy:
            out.skip("already queued or running", len(busy))
        specs = [s for fid, ss in planned.items() if fid not in busy for s in ss]
        out.datasets = len(planned) - len(busy)
        queued = enqueue_in(conn, specs, svc.retry_policy.max_attempts)
        out.queued = [job_id for job_id, _ in queued]
        if clear:
            ids = sorted((set(planned) - busy) | set(idle))
            for i in range(0, len(ids), _CHUNK):
                clear_marks(conn, ids[i : i + _CHUNK])


@router.post("/bulk/postprocess")
def bulk_postprocess(body: FoldersBody, svc: Svc, _: Admin) -> dict[str, Any]:
    """Post-process the selected datasets (and those under selected folders) that are
    not processed yet: marked for post-processing, or still pending (DIVE's retry)."""
    out = Outcome()
    rows = _selected(svc.catalog, body.folder_ids, out)
    todo = [r for r in rows if marked(r.meta) or pending(r.meta)]
    if len(todo) < len(rows):
        out.skip("already processed (use reprocess)", len(rows) - len(todo))
    deferred: list[str] = []
    chosen = list(
        settled(svc.catalog, _with_items(svc.catalog, todo), svc.settings.settle_seconds, deferred)
    )
    if deferred:
        out.skip("waiting for files still being written", len(deferred))
    profiles = source_profiles(svc.catalog)
    planned: dict[int, list[JobSpec]] = {}
    idle: list[int] = []
    for ds in chosen:
        profile = profiles.get(ds.source_id) if ds.source_id is not None else None
        specs = [
            JobSpec(p.name, "folder", ds.id, p.input_version(ds))
            for p in for_dataset(svc.settings, ds, profile=profile)
            if p.inputs(ds)
        ]
        if specs:
            planned[ds.id] = specs
        else:
            idle.append(ds.id)
            out.skip("nothing to run")
    _queue(svc, planned, out, clear=True, idle=idle)
    return out.answer()


@router.post("/bulk/reprocess")
def bulk_reprocess(body: ReprocessBody, svc: Svc, _: Admin) -> dict[str, Any]:
    """Run the selected datasets' processors again (or only ``processor``)."""
    procs = registry(svc.settings)
    if body.processor is not None and body.processor not in procs:
        raise ConfigError(f"unknown processor {body.processor!r}: choose from {', '.join(procs)}")
    out = Outcome()
    rows = _selected(svc.catalog, body.folder_ids, out)
    profiles = source_profiles(svc.catalog)
    planned: dict[int, list[JobSpec]] = {}
    for ds in _with_items(svc.catalog, rows):
        profile = profiles.get(ds.source_id) if ds.source_id is not None else None
        if body.processor is not None:
            if profile is not None and not profile.allows(body.processor):
                out.skip(f"left out of {body.processor!r} by their source's profile")
                continue
            chosen = [procs[body.processor]]
        else:
            chosen = for_dataset(svc.settings, ds, auto_only=True, profile=profile)
        chosen = [p for p in chosen if ds.type in p.dataset_types and p.inputs(ds)]
        if not chosen:
            out.skip("nothing to run")
            continue
        # The same job values as ``mediamirror reprocess`` (without new arguments).
        planned[ds.id] = [
            JobSpec(p.name, "folder", ds.id, p.input_version(ds), {"reprocess": True})
            for p in chosen
        ]
    _queue(svc, planned, out, clear=False)
    return out.answer()


@router.post("/bulk/retry")
def bulk_retry(body: RetryBody, svc: Svc, _: Admin) -> dict[str, Any]:
    """Queue failed or canceled jobs again: by id, or every failed job of a failure
    group (``reason``: a group key from ``GET /api/v1/failures``)."""
    if body.reason is not None:
        with svc.catalog.read() as conn:
            ids = failures.job_ids_of(conn, body.reason, svc.catalog.url)
        if ids is None:
            raise NotFoundError("no failed jobs with that reason (the inbox may have changed)")
    else:
        ids = list(body.job_ids or [])
    done = failures.retry_many(svc.catalog, ids)
    return {"queued": len(done.queued), "skipped": done.skipped, "message": done.line()}
