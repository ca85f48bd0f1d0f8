"""Jobs (list, show, log, retry, cancel) and batch post-processing / re-processing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.errors import NotFoundError
from mediamirror.jobs import queue
from mediamirror.jobs.model import JobStatus
from mediamirror.postprocess import postprocess, reprocess
from mediamirror.web.deps import MAX_ID, Admin, Id, Svc, Viewer

router = APIRouter(tags=["jobs"])


def job_dict(row: Any, *, log: bool = False) -> dict[str, Any]:
    out = {c: getattr(row, c) for c in row._fields if c != "log_tail" or log}
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    out.pop("active_key", None)
    return out


@router.get("/jobs")
def list_jobs(
    svc: Svc,
    _: Viewer,
    state: list[JobStatus] = Query(default=[]),
    processor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> dict[str, Any]:
    rows = queue.listing(
        svc.catalog,
        states=[s.value for s in state],
        processor=processor,
        limit=limit,
        offset=offset,
    )
    jobs = [job_dict(r) for r in rows]
    _add_targets(svc, jobs)
    return {"counts": queue.counts(svc.catalog), "jobs": jobs}


def _add_targets(svc: Any, jobs: list[dict[str, Any]]) -> None:
    """Name each job's target (``target_path``, and ``dataset_id`` of the folder it shows
    in) with one query per target type, so the web UI can link jobs to datasets."""
    ids = {
        kind: {j["target_id"] for j in jobs if j["target_type"] == kind}
        for kind in ("folder", "item")
    }
    found: dict[tuple[str, int], tuple[str, int]] = {}
    with svc.catalog.read() as conn:
        if ids["folder"]:
            folders = select(FOLDERS.c.id, FOLDERS.c.path).where(FOLDERS.c.id.in_(ids["folder"]))
            found.update({("folder", r.id): (r.path, r.id) for r in conn.execute(folders)})
        if ids["item"]:
            items = select(ITEMS.c.id, ITEMS.c.key, ITEMS.c.folder_id)
            items = items.where(ITEMS.c.id.in_(ids["item"]))
            found.update({("item", r.id): (r.key, r.folder_id) for r in conn.execute(items)})
    for job in jobs:
        path, dataset_id = found.get((job["target_type"], job["target_id"]), (None, None))
        job["target_path"], job["dataset_id"] = path, dataset_id


@router.get("/jobs/{job_id}")
def show_job(job_id: Id, svc: Svc, _: Viewer) -> dict[str, Any]:
    return job_dict(queue.get(svc.catalog, job_id), log=True)


@router.get("/jobs/{job_id}/log")
def job_log(job_id: Id, svc: Svc, _: Viewer) -> dict[str, Any]:
    return {"id": job_id, "log": queue.get(svc.catalog, job_id).log_tail}


@router.post("/jobs/{job_id}/retry")
def retry_job(job_id: Id, svc: Svc, _: Admin) -> dict[str, Any]:
    queue.retry(svc.catalog, job_id)
    return job_dict(queue.get(svc.catalog, job_id))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: Id, svc: Svc, _: Admin) -> dict[str, Any]:
    outcome = queue.cancel(svc.catalog, job_id)
    return {**job_dict(queue.get(svc.catalog, job_id)), "outcome": outcome}


class PostprocessBody(BaseModel):
    limit: int | None = Field(default=None, ge=1)
    skipTranscoding: bool = False
    onlyPending: bool = False
    recursive: bool = True


def _folder_path(svc: Any, folder_id: int) -> str:
    with svc.catalog.read() as conn:
        row = conn.execute(select(FOLDERS.c.path).where(FOLDERS.c.id == folder_id)).first()
    if row is None:
        raise NotFoundError(f"no folder {folder_id}")
    return str(row.path)


def _postprocess(svc: Any, folder_id: int, body: PostprocessBody) -> dict[str, Any]:
    plan = postprocess(
        svc,
        _folder_path(svc, folder_id),
        recursive=body.recursive,
        limit=body.limit,
        skip_transcoding=body.skipTranscoding,
        only_pending=body.onlyPending,
    )
    return {"datasets": len(plan.datasets), "queued": plan.queued, "message": plan.line()}


@router.post("/folders/{folder_id}/postprocess")
def batch_postprocess(
    folder_id: Id, svc: Svc, _: Admin, body: PostprocessBody | None = None
) -> dict[str, Any]:
    """Queue post-processing of the marked datasets under a folder, then clear the marks."""
    return _postprocess(svc, folder_id, body or PostprocessBody())


@router.post("/dive_rpc/batch_postprocess/{folder_id}")
def dive_batch_postprocess(
    folder_id: Id,
    svc: Svc,
    _: Admin,
    limit: int | None = Query(None, ge=1),
    skipTranscoding: bool = False,
    onlyPending: bool = False,
) -> dict[str, Any]:
    """DIVE-compatible alias of batch post-process (query parameters, as DIVE sends them)."""
    body = PostprocessBody(limit=limit, skipTranscoding=skipTranscoding, onlyPending=onlyPending)
    return _postprocess(svc, folder_id, body)


class ReprocessBody(BaseModel):
    processor: str | None = None
    prefix: str | None = None
    args: str | None = None
    limit: int | None = Field(default=None, ge=1)
    dry_run: bool = False


@router.post("/folders/{folder_id}/reprocess")
def folder_reprocess(folder_id: Id, body: ReprocessBody, svc: Svc, _: Admin) -> dict[str, Any]:
    """Run a processor again on the datasets under a folder, optionally with new args."""
    plan = reprocess(
        svc,
        _folder_path(svc, folder_id),
        processor=body.processor,
        prefix=body.prefix,
        args=body.args,
        limit=body.limit,
        dry_run=body.dry_run,
    )
    return {
        "datasets": plan.datasets,
        "jobs": [{"processor": s.processor, "target_id": s.target_id} for s in plan.specs],
        "queued": plan.queued,
        "dry_run": body.dry_run,
    }
