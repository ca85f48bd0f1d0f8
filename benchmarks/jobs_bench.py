"""Jobs throughput: how many no-op jobs per second ``mediamirror worker --burst`` drains.

10,000 empty ``.mp4`` files in a local directory become 10,000 video datasets
(``mediamirror sync`` with ``MEDIAMIRROR_AUTO_POSTPROCESS=false``); ``mediamirror reprocess /
--processor noop`` queues one job per dataset for the bench-only ``noop`` processor
(``benchmarks/noop_processor.py``), and ``mediamirror worker --burst`` (default concurrency:
the CPU count) runs them. The processor does nothing, so the rate is the job machinery's:
claim, load the dataset, record success and finish.

With ``--profile always`` (or by default when the target is missed) the same jobs are
queued again and the worker runs in-process under cProfile (one profiler per pool thread,
merged) and under ``py-spy --gil``; then a few what-if runs (``WHAT_IFS``: a monkeypatch,
an interpreter setting or a CLI option each, product code untouched) size the suggestions.

    .venv/bin/python benchmarks/jobs_bench.py [--jobs 10000] [--profile auto|always|never]
        [--base /tmp/base-1afa7bc/src] [--rounds 3]

Side by side with the starting point of issue 8 (commit 1afa7bc, unpacked with ``git
archive 1afa7bc | tar -x -C /tmp/base-1afa7bc``): the same no-op jobs, each side on its own
SQLite catalog, ``worker --burst`` of each in interleaved rounds (ABBA), the ratio of the
median rates (wall) and of the median CPU per job.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from _bench_util import (
    BENCH_DIR,
    BIN,
    MEDIAMIRROR,
    PYTHON,
    BenchResult,
    dump_json,
    loadavg,
    mm_env,
    run_child_rusage,
    run_timed,
    say,
    wait_quiet,
)

TARGET_JOBS_PER_S = 500.0
CONFIG = """\
processors:
  noop:
    python: "noop_processor:NoopProcessor"
    applies_to: [video]
    auto: false
"""


def make_files(root: Path, count: int, per_dir: int = 100) -> None:
    """``count`` empty ``.mp4`` files, ``per_dir`` to a directory (each one a dataset)."""
    for n in range(count):
        folder = root / f"d{n // per_dir:04d}"
        if n % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip-{n:06d}.mp4").touch()


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Span:
    """The jobs of one worker run: how many, their end states, first start to last end."""

    jobs: int
    states: dict[str, int]
    seconds: float


def job_span(db: Path, since_id: int = 0) -> Span:
    """States and the first start / last finish of the jobs with id > ``since_id``."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT state, started_at, finished_at FROM jobs WHERE id > ?", (since_id,)
        ).fetchall()
    finally:
        con.close()
    starts = [_parse_time(r[1]) for r in rows if r[1]]
    ends = [_parse_time(r[2]) for r in rows if r[2]]
    seconds = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return Span(len(rows), dict(Counter(r[0] for r in rows)), seconds)


def max_job_id(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()[0])
    finally:
        con.close()


def enqueue_only(work: Path, count: int) -> float:
    """Seconds for ``jobs.queue.enqueue`` of ``count`` specs into a fresh SQLite catalog
    (the queue's own insert cost, without selecting datasets)."""
    code = textwrap.dedent(
        f"""
        import time
        from mediamirror.catalog.db import Catalog
        from mediamirror.jobs.model import RetryPolicy
        from mediamirror.jobs.queue import JobSpec, enqueue
        catalog = Catalog("sqlite:///{work / "enqueue-only.db"}")
        specs = [JobSpec("noop", "folder", i, "v1") for i in range(1, {count} + 1)]
        start = time.perf_counter()
        ids = enqueue(catalog, specs, RetryPolicy())
        print(len(ids), time.perf_counter() - start)
        """
    )
    out = run_timed([PYTHON, "-c", code]).stdout.split()
    assert int(out[0]) == count, out
    return float(out[1])


PROFILE_DRIVER = """\
import cProfile, pstats, sys, threading
import mediamirror.jobs.executors.local as local
from mediamirror.cli import main

out = sys.argv[1]
profiles = []
lock = threading.Lock()
tls = threading.local()
original = local.run_claimed

def profiled(*args, **kwargs):
    prof = getattr(tls, "prof", None)
    if prof is None:
        prof = tls.prof = cProfile.Profile()
        with lock:
            profiles.append(prof)
    prof.enable()
    try:
        return original(*args, **kwargs)
    finally:
        prof.disable()

local.run_claimed = profiled
main_prof = cProfile.Profile()
sys.argv = ["mediamirror", "worker", "--burst"]
main_prof.enable()
try:
    main()
finally:
    main_prof.disable()
    stats = pstats.Stats(main_prof)
    for prof in profiles:
        stats.add(prof)
    stats.dump_stats(out)
"""


