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
from typing import Any

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


def baselines(raw: dict[str, Any]) -> tuple[float, float]:
    """Jobs/s and CPU ms per job of the plain worker: the mean of the measurement and of
    its rerun among the what-ifs (the machine's drift between the two is the noise)."""
    rates = [raw["jobs"] / raw["worker_s"]]
    cpus = [raw["worker_cpu_s"] / raw["jobs"] * 1000]
    plain = next((w for w in raw.get("what_if", []) if w["change"].startswith("none")), None)
    if plain is not None:
        rates.append(float(plain["jobs_per_s"]))
        cpus.append(float(plain["cpu_ms_per_job"]))
    return sum(rates) / len(rates), sum(cpus) / len(cpus)


def jobs_suggestions(result: BenchResult) -> list[str]:
    """Where the time goes and what to change, from the measured counts (target missed)."""
    raw = result.raw
    counts = raw.get("cprofile_counts")
    if not counts or raw["jobs"] / raw["worker_s"] >= jobs_bench.TARGET_JOBS_PER_S:
        return []
    jobs = counts["jobs"]
    cpu_ms = raw["worker_cpu_s"] / raw["jobs"] * 1000
    gil = {row["func"]: row["share"] for row in raw.get("pyspy_inclusive", [])}

    def share(suffix: str) -> str:
        found = [v for k, v in gil.items() if k.endswith(suffix)]
        return f"{max(found):.0%}" if found else "?"

    def per_job(key: str) -> str:
        return f"{counts.get(key, 0.0) / jobs * 1000:.1f} ms"

    what_ifs = {w["change"]: w for w in raw.get("what_if", [])}
    base_rate, base_cpu = baselines(raw)

    def found(label_start: str) -> dict[str, Any] | None:
        return next((w for k, w in what_ifs.items() if k.startswith(label_start)), None)

    def measured(label_start: str) -> str:
        w = found(label_start)
        if w is None:
            return ""
        return (
            f" (what-if: {w['jobs_per_s']:,} jobs/s, {w['jobs_per_s'] / base_rate:.2f}x the "
            f"baseline; {w['cpu_ms_per_job']:.2f} ms CPU per job against {base_cpu:.2f})"
        )

    def verdict(label_start: str) -> str:
        w = found(label_start)
        if w is None:
            return "not measured"
        ratio = w["jobs_per_s"] / base_rate
        word = "slower" if ratio < 0.8 else "faster" if ratio > 1.2 else "within the noise"
        return f"{word} ({ratio:.2f}x the baseline, {w['cpu_ms_per_job']:.2f} ms CPU per job)"

    handoffs = (counts.get("lstat_self_s", 0.0) + counts.get("urandom_self_s", 0.0)) / jobs
    return [
        "**Where the time goes** (no-op jobs, so all of it is the job machinery):",
        "",
        f"- CPU: {cpu_ms:.2f} ms of worker CPU per job, almost all of it Python holding the "
        f"GIL, so one worker process tops out near {1000 / cpu_ms:,.0f} jobs/s whatever "
        "`--concurrency`; 500 jobs/s needs under 2 ms per job.",
        f"- SQL: {counts['statements_per_job']:.1f} statements in "
        f"{counts['commits_per_job']:.1f} transactions per job; `claim()` ran "
        f"{counts['claims']:,} times for {jobs:,} jobs ({counts['claims'] / jobs:.2f} claim "
        "transactions per job: the loop tops up slots that free one at a time).",
        "- Python CPU by step (py-spy `--gil`, inclusive share of GIL-holding samples): "
        f"`_succeed` {share('runner.py(_succeed)')} (of which re-loading the whole dataset "
        f"with `load_dataset_in` {share('base.py(load_dataset_in)')}, `finish` "
        f"{share('queue.py(finish)')}, `update_meta_in` {share('meta.py(update_meta_in)')}), "
        f"`claim` {share('queue.py(claim)')}, `load_dataset` before `run` "
        f"{share('base.py(load_dataset)')}. SQLAlchemy Core builds and cache-keys every "
        f"statement anew: {counts.get('sa_expect_calls', 0) / jobs:.0f} "
        "`coercions.expect` calls per job.",
        "- GIL hand-offs: every call that releases the GIL (each SQLite statement, the "
        "`lstat` of the job's scratch folder in `rmtree`, `os.urandom` for its name) lets "
        "the other thread run, and taking the GIL back can wait up to the 5 ms switch "
        f"interval: under cProfile `lstat` + `urandom` alone show {handoffs * 1000:.1f} ms "
        "per job of wall time for microseconds of work. What that costs in throughput: with "
        f"one pool thread the worker is {verdict('`--concurrency 1`')}; with a 0.5 ms switch "
        f"interval it is {verdict('GIL switch interval')}. Either way the CPU per job sets "
        "the ceiling.",
        "",
        "**Suggestions** (for the owners of `jobs/`):",
        "",
        "1. Claim in batches when the queue is deep (e.g. up to 64 per transaction), keeping "
        "the extra jobs in the executor's own queue" + measured("claim up to 64 jobs per") + ".",
        "2. Make the success transaction lighter: `_succeed` re-reads the whole dataset "
        "(folder row and every present item) only to compare input versions; select just the "
        "input items' etags, or put the version check in the UPDATE's WHERE clause.",
        "3. Load the dataset once per job: the `load_dataset` before `run` and the one in "
        "`_succeed` read the same rows milliseconds apart.",
        "4. Finish in batches: let pool threads hand finished jobs to the executor loop, "
        "which records all of them in one transaction per poll (one BEGIN/COMMIT, "
        "`executemany` updates) instead of one transaction per job.",
        "5. Skip `rmtree` and the `uuid4` name when the job never made its scratch folder "
        "(the context knows), and prebuild the hot statements (bound parameters or "
        "`lambda_stmt`) so they are not rebuilt and cache-keyed per call.",
        "",
    ]


