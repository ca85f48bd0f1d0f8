"""The overview and the failures inbox on a big catalog: ``GET /api/v1/overview`` and
``GET /api/v1/failures`` at 1,000,000 items and 100,000 jobs, on SQLite and PostgreSQL.

The catalog is catalog_bench.py's (rows written straight into the tables: 10,000
image-sequence datasets holding ``--items`` items, ``--jobs`` jobs of which 10% failed),
with the failures' messages made distinct (a path and a number in each, as real ones
have) so the inbox has to group them. A second scenario fails *every* job, each with its
own message: the worst day the inbox can have.

Side by side, in one process and interleaved rounds: the endpoints (the whole app through
``fastapi.testclient``: auth, routing, JSON) against the row-by-row way of getting the same
answer (every folder's metadata through ``catalog.tree.dataset_status``, every failed job
through ``jobs.failures.group_key``). Wall-clock and this process's CPU time; PostgreSQL's
own CPU is not in the CPU figure.

    .venv/bin/python benchmarks/overview_bench.py                       # full size
    .venv/bin/python benchmarks/overview_bench.py --items 100000 --jobs 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _bench_util import REPO, loadavg, say
from catalog_bench import Shape, fill_pg, fill_sqlite

sys.path.insert(0, str(REPO / "src"))

from sqlalchemy import select, text

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, SOURCES
from mediamirror.catalog.tree import dataset_status
from mediamirror.jobs import failures
from mediamirror.jobs.failures import group_key
from mediamirror.jobs.model import JOBS

DISTINCT = (
    "UPDATE jobs SET error = 'seq-' || target_id || '/frame_' || id || "
    "'.png: frame ' || id || ' is not decodable (' || (id % 7) || ' bytes missing)', "
    "finished_at = {now} WHERE state = 'error'"
)
ALL_FAILED = (
    "UPDATE jobs SET state = 'error', active_key = NULL, "
    "error = 'seq-' || target_id || '/frame_' || id || '.png: frame ' || id || "
    "' is not decodable (' || (id % 7) || ' bytes missing)', finished_at = {now}"
)


def make_catalog(url: str, shape: Shape, pg: tuple[str, str] | None) -> Catalog:
    catalog = Catalog(url)  # the schema, as this version makes it
    with catalog.write() as conn:
        conn.execute(
            SOURCES.insert().values(name="big", url="file:///bench", kind="local", mount="/big")
        )
    if pg is None:
        fill_sqlite(Path(url.removeprefix("sqlite:///")), shape, 1)
    else:
        fill_pg(pg[0], pg[1], shape, 1)
    return catalog


def run_sql(catalog: Catalog, sql: str) -> None:
    now = "CURRENT_TIMESTAMP" if not catalog.is_sqlite else "datetime('now')"
    with catalog.write() as conn:
        conn.execute(text(sql.format(now=now)))
    if catalog.is_sqlite:
        with catalog.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        with catalog.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE jobs")


def row_by_row_overview(catalog: Catalog) -> dict[str, Any]:
    with catalog.read() as conn:
        statuses = Counter(
            dataset_status(r.meta or {})
            for r in conn.execute(select(FOLDERS.c.meta, FOLDERS.c.state))
            if r.state == "present"
        )
        jobs = Counter(r.state for r in conn.execute(select(JOBS.c.state)))
    return {"statuses": statuses, "jobs": jobs}


def row_by_row_failures(catalog: Catalog) -> Counter[str]:
    group_key.cache_clear()
    with catalog.read() as conn:
        rows = conn.execute(select(JOBS.c.processor, JOBS.c.error).where(JOBS.c.state == "error"))
        return Counter(group_key(p, e) for p, e in rows)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, value


def measure(catalog: Catalog, rounds: int) -> dict[str, dict[str, float]]:
    from fastapi.testclient import TestClient

    from mediamirror import tokens
    from mediamirror.config import load_settings
    from mediamirror.services import Services
    from mediamirror.web.app import create_app

    settings = load_settings(env={"MEDIAMIRROR_HOME": tempfile.mkdtemp()})
    app = create_app(Services(catalog, settings, {}), worker=False)
    token = tokens.create(catalog, "viewer", "bench")
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})

    def get(path: str) -> Callable[[], Any]:
        def call() -> Any:
            response = client.get(path)
            assert response.status_code == 200, response.text
            return response.json()

        return call

    cases = {
        "overview endpoint": get("/api/v1/overview"),
        "overview row by row": lambda: row_by_row_overview(catalog),
        "failures endpoint": get("/api/v1/failures?limit=20"),
        "failures again": get("/api/v1/failures?limit=20"),  # nothing failed since
        "failures row by row": lambda: row_by_row_failures(catalog),
    }
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    answers: dict[str, Any] = {}
    for _ in range(rounds):
        for name, fn in cases.items():
            if name == "failures endpoint":
                # Every round pays for grouping and normalising, as a new process would.
                group_key.cache_clear()
                failures._LAST.clear()
            wall, cpu, answers[name] = timed(fn)
            got[name].append((wall, cpu))
    # The two ways agree.
    ov, rows = answers["overview endpoint"], answers["overview row by row"]
    assert ov["datasets"]["total"] == sum(v for k, v in rows["statuses"].items() if k)
    assert ov["jobs"]["by_state"]["error"] == rows["jobs"]["error"]
    inbox, groups = answers["failures endpoint"], answers["failures row by row"]
    assert inbox["total_groups"] == len(groups) and inbox["total_jobs"] == sum(groups.values())
    return {
        name: {
            "wall_ms": statistics.median(w for w, _ in values),
            "cpu_ms": statistics.median(c for _, c in values),
        }
        for name, values in got.items()
    }


def report(backend: str, scenario: str, figures: dict[str, dict[str, float]]) -> None:
    for what, mine in (
        ("overview", "overview endpoint"),
        ("failures", "failures endpoint"),
        ("failures again", "failures again"),
    ):
        ours, rows = figures[mine], figures[f"{what.split()[0]} row by row"]
        say(
            f"{backend:10s} {scenario:17s} {what:14s} endpoint {ours['wall_ms']:8.1f} ms "
            f"(cpu {ours['cpu_ms']:7.1f})  row by row {rows['wall_ms']:8.1f} ms "
            f"(cpu {rows['cpu_ms']:7.1f})  ratio wall {rows['wall_ms'] / ours['wall_ms']:5.2f} "
            f"cpu {rows['cpu_ms'] / max(ours['cpu_ms'], 0.01):5.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg", default=os.environ.get("MEDIAMIRROR_TEST_DATABASE_URL"))
    args = parser.parse_args()
    shape = Shape(items=args.items, jobs=args.jobs)
    say(
        f"overview bench: {args.items:,} items, {args.jobs:,} jobs, {args.rounds} rounds; "
        f"load {loadavg()}"
    )
    backends: list[tuple[str, str, tuple[str, str] | None]] = []
    tmp = Path(tempfile.mkdtemp(prefix="overview-bench-"))
    backends.append(("sqlite", f"sqlite:///{tmp / 'catalog.db'}", None))
    schema = None
    if args.pg:
        schema = f"ovbench_{secrets.token_hex(4)}"
        from catalog_bench import _pg_admin, _pg_url

        _pg_admin(args.pg, f'CREATE SCHEMA "{schema}"')
        backends.append(("postgresql", _pg_url(args.pg, schema), (args.pg, schema)))
    try:
        for backend, url, pg in backends:
            started = time.perf_counter()
            catalog = make_catalog(url, shape, pg)
            run_sql(catalog, DISTINCT)
            say(f"{backend}: catalog built in {time.perf_counter() - started:.0f} s")
            report(backend, "10% failed", measure(catalog, args.rounds))
            run_sql(catalog, ALL_FAILED)
            report(backend, "every job failed", measure(catalog, args.rounds))
            catalog.close()
    finally:
        if schema is not None:
            from catalog_bench import _pg_admin

            _pg_admin(args.pg, f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
