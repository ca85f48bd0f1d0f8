"""Sync benchmark: ``mediamirror sync`` against a raw listing, side by side in one run.

Phases (each printed as it runs, then a table of figure / target / met?):

1. S3: moto's S3 API server as a subprocess on localhost, a bucket of ``--keys`` objects
   (``site-NN/cam-NN/2024-MM-DD/...``: clips with JSON sidecars, frame folders, CSV, notes).
2. Raw boto3 ``list_objects_v2`` listings (PageSize 1000, every key consumed) interleaved
   with the real CLI: a listing, then per ``--rounds`` round a first sync into a fresh
   SQLite catalog, a listing, a re-sync, a listing. Each sync is divided by the mean of the
   two listings around it (wall time; also the engine's own time and CPU time), and each
   CLI run is split into start-up, sync and after-sync (post-processing planning).
3. Each re-sync of the unchanged bucket must write nothing: checksums of every row of
   ``items`` and ``folders`` (``updated_at`` included) before and after, and the summary
   line must say ``0 added, 0 changed, 0 deleted``.
4. Local: a directory of ``--files`` empty files (created once, cached under
   ``--work-dir``) synced by the CLI; keys/s and the subprocess's peak RSS.

Run from the repository root::

    .venv/bin/python benchmarks/sync_bench.py            # full sizes, prints the figures
    .venv/bin/python benchmarks/sync_bench.py --write-docs   # and updates docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

import boto3
import psutil
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
DOCS_TITLE = "# Benchmarks"
DOCS_INTRO = (
    "Every figure below comes from a script under `benchmarks/`, run on the project's "
    "2-core machine; each section names the exact command that produced it."
)
SECTION = "## Sync (issue: mirror buckets)"
BUCKET = "mediamirror-bench"

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never read the developer's own AWS files, never ask an instance metadata service.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}

TARGET_SYNC_RATIO = 1.10
TARGET_RESYNC_RATIO = 1.05
#: Local first sync of the tree, keys/s of the change over those of the issue's start.
TARGET_LOCAL_SPEEDUP = 2.0
#: Local unchanged re-sync over a bare ``os.scandir`` walk with ``stat`` of the tree.
TARGET_LOCAL_RESYNC_RATIO = 2.0
TARGET_RSS_MB = 300
#: The commit issue 8's ratios start from (built beside the change: ``--base``).
BASE_COMMIT = "1afa7bc"

SUMMARY = re.compile(
    r"(?P<added>\d+) added, (?P<changed>\d+) changed, (?P<deleted>\d+) deleted, "
    r"(?P<unchanged>\d+) unchanged in (?P<seconds>[\d.]+) s \((?P<rate>[\d,]+) keys/s\)"
)


def log(message: str) -> None:
    print(message, flush=True)


# -- the CLI as a measured subprocess ----------------------------------------------------------


@dataclass
class Summary:
    added: int
    changed: int
    deleted: int
    unchanged: int
    seconds: float  # measured inside the sync process (SyncSummary.seconds)
    rate: float  # keys/s as the sync process computed it (more digits than ``seconds``)
    line: str


@dataclass
class CliRun:
    """One finished ``mediamirror`` subprocess."""

    args: list[str]
    wall: float  # seconds, spawn to exit
    cpu: float  # user + system seconds of the process (wait4)
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes, wait4's ru_maxrss (the kernel's high-water mark)
    polled_rss: int  # bytes, highest RSS seen polling every 50 ms
    lines: list[tuple[float, str]]  # stdout lines with seconds since spawn

    @property
    def summary(self) -> Summary:
        for _, line in self.lines:
            match = SUMMARY.search(line)
            if match is not None:
                return Summary(
                    added=int(match["added"]),
                    changed=int(match["changed"]),
                    deleted=int(match["deleted"]),
                    unchanged=int(match["unchanged"]),
                    seconds=float(match["seconds"]),
                    rate=float(match["rate"].replace(",", "")),
                    line=line.strip(),
                )
        raise RuntimeError(f"no summary line in the output of {self.args}:\n{self.stdout}")

    @property
    def summary_at(self) -> float:
        """Seconds from spawn until the summary line was printed."""
        return next(t for t, line in self.lines if SUMMARY.search(line))

    @property
    def startup(self) -> float:
        """Spawn to the start of the sync: interpreter, imports, catalog, store client."""
        return max(self.summary_at - self.summary.seconds, 0.0)

    @property
    def after(self) -> float:
        """Summary line to exit: post-processing planning (auto_postprocess) and teardown."""
        return max(self.wall - self.summary_at, 0.0)

    def breakdown(self) -> str:
        return (
            f"{self.wall:.2f} s wall = {self.startup:.2f} start-up + "
            f"{self.summary.seconds:.2f} sync + {self.after:.2f} after; CPU {self.cpu:.2f} s"
        )


def mediamirror_command() -> list[str]:
    script = Path(sys.executable).parent / "mediamirror"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mediamirror.cli"]


def cli_env(
    home: Path, src: Path | None = None, settings: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The parent's environment without any MEDIAMIRROR_* setting, plus a fresh home;
    ``src``: run the package from that source tree (the base commit) instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMIRROR_")}
    env.update(AWS_ENV)
    env["MEDIAMIRROR_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"  # the summary line is timed when it is printed
    env.pop("PYTHONPATH", None)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    for key, value in (settings or {}).items():
        env[f"MEDIAMIRROR_{key.upper()}"] = value
    return env


def module_command() -> list[str]:
    """The CLI as a module of whatever ``PYTHONPATH`` holds (the base tree or this one)."""
    return [sys.executable, "-m", "mediamirror.cli"]


def _poll_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    try:
        proc = psutil.Process(pid)
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.05)
    except psutil.Error:
        return  # exited (or reaped) between two polls


def _read_lines(stream: IO[bytes], started: float, lines: list[tuple[float, str]]) -> None:
    for raw in iter(stream.readline, b""):
        lines.append((time.perf_counter() - started, raw.decode(errors="replace")))


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    profile: Path | None = None,
    command: Sequence[str] | None = None,
) -> CliRun:
    """Run the CLI, timing it from spawn to exit, with its CPU time and peak memory.

    With ``profile``, the process runs under ``py-spy record`` writing raw samples there
    (timings and memory are then those of a profiled run, not figures to publish).
    """
    script = list(command) if command is not None else mediamirror_command()
    cmd = [*script, *args]
    if profile is not None:
        cmd = [py_spy(), "record", "-r", "100", "-f", "raw", "--threads", "-o", str(profile)]
        cmd += ["--", *(script if len(script) > 1 else [sys.executable, *script]), *args]
    with tempfile.TemporaryFile() as err:
        stop = threading.Event()
        polled = [0]
        lines: list[tuple[float, str]] = []
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=dict(env), stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        reader = threading.Thread(
            target=_read_lines, args=(proc.stdout, started, lines), daemon=True
        )
        poller = threading.Thread(target=_poll_rss, args=(proc.pid, stop, polled), daemon=True)
        reader.start()
        poller.start()
        try:
            # wait4 rather than Popen.wait: it hands back this child's own rusage.
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - started
        stop.set()
        poller.join()
        reader.join()
        proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        run = CliRun(
            args=list(args),
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            returncode=proc.returncode,
            stdout="".join(line for _, line in lines),
            stderr=err.read().decode(errors="replace"),
            peak_rss=usage.ru_maxrss * 1024,  # KiB on Linux
            polled_rss=polled[0],
            lines=lines,
        )
    if run.returncode != 0:
        raise RuntimeError(
            f"mediamirror {' '.join(args)} exited with {run.returncode}:\n{run.stderr}{run.stdout}"
        )
    return run


# -- profiling (--profile) ---------------------------------------------------------------------


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def profile_report(raw: Path, top: int = 25) -> list[str]:
    """Threads, and the functions with most samples (inclusive, then self) of a py-spy file."""
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        n = int(count)
        total += n
        threads[frames[0].split(":", 1)[-1].strip(' "') or frames[0]] += n
        own[frames[-1]] += n
        for frame in set(frames[1:]):
            inclusive[frame] += n
    if not total:
        return ["  (no samples)"]
    out = [
        f"  {total:,} samples; threads: "
        + ", ".join(f"{t} {100 * n / total:.0f}%" for t, n in threads.most_common())
    ]
    noise = ("threading.py", "click/", "<module>", "(<frozen", "runpy", "main (mediamirror/cli")
    shown = [(f, n) for f, n in inclusive.most_common() if not any(s in f for s in noise)]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in shown[:top]]
    out.append("  self:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top // 2)]
    return out


# -- the S3 API server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[tuple[str, psutil.Process]]:
    """moto's S3 API server as a subprocess; yields its endpoint URL and process."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **AWS_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # it answered HTTP: ready
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {endpoint}") from None
                time.sleep(0.05)
        yield endpoint, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client(endpoint: str, pool: int = 16) -> S3Client:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=pool,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def bucket_keys(count: int, seed: int = 20240101) -> list[tuple[str, int]]:
    """``count`` (key, size) pairs laid out like camera-trap uploads, deterministic.

    Each ``site-NN/cam-NN/2024-MM-DD/`` day holds a few clips with a JSON sidecar each
    (``clip-HHMMSS.mp4`` + ``clip-HHMMSS.json``), a ``frames/`` folder of JPEGs, a
    telemetry CSV and a notes file: about 45% images, 35% video+sidecar, 20% CSV/text.
    """
    rng = random.Random(seed)
    keys: list[tuple[str, int]] = []
    day = 0
    while len(keys) < count:
        month, mday = divmod(day % 336, 28)
        for site in range(10):
            for cam in range(8):
                base = f"site-{site:02d}/cam-{cam:02d}/2024-{month + 1:02d}-{mday + 1:02d}/"
                for _ in range(rng.randint(2, 6)):
                    stamp = f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
                    keys.append((f"{base}clip-{stamp}.mp4", rng.randint(64, 512)))
                    keys.append((f"{base}clip-{stamp}.json", rng.randint(16, 256)))
                first = rng.randrange(90_000)
                for frame in range(rng.randint(6, 14)):
                    keys.append(
                        (f"{base}frames/frame-{first + frame:06d}.jpg", rng.randint(64, 512))
                    )
                keys.append((f"{base}telemetry.csv", rng.randint(16, 256)))
                if rng.random() < 0.7:
                    keys.append((f"{base}notes-{rng.randrange(1000):03d}.txt", rng.randint(0, 128)))
        day += 1
    unique = dict(keys)  # a repeated clip stamp keeps one key
    while len(unique) < count:  # top up (rare) so the bucket holds exactly ``count``
        unique[f"extra/extra-{len(unique):07d}.txt"] = 1
    return sorted(unique.items())[:count]


