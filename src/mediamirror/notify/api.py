"""``GET /api/v1/notifications`` and ``POST /api/v1/notifications/test`` (admin).

Notifications name datasets, failures and their reasons: only admins read them, and only
admins may make the service send mail or call webhooks."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Query

from mediamirror.notify.status import listing, send_test
from mediamirror.web.deps import Admin, Offset, Svc

router = APIRouter(tags=["notifications"])


class Kind(StrEnum):
    DATASET_READY = "dataset.ready"
    JOB_FAILED = "job.failed"
    SYNC_FAILED = "sync.failed"
    SYNC_FINISHED = "sync.finished"
    TEST = "test"


@router.get("/notifications")
def list_notifications(
    svc: Svc,
    _: Admin,
    kind: Kind | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: Offset = 0,
) -> dict[str, Any]:
    """Notifications newest first, each with its deliveries (channel, state, attempts,
    last status and error, and every attempt); a digest delivery shows under each
    notification it covers."""
    total, rows = listing(
        svc.catalog, kind=kind.value if kind else None, limit=limit, offset=offset
    )
    return {"total": total, "offset": offset, "limit": limit, "notifications": rows}


@router.post("/notifications/test")
def test_notifications(svc: Svc, _: Admin) -> dict[str, Any]:
    """Send a test message on every configured channel now; one line per channel says
    where it went or why it failed (``ok`` is false when any channel failed). 400 when no
    channel is configured."""
    results = send_test(svc)
    return {
        "ok": all(r.ok for r in results),
        "lines": [r.line for r in results],
        "results": [r.as_dict() for r in results],
    }