WHAT_IF_DRIVER = """\
import sys

changes = set(filter(None, sys.argv[1].split(",")))
argv = ["mediamirror", "worker", "--burst"]


def unavailable(why):
    print("WHAT-IF UNAVAILABLE: " + why)
    sys.exit(3)


if "switch-interval" in changes:
    # The GIL is handed over every 5 ms by default; a thread back from a blocking call
    # (SQLite, lstat, urandom...) may wait that long for it while another thread computes.
    sys.setswitchinterval(0.0005)
if "concurrency-1" in changes:
    argv += ["--concurrency", "1"]
if "batch-claim" in changes:
    # Claim up to 64 jobs per transaction once slots are free (the pool queues the extra).
    from mediamirror.jobs import queue

    original_claim = getattr(queue, "claim", None)
    if original_claim is None:
        unavailable("jobs.queue.claim is gone")

    def claim(catalog, worker, limit, *args, **kwargs):
        if limit <= 0:
            return []
        return original_claim(catalog, worker, max(limit, 64), *args, **kwargs)

    queue.claim = claim
from mediamirror.cli import main

sys.argv = argv
main()
"""

# Bench-side experiments (a monkeypatch, an interpreter setting or a CLI option; the product
# code is untouched) that size the suggestions of the profile. The plain worker runs first
# again, so each change is compared with a baseline measured minutes, not half an hour, apart.
WHAT_IFS: list[tuple[str, str]] = [
    ("", "none (the plain worker again, as a side-by-side baseline)"),
    ("concurrency-1", "`--concurrency 1` (one pool thread)"),
    ("switch-interval", "GIL switch interval 0.5 ms instead of 5 ms"),
    ("batch-claim", "claim up to 64 jobs per transaction"),
    ("batch-claim,concurrency-1", "claim up to 64 per transaction + `--concurrency 1`"),
]


def what_if(
    env: dict[str, str], home: Path, work: Path, changes: str, quiet_wait: float
) -> tuple[float, float, int, str]:
    """Run the worker once with ``changes``; returns (jobs/s, CPU ms/job, jobs, machine)."""
    since = requeue(env, home)
    driver = work / "what_if_worker.py"
    driver.write_text(WHAT_IF_DRIVER)
    state = wait_quiet(quiet_wait)
    child = run_child_rusage([PYTHON, str(driver), changes], env=env)
    span = job_span(home / "catalog.db", since)
    jobs = span.jobs
    if span.states.get("success") != jobs:
        raise RuntimeError(f"what-if {changes}: not every job succeeded: {span.states}")
    cpu = child.user_seconds + child.system_seconds
    return jobs / child.seconds, cpu / jobs * 1000, jobs, state


def run_what_ifs(
    env: dict[str, str],
    home: Path,
    work: Path,
    result: BenchResult,
    baseline: float,
    quiet_wait: float,
) -> None:
    say("  what-if experiments (bench-side patches; product code unchanged):")
    table = []
    plain: float | None = None
    for changes, label in WHAT_IFS:
        try:
            rate, cpu_ms, jobs, state = what_if(env, home, work, changes, quiet_wait)
        except RuntimeError as exc:  # e.g. the code under test changed under the patch
            result.note(f"what-if {label}: not measured ({str(exc).splitlines()[0][:200]})")
            run_timed([MEDIAMIRROR, "worker", "--burst"], env=env, check=False)  # drain
            continue
        plain = rate if plain is None else plain
        table.append(
            {
                "change": label,
                "jobs_per_s": round(rate),
                "vs_plain": round(rate / plain, 2),
                "cpu_ms_per_job": cpu_ms,
                "machine": state,
            }
        )
        result.note(
            f"what-if {label}: {rate:,.0f} jobs/s ({rate / plain:.2f}x the plain rerun, "
            f"{rate / baseline:.2f}x the measurement), {cpu_ms:.2f} ms CPU per job, {jobs} "
            f"jobs ({state})"
        )
    result.raw["what_if"] = table


