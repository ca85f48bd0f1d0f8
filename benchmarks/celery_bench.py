"""Celery executor throughput: no-op jobs through Celery + Redis with 1, 2 and 4 worker
processes, beside the local executor, on one PostgreSQL catalog, in one run.

10,000 empty ``.mp4`` files in a local directory become 10,000 video datasets; each round
queues one job per dataset for the bench-only ``noop`` processor
(``benchmarks/noop_processor.py``) with ``mediamirror reprocess / --processor noop`` and
drains them:

- ``local``: ``mediamirror worker --executor local`` (default concurrency: the CPU count);
- ``celery N``: one ``mediamirror worker --executor celery --concurrency N`` (N prefork
  pool processes, its dispatcher beside it) on a redis-server of the benchmark's own;

each stopped with SIGTERM once every job ended.

The rate of a round is its jobs over the catalog's span from the first start to the last
finish (worker start-up excluded alike for both executors). The target: 4 processes at
least 1.5x the local executor, and each step up in processes faster than the one before
until the cores are busy. Beside each rate, the CPU time a job costs (the wall clock of a
machine that other work shares says little): in the worker's process tree (pool
processes, Celery's parent, the dispatcher) and in the PostgreSQL backends serving it,
from the first job's start to the last one's end (start-up excluded).

    MEDIAMIRROR_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/celery_bench.py [--jobs 10000] [--processes 1,2,4]
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from _bench_util import BENCH_DIR, MEDIAMIRROR, BenchResult, dump_json, loadavg, mm_env, say
from mediamirror.jobs.model import JOBS

TARGET_RATIO = 1.5
#: The catalog connections of the benchmark's workers say so (pg_stat_activity).
APPLICATION = "mediamirror-bench"
CONFIG = """\
processors:
  noop:
    python: "noop_processor:NoopProcessor"
    applies_to: [video]
    auto: false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_files(root: Path, count: int, per_dir: int = 100) -> None:
    for n in range(count):
        folder = root / f"d{n // per_dir:04d}"
        if n % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip-{n:06d}.mp4").touch()


class Catalog:
    """The benchmark's PostgreSQL schema, read directly for the spans."""

    def __init__(self, base: str) -> None:
        self.schema = f"bench_{secrets.token_hex(4)}"
        url = make_url(base).set(drivername="postgresql+psycopg")
        self.admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        self.url = (
            make_url(base)
            .update_query_dict(
                {"options": f"-csearch_path={self.schema}", "application_name": APPLICATION}
            )
            .render_as_string(hide_password=False)
        )
        self.engine = create_engine(
            make_url(self.url).set(drivername="postgresql+psycopg"), pool_size=1
        )

    def backends(self) -> list[int]:
        """Process ids of the PostgreSQL backends serving the benchmark's workers."""
        with self.admin.connect() as conn:
            rows = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": APPLICATION},
            )
            return [int(r[0]) for r in rows]

    def vacuum(self) -> None:
        """VACUUM ANALYZE the tables a round writes, so each round starts from the same
        upkeep (the dead row versions of the rounds before are gone, as autovacuum would
        make them on a catalog that is not rewritten five times in a minute)."""
        tables = ", ".join(f'"{self.schema}".{t}' for t in ("jobs", "folders", "items"))
        with self.admin.connect() as conn:
            conn.execute(text(f"VACUUM ANALYZE {tables}"))

    def max_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(JOBS.c.id), 0))).scalar_one())

    def states(self, since: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(JOBS.c.state, func.count()).where(JOBS.c.id > since).group_by(JOBS.c.state)
            )
            return {state: int(n) for state, n in rows}

    def span(self, since: int) -> float:
        with self.engine.connect() as conn:
            first, last = conn.execute(
                select(func.min(JOBS.c.started_at), func.max(JOBS.c.finished_at)).where(
                    JOBS.c.id > since
                )
            ).one()
        return float((last - first).total_seconds())

    def drop(self) -> None:
        self.engine.dispose()
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        self.admin.dispose()


