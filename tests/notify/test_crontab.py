"""Crontab mode (``sync --process``, ``--all``, ``watch``), ``source add --schedule`` and
schedules that catch up once after the service was down.

Everything goes through the real CLI (a subprocess on the installed entry point) or, for
the scheduler, through the real ``Scheduler`` on a real catalog. Jobs run test-only
processors from :mod:`jobs.fixtures`, configured as the ``video`` processor.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from helpers import Cli, assert_one_error_line, sync_runs
from jobs.conftest import Lab
from jobs.fixtures import python_processor
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import LEASES, SOURCES, SYNC_RUNS
from mediamirror.scheduler import Scheduler, previous_slot
from mediamirror.sources import get_source

pytestmark = pytest.mark.timeout(120)

DEADLINE = 60.0


def wait_for(predicate: Callable[[], Any], what: str) -> Any:
    end = time.monotonic() + DEADLINE
    while not (value := predicate()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def as_video(lab: Lab, cls: str, **conf: Any) -> None:
    """Run the test processor ``cls`` as the (automatic) video processor."""
    lab.configure(
        processors={"video": python_processor(cls, auto=True, applies_to=["video"], **conf)}
    )


def add_videos(lab: Lab, name: str, *keys: str) -> Path:
    """A local source ``name`` holding tiny "videos" (test processors never read them)."""
    root = lab.root / f"media-{name}"
    for key in keys:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"x")
    lab.run("source", "add", name, f"file://{root}", "--mount", f"/{name}")
    return root


def process_log(lab: Lab, n: int) -> str:
    return (lab.root / f"process-{n}.log").read_text()


# -- sync --process ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_process_syncs_runs_its_jobs_and_exits_0(lab: Lab) -> None:
    as_video(lab, "Noop")
    add_videos(lab, "cam", "a.mp4", "day1/b.mp4")
    add_videos(lab, "other", "c.mp4")
    lab.run("sync", "other")  # no automatic post-processing in the test CLI: nothing queued
    lab.run("postprocess", "/other", "-r")
    [other_job] = lab.jobs()

    out = lab.run("sync", "cam", "--process")
    lines = out.stdout.splitlines()
    assert lines[0].startswith("cam: 2 added, 0 changed, 0 deleted"), out
    assert lines[1] == "cam: queued 2 job(s) for 2 dataset(s)", out
    assert "jobs: 2 succeeded, 0 failed" in lines, out
    jobs = {j.target_id: j for j in lab.jobs()}
    cam = [lab.dataset("/cam/Video a.mp4"), lab.dataset("/cam/day1/Video b.mp4")]
    assert [jobs[d.id].state for d in cam] == ["success", "success"]
    assert lab.dataset("/cam/Video a.mp4").meta["noop"]["job"] == jobs[cam[0].id].id
    # Only the run's own sources' jobs: another source's queue is left to its own runs.
    assert lab.job(other_job.id).state == "queued"
    # Nothing held after the run: the next cron run goes ahead.
    with lab.catalog.read() as conn:
        assert conn.execute(select(LEASES)).all() == []


def test_process_runs_jobs_queued_before_for_its_source(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    as_video(lab, "Noop")
    add_videos(lab, "cam", "a.mp4")
    lab.run("sync", "cam")
    lab.run("postprocess", "/cam", "-r")
    [job] = lab.jobs()
    out = lab.run("sync", "cam", "--process")
    assert "jobs: 1 succeeded, 0 failed" in out.stdout.splitlines(), out
    assert lab.job(job.id).state == "success"


def test_process_with_celery_and_no_live_worker_leaves_the_jobs_queued(sqlite_lab: Lab) -> None:
    """With the celery executor `sync --process` runs no job itself: with no live worker
    for a lease time it says how many jobs wait for the workers and exits 1."""
    lab = sqlite_lab
    as_video(lab, "Noop")
    add_videos(lab, "cam", "a.mp4", "b.mp4")
    env = {
        "MEDIAMIRROR_EXECUTOR": "celery",
        "MEDIAMIRROR_BROKER_URL": "redis://127.0.0.1:1/0",  # never reached: no worker
        "MEDIAMIRROR_JOB_LEASE_SECONDS": "5",
    }
    out = lab.run("sync", "cam", "--process", ok=False, **env)
    assert out.returncode == 1, out
    assert "jobs: 0 succeeded, 0 failed, 2 left queued (no live Celery worker)" in (
        out.stdout.splitlines()
    ), out
    assert sorted(j.state for j in lab.jobs()) == ["queued", "queued"]


def test_failing_job_exits_1_with_its_reason(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    as_video(lab, "AlwaysFail")
    add_videos(lab, "cam", "a.mp4")
    out = lab.run("sync", "cam", "--process", ok=False)
    assert out.returncode == 1, out
    [job] = lab.jobs()
    assert job.state == "error"
    lines = out.stdout.splitlines()
    assert "jobs: 0 succeeded, 1 failed" in lines, out
    assert (
        f"  job {job.id} error (video on /cam/Video a.mp4): bad input: nothing to process" in lines
    ), out
    assert "second line" not in out.stdout
    assert "Traceback" not in out.stderr


def test_failing_sync_exits_1(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    as_video(lab, "Noop")
    root = add_videos(lab, "cam", "a.mp4")
    (root / "a.mp4").unlink()
    root.rmdir()
    out = lab.run("sync", "cam", "--process", ok=False)
    assert out.returncode == 1 and "cam: sync failed: " in out.stdout, out
    assert "Traceback" not in out.stderr


def test_unknown_source_fails_in_one_line_and_holds_nothing(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    add_videos(lab, "cam", "a.mp4")
    out = lab.run("sync", "cam", "nosuch", "--process", ok=None)
    assert_one_error_line(out, "no source named 'nosuch'")
    assert sync_runs(lab.catalog) == []
    with lab.catalog.read() as conn:
        assert conn.execute(select(LEASES)).all() == []


def test_all_processes_every_source(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    as_video(lab, "Noop")
    add_videos(lab, "cam", "a.mp4")
    add_videos(lab, "drone", "b.mp4", "c.mp4")
    out = lab.run("sync", "--all", "--process")
    assert out.stdout.splitlines()[0].startswith("cam: 1 added"), out
    assert "drone: queued 2 job(s) for 2 dataset(s)" in out.stdout, out
    assert "jobs: 3 succeeded, 0 failed" in out.stdout, out
    assert {j.state for j in lab.jobs()} == {"success"} and len(lab.jobs()) == 3
    usage = lab.run("sync", "--process", ok=False)
    assert usage.returncode == 2 and "--all" in usage.stderr


def test_second_copy_exits_0_at_once_while_the_first_runs(sqlite_lab: Lab, started: Any) -> None:
    lab = sqlite_lab
    gate = lab.root / "gate"
    as_video(lab, "WaitForFile", gate=str(gate))
    add_videos(lab, "cam", "a.mp4")
    first = started(lab.popen("sync", "cam", "--process"))
    wait_for(lambda: [j for j in lab.jobs() if j.state == "running"], "the first copy's job")

    second = lab.run("sync", "cam", "--process")
    assert second.stdout.splitlines() == [
        f"sync of cam already running in pid {first.pid}; nothing to do"
    ], second
    assert second.stderr == ""
    assert len(sync_runs(lab.catalog)) == 1  # the second copy did not sync

    gate.touch()
    assert first.wait(DEADLINE) == 0, process_log(lab, 1)
    assert "jobs: 1 succeeded, 0 failed" in process_log(lab, 1)


def test_killed_copy_gives_its_lock_up(sqlite_lab: Lab, started: Any) -> None:
    lab = sqlite_lab
    gate = lab.root / "gate"
    as_video(lab, "WaitForFile", gate=str(gate))
    add_videos(lab, "cam", "a.mp4")
    first = started(lab.popen("sync", "cam", "--process"))
    [job] = wait_for(lambda: [j for j in lab.jobs() if j.state == "running"], "a running job")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    with lab.catalog.read() as conn:
        assert conn.execute(select(LEASES.c.name)).scalars().all() == ["process:1"]

    # The holder's process is gone: the next run takes the source over at once (long
    # before the lease expires), and the dead run's job with it.
    gate.touch()
    out = lab.run("sync", "cam", "--process")
    assert "jobs: 1 succeeded, 0 failed" in out.stdout.splitlines(), out
    done = lab.job(job.id)
    assert (done.state, done.attempts) == ("success", 2)


def test_ctrl_c_hands_the_job_back_and_frees_the_source(sqlite_lab: Lab, started: Any) -> None:
    lab = sqlite_lab
    gate = lab.root / "gate"
    as_video(lab, "WaitForFile", gate=str(gate))
    add_videos(lab, "cam", "a.mp4")
    first = started(lab.popen("sync", "cam", "--process"))
    [job] = wait_for(lambda: [j for j in lab.jobs() if j.state == "running"], "a running job")
    first.send_signal(signal.SIGINT)
    assert first.wait(DEADLINE) == 130, process_log(lab, 1)
    assert process_log(lab, 1).splitlines()[-1] == "error: interrupted"
    assert lab.job(job.id).state == "queued"
    with lab.catalog.read() as conn:
        assert conn.execute(select(LEASES)).all() == []


# -- watch -------------------------------------------------------------------------------------


def test_watch_runs_rounds_until_sigint(sqlite_lab: Lab, started: Any) -> None:
    lab = sqlite_lab
    as_video(lab, "Noop")
    root = add_videos(lab, "cam", "a.mp4")
    proc = started(lab.popen("watch", "--interval", "0.2"))
    wait_for(lambda: "round 1: " in process_log(lab, 1), "round 1")
    (root / "b.mp4").write_bytes(b"y")  # new between rounds: picked up by a later round
    wait_for(lambda: lab.datasets().get("/cam/Video b.mp4"), "the new video")
    wait_for(lambda: [j for j in lab.jobs() if j.state == "success"][1:], "the second video's job")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(DEADLINE) == 0, process_log(lab, 1)
    lines = process_log(lab, 1).splitlines()
    rounds = [line for line in lines if line.startswith("round ")]
    assert len(rounds) >= 2, lines
    assert rounds[0] == "round 1: cam synced; jobs 1 succeeded, 0 failed", lines
    assert lines[-1] == f"watch stopped after {len(rounds)} round(s)", lines


# -- notifications -----------------------------------------------------------------------------


def test_process_delivers_the_notifications(sqlite_lab: Lab, smtp_server: Any) -> None:
    lab = sqlite_lab
    lab.configure(
        processors={
            "video": python_processor("Noop", auto=True, applies_to=["video"]),
        },
        email={
            "from_addr": "pipeline@example.org",
            "to_addrs": ["me@example.org"],
            "smtp_server": smtp_server.host,
            "smtp_port": smtp_server.port,
            "security": "none",
        },
    )
    add_videos(lab, "cam", "a.mp4")
    # Sent as soon as the run's jobs are done, not after the default quiet time.
    out = lab.run("sync", "cam", "--process", MEDIAMIRROR_NOTIFY_QUIET_SECONDS="0")
    assert "notifications: 1 sent, 0 failed, 0 waiting" in out.stdout.splitlines(), out
    [message] = smtp_server.wait_for(1)
    assert message.subject == "[mediamirror] ready: /cam/Video a.mp4"
    # The next cron run has nothing new: nothing is sent twice.
    again = lab.run("sync", "cam", "--process", MEDIAMIRROR_NOTIFY_QUIET_SECONDS="0")
    assert not [line for line in again.stdout.splitlines() if "notifications" in line], again
    assert len(smtp_server.messages) == 1


# -- schedules ---------------------------------------------------------------------------------


def test_source_add_with_schedule(sqlite_cli: Cli, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    out = sqlite_cli.run("source", "add", "cam", f"file://{media}", "--schedule", " 0 3 * * * ")
    assert out.stdout.strip().endswith("(synced on '0 3 * * *')"), out
    catalog = Catalog(sqlite_cli.database_url)
    assert get_source(catalog, "cam").options == {"schedule": "0 3 * * *"}
    catalog.close()


def test_source_add_refuses_a_bad_schedule(sqlite_cli: Cli, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    bad = sqlite_cli.run("source", "add", "cam", f"file://{media}", "--schedule", "hourly", ok=None)
    assert_one_error_line(bad, "'hourly' is not a valid cron expression")
    listing = sqlite_cli.run("source", "list")
    assert "no sources yet" in listing.stdout  # nothing half-added


def _scheduler(cli: Cli, started: datetime) -> Scheduler:
    from mediamirror.config import load_settings
    from mediamirror.services import Services

    env = cli.environ()
    scheduler = Scheduler(Services(Catalog(cli.database_url), load_settings(env=env), env))
    scheduler.started = started
    return scheduler


def _age(catalog: Catalog, days: float) -> None:
    """Pretend every source was added, and last synced, ``days`` ago."""
    then = datetime.now(UTC) - timedelta(days=days)
    with catalog.write() as conn:
        conn.execute(update(SOURCES).values(created_at=then))
        conn.execute(update(SYNC_RUNS).values(started_at=then, finished_at=then))


def test_a_slot_missed_while_down_is_caught_up_exactly_once(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "clip.mp4").write_bytes(b"x")
    sqlite_cli.run("source", "add", "cam", f"file://{media}", "--schedule", "0 * * * *")
    sqlite_cli.run("sync", "cam")
    catalog = Catalog(sqlite_cli.database_url)
    _age(catalog, 2)  # last synced two days ago: 48 hourly slots missed while down
    scheduler = _scheduler(sqlite_cli, datetime.now(UTC))  # the service starts now

    assert scheduler.tick() == ["cam"]
    assert scheduler.tick() == []
    assert scheduler.tick() == []
    runs = sync_runs(catalog)
    assert [r.state for r in runs] == ["success", "success"]
    catalog.close()


def test_never_synced_source_added_while_down_is_synced_once(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    sqlite_cli.run("source", "add", "cam", f"file://{media}", "--schedule", "*/5 * * * *")
    catalog = Catalog(sqlite_cli.database_url)
    _age(catalog, 1)
    scheduler = _scheduler(sqlite_cli, datetime.now(UTC))
    assert scheduler.tick() == ["cam"]
    assert scheduler.tick() == []
    assert len(sync_runs(catalog)) == 1
    catalog.close()


def test_a_sync_since_the_last_slot_counts(sqlite_cli: Cli, tmp_path: Path) -> None:
    """A crontab `sync --process` (or any sync) after the latest slot: nothing to catch up."""
    media = tmp_path / "media"
    media.mkdir()
    sqlite_cli.run("source", "add", "cam", f"file://{media}", "--schedule", "0 3 * * *")
    sqlite_cli.run("sync", "cam")
    catalog = Catalog(sqlite_cli.database_url)
    _age(catalog, 2)
    with catalog.write() as conn:
        slot = previous_slot("0 3 * * *", datetime.now(UTC))
        conn.execute(update(SYNC_RUNS).values(started_at=slot + timedelta(minutes=1)))
    scheduler = _scheduler(sqlite_cli, datetime.now(UTC))
    assert scheduler.due_sources(datetime.now(UTC)) == []
    catalog.close()


def test_previous_slot() -> None:
    now = datetime(2026, 1, 1, 10, 7, tzinfo=UTC)
    assert previous_slot("*/15 * * * *", now) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    on_slot = datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert previous_slot("*/15 * * * *", on_slot) == on_slot
