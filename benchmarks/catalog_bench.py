"""Big catalogs: folder, dataset and jobs pages, and ``ls --json``, at 1,000,000 items.

A catalog of ``--items`` items (default 1,000,000) in 10,000 image-sequence datasets, all
under one source mount ``/big`` (9,900 datasets of 100 frames, ``seq-frames`` with 10,000,
the rest with one frame each), and ``--jobs`` jobs (default 100,000: 85% success, 10%
error, 4% queued, 1% running). The rows are written straight into the tables (sqlite3
``executemany`` / PostgreSQL ``COPY``) of a catalog whose schema the measured version made
itself, so the figures are those of a big catalog, not of the sync that built it.

Two versions side by side in one run: this working tree ("change") and the issue's
starting point ``1afa7bc`` ("base", ``git archive 1afa7bc`` unpacked in ``--base``), each
in a child process of its own (``PYTHONPATH``), each with its own catalog (SQLite file, and
a PostgreSQL schema when ``--pg URL`` or ``MEDIAMIRROR_TEST_DATABASE_URL`` is given). The
children serve the requests in-process (``fastapi.testclient``, the whole app: auth,
routing, JSON) and time each one (wall and process CPU; on PostgreSQL also the CPU of the
backends serving the child, found by ``application_name``, from ``/proc/<pid>/stat``);
rounds are interleaved, so load on the shared machine hits both alike. PostgreSQL
statistics are gathered (``ANALYZE``, what autovacuum does); SQLite's are not (nothing
runs ``ANALYZE`` on a user's catalog).

``--keep DIR`` keeps the built catalogs (SQLite files in DIR, PostgreSQL schemas
``catbench_<version>_<backend>_<items>_<jobs>_<migrations digest>``) and reuses them in
later runs of the same size whose version has the same migrations; ``--base`` may point
at any unpacked tree (a copy of ``src`` before a change, say) to compare against it.

``ls / -r --json`` of the whole tree runs as a real ``mediamirror`` command on the big
catalog and on a tenth of it (built the same way): its peak RSS (``VmHWM``) must not
grow with the tree, and the first bytes must come out long before the end.

    .venv/bin/python benchmarks/catalog_bench.py                     # full size, ~10-15 min
    .venv/bin/python benchmarks/catalog_bench.py --items 100000 --jobs 10000 --requests 40
    .venv/bin/python benchmarks/catalog_bench.py --skip-ls --keep benchmarks/.work/keep \
        --endpoints "10k frames"                          # again, without building
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _bench_util import PYTHON, REPO, loadavg, pg_big_mount, say, wait_quiet

BASE_COMMIT = "1afa7bc"
TARGET_MS = 50.0
PER_DATASET = 100
FRAMES = 10_000
STAMP = "2026-01-02 03:04:05.000000"


# -- the catalog's rows, written straight into the tables -------------------------------------


@dataclass
class Shape:
    """How many of each row a catalog gets."""

    items: int
    jobs: int
    datasets: int = 10_000

    def dataset_sizes(self) -> Iterator[tuple[str, int]]:
        """(directory, item count) of every dataset, in path order of their names."""
        frames = min(FRAMES, self.items // 10)
        rest = self.items - frames
        full = min(rest // PER_DATASET, self.datasets - 1)
        singles = self.datasets - 1 - full
        yield "seq-frames", frames
        for n in range(full):
            yield f"seq-{n:05d}", PER_DATASET
        for n in range(singles):
            yield f"single-{n:05d}", 1


def _meta(directory: str) -> str:
    return json.dumps(
        {
            "type": "image-sequence",
            "fps": 10,
            "import_path": directory,
            "import_source": f"file:///bench/{directory}",
            "MarkForPostProcess": False,
            "annotate": True,
        }
    )


def folder_rows(
    shape: Shape, source_id: int, mount_id: int, first_id: int
) -> Iterator[tuple[Any, ...]]:
    for n, (directory, _) in enumerate(shape.dataset_sizes()):
        updated = f"2026-01-02 03:{(n // 60) % 60:02d}:{n % 60:02d}.{n:06d}"
        yield (
            first_id + n,
            source_id,
            mount_id,
            directory,
            f"/big/{directory}",
            _meta(directory),
            "present",
            STAMP,
            updated,
        )


def item_rows(shape: Shape, source_id: int, first_folder: int) -> Iterator[tuple[Any, ...]]:
    item_id = 1
    for n, (directory, count) in enumerate(shape.dataset_sizes()):
        for f in range(count):
            name = f"frame_{f:05d}.png"
            yield (
                item_id,
                source_id,
                first_folder + n,
                f"{directory}/{name}",
                name,
                1000 + f,
                f"etag{item_id:08x}",
                STAMP,
                "present",
                False,
                STAMP,
            )
            item_id += 1


JOB_STATES = ["success"] * 85 + ["error"] * 10 + ["queued"] * 4 + ["running"]


def job_rows(shape: Shape, first_folder: int) -> Iterator[tuple[Any, ...]]:
    for n in range(1, shape.jobs + 1):
        state = JOB_STATES[(n * 37) % len(JOB_STATES)]
        target = first_folder + n % shape.datasets
        active = f"images:folder:{target}:v{n}" if state in ("queued", "running") else None
        yield (
            n,
            "images",
            "folder",
            target,
            f"v{n}",
            "{}",
            active,
            state,
            100,
            1,
            3,
            None,
            100.0 if state == "success" else 0.0,
            None,
            "",
            "bad frame" if state == "error" else None,
            False,
            None,
            None,
            STAMP,
            STAMP,
            None,
            None,
        )


FOLDER_COLS = "id, source_id, parent_id, name, path, meta, state, created_at, updated_at"
ITEM_COLS = (
    "id, source_id, folder_id, key, name, size, etag, last_modified, state, "
    "needs_processing, updated_at"
)
JOB_COLS = (
    "id, processor, target_type, target_id, input_version, args, active_key, state, "
    "priority, attempts, max_attempts, timeout, progress, message, log_tail, error, "
    "cancel_requested, worker, lease_expires_at, run_after, created_at, started_at, "
    "finished_at"
)


def _placeholders(cols: str, mark: str) -> str:
    return ", ".join([mark] * len(cols.split(",")))


def fill_sqlite(path: Path, shape: Shape, source_id: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    mount_id = _mount_sqlite(db, source_id)
    first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM folders").fetchone()[0]
    for table, cols, rows in (
        ("folders", FOLDER_COLS, folder_rows(shape, source_id, mount_id, first)),
        ("items", ITEM_COLS, item_rows(shape, source_id, first)),
        ("jobs", JOB_COLS, job_rows(shape, first)),
    ):
        sql = f"INSERT INTO {table} ({cols}) VALUES ({_placeholders(cols, '?')})"
        db.executemany(sql, rows)
        db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _mount_sqlite(db: sqlite3.Connection, source_id: int) -> int:
    row = db.execute("SELECT id FROM folders WHERE path = '/big'").fetchone()
    if row:
        return int(row[0])
    cur = db.execute(
        f"INSERT INTO folders ({FOLDER_COLS}) VALUES (NULL, ?, NULL, 'big', '/big', '{{}}', "
        f"'present', '{STAMP}', '{STAMP}')",
        (source_id,),
    )
    db.commit()
    return int(cur.lastrowid or 0)


def fill_pg(url: str, schema: str, shape: Shape, source_id: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        mount_id, first = pg_big_mount(conn, source_id, STAMP)
        for table, cols, rows in (
            ("folders", FOLDER_COLS, folder_rows(shape, source_id, mount_id, first)),
            ("items", ITEM_COLS, item_rows(shape, source_id, first)),
            ("jobs", JOB_COLS, job_rows(shape, first)),
        ):
            with conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
        for table in ("folders", "items", "jobs"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("VACUUM ANALYZE folders")
        conn.execute("VACUUM ANALYZE items")
        conn.execute("VACUUM ANALYZE jobs")


# -- a child: one version of mediamirror, one catalog ---------------------------------------


def child_main() -> None:
    """Serve the parent's requests (JSON lines on stdin/stdout) with this PYTHONPATH's
    mediamirror: ``init`` a catalog, ``open`` the app, ``get`` a URL n times (timed)."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the pipe
    state: dict[str, Any] = {}
    for line in sys.stdin:
        msg = json.loads(line)
        answer = _child_op(state, msg)
        out.write(json.dumps(answer) + "\n")
        out.flush()


