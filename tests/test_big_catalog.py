"""Big-catalog pages on SQLite and PostgreSQL: every page of folders, items, datasets,
frames and jobs is complete, ordered and counted as the catalog says; times come out as
``datetime.isoformat()`` gives them; ``ls -r --json`` of a whole tree keeps its memory
flat however many items the tree holds.

Rows are written straight into the tables (many of them, cheaply); the pages are read
through the real app served by uvicorn, the listing through the real ``mediamirror``
command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from api.support import InProcessServer
from helpers import Cli
from mediamirror import tokens
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS, SOURCES
from mediamirror.config import load_settings
from mediamirror.jobs.model import JOBS
from mediamirror.services import Services
from mediamirror.sources import add_source
from mediamirror.web.api.browse import DATASET_ITEMS, iso_utc
from mediamirror.web.app import create_app

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]
V1 = "/api/v1"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Big:
    catalog: Catalog
    source_id: int
    mount_id: int
    http: httpx.Client
    home: Path


def _mount(catalog: Catalog, tmp_path: Path) -> tuple[int, int]:
    (tmp_path / "bucket").mkdir()
    add_source(catalog, "big", f"file://{tmp_path / 'bucket'}", env={}, mount="/big", check=False)
    with catalog.write() as conn:
        sid = conn.execute(select(SOURCES.c.id).where(SOURCES.c.name == "big")).scalar_one()
        mount = conn.execute(select(FOLDERS.c.id).where(FOLDERS.c.path == "/big")).scalar()
        if mount is None:
            mount = conn.execute(
                insert(FOLDERS)
                .values(source_id=sid, parent_id=None, name="big", path="/big", meta={})
                .returning(FOLDERS.c.id)
            ).scalar_one()
    return int(sid), int(mount)


def add_datasets(big: Big, names: list[str], stamp: Any = None) -> list[int]:
    """Image-sequence datasets under the mount; ``stamp(i)`` gives each its update time
    (many equal ones by default: ties the sort must break the same way on every page)."""
    stamp = stamp or (lambda i: T0 + timedelta(seconds=i % 3))
    rows = [
        {
            "source_id": big.source_id,
            "parent_id": big.mount_id,
            "name": name,
            "path": f"/big/{name}",
            "meta": {"type": "image-sequence", "fps": 10},
            "updated_at": stamp(i),
        }
        for i, name in enumerate(names)
    ]
    with big.catalog.write() as conn:
        conn.execute(insert(FOLDERS), rows)
        found = conn.execute(
            select(FOLDERS.c.path, FOLDERS.c.id).where(FOLDERS.c.parent_id == big.mount_id)
        )
        ids = {r.path: r.id for r in found}
    return [ids[f"/big/{n}"] for n in names]


def add_items(big: Big, folder_id: int, directory: str, count: int, **extra: Any) -> None:
    rows = (
        {
            "source_id": big.source_id,
            "folder_id": folder_id,
            "key": f"{directory}/frame_{n:05d}.png",
            "name": f"frame_{n:05d}.png",
            "size": n,
            "etag": f"e{n}",
            "last_modified": T0 + timedelta(microseconds=n % 7 * 125_000),
            "state": "deleted" if n % 10 == 3 else "present",
            **extra,
        }
        for n in range(count)
    )
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == 5000:
            _insert_items(big, batch)
            batch = []
    if batch:
        _insert_items(big, batch)


def _insert_items(big: Big, rows: list[dict[str, Any]]) -> None:
    with big.catalog.write() as conn:
        conn.execute(insert(ITEMS), rows)


@pytest.fixture
def big(catalog_url: str, tmp_path: Path) -> Iterator[Big]:
    catalog = Catalog(catalog_url)
    sid, mount = _mount(catalog, tmp_path)
    settings = load_settings({"home": str(tmp_path / "home"), "database_url": catalog_url}, {})
    app = create_app(Services(catalog, settings, {}), worker=False)
    token = tokens.create(catalog, "viewer", "big")
    with InProcessServer(app).running() as server:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            yield Big(catalog, sid, mount, http, tmp_path / "home")
    catalog.close()


def get(big: Big, url: str, **params: Any) -> Any:
    response = big.http.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def pages(big: Big, url: str, key: str, limit: int, **params: Any) -> tuple[list[Any], set[int]]:
    """Every page of a listing, concatenated, and the totals the pages announced."""
    rows: list[Any] = []
    totals: set[int] = set()
    offset = 0
    while True:
        body = get(big, url, offset=offset, limit=limit, **params)
        totals.add(body["total"])
        rows += body[key]
        if len(body[key]) < limit:
            return rows, totals
        offset += limit


def test_children_pages_are_complete_in_every_order(big: Big) -> None:
    names = [f"ds-{n:04d}" for n in range(237)]
    add_datasets(big, names[::-1])  # inserted out of name order: ids disagree with names
    url = f"{V1}/folders/{big.mount_id}/children"

    with big.catalog.read() as conn:
        rows = conn.execute(select(FOLDERS).where(FOLDERS.c.parent_id == big.mount_id)).all()
    by_name = sorted(rows, key=lambda r: (r.name, r.id))
    by_time = sorted(rows, key=lambda r: (r.updated_at, r.id))
    expected = {
        "name": by_name,
        "-name": by_name[::-1],
        "updated": by_time,
        "-updated": by_time[::-1],
    }
    for sort, want in expected.items():
        got, totals = pages(big, url, "folders", 10, sort=sort)
        assert totals == {237}, sort
        assert [f["id"] for f in got] == [r.id for r in want], sort
    one = get(big, url, limit=1)["folders"][0]
    assert (one["type"], one["status"], one["parent_id"]) == ("image-sequence", "new", big.mount_id)
    counts = get(big, f"{V1}/folders/{big.mount_id}")["counts"]
    assert counts == {"folders": 237, "items": 0}


def test_items_pages_counts_and_times_match_the_catalog(big: Big) -> None:
    (seq,) = add_datasets(big, ["seq"])
    add_items(big, seq, "seq", 1234)
    url = f"{V1}/folders/{seq}/items"

    present, totals = pages(big, url, "items", 100)
    everything, all_totals = pages(big, url, "items", 100, include_deleted="true")

    with big.catalog.read() as conn:
        rows = conn.execute(select(ITEMS).where(ITEMS.c.folder_id == seq)).all()
    keys = sorted(r.key for r in rows)
    live = sorted(r.key for r in rows if r.state == "present")
    assert totals == {len(live)} and all_totals == {1234}
    assert [i["key"] for i in present] == live
    assert [i["key"] for i in everything] == keys
    assert get(big, f"{V1}/folders/{seq}")["counts"] == {"folders": 0, "items": 1234}
    # Each row exactly as the one-item endpoint (the ORM-typed path) shows it.
    for item in present[:8] + everything[-3:]:
        one = get(big, f"{V1}/items/{item['id']}")
        one.pop("source")
        assert item == one


def test_a_page_survives_rows_added_between_requests(big: Big) -> None:
    """OFFSET pages over a stable order: rows added after the ones already shown never
    push a shown row onto the next page twice, nor hide one."""
    ids = add_datasets(big, [f"a-{n:03d}" for n in range(30)])
    url = f"{V1}/folders/{big.mount_id}/children"
    first = get(big, url, limit=10, offset=0)["folders"]
    add_datasets(big, [f"z-{n:03d}" for n in range(5)])  # sort after every a-
    rest, _ = pages(big, url, "folders", 10)
    assert [f["id"] for f in first] == ids[:10]
    names = [f["name"] for f in rest]
    assert names == sorted(names) and len(names) == len(set(names)) == 35


def test_dataset_page_caps_its_items_and_frames_are_complete(big: Big) -> None:
    small, frames = add_datasets(big, ["small", "frames"])
    add_items(big, small, "small", 100)
    add_items(big, frames, "frames", DATASET_ITEMS + 321)

    body = get(big, f"{V1}/datasets/{small}")
    with big.catalog.read() as conn:
        live = conn.execute(
            select(ITEMS.c.key)
            .where(ITEMS.c.folder_id == frames, ITEMS.c.state == "present")
            .order_by(ITEMS.c.key)
        ).scalars()
        frame_keys = list(live)
    assert [i["key"] for i in body["items"]] == [
        f"small/frame_{n:05d}.png" for n in range(100) if n % 10 != 3
    ]
    assert (body["type"], body["media"]["frames"]) == (
        "image-sequence",
        f"{V1}/datasets/{small}/frames",
    )
    big_page = get(big, f"{V1}/datasets/{frames}")
    assert [i["key"] for i in big_page["items"]] == frame_keys[:DATASET_ITEMS]
    listing = get(big, f"{V1}/folders/{frames}/items", limit=1000)["items"]
    assert big_page["items"][:1000] == listing
    every = get(big, f"{V1}/datasets/{frames}/frames")["frames"]
    assert [f["name"] for f in every] == [k.rsplit("/", 1)[1] for k in frame_keys]
    assert every[5]["url"] == f"{V1}/items/{every[5]['item_id']}/content"


@pytest.mark.parametrize(
    "stamp",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    ],
)
def test_item_times_read_raw_match_isoformat(big: Big, stamp: datetime) -> None:
    (seq,) = add_datasets(big, ["t"])
    add_items(big, seq, "t", 1, last_modified=stamp)
    (item,) = get(big, f"{V1}/folders/{seq}/items")["items"]
    assert item["last_modified"] == stamp.isoformat()
    assert iso_utc(stamp.replace(tzinfo=None)) == stamp.isoformat()


def add_jobs(big: Big, count: int) -> dict[str, list[int]]:
    states = ["success"] * 6 + ["error", "queued", "canceled", "running"]
    rows = [
        {
            "processor": "images" if n % 3 else "video",
            "target_type": "folder",
            "target_id": big.mount_id,
            "input_version": f"v{n}",
            "state": states[n % len(states)],
            "active_key": f"k{n}" if states[n % len(states)] in ("queued", "running") else None,
        }
        for n in range(count)
    ]
    with big.catalog.write() as conn:
        conn.execute(insert(JOBS), rows)
        found = conn.execute(select(JOBS.c.id, JOBS.c.state).order_by(JOBS.c.id.desc()))
        by_state: dict[str, list[int]] = {}
        for job_id, state in found:
            by_state.setdefault(state, []).append(job_id)
    return by_state


def test_jobs_filtered_by_state_page_newest_first(big: Big, catalog_url: str) -> None:
    by_state = add_jobs(big, 613)

    for states in (["error"], ["running"], ["error", "queued"]):
        got: list[int] = []
        offset = 0
        while True:
            body = get(big, f"{V1}/jobs", state=states, limit=25, offset=offset)
            got += [j["id"] for j in body["jobs"]]
            if len(body["jobs"]) < 25:
                break
            offset += 25
        want = sorted((i for s in states for i in by_state[s]), reverse=True)
        assert got == want, states
        assert {s: body["counts"][s] for s in states} == {s: len(by_state[s]) for s in states}

    cli = Cli(home=big.home, database_url=catalog_url)
    shown = cli.run("jobs", "list", "--state", "error", "--limit", "20", "--json").stdout
    assert [j["id"] for j in json.loads(shown)] == by_state["error"][:20]


LS_PEAK = (
    "import atexit, sys\n"
    "def _peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM'):\n"
    "            sys.stderr.write('PEAK ' + line.split()[1] + '\\n')\n"
    "atexit.register(_peak)\n"
    "from mediamirror.cli import main\n"
    "sys.argv = ['mediamirror', 'ls', '/', '-r', '--json']\n"
    "main()\n"
)


def ls_json(cli: Cli) -> tuple[int, int, int]:
    """(peak RSS in KiB, folders, items) of a real ``mediamirror ls / -r --json``, its
    output read as it comes and parsed once it is complete."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LS_PEAK],
        env=cli.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    peak = next(int(line.split()[1]) for line in err.splitlines() if line.startswith("PEAK "))
    return peak, len(doc["folders"]), len(doc["items"])


@pytest.mark.slow
def test_ls_json_of_a_whole_tree_keeps_memory_flat(big: Big, catalog_url: str) -> None:
    cli = Cli(home=big.home, database_url=catalog_url)
    (first,) = add_datasets(big, ["first"])
    add_items(big, first, "first", 15_000)
    small = ls_json(cli)
    more = add_datasets(big, [f"more-{n}" for n in range(9)])
    for n, folder in enumerate(more):
        add_items(big, folder, f"more-{n}", 15_000)
    large = ls_json(cli)

    with big.catalog.read() as conn:
        items = conn.execute(select(func.count()).select_from(ITEMS)).scalar_one()
    assert (small[1], small[2]) == (2, 15_000)  # the mount and its dataset
    assert (large[1], large[2]) == (11, items) == (11, 150_000)
    # Ten times the items, the same memory (give or take allocator noise): a listing
    # held whole would take tens of megabytes more.
    assert large[0] - small[0] < 12 * 1024, (small, large)
