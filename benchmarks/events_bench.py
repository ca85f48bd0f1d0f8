"""Service benchmark: push-event latency under load, a page of a huge folder, IIIF tiles.

Phases (each printed as it runs, then a table of figure / target / met?):

1. **events**: moto's S3 API server as a subprocess, ``--rate`` x ``--seconds`` objects
   (``clips/clip-NNNNNN.mp4``, one new video key per event) put into a bucket first; the
   real CLI adds the bucket as a source and makes its push token; ``mediamirror serve
   --no-worker`` serves the app. A *second process* (this script with ``--poster``) posts
   one S3 event notification per object to the push endpoint at ``--rate`` events/s for
   ``--seconds`` s, open loop (each POST starts at its scheduled time whether or not the
   previous ones were answered), with httpx over keep-alive connections.

   Latency of an event = the job row's ``created_at`` (stamped by ``enqueue`` just before
   the INSERT, UTC wall clock of the server) minus the poster's wall clock
   (``time.time()``) immediately before it sends the POST; both processes run on this one
   machine, so they share the clock. The HTTP response time (POST sent -> response read,
   ``perf_counter``) is reported beside it. No event may be lost: every POST answered 200,
   one item, one dataset and one queued job per object, one ``applied`` event row each.
2. **folders**: a local directory of ``--datasets`` empty ``.mp4`` files in one folder
   (created once under ``benchmarks/.work/``), synced by ``mediamirror sync`` with
   ``MEDIAMIRROR_AUTO_POSTPROCESS=false`` (one video dataset per file), then
   ``GET /api/v1/folders/{id}/children?limit=50`` ``--requests`` times, one at a time
   over one keep-alive connection (first page; a deep page is reported beside it).
3. **tiles**: an 8000x8000 pyvips image (gradient plus noise, JPEG Q 90) in a local
   source, synced with post-processing on, the real ``pyramid`` job run by ``mediamirror
   worker --burst`` (it calls ``make_pyramid``) and sets the dataset's
   ``meta.outputs.pyramid``; then ``GET /iiif/3/{id}/0,0,256,256/256,/0/default.jpg``
   repeated and random 256-px tiles over every pyramid level.

Run from the repository root::

    .venv/bin/python benchmarks/events_bench.py               # about 5 minutes
    .venv/bin/python benchmarks/events_bench.py --write-docs  # and update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work" / "events"
DOCS = ROOT / "docs" / "benchmarks.md"
DOCS_TITLE = "# Benchmarks"
DOCS_INTRO = (
    "Every figure below comes from a script under `benchmarks/`, run on the project's "
    "2-core machine; each section names the exact command that produced it."
)
SECTION = "## Bucket notifications (issue: the service)"
BIN = Path(sys.executable).parent
MEDIAMIRROR = str(BIN / "mediamirror")
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
TARGET_EVENT_P50_MS = 50.0
TARGET_EVENT_P99_MS = 250.0
TARGET_FOLDER_P99_MS = 50.0
TARGET_TILE_P50_MS = 20.0


def log(text: str) -> None:
    print(text, flush=True)


# -- figures ---------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None

    def shown(self) -> str:
        if self.unit == "ms":
            return f"{self.value:.1f} ms"
        if self.unit in ("", "count"):
            return f"{self.value:,.0f}"
        if self.unit == "x":  # a ratio
            return f"{self.value:.3f} x"
        return f"{self.value:,.1f} {self.unit}"


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    prefix: str = ""  # put before figure names and notes (which run they belong to)

    def add(
        self, name: str, value: float, unit: str, target: str = "", met: bool | None = None
    ) -> None:
        self.figures.append(Figure(self.prefix + name, value, unit, target, met))
        verdict = "" if met is None else ("  (target met)" if met else "  (TARGET MISSED)")
        log(f"  {name}: {self.figures[-1].shown()}{verdict}")

    def note(self, text: str) -> None:
        log(f"  {text}")
        self.notes.append(self.prefix + text)


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mm_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMIRROR_")}
    env.update(AWS_ENV)
    env["MEDIAMIRROR_HOME"] = str(home)
    env.update(extra or {})
    return env


def mm(
    home: Path, *args: str, extra: Mapping[str, str] | None = None, timeout: float = 3600
) -> str:
    proc = subprocess.run(
        [MEDIAMIRROR, *args],
        env=mm_env(home, extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mediamirror {shlex.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def wait_http(url: str, timeout: float = 60, headers: Mapping[str, str] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2, headers=dict(headers or {}))
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered {url} in {timeout} s")


@dataclass
class Peer:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        import psutil

        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)


@contextmanager
def moto_server() -> Iterator[Peer]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **AWS_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint + "/moto-api/")
        yield Peer(endpoint, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # a loaded machine: moto may take longer
            proc.kill()
            proc.wait()


@contextmanager
def serving(home: Path, extra: Mapping[str, str] | None = None) -> Iterator[Peer]:
    port = free_port()
    with (home / "serve.log").open("ab") as logfile:
        proc = subprocess.Popen(
            [MEDIAMIRROR, "serve", "--no-worker", "--port", str(port)],
            env=mm_env(home, extra),
            stdout=logfile,
            stderr=logfile,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/api/v1/health")
        yield Peer(base, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(max_pool_connections=32),
    )


# -- phase 1: events ---------------------------------------------------------------------------


def event_body(bucket: str, key: str, sequencer: int) -> bytes:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:BENCH"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": f"{sequencer:016X}", "x-amz-id-2": "bench"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "bench",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": quote_plus(key, safe=""),
                "size": 0,
                "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                "sequencer": f"{sequencer:018X}",
            },
        },
    }
    return json.dumps({"Records": [record]}).encode()


def poster_main(args: argparse.Namespace) -> None:
    """The second process: post one event per key at the given rate, open loop.

    The main thread puts each event on a queue at its due time; ``--connections`` threads,
    each with its own httpx client (one keep-alive connection), send them. (One shared
    async pool scans its whole wait list on every release: with thousands of requests
    waiting, the poster saturated before the server did.) ``due_wall`` is when the event
    was due, ``sent_wall`` when its POST went out: later only while every connection was
    busy waiting for an answer."""
    import queue as queues

    import httpx

    keys = [f"{args.prefix}clip-{i:06d}.mp4" for i in range(args.count)]
    bodies = [event_body(args.bucket, k, 0x55AED6DCD90281E5 + i) for i, k in enumerate(keys)]
    out: list[dict[str, Any]] = []
    headers = {"Content-Type": "application/json"}
    todo: queues.Queue[tuple[int, float] | None] = queues.Queue()

    def post(client: httpx.Client, i: int, due_wall: float) -> dict[str, Any]:
        sent_wall = time.time()
        sent = time.perf_counter()
        error, retries, status, ok = "", 0, -1, False
        while True:
            try:
                resp = client.post(args.url, content=bodies[i], headers=headers)
            except httpx.TransportError as exc:
                # A keep-alive connection closed by the server as the request went out:
                # what a real sender retries (a repeat is at worst a duplicate).
                if retries < 3:
                    retries += 1
                    continue
                error = repr(exc)[:300]
                break
            status = resp.status_code
            outcome = resp.json()["results"][0]["outcome"] if status == 200 else ""
            # 1afa7bc answers once applied; the change once recorded (applied right after).
            ok = outcome in ("applied", "recorded") or (retries > 0 and outcome == "duplicate")
            error = "" if ok else resp.text[:300]
            break
        return {
            "i": i,
            "key": keys[i],
            "due_wall": due_wall,
            "sent_wall": sent_wall,
            "response_s": time.perf_counter() - sent,
            "status": status,
            "applied": ok,
            "error": error,
            "retries": retries,
        }

    def worker() -> None:
        with httpx.Client(timeout=900) as client:
            while (item := todo.get()) is not None:
                out.append(post(client, *item))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.connections)]
    for t in threads:
        t.start()
    start = time.perf_counter() + 0.5
    start_wall = time.time() + 0.5
    for i in range(args.count):
        delay = start + i / args.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        todo.put((i, start_wall + i / args.rate))
    sending = time.perf_counter() - start
    for _ in threads:
        todo.put(None)
    for t in threads:
        t.join()
    stats = {"sending_seconds": sending, "cpu_seconds": time.process_time()}
    print(json.dumps(stats), file=sys.stderr)
    Path(args.out).write_text("\n".join(json.dumps(r) for r in out) + "\n")


def code_env(src: Path | None) -> dict[str, str]:
    """Run mediamirror from ``src`` (a checkout's ``src`` folder, e.g. 1afa7bc's) instead
    of this tree; the dependencies are the same virtualenv's."""
    return {"PYTHONPATH": str(src)} if src is not None else {}


