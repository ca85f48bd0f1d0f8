"""Post-processing benchmarks (issue: durable jobs), all in one run.

Runs, in this order: transcode (mediamirror's video job vs the same ffmpeg command),
probe (bytes a probe reads of a ~500 MB MP4 in an S3 server), pyramid (make_pyramid vs the
same libvips tiffsave: time and peak RSS) and jobs (no-op jobs per second through
``mediamirror worker --burst``). Prints every figure and ratio, then one table of
figure / target / met?; ``--write-docs`` replaces the "Post-processing" section of
docs/benchmarks.md with the results, the machine and the commands.

    .venv/bin/python benchmarks/processing_bench.py [--only transcode,probe,pyramid,jobs]
        [--preset medium] [--write-docs]

Each benchmark also runs alone: benchmarks/{transcode,probe,pyramid,jobs}_bench.py.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import jobs_bench
import probe_bench
import pyramid_bench
import transcode_bench
from _bench_util import REPO, BenchResult, Row, dump_json, machine, say

SECTION = "## Post-processing (issue: durable jobs)"
DOCS = REPO / "docs" / "benchmarks.md"
ALL = ("transcode", "probe", "pyramid", "jobs")


def table(rows: list[Row]) -> list[str]:
    head = ["benchmark", "figure", "measured", "target", "met?"]
    body = [[r.bench, r.figure, r.shown(), r.target, r.verdict()] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return lines


def md_table(rows: list[Row]) -> list[str]:
    lines = ["| benchmark | figure | measured | target | met? |", "|---|---|---|---|---|"]
    for r in rows:
        verdict = {"yes": "yes", "NO": "**no**", "": ""}[r.verdict()]
        lines.append(f"| {r.bench} | {r.figure} | {r.shown()} | {r.target} | {verdict} |")
    return lines


def git_state() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return f"{sha}" + (" + uncommitted changes under src/" if dirty else "")


def jobs_suggestions(result: BenchResult) -> list[str]:
    """Where the time goes and what to change, from the measured counts (target missed)."""
    raw = result.raw
    counts = raw.get("cprofile_counts")
    if not counts or raw["jobs"] / raw["worker_s"] >= jobs_bench.TARGET_JOBS_PER_S:
        return []
    jobs = counts["jobs"]
    cpu_ms = raw["worker_cpu_s"] / raw["jobs"] * 1000

    def per_job(key: str) -> str:
        return f"{counts[key] / jobs * 1000:.1f} ms"

    return [
        "**Where the time goes** (no-op jobs, so all of it is the job machinery):",
        "",
        f"- CPU: {cpu_ms:.2f} ms of worker CPU per job. The pool's threads share one GIL, so "
        f"this alone caps a worker at about {1000 / cpu_ms:,.0f} jobs/s whatever "
        f"`--concurrency`; 500 jobs/s needs under 2 ms per job.",
        f"- SQL: {counts['statements_per_job']:.1f} statements in "
        f"{counts['commits_per_job']:.1f} transactions per job. A job is claimed "
        f"(`claim()` ran {counts['claims']:,} times for {jobs:,} jobs: "
        f"{counts['claims'] / jobs:.2f} claim transactions per job, as the loop tops up the "
        "slots that free one at a time), then writes its 'started' "
        "progress, loads its dataset, loads it again in `_succeed`, updates the folder "
        "metadata, clears `needs_processing` of its items and finishes: five write "
        "transactions, each through SQLAlchemy Core statements built and cache-keyed anew.",
        f"- Waiting for the write lock: `BEGIN`/`BEGIN IMMEDIATE` took {per_job('begin_s')} per "
        "job (per-thread wall time under cProfile). The pool's threads and the claiming loop "
        "use separate connections, so a loser sleeps in SQLite's busy handler (1, 2, 5, "
        "10 ms ...) instead of being woken when the lock frees.",
        f"- Per-job files: `mkdtemp` + `rmtree` of the job directory took "
        f"{(counts['mkdtemp_s'] + counts['rmtree_s']) / jobs * 1000:.1f} ms per job; on this "
        "VM's ext4 (mounted with `discard`) an `rmdir` costs milliseconds.",
        f"- By step (cumulative per-thread wall time per job): 'started' report "
        f"{per_job('started_report_s')}, `load_dataset` (twice) {per_job('load_dataset_s')}, "
        f"`_succeed` {per_job('succeed_s')}, `finish` {per_job('finish_s')}, of "
        f"{per_job('run_claimed_s')} in `run_claimed`.",
        "",
        "**Suggestions** (for the owners of `jobs/`; ordered by expected gain):",
        "",
        "1. One write transaction per finished job: `_succeed` and `queue.finish` in the "
        "same transaction, reusing the dataset loaded before `run` (re-check only the input "
        "etags inside that transaction). Removes two write and one read transaction per job.",
        "2. Drop the forced `ctx.progress(0.0, 'started')` write: `claim()` already sets "
        "`state=running`, `progress=0` and `started_at` (see the what-if row).",
        "3. Claim in batches and finish in batches: when the queue is deep, claim e.g. "
        "`max(in_flight, 64)` jobs per transaction, and let pool threads hand results to the "
        "executor loop, which finishes every completed job in one transaction per poll. "
        "That turns ~5 transactions per job into a fraction of one.",
        "4. Serialize one process's writers on an in-process lock (or a single writer "
        "connection) so threads queue on a Python lock instead of SQLite's sleeping busy "
        "handler.",
        "5. Make the job directory lazy (`ctx.workdir` created on first use) and create "
        "`<home>/tmp` once per worker, not per job.",
        "6. Build the hot statements once (bound parameters, or `lambda_stmt`) instead of "
        "`update(JOBS).where(...).values(...)` per call: statement construction and cache-key "
        "generation are a visible share of the CPU profile.",
        "",
    ]


def jobs_findings(result: BenchResult) -> list[str]:
    """Where the worker's time goes, from the profiles and what-if runs of jobs_bench."""
    raw = result.raw
    lines: list[str] = jobs_suggestions(result)
    if "cprofile_cumulative" in raw:
        lines += [
            "cProfile of the worker in-process (`mediamirror.cli:main`, one profiler per pool "
            "thread, merged; times are per-thread wall time summed over threads, inflated by "
            "the profiler), cumulative, mediamirror frames:",
            "",
            "| cumulative s | calls | function |",
            "|---:|---:|---|",
        ]
        lines += [
            f"| {r['cum_s']:.1f} | {r['calls']} | `{r['func']}` |"
            for r in raw["cprofile_cumulative"][:18]
        ]
        lines += ["", "Self time, top entries:", "", "| self s | calls | function |"]
        lines += ["|---:|---:|---|"]
        lines += [
            f"| {r['self_s']:.1f} | {r['calls']} | `{r['func']}` |"
            for r in raw["cprofile_self"][:10]
        ]
        lines.append("")
    if "pyspy_inclusive" in raw:
        lines += [
            "py-spy (`--gil`: samples of the thread holding the GIL, i.e. where Python CPU "
            "goes), inclusive share:",
            "",
            "| share | function |",
            "|---:|---|",
        ]
        lines += [
            f"| {r['share']:.1%} | `{r['func']}` |"
            for r in raw["pyspy_inclusive"]
            if "<module>" not in r["func"]
        ][:16]
        lines.append("")
    if "what_if" in raw:
        lines += [
            "What-if runs: the worker again with one change each, made by monkeypatches "
            "in a bench-side driver (`jobs_bench.WHAT_IF_DRIVER`) or by the environment; "
            f"product code unchanged; the same {raw['jobs']:,} jobs queued again each time. "
            "Rates on a shared machine move by +-20 % between runs: read the CPU per job "
            "and differences well beyond that.",
            "",
            "| change | jobs/s | vs plain rerun | CPU ms/job | machine |",
            "|---|---:|---:|---:|---|",
            f"| none (the measurement above) | {raw['jobs'] / raw['worker_s']:,.0f} | | "
            f"{raw['worker_cpu_s'] / raw['jobs'] * 1000:.2f} | |",
        ]
        lines += [
            f"| {w['change']} | {w['jobs_per_s']:,} | {w.get('vs_plain', '')} | "
            f"{w['cpu_ms_per_job']:.2f} | {w.get('machine', '')} |"
            for w in raw["what_if"]
        ]
        lines.append("")
    return lines


