"""IIIF Image API 3.0 over the pyramid of the sample slide (1024 x 1024): ``info.json`` and
tiles, checked pixel by pixel against the source image, and every refusal."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips
from sqlalchemy import select

from faults import FaultProxy
from helpers import Cli, S3Bucket, S3Server
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.meta import update_meta
from mediamirror.catalog.models import ITEMS
from mediamirror.config import load_settings
from mediamirror.processing.pyramid import make_pyramid
from mediamirror.services import Services
from mediamirror.web.app import create_app

from .support import Deployment, InProcessServer, assert_error, serve_copy, wait_for

pytestmark = pytest.mark.timeout(120)
SLIDE = "/sample/large/Large image slide.tif"


def decode(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "")


def mean_difference(a: pyvips.Image, b: pyvips.Image) -> float:
    assert (a.width, a.height, a.bands) == (b.width, b.height, b.bands)
    return float((a.cast("int") - b.cast("int")).abs().avg())


def source(dep: Deployment) -> pyvips.Image:
    return pyvips.Image.new_from_file(str(dep.media / "large" / "slide.tif"), access="random")


def get_image(dep: Deployment, path: str, media_type: str) -> pyvips.Image:
    response = dep.viewer.get(path)
    assert response.status_code == 200, (path, response.text)
    assert response.headers["content-type"] == media_type
    assert response.headers["cache-control"].startswith("private")
    return decode(response.content)


@pytest.fixture(scope="module")
def base(api: Deployment) -> str:
    return f"/iiif/3/{api.folder_id(SLIDE)}"


def test_info_json_describes_the_pyramid(api: Deployment, base: str) -> None:
    rel = api.viewer.get(f"/api/v1/datasets/{api.folder_id(SLIDE)}").json()["meta"]["outputs"]
    pyramid = pyvips.Image.new_from_file(str(api.home / "outputs" / rel["pyramid"]))

    response = api.viewer.get(f"{base}/info.json")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/ld+json")
    info = response.json()
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert info["id"] == f"{api.url}{base}"
    assert info["type"] == "ImageService3"
    assert info["protocol"] == "http://iiif.io/api/image"
    assert info["profile"] in {"level0", "level1", "level2"}
    assert (info["width"], info["height"]) == (pyramid.width, pyramid.height) == (1024, 1024)
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4]}]
    assert info["sizes"][-1] == {"width": 1024, "height": 1024}
    assert {"width": 256, "height": 256} in info["sizes"]


def test_a_full_resolution_tile_matches_the_source(api: Deployment, base: str) -> None:
    expected = source(api).crop(0, 0, 256, 256)

    jpeg = get_image(api, f"{base}/0,0,256,256/256,/0/default.jpg", "image/jpeg")
    png = get_image(api, f"{base}/256,512,256,256/256,/0/default.png", "image/png")

    assert (jpeg.width, jpeg.height, jpeg.bands) == (256, 256, 3)
    # JPEG drops the zone plate's fine detail: compare 8 x 8 block means, which a tile
    # off by 16 px already fails.
    assert mean_difference(jpeg.shrink(8, 8), expected.shrink(8, 8)) < 1.5
    assert mean_difference(jpeg.shrink(8, 8), source(api).crop(16, 16, 256, 256).shrink(8, 8)) > 2
    # PNG is lossless and the pyramid is deflate-compressed: the very pixels.
    assert mean_difference(png, source(api).crop(256, 512, 256, 256)) < 0.5


def test_a_scaled_tile_comes_from_a_lower_level(api: Deployment, base: str) -> None:
    expected = source(api).crop(512, 0, 512, 512).resize(0.5)

    tile = get_image(api, f"{base}/512,0,512,512/256,/0/default.png", "image/png")

    assert (tile.width, tile.height) == (256, 256)
    assert mean_difference(tile, expected) < 8


@pytest.mark.parametrize(
    ("region", "size", "rotation", "quality", "fmt", "shape"),
    [
        ("full", "128,", "0", "default", "png", (128, 128, 3)),
        ("full", ",64", "0", "color", "jpg", (64, 64, 3)),
        ("square", "100,", "0", "default", "jpg", (100, 100, 3)),
        ("0,0,256,256", "pct:50", "0", "default", "png", (128, 128, 3)),
        ("full", "!100,100", "0", "default", "jpg", (100, 100, 3)),
        ("0,0,512,256", "!100,100", "0", "default", "jpg", (100, 50, 3)),
        ("0,0,300,200", "max", "0", "default", "png", (300, 200, 3)),
        ("0,0,300,200", "^max", "90", "default", "png", (200, 300, 3)),
        ("0,0,200,100", "50,60", "180", "gray", "png", (50, 60, 1)),
        ("900,900,500,500", "max", "0", "default", "webp", (124, 124, 3)),
    ],
)
def test_regions_sizes_rotations_and_formats(
    api: Deployment,
    base: str,
    region: str,
    size: str,
    rotation: str,
    quality: str,
    fmt: str,
    shape: tuple[int, int, int],
) -> None:
    media_type = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[fmt]

    image = get_image(api, f"{base}/{region}/{size}/{rotation}/{quality}.{fmt}", media_type)

    assert (image.width, image.height, image.bands) == shape


def test_full_at_128_matches_the_downscaled_source(api: Deployment, base: str) -> None:
    image = get_image(api, f"{base}/full/128,/0/default.png", "image/png")

    assert mean_difference(image, source(api).resize(128 / 1024)) < 10


@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        ("abc/max/0/default.jpg", "region"),
        ("0,0,0,0/max/0/default.jpg", "region"),
        ("-1,0,10,10/max/0/default.jpg", "region"),
        ("2000,0,10,10/max/0/default.jpg", "region"),
        ("pct:10,10,10,10/max/0/default.jpg", "region"),
        ("0,0,10/max/0/default.jpg", "region"),
        ("full/0,/0/default.jpg", "size"),
        ("full/-5,/0/default.jpg", "size"),
        ("full/10,-5/0/default.jpg", "size"),
        ("full/abc/0/default.jpg", "size"),
        ("full/pct:0/0/default.jpg", "size"),
        ("full/pct:-50/0/default.jpg", "size"),
        ("full/pct:inf/0/default.jpg", "size"),
        ("full/pct:nan/0/default.jpg", "size"),
        ("full/!0,10/0/default.jpg", "size"),
        ("full/5000,/0/default.jpg", "4096"),
        ("full/pct:1000/0/default.jpg", "4096"),
        ("full/max/45/default.jpg", "rotation"),
        ("full/max/!0/default.jpg", "rotation"),
        ("full/max/x/default.jpg", "rotation"),
        ("full/max/0/bitonal.jpg", "quality"),
        ("full/max/0/default.gif", "format"),
        ("full/max/0/default.tif", "format"),
    ],
)
def test_a_bad_request_is_a_400_json_error(
    api: Deployment, base: str, part: str, fragment: str
) -> None:
    assert_error(api.viewer.get(f"{base}/{part}"), 400, fragment)


def test_a_dataset_without_pyramid_is_a_404(api: Deployment) -> None:
    video = api.folder_id("/sample/videos/Video clip-mpeg4.avi")
    for fid in (video, api.folder_id("/sample"), 987654):
        assert_error(api.viewer.get(f"/iiif/3/{fid}/info.json"), 404, "pyramid")
        assert_error(api.viewer.get(f"/iiif/3/{fid}/full/max/0/default.jpg"), 404, "pyramid")
    assert_error(api.viewer.get("/iiif/3/abc/info.json"), 400)


def test_a_pyramid_made_again_is_served_anew(api: Deployment, tmp_path: Path) -> None:
    """Re-processing writes a new pyramid at the same path (here with the size capped at
    512 px): info.json and tiles follow it, and a pyramid gone from the store is a 404."""
    fid = api.folder_id(SLIDE)
    meta = api.viewer.get(f"/api/v1/datasets/{fid}").json()["meta"]
    auth = {"Authorization": f"Bearer {api.viewer_token}"}
    with serve_copy(api, tmp_path) as (url, home), httpx.Client(base_url=url, headers=auth) as web:
        pyramid = home / "outputs" / meta["outputs"]["pyramid"]
        assert web.get(f"/iiif/3/{fid}/info.json").json()["width"] == 1024
        assert web.get(f"/iiif/3/{fid}/0,0,256,256/256,/0/default.png").status_code == 200

        make_pyramid(api.media / "large" / "slide.tif", pyramid, max_dimension=512)

        info = web.get(f"/iiif/3/{fid}/info.json").json()
        assert (info["width"], info["height"]) == (512, 512)
        assert info["tiles"][0]["scaleFactors"] == [1, 2]
        tile = decode(web.get(f"/iiif/3/{fid}/0,0,256,256/256,/0/default.png").content)
        expected = pyvips.Image.new_from_file(str(pyramid)).crop(0, 0, 256, 256)
        assert mean_difference(tile, expected) < 0.5

        pyramid.unlink()

        assert_error(web.get(f"/iiif/3/{fid}/info.json"), 404, "missing")
        assert_error(web.get(f"/iiif/3/{fid}/full/64,/0/default.jpg"), 404, "missing")


# -- pyramids in an S3 output store ------------------------------------------------------------

#: Enough ``..`` to climb from the IIIF cache (<home>/cache/pyramids/pyramids/<source>/) to
#: the folder that holds the data directory.
ESCAPING_KEY = "../../../../../escape/b.tif"


def plain_tiff(path: Path, level: int) -> Path:
    """A 300 x 200 RGB image of one grey ``level`` (tiles show which image they came from)."""
    (pyvips.Image.black(300, 200, bands=3) + level).cast("uchar").tiffsave(str(path))
    return path


@dataclass
class S3Pyramids:
    """A catalog whose source and output store are both buckets on the S3 API server."""

    root: Path
    cli: Cli
    catalog: Catalog
    source: S3Bucket
    output: S3Bucket
    token: str

    def folder_of(self, key: str) -> int:
        with self.catalog.read() as conn:
            return int(
                conn.execute(select(ITEMS.c.folder_id).where(ITEMS.c.key == key)).scalar_one()
            )

    @contextmanager
    def serving(self, endpoint: str | None = None) -> Iterator[httpx.Client]:
        """The app in-process, reading the output store through ``endpoint``."""
        env = self.cli.environ({"MEDIAMIRROR_OUTPUT_ENDPOINT_URL": endpoint} if endpoint else None)
        app = create_app(Services(self.catalog, load_settings(env=env), env), worker=False)
        auth = {"Authorization": f"Bearer {self.token}"}
        with (
            InProcessServer(app).running() as server,
            httpx.Client(base_url=server.url, headers=auth, timeout=60) as web,
        ):
            yield web

    def outside_home(self) -> list[str]:
        home = self.cli.home
        return sorted(
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if p.is_file() and not p.is_relative_to(home)
        )

    def process(self) -> None:
        """Sync (queuing post-processing) and run the queued jobs."""
        self.cli.run("sync", "src", env={"MEDIAMIRROR_AUTO_POSTPROCESS": "true"})
        assert "error" not in self.cli.run("worker", "--burst", timeout=120).stdout


@pytest.fixture(scope="module")
def s3_pyramids(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, s3_client: Any
) -> Iterator[S3Pyramids]:
    root = tmp_path_factory.mktemp("s3-pyramids")
    source, output = S3Bucket(s3_server, s3_client), S3Bucket(s3_server, s3_client)
    source.put("ok/a.tif", plain_tiff(root / "a.tif", 40).read_bytes())
    source.put(ESCAPING_KEY, plain_tiff(root / "b.tif", 200).read_bytes())
    url = f"sqlite:///{root / 'catalog.db'}"
    cli = Cli(
        home=root / "home",
        database_url=url,
        env={
            "MEDIAMIRROR_LARGE_IMAGE_BYTES": "1",
            "MEDIAMIRROR_OUTPUT_STORE": output.url("derived"),
            "MEDIAMIRROR_OUTPUT_ENDPOINT_URL": s3_server.endpoint,
        },
    )
    cli.run("source", "add", "src", source.url(), *source.cli_options)
    token = cli.run("token", "create", "--role", "viewer", "--name", "v").stdout.strip()
    catalog = Catalog(url)
    lab = S3Pyramids(root, cli, catalog, source, output, token)
    lab.process()
    yield lab
    catalog.close()


def tile_level(web: httpx.Client, folder_id: int) -> float:
    response = web.get(f"/iiif/3/{folder_id}/full/64,/0/default.png")
    assert response.status_code == 200, response.text
    return float(decode(response.content).avg())


def test_an_s3_pyramid_of_a_dot_dot_key_stays_in_the_data_directory(
    s3_pyramids: S3Pyramids,
) -> None:
    lab = s3_pyramids
    before = lab.outside_home()

    with lab.serving() as web:
        assert tile_level(web, lab.folder_of(ESCAPING_KEY)) == pytest.approx(200, abs=1)
        assert tile_level(web, lab.folder_of("ok/a.tif")) == pytest.approx(40, abs=1)

    assert lab.outside_home() == before
    cached = [p for p in (lab.cli.home / "cache").rglob("*") if p.is_file()]
    assert len(cached) >= 2
    assert all(p.is_relative_to(lab.cli.home / "cache" / "pyramids") for p in cached)
    stored = lab.output.keys()
    assert not any(k.startswith("derived/pyramids/src/../") for k in stored), stored


def test_a_pyramid_path_that_climbs_out_is_refused(s3_pyramids: S3Pyramids) -> None:
    """An output path recorded with ``..`` segments (as an older catalog could hold) is
    never fetched into a path outside the cache."""
    lab = s3_pyramids
    fid = lab.folder_of(ESCAPING_KEY)
    climbing = "pyramids/src/../../../../../escape/b.tif"
    lab.output.put(f"derived/{climbing}", plain_tiff(lab.root / "c.tif", 90).read_bytes())
    saved = update_meta(lab.catalog, fid, lambda meta: None)
    assert saved is not None
    try:
        update_meta(lab.catalog, fid, lambda meta: meta["outputs"].update(pyramid=climbing))
        before = lab.outside_home()
        with lab.serving() as web:
            response = web.get(f"/iiif/3/{fid}/full/64,/0/default.png")
        assert response.status_code >= 400
        assert lab.outside_home() == before
    finally:
        update_meta(lab.catalog, fid, lambda meta: meta.update(saved))


def test_a_reprocessed_s3_pyramid_is_served_anew(s3_pyramids: S3Pyramids) -> None:
    lab = s3_pyramids
    fid = lab.folder_of("ok/a.tif")
    with lab.serving() as web:
        assert tile_level(web, fid) == pytest.approx(40, abs=1)

        lab.source.put("ok/a.tif", plain_tiff(lab.root / "a2.tif", 160).read_bytes())
        lab.process()

        assert tile_level(web, fid) == pytest.approx(160, abs=1)
    copies = [p.name for p in (lab.cli.home / "cache").rglob("a.tif.tif@*")]
    assert len(copies) == 1, "the copy of the earlier version is dropped"


def test_a_stalled_pyramid_download_does_not_hold_up_other_images(
    s3_pyramids: S3Pyramids, s3_server: S3Server
) -> None:
    lab = s3_pyramids
    shutil.rmtree(lab.cli.home / "cache", ignore_errors=True)
    stalled, other = lab.folder_of("ok/a.tif"), lab.folder_of(ESCAPING_KEY)
    answers: list[int] = []
    with FaultProxy(s3_server.endpoint) as proxy, lab.serving(proxy.endpoint) as web:
        proxy.stall(600, times=None, method="GET", path=r"/ok/a\.tif\.tif$")

        def fetch_stalled() -> None:
            with contextlib.suppress(httpx.HTTPError):
                answers.append(web.get(f"/iiif/3/{stalled}/full/64,/0/default.png").status_code)

        waiting = threading.Thread(target=fetch_stalled, daemon=True)
        waiting.start()
        wait_for(lambda: proxy.faulted, what="the download of the first pyramid to stall")

        assert tile_level(web, other) == pytest.approx(200, abs=1)
        assert waiting.is_alive() and not answers, "the first download is still stalled"
        proxy.close()  # the stalled download ends, so the server stops without waiting on it
    waiting.join(120)
    assert not waiting.is_alive()
