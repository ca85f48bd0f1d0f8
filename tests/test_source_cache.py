"""A removed source is never served again: the service's caches of sources and stores
are keyed by a uid no other source ever gets, and every lookup reads the source's row."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, column, insert, select, table, update

from api.support import InProcessServer
from helpers import Cli
from mediamirror.catalog.db import _MIGRATIONS, Catalog
from mediamirror.catalog.models import FOLDERS, SOURCES, utcnow
from mediamirror.config import load_settings
from mediamirror.services import Services
from mediamirror.web.app import create_app


def _item_id(catalog: Catalog, source: str, key: str) -> int:
    with catalog.read() as conn:
        from mediamirror.catalog.models import ITEMS

        return int(
            conn.execute(
                select(ITEMS.c.id)
                .join(SOURCES, SOURCES.c.id == ITEMS.c.source_id)
                .where(SOURCES.c.name == source, ITEMS.c.key == key)
            ).scalar_one()
        )


def _source_row(catalog: Catalog, name: str) -> tuple[int, str]:
    with catalog.read() as conn:
        row = conn.execute(select(SOURCES.c.id, SOURCES.c.uid).where(SOURCES.c.name == name)).one()
    return int(row.id), str(row.uid)


def test_source_removed_and_readded_by_another_process_is_never_served_old_files(
    catalog: Catalog, cli: Cli, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root, text in ((a, "from A"), (b, "from B")):
        root.mkdir()
        (root / "x.txt").write_text(text)
    cli.run("source", "add", "alpha", f"file://{a}")
    cli.run("sync", "alpha")
    token = cli.run("token", "create", "--role", "viewer", "--name", "v").stdout.strip()
    env = cli.environ()
    app = create_app(Services(catalog, load_settings(env=env), env), worker=False)
    with InProcessServer(app).running() as server:
        http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        old_item = _item_id(catalog, "alpha", "x.txt")
        assert http.get(f"/api/v1/items/{old_item}/content").text == "from A"
        old_id, old_uid = _source_row(catalog, "alpha")

        # Another process (the CLI) removes the source and adds another one.
        cli.run("source", "remove", "alpha", "--yes")
        cli.run("source", "add", "beta", f"file://{b}")
        cli.run("sync", "beta")
        new_id, new_uid = _source_row(catalog, "beta")
        assert new_uid != old_uid
        if catalog.is_sqlite:
            assert new_id == old_id, "SQLite reuses the id: the case this test is about"
        new_item = _item_id(catalog, "beta", "x.txt")
        assert http.get(f"/api/v1/items/{new_item}/content").text == "from B"
        if new_item != old_item:
            assert http.get(f"/api/v1/items/{old_item}/content").status_code == 404
        http.close()


def test_services_follow_an_edited_source(catalog: Catalog, cli: Cli, tmp_path: Path) -> None:
    """Same id, same uid, new location: the store is opened again."""
    a, b = tmp_path / "a", tmp_path / "b"
    for root, text in ((a, "old place"), (b, "new place")):
        root.mkdir()
        (root / "x.txt").write_text(text)
    cli.run("source", "add", "alpha", f"file://{a}")
    env = cli.environ()
    services = Services(catalog, load_settings(env=env), env)
    source_id, _ = _source_row(catalog, "alpha")
    assert Path(services.source_store(source_id).locate("x.txt")[1]).read_text() == "old place"
    with catalog.write() as conn:
        conn.execute(
            update(SOURCES)
            .where(SOURCES.c.id == source_id)
            .values(url=f"file://{b}", prefix=str(b))
        )
    assert Path(services.source_store(source_id).locate("x.txt")[1]).read_text() == "new place"


def test_migration_gives_every_existing_source_its_own_uid(catalog_url: str) -> None:
    """A catalog made before uids: the upgrade fills them and keeps every row (a table
    copy on SQLite would have cascaded into the folders)."""
    old = Catalog(catalog_url, migrate=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with old._writer.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.commit()
    # The table as it was at 0003 (the model has a uid column that does not exist yet).
    names = ("name", "url", "kind", "bucket", "prefix", "mount", "addressing", "created_at")
    sources = table(
        "sources", *(column(n) for n in names), column("credentials", JSON), column("options", JSON)
    )
    now = utcnow().replace(tzinfo=None)
    with old.write() as conn:
        for name in ("one", "two"):
            conn.execute(
                insert(sources).values(
                    name=name,
                    url=f"file:///m/{name}",
                    kind="local",
                    bucket="",
                    prefix=f"/m/{name}",
                    mount=f"/{name}",
                    addressing="auto",
                    created_at=now,
                    credentials={},
                    options={},
                )
            )
            source_id = conn.execute(
                select(column("id")).select_from(table("sources")).where(column("name") == name)
            ).scalar_one()
            conn.execute(
                insert(FOLDERS).values(
                    source_id=source_id,
                    name=name,
                    path=f"/{name}",
                    meta={},
                    state="present",
                    created_at=now,
                    updated_at=now,
                )
            )
    old.close()
    migrated = Catalog(catalog_url)
    with migrated.read() as conn:
        uids = list(conn.execute(select(SOURCES.c.uid)).scalars())
        folders = conn.execute(select(FOLDERS.c.path)).scalars().all()
    migrated.close()
    assert len(uids) == 2 and len(set(uids)) == 2
    assert all(uuid.UUID(hex=u).hex == u for u in uids)
    assert sorted(folders) == ["/one", "/two"]
