"""Image-sequence helpers: checking frames and converting them for browsers."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips

from mediamirror.errors import ProcessingError
from mediamirror.processing.images import (
    WEB_FORMATS,
    check_image,
    to_web_image,
    web_suffix_for,
)


def test_web_formats() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp"} == WEB_FORMATS
    assert ".tif" not in WEB_FORMATS


@pytest.mark.parametrize(
    ("fixture", "size"),
    [
        ("jpg_image", (1000, 700)),
        ("png_image", (1000, 700)),
        ("png16_image", (300, 200)),
        ("tif_image", (640, 480)),
    ],
)
def test_check_image_returns_size(
    fixture: str, size: tuple[int, int], request: pytest.FixtureRequest
) -> None:
    assert check_image(request.getfixturevalue(fixture)) == size


@pytest.mark.parametrize(
    ("fixture", "reason"), [("corrupt_jpg", "corrupt"), ("text_as_jpg", "not a readable")]
)
def test_check_image_rejects_broken_files(
    fixture: str, reason: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(fixture)
    with pytest.raises(ProcessingError) as caught:
        check_image(path)
    assert reason in str(caught.value)
    assert str(caught.value).startswith(path.name)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("fixture", "suffix"),
    [("tif_image", ".jpg"), ("png16_image", ".png"), ("rgba_png", ".png")],
)
def test_web_suffix(fixture: str, suffix: str, request: pytest.FixtureRequest) -> None:
    assert web_suffix_for(request.getfixturevalue(fixture)) == suffix


def test_tif_to_jpeg(tif_image: Path, tmp_path: Path) -> None:
    out = to_web_image(tif_image, tmp_path / "scan.jpg")
    image = pyvips.Image.new_from_file(str(out))
    assert image.get("vips-loader") == "jpegload"
    assert (image.width, image.height, image.bands, image.format) == (640, 480, 3, "uchar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.jpg"]


def test_sixteen_bit_png_keeps_its_depth(png16_image: Path, tmp_path: Path) -> None:
    out = to_web_image(png16_image, tmp_path / "deep.png")
    image = pyvips.Image.new_from_file(str(out))
    assert image.format == "ushort"
    assert (image - pyvips.Image.new_from_file(str(png16_image))).abs().max() == 0


def test_sixteen_bit_to_jpeg_is_scaled_down(png16_image: Path, tmp_path: Path) -> None:
    out = to_web_image(png16_image, tmp_path / "deep.jpg")
    image = pyvips.Image.new_from_file(str(out))
    source = pyvips.Image.new_from_file(str(png16_image))
    assert image.format == "uchar"
    # Same picture, 8 bits: the means agree within JPEG's error.
    assert abs(image.avg() - source.avg() / 257) < 2


def test_alpha_is_kept_in_png_and_flattened_in_jpeg(rgba_png: Path, tmp_path: Path) -> None:
    tif = tmp_path / "cutout.tif"
    pyvips.Image.new_from_file(str(rgba_png)).tiffsave(str(tif))
    png = pyvips.Image.new_from_file(str(to_web_image(tif, tmp_path / "a.png")))
    assert png.bands == 4 and png.hasalpha()
    jpg = pyvips.Image.new_from_file(str(to_web_image(tif, tmp_path / "a.jpg")))
    assert jpg.bands == 3
    # The transparent left half becomes white.
    assert jpg.crop(0, 0, 100, 200).min() > 240


def test_rejects_unknown_destination_format(tif_image: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        to_web_image(tif_image, tmp_path / "scan.bmp")


def test_refuses_to_overwrite_its_source(png_image: Path) -> None:
    with pytest.raises(ValueError):
        to_web_image(png_image, png_image)


def test_corrupt_source_leaves_no_output(corrupt_jpg: Path, tmp_path: Path) -> None:
    with pytest.raises(ProcessingError):
        to_web_image(corrupt_jpg, tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []
