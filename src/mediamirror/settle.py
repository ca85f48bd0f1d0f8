"""Files still being written: post-processing waits until a local file has settled.

A copy into a watched directory shows up in a listing long before it is complete. The
sync catalogues such a file as usual (so nothing looks deleted and the next sync sees its
growth as a change), but its dataset is not queued while any of its files was modified
less than ``settle_seconds`` ago: the dataset keeps ``MarkForPostProcess`` and a later
sync, once the file's size and mtime have stopped changing, queues it exactly once.

Objects of an S3 bucket appear all at once when their upload completes, so only
local-directory sources wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import ITEMS, SOURCES
from mediamirror.processing.processors.base import Dataset

_BATCH = 500


def unsettled(
    catalog: Catalog, folder_ids: list[int], settle_seconds: float, now: datetime | None = None
) -> set[int]:
    """Datasets among ``folder_ids`` with a local file modified in the last seconds."""
    if settle_seconds <= 0 or not folder_ids:
        return set()
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=settle_seconds)
    query = (
        select(ITEMS.c.folder_id)
        .join(SOURCES, SOURCES.c.id == ITEMS.c.source_id)
        .where(
            ITEMS.c.folder_id.in_(folder_ids),
            ITEMS.c.state == "present",
            ITEMS.c.last_modified > cutoff,
            SOURCES.c.kind == "local",
        )
        .distinct()
    )
    with catalog.read() as conn:
        return {row[0] for row in conn.execute(query)}


def settled(
    catalog: Catalog, datasets: Iterable[Dataset], settle_seconds: float, deferred: list[str]
) -> Iterator[Dataset]:
    """The datasets whose files have settled; the paths of the others go to ``deferred``."""
    batch: list[Dataset] = []
    for ds in datasets:
        batch.append(ds)
        if len(batch) >= _BATCH:
            yield from _split(catalog, batch, settle_seconds, deferred)
            batch = []
    yield from _split(catalog, batch, settle_seconds, deferred)


def _split(
    catalog: Catalog, batch: list[Dataset], settle_seconds: float, deferred: list[str]
) -> Iterator[Dataset]:
    young = unsettled(catalog, [ds.id for ds in batch], settle_seconds)
    for ds in batch:
        if ds.id in young:
            deferred.append(ds.path)
        else:
            yield ds
