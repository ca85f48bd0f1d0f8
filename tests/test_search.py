"""Catalog search on both catalogs: the index the database keeps (SQLite FTS5 trigram fed by
triggers, PostgreSQL pg_trgm), ranking, filters, pages, and the index following syncs
(added, re-laid, emptied and removed folders) and the migration's back-fill and downgrade.

Media is a local-directory source synced by the same ``sync_source`` the CLI calls."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from helpers import LocalBucket, add_source, sync
from mediamirror.catalog import search as catalog_search
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS
from mediamirror.errors import ConfigError
from mediamirror.jobs.model import JOBS
from mediamirror.sources import remove_source, set_source

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

KEYS = [
    "campaign-2024/site-a/Clip_North.mov",
    "campaign-2024/site-a/north-shore.mp4",
    "campaign-2024/site-b/frames/001.png",
    "campaign-2024/site-b/frames/002.png",
    "other/northern_lights.mkv",
    "other/notes.txt",
    "north.mp4",
]


def paths(catalog: Catalog, q: str, **kw: Any) -> list[str]:
    return [hit.path for hit in catalog_search.search(catalog, q, **kw).hits]


@pytest.fixture
def tree(catalog: Catalog, tmp_path: Path) -> LocalBucket:
    store = LocalBucket(tmp_path / "media")
    for key in KEYS:
        store.put(key, b"data " + key.encode())
    add_source(catalog, "src", store)
    sync(catalog, "src")
    return store


def test_finds_a_dataset_by_a_substring_of_its_name_or_path(
    catalog: Catalog, tree: LocalBucket
) -> None:
    # Any substring of the name, case-insensitive.
    assert paths(catalog, "lip_nor") == ["/src/campaign-2024/site-a/Video Clip_North.mov"]
    assert paths(catalog, "CLIP_NORTH") == ["/src/campaign-2024/site-a/Video Clip_North.mov"]
    # A substring of the path only: the folder first (shorter), then what is below it.
    assert paths(catalog, "site-b") == [
        "/src/campaign-2024/site-b",
        "/src/campaign-2024/site-b/frames",
    ]
    assert paths(catalog, "paign-20")[0] == "/src/campaign-2024"
    # Every word must match.
    assert paths(catalog, "north site-a") == [
        "/src/campaign-2024/site-a/Video Clip_North.mov",
        "/src/campaign-2024/site-a/Video north-shore.mp4",
    ]
    assert paths(catalog, "no such thing") == []
    # LIKE wildcards are plain characters.
    assert paths(catalog, "%") == [] and paths(catalog, "a_b") == []


def test_ranking_exact_then_prefix_then_substring_shorter_path_first(
    catalog: Catalog, tree: LocalBucket
) -> None:
    hits = paths(catalog, "video north.mp4")
    assert hits == ["/src/Video north.mp4"]
    ranked = paths(catalog, "north")
    assert ranked == [
        "/src/Video north.mp4",  # name substring, shortest path
        "/src/other/Video northern_lights.mkv",
        "/src/campaign-2024/site-a/Video Clip_North.mov",
        "/src/campaign-2024/site-a/Video north-shore.mp4",
    ]
    # Exact name beats prefix beats substring beats a path-only hit.
    assert paths(catalog, "site-a")[0] == "/src/campaign-2024/site-a"
    assert paths(catalog, "frames")[0] == "/src/campaign-2024/site-b/frames"
    assert paths(catalog, "Video north")[:2] == [
        "/src/Video north.mp4",  # prefix, shorter path
        "/src/other/Video northern_lights.mkv",
    ]


def test_one_or_two_characters_match_the_start_of_names(
    catalog: Catalog, tree: LocalBucket
) -> None:
    assert paths(catalog, "fr") == ["/src/campaign-2024/site-b/frames"]
    assert paths(catalog, "S") == [
        "/src",  # prefix matches: the shortest path first
        "/src/campaign-2024/site-a",
        "/src/campaign-2024/site-b",
    ]
    assert paths(catalog, "sit") == ["/src/campaign-2024/site-a", "/src/campaign-2024/site-b"][
        :2
    ] + [p for p in paths(catalog, "sit") if p.count("/") > 3]
    assert paths(catalog, "zz") == []


def test_filters_narrow_the_hits(catalog: Catalog, tree: LocalBucket) -> None:
    seq = "/src/campaign-2024/site-b/frames"
    assert paths(catalog, "", type="image-sequence") == [seq]
    assert paths(catalog, "north", type="folder") == []
    assert set(paths(catalog, "", type="folder")) == {
        "/src",
        "/src/campaign-2024",
        "/src/campaign-2024/site-a",
        "/src/campaign-2024/site-b",
        "/src/other",
    }
    assert len(paths(catalog, "", type="dataset")) == 5
    assert paths(catalog, "north", type="video", meta={"import_path": "other"}) == [
        "/src/other/Video northern_lights.mkv"
    ]
    assert paths(catalog, "", meta=["import_path:campaign-2024/site-b/frames"]) == [seq]
    assert paths(catalog, "", source="src", type="image-sequence") == [seq]

    # Statuses as the browse API shows them, and processor states.
    ids = {hit.path: hit.id for hit in catalog_search.search(catalog, "", limit=100).hits}
    clip = "/src/campaign-2024/site-a/Video Clip_North.mov"
    _set_meta(catalog, ids[clip], processing={"video": {"state": "error", "error": "bad"}})
    _set_meta(catalog, ids["/src/Video north.mp4"], MarkForPostProcess=False, annotate=True)
    _set_meta(catalog, ids[seq], MarkForPostProcess=True, fps=5)
    assert paths(catalog, "", status="error") == [clip]
    assert paths(catalog, "", status="ready") == ["/src/Video north.mp4"]
    assert seq in paths(catalog, "", status="pending")
    assert clip not in paths(catalog, "", status="pending")
    assert paths(catalog, "", processor_state="error") == [clip]
    assert paths(catalog, "", processor_state="video:error") == [clip]
    assert paths(catalog, "", processor_state="pyramid:error") == []
    assert paths(catalog, "", meta=["fps:5"]) == [seq]
    assert paths(catalog, "", meta=["annotate:true"]) == ["/src/Video north.mp4"]
    with catalog.write() as conn:
        conn.execute(
            JOBS.insert().values(
                processor="images",
                target_type="folder",
                target_id=ids[seq],
                input_version="v1",
                state="queued",
            )
        )
    assert paths(catalog, "", processor_state="queued") == [seq]
    assert paths(catalog, "", processor_state="images:queued") == [seq]
    assert paths(catalog, "", processor_state="video:queued") == []
    hit = catalog_search.search(catalog, "lip_north").hits[0]
    assert hit.as_dict(lambda _i, _m: "/thumb")["status"] == "error"


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"type": "movie"}, "bad type 'movie'"),
        ({"status": "done"}, "bad status 'done'"),
        ({"processor_state": "finished"}, "bad processor_state 'finished'"),
        ({"processor_state": "a b:error"}, "bad processor_state"),
        ({"meta": ["novalue"]}, "bad meta filter 'novalue'"),
        ({"meta": ["bad key!:1"]}, "bad meta key"),
        ({"source": "nope"}, "bad source 'nope'"),
        ({"limit": 0}, "bad limit"),
        ({"offset": -1}, "bad offset"),
    ],
)
def test_bad_filters_are_one_line_errors(
    catalog: Catalog, tree: LocalBucket, kw: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        catalog_search.search(catalog, "north", **kw)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="too long"):
        catalog_search.search(catalog, "x" * 201)


def test_pages_are_stable_and_complete(catalog: Catalog, tmp_path: Path) -> None:
    store = LocalBucket(tmp_path / "media")
    # Many hits with equal rank and equal path lengths: ties broken by path, then id.
    for i in range(37):
        store.put(f"batch/cam{i % 3}/take{i:03d}.mp4")
    add_source(catalog, "src", store)
    sync(catalog, "src")

    everything = catalog_search.search(catalog, "take", limit=500)
    assert everything.total == 37
    pages = [catalog_search.search(catalog, "take", limit=10, offset=o) for o in (0, 10, 20, 30)]
    assert [p.total for p in pages] == [37] * 4
    assert [len(p.hits) for p in pages] == [10, 10, 10, 7]
    walked = [h.path for p in pages for h in p.hits]
    assert walked == [h.path for h in everything.hits]
    assert len(set(walked)) == 37
    past = catalog_search.search(catalog, "take", limit=10, offset=40)
    assert (past.total, past.hits) == (37, [])
    again = catalog_search.search(catalog, "take", limit=10, offset=10)
    assert [h.id for h in again.hits] == [h.id for h in pages[1].hits]


def test_the_index_follows_syncs(catalog: Catalog, tmp_path: Path) -> None:
    store = LocalBucket(tmp_path / "media")
    store.put("survey/reef/a.png")
    store.put("survey/reef/b.png")
    add_source(catalog, "src", store)
    sync(catalog, "src")
    assert paths(catalog, "reef") == ["/src/survey/reef"]

    # Added by a later sync.
    store.put("survey/kelp-forest.mp4")
    sync(catalog, "src")
    assert paths(catalog, "kelp") == ["/src/survey/Video kelp-forest.mp4"]

    # Deleted from the bucket: the dataset stays, marked empty (never dropped).
    store.delete("survey/kelp-forest.mp4")
    sync(catalog, "src")
    [hit] = catalog_search.search(catalog, "kelp").hits
    assert hit.state == "empty"
    assert paths(catalog, "kelp", status="empty") == ["/src/survey/Video kelp-forest.mp4"]
    assert paths(catalog, "kelp", status="present") == []

    # Re-laid: each frame becomes a large image of its own, found under its new name.
    set_source(catalog, "src", env=os.environ, images="large-image")
    sync(catalog, "src")
    assert paths(catalog, "image a.png") == ["/src/survey/reef/Large image a.png"]
    assert paths(catalog, "", type="large-image") == [
        "/src/survey/reef/Large image a.png",
        "/src/survey/reef/Large image b.png",
    ]

    # A folder renamed by any writer: the database's trigger keeps the index in step.
    with catalog.write() as conn:
        conn.execute(
            update(FOLDERS)
            .where(FOLDERS.c.path == "/src/survey/Video kelp-forest.mp4")
            .values(path="/src/survey/Video seagrass.mp4", name="Video seagrass.mp4")
        )
    assert paths(catalog, "kelp") == []
    assert paths(catalog, "seagrass") == ["/src/survey/Video seagrass.mp4"]

    # Removing the source drops its folders (cascading deletes) and their index entries.
    remove_source(catalog, "src")
    assert paths(catalog, "reef") == [] and paths(catalog, "seagrass") == []
    assert catalog_search.search(catalog, "").total == 0
    if catalog.is_sqlite:
        with catalog.read() as conn:
            # The FTS table holds nothing of the removed rows ('integrity-check' compares
            # the index with the content table).
            conn.execute(
                text("INSERT INTO folders_search(folders_search) VALUES ('integrity-check')")
            )


def _set_meta(catalog: Catalog, folder_id: int, **values: Any) -> None:
    with catalog.write() as conn:
        meta = conn.execute(select(FOLDERS.c.meta).where(FOLDERS.c.id == folder_id)).scalar_one()
        conn.execute(
            update(FOLDERS).where(FOLDERS.c.id == folder_id).values(meta={**meta, **values})
        )


def test_migration_back_fills_an_existing_catalog_and_downgrades(
    catalog_url: str, tmp_path: Path
) -> None:
    from alembic import command
    from alembic.config import Config

    from mediamirror.catalog.db import _MIGRATIONS

    cat = Catalog(catalog_url)
    try:
        store = LocalBucket(tmp_path / "media")
        store.put("before/index/clip.mp4")
        add_source(cat, "src", store)
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))

        def migrate(to: str, up: bool) -> None:
            with cat._writer.connect() as conn:
                cfg.attributes["connection"] = conn
                (command.upgrade if up else command.downgrade)(cfg, to)
                conn.commit()

        migrate("0008", up=False)
        with cat.read() as conn:
            names = _search_objects(conn)
        assert names == set()
        # Folders written while there is no index...
        sync(cat, "src")
        # ...are found once the migration ran (back-fill).
        migrate("0009", up=True)
        assert paths(cat, "clip") == ["/src/before/index/Video clip.mp4"]
        with cat.read() as conn:
            assert _search_objects(conn)
        migrate("head", up=True)
    finally:
        cat.close()


def _search_objects(conn: Any) -> set[str]:
    if conn.dialect.name == "sqlite":
        rows = conn.execute(
            text("SELECT name FROM sqlite_master WHERE name LIKE '%folders_search%'")
        )
    else:
        rows = conn.execute(
            text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
        )
        return {r[0] for r in rows if r[0].startswith("ix_folders_search")}
    return {r[0] for r in rows}
