"""Browsing the sample tree: folders (paginated, sorted), items, breadcrumbs, datasets with
their metadata, media URLs and job history, and the media itself (range requests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pyvips

from .support import Deployment, assert_error

pytestmark = pytest.mark.timeout(120)
V1 = "/api/v1"
VIDEOS = "/sample/videos"
MPEG4 = f"{VIDEOS}/Video clip-mpeg4.avi"
H264 = f"{VIDEOS}/Video clip-h264.mp4"
MJPEG = f"{VIDEOS}/interview/Video clip-mjpeg.mov"
SLIDE = "/sample/large/Large image slide.tif"


def children(dep: Deployment, path: str, **params: Any) -> dict[str, Any]:
    response = dep.viewer.get(f"{V1}/folders/{dep.folder_id(path)}/children", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def names(page: dict[str, Any]) -> list[str]:
    return [f["name"] for f in page["folders"]]


def test_root_lists_the_source_mounts(api: Deployment) -> None:
    body = api.viewer.get(f"{V1}/folders").json()

    sample = next(f for f in body["folders"] if f["path"] == "/sample")
    assert (sample["parent_id"], sample["type"], sample["status"]) == (None, None, None)
    assert all(f["parent_id"] is None for f in body["folders"])
    assert body["total"] >= 1 and (body["offset"], body["limit"]) == (0, 50)
    assert names(body) == sorted(names(body))


def test_children_come_in_pages_with_totals(api: Deployment) -> None:
    everything = children(api, VIDEOS, limit=500)
    expected = ["Video clip-h264.mp4", "Video clip-mpeg4.avi", "Video clip-vp9.webm", "interview"]
    assert names(everything) == expected
    assert everything["total"] == 4

    pages = [children(api, VIDEOS, offset=offset, limit=3) for offset in (0, 3, 6)]

    assert [p["total"] for p in pages] == [4, 4, 4]
    assert [(p["offset"], p["limit"]) for p in pages] == [(0, 3), (3, 3), (6, 3)]
    assert [len(p["folders"]) for p in pages] == [3, 1, 0]
    assert [name for p in pages for name in names(p)] == expected
    datasets = {f["name"]: f for f in everything["folders"]}
    assert datasets["Video clip-mpeg4.avi"]["type"] == "video"
    assert datasets["Video clip-mpeg4.avi"]["status"] == "ready"
    assert datasets["interview"]["type"] is None


def test_children_sort_by_name_and_update_time(api: Deployment) -> None:
    by_name = names(children(api, "/sample", sort="name"))
    assert by_name == sorted(by_name) and "Video bad.mp4" in by_name and len(by_name) == 4
    assert names(children(api, "/sample", sort="-name")) == by_name[::-1]
    for sort, reverse in (("updated", False), ("-updated", True)):
        stamps = [f["updated_at"] for f in children(api, "/sample", sort=sort)["folders"]]
        assert stamps == sorted(stamps, reverse=reverse), (sort, stamps)
    assert_error(
        api.viewer.get(f"{V1}/folders/{api.folder_id('/sample')}/children?sort=size"), 400, "sort"
    )


def test_items_of_a_folder_come_in_pages(api: Deployment) -> None:
    frames = api.folder_id("/sample/frames")
    url = f"{V1}/folders/{frames}/items"

    first = api.viewer.get(url, params={"limit": 4}).json()
    last = api.viewer.get(url, params={"limit": 4, "offset": 8}).json()

    assert (first["total"], first["offset"], first["limit"]) == (10, 0, 4)
    assert [i["name"] for i in first["items"]] == [f"frame_{n:04d}.png" for n in range(1, 5)]
    assert [i["name"] for i in last["items"]] == ["frame_0009.png", "frame_0010.png"]
    item = first["items"][0]
    assert item["key"] == "frames/frame_0001.png" and item["folder_id"] == frames
    assert item["state"] == "present" and item["size"] > 0
    assert item["content_url"] == f"{V1}/items/{item['id']}/content"
    assert api.viewer.get(f"{V1}/items/{item['id']}").json()["source"] == "sample"
    assert_error(api.viewer.get(f"{V1}/items/987654"), 404)
    assert_error(api.viewer.get(f"{V1}/folders/987654/items"), 404)


def test_a_folder_has_breadcrumbs_and_counts(api: Deployment) -> None:
    body = api.viewer.get(f"{V1}/folders/{api.folder_id(MJPEG)}").json()

    trail = ["/sample", VIDEOS, f"{VIDEOS}/interview", MJPEG]
    assert [b["path"] for b in body["breadcrumbs"]] == trail
    assert [b["id"] for b in body["breadcrumbs"]] == [api.folder_id(p) for p in trail]
    assert [b["name"] for b in body["breadcrumbs"]][-1] == "Video clip-mjpeg.mov"
    assert body["counts"] == {"folders": 0, "items": 1}
    assert api.viewer.get(f"{V1}/folders/{api.folder_id(VIDEOS)}").json()["counts"] == {
        "folders": 4,
        "items": 0,
    }
    assert_error(api.viewer.get(f"{V1}/folders/987654"), 404, "987654")


def test_a_dataset_has_meta_media_urls_and_job_history(api: Deployment) -> None:
    fid = api.folder_id(MPEG4)

    body = api.viewer.get(f"{V1}/datasets/{fid}").json()

    meta = body["meta"]
    assert (body["type"], body["status"], body["path"]) == ("video", "ready", MPEG4)
    assert (meta["fps"], meta["originalFps"], meta["codec"]) == (25.0, 25.0, "mpeg4")
    assert meta["annotate"] is True and meta["MarkForPostProcess"] is False
    assert meta["import_path"] == "videos"
    assert meta["import_source"].endswith("/videos/clip-mpeg4.avi")
    base = f"{V1}/datasets/{fid}"
    assert body["media"] == {"video": f"{base}/video", "poster": f"{base}/poster"}
    assert [i["name"] for i in body["items"]] == ["clip-mpeg4.avi"]
    assert [(j["processor"], j["state"], j["progress"]) for j in body["jobs"]] == [
        ("video", "success", 100.0)
    ]
    assert [b["path"] for b in body["breadcrumbs"]] == ["/sample", VIDEOS, MPEG4]

    slide = api.viewer.get(f"{V1}/datasets/{api.folder_id(SLIDE)}").json()
    assert slide["type"] == "large-image"
    assert slide["media"] == {"iiif": f"/iiif/3/{api.folder_id(SLIDE)}/info.json"}
    frames = api.viewer.get(f"{V1}/datasets/{api.folder_id('/sample/frames')}").json()
    assert frames["type"] == "image-sequence"
    assert frames["media"]["frames"].endswith("/frames")
    bad = api.viewer.get(f"{V1}/datasets/{api.folder_id('/sample/Video bad.mp4')}").json()
    assert bad["status"] == "error" and "video" not in bad["media"]
    assert [j["processor"] for j in bad["jobs"]] == ["video"]


def test_a_plain_folder_is_not_a_dataset(api: Deployment) -> None:
    assert_error(api.viewer.get(f"{V1}/datasets/{api.folder_id(VIDEOS)}"), 404, "not a dataset")
    assert_error(api.viewer.get(f"{V1}/datasets/987654"), 404, "987654")


@pytest.mark.parametrize("path", [MPEG4, H264])
def test_video_supports_range_requests(api: Deployment, path: str) -> None:
    """The transcode (mpeg4) or, for a web-ready original (h264), the source file."""
    fid = api.folder_id(path)
    meta = api.viewer.get(f"{V1}/datasets/{fid}").json()["meta"]
    rel = (meta.get("outputs") or {}).get("video")
    if path == MPEG4:
        assert rel, meta
        expected = (api.home / "outputs" / rel).read_bytes()
    else:
        assert rel is None, meta
        expected = (api.media / meta["media"]["item"]).read_bytes()
    size = len(expected)
    url = f"{V1}/datasets/{fid}/video"

    full = api.viewer.get(url)
    assert full.status_code == 200
    assert full.content == expected
    assert full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"

    for header, start, end in (
        ("bytes=100-1123", 100, 1123),
        ("bytes=0-0", 0, 0),
        (f"bytes={size - 10}-", size - 10, size - 1),
        ("bytes=-16", size - 16, size - 1),
        (f"bytes=5-{size * 2}", 5, size - 1),
    ):
        part = api.viewer.get(url, headers={"Range": header})
        assert part.status_code == 206, (header, part.text)
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}", header
        assert part.content == expected[start : end + 1], header
        assert int(part.headers["content-length"]) == end - start + 1

    beyond = api.viewer.get(url, headers={"Range": f"bytes={size}-"})
    assert_error(beyond, 416, "range")
    assert beyond.headers["content-range"] == f"bytes */{size}"
    for header in ("bytes=abc", "bytes=10-5", "lines=1-2", "bytes="):
        assert_error(api.viewer.get(url, headers={"Range": header}), 400, "Range")


def test_poster_is_a_jpeg_of_the_video(api: Deployment) -> None:
    response = api.viewer.get(f"{V1}/datasets/{api.folder_id(MPEG4)}/poster")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    image = pyvips.Image.new_from_buffer(response.content, "")
    assert (image.width, image.height) == (320, 240)
    assert_error(api.viewer.get(f"{V1}/datasets/{api.folder_id(SLIDE)}/poster"), 404, "poster")
    assert_error(api.viewer.get(f"{V1}/datasets/{api.folder_id(SLIDE)}/video"), 404, "video")


def test_item_content_is_the_objects_bytes(api: Deployment) -> None:
    frames = api.viewer.get(f"{V1}/folders/{api.folder_id('/sample/frames')}/items").json()
    item = frames["items"][2]

    response = api.viewer.get(item["content_url"])

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == (api.media / item["key"]).read_bytes()
    ranged = api.viewer.get(item["content_url"], headers={"Range": "bytes=0-7"})
    assert ranged.status_code == 206 and ranged.content == b"\x89PNG\r\n\x1a\n"
    assert_error(api.viewer.get(f"{V1}/items/987654/content"), 404)


def test_frames_of_an_image_sequence_in_order(api: Deployment) -> None:
    body = api.viewer.get(f"{V1}/datasets/{api.folder_id('/sample/frames')}/frames").json()

    assert [f["name"] for f in body["frames"]] == [f"frame_{n:04d}.png" for n in range(1, 11)]
    assert body["fps"] is not None
    first = api.viewer.get(body["frames"][0]["url"])
    assert first.status_code == 200
    assert first.content == Path(api.media / "frames" / "frame_0001.png").read_bytes()


def test_reversed_sorts_are_exact_reverses_and_pages_agree(api: Deployment) -> None:
    """Ties are broken by id in the sort's direction: ``-updated`` is ``updated`` read
    backwards, and every page of one order is a slice of the whole (ids first, then rows)."""
    for sort in ("name", "updated"):
        forward = [f["id"] for f in children(api, "/sample", sort=sort)["folders"]]
        backward = [f["id"] for f in children(api, "/sample", sort=f"-{sort}")["folders"]]
        assert backward == forward[::-1], sort
        paged = [
            f["id"]
            for offset in range(0, len(forward) + 1, 3)
            for f in children(api, "/sample", sort=sort, offset=offset, limit=3)["folders"]
        ]
        assert paged == forward, sort
