"""Jobs through the API on SQLite and PostgreSQL: list with filters, show, log, retry and
cancel (and their refusals), batch post-processing with its DIVE alias, and re-processing.

The server runs without a worker, so a job queued here stays queued; a running job is
made by setting the row as a worker would.
"""

from __future__ import annotations

import os
import shutil
import socket
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from mediamirror.catalog.models import utcnow
from mediamirror.jobs.model import JOBS

from .support import Deployment, assert_error, finished_run

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]
V1 = "/api/v1"
SLIDE = "/sample/large/Large image slide.tif"


def job(dep: Deployment, job_id: int) -> dict[str, Any]:
    response = dep.viewer.get(f"{V1}/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_list_with_state_and_processor_filters(any_api: Deployment) -> None:
    dep = any_api
    everything = dep.viewer.get(f"{V1}/jobs", params={"limit": 500}).json()
    ids = [j["id"] for j in everything["jobs"]]
    assert ids == sorted(ids, reverse=True)
    assert everything["counts"]["success"] >= 5
    assert "active_key" not in everything["jobs"][0]
    assert "log_tail" not in everything["jobs"][0]

    for states in (["success"], ["error"], ["success", "error"], ["canceled"]):
        body = dep.viewer.get(f"{V1}/jobs", params={"state": states, "limit": 500}).json()
        assert {j["state"] for j in body["jobs"]} <= set(states)
        assert len(body["jobs"]) == sum(body["counts"].get(s, 0) for s in states)
    pyramids = dep.viewer.get(f"{V1}/jobs", params={"processor": "pyramid"}).json()["jobs"]
    assert pyramids and {j["processor"] for j in pyramids} == {"pyramid"}
    page = dep.viewer.get(f"{V1}/jobs", params={"limit": 2, "offset": 1}).json()["jobs"]
    assert [j["id"] for j in page] == ids[1:3]
    assert_error(dep.viewer.get(f"{V1}/jobs", params={"state": "stuck"}), 400, "state")


def test_show_and_log_of_a_finished_job(any_api: Deployment) -> None:
    dep = any_api
    (pyramid,) = dep.jobs_of(dep.folder_id(SLIDE))

    body = job(dep, pyramid.id)
    log = dep.viewer.get(f"{V1}/jobs/{pyramid.id}/log").json()

    assert (body["processor"], body["state"]) == ("pyramid", "success")
    assert body["target_type"] == "folder"
    assert body["target_id"] == dep.folder_id(SLIDE)
    assert body["progress"] == 100.0 and body["attempts"] == 1
    assert body["finished_at"] >= body["started_at"] >= body["created_at"]
    assert "active_key" not in body
    assert log == {"id": pyramid.id, "log": body["log_tail"]}
    for path in (f"/jobs/{987654}", f"/jobs/{987654}/log"):
        assert_error(dep.viewer.get(V1 + path), 404, "987654")
    for path in (f"/jobs/{987654}/retry", f"/jobs/{987654}/cancel"):
        assert_error(dep.admin.post(V1 + path), 404, "987654")
    # Ids and offsets at the edge of the catalog's INTEGER ids: 404 / empty, then 400,
    # never a database error.
    assert_error(dep.viewer.get(f"{V1}/jobs/{2**31 - 1}"), 404)
    assert_error(dep.viewer.get(f"{V1}/jobs/{2**31}"), 400)
    assert_error(dep.viewer.get(f"{V1}/folders/{2**31 - 1}/children"), 404)
    assert_error(dep.admin.post(f"{V1}/jobs/{2**31 - 1}/retry"), 404)
    assert dep.viewer.get(f"{V1}/jobs", params={"offset": 2**31 - 1}).json()["jobs"] == []
    assert_error(dep.viewer.get(f"{V1}/jobs", params={"offset": 2**31}), 400)


def test_retry_and_cancel_through_every_state(any_api: Deployment) -> None:
    dep = any_api
    (bad,) = dep.jobs_of(dep.folder_id("/sample/Video bad.mp4"))
    url = f"{V1}/jobs/{bad.id}"
    failed = job(dep, bad.id)
    assert (failed["state"], failed["processor"]) == ("error", "video"), failed
    assert failed["error"] and "\n" not in failed["error"]
    assert failed["attempts"] >= 1
    in_error = dep.viewer.get(f"{V1}/jobs", params={"state": "error"}).json()["jobs"]
    assert bad.id in {j["id"] for j in in_error}

    retried = dep.admin.post(f"{url}/retry")

    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "queued"
    assert (retried.json()["attempts"], retried.json()["error"]) == (0, None)
    assert_error(dep.admin.post(f"{url}/retry"), 409, "queued")

    canceled = dep.admin.post(f"{url}/cancel")

    assert canceled.status_code == 200, canceled.text
    assert (canceled.json()["state"], canceled.json()["outcome"]) == ("canceled", "canceled")
    assert_error(dep.admin.post(f"{url}/cancel"), 409, "already ended")
    assert dep.admin.post(f"{url}/retry").json()["state"] == "queued"

    # As a worker takes it: running, leased by a live process.
    with dep.catalog.write() as conn:
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id == bad.id)
            .values(
                state="running",
                worker=f"{socket.gethostname()}:{os.getpid()}:api-test",
                lease_expires_at=utcnow() + timedelta(minutes=10),
                started_at=utcnow(),
                attempts=1,
            )
        )
    assert_error(dep.admin.post(f"{url}/retry"), 409, "running")
    asked = dep.admin.post(f"{url}/cancel")
    assert asked.status_code == 200
    assert (asked.json()["state"], asked.json()["outcome"]) == ("running", "cancel requested")
    assert job(dep, bad.id)["cancel_requested"] is True


