"""Thumbnails over HTTP: ``GET /api/v1/datasets/{id}/thumbnail`` (bytes, ``ETag``,
``Cache-Control``, ``304``, one-line ``404``) and the ``thumbnail`` field of folder
listing rows, on the sample deployment whose jobs made them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

from helpers import Cli, catalog_folders
from mediamirror.catalog.db import Catalog
from mediamirror.config import load_settings
from mediamirror.services import Services
from mediamirror.web.app import create_app

from .support import BASE_ENV, Deployment, InProcessServer, assert_error, serve_copy

pytestmark = pytest.mark.timeout(120)
V1 = "/api/v1"
SLIDE = "/sample/large/Large image slide.tif"
FRAMES = "/sample/frames"
H264 = "/sample/videos/Video clip-h264.mp4"
BAD = "/sample/Video bad.mp4"  # its video job failed: no poster, no thumbnail


def thumb_url(dep: Deployment, path: str) -> str:
    return f"{V1}/datasets/{dep.folder_id(path)}/thumbnail"


def decoded(body: bytes) -> pyvips.Image:
    image = pyvips.Image.new_from_buffer(body, "", fail_on="warning")
    assert image.get("vips-loader") == "jpegload_buffer"
    image.avg()  # every pixel decodes
    return image


def test_a_large_image_thumbnail_is_served_with_cache_headers(api: Deployment) -> None:
    response = api.viewer.get(thumb_url(api, SLIDE))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10  # strong
    cache = response.headers["cache-control"]
    assert "private" in cache and "max-age=" in cache
    image = decoded(response.content)
    assert max(image.width, image.height) == 320  # the 1024 px slide, shrunk


def test_if_none_match_answers_304_without_a_body(api: Deployment) -> None:
    url = thumb_url(api, SLIDE)
    etag = api.viewer.get(url).headers["etag"]

    same = api.viewer.get(url, headers={"If-None-Match": etag})
    weak = api.viewer.get(url, headers={"If-None-Match": f'"other", W/{etag}'})
    other = api.viewer.get(url, headers={"If-None-Match": '"not-this-one"'})

    assert (same.status_code, same.content) == (304, b"")
    assert same.headers["etag"] == etag and "max-age=" in same.headers["cache-control"]
    assert weak.status_code == 304
    assert other.status_code == 200 and other.headers["etag"] == etag


def test_an_image_sequence_and_a_video_have_thumbnails(api: Deployment) -> None:
    frames = api.viewer.get(thumb_url(api, FRAMES))
    assert frames.status_code == 200, frames.text
    assert max(decoded(frames.content).width, decoded(frames.content).height) <= 320

    video = api.viewer.get(thumb_url(api, H264))
    poster = api.viewer.get(f"{V1}/datasets/{api.folder_id(H264)}/poster")
    assert video.status_code == 200, video.text
    assert video.content == poster.content  # a video's poster is its thumbnail
    assert decoded(video.content).width == 320


def test_404_when_there_is_no_thumbnail(api: Deployment) -> None:
    assert_error(api.viewer.get(thumb_url(api, BAD)), 404, "has no thumbnail")
    folder = api.folder_id("/sample/videos")
    assert_error(api.viewer.get(f"{V1}/datasets/{folder}/thumbnail"), 404, "not a dataset")
    assert_error(api.viewer.get(f"{V1}/datasets/999999/thumbnail"), 404, "no folder 999999")


def test_a_thumbnail_needs_a_token(api: Deployment) -> None:
    assert_error(api.anon.get(thumb_url(api, SLIDE)), 401)


def rows(dep: Deployment, path: str) -> dict[str, Any]:
    url = f"{V1}/folders/{dep.folder_id(path)}/children"
    response = dep.viewer.get(url, params={"limit": 500})
    assert response.status_code == 200, response.text
    return {f["path"]: f for f in response.json()["folders"]}


def test_listing_rows_carry_the_thumbnail_url(any_api: Deployment) -> None:
    videos = rows(any_api, "/sample/videos")
    top = rows(any_api, "/sample")
    large = rows(any_api, "/sample/large")

    assert videos[H264]["thumbnail"].startswith(thumb_url(any_api, H264) + "?v=")
    assert videos["/sample/videos/interview"]["thumbnail"] is None  # a plain folder
    assert top[FRAMES]["thumbnail"].startswith(thumb_url(any_api, FRAMES) + "?v=")
    assert top[BAD]["thumbnail"] is None  # its job failed: nothing to show
    assert large[SLIDE]["thumbnail"].startswith(thumb_url(any_api, SLIDE) + "?v=")
    # Every URL a listing hands out answers with an image.
    for url in (videos[H264]["thumbnail"], top[FRAMES]["thumbnail"]):
        assert any_api.viewer.get(url).headers["content-type"] == "image/jpeg"


def test_a_remade_thumbnail_gets_a_new_etag_and_a_lost_one_is_a_404(
    api: Deployment, tmp_path: Path
) -> None:
    """On a copy of the deployment: the file written again (as a reprocess does) answers
    200 to the old ETag; the file gone from the output store is a one-line 404."""
    slide = api.folder_id(SLIDE)
    key = catalog_folders(api.catalog)[SLIDE].meta["outputs"]["thumbnail"]
    with serve_copy(api, tmp_path) as (url, home):
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api.viewer_token}"})
        with client:
            first = client.get(f"{V1}/datasets/{slide}/thumbnail")
            etag = first.headers["etag"]
            path = home / "outputs" / key
            pyvips.Image.new_from_buffer(first.content, "").flip("horizontal").jpegsave(str(path))
            again = client.get(f"{V1}/datasets/{slide}/thumbnail", headers={"If-None-Match": etag})
            assert again.status_code == 200 and again.headers["etag"] != etag
            assert again.content == path.read_bytes()

            path.unlink()
            lost = client.get(f"{V1}/datasets/{slide}/thumbnail")
            message = assert_error(lost, 404, f"thumbnail of dataset {slide} is missing")
            assert str(home) not in message  # no server path in the answer


def test_a_thumbnail_in_an_s3_output_store(tmp_path: Path, s3_server: Any, bucket: Any) -> None:
    """A source whose outputs go to a bucket: the job uploads the thumbnail there and the
    endpoint reads it back through the S3 API (one HEAD for a 304)."""
    media = tmp_path / "media" / "scans"
    media.mkdir(parents=True)
    noise = pyvips.Image.gaussnoise(900, 600, mean=128, sigma=50)
    noise.bandjoin([noise, noise]).cast("uchar").tiffsave(str(media / "scan.tif"))
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    cli = Cli(home=tmp_path / "home", database_url=url, env=dict(BASE_ENV))
    cli.run(
        "source",
        "add",
        "s",
        (tmp_path / "media").as_uri(),
        "--output",
        bucket.url("images"),
        "--output-endpoint-url",
        s3_server.endpoint,
    )
    cli.run("sync", "s")
    cli.run("postprocess", "/s", "--recursive")
    cli.run("worker", "--burst", timeout=120)
    token = cli.run("token", "create", "--role", "viewer").stdout.strip()
    catalog = Catalog(url)
    try:
        row = catalog_folders(catalog)["/s/scans/Large image scan.tif"]
        key = row.meta["outputs"]["thumbnail"]
        stored = bucket.client.get_object(Bucket=bucket.name, Key=f"images/{key}")["Body"].read()
        env = cli.environ()
        app = create_app(Services(catalog, load_settings(env=env), env), worker=False)
        with InProcessServer(app).running() as server:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers) as client:
                first = client.get(f"{V1}/datasets/{row.id}/thumbnail")
                assert first.status_code == 200, first.text
                assert first.content == stored
                assert decoded(first.content).width == 320
                etag = first.headers["etag"]
                again = client.get(
                    f"{V1}/datasets/{row.id}/thumbnail", headers={"If-None-Match": etag}
                )
                assert (again.status_code, again.headers["etag"]) == (304, etag)
    finally:
        catalog.close()
