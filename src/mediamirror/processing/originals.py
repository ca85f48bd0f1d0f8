"""Originals of feed records: downloaded once, kept in the output store, read from there.

A feed's record points at a file on the CMS (or wherever its URL leads). The first job of
a dataset that needs the file downloads it into its scratch folder (streamed, resumed,
bounded: ``stores/http_fetch.py`` behind the feed store's ``download``), uploads it to the
source's output store as ``originals/<source>/<key>`` (the key made safe) and records it in
the dataset's metadata: ``outputs.original`` (the key) and ``original`` (key, item key,
record version, size). Every later job of the dataset (the ``pose`` command, a reprocess,
the video processor run again) copies the kept original instead, so the dataset plays and
can be processed again without the CMS; a record whose version changed is downloaded again.

Two jobs of one dataset starting together (``video`` and ``pose``) download once: the
download holds the catalog lease ``original:<item id>``, the other job waits for it and
then reads the kept copy. A holder killed mid-download loses the lease at once on its host
(the lease-owner rule), so the waiter or the job's retry takes over.

Sources that are not feeds are left alone: every hook returns ``None`` or the source store.
"""

from __future__ import annotations

import logging
import mimetypes
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from mediamirror.catalog import leases
from mediamirror.catalog.meta import update_meta
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.errors import ConflictError, MediamirrorError, NotFoundError
from mediamirror.paths import safe_relpath
from mediamirror.redact import redact
from mediamirror.stores.base import ObjectInfo

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.processing.processors.base import ItemRef
    from mediamirror.services import Services
    from mediamirror.stores import ReadOnlyStore

log = logging.getLogger(__name__)

#: Seconds between two looks at a download another job of the dataset is doing.
WAIT_POLL = 0.5


def is_feed(store: Any) -> bool:
    """Whether a source store is a feed (its objects are records' files, fetched by URL)."""
    return getattr(store, "scheme", "") == "feed"


def original_key(source_name: str, key: str) -> str:
    """Where a record's original is kept in the output store."""
    return f"originals/{safe_relpath(source_name)}/{safe_relpath(key)}"


def kept(meta: dict[str, Any], item: ItemRef) -> str | None:
    """The output key of the kept original of ``item`` at its current version, if any."""
    entry = meta.get("original")
    if not isinstance(entry, dict) or not entry.get("key"):
        return None
    if entry.get("item") != item.key or entry.get("version") != item.etag:
        return None  # another record's file, or the record changed: fetch it again
    return str(entry["key"])


def local_original(
    ctx: JobContext, services: Services, source_id: int, item: ItemRef
) -> Path | None:
    """A local copy of a feed item's original in the job's scratch folder (kept in the
    output store on first use); ``None`` when the source is not a feed."""
    store = services.source_store(source_id)
    if not is_feed(store):
        return None
    out = services.output_store_for(source_id)
    name = f"original:{item.id}"
    owner = leases.new_owner()
    waited = False
    while True:
        ctx.check()
        folder_id, meta = _dataset_of(services, item)
        key = kept(meta, item)
        if key is not None:
            return _copy_kept(ctx, out, key, item)
        ttl = ctx.remaining() or float(services.settings.job_timeout)
        try:
            leases.acquire(services.catalog, name, owner, ttl + 60.0)
        except ConflictError:
            if not waited:
                ctx.log("another job of this dataset is downloading the original; waiting")
                ctx.progress(ctx.percent, "waiting for the original")
                waited = True
            ctx.cancel.wait(WAIT_POLL)
            continue
        try:
            # Read again under the lease: the previous holder may have just finished.
            folder_id, meta = _dataset_of(services, item)
            key = kept(meta, item)
            if key is not None:
                return _copy_kept(ctx, out, key, item)
            return _download_and_keep(ctx, services, store, out, source_id, folder_id, item)
        finally:
            leases.release(services.catalog, name, owner)


def _dataset_of(services: Services, item: ItemRef) -> tuple[int, dict[str, Any]]:
    with services.catalog.read() as conn:
        row = conn.execute(
            select(FOLDERS.c.id, FOLDERS.c.meta)
            .select_from(ITEMS.join(FOLDERS, FOLDERS.c.id == ITEMS.c.folder_id))
            .where(ITEMS.c.id == item.id)
        ).first()
    if row is None:
        raise NotFoundError(f"{item.key} is no longer in the catalog")
    return int(row.id), dict(row.meta or {})


def _scratch(ctx: JobContext, item: ItemRef) -> Path:
    return ctx.scratch(f"original-{item.id}-{item.name}")


def _copy_kept(ctx: JobContext, out: Any, key: str, item: ItemRef) -> Path:
    dest = _scratch(ctx, item)
    if not dest.exists():  # video and a command run in one job never copy twice
        ctx.log(f"reading the kept original {key}")
        out.download(key, dest)
    return dest


