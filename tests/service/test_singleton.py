"""A role played by one process at a time (the scheduler, the SQS consumer): the lease
decides, its holder renews it, and another contender takes it over once the holder
stops renewing (expiry) or gives it up (release)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from helpers import sync_runs
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import SOURCES, utcnow
from mediamirror.catalog.singleton import Singleton
from mediamirror.config import load_settings
from mediamirror.scheduler import LEASE, Scheduler
from mediamirror.services import Services
from mediamirror.sources import add_source

pytestmark = pytest.mark.postgres


def test_one_holder_at_a_time_and_takeover(catalog: Catalog) -> None:
    # Two contenders of this one process: neither can tell the other is dead, so only
    # expiry or release hands the role over (as between two machines).
    a = Singleton(catalog, "role", ttl=1.0)
    b = Singleton(catalog, "role", ttl=1.0)

    assert a.attempt() and a.held()
    assert not b.attempt() and not b.held()
    assert a.attempt()  # a renewal

    time.sleep(1.1)  # a stops renewing: its lease runs out (no condition to poll here)
    assert not a.held()  # a stopped trusting it before it ran out
    assert b.attempt() and b.held()
    assert not a.attempt()  # a learns it lost the role

    b.release()
    assert not b.held()
    assert a.attempt() and a.held()


def test_stopping_releases_the_role_at_once(catalog: Catalog) -> None:
    stop = threading.Event()
    a = Singleton(catalog, "role", ttl=60.0, interval=0.05, stop=stop)
    b = Singleton(catalog, "role", ttl=60.0, interval=0.05)
    a.thread.start()
    assert a.wait_held(10)
    assert not b.attempt()

    stop.set()
    a.thread.join(10)

    assert not a.held()
    assert b.attempt()  # long before the 60 s lease would have expired


def test_only_the_scheduler_holding_the_role_syncs(catalog: Catalog, tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.mp4").write_bytes(b"x")
    settings = load_settings({"home": str(tmp_path / "home")}, env={})
    services = Services(catalog, settings, {})
    add_source(catalog, "due", (tmp_path / "media").as_uri(), env={}, schedule="* * * * *")
    with catalog.write() as conn:  # added before the latest cron slot: due now
        conn.execute(update(SOURCES).values(created_at=utcnow() - timedelta(minutes=2)))
    other = Singleton(catalog, LEASE, ttl=60.0)  # another process's scheduler
    assert other.attempt()
    scheduler = Scheduler(services, single=True)
    assert scheduler.role is not None

    assert not scheduler.role.attempt()
    assert scheduler.tick() == []
    assert sync_runs(catalog) == []

    other.release()
    assert scheduler.role.attempt()
    assert scheduler.tick() == ["due"]
    assert len(sync_runs(catalog)) == 1