def run_mm(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [MEDIAMIRROR, *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mediamirror {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc.stdout


def queue_jobs(env: dict[str, str], catalog: Catalog, jobs: int) -> int:
    since = catalog.max_id()
    run_mm(env, "reprocess", "/", "--processor", "noop")
    queued = catalog.states(since).get("queued", 0)
    if queued != jobs:
        raise RuntimeError(f"expected {jobs} queued jobs, found {queued}")
    return since


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process of ``pids``."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:  # gone
            continue
        out[pid] = times.user + times.system
    return out


@dataclass
class Round:
    """One round: its rate and the CPU a job cost in the worker and in PostgreSQL."""

    rate: float
    worker_ms: float
    postgres_ms: float
    processes: int

    def line(self) -> str:
        return (
            f"{self.rate:,.0f} jobs/s; CPU {self.worker_ms:.3f} ms/job in the worker's "
            f"{self.processes} processes + {self.postgres_ms:.3f} ms/job in PostgreSQL"
        )


def worker_round(
    env: dict[str, str], catalog: Catalog, jobs: int, args: list[str], ready: float = 60
) -> Round:
    """Queue ``jobs``, run ``mediamirror worker <args>`` until each one ended, stop it
    (SIGTERM); CPU counted from the first job's start to the last one's end."""
    since = queue_jobs(env, catalog, jobs)
    catalog.vacuum()
    proc = subprocess.Popen(
        [MEDIAMIRROR, "worker", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + ready
        while catalog.states(since).get("queued", 0) == jobs:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker started no job (exit {proc.returncode})")
            time.sleep(0.02)
        tree = psutil.Process(proc.pid)
        pids = [proc.pid] + [c.pid for c in tree.children(recursive=True)]
        before = cpu_seconds(pids + catalog.backends())
        wait_done(catalog, since, jobs, proc)
        pids = [proc.pid] + [c.pid for c in tree.children(recursive=True)]
        backends = catalog.backends()
        after = cpu_seconds(pids + backends)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    states = catalog.states(since)
    if states != {"success": jobs}:
        raise RuntimeError(f"{' '.join(args)}: {states}")

    def spent(which: list[int]) -> float:
        return sum(after[p] - before.get(p, 0.0) for p in which if p in after) / jobs * 1000

    workers = [p for p in pids if p not in backends]
    return Round(jobs / catalog.span(since), spent(workers), spent(backends), len(workers))


def wait_done(catalog: Catalog, since: int, jobs: int, proc: subprocess.Popen[str]) -> None:
    while True:
        states = catalog.states(since)
        if states.get("success", 0) + states.get("error", 0) >= jobs:
            if states.get("error"):
                raise RuntimeError(f"jobs failed: {states}")
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}) with {states}")
        time.sleep(0.05)


def run(
    work: Path, base_url: str, jobs: int, steps: list[int], pool: str, src: Path | None = None
) -> BenchResult:
    result = BenchResult("celery")
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    redis = subprocess.Popen(
        [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=work,
    )
    catalog = Catalog(base_url)
    try:
        home = work / "home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.yaml").write_text(CONFIG)
        env = mm_env(
            home,
            {
                "MEDIAMIRROR_DATABASE_URL": catalog.url,
                "MEDIAMIRROR_AUTO_POSTPROCESS": "false",
                "MEDIAMIRROR_SETTLE_SECONDS": "0",
                "MEDIAMIRROR_LOG_FILE": "off",
                "MEDIAMIRROR_EXECUTOR": "celery",
                "MEDIAMIRROR_BROKER_URL": f"redis://127.0.0.1:{port}/0",
                # --src: run another tree's mediamirror (e.g. `git archive` of an older
                # commit) with this virtualenv, for a before/after on the same machine.
                "PYTHONPATH": os.pathsep.join([*([str(src)] if src else []), str(BENCH_DIR)]),
            },
        )
        media = work / "media"
        make_files(media, jobs)
        run_mm(env, "source", "add", "bench", f"file://{media}", "--no-check")
        run_mm(env, "sync", "bench", "--quiet")
        say(f"celery bench: {jobs} no-op jobs per round, catalog on PostgreSQL ({loadavg()})")
        first = worker_round(env, catalog, jobs, ["--executor", "local"])
        local = first.rate
        result.note(f"local executor ({os.cpu_count()} threads): {first.line()} ({loadavg()})")
        result.row("local executor", local, "jobs/s")
        rates: dict[int, float] = {}
        cpu: dict[str, list[float]] = {"local": [first.worker_ms, first.postgres_ms]}
        for n in steps:
            args = ["--executor", "celery", "--concurrency", str(n), "--pool", pool]
            done = worker_round(env, catalog, jobs, args)
            rates[n] = done.rate
            cpu[f"celery {n}"] = [done.worker_ms, done.postgres_ms]
            result.note(
                f"celery + redis, {pool}, {n} process(es): {done.line()} "
                f"({rates[n] / local:.2f}x local; {loadavg()})"
            )
            result.row(f"celery {n} process(es)", rates[n], "jobs/s")
        top = max(steps)
        ratio = rates[top] / local
        result.row(
            f"celery {top} processes / local",
            ratio,
            "x",
            f">= {TARGET_RATIO}",
            ratio >= TARGET_RATIO,
        )
        growth = [rates[b] / rates[a] for a, b in itertools.pairwise(steps)]
        for (a, b), g in zip(itertools.pairwise(steps), growth, strict=True):
            result.row(f"celery {b} / {a} processes", g, "x")
        result.raw = {
            "jobs": jobs,
            "local": local,
            "celery": rates,
            "cpu_ms_per_job": cpu,
            "cpus": os.cpu_count(),
        }
    finally:
        catalog.drop()
        redis.terminate()
        redis.wait(10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--processes", default="1,2,4", help="celery pool sizes to measure")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "MEDIAMIRROR_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL database the benchmark makes a schema in (dropped afterwards)",
    )
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads"])
    parser.add_argument("--json", type=Path, help="write raw results here")
    parser.add_argument(
        "--src", type=Path, help="run the workers from this source tree (its src/ directory)"
    )
    args = parser.parse_args()
    steps = [int(n) for n in args.processes.split(",") if n.strip()]
    work = Path(tempfile.mkdtemp(prefix="mm-celery-bench-"))
    try:
        result = run(work, args.database_url, args.jobs, steps, args.pool, args.src)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for row in result.rows:
        say(f"{row.figure}: {row.shown()} {row.target} {row.verdict()}")
    if args.json:
        dump_json(args.json, result.raw)


if __name__ == "__main__":
    main()
