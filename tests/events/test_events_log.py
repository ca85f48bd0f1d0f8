"""Every received event is kept and viewable: ``GET /api/v1/events`` and ``mediamirror
events list``; push tokens are made by ``mediamirror source push-token``."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from helpers import Cli, S3Bucket, assert_one_error_line
from mediamirror.events.routing import OPTION, digest
from mediamirror.web.models import REFUSALS

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
    assert body["total"] == 3
    assert [e["outcome"] for e in body["events"]] == ["test", "duplicate", "applied"]
    oldest = body["events"][-1]
    assert (oldest["source"], oldest["channel"], oldest["key"]) == ("src", "s3", "v/one.mp4")
    assert oldest["event_type"] == "ObjectCreated:Put"
    assert oldest["bucket"] == s3_bucket.name
    assert oldest["sequencer"]
    # The two refused deliveries are counted beside the events, per source and reason.
    refused = svc.get("events/refusals", viewer).json()
    assert refused["total"] == 2
    by_reason = {(r["source"], r["reason"]): r for r in refused["refusals"]}
    assert set(by_reason) == {("src", "malformed body"), (None, "no valid push token")}
    assert by_reason[(None, "no valid push token")]["detail"].startswith("a push token is requ")
    assert by_reason[("src", "malformed body")]["count"] == 1

    by_source = svc.get("events", viewer, source="src").json()
    assert by_source["total"] == 3
    assert svc.get("events/refusals", viewer, source="src").json()["total"] == 1
    page = svc.get("events", viewer, limit=2, offset=1).json()
    assert [e["outcome"] for e in page["events"]] == ["duplicate", "applied"]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)

    assert svc.get("events", "mm_wrong").status_code == 401
    assert svc.client.get(f"{svc.base}/api/v1/events").status_code == 401
    assert svc.get("events", viewer, source="nope").status_code == 404
    assert svc.get("events", viewer, outcome="weird").status_code == 400
    assert svc.get("events", viewer, limit=0).status_code == 400

    assert svc.get("events", viewer, offset="99999999999999999999").status_code == 400
    assert svc.get("events/refusals", "mm_wrong").status_code == 401

    cli = cli_for(svc)
    lines = cli.run("events", "list").stdout.splitlines()
    assert len(lines) == 3 + 1 + 2
    assert "applied" in lines[2] and "v/one.mp4" in lines[2] and "src" in lines[2]
    assert lines[3].startswith("refused pushes")
    assert any("1x no valid push token" in line for line in lines[4:]), lines
    listed = cli.run("events", "list", "--outcome", "duplicate", "--json").json()
    assert listed["total"] == 1
    assert listed["events"][0]["key"] == "v/one.mp4"
    assert sum(r["count"] for r in listed["refusals"]) == 2


@pytest.mark.postgres
def test_a_thousand_refused_pushes_add_a_bounded_number_of_rows(
    service: Service, s3_bucket: S3Bucket
) -> None:
    """Whoever can reach the push endpoints, token or not, cannot grow the catalog: each
    refusal only counts on a row per (source, channel, reason) (on both catalogs: the
    count relies on a unique index over an expression)."""
    svc = service
    svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")
    bodies = [
        ("s3", None, b"{}"),  # no token
        ("minio", "mmp_" + "x" * 43, b"{}"),  # a wrong token
        ("gcs", "mmp_wrong", b"\x00\xff"),
        ("sns", token, b"not json"),  # the source's token, a malformed body
        ("s3", token, b"[" * 2000),
    ]

    def send(client: httpx.Client, i: int) -> int:
        channel, push_token, content = bodies[i % len(bodies)]
        params = {"token": push_token} if push_token else None
        return client.post(
            f"{svc.base}/api/v1/bucket_notifications/{channel}",
            content=content + str(i).encode(),
            params=params,
        ).status_code

    # Four senders at once: concurrent first refusals of one kind must still share a row.
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda i: send(client, i), range(1000)))
    assert set(statuses) <= {400, 401}, Counter(statuses)

    assert svc.events() == []
    with svc.catalog.read() as conn:
        rows = conn.execute(select(REFUSALS)).all()
    assert len(rows) <= 5, rows
    assert sum(r.count for r in rows) == 1000
    by_key = {(r.source_id is not None, r.channel, r.reason): r.count for r in rows}
    assert by_key[(False, "s3", "no valid push token")] == 200
    assert by_key[(True, "sns", "malformed body")] == 200
    assert by_key[(True, "s3", "malformed body")] == 200
    assert all(len(r.detail or "") <= 300 for r in rows)