def fill_bucket(client: S3Client, keys: Sequence[tuple[str, int]], threads: int) -> float:
    """Upload every key through a bounded thread pool; returns seconds taken."""
    client.create_bucket(Bucket=BUCKET)
    started = time.perf_counter()
    done = 0
    step = max(len(keys) // 10, 1)

    def put(item: tuple[str, int]) -> None:
        key, size = item
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x" * size)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(put, keys):
            done += 1
            if done % step == 0:
                rate = done / (time.perf_counter() - started)
                log(f"  uploaded {done:,}/{len(keys):,} ({rate:,.0f} keys/s)")
    return time.perf_counter() - started


def raw_listing(client: S3Client) -> tuple[float, float, int]:
    """Wall and CPU seconds (this thread) to list the whole bucket with boto3's paginator,
    touching every field of every key; and the number of keys."""
    started = time.perf_counter()
    cpu = time.thread_time()
    count = 0
    size = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET, PaginationConfig={"PageSize": 1000}):
        for obj in page.get("Contents", ()):
            count += 1
            size += obj["Size"]
            _ = (obj["Key"], obj["ETag"], obj["LastModified"])
    return time.perf_counter() - started, time.thread_time() - cpu, count


# -- catalog checks ----------------------------------------------------------------------------


def table_digest(db: Path, table: str) -> tuple[str, int]:
    """SHA-256 over every column of every row of ``table`` (by id), and the row count."""
    digest = hashlib.sha256()
    rows = 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY id"):
            digest.update(repr(row).encode())
            rows += 1
    return digest.hexdigest(), rows


