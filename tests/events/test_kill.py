"""Recorded is durable: a real ``mediamirror serve`` killed with SIGKILL after it answered
pushes and before it applied them loses none; the restarted service applies them all.

The applier is held back with ``events_apply_delay_seconds`` (events are applied no
sooner than that after they were received), so the kill lands between record and
apply for every event; the restarted service has no delay.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from helpers import Cli, S3Bucket, free_port, wait_for
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.jobs.model import JOBS
from mediamirror.web.models import EVENTS

from .support import listed, next_sequencer, s3_event, s3_record

pytestmark = pytest.mark.timeout(180)

N = 40


def serve(cli: Cli, port: int, **env: str) -> subprocess.Popen[str]:
    proc = cli.popen("serve", "--port", str(port), "--no-worker", env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"serve did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)


def outcomes(catalog: Catalog) -> list[str]:
    with catalog.read() as conn:
        return list(conn.execute(select(EVENTS.c.outcome).order_by(EVENTS.c.id)).scalars())


def test_serve_killed_between_record_and_apply_loses_no_event(
    tmp_path: Path, sqlite_url: str, s3_bucket: S3Bucket
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home=home, database_url=sqlite_url, env={"MEDIAMIRROR_AUTO_POSTPROCESS": "true"})
    keys = [f"cam/clip-{i:03d}.mp4" for i in range(N)]
    s3_bucket.put_many(keys, b"a clip")
    cli.run("source", "add", "src", s3_bucket.url(), *s3_bucket.cli_options)
    url = cli.run("source", "push-token", "src").stdout.strip()
    token = url.split("token=", 1)[1]
    info = listed(s3_bucket, keys[0])
    bodies = [
        s3_event(
            s3_record(
                s3_bucket.name,
                key,
                size=info["size"],
                etag=info["etag"],
                sequencer=next_sequencer(),
            )
        )
        for key in keys
    ]
    port = free_port()
    first = serve(cli, port, MEDIAMIRROR_EVENTS_APPLY_DELAY_SECONDS="3600")
    catalog = Catalog(sqlite_url)
    try:
        with httpx.Client(timeout=30) as client:
            for body in bodies:
                resp = client.post(
                    f"http://127.0.0.1:{port}/api/v1/bucket_notifications/s3",
                    params={"token": token},
                    json=body,
                )
                assert resp.status_code == 200, resp.text
                assert [r["outcome"] for r in resp.json()["results"]] == ["recorded"]
        assert outcomes(catalog) == ["pending"] * N

        first.send_signal(signal.SIGKILL)
        first.wait(30)
        assert outcomes(catalog) == ["pending"] * N  # answered, not applied: all recorded

        second = serve(cli, free_port())
        try:
            wait_for(lambda: outcomes(catalog) == ["applied"] * N, "every event applied")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)

        with catalog.read() as conn:
            items = conn.execute(select(ITEMS.c.key, ITEMS.c.state)).all()
            datasets = conn.execute(
                select(FOLDERS.c.id).where(FOLDERS.c.path.like("/src/cam/Video %"))
            ).all()
            jobs = conn.execute(select(JOBS.c.target_id, JOBS.c.state)).all()
        assert sorted(items) == [(k, "present") for k in keys]
        assert len(datasets) == N
        assert sorted(j.target_id for j in jobs) == sorted(d.id for d in datasets)
        assert {j.state for j in jobs} == {"queued"}
    finally:
        if first.poll() is None:
            first.kill()
        catalog.close()
