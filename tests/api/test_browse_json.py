"""Pages of items and frames are written as JSON by the database (SQLite and PostgreSQL):
what they send must be what the Python shapes of the same rows say, field for field and in
the same key order, whatever the names hold (quotes, backslashes, control characters,
non-ASCII) and whatever case their extensions have."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from api.support import InProcessServer
from mediamirror import tokens
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS, SOURCES
from mediamirror.config import load_settings
from mediamirror.services import Services
from mediamirror.sources import add_source
from mediamirror.sync.layout import is_raster
from mediamirror.web.api.browse import item_dict
from mediamirror.web.app import create_app

V1 = "/api/v1"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

#: Names a bucket may hold, images or not: every character JSON must escape, and more.
NAMES = [
    'quote "q".png',
    "back\\slash.PNG",
    "new\nline\ttab.Jpg",
    "ctl\x01\x1f.jpeg",
    "uni-é-ß-日本-🎞.tiff",
    "</script><b>&amp;'.webp",
    ".png",  # a hidden file, no extension
    "png",
    "x.png.txt",
    "notes.txt",
    "a.JP2",
    "z.Gif",
    "frame_0001.bmp",
    "frame_0002.jpe",
]


@dataclass
class Served:
    catalog: Catalog
    http: httpx.Client
    folder_id: int


@pytest.fixture
def served(catalog_url: str, tmp_path: Path) -> Iterator[Served]:
    catalog = Catalog(catalog_url)
    (tmp_path / "bucket").mkdir()
    add_source(catalog, "b", f"file://{tmp_path / 'bucket'}", env={}, mount="/b", check=False)
    with catalog.write() as conn:
        sid = conn.execute(select(SOURCES.c.id).where(SOURCES.c.name == "b")).scalar_one()
        mount = conn.execute(select(FOLDERS.c.id).where(FOLDERS.c.path == "/b")).scalar()
        converted = {f"seq/{NAMES[0]}": "web/0.jpg", f"seq/{NAMES[4]}": "web/4.jpg"}
        meta = {"type": "image-sequence", "fps": 5, "outputs": {"frames": converted}}
        folder_id = conn.execute(
            insert(FOLDERS)
            .values(source_id=sid, parent_id=mount, name="seq", path="/b/seq", meta=meta)
            .returning(FOLDERS.c.id)
        ).scalar_one()
        rows = [
            {
                "source_id": sid,
                "folder_id": folder_id,
                "key": f"seq/{name}",
                "name": name,
                "size": 10**12 + n,
                "etag": f'"etag-{n}"',
                # whole seconds, and fractions with and without trailing zeros
                "last_modified": T0 + timedelta(microseconds=(n % 4) * 120_001 * (n % 2)),
                "state": "deleted" if name == "z.Gif" else "present",
            }
            for n, name in enumerate(NAMES)
        ]
        conn.execute(insert(ITEMS), rows)
    settings = load_settings({"home": str(tmp_path / "home"), "database_url": catalog_url}, {})
    app = create_app(Services(catalog, settings, {}), worker=False)
    token = tokens.create(catalog, "viewer", "t")
    with InProcessServer(app).running() as server:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            yield Served(catalog, http, folder_id)
    catalog.close()


def get_pairs(served: Served, url: str, **params: Any) -> Any:
    """A page's body, its objects as lists of (key, value) pairs: key order is checked."""
    response = served.http.get(url, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return json.loads(response.content, object_pairs_hook=list)


def as_pairs(value: Any) -> Any:
    return json.loads(json.dumps(value), object_pairs_hook=list)


def present_rows(served: Served, include_deleted: bool = False) -> list[Any]:
    query = select(ITEMS).where(ITEMS.c.folder_id == served.folder_id)
    if not include_deleted:
        query = query.where(ITEMS.c.state == "present")
    with served.catalog.read() as conn:
        rows = conn.execute(query).all()
    return sorted(rows, key=lambda r: r.key.encode())  # byte order, as the index keeps


def test_item_pages_are_the_rows_as_item_dict_shapes_them(served: Served) -> None:
    want = [as_pairs(item_dict(r)) for r in present_rows(served)]

    dataset = dict(get_pairs(served, f"{V1}/datasets/{served.folder_id}"))
    listing = dict(get_pairs(served, f"{V1}/folders/{served.folder_id}/items"))
    second = dict(get_pairs(served, f"{V1}/folders/{served.folder_id}/items", offset=3, limit=4))
    everything = dict(
        get_pairs(served, f"{V1}/folders/{served.folder_id}/items", include_deleted=True)
    )

    assert dataset["items"] == want
    assert listing["items"] == want
    assert (listing["total"], listing["offset"], listing["limit"]) == (len(want), 0, 100)
    assert second["items"] == want[3:7]
    assert everything["items"] == [as_pairs(item_dict(r)) for r in present_rows(served, True)]
    assert dict(dataset["media"])["frames"] == f"{V1}/datasets/{served.folder_id}/frames"
    assert dataset["jobs"] == [] and dict(dataset["meta"])["fps"] == 5


def test_frames_are_the_images_in_key_order_with_web_versions(served: Served) -> None:
    converted = {f"seq/{NAMES[0]}", f"seq/{NAMES[4]}"}
    want = [
        [
            ("item_id", r.id),
            ("name", r.name),
            ("url", f"{V1}/items/{r.id}/content" + ("?web=1" if r.key in converted else "")),
        ]
        for r in present_rows(served)
        if is_raster(r.name)
    ]

    body = get_pairs(served, f"{V1}/datasets/{served.folder_id}/frames")

    assert body == [("fps", 5), ("frames", want)]
    names = {dict(f)["name"] for f in dict(body)["frames"]}
    assert {".png", "png", "x.png.txt", "notes.txt", "z.Gif"}.isdisjoint(names)
    assert {"back\\slash.PNG", "new\nline\ttab.Jpg", "a.JP2"} <= names


def test_frames_without_web_versions_link_the_originals(served: Served) -> None:
    with served.catalog.write() as conn:
        conn.execute(
            FOLDERS.update()
            .where(FOLDERS.c.id == served.folder_id)
            .values(meta={"type": "image-sequence"})
        )

    body = dict(get_pairs(served, f"{V1}/datasets/{served.folder_id}/frames"))

    assert body["fps"] is None
    want = [f"{V1}/items/{r.id}/content" for r in present_rows(served) if is_raster(r.name)]
    assert [dict(f)["url"] for f in body["frames"]] == want
    assert len(want) == 9