def _child_op(state: dict[str, Any], msg: dict[str, Any]) -> dict[str, Any]:
    from mediamirror import tokens
    from mediamirror.catalog.db import Catalog

    op = msg["op"]
    if op == "init":
        from mediamirror.sources import add_source

        catalog = Catalog(msg["url"])
        add_source(catalog, "big", "file:///bench", env={}, mount="/big", check=False)
        with catalog.read() as conn:
            sid = conn.exec_driver_sql("SELECT id FROM sources WHERE name = 'big'").scalar()
        catalog.close()
        return {"source_id": sid}
    if op == "open":
        from fastapi.testclient import TestClient

        from mediamirror.config import load_settings
        from mediamirror.services import Services
        from mediamirror.web.app import create_app

        catalog = Catalog(msg["url"])
        token = tokens.create(catalog, "viewer", "bench")  # a fresh one: none is kept
        settings = load_settings({"home": msg["home"], "database_url": msg["url"]}, env={})
        app = create_app(Services(catalog, settings, {}), worker=False)
        client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
        client.__enter__()
        state["client"] = client
        with catalog.read() as conn:
            ids = {
                p: conn.exec_driver_sql(f"SELECT id FROM folders WHERE path = '{p}'").scalar()
                for p in msg["paths"]
            }
        return {"ids": ids}
    if op == "get":
        client = state["client"]
        walls, cpus = [], []
        size = 0
        server0 = server_cpu(msg.get("server"))
        for _ in range(msg["n"]):
            c0, t0 = time.process_time(), time.perf_counter()
            response = client.get(msg["url"])
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            if response.status_code != 200:
                return {"error": f"{response.status_code}: {response.text[:300]}"}
            size = len(response.content)
        server = (server_cpu(msg.get("server")) - server0) / msg["n"]
        return {
            "wall": walls,
            "cpu": cpus,
            "server_cpu": server,
            "bytes": size,
            "body": response.json(),
        }
    raise ValueError(op)


