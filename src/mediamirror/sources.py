"""Sources: stores mirrored read-only into the catalog, each under its own mount folder."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, SOURCES, SYNC_RUNS, Source, utcnow
from mediamirror.config import Settings
from mediamirror.errors import ConfigError, ConflictError, MediamirrorError, NotFoundError
from mediamirror.logs import context as log_context
from mediamirror.notify import outbox
from mediamirror.stores import ReadOnlyStore, StoreSpec, open_store, parse_spec
from mediamirror.stores.output import check_apart
from mediamirror.stores.timeouts import StoreTimeouts
from mediamirror.sync.engine import SyncEngine, SyncSummary

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def normalize_mount(mount: str) -> str:
    """``/a/b`` form: absolute, no trailing slash, no empty, ``.`` or ``..`` segments."""
    if not mount.startswith("/"):
        raise ConfigError(f"mount {mount!r} must be an absolute catalog path like /media/x")
    parts = mount.strip("/").split("/")
    if parts == [""] or any(p in {"", ".", ".."} for p in parts):
        raise ConfigError(f"mount {mount!r} is not a valid catalog folder path")
    return "/" + "/".join(parts)


def _compile(pattern: str | None, what: str) -> str | None:
    if pattern is None:
        return None
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--{what} {pattern!r} is not a valid regular expression: {exc}") from exc
    return pattern


def spec_of(source: Source) -> StoreSpec:
    return StoreSpec(
        kind=source.kind,
        scheme=source.url.split("://", 1)[0],
        bucket=source.bucket,
        prefix=source.prefix,
        preset=source.preset,
        endpoint_url=source.endpoint_url,
        region=source.region,
        profile=source.profile,
        addressing=source.addressing,
        credentials=dict(source.credentials or {}),
    )


def source_store(
    source: Source,
    env: Mapping[str, str],
    page_size: int = 1000,
    timeouts: StoreTimeouts | None = None,
) -> ReadOnlyStore:
    """The source's store, read side only."""
    return ReadOnlyStore(open_store(spec_of(source), env, page_size=page_size, timeouts=timeouts))


def add_source(
    catalog: Catalog,
    name: str,
    url: str,
    *,
    env: Mapping[str, str],
    mount: str | None = None,
    include: str | None = None,
    exclude: str | None = None,
    check: bool = True,
    outputs: Sequence[StoreSpec] = (),
    schedule: str | None = None,
    **store_options: Any,
) -> Source:
    """Register a source after checking that its store can be listed and that it
    overlaps none of ``outputs`` (the stores derived files go to: see
    :func:`mediamirror.stores.output.derived_specs`). ``schedule``: a cron expression
    to re-sync it on while ``serve`` runs (see :mod:`mediamirror.scheduler`)."""
    from mediamirror.scheduler import validate

    if not _NAME.match(name):
        raise ConfigError(
            f"source name {name!r} must start with a letter or digit and use only "
            "letters, digits, '.', '_' and '-'"
        )
    spec = parse_spec(url, env=env, **store_options)
    mount = normalize_mount(mount or f"/{name}")
    source = Source(
        name=name,
        url=spec.url,
        kind=spec.kind,
        bucket=spec.bucket,
        prefix=spec.prefix,
        preset=spec.preset,
        endpoint_url=spec.endpoint_url,
        region=spec.region,
        profile=spec.profile,
        addressing=spec.addressing,
        credentials=spec.credentials,
        mount=mount,
        include=_compile(include, "include"),
        exclude=_compile(exclude, "exclude"),
        options={"schedule": validate(schedule)} if schedule else {},
    )
    check_apart(spec, outputs)  # after the plain validation: those errors are simpler
    with catalog.session() as session:
        if session.scalar(select(Source.id).where(Source.name == name)) is not None:
            raise ConflictError(f"a source named {name!r} already exists")
        for other in session.scalars(select(Source)):
            a, b = other.mount + "/", mount + "/"
            if a.startswith(b) or b.startswith(a):
                raise ConflictError(
                    f"mount {mount} overlaps source {other.name!r} mounted at {other.mount}"
                )
    if check:
        source_store(source, env).check()
    with catalog.session() as session:
        session.add(source)
        try:
            session.commit()
        except IntegrityError as exc:
            raise ConflictError(f"a source named {name!r} or mounted at {mount} exists") from exc
    return source


def list_sources(catalog: Catalog) -> list[Source]:
    with catalog.session(write=False) as session:
        return list(session.scalars(select(Source).order_by(Source.name)))


def get_source(catalog: Catalog, name: str) -> Source:
    with catalog.session(write=False) as session:
        source = session.scalar(select(Source).where(Source.name == name))
    if source is None:
        raise NotFoundError(f"no source named {name!r} (see: mediamirror source list)")
    return source


def remove_source(catalog: Catalog, name: str) -> None:
    """Forget a source and its part of the catalog. The store itself is never touched."""
    source = get_source(catalog, name)
    with catalog.write() as conn:
        # Folders first (children cascade), then the source with its items and runs.
        conn.execute(delete(FOLDERS).where(FOLDERS.c.path == source.mount))
        conn.execute(delete(SOURCES).where(SOURCES.c.id == source.id))


def sync_source(
    catalog: Catalog,
    settings: Settings,
    name: str,
    env: Mapping[str, str],
    progress: Callable[[int], None] | None = None,
) -> SyncSummary:
    """Run one incremental sync of a source."""
    source = get_source(catalog, name)
    try:
        store = source_store(
            source, env, settings.sync_page_size, StoreTimeouts.from_settings(settings)
        )
    except MediamirrorError as exc:
        # E.g. a credential variable missing: record it where people look for sync runs.
        _record_failed_run(catalog, source.id, str(exc))
        raise
    engine = SyncEngine(
        catalog,
        source,
        store,
        large_image_bytes=settings.large_image_bytes,
        lease_seconds=settings.sync_lease_seconds,
        progress=progress,
    )
    try:
        with log_context(source=name):
            return engine.run()
    except ConflictError as exc:
        raise ConflictError(f"source {name!r} is already being synced: {exc}") from exc


def _record_failed_run(catalog: Catalog, source_id: int, message: str) -> None:
    now = utcnow()
    with catalog.write() as conn:
        run_id = conn.execute(
            insert(SYNC_RUNS).values(
                source_id=source_id,
                state="error",
                error=message,
                started_at=now,
                finished_at=now,
                seconds=0.0,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        outbox.sync_ended(conn, run_id, source_id, state="error", error=message, counts={})


def recent_runs(catalog: Catalog, source_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """The newest sync runs of a source, newest first."""
    runs = SYNC_RUNS
    with catalog.read() as conn:
        rows = conn.execute(
            select(runs)
            .where(runs.c.source_id == source_id)
            .order_by(runs.c.id.desc())
            .limit(limit)
        ).all()
    return [
        {
            "id": r.id,
            "state": r.state,
            "started_at": r.started_at.isoformat(),
            "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            "listed": r.listed,
            "added": r.added,
            "changed": r.changed,
            "deleted": r.deleted,
            "unchanged": r.unchanged,
            "seconds": r.seconds,
            "error": r.error,
        }
        for r in rows
    ]
