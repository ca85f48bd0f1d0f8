"""Fixtures of the Celery executor tests: a broker (a redis-server of the module's own, or
the machine's RabbitMQ), a PostgreSQL catalog with empty video datasets, and Celery worker
processes started through the real CLI, shared by the tests of a module (a worker takes
a few seconds to start).

Each module gets its own broker queue name, PostgreSQL schema and home directory, so
modules can run in parallel (pytest-xdist) on one RabbitMQ.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from conftest import PG_ENV, PG_HOWTO, _missing, pg_schema_url
from helpers import Cli, entry_point, free_port
from mediamirror.catalog.db import Catalog
from mediamirror.config import load_settings
from mediamirror.jobs import dispatch
from mediamirror.jobs.model import JOBS
from mediamirror.services import Services
from mediamirror.sources import add_source, sync_source

TESTS_DIR = Path(__file__).resolve().parents[1]
RABBITMQ_ENV = "MEDIAMIRROR_TEST_AMQP_URL"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_HOWTO = "the Celery tests with Redis need redis-server on PATH: apt-get install redis-server"
RABBITMQ_HOWTO = (
    f"the Celery tests with RabbitMQ need a RabbitMQ at {RABBITMQ_URL} "
    f"(apt-get install rabbitmq-server) or {RABBITMQ_ENV}"
)
DATASETS = 300


def _reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class RedisServer:
    """A redis-server of our own, without persistence: a restart loses every message."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _missing(REDIS_HOWTO)
        self.binary = str(binary)
        self.port = free_port()
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.root)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _reachable(self.port), 10, "redis-server")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@dataclass
class Cluster:
    """A catalog with DATASETS video datasets, a broker, and Celery workers on them."""

    root: Path
    catalog: Catalog
    cli: Cli
    broker: str
    queue: str
    redis: RedisServer | None = None
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return self.cli.environ()

    def services(self) -> Services:
        env = self.env()
        return Services(self.catalog, load_settings(env=env), env)

    def start_worker(self) -> subprocess.Popen[str]:
        log = (self.root / f"worker-{len(self.workers) + 1}.log").open("w")
        args = ["worker", "--executor", "celery", "--queues", self.queue, "--concurrency", "1"]
        try:
            proc = subprocess.Popen(
                [*entry_point(), *args],
                env=self.env(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its pool children and dispatcher die with it
            )
        finally:
            log.close()
        self.workers.append(proc)
        return proc

    def live(self) -> list[Any]:
        return [w for w, _ in dispatch.live_workers(self.catalog) if self.queue in w.queues]

    def wait_workers(self, count: int, timeout: float = 60) -> None:
        wait_for(lambda: len(self.live()) >= count, timeout, f"{count} live Celery workers")

    def jobs(self, ids: list[int]) -> list[Any]:
        with self.catalog.read() as conn:
            return list(conn.execute(select(JOBS).where(JOBS.c.id.in_(ids))).all())

    def wait_ended(self, ids: list[int], timeout: float = 60) -> list[Any]:
        def ended() -> list[Any] | None:
            rows = self.jobs(ids)
            return rows if all(r.state not in ("queued", "running") for r in rows) else None

        try:
            result: list[Any] = wait_for(ended, timeout, f"{len(ids)} jobs to end")
        except AssertionError:
            states: dict[str, int] = {}
            for r in self.jobs(ids):
                states[r.state] = states.get(r.state, 0) + 1
            raise AssertionError(f"jobs did not end: {states}; logs in {self.root}") from None
        return result

    def stop(self) -> None:
        for proc in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _config(trace: Path, queue: str) -> dict[str, Any]:
    fixtures = "jobs.fixtures"
    common = {"applies_to": ["video"], "queue": queue, "trace_dir": str(trace)}
    return {
        "processors": {
            "noop": {"python": f"{fixtures}:Noop", **common},
            "sleep": {"python": f"{fixtures}:Sleep", **common},
            "forever": {"python": f"{fixtures}:SleepUntilCanceled", **common},
        }
    }


def _datasets(media: Path) -> None:
    for n in range(DATASETS):
        folder = media / f"d{n // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip-{n:03d}.mp4").touch()


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = os.environ.get(PG_ENV)
    if not base:
        _missing(PG_HOWTO)
    root = tmp_path_factory.mktemp(f"celery-{request.param}")
    redis = None
    if request.param == "redis":
        redis = RedisServer(root)
        broker = redis.url
    else:
        broker = os.environ.get(RABBITMQ_ENV, RABBITMQ_URL)
        if not _reachable(5672) and RABBITMQ_ENV not in os.environ:
            _missing(RABBITMQ_HOWTO)
    queue = f"mmtest-{secrets.token_hex(4)}"
    schema_urls = pg_schema_url(base)
    url = next(schema_urls)
    home = root / "home"
    home.mkdir()
    (home / "config.yaml").write_text(yaml.safe_dump(_config(root / "trace", queue)))
    cli = Cli(home=home, database_url=url)
    cli.env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p),
        MEDIAMIRROR_EXECUTOR="celery",
        MEDIAMIRROR_BROKER_URL=broker,
        MEDIAMIRROR_JOB_LEASE_SECONDS="3",
        MEDIAMIRROR_CELERY_REDISPATCH_SECONDS="3",
        MEDIAMIRROR_JOB_RETRY_INTERVALS="0.1,0.1",
        MEDIAMIRROR_LOG_FILE="off",
        MEDIAMIRROR_LOG_LEVEL="info",
    )
    catalog = Catalog(url)
    media = root / "media"
    _datasets(media)
    env = cli.environ()
    add_source(catalog, "src", f"file://{media}", env=env)
    sync_source(catalog, load_settings(env=env), "src", env)
    found = Cluster(root, catalog, cli, broker, queue, redis)
    try:
        for _ in range(3):
            found.start_worker()
        found.wait_workers(3)
        yield found
    finally:
        found.stop()
        if redis is not None:
            redis.kill()
        else:
            _delete_queue(broker, queue)
        catalog.close()
        with contextlib.suppress(StopIteration):
            next(schema_urls)


def _delete_queue(broker: str, queue: str) -> None:
    """Leave the shared RabbitMQ as it was."""
    from kombu import Connection

    with contextlib.suppress(Exception), Connection(broker, connect_timeout=2) as conn:
        conn.default_channel.queue_delete(queue)
