"""Thumbnails benchmark: a folder of 100,000 datasets with thumbnails, on SQLite.

1. Folder page. ``GET /api/v1/folders/{id}/children?limit=50`` through the whole app
   in-process (``fastapi.testclient``: auth, routing, JSON), the first page and pages at
   random offsets, side by side with the same app whose rows leave the ``thumbnail`` field
   out (``browse.thumbnail_url`` replaced by a function answering None): what the field
   costs. p50/p99 of wall time, mean process CPU time, ratios; rounds interleaved.

2. The thumbnail endpoint. ``GET /api/v1/datasets/{id}/thumbnail`` answered 200 (the
   bytes, a local output store) and 304 (``If-None-Match``: one ``stat``, no read).

3. First paint in headless Chromium (``--browser``, default on when /usr/bin/chromium
   exists). ``serve``'s app in a uvicorn thread; time from ``page.goto`` of the
   100,000-dataset folder until its 50 rows (list view) or cards (grid view) are shown,
   and until every thumbnail on screen has loaded; median and max of ``--paints`` runs per
   view, interleaved.

Every dataset's thumbnail key names one of 500 real JPEGs (320x240) in the output store,
so every URL is distinct for the browser.

    .venv/bin/python benchmarks/thumbs_bench.py
    .venv/bin/python benchmarks/thumbs_bench.py --datasets 10000 --requests 50 --paints 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _bench_util import loadavg, say, wait_quiet

STAMP = "2026-01-02 03:04:05.000000"
FOLDER_COLS = "id, source_id, parent_id, name, path, meta, state, created_at, updated_at"
JPEGS = 500
CHROMIUM = "/usr/bin/chromium"


# -- the catalog -------------------------------------------------------------------------------


def build(home: Path, datasets: int) -> tuple[str, int]:
    """A catalog with source ``big`` and folder ``/big/all`` of ``datasets`` large-image
    datasets, each with a thumbnail in the local output store. (URL, folder id)."""
    import pyvips

    from mediamirror.catalog.db import Catalog
    from mediamirror.sources import add_source

    media = home / "media"
    media.mkdir(parents=True)
    url = f"sqlite:///{home / 'catalog.db'}"
    catalog = Catalog(url)
    add_source(catalog, "big", media.as_uri(), env={})
    catalog.close()
    thumbs = home / "outputs" / "thumbs"
    thumbs.mkdir(parents=True)
    for n in range(JPEGS):
        shade = [(n * 37) % 256, (n * 91) % 256, (n * 53) % 256]
        image = (pyvips.Image.black(320, 240) + shade).cast("uchar")
        image.copy(interpretation="srgb").jpegsave(str(thumbs / f"{n}.jpg"), Q=80)
    db = sqlite3.connect(home / "catalog.db")
    db.execute("PRAGMA journal_mode=WAL")
    source_id = db.execute("SELECT id FROM sources WHERE name = 'big'").fetchone()[0]
    mount = _folder(db, source_id, None, "big", "/big")
    parent = _folder(db, source_id, mount, "all", "/big/all")
    first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM folders").fetchone()[0]
    db.executemany(
        f"INSERT INTO folders ({FOLDER_COLS}) VALUES ({','.join('?' * 9)})",
        _rows(source_id, parent, first, datasets),
    )
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return url, parent


def _folder(
    db: sqlite3.Connection, source_id: int, parent: int | None, name: str, path: str
) -> int:
    row = db.execute("SELECT id FROM folders WHERE path = ?", (path,)).fetchone()
    if row is not None:
        return int(row[0])
    cur = db.execute(
        f"INSERT INTO folders ({FOLDER_COLS}) VALUES (NULL, ?, ?, ?, ?, '{{}}', 'present', ?, ?)",
        (source_id, parent, name, path, STAMP, STAMP),
    )
    return int(cur.lastrowid or 0)


def _rows(source_id: int, parent: int, first: int, datasets: int) -> Iterator[tuple[Any, ...]]:
    for n in range(datasets):
        name = f"Large image scan-{n:06d}.tif"
        meta = {
            "type": "large-image",
            "fps": -1,
            "annotate": True,
            "MarkForPostProcess": False,
            "processing": {"pyramid": {"state": "success"}},
            "outputs": {"pyramid": f"pyr/{n}.tif", "thumbnail": f"thumbs/{n % JPEGS}.jpg"},
            "thumbnail": {"width": 320, "height": 240},
        }
        yield (first + n, source_id, parent, name, f"/big/all/{name}", json.dumps(meta),
               "present", STAMP, STAMP)  # fmt: skip


@contextmanager
def app_of(url: str, home: Path) -> Iterator[tuple[Any, str]]:
    """The service's app on the catalog, and a viewer token."""
    from mediamirror import tokens
    from mediamirror.catalog.db import Catalog
    from mediamirror.config import load_settings
    from mediamirror.services import Services
    from mediamirror.web.app import create_app

    catalog = Catalog(url)
    token = tokens.create(catalog, "viewer", f"bench-{secrets.token_hex(3)}")
    settings = load_settings({"home": str(home), "database_url": url}, env={})
    try:
        yield create_app(Services(catalog, settings, {}), worker=False), token
    finally:
        catalog.close()


