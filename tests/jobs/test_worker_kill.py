"""A worker killed with SIGKILL in the middle of a real transcode loses nothing: its job is
taken back (at once when the dead process was on this host, after the lease otherwise),
retried, and ends in success, and no half-written file ever shows in the output store."""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import psutil
import pytest

from mediamirror.catalog.models import utcnow
from mediamirror.jobs import queue
from mediamirror.processing.children import spawn, stop_group

from .conftest import Lab, MediaKit, assert_web_mp4
from .fixtures import python_processor

pytestmark = pytest.mark.timeout(120)

DATASET = "/src/slow/Video clip.avi"


def ffmpeg_running_under(pid: int) -> bool:
    try:
        return any("ffmpeg" in p.name() for p in psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return False


def test_killed_worker_job_is_retried_and_succeeds(
    sqlite_lab: Lab, media: MediaKit, reaper: Any
) -> None:
    lab = sqlite_lab
    lab.put("slow/clip.avi", media["slow-source"])
    lab.add_local_source()
    lab.sync()
    lab.run("postprocess", "/src", "-r")
    [job] = lab.jobs()

    worker = reaper(lab.popen("worker", MEDIAMIRROR_TRANSCODE_PRESET="veryslow"))
    running = lab.wait_job(job.id, lambda j: j.state == "running" and j.progress > 2)
    deadline = time.monotonic() + 10
    while not ffmpeg_running_under(worker.pid):
        assert time.monotonic() < deadline, "ffmpeg never started"
        time.sleep(0.05)
    time.sleep(0.5)  # let ffmpeg write part of its output
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    assert lab.job(job.id).state == "running", "nobody has noticed the crash yet"
    assert running.lease_expires_at > utcnow() + timedelta(seconds=10)

    # A new worker on this host sees that the holder's process is gone and takes the job
    # back at once: it finishes long before the dead worker's lease would have expired.
    out = lab.worker(MEDIAMIRROR_TRANSCODE_PRESET="ultrafast", timeout=90)
    assert out.stdout.strip() == "worker ran 1 job(s): 1 success"
    done = lab.job(job.id)
    assert (done.state, done.attempts, done.error) == ("success", 2, None)
    assert done.worker != running.worker
    assert utcnow() < running.lease_expires_at

    meta = dict(lab.dataset(DATASET).meta)
    assert meta["annotate"] is True and meta["transcode"]["action"] == "transcode"
    files = lab.output_files()
    assert not [f for f in files if f.endswith(".part") or "/." in f or f.startswith(".")], files
    assert sorted(files) == sorted(meta["outputs"].values())
    video = lab.outputs / meta["outputs"]["video"]
    assert assert_web_mp4(video)["frames"] == 500
    with av.open(str(video)) as container:
        assert container.duration is not None
        assert abs(container.duration / 1e6 - 20) < 0.5
    listed = sorted(lab.services().output_store().list(""))
    assert listed == sorted(meta["outputs"].values())


@pytest.mark.postgres
def test_job_of_a_lost_remote_worker_is_taken_back_when_its_lease_expires(lab: Lab) -> None:
    lab.configure(processors={"noop": python_processor("Noop", write=True)})
    for n in (1, 2):
        lab.put(f"v/clip{n}.mp4", b"x" * n)
    lab.add_local_source()
    lab.sync()
    lab.run("reprocess", "/src", "--processor", "noop")
    expired, alive = (j.id for j in lab.jobs())
    # Two jobs held by workers on another host (whose processes cannot be checked from
    # here): one stopped renewing its lease a minute ago, the other renewed it just now.
    lab.set_job(
        expired,
        state="running",
        worker="otherhost:123:abc",
        attempts=1,
        lease_expires_at=utcnow() - timedelta(minutes=1),
    )
    lab.set_job(
        alive,
        state="running",
        worker="otherhost:456:def",
        attempts=1,
        lease_expires_at=utcnow() + timedelta(minutes=10),
    )

    out = lab.worker()
    assert out.stdout.strip() == "worker ran 1 job(s): 1 success"
    taken = lab.job(expired)
    assert (taken.state, taken.attempts) == ("success", 2)
    assert taken.worker != "otherhost:123:abc"
    kept = lab.job(alive)
    assert (kept.state, kept.worker) == ("running", "otherhost:456:def")
    assert [f.rsplit("/", 1)[-1] for f in lab.output_files()] == [f"{expired}.txt"]


@pytest.mark.postgres
def test_reap_gives_up_on_a_job_that_used_its_attempts(lab: Lab) -> None:
    lab.configure(processors={"noop": python_processor("Noop")})
    lab.put("v/clip.mp4", b"x")
    lab.add_local_source()
    lab.sync()
    lab.run("reprocess", "/src", "--processor", "noop")
    [job] = lab.jobs()
    lab.set_job(
        job.id,
        state="running",
        worker="otherhost:123:abc",
        attempts=3,
        lease_expires_at=utcnow() - timedelta(seconds=1),
    )
    services = lab.services()
    assert queue.reap(lab.catalog, services.retry_policy) == 1
    ended = lab.job(job.id)
    assert ended.state == "error"
    assert ended.error == "worker otherhost:123:abc was lost (gave up after 3 attempts)"
    assert ended.active_key is None


# -- a command's own children end with it ------------------------------------------------


def spawning_command(lab: Lab) -> tuple[str, Path]:
    """A shell script that starts a background ``sleep`` (a grandchild of the worker),
    records its PID and waits: the shape of a script driving its own tools."""
    script = lab.root / "spawns.sh"
    pid_file = lab.root / "grandchild.pid"
    script.write_text('sleep 300 &\necho $! > "$1.tmp"\nmv "$1.tmp" "$1"\necho started\nwait\n')
    return f"sh {shlex.quote(str(script))} {shlex.quote(str(pid_file))}", pid_file


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["cancel", "timeout", "worker-killed"])
def test_a_commands_grandchildren_end_with_it(sqlite_lab: Lab, reaper: Any, how: str) -> None:
    lab = sqlite_lab
    command, pid_file = spawning_command(lab)
    conf: dict[str, Any] = {"command": command, "auto": False}
    if how == "timeout":
        conf["timeout"] = 1
    lab.configure(processors={"spawns": conf})
    lab.put("v/clip.mp4", b"x")
    lab.add_local_source()
    lab.sync()
    lab.run("reprocess", "/src", "--processor", "spawns", MEDIAMIRROR_JOB_MAX_ATTEMPTS="1")
    [job] = lab.jobs()

    worker = reaper(lab.popen("worker"))
    wait_until(pid_file.exists, "the grandchild to start")
    grandchild = int(pid_file.read_text())
    assert not gone(grandchild)
    if how == "cancel":
        lab.run("jobs", "cancel", str(job.id))
        lab.wait_job(job.id, lambda j: j.state == "canceled", what="canceled")
    elif how == "timeout":
        lab.wait_job(job.id, lambda j: j.state == "error", what="timed out")
        assert lab.job(job.id).error.startswith("timed out after 1 s")
    else:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)

    wait_until(lambda: gone(grandchild), "the grandchild to end")
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0


def test_a_child_started_from_a_short_lived_thread_outlives_the_thread() -> None:
    """The kernel's parent-death signal fires when the forking *thread* ends; a child of
    a job thread must live as long as the worker process, not that thread."""
    started: list[subprocess.Popen[Any]] = []
    thread = threading.Thread(target=lambda: started.append(spawn(["sleep", "60"])))
    thread.start()
    thread.join()
    [proc] = started
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1)  # still running after its thread ended
    finally:
        stop_group(proc, grace=5)
    assert proc.returncode == 128 + signal.SIGTERM  # stopped by us, through its group
