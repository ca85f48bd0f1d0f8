"""Transcode: mediamirror's video job against the identical ffmpeg command run directly.

A 1080p, 60-second clip (lavfi ``testsrc2`` at 30 fps + ``sine`` audio, MPEG-4 Part 2 in a
MOV with ``moov`` at the end) must be transcoded. The direct side runs the command that
:func:`mediamirror.processing.transcode.build_ffmpeg_command` makes from the same plan,
preset and CRF; the mediamirror side is a local-directory source, ``mediamirror sync`` (which
queues the video job) and a timed ``mediamirror worker --burst --concurrency 1`` (probe,
transcode, copy to the output store, poster). Runs are interleaved: direct, mediamirror,
direct (``--rounds`` repeats the mediamirror/direct pair); ratios compare medians.

    .venv/bin/python benchmarks/transcode_bench.py [--preset medium] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _bench_util import (
    MEDIAMIRROR,
    PYTHON,
    BenchResult,
    ChildRun,
    ffmpeg_exe,
    mm_env,
    run_child_rusage,
    run_timed,
    say,
    wait_quiet,
)

TARGET_RATIO = 1.05


# The worker in-process with timers around the video processor's steps: where the
# mediamirror side spends the time that the direct ffmpeg run does not.
BREAKDOWN_DRIVER = """\
import time
T0 = time.perf_counter()
import json, sys
import mediamirror.processing.processors.video as video
from mediamirror.cli import main
from mediamirror.jobs.executors import local
from mediamirror.stores.output import OutputStore

timings = {}

def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
    return wrapper

for name in ("probe", "transcode_video", "run_ffmpeg", "make_poster"):
    if hasattr(video, name):
        setattr(video, name, timed(name, getattr(video, name)))
OutputStore.put_file = timed("put_file", OutputStore.put_file)
local.run_claimed = timed("run_claimed", local.run_claimed)
timings["imports"] = time.perf_counter() - T0
sys.argv = ["mediamirror", "worker", "--burst", "--concurrency", "1"]
main()
timings["in_process"] = time.perf_counter() - T0
print("TIMINGS " + json.dumps(timings))
"""


def make_clip(path: Path, seconds: int) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}"]
    cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    # The MOV muxer writes moov after mdat unless told otherwise: not faststart.
    cmd += ["-c:v", "mpeg4", "-q:v", "3", "-c:a", "aac", "-b:a", "128k", str(path)]
    run_timed(cmd)


def direct_command(clip: Path, out: Path, preset: str, crf: int) -> tuple[list[str], str]:
    """The command mediamirror would run for ``clip``, and the plan's action."""
    from mediamirror.processing.probe import probe
    from mediamirror.processing.transcode import build_ffmpeg_command, plan_video

    info = probe(clip)
    plan = plan_video(info, -1, filename=clip.name)
    cmd = build_ffmpeg_command(str(clip), str(out), plan, ffmpeg_exe(), preset=preset, crf=crf)
    return cmd, f"{plan.action} ({'; '.join(plan.reasons)})"


def run_direct(cmd: list[str], out: Path) -> ChildRun:
    out.unlink(missing_ok=True)
    run = run_child_rusage(cmd)
    if not out.exists() or out.stat().st_size == 0:
        raise RuntimeError("direct ffmpeg wrote no output")
    out.unlink()
    return run


def job_times(env: dict[str, str], job_id: int) -> tuple[float, dict[str, object]]:
    from datetime import datetime

    shown = run_timed([MEDIAMIRROR, "jobs", "show", str(job_id), "--json"], env=env)
    info = json.loads(shown.stdout)
    start = datetime.fromisoformat(info["started_at"])
    end = datetime.fromisoformat(info["finished_at"])
    return (end - start).total_seconds(), info


def _check_job_command(job_log: str, direct: list[str], clip: Path, preset: str, crf: int) -> str:
    """What the job's log says about the ffmpeg command it ran, compared with ``direct``."""
    for line in job_log.splitlines():
        if line.startswith(direct[0]) and " -i " in line:  # the full command was logged
            ran = line.split()
            mine = ["<input>" if a == str(clip) else a for a in direct]
            same = ran[:-1] == mine[:-1]  # the output path is the job's own
            return "identical to the direct one (output path aside)" if same else "DIFFERENT"
        if line.startswith("ffmpeg: "):  # a summary line: "ffmpeg: transcode (medium, crf 22)"
            same = f"({preset}, crf {crf})" in line
            return f"{line!r}: " + ("same preset and crf" if same else "DIFFERENT settings")
    return "not in the job's log tail"


