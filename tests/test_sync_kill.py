"""A sync killed with SIGKILL, and the lease that keeps two syncs of a source apart.

The kill is real: ``mediamirror sync`` runs as a subprocess, the test lets it run in short
slices (SIGCONT ... SIGSTOP) until the catalog holds some of the keys, then kills it: a
sync caught mid-way however fast it runs and however busy the machine is. The next sync must not be
blocked by the dead holder's lease, and must leave the catalog equal to the store.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from helpers import (
    Cli,
    LocalBucket,
    S3Bucket,
    S3Server,
    add_source,
    assert_one_error_line,
    catalog_items,
    sync,
    sync_runs,
)
from mediamirror.catalog import leases
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import ITEMS, LEASES
from mediamirror.errors import ConflictError

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

S3_KEYS = 600
LOCAL_KEYS = 6000


@pytest.fixture(scope="module")
def big_bucket(s3_server: S3Server, s3_client: Any) -> S3Bucket:
    """Many small objects, uploaded once for every test of this module (read-only)."""
    bucket = S3Bucket(s3_server, s3_client)
    bucket.put_many([f"d{i % 7}/k{i:05d}.txt" for i in range(S3_KEYS - 2)])
    bucket.put_many(["d3/clip.mov", "d3/clip.json"])
    return bucket


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory: pytest.TempPathFactory) -> LocalBucket:
    store = LocalBucket(tmp_path_factory.mktemp("big") / "store")
    for d in range(20):
        (store.root / f"d{d:02d}").mkdir()
    for i in range(LOCAL_KEYS - 2):
        (store.root / f"d{i % 20:02d}" / f"k{i:05d}.txt").write_bytes(b"x")
    store.put("d03/clip.mov")
    store.put("d03/clip.json")
    return store


def item_count(catalog: Catalog) -> int:
    with catalog.read() as conn:
        return int(conn.execute(select(func.count()).select_from(ITEMS)).scalar_one())


#: How long the sync runs between two looks at the catalog: a few pages at most.
SLICE_SECONDS = 0.002


def run_until_some_items(proc: subprocess.Popen[str], catalog: Catalog) -> int:
    """Let ``proc`` run in short slices until the catalog holds items; it is left stopped
    (SIGSTOP) with the count seen. 0 when it ended or time ran out first."""
    deadline = time.monotonic() + 120
    os.kill(proc.pid, signal.SIGSTOP)
    while time.monotonic() < deadline and proc.poll() is None:
        seen = item_count(catalog)
        if seen > 0:
            return seen
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(SLICE_SECONDS)
        os.kill(proc.pid, signal.SIGSTOP)
    return 0


def dead_owner() -> str:
    """The owner string a process of this machine had before it ended."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from mediamirror.catalog import leases; print(leases.new_owner())"],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate()
    return out.strip()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_killed_sync_is_resumed_by_the_next_one(
    request: pytest.FixtureRequest, catalog: Catalog, catalog_url: str, tmp_path: Path, kind: str
) -> None:
    store = request.getfixturevalue("big_bucket" if kind == "s3" else "big_dir")
    page = 10 if kind == "s3" else 50
    expected = sorted(store.keys())
    add_source(catalog, "big", store)
    cli = Cli(
        home=tmp_path / "home",
        database_url=catalog_url,
        env={"MEDIAMIRROR_SYNC_PAGE_SIZE": str(page)},
    )

    proc = cli.popen("sync", "big")
    try:
        seen = run_until_some_items(proc, catalog)
        assert 0 < seen < len(expected), f"sync was not caught mid-way ({seen} items)"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()  # reaped: its PID is gone, as after any crash
    assert proc.returncode == -signal.SIGKILL
    assert [r.state for r in sync_runs(catalog)] == ["running"]  # killed before its end
    assert 0 < item_count(catalog) < len(expected)
    with catalog.read() as conn:
        holder = conn.execute(select(LEASES.c.owner)).scalar_one()
    assert f":{proc.pid}:" in holder  # the dead process still "holds" the lease

    again = cli.run("sync", "big")  # not blocked: the holder's PID is dead on this host

    assert "added" in again.stdout
    items = catalog_items(catalog)  # fails on a duplicate key
    assert sorted(items) == expected
    assert {r.state for r in items.values()} == {"present"}
    runs = sync_runs(catalog)
    assert [(r.state, r.error) for r in runs] == [("error", "interrupted"), ("success", None)]
    assert runs[0].finished_at is not None
    assert runs[1].added + runs[1].unchanged == len(expected)
    with catalog.read() as conn:
        assert conn.execute(select(func.count()).select_from(LEASES)).scalar_one() == 0
    final = sync(catalog, "big", page_size=page * 10)
    assert (final.added, final.changed, final.deleted) == (0, 0, 0)