def catalog_digest(db: Path) -> dict[str, tuple[str, int]]:
    return {table: table_digest(db, table) for table in ("items", "folders")}


#: What a local first sync must leave, whichever code wrote it: every item (with its folder
#: and its stored time as text), every folder's metadata and the jobs post-processing
#: queued, without ids or write times (two catalogs number and stamp rows apart).
LOCAL_CONTENT = {
    "items": "SELECT i.key, i.name, i.size, i.etag, i.last_modified, i.state, "
    "i.needs_processing, f.path FROM items i JOIN folders f ON f.id = i.folder_id "
    "ORDER BY i.key",
    "folders": "SELECT path, meta, state FROM folders ORDER BY path",
    "jobs": "SELECT j.processor, f.path, j.input_version, j.args, j.state FROM jobs j "
    "JOIN folders f ON f.id = j.target_id ORDER BY j.processor, f.path",
}


def content_digest(db: Path) -> dict[str, tuple[str, int]]:
    """SHA-256 and row count of each query of :data:`LOCAL_CONTENT`."""
    found = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for name, query in LOCAL_CONTENT.items():
            digest = hashlib.sha256()
            rows = 0
            for row in conn.execute(query):
                digest.update(repr(row).encode())
                rows += 1
            found[name] = (digest.hexdigest(), rows)
    return found


# -- results -----------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    value: str
    target: str
    met: bool | None  # None: informational, no target


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.figures.append(Figure(name, value, target, met))


