"""Inventory benchmark: a first sync from an S3 Inventory report beside a listing sync.

One run, same keys, same machine:

1. A local directory of ``--files`` empty files (``cam-NNNN/frame-NNNNNN.bin``, every 25th
   a ``.jpg``, every 500th a ``.mp4``; the tree ``sync_bench.py`` uses, cached under
   ``--work-dir``) is the bucket: listing a million keys from moto's S3 server is not
   practical (minutes per listing), a directory walk is the fastest listing there is, so
   the ratio below is the least favourable one for the inventory (S3 answers a listing
   1,000 keys per request, tens of milliseconds each).
2. *Listing sync*: the source synced from its listing into a fresh SQLite catalog, once
   before and once after the inventory syncs (their mean is the reference).
3. An inventory report of the same keys (sizes, etags and dates from the same listing),
   written in AWS's format (manifest.json + manifest.checksum + data files of
   ``--rows-per-file`` rows, CSV.gz and Parquet) to moto's S3 API server.
4. *Reader*: download, MD5 checks, parsing, filtering and sorting, pages of ObjectInfo
   (``mediamirror.sync.inventory``), no catalog, in a child process: keys/s (wall and
   CPU) and the child's peak RSS (``VmHWM``), at two report sizes (``--rss-keys`` and
   ``--files``, in as many data files; both above one sorted run of 262,144 keys) to show
   whether memory grows with the report.
   ``--base-src`` runs the same reader from another source tree too (before a change).
   The first syncs from the report (step 5) run in a child process the same way.
5. *Inventory sync*: the same source synced from the report (the engine's ``listing``)
   into a fresh SQLite catalog: keys/s and the ratio to the listing sync, in wall time and
   in CPU time of this process (which moves less with other work on the machine). Both
   catalogs must end with the same items (key, size, etag, date to the millisecond).

Run from the repository root::

    .venv/bin/python benchmarks/inventory_bench.py              # 1,000,000 keys
    .venv/bin/python benchmarks/inventory_bench.py --files 100000
    .venv/bin/python benchmarks/inventory_bench.py --base-src /tmp/inv-before/src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from helpers import AWS_ENV, S3Server  # noqa: E402
from inventory_report import Row, listing_rows, write_report  # noqa: E402
from mediamirror.catalog.db import Catalog  # noqa: E402
from mediamirror.config import Settings  # noqa: E402
from mediamirror.sources import add_source, sync_source  # noqa: E402
from mediamirror.stores import ReadOnlyStore, open_store, parse_spec  # noqa: E402
from mediamirror.stores.local import LocalStore  # noqa: E402
from mediamirror.sync.inventory import (  # noqa: E402
    find_report,
    read_report,
    sync_from_inventory,
)
from sync_bench import ensure_files  # noqa: E402


def log(line: str) -> None:
    print(line, flush=True)


def catalog_at(path: Path) -> Catalog:
    if path.exists():
        path.unlink()
    for extra in ("-wal", "-shm"):
        Path(str(path) + extra).unlink(missing_ok=True)
    return Catalog(f"sqlite:///{path}")


def item_digest(catalog: Catalog) -> str:
    """A checksum of every item's key, size, etag, date (to ms) and state."""
    import hashlib

    from sqlalchemy import select

    from mediamirror.catalog.models import ITEMS

    digest = hashlib.sha256()
    query = select(
        ITEMS.c.key, ITEMS.c.size, ITEMS.c.etag, ITEMS.c.last_modified, ITEMS.c.state
    ).order_by(ITEMS.c.key)
    with catalog.read() as conn:
        for key, size, etag, modified, state in conn.execute(query):
            ms = modified.replace(microsecond=modified.microsecond // 1000 * 1000)
            digest.update(f"{key}\0{size}\0{etag}\0{ms.isoformat()[:23]}\0{state}\n".encode())
    return digest.hexdigest()


@dataclass
class Timed:
    """Wall and CPU seconds of this process (every thread) over one step."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Timed]:
    t = Timed()
    wall, cpu = time.perf_counter(), time.process_time()
    yield t
    t.wall, t.cpu = time.perf_counter() - wall, time.process_time() - cpu


#: The reader alone, or a first sync from the report into a fresh SQLite catalog, in a
#: child process (its own peak RSS): the same code for any source tree whose
#: ``Inventory(store, report, prefix, page_size)`` is a listing for ``sync_source``.
CHILD = """
import json, os, sys, time
import psutil
import pyarrow, pyarrow.csv, pyarrow.parquet
from mediamirror.catalog.db import Catalog
from mediamirror.config import Settings
from mediamirror.sources import add_source, sync_source
from mediamirror.stores import ReadOnlyStore, open_store, parse_spec
from mediamirror.sync.inventory import Inventory, find_report, read_report
url, endpoint, mode = sys.argv[1:4]
spec = parse_spec(url, preset="minio", endpoint_url=endpoint)
store = ReadOnlyStore(open_store(spec, os.environ))
report = read_report(store, find_report(store, "media"), "media")
listing = Inventory(store, report, "", 1000)
if mode == "sync":
    catalog = Catalog(f"sqlite:///{sys.argv[4]}")
    add_source(catalog, "files", f"file://{sys.argv[5]}", env=os.environ, check=False)
rss = psutil.Process().memory_info().rss
wall, cpu = time.perf_counter(), time.process_time()
if mode == "sync":
    summary = sync_source(catalog, Settings(sync_page_size=1000), "files", os.environ,
                          listing=listing)
    count = summary.added
else:
    count = sum(len(page) for page in listing(None))
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
# The peak of this program (rusage's maxrss would count the forking parent's pages too).
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"keys": count, "wall": wall, "cpu": cpu, "rss_before": rss, "peak": peak}))
"""


@dataclass
class Reader:
    keys: int
    wall: float
    cpu: float
    peak_mb: float  # the child's peak RSS
    before_mb: float  # its RSS once everything was imported, before reading


def in_child(url: str, endpoint: str, src: Path, *sync: str) -> Reader:
    """The reader (or with ``sync``: catalog path, directory: a first sync) in a child."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    mode = "sync" if sync else "read"
    argv = [sys.executable, "-c", CHILD, url, endpoint, mode, *sync]
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, check=False)
    if proc.returncode:
        raise SystemExit(f"{mode} from {src} failed ({proc.returncode})")
    got = json.loads(proc.stdout)
    mb = 1024 * 1024
    return Reader(got["keys"], got["wall"], got["cpu"], got["peak"] / mb, got["rss_before"] / mb)


