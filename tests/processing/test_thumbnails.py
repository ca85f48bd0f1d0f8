"""Thumbnails made by the jobs that already run: a large image's from its pyramid, an image
sequence's from its first frame, a video's poster. Real media (ffmpeg lavfi, pyvips), a
local source, ``postprocess`` and ``worker --burst`` through the real CLI; the test reads
the dataset metadata and the files in the output store."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips

from helpers import Cli
from jobs.conftest import Lab
from mediamirror.catalog.db import Catalog
from mediamirror.processing.thumbnails import THUMB_SIZE, make_thumbnail
from mediamirror.processing.transcode import ffmpeg_exe
from mediamirror.web.thumbs import thumbnail_url, thumbnail_version

pytestmark = pytest.mark.timeout(240)

MOUNT = "/m"
LARGE = f"{MOUNT}/large/Large image scan.tif"
SEQUENCE = f"{MOUNT}/seq"
VIDEO = f"{MOUNT}/clips/Video clip.mp4"
RED, BLUE = (220, 30, 30), (30, 30, 220)
#: ffmpeg arguments of a 2 s 320x240 web-ready H.264 clip (its output file follows).
CLIP_ARGS = [
    *["-hide_banner", "-nostdin", "-loglevel", "error", "-y"],
    *["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:d=2"],
    *["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
]


def solid(width: int, height: int, rgb: tuple[int, int, int]) -> pyvips.Image:
    return (pyvips.Image.black(width, height) + list(rgb)).cast("uchar").copy(interpretation="srgb")


def noisy(width: int, height: int) -> pyvips.Image:
    """Random pixels: a TIFF that stays big, so the sync makes it a large image."""
    noise = pyvips.Image.gaussnoise(width, height, mean=128, sigma=60)
    return noise.bandjoin([noise, noise]).cast("uchar").copy(interpretation="srgb")


def put_media(lab: Lab) -> None:
    lab.media.joinpath("large").mkdir(parents=True)
    noisy(1200, 800).tiffsave(str(lab.media / "large" / "scan.tif"))
    lab.media.joinpath("seq").mkdir()
    # The first frame is red, the others blue: the thumbnail must be of the first.
    solid(400, 300, RED).pngsave(str(lab.media / "seq" / "f001.png"))
    solid(400, 300, BLUE).pngsave(str(lab.media / "seq" / "f002.png"))
    solid(400, 300, BLUE).tiffsave(str(lab.media / "seq" / "f003.tif"))
    lab.media.joinpath("bad").mkdir()  # its second frame is corrupt: the job fails
    solid(400, 300, RED).pngsave(str(lab.media / "bad" / "f001.png"))
    (lab.media / "bad" / "f002.png").write_bytes(b"not a png" * 50)
    lab.media.joinpath("clips").mkdir()
    result = subprocess.run(
        [ffmpeg_exe(), *CLIP_ARGS, str(lab.media / "clips" / "clip.mp4")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def make_lab(root: Path, *source_args: str) -> Lab:
    url = f"sqlite:///{root / 'catalog.db'}"
    lab = Lab(root, Catalog(url), Cli(home=root / "home", database_url=url))
    lab.cli.env["MEDIAMIRROR_LARGE_IMAGE_BYTES"] = "1000000"
    put_media(lab)
    lab.run("source", "add", "m", lab.media.as_uri(), *source_args)
    lab.run("sync", "m")
    lab.run("postprocess", MOUNT, "--recursive")
    lab.worker(timeout=180)
    return lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = make_lab(tmp_path_factory.mktemp("thumbs"))
    yield made
    made.catalog.close()


def jpeg(path: Path) -> pyvips.Image:
    """The file decoded as a JPEG (fails the test when it is not one)."""
    assert path.read_bytes()[:3] == b"\xff\xd8\xff", f"{path} is not a JPEG"
    image = pyvips.Image.new_from_file(str(path), fail_on="warning")
    assert image.get("vips-loader") == "jpegload"
    image.avg()  # decodes every pixel
    return image


def mean_rgb(image: pyvips.Image) -> list[float]:
    return [image[band].avg() for band in range(3)]


def served(folder_id: int, meta: dict[str, Any]) -> str:
    return f"/api/v1/datasets/{folder_id}/thumbnail?v={thumbnail_version(meta)}"


def test_a_large_image_gets_a_thumbnail_from_its_pyramid(lab: Lab) -> None:
    row = lab.dataset(LARGE)
    meta = dict(row.meta)
    assert [j.state for j in lab.jobs_of(LARGE)] == ["success"]
    key = meta["outputs"]["thumbnail"]
    assert key == "m/large/Large image scan.tif/thumbnail.jpg"
    assert meta["outputs"]["pyramid"]  # beside the other outputs
    image = jpeg(lab.outputs / key)
    assert (image.width, image.height) == (THUMB_SIZE, 213)  # 1200x800 down to 320 wide
    assert meta["thumbnail"] == {"width": 320, "height": 213}
    assert (
        thumbnail_url(row.id, meta)
        == f"/api/v1/datasets/{row.id}/thumbnail?v={thumbnail_version(meta)}"
    )


def test_an_image_sequence_gets_a_thumbnail_of_its_first_frame(lab: Lab) -> None:
    row = lab.dataset(SEQUENCE)
    meta = dict(row.meta)
    assert [j.state for j in lab.jobs_of(SEQUENCE)] == ["success"]
    key = meta["outputs"]["thumbnail"]
    assert key == "m/seq/thumbnail.jpg"
    assert meta["outputs"]["frames"]  # the converted TIFF frame is still recorded
    image = jpeg(lab.outputs / key)
    assert (image.width, image.height) == (320, 240)
    red = mean_rgb(image)
    assert red[0] > 180 and red[2] < 70, red  # the red first frame, not a blue one
    assert (
        thumbnail_url(row.id, meta)
        == f"/api/v1/datasets/{row.id}/thumbnail?v={thumbnail_version(meta)}"
    )


def test_a_video_poster_is_its_thumbnail(lab: Lab) -> None:
    row = lab.dataset(VIDEO)
    meta = dict(row.meta)
    assert "thumbnail" not in meta["outputs"]
    image = jpeg(lab.outputs / meta["outputs"]["poster"])
    assert (image.width, image.height) == (320, 240)
    assert (
        thumbnail_url(row.id, meta)
        == f"/api/v1/datasets/{row.id}/thumbnail?v={thumbnail_version(meta)}"
    )


def test_a_failed_job_leaves_no_thumbnail(lab: Lab) -> None:
    row = lab.dataset(f"{MOUNT}/bad")
    assert [j.state for j in lab.jobs_of(f"{MOUNT}/bad")] == ["error"]
    assert "thumbnail" not in (row.meta.get("outputs") or {})
    assert not [f for f in lab.output_files() if f.startswith("m/bad/")], lab.output_files()
    assert thumbnail_url(row.id, dict(row.meta)) is None


def test_no_thumbnail_url_without_one() -> None:
    assert thumbnail_url(7, {"type": "video", "fps": -1}) is None
    assert thumbnail_url(7, {"type": "large-image", "outputs": {"pyramid": "p.tif"}}) is None
    assert thumbnail_url(7, {"outputs": {"thumbnail": "x.jpg"}}) is None  # not a dataset
    assert thumbnail_url(7, {"type": "video", "outputs": "junk"}) is None


def test_reprocess_makes_a_missing_thumbnail(lab: Lab) -> None:
    """An older catalog: the pyramid exists, the thumbnail does not. ``reprocess`` with the
    dataset's processor makes it (what docs/ui.md tells people to run)."""
    key = dict(lab.dataset(LARGE).meta)["outputs"]["thumbnail"]
    (lab.outputs / key).unlink()

    def forget(meta: dict[str, Any]) -> None:
        meta["outputs"].pop("thumbnail")
        meta.pop("thumbnail")

    from mediamirror.catalog.meta import update_meta

    update_meta(lab.catalog, lab.dataset(LARGE).id, forget)
    row = lab.dataset(LARGE)
    assert thumbnail_url(row.id, dict(row.meta)) is None
    lab.run("reprocess", f"{MOUNT}/large", "--processor", "pyramid")
    lab.worker(timeout=120)
    meta = dict(lab.dataset(LARGE).meta)
    assert meta["outputs"]["thumbnail"] == key
    assert jpeg(lab.outputs / key).width == 320


