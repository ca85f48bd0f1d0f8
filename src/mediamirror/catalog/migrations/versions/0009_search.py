"""Catalog search index: kept in step by the database itself, so every writer (sync, bucket
events, feeds, a future one) keeps it current without code of its own.

A folder's name is the last part of its path, so the path alone is indexed: a name
substring is a path substring. SQLite: an FTS5 table with the trigram tokenizer over
``folders.path`` (external content: the text stays in ``folders``) fed by three triggers.
PostgreSQL: ``pg_trgm`` and a GIN trigram index on ``lower(folders.path)`` (LIKE on
``lower(path)`` uses it; an index on the column itself would also be taken for equality). Both:
an index on ``lower(name)`` for the one- and two-character prefix queries trigrams cannot
serve.
Items are not indexed: see docs/ui.md, "Search" (the write cost it adds to a sync).

Revision ID: 0009
Revises: 0008
"""

from alembic import op
from sqlalchemy import text

from mediamirror.errors import CatalogError

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: Serialises CREATE EXTENSION between catalogs migrating at once in one database.
_EXTENSION_LOCK = 0x6D6D5F7472676D  # "mm_trgm"

SQLITE_UP = [
    # Trigram: any substring of three characters or more, case-insensitive (SQLite 3.34).
    "CREATE VIRTUAL TABLE folders_search USING fts5("
    "path, content='folders', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER folders_search_insert AFTER INSERT ON folders BEGIN "
    "INSERT INTO folders_search(rowid, path) VALUES (new.id, new.path); END",
    "CREATE TRIGGER folders_search_delete AFTER DELETE ON folders BEGIN "
    "INSERT INTO folders_search(folders_search, rowid, path) VALUES ('delete', old.id, old.path); "
    "END",
    # Only a change of path touches the index (metadata updates are frequent).
    "CREATE TRIGGER folders_search_update AFTER UPDATE OF path ON folders BEGIN "
    "INSERT INTO folders_search(folders_search, rowid, path) VALUES ('delete', old.id, old.path); "
    "INSERT INTO folders_search(rowid, path) VALUES (new.id, new.path); END",
    "INSERT INTO folders_search(folders_search) VALUES ('rebuild')",
    "CREATE INDEX ix_folders_search_lower_name ON folders (lower(name))",
]

SQLITE_DOWN = [
    "DROP INDEX IF EXISTS ix_folders_search_lower_name",
    "DROP TRIGGER IF EXISTS folders_search_update",
    "DROP TRIGGER IF EXISTS folders_search_delete",
    "DROP TRIGGER IF EXISTS folders_search_insert",
    "DROP TABLE IF EXISTS folders_search",
]


def _trgm_schema() -> str:
    """The schema pg_trgm lives in, creating it (in ``public`` when there is one, so that
    dropping one catalog's schema never drops the extension under another's indexes)."""
    conn = op.get_bind()
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _EXTENSION_LOCK})
    found = conn.execute(
        text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        )
    ).scalar()
    if found:
        return str(found)
    available = conn.execute(
        text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")
    ).scalar()
    if not available:
        raise CatalogError(
            "search needs the PostgreSQL extension pg_trgm, which this server does not have "
            "(install the postgresql-contrib package on the database server)"
        )
    public = conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'"))
    schema = (
        "public" if public.scalar() else str(conn.execute(text("SELECT current_schema()")).scalar())
    )
    try:
        with conn.begin_nested():
            conn.execute(text(f'CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA "{schema}"'))
    except Exception as exc:  # no CREATE privilege on the database, typically
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise CatalogError(
            f"search needs the PostgreSQL extension pg_trgm and it could not be created "
            f"({reason}): run CREATE EXTENSION pg_trgm as a superuser once"
        ) from exc
    return schema


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_UP:
            op.execute(statement)
        return
    schema = _trgm_schema()
    ops = f'"{schema}".gin_trgm_ops'
    # On lower(path), not path: pg_trgm's GIN also answers "=", and the planner took it for
    # the sync's ``path IN (...)`` lookups (seconds each) over the unique b-tree.
    op.execute(f"CREATE INDEX ix_folders_search_path ON folders USING gin (lower(path) {ops})")
    op.execute(
        "CREATE INDEX ix_folders_search_lower_name ON folders (lower(name) text_pattern_ops)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DOWN:
            op.execute(statement)
        return
    # The extension stays: other schemas (or other software) of the database may use it.
    op.execute("DROP INDEX IF EXISTS ix_folders_search_lower_name")
    op.execute("DROP INDEX IF EXISTS ix_folders_search_path")
