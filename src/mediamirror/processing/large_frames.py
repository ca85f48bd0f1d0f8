"""Frames too big for an image sequence become large images (sources in ``auto`` mode).

A listing only tells an image's bytes, and a well-compressed PNG of 50 megapixels is a
few kilobytes: whether a frame is too big to be shown as one picture is known only from
its header. So the ``images`` processor, before it reads any frame, reads each frame's
width and height (:mod:`mediamirror.processing.pixels`, a small range read) and moves a
frame of at least ``large_image_pixels`` pixels into its own ``Large image {name}``
dataset, exactly where the layout puts a large image, and queues its pyramid. The
decision is kept on that dataset (``large_by_pixels``): the sync keeps the item there
(see ``Layout.place(large=...)``), and running the job again finds nothing left to move.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, update
from sqlalchemy.exc import IntegrityError

from mediamirror.catalog.meta import update_meta_in
from mediamirror.catalog.models import FOLDERS, ITEMS, utcnow
from mediamirror.errors import TransientProcessingError
from mediamirror.processing.pixels import pixel_count
from mediamirror.processing.processors.base import Dataset, ItemRef, load_dataset_in
from mediamirror.profiles import profile_of
from mediamirror.sync.folders import FolderIndex
from mediamirror.sync.layout import AUTO, BY_PIXELS, Layout, dataset_metadata, is_raster

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services

#: Header reads in flight at once (each is one small request to the store).
_READERS = 8
#: Metadata that makes a folder a dataset and describes its frames: dropped from a
#: sequence left without frames.
_SEQUENCE_KEYS = (
    "type",
    "fps",
    "import_path",
    "import_source",
    "MarkForPostProcess",
    "annotate",
    "frames",
    "width",
    "height",
)


def split_large_frames(ctx: JobContext, services: Services, dataset: Dataset) -> Dataset | None:
    """``dataset`` without its frames of at least ``large_image_pixels`` pixels, each moved
    to a large-image dataset of its own whose jobs are queued. None when no frame is left:
    the folder is then no longer a dataset. Sources in another mode, and a setting of 0,
    leave the dataset as it is."""
    limit = services.settings.large_image_pixels
    if limit <= 0 or dataset.source_id is None:
        return dataset
    source = services.source(dataset.source_id)
    if profile_of(source).images != AUTO:
        return dataset
    store = services.source_store(source.id)
    big = _too_big(ctx, store, [i for i in dataset.items if is_raster(i.name)], limit)
    if not big:
        return dataset
    layout = Layout(store.prefix, store.object_url, services.settings.large_image_bytes, AUTO)
    folders = FolderIndex(source.id, source.mount)
    try:
        with services.catalog.write() as conn:
            targets = _move(conn, layout, folders, dataset.id, big)
            remaining = load_dataset_in(conn, dataset.id)
            left = any(is_raster(i.name) for i in remaining.items)
            if not left:
                update_meta_in(conn, dataset.id, _no_longer_a_dataset)
    except IntegrityError as exc:  # the same job running twice made the folder just now
        raise TransientProcessingError(f"large image folder made meanwhile: {exc.orig}") from exc
    for item, path in targets:
        ctx.log(f"{item.name}: {big[item]:,} pixels, now the large image {path}")
    _queue(services, [path for _, path in targets])
    return remaining if left else None


def _too_big(ctx: JobContext, store: Any, frames: list[ItemRef], limit: int) -> dict[ItemRef, int]:
    """Frames of at least ``limit`` pixels, with their pixel counts (headers read in a few
    threads: each is one small request)."""
    if not frames:
        return {}
    ctx.progress(0.0, f"reading the size of {len(frames)} frame(s)")

    def count(item: ItemRef) -> int | None:
        ctx.check()
        return pixel_count(store, item.key, item.size, item.etag or None)

    with ThreadPoolExecutor(max_workers=min(_READERS, len(frames))) as pool:
        counts = list(pool.map(count, frames))
    return {f: n for f, n in zip(frames, counts, strict=True) if n is not None and n >= limit}


def _move(
    conn: Connection, layout: Layout, folders: FolderIndex, seq_id: int, big: dict[ItemRef, int]
) -> list[tuple[ItemRef, str]]:
    """Move each big frame still in the sequence to its large-image folder (made, or
    marked as a dataset for post-processing again); returns (frame, folder path) moved."""
    places = {item: layout.place(item.key, item.size, {}, large=True) for item in big}
    paths = {item: folders.full(p.folder) for item, p in places.items()}
    new_meta = {paths[i]: {**dataset_metadata(p), BY_PIXELS: big[i]} for i, p in places.items()}
    ids, created = folders.resolve(conn, set(paths.values()), new_meta)
    moved: list[tuple[ItemRef, str]] = []
    for item, path in paths.items():
        done = conn.execute(
            update(ITEMS)
            .where(ITEMS.c.id == item.id, ITEMS.c.folder_id == seq_id, ITEMS.c.state == "present")
            .values(folder_id=ids[path], updated_at=utcnow())
        )
        if done.rowcount != 1:
            continue  # moved by an earlier run of this job, or changed since
        moved.append((item, path))
        if path not in created:
            _mark(conn, ids[path], new_meta[path])
    return moved


def _mark(conn: Connection, folder_id: int, meta: dict[str, Any]) -> None:
    """An existing folder receiving a big frame: a large-image dataset to process again."""

    def change(current: dict[str, Any]) -> None:
        if current.get("type") != meta["type"]:
            current.update(meta)
        current[BY_PIXELS] = meta[BY_PIXELS]
        current["MarkForPostProcess"] = True

    update_meta_in(conn, folder_id, change)
    conn.execute(update(FOLDERS).where(FOLDERS.c.id == folder_id).values(state="present"))


def _no_longer_a_dataset(meta: dict[str, Any]) -> None:
    for key in _SEQUENCE_KEYS:
        meta.pop(key, None)


def _queue(services: Services, paths: list[str]) -> None:
    """Queue the new large images' jobs (their source's profile decides which) and clear
    their marks, as ``postprocess`` does for any marked dataset."""
    from mediamirror.postprocess import postprocess

    for path in dict.fromkeys(paths):
        postprocess(services, path, recursive=False)


__all__ = ["split_large_frames"]
