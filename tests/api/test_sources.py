"""Sources through the API: create (a local directory, a bucket on the S3 API server), list,
show, sync in the background with its run figures, remove, and every refusal."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select

from helpers import S3Bucket, S3Server
from mediamirror.catalog.models import LEASES, SOURCES, utcnow

from .support import (
    ACCESS_KEY,
    ACCESS_KEY_ENV,
    SECRET_KEY,
    SECRET_KEY_ENV,
    Deployment,
    assert_error,
    finished_run,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)
SOURCES_URL = "/api/v1/sources"


def local_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_a_local_source_from_create_to_remove(api: Deployment, tmp_path: Path) -> None:
    files = {"notes/a.txt": b"alpha", "notes/b.txt": b"beta", "notes/c.tmp": b"scratch"}
    media = local_tree(tmp_path / "local", files)
    body = {"name": "local-1", "url": f"file://{media}", "mount": "/mirrors/local-1"}

    created = api.admin.post(SOURCES_URL, json={**body, "exclude": r"\.tmp$"})

    assert created.status_code == 201, created.text
    src = created.json()
    assert src["name"] == "local-1"
    assert src["url"].rstrip("/") == f"file://{media}"
    assert (src["mount"], src["exclude"], src["credentials"]) == ("/mirrors/local-1", r"\.tmp$", {})
    assert (src["syncing"], src["last_run"]) == (False, None)
    listed = {s["name"]: s for s in api.viewer.get(SOURCES_URL).json()}
    assert {"sample", "local-1"} <= set(listed)
    assert listed["local-1"]["url"] == src["url"]
    shown = api.viewer.get(f"{SOURCES_URL}/local-1").json()
    assert {k: shown[k] for k in ("id", "url", "mount", "exclude", "created_at")} == {
        k: src[k] for k in ("id", "url", "mount", "exclude", "created_at")
    }

    started = api.admin.post(f"{SOURCES_URL}/local-1/sync")

    assert started.status_code == 202, started.text
    assert started.json() == {"status": "started", "source": "local-1"}
    run = finished_run(api, "local-1")
    assert run["state"] == "success", run
    assert (run["listed"], run["added"], run["changed"], run["deleted"]) == (3, 2, 0, 0)
    assert run["error"] is None and run["seconds"] >= 0
    assert api.viewer.get(f"{SOURCES_URL}/local-1").json()["last_run"]["id"] == run["id"]
    mount_id = api.folder_id("/mirrors/local-1")
    notes = api.viewer.get(f"/api/v1/folders/{mount_id}/children").json()["folders"]
    items = api.viewer.get(f"/api/v1/folders/{notes[0]['id']}/items").json()
    assert sorted(i["name"] for i in items["items"]) == ["a.txt", "b.txt"]

    removed = api.admin.delete(f"{SOURCES_URL}/local-1")

    assert removed.status_code == 200
    assert removed.json() == {"status": "removed", "name": "local-1"}
    for method, url in (
        ("GET", f"{SOURCES_URL}/local-1"),
        ("GET", f"{SOURCES_URL}/local-1/runs"),
        ("POST", f"{SOURCES_URL}/local-1/sync"),
        ("DELETE", f"{SOURCES_URL}/local-1"),
    ):
        assert_error(api.admin.request(method, url), 404, "local-1")
    assert_error(api.viewer.get(f"/api/v1/folders/{mount_id}"), 404)
    # Sources are read-only: removing one never touches the store.
    assert {p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file()} == set(files)


def test_an_s3_source_keeps_only_credential_names(
    api: Deployment, s3_server: S3Server, s3_client: Any
) -> None:
    bucket = S3Bucket(s3_server, s3_client)
    objects = {"clips/a.bin": b"A" * 1000, "clips/b.bin": b"B" * 10, "elsewhere.txt": b"no"}
    for key, data in objects.items():
        bucket.put(key, data)
    body = {
        "name": "s3-src",
        "url": bucket.url("clips"),
        "endpoint_url": s3_server.endpoint,
        "preset": "minio",
        "region": "us-east-1",
        "access_key_env": ACCESS_KEY_ENV,
        "secret_key_env": SECRET_KEY_ENV,
    }

    created = api.admin.post(SOURCES_URL, json=body)

    assert created.status_code == 201, created.text
    expected = {"access_key_env": ACCESS_KEY_ENV, "secret_key_env": SECRET_KEY_ENV}
    assert created.json()["credentials"] == expected
    assert created.json()["endpoint_url"] == s3_server.endpoint
    assert created.json()["preset"] == "minio"
    shown = api.viewer.get(f"{SOURCES_URL}/s3-src")
    assert shown.json()["credentials"] == expected
    for response in (created, shown, api.viewer.get(SOURCES_URL)):
        assert ACCESS_KEY not in response.text and SECRET_KEY not in response.text
    with api.catalog.read() as conn:
        row = conn.execute(select(SOURCES).where(SOURCES.c.name == "s3-src")).one()
    assert ACCESS_KEY not in repr(tuple(row)) and SECRET_KEY not in repr(tuple(row))

    assert api.admin.post(f"{SOURCES_URL}/s3-src/sync").status_code == 202
    run = finished_run(api, "s3-src")

    assert (run["state"], run["listed"], run["added"]) == ("success", 2, 2), run
    mount = api.viewer.get(f"/api/v1/folders/{api.folder_id('/s3-src')}/items").json()
    assert sorted(i["name"] for i in mount["items"]) == ["a.bin", "b.bin"]
    first = next(i for i in mount["items"] if i["name"] == "a.bin")
    # Bytes of an S3 item: a redirect to a presigned URL of the store.
    content = api.viewer.get(first["content_url"])
    assert content.status_code == 307
    assert api.viewer.get(first["content_url"], follow_redirects=True).content == b"A" * 1000
    assert api.admin.delete(f"{SOURCES_URL}/s3-src").status_code == 200
    assert sorted(bucket.keys()) == sorted(objects)


def test_a_duplicate_name_or_overlapping_mount_is_a_conflict(api: Deployment) -> None:
    media = api.media

    assert_error(
        api.admin.post(SOURCES_URL, json={"name": "sample", "url": f"file://{media}"}),
        409,
        "already exists",
    )
    assert_error(
        api.admin.post(
            SOURCES_URL,
            json={"name": "inner", "url": f"file://{media}", "mount": "/sample/videos"},
        ),
        409,
        "overlaps",
    )
    assert "inner" not in {s["name"] for s in api.viewer.get(SOURCES_URL).json()}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"url": "ftp://example.org/media"}, "unsupported store URL"),
        ({"url": "not a url"}, "unsupported store URL"),
        ({"url": "s3://"}, "names no bucket"),
        ({"url": "s3://b", "preset": "nope"}, "unknown preset"),
        ({"url": "s3://b", "endpoint_url": "ftp://x", "check": False}, "endpoint URL"),
        ({"url": "s3://b", "preset": "minio", "check": False}, "endpoint-url"),
        ({"url": "s3://b", "addressing": "sideways", "check": False}, "addressing"),
        ({"url": "file:///tmp", "mount": "relative"}, "mount"),
        ({"url": "file:///tmp", "mount": "/a/../b"}, "mount"),
        ({"url": "file:///tmp", "include": "("}, "regular expression"),
        ({"name": "../escape", "url": "file:///tmp"}, "source name"),
        ({"name": "", "url": "file:///tmp"}, "name"),
        ({"name": "x" * 101, "url": "file:///tmp"}, "name"),
        ({"name": None, "url": "file:///tmp"}, "name"),
        ({"url": 42}, "url"),
        ({}, "url"),
    ],
)
def test_a_bad_source_is_a_400_with_one_line(
    api: Deployment, body: dict[str, Any], fragment: str
) -> None:
    response = api.admin.post(SOURCES_URL, json={"name": "bad-one", **body})

    assert_error(response, 400, fragment)
    assert_error(api.viewer.get(f"{SOURCES_URL}/bad-one"), 404)


def test_an_unreachable_store_is_a_502_with_one_line(api: Deployment, tmp_path: Path) -> None:
    response = api.admin.post(
        SOURCES_URL, json={"name": "gone", "url": f"file://{tmp_path / 'missing'}"}
    )

    assert_error(response, 502, "does not exist")


@contextmanager
def catalog_write_lock(dep: Deployment) -> Iterator[None]:
    """Hold the SQLite catalog's write lock: a sync started now cannot take its lease."""
    con = sqlite3.connect(dep.root / "catalog.db", isolation_level=None, timeout=30)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield
        con.execute("ROLLBACK")
    finally:
        con.close()