def requeue(env: dict[str, str], home: Path) -> int:
    """Queue the noop jobs again (the earlier ones ended, so their keys are free)."""
    before = max_job_id(home / "catalog.db")
    run_timed([MEDIAMIRROR, "reprocess", "/", "--processor", "noop"], env=env)
    return before


def profile_cprofile(env: dict[str, str], home: Path, work: Path, result: BenchResult) -> None:
    import pstats

    since = requeue(env, home)
    driver = work / "profile_worker.py"
    driver.write_text(PROFILE_DRIVER)
    out = work / "worker.pstats"
    timed = run_timed([PYTHON, str(driver), str(out)], env=env)
    span = job_span(home / "catalog.db", since)
    result.note(
        f"cProfile run: {span.jobs} jobs in {timed.seconds:.1f} s wall "
        f"(profiling overhead included); states {span.states}"
    )
    stats = pstats.Stats(str(out))
    # Per-thread profilers are merged, so totals are summed over the pool's threads.
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values())  # tottime summed: all profiled time

    def label(func: tuple[str, int, str]) -> str:
        filename, line, name = func
        short = re.sub(r".*/site-packages/", "", filename)
        short = re.sub(r".*/src/", "", short)
        return f"{short}:{line}({name})"

    by_cum = sorted(entries.items(), key=lambda kv: kv[1][3], reverse=True)
    interesting = [
        (func, v)
        for func, v in by_cum
        if "mediamirror" in func[0] or func[2] in ("mkdtemp", "rmtree")
    ][:25]
    result.raw["cprofile_cumulative"] = [
        {"func": label(f), "calls": v[1], "cum_s": round(v[3], 3)} for f, v in interesting
    ]
    by_self = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:20]
    result.raw["cprofile_self"] = [
        {"func": label(f), "calls": v[1], "self_s": round(v[2], 3)} for f, v in by_self
    ]

    def pick(name: str, file_part: str = "") -> tuple[int, float]:
        """Calls and cumulative seconds of the functions called ``name`` (in ``file_part``)."""
        calls, cum = 0, 0.0
        for (filename, _, func), v in entries.items():
            if func == name and file_part in filename:
                calls += v[1]
                cum += v[3]
        return calls, cum

    jobs = span.jobs
    counts = {
        "jobs": jobs,
        "statements_per_job": pick("<method 'execute' of 'sqlite3.Cursor' objects>")[0] / jobs,
        "commits_per_job": pick("<method 'commit' of 'sqlite3.Connection' objects>")[0] / jobs,
        "claims": pick("claim", "jobs/queue.py")[0],
        "begin_s": pick("_on_begin", "catalog/db.py")[1],
        "run_claimed_s": pick("run_claimed", "jobs/runner.py")[1],
        "started_report_s": pick("report", "jobs/queue.py")[1],
        "succeed_s": pick("_succeed", "jobs/runner.py")[1],
        "finish_s": pick("finish", "jobs/queue.py")[1],
        "load_dataset_s": pick("load_dataset", "processors/base.py")[1],
        "rmtree_s": pick("rmtree", "shutil.py")[1],
        "mkdtemp_s": pick("mkdtemp", "tempfile.py")[1],
        "load_dataset_in_s": pick("load_dataset_in", "processors/base.py")[1],
        "sa_expect_calls": pick("expect", "sqlalchemy/sql/coercions.py")[0],
        "lstat_self_s": sum(
            v[2] for (f, _, n), v in entries.items() if n == "<built-in method posix.lstat>"
        ),
        "urandom_self_s": sum(
            v[2] for (f, _, n), v in entries.items() if n == "<built-in method posix.urandom>"
        ),
        "wall_s": timed.seconds,
    }
    result.raw["cprofile_counts"] = counts
    result.note(
        f"cProfile: {counts['statements_per_job']:.1f} SQL statements and "
        f"{counts['commits_per_job']:.1f} transactions per job; claim() ran "
        f"{counts['claims']} times for {jobs} jobs; BEGIN / BEGIN IMMEDIATE (waiting for "
        f"SQLite's lock) {counts['begin_s'] / jobs * 1000:.1f} ms per job; scratch folder "
        f"mkdtemp/rmtree {(counts['mkdtemp_s'] + counts['rmtree_s']) / jobs * 1000:.1f} ms "
        "per job (per-thread wall time under the profiler)"
    )
    say("  cProfile, cumulative time (summed over threads) of mediamirror functions:")
    for row in result.raw["cprofile_cumulative"]:
        say(f"    {row['cum_s']:8.2f} s {row['calls']:>8}  {row['func']}")
    say(f"  cProfile, self time (total profiled {total:.1f} s):")
    for row in result.raw["cprofile_self"]:
        say(f"    {row['self_s']:8.2f} s {row['calls']:>8}  {row['func']}")


