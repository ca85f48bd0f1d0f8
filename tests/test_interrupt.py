"""Ctrl-C at any moment of a sync, on a busy machine: the process ends, its run is
recorded, its lease is released, and the next sync brings the catalog to the listing.

``mediamirror sync`` runs as a real subprocess against a local directory of a few
thousand files while a CPU burner competes for the cores. Each round changes every file
(so the sync writes all along its life) and interrupts it after a different delay,
spread over the whole life of an uninterrupted sync measured in the same conditions:
start-up, lease, listing, chunk transactions, the deletion tail, the run's end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from helpers import Cli, LocalBucket, add_source, catalog_items, sync, sync_runs
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import LEASES

pytestmark = pytest.mark.timeout(240)

FILES = 1000
ROUNDS = 16
#: Generous: a stop is honoured between chunks, which take milliseconds.
EXIT_DEADLINE = 60


@pytest.fixture
def cpu_burner() -> Iterator[None]:
    """A process spinning on a core for the whole test: the races show under load."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def touch_everything(store: LocalBucket, round_no: int) -> None:
    """Every file changes (new mtime), one file goes and one comes: a sync of this store
    writes in every chunk and has a deletion to make."""
    stamp = (1_600_000_000 + round_no * 10) * 1_000_000_000
    for path in store.root.rglob("*.txt"):
        os.utime(path, ns=(stamp, stamp))
    old = store.root / "d00" / f"extra{round_no - 1:03d}.txt"
    if old.exists():
        old.unlink()
    store.put(f"d00/extra{round_no:03d}.txt")


def timed_sync(cli: Cli) -> float:
    started = time.monotonic()
    cli.run("sync", "big", timeout=EXIT_DEADLINE)
    return time.monotonic() - started


def interrupt_after(cli: Cli, delay: float) -> subprocess.CompletedProcess[str]:
    proc = cli.popen("sync", "big")
    try:
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=EXIT_DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def assert_ended_cleanly(
    catalog: Catalog, done: subprocess.CompletedProcess[str], runs: int
) -> int:
    """The process ended as a stopped or finished sync; returns the number of runs now."""
    recorded = sync_runs(catalog)
    new = recorded[runs:]
    report = f"exit {done.returncode}\n{done.stderr}\nruns: {[(r.state, r.error) for r in new]}"
    assert all(r.state != "running" and r.finished_at is not None for r in recorded), report
    with catalog.read() as conn:
        assert conn.execute(select(LEASES)).all() == [], report
    if done.returncode == 0:  # it was done before the signal came
        assert [(r.state, r.error) for r in new] == [("success", None)], report
    elif done.returncode == 130:
        assert [line for line in done.stderr.splitlines() if line] == ["error: interrupted"], report
        assert len(new) <= 1, report
        assert all((r.state, r.error) in {("error", "interrupted"), ("success", None)} for r in new)
    elif done.returncode == -signal.SIGINT:
        # The signal's default action: it came before the command set up its handling.
        assert all((r.state, r.error) == ("success", None) for r in new), report
    else:
        # Python itself was still starting (importing site or the command's modules) on a
        # busy machine: the interpreter reports the KeyboardInterrupt, nothing was begun.
        assert done.returncode == 1 and new == [], report
        assert done.stderr.rstrip().endswith("KeyboardInterrupt"), report
    return len(recorded)


def test_sync_interrupted_at_many_moments_under_load_always_stops_cleanly(
    sqlite_url: str, tmp_path: Path, cpu_burner: None
) -> None:
    store = LocalBucket(tmp_path / "store")
    for i in range(FILES):
        store.put(f"d{i % 10:02d}/k{i:05d}.txt")
    catalog = Catalog(sqlite_url)
    add_source(catalog, "big", store)
    cli = Cli(home=tmp_path / "home", database_url=sqlite_url)
    cli.env["MEDIAMIRROR_SYNC_PAGE_SIZE"] = "40"
    timed_sync(cli)
    touch_everything(store, 0)
    life = timed_sync(cli)  # start-up included: the signal may land anywhere in it
    runs = len(sync_runs(catalog))
    outcomes: set[int] = set()

    for n in range(1, ROUNDS + 1):
        touch_everything(store, n)
        done = interrupt_after(cli, life * (n - 0.5) / ROUNDS)
        outcomes.add(done.returncode)
        runs = assert_ended_cleanly(catalog, done, runs)

    assert 130 in outcomes, outcomes  # most rounds were stopped mid-way
    cli.run("sync", "big", timeout=EXIT_DEADLINE)
    items = catalog_items(catalog)  # fails on a duplicate key
    assert sorted(k for k, r in items.items() if r.state == "present") == store.keys()
    assert sync_runs(catalog)[-1].state == "success"
    again = sync(catalog, "big")  # nothing left to do: the catalog equals the listing
    assert (again.added, again.changed, again.deleted) == (0, 0, 0)
    catalog.close()
