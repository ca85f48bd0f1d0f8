"""Small JPEG thumbnails of large images and image sequences, for folder listings.

A thumbnail is made by the job that already has the pixels at hand: the ``pyramid``
processor from the pyramid it just built (libvips reads the smallest level that is big
enough), the ``images`` processor from the first readable frame. Videos need none: their
poster (made by the ``video`` processor) is their thumbnail. It is written to the
dataset's output store under :meth:`OutputNames.thumbnail` and recorded in the dataset's
metadata as ``outputs.thumbnail`` (the key) and ``thumbnail`` (its size), so listings
know a dataset has one without asking the store.

A thumbnail that cannot be made never fails the job (the dataset is still viewable), but
a full scratch disk does, as for any other output. The thumbnail is uploaded only once the
job's real work succeeded, so a failed job leaves no thumbnail behind.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyvips

from mediamirror.errors import ProcessingError
from mediamirror.processing.failures import is_disk_full
from mediamirror.processing.images import FAIL_ON, vips_reason

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.processing.outputs import OutputNames
    from mediamirror.processing.processors.base import Dataset, ItemRef
    from mediamirror.stores.output import OutputStore

#: The longer side of a thumbnail, in pixels (never enlarged).
THUMB_SIZE = 320
THUMB_QUALITY = 80


def make_thumbnail(
    src: str | os.PathLike[str], dest: str | os.PathLike[str], size: int = THUMB_SIZE
) -> tuple[int, int]:
    """Write a JPEG of ``src`` whose longer side is at most ``size`` at ``dest``; return
    its ``(width, height)``. 8-bit sRGB, alpha flattened onto white, EXIF orientation
    applied. ``dest`` appears only when complete. Unreadable input raises
    :class:`~mediamirror.errors.ProcessingError`."""
    out = Path(dest)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        # thumbnail shrinks while loading (JPEG shrink-on-load, the pyramid's small levels).
        image = pyvips.Image.thumbnail(str(src), size, height=size, size="down", fail_on=FAIL_ON)
        _for_jpeg(image).jpegsave(str(partial), Q=THUMB_QUALITY, keep="none")
        os.replace(partial, out)
    except pyvips.Error as exc:
        name = Path(src).name
        raise ProcessingError(f"{name}: cannot make a thumbnail ({vips_reason(exc)})") from exc
    finally:
        partial.unlink(missing_ok=True)
    return image.width, image.height


def _for_jpeg(image: pyvips.Image) -> pyvips.Image:
    """8-bit, 1 or 3 bands, no alpha: what a baseline JPEG holds."""
    if image.hasalpha():
        white = 65535.0 if image.format == "ushort" else 255.0
        image = image.flatten(background=[white] * (image.bands - 1), max_alpha=white)
    if image.interpretation in ("cmyk", "labs", "lab", "xyz"):
        image = image.colourspace("srgb")
    if image.format == "ushort":
        image = (image >> 8).cast("uchar")
    elif image.format != "uchar":
        image = image.scaleimage()
    if image.bands not in (1, 3):
        image = image[0] if image.bands == 2 else image.extract_band(0, n=3)
    return image


@dataclass(frozen=True)
class Thumbnail:
    """A thumbnail made in the job's scratch folder, not uploaded yet."""

    path: Path
    item: ItemRef  # the image it was made of (names it in the mirror layout)
    width: int
    height: int


def thumbnail_in_scratch(ctx: JobContext, item: ItemRef, src: Path) -> Thumbnail | None:
    """Make the thumbnail of the local image ``src`` (a copy of ``item``) in the job's
    scratch folder; None when it cannot be made (logged: the job goes on). A full scratch
    disk is raised: that is the disk's fault, and the job reports it."""
    tmp = ctx.workdir / f"thumb-{uuid.uuid4().hex[:8]}.jpg"
    try:
        width, height = make_thumbnail(src, tmp)
    except Exception as exc:
        if is_disk_full(exc):
            raise
        ctx.log(f"no thumbnail: {exc}")
        return None
    return Thumbnail(tmp, item, width, height)


def upload_thumbnail(
    ctx: JobContext,
    out: OutputStore,
    names: OutputNames,
    dataset: Dataset,
    thumb: Thumbnail | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Upload a thumbnail once the job's real work is done. Returns the entry for the
    dataset's ``outputs`` and the metadata recording it (both empty when there is none:
    a failed upload is logged, never the job's failure)."""
    if thumb is None:
        return {}, {}
    try:
        key = out.put_file(names.thumbnail(dataset, thumb.item), thumb.path, "image/jpeg")
    except Exception as exc:  # a missing thumbnail must not fail a viewable dataset
        ctx.log(f"no thumbnail: {exc}")
        return {}, {}
    finally:
        thumb.path.unlink(missing_ok=True)
    ctx.log(f"thumbnail {key}: {thumb.width}x{thumb.height}")
    return {"thumbnail": key}, {"thumbnail": {"width": thumb.width, "height": thumb.height}}
