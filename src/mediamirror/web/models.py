"""Tables of the service: API tokens and received bucket events."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Boolean, ForeignKey, String, Table, Text
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
    """A bucket notification as received, with what became of it."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(20))  # s3 | minio | sns | gcs | sqs
    event_type: Mapped[str | None] = mapped_column(String(100))
    bucket: Mapped[str | None] = mapped_column(Text)
    key: Mapped[str | None] = mapped_column(Text)
    sequencer: Mapped[str | None] = mapped_column(String(100))
    # applied | duplicate | stale | ignored | test | rejected | error
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


TOKENS = cast(Table, Token.__table__)
EVENTS = cast(Table, Event.__table__)
