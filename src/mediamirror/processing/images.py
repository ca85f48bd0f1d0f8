"""Checks and conversions for the frames of an image sequence.

Browsers show JPEG, PNG and WebP; anything else (TIFF, BMP, ...) is converted to JPEG when
8-bit without transparency, and to PNG (which keeps alpha and 16-bit samples) otherwise.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyvips

from mediamirror.errors import ProcessingError

WEB_FORMATS = frozenset({".jpg", ".jpeg", ".png", ".webp"})
JPEG_QUALITY = 90
# "truncated" makes libvips fail on a cut-off file instead of padding it with grey: a
# half-grey frame that looks fine in a listing is worse than a clear error.
FAIL_ON = "truncated"


def check_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Decode the whole image and return ``(width, height)``.

    Raises :class:`~mediamirror.errors.ProcessingError` when the file is not an image, is
    truncated, or its pixels cannot be decoded.
    """
    image = open_image(path)
    try:
        image.avg()  # forces every pixel to be decoded, which is where corruption shows
    except pyvips.Error as exc:
        raise ProcessingError(f"{Path(path).name}: corrupt image ({vips_reason(exc)})") from exc
    return image.width, image.height


def web_suffix_for(path: str | os.PathLike[str]) -> str:
    """``".png"`` for images with alpha or more than 8 bits per sample, else ``".jpg"``."""
    return ".png" if _needs_png(open_image(path)) else ".jpg"


def to_web_image(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Convert ``src`` to the JPEG or PNG named by ``dest``'s suffix; return ``dest``.

    JPEG output is flattened onto white and reduced to 8 bits; PNG keeps alpha and 16-bit
    samples. ``dest`` appears only once complete. Use :func:`web_suffix_for` to choose.
    """
    out = Path(dest)
    suffix = out.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        raise ValueError(f"destination must end in .jpg, .jpeg or .png, not {out.name}")
    if _same_file(src, out):
        raise ValueError("refusing to overwrite the source image")
    image = open_image(src)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        if suffix == ".png":
            _for_png(image).pngsave(str(partial))
        else:
            _for_jpeg(image).jpegsave(str(partial), Q=JPEG_QUALITY)
        os.replace(partial, out)
    except pyvips.Error as exc:
        raise ProcessingError(f"{Path(src).name}: cannot convert ({vips_reason(exc)})") from exc
    finally:
        partial.unlink(missing_ok=True)
    return out


def open_image(path: str | os.PathLike[str]) -> pyvips.Image:
    """Open an image for one top-to-bottom pass, translating load errors."""
    try:
        return pyvips.Image.new_from_file(str(path), access="sequential", fail_on=FAIL_ON)
    except pyvips.Error as exc:
        raise ProcessingError(
            f"{Path(path).name}: not a readable image ({vips_reason(exc)})"
        ) from exc


def vips_reason(exc: pyvips.Error) -> str:
    """The last line of libvips' error detail (the specific cause), else its message."""
    lines = [line.strip() for line in (exc.detail or "").splitlines() if line.strip()]
    return lines[-1] if lines else " ".join(str(exc.message).split())


def _needs_png(image: pyvips.Image) -> bool:
    return bool(image.hasalpha()) or image.format not in ("uchar", "char")


def _for_png(image: pyvips.Image) -> pyvips.Image:
    if image.interpretation == "cmyk":
        image = image.colourspace("srgb")
    if image.format in ("uchar", "ushort"):
        return image
    return image.scaleimage()  # float or signed samples: stretch to 0-255


def _for_jpeg(image: pyvips.Image) -> pyvips.Image:
    if image.interpretation == "cmyk":
        image = image.colourspace("srgb")
    if image.hasalpha():
        white = _max_alpha(image)
        image = image.flatten(background=[white] * (image.bands - 1), max_alpha=white)
    if image.format == "ushort":
        image = (image >> 8).cast("uchar")
    elif image.format != "uchar":
        image = image.scaleimage()
    return image


def _max_alpha(image: pyvips.Image) -> float:
    return 65535.0 if image.format == "ushort" else 255.0


def _same_file(src: str | os.PathLike[str], dest: Path) -> bool:
    try:
        return Path(src).resolve() == dest.resolve()
    except OSError:
        return False
