"""Three Celery worker processes on one PostgreSQL catalog, with Redis and with RabbitMQ:
every job runs exactly once, a worker killed mid-job loses nothing, cancel and progress
work as with the local executor, a broker restarted mid-run (Redis) loses no job."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from sqlalchemy import select, update

from jobs.fixtures import read_trace
from mediamirror.catalog.models import FOLDERS, utcnow
from mediamirror.jobs import dispatch, queue
from mediamirror.jobs.executors.celery import make_app, send
from mediamirror.jobs.model import JOBS
from mediamirror.jobs.queue import JobSpec

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.postgres


def _enqueue(cluster: Cluster, processor: str, count: int, **args: Any) -> list[int]:
    """One job of ``processor`` on each of ``count`` datasets (a new input version each
    call, so earlier jobs of the same datasets do not collide)."""
    with cluster.catalog.read() as conn:
        folders = conn.execute(
            select(FOLDERS.c.id).where(FOLDERS.c.meta["type"].as_string() == "video")
        ).scalars()
        targets = sorted(folders)[:count]
    version = os.urandom(4).hex()
    specs = [JobSpec(processor, "folder", t, version, args=dict(args)) for t in targets]
    services = cluster.services()
    ids = queue.enqueue(cluster.catalog, specs, services.retry_policy)
    assert len(ids) == count
    return ids


def _events(cluster: Cluster, job_id: int) -> list[str]:
    return [e["event"] for e in read_trace(cluster.root / "trace", job_id)]


def test_three_workers_share_300_jobs_each_runs_once(cluster: Cluster) -> None:
    ids = _enqueue(cluster, "noop", 300)
    rows = cluster.wait_ended(ids)
    assert {r.state for r in rows} == {"success"}
    assert {r.attempts for r in rows} == {1}
    pids = set()
    for job_id in ids:
        trace = read_trace(cluster.root / "trace", job_id)
        assert [e["event"] for e in trace] == ["run"], f"job {job_id}: {trace}"
        pids.add(trace[0]["pid"])
    assert len(pids) == 3, "every worker process took a share"

    # A message for a job that already ran (a duplicate delivery) runs nothing.
    app = make_app(cluster.services().settings)
    send(app, cluster.queue, ids[:5])
    probe = _enqueue(cluster, "noop", 1)  # sent after the duplicates: ends after them
    cluster.wait_ended(probe)
    assert all(_events(cluster, job_id) == ["run"] for job_id in ids[:5])


def test_cancel_and_progress_as_with_the_local_executor(cluster: Cluster) -> None:
    [job_id] = _enqueue(cluster, "forever", 1)
    job = wait_for(
        lambda: (j := queue.get(cluster.catalog, job_id)).progress == 10.0 and j, 30, "progress"
    )
    assert job.state == "running" and job.message == "waiting to be canceled"
    assert queue.cancel(cluster.catalog, job_id) == "cancel requested"
    [ended] = cluster.wait_ended([job_id], timeout=15)
    assert (ended.state, ended.error) == ("canceled", "canceled")


def test_worker_killed_mid_job_completes_elsewhere_once(cluster: Cluster) -> None:
    [job_id] = _enqueue(cluster, "sleep", 1, seconds=1.0)
    # The row turns "running" when a worker claims it, a moment before the processor
    # itself starts: wait for the processor's own trace so the kill lands mid-job.
    wait_for(lambda: _events(cluster, job_id) == ["start"], 30, "the job to start")
    job = queue.get(cluster.catalog, job_id)
    assert job.state == "running" and job.worker
    pid = int(job.worker.split(":")[1])  # the pool process running it
    victim = next(p for p in cluster.workers if p.poll() is None and os.getpgid(pid) == p.pid)
    os.killpg(victim.pid, signal.SIGKILL)  # the whole worker: parent, pool, dispatcher
    victim.wait(10)
    [ended] = cluster.wait_ended([job_id], timeout=30)
    assert ended.state == "success"
    assert ended.attempts == 2
    assert _events(cluster, job_id) == ["start", "start", "end"]
    assert ended.worker is None or str(pid) not in ended.worker
    # The two workers left serve the tests after this one.


def test_redis_restarted_mid_run_loses_no_job(cluster: Cluster) -> None:
    if cluster.redis is None:
        pytest.skip("restarts a broker of the test's own: redis-server only")
    ids = _enqueue(cluster, "sleep", 60, seconds=0.05)
    wait_for(lambda: sum(r.state == "success" for r in cluster.jobs(ids)) >= 10, 30, "10 jobs done")
    cluster.redis.kill()  # every message on the broker is gone
    cluster.redis.start()
    rows = cluster.wait_ended(ids, timeout=60)
    assert {r.state for r in rows} == {"success"}
    for job_id in ids:
        assert _events(cluster, job_id) == ["start", "end"], f"job {job_id}"


def test_a_message_of_several_ids_delivered_twice_runs_each_job_once(cluster: Cluster) -> None:
    """While the queue is deep the dispatcher puts several job ids in one message; a
    worker claims them (all in one transaction) before running them, so the same message
    delivered twice, and one overlapping it, run each job once."""
    ids = _enqueue(cluster, "noop", 12)
    # Marked as sent just now: the dispatcher leaves them to the messages sent below.
    with cluster.catalog.write() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id.in_(ids)).values(dispatched_at=utcnow()))
    app = make_app(cluster.services().settings)
    send(app, cluster.queue, ids, len(ids))
    send(app, cluster.queue, ids, len(ids))
    send(app, cluster.queue, ids[4:], 4)
    rows = cluster.wait_ended(ids)
    assert {(r.state, r.attempts) for r in rows} == {("success", 1)}
    assert all(_events(cluster, job_id) == ["run"] for job_id in ids)
    probe = _enqueue(cluster, "noop", 1)  # sent after the duplicates: ends after them
    cluster.wait_ended(probe)
    assert all(_events(cluster, job_id) == ["run"] for job_id in ids)


def test_a_deep_queue_is_sent_several_ids_per_message() -> None:
    assert dispatch.per_message(10, 4) == 1  # shallow: one id per message
    assert dispatch.per_message(16 * 4, 4) == 4
    assert dispatch.per_message(100_000, 8) == dispatch.MAX_PER_MESSAGE
    assert dispatch.per_message(100, 0) == 1