def test_interrupted_sync_records_its_run_and_releases_the_lease(
    big_dir: LocalBucket, catalog: Catalog, catalog_url: str, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT): one line, exit 130, the run closed as interrupted, lease free."""
    add_source(catalog, "big", big_dir)
    cli = Cli(
        home=tmp_path / "home", database_url=catalog_url, env={"MEDIAMIRROR_SYNC_PAGE_SIZE": "50"}
    )
    proc = cli.popen("sync", "big")
    try:
        assert run_until_some_items(proc, catalog) > 0, "sync was not caught mid-way"
        os.kill(proc.pid, signal.SIGINT)  # delivered when it runs again
        os.kill(proc.pid, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()

    assert proc.returncode == 130, stderr
    # Click writes a blank line first, closing the terminal's "^C"; then one line.
    assert [line for line in stderr.splitlines() if line] == ["error: interrupted"], stderr
    runs = sync_runs(catalog)
    assert [(r.state, r.error) for r in runs] == [("error", "interrupted")]
    committed = item_count(catalog)
    assert 0 < committed < LOCAL_KEYS
    # The signal only asks to stop; the engine stops between chunks, so the run's figures
    # are exactly what was committed.
    assert runs[0].added == runs[0].listed == committed
    with catalog.read() as conn:
        assert conn.execute(select(LEASES)).all() == []
    assert sync(catalog, "big").added == LOCAL_KEYS - committed


def test_interrupt_inside_a_page_counts_only_committed_pages(catalog: Catalog, store: Any) -> None:
    """Ctrl-C in the middle of a page's transaction (a local first sync's new files of
    several pages share one): it is rolled back, and the run's figures do not count it."""
    store.put_many([f"p/k{i:03d}.txt" for i in range(100)])
    add_source(catalog, "src", store)
    pages = 0
    writing = False

    def saw_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal writing
        writing = writing or statement.lstrip().upper().startswith("INSERT INTO ITEMS")

    def interrupt_second_commit(conn: Any) -> None:
        # Ctrl-C after the transaction's statements ran, just before its COMMIT.
        nonlocal pages, writing
        if writing:
            pages += 1
            writing = False
            if pages == 2:
                raise KeyboardInterrupt

    event.listen(catalog.engine, "before_cursor_execute", saw_statement)
    event.listen(catalog.engine, "commit", interrupt_second_commit)
    try:
        with pytest.raises(KeyboardInterrupt):
            sync(catalog, "src", page_size=5)
    finally:
        event.remove(catalog.engine, "before_cursor_execute", saw_statement)
        event.remove(catalog.engine, "commit", interrupt_second_commit)

    committed = item_count(catalog)
    assert 0 < committed < 100
    runs = sync_runs(catalog)
    assert [(r.state, r.error, r.added) for r in runs] == [("error", "interrupted", committed)]
    assert runs[0].listed == committed
    with catalog.read() as conn:
        assert conn.execute(select(LEASES)).all() == []
    assert sync(catalog, "src").added == 100 - committed


def test_a_live_holder_blocks_the_cli_sync(
    catalog: Catalog, catalog_url: str, tmp_path: Path, bucket: S3Bucket
) -> None:
    bucket.put("a.txt")
    source = add_source(catalog, "src", bucket)
    name = f"sync:{source.id}"
    owner = leases.new_owner()  # this test process: alive, same host
    leases.acquire(catalog, name, owner, ttl=600)
    cli = Cli(home=tmp_path / "home", database_url=catalog_url)

    blocked = cli.run("sync", "src", ok=False)

    assert_one_error_line(blocked, "source 'src' is already being synced", owner)
    assert catalog_items(catalog) == {}
    assert sync_runs(catalog) == []
    leases.release(catalog, name, owner)
    cli.run("sync", "src")
    assert list(catalog_items(catalog)) == ["a.txt"]


HOST = socket.gethostname()


@pytest.mark.parametrize(
    ("owner", "ttl", "blocked"),
    [
        pytest.param(lambda: leases.new_owner(), 600, True, id="alive-here"),
        pytest.param(lambda: "elsewhere:4242:abcd1234", 600, True, id="alive-elsewhere"),
        pytest.param(lambda: "elsewhere:4242:abcd1234", -1, False, id="expired"),
        pytest.param(lambda: dead_owner(), 600, False, id="dead-here"),
        pytest.param(lambda: f"{HOST}:{dead_pid()}:deadbeef", 600, True, id="older-format"),
    ],
)
def test_who_may_take_the_sync_lease(
    catalog: Catalog, store: Any, owner: Any, ttl: float, blocked: bool
) -> None:
    store.put("k.txt")
    source = add_source(catalog, "src", store)
    holder = owner()
    leases.acquire(catalog, f"sync:{source.id}", holder, ttl=ttl)

    if blocked:
        with pytest.raises(ConflictError, match="already being synced"):
            sync(catalog, "src")
        assert catalog_items(catalog) == {}
    else:
        assert sync(catalog, "src").added == 1
        with catalog.read() as conn:
            assert conn.execute(select(LEASES)).all() == []  # released after the run


# -- the lease primitives --------------------------------------------------------------------


def test_lease_acquire_renew_release(catalog: Catalog) -> None:
    cat = catalog
    a, b = leases.new_owner(), leases.new_owner()
    assert leases.acquire(cat, "x", a, ttl=60) is None
    assert leases.acquire(cat, "x", a, ttl=60) is None  # re-entrant for the same owner
    with pytest.raises(ConflictError, match="x is held by"):
        leases.acquire(cat, "x", b, ttl=60)
    leases.renew(cat, "x", a, ttl=60)
    leases.release(cat, "x", b)  # not the holder: no effect
    with pytest.raises(ConflictError):
        leases.acquire(cat, "x", b, ttl=60)
    leases.release(cat, "x", a)
    assert leases.acquire(cat, "x", b, ttl=60) is None
    assert leases.acquire(cat, "y", a, ttl=60) is None  # names are independent


def test_lease_taken_over_after_expiry_and_lost_by_the_old_holder(catalog: Catalog) -> None:
    cat = catalog
    old, new = "elsewhere:1:old", leases.new_owner()
    leases.acquire(cat, "x", old, ttl=-5)
    previous = leases.acquire(cat, "x", new, ttl=60)
    assert previous is not None  # the caller learns it took over from a crashed holder
    with pytest.raises(ConflictError, match="lost the lease"):
        leases.renew(cat, "x", old, ttl=60)
    with cat.read() as conn:
        assert conn.execute(select(LEASES.c.owner)).scalar_one() == new
