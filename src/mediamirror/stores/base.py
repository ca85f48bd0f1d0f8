"""The small contract every store backend fulfils.

A *store* is a place bytes live: an S3-compatible bucket and prefix, or a local directory.
Sources only ever see the read side (:class:`Store`); output stores add the write side
(:class:`WritableStore`). Keys are always the store's full object keys (``a/b/clip.mov``),
never URL-encoded, and listings come back in UTF-8 byte order, page by page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as listed by a store."""

    key: str
    size: int
    etag: str
    last_modified: datetime  # timezone-aware, UTC
    #: What a feed record adds to its dataset's metadata (cms_id, cms_version, source_url,
    #: mapped fields, notify); None for bucket objects. Not compared: the etag says it all.
    meta: dict[str, Any] | None = field(default=None, compare=False)


@runtime_checkable
class Store(Protocol):
    """Read-only access to a bucket+prefix or a directory."""

    scheme: str
    bucket: str
    prefix: str  # "" or ends with "/"

    def object_url(self, key: str) -> str:
        """Full URL of an object, e.g. ``s3://bucket/a/b/clip.mov``."""
        ...

    def check(self) -> None:
        """Raise :class:`~mediamirror.errors.StoreError` unless the store can be listed."""
        ...

    def list_pages(self, start_after: str | None = None) -> Iterator[list[ObjectInfo]]:
        """Yield every object under the prefix, page by page, in UTF-8 byte order of key.

        Folder markers (keys ending in ``/``) are yielded too; callers decide what they mean.
        """
        ...

    def head(self, key: str) -> ObjectInfo:
        """Current size, etag and modification time of one object."""
        ...

    def read_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        """Up to ``length`` bytes of an object from offset ``start`` (fewer at the end).
        With ``etag``, only from that version of the object: a replaced object raises
        ``TransientProcessingError`` instead of mixing old and new bytes."""
        ...

    def download(self, key: str, dest: Path) -> None:
        """Copy a whole object to a local file."""
        ...


@runtime_checkable
class WritableStore(Store, Protocol):
    """A store mediamirror may write to: output stores only, never sources."""

    def put_file(self, key: str, src: Path, content_type: str | None = None) -> None:
        """Upload a local file so that it appears under ``key`` all at once."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object; no error if it is already gone."""
        ...
