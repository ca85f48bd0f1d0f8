"""Batch post-processing (DIVE's ``batch_postprocess``) and re-processing with new
arguments (PREMIERE's semi-automation, the Notre Dame rerun utility)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, select

from mediamirror import interrupt
from mediamirror.catalog.meta import clear_marks
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.catalog.tree import folder_row, normalize_path
from mediamirror.config import Settings
from mediamirror.errors import ConfigError
from mediamirror.jobs.queue import JobSpec, enqueue
from mediamirror.processing.processors import for_dataset, registry
from mediamirror.processing.processors.base import Dataset, ItemRef, Processor, version_of
from mediamirror.services import Services
from mediamirror.settle import settled
from mediamirror.sources import source_profiles
from mediamirror.sync.layout import (
    IMAGE_EXTENSIONS,
    LARGE_IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
)

_BATCH = 500


@dataclass
class Planned:
    """What a post-process or re-process call selected and queued."""

    datasets: list[str] = field(default_factory=list)
    specs: list[JobSpec] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # files still being written
    #: Datasets ``reprocess --processor`` skipped: their source's profile leaves it out.
    left_out: int = 0

    def line(self) -> str:
        already = len(self.specs) - len(self.queued)
        extra = f" ({already} already queued or running)" if already else ""
        if self.deferred:
            extra += f"; {len(self.deferred)} dataset(s) wait for files still being written"
        if self.left_out:
            extra += f"; {self.left_out} dataset(s) skipped: their source's profile leaves it out"
        return f"queued {len(self.queued)} job(s) for {len(self.datasets)} dataset(s){extra}"


def _datasets(
    services: Services,
    path: str,
    recursive: bool,
    wanted: Callable[[dict[str, Any]], bool],
    limit: int | None,
    media_only: bool = False,
) -> Iterator[Dataset]:
    """Datasets at or below ``path`` whose metadata passes ``wanted``, with their items
    (``media_only``: only videos, images and large images, see :func:`_media_inputs`)."""
    path = normalize_path(path)
    with services.catalog.read() as conn:
        root = folder_row(conn, path)
        base = "" if path == "/" else path
        query = select(FOLDERS.c.id, FOLDERS.c.path, FOLDERS.c.source_id, FOLDERS.c.meta)
        if recursive:
            query = query.where(FOLDERS.c.path >= base + "/", FOLDERS.c.path < base + "0")
        elif root is not None:
            query = query.where(FOLDERS.c.parent_id == root.id)
        else:
            query = query.where(FOLDERS.c.parent_id.is_(None))
        query = query.where(FOLDERS.c.state == "present").order_by(FOLDERS.c.path)
        rows = [r for r in conn.execute(query) if (r.meta or {}).get("type") and wanted(r.meta)]
        if root is not None and (root.meta or {}).get("type") and wanted(root.meta):
            rows.insert(0, root)
    rows = rows[:limit] if limit is not None else rows
    for i in range(0, len(rows), _BATCH):
        interrupt.check()  # a safe point: nothing is queued until every dataset is read
        chunk = rows[i : i + _BATCH]
        items: dict[int, list[ItemRef]] = {r.id: [] for r in chunk}
        with services.catalog.read() as conn:
            rows_by_folder = itertools.groupby(_item_rows(conn, list(items)), itemgetter(0))
            for fid, found in rows_by_folder:
                if media_only:
                    # extension(n) in _MEDIA_EXTENSIONS, inlined: this runs for every item.
                    items[fid] = [
                        ItemRef(i, k, n, s, e)
                        for _, i, k, n, s, e in found
                        if (dot := n.rfind(".")) > 0 and n[dot + 1 :].lower() in _MEDIA_EXTENSIONS
                    ]
                else:
                    items[fid] = [ItemRef(i, k, n, s, e) for _, i, k, n, s, e in found]
        for r in chunk:
            yield Dataset(r.id, r.path, r.source_id, dict(r.meta), items[r.id])


def _item_rows(conn: Connection, folder_ids: list[int]) -> list[tuple[Any, ...]]:
    """``(folder_id, id, key, name, size, etag)`` of the present items of these folders,
    each folder's in key order (by folder first: the order of the ``(folder_id, key)``
    index, so the database sorts nothing). On SQLite straight through the driver: a first
    sync of a million files reads every one of them here, and SQLAlchemy's per-row result
    processing cost more than the query."""
    if conn.dialect.name != "sqlite":
        query = (
            select(
                ITEMS.c.folder_id,
                ITEMS.c.id,
                ITEMS.c.key,
                ITEMS.c.name,
                ITEMS.c.size,
                ITEMS.c.etag,
            )
            .where(ITEMS.c.folder_id.in_(folder_ids), ITEMS.c.state == "present")
            .order_by(ITEMS.c.folder_id, ITEMS.c.key)
        )
        return [tuple(row) for row in conn.execute(query)]
    marks = ", ".join("?" * len(folder_ids))
    sql = (
        "SELECT folder_id, id, key, name, size, etag FROM items"
        f" WHERE folder_id IN ({marks}) AND state = 'present' ORDER BY folder_id, key"
    )
    cursor = conn.connection.cursor()
    try:
        rows: list[tuple[Any, ...]] = cursor.execute(sql, folder_ids).fetchall()
        return rows
    finally:
        cursor.close()


#: Extensions of every file a built-in processor can take as input: only these classify
#: as a video, an image or a large image, whatever the size or the images mode.
_MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS | LARGE_IMAGE_EXTENSIONS


def _media_inputs(settings: Settings) -> bool:
    """True when every registered processor finds its inputs as the built-in ones do
    (their own ``inputs`` picks videos, images or large images, and the default
    ``input_version`` digests those): then a dataset read for post-processing needs no
    other item (in a folder of a million files, mostly not media, that is most of the
    work). Processors from plugins or ``python:`` settings may read any item: with one
    registered, every item is read."""
    from mediamirror.processing.processors.command import CommandProcessor
    from mediamirror.processing.processors.images import ImagesProcessor
    from mediamirror.processing.processors.pyramid import PyramidProcessor
    from mediamirror.processing.processors.video import VideoProcessor

    known = {
        ImagesProcessor.inputs,
        VideoProcessor.inputs,
        PyramidProcessor.inputs,
        CommandProcessor.inputs,
    }
    return all(
        type(p).inputs in known and type(p).input_version is Processor.input_version
        for p in registry(settings).values()
    )


def marked(meta: dict[str, Any]) -> bool:
    return meta.get("MarkForPostProcess") is True


def pending(meta: dict[str, Any]) -> bool:
    """DIVE's retry script: still at fps -1 and the mark exists, whatever its value.

    A large image keeps fps -1 after its pyramid is built, so a dataset already made
    ready (``annotate: true``) is not pending either: it would be queued again forever.
    """
    return (
        meta.get("fps") == -1 and "MarkForPostProcess" in meta and meta.get("annotate") is not True
    )


def postprocess(
    services: Services,
    path: str = "/",
    *,
    recursive: bool = True,
    limit: int | None = None,
    skip_transcoding: bool = False,
    only_pending: bool = False,
) -> Planned:
    """Queue the processors of every marked dataset under ``path``, then clear the marks."""
    settings = services.settings
    plan = Planned()
    args = {"skip_transcoding": True} if skip_transcoding else {}
    picked: list[int] = []
    wanted = pending if only_pending else marked
    found = _datasets(services, path, recursive, wanted, limit, _media_inputs(settings))
    profiles = source_profiles(services.catalog)
    # Deferred datasets keep their mark: a later sync queues them once their files settle.
    for ds in settled(services.catalog, found, settings.settle_seconds, plan.deferred):
        plan.datasets.append(ds.path)
        picked.append(ds.id)
        profile = profiles.get(ds.source_id) if ds.source_id is not None else None
        for proc in for_dataset(settings, ds, profile=profile):
            inputs = proc.inputs(ds)
            if inputs:
                version = _input_version(proc, ds, inputs)
                plan.specs.append(JobSpec(proc.name, "folder", ds.id, version, dict(args)))
    plan.queued = enqueue(services.catalog, plan.specs, services.retry_policy)
    _clear_marks(services, picked)
    return plan


def _input_version(proc: Processor, ds: Dataset, inputs: list[ItemRef]) -> str:
    """``proc.input_version(ds)`` from the inputs already found: the default version is
    a digest of those inputs, and finding them again classifies every item once more."""
    if type(proc).input_version is Processor.input_version:
        return version_of(inputs)
    return proc.input_version(ds)


def _clear_marks(services: Services, folder_ids: list[int]) -> None:
    for i in range(0, len(folder_ids), _BATCH):
        with services.catalog.write() as conn:
            clear_marks(conn, folder_ids[i : i + _BATCH])


def reprocess(
    services: Services,
    path: str,
    *,
    processor: str | None = None,
    prefix: str | None = None,
    args: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> Planned:
    """Run a processor again on chosen datasets, optionally with new arguments."""
    settings = services.settings
    procs = registry(settings)
    if processor is not None and processor not in procs:
        raise ConfigError(f"unknown processor {processor!r}: choose from {', '.join(procs)}")
    base = normalize_path(path)
    start = (base.rstrip("/") + "/" + prefix.lstrip("/")) if prefix else None
    plan = Planned()
    profiles = source_profiles(services.catalog)
    left_out: set[int] = set()  # sources whose profile leaves ``processor`` out
    for ds in _datasets(services, base, True, lambda meta: True, None):
        if start is not None and not ds.path.startswith(start):
            continue
        profile = profiles.get(ds.source_id) if ds.source_id is not None else None
        if processor:
            chosen = [procs[processor]]
        else:
            chosen = for_dataset(settings, ds, auto_only=True, profile=profile)
        chosen = [p for p in chosen if ds.type in p.dataset_types and p.inputs(ds)]
        if chosen and processor and profile is not None and not profile.allows(processor):
            left_out.add(ds.source_id or 0)
            plan.left_out += 1
            continue
        if not chosen:
            continue
        plan.datasets.append(ds.path)
        for proc in chosen:
            version = proc.input_version(ds)
            job_args: dict[str, Any] = {"reprocess": True}
            if args is not None:
                job_args["args"] = args
                version += "+" + hashlib.sha1(args.encode(), usedforsecurity=False).hexdigest()[:8]
            plan.specs.append(JobSpec(proc.name, "folder", ds.id, version, job_args))
        if limit is not None and len(plan.datasets) >= limit:
            break
    if left_out and not plan.datasets:
        raise ConfigError(_not_in_profile(services, processor or "", left_out))
    if not dry_run:
        plan.queued = enqueue(services.catalog, plan.specs, services.retry_policy)
    return plan


def _not_in_profile(services: Services, processor: str, source_ids: set[int]) -> str:
    """Why ``reprocess --processor`` queued nothing: the sources' profiles leave it out."""
    from mediamirror.catalog.models import SOURCES

    with services.catalog.read() as conn:
        names = sorted(
            conn.execute(select(SOURCES.c.name).where(SOURCES.c.id.in_(source_ids))).scalars()
        )
    which = ("source " if len(names) == 1 else "sources ") + ", ".join(repr(n) for n in names)
    return (
        f"processor {processor!r} is not in the profile of {which}: add it with "
        f"`mediamirror source set {names[0] if names else 'NAME'} --processors ...` first"
    )
