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

from sqlalchemy import Connection

from mediamirror.catalog.meta import merge_meta
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
    merge_meta(conn, by_folder)
