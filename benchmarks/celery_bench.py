"""Celery executor throughput: no-op jobs through Celery + Redis with 1, 2 and 4 worker
processes, beside the local executor, on one PostgreSQL catalog, in one run.

10,000 empty ``.mp4`` files in a local directory become 10,000 video datasets; each round
queues one job per dataset for the bench-only ``noop`` processor
(``benchmarks/noop_processor.py``) with ``mediamirror reprocess / --processor noop`` and
drains them:

- ``local``: ``mediamirror worker --burst`` (default concurrency: the CPU count);
- ``celery N``: one ``mediamirror worker --executor celery --concurrency N`` (N prefork
  pool processes, its dispatcher beside it) on a redis-server of the benchmark's own,
  stopped with SIGTERM once every job ended.

The rate of a round is its jobs over the catalog's span from the first start to the last
finish (worker start-up excluded alike for both executors). The target: 4 processes at
least 1.5x the local executor, and each step up in processes faster than the one before
until the cores are busy.

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
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from _bench_util import BENCH_DIR, MEDIAMIRROR, BenchResult, dump_json, loadavg, mm_env, say
from mediamirror.jobs.model import JOBS

TARGET_RATIO = 1.5
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
            .update_query_dict({"options": f"-csearch_path={self.schema}"})
            .render_as_string(hide_password=False)
        )
        self.engine = create_engine(
            make_url(self.url).set(drivername="postgresql+psycopg"), pool_size=1
        )

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


def wait_done(catalog: Catalog, since: int, jobs: int, proc: subprocess.Popen[str]) -> None:
    while True:
        states = catalog.states(since)
        if states.get("success", 0) + states.get("error", 0) >= jobs:
            if states.get("error"):
                raise RuntimeError(f"jobs failed: {states}")
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}) with {states}")
        time.sleep(0.2)


def local_round(env: dict[str, str], catalog: Catalog, jobs: int) -> float:
    since = queue_jobs(env, catalog, jobs)
    run_mm({**env, "MEDIAMIRROR_EXECUTOR": "local"}, "worker", "--burst")
    states = catalog.states(since)
    if states != {"success": jobs}:
        raise RuntimeError(f"local round: {states}")
    return jobs / catalog.span(since)


def celery_round(
    env: dict[str, str], catalog: Catalog, jobs: int, processes: int, pool: str
) -> float:
    since = queue_jobs(env, catalog, jobs)
    proc = subprocess.Popen(
        [
            MEDIAMIRROR,
            "worker",
            "--executor",
            "celery",
            "--concurrency",
            str(processes),
            "--pool",
            pool,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        wait_done(catalog, since, jobs, proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return jobs / catalog.span(since)


def run(work: Path, base_url: str, jobs: int, steps: list[int], pool: str) -> BenchResult:
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
                "PYTHONPATH": str(BENCH_DIR),
            },
        )
        media = work / "media"
        make_files(media, jobs)
        run_mm(env, "source", "add", "bench", f"file://{media}", "--no-check")
        run_mm(env, "sync", "bench", "--quiet")
        say(f"celery bench: {jobs} no-op jobs per round, catalog on PostgreSQL ({loadavg()})")
        local = local_round(env, catalog, jobs)
        result.note(
            f"local executor (worker --burst, {os.cpu_count()} threads): {local:,.0f} jobs/s"
        )
        result.row("local executor", local, "jobs/s")
        rates: dict[int, float] = {}
        for n in steps:
            rates[n] = celery_round(env, catalog, jobs, n, pool)
            result.note(
                f"celery + redis, {pool}, {n} process(es): {rates[n]:,.0f} jobs/s "
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
        result.raw = {"jobs": jobs, "local": local, "celery": rates, "cpus": os.cpu_count()}
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
    args = parser.parse_args()
    steps = [int(n) for n in args.processes.split(",") if n.strip()]
    work = Path(tempfile.mkdtemp(prefix="mm-celery-bench-"))
    try:
        result = run(work, args.database_url, args.jobs, steps, args.pool)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for row in result.rows:
        say(f"{row.figure}: {row.shown()} {row.target} {row.verdict()}")
    if args.json:
        dump_json(args.json, result.raw)


if __name__ == "__main__":
    main()
