"""Syncs started at the same moment (from several machines, as threads here) on one
catalog: of different sources whose mounts share ancestor folders, both succeed (the
first to create a shared folder wins, the other writes its page again); of the same
source, one runs and the other is refused at once, never waiting on it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import catalog_folders, sync_runs
from mediamirror.catalog.db import Catalog
from mediamirror.config import load_settings
from mediamirror.errors import ConflictError
from mediamirror.sources import add_source, sync_source

pytestmark = pytest.mark.postgres


def at_once(*calls: Callable[[], Any]) -> list[BaseException | None]:
    """Run ``calls`` in threads released together; each one's exception, or None."""
    barrier = threading.Barrier(len(calls))
    outcome: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            calls[i]()
        except BaseException as exc:  # reported to the test
            outcome[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome


def media(root: Path, name: str, count: int = 30) -> str:
    folder = root / name / "clips"
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"c{i:02}.mp4").write_bytes(b"x")
    return (root / name).as_uri()


def test_syncs_of_sources_sharing_ancestor_folders(catalog: Catalog, tmp_path: Path) -> None:
    settings = load_settings({"home": str(tmp_path / "home")}, env={})
    # Each round: two new sources under a new shared ancestor, synced at the same moment.
    # Before pages were written again, the loser of the race on "/labN" failed its sync.
    for r in range(3):
        for name in ("a", "b"):
            url = media(tmp_path / f"r{r}", name)
            add_source(catalog, f"{name}{r}", url, env={}, mount=f"/lab{r}/shared/{name}")

        errors = at_once(
            *(lambda n=n: sync_source(catalog, settings, n, {}) for n in (f"a{r}", f"b{r}"))
        )

        assert errors == [None, None]
    folders = catalog_folders(catalog)
    for r in range(3):
        assert {f"/lab{r}", f"/lab{r}/shared"} <= set(folders)
        for name in ("a", "b"):
            assert f"/lab{r}/shared/{name}/clips/Video c29.mp4" in folders
    assert [run.state for run in sync_runs(catalog)] == ["success"] * 6


def test_two_syncs_of_one_source_one_runs(catalog: Catalog, tmp_path: Path) -> None:
    settings = load_settings({"home": str(tmp_path / "home")}, env={})
    add_source(catalog, "one", media(tmp_path, "one", count=300), env={})

    errors = at_once(*(lambda: sync_source(catalog, settings, "one", {}) for _ in range(2)))

    # Either the second found the first's lease (refused, nothing written by it), or it
    # started after the first had finished: never both at once, never a wait.
    refused = [e for e in errors if e is not None]
    assert all(isinstance(e, ConflictError) for e in refused), refused
    assert len(sync_runs(catalog)) == 2 - len(refused)
    assert all(run.state == "success" for run in sync_runs(catalog))
