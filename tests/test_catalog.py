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
