"""Search benchmark: ``GET /api/v1/search`` over 1,000,000 items, and what the index costs
a sync, on SQLite and PostgreSQL.

1. Latency. A catalog of ``--items`` items (default 1,000,000) in ``--datasets`` datasets
   (default 10,000: 60% videos, 30% image sequences, 10% large images, under 100 site
   folders of 10 camera folders; statuses mixed: ready, pending, new, 5% failed) written
   straight into the tables (sqlite3 ``executemany`` / PostgreSQL ``COPY``) of a catalog
   the current schema made, so the database's triggers fill the index as any writer
   would. Each query of a spread (a common substring, a rare one, a unique name, a path
   fragment, two-character prefixes, several words, filters alone and with text) is asked
   ``--requests`` times through the whole app in-process (``fastapi.testclient``: auth,
   routing, JSON), rounds interleaved; p50/p99 of wall time and the process CPU time.
   PostgreSQL gets ``ANALYZE`` (what autovacuum does); SQLite nothing.

2. Write cost. A local directory of ``--sync-keys`` files (default 100,000: 90% frames in
   folders of 100, 10% videos, one dataset each) synced in-process into a fresh catalog
   per run, three schemas side by side, rounds interleaved: ``none`` (the search
   migration's index removed), ``folders`` (what ships: folder paths indexed by
   triggers), ``items`` (the rejected option: item keys indexed too). Wall and CPU time
   ratios against ``none``.

    .venv/bin/python benchmarks/search_bench.py --pg postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/search_bench.py --items 100000 --datasets 1000 --sync-keys 20000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _bench_util import REPO, loadavg, pg_big_mount, say, wait_quiet

TARGET_MS = 50.0
STAMP = "2026-01-02 03:04:05.000000"
FOLDER_COLS = "id, source_id, parent_id, name, path, meta, state, created_at, updated_at"
ITEM_COLS = (
    "id, source_id, folder_id, key, name, size, etag, last_modified, state, "
    "needs_processing, updated_at"
)
KINDS = ["video"] * 6 + ["image-sequence"] * 3 + ["large-image"]
WORDS = ["reef", "kelp", "harbor", "mooring", "transect", "dive", "survey", "drift", "night"]


def _migration() -> Any:
    path = REPO / "src/mediamirror/catalog/migrations/versions/0009_search.py"
    spec = importlib.util.spec_from_file_location("search_migration", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the big catalog --------------------------------------------------------------------------


def dataset_rows(datasets: int, items: int) -> Iterator[tuple[str, str, dict[str, Any], int]]:
    """(parent path, name, meta, item count) of every dataset."""
    rng = random.Random(7)
    per = items // datasets
    for n in range(datasets):
        kind = KINDS[n % len(KINDS)]
        site, cam = n % 100, (n // 100) % 10
        word = WORDS[n % len(WORDS)]
        stem = f"{word}-s{site:02d}c{cam}-take{n:05d}"
        name = {
            "video": f"Video {stem}.mp4",
            "image-sequence": f"{stem}-frames",
            "large-image": f"Large image {stem}.tif",
        }[kind]
        roll = rng.random()
        meta: dict[str, Any] = {"type": kind, "fps": 30 if kind == "video" else 10}
        meta["import_path"] = f"site-{site:02d}/cam-{cam}"
        if roll < 0.05:
            meta["processing"] = {"video": {"state": "error", "error": "bad media"}}
            meta["MarkForPostProcess"] = False
        elif roll < 0.15:
            meta["MarkForPostProcess"] = True
        elif roll < 0.25:
            meta["MarkForPostProcess"] = False
        else:
            meta["MarkForPostProcess"] = False
            meta["annotate"] = True
            meta["processing"] = {"video": {"state": "success"}}
        yield f"/big/site-{site:02d}/cam-{cam}", name, meta, per


def catalog_rows(
    datasets: int, items: int, source_id: int, mount_id: int, first: int
) -> tuple[list[tuple], Iterator[tuple]]:
    folders: list[tuple] = []
    ids: dict[str, int] = {}

    def folder(parent: str, name: str, meta: dict[str, Any]) -> int:
        path = f"{parent}/{name}"
        if path not in ids:
            ids[path] = first + len(folders)
            parent_id = ids.get(parent, mount_id)
            meta_json = json.dumps(meta)
            folders.append(
                (ids[path], source_id, parent_id, name, path, meta_json, "present", STAMP, STAMP)
            )
        return ids[path]

    plan = []
    for parent, name, meta, count in dataset_rows(datasets, items):
        site, cam = parent.split("/")[2:4]
        folder("/big", site, {})
        folder(f"/big/{site}", cam, {})
        plan.append((folder(parent, name, meta), parent, name, count))

    def item_rows() -> Iterator[tuple]:
        item_id = 1
        for fid, parent, name, count in plan:
            for f in range(count):
                leaf = f"frame_{f:05d}.png"
                key = f"{parent[5:]}/{name}/{leaf}"
                yield (item_id, source_id, fid, key, leaf, 1000, f"e{item_id:x}", STAMP,
                       "present", False, STAMP)  # fmt: skip
                item_id += 1

    return folders, item_rows()


def fill_sqlite(path: Path, datasets: int, items: int, source_id: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    row = db.execute("SELECT id FROM folders WHERE path = '/big'").fetchone()
    if row is None:
        cur = db.execute(
            f"INSERT INTO folders ({FOLDER_COLS}) VALUES (NULL, ?, NULL, 'big', '/big', '{{}}', "
            f"'present', '{STAMP}', '{STAMP}')",
            (source_id,),
        )
        row = (cur.lastrowid,)
    mount = int(row[0])
    first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM folders").fetchone()[0]
    folders, item_rows = catalog_rows(datasets, items, source_id, mount, first)
    db.executemany(f"INSERT INTO folders ({FOLDER_COLS}) VALUES ({','.join('?' * 9)})", folders)
    db.executemany(f"INSERT INTO items ({ITEM_COLS}) VALUES ({','.join('?' * 11)})", item_rows)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def fill_pg(url: str, schema: str, datasets: int, items: int, source_id: int) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        mount, first = pg_big_mount(conn, source_id, STAMP)
        folders, item_rows = catalog_rows(datasets, items, source_id, mount, first)
        for table, cols, rows in (
            ("folders", FOLDER_COLS, iter(folders)),
            ("items", ITEM_COLS, item_rows),
        ):
            with conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("VACUUM ANALYZE folders")
        conn.execute("VACUUM ANALYZE items")


def pg_schema(base: str) -> tuple[str, str, str]:
    """(plain psycopg URL, schema, catalog URL in that schema)."""
    import psycopg

    plain = base.replace("postgresql+psycopg://", "postgresql://")
    schema = f"bench_search_{secrets.token_hex(4)}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    return plain, schema, f"{base}{sep}options=-csearch_path%3D{schema}"


def drop_schema(plain: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- latency ------------------------------------------------------------------------------------

QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("common substring", {"q": "take"}),
    ("common word", {"q": "reef"}),
    ("rare substring", {"q": "s42c7-take"}),
    ("unique name", {"q": "take04242"}),
    ("path fragment", {"q": "site-42/cam-3"}),
    ("two words", {"q": "mooring s07"}),
    ("2-char prefix", {"q": "Vi"}),
    ("1-char prefix", {"q": "k"}),
    ("no match", {"q": "zebrafish"}),
    ("text + type + status", {"q": "reef", "type": "video", "status": "ready"}),
    ("text + processor_state", {"q": "kelp", "processor_state": "video:error"}),
    ("status=error alone", {"status": "error"}),
    ("type + meta alone", {"type": "large-image", "meta": "fps:10"}),
    ("source + page 20", {"q": "take", "source": "big", "offset": 950}),
]


def open_client(url: str, home: Path) -> tuple[Any, Any]:
    from fastapi.testclient import TestClient

    from mediamirror import tokens
    from mediamirror.catalog.db import Catalog
    from mediamirror.config import load_settings
    from mediamirror.services import Services
    from mediamirror.web.app import create_app

    catalog = Catalog(url)
    token = tokens.create(catalog, "viewer", f"bench-{secrets.token_hex(3)}")
    settings = load_settings({"home": str(home), "database_url": url}, env={})
    app = create_app(Services(catalog, settings, {}), worker=False)
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    client.__enter__()
    return client, catalog


def measure(clients: dict[str, Any], requests: int) -> dict[str, dict[str, dict[str, float]]]:
    """Per backend and query: p50/p99 wall ms, mean CPU ms, hits; rounds interleaved."""
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {
        b: {name: [] for name, _ in QUERIES} for b in clients
    }
    totals: dict[str, dict[str, int]] = {b: {} for b in clients}
    for backend, client in clients.items():  # warm up: caches, first compile
        for name, params in QUERIES:
            r = client.get("/api/v1/search", params=params)
            assert r.status_code == 200, r.text
            totals[backend][name] = r.json()["total"]
    for _ in range(requests):
        for backend, client in clients.items():
            for name, params in QUERIES:
                w0, c0 = time.perf_counter(), time.process_time()
                r = client.get("/api/v1/search", params=params)
                w1, c1 = time.perf_counter(), time.process_time()
                assert r.status_code == 200
                samples[backend][name].append(((w1 - w0) * 1000, (c1 - c0) * 1000))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for backend, per in samples.items():
        out[backend] = {}
        for name, values in per.items():
            walls = sorted(v[0] for v in values)
            out[backend][name] = {
                "p50": percentile(walls, 50),
                "p99": percentile(walls, 99),
                "cpu": statistics.fmean(v[1] for v in values),
                "hits": totals[backend][name],
            }
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- write cost ---------------------------------------------------------------------------------

VARIANTS = ("none", "folders", "items")
SQLITE_ITEMS = [
    "CREATE VIRTUAL TABLE items_search USING fts5(key, content='items', content_rowid='id', "
    "tokenize='trigram')",
    "CREATE TRIGGER items_search_insert AFTER INSERT ON items BEGIN "
    "INSERT INTO items_search(rowid, key) VALUES (new.id, new.key); END",
    "CREATE TRIGGER items_search_delete AFTER DELETE ON items BEGIN "
    "INSERT INTO items_search(items_search, rowid, key) VALUES ('delete', old.id, old.key); END",
]


def make_tree(root: Path, keys: int) -> Path:
    tree = root / f"tree-{keys}"
    done = tree / ".complete"
    if done.exists():
        return tree
    videos = keys // 10
    frames = keys - videos
    for n in range(frames):
        d = tree / f"site-{n // 10000:02d}" / f"seq-{n // 100:05d}"
        if n % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"frame_{n % 100:03d}.png").touch()
    for n in range(videos):
        d = tree / f"site-{n // 1000:02d}" / "clips"
        if n % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"clip-{n:06d}.mp4").touch()
    done.touch()
    return tree


def prepare_variant(url: str, variant: str) -> Any:
    from sqlalchemy import text

    from mediamirror.catalog.db import Catalog

    catalog = Catalog(url)
    mig = _migration()
    with catalog.write() as conn:
        if catalog.is_sqlite:
            if variant == "none":
                for statement in mig.SQLITE_DOWN:
                    conn.execute(text(statement))
            elif variant == "items":
                for statement in SQLITE_ITEMS:
                    conn.execute(text(statement))
        elif variant == "none":
            conn.execute(text("DROP INDEX ix_folders_search_path"))
            conn.execute(text("DROP INDEX ix_folders_search_lower_name"))
        elif variant == "items":
            schema = conn.execute(
                text(
                    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                    "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
                )
            ).scalar()
            conn.execute(
                text(
                    "CREATE INDEX ix_items_search_key ON items "
                    f'USING gin (lower(key) "{schema}".gin_trgm_ops)'
                )
            )
    return catalog


def one_sync(url: str, variant: str, tree: Path) -> tuple[float, float]:
    from mediamirror.config import Settings
    from mediamirror.sources import add_source, sync_source

    catalog = prepare_variant(url, variant)
    try:
        add_source(catalog, "bench", tree.as_uri(), env={})
        w0, c0 = time.perf_counter(), time.process_time()
        sync_source(catalog, Settings(), "bench", {})
        return time.perf_counter() - w0, time.process_time() - c0
    finally:
        catalog.close()


def write_cost(
    work: Path, keys: int, rounds: int, pg: str | None
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    tree = make_tree(work, keys)
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for backend in ["sqlite"] + (["postgresql"] if pg else []):
        out[backend] = {v: [] for v in VARIANTS}
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                if backend == "sqlite":
                    db = work / f"sync-{variant}-{r}.db"
                    result = one_sync(f"sqlite:///{db}", variant, tree)
                    for p in work.glob(f"sync-{variant}-{r}.db*"):
                        p.unlink()
                else:
                    assert pg is not None
                    plain, schema, url = pg_schema(pg)
                    try:
                        result = one_sync(url, variant, tree)
                    finally:
                        drop_schema(plain, schema)
                out[backend][variant].append(result)
                say(
                    f"  sync {backend} {variant} round {r + 1}: "
                    f"{result[0]:.2f} s wall, {result[1]:.2f} s CPU"
                )
    return out


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--datasets", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="per query and backend")
    parser.add_argument("--sync-keys", type=int, default=100_000)
    parser.add_argument("--sync-rounds", type=int, default=2)
    parser.add_argument("--pg", default=os.environ.get("MEDIAMIRROR_TEST_DATABASE_URL"))
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "mm-search-bench"
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-write", action="store_true")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    say(f"search bench: {args.items:,} items in {args.datasets:,} datasets; load {loadavg()}")
    say(f"machine: {wait_quiet(120)}")
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items() if k != "pg"}}

    if not args.skip_latency:
        result["latency"] = latency(args)
        report_latency(result["latency"])
    if not args.skip_write:
        say(f"write cost: {args.sync_keys:,}-key local sync, {args.sync_rounds} round(s)")
        costs = write_cost(args.work_dir, args.sync_keys, args.sync_rounds, args.pg)
        result["write"] = report_write(costs, args.sync_keys)
    (args.work_dir / "search_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    say(f"raw figures: {args.work_dir / 'search_bench.json'}")


def latency(args: argparse.Namespace) -> dict[str, Any]:
    from mediamirror.catalog.db import Catalog
    from mediamirror.sources import add_source

    clients: dict[str, Any] = {}
    keep: list[Any] = []
    cleanup: list[tuple[str, str]] = []
    try:
        urls = {"sqlite": f"sqlite:///{args.work_dir / f'big-{secrets.token_hex(3)}.db'}"}
        if args.pg:
            plain, schema, url = pg_schema(args.pg)
            cleanup.append((plain, schema))
            urls["postgresql"] = url
        for backend, url in urls.items():
            t0 = time.perf_counter()
            cat = Catalog(url)
            add_source(cat, "big", "file:///bench", env={}, mount="/big", check=False)
            with cat.read() as conn:
                sid = conn.exec_driver_sql("SELECT id FROM sources WHERE name = 'big'").scalar()
            cat.close()
            if backend == "sqlite":
                fill_sqlite(Path(url.removeprefix("sqlite:///")), args.datasets, args.items, sid)
            else:
                fill_pg(cleanup[0][0], cleanup[0][1], args.datasets, args.items, sid)
            say(f"  built {backend} catalog in {time.perf_counter() - t0:.0f} s")
            client, catalog = open_client(url, args.work_dir / f"home-{backend}")
            clients[backend] = client
            keep.append(catalog)
        if urls["sqlite"]:
            size = Path(urls["sqlite"].removeprefix("sqlite:///")).stat().st_size
            say(f"  SQLite catalog: {size / 2**20:.0f} MiB")
        return measure(clients, args.requests)
    finally:
        for client in clients.values():
            client.__exit__(None, None, None)
        for catalog in keep:
            catalog.close()
        for plain, schema in cleanup:
            drop_schema(plain, schema)
        for p in args.work_dir.glob("big-*.db*"):
            p.unlink()


def report_latency(figures: dict[str, Any]) -> None:
    for backend, per in figures.items():
        say(f"\n{backend}: /api/v1/search in-process (target p99 <= {TARGET_MS:.0f} ms)")
        say(f"  {'query':26} {'hits':>7} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>8}  met?")
        for name, f in per.items():
            met = "yes" if f["p99"] <= TARGET_MS else "NO"
            say(
                f"  {name:26} {f['hits']:>7} {f['p50']:>8.1f} {f['p99']:>8.1f} "
                f"{f['cpu']:>8.1f}  {met}"
            )
        worst = max(f["p99"] for f in per.values())
        say(f"  worst p99 {worst:.1f} ms: {'met' if worst <= TARGET_MS else 'NOT met'}")


def report_write(costs: dict[str, Any], keys: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend, per in costs.items():
        base_w = statistics.fmean(w for w, _ in per["none"])
        base_c = statistics.fmean(c for _, c in per["none"])
        say(f"\n{backend}: {keys:,}-key local sync, mean of {len(per['none'])}")
        say(f"  {'index':10} {'wall s':>8} {'CPU s':>8} {'wall ratio':>11} {'CPU ratio':>10}")
        out[backend] = {}
        for variant, values in per.items():
            w = statistics.fmean(v[0] for v in values)
            c = statistics.fmean(v[1] for v in values)
            out[backend][variant] = {
                "wall": w,
                "cpu": c,
                "wall_ratio": w / base_w,
                "cpu_ratio": c / base_c,
            }
            say(f"  {variant:10} {w:>8.2f} {c:>8.2f} {w / base_w:>11.3f} {c / base_c:>10.3f}")
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
