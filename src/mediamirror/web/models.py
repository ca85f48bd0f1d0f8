"""Tables of the service: API tokens, received bucket events and refused pushes."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from mediamirror.catalog.models import Base, utcnow


class Token(Base):
    """An API token; only its SHA-256 is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # admin | viewer
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Event(Base):
    """A bucket notification as received, with what became of it.

    Recorded first (``pending``, with what applying it needs), applied in batches."""

    __tablename__ = "events"
    __table_args__ = (
        # The applier's queue: the pending events of a source, oldest first.
        Index(
            "ix_events_pending",
            "source_id",
            "id",
            sqlite_where=text("outcome = 'pending'"),
            postgresql_where=text("outcome = 'pending'"),
        ),
        # Removals of keys the catalog never held: a late, older create must not
        # bring such a key back.
        Index(
            "ix_events_removed",
            "source_id",
            "key",
            sqlite_where=text("action = 'removed'"),
            postgresql_where=text("action = 'removed'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(20))  # s3 | minio | sns | gcs | sqs
    event_type: Mapped[str | None] = mapped_column(String(100))
    bucket: Mapped[str | None] = mapped_column(Text)
    key: Mapped[str | None] = mapped_column(Text)
    sequencer: Mapped[str | None] = mapped_column(String(100))
    # pending | applied | duplicate | stale | ignored | test | rejected | error
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # What applying a pending event needs: created | removed | updated, and the object
    # as the sender described it (None when not sent: the store is read instead).
    action: Mapped[str | None] = mapped_column(String(10))
    size: Mapped[int | None] = mapped_column(BigInteger)
    etag: Mapped[str | None] = mapped_column(String(200))
    event_time: Mapped[datetime | None]


class PushRefusal(Base):
    """Refused push deliveries, rolled up: one row per (source, channel, reason) with a
    count, so that senders without a valid token cannot grow the catalog."""

    __tablename__ = "push_refusals"
    __table_args__ = (
        # One row per key; a NULL source (no valid token) counts as one value.
        Index(
            "ux_push_refusals_key", text("coalesce(source_id, 0)"), "channel", "reason", unique=True
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(40))
    count: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    detail: Mapped[str | None] = mapped_column(Text)  # the last refusal's message, truncated


TOKENS = cast(Table, Token.__table__)
EVENTS = cast(Table, Event.__table__)
REFUSALS = cast(Table, PushRefusal.__table__)