def wait_applied(home: Path, timeout: float = 900) -> float:
    """Wait until no event is pending (the change applies after answering); returns when."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = sqlite3.connect(home / "catalog.db", timeout=30)
        try:
            cols = [r[1] for r in db.execute("PRAGMA table_info(events)")]
            if "action" not in cols:
                return time.time()  # 1afa7bc: applied before answering
            pending = db.execute("SELECT count(*) FROM events WHERE outcome='pending'").fetchone()
        finally:
            db.close()
        if pending[0] == 0:
            return time.time()
        time.sleep(0.05)
    raise RuntimeError(f"events still pending after {timeout} s")


def bench_events(
    res: Results,
    rate: int,
    seconds: int,
    *,
    src: Path | None = None,
    burst: bool = False,
    figures: bool = True,
) -> dict[str, float]:
    """One run; adds its figures to ``res`` when ``figures``; returns the side-by-side
    measures (server CPU per event, event -> job p50)."""
    count = rate * seconds
    code = "1afa7bc" if src is not None else "change"
    log(f"\n== events ({code}): {rate} events/s for {seconds} s ({count:,} new video keys) ==")
    home = Path(tempfile.mkdtemp(prefix="events-", dir=WORK))
    env = code_env(src)
    bucket = "mm-events-bench"
    with moto_server() as moto:
        client = s3_client(moto.url)
        client.create_bucket(Bucket=bucket)
        keys = [f"clips/clip-{i:06d}.mp4" for i in range(count)]
        t = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b""), keys))
        log(f"  put {count:,} objects into moto in {time.perf_counter() - t:.1f} s")
        mm(
            home,
            *("source", "add", "bench", f"s3://{bucket}/clips"),
            *("--endpoint-url", moto.url, "--preset", "minio"),
            extra=env,
        )
        url = mm(home, "source", "push-token", "bench", extra=env).strip()
        with serving(home, env) as server:
            url = url.replace("http://127.0.0.1:8000", server.url)
            out = home / "posted.jsonl"
            # Warm the service (first store client, imports) with one event not measured.
            client.put_object(Bucket=bucket, Key="clips/warm-up.mp4", Body=b"")
            import httpx

            warm = httpx.post(url, content=event_body(bucket, "clips/warm-up.mp4", 1), timeout=60)
            assert warm.status_code == 200, warm.text
            wait_applied(home)
            cmd = [
                *(sys.executable, __file__, "--poster", "--url", url, "--bucket", bucket),
                *("--prefix", "clips/", "--count", str(count), "--rate", str(rate)),
                *("--out", str(out)),
            ]
            cpu_server, cpu_moto = server.cpu_seconds(), moto.cpu_seconds()
            t = time.perf_counter()
            poster = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t
            all_applied_wall = wait_applied(home)
            cpu_server = server.cpu_seconds() - cpu_server
            cpu_moto = moto.cpu_seconds() - cpu_moto
            if poster.returncode != 0:
                raise RuntimeError(f"poster failed:\n{poster.stderr}")
            stats = json.loads(poster.stderr.strip().splitlines()[-1])
            sending, cpu_poster = stats["sending_seconds"], stats["cpu_seconds"]
    posted = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    db = sqlite3.connect(home / "catalog.db")
    rows = db.execute(
        "SELECT i.key, j.created_at, i.updated_at FROM jobs j "
        "JOIN items i ON i.folder_id = j.target_id AND j.target_type = 'folder'"
    ).fetchall()
    items = db.execute("SELECT count(*) FROM items WHERE state='present'").fetchone()[0]
    jobs = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    applied = db.execute("SELECT count(*) FROM events WHERE outcome='applied'").fetchone()[0]
    other = db.execute("SELECT count(*) FROM events WHERE outcome!='applied'").fetchone()[0]
    db.close()

    def ts(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    job_at = {key: ts(created) for key, created, _ in rows}
    item_at = {key: ts(updated) for key, _, updated in rows}
    to_job = [(job_at[p["key"]] - p["sent_wall"]) * 1000 for p in posted if p["key"] in job_at]
    to_item = [(item_at[p["key"]] - p["sent_wall"]) * 1000 for p in posted if p["key"] in item_at]
    due_to_job = [(job_at[p["key"]] - p["due_wall"]) * 1000 for p in posted if p["key"] in job_at]
    waited = [(p["sent_wall"] - p["due_wall"]) * 1000 for p in posted]
    responses = [p["response_s"] * 1000 for p in posted]
    ok = sum(1 for p in posted if p["applied"])
    per = 1000 / len(posted)
    measures = {"cpu_per_event": cpu_server * per, "to_job_p50": pct(to_job, 50)}
    if burst:
        first = min(p["sent_wall"] for p in posted)
        last_job = max(job_at[p["key"]] for p in posted if p["key"] in job_at)
        within = max(last_job, all_applied_wall if applied >= count + 1 else last_job) - first
        lost = count - min(ok, items - 1, jobs - 1, applied - 1)
        res.add(
            f"burst of {count:,} events in {seconds} s: all applied within",
            within,
            "s",
            "<= 15 s",
            within <= 15,
        )
        res.add(f"burst of {count:,}: events lost", lost, "count", "= 0", lost == 0)
        res.add(f"burst of {count:,}: POST -> 200 response, p99", pct(responses, 99), "ms")
        res.add(f"burst of {count:,}: server CPU per event", cpu_server * per, "ms")
        res.note(
            f"burst: {len(posted):,} events sent in {sending:.1f} s; last job queued "
            f"{last_job - first:.1f} s after the first POST"
        )
        shutil.rmtree(home, ignore_errors=True)
        return measures
    if not figures:
        log(
            f"  {code}: server CPU {cpu_server * per:.2f} ms/event, "
            f"event -> job p50 {pct(to_job, 50):.1f} ms, p99 {pct(to_job, 99):.1f} ms, "
            f"answered {ok:,}/{count:,}, items {items - 1:,}, jobs {jobs - 1:,}"
        )
        shutil.rmtree(home, ignore_errors=True)
        return measures
    for p in [p for p in posted if not p["applied"]][:5]:
        res.note(f"event {p['i']} not applied: HTTP {p['status']} {p['error']}")
    res.note(
        f"posted {len(posted):,} events in {sending:.1f} s of sending "
        f"({len(posted) / sending:,.1f} events/s offered; poster wall {wall:.1f} s)"
    )
    p50, p99 = pct(to_job, 50), pct(to_job, 99)
    res.add(
        "event -> job queued, p50",
        p50,
        "ms",
        f"<= {TARGET_EVENT_P50_MS:.0f} ms",
        p50 <= TARGET_EVENT_P50_MS,
    )
    res.add(
        "event -> job queued, p99",
        p99,
        "ms",
        f"<= {TARGET_EVENT_P99_MS:.0f} ms",
        p99 <= TARGET_EVENT_P99_MS,
    )
    res.add("event -> job queued, max", max(to_job), "ms")
    for q, target in ((50, TARGET_EVENT_P50_MS), (99, TARGET_EVENT_P99_MS)):
        value = pct(due_to_job, q)
        res.add(
            f"event due -> job queued, p{q}", value, "ms", f"<= {target:.0f} ms", value <= target
        )
    res.add("POST due -> sent (all connections busy), p99", pct(waited, 99), "ms")
    res.add("event -> item written, p50", pct(to_item, 50), "ms")
    res.add("POST -> 200 response, p50", pct(responses, 50), "ms")
    res.add("POST -> 200 response, p99", pct(responses, 99), "ms")
    lost = count - min(ok, items - 1, jobs - 1, applied - 1)
    res.add("events answered 200 + applied", ok, "count", f"= {count:,}", ok == count)
    res.add(
        "items / jobs / applied event rows (minus warm-up)",
        min(items, jobs, applied) - 1,
        "count",
        f"= {count:,}",
        lost == 0 and items == jobs == applied == count + 1,
    )
    res.note(f"catalog: {items:,} items, {jobs:,} jobs, {applied:,} applied + {other} other events")
    retried = sum(1 for p in posted if p["retries"])
    if retried:
        res.note(f"{retried} POSTs were sent again after the connection closed under them")
    res.add("server CPU per event", cpu_server * per, "ms")
    res.add("moto CPU per event (the store's side)", cpu_moto * per, "ms")
    res.add("poster CPU per event", cpu_poster * per, "ms")
    busy = wall
    res.note(
        f"the server took {busy:.1f} s to answer all {len(posted):,} POSTs "
        f"({len(posted) / busy:,.1f} events/s sustained); CPU used: server {cpu_server:.1f} s, "
        f"moto {cpu_moto:.1f} s, poster {cpu_poster:.1f} s on {os.cpu_count()} CPUs"
    )
    shutil.rmtree(home, ignore_errors=True)
    return measures


def bench_side_by_side(res: Results, base: Path, rate: int, seconds: int, rounds: int) -> None:
    """Server CPU per event of 1afa7bc and of the change under the same load, in
    interleaved rounds (base, change, base, change...): the ratio of the sums."""
    sums = {"1afa7bc": [0.0, 0.0], "change": [0.0, 0.0]}
    for _ in range(rounds):
        for code, src in (("1afa7bc", base), ("change", None)):
            m = bench_events(res, rate, seconds, src=src, figures=False)
            sums[code][0] += m["cpu_per_event"]
            sums[code][1] += m["to_job_p50"]
    base_cpu, change_cpu = sums["1afa7bc"][0] / rounds, sums["change"][0] / rounds
    base_p50, change_p50 = sums["1afa7bc"][1] / rounds, sums["change"][1] / rounds
    res.add(f"server CPU per event at {rate}/s, 1afa7bc", base_cpu, "ms")
    res.add(f"server CPU per event at {rate}/s, change", change_cpu, "ms")
    ratio = change_cpu / base_cpu
    res.add("server CPU per event, change / 1afa7bc", ratio, "x", "<= 0.25", ratio <= 0.25)
    res.add(
        f"event -> job queued p50 at {rate}/s (wall), change / 1afa7bc",
        change_p50 / base_p50,
        "x",
    )
    res.note(
        f"side by side: {rounds} interleaved rounds of {rate} events/s for {seconds} s each "
        f"(1afa7bc from `git archive 1afa7bc` with PYTHONPATH, same virtualenv); wall "
        f"event -> job p50 {base_p50:.1f} ms (1afa7bc) vs {change_p50:.1f} ms (change)"
    )


# -- phase 2 and 3: folders and tiles --------------------------------------------------------


def make_tree(n: int) -> Path:
    root = WORK / f"folder-{n}"
    big = root / "big"
    done = root / "complete"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        big.mkdir(parents=True)
        for i in range(n):
            (big / f"clip-{i:06d}.mp4").touch()
        done.touch()
    return root


def make_image(side: int) -> Path:
    import pyvips

    root = WORK / f"image-{side}"
    path = root / "slides" / f"slide-{side}.jpg"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        xy = pyvips.Image.xyz(side, side)
        red = xy[0] * (255 / side)
        green = xy[1] * (255 / side)
        noise = pyvips.Image.gaussnoise(side, side, sigma=24, mean=0)
        img = red.bandjoin([green, (red + green) / 2]) + noise
        img.cast("uchar").copy(interpretation="srgb").jpegsave(str(path), Q=90)
    return root


def timed_gets(client: Any, urls: Sequence[str]) -> list[float]:
    out = []
    for url in urls:
        t = time.perf_counter()
        resp = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"GET {url} -> {resp.status_code}: {resp.text[:300]}")
    return out


def bench_catalog(res: Results, datasets: int, requests: int, side: int, tiles: int) -> None:
    import httpx

    log(f"\n== folders: one page of {datasets:,} datasets; tiles: a {side}x{side} pyramid ==")
    home = Path(tempfile.mkdtemp(prefix="catalog-", dir=WORK))
    tree = make_tree(datasets)
    t = time.perf_counter()
    mm(home, "source", "add", "big", f"file://{tree / 'big'}")
    line = mm(home, "sync", "big", extra={"MEDIAMIRROR_AUTO_POSTPROCESS": "false"}).strip()
    res.note(
        f"sync of {datasets:,} empty .mp4 files: {line.splitlines()[-1]} "
        f"({time.perf_counter() - t:.1f} s with start-up)"
    )
    images = make_image(side)
    mm(home, "source", "add", "slides", f"file://{images}")
    mm(
        home,
        "sync",
        "slides",
        extra={"MEDIAMIRROR_AUTO_POSTPROCESS": "true", "MEDIAMIRROR_LARGE_IMAGE_BYTES": "1000000"},
    )
    t = time.perf_counter()
    mm(home, "worker", "--burst", timeout=1800)
    res.note(
        f"pyramid job (make_pyramid of {side}x{side}) by `worker --burst`: "
        f"{time.perf_counter() - t:.1f} s"
    )
    token = mm(home, "token", "create", "--name", "bench").strip()
    db = sqlite3.connect(home / "catalog.db")
    folder_id = db.execute("SELECT id FROM folders WHERE path = '/big'").fetchone()[0]
    slide_id, meta = db.execute(
        "SELECT id, meta FROM folders WHERE path LIKE '/slides/%Large image%'"
    ).fetchone()
    db.close()
    pyramid = json.loads(meta).get("outputs", {}).get("pyramid")
    if not pyramid:
        raise RuntimeError(f"the pyramid job did not set outputs.pyramid: {meta}")
    headers = {"Authorization": f"Bearer {token}"}
    with serving(home) as server, httpx.Client(headers=headers, timeout=60) as client:
        base = server.url
        page = f"{base}/api/v1/folders/{folder_id}/children?limit=50"
        first = client.get(page).json()
        assert first["total"] == datasets, first["total"]
        timed_gets(client, [page] * 20)  # warm-up
        times = timed_gets(client, [page] * requests)
        p50, p99 = pct(times, 50), pct(times, 99)
        res.add(f"children page (limit 50) of {datasets:,}, p50", p50, "ms")
        res.add(
            f"children page (limit 50) of {datasets:,}, p99",
            p99,
            "ms",
            f"<= {TARGET_FOLDER_P99_MS:.0f} ms",
            p99 <= TARGET_FOLDER_P99_MS,
        )
        deep = timed_gets(client, [f"{page}&offset={datasets - 50}"] * 50)
        res.add(f"deep page (offset {datasets - 50:,}), p50", pct(deep, 50), "ms")

        info = client.get(f"{base}/iiif/3/{slide_id}/info.json").json()
        width, height = info["width"], info["height"]
        factors = info["tiles"][0]["scaleFactors"]
        fixed = f"{base}/iiif/3/{slide_id}/0,0,256,256/256,/0/default.jpg"
        cold = timed_gets(client, [fixed])[0]
        times = timed_gets(client, [fixed] * requests)
        p50 = pct(times, 50)
        res.add(
            "tile 0,0,256,256/256, p50",
            p50,
            "ms",
            f"<= {TARGET_TILE_P50_MS:.0f} ms",
            p50 <= TARGET_TILE_P50_MS,
        )
        res.add("tile 0,0,256,256/256, p99", pct(times, 99), "ms")
        res.note(f"first tile request (opens the pyramid): {cold:.1f} ms")
        rng = random.Random(7)
        urls = []
        for _ in range(tiles):
            s = rng.choice(factors)
            span = 256 * s
            x = rng.randrange(0, max(1, -(-width // span))) * span
            y = rng.randrange(0, max(1, -(-height // span))) * span
            w, h = min(span, width - x), min(span, height - y)
            urls.append(
                f"{base}/iiif/3/{slide_id}/{x},{y},{w},{h}/{max(1, -(-w // s))},/0/default.jpg"
            )
        times = timed_gets(client, urls)
        p50 = pct(times, 50)
        res.add(
            f"random tiles (scale factors {factors}), p50",
            p50,
            "ms",
            f"<= {TARGET_TILE_P50_MS:.0f} ms",
            p50 <= TARGET_TILE_P50_MS,
        )
        res.add("random tiles, p99", pct(times, 99), "ms")
        res.note(f"pyramid {width}x{height}, {len(factors)} levels, at {pyramid}")
    shutil.rmtree(home, ignore_errors=True)


# -- report ----------------------------------------------------------------------------------


class LoadSampler:
    """The 1-minute load average every 5 s while the benchmark runs (others may share
    the machine: the figures mean little without it)."""

    def __init__(self) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(5):
            self.samples.append(os.getloadavg()[0])

    def line(self) -> str:
        self._stop.set()
        mean = sum(self.samples) / len(self.samples)
        return (
            f"1-minute load average during the run: mean {mean:.1f}, max "
            f"{max(self.samples):.1f} on {os.cpu_count()} CPUs (the benchmark's own "
            "processes account for about 2; other work shared the machine)"
        )


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu or 'unknown CPU'}), Python {sys.version.split()[0]}"


def table(res: Results) -> str:
    lines = ["| figure | measured | target | met? |", "|---|---|---|---|"]
    for f in res.figures:
        verdict = "" if f.met is None else ("yes" if f.met else "**no**")
        lines.append(f"| {f.name} | {f.shown()} | {f.target} | {verdict} |")
    return "\n".join(lines)


def write_docs(text: str, path: Path = DOCS) -> None:
    """Replace (or add) this benchmark's section; other sections are left alone."""
    old = path.read_text(encoding="utf-8") if path.exists() else f"{DOCS_TITLE}\n\n{DOCS_INTRO}\n"
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
    path.write_text(new, encoding="utf-8")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else "")
    parser.add_argument("--rate", type=int, default=200, help="events per second [200]")
    parser.add_argument("--seconds", type=int, default=60, help="seconds of posting [60]")
    parser.add_argument(
        "--also-rate",
        type=int,
        action="append",
        default=[],
        help="run the events phase again at this rate (for comparison; repeatable)",
    )
    parser.add_argument("--datasets", type=int, default=100_000, help="datasets in one folder")
    parser.add_argument("--requests", type=int, default=300, help="timed GETs per figure")
    parser.add_argument("--side", type=int, default=8000, help="side of the large image [8000]")
    parser.add_argument("--tiles", type=int, default=300, help="random tile requests")
    parser.add_argument(
        "--burst", type=int, default=5000, help="events of the burst (0: none) [5000]"
    )
    parser.add_argument("--burst-seconds", type=int, default=5, help="the burst's span [5]")
    parser.add_argument(
        "--base",
        default="/tmp/base-1afa7bc/src",
        help="src folder of 1afa7bc for the side-by-side CPU figure ('' : none)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="side-by-side rounds [2]")
    parser.add_argument("--compare-rate", type=int, default=50, help="side-by-side rate [50]")
    parser.add_argument("--compare-seconds", type=int, default=20, help="side-by-side span [20]")
    parser.add_argument("--skip-events", action="store_true")
    parser.add_argument("--skip-catalog", action="store_true")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS}")
    # The poster process (run by the events phase).
    parser.add_argument("--poster", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.poster:
        poster_main(args)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    command = "benchmarks/events_bench.py " + shlex.join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-docs"
    )
    started = datetime.now(UTC)
    log(f"events_bench on {machine()}, load average {os.getloadavg()[0]:.1f}")
    load = LoadSampler()
    res = Results()
    if not args.skip_events:
        rates = [args.rate, *args.also_rate]
        for rate in rates:
            res.prefix = f"{rate} events/s: " if len(rates) > 1 else ""
            bench_events(res, rate, args.seconds)
        res.prefix = ""
        if args.burst:
            bench_events(res, args.burst // args.burst_seconds, args.burst_seconds, burst=True)
        if args.base and args.rounds:
            bench_side_by_side(
                res, Path(args.base), args.compare_rate, args.compare_seconds, args.rounds
            )
    if not args.skip_catalog:
        bench_catalog(res, args.datasets, args.requests, args.side, args.tiles)
    res.note(load.line())
    log("\n" + table(res))
    if args.write_docs:
        write_docs(render(res, command.strip(), started))
        log(f"\nwrote the section {SECTION!r} of {DOCS}")
    return 0


DEFINITIONS = """\
What is measured (`benchmarks/events_bench.py`):

- **event -> job queued**: for each event, the job row's `created_at` (stamped by
  `enqueue` just before its INSERT, server wall clock, UTC) minus the poster's `time.time()`
  taken immediately before it sends the POST. Poster and server run on the same machine,
  so they share the clock. *event -> item written* uses the item row's `updated_at` the
  same way; *POST -> 200 response* is the poster's `perf_counter` from send to response.
  *event due -> job queued* starts instead at the moment the event was due in the
  schedule: it also counts the time the event waited in the poster because all of its
  256 connections were waiting for answers (*POST due -> sent*). Below saturation the
  two agree; above it, only the second shows the backlog.
- **load**: `mediamirror serve --no-worker` (so no job runs beside the measurement) on a
  SQLite catalog; moto's S3 server (a subprocess) holds one new object per event
  (`clips/clip-NNNNNN.mp4`, put before the run); a *separate* Python process posts one S3
  event notification per object with httpx at the given rate for 60 s, open loop: events
  fall due on schedule whatever the answers, and go out on 256 keep-alive connections
  (one httpx client per sending thread). Each event carries size, eTag and sequencer:
  the change records it and answers, then the events applier writes items, dataset
  folders, the `video` jobs and the outcomes in batches, without reading the store;
  1afa7bc reads each object back from moto (one-key listing) and writes everything
  before answering.
- **burst**: 5,000 events posted in 5 s (1,000/s) the same way; *all applied within* is
  the last job row's `created_at` minus the first POST's send time (or the moment no
  event was pending any more, when later), and none may be lost.
- **side by side**: 1afa7bc (`git archive 1afa7bc`, run with `PYTHONPATH` on its `src`,
  same virtualenv) and the change, each posting 200 events/s for 10 s, in interleaved
  rounds (1afa7bc, change, 1afa7bc, change); server CPU per event is the mean over the
  rounds, counted until every event was applied.
- **no event lost**: every POST answered 200 with outcome `recorded` (1afa7bc:
  `applied`), and, once the applier drained, the catalog holds
  exactly one present item, one queued job and one `applied` event row per object.
- **CPU per event**: user + system CPU seconds of the server, moto and poster processes
  over the run, divided by the number of events.
- **folder page**: `GET /api/v1/folders/{id}/children?limit=50` of a folder holding 100,000
  video datasets (a local source of 100,000 empty `.mp4` files in one directory, synced by
  `mediamirror sync` with `MEDIAMIRROR_AUTO_POSTPROCESS=false`), one request at a time over
  a keep-alive connection after 20 warm-up requests.
- **tiles**: an 8000x8000 JPEG (gradient + noise) synced as a large-image dataset whose
  real `pyramid` job (`make_pyramid`) ran under `worker --burst`; the fixed tile
  `0,0,256,256/256,/0/default.jpg` repeated, then random 256-px tiles over every level.
"""

#: Written after looking at the figures; kept with the code so --write-docs keeps it.
ANALYSIS = """\
**Where the time goes (record first, apply in batches).** A push now costs the server
about 3.3 ms of CPU at 200 events/s against 9.0 ms for 1afa7bc (0.36x side by side):
the one-key listing is gone (events carry size, eTag and sequencer) and the catalog work
of a whole batch is one transaction. What is left, by a py-spy profile of the server at
200 events/s: about a third in uvicorn/Starlette/FastAPI and the app's middlewares per
request (request ids, security headers, body limit), a quarter in the push handler
(token check, one read; JSON; the INSERT transaction that records), a third in the
events applier (the sync engine's `apply_objects` for the batch: dataset folder
creation, item insert; the job insert; the outcome update). The latency rows are
queueing: on this 2-CPU machine shared with other work (1-minute load 14-20 during the
runs) one server process did not get the ~0.7 CPU that 200 events/s x 3.3 ms need, so
POSTs waited for the event loop (POST p50 1.2 s), and the burst's 5,000 events
(16 s of server CPU) could not be applied within 15 s. Next steps: the token check
inside the recording transaction (one read less per POST), fewer middlewares on the
push routes, several server processes (`serve --workers N`; one applier across them).
"""


def render(res: Results, command: str, started: datetime) -> str:
    out = [
        SECTION,
        "",
        DEFINITIONS,
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine()}, with moto as the store:",
        "",
        f"    .venv/bin/python {command}",
        "",
        table(res),
        "",
    ]
    out += [f"- {n}" for n in res.notes]
    if ANALYSIS:
        out += ["", ANALYSIS]
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.exit(main())
