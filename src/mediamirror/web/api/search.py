"""Catalog search: ``GET /api/v1/search`` (viewer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from mediamirror.catalog import search as catalog_search
from mediamirror.web.deps import MAX_ID, Svc, Viewer
from mediamirror.web.thumbs import thumbnail_url

router = APIRouter(tags=["search"])


@router.get("/search")
def search(
    svc: Svc,
    _: Viewer,
    q: str = Query("", max_length=catalog_search.MAX_QUERY, description="Text in names and paths."),
    type: str | None = Query(
        None, description="video, image-sequence, large-image, dataset, folder."
    ),
    status: str | None = Query(None, description="ready, pending, error, new, present, empty."),
    source: str | None = Query(None, description="Source name."),
    processor_state: str | None = Query(
        None, description="STATE or PROCESSOR:STATE: success, error, queued, running, canceled."
    ),
    meta: list[str] = Query([], description="key:value (repeatable; a.b reaches into objects)."),
    offset: int = Query(0, ge=0, le=MAX_ID),
    limit: int = Query(50, ge=1, le=catalog_search.MAX_LIMIT),
) -> dict[str, Any]:
    """Folders and datasets whose name or path contains every word of ``q``, ranked (exact
    name, name prefix, name substring, path; shorter paths first), one page at a time."""
    page = catalog_search.search(
        svc.catalog,
        q,
        type=type,
        status=status,
        source=source,
        processor_state=processor_state,
        meta=meta,
        limit=limit,
        offset=offset,
    )
    return page.as_dict(thumbnail_url)
