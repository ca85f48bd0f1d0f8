"""Turn a large image into a tiled, pyramidal TIFF that a tile server can serve quickly.

The source is read once, top to bottom (``access="sequential"``), so memory stays small
whatever the image size. Each pyramid level is one page of the TIFF (what large_image and
libvips read), halving until the image fits in one tile.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyvips

from mediamirror.errors import ProcessingError
from mediamirror.processing.images import FAIL_ON, open_image, vips_reason

Compression = Literal["jpeg", "deflate"]

DEFAULT_TILE = 256
DEFAULT_JPEG_Q = 90
# Classic TIFF offsets are 32-bit; stay well clear of the limit.
BIGTIFF_THRESHOLD = 2**31
# Loaders whose formats are lossy (or, for openslide, JPEG-coded slides in practice).
LOSSY_LOADERS = frozenset({"jpegload", "heifload", "jp2kload", "openslideload"})
# TIFF Compression tag values of lossy codecs: old/new JPEG, JPEG 2000 (Aperio), lossy
# JPEG (DNG) and WebP.
LOSSY_TIFF_COMPRESSIONS = frozenset({6, 7, 33003, 33005, 34712, 34892, 50001})
BYTES_PER_SAMPLE = {"uchar": 1, "char": 1, "ushort": 2, "short": 2, "uint": 4, "int": 4}


@dataclass(frozen=True, slots=True)
class PyramidInfo:
    """What :func:`make_pyramid` wrote."""

    width: int
    height: int
    levels: int
    compression: Compression
    bigtiff: bool


def make_pyramid(
    src_path: str | os.PathLike[str],
    dest_path: str | os.PathLike[str],
    *,
    tile: int = DEFAULT_TILE,
    jpeg_q: int = DEFAULT_JPEG_Q,
    max_dimension: int | None = None,
    compression: Compression | None = None,
) -> PyramidInfo:
    """Write ``src_path`` as a pyramidal tiled TIFF at ``dest_path``.

    Compression rule (unless ``compression`` forces one): **JPEG at quality ``jpeg_q``**
    when the image is 8-bit (``uchar``) with 1 or 3 bands *and* its source was already
    lossy-coded - a JPEG, lossy WebP, HEIF/AVIF, JPEG 2000 or openslide file, or a TIFF whose
    Compression tag is JPEG/JPEG 2000/WebP - since re-encoding at Q90 loses nothing that
    matters there. **Deflate** (lossless, horizontal predictor) otherwise: PNG, uncompressed
    or LZW TIFF, alpha channels and 16-bit/float data keep their exact values.

    BigTIFF is used when the raw size of all levels (``width*height*bands*bytes`` x 4/3)
    exceeds 2 GiB - a deliberate over-estimate: BigTIFF costs readers nothing, while a
    classic TIFF overflowing 4 GiB fails at the very end of a long write.
    ``max_dimension`` shrinks (never enlarges) the image so its longer side fits.
    ``dest_path`` appears only when complete. Unreadable or corrupt input raises
    :class:`~mediamirror.errors.ProcessingError`.
    """
    src, dest = Path(src_path), Path(dest_path)
    if src.resolve() == dest.resolve():
        raise ValueError("refusing to overwrite the source image")
    image = _prepare(_load(src, max_dimension))
    args = direct_tiffsave_args(image, src, tile=tile, jpeg_q=jpeg_q, compression=compression)
    partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        image.tiffsave(str(partial), **args)
        levels = _page_count(partial)
        os.replace(partial, dest)
    except pyvips.Error as exc:
        raise ProcessingError(f"{src.name}: cannot build pyramid ({vips_reason(exc)})") from exc
    finally:
        partial.unlink(missing_ok=True)
    return PyramidInfo(image.width, image.height, levels, args["compression"], args["bigtiff"])


def direct_tiffsave_args(
    image: pyvips.Image,
    src_path: str | os.PathLike[str],
    *,
    tile: int = DEFAULT_TILE,
    jpeg_q: int = DEFAULT_JPEG_Q,
    compression: Compression | None = None,
) -> dict[str, Any]:
    """The keyword arguments :func:`make_pyramid` passes to ``image.tiffsave``.

    Lets a benchmark time the identical libvips call without mediamirror around it::

        image = pyvips.Image.new_from_file(src, access="sequential")
        image.tiffsave(out, **direct_tiffsave_args(image, src))
    """
    chosen = compression or choose_compression(image, src_path)
    args: dict[str, Any] = {
        "tile": True,
        "tile_width": tile,
        "tile_height": tile,
        "pyramid": True,
        "compression": chosen,
        "bigtiff": needs_bigtiff(image),
    }
    if chosen == "jpeg":
        args["Q"] = jpeg_q
    else:
        args["predictor"] = "horizontal"
    return args


def choose_compression(image: pyvips.Image, src_path: str | os.PathLike[str]) -> Compression:
    """Apply the rule documented in :func:`make_pyramid`."""
    if image.format != "uchar" or image.bands not in (1, 3):
        return "deflate"
    return "jpeg" if source_is_lossy(image, Path(src_path)) else "deflate"


def source_is_lossy(image: pyvips.Image, src_path: Path) -> bool:
    """Whether the source file was coded with a lossy codec (header bytes only)."""
    loader = str(image.get("vips-loader")) if image.get_typeof("vips-loader") else ""
    if loader in LOSSY_LOADERS:
        return True
    if loader.startswith("webpload"):
        return _webp_is_lossy(src_path)
    if loader.startswith("tiffload"):
        return tiff_compression(src_path) in LOSSY_TIFF_COMPRESSIONS
    return False


def needs_bigtiff(image: pyvips.Image) -> bool:
    """Whether the raw size of all pyramid levels exceeds :data:`BIGTIFF_THRESHOLD`."""
    sample = BYTES_PER_SAMPLE.get(image.format, 8)
    raw = image.width * image.height * image.bands * sample
    return bool(raw * 4 // 3 > BIGTIFF_THRESHOLD)


def _load(src: Path, max_dimension: int | None) -> pyvips.Image:
    if max_dimension is None:
        return open_image(src)
    try:
        # thumbnail shrinks while decoding (JPEG shrink-on-load, pyramid levels), and only
        # ever down; no_rotate keeps the pixel orientation identical to the uncapped path.
        return pyvips.Image.thumbnail(
            str(src),
            max_dimension,
            height=max_dimension,
            size="down",
            no_rotate=True,
            fail_on=FAIL_ON,
        )
    except pyvips.Error as exc:
        raise ProcessingError(f"{src.name}: not a readable image ({vips_reason(exc)})") from exc


def _prepare(image: pyvips.Image) -> pyvips.Image:
    # CMYK TIFF pyramids are poorly supported by viewers; sRGB is what tile servers expect.
    return image.colourspace("srgb") if image.interpretation == "cmyk" else image


def _page_count(path: Path) -> int:
    written = pyvips.Image.new_from_file(str(path))
    return int(written.get("n-pages")) if written.get_typeof("n-pages") else 1


def _webp_is_lossy(path: Path) -> bool:
    with path.open("rb") as fileobj:
        head = fileobj.read(64 * 1024)
    # Lossy bitstreams live in "VP8 " chunks, lossless ones in "VP8L".
    return b"VP8 " in head and b"VP8L" not in head


def tiff_compression(path: str | os.PathLike[str]) -> int | None:
    """The Compression tag (259) of the first IFD of a TIFF or BigTIFF file."""
    with Path(path).open("rb") as fileobj:
        header = fileobj.read(16)
        if len(header) < 8 or header[:2] not in (b"II", b"MM"):
            return None
        order = "<" if header[:2] == b"II" else ">"
        (version,) = struct.unpack(order + "H", header[2:4])
        big = version == 43
        if big:
            (offset,) = struct.unpack(order + "Q", header[8:16])
        else:
            (offset,) = struct.unpack(order + "I", header[4:8])
        fileobj.seek(offset)
        count_fmt, entry_size = ("Q", 20) if big else ("H", 12)
        raw_count = fileobj.read(struct.calcsize(count_fmt))
        if len(raw_count) != struct.calcsize(count_fmt):
            return None
        (count,) = struct.unpack(order + count_fmt, raw_count)
        entries = fileobj.read(min(count, 4096) * entry_size)
    for start in range(0, len(entries) - entry_size + 1, entry_size):
        tag, kind = struct.unpack(order + "HH", entries[start : start + 4])
        if tag == 259:
            value_at = start + (12 if big else 8)
            fmt = "H" if kind == 3 else "I"
            return int(
                struct.unpack(order + fmt, entries[value_at : value_at + struct.calcsize(fmt)])[0]
            )
    return None