def _download_and_keep(
    ctx: JobContext,
    services: Services,
    store: ReadOnlyStore,
    out: Any,
    source_id: int,
    folder_id: int,
    item: ItemRef,
) -> Path:
    dest = _scratch(ctx, item)
    ctx.log(f"downloading {item.key} from {store.object_url(item.key)}")
    ctx.progress(ctx.percent, "downloading")
    start = ctx.percent

    def progress(done: int, total: int | None) -> None:
        of = f" of {total / 1e6:.1f}" if total else ""
        ctx.progress(start, f"downloading: {done / 1e6:.1f}{of} MB")

    try:
        # check: a canceled job (or one out of time) stops between two chunks.
        # A failed attempt's bytes wait in ``partial`` for the next one (same version).
        partial = services.settings.home_path / "tmp" / "partial" / f"item-{item.id}"
        store.download(item.key, dest, progress=progress, check=ctx.check, partial=partial)
    except MediamirrorError as exc:
        _record_failure(services, folder_id, item, exc)
        raise
    ctx.check()
    size = dest.stat().st_size
    key = original_key(services.source(source_id).name, item.key)
    ctx.progress(ctx.percent, "keeping the original")
    out.put_file(key, dest, mimetypes.guess_type(item.name)[0])
    entry = {"key": key, "item": item.key, "version": item.etag, "size": size, "job": ctx.job_id}

    def change(meta: dict[str, Any]) -> None:
        meta["original"] = entry
        meta["outputs"] = {**(meta.get("outputs") or {}), "original": key}
        meta.pop("original_failed", None)

    update_meta(services.catalog, folder_id, change)
    ctx.log(f"kept the original as {key} ({size} bytes)")
    return dest


def _record_failure(services: Services, folder_id: int, item: ItemRef, exc: Exception) -> None:
    """Note why the record's file could not be downloaded. Every job of the dataset needs
    that file and fails the same way; the outbox tells it once (notify/outbox.py)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # Worded exactly as the job's error (jobs/runner.py), which the outbox compares.
    reason = redact(lines[0]) if lines else type(exc).__name__
    failed = {"item": item.key, "version": item.etag, "reason": reason}

    def change(meta: dict[str, Any]) -> None:
        meta["original_failed"] = failed

    try:
        update_meta(services.catalog, folder_id, change)
    except Exception:  # noting it must never hide the download's own error
        log.exception("could not record the failed download of %s", item.key)


# -- hooks for the processors ------------------------------------------------------------------


def input_store(
    ctx: JobContext, services: Services, source_id: int, item: ItemRef
) -> tuple[Any, ItemRef]:
    """What the video processor reads ``item`` from: the source store, or for a feed the
    local original (as a one-file store, with the item's real size: a feed may give none)."""
    path = local_original(ctx, services, source_id, item)
    if path is None:
        return services.source_store(source_id), item
    local = LocalOriginal(path, item.key)
    return local, type(item)(item.id, item.key, item.name, local.size, item.etag)


def with_original(services: Services, folder_id: int, outputs: dict[str, Any]) -> dict[str, Any]:
    """A processor's ``outputs`` plus the kept original's key, so replacing the dataset's
    ``outputs`` with them does not drop ``outputs.original``."""
    with services.catalog.read() as conn:
        meta = conn.execute(select(FOLDERS.c.meta).where(FOLDERS.c.id == folder_id)).scalar()
    key = ((meta or {}).get("outputs") or {}).get("original")
    return {"original": str(key), **outputs} if key and "original" not in outputs else outputs


class LocalOriginal:
    """A downloaded original seen as a read-only store holding one object, so the video
    processor probes (RangeFile) and transcodes (ffmpeg's input) it like a local source."""

    scheme = "file"
    bucket = ""
    prefix = ""
    network = False

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.size = path.stat().st_size

    def object_url(self, key: str) -> str:
        return self.path.as_uri()

    def check(self) -> None:
        return None

    def list_pages(self, start_after: str | None = None) -> Iterator[list[ObjectInfo]]:
        yield [self.head(self.key)]

    def head(self, key: str) -> ObjectInfo:
        st = self.path.stat()
        when = datetime.fromtimestamp(st.st_mtime, UTC)
        return ObjectInfo(key, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}", when)

    def read_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        with self.path.open("rb") as fh:
            fh.seek(start)
            return fh.read(max(length, 0))

    def download(self, key: str, dest: Path) -> None:
        shutil.copyfile(self.path, dest)

    def media_input(self, key: str) -> str:
        return str(self.path)

    def locate(self, key: str) -> tuple[str, str]:
        return "file", str(self.path)