def profile_pyspy(env: dict[str, str], home: Path, work: Path, result: BenchResult) -> None:
    pyspy = shutil.which("py-spy") or (str(BIN / "py-spy") if (BIN / "py-spy").exists() else None)
    if pyspy is None:
        result.note("py-spy is not installed: sampling profile skipped")
        return
    since = requeue(env, home)
    out = work / "worker.pyspy.txt"
    cmd = [pyspy, "record", "--format", "raw", "--rate", "250", "--gil", "--output", str(out)]
    cmd += ["--", MEDIAMIRROR, "worker", "--burst"]
    timed = run_timed(cmd, env=env, check=False)
    if timed.returncode != 0 or not out.exists():
        result.note(f"py-spy failed: {timed.stderr.strip()[-300:]}")
        return
    span = job_span(home / "catalog.db", since)
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    samples = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        seen: set[str] = set()
        for frame in frames:
            name = _pyspy_frame(frame)
            if name not in seen:
                seen.add(name)
                inclusive[name] += count
        leaf[_pyspy_frame(frames[-1])] += count
    result.note(
        f"py-spy --gil run: {span.jobs} jobs in {timed.seconds:.1f} s wall, {samples} "
        "samples at 250 Hz of the thread holding the GIL (where Python CPU goes)"
    )
    watched = [
        (name, n)
        for name, n in inclusive.most_common()
        if ("mediamirror/" in name or "(mkdtemp)" in name or "(rmtree)" in name)
    ][:25]
    result.raw["pyspy_inclusive"] = [
        {"func": name, "samples": n, "share": round(n / samples, 3)} for name, n in watched
    ]
    result.raw["pyspy_leaf"] = [
        {"func": name, "samples": n, "share": round(n / samples, 3)}
        for name, n in leaf.most_common(15)
    ]
    say("  py-spy --gil, share of GIL-holding samples spent inside (inclusive):")
    for row in result.raw["pyspy_inclusive"]:
        say(f"    {row['share']:6.1%}  {row['func']}")
    say("  py-spy, leaf frames:")
    for row in result.raw["pyspy_leaf"]:
        say(f"    {row['share']:6.1%}  {row['func']}")


def _pyspy_frame(frame: str) -> str:
    # raw frames look like "function (path/to/file.py:123)"
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    path = re.sub(r".*/site-packages/", "", path)
    path = re.sub(r".*/src/", "", path)
    return f"{path}({func})"


BASE_COMMIT = "1afa7bc"
TARGET_VS_BASE = 2.5


def base_tree(path: Path | None) -> Path | None:
    """The source tree of the starting point (``src/`` of ``git archive 1afa7bc``)."""
    if path is not None:
        return path
    default = Path(f"/tmp/base-{BASE_COMMIT}/src")
    return default if (default / "mediamirror").is_dir() else None


def side_home(work: Path, name: str, media: Path, pythonpath: str) -> tuple[Path, dict[str, str]]:
    """A home of its own for one side of the comparison, synced by that side's code."""
    home = work / f"jobs-home-{name}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "config.yaml").write_text(CONFIG)
    env = mm_env(home, {"MEDIAMIRROR_AUTO_POSTPROCESS": "false", "PYTHONPATH": pythonpath})
    run_timed([MEDIAMIRROR, "source", "add", "jobs", f"file://{media}"], env=env)
    run_timed([MEDIAMIRROR, "sync", "jobs", "--quiet"], env=env)
    return home, env