def section(
    results: list[BenchResult],
    info: dict[str, str],
    started: datetime,
    total: float,
    argv: str,
    code: str,
) -> str:
    rows = [r for res in results for r in res.rows]
    out = [
        SECTION,
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {info['nproc']} CPUs ({info['cpu']}), "
        f"{info['memory']} RAM, {info['os']}; Python {info['python']}, {info['ffmpeg']}, "
        f"libvips {info['libvips']}, PyAV {info['pyav']}. Code: {code}. "
        f"Whole run: {total / 60:.1f} min.",
        "",
        "```",
        argv,
        "```",
        "",
        *md_table(rows),
        "",
    ]
    for res in results:
        out += [f"### {res.name} ({res.seconds / 60:.1f} min)", ""]
        out += [f"- {n}" for n in res.notes]
        out.append("")
        if res.name == "jobs":
            out += jobs_findings(res)
        if res.name == "transcode" and "breakdown" in res.raw:
            out += [
                "Where the mediamirror side's time goes (one more worker run, in-process, "
                "timers around the video processor's steps; "
                f"{res.raw['breakdown_total_s']:.1f} s wall):",
                "",
                "| step | seconds |",
                "|---|---:|",
                *[f"| {k} | {v:.2f} |" for k, v in res.raw["breakdown"].items()],
                "",
            ]
        if res.commands:
            out += ["Commands:", "", "```", *res.commands, "```", ""]
    return "\n".join(out).rstrip() + "\n"


