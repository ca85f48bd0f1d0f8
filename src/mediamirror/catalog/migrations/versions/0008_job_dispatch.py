"""When a queued job's id was last sent to the Celery broker (celery executor).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(), nullable=True))
        # The next queued jobs in priority order without sorting every queued row (the
        # dispatcher takes one per claimed job; ix_jobs_claim has run_after before them).
        batch_op.create_index("ix_jobs_next", ["state", "priority", "id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_next")
        batch_op.drop_column("dispatched_at")
