"""Catalog start-up: migrations are applied once, and the fast head check agrees with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from mediamirror.catalog.db import _MIGRATIONS, Catalog, head_revision


def test_head_revision_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_new_catalog_is_migrated_and_reopening_keeps_it(catalog_url: str) -> None:
    first = Catalog(catalog_url)
    with first.read() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            head_revision()
        )
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
    assert first._at_head()
    first.close()
    again = Catalog(catalog_url)  # at head: no Alembic, nothing changes
    assert again._at_head()
    again.close()


def test_sqlite_catalog_uses_wal(tmp_path: Path) -> None:
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    with cat.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    cat.close()


def test_big_catalog_indexes_exist_and_serve_the_pages(catalog_url: str) -> None:
    """Migration 0011's indexes on both backends; on SQLite the page queries read them in
    order (no sort of a folder's items, a mount's children or a state's jobs)."""
    from sqlalchemy import inspect

    cat = Catalog(catalog_url)
    inspector = inspect(cat.engine)
    names = {
        table: {ix["name"]: ix["column_names"] for ix in inspector.get_indexes(table)}
        for table in ("items", "folders", "jobs")
    }
    assert names["items"]["ix_items_folder_key"] == ["folder_id", "key", "state"]
    assert "ix_items_folder" not in names["items"]
    assert names["folders"]["ix_folders_parent_name_id"] == ["parent_id", "name", "id"]
    assert names["folders"]["ix_folders_parent_updated"] == ["parent_id", "updated_at", "id"]
    assert names["jobs"]["ix_jobs_state_id"] == ["state", "id"]
    if cat.is_sqlite:
        with cat.read() as conn:
            for sql in (
                "SELECT id FROM items WHERE folder_id = 1 AND state = 'present' ORDER BY key",
                "SELECT id FROM folders WHERE parent_id = 1 ORDER BY updated_at DESC, id DESC",
                "SELECT id FROM folders WHERE parent_id = 1 ORDER BY name, id",
                "SELECT id FROM jobs WHERE state = 'error' ORDER BY id DESC",
            ):
                plan = " ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
                assert "COVERING INDEX" in plan and "TEMP B-TREE" not in plan, (sql, plan)
    cat.close()
