"""Sources: stores mirrored read-only into the catalog, each under its own mount folder."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, SOURCES, SYNC_RUNS, Source, utcnow
from mediamirror.config import Settings
from mediamirror.errors import ConfigError, ConflictError, MediamirrorError, NotFoundError
from mediamirror.logs import context as log_context
from mediamirror.notify import outbox
from mediamirror.profiles import Profile, profile_of, validated
from mediamirror.stores import ReadOnlyStore, StoreSpec, open_store, parse_spec
from mediamirror.stores.base import ObjectInfo
from mediamirror.stores.output import check_apart, check_profile_outputs
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
    *,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
) -> ReadOnlyStore:
    """The source's store, read side only. A feed source opens with the ``feeds:`` block
    of ``settings`` (else the loaded one) and finds its records' URLs in ``catalog``."""
    feed: dict[str, Any] = {}
    if source.kind == "feed":
        from mediamirror.stores.feed import catalog_lookup

        if settings is not None:
            feed["feeds"] = settings.sections.get("feeds") or {}
            feed["max_bytes"] = getattr(settings, "max_download_bytes", None)
        if catalog is not None:
            feed["lookup"] = catalog_lookup(catalog, source.id)
    store = open_store(spec_of(source), env, page_size=page_size, timeouts=timeouts, **feed)
    return ReadOnlyStore(store)


def add_source(
    catalog: Catalog,
    name: str,
    url: str,
    *,
    env: Mapping[str, str],
    check: bool = True,
    **options: Any,
) -> Source:
    """Register a source after checking that its store can be listed: the source
    :func:`plan_source` validates from ``options`` (mount, filters, outputs, schedule,
    profile, store options), saved. ``check=False`` skips listing the store."""
    source = plan_source(catalog, name, url, env=env, **options)
    if check:
        source_store(source, env).check()
    with catalog.session() as session:
        session.add(source)
        try:
            session.commit()
        except IntegrityError as exc:
            raise ConflictError(
                f"a source named {name!r} or mounted at {source.mount} exists"
            ) from exc
    return source


def plan_source(
    catalog: Catalog,
    name: str,
    url: str,
    *,
    env: Mapping[str, str],
    mount: str | None = None,
    include: str | None = None,
    exclude: str | None = None,
    outputs: Sequence[StoreSpec] = (),
    schedule: str | None = None,
    settings: Settings | None = None,
    known_processors: Iterable[str] | None = None,
    images: str | None = None,
    processors: str | Iterable[str] | None = None,
    output_url: str | None = None,
    output_layout: str | None = None,
    output_endpoint_url: str | None = None,
    **store_options: Any,
) -> Source:
    """The source :func:`add_source` would register, not saved: every value validated and
    checked against the other sources (it reads the catalog, never writes to it). The
    store is not opened: :mod:`mediamirror.source_check` lists it before anything is
    saved.

    The source must overlap none of ``outputs`` (the stores derived files go to: see
    :func:`mediamirror.stores.output.derived_specs`). ``schedule``: a cron expression to
    re-sync it on while ``serve`` runs (see :mod:`mediamirror.scheduler`). ``images``,
    ``processors``, ``output_*``: its profile (:mod:`mediamirror.profiles`). With
    ``settings``, processor names are checked against the installation's processors (or
    ``known_processors``) and the profile's output location against every source
    (:func:`mediamirror.stores.output.check_profile_outputs`)."""
    from mediamirror.scheduler import validate

    if not _NAME.match(name):
        raise ConfigError(
            f"source name {name!r} must start with a letter or digit and use only "
            "letters, digits, '.', '_' and '-'"
        )
    spec = parse_spec(url, env=env, **store_options)
    mount = normalize_mount(mount or f"/{name}")
    profile = validated(
        images=images,
        processors=processors,
        output_url=output_url,
        output_layout=output_layout,
        output_endpoint_url=output_endpoint_url,
        known_processors=_known_processors(settings, known_processors),
    )
    options: dict[str, Any] = {"schedule": validate(schedule)} if schedule else {}
    if profile.to_options():
        options["profile"] = profile.to_options()
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
        options=options,
    )
    check_apart(spec, outputs)  # after the plain validation: those errors are simpler
    with catalog.session() as session:
        if session.scalar(select(Source.id).where(Source.name == name)) is not None:
            raise ConflictError(f"a source named {name!r} already exists")
        others = list(session.scalars(select(Source)))
        for other in others:
            a, b = other.mount + "/", mount + "/"
            if a.startswith(b) or b.startswith(a):
                raise ConflictError(
                    f"mount {mount} overlaps source {other.name!r} mounted at {other.mount}"
                )
        _check_outputs(name, spec, profile, others, settings, env)
    return source


def _known_processors(
    settings: Settings | None, known: Iterable[str] | None
) -> Iterable[str] | None:
    if known is not None or settings is None:
        return known
    from mediamirror.processing.processors import registry

    return list(registry(settings))


def _check_outputs(
    name: str,
    spec: StoreSpec,
    profile: Profile,
    others: Sequence[Source],
    settings: Settings | None,
    env: Mapping[str, str],
) -> None:
    """The profile's output location against every source (and theirs against this one);
    without settings, only that its URL can be opened."""
    if settings is not None:
        check_profile_outputs(name, spec, profile, others, settings=settings, env=env)
    elif profile.output_url:
        parse_spec(profile.output_url, endpoint_url=profile.output_endpoint_url, env=env)


