"""Sources: create, list, show, remove, sync now, sync runs."""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from mediamirror import sources as src_service
from mediamirror.catalog.leases import owner_is_dead
from mediamirror.catalog.models import FOLDERS, LEASES, utcnow
from mediamirror.errors import ConfigError, ConflictError
from mediamirror.profiles import profile_of
from mediamirror.stores.output import derived_specs
from mediamirror.web.deps import Admin, Svc, Viewer

router = APIRouter(tags=["sources"])
log = logging.getLogger(__name__)
#: (catalog, source id) of the syncs this process started that have not finished yet.
_started: set[tuple[str, int]] = set()
_started_lock = threading.Lock()


class NewSource(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    url: str = Field(min_length=1, max_length=2000)
    preset: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    mount: str | None = None
    include: str | None = None
    exclude: str | None = None
    schedule: str | None = Field(default=None, max_length=200)
    check: bool = True
    # The source's processing profile (``profile`` above is the AWS profile of its store).
    images: str | None = Field(default=None, max_length=50)
    processors: str | list[str] | None = None
    output_url: str | None = Field(default=None, max_length=2000)
    output_layout: str | None = Field(default=None, max_length=50)
    output_endpoint_url: str | None = Field(default=None, max_length=2000)


_PROFILE_FIELDS = ("images", "processors", "output_url", "output_layout", "output_endpoint_url")


class SourceChange(BaseModel):
    """``PATCH``: the values to change; a missing one is kept, ``""`` goes back to the
    default (``processors``: ``"all"``), as ``mediamirror source set`` does."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field must not be a silent no-op

    images: str | None = Field(default=None, max_length=50)
    processors: str | list[str] | None = None
    output_url: str | None = Field(default=None, max_length=2000)
    output_layout: str | None = Field(default=None, max_length=50)
    output_endpoint_url: str | None = Field(default=None, max_length=2000)
    include: str | None = Field(default=None, max_length=2000)
    exclude: str | None = Field(default=None, max_length=2000)
    schedule: str | None = Field(default=None, max_length=200)


_CHANGEABLE = tuple(SourceChange.model_fields)


def source_dict(svc: Any, src: Any) -> dict[str, Any]:
    runs = src_service.recent_runs(svc.catalog, src.id, limit=1)
    return {
        "id": src.id,
        "name": src.name,
        "url": src.url,
        "mount": src.mount,
        "preset": src.preset,
        "endpoint_url": src.endpoint_url,
        "region": src.region,
        "aws_profile": src.profile,  # "profile" below is the processing profile
        "credentials": dict(src.credentials or {}),
        "include": src.include,
        "exclude": src.exclude,
        "schedule": (src.options or {}).get("schedule"),
        "profile": profile_of(src).describe(),
        "created_at": src.created_at.isoformat(),
        "syncing": _syncing(svc, src.id),
        "last_run": runs[0] if runs else None,
        "mount_folder_id": _mount_folder_id(svc, src.mount),
    }


def _mount_folder_id(svc: Any, mount: str) -> int | None:
    """The catalog folder of the mount (None until the first sync creates it)."""
    with svc.catalog.read() as conn:
        found = conn.execute(select(FOLDERS.c.id).where(FOLDERS.c.path == mount)).scalar()
    return int(found) if found is not None else None


def _syncing(svc: Any, source_id: int) -> bool:
    if (svc.catalog.url, source_id) in _started:
        return True
    with svc.catalog.read() as conn:
        row = conn.execute(
            select(LEASES.c.owner, LEASES.c.expires_at).where(LEASES.c.name == f"sync:{source_id}")
        ).first()
    return row is not None and row.expires_at > utcnow() and not owner_is_dead(row.owner)


@router.get("/sources")
def list_sources(svc: Svc, _: Viewer) -> list[dict[str, Any]]:
    return [source_dict(svc, s) for s in src_service.list_sources(svc.catalog)]


@router.post("/sources", status_code=201)
def create_source(body: NewSource, svc: Svc, _: Admin) -> dict[str, Any]:
    plain = {"name", "url", "mount", "include", "exclude", "schedule", "check", *_PROFILE_FIELDS}
    options = body.model_dump(exclude=plain)
    src = src_service.add_source(
        svc.catalog,
        body.name,
        body.url,
        env=svc.env,
        mount=body.mount,
        include=body.include,
        exclude=body.exclude,
        check=body.check,
        outputs=derived_specs(svc.settings, svc.env),
        schedule=body.schedule or None,
        settings=svc.settings,
        images=body.images,
        processors=body.processors,
        output_url=body.output_url,
        output_layout=body.output_layout,
        output_endpoint_url=body.output_endpoint_url,
        **{k: v for k, v in options.items() if v is not None},
    )
    return source_dict(svc, src)


@router.patch("/sources/{name}")
def change_source(name: str, body: SourceChange, svc: Svc, _: Admin) -> dict[str, Any]:
    """Change a source's profile, filters or schedule (``mediamirror source set``); the
    answer is the source as it now is, with ``changed``: one ``what: old -> new`` each."""
    values = body.model_dump(exclude_unset=True)
    if not values:
        raise ConfigError(f"nothing to change: give one or more of {', '.join(_CHANGEABLE)}")
    src, changed = src_service.set_source(
        svc.catalog, name, env=svc.env, settings=svc.settings, **values
    )
    return {**source_dict(svc, src), "changed": changed}


@router.get("/sources/{name}")
def show_source(name: str, svc: Svc, _: Viewer) -> dict[str, Any]:
    return source_dict(svc, src_service.get_source(svc.catalog, name))


@router.delete("/sources/{name}")
def remove_source(name: str, svc: Svc, _: Admin) -> dict[str, str]:
    src_service.remove_source(svc.catalog, name)
    return {"status": "removed", "name": name}


@router.get("/sources/{name}/runs")
def sync_runs(name: str, svc: Svc, _: Viewer, limit: int = 20) -> list[dict[str, Any]]:
    src = src_service.get_source(svc.catalog, name)
    return src_service.recent_runs(svc.catalog, src.id, limit=max(1, min(limit, 200)))


@router.post("/sources/{name}/sync", status_code=202)
def sync_now(name: str, svc: Svc, _: Admin) -> dict[str, str]:
    """Start a sync in the background; its figures appear under /runs."""
    src = src_service.get_source(svc.catalog, name)
    # The lease is taken by the sync thread a moment later: until then only this set tells
    # a second request that a sync is on its way.
    with _started_lock:
        if _syncing(svc, src.id):
            raise ConflictError(f"source {name!r} is already being synced")
        _started.add((svc.catalog.url, src.id))

    def run() -> None:
        try:
            src_service.sync_source(svc.catalog, svc.settings, name, svc.env)
            if svc.settings.auto_postprocess:
                from mediamirror.postprocess import postprocess

                postprocess(svc, src.mount)
        except Exception:
            log.exception("sync of %s failed", name)
        finally:
            with _started_lock:
                _started.discard((svc.catalog.url, src.id))

    threading.Thread(target=run, name=f"sync-{name}", daemon=True).start()
    return {"status": "started", "source": name}
