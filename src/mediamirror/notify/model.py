"""The notification outbox: what happened (``notifications``), what is to be sent on
which channel (``deliveries``) and every try (``delivery_attempts``).

A notification is written by the state change that causes it, in its transaction (see
:mod:`mediamirror.notify.outbox`); deliveries are planned and sent by the sender
(:mod:`mediamirror.notify.sender`), so recording stays one INSERT on the job's path.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from mediamirror.catalog.models import Base, KeyText, UTCDateTime

__all__ = ["DELIVERIES", "DELIVERY_ATTEMPTS", "NOTIFICATIONS"]

#: Kinds the product records; ``notify.on`` picks which of them are sent.
KINDS = ("dataset.ready", "job.failed", "sync.failed", "sync.finished")

NOTIFICATIONS = Table(
    "notifications",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("path", KeyText),  # the dataset's path, or the source's mount
    Column("source_id", Integer),
    Column("folder_id", Integer),
    Column("job_id", Integer),
    Column("facts", JSON, nullable=False),
    # Two writes of one event (a repeated transaction, a duplicate job) are one row.
    Column("dedupe_key", String(300), nullable=False, unique=True),
    Index("ix_notifications_created", "created_at"),
)

DELIVERIES = Table(
    "deliveries",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    # NULL for a digest, which covers the notifications listed in digest_of.
    Column(
        "notification_id",
        Integer,
        ForeignKey("notifications.id", ondelete="CASCADE"),
    ),
    Column("channel", String(200), nullable=False),
    Column("digest_of", JSON),
    Column("state", String(20), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text),
    Column("last_status", Integer),
    Column("sent_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_deliveries_due", "state", "next_attempt_at"),
    Index("ix_deliveries_notification", "notification_id", "channel"),
    Index("ix_deliveries_channel_created", "channel", "created_at"),
)

DELIVERY_ATTEMPTS = Table(
    "delivery_attempts",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "delivery_id",
        Integer,
        ForeignKey("deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("at", UTCDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("status", Integer),
    Column("error", Text),
    Index("ix_delivery_attempts_delivery", "delivery_id"),
)