def set_source(
    catalog: Catalog,
    name: str,
    *,
    env: Mapping[str, str],
    settings: Settings | None = None,
    known_processors: Iterable[str] | None = None,
    images: str | None = None,
    processors: str | Iterable[str] | None = None,
    output_url: str | None = None,
    output_layout: str | None = None,
    output_endpoint_url: str | None = None,
    include: str | None = None,
    exclude: str | None = None,
    schedule: str | None = None,
) -> tuple[Source, list[str]]:
    """Change a source's profile, filters or schedule; returns the source as it now is
    and one ``what: old -> new`` phrase per value that changed.

    None leaves a value as it is; ``""`` clears it (``include``, ``exclude``,
    ``schedule``, ``output_url``: back to the installation's output store,
    ``output_endpoint_url``), and ``processors="all"`` (or ``""``) means every processor.
    Nothing is re-laid or queued here: a changed ``images`` takes effect on the next sync,
    added processors run with ``postprocess --only-pending`` or ``reprocess``."""
    from mediamirror.scheduler import validate

    src = get_source(catalog, name)
    known = _known_processors(settings, known_processors)
    known = list(known) if known is not None else None

    def change(base: Profile) -> Profile:
        return validated(
            base,
            images=images,
            processors=processors,
            output_url=output_url,
            output_layout=output_layout,
            output_endpoint_url=output_endpoint_url,
            known_processors=known,
        )

    old = profile_of(src)
    new = change(old)
    filters = {
        what: _compile(value or None, what)
        for what, value in (("include", include), ("exclude", exclude))
        if value is not None
    }
    cron = (validate(schedule) if schedule else "") if schedule is not None else None
    if _outputs(new) != _outputs(old):
        _check_outputs(name, spec_of(src), new, list_sources(catalog), settings, env)
    said = _changed(old, new, src, filters, cron)
    if said:
        _write_options(catalog, src.id, change, filters, cron)
    return get_source(catalog, name), said


def _outputs(profile: Profile) -> tuple[Any, ...]:
    return (profile.output_url, profile.output_layout, profile.output_endpoint_url)


def _changed(
    old: Profile,
    new: Profile,
    src: Source,
    filters: Mapping[str, str | None],
    cron: str | None,
) -> list[str]:
    """``what: old -> new`` for each value that differs."""
    before, after = old.describe(), new.describe()
    pairs: list[tuple[str, Any, Any]] = [(k, before[k], after[k]) for k in before]
    pairs += [(k, getattr(src, k), v) for k, v in filters.items()]
    if cron is not None:
        pairs.append(("schedule", (src.options or {}).get("schedule"), cron or None))

    def show(value: Any) -> str:
        if isinstance(value, list):
            return ",".join(value)
        return "(none)" if value in (None, "") else str(value)

    return [f"{k}: {show(a)} -> {show(b)}" for k, a, b in pairs if a != b]


def _write_options(
    catalog: Catalog,
    source_id: int,
    change: Callable[[Profile], Profile],
    filters: Mapping[str, str | None],
    cron: str | None,
) -> None:
    """Read-modify-write of the source's options in one write transaction (other keys,
    such as the push token, are kept as another process may have just set them)."""
    with catalog.write() as conn:
        query = select(SOURCES.c.options).where(SOURCES.c.id == source_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(f"source {source_id} was removed meanwhile")
        options = dict(row.options or {})
        profile = change(Profile.from_options(options)).to_options()
        if profile:
            options["profile"] = profile
        else:
            options.pop("profile", None)
        if cron:
            options["schedule"] = cron
        elif cron is not None:
            options.pop("schedule", None)
        conn.execute(
            update(SOURCES).where(SOURCES.c.id == source_id).values(options=options, **filters)
        )


def list_sources(catalog: Catalog) -> list[Source]:
    with catalog.session(write=False) as session:
        return list(session.scalars(select(Source).order_by(Source.name)))


def source_profiles(catalog: Catalog) -> dict[int, Profile]:
    """Every source's profile by source id, read in one query (for a post-processing
    call that looks at datasets of many sources)."""
    with catalog.read() as conn:
        rows = conn.execute(select(SOURCES.c.id, SOURCES.c.options)).all()
    return {int(r.id): Profile.from_options(r.options) for r in rows}


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
    listing: Callable[[str | None], Iterable[list[ObjectInfo]]] | None = None,
) -> SyncSummary:
    """Run one incremental sync of a source. ``listing``: pages to merge instead of the
    store's listing (an inventory report: :mod:`mediamirror.sync.inventory`)."""
    source = get_source(catalog, name)
    try:
        store = source_store(
            source,
            env,
            settings.sync_page_size,
            StoreTimeouts.from_settings(settings),
            settings=settings,
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
        images=profile_of(source).images,
        lease_seconds=settings.sync_lease_seconds,
        progress=progress,
        listing=listing,
        list_width=settings.sync_list_width,
    )
    if source.kind == "feed":  # it walks every page before it lists one: renew the lease
        store.set_keepalive(engine._renew)
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
