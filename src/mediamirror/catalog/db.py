"""Opening the catalog: engine set-up (SQLite WAL or PostgreSQL) and automatic migrations."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from mediamirror.errors import CatalogError
from mediamirror.redact import redact_url, remember

_MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is unreliable).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the lock up front so two processes never deadlock upgrading a read.
        write = conn.get_execution_options().get("write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_catalog_engine(url: str) -> Engine:
    """An engine for a catalog URL, tuned for its backend."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise CatalogError(f"invalid database URL {redact_url(url)!r}") from exc
    if "@" in (parsed.host or ""):
        # The driver would take the end of the password for the host, and say so.
        raise CatalogError(
            f"invalid database URL {redact_url(url)!r}: write '@' in a password as %40"
        )
    # A driver's message may echo its connection string: hide the password everywhere.
    remember(parsed.password if isinstance(parsed.password, str) else None)
    try:
        if parsed.drivername.startswith("sqlite"):
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"timeout": 60})
            _sqlite_setup(engine)
            return engine
        if parsed.drivername in {"postgresql", "postgres"}:
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise CatalogError(f"unsupported database URL {redact_url(url)!r}: {exc}") from exc


def head_revision() -> str:
    """The newest migration: revision ids are the files' number prefixes (0001, 0002...),
    a convention a test holds against Alembic's own view."""
    return max(p.name.split("_", 1)[0] for p in (_MIGRATIONS / "versions").glob("[0-9]*_*.py"))


class Catalog:
    """The catalog database: an engine plus transactional helpers.

    ``write()`` opens a short write transaction, ``read()`` a read-only one; both hand out
    a Core connection (the hot paths use Core). ``session()`` gives an ORM session for
    low-volume work such as managing sources.
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = create_catalog_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._writer = self.engine.execution_options(write=True)
        # SQLite has one writer; threads of this process queue on a lock rather than on
        # SQLite's busy handler, which sleeps and polls (milliseconds per contended write).
        self._write_lock: threading.RLock | None = threading.RLock() if self.is_sqlite else None
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        """Bring the schema to the newest revision (cheap when already there)."""
        if self._at_head():
            return
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        try:
            with self._writer.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
                if current == head:
                    return
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
        except OperationalError as exc:
            reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
            raise CatalogError(f"cannot open catalog {self.safe_url}: {reason}") from exc
        except SQLAlchemyError as exc:
            raise CatalogError(f"cannot migrate catalog {self.safe_url}: {exc}") from exc

    def _at_head(self) -> bool:
        """One query instead of loading Alembic on every command (half a second)."""
        try:
            with self.engine.connect() as conn:
                current = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except SQLAlchemyError:
            return False  # a new catalog, or one Alembic must look at
        return current == head_revision()

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return redact_url(self.url)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        if self._write_lock is None:
            with self._writer.connect() as conn, conn.begin():
                yield conn
            return
        with self._write_lock, self._writer.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def session(self, *, write: bool = True) -> Session:
        return Session(self._writer if write else self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()
