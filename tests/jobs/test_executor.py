"""The local executor: bounded concurrency, retries with backoff, timeouts, cancellation of
a real ffmpeg, and ``worker --burst``.

Jobs run test-only processors from :mod:`jobs.fixtures` (loaded through config.yaml like
any user processor), the built-in video processor, or a configured command processor.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from mediamirror.jobs.executors.local import LocalExecutor
from mediamirror.postprocess import reprocess

from .conftest import Lab, MediaKit
from .fixtures import TRACKER, python_processor, read_trace

pytestmark = pytest.mark.timeout(120)


def videos(lab: Lab, count: int) -> list[str]:
    """``count`` video datasets (their bytes do not matter to test processors)."""
    for n in range(count):
        lab.put(f"v/clip{n}.mp4", b"x" * (n + 1))
    lab.add_local_source()
    lab.sync()
    return [f"/src/v/Video clip{n}.mp4" for n in range(count)]


@pytest.mark.postgres
def test_runs_as_many_jobs_at_once_as_its_concurrency(lab: Lab) -> None:
    lab.configure(processors={"sleep": python_processor("Sleep", seconds=0.8)})
    videos(lab, 7)
    services = lab.services()
    assert len(reprocess(services, "/src", processor="sleep").queued) == 7
    TRACKER.reset()
    stats = LocalExecutor(services, 3, poll_interval=0.05).run(burst=True)
    assert stats.line() == "worker ran 7 job(s): 7 success"
    assert TRACKER.max_running == 3
    assert len(TRACKER.finished) == 7
    assert {j.state for j in lab.jobs()} == {"success"}


def test_transient_failure_is_retried_with_backoff_then_succeeds(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    lab.configure(
        processors={"flaky": python_processor("FlakyThenOk", trace_dir=str(lab.trace_dir))}
    )
    [path] = videos(lab, 1)
    lab.run("reprocess", "/src", "--processor", "flaky")
    out = lab.worker(MEDIAMIRROR_JOB_RETRY_INTERVALS="0.3,0.6")
    assert out.stdout.strip() == "worker ran 3 job(s): 2 queued, 1 success"
    [job] = lab.jobs()
    assert (job.state, job.attempts, job.error) == ("success", 3, None)
    times = [e["t"] for e in read_trace(lab.trace_dir, job.id)]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.3 and times[2] - times[1] >= 0.6, times
    meta = dict(lab.dataset(path).meta)
    assert meta["flaky"] == {"attempts": 3}
    assert meta["processing"]["flaky"]["state"] == "success"


def test_gives_up_at_max_attempts(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    lab.configure(
        processors={"hiccup": python_processor("AlwaysTransient", trace_dir=str(lab.trace_dir))}
    )
    [path] = videos(lab, 1)
    lab.run("reprocess", "/src", "--processor", "hiccup")
    lab.worker(MEDIAMIRROR_JOB_RETRY_INTERVALS="0.1,0.1")
    [job] = lab.jobs()
    assert job.state == "error"
    assert job.error == "storage hiccup (gave up after 3 attempts)"
    assert job.attempts == 3 and len(read_trace(lab.trace_dir, job.id)) == 3
    status = dict(lab.dataset(path).meta)["processing"]["hiccup"]
    assert (status["state"], status["error"]) == ("error", "storage hiccup")


def test_a_crashing_processor_does_not_stop_the_worker(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    lab.configure(
        processors={
            "crash": python_processor("Crash", applies_to=["video"]),
            "noop": python_processor("Noop", applies_to=["video"]),
        }
    )
    videos(lab, 2)
    lab.run("reprocess", "/src", "--processor", "crash", "--limit", "1")
    lab.run("reprocess", "/src", "--processor", "noop")
    out = lab.worker("--concurrency", "1")
    assert out.stdout.strip() == "worker ran 3 job(s): 1 error, 2 success"
    [crashed] = lab.jobs(processor="crash")
    assert crashed.error == "internal error: division by zero in a user processor"
    assert "ZeroDivisionError" in crashed.log_tail


def test_a_job_whose_end_cannot_be_recorded_does_not_stop_the_others(sqlite_lab: Lab) -> None:
    """An error escaping the job runner ends that job only: the other running job is not
    handed back, and the worker goes on."""
    lab = sqlite_lab
    gate = lab.root / "gate"
    trace = str(lab.trace_dir)
    lab.configure(
        processors={
            "gated": python_processor("WaitForFile", gate=str(gate), trace_dir=trace),
            "unprintable": python_processor("FailUnprintably", trace_dir=trace),
        }
    )
    videos(lab, 1)
    lab.run("reprocess", "/src", "--processor", "gated")
    lab.run("reprocess", "/src", "--processor", "unprintable")
    [gated] = lab.jobs(processor="gated")
    [broken] = lab.jobs(processor="unprintable")

    def open_gate_once_broken_ended() -> None:
        lab.wait_job(broken.id, lambda j: j.state != "queued" and j.state != "running")
        gate.touch()

    opener = threading.Thread(target=open_gate_once_broken_ended)
    opener.start()
    try:
        stats = LocalExecutor(lab.services(), 2, poll_interval=0.05).run(burst=True)
    finally:
        gate.touch()
        opener.join()

    assert stats.line() == "worker ran 2 job(s): 1 error, 1 success"
    ended = lab.job(broken.id)
    assert (ended.state, ended.error) == (
        "error",
        "internal error: ValueError while recording the outcome",
    )
    done = lab.job(gated.id)
    assert (done.state, done.attempts) == ("success", 1)
    assert [e["event"] for e in read_trace(lab.trace_dir, gated.id)] == ["start"]


def test_a_second_ctrl_c_stops_the_worker_at_once(sqlite_lab: Lab, reaper: object) -> None:
    """The first Ctrl-C waits for running jobs to hand back; a job stuck where it cannot
    see that would hold the worker, so a second Ctrl-C exits at once."""
    lab = sqlite_lab
    lab.configure(processors={"stuck": python_processor("Stuck")})
    videos(lab, 1)
    lab.run("reprocess", "/src", "--processor", "stuck")
    [job] = lab.jobs()
    worker = reaper(lab.popen("worker", "--concurrency", "1"))  # type: ignore[operator]
    lab.wait_job(job.id, lambda j: j.state == "running" and j.progress >= 10, what="running")

    worker.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(1)  # waiting for the stuck job, which sleeps for two minutes
    worker.send_signal(signal.SIGINT)
    assert worker.wait(15) == 130
    output = (lab.root / "process-1.log").read_text()
    assert "error: interrupted again: exiting at once" in output


def sleeper_script(tmp: Path) -> Path:
    """A long command that records its PID (so the test can check it was stopped)."""
    script = tmp / "long.py"
    script.write_text(
        "import os, sys, time\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    return script


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_job_timeout_stops_a_long_command(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    pid_file = lab.root / "pid"
    script = sleeper_script(lab.root)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {pid_file}"
    lab.configure(processors={"long": {"command": command, "auto": False}})
    videos(lab, 1)
    # max attempts is fixed when a job is queued, the timeout when it runs
    lab.run("reprocess", "/src", "--processor", "long", MEDIAMIRROR_JOB_MAX_ATTEMPTS="1")
    started = time.monotonic()
    lab.worker(MEDIAMIRROR_JOB_TIMEOUT="1")
    assert time.monotonic() - started < 30, "the 60 s command was not stopped"
    [job] = lab.jobs()
    assert job.state == "error"
    assert job.error == "timed out after 1 s (gave up after 1 attempts)"
    assert "started" in job.log_tail
    assert not psutil.pid_exists(int(pid_file.read_text())), "the command was left running"


def test_timeout_configured_on_a_processor(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    pid_file = lab.root / "pid"
    script = sleeper_script(lab.root)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {pid_file}"
    lab.configure(processors={"long": {"command": command, "auto": False, "timeout": 1}})
    videos(lab, 1)
    lab.run("reprocess", "/src", "--processor", "long", MEDIAMIRROR_JOB_MAX_ATTEMPTS="1")
    started = time.monotonic()
    lab.worker()  # the job_timeout setting stays at its default, 3600 s
    assert time.monotonic() - started < 30, "the 60 s command was not stopped"
    [job] = lab.jobs()
    assert job.error == "timed out after 1 s (gave up after 1 attempts)"


def test_timeout_stops_an_in_process_job(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    lab.configure(processors={"forever": python_processor("SleepUntilCanceled")})
    videos(lab, 1)
    services = lab.services(MEDIAMIRROR_JOB_TIMEOUT="1", MEDIAMIRROR_JOB_RETRY_INTERVALS="0.1")
    reprocess(services, "/src", processor="forever")
    started = time.monotonic()
    stats = LocalExecutor(services, 2, poll_interval=0.05).run(burst=True)
    assert stats.line() == "worker ran 3 job(s): 1 error, 2 queued"
    assert 3 <= time.monotonic() - started < 20
    [job] = lab.jobs()
    assert job.error == "timed out after 1 s (gave up after 3 attempts)"


def ffmpeg_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "ffmpeg" in child.name() or "ffmpeg" in " ".join(child.cmdline()[:1]):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.timeout(90)
def test_cancel_stops_a_running_ffmpeg(sqlite_lab: Lab, media: MediaKit, reaper: object) -> None:
    lab = sqlite_lab
    lab.put("slow/clip.avi", media["slow-source"])
    lab.add_local_source()
    lab.sync()
    lab.run("postprocess", "/src", "-r")
    [job] = lab.jobs()
    worker = reaper(lab.popen("worker", MEDIAMIRROR_TRANSCODE_PRESET="veryslow"))  # type: ignore[operator]
    lab.wait_job(job.id, lambda j: j.state == "running" and j.progress > 2, what="transcoding")
    wait_for(lambda: ffmpeg_children(worker.pid), 10, "ffmpeg to start")
    [ffmpeg] = ffmpeg_children(worker.pid)

    assert lab.run("jobs", "cancel", str(job.id)).stdout.strip() == (
        f"job {job.id}: cancel requested"
    )
    asked = time.monotonic()
    ended = lab.wait_job(job.id, lambda j: j.state != "running", timeout=20, what="an end")
    stopped_in = time.monotonic() - asked
    assert (ended.state, ended.error) == ("canceled", "canceled")
    assert stopped_in < 8, f"cancel took {stopped_in:.1f} s"
    wait_for(lambda: not ffmpeg.is_running() or ffmpeg.status() == "zombie", 5, "ffmpeg to end")
    assert worker.poll() is None, "the worker itself keeps running"
    status = dict(lab.dataset("/src/slow/Video clip.avi").meta).get("processing", {})
    assert status.get("video", {}).get("state") != "success"
    assert not [p for p in lab.output_files() if p.endswith(".mp4")]

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_worker_burst_drains_the_queue_and_exits(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    lab.configure(processors={"noop": python_processor("Noop", write=True)})
    videos(lab, 5)
    lab.run("reprocess", "/src", "--processor", "noop")
    out = lab.worker()
    assert out.stdout.strip() == "worker ran 5 job(s): 5 success"
    assert {j.state for j in lab.jobs()} == {"success"}
    assert len([p for p in lab.output_files() if "/noop/" in p]) == 5
    assert lab.worker().stdout.strip() == "worker ran 0 job(s)"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_a_worker_gives_its_running_jobs_back(
    sqlite_lab: Lab, reaper: object, sig: signal.Signals
) -> None:
    """A worker stopped on purpose (a deploy, Ctrl-C) must not cancel the jobs it was
    running: they go back to the queue, untouched, for the next worker."""
    lab = sqlite_lab
    gate = lab.root / "gate"
    lab.configure(processors={"gated": python_processor("WaitForFile", gate=str(gate))})
    videos(lab, 2)
    lab.run("reprocess", "/src", "--processor", "gated")
    worker = reaper(lab.popen("worker", "--concurrency", "1"))  # type: ignore[operator]
    first, second = (j.id for j in lab.jobs())
    lab.wait_job(first, lambda j: j.state == "running" and j.progress >= 10, what="running")
    worker.send_signal(sig)
    assert worker.wait(15) == (0 if sig == signal.SIGTERM else 130)
    for job_id in (first, second):
        job = lab.job(job_id)
        assert (job.state, job.attempts, job.worker, job.error) == ("queued", 0, None, None)
    gate.touch()
    assert lab.worker().stdout.strip() == "worker ran 2 job(s): 2 success"
    assert [j.attempts for j in lab.jobs()] == [1, 1]
