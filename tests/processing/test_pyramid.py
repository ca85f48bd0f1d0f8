"""make_pyramid() output read back with pyvips and the TIFF Compression tag."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips

from mediamirror.errors import ProcessingError
from mediamirror.processing.pyramid import (
    direct_tiffsave_args,
    make_pyramid,
    needs_bigtiff,
    tiff_compression,
)

from .conftest import gradient

TIFF_JPEG = 7
TIFF_DEFLATE = 8


def _levels(path: Path) -> list[pyvips.Image]:
    pages = int(pyvips.Image.new_from_file(str(path)).get("n-pages"))
    return [pyvips.Image.new_from_file(str(path), page=page) for page in range(pages)]


def test_jpeg_source_gives_a_jpeg_pyramid(jpg_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "photo.tif"
    info = make_pyramid(jpg_image, out)
    assert (info.width, info.height, info.compression, info.bigtiff) == (
        1000,
        700,
        "jpeg",
        False,
    )
    levels = _levels(out)
    # 1000x700 -> 500x350 -> 250x175, which fits in one 256 px tile.
    assert [(level.width, level.height) for level in levels] == [
        (1000, 700),
        (500, 350),
        (250, 175),
    ]
    assert info.levels == 3
    assert levels[0].get("tile-width") == 256 and levels[0].get("tile-height") == 256
    assert tiff_compression(out) == TIFF_JPEG
    assert out.read_bytes()[:4] == b"II*\x00"  # classic TIFF, not BigTIFF
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.tif"]


@pytest.mark.parametrize(
    ("fixture", "compression"),
    [
        ("png_image", "deflate"),  # lossless source stays lossless
        ("tif_image", "deflate"),  # uncompressed TIFF
        ("jpeg_tif_image", "jpeg"),  # JPEG-compressed TIFF, as slide scanners write
        ("png16_image", "deflate"),  # 16-bit samples cannot go into JPEG
        ("rgba_png", "deflate"),  # alpha cannot go into JPEG
    ],
)
def test_compression_rule(
    fixture: str, compression: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out = tmp_path / "out.tif"
    info = make_pyramid(request.getfixturevalue(fixture), out)
    assert info.compression == compression
    assert tiff_compression(out) == (TIFF_JPEG if compression == "jpeg" else TIFF_DEFLATE)


def test_sixteen_bit_values_are_kept(png16_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "deep.tif"
    make_pyramid(png16_image, out)
    written = pyvips.Image.new_from_file(str(out))
    source = pyvips.Image.new_from_file(str(png16_image))
    assert written.format == "ushort"
    assert (written - source).abs().max() == 0


@pytest.mark.parametrize(("lossless", "compression"), [(False, "jpeg"), (True, "deflate")])
def test_webp_lossy_or_lossless(lossless: bool, compression: str, tmp_path: Path) -> None:
    source = tmp_path / "in.webp"
    gradient(400, 300).webpsave(str(source), lossless=lossless)
    assert make_pyramid(source, tmp_path / "out.tif").compression == compression


def test_forced_compression(jpg_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    assert make_pyramid(jpg_image, out, compression="deflate").compression == "deflate"
    assert tiff_compression(out) == TIFF_DEFLATE


def test_max_dimension_keeps_aspect(jpg_image: Path, tmp_path: Path) -> None:
    info = make_pyramid(jpg_image, tmp_path / "small.tif", max_dimension=300)
    assert (info.width, info.height) == (300, 210)
    assert info.levels == 2  # 300x210 -> 150x105


def test_max_dimension_never_enlarges(jpg_image: Path, tmp_path: Path) -> None:
    info = make_pyramid(jpg_image, tmp_path / "same.tif", max_dimension=5000)
    assert (info.width, info.height) == (1000, 700)


def test_custom_tile_size(png_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    info = make_pyramid(png_image, out, tile=128)
    assert pyvips.Image.new_from_file(str(out)).get("tile-width") == 128
    assert info.levels == 4  # 1000 -> 500 -> 250 -> 125 fits in 128


def test_bigtiff_estimate() -> None:
    # Lazy images: nothing is computed, only their size is looked at.
    assert needs_bigtiff(pyvips.Image.black(40_000, 40_000, bands=3)) is True
    assert needs_bigtiff(pyvips.Image.black(20_000, 20_000, bands=3)) is False
    assert needs_bigtiff(pyvips.Image.black(30_000, 30_000, bands=3).cast("ushort")) is True


def test_direct_call_matches(jpg_image: Path, tmp_path: Path) -> None:
    ours = tmp_path / "ours.tif"
    direct = tmp_path / "direct.tif"
    make_pyramid(jpg_image, ours)
    image = pyvips.Image.new_from_file(str(jpg_image), access="sequential")
    args = direct_tiffsave_args(image, jpg_image)
    assert args["compression"] == "jpeg" and args["Q"] == 90 and args["tile_width"] == 256
    image.tiffsave(str(direct), **args)
    assert ours.read_bytes() == direct.read_bytes()


@pytest.mark.parametrize("fixture", ["corrupt_jpg", "text_as_jpg"])
def test_bad_input_raises_one_line(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source: Path = request.getfixturevalue(fixture)
    with pytest.raises(ProcessingError) as caught:
        make_pyramid(source, tmp_path / "out.tif")
    assert str(caught.value).startswith(source.name)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no half-written pyramid


def test_refuses_to_overwrite_its_source(tif_image: Path) -> None:
    with pytest.raises(ValueError):
        make_pyramid(tif_image, tif_image)
