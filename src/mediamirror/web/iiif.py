"""IIIF Image API 3.0 over the pyramid TIFFs: ``info.json`` and tiles.

Tiles are cut from the pyramid level closest to the requested scale, so a tile request
decodes only the TIFF tiles it covers. Pyramids in an S3 output store are copied to a local
cache once per version (the version the pyramid processor recorded), so a pyramid made
again is fetched again; each pyramid has its own lock, so one long download never holds up
the tiles of other images.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyvips
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from mediamirror.errors import MediamirrorError, NotFoundError
from mediamirror.paths import join_under, safe_relpath
from mediamirror.web.deps import Id, Svc, Viewer

router = APIRouter(tags=["iiif"])
TILE = 256
_FORMATS = {
    "jpg": ("image/jpeg", ".jpg[Q=85]"),
    "png": ("image/png", ".png"),
    "webp": ("image/webp", ".webp[Q=85]"),
}
#: One lock per cache file being fetched; ``_locks_guard`` only guards the dict.
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class IIIFError(MediamirrorError):
    status = 400


Stamp = tuple[int, int, int]


def _stamp(path: str, folder_id: int) -> Stamp:
    """The file's identity, part of every cache key below: a pyramid made again at the same
    path (re-processing replaces the file) is read anew, not served from the old one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFoundError(f"the pyramid of dataset {folder_id} is missing") from None
    return st.st_ino, st.st_mtime_ns, st.st_size


@lru_cache(maxsize=64)
def _levels(path: str, stamp: Stamp) -> tuple[tuple[int, int], ...]:
    """(width, height) of each page of the pyramid, full size first."""
    first = pyvips.Image.new_from_file(path, access="sequential", revalidate=True)
    pages = int(first.get("n-pages")) if "n-pages" in first.get_fields() else 1
    sizes = [(first.width, first.height)]
    for page in range(1, pages):
        img = pyvips.Image.new_from_file(path, page=page, access="sequential", revalidate=True)
        sizes.append((img.width, img.height))
    return tuple(sizes)


@lru_cache(maxsize=256)
def _page(path: str, page: int, stamp: Stamp) -> pyvips.Image:
    return pyvips.Image.new_from_file(path, page=page, access="random", revalidate=True)


def pyramid_path(svc: Any, folder_id: int) -> str:
    with svc.catalog.read() as conn:
        from sqlalchemy import select

        from mediamirror.catalog.models import FOLDERS

        row = conn.execute(
            select(FOLDERS.c.meta, FOLDERS.c.source_id).where(FOLDERS.c.id == folder_id)
        ).first()
    meta = (row.meta or {}) if row else {}
    rel = (meta.get("outputs") or {}).get("pyramid")
    if not rel:
        raise NotFoundError(f"dataset {folder_id} has no pyramid yet")
    # The store its source's profile writes to (the installation's by default).
    store = svc.output_store_for(row.source_id)
    kind, target = store.locate(rel)
    if kind == "file":
        return str(target)
    details = meta.get("pyramid")
    version = str(details.get("version") or "") if isinstance(details, dict) else ""
    cache = cache_file(_cache_root(svc, store, row.source_id), str(rel), version)
    if not cache.exists():
        _fetch(store, str(rel), cache)
    return str(cache)


def _cache_root(svc: Any, store: Any, source_id: int | None) -> Path:
    """Where copies of a store's pyramids are kept: the installation's output store under
    ``cache/pyramids``; a source's own output store (where another source may have a
    pyramid of the same name) under ``cache/source-pyramids/<source uid>``."""
    root = svc.settings.home_path / "cache"
    if source_id is None or store is svc.output_store():
        return Path(root / "pyramids")
    return Path(join_under(root / "source-pyramids", safe_relpath(svc.source(source_id).uid)))


def cache_file(root: Path, rel: str, version: str) -> Path:
    """The local copy of one version of a pyramid: ``<rel made safe>@<version>.tif`` under
    ``root`` (a version is made of letters, digits, ``-`` and ``_``; anything else is
    hashed), so an output path never leads outside the cache."""
    token = version if _TOKEN.fullmatch(version) else hashlib.sha1(version.encode()).hexdigest()
    return join_under(root, f"{safe_relpath(rel)}@{token}.tif")


def _fetch(store: Any, rel: str, cache: Path) -> None:
    """Download ``rel`` to ``cache`` under that file's own lock, through a temporary name
    (a reader never sees half a file)."""
    with _locks_guard:
        lock = _locks.setdefault(str(cache), threading.Lock())
    try:
        with lock:
            if cache.exists():
                return  # fetched by the request this one waited for
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex}.part")
            try:
                store.download(rel, tmp)
                os.replace(tmp, cache)
            finally:
                tmp.unlink(missing_ok=True)
            _drop_other_versions(cache)
    finally:
        with _locks_guard:
            if _locks.get(str(cache)) is lock:
                del _locks[str(cache)]