def server_cpu(server: dict[str, str] | None) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving this child's catalog
    (found by their ``application_name``; ``/proc/<pid>/stat``), 0 on SQLite."""
    if not server:
        return 0.0
    import psycopg

    with psycopg.connect(server["admin"], autocommit=True) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (server["name"],)
            )
        ]
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone, or a server on another machine
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class Child:
    def __init__(self, version: str, pythonpath: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMIRROR_")}
        env["PYTHONPATH"] = pythonpath
        self.version = version
        self.proc = subprocess.Popen(
            [PYTHON, __file__, "--child"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.version} child died")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.version}: {msg.get('url')}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


# -- the parent --------------------------------------------------------------------------------


@dataclass
class Catalogue:
    """One version's catalog on one backend."""

    version: str
    backend: str
    url: str
    home: Path
    pythonpath: str
    admin: str = ""
    ids: dict[str, int] = field(default_factory=dict)
    child: Child | None = None

    @property
    def server(self) -> dict[str, str] | None:
        """How a child finds the PostgreSQL backends it uses (None on SQLite)."""
        if self.backend != "pg":
            return None
        return {"admin": self.admin, "name": f"catbench_{self.version}_{os.getpid()}"}

    @property
    def app_url(self) -> str:
        if self.server is None:
            return self.url
        return f"{self.url}&application_name={self.server['name']}"


