"""The local executor claims and records jobs in batches: several real worker processes
racing over one queue run every job exactly once, a second worker is never starved nor
blocked by jobs the first claimed but did not start, and a worker killed mid-batch loses
nothing (its jobs run again once)."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for
from mediamirror.jobs.model import JobStatus

from .conftest import Lab
from .fixtures import python_processor, read_trace

pytestmark = pytest.mark.timeout(240)


def make_datasets(lab: Lab, count: int) -> None:
    for n in range(count):
        lab.put(f"v{n // 50}/clip{n:04d}.mp4", b"x")
    lab.add_local_source()
    lab.sync()


def runs(trace: Path, job_id: int, event: str) -> int:
    return sum(1 for e in read_trace(trace, job_id) if e["event"] == event)


def ran(proc_log: str) -> int:
    match = re.search(r"worker ran (\d+) job", proc_log)
    assert match, proc_log[-2000:]
    return int(match.group(1))


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_racing_worker_processes_run_each_job_once(lab: Lab, reaper: Any) -> None:
    """Three worker processes on one queue of 240 jobs: every job's side effect happens
    exactly once, every job ends in success after one attempt, and every worker works.
    The jobs wait on a gate until each worker holds one, so all three race from then on."""
    gate = lab.root / "gate"
    trace = lab.trace_dir
    lab.configure(
        processors={"once": python_processor("WaitForFile", gate=str(gate), trace_dir=str(trace))}
    )
    make_datasets(lab, 240)
    lab.run("reprocess", "/src", "--processor", "once")
    ids = [j.id for j in lab.jobs()]
    assert len(ids) == 240

    workers = [reaper(lab.popen("worker", "--burst", "--concurrency", "2")) for _ in range(3)]

    def holders() -> set[str]:
        return {j.worker for j in lab.jobs(state=JobStatus.RUNNING.value)}

    wait_for(lambda: len(holders()) == 3, "each worker to hold a job", timeout=90)
    gate.touch()
    for proc in workers:
        assert proc.wait(180) == 0
    assert {j.id: (j.state, j.attempts) for j in lab.jobs()} == {i: ("success", 1) for i in ids}
    assert [runs(trace, i, "start") for i in ids] == [1] * 240, "a job ran twice"
    logs = [p.read_text() for p in sorted(lab.root.glob("process-*.log"))]
    counts = [ran(text) for text in logs]
    assert sum(counts) == 240 and all(counts), counts


def test_a_second_worker_runs_what_the_first_claimed_but_did_not_start(
    lab: Lab, reaper: Any
) -> None:
    """Worker A (one thread) drains short jobs, so it claims ahead; then its thread is
    held by a long job with short ones claimed behind it. They go back to the queue and a
    second worker runs them while the long job still runs."""
    gate = lab.root / "gate"
    trace = lab.trace_dir
    lab.configure(
        processors={
            "short": python_processor("Noop", trace_dir=str(trace)),
            "long": python_processor("WaitForFile", gate=str(gate), trace_dir=str(trace)),
        }
    )
    make_datasets(lab, 206)
    lab.run("reprocess", "/src", "--processor", "short")
    shorts = [j.id for j in lab.jobs()]
    # Queue order (priority, id): 200 short jobs, the long one, then 5 short ones.
    for job_id in shorts[:200]:
        lab.set_job(job_id, priority=10)
    lab.set_job(shorts[200], processor="long", priority=20)
    behind = shorts[201:]
    for job_id in behind:
        lab.set_job(job_id, priority=30)

    first = reaper(lab.popen("worker", "--concurrency", "1"))
    lab.wait_job(shorts[200], lambda j: j.state == "running", timeout=90, what="the long job")
    wait_for(lambda: runs(trace, shorts[200], "start") == 1, "the long job to start", timeout=90)
    second = lab.worker("--concurrency", "1", timeout=60)
    assert lab.job(shorts[200]).state == "running", "the long job is still running"
    done = {j.id: j for j in lab.jobs()}
    # Every job but the long one ended, none waiting behind it: the 5 queued after it and,
    # on a machine so loaded that A gave back short jobs it claimed before the long one,
    # those too (never run twice: checked below).
    assert all(j.state == "success" for i, j in done.items() if i != shorts[200])
    assert all(done[i].attempts == 1 for i in behind)
    [helper] = {done[i].worker for i in behind}
    assert helper != done[shorts[200]].worker
    ran = sum(j.worker == helper for j in done.values())
    assert ran >= 5
    assert second.stdout.strip() == f"worker ran {ran} job(s): {ran} success"
    gate.touch()
    lab.wait_job(shorts[200], lambda j: j.state == "success", what="success")
    stop(first)
    assert all(runs(trace, i, "run") == 1 for i in shorts[:200] + behind)


def test_a_shallow_queue_is_not_claimed_ahead(lab: Lab, reaper: Any) -> None:
    """Two long jobs and a worker with one thread: it claims one, not both; a second
    worker takes the other at once."""
    gate = lab.root / "gate"
    lab.configure(processors={"long": python_processor("WaitForFile", gate=str(gate))})
    make_datasets(lab, 2)
    lab.run("reprocess", "/src", "--processor", "long")
    a, b = (j.id for j in lab.jobs())
    first = reaper(lab.popen("worker", "--concurrency", "1"))
    lab.wait_job(a, lambda j: j.state == "running", timeout=60, what="running")
    assert lab.job(b).state == "queued"
    second = reaper(lab.popen("worker", "--concurrency", "1"))
    held = lab.wait_job(b, lambda j: j.state == "running", timeout=60, what="running")
    assert held.worker != lab.job(a).worker
    gate.touch()
    for job_id in (a, b):
        lab.wait_job(job_id, lambda j: j.state == "success", what="success")
    stop(first)
    stop(second)


def test_a_worker_killed_mid_batch_loses_nothing(lab: Lab, reaper: Any) -> None:
    """SIGKILL while jobs are claimed, running and finished but not yet recorded: every
    job the dead worker still held is taken back and run once more; every other job ran
    once; all end in success."""
    trace = lab.trace_dir
    lab.configure(
        processors={"short": python_processor("Sleep", seconds=0.01, trace_dir=str(trace))}
    )
    make_datasets(lab, 300)
    lab.run("reprocess", "/src", "--processor", "short")
    ids = [j.id for j in lab.jobs()]

    victim = reaper(lab.popen("worker", "--concurrency", "2"))
    wait_for(lambda: len(lab.jobs(state="success")) >= 40, "some jobs to succeed", timeout=90)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    held = {j.id for j in lab.jobs(state="running")}
    assert held, "the worker held no job when it was killed"
    recorded = {j.id for j in lab.jobs(state="success")}

    out = lab.worker(timeout=120)
    assert out.stdout.strip() == f"worker ran {300 - len(recorded)} job(s): " + (
        f"{300 - len(recorded)} success"
    )
    jobs = {j.id: j for j in lab.jobs()}
    assert all(j.state == "success" for j in jobs.values())
    for job_id in ids:
        starts = runs(trace, job_id, "start")
        if job_id in held:
            assert jobs[job_id].attempts == 2, jobs[job_id]
            assert 1 <= starts <= 2, (job_id, starts)  # 2: it had run, unrecorded
        else:
            assert jobs[job_id].attempts == 1
            assert starts == 1, (job_id, starts)


def ready_notes(lab: Lab) -> list[Any]:
    from sqlalchemy import select

    from mediamirror.notify.model import NOTIFICATIONS

    query = select(NOTIFICATIONS).where(NOTIFICATIONS.c.kind == "dataset.ready")
    with lab.catalog.read() as conn:
        return list(conn.execute(query.order_by(NOTIFICATIONS.c.id)).all())


def test_a_batch_gives_the_catalog_one_by_one_recording_gives(lab: Lab) -> None:
    """Two processors' jobs on one dataset, recorded in one batch: both results are
    merged into its metadata, both jobs end, and the dataset is made ready once, by the
    later job (when the first ended, the second was still running); a job the worker no
    longer holds is not ended by it."""
    from mediamirror.jobs import queue
    from mediamirror.jobs.completions import Success, record_successes
    from mediamirror.processing.processors import registry

    lab.configure(
        processors={
            "first": python_processor("Noop", applies_to=["video"]),
            "second": python_processor("Noop", applies_to=["video"]),
            "third": python_processor("Noop", applies_to=["video"]),
        }
    )
    make_datasets(lab, 2)
    for name in ("first", "second"):
        lab.run("reprocess", "/src/v0/Video clip0000.mp4", "--processor", name)
    lab.run("reprocess", "/src/v0/Video clip0001.mp4", "--processor", "third")
    lab.set_meta("/src/v0/Video clip0000.mp4", MarkForPostProcess=False)
    services = lab.services()
    procs = registry(services.settings)
    jobs = queue.claim(lab.catalog, "host:1:w", 10, 60)
    assert [j.processor for j in jobs] == ["first", "second", "third"]
    lost = jobs[2]
    lab.set_job(lost.id, worker="host:2:other")  # its lease went to another worker
    batch = [
        Success(procs[j.processor], j, {j.processor: {"job": j.id}}, f"log {j.id}") for j in jobs
    ]

    ended, left = record_successes(lab.catalog, "host:1:w", batch)

    assert ended == {jobs[0].id, jobs[1].id} and left == []
    rows = {j.id: j for j in lab.jobs()}
    for job in jobs[:2]:
        row = rows[job.id]
        assert (row.state, row.active_key, row.log_tail, row.progress) == (
            "success",
            None,
            f"log {job.id}",
            100.0,
        )
    assert (rows[lost.id].state, rows[lost.id].worker) == ("running", "host:2:other")
    meta = lab.dataset("/src/v0/Video clip0000.mp4").meta
    assert meta["first"] == {"job": jobs[0].id} and meta["second"] == {"job": jobs[1].id}
    assert {p: s["state"] for p, s in meta["processing"].items()} == {
        "first": "success",
        "second": "success",
    }
    assert [n.job_id for n in ready_notes(lab)] == [jobs[1].id]
