"""Folders (the tree, paginated and sorted), datasets, items, and their media."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import Select, func, select
from starlette.types import Message, Receive, Scope, Send

from mediamirror.catalog.models import FOLDERS, ITEMS, SOURCES
from mediamirror.catalog.tree import dataset_status, modified_text
from mediamirror.errors import NotFoundError
from mediamirror.jobs.model import JOBS
from mediamirror.web.deps import MAX_ID, Id, Svc, Viewer
from mediamirror.web.security import disposition
from mediamirror.web.thumbs import thumbnail_url

router = APIRouter(tags=["browse"])
Sort = Literal["name", "-name", "updated", "-updated"]


def folder_dict(row: Any) -> dict[str, Any]:
    meta = dict(row.meta or {})
    return {
        "id": row.id,
        "name": row.name,
        "path": row.path,
        "parent_id": row.parent_id,
        "type": meta.get("type"),
        "status": dataset_status(meta),
        "state": row.state,
        "updated_at": row.updated_at.isoformat(),
        "meta": meta,
        "thumbnail": thumbnail_url(row.id, meta),
    }


def item_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key,
        "name": row.name,
        "folder_id": row.folder_id,
        "size": row.size,
        "etag": row.etag,
        "last_modified": row.last_modified.isoformat(),
        "state": row.state,
        "content_url": f"/api/v1/items/{row.id}/content",
    }


#: At most this many items in a dataset page (the rest: ``/folders/{id}/items``).
DATASET_ITEMS = 5000


class FastJSON(Response):
    """A JSON body serialized once with the C encoder: big pages (a dataset's 5,000 items,
    10,000 frames) skip FastAPI's per-value ``jsonable_encoder`` walk, which costs more
    than the query. Same bytes as Starlette's ``JSONResponse``."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("utf-8")


def iso_utc(value: Any) -> str:
    """``UTCDateTime``'s value as ``datetime.isoformat()`` gives it, from the driver's raw
    value: SQLite's stored text (``YYYY-MM-DD HH:MM:SS.ffffff``), the ISO text PostgreSQL
    wrote (``catalog.tree.modified_text``) or a naive UTC datetime.
    Thousands of rows a page: string slicing instead of a datetime object per row."""
    if isinstance(value, str):
        if len(value) == 26 and value[19] == ".":
            frac = "" if value.endswith(".000000") else value[19:]
            return f"{value[:10]}T{value[11:19]}{frac}+00:00"
        if value.endswith("+00:00"):
            return value  # already written in this form by the database (PostgreSQL)
        value = datetime.fromisoformat(value)  # any other stored form: parse it
    if value.tzinfo is None:
        return str(value.isoformat()) + "+00:00"
    return str(value.isoformat())


def item_page(conn: Any, cond: Any, *, offset: int = 0, limit: int) -> str:
    """Items matching ``cond`` in key order, shaped as :func:`item_dict` shapes them, as
    one JSON array (text).

    Past the first page, the page's ids are picked from ``ix_items_folder_key`` alone (an
    index-only scan that skips OFFSET rows without reading them), then only those rows
    are read."""
    query = select(*_ITEM_PAGE_COLUMNS, modified_text(conn.dialect.name), ITEMS.c.state)
    if offset:
        ids = select(ITEMS.c.id).where(cond).order_by(ITEMS.c.key).offset(offset).limit(limit)
        page = ids.subquery()
        query = query.join(page, page.c.id == ITEMS.c.id)
    else:
        query = query.where(cond).limit(limit)
    rows = conn.execute(query.order_by(ITEMS.c.key))
    return "[" + ",".join([_item_json(*r) for r in rows]) + "]"


#: An item row's columns for pages of items (then its time, then its state).
_ITEM_PAGE_COLUMNS = (
    ITEMS.c.id,
    ITEMS.c.key,
    ITEMS.c.name,
    ITEMS.c.folder_id,
    ITEMS.c.size,
    ITEMS.c.etag,
)

#: A string as JSON text, as ``json.dumps(..., ensure_ascii=False)`` writes it (C code).
_str = encode_basestring


def _item_json(
    id_: int, key: str, name: str, folder_id: int, size: int, etag: str, modified: Any, state: str
) -> str:
    """One row as :func:`item_dict`'s JSON, written directly: no dict, no encoder walk.
    Thousands of rows a page, and no container per row left for the garbage collector."""
    return (
        f'{{"id":{id_},"key":{_str(key)},"name":{_str(name)},"folder_id":{folder_id},'
        f'"size":{size},"etag":{_str(etag)},"last_modified":"{iso_utc(modified)}",'
        f'"state":{_str(state)},"content_url":"/api/v1/items/{id_}/content"}}'
    )


