"""Several service processes on one PostgreSQL catalog, as real subprocesses: ``serve
--workers 2`` (two processes behind one port) beside a plain ``serve``. Events posted to
both apply once, one scheduler and one SQS consumer run across the three processes, and
another process takes the scheduler over when its holder is SIGKILLed. The processes are
started once for the module (each start costs seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml
from sqlalchemy import select, update

from conftest import PG_ENV, PG_HOWTO, pg_schema_url
from events.eventbridge_payloads import eventbridge_event
from events.support import listed, next_sequencer, s3_event, s3_record
from helpers import Cli, S3Bucket, S3Server, entry_point, free_port
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import ITEMS, LEASES, SOURCES, SYNC_RUNS, utcnow
from mediamirror.events.api import SQS_LEASE
from mediamirror.events.routing import create_push_token
from mediamirror.scheduler import LEASE as SCHEDULER_LEASE
from mediamirror.scheduler import set_schedule
from mediamirror.sources import add_source
from mediamirror.web.deps import COOKIE
from mediamirror.web.models import EVENTS

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} not set in CI")
        pytest.skip(PG_HOWTO)
    yield from pg_schema_url(base)


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Cluster:
    """``serve --workers 2`` (a) and ``serve`` (b) on one catalog, one bucket, one queue."""

    root: Path
    cli: Cli
    catalog: Catalog
    bucket: S3Bucket
    queue: Any
    queue_url: str
    token: str = ""
    servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        port = free_port()
        out = (self.root / f"{name}.out").open("wb")
        err = (self.root / f"{name}.err").open("wb")
        self.servers[name] = subprocess.Popen(
            [*entry_point(), "serve", "--port", str(port), *args],
            env=self.cli.environ({"MEDIAMIRROR_LOG_LEVEL": "info"}),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        self.urls[name] = f"http://127.0.0.1:{port}"

    def ready(self, name: str) -> bool:
        assert self.servers[name].poll() is None, self.log(name)
        try:
            return httpx.get(f"{self.urls[name]}/api/v1/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def log(self, name: str) -> str:
        return (self.root / f"{name}.err").read_text(errors="replace")[-3000:]

    def pids(self) -> set[int]:
        """The service processes: b, and a's workers (children of a's process manager)."""
        found = {self.servers["b"].pid}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if _parent(int(entry.name)) != self.servers["a"].pid:
                        continue
                    # Not multiprocessing's resource tracker, a's other child.
                    if b"spawn_main" in (entry / "cmdline").read_bytes():
                        found.add(int(entry.name))
                except (OSError, ValueError):
                    continue
        return found

    def holder(self, lease: str) -> int | None:
        with self.catalog.read() as conn:
            owner = conn.execute(select(LEASES.c.owner).where(LEASES.c.name == lease)).scalar()
        return int(owner.split(":")[1]) if owner else None

    def post(self, name: str, body: Any) -> list[str]:
        resp = httpx.post(
            f"{self.urls[name]}/api/v1/bucket_notifications/s3",
            params={"token": self.token},
            content=json.dumps(body),
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        return [r["outcome"] for r in resp.json()["results"]]

    def events_of(self, key: str) -> list[Any]:
        with self.catalog.read() as conn:
            return list(conn.execute(select(EVENTS).where(EVENTS.c.key == key)))

    def stop(self) -> None:
        for proc in self.servers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.servers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def cluster(
    pg_url: str, s3_server: S3Server, s3_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    sqs = boto3.client("sqs", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=f"mm-{root.name[-12:].replace('_', '-')}")["QueueUrl"]
    home = root / "home"
    home.mkdir()
    sqs_entry = {
        "queue_url": queue_url,
        "endpoint_url": s3_server.endpoint,
        "region": "us-east-1",
        "wait_seconds": 1,
        "visibility_timeout": 5,
    }
    (home / "config.yaml").write_text(yaml.safe_dump({"sqs": [sqs_entry]}))
    cli = Cli(home=home, database_url=pg_url)
    bucket = S3Bucket(s3_server, s3_client)
    catalog = Catalog(pg_url)
    add_source(catalog, "src", bucket.url(), env=cli.environ(), **bucket.options)
    token = create_push_token(catalog, "src")[1]
    cluster = Cluster(root, cli, catalog, bucket, sqs, queue_url, token)
    try:
        cluster.start("a", "--workers", "2", "--no-worker")
        cluster.start("b")
        for name in ("a", "b"):
            wait_for(lambda name=name: cluster.ready(name), f"serve {name} to answer", 60)
        yield cluster
    finally:
        cluster.stop()
        cluster.catalog.close()


def test_events_posted_to_both_processes_apply_once(cluster: Cluster) -> None:
    keys = [f"drop/clip {i}.mp4" for i in range(6)]
    cluster.bucket.put_many(keys, b"12345")
    deliveries = []
    for key in keys:
        info = listed(cluster.bucket, key)
        record = s3_record(
            cluster.bucket.name,
            key,
            size=info["size"],
            etag=info["etag"],
            sequencer=next_sequencer(),
        )
        deliveries += [("a", s3_event(record)), ("b", s3_event(record))]

    # Each delivery reaches both service URLs at the same moment (a sender retrying
    # through a load balancer, say): both processes race on the same new item.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda d: cluster.post(*d), deliveries))

    # Answered once recorded; one events applier across the processes applies them.
    assert answers == [["recorded"]] * len(deliveries)
    settled = wait_for(
        lambda: all(e.outcome != "pending" for k in keys for e in cluster.events_of(k)),
        "the events applied",
    )
    assert settled
    per_key = [sorted(e.outcome for e in cluster.events_of(k)) for k in keys]
    assert per_key == [["applied", "duplicate"]] * len(keys)
    with cluster.catalog.read() as conn:
        rows = conn.execute(select(ITEMS.c.key, ITEMS.c.state).where(ITEMS.c.key.in_(keys)))
        assert sorted(rows) == [(k, "present") for k in sorted(keys)]


def test_the_printed_sign_in_link_works_once_on_any_process(cluster: Cluster) -> None:
    out = (cluster.root / "a.out").read_text()
    [code] = [line.split("/login/")[1].split()[0] for line in out.splitlines() if "/login/" in line]
    url = f"{cluster.urls['a']}/login/{code}"

    # Made by a's parent, which serves nothing: its workers find it in the catalog.
    first = httpx.get(url, follow_redirects=False, timeout=10)
    again = httpx.get(url, follow_redirects=False, timeout=10)
    on_b = httpx.get(f"{cluster.urls['b']}/login/{code}", follow_redirects=False, timeout=10)

    assert (first.status_code, first.headers["location"]) == (303, "/")
    assert COOKIE in first.cookies
    assert "link_expired" in again.headers["location"]
    assert "link_expired" in on_b.headers["location"]


def test_one_sqs_consumer_applies_eventbridge_messages_once(cluster: Cluster) -> None:
    key = "drop/from the queue.mp4"
    cluster.bucket.put(key, b"123")
    info = listed(cluster.bucket, key)
    body = json.dumps(
        eventbridge_event(
            cluster.bucket.name,
            key,
            size=info["size"],
            etag=info["etag"],
            sequencer=next_sequencer(),
        )
    )
    for _ in range(2):  # delivered twice, as EventBridge may
        cluster.queue.send_message(QueueUrl=cluster.queue_url, MessageBody=body)

    events = wait_for(
        lambda: (
            (found := cluster.events_of(key))
            and len(found) == 2
            and all(e.outcome != "pending" for e in found)
            and found
        ),
        "both applied",
    )
    assert sorted(e.outcome for e in events) == ["applied", "duplicate"]
    assert cluster.holder(SQS_LEASE) in cluster.pids()


def test_one_scheduler_and_a_takeover_after_sigkill(cluster: Cluster) -> None:
    pids = cluster.pids()
    assert len(pids) == 3, pids  # b, and a's two workers
    first = wait_for(lambda: cluster.holder(SCHEDULER_LEASE), "a scheduler")
    assert first in pids

    os.kill(first, signal.SIGKILL)

    # The holder ran on this machine and its PID is gone: another process takes the
    # scheduler over at its next attempt (a's process manager replaces a dead worker).
    second = wait_for(
        lambda: (h := cluster.holder(SCHEDULER_LEASE)) not in (None, first) and h,
        "another process to take the scheduler over",
    )
    assert second in cluster.pids()
    # ... and runs it: a source due now (its latest cron slot came after it was added)
    # is synced by the new scheduler.
    bucket = cluster.bucket
    env = cluster.cli.environ()
    add_source(cluster.catalog, "sched", bucket.url("drop"), env=env, **bucket.options)
    set_schedule(cluster.catalog, "sched", "* * * * *")
    with cluster.catalog.write() as conn:
        conn.execute(
            update(SOURCES)
            .where(SOURCES.c.name == "sched")
            .values(created_at=utcnow() - timedelta(minutes=2))
        )
        sched_id = conn.execute(select(SOURCES.c.id).where(SOURCES.c.name == "sched")).scalar()

    def runs() -> list[Any]:
        with cluster.catalog.read() as conn:
            return list(conn.execute(select(SYNC_RUNS).where(SYNC_RUNS.c.source_id == sched_id)))

    done = [r for r in wait_for(runs, "the scheduled sync", timeout=30) if r.state != "running"]
    [run] = done or wait_for(lambda: [r for r in runs() if r.state != "running"], "its end")
    assert run.state == "success", run
    assert cluster.holder(SCHEDULER_LEASE) == second
