"""Setting sources up from the browser: check a connection before saving, what removing
a source removes, and self-service push set-up (URL, token rotation, provider snippets,
recent events)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import func, select

from mediamirror import push_setup
from mediamirror import sources as src_service
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.errors import ConfigError
from mediamirror.events import record
from mediamirror.events.routing import create_push_token
from mediamirror.source_check import check_new_source
from mediamirror.stores.output import derived_specs
from mediamirror.web.api.sources import NewSource
from mediamirror.web.deps import Admin, Svc, Viewer

router = APIRouter(tags=["source-setup"])


@router.post("/sources/check")
def check_source(body: NewSource, svc: Svc, _: Admin) -> dict[str, Any]:
    """What ``POST /sources`` with this body would meet, saving nothing: the values
    checked as add checks them, then the store's first page listed with short timeouts.
    One line either way: ``{"ok": true, "keys": N, "seconds": 0.4, "message": "N keys
    seen in 0.4 s", "sample": [...]}`` or ``{"ok": false, "message": "<reason>"}``."""
    values = body.model_dump(exclude={"name", "url", "check"})
    store_options = {k: v for k, v in values.items() if v is not None}
    result = check_new_source(
        svc.catalog,
        body.name,
        body.url,
        env=svc.env,
        settings=svc.settings,
        outputs=derived_specs(svc.settings, svc.env),
        **store_options,
    )
    return result.as_dict()


@router.get("/sources/{name}/removal")
def removal(name: str, svc: Svc, _: Viewer) -> dict[str, Any]:
    """What removing the source takes out of the catalog (the bucket is never touched)."""
    src = src_service.get_source(svc.catalog, name)
    with svc.catalog.read() as conn:
        folders = conn.execute(
            select(func.count()).select_from(FOLDERS).where(FOLDERS.c.source_id == src.id)
        ).scalar_one()
        items = conn.execute(
            select(func.count()).select_from(ITEMS).where(ITEMS.c.source_id == src.id)
        ).scalar_one()
    return {
        "name": src.name,
        "url": src.url,
        "mount": src.mount,
        "folders": int(folders),
        "items": int(items),
        "message": (
            f"The catalog forgets {src.name}: its folder {src.mount} with the "
            f"{int(folders):,} folders and datasets and {int(items):,} items below it, and "
            f"its sync history. Nothing in {src.url} is touched, and files already written "
            "to the output store stay there."
        ),
    }


def _base_url(svc: Any, request: Request) -> str:
    return str(svc.settings.public_url or request.base_url).rstrip("/")


@router.get("/sources/{name}/push")
def push(name: str, request: Request, svc: Svc, _: Viewer) -> dict[str, Any]:
    """The source's push set-up: whether a token exists, the push URL with ``TOKEN`` in
    place of the token, the provider and its ready-to-paste snippets."""
    src = src_service.get_source(svc.catalog, name)
    return {"source": src.name, **push_setup.setup(src, _base_url(svc, request))}


@router.post("/sources/{name}/push-token")
def rotate_push_token(name: str, request: Request, svc: Svc, _: Admin) -> dict[str, Any]:
    """A new push token (the previous one stops working at once). The answer is the only
    time the token is shown: its URL and snippets carry it; only its hash is kept."""
    src = src_service.get_source(svc.catalog, name)
    if (why := push_setup.unsupported(src)) is not None:
        raise ConfigError(f"source {name!r}: {why}")
    src, token = create_push_token(svc.catalog, name)
    return {"source": src.name, **push_setup.setup(src, _base_url(svc, request), token)}


@router.get("/sources/{name}/events")
def source_events(
    name: str, svc: Svc, _: Viewer, limit: int = Query(20, ge=1, le=200)
) -> dict[str, Any]:
    """The last events received for the source with their outcomes, and its refused
    deliveries (counted per channel and reason)."""
    src = src_service.get_source(svc.catalog, name)
    total, rows = record.listing(svc.catalog, source=src.name, limit=limit)
    return {
        "total": total,
        "events": rows,
        "refusals": record.refusals(svc.catalog, source=src.name),
    }