def test_a_second_sync_while_one_runs_is_a_conflict(api: Deployment, tmp_path: Path) -> None:
    media = local_tree(tmp_path / "busy", {f"f{i}.bin": b"x" for i in range(20)})
    created = api.admin.post(SOURCES_URL, json={"name": "busy", "url": f"file://{media}"})
    assert created.status_code == 201, created.text

    with catalog_write_lock(api):
        # The first sync is under way but waits for the catalog, before its lease.
        first = api.admin.post(f"{SOURCES_URL}/busy/sync")
        second = api.admin.post(f"{SOURCES_URL}/busy/sync")
        shown = api.viewer.get(f"{SOURCES_URL}/busy").json()

    assert first.status_code == 202, first.text
    assert_error(second, 409, "already being synced")
    assert shown["syncing"] is True
    run = finished_run(api, "busy")
    assert (run["state"], run["added"]) == ("success", 20)
    assert wait_for(lambda: not api.viewer.get(f"{SOURCES_URL}/busy").json()["syncing"])
    assert len(api.viewer.get(f"{SOURCES_URL}/busy/runs").json()) == 1

    # A sync of another process holds the source's lease.
    owner = f"{socket.gethostname()}:{os.getpid()}:api-test"
    lease = {"name": f"sync:{created.json()['id']}", "owner": owner}
    with api.catalog.write() as conn:
        conn.execute(insert(LEASES).values(**lease, expires_at=utcnow() + timedelta(minutes=5)))
    try:
        assert_error(api.admin.post(f"{SOURCES_URL}/busy/sync"), 409, "already being synced")
        assert api.viewer.get(f"{SOURCES_URL}/busy").json()["syncing"] is True
    finally:
        with api.catalog.write() as conn:
            conn.execute(delete(LEASES).where(LEASES.c.name == lease["name"]))

    again = api.admin.post(f"{SOURCES_URL}/busy/sync")
    assert again.status_code == 202
    rerun = finished_run(api, "busy", after=run["id"])
    assert (rerun["state"], rerun["added"], rerun["unchanged"]) == ("success", 0, 20)
    assert api.admin.delete(f"{SOURCES_URL}/busy").status_code == 200


def test_runs_limit_is_clamped(api: Deployment) -> None:
    for limit in ("0", "-5", "1", "100000", str(2**70)):
        response = api.viewer.get(f"{SOURCES_URL}/sample/runs", params={"limit": limit})
        assert response.status_code in {200, 400}, response.text
        if response.status_code == 200:
            assert 1 <= len(response.json()) <= 200
        else:
            assert_error(response, 400)
