"""Prefix-parallel vs sequential sync of a big bucket far away, side by side in one run.

1. moto's S3 API server as a subprocess on localhost; a bucket of ``--keys`` objects
   (``site-SS/cam-CC/day-DD/fNNNN.jpg``, created by many threads).
2. A proxy in front of it that holds every request ``--delay-ms`` (30 ms: a bucket in
   another region) before forwarding it: ``tests/faults.py``'s proxy, with a delay.
3. The real CLI, ``mediamirror sync`` through the proxy into a fresh SQLite catalog, with
   ``MEDIAMIRROR_SYNC_LIST_WIDTH=1`` (sequential) and ``=--width`` (parallel): a first sync
   and a re-sync of the unchanged bucket each, interleaved (sequential, parallel,
   sequential, parallel...) for ``--rounds`` rounds. Figures are the engine's own seconds
   (the summary line), medians over rounds; the ratio is sequential / parallel.
4. For reference, the bare listings (no catalog) through the proxy: boto3 pages vs
   ``mediamirror.sync.parallel.parallel_pages``.

    .venv/bin/python benchmarks/parallel_sync_bench.py [--keys 100000] [--width 8]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psutil
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from faults import FaultProxy, _Handler  # noqa: E402  (the tests' proxy, reused)
from mediamirror.stores.s3 import S3Store  # noqa: E402
from mediamirror.sync.parallel import parallel_pages  # noqa: E402

BUCKET = "mediamirror-parallel-bench"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
TARGET = 4.0
_SUMMARY = re.compile(r"(\d+) added, (\d+) changed, (\d+) deleted, (\d+) unchanged.* in ([\d.]+) s")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class DelayProxy(FaultProxy):
    """The fault proxy of the tests, holding every request ``delay`` seconds."""

    def __init__(self, upstream: str, delay: float) -> None:
        super().__init__(upstream)
        closing = self.state.closing

        class Delayed(_Handler):
            def _serve(self, state: Any, req: Any) -> bool:
                closing.wait(delay)
                return super()._serve(state, req)

        self.server.RequestHandlerClass = Delayed


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, **AWS_ENV}
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client(endpoint).list_buckets()
            return proc, endpoint
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def client(endpoint: str, pool: int = 10) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(max_pool_connections=pool, retries={"max_attempts": 5}),
    )


def bench_keys(n: int) -> list[str]:
    """site-SS/cam-CC/day-DD/fNNNN.jpg, 100 frames a day-folder."""
    keys = []
    for i in range(n):
        folder, frame = divmod(i, 100)
        site, rest = divmod(folder, 100)
        cam, day = divmod(rest, 10)
        keys.append(f"site-{site:02d}/cam-{cam:02d}/day-{day:02d}/f{frame:04d}.jpg")
    return keys


def fill(endpoint: str, keys: list[str], threads: int) -> None:
    s3 = client(endpoint, pool=threads)
    s3.create_bucket(Bucket=BUCKET)
    done = [0]
    started = time.monotonic()

    def put(key: str) -> None:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        done[0] += 1
        if done[0] % 20000 == 0:
            log(f"  {done[0]:,} keys ({done[0] / (time.monotonic() - started):,.0f}/s)")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, keys, chunksize=256))


def run_sync(home: Path, endpoint: str, width: int, env: Mapping[str, str]) -> tuple[float, str]:
    """``mediamirror sync bench`` into ``home``'s catalog; (engine seconds, summary line)."""
    mm = str(Path(sys.executable).parent / "mediamirror")
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDIAMIRROR_")},
        **AWS_ENV,
        **env,
        "MEDIAMIRROR_HOME": str(home),
        "MEDIAMIRROR_AUTO_POSTPROCESS": "false",
        "MEDIAMIRROR_SYNC_LIST_WIDTH": str(width),
    }
    if not (home / "catalog.db").exists():
        subprocess.run(
            [mm, "source", "add", "bench", f"s3://{BUCKET}", "--endpoint-url", endpoint,
             "--preset", "minio", "--mount", "/bench"],
            env=full, check=True, capture_output=True,
        )  # fmt: skip
    proc = subprocess.run(
        [mm, "sync", "bench", "--quiet"], env=full, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"sync failed: {proc.stderr.strip()}")
    line = proc.stdout.strip().splitlines()[-1]
    match = _SUMMARY.search(line)
    if not match:
        raise SystemExit(f"no summary line in {proc.stdout!r}")
    return float(match.group(5)), line


