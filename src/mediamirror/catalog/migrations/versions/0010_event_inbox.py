"""Recorded-then-applied bucket events: what a pending event needs, and its queue.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("action", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("etag", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("event_time", sa.DateTime(), nullable=True))
    op.create_index(
        "ix_events_pending",
        "events",
        ["source_id", "id"],
        sqlite_where=sa.text("outcome = 'pending'"),
        postgresql_where=sa.text("outcome = 'pending'"),
    )
    op.create_index(
        "ix_events_removed",
        "events",
        ["source_id", "key"],
        sqlite_where=sa.text("action = 'removed'"),
        postgresql_where=sa.text("action = 'removed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_events_removed", table_name="events")
    op.drop_index("ix_events_pending", table_name="events")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("event_time")
        batch_op.drop_column("etag")
        batch_op.drop_column("size")
        batch_op.drop_column("action")
