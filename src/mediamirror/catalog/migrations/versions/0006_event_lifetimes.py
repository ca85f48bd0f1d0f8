"""Event sequencers tied to one object lifetime.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sequencer_lifetime", sa.String(length=64), nullable=True))
    # Sequencers recorded before this have no lifetime: never equal to one read from the
    # store, they order nothing (the store decides), so they need no rewrite.


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_column("sequencer_lifetime")