def verdict(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**NO**")


def mb(nbytes: int) -> float:
    return nbytes / 1_000_000


# -- phase 1-3: S3 -----------------------------------------------------------------------------


def bench_s3(args: argparse.Namespace, work: Path, results: Results) -> None:
    log(f"== S3: {args.keys:,} keys on moto's S3 API server")
    keys = bucket_keys(args.keys)
    with moto_server() as (endpoint, server):
        client = s3_client(endpoint, pool=max(args.upload_threads, 10))
        upload = fill_bucket(client, keys, args.upload_threads)
        log(f"  bucket filled in {upload:.1f} s ({len(keys) / upload:,.0f} keys/s)")
        results.notes.append(
            f"S3 bucket: {len(keys):,} keys ({sum(s for _, s in keys) / 1e6:.1f} MB) like "
            "`site-NN/cam-NN/2024-MM-DD/clip-HHMMSS.mp4` + `.json` sidecar, "
            "`frames/frame-NNNNNN.jpg`, `telemetry.csv`, `notes-NNN.txt`; uploaded to moto "
            f"{moto_version()} in {upload:.0f} s with {args.upload_threads} threads "
            f"({len(keys) / upload:,.0f} keys/s)."
        )

        listings: list[Timed] = []

        def listing(label: str) -> Timed:
            wait_quiet(args.quiet_wait)
            stall = Stall()
            cpu0 = process_cpu(server)
            seconds, cpu, count = raw_listing(client)
            if count != len(keys):
                raise RuntimeError(f"listed {count} keys, expected {len(keys)}")
            timed = Timed(seconds, cpu, process_cpu(server) - cpu0)
            listings.append(timed)
            log(
                f"  raw listing {label}: {seconds:.2f} s ({count / seconds:,.0f} keys/s); "
                f"CPU {cpu:.2f} s + moto {timed.server_cpu:.2f} s{stall.done()}"
            )
            return timed

        def sync(label: str, env: Mapping[str, str]) -> Synced:
            profile = work / "profiles" / f"s3-{label}.txt" if args.profile else None
            wait_quiet(args.quiet_wait)
            stall = Stall()
            cpu0 = process_cpu(server)
            run = run_cli(["sync", "bench", "--quiet"], env, profile)
            moto = process_cpu(server) - cpu0
            pressure = stall.done()
            log(f"  {label}: {run.breakdown()} + moto {moto:.2f} s{pressure} | {run.summary.line}")
            if profile is not None:
                log("\n".join(profile_report(profile)))
            return Synced(run, moto, Timed(0, 0, 0))

        raw_listing(client)  # warm-up, not counted: first requests, connections
        firsts: list[Synced] = []
        resyncs: list[Synced] = []
        writes: list[bool] = []
        before_l = listing("#0")
        for rnd in range(1, args.rounds + 1):
            home = work / f"home-s3-{rnd}"
            reset_dir(home)
            env = cli_env(home, settings={"sync_list_width": str(args.list_width)})
            add = ["source", "add", "bench", f"s3://{BUCKET}", "--endpoint-url", endpoint]
            run_cli([*add, "--preset", "minio"], env)
            first = sync(f"first-sync-{rnd}", env)
            if first.run.summary.added != len(keys):
                raise RuntimeError(f"first sync added {first.run.summary.added}, not {len(keys)}")
            after_l = listing(f"#{2 * rnd - 1}")
            first.around = before_l.mean(after_l)
            firsts.append(first)
            db = home / "catalog.db"
            before = catalog_digest(db)
            resync = sync(f"re-sync-{rnd}", env)
            after = catalog_digest(db)
            rs = resync.run.summary
            same = before == after
            zero = (rs.added, rs.changed, rs.deleted, rs.unchanged) == (0, 0, 0, len(keys))
            writes.append(same and zero)
            log(
                "    items/folders rows: "
                + ", ".join(f"{t} {before[t][1]:,} sha256 {before[t][0][:12]}" for t in before)
                + (" -> identical" if same else " -> CHANGED")
            )
            before_l = listing(f"#{2 * rnd}")
            resync.around = after_l.mean(before_l)
            resyncs.append(resync)

    walls = [t.wall for t in listings]
    mean_l = statistics.mean(walls)
    f = Ratios(firsts)
    r = Ratios(resyncs)
    log(
        f"  raw listing: mean {mean_l:.2f} s, min {min(walls):.2f} s over {len(walls)} "
        f"({', '.join(f'{x:.2f}' for x in walls)})"
    )
    log(f"  first sync / listing: {f.text()}")
    log(f"  re-sync / listing: {r.text()}")

    n = args.rounds
    results.add(
        f"S3 raw listing, boto3 (mean of {len(walls)})",
        f"{mean_l:.2f} s (min {min(walls):.2f}, max {max(walls):.2f}); CPU "
        f"{statistics.mean(t.cpu for t in listings):.2f} s + moto "
        f"{statistics.mean(t.server_cpu for t in listings):.2f} s",
    )
    results.add(f"S3 first sync, CLI (mean of {n})", mean_breakdown(firsts))
    target = f"<= {TARGET_SYNC_RATIO:.2f}x"
    results.add("S3 first sync / raw listing", f.text(), target, f.wall <= TARGET_SYNC_RATIO)
    results.add(f"S3 re-sync, unchanged, CLI (mean of {n})", mean_breakdown(resyncs))
    target = f"<= {TARGET_RESYNC_RATIO:.2f}x"
    results.add("S3 re-sync / raw listing", r.text(), target, r.wall <= TARGET_RESYNC_RATIO)
    results.add(
        "S3 re-sync writes to items/folders",
        (
            "none: every row identical; summary 0 added, 0 changed, 0 deleted"
            if all(writes)
            else f"WRITES in {writes.count(False)} of {len(writes)} re-syncs"
        ),
        "0 writes",
        all(writes),
    )
    results.add("S3 first sync peak RSS", f"{mb(max(s.run.peak_rss for s in firsts)):.0f} MB")


@dataclass
class Timed:
    """A raw listing: wall seconds, this process's CPU, the S3 server's CPU meanwhile."""

    wall: float
    cpu: float
    server_cpu: float

    def mean(self, other: Timed) -> Timed:
        return Timed(
            (self.wall + other.wall) / 2,
            (self.cpu + other.cpu) / 2,
            (self.server_cpu + other.server_cpu) / 2,
        )


@dataclass
class Synced:
    """A sync run, the S3 server's CPU meanwhile, and the mean of the listings around it."""

    run: CliRun
    server_cpu: float
    around: Timed


class Ratios:
    """Sync over the listings around it, averaged over rounds: wall (the figure), the
    engine's own seconds, and CPU (sync process + S3 server over listing + S3 server,
    which does not depend on other load but gives no credit for overlapping work)."""

    def __init__(self, runs: list[Synced]) -> None:
        self.each = [s.run.wall / s.around.wall for s in runs]
        self.wall = statistics.mean(self.each)
        self.inner = statistics.mean(s.run.summary.seconds / s.around.wall for s in runs)
        self.cpu = statistics.mean(
            (s.run.cpu + s.server_cpu) / (s.around.cpu + s.around.server_cpu) for s in runs
        )

    def text(self) -> str:
        return (
            f"{self.wall:.2f}x (rounds {', '.join(f'{x:.2f}' for x in self.each)}; "
            f"sync alone {self.inner:.2f}x; CPU time {self.cpu:.2f}x)"
        )


def mean_breakdown(runs: list[Synced]) -> str:
    def avg(get: Callable[[CliRun], float]) -> float:
        return statistics.mean(get(s.run) for s in runs)

    moto = statistics.mean(s.server_cpu for s in runs)
    return (
        f"{avg(lambda r: r.wall):.2f} s wall = {avg(lambda r: r.startup):.2f} start-up + "
        f"{avg(lambda r: r.summary.seconds):.2f} sync + {avg(lambda r: r.after):.2f} after; "
        f"CPU {avg(lambda r: r.cpu):.2f} s + moto {moto:.2f} s"
    )


def process_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


# -- phase 4: local directory ------------------------------------------------------------------


def local_name(index: int) -> str:
    """File ``index`` (1-based) of a camera folder: mostly .bin, some .jpg and .mp4."""
    if index % 500 == 0:
        return f"frame-{index:06d}.mp4"
    if index % 25 == 0:
        return f"frame-{index:06d}.jpg"
    return f"frame-{index:06d}.bin"


def ensure_files(root: Path, count: int, per_dir: int = 1000) -> float | None:
    """Create ``count`` empty files under ``root`` once; None when cached from a prior run."""
    stamp = root.with_name(root.name + ".complete")
    if stamp.exists() and stamp.read_text().strip() == str(count) and root.is_dir():
        return None
    log(f"  creating {count:,} empty files under {root} (cached for later runs)")
    started = time.perf_counter()
    flags = os.O_CREAT | os.O_WRONLY
    made = 0
    folder = 0
    while made < count:
        folder += 1
        path = root / f"cam-{folder:04d}"
        path.mkdir(parents=True, exist_ok=True)
        base = str(path) + "/"
        for index in range(1, min(per_dir, count - made) + 1):
            os.close(os.open(base + local_name(index), flags, 0o644))
        made += min(per_dir, count - made)
        if folder % 100 == 0:
            log(f"    {made:,} files")
    stamp.write_text(f"{count}\n")
    return time.perf_counter() - started


WALK = """
import os, sys, time
def walk(path):
    n = 0
    with os.scandir(path) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                n += walk(e.path)
            else:
                e.stat()
                n += 1
    return n
t = time.perf_counter()
n = walk(sys.argv[1])
print(f"walked {n} files in {time.perf_counter() - t:.3f} s")
"""


def bare_walk(root: Path, expected: int) -> CliRun:
    """A bare ``os.scandir`` walk with ``stat`` of every file, in its own process (like
    the CLI: spawn to exit, CPU time and peak memory from wait4)."""
    run = run_cli([str(root)], {**os.environ}, command=[sys.executable, "-c", WALK])
    if f"walked {expected} files" not in run.stdout:
        raise RuntimeError(f"the bare walk saw another tree: {run.stdout.strip()}")
    return run


def local_sync(label: str, env: Mapping[str, str], args: argparse.Namespace, work: Path) -> CliRun:
    profile = work / "profiles" / f"local-{label}.txt" if args.profile else None
    wait_quiet(args.quiet_wait)
    stall = Stall()
    run = run_cli(["sync", "files", "--quiet"], env, profile, command=module_command())
    log(f"  {label}: {run.breakdown()}{stall.done()} | {run.summary.line}")
    log(f"    peak RSS {mb(run.peak_rss):.0f} MB (wait4), {mb(run.polled_rss):.0f} MB (polled)")
    if profile is not None:
        log("\n".join(profile_report(profile)))
    return run


def bench_local(args: argparse.Namespace, work: Path, results: Results) -> None:
    """First syncs of the tree by the change and by the base commit (interleaved, fresh
    catalogs), then the change's unchanged re-sync between two bare walks of the tree."""
    log(f"== local: {args.files:,} empty files")
    root = work / f"files-{args.files}"
    created = ensure_files(root, args.files)
    log(
        f"  using the files cached under {root}"
        if created is None
        else f"  created in {created:.0f} s"
    )
    base: Path | None = args.base
    if base is not None and not (base / "mediamirror").is_dir():
        raise SystemExit(f"--base {base}: no mediamirror package there (see --help)")
    bare_walk(root, args.files)  # warm-up, not counted: the tree's inodes into the cache
    firsts: dict[str, list[CliRun]] = {"change": [], "base": []}
    resyncs: list[CliRun] = []
    walks: list[CliRun] = []
    homes: dict[str, Path] = {}
    for rnd in range(1, args.local_rounds + 1):
        order = [("change", None), ("base", base)] if base is not None else [("change", None)]
        if rnd % 2 == 0:
            order.reverse()
        for label, src in order:
            home = homes[label] = work / f"home-local-{label}"
            reset_dir(home)
            env = cli_env(home, src)
            run_cli(["source", "add", "files", f"file://{root}"], env, command=module_command())
            run = local_sync(f"first sync {rnd} ({label})", env, args, work)
            if run.summary.added != args.files:
                raise RuntimeError(f"{label} sync added {run.summary.added}, not {args.files}")
            firsts[label].append(run)
        if base is not None:
            # The change must write what the base wrote: same rows, times, folders, jobs.
            mine = content_digest(homes["change"] / "catalog.db")
            theirs = content_digest(homes["base"] / "catalog.db")
            if mine != theirs:
                raise RuntimeError(f"the first syncs' catalogs differ: {mine} != {theirs}")
            log(f"  catalogs identical: {', '.join(f'{k} {n:,}' for k, (_, n) in mine.items())}")
        env = cli_env(homes["change"])
        walks.append(walk := bare_walk(root, args.files))
        log(f"  bare walk: {walk.wall:.2f} s wall, CPU {walk.cpu:.2f} s")
        run = local_sync(f"re-sync {rnd} (change)", env, args, work)
        s = run.summary
        if (s.added, s.changed, s.deleted, s.unchanged) != (0, 0, 0, args.files):
            raise RuntimeError(f"the unchanged re-sync wrote: {s.line}")
        resyncs.append(run)
        walks.append(walk := bare_walk(root, args.files))
        log(f"  bare walk: {walk.wall:.2f} s wall, CPU {walk.cpu:.2f} s")

    n = args.files

    def mean(runs: Sequence[CliRun], get: Callable[[CliRun], float]) -> float:
        return statistics.mean(get(r) for r in runs)

    def breakdown(runs: Sequence[CliRun]) -> str:
        return (
            f"{mean(runs, lambda r: r.wall):.2f} s wall = "
            f"{mean(runs, lambda r: r.startup):.2f} start-up + "
            f"{mean(runs, lambda r: r.summary.seconds):.2f} sync + "
            f"{mean(runs, lambda r: r.after):.2f} after; CPU {mean(runs, lambda r: r.cpu):.2f} s"
        )

    change = firsts["change"]
    rate = n / mean(change, lambda r: r.wall)
    inner = mean(change, lambda r: r.summary.rate)
    results.add(
        f"Local first sync of {n:,} files, CLI (mean of {len(change)})",
        f"{breakdown(change)}; {rate:,.0f} keys/s (in-process sync {inner:,.0f} keys/s)",
    )
    if firsts["base"]:
        old = firsts["base"]
        old_rate = n / mean(old, lambda r: r.wall)
        results.add(
            f"Local first sync, `{BASE_COMMIT}`, CLI (mean of {len(old)})",
            f"{breakdown(old)}; {old_rate:,.0f} keys/s "
            f"(in-process sync {mean(old, lambda r: r.summary.rate):,.0f} keys/s)",
        )
        each = [b.wall / c.wall for b, c in zip(old, change, strict=True)]
        cpu = statistics.mean(b.cpu / c.cpu for b, c in zip(old, change, strict=True))
        speedup = statistics.mean(each)
        results.add(
            f"Local first sync keys/s, change / `{BASE_COMMIT}`",
            f"{speedup:.2f}x (rounds {', '.join(f'{x:.2f}' for x in each)}; CPU time "
            f"{cpu:.2f}x; sync alone {inner / mean(old, lambda r: r.summary.rate):.2f}x)",
            f">= {TARGET_LOCAL_SPEEDUP:.0f}x",
            speedup >= TARGET_LOCAL_SPEEDUP,
        )
    results.add(
        f"Bare `os.scandir` walk with `stat` (mean of {len(walks)})",
        f"{mean(walks, lambda r: r.wall):.2f} s wall (process spawn to exit); "
        f"CPU {mean(walks, lambda r: r.cpu):.2f} s",
    )
    results.add(f"Local unchanged re-sync, CLI (mean of {len(resyncs)})", breakdown(resyncs))
    each = [
        r.wall / ((walks[2 * i].wall + walks[2 * i + 1].wall) / 2) for i, r in enumerate(resyncs)
    ]
    cpu = statistics.mean(
        r.cpu / ((walks[2 * i].cpu + walks[2 * i + 1].cpu) / 2) for i, r in enumerate(resyncs)
    )
    inner_ratio = statistics.mean(
        r.summary.seconds / ((walks[2 * i].wall + walks[2 * i + 1].wall) / 2)
        for i, r in enumerate(resyncs)
    )
    ratio = statistics.mean(each)
    results.add(
        "Local re-sync / bare walk",
        f"{ratio:.2f}x (rounds {', '.join(f'{x:.2f}' for x in each)}; sync alone "
        f"{inner_ratio:.2f}x; CPU time {cpu:.2f}x)",
        f"<= {TARGET_LOCAL_RESYNC_RATIO:.0f}x",
        ratio <= TARGET_LOCAL_RESYNC_RATIO,
    )
    peak = max(r.peak_rss for r in change + resyncs)
    results.add(
        "Local sync peak RSS (wait4 ru_maxrss, first sync and re-sync)",
        f"{mb(peak):.0f} MB (polled every 50 ms: "
        f"{mb(max(r.polled_rss for r in change + resyncs)):.0f} MB)",
        f"<= {TARGET_RSS_MB} MB",
        mb(peak) <= TARGET_RSS_MB,
    )
    results.notes.append(
        f"Local tree: {n:,} empty files in {(n + 999) // 1000:,} folders "
        "`cam-NNNN/frame-NNNNNN.bin`, every 25th a `.jpg` and every 500th a `.mp4` "
        "(each folder becomes an image-sequence dataset, each video its own dataset folder)"
        + (
            f"; created in {created:.0f} s."
            if created is not None
            else "; cached from an earlier run."
        )
        + (
            f" The base is commit `{BASE_COMMIT}` (`git archive {BASE_COMMIT}` unpacked beside "
            "the change, run with the same Python and packages through `PYTHONPATH`); each "
            "round runs both first syncs into fresh catalogs, alternating which goes first, "
            "and checks that both catalogs hold the same items (stored times included), "
            "folders and queued jobs."
            if base is not None
            else ""
        )
    )


# -- reporting ---------------------------------------------------------------------------------


def reset_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


def revision() -> str:
    """The commit measured, flagged when src/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {head}" + (" with uncommitted changes under src/" if dirty else "")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {ram:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}"
    )


def table(results: Results) -> list[str]:
    rows = ["| figure | measured | target | met? |", "|---|---|---|---|"]
    rows += [f"| {f.name} | {f.value} | {f.target} | {verdict(f.met)} |" for f in results.figures]
    return rows


def section(results: Results, command: str, elapsed: float, load: LoadWatch, measured: str) -> str:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        SECTION,
        "",
        "What `mediamirror sync` costs next to the bucket listing it cannot avoid. The real "
        "CLI runs as a subprocess into a fresh SQLite catalog, against raw boto3 "
        "`list_objects_v2` paginations (PageSize 1000, every key consumed) of the same bucket "
        "on moto's S3 API server, interleaved in one run: listing, then per round a first "
        "sync, listing, re-sync, listing. Each sync is divided by the mean of the two "
        "listings around it; ratios are the mean over rounds. *Wall* is spawn to exit of the "
        "CLI; *sync* is the time the engine reports in its summary line; *start-up* is spawn "
        "to the start of the sync (interpreter, imports, catalog, store client); *after* is "
        "the summary line to exit (queueing post-processing, `auto_postprocess`). *CPU time* "
        "ratios divide the CPU seconds of the CLI plus the S3 server during the sync by "
        "those of the listing thread plus the server during the listings: they do not "
        "move with other load on the machine, but give no credit for overlapping work. "
        "A re-sync "
        "of the unchanged bucket must not write: every row of `items` and `folders` (with "
        "`updated_at`) is hashed before and after. Last, a sync of a local directory of "
        "empty files, for keys/s and peak memory (`wait4` `ru_maxrss` of the CLI process).",
        "",
        *table(results),
        "",
        *(f"- {note}" for note in results.notes),
        f"- Measured {today} at {measured} on {machine()}. Other work shared the machine: "
        f"1-minute load average {load.describe()} (the benchmark itself accounts for about "
        f"2){stall_note()}. The whole benchmark took {elapsed / 60:.0f} min.",
        "",
        "Reproduce from the repository root:",
        "",
        "```sh",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


def stall_note() -> str:
    if not Stall.shares:
        return ""
    return (
        "; during the timed steps runnable tasks waited for a CPU "
        f"{100 * statistics.mean(Stall.shares):.0f}% of the time on average "
        f"(PSI `some`, max {100 * max(Stall.shares):.0f}%; each step first waited up to "
        "`--quiet-wait` s for pressure under 20%)"
    )


class LoadWatch:
    """Samples the 1-minute load average every few seconds while the benchmark runs."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def describe(self) -> str:
        return (
            f"mean {statistics.mean(self.samples):.1f}, max {max(self.samples):.1f} "
            f"on {os.cpu_count()} CPUs"
        )


def cpu_pressure() -> tuple[float, int] | None:
    """PSI of the CPU: ``some avg10`` (percent) and ``some total`` (microseconds)."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    fields = dict(f.split("=", 1) for f in some[1:])
    return float(fields["avg10"]), int(fields["total"])


def wait_quiet(max_wait: float, threshold: float = 20.0) -> None:
    """Wait (at most ``max_wait`` s) for a quiet machine before a timed step: CPU pressure
    (PSI ``some avg10``) under ``threshold`` percent, or a 1-minute load under 1."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        psi = cpu_pressure()
        if (psi[0] < threshold) if psi is not None else os.getloadavg()[0] < 1.0:
            return
        time.sleep(2.0)


class Stall:
    """Share of a timed step during which runnable tasks waited for a CPU (PSI ``some``)."""

    shares: list[float] = []

    def __init__(self) -> None:
        psi = cpu_pressure()
        self.start = (time.perf_counter(), psi[1] if psi else None)

    def done(self) -> str:
        psi = cpu_pressure()
        if psi is None or self.start[1] is None:
            return ""
        share = (psi[1] - self.start[1]) / 1e6 / (time.perf_counter() - self.start[0])
        Stall.shares.append(share)
        return f"; CPU pressure {100 * share:.0f}%"


def write_docs(text: str, path: Path = DOCS) -> None:
    """Replace (or add) the Sync section; other sections of the file are left alone."""
    fresh = f"{DOCS_TITLE}\n\n{DOCS_INTRO}\n"
    old = path.read_text(encoding="utf-8") if path.exists() else fresh
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        rest = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + rest if rest else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else "")
    parser.add_argument("--keys", type=int, default=50_000, help="objects in the S3 bucket")
    parser.add_argument("--files", type=int, default=1_000_000, help="files in the local tree")
    parser.add_argument(
        "--rounds", type=int, default=2, help="S3 rounds of first sync + re-sync [2]"
    )
    parser.add_argument("--upload-threads", type=int, default=8, help="uploading threads")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "benchmarks" / ".work",
        help="catalogs and the cached local tree [benchmarks/.work]",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each timed step, wait up to this many seconds for CPU pressure "
        "under 20%% (other people's work on a shared machine skews wall times) [60]",
    )
    parser.add_argument(
        "--local-rounds", type=int, default=1, help="local rounds of first syncs + re-sync [1]"
    )
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help=f"the src/ folder of commit {BASE_COMMIT}, for the local first-sync ratio "
        f"(`git archive {BASE_COMMIT} | tar -x -C DIR`, then DIR/src)",
    )
    parser.add_argument(
        "--list-width",
        type=int,
        default=1,
        help="the sync's sync_list_width for S3 [1: sequential requests, like the raw "
        "listing; moto scans the whole bucket for every request, so range-parallel "
        "listing multiplies the server's work there]",
    )
    parser.add_argument("--skip-s3", action="store_true", help="only the local directory")
    parser.add_argument("--skip-local", action="store_true", help="only the S3 bucket")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"replace the Sync section of {DOCS}"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run each sync under py-spy (raw samples in WORK_DIR/profiles/) and print the "
        "top functions; timings are then perturbed, so not with --write-docs",
    )
    args = parser.parse_args(argv)
    if args.profile and args.write_docs:
        parser.error("--profile perturbs the timings: do not combine it with --write-docs")
    if args.rounds < 1 or args.local_rounds < 1:
        parser.error("--rounds and --local-rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain `kill` still stops the S3 server and the running CLI through the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    measured = revision()  # at the start: others may commit while it runs
    log(f"machine: {machine()}; {measured}")
    if args.profile:
        (work / "profiles").mkdir(exist_ok=True)
    load = LoadWatch()
    results = Results()
    phases: list[tuple[bool, Callable[[argparse.Namespace, Path, Results], None]]] = [
        (not args.skip_s3, bench_s3),
        (not args.skip_local, bench_local),
    ]
    for enabled, phase in phases:
        if enabled:
            phase(args, work, results)
    elapsed = time.perf_counter() - started
    load.stop()
    log("")
    for row in table(results):
        log(row)
    log(f"\nbenchmark run time: {elapsed:.0f} s; 1-minute load average {load.describe()}")
    if Stall.shares:
        log(stall_note().removeprefix("; "))
    argv_used = list(sys.argv[1:] if argv is None else argv)
    shown = [a for a in argv_used if a != "--write-docs"]
    command = " ".join(
        [".venv/bin/python", "benchmarks/sync_bench.py", *map(shlex.quote, shown), "--write-docs"]
    )
    if args.write_docs:
        write_docs(section(results, command, elapsed, load, measured))
        log(f"wrote the Sync section of {DOCS}")
    missed = [f.name for f in results.figures if f.met is False]
    if missed:
        log("targets missed: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
