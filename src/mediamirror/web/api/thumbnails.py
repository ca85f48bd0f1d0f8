"""``GET /api/v1/datasets/{id}/thumbnail``: the small picture folder listings show.

The bytes are sent by the service itself (a thumbnail is a few tens of KiB), read through
the dataset's source's output store, with a strong ``ETag`` and ``Cache-Control:
private``: a listing revisited within the max-age costs no request, and afterwards a
``304`` without a body. A presigned redirect would lose both headers.

The ``ETag`` is a digest of the file's key and its version in the output store (the
object's etag on S3, its mtime and size locally), so a ``304`` costs one ``HEAD`` (a
``stat`` locally) and no download; a thumbnail made again gets a new ``ETag``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select

from mediamirror.catalog.models import FOLDERS
from mediamirror.errors import NotFoundError
from mediamirror.web.deps import Id, Svc, Viewer
from mediamirror.web.thumbs import thumbnail_output

router = APIRouter(tags=["thumbnails"])

#: Seconds a browser may reuse a thumbnail without asking; then it revalidates (ETag).
MAX_AGE = 300
#: Larger than any thumbnail or poster the jobs make; a bigger file is not sent inline.
MAX_BYTES = 8 << 20
CACHE_CONTROL = f"private, max-age={MAX_AGE}"


def _thumbnail_of(svc: Any, folder_id: int) -> tuple[int, str]:
    """(source id, output key) of the dataset's thumbnail; NotFoundError when it has none."""
    with svc.catalog.read() as conn:
        row = conn.execute(
            select(FOLDERS.c.source_id, FOLDERS.c.meta).where(FOLDERS.c.id == folder_id)
        ).first()
    if row is None:
        raise NotFoundError(f"no folder {folder_id}")
    meta = dict(row.meta or {})
    if not meta.get("type"):
        raise NotFoundError(f"folder {folder_id} is not a dataset")
    key = thumbnail_output(meta)
    if key is None or row.source_id is None:
        raise NotFoundError(f"dataset {folder_id} has no thumbnail yet")
    return int(row.source_id), key


def etag_of(key: str, version: str) -> str:
    digest = hashlib.sha256(f"{key}\0{version}".encode()).hexdigest()
    return f'"{digest[:32]}"'


def media_type(data: bytes) -> str:
    """JPEG (what the jobs write), or WebP/PNG when a thumbnail was made so elsewhere."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    return "image/jpeg"


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


@router.get(
    "/datasets/{folder_id}/thumbnail",
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The thumbnail"},
        304: {"description": "Not modified (If-None-Match)"},
        404: {"description": "The dataset has no thumbnail"},
    },
)
def dataset_thumbnail(folder_id: Id, request: Request, svc: Svc, _: Viewer) -> Response:
    """A dataset's thumbnail: a large image's or image sequence's, or a video's poster."""
    source_id, key = _thumbnail_of(svc, folder_id)
    store = svc.output_store_for(source_id)
    try:
        info = store.inner.head(store.key(key))  # size and version in one request
    except NotFoundError:
        raise NotFoundError(
            f"the thumbnail of dataset {folder_id} is missing from its output store: "
            "reprocess the dataset to make it again"
        ) from None
    etag = etag_of(key, str(info.etag))
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if info.size > MAX_BYTES:
        raise NotFoundError(f"the thumbnail {key} is too large to show ({info.size} bytes)")
    data = store.read_range(key, 0, info.size) if info.size else b""
    headers["X-Content-Type-Options"] = "nosniff"
    return Response(data, media_type=media_type(data), headers=headers)
