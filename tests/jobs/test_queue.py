"""The job queue on SQLite and PostgreSQL: idempotent enqueue, atomic claims, backoff,
cancel and retry; and the ``jobs`` commands through the real CLI entry point."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest

from helpers import assert_one_error_line
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import utcnow
from mediamirror.errors import JobError, NotFoundError
from mediamirror.jobs import queue
from mediamirror.jobs.executors.local import LocalExecutor
from mediamirror.jobs.model import JobStatus, RetryPolicy
from mediamirror.jobs.queue import JobSpec
from mediamirror.postprocess import reprocess

from .conftest import Lab
from .fixtures import python_processor

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

POLICY = RetryPolicy(max_attempts=3, intervals=(5.0, 30.0))
LEASE = 60.0


def spec(target: int = 1, version: str = "v1", processor: str = "video") -> JobSpec:
    return JobSpec(processor, "folder", target, version)


def test_enqueue_is_idempotent_while_queued_or_running(catalog: Catalog) -> None:
    [first] = queue.enqueue(catalog, [spec()], POLICY)
    assert queue.enqueue(catalog, [spec()], POLICY) == []
    # another input version, processor or target is other work
    others = queue.enqueue(
        catalog, [spec(version="v2"), spec(processor="pyramid"), spec(target=2)], POLICY
    )
    assert len(others) == 3
    [claimed] = [j for j in queue.claim(catalog, "w1", 10, LEASE) if j.id == first]
    assert claimed.state == JobStatus.RUNNING
    assert queue.enqueue(catalog, [spec()], POLICY) == [], "running counts as active"
    assert queue.finish(catalog, first, "w1", JobStatus.SUCCESS)
    [again] = queue.enqueue(catalog, [spec()], POLICY)
    assert again != first
    assert queue.get(catalog, again).state == JobStatus.QUEUED
    assert queue.get(catalog, first).state == JobStatus.SUCCESS


def test_duplicates_within_one_enqueue_call_queue_once(catalog: Catalog) -> None:
    ids = queue.enqueue(catalog, [spec(), spec(), spec(target=2)], POLICY)
    assert len(ids) == 2
    assert queue.counts(catalog) == {"queued": 2}


@pytest.mark.timeout(180)
def test_concurrent_claims_never_share_a_job(catalog: Catalog, catalog_url: str) -> None:
    ids = queue.enqueue(catalog, [spec(target=i) for i in range(200)], POLICY)
    assert len(ids) == 200
    got: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        own = Catalog(catalog_url)  # its own engine and connections, as another process
        try:
            start.wait()
            while True:
                jobs = queue.claim(own, f"host:{name}:x", 3, LEASE)
                if not jobs:
                    return
                got[name].extend(j.id for j in jobs)
                assert all(j.worker == f"host:{name}:x" for j in jobs)
                time.sleep(0.002)  # "run" them: lets the other worker in between claims
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not errors, errors
    a, b = set(got["a"]), set(got["b"])
    assert len(a) == len(got["a"]) and len(b) == len(got["b"]), "a worker got a job twice"
    assert not a & b, f"jobs claimed by both workers: {sorted(a & b)[:10]}"
    assert a | b == set(ids)
    assert a and b, "both workers should have claimed some jobs"
    rows = queue.listing(catalog, limit=500)
    assert all(r.state == JobStatus.RUNNING and r.attempts == 1 for r in rows)
    owner = {r.id: r.worker for r in rows}
    assert all(owner[i] == "host:a:x" for i in a) and all(owner[i] == "host:b:x" for i in b)


def test_claim_takes_due_jobs_by_priority(catalog: Catalog) -> None:
    low, high = queue.enqueue(
        catalog,
        [JobSpec("video", "folder", 1, "v", priority=200), JobSpec("video", "folder", 2, "v")],
        POLICY,
    )
    [later] = queue.enqueue(catalog, [spec(target=3)], POLICY)
    with catalog.write() as conn:
        from sqlalchemy import update

        from mediamirror.jobs.model import JOBS

        conn.execute(
            update(JOBS).where(JOBS.c.id == later).values(run_after=utcnow() + timedelta(hours=1))
        )
    assert [j.id for j in queue.claim(catalog, "w", 10, LEASE)] == [high, low]
    assert queue.claim(catalog, "w", 10, LEASE) == []
    assert queue.pending(catalog)[0] == 1


def test_transient_failure_backs_off_then_gives_up(catalog: Catalog) -> None:
    [job_id] = queue.enqueue(catalog, [spec()], POLICY)
    for attempt, delay in [(1, 5.0), (2, 30.0)]:
        [job] = queue.claim(catalog, "w", 1, LEASE)
        assert (job.id, job.attempts) == (job_id, attempt)
        before = utcnow()
        assert queue.retry_later(catalog, job, "w", "store hiccup", POLICY, "log line")
        row = queue.get(catalog, job_id)
        assert row.state == JobStatus.QUEUED and row.worker is None
        assert row.message == "retrying: store hiccup"
        wait = (row.run_after - before).total_seconds()
        assert delay - 1 <= wait <= delay + 1, wait
        assert queue.claim(catalog, "w", 1, LEASE) == [], "not due before its backoff"
        queued, due_in = queue.pending(catalog)
        assert queued == 1 and due_in is not None and delay - 2 <= due_in <= delay
        _make_due(catalog, job_id)
    [job] = queue.claim(catalog, "w", 1, LEASE)
    assert job.attempts == 3
    assert not queue.retry_later(catalog, job, "w", "store hiccup", POLICY, "log")
    row = queue.get(catalog, job_id)
    assert row.state == JobStatus.ERROR
    assert row.error == "store hiccup (gave up after 3 attempts)"
    assert row.active_key is None


def _make_due(catalog: Catalog, job_id: int) -> None:
    from sqlalchemy import update

    from mediamirror.jobs.model import JOBS

    with catalog.write() as conn:
        conn.execute(
            update(JOBS).where(JOBS.c.id == job_id).values(run_after=utcnow() - timedelta(1))
        )


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(max_attempts=5, intervals=(1.0, 2.0))
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 2.0, 2.0]
    assert RetryPolicy(intervals=()).delay(1) == 0.0


def test_cancel_a_queued_job(catalog: Catalog) -> None:
    [job_id] = queue.enqueue(catalog, [spec()], POLICY)
    assert queue.cancel(catalog, job_id) == JobStatus.CANCELED
    row = queue.get(catalog, job_id)
    assert (row.state, row.active_key, row.error) == ("canceled", None, "canceled")
    assert queue.claim(catalog, "w", 5, LEASE) == []
    assert len(queue.enqueue(catalog, [spec()], POLICY)) == 1, "the work may be queued again"
    with pytest.raises(JobError, match="already ended"):
        queue.cancel(catalog, job_id)
    with pytest.raises(NotFoundError):
        queue.cancel(catalog, 999_999)


def test_cancel_a_running_job_is_a_request(catalog: Catalog) -> None:
    [job_id] = queue.enqueue(catalog, [spec()], POLICY)
    queue.claim(catalog, "w", 1, LEASE)
    assert queue.cancel(catalog, job_id) == "cancel requested"
    assert queue.get(catalog, job_id).state == JobStatus.RUNNING
    assert queue.heartbeat(catalog, "w", [job_id], LEASE) == {job_id}


def test_retry_an_errored_job(catalog: Catalog) -> None:
    [job_id] = queue.enqueue(catalog, [spec()], POLICY)
    queue.claim(catalog, "w", 1, LEASE)
    queue.finish(catalog, job_id, "w", JobStatus.ERROR, error="bad input")
    queue.retry(catalog, job_id)
    row = queue.get(catalog, job_id)
    assert (row.state, row.attempts, row.error, row.worker) == ("queued", 0, None, None)
    with pytest.raises(JobError, match="only ended jobs"):
        queue.retry(catalog, job_id)
    [job] = queue.claim(catalog, "w", 1, LEASE)
    assert job.id == job_id and job.attempts == 1
    queue.finish(catalog, job_id, "w", JobStatus.ERROR, error="bad input")
    [other] = queue.enqueue(catalog, [spec()], POLICY)
    with pytest.raises(JobError, match=f"already queued as job {other}"):
        queue.retry(catalog, job_id)


def test_finish_by_a_worker_that_lost_the_job_is_refused(catalog: Catalog) -> None:
    [job_id] = queue.enqueue(catalog, [spec()], POLICY)
    queue.claim(catalog, "w1", 1, LEASE)
    assert not queue.finish(catalog, job_id, "w2", JobStatus.SUCCESS)
    assert queue.get(catalog, job_id).state == JobStatus.RUNNING


# -- the jobs commands -------------------------------------------------------------------------


def test_jobs_commands_through_the_cli(lab: Lab) -> None:
    lab.configure(
        processors={
            "fail": python_processor("AlwaysFail", applies_to=["video"]),
            "noop": python_processor("Noop", applies_to=["video"]),
        }
    )
    lab.put("a/clip.mp4", b"not really a video")
    lab.add_local_source()
    lab.sync()
    dataset = lab.dataset("/src/a/Video clip.mp4")
    # set up in-process (the CLI paths of reprocess and worker have tests of their own)
    services = lab.services()
    assert len(reprocess(services, "/src", processor="fail").queued) == 1
    LocalExecutor(services, 1, poll_interval=0.05).run(burst=True)
    [job] = lab.jobs(processor="fail")
    assert job.state == "error"
    assert job.error == "bad input: nothing to process"

    listed = lab.run("jobs", "list", "--state", "error").stdout.splitlines()
    assert len(listed) == 1
    assert listed[0].split()[:3] == [str(job.id), "error", "fail"]
    assert f"folder:{dataset.id}" in listed[0] and "bad input: nothing to process" in listed[0]
    as_json = lab.run("jobs", "list", "--state", "error", "--json").json()
    assert [(j["id"], j["state"], j["attempts"]) for j in as_json] == [(job.id, "error", 1)]

    shown = lab.run("jobs", "show", str(job.id)).stdout
    assert "state             error" in shown and "processor         fail" in shown
    assert f"error             {job.error}" in shown
    assert "looking at the input" in lab.run("jobs", "log", str(job.id)).stdout

    assert lab.run("jobs", "retry", str(job.id)).stdout.strip() == f"job {job.id} queued again"
    queued = lab.job(job.id)
    assert (queued.state, queued.attempts, queued.error) == ("queued", 0, None)
    assert_one_error_line(lab.run("jobs", "retry", str(job.id), ok=None), "only ended jobs")
    assert lab.run("jobs", "cancel", str(job.id)).stdout.strip() == f"job {job.id}: canceled"
    assert lab.job(job.id).state == "canceled"
    assert LocalExecutor(services, 1).run(burst=True).ran == 0, "a canceled job does not run"

    again = lab.run("jobs", "cancel", str(job.id), ok=None)
    assert_one_error_line(again, f"job {job.id} already ended (canceled)")
    missing = lab.run("jobs", "show", "999999", "--json", ok=None)
    assert_one_error_line(missing, "no job 999999")
    assert json.loads(lab.run("jobs", "show", str(job.id), "--json").stdout)["state"] == "canceled"


def test_release_gives_a_job_back_without_using_an_attempt(catalog: Catalog) -> None:
    [job_id] = queue.enqueue(catalog, [spec()], POLICY)
    queue.claim(catalog, "w1", 1, LEASE)
    assert not queue.release(catalog, job_id, "w2"), "only its holder may give it back"
    assert queue.release(catalog, job_id, "w1")
    row = queue.get(catalog, job_id)
    assert (row.state, row.attempts, row.worker, row.lease_expires_at) == ("queued", 0, None, None)
    [again] = queue.claim(catalog, "w2", 1, LEASE)
    assert (again.id, again.attempts) == (job_id, 1)
