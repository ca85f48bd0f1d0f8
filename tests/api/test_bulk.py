"""The bulk API on SQLite and PostgreSQL: retry failed jobs by id or by failure group,
post-process and re-process a selection; idempotent, bounded, admin only, same-origin.

Each deployment gets two sources of its own: ``lab`` (two truncated videos whose jobs
fail for the same reason, one good clip), processed by the real CLI's ``sync --process``;
and ``lab-pp`` (two clips synced without post-processing, so marked). The server runs no
worker: what the bulk API queues stays queued where the test sees it.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .support import Deployment, assert_error, finished_run, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]
V1 = "/api/v1"
REASON = "video stream is not decodable"
#: Settled files (an hour old): the server's post-processing never waits for them.
OLD = time.time() - 3600


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))


def fail_lab(dep: Deployment) -> None:
    """Run ``lab``'s jobs with the real CLI (the truncated videos fail) and wait until
    the two failures are in error."""
    env = {"MEDIAMIRROR_AUTO_POSTPROCESS": "true", "MEDIAMIRROR_SETTLE_SECONDS": "0"}
    dep.cli.run("sync", "lab", "--process", "--quiet", env=env, ok=None, timeout=120)
    wait_for(lambda: len(lab_failures(dep)) == 2, what="two failed jobs of lab")


def lab_failures(dep: Deployment) -> list[dict[str, Any]]:
    jobs = dep.viewer.get(f"{V1}/jobs", params={"state": "error", "limit": 500}).json()["jobs"]
    return [j for j in jobs if (j["target_path"] or "").startswith("/lab/")]


@pytest.fixture(scope="session")
def lab(any_api: Deployment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    dep = any_api
    media = tmp_path_factory.mktemp(f"lab-{dep.backend}")
    clip = (dep.media / "videos" / "clip-h264.mp4").read_bytes()
    for name in ("trunc-1.mp4", "trunc-2.mp4"):
        _write(media / "lab" / name, clip[:3000])
    _write(media / "lab" / "fine.mp4", clip)
    for name in ("a.mp4", "b.mp4"):
        _write(media / "pp" / name, clip)
    dep.cli.run("source", "add", "lab", (media / "lab").as_uri())
    fail_lab(dep)
    created = dep.admin.post(
        f"{V1}/sources", json={"name": "lab-pp", "url": (media / "pp").as_uri()}
    )
    assert created.status_code == 201, created.text
    assert dep.admin.post(f"{V1}/sources/lab-pp/sync").status_code == 202
    assert finished_run(dep, "lab-pp")["added"] == 2
    (fine,) = dep.jobs_of(dep.folder_id("/lab/Video fine.mp4"))
    assert fine.state == "success", fine
    return {
        "fine": dep.folder_id("/lab/Video fine.mp4"),
        "fine_job": fine.id,
        "pp": dep.folder_id("/lab-pp"),
        "a": dep.folder_id("/lab-pp/Video a.mp4"),
        "b": dep.folder_id("/lab-pp/Video b.mp4"),
    }


def post(dep: Deployment, what: str, body: Any) -> dict[str, Any]:
    response = dep.admin.post(f"{V1}/bulk/{what}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert {"queued", "skipped", "message"} <= set(answer), answer
    assert "\n" not in answer["message"]
    return answer


def states(dep: Deployment, ids: list[int]) -> list[str]:
    return [dep.viewer.get(f"{V1}/jobs/{i}").json()["state"] for i in ids]


def test_retry_by_ids_queues_each_job_once(any_api: Deployment, lab: dict[str, Any]) -> None:
    dep = any_api
    failed = sorted(j["id"] for j in lab_failures(dep))
    assert len(failed) == 2

    first = post(dep, "retry", {"job_ids": [*failed, lab["fine_job"], 987654]})

    assert (first["queued"], first["skipped"]) == (2, 2), first
    assert first["message"] == "queued 2 job(s) again; skipped 2 (1 not failed, 1 not found)"
    assert states(dep, failed) == ["queued", "queued"]
    for job_id in failed:
        body = dep.viewer.get(f"{V1}/jobs/{job_id}").json()
        assert (body["attempts"], body["error"]) == (0, None), body

    again = post(dep, "retry", {"job_ids": failed})

    assert (again["queued"], again["skipped"]) == (0, 2), again
    assert "2 already queued or running" in again["message"]

    # Back to failed, then two retries of the same jobs at once: each job queued once.
    fail_lab(dep)
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: post(dep, "retry", {"job_ids": failed}), range(2)))
    assert sorted(a["queued"] for a in both) == [0, 2], both
    assert states(dep, failed) == ["queued", "queued"]
    fail_lab(dep)


def test_retry_all_of_a_failure_group(any_api: Deployment, lab: dict[str, Any]) -> None:
    dep = any_api
    inbox = dep.viewer.get(f"{V1}/failures", params={"limit": 200}).json()
    (group,) = [g for g in inbox["groups"] if REASON in g["key"]]
    failed = sorted(j["id"] for j in lab_failures(dep))
    assert group["jobs"] == 2 and group["processor"] == "video"
    assert "trunc-" not in group["key"]  # the file name is not part of the reason
    assert REASON in group["example"] and "trunc-" in group["example"]
    assert sorted(d["path"] for d in group["datasets"]) == [
        "/lab/Video trunc-1.mp4",
        "/lab/Video trunc-2.mp4",
    ]

    retried = post(dep, "retry", {"reason": group["key"]})

    assert (retried["queued"], retried["skipped"]) == (2, 0), retried
    assert states(dep, failed) == ["queued", "queued"]
    after = dep.viewer.get(f"{V1}/failures", params={"limit": 200}).json()
    assert not [g for g in after["groups"] if g["key"] == group["key"]]
    assert after["total_jobs"] == inbox["total_jobs"] - 2
    gone = dep.admin.post(f"{V1}/bulk/retry", json={"reason": group["key"]})
    assert_error(gone, 404, "no failed jobs with that reason")
    fail_lab(dep)


def test_postprocess_and_reprocess_a_selection(any_api: Deployment, lab: dict[str, Any]) -> None:
    dep = any_api
    a, b, fine = lab["a"], lab["b"], lab["fine"]

    first = post(dep, "postprocess", {"folder_ids": [a]})

    assert (first["queued"], first["skipped"], first["datasets"]) == (1, 0, 1), first
    (job,) = dep.jobs_of(a)
    assert (job.processor, job.state) == ("video", "queued")
    assert dep.viewer.get(f"{V1}/datasets/{a}").json()["meta"]["MarkForPostProcess"] is False

    # The folder holds a (work queued: skipped) and b (marked: queued).
    folder = post(dep, "postprocess", {"folder_ids": [lab["pp"], a]})

    assert (folder["queued"], folder["skipped"]) == (1, 1), folder
    assert folder["message"] == (
        "queued 1 job(s) for 1 dataset(s); skipped 1 dataset(s): 1 already queued or running"
    )
    assert [j.state for j in dep.jobs_of(b)] == ["queued"]

    done = post(dep, "postprocess", {"folder_ids": [fine, 987654]})

    assert (done["queued"], done["skipped"]) == (0, 2), done
    assert "1 already processed" in done["message"] and "1 not found" in done["message"]

    redo = post(dep, "reprocess", {"folder_ids": [fine], "processor": "video"})

    assert (redo["queued"], redo["skipped"]) == (1, 0), redo
    queued = [j for j in dep.jobs_of(fine) if j.state == "queued"]
    assert [(j.processor, j.args) for j in queued] == [("video", {"reprocess": True})]
    twice = post(dep, "reprocess", {"folder_ids": [fine]})
    assert (twice["queued"], twice["skipped"]) == (0, 1), twice
    unknown = dep.admin.post(f"{V1}/bulk/reprocess", json={"folder_ids": [fine], "processor": "x"})
    assert_error(unknown, 400, "unknown processor 'x'")


@pytest.mark.parametrize("what", ["postprocess", "reprocess", "retry"])
def test_refusals(any_api: Deployment, what: str) -> None:
    dep = any_api
    url = f"{V1}/bulk/{what}"
    body = {"job_ids": [1]} if what == "retry" else {"folder_ids": [1]}
    assert_error(dep.viewer.post(url, json=body), 403, "admin")
    assert_error(dep.anon.post(url, json=body), 401)
    # The session cookie from another site's page: refused before anything is read.
    cookie = {"Cookie": f"mm_session={dep.admin_token}"}
    foreign = dep.client(headers={**cookie, "Origin": "http://evil.example"})
    assert_error(foreign.post(url, json=body), 403, "cross-site")

    field = "job_ids" if what == "retry" else "folder_ids"
    too_many = assert_error(dep.admin.post(url, json={field: list(range(1, 10_002))}), 400)
    assert "10000" in too_many
    bad_bodies: list[Any] = [{field: []}, {field: [0]}, {field: [2**31]}, {field: ["x"]}, {}]
    if what == "retry":
        bad_bodies.append({"job_ids": [1], "reason": "video: x"})
    for bad in bad_bodies:
        assert_error(dep.admin.post(url, json=bad), 400)
    assert_error(
        dep.admin.post(url, content=b"{", headers={"content-type": "application/json"}), 400
    )


def test_ten_thousand_ids_in_one_request(any_api: Deployment, lab: dict[str, Any]) -> None:
    """The largest selection allowed is answered quickly, in one line."""
    dep = any_api
    ids = list(range(2_000_000, 2_010_000))
    started = time.monotonic()
    for what, body in (("retry", {"job_ids": ids}), ("postprocess", {"folder_ids": ids})):
        answer = post(dep, what, body)
        assert (answer["queued"], answer["skipped"]) == (0, 10_000), answer
        assert "10000 not found" in answer["message"]
    assert time.monotonic() - started < 20
