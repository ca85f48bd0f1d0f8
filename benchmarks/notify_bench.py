"""Notifications' cost to the job machinery: no-op jobs/s through ``worker --burst`` with
email and a webhook configured, divided by the same with notifications off.

Two catalogs mirror the same directory of empty ``.mp4`` files (one video dataset each) and
declare a bench-only ``noop`` processor (``ReadyNoopProcessor`` of
``benchmarks/noop_processor.py``: does nothing, like ``jobs_bench.py``'s, but clears the
dataset's mark as a real post-processor does, so every job completes its dataset and
records a ``dataset.ready`` notification in its transaction). The "on" catalog's
config.yaml also has an ``email:`` block pointing at an aiosmtpd server and a signed
``notify.webhooks`` entry pointing at an HTTP receiver, both started by this script on
127.0.0.1; the "off" catalog has neither. Every round queues the jobs again in both
(``mediamirror reprocess / --processor noop``) and times ``mediamirror worker --burst`` on
each, alternating which goes first, so both see the same machine. It prints jobs/s and the
worker's CPU per job, the on/off ratio per round and of the medians (target >= 0.95), and
the messages the servers received (after the timed runs the sender is run once more, so
what a burst leaves for the next sender is sent and counted too).

    .venv/bin/python benchmarks/notify_bench.py [--jobs 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from _bench_util import (
    BENCH_DIR,
    MEDIAMIRROR,
    BenchResult,
    dump_json,
    loadavg,
    mm_env,
    run_child_rusage,
    run_timed,
    say,
    wait_quiet,
)
from jobs_bench import job_span, make_files, max_job_id

TARGET_RATIO = 0.95
PROCESSORS = {"noop": {"python": "noop_processor:ReadyNoopProcessor", "applies_to": ["video"]}}


# -- the peers ---------------------------------------------------------------------------------


@dataclass
class Counter:
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self) -> None:
        with self.lock:
            self.count += 1


class _Mail:
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.counter.add()
        return "250 Message accepted for delivery"


def start_smtp(counter: Counter) -> Any:
    from aiosmtpd.controller import Controller

    with socket.socket() as sock:  # a free port (the controller cannot be given port 0)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    controller = Controller(_Mail(counter), hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def start_receiver(counter: Counter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            counter.add()
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- the catalogs ------------------------------------------------------------------------------


def config(smtp_port: int | None, hook_url: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {"processors": PROCESSORS}
    if smtp_port is not None and hook_url is not None:
        conf["email"] = {
            "from_addr": "pipeline@example.org",
            "to_addrs": ["me@example.org", "team@example.org"],
            "smtp_server": "127.0.0.1",
            "smtp_port": smtp_port,
        }
        conf["notify"] = {"webhooks": [{"url": hook_url, "secret": "bench-secret"}]}
    return conf


def prepare(work: Path, name: str, media: Path, conf: dict[str, Any]) -> dict[str, str]:
    """A catalog mirroring ``media`` with ``conf`` as config.yaml; returns its env."""
    home = work / f"home-{name}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "config.yaml").write_text(yaml.safe_dump(conf))
    env = mm_env(home, {"MEDIAMIRROR_AUTO_POSTPROCESS": "false", "PYTHONPATH": str(BENCH_DIR)})
    run_timed([MEDIAMIRROR, "source", "add", "bench", media.as_uri()], env=env)
    run_timed([MEDIAMIRROR, "sync", "bench", "--quiet"], env=env)
    return env


def notifications(home: Path) -> int:
    con = sqlite3.connect(home / "catalog.db")
    try:
        return int(con.execute("SELECT count(*) FROM notifications").fetchone()[0])
    except sqlite3.OperationalError:  # a catalog without the outbox
        return 0
    finally:
        con.close()


@dataclass(frozen=True)
class Run:
    rate: float  # jobs/s over the worker command's wall time
    cpu_ms: float  # the worker's CPU (user + sys, sender thread included) per job
    machine: str


def drain(env: dict[str, str]) -> int:
    """Run the sender (untimed) as if the settling time had passed, until nothing is due;
    returns the deliveries it sent."""
    from datetime import timedelta

    from mediamirror.catalog.db import Catalog
    from mediamirror.catalog.models import utcnow
    from mediamirror.config import load_settings
    from mediamirror.notify.sender import Sender
    from mediamirror.services import Services

    catalog = Catalog(f"sqlite:///{Path(env['MEDIAMIRROR_HOME']) / 'catalog.db'}")
    try:
        sender = Sender(Services(catalog, load_settings(env=env), env))
        total = 0
        for minutes in (2, 4, 8, 16):  # past the quiet time and a storm's gap
            summary = sender.run_once(now=utcnow() + timedelta(minutes=minutes))
            total += summary.sent
            if not summary.pending:
                break
        sender.release()
        return total
    finally:
        catalog.close()


def one_run(env: dict[str, str], jobs: int, quiet_wait: float) -> Run:
    """Queue the jobs again and drain them with ``worker --burst``."""
    home = Path(env["MEDIAMIRROR_HOME"])
    since = max_job_id(home / "catalog.db")
    run_timed([MEDIAMIRROR, "reprocess", "/", "--processor", "noop"], env=env)
    state = wait_quiet(quiet_wait)
    worker = run_child_rusage([MEDIAMIRROR, "worker", "--burst"], env=env)
    span = job_span(home / "catalog.db", since)
    if span.jobs != jobs or span.states.get("success") != jobs:
        raise RuntimeError(f"expected {jobs} successful jobs, got {span.states}")
    cpu = worker.user_seconds + worker.system_seconds
    return Run(jobs / worker.seconds, cpu / jobs * 1000, state)


# -- the benchmark -----------------------------------------------------------------------------


def run(work: Path, *, jobs: int, rounds: int, quiet_wait: float) -> BenchResult:
    result = BenchResult("notify")
    started = time.perf_counter()
    say(f"== notifications: {jobs} no-op jobs x {rounds} rounds, on vs off (load {loadavg()})")
    mails, posts = Counter(), Counter()
    smtp, receiver = start_smtp(mails), start_receiver(posts)
    try:
        media = work / "media"
        shutil.rmtree(media, ignore_errors=True)
        make_files(media, jobs)
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        envs = {
            "on": prepare(work, "on", media, config(smtp.port, hook)),
            "off": prepare(work, "off", media, config(None, None)),
        }
        runs: dict[str, list[Run]] = {"on": [], "off": []}
        for n in range(rounds):
            order = ["on", "off"] if n % 2 == 0 else ["off", "on"]
            for name in order:
                run_ = one_run(envs[name], jobs, quiet_wait)
                runs[name].append(run_)
                result.note(
                    f"round {n + 1}, notifications {name}: {run_.rate:,.0f} jobs/s, "
                    f"{run_.cpu_ms:.2f} ms CPU per job ({run_.machine})"
                )
            on, off = runs["on"][-1], runs["off"][-1]
            result.note(
                f"round {n + 1}: ratio on/off {on.rate / off.rate:.3f} (jobs/s), "
                f"{off.cpu_ms / on.cpu_ms:.3f} (CPU per job, off/on)"
            )
        during = (mails.count, posts.count)
        sent = drain(envs["on"])
        recorded = notifications(Path(envs["on"]["MEDIAMIRROR_HOME"]))
        result.note(
            f"notifications on: {recorded} recorded; received during the timed runs "
            f"{during[0]} emails and {during[1]} webhook POSTs (the sender waits for a burst "
            f"to settle, then sends one digest per channel); after the runs the sender sent "
            f"{sent} more deliveries: {mails.count} emails and {posts.count} POSTs in all"
        )
        summarize(result, runs)
        result.raw.update(
            {
                "jobs": jobs,
                "rounds": rounds,
                "rates": {k: [r.rate for r in v] for k, v in runs.items()},
                "cpu_ms": {k: [r.cpu_ms for r in v] for k, v in runs.items()},
                "recorded": recorded,
                "emails": mails.count,
                "webhook_posts": posts.count,
            }
        )
    finally:
        smtp.stop()
        receiver.shutdown()
        receiver.server_close()
    result.seconds = time.perf_counter() - started
    return result


def summarize(result: BenchResult, runs: dict[str, list[Run]]) -> None:
    on = statistics.median(r.rate for r in runs["on"])
    off = statistics.median(r.rate for r in runs["off"])
    cpu_on = statistics.median(r.cpu_ms for r in runs["on"])
    cpu_off = statistics.median(r.cpu_ms for r in runs["off"])
    ratio = on / off
    result.row("no-op jobs/s, notifications on (median)", on, "jobs/s")
    result.row("no-op jobs/s, notifications off (median)", off, "jobs/s")
    result.row(
        "ratio on/off (medians)", ratio, "ratio", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO
    )
    # CPU per job moves much less than wall time when other work shares the machine.
    result.row("worker CPU per job, notifications on (median)", cpu_on, "ms")
    result.row("worker CPU per job, notifications off (median)", cpu_off, "ms")
    result.row("CPU ratio off/on (medians)", cpu_off / cpu_on, "ratio")
    per_round = [a.rate / b.rate for a, b in zip(runs["on"], runs["off"], strict=True)]
    result.note(f"ratios per round: {', '.join(f'{r:.3f}' for r in per_round)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write raw results here")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mm-notify-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run(work, jobs=args.jobs, rounds=args.rounds, quiet_wait=args.quiet_wait)
    for row in result.rows:
        say(f"{row.figure}: {row.shown()} {row.target} {row.verdict()}")
    if args.json:
        dump_json(args.json, result.raw)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
