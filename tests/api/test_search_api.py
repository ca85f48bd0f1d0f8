"""``GET /api/v1/search`` on the sample deployment (SQLite and PostgreSQL): rows, ranking,
filters, pages, one-line 400s, access; ``mediamirror find --json`` gives the same hits; a
dataset created by a bucket event is found at once (the database keeps the index)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.support import Service, outcomes, s3_event, s3_record, start_service
from helpers import S3Bucket

from .support import Deployment, assert_error

pytestmark = pytest.mark.timeout(120)
V1 = "/api/v1"
H264 = "/sample/videos/Video clip-h264.mp4"
SLIDE = "/sample/large/Large image slide.tif"
BAD = "/sample/Video bad.mp4"


def search(dep: Deployment, **params: Any) -> dict[str, Any]:
    response = dep.viewer.get(f"{V1}/search", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def hit_paths(body: dict[str, Any]) -> list[str]:
    return [row["path"] for row in body["results"]]


def test_rows_carry_what_the_ui_shows(any_api: Deployment) -> None:
    body = search(any_api, q="h264")

    assert (body["query"], body["offset"], body["limit"]) == ("h264", 0, 50)
    assert body["total"] == 1 and hit_paths(body) == [H264]
    row = body["results"][0]
    fid = any_api.folder_id(H264)
    assert row == {
        "id": fid,
        "kind": "dataset",
        "name": "Video clip-h264.mp4",
        "path": H264,
        "type": "video",
        "status": "ready",
        "state": "present",
        "source": "sample",
        "updated_at": row["updated_at"],
        "thumbnail": row["thumbnail"],
        "link": f"/ui/datasets/{fid}",
    }
    assert row["thumbnail"] is None or row["thumbnail"].startswith("/")
    folder = search(any_api, q="videos")["results"][0]
    assert (folder["path"], folder["kind"], folder["type"]) == ("/sample/videos", "folder", None)
    assert folder["link"] == f"/ui/browse/{folder['id']}" and folder["thumbnail"] is None


def test_substring_of_name_or_path_ranked(any_api: Deployment) -> None:
    assert hit_paths(search(any_api, q="LIP-H2")) == [H264]
    # "clip" is in every video's name: the shortest paths first, then by path.
    clips = hit_paths(search(any_api, q="clip"))
    assert clips[0].startswith("/sample/videos/Video clip-") and len(clips) >= 4
    assert [len(p) for p in clips] == sorted(len(p) for p in clips)
    # A path-only hit (the mount) ranks after name hits; two letters: names' starts.
    assert hit_paths(search(any_api, q="sample"))[0] == "/sample"
    # Other test modules add sources (e.g. /lab) to this deployment: only the sample's.
    assert hit_paths(search(any_api, q="la", source="sample")) == ["/sample/large", SLIDE]


def test_filters_narrow(any_api: Deployment) -> None:
    assert hit_paths(search(any_api, type="large-image")) == [SLIDE]
    assert BAD in hit_paths(search(any_api, status="error"))
    assert all(r["status"] == "error" for r in search(any_api, status="error")["results"])
    assert hit_paths(search(any_api, q="bad", processor_state="video:error")) == [BAD]
    assert hit_paths(search(any_api, q="bad", processor_state="pyramid:error")) == []
    videos = hit_paths(search(any_api, type="video", limit=500))
    assert videos and hit_paths(search(any_api, meta="type:video", limit=500)) == videos
    assert hit_paths(search(any_api, q="h264", source="sample", status="ready")) == [H264]
    response = any_api.viewer.get(
        f"{V1}/search", params=[("meta", "type:video"), ("meta", "fps:-1")]
    )
    assert response.status_code == 200 and response.json()["total"] <= len(videos)


def test_pages(any_api: Deployment) -> None:
    everything = search(any_api, q="sample", limit=500)
    pages = [
        search(any_api, q="sample", limit=3, offset=o) for o in range(0, everything["total"], 3)
    ]
    assert [p for page in pages for p in hit_paths(page)] == hit_paths(everything)
    assert {page["total"] for page in pages} == {everything["total"]}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"type": "movie"}, "bad type 'movie'"),
        ({"status": "finished"}, "bad status"),
        ({"processor_state": "done"}, "bad processor_state"),
        ({"meta": "fps"}, "bad meta filter 'fps'"),
        ({"source": "elsewhere"}, "bad source 'elsewhere'"),
        ({"limit": "0"}, "limit"),
        ({"q": "x" * 201}, "q"),
    ],
)
def test_bad_filters_are_a_one_line_400(
    api: Deployment, params: dict[str, str], fragment: str
) -> None:
    assert_error(api.viewer.get(f"{V1}/search", params=params), 400, fragment)


def test_viewers_only(api: Deployment) -> None:
    assert api.anon.get(f"{V1}/search", params={"q": "clip"}).status_code == 401
    assert api.client(api.revoked_token).get(f"{V1}/search").status_code == 401


def test_cli_find_gives_the_api_hits(any_api: Deployment) -> None:
    for args, params in [
        (["clip"], {"q": "clip"}),
        (["", "--type", "video", "--status", "ready"], {"type": "video", "status": "ready"}),
        (["sample", "--limit", "3", "--offset", "2"], {"q": "sample", "limit": 3, "offset": 2}),
    ]:
        cli = any_api.cli.run("find", *args, "--json")
        assert json.loads(cli.stdout) == search(any_api, **params)["results"]
    text = any_api.cli.run("find", "h264").stdout.splitlines()
    assert text == [f"{H264}  [video] ready"]
    bad = any_api.cli.run("find", "x", "--status", "nope", ok=False)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: bad status 'nope'")


@pytest.fixture
def service(catalog_url: str, tmp_path: Path) -> Iterator[Service]:
    svc = start_service(tmp_path / "svc", catalog_url, sns_url_pattern=r"^$")
    yield svc
    svc.stop()


@pytest.mark.postgres
def test_an_event_created_dataset_is_found(service: Service, bucket: S3Bucket) -> None:
    service.add_bucket_source("pushed", bucket)
    token = service.push_token("pushed")
    viewer = service.viewer_token()
    assert service.get("search", viewer, q="mooring").json()["total"] == 0

    bucket.put("deploy/mooring-7/cam.mp4", b"not really a video")
    delivery = s3_event(s3_record(bucket.name, "deploy/mooring-7/cam.mp4"))
    assert outcomes(service.post("s3", delivery, token=token)) == ["applied"]

    body = service.get("search", viewer, q="mooring-7 cam").json()
    assert [(r["path"], r["kind"], r["source"]) for r in body["results"]] == [
        ("/pushed/deploy/mooring-7/Video cam.mp4", "dataset", "pushed")
    ]