def jobs_findings(result: BenchResult) -> list[str]:
    """Where the worker's time goes, from the profiles and what-if runs of jobs_bench."""
    raw = result.raw
    lines: list[str] = jobs_suggestions(result)
    if "cprofile_cumulative" in raw or "pyspy_inclusive" in raw:
        lines += [
            "Profiles (each on the same 10,000 jobs queued again): `python profile_worker.py "
            "worker.pstats` (`jobs_bench.PROFILE_DRIVER`: `mediamirror.cli:main` with "
            "`worker --burst` under cProfile, one profiler per pool thread wrapped around "
            "`run_claimed`, merged with the main thread's) and `py-spy record --format raw "
            "--rate 250 --gil -- mediamirror worker --burst`.",
            "",
        ]
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
        base_rate, base_cpu = baselines(raw)
        lines += [
            "What-if runs: the worker again with one change each, made in a bench-side "
            "driver (`jobs_bench.WHAT_IF_DRIVER`: a monkeypatch, an interpreter setting or a "
            "CLI option); "
            f"product code unchanged; the same {raw['jobs']:,} jobs queued again each time. "
            f"Baseline: {base_rate:,.0f} jobs/s and {base_cpu:.2f} ms CPU per job, the mean "
            "of the measurement and of the plain rerun; on this shared machine rates move by "
            "up to +-30 % between runs of the same code, so read the CPU per job and "
            "differences well beyond that.",
            "",
            "| change | jobs/s | vs baseline | CPU ms/job | machine |",
            "|---|---:|---:|---:|---|",
            f"| none (the measurement above) | {raw['jobs'] / raw['worker_s']:,.0f} | "
            f"{raw['jobs'] / raw['worker_s'] / base_rate:.2f} | "
            f"{raw['worker_cpu_s'] / raw['jobs'] * 1000:.2f} | |",
        ]
        lines += [
            f"| {w['change']} | {w['jobs_per_s']:,} | {w['jobs_per_s'] / base_rate:.2f} | "
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
    code_at_start = git_state()
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
    code_at_end = git_state()
    code = code_at_start
    if code_at_end != code_at_start:  # other people commit while a long run goes on
        code = f"{code_at_start} at the start, {code_at_end} at the end of the run"
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
                "git": code,
                "results": [asdict(r) for r in results],
            },
        )
    if args.write_docs:
        write_docs(section(results, info, started, total, argv, code), args.docs)


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