def test_mirror_layout_names(tmp_path: Path) -> None:
    out = tmp_path / "images"
    lab = make_lab(
        tmp_path,
        "--output",
        out.as_uri(),
        "--output-layout",
        "mirror",
        "--processors",
        "pyramid,images",
    )
    try:
        large = dict(lab.dataset(LARGE).meta)["outputs"]
        seq = dict(lab.dataset(SEQUENCE).meta)["outputs"]
        assert large["thumbnail"] == "large/scan.thumb.jpg"
        assert seq["thumbnail"] == "seq/f001.thumb.jpg"  # named after its first frame
        assert jpeg(out / "large" / "scan.thumb.jpg").width == 320
        assert jpeg(out / "seq" / "f001.thumb.jpg").height == 240
    finally:
        lab.catalog.close()


def test_make_thumbnail_converts_what_a_jpeg_cannot_hold(tmp_path: Path) -> None:
    """16-bit samples and alpha become 8-bit RGB on white; never enlarged; bad input is a
    one-line ProcessingError."""
    from mediamirror.errors import ProcessingError

    deep = (solid(640, 480, RED).cast("ushort") * 256).copy(interpretation="rgb16")
    deep.bandjoin(0).pngsave(str(tmp_path / "deep.png"))  # alpha 0: all transparent
    assert make_thumbnail(tmp_path / "deep.png", tmp_path / "deep.jpg") == (320, 240)
    assert min(mean_rgb(jpeg(tmp_path / "deep.jpg"))) > 240  # flattened onto white
    solid(100, 50, BLUE).pngsave(str(tmp_path / "small.png"))
    assert make_thumbnail(tmp_path / "small.png", tmp_path / "small.jpg") == (100, 50)
    (tmp_path / "bad.png").write_bytes(b"not an image" * 10)
    with pytest.raises(ProcessingError, match=r"bad\.png: cannot make a thumbnail") as err:
        make_thumbnail(tmp_path / "bad.png", tmp_path / "bad.jpg")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad.jpg").exists()


def test_a_thumbnail_made_again_gets_a_new_url() -> None:
    """The URL names the thumbnail's version, so a browser never shows a cached old one."""
    meta = {
        "type": "large-image",
        "outputs": {"thumbnail": "m/a/thumbnail.jpg"},
        "thumbnail": {"width": 320, "height": 200},
        "processing": {"pyramid": {"state": "success", "job": 7}},
    }
    url = thumbnail_url(3, meta)
    assert url is not None and url.startswith("/api/v1/datasets/3/thumbnail?v=")
    assert thumbnail_url(3, dict(meta)) == url  # the same thumbnail: the same URL
    again = {**meta, "processing": {"pyramid": {"state": "success", "job": 9}}}
    assert thumbnail_url(3, again) != url
    resized = {**meta, "thumbnail": {"width": 320, "height": 180}}
    assert thumbnail_url(3, resized) != url