def compare_base(
    work: Path, media: Path, jobs: int, base_src: Path, rounds: int, quiet_wait: float
) -> BenchResult:
    """``worker --burst`` of this tree and of commit 1afa7bc on the same no-op jobs,
    interleaved (ABBA...) in one run; each side has its own SQLite catalog."""
    result = BenchResult("jobs-vs-base")
    sides = {
        "change": side_home(work, "change", media, str(BENCH_DIR)),
        BASE_COMMIT: side_home(work, "base", media, f"{base_src}{os.pathsep}{BENCH_DIR}"),
    }
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for n in range(rounds):
        order = list(sides) if n % 2 == 0 else list(reversed(sides))
        for name in order:
            home, env = sides[name]
            since = requeue(env, home)
            state = wait_quiet(quiet_wait)
            child = run_child_rusage([MEDIAMIRROR, "worker", "--burst"], env=env)
            span = job_span(home / "catalog.db", since)
            if span.states.get("success") != jobs or span.jobs != jobs:
                raise RuntimeError(f"{name}: not every job succeeded: {span.states}")
            cpu = child.user_seconds + child.system_seconds
            measured[name].append((jobs / child.seconds, cpu / jobs * 1000))
            result.note(
                f"round {n + 1}, {name}: {jobs / child.seconds:,.0f} jobs/s "
                f"({child.seconds:.2f} s wall), {cpu / jobs * 1000:.2f} ms CPU per job ({state})"
            )
    change, base = measured["change"], measured[BASE_COMMIT]
    rate_ratio = statistics.median(c[0] for c in change) / statistics.median(b[0] for b in base)
    cpu_ratio = statistics.median(b[1] for b in base) / statistics.median(c[1] for c in change)
    pairs = [c[0] / b[0] for c, b in zip(change, base, strict=True)]
    result.row(
        f"no-op jobs/s through worker --burst on SQLite, change / {BASE_COMMIT} (wall, medians)",
        rate_ratio,
        "x",
        f">= {TARGET_VS_BASE}",
        rate_ratio >= TARGET_VS_BASE,
    )
    result.row(
        f"no-op jobs per CPU second, change / {BASE_COMMIT} (user+sys, medians)", cpu_ratio, "x"
    )
    result.row("no-op jobs/s, change (median)", statistics.median(c[0] for c in change), "jobs/s")
    result.row(
        f"no-op jobs/s, {BASE_COMMIT} (median)", statistics.median(b[0] for b in base), "jobs/s"
    )
    result.row("worker CPU per job, change (median)", statistics.median(c[1] for c in change), "ms")
    result.row(
        f"worker CPU per job, {BASE_COMMIT} (median)", statistics.median(b[1] for b in base), "ms"
    )
    result.note("per-round wall ratios change / base: " + ", ".join(f"{r:.2f}" for r in pairs))
    result.raw = {"change": change, "base": base, "jobs": jobs, "rounds": rounds}
    result.commands.append(
        f"git archive {BASE_COMMIT} | tar -x -C /tmp/base-{BASE_COMMIT}; "
        f"PYTHONPATH=/tmp/base-{BASE_COMMIT}/src:benchmarks mediamirror worker --burst "
        "(beside the same command of this tree, interleaved)"
    )
    for side in sides.values():
        shutil.rmtree(side[0], ignore_errors=True)
    return result