class RawJSON(Response):
    """A JSON object whose big parts (thousands of rows) are JSON text written already:
    the rest is encoded once (as :class:`FastJSON` does) and those parts set in as they
    are, neither parsed nor encoded again."""

    media_type = "application/json"

    def __init__(self, content: dict[str, Any], raw: dict[str, str]) -> None:
        marks = {key: f"{_MARK}{key}" for key in raw}
        body = json.dumps(
            {**content, **marks}, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        for key, mark in marks.items():
            body = body.replace(json.dumps(mark), raw[key], 1)
        super().__init__(body.encode())


#: Stands in for a part set in by :class:`RawJSON`; no stored text can look like it.
_MARK = f"raw-json-{secrets.token_hex(16)}:"


def _folder(conn: Any, folder_id: int) -> Any:
    row = conn.execute(select(FOLDERS).where(FOLDERS.c.id == folder_id)).first()
    if row is None:
        raise NotFoundError(f"no folder {folder_id}")
    return row


def _breadcrumbs(conn: Any, row: Any) -> list[dict[str, Any]]:
    # Ancestors are the prefixes of the path: one query, not one per level.
    parts = row.path.strip("/").split("/")
    paths = ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
    found = {
        r.path: r.id
        for r in conn.execute(select(FOLDERS.c.id, FOLDERS.c.path).where(FOLDERS.c.path.in_(paths)))
    }
    return [{"id": found.get(p), "name": p.rsplit("/", 1)[-1], "path": p} for p in paths]


def _sorted(query: Select[Any], sort: Sort) -> Select[Any]:
    # Ties broken by id in the same direction: the whole order is one index's
    # (ix_folders_parent_name_id, ix_folders_parent_updated), read forwards or backwards.
    column = FOLDERS.c.name if sort.endswith("name") else FOLDERS.c.updated_at
    if sort.startswith("-"):
        return query.order_by(column.desc(), FOLDERS.c.id.desc())
    return query.order_by(column.asc(), FOLDERS.c.id.asc())


@router.get("/folders/{folder_id}")
def get_folder(folder_id: Id, svc: Svc, _: Viewer) -> dict[str, Any]:
    with svc.catalog.read() as conn:
        row = _folder(conn, folder_id)
        out = folder_dict(row)
        out["breadcrumbs"] = _breadcrumbs(conn, row)
        out["counts"] = {
            "folders": conn.execute(
                select(func.count()).where(FOLDERS.c.parent_id == folder_id)
            ).scalar_one(),
            "items": conn.execute(
                select(func.count()).where(ITEMS.c.folder_id == folder_id)
            ).scalar_one(),
        }
    return out


@router.get("/folders", response_class=FastJSON)
def root_folders(
    svc: Svc,
    _: Viewer,
    offset: int = Query(0, ge=0, le=MAX_ID),
    limit: int = Query(50, ge=1, le=500),
    sort: Sort = "name",
) -> FastJSON:
    """Top-level folders (source mounts and their parents)."""
    return FastJSON(_children(svc, None, offset, limit, sort))


@router.get("/folders/{folder_id}/children", response_class=FastJSON)
def child_folders(
    folder_id: Id,
    svc: Svc,
    _: Viewer,
    offset: int = Query(0, ge=0, le=MAX_ID),
    limit: int = Query(50, ge=1, le=500),
    sort: Sort = "name",
) -> FastJSON:
    """Sub-folders and datasets of a folder, one page at a time."""
    return FastJSON(_children(svc, folder_id, offset, limit, sort))


def _children(
    svc: Any, folder_id: int | None, offset: int, limit: int, sort: Sort
) -> dict[str, Any]:
    cond = FOLDERS.c.parent_id.is_(None) if folder_id is None else FOLDERS.c.parent_id == folder_id
    with svc.catalog.read() as conn:
        if folder_id is not None:
            _folder(conn, folder_id)
        total = conn.execute(select(func.count()).where(cond)).scalar_one()
        # Ids first, from the sort's index alone (skipped OFFSET rows are never read;
        # PostgreSQL would otherwise sort every child), then the page's rows.
        page = _sorted(select(FOLDERS.c.id).where(cond), sort).offset(offset).limit(limit)
        picked = page.subquery()
        query = select(FOLDERS).join(picked, picked.c.id == FOLDERS.c.id)
        folders = [folder_dict(r) for r in conn.execute(_sorted(query, sort))]
    return {"total": total, "offset": offset, "limit": limit, "folders": folders}


@router.get("/folders/{folder_id}/items", response_class=FastJSON)
def folder_items(
    folder_id: Id,
    svc: Svc,
    _: Viewer,
    offset: int = Query(0, ge=0, le=MAX_ID),
    limit: int = Query(100, ge=1, le=1000),
    include_deleted: bool = False,
) -> RawJSON:
    cond = ITEMS.c.folder_id == folder_id
    if not include_deleted:
        cond = cond & (ITEMS.c.state == "present")
    with svc.catalog.read() as conn:
        _folder(conn, folder_id)
        # Counted and skipped in ix_items_folder_key alone (state is in the index).
        total = conn.execute(select(func.count()).select_from(ITEMS).where(cond)).scalar_one()
        items = item_page(conn, cond, offset=offset, limit=limit)
    return RawJSON({"total": total, "offset": offset, "limit": limit}, {"items": items})


@router.get("/datasets/{folder_id}", response_class=FastJSON)
def get_dataset(folder_id: Id, svc: Svc, _: Viewer) -> RawJSON:
    """A dataset with its metadata, outputs, media URLs and job history."""
    with svc.catalog.read() as conn:
        row = _folder(conn, folder_id)
        if not (row.meta or {}).get("type"):
            raise NotFoundError(f"folder {folder_id} is not a dataset")
        out = folder_dict(row)
        out["breadcrumbs"] = _breadcrumbs(conn, row)
        present = (ITEMS.c.folder_id == folder_id) & (ITEMS.c.state == "present")
        out["items"] = None  # this place in the body's key order
        items = item_page(conn, present, limit=DATASET_ITEMS)
        jobs = conn.execute(
            select(JOBS)
            .where(JOBS.c.target_type == "folder", JOBS.c.target_id == folder_id)
            .order_by(JOBS.c.id.desc())
            .limit(50)
        ).all()
        out["jobs"] = [
            {
                "id": j.id,
                "processor": j.processor,
                "state": j.state,
                "progress": j.progress,
                "error": j.error,
                "message": j.message,
                "attempts": j.attempts,
                "created_at": j.created_at.isoformat(),
                "finished_at": j.finished_at.isoformat() if j.finished_at else None,
            }
            for j in jobs
        ]
    out["media"] = _media_urls(folder_id, out["meta"])
    return RawJSON(out, {"items": items})


def _media_urls(folder_id: int, meta: dict[str, Any]) -> dict[str, Any]:
    outputs = meta.get("outputs") or {}
    base = f"/api/v1/datasets/{folder_id}"
    media: dict[str, Any] = {}
    if meta.get("type") == "video" and meta.get("annotate"):
        media["video"] = f"{base}/video"
    if outputs.get("poster"):
        media["poster"] = f"{base}/poster"
    if outputs.get("pyramid"):
        media["iiif"] = f"/iiif/3/{folder_id}/info.json"
    if meta.get("type") == "image-sequence":
        media["frames"] = f"{base}/frames"
    return media


def _serve(kind: str, target: str, name: str) -> Response:
    """Every endpoint that sends stored bytes goes through here: inline only what a browser
    merely displays, anything else as an attachment (see :func:`security.disposition`)."""
    if kind == "url":
        # Presigned: served by the bucket, from its own origin, never with our cookies.
        return RedirectResponse(target, status_code=307)
    how = disposition(name)
    return MediaFile(
        target,
        media_type=how.media_type,
        headers={"Cache-Control": "private, max-age=300"},
        filename=None if how.inline else name.rsplit("/", 1)[-1],
        content_disposition_type="inline" if how.inline else "attachment",
    )


_RANGE_ERRORS = {400: "malformed Range header", 416: "requested range not satisfiable"}


class MediaFile(FileResponse):
    """A file served with range requests, whose refusals of a bad ``Range`` header (plain
    text in Starlette) use the API's JSON error shape like every other error."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: list[Message] = []

        async def relay(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in _RANGE_ERRORS:
                held.append(message)
                return
            if not held:
                await send(message)
                return
            status = held[0]["status"]
            body = json.dumps({"error": _RANGE_ERRORS[status], "status": status}).encode()
            skip = {b"content-type", b"content-length"}
            headers = [(k, v) for k, v in held[0]["headers"] if k.lower() not in skip]
            headers += [(b"content-type", b"application/json")]
            headers += [(b"content-length", str(len(body)).encode())]
            await send({**held[0], "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await super().__call__(scope, receive, relay)


def _meta(svc: Any, folder_id: int) -> tuple[Any, dict[str, Any]]:
    with svc.catalog.read() as conn:
        row = _folder(conn, folder_id)
    return row, dict(row.meta or {})


@router.get("/datasets/{folder_id}/video")
def dataset_video(folder_id: Id, svc: Svc, _: Viewer) -> Response:
    """The playable video (HTTP range requests): the transcode, or the original if kept."""
    row, meta = _meta(svc, folder_id)
    rel = (meta.get("outputs") or {}).get("video")
    if rel:
        kind, target = svc.output_store_for(row.source_id).locate(rel)
        return _serve(kind, target, rel)
    original = (meta.get("outputs") or {}).get("original")
    if original and row.source_id is not None:  # a feed record's kept file: no CMS needed
        kind, target = svc.output_store_for(row.source_id).locate(original)
        return _serve(kind, target, original)
    key = (meta.get("media") or {}).get("item")
    if not key or row.source_id is None:
        raise NotFoundError("this dataset has no playable video yet")
    kind, target = svc.source_store(row.source_id).locate(key)
    return _serve(kind, target, key)


@router.get("/datasets/{folder_id}/poster")
def dataset_poster(folder_id: Id, svc: Svc, _: Viewer) -> Response:
    row, meta = _meta(svc, folder_id)
    rel = (meta.get("outputs") or {}).get("poster")
    if not rel:
        raise NotFoundError("this dataset has no poster")
    kind, target = svc.output_store_for(row.source_id).locate(rel)
    return _serve(kind, target, rel)


@router.get("/datasets/{folder_id}/frames", response_class=FastJSON)
def dataset_frames(folder_id: Id, svc: Svc, _: Viewer) -> RawJSON:
    """Frame URLs of an image sequence, in order (web versions where converted)."""
    from mediamirror.sync.layout import IMAGE_EXTENSIONS

    _, meta = _meta(svc, folder_id)
    converted = (meta.get("outputs") or {}).get("frames") or {}
    frames = []
    with svc.catalog.read() as conn:
        rows = conn.execute(
            select(ITEMS.c.id, ITEMS.c.key, ITEMS.c.name)
            .where(ITEMS.c.folder_id == folder_id, ITEMS.c.state == "present")
            .order_by(ITEMS.c.key)
        )
        for item_id, key, name in rows:
            dot = name.rfind(".")  # sync.layout.extension, inline: 10,000 rows a request
            if dot > 0 and name[dot + 1 :].lower() in IMAGE_EXTENSIONS:
                web = "?web=1" if key in converted else ""
                frames.append(
                    f'{{"item_id":{item_id},"name":{_str(name)},'
                    f'"url":"/api/v1/items/{item_id}/content{web}"}}'
                )
    body = {"fps": meta.get("fps"), "frames": None}
    return RawJSON(body, {"frames": "[" + ",".join(frames) + "]"})


@router.get("/items/{item_id}")
def get_item(item_id: Id, svc: Svc, _: Viewer) -> dict[str, Any]:
    with svc.catalog.read() as conn:
        row = conn.execute(
            select(ITEMS, SOURCES.c.name.label("source"))
            .join(SOURCES, SOURCES.c.id == ITEMS.c.source_id)
            .where(ITEMS.c.id == item_id)
        ).first()
    if row is None:
        raise NotFoundError(f"no item {item_id}")
    return {**item_dict(row), "source": row.source}


@router.get("/items/{item_id}/content")
def item_content(item_id: Id, svc: Svc, _: Viewer, web: bool = False) -> Response:
    """The object's bytes (range requests), or its web version for converted frames."""
    with svc.catalog.read() as conn:
        row = conn.execute(select(ITEMS).where(ITEMS.c.id == item_id)).first()
        folder = (
            conn.execute(select(FOLDERS.c.meta).where(FOLDERS.c.id == row.folder_id)).first()
            if row
            else None
        )
    if row is None or row.state != "present":
        raise NotFoundError(f"no item {item_id} in the bucket")
    if web and folder is not None:
        rel = ((folder.meta or {}).get("outputs") or {}).get("frames", {}).get(row.key)
        if rel:
            kind, target = svc.output_store_for(row.source_id).locate(rel)
            return _serve(kind, target, rel)
    kind, target = svc.source_store(row.source_id).locate(row.key)
    return _serve(kind, target, row.name)