def _drop_other_versions(cache: Path) -> None:
    """Remove the copies of earlier versions of the same pyramid (disk is not free)."""
    base = cache.name.rsplit("@", 1)[0]
    pattern = re.compile(re.escape(base) + r"@[A-Za-z0-9_-]{1,64}\.tif")
    for other in cache.parent.iterdir():
        if other != cache and pattern.fullmatch(other.name):
            other.unlink(missing_ok=True)


@router.get("/iiif/3/{folder_id}/info.json")
def info(folder_id: Id, request: Request, svc: Svc, _: Viewer) -> JSONResponse:
    path = pyramid_path(svc, folder_id)
    levels = _levels(path, _stamp(path, folder_id))
    width, height = levels[0]
    factors = sorted({max(1, round(width / w)) for w, _ in levels})
    base = str(request.url).rsplit("/info.json", 1)[0]
    body = {
        "@context": "http://iiif.io/api/image/3/context.json",
        "id": base,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level1",
        "width": width,
        "height": height,
        "tiles": [{"width": TILE, "height": TILE, "scaleFactors": factors}],
        "sizes": [{"width": w, "height": h} for w, h in reversed(levels)],
        "extraFormats": ["png", "webp"],
    }
    return JSONResponse(
        body, media_type="application/ld+json", headers={"Cache-Control": "private, max-age=300"}
    )


def _region(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    if text == "full":
        return 0, 0, width, height
    if text == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise IIIFError(f"unsupported region {text!r}") from None
    if w <= 0 or h <= 0 or x >= width or y >= height or x < 0 or y < 0:
        raise IIIFError(f"region {text!r} is outside the image")
    return x, y, min(w, width - x), min(h, height - y)


def _size(text: str, rw: int, rh: int) -> tuple[int, int]:
    text = text.lstrip("^")
    if text == "max":
        return rw, rh
    try:
        return _parse_size(text, rw, rh)
    except (ValueError, ZeroDivisionError, OverflowError):
        # Zero, negative, NaN and infinite sizes are client errors, never a libvips crash.
        raise IIIFError(f"unsupported size {text!r}") from None


def _parse_size(text: str, rw: int, rh: int) -> tuple[int, int]:
    if text.startswith("pct:"):
        pct = float(text[4:]) / 100
        if not pct > 0:
            raise ValueError(text)
        return max(1, round(rw * pct)), max(1, round(rh * pct))
    if text.startswith("!"):
        bw, bh = (_positive(v) for v in text[1:].split(","))
        scale = min(bw / rw, bh / rh)
        return max(1, round(rw * scale)), max(1, round(rh * scale))
    w_text, h_text = text.split(",")
    if w_text and h_text:
        return _positive(w_text), _positive(h_text)
    if w_text:
        w = _positive(w_text)
        return w, max(1, round(rh * w / rw))
    h = _positive(h_text)
    return max(1, round(rw * h / rh)), h


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


@router.get("/iiif/3/{folder_id}/{region}/{size}/{rotation}/{quality}.{fmt}")
def tile(
    folder_id: Id,
    region: str,
    size: str,
    rotation: str,
    quality: str,
    fmt: str,
    svc: Svc,
    _: Viewer,
) -> Response:
    if fmt not in _FORMATS or quality not in {"default", "color", "gray"}:
        raise IIIFError(f"unsupported quality/format {quality + '.' + fmt!r}")
    if rotation not in {"0", "90", "180", "270"}:
        raise IIIFError(f"unsupported rotation {rotation!r}")
    path = pyramid_path(svc, folder_id)
    stamp = _stamp(path, folder_id)
    levels = _levels(path, stamp)
    full_w, full_h = levels[0]
    x, y, w, h = _region(region, full_w, full_h)
    out_w, out_h = _size(size, w, h)
    if out_w > 4096 or out_h > 4096:
        raise IIIFError("requested size is larger than 4096 px")
    # The smallest level that still has at least the requested resolution.
    page = 0
    for i, (lw, _lh) in enumerate(levels):
        if lw * w / full_w >= out_w:
            page = i
    lw, lh = levels[page]
    sx, sy = lw / full_w, lh / full_h
    img = _page(path, page, stamp)
    lx, ly = int(x * sx), int(y * sy)
    cw = max(1, min(lw - lx, round(w * sx)))
    ch = max(1, min(lh - ly, round(h * sy)))
    part = img.crop(lx, ly, cw, ch)
    if (cw, ch) != (out_w, out_h):
        part = part.resize(out_w / cw, vscale=out_h / ch)
    if rotation != "0":
        part = part.rotate(int(rotation))
    if quality == "gray":
        part = part.colourspace("b-w")
    if part.bands > 3 and fmt == "jpg":
        part = part.flatten(background=255)
    media_type, suffix = _FORMATS[fmt]
    data = part.write_to_buffer(suffix)
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