def run(
    work: Path,
    *,
    jobs: int = 10_000,
    profile: str = "auto",
    concurrency: int | None = None,
    what_ifs: bool = True,
    quiet_wait: float = 240.0,
    base_src: Path | None = None,
    rounds: int = 3,
) -> BenchResult:
    result = BenchResult("jobs")
    started = time.perf_counter()
    say(f"== jobs throughput: {jobs} no-op jobs (load {loadavg()})")
    media = work / "jobs-media"
    home = work / "jobs-home"
    shutil.rmtree(media, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "config.yaml").write_text(CONFIG)
    t = time.perf_counter()
    make_files(media, jobs)
    result.note(f"made {jobs} empty .mp4 files in {time.perf_counter() - t:.1f} s")
    env = mm_env(home, {"MEDIAMIRROR_AUTO_POSTPROCESS": "false", "PYTHONPATH": str(BENCH_DIR)})
    run_timed([MEDIAMIRROR, "source", "add", "jobs", f"file://{media}"], env=env)
    sync = run_timed([MEDIAMIRROR, "sync", "jobs", "--quiet"], env=env)
    result.note(f"sync: {sync.stdout.strip()} in {sync.seconds:.1f} s")
    result.commands += [
        "MEDIAMIRROR_AUTO_POSTPROCESS=false PYTHONPATH=benchmarks "
        f"mediamirror source add jobs file://<{jobs} empty .mp4 files>",
        "mediamirror sync jobs --quiet",
    ]

    queued = run_timed([MEDIAMIRROR, "reprocess", "/", "--processor", "noop"], env=env)
    count = int(re.search(r"queued (\d+) job", queued.stdout).group(1))  # type: ignore[union-attr]
    if count != jobs:
        raise RuntimeError(f"expected {jobs} jobs queued, got: {queued.stdout}")
    result.commands.append("mediamirror reprocess / --processor noop")
    direct_enqueue = enqueue_only(work, jobs)

    worker_cmd = [MEDIAMIRROR, "worker", "--burst"]
    shown = "mediamirror worker --burst"
    if concurrency:
        worker_cmd += ["--concurrency", str(concurrency)]
        shown += f" --concurrency {concurrency}"
    load_before = wait_quiet(quiet_wait)
    worker = run_child_rusage(worker_cmd, env=env)
    result.commands.append(shown)
    span = job_span(home / "catalog.db")
    if span.states.get("success") != jobs:
        raise RuntimeError(f"not every job succeeded: {span.states} / {worker.stdout}")
    rate_wall = jobs / worker.seconds
    span_s = span.seconds
    rate_span = jobs / span_s if span_s else float("inf")
    cpu = worker.user_seconds + worker.system_seconds
    result.note(
        f"worker: {worker.stdout.strip()} in {worker.seconds:.2f} s wall, "
        f"{cpu:.1f} s CPU ({worker.user_seconds:.1f} user + {worker.system_seconds:.1f} sys "
        f"= {cpu / jobs * 1000:.2f} ms CPU per job; {load_before})"
    )
    result.note(
        f"queueing: `mediamirror reprocess` {queued.seconds:.2f} s for {jobs} jobs (command "
        f"wall time: start-up, dataset selection, enqueue); enqueue() alone "
        f"{direct_enqueue:.3f} s ({jobs / direct_enqueue:,.0f} jobs/s)"
    )
    result.note(
        f"throughput: {rate_wall:,.0f} jobs/s over the worker command's wall time; "
        f"{rate_span:,.0f} jobs/s between the first claim and the last finish"
    )
    result.row(
        "worker --burst, no-op jobs/s (command wall time)",
        rate_wall,
        "jobs/s",
        f">= {TARGET_JOBS_PER_S:.0f}",
        rate_wall >= TARGET_JOBS_PER_S,
    )
    result.row("no-op jobs/s, first claim to last finish", rate_span, "jobs/s")
    result.row("worker CPU per no-op job (user+sys)", cpu / jobs * 1000, "ms")
    result.row(f"queue {jobs} jobs: mediamirror reprocess", queued.seconds, "s")
    result.row(f"queue {jobs} jobs: jobs.queue.enqueue()", direct_enqueue, "s")
    result.raw.update(
        {
            "jobs": jobs,
            "worker_s": worker.seconds,
            "worker_cpu_s": cpu,
            "span_s": span_s,
            "reprocess_s": queued.seconds,
            "enqueue_s": direct_enqueue,
            "sync_s": sync.seconds,
        }
    )
    if profile == "always" or (profile == "auto" and rate_wall < TARGET_JOBS_PER_S):
        say("  target missed or profiling asked: profiling the worker")
        profile_cprofile(env, home, work, result)
        profile_pyspy(env, home, work, result)
        if what_ifs:
            run_what_ifs(env, home, work, result, rate_wall, quiet_wait)
    if base_src is not None and rounds > 0:
        say(f"  side by side with {BASE_COMMIT} ({base_src}), {rounds} round(s) each")
        versus = compare_base(work, media, jobs, base_src, rounds, quiet_wait)
        result.rows += versus.rows
        result.notes += versus.notes
        result.commands += versus.commands
        result.raw["vs_base"] = versus.raw
    else:
        result.note(f"no tree of {BASE_COMMIT} given (--base): side-by-side row skipped")
    shutil.rmtree(media, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, help="worker --concurrency (default: CPUs)")
    parser.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help="profile the worker (auto: when the target is missed)",
    )
    parser.add_argument(
        "--no-what-if", action="store_true", help="skip the what-if runs after a profile"
    )
    parser.add_argument("--quiet-wait", type=float, default=240.0)
    parser.add_argument(
        "--base",
        type=Path,
        help=f"src/ of commit {BASE_COMMIT} (default /tmp/base-{BASE_COMMIT}/src if present)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="side-by-side rounds (0: skip the comparison)"
    )
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write raw results here")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mm-jobs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run(
        work,
        jobs=args.jobs,
        profile=args.profile,
        concurrency=args.concurrency,
        what_ifs=not args.no_what_if,
        quiet_wait=args.quiet_wait,
        base_src=base_tree(args.base),
        rounds=args.rounds,
    )
    for row in result.rows:
        say(f"{row.figure}: {row.shown()} {row.target} {row.verdict()}")
    if args.json:
        dump_json(args.json, result.raw)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