# -- measuring -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    walls = [s[0] for s in samples]
    return {
        "p50": percentile(walls, 50),
        "p99": percentile(walls, 99),
        "cpu": statistics.fmean(s[1] for s in samples),
    }


def timed(call: Callable[..., Any]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    call()
    return (time.perf_counter() - w0) * 1000, (time.process_time() - c0) * 1000


def listing(client: Any, folder: int, datasets: int, requests: int) -> dict[str, Any]:
    import mediamirror.web.api.browse as browse

    real = browse.thumbnail_url
    rng = random.Random(3)
    offsets = [rng.randrange(0, max(1, datasets - 50)) for _ in range(requests)]
    cases = {"first page": [0] * requests, "random pages": offsets}
    samples: dict[str, list[tuple[float, float]]] = {}

    def page(offset: int) -> None:
        r = client.get(f"/api/v1/folders/{folder}/children", params={"offset": offset, "limit": 50})
        assert r.status_code == 200, r.text

    client.get(f"/api/v1/folders/{folder}/children")  # warm up
    for i in range(requests):
        for case, offs in cases.items():
            for variant in ("with thumbnail", "without"):
                browse.thumbnail_url = real if variant == "with thumbnail" else (lambda *_: None)
                try:
                    sample = timed(lambda o=offs[i]: page(o))
                finally:
                    browse.thumbnail_url = real
                samples.setdefault(f"{case}, {variant}", []).append(sample)
    rows = client.get(f"/api/v1/folders/{folder}/children").json()["folders"]
    assert rows[0]["thumbnail"], rows[0]
    return {key: summary(values) for key, values in samples.items()}


def endpoint(client: Any, folder: int, requests: int) -> dict[str, Any]:
    first = folder + 1
    ids = [first + (n * 7919) % JPEGS for n in range(requests)]
    etags = {}
    for fid in set(ids):
        r = client.get(f"/api/v1/datasets/{fid}/thumbnail")
        assert r.status_code == 200, r.text
        etags[fid] = r.headers["etag"]
    samples: dict[str, list[tuple[float, float]]] = {"200 (bytes)": [], "304 (If-None-Match)": []}

    def get(fid: int, headers: dict[str, str], status: int) -> None:
        r = client.get(f"/api/v1/datasets/{fid}/thumbnail", headers=headers)
        assert r.status_code == status, r.status_code

    for fid in ids:
        samples["200 (bytes)"].append(timed(lambda f=fid: get(f, {}, 200)))
        samples["304 (If-None-Match)"].append(
            timed(lambda f=fid: get(f, {"If-None-Match": etags[f]}, 304))
        )
    return {key: summary(values) for key, values in samples.items()}


def first_paint(app: Any, token: str, folder: int, paints: int) -> dict[str, Any]:
    import uvicorn
    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    found: dict[str, list[tuple[float, float]]] = {"list": [], "grid": []}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for _ in range(paints):
                for view in ("list", "grid"):
                    found[view].append(_paint(browser, base, token, folder, view))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    out = {}
    for view, values in found.items():
        rows = sorted(v[0] for v in values)
        thumbs = sorted(v[1] for v in values)
        out[view] = {
            "rows median": statistics.median(rows),
            "rows max": rows[-1],
            "thumbnails median": statistics.median(thumbs),
            "thumbnails max": thumbs[-1],
        }
    return out


def _paint(browser: Any, base: str, token: str, folder: int, view: str) -> tuple[float, float]:
    """(ms until the 50 rows or cards show, ms until every thumbnail on screen loaded), in
    a new context (empty cache), signed in, the view chosen beforehand."""
    context = browser.new_context(base_url=base, viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.goto("/ui/sign-in")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/overview")
    page.evaluate(f"() => localStorage.setItem('mediamirror.browse.view', '{view}')")
    selector = "[data-testid=folders] tbody tr" if view == "list" else "li.thumb-card"
    start = time.perf_counter()
    page.goto(f"/ui/browse/{folder}")
    page.wait_for_function(f"() => document.querySelectorAll('{selector}').length === 50")
    rows = (time.perf_counter() - start) * 1000
    page.wait_for_function(
        """() => [...document.querySelectorAll('img.thumb')]
              .filter(i => i.getBoundingClientRect().top < innerHeight)
              .every(i => i.complete && i.naturalWidth > 0)"""
    )
    thumbs = (time.perf_counter() - start) * 1000
    context.close()
    return rows, thumbs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--paints", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mm-thumbs-bench-") as tmp:
        home = Path(tmp)
        say(f"building a folder of {args.datasets:,} datasets ...")
        t0 = time.perf_counter()
        url, folder = build(home, args.datasets)
        say(f"  built in {time.perf_counter() - t0:.1f} s; load {loadavg()}")
        from fastapi.testclient import TestClient

        with app_of(url, home) as (app, token):
            say(f"machine: {wait_quiet(120)}")
            with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
                pages = listing(client, folder, args.datasets, args.requests)
                serve = endpoint(client, folder, args.requests)
            paint = None
            if not args.no_browser and os.access(CHROMIUM, os.X_OK):
                paint = first_paint(app, token, folder, args.paints)
    report(args, pages, serve, paint)


def report(args: Any, pages: dict[str, Any], serve: dict[str, Any], paint: Any) -> None:
    say(f"\nfolder page, 50 rows of {args.datasets:,} ({args.requests} requests each):")
    say(f"  {'case':38} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>8}")
    for key, fig in pages.items():
        say(f"  {key:38} {fig['p50']:8.2f} {fig['p99']:8.2f} {fig['cpu']:8.2f}")
    for case in ("first page", "random pages"):
        w, wo = pages[f"{case}, with thumbnail"], pages[f"{case}, without"]
        say(
            f"  {case}: thumbnail field costs x{w['p50'] / wo['p50']:.3f} p50, "
            f"x{w['p99'] / wo['p99']:.3f} p99, x{w['cpu'] / wo['cpu']:.3f} CPU"
        )
    say("\nthumbnail endpoint:")
    for key, fig in serve.items():
        say(f"  {key:38} {fig['p50']:8.2f} {fig['p99']:8.2f} {fig['cpu']:8.2f}")
    ok, nm = serve["200 (bytes)"], serve["304 (If-None-Match)"]
    say(f"  304 / 200: x{nm['p50'] / ok['p50']:.3f} p50, x{nm['cpu'] / ok['cpu']:.3f} CPU")
    if paint:
        say(f"\nfirst paint of the {args.datasets:,}-dataset folder ({args.paints} runs):")
        for view, fig in paint.items():
            say(
                f"  {view:5} rows {fig['rows median']:7.0f} ms (max {fig['rows max']:.0f}), "
                f"thumbnails on screen {fig['thumbnails median']:7.0f} ms "
                f"(max {fig['thumbnails max']:.0f})"
            )
    say(f"load after: {loadavg()}")


if __name__ == "__main__":
    main()