def run(
    work: Path,
    *,
    seconds: int = 60,
    preset: str = "medium",
    crf: int = 22,
    rounds: int = 1,
    quiet_wait: float = 240.0,
    profile: str = "auto",
) -> BenchResult:
    result = BenchResult("transcode")
    started = time.perf_counter()
    say(f"== transcode: 1080p {seconds} s clip, preset {preset}, crf {crf}")
    media = work / "transcode-media"
    home = work / "transcode-home"
    for d in (media, home):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    clip = media / "clip.mov"
    t = time.perf_counter()
    make_clip(clip, seconds)
    result.note(
        f"clip: {clip.stat().st_size / 1e6:.1f} MB mpeg4+aac MOV, made in "
        f"{time.perf_counter() - t:.1f} s"
    )
    out = work / "direct.mp4"
    cmd, action = direct_command(clip, out, preset, crf)
    result.note(f"plan: {action}")
    result.note("direct: " + shlex.join(cmd))
    env = mm_env(
        home, {"MEDIAMIRROR_TRANSCODE_PRESET": preset, "MEDIAMIRROR_TRANSCODE_CRF": str(crf)}
    )
    run_timed([MEDIAMIRROR, "source", "add", "clips", f"file://{media}"], env=env)
    synced = run_timed([MEDIAMIRROR, "sync", "clips", "--quiet"], env=env)
    result.note("sync: " + " / ".join(synced.stdout.split("\n")[:2]))
    result.commands += [
        f"ffmpeg -f lavfi -i testsrc2=size=1920x1080:rate=30:duration={seconds} -f lavfi "
        f"-i sine=frequency=440:sample_rate=48000:duration={seconds} -c:v mpeg4 -q:v 3 "
        "-c:a aac -b:a 128k clip.mov",
        f"MEDIAMIRROR_TRANSCODE_PRESET={preset} MEDIAMIRROR_TRANSCODE_CRF={crf} "
        "mediamirror source add clips file://<dir of clip.mov>",
        "mediamirror sync clips --quiet   # queues the video job",
        "mediamirror worker --burst --concurrency 1   # timed",
        "mediamirror jobs show <id> --json   # started_at / finished_at",
        "direct: " + shlex.join(cmd).replace(str(clip), "clip.mov").replace(str(out), "out.mp4"),
    ]

    directs: list[ChildRun] = []
    mms: list[ChildRun] = []
    spans: list[float] = []

    def direct_once() -> None:
        state = wait_quiet(quiet_wait)
        run = run_direct(cmd, out)
        directs.append(run)
        say(
            f"  direct #{len(directs)}: {run.seconds:.2f} s wall, "
            f"{run.user_seconds + run.system_seconds:.1f} s CPU ({state})"
        )

    def mediamirror_once() -> None:
        if mms:  # the job of the first sync has run: queue the same work again
            run_timed([MEDIAMIRROR, "reprocess", "/", "--processor", "video"], env=env)
        listed = json.loads(
            run_timed([MEDIAMIRROR, "jobs", "list", "--state", "queued", "--json"], env=env).stdout
        )
        if len(listed) != 1:
            raise RuntimeError(f"expected one queued video job, found {len(listed)}")
        job_id = int(listed[0]["id"])
        state = wait_quiet(quiet_wait)
        run = run_child_rusage([MEDIAMIRROR, "worker", "--burst", "--concurrency", "1"], env=env)
        span, info = job_times(env, job_id)
        if info["state"] != "success":
            raise RuntimeError(f"video job {job_id} ended {info['state']}: {info.get('error')}")
        mms.append(run)
        spans.append(span)
        say(
            f"  mediamirror #{len(mms)}: worker {run.seconds:.2f} s wall, job {span:.2f} s, "
            f"{run.user_seconds + run.system_seconds:.1f} s CPU ({state})"
        )
        if len(mms) == 1:
            log = run_timed([MEDIAMIRROR, "jobs", "log", str(job_id)], env=env).stdout
            result.note("job's ffmpeg command: " + _check_job_command(log, cmd, clip, preset, crf))

    direct_once()
    for _ in range(rounds):
        mediamirror_once()
        direct_once()

    def breakdown() -> None:
        """One more mediamirror run, in-process with step timers (see BREAKDOWN_DRIVER)."""
        run_timed([MEDIAMIRROR, "reprocess", "/", "--processor", "video"], env=env)
        driver = work / "transcode_breakdown.py"
        driver.write_text(BREAKDOWN_DRIVER)
        state = wait_quiet(quiet_wait)
        run = run_child_rusage([PYTHON, str(driver)], env=env)
        line = next(x for x in run.stdout.splitlines() if x.startswith("TIMINGS "))
        t = {k: float(v) for k, v in json.loads(line.removeprefix("TIMINGS ")).items()}
        ffmpeg_s = t.get("transcode_video", t.get("run_ffmpeg", 0.0))
        steps = ffmpeg_s + t.get("probe", 0) + t.get("make_poster", 0) + t.get("put_file", 0)
        parts = {
            "interpreter start-up (before the first import)": run.seconds - t["in_process"],
            "imports (mediamirror, av, ...)": t["imports"],
            "worker outside the job (catalog open, claim, polls, exit)": t["in_process"]
            - t["imports"]
            - t.get("run_claimed", 0.0),
            "probe (RangeFile over the local store)": t.get("probe", 0.0),
            "ffmpeg transcode (transcode_video)": ffmpeg_s,
            "copy to the output store (put_file)": t.get("put_file", 0.0),
            "poster (make_poster)": t.get("make_poster", 0.0),
            "job bookkeeping (load, progress, record, finish)": t.get("run_claimed", 0.0) - steps,
        }
        fixed = sum(v for k, v in parts.items() if not k.startswith("ffmpeg"))
        direct_median = statistics.median(r.seconds for r in directs)
        result.note(
            f"time outside ffmpeg in the breakdown run: {fixed:.2f} s, "
            f"{fixed / direct_median:.1%} of the direct median; ffmpeg inside the job took "
            f"{ffmpeg_s:.1f} s against direct runs of "
            + ", ".join(f"{r.seconds:.1f}" for r in directs)
            + " s"
        )
        result.raw["breakdown"] = {k: round(v, 3) for k, v in parts.items()}
        result.raw["breakdown_total_s"] = run.seconds
        say(f"  breakdown run: {run.seconds:.2f} s wall ({state})")
        result.note(
            f"breakdown (one more worker run with step timers, {run.seconds:.1f} s wall; "
            f"direct median {statistics.median(r.seconds for r in directs):.1f} s): "
            + "; ".join(f"{k} {v:.2f} s" for k, v in parts.items())
        )

    med = statistics.median
    # Medians: robust to the other tenants of a shared machine.
    direct_med = med(r.seconds for r in directs)
    worker_med = med(r.seconds for r in mms)
    span_med = med(spans)
    direct_cpu = med(r.user_seconds + r.system_seconds for r in directs)
    mm_cpu = med(r.user_seconds + r.system_seconds for r in mms)
    ratio_worker = worker_med / direct_med
    ratio_job = span_med / direct_med
    result.note(
        "direct runs: " + ", ".join(f"{r.seconds:.2f}" for r in directs) + " s; "
        "worker runs: " + ", ".join(f"{r.seconds:.2f}" for r in mms) + " s; "
        "job spans: "
        + ", ".join(f"{s:.2f}" for s in spans)
        + " s; CPU direct "
        + ", ".join(f"{r.user_seconds + r.system_seconds:.1f}" for r in directs)
        + " s, CPU worker (ffmpeg included) "
        + ", ".join(f"{r.user_seconds + r.system_seconds:.1f}" for r in mms)
        + " s"
    )
    result.row("direct ffmpeg, median wall", direct_med, "s")
    result.row("mediamirror worker --burst, median wall", worker_med, "s")
    result.row("mediamirror job started->finished, median", span_med, "s")
    result.row(
        "ratio worker wall / direct (medians)",
        ratio_worker,
        "x",
        f"<= {TARGET_RATIO}",
        ratio_worker <= TARGET_RATIO,
    )
    result.row(
        "ratio job span / direct (medians)",
        ratio_job,
        "x",
        f"<= {TARGET_RATIO}",
        ratio_job <= TARGET_RATIO,
    )
    result.row("ratio CPU user+sys, mediamirror / direct (medians)", mm_cpu / direct_cpu, "x")
    if profile == "always" or (profile == "auto" and ratio_worker > TARGET_RATIO):
        breakdown()
    result.raw.update(
        {
            "direct_s": [r.seconds for r in directs],
            "direct_cpu_s": [r.user_seconds + r.system_seconds for r in directs],
            "worker_s": [r.seconds for r in mms],
            "worker_cpu_s": [r.user_seconds + r.system_seconds for r in mms],
            "job_span_s": spans,
            "preset": preset,
            "crf": crf,
        }
    )
    shutil.rmtree(media, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="clip length")
    parser.add_argument("--preset", default="medium", help="x264 preset for both sides")
    parser.add_argument("--crf", type=int, default=22)
    parser.add_argument("--rounds", type=int, default=1, help="mediamirror/direct pairs")
    parser.add_argument("--quiet-wait", type=float, default=240.0)
    parser.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help="time the worker's steps in one more run (auto: when the target is missed)",
    )
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mm-transcode-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run(
        work,
        seconds=args.seconds,
        preset=args.preset,
        crf=args.crf,
        rounds=args.rounds,
        quiet_wait=args.quiet_wait,
        profile=args.profile,
    )
    for row in result.rows:
        say(f"{row.figure}: {row.shown()} {row.target} {row.verdict()}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
