"""Indexes for big catalogs: every page of the browse and jobs APIs read in index order.

- ``ix_items_folder_key`` (folder_id, key, state; id included on PostgreSQL, implicit on
  SQLite) replaces ``ix_items_folder``: a folder's items come out in key order (no sort of
  a 10,000-frame dataset per page), and its counts and a page's ids (OFFSET rows skipped)
  are read from the index alone.
- ``ix_folders_parent_name_id`` (parent_id, name, id) replaces ``ix_folders_parent_name``
  and ``ix_folders_parent_updated`` (parent_id, updated_at, id) is new: a page of children
  in either sort is an index-only range, where PostgreSQL sorted all 10,000 children of a
  mount for each page.
- ``ix_jobs_state_id`` (state, id): jobs of a state, newest first, without sorting them.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_items_folder_key", "items", ["folder_id", "key", "state"], postgresql_include=["id"]
    )
    op.drop_index("ix_items_folder", table_name="items")
    op.create_index("ix_folders_parent_name_id", "folders", ["parent_id", "name", "id"])
    op.drop_index("ix_folders_parent_name", table_name="folders")
    op.create_index("ix_folders_parent_updated", "folders", ["parent_id", "updated_at", "id"])
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_id", table_name="jobs")
    op.drop_index("ix_folders_parent_updated", table_name="folders")
    op.create_index("ix_folders_parent_name", "folders", ["parent_id", "name"])
    op.drop_index("ix_folders_parent_name_id", table_name="folders")
    op.create_index("ix_items_folder", "items", ["folder_id"])
    op.drop_index("ix_items_folder_key", table_name="items")
