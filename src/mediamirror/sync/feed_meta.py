"""Feed records' metadata into their datasets (the sync engine's hook for feed stores).

A feed record is listed with ``ObjectInfo.meta`` (``cms_id``, ``cms_version``,
``source_url``, the block's ``metadata:`` fields, ``notify``; see stores/feed.py). When the
record is new or changed, that metadata is merged into the metadata of the dataset it
makes, beside DIVE's keys: into the new folder's metadata when the folder is created, and
into the existing one's otherwise (a changed version updates ``cms_version`` and
``source_url``). Objects of bucket stores have no ``meta`` and cost nothing here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from mediamirror.catalog.models import FOLDERS, utcnow
from mediamirror.stores.base import ObjectInfo


def record_meta(
    fresh: Iterable[tuple[ObjectInfo, str]],
    changed: Iterable[tuple[ObjectInfo, Any, str]],
    datasets: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Folder path -> the record metadata to merge, for new and changed feed records
    whose folder is a dataset (``datasets``: the chunk's dataset placements by path)."""
    found: dict[str, dict[str, Any]] = {}
    for o, path in fresh:
        if o.meta and path in datasets:
            found[path] = dict(o.meta)
    for o, _, path in changed:
        if o.meta and path in datasets:
            found[path] = dict(o.meta)
    return found


def copy_record_meta(conn: Connection, by_folder: Mapping[int, dict[str, Any]]) -> None:
    """Merge record metadata into existing dataset folders (one read, one batched write)."""
    if not by_folder:
        return
    rows = conn.execute(
        select(FOLDERS.c.id, FOLDERS.c.meta).where(FOLDERS.c.id.in_(list(by_folder)))
    ).all()
    changes = []
    for fid, meta in rows:
        merged = {**(meta or {}), **by_folder[fid]}
        if merged != meta:
            changes.append({"b_id": fid, "b_meta": merged})
    if changes:
        conn.execute(
            update(FOLDERS)
            .where(FOLDERS.c.id == bindparam("b_id"))
            .values(meta=bindparam("b_meta"), updated_at=utcnow()),
            changes,
        )
