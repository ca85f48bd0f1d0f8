"""SQLAlchemy models of the catalog.

Keys and paths use the byte-order ("C") collation on PostgreSQL so that range scans agree
with the order object stores list keys in; SQLite compares text by bytes already.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Text compared byte by byte on every backend.
KeyText = Text().with_variant(Text(collation="C"), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uid() -> str:
    """A random identifier that no other row, past or future, will ever have."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, hands back timezone-aware UTC datetimes on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Source(Base):
    """A store mirrored read-only into the catalog under a mount folder."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Never reused, unlike ``id`` (SQLite hands a removed source's id to the next one):
    # what caches of sources and their stores are keyed by.
    uid: Mapped[str] = mapped_column(String(32), unique=True, index=True, default=new_uid)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(20))
    bucket: Mapped[str] = mapped_column(Text, default="")
    prefix: Mapped[str] = mapped_column(Text, default="")
    preset: Mapped[str | None] = mapped_column(String(40))
    endpoint_url: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(String(64))
    profile: Mapped[str | None] = mapped_column(String(200))
    addressing: Mapped[str] = mapped_column(String(20), default="auto")
    # Names of environment variables holding credentials, never the values.
    credentials: Mapped[dict[str, Any]] = mapped_column(default=dict)
    mount: Mapped[str] = mapped_column(KeyText, unique=True)
    include: Mapped[str | None] = mapped_column(Text)
    exclude: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Folder(Base):
    """A node of the mirrored tree; a folder whose ``meta`` has ``type`` is a dataset."""

    __tablename__ = "folders"
    __table_args__ = (
        # Pages of children in either sort read from an index alone (migration 0011).
        Index("ix_folders_parent_name_id", "parent_id", "name", "id"),
        Index("ix_folders_parent_updated", "parent_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(KeyText, unique=True)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # present | empty (a dataset whose items are all gone from the bucket)
    state: Mapped[str] = mapped_column(String(20), default="present")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Item(Base):
    """One object of a source."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("source_id", "key", name="uq_items_source_key"),
        # Key order within a folder, state read from the index (migration 0011, which
        # also INCLUDEs id on PostgreSQL: not declared here, as a dialect option would
        # import PostgreSQL's dialect into every process, SQLite ones too).
        Index("ix_items_folder_key", "folder_id", "key", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(KeyText)
    name: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(200))
    last_modified: Mapped[datetime]
    # present | deleted
    state: Mapped[str] = mapped_column(String(20), default="present")
    # Set when the object is new or changed; cleared by post-processing.
    needs_processing: Mapped[bool] = mapped_column(Boolean, default=True)
    # Ordering key of the last bucket event applied (S3 sequencer, GCS generation).
    sequencer: Mapped[str | None] = mapped_column(String(100))
    # The version of the object that sequencer was recorded for (a digest of size, etag
    # and modification time, or "absent"): sequencers only order events of one lifetime.
    sequencer_lifetime: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncRun(Base):
    """One run of ``mediamirror sync`` on a source, with its figures."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    # running | success | error
    state: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    listed: Mapped[int] = mapped_column(BigInteger, default=0)
    added: Mapped[int] = mapped_column(BigInteger, default=0)
    changed: Mapped[int] = mapped_column(BigInteger, default=0)
    deleted: Mapped[int] = mapped_column(BigInteger, default=0)
    unchanged: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)


class Lease(Base):
    """A named lease (e.g. ``sync:<source id>``) that expires unless renewed."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


# Typed handles on the tables for the Core queries of the hot paths.
SOURCES = cast(Table, Source.__table__)
FOLDERS = cast(Table, Folder.__table__)
ITEMS = cast(Table, Item.__table__)
SYNC_RUNS = cast(Table, SyncRun.__table__)
LEASES = cast(Table, Lease.__table__)