@pytest.fixture(scope="session")
def marked(any_api: Deployment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """Source ``pp`` with three web-ready clips, synced through the API without
    post-processing: three datasets marked ``MarkForPostProcess``. Path -> folder id."""
    dep = any_api
    media = tmp_path_factory.mktemp(f"pp-{dep.backend}")
    for name in ("a", "b", "c"):
        shutil.copy(dep.media / "videos" / "clip-h264.mp4", media / f"{name}.mp4")
    created = dep.admin.post(f"{V1}/sources", json={"name": "pp", "url": f"file://{media}"})
    assert created.status_code == 201, created.text
    assert dep.admin.post(f"{V1}/sources/pp/sync").status_code == 202
    assert finished_run(dep, "pp")["added"] == 3
    paths = [f"/pp/Video {n}.mp4" for n in ("a", "b", "c")]
    ids = {p: dep.folder_id(p) for p in paths}
    for fid in ids.values():
        meta = dep.viewer.get(f"{V1}/datasets/{fid}").json()["meta"]
        assert (meta["MarkForPostProcess"], meta["fps"]) == (True, -1), meta
    return {"mount": dep.folder_id("/pp"), **ids}


def test_batch_postprocess_and_its_dive_alias(any_api: Deployment, marked: dict[str, int]) -> None:
    dep = any_api
    mount = marked["mount"]
    a, b, c = (marked[f"/pp/Video {n}.mp4"] for n in "abc")
    url = f"{V1}/folders/{mount}/postprocess"

    first = dep.admin.post(url, json={"limit": 1, "skipTranscoding": True})

    assert first.status_code == 200, first.text
    assert (first.json()["datasets"], len(first.json()["queued"])) == (1, 1)
    assert first.json()["message"] == "queued 1 job(s) for 1 dataset(s)"
    queued = job(dep, first.json()["queued"][0])
    assert (queued["processor"], queued["target_id"], queued["state"]) == ("video", a, "queued")
    assert queued["args"] == {"skip_transcoding": True}
    assert dep.viewer.get(f"{V1}/datasets/{a}").json()["meta"]["MarkForPostProcess"] is False

    dive = dep.admin.post(f"{V1}/dive_rpc/batch_postprocess/{mount}?limit=1")

    assert dive.status_code == 200, dive.text
    assert (dive.json()["datasets"], len(dive.json()["queued"])) == (1, 1)
    second = job(dep, dive.json()["queued"][0])
    assert (second["target_id"], second["args"]) == (b, {})

    # onlyPending: still at fps -1 with the mark present, whatever its value (a, b and c);
    # a and b are queued already, so only c gets a job.
    pending = dep.admin.post(url, json={"onlyPending": True})

    assert pending.status_code == 200, pending.text
    assert pending.json()["datasets"] == 3
    assert [job(dep, i)["target_id"] for i in pending.json()["queued"]] == [c]
    assert "2 already queued or running" in pending.json()["message"]

    for body in ({}, None):
        nothing = dep.admin.post(url, json=body)
        assert nothing.status_code == 200, nothing.text
        assert (nothing.json()["datasets"], nothing.json()["queued"]) == (0, [])
    assert_error(dep.admin.post(f"{V1}/folders/987654/postprocess", json={}), 404)
    assert_error(dep.admin.post(f"{V1}/dive_rpc/batch_postprocess/987654"), 404)
    for bad in ({"limit": 0}, {"limit": "many"}, {"skipTranscoding": "perhaps"}, []):
        assert_error(dep.admin.post(url, json=bad), 400)
    assert_error(dep.admin.post(f"{V1}/dive_rpc/batch_postprocess/{mount}?limit=0"), 400)


def test_reprocess_dry_run_queues_nothing(any_api: Deployment) -> None:
    dep = any_api
    sample, slide = dep.folder_id("/sample"), dep.folder_id(SLIDE)
    before = len(dep.jobs_of(slide))
    url = f"{V1}/folders/{sample}/reprocess"

    dry = dep.admin.post(url, json={"processor": "pyramid", "dry_run": True})

    assert dry.status_code == 200, dry.text
    assert dry.json() == {
        "datasets": [SLIDE],
        "jobs": [{"processor": "pyramid", "target_id": slide}],
        "queued": [],
        "dry_run": True,
    }
    assert len(dep.jobs_of(slide)) == before

    body = {"processor": "video", "prefix": "videos/interview", "args": "-crf 30"}
    real = dep.admin.post(url, json=body)

    assert real.status_code == 200, real.text
    assert real.json()["datasets"] == ["/sample/videos/interview/Video clip-mjpeg.mov"]
    (queued,) = real.json()["queued"]
    assert job(dep, queued)["args"] == {"reprocess": True, "args": "-crf 30"}
    assert dep.admin.post(url, json=body).json()["queued"] == []
    assert dep.admin.post(f"{V1}/jobs/{queued}/cancel").json()["state"] == "canceled"
    assert_error(dep.admin.post(url, json={"processor": "nope"}), 400, "unknown processor")
    assert_error(dep.admin.post(url, json={"limit": -1}), 400, "limit")
    assert_error(dep.admin.post(f"{V1}/folders/987654/reprocess", json={}), 404)
