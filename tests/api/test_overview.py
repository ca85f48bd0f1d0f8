"""``GET /api/v1/overview`` and ``GET /api/v1/failures`` on SQLite and PostgreSQL: the
figures agree with the catalog, failures group by reason, pages of groups, and who may
read them. Plus the grouping function itself, on messages of real failures.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from mediamirror.catalog.models import FOLDERS, SOURCES, SYNC_RUNS
from mediamirror.catalog.tree import dataset_status
from mediamirror.jobs.failures import group_key
from mediamirror.jobs.model import JOBS

from .support import Deployment, assert_error

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]
V1 = "/api/v1"


def catalog_figures(dep: Deployment) -> dict[str, Any]:
    """The same figures, counted row by row from the catalog."""
    with dep.catalog.read() as conn:
        jobs = [(r.state, r.processor, r.error) for r in conn.execute(select(JOBS))]
        folders = [(r.meta or {}, r.state) for r in conn.execute(select(FOLDERS))]
        sources = sorted(conn.execute(select(SOURCES.c.name)).scalars())
        runs = conn.execute(select(SYNC_RUNS.c.source_id, SYNC_RUNS.c.state)).all()
    datasets = [dataset_status(meta) for meta, state in folders if state == "present"]
    datasets = [d for d in datasets if d is not None]
    return {
        "jobs": Counter(state for state, _, _ in jobs),
        "statuses": Counter(datasets),
        "types": Counter(
            meta["type"] for meta, state in folders if meta.get("type") and state == "present"
        ),
        "sources": sources,
        "groups": Counter(group_key(p, e) for s, p, e in jobs if s == "error"),
        "runs": len(runs),
    }


def test_overview_agrees_with_the_catalog(any_api: Deployment) -> None:
    dep = any_api
    body = dep.viewer.get(f"{V1}/overview").json()
    want = catalog_figures(dep)

    assert body["datasets"]["total"] == sum(want["statuses"].values()) > 0
    assert body["datasets"]["by_status"] == {
        s: want["statuses"].get(s, 0) for s in ("ready", "pending", "error", "new")
    }
    assert body["datasets"]["by_type"] == dict(want["types"])
    assert {k: v for k, v in body["jobs"]["by_state"].items() if v} == dict(want["jobs"])
    assert body["failed_jobs"] == want["jobs"]["error"]
    assert [s["name"] for s in body["sources"]] == want["sources"]
    sample = next(s for s in body["sources"] if s["name"] == "sample")
    assert sample["mount_folder_id"] == dep.folder_id("/sample")
    assert sample["health"] == "ok" and sample["last_sync"]["state"] == "success"
    assert sample["last_sync"]["added"] > 0 and sample["last_success_at"]
    events = sample["events_24h"]
    assert set(events) == {"received", "problems", "last_at"}
    assert events["received"] >= events["problems"] >= 0
    assert body["jobs"]["finished_last_hour"] >= body["jobs"]["finished_last_minute"] >= 0


def test_failures_group_by_reason_in_pages(any_api: Deployment) -> None:
    dep = any_api
    want = catalog_figures(dep)["groups"]
    every = dep.viewer.get(f"{V1}/failures", params={"limit": 200}).json()

    assert every["total_groups"] == len(want) and every["total_jobs"] == sum(want.values())
    assert {g["key"]: g["jobs"] for g in every["groups"]} == dict(want)
    counts = [g["jobs"] for g in every["groups"]]
    assert counts == sorted(counts, reverse=True)  # the largest group first
    for group in every["groups"]:
        assert group["key"].startswith(group["processor"] + ": ")
        assert group["example"] and "\n" not in group["example"]
        assert group["datasets"] and all(d["path"].startswith("/") for d in group["datasets"])
    if len(want) >= 2:
        first = dep.viewer.get(f"{V1}/failures", params={"limit": 1}).json()
        second = dep.viewer.get(f"{V1}/failures", params={"limit": 1, "offset": 1}).json()
        assert [g["key"] for g in first["groups"] + second["groups"]] == [
            g["key"] for g in every["groups"][:2]
        ]
    past = dep.viewer.get(f"{V1}/failures", params={"offset": 10_000}).json()
    assert past["groups"] == [] and past["total_groups"] == len(want)


def test_who_may_read_and_bad_pages(any_api: Deployment) -> None:
    dep = any_api
    for path in ("/overview", "/failures"):
        assert_error(dep.anon.get(V1 + path), 401)
        assert dep.viewer.get(V1 + path).status_code == 200
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"offset": 2**31}):
        assert_error(dep.viewer.get(f"{V1}/failures", params=bad), 400)


@pytest.mark.parametrize(
    ("errors", "same"),
    [
        (
            [
                "trunc-1.mp4: video stream is not decodable (End of file)",
                "trunc-2.mp4: video stream is not decodable (End of file)",
            ],
            True,
        ),
        (
            [
                "worker host-a:4121:w1 was lost (gave up after 3 attempts)",
                "worker host-b:977:w2 was lost (gave up after 2 attempts)",
            ],
            True,
        ),
        (
            [
                "cannot read s3://bucket/a/b.mp4: 503 Slow Down\nTraceback ...",
                "cannot read s3://other/c.mp4: 503 Slow Down",
            ],
            True,
        ),
        (
            ["command 'pose' failed with exit code 3", "command 'detect' failed with exit code 1"],
            True,
        ),
        (
            ["a.mp4: empty file (0 bytes)", "a.mp4: video stream is not decodable (End of file)"],
            False,
        ),
    ],
)
def test_group_keys(errors: list[str], same: bool) -> None:
    keys = {group_key("video", e) for e in errors}
    assert (len(keys) == 1) is same, keys
    for key in keys:
        assert key.startswith("video: ") and "\n" not in key
        assert not any(ch.isdigit() for ch in key.replace("(End of file)", "")), key
    assert group_key("pyramid", errors[0]) != group_key("video", errors[0])
    assert group_key("video", None) == group_key("video", "") == "video: no error message"
