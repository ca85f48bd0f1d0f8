"""Probe bytes: how much of a large video in a bucket a probe reads.

A ~500 MB H.264 MP4 (lavfi ``testsrc2`` 1080p at 60 Mbit/s CBR + AAC audio) is written twice,
with ``moov`` at the end (the worst case: the index sits behind 500 MB of media) and with
``+faststart``, uploaded to moto's S3 server (``python -m moto.server``), and probed with
``probe(RangeFile(S3Store(...), key, size))``, as the video processor does. Reported: bytes
fetched, range requests and probe time (median of ``--repeat`` probes), against the target
of at most 2 MB. A probe of the same file through a local RangeFile shows how much of the
time is the S3 server's. Local copies and bucket objects are deleted afterwards.

    .venv/bin/python benchmarks/probe_bench.py [--mb 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _bench_util import PYTHON, BenchResult, ffmpeg_exe, mib, run_timed, say

TARGET_BYTES = 2 * 1024 * 1024
BITRATE = 60_000_000
BUCKET = "probe-bench"


def make_video(path: Path, megabytes: int) -> float:
    """An H.264/AAC MP4 of about ``megabytes`` MB with moov at the end; returns seconds."""
    seconds = max(2, round(megabytes * 1e6 * 8 / BITRATE))
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}"]
    cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    # CBR with filler data: a high bitrate whatever the (simple) test pattern needs.
    cmd += ["-b:v", "60M", "-minrate", "60M", "-maxrate", "60M", "-bufsize", "60M"]
    cmd += ["-x264-params", "nal-hrd=cbr", "-c:a", "aac", "-b:a", "128k", str(path)]
    run_timed(cmd)
    return seconds


def faststart_copy(src: Path, dest: Path) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(src)]
    cmd += ["-map", "0", "-c", "copy", "-movflags", "+faststart", str(dest)]
    run_timed(cmd)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """moto's S3 API server in a subprocess, on a free local port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def probe_once(store: Any, key: str, size: int) -> dict[str, Any]:
    from mediamirror.processing.probe import probe
    from mediamirror.processing.rangefile import RangeFile

    start = time.perf_counter()
    with RangeFile(store, key, size) as fh:
        info = probe(fh, name=key)
        fetched, requests = fh.bytes_fetched, fh.requests
    return {
        "seconds": time.perf_counter() - start,
        "bytes": fetched,
        "requests": requests,
        "faststart": info.faststart,
        "codec": info.codec,
        "frames": info.frames,
    }


def run(work: Path, *, megabytes: int = 500, repeat: int = 3) -> BenchResult:
    from mediamirror.stores.local import LocalStore
    from mediamirror.stores.s3 import S3Store

    result = BenchResult("probe")
    started = time.perf_counter()
    say(f"== probe bytes: ~{megabytes} MB MP4 in moto's S3 server")
    folder = work / "probe-media"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tail = folder / "moov-at-end.mp4"
    fast = folder / "faststart.mp4"
    t = time.perf_counter()
    seconds = make_video(tail, megabytes)
    faststart_copy(tail, fast)
    result.note(
        f"videos: {seconds} s of 1080p30 H.264 at 60 Mbit/s + AAC, "
        f"{tail.stat().st_size / 1e6:.0f} MB, made in {time.perf_counter() - t:.0f} s"
    )
    result.commands += [
        f"ffmpeg -f lavfi -i testsrc2=size=1920x1080:rate=30:duration={seconds} -f lavfi "
        f"-i sine=frequency=440:sample_rate=48000:duration={seconds} -c:v libx264 -preset "
        "ultrafast -pix_fmt yuv420p -b:v 60M -minrate 60M -maxrate 60M -bufsize 60M "
        "-x264-params nal-hrd=cbr -c:a aac -b:a 128k moov-at-end.mp4",
        "ffmpeg -i moov-at-end.mp4 -map 0 -c copy -movflags +faststart faststart.mp4",
        ".venv/bin/python -m moto.server -H 127.0.0.1 -p <port>",
        "probe(RangeFile(S3Store(bucket, endpoint_url=<moto>), key, size))",
    ]
    env_keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    old_env = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    server = MotoServer()
    try:
        store = S3Store(
            BUCKET,
            endpoint_url=server.url,
            region="us-east-1",
            addressing="path",
            access_key="bench",
            secret_key="bench",
        )
        store.client.create_bucket(Bucket=BUCKET)
        local = LocalStore(folder)
        for path, label in ((tail, "moov at end"), (fast, "faststart")):
            size = path.stat().st_size
            t = time.perf_counter()
            store.put_file(path.name, path)
            upload = time.perf_counter() - t
            runs = [probe_once(store, path.name, size) for _ in range(repeat)]
            local_runs = [probe_once(local, path.name, size) for _ in range(repeat)]
            first = runs[0]
            if any(r["bytes"] != first["bytes"] for r in runs):
                result.note(f"{label}: bytes differ between probes: {[r['bytes'] for r in runs]}")
            expected = label == "faststart"
            if first["faststart"] is not expected:
                raise RuntimeError(f"{label}: probe says faststart={first['faststart']}")
            median = statistics.median(r["seconds"] for r in runs)
            local_median = statistics.median(r["seconds"] for r in local_runs)
            each = ", ".join(f"{r['seconds']:.3f}" for r in runs)
            result.note(
                f"{label}: {size / 1e6:.0f} MB object (uploaded in {upload:.1f} s); probe read "
                f"{first['bytes']:,} bytes ({first['bytes'] / size:.3%} of the file) in "
                f"{first['requests']} range request(s); median {median:.3f} s over S3 "
                f"({each}), "
                f"{local_median:.3f} s through a local RangeFile"
            )
            result.row(
                f"{label}: bytes fetched",
                mib(first["bytes"]),
                "MiB",
                "<= 2 MiB",
                first["bytes"] <= TARGET_BYTES,
            )
            result.row(f"{label}: range requests", first["requests"], "")
            result.row(f"{label}: probe time over S3 (median)", median, "s")
            result.row(f"{label}: probe time, local RangeFile (median)", local_median, "s")
            result.raw[label] = {
                "size": size,
                "s3": runs,
                "local": local_runs,
                "upload_s": upload,
            }
            store.delete(path.name)
    finally:
        server.stop()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(folder, ignore_errors=True)
    result.note(
        f"moto {_moto_version()} answers a range GET by reading the whole object and slicing "
        "it (moto/s3/responses.py _handle_range_header over FakeKey.value), so the time over "
        "S3 here is mostly the test server's, about the same per request whatever the range; "
        "the local RangeFile time is the probe's own cost"
    )
    result.seconds = time.perf_counter() - started
    return result


def _moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=500, help="size of the video in MB")
    parser.add_argument("--repeat", type=int, default=3, help="probes per file")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mm-probe-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run(work, megabytes=args.mb, repeat=args.repeat)
    for row in result.rows:
        say(f"{row.figure}: {row.shown()} {row.target} {row.verdict()}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