def timed(fn: Callable[[], int], server: psutil.Process, proxy: FaultProxy) -> Timed:
    """Wall seconds of ``fn``, with the S3 server's CPU seconds and requests meanwhile."""
    cpu, seen = sum(server.cpu_times()[:2]), len(proxy.seen)
    started = time.monotonic()
    n = fn()
    wall = time.monotonic() - started
    return Timed(wall, n, sum(server.cpu_times()[:2]) - cpu, len(proxy.seen) - seen)


@dataclass
class Timed:
    wall: float
    keys: int
    server_cpu: float
    requests: int

    def line(self) -> str:
        return (
            f"{self.wall:7.2f} s, {self.requests} requests, S3 server CPU {self.server_cpu:.1f} s"
            f" ({self.server_cpu / max(self.requests, 1) * 1000:.0f} ms a request)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fill-threads", type=int, default=32)
    args = parser.parse_args()

    moto, upstream = start_moto()
    try:
        log(f"moto at {upstream}; creating {args.keys:,} keys with {args.fill_threads} threads")
        started = time.monotonic()
        fill(upstream, bench_keys(args.keys), args.fill_threads)
        log(f"  done in {time.monotonic() - started:.0f} s")
        with DelayProxy(upstream, args.delay_ms / 1000) as proxy:
            log(f"proxy at {proxy.endpoint} adds {args.delay_ms:g} ms per request")
            store = S3Store(
                BUCKET, endpoint_url=proxy.endpoint, access_key="bench", secret_key="bench"
            )

            def sequential() -> int:
                return sum(len(p) for p in store.list_pages())

            def parallel() -> int:
                return sum(len(p) for p in parallel_pages(store, args.width))

            server = psutil.Process(moto.pid)
            seq, par = timed(sequential, server, proxy), timed(parallel, server, proxy)
            assert seq.keys == par.keys == args.keys, (seq.keys, par.keys)
            log(f"listing only, sequential: {seq.line()}")
            log(f"listing only, width {args.width:2d}: {par.line()}")
            seq_list, par_list = seq.wall, par.wall

            figures: dict[tuple[str, int], list[float]] = {}
            with tempfile.TemporaryDirectory(prefix="mm-parallel-bench-") as tmp:
                for r in range(args.rounds):
                    for width in (1, args.width):
                        home = Path(tmp) / f"r{r}-w{width}"
                        for kind in ("first sync", "re-sync"):
                            seconds, line = run_sync(home, proxy.endpoint, width, {})
                            figures.setdefault((kind, width), []).append(seconds)
                            log(f"width {width:2d} {kind:10s} {seconds:7.2f} s  | {line}")
            requests = len(proxy.seen)
    finally:
        moto.terminate()
        try:
            moto.wait(30)
        except subprocess.TimeoutExpired:  # a big bucket takes a while to let go of
            moto.kill()
            moto.wait()

    print()
    print(f"{args.keys:,} keys, {args.delay_ms:g} ms per request, width {args.width}, "
          f"{args.rounds} round(s), load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'':12s} {'sequential':>11s} {'parallel':>9s} {'ratio':>7s}")
    print(f"{'listing':12s} {seq_list:10.2f}s {par_list:8.2f}s {seq_list / par_list:6.2f}x")
    for kind in ("first sync", "re-sync"):
        seq = statistics.median(figures[(kind, 1)])
        par = statistics.median(figures[(kind, args.width)])
        verdict = "met" if seq / par >= TARGET else "NOT met"
        print(f"{kind:12s} {seq:10.2f}s {par:8.2f}s {seq / par:6.2f}x  (target >= {TARGET:g}x: "
              f"{verdict})")  # fmt: skip
    print(f"requests through the proxy: {requests:,}")


if __name__ == "__main__":
    main()
