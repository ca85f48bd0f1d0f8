"""Sources get a never-reused uid (caches key on it).

Revision ID: 0004
Revises: 0003
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SOURCES = sa.table("sources", sa.column("id", sa.Integer()), sa.column("uid", sa.String(32)))


def upgrade() -> None:
    # Adding a column and an index never makes batch mode copy the table on SQLite: a copy
    # drops the old table, and with foreign keys on, that cascades into every folder,
    # item and sync run of the catalog. So the column stays nullable there; every row
    # gets a uid here and every new one from the model.
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uid", sa.String(length=32), nullable=True))
    conn = op.get_bind()
    for source_id in conn.execute(sa.select(_SOURCES.c.id)).scalars().all():
        conn.execute(
            sa.update(_SOURCES).where(_SOURCES.c.id == source_id).values(uid=uuid.uuid4().hex)
        )
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.create_index("ix_sources_uid", ["uid"], unique=True)
    if conn.dialect.name != "sqlite":
        op.alter_column("sources", "uid", existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    # Not in batch mode, for the same reason (SQLite 3.35+ drops a column in place).
    op.drop_index("ix_sources_uid", table_name="sources")
    op.drop_column("sources", "uid")