def write_docs(text: str, docs: Path = DOCS) -> None:
    """Replace (or append) only our section; the file is read right before writing."""
    current = docs.read_text() if docs.exists() else "# Benchmarks\n"
    start = current.find(SECTION)
    if start < 0:
        new = current.rstrip() + "\n\n" + text
    else:
        end = current.find("\n## ", start + len(SECTION))
        rest = current[end + 1 :] if end >= 0 else ""
        new = current[:start] + text + ("\n" + rest if rest else "")
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(new)
    say(f"wrote the section {SECTION!r} of {docs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated subset")
    parser.add_argument("--preset", default="medium", help="x264 preset (transcode)")
    parser.add_argument("--seconds", type=int, default=60, help="clip length (transcode)")
    parser.add_argument(
        "--transcode-rounds", type=int, default=2, help="mediamirror/direct pairs (transcode)"
    )
    parser.add_argument(
        "--pyramid-rounds", type=int, default=4, help="mediamirror/direct pairs (pyramid)"
    )
    parser.add_argument("--probe-mb", type=int, default=500, help="video size (probe)")
    parser.add_argument("--size", type=int, default=20_000, help="image side (pyramid)")
    parser.add_argument("--jobs", type=int, default=10_000, help="no-op jobs (jobs)")
    parser.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help="profile the jobs worker / time the transcode job's steps (auto: when missed)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=240.0,
        help="seconds to wait for a quiet machine before each timed run",
    )
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: temp)")
    parser.add_argument("--json", type=Path, help="also write raw results here")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--from-json", type=Path, help="run nothing: show (and --write-docs) saved results"
    )
    args = parser.parse_args()
    if args.from_json:
        from_json(args.from_json, args.write_docs, args.docs)
        return
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mm-processing-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    info = machine()
    say("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    benches: dict[str, Callable[[], BenchResult]] = {
        "transcode": lambda: transcode_bench.run(
            work,
            seconds=args.seconds,
            preset=args.preset,
            rounds=args.transcode_rounds,
            quiet_wait=args.quiet_wait,
            profile=args.profile,
        ),
        "probe": lambda: probe_bench.run(work, megabytes=args.probe_mb),
        "pyramid": lambda: pyramid_bench.run(
            work, size=args.size, rounds=args.pyramid_rounds, quiet_wait=args.quiet_wait
        ),
        "jobs": lambda: jobs_bench.run(
            work, jobs=args.jobs, profile=args.profile, quiet_wait=args.quiet_wait
        ),
    }
    results: list[BenchResult] = []
    try:
        for name in ALL:
            if name in chosen:
                results.append(benches[name]())
                say(f"   ({results[-1].seconds / 60:.1f} min)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t0
    rows = [r for res in results for r in res.rows]
    say("")
    for line in table(rows):
        say(line)
    say(f"\ntotal run time: {total / 60:.1f} min")
    argv = ".venv/bin/python " + shlex.join(
        [str(Path(sys.argv[0]).resolve().relative_to(REPO)), *sys.argv[1:]]
    )
    if args.json:
        dump_json(
            args.json,
            {
                "machine": info,
                "started": started.isoformat(),
                "total_s": total,
                "argv": argv,
                "git": git_state(),
                "results": [asdict(r) for r in results],
            },
        )
    if args.write_docs:
        write_docs(section(results, info, started, total, argv, git_state()), args.docs)


def from_json(path: Path, write: bool, docs: Path) -> None:
    """Print (and with ``write``, write to the docs) the results saved by ``--json``."""
    data = json.loads(path.read_text())
    results = []
    for saved in data["results"]:
        rows = [Row(**row) for row in saved.pop("rows")]
        results.append(BenchResult(rows=rows, **saved))
    for line in table([r for res in results for r in res.rows]):
        say(line)
    if write:
        text = section(
            results,
            data["machine"],
            datetime.fromisoformat(data["started"]),
            data["total_s"],
            data["argv"],
            data["git"],
        )
        write_docs(text, docs)


if __name__ == "__main__":
    main()