def schema_key(pythonpath: str) -> str:
    """A digest of a version's migrations: a kept catalog is reused only by a version whose
    schema it has."""
    digest = hashlib.sha256()
    for path in sorted(Path(pythonpath, "mediamirror/catalog/migrations").rglob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def build(
    version: str,
    backend: str,
    pythonpath: str,
    shape: Shape,
    work: Path,
    pg: str | None,
    keep: Path | None = None,
) -> Catalogue:
    name = f"{version}-{backend}-{shape.items}-{shape.jobs}-{schema_key(pythonpath)}"
    home = (keep or work) / name
    schema = f"catbench_{name.replace('-', '_')}" if keep else ""
    if keep and (home / "built").exists():
        url = f"sqlite:///{home / 'catalog.db'}" if backend == "sqlite" else ""
        say(f"  {version} {backend}: reusing {home}")
        url = url or _pg_url(pg or "", schema)
        return Catalogue(version, backend, url, home, pythonpath, _plain_pg(pg or ""))
    home.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        path = home / "catalog.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        assert pg is not None
        schema = schema or f"catbench_{version}_{secrets.token_hex(4)}"
        _pg_admin(pg, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        _pg_admin(pg, f'CREATE SCHEMA "{schema}"')
        url = _pg_url(pg, schema)
        if not keep:
            SCHEMAS.append(schema)
    cat = Catalogue(version, backend, url, home, pythonpath, _plain_pg(pg or ""))
    child = Child(version, pythonpath)
    made = child.ask(op="init", url=url)
    child.close()
    t0 = time.perf_counter()
    if backend == "sqlite":
        fill_sqlite(home / "catalog.db", shape, made["source_id"])
    else:
        fill_pg(_plain_pg(pg or ""), schema, shape, made["source_id"])
    say(f"  {version} {backend}: {shape.items:,} items written in {time.perf_counter() - t0:.0f} s")
    (home / "built").touch()
    return cat


SCHEMAS: list[str] = []


def _plain_pg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _pg_admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_plain_pg(url), autocommit=True) as conn:
        conn.execute(sql)


def _pg_url(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


ENDPOINT_FILTER = [""]


def endpoints(ids: dict[str, int], shape: Shape) -> list[tuple[str, str]]:
    return [e for e in _endpoints(ids, shape) if ENDPOINT_FILTER[0] in e[0]]


def _endpoints(ids: dict[str, int], shape: Shape) -> list[tuple[str, str]]:
    mount, small, frames = ids["/big"], ids["/big/seq-00001"], ids["/big/seq-frames"]
    deep = max(0, shape.datasets - 50)
    deep_frames = max(0, min(FRAMES, shape.items // 10) - 100)
    v1 = "/api/v1"
    return [
        ("folder: mount (counts)", f"{v1}/folders/{mount}"),
        ("children: mount, page 1", f"{v1}/folders/{mount}/children?limit=50"),
        ("children: mount, last page", f"{v1}/folders/{mount}/children?limit=50&offset={deep}"),
        ("children: mount, -updated p1", f"{v1}/folders/{mount}/children?sort=-updated"),
        (
            "children: mount, -updated last",
            f"{v1}/folders/{mount}/children?sort=-updated&offset={deep}",
        ),
        ("items: 100-item folder", f"{v1}/folders/{small}/items"),
        ("items: 10k folder, last page", f"{v1}/folders/{frames}/items?offset={deep_frames}"),
        ("folder: 10k frames (counts)", f"{v1}/folders/{frames}"),
        ("dataset: 100 items", f"{v1}/datasets/{small}"),
        ("dataset: 10k frames", f"{v1}/datasets/{frames}"),
        ("frames: 10k frames", f"{v1}/datasets/{frames}/frames"),
        ("jobs: state=error", f"{v1}/jobs?state=error"),
        ("jobs: state=error, page 100", f"{v1}/jobs?state=error&offset=5000"),
        ("jobs: all", f"{v1}/jobs"),
    ]


def measure_pages(
    cats: list[Catalogue], shape: Shape, requests: int, rounds: int
) -> list[dict[str, Any]]:
    per_round = max(1, requests // rounds)
    for cat in cats:
        cat.child = Child(cat.version, cat.pythonpath)
        paths = ["/big", "/big/seq-00001", "/big/seq-frames"]
        cat.ids = cat.child.ask(op="open", url=cat.app_url, home=str(cat.home), paths=paths)["ids"]
    results: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for r in range(rounds):
        say(f"  round {r + 1}/{rounds} ({wait_quiet(30)})")
        for cat in cats:
            for _name, url in endpoints(cat.ids, shape):
                assert cat.child is not None
                cat.child.ask(op="get", url=url, n=1)  # warm
        for name_index in range(len(endpoints(cats[0].ids, shape))):
            for cat in cats:
                name, url = endpoints(cat.ids, shape)[name_index]
                assert cat.child is not None
                got = cat.child.ask(op="get", url=url, n=per_round, server=cat.server)
                slot = results.setdefault(
                    (name, cat.backend, cat.version), {"wall": [], "cpu": [], "server": []}
                )
                slot["wall"] += got["wall"]
                slot["cpu"] += got["cpu"]
                slot["server"] += [got["server_cpu"]] * per_round
                slot["bytes"] = [got["bytes"]]
    for cat in cats:
        assert cat.child is not None
        cat.child.close()
    rows = []
    for (name, backend, version), got in results.items():
        rows.append(
            {
                "endpoint": name,
                "backend": backend,
                "version": version,
                "p50_ms": 1000 * statistics.median(got["wall"]),
                "p99_ms": 1000 * percentile(got["wall"], 0.99),
                "cpu_mean_ms": 1000 * statistics.fmean(got["cpu"]),
                # The client's own CPU per request: its tail (a garbage collection, say)
                # shows whatever the load on the machine.
                "cpu_p99_ms": 1000 * percentile(got["cpu"], 0.99),
                "server_cpu_mean_ms": 1000 * statistics.fmean(got["server"]),
                "wall_mean_ms": 1000 * statistics.fmean(got["wall"]),
                "bytes": got["bytes"][0],
                "n": len(got["wall"]),
            }
        )
    return rows


LS_PROBE = (
    "import atexit, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM'): sys.stderr.write('HWM ' + line.split()[1] + '\\n')\n"
    "atexit.register(_hwm)\n"
    "from mediamirror.cli import main\n"
    "sys.argv = ['mediamirror', 'ls', '/', '-r', '--json']\n"
    "main()\n"
)


def measure_ls(cat: Catalogue) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMIRROR_")}
    env.update(
        PYTHONPATH=cat.pythonpath, MEDIAMIRROR_HOME=str(cat.home), MEDIAMIRROR_DATABASE_URL=cat.url
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, "-c", LS_PROBE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(1)
    first_byte = time.perf_counter() - t0
    total = len(first)
    tail = b""
    while chunk := proc.stdout.read(1 << 20):
        total += len(chunk)
        tail = (tail + chunk)[-64:]
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0 or not tail.rstrip().endswith(b"}"):
        raise RuntimeError(f"{cat.version} ls failed: {err[-500:]}")
    hwm = next(int(x.split()[1]) for x in err.splitlines() if x.startswith("HWM "))
    return {
        "rss_mib": hwm / 1024,
        "seconds": seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "first_byte_s": first_byte,
        "mib_out": total / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="per endpoint and version")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--base", type=Path, default=Path(f"/tmp/base-{BASE_COMMIT}"))
    parser.add_argument("--pg", default=os.environ.get("MEDIAMIRROR_TEST_DATABASE_URL"))
    parser.add_argument("--skip-base", action="store_true")
    parser.add_argument("--skip-ls", action="store_true")
    parser.add_argument("--only", choices=["sqlite", "pg"])
    parser.add_argument("--endpoints", default="", help="only endpoints whose name has this")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the built catalogs here (SQLite files; PostgreSQL schemas catbench_*) and "
        "reuse them in later runs of the same size and schema",
    )
    args = parser.parse_args()
    if args.child:
        child_main()
        return
    ENDPOINT_FILTER[0] = args.endpoints
    if not (args.base / "src").is_dir() and not args.skip_base:
        sys.exit(f"{args.base}/src missing: git archive {BASE_COMMIT} | tar -x -C {args.base}")
    say(f"catalog_bench: {args.items:,} items, {args.jobs:,} jobs; load {loadavg()}")
    versions = [("change", str(REPO / "src"))]
    if not args.skip_base:
        versions.append(("base", str(args.base / "src")))
    backends = ["sqlite"] + (["pg"] if args.pg else [])
    if args.only:
        backends = [args.only]
    work = Path(tempfile.mkdtemp(prefix="catbench-", dir=REPO / "benchmarks" / ".work"))
    out: dict[str, Any] = {"items": args.items, "jobs": args.jobs, "pages": [], "ls": []}
    try:
        shape = Shape(args.items, args.jobs)
        for backend in backends:
            say(f"{backend}: building")
            cats = [build(v, backend, p, shape, work, args.pg, args.keep) for v, p in versions]
            out["pages"] += measure_pages(cats, shape, args.requests, args.rounds)
            if not args.skip_ls:
                small = Shape(args.items // 10, 0, datasets=1000)
                for v, p in versions:
                    little = build(v, backend, p, small, work, args.pg, args.keep)
                    big = next(c for c in cats if c.version == v)
                    for size, cat in ((small.items, little), (args.items, big)):
                        got: dict[str, Any] = dict(measure_ls(cat))
                        got.update(version=v, backend=backend, items=size)
                        out["ls"].append(got)
                        say(f"  ls {v} {backend} {size:,}: {got}")
        report(out)
    finally:
        for schema in SCHEMAS:
            _pg_admin(args.pg, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        (work / "results.json").write_text(json.dumps(out, indent=1))
        say(f"raw figures: {work / 'results.json'}")


def report(out: dict[str, Any]) -> None:
    pages = out["pages"]
    say(
        "\nendpoint | backend | change p50 / p99 ms | base p50 / p99 ms | p99 <= 50? | "
        "wall ratio | cpu ratio | cpu ms/request (client mean + PostgreSQL mean, client p99)"
    )
    for row in pages:
        if row["version"] != "change":
            continue
        base = next(
            (
                b
                for b in pages
                if b["version"] == "base"
                and b["endpoint"] == row["endpoint"]
                and b["backend"] == row["backend"]
            ),
            None,
        )
        shown = f"{row['p50_ms']:.1f} / {row['p99_ms']:.1f}"
        if base:
            bshown = f"{base['p50_ms']:.1f} / {base['p99_ms']:.1f}"
            wall = row["wall_mean_ms"] / base["wall_mean_ms"]
            cpu = row["cpu_mean_ms"] / base["cpu_mean_ms"]
            ratios = f"{wall:.3f} | {cpu:.3f}"
        else:
            bshown, ratios = "-", "- | -"
        met = "yes" if row["p99_ms"] <= TARGET_MS else "NO"
        cpu_ms = f"{row['cpu_mean_ms']:.1f} + {row['server_cpu_mean_ms']:.1f}"
        cpu_ms += f", client p99 {row['cpu_p99_ms']:.1f}"
        if base:
            cpu_ms += f" (base {base['cpu_mean_ms']:.1f} + {base['server_cpu_mean_ms']:.1f}"
            cpu_ms += f", client p99 {base['cpu_p99_ms']:.1f})"
        say(
            f"{row['endpoint']} | {row['backend']} | {shown} | {bshown} | {met} | {ratios} | "
            f"{cpu_ms}"
        )
    if out["ls"]:
        say("\nls -r --json | backend | items | peak RSS MiB | first byte s | total s | cpu s")
        for got in out["ls"]:
            say(
                f"{got['version']} | {got['backend']} | {got['items']:,} | {got['rss_mib']:.0f} | "
                f"{got['first_byte_s']:.2f} | {got['seconds']:.1f} | {got['cpu_s']:.1f}"
            )


if __name__ == "__main__":
    main()
