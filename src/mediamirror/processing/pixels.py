"""An image's width and height from its header, through a few small range reads.

Deciding whether a frame is too big for an image sequence needs only its dimensions, which
every raster format keeps near its start (a TIFF may point to its directory at the end:
the reader seeks there). ``imagesize`` parses the header from a :class:`RangeFile`, so a
50-megapixel PNG costs one read of :data:`HEADER_BLOCK` bytes instead of a download.
"""

from __future__ import annotations

from typing import Any

import imagesize

from mediamirror.processing.rangefile import RangeFile
from mediamirror.stores.base import Store

#: Bytes fetched per range read: a PNG, GIF, BMP or WebP header fits in the first one; a
#: JPEG's size marker follows its EXIF block, usually well inside it.
HEADER_BLOCK = 64 * 1024


class _HeaderFile(RangeFile):
    """A RangeFile that keeps the store's error: ``imagesize`` turns every exception into
    "unknown size", and a store that failed must not look like an unreadable header."""

    error: Exception | None = None

    def _fetch(self, first: int, last: int) -> dict[int, bytes]:
        try:
            return super()._fetch(first, last)
        except Exception as exc:
            self.error = exc
            raise


def image_size(
    store: Store, key: str, size: int, etag: str | None = None
) -> tuple[int, int] | None:
    """``(width, height)`` of the image ``key`` of ``store`` (``size`` bytes, at version
    ``etag`` when given), or None when its header cannot be parsed. A failing store raises
    its own error (a job retries it)."""
    with _HeaderFile(store, key, size, block_size=HEADER_BLOCK, cache_blocks=4, etag=etag) as f:
        width, height = _parse(f)
        if f.error is not None:
            raise f.error
    return (width, height) if width > 0 and height > 0 else None


def pixel_count(store: Store, key: str, size: int, etag: str | None = None) -> int | None:
    """Width x height of the image, or None when its header cannot be parsed."""
    dims = image_size(store, key, size, etag)
    return dims[0] * dims[1] if dims is not None else None


def _parse(f: Any) -> tuple[int, int]:
    # Stored dimensions: the EXIF orientation does not change the pixel count.
    width, height = imagesize.get(f, exif_rotation=False)
    return int(width), int(height)