def reader_table(readers: list[tuple[str, str, Reader]]) -> None:
    log("")
    log("| reader alone (download, MD5, parse, sort, pages) | keys/s wall | keys per CPU-s "
        "| peak RSS | over the RSS before reading |")  # fmt: skip
    log("|---|---|---|---|---|")
    for fmt, tree, got in readers:
        log(f"| {fmt}, {got.keys:,} keys ({tree}) | {got.keys / got.wall:,.0f} | "
            f"{got.keys / got.cpu:,.0f} | {got.peak_mb:.0f} MB | "
            f"{got.peak_mb - got.before_mb:+.0f} MB |")  # fmt: skip


def listing_sync(bench: Path, root: Path, settings: Settings, env: dict[str, str], n: int) -> Any:
    cat = catalog_at(bench / f"listing-{n}.db")
    add_source(cat, "files", f"file://{root}", env=env, check=False)
    with timed() as t:
        summary = sync_source(cat, settings, "files", env)
    log(f"listing sync {n}: {summary.line()}; wall {t.wall:.1f} s, CPU {t.cpu:.1f} s")
    digest = item_digest(cat)
    cat.close()
    return t, digest


def bench_s3(
    server: S3Server, bench: Path, settings: Settings, env: dict[str, str], count: int
) -> list[str]:
    """A bucket on moto's S3 API server: listing sync against ``sync --from-inventory``
    (its pass over the report, then the follow-up listing sync that writes nothing)."""
    client = server.client()
    bucket = "media-s3"
    client.create_bucket(Bucket=bucket)
    keys = [f"cam-{i // 1000:04d}/frame-{i % 1000:06d}.bin" for i in range(count)]
    with timed() as up, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    log(f"S3: {count:,} keys uploaded to moto in {up.wall:.0f} s")
    client.create_bucket(Bucket="inventory-s3")
    rows = listing_rows(client, bucket)
    write_report(client, "inventory-s3", bucket, rows, fmt="Parquet", files=2)
    options: dict[str, Any] = {"endpoint_url": server.endpoint, "preset": "minio"}

    listing_cat = catalog_at(bench / "s3-listing.db")
    add_source(listing_cat, "s3", f"s3://{bucket}/", env=env, **options)
    with timed() as listing:
        listed = sync_source(listing_cat, settings, "s3", env)
    log(f"S3: listing sync: {listed.line()}")
    want = item_digest(listing_cat)
    listing_cat.close()

    cat = catalog_at(bench / "s3-inventory.db")
    add_source(cat, "s3", f"s3://{bucket}/", env=env, **options)
    with timed() as whole:
        done = sync_from_inventory(cat, settings, "s3", env, "s3://inventory-s3/inventory/")
    for line in done.lines():
        log(f"S3: {line}")
    same = item_digest(cat) == want
    cat.close()
    if not same or done.since.writes:
        raise SystemExit("S3: the inventory sync does not match the listing sync")
    if done.from_report is None:
        raise SystemExit("S3: the report was not read")
    # The report is read and sorted before the pass's sync run: both count.
    first = whole.wall - done.since.seconds
    return [
        f"| S3 ({count:,} keys on moto): listing sync | {count / listing.wall:,.0f} keys/s "
        f"({listing.wall:.1f} s) |",
        f"| S3: `sync --from-inventory`, report read and sorted, then the pass over it | "
        f"{count / first:,.0f} "
        f"keys/s ({first:.1f} s): {listing.wall / first:.1f}x the listing sync |",
        f"| S3: `sync --from-inventory`, follow-up listing sync (0 writes) | "
        f"{done.since.seconds:.1f} s |",
        f"| S3: `sync --from-inventory`, whole command / listing sync (time) | "
        f"{whole.wall / listing.wall:.2f}x ({whole.wall:.1f} s) |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="keys [1,000,000]")
    parser.add_argument("--rows-per-file", type=int, default=250_000, help="[250,000]")
    parser.add_argument(
        "--s3-keys", type=int, default=20_000, help="keys of the S3 phase, 0: none [20,000]"
    )
    parser.add_argument(
        "--rss-keys", type=int, default=500_000, help="the smaller report's keys [500,000]"
    )
    parser.add_argument("--readers-only", action="store_true", help="measure the readers, no syncs")
    parser.add_argument(
        "--base-src", type=Path, help="another source tree: its reader measured too"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=ROOT / "benchmarks" / ".work", help="[benchmarks/.work]"
    )
    args = parser.parse_args(argv)
    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(AWS_ENV)
    env = dict(os.environ)
    root = work / f"files-{args.files}"
    made = ensure_files(root, args.files)
    how = f", made in {made:.0f} s" if made else " (cached)"
    log(f"tree: {args.files:,} empty files under {root}{how}")
    settings = Settings(sync_page_size=1000)
    bench = work / "inventory"
    bench.mkdir(exist_ok=True)

    objs = [o for page in LocalStore(root).list_pages() for o in page]
    rows = [Row(o.key, o.size, o.etag, o.last_modified) for o in objs]
    del objs
    server = S3Server()
    client = server.client()
    reports = {}
    try:
        for fmt in ("CSV", "Parquet"):
            inv_bucket = f"inventory-{fmt.lower()}"
            client.create_bucket(Bucket=inv_bucket)
            files = -(-len(rows) // args.rows_per_file)
            with timed() as t:
                write_report(client, inv_bucket, "media", rows, fmt=fmt, files=files, seed=1)
            log(f"{fmt}: report of {len(rows):,} rows in {files} file(s) written in {t.wall:.1f} s")
            spec = parse_spec(
                f"s3://{inv_bucket}/inventory/", preset="minio", endpoint_url=server.endpoint
            )
            store = ReadOnlyStore(open_store(spec, env))
            reports[fmt] = (store, read_report(store, find_report(store, "media"), "media"))
            small = rows[: args.rss_keys]
            client.create_bucket(Bucket=f"{inv_bucket}-small")
            # As many data files as the big report: four are downloaded at once either way.
            write_report(client, f"{inv_bucket}-small", "media", small, fmt=fmt, files=files)
        del rows
        trees = {"this tree": ROOT / "src"}
        if args.base_src:
            trees["base"] = args.base_src.resolve()
        readers: list[tuple[str, str, Reader]] = []
        for fmt in ("CSV", "Parquet"):
            for tree, src in trees.items():
                for suffix in ("-small", ""):
                    url = f"s3://inventory-{fmt.lower()}{suffix}/inventory/"
                    got = in_child(url, server.endpoint, src)
                    readers.append((fmt, tree, got))
                    log(f"{fmt} reader ({tree}), {got.keys:,} keys: wall {got.wall:.1f} s, "
                        f"CPU {got.cpu:.1f} s, peak RSS {got.peak_mb:.0f} MB "
                        f"({got.before_mb:.0f} MB before reading)")  # fmt: skip

        if args.readers_only:
            reader_table(readers)
            return 0
        # Listing, CSV, Parquet, listing: each inventory sync against the mean of the two
        # listing syncs around it (other work on a shared machine moves wall times).
        before, want = listing_sync(bench, root, settings, env, 1)
        figures: dict[tuple[str, str], Reader] = {}
        for fmt in reports:
            for tree, src in trees.items():
                db = bench / f"inventory-{fmt.lower()}.db"
                catalog_at(db).close()
                url = f"s3://inventory-{fmt.lower()}/inventory/"
                got = in_child(url, server.endpoint, src, str(db), str(root))
                cat = Catalog(f"sqlite:///{db}")
                same = item_digest(cat) == want
                cat.close()
                log(f"{fmt}: inventory sync ({tree}): {got.keys:,} added; wall {got.wall:.1f} s, "
                    f"CPU {got.cpu:.1f} s, peak RSS {got.peak_mb:.0f} MB; same items as the "
                    f"listing sync: {same}")  # fmt: skip
                if not same or got.keys != args.files:
                    raise SystemExit(f"{fmt}: the inventory sync does not match the listing sync")
                figures[fmt, tree] = got
        after, _ = listing_sync(bench, root, settings, env, 2)
        s3_lines = bench_s3(server, bench, settings, env, args.s3_keys) if args.s3_keys else []
    finally:
        server.stop()
    wall = (before.wall + after.wall) / 2
    cpu = (before.cpu + after.cpu) / 2
    n = args.files
    reader_table(readers)
    log("")
    log(f"| figure ({n:,} keys, SQLite catalog, local directory as the bucket) | value |")
    log("|---|---|")
    log(f"| listing sync (directory walk), mean of 2 | {n / wall:,.0f} keys/s wall, "
        f"{n / cpu:,.0f} keys per CPU-s ({before.wall:.1f} s, {after.wall:.1f} s) |")  # fmt: skip
    for (fmt, tree), synced in figures.items():
        log(f"| {fmt} report: first sync from the inventory ({tree}) | {n / synced.wall:,.0f} "
            f"keys/s wall, {n / synced.cpu:,.0f} keys per CPU-s, peak RSS "
            f"{synced.peak_mb:.0f} MB |")  # fmt: skip
        log(f"| {fmt} report ({tree}): speed ratio inventory sync / listing sync | "
            f"{wall / synced.wall:.2f}x wall, {cpu / synced.cpu:.2f}x CPU |")  # fmt: skip
    for line in s3_lines:
        log(line)
    shutil.rmtree(bench, ignore_errors=True)
    return 0


if __name__ == "__main__":
    started_at = datetime.now(UTC)
    code = main()
    log(f"done in {(datetime.now(UTC) - started_at).total_seconds():.0f} s")
    sys.exit(code)
