"""The overview (the UI's home) and the failures inbox.

``GET /overview`` is a handful of aggregate queries, whatever the catalog's size: sources
with their last sync run and push events of the last day, datasets by status and type,
jobs by state with throughput. ``GET /failures`` lists failed jobs grouped by reason
(:mod:`mediamirror.jobs.failures`), a page of groups at a time, each with the datasets
it touches.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import Connection, String, and_, case, false, func, or_, select

from mediamirror.catalog.models import FOLDERS, SOURCES, SYNC_RUNS, utcnow
from mediamirror.jobs import failures
from mediamirror.jobs.model import JOBS, JobStatus
from mediamirror.processing.processors import registry
from mediamirror.web.api.jobs import _add_targets
from mediamirror.web.deps import Offset, Svc, Viewer
from mediamirror.web.models import EVENTS

router = APIRouter(tags=["overview"])

#: Datasets listed with each failure group (the group's total is given beside them).
GROUP_DATASETS = 10
#: Event outcomes that mean a push did not work.
_EVENT_PROBLEMS = ("rejected", "error")
_ENDED = (JobStatus.SUCCESS.value, JobStatus.ERROR.value)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _sources(conn: Connection) -> list[dict[str, Any]]:
    last = select(func.max(SYNC_RUNS.c.id)).group_by(SYNC_RUNS.c.source_id)
    runs = {r.source_id: r for r in conn.execute(select(SYNC_RUNS).where(SYNC_RUNS.c.id.in_(last)))}
    ok = select(SYNC_RUNS.c.source_id, func.max(SYNC_RUNS.c.finished_at)).where(
        SYNC_RUNS.c.state == "success"
    )
    last_ok = dict(conn.execute(ok.group_by(SYNC_RUNS.c.source_id)).all())
    day = utcnow() - timedelta(days=1)
    events: dict[int, dict[str, Any]] = {}
    query = (
        select(EVENTS.c.source_id, EVENTS.c.outcome, func.count(), func.max(EVENTS.c.received_at))
        .where(EVENTS.c.received_at >= day, EVENTS.c.source_id.is_not(None))
        .group_by(EVENTS.c.source_id, EVENTS.c.outcome)
    )
    for source_id, outcome, n, at in conn.execute(query):
        seen = events.setdefault(source_id, {"received": 0, "problems": 0, "last_at": None})
        seen["received"] += int(n)
        seen["problems"] += int(n) if outcome in _EVENT_PROBLEMS else 0
        seen["last_at"] = max(filter(None, (seen["last_at"], at)), default=None)
    mounts = select(FOLDERS.c.path, FOLDERS.c.id).where(FOLDERS.c.path.in_(select(SOURCES.c.mount)))
    folder_of = dict(conn.execute(mounts).all())
    out = []
    for src in conn.execute(select(SOURCES).order_by(SOURCES.c.name)):
        run = runs.get(src.id)
        seen = events.get(src.id, {"received": 0, "problems": 0, "last_at": None})
        out.append(
            {
                "name": src.name,
                "url": src.url,
                "kind": src.kind,
                "mount": src.mount,
                "mount_folder_id": folder_of.get(src.mount),
                "schedule": (src.options or {}).get("schedule"),
                "health": _health(run),
                "last_sync": _run(run),
                "last_success_at": _iso(last_ok.get(src.id)),
                "events_24h": {**seen, "last_at": _iso(seen["last_at"])},
            }
        )
    return out


def _health(run: Any) -> str:
    """``ok``, ``error`` (the last sync failed), ``syncing`` or ``never synced``."""
    if run is None:
        return "never synced"
    return {"success": "ok", "error": "error", "running": "syncing"}.get(run.state, str(run.state))


def _run(run: Any) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "state": run.state,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "added": run.added,
        "changed": run.changed,
        "deleted": run.deleted,
        "error": run.error,
    }


def _datasets(conn: Connection, processors: list[str]) -> dict[str, Any]:
    """Datasets by status (the words of ``catalog.tree.dataset_status``) and by type, in
    one aggregate query over the folders."""
    meta = FOLDERS.c.meta
    kind = meta["type"].as_string()
    failed = [meta[("processing", p, "state")].as_string() == "error" for p in processors]
    marked = meta["MarkForPostProcess"].as_json().cast(String).in_(["true", "1"])
    ready = meta["annotate"].as_json().cast(String).in_(["true", "1"])
    status = case(
        (or_(*failed) if failed else false(), "error"),
        (marked, "pending"),
        (ready, "ready"),
        else_="new",
    )
    query = (
        select(kind.label("kind"), status.label("status"), func.count())
        .where(kind.is_not(None), FOLDERS.c.state == "present")
        .group_by("kind", "status")
    )
    by_status: dict[str, int] = {"ready": 0, "pending": 0, "error": 0, "new": 0}
    by_type: dict[str, int] = {}
    total = 0
    for kind_, status_, n in conn.execute(query):
        by_status[status_] = by_status.get(status_, 0) + int(n)
        by_type[kind_] = by_type.get(kind_, 0) + int(n)
        total += int(n)
    return {"total": total, "by_status": by_status, "by_type": by_type}


def _jobs(conn: Connection) -> dict[str, Any]:
    by_state = {s.value: 0 for s in JobStatus}
    by_state.update(
        {
            state: int(n)
            for state, n in conn.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state))
        }
    )
    now = utcnow()
    minute, hour = now - timedelta(minutes=1), now - timedelta(hours=1)
    ended = and_(JOBS.c.state.in_(_ENDED), JOBS.c.finished_at >= hour)
    row = conn.execute(
        select(
            func.count().filter(JOBS.c.finished_at >= minute),
            func.count(),
            func.count().filter(JOBS.c.state == JobStatus.ERROR.value),
        ).where(ended)
    ).one()
    return {
        "by_state": by_state,
        "finished_last_minute": int(row[0]),
        "finished_last_hour": int(row[1]),
        "failed_last_hour": int(row[2]),
    }


@router.get("/overview")
def overview(svc: Svc, _: Viewer) -> dict[str, Any]:
    """Sources and their health, datasets by status, jobs by state with throughput."""
    processors = list(registry(svc.settings))
    with svc.catalog.read() as conn:
        sources = _sources(conn)
        datasets = _datasets(conn, processors)
        jobs = _jobs(conn)
    return {
        "generated_at": utcnow().isoformat(),
        "sources": sources,
        "datasets": datasets,
        "jobs": jobs,
        "failed_jobs": jobs["by_state"][JobStatus.ERROR.value],
    }


@router.get("/failures")
def failure_groups(
    svc: Svc,
    _: Viewer,
    limit: int = Query(20, ge=1, le=200),
    offset: Offset = 0,
) -> dict[str, Any]:
    """Failed jobs grouped by reason, the largest group first; ``key`` is what
    ``POST /bulk/retry {"reason": key}`` takes."""
    with svc.catalog.read() as conn:
        found = failures.current_groups(conn, svc.catalog.url)
    page = found[offset : offset + limit]
    groups = []
    for group in page:
        touched = list(group.targets)
        jobs = [{"target_type": t, "target_id": i} for t, i in touched[:GROUP_DATASETS]]
        _add_targets(svc, jobs)
        datasets = {j["dataset_id"]: j["target_path"] for j in jobs if j["dataset_id"]}
        groups.append(
            {
                "key": group.key,
                "processor": group.processor,
                "jobs": group.jobs,
                "example": group.example,
                "last_failed_at": _iso(group.last_failed_at),
                "datasets": [{"id": i, "path": p} for i, p in datasets.items()],
                "targets": len(touched),
                "more_datasets": len(touched) > GROUP_DATASETS,
            }
        )
    return {
        "total_groups": len(found),
        "total_jobs": sum(g.jobs for g in found),
        "offset": offset,
        "limit": limit,
        "groups": groups,
    }
