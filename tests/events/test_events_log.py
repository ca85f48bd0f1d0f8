"""Every received event is kept and viewable: ``GET /api/v1/events`` and ``mediamirror
events list``; push tokens are made by ``mediamirror source push-token``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from helpers import Cli, S3Bucket, assert_one_error_line
from mediamirror.events.routing import OPTION, digest

from .support import Service, next_sequencer, s3_event, s3_record, s3_test_event

pytestmark = pytest.mark.timeout(120)


def cli_for(service: Service, **env: str) -> Cli:
    return Cli(home=service.home, database_url=service.database_url, env={**service.env, **env})


def test_push_token_command_prints_the_endpoint_once(
    sqlite_service: Service, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    svc = sqlite_service
    source = svc.add_bucket_source("src", s3_bucket)
    cli = cli_for(svc, MEDIAMIRROR_PUBLIC_URL=svc.base + "/")

    url = cli.run("source", "push-token", "src").stdout.strip()

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == svc.base
    assert parts.path == "/api/v1/bucket_notifications/s3"
    token = parse_qs(parts.query)["token"][0]
    assert token.startswith("mmp_") and len(token) > 40
    with svc.catalog.session(write=False) as session:
        from mediamirror.catalog.models import Source

        stored = session.get(Source, source.id)
        assert stored is not None
        assert stored.options[OPTION] == digest(token)
        assert token not in str(stored.options)
    s3_bucket.put("a.mp4")
    resp = httpx.post(url, json=s3_event(s3_record(s3_bucket.name, "a.mp4", sequencer="01")))
    assert resp.status_code == 200, resp.text

    other = cli.run("source", "push-token", "src", "--base-url", "https://mm.example.org").stdout
    assert other.startswith("https://mm.example.org/api/v1/bucket_notifications/s3?token=mmp_")
    assert httpx.post(url, json=s3_test_event(s3_bucket.name)).status_code == 401

    gcs = svc.add_source("g", f"gs://{s3_bucket.name}/", endpoint_url=s3_bucket.server.endpoint)
    assert gcs.preset == "gcs"
    assert "/api/v1/bucket_notifications/gcs?token=" in cli.run("source", "push-token", "g").stdout
    local = tmp_path / "dir"
    local.mkdir()
    svc.add_source("disk", f"file://{local}")
    assert_one_error_line(cli.run("source", "push-token", "disk", ok=False), "local directory")
    assert_one_error_line(cli.run("source", "push-token", "nope", ok=False), "no source named")


def test_events_are_listed_by_api_and_cli(sqlite_service: Service, s3_bucket: S3Bucket) -> None:
    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")
    viewer = svc.viewer_token()
    s3_bucket.put("v/one.mp4")
    create = s3_event(s3_record(s3_bucket.name, "v/one.mp4", sequencer=next_sequencer()))
    svc.post("s3", create, token=token)
    svc.post("s3", create, token=token)
    svc.post("s3", s3_test_event(s3_bucket.name), token=token)
    svc.post("s3", content=b"nope", token=token)
    svc.post("s3", create)  # no token

    resp = svc.get("events", viewer)
    assert resp.status_code == 200
    body = resp.json()
    assert body["total"] == 5
    assert [e["outcome"] for e in body["events"]] == [
        "rejected",
        "rejected",
        "test",
        "duplicate",
        "applied",
    ]
    newest, oldest = body["events"][0], body["events"][-1]
    assert newest["source"] is None and newest["detail"].startswith("a push token is required")
    assert (oldest["source"], oldest["channel"], oldest["key"]) == ("src", "s3", "v/one.mp4")
    assert oldest["event_type"] == "ObjectCreated:Put"
    assert oldest["bucket"] == s3_bucket.name
    assert oldest["sequencer"]

    by_source = svc.get("events", viewer, source="src").json()
    assert by_source["total"] == 4
    rejected = svc.get("events", viewer, outcome="rejected").json()
    assert [e["outcome"] for e in rejected["events"]] == ["rejected", "rejected"]
    page = svc.get("events", viewer, limit=2, offset=2).json()
    assert [e["outcome"] for e in page["events"]] == ["test", "duplicate"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)

    assert svc.get("events", "mm_wrong").status_code == 401
    assert svc.client.get(f"{svc.base}/api/v1/events").status_code == 401
    assert svc.get("events", viewer, source="nope").status_code == 404
    assert svc.get("events", viewer, outcome="weird").status_code == 400
    assert svc.get("events", viewer, limit=0).status_code == 400

    cli = cli_for(svc)
    lines = cli.run("events", "list").stdout.splitlines()
    assert len(lines) == 5
    assert "applied" in lines[-1] and "v/one.mp4" in lines[-1] and "src" in lines[-1]
    listed = cli.run("events", "list", "--outcome", "duplicate", "--json").json()
    assert listed["total"] == 1
    assert listed["events"][0]["key"] == "v/one.mp4"
