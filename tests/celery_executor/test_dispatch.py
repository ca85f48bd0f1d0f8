"""The dispatcher without workers: windows (back-pressure), re-sending lost messages,
routing by processor, and what ``mediamirror status`` shows of it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kombu import Connection
from sqlalchemy import select, update

from helpers import Cli, assert_one_error_line, closed_port
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.leases import acquire
from mediamirror.catalog.models import LEASES, utcnow
from mediamirror.config import load_settings
from mediamirror.jobs import dispatch, queue
from mediamirror.jobs.executors.celery import make_app, sender
from mediamirror.jobs.model import JOBS, RetryPolicy
from mediamirror.jobs.queue import JobSpec
from mediamirror.jobs.routing import DEFAULT_QUEUE
from mediamirror.services import Services

from .conftest import RedisServer, wait_for

QUEUE = "gpu"


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str, redis: RedisServer) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    processors = {"heavy": {"command": "true", "queue": QUEUE}, "light": {"command": "true"}}
    (home / "config.yaml").write_text(yaml.safe_dump({"processors": processors}))
    return Cli(
        home=home,
        database_url=sqlite_url,
        env={
            "MEDIAMIRROR_EXECUTOR": "celery",
            "MEDIAMIRROR_BROKER_URL": redis.url,
            "MEDIAMIRROR_CELERY_REDISPATCH_SECONDS": "60",
        },
    )


def _on_broker(url: str, name: str) -> int:
    from amqp.exceptions import ChannelError

    with Connection(url) as conn:
        try:
            declared = conn.default_channel.queue_declare(queue=name, passive=True)
        except ChannelError:  # nothing was ever sent to it
            return 0
        return int(declared.message_count)


def test_windows_resends_and_status(cli: Cli, redis: RedisServer) -> None:
    env = cli.environ()
    services = Services(Catalog(cli.database_url), load_settings(env=env), env)
    catalog = services.catalog
    specs = [JobSpec("heavy", "folder", n, "v1") for n in range(1, 11)]
    specs += [JobSpec("light", "folder", n, "v1") for n in range(1, 4)]
    heavy = queue.enqueue(catalog, specs, services.retry_policy)[:10]
    # One live worker with 2 slots on the gpu queue; nobody serves the default queue.
    worker = dispatch.WorkerInfo("probe@test", 2, (QUEUE,))
    acquire(catalog, worker.lease, "someone", 60)
    dispatcher = dispatch.Dispatcher(services, sender(make_app(services.settings, env)))

    assert dispatcher.tick() == 4  # 2 x the live slots, not 10
    assert dispatcher.tick() == 0  # the window is full
    assert _on_broker(redis.url, QUEUE) == 4
    first, _ = dispatch.claim_one(catalog, "w", heavy[0], 30)  # a worker takes one...
    assert first is not None and dispatch.claim_one(catalog, "w2", heavy[0], 30)[0] is None
    assert dispatcher.tick() == 1  # ...and its place in the window is filled
    status = cli.run("status", "--json", "--timeout", "0.2").json()
    assert status["executor"] == "celery"
    assert status["queues"][QUEUE] == {"queued": 9, "in_flight": 4}
    assert status["queues"][DEFAULT_QUEUE] == {"queued": 3, "in_flight": 0}
    assert status["broker_messages"][QUEUE] == 5 and status["broker_error"] is None
    assert [w["node"] for w in status["workers"]] == ["probe@test"]
    assert status["roles"] == {} and status["dispatcher"] is None
    # Roles one process plays across all (here the dispatcher): `status` names the holder.
    acquire(catalog, dispatch.LEASE, dispatcher.owner, 60)
    status = cli.run("status", "--json", "--timeout", "0.2").json()
    assert status["roles"] == {dispatch.LEASE: dispatcher.owner} and status["dispatcher"]
    text = cli.run("status", "--timeout", "0.2").stdout
    assert "redis://127.0.0.1" in text
    assert f"  {dispatch.LEASE:38} {dispatcher.owner}" in text.splitlines(), text

    # A minute on, nobody took the 4 messages: lost (the broker was flushed or restarted).
    with catalog.write() as conn:
        conn.execute(
            update(JOBS)
            .where(JOBS.c.dispatched_at.is_not(None))
            .values(dispatched_at=utcnow() - timedelta(seconds=61))
        )
    assert dispatcher.tick() == 4
    assert _on_broker(redis.url, QUEUE) == 9  # duplicates are dropped by the claim
    catalog.close()


def test_a_bad_queue_name_is_one_error_line(cli: Cli) -> None:
    config: dict[str, Any] = {"processors": {"heavy": {"command": "true", "queue": "a b"}}}
    (cli.home / "config.yaml").write_text(yaml.safe_dump(config))
    assert_one_error_line(cli.run("status", ok=False), "processor 'heavy'", "queue 'a b'")


def test_the_celery_executor_needs_a_broker(cli: Cli) -> None:
    result = cli.run("worker", env={"MEDIAMIRROR_BROKER_URL": ""}, ok=False)
    assert_one_error_line(result, "broker_url", "MEDIAMIRROR_BROKER_URL")


def test_serve_dispatches_with_the_celery_executor(cli: Cli, redis: RedisServer) -> None:
    import redis as redis_client

    redis_client.Redis(port=redis.port).flushall()
    env = cli.environ()
    services = Services(Catalog(cli.database_url), load_settings(env=env), env)
    specs = [JobSpec("heavy", "folder", n, "v1") for n in range(1, 6)]
    queue.enqueue(services.catalog, specs, services.retry_policy)
    acquire(services.catalog, dispatch.WorkerInfo("probe@test", 1, (QUEUE,)).lease, "x", 60)
    background = dispatch.start(services)  # what `serve` starts beside the API
    try:
        wait_for(lambda: _on_broker(redis.url, QUEUE) == 2, 10, "two messages")
    finally:
        background.stop.set()
        background.thread.join(10)
    assert not background.thread.is_alive()
    with services.catalog.read() as conn:
        held = conn.execute(select(LEASES.c.name).where(LEASES.c.name == dispatch.LEASE)).all()
    assert held == []  # released on stop: another process takes over at once
    services.catalog.close()


def test_status_names_an_unreachable_broker_without_its_password(cli: Cli) -> None:
    url = f"redis://user:broker-secret-42@127.0.0.1:{closed_port()}/0"
    out = cli.run("status", "--timeout", "0.2", env={"MEDIAMIRROR_BROKER_URL": url}).stdout
    assert "unreachable" in out and "127.0.0.1" in out
    assert "broker-secret-42" not in out


def test_a_message_claims_its_queued_due_jobs_once_and_refills_its_window(
    catalog: Catalog,
) -> None:
    """``claim_message`` (a pool process taking a message's ids, here more than one
    message ever held before) on SQLite and PostgreSQL: only the queued, due jobs among
    the ids are taken, in queue order, and as many next jobs of the queue are recorded as
    sent; the same message delivered again takes nothing."""
    specs = [JobSpec("light", "folder", n, "v1") for n in range(1, 311)]
    ids = queue.enqueue(catalog, specs, RetryPolicy())
    later, gone = ids[2], ids[3]
    with catalog.write() as conn:
        soon = utcnow() + timedelta(hours=1)
        conn.execute(update(JOBS).where(JOBS.c.id == later).values(run_after=soon))
    queue.cancel(catalog, gone)
    message = ids[:300]
    refill = dispatch.Refill(DEFAULT_QUEUE, {}, 60)

    jobs, following, datasets = dispatch.claim_message(catalog, "w", message, 30, refill)

    taken = [i for i in message if i not in (later, gone)]
    assert [j.id for j in jobs] == taken and datasets == {}  # (its folders do not exist)
    assert following == ids[300:]  # the 10 due ones left; `later` is not due yet
    with catalog.read() as conn:
        rows = {r.id: r for r in conn.execute(select(JOBS)).all()}
    assert {rows[i].state for i in taken} == {"running"}
    assert {(rows[i].worker, rows[i].dispatched_at) for i in taken} == {("w", None)}
    assert all(rows[i].dispatched_at is not None for i in following)
    assert (rows[later].state, rows[gone].state) == ("queued", "canceled")
    assert dispatch.claim_message(catalog, "w2", message, 30, refill) == ([], [], {})
