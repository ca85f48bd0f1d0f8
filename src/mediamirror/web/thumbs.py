"""Where a dataset's thumbnail is served, decided from its metadata alone.

Listings and search results call :func:`thumbnail_url` for every row they send, so it
never touches the catalog or a store: the jobs recorded what they made in the dataset's
``outputs`` (``thumbnail`` for large images and image sequences, ``poster`` for videos).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: The output keys that may serve as a dataset's thumbnail, best first.
THUMBNAIL_OUTPUTS = ("thumbnail", "poster")


def thumbnail_output(meta: dict[str, Any]) -> str | None:
    """The output-store key of the dataset's thumbnail (a video's poster counts), or None."""
    outputs = meta.get("outputs")
    if not isinstance(outputs, dict):
        return None
    for name in THUMBNAIL_OUTPUTS:
        key = outputs.get(name)
        if isinstance(key, str) and key:
            return key
    return None


def thumbnail_version(meta: dict[str, Any]) -> str:
    """A short token that changes whenever a job may have made the thumbnail again (its
    key, its size, the jobs recorded under ``processing``)."""
    key = thumbnail_output(meta)
    processing = meta.get("processing")
    jobs = (
        sorted((str(name), str((p or {}).get("job"))) for name, p in processing.items())
        if isinstance(processing, dict)
        else []
    )
    text = json.dumps([key, meta.get("thumbnail"), jobs], sort_keys=True, default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:10]


def thumbnail_url(folder_id: int, meta: dict[str, Any]) -> str | None:
    """The URL of the dataset's thumbnail for listings and search results, or None when it
    has none (yet). It names the thumbnail's version (``?v=``), so a thumbnail made again
    gets a new URL and no browser shows the old one from its cache."""
    if not meta.get("type") or thumbnail_output(meta) is None:
        return None
    return f"/api/v1/datasets/{folder_id}/thumbnail?v={thumbnail_version(meta)}"
